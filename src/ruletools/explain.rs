//! `smart-taskd explain <protocollo>`: every decision of a request, in words an analyst can follow — the
//! rule version, each check in order with its result and source line, each fact read with its value, the
//! effects, the time and operations used.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write;

use serde_json::Value;

use crate::domain::decision::Outcome;
use crate::domain::time::rfc3339;
use crate::rules::Sources;
use crate::store::StoredDecision;

/// Finds the source line of a check in the files of its version: in the task's rule.rhai if that line calls the
/// code, else in a shared library file whose line does (lines are recorded without their file).
fn source_line(sources: &Sources, line: u32, code: &str) -> Option<(String, String)> {
    let rule = sources.iter().filter(|(name, _)| name.ends_with("/rule.rhai") && !name.starts_with("lib/"));
    let libs = sources.iter().filter(|(name, _)| name.starts_with("lib/") && name.ends_with(".rhai"));
    rule.chain(libs).find_map(|(name, text)| {
        let l = text.lines().nth(line.saturating_sub(1) as usize)?;
        (l.contains(code) || l.contains("check(")).then(|| (name.clone(), l.trim().to_string()))
    })
}

/// The rule versions a decision's `rule_version` names: `c141d298e4d406ae`, or the one inside an operator's
/// `operatore (c141d298e4d406ae)`; none for an operator's own reasons.
pub fn named_versions(rule_version: &str) -> impl Iterator<Item = &str> {
    rule_version.split(|c: char| !c.is_ascii_hexdigit()).filter(|t| t.len() == 16)
}

fn compact(v: &Value) -> String {
    let text = v.to_string();
    if text.chars().count() > 160 { format!("{}…", text.chars().take(160).collect::<String>()) } else { text }
}

/// Renders every decision of a request. Source lines come from the files recorded for the version that decided
/// (`sources`, by version), whatever the rules directory holds now; `active` (task → version) says whether it
/// still runs.
pub fn render(
    decisions: &[StoredDecision],
    sources: &HashMap<String, Sources>,
    active: &BTreeMap<String, String>,
) -> String {
    let mut s = String::new();
    for (n, sd) in decisions.iter().enumerate() {
        let d = &sd.decision;
        let is_active = active.get(&sd.task).is_some_and(|v| d.rule_version.contains(v.as_str()));
        let files = named_versions(&d.rule_version).find_map(|v| sources.get(v));
        let _ = writeln!(s, "Decisione {} di {} — {} ({})", n + 1, decisions.len(), sd.protocollo, sd.task);
        let _ = writeln!(
            s,
            "  versione della regola: {}{}",
            d.rule_version,
            match (is_active, files.is_some()) {
                (true, _) => " (quella attiva)",
                (false, true) => " (non più attiva)",
                (false, false) => " (non più attiva; sorgente non registrata: righe non mostrate)",
            }
        );
        let _ =
            writeln!(s, "  decisa il {}, data di riferimento (ctx.today) {}", rfc3339(sd.decided_at), d.trace.today);
        let esito = match d.outcome {
            Outcome::Accolta => "ACCOLTA",
            Outcome::NonAccolta => "NON ACCOLTA",
            Outcome::Rinvio => "RINVIATA ALL'OPERATORE",
        };
        let _ = writeln!(s, "  esito: {esito}   ({} µs, {} operazioni Rhai)", d.duration_us, d.trace.operations);
        if let Some(proposed) = d.trace.dry_run {
            let _ = writeln!(
                s,
                "  modalità dry-run: la regola avrebbe deciso {}, la chiude un operatore",
                proposed.as_str()
            );
        }
        if let Some(shadow) = &d.trace.shadow {
            let _ = writeln!(
                s,
                "  candidata in ombra {}: {} [{}]{}",
                shadow.version,
                shadow.outcome.map_or("errore", |o| o.as_str()),
                shadow.reasons.join(", "),
                if shadow.disagrees { "  — IN DISACCORDO" } else { "  — d'accordo" }
            );
        }
        match (&d.trace.risposta, &d.nota) {
            // A quesito the rule closed with a standard answer: the answer's code (its text is in the history).
            (Some(code), _) => {
                let _ =
                    writeln!(s, "  risposta standard della regola: {code} (il testo è nella chiusura, nello storico)");
            }
            (None, Some(nota)) => {
                let _ = writeln!(s, "  nota dell'operatore: {nota}");
            }
            (None, None) => {}
        }
        if d.trace.checks.is_empty() {
            let _ = writeln!(s, "  controlli: nessuno registrato");
        } else {
            let _ = writeln!(s, "  controlli, nell'ordine:");
        }
        for (i, c) in d.trace.checks.iter().enumerate() {
            let result = if c.passed { "superato    " } else { "NON superato" };
            let _ = write!(s, "    {:>2}. {:<8} {result}  riga {}", i + 1, c.codice, c.line);
            match files.and_then(|f| source_line(f, c.line, &c.codice)) {
                Some((file, text)) => {
                    let _ = writeln!(s, " di {file}: {text}");
                }
                None => {
                    let _ = writeln!(s);
                }
            }
        }
        if !d.trace.facts.is_empty() {
            let _ = writeln!(s, "  fatti letti (con la versione del soggetto):");
        }
        for f in &d.trace.facts {
            let _ = writeln!(s, "    - ctx.{}  [{} v{}]", f.call, f.subject, f.version);
            let _ = writeln!(s, "        = {}", compact(&f.value));
        }
        if !d.reasons.is_empty() {
            let _ = writeln!(s, "  motivazioni:");
        }
        for r in &d.reasons {
            let _ = writeln!(s, "    - {}: {}", r.codice, r.messaggio);
        }
        if !d.effects.is_empty() {
            let _ =
                writeln!(s, "  effetti{}:", if d.outcome == Outcome::Rinvio { " proposti all'operatore" } else { "" });
        }
        for e in &d.effects {
            let _ = writeln!(s, "    - {}", serde_json::to_string(e).unwrap_or_default());
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::named_versions;

    #[test]
    fn versions_are_read_from_rules_and_operators_decisions() {
        assert_eq!(named_versions("c141d298e4d406ae").collect::<Vec<_>>(), ["c141d298e4d406ae"]);
        assert_eq!(named_versions("operatore (c141d298e4d406ae)").collect::<Vec<_>>(), ["c141d298e4d406ae"]);
        assert_eq!(named_versions("operatore").count(), 0);
    }
}
