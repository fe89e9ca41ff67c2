//! Reads for the CLI, the operators and the metrics: a request with its history, listings and queue counts.

use super::*;

impl Store {
    /// A request by internal id or protocol number, with its history and latest decision.
    pub async fn request(&self, key: &str) -> Result<Option<RequestView>> {
        let by_id: i64 = key.parse().unwrap_or(-1);
        let Some(row) = sqlx::query(self.sql("SELECT * FROM requests WHERE protocollo = $1 OR id = $2"))
            .bind(key)
            .bind(by_id)
            .fetch_optional(&self.pool)
            .await?
        else {
            return Ok(None);
        };
        let id: i64 = row.try_get("id")?;
        let eventi =
            sqlx::query(self.sql("SELECT kind, at, actor, detail FROM events WHERE request_id = $1 ORDER BY id"))
                .bind(id)
                .fetch_all(&self.pool)
                .await?
                .into_iter()
                .map(|e| {
                    Ok(EventView {
                        tipo: e.try_get("kind")?,
                        istante: rfc3339(e.try_get("at")?),
                        attore: e.try_get("actor")?,
                        dettaglio: match e.try_get::<Option<&str>, _>("detail")? {
                            Some(d) => parse_json("events.detail", d)?,
                            None => Value::Null,
                        },
                    })
                })
                .collect::<Result<Vec<_>>>()?;
        let decision = sqlx::query(self.sql(
            "SELECT reasons, effects, rule_version FROM decisions WHERE request_id = $1 ORDER BY id DESC LIMIT 1",
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        let (motivazioni, effetti, versione_regola) = match decision {
            Some(d) => (
                parse_json("decisions.reasons", d.try_get("reasons")?)?,
                parse_json("decisions.effects", d.try_get("effects")?)?,
                Some(d.try_get("rule_version")?),
            ),
            None => (Vec::new(), Vec::new(), None),
        };
        Ok(Some(RequestView {
            id,
            protocollo: row.try_get("protocollo")?,
            task: row.try_get("task")?,
            stato: row.try_get("stato")?,
            esito: row.try_get("esito")?,
            motivazioni,
            effetti,
            eventi,
            versione_regola,
            creata_il: rfc3339(row.try_get("creata_il")?),
            chiusa_il: row.try_get::<Option<i64>, _>("chiusa_il")?.map(rfc3339),
            sede: row.try_get("sede")?,
            soggetto: row.try_get("soggetto")?,
            sospesa: row.try_get("parked")?,
            assegnata_sede: row.try_get("assegnata_sede")?,
            assegnata_a: row.try_get("assegnata_a")?,
            errore: row.try_get("last_error")?,
            richiesta: parse_json("requests.payload", row.try_get("payload")?)?,
            allegati: self.attachments_of(id).await?,
        }))
    }

    pub async fn list(&self, f: &ListFilter) -> Result<Vec<RequestSummary>> {
        let rows = sqlx::query(self.sql(
            "SELECT id, protocollo, task, stato, esito, soggetto, matricola, parked, creata_il, aggiornata_il, chiusa_il
             FROM requests
             WHERE ($1 IS NULL OR stato = $1) AND ($2 IS NULL OR task = $2) AND ($3 IS NULL OR soggetto = $3)
               AND ($5 IS NULL OR esito = $5) AND ($6 IS NULL OR richiedente_cf = $6) AND ($7 IS NULL OR matricola = $7)
               AND ($8 IS NULL OR creata_il >= $8) AND ($9 IS NULL OR creata_il < $9)
               AND ($10 IS NULL OR aggiornata_il >= $10) AND ($11 IS NULL OR aggiornata_il < $11)
               AND ($12 IS NULL OR id < $12) AND ($13 IS NULL OR esito = $13) AND ($14 = 0 OR stato <> 'chiusa')
             ORDER BY id DESC LIMIT $4",
        ))
        .bind(f.stato.map(|s| s.stored().0))
        .bind(f.task.as_deref())
        .bind(f.soggetto.as_deref())
        .bind(f.limit)
        .bind(f.stato.and_then(|s| s.stored().1))
        .bind(f.richiedente.as_deref())
        .bind(f.matricola.as_deref())
        .bind(f.creata.0)
        .bind(f.creata.1)
        .bind(f.aggiornata.0)
        .bind(f.aggiornata.1)
        .bind(f.before_id)
        .bind(f.esito.as_deref())
        .bind(i64::from(f.open_only))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(RequestSummary {
                    id: r.try_get("id")?,
                    protocollo: r.try_get("protocollo")?,
                    task: r.try_get("task")?,
                    stato: r.try_get("stato")?,
                    esito: r.try_get("esito")?,
                    soggetto: r.try_get("soggetto")?,
                    matricola: r.try_get("matricola")?,
                    sospesa: r.try_get("parked")?,
                    creata_il: rfc3339(r.try_get("creata_il")?),
                    aggiornata_il: rfc3339(r.try_get("aggiornata_il")?),
                    chiusa_il: r.try_get::<Option<i64>, _>("chiusa_il")?.map(rfc3339),
                })
            })
            .collect()
    }

    /// The task types of the stored requests, sorted.
    pub async fn stored_tasks(&self) -> Result<Vec<String>> {
        Ok(sqlx::query_scalar(self.sql("SELECT DISTINCT task FROM requests ORDER BY task"))
            .fetch_all(&self.pool)
            .await?)
    }

    pub async fn counts(&self) -> Result<QueueCounts> {
        let row = sqlx::query(self.sql(
            "SELECT COUNT(*) FILTER (WHERE stato = 'aperta'), COUNT(*) FILTER (WHERE stato = 'in_carico'),
                    COUNT(*) FILTER (WHERE stato = 'chiusa'),
                    COUNT(*) FILTER (WHERE stato <> 'chiusa' AND parked IS NOT NULL)
             FROM requests",
        ))
        .fetch_one(&self.pool)
        .await?;
        Ok(QueueCounts {
            aperte: row.try_get(0)?,
            in_carico: row.try_get(1)?,
            chiuse: row.try_get(2)?,
            sospese: row.try_get(3)?,
        })
    }

    /// The gauges of `/metrics`, from one statement (one snapshot: the states partition the requests).
    pub async fn ops_snapshot(&self, now: Millis) -> Result<crate::store::OpsSnapshot> {
        const DAY_MS: i64 = 86_400_000;
        let row = sqlx::query(self.sql(
            "SELECT (SELECT COUNT(*) FROM requests WHERE stato = 'aperta'),
                    (SELECT COUNT(*) FROM requests WHERE stato = 'in_carico'),
                    (SELECT COUNT(*) FROM requests WHERE stato = 'chiusa'),
                    (SELECT COUNT(*) FROM requests WHERE stato <> 'chiusa' AND parked IS NOT NULL),
                    (SELECT COUNT(*) FROM requests WHERE stato <> 'chiusa' AND parked = 'rinvio'),
                    (SELECT MIN(creata_il) FROM requests WHERE stato <> 'chiusa' AND parked IS NULL),
                    (SELECT COUNT(*) FROM outbox WHERE state = 'dead'),
                    (SELECT COUNT(*) FROM requests WHERE stato <> 'chiusa' AND parked = 'rinvio'
                                                     AND creata_il <= $1 AND creata_il > $2),
                    (SELECT COUNT(*) FROM requests WHERE stato <> 'chiusa' AND parked = 'rinvio' AND creata_il <= $2),
                    (SELECT COUNT(*) FROM outbox WHERE state = 'pending'),
                    (SELECT MIN(created_at) FROM outbox WHERE state = 'pending')",
        ))
        .bind(now - 20 * DAY_MS)
        .bind(now - 30 * DAY_MS)
        .fetch_one(&self.pool)
        .await?;
        let age = |t: Option<i64>| t.map_or(0.0, |t| (now - t).max(0) as f64 / 1000.0);
        Ok(crate::store::OpsSnapshot {
            counts: QueueCounts {
                aperte: row.try_get(0)?,
                in_carico: row.try_get(1)?,
                chiuse: row.try_get(2)?,
                sospese: row.try_get(3)?,
            },
            referred: row.try_get(4)?,
            oldest_open_age_s: age(row.try_get(5)?),
            dead_notifications: row.try_get(6)?,
            sla_warning: row.try_get(7)?,
            sla_breach: row.try_get(8)?,
            pending_notifications: row.try_get(9)?,
            oldest_pending_notification_age_s: age(row.try_get(10)?),
        })
    }

    /// Number of decisions recorded per request id (for exactly-once checks in tests and the benchmark).
    pub async fn decisions_per_request(&self) -> Result<HashMap<i64, i64>> {
        Ok(sqlx::query_as(self.sql("SELECT request_id, COUNT(*) FROM decisions GROUP BY request_id"))
            .fetch_all(&self.pool)
            .await?
            .into_iter()
            .collect())
    }

    /// Enqueue-to-close latencies of closed requests, in milliseconds.
    pub async fn close_latencies(&self) -> Result<Vec<i64>> {
        Ok(sqlx::query_scalar(self.sql("SELECT chiusa_il - creata_il FROM requests WHERE stato = 'chiusa' ORDER BY 1"))
            .fetch_all(&self.pool)
            .await?)
    }
}
