//! Cron bookkeeping and the maintenance jobs' writes.

use serde_json::json;
use sqlx::Row;

use super::{Sql, Store, insert_events};
use crate::domain::closing::{NewEvent, Notification};
use crate::domain::event::EventKind;
use crate::domain::time::Millis;
use crate::store::Result;

const DAY_MS: i64 = 86_400_000;

impl Store {
    /// The next scheduled instant of a job, set to `first` when the job is new.
    pub async fn cron_next(&self, name: &str, first: Millis) -> Result<Millis> {
        sqlx::query(
            self.sql("INSERT INTO cron_jobs (name, next_run_at) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING"),
        )
        .bind(name)
        .bind(first)
        .execute(&self.pool)
        .await?;
        Ok(sqlx::query_scalar(self.sql("SELECT next_run_at FROM cron_jobs WHERE name = $1"))
            .bind(name)
            .fetch_one(&self.pool)
            .await?)
    }

    /// Claims the run due at `due` by moving the job to `next`; false when another instance got it first.
    pub async fn cron_claim(&self, name: &str, due: Millis, next: Millis, now: Millis) -> Result<bool> {
        let done = sqlx::query(
            self.sql("UPDATE cron_jobs SET next_run_at = $3, last_run_at = $4 WHERE name = $1 AND next_run_at = $2"),
        )
        .bind(name)
        .bind(due)
        .bind(next)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Records how a run ended.
    pub async fn cron_done(&self, name: &str, error: Option<&str>, now: Millis) -> Result<()> {
        sqlx::query(
            self.sql("UPDATE cron_jobs SET last_error = $2, last_success_at = CASE WHEN $2 IS NULL THEN $3 ELSE last_success_at END
             WHERE name = $1"),
        )
        .bind(name)
        .bind(error)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Decisions recorded since an instant, by outcome.
    pub async fn decisions_since(&self, since: Millis) -> Result<Vec<(String, i64)>> {
        Ok(sqlx::query_as(
            self.sql(
                "SELECT outcome, COUNT(*) FROM decisions WHERE decided_at >= $1 GROUP BY outcome ORDER BY outcome",
            ),
        )
        .bind(since)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Lease reaper: gives back the leases that expired (their worker died), so the queue shows them as
    /// waiting again. Returns how many.
    pub async fn reap_leases(&self, now: Millis) -> Result<u64> {
        let done = sqlx::query(self.sql(
            "UPDATE requests SET lease_token = NULL, lease_owner = NULL
             WHERE lease_token IS NOT NULL AND available_at <= $1 AND stato <> 'chiusa'",
        ))
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    /// SLA escalation of referred requests: an `sla_avviso` event at day 20 and an `sla_superato` event at
    /// day 30 from protocollazione (each once), notified to the competent sede. Returns (warnings, breaches).
    pub async fn escalate_sla(&self, now: Millis) -> Result<(usize, usize)> {
        let mut tx = self.write_tx().await?;
        let mut events = Vec::new();
        let (mut warnings, mut breaches) = (0, 0);
        for (kind, days) in [(EventKind::SlaSuperato, 30), (EventKind::SlaAvviso, 20)] {
            let rows = sqlx::query(tx.sql(
                "SELECT r.id, r.protocollo, COALESCE(r.assegnata_sede, r.sede) AS sede, s.email
                 FROM requests r LEFT JOIN sedi s ON s.codice = COALESCE(r.assegnata_sede, r.sede)
                 WHERE r.stato <> 'chiusa' AND r.parked = 'rinvio' AND r.creata_il <= $1
                   AND NOT EXISTS (SELECT 1 FROM events e WHERE e.request_id = r.id AND e.kind = $2)
                   AND ($2 = 'sla_superato' OR NOT EXISTS
                        (SELECT 1 FROM events e WHERE e.request_id = r.id AND e.kind = 'sla_superato'))",
            ))
            .bind(now - days * DAY_MS)
            .bind(kind.as_str())
            .fetch_all(&mut *tx)
            .await?;
            for row in rows {
                let email: Option<String> = row.try_get("email")?;
                events.push(NewEvent {
                    request_id: row.try_get("id")?,
                    kind,
                    actor: "scheduler".into(),
                    detail: json!({ "giorni": days, "sede": row.try_get::<String, _>("sede")? }),
                    notifications: email
                        .into_iter()
                        .map(|recipient| Notification { channel: "email", recipient, role: "sede".into() })
                        .collect(),
                });
                if kind == EventKind::SlaSuperato { breaches += 1 } else { warnings += 1 }
            }
        }
        insert_events(&mut tx, &events, now).await?;
        tx.commit().await?;
        Ok((warnings, breaches))
    }

    /// Retention: deletes closed requests (with their history, decisions, notifications and attachments) closed before
    /// `cutoff`. Returns how many.
    pub async fn purge_closed(&self, cutoff: Millis) -> Result<u64> {
        let mut tx = self.write_tx().await?;
        super::attachments::purge_attachments(&mut tx, cutoff).await?;
        for statement in [
            "UPDATE deleghe SET revocata_da = NULL WHERE revocata_da IN (SELECT id FROM requests WHERE stato = 'chiusa' AND chiusa_il < $1)",
            "DELETE FROM outbox WHERE request_id IN (SELECT id FROM requests WHERE stato = 'chiusa' AND chiusa_il < $1)",
            "DELETE FROM applied_effects WHERE request_id IN (SELECT id FROM requests WHERE stato = 'chiusa' AND chiusa_il < $1)",
            "DELETE FROM events WHERE request_id IN (SELECT id FROM requests WHERE stato = 'chiusa' AND chiusa_il < $1)",
            "DELETE FROM decisions WHERE request_id IN (SELECT id FROM requests WHERE stato = 'chiusa' AND chiusa_il < $1)",
        ] {
            sqlx::query(statement).bind(cutoff).execute(&mut *tx).await?;
        }
        let done = sqlx::query(tx.sql("DELETE FROM requests WHERE stato = 'chiusa' AND chiusa_il < $1"))
            .bind(cutoff)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(done.rows_affected())
    }
}
