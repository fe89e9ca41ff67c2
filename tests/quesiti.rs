//! Quesiti to the sede (Comunicazione Bidirezionale) over real HTTP, on both backends: a quesito goes to the
//! sede of its position, or to its requester's when it names none; the requester replies on the open quesito;
//! the operator of that sede answers it (the answer required), which closes it; every step is notified, and the
//! answer arrives as the sede's answer in the e-mail (a real Maildir, read back with Python's MIME parser).

mod common;

use std::process::Command;

use common::api::{BASE, bearer, daemon, etag_of, json_of, problem, token};
use common::daemon::{http, stop, wait_for};
use common::{Db, Env, repo};
use serde_json::{Value, json};

backends!(a_quesito_is_routed_to_its_sede_replied_to_answered_and_notified);

#[test]
fn only_a_quesito_may_be_answered_by_its_rule() {
    let env = Env::without_db();
    let dir = env.path("rules");
    std::fs::create_dir_all(dir.join("prova")).expect("mkdir");
    let task = "id: PROVA\nlabel: Prova\nschema: { type: object, properties: { valore: { type: integer } } }\n\
                reasons:\n  P-01: \"Risposta standard.\"\n";
    std::fs::write(dir.join("prova/task.yaml"), task).expect("task.yaml");
    std::fs::write(dir.join("prova/rule.rhai"), "fn decide(req, ctx) { answer(\"P-01\"); }\n").expect("rule");
    let case = "cases:\n  - name: risposta\n    request: { richiedente_cf: RSSMRA80A01H501U, profilo_richiedente: AZIENDA, valore: 1 }\n\
                \x20   expect: { esito: accolta, risposta: P-01 }\n";
    std::fs::write(dir.join("prova/cases.yaml"), case).expect("cases");
    let out = env.run(&["rules", "test", dir.to_str().expect("utf-8")]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(text.contains("this task is not one (task.yaml `tipo: quesito`)"), "{text}");
    // As a quesito it answers.
    let quesito = task.replace("schema:", "tipo: quesito\nambiti: { GENERICO: \"Richiesta generica\" }\nschema:");
    std::fs::write(dir.join("prova/task.yaml"), quesito).expect("task.yaml");
    let case = case.replace("valore: 1 }", "valore: 1, ambito: GENERICO }");
    std::fs::write(dir.join("prova/cases.yaml"), case).expect("cases");
    let out = env.run(&["rules", "test", dir.to_str().expect("utf-8")]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
}

const ROSSI: &str = "RSSMRA80A01H501U"; // legal representative of 1234567890 (sede 7000)
const ASSOCIAZIONE: &str = "11111110125"; // an employers' association of sede 5100 (examples/facts.yaml)

fn headers(claims: Value) -> String {
    format!("{}Content-Type: application/json\r\n", bearer(&token("portale.key.pem", claims)))
}

/// An example request of examples/requests as a JSON body.
fn example(name: &str) -> String {
    let text = std::fs::read_to_string(repo().join("examples/requests").join(name)).expect("example");
    serde_saphyr::from_str::<Value>(&text).expect("yaml").to_string()
}

/// The Maildir's messages, decoded by tests/support/smtp_sink.py.
fn mails(dir: &std::path::Path) -> Vec<Value> {
    if !dir.join("new").exists() {
        return Vec::new();
    }
    let out = Command::new(common::python::smtp_python())
        .arg(repo().join("tests/support/smtp_sink.py"))
        .args(["decode", "--maildir"])
        .arg(dir)
        .output()
        .expect("decode the Maildir");
    assert!(out.status.success(), "decode failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("decoded messages")
}

fn a_quesito_is_routed_to_its_sede_replied_to_answered_and_notified(db: Db) {
    let env = Env::new(db);
    let config = std::fs::read_to_string(&env.config).expect("config");
    std::fs::write(
        &env.config,
        format!(
            "{config}notify:\n  templates_dir: {}\n  email:\n    url: maildir:mail\n    from: \"INPS <noreply@inps.test>\"\n\
             \x20 dispatcher:\n    poll_interval_ms: 20\n",
            repo().join("config/templates").display()
        ),
    )
    .expect("config");
    let (child, port) = daemon(&env);
    let rossi = headers(json!({"cf": ROSSI, "profilo": "AZIENDA"}));
    let associazione = headers(json!({"cf": ASSOCIAZIONE, "profilo": "INTERMEDIARIO"}));
    let submit = |who: &str, body: &str| {
        let (status, _, out) = http(port, "POST", &format!("{BASE}/richieste"), who, body);
        assert_eq!(status, 201, "{out}");
        json_of(&out)["items"][0]["id"].as_str().expect("id").to_string()
    };
    let read = |who: &str, id: &str| {
        let (status, head, out) = http(port, "GET", &format!("{BASE}/richieste/{id}"), who, "");
        assert_eq!(status, 200, "{out}");
        (json_of(&out), etag_of(&head))
    };

    // An ambito that is not one of the task's is refused at intake, naming the field.
    let wrong = example("que-01-rinvio-regolarita-contributiva.yaml").replace("REGOLARITA_CONTRIBUTIVA", "PENSIONI");
    let (status, head, out) = http(port, "POST", &format!("{BASE}/richieste"), &rossi, &wrong);
    assert_eq!(status, 422, "{out}");
    assert_eq!(problem(&head, &out)["errors"][0]["pointer"], "/ambito", "{out}");

    // The quesito on a position goes to the position's sede, the association's (no position) to its own.
    let on_position = submit(&rossi, &example("que-01-rinvio-regolarita-contributiva.yaml"));
    let no_position = submit(&associazione, &example("que-02-rinvio-associazione-senza-posizione.yaml"));
    for (who, id) in [(&rossi, &on_position), (&associazione, &no_position)] {
        wait_for("the referral", 30, || read(who, id).0["sospesa"] == "rinvio");
    }
    let (view, _) = read(&rossi, &on_position);
    assert_eq!((view["sede"].as_str(), view["motivazioni"][0]["codice"].as_str()), (Some("7000"), Some("QUE-01")));
    let (view, _) = read(&associazione, &no_position);
    assert_eq!(view["sede"], "5100", "the requester's sede: {view}");
    assert!(view["protocollo"].as_str().is_some_and(|p| p.starts_with("5100.")), "{view}");

    // A certification of the position has a standard answer: the rule closes it, no operator.
    let certificazione = example("que-01-rinvio-regolarita-contributiva.yaml")
        .replace("REGOLARITA_CONTRIBUTIVA", "CERTIFICAZIONI")
        .replace("esempio-que-01", "test-certificazione");
    let standard = submit(&rossi, &certificazione);
    wait_for("the standard answer", 30, || read(&rossi, &standard).0["stato"] == "chiusa");
    let (view, _) = read(&rossi, &standard);
    assert_eq!(view["esito"], "accolta", "{view}");
    let chiusura = view["eventi"].as_array().and_then(|e| e.iter().find(|e| e["tipo"] == "chiusura")).cloned();
    let nota = chiusura.as_ref().and_then(|c| c["dettaglio"]["nota"].as_str()).unwrap_or_default().to_string();
    assert!(nota.contains("posizione 1234567890") && nota.contains("«Certificazioni»"), "{view}");
    let explained = env.ok(&["explain", view["protocollo"].as_str().expect("protocollo")]);
    assert!(explained.contains("risposta standard della regola: QUE-10"), "{explained}");

    // Each sede's operators see their own quesito only.
    let napoli = headers(json!({"ruolo": "operatore", "sub": "op-nadia", "sede": "5100", "sola_lettura": false}));
    let (_, _, out) = http(port, "GET", &format!("{BASE}/coda"), &napoli, "");
    let queue = json_of(&out);
    let ids: Vec<&str> = queue["items"].as_array().expect("items").iter().filter_map(|i| i["id"].as_str()).collect();
    assert_eq!(ids, [no_position.as_str()], "{queue}");

    // The requester replies on the open quesito: the message is in the history and goes to the sede.
    let reply = json!({"testo": "Preciso: ci interessa il venerdì dalle 14 alle 16."}).to_string();
    let (status, _, out) =
        http(port, "POST", &format!("{BASE}/richieste/{no_position}/messaggi"), &associazione, &reply);
    assert_eq!(status, 201, "{out}");

    // The operator answers: a quesito's close needs its answer (the note).
    let path = |tail: &str| format!("{BASE}/richieste/{no_position}{tail}");
    assert_eq!(http(port, "POST", &path("/presa-in-carico"), &napoli, "").0, 200);
    let (_, etag) = read(&associazione, &no_position);
    let with_etag = format!("{napoli}If-Match: {etag}\r\n");
    let (status, head, out) =
        http(port, "POST", &path("/chiusura"), &with_etag, &json!({"esito": "accolta"}).to_string());
    assert_eq!(status, 422, "{out}");
    let p = problem(&head, &out);
    assert_eq!(p["errors"][0]["pointer"], "/nota", "{p}");
    assert!(p["errors"][0]["detail"].as_str().is_some_and(|d| d.contains("quesito")), "{p}");
    let answer = "La sede riceve gli intermediari il venerdì dalle 14 alle 16, su appuntamento.";
    let close = json!({"esito": "accolta", "nota": answer}).to_string();
    let (status, _, out) = http(port, "POST", &path("/chiusura"), &with_etag, &close);
    assert_eq!(status, 200, "{out}");
    let closed = json_of(&out);
    assert_eq!(closed["stato"], "chiusa", "{closed}");
    let kinds: Vec<&str> =
        closed["eventi"].as_array().expect("eventi").iter().filter_map(|e| e["tipo"].as_str()).collect();
    for kind in ["protocollazione", "smistamento", "messaggio_richiedente", "chiusura"] {
        assert!(kinds.contains(&kind), "{kind} in {kinds:?}");
    }

    // Notified: protocollazione and smistamento, the reply to the sede's address, the answer to the requester.
    let maildir = env.path("mail");
    let protocollo = closed["protocollo"].as_str().expect("protocollo").to_string();
    let answered = |m: &Value| m["subject"].as_str().is_some_and(|s| s.starts_with("Risposta al quesito "));
    wait_for("the answer's e-mail", 30, || mails(&maildir).iter().any(answered));
    let all = mails(&maildir);
    let about: Vec<&Value> =
        all.iter().filter(|m| m["subject"].as_str().is_some_and(|s| s.contains(protocollo.as_str()))).collect();
    // The Maildir transport has no SMTP envelope: the recipient is the `To` header's.
    let to = |m: &Value| m["to"].as_str().unwrap_or_default().to_string();
    let mail = about.iter().find(|m| answered(m)).expect("the answer");
    assert!(to(mail).contains("segreteria@associazione.example.it"), "{mail}");
    assert_eq!(mail["subject"], format!("Risposta al quesito {protocollo} - Richiesta generica"));
    let text = mail["text"].as_str().expect("text");
    let flat = text.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(flat.contains("la sede Napoli ha risposto") && flat.contains(answer), "{text}");
    assert!(!flat.contains("Accolta"), "a quesito is answered, not accepted: {text}");
    assert_eq!(mail["attachments"].as_array().map(Vec::len), Some(0), "no esito PDF with an answer");
    assert!(about.iter().any(|m| to(m).contains("aziende.napoli@inps.it")), "the reply went to the sede: {about:#?}");
    let requester = about.iter().filter(|m| to(m).contains("segreteria@associazione.example.it")).count();
    assert!(requester >= 3, "protocollazione, smistamento, answer: {about:#?}");
    // The standard answer reached its requester the same way.
    let standard_mail =
        all.iter().find(|m| answered(m) && m["text"].as_str().is_some_and(|t| t.contains("«Certificazioni»")));
    assert!(standard_mail.is_some_and(|m| to(m).contains("mario.rossi@example.it")), "{all:#?}");
    stop(child);
}
