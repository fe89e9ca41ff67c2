//! Intake: protocol numbers, idempotency and the `protocollazione` events of submitted requests. Concurrent
//! submissions are written together by one task, one transaction per group, each submission all or nothing
//! (PostgreSQL serialises protocol numbers with an advisory lock).
//!
//! A retry that arrives while the first submission with its idempotency key is still being stored is refused
//! (the IETF Idempotency-Key draft's 409) rather than queued behind it: within a process by the keys in flight,
//! across PostgreSQL instances by a transaction-scoped advisory lock per key, tried without waiting.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use super::attachments::{AttachmentRow, attachment_summaries, insert_attachments};
use super::*;

/// The advisory-lock class of idempotency keys on PostgreSQL (7400 serialises protocol numbers).
const KEY_LOCK_CLASS: i32 = 7401;

/// The idempotency keys whose submission this process is storing, shared by the clones of a store.
#[derive(Debug, Clone, Default)]
pub(super) struct KeysInFlight(Arc<Mutex<HashSet<String>>>);

/// The keys one submission holds, given back when it ends however it ends.
struct HeldKeys<'a> {
    set: &'a KeysInFlight,
    keys: Vec<String>,
}

impl KeysInFlight {
    /// Takes every key of `keys`, or none: the index of the first one another submission holds.
    fn take<'a>(&'a self, keys: &[&str]) -> std::result::Result<HeldKeys<'a>, usize> {
        let mut held = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(busy) = keys.iter().position(|k| held.contains(*k)) {
            return Err(busy);
        }
        let keys: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
        held.extend(keys.iter().cloned());
        Ok(HeldKeys { set: self, keys })
    }
}

impl Drop for HeldKeys<'_> {
    fn drop(&mut self) {
        let mut held = self.set.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        for k in &self.keys {
            held.remove(k);
        }
    }
}

/// The most requests one group commit writes (a submission is never split).
const MAX_GROUP_REQUESTS: usize = 10_000;

/// Submissions waiting for the intake writer: concurrent submissions are stored together, one transaction
/// (one commit, one WAL sync) for all of them, each still all or nothing (group commit).
#[derive(Debug, Clone, Default)]
pub(super) struct IntakeQueue(Arc<Mutex<QueueState>>);

#[derive(Debug, Default)]
struct QueueState {
    pending: Vec<Pending>,
    /// A drain task is running: it takes what is pending until nothing is.
    draining: bool,
}

#[derive(Debug)]
struct Pending {
    requests: Vec<NewRequest>,
    default_sede: String,
    now: Millis,
    reply: tokio::sync::oneshot::Sender<Result<Vec<Submitted>>>,
}

impl IntakeQueue {
    /// Queues a submission; true when no drain task runs, so the caller starts one.
    fn push(&self, pending: Pending) -> bool {
        let mut state = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        state.pending.push(pending);
        !std::mem::replace(&mut state.draining, true)
    }

    /// The next group, oldest first; empty (and the drain task ends) when nothing is pending.
    fn take(&self) -> Vec<Pending> {
        let mut state = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let (mut count, mut n) = (0, 0);
        while n < state.pending.len() && (n == 0 || count + state.pending[n].requests.len() <= MAX_GROUP_REQUESTS) {
            count += state.pending[n].requests.len();
            n += 1;
        }
        if n == 0 {
            state.draining = false;
        }
        state.pending.drain(..n).collect()
    }
}

/// What one submission of a group stores, kept apart until it is known to be accepted.
#[derive(Default)]
struct Staged {
    out: Vec<Submitted>,
    rows: Vec<Value>,
    events: Vec<NewEvent>,
    opened: Vec<String>,
    /// Each file with the id of its request and its position.
    files: Vec<(i64, i64, NewAttachment)>,
}

impl Store {
    /// Stores accepted requests `aperta`, each with its protocol number, event and notifications, all or
    /// none. A request whose idempotency key is known returns the first request instead, if it is the
    /// same request; with a different one the whole submission is refused (the key was reused by mistake).
    ///
    /// Submissions arriving while another is being written are written together by one task (group
    /// commit): the transaction's fixed cost and its commit are paid once per group, and a failing
    /// submission never takes another down with it.
    pub async fn submit(&self, requests: &[NewRequest], default_sede: &str, now: Millis) -> Result<Vec<Submitted>> {
        // A retry of a submission still waiting here is told so at once (409), not queued behind it.
        let keys: Vec<&str> = requests.iter().filter_map(|r| r.envelope.chiave_idempotenza.as_deref()).collect();
        let _held = self.keys_in_flight.take(&keys).map_err(|busy| {
            let index = requests.iter().position(|r| r.envelope.chiave_idempotenza.as_deref() == Some(keys[busy]));
            StoreError::IdempotencyInFlight { index: index.unwrap_or(busy) }
        })?;
        let (reply, answer) = tokio::sync::oneshot::channel();
        let pending = Pending { requests: requests.to_vec(), default_sede: default_sede.to_string(), now, reply };
        if self.intake_queue.push(pending) {
            // A task of its own, so that a caller that goes away (a client that hangs up) cancels nobody's write.
            let store = self.clone();
            tokio::spawn(async move { store.drain_intake().await });
        }
        answer.await.map_err(|_| StoreError::Corrupt("the intake writer stopped before answering".into()))?
    }

    async fn drain_intake(self) {
        loop {
            let group = self.intake_queue.take();
            if group.is_empty() {
                return;
            }
            let results = match self.store_group(&group).await {
                Ok(results) => results,
                // A failure of the whole transaction: each submission again on its own, so that each gets
                // its own answer (and one that cannot be stored does not refuse the others).
                Err(_) if group.len() > 1 => {
                    let mut results = Vec::with_capacity(group.len());
                    for one in &group {
                        let alone = self.store_group(std::slice::from_ref(one)).await;
                        results.push(alone.and_then(|mut r| r.pop().unwrap_or(Ok(Vec::new()))));
                    }
                    results
                }
                Err(e) => vec![Err(e)],
            };
            for (pending, result) in group.into_iter().zip(results) {
                let _ = pending.reply.send(result);
            }
        }
    }

    /// One transaction for a group of submissions: the outer error fails them all (nothing is written), an
    /// inner one refuses that submission only.
    async fn store_group(&self, group: &[Pending]) -> Result<Vec<Result<Vec<Submitted>>>> {
        let now = group.iter().map(|p| p.now).max().unwrap_or_default();
        let mut results: Vec<Option<Result<Vec<Submitted>>>> = (0..group.len()).map(|_| None).collect();
        let keys_of = |p: &Pending| -> Vec<String> {
            p.requests.iter().filter_map(|r| r.envelope.chiave_idempotenza.clone()).collect()
        };
        let in_flight = |p: &Pending, key: &str| {
            let index = p.requests.iter().position(|r| r.envelope.chiave_idempotenza.as_deref() == Some(key));
            Err(StoreError::IdempotencyInFlight { index: index.unwrap_or(0) })
        };
        let mut tx = self.write_tx().await?;
        if self.dialect == Dialect::Postgres {
            // Another instance storing one of these keys holds its lock until it commits.
            for (i, p) in group.iter().enumerate() {
                if results[i].is_some() {
                    continue;
                }
                for key in keys_of(p) {
                    let taken: bool = sqlx::query_scalar("SELECT pg_try_advisory_xact_lock($1, hashtext($2))")
                        .bind(KEY_LOCK_CLASS)
                        .bind(&key)
                        .fetch_one(&mut *tx)
                        .await?;
                    if !taken {
                        results[i] = Some(in_flight(p, &key));
                        break;
                    }
                }
            }
            // Protocol numbers are read, incremented and written back: one intake at a time, as on SQLite.
            sqlx::query("SELECT pg_advisory_xact_lock(7400)").execute(&mut *tx).await?;
        }
        let included: Vec<usize> = (0..group.len()).filter(|i| results[*i].is_none()).collect();
        let requests = || included.iter().flat_map(|&i| group[i].requests.iter());
        // Each known key with the request it first came with: a retry must repeat that request exactly.
        let mut known: HashMap<String, (Submitted, Map<String, Value>)> = HashMap::new();
        let keys: Vec<&str> = requests().filter_map(|r| r.envelope.chiave_idempotenza.as_deref()).collect();
        if !keys.is_empty() {
            let rows = sqlx::query(tx.sql(
                "SELECT chiave_idempotenza, id, protocollo, payload FROM requests
                 WHERE chiave_idempotenza IN (SELECT value FROM json_each($1))",
            ))
            .bind(json_text(&keys))
            .fetch_all(&mut *tx)
            .await?;
            for r in rows {
                let first = Submitted { id: r.try_get(1)?, protocollo: r.try_get(2)?, duplicate: true };
                known.insert(r.try_get(0)?, (first, parse_json("requests.payload", r.try_get::<&str, _>(3)?)?));
            }
        }
        let matricole: Vec<&str> = requests().filter_map(|r| r.envelope.matricola.as_deref()).collect();
        let sede_of: HashMap<String, String> = sqlx::query_as(
            tx.sql("SELECT matricola, sede FROM aziende WHERE matricola IN (SELECT value FROM json_each($1))"),
        )
        .bind(json_text(&matricole))
        .fetch_all(&mut *tx)
        .await?
        .into_iter()
        .collect();
        // A request that names no position goes to its requester's sede, when the requester is an
        // intermediary whose sede is known.
        let requesters: Vec<&str> =
            requests().filter(|r| r.envelope.matricola.is_none()).map(|r| r.envelope.richiedente_cf.as_str()).collect();
        let sede_of_requester: HashMap<String, String> = sqlx::query_as(tx.sql(
            "SELECT cf, sede FROM intermediari WHERE sede IS NOT NULL AND cf IN (SELECT value FROM json_each($1))",
        ))
        .bind(json_text(&requesters))
        .fetch_all(&mut *tx)
        .await?
        .into_iter()
        .collect();
        let routing = Routing { of_position: sede_of, of_requester: sede_of_requester };
        let anno = year(now);
        let mut counters: HashMap<String, i64> =
            sqlx::query_as(tx.sql("SELECT sede, last FROM protocol_counters WHERE anno = $1"))
                .bind(anno)
                .fetch_all(&mut *tx)
                .await?
                .into_iter()
                .collect();
        let fresh = requests()
            .filter(|r| r.envelope.chiave_idempotenza.as_ref().is_none_or(|k| !known.contains_key(k)))
            .count();
        let mut ids = reserve_ids(&mut tx, IdTable::Requests, fresh).await?.into_iter();

        let mut all = Staged::default();
        for &i in &included {
            let p = &group[i];
            // A refused submission leaves no trace: its counters and keys are applied only once it is accepted.
            let (mut their_counters, mut their_known) = (counters.clone(), known.clone());
            let staged = stage(p, &routing, anno, &mut ids, &mut their_counters, &mut their_known);
            results[i] = Some(match staged {
                Ok(staged) => {
                    (counters, known) = (their_counters, their_known);
                    let out = staged.out.clone();
                    all.rows.extend(staged.rows);
                    all.events.extend(staged.events);
                    all.opened.extend(staged.opened);
                    all.files.extend(staged.files);
                    Ok(out)
                }
                Err(e) => Err(e),
            });
        }
        if !all.rows.is_empty() {
            sqlx::query(tx.sql(
                "INSERT INTO requests (id, protocollo, task, soggetto, sede, payload, chiave_idempotenza, stato,
                                       creata_il, aggiornata_il, available_at, richiedente_cf, matricola)
                 SELECT CAST(value ->> 0 AS BIGINT), value ->> 1, value ->> 2, value ->> 3, value ->> 4, value ->> 5,
                        value ->> 6, 'aperta', $2, $2, $2, value ->> 7, value ->> 8
                 FROM json_each($1)",
            ))
            .bind(json_text(&all.rows))
            .bind(now)
            .execute(&mut *tx)
            .await?;
            let counter_rows: Vec<(&String, &i64)> = counters.iter().collect();
            sqlx::query(tx.sql(
                "INSERT INTO protocol_counters (sede, anno, last)
                 SELECT value ->> 0, $2, CAST(value ->> 1 AS BIGINT) FROM json_each($1) WHERE true
                 ON CONFLICT (sede, anno) DO UPDATE SET last = excluded.last",
            ))
            .bind(json_text(&counter_rows))
            .bind(anno)
            .execute(&mut *tx)
            .await?;
            bump_versions(&mut tx, &all.opened).await?;
            insert_events(&mut tx, &all.events, now).await?;
            let files: Vec<AttachmentRow<'_>> = all
                .files
                .iter()
                .map(|(request_id, posizione, file)| AttachmentRow {
                    request_id: *request_id,
                    event_id: None,
                    posizione: *posizione,
                    file,
                })
                .collect();
            insert_attachments(&mut tx, &files, now).await?;
            wake(&mut tx, REQUESTS_CHANNEL).await?;
        }
        tx.commit().await?;
        Ok(results.into_iter().map(|r| r.unwrap_or_else(|| Ok(Vec::new()))).collect())
    }
}

/// Where requests go: the sede of the position (the azienda of the matricola), else the requester's.
struct Routing {
    of_position: HashMap<String, String>,
    of_requester: HashMap<String, String>,
}

impl Routing {
    fn sede<'a>(&'a self, r: &NewRequest, default: &'a str) -> &'a str {
        match &r.envelope.matricola {
            Some(m) => self.of_position.get(m),
            None => self.of_requester.get(&r.envelope.richiedente_cf),
        }
        .map_or(default, String::as_str)
    }
}

/// One submission's rows, numbered from `counters`, its keys checked against `known`.
fn stage(
    p: &Pending,
    routing: &Routing,
    anno: i32,
    ids: &mut impl Iterator<Item = i64>,
    counters: &mut HashMap<String, i64>,
    known: &mut HashMap<String, (Submitted, Map<String, Value>)>,
) -> Result<Staged> {
    let mut staged = Staged::default();
    for r in &p.requests {
        if let Some((first, payload)) = r.envelope.chiave_idempotenza.as_ref().and_then(|k| known.get(k)) {
            if payload != &r.payload {
                return Err(StoreError::IdempotencyMismatch {
                    index: staged.out.len(),
                    protocollo: first.protocollo.clone(),
                });
            }
            staged.out.push(first.clone());
            continue;
        }
        let sede = routing.sede(r, &p.default_sede);
        let Some(id) = ids.next() else {
            return Err(StoreError::Corrupt("fewer request ids reserved than requests to store".into()));
        };
        let progressive = counters.entry(sede.to_string()).or_insert(0);
        *progressive += 1;
        let submitted = Submitted { id, protocollo: protocol_number(sede, anno, *progressive), duplicate: false };
        staged.rows.push(json!([
            submitted.id,
            submitted.protocollo,
            r.envelope.task,
            r.soggetto,
            sede,
            json_text(&r.payload),
            r.envelope.chiave_idempotenza,
            r.envelope.richiedente_cf,
            r.envelope.matricola,
        ]));
        staged.events.push(NewEvent {
            request_id: submitted.id,
            kind: EventKind::Protocollazione,
            actor: "intake".into(),
            detail: protocollazione_detail(&submitted.protocollo, sede, &r.allegati),
            notifications: requester_notifications(&r.envelope.contatti),
        });
        staged.files.extend((1..).zip(&r.allegati).map(|(posizione, file)| (submitted.id, posizione, file.clone())));
        staged.opened.push(Subject::Open { task: r.envelope.task.clone(), soggetto: r.soggetto.clone() }.to_string());
        if let Some(k) = &r.envelope.chiave_idempotenza {
            known.insert(k.clone(), (Submitted { duplicate: true, ..submitted.clone() }, r.payload.clone()));
        }
        staged.out.push(submitted);
    }
    Ok(staged)
}

/// The protocollazione event: the number, the sede and, when files came with the request, their types and sizes
/// (their names stay in the request: the event feed carries no text of the requester's).
fn protocollazione_detail(protocollo: &str, sede: &str, files: &[NewAttachment]) -> Value {
    let mut detail = json!({ "protocollo": protocollo, "sede": sede });
    if !files.is_empty() {
        detail["allegati"] = attachment_summaries(files);
    }
    detail
}
