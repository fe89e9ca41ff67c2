//! `rules promote`, `rules approve`, `rules versions`, `rules show`: the command line of rule governance
//! (`app::rule_sets`), and `rules status`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{Outcome, app_failure, existing_store, input, runtime};
use crate::app::{self, Actor};
use crate::clock::now_ms;
use crate::config::Config;
use crate::daemon;
use crate::domain::time::rfc3339;
use crate::output::{out, outln};
use crate::store::{RuleSetRecord, RuleSetState};

/// Who promotes or approves on the command line: `--author`/`--by`, else the login name of the shell.
fn person(given: Option<String>, flag: &str) -> Result<String, super::Failure> {
    given
        .or_else(|| std::env::var("SUDO_USER").ok())
        .or_else(|| std::env::var("USER").ok())
        .or_else(|| std::env::var("LOGNAME").ok())
        .filter(|n| !n.trim().is_empty())
        .ok_or_else(|| input(anyhow::anyhow!("who is it? pass {flag} NAME (no USER or LOGNAME to take it from)")))
}

pub(super) async fn promote(
    config: &Config,
    dir: Option<PathBuf>,
    author: Option<String>,
    reason: &str,
    json: bool,
) -> Outcome {
    let dir = dir.unwrap_or_else(|| config.rules.dir.clone());
    let author = person(author, "--author")?;
    let files = crate::rules::read_sources(&dir).map_err(input)?;
    if files.is_empty() {
        return Err(input(anyhow::anyhow!("{}: no rule file (.rhai, .yaml) to promote", dir.display())));
    }
    let store = existing_store(config).await?;
    let evaluator = Arc::new(daemon::evaluator(config));
    let candidate = app::rule_sets::Candidate { files, author: &author, reason };
    let promoted = app::rule_sets::promote(
        &store,
        &Actor::Cli,
        evaluator,
        candidate,
        &config.rules.promotion,
        &config.intake.sede_predefinita,
        now_ms(),
    )
    .await
    .map_err(app_failure)?;
    if json {
        outln!("{}", serde_json::to_string_pretty(&promoted).map_err(runtime)?);
    } else if promoted.unchanged {
        outln!("{}: identical to the active rule set {}: nothing to promote", dir.display(), promoted.id);
    } else {
        out!("{}", promoted.gates.render());
        match promoted.state {
            RuleSetState::Active => {
                outln!("rule set {} promoted and active: every instance switches to it", promoted.id)
            }
            RuleSetState::AwaitingApproval => outln!(
                "rule set {} recorded, awaiting approval: another person runs `smart-taskd rules approve {}`",
                promoted.id,
                promoted.id
            ),
            _ => outln!("rule set {} refused: nothing changes (`smart-taskd rules show {}`)", promoted.id, promoted.id),
        }
    }
    match promoted.state {
        RuleSetState::Refused => Err(input(anyhow::anyhow!(
            "rules promote: refused by {}",
            promoted.gates.refused_by().iter().map(|g| g.as_str()).collect::<Vec<_>>().join(", ")
        ))),
        _ => Ok(()),
    }
}

pub(super) async fn approve(config: &Config, id: i64, by: Option<String>, json: bool) -> Outcome {
    let by = person(by, "--by")?;
    let store = existing_store(config).await?;
    let set = app::rule_sets::approve(&store, &Actor::Cli, id, &by, now_ms()).await.map_err(app_failure)?;
    if json {
        outln!("{}", serde_json::to_string_pretty(&summary(&set)).map_err(runtime)?);
    } else {
        outln!("rule set {} approved by {} and active: every instance switches to it", set.id, by);
    }
    Ok(())
}

/// A rule set without its files and diff (`rules versions --json`).
fn summary(set: &RuleSetRecord) -> serde_json::Value {
    serde_json::json!({
        "id": set.id, "state": set.state, "digest": set.digest, "tasks": set.tasks, "author": set.author,
        "reason": set.reason, "based_on": set.based_on, "submitted_at": rfc3339(set.submitted_at),
        "approved_by": set.approved_by, "approved_at": set.approved_at.map(rfc3339),
        "activated_at": set.activated_at.map(rfc3339), "retired_at": set.retired_at.map(rfc3339),
    })
}

pub(super) async fn versions(config: &Config, limit: i64, json: bool) -> Outcome {
    let store = existing_store(config).await?;
    let sets = app::rule_sets::rule_sets(&store, &Actor::Cli, limit).await.map_err(app_failure)?;
    if json {
        let all: Vec<serde_json::Value> = sets.iter().map(summary).collect();
        outln!("{}", serde_json::to_string_pretty(&all).map_err(runtime)?);
        return Ok(());
    }
    if sets.is_empty() {
        outln!("no rule set promoted yet: `smart-taskd rules promote DIR --reason TEXT`");
    }
    for s in &sets {
        outln!(
            "{:>4}  {:<26} {}  di {}: {}",
            s.id,
            s.state.label(),
            rfc3339(s.submitted_at),
            s.author,
            s.reason.lines().next().unwrap_or_default()
        );
        if let Some(by) = &s.approved_by {
            outln!("      approvata da {by}");
        }
    }
    Ok(())
}

pub(super) async fn show(config: &Config, id: i64, files: Option<&Path>, json: bool) -> Outcome {
    let store = existing_store(config).await?;
    let set = app::rule_sets::rule_set(&store, &Actor::Cli, id).await.map_err(app_failure)?;
    if let Some(dir) = files {
        write_files(&set.files, dir).map_err(input)?;
        outln!("rule set {}: {} file(s) written into {}", set.id, set.files.len(), dir.display());
        return Ok(());
    }
    if json {
        outln!("{}", serde_json::to_string_pretty(&set).map_err(runtime)?);
        return Ok(());
    }
    outln!("rule set {} — {}", set.id, set.state.label());
    outln!("  promossa da {} il {}: {}", set.author, rfc3339(set.submitted_at), set.reason);
    if let (Some(by), Some(at)) = (&set.approved_by, set.approved_at) {
        outln!("  approvata da {by} il {}", rfc3339(at));
    }
    if let Some(at) = set.activated_at {
        outln!("  attivata il {}", rfc3339(at));
    }
    if let Some(at) = set.retired_at {
        outln!("  ritirata il {}", rfc3339(at));
    }
    for (task, version) in &set.tasks {
        outln!("  {task:<36} {version}");
    }
    match serde_json::from_value::<crate::ruletools::promote::Gates>(set.results.clone()) {
        Ok(gates) => out!("{}", gates.render()),
        Err(e) => outln!("  (gate results unreadable: {e})"),
    }
    let base = set.based_on.map_or("nothing".to_string(), |b| format!("rule set {b}"));
    outln!("diff against {base}:");
    out!("{}", set.diff);
    Ok(())
}

/// `rules show N --files DIR`: the rule set's files into an empty or new directory.
fn write_files(files: &crate::rules::Sources, to: &Path) -> anyhow::Result<()> {
    use anyhow::Context;
    if to.exists() && std::fs::read_dir(to).with_context(|| format!("cannot read {}", to.display()))?.next().is_some() {
        anyhow::bail!("{}: not empty; name a new or empty directory", to.display());
    }
    for (name, text) in files {
        crate::rules::check_rule_path(name)?;
        let path = to.join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).with_context(|| format!("cannot create {}", parent.display()))?;
        }
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}

pub(super) async fn status(config: &Config, json: bool) -> Outcome {
    let store = existing_store(config).await?;
    let statuses = store.rule_status().await.map_err(runtime)?;
    if json {
        outln!("{}", serde_json::to_string_pretty(&statuses).map_err(runtime)?);
        return Ok(());
    }
    if statuses.is_empty() {
        outln!("no daemon has started on this database yet");
    }
    for s in statuses {
        let set = s.rule_set.map_or("cartella delle regole".to_string(), |id| format!("rule set {id}"));
        outln!(
            "istanza {} — {set}, attivata il {}, verificata il {}",
            s.instance,
            rfc3339(s.activated_at),
            rfc3339(s.checked_at)
        );
        for (task, version) in &s.active {
            outln!("  {task:<36} {version}");
        }
        if s.candidate_errors.is_empty() {
            outln!("  ultima versione candidata: attivata");
        } else {
            outln!("  ultima versione candidata RIFIUTATA ({} problemi):", s.candidate_errors.len());
            for e in &s.candidate_errors {
                outln!("    - {e}");
            }
        }
    }
    Ok(())
}
