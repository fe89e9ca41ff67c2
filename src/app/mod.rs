//! The use cases shared by the CLI and the HTTP API: who acts ([`Actor`]), what they may do, and one error
//! type ([`AppError`]) that both edges map — to exit codes and to HTTP statuses. Neither edge holds domain
//! logic: the CLI prints what these return, the HTTP handlers serialise it.

pub mod agenda;
mod attachments;
mod esito;
mod explanation;
pub mod feeds;
mod menu;
mod operations;
pub mod operator;
mod position;
pub mod questionnaire;
pub mod rule_sets;
pub mod webhooks;

pub use attachments::attachment;
pub use esito::{EsitoPdf, esito, esito_of, esito_view, record_esiti};
pub use explanation::explanation;
pub use menu::{MenuItem, menu};
pub use operations::{Operations, ShadowDisagreement, operations, retry_notification};
pub use position::{Riepilogo, fascicolo, riepilogo};
use sha2::{Digest, Sha256};

use crate::config::IntakeConfig;
use crate::documents::attachment::Upload;
use crate::domain::request::ATTACHMENTS_FIELD;
use crate::domain::time::Millis;
use crate::domain::validators;
use crate::intake::{self, IntakeError};
use crate::rules::RuleSet;
use crate::store::{ListFilter, NewRequest, RequestSummary, RequestView, Store, StoreError, Submitted};

/// Who is acting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Actor {
    /// The machine's own administrator, on the command line: may do anything.
    Cli,
    /// The portal acting for an authenticated requester (codice fiscale and profile from the token): submits
    /// in their own name and sees the requests they submitted.
    Richiedente { cf: String, profilo: String },
    /// An operator of a sede (the token's `sub` and `sede`): works that sede's queue; `agisce: false` is a
    /// read-only operator, who sees the queue and the requests but may not claim, comment or close.
    Operatore { id: String, sede: String, agisce: bool },
    /// The administrator on the command line acting as a named operator (`operator … --operatore NAME`): may
    /// act on every sede's requests, as the CLI may, and the history records `operatore:NAME`.
    OperatoreCli { id: String },
    /// An integrator (the archives, the portal's back end): reads the change feeds and owns webhook
    /// subscriptions; sees no single request.
    Integratore { id: String },
    /// The people who run the service: dead letters, rule versions, counts.
    Operazioni { id: String },
}

impl Actor {
    /// The actor as the history records it (`operatore:ROSSI`): a stable identity, never a codice fiscale
    /// (a requester is recorded as `richiedente`: who they are is the request's own field).
    pub fn audit_name(&self) -> String {
        match self {
            Actor::Cli => "cli".into(),
            Actor::Richiedente { .. } => "richiedente".into(),
            Actor::Operatore { id, .. } | Actor::OperatoreCli { id } => format!("operatore:{id}"),
            Actor::Integratore { id } => format!("integratore:{id}"),
            Actor::Operazioni { id } => format!("operazioni:{id}"),
        }
    }

    /// Whether the actor may see a request: the CLI every one, a requester those they submitted.
    fn may_see(&self, view: &RequestView) -> bool {
        match self {
            Actor::Cli | Actor::OperatoreCli { .. } => true,
            Actor::Richiedente { cf, .. } => view
                .richiesta
                .get("richiedente_cf")
                .and_then(|v| v.as_str())
                .is_some_and(|owner| owner == cf || validators::same_person(owner, cf)),
            Actor::Operatore { sede, .. } => &view.sede == sede || view.assegnata_sede.as_ref() == Some(sede),
            Actor::Integratore { .. } | Actor::Operazioni { .. } => false,
        }
    }
}

/// Why a use case did not happen. Each variant has one exit code and one HTTP status.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// The input was refused: every problem, each naming its request and field.
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<IntakeError>),
    /// The actor may not do this (the message says why, without personal data).
    #[error("{0}")]
    Forbidden(String),
    /// Nothing the actor may see has that id (another tenant's request is not found, not forbidden).
    #[error("{0}")]
    NotFound(String),
    /// The request's state refuses the operation now (e.g. the facts under a referral moved); the message says
    /// what to do.
    #[error("{0}")]
    Conflict(String),
    /// The caller's precondition (`If-Match`) names a representation that is no longer the current one.
    #[error("{0}")]
    PreconditionFailed(String),
    /// The rule failed while deciding a request again (the request stays with the operator).
    #[error("{0}")]
    RuleFailed(String),
    /// A representation could not be encoded.
    #[error("cannot encode the answer: {0}")]
    Encode(#[from] serde_json::Error),
    /// A file sent with a request or a message was refused: which one, and the rule it broke (its stable id
    /// in brackets, for clients and scripts).
    #[error("{} [{}]", .0, .0.refusal.rule())]
    AttachmentRefused(crate::documents::attachment::AttachmentError),
    /// A document (the esito PDF) could not be rendered.
    #[error(transparent)]
    Document(#[from] crate::documents::PdfError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl AppError {
    /// The CLI's exit code: 2 refused input, 3 not found, 1 a failure of the machinery.
    pub fn exit_code(&self) -> u8 {
        match self {
            AppError::Invalid(_)
            | AppError::AttachmentRefused(_)
            | AppError::Forbidden(_)
            | AppError::Conflict(_)
            | AppError::PreconditionFailed(_) => 2,
            AppError::RuleFailed(_) | AppError::Encode(_) | AppError::Document(_) => 1,
            AppError::NotFound(_) => 3,
            AppError::Store(StoreError::NotFound(_)) => 3,
            AppError::Store(
                StoreError::Refused(_)
                | StoreError::Reference { .. }
                | StoreError::IdempotencyMismatch { .. }
                | StoreError::IdempotencyInFlight { .. }
                | StoreError::SourceNotCurrent(_)
                | StoreError::TargetNotEmpty(_),
            ) => 2,
            AppError::Store(_) => 1,
        }
    }

    /// The HTTP status: 422 refused input, 403, 404, 409 for a state that refuses the operation, 412 for a
    /// stale precondition, 503 when the database cannot be reached, 500 otherwise.
    pub fn http_status(&self) -> u16 {
        match self {
            AppError::Invalid(_) | AppError::AttachmentRefused(_) => 422,
            AppError::Forbidden(_) => 403,
            AppError::NotFound(_) | AppError::Store(StoreError::NotFound(_)) => 404,
            AppError::Store(StoreError::Refused(_) | StoreError::IdempotencyInFlight { .. })
            | AppError::Conflict(_) => 409,
            AppError::PreconditionFailed(_) => 412,
            AppError::RuleFailed(_) | AppError::Encode(_) | AppError::Document(_) => 500,
            AppError::Store(StoreError::Reference { .. } | StoreError::IdempotencyMismatch { .. }) => 422,
            AppError::Store(StoreError::Db(_) | StoreError::Missing(_) | StoreError::NotCurrent(_)) => 503,
            AppError::Store(_) => 500,
        }
    }
}

/// A submission as received: the document (one request or a list; JSON or YAML) and the files sent with it
/// (for a single request only).
pub struct Submission<'a> {
    pub text: &'a str,
    /// The document's name in messages (a file's path, `body`).
    pub source_name: &'a str,
    pub files: &'a [Upload<'a>],
}

/// Submits a document in the actor's name, validated against the active rules, with its files inspected: all
/// of it is queued, or nothing. Returns each request as stored, with what was asked.
pub async fn submit(
    store: &Store,
    rules: &RuleSet,
    intake_config: &IntakeConfig,
    actor: &Actor,
    submission: &Submission<'_>,
    now: Millis,
) -> Result<Vec<(Submitted, NewRequest)>, AppError> {
    let Submission { text, source_name, files } = *submission;
    if !matches!(actor, Actor::Cli | Actor::Richiedente { .. }) {
        return Err(AppError::Forbidden("only a requester submits requests".into()));
    }
    let items = intake::parse_submission(text, source_name, &intake_config.limits).map_err(AppError::Invalid)?;
    let mut requests = intake::validate_all(items, rules, source_name).map_err(AppError::Invalid)?;
    if !files.is_empty() {
        let [request] = requests.as_mut_slice() else {
            return Err(field_refused(
                "allegati",
                format!("files go with one request, and this document holds {}: send them apart", requests.len()),
            ));
        };
        request.allegati = attachments::accept(files, &intake_config.allegati)?;
        request.payload.insert(ATTACHMENTS_FIELD.into(), attachments::payload_entry(&request.allegati));
    }
    if let Actor::Richiedente { cf, profilo } = actor
        && let Some(i) =
            requests.iter().position(|r| &r.envelope.richiedente_cf != cf || &r.envelope.profilo_richiedente != profilo)
    {
        return Err(AppError::Forbidden(format!(
            "request {} of {}: `richiedente_cf` and `profilo_richiedente` must be those of the authenticated requester",
            i + 1,
            requests.len()
        )));
    }
    menu::check_pilot(store, rules, &requests).await?;
    let stored = store.submit(&requests, &intake_config.sede_predefinita, now).await?;
    Ok(stored.into_iter().zip(requests).collect())
}

/// A refused input naming its field (`motivi[1]`: the pointer `/motivi/1` of the API's problem).
pub fn field_refused(field: &str, problem: String) -> AppError {
    AppError::Invalid(vec![IntakeError {
        source_name: "body".into(),
        position: "request 1 of 1".into(),
        index: None,
        error: crate::domain::request::FieldError::new(field, problem),
    }])
}

/// Free text of the caller (a message, a comment) trimmed, refused when empty, holding a control character or
/// longer than `max` characters (`intake.limits.max_note_chars`).
pub(crate) fn free_text<'t>(field: &str, text: &'t str, max: usize) -> Result<&'t str, AppError> {
    let text = text.trim();
    if text.is_empty() {
        return Err(field_refused(field, "empty: write the message".into()));
    }
    if let Some((at, c)) = intake::forbidden_char(text, true) {
        return Err(field_refused(
            field,
            format!("contains the control character U+{:04X} at character {}", c as u32, at + 1),
        ));
    }
    let n = text.chars().count();
    if n > max {
        return Err(field_refused(
            field,
            format!("{n} characters, more than the limit of {max} (`intake.limits.max_note_chars`)"),
        ));
    }
    Ok(text)
}

/// A request's representation as the API sends it, with its strong ETag: what `GET /richieste/{id}` answers
/// and what an operator's `If-Match` must name.
pub struct Tagged {
    pub body: Vec<u8>,
    pub etag: String,
}

/// Encodes a request and tags it (a digest of the encoding: any change of what the caller sees changes it).
pub fn tagged(view: &RequestView) -> Result<Tagged, AppError> {
    let body = serde_json::to_vec(view)?;
    let etag = format!("\"{}\"", crate::domain::hex_prefix(&Sha256::digest(&body), 16));
    Ok(Tagged { body, etag })
}

/// A request by id or protocol number, if the actor may see it.
pub async fn read(store: &Store, actor: &Actor, key: &str) -> Result<RequestView, AppError> {
    match store.request(key).await? {
        Some(view) if actor.may_see(&view) => Ok(view),
        _ => Err(AppError::NotFound(format!("no request with id or protocol number `{key}`"))),
    }
}

/// The most requests one page of a list holds.
pub const MAX_PAGE: i64 = 200;

/// A page of a list, newest first, and the cursor of the next one (None on the last page).
pub struct Page {
    pub items: Vec<RequestSummary>,
    pub next_before_id: Option<i64>,
}

/// The requests the actor may list with `filter`: a requester's own (their Lista Richieste, open and closed
/// together), everything for the CLI. `filter.limit` is bounded by [`MAX_PAGE`].
pub async fn list(store: &Store, actor: &Actor, mut filter: ListFilter) -> Result<Page, AppError> {
    match actor {
        Actor::Cli => {}
        Actor::Richiedente { cf, .. } => filter.richiedente = Some(cf.clone()),
        Actor::Operatore { .. } | Actor::OperatoreCli { .. } | Actor::Integratore { .. } | Actor::Operazioni { .. } => {
            return Err(AppError::Forbidden(
                "the Lista Richieste is a requester's: operators work their sede's queue".into(),
            ));
        }
    }
    let limit = filter.limit.clamp(1, MAX_PAGE);
    // One more than asked tells whether another page follows.
    filter.limit = limit + 1;
    let mut items = store.list(&filter).await?;
    let more = items.len() as i64 > limit;
    items.truncate(limit as usize);
    let next_before_id = if more { items.last().map(|r| r.id) } else { None };
    Ok(Page { items, next_before_id })
}

/// The requester (`richiedente_cf`: the token's, or the one the CLI names) withdraws an open request of theirs:
/// closed `annullata`. A request the actor may not see is not found; someone else's, or a closed one, is
/// refused (409 / exit 2).
pub async fn withdraw(
    store: &Store,
    actor: &Actor,
    key: &str,
    richiedente_cf: &str,
    now: Millis,
) -> Result<RequestView, AppError> {
    read(store, actor, key).await?;
    store.withdraw(key, richiedente_cf, now).await?;
    read(store, actor, key).await
}

/// The requester writes to the sede about an open request of theirs (the channel is bidirectional), with up to
/// `intake.allegati.max_files` files: kept in its history and e-mailed to the competent sede. `text` is free
/// text within `intake.limits.max_note_chars`.
pub async fn message_to_sede(
    store: &Store,
    intake_config: &IntakeConfig,
    actor: &Actor,
    key: &str,
    text: &str,
    files: &[Upload<'_>],
    now: Millis,
) -> Result<String, AppError> {
    let text = free_text("testo", text, intake_config.limits.max_note_chars)?;
    read(store, actor, key).await?;
    let files = attachments::accept(files, &intake_config.allegati)?;
    Ok(store.message_to_sede(key, text, &files, now).await?)
}
