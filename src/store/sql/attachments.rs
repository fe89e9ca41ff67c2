//! Attachments: the bytes once per content (SHA-256) in `attachment_contents`, one row per file of a request
//! or of a requester's message in `attachments` (migration 0015), written in the transaction of what they came
//! with, read back for the request's view and its downloads, deleted with their request by the retention purge.

use std::collections::HashSet;

use super::*;

/// One file to store with its request (and the message it came with, if any) at position `posizione`.
pub(super) struct AttachmentRow<'a> {
    pub request_id: i64,
    pub event_id: Option<i64>,
    pub posizione: i64,
    pub file: &'a NewAttachment,
}

/// Writes the files' rows and each content not stored yet (a content already there is not sent again).
pub(super) async fn insert_attachments(tx: &mut Tx, rows: &[AttachmentRow<'_>], now: Millis) -> Result<()> {
    let mut written: HashSet<&str> = HashSet::new();
    for row in rows {
        let file = row.file;
        if written.insert(&file.sha256) {
            // Locks an existing content row (on PostgreSQL) so that a purge running now cannot delete it
            // under this transaction's reference; 0 rows: the content is new.
            let kept = sqlx::query(tx.sql("UPDATE attachment_contents SET size = size WHERE sha256 = $1"))
                .bind(&file.sha256)
                .execute(&mut **tx)
                .await?;
            if kept.rows_affected() == 0 {
                sqlx::query(tx.sql("INSERT INTO attachment_contents (sha256, size, content) VALUES ($1, $2, $3)"))
                    .bind(&file.sha256)
                    .bind(file.content.len() as i64)
                    .bind(file.content.to_vec())
                    .execute(&mut **tx)
                    .await?;
            }
        }
        sqlx::query(tx.sql(
            "INSERT INTO attachments (request_id, event_id, posizione, nome, tipo, size, sha256, at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        ))
        .bind(row.request_id)
        .bind(row.event_id)
        .bind(row.posizione)
        .bind(&file.nome)
        .bind(&file.tipo)
        .bind(file.content.len() as i64)
        .bind(&file.sha256)
        .bind(now)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

/// What an event says of the files that came with it: types and sizes (their names stay with the attachments:
/// the event feed carries no text of the requester's).
pub(super) fn attachment_summaries(files: &[NewAttachment]) -> Value {
    files.iter().map(|f| json!({ "tipo": f.tipo, "dimensione": f.content.len() })).collect::<Vec<_>>().into()
}

/// The next free position among a request's attachments.
pub(super) async fn next_position(tx: &mut Tx, request_id: i64) -> Result<i64> {
    let last: Option<i64> = sqlx::query_scalar(tx.sql("SELECT MAX(posizione) FROM attachments WHERE request_id = $1"))
        .bind(request_id)
        .fetch_one(&mut **tx)
        .await?;
    Ok(last.unwrap_or(0) + 1)
}

/// Deletes the attachments of the requests closed before `cutoff` (the retention purge, in its transaction),
/// then every content no attachment names any more.
pub(super) async fn purge_attachments(tx: &mut Tx, cutoff: Millis) -> Result<()> {
    sqlx::query(tx.sql(
        "DELETE FROM attachments
         WHERE request_id IN (SELECT id FROM requests WHERE stato = 'chiusa' AND chiusa_il < $1)",
    ))
    .bind(cutoff)
    .execute(&mut **tx)
    .await?;
    sqlx::query(
        "DELETE FROM attachment_contents
         WHERE NOT EXISTS (SELECT 1 FROM attachments a WHERE a.sha256 = attachment_contents.sha256)",
    )
    .execute(&mut **tx)
    .await?;
    Ok(())
}

impl Store {
    /// The attachments of a request, in the order received, without their bytes.
    pub(super) async fn attachments_of(&self, request_id: i64) -> Result<Vec<AttachmentView>> {
        sqlx::query(self.sql(
            "SELECT posizione, nome, tipo, size, sha256, event_id, at FROM attachments
             WHERE request_id = $1 ORDER BY posizione",
        ))
        .bind(request_id)
        .fetch_all(&self.pool)
        .await?
        .into_iter()
        .map(|r| {
            Ok(AttachmentView {
                posizione: r.try_get("posizione")?,
                nome: r.try_get("nome")?,
                tipo: r.try_get("tipo")?,
                dimensione: r.try_get("size")?,
                sha256: r.try_get("sha256")?,
                messaggio: r.try_get::<Option<i64>, _>("event_id")?.is_some(),
                ricevuto_il: rfc3339(r.try_get("at")?),
            })
        })
        .collect()
    }

    /// One attachment of a request with its bytes, by position; None when the request has no such attachment.
    pub async fn attachment(&self, request_id: i64, posizione: i64) -> Result<Option<AttachmentContent>> {
        let Some(row) = sqlx::query(self.sql(
            "SELECT a.nome, a.tipo, a.sha256, c.content FROM attachments a
             JOIN attachment_contents c ON c.sha256 = a.sha256
             WHERE a.request_id = $1 AND a.posizione = $2",
        ))
        .bind(request_id)
        .bind(posizione)
        .fetch_optional(&self.pool)
        .await?
        else {
            return Ok(None);
        };
        Ok(Some(AttachmentContent {
            nome: row.try_get("nome")?,
            tipo: row.try_get("tipo")?,
            sha256: row.try_get("sha256")?,
            content: row.try_get("content")?,
        }))
    }

    /// How many attachment rows and distinct contents the database holds (for tests and `stats`).
    pub async fn attachment_counts(&self) -> Result<(i64, i64)> {
        let files: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM attachments").fetch_one(&self.pool).await?;
        let contents: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM attachment_contents").fetch_one(&self.pool).await?;
        Ok((files, contents))
    }
}
