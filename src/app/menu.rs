//! The task menu: which task types a requester may submit, from the rule pack's `task.yaml` (`profili`,
//! `pilota`), so a new task type appears without code; and the pilot check intake applies to the same data.

use std::collections::HashMap;

use serde::Serialize;

use super::{Actor, AppError};
use crate::rules::{RuleSet, TaskRule};
use crate::store::{NewRequest, Store};

/// A task type the caller may submit.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct MenuItem {
    #[schema(max_length = 1000)]
    pub task: String,
    #[schema(max_length = 1000)]
    pub label: String,
    /// Whether the request must name the position (`matricola`).
    pub richiede_matricola: bool,
    /// Offered to a pilot group only (the group's name is not shown).
    pub sperimentale: bool,
    /// The JSON Schema of the task's own fields (the envelope excluded), for the portal's form.
    #[schema(value_type = Object)]
    pub schema: serde_json::Value,
}

/// The pilot groups `cf` belongs to, of those the rules name.
async fn groups_of(store: &Store, rules: &RuleSet, cf: &str) -> Result<Vec<String>, AppError> {
    let mut named: Vec<&str> = rules.tasks.values().filter_map(|t| t.pilota.as_deref()).collect();
    named.sort_unstable();
    named.dedup();
    Ok(store.pilot_groups_of(cf, &named).await?)
}

fn open_to(rule: &TaskRule, groups: &[String]) -> bool {
    rule.pilota.as_ref().is_none_or(|g| groups.contains(g))
}

/// The menu of a requester: the tasks their profile may submit and, of those in a pilot phase, the ones whose
/// group they belong to. The CLI names the requester; other actors submit nothing.
pub async fn menu(store: &Store, rules: &RuleSet, actor: &Actor) -> Result<Vec<MenuItem>, AppError> {
    let Actor::Richiedente { cf, profilo } = actor else {
        return Err(AppError::Forbidden("the menu is a requester's: only a requester submits requests".into()));
    };
    let groups = groups_of(store, rules, cf).await?;
    Ok(rules
        .tasks
        .values()
        .filter(|rule| rule.profili.contains(profilo) && open_to(rule, &groups))
        .map(|rule| MenuItem {
            task: rule.id.clone(),
            label: rule.label.clone(),
            richiede_matricola: rule.requires_matricola,
            sperimentale: rule.pilota.is_some(),
            schema: rule.schema_source.clone(),
        })
        .collect())
}

/// Refuses a submission holding a task in a pilot phase whose requester is not in its group.
pub(super) async fn check_pilot(store: &Store, rules: &RuleSet, requests: &[NewRequest]) -> Result<(), AppError> {
    if rules.tasks.values().all(|t| t.pilota.is_none()) {
        return Ok(());
    }
    // One query per requester, not per request: a list may hold thousands of one requester's requests.
    let mut groups_by_cf: HashMap<&str, Vec<String>> = HashMap::new();
    for (i, request) in requests.iter().enumerate() {
        let Some(rule) = rules.get(&request.envelope.task) else { continue };
        if rule.pilota.is_none() {
            continue;
        }
        let cf = request.envelope.richiedente_cf.as_str();
        if !groups_by_cf.contains_key(cf) {
            groups_by_cf.insert(cf, groups_of(store, rules, cf).await?);
        }
        if !open_to(rule, &groups_by_cf[cf]) {
            return Err(AppError::Forbidden(format!(
                "request {} of {}: task {} is released to a pilot group only, and the requester is not in it",
                i + 1,
                requests.len(),
                rule.id
            )));
        }
    }
    Ok(())
}
