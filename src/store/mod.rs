//! Persistence: requests and their queue state, history, decisions, the notification outbox and the
//! reference data. One API and one implementation for both backends, SQLite and PostgreSQL (see
//! [`Dialect`]), with the same tests.
//!
//! Every write after a claim is fenced by the claim's lease token; batch closing computes its writes with
//! the pure [`crate::domain::closing::plan`] and applies them in one transaction.

mod sql;

use serde::Serialize;
use serde_json::{Map, Value};

use crate::domain::request::{Envelope, Stato};
use crate::domain::time::Millis;

pub use sql::questionnaire::StoredAnswers;
pub use sql::{Dialect, ESITO_NOT_RENDERED, OUTBOX_CHANNEL, REQUESTS_CHANNEL, Store, dialect_of_url};

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
    /// A `chiave_idempotenza` already used for a different request (`index`: 0-based, in the submission).
    #[error(
        "request {}: field `chiave_idempotenza`: already used by {protocollo} for a different request; a retry must repeat the request exactly, a new request needs a new key",
        index + 1
    )]
    IdempotencyMismatch { index: usize, protocollo: String },
    /// A `chiave_idempotenza` whose first submission is still being stored (`index`: 0-based): the caller
    /// retries later and then gets the first answer.
    #[error(
        "request {}: field `chiave_idempotenza`: a submission with this key is still being processed; retry in a moment to get its answer",
        index + 1
    )]
    IdempotencyInFlight { index: usize },
    #[error("stored data is not as expected: {0}")]
    Corrupt(String),
    /// The request named does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The operation does not apply to the request in its current state (the message says why).
    #[error("{0}")]
    Refused(String),
    /// The database the configuration names does not exist (its name: a SQLite path, a PostgreSQL database).
    #[error("{0} does not exist: run `smart-taskd migrate` or check database.url (or SMART_TASK_DATABASE_URL)")]
    Missing(String),
    /// The database is not at the latest migration this binary knows (the message names both).
    #[error("{0}: run `smart-taskd migrate` or check database.url (or SMART_TASK_DATABASE_URL)")]
    NotCurrent(String),
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
    /// The files sent with it, inspected (at most `intake.allegati.max_files`), stored in its transaction.
    pub allegati: Vec<NewAttachment>,
}

/// A file accepted with a request or a message, its type read from its content, ready to be stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewAttachment {
    /// The name the client gave: shown, never used as a path.
    pub nome: String,
    /// The media type read from the content (`application/pdf`, `image/jpeg`, …).
    pub tipo: String,
    /// Lowercase hex SHA-256 of the content: its key in the store.
    pub sha256: String,
    /// Shared, because a submission is cloned into the intake queue.
    pub content: std::sync::Arc<[u8]>,
}

/// An attachment as listed with its request (its bytes are downloaded apart).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct AttachmentView {
    /// 1, 2, … within the request, in the order received: the `{n}` of its download.
    #[schema(minimum = 1, maximum = 1000)]
    pub posizione: i64,
    #[schema(max_length = 200)]
    pub nome: String,
    #[schema(max_length = 32)]
    pub tipo: String,
    #[schema(minimum = 1, maximum = 1073741824)]
    pub dimensione: i64,
    #[schema(max_length = 64, pattern = "^[0-9a-f]{64}$")]
    pub sha256: String,
    /// True when it came with a message of the requester to the sede, not with the request itself.
    pub messaggio: bool,
    #[schema(format = DateTime)]
    pub ricevuto_il: String,
}

/// An attachment's bytes, for its download.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttachmentContent {
    pub nome: String,
    pub tipo: String,
    pub sha256: String,
    pub content: Vec<u8>,
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
    /// Rows an accepted request changed after the file's snapshot, kept as the request left them.
    pub kept: Vec<EffectRow>,
    /// The same, overwritten with the file's rows because the import was told to (`--overwrite-effects`).
    pub overwritten: Vec<EffectRow>,
}

/// A row of an import file that an accepted request's effect changed after the file's snapshot (or, for a file
/// without one, ever), and where the two differ.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EffectRow {
    /// e.g. `deleghe[2] (id D-3)`.
    pub record: String,
    /// The request whose effect changed it (none for a row whose request is unknown).
    pub protocollo: Option<String>,
    pub modificata_il: String,
    /// The fields whose values differ, by name (never their values: contacts are personal data).
    pub campi: Vec<String>,
}

/// One entry of a request's history.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct EventView {
    #[schema(max_length = 64)]
    pub tipo: String,
    #[schema(format = DateTime)]
    pub istante: String,
    #[schema(max_length = 1000)]
    pub attore: String,
    #[serde(skip_serializing_if = "Value::is_null")]
    #[schema(value_type = Object)]
    pub dettaglio: Value,
}

/// A request as read back (domain.md §9.3).
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct RequestView {
    pub id: i64,
    #[schema(max_length = 64)]
    pub protocollo: String,
    #[schema(max_length = 1000)]
    pub task: String,
    #[schema(max_length = 16)]
    pub stato: String,
    #[schema(max_length = 16)]
    pub esito: Option<String>,
    #[schema(value_type = Vec<Object>, min_items = 0, max_items = 1000)]
    pub motivazioni: Vec<Value>,
    #[schema(value_type = Vec<Object>, min_items = 0, max_items = 1000)]
    pub effetti: Vec<Value>,
    #[schema(min_items = 0, max_items = 100000)]
    pub eventi: Vec<EventView>,
    #[schema(max_length = 1000)]
    pub versione_regola: Option<String>,
    #[schema(format = DateTime)]
    pub creata_il: String,
    #[schema(format = DateTime)]
    pub chiusa_il: Option<String>,
    #[schema(max_length = 4, pattern = "^[0-9]{4}$")]
    pub sede: String,
    #[schema(max_length = 16)]
    pub soggetto: String,
    /// `rinvio` (referred to an operator) or `errore` (rule failures), when waiting for an operator.
    #[schema(max_length = 16)]
    pub sospesa: Option<String>,
    #[schema(max_length = 4, pattern = "^[0-9]{4}$")]
    pub assegnata_sede: Option<String>,
    /// The operator holding it (presa in carico), if anyone.
    #[schema(max_length = 64)]
    pub assegnata_a: Option<String>,
    #[schema(max_length = 8000)]
    pub errore: Option<String>,
    /// The request as submitted, normalised.
    #[schema(value_type = Object)]
    pub richiesta: Value,
    /// The files of the request and of the requester's messages, in the order received.
    #[schema(min_items = 0, max_items = 1000)]
    pub allegati: Vec<AttachmentView>,
}

/// A line of `list`.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct RequestSummary {
    pub id: i64,
    #[schema(max_length = 64)]
    pub protocollo: String,
    #[schema(max_length = 1000)]
    pub task: String,
    #[schema(max_length = 16)]
    pub stato: String,
    #[schema(max_length = 16)]
    pub esito: Option<String>,
    #[schema(max_length = 16)]
    pub soggetto: String,
    #[schema(max_length = 10, pattern = "^[0-9]{10}$")]
    pub matricola: Option<String>,
    #[schema(max_length = 16)]
    pub sospesa: Option<String>,
    #[schema(format = DateTime)]
    pub creata_il: String,
    #[schema(format = DateTime)]
    pub aggiornata_il: String,
    #[schema(format = DateTime)]
    pub chiusa_il: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    pub stato: Option<Stato>,
    pub task: Option<String>,
    pub soggetto: Option<String>,
    /// Only the requests this codice fiscale submitted (the Lista Richieste of a requester).
    pub richiedente: Option<String>,
    pub matricola: Option<String>,
    /// accolta | non_accolta | annullata.
    pub esito: Option<String>,
    /// Submitted in `[from, to)` (unix ms).
    pub creata: (Option<Millis>, Option<Millis>),
    /// Last changed in `[from, to)` (unix ms).
    pub aggiornata: (Option<Millis>, Option<Millis>),
    /// Only requests not closed yet (aperta or in_carico, referred and parked ones included).
    pub open_only: bool,
    /// Only ids below this one: the cursor of the next page (lists are newest first).
    pub before_id: Option<i64>,
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
    /// The promoted rule set it runs (None: a rules directory, `rules.activation: directory`).
    pub rule_set: Option<i64>,
}

/// Where a promoted rule set stands (`rule_sets.state`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RuleSetState {
    /// Vetted; waits for a second person's approval before it runs.
    AwaitingApproval,
    /// The set every instance runs (at most one).
    Active,
    /// Ran once; replaced by a later one.
    Retired,
    /// A gate refused it (compile, lint, cases, coverage): recorded with why, never run.
    Refused,
    /// Awaited approval while another set was activated: its replay and diff compared it with a set that no
    /// longer runs, so it must be promoted again.
    Superseded,
}

impl RuleSetState {
    pub const ALL: [RuleSetState; 5] = [
        RuleSetState::AwaitingApproval,
        RuleSetState::Active,
        RuleSetState::Retired,
        RuleSetState::Refused,
        RuleSetState::Superseded,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RuleSetState::AwaitingApproval => "awaiting_approval",
            RuleSetState::Active => "active",
            RuleSetState::Retired => "retired",
            RuleSetState::Refused => "refused",
            RuleSetState::Superseded => "superseded",
        }
    }

    pub fn parse(s: &str) -> Option<RuleSetState> {
        RuleSetState::ALL.into_iter().find(|state| state.as_str() == s)
    }

    /// In Italian, for the console and `rules versions`.
    pub fn label(self) -> &'static str {
        match self {
            RuleSetState::AwaitingApproval => "in attesa di approvazione",
            RuleSetState::Active => "attiva",
            RuleSetState::Retired => "ritirata",
            RuleSetState::Refused => "rifiutata",
            RuleSetState::Superseded => "superata",
        }
    }
}

/// A promoted rule set as recorded.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RuleSetRecord {
    pub id: i64,
    pub digest: String,
    /// Relative path → text: every file of the candidate directory.
    pub files: std::collections::BTreeMap<String, String>,
    /// Task → task version (empty when it did not compile).
    pub tasks: std::collections::BTreeMap<String, String>,
    pub author: String,
    pub reason: String,
    pub diff: String,
    /// Every gate's result (`ruletools::promote::Gates`).
    pub results: serde_json::Value,
    pub state: RuleSetState,
    pub based_on: Option<i64>,
    pub submitted_at: Millis,
    pub approved_by: Option<String>,
    pub approved_at: Option<Millis>,
    pub activated_at: Option<Millis>,
    pub retired_at: Option<Millis>,
}

/// A vetted candidate to record.
#[derive(Debug)]
pub struct NewRuleSet<'a> {
    pub digest: &'a str,
    pub files: &'a std::collections::BTreeMap<String, String>,
    pub tasks: &'a std::collections::BTreeMap<String, String>,
    pub author: &'a str,
    pub reason: &'a str,
    pub diff: &'a str,
    pub results: &'a serde_json::Value,
    /// `Active`, `AwaitingApproval` or `Refused`.
    pub state: RuleSetState,
    pub based_on: Option<i64>,
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
    /// The same instant, for the days open and the cursor.
    #[serde(skip)]
    pub creata_ms: Millis,
    /// The operator holding it (presa in carico), if anyone.
    pub assegnata_a: Option<String>,
    pub assegnata_il: Option<String>,
}

/// Who holds a request waiting for an operator (presa in carico), if anyone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Assignment {
    #[schema(max_length = 64)]
    pub protocollo: String,
    /// The operator's id (the `sub` of their token, or the CLI's `--operatore`).
    #[schema(max_length = 64)]
    pub assegnata_a: Option<String>,
    #[schema(format = DateTime)]
    pub assegnata_il: Option<String>,
}

/// Which requests of the operator queue to list, oldest first.
#[derive(Debug, Clone, Default)]
pub struct QueueFilter {
    /// Only this sede's (the competent one: the sede it was assigned to, else the one that received it).
    pub sede: Option<String>,
    pub assegnata: Option<AssignedTo>,
    /// Only requests after this one in the queue's order (`creata_il`, `id`): the cursor of the next page.
    pub after: Option<(Millis, i64)>,
    pub limit: i64,
}

/// The queue filter on who holds a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AssignedTo {
    /// Held by this operator.
    Operator(String),
    /// Held by nobody.
    Nobody,
}

/// A document of the Fascicolo Elettronico (domain.md §7).
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct FascicoloEntry {
    #[schema(max_length = 64)]
    pub protocollo: String,
    #[schema(max_length = 1000)]
    pub task: String,
    /// When it was submitted.
    #[schema(format = DateTime)]
    pub data_invio: String,
    /// When it was closed.
    #[schema(format = DateTime)]
    pub data_esito: Option<String>,
    #[schema(max_length = 16)]
    pub esito: Option<String>,
    #[schema(value_type = Vec<Object>, min_items = 0, max_items = 1000)]
    pub motivazioni: Vec<Value>,
}

/// What `/metrics` samples from the store.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct OpsSnapshot {
    pub counts: QueueCounts,
    /// Of `counts.sospese`, those referred to an operator by their rule (the others were parked after failures).
    pub referred: i64,
    /// Age of the oldest request still waiting for the rules (0 when none).
    pub oldest_open_age_s: f64,
    pub dead_notifications: i64,
    /// Requests referred to an operator for 20–30 days (warning) and 30 days or more (breach).
    pub sla_warning: i64,
    pub sla_breach: i64,
    /// Notifications not yet sent, failed or dead (due now or waiting for a retry), and the age of the oldest.
    pub pending_notifications: i64,
    pub oldest_pending_notification_age_s: f64,
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
    /// The requester's profile (AZIENDA, INTERMEDIARIO, …) and, for an intermediary, its registered category:
    /// whom the satisfaction questionnaire invites.
    pub profilo_richiedente: String,
    pub categoria_intermediario: Option<String>,
    /// A quesito's `ambito` (its code), else None.
    pub ambito: Option<String>,
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

/// A place in the change feed: after every event that sorts at or before `(tx, id)`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct FeedPosition {
    /// The writing transaction's id on PostgreSQL, 0 on SQLite (see migration 0010).
    pub tx: i64,
    pub id: i64,
}

/// A webhook subscription to store (its id and secret generated by `app::webhooks`).
#[derive(Debug, Clone)]
pub struct NewWebhook {
    pub id: String,
    pub integrator: String,
    pub url: String,
    pub descrizione: Option<String>,
    pub secret: String,
    /// The feed position it starts after.
    pub start: FeedPosition,
}

/// A subscription as its integrator lists it (never the secret).
#[derive(Debug, Clone, PartialEq)]
pub struct WebhookView {
    pub id: String,
    pub url: String,
    pub descrizione: Option<String>,
    pub created_at: Millis,
    /// The last event delivered (or given up on).
    pub cursor: FeedPosition,
    /// Failed attempts on the next event so far, and the last one's HTTP status (0: no answer).
    pub attempts: i64,
    pub last_status: Option<i64>,
    pub dead_letters: i64,
}

/// A subscription leased to a delivery loop.
#[derive(Debug, Clone)]
pub struct DueWebhook {
    pub id: String,
    pub url: String,
    pub secret: String,
    pub cursor: FeedPosition,
    pub attempts: i64,
    /// The lease's fencing token.
    pub token: i64,
}

/// What a change feed follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FeedSource {
    /// The requests' events (`events`).
    Events,
    /// The master-data changes accepted requests made (`applied_effects`).
    Effects,
}

/// A committed row of a feed (an event, or an applied effect with its kind and what changed), with its
/// request's protocol number and task.
#[derive(Debug, Clone, PartialEq)]
pub struct FeedEvent {
    pub position: FeedPosition,
    pub request_id: i64,
    pub protocollo: String,
    pub task: String,
    pub kind: String,
    pub at: Millis,
    pub detail: Value,
}
