//! `GET /menu`: the task types the calling requester may submit (their profile, their pilot groups), with the
//! schema of each task's fields, read from the rule pack the workers run.

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Serialize;

use super::AppState;
use super::auth::Authenticated;
use super::problem::Problem;
use crate::app::{self, MenuItem};

pub fn routes() -> Router<AppState> {
    Router::new().route("/menu", get(menu))
}

/// The menu, as a list (it is short: one item per task type, so it has no further page).
#[derive(Serialize, utoipa::ToSchema)]
struct Menu {
    #[schema(min_items = 0, max_items = 1000)]
    items: Vec<MenuItem>,
}

#[utoipa::path(
    get, path = "/menu", tag = "menu", operation_id = "leggi_menu",
    responses(
        (status = 200, description = "The task types the caller may submit, each with the schema of its fields", body = Menu),
        (status = 401, description = "No valid bearer token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not a requester", body = Problem, content_type = "application/problem+json"),
    )
)]
/// `GET /menu`: the task types the calling requester may submit.
pub(super) async fn menu(State(s): State<AppState>, Authenticated(actor): Authenticated) -> Result<Response, Problem> {
    let Some(api) = &s.api else { return Err(Problem::new(StatusCode::NOT_FOUND, "the API is not configured")) };
    let rules = api.rules.load_full();
    let items = app::menu(&s.store, &rules, &actor).await?;
    let mut response = axum::Json(Menu { items }).into_response();
    // It depends on who asks (their pilot groups): never shared by a cache.
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}
