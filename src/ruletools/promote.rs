//! The gates of `rules promote`: a candidate rules directory is compiled, linted, its cases run, its reason
//! codes' coverage checked and its decisions on recent requests replayed; [`Gates::state`] says whether it may
//! run at once, must wait for a second person's approval, or is refused. The use case that records it is
//! `app::rule_sets`.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::replay::{Change, replay};
use super::{CaseOptions, run_cases};
use crate::config::PromotionConfig;
use crate::domain::time::Millis;
use crate::rules::{Evaluator, FactLoader, Finding, RuleSet, Sources, check_rules, load_rule_set};
use crate::store::{RuleSetState, Store, StoreError};

/// The gates, in the order they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Gate {
    /// Every task folder loads and its rule compiles.
    Compile,
    /// `rules check`: no finding.
    Lint,
    /// `rules test`: every case passes.
    Cases,
    /// Every reason code of every catalogue is reached by a case.
    Coverage,
    /// Recent decisions decided again: flips beyond the threshold need an approval (never a refusal).
    Replay,
}

impl Gate {
    pub fn as_str(self) -> &'static str {
        match self {
            Gate::Compile => "compile",
            Gate::Lint => "lint",
            Gate::Cases => "cases",
            Gate::Coverage => "coverage",
            Gate::Replay => "replay",
        }
    }
}

/// One gate's verdict.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GateResult {
    pub gate: Gate,
    pub passed: bool,
    /// What it found: each problem at its file:line:col, or the counts.
    pub details: Vec<String>,
}

/// The replay's summary, as recorded.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ReplaySummary {
    pub since: Millis,
    pub decisioni: usize,
    /// Outcome flipped, or the candidate could not decide.
    pub ribaltate: usize,
    pub motivi_cambiati: usize,
    pub non_decise: usize,
    /// "before → after" → count.
    pub esiti: BTreeMap<String, usize>,
    /// The first flips, for the reviewer.
    pub esempi: Vec<Change>,
}

/// Every gate a candidate went through (those after a failed compile are not run).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Gates {
    pub gates: Vec<GateResult>,
    pub replay: Option<ReplaySummary>,
    /// Why an approval is needed, when one is.
    pub approval_needed: Option<String>,
}

/// Flips shown in the record (the count is always whole).
const EXAMPLES: usize = 20;

impl Gates {
    /// The refusing gates (compile, lint, cases, coverage) that failed.
    pub fn refused_by(&self) -> Vec<Gate> {
        self.gates.iter().filter(|g| !g.passed && g.gate != Gate::Replay).map(|g| g.gate).collect()
    }

    /// Where the candidate goes: refused by a failed gate, awaiting approval when the policy or the replay
    /// asks for one, else active.
    pub fn state(&self) -> RuleSetState {
        if !self.refused_by().is_empty() {
            RuleSetState::Refused
        } else if self.approval_needed.is_some() {
            RuleSetState::AwaitingApproval
        } else {
            RuleSetState::Active
        }
    }

    /// The readable report, one line per gate and its details.
    pub fn render(&self) -> String {
        use std::fmt::Write;
        let mut s = String::new();
        for g in &self.gates {
            let _ = writeln!(s, "{:<9} {}", g.gate.as_str(), if g.passed { "ok" } else { "NON SUPERATO" });
            for d in &g.details {
                let _ = writeln!(s, "    {d}");
            }
        }
        if let Some(replay) = self.replay.as_ref().filter(|r| !r.esempi.is_empty()) {
            let _ = writeln!(s, "esiti ribaltati (i primi {}):", replay.esempi.len());
            for c in &replay.esempi {
                let _ = writeln!(s, "    {}", c.flip());
            }
        }
        if let Some(why) = &self.approval_needed {
            let _ = writeln!(s, "approvazione richiesta: {why}");
        }
        s
    }
}

/// The SHA-256 of a candidate's files (paths and texts), hex.
pub fn digest(files: &Sources) -> String {
    let mut h = Sha256::new();
    for (path, text) in files {
        h.update((path.len() as u64).to_le_bytes());
        h.update(path.as_bytes());
        h.update((text.len() as u64).to_le_bytes());
        h.update(text.as_bytes());
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// A unified diff of every file that differs between `old` and `new` (added and removed files whole).
pub fn diff(old: &Sources, new: &Sources) -> String {
    let empty = String::new();
    let mut paths: Vec<&String> = old.keys().chain(new.keys()).collect();
    paths.sort();
    paths.dedup();
    let mut out = String::new();
    for path in paths {
        let (a, b) = (old.get(path).unwrap_or(&empty), new.get(path).unwrap_or(&empty));
        if a == b {
            continue;
        }
        let from = if old.contains_key(path) { format!("a/{path}") } else { "/dev/null".to_string() };
        let to = if new.contains_key(path) { format!("b/{path}") } else { "/dev/null".to_string() };
        let text = similar::TextDiff::from_lines(a, b);
        out.push_str(&text.unified_diff().context_radius(3).header(&from, &to).to_string());
    }
    out
}

/// Runs the gates that need no database: compile, lint, cases, coverage. The rule set is returned when it
/// compiled (the replay needs it).
pub fn vet_offline(dir: &Path, evaluator: &Evaluator, sede_predefinita: &str, now: Millis) -> (Option<RuleSet>, Gates) {
    let mut gates = Gates::default();
    let rules = match load_rule_set(dir, evaluator) {
        Ok(rules) => rules,
        Err(e) => {
            gates.gates.push(GateResult { gate: Gate::Compile, passed: false, details: vec![e.to_string()] });
            return (None, gates);
        }
    };
    gates.gates.push(GateResult {
        gate: Gate::Compile,
        passed: true,
        details: vec![format!("{} task(s)", rules.tasks.len())],
    });
    let lint = match check_rules(dir, evaluator) {
        // Notices (what the scanner cannot follow) are shown, not refused: only errors stop a promotion.
        Ok(findings) => GateResult {
            gate: Gate::Lint,
            passed: !findings.iter().any(Finding::is_error),
            details: findings
                .iter()
                .map(|f| {
                    let at = relative(dir, &f.file);
                    format!("{at}:{}:{}: {}: {}", f.line, f.col, f.severity.as_str(), f.message)
                })
                .collect(),
        },
        Err(e) => GateResult { gate: Gate::Lint, passed: false, details: vec![e.to_string()] },
    };
    gates.gates.push(lint);
    let options = CaseOptions { task: None, sede_predefinita: sede_predefinita.to_string(), now };
    match run_cases(dir, evaluator, &options) {
        Ok(report) => {
            let candidates = report.candidate_cases.iter().map(|c| (c, " against the shadow candidate"));
            let mut failures: Vec<String> = report
                .cases
                .iter()
                .map(|c| (c, ""))
                .chain(candidates)
                .filter(|(c, _)| !c.differences.is_empty())
                .map(|(c, version)| {
                    format!(
                        "{}:{}: case `{}` fails{version}: {}",
                        relative(dir, &c.file),
                        c.line,
                        c.name,
                        c.differences.join("; ")
                    )
                })
                .collect();
            failures.extend(
                report
                    .files
                    .iter()
                    .map(|f| format!("{}: {} {}", relative(dir, &f.file), f.problem, f.errors.join("; "))),
            );
            let passed = failures.is_empty();
            if passed {
                failures.push(format!("{} case(s) passed", report.summary.passed));
            }
            gates.gates.push(GateResult { gate: Gate::Cases, passed, details: failures });
            let candidates = report.candidate_coverage.iter().map(|c| (c, " (shadow candidate)"));
            let coverages: Vec<_> = report.coverage.iter().map(|c| (c, "")).chain(candidates).collect();
            let unreached: Vec<String> = coverages
                .iter()
                .filter(|(c, _)| !c.not_reached.is_empty())
                .map(|(c, version)| {
                    format!("{}{version}: reason code(s) no case reaches: {}", c.task, c.not_reached.join(", "))
                })
                .collect();
            let reached: usize = coverages.iter().map(|(c, _)| c.reached.len()).sum();
            let total: usize = coverages.iter().map(|(c, _)| c.total).sum();
            gates.gates.push(GateResult {
                gate: Gate::Coverage,
                passed: unreached.is_empty(),
                details: if unreached.is_empty() {
                    vec![format!("{reached}/{total} reason codes reached")]
                } else {
                    unreached
                },
            });
        }
        Err(e) => gates.gates.push(GateResult { gate: Gate::Cases, passed: false, details: vec![e.to_string()] }),
    }
    (Some(rules), gates)
}

/// The replay gate: the candidate decides again every rule decision of requests submitted since
/// `policy.replay_days` ago, from the facts recorded with them; flips above the threshold (or a policy that
/// always asks) set `approval_needed`.
pub async fn replay_gate(
    gates: &mut Gates,
    store: &Store,
    candidate: Arc<RuleSet>,
    evaluator: Arc<Evaluator>,
    loader: Arc<dyn FactLoader>,
    policy: &PromotionConfig,
    now: Millis,
) -> Result<(), StoreError> {
    let since = now - i64::from(policy.replay_days) * 86_400_000;
    let report = replay(store, candidate, evaluator, loader, Some(since), None).await?;
    let flips = report.ribaltate.len() + report.errori.len();
    let esempi: Vec<Change> = report.ribaltate.iter().take(EXAMPLES).cloned().collect();
    let summary = ReplaySummary {
        since,
        decisioni: report.decisioni,
        ribaltate: flips,
        motivi_cambiati: report.motivi_cambiati.len(),
        non_decise: report.errori.len(),
        esiti: report.esiti.clone(),
        esempi,
    };
    let over = flips > policy.max_flips_without_approval;
    let mut details = vec![format!(
        "{} decision(s) of the last {} days decided again: {} flipped ({} not decided), {} with other reasons",
        summary.decisioni, policy.replay_days, flips, summary.non_decise, summary.motivi_cambiati
    )];
    details.extend(report.esiti.iter().map(|(k, v)| format!("{k}: {v}")));
    details.extend(report.errori.iter().take(EXAMPLES).map(|(p, e)| format!("{p}: not decided: {e}")));
    gates.gates.push(GateResult { gate: Gate::Replay, passed: !over, details });
    gates.approval_needed = if over {
        Some(format!(
            "{flips} past decision(s) flip, more than rules.promotion.max_flips_without_approval ({})",
            policy.max_flips_without_approval
        ))
    } else if policy.require_approval {
        Some("rules.promotion.require_approval is set".to_string())
    } else {
        None
    };
    gates.replay = Some(summary);
    Ok(())
}

fn relative(dir: &Path, file: &Path) -> String {
    file.strip_prefix(dir).unwrap_or(file).display().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_diff_names_changed_added_and_removed_files_and_the_digest_follows_the_content() {
        let mut old = Sources::new();
        old.insert("a/rule.rhai".into(), "let x = 1;\nlet y = 2;\n".into());
        old.insert("b/rule.rhai".into(), "gone\n".into());
        let mut new = Sources::new();
        new.insert("a/rule.rhai".into(), "let x = 1;\nlet y = 3;\n".into());
        new.insert("c/rule.rhai".into(), "new\n".into());
        let d = diff(&old, &new);
        assert!(d.contains("--- a/a/rule.rhai\n+++ b/a/rule.rhai") && d.contains("-let y = 2;\n+let y = 3;"), "{d}");
        assert!(d.contains("--- a/b/rule.rhai\n+++ /dev/null") && d.contains("-gone"), "{d}");
        assert!(d.contains("--- /dev/null\n+++ b/c/rule.rhai") && d.contains("+new"), "{d}");
        assert_eq!(diff(&new, &new), "");
        assert_ne!(digest(&old), digest(&new));
        assert_eq!(digest(&new), digest(&new.clone()));
    }

    #[test]
    fn a_failed_gate_refuses_and_an_approval_holds_otherwise() {
        let mut gates = Gates::default();
        gates.gates.push(GateResult { gate: Gate::Compile, passed: true, details: vec![] });
        assert_eq!(gates.state(), RuleSetState::Active);
        gates.approval_needed = Some("flips".into());
        assert_eq!(gates.state(), RuleSetState::AwaitingApproval);
        gates.gates.push(GateResult { gate: Gate::Coverage, passed: false, details: vec![] });
        assert_eq!(gates.state(), RuleSetState::Refused);
        assert_eq!(gates.refused_by(), vec![Gate::Coverage]);
    }
}
