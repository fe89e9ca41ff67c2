//! Rule activations: the `rule_status` table (what each instance runs and why its last candidate was refused)
//! and `rule_sources` (the files of every version ever activated, by version).

use std::collections::{BTreeMap, HashMap};

use sqlx::Row;

use super::{Sql, Store, json_text, parse_json};
use crate::domain::time::Millis;
use crate::store::{Result, RuleStatus};

/// Rule source files by path relative to the rules directory (the rules' `Sources`).
type Files = BTreeMap<String, String>;

impl Store {
    /// Keeps the files of each `(version, task, files)` (a version already recorded is left as it is: versions
    /// are content hashes).
    pub async fn record_rule_sources(&self, versions: &[(&str, &str, &Files)], now: Millis) -> Result<()> {
        let mut tx = self.write_tx().await?;
        for (version, task, files) in versions {
            sqlx::query(tx.sql(
                "INSERT INTO rule_sources (version, task, files, recorded_at) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (version) DO NOTHING",
            ))
            .bind(*version)
            .bind(*task)
            .bind(json_text(files))
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// The recorded sources of the given versions (those recorded; others are absent from the map).
    pub async fn rule_sources(&self, versions: &[&str]) -> Result<HashMap<String, Files>> {
        let rows = sqlx::query(
            self.sql("SELECT version, files FROM rule_sources WHERE version IN (SELECT value FROM json_each($1))"),
        )
        .bind(json_text(&versions))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("version")?, parse_json("rule_sources.files", r.try_get("files")?)?)))
            .collect()
    }

    /// The files of the rule set last activated — by `instance` if it ever activated one, else by any
    /// instance — when every version of it is recorded: the set a daemon falls back to, and the one intake
    /// validates against.
    pub async fn last_activated_rules(&self, instance: &str) -> Result<Option<(BTreeMap<String, String>, Files)>> {
        let Some(active) = self.last_activated_versions(instance).await? else { return Ok(None) };
        let versions: Vec<&str> = active.values().map(String::as_str).collect();
        let recorded = self.rule_sources(&versions).await?;
        if versions.iter().any(|v| !recorded.contains_key(*v)) {
            return Ok(None); // activated before sources were kept
        }
        let files = recorded.into_values().flatten().collect();
        Ok(Some((active, files)))
    }

    /// Task → version of the rule set last activated, by `instance` if it ever activated one, else by any.
    pub async fn last_activated_versions(&self, instance: &str) -> Result<Option<BTreeMap<String, String>>> {
        let statuses = self.rule_status().await?;
        let latest = statuses
            .iter()
            .find(|s| s.instance == instance)
            .or_else(|| statuses.iter().max_by_key(|s| s.activated_at))
            .filter(|s| !s.active.is_empty());
        Ok(latest.map(|s| s.active.clone()))
    }

    /// Records an activation (`candidate_errors` empty) or a refused candidate (the active set stays).
    pub async fn record_rule_status(&self, s: &RuleStatus) -> Result<()> {
        let errors =
            (!s.candidate_errors.is_empty()).then(|| serde_json::to_string(&s.candidate_errors).unwrap_or_default());
        sqlx::query(self.sql(
            "INSERT INTO rule_status (instance, active, activated_at, candidate_errors, checked_at, rule_set)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (instance) DO UPDATE SET active = excluded.active, activated_at = excluded.activated_at,
                 candidate_errors = excluded.candidate_errors, checked_at = excluded.checked_at,
                 rule_set = excluded.rule_set",
        ))
        .bind(&s.instance)
        .bind(serde_json::to_string(&s.active).unwrap_or_default())
        .bind(s.activated_at)
        .bind(errors)
        .bind(s.checked_at)
        .bind(s.rule_set)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Every instance's rule status, most recently checked first.
    pub async fn rule_status(&self) -> Result<Vec<RuleStatus>> {
        let rows =
            sqlx::query(self.sql("SELECT * FROM rule_status ORDER BY checked_at DESC")).fetch_all(&self.pool).await?;
        rows.iter()
            .map(|r| {
                Ok(RuleStatus {
                    instance: r.try_get("instance")?,
                    active: parse_json("rule_status.active", r.try_get("active")?)?,
                    activated_at: r.try_get::<Millis, _>("activated_at")?,
                    candidate_errors: match r.try_get::<Option<&str>, _>("candidate_errors")? {
                        Some(t) => parse_json("rule_status.candidate_errors", t)?,
                        None => Vec::new(),
                    },
                    checked_at: r.try_get("checked_at")?,
                    rule_set: r.try_get("rule_set")?,
                })
            })
            .collect()
    }
}
