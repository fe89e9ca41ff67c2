//! `GET /agenda/{sede}/disponibilita?dal=YYYY-MM-DD&al=YYYY-MM-DD`: the slots a sede's Agenda Appuntamenti
//! offers (`app::agenda`), for whoever is authenticated. The query holds dates and the path a sede's codice:
//! nothing personal.

use axum::Router;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use utoipa::IntoParams;

use super::AppState;
use super::api::{bad_query, no_store};
use super::auth::Authenticated;
use super::problem::Problem;
use crate::app::agenda::{Disponibilita, availability};
use crate::clock::now_ms;

pub fn routes() -> Router<AppState> {
    Router::new().route("/agenda/{sede}/disponibilita", get(slots))
}

/// The days searched (in the sede's time zone), both included, at most 31 days.
#[derive(Debug, serde::Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct Giorni {
    /// From this day (YYYY-MM-DD).
    #[param(format = Date)]
    dal: String,
    /// To this day, included.
    #[param(format = Date)]
    al: String,
}

#[utoipa::path(
    get, path = "/agenda/{sede}/disponibilita", tag = "agenda", operation_id = "cerca_disponibilita",
    params(("sede" = String, Path, description = "The sede's codice (4 digits)", max_length = 4, pattern = "^[0-9]{4}$"), Giorni),
    responses(
        (status = 200, description = "The bookable slots, with the free places of each", body = Disponibilita),
        (status = 400, description = "`dal` or `al` missing", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid bearer token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "The sede publishes no agenda", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Not dates, `al` before `dal`, or more than 31 days", body = Problem, content_type = "application/problem+json"),
    )
)]
/// `GET /agenda/{sede}/disponibilita`.
pub(super) async fn slots(
    State(s): State<AppState>,
    Authenticated(_): Authenticated,
    Path(sede): Path<String>,
    query: Result<Query<Giorni>, QueryRejection>,
) -> Result<Response, Problem> {
    let Some(api) = &s.api else { return Err(Problem::new(StatusCode::NOT_FOUND, "the API is not configured")) };
    let Query(q) = query.map_err(|e| bad_query(e.body_text(), "dal"))?;
    let found = availability(&api.agenda, &sede, &q.dal, &q.al, now_ms())?;
    Ok(no_store(axum::Json(found).into_response()))
}
