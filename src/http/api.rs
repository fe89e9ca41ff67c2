//! The API v1 (`/rest/smart-task/v1`, AgID ModI conventions: kebab-case paths, snake_case JSON, lists wrapped
//! in `items`, RFC 3339 times with their offset, problem+json errors, no personal data in paths or query
//! strings, `Cache-Control: no-store` on everything personal). Handlers parse and serialise; the use cases
//! are `app`'s, shared with the CLI.

use std::sync::Arc;

use arc_swap::ArcSwap;
use axum::Router;
use axum::body::{Body, to_bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::json;
use sha2::{Digest, Sha256};

use super::AppState;
use super::auth::{Authenticated, Verifier};
use super::problem::Problem;
use crate::app;
use crate::config::IntakeConfig;
use crate::rules::RuleSet;
use crate::worker::now_ms;

/// The base path of version 1.
pub const BASE: &str = "/rest/smart-task/v1";

/// What the API's handlers need beyond the store.
pub struct ApiState {
    pub verifier: Verifier,
    /// The active rule set (the workers' own): intake validates against it.
    pub rules: Arc<ArcSwap<RuleSet>>,
    pub intake: IntakeConfig,
}

pub fn routes() -> Router<AppState> {
    Router::new().route("/richieste", post(submit)).route("/richieste/{id}", get(read))
}

fn no_store(mut response: Response) -> Response {
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// `POST /richieste`: one request (an object) or several (an array), JSON; all queued or none. 201 with the
/// stored requests (and `Location` for one); 200 when every request repeats an earlier `chiave_idempotenza`.
async fn submit(
    State(s): State<AppState>,
    Authenticated(actor): Authenticated,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Problem> {
    let Some(api) = &s.api else { return Err(Problem::new(StatusCode::NOT_FOUND, "the API is not configured")) };
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(';').next().is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json")));
    if !json {
        return Err(Problem::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, "send the requests as `application/json`"));
    }
    let limit = usize::try_from(api.intake.limits.max_document_bytes).unwrap_or(usize::MAX);
    let bytes = to_bytes(body, limit).await.map_err(|_| {
        Problem::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the body is larger than {limit} bytes (`intake.limits.max_document_bytes`)"),
        )
    })?;
    let text =
        std::str::from_utf8(&bytes).map_err(|_| Problem::new(StatusCode::BAD_REQUEST, "the body is not UTF-8 text"))?;
    let list = text.trim_start().starts_with('[');
    let rules = api.rules.load_full();
    let stored = app::submit(&s.store, &rules, &api.intake, &actor, text, "body", now_ms())
        .await
        .map_err(|e| Problem::from_app(e, list))?;
    let items: Vec<serde_json::Value> = stored
        .iter()
        .map(|(s, r)| {
            json!({
                "id": s.id.to_string(),
                "protocollo": s.protocollo,
                "task": r.envelope.task,
                "gia_presentata": s.duplicate,
                "_links": { "self": { "href": format!("{BASE}/richieste/{}", s.id) } },
            })
        })
        .collect();
    let status = if stored.iter().all(|(s, _)| s.duplicate) { StatusCode::OK } else { StatusCode::CREATED };
    let mut response = (status, axum::Json(json!({ "items": items }))).into_response();
    if let [(one, _)] = stored.as_slice()
        && let Ok(location) = HeaderValue::from_str(&format!("{BASE}/richieste/{}", one.id))
    {
        response.headers_mut().insert(header::LOCATION, location);
    }
    Ok(no_store(response))
}

/// `GET /richieste/{id}`: a request the caller may see, with its decision and history, and a strong `ETag`
/// (`If-None-Match` answers 304). Another requester's request is 404, like one that does not exist.
async fn read(
    State(s): State<AppState>,
    Authenticated(actor): Authenticated,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    if id.is_empty() || !id.bytes().all(|b| b.is_ascii_digit()) || id.len() > 19 {
        return Err(Problem::new(StatusCode::NOT_FOUND, "no request with that id"));
    }
    let view = app::read(&s.store, &actor, &id).await.map_err(|e| match e {
        app::AppError::NotFound(_) => app::AppError::NotFound("no request with that id".into()),
        other => other,
    })?;
    let body =
        serde_json::to_vec(&view).map_err(|_| Problem::new(StatusCode::INTERNAL_SERVER_ERROR, "cannot encode"))?;
    let etag = format!("\"{}\"", crate::domain::hex_prefix(&Sha256::digest(&body), 16));
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
