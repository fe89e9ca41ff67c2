//! The presa in carico of a request waiting for an operator (one operator holds it until they let it go or it
//! leaves the queue), and the replay cache of bearer-token ids shared by every instance on the database.

use serde_json::json;
use sqlx::Row;
use sqlx::any::AnyRow;

use super::operator::{find, must_be_open};
use super::{Sql, Store, claimed_from_row, insert_events};
use crate::domain::closing::NewEvent;
use crate::domain::event::EventKind;
use crate::domain::time::{Millis, rfc3339};
use crate::store::{Assignment, Result, StoreError};

/// Refuses to act on a request another operator holds: `holder` is the operator acting (None: the machine's
/// administrator, whom an assignment does not stop). The refusal names who holds it.
pub(super) fn not_held_by_another(row: &AnyRow, holder: Option<&str>) -> Result<()> {
    let held: Option<String> = row.try_get("assegnata_a")?;
    match (held, holder) {
        (Some(other), Some(me)) if other != me => Err(StoreError::Refused(format!(
            "request {} is held by operator `{other}` (presa in carico): only they work it until they release it",
            row.try_get::<String, _>("protocollo")?
        ))),
        _ => Ok(()),
    }
}

fn assignment_of(row: &AnyRow) -> Result<Assignment> {
    Ok(Assignment {
        protocollo: row.try_get("protocollo")?,
        assegnata_a: row.try_get("assegnata_a")?,
        assegnata_il: row.try_get::<Option<i64>, _>("assegnata_il")?.map(rfc3339),
    })
}

impl Store {
    /// `holder` takes a request waiting for an operator in hand (`actor` in the history). Taking one already
    /// held by `holder` changes nothing; one held by another operator is refused, naming them.
    pub async fn assign(&self, key: &str, holder: &str, actor: &str, now: Millis) -> Result<Assignment> {
        let mut tx = self.write_tx().await?;
        let row = find(&mut tx, key).await?;
        must_be_open(&row, now)?;
        not_held_by_another(&row, Some(holder))?;
        let claimed = claimed_from_row(&row)?;
        if row.try_get::<Option<&str>, _>("parked")?.is_none() {
            return Err(StoreError::Refused(format!(
                "request {} is not waiting for an operator: the rules decide it",
                claimed.protocollo
            )));
        }
        if row.try_get::<Option<&str>, _>("assegnata_a")?.is_some() {
            return assignment_of(&row);
        }
        let row = sqlx::query(tx.sql(
            "UPDATE requests SET assegnata_a = $2, assegnata_il = $3, aggiornata_il = $3 WHERE id = $1 RETURNING *",
        ))
        .bind(claimed.id)
        .bind(holder)
        .bind(now)
        .fetch_one(&mut *tx)
        .await?;
        let event = NewEvent {
            request_id: claimed.id,
            kind: EventKind::PresaInCarico,
            actor: actor.to_string(),
            detail: json!({ "assegnata_a": holder }),
            notifications: Vec::new(),
        };
        insert_events(&mut tx, &[event], now).await?;
        tx.commit().await?;
        assignment_of(&row)
    }

    /// The operator holding a request lets it go; nobody else may (the refusal names who holds it).
    pub async fn unassign(&self, key: &str, holder: &str, actor: &str, now: Millis) -> Result<Assignment> {
        let mut tx = self.write_tx().await?;
        let row = find(&mut tx, key).await?;
        let claimed = claimed_from_row(&row)?;
        if row.try_get::<Option<&str>, _>("assegnata_a")?.is_none() {
            return Err(StoreError::Refused(format!("request {} is not held by anyone", claimed.protocollo)));
        }
        not_held_by_another(&row, Some(holder))?;
        let row = sqlx::query(tx.sql(
            "UPDATE requests SET assegnata_a = NULL, assegnata_il = NULL, aggiornata_il = $2 WHERE id = $1 RETURNING *",
        ))
        .bind(claimed.id)
        .bind(now)
        .fetch_one(&mut *tx)
        .await?;
        let event = NewEvent {
            request_id: claimed.id,
            kind: EventKind::Rilascio,
            actor: actor.to_string(),
            detail: json!({ "assegnata_a": holder }),
            notifications: Vec::new(),
        };
        insert_events(&mut tx, &[event], now).await?;
        tx.commit().await?;
        assignment_of(&row)
    }

    /// Records the first use of a token id valid until `expires_at` (unix seconds): true the first time, false
    /// for a replay before it expires. One statement: a row left by an expired token with the same id is taken
    /// over instead of refusing.
    pub async fn first_use_of_jti(&self, jti: &str, expires_at: i64, now: i64) -> Result<bool> {
        let done = sqlx::query(self.sql(
            "INSERT INTO jti_seen (jti, expires_at) VALUES ($1, $2)
             ON CONFLICT (jti) DO UPDATE SET expires_at = excluded.expires_at WHERE jti_seen.expires_at < $3",
        ))
        .bind(jti)
        .bind(expires_at)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Whether a token id is recorded and not expired at `now` (unix seconds): a console session ended by its
    /// operator is refused until it would have expired.
    pub async fn jti_recorded(&self, jti: &str, now: i64) -> Result<bool> {
        let found: Option<i64> =
            sqlx::query_scalar(self.sql("SELECT 1 FROM jti_seen WHERE jti = $1 AND expires_at >= $2"))
                .bind(jti)
                .bind(now)
                .fetch_optional(&self.pool)
                .await?;
        Ok(found.is_some())
    }

    /// Forgets the token ids whose tokens have expired before `now` (unix seconds).
    pub async fn purge_jti(&self, now: i64) -> Result<u64> {
        let done =
            sqlx::query(self.sql("DELETE FROM jti_seen WHERE expires_at < $1")).bind(now).execute(&self.pool).await?;
        Ok(done.rows_affected())
    }
}
