//! The operator's path and the requester's withdrawal, through the binary on a real SQLite file.

mod common;

use common::{Db, Env, codes, rdi, stderr};
use serde_json::Value;

const VERDI: &str = "VRDGPP80A41H501Y";
const RICCI: &str = "RCCFNC79B12H501Q"; // legal representative of 6789012345, where Verdi holds D-8

/// A request of Ricci Edilizia that the rule refers to an operator (motivazione ALTRO); returns its protocol.
fn referred(env: &Env) -> String {
    let stored = env.submit(&rdi(RICCI, "AZIENDA", "6789012345", VERDI, "").replace("REVOCA\n", "ALTRO\n"));
    env.decide_all();
    let p = stored[0]["protocollo"].as_str().expect("protocollo").to_string();
    assert_eq!(env.show(&p)["sospesa"], "rinvio");
    p
}

fn kinds(view: &Value) -> Vec<String> {
    view["eventi"].as_array().expect("eventi").iter().filter_map(|e| e["tipo"].as_str().map(str::to_string)).collect()
}

fn an_operator_accepts_a_referral_and_the_rules_proposed_effects_apply(db: Db) {
    let env = Env::new(db);
    env.import_examples();
    let p = referred(&env);
    let queue: Vec<Value> =
        serde_json::from_str(&env.ok(&["operator", "list", "--sede", "7000", "--json"])).expect("json");
    assert_eq!(queue.len(), 1);
    assert_eq!(queue[0]["protocollo"], p.as_str());
    assert_eq!(queue[0]["motivazioni"][0]["codice"], "GEN-05");
    assert!(env.ok(&["operator", "list", "--sede", "1300"]).contains("no request"));

    env.ok(&["operator", "close", &p, "--esito", "accolta", "--nota", "Diffida verificata", "--operatore", "mbianchi"]);
    let view = env.show(&p);
    assert_eq!(view["stato"], "chiusa");
    assert_eq!(view["esito"], "accolta");
    assert_eq!(view["sospesa"], Value::Null);
    assert_eq!(view["effetti"][0]["delegation_id"], "D-8");
    assert!(view["versione_regola"].as_str().is_some_and(|v| v.starts_with("operatore (")));
    let closing = view["eventi"].as_array().and_then(|e| e.last()).cloned().expect("event");
    assert_eq!(closing["tipo"], "chiusura");
    assert_eq!(closing["attore"], "operatore:mbianchi");
    assert_eq!(closing["dettaglio"]["nota"], "Diffida verificata");
    assert_eq!(env.sql("SELECT stato FROM deleghe WHERE id = 'D-8'")[0][0], "REVOCATA");
    // The requester and the counterparty (the consultant, at her PEC) are told.
    let mail = env.sql("SELECT recipient, role FROM outbox WHERE event = 'chiusura' ORDER BY id");
    assert_eq!(mail.len(), 2, "{mail:?}");
    assert_eq!(mail[1], [Value::from("studio.verdi@pec.it"), Value::from("intermediario")]);
    // Closed once: a second close is refused.
    let out = env.run(&["operator", "close", &p, "--esito", "accolta"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("already closed"), "{}", stderr(&out));
}

fn an_operator_rejects_with_catalogue_and_free_text_reasons(db: Db) {
    let env = Env::new(db);
    env.import_examples();
    let p = referred(&env);
    let out = env.run(&["operator", "close", &p, "--esito", "non_accolta", "--motivo", "RDI-99"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("RDI-99") && stderr(&out).contains("RDI-01"), "{}", stderr(&out));
    let out = env.run(&["operator", "close", &p, "--esito", "non_accolta", "--motivo", "GEN-04"]);
    assert!(stderr(&out).contains("--motivo-libero"), "a message needing values: {}", stderr(&out));
    let out = env.run(&["operator", "close", &p, "--esito", "non_accolta"]);
    assert!(stderr(&out).contains("at least one reason"), "{}", stderr(&out));
    // The refused attempts left the request waiting, unleased.
    assert_eq!(env.show(&p)["sospesa"], "rinvio");
    env.ok(&[
        "operator",
        "close",
        &p,
        "--esito",
        "non_accolta",
        "--motivo",
        "RDI-03",
        "--motivo-libero",
        "Diffida non firmata.",
    ]);
    let view = env.show(&p);
    assert_eq!(view["esito"], "non_accolta");
    assert_eq!(codes(&view), ["RDI-03", "OPERATORE"]);
    assert_eq!(view["motivazioni"][1]["messaggio"], "Diffida non firmata.");
    assert_eq!(env.sql("SELECT stato FROM deleghe WHERE id = 'D-8'")[0][0], "ATTIVA", "no effect on a rejection");
}

fn changed_facts_under_a_referral_are_refused_until_requeued(db: Db) {
    let env = Env::new(db);
    env.import_examples();
    let p = referred(&env);
    // The delega is revoked by an import after the rule referred the request.
    let facts = env.write(
        "change.yaml",
        "version: 1\ndeleghe:\n  - { id: D-8, matricola: \"6789012345\", delegato_cf: VRDGPP80A41H501Y, tipo: INTERMEDIARIO, stato: REVOCATA, data_inizio: 2023-11-20, data_revoca: 2026-01-01 }\n",
    );
    env.ok(&["facts", "import", facts.to_str().expect("path")]);
    let out = env.run(&["operator", "close", &p, "--esito", "accolta"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("operator requeue"), "{}", stderr(&out));
    // The refusal names the fact that moved: the deleghe of the matricola, as the rule read them.
    assert!(stderr(&out).contains("[dm:6789012345]: versione"), "{}", stderr(&out));
    env.ok(&["operator", "requeue", &p]);
    env.decide_all();
    let view = env.show(&p);
    assert_eq!(view["esito"], "non_accolta", "decided again with the current facts: {view:#}");
    assert_eq!(codes(&view), ["RDI-04"]);
    assert!(kinds(&view).contains(&"rimessa_in_coda".to_string()));
}

fn comments_are_in_the_history_and_notified(db: Db) {
    let env = Env::new(db);
    env.import_examples();
    let p = referred(&env);
    env.ok(&["operator", "comment", &p, "Allegare la diffida firmata, grazie.", "--operatore", "mbianchi"]);
    let view = env.show(&p);
    let comment = view["eventi"].as_array().and_then(|e| e.last()).cloned().expect("event");
    assert_eq!(comment["tipo"], "commento_operatore");
    assert_eq!(comment["dettaglio"]["testo"], "Allegare la diffida firmata, grazie.");
    assert_eq!(env.sql("SELECT COUNT(*) FROM outbox WHERE event = 'commento_operatore'")[0][0], 1);
    assert_eq!(env.run(&["operator", "comment", "7000.2026.9999999", "x"]).status.code(), Some(3));
}

fn a_requester_withdraws_an_open_request(db: Db) {
    let env = Env::new(db);
    env.import_examples();
    let stored = env.submit(&rdi("RSSMRA80A01H501U", "AZIENDA", "1234567890", VERDI, ""));
    let p = stored[0]["protocollo"].as_str().expect("protocollo");
    let out = env.run(&["annulla", p, "--richiedente", VERDI]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("only the requester"), "{}", stderr(&out));
    // The requester's omocodic code is the same person.
    env.ok(&["annulla", p, "--richiedente", "RSSMRA80A01HRLMS"]);
    let view = env.show(p);
    assert_eq!(view["stato"], "chiusa");
    assert_eq!(view["esito"], "annullata");
    assert_eq!(kinds(&view), ["protocollazione", "annullamento"]);
    assert_eq!(env.sql("SELECT COUNT(*) FROM outbox WHERE event = 'annullamento'")[0][0], 1);
    // Nothing left to decide, and the withdrawn request does not block a new one (GEN-04).
    env.decide_all();
    assert_eq!(env.show(p)["esito"], "annullata");
    let again = env.submit(&rdi("RSSMRA80A01H501U", "AZIENDA", "1234567890", VERDI, ""));
    env.decide_all();
    assert_eq!(env.show(again[0]["protocollo"].as_str().expect("p"))["esito"], "accolta");
    let out = env.run(&["annulla", p, "--richiedente", "RSSMRA80A01H501U"]);
    assert!(stderr(&out).contains("already closed"), "{}", stderr(&out));
}

fn the_fascicolo_lists_every_closed_request_of_a_subject(db: Db) {
    let env = Env::new(db);
    env.import_examples();
    env.submit(&rdi("RSSMRA80A01H501U", "AZIENDA", "1234567890", "GLLSFN88H10L219C", ""));
    env.submit(&rdi("RSSMRA80A01H501U", "AZIENDA", "1234567890", VERDI, ""));
    env.decide_all();
    let by_matricola: Vec<Value> = serde_json::from_str(&env.ok(&["fascicolo", "1234567890", "--json"])).expect("json");
    assert_eq!(by_matricola.len(), 2);
    assert_eq!(by_matricola[0]["esito"], "non_accolta");
    assert_eq!(by_matricola[0]["motivazioni"][0]["codice"], "RDI-01");
    assert!(by_matricola[0]["data_esito"].as_str().is_some());
    assert_eq!(by_matricola[1]["esito"], "accolta");
    let by_cf: Vec<Value> = serde_json::from_str(&env.ok(&["fascicolo", "vrdgpp80a41h501y", "--json"])).expect("json");
    assert_eq!(by_cf.len(), 1, "the consultant's file holds the revocation of her delega");
    let text = env.ok(&["fascicolo", "1234567890"]);
    assert!(text.contains("RDI-01: Non risulta attiva alcuna delega"), "{text}");
}

backends!(
    an_operator_accepts_a_referral_and_the_rules_proposed_effects_apply,
    an_operator_rejects_with_catalogue_and_free_text_reasons,
    changed_facts_under_a_referral_are_refused_until_requeued,
    comments_are_in_the_history_and_notified,
    a_requester_withdraws_an_open_request,
    the_fascicolo_lists_every_closed_request_of_a_subject,
);
