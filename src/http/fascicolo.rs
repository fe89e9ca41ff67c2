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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Search {
    /// A codice fiscale or a matricola.
    soggetto: String,
}

#[derive(Serialize)]
struct Fascicolo {
    items: Vec<FascicoloEntry>,
}

async fn search(
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
