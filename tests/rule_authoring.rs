//! The rule authors' toolkit: `rules check` (each finding, with the exact text an author sees), `explain`,
//! `replay`, safe hot reload with last-known-good, and the shadow and dry-run rollout modes.

mod common;

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{Db, Env, Settings, codes, copy_dir, rdi, stderr};
use serde_json::Value;

const TASK: &str = "id: PROVA\nlabel: Prova\nschema:\n  type: object\n  properties:\n    valore: { type: integer }\nreasons:\n  P-01: \"Valore troppo alto.\"\n  P-02: \"Da verificare.\"\n";

/// A rules directory with one task whose rule is `rule`; returns the `rules check` output and exit code.
fn check(rule: &str, task: &str) -> (String, Option<i32>) {
    check_files(&[("task.yaml", task), ("rule.rhai", rule)])
}

/// As [`check`], with any files in the task folder (a shadow candidate beside rule.rhai).
fn check_files(files: &[(&str, &str)]) -> (String, Option<i32>) {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(dir.path().join("prova")).expect("mkdir");
    for (name, text) in files {
        std::fs::write(dir.path().join("prova").join(name), text).expect("write a task file");
    }
    let env = Env::without_db();
    let out = env.run(&["rules", "check", dir.path().to_str().expect("path")]);
    let text = String::from_utf8_lossy(&out.stdout).replace(&format!("{}/", dir.path().display()), "");
    (text, out.status.code())
}

const GOOD: &str = "fn decide(req, ctx) {\n    if req.valore == 7 { refer(\"P-02\"); return; }\n    check(\"P-01\", req.valore < 10);\n}\n";

#[test]
fn the_shipped_rules_and_a_clean_task_have_no_findings() {
    let env = Env::without_db();
    let out = env.run(&["rules", "check"]);
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains(": 0 finding(s): 0 error(s), 0 notice(s)\n"));
    let (text, code) = check(GOOD, TASK);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.ends_with(": 0 finding(s): 0 error(s), 0 notice(s)\n"), "{text}");
}

#[test]
fn a_misspelt_request_field_is_pointed_at_with_a_suggestion() {
    let (text, code) = check(&GOOD.replace("req.valore < 10", "req.volare < 10"), TASK);
    assert_eq!(code, Some(2));
    assert!(
        text.contains("prova/rule.rhai:3:19: error: `req.volare` is not a field of this task's requests"),
        "{text}"
    );
    assert!(text.contains("    3 |     check(\"P-01\", req.volare < 10);\n      |                   ^\n"), "{text}");
    assert!(text.contains("= help: did you mean `valore`?"), "{text}");
}

#[test]
fn a_missing_semicolon_is_reported_where_it_is_missing() {
    let rule = "fn decide(req, ctx) {\n    let x = req.valore\n    check(\"P-01\", x < 10);\n    refer(\"P-02\");\n}\n";
    let (text, code) = check(rule, TASK);
    assert_eq!(code, Some(2));
    // Rhai reports it on line 3; the author needs line 2.
    assert!(text.contains("prova/rule.rhai:2:23: error: missing `;` at the end of this statement"), "{text}");
    assert!(text.contains("= help: add `;` here"), "{text}");
}

#[test]
fn an_undefined_variable_is_explained() {
    let (text, _) = check(&GOOD.replace("req.valore < 10", "valore < 10"), TASK);
    assert!(text.contains("error: variable `valore` is not defined"), "{text}");
    assert!(text.contains("(fields of the request are `req.valore`)"), "{text}");
}

#[test]
fn reason_codes_must_match_the_catalogue_both_ways() {
    let (text, _) = check(&GOOD.replace("\"P-01\"", "\"P-03\""), TASK);
    assert!(text.contains("prova/rule.rhai:3:11: error: reason code `P-03` is not in the catalogue of"), "{text}");
    assert!(text.contains("= help: did you mean `P-01`? or add `P-03` to `reasons` in task.yaml"), "{text}");
    assert!(
        text.contains(
            "prova/task.yaml:8:3: error: reason code `P-01` is in the catalogue but no check or referral uses it"
        ),
        "{text}"
    );
}

#[test]
fn codes_of_any_shape_and_misspelt_fact_properties_are_found_where_they_are() {
    // A code not shaped XXX-NN, given to check, is checked against the catalogue all the same.
    let (text, code) = check(&GOOD.replace("\"P-01\"", "\"P-1\""), TASK);
    assert_eq!(code, Some(2), "{text}");
    assert!(text.contains("prova/rule.rhai:3:11: error: reason code `P-1` is not in the catalogue of"), "{text}");
    // A property the fact records do not have (the host API documents theirs), with the nearest one.
    let rule = "fn decide(req, ctx) {\n    let azienda = ctx.company(\"1234567890\");\n    if azienda.pec_reg == () { refer(\"P-02\"); return; }\n    for d in ctx.delegations(\"1234567890\") { if d.stat == \"ATTIVA\" { refer(\"P-02\"); return; } }\n    check(\"P-01\", req.valore < 10);\n}\n";
    let (text, code) = check(rule, TASK);
    assert_eq!(code, Some(2), "{text}");
    assert!(
        text.contains(
            "prova/rule.rhai:3:8: error: `azienda.pec_reg`: what `ctx.company(…)` returns has no field `pec_reg`"
        ),
        "{text}"
    );
    assert!(text.contains("did you mean `pec_registro_imprese`?"), "{text}");
    assert!(text.contains("`d.stat`: what `ctx.delegations(…)` returns has no field `stat`"), "{text}");
    assert!(text.contains("did you mean `stato`?"), "{text}");
}

#[test]
fn a_message_value_the_check_does_not_pass_is_found_at_the_check() {
    let task = TASK.replace("\"Valore troppo alto.\"", "\"Valore {{ valore }} troppo alto.\"");
    let (text, code) = check(GOOD, &task);
    assert_eq!(code, Some(2), "{text}");
    assert!(
        text.contains(
            "prova/rule.rhai:3:11: error: the message of `P-01` uses {{ valore }}, which this call does not pass"
        ),
        "{text}"
    );
    assert!(text.contains("= help: pass it: `#{ valore: … }` as the message's values"), "{text}");
    let passing = GOOD.replace("req.valore < 10);", "req.valore < 10, #{ valore: req.valore });");
    let (text, code) = check(&passing, &task);
    assert_eq!((code, text.contains("0 finding")), (Some(0), true), "{text}");
}

#[test]
fn a_code_the_scanner_cannot_read_is_a_notice_and_an_unknown_literal_an_error() {
    let rule = "fn decide(req, ctx) {\n    let codice = if req.valore == 7 { \"P-02\" } else { \"P-01\" };\n    check(codice, req.valore < 10);\n}\n";
    let (text, code) = check(rule, TASK);
    assert_eq!(code, Some(0), "a notice passes: {text}");
    assert!(
        text.contains("prova/rule.rhai:3:11: notice: the reason code is not a literal: rules check cannot verify it against task.yaml's reasons"),
        "{text}"
    );
    assert!(text.contains("= help: use a literal"), "{text}");
    assert!(text.ends_with(": 1 finding(s): 0 error(s), 1 notice(s)\n"), "{text}");
    let (text, code) = check(&rule.replace("check(codice,", "check(\"P-09\","), TASK);
    assert_eq!(code, Some(2), "{text}");
    assert!(text.contains("prova/rule.rhai:3:11: error: reason code `P-09` is not in the catalogue"), "{text}");

    // The values for a message that uses some, given as a variable: the scanner cannot tell they are there.
    let task = TASK.replace("\"Valore troppo alto.\"", "\"Valore {{ valore }} troppo alto.\"");
    let passing = GOOD.replace(
        "check(\"P-01\", req.valore < 10);",
        "let v = #{ valore: req.valore };\n    check(\"P-01\", req.valore < 10, v);",
    );
    let (text, code) = check(&passing, &task);
    assert_eq!(code, Some(0), "{text}");
    assert!(
        text.contains("prova/rule.rhai:4:11: notice: the values for the message of `P-01` are not a literal map"),
        "{text}"
    );
    assert!(text.contains("= help: pass them as `#{ valore: … }` in the call"), "{text}");
}

#[test]
fn the_json_findings_have_a_severity() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(dir.path().join("prova")).expect("mkdir");
    std::fs::write(dir.path().join("prova/task.yaml"), TASK).expect("task.yaml");
    let rule = "fn decide(req, ctx) {\n    let c = \"P-01\";\n    check(c, req.valore < 10);\n    check(\"P-03\", true);\n    refer(\"P-02\");\n}\n";
    std::fs::write(dir.path().join("prova/rule.rhai"), rule).expect("rule.rhai");
    let out = Env::without_db().run(&["rules", "check", "--json", dir.path().to_str().expect("path")]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let findings: Value = serde_json::from_slice(&out.stdout).expect("json");
    let severities: Vec<&str> =
        findings.as_array().expect("list").iter().filter_map(|f| f["severity"].as_str()).collect();
    assert_eq!(severities, ["notice", "error"], "{findings:#}");
}

const SHADOW_TASK: &str = "id: PROVA\nlabel: Prova\nmode: shadow\ncandidate: candidate.rhai\nschema:\n  type: object\n  properties:\n    valore: { type: integer }\nreasons:\n  P-01: \"Valore troppo alto.\"\n  P-02: \"Da verificare.\"\ncandidate_reasons:\n  P-10: \"Valore {{ valore }} fuori soglia.\"\n";

#[test]
fn the_candidate_of_a_shadow_task_is_linted_against_its_catalogue() {
    let candidate = "fn decide(req, ctx) {\n    if req.valore == 7 { refer(\"P-02\"); return; }\n    check(\"P-10\", req.valore < 20, #{ valore: req.valore });\n}\n";
    let (text, code) = check_files(&[("task.yaml", SHADOW_TASK), ("rule.rhai", GOOD), ("candidate.rhai", candidate)]);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.ends_with(": 0 finding(s): 0 error(s), 0 notice(s)\n"), "{text}");

    // A misspelt fact property in the candidate is found in the candidate.
    let misspelt = candidate.replace(
        "    check(\"P-10\"",
        "    let azienda = ctx.company(\"1234567890\");\n    if azienda.pec_reg == () { return; }\n    check(\"P-10\"",
    );
    let (text, code) = check_files(&[("task.yaml", SHADOW_TASK), ("rule.rhai", GOOD), ("candidate.rhai", &misspelt)]);
    assert_eq!(code, Some(2), "{text}");
    assert!(
        text.contains(
            "prova/candidate.rhai:4:8: error: `azienda.pec_reg`: what `ctx.company(…)` returns has no field `pec_reg`"
        ),
        "{text}"
    );

    // The candidate's own codes are not the active rule's.
    let active = GOOD.replace("\"P-01\", req.valore < 10", "\"P-01\", req.valore < 10); check(\"P-10\", true");
    let (text, code) =
        check_files(&[("task.yaml", SHADOW_TASK), ("rule.rhai", &active), ("candidate.rhai", candidate)]);
    assert_eq!(code, Some(2), "{text}");
    assert!(
        text.contains(
            "prova/rule.rhai:3:43: error: reason code `P-10` is in `candidate_reasons`: only the candidate may use it"
        ),
        "{text}"
    );
    // The message values the candidate's codes need are checked with the candidate's catalogue.
    let (text, code) = check_files(&[
        ("task.yaml", SHADOW_TASK),
        ("rule.rhai", GOOD),
        ("candidate.rhai", &candidate.replace(", #{ valore: req.valore }", "")),
    ]);
    assert_eq!(code, Some(2), "{text}");
    assert!(text.contains("prova/candidate.rhai:3:11: error: the message of `P-10` uses {{ valore }}"), "{text}");

    // `candidate_reasons` belongs to shadow mode.
    let enforce = SHADOW_TASK.replace("mode: shadow\ncandidate: candidate.rhai\n", "");
    let (text, code) = check_files(&[("task.yaml", &enforce), ("rule.rhai", GOOD)]);
    assert_eq!(code, Some(2), "{text}");
    assert!(
        text.contains("prova/task.yaml:10:1: error: `candidate_reasons` is only used with `mode: shadow`"),
        "{text}"
    );
}

#[test]
fn a_task_yaml_typo_is_named_once_where_it_is() {
    let (text, code) = check(GOOD, &TASK.replace("reasons:", "reason:"));
    assert_eq!(code, Some(2), "{text}");
    assert_eq!(text.matches("error:").count(), 1, "one finding, not one per code: {text}");
    assert!(text.contains("prova/task.yaml:7:1: error:") && text.contains("reason"), "{text}");
    assert!(text.contains("fix task.yaml first"), "{text}");
}

#[test]
fn top_level_statements_forbidden_calls_and_the_entry_point() {
    let (text, _) = check(&format!("let soglia = 10;\n{GOOD}"), TASK);
    assert!(text.contains("prova/rule.rhai:1:1: error: `let…` at the top level runs on every decision"), "{text}");
    assert!(text.contains("only `fn` and `const` may stand outside functions"), "{text}");
    let (text, _) = check(&GOOD.replace("check(\"P-01\"", "sleep(1); check(\"P-01\""), TASK);
    assert!(text.contains("error: `sleep` is not allowed in rules"), "{text}");
    let (text, _) = check(&GOOD.replace("fn decide(req, ctx)", "fn decidi(req, ctx)"), TASK);
    assert!(text.contains("error: no `fn decide(req, ctx)`: the daemon calls it to decide each request"), "{text}");
    let (text, _) = check(&GOOD.replace("fn decide(req, ctx)", "fn decide(req)").replace("ctx", "x"), TASK);
    assert!(text.contains("error: `decide` takes 1 parameter(s); it must take two: `fn decide(req, ctx)`"), "{text}");
    let (text, _) = check(GOOD, &TASK.replace("type: integer", "type: intero"));
    assert!(text.contains("`schema` is not a valid JSON Schema"), "{text}");
}

fn explain_tells_the_decision_in_words(db: Db) {
    let env = Env::new(db);
    env.import_examples();
    let stored = env.submit(&rdi("FRRLCU75D05H501G", "AZIENDA", "4567890123", "GLLSFN88H10L219C", ""));
    env.decide_all();
    let p = stored[0]["protocollo"].as_str().expect("protocollo");
    let text = env.ok(&["explain", p]);
    for expected in [
        "esito: NON ACCOLTA",
        "(quella attiva)",
        "controlli, nell'ordine:",
        " 5. RDI-01   NON superato  riga 16 di revoca_delega_intermediario/rule.rhai: if !check(\"RDI-01\", delega != ()) { return; }",
        " 1. GEN-02   superato      riga 11 di lib/common.rhai",
        "ctx.delegation(4567890123, GLLSFN88H10L219C)  [dm:4567890123 v1]",
        "RDI-01: Non risulta attiva alcuna delega",
    ] {
        assert!(text.contains(expected), "missing `{expected}` in:\n{text}");
    }
    let json: Value = serde_json::from_str(&env.ok(&["explain", p, "--json"])).expect("json");
    assert_eq!(json[0]["decisione"]["outcome"], "non_accolta");
    assert!(json[0]["decisione"]["trace"]["facts"].as_array().is_some_and(|f| f.len() >= 4));
    assert_eq!(env.run(&["explain", "7000.2026.9999999"]).status.code(), Some(3));
}

fn replay_reports_exactly_the_requests_a_changed_rule_flips(db: Db) {
    let env = Env::new(db);
    env.import_examples();
    let far =
        env.submit(&rdi("SPSCRL68M22F839A", "AZIENDA", "3456789012", "11111110125", "data_decorrenza: 2099-01-01\n"));
    env.submit(&rdi("FRRLCU75D05H501G", "AZIENDA", "4567890123", "VRDGPP80A41H501Y", ""));
    env.submit(&rdi("BNCGPP72C15F205Z", "AZIENDA", "2345678901", "VRDGPP80A41H501Y", ""));
    env.decide_all();
    let candidate = tempfile::tempdir().expect("tempdir");
    copy_dir(&common::repo().join("rules"), candidate.path());
    let rule = candidate.path().join("revoca_delega_intermediario/rule.rhai");
    let text = std::fs::read_to_string(&rule).expect("rule");
    let stricter = text.replace(
        "decorrenza >= delega.data_inizio)",
        "decorrenza >= delega.data_inizio && decorrenza < \"2030-01-01\")",
    );
    assert_ne!(text, stricter);
    std::fs::write(&rule, stricter).expect("write");
    let report: Value =
        serde_json::from_str(&env.ok(&["replay", "--rules", candidate.path().to_str().expect("path"), "--json"]))
            .expect("json");
    assert_eq!(report["decisioni"], 3);
    let flipped = report["ribaltate"].as_array().expect("ribaltate");
    assert_eq!(flipped.len(), 1, "{report:#}");
    assert_eq!(flipped[0]["protocollo"], far[0]["protocollo"]);
    assert_eq!(flipped[0]["prima"], "accolta");
    assert_eq!(flipped[0]["dopo"], "non_accolta");
    assert_eq!(flipped[0]["motivi_dopo"], serde_json::json!(["RDI-05"]));
    assert_eq!(report["esiti"]["non_accolta → non_accolta"], 1);
    assert_eq!(report["motivi"]["RDI-05"], serde_json::json!([1, 0]));
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn status(env: &Env) -> Value {
    serde_json::from_str(&env.ok(&["rules", "status", "--json"])).expect("status json")
}

/// Submits a request for a fresh company-less subject and waits for its decision; returns its rule version.
fn decided_version(env: &Env, matricola: &str) -> String {
    let stored = env.submit(&rdi("RSSMRA80A01H501U", "AZIENDA", matricola, "VRDGPP80A41H501Y", ""));
    let p = stored[0]["protocollo"].as_str().expect("p").to_string();
    wait_for("a decision", || env.show(&p)["stato"] == "chiusa");
    env.show(&p)["versione_regola"].as_str().expect("version").to_string()
}

fn hot_reload_activates_only_rules_that_pass_and_keeps_the_last_good_version(db: Db) {
    let rules = tempfile::tempdir().expect("tempdir");
    copy_dir(&common::repo().join("rules"), rules.path());
    let env = Env::with(db, Settings { rules_dir: rules.path().to_path_buf(), ..Default::default() });
    env.import_examples();
    let mut daemon = env.command(&["run"]).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().expect("spawn");
    wait_for("the daemon to start", || {
        env.run(&["rules", "status", "--json"]).status.success()
            && status(&env).as_array().is_some_and(|a| !a.is_empty())
    });
    let v1 = decided_version(&env, "9000000001");
    assert_eq!(status(&env)[0]["active"]["REVOCA_DELEGA_INTERMEDIARIO"], v1.as_str());

    // A change whose cases fail (GEN-03 renamed in the rule only): refused, the old version keeps deciding.
    let rule = rules.path().join("revoca_delega_intermediario/rule.rhai");
    let original = common::break_a_case(rules.path());
    wait_for("the refusal", || status(&env)[0]["candidate_errors"].as_array().is_some_and(|e| !e.is_empty()));
    let errors = status(&env)[0]["candidate_errors"].to_string();
    assert!(errors.contains("cases.yaml") && errors.contains("fails"), "{errors}");
    assert_eq!(decided_version(&env, "9000000002"), v1, "the last good version still decides");
    let text = env.ok(&["rules", "status"]);
    assert!(text.contains("RIFIUTATA"), "{text}");

    // A rule that does not compile, announced by SIGHUP: refused too, with Rhai's message.
    std::fs::write(&rule, original.replace("fn decide(req, ctx) {", "fn decide(req, ctx) {{")).expect("write");
    let before = status(&env)[0]["checked_at"].clone();
    let _ = std::process::Command::new("kill").args(["-HUP", &daemon.id().to_string()]).status();
    wait_for("the SIGHUP check", || status(&env)[0]["checked_at"] != before);
    assert!(status(&env)[0]["candidate_errors"].to_string().contains("Expecting '}'"));
    assert_eq!(status(&env)[0]["active"]["REVOCA_DELEGA_INTERMEDIARIO"], v1.as_str());

    // A good change is activated: the new version decides.
    std::fs::write(&rule, format!("// revisione 2\n{original}")).expect("write");
    wait_for("the activation", || {
        status(&env)[0]["candidate_errors"].as_array().is_some_and(Vec::is_empty)
            && status(&env)[0]["active"]["REVOCA_DELEGA_INTERMEDIARIO"] != v1.as_str()
    });
    let v2 = decided_version(&env, "9000000004");
    assert_ne!(v2, v1);
    let _ = std::process::Command::new("kill").args(["-TERM", &daemon.id().to_string()]).status();
    let out = daemon.wait().expect("wait");
    assert!(out.success());
}

fn with_mode(dir: &Path, mode: &str) {
    let task = dir.join("revoca_delega_intermediario/task.yaml");
    let text = std::fs::read_to_string(&task).expect("task.yaml");
    std::fs::write(&task, text.replace("mode: enforce", mode)).expect("write");
}

fn shadow_mode_records_disagreements_without_changing_outcomes(db: Db) {
    let rules = tempfile::tempdir().expect("tempdir");
    copy_dir(&common::repo().join("rules"), rules.path());
    let folder = rules.path().join("revoca_delega_intermediario");
    let rule = std::fs::read_to_string(folder.join("rule.rhai")).expect("rule");
    std::fs::write(
        folder.join("candidate.rhai"),
        rule.replace(
            "decorrenza >= delega.data_inizio)",
            "decorrenza >= delega.data_inizio && decorrenza < \"2030-01-01\")",
        ),
    )
    .expect("write");
    with_mode(rules.path(), "mode: shadow\ncandidate: candidate.rhai");
    let env = Env::with(db, Settings { rules_dir: rules.path().to_path_buf(), ..Default::default() });
    env.import_examples();
    let far =
        env.submit(&rdi("SPSCRL68M22F839A", "AZIENDA", "3456789012", "11111110125", "data_decorrenza: 2099-01-01\n"));
    let near = env.submit(&rdi("FRRLCU75D05H501G", "AZIENDA", "4567890123", "VRDGPP80A41H501Y", ""));
    env.decide_all();
    // Only the active version counts.
    assert_eq!(env.show(far[0]["protocollo"].as_str().expect("p"))["esito"], "accolta");
    assert_eq!(env.show(near[0]["protocollo"].as_str().expect("p"))["esito"], "accolta");
    let list: Value = serde_json::from_str(&env.ok(&["rules", "shadow", "--json"])).expect("json");
    let list = list.as_array().expect("list");
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0]["protocollo"], far[0]["protocollo"]);
    assert_eq!(list[0]["candidata"]["outcome"], "non_accolta");
    assert_eq!(list[0]["candidata"]["reasons"], serde_json::json!(["RDI-05"]));
    let explained = env.ok(&["explain", far[0]["protocollo"].as_str().expect("p")]);
    assert!(explained.contains("IN DISACCORDO"), "{explained}");
}

fn dry_run_mode_records_the_rules_decision_and_leaves_closing_to_an_operator(db: Db) {
    let rules = tempfile::tempdir().expect("tempdir");
    copy_dir(&common::repo().join("rules"), rules.path());
    with_mode(rules.path(), "mode: dry-run");
    let env = Env::with(db, Settings { rules_dir: rules.path().to_path_buf(), ..Default::default() });
    env.import_examples();
    let stored = env.submit(&rdi("FRRLCU75D05H501G", "AZIENDA", "4567890123", "VRDGPP80A41H501Y", ""));
    let p = stored[0]["protocollo"].as_str().expect("p");
    env.decide_all();
    let view = env.show(p);
    assert_eq!(view["stato"], "in_carico");
    assert_eq!(view["sospesa"], "rinvio");
    assert_eq!(env.sql("SELECT stato FROM deleghe WHERE id = 'D-6'")[0][0], "ATTIVA", "nothing applied yet");
    assert!(env.ok(&["explain", p]).contains("modalità dry-run: la regola avrebbe deciso accolta"));
    env.ok(&["operator", "close", p, "--esito", "accolta"]);
    assert_eq!(env.show(p)["esito"], "accolta");
    assert!(codes(&env.show(p)).is_empty());
    assert_eq!(
        env.sql("SELECT stato FROM deleghe WHERE id = 'D-6'")[0][0],
        "REVOCATA",
        "the rule's effects, on acceptance"
    );
}

/// The date functions are host functions like the others: `rules check` has nothing to say about them.
#[test]
fn a_rule_using_the_date_functions_has_no_findings() {
    let rule = "fn decide(req, ctx) {\n    let d = add_working_days(ctx.today, 10);\n    if !is_working_day(d) || working_days_between(ctx.today, d) != 10 { refer(\"P-02\"); return; }\n    check(\"P-01\", is_date(d) && d <= add_years(ctx.today, 1) && days_between(ctx.today, add_months(add_days(d, req.valore), -1)) < 366);\n}\n";
    let (text, code) = check(rule, TASK);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.ends_with(": 0 finding(s): 0 error(s), 0 notice(s)\n"), "{text}");
}

#[test]
fn the_reference_in_docs_rules_md_is_the_generated_one() {
    let env = Env::without_db();
    let generated = env.ok(&["rules", "docs"]);
    let guide = std::fs::read_to_string(common::repo().join("docs/rules.md")).expect("docs/rules.md");
    assert!(
        guide.contains(&generated),
        "docs/rules.md is out of date: regenerate its reference with `smart-taskd rules docs` (between the markers)"
    );
    for function in [
        "ctx.delegation(matricola, cf)",
        "check(code, cond)",
        "refer(code)",
        "same_person(a, b)",
        "add_years(date, n)",
        "working_days_between(a, b)",
        "`revoke_delegation`",
    ] {
        assert!(generated.contains(function), "{function}");
    }
}

backends!(
    explain_tells_the_decision_in_words,
    replay_reports_exactly_the_requests_a_changed_rule_flips,
    hot_reload_activates_only_rules_that_pass_and_keeps_the_last_good_version,
    shadow_mode_records_disagreements_without_changing_outcomes,
    dry_run_mode_records_the_rules_decision_and_leaves_closing_to_an_operator,
);
