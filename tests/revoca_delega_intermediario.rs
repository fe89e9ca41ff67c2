//! REVOCA_DELEGA_INTERMEDIARIO end to end on a real SQLite file: acceptance with its effects, and every
//! reason code of domain.md §5.1–5.2 reached through the binary.

mod common;

use common::{Db, Env, codes, rdi};
use serde_json::Value;

const VERDI: &str = "VRDGPP80A41H501Y"; // consultant, delega D-1 on 1234567890, D-6 on 4567890123, D-8 on 6789012345
const ROSSI: &str = "RSSMRA80A01H501U"; // legal representative of 1234567890
const SUBDELEGATO: &str = "RSSMRA85T10A562S"; // sub-delegate of Verdi on 1234567890 (D-3)
const DIPENDENTE: &str = "BNCLRA90E50F205S"; // delegated employee of 1234567890 (D-2)
const GALLI: &str = "GLLSFN88H10L219C"; // consultant with D-7 on 5678901234 only

/// Submits one request, decides everything, returns it as read back.
fn decide(env: &Env, text: &str) -> Value {
    let stored = env.submit(text);
    env.decide_all();
    env.show(stored[0]["protocollo"].as_str().expect("protocollo"))
}

fn rejected_with(view: &Value, expected: &[&str]) {
    assert_eq!(view["stato"], "chiusa", "{view:#}");
    assert_eq!(view["esito"], "non_accolta", "{view:#}");
    assert_eq!(codes(view), expected, "{view:#}");
    for m in view["motivazioni"].as_array().expect("motivazioni") {
        assert!(m["messaggio"].as_str().is_some_and(|s| s.len() > 20), "message rendered: {m}");
    }
}

fn intermediary_renouncing_is_accepted_and_cascades_to_the_sub_delega(db: Db) {
    let env = Env::new(db);
    env.import_examples();
    let view = decide(&env, &rdi(VERDI, "INTERMEDIARIO", "1234567890", VERDI, ""));
    assert_eq!(view["stato"], "chiusa");
    assert_eq!(view["esito"], "accolta", "{view:#}");
    assert_eq!(view["motivazioni"], Value::Array(vec![]));
    assert_eq!(view["effetti"][0]["tipo"], "revoke_delegation");
    assert_eq!(view["effetti"][0]["delegation_id"], "D-1");
    assert!(view["versione_regola"].as_str().is_some_and(|v| v.len() == 16));
    let kinds: Vec<&str> =
        view["eventi"].as_array().expect("eventi").iter().filter_map(|e| e["tipo"].as_str()).collect();
    // The esito PDF, rendered after the close, is recorded last with its SHA-256.
    assert_eq!(kinds, ["protocollazione", "smistamento", "chiusura", "esito_documento"]);

    // D-1 and its sub-delega D-3 revoked by this request; the employee's delega D-2 untouched.
    let rows = env.sql("SELECT id, stato, revocata_da FROM deleghe WHERE matricola = '1234567890' ORDER BY id");
    let id = view["id"].as_i64().expect("id");
    assert_eq!(rows[0], [Value::from("D-1"), Value::from("REVOCATA"), Value::from(id)]);
    assert_eq!(rows[1], [Value::from("D-2"), Value::from("ATTIVA"), Value::Null]);
    assert_eq!(rows[2], [Value::from("D-3"), Value::from("REVOCATA"), Value::from(id)]);

    // One e-mail notification per event to the requester (consent given for e-mail only), and the closing
    // also to the company at its Registro Imprese PEC: written with the events.
    let outbox = env.sql("SELECT event, channel, recipient, role FROM outbox ORDER BY id");
    assert_eq!(outbox.len(), 4, "{outbox:?}");
    let to_requester: Vec<_> =
        outbox.iter().filter(|r| r[2] == "richiedente@example.it" && r[3] == "richiedente").collect();
    assert_eq!(to_requester.len(), 3);
    assert_eq!(outbox[3], ["chiusura", "email", "rossicostruzioni@pec.it", "azienda"].map(Value::from));
    // Her contact bound to this position (C-2) leaves its notification lists; her general PEC (C-1) stays.
    let contacts = env
        .sql("SELECT id, stato, CASE WHEN valid_to IS NULL THEN 0 ELSE 1 END FROM contatti WHERE titolare_cf = 'VRDGPP80A41H501Y' ORDER BY id");
    assert_eq!(contacts[0], [Value::from("C-1"), Value::from("VALIDO"), Value::from(0)]);
    assert_eq!(contacts[1], [Value::from("C-2"), Value::from("DISABILITATO"), Value::from(1)]);

    // The decision records its checks and the facts it read, with their versions.
    let trace = env.sql("SELECT trace FROM decisions");
    let trace: Value = serde_json::from_str(trace[0][0].as_str().expect("trace")).expect("trace json");
    let checks: Vec<&str> =
        trace["checks"].as_array().expect("checks").iter().filter_map(|c| c["codice"].as_str()).collect();
    assert_eq!(checks, ["GEN-02", "GEN-03", "GEN-04", "GEN-01", "RDI-01", "RDI-04", "RDI-02", "RDI-05"]);
    assert!(trace["facts"].as_array().expect("facts").iter().any(|f| f["call"] == "delegations(1234567890)"));
}

fn sub_delegate_and_company_may_revoke(db: Db) {
    let env = Env::new(db);
    env.import_examples();
    let view = decide(&env, &rdi(SUBDELEGATO, "INTERMEDIARIO", "1234567890", VERDI, "data_decorrenza: 2099-12-31\n"));
    assert_eq!(view["esito"], "accolta", "{view:#}");
    assert_eq!(view["effetti"][0]["from"], "2099-12-31");
    let view = decide(&env, &rdi("FRRLCU75D05H501G", "AZIENDA", "4567890123", VERDI, ""));
    assert_eq!(view["esito"], "accolta", "{view:#}");
    // A delegated employee acts for the company too (RDI-03).
    let env = Env::new(db);
    env.import_examples();
    let view = decide(&env, &rdi(DIPENDENTE, "DIPENDENTE", "1234567890", VERDI, ""));
    assert_eq!(view["esito"], "accolta", "{view:#}");
}

fn gen_01_requester_not_authorised_on_the_position(db: Db) {
    let env = Env::new(db);
    env.import_examples();
    rejected_with(&decide(&env, &rdi(GALLI, "AZIENDA", "1234567890", VERDI, "")), &["GEN-01"]);
}

fn gen_02_malformed_codice_fiscale(db: Db) {
    let env = Env::new(db);
    env.import_examples();
    rejected_with(&decide(&env, &rdi(ROSSI, "AZIENDA", "1234567890", "VRDGPP80A41H501X", "")), &["GEN-02"]);
    rejected_with(&decide(&env, &rdi(ROSSI, "AZIENDA", "1234567890", "12345670018", "")), &["GEN-02"]);
}

fn gen_03_unknown_matricola_goes_to_the_default_sede(db: Db) {
    let env = Env::new(db);
    env.import_examples();
    let view = decide(&env, &rdi(ROSSI, "AZIENDA", "9999999999", VERDI, ""));
    rejected_with(&view, &["GEN-03"]);
    assert_eq!(view["sede"], "7000");
}

fn gen_04_and_gen_05_an_open_referred_request_blocks_a_second_one(db: Db) {
    let env = Env::new(db);
    env.import_examples();
    let first =
        decide(&env, &rdi("RCCFNC79B12H501Q", "AZIENDA", "6789012345", VERDI, "").replace("REVOCA\n", "ALTRO\n"));
    assert_eq!(first["stato"], "in_carico", "{first:#}");
    assert_eq!(first["esito"], Value::Null);
    assert_eq!(first["sospesa"], "rinvio");
    assert_eq!(first["assegnata_sede"], "7000");
    assert_eq!(codes(&first), ["GEN-05"]);
    let second = decide(&env, &rdi("RCCFNC79B12H501Q", "AZIENDA", "6789012345", VERDI, ""));
    rejected_with(&second, &["GEN-04"]);
    let message = second["motivazioni"][0]["messaggio"].as_str().expect("message");
    assert!(message.contains(first["protocollo"].as_str().expect("protocollo")), "{message}");
    // The delega is untouched: the referred request has not been closed.
    assert_eq!(env.sql("SELECT stato FROM deleghe WHERE id = 'D-8'")[0][0], "ATTIVA");
}

fn rdi_01_no_delega_to_that_intermediary(db: Db) {
    let env = Env::new(db);
    env.import_examples();
    rejected_with(&decide(&env, &rdi("FRRLCU75D05H501G", "AZIENDA", "4567890123", GALLI, "")), &["RDI-01"]);
}

fn rdi_02_requester_is_not_the_intermediary_nor_a_sub_delegate(db: Db) {
    let env = Env::new(db);
    env.import_examples();
    // The employee is authorised on the position (GEN-01) but does not hold the intermediary's delega.
    rejected_with(&decide(&env, &rdi(DIPENDENTE, "INTERMEDIARIO", "1234567890", VERDI, "")), &["RDI-02"]);
}

fn rdi_03_company_request_from_someone_who_is_not_its_representative(db: Db) {
    let env = Env::new(db);
    env.import_examples();
    // Verdi is authorised (she holds D-1) but is not the company's legal representative.
    rejected_with(&decide(&env, &rdi(VERDI, "AZIENDA", "1234567890", VERDI, "")), &["RDI-03"]);
}

fn rdi_04_delega_already_revoked(db: Db) {
    let env = Env::new(db);
    env.import_examples();
    rejected_with(&decide(&env, &rdi("BNCGPP72C15F205Z", "AZIENDA", "2345678901", VERDI, "")), &["RDI-04"]);
}

fn rdi_05_retroactive_revocation_and_every_reason_at_once(db: Db) {
    let env = Env::new(db);
    env.import_examples();
    rejected_with(
        &decide(&env, &rdi(ROSSI, "AZIENDA", "1234567890", VERDI, "data_decorrenza: 2020-01-01\n")),
        &["RDI-05"],
    );
    rejected_with(
        &decide(&env, &rdi("CLMNNA82R55F205H", "INTERMEDIARIO", "5678901234", GALLI, "data_decorrenza: 2024-01-01\n")),
        &["RDI-02", "RDI-05"],
    );
}

fn omocodic_codes_are_the_same_person(db: Db) {
    let env = Env::new(db);
    env.import_examples();
    // RSSMRA80A01HRLMS is Mario Rossi's code after omocodia: he is still the legal representative.
    let view = decide(&env, &rdi("RSSMRA80A01HRLMS", "AZIENDA", "1234567890", VERDI, ""));
    assert_eq!(view["esito"], "accolta", "{view:#}");
}

fn two_identical_requests_in_one_batch_never_both_succeed(db: Db) {
    let env = Env::new(db);
    env.import_examples();
    let text = rdi(VERDI, "INTERMEDIARIO", "1234567890", VERDI, "");
    let list = format!("- {}\n- {}", text.replace('\n', "\n  "), text.replace('\n', "\n  "));
    let stored = env.submit(&list);
    assert_eq!(stored.len(), 2);
    env.decide_all();
    let a = env.show(stored[0]["protocollo"].as_str().expect("protocollo"));
    let b = env.show(stored[1]["protocollo"].as_str().expect("protocollo"));
    assert_eq!(a["esito"], "accolta", "{a:#}");
    assert_eq!(b["esito"], "non_accolta", "{b:#}");
    assert_eq!(env.sql("SELECT COUNT(*) FROM deleghe WHERE revocata_da IS NOT NULL")[0][0], 2); // D-1 and D-3, once
}

backends!(
    intermediary_renouncing_is_accepted_and_cascades_to_the_sub_delega,
    sub_delegate_and_company_may_revoke,
    gen_01_requester_not_authorised_on_the_position,
    gen_02_malformed_codice_fiscale,
    gen_03_unknown_matricola_goes_to_the_default_sede,
    gen_04_and_gen_05_an_open_referred_request_blocks_a_second_one,
    rdi_01_no_delega_to_that_intermediary,
    rdi_02_requester_is_not_the_intermediary_nor_a_sub_delegate,
    rdi_03_company_request_from_someone_who_is_not_its_representative,
    rdi_04_delega_already_revoked,
    rdi_05_retroactive_revocation_and_every_reason_at_once,
    omocodic_codes_are_the_same_person,
    two_identical_requests_in_one_batch_never_both_succeed,
);
