//! Intake and reference data: idempotent resubmission, and every kind of bad input refused with the field
//! named, exit code 2, and nothing queued or imported.

mod common;

use common::{Db, Env, rdi, stderr};

const VERDI: &str = "VRDGPP80A41H501Y";
const ROSSI: &str = "RSSMRA80A01H501U";

fn good() -> String {
    rdi(ROSSI, "AZIENDA", "1234567890", VERDI, "chiave_idempotenza: portal-7f3a9c\n")
}

fn resubmission_with_the_same_key_returns_the_first_request(db: Db) {
    let env = Env::new(db);
    env.import_examples();
    let first = env.submit(&good());
    let again = env.submit(&good());
    assert_eq!(first[0]["id"], again[0]["id"]);
    assert_eq!(first[0]["protocollo"], again[0]["protocollo"]);
    assert_eq!(first[0]["duplicate"], false);
    assert_eq!(again[0]["duplicate"], true);
    // Twice in one list: one request.
    let text = rdi(ROSSI, "AZIENDA", "1234567890", VERDI, "chiave_idempotenza: other\n");
    let list = format!("- {}\n- {}", text.replace('\n', "\n  "), text.replace('\n', "\n  "));
    let both = env.submit(&list);
    assert_eq!(both[0]["id"], both[1]["id"]);
    assert_eq!(env.list().len(), 2);
    assert_eq!(env.sql("SELECT COUNT(*) FROM events WHERE kind = 'protocollazione'")[0][0], 2);
    // The same key with a different request: a reused key, refused whole (stored or earlier in the list).
    let changed = rdi(ROSSI, "AZIENDA", "1234567890", VERDI, "chiave_idempotenza: other\nnote: altro\n");
    let fresh = rdi(ROSSI, "AZIENDA", "1234567890", VERDI, "chiave_idempotenza: third\n");
    for (text, request) in [
        (changed.clone(), "request 1"),
        (
            format!(
                "- {}\n- {}",
                fresh.replace('\n', "\n  "),
                fresh.replace("third", "third\nnote: x").replace('\n', "\n  ")
            ),
            "request 2",
        ),
    ] {
        let p = env.write("reused.yaml", &text);
        let out = env.run(&["submit", p.to_str().expect("path")]);
        assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
        let err = stderr(&out);
        assert!(err.contains(&format!("{request}: field `chiave_idempotenza`: already used by")), "{err}");
        assert_eq!(env.list().len(), 2, "nothing queued: {err}");
    }
}

fn protocol_numbers_are_per_sede_and_year(db: Db) {
    let env = Env::new(db);
    env.import_examples();
    let a = env.submit(&rdi(ROSSI, "AZIENDA", "1234567890", VERDI, ""));
    let b = env.submit(&rdi("BNCGPP72C15F205Z", "AZIENDA", "2345678901", VERDI, ""));
    let c = env.submit(&rdi("FRRLCU75D05H501G", "AZIENDA", "4567890123", VERDI, ""));
    let year = common::civil_now().format("%Y").to_string();
    assert_eq!(a[0]["protocollo"], format!("7000.{year}.0000001"));
    assert_eq!(b[0]["protocollo"], format!("1300.{year}.0000001"));
    assert_eq!(c[0]["protocollo"], format!("7000.{year}.0000002"));
}

/// Submits `text` expecting a refusal that names `field`; checks that nothing was queued.
fn refused(env: &Env, text: &str, field: &str) {
    let p = env.write("bad.yaml", text);
    let out = env.run(&["submit", p.to_str().expect("path")]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains(&format!("`{field}`")), "error should name `{field}`: {err}");
    assert!(err.contains("bad.yaml"), "error should name the file: {err}");
    assert!(err.contains("nothing was queued") || err.contains("document"), "{err}");
    assert!(env.list().is_empty(), "nothing may be queued after: {err}");
}

fn bad_input_is_refused_with_the_field_named_and_nothing_queued(db: Db) {
    let env = Env::new(db);
    env.import_examples();
    let g = good();
    refused(&env, &g.replace("motivazione: REVOCA\n", ""), "motivazione");
    refused(&env, &g.replace("motivazione: REVOCA", "motivazione: STANCHEZZA"), "motivazione");
    refused(&env, &g.replace("matricola: \"1234567890\"", "matricola: 1234567890"), "matricola");
    refused(&env, &g.replace("matricola: \"1234567890\"", "matricola: \"12345\""), "matricola");
    refused(&env, &g.replace("matricola: \"1234567890\"\n", ""), "matricola");
    refused(&env, &g.replace("task: REVOCA_DELEGA_INTERMEDIARIO", "task: REVOCA_DELEGA_ALTRUI"), "task");
    refused(&env, &g.replace("profilo_richiedente: AZIENDA", "profilo_richiedente: CAF"), "profilo_richiedente");
    refused(&env, &g.replace("richiedente_cf: RSSMRA80A01H501U\n", ""), "richiedente_cf");
    refused(&env, &format!("{g}data_decorrenza: 2026-13-45\n"), "data_decorrenza");
    refused(&env, &format!("{g}data_decorrenza: \"01/02/2026\"\n"), "data_decorrenza");
    refused(&env, &format!("{g}cf_intermediari: {VERDI}\n"), "cf_intermediari");
    refused(&env, &g.replace("consenso_email: true", "consenso_email: \"si\""), "contatti_notifica");
    refused(&env, &g.replace("email: richiedente@example.it", "email: non-una-mail"), "contatti_notifica.email");
    // One bad request in a list: the good one is not queued either.
    let list =
        format!("- {}\n- {}", g.replace('\n', "\n  "), g.replace("motivazione: REVOCA\n", "").replace('\n', "\n  "));
    refused(&env, &list, "motivazione");
}

fn malformed_documents_are_refused(db: Db) {
    let env = Env::new(db);
    env.import_examples();
    for (text, expected) in [
        ("task: [unclosed", "not valid YAML"),
        ("{\"task\": ", "not valid JSON"),
        ("[]", "empty"),
        ("42", "expected a request"),
    ] {
        let p = env.write("bad.yaml", text);
        let out = env.run(&["submit", p.to_str().expect("path")]);
        assert_eq!(out.status.code(), Some(2));
        assert!(stderr(&out).contains(expected), "{}", stderr(&out));
    }
    assert!(env.list().is_empty());
}

fn submit_reads_standard_input_and_json(db: Db) {
    use std::io::Write;
    let env = Env::new(db);
    env.import_examples();
    let json = format!(
        r#"{{"task":"REVOCA_DELEGA_INTERMEDIARIO","richiedente_cf":"{ROSSI}","profilo_richiedente":"AZIENDA",
            "matricola":"1234567890","cf_intermediario":"{VERDI}","motivazione":"REVOCA"}}"#
    );
    let mut child = env
        .command(&["submit", "-", "--json"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    child.stdin.take().expect("stdin").write_all(json.as_bytes()).expect("write");
    let out = child.wait_with_output().expect("wait");
    assert!(out.status.success(), "{}", stderr(&out));
    let stored: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(stored[0]["id"], 1);
}

fn facts_import_errors_name_the_record_and_field_and_change_nothing(db: Db) {
    let env = Env::new(db);
    let base = std::fs::read_to_string(common::repo().join("examples/facts.yaml")).expect("examples");
    for (from, to, expected) in [
        ("matricola: \"2345678901\"", "matricola: \"23456\"", "aziende[1] (matricola 23456): field `matricola`"),
        ("padre: D-1,", "padre: D-99,", "deleghe[2] (id D-3): field `padre`"),
        ("sede: \"5100\"", "sede: \"5200\"", "aziende[2] (matricola 3456789012): field `sede`"),
        (
            "stato: REVOCATA,",
            "stato: SOSPESA,",
            "deleghe[3] (id D-4): field `stato`: line 63 column 100: unknown variant `SOSPESA`",
        ),
        (
            "valore: studio.verdi@pec.it",
            "valore: \"studio\\u0001verdi@pec.it\"",
            "contatti[0] (id C-1): field `valore`: contains the control character U+0001",
        ),
        ("version: 1", "version: 2", "unsupported version 2"),
        ("data_inizio: 2023-03-01", "data_inizio: 2023-02-30", "deleghe[1] (id D-2): field `data_inizio`"),
        ("valore: studio.verdi@pec.it", "valore: studio.verdi", "contatti[0] (id C-1): field `valore`"),
    ] {
        let p = env.write("facts.yaml", &base.replacen(from, to, 1));
        let out = env.run(&["facts", "import", p.to_str().expect("path")]);
        assert_eq!(out.status.code(), Some(2), "{from}: {}", stderr(&out));
        assert!(stderr(&out).contains(expected), "expected `{expected}` in: {}", stderr(&out));
    }
    // A YAML syntax error gives line and column.
    let p = env.write("facts.yaml", &base.replacen("persone:", "persone: [", 1));
    let out = env.run(&["facts", "import", p.to_str().expect("path")]);
    assert!(stderr(&out).contains("line"), "{}", stderr(&out));
    // Nothing of the refused files was imported.
    assert_eq!(env.sql("SELECT COUNT(*) FROM aziende")[0][0], 0);
    env.import_examples();
    assert_eq!(env.sql("SELECT COUNT(*) FROM aziende")[0][0], 6);
}

/// Submits `text` expecting exit 2 with every one of `expected` in the error, and nothing queued.
fn refused_with(env: &Env, text: &str, expected: &[&str]) {
    let p = env.write("bad.json", text);
    let out = env.run(&["submit", p.to_str().expect("path")]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    for e in expected {
        assert!(err.contains(e), "expected `{e}` in: {err}");
    }
    assert!(env.list().is_empty(), "nothing may be queued after: {err}");
}

fn good_json(extra: &str) -> String {
    format!(
        r#"{{"task":"REVOCA_DELEGA_INTERMEDIARIO","richiedente_cf":"{ROSSI}","profilo_richiedente":"AZIENDA",
            "matricola":"1234567890","cf_intermediario":"{VERDI}","motivazione":"REVOCA"{extra}}}"#
    )
}

fn control_characters_are_refused_naming_the_request_and_field(db: Db) {
    let env = Env::new(db);
    env.import_examples();
    refused_with(
        &env,
        &good_json(r#","chiave_idempotenza":"k\u00001""#),
        &["request 1 of 1", "`chiave_idempotenza`", "U+0000"],
    );
    refused_with(&env, &good_json(r#","note":"a\u0000b""#), &["`note`", "U+0000"]);
    refused_with(&env, &good_json(r#","note":"a\u0085b""#), &["`note`", "U+0085"]);
    refused_with(
        &env,
        &good_json(r#","contatti_notifica":{"email":"a\u0007@example.it"}"#),
        &["`contatti_notifica.email`", "U+0007"],
    );
    let list = format!("[{}, {}]", good_json(""), good_json("").replace(VERDI, &format!("{VERDI}\\t")));
    refused_with(&env, &list, &["request 2 of 2", "`cf_intermediario`", "U+0009"]);
    // YAML escapes too.
    let p = env.write("bad.yaml", &good().replace("portal-7f3a9c", "\"portal\\0\""));
    let out = env.run(&["submit", p.to_str().expect("path")]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("`chiave_idempotenza`"), "{}", stderr(&out));
    assert!(env.list().is_empty());
    // Line breaks and tabs are free text in `note`, and stored as they are.
    let stored = env.submit(&good_json(r#","note":"prima riga\r\nseconda\triga""#));
    assert_eq!(stored.len(), 1);
}

fn duplicate_json_keys_are_refused_naming_the_key_and_the_request(db: Db) {
    let env = Env::new(db);
    env.import_examples();
    refused_with(&env, &good_json(r#","motivazione":"ALTRO""#), &["request 1 of 1", "`motivazione`", "twice"]);
    let list = format!(
        "[{}, {}]",
        good_json(""),
        good_json(r#","contatti_notifica":{"email":"a@example.it","email":"b@example.it"}"#)
    );
    refused_with(&env, &list, &["request 2", "`contatti_notifica.email`", "twice"]);
}

/// Rewrites the test configuration's intake section with `limits`.
fn with_limits(env: &Env, limits: &str) {
    let path = env.path("smart-task.yaml");
    let text = std::fs::read_to_string(&path).expect("config");
    let text = text.replace(
        "intake:\n  sede_predefinita: \"7000\"\n",
        &format!("intake:\n  sede_predefinita: \"7000\"\n  limits:\n{limits}"),
    );
    std::fs::write(&path, text).expect("config");
}

fn oversized_submissions_are_refused_naming_the_limit(db: Db) {
    let env = Env::new(db);
    env.import_examples();
    with_limits(
        &env,
        "    max_document_bytes: 4096\n    max_requests: 3\n    max_field_chars: 40\n    max_note_chars: 100\n",
    );
    refused_with(
        &env,
        &good_json(&format!(r#","note":"{}""#, "x".repeat(101))),
        &["`note`", "101 characters", "intake.limits.max_note_chars"],
    );
    refused_with(
        &env,
        &good_json(&format!(r#","chiave_idempotenza":"{}""#, "k".repeat(41))),
        &["`chiave_idempotenza`", "intake.limits.max_field_chars"],
    );
    let four = format!("[{}]", vec![good_json(""); 4].join(","));
    refused_with(&env, &four, &["4 requests", "intake.limits.max_requests"]);
    refused_with(
        &env,
        &good_json(&format!(r#","note":"{}""#, "x".repeat(5000))),
        &["larger than 4096 bytes", "intake.limits.max_document_bytes"],
    );
    // Standard input is not read past the bound: an endless stream is refused.
    let mut child = env
        .command(&["submit", "-"])
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut stdin = child.stdin.take().expect("stdin");
    let writer = std::thread::spawn(move || {
        use std::io::Write;
        let chunk = vec![b' '; 65536];
        // Stops when the reader has gone (broken pipe), after far more than the bound.
        for _ in 0..16_384 {
            if stdin.write_all(&chunk).is_err() {
                return;
            }
        }
    });
    let out = child.wait_with_output().expect("wait");
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("larger than 4096 bytes"), "{}", stderr(&out));
    writer.join().expect("writer");
    // Within the limits: accepted.
    assert_eq!(env.submit(&good_json(r#","note":"breve""#)).len(), 1);
}

fn facts_duplicates_empty_ids_cycles_and_oversized_files_are_refused(db: Db) {
    let env = Env::new(db);
    let base = std::fs::read_to_string(common::repo().join("examples/facts.yaml")).expect("examples");
    let d3 = "  - { id: D-3, matricola: \"1234567890\", delegato_cf: RSSMRA85T10A562S, tipo: SUBDELEGA, padre: D-1, stato: ATTIVA, data_inizio: 2023-05-01 }\n";
    assert!(base.contains(d3));
    let duplicated = base.replacen(d3, &format!("{d3}{}", d3.replace("2023-05-01", "2023-06-01")), 1);
    let cyclic = base.replacen(
        "tipo: INTERMEDIARIO, stato: ATTIVA, data_inizio: 2022-01-10",
        "tipo: SUBDELEGA, padre: D-3, stato: ATTIVA, data_inizio: 2022-01-10",
        1,
    );
    let empty_id = base.replacen("id: C-1,", "id: \"\",", 1);
    for (text, expected) in [
        (duplicated, "deleghe[3] (id D-3): field `id`: duplicates deleghe[2]"),
        (cyclic, "cyclic chain of padre: D-1 -> D-3 -> D-1"),
        (empty_id, "contatti[0] (id ): field `id`: missing"),
    ] {
        let p = env.write("facts.yaml", &text);
        let out = env.run(&["facts", "import", p.to_str().expect("path")]);
        assert_eq!(out.status.code(), Some(2), "{expected}: {}", stderr(&out));
        assert!(stderr(&out).contains(expected), "expected `{expected}` in: {}", stderr(&out));
    }
    // A file larger than its bound is refused naming the limit, before it is read whole.
    with_limits(&env, "    max_facts_bytes: 1000\n");
    let p = env.write("facts.yaml", &base);
    let out = env.run(&["facts", "import", p.to_str().expect("path")]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("intake.limits.max_facts_bytes"), "{}", stderr(&out));
}

backends!(
    resubmission_with_the_same_key_returns_the_first_request,
    protocol_numbers_are_per_sede_and_year,
    bad_input_is_refused_with_the_field_named_and_nothing_queued,
    malformed_documents_are_refused,
    submit_reads_standard_input_and_json,
    facts_import_errors_name_the_record_and_field_and_change_nothing,
    control_characters_are_refused_naming_the_request_and_field,
    duplicate_json_keys_are_refused_naming_the_key_and_the_request,
    oversized_submissions_are_refused_naming_the_limit,
    facts_duplicates_empty_ids_cycles_and_oversized_files_are_refused,
);
