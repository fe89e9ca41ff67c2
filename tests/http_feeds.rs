//! The change feed of request events (`GET /eventi`) over real HTTP on a running daemon, with bearer JWTs
//! signed by the test keys: requests submitted by a requester, decided by the workers, then read by an
//! integrator page by page, oldest first, with cursors; every other role is refused.

mod common;

use common::api::{self, BASE, bearer, daemon};
use common::daemon::{http, stop, wait_for};
use common::{Db, Env, rdi};
use serde_json::{Value, json};

const ROSSI: &str = api::ROSSI;
const VERDI: &str = "VRDGPP80A41H501Y";

/// The `Authorization` header of a token signed with the portal's test key, `claims` over a requester's.
fn token(claims: Value) -> String {
    bearer(&api::token("portale.key.pem", claims))
}

fn integrator() -> String {
    token(json!({ "ruolo": "integratore", "sub": "archivi" }))
}

/// Submits the `rdi` request on 1234567890 as the requester and waits until it is closed; returns its id.
fn submit_and_decide(port: u16) -> String {
    let yaml = rdi(ROSSI, "AZIENDA", "1234567890", VERDI, "");
    let value: Value = serde_saphyr::from_str(&yaml).expect("yaml");
    let headers = format!("{}Content-Type: application/json\r\n", token(json!({})));
    let (status, _, out) = http(port, "POST", &format!("{BASE}/richieste"), &headers, &value.to_string());
    assert_eq!(status, 201, "{out}");
    let created: Value = serde_json::from_str(&out).expect("json");
    let id = created["items"][0]["id"].as_str().expect("id").to_string();
    wait_for("the decision", 30, || {
        let (_, _, view) = http(port, "GET", &format!("{BASE}/richieste/{id}"), &token(json!({})), "");
        view.contains("\"stato\":\"chiusa\"")
    });
    id
}

/// Follows `next` links from `href` until an empty page; returns every item and the last `next` link.
fn read_feed(port: u16, mut href: String) -> (Vec<Value>, String) {
    let mut items = Vec::new();
    for _ in 0..100 {
        let (status, head, out) = http(port, "GET", &href, &integrator(), "");
        assert_eq!(status, 200, "{head}\n{out}");
        assert!(head.to_ascii_lowercase().contains("cache-control: no-store"), "{head}");
        let page: Value = serde_json::from_str(&out).expect("json");
        let next = page["_links"]["next"]["href"].as_str().expect("a next link on every page").to_string();
        let got = page["items"].as_array().expect("items").clone();
        if got.is_empty() {
            assert_eq!(next, href, "an empty page points at itself, to be polled");
            return (items, next);
        }
        assert!(got.len() <= 2, "limite=2 bounds the page: {out}");
        items.extend(got);
        href = next;
    }
    panic!("the feed did not end within 100 pages");
}

fn the_event_feed_pages_forward_with_cursors(db: Db) {
    let env = Env::new(db);
    let (child, port) = daemon(&env);
    let first = submit_and_decide(port);
    let (items, next) = read_feed(port, format!("{BASE}/eventi?limite=2"));
    let of = |items: &[Value], id: &str| -> Vec<String> {
        items
            .iter()
            .filter(|e| e["id_richiesta"] == id)
            .map(|e| e["tipo"].as_str().expect("tipo").to_string())
            .collect()
    };
    assert_eq!(of(&items, &first), ["protocollazione", "smistamento", "chiusura"], "{items:?}");
    let closing = items.iter().find(|e| e["tipo"] == "chiusura").expect("chiusura");
    assert_eq!(closing["dettaglio"]["esito"], "accolta", "{closing}");
    assert!(closing["protocollo"].as_str().is_some_and(|p| p.starts_with("7000.")), "{closing}");
    assert!(closing["istante"].as_str().is_some_and(|t| t.ends_with("+01:00") || t.ends_with("+02:00")), "{closing}");
    // Oldest first, each event once.
    let ids: Vec<i64> = items.iter().map(|e| e["id_evento"].as_str().expect("id").parse().expect("digits")).collect();
    let mut sorted = ids.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(ids, sorted, "{items:?}");

    // A request decided later appears after the cursor the consumer kept, and nothing before it again.
    let second = submit_and_decide(port);
    let (later, _) = read_feed(port, next);
    assert_eq!(of(&later, &second), ["protocollazione", "smistamento", "chiusura"], "{later:?}");
    assert!(of(&later, &first).is_empty(), "{later:?}");
    // An item's own cursor resumes right after it.
    let cursor = items[0]["cursore"].as_str().expect("cursore");
    let (status, _, out) = http(port, "GET", &format!("{BASE}/eventi?cursore={cursor}&limite=1"), &integrator(), "");
    assert_eq!(status, 200, "{out}");
    let page: Value = serde_json::from_str(&out).expect("json");
    assert_eq!(page["items"][0]["id_evento"], items[1]["id_evento"], "{out}");
    stop(child);
}

fn the_feed_is_for_integrators_and_checks_its_parameters(db: Db) {
    let env = Env::new(db);
    let (child, port) = daemon(&env);
    let problem = |status: u16, headers: &str, query: &str| -> Value {
        let (got, head, out) = http(port, "GET", &format!("{BASE}/eventi{query}"), headers, "");
        assert_eq!(got, status, "{head}\n{out}");
        assert!(head.to_ascii_lowercase().contains("content-type: application/problem+json"), "{head}");
        serde_json::from_str(&out).expect("json")
    };
    problem(403, &token(json!({})), "");
    problem(403, &token(json!({ "ruolo": "operatore", "sub": "BIANCHI", "sede": "7000" })), "");
    problem(401, "", "");
    let bad = problem(400, &integrator(), "?cursore=12");
    assert_eq!(bad["errors"][0]["pointer"], "?cursore", "{bad}");
    let bad = problem(400, &integrator(), "?limite=201");
    assert_eq!(bad["errors"][0]["pointer"], "?limite", "{bad}");
    problem(400, &integrator(), "?cf=RSSMRA80A01H501U");
    stop(child);
}

backends!(the_event_feed_pages_forward_with_cursors, the_feed_is_for_integrators_and_checks_its_parameters);
