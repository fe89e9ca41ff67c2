//! Persistence: requests and their queue state, history, decisions, the notification outbox and the
//! reference data. One API and one implementation for both backends, SQLite and PostgreSQL (see
//! [`Dialect`]), with the same tests.
//!
//! Every write after a claim is fenced by the claim's lease token; batch closing computes its writes with
//! the pure [`crate::domain::closing::plan`] and applies them in one transaction.

mod sql;

use std::collections::HashMap;

use serde::Serialize;
use serde_json::{Map, Value};

use crate::domain::closing::{ClaimedRequest, ClosePlan, Evaluation, RetryPolicy};
use crate::domain::facts::{ImportFile, Subject, SubjectFacts};
use crate::domain::request::{Envelope, Stato};
use crate::domain::time::Millis;

pub use sql::{Dialect, OUTBOX_CHANNEL, REQUESTS_CHANNEL, SqlStore, dialect_of_url};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error(
        "unsupported database URL `{0}`: expected sqlite:PATH (e.g. sqlite:/var/lib/smart-task/smart-task.db) or postgres://USER@HOST:PORT/DATABASE"
    )]
    UnsupportedUrl(String),
    #[error("{record}: field `{field}`: {problem}")]
    Reference { record: String, field: String, problem: String },
    #[error("stored data is not as expected: {0}")]
    Corrupt(String),
    /// The request named does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The operation does not apply to the request in its current state (the message says why).
    #[error("{0}")]
    Refused(String),
    /// `db copy`: the source is not at the latest migration this binary knows (the message says what to do).
    #[error("the source database {0}")]
    SourceNotCurrent(String),
    /// `db copy`: the target holds rows (each entry names a table and its row count).
    #[error(
        "the target database is not empty: {}; db copy writes only into an empty database, and wrote nothing",
        .0.join(", ")
    )]
    TargetNotEmpty(Vec<String>),
    /// `db copy`: the row counts of the target differ from the source's after the copy (rolled back).
    #[error("the copy does not match the source, so it was rolled back and nothing was written: {0}")]
    CopyMismatch(String),
}

impl StoreError {
    /// The database cannot be reached right now (connection refused or dropped, server shutting down or
    /// starting, pool exhausted): worth waiting for, unlike an error in what was asked.
    pub fn is_unavailable(&self) -> bool {
        match self {
            StoreError::Db(e) => match e {
                sqlx::Error::Io(_) | sqlx::Error::Tls(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed => true,
                sqlx::Error::Database(db) => db.code().is_some_and(|c| c.starts_with("08") || c.starts_with("57P")),
                _ => false,
            },
            _ => false,
        }
    }

    /// PostgreSQL aborted the transaction to break a deadlock or a serialization conflict: doing it again
    /// from the start is correct and will likely succeed.
    pub fn is_serialization_conflict(&self) -> bool {
        matches!(self, StoreError::Db(sqlx::Error::Database(db)) if matches!(db.code().as_deref(), Some("40P01" | "40001")))
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// A request accepted by intake, ready to be stored.
#[derive(Debug, Clone)]
pub struct NewRequest {
    pub envelope: Envelope,
    /// The whole request, normalised (codici fiscali upper-case, contacts normalised).
    pub payload: Map<String, Value>,
    pub soggetto: String,
}

/// The result of storing one submitted request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Submitted {
    pub id: i64,
    pub protocollo: String,
    /// True when `chiave_idempotenza` matched an earlier request, which is returned instead.
    pub duplicate: bool,
}

/// Counts of records written by a reference-data import.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ImportReport {
    pub sedi: usize,
    pub aziende: usize,
    pub persone: usize,
    pub intermediari: usize,
    pub deleghe: usize,
    pub contatti: usize,
}

/// One entry of a request's history.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EventView {
    pub tipo: String,
    pub istante: String,
    pub attore: String,
    #[serde(skip_serializing_if = "Value::is_null")]
    pub dettaglio: Value,
}

/// A request as read back (domain.md §9.3).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RequestView {
    pub id: i64,
    pub protocollo: String,
    pub task: String,
    pub stato: String,
    pub esito: Option<String>,
    pub motivazioni: Vec<Value>,
    pub effetti: Vec<Value>,
    pub eventi: Vec<EventView>,
    pub versione_regola: Option<String>,
    pub creata_il: String,
    pub chiusa_il: Option<String>,
    pub sede: String,
    pub soggetto: String,
    /// `rinvio` (referred to an operator) or `errore` (rule failures), when waiting for an operator.
    pub sospesa: Option<String>,
    pub assegnata_sede: Option<String>,
    pub errore: Option<String>,
    pub richiesta: Value,
}

/// A line of `list`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RequestSummary {
    pub id: i64,
    pub protocollo: String,
    pub task: String,
    pub stato: String,
    pub esito: Option<String>,
    pub soggetto: String,
    pub sospesa: Option<String>,
    pub creata_il: String,
    pub chiusa_il: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    pub stato: Option<Stato>,
    pub task: Option<String>,
    pub soggetto: Option<String>,
    pub limit: i64,
}

/// The rules an instance runs, and why its last candidate was refused (`rules status`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RuleStatus {
    pub instance: String,
    /// Task → active version.
    pub active: std::collections::BTreeMap<String, String>,
    pub activated_at: Millis,
    /// Empty when the last candidate was activated.
    pub candidate_errors: Vec<String>,
    pub checked_at: Millis,
}

/// A decision as recorded, with the request it is about.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredDecision {
    pub request_id: i64,
    pub protocollo: String,
    pub task: String,
    pub decided_at: Millis,
    pub decision: crate::domain::decision::Decision,
}

/// A request waiting for an operator (`operator list`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct QueueEntry {
    pub id: i64,
    pub protocollo: String,
    pub task: String,
    pub sede: String,
    /// `rinvio` (the rule referred it) or `errore` (the rule failed too often).
    pub sospesa: String,
    /// For a referral: the reasons the rule gave.
    pub motivazioni: Vec<Value>,
    pub errore: Option<String>,
    pub creata_il: String,
}

/// A document of the Fascicolo Elettronico (domain.md §7).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FascicoloEntry {
    pub protocollo: String,
    pub task: String,
    pub data_invio: String,
    pub data_esito: Option<String>,
    pub esito: Option<String>,
    pub motivazioni: Vec<Value>,
}

/// What `/metrics` samples from the store.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct OpsSnapshot {
    pub counts: QueueCounts,
    /// Age of the oldest request still waiting for the rules (0 when none).
    pub oldest_open_age_s: f64,
    pub dead_notifications: i64,
    /// Requests referred to an operator for 20–30 days (warning) and 30 days or more (breach).
    pub sla_warning: i64,
    pub sla_breach: i64,
}

/// Queue depth by state, for `exit-when-idle`, the benchmark and (later) metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct QueueCounts {
    pub aperte: i64,
    pub in_carico: i64,
    pub chiuse: i64,
    /// Not closed and waiting for an operator (referred or parked after failures).
    pub sospese: i64,
}

impl QueueCounts {
    /// Requests the pipeline still has to decide (including those waiting for a retry).
    pub fn undecided(&self) -> i64 {
        self.aperte + self.in_carico - self.sospese
    }
}

/// An outbox row claimed by the notification dispatcher, with what its templates need.
#[derive(Debug, Clone, PartialEq)]
pub struct DueNotification {
    pub id: i64,
    /// The fencing token of this claim: recording the result is refused once it has moved.
    pub token: i64,
    pub request_id: i64,
    pub event: String,
    /// `email` | `sms`.
    pub channel: String,
    pub recipient: String,
    /// `richiedente` | `controparte`.
    pub role: String,
    /// Attempts so far, this one included.
    pub attempts: i64,
    /// The stable id sent with the notification: the e-mail's Message-ID, the gateway's reference.
    pub reference: String,
    pub protocollo: String,
    pub task: String,
    pub sede: String,
    pub sede_denominazione: Option<String>,
    pub sede_email: Option<String>,
    /// The event's `detail` (chiusura: esito, motivazioni, nota; commento_operatore: testo).
    pub event_detail: Value,
    pub event_at: Millis,
}

/// What became of a claimed notification.
#[derive(Debug, Clone, PartialEq)]
pub enum NotificationFate {
    /// Accepted by the SMTP server or the gateway (confirmed: never sent again).
    Sent { provider_id: Option<String> },
    /// A transient failure: try again from `at`.
    Retry { at: Millis, error: String },
    /// A permanent failure; with `bounce`, the contacts on file with this address or number are flagged
    /// anomalous (`EMAIL_HARD_BOUNCE`, `PEC_NON_VALIDA`, `SMS_NON_RECAPITABILE`).
    Failed { error: String, bounce: bool },
    /// Transient failures until the attempts ran out.
    Dead { error: String },
}

/// The result of one claimed notification, fenced by its claim's token.
#[derive(Debug, Clone, PartialEq)]
pub struct NotificationOutcome {
    pub id: i64,
    pub token: i64,
    pub fate: NotificationFate,
}

/// What recording a batch of results wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecordReport {
    /// Rows whose result was written.
    pub applied: Vec<i64>,
    /// Rows whose lease had moved to another claim: nothing written.
    pub stale: Vec<i64>,
    /// Ids of the contacts flagged anomalous.
    pub flagged_contacts: Vec<String>,
}

/// A line of `notifications list`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NotificationView {
    pub id: i64,
    pub protocollo: String,
    pub evento: String,
    pub canale: String,
    /// As stored; masked by whoever prints it.
    pub destinatario: String,
    pub ruolo: String,
    /// pending | sent | failed | dead
    pub stato: String,
    pub tentativi: i64,
    pub riferimento: Option<String>,
    pub id_fornitore: Option<String>,
    pub creata_il: String,
    pub inviata_il: Option<String>,
    /// For a pending notification: when it is due (or its lease expires).
    pub prossimo_tentativo: Option<String>,
    pub errore: Option<String>,
}

/// Which notifications `notifications retry` puts back in the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryTarget {
    One(i64),
    /// Every notification that failed permanently or ran out of attempts.
    AllUndeliverable,
}

/// What `db copy` copied: the rows of each table in the source and in the target (equal after a copy).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CopyReport {
    pub tables: Vec<CopiedTable>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CopiedTable {
    pub table: String,
    pub source: i64,
    pub target: i64,
}

/// The store, whichever backend the database URL selects (`sqlite:` or `postgres://`): one implementation
/// over sqlx's `Any` driver, whose statements [`Dialect`] writes for each backend.
#[derive(Debug, Clone)]
pub struct Store(SqlStore);

macro_rules! dispatch {
    ($self:ident, $s:ident => $e:expr) => {{
        let $s = &$self.0;
        $e
    }};
}

impl Store {
    /// Connects to the database the URL names (creating a SQLite file if missing); does not migrate.
    pub async fn connect(url: &str, max_connections: u32) -> Result<Store> {
        Ok(Store(SqlStore::connect(url, max_connections).await?))
    }

    /// Which backend this store runs on.
    pub fn dialect(&self) -> Dialect {
        self.0.dialect()
    }

    /// Opens an existing SQLite database read-only: the source of `db copy`.
    pub async fn open_read_only(url: &str) -> Result<Store> {
        Ok(Store(SqlStore::open_read_only(url).await?))
    }

    /// Copies every table of this SQLite database into `target`, an empty PostgreSQL database (migrated
    /// first), in one transaction, from one snapshot of the source; the identity sequences continue after
    /// the copied ids. Refuses a source that is not fully migrated and a target that holds any row.
    pub async fn copy_into(&self, target: &Store) -> Result<CopyReport> {
        self.0.copy_into(&target.0).await
    }

    /// Applies the embedded migrations that are not applied yet.
    pub async fn migrate(&self) -> Result<()> {
        dispatch!(self, s => s.migrate().await)
    }

    /// Stores accepted requests `aperta`, each with its protocol number, event and notifications, all in
    /// one transaction. A request whose idempotency key is known returns the first request instead.
    pub async fn submit(&self, requests: &[NewRequest], default_sede: &str, now: Millis) -> Result<Vec<Submitted>> {
        dispatch!(self, s => s.submit(requests, default_sede, now).await)
    }

    /// Upserts reference data in one transaction and bumps the version of every subject it touches.
    pub async fn import_facts(&self, file: &ImportFile) -> Result<ImportReport> {
        dispatch!(self, s => s.import_facts(file).await)
    }

    /// Claims up to `limit` claimable requests for `owner` until `now + lease_ms`, moving new ones to
    /// `in_carico` with their `smistamento` event and notifications.
    pub async fn claim(&self, owner: &str, limit: u32, lease_ms: i64, now: Millis) -> Result<Vec<ClaimedRequest>> {
        dispatch!(self, s => s.claim(owner, limit, lease_ms, now).await)
    }

    /// Reads the facts of the given subjects, each with its version, from one consistent snapshot.
    pub async fn load_facts(&self, subjects: &[Subject]) -> Result<HashMap<Subject, SubjectFacts>> {
        dispatch!(self, s => s.load_facts(subjects).await)
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
        dispatch!(self, s => s.close_batch(batch, policy, now, actor).await)
    }

    /// Gives back the leases of requests this owner still holds (graceful shutdown).
    pub async fn release(&self, owner: &str, now: Millis) -> Result<u64> {
        dispatch!(self, s => s.release(owner, now).await)
    }

    /// A request by internal id or protocol number, with its history and latest decision.
    pub async fn request(&self, id_or_protocollo: &str) -> Result<Option<RequestView>> {
        dispatch!(self, s => s.request(id_or_protocollo).await)
    }

    pub async fn list(&self, filter: &ListFilter) -> Result<Vec<RequestSummary>> {
        dispatch!(self, s => s.list(filter).await)
    }

    pub async fn counts(&self) -> Result<QueueCounts> {
        dispatch!(self, s => s.counts().await)
    }

    /// Takes a request waiting for an operator, with the rule's last decision (see `operator close`).
    pub async fn claim_for_operator(
        &self,
        key: &str,
        owner: &str,
        lease_ms: i64,
        now: Millis,
    ) -> Result<(ClaimedRequest, Option<crate::domain::decision::Decision>)> {
        dispatch!(self, s => s.claim_for_operator(key, owner, lease_ms, now).await)
    }

    /// An operator's comment: an event in the history, notified to the requester.
    pub async fn comment(&self, key: &str, actor: &str, text: &str, now: Millis) -> Result<String> {
        dispatch!(self, s => s.comment(key, actor, text, now).await)
    }

    /// The requester withdraws an open request (`annulla`).
    pub async fn withdraw(&self, key: &str, richiedente_cf: &str, now: Millis) -> Result<String> {
        dispatch!(self, s => s.withdraw(key, richiedente_cf, now).await)
    }

    /// Puts a parked request back in the queue, to be decided by the rules again.
    pub async fn requeue(&self, key: &str, actor: &str, now: Millis) -> Result<String> {
        dispatch!(self, s => s.requeue(key, actor, now).await)
    }

    /// Requests waiting for an operator, optionally of one sede.
    pub async fn operator_queue(&self, sede: Option<&str>) -> Result<Vec<QueueEntry>> {
        dispatch!(self, s => s.operator_queue(sede).await)
    }

    /// Every closed request of a subject (matricola or codice fiscale).
    pub async fn fascicolo(&self, subject: &str) -> Result<Vec<FascicoloEntry>> {
        dispatch!(self, s => s.fascicolo(subject).await)
    }

    /// Records an activation or a refused candidate of an instance's rules.
    pub async fn record_rule_status(&self, status: &RuleStatus) -> Result<()> {
        dispatch!(self, s => s.record_rule_status(status).await)
    }

    /// Every instance's rule status.
    pub async fn rule_status(&self) -> Result<Vec<RuleStatus>> {
        dispatch!(self, s => s.rule_status().await)
    }

    /// Decisions whose shadow candidate disagreed with the active version (`rules shadow`).
    pub async fn shadow_disagreements(&self, task: Option<&str>) -> Result<Vec<StoredDecision>> {
        dispatch!(self, s => s.shadow_disagreements(task).await)
    }

    /// Every decision recorded for a request, oldest first (`explain`).
    pub async fn decisions_of(&self, key: &str) -> Result<Vec<StoredDecision>> {
        dispatch!(self, s => s.decisions_of(key).await)
    }

    /// The rule decisions that closed requests, with each request as the rule saw it (`replay`).
    pub async fn closing_rule_decisions(
        &self,
        since: Option<Millis>,
        task: Option<&str>,
    ) -> Result<Vec<(ClaimedRequest, crate::domain::decision::Decision, Millis)>> {
        dispatch!(self, s => s.closing_rule_decisions(since, task).await)
    }

    /// Claims up to `limit` due notifications of the given channels for `owner` until `now + lease_ms`
    /// (a lease and a fencing token, like requests); fixes each one's stable reference at its first claim.
    pub async fn claim_notifications(
        &self,
        owner: &str,
        channels: &[&str],
        limit: u32,
        lease_ms: i64,
        now: Millis,
        message_id_domain: &str,
    ) -> Result<Vec<DueNotification>> {
        dispatch!(self, s => s.claim_notifications(owner, channels, limit, lease_ms, now, message_id_domain).await)
    }

    /// Records the results of claimed notifications in one transaction, fenced by their tokens; flags the
    /// contacts of permanent bounces when `flag_contacts`.
    pub async fn record_notifications(
        &self,
        outcomes: &[NotificationOutcome],
        flag_contacts: bool,
        now: Millis,
    ) -> Result<RecordReport> {
        dispatch!(self, s => s.record_notifications(outcomes, flag_contacts, now).await)
    }

    /// Gives back the notification leases `owner` still holds (graceful shutdown).
    pub async fn release_notifications(&self, owner: &str, now: Millis) -> Result<u64> {
        dispatch!(self, s => s.release_notifications(owner, now).await)
    }

    /// Notifications of these channels due now or in flight (leased); those waiting for a later retry are
    /// not counted (`run --exit-when-idle`).
    pub async fn notifications_due(&self, channels: &[&str], now: Millis) -> Result<i64> {
        dispatch!(self, s => s.notifications_due(channels, now).await)
    }

    /// Notifications, newest first; with `undeliverable`, only those failed permanently or dead.
    pub async fn list_notifications(&self, undeliverable: bool, limit: i64) -> Result<Vec<NotificationView>> {
        dispatch!(self, s => s.list_notifications(undeliverable, limit).await)
    }

    /// Puts failed or dead notifications back in the queue, due now; a sent one is refused (never sent twice).
    pub async fn retry_notifications(&self, target: RetryTarget, now: Millis) -> Result<Vec<i64>> {
        dispatch!(self, s => s.retry_notifications(target, now).await)
    }

    /// The next scheduled instant of a cron job (`first` when the job is new).
    pub async fn cron_next(&self, name: &str, first: Millis) -> Result<Millis> {
        dispatch!(self, s => s.cron_next(name, first).await)
    }

    /// Claims a cron run (compare-and-set on the scheduled instant): true for exactly one instance.
    pub async fn cron_claim(&self, name: &str, due: Millis, next: Millis, now: Millis) -> Result<bool> {
        dispatch!(self, s => s.cron_claim(name, due, next, now).await)
    }

    /// Records how a cron run ended.
    pub async fn cron_done(&self, name: &str, error: Option<&str>, now: Millis) -> Result<()> {
        dispatch!(self, s => s.cron_done(name, error, now).await)
    }

    /// Gives back expired leases. Returns how many.
    pub async fn reap_leases(&self, now: Millis) -> Result<u64> {
        dispatch!(self, s => s.reap_leases(now).await)
    }

    /// SLA escalation of referred requests; returns (warnings, breaches) written.
    pub async fn escalate_sla(&self, now: Millis) -> Result<(usize, usize)> {
        dispatch!(self, s => s.escalate_sla(now).await)
    }

    /// Deletes closed requests closed before `cutoff`; returns how many.
    pub async fn purge_closed(&self, cutoff: Millis) -> Result<u64> {
        dispatch!(self, s => s.purge_closed(cutoff).await)
    }

    /// Decisions recorded since an instant, by outcome (the daily summary).
    pub async fn decisions_since(&self, since: Millis) -> Result<Vec<(String, i64)>> {
        dispatch!(self, s => s.decisions_since(since).await)
    }

    /// The gauges of `/metrics`.
    pub async fn ops_snapshot(&self, now: Millis) -> Result<OpsSnapshot> {
        dispatch!(self, s => s.ops_snapshot(now).await)
    }

    /// Number of decisions recorded per request id (for exactly-once checks in tests and the benchmark).
    pub async fn decisions_per_request(&self) -> Result<HashMap<i64, i64>> {
        dispatch!(self, s => s.decisions_per_request().await)
    }

    /// Enqueue-to-close latencies of closed requests, in milliseconds.
    pub async fn close_latencies(&self) -> Result<Vec<i64>> {
        dispatch!(self, s => s.close_latencies().await)
    }
}
