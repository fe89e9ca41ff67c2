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

use super::AppState;
use super::api::{ApiState, BASE, bad_query, no_store, not_found_by_id, opaque_id};
use super::auth::Authenticated;
use super::problem::Problem;
use crate::app::operator::{self, Assegnata, ChangedFact, OperatorDecision, QueueQuery};
use crate::app::{self, Actor};
use crate::clock::now_ms;

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

#[derive(Debug, Serialize)]
struct Href {
    href: String,
}

#[derive(Debug, Serialize)]
struct SelfLink {
    #[serde(rename = "self")]
    this: Href,
}

#[derive(Debug, Default, Serialize)]
struct NextLink {
    #[serde(skip_serializing_if = "Option::is_none")]
    next: Option<Href>,
}

/// The queue's query string (no personal data: the sede is the token's).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CodaQuery {
    /// `mie` (held by the caller) or `nessuno` (held by nobody).
    assegnata: Option<String>,
    /// The `next` link's cursor.
    cursore: Option<String>,
    /// Requests per page, 1–200 (default 50).
    limite: Option<i64>,
}

/// A request of the queue.
#[derive(Debug, Serialize)]
struct VoceCoda {
    id: String,
    protocollo: String,
    task: String,
    sede: String,
    /// `rinvio` (referred by the rule) or `errore` (parked after rule failures).
    sospesa: String,
    motivazioni: Vec<serde_json::Value>,
    errore: Option<String>,
    creata_il: String,
    giorni_aperta: i64,
    /// The facts a referral read that moved since (empty: it is fresh).
    fatti_cambiati: Vec<ChangedFact>,
    assegnata_a: Option<String>,
    assegnata_il: Option<String>,
    _links: SelfLink,
}

#[derive(Debug, Serialize)]
struct Coda {
    items: Vec<VoceCoda>,
    _links: NextLink,
}

/// A cursor of the queue: the instant and id of the last request of the page before.
fn parse_cursor(text: &str) -> Option<(i64, i64)> {
    let (at, id) = text.split_once('.')?;
    Some((at.parse().ok()?, id.parse().ok()?))
}

/// `GET /coda`: the requests waiting for an operator of the caller's sede, oldest first, a page at a time.
async fn queue(
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
            _links: SelfLink { this: Href { href: format!("{BASE}/richieste/{}", i.entry.id) } },
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
        Href { href }
    });
    Ok(no_store(axum::Json(Coda { items, _links: NextLink { next } }).into_response()))
}

/// `POST /richieste/{id}/presa-in-carico`: the caller takes the request in hand (409 naming who holds it when
/// another operator does); the answer says who holds it.
async fn claim(
    State(s): State<AppState>,
    Authenticated(actor): Authenticated,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    let held = operator::claim(&s.store, &actor, opaque_id(&id)?, now_ms()).await.map_err(not_found_by_id)?;
    Ok(no_store(axum::Json(held).into_response()))
}

/// `DELETE /richieste/{id}/presa-in-carico`: the holder lets the request go (anyone else: 409).
async fn release(
    State(s): State<AppState>,
    Authenticated(actor): Authenticated,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    let held = operator::release(&s.store, &actor, opaque_id(&id)?, now_ms()).await.map_err(not_found_by_id)?;
    Ok(no_store(axum::Json(held).into_response()))
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Esito {
    Accolta,
    NonAccolta,
}

/// The operator's decision.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Chiusura {
    esito: Esito,
    /// Reason codes of the task's catalogue (a non_accolta needs a reason).
    #[serde(default)]
    motivi: Vec<String>,
    /// Reasons in free text.
    #[serde(default)]
    motivi_liberi: Vec<String>,
    /// A note kept in the history.
    nota: Option<String>,
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

/// `POST /richieste/{id}/chiusura` with `If-Match: <the request's ETag>`: the operator closes a request
/// waiting for one (an accolta applies the effects the rule proposed). 428 without `If-Match`, 412 when the
/// request changed since it was read; the answer is the closed request.
async fn close(
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
        accolta: matches!(c.esito, Esito::Accolta),
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
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Commento {
    testo: String,
}

#[derive(Debug, Serialize)]
struct Registrato {
    protocollo: String,
    tipo: &'static str,
}

/// `POST /richieste/{id}/commenti` `{"testo": …}`: a comment in the request's history, notified to the
/// requester; 201.
async fn comment(
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

/// `POST /richieste/{id}/rimessa-in-coda`: the request goes back to the workers; the answer is the request.
async fn requeue(
    State(s): State<AppState>,
    Authenticated(actor): Authenticated,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    let key = opaque_id(&id)?;
    operator::requeue(&s.store, &actor, key, now_ms()).await.map_err(not_found_by_id)?;
    current(&s, &actor, key).await
}

/// `POST /richieste/{id}/nuova-decisione`: the rule decides the request again with the current facts.
async fn redecide(
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
