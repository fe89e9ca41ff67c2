//! Intake: parsing submitted requests (JSON or YAML, one or a list), checking the envelope and the task's
//! input schema, normalising. Every problem names the request and the field; a submission with any
//! problem is refused whole, so nothing of it is queued.

use serde_json::{Map, Value};

use crate::config::IntakeLimits;
use crate::domain::request::{self, ATTACHMENTS_FIELD, ENVELOPE_FIELDS, FieldError};
use crate::rules::RuleSet;
use crate::store::NewRequest;

/// A problem with one request of a submission.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{source_name}: {position}: {error}")]
pub struct IntakeError {
    pub source_name: String,
    /// e.g. `request 3 of 5`.
    pub position: String,
    /// The request's index in a list (None for the document as a whole or a lone request).
    pub index: Option<usize>,
    pub error: FieldError,
}

/// Reads a whole document (a submission or a facts file), refusing it as soon as it grows past `limit`
/// bytes (`limit_name` is the configuration key that sets it): a huge input is never read whole.
pub fn read_document(
    reader: impl std::io::Read,
    limit: u64,
    limit_name: &str,
    source_name: &str,
) -> Result<String, DocumentError> {
    use std::io::Read;
    let mut bytes = Vec::new();
    reader
        .take(limit.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(|error| DocumentError::Read { source_name: source_name.to_string(), error })?;
    if bytes.len() as u64 > limit {
        return Err(DocumentError::TooLarge {
            source_name: source_name.to_string(),
            limit,
            limit_name: limit_name.into(),
        });
    }
    String::from_utf8(bytes).map_err(|e| DocumentError::NotUtf8 {
        source_name: source_name.to_string(),
        offset: e.utf8_error().valid_up_to(),
    })
}

/// A document that could not be read as text within its bound.
#[derive(Debug, thiserror::Error)]
pub enum DocumentError {
    #[error("cannot read {source_name}: {error}")]
    Read { source_name: String, error: std::io::Error },
    #[error(
        "{source_name}: larger than {limit} bytes (the limit `{limit_name}` of the configuration); nothing was read further"
    )]
    TooLarge { source_name: String, limit: u64, limit_name: String },
    #[error("{source_name}: not UTF-8 text (invalid byte at offset {offset})")]
    NotUtf8 { source_name: String, offset: usize },
}

/// One step of the path to a value inside a document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    Key(String),
    Index(usize),
}

/// The dotted form of a path below its first step: `contatti_notifica.email`, `uso[1]`.
pub fn dotted(path: &[Segment]) -> String {
    let mut out = String::new();
    for seg in path {
        match seg {
            Segment::Key(k) if out.is_empty() => out.push_str(k),
            Segment::Key(k) => {
                out.push('.');
                out.push_str(k);
            }
            Segment::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

/// Why a JSON text was refused by [`parse_json_strict`].
#[derive(Debug, thiserror::Error)]
pub enum StrictJsonError {
    #[error("not valid JSON: {0}")]
    Syntax(#[from] serde_json::Error),
    /// The path of the object holding the key twice, and the key.
    #[error("the key `{key}` appears twice in one object")]
    DuplicateKey { path: Vec<Segment>, key: String },
}

/// Parses JSON like `serde_json::from_str`, but refuses an object holding the same key twice (which
/// `serde_json` resolves silently, last wins; YAML refuses it too).
pub fn parse_json_strict(text: &str) -> Result<Value, StrictJsonError> {
    let duplicate = std::cell::RefCell::new(None);
    let mut de = serde_json::Deserializer::from_str(text);
    let value = serde::de::DeserializeSeed::deserialize(Strict { duplicate: &duplicate, path: Vec::new() }, &mut de);
    if let Some((path, key)) = duplicate.into_inner() {
        return Err(StrictJsonError::DuplicateKey { path, key });
    }
    let value = value?;
    de.end()?;
    Ok(value)
}

/// A `serde_json::Value` visitor that notes the first duplicate key (and keeps parsing, so that the
/// syntax of the rest is still checked).
struct Strict<'a> {
    duplicate: &'a std::cell::RefCell<Option<(Vec<Segment>, String)>>,
    path: Vec<Segment>,
}

impl Strict<'_> {
    fn child(&self, seg: Segment) -> Self {
        let mut path = self.path.clone();
        path.push(seg);
        Strict { duplicate: self.duplicate, path }
    }
}

impl<'de> serde::de::DeserializeSeed<'de> for Strict<'_> {
    type Value = Value;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for Strict<'_> {
    type Value = Value;
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(v.into())
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(v.into())
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_string()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(self.child(Segment::Index(items.len())))? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut obj = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            let value = map.next_value_seed(self.child(Segment::Key(key.clone())))?;
            if obj.contains_key(&key) {
                self.duplicate.borrow_mut().get_or_insert_with(|| (self.path.clone(), key));
            } else {
                obj.insert(key, value);
            }
        }
        Ok(Value::Object(obj))
    }
}

/// Parses a JSON (when it starts with `{` or `[`) or YAML document into a value; both refuse duplicate
/// keys. The problem is returned with the path where it was found.
pub fn parse_document(text: &str) -> Result<Value, (Vec<Segment>, String)> {
    let trimmed = text.trim_start();
    if trimmed.starts_with('{') || trimmed.starts_with('[') {
        parse_json_strict(text).map_err(|e| match e {
            StrictJsonError::DuplicateKey { mut path, key } => {
                path.push(Segment::Key(key));
                (path, "appears twice (a key may be given once)".to_string())
            }
            syntax => (Vec::new(), syntax.to_string()),
        })
    } else {
        serde_saphyr::from_str(text).map_err(|e| (Vec::new(), format!("not valid YAML: {e}")))
    }
}

/// A character a string field may not hold: every control character (C0, DEL, C1), except tab and line
/// breaks in free text (`free_text`).
pub fn forbidden_char(s: &str, free_text: bool) -> Option<(usize, char)> {
    s.chars().enumerate().find(|&(_, c)| c.is_control() && !(free_text && matches!(c, '\t' | '\n' | '\r')))
}

/// The problem with a string of a document, if any: a control character, or more than `max` characters.
fn string_problem(s: &str, free_text: bool, max: usize, limit_name: &str) -> Option<String> {
    if let Some((at, c)) = forbidden_char(s, free_text) {
        let allowed = if free_text { "only tab and line breaks are allowed" } else { "not allowed in this field" };
        return Some(format!("contains the control character U+{:04X} at character {}: {allowed}", c as u32, at + 1));
    }
    let n = s.chars().count();
    (n > max).then(|| format!("{n} characters, more than the limit of {max} (`{limit_name}` of the configuration)"))
}

/// Which strings may hold free text, and how long a string may be, by its path: `(free text, maximum
/// characters, the configuration key of that maximum)`.
pub type StringLimit<'a> = dyn Fn(&[Segment]) -> (bool, usize, &'static str) + 'a;

/// Checks every string of a map (and every key of its maps) for control characters and length; `path`
/// names the map. Returns the dotted path of the first offending string and the problem.
pub fn check_strings(
    obj: &Map<String, Value>,
    path: &mut Vec<Segment>,
    limit: &StringLimit<'_>,
) -> Result<(), (String, String)> {
    for (k, v) in obj {
        if forbidden_char(k, false).is_some() || k.chars().count() > MAX_KEY_CHARS {
            let mut named = path.clone();
            named.push(Segment::Key(format!("{:?}", k.chars().take(MAX_KEY_CHARS).collect::<String>())));
            return Err((dotted(&named), "not a field name: control characters or too long".into()));
        }
        path.push(Segment::Key(k.clone()));
        let r = check_value(v, path, limit);
        path.pop();
        r?;
    }
    Ok(())
}

fn check_value(value: &Value, path: &mut Vec<Segment>, limit: &StringLimit<'_>) -> Result<(), (String, String)> {
    match value {
        Value::String(s) => {
            let (free_text, max, name) = limit(path);
            string_problem(s, free_text, max, name).map_or(Ok(()), |problem| Err((dotted(path), problem)))
        }
        Value::Array(items) => items.iter().enumerate().try_for_each(|(i, item)| {
            path.push(Segment::Index(i));
            let r = check_value(item, path, limit);
            path.pop();
            r
        }),
        Value::Object(obj) => check_strings(obj, path, limit),
        _ => Ok(()),
    }
}

/// Field names are identifiers: longer ones are refused without being echoed whole.
const MAX_KEY_CHARS: usize = 64;

/// Parses a submission: a JSON document if it starts with `{` or `[`, else YAML; at most
/// `limits.max_requests` requests, every string field without control characters (tab and line breaks
/// only in `note`) and within its length limit. Every problem is reported.
pub fn parse_submission(
    text: &str,
    source_name: &str,
    limits: &IntakeLimits,
) -> Result<Vec<Map<String, Value>>, Vec<IntakeError>> {
    let whole = |problem: String| {
        vec![IntakeError {
            source_name: source_name.to_string(),
            position: "document".into(),
            index: None,
            error: FieldError::new("(document)", problem),
        }]
    };
    let value = match parse_document(text) {
        Ok(value) => value,
        Err((path, problem)) if path.is_empty() => return Err(whole(problem)),
        Err((path, problem)) => {
            // The path starts with the request's index in a list.
            let (position, index, field) = match path.split_first() {
                Some((Segment::Index(i), rest)) => (format!("request {}", i + 1), Some(*i), dotted(rest)),
                _ => ("request 1 of 1".to_string(), None, dotted(&path)),
            };
            return Err(vec![IntakeError {
                source_name: source_name.to_string(),
                position,
                index,
                error: FieldError::new(field, problem),
            }]);
        }
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
    if items.len() > limits.max_requests {
        return Err(whole(format!(
            "{} requests, more than the limit of {} (`intake.limits.max_requests` of the configuration): split the file",
            items.len(),
            limits.max_requests
        )));
    }
    let total = items.len();
    let limit = |path: &[Segment]| match path {
        [Segment::Key(k)] if k == "note" => (true, limits.max_note_chars, "intake.limits.max_note_chars"),
        _ => (false, limits.max_field_chars, "intake.limits.max_field_chars"),
    };
    let mut out = Vec::with_capacity(total);
    let mut errors = Vec::new();
    for (i, item) in items.into_iter().enumerate() {
        let at = |error| IntakeError {
            source_name: source_name.to_string(),
            position: format!("request {} of {total}", i + 1),
            index: Some(i),
            error,
        };
        match item {
            Value::Object(obj) => match check_strings(&obj, &mut Vec::new(), &limit) {
                Ok(()) => out.push(obj),
                Err((field, problem)) => errors.push(at(FieldError::new(field, problem))),
            },
            other => errors.push(at(FieldError::new(
                "(request)",
                format!("expected a map of fields, found {}", request::json_kind(&other)),
            ))),
        }
    }
    if errors.is_empty() { Ok(out) } else { Err(errors) }
}

/// Checks and normalises one request against its task; every schema problem is reported.
pub fn validate(mut obj: Map<String, Value>, rules: &RuleSet) -> Result<NewRequest, Vec<FieldError>> {
    let envelope = request::parse_envelope(&obj).map_err(|e| vec![e])?;
    if obj.contains_key(ATTACHMENTS_FIELD) {
        return Err(vec![FieldError::new(
            ATTACHMENTS_FIELD,
            "files are sent as files (the `allegato` parts of a multipart body, `submit --allegato FILE`), \
             not as a field of the request",
        )]);
    }
    let rule = rules.get(&envelope.task).ok_or_else(|| {
        let known: Vec<&str> = rules.tasks.keys().map(String::as_str).collect();
        vec![FieldError::new("task", format!("unknown task `{}` (known: {})", envelope.task, known.join(", ")))]
    })?;
    if !rule.profili.contains(&envelope.profilo_richiedente) {
        return Err(vec![FieldError::new(
            "profilo_richiedente",
            format!(
                "task {} may be submitted by the profiles {} only, not {}",
                rule.id,
                rule.profili.join(", "),
                envelope.profilo_richiedente
            ),
        )]);
    }
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
    Ok(NewRequest { envelope, payload: obj, soggetto, allegati: Vec::new() })
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
                index: Some(i),
                error,
            })),
        }
    }
    if errors.is_empty() { Ok(ok) } else { Err(errors) }
}
