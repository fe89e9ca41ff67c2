//! The API v1 (`/rest/smart-task/v1`, AgID ModI conventions: kebab-case paths, snake_case JSON, lists wrapped
//! in `items`, RFC 3339 times with their offset, problem+json errors, no personal data in paths or query
//! strings, `Cache-Control: no-store` on everything personal). Handlers parse and serialise; the use cases
//! are `app`'s, shared with the CLI.

use std::sync::Arc;

use arc_swap::ArcSwap;
use axum::Router;
use axum::body::{Body, to_bytes};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use utoipa::IntoParams;

use super::AppState;
use super::attachments::{Parts, multipart_boundary, read_parts};
use super::auth::{Authenticated, Verifier};
use super::body::{
    Link, ListaRichieste, Messaggio, MessaggioInviato, PageLinks, RichiestaPresentata, RichiestePresentate,
    RigaRichiesta, SelfLinks, TipoMessaggio,
};
use super::problem::{FieldProblem, Problem};
use crate::app;
use crate::clock::now_ms;
use crate::config::IntakeConfig;
use crate::domain::request::Stato;
use crate::rules::RuleSet;
use crate::store::{ListFilter, RequestView};

/// The base path of version 1.
pub const BASE: &str = "/rest/smart-task/v1";

/// What the API's handlers need beyond the store.
pub struct ApiState {
    pub verifier: Verifier,
    /// The active rule set (the workers' own): intake validates against it.
    pub rules: Arc<ArcSwap<RuleSet>>,
    pub intake: IntakeConfig,
    pub limits: Arc<super::limits::Limits>,
    /// The workers' pipeline: an operator's `nuova-decisione` evaluates with it.
    pub pipeline: Arc<crate::worker::Pipeline>,
    /// Turns true when the daemon stops: open event streams end.
    pub stop: tokio::sync::watch::Receiver<bool>,
    /// Webhook settings (the URLs subscriptions accept).
    pub webhooks: crate::config::WebhooksConfig,
    /// The gates of a promotion through `POST /regole/versioni`.
    pub promotion: crate::config::PromotionConfig,
    /// The sedi's Agenda Appuntamenti (`GET /agenda/{sede}/disponibilita`).
    pub agenda: crate::config::AgendaConfig,
}

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/richieste", post(submit).get(list))
        .route("/richieste/{id}", get(read))
        .route("/richieste/{id}/ritiro", post(withdraw))
        .route("/richieste/{id}/messaggi", post(message))
        .route("/richieste/{id}/allegati/{n}", get(super::attachments::download))
        .route("/posizioni/{matricola}/riepilogo", get(riepilogo))
        .merge(super::feeds::routes())
        .merge(super::operator::routes())
        .merge(super::rule_sets::routes())
        .merge(super::questionnaire::routes())
        .merge(super::agenda::routes())
        .route("/openapi.json", get(super::openapi::serve))
}

pub(super) fn no_store(mut response: Response) -> Response {
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

#[utoipa::path(
    post, path = "/richieste", tag = "richieste", operation_id = "presenta_richieste",
    request_body(content(
        (super::openapi::Submission = "application/json"),
        (super::openapi::RichiestaConAllegati = "multipart/form-data"),
    ), description = "One request (an object) or several (an array, at most `intake.limits.max_requests`); one request with its files as `multipart/form-data`"),
    responses(
        (status = 201, description = "Stored, queued for the rules", body = RichiestePresentate,
            headers(("Location", description = "The request's resource, when one was sent"))),
        (status = 200, description = "Every request repeats an earlier `chiave_idempotenza`: the stored ones", body = RichiestePresentate),
        (status = 400, description = "The body is not UTF-8", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid bearer token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not a requester, or requests in someone else's name", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Larger than `intake.limits.max_document_bytes` (with files: and `intake.allegati`)", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Neither `application/json` nor `multipart/form-data`", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Refused: every problem with a pointer to its field; nothing was queued", body = Problem, content_type = "application/problem+json"),
    )
)]
/// `POST /richieste`: one request (an object) or several (an array), JSON; all queued or none. 201 with the
/// stored requests (and `Location` for one); 200 when every request repeats an earlier `chiave_idempotenza`.
pub(super) async fn submit(
    State(s): State<AppState>,
    Authenticated(actor): Authenticated,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Problem> {
    let Some(api) = &s.api else { return Err(Problem::new(StatusCode::NOT_FOUND, "the API is not configured")) };
    let (text, parts) = match multipart_boundary(&headers) {
        Some(boundary) => {
            let parts =
                read_parts(body, boundary, "richiesta", api.intake.limits.max_document_bytes, &api.intake.allegati)
                    .await?;
            (parts.text.clone(), Some(parts))
        }
        None => (json_text(&headers, body, api.intake.limits.max_document_bytes).await?, None),
    };
    let files = parts.as_ref().map(Parts::uploads).unwrap_or_default();
    let list = text.trim_start().starts_with('[');
    let rules = api.rules.load_full();
    let submission = app::Submission { text: &text, source_name: "body", files: &files };
    let stored = app::submit(&s.store, &rules, &api.intake, &actor, &submission, now_ms())
        .await
        .map_err(|e| Problem::from_app(e, list))?;
    let items = stored
        .iter()
        .map(|(s, r)| RichiestaPresentata {
            id: s.id.to_string(),
            protocollo: s.protocollo.clone(),
            task: r.envelope.task.clone(),
            gia_presentata: s.duplicate,
            _links: SelfLinks::request(s.id),
        })
        .collect();
    let status = if stored.iter().all(|(s, _)| s.duplicate) { StatusCode::OK } else { StatusCode::CREATED };
    let mut response = (status, axum::Json(RichiestePresentate { items })).into_response();
    if let [(one, _)] = stored.as_slice()
        && let Ok(location) = HeaderValue::from_str(&format!("{BASE}/richieste/{}", one.id))
    {
        response.headers_mut().insert(header::LOCATION, location);
    }
    Ok(no_store(response))
}

#[utoipa::path(
    get, path = "/richieste/{id}", tag = "richieste", operation_id = "leggi_richiesta", params(("id" = String, Path, description = "The request's opaque id (digits, never a protocol number)", max_length = 19, pattern = "^[0-9]{1,19}$")),
    responses(
        (status = 200, description = "The request", body = RequestView, headers(("ETag", description = "Strong validator of this representation"))),
        (status = 304, description = "Unchanged since the `If-None-Match` given", headers(("ETag", description = "Strong validator of this representation"))),
        (status = 401, description = "No valid bearer token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No request with that id that the caller may see", body = Problem, content_type = "application/problem+json"),
    )
)]
/// `GET /richieste/{id}`: a request the caller may see, with its decision and history, and a strong `ETag`
/// (`If-None-Match` answers 304). Another requester's request is 404, like one that does not exist.
pub(super) async fn read(
    State(s): State<AppState>,
    Authenticated(actor): Authenticated,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    let view = app::read(&s.store, &actor, opaque_id(&id)?).await.map_err(not_found_by_id)?;
    let app::Tagged { body, etag } = app::tagged(&view)?;
    if headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag))
    {
        let mut response = StatusCode::NOT_MODIFIED.into_response();
        if let Ok(v) = HeaderValue::from_str(&etag) {
            response.headers_mut().insert(header::ETAG, v);
        }
        return Ok(no_store(response));
    }
    let mut response = ([(header::CONTENT_TYPE, "application/json")], body).into_response();
    if let Ok(v) = HeaderValue::from_str(&etag) {
        response.headers_mut().insert(header::ETAG, v);
    }
    Ok(no_store(response))
}

/// The filters of the Lista Richieste (query string: no personal data — who is asking comes from the token).
#[derive(Debug, Default, serde::Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct ListQuery {
    /// Task type.
    #[param(max_length = 1000)]
    task: Option<String>,
    #[param(value_type = Option<Stato>)]
    stato: Option<String>,
    /// accolta, non_accolta or annullata.
    #[param(max_length = 16, pattern = "^(accolta|non_accolta|annullata)$")]
    esito: Option<String>,
    /// The position (10 digits).
    #[param(max_length = 10, pattern = "^[0-9]{10}$")]
    matricola: Option<String>,
    /// Submitted from this day (YYYY-MM-DD, in the service's time zone) …
    #[param(format = Date)]
    creata_dal: Option<String>,
    /// … to this day, included.
    #[param(format = Date)]
    creata_al: Option<String>,
    /// Last changed from this day …
    #[param(format = Date)]
    aggiornata_dal: Option<String>,
    /// … to this day, included.
    #[param(format = Date)]
    aggiornata_al: Option<String>,
    /// The `next` link's cursor.
    #[param(max_length = 19, pattern = "^[0-9]{1,19}$")]
    cursore: Option<String>,
    /// Requests per page, 1–200 (default 50).
    #[param(minimum = 1, maximum = 200)]
    limite: Option<i64>,
}

impl ListQuery {
    /// The filters given, by name, in a fixed order (the `next` link repeats them).
    fn given(&self) -> Vec<(&'static str, &String)> {
        [
            ("task", &self.task),
            ("stato", &self.stato),
            ("esito", &self.esito),
            ("matricola", &self.matricola),
            ("creata_dal", &self.creata_dal),
            ("creata_al", &self.creata_al),
            ("aggiornata_dal", &self.aggiornata_dal),
            ("aggiornata_al", &self.aggiornata_al),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.as_ref().map(|v| (k, v)))
        .collect()
    }
}

/// A refused query parameter, as a problem whose pointer names it (`?stato`).
pub(super) fn bad_query(detail: String, parameter: &str) -> Problem {
    let mut p = Problem::new(StatusCode::BAD_REQUEST, detail.clone());
    p.errors.push(FieldProblem { pointer: format!("?{parameter}"), detail });
    p
}

/// A day filter as `[from, to)` instants: `dal` from its first instant, `al` up to the next day's.
fn day_range(dal: Option<&String>, al: Option<&String>, name: &str) -> Result<(Option<i64>, Option<i64>), Problem> {
    let not_a_date =
        |d: &str, end: &str| bad_query(format!("`{d}` is not a date (YYYY-MM-DD)"), &format!("{name}_{end}"));
    let from = match dal {
        Some(d) => Some(crate::domain::time::day_start(d).ok_or_else(|| not_a_date(d, "dal"))?),
        None => None,
    };
    let to = match al {
        Some(d) => {
            let next = chrono::NaiveDate::parse_from_str(d, "%Y-%m-%d")
                .ok()
                .and_then(|day| day.succ_opt())
                .and_then(|day| crate::domain::time::day_start(&day.format("%Y-%m-%d").to_string()))
                .ok_or_else(|| not_a_date(d, "al"))?;
            Some(next)
        }
        None => None,
    };
    Ok((from, to))
}

#[utoipa::path(
    get, path = "/richieste", tag = "richieste", operation_id = "lista_richieste", params(ListQuery),
    responses(
        (status = 200, description = "A page of the caller's requests, newest first", body = ListaRichieste),
        (status = 400, description = "A filter is not valid (the pointer names it: `?stato`)", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid bearer token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not a requester", body = Problem, content_type = "application/problem+json"),
    )
)]
/// `GET /richieste`: the caller's Lista Richieste, open and closed together, newest first, a page at a time
/// (`_links.next` carries the cursor).
pub(super) async fn list(
    State(s): State<AppState>,
    Authenticated(actor): Authenticated,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Response, Problem> {
    let Query(q) = query.map_err(|e| bad_query(e.body_text(), ""))?;
    let stato = match q.stato.as_deref() {
        None => None,
        Some(text) => Some(Stato::parse(text).ok_or_else(|| {
            bad_query(format!("`{text}` is not a state (aperta, in_carico, chiusa, annullata)"), "stato")
        })?),
    };
    if let Some(e) = q.esito.as_deref()
        && !matches!(e, "accolta" | "non_accolta" | "annullata")
    {
        return Err(bad_query(format!("`{e}` is not an esito (accolta, non_accolta, annullata)"), "esito"));
    }
    let before_id = match q.cursore.as_deref() {
        None => None,
        Some(c) => Some(c.parse::<i64>().map_err(|_| bad_query("not a cursor of this list".into(), "cursore"))?),
    };
    let filter = ListFilter {
        stato,
        task: q.task.clone(),
        esito: q.esito.clone(),
        matricola: q.matricola.clone(),
        creata: day_range(q.creata_dal.as_ref(), q.creata_al.as_ref(), "creata")?,
        aggiornata: day_range(q.aggiornata_dal.as_ref(), q.aggiornata_al.as_ref(), "aggiornata")?,
        before_id,
        limit: q.limite.unwrap_or(50),
        ..Default::default()
    };
    let page = app::list(&s.store, &actor, filter).await?;
    let items = page.items.into_iter().map(RigaRichiesta::from).collect();
    let links = match page.next_before_id {
        Some(next) => {
            let next = next.to_string();
            let limit = q.limite.map(|l| l.to_string());
            let mut params = q.given();
            params.push(("cursore", &next));
            if let Some(l) = &limit {
                params.push(("limite", l));
            }
            let encoded: Vec<String> =
                params.iter().map(|(k, v)| format!("{k}={}", utf8_percent_encode(v, NON_ALPHANUMERIC))).collect();
            PageLinks { next: Some(Link { href: format!("{BASE}/richieste?{}", encoded.join("&")) }) }
        }
        None => PageLinks::default(),
    };
    Ok(no_store(axum::Json(ListaRichieste { items, _links: links }).into_response()))
}

#[utoipa::path(
    post, path = "/richieste/{id}/ritiro", tag = "richieste", operation_id = "ritira_richiesta", params(("id" = String, Path, description = "The request's opaque id (digits, never a protocol number)", max_length = 19, pattern = "^[0-9]{1,19}$")),
    responses(
        (status = 200, description = "Withdrawn: the request as it is now", body = RequestView),
        (status = 401, description = "No valid bearer token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not a requester", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No request with that id that the caller may see", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Closed already, or not the caller's", body = Problem, content_type = "application/problem+json"),
    )
)]
/// `POST /richieste/{id}/ritiro`: the requester withdraws an open request of theirs (closed `annullata`); the
/// answer is the request as it is now.
pub(super) async fn withdraw(
    State(s): State<AppState>,
    Authenticated(actor): Authenticated,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    let key = opaque_id(&id)?;
    let app::Actor::Richiedente { cf, .. } = &actor else {
        return Err(Problem::new(StatusCode::FORBIDDEN, "only the requester withdraws a request"));
    };
    let view = app::withdraw(&s.store, &actor, key, cf, now_ms()).await.map_err(not_found_by_id)?;
    Ok(no_store(axum::Json(view).into_response()))
}

/// A request id of a path: digits only (never a protocol number or anything personal).
/// The text of an `application/json` body of at most `limit` bytes (`intake.limits.max_document_bytes`).
async fn json_text(headers: &HeaderMap, body: Body, limit: u64) -> Result<String, Problem> {
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(';').next().is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json")));
    if !json {
        return Err(Problem::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "send `application/json`, or `multipart/form-data` with files",
        ));
    }
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    let bytes = to_bytes(body, limit).await.map_err(|_| {
        Problem::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the body is larger than {limit} bytes (`intake.limits.max_document_bytes`)"),
        )
    })?;
    String::from_utf8(bytes.to_vec()).map_err(|_| Problem::new(StatusCode::BAD_REQUEST, "the body is not UTF-8 text"))
}

pub(super) fn opaque_id(id: &str) -> Result<&str, Problem> {
    if id.is_empty() || !id.bytes().all(|b| b.is_ascii_digit()) || id.len() > 19 {
        return Err(Problem::new(StatusCode::NOT_FOUND, "no request with that id"));
    }
    Ok(id)
}

/// "Not found" without echoing the key.
pub(super) fn not_found_by_id(e: app::AppError) -> Problem {
    match e {
        app::AppError::NotFound(_) => Problem::new(StatusCode::NOT_FOUND, "no request with that id"),
        other => other.into(),
    }
}

#[utoipa::path(
    post, path = "/richieste/{id}/messaggi", tag = "richieste", operation_id = "scrivi_alla_sede", params(("id" = String, Path, description = "The request's opaque id (digits, never a protocol number)", max_length = 19, pattern = "^[0-9]{1,19}$")),
    request_body(content(
        (Messaggio = "application/json"),
        (super::openapi::MessaggioConAllegati = "multipart/form-data"),
    ), description = "The text; with files as `multipart/form-data`"),
    responses(
        (status = 201, description = "Recorded in the history and sent to the sede", body = MessaggioInviato),
        (status = 400, description = "Not the expected JSON", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid bearer token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not the request's requester", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No request with that id that the caller may see", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The request is closed", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Neither `application/json` nor `multipart/form-data`", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "The text is empty, too long or has control characters, or a file was refused (the rule it broke)", body = Problem, content_type = "application/problem+json"),
    )
)]
/// `POST /richieste/{id}/messaggi` `{"testo": …}`: the requester writes to the sede about an open request; 201.
pub(super) async fn message(
    State(s): State<AppState>,
    Authenticated(actor): Authenticated,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Problem> {
    let Some(api) = &s.api else { return Err(Problem::new(StatusCode::NOT_FOUND, "the API is not configured")) };
    let key = opaque_id(&id)?;
    // A message's text is bounded in characters (`max_note_chars`); four bytes a character bound its part.
    let text_limit = (api.intake.limits.max_note_chars as u64).saturating_mul(4).saturating_add(1024);
    let (testo, parts) = match multipart_boundary(&headers) {
        Some(boundary) => {
            let parts = read_parts(body, boundary, "testo", text_limit, &api.intake.allegati).await?;
            (parts.text.clone(), Some(parts))
        }
        None => {
            let text = json_text(&headers, body, text_limit).await?;
            let axum::Json(m) = axum::Json::<Messaggio>::from_bytes(text.as_bytes()).map_err(|e| {
                let status = StatusCode::from_u16(e.status().as_u16()).unwrap_or(StatusCode::BAD_REQUEST);
                Problem::new(status, format!("expected {{\"testo\": \"…\"}}: {}", e.body_text()))
            })?;
            (m.testo, None)
        }
    };
    let files = parts.as_ref().map(Parts::uploads).unwrap_or_default();
    let protocollo = app::message_to_sede(&s.store, &api.intake, &actor, key, &testo, &files, now_ms())
        .await
        .map_err(not_found_by_id)?;
    let answer = MessaggioInviato { protocollo, tipo: TipoMessaggio::MessaggioRichiedente };
    Ok(no_store((StatusCode::CREATED, axum::Json(answer)).into_response()))
}

#[utoipa::path(
    get, path = "/posizioni/{matricola}/riepilogo", tag = "posizioni", operation_id = "riepilogo_posizione",
    params(("matricola" = String, Path, description = "The position (10 digits)", max_length = 10, pattern = "^[0-9]{10}$")),
    responses(
        (status = 200, description = "The company, its deleghe and contacts, its open requests", body = app::Riepilogo),
        (status = 401, description = "No valid bearer token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No position with that matricola that the caller may act for", body = Problem, content_type = "application/problem+json"),
    )
)]
/// `GET /posizioni/{matricola}/riepilogo`: the position's company, deleghe, contacts and open requests, for
/// who may act for it (404 for anyone else, as for a matricola that does not exist).
pub(super) async fn riepilogo(
    State(s): State<AppState>,
    Authenticated(actor): Authenticated,
    Path(matricola): Path<String>,
) -> Result<Response, Problem> {
    if !crate::domain::validators::matricola(&matricola) {
        return Err(Problem::new(StatusCode::NOT_FOUND, "no position with that matricola that you may act for"));
    }
    let r = app::riepilogo(&s.store, &actor, &matricola).await?;
    Ok(no_store(axum::Json(r).into_response()))
}
