//! The esito PDF of closed requests: `fascicolo --pdf DIR` writes one PDF/A document per closed request,
//! the same bytes each time; its text (read back by poppler's `pdftotext`) holds the protocol number, the
//! esito and every reason, poppler's `pdftoppm` renders its first page the same way twice; the API serves the same bytes to the requester only, and 409 before the close.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::api::{BASE, ROSSI, bearer, daemon, problem, token};
use common::daemon::{http, http_bytes, stop};
use common::{Db, Env, rdi};
use serde_json::{Value, json};

const VERDI: &str = "VRDGPP80A41H501Y";
/// An intermediary without a delega on 1234567890: Non Accolta.
const GALLI: &str = "GLLSFN88H10L219C";
/// The requester of rdi-07 (referred to an operator: stays open).
const RICCI: &str = "RCCFNC79B12H501Q";

fn tool(name: &str, args: &[&str]) -> String {
    let out = Command::new(name).args(args).output().unwrap_or_else(|e| {
        panic!("cannot run `{name}` ({e}): install poppler-utils (Debian: apt-get install poppler-utils)")
    });
    assert!(out.status.success(), "{name} {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `fascicolo SOGGETTO --pdf DIR`: the (sha256, path) pairs it printed.
fn write_pdfs(env: &Env, soggetto: &str, dir: &Path) -> Vec<(String, PathBuf)> {
    let out = env.ok(&["fascicolo", soggetto, "--pdf", dir.to_str().expect("utf-8 path")]);
    out.lines()
        .map(|l| {
            let (sha, path) = l.split_once("  ").unwrap_or_else(|| panic!("`SHA256  PATH`: {l}"));
            (sha.to_string(), PathBuf::from(path))
        })
        .collect()
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

fn esito_pdf_for_accepted_and_rejected(db: Db) {
    let env = Env::new(db);
    env.import_examples();
    let accepted = env.submit(&rdi(ROSSI, "AZIENDA", "1234567890", VERDI, ""));
    let rejected = env.submit(&rdi(ROSSI, "AZIENDA", "1234567890", GALLI, ""));
    let referred =
        std::fs::read_to_string(common::repo().join("examples/requests/rdi-07-rinvio-motivazione-altro.yaml"))
            .expect("rdi-07");
    let open = env.submit(&referred);
    env.decide_all();
    let still_open = env.show(open[0]["protocollo"].as_str().expect("protocollo"));
    assert!(!still_open["eventi"].to_string().contains("esito_documento"), "an open request has no esito document");
    let accepted = env.show(accepted[0]["protocollo"].as_str().expect("protocollo"));
    let rejected = env.show(rejected[0]["protocollo"].as_str().expect("protocollo"));
    assert_eq!((accepted["esito"].as_str(), rejected["esito"].as_str()), (Some("accolta"), Some("non_accolta")));
    assert!(!common::codes(&rejected).is_empty(), "{rejected}");

    // Two runs into two directories: the same files, byte for byte, and the SHA-256 printed is the file's.
    let first = write_pdfs(&env, "1234567890", &env.path("pdf-1"));
    let second = write_pdfs(&env, "1234567890", &env.path("pdf-2"));
    assert_eq!(first.len(), 2, "{first:?}");
    for ((sha_a, a), (sha_b, b)) in first.iter().zip(&second) {
        assert_eq!(a.file_name(), b.file_name());
        let (bytes_a, bytes_b) = (std::fs::read(a).expect("pdf"), std::fs::read(b).expect("pdf"));
        assert!(bytes_a == bytes_b, "{} and {} differ", a.display(), b.display());
        assert_eq!((sha_a, sha_b), (&sha256_hex(&bytes_a), &sha256_hex(&bytes_b)));
        let name = a.file_name().and_then(|n| n.to_str()).expect("name");
        assert!(name.ends_with(".pdf") && !name.trim_end_matches(".pdf").contains(['.', '/']), "{name}");
    }

    for view in [&accepted, &rejected] {
        let protocollo = view["protocollo"].as_str().expect("protocollo");
        // The history records the document's SHA-256 after the close: the bytes regenerated now are those.
        let recorded = view["eventi"]
            .as_array()
            .and_then(|e| e.iter().find(|e| e["tipo"] == "esito_documento"))
            .unwrap_or_else(|| panic!("no esito_documento event: {view}"));
        let sha = recorded["dettaglio"]["sha256"].as_str().expect("sha256");
        assert!(first.iter().any(|(s, _)| s == sha), "{protocollo}: the recorded {sha} is the file's: {first:?}");
        let stem = protocollo.replace(['.', '/'], "_");
        let (_, path) = first
            .iter()
            .find(|(_, p)| p.file_stem().and_then(|s| s.to_str()) == Some(stem.as_str()))
            .unwrap_or_else(|| panic!("no file for {protocollo}: {first:?}"));
        let p = path.to_str().expect("utf-8 path");
        // The text: protocol number, esito, every reason's code and message (lines joined: messages wrap).
        let text = tool("pdftotext", &["-enc", "UTF-8", p, "-"]);
        let flat = text.split_whitespace().collect::<Vec<_>>().join(" ");
        assert!(flat.contains(protocollo), "{flat}");
        assert!(
            flat.contains("Esito della richiesta") && flat.contains(ROSSI) && flat.contains("1234567890"),
            "{flat}"
        );
        if view["esito"] == "accolta" {
            assert!(flat.contains("Accolta") && !flat.contains("Non Accolta"), "{flat}");
        } else {
            assert!(flat.contains("Non Accolta"), "{flat}");
        }
        for m in view["motivazioni"].as_array().expect("motivazioni") {
            let code = m["codice"].as_str().expect("codice");
            let message = m["messaggio"].as_str().expect("messaggio").split_whitespace().collect::<Vec<_>>().join(" ");
            assert!(flat.contains(code) && flat.contains(&message), "{code}: {message}\n{flat}");
        }
        // PDF/A: the version and the XMP identification (part 2, conformance B).
        let info = tool("pdfinfo", &[p]);
        assert!(info.lines().any(|l| l.starts_with("PDF version:") && l.contains("1.7")), "{info}");
        let meta = tool("pdfinfo", &["-meta", p]);
        assert!(meta.contains("pdfaid:part") && meta.contains("pdfaid:conformance"), "{meta}");
        assert!(meta.contains("<pdfaid:part>2</pdfaid:part>") || meta.contains("pdfaid:part=\"2\""), "{meta}");
        // Page 1 renders, and two renderings are the same pixels.
        let render = |name: &str| {
            let prefix = env.path(name);
            tool(
                "pdftoppm",
                &["-png", "-r", "60", "-f", "1", "-l", "1", "-singlefile", p, prefix.to_str().expect("utf-8")],
            );
            std::fs::read(prefix.with_extension("png")).expect("the rendered page")
        };
        let (one, two) = (render(&format!("{stem}-a")), render(&format!("{stem}-b")));
        assert!(one.len() > 1000 && one.starts_with(b"\x89PNG"), "pdftoppm rendered page 1 of {p}");
        assert!(one == two, "two renderings of {p} are byte-identical");
    }

    // The API: the same bytes for the requester, 404 for another requester, 409 before the close.
    let (child, port) = daemon(&env);
    let id = accepted["id"].as_i64().expect("id");
    let (status, head, body) = http_bytes(
        port,
        "GET",
        &format!("{BASE}/richieste/{id}/esito-pdf"),
        &bearer(&token("portale.key.pem", json!({}))),
        b"",
    );
    assert_eq!(status, 200, "{head}");
    let lower = head.to_ascii_lowercase();
    assert!(lower.contains("content-type: application/pdf"), "{head}");
    assert!(lower.contains("cache-control: no-store"), "{head}");
    let stem = accepted["protocollo"].as_str().expect("protocollo").replace(['.', '/'], "_");
    let from_cli = first
        .iter()
        .find(|(_, p)| p.file_stem().and_then(|s| s.to_str()) == Some(stem.as_str()))
        .map(|(_, p)| std::fs::read(p).expect("pdf"))
        .expect("the CLI's file");
    assert!(body == from_cli, "the API serves the CLI's bytes");
    assert!(lower.contains(&format!("etag: \"{}\"", sha256_hex(&body))), "{head}");

    let other = bearer(&token("portale.key.pem", json!({"cf": VERDI})));
    let (status, head, out) = http(port, "GET", &format!("{BASE}/richieste/{id}/esito-pdf"), &other, "");
    assert_eq!(status, 404, "{head}");
    assert_eq!(problem(&head, &out)["status"], 404);

    let open_id = open[0]["id"].as_i64().or_else(|| open[0]["id"].as_str().and_then(|s| s.parse().ok()));
    let open_id = open_id.expect("id");
    let ricci = bearer(&token("portale.key.pem", json!({"cf": RICCI})));
    let (status, head, out) = http(port, "GET", &format!("{BASE}/richieste/{open_id}/esito-pdf"), &ricci, "");
    assert_eq!(status, 409, "{head}\n{out}");
    let p: Value = problem(&head, &out);
    assert!(p["detail"].as_str().is_some_and(|d| d.contains("not closed")), "{p}");
    stop(child);
}

backends!(esito_pdf_for_accepted_and_rejected);
