//! The SQL store, one implementation for SQLite and PostgreSQL over sqlx's `Any` driver: each statement is
//! written once ([`dialect`] says how), batch statements are driven by a JSON array (`json_each`) so that a
//! batch costs a constant number of statements whatever its size.
//!
//! SQLite: one file in WAL mode, one writer at a time (`BEGIN IMMEDIATE`). PostgreSQL: many instances at
//! once; claims skip rows another instance has locked, closes lock the requests and subject versions they
//! check, intake serialises protocol numbers with an advisory lock, and ids come from identity sequences.

use std::collections::{BTreeSet, HashMap};
use std::str::FromStr;

use serde_json::{Map, Value, json};
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::migrate::Migrator;
use sqlx::{Any, AnyConnection, AnyPool, AssertSqlSafe, Row, Transaction};

use super::{
    AttachmentContent, AttachmentView, EventView, ImportReport, ListFilter, NewAttachment, NewRequest, QueueCounts,
    RequestSummary, RequestView, Result, StoreError, Submitted,
};
use crate::domain::closing::{
    self, ClaimedRequest, ClosePlan, ContactChange, Evaluation, NewEvent, RetryPolicy, World, requester_notifications,
};
use crate::domain::event::EventKind;
use crate::domain::facts::{
    Azienda, Contatto, Delega, ImportFile, Intermediario, OpenRequest, Persona, Sede, Subject, SubjectFacts,
    contatto_subjects, delega_subjects,
};
use crate::domain::request::{ContattiNotifica, protocol_number};
use crate::domain::time::{Millis, rfc3339, year};

use claims::claimed_from_row;
pub use dialect::Dialect;
pub use esiti::ESITO_NOT_RENDERED;
use facts::{contact_row, contatto, delega, insert_contacts};

mod assignments;
mod attachments;
mod claims;
mod copy;
mod dialect;
mod esiti;
mod facts;
mod feeds;
mod history;
mod intake;
mod operator;
mod outbox;
mod pilot;
pub(crate) mod questionnaire;
mod reads;
mod rule_sets;
mod rule_status;
mod schedule;
mod webhooks;

static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("migrations/sqlite");
static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("migrations/postgres");

/// The PostgreSQL channels that wake idle instances (one notification per transaction, whatever it wrote).
pub const REQUESTS_CHANNEL: &str = "smart_task_requests";
pub const OUTBOX_CHANNEL: &str = "smart_task_outbox";

/// The store, whichever backend the database URL selects (`sqlite:` or `postgres://`): one implementation
/// over sqlx's `Any` driver, whose statements [`Dialect`] writes for each backend.
#[derive(Debug, Clone)]
pub struct Store {
    pool: AnyPool,
    /// The pool of the transactions that write (`write_tx`): on SQLite one connection, on PostgreSQL `pool`.
    writer: AnyPool,
    dialect: Dialect,
    /// The idempotency keys this process is storing right now (see `intake::KeysInFlight`).
    keys_in_flight: intake::KeysInFlight,
    /// The submissions waiting to be written together (see `intake::IntakeQueue`).
    intake_queue: intake::IntakeQueue,
}

type Tx = Transaction<'static, Any>;

/// The text of a statement for the backend behind a store or a connection.
trait Sql {
    fn sql(&self, text: &'static str) -> &'static str;
}

impl Sql for Store {
    fn sql(&self, text: &'static str) -> &'static str {
        self.dialect.sql(text)
    }
}

impl Sql for AnyConnection {
    fn sql(&self, text: &'static str) -> &'static str {
        Dialect::of(self).sql(text)
    }
}

fn json_text<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "null".into())
}

fn corrupt(what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("{what}: {e}"))
}

fn parse_json<T: serde::de::DeserializeOwned>(what: &str, text: &str) -> Result<T> {
    serde_json::from_str(text).map_err(|e| corrupt(what, e))
}

/// Where a database's schema stands against the migrations this binary embeds.
#[derive(Debug, Clone, PartialEq, Eq)]
enum SchemaState {
    Current,
    /// No migration table: not a smart-task database, or never migrated.
    NeverMigrated,
    /// Migrations this binary does not know (a newer smart-taskd migrated it).
    Newer(Vec<i64>),
    /// Migrations not applied yet: the latest applied (if any), the latest known, the missing ones.
    Behind {
        at: Option<i64>,
        latest: i64,
        missing: Vec<i64>,
    },
}

fn join(versions: &[i64]) -> String {
    versions.iter().map(i64::to_string).collect::<Vec<_>>().join(", ")
}

/// Reads the applied migrations (without creating the migration table) and compares them with the
/// embedded ones of the connection's backend.
async fn schema_state(conn: &mut AnyConnection) -> Result<SchemaState> {
    let dialect = Dialect::of(conn);
    let (tables, migrator) = match dialect {
        Dialect::Sqlite => (
            "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations'",
            &SQLITE_MIGRATIONS,
        ),
        Dialect::Postgres => (
            "SELECT COUNT(*) FROM information_schema.tables
             WHERE table_schema = current_schema() AND table_name = '_sqlx_migrations'",
            &POSTGRES_MIGRATIONS,
        ),
    };
    let found: i64 = sqlx::query_scalar(tables).fetch_one(&mut *conn).await?;
    if found == 0 {
        return Ok(SchemaState::NeverMigrated);
    }
    let applied: BTreeSet<i64> =
        sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success ORDER BY version")
            .fetch_all(&mut *conn)
            .await?
            .into_iter()
            .collect();
    let known: BTreeSet<i64> =
        migrator.iter().filter(|m| !m.migration_type.is_down_migration()).map(|m| m.version).collect();
    let newer: Vec<i64> = applied.difference(&known).copied().collect();
    if !newer.is_empty() {
        return Ok(SchemaState::Newer(newer));
    }
    let missing: Vec<i64> = known.difference(&applied).copied().collect();
    if missing.is_empty() {
        return Ok(SchemaState::Current);
    }
    Ok(SchemaState::Behind { at: applied.last().copied(), latest: known.last().copied().unwrap_or_default(), missing })
}

/// The database a URL names, for messages: a SQLite file's path, a PostgreSQL database's name (never the
/// URL, which may carry a password).
fn database_name(url: &str, dialect: Dialect) -> String {
    match dialect {
        Dialect::Sqlite => sqlx::sqlite::SqliteConnectOptions::from_str(url)
            .map_or_else(|_| url.to_string(), |o| format!("SQLite database {}", o.get_filename().display())),
        Dialect::Postgres => {
            let path = url.split('?').next().unwrap_or(url);
            let name = path.rsplit_once('/').map_or("", |(_, n)| n);
            format!("PostgreSQL database `{name}`")
        }
    }
}

/// The backend a database URL names, or why it names none.
pub fn dialect_of_url(url: &str) -> Result<Dialect> {
    if url.starts_with("sqlite:") {
        Ok(Dialect::Sqlite)
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Dialect::Postgres)
    } else {
        Err(StoreError::UnsupportedUrl(url.to_string()))
    }
}

impl Store {
    /// Connects to the database the URL names (creating a SQLite file if missing); does not migrate.
    pub async fn connect(url: &str, max_connections: u32) -> Result<Store> {
        Store::connect_with(url, max_connections, true).await
    }

    /// Opens a database that exists and is at the latest migration, creating and migrating nothing: for
    /// the commands that read (and operators' commands), so that a wrong `database.url` is an error rather
    /// than an empty database answering "nothing waiting".
    pub async fn open_existing(url: &str, max_connections: u32) -> Result<Store> {
        let dialect = dialect_of_url(url)?;
        let name = database_name(url, dialect);
        if dialect == Dialect::Sqlite {
            let file = sqlx::sqlite::SqliteConnectOptions::from_str(url)?;
            if !file.get_filename().is_file() {
                return Err(StoreError::Missing(name));
            }
        }
        let store = Store::connect_with(url, max_connections, false).await.map_err(|e| match e {
            // PostgreSQL: invalid_catalog_name, the database does not exist.
            StoreError::Db(sqlx::Error::Database(db)) if db.code().as_deref() == Some("3D000") => {
                StoreError::Missing(name.clone())
            }
            other => other,
        })?;
        let state = schema_state(&mut *store.pool.acquire().await?).await?;
        let problem = match state {
            SchemaState::Current => return Ok(store),
            SchemaState::NeverMigrated => "has no smart-task schema (it was never migrated)".to_string(),
            SchemaState::Newer(v) => format!(
                "has migration(s) {} that this smart-taskd does not know: use the smart-taskd that migrated it",
                join(&v)
            ),
            SchemaState::Behind { at, latest, missing } => format!(
                "is at {}, this smart-taskd expects migration {latest} (missing: {})",
                at.map_or_else(|| "no migration".to_string(), |v| format!("migration {v}")),
                join(&missing)
            ),
        };
        store.pool.close().await;
        store.writer.close().await;
        Err(StoreError::NotCurrent(format!("{name} {problem}")))
    }

    async fn connect_with(url: &str, max_connections: u32, create: bool) -> Result<Store> {
        sqlx::any::install_default_drivers();
        let dialect = dialect_of_url(url)?;
        let options = AnyPoolOptions::new().max_connections(max_connections);
        let (pool, writer) = match dialect {
            Dialect::Sqlite => {
                let file = sqlx::sqlite::SqliteConnectOptions::from_str(url)?;
                if let Some(dir) = file.get_filename().parent()
                    && !dir.as_os_str().is_empty()
                    && create
                {
                    std::fs::create_dir_all(dir).map_err(|e| StoreError::Db(sqlx::Error::Io(e)))?;
                }
                // The `Any` driver takes SQLite's settings from the URL (create the file when missing, or
                // not) and the pragmas from each new connection.
                let url = if url.contains("mode=") {
                    url.to_string()
                } else {
                    let mode = if create { "rwc" } else { "rw" };
                    format!("{url}{}mode={mode}", if url.contains('?') { '&' } else { '?' })
                };
                let pool = sqlite_pool(options, &url).await?;
                // One connection for every transaction that writes: SQLite has one writer at a time, and
                // writers of this process queue for it here, in order, instead of sleeping in SQLite's busy
                // handler (1, 2, 5, 10 ms …) while the lock may already be free; its page cache stays warm.
                let writer = sqlite_pool(
                    AnyPoolOptions::new().max_connections(1).acquire_timeout(std::time::Duration::from_secs(30)),
                    &url,
                )
                .await?;
                (pool, writer)
            }
            Dialect::Postgres => {
                let pool = options.acquire_timeout(std::time::Duration::from_secs(10)).connect(url).await?;
                (pool.clone(), pool)
            }
        };
        Ok(Store { pool, writer, dialect, keys_in_flight: Default::default(), intake_queue: Default::default() })
    }

    /// Which backend this store runs on.
    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// Applies the embedded migrations that are not applied yet.
    pub async fn migrate(&self) -> Result<()> {
        match self.dialect {
            Dialect::Sqlite => SQLITE_MIGRATIONS.run(&self.pool).await?,
            Dialect::Postgres => POSTGRES_MIGRATIONS.run(&self.pool).await?,
        }
        Ok(())
    }

    async fn write_tx(&self) -> Result<Tx> {
        Ok(self.writer.begin_with(self.dialect.begin_write()).await?)
    }
}

/// A pool of SQLite connections with the project's settings (WAL, foreign keys, a busy timeout for other
/// processes' writers).
async fn sqlite_pool(options: AnyPoolOptions, url: &str) -> Result<AnyPool> {
    Ok(options
        .after_connect(|conn, _| {
            Box::pin(async move {
                sqlx::raw_sql(
                    "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA busy_timeout = 10000;
                     PRAGMA foreign_keys = ON; PRAGMA journal_size_limit = 67108864;",
                )
                .execute(conn)
                .await?;
                Ok(())
            })
        })
        .connect(url)
        .await?)
}

/// The `VALUES` list of a multi-row insert. PostgreSQL: `($1, $2), ($3, $4)` for 2 rows of 2 columns, numbered
/// here because sqlx's `QueryBuilder` for `Any` writes `?`, which PostgreSQL refuses. SQLite: `(?, ?), (?, ?)`,
/// because binding looks up each named parameter's name in a list (quadratic in a statement of thousands of
/// parameters: 5% of a benchmark's time for the decisions insert), and anonymous ones need no lookup.
fn values_placeholders(dialect: Dialect, rows: usize, columns: usize) -> String {
    let row = |r: usize| {
        let params: Vec<String> = (1..=columns)
            .map(|c| match dialect {
                Dialect::Sqlite => "?".to_string(),
                Dialect::Postgres => format!("${}", r * columns + c),
            })
            .collect();
        format!("({})", params.join(", "))
    };
    (0..rows).map(row).collect::<Vec<_>>().join(", ")
}

/// Which table's identity an id is taken from.
#[derive(Debug, Clone, Copy)]
enum IdTable {
    Requests,
    Events,
}

/// Reserves `n` ids of a table, so that rows written together can reference each other without a round
/// trip per row: under SQLite's single writer the next free ones; on PostgreSQL from the identity sequence,
/// which concurrent instances share.
async fn reserve_ids(tx: &mut Tx, table: IdTable, n: usize) -> Result<Vec<i64>> {
    if n == 0 {
        return Ok(Vec::new());
    }
    let n = i64::try_from(n).map_err(|e| corrupt("id count", e))?;
    match Dialect::of(tx) {
        Dialect::Sqlite => {
            let sql = match table {
                IdTable::Requests => "SELECT COALESCE(MAX(id), 0) + 1 FROM requests",
                IdTable::Events => "SELECT COALESCE(MAX(id), 0) + 1 FROM events",
            };
            let first: i64 = sqlx::query_scalar(sql).fetch_one(&mut **tx).await?;
            Ok((first..first + n).collect())
        }
        Dialect::Postgres => {
            let sql = match table {
                IdTable::Requests => {
                    "SELECT nextval(pg_get_serial_sequence('requests', 'id')) FROM generate_series(1, $1)"
                }
                IdTable::Events => "SELECT nextval(pg_get_serial_sequence('events', 'id')) FROM generate_series(1, $1)",
            };
            Ok(sqlx::query_scalar(sql).bind(n).fetch_all(&mut **tx).await?)
        }
    }
}

/// Wakes the instances listening on a PostgreSQL channel when the transaction commits (PostgreSQL folds
/// the same notification sent twice in one transaction into one); SQLite has one process, nothing to wake.
async fn wake(tx: &mut Tx, channel: &'static str) -> Result<()> {
    if Dialect::of(tx) == Dialect::Postgres {
        sqlx::query("SELECT pg_notify($1, '')").bind(channel).execute(&mut **tx).await?;
    }
    Ok(())
}

async fn bump_versions(tx: &mut Tx, subjects: &[String]) -> Result<()> {
    // Once each, in key order: PostgreSQL refuses to upsert one row twice in a statement, and sorted keys
    // make concurrent transactions lock rows in the same order.
    let subjects: BTreeSet<&String> = subjects.iter().collect();
    if subjects.is_empty() {
        return Ok(());
    }
    sqlx::query(tx.sql(
        "INSERT INTO subject_versions (subject, version) SELECT value, 1 FROM json_each($1) WHERE true ORDER BY 1
         ON CONFLICT (subject) DO UPDATE SET version = subject_versions.version + 1",
    ))
    .bind(json_text(&subjects))
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Appends events with explicit ids (so their notifications can reference them without a round trip per
/// row) and queues their notifications.
/// Writes events with their notifications; returns the events' ids, in order.
async fn insert_events(tx: &mut Tx, events: &[NewEvent], now: Millis) -> Result<Vec<i64>> {
    if events.is_empty() {
        return Ok(Vec::new());
    }
    let ids = reserve_ids(tx, IdTable::Events, events.len()).await?;
    let mut rows = Vec::with_capacity(events.len());
    let mut outbox = Vec::new();
    for (&event_id, e) in ids.iter().zip(events) {
        rows.push(json!([event_id, e.request_id, e.kind, e.actor, json_text(&e.detail)]));
        for n in &e.notifications {
            outbox.push(json!([e.request_id, event_id, e.kind, n.channel, n.recipient, n.role]));
        }
    }
    sqlx::query(tx.sql(
        "INSERT INTO events (id, request_id, kind, actor, detail, at)
         SELECT CAST(value ->> 0 AS BIGINT), CAST(value ->> 1 AS BIGINT), value ->> 2, value ->> 3, value ->> 4, $2
         FROM json_each($1)",
    ))
    .bind(json_text(&rows))
    .bind(now)
    .execute(&mut **tx)
    .await?;
    if !outbox.is_empty() {
        sqlx::query(tx.sql(
            "INSERT INTO outbox (request_id, event_id, event, channel, recipient, role, available_at, created_at)
             SELECT CAST(value ->> 0 AS BIGINT), CAST(value ->> 1 AS BIGINT), value ->> 2, value ->> 3, value ->> 4,
                    value ->> 5, $2, $2
             FROM json_each($1)",
        ))
        .bind(json_text(&outbox))
        .bind(now)
        .execute(&mut **tx)
        .await?;
        wake(tx, OUTBOX_CHANNEL).await?;
    }
    Ok(ids)
}

#[cfg(test)]
mod tests {
    #[test]
    fn multi_row_placeholders_are_numbered_row_by_row() {
        use super::{Dialect, values_placeholders};
        assert_eq!(values_placeholders(Dialect::Postgres, 2, 3), "($1, $2, $3), ($4, $5, $6)");
        assert_eq!(values_placeholders(Dialect::Postgres, 1, 1), "($1)");
        assert_eq!(values_placeholders(Dialect::Sqlite, 2, 2), "(?, ?), (?, ?)");
    }
}
