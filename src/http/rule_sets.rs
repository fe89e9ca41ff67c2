//! `POST /regole/versioni` (promote a candidate rule set sent as its files), `GET /regole/versioni`,
//! `GET /regole/versioni/{n}`, `POST /regole/versioni/{n}/approvazione`: rule governance for the people who
//! run the service (role `operazioni`); the use cases are `app::rule_sets`'. The author and the approver are
//! the token's subject.

use std::collections::BTreeMap;

use axum::Router;
use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::AppState;
use super::api::{BASE, no_store};
use super::auth::Authenticated;
use super::problem::Problem;
use crate::app::rule_sets as uc;
use crate::app::{Actor, AppError};
use crate::clock::now_ms;
use crate::domain::time::rfc3339;
use crate::store::RuleSetRecord;

/// A candidate's files are bounded by `rules::sources` (500 files, 8 MiB); JSON escaping adds a little.
const BODY_LIMIT: usize = 10 * 1024 * 1024;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/regole/versioni", get(list).post(promote))
        .route("/regole/versioni/{n}", get(read))
        .route("/regole/versioni/{n}/approvazione", post(approve))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
}

/// A candidate rule set: every file of a rules directory by relative path, and why.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct PromoteBody {
    /// Why it is promoted: recorded with it (1–2,000 characters).
    #[schema(min_length = 1, max_length = 2000)]
    motivo: String,
    /// Relative path (`TASK/task.yaml`, `TASK/rule.rhai`, `TASK/cases.yaml`, `lib/NAME.rhai`, `world.yaml`) →
    /// the file's text. At most 500 files, 8 MiB in all.
    #[schema(schema_with = rule_files)]
    file: BTreeMap<String, String>,
}

/// A rule set without its files.
#[derive(Debug, Serialize, ToSchema)]
struct Versione {
    /// The rule set's number.
    #[schema(minimum = 1)]
    numero: i64,
    /// `awaiting_approval`, `active`, `retired`, `refused` or `superseded`.
    #[schema(max_length = 17, pattern = "^(awaiting_approval|active|retired|refused|superseded)$")]
    stato: String,
    /// SHA-256 of its files (64 hex digits).
    #[schema(max_length = 64, pattern = "^[0-9a-f]{64}$")]
    digest: String,
    /// Task type → the version (16 hex digits) decisions record.
    #[schema(schema_with = task_versions)]
    task: BTreeMap<String, String>,
    #[schema(max_length = 100)]
    autore: String,
    #[schema(max_length = 2000)]
    motivo: String,
    #[schema(format = DateTime)]
    promossa_il: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(max_length = 100)]
    approvata_da: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(format = DateTime)]
    attivata_il: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(format = DateTime)]
    ritirata_il: Option<String>,
}

impl From<&RuleSetRecord> for Versione {
    fn from(s: &RuleSetRecord) -> Versione {
        Versione {
            numero: s.id,
            stato: s.state.as_str().to_string(),
            digest: s.digest.clone(),
            task: s.tasks.clone(),
            autore: s.author.clone(),
            motivo: s.reason.clone(),
            promossa_il: rfc3339(s.submitted_at),
            approvata_da: s.approved_by.clone(),
            attivata_il: s.activated_at.map(rfc3339),
            ritirata_il: s.retired_at.map(rfc3339),
        }
    }
}

/// A rule set with what a reviewer reads: the gates' results and the diff.
#[derive(Debug, Serialize, ToSchema)]
struct Dettaglio {
    #[serde(flatten)]
    versione: Versione,
    /// Every gate (`compile`, `lint`, `cases`, `coverage`, `replay`) with `passed` and its `details`, the
    /// replay's summary with the first flips, and why an approval is needed.
    #[schema(value_type = Object)]
    esiti_verifiche: serde_json::Value,
    /// Unified diff against the set active when it was vetted.
    #[schema(max_length = 16777216)]
    diff: String,
}

/// What a promotion did.
#[derive(Debug, Serialize, ToSchema)]
struct Promozione {
    #[schema(minimum = 1)]
    numero: i64,
    #[schema(max_length = 17, pattern = "^(awaiting_approval|active|refused)$")]
    stato: String,
    /// The candidate is the active set, file for file: nothing was recorded (`numero` is the active one).
    invariata: bool,
    #[schema(value_type = Object)]
    esiti_verifiche: serde_json::Value,
    #[schema(max_length = 16777216)]
    diff: String,
}

/// The most recent rule sets.
#[derive(Debug, Serialize, ToSchema)]
struct Versioni {
    #[schema(min_items = 0, max_items = 100)]
    items: Vec<Versione>,
}

/// A map of strings with bounded keys and values (AgID: every string declares its maximum length).
fn string_map(key_max: usize, value_max: usize, description: &str) -> utoipa::openapi::schema::Object {
    use utoipa::openapi::schema::{ObjectBuilder, Type};
    let string = |max: usize| ObjectBuilder::new().schema_type(Type::String).min_length(Some(1)).max_length(Some(max));
    ObjectBuilder::new()
        .schema_type(Type::Object)
        .property_names(Some(string(key_max)))
        .additional_properties(Some(string(value_max)))
        .max_properties(Some(crate::rules::MAX_RULE_FILES))
        .description(Some(description))
        .build()
}

fn rule_files() -> utoipa::openapi::schema::Object {
    string_map(255, crate::rules::MAX_RULE_BYTES, "Relative path → the file's text")
}

fn task_versions() -> utoipa::openapi::schema::Object {
    string_map(1000, 16, "Task type → the version (16 hex digits) its decisions record")
}

fn not_found(e: AppError) -> Problem {
    match e {
        AppError::NotFound(_) | AppError::Store(crate::store::StoreError::NotFound(_)) => {
            Problem::new(StatusCode::NOT_FOUND, "no rule set with that number")
        }
        other => other.into(),
    }
}

fn number(n: &str) -> Result<i64, Problem> {
    n.parse::<i64>()
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| Problem::new(StatusCode::NOT_FOUND, "no rule set with that number"))
}

/// The token's subject: who promotes or approves.
fn person(actor: &Actor) -> Result<&str, Problem> {
    match actor {
        Actor::Operazioni { id } => Ok(id),
        _ => Err(Problem::new(StatusCode::FORBIDDEN, "only the people who run the service govern the rules")),
    }
}

#[utoipa::path(
    post, path = "/regole/versioni", tag = "regole", operation_id = "promuovi_regole",
    request_body(content = PromoteBody, content_type = "application/json"),
    responses(
        (status = 201, description = "Vetted and recorded: `active`, `awaiting_approval`, or `refused` with each gate's findings", body = Promozione),
        (status = 200, description = "Identical to the active set: nothing recorded", body = Promozione),
        (status = 401, description = "No valid bearer token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not the role `operazioni`", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The active set changed while the candidate was vetted, a file path is not a rules directory's, or `motivo` is empty or too long", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Larger than 10 MiB", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not `application/json`", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Not the expected JSON", body = Problem, content_type = "application/problem+json"),
    )
)]
/// `POST /regole/versioni` `{"motivo": …, "file": {path: text}}`: every gate, then the record.
pub(super) async fn promote(
    State(s): State<AppState>,
    Authenticated(actor): Authenticated,
    body: Result<axum::Json<PromoteBody>, JsonRejection>,
) -> Result<Response, Problem> {
    let Some(api) = &s.api else { return Err(Problem::new(StatusCode::NOT_FOUND, "the API is not configured")) };
    let author = person(&actor)?.to_string();
    let axum::Json(b) = body.map_err(|e| {
        let status = StatusCode::from_u16(e.status().as_u16()).unwrap_or(StatusCode::BAD_REQUEST);
        Problem::new(
            status,
            format!("expected {{\"motivo\": \"…\", \"file\": {{\"TASK/rule.rhai\": \"…\"}}}}: {}", e.body_text()),
        )
    })?;
    let candidate = uc::Candidate { files: b.file, author: &author, reason: &b.motivo };
    let promoted = uc::promote(
        &s.store,
        &actor,
        api.pipeline.evaluator.clone(),
        candidate,
        &api.promotion,
        &api.intake.sede_predefinita,
        now_ms(),
    )
    .await?;
    let status = if promoted.unchanged { StatusCode::OK } else { StatusCode::CREATED };
    let answer = Promozione {
        numero: promoted.id,
        stato: promoted.state.as_str().to_string(),
        invariata: promoted.unchanged,
        esiti_verifiche: serde_json::to_value(&promoted.gates).map_err(AppError::from)?,
        diff: promoted.diff,
    };
    let mut response = (status, axum::Json(answer)).into_response();
    if let Ok(location) = format!("{BASE}/regole/versioni/{}", promoted.id).parse() {
        response.headers_mut().insert(axum::http::header::LOCATION, location);
    }
    Ok(no_store(response))
}

#[utoipa::path(
    get, path = "/regole/versioni", tag = "regole", operation_id = "lista_versioni_regole",
    responses(
        (status = 200, description = "The 100 most recent rule sets, newest first", body = Versioni),
        (status = 401, description = "No valid bearer token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not the role `operazioni`", body = Problem, content_type = "application/problem+json"),
    )
)]
/// `GET /regole/versioni`.
pub(super) async fn list(State(s): State<AppState>, Authenticated(actor): Authenticated) -> Result<Response, Problem> {
    let sets = uc::rule_sets(&s.store, &actor, 100).await?;
    let items = sets.iter().map(Versione::from).collect();
    Ok(no_store(axum::Json(Versioni { items }).into_response()))
}

#[utoipa::path(
    get, path = "/regole/versioni/{n}", tag = "regole", operation_id = "leggi_versione_regole",
    params(("n" = i64, Path, description = "The rule set's number", minimum = 1)),
    responses(
        (status = 200, description = "The rule set, its gates' results and its diff", body = Dettaglio),
        (status = 401, description = "No valid bearer token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not the role `operazioni`", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No rule set with that number", body = Problem, content_type = "application/problem+json"),
    )
)]
/// `GET /regole/versioni/{n}`.
pub(super) async fn read(
    State(s): State<AppState>,
    Authenticated(actor): Authenticated,
    Path(n): Path<String>,
) -> Result<Response, Problem> {
    let set = uc::rule_set(&s.store, &actor, number(&n)?).await.map_err(not_found)?;
    let answer = Dettaglio { versione: Versione::from(&set), esiti_verifiche: set.results.clone(), diff: set.diff };
    Ok(no_store(axum::Json(answer).into_response()))
}

#[utoipa::path(
    post, path = "/regole/versioni/{n}/approvazione", tag = "regole", operation_id = "approva_versione_regole",
    params(("n" = i64, Path, description = "The rule set's number", minimum = 1)),
    responses(
        (status = 200, description = "Approved and active: every instance switches to it", body = Versione),
        (status = 401, description = "No valid bearer token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not the role `operazioni`", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No rule set with that number", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Not awaiting approval, promoted by the caller, or the active set changed since it was vetted", body = Problem, content_type = "application/problem+json"),
    )
)]
/// `POST /regole/versioni/{n}/approvazione`: the caller (not the author) activates it.
pub(super) async fn approve(
    State(s): State<AppState>,
    Authenticated(actor): Authenticated,
    Path(n): Path<String>,
) -> Result<Response, Problem> {
    let by = person(&actor)?.to_string();
    let set = uc::approve(&s.store, &actor, number(&n)?, &by, now_ms()).await.map_err(not_found)?;
    Ok(no_store(axum::Json(Versione::from(&set)).into_response()))
}
