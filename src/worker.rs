//! The pipeline: claim a batch (lease + fencing token), read its facts, decide every request off the async
//! runtime, close the batch in one fenced transaction. Several workers run it concurrently.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::{Notify, watch};
use tracing::{debug, error, info, warn};

use crate::config::WorkerConfig;
use crate::domain::closing::{ClaimedRequest, Evaluation, Fate, RetryPolicy};
use crate::domain::decision::{FailureKind, RuleFailure};
use crate::domain::facts::{Subject, SubjectFacts};
use crate::domain::time::Millis;
use crate::rules::{Evaluator, FactLoader, FactsView, RuleSet};
use crate::store::{Store, StoreError};

/// The wall clock, in unix milliseconds.
pub fn now_ms() -> Millis {
    chrono::Utc::now().timestamp_millis()
}

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
        let facts = self.store.load_facts(&prefetch_subjects(&claimed)).await?;
        let loader: Arc<dyn FactLoader> = Arc::new(StoreLoader::new(self.store.clone()));
        let view = Arc::new(FactsView::new(facts, Some(loader)));
        let rules = self.rules.load_full();
        let evaluator = self.evaluator.clone();
        tokio::task::spawn_blocking(move || {
            claimed
                .into_iter()
                .map(|req| {
                    let eval = match rules.get(&req.task) {
                        Some(rule) => evaluator.evaluate(rule, &req, view.clone(), now),
                        None => Evaluation::Failed(RuleFailure {
                            kind: FailureKind::NoRule,
                            message: format!("no rule is loaded for task `{}`", req.task),
                        }),
                    };
                    (req, eval)
                })
                .collect::<Vec<_>>()
        })
        .await
        .map_err(|e| StoreError::Corrupt(format!("evaluation thread failed: {e}")))
    }

    /// Claims, decides and closes one batch as `owner`.
    pub async fn run_batch(&self, owner: &str) -> Result<BatchStats, StoreError> {
        let lease_ms = (self.config.lease_seconds * 1000) as i64;
        let started = std::time::Instant::now();
        let claimed = self.store.claim(owner, self.config.batch_size, lease_ms, now_ms()).await?;
        if claimed.is_empty() {
            return Ok(BatchStats::default());
        }
        crate::telemetry::metrics::claimed(&claimed, now_ms());
        let taken_over = claimed.iter().filter(|r| r.taken_over).count();
        if taken_over > 0 {
            warn!(owner, taken_over, "took over requests whose lease expired");
        }
        let claim_us = started.elapsed().as_micros();
        let evaluated = self.evaluate_batch(claimed).await?;
        let eval_us = started.elapsed().as_micros() - claim_us;
        let plan = self.store.close_batch(&evaluated, self.policy(), now_ms(), owner).await?;
        crate::telemetry::metrics::closed(&evaluated, &plan.fates);
        let mut stats = BatchStats { claimed: evaluated.len(), ..Default::default() };
        for ((req, eval), (_, fate)) in evaluated.iter().zip(&plan.fates) {
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
            let result = self.run_batch(&owner).await;
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
