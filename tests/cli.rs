//! The command line as operators use it: listings into a closed pipe, filters that refuse typos, read-only
//! commands that neither create nor migrate a database, and `check-config` on a bad log level.

mod common;

use std::process::Stdio;

use common::{Db, Env, rdi, stderr};
use serde_json::Value;

const VERDI: &str = "VRDGPP80A41H501Y";

/// Runs a command whose standard output is closed before it writes (`smart-taskd list | head -0`).
fn into_closed_pipe(env: &Env, args: &[&str]) -> std::process::Output {
    let mut child = env
        .command(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn smart-taskd");
    drop(child.stdout.take());
    child.wait_with_output().expect("wait")
}

fn listings_into_a_closed_pipe_end_quietly_with_exit_0(db: Db) {
    let env = Env::new(db);
    env.import_examples();
    let stored = env.submit(&rdi("RSSMRA80A01H501U", "AZIENDA", "1234567890", VERDI, ""));
    let p = stored[0]["protocollo"].as_str().expect("protocollo");
    for args in [
        vec!["list"],
        vec!["list", "--json"],
        vec!["show", p],
        vec!["operator", "list"],
        vec!["fascicolo", "1234567890"],
        vec!["notifications", "list"],
        vec!["rules", "docs"],
    ] {
        let out = into_closed_pipe(&env, &args);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {}", stderr(&out));
        assert!(!stderr(&out).contains("panicked"), "{args:?}: {}", stderr(&out));
    }
}

fn list_refuses_an_unknown_task_and_accepts_every_state(db: Db) {
    let env = Env::new(db);
    env.import_examples();
    let a = env.submit(&rdi("RSSMRA80A01H501U", "AZIENDA", "1234567890", VERDI, ""));
    env.submit(&rdi("FRRLCU75D05H501G", "AZIENDA", "4567890123", "GLLSFN88H10L219C", ""));
    let withdrawn = a[0]["protocollo"].as_str().expect("protocollo");
    env.ok(&["annulla", withdrawn, "--richiedente", "RSSMRA80A01H501U"]);

    let out = env.run(&["list", "--task", "REVOCA_DELEGA_INTERMEDIARO"]);
    assert_eq!(out.status.code(), Some(2), "a typo is refused: {}", stderr(&out));
    assert!(
        stderr(&out).contains("REVOCA_DELEGA_INTERMEDIARO")
            && stderr(&out).contains("REVOCA_DELEGA_INTERMEDIARIO")
            && stderr(&out).contains("VARIAZIONE_CONTATTI_DIPENDENTE"),
        "names the typo and the known task types: {}",
        stderr(&out)
    );
    let by_task: Vec<Value> =
        serde_json::from_str(&env.ok(&["list", "--task", "REVOCA_DELEGA_INTERMEDIARIO", "--json"])).expect("json");
    assert_eq!(by_task.len(), 2);

    let annullate: Vec<Value> =
        serde_json::from_str(&env.ok(&["list", "--stato", "annullata", "--json"])).expect("json");
    assert_eq!(annullate.len(), 1, "{annullate:?}");
    assert_eq!(annullate[0]["protocollo"], withdrawn);
    assert_eq!(annullate[0]["esito"], "annullata");
    let aperte: Vec<Value> = serde_json::from_str(&env.ok(&["list", "--stato", "aperta", "--json"])).expect("json");
    assert_eq!(aperte.len(), 1);
    let out = env.run(&["list", "--stato", "sospesa"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("aperta, in_carico, chiusa, annullata"), "{}", stderr(&out));
}

/// The commands that only read, and the operators' commands: none may create or migrate a database.
fn readers() -> Vec<Vec<String>> {
    let rules = common::repo().join("rules").display().to_string();
    let commands: [&[&str]; 11] = [
        &["list"],
        &["show", "1"],
        &["explain", "1"],
        &["fascicolo", "1234567890"],
        &["operator", "list"],
        &["operator", "requeue", "1"],
        &["notifications", "list"],
        &["rules", "status"],
        &["rules", "shadow"],
        &["annulla", "1", "--richiedente", "RSSMRA80A01H501U"],
        &["replay", "--rules", &rules],
    ];
    commands.iter().map(|c| c.iter().map(|a| a.to_string()).collect()).collect()
}

fn tables(env: &Env) -> i64 {
    let query = match env.backend {
        Db::Sqlite => "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table'",
        Db::Postgres => "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = current_schema()",
    };
    env.sql(query)[0][0].as_i64().expect("count")
}

fn read_only_commands_neither_create_nor_migrate_a_database(db: Db) {
    let env = Env::new(db);
    for args in readers() {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = env.run(&args);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        match db {
            Db::Sqlite => assert!(
                err.contains(&format!("SQLite database {} does not exist", env.path("smart-task.db").display()))
                    && err.contains("smart-taskd migrate"),
                "{args:?}: {err}"
            ),
            Db::Postgres => {
                assert!(
                    err.contains("has no smart-task schema") && err.contains("smart-taskd migrate"),
                    "{args:?}: {err}"
                )
            }
        }
    }
    match db {
        Db::Sqlite => assert!(!env.path("smart-task.db").exists(), "no database file was created"),
        Db::Postgres => assert_eq!(tables(&env), 0, "no table was created"),
    }

    // A database one migration behind is refused naming both versions, and left as it is.
    env.ok(&["migrate"]);
    let latest = env.sql("SELECT MAX(version) FROM _sqlx_migrations")[0][0].as_i64().expect("version");
    env.sql(&format!("DELETE FROM _sqlx_migrations WHERE version = {latest}"));
    let previous = env.sql("SELECT MAX(version) FROM _sqlx_migrations")[0][0].as_i64().expect("version");
    let out = env.run(&["list"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!("is at migration {previous}, this smart-taskd expects migration {latest}")),
        "{}",
        stderr(&out)
    );
    assert_eq!(env.sql("SELECT MAX(version) FROM _sqlx_migrations")[0][0], previous, "not migrated");
}

fn show_prints_what_was_asked_and_every_comment_and_note(db: Db) {
    let env = Env::new(db);
    env.import_examples();
    let stored = env.submit(
        &rdi("RCCFNC79B12H501Q", "AZIENDA", "6789012345", VERDI, "note: Diffida allegata al protocollo\n")
            .replace("REVOCA\n", "ALTRO\n"),
    );
    env.decide_all();
    let p = stored[0]["protocollo"].as_str().expect("protocollo");
    env.ok(&["operator", "comment", p, "Allegare la diffida firmata, grazie.", "--operatore", "mbianchi"]);
    env.ok(&["operator", "close", p, "--esito", "accolta", "--nota", "Diffida verificata", "--operatore", "mbianchi"]);
    let text = env.ok(&["show", p]);
    for wanted in [
        "richiedente_cf: RCCFNC79B12H501Q",
        "matricola:  6789012345",
        "motivazione: ALTRO",
        "note:       Diffida allegata al protocollo",
        "testo: Allegare la diffida firmata, grazie.",
        "nota: Diffida verificata",
    ] {
        assert!(text.contains(wanted), "`{wanted}` is not in show:\n{text}");
    }
}

#[test]
fn check_config_refuses_an_unknown_log_level_naming_the_key_and_line() {
    let env = Env::without_db();
    let text = std::fs::read_to_string(&env.config).expect("config").replace("level: info", "level: verbose");
    std::fs::write(&env.config, &text).expect("write config");
    let line = text.lines().position(|l| l.contains("level: verbose")).expect("line") + 1;
    let out = env.run(&["check-config"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("log.level") && err.contains(&format!("line {line}")), "{err}");
    assert!(err.contains("`verbose` is not a level") && err.contains("off, error, warn, info, debug, trace"), "{err}");
}

backends!(
    listings_into_a_closed_pipe_end_quietly_with_exit_0,
    list_refuses_an_unknown_task_and_accepts_every_state,
    read_only_commands_neither_create_nor_migrate_a_database,
    show_prints_what_was_asked_and_every_comment_and_note,
);
