//! Promoted rule sets (`rule_sets`, migration 0017): the candidates `rules promote` vetted, with their files,
//! author, diff and gate results; at most one active (a partial unique index), its predecessor retired in the
//! same transaction, fenced against the set the candidate was vetted against so that two promotions racing
//! on two instances cannot both win.

use sqlx::Row;
use sqlx::any::AnyRow;

use super::{Sql, Store, Tx, json_text, parse_json};
use crate::domain::time::Millis;
use crate::store::{NewRuleSet, Result, RuleSetRecord, RuleSetState, StoreError};

/// A `SELECT` of every column of `rule_sets`, followed by `$tail`: one text (the dialect caches by address).
macro_rules! select_rule_sets {
    ($tail:literal) => {
        concat!(
            "SELECT id, digest, files, tasks, author, reason, diff, results, state, based_on, submitted_at, ",
            "approved_by, approved_at, activated_at, retired_at FROM rule_sets ",
            $tail
        )
    };
}

fn record(r: &AnyRow) -> Result<RuleSetRecord> {
    let state: String = r.try_get("state")?;
    Ok(RuleSetRecord {
        id: r.try_get("id")?,
        digest: r.try_get("digest")?,
        files: parse_json("rule_sets.files", r.try_get("files")?)?,
        tasks: parse_json("rule_sets.tasks", r.try_get("tasks")?)?,
        author: r.try_get("author")?,
        reason: r.try_get("reason")?,
        diff: r.try_get("diff")?,
        results: parse_json("rule_sets.results", r.try_get("results")?)?,
        state: RuleSetState::parse(&state)
            .ok_or_else(|| StoreError::Corrupt(format!("rule_sets.state: unknown state `{state}`")))?,
        based_on: r.try_get("based_on")?,
        submitted_at: r.try_get("submitted_at")?,
        approved_by: r.try_get("approved_by")?,
        approved_at: r.try_get("approved_at")?,
        activated_at: r.try_get("activated_at")?,
        retired_at: r.try_get("retired_at")?,
    })
}

/// A unique violation of `rule_sets_one_active`: another promotion activated a set in the meantime.
fn raced(e: sqlx::Error) -> StoreError {
    match e.as_database_error().is_some_and(|d| d.is_unique_violation()) {
        true => StoreError::Refused(
            "another rule set was activated at the same moment: look at `smart-taskd rules versions` and promote again"
                .into(),
        ),
        false => e.into(),
    }
}

impl Store {
    /// The active rule set's id (None before the first promotion).
    pub async fn active_rule_set_id(&self) -> Result<Option<i64>> {
        let row =
            sqlx::query(self.sql("SELECT id FROM rule_sets WHERE state = 'active'")).fetch_optional(&self.pool).await?;
        Ok(row.map(|r| r.try_get("id")).transpose()?)
    }

    /// The active rule set, whole.
    pub async fn active_rule_set(&self) -> Result<Option<RuleSetRecord>> {
        let row = sqlx::query(self.sql(select_rule_sets!("WHERE state = 'active'"))).fetch_optional(&self.pool).await?;
        row.as_ref().map(record).transpose()
    }

    /// One rule set by its number.
    pub async fn rule_set(&self, id: i64) -> Result<Option<RuleSetRecord>> {
        let row = sqlx::query(self.sql(select_rule_sets!("WHERE id = $1"))).bind(id).fetch_optional(&self.pool).await?;
        row.as_ref().map(record).transpose()
    }

    /// The most recent rule sets first, at most `limit`.
    pub async fn rule_sets(&self, limit: i64) -> Result<Vec<RuleSetRecord>> {
        let rows = sqlx::query(self.sql(select_rule_sets!("ORDER BY id DESC LIMIT $1")))
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(record).collect()
    }

    /// Records a vetted candidate in the state its gates gave it. An `Active` one replaces the active set, in
    /// the same transaction, provided that set is still `based_on` (else refused: the candidate was vetted
    /// against something else).
    pub async fn record_rule_set(&self, new: &NewRuleSet<'_>, now: Millis) -> Result<i64> {
        let mut tx = self.write_tx().await?;
        if new.state == RuleSetState::Active {
            fence_active(&mut tx, new.based_on).await?;
            retire_active(&mut tx, now).await?;
        }
        let activated_at = (new.state == RuleSetState::Active).then_some(now);
        let row = sqlx::query(tx.sql(
            "INSERT INTO rule_sets (digest, files, tasks, author, reason, diff, results, state, based_on, submitted_at,
                                    activated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) RETURNING id",
        ))
        .bind(new.digest)
        .bind(json_text(new.files))
        .bind(json_text(new.tasks))
        .bind(new.author)
        .bind(new.reason)
        .bind(new.diff)
        .bind(json_text(new.results))
        .bind(new.state.as_str())
        .bind(new.based_on)
        .bind(now)
        .bind(activated_at)
        .fetch_one(&mut *tx)
        .await
        .map_err(raced)?;
        let id: i64 = row.try_get("id")?;
        tx.commit().await.map_err(raced)?;
        Ok(id)
    }

    /// Activates a rule set awaiting approval, approved by `by`: refused when it is not awaiting approval, when
    /// `by` is its author (approval is a second person's), or when the active set is no longer the one it was
    /// vetted against (it is then marked superseded: its replay compared it with something no longer running).
    pub async fn approve_rule_set(&self, id: i64, by: &str, now: Millis) -> Result<RuleSetRecord> {
        let mut tx = self.write_tx().await?;
        let row = sqlx::query(tx.sql(select_rule_sets!("WHERE id = $1 /*pg:FOR UPDATE*/")))
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
        let Some(set) = row.as_ref().map(record).transpose()? else {
            return Err(StoreError::NotFound(format!("no rule set {id}: see `smart-taskd rules versions`")));
        };
        if set.state != RuleSetState::AwaitingApproval {
            return Err(StoreError::Refused(format!(
                "rule set {id} is {}, not awaiting approval",
                set.state.as_str().replace('_', " ")
            )));
        }
        if set.author == by {
            return Err(StoreError::Refused(format!(
                "rule set {id} was promoted by {by}: its approval must come from someone else"
            )));
        }
        if let Err(e) = fence_active(&mut tx, set.based_on).await {
            sqlx::query(tx.sql("UPDATE rule_sets SET state = 'superseded' WHERE id = $1"))
                .bind(id)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            return Err(e);
        }
        retire_active(&mut tx, now).await?;
        sqlx::query(tx.sql(
            "UPDATE rule_sets SET state = 'active', approved_by = $2, approved_at = $3, activated_at = $3 WHERE id = $1",
        ))
        .bind(id)
        .bind(by)
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(raced)?;
        tx.commit().await.map_err(raced)?;
        Ok(RuleSetRecord {
            state: RuleSetState::Active,
            approved_by: Some(by.to_string()),
            approved_at: Some(now),
            activated_at: Some(now),
            ..set
        })
    }
}

/// Refuses unless the active set is `based_on` (both None: nothing active yet), locking it on PostgreSQL.
async fn fence_active(tx: &mut Tx, based_on: Option<i64>) -> Result<()> {
    let row = sqlx::query(tx.sql("SELECT id FROM rule_sets WHERE state = 'active' /*pg:FOR UPDATE*/"))
        .fetch_optional(&mut **tx)
        .await?;
    let active: Option<i64> = row.map(|r| r.try_get("id")).transpose()?;
    if active == based_on {
        return Ok(());
    }
    let now = active.map_or("none".to_string(), |id| id.to_string());
    let then = based_on.map_or("none".to_string(), |id| id.to_string());
    Err(StoreError::Refused(format!(
        "the active rule set changed since this candidate was vetted (vetted against {then}, active now {now}): \
         promote it again, so that its replay and diff compare it with what runs"
    )))
}

async fn retire_active(tx: &mut Tx, now: Millis) -> Result<()> {
    sqlx::query(tx.sql("UPDATE rule_sets SET state = 'retired', retired_at = $1 WHERE state = 'active'"))
        .bind(now)
        .execute(&mut **tx)
        .await?;
    Ok(())
}
