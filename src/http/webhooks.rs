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
use utoipa::ToSchema;

use super::AppState;
use super::api::{BASE, no_store};
use super::auth::Authenticated;
use super::body::{Link, SelfLinks};
use super::problem::{FieldProblem, Problem};
use crate::app::feeds::encode_cursor;
use crate::app::webhooks as uc;
use crate::clock::now_ms;
use crate::domain::time::rfc3339;

pub fn routes() -> Router<AppState> {
    Router::new().route("/webhook", get(list).post(create)).route("/webhook/{id}", delete(remove))
}

/// A new subscription.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct CreateBody {
    /// The receiver: https (http only for loopback hosts with `webhooks.allow_http_loopback`), no credentials.
    #[schema(max_length = 2048, format = "uri")]
    url: String,
    /// At most 200 characters, no control characters.
    #[schema(max_length = 200)]
    descrizione: Option<String>,
    /// A feed cursor (`GET /eventi`) to start after; default: the feed's current end.
    #[schema(max_length = 39, pattern = "^[0-9]{1,19}-[0-9]{1,19}$")]
    cursore: Option<String>,
}

/// A subscription (never its secret).
#[derive(Debug, Serialize, ToSchema)]
struct Subscription {
    /// The subscription's id (32 hex digits), for `DELETE /webhook/{id}`.
    #[schema(max_length = 32, pattern = "^[0-9a-f]{32}$")]
    id: String,
    #[schema(max_length = 2048, format = "uri")]
    url: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(max_length = 200)]
    descrizione: Option<String>,
    #[schema(format = DateTime)]
    creata_il: String,
    /// The feed cursor of the last event delivered (or given up on).
    #[schema(max_length = 39, pattern = "^[0-9]{1,19}-[0-9]{1,19}$")]
    cursore: String,
    /// Failed attempts on the next event, and the last one's HTTP status (0: no answer).
    #[schema(minimum = 0)]
    tentativi: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    ultimo_stato: Option<i64>,
    /// Events given up on (dead letters).
    #[schema(minimum = 0)]
    non_consegnati: i64,
}

/// The links of a new subscription: the caller's subscriptions.
#[derive(Debug, Serialize, ToSchema)]
struct CollectionLinks {
    collection: Link,
}

/// A new subscription, with its signing secret: the only answer that carries it.
#[derive(Debug, Serialize, ToSchema)]
struct SubscriptionCreated {
    /// The subscription's id (32 hex digits), for `DELETE /webhook/{id}`.
    #[schema(max_length = 32, pattern = "^[0-9a-f]{32}$")]
    id: String,
    #[schema(max_length = 2048, format = "uri")]
    url: String,
    /// As sent (null when none was).
    #[schema(max_length = 200)]
    descrizione: Option<String>,
    /// The signing secret (Standard Webhooks: `whsec_` and base64 of 32 bytes), shown once.
    #[schema(max_length = 50, pattern = "^whsec_[A-Za-z0-9+/]{43}=$")]
    secret: String,
    /// The feed cursor the subscription starts after.
    #[schema(max_length = 39, pattern = "^[0-9]{1,19}-[0-9]{1,19}$")]
    cursore: String,
    _links: CollectionLinks,
}

/// The caller's subscriptions (one page: an integrator has at most 20).
#[derive(Debug, Serialize, ToSchema)]
struct Subscriptions {
    #[schema(min_items = 0, max_items = 20)]
    items: Vec<Subscription>,
    _links: SelfLinks,
}

#[utoipa::path(
    post, path = "/webhook", tag = "integratori", operation_id = "crea_webhook",
    request_body(content = CreateBody, content_type = "application/json"),
    responses(
        (status = 201, description = "Subscribed: the id and the signing secret (shown only here)", body = SubscriptionCreated),
        (status = 401, description = "No valid bearer token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an integrator", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The caller has 20 subscriptions already: delete one first", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not `application/json`", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Not the expected JSON, or a URL, description or cursor that is not accepted (the pointer names the field)", body = Problem, content_type = "application/problem+json"),
    )
)]
/// `POST /webhook` `{"url": …, "descrizione"?: …, "cursore"?: …}`: 201 with the id and the secret (shown once).
pub(super) async fn create(
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
    let answer = SubscriptionCreated {
        id: created.id,
        url: b.url,
        descrizione: b.descrizione,
        secret: created.secret,
        cursore: created.cursor,
        _links: CollectionLinks { collection: Link { href: format!("{BASE}/webhook") } },
    };
    Ok(no_store((StatusCode::CREATED, axum::Json(answer)).into_response()))
}

#[utoipa::path(
    get, path = "/webhook", tag = "integratori", operation_id = "lista_webhook",
    responses(
        (status = 200, description = "The caller's subscriptions", body = Subscriptions),
        (status = 401, description = "No valid bearer token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an integrator", body = Problem, content_type = "application/problem+json"),
    )
)]
/// `GET /webhook`: the caller's subscriptions (one page: an integrator has a handful).
pub(super) async fn list(State(s): State<AppState>, Authenticated(actor): Authenticated) -> Result<Response, Problem> {
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
    let links = SelfLinks { own: Link { href: format!("{BASE}/webhook") } };
    Ok(no_store(axum::Json(Subscriptions { items, _links: links }).into_response()))
}

#[utoipa::path(
    delete, path = "/webhook/{id}", tag = "integratori", operation_id = "elimina_webhook",
    params(("id" = String, Path, description = "The subscription's id (32 hex digits)", max_length = 32, pattern = "^[0-9a-fA-F]{32}$")),
    responses(
        (status = 204, description = "Deleted: nothing more is delivered to it"),
        (status = 401, description = "No valid bearer token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an integrator", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No subscription with that id of the caller's", body = Problem, content_type = "application/problem+json"),
    )
)]
/// `DELETE /webhook/{id}`: 204; 404 for an id the caller does not own.
pub(super) async fn remove(
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
