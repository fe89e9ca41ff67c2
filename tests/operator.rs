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

/// Revokes D-8 by an import: the referral of [`referred`] is stale, and its rule now rejects it (RDI-04).
fn revoke_d8(env: &Env) {
    let facts = env.write(
        "revoke.yaml",
        "version: 1\ndeleghe:\n  - { id: D-8, matricola: \"6789012345\", delegato_cf: VRDGPP80A41H501Y, tipo: INTERMEDIARIO, stato: REVOCATA, data_inizio: 2023-11-20, data_revoca: 2026-01-01 }\n",
    );
    env.ok(&["facts", "import", facts.to_str().expect("path")]);
}

/// Adds a delega to an employee of Ricci Edilizia: the deleghe of the matricola move (the referral is stale),
/// but the rule still refers the request.
fn add_employee_delega(env: &Env) {
    let facts = env.write(
        "add.yaml",
        "version: 1\ndeleghe:\n  - { id: D-11, matricola: \"6789012345\", delegato_cf: MRNPLA91A41H501R, tipo: DIPENDENTE, stato: ATTIVA, data_inizio: 2024-01-01 }\n",
    );
    env.ok(&["facts", "import", facts.to_str().expect("path")]);
}

/// `operator list --json`, by protocol number.
fn queue(env: &Env) -> std::collections::HashMap<String, Value> {
    let queue: Vec<Value> = serde_json::from_str(&env.ok(&["operator", "list", "--json"])).expect("json");
    queue.into_iter().map(|q| (q["protocollo"].as_str().expect("protocollo").to_string(), q)).collect()
}

fn stale_referrals_are_flagged_in_the_operator_list(db: Db) {
    let env = Env::new(db);
    env.import_examples();
    let stale = referred(&env);
    // A referral of another company (Rossi Costruzioni, delega D-1), whose facts do not move.
    let other = env.submit(&rdi("RSSMRA80A01H501U", "AZIENDA", "1234567890", VERDI, "").replace("REVOCA\n", "ALTRO\n"));
    env.decide_all();
    let fresh = other[0]["protocollo"].as_str().expect("protocollo").to_string();
    assert_eq!(env.show(&fresh)["sospesa"], "rinvio");
    let before = queue(&env);
    assert_eq!(before[&stale]["fatti_cambiati"], serde_json::json!([]), "nothing moved yet");
    revoke_d8(&env);
    let after = queue(&env);
    let changed = after[&stale]["fatti_cambiati"].as_array().expect("fatti_cambiati").clone();
    let deleghe = changed.iter().find(|c| c["soggetto"] == "dm:6789012345").expect("the deleghe of the matricola");
    assert!(deleghe["chiamata"].as_str().is_some_and(|c| c.starts_with("delegation")), "{deleghe}");
    let (then, now) = (deleghe["versione_al_rinvio"].as_i64(), deleghe["versione_attuale"].as_i64());
    assert!(then.zip(now).is_some_and(|(a, b)| b > a), "{deleghe}");
    assert_eq!(after[&fresh]["fatti_cambiati"], serde_json::json!([]), "{:#}", after[&fresh]);
    let text = env.ok(&["operator", "list"]);
    let line = |p: &str| text.lines().find(|l| l.starts_with(p)).unwrap_or_default().to_string();
    assert!(line(&stale).contains("fatti cambiati dal rinvio: ctx.delegation"), "{text}");
    assert!(line(&stale).contains("[dm:6789012345]: versione"), "{text}");
    assert!(!line(&fresh).is_empty() && !line(&fresh).contains("fatti cambiati"), "{text}");
}

fn redecide_closes_a_stale_referral_the_rule_now_decides(db: Db) {
    let env = Env::new(db);
    env.import_examples();
    let p = referred(&env);
    revoke_d8(&env);
    // The refusal of the stale acceptance points to redecide, and to requeue.
    let out = env.run(&["operator", "close", &p, "--esito", "accolta"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains(&format!("operator redecide {p}")), "{}", stderr(&out));
    assert!(stderr(&out).contains("operator requeue"), "{}", stderr(&out));
    let printed = env.ok(&["operator", "redecide", &p, "--operatore", "mbianchi"]);
    assert!(printed.contains(&format!("{p}: chiusa dalla regola, esito non_accolta")), "{printed}");
    assert!(printed.contains("RDI-04"), "{printed}");
    let view = env.show(&p);
    assert_eq!(view["stato"], "chiusa");
    assert_eq!(view["esito"], "non_accolta");
    assert_eq!(view["sospesa"], Value::Null);
    assert_eq!(codes(&view), ["RDI-04"]);
    let closing = view["eventi"].as_array().and_then(|e| e.last()).cloned().expect("event");
    assert_eq!(closing["tipo"], "chiusura");
    assert_eq!(closing["attore"], "operatore:mbianchi", "the history says an operator asked for it");
    // Decided by the rule (its version), not by the operator.
    assert!(view["versione_regola"].as_str().is_some_and(|v| !v.starts_with("operatore")), "{view:#}");
    let notified = env.sql("SELECT COUNT(*) FROM outbox WHERE event = 'chiusura'")[0][0].clone();
    assert!(notified.as_i64().is_some_and(|n| n > 0), "the requester is told");
    // Once: a second redecide is refused and writes nothing.
    let out = env.run(&["operator", "redecide", &p]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("already closed"), "{}", stderr(&out));
    assert_eq!(kinds(&env.show(&p)).iter().filter(|k| *k == "chiusura").count(), 1);
    assert_eq!(env.sql("SELECT COUNT(*) FROM outbox WHERE event = 'chiusura'")[0][0], notified);
    assert_eq!(
        env.sql(
            "SELECT COUNT(*) FROM decisions d JOIN requests r ON r.id = d.request_id WHERE r.protocollo = '{p}'"
                .replace("{p}", &p)
                .as_str()
        )[0][0],
        2
    );
    // The closed request is no longer the operator's, and nothing is left leased.
    assert!(!queue(&env).contains_key(&p));
    assert_eq!(env.sql("SELECT COUNT(*) FROM requests WHERE lease_token IS NOT NULL")[0][0], 0);
}

fn redecide_refreshes_a_stale_referral_the_rule_refers_again(db: Db) {
    let env = Env::new(db);
    env.import_examples();
    let p = referred(&env);
    add_employee_delega(&env);
    assert_ne!(queue(&env)[&p]["fatti_cambiati"], serde_json::json!([]), "stale");
    let out = env.run(&["operator", "close", &p, "--esito", "accolta"]);
    assert_eq!(out.status.code(), Some(2), "a stale acceptance is refused");
    let printed = env.ok(&["operator", "redecide", &p, "--operatore", "mbianchi"]);
    assert!(printed.contains(&format!("{p}: rinviata di nuovo")), "{printed}");
    assert!(printed.contains("GEN-05"), "{printed}");
    let view = env.show(&p);
    assert_eq!(view["sospesa"], "rinvio");
    let referral = view["eventi"].as_array().and_then(|e| e.last()).cloned().expect("event");
    assert_eq!(referral["tipo"], "rinvio_operatore");
    assert_eq!(referral["attore"], "operatore:mbianchi");
    assert_eq!(queue(&env)[&p]["fatti_cambiati"], serde_json::json!([]), "no longer stale");
    assert!(!env.ok(&["operator", "list"]).contains("fatti cambiati"));
    env.ok(&["operator", "close", &p, "--esito", "accolta", "--operatore", "mbianchi"]);
    let view = env.show(&p);
    assert_eq!(view["esito"], "accolta");
    assert_eq!(env.sql("SELECT stato FROM deleghe WHERE id = 'D-8'")[0][0], "REVOCATA", "the proposed effect applied");
    assert_eq!(env.sql("SELECT stato FROM deleghe WHERE id = 'D-11'")[0][0], "ATTIVA");
}

fn redecide_refuses_a_request_not_waiting_for_an_operator(db: Db) {
    let env = Env::new(db);
    env.import_examples();
    // Queued for the rules, not yet decided.
    let queued = env.submit(&rdi("RSSMRA80A01H501U", "AZIENDA", "1234567890", VERDI, ""));
    let queued = queued[0]["protocollo"].as_str().expect("protocollo").to_string();
    let out = env.run(&["operator", "redecide", &queued]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("not waiting for an operator"), "{}", stderr(&out));
    assert_eq!(env.show(&queued)["stato"], "aperta", "left to the rules: {:#}", env.show(&queued));
    env.decide_all();
    assert_eq!(env.show(&queued)["esito"], "accolta");
    let out = env.run(&["operator", "redecide", &queued]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("already closed (esito: accolta)"), "{}", stderr(&out));
    assert_eq!(env.run(&["operator", "redecide", "7000.2026.9999999"]).status.code(), Some(3));
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
    stale_referrals_are_flagged_in_the_operator_list,
    redecide_closes_a_stale_referral_the_rule_now_decides,
    redecide_refreshes_a_stale_referral_the_rule_refers_again,
    redecide_refuses_a_request_not_waiting_for_an_operator,
    comments_are_in_the_history_and_notified,
    a_requester_withdraws_an_open_request,
    the_fascicolo_lists_every_closed_request_of_a_subject,
);
