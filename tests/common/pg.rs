//! A throwaway PostgreSQL server for the tests: `initdb` into a temporary directory, `pg_ctl start` on a free
//! loopback port with durability off, one fresh database per test.
//!
//! The binaries (`initdb`, `pg_ctl`, `postgres`) are taken from PATH, else from the highest
//! `/usr/lib/postgresql/*/bin/`. PostgreSQL refuses to run as root: when the tests run as root, the server
//! runs as the `postgres` system user (`runuser`, else `setpriv`). Without the binaries the PostgreSQL
//! variants are skipped with a line on stderr, unless `SMART_TASK_TEST_REQUIRE_POSTGRES=1` (CI), which makes
//! it an error.
//!
//! [`shared`] is one server for the whole test process, started on first use. A static is never dropped, so
//! every server has a watchdog: a detached shell that waits while the test process is alive, then stops the
//! server (`-m immediate`) and removes its directory. A server from [`PgServer::start`] also stops on drop.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Set to `1` to make a missing PostgreSQL an error instead of a skip (CI).
pub const REQUIRE_ENV: &str = "SMART_TASK_TEST_REQUIRE_POSTGRES";

/// What a skipped test prints, after `SKIPPED <test>: `.
pub const SKIP_REASON: &str =
    "PostgreSQL not found (install postgresql, or set PATH); SMART_TASK_TEST_REQUIRE_POSTGRES=1 makes this an error";

/// A running (or stopped, see [`PgServer::stop`]) PostgreSQL server in a temporary directory.
pub struct PgServer {
    bin: PathBuf,
    dir: PathBuf,
    port: u16,
    /// The system user the server runs as (when the tests run as root).
    user: Option<String>,
    /// Removes the directory on drop; `None` for the shared server (its watchdog removes it).
    temp: Option<tempfile::TempDir>,
}

static SHARED: OnceLock<Result<Option<PgServer>, String>> = OnceLock::new();

/// The process-wide server, started on first use; `None` when PostgreSQL is not installed (and not required).
/// A server that is installed but does not start fails the test with its log.
pub fn shared() -> Option<&'static PgServer> {
    match SHARED.get_or_init(|| PgServer::try_start(false)) {
        Ok(server) => server.as_ref().or_else(not_found),
        Err(e) => panic!("{e}"),
    }
}

/// [`shared`], or `None` after printing `SKIPPED <test>: ...` on stderr (past the test harness's capture, so
/// that a skip is visible in a normal run).
pub fn shared_or_skip(test: &str) -> Option<&'static PgServer> {
    let server = shared();
    if server.is_none() {
        skipped(test);
    }
    server
}

fn skipped(test: &str) {
    // One write, so that the line is not split by the harness's own output.
    let _ = std::io::stderr().lock().write_all(format!("SKIPPED {test}: {SKIP_REASON}\n").as_bytes());
}

/// No binaries: `None`, or a panic when they are required.
fn not_found<T>() -> Option<T> {
    if std::env::var(REQUIRE_ENV).is_ok_and(|v| v == "1") {
        panic!(
            "PostgreSQL is required ({REQUIRE_ENV}=1) but `initdb`, `pg_ctl` and `postgres` are neither on PATH nor \
             in /usr/lib/postgresql/*/bin (apt-get install postgresql)"
        );
    }
    None
}

impl PgServer {
    /// A new server of its own (for a test that stops and restarts it); `None` when PostgreSQL is not
    /// installed (and not required). Stopped and removed on drop.
    pub fn start() -> Option<PgServer> {
        match PgServer::try_start(true) {
            Ok(server) => server.or_else(not_found),
            Err(e) => panic!("{e}"),
        }
    }

    /// [`PgServer::start`], or `None` after printing `SKIPPED <test>: ...` on stderr.
    pub fn start_or_skip(test: &str) -> Option<PgServer> {
        let server = PgServer::start();
        if server.is_none() {
            skipped(test);
        }
        server
    }

    fn try_start(owned: bool) -> Result<Option<PgServer>, String> {
        let Some(bin) = find_binaries() else { return Ok(None) };
        let user = if euid() == Some(0) {
            let ok = Command::new("id").args(["-u", "postgres"]).output().is_ok_and(|o| o.status.success());
            if !ok {
                return Err("the tests run as root, PostgreSQL refuses to, and there is no `postgres` system user \
                            to run it as (useradd --system postgres, or run the tests as another user)"
                    .into());
            }
            Some("postgres".to_string())
        } else {
            None
        };
        let temp = tempfile::Builder::new()
            .prefix("smart-task-pg-")
            .tempdir()
            .map_err(|e| format!("PostgreSQL for the tests: cannot create a temporary directory: {e}"))?;
        let dir = temp.path().to_path_buf();
        if let Some(user) = &user {
            let out = Command::new("chown").arg(format!("{user}:")).arg(&dir).output();
            check(out, &format!("chown {user}: {}", dir.display()))?;
        }
        let mut server = PgServer { bin, dir, port: 0, user, temp: Some(temp) };
        let out = server
            .tool("initdb")
            .arg("-D")
            .arg(server.data())
            .args(["-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-locale", "--no-sync"])
            .output();
        check(out, &format!("initdb -D {}", server.data().display()))?;
        server.watchdog()?;
        // The port is free when picked, but another process may take it before the server binds it: retry.
        let mut last = String::new();
        for _ in 0..5 {
            server.port = free_port();
            match server.pg_ctl_start() {
                Ok(()) => {
                    if !owned && let Some(temp) = server.temp.take() {
                        // Never dropped: the watchdog removes the directory.
                        let _ = temp.keep();
                    }
                    return Ok(Some(server));
                }
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// The port it listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Its temporary directory (the data directory is `data/`, the server's log `log`).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// The server's log so far (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("log")).unwrap_or_default()
    }

    /// The URL of database `name`.
    pub fn url(&self, name: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.port)
    }

    /// Creates a fresh, empty database and returns its URL. Named after the running test, so that a failed
    /// test's database can be found in the server's log.
    pub fn create_database(&self) -> String {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let test: String = std::thread::current()
            .name()
            .unwrap_or("test")
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '_' })
            .collect();
        // Identifiers are at most 63 bytes: keep the end of the test's path (its name).
        let tail = &test[test.len().saturating_sub(50)..];
        let name = format!("t{n}_{tail}");
        // FILE_COPY (PostgreSQL 15+) copies the small template about twice as fast as the default WAL_LOG.
        self.admin(&format!("CREATE DATABASE \"{name}\" STRATEGY FILE_COPY"))
            .or_else(|_| self.admin(&format!("CREATE DATABASE \"{name}\"")))
            .unwrap_or_else(|e| panic!("CREATE DATABASE {name}: {e}\n{}", self.log()));
        self.url(&name)
    }

    /// Drops the database of `url` (made by [`PgServer::create_database`]), closing its connections.
    pub fn drop_database(&self, url: &str) -> Result<(), String> {
        let name = url.rsplit('/').next().unwrap_or_default();
        self.admin(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
    }

    /// Runs one statement on the `postgres` database. Works from async code too (on a thread of its own).
    fn admin(&self, statement: &str) -> Result<(), String> {
        use sqlx::Connection;
        let url = self.url("postgres");
        super::block_on(async move {
            let mut conn = sqlx::PgConnection::connect(&url).await.map_err(|e| e.to_string())?;
            sqlx::raw_sql(sqlx::AssertSqlSafe(statement.to_string()))
                .execute(&mut conn)
                .await
                .map_err(|e| e.to_string())?;
            conn.close().await.map_err(|e| e.to_string())
        })
    }

    /// Stops the server (fast shutdown: connections are closed), keeping its data and port.
    pub fn stop(&self) {
        let out = self.tool("pg_ctl").arg("-D").arg(self.data()).args(["-w", "-m", "fast", "stop"]).output();
        if let Err(e) = check(out, "pg_ctl stop") {
            panic!("{e}\n{}", self.log());
        }
    }

    /// Starts a stopped server again, on the same port with the same data, so that clients can reconnect.
    pub fn start_again(&self) {
        if let Err(e) = self.pg_ctl_start() {
            panic!("{e}");
        }
    }

    /// Whether the server is running (`pg_ctl status`).
    pub fn is_running(&self) -> bool {
        self.tool("pg_ctl").arg("-D").arg(self.data()).arg("status").output().is_ok_and(|o| o.status.success())
    }

    fn pg_ctl_start(&self) -> Result<(), String> {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off \
             -c full_page_writes=off -c max_connections=300",
            self.port,
            self.dir.display()
        );
        let out = self
            .tool("pg_ctl")
            .arg("-D")
            .arg(self.data())
            .args(["-w", "-t", "60", "-l"])
            .arg(self.dir.join("log"))
            .args(["-o", &options, "start"])
            .output();
        check(out, &format!("pg_ctl start (port {})", self.port))
            .map_err(|e| format!("{e}\nserver log:\n{}", self.log()))
    }

    /// A PostgreSQL program, run as the server's user.
    fn tool(&self, program: &str) -> Command {
        let exe = self.bin.join(program);
        let mut c = match &self.user {
            Some(user) if which("runuser") => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--"]).arg(exe);
                c
            }
            Some(user) => {
                let mut c = Command::new("setpriv");
                c.args([&format!("--reuid={user}"), &format!("--regid={user}"), "--init-groups", "--"]).arg(exe);
                c
            }
            None => Command::new(exe),
        };
        // The server must not inherit the tests' stdin; the clients' PG* variables must not steer the tools.
        c.stdin(Stdio::null()).current_dir(&self.dir);
        for var in ["PGDATA", "PGPORT", "PGHOST", "PGUSER", "PGDATABASE", "PGOPTIONS"] {
            c.env_remove(var);
        }
        c
    }

    /// A detached shell (its own process group, so ^C does not reach it) that waits while this process is
    /// alive, then stops the server and removes its directory.
    fn watchdog(&self) -> Result<(), String> {
        use std::os::unix::process::CommandExt;
        let script = r#"
            while kill -0 "$1" 2>/dev/null; do sleep 1; done
            if [ -n "$4" ]; then
                if command -v runuser >/dev/null; then runuser -u "$4" -- "$3" -D "$2/data" -m immediate stop
                else setpriv --reuid="$4" --regid="$4" --init-groups -- "$3" -D "$2/data" -m immediate stop; fi
            else "$3" -D "$2/data" -m immediate stop; fi
            rm -rf "$2"
        "#;
        Command::new("sh")
            .args(["-c", script, "smart-task-pg-watchdog"])
            .arg(std::process::id().to_string())
            .arg(&self.dir)
            .arg(self.bin.join("pg_ctl"))
            .arg(self.user.as_deref().unwrap_or(""))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .map(drop)
            .map_err(|e| format!("cannot start the PostgreSQL watchdog (sh): {e}"))
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        if self.temp.is_some() && self.is_running() {
            let _ = self.tool("pg_ctl").arg("-D").arg(self.data()).args(["-w", "-m", "immediate", "stop"]).output();
        }
    }
}

fn check(out: std::io::Result<Output>, what: &str) -> Result<(), String> {
    match out {
        Ok(o) if o.status.success() => Ok(()),
        Ok(o) => Err(format!(
            "PostgreSQL for the tests: `{what}` failed ({}):\n{}{}",
            o.status,
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )),
        Err(e) => Err(format!("PostgreSQL for the tests: cannot run `{what}`: {e}")),
    }
}

/// The directory holding `initdb`, `pg_ctl` and `postgres`: the first on PATH, else the highest version under
/// /usr/lib/postgresql.
fn find_binaries() -> Option<PathBuf> {
    let complete = |d: &Path| ["initdb", "pg_ctl", "postgres"].iter().all(|b| d.join(b).is_file());
    if let Some(path) = std::env::var_os("PATH")
        && let Some(dir) = std::env::split_paths(&path).find(|d| complete(d))
    {
        return Some(dir);
    }
    let mut versions: Vec<(Vec<u32>, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.split('.').map(|p| p.parse().ok()).collect::<Option<Vec<u32>>>()?;
            let bin = e.path().join("bin");
            complete(&bin).then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin)
}

fn which(program: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|path| std::env::split_paths(&path).any(|d| d.join(program).is_file()))
}

/// The effective user id, from /proc (else `id -u`).
fn euid() -> Option<u32> {
    let from_proc = std::fs::read_to_string("/proc/self/status").ok().and_then(|status| {
        status.lines().find_map(|l| l.strip_prefix("Uid:"))?.split_whitespace().nth(1)?.parse().ok()
    });
    from_proc.or_else(|| {
        let out = Command::new("id").arg("-u").output().ok()?;
        String::from_utf8_lossy(&out.stdout).trim().parse().ok()
    })
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free port")
}

/// Waits until `url` accepts connections (after [`PgServer::start_again`], for clients that connect at once).
pub fn wait_ready(url: &str, timeout: Duration) -> bool {
    use sqlx::Connection;
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let url = url.to_string();
        if super::block_on(async move { sqlx::PgConnection::connect(&url).await.is_ok() }) {
            return true;
        }
        if std::time::Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
