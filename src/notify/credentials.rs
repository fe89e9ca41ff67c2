//! Secrets (the SMTP password, an SMS gateway's keys) come from files, never from the YAML: systemd's
//! `LoadCredential=` puts them in $CREDENTIALS_DIRECTORY; elsewhere `notify.credentials_dir` holds them.
//! Their values are never logged.

use std::path::{Path, PathBuf};

/// Set by systemd for a unit with `LoadCredential=` / `LoadCredentialEncrypted=`.
pub const CREDENTIALS_DIRECTORY_ENV: &str = "CREDENTIALS_DIRECTORY";

/// Where credentials are looked up, in order.
#[derive(Debug, Clone, Default)]
pub struct Credentials {
    dirs: Vec<PathBuf>,
}

impl Credentials {
    /// $CREDENTIALS_DIRECTORY first, then the configured directory.
    pub fn new(configured: Option<&Path>) -> Credentials {
        let mut dirs: Vec<PathBuf> =
            std::env::var_os(CREDENTIALS_DIRECTORY_ENV).map(PathBuf::from).into_iter().collect();
        dirs.extend(configured.map(Path::to_path_buf));
        Credentials { dirs }
    }

    /// The file of a credential: an absolute path as it is, a name in the first directory that has it.
    pub fn path(&self, name: &Path) -> Result<PathBuf, String> {
        if name.is_absolute() {
            return Ok(name.to_path_buf());
        }
        let plain = name.components().count() == 1 && !name.as_os_str().is_empty() && name != Path::new("..");
        if !plain {
            return Err(format!("credential `{}`: expected a name or an absolute path", name.display()));
        }
        self.dirs.iter().map(|d| d.join(name)).find(|p| p.is_file()).ok_or_else(|| {
            if self.dirs.is_empty() {
                format!(
                    "credential `{}`: neither ${CREDENTIALS_DIRECTORY_ENV} nor notify.credentials_dir is set",
                    name.display()
                )
            } else {
                let dirs: Vec<String> = self.dirs.iter().map(|d| d.display().to_string()).collect();
                format!("credential `{}` is not in {}", name.display(), dirs.join(" nor "))
            }
        })
    }

    /// A credential's value, without its trailing newline.
    pub fn read(&self, name: &Path) -> Result<String, String> {
        let path = self.path(name)?;
        let text =
            std::fs::read_to_string(&path).map_err(|e| format!("cannot read credential `{}`: {e}", path.display()))?;
        Ok(text.trim_end_matches(['\n', '\r']).to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_looked_up_and_paths_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("smtp-password"), "s3cret\n").expect("write");
        let c = Credentials { dirs: vec![dir.path().to_path_buf()] };
        assert_eq!(c.read(Path::new("smtp-password")).expect("read"), "s3cret");
        assert!(c.read(Path::new("../etc/passwd")).is_err());
        assert!(c.read(Path::new("missing")).unwrap_err().contains("missing"));
    }
}
