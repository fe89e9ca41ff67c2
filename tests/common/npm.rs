//! Node packages a test needs, pinned by a committed `package-lock.json` and installed with `npm ci` into a
//! directory under the cargo target directory: once, and again when the lock file changes. Without node and npm
//! the test fails: a skipped gate is a silent one.

use std::path::Path;
use std::process::Command;

/// Installs the packages of `source` (its package.json and package-lock.json) into `dir`, unless `dir` already
/// holds that lock and `marker` (a path under `dir`). `purpose` says in the failure what they are for.
pub fn install(source: &Path, dir: &Path, marker: &str, purpose: &str) {
    std::fs::create_dir_all(dir).expect("create the npm install directory");
    let lock = std::fs::read(source.join("package-lock.json")).expect("read the committed package-lock.json");
    // `npm ci` deletes node_modules and installs again: only when the pinned versions changed.
    let installed = std::fs::read(dir.join("package-lock.json")).is_ok_and(|l| l == lock) && dir.join(marker).exists();
    if installed {
        return;
    }
    for file in ["package.json", "package-lock.json"] {
        std::fs::copy(source.join(file), dir.join(file)).expect("copy package*.json");
    }
    let npm = Command::new("npm")
        .args(["ci", "--prefer-offline", "--no-audit", "--no-fund"])
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run npm ({e}): install Node.js 20+ and npm (e.g. `apt-get install nodejs npm`) to {purpose}")
        });
    assert!(
        npm.status.success(),
        "`npm ci` in {} failed ({}):\n{}{}",
        dir.display(),
        npm.status,
        String::from_utf8_lossy(&npm.stdout),
        String::from_utf8_lossy(&npm.stderr)
    );
    assert!(dir.join(marker).exists(), "npm ci did not install {}", dir.join(marker).display());
}
