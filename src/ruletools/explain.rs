//! `smart-taskd explain <protocollo>`: every decision of a request, in words an analyst can follow — the
//! rule version, each check in order with its result and source line, each fact read with its value, the
//! effects, the time and operations used.

use std::fmt::Write;
use std::path::Path;

use serde_json::Value;

use crate::domain::decision::Outcome;
use crate::domain::time::rfc3339;
use crate::rules::RuleSet;
use crate::store::StoredDecision;

/// Finds the source line of a check: in the task's rule.rhai if that line calls the code, else in a shared
/// library file whose line does (lines are recorded without their file).
fn source_line(dir: &Path, line: u32, code: &str) -> Option<(String, String)> {
    let rule = dir.join("rule.rhai");
    let lib = dir.parent().map(|p| p.join("lib"));
    let mut files = vec![rule];
    if let Some(lib) = lib.filter(|l| l.is_dir()) {
        let mut libs: Vec<_> = std::fs::read_dir(lib)
            .ok()?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "rhai"))
            .collect();
        libs.sort();
        files.extend(libs);
    }
    for f in files {
        let text = std::fs::read_to_string(&f).ok()?;
        if let Some(l) = text.lines().nth(line.saturating_sub(1) as usize)
            && (l.contains(code) || l.contains("check("))
        {
            let name = f.strip_prefix(dir.parent().unwrap_or(dir)).unwrap_or(&f).display().to_string();
            return Some((name, l.trim().to_string()));
        }
    }
    None
}

fn compact(v: &Value) -> String {
    let text = v.to_string();
    if text.chars().count() > 160 { format!("{}…", text.chars().take(160).collect::<String>()) } else { text }
}

/// Renders every decision of a request. Source lines are shown when the rule that decided is the one loaded.
pub fn render(decisions: &[StoredDecision], rules: Option<&RuleSet>) -> String {
    let mut s = String::new();
    for (n, sd) in decisions.iter().enumerate() {
        let d = &sd.decision;
        let loaded = rules.and_then(|r| r.get(&sd.task)).filter(|r| d.rule_version.contains(&r.version));
        let _ = writeln!(s, "Decisione {} di {} — {} ({})", n + 1, decisions.len(), sd.protocollo, sd.task);
        let _ = writeln!(
            s,
            "  versione della regola: {}{}",
            d.rule_version,
            if loaded.is_some() { " (quella attiva)" } else { " (non più attiva: righe non mostrate)" }
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
        if let Some(nota) = &d.nota {
            let _ = writeln!(s, "  nota dell'operatore: {nota}");
        }
        if d.trace.checks.is_empty() {
            let _ = writeln!(s, "  controlli: nessuno registrato");
        } else {
            let _ = writeln!(s, "  controlli, nell'ordine:");
        }
        for (i, c) in d.trace.checks.iter().enumerate() {
            let result = if c.passed { "superato    " } else { "NON superato" };
            let _ = write!(s, "    {:>2}. {:<8} {result}  riga {}", i + 1, c.codice, c.line);
            match loaded.and_then(|r| source_line(&r.dir, c.line, &c.codice)) {
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
