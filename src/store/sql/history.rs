//! Reading decisions back: for `explain` (every decision of a request) and `replay` (the rule decisions
//! that closed requests).

use sqlx::Row;
use sqlx::any::AnyRow;

use super::{Sql, Store, claimed_from_row, parse_json};
use crate::domain::decision::Decision;
use crate::domain::time::Millis;
use crate::store::{Result, StoreError, StoredDecision};

/// A decision row joined with its request's `protocollo` and `task`.
fn stored_decision(r: &AnyRow) -> Result<StoredDecision> {
    Ok(StoredDecision {
        request_id: r.try_get("request_id")?,
        protocollo: r.try_get("protocollo")?,
        task: r.try_get("task")?,
        decided_at: r.try_get("decided_at")?,
        decision: decision_from_row(r)?,
    })
}

/// A decision from the columns of a `decisions` row.
pub(super) fn decision_from_row(d: &AnyRow) -> Result<Decision> {
    Ok(Decision {
        outcome: serde_json::from_value(serde_json::Value::String(d.try_get("outcome")?))
            .map_err(|e| StoreError::Corrupt(format!("decisions.outcome: {e}")))?,
        reasons: parse_json("decisions.reasons", d.try_get("reasons")?)?,
        effects: parse_json("decisions.effects", d.try_get("effects")?)?,
        rule_version: d.try_get("rule_version")?,
        trace: parse_json("decisions.trace", d.try_get("trace")?)?,
        duration_us: d.try_get::<i64, _>("duration_us")?.max(0) as u64,
        nota: None,
    })
}

impl Store {
    /// Every decision recorded for a request (id or protocol number), oldest first.
    pub async fn decisions_of(&self, key: &str) -> Result<Vec<StoredDecision>> {
        let by_id: i64 = key.parse().unwrap_or(-1);
        let rows = sqlx::query(self.sql(
            "SELECT d.*, r.protocollo, r.task FROM decisions d JOIN requests r ON r.id = d.request_id
             WHERE r.protocollo = $1 OR r.id = $2 ORDER BY d.id",
        ))
        .bind(key)
        .bind(by_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(stored_decision).collect()
    }

    /// Decisions whose shadow candidate disagreed with the active version, oldest first.
    pub async fn shadow_disagreements(&self, task: Option<&str>) -> Result<Vec<StoredDecision>> {
        let rows = sqlx::query(
            self.sql("SELECT d.*, r.protocollo, r.task FROM decisions d JOIN requests r ON r.id = d.request_id
             WHERE (d.trace/*pg:::jsonb*/ -> 'shadow' -> 'disagrees') = 'true' AND ($1 IS NULL OR r.task = $1) ORDER BY d.id"),
        )
        .bind(task)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(stored_decision).collect()
    }

    /// The rule decisions that closed requests (accolta or non_accolta, not an operator's), oldest first,
    /// with the request as the rule saw it.
    pub async fn closing_rule_decisions(
        &self,
        since: Option<Millis>,
        task: Option<&str>,
    ) -> Result<Vec<(crate::domain::closing::ClaimedRequest, Decision, Millis)>> {
        let rows = sqlx::query(self.sql(
            "SELECT r.*, d.outcome, d.reasons, d.effects, d.rule_version, d.trace, d.duration_us, d.decided_at
             FROM requests r
             JOIN decisions d ON d.id = (SELECT MAX(x.id) FROM decisions x WHERE x.request_id = r.id)
             WHERE r.stato = 'chiusa' AND d.outcome IN ('accolta', 'non_accolta')
               AND d.rule_version NOT LIKE 'operatore%'
               AND ($1 IS NULL OR r.creata_il >= $1) AND ($2 IS NULL OR r.task = $2)
             ORDER BY r.id",
        ))
        .bind(since)
        .bind(task)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|r| Ok((claimed_from_row(r)?, decision_from_row(r)?, r.try_get("decided_at")?))).collect()
    }
}
