//! The use cases shared by the CLI and the HTTP API: who acts ([`Actor`]), what they may do, and one error
//! type ([`AppError`]) that both edges map — to exit codes and to HTTP statuses. Neither edge holds domain
//! logic: the CLI prints what these return, the HTTP handlers serialise it.

use crate::config::IntakeConfig;
use crate::domain::time::Millis;
use crate::intake::{self, IntakeError};
use crate::rules::RuleSet;
use crate::store::{NewRequest, RequestView, Store, StoreError, Submitted};

/// Who is acting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Actor {
    /// The machine's own administrator, on the command line: may do anything.
    Cli,
    /// The portal acting for an authenticated requester (codice fiscale and profile from the token): submits
    /// in their own name and sees the requests they submitted.
    Richiedente { cf: String, profilo: String },
}

impl Actor {
    /// Whether the actor may see a request: the CLI every one, a requester those they submitted.
    fn may_see(&self, view: &RequestView) -> bool {
        match self {
            Actor::Cli => true,
            Actor::Richiedente { cf, .. } => view.richiesta.get("richiedente_cf").and_then(|v| v.as_str()) == Some(cf),
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
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl AppError {
    /// The CLI's exit code: 2 refused input, 3 not found, 1 a failure of the machinery.
    pub fn exit_code(&self) -> u8 {
        match self {
            AppError::Invalid(_) | AppError::Forbidden(_) => 2,
            AppError::NotFound(_) => 3,
            AppError::Store(StoreError::NotFound(_)) => 3,
            AppError::Store(
                StoreError::Refused(_)
                | StoreError::Reference { .. }
                | StoreError::SourceNotCurrent(_)
                | StoreError::TargetNotEmpty(_),
            ) => 2,
            AppError::Store(_) => 1,
        }
    }

    /// The HTTP status: 422 refused input, 403, 404, 409 for a state that refuses the operation, 503 when the
    /// database cannot be reached, 500 otherwise.
    pub fn http_status(&self) -> u16 {
        match self {
            AppError::Invalid(_) => 422,
            AppError::Forbidden(_) => 403,
            AppError::NotFound(_) | AppError::Store(StoreError::NotFound(_)) => 404,
            AppError::Store(StoreError::Refused(_)) => 409,
            AppError::Store(StoreError::Reference { .. }) => 422,
            AppError::Store(StoreError::Db(_) | StoreError::Missing(_) | StoreError::NotCurrent(_)) => 503,
            AppError::Store(_) => 500,
        }
    }
}

/// Submits a document (one request or a list; JSON or YAML) in the actor's name, validated against the active
/// rules: all of it is queued, or nothing. Returns each request as stored, with what was asked.
pub async fn submit(
    store: &Store,
    rules: &RuleSet,
    intake_config: &IntakeConfig,
    actor: &Actor,
    text: &str,
    source_name: &str,
    now: Millis,
) -> Result<Vec<(Submitted, NewRequest)>, AppError> {
    let items = intake::parse_submission(text, source_name, &intake_config.limits).map_err(AppError::Invalid)?;
    let requests = intake::validate_all(items, rules, source_name).map_err(AppError::Invalid)?;
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
    let stored = store.submit(&requests, &intake_config.sede_predefinita, now).await?;
    Ok(stored.into_iter().zip(requests).collect())
}

/// A request by id or protocol number, if the actor may see it.
pub async fn read(store: &Store, actor: &Actor, key: &str) -> Result<RequestView, AppError> {
    match store.request(key).await? {
        Some(view) if actor.may_see(&view) => Ok(view),
        _ => Err(AppError::NotFound(format!("no request with id or protocol number `{key}`"))),
    }
}
