//! The `/metrics` scrape of a real daemon: every family described (`# HELP`) and typed right (counters end in
//! `_total`, the process CPU time is a counter), checked here in Rust and by `promtool check metrics`; every
//! series an alert or a rate needs present at zero from the start (histograms per task included); and the
//! request states partitioning the requests (a parked request is counted once).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::process::Stdio;

use common::daemon::{free_port, get, stop, wait_for, with_api};
use common::{Db, Env, Settings, rdi};

const VERDI: &str = "VRDGPP80A41H501Y";
const RICCI: &str = "RCCFNC79B12H501Q"; // legal representative of 6789012345, where Verdi holds D-8

/// Starts the daemon of `env` with its endpoint on and returns it with a scrape taken once it is ready.
fn scrape_of_running_daemon(env: &Env) -> (std::process::Child, u16, String) {
    let port = free_port();
    with_api(env, port);
    let child = env.command(&["run"]).stdout(Stdio::null()).stderr(Stdio::null()).spawn().expect("spawn");
    wait_for("the endpoint", 30, || get(port, "/readyz").0 == 200);
    let (status, scrape) = get(port, "/metrics");
    assert_eq!(status, 200, "{scrape}");
    (child, port, scrape)
}

/// The structural rules of the text format that promtool also checks, so the test cannot pass vacuously
/// where promtool is missing: every sample belongs to a family with `# HELP` and `# TYPE`, declared before
/// its samples; counters end in `_total` and nothing else does; a histogram has `_bucket` (with
/// `le="+Inf"`), `_sum` and `_count`. Returns the problems and the families by type.
fn structure(scrape: &str) -> (Vec<String>, BTreeMap<String, String>) {
    let mut problems = Vec::new();
    let (mut help, mut types) = (BTreeSet::new(), BTreeMap::new());
    let mut histogram_parts: BTreeMap<String, BTreeSet<&str>> = BTreeMap::new();
    for (n, line) in scrape.lines().enumerate().map(|(i, l)| (i + 1, l)) {
        if line.trim().is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, text) = rest.split_once(' ').unwrap_or((rest, ""));
            if text.trim().is_empty() {
                problems.push(format!("line {n}: `{name}` has an empty HELP"));
            }
            help.insert(name.to_string());
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, ""));
            match (kind, name.ends_with("_total")) {
                ("counter", false) => problems.push(format!("line {n}: counter `{name}` does not end in _total")),
                ("counter", true) => {}
                ("gauge" | "histogram" | "summary", true) => {
                    problems.push(format!("line {n}: {kind} `{name}` ends in _total"))
                }
                ("gauge" | "histogram" | "summary", false) => {}
                _ => problems.push(format!("line {n}: `{name}` has type `{kind}`")),
            }
            types.insert(name.to_string(), kind.to_string());
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        let name = line.split(['{', ' ']).next().unwrap_or_default();
        let value = line.rsplit(' ').next().unwrap_or_default();
        if value.parse::<f64>().is_err() {
            problems.push(format!("line {n}: `{line}` has no numeric value"));
        }
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| {
                let base = name.strip_suffix(suffix)?;
                (types.get(base).map(String::as_str) == Some("histogram")).then(|| {
                    if *suffix != "_bucket" || line.contains("le=\"+Inf\"") {
                        histogram_parts.entry(base.to_string()).or_default().insert(suffix);
                    }
                    base
                })
            })
            .unwrap_or(name);
        if !types.contains_key(family) {
            problems.push(format!("line {n}: `{name}` has no # TYPE before it"));
        }
        if !help.contains(family) {
            problems.push(format!("line {n}: `{name}` has no # HELP"));
        }
    }
    for (name, kind) in &types {
        if kind == "histogram" && histogram_parts.get(name).map_or(0, BTreeSet::len) != 3 {
            problems.push(format!("histogram `{name}` lacks one of _bucket{{le=\"+Inf\"}}, _sum, _count"));
        }
    }
    (problems, types)
}

/// `promtool check metrics` on the scrape: prints nothing when the scrape is clean. promtool comes from
/// PATH (Debian: apt-get install prometheus); without it the test fails, unless
/// SMART_TASK_TEST_WITHOUT_PROMTOOL=1 says to rely on the structural check alone.
fn promtool_problems(scrape: &str) -> Option<String> {
    use std::io::Write;
    let spawned = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match spawned {
        Ok(child) => child,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            assert!(
                std::env::var("SMART_TASK_TEST_WITHOUT_PROMTOOL").is_ok_and(|v| v == "1"),
                "promtool is not on PATH: install it (Debian: apt-get install prometheus) or set \
                 SMART_TASK_TEST_WITHOUT_PROMTOOL=1 to run the structural check alone"
            );
            return None;
        }
        Err(e) => panic!("cannot run promtool: {e}"),
    };
    child.stdin.take().expect("stdin").write_all(scrape.as_bytes()).expect("write to promtool");
    let out = child.wait_with_output().expect("promtool");
    Some(format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

fn a_fresh_daemons_scrape_is_described_typed_and_passes_promtool(db: Db) {
    let env = Env::new(db);
    let (child, _, scrape) = scrape_of_running_daemon(&env);
    stop(child);
    let (problems, types) = structure(&scrape);
    assert!(problems.is_empty(), "{}\n\n{scrape}", problems.join("\n"));
    for (family, kind) in [
        ("process_cpu_seconds_total", "counter"),
        ("process_resident_memory_bytes", "gauge"),
        ("process_start_time_seconds", "gauge"),
        ("smart_task_decision_duration_seconds", "histogram"),
        ("smart_task_queue_wait_seconds", "histogram"),
        ("smart_task_config_reloads_total", "counter"),
        ("smart_task_notifications_pending", "gauge"),
        ("smart_task_oldest_pending_notification_age_seconds", "gauge"),
    ] {
        assert_eq!(types.get(family).map(String::as_str), Some(kind), "{family}:\n{scrape}");
    }
    // Before any request: histograms at zero (per task), and the counters alerts take `increase()` of.
    for series in [
        "smart_task_decision_duration_seconds_count{task=\"REVOCA_DELEGA_INTERMEDIARIO\"} 0",
        "smart_task_decision_duration_seconds_count{task=\"CANCELLAZIONE_CONTATTI_ANOMALI_NDR\"} 0",
        "smart_task_queue_wait_seconds_count 0",
        "smart_task_rule_failures_total{task=\"REVOCA_DELEGA_INTERMEDIARIO\",kind=\"error\"} 0",
        "smart_task_decisions_total{task=\"REVOCA_DELEGA_INTERMEDIARIO\",outcome=\"accolta\"} 0",
        "smart_task_reasons_total{task=\"REVOCA_DELEGA_INTERMEDIARIO\",code=\"RDI-02\"} 0",
        "smart_task_cron_runs_total{cron_job=\"lease_reaper\",outcome=\"failure\"} 0",
        "smart_task_cron_runs_total{cron_job=\"sla_escalation\",outcome=\"failure\"} 0",
        "smart_task_config_reloads_total{outcome=\"refused\"} 0",
        "smart_task_notifications_pending 0",
        "smart_task_requests{stato=\"sospesa\"} 0",
    ] {
        assert!(scrape.lines().any(|l| l == series), "`{series}` is not in the scrape:\n{scrape}");
    }
    if let Some(out) = promtool_problems(&scrape) {
        assert!(out.trim().is_empty(), "promtool check metrics:\n{out}\n\n{scrape}");
    }
}

/// `smart_task_requests{stato=…}` values of a scrape.
fn states(scrape: &str) -> BTreeMap<String, i64> {
    scrape
        .lines()
        .filter_map(|l| l.strip_prefix("smart_task_requests{stato=\""))
        .filter_map(|l| l.split_once("\"} "))
        .map(|(stato, n)| (stato.to_string(), n.parse::<f64>().expect("a number") as i64))
        .collect()
}

fn parked_and_referred_requests_are_counted_once(db: Db) {
    // The shipped rules plus a task whose rule always fails (the operation budget), parked after 2 failures.
    let rules = tempfile::tempdir().expect("tempdir");
    common::rules_with_hostile_task(rules.path(), "PROVA_GUASTO", "fn decide(req, ctx) { loop { } }");
    let env = Env::with(db, Settings { rules_dir: rules.path().to_path_buf(), max_failures: 2, ..Default::default() });
    env.import_examples();
    env.submit(&rdi(RICCI, "AZIENDA", "6789012345", VERDI, "").replace("REVOCA\n", "ALTRO\n")); // referred
    env.submit(&common::hostile_request("PROVA_GUASTO")); // parked
    env.submit(&rdi("RSSMRA80A01H501U", "AZIENDA", "1234567890", VERDI, "")); // accepted
    env.decide_all();
    let parked: Vec<(String, String)> = env
        .list()
        .iter()
        .map(|r| (r["stato"].as_str().unwrap_or("?").to_string(), r["sospesa"].as_str().unwrap_or("-").to_string()))
        .collect();
    assert_eq!(parked.iter().filter(|(stato, _)| stato == "in_carico").count(), 2, "{parked:?}");

    let (child, _, scrape) = scrape_of_running_daemon(&env);
    stop(child);
    let by_state = states(&scrape);
    let expected: BTreeMap<String, i64> =
        [("aperta", 0), ("in_carico", 0), ("rinviata", 1), ("sospesa", 1), ("chiusa", 1)]
            .into_iter()
            .map(|(s, n)| (s.to_string(), n))
            .collect();
    assert_eq!(by_state, expected, "the states partition the 3 requests:\n{scrape}");
    assert_eq!(by_state.values().sum::<i64>(), 3);
}

backends!(a_fresh_daemons_scrape_is_described_typed_and_passes_promtool, parked_and_referred_requests_are_counted_once,);
