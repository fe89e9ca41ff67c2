//! Which rules a daemon runs, and how they change while it runs. With `rules.activation: promoted` (the
//! default) the active rule set of the database — what `rules promote` or an approval activated — on every
//! instance, whatever the rules directory holds; each instance follows a new activation within
//! `rules.watch_interval_ms` (or at once on SIGHUP). With `directory` (development) the rules directory,
//! vetted like a reload (`reload`) whenever it changes, the last good set staying when it is refused.

use std::sync::Arc;

use anyhow::Context;
use tracing::{error, info, warn};

use crate::clock::now_ms;
use crate::config::{Activation, Config};
use crate::rules::{Evaluator, RuleSet, load_rule_set};
use crate::store::{RuleStatus, Store};
use crate::worker::Pipeline;

/// Loads the rules directory named by the configuration, compiling it only (tools that take a directory as
/// it is: `bench`, the library tests). The daemon and intake use [`active_rules`] and [`intake_rules`].
pub fn load_rules(config: &Config, evaluator: &Evaluator) -> anyhow::Result<RuleSet> {
    load_rule_set(&config.rules.dir, evaluator)
        .with_context(|| format!("cannot load the rules (rules.dir = {})", config.rules.dir.display()))
}

/// A rules directory refused by the vetting of a reload: every problem, one per line.
#[derive(Debug, thiserror::Error)]
#[error("the rules in {dir} are refused ({} problem(s)):\n  {}", problems.len(), problems.join("\n  "))]
pub struct RulesRefused {
    pub dir: std::path::PathBuf,
    pub problems: Vec<String>,
}

/// Vets the rules directory exactly as a reload does: compiles, `rules check` clean, every case passes.
pub fn vet_rules(config: &Config, evaluator: &Evaluator) -> Result<RuleSet, RulesRefused> {
    crate::reload::vet(&config.rules.dir, evaluator, &config.intake.sede_predefinita, now_ms())
        .map_err(|problems| RulesRefused { dir: config.rules.dir.clone(), problems })
}

/// The rules a daemon starts with.
pub struct Active {
    pub rules: RuleSet,
    /// The promoted rule set they are (None: a rules directory).
    pub rule_set: Option<i64>,
    /// Directory mode: the directory was refused and the last activated set runs instead.
    pub refused: Option<RulesRefused>,
}

fn nothing_promoted() -> anyhow::Error {
    anyhow::anyhow!(
        "no rule set has been promoted on this database (rules.activation: promoted): vet and activate one with \
         `smart-taskd rules promote DIR --reason TEXT`, or set rules.activation: directory to run a rules \
         directory as it is saved (development)"
    )
}

/// The rules a starting daemon runs. Promoted: the active rule set (none: an error saying how to promote one).
/// Directory: its directory if it passes the vetting of a reload (its sources are then recorded in the
/// database), else the set last activated, rebuilt from the database — returned with the directory's
/// problems, which the daemon reports loudly. With no activated set to fall back on, the refusal.
pub async fn active_rules(config: &Config, evaluator: &Evaluator, store: &Store) -> anyhow::Result<Active> {
    if config.rules.activation == Activation::Promoted {
        let (id, rules) = promoted_rules(evaluator, store).await?.ok_or_else(nothing_promoted)?;
        return Ok(Active { rules, rule_set: Some(id), refused: None });
    }
    match vet_rules(config, evaluator) {
        Ok(rules) => {
            record_sources(store, &rules).await?;
            Ok(Active { rules, rule_set: None, refused: None })
        }
        Err(refused) => match stored_rules(evaluator, store, &config.instance_name()).await? {
            Some(rules) => Ok(Active { rules, rule_set: None, refused: Some(refused) }),
            None => Err(anyhow::Error::new(refused)
                .context("no rule set was ever activated on this database to fall back on: fix the rules")),
        },
    }
}

/// The rules intake validates submissions with (and operators close with). Promoted: the active rule set.
/// Directory: the set last activated, from the database, so a candidate left on disk that a reload refused
/// changes nothing; before any activation (a fresh install) the rules directory, vetted as a reload would.
pub async fn intake_rules(config: &Config, evaluator: &Evaluator, store: &Store) -> anyhow::Result<RuleSet> {
    if config.rules.activation == Activation::Promoted {
        return Ok(promoted_rules(evaluator, store).await?.ok_or_else(nothing_promoted)?.1);
    }
    match stored_rules(evaluator, store, &config.instance_name()).await? {
        Some(rules) => Ok(rules),
        None => Ok(vet_rules(config, evaluator)?),
    }
}

/// The active promoted rule set, compiled, its sources kept for `explain` (content-addressed: once).
async fn promoted_rules(evaluator: &Evaluator, store: &Store) -> anyhow::Result<Option<(i64, RuleSet)>> {
    let Some(set) = store.active_rule_set().await? else { return Ok(None) };
    let rules = crate::app::rule_sets::compile(&set, evaluator)?;
    record_sources(store, &rules).await?;
    Ok(Some((set.id, rules)))
}

async fn stored_rules(evaluator: &Evaluator, store: &Store, instance: &str) -> anyhow::Result<Option<RuleSet>> {
    let Some((versions, files)) = store.last_activated_rules(instance).await? else { return Ok(None) };
    let rules = crate::rules::load_rule_set_from_sources(&files, evaluator)
        .context("cannot rebuild the last activated rule set from the database")?;
    let rebuilt: std::collections::BTreeMap<String, String> =
        rules.tasks.values().map(|r| (r.id.clone(), r.version.clone())).collect();
    anyhow::ensure!(
        rebuilt == versions,
        "the last activated rule set rebuilt from the database has other versions ({rebuilt:?}, expected {versions:?})"
    );
    Ok(Some(rules))
}

/// Keeps the sources of every version of `rules` in the database (explain, restarts).
pub async fn record_sources(store: &Store, rules: &RuleSet) -> anyhow::Result<()> {
    let versions: Vec<(&str, &str, &crate::rules::Sources)> =
        rules.tasks.values().map(|r| (r.version.as_str(), r.id.as_str(), &r.sources)).collect();
    store.record_rule_sources(&versions, now_ms()).await.context("cannot record the rules' sources")
}

/// Brings the running rules up to date, on SIGHUP and every `rules.watch_interval_ms` (`directory_changed`:
/// whether the directory's fingerprint moved since the last look). Returns the status to keep.
pub async fn refresh(
    config: &Config,
    pipeline: &Arc<Pipeline>,
    previous: RuleStatus,
    directory_changed: bool,
) -> RuleStatus {
    match config.rules.activation {
        Activation::Promoted => follow_promoted(pipeline, previous).await,
        Activation::Directory if directory_changed => {
            info!("vetting the rules directory");
            reload(config, pipeline, previous).await
        }
        Activation::Directory => previous,
    }
}

/// Switches to the database's active rule set when it is not the one running.
async fn follow_promoted(pipeline: &Arc<Pipeline>, previous: RuleStatus) -> RuleStatus {
    let active = match pipeline.store.active_rule_set_id().await {
        Ok(id) => id,
        Err(e) => {
            warn!(error = %e, "cannot read which rule set is active: the running one stays");
            return previous;
        }
    };
    if active.is_none() || active == previous.rule_set {
        return previous;
    }
    let now = now_ms();
    let status = match promoted_rules(&pipeline.evaluator, &pipeline.store).await {
        Ok(Some((id, rules))) => {
            let previous_versions = previous.active.clone();
            let status = crate::reload::active_status(&pipeline.instance, &rules, now, Vec::new(), now, Some(id));
            pipeline.rules.store(Arc::new(rules));
            let running = pipeline.rules.load();
            crate::telemetry::metrics::rules_activated(&metric_tasks(&running), Some(&previous_versions));
            crate::telemetry::metrics::reload(true);
            info!(rule_set = id, "promoted rule set activated");
            status
        }
        Ok(None) => return previous,
        Err(e) => {
            crate::telemetry::metrics::reload(false);
            error!(error = %e, "the promoted rule set cannot run here: the running one stays");
            RuleStatus { candidate_errors: vec![format!("{e:#}")], checked_at: now, ..previous }
        }
    };
    record_status(pipeline, &status).await;
    status
}
/// Vets the rules directory and activates it if it passes (compiles, lints clean, cases pass); otherwise
/// the running rules stay. Either way the outcome is logged and recorded for `rules status`.
async fn reload(config: &Config, pipeline: &Arc<Pipeline>, previous: RuleStatus) -> RuleStatus {
    let mut reloading = vec![sd_notify::NotifyState::Reloading];
    reloading.extend(sd_notify::NotifyState::monotonic_usec_now().ok());
    let _ = sd_notify::notify(&reloading);
    let previous_versions = previous.active.clone();
    let (dir, sede, p, prev) =
        (config.rules.dir.clone(), config.intake.sede_predefinita.clone(), pipeline.clone(), previous.clone());
    let status = tokio::task::spawn_blocking(move || {
        crate::reload::reload(&dir, &p.evaluator, &p.rules, &prev, &sede, now_ms())
    })
    .await
    .unwrap_or(previous);
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
    crate::telemetry::metrics::reload(status.candidate_errors.is_empty());
    if status.candidate_errors.is_empty() {
        let active = pipeline.rules.load();
        if let Err(e) = record_sources(&pipeline.store, &active).await {
            warn!(error = %e, "cannot record the sources of the activated rules");
        }
        crate::telemetry::metrics::rules_fallback(false);
        pipeline.health.set_degraded(None);
        crate::telemetry::metrics::rules_activated(&metric_tasks(&active), Some(&previous_versions));
        let versions: Vec<String> = status.active.iter().map(|(t, v)| format!("{t}@{v}")).collect();
        info!(?versions, "rules activated");
    } else {
        error!(
            problems = status.candidate_errors.len(),
            first = %status.candidate_errors[0],
            "new rules refused: the running ones stay (see `smart-taskd rules status`)"
        );
    }
    record_status(pipeline, &status).await;
    status
}

/// Records `status` for `rules status` (a failure is logged: the rules run either way).
pub async fn record_status(pipeline: &Pipeline, status: &RuleStatus) {
    if let Err(e) = pipeline.store.record_rule_status(status).await {
        warn!(error = %e, "cannot record the rule status");
    }
}

/// What the metrics register of a rule set (telemetry does not read the rules).
pub fn metric_tasks(rules: &RuleSet) -> Vec<crate::telemetry::metrics::ActiveTask<'_>> {
    rules
        .tasks
        .iter()
        .map(|(task, rule)| crate::telemetry::metrics::ActiveTask {
            task,
            version: &rule.version,
            reason_codes: rule.reasons.keys().map(String::as_str).collect(),
        })
        .collect()
}
