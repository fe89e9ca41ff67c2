//! Webhook subscriptions (migration 0013): an integrator's subscriptions, each with a cursor over the event
//! feed, its attempts on the next event, and a lease (owner, expiry, fencing token) so that one delivery loop
//! at a time, across instances, delivers it. Every write after a claim is fenced by the claim's token.

use sqlx::Row;

use super::{Sql, Store};
use crate::domain::time::Millis;
use crate::store::{DueWebhook, FeedPosition, NewWebhook, Result, WebhookView};

impl Store {
    /// The position of the feed's last event now (the start when there is none): a subscription created now
    /// starts after it, so it gets every event committed from now on (see [`Store::feed`]).
    pub async fn feed_end(&self) -> Result<FeedPosition> {
        let row = sqlx::query(self.sql(
            "SELECT e.tx, e.id FROM events e
             WHERE 1 = 1 /*pg:AND e.tx < pg_snapshot_xmin(pg_current_snapshot())::text::bigint*/
             ORDER BY e.tx DESC, e.id DESC LIMIT 1",
        ))
        .fetch_optional(&self.pool)
        .await?;
        Ok(match row {
            Some(r) => FeedPosition { tx: r.try_get("tx")?, id: r.try_get("id")? },
            None => FeedPosition::default(),
        })
    }

    pub async fn create_webhook(&self, w: &NewWebhook, now: Millis) -> Result<()> {
        sqlx::query(self.sql(
            "INSERT INTO webhook_subscriptions (id, integrator, url, descrizione, secret, created_at, cursor_tx, cursor_id)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        ))
        .bind(&w.id)
        .bind(&w.integrator)
        .bind(&w.url)
        .bind(w.descrizione.as_deref())
        .bind(&w.secret)
        .bind(now)
        .bind(w.start.tx)
        .bind(w.start.id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// An integrator's subscriptions, oldest first (never their secrets).
    pub async fn webhooks_of(&self, integrator: &str) -> Result<Vec<WebhookView>> {
        let rows = sqlx::query(self.sql(
            "SELECT s.id, s.url, s.descrizione, s.created_at, s.cursor_tx, s.cursor_id, s.attempts, s.last_status,
                    (SELECT COUNT(*) FROM webhook_dead_letters d WHERE d.subscription_id = s.id) AS dead
             FROM webhook_subscriptions s WHERE s.integrator = $1 ORDER BY s.created_at, s.id",
        ))
        .bind(integrator)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(WebhookView {
                    id: r.try_get("id")?,
                    url: r.try_get("url")?,
                    descrizione: r.try_get("descrizione")?,
                    created_at: r.try_get("created_at")?,
                    cursor: FeedPosition { tx: r.try_get("cursor_tx")?, id: r.try_get("cursor_id")? },
                    attempts: r.try_get("attempts")?,
                    last_status: r.try_get("last_status")?,
                    dead_letters: r.try_get("dead")?,
                })
            })
            .collect()
    }

    /// Deletes an integrator's subscription and its dead letters; false when it has none with that id.
    pub async fn delete_webhook(&self, integrator: &str, id: &str) -> Result<bool> {
        let mut tx = self.write_tx().await?;
        let deleted = sqlx::query(tx.sql("DELETE FROM webhook_subscriptions WHERE id = $1 AND integrator = $2"))
            .bind(id)
            .bind(integrator)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if deleted == 0 {
            tx.rollback().await?;
            return Ok(false);
        }
        sqlx::query(tx.sql("DELETE FROM webhook_dead_letters WHERE subscription_id = $1"))
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Leases up to `limit` subscriptions that have an event after their cursor and are due (no live lease, no
    /// retry waiting) to `owner` until `now + lease_ms`, each with a new fencing token.
    pub async fn claim_webhooks(&self, owner: &str, limit: i64, lease_ms: i64, now: Millis) -> Result<Vec<DueWebhook>> {
        let mut tx = self.write_tx().await?;
        let rows = sqlx::query(tx.sql(
            "UPDATE webhook_subscriptions SET lease_owner = $1, lease_until = $2, lease_token = lease_token + 1
             WHERE id IN (SELECT s.id FROM webhook_subscriptions s
                          WHERE s.lease_until <= $3 AND s.next_attempt_at <= $3
                            AND EXISTS (SELECT 1 FROM events e WHERE (e.tx, e.id) > (s.cursor_tx, s.cursor_id)
                              /*pg:AND e.tx < pg_snapshot_xmin(pg_current_snapshot())::text::bigint*/)
                          ORDER BY s.next_attempt_at, s.id LIMIT $4 /*pg:FOR UPDATE SKIP LOCKED*/)
             RETURNING id, url, secret, cursor_tx, cursor_id, attempts, lease_token",
        ))
        .bind(owner)
        .bind(now + lease_ms)
        .bind(now)
        .bind(limit)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        rows.iter()
            .map(|r| {
                Ok(DueWebhook {
                    id: r.try_get("id")?,
                    url: r.try_get("url")?,
                    secret: r.try_get("secret")?,
                    cursor: FeedPosition { tx: r.try_get("cursor_tx")?, id: r.try_get("cursor_id")? },
                    attempts: r.try_get("attempts")?,
                    token: r.try_get("lease_token")?,
                })
            })
            .collect()
    }

    /// The event at `to` was delivered: the cursor moves past it and the lease ends. False when the lease moved
    /// to another claim (nothing written).
    pub async fn webhook_delivered(&self, id: &str, token: i64, to: FeedPosition) -> Result<bool> {
        let done = sqlx::query(self.sql(
            "UPDATE webhook_subscriptions SET cursor_tx = $3, cursor_id = $4, attempts = 0, next_attempt_at = 0,
                    last_status = NULL, lease_owner = NULL, lease_until = 0
             WHERE id = $1 AND lease_token = $2",
        ))
        .bind(id)
        .bind(token)
        .bind(to.tx)
        .bind(to.id)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// A failed attempt on the next event: counted, retried at `retry_at`; the lease ends. False when fenced out.
    pub async fn webhook_failed(
        &self,
        id: &str,
        token: i64,
        attempts: i64,
        status: i64,
        retry_at: Millis,
    ) -> Result<bool> {
        let done = sqlx::query(self.sql(
            "UPDATE webhook_subscriptions SET attempts = $3, last_status = $4, next_attempt_at = $5,
                    lease_owner = NULL, lease_until = 0
             WHERE id = $1 AND lease_token = $2",
        ))
        .bind(id)
        .bind(token)
        .bind(attempts)
        .bind(status)
        .bind(retry_at)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// The event at `event` ran out of attempts: a dead letter (ids, attempts, last status) and the cursor moves
    /// past it, in one transaction. False when fenced out (nothing written).
    pub async fn webhook_dead(
        &self,
        id: &str,
        token: i64,
        event: FeedPosition,
        attempts: i64,
        status: i64,
        now: Millis,
    ) -> Result<bool> {
        let mut tx = self.write_tx().await?;
        let moved = sqlx::query(tx.sql(
            "UPDATE webhook_subscriptions SET cursor_tx = $3, cursor_id = $4, attempts = 0, next_attempt_at = 0,
                    last_status = NULL, lease_owner = NULL, lease_until = 0
             WHERE id = $1 AND lease_token = $2",
        ))
        .bind(id)
        .bind(token)
        .bind(event.tx)
        .bind(event.id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if moved == 0 {
            tx.rollback().await?;
            return Ok(false);
        }
        sqlx::query(tx.sql(
            "INSERT INTO webhook_dead_letters (subscription_id, event_id, attempts, last_status, at)
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (subscription_id, event_id) DO NOTHING",
        ))
        .bind(id)
        .bind(event.id)
        .bind(attempts)
        .bind(status)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Ends one lease without a delivery (nothing visible to deliver after all).
    pub async fn release_webhook(&self, id: &str, token: i64) -> Result<bool> {
        let done = sqlx::query(self.sql(
            "UPDATE webhook_subscriptions SET lease_owner = NULL, lease_until = 0 WHERE id = $1 AND lease_token = $2",
        ))
        .bind(id)
        .bind(token)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Gives back every lease `owner` still holds (graceful shutdown).
    pub async fn release_webhooks(&self, owner: &str) -> Result<u64> {
        let done = sqlx::query(
            self.sql("UPDATE webhook_subscriptions SET lease_owner = NULL, lease_until = 0 WHERE lease_owner = $1"),
        )
        .bind(owner)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }
}
