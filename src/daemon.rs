//! Lifecycle of `smart-taskd run`: open the store, load the rules, start the workers, and handle signals
//! (SIGTERM/SIGINT drain and exit 0; SIGHUP reloads the rules, keeping the running ones if the new
//! version does not load).

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use arc_swap::ArcSwap;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{Notify, watch};
use tracing::{error, info, warn};

use crate::config::Config;
use crate::rules::{Evaluator, Limits, RuleSet, load_rule_set};
use crate::store::Store;
use crate::worker::{Pipeline, now_ms};

/// Builds the shared rule evaluator from the configuration.
pub fn evaluator(config: &Config) -> Evaluator {
    Evaluator::new(Limits {
        max_operations: config.rules.max_operations,
        deadline: Duration::from_millis(config.rules.deadline_ms),
    })
}

/// Loads the rules directory named by the configuration.
pub fn load_rules(config: &Config, evaluator: &Evaluator) -> anyhow::Result<RuleSet> {
    load_rule_set(&config.rules.dir, evaluator)
        .with_context(|| format!("cannot load the rules (rules.dir = {})", config.rules.dir.display()))
}

/// Opens the configured database and applies pending migrations.
pub async fn open_store(config: &Config) -> anyhow::Result<Store> {
    let store = Store::connect(&config.database.url, config.database.max_connections)
        .await
        .with_context(|| "cannot open the database (database.url or SMART_TASK_DATABASE_URL)")?;
    store.migrate().await.context("cannot migrate the database")?;
    Ok(store)
}

/// Builds the pipeline for a store and configuration.
pub fn pipeline(config: &Config, store: Store) -> anyhow::Result<Arc<Pipeline>> {
    let evaluator = evaluator(config);
    let rules = load_rules(config, &evaluator)?;
    Ok(Arc::new(Pipeline {
        store,
        rules: Arc::new(ArcSwap::from_pointee(rules)),
        evaluator: Arc::new(evaluator),
        config: config.worker.clone(),
        instance: config.instance_name(),
        wake: Notify::new(),
    }))
}

/// Runs the workers until a shutdown signal (or, with `exit_when_idle`, until nothing is left to decide).
pub async fn run(config: &Config, pipeline: Arc<Pipeline>, exit_when_idle: bool) -> anyhow::Result<()> {
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut workers = tokio::task::JoinSet::new();
    for i in 0..config.worker.workers {
        workers.spawn(pipeline.clone().run_worker(i, stop_rx.clone(), exit_when_idle));
    }
    info!(
        instance = %pipeline.instance,
        workers = config.worker.workers,
        tasks = pipeline.rules.load().tasks.len(),
        "smart-taskd started"
    );
    let mut term = signal(SignalKind::terminate()).context("cannot install the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot install the SIGINT handler")?;
    let mut hup = signal(SignalKind::hangup()).context("cannot install the SIGHUP handler")?;
    loop {
        tokio::select! {
            _ = term.recv() => { info!("SIGTERM: stopping"); break; }
            _ = int.recv() => { info!("SIGINT: stopping"); break; }
            _ = hup.recv() => reload(config, &pipeline),
            done = workers.join_next() => {
                if done.is_none() || exit_when_idle && workers.is_empty() {
                    info!("nothing left to decide: exiting");
                    return Ok(());
                }
            }
        }
    }
    let _ = stop_tx.send(true);
    let grace = Duration::from_secs(config.worker.shutdown_grace_seconds);
    if tokio::time::timeout(grace, async { while workers.join_next().await.is_some() {} }).await.is_err() {
        warn!(grace_seconds = grace.as_secs(), "in-flight batches did not finish in time: releasing their leases");
        workers.abort_all();
    }
    for i in 0..config.worker.workers {
        let owner = format!("{}/{i}", pipeline.instance);
        match pipeline.store.release(&owner, now_ms()).await {
            Ok(0) => {}
            Ok(n) => info!(owner, released = n, "released leases"),
            Err(e) => error!(owner, error = %e, "cannot release leases (they will expire)"),
        }
    }
    info!("smart-taskd stopped");
    Ok(())
}

/// Re-reads the rules; an invalid new version is refused and the running one stays.
fn reload(config: &Config, pipeline: &Pipeline) {
    match load_rule_set(&config.rules.dir, &pipeline.evaluator) {
        Ok(rules) => {
            let versions: Vec<String> = rules.tasks.values().map(|r| format!("{}@{}", r.id, r.version)).collect();
            pipeline.rules.store(Arc::new(rules));
            info!(?versions, "SIGHUP: rules reloaded");
        }
        Err(e) => error!(error = %e, "SIGHUP: new rules refused, the running ones stay"),
    }
}
