//! Webhooks over real HTTP on a running daemon: an integrator subscribes (`POST /webhook`), the daemon pushes
//! the event feed to a real local receiver that checks every Standard Webhooks signature with the secret; the
//! receiver is down (503) for a while, then up: nothing is lost, retries carry the same `webhook-id`, the order
//! is the feed's. A receiver that always fails ends in dead letters after `webhooks.max_attempts`.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use common::api::{self, BASE, bearer, daemon};
use common::daemon::{http, stop, wait_for};
use common::{Db, Env, rdi};
use serde_json::{Value, json};

const ROSSI: &str = api::ROSSI;
const VERDI: &str = "VRDGPP80A41H501Y";

fn token(claims: Value) -> String {
    bearer(&api::token("portale.key.pem", claims))
}

fn integrator(id: &str) -> String {
    token(json!({ "ruolo": "integratore", "sub": id }))
}

/// One delivery as the receiver saw it.
#[derive(Debug, Clone)]
struct Delivery {
    webhook_id: String,
    event_id: String,
    answered: u16,
}

/// A receiver on 127.0.0.1: answers `status` (changed by the test), verifies every signature with `secret`
/// (set once the subscription exists) and records what it got.
#[derive(Clone)]
struct Receiver {
    port: u16,
    status: Arc<AtomicU16>,
    /// Each subscription's signing key, by subscription id (the `webhook-id` before its `_`).
    secrets: Arc<Mutex<BTreeMap<String, Vec<u8>>>>,
    got: Arc<Mutex<Vec<Delivery>>>,
    bad_signatures: Arc<Mutex<Vec<String>>>,
    /// Deliveries in progress, by subscription, and those that overlapped another of the same subscription.
    in_flight: Arc<Mutex<BTreeMap<String, usize>>>,
    overlaps: Arc<Mutex<Vec<String>>>,
    /// How long each answer takes (widens the window in which two deliverers would overlap).
    delay: Duration,
}

impl Receiver {
    fn start(status: u16) -> Receiver {
        Receiver::start_with(status, Duration::ZERO)
    }

    fn start_with(status: u16, delay: Duration) -> Receiver {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let r = Receiver {
            port: listener.local_addr().expect("addr").port(),
            status: Arc::new(AtomicU16::new(status)),
            secrets: Arc::new(Mutex::new(BTreeMap::new())),
            got: Arc::new(Mutex::new(Vec::new())),
            bad_signatures: Arc::new(Mutex::new(Vec::new())),
            in_flight: Arc::new(Mutex::new(BTreeMap::new())),
            overlaps: Arc::new(Mutex::new(Vec::new())),
            delay,
        };
        let me = r.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let me = me.clone();
                std::thread::spawn(move || me.serve(stream));
            }
        });
        r
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/ricevi?token=x", self.port)
    }

    fn add_secret(&self, subscription: &str, secret: &str) {
        let key = STANDARD.decode(secret.strip_prefix("whsec_").expect("whsec_ prefix")).expect("base64");
        assert_eq!(key.len(), 32, "32 random bytes");
        self.secrets.lock().expect("lock").insert(subscription.to_string(), key);
    }

    fn serve(&self, stream: std::net::TcpStream) {
        let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
        let mut reader = BufReader::new(stream);
        let mut headers = BTreeMap::new();
        let mut line = String::new();
        if reader.read_line(&mut line).is_err() {
            return;
        }
        loop {
            line.clear();
            if reader.read_line(&mut line).is_err() || line.trim().is_empty() {
                break;
            }
            if let Some((k, v)) = line.split_once(':') {
                headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
            }
        }
        let length: usize = headers.get("content-length").and_then(|l| l.parse().ok()).unwrap_or(0);
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let header = |name: &str| headers.get(name).cloned().unwrap_or_default();
        let (id, timestamp, signature) =
            (header("webhook-id"), header("webhook-timestamp"), header("webhook-signature"));
        let subscription = id.split('_').next().unwrap_or_default().to_string();
        let key = self.secrets.lock().expect("lock").get(&subscription).cloned();
        let signed = key.is_some_and(|key| {
            let mut content = format!("{id}.{timestamp}.").into_bytes();
            content.extend_from_slice(&body);
            let tag = ring::hmac::sign(&ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &key), &content);
            let expected = format!("v1,{}", STANDARD.encode(tag.as_ref()));
            signature.split(' ').any(|s| s == expected)
        });
        let now = chrono::Utc::now().timestamp();
        let fresh = timestamp.parse::<i64>().is_ok_and(|t| (t - now).abs() < 300);
        let item: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let answered = if !signed || !fresh || id.is_empty() {
            self.bad_signatures.lock().expect("lock").push(format!("{id} {timestamp} {signature}"));
            401
        } else {
            self.status.load(Ordering::SeqCst)
        };
        let event_id = item["id_evento"].as_str().unwrap_or_default().to_string();
        {
            let mut in_flight = self.in_flight.lock().expect("lock");
            let n = in_flight.entry(subscription.clone()).or_default();
            *n += 1;
            if *n > 1 {
                self.overlaps.lock().expect("lock").push(id.clone());
            }
        }
        std::thread::sleep(self.delay);
        *self.in_flight.lock().expect("lock").entry(subscription).or_default() -= 1;
        self.got.lock().expect("lock").push(Delivery { webhook_id: id, event_id, answered });
        let mut stream = reader.into_inner();
        let _ = stream.write_all(
            format!("HTTP/1.1 {answered} X\r\nContent-Length: 2\r\nConnection: close\r\nRetry-After: 0\r\n\r\nok")
                .as_bytes(),
        );
    }

    fn deliveries(&self) -> Vec<Delivery> {
        self.got.lock().expect("lock").clone()
    }
}

/// The test daemon with webhooks delivered quickly (`settings`: lines of the `webhooks` section).
fn webhook_daemon(env: &Env, settings: &str) -> (std::process::Child, u16) {
    // The esito documents are recorded a moment after each close, as events of their own: when they come is not
    // what these tests count.
    let mut text = std::fs::read_to_string(&env.config).expect("config").replacen(
        "worker:\n",
        "worker:\n  esito_documents: false\n",
        1,
    );
    text.push_str(&format!(
        "webhooks:\n  poll_interval_ms: 50\n  timeout_ms: 2000\n  retry_base_ms: 20\n  retry_max_ms: 100\n  allow_http_loopback: true\n{settings}"
    ));
    std::fs::write(&env.config, text).expect("config");
    daemon(env)
}

/// Subscribes `url` for `who`; returns the answer's body.
fn subscribe(port: u16, who: &str, url: &str) -> Value {
    let headers = format!("{}Content-Type: application/json\r\n", integrator(who));
    let body = json!({ "url": url, "descrizione": "archivio di prova" }).to_string();
    let (status, head, out) = http(port, "POST", &format!("{BASE}/webhook"), &headers, &body);
    assert_eq!(status, 201, "{head}\n{out}");
    serde_json::from_str(&out).expect("json")
}

/// Submits an `rdi` request as the requester and waits until it is closed.
fn submit_and_decide(port: u16, matricola: &str) {
    let yaml = rdi(ROSSI, "AZIENDA", matricola, VERDI, "");
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
}

/// Every event id of the feed after `cursor`, oldest first.
fn feed_after(port: u16, cursor: &str) -> Vec<String> {
    let mut href = format!("{BASE}/eventi?cursore={cursor}&limite=200");
    let mut ids = Vec::new();
    loop {
        let (status, _, out) = http(port, "GET", &href, &integrator("archivi"), "");
        assert_eq!(status, 200, "{out}");
        let page: Value = serde_json::from_str(&out).expect("json");
        let items = page["items"].as_array().expect("items");
        if items.is_empty() {
            return ids;
        }
        ids.extend(items.iter().map(|i| i["id_evento"].as_str().expect("id").to_string()));
        href = page["_links"]["next"]["href"].as_str().expect("next").to_string();
    }
}

/// The feed after `cursor` once it holds at least `n` events (a request decided makes three: protocollazione,
/// smistamento, chiusura). On PostgreSQL the feed shows a transaction only once every older
/// one has ended, so the last events may appear a moment after the request reads as closed.
fn feed_of_at_least(port: u16, cursor: &str, n: usize) -> Vec<String> {
    let mut feed = Vec::new();
    wait_for("the events in the feed", 30, || {
        feed = feed_after(port, cursor);
        feed.len() >= n
    });
    feed
}

fn webhooks_deliver_every_event_in_order_through_an_outage(db: Db) {
    let env = Env::new(db);
    let receiver = Receiver::start(503);
    let (child, port) = webhook_daemon(&env, "  max_attempts: 1000\n");

    let created = subscribe(port, "archivi", &receiver.url());
    let id = created["id"].as_str().expect("id").to_string();
    let secret = created["secret"].as_str().expect("the secret, shown once").to_string();
    assert!(secret.starts_with("whsec_"), "{created}");
    receiver.add_secret(&id, &secret);
    let start = created["cursore"].as_str().expect("the feed cursor it starts after").to_string();

    // Listed for its owner without the secret; another integrator neither sees nor deletes it.
    let (status, _, out) = http(port, "GET", &format!("{BASE}/webhook"), &integrator("archivi"), "");
    assert_eq!(status, 200, "{out}");
    let list: Value = serde_json::from_str(&out).expect("json");
    assert_eq!(list["items"][0]["id"], id.as_str(), "{out}");
    assert!(list["_links"].is_object(), "{out}");
    assert!(!out.contains(&secret) && !out.contains("whsec_") && !out.contains("secret"), "{out}");
    let (_, _, out) = http(port, "GET", &format!("{BASE}/webhook"), &integrator("portale-be"), "");
    assert_eq!(serde_json::from_str::<Value>(&out).expect("json")["items"], json!([]), "{out}");
    let (status, _, out) = http(port, "DELETE", &format!("{BASE}/webhook/{id}"), &integrator("portale-be"), "");
    assert_eq!(status, 404, "{out}");

    // Events happen while the receiver is down: deliveries fail and are retried.
    submit_and_decide(port, "1234567890");
    wait_for("retries while the receiver is down", 30, || {
        receiver.deliveries().iter().filter(|d| d.answered == 503).count() >= 4
    });
    submit_and_decide(port, "1234567890");
    receiver.status.store(200, Ordering::SeqCst);

    let feed = feed_of_at_least(port, &start, 6);
    wait_for("every event delivered", 30, || {
        let ok: BTreeSet<String> =
            receiver.deliveries().iter().filter(|d| d.answered == 200).map(|d| d.event_id.clone()).collect();
        feed.iter().all(|e| ok.contains(e))
    });
    let got = receiver.deliveries();
    assert!(receiver.bad_signatures.lock().expect("lock").is_empty(), "every signature verifies");
    // The same webhook-id on every retry of an event, and one per event.
    let mut ids: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for d in &got {
        ids.entry(d.event_id.as_str()).or_default().insert(d.webhook_id.as_str());
    }
    assert!(ids.values().all(|w| w.len() == 1), "{ids:?}");
    let distinct: BTreeSet<&str> = ids.values().flatten().copied().collect();
    assert_eq!(distinct.len(), ids.len(), "{ids:?}");
    // In the feed's order: an event's attempts come together, before the next event's.
    let mut order: Vec<String> = got.iter().map(|d| d.event_id.clone()).collect();
    order.dedup();
    assert_eq!(&order[..feed.len()], feed.as_slice(), "{got:?}");
    assert!(got.iter().any(|d| d.answered == 503) && got[0].answered == 503, "{got:?}");

    // The owner deletes it: gone from the list.
    let (status, _, out) = http(port, "DELETE", &format!("{BASE}/webhook/{id}"), &integrator("archivi"), "");
    assert_eq!(status, 204, "{out}");
    let (_, _, out) = http(port, "GET", &format!("{BASE}/webhook"), &integrator("archivi"), "");
    assert_eq!(serde_json::from_str::<Value>(&out).expect("json")["items"], json!([]), "{out}");
    stop(child);
}

fn a_receiver_that_always_fails_ends_in_dead_letters(db: Db) {
    let env = Env::new(db);
    let receiver = Receiver::start(500);
    let (child, port) = webhook_daemon(&env, "  max_attempts: 3\n");
    let created = subscribe(port, "archivi", &receiver.url());
    let id = created["id"].as_str().expect("id").to_string();
    receiver.add_secret(&id, created["secret"].as_str().expect("secret"));
    let start = created["cursore"].as_str().expect("cursore").to_string();
    submit_and_decide(port, "1234567890");
    let feed = feed_of_at_least(port, &start, 3);
    let query = format!(
        "SELECT event_id, attempts, last_status FROM webhook_dead_letters WHERE subscription_id = '{id}' ORDER BY event_id"
    );
    wait_for("the dead letters", 30, || env.sql(&query).len() == feed.len());
    let dead = env.sql(&query);
    let expected: Vec<Vec<Value>> =
        feed.iter().map(|e| vec![json!(e.parse::<i64>().expect("digits")), json!(3), json!(500)]).collect();
    assert_eq!(dead, expected);
    let got = receiver.deliveries();
    assert_eq!(got.len(), 3 * feed.len(), "max_attempts per event, then on: {got:?}");
    assert!(got.iter().all(|d| d.answered == 500), "{got:?}");
    stop(child);
}

fn subscriptions_check_their_url_and_role(db: Db) {
    let env = Env::new(db);
    let (child, port) = webhook_daemon(&env, "");
    let post = |who: &str, body: Value| {
        let headers = format!("{who}Content-Type: application/json\r\n");
        http(port, "POST", &format!("{BASE}/webhook"), &headers, &body.to_string())
    };
    for bad in ["http://example.com/x", "ftp://127.0.0.1/x", "not a url", "https://u:p@example.com/x"] {
        let (status, _, out) = post(&integrator("archivi"), json!({ "url": bad }));
        assert_eq!(status, 422, "{bad}: {out}");
        assert!(out.contains("/url"), "{out}");
    }
    let long = format!("https://example.com/{}", "a".repeat(3000));
    assert_eq!(post(&integrator("archivi"), json!({ "url": long })).0, 422);
    assert_eq!(post(&token(json!({})), json!({ "url": "https://example.com/x" })).0, 403);
    let (status, _, out) = post(&integrator("archivi"), json!({ "url": "https://example.com/hook" }));
    assert_eq!(status, 201, "{out}");
    assert_eq!(http(port, "DELETE", &format!("{BASE}/webhook/nessuno"), &integrator("archivi"), "").0, 404);
    stop(child);
}

fn two_daemons_never_deliver_one_subscription_at_once(db: Db) {
    let env = Env::new(db);
    let receiver = Receiver::start_with(200, Duration::from_millis(30));
    let (first, port) = webhook_daemon(&env, "");
    // A second daemon on the same database, on a port of its own; ready before any event happens.
    let text = std::fs::read_to_string(&env.config).expect("config");
    let other = common::daemon::free_port();
    let listen = |p: u16| format!("listen: \"127.0.0.1:{p}\"");
    let second_config = env.write("second.yaml", &text.replace(&listen(port), &listen(other)));
    let second = std::process::Command::new(common::BIN)
        .arg("--config")
        .arg(&second_config)
        .arg("run")
        .env_remove("SMART_TASK_DATABASE_URL")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn");
    wait_for("the second daemon", 60, || common::daemon::get(other, "/readyz").0 == 200);
    let mut subscriptions = Vec::new();
    let mut start = String::new();
    for _ in 0..3 {
        let created = subscribe(port, "archivi", &receiver.url());
        let id = created["id"].as_str().expect("id").to_string();
        receiver.add_secret(&id, created["secret"].as_str().expect("secret"));
        start = created["cursore"].as_str().expect("cursore").to_string();
        subscriptions.push(id);
    }
    submit_and_decide(port, "1234567890");
    submit_and_decide(port, "1234567890");
    let feed = feed_of_at_least(port, &start, 6);
    let expected = feed.len() * subscriptions.len();
    wait_for("every event to every subscription", 60, || {
        receiver.deliveries().iter().filter(|d| d.answered == 200).count() >= expected
    });
    std::thread::sleep(Duration::from_millis(300)); // a duplicate, if any, would arrive now
    let got = receiver.deliveries();
    assert!(receiver.bad_signatures.lock().expect("lock").is_empty());
    assert!(receiver.overlaps.lock().expect("lock").is_empty(), "one deliverer at a time per subscription");
    let mut ids: Vec<&str> = got.iter().map(|d| d.webhook_id.as_str()).collect();
    ids.sort_unstable();
    let before = ids.len();
    ids.dedup();
    assert_eq!(before, ids.len(), "each event delivered once to each subscription: {got:?}");
    assert_eq!(ids.len(), expected, "{got:?}");
    for s in &subscriptions {
        let order: Vec<String> =
            got.iter().filter(|d| d.webhook_id.starts_with(s.as_str())).map(|d| d.event_id.clone()).collect();
        assert_eq!(order, feed, "in the feed's order for {s}");
    }
    stop(second);
    stop(first);
}

backends!(
    two_daemons_never_deliver_one_subscription_at_once,
    webhooks_deliver_every_event_in_order_through_an_outage,
    a_receiver_that_always_fails_ends_in_dead_letters,
    subscriptions_check_their_url_and_role
);
