//! The operators' and requesters' side of the SQLite store: taking a referred request to close it,
//! comments, withdrawals, putting a parked request back in the queue, the operator queue and the Fascicolo.

use serde_json::{Value, json};
use sqlx::Row;
use sqlx::any::AnyRow;

use super::assignments::not_held_by_another;
use super::attachments::{AttachmentRow, attachment_summaries, insert_attachments, next_position};
use super::{REQUESTS_CHANNEL, Sql, Store, Tx, bump_versions, claimed_from_row, insert_events, parse_json, wake};
use crate::domain::closing::{ClaimedRequest, NewEvent, Notification, requester_notifications};
use crate::domain::decision::{Decision, Trace};
use crate::domain::event::EventKind;
use crate::domain::facts::Subject;
use crate::domain::time::{Millis, rfc3339};
use crate::domain::validators;
use crate::store::NewAttachment;
use crate::store::{AssignedTo, FascicoloEntry, QueueEntry, QueueFilter, Result, StoreError};

/// The request a key names (id or protocol number), locked for writing by the surrounding transaction.
pub(super) async fn find(tx: &mut Tx, key: &str) -> Result<AnyRow> {
    let by_id: i64 = key.parse().unwrap_or(-1);
    sqlx::query(tx.sql("SELECT * FROM requests WHERE protocollo = $1 OR id = $2 /*pg:FOR UPDATE*/"))
        .bind(key)
        .bind(by_id)
        .fetch_optional(&mut **tx)
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("no request with id or protocol number `{key}`")))
}

/// Refuses to change a closed request, or one a worker holds right now.
pub(super) fn must_be_open(row: &AnyRow, now: Millis) -> Result<()> {
    let protocollo: String = row.try_get("protocollo")?;
    if row.try_get::<&str, _>("stato")? == "chiusa" {
        let esito: Option<String> = row.try_get("esito")?;
        return Err(StoreError::Refused(format!(
            "request {protocollo} is already closed (esito: {})",
            esito.as_deref().unwrap_or("-")
        )));
    }
    let leased = row.try_get::<Option<i64>, _>("lease_token")?.is_some();
    if leased && row.try_get::<i64, _>("available_at")? > now {
        return Err(StoreError::Refused(format!(
            "request {protocollo} is being decided right now by {}: try again in a moment",
            row.try_get::<Option<String>, _>("lease_owner")?.unwrap_or_default()
        )));
    }
    Ok(())
}

impl Store {
    /// Takes a request waiting for an operator (referred or parked) with a lease, so that it can be closed
    /// through the same fenced batch close as the workers use. Returns it with the rule's last decision
    /// (for a referral: the outcome the rule proposes, with its effects and the facts it read). `holder` is the
    /// operator acting: a request another operator holds is refused (None: the administrator).
    pub async fn claim_for_operator(
        &self,
        key: &str,
        owner: &str,
        holder: Option<&str>,
        lease_ms: i64,
        now: Millis,
    ) -> Result<(ClaimedRequest, Option<Decision>)> {
        let mut tx = self.write_tx().await?;
        let row = find(&mut tx, key).await?;
        must_be_open(&row, now)?;
        not_held_by_another(&row, holder)?;
        let id: i64 = row.try_get("id")?;
        if row.try_get::<Option<&str>, _>("parked")?.is_none() {
            return Err(StoreError::Refused(format!(
                "request {} is not waiting for an operator: the rules decide it",
                row.try_get::<String, _>("protocollo")?
            )));
        }
        let row = sqlx::query(tx.sql(
            "UPDATE requests SET claims = claims + 1, lease_token = claims + 1, lease_owner = $2,
                    available_at = $3, taken_over = 0, aggiornata_il = $4
             WHERE id = $1 RETURNING *",
        ))
        .bind(id)
        .bind(owner)
        .bind(now + lease_ms)
        .bind(now)
        .fetch_one(&mut *tx)
        .await?;
        let claimed = claimed_from_row(&row)?;
        let decision = sqlx::query(tx.sql(
            "SELECT outcome, reasons, effects, rule_version, trace, duration_us FROM decisions
             WHERE request_id = $1 ORDER BY id DESC LIMIT 1",
        ))
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?
        .map(|d| super::history::decision_from_row(&d))
        .transpose()?;
        tx.commit().await?;
        Ok((claimed, decision))
    }

    /// An operator's comment, visible in the history and sent to the requester.
    pub async fn comment(&self, key: &str, actor: &str, text: &str, now: Millis) -> Result<String> {
        let mut tx = self.write_tx().await?;
        let row = find(&mut tx, key).await?;
        let claimed = claimed_from_row(&row)?;
        let event = NewEvent {
            request_id: claimed.id,
            kind: EventKind::CommentoOperatore,
            actor: actor.to_string(),
            detail: json!({ "testo": text }),
            notifications: requester_notifications(&claimed.contatti),
        };
        insert_events(&mut tx, &[event], now).await?;
        tx.commit().await?;
        Ok(claimed.protocollo)
    }

    /// The requester's message to the sede on an open request: in the history, and e-mailed to the competent
    /// sede (the one it is assigned to, else the one that received it). Returns its protocol number.
    pub async fn message_to_sede(&self, key: &str, text: &str, files: &[NewAttachment], now: Millis) -> Result<String> {
        let mut tx = self.write_tx().await?;
        let row = find(&mut tx, key).await?;
        let claimed = claimed_from_row(&row)?;
        if row.try_get::<&str, _>("stato")? == "chiusa" {
            return Err(StoreError::Refused(format!(
                "request {} is closed: a new question needs a new request",
                claimed.protocollo
            )));
        }
        let sede: String = row.try_get::<Option<String>, _>("assegnata_sede")?.unwrap_or_else(|| claimed.sede.clone());
        let email: Option<String> = sqlx::query_scalar(tx.sql("SELECT email FROM sedi WHERE codice = $1"))
            .bind(&sede)
            .fetch_optional(&mut *tx)
            .await?
            .flatten();
        let event = NewEvent {
            request_id: claimed.id,
            kind: EventKind::MessaggioRichiedente,
            actor: "richiedente".into(),
            detail: message_detail(text, &sede, files),
            notifications: email
                .into_iter()
                .map(|recipient| Notification { channel: "email", recipient, role: "sede".into() })
                .collect(),
        };
        let event_id = insert_events(&mut tx, &[event], now).await?.first().copied();
        let first = next_position(&mut tx, claimed.id).await?;
        let rows: Vec<AttachmentRow<'_>> = (first..)
            .zip(files)
            .map(|(posizione, file)| AttachmentRow { request_id: claimed.id, event_id, posizione, file })
            .collect();
        insert_attachments(&mut tx, &rows, now).await?;
        tx.commit().await?;
        Ok(claimed.protocollo)
    }

    /// The requester withdraws an open request: closed `annullata`, with its event and notifications.
    pub async fn withdraw(&self, key: &str, richiedente_cf: &str, now: Millis) -> Result<String> {
        let mut tx = self.write_tx().await?;
        let row = find(&mut tx, key).await?;
        must_be_open(&row, now)?;
        let claimed = claimed_from_row(&row)?;
        let owner = claimed.payload.get("richiedente_cf").and_then(Value::as_str).unwrap_or_default();
        if !(owner.eq_ignore_ascii_case(richiedente_cf.trim()) || validators::same_person(owner, richiedente_cf)) {
            return Err(StoreError::Refused(format!(
                "only the requester of {} may withdraw it (--richiedente is not the codice fiscale that submitted it)",
                claimed.protocollo
            )));
        }
        sqlx::query(tx.sql(
            "UPDATE requests SET stato = 'chiusa', esito = 'annullata', chiusa_il = $2, aggiornata_il = $2,
                    parked = NULL, lease_token = NULL, lease_owner = NULL
             WHERE id = $1",
        ))
        .bind(claimed.id)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        let open = Subject::Open { task: claimed.task.clone(), soggetto: claimed.soggetto.clone() };
        bump_versions(&mut tx, &[open.to_string()]).await?;
        let event = NewEvent {
            request_id: claimed.id,
            kind: EventKind::Annullamento,
            actor: "richiedente".into(),
            detail: json!({ "esito": "annullata" }),
            notifications: requester_notifications(&claimed.contatti),
        };
        insert_events(&mut tx, &[event], now).await?;
        tx.commit().await?;
        Ok(claimed.protocollo)
    }

    /// Puts a request parked for an operator back in the queue, to be decided by the rules again (e.g. after
    /// a fixed rule, or when the facts changed under a referral); whoever held it lets it go. `holder` as in
    /// [`Store::claim_for_operator`].
    pub async fn requeue(&self, key: &str, actor: &str, holder: Option<&str>, now: Millis) -> Result<String> {
        let mut tx = self.write_tx().await?;
        let row = find(&mut tx, key).await?;
        must_be_open(&row, now)?;
        not_held_by_another(&row, holder)?;
        let claimed = claimed_from_row(&row)?;
        if row.try_get::<Option<&str>, _>("parked")?.is_none() {
            return Err(StoreError::Refused(format!("request {} is already in the queue", claimed.protocollo)));
        }
        sqlx::query(tx.sql(
            "UPDATE requests SET parked = NULL, assegnata_sede = NULL, assegnata_a = NULL, assegnata_il = NULL,
                    failures = 0, last_error = NULL,
                    available_at = $2, aggiornata_il = $2, lease_token = NULL, lease_owner = NULL
             WHERE id = $1",
        ))
        .bind(claimed.id)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        let event = NewEvent {
            request_id: claimed.id,
            kind: EventKind::RimessaInCoda,
            actor: actor.to_string(),
            detail: Value::Null,
            notifications: Vec::new(),
        };
        insert_events(&mut tx, &[event], now).await?;
        wake(&mut tx, REQUESTS_CHANNEL).await?;
        tx.commit().await?;
        Ok(claimed.protocollo)
    }

    /// Requests waiting for an operator, oldest first, as `f` filters them, each referral with the trace of the
    /// rule's last decision (the facts it read, with their versions), in the same query: what the queue
    /// compares with the current versions.
    pub async fn operator_queue(&self, f: &QueueFilter) -> Result<Vec<(QueueEntry, Option<Trace>)>> {
        let (held_by, nobody) = match &f.assegnata {
            Some(AssignedTo::Operator(id)) => (Some(id.as_str()), 0_i64),
            Some(AssignedTo::Nobody) => (None, 1),
            None => (None, 0),
        };
        let rows = sqlx::query(
            self.sql("SELECT r.id, r.protocollo, r.task, COALESCE(r.assegnata_sede, r.sede) AS sede, r.parked, r.last_error,
                    r.creata_il, r.assegnata_a, r.assegnata_il, d.reasons, d.trace
             FROM requests r
             LEFT JOIN decisions d ON d.id = (SELECT MAX(l.id) FROM decisions l WHERE l.request_id = r.id)
             WHERE r.stato <> 'chiusa' AND r.parked IS NOT NULL AND ($1 IS NULL OR COALESCE(r.assegnata_sede, r.sede) = $1)
               AND ($2 IS NULL OR r.assegnata_a = $2) AND ($3 = 0 OR r.assegnata_a IS NULL)
               AND ($4 IS NULL OR r.creata_il > $4 OR (r.creata_il = $4 AND r.id > $5))
             ORDER BY r.creata_il, r.id LIMIT $6"),
        )
        .bind(f.sede.as_deref())
        .bind(held_by)
        .bind(nobody)
        .bind(f.after.map(|(at, _)| at))
        .bind(f.after.map(|(_, id)| id))
        .bind(f.limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let referral = r.try_get::<&str, _>("parked")? == "rinvio";
                let reasons: Vec<Value> = match r.try_get::<Option<&str>, _>("reasons")? {
                    Some(text) if referral => parse_json("decisions.reasons", text)?,
                    _ => Vec::new(),
                };
                let trace: Option<Trace> = match r.try_get::<Option<&str>, _>("trace")? {
                    Some(text) if referral => Some(parse_json("decisions.trace", text)?),
                    _ => None,
                };
                let entry = QueueEntry {
                    id: r.try_get("id")?,
                    protocollo: r.try_get("protocollo")?,
                    task: r.try_get("task")?,
                    sede: r.try_get("sede")?,
                    sospesa: r.try_get("parked")?,
                    motivazioni: reasons,
                    errore: r.try_get("last_error")?,
                    creata_il: rfc3339(r.try_get("creata_il")?),
                    creata_ms: r.try_get("creata_il")?,
                    assegnata_a: r.try_get("assegnata_a")?,
                    assegnata_il: r.try_get::<Option<i64>, _>("assegnata_il")?.map(rfc3339),
                };
                Ok((entry, trace))
            })
            .collect()
    }

    /// The Fascicolo of a subject: every closed request about that matricola or codice fiscale, oldest first.
    pub async fn fascicolo(&self, subject: &str) -> Result<Vec<FascicoloEntry>> {
        let key = subject.trim().to_uppercase();
        let rows = sqlx::query(self.sql(
            "SELECT r.protocollo, r.task, r.creata_il, r.chiusa_il, r.esito,
                    (SELECT e.detail FROM events e WHERE e.request_id = r.id AND e.kind IN ('chiusura', 'annullamento')
                     ORDER BY e.id DESC LIMIT 1) AS detail
             FROM requests r
             WHERE r.stato = 'chiusa'
               AND (r.soggetto = $1 OR r.payload/*pg:::jsonb*/ ->> 'richiedente_cf' = $1
                    OR r.payload/*pg:::jsonb*/ ->> 'cf_intermediario' = $1
                    OR r.payload/*pg:::jsonb*/ ->> 'cf_dipendente' = $1 OR r.payload/*pg:::jsonb*/ ->> 'matricola' = $1)
             ORDER BY r.chiusa_il, r.id",
        ))
        .bind(&key)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let detail: Value = match r.try_get::<Option<&str>, _>("detail")? {
                    Some(text) => parse_json("events.detail", text)?,
                    None => Value::Null,
                };
                Ok(FascicoloEntry {
                    protocollo: r.try_get("protocollo")?,
                    task: r.try_get("task")?,
                    data_invio: rfc3339(r.try_get("creata_il")?),
                    data_esito: r.try_get::<Option<i64>, _>("chiusa_il")?.map(rfc3339),
                    esito: r.try_get("esito")?,
                    motivazioni: detail.get("motivazioni").and_then(Value::as_array).cloned().unwrap_or_default(),
                })
            })
            .collect()
    }
}

impl Store {
    /// The current version of each subject named (a subject never changed has no row: version 0).
    pub async fn subject_versions(&self, subjects: &[String]) -> Result<std::collections::HashMap<String, i64>> {
        let rows: Vec<(String, i64)> =
            sqlx::query_as(self.sql(
                "SELECT subject, version FROM subject_versions WHERE subject IN (SELECT value FROM json_each($1))",
            ))
            .bind(super::json_text(&subjects))
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.into_iter().collect())
    }
}

/// A message's event: its text and sede, and the types and sizes of the files that came with it.
fn message_detail(text: &str, sede: &str, files: &[NewAttachment]) -> Value {
    let mut detail = json!({ "testo": text, "sede": sede });
    if !files.is_empty() {
        detail["allegati"] = attachment_summaries(files);
    }
    detail
}
