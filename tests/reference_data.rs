//! Re-importing the archive's reference data never silently undoes what accepted requests changed: rows an
//! effect changed after the file's `snapshot` (or ever, without one) are kept and listed, unless the import is
//! told to overwrite them; `padre` chains that loop through stored deleghe are refused.

mod common;

use common::{Db, Env, rdi, stderr};
use serde_json::Value;

const VERDI: &str = "VRDGPP80A41H501Y"; // consultant: delega D-1 on 1234567890, sub-delega D-3 under it

/// The examples' reference data with `snapshot` set.
fn examples_with_snapshot(env: &Env, snapshot: &str) -> String {
    let base = std::fs::read_to_string(common::repo().join("examples/facts.yaml")).expect("examples");
    let text = base.replacen("version: 1", &format!("version: 1\nsnapshot: \"{snapshot}\""), 1);
    env.write("facts.yaml", &text).to_str().expect("path").to_string()
}

/// Verdi renounces her delega on 1234567890: D-1 and D-3 revoked, her contact bound to that position (C-2)
/// disabled. Returns the request's protocol number.
fn renounce(env: &Env) -> String {
    env.import_examples();
    let submitted = env.submit(&rdi(VERDI, "INTERMEDIARIO", "1234567890", VERDI, ""));
    env.decide_all();
    let protocollo = submitted[0]["protocollo"].as_str().expect("protocollo").to_string();
    assert_eq!(env.show(&protocollo)["esito"], "accolta");
    protocollo
}

fn states(env: &Env) -> Vec<Vec<Value>> {
    env.sql(
        "SELECT (SELECT stato FROM deleghe WHERE id = 'D-1'), (SELECT stato FROM deleghe WHERE id = 'D-3'),
                (SELECT stato FROM contatti WHERE id = 'C-2')",
    )
}

fn revoked() -> Vec<Vec<Value>> {
    vec![vec![Value::from("REVOCATA"), Value::from("REVOCATA"), Value::from("DISABILITATO")]]
}

fn a_reimport_keeps_the_rows_accepted_requests_changed_and_lists_them(db: Db) {
    let env = Env::new(db);
    let protocollo = renounce(&env);
    let examples = common::repo().join("examples/facts.yaml");
    let out = env.ok(&["facts", "import", examples.to_str().expect("path")]);
    assert_eq!(states(&env), revoked(), "{out}");
    for expected in [
        "3 row(s) changed by accepted requests ever (the file has no `snapshot`) kept",
        &format!("deleghe[0] (id D-1): changed by {protocollo} on "),
        "deleghe[2] (id D-3)",
        "contatti[1] (id C-2)",
        "differs in data_revoca, stato",
        "--overwrite-effects",
    ] {
        assert!(out.contains(expected), "`{expected}` in:\n{out}");
    }
    assert!(!out.contains("verdi@example.it"), "a contact's value is never quoted:\n{out}");
    // A file extracted before the decision would undo it too: kept.
    let before = examples_with_snapshot(&env, "2026-01-01T00:00:00+01:00");
    let out = env.ok(&["facts", "import", &before]);
    assert_eq!(states(&env), revoked(), "{out}");
    assert!(out.contains("after the snapshot 2026-01-01T00:00:00+01:00 kept"), "{out}");
    // Extracted after it, the archive has seen the effect: its rows are the newer ones and win.
    let after = examples_with_snapshot(&env, &chrono::Utc::now().to_rfc3339());
    let out = env.ok(&["facts", "import", &after]);
    assert!(!out.contains("row(s) changed"), "{out}");
    let active = vec![vec![Value::from("ATTIVA"), Value::from("ATTIVA"), Value::from("ANOMALO")]];
    assert_eq!(states(&env), active);
}

fn overwrite_effects_takes_the_files_rows_and_says_so(db: Db) {
    let env = Env::new(db);
    renounce(&env);
    let examples = common::repo().join("examples/facts.yaml");
    let examples = examples.to_str().expect("path");
    let out = env.ok(&["facts", "import", "--overwrite-effects", examples]);
    assert!(
        out.contains("3 row(s) changed by accepted requests ever (the file has no `snapshot`) overwritten"),
        "{out}"
    );
    assert_eq!(states(&env), vec![vec![Value::from("ATTIVA"), Value::from("ATTIVA"), Value::from("ANOMALO")]]);
    // The rows are the archive's again: a later import has nothing to keep.
    let out = env.ok(&["facts", "import", examples]);
    assert!(!out.contains("row(s) changed"), "{out}");
    // A request accepted afterwards marks its rows again.
    env.submit(&rdi(VERDI, "INTERMEDIARIO", "1234567890", VERDI, ""));
    env.decide_all();
    let out = env.ok(&["facts", "import", examples]);
    assert!(out.contains("3 row(s) changed"), "{out}");
    assert_eq!(states(&env), revoked());
}

fn a_padre_chain_looping_through_stored_deleghe_is_refused(db: Db) {
    let env = Env::new(db);
    env.import_examples();
    // D-3 is stored as a sub-delega of D-1: making D-1 a sub-delega of D-3 closes a loop.
    let file = env.write(
        "loop.yaml",
        "version: 1\ndeleghe:\n  - { id: D-1, matricola: \"1234567890\", delegato_cf: VRDGPP80A41H501Y, tipo: SUBDELEGA, padre: D-3, stato: ATTIVA, data_inizio: 2022-01-10 }\n",
    );
    let out = env.run(&["facts", "import", file.to_str().expect("path")]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(
            "deleghe[0] (id D-1): field `padre`: cyclic chain of padre through the stored deleghe: D-1 -> D-3 -> D-1"
        ),
        "{}",
        stderr(&out)
    );
    assert_eq!(env.sql("SELECT tipo FROM deleghe WHERE id = 'D-1'")[0][0], "INTERMEDIARIO", "nothing imported");
}

backends!(
    a_reimport_keeps_the_rows_accepted_requests_changed_and_lists_them,
    overwrite_effects_takes_the_files_rows_and_says_so,
    a_padre_chain_looping_through_stored_deleghe_is_refused,
);
