//! Rule governance: a candidate rule set is promoted — vetted by every gate (`ruletools::promote`), recorded
//! with its files, author, reason, diff and results — and activated at once, held for a second person's
//! approval, or refused. The daemons of every instance then run the active set (`rules.activation: promoted`).
//! Shared by `rules promote/approve/versions/show` and the API.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Serialize;

use super::{Actor, AppError};
use crate::config::PromotionConfig;
use crate::domain::time::Millis;
use crate::rules::{Evaluator, RuleSet, Sources, SourcesDir, load_rule_set_from_sources};
use crate::ruletools::promote::{Gates, diff, digest, replay_gate, vet_offline};
use crate::store::{NewRuleSet, RuleSetRecord, RuleSetState, Store};

/// Bounds on the words a promotion records.
const MAX_NAME_CHARS: usize = 100;
const MAX_REASON_CHARS: usize = 2_000;

/// What a promotion did.
#[derive(Debug, Clone, Serialize)]
pub struct Promoted {
    /// The rule set's number (the active one's when nothing changed).
    pub id: i64,
    pub state: RuleSetState,
    /// The candidate is the active set, file for file: nothing was recorded.
    pub unchanged: bool,
    pub gates: Gates,
    pub diff: String,
}

/// A candidate and who promotes it, why.
pub struct Candidate<'a> {
    pub files: Sources,
    pub author: &'a str,
    pub reason: &'a str,
}

fn may_govern(actor: &Actor) -> Result<(), AppError> {
    match actor {
        Actor::Cli | Actor::Operazioni { .. } => Ok(()),
        _ => Err(AppError::Forbidden("only the people who run the service promote and approve rule sets".into())),
    }
}

fn named(what: &str, value: &str, max: usize) -> Result<(), AppError> {
    let chars = value.trim().chars().count();
    if chars == 0 || chars > max || value.chars().any(char::is_control) {
        return Err(AppError::Conflict(format!(
            "{what}: expected 1 to {max} characters without control characters (who promotes and why stay on record)"
        )));
    }
    Ok(())
}

/// Vets `candidate` through every gate and records it: active (replacing the active set), awaiting approval,
/// or refused with each failed gate's findings. A candidate identical to the active set records nothing.
pub async fn promote(
    store: &Store,
    actor: &Actor,
    evaluator: Arc<Evaluator>,
    candidate: Candidate<'_>,
    policy: &PromotionConfig,
    sede_predefinita: &str,
    now: Millis,
) -> Result<Promoted, AppError> {
    may_govern(actor)?;
    named("the author", candidate.author, MAX_NAME_CHARS)?;
    named("the reason", candidate.reason, MAX_REASON_CHARS)?;
    let files = candidate.files;
    let digest = digest(&files);
    let active = store.active_rule_set().await?;
    if let Some(a) = active.as_ref().filter(|a| a.digest == digest) {
        let gates = serde_json::from_value(a.results.clone()).unwrap_or_default();
        return Ok(Promoted { id: a.id, state: RuleSetState::Active, unchanged: true, gates, diff: String::new() });
    }
    let dir = SourcesDir::write(&files).map_err(|e| AppError::Conflict(e.to_string()))?;
    let sede = sede_predefinita.to_string();
    let offline = {
        let evaluator = evaluator.clone();
        let path = dir.path().to_path_buf();
        tokio::task::spawn_blocking(move || vet_offline(&path, &evaluator, &sede, now))
            .await
            .map_err(|e| AppError::RuleFailed(format!("the vetting stopped: {e}")))?
    };
    drop(dir);
    let (rules, mut gates) = offline;
    let tasks: BTreeMap<String, String> =
        rules.iter().flat_map(|r| r.tasks.values()).map(|t| (t.id.clone(), t.version.clone())).collect();
    if let (Some(rules), true) = (rules, gates.refused_by().is_empty()) {
        let loader = Arc::new(crate::worker::StoreLoader::new(store.clone()));
        replay_gate(&mut gates, store, Arc::new(rules), evaluator, loader, policy, now).await?;
    }
    let state = gates.state();
    let empty = Sources::new();
    let diff = diff(active.as_ref().map_or(&empty, |a| &a.files), &files);
    let results = serde_json::to_value(&gates)?;
    let id = store
        .record_rule_set(
            &NewRuleSet {
                digest: &digest,
                files: &files,
                tasks: &tasks,
                author: candidate.author.trim(),
                reason: candidate.reason.trim(),
                diff: &diff,
                results: &results,
                state,
                based_on: active.map(|a| a.id),
            },
            now,
        )
        .await?;
    Ok(Promoted { id, state, unchanged: false, gates, diff })
}

/// Activates a rule set awaiting approval, approved by `by` (not its author).
pub async fn approve(store: &Store, actor: &Actor, id: i64, by: &str, now: Millis) -> Result<RuleSetRecord, AppError> {
    may_govern(actor)?;
    named("the approver", by, MAX_NAME_CHARS)?;
    Ok(store.approve_rule_set(id, by.trim(), now).await?)
}

/// The most recent rule sets first.
pub async fn rule_sets(store: &Store, actor: &Actor, limit: i64) -> Result<Vec<RuleSetRecord>, AppError> {
    may_govern(actor)?;
    Ok(store.rule_sets(limit.clamp(1, 1_000)).await?)
}

/// One rule set, whole.
pub async fn rule_set(store: &Store, actor: &Actor, id: i64) -> Result<RuleSetRecord, AppError> {
    may_govern(actor)?;
    store.rule_set(id).await?.ok_or_else(|| AppError::NotFound(format!("no rule set {id}")))
}

/// The rules of a recorded set, compiled from its files, checked to be the versions it recorded.
pub fn compile(set: &RuleSetRecord, evaluator: &Evaluator) -> Result<RuleSet, AppError> {
    let rules = load_rule_set_from_sources(&set.files, evaluator)
        .map_err(|e| AppError::RuleFailed(format!("rule set {} does not compile any more: {e}", set.id)))?;
    let versions: BTreeMap<String, String> = rules.tasks.values().map(|t| (t.id.clone(), t.version.clone())).collect();
    if versions != set.tasks {
        return Err(AppError::RuleFailed(format!(
            "rule set {} compiles to other versions than it recorded ({versions:?}, recorded {:?})",
            set.id, set.tasks
        )));
    }
    Ok(rules)
}
