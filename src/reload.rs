//! Safe activation of rules: a candidate rule set is compiled, linted and its cases run before it replaces
//! the running one, atomically; anything failing keeps the last good version running and is reported (log,
//! the `rule_status` table read by `rules status`). Used at start, on SIGHUP and when the rules directory
//! changes on disk.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

use arc_swap::ArcSwap;

use crate::rules::{Evaluator, RuleSet};
use crate::store::RuleStatus;

/// How deep below the rules directory the fingerprint looks: the loader reads task folders and `lib/` (one
/// level of folders, their files), so edits deeper down change nothing it would load.
const FINGERPRINT_DEPTH: usize = 2;
/// A bound on the entries a fingerprint visits, whatever the directory holds.
const FINGERPRINT_MAX_ENTRIES: usize = 10_000;

/// A cheap fingerprint of a rules directory (paths, sizes, modification times), to notice edits. Bounded in
/// depth and entries, so symbolic links that loop (`a -> b`, `b -> a`, or a link to a parent) cannot trap it.
pub fn fingerprint(dir: &Path) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut files = Vec::new();
    let mut stack = vec![(dir.to_path_buf(), 0)];
    let mut visited = 0;
    while let Some((d, depth)) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else { continue };
        for e in entries.flatten() {
            visited += 1;
            if visited > FINGERPRINT_MAX_ENTRIES {
                break;
            }
            let p = e.path();
            if p.is_dir() {
                if depth < FINGERPRINT_DEPTH {
                    stack.push((p, depth + 1));
                }
            } else if let Ok(m) = e.metadata() {
                files.push((p, m.len(), m.modified().unwrap_or(SystemTime::UNIX_EPOCH)));
            }
        }
    }
    files.sort();
    let mut h = std::collections::hash_map::DefaultHasher::new();
    files.hash(&mut h);
    h.finish()
}

/// Everything wrong with a candidate rules directory, by the gates of a promotion that need no database:
/// compile and load errors, lint errors (notices pass), failing cases (the shadow candidates' too), reason
/// codes no case reaches.
pub fn vet(dir: &Path, evaluator: &Evaluator, sede_predefinita: &str, now: i64) -> Result<RuleSet, Vec<String>> {
    let (rules, gates) = crate::ruletools::promote::vet_offline(dir, evaluator, sede_predefinita, now);
    let problems: Vec<String> = gates.gates.into_iter().filter(|g| !g.passed).flat_map(|g| g.details).collect();
    match rules {
        Some(rules) if problems.is_empty() => Ok(rules),
        _ => Err(problems),
    }
}

/// The status row for a rule set that is now active.
pub fn active_status(
    instance: &str,
    rules: &RuleSet,
    now: i64,
    candidate_errors: Vec<String>,
    activated_at: i64,
    rule_set: Option<i64>,
) -> RuleStatus {
    let active: BTreeMap<String, String> = rules.tasks.values().map(|r| (r.id.clone(), r.version.clone())).collect();
    RuleStatus { instance: instance.to_string(), active, activated_at, candidate_errors, checked_at: now, rule_set }
}

/// Vets the rules directory and, when it passes, swaps it in. Returns the new status to record.
pub fn reload(
    dir: &Path,
    evaluator: &Evaluator,
    running: &ArcSwap<RuleSet>,
    previous: &RuleStatus,
    sede_predefinita: &str,
    now: i64,
) -> RuleStatus {
    match vet(dir, evaluator, sede_predefinita, now) {
        Ok(rules) => {
            let status = active_status(&previous.instance, &rules, now, Vec::new(), now, None);
            running.store(Arc::new(rules));
            status
        }
        Err(errors) => RuleStatus { candidate_errors: errors, checked_at: now, ..previous.clone() },
    }
}
