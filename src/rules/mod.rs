//! Rules: one folder per task type (`task.yaml`, `rule.rhai`, `cases.yaml`) plus shared Rhai modules in
//! `lib/`, compiled once per version by one shared, sandboxed engine, and swapped atomically on reload.

mod dates;
mod engine;
mod host;
mod lint;
mod loader;
mod reference;
mod sources;

pub use engine::{Evaluator, Limits};
pub use host::{FactLoader, FactsView, HostDoc};
pub use lint::{Finding, check_rules};
pub use loader::{
    Candidate, LoadError, Mode, RuleSet, Sources, TaskKind, TaskRule, is_group_name, load_rule_set,
    load_rule_set_from_sources,
};
pub use reference::reference_markdown;
pub use sources::{
    MAX_BYTES as MAX_RULE_BYTES, MAX_FILES as MAX_RULE_FILES, SourcesDir, SourcesError, check_path as check_rule_path,
    read_sources,
};
