//! The operators' side of the API over real HTTP: the queue of their sede, the presa in carico (409 when
//! someone else holds it), comments to the requester, the close behind `If-Match` (428 without one, 412 on a
//! stale ETag), requeue and a new decision; a read-only operator and another sede are refused.

mod common;

use common::api::{BASE, bearer, daemon, etag_of, json_of, problem, token};
use common::daemon::{http, stop, wait_for};
use common::{Db, Env, rdi};
use serde_json::{Value, json};

const VERDI: &str = "VRDGPP80A41H501Y";
const RICCI: &str = "RCCFNC79B12H501Q"; // legal representative of 6789012345 (sede 7000), where Verdi holds D-8

fn ricci() -> String {
    format!(
        "{}Content-Type: application/json\r\n",
        bearer(&token("portale.key.pem", json!({"cf": RICCI, "profilo": "AZIENDA"})))
    )
}

fn operatore(id: &str, sede: &str, sola_lettura: bool) -> String {
    let claims = json!({"ruolo": "operatore", "sub": id, "sede": sede, "sola_lettura": sola_lettura});
    format!("{}Content-Type: application/json\r\n", bearer(&token("portale.key.pem", claims)))
}

/// Submits through the API a request of Ricci Edilizia that the rule refers to the sede (motivazione ALTRO),
/// waits for the referral and returns its id.
fn referred(port: u16) -> String {
    let body: Value =
        serde_saphyr::from_str(&rdi(RICCI, "AZIENDA", "6789012345", VERDI, "").replace("REVOCA\n", "ALTRO\n"))
            .expect("yaml");
    let (status, _, out) = http(port, "POST", &format!("{BASE}/richieste"), &ricci(), &body.to_string());
    assert_eq!(status, 201, "{out}");
    let id = json_of(&out)["items"][0]["id"].as_str().expect("id").to_string();
    wait_for("the referral", 30, || {
        let (_, _, out) = http(port, "GET", &format!("{BASE}/richieste/{id}"), &ricci(), "");
        json_of(&out)["sospesa"] == "rinvio"
    });
    id
}

fn an_operator_works_a_referral_of_their_sede(db: Db) {
    let env = Env::new(db);
    let (child, port) = daemon(&env);
    let id = referred(port);
    let (anna, bruno) = (operatore("op-anna", "7000", false), operatore("op-bruno", "7000", false));
    let path = |tail: &str| format!("{BASE}/richieste/{id}{tail}");

    // The queue of sede 7000 holds it; another sede's neither lists nor reads it.
    let (status, head, out) = http(port, "GET", &format!("{BASE}/coda"), &anna, "");
    assert_eq!(status, 200, "{out}");
    assert!(head.to_ascii_lowercase().contains("cache-control: no-store"), "{head}");
    let queue = json_of(&out);
    assert_eq!(queue["items"][0]["id"], id.as_str(), "{queue}");
    assert_eq!(queue["items"][0]["motivazioni"][0]["codice"], "GEN-05", "{queue}");
    let milano = operatore("op-carla", "1300", false);
    let (_, _, out) = http(port, "GET", &format!("{BASE}/coda"), &milano, "");
    assert_eq!(json_of(&out)["items"].as_array().map(Vec::len), Some(0), "{out}");
    for (method, tail) in [("GET", ""), ("POST", "/presa-in-carico"), ("POST", "/rimessa-in-coda")] {
        let (status, head, out) = http(port, method, &path(tail), &milano, "");
        assert_eq!(status, 404, "{method} {tail}: {out}");
        problem(&head, &out);
    }
    // A read-only operator sees but may not act; a requester may not act as an operator.
    let (status, head, out) = http(port, "POST", &path("/presa-in-carico"), &operatore("op-dino", "7000", true), "");
    assert_eq!(status, 403, "{out}");
    problem(&head, &out);
    assert_eq!(http(port, "POST", &path("/rimessa-in-coda"), &ricci(), "").0, 403);

    // Anna takes it in hand; Bruno is told who holds it and cannot release it.
    let (status, _, out) = http(port, "POST", &path("/presa-in-carico"), &anna, "");
    assert_eq!(status, 200, "{out}");
    for method in ["POST", "DELETE"] {
        let (status, head, out) = http(port, method, &path("/presa-in-carico"), &bruno, "");
        assert_eq!(status, 409, "{method}: {out}");
        assert!(problem(&head, &out)["detail"].as_str().is_some_and(|d| d.contains("op-anna")), "{out}");
    }
    let (_, _, out) = http(port, "GET", &format!("{BASE}/coda?assegnata=mie"), &anna, "");
    assert_eq!(json_of(&out)["items"][0]["assegnata_a"], "op-anna", "{out}");
    let (_, _, out) = http(port, "GET", &format!("{BASE}/coda?assegnata=nessuno"), &anna, "");
    assert_eq!(json_of(&out)["items"].as_array().map(Vec::len), Some(0), "{out}");

    // A comment goes to the requester's history.
    let comment = json!({"testo": "Stiamo verificando la diffida allegata."}).to_string();
    let (status, _, out) = http(port, "POST", &path("/commenti"), &anna, &comment);
    assert_eq!(status, 201, "{out}");
    let (_, head, out) = http(port, "GET", &path(""), &ricci(), "");
    let view = json_of(&out);
    let events = view["eventi"].as_array().expect("eventi");
    assert!(events.iter().any(|e| e["tipo"] == "commento_operatore"), "{view}");
    let etag = etag_of(&head);

    // The close needs the ETag: 428 without it, 412 when stale, then it closes as Anna.
    let accolta = json!({"esito": "accolta", "nota": "verificata"}).to_string();
    let (status, head, out) = http(port, "POST", &path("/chiusura"), &anna, &accolta);
    assert_eq!(status, 428, "{out}");
    problem(&head, &out);
    let stale = format!("{anna}If-Match: \"not-the-current-one\"\r\n");
    let (status, head, out) = http(port, "POST", &path("/chiusura"), &stale, &accolta);
    assert_eq!(status, 412, "{out}");
    problem(&head, &out);
    let bad = json!({"esito": "non_accolta"}).to_string();
    let (status, head, out) = http(port, "POST", &path("/chiusura"), &format!("{anna}If-Match: {etag}\r\n"), &bad);
    assert_eq!(status, 422, "{out}");
    assert_eq!(problem(&head, &out)["errors"][0]["pointer"], "/motivi", "{out}");
    let (status, head, out) = http(port, "POST", &path("/chiusura"), &format!("{anna}If-Match: {etag}\r\n"), &accolta);
    assert_eq!(status, 200, "{out}");
    assert_ne!(etag_of(&head), etag);
    let closed = json_of(&out);
    assert_eq!((closed["stato"].as_str(), closed["esito"].as_str()), (Some("chiusa"), Some("accolta")), "{closed}");
    let actors: Vec<&str> =
        closed["eventi"].as_array().expect("eventi").iter().filter_map(|e| e["attore"].as_str()).collect();
    assert!(actors.contains(&"operatore:op-anna"), "{actors:?}");
    // Closed: nothing more to claim.
    assert_eq!(http(port, "POST", &path("/presa-in-carico"), &bruno, "").0, 409);
    stop(child);
}

fn an_operator_requeues_and_has_the_rule_decide_again(db: Db) {
    let env = Env::new(db);
    let (child, port) = daemon(&env);
    let anna = operatore("op-anna", "7000", false);
    // Decided again now: the rule refers it again with the facts it reads now.
    let id = referred(port);
    let (status, _, out) = http(port, "POST", &format!("{BASE}/richieste/{id}/nuova-decisione"), &anna, "");
    assert_eq!(status, 200, "{out}");
    assert_eq!(json_of(&out)["esito"], "rinvio", "{out}");
    // Requeued: the request goes back to the workers, who refer it again.
    let (status, _, out) = http(port, "POST", &format!("{BASE}/richieste/{id}/rimessa-in-coda"), &anna, "");
    assert_eq!(status, 200, "{out}");
    wait_for("the new referral", 30, || {
        let (_, _, out) = http(port, "GET", &format!("{BASE}/richieste/{id}"), &ricci(), "");
        let view = json_of(&out);
        view["sospesa"] == "rinvio"
            && view["eventi"].as_array().is_some_and(|e| e.iter().any(|e| e["tipo"] == "rimessa_in_coda"))
    });
    stop(child);
}

backends!(an_operator_works_a_referral_of_their_sede, an_operator_requeues_and_has_the_rule_decide_again);
