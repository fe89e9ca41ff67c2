//! The pipeline: claim a batch (lease + fencing token), read its facts, decide every request off the async
//! runtime, close the batch in one fenced transaction. Several workers run it concurrently.

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::{Notify, watch};
use tracing::{debug, error, info, warn};

use crate::clock::now_ms;
use crate::config::WorkerConfig;
use crate::domain::closing::{ClaimedRequest, Evaluation, Fate, RetryPolicy};
use crate::domain::decision::{FailureKind, RuleFailure};
use crate::domain::facts::{Subject, SubjectFacts};
use crate::domain::time::Millis;
use crate::rules::{Evaluator, FactLoader, FactsView, RuleSet};
use crate::store::{Store, StoreError};

/// What one batch did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct BatchStats {
    pub claimed: usize,
    pub closed: usize,
    pub referred: usize,
    pub retried: usize,
    pub parked: usize,
    pub conflicts: usize,
    pub stale: usize,
}

/// Shared by all workers of one daemon.
pub struct Pipeline {
    pub store: Store,
    pub rules: Arc<ArcSwap<RuleSet>>,
    pub evaluator: Arc<Evaluator>,
    pub config: WorkerConfig,
    /// Stable instance identity (logs, metrics, `rules status`).
    pub instance: String,
    /// This process's lease owner prefix; each worker's lease owner is `<lease_owner>/<n>`.
    pub lease_owner: String,
    /// Wakes idle workers (e.g. after an in-process submission).
    pub wake: Notify,
    /// Liveness of the loops (for /healthz and the systemd watchdog).
    pub health: Arc<crate::health::Health>,
}

/// Loads facts a rule asks for beyond the batch's prefetch, from the evaluation thread.
pub struct StoreLoader {
    store: Store,
    runtime: tokio::runtime::Handle,
}

impl StoreLoader {
    /// A loader for evaluations started from within this tokio runtime.
    pub fn new(store: Store) -> Self {
        StoreLoader { store, runtime: tokio::runtime::Handle::current() }
    }
}

impl FactLoader for StoreLoader {
    fn load(&self, subjects: &[Subject]) -> Result<HashMap<Subject, SubjectFacts>, String> {
        self.runtime.block_on(self.store.load_facts(subjects)).map_err(|e| e.to_string())
    }
}

/// The subjects a request's rule will almost surely read: prefetched for the whole batch in a few queries.
fn prefetch_subjects(batch: &[ClaimedRequest]) -> Vec<Subject> {
    let mut out = BTreeSet::new();
    for r in batch {
        out.insert(Subject::Open { task: r.task.clone(), soggetto: r.soggetto.clone() });
        out.insert(Subject::Sede(r.sede.clone()));
        for (key, value) in &r.payload {
            let Some(v) = value.as_str() else { continue };
            if key == "matricola" {
                out.insert(Subject::Azienda(v.to_string()));
                out.insert(Subject::DelegheAzienda(v.to_string()));
                out.insert(Subject::ContattiAzienda(v.to_string()));
            } else if key == "richiedente_cf" || key.starts_with("cf_") {
                out.insert(Subject::Persona(v.to_string()));
                out.insert(Subject::DelegheDelegato(v.to_string()));
                out.insert(Subject::ContattiTitolare(v.to_string()));
            }
        }
    }
    out.into_iter().collect()
}

/// A failure that belongs to one request's data, not to its rule: the database refused to read or write it.
fn database_failure(message: String) -> Evaluation {
    Evaluation::Failed(RuleFailure { kind: FailureKind::Database, message })
}

/// Runs `op` on all of `items`; when the database refuses it for a reason that is not its availability (a lost
/// connection, a serialization conflict: returned as they are), on each half, and so on down to single items.
/// Returns the results of the parts that succeeded, with their ranges, and the error of each item that fails
/// alone: one bad request costs its batch about 2·log2(n) more statements, not its progress.
async fn isolate<'a, T, R, F, Fut>(
    items: &'a [T],
    mut op: F,
) -> Result<(Vec<(Range<usize>, R)>, Vec<(usize, StoreError)>), StoreError>
where
    F: FnMut(&'a [T]) -> Fut,
    Fut: Future<Output = Result<R, StoreError>>,
{
    let (mut done, mut failed) = (Vec::new(), Vec::new());
    // A stack of the ranges still to try (the whole batch first, then halves of a refused one).
    let mut pending: Vec<Range<usize>> = Vec::new();
    pending.push(0..items.len());
    while let Some(range) = pending.pop() {
        if range.is_empty() {
            continue;
        }
        match op(&items[range.clone()]).await {
            Ok(result) => done.push((range, result)),
            Err(e) if e.is_unavailable() || e.is_serialization_conflict() => return Err(e),
            Err(e) if range.len() == 1 => failed.push((range.start, e)),
            Err(_) => {
                let middle = range.start + range.len() / 2;
                pending.push(middle..range.end);
                pending.push(range.start..middle);
            }
        }
    }
    Ok((done, failed))
}

/// Renews a batch's leases until dropped ([`Pipeline::keep_leases`]).
struct LeaseKeeper(tokio::task::JoinHandle<()>);

impl Drop for LeaseKeeper {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Pipeline {
    /// The retry schedule of rule failures, from the configuration.
    pub fn policy(&self) -> RetryPolicy {
        RetryPolicy {
            max_failures: self.config.max_failures,
            base_delay_ms: self.config.retry_base_ms,
            max_delay_ms: self.config.retry_max_ms,
        }
    }

    /// Reads the facts of a claimed batch and decides each request, off the async runtime.
    pub async fn evaluate_batch(
        &self,
        claimed: Vec<ClaimedRequest>,
    ) -> Result<Vec<(ClaimedRequest, Evaluation)>, StoreError> {
        self.evaluate_batch_at(claimed, now_ms()).await
    }

    /// [`Pipeline::evaluate_batch`] with the decision instant given (`ctx.now`, `ctx.today`): for replays and
    /// for running rule cases on a real store.
    pub async fn evaluate_batch_at(
        &self,
        claimed: Vec<ClaimedRequest>,
        now: Millis,
    ) -> Result<Vec<(ClaimedRequest, Evaluation)>, StoreError> {
        Ok(self.evaluate(claimed, now, None).await?.0)
    }

    /// Decides one claimed request as a batch of one (its facts read, the active rule evaluated off the async
    /// runtime): `operator redecide`.
    pub async fn evaluate_one(&self, claimed: ClaimedRequest, now: Millis) -> Result<Evaluation, StoreError> {
        let id = claimed.id;
        let (mut evaluated, _) = self.evaluate(vec![claimed], now, None).await?;
        evaluated
            .pop()
            .map(|(_, eval)| eval)
            .ok_or_else(|| StoreError::Corrupt(format!("the evaluation of request {id} returned nothing")))
    }

    /// Decides the requests of a batch in order until `stop` turns true; the requests not decided by then are
    /// returned apart (still leased: the caller's owner releases them). A request whose facts the database
    /// refuses to read is not evaluated: it fails alone ([`FailureKind::Database`]).
    async fn evaluate(
        &self,
        claimed: Vec<ClaimedRequest>,
        now: Millis,
        stop: Option<watch::Receiver<bool>>,
    ) -> Result<(Vec<(ClaimedRequest, Evaluation)>, Vec<ClaimedRequest>), StoreError> {
        let (facts, unreadable) = self.prefetch(&claimed).await?;
        let loader: Arc<dyn FactLoader> = Arc::new(StoreLoader::new(self.store.clone()));
        let view = Arc::new(FactsView::new(facts, Some(loader)));
        let rules = self.rules.load_full();
        let evaluator = self.evaluator.clone();
        tokio::task::spawn_blocking(move || {
            let mut evaluated = Vec::with_capacity(claimed.len());
            let mut undecided = Vec::new();
            for (i, req) in claimed.into_iter().enumerate() {
                if !undecided.is_empty() || stop.as_ref().is_some_and(|s| *s.borrow()) {
                    undecided.push(req);
                    continue;
                }
                let eval = match (unreadable.get(&i), rules.get(&req.task)) {
                    (Some(error), _) => database_failure(format!("lettura dei fatti non riuscita ({error})")),
                    (None, Some(rule)) => evaluator.evaluate(rule, &req, view.clone(), now),
                    (None, None) => Evaluation::Failed(RuleFailure {
                        kind: FailureKind::NoRule,
                        message: format!("no rule is loaded for task `{}`", req.task),
                    }),
                };
                evaluated.push((req, eval));
            }
            (evaluated, undecided)
        })
        .await
        .map_err(|e| StoreError::Corrupt(format!("evaluation thread failed: {e}")))
    }

    /// The prefetched facts of a batch, and the error of each request (by position) whose facts the database
    /// refuses to read: the batch is read in parts until those requests are found alone ([`isolate`]).
    async fn prefetch(
        &self,
        claimed: &[ClaimedRequest],
    ) -> Result<(HashMap<Subject, SubjectFacts>, HashMap<usize, String>), StoreError> {
        let store = &self.store;
        let (parts, failed) = isolate(claimed, |part| {
            let subjects = prefetch_subjects(part);
            async move { store.load_facts(&subjects).await }
        })
        .await?;
        if !failed.is_empty() {
            warn!(requests = failed.len(), "the facts of some requests cannot be read: they fail alone (see `show`)");
        }
        let facts = parts.into_iter().flat_map(|(_, facts)| facts).collect();
        Ok((facts, failed.into_iter().map(|(i, e)| (i, e.to_string())).collect()))
    }

    /// Closes an evaluated batch, fenced. When the database refuses the close for a reason that is not its
    /// availability, the batch is closed in parts until the requests at fault are found alone ([`isolate`]);
    /// each of them is recorded as failed in a transaction of its own (retried, then parked) and its
    /// evaluation replaced by that failure. Returns each request's fate, in batch order.
    async fn close(
        &self,
        evaluated: &mut [(ClaimedRequest, Evaluation)],
        owner: &str,
    ) -> Result<Vec<(i64, Fate)>, StoreError> {
        let (store, policy) = (&self.store, self.policy());
        let (parts, failed) =
            isolate(evaluated, |part| async move { store.close_batch(part, policy, now_ms(), owner).await }).await?;
        let mut fates: HashMap<i64, Fate> = parts.into_iter().flat_map(|(_, plan)| plan.fates).collect();
        if !failed.is_empty() {
            warn!(
                owner,
                requests = failed.len(),
                "the database refused to close some requests: they fail alone (see `show`)"
            );
        }
        for (i, error) in failed {
            let failure = database_failure(format!("chiusura non registrata ({error})"));
            let entry = &mut evaluated[i];
            entry.1 = failure;
            let plan = store.close_batch(std::slice::from_ref(entry), policy, now_ms(), owner).await?;
            fates.extend(plan.fates);
        }
        evaluated
            .iter()
            .map(|(req, _)| {
                let fate = fates.get(&req.id).copied();
                fate.map(|f| (req.id, f))
                    .ok_or_else(|| StoreError::Corrupt(format!("the close planned nothing for request {}", req.id)))
            })
            .collect()
    }

    /// Keeps the leases of a batch in flight: renews them every third of the lease, fenced by their tokens,
    /// until the returned guard is dropped. A batch may thus take longer than its lease (slow rules, a close
    /// done in parts) without being taken over, while a dead worker's leases still expire.
    fn keep_leases(&self, owner: &str, claimed: &[ClaimedRequest], lease_ms: i64) -> LeaseKeeper {
        let store = self.store.clone();
        let leases: Vec<(i64, i64)> = claimed.iter().map(|r| (r.id, r.token)).collect();
        let owner = owner.to_string();
        let period = Duration::from_millis((lease_ms / 3).max(1) as u64);
        LeaseKeeper(tokio::spawn(async move {
            loop {
                tokio::time::sleep(period).await;
                match store.renew(&leases, now_ms() + lease_ms).await {
                    Ok(renewed) => debug!(owner, renewed, "leases renewed"),
                    Err(e) => warn!(owner, error = %e, "cannot renew leases: trying again"),
                }
            }
        }))
    }

    /// Claims, decides and closes one batch as `owner`.
    pub async fn run_batch(&self, owner: &str) -> Result<BatchStats, StoreError> {
        self.run_batch_until(owner, None).await
    }

    /// [`Pipeline::run_batch`], deciding until `stop` turns true: then what is decided is closed and the rest
    /// stays leased by `owner`, for the daemon to release.
    async fn run_batch_until(
        &self,
        owner: &str,
        stop: Option<watch::Receiver<bool>>,
    ) -> Result<BatchStats, StoreError> {
        let lease_ms = (self.config.lease_seconds * 1000) as i64;
        let started = std::time::Instant::now();
        let claimed = self.store.claim(owner, self.config.batch_size, lease_ms, now_ms()).await?;
        if claimed.is_empty() {
            return Ok(BatchStats::default());
        }
        let _leases = self.keep_leases(owner, &claimed, lease_ms);
        crate::telemetry::metrics::claimed(&claimed, now_ms());
        let taken_over = claimed.iter().filter(|r| r.taken_over).count();
        if taken_over > 0 {
            warn!(owner, taken_over, "took over requests whose lease expired");
        }
        let claim_us = started.elapsed().as_micros();
        let (mut evaluated, undecided) = self.evaluate(claimed, now_ms(), stop).await?;
        if !undecided.is_empty() {
            info!(owner, undecided = undecided.len(), "stopping: closing what is decided, releasing the rest");
        }
        let eval_us = started.elapsed().as_micros() - claim_us;
        let fates = self.close(&mut evaluated, owner).await?;
        crate::telemetry::metrics::closed(&evaluated, &fates);
        let mut stats = BatchStats { claimed: evaluated.len() + undecided.len(), ..Default::default() };
        for ((req, eval), (_, fate)) in evaluated.iter().zip(&fates) {
            match fate {
                Fate::Closed(outcome) => {
                    stats.closed += 1;
                    let codes: Vec<&str> = match eval {
                        Evaluation::Decided(d) => d.reasons.iter().map(|r| r.codice.as_str()).collect(),
                        Evaluation::Failed(_) => Vec::new(),
                    };
                    info!(protocollo = %req.protocollo, task = %req.task, esito = outcome.as_str(), motivi = ?codes, "decisa");
                }
                Fate::Referred => {
                    stats.referred += 1;
                    info!(protocollo = %req.protocollo, task = %req.task, sede = %req.sede, "rinviata a operatore");
                }
                Fate::Retried | Fate::Parked => {
                    let kind = match eval {
                        Evaluation::Failed(f) => f.kind.as_str(),
                        Evaluation::Decided(_) => "effect",
                    };
                    if *fate == Fate::Parked {
                        stats.parked += 1;
                        error!(protocollo = %req.protocollo, task = %req.task, kind, "rule failed too often: request parked for an operator (see `show`)");
                    } else {
                        stats.retried += 1;
                        warn!(protocollo = %req.protocollo, task = %req.task, kind, "rule failed: will retry");
                    }
                }
                Fate::Conflict => stats.conflicts += 1,
                Fate::Stale => stats.stale += 1,
            }
        }
        let close_us = started.elapsed().as_micros() - claim_us - eval_us;
        debug!(owner, ?stats, claim_us, eval_us, close_us, "batch done");
        Ok(stats)
    }

    /// One worker: runs batches until shutdown (or, with `exit_when_idle`, until nothing is left to decide).
    pub async fn run_worker(self: Arc<Self>, index: usize, mut shutdown: watch::Receiver<bool>, exit_when_idle: bool) {
        let owner = format!("{}/{index}", self.lease_owner);
        let poll = Duration::from_millis(self.config.poll_interval_ms);
        let mut failures = 0u32;
        while !*shutdown.borrow() {
            self.health.beat(&owner);
            let result = self.run_batch_until(&owner, Some(shutdown.clone())).await;
            if result.is_ok() && !self.health.set_database(true) {
                info!(owner, "database reachable again: ready");
            }
            match result {
                Ok(stats) if stats.claimed > 0 => {
                    failures = 0;
                    continue;
                }
                Ok(_) => {
                    failures = 0;
                    if exit_when_idle {
                        match self.store.counts().await {
                            Ok(c) if c.undecided() == 0 => break,
                            Ok(_) => {}
                            Err(e) => error!(error = %e, "cannot count requests"),
                        }
                    }
                }
                Err(e) if e.is_unavailable() => {
                    failures += 1;
                    if self.health.set_database(false) {
                        error!(owner, error = %e, "database unreachable: not ready; retrying with backoff");
                    }
                }
                Err(e) => {
                    failures += 1;
                    error!(owner, error = %e, "batch failed; retrying");
                }
            }
            let backoff = poll * 2u32.saturating_pow(failures.min(6));
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = self.wake.notified() => {}
                _ = shutdown.changed() => {}
            }
        }
        self.health.retire(&owner);
        debug!(owner, "worker stopped");
    }
}
