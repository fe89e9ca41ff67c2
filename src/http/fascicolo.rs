//! `POST /fascicolo/ricerca`: the Fascicolo Elettronico of a subject. The subject (a codice fiscale or a
//! matricola) travels in the body, never in the URL: it is personal data.

use axum::Router;
use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde::{Deserialize, Serialize};

use super::AppState;
use super::auth::Authenticated;
use super::problem::{FieldProblem, Problem};
use crate::app;
use crate::store::FascicoloEntry;

pub fn routes() -> Router<AppState> {
    Router::new().route("/fascicolo/ricerca", post(search))
}

/// The longest subject accepted: a codice fiscale has 16 characters, a matricola 10.
const MAX_SUBJECT_CHARS: usize = 16;

/// The subject whose Fascicolo is asked for.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct Search {
    /// A codice fiscale (16 characters, or 11 digits) or a matricola (10 digits).
    #[schema(min_length = 1, max_length = 16)]
    soggetto: String,
}

/// The closed requests of a subject, oldest close first (one list: a subject has no further page).
#[derive(Serialize, utoipa::ToSchema)]
struct Fascicolo {
    #[schema(min_items = 0, max_items = 100000)]
    items: Vec<FascicoloEntry>,
}

#[utoipa::path(
    post, path = "/fascicolo/ricerca", tag = "fascicolo", operation_id = "ricerca_fascicolo",
    request_body(content = Search, content_type = "application/json",
        description = "The subject, in the body because it is personal data"),
    responses(
        (status = 200, description = "The subject's closed requests", body = Fascicolo),
        (status = 401, description = "No valid bearer token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No Fascicolo of that subject that the caller may see", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not `application/json`", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Not the expected JSON, or not a codice fiscale or matricola (the pointer is `/soggetto`)", body = Problem, content_type = "application/problem+json"),
    )
)]
/// `POST /fascicolo/ricerca` `{"soggetto": …}`: the Fascicolo Elettronico of a subject the caller may see.
pub(super) async fn search(
    State(s): State<AppState>,
    Authenticated(actor): Authenticated,
    body: Result<axum::Json<Search>, JsonRejection>,
) -> Result<Response, Problem> {
    let axum::Json(search) = body.map_err(|e| match e {
        JsonRejection::MissingJsonContentType(_) => {
            Problem::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, "send the search as `application/json`")
        }
        other => invalid(other.body_text()),
    })?;
    if search.soggetto.trim().is_empty() || search.soggetto.trim().chars().count() > MAX_SUBJECT_CHARS {
        return Err(invalid("a codice fiscale (16 characters, or 11 digits) or a matricola (10 digits)".into()));
    }
    let items = app::fascicolo(&s.store, &actor, &search.soggetto).await?;
    let mut response = axum::Json(Fascicolo { items }).into_response();
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

fn invalid(detail: String) -> Problem {
    let mut p = Problem::new(StatusCode::UNPROCESSABLE_ENTITY, detail.clone());
    p.errors.push(FieldProblem { pointer: "/soggetto".into(), detail });
    p
}
