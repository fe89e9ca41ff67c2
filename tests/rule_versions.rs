//! Rule sets that survive restarts: start-up and `check-config` vet a rules directory exactly as a reload does,
//! every activated version's sources are kept in the database, a daemon whose directory is refused at start runs
//! the last activated set (saying so in its log, a metric and `/readyz`), intake uses the active set, and
//! `explain` quotes an old version's lines after its files are gone. A rules directory with looping symbolic
//! links neither freezes the daemon nor stops it from obeying SIGTERM.

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::daemon::{free_port, get, stop, wait_for, with_api};
use common::{Db, Env, Settings, copy_dir, rdi, stderr};

/// Submits a revocation for `matricola` (of the example world, or unknown); returns its protocol number.
fn submit_one(env: &Env, matricola: &str) -> String {
    let stored = env.submit(&rdi("RSSMRA80A01H501U", "AZIENDA", matricola, "VRDGPP80A41H501Y", ""));
    stored[0]["protocollo"].as_str().expect("protocollo").to_string()
}

fn version_of(env: &Env, protocollo: &str) -> String {
    env.show(protocollo)["versione_regola"].as_str().expect("versione_regola").to_string()
}

fn a_rules_directory_refused_at_restart_runs_the_last_activated_set(db: Db) {
    let rules = tempfile::tempdir().expect("tempdir");
    copy_dir(&common::repo().join("rules"), rules.path());
    let env = Env::with(db, Settings { rules_dir: rules.path().to_path_buf(), ..Default::default() });
    env.import_examples();
    let first = submit_one(&env, "1234567890");
    env.decide_all();
    let v1 = version_of(&env, &first);

    // A change whose cases fail (it compiles and lints clean): refused by check-config as a reload refuses it.
    let rule = rules.path().join("revoca_delega_intermediario/rule.rhai");
    let original = common::break_a_case(rules.path());
    let out = env.run(&["check-config"]);
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), stderr(&out));
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(text.contains("cases.yaml") && text.contains("fails"), "{text}");

    // The daemon restarted on it runs the last activated set, and says so.
    let port = free_port();
    with_api(&env, port);
    let daemon = env.command(&["run"]).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().expect("spawn");
    wait_for("the daemon to be ready", 60, || get(port, "/readyz").0 == 200);
    let (_, body) = get(port, "/readyz");
    assert!(body.contains("running the last activated set"), "{body}");
    assert!(get(port, "/metrics").1.contains("smart_task_rules_fallback 1"), "the fallback metric");
    let second = submit_one(&env, "9000000002");
    wait_for("a decision", 60, || env.show(&second)["stato"] == "chiusa");
    assert_eq!(version_of(&env, &second), v1, "the last activated version decides");
    let status = env.ok(&["rules", "status", "--json"]);
    assert!(status.contains("fails"), "rules status names the directory's problems: {status}");
    stop(daemon);

    // A rule that does not even compile on disk: submissions still validate against the active set.
    std::fs::write(&rule, original.replace("fn decide(req, ctx) {", "fn decide(req, ctx) {{")).expect("write");
    let third = submit_one(&env, "9000000003");
    assert_eq!(env.show(&third)["stato"], "aperta");

    // The files gone altogether: explain still quotes the lines of the version that decided.
    std::fs::remove_dir_all(rules.path()).expect("remove the rules");
    let explained = env.ok(&["explain", &first]);
    assert!(
        explained.contains("di revoca_delega_intermediario/rule.rhai: ") && explained.contains("di lib/common.rhai: "),
        "{explained}"
    );
}

fn without_an_activated_set_a_refused_directory_stops_the_start(db: Db) {
    let rules = tempfile::tempdir().expect("tempdir");
    copy_dir(&common::repo().join("rules"), rules.path());
    common::break_a_case(rules.path());
    let env = Env::with(db, Settings { rules_dir: rules.path().to_path_buf(), ..Default::default() });
    let out = env.run(&["run", "--exit-when-idle"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("no rule set was ever activated"), "{}", stderr(&out));
}

fn looping_symbolic_links_in_the_rules_directory_neither_freeze_nor_block_sigterm(db: Db) {
    let rules = tempfile::tempdir().expect("tempdir");
    copy_dir(&common::repo().join("rules"), rules.path());
    // Two links to the directory itself (2^n paths if followed), and two links to each other.
    for (link, target) in [("a", "."), ("b", "."), ("loop-x", "loop-y"), ("loop-y", "loop-x")] {
        std::os::unix::fs::symlink(target, rules.path().join(link)).expect("symlink");
    }
    let env = Env::with(db, Settings { rules_dir: rules.path().to_path_buf(), ..Default::default() });
    env.import_examples();
    let out = env.run(&["rules", "check"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let daemon = env.command(&["run"]).stdout(Stdio::null()).stderr(Stdio::null()).spawn().expect("spawn");
    let p = submit_one(&env, "9000000001");
    wait_for("a decision", 60, || env.show(&p)["stato"] == "chiusa");
    let pid = daemon.id();
    let started = Instant::now();
    stop(daemon);
    assert!(started.elapsed() < Duration::from_secs(15), "SIGTERM obeyed ({pid})");
}

backends!(
    a_rules_directory_refused_at_restart_runs_the_last_activated_set,
    without_an_activated_set_a_refused_directory_stops_the_start,
    looping_symbolic_links_in_the_rules_directory_neither_freeze_nor_block_sigterm
);
