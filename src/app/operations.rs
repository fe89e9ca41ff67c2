//! What the people who run the service, and the operators in their console, see of its health: the counts the
//! dashboard shows, each instance's active rule versions with refused candidates, the promoted rule sets, and the notifications that
//! could not be delivered (an operator sees those of their sede's requests only), with a retry.

use super::{Actor, AppError};
use crate::domain::time::Millis;
use crate::store::{NotificationView, QueueCounts, RetryTarget, RuleSetRecord, RuleStatus, Store, StoredDecision};

/// The most undeliverable notifications listed.
const DEAD_SHOWN: i64 = 100;

pub struct Operations {
    pub counts: QueueCounts,
    pub rules: Vec<RuleStatus>,
    /// Requests on which a shadow candidate decided otherwise than the active rule (of the actor's sede).
    pub shadow: Vec<ShadowDisagreement>,
    /// Recipients as stored: whoever shows them masks them.
    pub undeliverable: Vec<NotificationView>,
    /// The most recent promoted rule sets (who promoted and approved them, and why).
    pub rule_sets: Vec<RuleSetRecord>,
}

/// The most recent rule sets listed.
const RULE_SETS_SHOWN: i64 = 10;

/// Whether the actor may see the operations' view: operators, the CLI, the people who run it.
fn may_see(actor: &Actor) -> bool {
    !matches!(actor, Actor::Richiedente { .. } | Actor::Integratore { .. })
}

pub async fn operations(store: &Store, actor: &Actor) -> Result<Operations, AppError> {
    if !may_see(actor) {
        return Err(AppError::Forbidden("the operations' view is for operators and operations".into()));
    }
    let mut undeliverable = Vec::new();
    for n in store.list_notifications(true, DEAD_SHOWN).await? {
        if visible(store, actor, &n).await? {
            undeliverable.push(n);
        }
    }
    let mut shadow = Vec::new();
    for d in store.shadow_disagreements(None).await? {
        if shadow.len() == SHADOW_SHOWN {
            break;
        }
        let seen = match actor {
            Actor::Operatore { .. } => {
                store.request(&d.request_id.to_string()).await?.is_some_and(|v| actor.may_see(&v))
            }
            _ => true,
        };
        if seen {
            shadow.push(ShadowDisagreement::of(&d));
        }
    }
    Ok(Operations {
        counts: store.counts().await?,
        rules: store.rule_status().await?,
        shadow,
        undeliverable,
        rule_sets: store.rule_sets(RULE_SETS_SHOWN).await?,
    })
}

/// The most shadow disagreements listed.
const SHADOW_SHOWN: usize = 100;

/// A request the active rule and its shadow candidate decided differently: each side's version, outcome (or the
/// candidate's error) and reason codes.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ShadowDisagreement {
    pub protocollo: String,
    pub task: String,
    pub attiva: String,
    pub candidata: String,
}

impl ShadowDisagreement {
    pub fn of(d: &StoredDecision) -> ShadowDisagreement {
        let active: Vec<&str> = d.decision.reasons.iter().map(|r| r.codice.as_str()).collect();
        let candidata = d.decision.trace.shadow.as_ref().map_or_else(
            || "?".to_string(),
            |s| {
                let outcome = s.outcome.map_or_else(
                    || format!("errore: {}", s.error.as_deref().unwrap_or("")),
                    |o| o.as_str().to_string(),
                );
                format!("{} {outcome} [{}]", s.version, s.reasons.join(", "))
            },
        );
        ShadowDisagreement {
            protocollo: d.protocollo.clone(),
            task: d.task.clone(),
            attiva: format!("{} {} [{}]", d.decision.rule_version, d.decision.outcome.as_str(), active.join(", ")),
            candidata,
        }
    }
}

/// An operator sees the notifications of their sede's requests; the others every one.
async fn visible(store: &Store, actor: &Actor, n: &NotificationView) -> Result<bool, AppError> {
    Ok(match actor {
        Actor::Operatore { .. } => store.request(&n.protocollo).await?.is_some_and(|view| actor.may_see(&view)),
        _ => true,
    })
}

/// Sends an undeliverable notification again (an acting operator of its request's sede, or operations).
pub async fn retry_notification(store: &Store, actor: &Actor, id: i64, now: Millis) -> Result<(), AppError> {
    if matches!(actor, Actor::Operatore { agisce: false, .. }) || !may_see(actor) {
        return Err(AppError::Forbidden("a read-only operator does not send notifications again".into()));
    }
    let known = store.list_notifications(true, DEAD_SHOWN).await?.into_iter().find(|n| n.id == id);
    match known {
        Some(n) if visible(store, actor, &n).await? => {
            store.retry_notifications(RetryTarget::One(id), now).await?;
            Ok(())
        }
        _ => Err(AppError::NotFound(format!("no undeliverable notification {id}"))),
    }
}
