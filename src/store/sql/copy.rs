//! `db copy`: a whole SQLite database copied into an empty PostgreSQL database, for an installation that
//! outgrows one machine and keeps its history.
//!
//! The source is opened read-only and read from one snapshot (one read transaction), so it cannot change
//! during the copy; it must be at the latest migration this binary knows. The target is migrated here and
//! must be empty. Everything is written in one PostgreSQL transaction, table by table in foreign-key order,
//! in multi-row `INSERT`s whose `$N` placeholders are numbered here (sqlx's `QueryBuilder` for `Any` writes
//! `?`, which PostgreSQL refuses). Rows are read a page at a time by `rowid` (the primary key of the id
//! tables), each value dynamically as NULL, an integer, text or bytes (the schema has no other types), and bound
//! as the target column's type. Afterwards the identity sequences continue from the copied ids, and every
//! table's row count is compared with the source's before the commit: a difference rolls everything back.
//!
//! Table and column names never come from the user: tables from [`TABLES`], columns from the source's rows,
//! each checked against the target's catalogue before it is written into a statement.

use std::collections::{HashMap, HashSet};
use std::str::FromStr;

use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, AssertSqlSafe, Row};

use super::{Dialect, SchemaState, Store, Tx, corrupt, join, values_placeholders};
use crate::store::{CopiedTable, CopyReport, Result, StoreError};

/// Every table of the schema but `_sqlx_migrations`, in an order that satisfies the foreign keys: sedi
/// before aziende, requests before deleghe (`revocata_da`), events and decisions; events before outbox.
/// (`deleghe.padre` refers to deleghe itself: see [`copy_deleghe`].)
const TABLES: [&str; 25] = [
    "sedi",
    "aziende",
    "persone",
    "intermediari",
    "requests",
    "deleghe",
    "contatti",
    "events",
    "decisions",
    "applied_effects",
    "attachment_contents",
    "attachments",
    "outbox",
    "protocol_counters",
    "subject_versions",
    "rule_sets",
    "rule_status",
    "rule_sources",
    "cron_jobs",
    "pilot_members",
    "jti_seen",
    "webhook_subscriptions",
    "webhook_dead_letters",
    "questionnaire_invitations",
    "questionnaire_answers",
];

/// The tables whose ids come from an identity sequence on PostgreSQL.
const IDENTITIES: [&str; 7] =
    ["requests", "events", "decisions", "applied_effects", "attachments", "outbox", "rule_sets"];

/// Rows read from the source at a time, and written per `INSERT` (fewer when a table is wide: PostgreSQL
/// takes at most 65,535 parameters per statement).
const PAGE_ROWS: i64 = 1000;
/// Rows of `attachment_contents` per page: each holds a file (3 MB by default), so a page stays tens of MB.
const CONTENT_PAGE_ROWS: i64 = 8;
const MAX_PARAMETERS: usize = 65_535;

/// The name of the paging column added to each row read from the source.
const ROWID: &str = "copy_rowid_";

/// A value as read from the source.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Cell {
    Null,
    Int(i64),
    Text(String),
    /// An attachment's content.
    Bytes(Vec<u8>),
}

impl Cell {
    /// The value as a key (deleghe ids): text as it is, integers written out.
    fn key(&self) -> Option<String> {
        match self {
            Cell::Null => None,
            Cell::Int(i) => Some(i.to_string()),
            Cell::Text(s) => Some(s.clone()),
            Cell::Bytes(_) => None,
        }
    }
}

/// A column of a table being copied, with the type it has in the target.
#[derive(Debug, Clone)]
struct Column {
    name: String,
    integer: bool,
}

/// A page of source rows: the values in column order, and the last `rowid` read.
struct Page {
    rows: Vec<Vec<Cell>>,
    last: i64,
}

impl Store {
    /// Opens an existing SQLite database read-only (`mode=ro`, `query_only`), as the source of a copy.
    pub async fn open_read_only(url: &str) -> Result<Store> {
        sqlx::any::install_default_drivers();
        if super::dialect_of_url(url)? != Dialect::Sqlite {
            return Err(StoreError::Refused(
                "the source of a copy must be a SQLite database URL (sqlite:PATH)".to_string(),
            ));
        }
        let file = sqlx::sqlite::SqliteConnectOptions::from_str(url)?;
        let path = file.get_filename();
        if !path.is_file() {
            return Err(StoreError::Refused(format!("there is no SQLite database at {}", path.display())));
        }
        let pool = AnyPoolOptions::new()
            .max_connections(1)
            .after_connect(|conn, _| {
                Box::pin(async move {
                    sqlx::raw_sql("PRAGMA busy_timeout = 10000; PRAGMA query_only = ON;").execute(conn).await?;
                    Ok(())
                })
            })
            .connect(&read_only_url(url))
            .await?;
        Ok(Store {
            writer: pool.clone(),
            pool,
            dialect: Dialect::Sqlite,
            keys_in_flight: Default::default(),
            intake_queue: Default::default(),
        })
    }

    /// Copies every table of this SQLite store into `target`, an empty PostgreSQL database (migrated here),
    /// in one transaction; returns the row counts of both sides, which are equal.
    pub async fn copy_into(&self, target: &Store) -> Result<CopyReport> {
        if self.dialect != Dialect::Sqlite || target.dialect != Dialect::Postgres {
            return Err(StoreError::Refused(
                "db copy copies a SQLite database (sqlite:PATH) into a PostgreSQL database (postgres://…)".into(),
            ));
        }
        // One snapshot of the source from the first statement to the last (SQLite: a deferred read
        // transaction, which WAL keeps stable while a writer commits).
        let mut source = self.pool.begin_with(self.dialect.begin_snapshot()).await?;
        check_source_schema(&mut source).await?;
        let mut source_counts = Vec::with_capacity(TABLES.len());
        for table in TABLES {
            source_counts.push(count(&mut source, table).await?);
        }

        // A target already holding data is refused before the migrations touch it, and again under locks.
        refuse_unless_empty(&target.pool).await?;
        target.migrate().await?;
        let mut tx = target.pool.begin().await?;
        sqlx::query(AssertSqlSafe(format!("LOCK TABLE {} IN EXCLUSIVE MODE", TABLES.join(", "))))
            .execute(&mut *tx)
            .await?;
        let mut found = Vec::new();
        for table in TABLES {
            let n = count(&mut tx, table).await?;
            if n > 0 {
                found.push(rows_of(table, n));
            }
        }
        if !found.is_empty() {
            return Err(StoreError::TargetNotEmpty(found));
        }

        let mut copied = Vec::with_capacity(TABLES.len());
        for table in TABLES {
            let columns = target_columns(&mut tx, table).await?;
            let n = if table == "deleghe" {
                copy_deleghe(&mut source, &mut tx, &columns).await?
            } else {
                copy_table(&mut source, &mut tx, table, &columns).await?
            };
            tracing::debug!(table, rows = n, "copied");
            copied.push(n);
        }
        // Each identity sequence continues after the highest copied id (or starts at 1 for an empty table).
        for table in IDENTITIES {
            sqlx::query(AssertSqlSafe(format!(
                "SELECT setval(pg_get_serial_sequence('{table}', 'id'), COALESCE(MAX(id), 1), MAX(id) IS NOT NULL) \
                 FROM {table}"
            )))
            .execute(&mut *tx)
            .await?;
        }

        let mut tables = Vec::with_capacity(TABLES.len());
        let mut differences = Vec::new();
        for ((table, source), copied) in TABLES.iter().zip(source_counts).zip(copied) {
            let target = count(&mut tx, table).await?;
            if target != source || copied != source {
                differences
                    .push(format!("{table}: {source} rows in the source, {copied} copied, {target} in the target"));
            }
            tables.push(CopiedTable { table: (*table).to_string(), source, target });
        }
        if !differences.is_empty() {
            tx.rollback().await?;
            return Err(StoreError::CopyMismatch(differences.join("; ")));
        }
        // The source's read transaction ends first: nothing can fail after the commit.
        source.rollback().await?;
        tx.commit().await?;
        Ok(CopyReport { tables })
    }
}

/// The URL with `mode=ro` in place of any `mode` it had.
fn read_only_url(url: &str) -> String {
    let (database, params) = url.split_once('?').unwrap_or((url, ""));
    let mut kept: Vec<&str> = params.split('&').filter(|p| !p.is_empty() && !p.starts_with("mode=")).collect();
    kept.push("mode=ro");
    format!("{database}?{}", kept.join("&"))
}

fn rows_of(table: &str, n: i64) -> String {
    format!("{table} ({n} row{})", if n == 1 { "" } else { "s" })
}

async fn count(tx: &mut Tx, table: &str) -> Result<i64> {
    Ok(sqlx::query_scalar(AssertSqlSafe(format!("SELECT COUNT(*) FROM {table}"))).fetch_one(&mut **tx).await?)
}

/// Refuses a source that is not at the latest migration this binary knows, or that holds tables the copy
/// does not know.
async fn check_source_schema(source: &mut Tx) -> Result<()> {
    let names: Vec<String> = sqlx::query_scalar(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name",
    )
    .fetch_all(&mut **source)
    .await?;
    match super::schema_state(source).await? {
        SchemaState::Current => {}
        SchemaState::NeverMigrated => {
            return Err(StoreError::SourceNotCurrent(
                "has never been migrated by smart-taskd (is it a smart-task database?): run `smart-taskd migrate` \
                 with the configuration that uses it, then copy again"
                    .into(),
            ));
        }
        SchemaState::Newer(newer) => {
            return Err(StoreError::SourceNotCurrent(format!(
                "has migration(s) {} that this smart-taskd does not know: copy it with the smart-taskd that migrated it",
                join(&newer)
            )));
        }
        SchemaState::Behind { at, latest, missing } => {
            let at = at.map_or_else(|| "no migration".to_string(), |v| format!("migration {v}"));
            return Err(StoreError::SourceNotCurrent(format!(
                "is at {at}, this smart-taskd expects migration {latest} (missing: {}): run `smart-taskd migrate` with \
                 the configuration that uses it (the old configuration, database.url naming this file), then copy again",
                join(&missing)
            )));
        }
    }
    let unknown: Vec<&str> =
        names.iter().map(String::as_str).filter(|n| *n != "_sqlx_migrations" && !TABLES.contains(n)).collect();
    if !unknown.is_empty() {
        return Err(StoreError::SourceNotCurrent(format!(
            "has table(s) that db copy does not know: {}",
            unknown.join(", ")
        )));
    }
    Ok(())
}

/// Refuses a target where any of the tables that already exist holds rows (before migrating it).
async fn refuse_unless_empty(pool: &AnyPool) -> Result<()> {
    let existing: Vec<String> = sqlx::query_scalar(
        "SELECT CAST(table_name AS TEXT) FROM information_schema.tables WHERE table_schema = current_schema()",
    )
    .fetch_all(pool)
    .await?;
    let mut found = Vec::new();
    for table in TABLES.iter().filter(|t| existing.iter().any(|e| e == *t)) {
        let n: i64 = sqlx::query_scalar(AssertSqlSafe(format!("SELECT COUNT(*) FROM {table}"))).fetch_one(pool).await?;
        if n > 0 {
            found.push(rows_of(table, n));
        }
    }
    if found.is_empty() { Ok(()) } else { Err(StoreError::TargetNotEmpty(found)) }
}

/// The columns of a target table and whether each is an integer.
async fn target_columns(tx: &mut Tx, table: &str) -> Result<HashMap<String, bool>> {
    let rows: Vec<(String, String)> = sqlx::query_as(
        "SELECT CAST(column_name AS TEXT), CAST(data_type AS TEXT) FROM information_schema.columns
         WHERE table_schema = current_schema() AND table_name = $1",
    )
    .bind(table)
    .fetch_all(&mut **tx)
    .await?;
    if rows.is_empty() {
        return Err(corrupt("db copy", format!("the target has no table {table} after its migrations")));
    }
    Ok(rows.into_iter().map(|(name, ty)| (name, matches!(ty.as_str(), "bigint" | "integer" | "smallint"))).collect())
}

/// Reads the next page of a source table (rows with a `rowid` after `after`, optionally filtered), with
/// the columns of the first page fixed in `columns`.
async fn read_page(
    source: &mut Tx,
    table: &str,
    filter: &str,
    after: i64,
    target: &HashMap<String, bool>,
    columns: &mut Option<Vec<Column>>,
) -> Result<Page> {
    let limit = if table == "attachment_contents" { CONTENT_PAGE_ROWS } else { PAGE_ROWS };
    let sql = format!("SELECT rowid AS {ROWID}, * FROM {table} WHERE rowid > $1 {filter} ORDER BY rowid LIMIT {limit}");
    let rows: Vec<AnyRow> = sqlx::query(AssertSqlSafe(sql)).bind(after).fetch_all(&mut **source).await?;
    let mut page = Page { rows: Vec::with_capacity(rows.len()), last: after };
    let Some(first) = rows.first() else { return Ok(page) };
    if columns.is_none() {
        let mut found = Vec::new();
        for c in first.columns().iter().skip(1) {
            let name = sqlx::Column::name(c);
            let Some(&integer) = target.get(name) else {
                return Err(corrupt("db copy", format!("column {table}.{name} of the source is not in the target")));
            };
            found.push(Column { name: name.to_string(), integer });
        }
        *columns = Some(found);
    }
    let width = columns.as_ref().map_or(0, Vec::len);
    for row in &rows {
        if row.len() != width + 1 {
            return Err(corrupt("db copy", format!("{table}: rows with different columns")));
        }
        page.last = row.try_get(0)?;
        let mut cells = Vec::with_capacity(width);
        for i in 1..=width {
            cells.push(cell(row, i, table)?);
        }
        page.rows.push(cells);
    }
    Ok(page)
}

/// A source value: NULL, an integer, text or bytes (the schema's only types).
fn cell(row: &AnyRow, i: usize, table: &str) -> Result<Cell> {
    use sqlx::ValueRef;
    if row.try_get_raw(i)?.is_null() {
        Ok(Cell::Null)
    } else if let Ok(v) = row.try_get::<i64, _>(i) {
        Ok(Cell::Int(v))
    } else if let Ok(v) = row.try_get::<String, _>(i) {
        Ok(Cell::Text(v))
    } else if let Ok(v) = row.try_get::<Vec<u8>, _>(i) {
        Ok(Cell::Bytes(v))
    } else {
        let name = sqlx::Column::name(&row.columns()[i]);
        Err(corrupt("db copy", format!("{table}.{name} holds a value that is neither an integer, text nor bytes")))
    }
}

/// Copies a table page by page; returns the rows copied.
async fn copy_table(source: &mut Tx, tx: &mut Tx, table: &str, target: &HashMap<String, bool>) -> Result<i64> {
    let mut columns = None;
    let mut after = i64::MIN;
    let mut copied = 0;
    loop {
        let page = read_page(source, table, "", after, target, &mut columns).await?;
        if page.rows.is_empty() {
            return Ok(copied);
        }
        after = page.last;
        insert(tx, table, columns.as_deref().unwrap_or_default(), &page.rows).await?;
        copied += page.rows.len() as i64;
    }
}

/// Copies deleghe parents before children (`padre` refers to deleghe, and PostgreSQL checks the foreign key
/// row by row): first those without a parent, then each child once its parent is in, at any depth.
async fn copy_deleghe(source: &mut Tx, tx: &mut Tx, target: &HashMap<String, bool>) -> Result<i64> {
    const TABLE: &str = "deleghe";
    let mut columns: Option<Vec<Column>> = None;
    let mut inserted: HashSet<String> = HashSet::new();
    let mut waiting: HashMap<String, Vec<Vec<Cell>>> = HashMap::new();
    let mut copied = 0;
    for filter in ["AND padre IS NULL", "AND padre IS NOT NULL"] {
        let mut after = i64::MIN;
        loop {
            let page = read_page(source, TABLE, filter, after, target, &mut columns).await?;
            if page.rows.is_empty() {
                break;
            }
            after = page.last;
            let cols = columns.as_deref().unwrap_or_default();
            let position = |name: &str| {
                cols.iter()
                    .position(|c| c.name == name)
                    .ok_or_else(|| corrupt("db copy", format!("{TABLE} has no column {name}")))
            };
            let (id, padre) = (position("id")?, position("padre")?);
            let mut ready = Vec::new();
            for row in page.rows {
                match row[padre].key() {
                    Some(parent) if !inserted.contains(&parent) => waiting.entry(parent).or_default().push(row),
                    _ => ready.push(row),
                }
            }
            // Children wait for their parent; inserting a parent releases its children, and theirs.
            while !ready.is_empty() {
                insert(tx, TABLE, cols, &ready).await?;
                copied += ready.len() as i64;
                let mut next = Vec::new();
                for row in &ready {
                    if let Some(key) = row[id].key() {
                        next.extend(waiting.remove(&key).unwrap_or_default());
                        inserted.insert(key);
                    }
                }
                ready = next;
            }
        }
    }
    if !waiting.is_empty() {
        let mut parents: Vec<&String> = waiting.keys().collect();
        parents.sort();
        let shown: Vec<&str> = parents.iter().take(5).map(|p| p.as_str()).collect();
        return Err(corrupt(
            "db copy",
            format!(
                "{} deleghe name a parent delega (padre) that is not in the source: {}{}",
                waiting.values().map(Vec::len).sum::<usize>(),
                shown.join(", "),
                if parents.len() > shown.len() { ", …" } else { "" }
            ),
        ));
    }
    Ok(copied)
}

/// Inserts rows in multi-row statements, each value bound as its target column's type.
async fn insert(tx: &mut Tx, table: &str, columns: &[Column], rows: &[Vec<Cell>]) -> Result<()> {
    if rows.is_empty() || columns.is_empty() {
        return Ok(());
    }
    let names: Vec<String> = columns.iter().map(|c| format!("\"{}\"", c.name.replace('"', "\"\""))).collect();
    let per_statement = (MAX_PARAMETERS / columns.len()).clamp(1, PAGE_ROWS as usize);
    for chunk in rows.chunks(per_statement) {
        let values = values_placeholders(Dialect::Postgres, chunk.len(), columns.len());
        let text = format!("INSERT INTO {table} ({}) VALUES {values}", names.join(", "));
        let mut statement = sqlx::query(AssertSqlSafe(text));
        for row in chunk {
            for (value, column) in row.iter().zip(columns) {
                statement = match (value, column.integer) {
                    (Cell::Null, true) => statement.bind(None::<i64>),
                    (Cell::Null, false) => statement.bind(None::<String>),
                    (Cell::Int(i), true) => statement.bind(*i),
                    (Cell::Int(i), false) => statement.bind(i.to_string()),
                    (Cell::Text(s), false) => statement.bind(s.clone()),
                    (Cell::Bytes(b), false) => statement.bind(b.clone()),
                    (Cell::Bytes(_), true) => {
                        return Err(corrupt(
                            "db copy",
                            format!("{table}.{} holds bytes where an integer belongs", column.name),
                        ));
                    }
                    (Cell::Text(s), true) => statement.bind(s.parse::<i64>().map_err(|_| {
                        corrupt("db copy", format!("{table}.{} holds text where an integer belongs", column.name))
                    })?),
                };
            }
        }
        statement.execute(&mut **tx).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::super::SQLITE_MIGRATIONS;
    use super::*;

    #[test]
    fn the_source_is_opened_read_only_whatever_mode_the_url_asked_for() {
        assert_eq!(read_only_url("sqlite:data/st.db"), "sqlite:data/st.db?mode=ro");
        assert_eq!(
            read_only_url("sqlite:///var/st.db?mode=rwc&cache=shared"),
            "sqlite:///var/st.db?cache=shared&mode=ro"
        );
    }

    #[test]
    fn every_table_of_the_schema_is_copied_once() {
        let mut created = BTreeSet::new();
        for m in SQLITE_MIGRATIONS.iter() {
            for line in m.sql.as_str().lines() {
                if let Some(rest) = line.trim().strip_prefix("CREATE TABLE ") {
                    created.insert(rest.split_whitespace().next().unwrap_or_default().to_string());
                }
            }
        }
        let listed: BTreeSet<String> = TABLES.iter().map(|t| t.to_string()).collect();
        assert_eq!(listed.len(), TABLES.len(), "no table twice");
        assert_eq!(created, listed);
    }
}
