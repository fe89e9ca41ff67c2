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
