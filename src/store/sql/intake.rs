//! Intake: protocol numbers, idempotency and the `protocollazione` events of submitted requests, in one
//! transaction per submission (PostgreSQL serialises protocol numbers with an advisory lock).
//!
//! A retry that arrives while the first submission with its idempotency key is still being stored is refused
//! (the IETF Idempotency-Key draft's 409) rather than queued behind it: within a process by the keys in flight,
//! across PostgreSQL instances by a transaction-scoped advisory lock per key, tried without waiting.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

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

impl Store {
    /// Stores accepted requests `aperta`, each with its protocol number, event and notifications, all in
    /// one transaction. A request whose idempotency key is known returns the first request instead, if it is the
    /// same request; with a different one the whole submission is refused (the key was reused by mistake).
    pub async fn submit(&self, requests: &[NewRequest], default_sede: &str, now: Millis) -> Result<Vec<Submitted>> {
        let keys: Vec<&str> = requests.iter().filter_map(|r| r.envelope.chiave_idempotenza.as_deref()).collect();
        let in_flight = |busy: usize| {
            let key = keys[busy];
            let index = requests.iter().position(|r| r.envelope.chiave_idempotenza.as_deref() == Some(key));
            StoreError::IdempotencyInFlight { index: index.unwrap_or(busy) }
        };
        let _held = self.keys_in_flight.take(&keys).map_err(in_flight)?;
        let mut tx = self.write_tx().await?;
        if self.dialect == Dialect::Postgres {
            // Another instance storing one of these keys holds its lock until it commits.
            for (i, key) in keys.iter().enumerate() {
                let taken: bool = sqlx::query_scalar("SELECT pg_try_advisory_xact_lock($1, hashtext($2))")
                    .bind(KEY_LOCK_CLASS)
                    .bind(*key)
                    .fetch_one(&mut *tx)
                    .await?;
                if !taken {
                    return Err(in_flight(i));
                }
            }
            // Protocol numbers are read, incremented and written back: one intake at a time, as on SQLite.
            sqlx::query("SELECT pg_advisory_xact_lock(7400)").execute(&mut *tx).await?;
        }
        // Each known key with the request it first came with: a retry must repeat that request exactly.
        let mut known: HashMap<String, (Submitted, Map<String, Value>)> = HashMap::new();
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

        let matricole: Vec<&str> = requests.iter().filter_map(|r| r.envelope.matricola.as_deref()).collect();
        let sede_of: HashMap<String, String> = sqlx::query_as(
            tx.sql("SELECT matricola, sede FROM aziende WHERE matricola IN (SELECT value FROM json_each($1))"),
        )
        .bind(json_text(&matricole))
        .fetch_all(&mut *tx)
        .await?
        .into_iter()
        .collect();
        let anno = year(now);
        let mut counters: HashMap<String, i64> =
            sqlx::query_as(tx.sql("SELECT sede, last FROM protocol_counters WHERE anno = $1"))
                .bind(anno)
                .fetch_all(&mut *tx)
                .await?
                .into_iter()
                .collect();
        let fresh = requests.len()
            - requests
                .iter()
                .filter(|r| r.envelope.chiave_idempotenza.as_ref().is_some_and(|k| known.contains_key(k)))
                .count();
        let mut ids = reserve_ids(&mut tx, IdTable::Requests, fresh).await?.into_iter();

        let mut out = Vec::with_capacity(requests.len());
        let mut rows = Vec::new();
        let mut events = Vec::new();
        let mut opened = Vec::new();
        for r in requests {
            if let Some((first, payload)) = r.envelope.chiave_idempotenza.as_ref().and_then(|k| known.get(k)) {
                if payload != &r.payload {
                    return Err(StoreError::IdempotencyMismatch {
                        index: out.len(),
                        protocollo: first.protocollo.clone(),
                    });
                }
                out.push(first.clone());
                continue;
            }
            let sede = r.envelope.matricola.as_ref().and_then(|m| sede_of.get(m)).map_or(default_sede, String::as_str);
            let Some(id) = ids.next() else {
                return Err(StoreError::Corrupt("fewer request ids reserved than requests to store".into()));
            };
            let progressive = counters.entry(sede.to_string()).or_insert(0);
            *progressive += 1;
            let submitted = Submitted { id, protocollo: protocol_number(sede, anno, *progressive), duplicate: false };
            rows.push(json!([
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
            events.push(NewEvent {
                request_id: submitted.id,
                kind: EventKind::Protocollazione,
                actor: "intake".into(),
                detail: json!({ "protocollo": submitted.protocollo, "sede": sede }),
                notifications: requester_notifications(&r.envelope.contatti),
            });
            opened.push(Subject::Open { task: r.envelope.task.clone(), soggetto: r.soggetto.clone() }.to_string());
            if let Some(k) = &r.envelope.chiave_idempotenza {
                known.insert(k.clone(), (Submitted { duplicate: true, ..submitted.clone() }, r.payload.clone()));
            }
            out.push(submitted);
        }
        if !rows.is_empty() {
            sqlx::query(tx.sql(
                "INSERT INTO requests (id, protocollo, task, soggetto, sede, payload, chiave_idempotenza, stato,
                                       creata_il, aggiornata_il, available_at, richiedente_cf, matricola)
                 SELECT CAST(value ->> 0 AS BIGINT), value ->> 1, value ->> 2, value ->> 3, value ->> 4, value ->> 5,
                        value ->> 6, 'aperta', $2, $2, $2, value ->> 7, value ->> 8
                 FROM json_each($1)",
            ))
            .bind(json_text(&rows))
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
            bump_versions(&mut tx, &opened).await?;
            insert_events(&mut tx, &events, now).await?;
            wake(&mut tx, REQUESTS_CHANNEL).await?;
        }
        tx.commit().await?;
        Ok(out)
    }
}
