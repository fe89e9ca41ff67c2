//! The HTTP API v1 over real HTTP on a running daemon, with bearer JWTs signed by the test keys of
//! `tests/support/jwt`: submit → decided → read back; every refusal is problem+json naming what failed.

mod common;

use common::api::{BASE, ROSSI, bearer, daemon, problem, token};
use common::daemon::{http, stop, wait_for};
use common::{Db, Env, rdi};
use serde_json::{Value, json};

const VERDI: &str = "VRDGPP80A41H501Y";

/// The request of `rdi` on 1234567890 as JSON.
fn body(richiedente: &str, profilo: &str) -> String {
    body_on(richiedente, profilo, "1234567890")
}

/// The request of `rdi` on `matricola` as JSON.
fn body_on(richiedente: &str, profilo: &str, matricola: &str) -> String {
    let yaml = rdi(richiedente, profilo, matricola, VERDI, "");
    let value: Value = serde_saphyr::from_str(&yaml).expect("yaml");
    value.to_string()
}

fn submit_decide_read(db: Db) {
    let env = Env::new(db);
    let (child, port) = daemon(&env);
    let auth = format!("{}Content-Type: application/json\r\n", bearer(&token("portale.key.pem", json!({}))));
    let (status, head, out) = http(port, "POST", &format!("{BASE}/richieste"), &auth, &body(ROSSI, "AZIENDA"));
    assert_eq!(status, 201, "{head}\n{out}");
    let created: Value = serde_json::from_str(&out).expect("json");
    let id = created["items"][0]["id"].as_str().expect("id").to_string();
    let href = format!("{BASE}/richieste/{id}");
    assert!(head.contains(&format!("location: {href}")) || head.contains(&format!("Location: {href}")), "{head}");
    assert!(created["items"][0]["protocollo"].as_str().is_some_and(|p| p.starts_with("7000.")), "{out}");
    wait_for("the decision", 30, || {
        let (_, _, view) = http(port, "GET", &href, &bearer(&token("portale.key.pem", json!({}))), "");
        view.contains("\"stato\":\"chiusa\"")
    });
    let (status, head, view) = http(port, "GET", &href, &bearer(&token("portale.key.pem", json!({}))), "");
    assert_eq!(status, 200, "{head}");
    let lower = head.to_ascii_lowercase();
    assert!(lower.contains("cache-control: no-store"), "{head}");
    let etag = lower.lines().find_map(|l| l.strip_prefix("etag: ")).expect("etag").to_string();
    let view: Value = serde_json::from_str(&view).expect("json");
    assert_eq!(view["esito"], "accolta", "{view}");
    assert!(view["creata_il"].as_str().is_some_and(|t| t.ends_with("+01:00") || t.ends_with("+02:00")), "{view}");
    // The same representation again: 304.
    let again = format!("{}If-None-Match: {etag}\r\n", bearer(&token("portale.key.pem", json!({}))));
    assert_eq!(http(port, "GET", &href, &again, "").0, 304);
    // The same idempotency key twice: the first request again, 200.
    let keyed = body(ROSSI, "AZIENDA").replacen('{', "{\"chiave_idempotenza\":\"k-1\",", 1);
    let (first, _, a) = http(port, "POST", &format!("{BASE}/richieste"), &auth, &keyed);
    let (second, _, b) = http(port, "POST", &format!("{BASE}/richieste"), &auth, &keyed);
    assert_eq!((first, second), (201, 200), "{a}\n{b}");
    let id_of = |t: &str| serde_json::from_str::<Value>(t).expect("json")["items"][0]["id"].clone();
    assert_eq!(id_of(&a), id_of(&b));
    // The same key with another request: 422 pointing at the key.
    let reused = keyed.replacen('{', "{\"note\":\"altro\",", 1);
    let (status, head, out) = http(port, "POST", &format!("{BASE}/richieste"), &auth, &reused);
    assert_eq!(status, 422, "{out}");
    assert_eq!(problem(&head, &out)["errors"][0]["pointer"], "/chiave_idempotenza", "{out}");
    stop(child);
}

fn refusals_are_problems_naming_what_failed(db: Db) {
    let env = Env::new(db);
    let (child, port) = daemon(&env);
    let post = |headers: &str, body: &str| http(port, "POST", &format!("{BASE}/richieste"), headers, body);
    let json_type = "Content-Type: application/json\r\n";
    let good = bearer(&token("portale.key.pem", json!({})));
    // 401: no token, a key nobody trusts, expired, another audience — each says which check failed.
    for (headers, expected) in [
        (json_type.to_string(), "Authorization: Bearer"),
        (bearer(&token("estranea.key.pem", json!({}))) + json_type, "signature does not verify"),
        (bearer(&token("portale.key.pem", json!({"exp": 1_000_000, "nbf": 0}))) + json_type, "expired"),
        (bearer(&token("portale.key.pem", json!({"aud": "altro"}))) + json_type, "audience"),
        (bearer(&token("portale.key.pem", json!({"ruolo": "ospite"}))) + json_type, "ruolo"),
    ] {
        let (status, head, out) = post(&headers, &body(ROSSI, "AZIENDA"));
        assert_eq!(status, 401, "{expected}: {out}");
        assert!(head.to_ascii_lowercase().contains("www-authenticate: bearer"), "{head}");
        assert!(problem(&head, &out)["detail"].as_str().is_some_and(|d| d.contains(expected)), "{expected}: {out}");
    }
    // 415: not JSON.
    let (status, head, out) = post(&format!("{good}Content-Type: text/plain\r\n"), &body(ROSSI, "AZIENDA"));
    assert_eq!(status, 415, "{out}");
    problem(&head, &out);
    // 422: every problem with a pointer to its field.
    let bad = body(ROSSI, "AZIENDA").replace("\"1234567890\"", "\"12345\"");
    let (status, head, out) = post(&format!("{good}{json_type}"), &format!("[{}, {bad}]", body(ROSSI, "AZIENDA")));
    assert_eq!(status, 422, "{out}");
    let p = problem(&head, &out);
    assert_eq!(p["errors"][0]["pointer"], "/1/matricola", "{p}");
    // 403: in someone else's name.
    let (status, head, out) = post(&format!("{good}{json_type}"), &body("BNCGPP72C15F205Z", "AZIENDA"));
    assert_eq!(status, 403, "{out}");
    problem(&head, &out);
    // 413: over intake.limits.max_document_bytes, refused without being read whole.
    let huge = body(ROSSI, "AZIENDA").replacen('{', &format!("{{\"note\":\"{}\",", "x".repeat(300_000)), 1);
    let (status, head, out) = post(&format!("{good}{json_type}"), &huge);
    assert_eq!(status, 413, "{out}");
    assert!(problem(&head, &out)["detail"].as_str().is_some_and(|d| d.contains("max_document_bytes")), "{out}");
    // 404: another requester's request, like one that does not exist; a protocol number is not an id.
    let (_, _, out) = post(&format!("{good}{json_type}"), &body(ROSSI, "AZIENDA"));
    let id = serde_json::from_str::<Value>(&out).expect("json")["items"][0]["id"].as_str().expect("id").to_string();
    let other = bearer(&token("portale.key.pem", json!({"cf": "BNCGPP72C15F205Z"})));
    for path in [format!("{BASE}/richieste/{id}"), format!("{BASE}/richieste/999999"), format!("{BASE}/richieste/x")] {
        let (status, head, out) = http(port, "GET", &path, &other, "");
        assert_eq!(status, 404, "{path}: {out}");
        problem(&head, &out);
    }
    stop(child);
}

const RICCI: &str = "RCCFNC79B12H501Q"; // legal representative of 6789012345, where Verdi holds D-8

/// POSTs a request as `who` and returns its id.
fn post_as(port: u16, who: &str, body: &str) -> String {
    let auth = format!("{}Content-Type: application/json\r\n", bearer(&token("portale.key.pem", json!({"cf": who}))));
    let (status, _, out) = http(port, "POST", &format!("{BASE}/richieste"), &auth, body);
    assert_eq!(status, 201, "{out}");
    serde_json::from_str::<Value>(&out).expect("json")["items"][0]["id"].as_str().expect("id").to_string()
}

/// GETs `path` as `who`: (status, JSON body).
fn get_as(port: u16, who: &str, path: &str) -> (u16, Value) {
    let (status, head, out) = http(port, "GET", path, &bearer(&token("portale.key.pem", json!({"cf": who}))), "");
    assert!(status != 200 || head.to_ascii_lowercase().contains("cache-control: no-store"), "{head}");
    (status, serde_json::from_str(&out).unwrap_or(Value::Null))
}

fn the_lista_richieste_pages_filters_and_withdraws(db: Db) {
    let env = Env::new(db);
    let (child, port) = daemon(&env);
    let mine: Vec<String> = (0..3).map(|_| post_as(port, ROSSI, &body(ROSSI, "AZIENDA"))).collect();
    // Motivazione ALTRO: the rule refers it to an operator, so it stays open to be withdrawn.
    let ricci = post_as(port, RICCI, &body_on(RICCI, "AZIENDA", "6789012345").replace("\"REVOCA\"", "\"ALTRO\""));
    wait_for("the decisions", 30, || {
        env.sql("SELECT COUNT(*) FROM requests WHERE stato = 'chiusa' OR parked IS NOT NULL")[0][0] == 4
    });
    // Rossi's list, two at a time: newest first, only his, then the last page without `next`.
    let (status, page) = get_as(port, ROSSI, &format!("{BASE}/richieste?limite=2"));
    assert_eq!(status, 200, "{page}");
    let ids = |page: &Value| -> Vec<String> {
        page["items"].as_array().expect("items").iter().map(|i| i["id"].as_str().expect("id").to_string()).collect()
    };
    assert_eq!(ids(&page), [mine[2].clone(), mine[1].clone()], "{page}");
    let next = page["_links"]["next"]["href"].as_str().expect("next").to_string();
    let (_, last) = get_as(port, ROSSI, &next);
    assert_eq!(ids(&last), [mine[0].clone()], "{last}");
    assert!(last["_links"]["next"].is_null(), "{last}");
    // Filters: matricola, stato, esito and days of submission.
    let today = common::civil_now().format("%Y-%m-%d").to_string();
    let yesterday = (common::civil_now() - chrono::Duration::days(1)).format("%Y-%m-%d").to_string();
    for (query, expected) in [
        (format!("matricola=1234567890&creata_dal={today}&creata_al={today}"), 3),
        (format!("creata_al={yesterday}"), 0),
        ("matricola=6789012345".to_string(), 0),
        ("stato=chiusa".to_string(), 3),
        ("stato=aperta".to_string(), 0),
    ] {
        let (status, page) = get_as(port, ROSSI, &format!("{BASE}/richieste?{query}"));
        assert_eq!((status, ids(&page).len()), (200, expected), "{query}: {page}");
    }
    let (status, refused) = get_as(port, ROSSI, &format!("{BASE}/richieste?stato=sospesa"));
    assert_eq!(status, 400, "{refused}");
    assert_eq!(refused["errors"][0]["pointer"], "?stato", "{refused}");
    // Ricci withdraws his referred request; Rossi cannot even see it; a closed request cannot be withdrawn.
    let auth = |who: &str| bearer(&token("portale.key.pem", json!({"cf": who})));
    let withdraw = |who: &str, id: &str| http(port, "POST", &format!("{BASE}/richieste/{id}/ritiro"), &auth(who), "");
    // Before withdrawing, Ricci writes to the sede: in the history, e-mailed to the sede.
    let write = |who: &str, id: &str, text: &str| {
        let headers = format!("{}Content-Type: application/json\r\n", auth(who));
        let body = json!({ "testo": text }).to_string();
        http(port, "POST", &format!("{BASE}/richieste/{id}/messaggi"), &headers, &body)
    };
    let (status, _, out) = write(RICCI, &ricci, "Allego la visura: la delega va revocata.");
    assert_eq!(status, 201, "{out}");
    let (_, view) = get_as(port, RICCI, &format!("{BASE}/richieste/{ricci}"));
    let last = view["eventi"].as_array().and_then(|e| e.last()).cloned().unwrap_or_default();
    assert_eq!(last["tipo"], "messaggio_richiedente", "{view}");
    let sent = env.sql("SELECT role, channel FROM outbox WHERE event = 'messaggio_richiedente'");
    assert_eq!(sent, vec![vec![Value::from("sede"), Value::from("email")]]);
    assert_eq!(write(ROSSI, &ricci, "ciao").0, 404, "not his request");
    let (status, head, out) = write(RICCI, &ricci, "  ");
    assert_eq!(status, 422, "{out}");
    assert_eq!(problem(&head, &out)["errors"][0]["pointer"], "/testo", "{out}");
    assert_eq!(withdraw(ROSSI, &ricci).0, 404);
    let (status, _, view) = withdraw(RICCI, &ricci);
    assert_eq!(status, 200, "{view}");
    let view: Value = serde_json::from_str(&view).expect("json");
    assert_eq!((view["stato"].as_str(), view["esito"].as_str()), (Some("chiusa"), Some("annullata")), "{view}");
    let (status, _, out) = withdraw(RICCI, &ricci);
    assert_eq!(status, 409, "{out}");
    assert_eq!(write(RICCI, &ricci, "ancora una domanda").0, 409, "closed: a new question needs a new request");
    let (_, page) = get_as(port, RICCI, &format!("{BASE}/richieste?esito=annullata"));
    assert_eq!(ids(&page), std::slice::from_ref(&ricci), "{page}");
    stop(child);
}

fn the_riepilogo_of_a_position_is_for_who_acts_for_it(db: Db) {
    let env = Env::new(db);
    let (child, port) = daemon(&env);
    let id = post_as(port, ROSSI, &body(ROSSI, "AZIENDA").replace("\"REVOCA\"", "\"ALTRO\""));
    wait_for("the referral", 30, || env.sql("SELECT COUNT(*) FROM requests WHERE parked IS NOT NULL")[0][0] == 1);
    let path = format!("{BASE}/posizioni/1234567890/riepilogo");
    // The legal representative and the holder of an active delega see it.
    for who in [ROSSI, VERDI] {
        let (status, r) = get_as(port, who, &path);
        assert_eq!(status, 200, "{who}: {r}");
        assert_eq!(r["azienda"]["matricola"], "1234567890", "{r}");
        let ids: Vec<&str> =
            r["deleghe"].as_array().expect("deleghe").iter().filter_map(|d| d["id"].as_str()).collect();
        assert!(ids.contains(&"D-1") && ids.contains(&"D-3"), "{r}");
        assert!(r["contatti"].as_array().is_some_and(|c| c.iter().any(|c| c["id"] == "C-2")), "{r}");
        assert!(
            r["richieste_aperte"].as_array().is_some_and(|o| o.iter().any(|o| o["id"]
                .as_i64()
                .map(|n| n.to_string())
                .as_ref()
                == Some(&id))),
            "{r}"
        );
    }
    // Anyone else, an unknown position and a malformed one: the same 404.
    for (who, path) in [
        (RICCI, path.clone()),
        (ROSSI, format!("{BASE}/posizioni/9999999999/riepilogo")),
        (ROSSI, format!("{BASE}/posizioni/12ab/riepilogo")),
    ] {
        let (status, r) = get_as(port, who, &path);
        assert_eq!(status, 404, "{who} {path}: {r}");
    }
    stop(child);
}

/// Runs `hold` on a connection of its own, outside the daemon, and keeps the connection (with the lock
/// `hold` took) until `release` is sent to or dropped.
fn hold_lock(env: &Env, hold: &'static str) -> (std::sync::mpsc::Sender<()>, std::thread::JoinHandle<()>) {
    use sqlx::Connection;
    let (release, released) = std::sync::mpsc::channel::<()>();
    let (held, is_held) = std::sync::mpsc::channel::<()>();
    let url = env.url().to_string();
    let holder = std::thread::spawn(move || {
        common::block_on(async move {
            sqlx::any::install_default_drivers();
            let mut conn = sqlx::AnyConnection::connect(&url).await.expect("connect");
            sqlx::query(hold).execute(&mut conn).await.expect("hold intake");
            held.send(()).expect("held");
            let _ = released.recv();
            // Ended here, before the holder returns: a closed connection's backend may let its locks go a
            // moment after the client has gone, and the test would race it.
            let unhold = if url.starts_with("sqlite") { "ROLLBACK" } else { "SELECT pg_advisory_unlock_all()" };
            sqlx::query(unhold).execute(&mut conn).await.expect("release the lock");
            let _ = conn.close().await;
        })
    });
    is_held.recv().expect("the intake lock is held");
    (release, holder)
}

fn a_retry_while_the_first_is_still_being_stored_is_409(db: Db) {
    let env = Env::new(db);
    let (child, port) = daemon(&env);
    let auth = format!("{}Content-Type: application/json\r\n", bearer(&token("portale.key.pem", json!({}))));
    let keyed = body(ROSSI, "AZIENDA").replacen('{', "{\"chiave_idempotenza\":\"k-lenta\",", 1);
    let post = {
        let (auth, keyed) = (auth.clone(), keyed.clone());
        move || http(port, "POST", &format!("{BASE}/richieste"), &auth, &keyed)
    };
    // Intake held back: SQLite's write lock, PostgreSQL's intake lock (advisory lock 7400).
    let hold = match db {
        Db::Sqlite => "BEGIN IMMEDIATE",
        Db::Postgres => "SELECT pg_advisory_lock(7400)",
    };
    let (release, holder) = hold_lock(&env, hold);
    let first = std::thread::spawn(post.clone());
    // The first submission is waiting for intake, holding its key: the retry is told so, at once.
    std::thread::sleep(std::time::Duration::from_millis(500));
    let (status, head, out) = post();
    assert_eq!(status, 409, "{out}");
    assert_eq!(problem(&head, &out)["errors"][0]["pointer"], "/chiave_idempotenza", "{out}");
    release.send(()).expect("release");
    holder.join().expect("holder");
    let (status, _, a) = first.join().expect("first");
    assert_eq!(status, 201, "{a}");
    // Once it is stored, the retry gets its answer.
    let (status, _, b) = post();
    assert_eq!(status, 200, "{b}");
    let id_of = |t: &str| serde_json::from_str::<Value>(t).expect("json")["items"][0]["id"].clone();
    assert_eq!(id_of(&a), id_of(&b));
    if db == Db::Postgres {
        // Another instance storing a key holds its advisory lock (7401, per key) until it commits.
        let (release, holder) = hold_lock(&env, "SELECT pg_advisory_lock(7401, hashtext('k-altrove'))");
        let elsewhere = keyed.replace("k-lenta", "k-altrove");
        let (status, head, out) = http(port, "POST", &format!("{BASE}/richieste"), &auth, &elsewhere);
        assert_eq!(status, 409, "{out}");
        problem(&head, &out);
        release.send(()).expect("release");
        holder.join().expect("holder");
        assert_eq!(http(port, "POST", &format!("{BASE}/richieste"), &auth, &elsewhere).0, 201);
    }
    stop(child);
}

/// Submissions that wait for intake together are written together (group commit), each still all or
/// nothing: one reusing a key for a different request is refused, the others are stored.
fn submissions_written_together_stand_or_fall_alone(db: Db) {
    let env = Env::new(db);
    let (child, port) = daemon(&env);
    let auth = format!("{}Content-Type: application/json\r\n", bearer(&token("portale.key.pem", json!({}))));
    let keyed = |key: &str, note: &str| {
        body(ROSSI, "AZIENDA").replacen('{', &format!("{{\"chiave_idempotenza\":\"{key}\",\"note\":\"{note}\","), 1)
    };
    let post = |text: String| {
        let auth = auth.clone();
        move || http(port, "POST", &format!("{BASE}/richieste"), &auth, &text)
    };
    assert_eq!(post(keyed("k-prima", "prima"))().0, 201);
    let hold = match db {
        Db::Sqlite => "BEGIN IMMEDIATE",
        Db::Postgres => "SELECT pg_advisory_lock(7400)",
    };
    let (release, holder) = hold_lock(&env, hold);
    // The first waits inside intake; the next three queue behind it and are written as one group.
    let waiting = std::thread::spawn(post(keyed("k-a", "a")));
    std::thread::sleep(std::time::Duration::from_millis(300));
    let group: Vec<_> = [keyed("k-prima", "diversa"), keyed("k-b", "b"), keyed("k-c", "c")]
        .into_iter()
        .map(|text| std::thread::spawn(post(text)))
        .collect();
    std::thread::sleep(std::time::Duration::from_millis(300));
    release.send(()).expect("release");
    holder.join().expect("holder");
    assert_eq!(waiting.join().expect("a").0, 201);
    let answers: Vec<(u16, String, String)> = group.into_iter().map(|t| t.join().expect("post")).collect();
    assert_eq!(answers[0].0, 422, "{}", answers[0].2);
    assert_eq!(problem(&answers[0].1, &answers[0].2)["errors"][0]["pointer"], "/chiave_idempotenza");
    assert_eq!((answers[1].0, answers[2].0), (201, 201), "{answers:?}");
    let stored = env.sql("SELECT chiave_idempotenza, protocollo FROM requests ORDER BY id");
    let mut keys: Vec<&str> = stored.iter().filter_map(|r| r[0].as_str()).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["k-a", "k-b", "k-c", "k-prima"], "the refused submission left nothing");
    let progressives: Vec<String> = stored
        .iter()
        .filter_map(|r| r[1].as_str())
        .map(|p| p.rsplit('.').next().unwrap_or_default().to_string())
        .collect();
    let mut numbers: Vec<u64> = progressives.iter().filter_map(|p| p.trim_start_matches('0').parse().ok()).collect();
    numbers.sort_unstable();
    assert!(numbers.windows(2).all(|w| w[1] == w[0] + 1), "protocol numbers without gaps: {stored:?}");
    stop(child);
}

backends!(
    submissions_written_together_stand_or_fall_alone,
    a_retry_while_the_first_is_still_being_stored_is_409,
    the_riepilogo_of_a_position_is_for_who_acts_for_it,
    submit_decide_read,
    refusals_are_problems_naming_what_failed,
    the_lista_richieste_pages_filters_and_withdraws
);
