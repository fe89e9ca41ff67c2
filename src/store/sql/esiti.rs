//! The esito documents of closed requests: which closed requests have no recorded esito PDF yet, and the record
//! of one (the `esito_sha256` column of migration 0016 and an `esito_documento` event), fenced so that two
//! instances rendering the same request record it once.

use super::*;

/// What `esito_sha256` holds for a request whose document could not be rendered (so it is not tried forever).
pub const ESITO_NOT_RENDERED: &str = "-";

impl Store {
    /// Closed requests whose esito PDF is not recorded yet, oldest close first.
    pub async fn pending_esiti(&self, limit: i64) -> Result<Vec<i64>> {
        Ok(sqlx::query_scalar(self.sql(
            "SELECT id FROM requests WHERE stato = 'chiusa' AND esito_sha256 IS NULL ORDER BY chiusa_il, id LIMIT $1",
        ))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Records the SHA-256 of a closed request's esito PDF (or [`ESITO_NOT_RENDERED`]) with its event; false when
    /// it was recorded already (by another instance) and nothing was written.
    pub async fn record_esito(&self, request_id: i64, sha256: &str, now: Millis) -> Result<bool> {
        let mut tx = self.write_tx().await?;
        let done = sqlx::query(
            tx.sql("UPDATE requests SET esito_sha256 = $1 WHERE id = $2 AND stato = 'chiusa' AND esito_sha256 IS NULL"),
        )
        .bind(sha256)
        .bind(request_id)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 0 {
            return Ok(false);
        }
        let detail =
            if sha256 == ESITO_NOT_RENDERED { json!({ "generato": false }) } else { json!({ "sha256": sha256 }) };
        let event = NewEvent {
            request_id,
            kind: EventKind::EsitoDocumento,
            actor: "documenti".into(),
            detail,
            notifications: Vec::new(),
        };
        insert_events(&mut tx, &[event], now).await?;
        tx.commit().await?;
        Ok(true)
    }
}
