//! The closing plan: what one batch of evaluated requests writes, computed without I/O.
//!
//! The store loads the current lease tokens, subject versions and effect targets inside its write
//! transaction, calls [`plan`], and executes the plan in the same transaction. Keeping the decision logic
//! here means both backends close batches identically, and the fencing and optimistic checks are unit-tested.

use std::collections::HashMap;

use serde_json::json;

use super::decision::{Decision, Effect, Outcome, RuleFailure};
use super::facts::{Delega, StatoDelega, Subject, delega_subjects};
use super::request::ContattiNotifica;
use super::time::{Millis, is_iso_date};

/// A request as a worker holds it between claim and close.
#[derive(Debug, Clone, PartialEq)]
pub struct ClaimedRequest {
    pub id: i64,
    pub protocollo: String,
    pub task: String,
    pub soggetto: String,
    pub sede: String,
    pub payload: serde_json::Map<String, serde_json::Value>,
    pub contatti: ContattiNotifica,
    /// The fencing token of this claim.
    pub token: i64,
    pub failures: i64,
    pub creata_il: Millis,
    /// The request had been claimed before and its lease expired: a takeover.
    pub taken_over: bool,
}

/// The result of evaluating one claimed request.
#[derive(Debug, Clone, PartialEq)]
pub enum Evaluation {
    Decided(Decision),
    Failed(RuleFailure),
}

/// What the store read inside the closing transaction.
#[derive(Debug, Default)]
pub struct World {
    /// Current lease token of each request of the batch (None = not leased any more).
    pub tokens: HashMap<i64, Option<i64>>,
    /// Current version of every subject read or changed by the batch (absent = 0).
    pub versions: HashMap<Subject, i64>,
    /// The deleghe that effects target, and every delega whose `padre` is one of them.
    pub deleghe: HashMap<String, Delega>,
}

/// Retry schedule of rule failures.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Failures after which the request is parked for an operator.
    pub max_failures: i64,
    pub base_delay_ms: i64,
    pub max_delay_ms: i64,
}

impl RetryPolicy {
    /// Exponential backoff with "equal jitter": half fixed, half random (`jitter` in [0, 1)).
    pub fn delay_ms(&self, failures: i64, jitter: f64) -> i64 {
        let exp = self.base_delay_ms.saturating_mul(1_i64 << (failures - 1).clamp(0, 30));
        let capped = exp.min(self.max_delay_ms);
        capped / 2 + ((capped / 2) as f64 * jitter.clamp(0.0, 1.0)) as i64
    }
}

/// A notification to queue in the outbox with its event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    pub channel: &'static str,
    pub recipient: String,
    pub role: &'static str,
}

/// The requester's notifications for an event, as consented in `contatti_notifica`.
pub fn requester_notifications(c: &ContattiNotifica) -> Vec<Notification> {
    let mut out = Vec::new();
    if let (true, Some(email)) = (c.consenso_email, &c.email) {
        out.push(Notification { channel: "email", recipient: email.clone(), role: "richiedente" });
    }
    if let (true, Some(cell)) = (c.consenso_sms, &c.cellulare) {
        out.push(Notification { channel: "sms", recipient: cell.clone(), role: "richiedente" });
    }
    out
}

/// An event to append to a request's history, with the notifications it causes.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    pub request_id: i64,
    pub kind: &'static str,
    pub actor: String,
    pub detail: serde_json::Value,
    pub notifications: Vec<Notification>,
}

/// A delega the batch revokes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revocation {
    pub delega_id: String,
    pub data_revoca: String,
    pub request_id: i64,
}

/// How one request of the batch ends up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    Closed(Outcome),
    Referred,
    Retried,
    Parked,
    /// A fact it read changed: its decision is discarded and it is decided again.
    Conflict,
    /// Its lease was lost (expired and taken over): nothing is written for it.
    Stale,
}

#[derive(Debug, Default)]
pub struct ClosePlan {
    pub fates: Vec<(i64, Fate)>,
    /// Requests closed: (id, esito).
    pub closed: Vec<(i64, &'static str)>,
    /// Requests referred to an operator: (id, sede).
    pub referred: Vec<(i64, String)>,
    /// Requests to retry after a rule failure: (id, available_at, error).
    pub retried: Vec<(i64, Millis, String)>,
    /// Requests parked after too many rule failures: (id, error).
    pub parked: Vec<(i64, String)>,
    /// Requests released for a new decision.
    pub released: Vec<i64>,
    pub decisions: Vec<(i64, Decision)>,
    pub events: Vec<NewEvent>,
    pub revocations: Vec<Revocation>,
    /// New versions of the subjects the batch changed.
    pub versions: HashMap<Subject, i64>,
}

/// Decides what a batch writes. `jitter` yields numbers in [0, 1) for retry backoff.
pub fn plan(
    batch: &[(ClaimedRequest, Evaluation)],
    world: &World,
    policy: RetryPolicy,
    now: Millis,
    actor: &str,
    mut jitter: impl FnMut() -> f64,
) -> ClosePlan {
    let mut p = ClosePlan::default();
    let version =
        |p: &ClosePlan, s: &Subject| p.versions.get(s).or_else(|| world.versions.get(s)).copied().unwrap_or(0);
    for (req, eval) in batch {
        if world.tokens.get(&req.id).copied().flatten() != Some(req.token) {
            p.fates.push((req.id, Fate::Stale));
            continue;
        }
        let decision = match eval {
            Evaluation::Failed(f) => {
                let fate = fail(&mut p, req, f, policy, now, actor, jitter());
                p.fates.push((req.id, fate));
                continue;
            }
            Evaluation::Decided(d) => d,
        };
        if decision.read_versions().any(|(s, v)| version(&p, s) != v) {
            p.released.push(req.id);
            p.fates.push((req.id, Fate::Conflict));
            continue;
        }
        if decision.outcome == Outcome::Accolta {
            match effect_changes(decision, world, &p.revocations) {
                Ok(changes) => {
                    for s in changes.subjects {
                        let next = version(&p, &s) + 1;
                        p.versions.insert(s, next);
                    }
                    p.revocations.extend(changes.revocations.into_iter().map(|(delega_id, data_revoca)| Revocation {
                        delega_id,
                        data_revoca,
                        request_id: req.id,
                    }));
                }
                Err(message) => {
                    let failure = RuleFailure { kind: super::decision::FailureKind::Error, message };
                    let fate = fail(&mut p, req, &failure, policy, now, actor, jitter());
                    p.fates.push((req.id, fate));
                    continue;
                }
            }
        }
        let outcome = decision.outcome;
        if outcome == Outcome::Rinvio {
            p.referred.push((req.id, req.sede.clone()));
            p.events.push(NewEvent {
                request_id: req.id,
                kind: "rinvio_operatore",
                actor: actor.to_string(),
                detail: json!({ "sede": req.sede, "motivazioni": decision.reasons }),
                notifications: Vec::new(),
            });
            p.fates.push((req.id, Fate::Referred));
        } else {
            let esito = outcome.as_str();
            p.closed.push((req.id, esito));
            let open = Subject::Open { task: req.task.clone(), soggetto: req.soggetto.clone() };
            let next = version(&p, &open) + 1;
            p.versions.insert(open, next);
            p.events.push(NewEvent {
                request_id: req.id,
                kind: "chiusura",
                actor: actor.to_string(),
                detail: json!({ "esito": esito, "motivazioni": decision.reasons }),
                notifications: requester_notifications(&req.contatti),
            });
            p.fates.push((req.id, Fate::Closed(outcome)));
        }
        p.decisions.push((req.id, decision.clone()));
    }
    p
}

fn fail(
    p: &mut ClosePlan,
    req: &ClaimedRequest,
    f: &RuleFailure,
    policy: RetryPolicy,
    now: Millis,
    actor: &str,
    jitter: f64,
) -> Fate {
    let failures = req.failures + 1;
    let error = format!("{}: {}", f.kind.as_str(), f.message);
    if failures >= policy.max_failures {
        p.parked.push((req.id, error.clone()));
        p.events.push(NewEvent {
            request_id: req.id,
            kind: "sospesa_errore_regola",
            actor: actor.to_string(),
            detail: json!({ "tentativi": failures, "errore": error }),
            notifications: Vec::new(),
        });
        Fate::Parked
    } else {
        let at = now + policy.delay_ms(failures, jitter);
        p.retried.push((req.id, at, error.clone()));
        p.events.push(NewEvent {
            request_id: req.id,
            kind: "errore_regola",
            actor: actor.to_string(),
            detail: json!({ "tentativo": failures, "errore": error, "nuovo_tentativo_ms": at }),
            notifications: Vec::new(),
        });
        Fate::Retried
    }
}

struct EffectChanges {
    subjects: Vec<Subject>,
    revocations: Vec<(String, String)>,
}

/// The rows and subjects an accepted decision's effects change, checked against the current world. A
/// target that is missing or not in the state the effect needs is a rule error: the decision's version
/// check already passed, so the rule saw that state itself.
fn effect_changes(d: &Decision, world: &World, earlier: &[Revocation]) -> Result<EffectChanges, String> {
    let mut out = EffectChanges { subjects: Vec::new(), revocations: Vec::new() };
    for effect in &d.effects {
        match effect {
            Effect::RevokeDelegation { delegation_id, from } => {
                if !is_iso_date(from) {
                    return Err(format!("effect revoke_delegation: `from` must be a date YYYY-MM-DD, got `{from}`"));
                }
                let target = world
                    .deleghe
                    .get(delegation_id)
                    .ok_or_else(|| format!("effect revoke_delegation: no delega with id `{delegation_id}`"))?;
                let read = Subject::Matricola(target.matricola.clone());
                if !d.read_versions().any(|(s, _)| *s == read) {
                    return Err(format!(
                        "effect revoke_delegation: the rule must read the deleghe of the position (ctx.delegation or ctx.delegations) before revoking `{delegation_id}`"
                    ));
                }
                let revoked_earlier = |id: &str| earlier.iter().any(|r| r.delega_id == id);
                if target.stato != StatoDelega::Attiva || revoked_earlier(&target.id) {
                    return Err(format!("effect revoke_delegation: delega `{delegation_id}` is not ATTIVA"));
                }
                let children = world.deleghe.values().filter(|c| {
                    c.padre.as_deref() == Some(target.id.as_str())
                        && c.stato == StatoDelega::Attiva
                        && !revoked_earlier(&c.id)
                });
                for d in std::iter::once(target).chain(children) {
                    out.subjects.extend(delega_subjects(d));
                    out.revocations.push((d.id.clone(), from.clone()));
                }
            }
        }
    }
    out.subjects.sort();
    out.subjects.dedup();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::decision::{FactRead, FailureKind, Trace};
    use crate::domain::facts::TipoDelega;

    const POLICY: RetryPolicy = RetryPolicy { max_failures: 3, base_delay_ms: 1000, max_delay_ms: 60_000 };

    fn req(id: i64, token: i64) -> ClaimedRequest {
        ClaimedRequest {
            id,
            protocollo: format!("7000.2026.{id:07}"),
            task: "T".into(),
            soggetto: "1234567890".into(),
            sede: "7000".into(),
            payload: Default::default(),
            contatti: ContattiNotifica { email: Some("a@b.it".into()), consenso_email: true, ..Default::default() },
            token,
            failures: 0,
            creata_il: 0,
            taken_over: false,
        }
    }

    fn delega(id: &str, padre: Option<&str>) -> Delega {
        Delega {
            id: id.into(),
            matricola: "1234567890".into(),
            delegato_cf: format!("CF{id}"),
            tipo: if padre.is_some() { TipoDelega::Subdelega } else { TipoDelega::Intermediario },
            stato: StatoDelega::Attiva,
            data_inizio: "2022-01-01".into(),
            data_fine: None,
            data_revoca: None,
            padre: padre.map(str::to_string),
        }
    }

    fn accept_revoke(id: &str, seen: i64) -> Evaluation {
        Evaluation::Decided(Decision {
            outcome: Outcome::Accolta,
            reasons: vec![],
            effects: vec![Effect::RevokeDelegation { delegation_id: id.into(), from: "2026-12-01".into() }],
            rule_version: "v".into(),
            trace: Trace {
                facts: vec![FactRead {
                    call: "delegation".into(),
                    subject: Subject::Matricola("1234567890".into()),
                    version: seen,
                    value: serde_json::Value::Null,
                }],
                ..Default::default()
            },
            duration_us: 1,
        })
    }

    fn world() -> World {
        let mut w = World::default();
        w.tokens.insert(1, Some(1));
        w.tokens.insert(2, Some(5));
        w.versions.insert(Subject::Matricola("1234567890".into()), 3);
        for d in [delega("D-1", None), delega("D-3", Some("D-1"))] {
            w.deleghe.insert(d.id.clone(), d);
        }
        w
    }

    #[test]
    fn acceptance_cascades_and_second_reader_conflicts() {
        let batch = vec![(req(1, 1), accept_revoke("D-1", 3)), (req(2, 5), accept_revoke("D-1", 3))];
        let p = plan(&batch, &world(), POLICY, 0, "w", || 0.5);
        assert_eq!(p.fates, vec![(1, Fate::Closed(Outcome::Accolta)), (2, Fate::Conflict)]);
        let mut revoked: Vec<_> = p.revocations.iter().map(|r| r.delega_id.as_str()).collect();
        revoked.sort();
        assert_eq!(revoked, ["D-1", "D-3"]);
        assert_eq!(p.versions[&Subject::Matricola("1234567890".into())], 4);
        assert_eq!(p.events.len(), 1);
        assert_eq!(p.events[0].notifications.len(), 1);
    }

    #[test]
    fn stale_token_writes_nothing() {
        let batch = vec![(req(2, 4), accept_revoke("D-1", 3))];
        let p = plan(&batch, &world(), POLICY, 0, "w", || 0.5);
        assert_eq!(p.fates, vec![(2, Fate::Stale)]);
        assert!(p.decisions.is_empty() && p.revocations.is_empty() && p.events.is_empty());
    }

    #[test]
    fn failures_retry_then_park() {
        let failure = Evaluation::Failed(RuleFailure { kind: FailureKind::Budget, message: "ops".into() });
        let p = plan(&[(req(1, 1), failure.clone())], &world(), POLICY, 1000, "w", || 0.0);
        assert_eq!(p.retried, vec![(1, 1500, "budget: ops".into())]);
        let mut last = req(1, 1);
        last.failures = 2;
        let p = plan(&[(last, failure)], &world(), POLICY, 1000, "w", || 0.0);
        assert_eq!(p.fates, vec![(1, Fate::Parked)]);
    }

    #[test]
    fn revoking_what_the_rule_did_not_read_is_a_rule_error() {
        let Evaluation::Decided(mut d) = accept_revoke("D-1", 3) else { unreachable!() };
        d.trace.facts.clear();
        let p = plan(&[(req(1, 1), Evaluation::Decided(d))], &world(), POLICY, 0, "w", || 0.0);
        assert_eq!(p.fates, vec![(1, Fate::Retried)]);
    }

    #[test]
    fn backoff_is_capped() {
        assert_eq!(POLICY.delay_ms(1, 0.0), 500);
        assert_eq!(POLICY.delay_ms(40, 1.0), 60_000);
    }
}
