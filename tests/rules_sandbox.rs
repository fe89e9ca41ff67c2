//! The rule sandbox and the loader's errors, through the library API: what a rule author gets wrong is
//! reported with the file and line, and nothing a rule does can escape its limits.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use smart_task::domain::closing::{ClaimedRequest, Evaluation};
use smart_task::domain::decision::{FailureKind, Outcome};
use smart_task::rules::{Evaluator, FactsView, Limits, load_rule_set};

fn evaluator() -> Evaluator {
    Evaluator::new(Limits { max_operations: 50_000, deadline: Duration::from_millis(200) })
}

const TASK_YAML: &str = "id: PROVA\nlabel: Prova\nschema:\n  type: object\n  properties:\n    valore: { type: integer }\nreasons:\n  P-01: \"Valore troppo alto: {{ valore }}.\"\n  P-02: \"Da verificare.\"\n";

fn write_rules(dir: &Path, task_yaml: &str, rule: &str) {
    let folder = dir.join("prova");
    std::fs::create_dir_all(&folder).expect("mkdir");
    std::fs::write(folder.join("task.yaml"), task_yaml).expect("task.yaml");
    std::fs::write(folder.join("rule.rhai"), rule).expect("rule.rhai");
}

fn load_error(task_yaml: &str, rule: &str) -> String {
    let dir = tempfile::tempdir().expect("tempdir");
    write_rules(dir.path(), task_yaml, rule);
    load_rule_set(dir.path(), &evaluator()).expect_err("must not load").to_string()
}

fn request(valore: i64) -> ClaimedRequest {
    ClaimedRequest {
        id: 1,
        protocollo: "7000.2026.0000001".into(),
        task: "PROVA".into(),
        soggetto: "RSSMRA80A01H501U".into(),
        sede: "7000".into(),
        payload: json!({"task": "PROVA", "richiedente_cf": "RSSMRA80A01H501U", "profilo_richiedente": "AZIENDA", "valore": valore})
            .as_object()
            .cloned()
            .unwrap_or_default(),
        contatti: Default::default(),
        token: 1,
        failures: 0,
        creata_il: 0,
        taken_over: false,
    }
}

fn evaluate(rule: &str, valore: i64) -> Evaluation {
    let dir = tempfile::tempdir().expect("tempdir");
    write_rules(dir.path(), TASK_YAML, rule);
    let ev = evaluator();
    let set = load_rule_set(dir.path(), &ev).expect("rules load");
    let view = Arc::new(FactsView::new(HashMap::new(), None));
    ev.evaluate(set.get("PROVA").expect("task"), &request(valore), view, 1_780_000_000_000)
}

fn failure(rule: &str) -> (FailureKind, String) {
    match evaluate(rule, 1) {
        Evaluation::Failed(f) => (f.kind, f.message),
        Evaluation::Decided(d) => panic!("expected a failure, got {d:?}"),
    }
}

#[test]
fn checks_reasons_and_referrals() {
    let rule = "fn decide(req, ctx) {\n  if req.valore == 7 { refer(\"P-02\"); return; }\n  check(\"P-01\", req.valore < 10, #{ valore: req.valore });\n}";
    let Evaluation::Decided(ok) = evaluate(rule, 3) else { panic!("decided") };
    assert_eq!(ok.outcome, Outcome::Accolta);
    assert_eq!(ok.trace.checks[0].line, 3);
    let Evaluation::Decided(no) = evaluate(rule, 12) else { panic!("decided") };
    assert_eq!(no.outcome, Outcome::NonAccolta);
    assert_eq!(no.reasons[0].messaggio, "Valore troppo alto: 12.");
    let Evaluation::Decided(referred) = evaluate(rule, 7) else { panic!("decided") };
    assert_eq!(referred.outcome, Outcome::Rinvio);
    assert!(referred.trace.operations > 0);
}

#[test]
fn forbidden_functions_fail() {
    assert!(load_error(TASK_YAML, "fn decide(req, ctx) { eval(\"1\") }").contains("eval"));
    let (kind, msg) = failure("fn decide(req, ctx) { sleep(1); }");
    assert_eq!(kind, FailureKind::Error);
    assert!(msg.contains("sleep() is not allowed"), "{msg}");
    let (_, msg) = failure("fn decide(req, ctx) { timestamp(); }");
    assert!(msg.contains("use ctx.now or ctx.today"), "{msg}");
    let err = load_error(TASK_YAML, "import \"os\" as os;\nfn decide(req, ctx) { }");
    assert!(err.contains("rule.rhai") && err.contains("import"), "{err}");
}

#[test]
fn misspelt_properties_and_variables_are_errors_not_silent_unit() {
    let (kind, msg) = failure("fn decide(req, ctx) { check(\"P-01\", req.valroe < 10); }");
    assert_eq!(kind, FailureKind::Error);
    assert!(msg.contains("valroe") && msg.contains("PROVA@"), "{msg}");
    let err = load_error(TASK_YAML, "fn decide(req, ctx) {\n  check(\"P-01\", valore < 10);\n}");
    assert!(err.contains("rule.rhai") && err.contains("valore") && err.contains("line 2"), "{err}");
}

#[test]
fn unknown_reason_codes_and_effects_are_errors() {
    let (_, msg) = failure("fn decide(req, ctx) { check(\"P-99\", false); }");
    assert!(msg.contains("`P-99` is not in the `reasons` catalogue") && msg.contains("P-01, P-02"), "{msg}");
    let (_, msg) = failure("fn decide(req, ctx) { effect(\"delete_everything\", #{}); }");
    assert!(msg.contains("unknown effect `delete_everything`"), "{msg}");
    let (_, msg) = failure("fn decide(req, ctx) { effect(\"revoke_delegation\", #{ delegation_id: \"D-1\" }); }");
    assert!(msg.contains("from"), "{msg}");
    let (_, msg) = failure("fn decide(req, ctx) { check(\"P-01\", false); }");
    assert!(msg.contains("valore"), "a message template missing its value names it: {msg}");
}

#[test]
fn limits_stop_runaway_rules() {
    assert_eq!(failure("fn decide(req, ctx) { loop {} }").0, FailureKind::Budget);
    assert_eq!(failure("fn f(n) { f(n + 1) }\nfn decide(req, ctx) { f(0) }").0, FailureKind::Error);
    let (_, msg) = failure("fn decide(req, ctx) { let s = \"x\"; loop { s += s; } }");
    assert!(msg.contains("too large") || msg.contains("Length of string"), "{msg}");
}

#[test]
fn loader_errors_name_the_file_and_what_to_do() {
    let err = load_error(TASK_YAML, "fn decidi(req, ctx) { }");
    assert!(err.contains("rule.rhai") && err.contains("fn decide(req, ctx)"), "{err}");
    let err = load_error(TASK_YAML, "fn decide(req) { }");
    assert!(err.contains("two parameters"), "{err}");
    let err = load_error(&TASK_YAML.replace("label:", "etichetta:"), "fn decide(req, ctx) { }");
    assert!(err.contains("task.yaml") && err.contains("etichetta") && err.contains("line 2"), "{err}");
    let err = load_error(&TASK_YAML.replace("{{ valore }}", "{{ valore "), "fn decide(req, ctx) { }");
    assert!(err.contains("reasons.P-01"), "{err}");
    let err = load_error(&TASK_YAML.replace("type: integer", "type: intero"), "fn decide(req, ctx) { }");
    assert!(err.contains("schema"), "{err}");
    let err = load_error(TASK_YAML, "fn decide(req, ctx) {\n  let x = 1\n  let y = 2;\n}");
    assert!(err.contains("rule.rhai") && err.contains("line"), "{err}");
}

/// Issue 15: "at most a year ahead" without a hard-coded date. The decision's day is 2026-05-28, a Thursday.
#[test]
fn date_functions_decide_relative_to_the_day_of_the_decision() {
    let rule = "fn decide(req, ctx) {\n  let d = add_working_days(ctx.today, req.valore);\n  check(\"P-01\", is_date(d) && is_working_day(d) && working_days_between(ctx.today, d) == req.valore\n    && d <= add_years(ctx.today, 1) && days_between(ctx.today, d) >= req.valore, #{ valore: d });\n}";
    let Evaluation::Decided(ok) = evaluate(rule, 2) else { panic!("decided") };
    assert_eq!(ok.outcome, Outcome::Accolta, "{ok:?}");
    // 300 working days ahead is past 2027-05-28: refused, and the message shows the date the rule computed.
    let Evaluation::Decided(no) = evaluate(rule, 300) else { panic!("decided") };
    assert_eq!(no.outcome, Outcome::NonAccolta);
    assert!(no.reasons[0].messaggio.starts_with("Valore troppo alto: 2027-"), "{}", no.reasons[0].messaggio);
    // Two working days after Thursday 28 May 2026 is Monday 1 June (2 June, a holiday, is not reached).
    let probe = "fn decide(req, ctx) {\n  check(\"P-01\", add_working_days(ctx.today, 2) == \"2026-06-01\" && add_working_days(\"2026-06-01\", 1) == \"2026-06-03\"\n    && add_months(\"2026-01-31\", 1) == \"2026-02-28\" && !is_date(()) && !is_date(\"2026-02-29\"));\n  if false { refer(\"P-02\"); }\n}";
    let Evaluation::Decided(probed) = evaluate(probe, 0) else { panic!("decided") };
    assert_eq!(probed.outcome, Outcome::Accolta, "{probed:?}");
    // A malformed date or an absurd n stops the rule with an error that says what is wrong.
    let (kind, msg) = failure("fn decide(req, ctx) { check(\"P-01\", add_days(\"2026-13-01\", 1) > ctx.today); }");
    assert_eq!(kind, FailureKind::Error);
    assert!(msg.contains("add_days: \"2026-13-01\" is not a date: expected YYYY-MM-DD"), "{msg}");
    let (kind, msg) = failure("fn decide(req, ctx) { check(\"P-01\", add_days(ctx.today, 1000000) > ctx.today); }");
    assert_eq!(kind, FailureKind::Error);
    assert!(msg.contains("add_days: 1000000 days is out of range: expected at most 36600"), "{msg}");
}
