//! `smart-taskd rules test` through the binary: the shipped cases pass with full coverage, and a wrong
//! expectation, an invalid or a missing cases.yaml fail with exit code 2 and say where and why.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;

use common::{Env, repo, stderr};
use serde_json::Value;

const RDI: &str = "REVOCA_DELEGA_INTERMEDIARIO";

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Copies a directory tree (the rules) so that a test can break it.
fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create dir");
    for entry in std::fs::read_dir(from).expect("read dir") {
        let entry = entry.expect("dir entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("file type").is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy file");
        }
    }
}

/// A copy of the shipped rules in the test's temporary directory.
fn rules_copy(env: &Env) -> PathBuf {
    let dir = env.path("rules");
    copy_tree(&repo().join("rules"), &dir);
    dir
}

fn rdi_cases(rules: &Path) -> PathBuf {
    rules.join("revoca_delega_intermediario").join("cases.yaml")
}

#[test]
fn the_shipped_cases_pass_with_every_reason_code_reached() {
    let env = Env::without_db();
    // No directory argument: rules.dir of the configuration (the shipped rules/), every task.
    let out = env.run(&["rules", "test"]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}\n{}", stderr(&out));
    assert!(text.lines().last().is_some_and(|l| l.ends_with(" passed, 0 failed")), "{text}");
    assert!(text.contains(&format!("coverage {RDI}: 10/10 reason codes\n")), "{text}");
    assert!(!text.contains("FAIL"), "{text}");

    // --task runs one task only.
    let out = env.run(&["rules", "test", "--task", RDI]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}\n{}", stderr(&out));
    let cases: Vec<&str> = text.lines().filter(|l| l.starts_with("ok   ") || l.starts_with("FAIL ")).collect();
    assert!(cases.len() >= 15, "{text}");
    assert!(cases.iter().all(|l| l.starts_with(&format!("ok   {RDI}  "))), "{text}");
    assert!(text.contains("omocodia"), "{text}");
    assert_eq!(text.lines().filter(|l| l.starts_with("coverage ")).count(), 1, "{text}");
}

#[test]
fn a_wrong_expectation_fails_with_the_diff_and_the_checks_that_ran() {
    let env = Env::without_db();
    let rules = rules_copy(&env);
    let cases = rdi_cases(&rules);
    let text = std::fs::read_to_string(&cases).expect("cases.yaml");
    // The first RDI-04 case ("delega già revocata") now expects RDI-01.
    let broken = text.replacen("motivi: [RDI-04]", "motivi: [RDI-01]", 1);
    assert_ne!(broken, text);
    std::fs::write(&cases, broken).expect("write cases.yaml");

    let out = env.run(&["rules", "test", rules.to_str().expect("utf-8 path"), "--task", RDI]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(2), "{text}\n{}", stderr(&out));
    assert!(text.contains(&format!("FAIL {RDI}  RDI-04: delega già revocata\n")), "{text}");
    assert!(text.contains("esito:    non_accolta (as expected)"), "{text}");
    assert!(text.contains("motivi:   expected RDI-01\n"), "{text}");
    assert!(text.contains("actual   RDI-04\n"), "{text}");
    assert!(text.contains("RDI-04: La delega indicata risulta già revocata"), "{text}");
    // The checks that ran, in order, with pass/fail and line.
    let checks: Vec<&str> = text
        .lines()
        .skip_while(|l| !l.contains("checks that ran:"))
        .skip(1)
        .take_while(|l| l.contains(" line "))
        .map(str::trim)
        .collect();
    let codes: Vec<&str> = checks.iter().filter_map(|c| c.split(' ').next()).collect();
    assert_eq!(codes, ["GEN-02", "GEN-03", "GEN-04", "GEN-01", "RDI-01", "RDI-04"], "{text}");
    assert!(checks[0].starts_with("GEN-02 ✓ line "), "{text}");
    assert!(checks[5].starts_with("RDI-04 ✗ line "), "{text}");
    assert!(text.lines().any(|l| l.ends_with(" passed, 1 failed")), "{text}");
    assert!(stderr(&out).contains("rules test: 1 failed"), "{}", stderr(&out));
}

#[test]
fn an_invalid_cases_file_names_the_file_and_the_line() {
    let env = Env::without_db();
    let rules = rules_copy(&env);
    let cases = rdi_cases(&rules);
    std::fs::write(
        &cases,
        "today: 2026-06-01\n\
         cases:\n\
         \x20 - name: una revoca\n\
         \x20   request:\n\
         \x20     richiedente_cf: RSSMRA80A01H501U\n\
         \x20     profilo_richiedente: AZIENDA\n\
         \x20     matricola: \"1234567890\"\n\
         \x20     cf_intermediario: VRDGPP80A41H501Y\n\
         \x20     motivazione: REVOCA\n\
         \x20   expect:\n\
         \x20     esito: non_accolta\n\
         \x20     motivo: [GEN-03]\n",
    )
    .expect("write cases.yaml");
    let out = env.run(&["rules", "test", rules.to_str().expect("utf-8 path"), "--task", RDI]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(2), "{text}\n{}", stderr(&out));
    assert!(text.contains(&format!("FAIL {RDI}  invalid cases.yaml")), "{text}");
    assert!(text.contains(&format!("{}:12:", cases.display())), "{text}");
    assert!(text.contains("unknown field `motivo`"), "{text}");
    assert!(text.lines().any(|l| l.ends_with("0 passed, 1 failed")), "{text}");

    // A reason code that is not in the catalogue is refused before anything runs, at its line too.
    let text = std::fs::read_to_string(rdi_cases(&repo().join("rules"))).expect("cases.yaml");
    std::fs::write(&cases, text.replacen("motivi: [RDI-03]", "motivi: [RDI-33]", 1)).expect("write cases.yaml");
    let out = env.run(&["rules", "test", rules.to_str().expect("utf-8 path"), "--task", RDI]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(text.contains("`RDI-33` is not in the reason catalogue"), "{text}");
    assert!(!text.contains("ok   "), "an invalid file runs none of its cases: {text}");
}

#[test]
fn a_task_without_cases_fails() {
    let env = Env::without_db();
    let rules = rules_copy(&env);
    std::fs::remove_file(rdi_cases(&rules)).expect("remove cases.yaml");
    let out = env.run(&["rules", "test", rules.to_str().expect("utf-8 path"), "--task", RDI]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(text.contains(&format!("FAIL {RDI}  no cases.yaml")), "{text}");
    assert!(text.contains(&format!("coverage {RDI}: 0/10 reason codes; not reached: GEN-01")), "{text}");

    // An unknown --task is a usage error.
    let out = env.run(&["rules", "test", "--task", "NON_ESISTE"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("no such task"), "{}", stderr(&out));
}

#[test]
fn json_report_has_cases_checks_coverage_and_summary() {
    let env = Env::without_db();
    let out = env.run(&["rules", "test", "--task", RDI, "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let report: Value = serde_json::from_slice(&out.stdout).expect("--json prints JSON");
    let cases = report["cases"].as_array().expect("cases");
    assert_eq!(report["summary"]["passed"], cases.len());
    assert_eq!(report["summary"]["failed"], 0);
    assert!(cases.iter().all(|c| c["status"] == "ok" && c["task"] == RDI), "{report:#}");
    assert!(cases.iter().all(|c| c["line"].as_u64().is_some_and(|l| l > 0)), "{report:#}");
    let accolta = cases.iter().find(|c| c["expected"]["esito"] == "accolta").expect("an accolta");
    assert_eq!(accolta["actual"]["esito"], "accolta");
    assert_eq!(accolta["actual"]["effetti"][0]["tipo"], "revoke_delegation");
    assert!(accolta["actual"]["checks"].as_array().is_some_and(|c| !c.is_empty()), "{accolta:#}");
    let coverage = &report["coverage"][0];
    assert_eq!(coverage["task"], RDI);
    assert_eq!(coverage["total"], 10);
    assert_eq!(coverage["not_reached"], Value::Array(vec![]));
}

#[test]
fn the_shared_world_is_under_each_files_world_and_its_problems_are_named() {
    let env = Env::without_db();
    let rules = rules_copy(&env);
    let cases = rdi_cases(&rules);
    let text = std::fs::read_to_string(&cases).expect("cases.yaml");
    assert!(text.contains("shared_world: world.yaml"), "the shipped cases use the shared world");
    let run = || env.run(&["rules", "test", rules.to_str().expect("utf-8 path"), "--task", RDI]);

    // The file's own world is merged over the shared one and checked with it: a company of sede 9999, which
    // neither world has, is refused at the line of the file's `world`.
    let own = text.replacen(
        "shared_world: world.yaml\n",
        "shared_world: world.yaml\nworld:\n  aziende:\n    - { matricola: \"1234567890\", cf: \"00743110157\", ragione_sociale: X, sede: \"9999\", rappresentanti_legali: [RSSMRA80A01H501U] }\n",
        1,
    );
    std::fs::write(&cases, &own).expect("write cases.yaml");
    let out = run();
    let report = stdout(&out);
    assert_eq!(out.status.code(), Some(2), "{report}");
    let line = own.lines().position(|l| l == "world:").expect("world line") + 1;
    assert!(
        report.contains(&format!("{}:{}:", cases.display(), line + 1))
            || report.contains(&format!("{}:{line}:", cases.display())),
        "{report}"
    );
    assert!(report.contains("sede `9999` is not in the world"), "{report}");

    // A missing shared world, or a name with a directory, is a problem of the file at its line.
    for (name, says) in [("mondo.yaml", "cannot read"), ("../world.yaml", "expected the name of a file")] {
        std::fs::write(&cases, text.replacen("\nshared_world: world.yaml\n", &format!("\nshared_world: {name}\n"), 1))
            .expect("write cases.yaml");
        let out = run();
        let report = stdout(&out);
        assert_eq!(out.status.code(), Some(2), "{report}");
        assert!(report.contains(&format!("{}:", cases.display())) && report.contains("`shared_world`"), "{report}");
        assert!(report.contains(says), "{report}");
    }
}

const PROVA_TASK: &str = "id: PROVA\nlabel: Prova\nschema:\n  type: object\n  properties:\n    valore: { type: integer }\nreasons:\n  P-01: \"Valore troppo alto.\"\n  P-02: \"Da verificare.\"\n";
const PROVA_RULE: &str = "fn decide(req, ctx) {\n    if req.valore == 7 { refer(\"P-02\"); return; }\n    check(\"P-01\", req.valore < 10);\n}\n";

/// A case of the PROVA task: `valore`, then the YAML of its `expect` (and anything after it).
fn prova_case(valore: i64, expect: &str) -> String {
    format!(
        "  - name: \"valore {valore}\"\n    request: {{ richiedente_cf: RSSMRA80A01H501U, profilo_richiedente: AZIENDA, valore: {valore} }}\n    expect: {expect}\n"
    )
}

/// A rules directory with the one task PROVA: its task.yaml, rule.rhai, cases and any other files.
fn prova_rules(env: &Env, task: &str, cases: &[String], others: &[(&str, &str)]) -> PathBuf {
    let dir = env.path("prova_rules");
    let folder = dir.join("prova");
    std::fs::create_dir_all(&folder).expect("mkdir");
    std::fs::write(folder.join("task.yaml"), task).expect("task.yaml");
    std::fs::write(folder.join("rule.rhai"), PROVA_RULE).expect("rule.rhai");
    std::fs::write(folder.join("cases.yaml"), format!("cases:\n{}", cases.concat())).expect("cases.yaml");
    for (name, text) in others {
        std::fs::write(folder.join(name), text).expect("write");
    }
    dir
}

#[test]
fn a_reason_code_no_case_reaches_fails_the_run() {
    let env = Env::without_db();
    let cases = [prova_case(1, "{ esito: accolta }"), prova_case(12, "{ esito: non_accolta, motivi: [P-01] }")];
    let dir = prova_rules(&env, PROVA_TASK, &cases, &[]);
    let out = env.run(&["rules", "test", dir.to_str().expect("utf-8 path")]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(!text.contains("FAIL"), "every case passes: {text}");
    assert!(text.contains("coverage PROVA: 1/2 reason codes; not reached: P-02\n"), "{text}");
    assert!(text.ends_with("2 passed, 0 failed, 1 reason code(s) not reached\n"), "{text}");

    let all = [cases[0].clone(), cases[1].clone(), prova_case(7, "{ esito: rinvio, motivi: [P-02] }")];
    let dir = prova_rules(&env, PROVA_TASK, &all, &[]);
    let out = env.run(&["rules", "test", dir.to_str().expect("utf-8 path")]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
}

#[test]
fn the_cases_run_against_a_shadow_candidate_too() {
    let env = Env::without_db();
    let task = PROVA_TASK.replace("schema:", "mode: shadow\ncandidate: candidate.rhai\nschema:")
        + "candidate_reasons:\n  P-10: \"Valore {{ valore }} fuori soglia.\"\n";
    let candidate = "fn decide(req, ctx) {\n    if req.valore == 7 { refer(\"P-02\"); return; }\n    check(\"P-01\", req.valore < 20);\n    check(\"P-10\", req.valore != 15, #{ valore: req.valore });\n}\n";
    let mut cases = vec![
        prova_case(1, "{ esito: accolta }"),
        prova_case(7, "{ esito: rinvio, motivi: [P-02] }"),
        prova_case(12, "{ esito: non_accolta, motivi: [P-01] }\n    candidate: { esito: accolta }"),
        prova_case(25, "{ esito: non_accolta, motivi: [P-01] }"),
        prova_case(15, "{ esito: non_accolta, motivi: [P-01] }\n    candidate: { esito: non_accolta, motivi: [P-10] }"),
    ];
    let dir = prova_rules(&env, &task, &cases, &[("candidate.rhai", candidate)]);
    let run = || env.run(&["rules", "test", dir.to_str().expect("utf-8 path")]);
    let out = run();
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("ok   PROVA (candidate)  valore 15\n"), "{text}");
    assert!(text.contains("coverage PROVA: 2/2 reason codes\n"), "{text}");
    assert!(text.contains("coverage PROVA (candidate): 3/3 reason codes\n"), "{text}");
    assert!(text.ends_with("10 passed, 0 failed\n"), "{text}");

    // Without its own expectation, the candidate must give what the active rule gives.
    cases[2] = prova_case(12, "{ esito: non_accolta, motivi: [P-01] }");
    let dir = prova_rules(&env, &task, &cases, &[("candidate.rhai", candidate)]);
    let out = run();
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(text.contains("ok   PROVA  valore 12\n"), "{text}");
    assert!(text.contains("FAIL PROVA (candidate)  valore 12\n"), "{text}");
    assert!(text.ends_with("9 passed, 1 failed\n"), "{text}");
    let out = env.run(&["rules", "test", dir.to_str().expect("utf-8 path"), "--json"]);
    let report: Value = serde_json::from_slice(&out.stdout).expect("json");
    let failed: Vec<&Value> = report["candidate_cases"]
        .as_array()
        .expect("candidate cases")
        .iter()
        .filter(|c| c["status"] == "fail")
        .collect();
    assert_eq!(failed.len(), 1, "{report:#}");
    assert_eq!(failed[0]["name"], "valore 12");
    assert_eq!(report["candidate_coverage"][0]["total"], 3, "{report:#}");

    // A `candidate:` expectation on a task without a candidate is a problem of the file (the same directory,
    // rewritten).
    prova_rules(&env, PROVA_TASK, &cases[4..], &[]);
    let out = run();
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(text.contains("`candidate`: PROVA has no shadow candidate"), "{text}");
}
