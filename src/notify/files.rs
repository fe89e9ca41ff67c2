//! The file transports: e-mails into a Maildir (`notify.email.url: maildir:PATH`), SMS as one text file each
//! (`notify.sms.dir`). What a demo or a machine without a mail server shows instead of "connection refused":
//! every notification readable where it was written. Each file is named after the notification's stable
//! reference (`outbox-17.eml`, `outbox-17.txt`) and written whole to a temporary name, then renamed into place,
//! so a reader never sees half a message and a resend after a crash replaces the copy instead of adding one.

use std::io::Write;
use std::path::{Path, PathBuf};

/// Why a file transport could not write.
#[derive(Debug, thiserror::Error)]
#[error("cannot write {path}: {error}")]
pub struct WriteError {
    path: PathBuf,
    error: std::io::Error,
}

/// The file name of a reference: `<outbox-17@smart-task>` → `outbox-17`; characters other than letters,
/// digits, `-`, `_` and `.` become `_`.
pub fn stem(reference: &str) -> String {
    let local = reference.trim_matches(['<', '>']).split('@').next().unwrap_or_default();
    let stem: String =
        local.chars().map(|c| if c.is_ascii_alphanumeric() || "-_.".contains(c) { c } else { '_' }).collect();
    match stem.trim_start_matches('.') {
        "" => "notifica".into(),
        s => s.to_string(),
    }
}

/// Writes `bytes` to `tmp_dir/.<name>.<pid>.<random>.tmp`, flushed to disk, then renames it to `dest`
/// (replacing it), off the async runtime.
async fn write_atomically(tmp_dir: PathBuf, dest: PathBuf, bytes: Vec<u8>) -> Result<(), WriteError> {
    let dest_name = dest.clone();
    tokio::task::spawn_blocking(move || write_atomically_now(&tmp_dir, &dest, &bytes))
        .await
        .unwrap_or_else(|e| Err(WriteError { path: dest_name, error: std::io::Error::other(e) }))
}

fn write_atomically_now(tmp_dir: &Path, dest: &Path, bytes: &[u8]) -> Result<(), WriteError> {
    let fail = |path: &Path| {
        let path = path.to_path_buf();
        move |error| WriteError { path, error }
    };
    std::fs::create_dir_all(tmp_dir).map_err(fail(tmp_dir))?;
    if let Some(parent) = dest.parent() {
        std::fs::create_dir_all(parent).map_err(fail(parent))?;
    }
    let name = dest.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    // Two dispatchers (a takeover) may write the same notification at once: each its own temporary file.
    let tmp = tmp_dir.join(format!(".{name}.{}.{}.tmp", std::process::id(), rand::random::<u32>()));
    let mut file = std::fs::File::create(&tmp).map_err(fail(&tmp))?;
    file.write_all(bytes).map_err(fail(&tmp))?;
    file.sync_all().map_err(fail(&tmp))?;
    drop(file);
    std::fs::rename(&tmp, dest).map_err(fail(dest))
}

/// A Maildir (`tmp/`, `new/`, `cur/`): each message is written in `tmp/` and renamed into `new/`.
#[derive(Debug, Clone)]
pub struct Maildir {
    dir: PathBuf,
}

impl Maildir {
    pub fn new(dir: PathBuf) -> Maildir {
        Maildir { dir }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Delivers a complete RFC 5322 message as `new/<stem>.eml`; returns that name, relative to the Maildir.
    pub async fn deliver(&self, reference: &str, message: &[u8]) -> Result<String, WriteError> {
        let name = format!("new/{}.eml", stem(reference));
        let cur = self.dir.join("cur");
        std::fs::create_dir_all(&cur).map_err(|error| WriteError { path: cur, error })?;
        write_atomically(self.dir.join("tmp"), self.dir.join(&name), message.to_vec()).await?;
        Ok(name)
    }
}

/// One SMS as a text file: who it is for, who sends it, its reference and encoding, then the text.
pub struct SmsFile<'a> {
    pub to: &'a str,
    pub sender: &'a str,
    pub reference: &'a str,
    pub encoding: &'a str,
    pub segments: usize,
    pub text: &'a str,
}

impl SmsFile<'_> {
    fn render(&self) -> String {
        format!(
            "Destinatario: {}\nMittente: {}\nRiferimento: {}\nCodifica: {}, {} {}\n\n{}\n",
            self.to,
            self.sender,
            self.reference,
            self.encoding,
            self.segments,
            if self.segments == 1 { "segmento" } else { "segmenti" },
            self.text
        )
    }

    /// Writes `dir/<stem>.txt`; returns its name.
    pub async fn write(&self, dir: &Path) -> Result<String, WriteError> {
        let name = format!("{}.txt", stem(self.reference));
        write_atomically(dir.to_path_buf(), dir.join(&name), self.render().into_bytes()).await?;
        Ok(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_become_file_names() {
        assert_eq!(stem("<outbox-17@smart-task>"), "outbox-17");
        assert_eq!(stem("outbox-17"), "outbox-17");
        assert_eq!(stem("<riepilogo-2026-12-03@smart-task>"), "riepilogo-2026-12-03");
        assert_eq!(stem("<../x/y@z>"), "_x_y");
        assert_eq!(stem("<>"), "notifica");
    }

    #[tokio::test]
    async fn a_resend_replaces_the_copy() {
        let dir = tempfile::tempdir().expect("tempdir");
        let maildir = Maildir::new(dir.path().join("mail"));
        for body in ["first", "second"] {
            let name = maildir.deliver("<outbox-3@smart-task>", body.as_bytes()).await.expect("deliver");
            assert_eq!(name, "new/outbox-3.eml");
        }
        let new: Vec<_> = std::fs::read_dir(dir.path().join("mail/new")).expect("new").flatten().collect();
        assert_eq!(new.len(), 1);
        assert_eq!(std::fs::read_to_string(new[0].path()).expect("read"), "second");
        assert_eq!(std::fs::read_dir(dir.path().join("mail/tmp")).expect("tmp").count(), 0);
        assert!(dir.path().join("mail/cur").is_dir());
    }
}
