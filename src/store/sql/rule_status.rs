//! The `rule_status` table: what each instance runs and why its last candidate was refused.

use sqlx::Row;

use super::{Sql, Store, parse_json};
use crate::domain::time::Millis;
use crate::store::{Result, RuleStatus};

impl Store {
    /// Records an activation (`candidate_errors` empty) or a refused candidate (the active set stays).
    pub async fn record_rule_status(&self, s: &RuleStatus) -> Result<()> {
        let errors =
            (!s.candidate_errors.is_empty()).then(|| serde_json::to_string(&s.candidate_errors).unwrap_or_default());
        sqlx::query(self.sql(
            "INSERT INTO rule_status (instance, active, activated_at, candidate_errors, checked_at)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (instance) DO UPDATE SET active = excluded.active, activated_at = excluded.activated_at,
                 candidate_errors = excluded.candidate_errors, checked_at = excluded.checked_at",
        ))
        .bind(&s.instance)
        .bind(serde_json::to_string(&s.active).unwrap_or_default())
        .bind(s.activated_at)
        .bind(errors)
        .bind(s.checked_at)
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
                })
            })
            .collect()
    }
}
