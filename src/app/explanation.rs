//! The rule's explanation of a request's decisions, in words an analyst or an operator can follow (each check in
//! order with its source line, each fact read with its version, the effects): what `explain` prints and what the
//! console shows beside a referral.

use super::{Actor, AppError, read};
use crate::rules::RuleSet;
use crate::ruletools::explain::{named_versions, render};
use crate::store::Store;

/// The explanation of every decision of a request the actor may see; None before its first decision. Source
/// lines come from the files recorded for the version that decided; for decisions made before sources were kept,
/// from `running` when it still holds that version. `instance` names whose active versions are "the active one".
pub async fn explanation(
    store: &Store,
    actor: &Actor,
    key: &str,
    running: Option<&RuleSet>,
    instance: &str,
) -> Result<Option<String>, AppError> {
    let view = read(store, actor, key).await?;
    let decisions = store.decisions_of(&view.id.to_string()).await?;
    if decisions.is_empty() {
        return Ok(None);
    }
    let versions: Vec<&str> = decisions.iter().flat_map(|d| named_versions(&d.decision.rule_version)).collect();
    let mut sources = store.rule_sources(&versions).await?;
    for rule in running.iter().flat_map(|rules| rules.tasks.values()) {
        sources.entry(rule.version.clone()).or_insert_with(|| rule.sources.clone());
    }
    let active = store.last_activated_versions(instance).await?.unwrap_or_default();
    Ok(Some(render(&decisions, &sources, &active)))
}
