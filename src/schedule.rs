//! Cron-scheduled maintenance: the lease reaper, the SLA escalation of referred requests (day 20 warning,
//! day 30 breach) and the retention purge (off by default). Standard 5-field crontab expressions (croner)
//! in a time zone per job. The next instant of each job is kept in the database: a restart neither skips
//! nor repeats a run, a run missed while the daemon was down is made up once, and with several instances
//! each instant runs once (compare-and-set claim).

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use chrono::{TimeZone, Utc};
use chrono_tz::Tz;
use croner::Cron;
use tokio::sync::watch;
use tracing::{error, info};

use crate::config::{JobConfig, ScheduleConfig};
use crate::domain::time::Millis;
use crate::health::Health;
use crate::store::{Store, StoreError};
use crate::telemetry::metrics;
use crate::worker::now_ms;

/// What a job does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Work {
    LeaseReaper,
    SlaEscalation,
    RetentionPurge { older_than_days: u32 },
}

/// A job with its schedule.
#[derive(Debug, Clone)]
pub struct Job {
    pub name: &'static str,
    pub work: Work,
    cron: Cron,
    tz: Tz,
}

/// Parses a job's schedule; the error names what is wrong.
pub fn parse_schedule(cron: &str, tz: &str) -> Result<(Cron, Tz), String> {
    let c = Cron::from_str(cron).map_err(|e| format!("`{cron}` is not a 5-field crontab expression ({e})"))?;
    let z = Tz::from_str(tz).map_err(|_| format!("`{tz}` is not a time zone (e.g. Europe/Rome)"))?;
    Ok((c, z))
}

impl Job {
    /// The first scheduled instant strictly after `after`.
    pub fn next_after(&self, after: Millis) -> Option<Millis> {
        let at = self.tz.timestamp_millis_opt(after).single()?;
        self.cron.find_next_occurrence(&at, false).ok().map(|t| t.with_timezone(&Utc).timestamp_millis())
    }
}

/// The enabled jobs of the configuration.
pub fn jobs(config: &ScheduleConfig) -> Result<Vec<Job>, String> {
    let mut out = Vec::new();
    let mut add = |name: &'static str, job: &JobConfig, work: Work| -> Result<(), String> {
        if job.enabled {
            let (cron, tz) = parse_schedule(&job.cron, job.time_zone.as_deref().unwrap_or(&config.time_zone))
                .map_err(|e| format!("schedule.{name}: {e}"))?;
            out.push(Job { name, work, cron, tz });
        }
        Ok(())
    };
    add("lease_reaper", &config.lease_reaper, Work::LeaseReaper)?;
    add("sla_escalation", &config.sla_escalation, Work::SlaEscalation)?;
    add(
        "retention_purge",
        &config.retention_purge.job(),
        Work::RetentionPurge { older_than_days: config.retention_purge.older_than_days },
    )?;
    Ok(out)
}

async fn perform(store: &Store, work: Work, now: Millis) -> Result<String, StoreError> {
    Ok(match work {
        Work::LeaseReaper => format!("{} expired lease(s) given back", store.reap_leases(now).await?),
        Work::SlaEscalation => {
            let (w, b) = store.escalate_sla(now).await?;
            format!("{w} SLA warning(s), {b} breach(es)")
        }
        Work::RetentionPurge { older_than_days } => {
            let cutoff = now - i64::from(older_than_days) * 86_400_000;
            format!("{} closed request(s) purged", store.purge_closed(cutoff).await?)
        }
    })
}

/// Runs every due job once (if this instance claims it). Returns the jobs it ran.
pub async fn tick(store: &Store, jobs: &[Job], now: Millis) -> Vec<&'static str> {
    let mut ran = Vec::new();
    for job in jobs {
        let Some(first) = job.next_after(now) else { continue };
        let due = match store.cron_next(job.name, first).await {
            Ok(due) => due,
            Err(e) => {
                error!(job = job.name, error = %e, "cannot read the schedule");
                continue;
            }
        };
        if due > now {
            continue;
        }
        // Missed instants collapse into this one run; the next is the first one after now.
        let Some(next) = job.next_after(now) else { continue };
        match store.cron_claim(job.name, due, next, now).await {
            Ok(true) => {}
            Ok(false) => continue,
            Err(e) => {
                error!(job = job.name, error = %e, "cannot claim the run");
                continue;
            }
        }
        let result = perform(store, job.work, now).await;
        let error = result.as_ref().err().map(ToString::to_string);
        match &result {
            Ok(summary) => info!(job = job.name, %summary, "cron job done"),
            Err(e) => error!(job = job.name, error = %e, "cron job failed"),
        }
        metrics::cron_run(job.name, result.is_ok(), now as f64 / 1000.0);
        if let Err(e) = store.cron_done(job.name, error.as_deref(), now).await {
            error!(job = job.name, error = %e, "cannot record the run");
        }
        ran.push(job.name);
    }
    ran
}

/// The scheduler loop: a tick every second until shutdown.
pub async fn run(store: Store, jobs: Vec<Job>, health: Arc<Health>, mut stop: watch::Receiver<bool>) {
    let mut every = tokio::time::interval(Duration::from_secs(1));
    while !*stop.borrow() {
        health.beat("scheduler");
        tick(&store, &jobs, now_ms()).await;
        tokio::select! {
            _ = every.tick() => {}
            _ = stop.changed() => {}
        }
    }
    health.retire("scheduler");
}
