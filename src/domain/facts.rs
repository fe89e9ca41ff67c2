//! Reference data (domain.md §9.4): the import format, and the facts rules read, grouped by subject.
//!
//! Facts are grouped by *subject* (a matricola, a codice fiscale, a sede, or the open requests of one task
//! for one subject). Every subject has a version that any change to it bumps; a decision records the version
//! of each subject it read, and the closing transaction refuses the decision if one of them moved.

use serde::{Deserialize, Serialize};

use super::request::FieldError;
use super::time::is_iso_date;
use super::validators;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sede {
    pub codice: String,
    pub denominazione: String,
    pub provincia: String,
    pub email: String,
}

/// The schema of a list of short strings of a facts file (each bounded by `intake.limits.max_field_chars`).
fn short_strings() -> utoipa::openapi::schema::Array {
    let item =
        utoipa::openapi::ObjectBuilder::new().schema_type(utoipa::openapi::schema::Type::String).max_length(Some(1000));
    utoipa::openapi::schema::ArrayBuilder::new().items(item).min_items(Some(0)).max_items(Some(100)).build()
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Azienda {
    #[schema(max_length = 1000)]
    pub matricola: String,
    #[schema(max_length = 1000)]
    pub cf: String,
    #[schema(max_length = 1000)]
    pub ragione_sociale: String,
    #[schema(max_length = 1000)]
    pub sede: String,
    #[serde(default)]
    #[schema(max_length = 1000)]
    pub pec_registro_imprese: Option<String>,
    #[serde(default)]
    #[schema(schema_with = short_strings)]
    pub rappresentanti_legali: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Persona {
    pub cf: String,
    pub nome: String,
    pub cognome: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Intermediario {
    pub cf: String,
    pub categoria: String,
    #[serde(default)]
    pub albo: Option<String>,
    /// The sede it belongs to: where its requests that name no position go.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sede: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TipoDelega {
    Intermediario,
    Dipendente,
    Subdelega,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum StatoDelega {
    Attiva,
    Revocata,
    Scaduta,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Delega {
    #[schema(max_length = 1000)]
    pub id: String,
    #[schema(max_length = 1000)]
    pub matricola: String,
    #[schema(max_length = 1000)]
    pub delegato_cf: String,
    pub tipo: TipoDelega,
    pub stato: StatoDelega,
    #[schema(format = Date)]
    pub data_inizio: String,
    #[serde(default)]
    #[schema(format = Date)]
    pub data_fine: Option<String>,
    #[serde(default)]
    #[schema(format = Date)]
    pub data_revoca: Option<String>,
    #[serde(default)]
    #[schema(max_length = 1000)]
    pub padre: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TipoContatto {
    Email,
    Pec,
    Cellulare,
    Telefono,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum StatoContatto {
    Valido,
    Anomalo,
    Disabilitato,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Contatto {
    #[schema(max_length = 1000)]
    pub id: String,
    #[schema(max_length = 1000)]
    pub titolare_cf: String,
    #[serde(default)]
    #[schema(max_length = 1000)]
    pub matricola: Option<String>,
    pub tipo: TipoContatto,
    #[schema(max_length = 1000)]
    pub valore: String,
    #[serde(default)]
    #[schema(schema_with = short_strings)]
    pub uso: Vec<String>,
    pub stato: StatoContatto,
    #[serde(default)]
    #[schema(max_length = 1000)]
    pub anomalia: Option<String>,
    #[serde(default)]
    #[schema(max_length = 1000)]
    pub valid_from: Option<String>,
    #[serde(default)]
    #[schema(max_length = 1000)]
    pub valid_to: Option<String>,
}

/// A reference-data file, `version: 1` (domain.md §9.4). Records are upserted by their key.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImportFile {
    pub version: u32,
    /// When the archive extracted the file (RFC 3339 with offset). A delega or contact an accepted request
    /// changed after this instant is kept as the request left it; a file without one never reverts an effect.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<chrono::DateTime<chrono::FixedOffset>>,
    #[serde(default)]
    pub sedi: Vec<Sede>,
    #[serde(default)]
    pub aziende: Vec<Azienda>,
    #[serde(default)]
    pub persone: Vec<Persona>,
    #[serde(default)]
    pub intermediari: Vec<Intermediario>,
    #[serde(default)]
    pub deleghe: Vec<Delega>,
    #[serde(default)]
    pub contatti: Vec<Contatto>,
}

/// The only import format version this build reads.
pub const IMPORT_VERSION: u32 = 1;

/// A problem with one record of an import file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{record}: {error}")]
pub struct RecordError {
    /// e.g. `deleghe[2] (id D-3)`.
    pub record: String,
    pub error: FieldError,
}

fn rec(section: &str, index: usize, key: &str) -> String {
    format!("{section}[{index}] ({key})")
}

/// The field that identifies a record of a section of an import file.
fn key_field(section: &str) -> &'static str {
    match section {
        "sedi" => "codice",
        "aziende" => "matricola",
        "persone" | "intermediari" => "cf",
        _ => "id",
    }
}

/// A record of an import file as errors name it, from its untyped form: `deleghe[2] (id D-3)`, or
/// `deleghe[2]` when it has no readable key.
pub fn record_name(section: &str, index: usize, record: &serde_json::Value) -> String {
    let field = key_field(section);
    match record.get(field).and_then(serde_json::Value::as_str) {
        Some(key) => rec(section, index, &format!("{field} {key}")),
        None => format!("{section}[{index}]"),
    }
}

fn check(ok: bool, record: &str, field: &str, problem: impl Into<String>) -> Result<(), RecordError> {
    if ok { Ok(()) } else { Err(RecordError { record: record.to_string(), error: FieldError::new(field, problem) }) }
}

fn check_cf(record: &str, field: &str, cf: &str) -> Result<(), RecordError> {
    check(
        validators::cf_or_partita_iva(cf),
        record,
        field,
        format!("`{cf}` is not a valid codice fiscale (16 characters) or partita IVA (11 digits)"),
    )
}

fn check_date(record: &str, field: &str, date: Option<&str>) -> Result<(), RecordError> {
    match date {
        Some(d) => check(is_iso_date(d), record, field, format!("`{d}` is not a date (expected YYYY-MM-DD)")),
        None => Ok(()),
    }
}

impl ImportFile {
    /// Normalises codes to upper case and checks every record's formats and the references inside the file.
    /// References to records already in the database (a delega's `padre`, an azienda's `sede`) are checked by
    /// the store, inside the import transaction.
    pub fn normalise_and_check(&mut self) -> Result<(), RecordError> {
        check(
            self.version == IMPORT_VERSION,
            "file",
            "version",
            format!("unsupported version {} (this build reads version {IMPORT_VERSION})", self.version),
        )?;
        for (i, s) in self.sedi.iter().enumerate() {
            let r = rec("sedi", i, &format!("codice {}", s.codice));
            check(validators::codice_sede(&s.codice), &r, "codice", "expected 4 digits")?;
            check(validators::email(&s.email).is_some(), &r, "email", "not a valid e-mail address")?;
        }
        for (i, a) in self.aziende.iter_mut().enumerate() {
            let r = rec("aziende", i, &format!("matricola {}", a.matricola));
            check(validators::matricola(&a.matricola), &r, "matricola", "expected 10 digits, as a quoted string")?;
            check(
                validators::partita_iva(&a.cf).is_ok(),
                &r,
                "cf",
                format!("`{}` is not a valid 11-digit codice fiscale", a.cf),
            )?;
            check(validators::codice_sede(&a.sede), &r, "sede", "expected the 4-digit codice of a sede")?;
            for (j, cf) in a.rappresentanti_legali.iter_mut().enumerate() {
                *cf = cf.trim().to_uppercase();
                check_cf(&r, &format!("rappresentanti_legali[{j}]"), cf)?;
            }
        }
        for (i, p) in self.persone.iter_mut().enumerate() {
            p.cf = p.cf.trim().to_uppercase();
            let r = rec("persone", i, &format!("cf {}", p.cf));
            check(validators::codice_fiscale(&p.cf).is_ok(), &r, "cf", "not a valid personal codice fiscale")?;
        }
        for (i, m) in self.intermediari.iter_mut().enumerate() {
            m.cf = m.cf.trim().to_uppercase();
            let r = rec("intermediari", i, &format!("cf {}", m.cf));
            check_cf(&r, "cf", &m.cf)?;
            if let Some(sede) = &m.sede {
                check(validators::codice_sede(sede), &r, "sede", "expected the 4-digit codice of a sede")?;
            }
        }
        for (i, d) in self.deleghe.iter_mut().enumerate() {
            d.delegato_cf = d.delegato_cf.trim().to_uppercase();
            let r = rec("deleghe", i, &format!("id {}", d.id));
            check(!d.id.trim().is_empty(), &r, "id", "missing: expected a unique id")?;
            check(validators::matricola(&d.matricola), &r, "matricola", "expected 10 digits, as a quoted string")?;
            check_cf(&r, "delegato_cf", &d.delegato_cf)?;
            check_date(&r, "data_inizio", Some(&d.data_inizio))?;
            check_date(&r, "data_fine", d.data_fine.as_deref())?;
            check_date(&r, "data_revoca", d.data_revoca.as_deref())?;
            check(
                (d.tipo == TipoDelega::Subdelega) == d.padre.is_some(),
                &r,
                "padre",
                "a SUBDELEGA needs `padre` (the id of the delega it depends on); other kinds must not have one",
            )?;
        }
        for (i, c) in self.contatti.iter_mut().enumerate() {
            c.titolare_cf = c.titolare_cf.trim().to_uppercase();
            let r = rec("contatti", i, &format!("id {}", c.id));
            check(!c.id.trim().is_empty(), &r, "id", "missing: expected a unique id")?;
            check_cf(&r, "titolare_cf", &c.titolare_cf)?;
            if let Some(m) = &c.matricola {
                check(validators::matricola(m), &r, "matricola", "expected 10 digits, as a quoted string")?;
            }
            let normalised = match c.tipo {
                TipoContatto::Email | TipoContatto::Pec => validators::email(&c.valore),
                TipoContatto::Cellulare => validators::mobile_e164(&c.valore),
                TipoContatto::Telefono => Some(c.valore.trim().to_string()),
            };
            // A legacy value the delivery log already flagged as malformed is kept as it is, so that it can
            // be found and deleted (CANCELLAZIONE_CONTATTI_ANOMALI_NDR).
            let flagged_malformed =
                c.stato == StatoContatto::Anomalo && c.anomalia.as_deref() == Some("FORMATO_NON_VALIDO");
            match normalised {
                Some(v) => c.valore = v,
                None if flagged_malformed => c.valore = c.valore.trim().to_string(),
                None => check(
                    false,
                    &r,
                    "valore",
                    format!(
                        "not a valid value for a contact of type {:?} (a malformed legacy value needs stato: ANOMALO, anomalia: FORMATO_NON_VALIDO)",
                        c.tipo
                    ),
                )?,
            }
            check_date(&r, "valid_from", c.valid_from.as_deref())?;
            check_date(&r, "valid_to", c.valid_to.as_deref())?;
        }
        no_duplicates("sedi", "codice", self.sedi.iter().map(|s| s.codice.as_str()))?;
        no_duplicates("aziende", "matricola", self.aziende.iter().map(|a| a.matricola.as_str()))?;
        no_duplicates("persone", "cf", self.persone.iter().map(|p| p.cf.as_str()))?;
        no_duplicates("intermediari", "cf", self.intermediari.iter().map(|m| m.cf.as_str()))?;
        no_duplicates("deleghe", "id", self.deleghe.iter().map(|d| d.id.as_str()))?;
        no_duplicates("contatti", "id", self.contatti.iter().map(|c| c.id.as_str()))?;
        self.no_padre_cycles()
    }

    /// Refuses a chain of `padre` inside the file that comes back to where it started.
    fn no_padre_cycles(&self) -> Result<(), RecordError> {
        let padre: std::collections::HashMap<&str, &str> =
            self.deleghe.iter().filter_map(|d| d.padre.as_deref().map(|p| (d.id.as_str(), p))).collect();
        for (i, d) in self.deleghe.iter().enumerate() {
            let mut chain = vec![d.id.as_str()];
            let mut at = d.id.as_str();
            while let Some(&next) = padre.get(at) {
                if next == d.id {
                    chain.push(next);
                    let r = rec("deleghe", i, &format!("id {}", d.id));
                    return check(false, &r, "padre", format!("cyclic chain of padre: {}", chain.join(" -> ")));
                }
                if chain.contains(&next) {
                    break; // a cycle not through this delega: reported from one of its own records
                }
                chain.push(next);
                at = next;
            }
        }
        Ok(())
    }
}

/// Refuses a key that two records of one section share, naming both: `deleghe[3] (id D-3) duplicates deleghe[1]`.
fn no_duplicates<'a>(section: &str, key: &str, keys: impl Iterator<Item = &'a str>) -> Result<(), RecordError> {
    let mut seen = std::collections::HashMap::new();
    for (i, k) in keys.enumerate() {
        if let Some(first) = seen.insert(k, i) {
            let r = rec(section, i, &format!("{key} {k}"));
            return check(false, &r, key, format!("duplicates {section}[{first}]: every {key} once per file"));
        }
    }
    Ok(())
}

/// A subject whose facts a rule can read; its `Display` form is the key of `subject_versions`.
///
/// Subjects are as narrow as the reads of rules: a company's record, its deleghe and its contacts are three
/// subjects, so that revoking a delega does not invalidate a decision that only read contacts.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Subject {
    /// The company record of a matricola.
    Azienda(String),
    /// Every delega on a matricola.
    DelegheAzienda(String),
    /// The contacts bound to a matricola.
    ContattiAzienda(String),
    /// A person (and their intermediary registration) by codice fiscale.
    Persona(String),
    /// Every delega a codice fiscale holds.
    DelegheDelegato(String),
    /// Every contact of a holder (codice fiscale or numeric CF).
    ContattiTitolare(String),
    Sede(String),
    /// The open requests of one task type for one subject.
    Open {
        task: String,
        soggetto: String,
    },
}

impl std::fmt::Display for Subject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Subject::Azienda(m) => write!(f, "az:{m}"),
            Subject::DelegheAzienda(m) => write!(f, "dm:{m}"),
            Subject::ContattiAzienda(m) => write!(f, "cm:{m}"),
            Subject::Persona(cf) => write!(f, "p:{cf}"),
            Subject::DelegheDelegato(cf) => write!(f, "dp:{cf}"),
            Subject::ContattiTitolare(cf) => write!(f, "cp:{cf}"),
            Subject::Sede(s) => write!(f, "sede:{s}"),
            Subject::Open { task, soggetto } => write!(f, "open:{task}:{soggetto}"),
        }
    }
}

/// Another request of the same task for the same subject, not closed yet.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OpenRequest {
    pub id: i64,
    pub protocollo: String,
    pub creata_il: i64,
}

/// What a subject holds, as loaded from the store.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SubjectFacts {
    pub version: i64,
    pub azienda: Option<Azienda>,
    pub persona: Option<Persona>,
    pub intermediario: Option<Intermediario>,
    pub sede: Option<Sede>,
    /// The deleghe of a [`Subject::DelegheAzienda`] or a [`Subject::DelegheDelegato`].
    pub deleghe: Vec<Delega>,
    /// The contacts of a [`Subject::ContattiAzienda`] or a [`Subject::ContattiTitolare`].
    pub contatti: Vec<Contatto>,
    pub open_requests: Vec<OpenRequest>,
}

/// The subjects whose versions change when a delega changes.
pub fn delega_subjects(d: &Delega) -> [Subject; 2] {
    [Subject::DelegheAzienda(d.matricola.clone()), Subject::DelegheDelegato(d.delegato_cf.clone())]
}

/// The subjects whose versions change when a contact changes.
pub fn contatto_subjects(titolare_cf: &str, matricola: Option<&String>) -> Vec<Subject> {
    let mut out = vec![Subject::ContattiTitolare(titolare_cf.to_string())];
    out.extend(matricola.map(|m| Subject::ContattiAzienda(m.clone())));
    out
}

impl ImportFile {
    /// Every subject this import touches, whose version it must bump.
    pub fn touched_subjects(&self) -> Vec<Subject> {
        let mut out: Vec<Subject> = Vec::new();
        out.extend(self.sedi.iter().map(|s| Subject::Sede(s.codice.clone())));
        out.extend(self.aziende.iter().map(|a| Subject::Azienda(a.matricola.clone())));
        out.extend(self.persone.iter().map(|p| Subject::Persona(p.cf.clone())));
        out.extend(self.intermediari.iter().map(|i| Subject::Persona(i.cf.clone())));
        out.extend(self.deleghe.iter().flat_map(delega_subjects));
        out.extend(self.contatti.iter().flat_map(|c| contatto_subjects(&c.titolare_cf, c.matricola.as_ref())));
        out.sort();
        out.dedup();
        out
    }
}
