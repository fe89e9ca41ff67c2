//! `questionario:` — the satisfaction questionnaire offered to professional requesters after a close. Closed
//! questions only (a 1–5 scale or a choice among options): free text could carry a name, a codice fiscale or a
//! protocol number, and the answers must stay anonymous.

use std::collections::BTreeSet;
use std::path::Path;

use serde::Deserialize;

use super::ConfigError;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuestionnaireConfig {
    /// The questions, in order.
    pub domande: Vec<Question>,
    /// Groups (task type, category, month) with fewer answers are never shown.
    #[serde(default = "default_min_group")]
    pub gruppo_minimo: u32,
    /// How long a link stays valid.
    #[serde(default = "default_validity_days")]
    pub validita_giorni: u32,
    /// The portal page the link opens; the token goes in the URL fragment (`#t=…`), never in a query string.
    pub link_base: String,
    /// The requester categories invited: an intermediary's registered `categoria`, else the requester's profile.
    #[serde(default = "default_categories")]
    pub categorie: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(try_from = "QuestionSpec")]
pub struct Question {
    pub id: String,
    /// The question, in Italian.
    pub testo: String,
    pub kind: QuestionKind,
}

/// The closed set of question kinds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QuestionKind {
    /// An integer from 1 to 5.
    Scala,
    /// One of the options.
    Scelta { opzioni: Vec<String> },
}

/// A question as written: `tipo` and, for `scelta` only, `opzioni` (serde cannot refuse unknown keys of a
/// flattened internally tagged enum, so the kind is built after reading).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct QuestionSpec {
    id: String,
    testo: String,
    tipo: QuestionType,
    opzioni: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "snake_case")]
enum QuestionType {
    Scala,
    Scelta,
}

impl TryFrom<QuestionSpec> for Question {
    type Error = &'static str;

    fn try_from(spec: QuestionSpec) -> Result<Question, &'static str> {
        let kind = match (spec.tipo, spec.opzioni) {
            (QuestionType::Scala, None) => QuestionKind::Scala,
            (QuestionType::Scala, Some(_)) => return Err("`opzioni` belongs to `tipo: scelta` (a scala is 1 to 5)"),
            (QuestionType::Scelta, Some(opzioni)) => QuestionKind::Scelta { opzioni },
            (QuestionType::Scelta, None) => return Err("`tipo: scelta` needs its `opzioni`"),
        };
        Ok(Question { id: spec.id, testo: spec.testo, kind })
    }
}

fn default_min_group() -> u32 {
    5
}

fn default_validity_days() -> u32 {
    30
}

fn default_categories() -> Vec<String> {
    ["CONSULENTE_LAVORO", "COMMERCIALISTA", "ASSOCIAZIONE_CATEGORIA", "AVVOCATO"].map(String::from).into()
}

fn is_code(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Checks a questionnaire block: each error names the field and what is expected.
pub(super) fn check_questionnaire(q: &QuestionnaireConfig, path: &Path) -> Result<(), ConfigError> {
    let invalid = |field: &'static str, problem: String| ConfigError::Invalid { path: path.into(), field, problem };
    if q.domande.is_empty() {
        return Err(invalid("questionario.domande", "at least one question is needed".into()));
    }
    let mut ids = BTreeSet::new();
    for (i, d) in q.domande.iter().enumerate() {
        if !is_code(&d.id) {
            return Err(invalid(
                "questionario.domande.id",
                format!("question {}: `{}` is not an id (letters, digits, `_`, at most 64)", i + 1, d.id),
            ));
        }
        if !ids.insert(d.id.as_str()) {
            return Err(invalid("questionario.domande.id", format!("question {}: `{}` appears twice", i + 1, d.id)));
        }
        if d.testo.trim().is_empty() {
            return Err(invalid("questionario.domande.testo", format!("question `{}`: the text is empty", d.id)));
        }
        if let QuestionKind::Scelta { opzioni } = &d.kind {
            let distinct: BTreeSet<_> = opzioni.iter().collect();
            if opzioni.len() < 2 || distinct.len() != opzioni.len() || opzioni.iter().any(|o| !is_code(o)) {
                return Err(invalid(
                    "questionario.domande.opzioni",
                    format!("question `{}`: at least two distinct option codes (letters, digits, `_`)", d.id),
                ));
            }
        }
    }
    if q.gruppo_minimo < 2 {
        return Err(invalid("questionario.gruppo_minimo", "must be at least 2 (a group of one is a person)".into()));
    }
    if q.validita_giorni == 0 || q.validita_giorni > 366 {
        return Err(invalid("questionario.validita_giorni", "days from 1 to 366".into()));
    }
    if !(q.link_base.starts_with("https://") || q.link_base.starts_with("http://")) || q.link_base.contains(['?', '#'])
    {
        return Err(invalid(
            "questionario.link_base",
            "an http(s) URL without query or fragment (the token is added as the fragment)".into(),
        ));
    }
    if q.categorie.is_empty() || q.categorie.iter().any(|c| !is_code(c)) {
        return Err(invalid("questionario.categorie", "a non-empty list of category codes".into()));
    }
    Ok(())
}
