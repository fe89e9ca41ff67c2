//! Rule sets are promoted, not saved (`rules.activation: promoted`): `rules promote` refuses a candidate at
//! each gate (syntax, lint, a failing case, an unreached reason code) and records why; a candidate that flips
//! past decisions beyond the threshold waits for a second person's approval; once approved it goes live on
//! two running instances; a restart runs the last promoted set whatever the directory holds; `explain` of a
//! decision of a retired set quotes its lines, and `replay --version` names any set.

mod common;

use std::path::Path;

use common::daemon::{start_instance, stop, wait_for};
use common::{Db, Env, Settings, copy_dir, rdi, stderr};
use serde_json::Value;

const RULE: &str = "revoca_delega_intermediario/rule.rhai";
/// RDI-05 as shipped: never retroactive, and not before the delega began.
const STRICT: &str = "ok = check(\"RDI-05\", decorrenza >= ctx.today && decorrenza >= delega.data_inizio) && ok;";
/// The weakening of the issue: the "not retroactive" condition removed. Every case still passes.
const WEAK: &str = "ok = check(\"RDI-05\", decorrenza >= delega.data_inizio) && ok;";

fn promoted_env(db: Db) -> (tempfile::TempDir, Env) {
    let rules = tempfile::tempdir().expect("tempdir");
    copy_dir(&common::repo().join("rules"), rules.path());
    let settings = Settings { rules_dir: rules.path().to_path_buf(), activation: "promoted", ..Default::default() };
    let env = Env::with(db, settings);
    env.ok(&["migrate"]);
    env.import_examples();
    (rules, env)
}

/// A copy of the shipped rules with `edit` applied to `file`.
fn candidate(file: &str, edit: impl Fn(&str) -> String) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    copy_dir(&common::repo().join("rules"), dir.path());
    let path = dir.path().join(file);
    let text = std::fs::read_to_string(&path).expect("read");
    let edited = edit(&text);
    assert_ne!(edited, text, "the edit of {file} changed nothing: the shipped rules changed");
    std::fs::write(&path, edited).expect("write");
    dir
}

fn promote(env: &Env, dir: &Path, author: &str) -> std::process::Output {
    let dir = dir.to_str().expect("utf-8 path");
    env.run(&["rules", "promote", dir, "--author", author, "--reason", "prova di promozione"])
}

fn versions(env: &Env) -> Vec<Value> {
    serde_json::from_str(&env.ok(&["rules", "versions", "--json"])).expect("versions --json")
}

fn active_id(env: &Env) -> Option<i64> {
    versions(env).iter().find(|v| v["state"] == "active").and_then(|v| v["id"].as_i64())
}

/// A retroactive revocation from 2025-01-01 of the intermediary's delega on `matricola` (D-1 began on
/// 2022-01-10, D-8 on 2023-11-20), asked by the intermediary: Non Accolta by RDI-05 as shipped, Accolta when
/// weakened.
fn retroactive(env: &Env, matricola: &str, key: &str) -> String {
    let extra = format!("data_decorrenza: 2025-01-01\nchiave_idempotenza: {key}\n");
    let text = rdi("VRDGPP80A41H501Y", "INTERMEDIARIO", matricola, "VRDGPP80A41H501Y", &extra);
    env.submit(&text)[0]["protocollo"].as_str().expect("protocollo").to_string()
}

fn each_gate_refuses_its_candidate_and_records_why(db: Db) {
    let (rules, env) = promoted_env(db);
    let out = env.run(&["run", "--exit-when-idle"]);
    assert_eq!(out.status.code(), Some(2), "nothing promoted yet: {}", stderr(&out));
    assert!(stderr(&out).contains("rules promote"), "says how to promote: {}", stderr(&out));
    let first = promote(&env, rules.path(), "anna");
    assert!(first.status.success(), "{}", stderr(&first));
    assert_eq!(active_id(&env), Some(1));
    let again = promote(&env, rules.path(), "anna");
    assert!(String::from_utf8_lossy(&again.stdout).contains("identical to the active rule set 1"));

    let syntax = candidate(RULE, |t| t.replace("fn decide(req, ctx) {", "fn decide(req, ctx) {{"));
    let lint = candidate(RULE, |t| t.replace(STRICT, &format!("{STRICT}\n    check(\"RDI-6\", true);")));
    let case = candidate(RULE, |t| {
        t.replace("if azienda == () { return; }", "if azienda == () { refer(\"GEN-05\"); return; }")
    });
    let unreached = tempfile::tempdir().expect("tempdir");
    copy_dir(&common::repo().join("rules"), unreached.path());
    for (file, from, to) in [
        (
            "revoca_delega_intermediario/task.yaml",
            "reasons:\n",
            "reasons:\n  RDI-09: \"Revoca non ammessa in questo caso.\"\n",
        ),
        (RULE, STRICT, &format!("{STRICT}\n    ok = check(\"RDI-09\", req.note != \"mai\") && ok;")),
    ] {
        let path = unreached.path().join(file);
        let text = std::fs::read_to_string(&path).expect("read");
        assert!(text.contains(from), "{file}: {from:?}");
        std::fs::write(&path, text.replacen(from, to, 1)).expect("write");
    }
    let expectations: [(&Path, &str, &str); 4] = [
        (syntax.path(), "compile", "rule.rhai"),
        (lint.path(), "lint", "revoca_delega_intermediario/rule.rhai:"),
        (case.path(), "cases", "fails"),
        (unreached.path(), "coverage", "RDI-09"),
    ];
    for (n, (dir, gate, detail)) in expectations.into_iter().enumerate() {
        let out = promote(&env, dir, "anna");
        let text = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(2), "{gate}: {text}{}", stderr(&out));
        assert!(stderr(&out).contains(&format!("refused by {gate}")), "{gate}: {}", stderr(&out));
        assert!(text.contains(detail), "{gate}: the finding is named: {text}");
        let recorded = &versions(&env)[0];
        assert_eq!(recorded["id"], n as i64 + 2, "{recorded}");
        assert_eq!(recorded["state"], "refused", "{gate}: {recorded}");
        assert_eq!(recorded["author"], "anna");
        assert_eq!(active_id(&env), Some(1), "{gate}: the active set stays");
    }
    // The refusal keeps its evidence: the gates' results and the diff.
    let shown = env.ok(&["rules", "show", "5"]);
    assert!(shown.contains("coverage  NON SUPERATO") && shown.contains("+  RDI-09"), "{shown}");
}

/// The two nodes → the promoted rule set each runs, from `rules status` (the batch runs of `decide_all` have
/// their own row, under the host's name).
fn running(env: &Env) -> Vec<(String, Option<i64>)> {
    let statuses: Vec<Value> = serde_json::from_str(&env.ok(&["rules", "status", "--json"])).expect("status");
    let mut all: Vec<(String, Option<i64>)> = statuses
        .iter()
        .map(|s| (s["instance"].as_str().unwrap_or_default().to_string(), s["rule_set"].as_i64()))
        .filter(|(instance, _)| instance.starts_with("node-"))
        .collect();
    all.sort();
    all
}

fn a_flipping_candidate_waits_for_approval_then_goes_live_everywhere_and_survives_a_restart(db: Db) {
    let (rules, env) = promoted_env(db);
    assert!(promote(&env, rules.path(), "anna").status.success());
    let before = retroactive(&env, "1234567890", "retro-1");
    env.decide_all();
    assert_eq!(common::codes(&env.show(&before)), vec!["RDI-05"]);
    let v1 = env.show(&before)["versione_regola"].as_str().expect("version").to_string();

    // The weakening passes every case, but the replay flips the decision above: it must wait for approval.
    let weak = candidate(RULE, |t| t.replace(STRICT, WEAK));
    let out = promote(&env, weak.path(), "anna");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}{}", stderr(&out));
    assert!(text.contains("1 flipped") && text.contains("awaiting approval"), "{text}");
    assert!(text.contains("non_accolta → accolta: 1"), "the flip is summarised: {text}");
    assert_eq!(versions(&env)[0]["state"], "awaiting_approval");
    assert_eq!(active_id(&env), Some(1), "not active without approval");
    let shown = env.ok(&["rules", "show", "2"]);
    assert!(shown.contains(&format!("-    {STRICT}")) && shown.contains(&format!("+    {WEAK}")), "{shown}");
    assert!(shown.contains(&before), "the flipped request is named for the reviewer: {shown}");

    let nodes = [start_instance(&env, "node-a"), start_instance(&env, "node-b")];
    wait_for("both instances on rule set 1", 60, || {
        running(&env) == [("node-a".to_string(), Some(1)), ("node-b".to_string(), Some(1))]
    });
    let own = env.run(&["rules", "approve", "2", "--by", "anna"]);
    assert_eq!(own.status.code(), Some(2), "the author cannot approve: {}", stderr(&own));
    assert!(stderr(&own).contains("someone else"), "{}", stderr(&own));
    env.ok(&["rules", "approve", "2", "--by", "marco"]);
    wait_for("both instances on rule set 2", 30, || {
        running(&env) == [("node-a".to_string(), Some(2)), ("node-b".to_string(), Some(2))]
    });
    let after = retroactive(&env, "1234567890", "retro-2");
    wait_for("a decision by the approved set", 60, || env.show(&after)["stato"] == "chiusa");
    assert_eq!(env.show(&after)["esito"], "accolta", "{}", env.show(&after));
    for node in nodes {
        stop(node);
    }
    let recorded = &versions(&env);
    assert_eq!(recorded[0]["approved_by"], "marco");
    assert_eq!(recorded[1]["state"], "retired", "the set it replaced: {}", recorded[1]);

    // A restart whose directory holds something else — here a rule that does not even compile — runs set 2.
    std::fs::write(rules.path().join(RULE), "fn decide(req, ctx) {{").expect("write");
    let later = retroactive(&env, "6789012345", "retro-3");
    env.decide_all();
    assert_eq!(env.show(&later)["esito"], "accolta", "the promoted set decided, not the directory");

    // The decision of retired set 1, explained with its own lines after the files are gone.
    std::fs::remove_dir_all(rules.path()).expect("remove the rules");
    let explained = env.ok(&["explain", &before]);
    assert!(explained.contains(&v1), "{explained}");
    assert!(explained.contains("decorrenza >= ctx.today"), "the retired version's line: {explained}");
    // And `replay` names any set: set 1 on what set 2 decided flips it back.
    let replayed = env.ok(&["replay", "--version", "1", "--json"]);
    let report: Value = serde_json::from_str(&replayed).expect("replay --json");
    let flipped: Vec<&str> =
        report["ribaltate"].as_array().expect("ribaltate").iter().filter_map(|c| c["protocollo"].as_str()).collect();
    assert!(flipped.contains(&after.as_str()) && flipped.contains(&later.as_str()), "{replayed}");
}

/// A rules directory's files as `POST /regole/versioni` takes them: relative path → text.
fn files_of(dir: &Path) -> serde_json::Map<String, Value> {
    let mut files = serde_json::Map::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).expect("read_dir").flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rhai" || e == "yaml") {
                let name = path.strip_prefix(dir).expect("relative").to_string_lossy().into_owned();
                files.insert(name, Value::String(std::fs::read_to_string(&path).expect("read")));
            }
        }
    }
    files
}

fn through_the_api_a_promotion_waits_for_another_person_and_then_runs(db: Db) {
    use common::api::{BASE, bearer, daemon, token};
    use common::daemon::http;
    let (rules, env) = promoted_env(db);
    assert!(promote(&env, rules.path(), "anna").status.success());
    let text = std::fs::read_to_string(&env.config).expect("config");
    let text =
        text.replace("  activation: promoted\n", "  activation: promoted\n  promotion: { require_approval: true }\n");
    std::fs::write(&env.config, text).expect("config");
    let (node, port) = daemon(&env);
    let as_who =
        |claims: Value| format!("{}Content-Type: application/json\r\n", bearer(&token("portale.key.pem", claims)));
    let (anna, marco) = (
        as_who(serde_json::json!({"ruolo": "operazioni", "sub": "anna"})),
        as_who(serde_json::json!({"ruolo": "operazioni", "sub": "marco"})),
    );
    let requester = as_who(serde_json::json!({}));
    let weak = candidate(RULE, |t| t.replace(STRICT, WEAK));
    let body = serde_json::json!({"motivo": "RDI-05 senza il vincolo di retroattività", "file": files_of(weak.path())});
    let url = format!("{BASE}/regole/versioni");

    let (status, _, _) = http(port, "POST", &url, &requester, &body.to_string());
    assert_eq!(status, 403, "a requester does not govern the rules");
    let mut bad = body.clone();
    bad["file"]["../fuori.rhai"] = Value::String(String::new());
    let (status, _, answer) = http(port, "POST", &url, &anna, &bad.to_string());
    assert_eq!(status, 409, "{answer}");
    assert!(answer.contains("../fuori.rhai"), "the path is named: {answer}");

    let (status, head, answer) = http(port, "POST", &url, &anna, &body.to_string());
    assert_eq!(status, 201, "{answer}");
    assert!(head.to_ascii_lowercase().contains(&format!("location: {url}/2")), "{head}");
    let promoted: Value = serde_json::from_str(&answer).expect("json");
    assert_eq!(promoted["stato"], "awaiting_approval", "{promoted}");
    assert!(promoted["diff"].as_str().is_some_and(|d| d.contains(&format!("+    {WEAK}"))), "{promoted}");

    let approval = format!("{url}/2/approvazione");
    let (status, _, answer) = http(port, "POST", &approval, &anna, "");
    assert_eq!(status, 409, "the author cannot approve: {answer}");
    let (status, _, answer) = http(port, "POST", &approval, &marco, "");
    assert_eq!(status, 200, "{answer}");
    let approved: Value = serde_json::from_str(&answer).expect("json");
    assert_eq!((approved["stato"].as_str(), approved["approvata_da"].as_str()), (Some("active"), Some("marco")));
    wait_for("the daemon on rule set 2", 30, || {
        let statuses: Vec<Value> = serde_json::from_str(&env.ok(&["rules", "status", "--json"])).expect("status");
        statuses.iter().any(|s| s["rule_set"] == 2)
    });
    let (status, _, answer) = http(port, "GET", &url, &marco, "");
    assert_eq!(status, 200, "{answer}");
    let list: Value = serde_json::from_str(&answer).expect("json");
    let states: Vec<&str> =
        list["items"].as_array().expect("items").iter().filter_map(|v| v["stato"].as_str()).collect();
    assert_eq!(states, ["active", "retired"], "{list}");
    let (status, _, answer) = http(port, "GET", &format!("{url}/1"), &marco, "");
    assert_eq!(status, 200, "{answer}");
    assert!(answer.contains("\"esiti_verifiche\"") && answer.contains("\"ritirata_il\""), "{answer}");
    assert_eq!(http(port, "GET", &format!("{url}/99"), &marco, "").0, 404);
    stop(node);
}

backends!(
    each_gate_refuses_its_candidate_and_records_why,
    a_flipping_candidate_waits_for_approval_then_goes_live_everywhere_and_survives_a_restart,
    through_the_api_a_promotion_waits_for_another_person_and_then_runs
);
