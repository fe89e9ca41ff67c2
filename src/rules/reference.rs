//! The reference part of the rule authors' guide (docs/rules.md), generated from the registrations of the
//! host API and from the effects' reference, so that it cannot drift from the code.

use std::fmt::Write;

use super::engine::Evaluator;
use crate::domain::decision::EFFECT_DOCS;

/// Marks the start of the generated section in docs/rules.md.
pub const BEGIN: &str = "<!-- BEGIN GENERATED REFERENCE: smart-taskd rules docs -->";
/// Marks its end.
pub const END: &str = "<!-- END GENERATED REFERENCE -->";

/// The groups of host functions (`Api::doc`'s first argument), in the order of the reference: heading and an
/// optional introduction. A group missing here would drop its functions from the reference (a test checks).
const GROUPS: &[(&str, &str, &str)] = &[
    ("ctx", "Facts: `ctx`", ""),
    ("decision", "Deciding: checks, referrals, effects", ""),
    ("validators", "Validators (domain.md §6)", ""),
    (
        "dates",
        "Dates",
        "Dates are strings \"YYYY-MM-DD\", like `ctx.today` and the request's date fields, so they compare as \
         strings. These functions take and return that form; a malformed date or an `n` out of range stops the \
         rule with an error naming the function and the value. Working days follow the national calendar only.",
    ),
];

/// The reference, in Markdown, between its markers.
pub fn reference_markdown(evaluator: &Evaluator) -> String {
    let mut s = format!("{BEGIN}\n");
    for (group, title, intro) in GROUPS {
        let _ = writeln!(s, "\n### {title}\n");
        if !intro.is_empty() {
            let _ = writeln!(s, "{intro}\n");
        }
        let _ = writeln!(s, "| Function | What it does |\n|---|---|");
        for d in evaluator.host_docs().iter().filter(|d| d.group == *group) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::Limits;

    #[test]
    fn every_documented_group_has_a_heading() {
        let evaluator = Evaluator::new(Limits { max_operations: 1_000, deadline: std::time::Duration::from_secs(1) });
        for d in evaluator.host_docs() {
            assert!(
                GROUPS.iter().any(|(g, ..)| *g == d.group),
                "group `{}` of `{}` has no heading",
                d.group,
                d.signature
            );
        }
        let reference = reference_markdown(&evaluator);
        for f in ["add_months(date, n)", "working_days_between(a, b)", "is_date(s)", "### Dates"] {
            assert!(reference.contains(f), "{f}");
        }
    }
}
