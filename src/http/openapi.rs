//! The OpenAPI 3.1 document of the API v1, generated from the handlers' `#[utoipa::path]` annotations and the
//! bodies' `ToSchema` derives. Adding a route to the document: annotate its handler with `#[utoipa::path]`
//! (every status it answers, errors with `body = Problem, content_type = "application/problem+json"`) and list
//! it in [`ApiDoc`]'s `paths(…)`. What every route shares is added here once, by [`finish`]: the rate-limit
//! headers on 2xx/4xx answers, 429 and 503 with `Retry-After`, `info.summary` and `x-api-id`.

use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use utoipa::OpenApi;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};

use super::problem::Problem;
use super::{agenda, api, attachments, esito, fascicolo, feeds, menu, operator, questionnaire, rule_sets, webhooks};

/// The document's version (SemVer, RAC_GEN_002): major = the `v1` of the base path.
pub const VERSION: &str = "1.0.0";

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Smart-Task API",
        version = "1.0.0",
        description = "Submit and follow Smart-Task requests; the riepilogo of a position (issue 12) and the Fascicolo of a subject; the operators' queue and decisions; the integrators' change feeds and webhooks; the promotion and approval of rule sets; the satisfaction questionnaire; the sedi's Agenda Appuntamenti.",
        terms_of_service = "https://www.inps.it/it/it/note-legali.html",
        contact(name = "Smart-Task back office", email = "smart-task@example.it", url = "https://www.inps.it"),
        license(name = "EUPL-1.2", identifier = "EUPL-1.2"),
    ),
    servers((url = "https://{host}/rest/smart-task/v1", description = "The daemon behind the agency's gateway",
        variables(("host" = (default = "api.example.it", description = "The public host name"))))),
    paths(
        api::submit, api::read, esito::esito_pdf, attachments::download, api::list, api::withdraw, api::message, api::riepilogo,
        menu::menu, fascicolo::search,
        operator::queue, operator::claim, operator::release, operator::close, operator::comment, operator::requeue,
        operator::redecide,
        feeds::events, feeds::effects, webhooks::create, webhooks::list, webhooks::remove,
        rule_sets::promote, rule_sets::list, rule_sets::read, rule_sets::approve,
        questionnaire::questions, questionnaire::answer, questionnaire::results,
        agenda::slots,
        serve
    ),
    components(schemas(Problem, crate::domain::request::Stato)),
    modifiers(&Bearer),
    security(("bearer" = [])),
    tags((name = "richieste", description = "Requests"), (name = "posizioni", description = "Positions"),
        (name = "menu", description = "The task types a requester may submit"),
        (name = "fascicolo", description = "The Fascicolo Elettronico of a subject"),
        (name = "operatori", description = "The work of a sede's operators on the requests referred to them"),
        (name = "integratori", description = "Integrators: the change feeds and their webhook subscriptions"),
        (name = "regole", description = "Rule governance: promoted rule sets, their gates and approvals"),
        (name = "agenda", description = "The sedi's Agenda Appuntamenti: the slots that may be booked"),
        (name = "questionario", description = "The satisfaction questionnaire: anonymous answers, aggregate results"),
        (name = "documentazione", description = "This document"))
)]
struct ApiDoc;

struct Bearer;

impl utoipa::Modify for Bearer {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let scheme = HttpBuilder::new()
            .scheme(HttpAuthScheme::Bearer)
            .bearer_format("JWT")
            .description(Some("A JWT signed by a configured key (`api.auth`); the claim `ruolo` selects the role"))
            .build();
        openapi
            .components
            .get_or_insert_with(Default::default)
            .add_security_scheme("bearer", SecurityScheme::Http(scheme));
    }
}

/// `POST /richieste` as `multipart/form-data`: one request with its files.
#[derive(utoipa::ToSchema)]
#[allow(dead_code, reason = "describes the parts of a multipart body for the OpenAPI document: never built")]
pub struct RichiestaConAllegati {
    /// The request: one JSON object, as the `application/json` body would be (never a list).
    #[schema(max_length = 8388608)]
    pub richiesta: String,
    /// The files, each with its name (`filename`): PDF, JPEG, PNG, TIFF, or a ZIP of those; their type is read
    /// from their content. At most `intake.allegati.max_files` (3), `max_file_bytes` (3 MB) each.
    #[schema(value_type = Vec<String>, format = Binary, min_items = 1, max_items = 3, max_length = 3145728)]
    pub allegato: Vec<Vec<u8>>,
}

/// `POST /richieste/{id}/messaggi` as `multipart/form-data`: the text with files.
#[derive(utoipa::ToSchema)]
#[allow(dead_code, reason = "describes the parts of a multipart body for the OpenAPI document: never built")]
pub struct MessaggioConAllegati {
    /// Free text, as `testo` of the JSON body.
    #[schema(min_length = 1, max_length = 4000)]
    pub testo: String,
    /// The files, as for a request.
    #[schema(value_type = Vec<String>, format = Binary, min_items = 1, max_items = 3, max_length = 3145728)]
    pub allegato: Vec<Vec<u8>>,
}

/// `POST /richieste`'s body: one request or a list. Each request is validated against its task's schema in the
/// rule pack, so only the envelope is described here.
pub struct Submission;

impl utoipa::PartialSchema for Submission {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        let one: Value = json!({
            "type": "object",
            "required": ["task", "richiedente_cf", "profilo_richiedente"],
            "additionalProperties": true,
            "properties": {
                "task": {"type": "string", "maxLength": 1000},
                "richiedente_cf": {"type": "string", "maxLength": 16},
                "profilo_richiedente": {"type": "string", "maxLength": 1000},
                "matricola": {"type": "string", "maxLength": 10, "pattern": "^[0-9]{10}$"},
                "chiave_idempotenza": {"type": "string", "maxLength": 1000},
                "note": {"type": "string", "maxLength": 4000},
            }
        });
        let body = json!({"oneOf": [one.clone(), {"type": "array", "minItems": 1, "maxItems": 10000, "items": one}]});
        serde_json::from_value(body).unwrap_or_default()
    }
}

impl utoipa::ToSchema for Submission {}

fn problem_response(description: &str) -> Value {
    json!({
        "description": description,
        "headers": { "Retry-After": {"$ref": "#/components/headers/Retry-After"} },
        "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}
    })
}

/// Gives `maxLength` to the strings whose length their `format` already fixes (AgID sec-string-maxlength asks a
/// bound of every string; RFC 3339 bounds dates and instants, so the bound is stated once here, not per field).
fn bound_formatted_strings(node: &mut Value) {
    match node {
        Value::Object(map) => {
            let is_string = match map.get("type") {
                Some(Value::String(t)) => t == "string",
                Some(Value::Array(types)) => types.iter().any(|t| t == "string"),
                _ => false,
            };
            let bound = match map.get("format").and_then(Value::as_str) {
                Some("date") => Some(10),      // 2026-12-03
                Some("date-time") => Some(35), // 2026-12-03T08:09:32.420123456+01:00
                _ => None,
            };
            if let (true, Some(bound)) = (is_string, bound) {
                map.entry("maxLength").or_insert_with(|| json!(bound));
            }
            map.values_mut().for_each(bound_formatted_strings);
        }
        Value::Array(items) => items.iter_mut().for_each(bound_formatted_strings),
        _ => {}
    }
}

/// What every operation shares, added to the generated document.
fn finish(doc: &mut Value) {
    bound_formatted_strings(doc);
    doc["info"]["summary"] = json!("Smart-Task requests of the social-security back office");
    doc["info"]["x-api-id"] = json!("7a0c3a1e-5d1b-4f3e-9a8e-2f6b1c9d4e11");
    let seconds = |d: &str| json!({"description": d, "schema": {"type": "integer", "format": "int32", "minimum": 0}});
    doc["components"]["headers"] = json!({
        "X-RateLimit-Limit": seconds("Requests allowed in the current window"),
        "X-RateLimit-Remaining": seconds("Requests left in the current window"),
        "X-RateLimit-Reset": seconds("Seconds until the window resets"),
        "Retry-After": seconds("Seconds to wait before trying again"),
        "Location": {"description": "The resource created", "schema": {"type": "string", "format": "uri-reference", "maxLength": 4096}},
        "ETag": {"description": "Strong validator of the representation", "schema": {"type": "string", "maxLength": 64}},
    });
    let Some(paths) = doc["paths"].as_object_mut() else { return };
    for item in paths.values_mut() {
        let Some(item) = item.as_object_mut() else { continue };
        for op in item.values_mut() {
            let Some(responses) = op.get_mut("responses").and_then(Value::as_object_mut) else { continue };
            responses.insert("429".into(), problem_response("Too many requests: retry after `Retry-After` seconds"));
            responses.insert("503".into(), problem_response("Overloaded or the database is unreachable: retry later"));
            for (status, response) in responses.iter_mut() {
                let headers = response.as_object_mut().map(|r| r.entry("headers").or_insert_with(|| json!({})));
                let Some(headers) = headers.and_then(Value::as_object_mut) else { continue };
                // The headers the macros named get their schema from the components (one definition each).
                for (name, header) in headers.iter_mut() {
                    *header = json!({"$ref": format!("#/components/headers/{name}")});
                }
                if status.starts_with('2') || status.starts_with('4') {
                    for name in ["X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset"] {
                        headers.insert(name.into(), json!({"$ref": format!("#/components/headers/{name}")}));
                    }
                }
            }
        }
    }
}

/// The document, pretty-printed (what `docs/openapi.json` holds and `smart-taskd openapi` prints).
pub fn document() -> String {
    let mut doc = serde_json::to_value(ApiDoc::openapi()).unwrap_or_default();
    finish(&mut doc);
    serde_json::to_string_pretty(&doc).unwrap_or_default() + "\n"
}

#[utoipa::path(
    get, path = "/openapi.json", tag = "documentazione", operation_id = "documento_openapi", security(()),
    responses((status = 200, description = "This document", content_type = "application/json"))
)]
/// `GET /openapi.json`: this document (no authentication).
pub async fn serve() -> Response {
    static DOCUMENT: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let body = DOCUMENT.get_or_init(document).clone();
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}
