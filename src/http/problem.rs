//! Errors as `application/problem+json` (RFC 9457): `type`, `title`, `status`, `detail`, and for refused input
//! `errors`, one per problem, each with a JSON Pointer (RFC 6901) to its field in the body.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::app::AppError;
use crate::intake::IntakeError;
use crate::store::StoreError;

/// A problem (RFC 9457).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Problem {
    #[serde(rename = "type")]
    #[schema(value_type = String, max_length = 1000)]
    pub kind: &'static str,
    #[schema(value_type = String, max_length = 100)]
    pub title: &'static str,
    #[schema(minimum = 100, maximum = 599)]
    pub status: u16,
    #[schema(max_length = 8000)]
    pub detail: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    #[schema(min_items = 0, max_items = 10000)]
    pub errors: Vec<FieldProblem>,
    /// Extra headers of the answer (e.g. `WWW-Authenticate`).
    #[serde(skip)]
    pub headers: Vec<(header::HeaderName, HeaderValue)>,
}

/// One problem of the input: where (a JSON Pointer into the body) and what.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct FieldProblem {
    #[schema(max_length = 1000)]
    pub pointer: String,
    #[schema(max_length = 4000)]
    pub detail: String,
}

impl Problem {
    pub fn new(status: StatusCode, detail: impl Into<String>) -> Problem {
        Problem {
            kind: "about:blank",
            title: status.canonical_reason().unwrap_or("Error"),
            status: status.as_u16(),
            detail: detail.into(),
            errors: Vec::new(),
            headers: Vec::new(),
        }
    }

    pub fn with_header(mut self, name: header::HeaderName, value: &'static str) -> Problem {
        self.headers.push((name, HeaderValue::from_static(value)));
        self
    }

    /// A use case's failure; `list` says whether the body was a list (pointers then start with the index).
    pub fn from_app(e: AppError, list: bool) -> Problem {
        let status = StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        match e {
            AppError::Invalid(errors) => {
                let mut p =
                    Problem::new(status, format!("{} problem(s) in the body: nothing was queued", errors.len()));
                p.errors = errors.iter().map(|e| field_problem(e, list)).collect();
                p
            }
            AppError::AttachmentRefused(ref refused) => {
                let detail = e.to_string();
                let pointer = refused.index.map_or_else(|| "/allegati".to_string(), |i| format!("/allegati/{i}"));
                let mut p = Problem::new(status, format!("a file was refused: nothing was queued. {detail}"));
                p.errors.push(FieldProblem { pointer, detail });
                p
            }
            AppError::Store(
                StoreError::IdempotencyMismatch { index, .. } | StoreError::IdempotencyInFlight { index },
            ) => {
                let detail = e.to_string();
                let pointer = if list { format!("/{index}/chiave_idempotenza") } else { "/chiave_idempotenza".into() };
                let mut p = Problem::new(status, detail.clone());
                p.errors.push(FieldProblem { pointer, detail });
                p
            }
            // The database's own words stay in the log; the caller learns what kind of failure it was.
            AppError::Store(inner) if status.is_server_error() => {
                tracing::error!(error = %inner, "a request to the API failed in the store");
                Problem::new(status, "the service cannot answer right now: try again later")
            }
            other => Problem::new(status, other.to_string()),
        }
    }
}

/// Where an intake problem is: `/2/contatti_notifica/email` in a list, `/contatti_notifica/email` alone, `""`
/// (the whole document) when it is about the document.
fn field_problem(e: &IntakeError, list: bool) -> FieldProblem {
    let mut pointer = String::new();
    if let (true, Some(i)) = (list, e.index) {
        pointer.push_str(&format!("/{i}"));
    }
    if !e.error.field.starts_with('(') {
        for part in e.error.field.split('.') {
            // `uso[1]` → `/uso/1`
            let mut pieces = part.split('[');
            if let Some(name) = pieces.next() {
                pointer.push('/');
                pointer.push_str(&name.replace('~', "~0").replace('/', "~1"));
            }
            for index in pieces {
                pointer.push('/');
                pointer.push_str(index.trim_end_matches(']'));
            }
        }
    }
    FieldProblem { pointer, detail: e.error.problem.clone() }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = serde_json::to_string(&self).unwrap_or_else(|_| "{}".into());
        let mut response = (status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/problem+json"));
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        for (name, value) in self.headers {
            headers.insert(name, value);
        }
        response
    }
}

impl From<AppError> for Problem {
    fn from(e: AppError) -> Problem {
        Problem::from_app(e, false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::request::FieldError;

    fn at(index: Option<usize>, field: &str) -> IntakeError {
        IntakeError {
            source_name: "body".into(),
            position: "request 1".into(),
            index,
            error: FieldError::new(field, "x"),
        }
    }

    #[test]
    fn pointers_follow_rfc_6901() {
        assert_eq!(field_problem(&at(Some(2), "contatti_notifica.email"), true).pointer, "/2/contatti_notifica/email");
        assert_eq!(field_problem(&at(Some(0), "uso[1]"), false).pointer, "/uso/1");
        assert_eq!(field_problem(&at(None, "(document)"), true).pointer, "");
        assert_eq!(field_problem(&at(None, "a/b"), false).pointer, "/a~1b");
    }
}
