//! The operators' routes of the API v1: the queue of the caller's sede (`GET /coda`), the presa in carico
//! (`POST`/`DELETE /richieste/{id}/presa-in-carico`), the close behind `If-Match` (`POST …/chiusura`), comments
//! to the requester (`POST …/commenti`), the requeue (`POST …/rimessa-in-coda`) and a new decision of the rule
//! (`POST …/nuova-decisione`). The use cases, and who may do what, are `app::operator`'s; these parse and
//! serialise.

use axum::Router;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::AppState;
use super::api::{ApiState, BASE, bad_query, no_store, not_found_by_id, opaque_id};
use super::auth::Authenticated;
use super::body::{Link, PageLinks, SelfLinks};
use super::problem::Problem;
use crate::app::operator::{self, Assegnata, ChangedFact, OperatorDecision, QueueQuery, Redecided};
use crate::app::{self, Actor};
use crate::clock::now_ms;
use crate::store::{Assignment, RequestView};

/// The largest body of an operator's request (a close with its reasons and note, a comment).
const BODY_LIMIT: usize = 64 * 1024;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/coda", get(queue))
        .route("/richieste/{id}/presa-in-carico", post(claim).delete(release))
        .route("/richieste/{id}/chiusura", post(close))
        .route("/richieste/{id}/commenti", post(comment))
        .route("/richieste/{id}/rimessa-in-coda", post(requeue))
        .route("/richieste/{id}/nuova-decisione", post(redecide))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
}

fn api(s: &AppState) -> Result<&ApiState, Problem> {
    s.api.as_deref().ok_or_else(|| Problem::new(StatusCode::NOT_FOUND, "the API is not configured"))
}

/// A JSON body, or a problem saying what was expected (413 past [`BODY_LIMIT`], 415 without JSON, 422 for a
/// body that does not fit, naming the field serde stopped at).
fn body<T>(body: Result<axum::Json<T>, JsonRejection>, expected: &str) -> Result<T, Problem> {
    body.map(|axum::Json(t)| t).map_err(|e| {
        let status = StatusCode::from_u16(e.status().as_u16()).unwrap_or(StatusCode::BAD_REQUEST);
        Problem::new(status, format!("expected {expected}: {}", e.body_text()))
    })
}

/// The queue's query string (no personal data: the sede is the token's).
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct CodaQuery {
    /// `mie` (held by the caller) or `nessuno` (held by nobody).
    #[param(max_length = 7, pattern = "^(mie|nessuno)$")]
    assegnata: Option<String>,
    /// The `next` link's cursor.
    #[param(max_length = 39, pattern = "^[0-9]{1,19}\\.[0-9]{1,19}$")]
    cursore: Option<String>,
    /// Requests per page, 1–200 (default 50).
    #[param(minimum = 1, maximum = 200)]
    limite: Option<i64>,
}

/// A request of the queue.
#[derive(Debug, Serialize, ToSchema)]
struct VoceCoda {
    /// The request's opaque id (digits), for `/richieste/{id}`.
    #[schema(max_length = 19, pattern = "^[0-9]{1,19}$")]
    id: String,
    #[schema(max_length = 64)]
    protocollo: String,
    #[schema(max_length = 1000)]
    task: String,
    #[schema(max_length = 4, pattern = "^[0-9]{4}$")]
    sede: String,
    /// `rinvio` (referred by the rule) or `errore` (parked after rule failures).
    #[schema(max_length = 16)]
    sospesa: String,
    /// For a referral: the reasons the rule gave.
    #[schema(value_type = Vec<Object>, min_items = 0, max_items = 1000)]
    motivazioni: Vec<serde_json::Value>,
    #[schema(max_length = 8000)]
    errore: Option<String>,
    #[schema(format = DateTime)]
    creata_il: String,
    /// Whole days since it was submitted.
    #[schema(minimum = 0)]
    giorni_aperta: i64,
    /// The facts a referral read that moved since (empty: it is fresh).
    #[schema(min_items = 0, max_items = 1000)]
    fatti_cambiati: Vec<ChangedFact>,
    /// The operator holding it (presa in carico), if anyone.
    #[schema(max_length = 64)]
    assegnata_a: Option<String>,
    #[schema(format = DateTime)]
    assegnata_il: Option<String>,
    _links: SelfLinks,
}

/// A page of the queue, oldest first.
#[derive(Debug, Serialize, ToSchema)]
struct Coda {
    #[schema(min_items = 0, max_items = 200)]
    items: Vec<VoceCoda>,
    _links: PageLinks,
}

/// A cursor of the queue: the instant and id of the last request of the page before.
fn parse_cursor(text: &str) -> Option<(i64, i64)> {
    let (at, id) = text.split_once('.')?;
    Some((at.parse().ok()?, id.parse().ok()?))
}

#[utoipa::path(
    get, path = "/coda", tag = "operatori", operation_id = "coda_sede", params(CodaQuery),
    responses(
        (status = 200, description = "A page of the requests waiting for an operator of the caller's sede, oldest first", body = Coda),
        (status = 400, description = "A parameter is not valid (the pointer names it: `?assegnata`)", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid bearer token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an operator of a sede", body = Problem, content_type = "application/problem+json"),
    )
)]
/// `GET /coda`: the requests waiting for an operator of the caller's sede, oldest first, a page at a time.
pub(super) async fn queue(
    State(s): State<AppState>,
    Authenticated(actor): Authenticated,
    query: Result<Query<CodaQuery>, QueryRejection>,
) -> Result<Response, Problem> {
    let Query(q) = query.map_err(|e| bad_query(e.body_text(), ""))?;
    let assegnata = match q.assegnata.as_deref() {
        None => None,
        Some("mie") => Some(Assegnata::Mie),
        Some("nessuno") => Some(Assegnata::Nessuno),
        Some(other) => {
            return Err(bad_query(format!("`{other}` is not a filter of the queue (mie, nessuno)"), "assegnata"));
        }
    };
    let after = match q.cursore.as_deref() {
        None => None,
        Some(c) => Some(parse_cursor(c).ok_or_else(|| bad_query("not a cursor of this list".into(), "cursore"))?),
    };
    let page = operator::queue(
        &s.store,
        &actor,
        QueueQuery { sede: None, assegnata, after, limit: q.limite.unwrap_or(50) },
        now_ms(),
    )
    .await?;
    let items = page
        .items
        .into_iter()
        .map(|i| VoceCoda {
            id: i.entry.id.to_string(),
            _links: SelfLinks::request(i.entry.id),
            protocollo: i.entry.protocollo,
            task: i.entry.task,
            sede: i.entry.sede,
            sospesa: i.entry.sospesa,
            motivazioni: i.entry.motivazioni,
            errore: i.entry.errore,
            creata_il: i.entry.creata_il,
            giorni_aperta: i.giorni_aperta,
            fatti_cambiati: i.fatti_cambiati,
            assegnata_a: i.entry.assegnata_a,
            assegnata_il: i.entry.assegnata_il,
        })
        .collect();
    let next = page.next_after.map(|(at, id)| {
        let mut href = format!("{BASE}/coda?cursore={at}.{id}");
        if let Some(a) = q.assegnata.as_deref() {
            href.push_str(&format!("&assegnata={a}"));
        }
        if let Some(l) = q.limite {
            href.push_str(&format!("&limite={l}"));
        }
        Link { href }
    });
    Ok(no_store(axum::Json(Coda { items, _links: PageLinks { next } }).into_response()))
}

#[utoipa::path(
    post, path = "/richieste/{id}/presa-in-carico", tag = "operatori", operation_id = "prendi_in_carico", params(("id" = String, Path, description = "The request's opaque id (digits, never a protocol number)", max_length = 19, pattern = "^[0-9]{1,19}$")),
    responses(
        (status = 200, description = "Held by the caller: who holds it, since when", body = Assignment),
        (status = 401, description = "No valid bearer token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an operator who may act (a read-only operator, another role)", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No request with that id that the caller may see", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Held by another operator (named), closed, or not waiting for an operator", body = Problem, content_type = "application/problem+json"),
    )
)]
/// `POST /richieste/{id}/presa-in-carico`: the caller takes the request in hand (409 naming who holds it when
/// another operator does); the answer says who holds it.
pub(super) async fn claim(
    State(s): State<AppState>,
    Authenticated(actor): Authenticated,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    let held = operator::claim(&s.store, &actor, opaque_id(&id)?, now_ms()).await.map_err(not_found_by_id)?;
    Ok(no_store(axum::Json(held).into_response()))
}

#[utoipa::path(
    delete, path = "/richieste/{id}/presa-in-carico", tag = "operatori", operation_id = "lascia_presa_in_carico", params(("id" = String, Path, description = "The request's opaque id (digits, never a protocol number)", max_length = 19, pattern = "^[0-9]{1,19}$")),
    responses(
        (status = 200, description = "Let go: held by nobody now", body = Assignment),
        (status = 401, description = "No valid bearer token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an operator who may act (a read-only operator, another role)", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No request with that id that the caller may see", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Not held by the caller (held by another operator, or by nobody)", body = Problem, content_type = "application/problem+json"),
    )
)]
/// `DELETE /richieste/{id}/presa-in-carico`: the holder lets the request go (anyone else: 409).
pub(super) async fn release(
    State(s): State<AppState>,
    Authenticated(actor): Authenticated,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    let held = operator::release(&s.store, &actor, opaque_id(&id)?, now_ms()).await.map_err(not_found_by_id)?;
    Ok(no_store(axum::Json(held).into_response()))
}

/// The operator's outcome of a close.
#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
enum EsitoChiusura {
    Accolta,
    NonAccolta,
}

/// The operator's decision.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct Chiusura {
    esito: EsitoChiusura,
    /// Reason codes of the task's catalogue (a non_accolta needs a reason, an accolta has none).
    #[serde(default)]
    #[schema(schema_with = reason_codes)]
    motivi: Vec<String>,
    /// Reasons in free text, each at most `intake.limits.max_note_chars` characters.
    #[serde(default)]
    #[schema(schema_with = free_text_reasons)]
    motivi_liberi: Vec<String>,
    /// A note kept in the history, at most `intake.limits.max_note_chars` characters.
    #[schema(max_length = 4000)]
    nota: Option<String>,
}

/// A list of at most [`operator::MAX_REASONS`] strings of at most `max_length` characters.
fn reasons(max_length: usize, description: &str) -> utoipa::openapi::schema::Array {
    use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, Type};
    ArrayBuilder::new()
        .items(ObjectBuilder::new().schema_type(Type::String).min_length(Some(1)).max_length(Some(max_length)))
        .min_items(Some(0))
        .max_items(Some(operator::MAX_REASONS))
        .description(Some(description))
        .build()
}

fn reason_codes() -> utoipa::openapi::schema::Array {
    reasons(1000, "Reason codes of the task's catalogue (a non_accolta needs a reason, an accolta has none)")
}

fn free_text_reasons() -> utoipa::openapi::schema::Array {
    reasons(4000, "Reasons in free text, each at most `intake.limits.max_note_chars` characters (4000 by default)")
}

/// The request as it is now, with its ETag (as `GET /richieste/{id}` answers it).
async fn current(s: &AppState, actor: &Actor, key: &str) -> Result<Response, Problem> {
    let view = app::read(&s.store, actor, key).await.map_err(not_found_by_id)?;
    let app::Tagged { body, etag } = app::tagged(&view)?;
    let mut response = ([(header::CONTENT_TYPE, "application/json")], body).into_response();
    if let Ok(v) = HeaderValue::from_str(&etag) {
        response.headers_mut().insert(header::ETAG, v);
    }
    Ok(no_store(response))
}

#[utoipa::path(
    post, path = "/richieste/{id}/chiusura", tag = "operatori", operation_id = "chiudi_richiesta",
    params(("id" = String, Path, description = "The request's opaque id (digits, never a protocol number)", max_length = 19, pattern = "^[0-9]{1,19}$"),
        ("If-Match" = String, Header, description = "The `ETag` of the request as the operator read it (`GET /richieste/{id}`)", max_length = 1000)),
    request_body(content = Chiusura, content_type = "application/json"),
    responses(
        (status = 200, description = "Closed: the request as it is now", body = RequestView, headers(("ETag", description = "Strong validator of this representation"))),
        (status = 400, description = "The body is not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid bearer token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an operator who may act (a read-only operator, another role)", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No request with that id that the caller may see", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Not waiting for an operator, held by another, or the facts the rule read have changed (decide it again or requeue it)", body = Problem, content_type = "application/problem+json"),
        (status = 412, description = "The request changed since it was read (`If-Match` is not its current `ETag`)", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Larger than 64 KiB", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not `application/json`", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Not the expected fields, or reasons that do not fit the outcome or the task's catalogue (the pointer names the field)", body = Problem, content_type = "application/problem+json"),
        (status = 428, description = "No `If-Match`", body = Problem, content_type = "application/problem+json"),
    )
)]
/// `POST /richieste/{id}/chiusura` with `If-Match: <the request's ETag>`: the operator closes a request
/// waiting for one (an accolta applies the effects the rule proposed). 428 without `If-Match`, 412 when the
/// request changed since it was read; the answer is the closed request.
pub(super) async fn close(
    State(s): State<AppState>,
    Authenticated(actor): Authenticated,
    Path(id): Path<String>,
    headers: HeaderMap,
    decision: Result<axum::Json<Chiusura>, JsonRejection>,
) -> Result<Response, Problem> {
    let api = api(&s)?;
    let key = opaque_id(&id)?;
    let c = body(
        decision,
        "{\"esito\": \"accolta\" | \"non_accolta\", \"motivi\": […], \"motivi_liberi\": […], \"nota\": …}",
    )?;
    let Some(if_match) = headers.get(header::IF_MATCH) else {
        return Err(Problem::new(
            StatusCode::PRECONDITION_REQUIRED,
            "send `If-Match` with the ETag of the request as you read it (GET /richieste/{id})",
        ));
    };
    let if_match = if_match
        .to_str()
        .map_err(|_| Problem::new(StatusCode::PRECONDITION_FAILED, "`If-Match` is not an entity tag"))?;
    let decision = OperatorDecision {
        accolta: matches!(c.esito, EsitoChiusura::Accolta),
        codes: c.motivi,
        free_text: c.motivi_liberi,
        nota: c.nota,
        if_match: Some(if_match.to_string()),
    };
    let rules = api.rules.load_full();
    let max = api.intake.limits.max_note_chars;
    operator::close(&s.store, &rules, &actor, key, decision, max, now_ms()).await.map_err(not_found_by_id)?;
    current(&s, &actor, key).await
}

/// An operator's comment.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct Commento {
    /// Free text, at most `intake.limits.max_note_chars` characters (4000 by default).
    #[schema(min_length = 1, max_length = 4000)]
    testo: String,
}

/// A comment, as recorded in the request's history.
#[derive(Debug, Serialize, ToSchema)]
struct Registrato {
    #[schema(max_length = 64)]
    protocollo: String,
    /// The kind of history entry: `commento_operatore`.
    #[schema(value_type = String, max_length = 64)]
    tipo: &'static str,
}

#[utoipa::path(
    post, path = "/richieste/{id}/commenti", tag = "operatori", operation_id = "commenta_richiesta", params(("id" = String, Path, description = "The request's opaque id (digits, never a protocol number)", max_length = 19, pattern = "^[0-9]{1,19}$")),
    request_body(content = Commento, content_type = "application/json"),
    responses(
        (status = 201, description = "Recorded in the history and notified to the requester", body = Registrato),
        (status = 400, description = "The body is not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid bearer token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an operator who may act (a read-only operator, another role)", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No request with that id that the caller may see", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Larger than 64 KiB", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not `application/json`", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Not the expected fields, or the text is empty, too long or has control characters", body = Problem, content_type = "application/problem+json"),
    )
)]
/// `POST /richieste/{id}/commenti` `{"testo": …}`: a comment in the request's history, notified to the
/// requester; 201.
pub(super) async fn comment(
    State(s): State<AppState>,
    Authenticated(actor): Authenticated,
    Path(id): Path<String>,
    text: Result<axum::Json<Commento>, JsonRejection>,
) -> Result<Response, Problem> {
    let api = api(&s)?;
    let key = opaque_id(&id)?;
    let c = body(text, "{\"testo\": \"…\"}")?;
    let max = api.intake.limits.max_note_chars;
    let protocollo =
        operator::comment(&s.store, &actor, key, &c.testo, max, now_ms()).await.map_err(not_found_by_id)?;
    let answer = Registrato { protocollo, tipo: crate::domain::event::EventKind::CommentoOperatore.as_str() };
    Ok(no_store((StatusCode::CREATED, axum::Json(answer)).into_response()))
}

#[utoipa::path(
    post, path = "/richieste/{id}/rimessa-in-coda", tag = "operatori", operation_id = "rimetti_in_coda", params(("id" = String, Path, description = "The request's opaque id (digits, never a protocol number)", max_length = 19, pattern = "^[0-9]{1,19}$")),
    responses(
        (status = 200, description = "Back with the workers: the request as it is now", body = RequestView, headers(("ETag", description = "Strong validator of this representation"))),
        (status = 401, description = "No valid bearer token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an operator who may act (a read-only operator, another role)", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No request with that id that the caller may see", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Closed, already with the workers, or held by another operator", body = Problem, content_type = "application/problem+json"),
    )
)]
/// `POST /richieste/{id}/rimessa-in-coda`: the request goes back to the workers; the answer is the request.
pub(super) async fn requeue(
    State(s): State<AppState>,
    Authenticated(actor): Authenticated,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    let key = opaque_id(&id)?;
    operator::requeue(&s.store, &actor, key, now_ms()).await.map_err(not_found_by_id)?;
    current(&s, &actor, key).await
}

#[utoipa::path(
    post, path = "/richieste/{id}/nuova-decisione", tag = "operatori", operation_id = "nuova_decisione", params(("id" = String, Path, description = "The request's opaque id (digits, never a protocol number)", max_length = 19, pattern = "^[0-9]{1,19}$")),
    responses(
        (status = 200, description = "Decided again: closed (`accolta`, `non_accolta`) or referred again with the facts read now (`rinvio`)", body = Redecided),
        (status = 401, description = "No valid bearer token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an operator who may act (a read-only operator, another role)", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No request with that id that the caller may see", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Not waiting for an operator, held by another, no rule loaded for its task, or effects that cannot be applied", body = Problem, content_type = "application/problem+json"),
        (status = 500, description = "The rule failed deciding it again (it stays with the operator), or its facts kept changing", body = Problem, content_type = "application/problem+json"),
    )
)]
/// `POST /richieste/{id}/nuova-decisione`: the rule decides the request again with the current facts.
pub(super) async fn redecide(
    State(s): State<AppState>,
    Authenticated(actor): Authenticated,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    let api = api(&s)?;
    let key = opaque_id(&id)?;
    let done =
        operator::redecide(&s.store, &actor, key, |claimed| api.pipeline.evaluate_one(claimed, now_ms()), now_ms)
            .await
            .map_err(not_found_by_id)?;
    Ok(no_store(axum::Json(done).into_response()))
}
