//! Several daemons on one PostgreSQL database, and PostgreSQL going away under a running daemon (PostgreSQL
//! only: SQLite is one process on one machine).

mod common;

use std::collections::HashMap;
use std::process::Child;
use std::time::{Duration, Instant};

use common::daemon::{free_port, get, start_instance, stop, wait_for, with_api};
use common::pg::PgServer;
use common::{Db, Env, Settings};
use serde_json::Value;

fn count(env: &Env, query: &str) -> i64 {
    env.sql(query)[0][0].as_i64().expect("a count")
}

/// The synthetic world of the benchmark (`n` companies, each with an intermediary's active delega) and its
/// requests `0..n`, plus `dup` second requests revoking the same deleghe as requests `0..dup`, submitted
/// together so that two instances race for one delega.
fn world_and_requests(env: &Env, n: usize, dup: usize) -> usize {
    let facts = env.write("world.json", &serde_json::to_string(&smart_task::bench::world(n)).expect("world"));
    env.ok(&["facts", "import", facts.to_str().expect("utf-8")]);
    let date = today();
    let mut requests: Vec<Value> = (0..n).map(|i| smart_task::bench::request(i, &date)).collect();
    for i in 0..dup {
        let mut again = smart_task::bench::request(i, &date);
        again["chiave_idempotenza"] = format!("again-{i}").into();
        requests.push(again);
    }
    let file = env.write("requests.json", &serde_json::to_string(&requests).expect("requests"));
    env.ok(&["submit", file.to_str().expect("utf-8")]);
    requests.len()
}

fn today() -> String {
    smart_task::domain::time::iso_date(smart_task::clock::now_ms())
}

/// Every request closed exactly once, with one decision, one closing event and one notification row per
/// event and channel; each delega revoked by exactly the requests that were accepted to revoke it.
fn assert_exactly_once(env: &Env, total: usize) {
    assert_eq!(count(env, "SELECT COUNT(*) FROM requests WHERE stato = 'chiusa'"), total as i64, "all closed");
    let twice = |q: &str| count(env, q);
    assert_eq!(
        twice("SELECT COUNT(*) FROM (SELECT request_id FROM decisions GROUP BY request_id HAVING COUNT(*) <> 1) x"),
        0,
        "one decision per request"
    );
    assert_eq!(count(env, "SELECT COUNT(DISTINCT request_id) FROM decisions"), total as i64);
    for kind in ["protocollazione", "smistamento", "chiusura"] {
        let q = format!(
            "SELECT COUNT(*) FROM (SELECT request_id FROM events WHERE kind = '{kind}' GROUP BY request_id
             HAVING COUNT(*) <> 1) x"
        );
        assert_eq!(twice(&q), 0, "one `{kind}` event per request");
        let q = format!("SELECT COUNT(*) FROM events WHERE kind = '{kind}'");
        assert_eq!(count(env, &q), total as i64, "a `{kind}` event for every request");
    }
    assert_eq!(
        twice(
            "SELECT COUNT(*) FROM (SELECT event_id, channel, role FROM outbox GROUP BY event_id, channel, role
             HAVING COUNT(*) <> 1) x"
        ),
        0,
        "one notification per event, channel and addressee (requester, counterparty)"
    );
    // The requester's: an e-mail for every event, an SMS where they consented (even-numbered requests).
    let events = count(env, "SELECT COUNT(*) FROM events WHERE kind IN ('protocollazione', 'smistamento', 'chiusura')");
    assert_eq!(count(env, "SELECT COUNT(*) FROM outbox WHERE role = 'richiedente' AND channel = 'email'"), events);
    assert_eq!(
        twice(
            "SELECT COUNT(*) FROM events e WHERE e.kind = 'chiusura'
               AND NOT EXISTS (SELECT 1 FROM outbox o WHERE o.event_id = e.id AND o.channel = 'email')"
        ),
        0,
        "every closing is e-mailed"
    );
    // Effects once: a delega is revoked iff one accepted request revoked it, and by that request.
    let accepted: HashMap<String, Vec<i64>> = env
        .sql("SELECT r.id, r.payload FROM requests r WHERE r.esito = 'accolta' ORDER BY r.id")
        .into_iter()
        .fold(HashMap::new(), |mut by, row| {
            let payload: Value = serde_json::from_str(row[1].as_str().expect("payload")).expect("json");
            let matricola = payload["matricola"].as_str().expect("matricola").to_string();
            by.entry(matricola).or_default().push(row[0].as_i64().expect("id"));
            by
        });
    assert!(accepted.values().all(|ids| ids.len() == 1), "two accepted requests revoked one delega");
    let revoked: HashMap<String, i64> = env
        .sql("SELECT matricola, revocata_da FROM deleghe WHERE stato = 'REVOCATA'")
        .into_iter()
        .map(|r| (r[0].as_str().expect("matricola").to_string(), r[1].as_i64().expect("revocata_da")))
        .collect();
    let expected: HashMap<String, i64> = accepted.into_iter().map(|(m, ids)| (m, ids[0])).collect();
    assert_eq!(revoked, expected, "each delega revoked by the one request accepted for it");
}

fn with_new_key(mut r: Value) -> Value {
    let key = format!("{}-again", r["chiave_idempotenza"].as_str().unwrap_or("k"));
    r["chiave_idempotenza"] = key.into();
    r
}

fn count_on(url: &str, query: &str) -> i64 {
    common::sql(url, query)[0][0].as_i64().expect("a count")
}

/// PostgreSQL only, under `postgres::` like the PostgreSQL variants of the other tests (`cargo test postgres`).
mod postgres {
    use super::*;

    #[test]
    fn a_submission_wakes_an_idle_instance_at_once() {
        let Some(_server) = common::pg::shared_or_skip("cluster::postgres::a_submission_wakes") else { return };
        let env = Env::new(Db::Postgres);
        // Polls only every 30 s: a decision within seconds can only come from the NOTIFY of the submission.
        let text = std::fs::read_to_string(&env.config).expect("config");
        assert!(text.contains("poll_interval_ms: 50"));
        std::fs::write(&env.config, text.replace("poll_interval_ms: 50", "poll_interval_ms: 30000")).expect("config");
        env.import_examples();
        env.ok(&["migrate"]);
        let daemon = start_instance(&env, "idle");
        // Let the workers find the queue empty and go to sleep.
        std::thread::sleep(Duration::from_secs(2));
        let started = Instant::now();
        let stored =
            env.submit(&common::rdi("VRDGPP80A41H501Y", "INTERMEDIARIO", "6789012345", "VRDGPP80A41H501Y", ""));
        let key = stored[0]["protocollo"].as_str().expect("protocollo").to_string();
        wait_for("the request decided after a wake-up", 20, || env.show(&key)["stato"] != "aperta");
        let waited = started.elapsed();
        stop(daemon);
        assert!(waited < Duration::from_secs(10), "decided after {waited:?}: woken by polling, not by NOTIFY");
    }

    #[test]
    fn three_instances_decide_every_request_exactly_once_while_one_is_killed() {
        let Some(_server) = common::pg::shared_or_skip("cluster::postgres::three_instances") else { return };
        let env =
            Env::with(Db::Postgres, Settings { lease_seconds: 2, batch_size: 64, workers: 2, ..Settings::default() });
        let (n, dup) = (4_500, 500);
        let total = world_and_requests(&env, n, dup);
        assert_eq!(total, 5_000);

        // A cron run missed while every instance was down: made up once, by one of them.
        env.ok(&["migrate"]);
        env.sql("INSERT INTO cron_jobs (name, next_run_at) VALUES ('sla_escalation', 1000)");
        let started = Instant::now();
        let mut nodes: Vec<Child> =
            ["node-a", "node-b", "node-c"].iter().map(|name| start_instance(&env, name)).collect();
        wait_for("a fifth of the requests closed", 300, || {
            count(&env, "SELECT COUNT(*) FROM requests WHERE stato = 'chiusa'") >= total as i64 / 5
        });
        let mut victim = nodes.remove(1);
        victim.kill().expect("SIGKILL node-b");
        let _ = victim.wait();
        let closed_at_kill = count(&env, "SELECT COUNT(*) FROM requests WHERE stato = 'chiusa'");
        wait_for("every request closed", 600, || {
            count(&env, "SELECT COUNT(*) FROM requests WHERE stato = 'chiusa'") == total as i64
        });
        let elapsed = started.elapsed();
        for node in nodes {
            stop(node);
        }
        let taken_over = count(&env, "SELECT COUNT(*) FROM events WHERE kind = 'ripresa_lavorazione'");
        eprintln!(
            "cluster: {total} requests in {:.1} s, node-b killed after {closed_at_kill} closed, {taken_over} taken over",
            elapsed.as_secs_f64()
        );
        assert!(closed_at_kill < total as i64, "the kill landed after the work was done: nothing was tested");
        let runs: usize = ["node-a", "node-b", "node-c"]
            .iter()
            .map(|node| std::fs::read_to_string(env.path(&format!("{node}.log"))).unwrap_or_default())
            .map(|log| log.lines().filter(|l| l.contains("cron job done") && l.contains("sla_escalation")).count())
            .sum();
        assert_eq!(runs, 1, "the overdue SLA escalation ran once across the three instances");
        assert_exactly_once(&env, total);
        // Every instance took part, and the survivors took over what the killed one held.
        let actors: Vec<String> = env
            .sql("SELECT DISTINCT actor FROM events WHERE kind = 'smistamento'")
            .into_iter()
            .filter_map(|r| r[0].as_str().map(str::to_string))
            .collect();
        for node in ["node-a", "node-b", "node-c"] {
            assert!(actors.iter().any(|a| a.starts_with(&format!("{node}:"))), "{node} claimed nothing: {actors:?}");
        }
        // The duplicates raced their originals: each pair has one outcome for the delega (checked above), and
        // for an accepted original its twin was refused.
        assert!(count(&env, "SELECT COUNT(*) FROM requests WHERE esito = 'non_accolta'") > 0);
    }

    #[test]
    fn a_postgresql_restart_under_a_running_daemon_loses_nothing() {
        let Some(server) = PgServer::start_or_skip("cluster::postgres::a_postgresql_restart") else { return };
        let env = Env::with(Db::Postgres, Settings { lease_seconds: 3, ..Settings::default() });
        // The harness made the database on the shared server: point the configuration at one on this server.
        let url = server.create_database();
        let text = std::fs::read_to_string(&env.config).expect("config").replace(env.url(), &url);
        std::fs::write(&env.config, text).expect("config");
        let port = free_port();
        with_api(&env, port);
        let total_first = world_and_requests(&env, 300, 0);
        let daemon = start_instance(&env, "solo");
        let closed = || count_on(&url, "SELECT COUNT(*) FROM requests WHERE stato = 'chiusa'");
        wait_for("the first requests decided", 120, || closed() == total_first as i64);
        wait_for("ready", 30, || get(port, "/readyz").0 == 200);

        server.stop();
        wait_for("not ready while PostgreSQL is down", 60, || get(port, "/readyz").0 == 503);
        std::thread::sleep(Duration::from_secs(2));
        let mut daemon = daemon;
        assert!(daemon.try_wait().expect("wait").is_none(), "the daemon exited while PostgreSQL was down");
        server.start_again();

        // New work after the restart: decided by the same process, which reconnected by itself.
        let more: Vec<Value> =
            (300..400).map(|i| smart_task::bench::request(i % 300, &today())).map(with_new_key).collect();
        let file = env.write("more.json", &serde_json::to_string(&more).expect("json"));
        env.ok(&["submit", file.to_str().expect("utf-8")]);
        wait_for("requests submitted after the restart decided", 120, || closed() == (total_first + more.len()) as i64);
        wait_for("ready again", 30, || get(port, "/readyz").0 == 200);
        assert!(daemon.try_wait().expect("wait").is_none(), "the daemon exited");
        stop(daemon);
        let log = std::fs::read_to_string(env.path("solo.log")).unwrap_or_default();
        assert!(log.contains("database unreachable"), "no trace of the outage in the log:\n{log}");
        assert!(log.contains("database reachable again"), "no trace of the recovery in the log:\n{log}");
        assert_eq!(
            count_on(
                &url,
                "SELECT COUNT(*) FROM (SELECT request_id FROM decisions GROUP BY request_id HAVING COUNT(*) <> 1) x"
            ),
            0
        );
    }
}
