//! Pilot groups (`pilot_members`): who may see and submit a task that task.yaml restricts to a group.

use super::{Sql, Store};
use crate::domain::time::Millis;
use crate::store::Result;

impl Store {
    /// Adds codici fiscali to a group (those already in it stay as they are). Returns how many were added.
    pub async fn pilot_add(&self, group: &str, cfs: &[String], now: Millis) -> Result<u64> {
        Ok(sqlx::query(self.sql(
            // `WHERE true`: SQLite reads `ON CONFLICT` after a bare `SELECT … FROM` as a join's constraint.
            "INSERT INTO pilot_members (gruppo, cf, added_at) SELECT DISTINCT $1, value, $3 FROM json_each($2)
             WHERE true ON CONFLICT DO NOTHING",
        ))
        .bind(group)
        .bind(super::json_text(&cfs))
        .bind(now)
        .execute(&self.pool)
        .await?
        .rows_affected())
    }

    /// Removes codici fiscali from a group. Returns how many were in it.
    pub async fn pilot_remove(&self, group: &str, cfs: &[String]) -> Result<u64> {
        Ok(sqlx::query(
            self.sql("DELETE FROM pilot_members WHERE gruppo = $1 AND cf IN (SELECT value FROM json_each($2))"),
        )
        .bind(group)
        .bind(super::json_text(&cfs))
        .execute(&self.pool)
        .await?
        .rows_affected())
    }

    /// The members of a group, in order.
    pub async fn pilot_members(&self, group: &str) -> Result<Vec<String>> {
        Ok(sqlx::query_scalar(self.sql("SELECT cf FROM pilot_members WHERE gruppo = $1 ORDER BY cf"))
            .bind(group)
            .fetch_all(&self.pool)
            .await?)
    }

    /// The groups, of those named, that `cf` belongs to.
    pub async fn pilot_groups_of(&self, cf: &str, groups: &[&str]) -> Result<Vec<String>> {
        if groups.is_empty() {
            return Ok(Vec::new());
        }
        Ok(sqlx::query_scalar(
            self.sql("SELECT gruppo FROM pilot_members WHERE cf = $1 AND gruppo IN (SELECT value FROM json_each($2))"),
        )
        .bind(cf)
        .bind(super::json_text(&groups))
        .fetch_all(&self.pool)
        .await?)
    }
}
