//! Operations: the /metrics, /healthz and /readyz endpoint of a running daemon (every metric the dashboard
//! and the alerts use must be in a real scrape), the systemd protocol (READY, RELOADING, STOPPING, and
//! watchdog pings that stop when a worker is stuck), refused reloads counted, and cron runs made up once
//! after a downtime.

mod common;

use std::os::unix::net::UnixDatagram;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::daemon::{free_port, get, stop, wait_for, with_api};
use common::{Db, Env, Settings, copy_dir, rdi};

const RICCI_REP: &str = "RCCFNC79B12H501Q";

/// 25 days in milliseconds, written as one literal: `25 * 86400000` overflows PostgreSQL's 32-bit integer
/// arithmetic on literals.
const DAYS_25: i64 = 25 * 86_400_000;

/// Makes every cron job due now, as if the daemon had been down past their instants.
fn cron_overdue(env: &Env) {
    env.ok(&["migrate"]);
    for job in ["lease_reaper", "sla_escalation"] {
        env.sql(&format!("INSERT INTO cron_jobs (name, next_run_at) VALUES ('{job}', 1000) ON CONFLICT (name) DO UPDATE SET next_run_at = 1000"));
    }
}

fn every_metric_of_the_dashboard_and_alerts_is_in_a_real_scrape(db: Db) {
    let env = Env::new(db);
    let port = free_port();
    with_api(&env, port);
    env.import_examples();
    cron_overdue(&env);
    env.submit(&rdi("RSSMRA80A01H501U", "AZIENDA", "1234567890", "VRDGPP80A41H501Y", ""));
    env.submit(&rdi("FRRLCU75D05H501G", "AZIENDA", "4567890123", "GLLSFN88H10L219C", ""));
    let child = env.command(&["run"]).stdout(Stdio::null()).stderr(Stdio::null()).spawn().expect("spawn");
    wait_for("the endpoint", 30, || get(port, "/readyz").0 == 200);
    wait_for("the decisions", 30, || env.sql("SELECT COUNT(*) FROM requests WHERE stato = 'chiusa'")[0][0] == 2);
    wait_for("the cron runs", 30, || {
        env.sql("SELECT COUNT(*) FROM cron_jobs WHERE last_success_at IS NOT NULL")[0][0] == 2
    });
    let (status, scrape) = get(port, "/metrics");
    assert_eq!(status, 200);
    let wanted = std::fs::read_to_string(common::repo().join("monitoring/metrics.txt")).expect("metrics.txt");
    for name in wanted.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
        assert!(
            scrape.lines().any(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ', '_'])),
            "`{name}` is not in the scrape:\n{scrape}"
        );
    }
    assert!(
        scrape.contains("smart_task_decisions_total{task=\"REVOCA_DELEGA_INTERMEDIARIO\",outcome=\"accolta\"} 1"),
        "{scrape}"
    );
    assert!(
        scrape.contains("smart_task_reasons_total{task=\"REVOCA_DELEGA_INTERMEDIARIO\",code=\"RDI-01\"} 1"),
        "{scrape}"
    );
    assert!(scrape.contains("smart_task_requests{stato=\"chiusa\"} 2"), "{scrape}");
    assert!(scrape.contains("le=\"0.001\""), "explicit buckets: {scrape}");
    assert!(!scrape.contains("RSSMRA80A01H501U") && !scrape.contains("@"), "no personal data in labels");
    assert_eq!(get(port, "/healthz").0, 200);
    assert_eq!(get(port, "/nowhere").0, 404);
    // Every answer carries a request id: the caller's, or a new one.
    let (_, head, _) = common::daemon::request(port, "/healthz", "X-Request-Id: prova-123\r\n");
    assert!(head.to_ascii_lowercase().contains("x-request-id: prova-123"), "{head}");
    let (_, head, _) = common::daemon::request(port, "/healthz", "");
    assert!(head.to_ascii_lowercase().contains("x-request-id: "), "{head}");
    stop(child);
}

fn a_cron_run_missed_while_down_runs_once_after_start(db: Db) {
    let env = Env::new(db);
    env.import_examples();
    // A request referred to an operator 25 days ago: the SLA warning is due (day 20), the breach is not.
    let stored = env.submit(
        &rdi("RCCFNC79B12H501Q", "AZIENDA", "6789012345", "VRDGPP80A41H501Y", "").replace("REVOCA\n", "ALTRO\n"),
    );
    env.decide_all();
    let p = stored[0]["protocollo"].as_str().expect("p").to_string();
    let id = env.show(&p)["id"].as_i64().expect("id");
    env.sql(&format!("UPDATE requests SET creata_il = creata_il - {DAYS_25} WHERE id = {id}"));
    cron_overdue(&env);
    let child = env.command(&["run"]).stdout(Stdio::null()).stderr(Stdio::null()).spawn().expect("spawn");
    wait_for("the made-up run", 30, || env.sql("SELECT COUNT(*) FROM events WHERE kind = 'sla_avviso'")[0][0] == 1);
    std::thread::sleep(Duration::from_millis(1500));
    stop(child);
    assert_eq!(env.sql("SELECT COUNT(*) FROM events WHERE kind = 'sla_avviso'")[0][0], 1, "once");
    assert_eq!(env.sql("SELECT COUNT(*) FROM events WHERE kind = 'sla_superato'")[0][0], 0);
    let next = env.sql("SELECT next_run_at FROM cron_jobs WHERE name = 'sla_escalation'")[0][0].as_i64().expect("next");
    assert!(next > smart_task::clock::now_ms(), "the next run is in the future, not a backlog of missed ones");
    // The sede is told (roma: aziende.roma@inps.it).
    assert_eq!(env.sql("SELECT recipient FROM outbox WHERE event = 'sla_avviso'")[0][0], "aziende.roma@inps.it");
    // A second start does not run it again.
    let child = env.command(&["run"]).stdout(Stdio::null()).stderr(Stdio::null()).spawn().expect("spawn");
    std::thread::sleep(Duration::from_millis(1500));
    stop(child);
    assert_eq!(env.sql("SELECT COUNT(*) FROM events WHERE kind = 'sla_avviso'")[0][0], 1);
}

/// What a fake NOTIFY_SOCKET received: each message with the instant it arrived.
type Received = Arc<Mutex<Vec<(Instant, String)>>>;

/// The messages a daemon sends to a fake NOTIFY_SOCKET, with the instant each arrived.
fn notify_socket(dir: &std::path::Path) -> (std::path::PathBuf, Received) {
    let path = dir.join("notify.sock");
    let socket = UnixDatagram::bind(&path).expect("bind notify socket");
    socket.set_read_timeout(Some(Duration::from_millis(200))).expect("timeout");
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = seen.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        loop {
            if let Ok(n) = socket.recv(&mut buf)
                && let Ok(mut s) = sink.lock()
            {
                s.push((Instant::now(), String::from_utf8_lossy(&buf[..n]).into_owned()));
            }
        }
    });
    (path, seen)
}

fn messages(seen: &Received) -> Vec<(Instant, String)> {
    seen.lock().map(|s| s.clone()).unwrap_or_default()
}

fn systemd_protocol_ready_reloading_stopping_and_a_watchdog_that_stops_when_a_worker_is_stuck(db: Db) {
    let rules = tempfile::tempdir().expect("tempdir");
    // Stuck for up to 6 s on its hostile request: a long loop within a huge budget, stopped only by the deadline.
    common::rules_with_hostile_task(
        rules.path(),
        "PROVA_BLOCCO",
        "fn decide(req, ctx) { let x = 0; while true { x += 1; } }",
    );
    let env = Env::with(
        db,
        Settings {
            rules_dir: rules.path().to_path_buf(),
            max_operations: 100_000_000_000,
            deadline_ms: 6_000,
            workers: 1,
            watch_interval_ms: 0,
            ..Default::default()
        },
    );
    let sock_dir = tempfile::tempdir().expect("tempdir");
    let (path, seen) = notify_socket(sock_dir.path());
    let child = env
        .command(&["run"])
        .env("NOTIFY_SOCKET", &path)
        .env("WATCHDOG_USEC", "600000")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    wait_for("READY=1", 30, || messages(&seen).iter().any(|(_, m)| m.contains("READY=1")));
    wait_for("watchdog pings", 10, || messages(&seen).iter().filter(|(_, m)| m.contains("WATCHDOG=1")).count() >= 3);
    // SIGHUP: RELOADING=1 with MONOTONIC_USEC, then READY=1.
    let _ = std::process::Command::new("kill").args(["-HUP", &child.id().to_string()]).status();
    wait_for("RELOADING=1", 10, || {
        messages(&seen).iter().any(|(_, m)| m.contains("RELOADING=1") && m.contains("MONOTONIC_USEC="))
    });
    // A stuck worker: pings stop while the rule runs.
    env.submit(&common::hostile_request("PROVA_BLOCCO"));
    std::thread::sleep(Duration::from_millis(2500));
    let last_ping =
        messages(&seen).iter().filter(|(_, m)| m.contains("WATCHDOG=1")).map(|(t, _)| *t).max().expect("pings");
    assert!(
        last_ping.elapsed() > Duration::from_millis(1200),
        "the watchdog kept being pinged while the worker was stuck"
    );
    // Once the deadline stops the rule, the worker lives again and the pings resume.
    wait_for("pings again", 20, || {
        messages(&seen)
            .iter()
            .filter(|(_, m)| m.contains("WATCHDOG=1"))
            .any(|(t, _)| t.elapsed() < Duration::from_millis(300))
    });
    stop(child);
    wait_for("STOPPING=1", 10, || messages(&seen).iter().any(|(_, m)| m.contains("STOPPING=1")));
}

fn a_sighup_with_a_broken_rule_keeps_the_old_rule_and_counts_the_refusal(db: Db) {
    let rules = tempfile::tempdir().expect("tempdir");
    copy_dir(&common::repo().join("rules"), rules.path());
    let env =
        Env::with(db, Settings { rules_dir: rules.path().to_path_buf(), watch_interval_ms: 0, ..Default::default() });
    let port = free_port();
    with_api(&env, port);
    env.import_examples();
    let child = env.command(&["run"]).stdout(Stdio::null()).stderr(Stdio::null()).spawn().expect("spawn");
    wait_for("the endpoint", 30, || get(port, "/readyz").0 == 200);
    let rule = rules.path().join("revoca_delega_intermediario/rule.rhai");
    let original = std::fs::read_to_string(&rule).expect("rule");
    std::fs::write(&rule, original.replace("fn decide(req, ctx) {", "fn decide(req, ctx) {{")).expect("write");
    let _ = std::process::Command::new("kill").args(["-HUP", &child.id().to_string()]).status();
    wait_for("the refusal", 10, || {
        get(port, "/metrics").1.contains("smart_task_rule_reloads_total{outcome=\"refused\"} 1")
    });
    // The old rule still decides (the broken file is only on disk; submit reads the schema from the
    // process's own, good, copy via the daemon — so restore before submitting).
    std::fs::write(&rule, &original).expect("restore");
    let stored = env.submit(&rdi("RSSMRA80A01H501U", "AZIENDA", "1234567890", "VRDGPP80A41H501Y", ""));
    let p = stored[0]["protocollo"].as_str().expect("p").to_string();
    wait_for("the decision", 30, || env.show(&p)["stato"] == "chiusa");
    assert_eq!(env.show(&p)["esito"], "accolta");
    let scrape = get(port, "/metrics").1;
    assert!(scrape.contains("smart_task_rule_reloads_total{outcome=\"activated\"} 0"), "{scrape}");
    stop(child);
}

fn the_daily_summary_and_the_sla_warning_are_emailed(db: Db) {
    let env = Env::new(db);
    env.import_examples();
    env.submit(&rdi("RSSMRA80A01H501U", "AZIENDA", "1234567890", "VRDGPP80A41H501Y", ""));
    // A request referred to the Roma sede 25 days ago: the SLA warning is due.
    let referred =
        env.submit(&rdi(RICCI_REP, "AZIENDA", "6789012345", "VRDGPP80A41H501Y", "").replace("REVOCA\n", "ALTRO\n"));
    env.decide_all();
    let p = referred[0]["protocollo"].as_str().expect("p").to_string();
    env.sql(&format!("UPDATE requests SET creata_il = creata_il - {DAYS_25} WHERE protocollo = '{p}'"));
    // A real SMTP server (aiosmtpd, as in tests/notifications.rs) writing a Maildir.
    let port = free_port();
    let maildir = env.path("maildir");
    let mut sink = std::process::Command::new(common::python::smtp_python())
        .arg(common::repo().join("tests/support/smtp_sink.py"))
        .args(["serve", "--port", &port.to_string(), "--maildir"])
        .arg(&maildir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3");
    let mut ready = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(sink.stdout.take().expect("stdout")), &mut ready)
        .expect("read");
    assert_eq!(ready.trim(), "ready", "the SMTP sink did not start (see tests/common/python.rs)");
    let config = std::fs::read_to_string(&env.config).expect("config");
    std::fs::write(
        &env.config,
        format!(
            "{config}notify:\n  templates_dir: {}\n  email:\n    url: smtp://127.0.0.1:{port}\n    from: \"Smart-Task <noreply@inps.test>\"\n\
             schedule:\n  daily_summary:\n    cron: \"0 8 * * *\"\n    enabled: true\n    to: operazioni@inps.test\n",
            common::repo().join("config/templates").display()
        ),
    )
    .expect("write config");
    env.ok(&["migrate"]);
    env.sql("INSERT INTO cron_jobs (name, next_run_at) VALUES ('daily_summary', 1000)");
    env.sql("INSERT INTO cron_jobs (name, next_run_at) VALUES ('sla_escalation', 1000)");
    let child = env.command(&["run"]).stdout(Stdio::null()).stderr(Stdio::null()).spawn().expect("spawn");
    let mail_with = |needle: &str| -> Option<String> {
        let dir = std::fs::read_dir(maildir.join("new")).ok()?;
        dir.flatten().filter_map(|e| std::fs::read_to_string(e.path()).ok()).find(|m| m.contains(needle))
    };
    let mail = || mail_with("riepilogo");
    wait_for("the summary e-mail", 30, || mail().is_some());
    // Headers may be folded: unfold them before looking for the subject.
    let sla = || mail_with("X-RcptTo: aziende.roma@inps.it").map(|m| m.replace("\r\n ", " "));
    wait_for("the SLA e-mail to the sede", 30, || sla().is_some());
    let sla = sla().expect("sla mail");
    assert!(sla.contains(&format!("Subject: Pratica {p} in attesa da 20 giorni")), "{sla}");
    stop(child);
    let _ = sink.kill();
    let _ = sink.wait();
    let text = mail().expect("mail");
    assert!(text.contains("To: operazioni@inps.test"), "{text}");
    assert!(text.contains("Message-ID: <riepilogo-"), "a stable id per day: {text}");
    assert!(text.contains("Decisioni:") && text.contains("accolta: 1"), "{text}");
    assert!(!text.contains("RSSMRA80A01H501U") && !text.contains("richiedente@example.it"), "counts only: {text}");
    assert!(env.sql("SELECT last_success_at FROM cron_jobs WHERE name = 'daily_summary'")[0][0].as_i64().is_some());
}

fn a_sighup_refuses_a_broken_configuration_and_applies_a_new_log_level(db: Db) {
    let env = Env::with(db, Settings { watch_interval_ms: 0, ..Default::default() });
    let port = free_port();
    with_api(&env, port);
    let log = std::fs::File::create(env.path("daemon.log")).expect("log file");
    let child = env.command(&["run"]).stdout(Stdio::null()).stderr(log).spawn().expect("spawn");
    wait_for("the endpoint", 30, || get(port, "/readyz").0 == 200);
    let good = std::fs::read_to_string(&env.config).expect("config");
    let log_text = || std::fs::read_to_string(env.path("daemon.log")).unwrap_or_default();
    let hup = || {
        let _ = std::process::Command::new("kill").args(["-HUP", &child.id().to_string()]).status();
    };
    // A misspelt key: refused, counted, the running configuration stays.
    std::fs::write(&env.config, format!("{good}worker:\n  batch_sise: 10\n")).expect("write");
    hup();
    wait_for("the refusal", 10, || log_text().contains("new configuration refused"));
    assert!(log_text().contains("batch_sise"), "{}", log_text());
    let scrape = get(port, "/metrics").1;
    assert!(scrape.contains("smart_task_config_reloads_total{outcome=\"refused\"} 1"), "{scrape}");
    assert!(scrape.contains("smart_task_rule_reloads_total{outcome=\"refused\"} 0"), "not a rule reload: {scrape}");
    assert_eq!(get(port, "/healthz").0, 200, "still running");
    // A new log level applies at once.
    std::fs::write(&env.config, good.replace("level: info", "level: debug")).expect("write");
    hup();
    wait_for("the new level", 10, || log_text().contains("log level changed"));
    wait_for("debug lines", 10, || log_text().contains("DEBUG"));
    stop(child);
}

backends!(
    every_metric_of_the_dashboard_and_alerts_is_in_a_real_scrape,
    a_cron_run_missed_while_down_runs_once_after_start,
    systemd_protocol_ready_reloading_stopping_and_a_watchdog_that_stops_when_a_worker_is_stuck,
    a_sighup_with_a_broken_rule_keeps_the_old_rule_and_counts_the_refusal,
    the_daily_summary_and_the_sla_warning_are_emailed,
    a_sighup_refuses_a_broken_configuration_and_applies_a_new_log_level,
);
