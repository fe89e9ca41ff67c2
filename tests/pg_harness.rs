//! The test harness itself: the throwaway PostgreSQL server of tests/common/pg.rs (databases of their own, a
//! stop and a start under a connected client, removal when the test process exits) and `Env::sql` reading
//! the same values on both backends.

mod common;

use std::time::{Duration, Instant};

use common::{Db, Env, TestDb, pg, sql};
use serde_json::{Value, json};

fn sql_reads_integers_text_and_null_alike(db: Db) {
    let env = Env::new(db);
    if db == Db::Sqlite {
        // Nothing has opened it yet (an empty file is an empty database).
        std::fs::File::create(env.path("smart-task.db")).expect("create");
    }
    // The schema's column types (the daemon's own tables are tested everywhere else).
    env.sql("CREATE TABLE prova (name TEXT PRIMARY KEY, next_run_at BIGINT NOT NULL, last_run_at BIGINT, note TEXT)");
    env.sql("INSERT INTO prova (name, next_run_at, note) VALUES ('uno', 4102444800000, NULL)");
    let rows = env.sql(
        "SELECT name, next_run_at, note, last_run_at, COUNT(*) OVER (), CASE WHEN note IS NULL THEN 1 ELSE 0 END \
         FROM prova WHERE name = 'uno'",
    );
    assert_eq!(
        rows,
        vec![vec![json!("uno"), json!(4_102_444_800_000_i64), Value::Null, Value::Null, json!(1), json!(1)]]
    );
    assert!(env.sql("SELECT name FROM prova WHERE name = 'nessuno'").is_empty());
    let url = env.url().to_string();
    match db {
        Db::Sqlite => assert_eq!(url, smart_task::config::sqlite_url(&env.path("smart-task.db"))),
        Db::Postgres => assert!(url.starts_with("postgres://postgres@127.0.0.1:"), "{url}"),
    }
    let configured = match db {
        Db::Sqlite => "url: sqlite:smart-task.db\n".to_string(),
        Db::Postgres => format!("url: {url}\n"),
    };
    assert!(std::fs::read_to_string(&env.config).expect("config").contains(&configured));
}

backends!(sql_reads_integers_text_and_null_alike);

mod postgres_server {
    use super::*;

    /// Whether `url` accepts a connection now.
    fn reachable(url: &str) -> bool {
        use sqlx::Connection;
        let url = url.to_string();
        common::block_on(async move { sqlx::PgConnection::connect(&url).await.is_ok() })
    }

    #[test]
    fn databases_of_their_own_and_a_restart_under_a_client() {
        let Some(server) = pg::PgServer::start_or_skip(concat!(module_path!(), "::databases_of_their_own")) else {
            return;
        };
        let a = server.create_database();
        let b = server.create_database();
        assert_ne!(a, b);
        for url in [&a, &b] {
            assert_eq!(sql(url, "SELECT 1"), vec![vec![json!(1)]]);
        }
        sql(&a, "CREATE TABLE t (n BIGINT, s TEXT)");
        sql(&a, "INSERT INTO t VALUES (7, 'sette'), (NULL, NULL)");
        assert_eq!(
            sql(&a, "SELECT n, s FROM t ORDER BY n"),
            vec![vec![json!(7), json!("sette")], vec![Value::Null, Value::Null]]
        );
        let other = std::panic::catch_unwind(|| sql(&b, "SELECT n FROM t"));
        assert!(other.is_err(), "the table of one database is not in the other");

        // Stopped: nothing connects. Started again on the same port with the same data.
        server.stop();
        assert!(!server.is_running());
        assert!(!reachable(&a));
        server.start_again();
        assert!(pg::wait_ready(&a, Duration::from_secs(10)));
        assert_eq!(sql(&a, "SELECT COUNT(*) FROM t"), vec![vec![json!(2)]]);

        server.drop_database(&b).expect("drop database");
        assert!(!reachable(&b));
        let dir = server.dir().to_path_buf();
        let port = server.port();
        drop(server);
        assert!(!dir.exists(), "removed on drop");
        assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err(), "stopped on drop");
    }

    #[test]
    fn the_shared_server_gives_each_test_database_its_own_and_drops_it() {
        let Some(server) = pg::shared_or_skip(concat!(module_path!(), "::the_shared_server")) else { return };
        let dir = tempfile::tempdir().expect("tempdir");
        let one = TestDb::new(Db::Postgres, dir.path(), "unused.db");
        let two = TestDb::new(Db::Postgres, dir.path(), "unused.db");
        assert_ne!(one.url(), two.url());
        assert!(one.url().starts_with(&server.url("t")), "{} on {}", one.url(), server.url(""));
        let name = one.url().rsplit('/').next().expect("name").to_string();
        let count = |name: &str| {
            sql(&server.url("postgres"), &format!("SELECT COUNT(*) FROM pg_database WHERE datname = '{name}'"))[0][0]
                .clone()
        };
        assert_eq!(count(&name), 1);
        drop(one);
        assert_eq!(count(&name), 0, "dropped with its TestDb");
        assert_eq!(sql(two.url(), "SELECT 2"), vec![vec![json!(2)]]);
    }

    /// Run by the next test in a child process (with SMART_TASK_PG_HARNESS_CHILD=1): starts the shared server
    /// and prints where it is. On its own it does nothing.
    #[test]
    fn child_prints_the_shared_server() {
        if std::env::var_os("SMART_TASK_PG_HARNESS_CHILD").is_none() {
            return;
        }
        if let Some(server) = pg::shared() {
            println!("SHARED {} {}", server.port(), server.dir().display());
        }
    }

    #[test]
    fn the_shared_server_is_stopped_and_removed_after_the_test_process_exits() {
        if pg::shared_or_skip(concat!(module_path!(), "::the_shared_server_is_stopped")).is_none() {
            return;
        }
        let out = std::process::Command::new(std::env::current_exe().expect("test binary"))
            .args(["postgres_server::child_prints_the_shared_server", "--exact", "--nocapture"])
            .env("SMART_TASK_PG_HARNESS_CHILD", "1")
            .output()
            .expect("run the child");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
        let line = text.lines().find_map(|l| l.strip_prefix("SHARED ")).unwrap_or_else(|| panic!("{text}"));
        let (port, dir) = line.split_once(' ').expect("port and dir");
        let (port, dir): (u16, &std::path::Path) = (port.parse().expect("port"), dir.as_ref());
        // The watchdog polls every second.
        let deadline = Instant::now() + Duration::from_secs(20);
        while dir.exists() || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            assert!(Instant::now() < deadline, "the shared server of the exited child is still there: {line}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}
