//! The change feeds: request events (`GET /eventi`) and applied effects (`GET /effetti`), committed rows in a
//! gap-free order, a page after a position. See migration 0010 for why the order is `(tx, id)` and not the id
//! alone.

use super::*;
use crate::store::{FeedEvent, FeedPosition, FeedSource};

impl Store {
    /// Up to `limit` rows of `source` after `after`, oldest first. On PostgreSQL only rows of transactions
    /// older than every transaction still in flight are returned, so nothing committed later can sort before
    /// them.
    pub async fn feed(&self, source: FeedSource, after: FeedPosition, limit: i64) -> Result<Vec<FeedEvent>> {
        // One statement per table, the same but for its name (statements are static text for the dialect).
        macro_rules! feed_of {
            ($table:literal) => {
                concat!(
                    "SELECT e.tx, e.id, e.request_id, e.kind, e.at, e.detail, r.protocollo, r.task
                     FROM ",
                    $table,
                    " e JOIN requests r ON r.id = e.request_id
                     WHERE (e.tx, e.id) > ($1, $2)
                       /*pg:AND e.tx < pg_snapshot_xmin(pg_current_snapshot())::text::bigint*/
                     ORDER BY e.tx, e.id LIMIT $3"
                )
            };
        }
        let text = match source {
            FeedSource::Events => feed_of!("events"),
            FeedSource::Effects => feed_of!("applied_effects"),
        };
        let rows = sqlx::query(self.sql(text)).bind(after.tx).bind(after.id).bind(limit).fetch_all(&self.pool).await?;
        rows.iter()
            .map(|r| {
                Ok(FeedEvent {
                    position: FeedPosition { tx: r.try_get("tx")?, id: r.try_get("id")? },
                    request_id: r.try_get("request_id")?,
                    protocollo: r.try_get("protocollo")?,
                    task: r.try_get("task")?,
                    kind: r.try_get("kind")?,
                    at: r.try_get("at")?,
                    detail: match r.try_get::<Option<&str>, _>("detail")? {
                        Some(d) => parse_json("detail", d)?,
                        None => Value::Null,
                    },
                })
            })
            .collect()
    }
}
