//! Secrets (the SMTP password, an SMS gateway's keys) come from files, never from the YAML: systemd's
//! `LoadCredential=` puts them in $CREDENTIALS_DIRECTORY; elsewhere `notify.credentials_dir` holds them.
//! Their values are never logged.

use std::path::{Path, PathBuf};

use super::NotifyConfigError;

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
    pub fn path(&self, name: &Path) -> Result<PathBuf, NotifyConfigError> {
        if name.is_absolute() {
            return Ok(name.to_path_buf());
        }
        let plain = name.components().count() == 1 && !name.as_os_str().is_empty() && name != Path::new("..");
        if !plain {
            return Err(NotifyConfigError::CredentialName(name.to_path_buf()));
        }
        self.dirs.iter().map(|d| d.join(name)).find(|p| p.is_file()).ok_or_else(|| {
            if self.dirs.is_empty() {
                NotifyConfigError::CredentialNoDirectory(name.to_path_buf())
            } else {
                NotifyConfigError::CredentialMissing { name: name.to_path_buf(), dirs: self.dirs.clone() }
            }
        })
    }

    /// A credential's value, without its trailing newline.
    pub fn read(&self, name: &Path) -> Result<String, NotifyConfigError> {
        let path = self.path(name)?;
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(error) => return Err(NotifyConfigError::CredentialUnreadable { path, error }),
        };
        Ok(text.trim_end_matches(['\n', '\r']).to_string())
    }
}

/// The directories a credential was looked for in, as [`NotifyConfigError::CredentialMissing`] names them.
pub(super) fn display_dirs(dirs: &[PathBuf]) -> String {
    let dirs: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
    dirs.join(" nor ")
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
        assert!(c.read(Path::new("missing")).unwrap_err().to_string().contains("missing"));
    }

    #[test]
    fn errors_say_what_is_wrong() {
        let none = Credentials { dirs: Vec::new() };
        let e = none.read(Path::new("smtp-password")).unwrap_err();
        assert!(e.is_credential());
        assert_eq!(
            e.to_string(),
            "credential `smtp-password`: neither $CREDENTIALS_DIRECTORY nor notify.credentials_dir is set"
        );
        assert_eq!(
            none.path(Path::new("a/b")).unwrap_err().to_string(),
            "credential `a/b`: expected a name or an absolute path"
        );
        let two = Credentials { dirs: vec![PathBuf::from("/nonexistent/a"), PathBuf::from("/nonexistent/b")] };
        assert_eq!(
            two.path(Path::new("key")).unwrap_err().to_string(),
            "credential `key` is not in /nonexistent/a nor /nonexistent/b"
        );
    }
}
