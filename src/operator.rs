//! The operator's path (GEN-05): closing a request the rules referred (or parked), with the reasons of the
//! task's catalogue or free text. The close goes through the same fenced batch close as the workers', so
//! an acceptance applies the effects the rule proposed — with the same optimistic checks on the facts the
//! rule read — and writes the same decision, event and notifications.

use crate::domain::closing::{Evaluation, Fate, RetryPolicy};
use crate::domain::decision::{Decision, Outcome, Reason, Trace};
use crate::domain::time::Millis;
use crate::rules::RuleSet;
use crate::store::{Store, StoreError};

/// Reason code of a free-text reason given by an operator.
pub const FREE_TEXT_CODE: &str = "OPERATORE";

/// How long an operator holds a request while closing it.
const OPERATOR_LEASE_MS: i64 = 60_000;

#[derive(Debug, thiserror::Error)]
pub enum OperatorError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The operator's input does not fit the request (the message says what to do).
    #[error("{0}")]
    Invalid(String),
}

/// What the operator decided.
#[derive(Debug, Clone)]
pub struct OperatorDecision {
    pub accolta: bool,
    /// Reason codes of the task's catalogue.
    pub codes: Vec<String>,
    /// Free-text reasons.
    pub free_text: Vec<String>,
    pub nota: Option<String>,
}

/// Closes a request waiting for an operator. Returns its protocol number.
pub async fn close(
    store: &Store,
    rules: &RuleSet,
    key: &str,
    operator: &str,
    d: OperatorDecision,
    now: Millis,
) -> Result<String, OperatorError> {
    if d.accolta && !(d.codes.is_empty() && d.free_text.is_empty()) {
        return Err(OperatorError::Invalid("an accolta has no reasons: drop --motivo/--motivo-libero".into()));
    }
    if !d.accolta && d.codes.is_empty() && d.free_text.is_empty() {
        return Err(OperatorError::Invalid(
            "a non_accolta needs at least one reason: --motivo CODE (from the task's catalogue) or --motivo-libero TEXT"
                .into(),
        ));
    }
    let actor = format!("operatore:{operator}");
    let (claimed, proposal) = store.claim_for_operator(key, &actor, OPERATOR_LEASE_MS, now).await?;
    let release = || async { store.release(&actor, now).await };
    let rule = match rules.get(&claimed.task) {
        Some(rule) => rule,
        None => {
            release().await?;
            return Err(OperatorError::Invalid(format!("no rule is loaded for task `{}`", claimed.task)));
        }
    };
    let mut reasons = Vec::new();
    for code in &d.codes {
        let rendered = rule
            .templates
            .get_template(code)
            .map_err(|_| {
                let known: Vec<&str> = rule.reasons.keys().map(String::as_str).collect();
                format!("reason `{code}` is not in the catalogue of {} (known: {})", rule.id, known.join(", "))
            })
            .and_then(|t| {
                t.render(minijinja::context! {}).map_err(|_| {
                    format!(
                        "the message of `{code}` needs values from the rule: give the reason with --motivo-libero TEXT"
                    )
                })
            });
        match rendered {
            Ok(messaggio) => reasons.push(Reason { codice: code.clone(), messaggio }),
            Err(e) => {
                release().await?;
                return Err(OperatorError::Invalid(e));
            }
        }
    }
    reasons.extend(d.free_text.iter().map(|t| Reason { codice: FREE_TEXT_CODE.into(), messaggio: t.clone() }));
    // An acceptance applies what the rule proposed with its referral, checked against the facts it read.
    let referral = proposal.filter(|p| p.outcome == Outcome::Rinvio);
    let (effects, trace, rule_version) = match (&referral, d.accolta) {
        (Some(p), true) => (p.effects.clone(), p.trace.clone(), format!("operatore ({})", p.rule_version)),
        _ => (Vec::new(), Trace::default(), "operatore".to_string()),
    };
    let decision = Decision {
        outcome: if d.accolta { Outcome::Accolta } else { Outcome::NonAccolta },
        reasons,
        effects,
        rule_version,
        trace,
        duration_us: 0,
        nota: d.nota,
    };
    let protocollo = claimed.protocollo.clone();
    // One attempt: an effect that cannot apply is reported to the operator, not retried.
    let policy = RetryPolicy { max_failures: i64::MAX, base_delay_ms: 0, max_delay_ms: 0 };
    let plan = store.close_batch(&[(claimed, Evaluation::Decided(Box::new(decision)))], policy, now, &actor).await?;
    match plan.fates.first().map(|(_, f)| *f) {
        Some(Fate::Closed(_)) => Ok(protocollo),
        Some(Fate::Conflict) => {
            let changed = changed_facts(store, referral.as_ref().map(|p| &p.trace)).await?;
            Err(OperatorError::Invalid(format!(
                "the facts the rule read for {protocollo} have changed since it referred the request:\n{}\n\
                 run `smart-taskd operator requeue {protocollo}` so that the rules decide it again with the current facts",
                if changed.is_empty() {
                    "  (the open requests of its subject)".to_string()
                } else {
                    changed.join("\n")
                }
            )))
        }
        Some(Fate::Retried) | Some(Fate::Parked) => Err(OperatorError::Invalid(format!(
            "the effects the rule proposed for {protocollo} cannot be applied any more ({}); close it as non_accolta or requeue it",
            plan.retried.first().map(|(_, _, e)| e.as_str()).unwrap_or("see `show`")
        ))),
        other => {
            Err(OperatorError::Invalid(format!("request {protocollo} could not be closed ({other:?}): try again")))
        }
    }
}

/// The facts a referral read whose subject has moved since, in words for the operator (`ctx.delegation(…)` on
/// `dm:…`, version 1 → 2): what to look at before requeueing.
async fn changed_facts(store: &Store, trace: Option<&Trace>) -> Result<Vec<String>, OperatorError> {
    let Some(trace) = trace else { return Ok(Vec::new()) };
    let subjects: Vec<String> = trace.facts.iter().map(|f| f.subject.to_string()).collect();
    let now = store.subject_versions(&subjects).await?;
    let mut seen = std::collections::BTreeSet::new();
    Ok(trace
        .facts
        .iter()
        .filter_map(|f| {
            let key = f.subject.to_string();
            let current = now.get(&key).copied().unwrap_or(0);
            (current != f.version && seen.insert(key.clone()))
                .then(|| format!("  ctx.{} [{key}]: versione {} al rinvio, ora {current}", f.call, f.version))
        })
        .collect())
}
