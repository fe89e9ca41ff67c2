//! The operator's path (GEN-05): closing a request the rules referred (or parked), with the reasons of the
//! task's catalogue or free text. The close goes through the same fenced batch close as the workers', so
//! an acceptance applies the effects the rule proposed — with the same optimistic checks on the facts the
//! rule read — and writes the same decision, event and notifications. A referral whose facts moved since the
//! rule read them is stale: `operator list` names those facts ([`queue`]), and [`redecide`] has the rule
//! decide it again with the current facts, in one step.

use std::collections::{BTreeSet, HashMap};
use std::future::Future;

use serde::Serialize;

use crate::domain::closing::{ClaimedRequest, ClosePlan, Evaluation, Fate, RetryPolicy};
use crate::domain::decision::{Decision, FailureKind, Outcome, Reason, Trace};
use crate::domain::time::Millis;
use crate::rules::RuleSet;
use crate::store::{QueueEntry, Store, StoreError};

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
    /// The rule failed while deciding a request again (the request stays with the operator).
    #[error("{0}")]
    RuleFailed(String),
}

/// One attempt: an effect that cannot apply is reported to the operator, not retried.
const ONE_ATTEMPT: RetryPolicy = RetryPolicy { max_failures: i64::MAX, base_delay_ms: 0, max_delay_ms: 0 };

/// How many times [`redecide`] decides again when a fact moves between its evaluation and its close.
const REDECIDE_ATTEMPTS: usize = 3;

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
    let plan =
        store.close_batch(&[(claimed, Evaluation::Decided(Box::new(decision)))], ONE_ATTEMPT, now, &actor).await?;
    match plan.fates.first().map(|(_, f)| *f) {
        Some(Fate::Closed(_)) => Ok(protocollo),
        Some(Fate::Conflict) => {
            let changed = match referral.as_ref() {
                Some(p) => changed_facts(store, &p.trace).await?,
                None => Vec::new(),
            };
            let changed: Vec<String> = changed.iter().map(|c| format!("  {c}")).collect();
            Err(OperatorError::Invalid(format!(
                "the facts the rule read for {protocollo} have changed since it referred the request:\n{}\n\
                 run `smart-taskd operator redecide {protocollo}` so that the rule decides it again with the current facts \
                 (it closes it if the rule decides, else refers it again with what it reads now), or \
                 `smart-taskd operator requeue {protocollo}` to hand it back to the workers",
                if changed.is_empty() {
                    "  (the open requests of its subject)".to_string()
                } else {
                    changed.join("\n")
                }
            )))
        }
        Some(Fate::Retried) | Some(Fate::Parked) => Err(unapplicable(&plan, &protocollo)),
        other => Err(not_closed(&protocollo, other)),
    }
}

/// The effects of a decision could not be applied (their targets changed): what the operator can do.
fn unapplicable(plan: &ClosePlan, protocollo: &str) -> OperatorError {
    OperatorError::Invalid(format!(
        "the effects the rule proposed for {protocollo} cannot be applied any more ({}); close it as non_accolta or requeue it",
        plan.retried.first().map(|(_, _, e)| e.as_str()).unwrap_or("see `show`")
    ))
}

/// A close that ended neither closed nor refused (its lease was lost): the operator tries again.
fn not_closed(protocollo: &str, fate: Option<Fate>) -> OperatorError {
    OperatorError::Invalid(format!("request {protocollo} could not be closed ({fate:?}): try again"))
}

/// A fact a referral read whose subject has moved since: what to look at before deciding again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChangedFact {
    /// The rule's read, as in the trace (`delegation(…)`).
    pub chiamata: String,
    /// The subject whose version moved (`dm:6789012345`).
    pub soggetto: String,
    pub versione_al_rinvio: i64,
    pub versione_attuale: i64,
}

impl std::fmt::Display for ChangedFact {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "ctx.{} [{}]: versione {} al rinvio, ora {}",
            self.chiamata, self.soggetto, self.versione_al_rinvio, self.versione_attuale
        )
    }
}

/// The subjects a trace read, for one `subject_versions` query over many traces.
fn trace_subjects(trace: &Trace) -> impl Iterator<Item = String> + '_ {
    trace.facts.iter().map(|f| f.subject.to_string())
}

/// The facts of `trace` whose subject has another version in `current` (a subject without a row: version 0),
/// each subject once, in the order the rule read them.
fn moved_facts(trace: &Trace, current: &HashMap<String, i64>) -> Vec<ChangedFact> {
    let mut seen = BTreeSet::new();
    trace
        .facts
        .iter()
        .filter_map(|f| {
            let soggetto = f.subject.to_string();
            let now = current.get(&soggetto).copied().unwrap_or(0);
            (now != f.version && seen.insert(soggetto.clone())).then(|| ChangedFact {
                chiamata: f.call.clone(),
                soggetto,
                versione_al_rinvio: f.version,
                versione_attuale: now,
            })
        })
        .collect()
}

/// The facts a referral read whose subject has moved since (`ctx.delegation(…)` on `dm:…`, version 1 → 2).
pub async fn changed_facts(store: &Store, trace: &Trace) -> Result<Vec<ChangedFact>, OperatorError> {
    let subjects: Vec<String> = trace_subjects(trace).collect();
    let current = store.subject_versions(&subjects).await?;
    Ok(moved_facts(trace, &current))
}

/// A request of `operator list`, with the facts that moved under a referral (none: it is fresh).
#[derive(Debug, Clone, Serialize)]
pub struct QueueItem {
    #[serde(flatten)]
    pub entry: QueueEntry,
    pub fatti_cambiati: Vec<ChangedFact>,
}

/// The requests waiting for an operator ([`Store::operator_queue`]), each referral compared with the current
/// versions of the facts its rule read: one query for the queue, one for the versions of every subject.
pub async fn queue(store: &Store, sede: Option<&str>) -> Result<Vec<QueueItem>, OperatorError> {
    let traced = store.operator_queue(sede).await?;
    let subjects: Vec<String> = traced
        .iter()
        .filter_map(|(_, trace)| trace.as_ref())
        .flat_map(trace_subjects)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let current = if subjects.is_empty() { HashMap::new() } else { store.subject_versions(&subjects).await? };
    Ok(traced
        .into_iter()
        .map(|(entry, trace)| QueueItem {
            fatti_cambiati: trace.map(|t| moved_facts(&t, &current)).unwrap_or_default(),
            entry,
        })
        .collect())
}

/// What a new decision of the rule did with a request waiting for an operator.
#[derive(Debug, Clone)]
pub struct Redecided {
    pub protocollo: String,
    /// `Accolta` / `NonAccolta`: closed; `Rinvio`: referred again, with the facts read now.
    pub outcome: Outcome,
    pub reasons: Vec<Reason>,
}

/// Has the rule decide again, with the current facts, a request waiting for an operator (a stale referral, or
/// one parked after rule errors), in one step: the request is taken with the operator's lease, `evaluate`d
/// (the workers' evaluation of one claimed request, with the active rule set) and closed through the fenced
/// batch close as `operatore:NAME`. A decision closes it; a new referral replaces the stale one (its effects
/// and the facts read now), so that the operator can close it. A rule failure releases it and is reported.
pub async fn redecide<F, Fut>(
    store: &Store,
    key: &str,
    operator: &str,
    mut evaluate: F,
    now: impl Fn() -> Millis,
) -> Result<Redecided, OperatorError>
where
    F: FnMut(ClaimedRequest) -> Fut,
    Fut: Future<Output = Result<Evaluation, StoreError>>,
{
    let actor = format!("operatore:{operator}");
    for _ in 0..REDECIDE_ATTEMPTS {
        let (claimed, _) = store.claim_for_operator(key, &actor, OPERATOR_LEASE_MS, now()).await?;
        let protocollo = claimed.protocollo.clone();
        let evaluation = match evaluate(claimed.clone()).await {
            Ok(e) => e,
            Err(e) => {
                store.release(&actor, now()).await?;
                return Err(e.into());
            }
        };
        let decision = match &evaluation {
            Evaluation::Decided(d) => d.clone(),
            Evaluation::Failed(f) => {
                store.release(&actor, now()).await?;
                return Err(match f.kind {
                    FailureKind::NoRule => OperatorError::Invalid(f.message.clone()),
                    _ => OperatorError::RuleFailed(format!(
                        "the rule failed deciding {protocollo} again ({}: {}); it stays with the operator",
                        f.kind.as_str(),
                        f.message
                    )),
                });
            }
        };
        let plan = store.close_batch(&[(claimed, evaluation)], ONE_ATTEMPT, now(), &actor).await?;
        match plan.fates.first().map(|(_, f)| *f) {
            Some(Fate::Closed(outcome)) => return Ok(Redecided { protocollo, outcome, reasons: decision.reasons }),
            Some(Fate::Referred) => {
                return Ok(Redecided { protocollo, outcome: Outcome::Rinvio, reasons: decision.reasons });
            }
            // A fact moved between the evaluation and the close (the close released it): decide again.
            Some(Fate::Conflict) => continue,
            Some(Fate::Retried) | Some(Fate::Parked) => return Err(unapplicable(&plan, &protocollo)),
            other => return Err(not_closed(&protocollo, other)),
        }
    }
    Err(OperatorError::RuleFailed(format!(
        "the facts of `{key}` kept changing while the rule decided it ({REDECIDE_ATTEMPTS} attempts): try again"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::decision::FactRead;
    use crate::domain::facts::Subject;

    fn read(call: &str, subject: Subject, version: i64) -> FactRead {
        FactRead { call: call.into(), subject, version, value: serde_json::Value::Null }
    }

    #[test]
    fn moved_facts_name_each_moved_subject_once_in_reading_order() {
        let trace = Trace {
            facts: vec![
                read("company(6789012345)", Subject::Azienda("6789012345".into()), 1),
                read("delegations(6789012345)", Subject::DelegheAzienda("6789012345".into()), 1),
                read("delegation(6789012345, X)", Subject::DelegheAzienda("6789012345".into()), 1),
                read("sede(7000)", Subject::Sede("7000".into()), 0),
                read("person(X)", Subject::Persona("X".into()), 3),
            ],
            ..Trace::default()
        };
        // The company did not move; a subject without a row is at version 0: the sede as it was read, the
        // person not (it moved).
        let current: HashMap<String, i64> =
            [("az:6789012345".to_string(), 1), ("dm:6789012345".to_string(), 2)].into_iter().collect();
        let moved = moved_facts(&trace, &current);
        assert_eq!(moved.len(), 2, "{moved:?}");
        assert_eq!(
            moved[0],
            ChangedFact {
                chiamata: "delegations(6789012345)".into(),
                soggetto: "dm:6789012345".into(),
                versione_al_rinvio: 1,
                versione_attuale: 2
            }
        );
        assert_eq!(moved[0].to_string(), "ctx.delegations(6789012345) [dm:6789012345]: versione 1 al rinvio, ora 2");
        assert_eq!(moved[1].soggetto, Subject::Persona("X".into()).to_string());
        let unchanged: HashMap<String, i64> = [("az:6789012345", 1), ("dm:6789012345", 1), ("p:X", 3)]
            .into_iter()
            .map(|(s, v)| (s.to_string(), v))
            .collect();
        assert!(moved_facts(&trace, &unchanged).is_empty());
    }
}
