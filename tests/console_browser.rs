//! The operator console in a real browser, on SQLite: Debian's Chromium driven by playwright-core
//! (tests/console/console.mjs), operators logging in through a real local OpenID provider (oidc-provider,
//! tests/console/oidc.mjs), axe-core's WCAG 2.1 A/AA rules on every page. The Node packages are pinned by
//! tests/console/package-lock.json and installed with `npm ci` under the cargo target directory (once; again
//! when the lock file changes). Needs node, npm and /usr/bin/chromium (`apt-get install chromium`;
//! scripts/test.sh installs it): without them the tests fail, because a skipped browser test is a silent gate.
//! Screenshots of every page are kept in `target/console-screenshots/`.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use common::daemon::{free_port, get, stop, wait_for, with_api};
use common::{Db, Env, Settings, output_within, repo};
use serde_json::Value;

const CHROMIUM: &str = "/usr/bin/chromium";
/// The client of the console at the provider (tests/console/oidc.mjs registers it).
const CLIENT_ID: &str = "smart-task-console";
const CLIENT_SECRET: &str = "segreto-di-prova";
/// Where the provider sends the browser back, under the console's root.
const CALLBACK: &str = "/console/callback";
/// The task of the rule that fails, then is fixed.
const GUASTO: &str = "PROVA_GUASTO";
const PARKED: usize = 3;

/// The Node packages of tests/console, installed once per test binary into `$CARGO_TARGET_TMPDIR/console-npm`;
/// the scripts are copied beside them (they resolve their imports from their own directory).
fn node_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        assert!(
            Path::new(CHROMIUM).exists(),
            "{CHROMIUM} is missing: install Debian's Chromium (`apt-get install chromium`; scripts/test.sh does it) \
             to run the console's browser tests"
        );
        let src = repo().join("tests/console");
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("console-npm");
        common::npm::install(
            &src,
            &dir,
            "node_modules/playwright-core/package.json",
            "run the console's browser tests",
        );
        for file in [
            "node_modules/playwright-core/package.json",
            "node_modules/oidc-provider/package.json",
            "node_modules/axe-core/axe.min.js",
        ] {
            assert!(dir.join(file).exists(), "npm ci did not install {}", dir.join(file).display());
        }
        // The scripts, once per test binary: the tests run at once, and a copy under a running script would
        // hand it a half-written file.
        for entry in std::fs::read_dir(&src).expect("read tests/console").flatten() {
            let path = entry.path();
            if path.extension().is_some_and(|e| e == "mjs") {
                std::fs::copy(&path, dir.join(entry.file_name())).expect("copy a script of tests/console");
            }
        }
        dir
    })
}

fn node(script: &str) -> Command {
    let mut c = Command::new("node");
    c.arg(script).current_dir(node_dir()).env("CHROMIUM", CHROMIUM);
    c
}

/// The screenshots' directory, `target/console-screenshots/NAME` (kept after the run).
fn screenshots(name: &str) -> PathBuf {
    let target = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).parent().expect("the target directory").to_path_buf();
    let dir = target.join("console-screenshots").join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create the screenshots' directory");
    dir
}

/// tests/console/oidc.mjs on a free port, sending browsers back to `redirect`; stopped (SIGTERM) on drop.
struct Provider {
    child: Option<Child>,
    port: u16,
    log: PathBuf,
}

impl Provider {
    fn start(redirect: &str, log: PathBuf) -> Provider {
        let port = free_port();
        let stderr = std::fs::File::create(&log).expect("the provider's log");
        let mut child = node("oidc.mjs")
            .args(["--port", &port.to_string(), "--redirect", redirect])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot run node ({e}): install Node.js 20+ to run the console's browser tests")
            });
        let stdout = child.stdout.take().expect("the provider's stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let mut provider = Provider { child: Some(child), port, log };
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(line) if line == "ready" => provider,
            other => {
                let log = provider.log();
                provider.stop();
                panic!("the OpenID provider did not print `ready` ({other:?}):\n{log}")
            }
        }
    }

    fn issuer(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn stop(&mut self) {
        if let Some(child) = self.child.take() {
            stop(child);
        }
    }
}

impl Drop for Provider {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Runs a script of tests/console with `vars`, printing what it printed; fails the test unless it exits 0.
fn run_script(script: &str, vars: &[(&str, String)], logs: &[(&str, String)]) {
    let mut command = node(script);
    for (k, v) in vars {
        command.env(k, v);
    }
    let out = output_within(&mut command, Duration::from_secs(300));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("== node {script}\n{stdout}\n{stderr}");
    if !out.status.success() {
        let logs: String = logs.iter().map(|(name, text)| format!("== {name}\n{text}\n")).collect();
        panic!("node {script} failed ({}):\n{stdout}\n{stderr}\n{logs}", out.status);
    }
}

#[test]
fn the_provider_logs_operators_in_with_pkce_and_the_sede_claims() {
    let dir = tempfile::tempdir().expect("tempdir");
    let callback = format!("http://127.0.0.1:{}/callback", free_port());
    let mut provider = Provider::start(&callback, dir.path().join("oidc.log"));
    run_script(
        "provider_check.mjs",
        &[("ISSUER", provider.issuer()), ("REDIRECT_URI", callback)],
        &[("oidc.mjs", provider.log())],
    );
    provider.stop();
}

fn protocollo(stored: &[Value]) -> String {
    stored[0]["protocollo"].as_str().expect("protocollo").to_string()
}

/// The `console:` section of the daemon's configuration (the console's contract): served under `/console`
/// on `api.listen`, logging operators in at the provider (code flow with PKCE), session cookies signed with the
/// key of `session_key`.
fn console_section(issuer: &str, redirect: &str, session_key: &Path) -> String {
    format!(
        "console:\n  path: /console\n  session_key_file: {}\n  oidc:\n    issuer: {issuer}\n    client_id: {CLIENT_ID}\n    \
         client_secret: {CLIENT_SECRET}\n    redirect_url: {redirect}\n    scopes: [openid, sede]\n",
        session_key.display()
    )
}

#[test]
fn operators_work_the_queue_in_the_console() {
    // The shipped rules plus a task whose rule fails: its requests are parked after one failure.
    let rules = tempfile::tempdir().expect("tempdir");
    common::rules_with_hostile_task(rules.path(), GUASTO, "fn decide(req, ctx) { throw \"guasto\"; }");
    let env = Env::with(
        Db::Sqlite,
        Settings { rules_dir: rules.path().to_path_buf(), max_failures: 1, ..Default::default() },
    );
    env.import_examples();

    // Every example request, decided; then rdi-07 (referred to sede 7000) with its diffida. Last, because the
    // accepted variations of the examples change the contacts that its rule reads: referred before them, its
    // close would be refused (the facts changed since the referral) and only a new decision would do.
    let mut files: Vec<PathBuf> = std::fs::read_dir(repo().join("examples/requests"))
        .expect("examples/requests")
        .map(|e| e.expect("an example").path())
        .collect();
    files.sort();
    let (rdi07, others): (Vec<PathBuf>, Vec<PathBuf>) =
        files.into_iter().partition(|f| f.file_name().is_some_and(|n| n.to_string_lossy().starts_with("rdi-07")));
    for file in &others {
        env.submit(&std::fs::read_to_string(file).expect("an example request"));
    }
    env.decide_all();
    let rdi07 = rdi07.first().expect("examples/requests/rdi-07-*");
    let pdf = repo().join("examples/allegati/diffida.pdf");
    let out = env.ok(&["submit", rdi07.to_str().expect("utf-8"), "--allegato", pdf.to_str().expect("utf-8"), "--json"]);
    let rinvio = protocollo(&serde_json::from_str::<Vec<Value>>(&out).expect("submit --json"));
    // A referral of sede 1300 (Colombo Servizi, Milano Nord: its consultant revoked for "other" reasons).
    let altra_sede = protocollo(
        &env.submit(
            &common::rdi(
                "CLMNNA82R55F205H",
                "AZIENDA",
                "5678901234",
                "GLLSFN88H10L219C",
                "note: \"Revoca per altri motivi.\"\n",
            )
            .replace("REVOCA\n", "ALTRO\n"),
        ),
    );
    let guasti: Vec<String> = (0..PARKED).map(|_| protocollo(&env.submit(&common::hostile_request(GUASTO)))).collect();
    env.decide_all();

    let view = env.show(&rinvio);
    assert_eq!(view["sospesa"], "rinvio", "rdi-07 is referred: {view}");
    assert_eq!(view["sede"], "7000", "{view}");
    let view = env.show(&altra_sede);
    assert_eq!(view["sospesa"], "rinvio", "the request of Colombo Servizi is referred: {view}");
    assert_eq!(view["sede"], "1300", "{view}");
    for p in &guasti {
        let view = env.show(p);
        assert_eq!(view["stato"], "in_carico", "parked after its rule failed: {view}");
        assert_ne!(view["sospesa"], "rinvio", "parked, not referred: {view}");
        assert_eq!(view["sede"], "7000", "{view}");
    }

    // The rule is fixed before the daemon starts: the parked requests are of the old version, and requeued
    // in bulk they are decided.
    let rule = rules.path().join(GUASTO.to_lowercase()).join("rule.rhai");
    let text = std::fs::read_to_string(&rule).expect("the failing rule");
    let fixed = text.replace("throw \"guasto\";", "check(\"X-01\", false);");
    assert_ne!(fixed, text, "the failing rule changed: update this test");
    std::fs::write(&rule, fixed).expect("fix the rule");

    // The daemon with the API and the console, on a free port.
    let port = free_port();
    let console_url = format!("http://127.0.0.1:{port}/console");
    let redirect = format!("http://127.0.0.1:{port}{CALLBACK}");
    let mut provider = Provider::start(&redirect, env.path("oidc.log"));
    let key = env.path("console-session.key");
    std::fs::write(&key, (0..32u8).map(|i| i.wrapping_mul(37).wrapping_add(11)).collect::<Vec<u8>>())
        .expect("the session key");
    with_api(&env, port);
    let jwks = repo().join("tests/support/jwt/jwks.json");
    let config = std::fs::read_to_string(&env.config).expect("config");
    let listen = format!("  listen: \"127.0.0.1:{port}\"");
    let auth = format!(
        "{listen}\n  auth:\n    jwks_file: {}\n    issuer: https://portale.test\n    audience: smart-task\n    algorithms: [ES256]\n",
        jwks.display()
    );
    let config = config.replace(&listen, &auth) + console_section(&provider.issuer(), &redirect, &key).as_str();
    std::fs::write(&env.config, config).expect("config");
    let daemon_log = env.path("daemon.log");
    let daemon = env
        .command(&["run"])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&daemon_log).expect("the daemon's log"))
        .spawn()
        .expect("spawn the daemon");
    let log = || std::fs::read_to_string(&daemon_log).unwrap_or_default();
    let mut daemon = Some(daemon);
    let started = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        wait_for("the daemon's /readyz", 60, || {
            let exited = daemon.as_mut().and_then(|d| d.try_wait().ok().flatten());
            assert!(exited.is_none(), "the daemon exited ({exited:?})");
            get(port, "/readyz").0 == 200
        })
    }));
    if let Err(panic) = started {
        if let Some(d) = daemon.take() {
            stop(d);
        }
        let why = panic.downcast_ref::<String>().cloned().unwrap_or_default();
        panic!("the daemon with the console did not start ({why}):\n{}", log());
    }

    let shots = screenshots("operators_work_the_queue");
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        run_script(
            "console.mjs",
            &[
                ("CONSOLE_URL", console_url.clone()),
                ("SCREENSHOTS", shots.display().to_string()),
                ("PROTOCOLLO_RINVIO", rinvio.clone()),
                ("PROTOCOLLO_ALTRA_SEDE", altra_sede.clone()),
                ("SOSPESE", PARKED.to_string()),
            ],
            &[("smart-taskd run", log()), ("oidc.mjs", provider.log())],
        );
    }));
    if let Some(d) = daemon.take() {
        stop(d);
    }
    provider.stop();
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
    println!("screenshots in {}", shots.display());

    // What the operators did in the browser is what the database holds.
    let view = env.show(&rinvio);
    assert_eq!(view["stato"], "chiusa", "{view}");
    assert_eq!(view["esito"], "accolta", "{view}");
    env.decide_all();
    for p in &guasti {
        let view = env.show(p);
        assert_eq!(view["stato"], "chiusa", "requeued and decided by the fixed rule: {view}");
        assert_eq!(view["esito"], "non_accolta", "{view}");
    }
    let view = env.show(&altra_sede);
    assert_eq!(view["sospesa"], "rinvio", "sede 7000's operators did not touch sede 1300's request: {view}");
}
