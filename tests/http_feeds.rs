//! The change feeds (`GET /eventi`, `GET /effetti`) over real HTTP on a running daemon, with bearer JWTs
//! signed by the test keys: requests submitted by a requester, decided by the workers, then read by an
//! integrator page by page, oldest first, with cursors, or as Server-Sent Events resumed with
//! `Last-Event-ID`; every other role is refused.

mod common;

use common::api::{self, BASE, bearer, daemon, daemon_with};
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

/// [`read_feed`] from `href` again until `done` holds of what it read: on PostgreSQL the feed shows a
/// transaction once every older one in the cluster has ended, so a request that reads as closed may show its
/// last event a moment later.
fn read_feed_until(port: u16, href: String, done: impl Fn(&[Value]) -> bool) -> (Vec<Value>, String) {
    let mut read = (Vec::new(), String::new());
    wait_for("the events in the feed", 30, || {
        read = read_feed(port, href.clone());
        done(&read.0)
    });
    read
}

fn the_event_feed_pages_forward_with_cursors(db: Db) {
    let env = Env::new(db);
    let (child, port) = daemon(&env);
    let first = submit_and_decide(port);
    // The esito document is recorded a moment after each close: when it shows up is not what this test checks.
    let of = |items: &[Value], id: &str| -> Vec<String> {
        items
            .iter()
            .filter(|e| e["id_richiesta"] == id && e["tipo"] != "esito_documento")
            .map(|e| e["tipo"].as_str().expect("tipo").to_string())
            .collect()
    };
    let closed = |id: String| move |items: &[Value]| of(items, &id).iter().any(|t| t == "chiusura");
    let (items, next) = read_feed_until(port, format!("{BASE}/eventi?limite=2"), closed(first.clone()));
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
    let (later, _) = read_feed_until(port, next, closed(second.clone()));
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

/// An event of a Server-Sent-Events stream.
#[derive(Debug)]
struct Sse {
    id: String,
    event: String,
    data: Value,
}

/// An open event stream of `path`, read a chunk at a time.
struct Stream {
    response: reqwest::Response,
    buffer: String,
}

impl Stream {
    async fn open(port: u16, path: &str, last_event_id: Option<&str>) -> reqwest::Response {
        // The project's one crypto provider (reqwest is built without one of its own).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut request = reqwest::Client::new()
            .get(format!("http://127.0.0.1:{port}{path}"))
            .header("Accept", "text/event-stream")
            .header("Authorization", integrator().trim_start_matches("Authorization: ").trim_end());
        if let Some(id) = last_event_id {
            request = request.header("Last-Event-ID", id);
        }
        request.send().await.expect("the stream opens")
    }

    fn of(response: reqwest::Response) -> Stream {
        assert_eq!(response.status(), 200);
        let kind = response.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("");
        assert!(kind.starts_with("text/event-stream"), "{kind}");
        Stream { response, buffer: String::new() }
    }

    /// The next event (keep-alive comments skipped), or None when the stream ends.
    async fn next(&mut self) -> Option<Sse> {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let field =
                    |name: &str| block.lines().find_map(|l| l.strip_prefix(name)).map(|v| v.trim_start().to_string());
                let Some(data) = field("data:") else { continue };
                return Some(Sse {
                    id: field("id:").unwrap_or_default(),
                    event: field("event:").unwrap_or_default(),
                    data: serde_json::from_str(&data).expect("json data"),
                });
            }
            let chunk = tokio::time::timeout(std::time::Duration::from_secs(30), self.response.chunk())
                .await
                .expect("an event within 30 s")
                .expect("the stream reads")?;
            self.buffer.push_str(std::str::from_utf8(&chunk).expect("utf-8"));
        }
    }

    /// Events until one `until` accepts (included).
    async fn until(&mut self, until: impl Fn(&Sse) -> bool) -> Vec<Sse> {
        let mut got = Vec::new();
        while let Some(e) = self.next().await {
            let done = until(&e);
            got.push(e);
            if done {
                return got;
            }
        }
        panic!("the stream ended before the event awaited: {got:?}");
    }
}

fn the_feeds_stream_as_server_sent_events_and_resume_after_the_last_id(db: Db) {
    let env = Env::new(db);
    let (child, port) = daemon_with(&env, "  max_streams: 2\n");
    let first = submit_and_decide(port);
    common::block_on(async move {
        let closing = |id: &str| {
            let id = id.to_string();
            move |e: &Sse| e.event == "chiusura" && e.data["id_richiesta"] == id.as_str()
        };
        let mut live = Stream::of(Stream::open(port, &format!("{BASE}/eventi"), None).await);
        let before = live.until(closing(&first)).await;
        for e in &before {
            assert_eq!(e.id, e.data["cursore"].as_str().expect("cursore"), "{e:?}");
            assert_eq!(e.event, e.data["tipo"].as_str().expect("tipo"), "{e:?}");
        }
        // A request submitted now arrives on the open stream.
        let second = submit_and_decide(port);
        let after = live.until(closing(&second)).await;
        // The esito documents are recorded a moment after each close, in between or not.
        let kinds: Vec<&str> = after.iter().map(|e| e.event.as_str()).filter(|k| *k != "esito_documento").collect();
        assert_eq!(kinds, ["protocollazione", "smistamento", "chiusura"], "{after:?}");
        // A client that reconnects with Last-Event-ID gets what followed it, nothing before.
        let mut resumed = Stream::of(Stream::open(port, &format!("{BASE}/eventi"), Some(&before[1].id)).await);
        let again = resumed.until(closing(&second)).await;
        let ids: Vec<&str> = again.iter().map(|e| e.id.as_str()).collect();
        let expected: Vec<&str> = before[2..].iter().chain(&after).map(|e| e.id.as_str()).collect();
        assert_eq!(ids, expected);
        // Two streams are open: a third is refused with 503 and Retry-After.
        let busy = Stream::open(port, &format!("{BASE}/effetti"), None).await;
        assert_eq!(busy.status(), 503);
        assert!(busy.headers().contains_key("retry-after"));
        drop(resumed);
        // The archives' feed: the delega the accepted requests revoked, with the request that did it.
        let mut effects = None;
        for _ in 0..50 {
            let opened = Stream::open(port, &format!("{BASE}/effetti"), None).await;
            if opened.status() == 200 {
                effects = Some(Stream::of(opened));
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        let mut effects = effects.expect("a place for a stream once one closed");
        let revoked = effects.until(|e| e.event == "revoca_delega").await;
        let revoked = &revoked[revoked.len() - 1].data;
        assert_eq!(revoked["id_richiesta"], first.as_str(), "{revoked}");
        assert_eq!(revoked["dettaglio"]["delega"], "D-1", "{revoked}");
        // The daemon's stop ends the open streams instead of waiting for them.
        let started = std::time::Instant::now();
        stop(child);
        assert!(started.elapsed() < std::time::Duration::from_secs(10), "stop waited for the streams");
        while live.next().await.is_some() {}
    });
}

fn the_effects_feed_pages_what_accepted_requests_changed(db: Db) {
    let env = Env::new(db);
    let (child, port) = daemon(&env);
    let first = submit_and_decide(port);
    let mut answer = (0, String::new(), String::new());
    wait_for("the revocation in the effects feed", 30, || {
        answer = http(port, "GET", &format!("{BASE}/effetti?limite=10"), &integrator(), "");
        answer.0 != 200 || answer.2.contains("revoca_delega")
    });
    let (status, head, out) = answer;
    assert_eq!(status, 200, "{out}");
    assert!(head.to_ascii_lowercase().contains("cache-control: no-store"), "{head}");
    let page: Value = serde_json::from_str(&out).expect("json");
    let items = page["items"].as_array().expect("items");
    let revoca = items.iter().find(|e| e["tipo"] == "revoca_delega").expect("a revocation");
    assert_eq!(
        (revoca["id_richiesta"].as_str(), revoca["dettaglio"]["delega"].as_str()),
        (Some(first.as_str()), Some("D-1"))
    );
    assert!(revoca["dettaglio"]["data_revoca"].as_str().is_some_and(|d| d.len() == 10), "{revoca}");
    // Nothing after the last one; a requester may not read it.
    let next = page["_links"]["next"]["href"].as_str().expect("next");
    let (_, _, out) = http(port, "GET", next, &integrator(), "");
    assert_eq!(serde_json::from_str::<Value>(&out).expect("json")["items"], json!([]));
    assert_eq!(http(port, "GET", &format!("{BASE}/effetti"), &token(json!({})), "").0, 403);
    // The delega is revoked in the reference data the way the feed says.
    let stato = env.sql("SELECT stato FROM deleghe WHERE id = 'D-1'");
    assert_eq!(stato[0][0], "REVOCATA");
    stop(child);
}

backends!(
    the_event_feed_pages_forward_with_cursors,
    the_feed_is_for_integrators_and_checks_its_parameters,
    the_feeds_stream_as_server_sent_events_and_resume_after_the_last_id,
    the_effects_feed_pages_what_accepted_requests_changed,
);
