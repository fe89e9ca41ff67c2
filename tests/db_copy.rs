//! `db copy`: a SQLite database with decided requests moves into PostgreSQL whole — every row of every table,
//! the same `show` from both, identity sequences and protocol counters that continue — and a target that holds
//! rows is refused with nothing written. Needs PostgreSQL (tests/common/pg.rs); skipped without it.

mod common;

use std::process::Output;

use common::{Db, Env, TestDb, pg, rdi, sql, stderr};
use serde_json::Value;

/// Every table of the schema, with the columns that order its rows.
const TABLES: [(&str, &str); 25] = [
    ("sedi", "codice"),
    ("aziende", "matricola"),
    ("persone", "cf"),
    ("intermediari", "cf"),
    ("requests", "id"),
    ("deleghe", "id"),
    ("contatti", "id"),
    ("events", "id"),
    ("decisions", "id"),
    ("applied_effects", "id"),
    ("attachment_contents", "sha256"),
    ("attachments", "id"),
    ("outbox", "id"),
    ("protocol_counters", "sede, anno"),
    ("subject_versions", "subject"),
    ("rule_sets", "id"),
    ("rule_status", "instance"),
    ("rule_sources", "version"),
    ("cron_jobs", "name"),
    ("pilot_members", "gruppo, cf"),
    ("jti_seen", "jti"),
    ("webhook_subscriptions", "id"),
    ("webhook_dead_letters", "subscription_id, event_id"),
    ("questionnaire_invitations", "token_sha256"),
    ("questionnaire_answers", "id"),
];

/// Runs the binary on the database at `url` (the configuration's other settings stay).
fn run_on(env: &Env, url: &str, args: &[&str]) -> Output {
    env.command(args).env("SMART_TASK_DATABASE_URL", url).output().expect("run smart-taskd")
}

fn ok_on(env: &Env, url: &str, args: &[&str]) -> String {
    let out = run_on(env, url, args);
    assert!(out.status.success(), "smart-taskd {args:?} on {url} failed: {}", stderr(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn copy(env: &Env, to: &str) -> Output {
    env.run(&["db", "copy", "--from", env.url(), "--to", to, "--json"])
}

/// Every row of a table, in a stable order (sorted here, so that collations do not matter).
fn rows(url: &str, table: &str, order: &str) -> Vec<String> {
    let mut rows: Vec<String> = sql(url, &format!("SELECT * FROM {table} ORDER BY {order}"))
        .iter()
        .map(|r| serde_json::to_string(r).expect("json"))
        .collect();
    rows.sort();
    rows
}

fn count(url: &str, table: &str) -> i64 {
    sql(url, &format!("SELECT COUNT(*) FROM {table}"))[0][0].as_i64().expect("count")
}

fn counts(url: &str) -> Vec<i64> {
    TABLES.iter().map(|(t, _)| count(url, t)).collect()
}

fn max_id(url: &str, table: &str) -> i64 {
    sql(url, &format!("SELECT MAX(id) FROM {table}"))[0][0].as_i64().expect("max id")
}

/// The example world with every example request submitted and decided, plus a chain of sub-deleghe whose
/// grandchild was stored before its parent (so that parents-first takes more than one pass).
fn decided_examples() -> Env {
    let env = Env::new(Db::Sqlite);
    env.import_examples();
    let mut files: Vec<_> = std::fs::read_dir(common::repo().join("examples/requests"))
        .expect("examples/requests")
        .flatten()
        .map(|e| e.path())
        .collect();
    files.sort();
    let diffida = common::repo().join("examples/allegati/diffida.pdf");
    for f in &files {
        // The referral that says "si allega diffida" carries it.
        let attach = f.to_str().is_some_and(|p| p.contains("rdi-07"));
        let mut args = vec!["submit", f.to_str().expect("utf-8 path")];
        if attach {
            args.extend(["--allegato", diffida.to_str().expect("utf-8 path")]);
        }
        env.ok(&args);
    }
    env.decide_all();
    env.sql(
        "INSERT INTO deleghe (id, matricola, delegato_cf, tipo, stato, data_inizio, padre) VALUES
         ('D-C3', '1234567890', 'VRDGPP80A41H501Y', 'SUBDELEGA', 'ATTIVA', '2024-01-01', 'D-C2'),
         ('D-C2', '1234567890', 'VRDGPP80A41H501Y', 'SUBDELEGA', 'ATTIVA', '2024-01-01', 'D-C1'),
         ('D-C1', '1234567890', 'VRDGPP80A41H501Y', 'INTERMEDIARIO', 'ATTIVA', '2024-01-01', NULL)",
    );
    env
}

#[test]
fn a_decided_sqlite_database_moves_to_postgresql_whole() {
    if pg::shared_or_skip(concat!(module_path!(), "::a_decided_sqlite_database_moves_to_postgresql_whole")).is_none() {
        return;
    }
    let env = decided_examples();
    let from = env.url().to_string();
    let target = TestDb::new(Db::Postgres, env.dir.path(), "unused.db");
    let to = target.url().to_string();
    let source_file = env.path("smart-task.db");
    let before = std::fs::read(&source_file).expect("read the source");
    let source_counts = counts(&from);
    assert!(
        source_counts.iter().filter(|&&n| n > 0).count() >= 12,
        "the example run fills the tables: {source_counts:?}"
    );

    let out = copy(&env, &to);
    assert!(out.status.success(), "db copy failed: {}", stderr(&out));
    let report: Value = serde_json::from_slice(&out.stdout).expect("db copy --json");
    let reported: Vec<(String, i64, i64)> = report["tables"]
        .as_array()
        .expect("tables")
        .iter()
        .map(|t| {
            (
                t["table"].as_str().expect("table").to_string(),
                t["source"].as_i64().expect("n"),
                t["target"].as_i64().expect("n"),
            )
        })
        .collect();
    let expected: Vec<(String, i64, i64)> =
        TABLES.iter().zip(&source_counts).map(|((t, _), &n)| ((*t).to_string(), n, n)).collect();
    assert_eq!(reported, expected);
    assert_eq!(counts(&to), source_counts);
    for (table, order) in TABLES {
        assert_eq!(rows(&to, table, order), rows(&from, table, order), "{table}: the same rows");
    }
    assert_eq!(std::fs::read(&source_file).expect("read the source"), before, "the source is not written");
    assert_eq!(count(&to, "attachment_contents"), 1, "the example's attachment is copied with its bytes");

    // The same views from both databases.
    let list = ok_on(&env, &from, &["list", "--json", "--limit", "1000"]);
    assert_eq!(ok_on(&env, &to, &["list", "--json", "--limit", "1000"]), list);
    let listed: Vec<Value> = serde_json::from_str(&list).expect("list --json");
    assert_eq!(listed.len() as i64, count(&from, "requests"));
    for r in &listed {
        let p = r["protocollo"].as_str().expect("protocollo");
        assert_eq!(ok_on(&env, &to, &["show", p, "--json"]), ok_on(&env, &from, &["show", p, "--json"]), "show {p}");
    }
    for args in
        [["operator", "list", "--json"], ["notifications", "list", "--json"], ["fascicolo", "1234567890", "--json"]]
    {
        assert_eq!(ok_on(&env, &to, &args), ok_on(&env, &from, &args), "{args:?}");
    }

    // Work continues on PostgreSQL: a fresh id, the next protocol number of its sede, fresh event and decision ids.
    let (last_request, last_event, last_decision, last_outbox) =
        (max_id(&from, "requests"), max_id(&from, "events"), max_id(&from, "decisions"), max_id(&from, "outbox"));
    let request = env.write("new.yaml", &rdi("RSSMRA80A01H501U", "AZIENDA", "1234567890", "VRDGPP80A41H501Y", ""));
    let stored: Vec<Value> =
        serde_json::from_str(&ok_on(&env, &to, &["submit", request.to_str().expect("path"), "--json"])).expect("json");
    assert_eq!(stored[0]["id"], last_request + 1);
    let protocollo = stored[0]["protocollo"].as_str().expect("protocollo").to_string();
    let parts: Vec<&str> = protocollo.split('.').collect();
    let last =
        sql(&from, &format!("SELECT last FROM protocol_counters WHERE sede = '{}' AND anno = {}", parts[0], parts[1]));
    assert_eq!(parts[2].parse::<i64>().expect("progressive"), last[0][0].as_i64().expect("last") + 1, "{protocollo}");
    ok_on(&env, &to, &["run", "--exit-when-idle"]);
    let view: Value = serde_json::from_str(&ok_on(&env, &to, &["show", &protocollo, "--json"])).expect("show --json");
    assert_eq!(view["stato"], "chiusa", "{view}");
    let fresh = |table: &str, after: i64| {
        sql(&to, &format!("SELECT MIN(id) FROM {table} WHERE request_id = {}", last_request + 1))[0][0]
            .as_i64()
            .is_some_and(|id| id == after + 1)
    };
    assert!(fresh("events", last_event), "events continue after {last_event}");
    assert!(fresh("decisions", last_decision), "decisions continue after {last_decision}");
    assert!(fresh("outbox", last_outbox), "outbox continues after {last_outbox}");
    assert_eq!(counts(&from), source_counts, "the source keeps what it had");

    // A second copy into the target, which now holds rows, is refused and writes nothing.
    let now = counts(&to);
    let out = copy(&env, &to);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let message = stderr(&out);
    assert!(
        message.contains("not empty") && message.contains("requests (") && message.contains("wrote nothing"),
        "{message}"
    );
    assert!(!message.contains("cron_jobs"), "only the tables holding rows are named: {message}");
    assert_eq!(counts(&to), now);
}

#[test]
fn a_failed_copy_leaves_the_target_empty() {
    if pg::shared_or_skip(concat!(module_path!(), "::a_failed_copy_leaves_the_target_empty")).is_none() {
        return;
    }
    let env = decided_examples();
    // A sub-delega whose parent is gone (written with the foreign keys off): PostgreSQL would refuse it, so
    // the copy stops after the tables before it were written, and rolls them back.
    env.sql(
        "PRAGMA foreign_keys = OFF; INSERT INTO deleghe (id, matricola, delegato_cf, tipo, stato, data_inizio, padre)
         VALUES ('D-ORFANA', '1234567890', 'VRDGPP80A41H501Y', 'SUBDELEGA', 'ATTIVA', '2024-01-01', 'D-SPARITA')",
    );
    assert_eq!(count(env.url(), "deleghe"), 14);
    let target = TestDb::new(Db::Postgres, env.dir.path(), "unused.db");
    let out = copy(&env, target.url());
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("D-SPARITA"), "{}", stderr(&out));
    assert_eq!(counts(target.url()), vec![0; TABLES.len()], "one transaction: nothing was written");
    // Once the source is repaired, the same (migrated, empty) target takes the copy.
    env.sql("DELETE FROM deleghe WHERE id = 'D-ORFANA'");
    let out = copy(&env, target.url());
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(counts(target.url()), counts(env.url()));
}

#[test]
fn wrong_urls_and_a_source_not_migrated_are_refused() {
    let env = Env::new(Db::Sqlite);
    env.ok(&["migrate"]);
    let sqlite = env.url().to_string();
    for (args, expected) in [
        (["--from", "postgres://u:segreta@localhost/st", "--to", "postgres://localhost/st"], "--from must be a SQLite"),
        (["--from", sqlite.as_str(), "--to", "sqlite:altro.db"], "--to must be a PostgreSQL"),
        (["--from", sqlite.as_str(), "--to", "mysql://localhost/st"], "--to must be a PostgreSQL"),
    ] {
        let mut all = vec!["db", "copy"];
        all.extend(args);
        let out = env.run(&all);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(expected), "{args:?}: {}", stderr(&out));
        assert!(!stderr(&out).contains("segreta"), "a URL's password is never printed back");
    }

    let Some(server) =
        pg::shared_or_skip(concat!(module_path!(), "::wrong_urls_and_a_source_not_migrated_are_refused"))
    else {
        return;
    };
    let target = TestDb::new(Db::Postgres, env.dir.path(), "unused.db");
    let missing = smart_task::config::sqlite_url(&env.path("nessuno.db"));
    let out = env.run(&["db", "copy", "--from", &missing, "--to", target.url()]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("no SQLite database at"), "{}", stderr(&out));
    assert!(!env.path("nessuno.db").exists(), "a missing source is not created");

    // A source one migration behind: refused, with what to do; the target is left as it was.
    env.sql("DELETE FROM _sqlx_migrations WHERE version = (SELECT MAX(version) FROM _sqlx_migrations)");
    let out = env.run(&["db", "copy", "--from", &sqlite, "--to", target.url()]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("smart-taskd migrate"), "{}", stderr(&out));
    let tables =
        sql(target.url(), "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = current_schema()");
    assert_eq!(tables[0][0], 0, "nothing created in the target");
    let _ = server;
}
