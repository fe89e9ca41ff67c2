//! A rules directory as data: every file it consists of read into [`Sources`] (what a promotion records), and
//! [`Sources`] written back into a private directory (what a daemon runs, a promotion through the API vets).

use std::path::{Component, Path, PathBuf};

use super::loader::{LoadError, Sources};

/// Files of a rules directory a candidate consists of: the rules, their cases, the shared world.
const EXTENSIONS: [&str; 3] = ["rhai", "yaml", "yml"];
/// Bounds on what a candidate may hold, whoever sends it.
pub const MAX_FILES: usize = 500;
pub const MAX_BYTES: usize = 8 * 1024 * 1024;

/// Why a set of files cannot be a rules directory.
#[derive(Debug, thiserror::Error)]
pub enum SourcesError {
    #[error("cannot read {path}: {error}")]
    Read { path: PathBuf, error: std::io::Error },
    #[error("cannot write {path}: {error}")]
    Write { path: PathBuf, error: std::io::Error },
    #[error(
        "`{0}`: a rule file must have a plain relative path of at most two parts (`TASK/FILE`, `lib/FILE`, `FILE`)"
    )]
    Path(String),
    #[error("{0}: more than {MAX_FILES} files or {MAX_BYTES} bytes in all; a rules directory holds only its rules")]
    TooLarge(String),
    #[error("{0}: not UTF-8 text")]
    NotText(String),
}

/// Checks a relative path of a rule file: `FILE`, `DIR/FILE`, plain parts only.
pub fn check_path(name: &str) -> Result<(), SourcesError> {
    let parts: Vec<Component> = Path::new(name).components().collect();
    let plain = parts.iter().all(|c| matches!(c, Component::Normal(_)));
    if !plain || parts.is_empty() || parts.len() > 2 || name.contains('\\') {
        return Err(SourcesError::Path(name.to_string()));
    }
    Ok(())
}

/// Every `.rhai`/`.yaml` file of `dir` and of its folders (one level, as the loader reads), by relative path.
pub fn read_sources(dir: &Path) -> Result<Sources, SourcesError> {
    let mut sources = Sources::new();
    let mut bytes = 0;
    let entries = |d: &Path| -> Result<Vec<PathBuf>, SourcesError> {
        let io = |error| SourcesError::Read { path: d.to_path_buf(), error };
        let mut paths = Vec::new();
        for e in std::fs::read_dir(d).map_err(io)? {
            paths.push(e.map_err(io)?.path());
        }
        paths.sort();
        Ok(paths)
    };
    for path in entries(dir)? {
        let files = if path.is_dir() { entries(&path)? } else { vec![path] };
        for file in files {
            let wanted = file.extension().and_then(|e| e.to_str()).is_some_and(|e| EXTENSIONS.contains(&e));
            if !file.is_file() || !wanted {
                continue;
            }
            let relative = file.strip_prefix(dir).unwrap_or(&file).to_string_lossy().into_owned();
            let bytes_of = std::fs::read(&file).map_err(|error| SourcesError::Read { path: file.clone(), error })?;
            bytes += bytes_of.len();
            if sources.len() >= MAX_FILES || bytes > MAX_BYTES {
                return Err(SourcesError::TooLarge(dir.display().to_string()));
            }
            let text = String::from_utf8(bytes_of).map_err(|_| SourcesError::NotText(file.display().to_string()))?;
            sources.insert(relative, text);
        }
    }
    Ok(sources)
}

/// Sources written into a private directory, removed when dropped.
#[derive(Debug)]
pub struct SourcesDir {
    path: PathBuf,
}

impl SourcesDir {
    /// Writes `sources` (each path checked, the whole bounded) into a fresh directory under the temporary one.
    pub fn write(sources: &Sources) -> Result<SourcesDir, SourcesError> {
        use std::sync::atomic::{AtomicU64, Ordering};
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let total: usize = sources.values().map(String::len).sum();
        if sources.len() > MAX_FILES || total > MAX_BYTES {
            return Err(SourcesError::TooLarge(format!("{} files", sources.len())));
        }
        let path = std::env::temp_dir().join(format!(
            "smart-task-rules-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        let dir = SourcesDir { path };
        for (name, text) in sources {
            check_path(name)?;
            let file = dir.path.join(name);
            let io = |error| SourcesError::Write { path: file.clone(), error };
            if let Some(parent) = file.parent() {
                std::fs::create_dir_all(parent).map_err(io)?;
            }
            std::fs::write(&file, text).map_err(io)?;
        }
        std::fs::create_dir_all(&dir.path).map_err(|error| SourcesError::Write { path: dir.path.clone(), error })?;
        Ok(dir)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for SourcesDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

impl From<SourcesError> for LoadError {
    fn from(e: SourcesError) -> LoadError {
        match e {
            SourcesError::Read { path, error } | SourcesError::Write { path, error } => LoadError::Read { path, error },
            other => LoadError::Invalid { path: PathBuf::from("rules"), message: other.to_string() },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_round_trip_through_a_private_directory_and_bad_paths_are_refused() {
        let mut sources = Sources::new();
        sources.insert("a/task.yaml".into(), "id: A\n".into());
        sources.insert("lib/common.rhai".into(), "fn f() { 1 }\n".into());
        sources.insert("world.yaml".into(), "aziende: []\n".into());
        let dir = SourcesDir::write(&sources).expect("write");
        assert_eq!(read_sources(dir.path()).expect("read"), sources);
        let path = dir.path().to_path_buf();
        drop(dir);
        assert!(!path.exists(), "the private directory is removed");
        for bad in ["../x.rhai", "/etc/passwd", "a/b/c.rhai", "", "a\\..\\b"] {
            let mut s = Sources::new();
            s.insert(bad.into(), String::new());
            assert!(matches!(SourcesDir::write(&s), Err(SourcesError::Path(_))), "{bad:?}");
        }
    }
}
