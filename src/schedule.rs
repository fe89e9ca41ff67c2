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
    DailySummary,
}

/// A job with its schedule.
#[derive(Debug, Clone)]
pub struct Job {
    pub name: &'static str,
    pub work: Work,
    cron: Cron,
    tz: Tz,
}

/// What is wrong with the `schedule` section, or with the daily summary's mailer.
#[derive(Debug, thiserror::Error)]
pub enum ScheduleError {
    #[error("`{cron}` is not a 5-field crontab expression ({error})")]
    Cron { cron: String, error: croner::errors::CronError },
    #[error("`{0}` is not a time zone (e.g. Europe/Rome)")]
    TimeZone(String),
    /// A job's schedule, naming its key (`schedule.lease_reaper: ...`).
    #[error("schedule.{name}: {error}")]
    Job { name: &'static str, error: Box<ScheduleError> },
    #[error("schedule.daily_summary: `to` must be the e-mail address of the operations team")]
    SummaryRecipient,
    /// The daily summary's e-mail sender (`notify.email`).
    #[error("{0}")]
    Mailer(crate::notify::NotifyConfigError),
}

/// Parses a job's schedule; the error names what is wrong.
pub fn parse_schedule(cron: &str, tz: &str) -> Result<(Cron, Tz), ScheduleError> {
    let c = Cron::from_str(cron).map_err(|error| ScheduleError::Cron { cron: cron.into(), error })?;
    let z = Tz::from_str(tz).map_err(|_| ScheduleError::TimeZone(tz.into()))?;
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
pub fn jobs(config: &ScheduleConfig) -> Result<Vec<Job>, ScheduleError> {
    let mut out = Vec::new();
    let mut add = |name: &'static str, job: &JobConfig, work: Work| -> Result<(), ScheduleError> {
        if job.enabled {
            let (cron, tz) = parse_schedule(&job.cron, job.time_zone.as_deref().unwrap_or(&config.time_zone))
                .map_err(|e| ScheduleError::Job { name, error: Box::new(e) })?;
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
    let summary = &config.daily_summary;
    if summary.enabled && summary.to.as_deref().and_then(crate::domain::validators::email).is_none() {
        return Err(ScheduleError::SummaryRecipient);
    }
    let summary_job =
        JobConfig { cron: summary.cron.clone(), time_zone: summary.time_zone.clone(), enabled: summary.enabled };
    add("daily_summary", &summary_job, Work::DailySummary)?;
    Ok(out)
}

/// Sends the daily summary: counts only, never personal data. The Message-ID is stable per day, so a copy
/// sent again after a failure is recognisable.
async fn send_summary(store: &Store, mail: &Mailer, now: Millis) -> Result<String, String> {
    let day = crate::domain::time::iso_date(now);
    let s = store.ops_snapshot(now).await.map_err(|e| e.to_string())?;
    let last_day = store.decisions_since(now - 86_400_000).await.map_err(|e| e.to_string())?;
    let mut text = format!("Riepilogo Smart-Task del {day} (ultime 24 ore)\n\nDecisioni:\n");
    for (outcome, n) in &last_day {
        text.push_str(&format!("  {outcome}: {n}\n"));
    }
    text.push_str(&format!(
        "\nCoda:\n  aperte: {}\n  in carico: {}\n  in attesa di un operatore: {}\n  chiuse in totale: {}\n  richiesta aperta più vecchia: {:.0} minuti\n\nTermini (pratiche rinviate alla sede):\n  oltre 20 giorni: {}\n  oltre 30 giorni: {}\n\nNotifiche non recapitabili: {}\n",
        s.counts.aperte,
        s.counts.in_carico,
        s.counts.sospese,
        s.counts.chiuse,
        s.oldest_open_age_s / 60.0,
        s.sla_warning,
        s.sla_breach,
        s.dead_notifications
    ));
    let reference = format!("<riepilogo-{day}@{}>", mail.domain);
    let n = crate::store::DueNotification {
        id: 0,
        token: 0,
        request_id: 0,
        event: "riepilogo_giornaliero".into(),
        channel: "email".into(),
        recipient: mail.to.clone(),
        role: "operazioni".into(),
        attempts: 1,
        reference,
        protocollo: String::new(),
        task: String::new(),
        sede: String::new(),
        sede_denominazione: None,
        sede_email: None,
        event_detail: serde_json::Value::Null,
        event_at: now,
    };
    let content = crate::notify::templates::EmailContent {
        subject: format!("Smart-Task: riepilogo del {day}"),
        text,
        html: None,
    };
    match mail.sender.send(&n, &content).await {
        crate::notify::Delivery::Sent { .. } => Ok(format!("daily summary of {day} sent")),
        other => Err(format!("daily summary not sent: {other:?}")),
    }
}

/// How the daily summary is sent.
pub struct Mailer {
    pub sender: crate::notify::email::EmailSender,
    pub to: String,
    pub domain: String,
}

impl Mailer {
    /// The summary's mailer, when the summary is enabled.
    pub fn from_config(config: &crate::config::Config) -> Result<Option<Mailer>, ScheduleError> {
        let (Some(to), Some(email), true) = (
            config.schedule.daily_summary.to.clone(),
            config.notify.email.as_ref(),
            config.schedule.daily_summary.enabled,
        ) else {
            return Ok(None);
        };
        let credentials = crate::notify::credentials::Credentials::new(config.notify.credentials_dir.as_deref());
        let sender = crate::notify::email::EmailSender::new(email, &credentials).map_err(ScheduleError::Mailer)?;
        Ok(Some(Mailer { sender, to, domain: email.message_id_domain.clone() }))
    }
}

async fn perform(store: &Store, work: Work, now: Millis, mail: Option<&Mailer>) -> Result<String, String> {
    if work == Work::DailySummary {
        return match mail {
            Some(m) => send_summary(store, m, now).await,
            None => Err("the daily summary has no mailer (notify.email)".into()),
        };
    }
    perform_store(store, work, now).await.map_err(|e| e.to_string())
}

async fn perform_store(store: &Store, work: Work, now: Millis) -> Result<String, StoreError> {
    Ok(match work {
        Work::DailySummary => String::new(),
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
pub async fn tick(store: &Store, jobs: &[Job], now: Millis, mail: Option<&Mailer>) -> Vec<&'static str> {
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
        let result = perform(store, job.work, now, mail).await;
        if result.is_err() && job.work == Work::DailySummary {
            // A summary that could not be sent is tried again in five minutes, not tomorrow.
            let _ = store.cron_claim(job.name, next, now + 300_000, now).await;
        }
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
pub async fn run(
    store: Store,
    jobs: Vec<Job>,
    mail: Option<Mailer>,
    health: Arc<Health>,
    mut stop: watch::Receiver<bool>,
) {
    metrics::cron_jobs(jobs.iter().map(|j| j.name));
    let mut every = tokio::time::interval(Duration::from_secs(1));
    while !*stop.borrow() {
        health.beat("scheduler");
        tick(&store, &jobs, now_ms(), mail.as_ref()).await;
        tokio::select! {
            _ = every.tick() => {}
            _ = stop.changed() => {}
        }
    }
    health.retire("scheduler");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_errors_name_the_job_and_the_value() {
        assert_eq!(
            parse_schedule("0 3 * *", "UTC").unwrap_err().to_string().split(" (").next(),
            Some("`0 3 * *` is not a 5-field crontab expression")
        );
        assert_eq!(
            parse_schedule("0 3 * * *", "Mars/Olympus").unwrap_err().to_string(),
            "`Mars/Olympus` is not a time zone (e.g. Europe/Rome)"
        );
        let e = ScheduleError::Job { name: "lease_reaper", error: Box::new(ScheduleError::TimeZone("X".into())) };
        assert_eq!(e.to_string(), "schedule.lease_reaper: `X` is not a time zone (e.g. Europe/Rome)");
    }
}
