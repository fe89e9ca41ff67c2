//! Attachments end to end, on both backends: a request with three files (a PDF, a PNG, a ZIP of a JPEG and a
//! TIFF) sent as a multipart body is stored once (the same content again adds no bytes), listed with the request
//! and downloadable by its requester and the sede's operators only; hostile files built here are refused with
//! the rule they broke, through the CLI and the API, and nothing of their request is stored; rules read the
//! files through `ctx.attachments()`; a message to the sede carries files too; the retention purge removes them.

mod common;

use std::io::Write;

use common::api::{BASE, ROSSI, bearer, daemon, problem, token};
use common::daemon::{http, http_bytes, stop};
use common::{Db, Env, Settings, rdi};
use serde_json::{Value, json};

const VERDI: &str = "VRDGPP80A41H501Y";
const BOUNDARY: &str = "----smart-task-test-boundary";

fn pdf() -> Vec<u8> {
    b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n".to_vec()
}
fn png() -> Vec<u8> {
    let mut b = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x01\0\0\0\x01\x08\x02\0\0\0".to_vec();
    b.extend_from_slice(&[0x90, 0x77, 0x53, 0xde]);
    b
}
fn jpeg() -> Vec<u8> {
    let mut b = vec![0xFF, 0xD8, 0xFF, 0xE0, 0x00, 0x10, b'J', b'F', b'I', b'F', 0, 1, 1, 0, 0, 1, 0, 1, 0, 0];
    b.extend_from_slice(&[0xFF, 0xD9]);
    b
}
fn tiff() -> Vec<u8> {
    let mut b = b"II*\0\x08\0\0\0".to_vec();
    b.extend_from_slice(&[0; 16]);
    b
}

/// A ZIP of `entries` (deflated) built with the zip crate.
fn zip_of(entries: &[(&str, Vec<u8>)]) -> Vec<u8> {
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let options = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
    for (name, bytes) in entries {
        w.start_file(*name, options).expect("zip entry");
        w.write_all(bytes).expect("zip write");
    }
    w.finish().expect("zip").into_inner()
}

/// A minimal ELF header: an executable whatever its name says.
fn elf() -> Vec<u8> {
    let mut b = b"\x7FELF\x02\x01\x01\0".to_vec();
    b.resize(128, 0);
    b
}

/// A multipart body: the document part (`name`, JSON) and the files.
fn multipart(part: &str, document: &str, files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut body = Vec::new();
    let content_type = if part == "testo" { "text/plain" } else { "application/json" };
    body.extend_from_slice(
        format!(
            "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{part}\"\r\nContent-Type: {content_type}\r\n\r\n{document}\r\n"
        )
        .as_bytes(),
    );
    for (name, bytes) in files {
        body.extend_from_slice(
            format!(
                "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"allegato\"; filename=\"{name}\"\r\n\
                 Content-Type: application/octet-stream\r\n\r\n"
            )
            .as_bytes(),
        );
        body.extend_from_slice(bytes);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
    body
}

fn multipart_headers(token: &str) -> String {
    format!("{}Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n", bearer(token))
}

/// The request of Rossi on 1234567890 revoking Verdi's delega, as JSON.
fn request_json(chiave: &str) -> String {
    json!({
        "task": "REVOCA_DELEGA_INTERMEDIARIO", "richiedente_cf": ROSSI, "profilo_richiedente": "AZIENDA",
        "matricola": "1234567890", "cf_intermediario": VERDI, "motivazione": "ALTRO",
        "note": "si allega diffida", "chiave_idempotenza": chiave,
    })
    .to_string()
}

fn counts(env: &Env) -> (i64, i64) {
    let n = |q: &str| env.sql(q)[0][0].as_i64().expect("count");
    (n("SELECT COUNT(*) FROM attachments"), n("SELECT COUNT(*) FROM attachment_contents"))
}

fn three_attachments_stored_once_and_downloadable_by_the_right_callers(db: Db) {
    let env = Env::new(db);
    let (child, port) = daemon(&env);
    let rossi = token("portale.key.pem", json!({}));
    let (pdf, png) = (pdf(), png());
    let archive = zip_of(&[("scansione.jpg", jpeg()), ("documento.tif", tiff())]);
    let files: [(&str, &[u8]); 3] = [("diffida.pdf", &pdf), ("ricevuta.png", &png), ("documenti.zip", &archive)];
    let body = multipart("richiesta", &request_json("k-allegati-1"), &files);
    let (status, head, out) = http_bytes(port, "POST", &format!("{BASE}/richieste"), &multipart_headers(&rossi), &body);
    let out = String::from_utf8_lossy(&out);
    assert_eq!(status, 201, "{head}\n{out}");
    let stored: Value = serde_json::from_str(&out).expect("json");
    let id = stored["items"][0]["id"].as_str().expect("id").to_string();

    // The request lists its files with the type read from their content.
    let (status, _, view) = http(port, "GET", &format!("{BASE}/richieste/{id}"), &bearer(&rossi), "");
    assert_eq!(status, 200);
    let view: Value = serde_json::from_str(&view).expect("json");
    let listed: Vec<(&str, &str)> = view["allegati"]
        .as_array()
        .expect("allegati")
        .iter()
        .map(|a| (a["nome"].as_str().expect("nome"), a["tipo"].as_str().expect("tipo")))
        .collect();
    assert_eq!(
        listed,
        [("diffida.pdf", "application/pdf"), ("ricevuta.png", "image/png"), ("documenti.zip", "application/zip")]
    );
    assert_eq!(view["richiesta"]["allegati"].as_array().map(Vec::len), Some(3), "{view}");
    let protocollazione = &view["eventi"][0];
    assert_eq!(protocollazione["dettaglio"]["allegati"].as_array().map(Vec::len), Some(3), "{protocollazione}");
    assert!(!protocollazione.to_string().contains("diffida.pdf"), "names stay out of the events: {protocollazione}");
    assert_eq!(counts(&env), (3, 3));

    // Downloads: the requester and an operator of the sede get the bytes; another requester, another sede and an
    // integrator get 404.
    let operator = token("portale.key.pem", json!({"ruolo": "operatore", "sub": "op-anna", "sede": "7000"}));
    for (n, (name, bytes)) in files.iter().enumerate() {
        for who in [&rossi, &operator] {
            let path = format!("{BASE}/richieste/{id}/allegati/{}", n + 1);
            let (status, head, got) = http_bytes(port, "GET", &path, &bearer(who), b"");
            assert_eq!(status, 200, "{head}");
            assert!(got == *bytes, "attachment {} comes back as sent", n + 1);
            let lower = head.to_ascii_lowercase();
            assert!(lower.contains("cache-control: no-store") && lower.contains("x-content-type-options: nosniff"));
            assert!(head.contains(&format!("filename=\"{name}\"")), "{head}");
        }
    }
    let verdi = token("portale.key.pem", json!({"cf": VERDI, "profilo": "INTERMEDIARIO"}));
    let milano = token("portale.key.pem", json!({"ruolo": "operatore", "sub": "op-carla", "sede": "1300"}));
    let integrator = token("portale.key.pem", json!({"ruolo": "integratore", "sub": "archivio"}));
    for who in [&verdi, &milano, &integrator] {
        let (status, head, out) = http(port, "GET", &format!("{BASE}/richieste/{id}/allegati/1"), &bearer(who), "");
        assert_eq!(status, 404, "{head}");
        assert_eq!(problem(&head, &out)["status"], 404);
    }
    let (status, _, _) = http(port, "GET", &format!("{BASE}/richieste/{id}/allegati/4"), &bearer(&rossi), "");
    assert_eq!(status, 404);

    // The same PDF with another request: a new attachment row, no new content.
    let again = multipart("richiesta", &request_json("k-allegati-2"), &[("copia.pdf", &pdf)]);
    let (status, head, _) = http_bytes(port, "POST", &format!("{BASE}/richieste"), &multipart_headers(&rossi), &again);
    assert_eq!(status, 201, "{head}");
    assert_eq!(counts(&env), (4, 3), "a content already stored is stored once");

    // A message to the sede with a file: numbered after the request's own.
    let message = multipart("testo", "Allego la ricevuta della PEC.", &[("pec.pdf", &tiff())]);
    let (status, head, out) =
        http_bytes(port, "POST", &format!("{BASE}/richieste/{id}/messaggi"), &multipart_headers(&rossi), &message);
    assert_eq!(status, 201, "{head}\n{}", String::from_utf8_lossy(&out));
    let (_, _, view) = http(port, "GET", &format!("{BASE}/richieste/{id}"), &bearer(&rossi), "");
    let view: Value = serde_json::from_str(&view).expect("json");
    let fourth = &view["allegati"][3];
    assert_eq!((fourth["posizione"].as_i64(), fourth["messaggio"].as_bool()), (Some(4), Some(true)), "{view}");
    assert_eq!(fourth["tipo"], "image/tiff", "the type is the content's, not the name's");
    stop(child);

    // `show` lists them, `allegato` writes one out; the purge of closed requests removes them with their request.
    let shown = env.ok(&["show", &id]);
    assert!(shown.contains("1. diffida.pdf  application/pdf"), "{shown}");
    let out = env.path("diffida-copia.pdf");
    env.ok(&["allegato", &id, "1", "--out", out.to_str().expect("utf-8")]);
    assert!(std::fs::read(&out).expect("written") == pdf);
    env.sql("UPDATE requests SET stato = 'chiusa', esito = 'annullata', chiusa_il = 1");
    env.ok(&["purge", "--older-than-days", "1"]);
    assert_eq!(counts(&env), (0, 0), "the purge leaves no attachment and no content");
}

/// What is sent, the files (name, bytes), the rule that refuses them.
type HostileCase = (&'static str, Vec<(&'static str, Vec<u8>)>, &'static str);

/// Each hostile upload through `submit --allegato`: exit 2 naming the file and the rule, nothing stored.
fn hostile_files_are_refused_with_their_reason_and_nothing_is_stored(db: Db) {
    let env = Env::new(db);
    env.import_examples();
    let request = env.write("richiesta.yaml", &rdi(ROSSI, "AZIENDA", "1234567890", VERDI, ""));
    let zeros = vec![0u8; 8 * 1024 * 1024];
    let bomb = zip_of(&[("bomba.pdf", [b"%PDF-1.4\n".as_slice(), &zeros].concat())]);
    let nested = zip_of(&[("interno.zip", zip_of(&[("a.pdf", pdf())]))]);
    let traversal = zip_of(&[("../../etc/passwd.pdf", pdf())]);
    let many: Vec<(String, Vec<u8>)> = (0..40).map(|i| (format!("p{i}.pdf"), pdf())).collect();
    let many = zip_of(&many.iter().map(|(n, b)| (n.as_str(), b.clone())).collect::<Vec<_>>());
    let oversize = [pdf(), vec![b' '; 3 * 1024 * 1024]].concat();
    let cases: Vec<HostileCase> = vec![
        ("a high-ratio bomb", vec![("bomba.zip", bomb)], "zip_ratio"),
        ("a nested archive", vec![("annidato.zip", nested)], "nested_archive"),
        ("a traversal name", vec![("percorso.zip", traversal)], "zip_path_traversal"),
        ("more entries than allowed", vec![("tante.zip", many)], "zip_too_many_entries"),
        ("an executable renamed .pdf", vec![("fattura.pdf", elf())], "type_not_allowed"),
        ("an oversize file", vec![("grande.pdf", oversize)], "file_too_large"),
        ("four files", vec![("1.pdf", pdf()), ("2.pdf", pdf()), ("3.pdf", pdf()), ("4.pdf", pdf())], "too_many_files"),
    ];
    for (what, files, rule) in cases {
        let mut args = vec!["submit".to_string(), request.to_str().expect("utf-8").to_string()];
        for (name, bytes) in &files {
            let path = env.path(name);
            std::fs::write(&path, bytes).expect("write");
            args.extend(["--allegato".to_string(), path.to_str().expect("utf-8").to_string()]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = env.run(&args);
        let err = common::stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{what}: {err}");
        assert!(err.contains(rule) && err.contains("nothing was queued"), "{what}: {err}");
        if files.len() == 1 {
            assert!(err.contains(files[0].0), "{what}: the message names the file: {err}");
        }
        assert!(env.list().is_empty(), "{what}: no request stored");
        assert_eq!(counts(&env), (0, 0), "{what}: no attachment stored");
    }

    // Through the API: problem+json pointing at the file, nothing stored.
    let (child, port) = daemon(&env);
    let rossi = token("portale.key.pem", json!({}));
    let body = multipart("richiesta", &request_json("k-ostile"), &[("ok.pdf", &pdf()), ("fattura.pdf", &elf())]);
    let (status, head, out) = http_bytes(port, "POST", &format!("{BASE}/richieste"), &multipart_headers(&rossi), &body);
    let out = String::from_utf8_lossy(&out);
    assert_eq!(status, 422, "{head}\n{out}");
    let p = problem(&head, &out);
    assert_eq!(p["errors"][0]["pointer"], "/allegati/1", "{p}");
    assert!(
        p["errors"][0]["detail"].as_str().is_some_and(|d| d.contains("fattura.pdf") && d.contains("type_not_allowed")),
        "{p}"
    );
    // A client cannot forge the list of files as a field.
    let forged = json!({"task": "REVOCA_DELEGA_INTERMEDIARIO", "richiedente_cf": ROSSI, "profilo_richiedente": "AZIENDA",
        "matricola": "1234567890", "cf_intermediario": VERDI, "allegati": [{"nome": "x.pdf"}]});
    let headers = format!("{}Content-Type: application/json\r\n", bearer(&rossi));
    let (status, head, out) = http(port, "POST", &format!("{BASE}/richieste"), &headers, &forged.to_string());
    assert_eq!(status, 422, "{head}\n{out}");
    assert_eq!(problem(&head, &out)["errors"][0]["pointer"], "/allegati");
    stop(child);
    assert!(env.list().is_empty());
    assert_eq!(counts(&env), (0, 0));
}

/// A rule reads the files through `ctx.attachments()`: accepted with a PDF, refused without.
fn rules_see_the_attachments(db: Db) {
    let rules = tempfile::tempdir().expect("dir");
    common::rules_with_hostile_task(
        rules.path(),
        "PROVA_ALLEGATI",
        "fn decide(req, ctx) {\n    let files = ctx.attachments();\n    \
         check(\"X-01\", files.len() == 1 && files[0].tipo == \"application/pdf\" && files[0].dimensione > 10);\n}\n",
    );
    let env = Env::with(db, Settings { rules_dir: rules.path().to_path_buf(), ..Settings::default() });
    let request = env.write("prova.yaml", &common::hostile_request("PROVA_ALLEGATI"));
    let file = env.path("diffida.pdf");
    std::fs::write(&file, pdf()).expect("write");
    let with: Value = serde_json::from_str(&env.ok(&[
        "submit",
        request.to_str().expect("utf-8"),
        "--allegato",
        file.to_str().expect("utf-8"),
        "--json",
    ]))
    .expect("json");
    let without = env.submit(&common::hostile_request("PROVA_ALLEGATI"));
    env.decide_all();
    let with = env.show(with[0]["protocollo"].as_str().expect("protocollo"));
    let without = env.show(without[0]["protocollo"].as_str().expect("protocollo"));
    assert_eq!(with["esito"], "accolta", "{with}");
    assert_eq!((without["esito"].as_str(), common::codes(&without)), (Some("non_accolta"), vec!["X-01".to_string()]));
}

backends!(
    three_attachments_stored_once_and_downloadable_by_the_right_callers,
    hostile_files_are_refused_with_their_reason_and_nothing_is_stored,
    rules_see_the_attachments
);
