//! The pipeline under failure: a worker whose lease expires (fencing), a daemon killed mid-batch, rules
//! that loop forever or run past their deadline, and a graceful SIGTERM.

mod common;

use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Db, Env, Settings, codes, rdi};
use serde_json::Value;
use smart_task::config::Config;
use smart_task::domain::closing::Fate;
use smart_task::{bench, daemon};

fn kill(pid: u32, signal: &str) {
    let status = Command::new("kill").arg(format!("-{signal}")).arg(pid.to_string()).status().expect("kill");
    assert!(status.success());
}

/// A synthetic world of `n` companies and `n` requests (65% accepted), submitted through the binary.
fn synthetic(env: &Env, n: usize) {
    let world = serde_json::to_string(&bench::world(n)).expect("world json");
    let facts = env.write("world.json", &world);
    env.ok(&["facts", "import", facts.to_str().expect("path")]);
    let today = common::civil_now().format("%Y-%m-%d").to_string();
    let requests: Vec<Value> = (0..n).map(|i| bench::request(i, &today)).collect();
    let file = env.write("requests.json", &serde_json::to_string(&requests).expect("json"));
    env.ok(&["submit", file.to_str().expect("path")]);
}

/// Every request closed exactly once, its effects applied once and one notification per event and channel.
/// `revocations` counts the deleghe the accepted requests revoke (sub-deleghe included); None = one each.
fn assert_exactly_once(env: &Env, n: i64, revocations: Option<i64>) {
    assert_eq!(env.sql("SELECT COUNT(*) FROM requests WHERE stato = 'chiusa'")[0][0], n);
    assert_eq!(env.sql("SELECT COUNT(*) FROM decisions")[0][0], n, "one decision per request");
    assert!(
        env.sql("SELECT request_id FROM events WHERE kind = 'chiusura' GROUP BY request_id HAVING COUNT(*) > 1")
            .is_empty()
    );
    assert_eq!(env.sql("SELECT COUNT(*) FROM events WHERE kind = 'chiusura'")[0][0], n);
    assert!(
        env.sql("SELECT request_id FROM events WHERE kind = 'smistamento' GROUP BY request_id HAVING COUNT(*) > 1")
            .is_empty()
    );
    let accepted = env.sql("SELECT COUNT(*) FROM requests WHERE esito = 'accolta'")[0][0].clone();
    let expected = revocations.map_or(accepted.clone(), Value::from);
    assert_eq!(env.sql("SELECT COUNT(*) FROM deleghe WHERE revocata_da IS NOT NULL")[0][0], expected, "revocations");
    assert_eq!(env.sql("SELECT COUNT(DISTINCT revocata_da) FROM deleghe")[0][0], accepted);
    assert!(
        env.sql(
            "SELECT event_id, channel, recipient FROM outbox GROUP BY event_id, channel, recipient HAVING COUNT(*) > 1"
        )
        .is_empty(),
        "one notification per event, channel and recipient"
    );
    // Every request of these tests consents to e-mail: one e-mail to the requester per event.
    let expected_mail = env
        .sql("SELECT COUNT(*) FROM events WHERE kind IN ('protocollazione', 'smistamento', 'chiusura')")[0][0]
        .clone();
    assert_eq!(
        env.sql("SELECT COUNT(*) FROM outbox WHERE channel = 'email' AND role = 'richiedente'")[0][0],
        expected_mail
    );
}

/// After a batch run's end: every closed request has its esito document recorded exactly once, however many
/// daemons were stopped or killed while rendering them.
fn assert_each_esito_recorded_once(env: &Env, n: i64) {
    assert_eq!(env.sql("SELECT COUNT(*) FROM events WHERE kind = 'esito_documento'")[0][0], n);
    assert!(
        env.sql("SELECT request_id FROM events WHERE kind = 'esito_documento' GROUP BY request_id HAVING COUNT(*) > 1")
            .is_empty()
    );
    assert_eq!(env.sql("SELECT COUNT(*) FROM requests WHERE stato = 'chiusa' AND esito_sha256 IS NULL")[0][0], 0);
}

fn a_stale_worker_cannot_close_what_another_took_over(db: Db) {
    let env = Env::new(db);
    env.import_examples();
    let text = rdi("RSSMRA80A01H501U", "AZIENDA", "1234567890", "VRDGPP80A41H501Y", "");
    let other = rdi("FRRLCU75D05H501G", "AZIENDA", "4567890123", "VRDGPP80A41H501Y", "");
    env.submit(&format!("- {}\n- {}", text.replace('\n', "\n  "), other.replace('\n', "\n  ")));

    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let config = Config::load(Some(&env.config)).expect("config");
        let store = daemon::open_store(&config).await.expect("store");
        let pipeline = daemon::pipeline(&config, store.clone()).expect("pipeline");
        let now = smart_task::clock::now_ms();
        // Worker A claims with a lease that expires at once, and stalls (a GC pause, a dead process...).
        let stalled = store.claim("A", 10, 1, now).await.expect("claim");
        assert_eq!(stalled.len(), 2);
        tokio::time::sleep(Duration::from_millis(5)).await;
        // Worker B takes both over and closes them. Both read the consultant's facts, which the first
        // revocation changes: the second is decided again, in B's next batch.
        let stats = pipeline.run_batch("B").await.expect("batch");
        assert_eq!((stats.claimed, stats.closed, stats.conflicts), (2, 1, 1));
        // A wakes up, decides and tries to close: fenced out, nothing written.
        let evaluated = pipeline.evaluate_batch(stalled).await.expect("evaluate");
        let plan =
            store.close_batch(&evaluated, pipeline.policy(), smart_task::clock::now_ms(), "A").await.expect("close");
        assert!(plan.fates.iter().all(|(_, f)| *f == Fate::Stale), "{:?}", plan.fates);
        assert!(plan.decisions.is_empty() && plan.revocations.is_empty() && plan.events.is_empty());
        let stats = pipeline.run_batch("B").await.expect("batch");
        assert_eq!((stats.claimed, stats.closed), (1, 1));
    });
    assert_exactly_once(&env, 2, Some(3)); // D-1 with its sub-delega D-3, and D-6
    assert_eq!(env.sql("SELECT COUNT(*) FROM events WHERE kind = 'ripresa_lavorazione'")[0][0], 2);
}

fn a_daemon_killed_mid_batch_loses_nothing_and_decides_nothing_twice(db: Db) {
    let env = Env::with(db, Settings { lease_seconds: 1, batch_size: 50, ..Default::default() });
    let n = 3000;
    synthetic(&env, n);
    let closed = || env.sql("SELECT COUNT(*) FROM requests WHERE stato = 'chiusa'")[0][0].as_i64().unwrap_or(0);
    let leased = || env.sql("SELECT COUNT(*) FROM requests WHERE lease_token IS NOT NULL")[0][0].as_i64().unwrap_or(0);
    // Kill the daemon with claimed requests in flight. A kill can land between two batches (nothing leased):
    // then the next daemon takes over and is killed again, until one kill lands mid-batch.
    let mut killed_mid_batch = false;
    for _ in 0..10 {
        let before = closed();
        let mut child = env.command(&["run"]).stdout(Stdio::null()).stderr(Stdio::null()).spawn().expect("spawn");
        let deadline = Instant::now() + Duration::from_secs(60);
        while closed() < before + 100 {
            assert!(Instant::now() < deadline, "the daemon made no progress");
            std::thread::sleep(Duration::from_millis(5));
        }
        kill(child.id(), "KILL");
        child.wait().expect("wait");
        assert!(closed() < n as i64, "killed too late to test anything");
        if leased() > 0 {
            killed_mid_batch = true;
            break;
        }
    }
    assert!(killed_mid_batch, "no kill landed while requests were claimed");
    // A new daemon takes the expired leases over and finishes.
    env.decide_all();
    assert_exactly_once(&env, n as i64, None);
    assert_each_esito_recorded_once(&env, n as i64);
}

/// A copy of the shipped rules plus a task whose rule is `body`.
fn parked_rule_failure(db: Db, settings: impl FnOnce(std::path::PathBuf) -> Settings, body: &str, expected_kind: &str) {
    let rules = tempfile::tempdir().expect("tempdir");
    common::rules_with_hostile_task(rules.path(), "PROVA_CICLO", body);
    let env = Env::with(db, settings(rules.path().to_path_buf()));
    env.import_examples();
    let looping = env.submit(&common::hostile_request("PROVA_CICLO"));
    let normal = env.submit(&rdi("RSSMRA80A01H501U", "AZIENDA", "1234567890", "VRDGPP80A41H501Y", ""));
    let started = Instant::now();
    env.decide_all();
    assert!(started.elapsed() < Duration::from_secs(30));
    // The daemon went on: the other request is decided.
    assert_eq!(env.show(normal[0]["protocollo"].as_str().expect("p"))["esito"], "accolta");
    // The looping one is parked for an operator with the error visible.
    let view = env.show(looping[0]["protocollo"].as_str().expect("p"));
    assert_eq!(view["stato"], "in_carico", "{view:#}");
    assert_eq!(view["sospesa"], "errore", "{view:#}");
    let error = view["errore"].as_str().expect("errore");
    assert!(error.starts_with(expected_kind) && error.contains("PROVA_CICLO@"), "{error}");
    let kinds: Vec<&str> =
        view["eventi"].as_array().expect("eventi").iter().filter_map(|e| e["tipo"].as_str()).collect();
    assert_eq!(kinds, ["protocollazione", "smistamento", "errore_regola", "sospesa_errore_regola"]);
    assert!(codes(&view).is_empty());
    let readable = env.ok(&["show", looping[0]["protocollo"].as_str().expect("p")]);
    assert!(readable.contains("sospesa per errore della regola") && readable.contains(expected_kind), "{readable}");
}

fn an_infinite_loop_is_stopped_by_the_operation_budget_and_parked(db: Db) {
    parked_rule_failure(
        db,
        |rules_dir| Settings { rules_dir, max_failures: 2, ..Default::default() },
        "fn decide(req, ctx) { loop { } }",
        "budget",
    );
}

fn a_rule_past_its_deadline_is_stopped_and_parked(db: Db) {
    parked_rule_failure(
        db,
        |rules_dir| Settings {
            rules_dir,
            max_failures: 2,
            max_operations: 10_000_000_000,
            deadline_ms: 50,
            ..Default::default()
        },
        "fn decide(req, ctx) { let x = 0; while true { x += 1; } }",
        "timeout",
    );
}

fn a_rule_error_names_the_rule_version_and_line(db: Db) {
    parked_rule_failure(
        db,
        |rules_dir| Settings { rules_dir, max_failures: 2, ..Default::default() },
        // An index out of range: a runtime error no linter sees.
        "fn decide(req, ctx) {\n    let uno = [1];\n    check(\"X-01\", uno[uno.len() + 4] == 1);\n}",
        "error",
    );
}

fn sigterm_stops_claiming_releases_leases_and_exits_zero(db: Db) {
    let env = Env::with(db, Settings { batch_size: 20, ..Default::default() });
    synthetic(&env, 1500);
    let child = env.command(&["run"]).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().expect("spawn");
    let deadline = Instant::now() + Duration::from_secs(60);
    while env.sql("SELECT COUNT(*) FROM requests WHERE stato = 'chiusa'")[0][0].as_i64().unwrap_or(0) < 100 {
        assert!(Instant::now() < deadline, "no progress");
        std::thread::sleep(Duration::from_millis(5));
    }
    kill(child.id(), "TERM");
    let out = child.wait_with_output().expect("wait");
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("SIGTERM"));
    assert_eq!(env.sql("SELECT COUNT(*) FROM requests WHERE lease_token IS NOT NULL")[0][0], 0, "no lease left behind");
    // What was not decided is still queued and is decided by the next run, once.
    env.decide_all();
    let counts: HashMap<String, i64> = env
        .sql("SELECT stato, COUNT(*) FROM requests GROUP BY stato")
        .into_iter()
        .map(|r| (r[0].as_str().unwrap_or("").to_string(), r[1].as_i64().unwrap_or(0)))
        .collect();
    assert_eq!(counts.get("chiusa"), Some(&1500), "{counts:?}");
    assert_exactly_once(&env, 1500, None);
    assert_each_esito_recorded_once(&env, 1500);
}

/// Runs the daemon until nothing is left to decide, failing the test if it takes longer than `limit` (a
/// livelocked pipeline never gets idle).
fn decide_all_within(env: &Env, limit: Duration) {
    let out = common::output_within(&mut env.command(&["run", "--exit-when-idle"]), limit);
    assert!(out.status.success(), "{}", common::stderr(&out));
}

/// The id of the synthetic request `i` (see [`synthetic`]).
fn synthetic_id(env: &Env, i: usize) -> i64 {
    env.sql(&format!("SELECT id FROM requests WHERE chiave_idempotenza = 'bench-{i}'"))[0][0].as_i64().expect("id")
}

/// A request the database refused to handle, retried and then parked, with its error visible in `show`.
fn assert_failed_alone(env: &Env, id: i64, expected: &str) {
    let view = env.show(&id.to_string());
    assert_eq!((&view["stato"], &view["sospesa"]), (&Value::from("in_carico"), &Value::from("errore")), "{view:#}");
    let error = view["errore"].as_str().expect("errore");
    assert!(error.starts_with("database: ") && error.contains(expected), "{error}");
    let kinds: Vec<&str> =
        view["eventi"].as_array().expect("eventi").iter().filter_map(|e| e["tipo"].as_str()).collect();
    assert_eq!(kinds, ["protocollazione", "smistamento", "errore_regola", "sospesa_errore_regola"]);
    assert_eq!(
        env.sql(&format!("SELECT failures, lease_token FROM requests WHERE id = {id}"))[0],
        [2.into(), Value::Null]
    );
    assert_eq!(env.sql(&format!("SELECT COUNT(*) FROM decisions WHERE request_id = {id}"))[0][0], 0);
}

/// Every request but `poison` closed once, with one decision each.
fn assert_others_closed(env: &Env, n: usize, poison: i64) {
    let closed = format!("SELECT COUNT(*) FROM requests WHERE stato = 'chiusa' AND id <> {poison}");
    assert_eq!(env.sql(&closed)[0][0], n as i64 - 1);
    assert_eq!(env.sql("SELECT COUNT(*) FROM decisions")[0][0], n as i64 - 1);
    assert!(env.sql("SELECT request_id FROM decisions GROUP BY request_id HAVING COUNT(*) > 1").is_empty());
}

/// A trigger that refuses the decision of one request: its close fails on either backend, as a value the
/// database cannot store (a NUL byte on PostgreSQL) would.
fn refuse_decisions_of(env: &Env, id: i64) {
    match env.backend {
        Db::Sqlite => {
            env.sql(&format!(
                "CREATE TRIGGER poison BEFORE INSERT ON decisions FOR EACH ROW WHEN NEW.request_id = {id}
                 BEGIN SELECT RAISE(ABORT, 'rifiutata dal trigger di prova'); END"
            ));
        }
        Db::Postgres => {
            env.sql(&format!(
                "CREATE FUNCTION poison() RETURNS trigger LANGUAGE plpgsql AS $$
                 BEGIN IF NEW.request_id = {id} THEN RAISE EXCEPTION 'rifiutata dal trigger di prova'; END IF;
                 RETURN NEW; END $$"
            ));
            env.sql("CREATE TRIGGER poison BEFORE INSERT ON decisions FOR EACH ROW EXECUTE FUNCTION poison()");
        }
    }
}

fn a_request_whose_close_the_database_refuses_fails_alone_and_is_parked(db: Db) {
    let env = Env::with(db, Settings { max_failures: 2, batch_size: 64, workers: 1, ..Default::default() });
    let n = 40;
    synthetic(&env, n);
    let poison = synthetic_id(&env, 5);
    refuse_decisions_of(&env, poison);
    decide_all_within(&env, Duration::from_secs(60));
    assert_others_closed(&env, n, poison);
    assert_failed_alone(&env, poison, "chiusura non registrata");
    assert!(env.show(&poison.to_string())["errore"].as_str().expect("errore").contains("rifiutata dal trigger"));
}

fn a_request_whose_facts_cannot_be_read_fails_alone_and_is_parked(db: Db) {
    let env = Env::with(db, Settings { max_failures: 2, batch_size: 64, workers: 1, ..Default::default() });
    let n = 40;
    synthetic(&env, n);
    let poison = synthetic_id(&env, 3);
    // The company of request 3 holds a value its reader refuses (written around the import's checks).
    env.sql("UPDATE aziende SET rappresentanti_legali = 'non JSON' WHERE matricola = '5000000003'");
    decide_all_within(&env, Duration::from_secs(60));
    assert_others_closed(&env, n, poison);
    assert_failed_alone(&env, poison, "lettura dei fatti non riuscita");
    assert!(
        env.show(&poison.to_string())["errore"].as_str().expect("errore").contains("aziende.rappresentanti_legali")
    );
}

/// Eight queued requests, one batch, of a task whose rule runs on each until its deadline (`deadline_ms` of
/// `settings`; the operation budget is out of reach). The rules directory lives as long as the returned value.
fn eight_slow_requests(db: Db, settings: Settings) -> (tempfile::TempDir, Env) {
    let rules = tempfile::tempdir().expect("tempdir");
    common::rules_with_hostile_task(
        rules.path(),
        "PROVA_LENTA",
        "fn decide(req, ctx) { let x = 0; while true { x += 1; } }",
    );
    let settings =
        Settings { rules_dir: rules.path().to_path_buf(), batch_size: 8, max_operations: 10_000_000_000, ..settings };
    let env = Env::with(db, settings);
    let one = format!("- {}\n", common::hostile_request("PROVA_LENTA").trim_end().replace('\n', "\n  "));
    env.submit(&one.repeat(8));
    (rules, env)
}

fn a_batch_slower_than_its_lease_keeps_it_and_its_failures_count(db: Db) {
    // 8 rules running to their 500 ms deadline: a batch takes 4 s, twice its lease. Without renewal the other
    // worker takes the batch over while it is decided, its close is fenced out and nothing is ever parked.
    let settings = Settings { lease_seconds: 2, workers: 2, max_failures: 2, deadline_ms: 500, ..Default::default() };
    let (_rules, env) = eight_slow_requests(db, settings);
    decide_all_within(&env, Duration::from_secs(90));
    assert_eq!(env.sql("SELECT COUNT(*) FROM events WHERE kind = 'ripresa_lavorazione'")[0][0], 0, "no takeover");
    assert_eq!(
        env.sql("SELECT COUNT(*) FROM requests WHERE parked = 'errore' AND failures = 2 AND claims = 2")[0][0],
        8,
        "{:?}",
        env.sql("SELECT id, parked, failures, claims FROM requests")
    );
    for kind in ["errore_regola", "sospesa_errore_regola"] {
        let per_request = format!("SELECT COUNT(*) FROM events WHERE kind = '{kind}' GROUP BY request_id");
        assert_eq!(env.sql(&per_request), vec![vec![Value::from(1)]; 8], "{kind}");
    }
    let view = env.show("1");
    assert!(view["errore"].as_str().expect("errore").starts_with("timeout"), "{view:#}");
}

fn sigterm_mid_batch_closes_what_is_decided_and_releases_the_rest(db: Db) {
    let (_rules, env) = eight_slow_requests(db, Settings { workers: 1, deadline_ms: 1_000, ..Default::default() });
    let child = env.command(&["run"]).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().expect("spawn");
    let deadline = Instant::now() + Duration::from_secs(60);
    while env.sql("SELECT COUNT(*) FROM events WHERE kind = 'smistamento'")[0][0] != 8 {
        assert!(Instant::now() < deadline, "no claim");
        std::thread::sleep(Duration::from_millis(5));
    }
    // The batch takes 8 s; SIGTERM in its second rule call.
    std::thread::sleep(Duration::from_millis(1_500));
    let stopping = Instant::now();
    kill(child.id(), "TERM");
    let out = child.wait_with_output().expect("wait");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stopping.elapsed() < Duration::from_secs(5), "waited for the whole batch: {:?}", stopping.elapsed());
    assert!(stderr.contains("closing what is decided, releasing the rest"), "{stderr}");
    assert_eq!(env.sql("SELECT COUNT(*) FROM requests WHERE lease_token IS NOT NULL")[0][0], 0, "no lease left behind");
    let tried = env.sql("SELECT COUNT(*) FROM requests WHERE failures = 1")[0][0].as_i64().unwrap_or(0);
    let untouched = env.sql("SELECT COUNT(*) FROM requests WHERE failures = 0")[0][0].as_i64().unwrap_or(0);
    assert!((1..8).contains(&tried) && tried + untouched == 8, "{tried} decided, {untouched} released");
}

#[test]
fn check_config_refuses_timings_the_workers_cannot_keep() {
    let cases: [(Settings, &str, &[&str]); 2] = [
        (
            Settings { lease_seconds: 0, ..Default::default() },
            "",
            &["worker.lease_seconds", "renews its leases every third of `lease_seconds`"],
        ),
        (
            Settings { deadline_ms: 5_000, ..Default::default() },
            "  shutdown_grace_seconds: 3\n",
            &["worker.shutdown_grace_seconds", "`rules.deadline_ms` of 5000 ms", "at least 6 s"],
        ),
    ];
    for (settings, extra, expected) in cases {
        let env = Env::with(Db::Sqlite, settings);
        let text = std::fs::read_to_string(&env.config).expect("config");
        std::fs::write(&env.config, text.replace("  max_failures:", &format!("{extra}  max_failures:")))
            .expect("write");
        for command in [&["check-config"][..], &["run", "--exit-when-idle"]] {
            let out = env.run(command);
            let stderr = common::stderr(&out);
            assert_eq!(out.status.code(), Some(2), "{command:?}: {stderr}");
            for e in expected {
                assert!(stderr.contains(e) && stderr.contains("smart-task.yaml"), "{command:?}: {e}: {stderr}");
            }
        }
        assert!(!env.path("smart-task.db").exists(), "a refused configuration opens no database");
    }
}

backends!(
    a_stale_worker_cannot_close_what_another_took_over,
    a_daemon_killed_mid_batch_loses_nothing_and_decides_nothing_twice,
    an_infinite_loop_is_stopped_by_the_operation_budget_and_parked,
    a_rule_past_its_deadline_is_stopped_and_parked,
    a_rule_error_names_the_rule_version_and_line,
    sigterm_stops_claiming_releases_leases_and_exits_zero,
    a_request_whose_close_the_database_refuses_fails_alone_and_is_parked,
    a_request_whose_facts_cannot_be_read_fails_alone_and_is_parked,
    a_batch_slower_than_its_lease_keeps_it_and_its_failures_count,
    sigterm_mid_batch_closes_what_is_decided_and_releases_the_rest,
);
