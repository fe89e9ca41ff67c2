//! `GET /richieste/{id}/esito-pdf`: the esito of a closed request as a PDF/A document in Italian, for the
//! callers who may read the request (`GET /richieste/{id}`'s rules: another requester's request is 404). The
//! document is rendered from the stored decision each time and is the same bytes each time, so its SHA-256 is
//! a strong `ETag`.

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;

use super::AppState;
use super::api::{no_store, not_found_by_id, opaque_id};
use super::auth::Authenticated;
use super::problem::Problem;
use crate::app;

pub fn routes() -> Router<AppState> {
    Router::new().route("/richieste/{id}/esito-pdf", get(esito_pdf))
}

/// The body of a PDF answer, for the document.
pub(super) struct PdfDocument;

impl utoipa::PartialSchema for PdfDocument {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        let schema = json!({
            "type": "string", "contentMediaType": "application/pdf", "maxLength": 16_777_216,
            "description": "A PDF/A-2b document"
        });
        serde_json::from_value(schema).unwrap_or_default()
    }
}

impl utoipa::ToSchema for PdfDocument {}

#[utoipa::path(
    get, path = "/richieste/{id}/esito-pdf", tag = "richieste", operation_id = "scarica_esito_pdf", params(("id" = String, Path, description = "The request's opaque id (digits, never a protocol number)", max_length = 19, pattern = "^[0-9]{1,19}$")),
    responses(
        (status = 200, description = "The esito as a PDF/A-2b document in Italian, the same bytes each time", body = PdfDocument, content_type = "application/pdf", headers(("ETag", description = "Strong validator: the document's SHA-256"))),
        (status = 304, description = "Unchanged since the `If-None-Match` given", headers(("ETag", description = "Strong validator: the document's SHA-256"))),
        (status = 401, description = "No valid bearer token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No request with that id that the caller may see", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The request is not closed yet: it has no esito", body = Problem, content_type = "application/problem+json"),
    )
)]
/// `GET /richieste/{id}/esito-pdf`: the esito document of a closed request the caller may see.
pub(super) async fn esito_pdf(
    State(s): State<AppState>,
    Authenticated(actor): Authenticated,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    let doc = app::esito(&s.store, &actor, opaque_id(&id)?).await.map_err(not_found_by_id)?;
    let etag = HeaderValue::from_str(&format!("\"{}\"", doc.sha256))
        .map_err(|_| Problem::new(StatusCode::INTERNAL_SERVER_ERROR, "cannot tag the document"))?;
    let unchanged = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim().as_bytes() == etag.as_bytes()));
    let mut response = if unchanged {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        ([(header::CONTENT_TYPE, "application/pdf")], doc.pdf).into_response()
    };
    response.headers_mut().insert(header::ETAG, etag);
    Ok(no_store(response))
}
