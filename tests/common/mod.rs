//! Test harness: a temporary directory with its own configuration and a fresh database — a SQLite file, or a
//! database of its own on a throwaway PostgreSQL server ([`pg`]) — driving the real `smart-taskd` binary (and,
//! where a test needs to stop between claim and close, the library API).
//!
//! Tests that touch a database take a [`Db`] and are listed in [`backends!`], which runs each of them on
//! both backends: `sqlite::NAME` and `postgres::NAME` (`cargo test postgres` runs only the latter).

#![allow(dead_code)] // each test binary uses part of the harness

pub mod api;
pub mod daemon;
pub mod npm;
pub mod pg;
pub mod python;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_smart-taskd");

/// The repository root (rules, examples).
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The database backend a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Db {
    Sqlite,
    Postgres,
}

/// Runs each listed `fn NAME(db: Db)` as two tests, `sqlite::NAME` and `postgres::NAME`. The PostgreSQL
/// variant uses the shared throwaway server ([`pg::shared`]); without PostgreSQL installed it prints
/// `SKIPPED ...` and passes, unless `SMART_TASK_TEST_REQUIRE_POSTGRES=1`.
#[macro_export]
macro_rules! backends {
    ($($name:ident),+ $(,)?) => {
        mod sqlite {
            $(
                #[test]
                fn $name() {
                    super::$name($crate::common::Db::Sqlite)
                }
            )+
        }
        mod postgres {
            $(
                #[test]
                fn $name() {
                    let test = concat!(module_path!(), "::", stringify!($name));
                    if $crate::common::pg::shared_or_skip(test).is_some() {
                        super::$name($crate::common::Db::Postgres)
                    }
                }
            )+
        }
    };
}

/// A fresh, empty database: a SQLite file, or a new database on the shared PostgreSQL server (dropped with
/// this value).
pub struct TestDb {
    url: String,
    backend: Db,
}

impl TestDb {
    /// A SQLite database is the file `dir/file` (created by whoever opens it first).
    pub fn new(backend: Db, dir: &Path, file: &str) -> TestDb {
        let url = match backend {
            Db::Sqlite => smart_task::config::sqlite_url(&dir.join(file)),
            Db::Postgres => pg::shared()
                .expect("a PostgreSQL variant runs only with a server (backends! skips it otherwise)")
                .create_database(),
        };
        TestDb { url, backend }
    }

    pub fn url(&self) -> &str {
        &self.url
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if self.backend == Db::Postgres
            && let Some(server) = pg::shared()
        {
            let _ = server.drop_database(&self.url);
        }
    }
}

pub struct Env {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub backend: Db,
    database: TestDb,
}

/// Settings a test may change in the generated configuration.
pub struct Settings {
    pub rules_dir: PathBuf,
    pub lease_seconds: u64,
    pub batch_size: u32,
    pub workers: usize,
    pub max_failures: i64,
    pub max_operations: u64,
    pub deadline_ms: u64,
    pub watch_interval_ms: u64,
    /// `rules.activation`: `directory` (the tests' default: the rules directory as it is) or `promoted`.
    pub activation: &'static str,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            rules_dir: repo().join("rules"),
            lease_seconds: 30,
            batch_size: 64,
            workers: 2,
            max_failures: 3,
            max_operations: 100_000,
            deadline_ms: 250,
            watch_interval_ms: 100,
            activation: "directory",
        }
    }
}

impl Env {
    pub fn new(backend: Db) -> Env {
        Env::with(backend, Settings::default())
    }

    /// For commands that never open the database (`rules check`, `rules test`, `rules docs`): the
    /// configuration names a SQLite file that is never created.
    pub fn without_db() -> Env {
        Env::new(Db::Sqlite)
    }

    pub fn with(backend: Db, s: Settings) -> Env {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = dir.path().join("smart-task.yaml");
        let database = TestDb::new(backend, dir.path(), "smart-task.db");
        // SQLite: relative to the configuration file, as in the shipped configuration.
        let url = match backend {
            Db::Sqlite => "sqlite:smart-task.db",
            Db::Postgres => database.url(),
        };
        let text = format!(
            "database:\n  url: {url}\nrules:\n  dir: {}\n  activation: {}\n  max_operations: {}\n  deadline_ms: {}\n  watch_interval_ms: {}\n\
             worker:\n  workers: {}\n  batch_size: {}\n  lease_seconds: {}\n  poll_interval_ms: 50\n  max_failures: {}\n  retry_base_ms: 20\n  retry_max_ms: 100\n\
             intake:\n  sede_predefinita: \"7000\"\nlog:\n  level: info\napi:\n  listen: null\n",
            s.rules_dir.display(),
            s.activation,
            s.max_operations,
            s.deadline_ms,
            s.watch_interval_ms,
            s.workers,
            s.batch_size,
            s.lease_seconds,
            s.max_failures
        );
        std::fs::write(&config, text).expect("write config");
        Env { dir, config, backend, database }
    }

    /// The database's URL (for SQLite with the file's absolute path).
    pub fn url(&self) -> &str {
        self.database.url()
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(BIN);
        c.arg("--config").arg(&self.config).args(args).env_remove("SMART_TASK_DATABASE_URL").env_remove("RUST_LOG");
        c
    }

    /// Runs the binary and returns its output (whatever the exit code); a run past [`RUN_LIMIT`] is killed
    /// and fails the test.
    pub fn run(&self, args: &[&str]) -> Output {
        output_within(&mut self.command(args), RUN_LIMIT)
    }

    /// Runs the binary and fails the test unless it exits 0.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "smart-taskd {args:?} failed: {}\n{}",
            stderr(&out),
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.path(name);
        std::fs::write(&p, text).expect("write file");
        p
    }

    pub fn import_examples(&self) {
        let facts = repo().join("examples/facts.yaml");
        self.ok(&["facts", "import", facts.to_str().expect("utf-8 path")]);
    }

    /// Submits a request (YAML or JSON text) and returns the stored requests.
    pub fn submit(&self, text: &str) -> Vec<Value> {
        let p = self.write("request.yaml", text);
        let out = self.ok(&["submit", p.to_str().expect("utf-8 path"), "--json"]);
        serde_json::from_str(&out).expect("submit --json output")
    }

    pub fn decide_all(&self) {
        self.ok(&["run", "--exit-when-idle"]);
    }

    pub fn show(&self, key: &str) -> Value {
        serde_json::from_str(&self.ok(&["show", key, "--json"])).expect("show --json output")
    }

    pub fn list(&self) -> Vec<Value> {
        serde_json::from_str(&self.ok(&["list", "--json", "--limit", "100000"])).expect("list --json output")
    }

    /// Rows of a query on the database (tests inspect what the daemon wrote, or set up a state).
    pub fn sql(&self, query: &str) -> Vec<Vec<Value>> {
        sql(self.url(), query)
    }
}

impl Drop for Env {
    /// Kills what the test left running of this environment's daemons (a test that failed before stopping
    /// them): every `smart-taskd` whose arguments name a file of this environment's directory. Their
    /// PostgreSQL connections would otherwise outlive the test.
    fn drop(&mut self) {
        use std::os::unix::ffi::OsStrExt;
        let dir = self.dir.path().as_os_str().as_bytes();
        let Ok(procs) = std::fs::read_dir("/proc") else { return };
        for entry in procs.flatten() {
            let Some(pid) = entry.file_name().to_str().and_then(|p| p.parse::<u32>().ok()) else { continue };
            let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else { continue };
            let mut args = cmdline.split(|b| *b == 0);
            if args.next() == Some(BIN.as_bytes()) && args.any(|a| a.starts_with(dir)) {
                let _ = Command::new("kill").args(["-KILL", &pid.to_string()]).status();
            }
        }
    }
}

/// How long one CLI run may take (`run --exit-when-idle` included) before the test fails instead of hanging.
pub const RUN_LIMIT: std::time::Duration = std::time::Duration::from_secs(120);

/// Like [`Command::output`] (stdin closed, stdout and stderr captured), but a process still running after
/// `limit` is killed and fails the test with what it printed so far.
pub fn output_within(command: &mut Command, limit: std::time::Duration) -> Output {
    use std::io::Read;
    use std::process::Stdio;
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
    let drain = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = pipe.read_to_end(&mut bytes);
            bytes
        })
    };
    let stdout = drain(Box::new(child.stdout.take().expect("stdout")));
    let stderr = drain(Box::new(child.stderr.take().expect("stderr")));
    let deadline = std::time::Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break Some(status);
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    };
    let (stdout, stderr) = (stdout.join().unwrap_or_default(), stderr.join().unwrap_or_default());
    let Some(status) = status else {
        panic!(
            "{command:?} still running after {limit:?}: killed\nstderr:\n{}\nstdout:\n{}",
            String::from_utf8_lossy(&stderr),
            String::from_utf8_lossy(&stdout)
        );
    };
    Output { status, stdout, stderr }
}

/// Now in the daemon's default civil zone (Europe/Rome): the zone its dates and protocol years use when the
/// configuration sets none, which differs from UTC's date in the late evening.
pub fn civil_now() -> chrono::DateTime<chrono_tz::Tz> {
    chrono::Utc::now().with_timezone(&chrono_tz::Europe::Rome)
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Runs a query through sqlx's `Any` driver, outside the daemon; the SQL must be valid on SQLite and
/// PostgreSQL alike. Integers come back as JSON numbers, text as strings, NULL as null (then reals and
/// booleans, which the schema does not use).
pub fn sql(url: &str, query: &str) -> Vec<Vec<Value>> {
    use sqlx::{Connection, Row};
    sqlx::any::install_default_drivers();
    let (url, query) = (url.to_string(), query.to_string());
    block_on(async move {
        let mut conn = sqlx::AnyConnection::connect(&url).await.unwrap_or_else(|e| panic!("cannot open {url}: {e}"));
        let rows = sqlx::query(sqlx::AssertSqlSafe(query.clone()))
            .fetch_all(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("query `{query}` on {url}: {e}"));
        let _ = conn.close().await;
        rows.iter()
            .map(|r| {
                (0..r.len())
                    .map(|i| {
                        if let Ok(v) = r.try_get::<Option<i64>, _>(i) {
                            v.map_or(Value::Null, Value::from)
                        } else if let Ok(v) = r.try_get::<Option<String>, _>(i) {
                            v.map_or(Value::Null, Value::from)
                        } else if let Ok(v) = r.try_get::<Option<f64>, _>(i) {
                            v.map_or(Value::Null, Value::from)
                        } else if let Ok(v) = r.try_get::<Option<bool>, _>(i) {
                            v.map_or(Value::Null, Value::from)
                        } else if let Ok(v) = r.try_get::<Option<Vec<u8>>, _>(i) {
                            // Bytes (attachments' contents) as lowercase hex.
                            v.map_or(Value::Null, |b| b.iter().map(|x| format!("{x:02x}")).collect::<String>().into())
                        } else {
                            panic!("query `{query}`: column {i} has a type the harness does not read")
                        }
                    })
                    .collect()
            })
            .collect()
    })
}

/// Runs `future` to completion on a runtime of its own, on a thread of its own (so that it works from
/// synchronous and asynchronous code alike).
pub fn block_on<F>(future: F) -> F::Output
where
    F: std::future::Future + Send,
    F::Output: Send,
{
    std::thread::scope(|s| {
        s.spawn(|| {
            tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime").block_on(future)
        })
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// Copies a directory tree (e.g. the shipped rules, to change them in a test).
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read_dir").flatten() {
        let (src, dst) = (entry.path(), to.join(entry.file_name()));
        if src.is_dir() {
            copy_dir(&src, &dst);
        } else {
            std::fs::copy(&src, &dst).expect("copy");
        }
    }
}

/// A request of REVOCA_DELEGA_INTERMEDIARIO on the example world.
pub fn rdi(richiedente: &str, profilo: &str, matricola: &str, cf_intermediario: &str, extra: &str) -> String {
    format!(
        "task: REVOCA_DELEGA_INTERMEDIARIO\nrichiedente_cf: {richiedente}\nprofilo_richiedente: {profilo}\n\
         matricola: \"{matricola}\"\ncf_intermediario: \"{cf_intermediario}\"\nmotivazione: REVOCA\n\
         contatti_notifica:\n  email: richiedente@example.it\n  consenso_email: true\n{extra}"
    )
}

/// The reason codes of a request as read back.
pub fn codes(view: &Value) -> Vec<String> {
    view["motivazioni"]
        .as_array()
        .map(|m| m.iter().filter_map(|r| r["codice"].as_str().map(str::to_string)).collect())
        .unwrap_or_default()
}

/// The shipped rules plus a test task `task` that misbehaves only on some input, as a rule in production
/// does: its cases pass (so the set passes the vetting of a start or a reload), and a request carrying
/// `prova: ostile` runs `hostile`, a `fn decide(req, ctx)` that loops, waits out its deadline or fails. The
/// hostile function keeps its line numbers (the dispatching `decide` comes after it).
pub fn rules_with_hostile_task(dir: &Path, task: &str, hostile: &str) {
    copy_dir(&repo().join("rules"), dir);
    let folder = dir.join(task.to_lowercase());
    std::fs::create_dir_all(&folder).expect("mkdir");
    std::fs::write(
        folder.join("task.yaml"),
        format!(
            "id: {task}\nlabel: Prova\nschema:\n  type: object\n  additionalProperties: false\n  properties:\n    \
             prova: {{ type: string }}\nreasons:\n  X-01: \"Motivo di prova.\"\n"
        ),
    )
    .expect("task.yaml");
    let rule = hostile.replacen("fn decide(req, ctx)", "fn ostile(req, ctx)", 1);
    assert_ne!(rule, hostile, "the hostile rule must define fn decide(req, ctx)");
    std::fs::write(
        folder.join("rule.rhai"),
        format!("{rule}\n\nfn decide(req, ctx) {{\n    if req.prova == \"ostile\" {{ ostile(req, ctx); return; }}\n    check(\"X-01\", false);\n}}\n"),
    )
    .expect("rule.rhai");
    std::fs::write(
        folder.join("cases.yaml"),
        "cases:\n  - name: \"una richiesta ordinaria\"\n    request: { richiedente_cf: RSSMRA80A01H501U, profilo_richiedente: AZIENDA }\n    \
         expect: { esito: non_accolta, motivi: [X-01] }\n",
    )
    .expect("cases.yaml");
}

/// A request of a task made by [`rules_with_hostile_task`] that runs its hostile rule.
pub fn hostile_request(task: &str) -> String {
    format!("task: {task}\nrichiedente_cf: RSSMRA80A01H501U\nprofilo_richiedente: AZIENDA\nprova: ostile\n")
}

/// Changes the REVOCA_DELEGA_INTERMEDIARIO rule of a rules directory so that it still compiles and lints clean
/// but one of its cases fails (an unknown matricola referred instead of refused): a candidate every vetting
/// refuses. Returns the rule's original text.
pub fn break_a_case(rules_dir: &Path) -> String {
    let rule = rules_dir.join("revoca_delega_intermediario/rule.rhai");
    let original = std::fs::read_to_string(&rule).expect("rule");
    let broken = original.replace("if azienda == () { return; }", "if azienda == () { refer(\"GEN-05\"); return; }");
    assert_ne!(broken, original, "the rule changed: update break_a_case");
    std::fs::write(&rule, broken).expect("write the rule");
    original
}
