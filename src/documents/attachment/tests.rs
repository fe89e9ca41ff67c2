//! Hostile and good files, built here, against every rule of the inspection.

use super::*;
use zip::CompressionMethod;
use zip::write::SimpleFileOptions;

fn limits() -> AttachmentLimits {
    AttachmentLimits::default()
}

fn refusal(name: &str, bytes: &[u8]) -> Refusal {
    match inspect(&Upload { name, bytes }, &limits()) {
        Ok(inspected) => panic!("{name} accepted: {inspected:?}"),
        Err(refusal) => refusal,
    }
}

fn rule(name: &str, bytes: &[u8]) -> &'static str {
    refusal(name, bytes).rule()
}

fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in data {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
        }
    }
    !crc
}

fn pdf() -> Vec<u8> {
    b"%PDF-1.4\n1 0 obj\n<< /Type /Catalog >>\nendobj\ntrailer\n<< /Root 1 0 R >>\n%%EOF\n".to_vec()
}

fn png() -> Vec<u8> {
    let mut bytes = PNG_MAGIC.to_vec();
    let ihdr: &[u8] = &[b'I', b'H', b'D', b'R', 0, 0, 0, 1, 0, 0, 0, 1, 8, 2, 0, 0, 0];
    bytes.extend_from_slice(&13u32.to_be_bytes());
    bytes.extend_from_slice(ihdr);
    bytes.extend_from_slice(&crc32(ihdr).to_be_bytes());
    bytes
}

fn jpeg() -> Vec<u8> {
    let mut bytes = vec![0xFF, 0xD8, 0xFF, 0xE0, 0x00, 0x10];
    bytes.extend_from_slice(b"JFIF\0\x01\x01\0\0\x01\0\x01\0\0");
    bytes.extend_from_slice(&[0xFF, 0xD9]);
    bytes
}

fn tiff() -> Vec<u8> {
    let mut bytes = b"II*\0".to_vec();
    bytes.extend_from_slice(&8u32.to_le_bytes());
    bytes.extend_from_slice(&[0; 6]);
    bytes
}

fn elf() -> Vec<u8> {
    let mut bytes = vec![0x7F, b'E', b'L', b'F', 2, 1, 1, 0];
    bytes.extend_from_slice(&[0; 8]);
    bytes.extend_from_slice(&[2, 0, 0x3E, 0, 1, 0, 0, 0]);
    bytes.resize(128, 0);
    bytes
}

fn options(method: CompressionMethod) -> SimpleFileOptions {
    SimpleFileOptions::default().compression_method(method)
}

fn writer_zip(files: &[(&str, &[u8], CompressionMethod)]) -> Vec<u8> {
    let mut writer = zip::ZipWriter::new(Cursor::new(Vec::new()));
    for (name, data, method) in files {
        writer.start_file(*name, options(*method)).expect("start_file");
        writer.write_all(data).expect("write");
    }
    writer.finish().expect("finish").into_inner()
}

/// A ZIP written by hand, stored entries only: `locals` are the local headers and their data, `centrals`
/// the central directory, each record naming the local header it points at, so that the shapes the writer
/// refuses (shared data, hostile names) can be built.
fn raw_zip(locals: &[(&str, &[u8])], centrals: &[(&str, usize)]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut offsets = Vec::new();
    for (name, data) in locals {
        offsets.push(out.len() as u32);
        out.extend_from_slice(ZIP_LOCAL_MAGIC);
        out.extend_from_slice(&[20, 0, 0, 0, 0, 0, 0, 0, 0, 0]); // version, flags, method, time, date
        out.extend_from_slice(&crc32(data).to_le_bytes());
        out.extend_from_slice(&(data.len() as u32).to_le_bytes());
        out.extend_from_slice(&(data.len() as u32).to_le_bytes());
        out.extend_from_slice(&(name.len() as u16).to_le_bytes());
        out.extend_from_slice(&0u16.to_le_bytes());
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(data);
    }
    let cd_start = out.len() as u32;
    for (name, local) in centrals {
        let data = locals[*local].1;
        out.extend_from_slice(CENTRAL_MAGIC);
        out.extend_from_slice(&[20, 3, 20, 0, 0, 0, 0, 0, 0, 0, 0, 0]); // made by, needed, flags, method, time, date
        out.extend_from_slice(&crc32(data).to_le_bytes());
        out.extend_from_slice(&(data.len() as u32).to_le_bytes());
        out.extend_from_slice(&(data.len() as u32).to_le_bytes());
        out.extend_from_slice(&(name.len() as u16).to_le_bytes());
        out.extend_from_slice(&[0; 8]); // extra, comment, disk, internal attributes
        out.extend_from_slice(&(0o100_644u32 << 16).to_le_bytes());
        out.extend_from_slice(&offsets[*local].to_le_bytes());
        out.extend_from_slice(name.as_bytes());
    }
    let cd_size = out.len() as u32 - cd_start;
    out.extend_from_slice(ZIP_EOCD_MAGIC);
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&(centrals.len() as u16).to_le_bytes());
    out.extend_from_slice(&(centrals.len() as u16).to_le_bytes());
    out.extend_from_slice(&cd_size.to_le_bytes());
    out.extend_from_slice(&cd_start.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    out
}

/// The offsets of each entry's local header and central record, for patching a written archive.
fn headers(zip: &[u8]) -> Vec<(usize, usize)> {
    let eocd = zip.len() - EOCD_LEN;
    assert!(zip[eocd..].starts_with(ZIP_EOCD_MAGIC), "archive with a comment");
    let count = u16_at(zip, eocd + 10).expect("count") as usize;
    let mut central = u32_at(zip, eocd + 16).expect("cd offset") as usize;
    let mut found = Vec::new();
    for _ in 0..count {
        let local = u32_at(zip, central + 42).expect("local offset") as usize;
        found.push((local, central));
        let variable = [28, 30, 32].iter().map(|&at| u16_at(zip, central + at).expect("len") as usize).sum::<usize>();
        central += CENTRAL_LEN + variable;
    }
    found
}

/// Writes the same value in the local header (at `local_at`) and the central record (at `central_at`).
fn patch(zip: &mut [u8], local_at: usize, central_at: usize, value: &[u8]) {
    for (local, central) in headers(zip) {
        zip[local + local_at..local + local_at + value.len()].copy_from_slice(value);
        zip[central + central_at..central + central_at + value.len()].copy_from_slice(value);
    }
}

#[test]
fn a_good_set_of_three_is_accepted_with_kinds_sizes_digests_and_entries() {
    let (pdf, png, jpeg, tiff) = (pdf(), png(), jpeg(), tiff());
    let archive = writer_zip(&[
        ("scansioni/foto.jpg", &jpeg, CompressionMethod::Deflated),
        ("scansioni/pagina.tif", &tiff, CompressionMethod::Stored),
    ]);
    let uploads = [
        Upload { name: "domanda.pdf", bytes: &pdf },
        Upload { name: "ricevuta.png", bytes: &png },
        Upload { name: "allegati.zip", bytes: &archive },
    ];
    let inspected = inspect_all(&uploads, &limits()).expect("accepted");
    let kinds: Vec<_> = inspected.iter().map(|i| i.kind).collect();
    assert_eq!(kinds, [ContentKind::Pdf, ContentKind::Png, ContentKind::Zip]);
    for (inspected, upload) in inspected.iter().zip(&uploads) {
        assert_eq!(inspected.name, upload.name);
        assert_eq!(inspected.size, upload.bytes.len() as u64);
        assert_eq!(inspected.sha256, hex_sha256(upload.bytes));
        assert_eq!(inspected.sha256.len(), 64);
    }
    assert_eq!(
        hex_sha256(b"abc"),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
        "lowercase hex of SHA-256"
    );
    assert!(inspected[0].entries.is_empty() && inspected[1].entries.is_empty());
    assert_eq!(
        inspected[2].entries,
        [
            ZipEntry { name: "scansioni/foto.jpg".into(), kind: ContentKind::Jpeg, size: jpeg.len() as u64 },
            ZipEntry { name: "scansioni/pagina.tif".into(), kind: ContentKind::Tiff, size: tiff.len() as u64 },
        ]
    );
    assert_eq!(inspect_all(&[], &limits()), Ok(vec![]));
}

#[test]
fn a_directory_entry_is_skipped_and_an_archive_of_directories_only_is_empty() {
    let mut writer = zip::ZipWriter::new(Cursor::new(Vec::new()));
    writer.add_directory("cartella/", options(CompressionMethod::Stored)).expect("dir");
    let only_dirs = writer.finish().expect("finish").into_inner();
    assert_eq!(rule("d.zip", &only_dirs), "zip_empty");

    let mut writer = zip::ZipWriter::new(Cursor::new(Vec::new()));
    writer.add_directory("cartella/", options(CompressionMethod::Stored)).expect("dir");
    writer.start_file("cartella/a.pdf", options(CompressionMethod::Deflated)).expect("file");
    writer.write_all(&pdf()).expect("write");
    let with_dir = writer.finish().expect("finish").into_inner();
    let inspected = inspect(&Upload { name: "d.zip", bytes: &with_dir }, &limits()).expect("accepted");
    assert_eq!(inspected.entries.len(), 1);
    assert_eq!(inspected.entries[0].name, "cartella/a.pdf");

    let nothing = writer_zip(&[]);
    assert_eq!(rule("vuoto.zip", &nothing), "zip_empty");
}

#[test]
fn a_high_ratio_bomb_is_refused() {
    let zeros = vec![0u8; 10 * 1024 * 1024];
    let bomb = writer_zip(&[("zeri.pdf", &zeros, CompressionMethod::Deflated)]);
    assert!(bomb.len() < 64 * 1024, "the bomb is small: {}", bomb.len());
    assert_eq!(rule("bomba.zip", &bomb), "zip_ratio");
}

#[test]
fn a_zip_inside_a_zip_is_refused_as_a_nested_archive() {
    let inner = writer_zip(&[("a.pdf", &pdf(), CompressionMethod::Deflated)]);
    let outer = writer_zip(&[("dentro.pdf", &inner, CompressionMethod::Stored)]);
    assert_eq!(rule("fuori.zip", &outer), "nested_archive");
    let gzip = [0x1F, 0x8B, 0x08, 0x00, 0, 0, 0, 0, 0, 3, 1, 2, 3, 4];
    let with_gzip = writer_zip(&[("a.pdf", &gzip, CompressionMethod::Stored)]);
    assert_eq!(rule("g.zip", &with_gzip), "nested_archive");
}

#[test]
fn overlapping_entries_are_refused() {
    let data = pdf();
    let shared = raw_zip(&[("a.pdf", &data)], &[("a.pdf", 0), ("b.pdf", 0)]);
    let refused = refusal("sovrapposte.zip", &shared);
    assert_eq!(refused.rule(), "zip_overlap", "{refused}");
    // Control: the same builder with one record per local header is a good archive.
    let good = raw_zip(&[("a.pdf", &data), ("b.pdf", &data)], &[("a.pdf", 0), ("b.pdf", 1)]);
    assert_eq!(inspect(&Upload { name: "ok.zip", bytes: &good }, &limits()).map(|i| i.entries.len()), Ok(2));
}

#[test]
fn data_past_the_end_is_refused() {
    let data = pdf();
    let mut zip = raw_zip(&[("a.pdf", &data)], &[("a.pdf", 0)]);
    let big = (data.len() as u32 + 1000).to_le_bytes();
    patch(&mut zip, 18, 20, &big);
    patch(&mut zip, 22, 24, &big);
    assert_eq!(rule("fuori.zip", &zip), "zip_out_of_bounds");
}

#[test]
fn more_entries_than_allowed_are_refused_before_the_directory_is_parsed() {
    let data = pdf();
    let names: Vec<String> = (0..33).map(|i| format!("{i}.pdf")).collect();
    let files: Vec<_> = names.iter().map(|n| (n.as_str(), data.as_slice(), CompressionMethod::Stored)).collect();
    assert_eq!(rule("tante.zip", &writer_zip(&files)), "zip_too_many_entries");
    let at_limit = writer_zip(&files[..32]);
    assert_eq!(inspect(&Upload { name: "giuste.zip", bytes: &at_limit }, &limits()).map(|i| i.entries.len()), Ok(32));
    let zip64 = {
        let mut zip = writer_zip(&files[..1]);
        let eocd = zip.len() - EOCD_LEN;
        zip[eocd + 8..eocd + 12].copy_from_slice(&[0xFF; 4]);
        zip
    };
    assert_eq!(rule("z64.zip", &zip64), "zip64");
}

#[test]
fn a_declared_size_smaller_than_the_real_one_is_refused() {
    let mut content = pdf();
    content.extend((0..4000u32).map(|i| (i * 7 % 251) as u8));
    let mut zip = writer_zip(&[("grande.pdf", &content, CompressionMethod::Deflated)]);
    patch(&mut zip, 22, 24, &100u32.to_le_bytes());
    assert_eq!(rule("bugia.zip", &zip), "declared_size_mismatch");
    // Larger than the real one: the stream ends short.
    let mut zip = writer_zip(&[("grande.pdf", &content, CompressionMethod::Deflated)]);
    patch(&mut zip, 22, 24, &(content.len() as u32 + 10).to_le_bytes());
    assert_eq!(rule("bugia.zip", &zip), "declared_size_mismatch");
}

#[test]
fn traversal_and_absolute_names_are_refused() {
    let data = pdf();
    let zip = |name| raw_zip(&[(name, &data)], &[(name, 0)]);
    assert_eq!(rule("t.zip", &zip("../../etc/passwd")), "zip_path_traversal");
    assert_eq!(rule("t.zip", &zip("a/../../b.pdf")), "zip_path_traversal");
    assert_eq!(rule("t.zip", &zip("a\\..\\..\\b.pdf")), "zip_path_traversal");
    assert_eq!(rule("a.zip", &zip("/etc/passwd")), "zip_absolute_path");
    assert_eq!(rule("a.zip", &zip("\\server\\share.pdf")), "zip_absolute_path");
    assert_eq!(rule("a.zip", &zip("C:\\Windows\\x.pdf")), "zip_absolute_path");
    assert_eq!(rule("n.zip", &zip("a\u{1}b.pdf")), "zip_entry_name");
}

#[test]
fn an_encrypted_entry_is_refused() {
    let mut zip = writer_zip(&[("a.pdf", &pdf(), CompressionMethod::Stored)]);
    patch(&mut zip, 6, 8, &1u16.to_le_bytes());
    assert_eq!(rule("cifrato.zip", &zip), "zip_encrypted");
}

#[test]
fn a_symlink_entry_is_refused() {
    let mut writer = zip::ZipWriter::new(Cursor::new(Vec::new()));
    writer.add_symlink("collegamento.pdf", "/etc/shadow", options(CompressionMethod::Stored)).expect("symlink");
    let zip = writer.finish().expect("finish").into_inner();
    assert_eq!(rule("link.zip", &zip), "zip_symlink");
}

#[test]
fn a_method_other_than_stored_or_deflate_is_refused() {
    let mut zip = writer_zip(&[("a.pdf", &pdf(), CompressionMethod::Deflated)]);
    patch(&mut zip, 8, 10, &12u16.to_le_bytes());
    let refused = refusal("bzip2.zip", &zip);
    assert_eq!(refused, Refusal::ZipMethod { entry: "a.pdf".into(), method: 12 });
    assert_eq!(refused.rule(), "zip_method");
}

#[test]
fn a_crc_mismatch_is_refused_as_corrupt() {
    let mut zip = writer_zip(&[("a.pdf", &pdf(), CompressionMethod::Deflated)]);
    let (local, _) = headers(&zip)[0];
    let wrong = (u32_at(&zip, local + 14).expect("crc") ^ 1).to_le_bytes();
    patch(&mut zip, 14, 16, &wrong);
    assert_eq!(rule("crc.zip", &zip), "zip_corrupt");
    let mut stored = writer_zip(&[("a.pdf", &pdf(), CompressionMethod::Stored)]);
    patch(&mut stored, 14, 16, &0u32.to_le_bytes());
    assert_eq!(rule("crc.zip", &stored), "zip_corrupt");
}

#[test]
fn an_entry_of_another_type_is_refused_naming_the_entry() {
    let zip =
        writer_zip(&[("a.pdf", &pdf(), CompressionMethod::Stored), ("b.pdf", &elf(), CompressionMethod::Deflated)]);
    let refused = refusal("misto.zip", &zip);
    assert_eq!(
        refused,
        Refusal::TypeNotAllowed { entry: Some("b.pdf".into()), detected: Some("application/x-executable".into()) }
    );
    assert!(refused.to_string().contains("«b.pdf»"), "{refused}");
    let empty = writer_zip(&[("vuoto.pdf", b"", CompressionMethod::Stored)]);
    assert_eq!(rule("e.zip", &empty), "zip_entry_empty");
}

#[test]
fn an_executable_renamed_pdf_is_refused_naming_what_it_is() {
    let refused = refusal("x.pdf", &elf());
    assert_eq!(refused, Refusal::TypeNotAllowed { entry: None, detected: Some("application/x-executable".into()) });
    assert!(refused.to_string().contains("application/x-executable"), "{refused}");
    let mut pe = b"MZ".to_vec();
    pe.resize(256, 0);
    assert_eq!(rule("fattura.pdf", &pe), "type_not_allowed");
}

#[test]
fn a_text_file_is_refused() {
    let refused = refusal("nota.pdf", b"Gentile sede, allego la domanda.\n");
    assert_eq!(refused, Refusal::TypeNotAllowed { entry: None, detected: None });
    // A PDF signature not at the start is not a PDF.
    assert_eq!(rule("nota.pdf", b" %PDF-1.4\n%%EOF"), "type_not_allowed");
}

#[test]
fn four_files_are_too_many_for_the_set() {
    let data = pdf();
    let uploads: Vec<_> = (0..4).map(|_| Upload { name: "a.pdf", bytes: &data }).collect();
    let error = inspect_all(&uploads, &limits()).expect_err("refused");
    assert_eq!((error.index, error.name.as_deref(), error.refusal.rule()), (None, None, "too_many_files"));
    assert_eq!(error.to_string(), "allegati: troppi allegati: 4, il massimo è 3");
}

#[test]
fn an_oversize_file_is_refused_before_parsing() {
    let mut big = pdf();
    big.resize(limits().max_file_bytes as usize + 1, b' ');
    assert_eq!(rule("grande.pdf", &big), "file_too_large");
    big.pop();
    assert!(inspect(&Upload { name: "giusto.pdf", bytes: &big }, &limits()).is_ok());
    assert_eq!(rule("vuoto.pdf", b""), "empty_file");
}

#[test]
fn a_set_over_the_total_is_refused_and_a_later_refusal_names_its_file() {
    let small = AttachmentLimits { max_total_bytes: 200, ..limits() };
    let data = pdf();
    let uploads: Vec<_> = (0..3).map(|_| Upload { name: "a.pdf", bytes: &data }).collect();
    let error = inspect_all(&uploads, &small).expect_err("refused");
    assert_eq!((error.index, error.refusal.rule()), (None, "total_too_large"));

    let text = b"testo".to_vec();
    let uploads = [Upload { name: "a.pdf", bytes: &data }, Upload { name: "b\u{202E}fdp.txt", bytes: &text }];
    let error = inspect_all(&uploads, &limits()).expect_err("refused");
    assert_eq!((error.index, error.refusal.rule()), (Some(1), "name_control_chars"));
    assert_eq!(
        error.to_string(),
        "allegato 2 «b\u{FFFD}fdp.txt»: il nome del file contiene caratteri di controllo o di direzione del testo, non ammessi"
    );
}

#[test]
fn names_are_checked() {
    let data = pdf();
    let named = |name: &str| inspect(&Upload { name, bytes: &data }, &limits()).map(|_| ()).map_err(|r| r.rule());
    assert_eq!(named("domanda di rimborso (1).PDF"), Ok(()));
    assert_eq!(named("senza-estensione"), Ok(()), "the extension does not decide");
    assert_eq!(named(""), Err("name_empty"));
    assert_eq!(named("  "), Err("name_empty"));
    assert_eq!(named(&"a".repeat(201)), Err("name_too_long"));
    assert_eq!(named(&"à".repeat(200)), Ok(()), "characters, not bytes");
    assert_eq!(named("a\nb.pdf"), Err("name_control_chars"));
    assert_eq!(named("../a.pdf"), Err("name_separator"));
    assert_eq!(named("c:\\a.pdf"), Err("name_separator"));
    assert_eq!(named(".."), Err("name_dots"));
    assert_eq!(named("."), Err("name_dots"));
    assert_eq!(display_name(&"é".repeat(250), 200).chars().count(), 201);
}

#[test]
fn kinds_and_media_types() {
    for kind in [ContentKind::Pdf, ContentKind::Jpeg, ContentKind::Png, ContentKind::Tiff, ContentKind::Zip] {
        assert_eq!(ContentKind::from_mime(kind.mime()), Some(kind));
    }
    assert_eq!(ContentKind::from_mime("Application/PDF; charset=binary"), Some(ContentKind::Pdf));
    assert_eq!(ContentKind::from_mime("application/x-zip-compressed"), Some(ContentKind::Zip));
    assert_eq!(ContentKind::from_mime("application/octet-stream"), None);
    assert_eq!(serde_json::to_value(ContentKind::Jpeg).expect("json"), "jpeg");
    for (bytes, kind) in
        [(pdf(), ContentKind::Pdf), (jpeg(), ContentKind::Jpeg), (png(), ContentKind::Png), (tiff(), ContentKind::Tiff)]
    {
        assert_eq!(inspect(&Upload { name: "f", bytes: &bytes }, &limits()).map(|i| i.kind), Ok(kind));
    }
    let mut big_endian = b"MM\0*".to_vec();
    big_endian.extend_from_slice(&[0, 0, 0, 8, 0, 0, 0, 0]);
    assert_eq!(inspect(&Upload { name: "f", bytes: &big_endian }, &limits()).map(|i| i.kind), Ok(ContentKind::Tiff));
}

#[test]
fn limits_default_and_refuse_unknown_keys() {
    let parsed: AttachmentLimits = serde_json::from_str(r#"{"max_files": 2}"#).expect("limits");
    assert_eq!(parsed, AttachmentLimits { max_files: 2, ..AttachmentLimits::default() });
    assert_eq!(limits().max_file_bytes, 3 * 1024 * 1024);
    assert!(serde_json::from_str::<AttachmentLimits>(r#"{"max_filez": 2}"#).is_err());
}
