//! Lifecycle of `smart-taskd run`: open the store, load the rules, start the workers, and handle signals
//! (SIGTERM/SIGINT drain and exit 0; SIGHUP reloads the rules, keeping the running ones if the new
//! version does not load).

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use arc_swap::ArcSwap;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{Notify, watch};
use tracing::{debug, error, info, warn};

use crate::activation::{RulesRefused, load_rules, metric_tasks, record_status, refresh};
use crate::clock::now_ms;
use crate::config::Activation;
use crate::config::Config;
use crate::notify::Dispatcher;
use crate::rules::{Evaluator, Limits, RuleSet};
use crate::store::{Dialect, Store, StoreError};
use crate::worker::Pipeline;

/// Builds the shared rule evaluator from the configuration.
pub fn evaluator(config: &Config) -> Evaluator {
    Evaluator::new(Limits {
        max_operations: config.rules.max_operations,
        deadline: Duration::from_millis(config.rules.deadline_ms),
    })
}

/// What a daemon knows about the rules it starts with (`activation::Active` without the rules).
#[derive(Debug, Default)]
pub struct Started {
    /// The promoted rule set it runs.
    pub rule_set: Option<i64>,
    /// Directory mode: the directory was refused and the last activated set runs instead.
    pub refused: Option<RulesRefused>,
}

/// Opens the configured database and applies pending migrations.
pub async fn open_store(config: &Config) -> anyhow::Result<Store> {
    Ok(connect_and_migrate(config).await?)
}

async fn connect_and_migrate(config: &Config) -> Result<Store, StoreOpenError> {
    let store =
        Store::connect(&config.database.url, config.database.max_connections).await.map_err(StoreOpenError::Connect)?;
    store.migrate().await.map_err(StoreOpenError::Migrate)?;
    Ok(store)
}

#[derive(Debug, thiserror::Error)]
enum StoreOpenError {
    #[error("cannot open the database (database.url or SMART_TASK_DATABASE_URL): {0}")]
    Connect(StoreError),
    #[error("cannot migrate the database: {0}")]
    Migrate(StoreError),
}

impl StoreOpenError {
    fn is_unavailable(&self) -> bool {
        match self {
            StoreOpenError::Connect(e) | StoreOpenError::Migrate(e) => e.is_unavailable(),
        }
    }
}

/// [`open_store`] for the daemon: while the database cannot be reached (PostgreSQL starting after the
/// daemon, a network not up yet) waits and tries again with backoff instead of exiting, until SIGTERM or
/// SIGINT; any other error (a wrong URL, a failed migration) ends it at once.
pub async fn open_store_waiting(config: &Config) -> anyhow::Result<Store> {
    let mut term = signal(SignalKind::terminate()).context("cannot install the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot install the SIGINT handler")?;
    let mut backoff = Duration::from_millis(500);
    loop {
        match connect_and_migrate(config).await {
            Ok(store) => return Ok(store),
            Err(e) if e.is_unavailable() => {
                warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "database unreachable: waiting for it");
                let _ = sd_notify::notify(&[sd_notify::NotifyState::Status("waiting for the database")]);
            }
            Err(e) => return Err(e.into()),
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = term.recv() => anyhow::bail!("stopped while waiting for the database"),
            _ = int.recv() => anyhow::bail!("stopped while waiting for the database"),
        }
        backoff = (backoff * 2).min(Duration::from_secs(30));
    }
}

/// Builds the pipeline for a store and configuration, with the rules directory as it is ([`load_rules`]).
pub fn pipeline(config: &Config, store: Store) -> anyhow::Result<Arc<Pipeline>> {
    let evaluator = evaluator(config);
    let rules = load_rules(config, &evaluator)?;
    Ok(pipeline_with(config, store, evaluator, rules))
}

/// Builds the pipeline for a store and configuration that runs `rules`.
pub fn pipeline_with(config: &Config, store: Store, evaluator: Evaluator, rules: RuleSet) -> Arc<Pipeline> {
    Arc::new(Pipeline {
        store,
        rules: Arc::new(ArcSwap::from_pointee(rules)),
        evaluator: Arc::new(evaluator),
        config: config.worker.clone(),
        instance: config.instance_name(),
        lease_owner: config.lease_owner(),
        wake: Notify::new(),
        health: Arc::new(crate::health::Health::new(
            sd_notify::watchdog_enabled().unwrap_or(Duration::from_secs(60)).max(Duration::from_millis(200)),
        )),
    })
}

/// Runs the workers until a shutdown signal (or, with `exit_when_idle`, until nothing is left to decide),
/// sending no notification (the benchmark; `run_with` for the daemon).
pub async fn run(config: &Config, pipeline: Arc<Pipeline>, exit_when_idle: bool) -> anyhow::Result<()> {
    run_with(config, pipeline, None, exit_when_idle, Started::default()).await
}

/// The notification dispatcher the configuration describes (None when no channel is configured).
pub fn dispatcher(config: &Config, pipeline: &Pipeline) -> anyhow::Result<Option<Arc<Dispatcher>>> {
    Dispatcher::new(config, pipeline.store.clone(), pipeline.rules.clone())
}

/// Runs the workers and the notification dispatcher until a shutdown signal, or, with `exit_when_idle`, until
/// nothing is left to decide and no notification is due now (those waiting for a later retry do not hold it).
pub async fn run_with(
    config: &Config,
    pipeline: Arc<Pipeline>,
    dispatcher: Option<Arc<Dispatcher>>,
    exit_when_idle: bool,
    started: Started,
) -> anyhow::Result<()> {
    let (stop_tx, stop_rx) = watch::channel(false);
    // The operations endpoint and the cron jobs belong to the daemon, not to a batch run.
    let metrics_handle = crate::telemetry::metrics::install().ok();
    crate::telemetry::metrics::initialise(&metric_tasks(&pipeline.rules.load()), &pipeline.instance);
    crate::telemetry::metrics::started(now_ms() as f64 / 1000.0);
    let api = match (exit_when_idle, config.api.listen) {
        (false, Some(addr)) => {
            let listener = crate::http::bind(addr)
                .await
                .with_context(|| format!("cannot listen on {addr} for /metrics (api.listen; `null` turns it off)"))?;
            let api = match &config.api.auth {
                Some(auth) => Some(Arc::new(crate::http::api::ApiState {
                    verifier: crate::http::auth::Verifier::load(auth)?,
                    rules: pipeline.rules.clone(),
                    intake: config.intake.clone(),
                    limits: crate::http::limits::Limits::new(&config.api),
                    pipeline: pipeline.clone(),
                    stop: stop_rx.clone(),
                    webhooks: config.webhooks.clone(),
                    promotion: config.rules.promotion.clone(),
                    agenda: config.agenda.clone(),
                })),
                None => None,
            };
            let console = match &config.console {
                Some(console) => Some(Arc::new(crate::http::console::ConsoleState::new(
                    console.clone(),
                    pipeline.rules.clone(),
                    pipeline.clone(),
                    config.intake.clone(),
                    config.instance_name(),
                    stop_rx.clone(),
                )?)),
                None => None,
            };
            metrics_handle.map(|metrics| {
                let state = crate::http::AppState {
                    metrics,
                    store: pipeline.store.clone(),
                    health: pipeline.health.clone(),
                    api,
                    console,
                    questionario: config.questionario.clone().map(Arc::new),
                };
                tokio::spawn(crate::http::serve(listener, crate::http::router(state), stop_rx.clone()))
            })
        }
        _ => None,
    };
    let scheduler = if exit_when_idle {
        None
    } else {
        let jobs = config.schedule.jobs()?;
        let mail = crate::schedule::Mailer::from_config(config)?;
        Some(tokio::spawn(crate::schedule::run(
            pipeline.store.clone(),
            jobs,
            mail,
            pipeline.health.clone(),
            stop_rx.clone(),
        )))
    };
    let notifier = dispatcher.clone().map(|d| tokio::spawn(d.run(stop_rx.clone(), pipeline.health.clone())));
    // A batch run records the pending esito documents once nothing is left to decide.
    let esiti = (!exit_when_idle && config.worker.esito_documents)
        .then(|| tokio::spawn(crate::esiti::run(pipeline.store.clone(), stop_rx.clone())));
    // Webhooks belong to the daemon, not to a batch run (`--exit-when-idle`).
    let webhooks = match exit_when_idle {
        true => None,
        false => crate::notify::webhooks::Webhooks::new(config, pipeline.store.clone())?
            .map(|w| tokio::spawn(w.run(stop_rx.clone(), pipeline.health.clone()))),
    };
    let listener = (pipeline.store.dialect() == Dialect::Postgres).then(|| {
        let workers = pipeline.clone();
        let outbox = dispatcher.clone();
        let wakers = crate::wakeup::Wakers {
            requests: Box::new(move || workers.wake.notify_waiters()),
            outbox: Box::new(move || {
                if let Some(d) = &outbox {
                    d.wake.notify_one();
                }
            }),
        };
        tokio::spawn(crate::wakeup::listen(config.database.url.clone(), wakers, stop_rx.clone()))
    });
    let mut decided = false;
    let mut idle = tokio::time::interval(Duration::from_millis(config.notify.dispatcher.poll_interval_ms));
    let mut workers = tokio::task::JoinSet::new();
    for i in 0..config.worker.workers {
        workers.spawn(pipeline.clone().run_worker(i, stop_rx.clone(), exit_when_idle));
    }
    info!(
        instance = %pipeline.instance,
        workers = config.worker.workers,
        tasks = pipeline.rules.load().tasks.len(),
        notifiche = ?dispatcher.as_ref().map(|d| d.channels()),
        "smart-taskd started"
    );
    let mut term = signal(SignalKind::terminate()).context("cannot install the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot install the SIGINT handler")?;
    let mut hup = signal(SignalKind::hangup()).context("cannot install the SIGHUP handler")?;
    let problems = started.refused.map(|r| r.problems).unwrap_or_default();
    crate::telemetry::metrics::rules_fallback(!problems.is_empty());
    if let Some(first) = problems.first() {
        error!(
            problems = problems.len(),
            first = %first,
            "the rules directory is refused: running the last activated rule set from the database (see `smart-taskd rules status`)"
        );
        pipeline.health.set_degraded(Some(format!(
            "rules: running the last activated set; the rules directory was refused ({} problem(s), see `smart-taskd rules status`)",
            problems.len()
        )));
    }
    let mut status = crate::reload::active_status(
        &pipeline.instance,
        &pipeline.rules.load(),
        now_ms(),
        problems,
        now_ms(),
        started.rule_set,
    );
    record_status(&pipeline, &status).await;
    let watch_every = Duration::from_millis(config.rules.watch_interval_ms.max(1));
    let mut watch = tokio::time::interval(watch_every);
    let mut seen = crate::reload::fingerprint(&config.rules.dir);
    let mut live_level = config.log.level.clone();
    let watchdog = sd_notify::watchdog_enabled();
    let mut watchdog_tick = tokio::time::interval(watchdog.map_or(Duration::from_secs(3600), |w| w / 3));
    pipeline.health.set_ready(true);
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready, sd_notify::NotifyState::Status("deciding requests")]);
    loop {
        tokio::select! {
            _ = term.recv() => { info!("SIGTERM: stopping"); break; }
            _ = int.recv() => { info!("SIGINT: stopping"); break; }
            _ = watchdog_tick.tick(), if watchdog.is_some() => {
                match pipeline.health.stale() {
                    None => { let _ = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]); }
                    Some(stuck) => warn!(loop_name = %stuck, "a loop is not making progress: no watchdog ping"),
                }
            }
            _ = hup.recv() => {
                info!("SIGHUP: reloading the configuration, the rules and the templates");
                reload_config(config, &mut live_level);
                seen = crate::reload::fingerprint(&config.rules.dir);
                status = refresh(config, &pipeline, status, true).await;
                if let Some(d) = &dispatcher {
                    match d.reload_templates() {
                        Ok(()) => info!("SIGHUP: notification templates reloaded"),
                        Err(e) => error!(error = %e, "SIGHUP: new notification templates refused, the running ones stay"),
                    }
                }
            }
            _ = watch.tick(), if config.rules.watch_interval_ms > 0 => {
                let changed = config.rules.activation == Activation::Directory && {
                    let now_seen = crate::reload::fingerprint(&config.rules.dir);
                    std::mem::replace(&mut seen, now_seen) != now_seen
                };
                status = refresh(config, &pipeline, status, changed).await;
            }
            done = workers.join_next(), if !decided => {
                if done.is_none() || exit_when_idle && workers.is_empty() {
                    if exit_when_idle && config.worker.esito_documents {
                        match crate::esiti::record_all(&pipeline.store).await {
                            Ok(recorded) => debug!(recorded, "esito documents recorded"),
                            Err(e) => error!(error = %e, "cannot record the esito documents"),
                        }
                    }
                    let Some(d) = &dispatcher else {
                        info!("nothing left to decide: exiting");
                        return Ok(());
                    };
                    decided = true;
                    d.wake.notify_one();
                }
            }
            _ = idle.tick(), if decided => {
                let Some(d) = &dispatcher else { break };
                match d.due().await {
                    Ok(0) => { info!("nothing left to decide, no notification due: exiting"); break; }
                    Ok(due) => debug!(due, "waiting for the notifications due"),
                    Err(e) => error!(error = %e, "cannot count the notifications due"),
                }
            }
        }
    }
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
    pipeline.health.set_ready(false);
    let _ = stop_tx.send(true);
    if let Some(api) = api {
        // Requests in flight finish; a scrape cannot hold the stop longer than its timeout.
        match tokio::time::timeout(crate::http::REQUEST_TIMEOUT, api).await {
            Ok(Ok(Err(e))) => warn!(error = %e, "the HTTP server stopped with an error"),
            Ok(_) => {}
            Err(_) => warn!("HTTP requests in flight did not finish in time"),
        }
    }
    if let Some(s) = scheduler {
        let _ = s.await;
    }
    if let Some(e) = esiti {
        let _ = e.await;
    }
    if let Some(l) = listener {
        let _ = l.await;
    }
    let grace = Duration::from_secs(config.worker.shutdown_grace_seconds);
    if tokio::time::timeout(grace, async { while workers.join_next().await.is_some() {} }).await.is_err() {
        warn!(grace_seconds = grace.as_secs(), "in-flight batches did not finish in time: releasing their leases");
        workers.abort_all();
    }
    if let Some(handle) = notifier {
        let abort = handle.abort_handle();
        if tokio::time::timeout(grace, handle).await.is_err() {
            warn!(grace_seconds = grace.as_secs(), "notifications in flight did not finish in time: releasing them");
            abort.abort();
        }
    }
    if let Some(handle) = webhooks {
        let abort = handle.abort_handle();
        if tokio::time::timeout(grace, handle).await.is_err() {
            warn!(grace_seconds = grace.as_secs(), "webhook deliveries in flight did not finish in time");
            abort.abort();
        }
    }
    if let Some(d) = &dispatcher {
        match d.release().await {
            Ok(0) => {}
            Ok(n) => info!(owner = d.owner(), released = n, "released notification leases"),
            Err(e) => error!(error = %e, "cannot release notification leases (they will expire)"),
        }
    }
    for i in 0..config.worker.workers {
        let owner = format!("{}/{i}", pipeline.lease_owner);
        match pipeline.store.release(&owner, now_ms()).await {
            Ok(0) => {}
            Ok(n) => info!(owner, released = n, "released leases"),
            Err(e) => error!(owner, error = %e, "cannot release leases (they will expire)"),
        }
    }
    info!("smart-taskd stopped");
    Ok(())
}

/// Re-reads the configuration file on SIGHUP and applies what can change live (the log level); a file that
/// does not parse is refused (logged and counted) and the running configuration stays. The other settings
/// need a restart, and the log says which changed.
fn reload_config(config: &Config, live_level: &mut String) {
    let new = match Config::load(Some(&config.source)) {
        Ok(new) => new,
        Err(e) => {
            crate::telemetry::metrics::config_reload(false);
            error!(error = %e, "SIGHUP: new configuration refused, the running one stays");
            return;
        }
    };
    crate::telemetry::metrics::config_reload(true);
    if new.log.level != *live_level {
        match crate::telemetry::set_level(&new.log.level) {
            Ok(true) => {
                info!(level = %new.log.level, "SIGHUP: log level changed");
                *live_level = new.log.level.clone();
            }
            Ok(false) => info!("SIGHUP: RUST_LOG is set, it keeps deciding the log level"),
            Err(e) => error!(error = %e, "SIGHUP: cannot change the log level"),
        }
    }
    let restart_needed: Vec<&str> = [
        ("database", format!("{:?}", new.database) != format!("{:?}", config.database)),
        ("worker", format!("{:?}", new.worker) != format!("{:?}", config.worker)),
        ("api", format!("{:?}", new.api) != format!("{:?}", config.api)),
        ("webhooks", format!("{:?}", new.webhooks) != format!("{:?}", config.webhooks)),
        ("schedule", format!("{:?}", new.schedule) != format!("{:?}", config.schedule)),
        ("notify", format!("{:?}", new.notify) != format!("{:?}", config.notify)),
        ("intake", format!("{:?}", new.intake) != format!("{:?}", config.intake)),
        ("time_zone", new.time_zone != config.time_zone),
    ]
    .into_iter()
    .filter_map(|(name, changed)| changed.then_some(name))
    .collect();
    if !restart_needed.is_empty() {
        warn!(sections = ?restart_needed, "SIGHUP: these settings changed and apply at the next restart");
    }
}
