//! The satisfaction questionnaire's two tables (migration 0018): invitations keyed by the SHA-256 of their
//! one-time token, and answer sets under random keys. Neither has a column that names a request, a requester, a
//! notification or an instant finer than a day (see ARCHITECTURE.md, "The questionnaire").

use sqlx::Row;

use super::{Sql, Store};
use crate::store::Result;

/// An answer set as stored: its group and the answers' JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredAnswers {
    pub task: String,
    pub categoria: String,
    pub mese: String,
    pub risposte: String,
}

impl Store {
    /// Records an invitation (a token already recorded is left as it is: the same token is the same invitation).
    pub async fn questionnaire_invite(
        &self,
        token_sha256: &str,
        task: &str,
        categoria: &str,
        mese: &str,
        expires_day: &str,
    ) -> Result<()> {
        sqlx::query(self.sql(
            "INSERT INTO questionnaire_invitations (token_sha256, task, categoria, mese, expires_day)
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (token_sha256) DO NOTHING",
        ))
        .bind(token_sha256)
        .bind(task)
        .bind(categoria)
        .bind(mese)
        .bind(expires_day)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Uses an invitation: deletes it (if it exists and `today` is not past its last day) and stores the answer
    /// set under `id` in the same transaction. None when there was no such valid invitation (nothing stored).
    pub async fn questionnaire_answer(
        &self,
        token_sha256: &str,
        today: &str,
        id: &str,
        risposte: &str,
    ) -> Result<Option<StoredAnswers>> {
        let mut tx = self.write_tx().await?;
        let row = sqlx::query(tx.sql(
            "DELETE FROM questionnaire_invitations WHERE token_sha256 = $1 AND expires_day >= $2
             RETURNING task, categoria, mese",
        ))
        .bind(token_sha256)
        .bind(today)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            tx.commit().await?;
            return Ok(None);
        };
        let stored = StoredAnswers {
            task: row.try_get("task")?,
            categoria: row.try_get("categoria")?,
            mese: row.try_get("mese")?,
            risposte: risposte.to_string(),
        };
        sqlx::query(tx.sql(
            "INSERT INTO questionnaire_answers (id, task, categoria, mese, risposte) VALUES ($1, $2, $3, $4, $5)",
        ))
        .bind(id)
        .bind(&stored.task)
        .bind(&stored.categoria)
        .bind(&stored.mese)
        .bind(risposte)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Some(stored))
    }

    /// Whether a token names an invitation that exists, valid or expired (to tell "used" from "expired").
    pub async fn questionnaire_invitation_expired(&self, token_sha256: &str, today: &str) -> Result<bool> {
        let n: i64 = sqlx::query_scalar(
            self.sql("SELECT COUNT(*) FROM questionnaire_invitations WHERE token_sha256 = $1 AND expires_day < $2"),
        )
        .bind(token_sha256)
        .bind(today)
        .fetch_one(&self.pool)
        .await?;
        Ok(n > 0)
    }

    /// The answer sets of `since_month` (`YYYY-MM`) and later, or all of them, in group order (the aggregate
    /// is computed by `app::questionnaire`).
    pub async fn questionnaire_answers(&self, since_month: Option<&str>) -> Result<Vec<StoredAnswers>> {
        let rows = sqlx::query(self.sql(
            "SELECT task, categoria, mese, risposte FROM questionnaire_answers WHERE mese >= $1
             ORDER BY task, categoria, mese, id",
        ))
        .bind(since_month.unwrap_or(""))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(StoredAnswers {
                    task: r.try_get("task")?,
                    categoria: r.try_get("categoria")?,
                    mese: r.try_get("mese")?,
                    risposte: r.try_get("risposte")?,
                })
            })
            .collect()
    }

    /// Deletes the invitations whose last day is before `today`. Returns how many.
    pub async fn questionnaire_purge(&self, today: &str) -> Result<u64> {
        Ok(sqlx::query(self.sql("DELETE FROM questionnaire_invitations WHERE expires_day < $1"))
            .bind(today)
            .execute(&self.pool)
            .await?
            .rows_affected())
    }
}
