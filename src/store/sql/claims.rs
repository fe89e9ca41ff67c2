//! Claim and close: leases with fencing tokens, their renewal and release, and the batch close that checks the
//! subject versions a decision read and applies its plan (states, decisions, effects, events) in one
//! transaction.

use super::*;

impl Store {
    /// Claims up to `limit` claimable requests for `owner` until `now + lease_ms`, moving new ones to
    /// `in_carico` with their `smistamento` event and notifications.
    pub async fn claim(&self, owner: &str, limit: u32, lease_ms: i64, now: Millis) -> Result<Vec<ClaimedRequest>> {
        let mut tx = self.write_tx().await?;
        let rows = sqlx::query(tx.sql(
            "UPDATE requests SET stato = 'in_carico', claims = claims + 1, lease_token = claims + 1,
                    lease_owner = $1, available_at = $2, aggiornata_il = $3,
                    taken_over = CASE WHEN lease_token IS NULL THEN 0 ELSE 1 END
             WHERE id IN (SELECT id FROM requests
                          WHERE stato <> 'chiusa' AND parked IS NULL AND available_at <= $3
                          ORDER BY available_at, id LIMIT $4 /*pg:FOR UPDATE SKIP LOCKED*/)
             RETURNING id, protocollo, task, soggetto, sede, payload, claims, failures, creata_il, taken_over",
        ))
        .bind(owner)
        .bind(now + lease_ms)
        .bind(now)
        .bind(i64::from(limit))
        .fetch_all(&mut *tx)
        .await?;
        let mut claimed = Vec::with_capacity(rows.len());
        let mut events = Vec::new();
        for row in rows {
            let req = claimed_from_row(&row)?;
            let token = req.token;
            let taken_over = req.taken_over;
            if token == 1 {
                events.push(NewEvent {
                    request_id: req.id,
                    kind: EventKind::Smistamento,
                    actor: owner.to_string(),
                    detail: json!({ "sede": req.sede }),
                    notifications: requester_notifications(&req.contatti),
                });
            } else if taken_over {
                events.push(NewEvent {
                    request_id: req.id,
                    kind: EventKind::RipresaLavorazione,
                    actor: owner.to_string(),
                    detail: json!({ "motivo": "lease scaduta" }),
                    notifications: Vec::new(),
                });
            }
            claimed.push(req);
        }
        insert_events(&mut tx, &events, now).await?;
        tx.commit().await?;
        Ok(claimed)
    }

    /// Extends the leases of claimed requests to `until`, each fenced by its token (`(id, token)` pairs): a
    /// request closed, released or taken over since is left alone. Returns how many leases were extended.
    pub async fn renew(&self, leases: &[(i64, i64)], until: Millis) -> Result<u64> {
        if leases.is_empty() {
            return Ok(0);
        }
        let done = sqlx::query(self.sql(
            "UPDATE requests SET available_at = $2
             FROM json_each($1) j
             WHERE requests.id = CAST(j.value ->> 0 AS BIGINT) AND requests.lease_token = CAST(j.value ->> 1 AS BIGINT)",
        ))
        .bind(json_text(&leases))
        .bind(until)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    /// Closes a batch of evaluated requests in one transaction fenced by their lease tokens; returns the plan
    /// that was applied.
    pub async fn close_batch(
        &self,
        batch: &[(ClaimedRequest, Evaluation)],
        policy: RetryPolicy,
        now: Millis,
        actor: &str,
    ) -> Result<ClosePlan> {
        // On PostgreSQL two closes can still deadlock (one writes what the other read, and the other way
        // round); the server aborts one, which is then planned again from what the winner committed.
        let mut attempt = 1;
        loop {
            match self.close_batch_once(batch, policy, now, actor).await {
                Err(e) if e.is_serialization_conflict() && attempt < 5 => {
                    tracing::debug!(attempt, error = %e, "close conflicted with another instance's; planning it again");
                    attempt += 1;
                }
                result => return result,
            }
        }
    }

    async fn close_batch_once(
        &self,
        batch: &[(ClaimedRequest, Evaluation)],
        policy: RetryPolicy,
        now: Millis,
        actor: &str,
    ) -> Result<ClosePlan> {
        let mut tx = self.write_tx().await?;
        let ids: Vec<i64> = batch.iter().map(|(r, _)| r.id).collect();
        let mut world = World::default();
        for row in sqlx::query(tx.sql(
            "SELECT id, lease_token FROM requests WHERE id IN (SELECT CAST(value AS BIGINT) FROM json_each($1))
             ORDER BY id /*pg:FOR UPDATE*/",
        ))
        .bind(json_text(&ids))
        .fetch_all(&mut *tx)
        .await?
        {
            world.tokens.insert(row.try_get(0)?, row.try_get(1)?);
        }
        // The subjects the batch names are locked before the facts its effects change are read, so that
        // what is read stays as read until commit; those found through the facts are locked after. What the
        // close may write (effects' subjects, the open requests of each subject) is locked exclusively, what
        // the decisions only read is shared, so that decisions reading the same sede do not queue.
        let targets = World::targets(batch);
        let mut subjects: BTreeSet<Subject> = targets.subjects.iter().cloned().collect();
        let mut read: BTreeSet<Subject> = BTreeSet::new();
        for (req, eval) in batch {
            subjects.insert(Subject::Open { task: req.task.clone(), soggetto: req.soggetto.clone() });
            if let Evaluation::Decided(d) = eval {
                read.extend(d.read_versions().map(|(s, _)| s.clone()));
            }
        }
        read.retain(|s| !subjects.contains(s));
        let mut current = lock_versions(&mut tx, &subjects, Lock::Exclusive).await?;
        current.extend(lock_versions(&mut tx, &read, Lock::Shared).await?);
        subjects.extend(read);
        if !targets.deleghe.is_empty() {
            for row in sqlx::query(tx.sql(
                "SELECT * FROM deleghe WHERE id IN (SELECT value FROM json_each($1))
                                          OR padre IN (SELECT value FROM json_each($1))",
            ))
            .bind(json_text(&targets.deleghe))
            .fetch_all(&mut *tx)
            .await?
            {
                let d = delega(&row)?;
                world.deleghe.insert(d.id.clone(), d);
            }
        }
        if !targets.contatti.is_empty() || !targets.titolari.is_empty() {
            for row in sqlx::query(tx.sql(
                "SELECT * FROM contatti WHERE id IN (SELECT value FROM json_each($1))
                                           OR titolare_cf IN (SELECT value FROM json_each($2))",
            ))
            .bind(json_text(&targets.contatti))
            .bind(json_text(&targets.titolari))
            .fetch_all(&mut *tx)
            .await?
            {
                let c = contatto(&row)?;
                world.contatti.insert(c.id.clone(), c);
            }
            let matricole: BTreeSet<&String> = world.contatti.values().filter_map(|c| c.matricola.as_ref()).collect();
            world.pec_registro_imprese = sqlx::query_scalar(tx.sql(
                "SELECT pec_registro_imprese FROM aziende
                 WHERE matricola IN (SELECT value FROM json_each($1)) AND pec_registro_imprese IS NOT NULL",
            ))
            .bind(json_text(&matricole))
            .fetch_all(&mut *tx)
            .await?;
        }
        let mut found: BTreeSet<Subject> = world.deleghe.values().flat_map(delega_subjects).collect();
        for c in world.contatti.values() {
            found.extend(contatto_subjects(&c.titolare_cf, c.matricola.as_ref()));
        }
        found.retain(|s| !subjects.contains(s));
        current.extend(lock_versions(&mut tx, &found, Lock::Exclusive).await?);
        subjects.extend(found);
        world.versions = subjects.into_iter().filter_map(|s| current.get(&s.to_string()).map(|v| (s, *v))).collect();

        let plan = closing::plan(batch, &world, policy, now, actor, rand::random::<f64>);
        apply_plan(&mut tx, &plan, now).await?;
        tx.commit().await?;
        Ok(plan)
    }

    /// Gives back the leases of requests this owner still holds (graceful shutdown).
    pub async fn release(&self, owner: &str, now: Millis) -> Result<u64> {
        let mut tx = self.write_tx().await?;
        let done = sqlx::query(tx.sql(
            "UPDATE requests SET lease_token = NULL, lease_owner = NULL, available_at = $2
             WHERE lease_owner = $1 AND lease_token IS NOT NULL AND stato <> 'chiusa'",
        ))
        .bind(owner)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() > 0 {
            wake(&mut tx, REQUESTS_CHANNEL).await?;
        }
        tx.commit().await?;
        Ok(done.rows_affected())
    }
}

/// How [`lock_versions`] locks on PostgreSQL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lock {
    /// The close may bump the version: no other transaction may read it as current until commit.
    Exclusive,
    /// The close only checks the version: others may check it too, but not change it until commit.
    Shared,
}

/// The current versions of subjects, locked until commit on PostgreSQL (in key order, so that two closes
/// wait for each other instead of deadlocking). A subject without a row gets one at version 0 first: a row
/// that does not exist cannot be locked, and another close could otherwise create it unseen.
async fn lock_versions(tx: &mut Tx, subjects: &BTreeSet<Subject>, lock: Lock) -> Result<HashMap<String, i64>> {
    if subjects.is_empty() {
        return Ok(HashMap::new());
    }
    let keys: Vec<String> = subjects.iter().map(Subject::to_string).collect();
    if Dialect::of(tx) == Dialect::Postgres {
        sqlx::query(
            "INSERT INTO subject_versions (subject, version)
             SELECT value, 0 FROM jsonb_array_elements_text($1::jsonb) ORDER BY 1 ON CONFLICT (subject) DO NOTHING",
        )
        .bind(json_text(&keys))
        .execute(&mut **tx)
        .await?;
    }
    let sql = match lock {
        Lock::Exclusive => tx.sql(
            "SELECT subject, version FROM subject_versions WHERE subject IN (SELECT value FROM json_each($1))
             ORDER BY subject /*pg:FOR UPDATE*/",
        ),
        Lock::Shared => tx.sql(
            "SELECT subject, version FROM subject_versions WHERE subject IN (SELECT value FROM json_each($1))
             ORDER BY subject /*pg:FOR SHARE*/",
        ),
    };
    Ok(sqlx::query_as(sql).bind(json_text(&keys)).fetch_all(&mut **tx).await?.into_iter().collect())
}

async fn apply_plan(tx: &mut Tx, p: &ClosePlan, now: Millis) -> Result<()> {
    if !p.closed.is_empty() {
        sqlx::query(tx.sql(
            "UPDATE requests SET stato = 'chiusa', esito = j.value ->> 1, chiusa_il = $2, aggiornata_il = $2,
                    lease_token = NULL, lease_owner = NULL, last_error = NULL, parked = NULL
             FROM json_each($1) j WHERE requests.id = CAST(j.value ->> 0 AS BIGINT)",
        ))
        .bind(json_text(&p.closed))
        .bind(now)
        .execute(&mut **tx)
        .await?;
    }
    if !p.referred.is_empty() {
        sqlx::query(tx.sql(
            "UPDATE requests SET parked = 'rinvio', assegnata_sede = j.value ->> 1, aggiornata_il = $2,
                    lease_token = NULL, lease_owner = NULL
             FROM json_each($1) j WHERE requests.id = CAST(j.value ->> 0 AS BIGINT)",
        ))
        .bind(json_text(&p.referred))
        .bind(now)
        .execute(&mut **tx)
        .await?;
    }
    if !p.retried.is_empty() {
        sqlx::query(
            tx.sql("UPDATE requests SET available_at = CAST(j.value ->> 1 AS BIGINT), last_error = j.value ->> 2, failures = failures + 1,
                    aggiornata_il = $2, lease_token = NULL, lease_owner = NULL
             FROM json_each($1) j WHERE requests.id = CAST(j.value ->> 0 AS BIGINT)"),
        )
        .bind(json_text(&p.retried))
        .bind(now)
        .execute(&mut **tx)
        .await?;
    }
    if !p.parked.is_empty() {
        sqlx::query(tx.sql(
            "UPDATE requests SET parked = 'errore', last_error = j.value ->> 1, failures = failures + 1,
                    aggiornata_il = $2, lease_token = NULL, lease_owner = NULL
             FROM json_each($1) j WHERE requests.id = CAST(j.value ->> 0 AS BIGINT)",
        ))
        .bind(json_text(&p.parked))
        .bind(now)
        .execute(&mut **tx)
        .await?;
    }
    if !p.released.is_empty() {
        sqlx::query(tx.sql(
            "UPDATE requests SET available_at = $2, lease_token = NULL, lease_owner = NULL
             WHERE id IN (SELECT CAST(value AS BIGINT) FROM json_each($1))",
        ))
        .bind(json_text(&p.released))
        .bind(now)
        .execute(&mut **tx)
        .await?;
    }
    // Decisions carry the largest texts (the trace with every fact read): bound one by one rather than
    // escaped into a JSON document and parsed back, which profiling showed to cost a tenth of a batch.
    for chunk in p.decisions.chunks(1000) {
        let text = format!(
            "INSERT INTO decisions (request_id, outcome, reasons, effects, rule_version, trace, duration_us, decided_at)
             VALUES {}",
            values_placeholders(Dialect::of(tx), chunk.len(), 8)
        );
        let mut insert = sqlx::query(AssertSqlSafe(text));
        for (id, d) in chunk {
            insert = insert
                .bind(*id)
                .bind(d.outcome.as_str())
                .bind(json_text(&d.reasons))
                .bind(json_text(&d.effects))
                .bind(d.rule_version.clone())
                .bind(json_text(&d.trace))
                .bind(d.duration_us as i64)
                .bind(now);
        }
        insert.execute(&mut **tx).await?;
    }
    if !p.revocations.is_empty() {
        let rows: Vec<Value> =
            p.revocations.iter().map(|r| json!([r.delega_id, r.data_revoca, r.request_id])).collect();
        sqlx::query(
            tx.sql("UPDATE deleghe SET stato = 'REVOCATA', data_revoca = j.value ->> 1, revocata_da = CAST(j.value ->> 2 AS BIGINT),
                    effect_at = $2
             FROM json_each($1) j WHERE deleghe.id = j.value ->> 0"),
        )
        .bind(json_text(&rows))
        .bind(now)
        .execute(&mut **tx)
        .await?;
    }
    apply_contact_changes(tx, &p.contacts, now).await?;
    let applied = p.applied_effects();
    if !applied.is_empty() {
        let rows: Vec<Value> =
            applied.iter().map(|e| json!([e.request_id, e.kind.as_str(), e.entity, json_text(&e.detail)])).collect();
        sqlx::query(tx.sql(
            "INSERT INTO applied_effects (request_id, kind, entity, detail, at)
             SELECT CAST(value ->> 0 AS BIGINT), value ->> 1, value ->> 2, value ->> 3, $2 FROM json_each($1)",
        ))
        .bind(json_text(&rows))
        .bind(now)
        .execute(&mut **tx)
        .await?;
    }
    if !p.versions.is_empty() {
        let rows: Vec<Value> = p.versions.iter().map(|(s, v)| json!([s.to_string(), v])).collect();
        sqlx::query(
            tx.sql("INSERT INTO subject_versions (subject, version) SELECT value ->> 0, CAST(value ->> 1 AS BIGINT) FROM json_each($1) WHERE true
             ON CONFLICT (subject) DO UPDATE SET version = excluded.version"),
        )
        .bind(json_text(&rows))
        .execute(&mut **tx)
        .await?;
    }
    insert_events(tx, &p.events, now).await?;
    Ok(())
}

/// Archives, disables and inserts contacts (the closing plan's `contacts`).
async fn apply_contact_changes(tx: &mut Tx, changes: &[(i64, ContactChange)], now: Millis) -> Result<()> {
    let mut updates = Vec::new();
    let mut inserts = Vec::new();
    for (request, change) in changes {
        match change {
            ContactChange::Archive { id, valid_to } => updates.push(json!([id, valid_to, "archive", request])),
            ContactChange::Disable { id, valid_to } => updates.push(json!([id, valid_to, "disable", request])),
            ContactChange::Insert(c) => inserts.push(contact_row(c, Some((*request, now)))),
        }
    }
    if !updates.is_empty() {
        sqlx::query(tx.sql(
            "UPDATE contatti SET stato = 'DISABILITATO', valid_to = j.value ->> 1,
                    anomalia = CASE WHEN j.value ->> 2 = 'archive' THEN NULL ELSE anomalia END,
                    effect_request = CAST(j.value ->> 3 AS BIGINT), effect_at = $2
             FROM json_each($1) j WHERE contatti.id = j.value ->> 0",
        ))
        .bind(json_text(&updates))
        .bind(now)
        .execute(&mut **tx)
        .await?;
    }
    if !inserts.is_empty() {
        insert_contacts(tx, &inserts).await?;
    }
    Ok(())
}

/// A claimed request from a row holding the request's columns (`claims` is the fencing token).
pub(super) fn claimed_from_row(row: &AnyRow) -> Result<ClaimedRequest> {
    let payload: Map<String, Value> = parse_json("requests.payload", row.try_get::<&str, _>("payload")?)?;
    let contatti: ContattiNotifica = payload
        .get("contatti_notifica")
        .map(|c| serde_json::from_value(c.clone()))
        .transpose()
        .map_err(|e| corrupt("requests.payload.contatti_notifica", e))?
        .unwrap_or_default();
    Ok(ClaimedRequest {
        id: row.try_get("id")?,
        protocollo: row.try_get("protocollo")?,
        task: row.try_get("task")?,
        soggetto: row.try_get("soggetto")?,
        sede: row.try_get("sede")?,
        payload,
        contatti,
        token: row.try_get("claims")?,
        failures: row.try_get("failures")?,
        creata_il: row.try_get("creata_il")?,
        taken_over: row.try_get::<i64, _>("taken_over")? != 0,
    })
}
