//! `smart-taskd replay --rules DIR`: decides closed requests again with a candidate rule set, answering
//! each fact from what the original decision recorded, and reports what would change.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::domain::closing::Evaluation;
use crate::domain::decision::Outcome;
use crate::domain::time::Millis;
use crate::rules::{Evaluator, FactLoader, FactsView, RuleSet};
use crate::store::{Store, StoreError};

/// A request whose outcome or reasons the candidate changes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Change {
    pub protocollo: String,
    pub task: String,
    pub prima: String,
    pub dopo: String,
    pub motivi_prima: Vec<String>,
    pub motivi_dopo: Vec<String>,
    /// Facts the candidate read that the original decision had not: answered from the current data.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fatti_non_registrati: Vec<String>,
}

impl Change {
    /// The flip in one line: `PROT  TASK  prima [codes] → dopo [codes]`.
    pub fn flip(&self) -> String {
        format!(
            "{}  {}  {} [{}] → {} [{}]",
            self.protocollo,
            self.task,
            self.prima,
            self.motivi_prima.join(", "),
            self.dopo,
            self.motivi_dopo.join(", ")
        )
    }
}

/// What a replay found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ReplayReport {
    pub decisioni: usize,
    /// "before → after" → count.
    pub esiti: BTreeMap<String, usize>,
    /// Reason code → (requests that gain it, requests that lose it).
    pub motivi: BTreeMap<String, (usize, usize)>,
    /// Requests whose outcome flips.
    pub ribaltate: Vec<Change>,
    /// Requests whose outcome stays but whose reasons change.
    pub motivi_cambiati: Vec<Change>,
    /// Requests the candidate failed to decide: (protocollo, error).
    pub errori: Vec<(String, String)>,
    /// Decisions of tasks the candidate rule set does not have.
    pub senza_regola: usize,
}

fn esito(o: Outcome) -> String {
    o.as_str().to_string()
}

/// Replays every closed request (since `since`, of `task`) with `candidate`.
pub async fn replay(
    store: &Store,
    candidate: Arc<RuleSet>,
    evaluator: Arc<Evaluator>,
    loader: Arc<dyn FactLoader>,
    since: Option<Millis>,
    task: Option<&str>,
) -> Result<ReplayReport, StoreError> {
    let past = store.closing_rule_decisions(since, task).await?;
    tokio::task::spawn_blocking(move || {
        let mut report = ReplayReport { decisioni: past.len(), ..Default::default() };
        for (req, before, decided_at) in past {
            let Some(rule) = candidate.get(&req.task) else {
                report.senza_regola += 1;
                continue;
            };
            let view = Arc::new(FactsView::recorded(&before.trace.facts, Some(loader.clone())));
            let after = match evaluator.evaluate(rule, &req, view, decided_at) {
                Evaluation::Decided(d) => d,
                Evaluation::Failed(f) => {
                    report.errori.push((req.protocollo.clone(), format!("{}: {}", f.kind.as_str(), f.message)));
                    continue;
                }
            };
            *report.esiti.entry(format!("{} → {}", esito(before.outcome), esito(after.outcome))).or_default() += 1;
            let codes = |d: &crate::domain::decision::Decision| -> Vec<String> {
                d.reasons.iter().map(|r| r.codice.clone()).collect()
            };
            let (old, new) = (codes(&before), codes(&after));
            for c in new.iter().filter(|c| !old.contains(c)) {
                report.motivi.entry(c.clone()).or_default().0 += 1;
            }
            for c in old.iter().filter(|c| !new.contains(c)) {
                report.motivi.entry(c.clone()).or_default().1 += 1;
            }
            let change = Change {
                protocollo: req.protocollo.clone(),
                task: req.task.clone(),
                prima: esito(before.outcome),
                dopo: esito(after.outcome),
                motivi_prima: old.clone(),
                motivi_dopo: new.clone(),
                fatti_non_registrati: after.trace.unrecorded.clone(),
            };
            if before.outcome != after.outcome {
                report.ribaltate.push(change);
            } else if old != new {
                report.motivi_cambiati.push(change);
            }
        }
        report
    })
    .await
    .map_err(|e| StoreError::Corrupt(format!("replay thread failed: {e}")))
}

impl ReplayReport {
    /// The readable report.
    pub fn render(&self) -> String {
        use std::fmt::Write;
        let mut s = String::new();
        let _ = writeln!(s, "{} decisioni ridecise con le regole candidate", self.decisioni);
        for (k, v) in &self.esiti {
            let _ = writeln!(s, "  {k:<28} {v}");
        }
        if !self.motivi.is_empty() {
            let _ = writeln!(s, "motivi (richieste che lo acquistano / lo perdono):");
            for (code, (plus, minus)) in &self.motivi {
                let _ = writeln!(s, "  {code:<10} +{plus} -{minus}");
            }
        }
        let _ = writeln!(s, "richieste con esito ribaltato: {}", self.ribaltate.len());
        for c in &self.ribaltate {
            let _ = writeln!(
                s,
                "  {}{}",
                c.flip(),
                if c.fatti_non_registrati.is_empty() {
                    String::new()
                } else {
                    format!("  (letti dai dati attuali: {})", c.fatti_non_registrati.join("; "))
                }
            );
        }
        let _ = writeln!(s, "richieste con motivi cambiati (stesso esito): {}", self.motivi_cambiati.len());
        for c in &self.motivi_cambiati {
            let _ = writeln!(
                s,
                "  {}  {}  [{}] → [{}]",
                c.protocollo,
                c.task,
                c.motivi_prima.join(", "),
                c.motivi_dopo.join(", ")
            );
        }
        if !self.errori.is_empty() {
            let _ = writeln!(s, "la regola candidata non ha deciso {} richieste:", self.errori.len());
            for (p, e) in &self.errori {
                let _ = writeln!(s, "  {p}: {e}");
            }
        }
        if self.senza_regola > 0 {
            let _ = writeln!(s, "{} decisioni di task senza regola candidata", self.senza_regola);
        }
        s
    }
}
