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
    EventView, ImportReport, ListFilter, NewRequest, QueueCounts, RequestSummary, RequestView, Result, StoreError,
    Submitted,
};
use crate::domain::closing::{
    self, ClaimedRequest, ClosePlan, ContactChange, Evaluation, NewEvent, RetryPolicy, World, requester_notifications,
};
use crate::domain::facts::{
    Azienda, Contatto, Delega, ImportFile, Intermediario, OpenRequest, Persona, Sede, Subject, SubjectFacts,
    contatto_subjects, delega_subjects,
};
use crate::domain::request::{ContattiNotifica, protocol_number};
use crate::domain::time::{Millis, rfc3339, year};

pub use dialect::Dialect;

mod copy;
mod dialect;
mod history;
mod operator;
mod outbox;
mod rule_status;
mod schedule;

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
    dialect: Dialect,
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
        Err(StoreError::NotCurrent(format!("{name} {problem}")))
    }

    async fn connect_with(url: &str, max_connections: u32, create: bool) -> Result<Store> {
        sqlx::any::install_default_drivers();
        let dialect = dialect_of_url(url)?;
        let options = AnyPoolOptions::new().max_connections(max_connections);
        let pool = match dialect {
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
                options
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
                    .connect(&url)
                    .await?
            }
            Dialect::Postgres => options.acquire_timeout(std::time::Duration::from_secs(10)).connect(url).await?,
        };
        Ok(Store { pool, dialect })
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
        Ok(self.pool.begin_with(self.dialect.begin_write()).await?)
    }

    /// Stores accepted requests `aperta`, each with its protocol number, event and notifications, all in
    /// one transaction. A request whose idempotency key is known returns the first request instead.
    pub async fn submit(&self, requests: &[NewRequest], default_sede: &str, now: Millis) -> Result<Vec<Submitted>> {
        let mut tx = self.write_tx().await?;
        if self.dialect == Dialect::Postgres {
            // Protocol numbers are read, incremented and written back: one intake at a time, as on SQLite.
            sqlx::query("SELECT pg_advisory_xact_lock(7400)").execute(&mut *tx).await?;
        }
        let keys: Vec<&str> = requests.iter().filter_map(|r| r.envelope.chiave_idempotenza.as_deref()).collect();
        let mut known: HashMap<String, Submitted> = HashMap::new();
        if !keys.is_empty() {
            let rows = sqlx::query(tx.sql(
                "SELECT chiave_idempotenza, id, protocollo FROM requests
                 WHERE chiave_idempotenza IN (SELECT value FROM json_each($1))",
            ))
            .bind(json_text(&keys))
            .fetch_all(&mut *tx)
            .await?;
            for r in rows {
                known
                    .insert(r.try_get(0)?, Submitted { id: r.try_get(1)?, protocollo: r.try_get(2)?, duplicate: true });
            }
        }
        let matricole: Vec<&str> = requests.iter().filter_map(|r| r.envelope.matricola.as_deref()).collect();
        let sede_of: HashMap<String, String> = sqlx::query_as(
            tx.sql("SELECT matricola, sede FROM aziende WHERE matricola IN (SELECT value FROM json_each($1))"),
        )
        .bind(json_text(&matricole))
        .fetch_all(&mut *tx)
        .await?
        .into_iter()
        .collect();
        let anno = year(now);
        let mut counters: HashMap<String, i64> =
            sqlx::query_as(tx.sql("SELECT sede, last FROM protocol_counters WHERE anno = $1"))
                .bind(anno)
                .fetch_all(&mut *tx)
                .await?
                .into_iter()
                .collect();
        let fresh = requests.len()
            - requests
                .iter()
                .filter(|r| r.envelope.chiave_idempotenza.as_ref().is_some_and(|k| known.contains_key(k)))
                .count();
        let mut ids = reserve_ids(&mut tx, IdTable::Requests, fresh).await?.into_iter();

        let mut out = Vec::with_capacity(requests.len());
        let mut rows = Vec::new();
        let mut events = Vec::new();
        let mut opened = Vec::new();
        for r in requests {
            if let Some(first) = r.envelope.chiave_idempotenza.as_ref().and_then(|k| known.get(k)) {
                out.push(first.clone());
                continue;
            }
            let sede = r.envelope.matricola.as_ref().and_then(|m| sede_of.get(m)).map_or(default_sede, String::as_str);
            let Some(id) = ids.next() else {
                return Err(StoreError::Corrupt("fewer request ids reserved than requests to store".into()));
            };
            let progressive = counters.entry(sede.to_string()).or_insert(0);
            *progressive += 1;
            let submitted = Submitted { id, protocollo: protocol_number(sede, anno, *progressive), duplicate: false };
            rows.push(json!([
                submitted.id,
                submitted.protocollo,
                r.envelope.task,
                r.soggetto,
                sede,
                json_text(&r.payload),
                r.envelope.chiave_idempotenza,
            ]));
            events.push(NewEvent {
                request_id: submitted.id,
                kind: "protocollazione",
                actor: "intake".into(),
                detail: json!({ "protocollo": submitted.protocollo, "sede": sede }),
                notifications: requester_notifications(&r.envelope.contatti),
            });
            opened.push(Subject::Open { task: r.envelope.task.clone(), soggetto: r.soggetto.clone() }.to_string());
            if let Some(k) = &r.envelope.chiave_idempotenza {
                known.insert(k.clone(), Submitted { duplicate: true, ..submitted.clone() });
            }
            out.push(submitted);
        }
        if !rows.is_empty() {
            sqlx::query(tx.sql(
                "INSERT INTO requests (id, protocollo, task, soggetto, sede, payload, chiave_idempotenza, stato,
                                       creata_il, aggiornata_il, available_at)
                 SELECT CAST(value ->> 0 AS BIGINT), value ->> 1, value ->> 2, value ->> 3, value ->> 4, value ->> 5,
                        value ->> 6, 'aperta', $2, $2, $2
                 FROM json_each($1)",
            ))
            .bind(json_text(&rows))
            .bind(now)
            .execute(&mut *tx)
            .await?;
            let counter_rows: Vec<(&String, &i64)> = counters.iter().collect();
            sqlx::query(tx.sql(
                "INSERT INTO protocol_counters (sede, anno, last)
                 SELECT value ->> 0, $2, CAST(value ->> 1 AS BIGINT) FROM json_each($1) WHERE true
                 ON CONFLICT (sede, anno) DO UPDATE SET last = excluded.last",
            ))
            .bind(json_text(&counter_rows))
            .bind(anno)
            .execute(&mut *tx)
            .await?;
            bump_versions(&mut tx, &opened).await?;
            insert_events(&mut tx, &events, now).await?;
            wake(&mut tx, REQUESTS_CHANNEL).await?;
        }
        tx.commit().await?;
        Ok(out)
    }

    /// Upserts reference data in one transaction and bumps the version of every subject it touches.
    pub async fn import_facts(&self, file: &ImportFile) -> Result<ImportReport> {
        let mut tx = self.write_tx().await?;
        check_references(&mut tx, file).await?;
        // Versions first, as a close locks them before the rows it changes: two writers that take locks in
        // the same order wait for each other instead of deadlocking.
        let touched: Vec<String> = file.touched_subjects().iter().map(Subject::to_string).collect();
        bump_versions(&mut tx, &touched).await?;
        sqlx::query(tx.sql(
            "INSERT INTO sedi (codice, denominazione, provincia, email)
             SELECT value ->> 'codice', value ->> 'denominazione', value ->> 'provincia', value ->> 'email'
             FROM json_each($1) WHERE true
             ON CONFLICT (codice) DO UPDATE SET denominazione = excluded.denominazione,
                 provincia = excluded.provincia, email = excluded.email",
        ))
        .bind(json_text(&file.sedi))
        .execute(&mut *tx)
        .await?;
        sqlx::query(tx.sql(
            "INSERT INTO aziende (matricola, cf, ragione_sociale, sede, pec_registro_imprese, rappresentanti_legali)
             SELECT value ->> 'matricola', value ->> 'cf', value ->> 'ragione_sociale', value ->> 'sede',
                    value ->> 'pec_registro_imprese', CAST(value -> 'rappresentanti_legali' AS TEXT)
             FROM json_each($1) WHERE true
             ON CONFLICT (matricola) DO UPDATE SET cf = excluded.cf, ragione_sociale = excluded.ragione_sociale,
                 sede = excluded.sede, pec_registro_imprese = excluded.pec_registro_imprese,
                 rappresentanti_legali = excluded.rappresentanti_legali",
        ))
        .bind(json_text(&file.aziende))
        .execute(&mut *tx)
        .await?;
        sqlx::query(tx.sql(
            "INSERT INTO persone (cf, nome, cognome)
             SELECT value ->> 'cf', value ->> 'nome', value ->> 'cognome' FROM json_each($1) WHERE true
             ON CONFLICT (cf) DO UPDATE SET nome = excluded.nome, cognome = excluded.cognome",
        ))
        .bind(json_text(&file.persone))
        .execute(&mut *tx)
        .await?;
        sqlx::query(tx.sql(
            "INSERT INTO intermediari (cf, categoria, albo)
             SELECT value ->> 'cf', value ->> 'categoria', value ->> 'albo' FROM json_each($1) WHERE true
             ON CONFLICT (cf) DO UPDATE SET categoria = excluded.categoria, albo = excluded.albo",
        ))
        .bind(json_text(&file.intermediari))
        .execute(&mut *tx)
        .await?;
        // Parents before children, so that the `padre` foreign key holds row by row.
        let mut deleghe: Vec<&Delega> = file.deleghe.iter().collect();
        deleghe.sort_by_key(|d| d.padre.is_some());
        sqlx::query(tx.sql(
            "INSERT INTO deleghe (id, matricola, delegato_cf, tipo, stato, data_inizio, data_fine, data_revoca, padre)
             SELECT value ->> 'id', value ->> 'matricola', value ->> 'delegato_cf', value ->> 'tipo',
                    value ->> 'stato', value ->> 'data_inizio', value ->> 'data_fine', value ->> 'data_revoca',
                    value ->> 'padre'
             FROM json_each($1) WHERE true
             ON CONFLICT (id) DO UPDATE SET matricola = excluded.matricola, delegato_cf = excluded.delegato_cf,
                 tipo = excluded.tipo, stato = excluded.stato, data_inizio = excluded.data_inizio,
                 data_fine = excluded.data_fine, data_revoca = excluded.data_revoca, padre = excluded.padre",
        ))
        .bind(json_text(&deleghe))
        .execute(&mut *tx)
        .await?;
        insert_contacts(&mut tx, &file.contatti.iter().collect::<Vec<_>>()).await?;
        tx.commit().await?;
        Ok(ImportReport {
            sedi: file.sedi.len(),
            aziende: file.aziende.len(),
            persone: file.persone.len(),
            intermediari: file.intermediari.len(),
            deleghe: file.deleghe.len(),
            contatti: file.contatti.len(),
        })
    }

    /// Claims up to `limit` claimable requests for `owner` until `now + lease_ms`, moving new ones to
    /// `in_carico` with their `smistamento` event and notifications.
    pub async fn claim(&self, owner: &str, limit: u32, lease_ms: i64, now: Millis) -> Result<Vec<ClaimedRequest>> {
        let mut tx = self.write_tx().await?;
        let rows = sqlx::query(tx.sql(
            "UPDATE requests SET stato = 'in_carico', claims = claims + 1, lease_token = claims + 1,
                    lease_owner = $1, available_at = $2, aggiornata_il = $3,
                    taken_over = CASE WHEN lease_token IS NULL THEN 0 ELSE 1 END
             WHERE id IN (SELECT id FROM requests
                          WHERE stato <> 'chiusa' AND parked IS NULL AND available_at <= $3
                          ORDER BY available_at, id LIMIT $4 /*pg:FOR UPDATE SKIP LOCKED*/)
             RETURNING id, protocollo, task, soggetto, sede, payload, claims, failures, creata_il, taken_over",
        ))
        .bind(owner)
        .bind(now + lease_ms)
        .bind(now)
        .bind(i64::from(limit))
        .fetch_all(&mut *tx)
        .await?;
        let mut claimed = Vec::with_capacity(rows.len());
        let mut events = Vec::new();
        for row in rows {
            let req = claimed_from_row(&row)?;
            let token = req.token;
            let taken_over = req.taken_over;
            if token == 1 {
                events.push(NewEvent {
                    request_id: req.id,
                    kind: "smistamento",
                    actor: owner.to_string(),
                    detail: json!({ "sede": req.sede }),
                    notifications: requester_notifications(&req.contatti),
                });
            } else if taken_over {
                events.push(NewEvent {
                    request_id: req.id,
                    kind: "ripresa_lavorazione",
                    actor: owner.to_string(),
                    detail: json!({ "motivo": "lease scaduta" }),
                    notifications: Vec::new(),
                });
            }
            claimed.push(req);
        }
        insert_events(&mut tx, &events, now).await?;
        tx.commit().await?;
        Ok(claimed)
    }

    /// Extends the leases of claimed requests to `until`, each fenced by its token (`(id, token)` pairs): a
    /// request closed, released or taken over since is left alone. Returns how many leases were extended.
    pub async fn renew(&self, leases: &[(i64, i64)], until: Millis) -> Result<u64> {
        if leases.is_empty() {
            return Ok(0);
        }
        let done = sqlx::query(self.sql(
            "UPDATE requests SET available_at = $2
             FROM json_each($1) j
             WHERE requests.id = CAST(j.value ->> 0 AS BIGINT) AND requests.lease_token = CAST(j.value ->> 1 AS BIGINT)",
        ))
        .bind(json_text(&leases))
        .bind(until)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    /// Reads the facts of the given subjects, each with its version, from one consistent snapshot.
    pub async fn load_facts(&self, subjects: &[Subject]) -> Result<HashMap<Subject, SubjectFacts>> {
        // One snapshot for every statement: versions and data agree.
        let mut tx = self.pool.begin_with(self.dialect.begin_snapshot()).await?;
        let keys: Vec<String> = subjects.iter().map(Subject::to_string).collect();
        let versions: HashMap<String, i64> = sqlx::query_as(
            tx.sql("SELECT subject, version FROM subject_versions WHERE subject IN (SELECT value FROM json_each($1))"),
        )
        .bind(json_text(&keys))
        .fetch_all(&mut *tx)
        .await?
        .into_iter()
        .collect();
        let mut out: HashMap<Subject, SubjectFacts> = subjects
            .iter()
            .map(|s| {
                (
                    s.clone(),
                    SubjectFacts { version: versions.get(&s.to_string()).copied().unwrap_or(0), ..Default::default() },
                )
            })
            .collect();
        let keys_of = |pick: fn(&Subject) -> Option<&String>| -> Vec<&str> {
            subjects.iter().filter_map(pick).map(String::as_str).collect()
        };
        let aziende = keys_of(|s| if let Subject::Azienda(k) = s { Some(k) } else { None });
        let deleghe_azienda = keys_of(|s| if let Subject::DelegheAzienda(k) = s { Some(k) } else { None });
        let contatti_azienda = keys_of(|s| if let Subject::ContattiAzienda(k) = s { Some(k) } else { None });
        let persone = keys_of(|s| if let Subject::Persona(k) = s { Some(k) } else { None });
        let deleghe_delegato = keys_of(|s| if let Subject::DelegheDelegato(k) = s { Some(k) } else { None });
        let contatti_titolare = keys_of(|s| if let Subject::ContattiTitolare(k) = s { Some(k) } else { None });
        let sedi = keys_of(|s| if let Subject::Sede(k) = s { Some(k) } else { None });
        let open: Vec<[&str; 2]> = subjects
            .iter()
            .filter_map(|s| match s {
                Subject::Open { task, soggetto } => Some([task.as_str(), soggetto.as_str()]),
                _ => None,
            })
            .collect();
        let t = &mut tx;
        fill(
            t,
            &mut out,
            "SELECT * FROM aziende WHERE matricola IN (SELECT value FROM json_each($1))",
            &aziende,
            azienda,
            |a| Some(Subject::Azienda(a.matricola.clone())),
            |f, a| f.azienda = Some(a),
        )
        .await?;
        fill(
            t,
            &mut out,
            "SELECT * FROM deleghe WHERE matricola IN (SELECT value FROM json_each($1)) ORDER BY data_inizio, id",
            &deleghe_azienda,
            delega,
            |d| Some(Subject::DelegheAzienda(d.matricola.clone())),
            |f, d| f.deleghe.push(d),
        )
        .await?;
        fill(
            t,
            &mut out,
            "SELECT * FROM contatti WHERE matricola IN (SELECT value FROM json_each($1)) ORDER BY id",
            &contatti_azienda,
            contatto,
            |c| c.matricola.clone().map(Subject::ContattiAzienda),
            |f, c| f.contatti.push(c),
        )
        .await?;
        fill(
            t,
            &mut out,
            "SELECT cf, nome, cognome FROM persone WHERE cf IN (SELECT value FROM json_each($1))",
            &persone,
            persona,
            |p| Some(Subject::Persona(p.cf.clone())),
            |f, p| f.persona = Some(p),
        )
        .await?;
        fill(
            t,
            &mut out,
            "SELECT cf, categoria, albo FROM intermediari WHERE cf IN (SELECT value FROM json_each($1))",
            &persone,
            intermediario,
            |i| Some(Subject::Persona(i.cf.clone())),
            |f, i| f.intermediario = Some(i),
        )
        .await?;
        fill(
            t,
            &mut out,
            "SELECT * FROM deleghe WHERE delegato_cf IN (SELECT value FROM json_each($1)) ORDER BY data_inizio, id",
            &deleghe_delegato,
            delega,
            |d| Some(Subject::DelegheDelegato(d.delegato_cf.clone())),
            |f, d| f.deleghe.push(d),
        )
        .await?;
        fill(
            t,
            &mut out,
            "SELECT * FROM contatti WHERE titolare_cf IN (SELECT value FROM json_each($1)) ORDER BY id",
            &contatti_titolare,
            contatto,
            |c| Some(Subject::ContattiTitolare(c.titolare_cf.clone())),
            |f, c| f.contatti.push(c),
        )
        .await?;
        fill(
            t,
            &mut out,
            "SELECT * FROM sedi WHERE codice IN (SELECT value FROM json_each($1))",
            &sedi,
            sede,
            |s| Some(Subject::Sede(s.codice.clone())),
            |f, s| f.sede = Some(s),
        )
        .await?;
        if !open.is_empty() {
            for row in sqlx::query(tx.sql(
                "SELECT r.id, r.protocollo, r.creata_il, r.task, r.soggetto
                 FROM json_each($1) j JOIN requests r ON r.task = j.value ->> 0 AND r.soggetto = j.value ->> 1
                 WHERE r.stato <> 'chiusa' ORDER BY r.id",
            ))
            .bind(json_text(&open))
            .fetch_all(&mut *tx)
            .await?
            {
                let key = Subject::Open { task: row.try_get("task")?, soggetto: row.try_get("soggetto")? };
                if let Some(f) = out.get_mut(&key) {
                    f.open_requests.push(OpenRequest {
                        id: row.try_get("id")?,
                        protocollo: row.try_get("protocollo")?,
                        creata_il: row.try_get("creata_il")?,
                    });
                }
            }
        }
        tx.commit().await?;
        Ok(out)
    }

    /// Closes a batch of evaluated requests in one transaction fenced by their lease tokens; returns the plan
    /// that was applied.
    pub async fn close_batch(
        &self,
        batch: &[(ClaimedRequest, Evaluation)],
        policy: RetryPolicy,
        now: Millis,
        actor: &str,
    ) -> Result<ClosePlan> {
        // On PostgreSQL two closes can still deadlock (one writes what the other read, and the other way
        // round); the server aborts one, which is then planned again from what the winner committed.
        let mut attempt = 1;
        loop {
            match self.close_batch_once(batch, policy, now, actor).await {
                Err(e) if e.is_serialization_conflict() && attempt < 5 => {
                    tracing::debug!(attempt, error = %e, "close conflicted with another instance's; planning it again");
                    attempt += 1;
                }
                result => return result,
            }
        }
    }

    async fn close_batch_once(
        &self,
        batch: &[(ClaimedRequest, Evaluation)],
        policy: RetryPolicy,
        now: Millis,
        actor: &str,
    ) -> Result<ClosePlan> {
        let mut tx = self.write_tx().await?;
        let ids: Vec<i64> = batch.iter().map(|(r, _)| r.id).collect();
        let mut world = World::default();
        for row in sqlx::query(tx.sql(
            "SELECT id, lease_token FROM requests WHERE id IN (SELECT CAST(value AS BIGINT) FROM json_each($1))
             ORDER BY id /*pg:FOR UPDATE*/",
        ))
        .bind(json_text(&ids))
        .fetch_all(&mut *tx)
        .await?
        {
            world.tokens.insert(row.try_get(0)?, row.try_get(1)?);
        }
        // The subjects the batch names are locked before the facts its effects change are read, so that
        // what is read stays as read until commit; those found through the facts are locked after. What the
        // close may write (effects' subjects, the open requests of each subject) is locked exclusively, what
        // the decisions only read is shared, so that decisions reading the same sede do not queue.
        let targets = World::targets(batch);
        let mut subjects: BTreeSet<Subject> = targets.subjects.iter().cloned().collect();
        let mut read: BTreeSet<Subject> = BTreeSet::new();
        for (req, eval) in batch {
            subjects.insert(Subject::Open { task: req.task.clone(), soggetto: req.soggetto.clone() });
            if let Evaluation::Decided(d) = eval {
                read.extend(d.read_versions().map(|(s, _)| s.clone()));
            }
        }
        read.retain(|s| !subjects.contains(s));
        let mut current = lock_versions(&mut tx, &subjects, Lock::Exclusive).await?;
        current.extend(lock_versions(&mut tx, &read, Lock::Shared).await?);
        subjects.extend(read);
        if !targets.deleghe.is_empty() {
            for row in sqlx::query(tx.sql(
                "SELECT * FROM deleghe WHERE id IN (SELECT value FROM json_each($1))
                                          OR padre IN (SELECT value FROM json_each($1))",
            ))
            .bind(json_text(&targets.deleghe))
            .fetch_all(&mut *tx)
            .await?
            {
                let d = delega(&row)?;
                world.deleghe.insert(d.id.clone(), d);
            }
        }
        if !targets.contatti.is_empty() || !targets.titolari.is_empty() {
            for row in sqlx::query(tx.sql(
                "SELECT * FROM contatti WHERE id IN (SELECT value FROM json_each($1))
                                           OR titolare_cf IN (SELECT value FROM json_each($2))",
            ))
            .bind(json_text(&targets.contatti))
            .bind(json_text(&targets.titolari))
            .fetch_all(&mut *tx)
            .await?
            {
                let c = contatto(&row)?;
                world.contatti.insert(c.id.clone(), c);
            }
            let matricole: BTreeSet<&String> = world.contatti.values().filter_map(|c| c.matricola.as_ref()).collect();
            world.pec_registro_imprese = sqlx::query_scalar(tx.sql(
                "SELECT pec_registro_imprese FROM aziende
                 WHERE matricola IN (SELECT value FROM json_each($1)) AND pec_registro_imprese IS NOT NULL",
            ))
            .bind(json_text(&matricole))
            .fetch_all(&mut *tx)
            .await?;
        }
        let mut found: BTreeSet<Subject> = world.deleghe.values().flat_map(delega_subjects).collect();
        for c in world.contatti.values() {
            found.extend(contatto_subjects(&c.titolare_cf, c.matricola.as_ref()));
        }
        found.retain(|s| !subjects.contains(s));
        current.extend(lock_versions(&mut tx, &found, Lock::Exclusive).await?);
        subjects.extend(found);
        world.versions = subjects.into_iter().filter_map(|s| current.get(&s.to_string()).map(|v| (s, *v))).collect();

        let plan = closing::plan(batch, &world, policy, now, actor, rand::random::<f64>);
        apply_plan(&mut tx, &plan, now).await?;
        tx.commit().await?;
        Ok(plan)
    }

    /// Gives back the leases of requests this owner still holds (graceful shutdown).
    pub async fn release(&self, owner: &str, now: Millis) -> Result<u64> {
        let mut tx = self.write_tx().await?;
        let done = sqlx::query(tx.sql(
            "UPDATE requests SET lease_token = NULL, lease_owner = NULL, available_at = $2
             WHERE lease_owner = $1 AND lease_token IS NOT NULL AND stato <> 'chiusa'",
        ))
        .bind(owner)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() > 0 {
            wake(&mut tx, REQUESTS_CHANNEL).await?;
        }
        tx.commit().await?;
        Ok(done.rows_affected())
    }

    /// A request by internal id or protocol number, with its history and latest decision.
    pub async fn request(&self, key: &str) -> Result<Option<RequestView>> {
        let by_id: i64 = key.parse().unwrap_or(-1);
        let Some(row) = sqlx::query(self.sql("SELECT * FROM requests WHERE protocollo = $1 OR id = $2"))
            .bind(key)
            .bind(by_id)
            .fetch_optional(&self.pool)
            .await?
        else {
            return Ok(None);
        };
        let id: i64 = row.try_get("id")?;
        let eventi =
            sqlx::query(self.sql("SELECT kind, at, actor, detail FROM events WHERE request_id = $1 ORDER BY id"))
                .bind(id)
                .fetch_all(&self.pool)
                .await?
                .into_iter()
                .map(|e| {
                    Ok(EventView {
                        tipo: e.try_get("kind")?,
                        istante: rfc3339(e.try_get("at")?),
                        attore: e.try_get("actor")?,
                        dettaglio: match e.try_get::<Option<&str>, _>("detail")? {
                            Some(d) => parse_json("events.detail", d)?,
                            None => Value::Null,
                        },
                    })
                })
                .collect::<Result<Vec<_>>>()?;
        let decision = sqlx::query(self.sql(
            "SELECT reasons, effects, rule_version FROM decisions WHERE request_id = $1 ORDER BY id DESC LIMIT 1",
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        let (motivazioni, effetti, versione_regola) = match decision {
            Some(d) => (
                parse_json("decisions.reasons", d.try_get("reasons")?)?,
                parse_json("decisions.effects", d.try_get("effects")?)?,
                Some(d.try_get("rule_version")?),
            ),
            None => (Vec::new(), Vec::new(), None),
        };
        Ok(Some(RequestView {
            id,
            protocollo: row.try_get("protocollo")?,
            task: row.try_get("task")?,
            stato: row.try_get("stato")?,
            esito: row.try_get("esito")?,
            motivazioni,
            effetti,
            eventi,
            versione_regola,
            creata_il: rfc3339(row.try_get("creata_il")?),
            chiusa_il: row.try_get::<Option<i64>, _>("chiusa_il")?.map(rfc3339),
            sede: row.try_get("sede")?,
            soggetto: row.try_get("soggetto")?,
            sospesa: row.try_get("parked")?,
            assegnata_sede: row.try_get("assegnata_sede")?,
            errore: row.try_get("last_error")?,
            richiesta: parse_json("requests.payload", row.try_get("payload")?)?,
        }))
    }

    pub async fn list(&self, f: &ListFilter) -> Result<Vec<RequestSummary>> {
        let rows = sqlx::query(self.sql(
            "SELECT id, protocollo, task, stato, esito, soggetto, parked, creata_il, chiusa_il FROM requests
             WHERE ($1 IS NULL OR stato = $1) AND ($2 IS NULL OR task = $2) AND ($3 IS NULL OR soggetto = $3)
               AND ($5 IS NULL OR esito = $5)
             ORDER BY id DESC LIMIT $4",
        ))
        .bind(f.stato.map(|s| s.stored().0))
        .bind(f.task.as_deref())
        .bind(f.soggetto.as_deref())
        .bind(f.limit)
        .bind(f.stato.and_then(|s| s.stored().1))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(RequestSummary {
                    id: r.try_get("id")?,
                    protocollo: r.try_get("protocollo")?,
                    task: r.try_get("task")?,
                    stato: r.try_get("stato")?,
                    esito: r.try_get("esito")?,
                    soggetto: r.try_get("soggetto")?,
                    sospesa: r.try_get("parked")?,
                    creata_il: rfc3339(r.try_get("creata_il")?),
                    chiusa_il: r.try_get::<Option<i64>, _>("chiusa_il")?.map(rfc3339),
                })
            })
            .collect()
    }

    /// The task types of the stored requests, sorted.
    pub async fn stored_tasks(&self) -> Result<Vec<String>> {
        Ok(sqlx::query_scalar(self.sql("SELECT DISTINCT task FROM requests ORDER BY task"))
            .fetch_all(&self.pool)
            .await?)
    }

    pub async fn counts(&self) -> Result<QueueCounts> {
        let row = sqlx::query(self.sql(
            "SELECT COUNT(*) FILTER (WHERE stato = 'aperta'), COUNT(*) FILTER (WHERE stato = 'in_carico'),
                    COUNT(*) FILTER (WHERE stato = 'chiusa'),
                    COUNT(*) FILTER (WHERE stato <> 'chiusa' AND parked IS NOT NULL)
             FROM requests",
        ))
        .fetch_one(&self.pool)
        .await?;
        Ok(QueueCounts {
            aperte: row.try_get(0)?,
            in_carico: row.try_get(1)?,
            chiuse: row.try_get(2)?,
            sospese: row.try_get(3)?,
        })
    }

    /// The gauges of `/metrics`, from one statement (one snapshot: the states partition the requests).
    pub async fn ops_snapshot(&self, now: Millis) -> Result<super::OpsSnapshot> {
        const DAY_MS: i64 = 86_400_000;
        let row = sqlx::query(self.sql(
            "SELECT (SELECT COUNT(*) FROM requests WHERE stato = 'aperta'),
                    (SELECT COUNT(*) FROM requests WHERE stato = 'in_carico'),
                    (SELECT COUNT(*) FROM requests WHERE stato = 'chiusa'),
                    (SELECT COUNT(*) FROM requests WHERE stato <> 'chiusa' AND parked IS NOT NULL),
                    (SELECT COUNT(*) FROM requests WHERE stato <> 'chiusa' AND parked = 'rinvio'),
                    (SELECT MIN(creata_il) FROM requests WHERE stato <> 'chiusa' AND parked IS NULL),
                    (SELECT COUNT(*) FROM outbox WHERE state = 'dead'),
                    (SELECT COUNT(*) FROM requests WHERE stato <> 'chiusa' AND parked = 'rinvio'
                                                     AND creata_il <= $1 AND creata_il > $2),
                    (SELECT COUNT(*) FROM requests WHERE stato <> 'chiusa' AND parked = 'rinvio' AND creata_il <= $2),
                    (SELECT COUNT(*) FROM outbox WHERE state = 'pending'),
                    (SELECT MIN(created_at) FROM outbox WHERE state = 'pending')",
        ))
        .bind(now - 20 * DAY_MS)
        .bind(now - 30 * DAY_MS)
        .fetch_one(&self.pool)
        .await?;
        let age = |t: Option<i64>| t.map_or(0.0, |t| (now - t).max(0) as f64 / 1000.0);
        Ok(super::OpsSnapshot {
            counts: QueueCounts {
                aperte: row.try_get(0)?,
                in_carico: row.try_get(1)?,
                chiuse: row.try_get(2)?,
                sospese: row.try_get(3)?,
            },
            referred: row.try_get(4)?,
            oldest_open_age_s: age(row.try_get(5)?),
            dead_notifications: row.try_get(6)?,
            sla_warning: row.try_get(7)?,
            sla_breach: row.try_get(8)?,
            pending_notifications: row.try_get(9)?,
            oldest_pending_notification_age_s: age(row.try_get(10)?),
        })
    }

    /// Number of decisions recorded per request id (for exactly-once checks in tests and the benchmark).
    pub async fn decisions_per_request(&self) -> Result<HashMap<i64, i64>> {
        Ok(sqlx::query_as(self.sql("SELECT request_id, COUNT(*) FROM decisions GROUP BY request_id"))
            .fetch_all(&self.pool)
            .await?
            .into_iter()
            .collect())
    }

    /// Enqueue-to-close latencies of closed requests, in milliseconds.
    pub async fn close_latencies(&self) -> Result<Vec<i64>> {
        Ok(sqlx::query_scalar(self.sql("SELECT chiusa_il - creata_il FROM requests WHERE stato = 'chiusa' ORDER BY 1"))
            .fetch_all(&self.pool)
            .await?)
    }
}

/// Refuses an import whose references point nowhere, naming the record and field.
async fn check_references(tx: &mut Tx, file: &ImportFile) -> Result<()> {
    let sedi: BTreeSet<String> =
        sqlx::query_scalar(tx.sql("SELECT codice FROM sedi")).fetch_all(&mut **tx).await?.into_iter().collect();
    for (i, a) in file.aziende.iter().enumerate() {
        if !sedi.contains(&a.sede) && !file.sedi.iter().any(|s| s.codice == a.sede) {
            return Err(StoreError::Reference {
                record: format!("aziende[{i}] (matricola {})", a.matricola),
                field: "sede".into(),
                problem: format!("sede `{}` is neither in this file nor in the database", a.sede),
            });
        }
    }
    let padri: Vec<&str> = file.deleghe.iter().filter_map(|d| d.padre.as_deref()).collect();
    let known: BTreeSet<String> =
        sqlx::query_scalar(tx.sql("SELECT id FROM deleghe WHERE id IN (SELECT value FROM json_each($1))"))
            .bind(json_text(&padri))
            .fetch_all(&mut **tx)
            .await?
            .into_iter()
            .collect();
    for (i, d) in file.deleghe.iter().enumerate() {
        if let Some(p) = &d.padre
            && !known.contains(p)
            && !file.deleghe.iter().any(|x| &x.id == p)
        {
            return Err(StoreError::Reference {
                record: format!("deleghe[{i}] (id {})", d.id),
                field: "padre".into(),
                problem: format!("delega `{p}` is neither in this file nor in the database"),
            });
        }
    }
    Ok(())
}

/// How [`lock_versions`] locks on PostgreSQL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lock {
    /// The close may bump the version: no other transaction may read it as current until commit.
    Exclusive,
    /// The close only checks the version: others may check it too, but not change it until commit.
    Shared,
}

/// The current versions of subjects, locked until commit on PostgreSQL (in key order, so that two closes
/// wait for each other instead of deadlocking). A subject without a row gets one at version 0 first: a row
/// that does not exist cannot be locked, and another close could otherwise create it unseen.
async fn lock_versions(tx: &mut Tx, subjects: &BTreeSet<Subject>, lock: Lock) -> Result<HashMap<String, i64>> {
    if subjects.is_empty() {
        return Ok(HashMap::new());
    }
    let keys: Vec<String> = subjects.iter().map(Subject::to_string).collect();
    if Dialect::of(tx) == Dialect::Postgres {
        sqlx::query(
            "INSERT INTO subject_versions (subject, version)
             SELECT value, 0 FROM jsonb_array_elements_text($1::jsonb) ORDER BY 1 ON CONFLICT (subject) DO NOTHING",
        )
        .bind(json_text(&keys))
        .execute(&mut **tx)
        .await?;
    }
    let sql = match lock {
        Lock::Exclusive => tx.sql(
            "SELECT subject, version FROM subject_versions WHERE subject IN (SELECT value FROM json_each($1))
             ORDER BY subject /*pg:FOR UPDATE*/",
        ),
        Lock::Shared => tx.sql(
            "SELECT subject, version FROM subject_versions WHERE subject IN (SELECT value FROM json_each($1))
             ORDER BY subject /*pg:FOR SHARE*/",
        ),
    };
    Ok(sqlx::query_as(sql).bind(json_text(&keys)).fetch_all(&mut **tx).await?.into_iter().collect())
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
async fn insert_events(tx: &mut Tx, events: &[NewEvent], now: Millis) -> Result<()> {
    if events.is_empty() {
        return Ok(());
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
    Ok(())
}

async fn apply_plan(tx: &mut Tx, p: &ClosePlan, now: Millis) -> Result<()> {
    if !p.closed.is_empty() {
        sqlx::query(tx.sql(
            "UPDATE requests SET stato = 'chiusa', esito = j.value ->> 1, chiusa_il = $2, aggiornata_il = $2,
                    lease_token = NULL, lease_owner = NULL, last_error = NULL, parked = NULL
             FROM json_each($1) j WHERE requests.id = CAST(j.value ->> 0 AS BIGINT)",
        ))
        .bind(json_text(&p.closed))
        .bind(now)
        .execute(&mut **tx)
        .await?;
    }
    if !p.referred.is_empty() {
        sqlx::query(tx.sql(
            "UPDATE requests SET parked = 'rinvio', assegnata_sede = j.value ->> 1, aggiornata_il = $2,
                    lease_token = NULL, lease_owner = NULL
             FROM json_each($1) j WHERE requests.id = CAST(j.value ->> 0 AS BIGINT)",
        ))
        .bind(json_text(&p.referred))
        .bind(now)
        .execute(&mut **tx)
        .await?;
    }
    if !p.retried.is_empty() {
        sqlx::query(
            tx.sql("UPDATE requests SET available_at = CAST(j.value ->> 1 AS BIGINT), last_error = j.value ->> 2, failures = failures + 1,
                    aggiornata_il = $2, lease_token = NULL, lease_owner = NULL
             FROM json_each($1) j WHERE requests.id = CAST(j.value ->> 0 AS BIGINT)"),
        )
        .bind(json_text(&p.retried))
        .bind(now)
        .execute(&mut **tx)
        .await?;
    }
    if !p.parked.is_empty() {
        sqlx::query(tx.sql(
            "UPDATE requests SET parked = 'errore', last_error = j.value ->> 1, failures = failures + 1,
                    aggiornata_il = $2, lease_token = NULL, lease_owner = NULL
             FROM json_each($1) j WHERE requests.id = CAST(j.value ->> 0 AS BIGINT)",
        ))
        .bind(json_text(&p.parked))
        .bind(now)
        .execute(&mut **tx)
        .await?;
    }
    if !p.released.is_empty() {
        sqlx::query(tx.sql(
            "UPDATE requests SET available_at = $2, lease_token = NULL, lease_owner = NULL
             WHERE id IN (SELECT CAST(value AS BIGINT) FROM json_each($1))",
        ))
        .bind(json_text(&p.released))
        .bind(now)
        .execute(&mut **tx)
        .await?;
    }
    // Decisions carry the largest texts (the trace with every fact read): bound one by one rather than
    // escaped into a JSON document and parsed back, which profiling showed to cost a tenth of a batch.
    for chunk in p.decisions.chunks(1000) {
        let text = format!(
            "INSERT INTO decisions (request_id, outcome, reasons, effects, rule_version, trace, duration_us, decided_at)
             VALUES {}",
            values_placeholders(Dialect::of(tx), chunk.len(), 8)
        );
        let mut insert = sqlx::query(AssertSqlSafe(text));
        for (id, d) in chunk {
            insert = insert
                .bind(*id)
                .bind(d.outcome.as_str())
                .bind(json_text(&d.reasons))
                .bind(json_text(&d.effects))
                .bind(d.rule_version.clone())
                .bind(json_text(&d.trace))
                .bind(d.duration_us as i64)
                .bind(now);
        }
        insert.execute(&mut **tx).await?;
    }
    if !p.revocations.is_empty() {
        let rows: Vec<Value> =
            p.revocations.iter().map(|r| json!([r.delega_id, r.data_revoca, r.request_id])).collect();
        sqlx::query(
            tx.sql("UPDATE deleghe SET stato = 'REVOCATA', data_revoca = j.value ->> 1, revocata_da = CAST(j.value ->> 2 AS BIGINT)
             FROM json_each($1) j WHERE deleghe.id = j.value ->> 0"),
        )
        .bind(json_text(&rows))
        .execute(&mut **tx)
        .await?;
    }
    apply_contact_changes(tx, &p.contacts).await?;
    if !p.versions.is_empty() {
        let rows: Vec<Value> = p.versions.iter().map(|(s, v)| json!([s.to_string(), v])).collect();
        sqlx::query(
            tx.sql("INSERT INTO subject_versions (subject, version) SELECT value ->> 0, CAST(value ->> 1 AS BIGINT) FROM json_each($1) WHERE true
             ON CONFLICT (subject) DO UPDATE SET version = excluded.version"),
        )
        .bind(json_text(&rows))
        .execute(&mut **tx)
        .await?;
    }
    insert_events(tx, &p.events, now).await
}

/// Archives, disables and inserts contacts (the closing plan's `contacts`).
async fn apply_contact_changes(tx: &mut Tx, changes: &[ContactChange]) -> Result<()> {
    let mut updates = Vec::new();
    let mut inserts = Vec::new();
    for change in changes {
        match change {
            ContactChange::Archive { id, valid_to } => updates.push(json!([id, valid_to, "archive"])),
            ContactChange::Disable { id, valid_to } => updates.push(json!([id, valid_to, "disable"])),
            ContactChange::Insert(c) => inserts.push(c),
        }
    }
    if !updates.is_empty() {
        sqlx::query(tx.sql(
            "UPDATE contatti SET stato = 'DISABILITATO', valid_to = j.value ->> 1,
                    anomalia = CASE WHEN j.value ->> 2 = 'archive' THEN NULL ELSE anomalia END
             FROM json_each($1) j WHERE contatti.id = j.value ->> 0",
        ))
        .bind(json_text(&updates))
        .execute(&mut **tx)
        .await?;
    }
    if !inserts.is_empty() {
        insert_contacts(tx, &inserts).await?;
    }
    Ok(())
}

/// Upserts contact rows by id (imports and effects).
async fn insert_contacts(tx: &mut Tx, contatti: &[&Contatto]) -> Result<()> {
    sqlx::query(tx.sql(
        "INSERT INTO contatti (id, titolare_cf, matricola, tipo, valore, uso, stato, anomalia, valid_from, valid_to)
         SELECT value ->> 'id', value ->> 'titolare_cf', value ->> 'matricola', value ->> 'tipo',
                value ->> 'valore', CAST(value -> 'uso' AS TEXT), value ->> 'stato', value ->> 'anomalia',
                value ->> 'valid_from', value ->> 'valid_to'
         FROM json_each($1) WHERE true
         ON CONFLICT (id) DO UPDATE SET titolare_cf = excluded.titolare_cf, matricola = excluded.matricola,
             tipo = excluded.tipo, valore = excluded.valore, uso = excluded.uso, stato = excluded.stato,
             anomalia = excluded.anomalia, valid_from = excluded.valid_from, valid_to = excluded.valid_to",
    ))
    .bind(json_text(&contatti))
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Runs a fact query over `keys` (bound as a JSON array) and files each row under the subject it belongs to.
async fn fill<T>(
    tx: &mut Tx,
    out: &mut HashMap<Subject, SubjectFacts>,
    sql: &'static str,
    keys: &[&str],
    parse: fn(&AnyRow) -> Result<T>,
    subject: fn(&T) -> Option<Subject>,
    put: fn(&mut SubjectFacts, T),
) -> Result<()> {
    if keys.is_empty() {
        return Ok(());
    }
    for row in sqlx::query(tx.sql(sql)).bind(json_text(&keys)).fetch_all(&mut **tx).await? {
        let item = parse(&row)?;
        if let Some(f) = subject(&item).and_then(|s| out.get_mut(&s)) {
            put(f, item);
        }
    }
    Ok(())
}

fn persona(row: &AnyRow) -> Result<Persona> {
    Ok(Persona { cf: row.try_get("cf")?, nome: row.try_get("nome")?, cognome: row.try_get("cognome")? })
}

fn intermediario(row: &AnyRow) -> Result<Intermediario> {
    Ok(Intermediario { cf: row.try_get("cf")?, categoria: row.try_get("categoria")?, albo: row.try_get("albo")? })
}

fn sede(row: &AnyRow) -> Result<Sede> {
    Ok(Sede {
        codice: row.try_get("codice")?,
        denominazione: row.try_get("denominazione")?,
        provincia: row.try_get("provincia")?,
        email: row.try_get("email")?,
    })
}

/// A claimed request from a row holding the request's columns (`claims` is the fencing token).
fn claimed_from_row(row: &AnyRow) -> Result<ClaimedRequest> {
    let payload: Map<String, Value> = parse_json("requests.payload", row.try_get::<&str, _>("payload")?)?;
    let contatti: ContattiNotifica = payload
        .get("contatti_notifica")
        .map(|c| serde_json::from_value(c.clone()))
        .transpose()
        .map_err(|e| corrupt("requests.payload.contatti_notifica", e))?
        .unwrap_or_default();
    Ok(ClaimedRequest {
        id: row.try_get("id")?,
        protocollo: row.try_get("protocollo")?,
        task: row.try_get("task")?,
        soggetto: row.try_get("soggetto")?,
        sede: row.try_get("sede")?,
        payload,
        contatti,
        token: row.try_get("claims")?,
        failures: row.try_get("failures")?,
        creata_il: row.try_get("creata_il")?,
        taken_over: row.try_get::<i64, _>("taken_over")? != 0,
    })
}

fn azienda(row: &AnyRow) -> Result<Azienda> {
    Ok(Azienda {
        matricola: row.try_get("matricola")?,
        cf: row.try_get("cf")?,
        ragione_sociale: row.try_get("ragione_sociale")?,
        sede: row.try_get("sede")?,
        pec_registro_imprese: row.try_get("pec_registro_imprese")?,
        rappresentanti_legali: parse_json("aziende.rappresentanti_legali", row.try_get("rappresentanti_legali")?)?,
    })
}

fn delega(row: &AnyRow) -> Result<Delega> {
    Ok(Delega {
        id: row.try_get("id")?,
        matricola: row.try_get("matricola")?,
        delegato_cf: row.try_get("delegato_cf")?,
        tipo: text_enum(row, "deleghe.tipo")?,
        stato: text_enum(row, "deleghe.stato")?,
        data_inizio: row.try_get("data_inizio")?,
        data_fine: row.try_get("data_fine")?,
        data_revoca: row.try_get("data_revoca")?,
        padre: row.try_get("padre")?,
    })
}

/// A column holding one of an enumeration's names (`table.column`), read with the enumeration's serde names.
fn text_enum<T: serde::de::DeserializeOwned>(row: &AnyRow, what: &str) -> Result<T> {
    let column = what.rsplit('.').next().unwrap_or(what);
    serde_json::from_value(Value::String(row.try_get(column)?)).map_err(|e| corrupt(what, e))
}

fn contatto(row: &AnyRow) -> Result<Contatto> {
    Ok(Contatto {
        id: row.try_get("id")?,
        titolare_cf: row.try_get("titolare_cf")?,
        matricola: row.try_get("matricola")?,
        tipo: text_enum(row, "contatti.tipo")?,
        valore: row.try_get("valore")?,
        uso: parse_json("contatti.uso", row.try_get("uso")?)?,
        stato: text_enum(row, "contatti.stato")?,
        anomalia: row.try_get("anomalia")?,
        valid_from: row.try_get("valid_from")?,
        valid_to: row.try_get("valid_to")?,
    })
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
