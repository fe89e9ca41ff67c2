//! The operator's use cases (GEN-05), for the CLI's `operator` commands and the API's operator routes: the
//! sede's queue, the presa in carico, closing a request the rules referred (or parked) with the reasons of the
//! task's catalogue or free text, comments, requeue and a new decision of the rule. The close goes through the
//! same fenced batch close as the workers', so an acceptance applies the effects the rule proposed — with the
//! same optimistic checks on the facts the rule read — and writes the same decision, event and notifications.
//! A referral whose facts moved since the rule read them is stale: the queue names those facts ([`queue`]),
//! and [`redecide`] has the rule decide it again with the current facts, in one step.
//!
//! Every action needs an acting operator: an operator of the request's sede (`agisce`), or the CLI acting as
//! one (`--operatore`); a read-only operator gets 403, another sede's request is not found. A request another
//! operator holds is refused (409, naming them) to everyone but the holder.

use std::collections::{BTreeSet, HashMap};
use std::future::Future;

use serde::Serialize;

use super::{Actor, AppError, MAX_PAGE, field_refused, free_text, read, tagged};
use crate::domain::closing::{ClaimedRequest, ClosePlan, Evaluation, Fate, RetryPolicy};
use crate::domain::decision::{Decision, FailureKind, Outcome, Reason, Trace};
use crate::domain::time::Millis;
use crate::rules::{RuleSet, TaskKind};
use crate::store::{AssignedTo, Assignment, QueueEntry, QueueFilter, Store, StoreError};

/// Reason code of a free-text reason given by an operator.
pub const FREE_TEXT_CODE: &str = "OPERATORE";

/// How long an operator holds a request while closing it.
const OPERATOR_LEASE_MS: i64 = 60_000;

/// One attempt: an effect that cannot apply is reported to the operator, not retried.
const ONE_ATTEMPT: RetryPolicy = RetryPolicy { max_failures: i64::MAX, base_delay_ms: 0, max_delay_ms: 0 };

/// How many times [`redecide`] decides again when a fact moves between its evaluation and its close.
const REDECIDE_ATTEMPTS: usize = 3;

const DAY_MS: i64 = 86_400_000;

/// The most reasons (codes and free text, each) a close may carry.
pub const MAX_REASONS: usize = 20;

/// The operator acting on a request, as the assignment checks know them: their id (None: the administrator on
/// the command line, whom an assignment does not stop). Anyone else may not act.
fn acting(actor: &Actor) -> Result<Option<&str>, AppError> {
    match actor {
        Actor::Operatore { id, agisce: true, .. } | Actor::OperatoreCli { id } => Ok(Some(id)),
        Actor::Cli => Ok(None),
        Actor::Operatore { agisce: false, .. } => {
            Err(AppError::Forbidden("a read-only operator (sola_lettura) may see the queue but not act on it".into()))
        }
        Actor::Richiedente { .. } | Actor::Integratore { .. } | Actor::Operazioni { .. } => {
            Err(AppError::Forbidden("only an operator of the request's sede works it".into()))
        }
    }
}

/// The acting operator's id, for what only a named operator does (take a request in hand, let it go).
fn named(actor: &Actor) -> Result<&str, AppError> {
    acting(actor)?
        .ok_or_else(|| AppError::Forbidden("a presa in carico needs an operator: name one with --operatore".into()))
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
    /// The representation the operator decided on (the API's `If-Match`): it must name the request's current
    /// ETag ([`tagged`]), checked while the request is leased for the close. None: the CLI, which shows no ETag.
    pub if_match: Option<String>,
}

/// Closes a request waiting for an operator, as `actor`. A stale `d.if_match` is refused (412) and nothing
/// changes. Free-text reasons and the note are bounded by `max_chars`. Returns its
/// protocol number.
pub async fn close(
    store: &Store,
    rules: &RuleSet,
    actor: &Actor,
    key: &str,
    d: OperatorDecision,
    max_chars: usize,
    now: Millis,
) -> Result<String, AppError> {
    let holder = acting(actor)?;
    read(store, actor, key).await?;
    for (field, n) in [("motivi", d.codes.len()), ("motivi_liberi", d.free_text.len())] {
        if n > MAX_REASONS {
            return Err(field_refused(field, format!("{n} reasons, more than {MAX_REASONS}")));
        }
    }
    for (i, text) in d.free_text.iter().enumerate() {
        free_text(&format!("motivi_liberi[{i}]"), text, max_chars)?;
    }
    if let Some(nota) = &d.nota {
        free_text("nota", nota, max_chars)?;
    }
    if d.accolta && !(d.codes.is_empty() && d.free_text.is_empty()) {
        return Err(field_refused(
            "motivi",
            "an accolta has no reasons: drop motivi and motivi_liberi (--motivo, --motivo-libero)".into(),
        ));
    }
    if !d.accolta && d.codes.is_empty() && d.free_text.is_empty() {
        return Err(field_refused(
            "motivi",
            "a non_accolta needs at least one reason: a code of the task's catalogue (motivi, --motivo CODE) or free text (motivi_liberi, --motivo-libero TEXT)".into(),
        ));
    }
    let owner = actor.audit_name();
    let (claimed, proposal) = store.claim_for_operator(key, &owner, holder, OPERATOR_LEASE_MS, now).await?;
    // An acceptance applies what the rule proposed with its referral, checked against the facts it read.
    let referral = proposal.filter(|p| p.outcome == Outcome::Rinvio);
    let decision = match prepare(store, rules, &claimed, referral.as_ref(), d).await {
        Ok(decision) => decision,
        Err(e) => {
            store.release(&owner, now).await?;
            return Err(e);
        }
    };
    let protocollo = claimed.protocollo.clone();
    let plan =
        store.close_batch(&[(claimed, Evaluation::Decided(Box::new(decision)))], ONE_ATTEMPT, now, &owner).await?;
    match plan.fates.first().map(|(_, f)| *f) {
        Some(Fate::Closed(_)) => Ok(protocollo),
        Some(Fate::Conflict) => {
            let changed = match referral.as_ref() {
                Some(p) => changed_facts(store, &p.trace).await?,
                None => Vec::new(),
            };
            let changed: Vec<String> = changed.iter().map(|c| format!("  {c}")).collect();
            Err(AppError::Conflict(format!(
                "the facts the rule read for {protocollo} have changed since it referred the request:\n{}\n\
                 have the rule decide it again with the current facts (`smart-taskd operator redecide {protocollo}`, \
                 POST …/nuova-decisione: it closes it if the rule decides, else refers it again with what it reads now), \
                 or hand it back to the workers (`smart-taskd operator requeue {protocollo}`, POST …/rimessa-in-coda)",
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

/// The operator's decision for a leased request: the precondition checked, the reasons rendered from the
/// task's catalogue, the referral's effects taken for an acceptance.
async fn prepare(
    store: &Store,
    rules: &RuleSet,
    claimed: &ClaimedRequest,
    referral: Option<&Decision>,
    d: OperatorDecision,
) -> Result<Decision, AppError> {
    if let Some(expected) = &d.if_match {
        let view = store
            .request(&claimed.id.to_string())
            .await?
            .ok_or_else(|| AppError::NotFound(format!("no request with id `{}`", claimed.id)))?;
        let current = tagged(&view)?.etag;
        if !if_match_allows(expected, &current) {
            return Err(AppError::PreconditionFailed(format!(
                "request {} has changed since you read it (its ETag is {current}): read it again before closing it",
                claimed.protocollo
            )));
        }
    }
    let rule = rules
        .get(&claimed.task)
        .ok_or_else(|| AppError::Conflict(format!("no rule is loaded for task `{}`", claimed.task)))?;
    // A quesito is closed by its answer: the note the requester reads.
    if rule.kind == TaskKind::Quesito && d.accolta && d.nota.as_deref().is_none_or(|n| n.trim().is_empty()) {
        return Err(field_refused(
            "nota",
            format!(
                "{} is a quesito: its answer closes it — give it as the note (nota, --nota TEXT)",
                claimed.protocollo
            ),
        ));
    }
    let mut reasons = Vec::new();
    for (i, code) in d.codes.iter().enumerate() {
        let field = format!("motivi[{i}]");
        let template = rule.templates.get_template(code).map_err(|_| {
            let known: Vec<&str> = rule.reasons.keys().map(String::as_str).collect();
            field_refused(
                &field,
                format!("reason `{code}` is not in the catalogue of {} (known: {})", rule.id, known.join(", ")),
            )
        })?;
        let messaggio = template.render(minijinja::context! {}).map_err(|_| {
            field_refused(
                &field,
                format!("the message of `{code}` needs values from the rule: give the reason as free text (motivi_liberi, --motivo-libero TEXT)"),
            )
        })?;
        reasons.push(Reason { codice: code.clone(), messaggio });
    }
    reasons.extend(d.free_text.iter().map(|t| Reason { codice: FREE_TEXT_CODE.into(), messaggio: t.clone() }));
    // An acceptance of a Smart-Task applies the effects the rule proposed, fenced by the facts it read; a
    // quesito's answer changes nothing in the archives, so the facts moving since its triage do not stop it.
    let (effects, trace, rule_version) = match (referral, d.accolta) {
        (Some(p), true) if rule.kind == TaskKind::SmartTask => {
            (p.effects.clone(), p.trace.clone(), format!("operatore ({})", p.rule_version))
        }
        _ => (Vec::new(), Trace::default(), "operatore".to_string()),
    };
    Ok(Decision {
        outcome: if d.accolta { Outcome::Accolta } else { Outcome::NonAccolta },
        reasons,
        effects,
        rule_version,
        trace,
        duration_us: 0,
        nota: d.nota,
    })
}

/// Whether an `If-Match` value names `etag` (strong comparison, RFC 9110 §13.1.1): `*`, or a list of
/// entity tags one of which is it; a weak tag never matches.
fn if_match_allows(header: &str, etag: &str) -> bool {
    header.trim() == "*" || header.split(',').any(|t| t.trim() == etag)
}

/// The effects of a decision could not be applied (their targets changed): what the operator can do.
fn unapplicable(plan: &ClosePlan, protocollo: &str) -> AppError {
    AppError::Conflict(format!(
        "the effects the rule proposed for {protocollo} cannot be applied any more ({}); close it as non_accolta or requeue it",
        plan.retried.first().map(|(_, _, e)| e.as_str()).unwrap_or("see `show`")
    ))
}

/// A close that ended neither closed nor refused (its lease was lost): the operator tries again.
fn not_closed(protocollo: &str, fate: Option<Fate>) -> AppError {
    AppError::Conflict(format!("request {protocollo} could not be closed ({fate:?}): try again"))
}

/// `actor` takes a request waiting for an operator in hand: the other operators see who works it, and may
/// not close, requeue or redecide it until the holder lets it go. Held by another operator: refused (409).
pub async fn claim(store: &Store, actor: &Actor, key: &str, now: Millis) -> Result<Assignment, AppError> {
    let holder = named(actor)?;
    read(store, actor, key).await?;
    Ok(store.assign(key, holder, &actor.audit_name(), now).await?)
}

/// The operator holding a request lets it go; anyone else is refused (409).
pub async fn release(store: &Store, actor: &Actor, key: &str, now: Millis) -> Result<Assignment, AppError> {
    let holder = named(actor)?;
    read(store, actor, key).await?;
    Ok(store.unassign(key, holder, &actor.audit_name(), now).await?)
}

/// An operator's comment on a request, kept in its history and notified to the requester; free text within
/// `max_chars`. Returns its protocol number.
pub async fn comment(
    store: &Store,
    actor: &Actor,
    key: &str,
    text: &str,
    max_chars: usize,
    now: Millis,
) -> Result<String, AppError> {
    acting(actor)?;
    let text = free_text("testo", text, max_chars)?;
    read(store, actor, key).await?;
    Ok(store.comment(key, &actor.audit_name(), text, now).await?)
}

/// Hands a referred or parked request back to the workers, for the rules to decide again. Returns its
/// protocol number.
pub async fn requeue(store: &Store, actor: &Actor, key: &str, now: Millis) -> Result<String, AppError> {
    let holder = acting(actor)?;
    read(store, actor, key).await?;
    Ok(store.requeue(key, &actor.audit_name(), holder, now).await?)
}

/// A fact a referral read whose subject has moved since: what to look at before deciding again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct ChangedFact {
    /// The rule's read, as in the trace (`delegation(…)`).
    #[schema(max_length = 1000)]
    pub chiamata: String,
    /// The subject whose version moved (`dm:6789012345`).
    #[schema(max_length = 1000)]
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
pub async fn changed_facts(store: &Store, trace: &Trace) -> Result<Vec<ChangedFact>, AppError> {
    let subjects: Vec<String> = trace_subjects(trace).collect();
    let current = store.subject_versions(&subjects).await?;
    Ok(moved_facts(trace, &current))
}

/// A request of the queue, with how long it has been open and the facts that moved under a referral (none:
/// it is fresh).
#[derive(Debug, Clone, Serialize)]
pub struct QueueItem {
    #[serde(flatten)]
    pub entry: QueueEntry,
    /// Whole days since it was submitted.
    pub giorni_aperta: i64,
    pub fatti_cambiati: Vec<ChangedFact>,
}

/// Which part of the queue to list: `sede` only for the CLI (an operator's is their own); `limit` 1–200.
#[derive(Debug, Clone, Default)]
pub struct QueueQuery {
    pub sede: Option<String>,
    pub assegnata: Option<Assegnata>,
    /// The cursor of the next page ([`QueuePage::next_after`]).
    pub after: Option<(Millis, i64)>,
    pub limit: i64,
}

/// The queue filter on who holds a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Assegnata {
    /// Held by the operator asking.
    Mie,
    /// Held by nobody.
    Nessuno,
}

/// A page of the queue, oldest first, and the cursor of the next one (None on the last page).
pub struct QueuePage {
    pub items: Vec<QueueItem>,
    pub next_after: Option<(Millis, i64)>,
}

/// The requests waiting for an operator ([`Store::operator_queue`]) that `actor` works: an operator's sede's,
/// any (or `q.sede`'s) for the CLI. Each referral is compared with the current versions of the facts its rule
/// read: one query for the page, one for the versions of every subject.
pub async fn queue(store: &Store, actor: &Actor, q: QueueQuery, now: Millis) -> Result<QueuePage, AppError> {
    let (sede, me) = match actor {
        Actor::Operatore { id, sede, .. } => (Some(sede.clone()), Some(id.as_str())),
        Actor::OperatoreCli { id } => (q.sede, Some(id.as_str())),
        Actor::Cli => (q.sede, None),
        Actor::Richiedente { .. } | Actor::Integratore { .. } | Actor::Operazioni { .. } => {
            return Err(AppError::Forbidden("the queue is the operators' of a sede".into()));
        }
    };
    let assegnata = match (q.assegnata, me) {
        (None, _) => None,
        (Some(Assegnata::Nessuno), _) => Some(AssignedTo::Nobody),
        (Some(Assegnata::Mie), Some(id)) => Some(AssignedTo::Operator(id.to_string())),
        (Some(Assegnata::Mie), None) => return Err(field_refused("assegnata", "`mie` needs an operator".into())),
    };
    let limit = q.limit.clamp(1, MAX_PAGE);
    // One more than asked tells whether another page follows.
    let filter = QueueFilter { sede, assegnata, after: q.after, limit: limit + 1 };
    let mut traced = store.operator_queue(&filter).await?;
    let more = traced.len() as i64 > limit;
    traced.truncate(limit as usize);
    let next_after = if more { traced.last().map(|(e, _)| (e.creata_ms, e.id)) } else { None };
    let subjects: Vec<String> = traced
        .iter()
        .filter_map(|(_, trace)| trace.as_ref())
        .flat_map(trace_subjects)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let current = if subjects.is_empty() { HashMap::new() } else { store.subject_versions(&subjects).await? };
    let items = traced
        .into_iter()
        .map(|(entry, trace)| QueueItem {
            fatti_cambiati: trace.map(|t| moved_facts(&t, &current)).unwrap_or_default(),
            giorni_aperta: (now - entry.creata_ms).max(0) / DAY_MS,
            entry,
        })
        .collect();
    Ok(QueuePage { items, next_after })
}

/// What a new decision of the rule did with a request waiting for an operator.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Redecided {
    #[schema(max_length = 64)]
    pub protocollo: String,
    /// `accolta` / `non_accolta`: closed; `rinvio`: referred again, with the facts read now.
    pub esito: Outcome,
    #[schema(min_items = 0, max_items = 1000)]
    pub motivazioni: Vec<Reason>,
}

/// Has the rule decide again, with the current facts, a request waiting for an operator (a stale referral, or
/// one parked after rule errors), in one step: the request is taken with the operator's lease, `evaluate`d
/// (the workers' evaluation of one claimed request, with the active rule set) and closed through the fenced
/// batch close as the actor. A decision closes it; a new referral replaces the stale one (its effects and the
/// facts read now), so that the operator can close it. A rule failure releases it and is reported.
pub async fn redecide<F, Fut>(
    store: &Store,
    actor: &Actor,
    key: &str,
    mut evaluate: F,
    now: impl Fn() -> Millis,
) -> Result<Redecided, AppError>
where
    F: FnMut(ClaimedRequest) -> Fut,
    Fut: Future<Output = Result<Evaluation, StoreError>>,
{
    let holder = acting(actor)?;
    read(store, actor, key).await?;
    let owner = actor.audit_name();
    for _ in 0..REDECIDE_ATTEMPTS {
        let (claimed, _) = store.claim_for_operator(key, &owner, holder, OPERATOR_LEASE_MS, now()).await?;
        let protocollo = claimed.protocollo.clone();
        let evaluation = match evaluate(claimed.clone()).await {
            Ok(e) => e,
            Err(e) => {
                store.release(&owner, now()).await?;
                return Err(e.into());
            }
        };
        let decision = match &evaluation {
            Evaluation::Decided(d) => d.clone(),
            Evaluation::Failed(f) => {
                store.release(&owner, now()).await?;
                return Err(match f.kind {
                    FailureKind::NoRule => AppError::Conflict(f.message.clone()),
                    _ => AppError::RuleFailed(format!(
                        "the rule failed deciding {protocollo} again ({}: {}); it stays with the operator",
                        f.kind.as_str(),
                        f.message
                    )),
                });
            }
        };
        let plan = store.close_batch(&[(claimed, evaluation)], ONE_ATTEMPT, now(), &owner).await?;
        match plan.fates.first().map(|(_, f)| *f) {
            Some(Fate::Closed(esito)) => return Ok(Redecided { protocollo, esito, motivazioni: decision.reasons }),
            Some(Fate::Referred) => {
                return Ok(Redecided { protocollo, esito: Outcome::Rinvio, motivazioni: decision.reasons });
            }
            // A fact moved between the evaluation and the close (the close released it): decide again.
            Some(Fate::Conflict) => continue,
            Some(Fate::Retried) | Some(Fate::Parked) => return Err(unapplicable(&plan, &protocollo)),
            other => return Err(not_closed(&protocollo, other)),
        }
    }
    Err(AppError::RuleFailed(format!(
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

/// The requests of the actor's queue parked after rule failures, grouped by the rule version that failed
/// (`TASK@version`, as the failure recorded it): what a bulk requeue picks from once that rule is fixed.
#[derive(Debug, Clone, Serialize)]
pub struct ParkedGroup {
    pub versione: String,
    /// The last failure's message of the group's newest request.
    pub errore: String,
    /// Protocol numbers, oldest first.
    pub richieste: Vec<String>,
}

/// The version a parked request's recorded failure names (`REVOCA@c141d298e4d406ae: …`).
fn failed_version(error: &str) -> Option<&str> {
    error.split_once(": ").map(|(label, _)| label).filter(|label| label.contains('@'))
}

/// Every parked request of the actor's queue, by failing rule version (every page of the queue).
pub async fn parked_by_version(store: &Store, actor: &Actor, now: Millis) -> Result<Vec<ParkedGroup>, AppError> {
    let mut groups: Vec<ParkedGroup> = Vec::new();
    let mut after = None;
    loop {
        let page = queue(store, actor, QueueQuery { after, limit: MAX_PAGE, ..QueueQuery::default() }, now).await?;
        for item in page.items.into_iter().filter(|i| i.entry.sospesa == "errore") {
            let error = item.entry.errore.unwrap_or_default();
            let version = failed_version(&error).unwrap_or("(versione non registrata)").to_string();
            match groups.iter_mut().find(|g| g.versione == version) {
                Some(group) => {
                    group.richieste.push(item.entry.protocollo);
                    group.errore = error;
                }
                None => groups.push(ParkedGroup {
                    versione: version,
                    errore: error,
                    richieste: vec![item.entry.protocollo],
                }),
            }
        }
        match page.next_after {
            Some(next) => after = Some(next),
            None => return Ok(groups),
        }
    }
}

/// Hands back to the workers every parked request of the actor's queue that `version` failed on; returns their
/// protocol numbers. Each is requeued on its own (a request taken meanwhile is skipped and not counted).
pub async fn requeue_parked(store: &Store, actor: &Actor, version: &str, now: Millis) -> Result<Vec<String>, AppError> {
    acting(actor)?;
    let group = parked_by_version(store, actor, now).await?.into_iter().find(|g| g.versione == version);
    let Some(group) = group else {
        return Err(AppError::NotFound(format!("no request parked by the rule version {version}")));
    };
    let mut requeued = Vec::with_capacity(group.richieste.len());
    for protocollo in group.richieste {
        match requeue(store, actor, &protocollo, now).await {
            Ok(p) => requeued.push(p),
            Err(AppError::Conflict(_) | AppError::Store(StoreError::Refused(_))) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(requeued)
}
