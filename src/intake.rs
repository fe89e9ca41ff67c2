//! Intake: parsing submitted requests (JSON or YAML, one or a list), checking the envelope and the task's
//! input schema, normalising. Every problem names the request and the field; a submission with any
//! problem is refused whole, so nothing of it is queued.

use serde_json::{Map, Value};

use crate::domain::request::{self, ENVELOPE_FIELDS, FieldError};
use crate::rules::RuleSet;
use crate::store::NewRequest;

/// A problem with one request of a submission.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{source_name}: {position}: {error}")]
pub struct IntakeError {
    pub source_name: String,
    /// e.g. `request 3 of 5`.
    pub position: String,
    pub error: FieldError,
}

/// Parses a submission: a JSON document if it starts with `{` or `[`, else YAML.
pub fn parse_submission(text: &str, source_name: &str) -> Result<Vec<Map<String, Value>>, IntakeError> {
    let whole = |problem: String| IntakeError {
        source_name: source_name.to_string(),
        position: "document".into(),
        error: FieldError::new("(document)", problem),
    };
    let trimmed = text.trim_start();
    let value: Value = if trimmed.starts_with('{') || trimmed.starts_with('[') {
        serde_json::from_str(text).map_err(|e| whole(format!("not valid JSON: {e}")))?
    } else {
        serde_saphyr::from_str(text).map_err(|e| whole(format!("not valid YAML: {e}")))?
    };
    let items = match value {
        Value::Array(items) => items,
        Value::Object(_) => vec![value],
        other => {
            return Err(whole(format!(
                "expected a request (a map) or a list of requests, found {}",
                request::json_kind(&other)
            )));
        }
    };
    if items.is_empty() {
        return Err(whole("the list of requests is empty".into()));
    }
    let total = items.len();
    items
        .into_iter()
        .enumerate()
        .map(|(i, item)| match item {
            Value::Object(obj) => Ok(obj),
            other => Err(IntakeError {
                source_name: source_name.to_string(),
                position: format!("request {} of {total}", i + 1),
                error: FieldError::new(
                    "(request)",
                    format!("expected a map of fields, found {}", request::json_kind(&other)),
                ),
            }),
        })
        .collect()
}

/// Checks and normalises one request against its task; every schema problem is reported.
pub fn validate(mut obj: Map<String, Value>, rules: &RuleSet) -> Result<NewRequest, Vec<FieldError>> {
    let envelope = request::parse_envelope(&obj).map_err(|e| vec![e])?;
    let rule = rules.get(&envelope.task).ok_or_else(|| {
        let known: Vec<&str> = rules.tasks.keys().map(String::as_str).collect();
        vec![FieldError::new("task", format!("unknown task `{}` (known: {})", envelope.task, known.join(", ")))]
    })?;
    if rule.requires_matricola && envelope.matricola.is_none() {
        return Err(vec![FieldError::new(
            "matricola",
            format!("missing: task {} requires the matricola of the position (10 digits)", rule.id),
        )]);
    }
    // Codici fiscali are compared by rules: store them trimmed and upper-case.
    for (key, value) in obj.iter_mut() {
        if key.starts_with("cf_")
            && let Value::String(s) = value
        {
            *s = s.trim().to_uppercase();
        }
    }
    let task_fields: Map<String, Value> = obj
        .iter()
        .filter(|(k, _)| !ENVELOPE_FIELDS.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let task_value = Value::Object(task_fields);
    let mut errors: Vec<FieldError> = rule.schema.iter_errors(&task_value).map(|e| schema_error(&e)).collect();
    if !rule.at_least_one_of.is_empty()
        && !rule.at_least_one_of.iter().any(|f| task_value.get(f).is_some_and(|v| !v.is_null()))
    {
        errors.push(FieldError::new(
            rule.at_least_one_of.join("|"),
            format!("empty change set: give at least one of {}", rule.at_least_one_of.join(", ")),
        ));
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    obj.insert("richiedente_cf".into(), envelope.richiedente_cf.clone().into());
    obj.insert("contatti_notifica".into(), serde_json::to_value(&envelope.contatti).unwrap_or(Value::Null));
    let soggetto = request::subject_key(&envelope, &obj);
    Ok(NewRequest { envelope, payload: obj, soggetto })
}

fn schema_error(err: &jsonschema::ValidationError<'_>) -> FieldError {
    use jsonschema::error::ValidationErrorKind as K;
    let path = err.instance_path().as_str().trim_start_matches('/').replace('/', ".");
    let field = match err.kind() {
        K::Required { property } => property.as_str().map(str::to_string).unwrap_or_default(),
        K::AdditionalProperties { unexpected } => unexpected.first().cloned().unwrap_or_default(),
        _ => path,
    };
    let problem = match err.kind() {
        K::Required { .. } => "missing: this task requires it".to_string(),
        K::AdditionalProperties { .. } => {
            "unknown field for this task (check the spelling against the task's schema)".to_string()
        }
        K::Format { format } if format == "date" => format!("{} is not a date: expected YYYY-MM-DD", err.instance()),
        K::Enum { options } => format!("{} is not one of {options}", err.instance()),
        _ => err.to_string(),
    };
    FieldError::new(if field.is_empty() { "(request)".to_string() } else { field }, problem)
}

/// Validates every request of a submission; all problems are reported, and any problem refuses the whole.
pub fn validate_all(
    items: Vec<Map<String, Value>>,
    rules: &RuleSet,
    source_name: &str,
) -> Result<Vec<NewRequest>, Vec<IntakeError>> {
    let total = items.len();
    let mut ok = Vec::with_capacity(total);
    let mut errors = Vec::new();
    for (i, item) in items.into_iter().enumerate() {
        match validate(item, rules) {
            Ok(r) => ok.push(r),
            Err(found) => errors.extend(found.into_iter().map(|error| IntakeError {
                source_name: source_name.to_string(),
                position: format!("request {} of {total}", i + 1),
                error,
            })),
        }
    }
    if errors.is_empty() { Ok(ok) } else { Err(errors) }
}
