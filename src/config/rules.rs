//! `rules:`: where the daemon's rules come from (promoted rule sets in the database, or a directory watched
//! in development), the engine's bounds, and the gates of a promotion.

use std::path::PathBuf;

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RulesConfig {
    /// The rules directory: one folder per task type, plus `lib/`. With `activation: promoted` only the
    /// default of `rules check`, `rules test` and `rules promote`; the daemon runs what was promoted.
    pub dir: PathBuf,
    pub activation: Activation,
    /// Rhai operation budget per decision (a loop iteration or a call is a few operations).
    pub max_operations: u64,
    /// Wall-clock deadline per decision.
    pub deadline_ms: u64,
    /// How often the daemon looks for a newly activated rule set (`promoted`) or for edits in the rules
    /// directory (`directory`); 0: only on SIGHUP.
    pub watch_interval_ms: u64,
    pub promotion: PromotionConfig,
}

impl Default for RulesConfig {
    fn default() -> Self {
        RulesConfig {
            dir: PathBuf::from("../rules"),
            activation: Activation::Promoted,
            max_operations: 100_000,
            deadline_ms: 250,
            watch_interval_ms: 2_000,
            promotion: PromotionConfig::default(),
        }
    }
}

/// Where the rules a daemon runs come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    /// The rule set last activated by `rules promote` (or its approval), from the database: every instance
    /// runs the same one, whatever its rules directory holds.
    Promoted,
    /// Development: the rules directory, vetted and swapped in when it changes (saving is deploying).
    Directory,
}

/// The gates of `rules promote` beyond compile, lint, cases and coverage (which always refuse).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PromotionConfig {
    /// Every promotion waits for a second person's approval (`rules approve`).
    pub require_approval: bool,
    /// Past decisions the candidate decides otherwise (outcome flipped, or not decided at all) that a
    /// promotion may have and still activate without approval.
    pub max_flips_without_approval: usize,
    /// How far back the replay goes: decisions of requests submitted in the last N days.
    pub replay_days: u32,
}

impl Default for PromotionConfig {
    fn default() -> Self {
        PromotionConfig { require_approval: false, max_flips_without_approval: 0, replay_days: 30 }
    }
}
