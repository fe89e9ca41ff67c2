//! The reference part of the rule authors' guide (docs/rules.md), generated from the registrations of the
//! host API and from the effects' reference, so that it cannot drift from the code.

use std::fmt::Write;

use super::engine::Evaluator;
use crate::domain::decision::EFFECT_DOCS;

/// Marks the start of the generated section in docs/rules.md.
pub const BEGIN: &str = "<!-- BEGIN GENERATED REFERENCE: smart-taskd rules docs -->";
/// Marks its end.
pub const END: &str = "<!-- END GENERATED REFERENCE -->";

/// The reference, in Markdown, between its markers.
pub fn reference_markdown(evaluator: &Evaluator) -> String {
    let mut s = format!("{BEGIN}\n");
    for (group, title) in [
        ("ctx", "Facts: `ctx`"),
        ("decision", "Deciding: checks, referrals, effects"),
        ("validators", "Validators (domain.md §6)"),
    ] {
        let _ = writeln!(s, "\n### {title}\n\n| Function | What it does |\n|---|---|");
        for d in evaluator.host_docs().iter().filter(|d| d.group == group) {
            let _ = writeln!(s, "| `{}` | {} |", d.signature, d.doc.replace('|', "\\|"));
        }
    }
    let _ = writeln!(s, "\n### Effects\n\n| Effect | Example | What it does |\n|---|---|---|");
    for (kind, example, doc) in EFFECT_DOCS {
        let _ = writeln!(s, "| `{kind}` | `effect(\"{kind}\", {example})` | {} |", doc.replace('|', "\\|"));
    }
    let _ = writeln!(s, "\n{END}");
    s
}
