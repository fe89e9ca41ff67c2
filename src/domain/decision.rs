//! What a rule decides: outcome, reasons, effects, and the trace that explains it.

use serde::{Deserialize, Serialize};

use super::facts::{Subject, TipoContatto};

/// The outcome of one evaluation of a rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Accolta,
    NonAccolta,
    /// Not decidable automatically (GEN-05): the request goes to an operator of the competent sede.
    Rinvio,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Accolta => "accolta",
            Outcome::NonAccolta => "non_accolta",
            Outcome::Rinvio => "rinvio",
        }
    }
}

/// A reason of a Non Accolta (or of a referral), with its message rendered from the task's catalogue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Reason {
    #[schema(max_length = 1000)]
    pub codice: String,
    #[schema(max_length = 8000)]
    pub messaggio: String,
}

/// An effect of an accepted request: data, from the closed set the daemon knows how to apply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "tipo", rename_all = "snake_case", deny_unknown_fields)]
pub enum Effect {
    /// Revoke a delega (and, in cascade, the sub-deleghe that depend on it) from a date on.
    RevokeDelegation { delegation_id: String, from: String },
    /// Replace a holder's contacts of the given types: the current ones in scope are archived (valid_to set,
    /// anomaly flags cleared) and the new values become valid from the day of the decision.
    ReplaceContacts { titolare_cf: String, ambito: Ambito, contatti: Vec<NewContact> },
    /// Disable contacts for notifications (soft delete: the rows and their anomaly stay for audit).
    DisableContacts { contact_ids: Vec<String>, motivo: String },
    /// Add a contact to a holder (bound to one position when `matricola` is given).
    AddContact {
        titolare_cf: String,
        #[serde(default)]
        matricola: Option<String>,
        #[serde(rename = "tipo_contatto")]
        kind: TipoContatto,
        valore: String,
        uso: Vec<String>,
    },
    /// Notify a counterparty (or a further address) of the closing, on a channel.
    Notify { channel: Channel, recipient: String, role: String },
}

/// The scope of a contact change: every position of the holder, or some positions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Ambito {
    /// `"TUTTE"`.
    Tutte(TutteLePosizioni),
    Matricole(Vec<String>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TutteLePosizioni {
    #[serde(rename = "TUTTE")]
    Tutte,
}

/// A new contact value of a [`Effect::ReplaceContacts`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewContact {
    pub tipo: TipoContatto,
    pub valore: String,
}

/// A notification channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    Email,
    Sms,
}

impl Channel {
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Email => "email",
            Channel::Sms => "sms",
        }
    }
}

/// The effect names a rule may use, for error messages.
pub const EFFECT_KINDS: &[&str] =
    &["revoke_delegation", "replace_contacts", "disable_contacts", "add_contact", "notify"];

/// The reference of each effect: its kind, an example of its arguments as a rule writes them, and what it
/// does. A unit test parses every example, so the reference cannot drift from [`Effect`].
pub const EFFECT_DOCS: &[(&str, &str, &str)] = &[
    (
        "revoke_delegation",
        r#"#{ delegation_id: "D-1", from: "2026-12-01" }"#,
        "Revokes the delega from the date on (REVOCATA, data_revoca) and, in cascade, its ATTIVA sub-deleghe. The rule must have read the position's deleghe.",
    ),
    (
        "replace_contacts",
        r#"#{ titolare_cf: "VRDGPP80A41H501Y", ambito: "TUTTE", contatti: [#{ tipo: "EMAIL", valore: "nuova@example.it" }] }"#,
        "For each new value: archives the holder's current contacts of that type in scope (valid_to set, anomaly cleared) and adds the new one, valid from the day of the decision. `ambito`: \"TUTTE\" or a list of matricole. The rule must have read ctx.contacts(titolare_cf).",
    ),
    (
        "disable_contacts",
        r#"#{ contact_ids: ["C-9"], motivo: "PEC_SATURA" }"#,
        "Disables contacts for notifications (soft delete: the row and its anomaly stay for audit). Never the PEC of the Registro Imprese.",
    ),
    (
        "add_contact",
        r#"#{ titolare_cf: "00000010017", matricola: "3456789012", tipo_contatto: "PEC", valore: "nuova@pec.it", uso: ["NDR"] }"#,
        "Adds a contact (bound to one position when `matricola` is given).",
    ),
    (
        "notify",
        r#"#{ channel: "email", recipient: "studio@pec.it", role: "intermediario" }"#,
        "Notifies a counterparty of the closing (`channel`: email or sms), beside the requester.",
    ),
];

/// One named check a rule ran (`check(code, cond)`), in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckRecord {
    pub codice: String,
    pub passed: bool,
    pub line: u32,
}

/// One fact a rule read through `ctx`, with the version of its subject at the time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FactRead {
    pub call: String,
    pub subject: Subject,
    pub version: i64,
    pub value: serde_json::Value,
}

/// Everything needed to explain and replay a decision.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Trace {
    pub checks: Vec<CheckRecord>,
    pub facts: Vec<FactRead>,
    pub today: String,
    pub operations: u64,
    /// In a replay: calls the original decision did not make, answered from the current data.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unrecorded: Vec<String>,
    /// In shadow mode: what the candidate version decided from the same facts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shadow: Option<ShadowDecision>,
    /// In dry-run mode: the outcome the rule reached (the request went to an operator instead).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dry_run: Option<Outcome>,
    /// A quesito the rule answered with a standard answer: the answer's code (its text is the decision's note).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub risposta: Option<String>,
}

/// What a shadow candidate decided, next to the active decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShadowDecision {
    pub version: String,
    /// None when the candidate failed (see `error`).
    pub outcome: Option<Outcome>,
    pub reasons: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// True when the outcome or the reason codes differ from the active decision's.
    pub disagrees: bool,
}

impl ShadowDecision {
    /// Compares a candidate's result with the active decision.
    pub fn compare(active: &Decision, version: &str, candidate: Result<&Decision, &RuleFailure>) -> ShadowDecision {
        let codes = |d: &Decision| d.reasons.iter().map(|r| r.codice.clone()).collect::<Vec<_>>();
        match candidate {
            Ok(c) => ShadowDecision {
                version: version.to_string(),
                outcome: Some(c.outcome),
                reasons: codes(c),
                error: None,
                disagrees: c.outcome != active.outcome || codes(c) != codes(active),
            },
            Err(f) => ShadowDecision {
                version: version.to_string(),
                outcome: None,
                reasons: Vec::new(),
                error: Some(format!("{}: {}", f.kind.as_str(), f.message)),
                disagrees: true,
            },
        }
    }
}

/// A rule's decision on one request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    pub outcome: Outcome,
    pub reasons: Vec<Reason>,
    pub effects: Vec<Effect>,
    pub rule_version: String,
    pub trace: Trace,
    pub duration_us: u64,
    /// An operator's note on a decision they made (None for rule decisions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nota: Option<String>,
}

impl Decision {
    /// The subjects this decision depends on, with the versions it saw (first read wins: one evaluation
    /// reads from one snapshot, so repeated reads carry the same version).
    pub fn read_versions(&self) -> impl Iterator<Item = (&Subject, i64)> {
        self.trace.facts.iter().map(|f| (&f.subject, f.version))
    }
}

/// Why a rule could not decide. Retried with backoff, then parked for an operator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleFailure {
    pub kind: FailureKind,
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    /// A runtime error in the script (or a bad effect, an unknown reason code).
    Error,
    /// The per-call wall-clock deadline passed.
    Timeout,
    /// The operation budget ran out (e.g. an infinite loop).
    Budget,
    /// No rule is loaded for the request's task.
    NoRule,
    /// The database refused to read this request's facts or to write its close (e.g. a value it cannot
    /// store): the request fails alone, its batch goes on.
    Database,
}

impl FailureKind {
    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::Error => "error",
            FailureKind::Timeout => "timeout",
            FailureKind::Budget => "budget",
            FailureKind::NoRule => "no_rule",
            FailureKind::Database => "database",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Turns a Rhai map literal of the reference into JSON (enough for the examples: plain keys and strings).
    fn rhai_to_json(example: &str) -> String {
        let mut out = example.replace("#{", "{");
        for key in [
            "delegation_id",
            "from",
            "titolare_cf",
            "ambito",
            "contatti",
            "tipo_contatto",
            "tipo",
            "valore",
            "contact_ids",
            "motivo",
            "matricola",
            "uso",
            "channel",
            "recipient",
            "role",
        ] {
            out = out.replace(&format!(" {key}:"), &format!(" \"{key}\":"));
        }
        out
    }

    #[test]
    fn every_effect_of_the_reference_parses_as_documented() {
        let kinds: Vec<&str> = EFFECT_DOCS.iter().map(|(k, _, _)| *k).collect();
        assert_eq!(kinds, EFFECT_KINDS);
        for (kind, example, _) in EFFECT_DOCS {
            let mut value: serde_json::Value = serde_json::from_str(&rhai_to_json(example)).expect(example);
            value["tipo"] = serde_json::Value::from(*kind);
            serde_json::from_value::<Effect>(value).unwrap_or_else(|e| panic!("{kind}: {e}"));
        }
    }
}
