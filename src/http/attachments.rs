//! Files in and out of the API. In: the `multipart/form-data` bodies (RFC 7578) that carry a request or a
//! message with its files — AgID's guidelines send attachments as parts, not as base64 inside JSON — each part
//! read through the bounds of `intake.allegati`, so that no body is held past them. Out: the download of one
//! attachment of a request the caller may see (`GET /richieste/{id}/allegati/{n}`).

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};

use super::AppState;
use super::api::{no_store, not_found_by_id, opaque_id};
use super::auth::Authenticated;
use super::problem::Problem;
use crate::app;
use crate::documents::attachment::{AttachmentLimits, Upload};
use crate::store::AttachmentContent;

/// The name of the parts that carry files.
pub const FILE_PART: &str = "allegato";

/// Room for the parts' headers and boundaries in a multipart body's bound.
const MULTIPART_OVERHEAD: u64 = 64 * 1024;

/// A multipart body read: the text of its one document part and its files, in the order sent.
pub struct Parts {
    pub text: String,
    pub files: Vec<(String, Vec<u8>)>,
}

impl Parts {
    pub fn uploads(&self) -> Vec<Upload<'_>> {
        self.files.iter().map(|(name, bytes)| Upload { name, bytes }).collect()
    }
}

/// The boundary of a `multipart/form-data` body; None for any other media type.
pub(super) fn multipart_boundary(headers: &HeaderMap) -> Option<String> {
    let content_type = headers.get(header::CONTENT_TYPE)?.to_str().ok()?;
    let mime = content_type.split(';').next()?.trim();
    if !mime.eq_ignore_ascii_case("multipart/form-data") {
        return None;
    }
    multer::parse_boundary(content_type).ok()
}

/// Reads a multipart body: one `text_part` (at most `text_limit` bytes of UTF-8) and up to
/// `limits.max_files` parts named `allegato`, each with a file name. A file is read to one byte past
/// `limits.max_file_bytes` and a part past `limits.max_files` is not read at all, so the inspection refuses them
/// by name without the body ever being held whole; the body as a whole is bounded too.
pub(super) async fn read_parts(
    body: Body,
    boundary: String,
    text_part: &'static str,
    text_limit: u64,
    limits: &AttachmentLimits,
) -> Result<Parts, Problem> {
    let whole = text_limit
        .saturating_add(limits.max_total_bytes)
        .saturating_add(limits.max_file_bytes)
        .saturating_add(MULTIPART_OVERHEAD);
    let constraints = multer::Constraints::new()
        .allowed_fields(vec![text_part, FILE_PART])
        .size_limit(multer::SizeLimit::new().whole_stream(whole));
    let mut multipart = multer::Multipart::with_constraints(body.into_data_stream(), boundary, constraints);
    let (mut text, mut files) = (None::<String>, Vec::new());
    while let Some(mut field) = multipart.next_field().await.map_err(|e| refused_body(&e, whole))? {
        let is_file = field.name() == Some(FILE_PART);
        // Each part is read to one byte past its limit: enough to know it is over, never more.
        let cap = if is_file { limits.max_file_bytes } else { text_limit }.saturating_add(1);
        let mut bytes = Vec::new();
        while let Some(chunk) = field.chunk().await.map_err(|e| refused_body(&e, whole))? {
            let room = usize::try_from(cap).unwrap_or(usize::MAX).saturating_sub(bytes.len());
            bytes.extend_from_slice(&chunk[..chunk.len().min(room)]);
            if bytes.len() as u64 >= cap {
                break;
            }
        }
        if is_file {
            let Some(name) = field.file_name().map(str::to_string) else {
                return Err(part_problem(format!("part {FILE_PART} {} has no file name", files.len() + 1)));
            };
            files.push((name, bytes));
            if files.len() > limits.max_files {
                break;
            }
        } else {
            if text.is_some() {
                return Err(part_problem(format!("send one part `{text_part}`, not several")));
            }
            if bytes.len() as u64 > text_limit {
                return Err(Problem::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("the part `{text_part}` is larger than {text_limit} bytes"),
                ));
            }
            text = Some(
                String::from_utf8(bytes)
                    .map_err(|_| part_problem(format!("the part `{text_part}` is not UTF-8 text")))?,
            );
        }
    }
    let text = text.ok_or_else(|| part_problem(format!("the part `{text_part}` is missing")))?;
    Ok(Parts { text, files })
}

fn part_problem(detail: String) -> Problem {
    Problem::new(StatusCode::BAD_REQUEST, format!("multipart body: {detail}"))
}

fn refused_body(e: &multer::Error, whole: u64) -> Problem {
    match e {
        multer::Error::StreamSizeExceeded { .. } => Problem::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the body is larger than {whole} bytes (`intake.allegati` and `intake.limits` bound it)"),
        ),
        multer::Error::UnknownField { field_name } => part_problem(format!(
            "unexpected part `{}`: send the document part and `{FILE_PART}` parts only",
            field_name.as_deref().unwrap_or("")
        )),
        other => part_problem(other.to_string()),
    }
}

#[utoipa::path(
    get, path = "/richieste/{id}/allegati/{n}", tag = "richieste", operation_id = "scarica_allegato",
    params(
        ("id" = String, Path, description = "The request's opaque id (digits, never a protocol number)", max_length = 19, pattern = "^[0-9]{1,19}$"),
        ("n" = i64, Path, description = "The attachment's `posizione` (1, 2, …)", minimum = 1, maximum = 1000),
    ),
    responses(
        (status = 200, description = "The file as received, with its content's type and `Content-Disposition: attachment` with the name the requester gave", content_type = "application/octet-stream",
            headers(("ETag", description = "The content's SHA-256"))),
        (status = 401, description = "No valid bearer token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such attachment on a request the caller may see", body = Problem, content_type = "application/problem+json"),
    )
)]
/// `GET /richieste/{id}/allegati/{n}`: attachment `n` of a request, for its requester and the sede's operators
/// (404 for anyone else, as for an attachment that does not exist).
pub(super) async fn download(
    State(s): State<AppState>,
    Authenticated(actor): Authenticated,
    Path((id, n)): Path<(String, String)>,
) -> Result<Response, Problem> {
    let key = opaque_id(&id)?;
    let posizione: i64 = n
        .parse()
        .ok()
        .filter(|p| (1..=1000).contains(p))
        .ok_or_else(|| Problem::new(StatusCode::NOT_FOUND, "no attachment with that number"))?;
    let file = app::attachment(&s.store, &actor, key, posizione).await.map_err(not_found_by_id)?;
    Ok(file_response(file))
}

/// An attachment's bytes as a download: its content's type, never rendered as a page of this origin.
pub(super) fn file_response(file: AttachmentContent) -> Response {
    let mut response = (StatusCode::OK, file.content).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_str(&file.tipo).unwrap_or(HeaderValue::from_static("application/octet-stream")),
    );
    if let Ok(disposition) = HeaderValue::from_str(&content_disposition(&file.nome)) {
        headers.insert(header::CONTENT_DISPOSITION, disposition);
    }
    if let Ok(etag) = HeaderValue::from_str(&format!("\"{}\"", file.sha256)) {
        headers.insert(header::ETAG, etag);
    }
    // A file is never rendered as a page of this origin.
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static("sandbox; default-src 'none'"));
    no_store(response)
}

/// `attachment` with the name as RFC 6266 allows: an ASCII fallback and the UTF-8 name percent-encoded.
fn content_disposition(name: &str) -> String {
    let fallback: String =
        name.chars().map(|c| if c.is_ascii_alphanumeric() || ".-_ ".contains(c) { c } else { '_' }).collect();
    format!("attachment; filename=\"{fallback}\"; filename*=UTF-8''{}", utf8_percent_encode(name, NON_ALPHANUMERIC))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_disposition_keeps_the_name_without_letting_it_break_the_header() {
        assert_eq!(
            content_disposition("diffida \"1\".pdf"),
            "attachment; filename=\"diffida _1_.pdf\"; filename*=UTF-8''diffida%20%221%22%2Epdf"
        );
        assert!(content_disposition("perché.pdf").starts_with("attachment; filename=\"perch_.pdf\""));
    }
}
