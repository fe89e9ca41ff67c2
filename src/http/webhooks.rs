//! `POST /webhook`, `GET /webhook`, `DELETE /webhook/{id}`: an integrator's webhook subscriptions (the use
//! cases are `app::webhooks`'; `notify::webhooks` delivers them). The signing secret is in the creation's
//! answer only; lists never carry it.

use axum::Router;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::AppState;
use super::api::{BASE, no_store};
use super::auth::Authenticated;
use super::problem::{FieldProblem, Problem};
use crate::app::feeds::encode_cursor;
use crate::app::webhooks as uc;
use crate::clock::now_ms;
use crate::domain::time::rfc3339;

pub fn routes() -> Router<AppState> {
    Router::new().route("/webhook", get(list).post(create)).route("/webhook/{id}", delete(remove))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    /// The receiver: https (http only for loopback hosts with `webhooks.allow_http_loopback`).
    url: String,
    descrizione: Option<String>,
    /// A feed cursor (`GET /eventi`) to start after; default: the feed's current end.
    cursore: Option<String>,
}

#[derive(Debug, Serialize)]
struct Subscription {
    id: String,
    url: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    descrizione: Option<String>,
    creata_il: String,
    /// The feed cursor of the last event delivered (or given up on).
    cursore: String,
    /// Failed attempts on the next event, and the last one's HTTP status (0: no answer).
    tentativi: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    ultimo_stato: Option<i64>,
    non_consegnati: i64,
}

/// `POST /webhook` `{"url": …, "descrizione"?: …, "cursore"?: …}`: 201 with the id and the secret (shown once).
async fn create(
    State(s): State<AppState>,
    Authenticated(actor): Authenticated,
    body: Result<axum::Json<CreateBody>, JsonRejection>,
) -> Result<Response, Problem> {
    let Some(api) = &s.api else { return Err(Problem::new(StatusCode::NOT_FOUND, "the API is not configured")) };
    let axum::Json(b) = body.map_err(|e| match e {
        JsonRejection::MissingJsonContentType(_) => {
            Problem::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, "send the subscription as `application/json`")
        }
        other => {
            let detail = format!("expected {{\"url\": \"https://…\", \"descrizione\": \"…\"}}: {}", other.body_text());
            let mut p = Problem::new(StatusCode::UNPROCESSABLE_ENTITY, detail.clone());
            p.errors.push(FieldProblem { pointer: String::new(), detail });
            p
        }
    })?;
    let created = uc::create(
        &s.store,
        &actor,
        &b.url,
        b.descrizione.as_deref(),
        b.cursore.as_deref(),
        api.webhooks.allow_http_loopback,
        now_ms(),
    )
    .await
    .map_err(|e| Problem::from_app(e, false))?;
    let answer = json!({
        "id": created.id,
        "url": b.url,
        "descrizione": b.descrizione,
        "secret": created.secret,
        "cursore": created.cursor,
        "_links": { "collection": { "href": format!("{BASE}/webhook") } },
    });
    Ok(no_store((StatusCode::CREATED, axum::Json(answer)).into_response()))
}

/// `GET /webhook`: the caller's subscriptions (one page: an integrator has a handful).
async fn list(State(s): State<AppState>, Authenticated(actor): Authenticated) -> Result<Response, Problem> {
    let items: Vec<Subscription> = uc::list(&s.store, &actor)
        .await?
        .into_iter()
        .map(|w| Subscription {
            id: w.id,
            url: w.url,
            descrizione: w.descrizione,
            creata_il: rfc3339(w.created_at),
            cursore: encode_cursor(w.cursor),
            tentativi: w.attempts,
            ultimo_stato: w.last_status,
            non_consegnati: w.dead_letters,
        })
        .collect();
    let links = json!({ "self": { "href": format!("{BASE}/webhook") } });
    Ok(no_store(axum::Json(json!({ "items": items, "_links": links })).into_response()))
}

/// `DELETE /webhook/{id}`: 204; 404 for an id the caller does not own.
async fn remove(
    State(s): State<AppState>,
    Authenticated(actor): Authenticated,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    let not_found = || Problem::new(StatusCode::NOT_FOUND, "no subscription with that id");
    if id.len() != 32 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        // Still the caller's role first: a requester learns 403, not whether an id exists.
        uc::list(&s.store, &actor).await?;
        return Err(not_found());
    }
    uc::delete(&s.store, &actor, &id).await.map_err(|e| match e {
        crate::app::AppError::NotFound(_) => not_found(),
        other => other.into(),
    })?;
    Ok(no_store(StatusCode::NO_CONTENT.into_response()))
}
