//! Test harness: a temporary directory with its own configuration and SQLite file, driving the real
//! `smart-taskd` binary (and, where a test needs to stop between claim and close, the library API).

#![allow(dead_code)] // each test binary uses part of the harness

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_smart-taskd");

/// The repository root (rules, examples).
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub struct Env {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
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
        }
    }
}

impl Env {
    pub fn new() -> Env {
        Env::with(Settings::default())
    }

    pub fn with(s: Settings) -> Env {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = dir.path().join("smart-task.yaml");
        let text = format!(
            "database:\n  url: sqlite:smart-task.db\nrules:\n  dir: {}\n  max_operations: {}\n  deadline_ms: {}\n  watch_interval_ms: {}\n\
             worker:\n  workers: {}\n  batch_size: {}\n  lease_seconds: {}\n  poll_interval_ms: 50\n  max_failures: {}\n  retry_base_ms: 20\n  retry_max_ms: 100\n\
             intake:\n  sede_predefinita: \"7000\"\nlog:\n  level: info\napi:\n  listen: null\n",
            s.rules_dir.display(),
            s.max_operations,
            s.deadline_ms,
            s.watch_interval_ms,
            s.workers,
            s.batch_size,
            s.lease_seconds,
            s.max_failures
        );
        std::fs::write(&config, text).expect("write config");
        Env { dir, config }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn db(&self) -> PathBuf {
        self.path("smart-task.db")
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(BIN);
        c.arg("--config").arg(&self.config).args(args).env_remove("SMART_TASK_DATABASE_URL").env_remove("RUST_LOG");
        c
    }

    /// Runs the binary and returns its output (whatever the exit code).
    pub fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("run smart-taskd")
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

    /// One value from the database (tests inspect what the daemon wrote).
    pub fn sql(&self, query: &str) -> Vec<Vec<Value>> {
        sql(&self.db(), query)
    }
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Runs a query on a SQLite file through sqlx, outside the daemon.
pub fn sql(db: &Path, query: &str) -> Vec<Vec<Value>> {
    use sqlx::Row;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    rt.block_on(async {
        let url = format!("sqlite://{}", db.display());
        let pool = sqlx::SqlitePool::connect(&url).await.expect("open db");
        let rows = sqlx::query(sqlx::AssertSqlSafe(query.to_string())).fetch_all(&pool).await.expect("query");
        rows.iter()
            .map(|r| {
                (0..r.len())
                    .map(|i| match r.try_get::<Option<i64>, _>(i) {
                        Ok(v) => v.map_or(Value::Null, Value::from),
                        Err(_) => r.try_get::<Option<String>, _>(i).ok().flatten().map_or(Value::Null, Value::from),
                    })
                    .collect()
            })
            .collect()
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
