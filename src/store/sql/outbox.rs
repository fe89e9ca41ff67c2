//! The notification outbox on SQLite: the dispatcher's claims (lease + fencing token, like requests), its
//! results recorded in one fenced transaction per batch, contacts flagged on permanent bounces, and the
//! operators' `notifications list` / `retry`.

use serde_json::{Value, json};
use sqlx::Row;

use super::{Sql, Store, bump_versions, json_text, parse_json};
use crate::domain::facts::contatto_subjects;
use crate::domain::time::{Millis, rfc3339};
use crate::store::{
    DueNotification, NotificationFate, NotificationOutcome, NotificationView, RecordReport, Result, RetryTarget,
    StoreError,
};

impl Store {
    /// Claims up to `limit` due notifications of the given channels for `owner` until `now + lease_ms`
    /// (a lease and a fencing token, like requests); fixes each one's stable reference at its first claim.
    pub async fn claim_notifications(
        &self,
        owner: &str,
        channels: &[&str],
        limit: u32,
        lease_ms: i64,
        now: Millis,
        message_id_domain: &str,
    ) -> Result<Vec<DueNotification>> {
        let mut tx = self.write_tx().await?;
        // `available_at` becomes the lease expiry: an expired lease makes the row due again (takeover), and
        // the new claim's token fences out whatever the old holder still writes.
        let ids: Vec<i64> = sqlx::query_scalar(tx.sql(
            "UPDATE outbox SET claims = claims + 1, lease_token = claims + 1, lease_owner = $1, available_at = $2,
                    attempts = attempts + 1, updated_at = $3,
                    reference = COALESCE(reference, CASE channel WHEN 'email' THEN '<outbox-' || id || '@' || $6 || '>'
                                                                 ELSE 'outbox-' || id END)
             WHERE id IN (SELECT id FROM outbox
                          WHERE state = 'pending' AND available_at <= $3
                            AND channel IN (SELECT value FROM json_each($5))
                          ORDER BY available_at, id LIMIT $4 /*pg:FOR UPDATE SKIP LOCKED*/)
             RETURNING id",
        ))
        .bind(owner)
        .bind(now + lease_ms)
        .bind(now)
        .bind(i64::from(limit))
        .bind(json_text(&channels))
        .bind(message_id_domain)
        .fetch_all(&mut *tx)
        .await?;
        if ids.is_empty() {
            tx.commit().await?;
            return Ok(Vec::new());
        }
        let rows = sqlx::query(tx.sql(
            "SELECT o.id, o.lease_token, o.request_id, o.event, o.channel, o.recipient, o.role, o.attempts,
                    o.reference, r.protocollo, r.task, r.sede, s.denominazione, s.email AS sede_email,
                    e.detail, e.at, r.payload/*pg:::jsonb*/ ->> 'profilo_richiedente' AS profilo_richiedente,
                    i.categoria AS categoria_intermediario, r.payload/*pg:::jsonb*/ ->> 'ambito' AS ambito
             FROM outbox o
             JOIN requests r ON r.id = o.request_id
             JOIN events e ON e.id = o.event_id
             LEFT JOIN sedi s ON s.codice = r.sede
             LEFT JOIN intermediari i ON i.cf = r.payload/*pg:::jsonb*/ ->> 'richiedente_cf'
                                      AND r.payload/*pg:::jsonb*/ ->> 'profilo_richiedente' = 'INTERMEDIARIO'
             WHERE o.id IN (SELECT CAST(value AS BIGINT) FROM json_each($1))
             ORDER BY o.id",
        ))
        .bind(json_text(&ids))
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        rows.iter()
            .map(|r| {
                let detail: Option<String> = r.try_get("detail")?;
                Ok(DueNotification {
                    id: r.try_get("id")?,
                    token: r.try_get("lease_token")?,
                    request_id: r.try_get("request_id")?,
                    event: r.try_get("event")?,
                    channel: r.try_get("channel")?,
                    recipient: r.try_get("recipient")?,
                    role: r.try_get("role")?,
                    attempts: r.try_get("attempts")?,
                    reference: r.try_get("reference")?,
                    protocollo: r.try_get("protocollo")?,
                    task: r.try_get("task")?,
                    sede: r.try_get("sede")?,
                    sede_denominazione: r.try_get("denominazione")?,
                    sede_email: r.try_get("sede_email")?,
                    event_detail: match detail.as_deref() {
                        Some(text) => parse_json("events.detail", text)?,
                        None => Value::Null,
                    },
                    event_at: r.try_get("at")?,
                    profilo_richiedente: r.try_get("profilo_richiedente")?,
                    categoria_intermediario: r.try_get("categoria_intermediario")?,
                    ambito: r.try_get("ambito")?,
                })
            })
            .collect()
    }

    /// Records the results of claimed notifications in one transaction, fenced by their tokens; flags the
    /// contacts of permanent bounces when `flag_contacts`.
    pub async fn record_notifications(
        &self,
        outcomes: &[NotificationOutcome],
        flag_contacts: bool,
        now: Millis,
    ) -> Result<RecordReport> {
        if outcomes.is_empty() {
            return Ok(RecordReport::default());
        }
        // [id, token, state, available_at, last_error, provider_id, sent_at]
        let rows: Vec<Value> = outcomes
            .iter()
            .map(|o| match &o.fate {
                NotificationFate::Sent { provider_id } => {
                    json!([o.id, o.token, "sent", null, null, provider_id, now])
                }
                NotificationFate::Retry { at, error } => json!([o.id, o.token, "pending", at, error, null, null]),
                NotificationFate::Failed { error, .. } => json!([o.id, o.token, "failed", null, error, null, null]),
                NotificationFate::Dead { error } => json!([o.id, o.token, "dead", null, error, null, null]),
            })
            .collect();
        let mut tx = self.write_tx().await?;
        let applied: Vec<i64> = sqlx::query_scalar(tx.sql(
            "UPDATE outbox SET state = j.value ->> 2,
                    available_at = COALESCE(CAST(j.value ->> 3 AS BIGINT), outbox.available_at),
                    last_error = j.value ->> 4, provider_id = COALESCE(j.value ->> 5, outbox.provider_id),
                    sent_at = CAST(j.value ->> 6 AS BIGINT), lease_token = NULL, lease_owner = NULL, updated_at = $2
             FROM json_each($1) j
             WHERE outbox.id = CAST(j.value ->> 0 AS BIGINT) AND outbox.lease_token = CAST(j.value ->> 1 AS BIGINT)
               AND outbox.state = 'pending'
             RETURNING outbox.id",
        ))
        .bind(json_text(&rows))
        .bind(now)
        .fetch_all(&mut *tx)
        .await?;
        let mut report = RecordReport::default();
        for o in outcomes {
            if applied.contains(&o.id) {
                report.applied.push(o.id);
            } else {
                report.stale.push(o.id);
            }
        }
        let bounced: Vec<i64> = outcomes
            .iter()
            .filter(|o| matches!(o.fate, NotificationFate::Failed { bounce: true, .. }) && applied.contains(&o.id))
            .map(|o| o.id)
            .collect();
        if flag_contacts && !bounced.is_empty() {
            // Contact values are stored normalised (e-mail lower-case, mobiles E.164), as outbox recipients are.
            let matching = sqlx::query(tx.sql(
                "SELECT c.id, c.titolare_cf, c.matricola FROM contatti c
                 JOIN (SELECT channel, recipient FROM outbox
                       WHERE id IN (SELECT CAST(value AS BIGINT) FROM json_each($1))) b ON c.valore = b.recipient
                 WHERE c.stato = 'VALIDO'
                   AND ((b.channel = 'email' AND c.tipo IN ('EMAIL', 'PEC')) OR (b.channel = 'sms' AND c.tipo = 'CELLULARE'))
                 ORDER BY c.id",
            ))
            .bind(json_text(&bounced))
            .fetch_all(&mut *tx)
            .await?;
            let mut ids = Vec::new();
            let mut subjects = Vec::new();
            for row in &matching {
                ids.push(row.try_get::<String, _>("id")?);
                let matricola: Option<String> = row.try_get("matricola")?;
                subjects.extend(
                    contatto_subjects(row.try_get("titolare_cf")?, matricola.as_ref()).iter().map(|s| s.to_string()),
                );
            }
            // Rules read contacts with their subject's version: a decision that read this contact as valid
            // must not close over the change. Versions first, in the order a close locks them, then the rows.
            bump_versions(&mut tx, &subjects).await?;
            report.flagged_contacts = sqlx::query_scalar(tx.sql(
                "UPDATE contatti SET stato = 'ANOMALO',
                        anomalia = CASE tipo WHEN 'PEC' THEN 'PEC_NON_VALIDA'
                                             WHEN 'CELLULARE' THEN 'SMS_NON_RECAPITABILE'
                                             ELSE 'EMAIL_HARD_BOUNCE' END
                 WHERE id IN (SELECT value FROM json_each($1)) AND stato = 'VALIDO'
                 RETURNING id",
            ))
            .bind(json_text(&ids))
            .fetch_all(&mut *tx)
            .await?;
            report.flagged_contacts.sort();
        }
        tx.commit().await?;
        Ok(report)
    }

    /// Gives back the notification leases `owner` still holds (graceful shutdown).
    pub async fn release_notifications(&self, owner: &str, now: Millis) -> Result<u64> {
        let done = sqlx::query(self.sql(
            "UPDATE outbox SET lease_token = NULL, lease_owner = NULL, available_at = $2,
                    attempts = CASE WHEN attempts > 0 THEN attempts - 1 ELSE 0 END, updated_at = $2
             WHERE lease_owner = $1 AND lease_token IS NOT NULL AND state = 'pending'",
        ))
        .bind(owner)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    /// Notifications of these channels due now or in flight (leased); those waiting for a later retry are
    /// not counted (`run --exit-when-idle`).
    pub async fn notifications_due(&self, channels: &[&str], now: Millis) -> Result<i64> {
        Ok(sqlx::query_scalar(self.sql(
            "SELECT COUNT(*) FROM outbox
             WHERE state = 'pending' AND channel IN (SELECT value FROM json_each($1))
               AND (available_at <= $2 OR lease_token IS NOT NULL)",
        ))
        .bind(json_text(&channels))
        .bind(now)
        .fetch_one(&self.pool)
        .await?)
    }

    /// Notifications, newest first; with `undeliverable`, only those failed permanently or dead.
    pub async fn list_notifications(&self, undeliverable: bool, limit: i64) -> Result<Vec<NotificationView>> {
        let rows = sqlx::query(self.sql(
            "SELECT o.id, r.protocollo, o.event, o.channel, o.recipient, o.role, o.state, o.attempts, o.reference,
                    o.provider_id, o.created_at, o.sent_at, o.available_at, o.last_error
             FROM outbox o JOIN requests r ON r.id = o.request_id
             WHERE ($1 = 0 OR o.state IN ('failed', 'dead'))
             ORDER BY o.id DESC LIMIT $2",
        ))
        .bind(i64::from(undeliverable))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let stato: String = r.try_get("state")?;
                Ok(NotificationView {
                    id: r.try_get("id")?,
                    protocollo: r.try_get("protocollo")?,
                    evento: r.try_get("event")?,
                    canale: r.try_get("channel")?,
                    destinatario: r.try_get("recipient")?,
                    ruolo: r.try_get("role")?,
                    tentativi: r.try_get("attempts")?,
                    riferimento: r.try_get("reference")?,
                    id_fornitore: r.try_get("provider_id")?,
                    creata_il: rfc3339(r.try_get("created_at")?),
                    inviata_il: r.try_get::<Option<i64>, _>("sent_at")?.map(rfc3339),
                    prossimo_tentativo: (stato == "pending")
                        .then(|| r.try_get::<i64, _>("available_at"))
                        .transpose()?
                        .map(rfc3339),
                    errore: r.try_get("last_error")?,
                    stato,
                })
            })
            .collect()
    }

    /// Puts failed or dead notifications back in the queue, due now; a sent one is refused (never sent twice).
    pub async fn retry_notifications(&self, target: RetryTarget, now: Millis) -> Result<Vec<i64>> {
        let mut tx = self.write_tx().await?;
        let ids: Vec<i64> = match target {
            RetryTarget::One(id) => {
                let state: Option<(String, Option<i64>)> =
                    sqlx::query_as(tx.sql("SELECT state, sent_at FROM outbox WHERE id = $1"))
                        .bind(id)
                        .fetch_optional(&mut *tx)
                        .await?;
                match state {
                    None => return Err(StoreError::NotFound(format!("notification {id} does not exist"))),
                    Some((s, sent_at)) if s == "sent" => {
                        return Err(StoreError::Refused(format!(
                            "notification {id} was already sent{}: a confirmed notification is never sent again",
                            sent_at.map(|t| format!(" ({})", rfc3339(t))).unwrap_or_default()
                        )));
                    }
                    Some((s, _)) if s == "pending" => {
                        return Err(StoreError::Refused(format!(
                            "notification {id} is still queued: the dispatcher retries it by itself"
                        )));
                    }
                    Some(_) => vec![id],
                }
            }
            RetryTarget::AllUndeliverable => {
                sqlx::query_scalar(tx.sql("SELECT id FROM outbox WHERE state IN ('failed', 'dead') ORDER BY id"))
                    .fetch_all(&mut *tx)
                    .await?
            }
        };
        sqlx::query(tx.sql(
            "UPDATE outbox SET state = 'pending', attempts = 0, available_at = $2, lease_token = NULL,
                    lease_owner = NULL, updated_at = $2
             WHERE id IN (SELECT CAST(value AS BIGINT) FROM json_each($1)) AND state IN ('failed', 'dead')",
        ))
        .bind(json_text(&ids))
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(ids)
    }
}
