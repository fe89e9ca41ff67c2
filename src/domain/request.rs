//! Requests as submitted (domain.md §9.1) and as stored: envelope checks, subject key, protocol number.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Envelope fields reserved on every task; everything else in a request belongs to the task's input schema.
pub const ENVELOPE_FIELDS: &[&str] =
    &["task", "richiedente_cf", "profilo_richiedente", "matricola", "contatti_notifica", "chiave_idempotenza", "note"];

/// The field of a stored request that lists its files (set by intake from the files received, never by the
/// client): what rules read through `ctx.attachments()`.
pub const ATTACHMENTS_FIELD: &str = "allegati";

/// The requester's profile (`profilo_richiedente`).
pub const PROFILES: &[&str] = &["AZIENDA", "INTERMEDIARIO", "DIPENDENTE"];

/// Lifecycle states seen by the requester. `Annullata` is a request its requester withdrew: stored
/// `chiusa` with esito `annullata` (see [`Stato::stored`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Stato {
    Aperta,
    InCarico,
    Chiusa,
    Annullata,
}

impl Stato {
    /// Every state, in lifecycle order.
    pub const ALL: [Stato; 4] = [Stato::Aperta, Stato::InCarico, Stato::Chiusa, Stato::Annullata];

    pub fn as_str(self) -> &'static str {
        match self {
            Stato::Aperta => "aperta",
            Stato::InCarico => "in_carico",
            Stato::Chiusa => "chiusa",
            Stato::Annullata => "annullata",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Stato::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// How the state is stored: the `stato` column, and the esito it implies, if any.
    pub fn stored(self) -> (&'static str, Option<&'static str>) {
        match self {
            Stato::Annullata => ("chiusa", Some("annullata")),
            other => (other.as_str(), None),
        }
    }
}

/// Where the requester wants this request's notifications (`contatti_notifica`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContattiNotifica {
    #[serde(default)]
    pub email: Option<String>,
    #[serde(default)]
    pub cellulare: Option<String>,
    #[serde(default)]
    pub consenso_email: bool,
    #[serde(default)]
    pub consenso_sms: bool,
}

/// A field-level problem with a submitted request: which field, and what was expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("field `{field}`: {problem}")]
pub struct FieldError {
    pub field: String,
    pub problem: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, problem: impl Into<String>) -> Self {
        FieldError { field: field.into(), problem: problem.into() }
    }
}

/// The envelope of a request whose reserved fields passed their checks.
#[derive(Debug, Clone, PartialEq)]
pub struct Envelope {
    pub task: String,
    pub richiedente_cf: String,
    pub profilo_richiedente: String,
    pub matricola: Option<String>,
    pub contatti: ContattiNotifica,
    pub chiave_idempotenza: Option<String>,
}

fn string_field<'a>(obj: &'a Map<String, Value>, field: &str) -> Result<Option<&'a str>, FieldError> {
    match obj.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.as_str())),
        Some(other) => Err(FieldError::new(field, format!("expected a string, found {}", json_kind(other)))),
    }
}

fn required<'a>(obj: &'a Map<String, Value>, field: &str, what: &str) -> Result<&'a str, FieldError> {
    match string_field(obj, field)? {
        Some(s) if !s.trim().is_empty() => Ok(s),
        _ => Err(FieldError::new(field, format!("missing: expected {what}"))),
    }
}

/// The JSON type name of a value, for error messages.
pub fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a map",
    }
}

/// Checks the reserved envelope fields of one request (domain.md §9.1). Formal validity of codici fiscali is
/// not checked here: it is an istruttoria check (GEN-02) so that the requester gets a reasoned Non Accolta.
pub fn parse_envelope(obj: &Map<String, Value>) -> Result<Envelope, FieldError> {
    let task = required(obj, "task", "the task type id, e.g. REVOCA_DELEGA_INTERMEDIARIO")?.to_string();
    let richiedente_cf = required(obj, "richiedente_cf", "the requester's codice fiscale")?.trim().to_uppercase();
    if richiedente_cf.len() != 16 && richiedente_cf.len() != 11 {
        return Err(FieldError::new(
            "richiedente_cf",
            format!(
                "expected a codice fiscale of 16 characters (or 11 digits), found {} characters",
                richiedente_cf.len()
            ),
        ));
    }
    let profilo = required(obj, "profilo_richiedente", "one of AZIENDA, INTERMEDIARIO, DIPENDENTE")?;
    if !PROFILES.contains(&profilo) {
        return Err(FieldError::new(
            "profilo_richiedente",
            format!("`{profilo}` is not one of AZIENDA, INTERMEDIARIO, DIPENDENTE"),
        ));
    }
    let matricola = match string_field(obj, "matricola")? {
        Some(m) if super::validators::matricola(m) => Some(m.to_string()),
        Some(m) => {
            return Err(FieldError::new(
                "matricola",
                format!("expected 10 digits (as a quoted string: leading zeros count), found `{m}`"),
            ));
        }
        None => None,
    };
    let contatti = parse_contatti(obj.get("contatti_notifica"))?;
    let chiave_idempotenza = string_field(obj, "chiave_idempotenza")?.map(str::to_string);
    if let Some(k) = &chiave_idempotenza
        && (k.is_empty() || k.len() > 200)
    {
        return Err(FieldError::new("chiave_idempotenza", "expected a non-empty string of at most 200 characters"));
    }
    string_field(obj, "note")?;
    Ok(Envelope {
        task,
        richiedente_cf,
        profilo_richiedente: profilo.to_string(),
        matricola,
        contatti,
        chiave_idempotenza,
    })
}

fn parse_contatti(value: Option<&Value>) -> Result<ContattiNotifica, FieldError> {
    const FIELD: &str = "contatti_notifica";
    let Some(value) = value.filter(|v| !v.is_null()) else {
        return Ok(ContattiNotifica::default());
    };
    let mut contatti: ContattiNotifica = serde_json::from_value(value.clone()).map_err(|e| {
        FieldError::new(FIELD, format!("{e}; expected a map with email, cellulare, consenso_email, consenso_sms"))
    })?;
    if let Some(email) = &contatti.email {
        contatti.email = Some(super::validators::email(email).ok_or_else(|| {
            FieldError::new(format!("{FIELD}.email"), "not a valid e-mail address (expected name@domain.tld)")
        })?);
    }
    if let Some(cell) = &contatti.cellulare {
        contatti.cellulare = Some(super::validators::mobile_e164(cell).ok_or_else(|| {
            FieldError::new(
                format!("{FIELD}.cellulare"),
                "not an Italian mobile number (expected e.g. +39 347 1234567)",
            )
        })?);
    }
    if contatti.consenso_email && contatti.email.is_none() {
        return Err(FieldError::new(
            format!("{FIELD}.email"),
            "missing: consenso_email is true but no e-mail is given",
        ));
    }
    if contatti.consenso_sms && contatti.cellulare.is_none() {
        return Err(FieldError::new(
            format!("{FIELD}.cellulare"),
            "missing: consenso_sms is true but no mobile number is given",
        ));
    }
    Ok(contatti)
}

/// The subject a request is about: its matricola, else the first codice fiscale among the task fields, else
/// the requester. It keys "open requests of the same type for the same subject" (GEN-04) and the Fascicolo.
pub fn subject_key(env: &Envelope, obj: &Map<String, Value>) -> String {
    if let Some(m) = &env.matricola {
        return m.clone();
    }
    obj.iter()
        .filter(|(k, _)| k.starts_with("cf_"))
        .find_map(|(_, v)| v.as_str().map(|s| s.trim().to_uppercase()))
        .unwrap_or_else(|| env.richiedente_cf.clone())
}

/// Protocol number `<sede 4 digits>.<year>.<7-digit progressive>` (DESIGN.md §2).
pub fn protocol_number(sede: &str, year: i32, progressive: i64) -> String {
    format!("{sede}.{year}.{progressive:07}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap_or_default()
    }

    fn base() -> Value {
        json!({"task": "REVOCA_DELEGA_INTERMEDIARIO", "richiedente_cf": "rssmra80a01h501u",
               "profilo_richiedente": "AZIENDA", "matricola": "1234567890",
               "contatti_notifica": {"email": "Mario@Example.it", "cellulare": "347 123 4567",
                                     "consenso_email": true, "consenso_sms": true}})
    }

    #[test]
    fn envelope_normalises_contacts_and_cf() {
        let env = parse_envelope(&obj(base())).expect("valid envelope");
        assert_eq!(env.richiedente_cf, "RSSMRA80A01H501U");
        assert_eq!(env.contatti.email.as_deref(), Some("mario@example.it"));
        assert_eq!(env.contatti.cellulare.as_deref(), Some("+393471234567"));
    }

    #[test]
    fn envelope_errors_name_the_field() {
        let cases = [
            ("task", json!(null), "task"),
            ("profilo_richiedente", json!("CAF"), "profilo_richiedente"),
            ("matricola", json!(1234567890), "matricola"),
            ("matricola", json!("12345"), "matricola"),
            ("contatti_notifica", json!({"email": "x", "consenso_email": true}), "contatti_notifica.email"),
            ("contatti_notifica", json!({"consenso_sms": true}), "contatti_notifica.cellulare"),
            ("contatti_notifica", json!({"fax": "1"}), "contatti_notifica"),
        ];
        for (field, value, named) in cases {
            let mut v = base();
            v[field] = value;
            let err = parse_envelope(&obj(v)).expect_err(field);
            assert_eq!(err.field, named, "{err}");
        }
    }

    #[test]
    fn subject_is_matricola_then_cf_field() {
        let o = obj(base());
        let env = parse_envelope(&o).expect("valid");
        assert_eq!(subject_key(&env, &o), "1234567890");
        let mut v = base();
        v.as_object_mut().map(|m| m.remove("matricola"));
        v["cf_intermediario"] = json!("vrdgpp80a41h501y");
        let o = obj(v);
        let env = parse_envelope(&o).expect("valid");
        assert_eq!(subject_key(&env, &o), "VRDGPP80A41H501Y");
    }

    #[test]
    fn protocol_format() {
        assert_eq!(protocol_number("7000", 2026, 42), "7000.2026.0000042");
    }
}
