//! `GET /questionario` (the questions), `POST /questionario/risposte` (a one-time token from the chiusura
//! e-mail's link and the answers) and `GET /questionario/risultati` (the aggregate, role `operazioni`): the
//! satisfaction questionnaire over `app::questionnaire`. The token travels in the body, never in a path or a
//! query string, and is never logged.

use std::collections::BTreeMap;

use axum::Router;
use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;

use super::AppState;
use super::api::no_store;
use super::auth::Authenticated;
use super::problem::Problem;
use crate::app::questionnaire as uc;
use crate::clock::now_ms;
use crate::config::{QuestionKind, QuestionnaireConfig};

/// A token and a few closed answers: a small body.
const BODY_LIMIT: usize = 16 * 1024;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/questionario", get(questions))
        .route("/questionario/risposte", post(answer))
        .route("/questionario/risultati", get(results))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
}

/// One question.
#[derive(Debug, Serialize, ToSchema)]
struct Domanda {
    #[schema(max_length = 64, pattern = "^[A-Za-z0-9_]{1,64}$")]
    id: String,
    /// The question, in Italian.
    #[schema(max_length = 1000)]
    testo: String,
    /// `scala`: an integer from 1 to 5; `scelta`: one of `opzioni`.
    #[schema(max_length = 6, pattern = "^(scala|scelta)$")]
    tipo: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(min_items = 2, max_items = 100)]
    opzioni: Option<Vec<Opzione>>,
}

/// An option code of a `scelta` question.
#[derive(Debug, Serialize, ToSchema)]
#[schema(value_type = String, max_length = 64, pattern = "^[A-Za-z0-9_]{1,64}$")]
struct Opzione(String);

/// The questionnaire.
#[derive(Debug, Serialize, ToSchema)]
struct Questionario {
    #[schema(min_items = 1, max_items = 100)]
    domande: Vec<Domanda>,
    /// Days a link stays valid after the chiusura e-mail.
    #[schema(minimum = 1, maximum = 366)]
    validita_giorni: u32,
}

/// The answers of one invitation.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct Risposte {
    /// The token of the link (`…#t=TOKEN`): 64 hex digits.
    #[schema(min_length = 64, max_length = 64, pattern = "^[0-9a-f]{64}$")]
    token: String,
    /// Question id → the answer: an integer 1–5 for a `scala`, an option code for a `scelta`. Questions may be
    /// left out; at least one answer.
    #[schema(schema_with = answer_map)]
    risposte: Map<String, Value>,
}

/// The aggregate of one (task, category, month) group.
#[derive(Debug, Serialize, ToSchema)]
struct Gruppo {
    #[schema(max_length = 1000)]
    task: String,
    #[schema(max_length = 64)]
    categoria: String,
    /// `YYYY-MM`.
    #[schema(max_length = 7, pattern = "^[0-9]{4}-[0-9]{2}$")]
    mese: String,
    /// Answer sets in the group (never fewer than `gruppo_minimo`).
    #[schema(minimum = 0)]
    risposte: u64,
    /// Question id → value given → how many gave it.
    #[schema(value_type = Object)]
    domande: BTreeMap<String, BTreeMap<String, u64>>,
}

/// The results: only groups of at least `gruppo_minimo` answer sets; the others are counted, not shown.
#[derive(Debug, Serialize, ToSchema)]
struct Risultati {
    #[schema(minimum = 2)]
    gruppo_minimo: u32,
    #[schema(min_items = 0, max_items = 100000)]
    gruppi: Vec<Gruppo>,
    /// Groups withheld for being smaller than `gruppo_minimo` (not their sizes).
    #[schema(minimum = 0)]
    gruppi_non_mostrati: u64,
}

fn answer_map() -> utoipa::openapi::schema::Object {
    use utoipa::openapi::RefOr;
    use utoipa::openapi::schema::{
        AdditionalProperties, KnownFormat, ObjectBuilder, OneOfBuilder, Schema, SchemaFormat, Type,
    };
    let scala = ObjectBuilder::new()
        .schema_type(Type::Integer)
        .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int32)))
        .minimum(Some(1))
        .maximum(Some(5));
    let scelta =
        ObjectBuilder::new().schema_type(Type::String).max_length(Some(64)).pattern(Some("^[A-Za-z0-9_]{1,64}$"));
    ObjectBuilder::new()
        .schema_type(Type::Object)
        .property_names(Some(
            ObjectBuilder::new().schema_type(Type::String).max_length(Some(64)).pattern(Some("^[A-Za-z0-9_]{1,64}$")),
        ))
        .additional_properties(Some(AdditionalProperties::RefOr(RefOr::T(Schema::OneOf(
            OneOfBuilder::new().item(scala).item(scelta).build(),
        )))))
        .min_properties(Some(1))
        .max_properties(Some(100))
        .description(Some("Question id → the answer"))
        .build()
}

fn configured(s: &AppState) -> Result<&QuestionnaireConfig, Problem> {
    s.questionario
        .as_deref()
        .ok_or_else(|| Problem::new(StatusCode::NOT_FOUND, "the questionnaire is not configured (questionario)"))
}

#[utoipa::path(
    get, path = "/questionario", tag = "questionario", operation_id = "leggi_questionario",
    responses(
        (status = 200, description = "The questions", body = Questionario),
        (status = 401, description = "No valid bearer token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No questionnaire is configured", body = Problem, content_type = "application/problem+json"),
    )
)]
/// `GET /questionario`: the questions, for whoever is authenticated.
pub(super) async fn questions(State(s): State<AppState>, Authenticated(_): Authenticated) -> Result<Response, Problem> {
    let config = configured(&s)?;
    let domande = config
        .domande
        .iter()
        .map(|q| {
            let (tipo, opzioni) = match &q.kind {
                QuestionKind::Scala => ("scala", None),
                QuestionKind::Scelta { opzioni } => ("scelta", Some(opzioni.iter().cloned().map(Opzione).collect())),
            };
            Domanda { id: q.id.clone(), testo: q.testo.clone(), tipo: tipo.into(), opzioni }
        })
        .collect();
    let body = Questionario { domande, validita_giorni: config.validita_giorni };
    Ok(no_store(axum::Json(body).into_response()))
}

#[utoipa::path(
    post, path = "/questionario/risposte", tag = "questionario", operation_id = "rispondi_questionario",
    request_body(content = Risposte, content_type = "application/json"),
    responses(
        (status = 204, description = "Stored, anonymously; the link is used up"),
        (status = 401, description = "No valid bearer token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not a requester", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No questionnaire is configured", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The link was used already, is not valid, or has expired", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Larger than 16 KiB", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not `application/json`", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Not the expected JSON, or answers that do not fit the questions, each named by its JSON Pointer (the link stays usable)", body = Problem, content_type = "application/problem+json"),
    )
)]
/// `POST /questionario/risposte` `{"token": …, "risposte": {id: value}}`.
pub(super) async fn answer(
    State(s): State<AppState>,
    Authenticated(actor): Authenticated,
    body: Result<axum::Json<Risposte>, JsonRejection>,
) -> Result<Response, Problem> {
    let config = configured(&s)?;
    let axum::Json(b) = body.map_err(|e| {
        let status = StatusCode::from_u16(e.status().as_u16()).unwrap_or(StatusCode::BAD_REQUEST);
        Problem::new(status, format!("expected {{\"token\": \"…\", \"risposte\": {{\"id\": …}}}}: {}", e.body_text()))
    })?;
    // A token of another shape cannot be one the daemon made: the same answer as an unknown one.
    if b.token.len() != 64 || !b.token.bytes().all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c)) {
        return Err(Problem::new(StatusCode::CONFLICT, "il link del questionario è già stato usato o non è valido"));
    }
    uc::answer(&s.store, &actor, config, &b.token, &b.risposte, now_ms()).await?;
    Ok(no_store(StatusCode::NO_CONTENT.into_response()))
}

#[utoipa::path(
    get, path = "/questionario/risultati", tag = "questionario", operation_id = "leggi_risultati_questionario",
    responses(
        (status = 200, description = "The groups of at least `gruppo_minimo` answer sets, and how many were withheld", body = Risultati),
        (status = 401, description = "No valid bearer token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not the role `operazioni`", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No questionnaire is configured", body = Problem, content_type = "application/problem+json"),
    )
)]
/// `GET /questionario/risultati`.
pub(super) async fn results(
    State(s): State<AppState>,
    Authenticated(actor): Authenticated,
) -> Result<Response, Problem> {
    let config = configured(&s)?;
    let r = uc::results(&s.store, &actor, config).await?;
    let gruppi = r
        .gruppi
        .into_iter()
        .map(|g| Gruppo {
            task: g.task,
            categoria: g.categoria,
            mese: g.mese,
            risposte: g.risposte,
            domande: g.domande,
        })
        .collect();
    let body = Risultati { gruppo_minimo: r.gruppo_minimo, gruppi, gruppi_non_mostrati: r.gruppi_non_mostrati };
    Ok(no_store(axum::Json(body).into_response()))
}
