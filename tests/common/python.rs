//! The Python interpreter that runs the real SMTP server of the tests (`tests/support/smtp_sink.py`, aiosmtpd).
//!
//! The system `python3` is used when it already has aiosmtpd; otherwise the harness makes a project-local virtual
//! environment under the target directory (`target/tmp/aiosmtpd-venv`) and installs aiosmtpd into it from PyPI,
//! once for every test binary: a fresh machine needs nothing installed by hand. The environment is built in a
//! directory of its own and renamed into place, so test processes racing to make it never see a half-made one.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The aiosmtpd version the virtual environment pins (the tests use its `SMTP`/`Controller` API).
const AIOSMTPD: &str = "aiosmtpd==1.4.6";

fn has_aiosmtpd(python: &Path) -> bool {
    Command::new(python).args(["-c", "import aiosmtpd"]).output().is_ok_and(|o| o.status.success())
}

fn run(what: &str, cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{what}: cannot start {cmd:?}: {e} (python3 must be installed)"));
    assert!(
        out.status.success(),
        "{what} failed ({:?}):\n{}{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn make_venv() -> PathBuf {
    let system = PathBuf::from("python3");
    if has_aiosmtpd(&system) {
        return system;
    }
    let root = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let venv = root.join("aiosmtpd-venv");
    let python = venv.join("bin/python");
    if has_aiosmtpd(&python) {
        return python;
    }
    let staging = root.join(format!("aiosmtpd-venv.{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&staging);
    eprintln!("test harness: installing {AIOSMTPD} into {} (once)", venv.display());
    run("python3 -m venv", Command::new("python3").args(["-m", "venv"]).arg(&staging));
    run(
        "pip install aiosmtpd",
        Command::new(staging.join("bin/python")).args(["-m", "pip", "install", "--quiet", AIOSMTPD]),
    );
    if std::fs::rename(&staging, &venv).is_err() {
        // Another test process finished first: use its environment, drop ours.
        let _ = std::fs::remove_dir_all(&staging);
    }
    assert!(has_aiosmtpd(&python), "{} has no aiosmtpd after installing it", python.display());
    python
}

/// A Python interpreter that can `import aiosmtpd`.
pub fn smtp_python() -> &'static Path {
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    PYTHON.get_or_init(make_venv)
}
