//! Inspection of the documents a requester attaches to a request, in memory and before anything is stored.
//!
//! The decision rests on the bytes alone: the real type by magic bytes against an allow-list (PDF, JPEG, PNG,
//! TIFF, and ZIP archives holding only those), never the name or a declared type. A ZIP is checked as a hostile
//! input: the entry count is read from the End Of Central Directory record before the `zip` crate parses the
//! directory, entries may not overlap (the non-recursive zip bomb), sizes and ratios are bounded from the
//! declared values first and then while reading through a hard cap, every CRC-32 is verified, and nothing is
//! ever extracted to disk. Names are metadata only; they are checked so that they cannot be mistaken for paths
//! or disguise what they name.

use std::io::{self, Cursor, Read, Write};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Limits from configuration (`intake.allegati` in YAML).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AttachmentLimits {
    /// Files per request or comment.
    pub max_files: usize,
    /// Bytes of one file (the sources give 3 MB).
    pub max_file_bytes: u64,
    /// Bytes of all the files of one request or comment.
    pub max_total_bytes: u64,
    /// Characters of a name, the file's or a ZIP entry's.
    pub max_name_chars: usize,
    /// Entries of one ZIP archive, directories included.
    pub zip_max_entries: usize,
    /// Uncompressed bytes of one ZIP archive, summed over its entries.
    pub zip_max_uncompressed_bytes: u64,
    /// Uncompressed / compressed bytes, per entry and for the whole archive.
    pub zip_max_ratio: u64,
}

impl Default for AttachmentLimits {
    fn default() -> Self {
        Self {
            max_files: 3,
            max_file_bytes: 3 * 1024 * 1024,
            max_total_bytes: 9 * 1024 * 1024,
            max_name_chars: 200,
            zip_max_entries: 32,
            zip_max_uncompressed_bytes: 20 * 1024 * 1024,
            zip_max_ratio: 50,
        }
    }
}

/// The allow-list of exact types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ContentKind {
    Pdf,
    Jpeg,
    Png,
    Tiff,
    Zip,
}

impl ContentKind {
    pub fn mime(self) -> &'static str {
        match self {
            Self::Pdf => "application/pdf",
            Self::Jpeg => "image/jpeg",
            Self::Png => "image/png",
            Self::Tiff => "image/tiff",
            Self::Zip => "application/zip",
        }
    }

    /// The kind a declared media type names. Parameters (`; charset=…`) and case are ignored, and the aliases
    /// browsers actually send are accepted (`application/x-zip-compressed` from Windows, `image/jpg`,
    /// `image/pjpeg`): a declared type is only ever compared with the detected one, never trusted.
    pub fn from_mime(mime: &str) -> Option<ContentKind> {
        let essence = mime.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
        match essence.as_str() {
            "application/pdf" => Some(Self::Pdf),
            "image/jpeg" | "image/jpg" | "image/pjpeg" => Some(Self::Jpeg),
            "image/png" => Some(Self::Png),
            "image/tiff" => Some(Self::Tiff),
            "application/zip" | "application/x-zip-compressed" => Some(Self::Zip),
            _ => None,
        }
    }
}

/// One file as given by the client: its name (display only, never used as a path) and its bytes.
pub struct Upload<'a> {
    pub name: &'a str,
    pub bytes: &'a [u8],
}

/// A file that passed inspection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Inspected {
    /// The client's name, checked.
    pub name: String,
    pub kind: ContentKind,
    pub size: u64,
    /// Lowercase hex SHA-256 of the bytes.
    pub sha256: String,
    /// The archive's files in central-directory order (directories left out); empty unless `kind` is `Zip`.
    pub entries: Vec<ZipEntry>,
}

/// A file inside an accepted ZIP archive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ZipEntry {
    pub name: String,
    pub kind: ContentKind,
    /// Uncompressed bytes, as read (and equal to the declared size).
    pub size: u64,
}

/// Why a file (or the set) was refused. Messages are in Italian: they reach the requester. Entry names carried
/// here are already shortened and cleaned for display.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("troppi allegati: {count}, il massimo è {max}")]
    TooManyFiles { count: usize, max: usize },
    #[error("allegati troppo grandi nel complesso: {total} byte, il massimo è {max} byte")]
    TotalTooLarge { total: u64, max: u64 },
    #[error("il file è vuoto")]
    EmptyFile,
    #[error("file troppo grande: {size} byte, il massimo è {max} byte")]
    FileTooLarge { size: u64, max: u64 },
    #[error("il nome del file è vuoto")]
    NameEmpty,
    #[error("nome del file troppo lungo: {chars} caratteri, il massimo è {max}")]
    NameTooLong { chars: usize, max: usize },
    #[error("il nome del file contiene caratteri di controllo o di direzione del testo, non ammessi")]
    NameControlChars,
    #[error("il nome del file contiene «/» o «\\», non ammessi")]
    NameSeparator,
    #[error("il nome del file non può essere «.» o «..»")]
    NameDots,
    #[error("{}", type_not_allowed_message(.entry.as_deref(), .detected.as_deref()))]
    TypeNotAllowed { entry: Option<String>, detected: Option<String> },
    #[error("archivio ZIP non leggibile: {reason}")]
    ZipCorrupt { reason: &'static str },
    #[error("archivio ZIP64 non ammesso (il formato serve solo oltre 65535 voci o 4 GB)")]
    Zip64,
    #[error("troppe voci nell'archivio ZIP: {count}, il massimo è {max}")]
    ZipTooManyEntries { count: usize, max: usize },
    #[error("l'archivio ZIP non contiene alcun file")]
    ZipEmpty,
    #[error("l'archivio ZIP contiene più voci con lo stesso nome")]
    ZipDuplicateName,
    #[error("voce «{entry}» dell'archivio ZIP cifrata: gli archivi protetti da password non sono ammessi")]
    ZipEncrypted { entry: String },
    #[error("voce «{entry}» dell'archivio ZIP: i collegamenti simbolici non sono ammessi")]
    ZipSymlink { entry: String },
    #[error("voce «{entry}» dell'archivio ZIP: una cartella non può contenere dati")]
    ZipDirectoryData { entry: String },
    #[error(
        "voce «{entry}» dell'archivio ZIP: metodo di compressione {method} non ammesso (ammessi: 0 nessuna compressione, 8 deflate)"
    )]
    ZipMethod { entry: String, method: u16 },
    #[error("voce «{entry}» dell'archivio ZIP: percorso assoluto, non ammesso")]
    ZipAbsolutePath { entry: String },
    #[error("voce «{entry}» dell'archivio ZIP: percorso con «..», non ammesso")]
    ZipPathTraversal { entry: String },
    #[error("voce «{entry}» dell'archivio ZIP: {reason}")]
    ZipEntryName { entry: String, reason: &'static str },
    #[error("voci «{first}» e «{second}» dell'archivio ZIP sovrapposte: ogni voce deve avere dati propri")]
    ZipOverlap { first: String, second: String },
    #[error("voce «{entry}» dell'archivio ZIP: i dati escono dallo spazio dell'archivio")]
    ZipOutOfBounds { entry: String },
    #[error("archivio ZIP troppo grande una volta decompresso: oltre {max} byte")]
    ZipTooLarge { max: u64 },
    #[error("{}", ratio_message(.entry.as_deref(), *.max))]
    ZipRatio { entry: Option<String>, max: u64 },
    #[error(
        "voce «{entry}» dell'archivio ZIP: il contenuto non corrisponde alla dimensione dichiarata di {declared} byte"
    )]
    DeclaredSizeMismatch { entry: String, declared: u64 },
    #[error("voce «{entry}» dell'archivio ZIP: file vuoto")]
    ZipEntryEmpty { entry: String },
    #[error("voce «{entry}» dell'archivio ZIP: archivi dentro archivi non sono ammessi{}", detected_suffix(.detected.as_deref()))]
    NestedArchive { entry: String, detected: Option<String> },
}

fn type_not_allowed_message(entry: Option<&str>, detected: Option<&str>) -> String {
    let detected = detected_suffix(detected);
    match entry {
        None => format!("tipo di file non ammesso{detected}; ammessi: PDF, JPEG, PNG, TIFF, ZIP"),
        Some(entry) => format!(
            "voce «{entry}» dell'archivio ZIP: tipo di file non ammesso{detected}; ammessi nell'archivio: PDF, JPEG, PNG, TIFF"
        ),
    }
}

fn detected_suffix(detected: Option<&str>) -> String {
    detected.map(|d| format!(" (rilevato: {d})")).unwrap_or_default()
}

fn ratio_message(entry: Option<&str>, max: u64) -> String {
    match entry {
        Some(entry) => {
            format!("voce «{entry}» dell'archivio ZIP: rapporto di compressione oltre il massimo di {max} a 1")
        }
        None => format!("archivio ZIP: rapporto di compressione complessivo oltre il massimo di {max} a 1"),
    }
}

impl Refusal {
    /// A stable id of the rule broken, for problem+json and tests.
    pub fn rule(&self) -> &'static str {
        match self {
            Self::TooManyFiles { .. } => "too_many_files",
            Self::TotalTooLarge { .. } => "total_too_large",
            Self::EmptyFile => "empty_file",
            Self::FileTooLarge { .. } => "file_too_large",
            Self::NameEmpty => "name_empty",
            Self::NameTooLong { .. } => "name_too_long",
            Self::NameControlChars => "name_control_chars",
            Self::NameSeparator => "name_separator",
            Self::NameDots => "name_dots",
            Self::TypeNotAllowed { .. } => "type_not_allowed",
            Self::ZipCorrupt { .. } => "zip_corrupt",
            Self::Zip64 => "zip64",
            Self::ZipTooManyEntries { .. } => "zip_too_many_entries",
            Self::ZipEmpty => "zip_empty",
            Self::ZipDuplicateName => "zip_duplicate_name",
            Self::ZipEncrypted { .. } => "zip_encrypted",
            Self::ZipSymlink { .. } => "zip_symlink",
            Self::ZipDirectoryData { .. } => "zip_directory_data",
            Self::ZipMethod { .. } => "zip_method",
            Self::ZipAbsolutePath { .. } => "zip_absolute_path",
            Self::ZipPathTraversal { .. } => "zip_path_traversal",
            Self::ZipEntryName { .. } => "zip_entry_name",
            Self::ZipOverlap { .. } => "zip_overlap",
            Self::ZipOutOfBounds { .. } => "zip_out_of_bounds",
            Self::ZipTooLarge { .. } => "zip_too_large",
            Self::ZipRatio { .. } => "zip_ratio",
            Self::DeclaredSizeMismatch { .. } => "declared_size_mismatch",
            Self::ZipEntryEmpty { .. } => "zip_entry_empty",
            Self::NestedArchive { .. } => "nested_archive",
        }
    }
}

/// A refused set: which file (`index`, from 0 in the given order, and its name as given, shortened and cleaned
/// for display) and why. Set-level refusals (too many files, total too large) have neither. The message counts
/// files from 1, as the requester does.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct AttachmentError {
    pub index: Option<usize>,
    pub name: Option<String>,
    pub refusal: Refusal,
}

impl std::fmt::Display for AttachmentError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.index, &self.name) {
            (Some(index), Some(name)) => write!(f, "allegato {} «{name}»: {}", index + 1, self.refusal),
            (Some(index), None) => write!(f, "allegato {}: {}", index + 1, self.refusal),
            (None, _) => write!(f, "allegati: {}", self.refusal),
        }
    }
}

/// Inspect a set: the count (refused before anything else), the total, then each file in order; the first
/// refusal wins. An empty set is accepted.
pub fn inspect_all(uploads: &[Upload<'_>], limits: &AttachmentLimits) -> Result<Vec<Inspected>, AttachmentError> {
    let set_error = |refusal| AttachmentError { index: None, name: None, refusal };
    if uploads.len() > limits.max_files {
        return Err(set_error(Refusal::TooManyFiles { count: uploads.len(), max: limits.max_files }));
    }
    let total = uploads.iter().fold(0u64, |sum, upload| sum.saturating_add(len_u64(upload.bytes)));
    if total > limits.max_total_bytes {
        return Err(set_error(Refusal::TotalTooLarge { total, max: limits.max_total_bytes }));
    }
    uploads
        .iter()
        .enumerate()
        .map(|(index, upload)| {
            inspect(upload, limits).map_err(|refusal| AttachmentError {
                index: Some(index),
                name: Some(display_name(upload.name, limits.max_name_chars)),
                refusal,
            })
        })
        .collect()
}

/// Inspect one file.
pub fn inspect(upload: &Upload<'_>, limits: &AttachmentLimits) -> Result<Inspected, Refusal> {
    let size = len_u64(upload.bytes);
    if size == 0 {
        return Err(Refusal::EmptyFile);
    }
    if size > limits.max_file_bytes {
        return Err(Refusal::FileTooLarge { size, max: limits.max_file_bytes });
    }
    check_name(upload.name, limits.max_name_chars)?;
    let kind = match detect(upload.bytes) {
        Detected::Allowed(kind) => kind,
        Detected::Other { mime, .. } => {
            return Err(Refusal::TypeNotAllowed { entry: None, detected: mime.map(str::to_owned) });
        }
    };
    let entries = if kind == ContentKind::Zip { inspect_zip(upload.bytes, limits)? } else { Vec::new() };
    Ok(Inspected { name: upload.name.to_owned(), kind, size, sha256: hex_sha256(upload.bytes), entries })
}

fn len_u64(bytes: &[u8]) -> u64 {
    u64::try_from(bytes.len()).unwrap_or(u64::MAX)
}

fn hex_sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// Characters that make a name display differently from what it is: bidirectional overrides and isolates turn
/// `fdp.exe` preceded by U+202E into something that reads as `exe.pdf`.
fn is_deceptive(c: char) -> bool {
    c.is_control() || matches!(c, '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

fn check_name(name: &str, max_chars: usize) -> Result<(), Refusal> {
    if name.trim().is_empty() {
        return Err(Refusal::NameEmpty);
    }
    let chars = name.chars().count();
    if chars > max_chars {
        return Err(Refusal::NameTooLong { chars, max: max_chars });
    }
    if name.chars().any(is_deceptive) {
        return Err(Refusal::NameControlChars);
    }
    // The name never becomes a path, but a separator in it would make logs and the operators' screens show a
    // path that is not one.
    if name.contains(['/', '\\']) {
        return Err(Refusal::NameSeparator);
    }
    if name == "." || name == ".." {
        return Err(Refusal::NameDots);
    }
    Ok(())
}

/// A name as it may be shown in a message: at most `max_chars` characters, deceptive characters replaced, so
/// that a refusal can always quote the name it refuses.
fn display_name(name: &str, max_chars: usize) -> String {
    let mut shown: String =
        name.chars().take(max_chars).map(|c| if is_deceptive(c) { '\u{FFFD}' } else { c }).collect();
    if name.chars().nth(max_chars).is_some() {
        shown.push('…');
    }
    shown
}

enum Detected {
    Allowed(ContentKind),
    /// Not on the allow-list; `mime` is what `infer` recognised, `archive` whether it is a compressed container.
    Other {
        mime: Option<&'static str>,
        archive: bool,
    },
}

const PDF_MAGIC: &[u8] = b"%PDF-";
const JPEG_MAGIC: &[u8] = &[0xFF, 0xD8, 0xFF];
const PNG_MAGIC: &[u8] = &[0x89, b'P', b'N', b'G', 0x0D, 0x0A, 0x1A, 0x0A];
const TIFF_LE_MAGIC: &[u8] = b"II*\0";
const TIFF_BE_MAGIC: &[u8] = b"MM\0*";
const ZIP_LOCAL_MAGIC: &[u8] = b"PK\x03\x04";
/// An archive with no entries at all starts with its End Of Central Directory record: recognised as a ZIP so
/// that it is refused as an empty archive rather than as an unknown type.
const ZIP_EOCD_MAGIC: &[u8] = b"PK\x05\x06";
const ZIP_SPANNED_MAGIC: &[u8] = b"PK\x07\x08";

/// The real type of `bytes`. Our own signatures decide, at offset 0 only; `infer` names what is refused and
/// vetoes a signature match it knows to be something else (a Canon raw file is a TIFF by signature, an Office
/// document or a Java archive a ZIP).
fn detect(bytes: &[u8]) -> Detected {
    let ours = if bytes.starts_with(PDF_MAGIC) {
        Some(ContentKind::Pdf)
    } else if bytes.starts_with(JPEG_MAGIC) {
        Some(ContentKind::Jpeg)
    } else if bytes.starts_with(PNG_MAGIC) {
        Some(ContentKind::Png)
    } else if bytes.starts_with(TIFF_LE_MAGIC) || bytes.starts_with(TIFF_BE_MAGIC) {
        Some(ContentKind::Tiff)
    } else if bytes.starts_with(ZIP_LOCAL_MAGIC) || bytes.starts_with(ZIP_EOCD_MAGIC) {
        Some(ContentKind::Zip)
    } else {
        None
    };
    let theirs = infer::get(bytes);
    match (ours, theirs) {
        (Some(kind), None) => Detected::Allowed(kind),
        (Some(kind), Some(t)) if ContentKind::from_mime(t.mime_type()) == Some(kind) => Detected::Allowed(kind),
        (_, Some(t)) => {
            Detected::Other { mime: Some(t.mime_type()), archive: t.matcher_type() == infer::MatcherType::Archive }
        }
        (None, None) => Detected::Other { mime: None, archive: false },
    }
}

const EOCD_LEN: usize = 22;
/// The record is 22 bytes followed by a comment of at most 65,535.
const EOCD_SEARCH: usize = EOCD_LEN + 0xFFFF;
const ZIP64_LOCATOR_MAGIC: &[u8] = b"PK\x06\x07";
const ZIP64_LOCATOR_LEN: usize = 20;
const CENTRAL_MAGIC: &[u8] = b"PK\x01\x02";
const CENTRAL_LEN: usize = 46;
const LOCAL_LEN: usize = 30;
const FLAG_ENCRYPTED: u16 = 1;
/// Strong encryption (APPNOTE 4.4.4 bit 6): refused like traditional encryption.
const FLAG_STRONG_ENCRYPTION: u16 = 1 << 6;
const METHOD_STORED: u16 = 0;
const METHOD_DEFLATED: u16 = 8;
const S_IFMT: u32 = 0o170_000;
const S_IFLNK: u32 = 0o120_000;
/// What content detection needs of an entry: signatures sit in the first bytes.
const HEAD_BYTES: usize = 8 * 1024;

fn u16_at(bytes: &[u8], at: usize) -> Option<u16> {
    let b = bytes.get(at..at.checked_add(2)?)?;
    Some(u16::from_le_bytes([b[0], b[1]]))
}

fn u32_at(bytes: &[u8], at: usize) -> Option<u32> {
    let b = bytes.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

const fn corrupt(reason: &'static str) -> Refusal {
    Refusal::ZipCorrupt { reason }
}

/// What the End Of Central Directory record says, read by hand so that the entry count is bounded before the
/// `zip` crate allocates anything for the directory.
struct Eocd {
    entries: usize,
}

fn read_eocd(bytes: &[u8], limits: &AttachmentLimits) -> Result<Eocd, Refusal> {
    let window_start = bytes.len().saturating_sub(EOCD_SEARCH);
    // The record nearest the end whose comment reaches exactly the end of the file: a signature inside the
    // comment does not match, and neither does a record followed by appended data.
    let pos = (window_start..=bytes.len().saturating_sub(EOCD_LEN))
        .rev()
        .filter(|&pos| bytes[pos..].starts_with(ZIP_EOCD_MAGIC))
        .find(|&pos| {
            u16_at(bytes, pos + 20).is_some_and(|comment| pos + EOCD_LEN + usize::from(comment) == bytes.len())
        })
        .ok_or(corrupt("record di fine archivio mancante"))?;
    let field16 = |offset| u16_at(bytes, pos + offset).ok_or(corrupt("record di fine archivio troncato"));
    let field32 = |offset| u32_at(bytes, pos + offset).ok_or(corrupt("record di fine archivio troncato"));
    let (disk, cd_disk) = (field16(4)?, field16(6)?);
    let (on_disk, total) = (field16(8)?, field16(10)?);
    let (cd_size, cd_offset) = (field32(12)?, field32(16)?);
    let locator = pos.checked_sub(ZIP64_LOCATOR_LEN).is_some_and(|at| bytes[at..].starts_with(ZIP64_LOCATOR_MAGIC));
    if locator || total == u16::MAX || on_disk == u16::MAX || cd_size == u32::MAX || cd_offset == u32::MAX {
        return Err(Refusal::Zip64);
    }
    if disk != 0 || cd_disk != 0 || on_disk != total {
        return Err(corrupt("archivio suddiviso su più parti"));
    }
    let entries = usize::from(total);
    if entries > limits.zip_max_entries {
        return Err(Refusal::ZipTooManyEntries { count: entries, max: limits.zip_max_entries });
    }
    // The file starts with a local header, so the directory must end where the record starts: anything else
    // means data prepended or slipped in between, which readers disagree about.
    let cd_end = usize::try_from(u64::from(cd_offset) + u64::from(cd_size)).unwrap_or(usize::MAX);
    if cd_end != pos {
        return Err(corrupt("directory centrale fuori posto"));
    }
    Ok(Eocd { entries })
}

/// One entry's header fields, from the raw central directory record the `zip` crate located.
struct RawEntry {
    /// Name shortened and cleaned for messages.
    shown: String,
    name: String,
    name_raw: Vec<u8>,
    is_dir: bool,
    method: u16,
    flags: u16,
    compressed: u64,
    declared: u64,
    header_start: u64,
}

fn inspect_zip(bytes: &[u8], limits: &AttachmentLimits) -> Result<Vec<ZipEntry>, Refusal> {
    let eocd = read_eocd(bytes, limits)?;
    if eocd.entries == 0 {
        return Err(Refusal::ZipEmpty);
    }
    let mut archive = zip::ZipArchive::new(Cursor::new(bytes)).map_err(|_| corrupt("directory centrale non valida"))?;
    if archive.len() > limits.zip_max_entries {
        return Err(Refusal::ZipTooManyEntries { count: archive.len(), max: limits.zip_max_entries });
    }
    if archive.len() != eocd.entries {
        return Err(corrupt("numero di voci incoerente"));
    }
    if archive.offset() != 0 {
        return Err(corrupt("dati prima dell'archivio"));
    }
    if archive.has_duplicate_names() {
        return Err(Refusal::ZipDuplicateName);
    }

    let mut raw = Vec::with_capacity(archive.len());
    for index in 0..archive.len() {
        raw.push(check_header(bytes, &archive, index, limits)?);
    }
    if raw.iter().all(|entry| entry.is_dir) {
        return Err(Refusal::ZipEmpty);
    }
    check_layout(bytes, &archive, &raw)?;
    check_declared_sizes(bytes, &raw, limits)?;

    let mut entries = Vec::new();
    let mut budget = limits.zip_max_uncompressed_bytes;
    for (index, entry) in raw.iter().enumerate() {
        if entry.is_dir {
            continue;
        }
        let (kind, size) = read_entry(&mut archive, index, entry, budget, limits)?;
        budget = budget.saturating_sub(size);
        entries.push(ZipEntry { name: entry.name.clone(), kind, size });
    }
    Ok(entries)
}

/// The checks that need only the central directory record of one entry.
fn check_header(
    bytes: &[u8],
    archive: &zip::ZipArchive<Cursor<&[u8]>>,
    index: usize,
    limits: &AttachmentLimits,
) -> Result<RawEntry, Refusal> {
    let entry = archive.by_index_data(index).map_err(|_| corrupt("voce della directory centrale non valida"))?;
    let name = entry.name().map_err(|_| corrupt("nome di voce non decodificabile"))?.into_owned();
    let shown = display_name(&name, limits.max_name_chars);
    let at = usize::try_from(entry.central_header_start()).unwrap_or(usize::MAX);
    if !bytes.get(at..).is_some_and(|rest| rest.starts_with(CENTRAL_MAGIC) && rest.len() >= CENTRAL_LEN) {
        return Err(corrupt("voce della directory centrale non valida"));
    }
    let header = |offset| u16_at(bytes, at + offset).ok_or(corrupt("voce della directory centrale troncata"));
    let (flags, method) = (header(8)?, header(10)?);
    let external = u32_at(bytes, at + 38).ok_or(corrupt("voce della directory centrale troncata"))?;

    // Refused on our own reading of the flag as well as the crate's: the crate must never be asked to decrypt.
    if flags & (FLAG_ENCRYPTED | FLAG_STRONG_ENCRYPTION) != 0 || entry.encrypted() {
        return Err(Refusal::ZipEncrypted { entry: shown });
    }
    // The mode is read whatever system the archive claims: a link is refused even if it says it came from DOS.
    if entry.is_symlink() || (external >> 16) & S_IFMT == S_IFLNK {
        return Err(Refusal::ZipSymlink { entry: shown });
    }
    if method != METHOD_STORED && method != METHOD_DEFLATED {
        return Err(Refusal::ZipMethod { entry: shown, method });
    }
    check_entry_name(entry.name_raw(), &name, entry.enclosed_name().is_some(), limits, &shown)?;
    let is_dir = entry.is_dir();
    if is_dir && (entry.size() != 0 || entry.compressed_size() != 0) {
        return Err(Refusal::ZipDirectoryData { entry: shown });
    }
    if method == METHOD_STORED && entry.size() != entry.compressed_size() {
        return Err(Refusal::DeclaredSizeMismatch { entry: shown, declared: entry.size() });
    }
    Ok(RawEntry {
        shown,
        name_raw: entry.name_raw().to_vec(),
        name,
        is_dir,
        method,
        flags,
        compressed: entry.compressed_size(),
        declared: entry.size(),
        header_start: entry.header_start(),
    })
}

fn check_entry_name(
    raw: &[u8],
    name: &str,
    enclosed: bool,
    limits: &AttachmentLimits,
    shown: &str,
) -> Result<(), Refusal> {
    let refuse = |reason| Err(Refusal::ZipEntryName { entry: shown.to_owned(), reason });
    if raw.is_empty() {
        return refuse("nome vuoto");
    }
    if raw.iter().any(|&b| b < 0x20 || b == 0x7F) || name.chars().any(is_deceptive) {
        return refuse("il nome contiene caratteri di controllo o di direzione del testo");
    }
    let chars = name.chars().count();
    if chars > limits.max_name_chars {
        return refuse("nome troppo lungo");
    }
    let drive = matches!(raw, [letter, b':', ..] if letter.is_ascii_alphabetic());
    if raw.starts_with(b"/") || raw.starts_with(b"\\") || drive {
        return Err(Refusal::ZipAbsolutePath { entry: shown.to_owned() });
    }
    if name.split(['/', '\\']).any(|component| component == "..") {
        return Err(Refusal::ZipPathTraversal { entry: shown.to_owned() });
    }
    // The crate's own judgement as a second opinion, for whatever the checks above did not think of.
    if !enclosed {
        return refuse("percorso non ammesso");
    }
    Ok(())
}

/// Each entry's bytes, from its local header to the end of its compressed data, must lie before the central
/// directory and overlap no other entry's: overlapping entries are how a small archive expands to gigabytes
/// without nesting (David Fifield, "A better zip bomb"). The local header must also agree with the central one
/// on what matters to a reader, or two readers could see two different archives.
fn check_layout(bytes: &[u8], archive: &zip::ZipArchive<Cursor<&[u8]>>, raw: &[RawEntry]) -> Result<(), Refusal> {
    let cd_start = archive.central_directory_start();
    let mut ranges = Vec::with_capacity(raw.len());
    let mut locals = Vec::with_capacity(raw.len());
    for (index, entry) in raw.iter().enumerate() {
        let at = usize::try_from(entry.header_start).unwrap_or(usize::MAX);
        let local = bytes.get(at..).filter(|rest| rest.starts_with(ZIP_LOCAL_MAGIC) && rest.len() >= LOCAL_LEN);
        let Some(local) = local else {
            return Err(Refusal::ZipOutOfBounds { entry: entry.shown.clone() });
        };
        let name_len = u16_at(local, 26).map(usize::from).unwrap_or_default();
        let extra_len = u16_at(local, 28).map(usize::from).unwrap_or_default();
        let header_len = u64::try_from(LOCAL_LEN + name_len + extra_len).unwrap_or(u64::MAX);
        let end = entry.header_start.saturating_add(header_len).saturating_add(entry.compressed);
        if end > cd_start {
            return Err(Refusal::ZipOutOfBounds { entry: entry.shown.clone() });
        }
        ranges.push((entry.header_start, end, index));
        locals.push((local, name_len));
    }
    ranges.sort_unstable();
    for pair in ranges.windows(2) {
        let ((_, first_end, first), (second_start, _, second)) = (pair[0], pair[1]);
        if second_start < first_end {
            return Err(Refusal::ZipOverlap { first: raw[first].shown.clone(), second: raw[second].shown.clone() });
        }
    }
    let encryption = |flags: u16| flags & (FLAG_ENCRYPTED | FLAG_STRONG_ENCRYPTION);
    for (entry, (local, name_len)) in raw.iter().zip(locals) {
        let same = local.get(LOCAL_LEN..LOCAL_LEN + name_len) == Some(entry.name_raw.as_slice())
            && u16_at(local, 8) == Some(entry.method)
            && u16_at(local, 6).map(encryption) == Some(encryption(entry.flags));
        if !same {
            return Err(corrupt("intestazione locale diversa da quella della directory centrale"));
        }
    }
    Ok(())
}

/// Bounds from the declared sizes, before a byte is decompressed; `read_entry` then enforces them.
fn check_declared_sizes(bytes: &[u8], raw: &[RawEntry], limits: &AttachmentLimits) -> Result<(), Refusal> {
    let total = raw.iter().fold(0u64, |sum, entry| sum.saturating_add(entry.declared));
    if total > limits.zip_max_uncompressed_bytes {
        return Err(Refusal::ZipTooLarge { max: limits.zip_max_uncompressed_bytes });
    }
    for entry in raw.iter().filter(|entry| !entry.is_dir) {
        // A compressed size of 0 with content would be an infinite ratio: 1 keeps the comparison meaningful.
        if entry.declared > entry.compressed.max(1).saturating_mul(limits.zip_max_ratio) {
            return Err(Refusal::ZipRatio { entry: Some(entry.shown.clone()), max: limits.zip_max_ratio });
        }
    }
    if total > len_u64(bytes).saturating_mul(limits.zip_max_ratio) {
        return Err(Refusal::ZipRatio { entry: None, max: limits.zip_max_ratio });
    }
    Ok(())
}

/// Keeps the first bytes for type detection and counts the rest, so an entry is never held whole in memory.
struct Head {
    head: Vec<u8>,
    total: u64,
}

impl Write for Head {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let room = HEAD_BYTES.saturating_sub(self.head.len());
        self.head.extend_from_slice(&buf[..room.min(buf.len())]);
        self.total = self.total.saturating_add(len_u64(buf));
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Reads one entry to its end, through a cap of one byte past what it may yield, so that the CRC-32 is checked
/// and no declared size is believed.
fn read_entry(
    archive: &mut zip::ZipArchive<Cursor<&[u8]>>,
    index: usize,
    entry: &RawEntry,
    budget: u64,
    limits: &AttachmentLimits,
) -> Result<(ContentKind, u64), Refusal> {
    let mismatch = || Refusal::DeclaredSizeMismatch { entry: entry.shown.clone(), declared: entry.declared };
    let mut file = archive.by_index(index).map_err(|_| corrupt("voce non leggibile"))?;
    let cap = entry.declared.min(budget).saturating_add(1);
    let mut sink = Head { head: Vec::with_capacity(HEAD_BYTES), total: 0 };
    if let Err(error) = io::copy(&mut file.by_ref().take(cap), &mut sink) {
        // The crate stops at the declared size itself and says so only in its message; any other failure
        // (a CRC-32 mismatch, a broken deflate stream) is corruption.
        return Err(if error.to_string().contains("declared uncompressed size") {
            mismatch()
        } else if error.to_string().to_ascii_lowercase().contains("checksum") {
            corrupt("CRC-32 errato")
        } else {
            corrupt("dati compressi danneggiati")
        });
    }
    if sink.total > budget {
        return Err(Refusal::ZipTooLarge { max: limits.zip_max_uncompressed_bytes });
    }
    if sink.total != entry.declared {
        return Err(mismatch());
    }
    if sink.total == 0 {
        return Err(Refusal::ZipEntryEmpty { entry: entry.shown.clone() });
    }
    match detect(&sink.head) {
        Detected::Allowed(ContentKind::Zip) => {
            Err(Refusal::NestedArchive { entry: entry.shown.clone(), detected: Some(ContentKind::Zip.mime().into()) })
        }
        Detected::Allowed(kind) => Ok((kind, sink.total)),
        Detected::Other { mime, archive: true } => {
            Err(Refusal::NestedArchive { entry: entry.shown.clone(), detected: mime.map(str::to_owned) })
        }
        Detected::Other { mime, archive: false } if sink.head.starts_with(ZIP_SPANNED_MAGIC) => {
            Err(Refusal::NestedArchive { entry: entry.shown.clone(), detected: mime.map(str::to_owned) })
        }
        Detected::Other { mime, .. } => {
            Err(Refusal::TypeNotAllowed { entry: Some(entry.shown.clone()), detected: mime.map(str::to_owned) })
        }
    }
}

#[cfg(test)]
mod tests;
