//! Cron-scheduled maintenance: the lease reaper, the SLA escalation of referred requests (day 20 warning,
//! day 30 breach) and the retention purge (off by default). Standard 5-field crontab expressions (croner)
//! in a time zone per job. The next instant of each job is kept in the database: a restart neither skips
//! nor repeats a run, a run missed while the daemon was down is made up once, and with several instances
//! each instant runs once (compare-and-set claim).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tracing::{error, info};

use crate::clock::now_ms;
use crate::config::{JobKind, JobSpec};
use crate::domain::time::Millis;
use crate::health::Health;
use crate::store::{Store, StoreError};
use crate::telemetry::metrics;

/// What is wrong with the daily summary's mailer.
#[derive(Debug, thiserror::Error)]
pub enum ScheduleError {
    /// The daily summary's e-mail sender (`notify.email`).
    #[error("{0}")]
    Mailer(crate::notify::NotifyConfigError),
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
        profilo_richiedente: String::new(),
        categoria_intermediario: None,
        ambito: None,
    };
    let content = crate::notify::templates::EmailContent {
        subject: format!("Smart-Task: riepilogo del {day}"),
        text,
        html: None,
    };
    match mail.sender.send(&n, &content, None).await {
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

async fn perform(store: &Store, work: JobKind, now: Millis, mail: Option<&Mailer>) -> Result<String, String> {
    if work == JobKind::DailySummary {
        return match mail {
            Some(m) => send_summary(store, m, now).await,
            None => Err("the daily summary has no mailer (notify.email)".into()),
        };
    }
    perform_store(store, work, now).await.map_err(|e| e.to_string())
}

async fn perform_store(store: &Store, work: JobKind, now: Millis) -> Result<String, StoreError> {
    Ok(match work {
        JobKind::DailySummary => String::new(),
        JobKind::LeaseReaper => format!("{} expired lease(s) given back", store.reap_leases(now).await?),
        JobKind::SlaEscalation => {
            let (w, b) = store.escalate_sla(now).await?;
            format!("{w} SLA warning(s), {b} breach(es)")
        }
        JobKind::RetentionPurge { older_than_days } => {
            let cutoff = now - i64::from(older_than_days) * 86_400_000;
            let purged = store.purge_closed(cutoff).await?;
            let invitations = store.questionnaire_purge(&crate::domain::time::iso_date(now)).await?;
            format!("{purged} closed request(s), {invitations} expired questionnaire invitation(s) purged")
        }
    })
}

/// Runs every due job once (if this instance claims it). Returns the jobs it ran.
pub async fn tick(store: &Store, jobs: &[JobSpec], now: Millis, mail: Option<&Mailer>) -> Vec<&'static str> {
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
        let result = perform(store, job.kind, now, mail).await;
        if result.is_err() && job.kind == JobKind::DailySummary {
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
    jobs: Vec<JobSpec>,
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
