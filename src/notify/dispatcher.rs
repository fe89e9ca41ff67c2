//! The dispatcher: claim a batch of due outbox rows (lease + fencing token), render and send them with bounded
//! concurrency, record every result in one fenced transaction, repeat; idle, poll. Transient failures are
//! retried with exponential backoff and jitter (at least what `Retry-After` asked), until `max_attempts`.
//! Every channel's rows are claimed: those of a channel that is not configured fail at once with a reason that
//! says so (visible in `notifications list --dead`, retried with `notifications retry` once it is configured)
//! instead of waiting for ever.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use arc_swap::ArcSwap;
use tokio::sync::{Notify, Semaphore, watch};
use tokio::task::JoinSet;
use tracing::{debug, error, info, warn};

use super::email::Document;
use super::privacy::Masked;
use super::templates::{Context, TemplateError, Templates};
use super::{Channels, Delivery, load_templates};
use crate::app::questionnaire;
use crate::clock::now_ms;
use crate::config::{Config, NotifyConfig, QuestionnaireConfig};
use crate::domain::closing::RetryPolicy;
use crate::domain::event::EventKind;
use crate::domain::time::Millis;
use crate::rules::{RuleSet, TaskKind, TaskRule};
use crate::store::{DueNotification, NotificationFate, NotificationOutcome, Store, StoreError};
use crate::telemetry::metrics::NOTIFICATIONS;

/// What one batch did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct BatchStats {
    pub claimed: usize,
    pub sent: usize,
    pub retried: usize,
    pub failed: usize,
    pub dead: usize,
    /// Results not recorded because the lease had moved to another claim.
    pub stale: usize,
}

pub struct Dispatcher {
    store: Store,
    channels: Channels,
    names: Vec<&'static str>,
    templates: ArcSwap<Templates>,
    /// The running rules, for the tasks' labels.
    rules: Arc<ArcSwap<RuleSet>>,
    config: NotifyConfig,
    /// The satisfaction questionnaire whose link the chiusura e-mails of invited requesters carry.
    questionario: Option<QuestionnaireConfig>,
    message_id_domain: String,
    owner: String,
    /// Wakes an idle dispatcher.
    pub wake: Notify,
}

/// Every channel an outbox row may name.
pub const CHANNELS: [&str; 2] = ["email", "sms"];

/// The reason recorded for a row whose channel is not configured.
pub fn not_configured(channel: &str) -> String {
    match channel {
        "email" => "e-mail non configurata (notify.email)".into(),
        "sms" => "SMS non configurato (notify.sms)".into(),
        other => format!("canale `{other}` sconosciuto"),
    }
}

impl Dispatcher {
    /// The dispatcher of a configuration, or None when no channel is configured (or notifications are off).
    pub fn new(config: &Config, store: Store, rules: Arc<ArcSwap<RuleSet>>) -> anyhow::Result<Option<Arc<Dispatcher>>> {
        let notify = &config.notify;
        let names = notify.channels();
        if names.is_empty() {
            return Ok(None);
        }
        let channels = Channels::from_config(notify).context("notify")?;
        let templates = load_templates(notify)?;
        Ok(Some(Arc::new(Dispatcher {
            store,
            channels,
            names,
            templates: ArcSwap::from_pointee(templates),
            rules,
            message_id_domain: notify
                .email
                .as_ref()
                .map_or_else(|| "smart-task".into(), |e| e.message_id_domain.clone()),
            config: notify.clone(),
            questionario: config.questionario.clone(),
            owner: format!("{}/notify", config.lease_owner()),
            wake: Notify::new(),
        })))
    }

    /// The channels this dispatcher sends (it claims every channel's rows: see [`not_configured`]).
    pub fn channels(&self) -> &[&'static str] {
        &self.names
    }

    pub fn owner(&self) -> &str {
        &self.owner
    }

    /// Re-reads the templates; invalid new ones are refused and the running ones stay.
    pub fn reload_templates(&self) -> Result<(), TemplateError> {
        let fresh = load_templates(&self.config)?;
        self.templates.store(Arc::new(fresh));
        Ok(())
    }

    /// Notifications due now or in flight (those waiting for a later retry are not counted).
    pub async fn due(&self) -> Result<i64, StoreError> {
        self.store.notifications_due(&CHANNELS, now_ms()).await
    }

    /// Gives back the leases this dispatcher still holds (graceful shutdown).
    pub async fn release(&self) -> Result<u64, StoreError> {
        self.store.release_notifications(&self.owner, now_ms()).await
    }

    fn policy(&self) -> RetryPolicy {
        RetryPolicy {
            max_failures: self.config.retry.max_attempts,
            base_delay_ms: self.config.retry.base_ms,
            max_delay_ms: self.config.retry.max_ms,
        }
    }

    /// The esito PDF that goes with the chiusura e-mail to the requester; None for any other e-mail, or when it
    /// cannot be rendered (logged: the e-mail still goes, the document stays downloadable).
    async fn esito_document(&self, n: &DueNotification) -> Option<Document> {
        if n.event != EventKind::Chiusura.as_str() || n.role != "richiedente" {
            return None;
        }
        match crate::app::esito_of(&self.store, n.request_id).await {
            Ok(esito) => Some(Document {
                filename: format!("esito-{}.pdf", esito.protocollo.replace(['.', '/'], "_")),
                pdf: esito.pdf,
            }),
            Err(e) => {
                warn!(notifica = n.id, protocollo = %n.protocollo, error = %e, "the esito PDF cannot go with the chiusura e-mail: sent without it");
                None
            }
        }
    }

    /// The questionnaire link of the chiusura e-mail to an invited requester: a new one-time invitation
    /// (task, category, month of the close; nothing of the request). Made at each attempt, so the token is in
    /// the message alone and never in the outbox; an attempt that fails leaves an invitation nobody can use,
    /// which expires. None for any other e-mail, or when it cannot be made (logged: the e-mail still goes).
    async fn questionnaire_link(&self, n: &DueNotification) -> Option<String> {
        let config = self.questionario.as_ref()?;
        if n.event != EventKind::Chiusura.as_str() || n.role != "richiedente" {
            return None;
        }
        let categoria = questionnaire::category(&n.profilo_richiedente, n.categoria_intermediario.as_deref());
        if !questionnaire::invited(config, &categoria) {
            return None;
        }
        match questionnaire::invite(&self.store, config, &n.task, &categoria, n.event_at, now_ms()).await {
            Ok(invitation) => Some(invitation.link),
            Err(e) => {
                warn!(notifica = n.id, protocollo = %n.protocollo, error = %e, "no questionnaire invitation: the chiusura e-mail goes without its link");
                None
            }
        }
    }

    /// Renders and sends one notification.
    /// `task` is the running rule of the notification's task (its label, whether it is a quesito); None when
    /// the rules no longer have it.
    async fn deliver(&self, n: &DueNotification, templates: &Templates, task: Option<&TaskRule>) -> Delivery {
        let mut ctx = Context::of(n, task.map(|t| t.label.as_str()));
        let quesito = task.is_some_and(|t| t.kind == TaskKind::Quesito);
        if quesito {
            ctx.as_quesito(task.and_then(|t| n.ambito.as_ref().and_then(|a| t.ambiti.get(a))).cloned());
        }
        let not_configured = || Delivery::Permanent { error: not_configured(&n.channel), bounce: false };
        let template_failed = |e: TemplateError| {
            error!(notifica = n.id, protocollo = %n.protocollo, evento = %n.event, error = %e, "template failed: fix it and reload (SIGHUP)");
            Delivery::Transient { error: e.to_string(), retry_after: None }
        };
        match n.channel.as_str() {
            "email" => {
                let Some(email) = &self.channels.email else { return not_configured() };
                ctx.questionario_link = self.questionnaire_link(n).await;
                match templates.render_email(&ctx, email.html()) {
                    // A quesito's answer is the e-mail itself: it has no esito document.
                    Ok(content) => {
                        let document = if quesito { None } else { self.esito_document(n).await };
                        email.send(n, &content, document.as_ref()).await
                    }
                    Err(e) => template_failed(e),
                }
            }
            "sms" => {
                let Some(sms) = &self.channels.sms else { return not_configured() };
                match templates.render_sms(&ctx) {
                    Ok(text) => {
                        let (delivery, cut) = sms.send(n, &text).await;
                        if cut {
                            warn!(notifica = n.id, protocollo = %n.protocollo, evento = %n.event, "SMS text cut to fit notify.sms.max_segments");
                        }
                        delivery
                    }
                    Err(e) => template_failed(e),
                }
            }
            _ => not_configured(),
        }
    }

    /// What a delivery means for the row: transient failures back off (at least `Retry-After`) until the
    /// attempts run out.
    fn fate(&self, n: &DueNotification, delivery: Delivery, now: Millis) -> NotificationFate {
        match delivery {
            Delivery::Sent { provider_id } => NotificationFate::Sent { provider_id },
            Delivery::Permanent { error, bounce } => NotificationFate::Failed { error, bounce },
            Delivery::Transient { error, .. } if n.attempts >= self.config.retry.max_attempts => {
                NotificationFate::Dead { error: format!("{error} (after {} attempts)", n.attempts) }
            }
            Delivery::Transient { error, retry_after } => {
                let backoff = self.policy().delay_ms(n.attempts, rand::random::<f64>());
                let asked = retry_after.map_or(0, |d| d.as_millis().min(86_400_000) as i64);
                NotificationFate::Retry { at: now + backoff.max(asked), error }
            }
        }
    }

    /// Claims, sends and records one batch.
    pub async fn run_batch(self: &Arc<Self>) -> Result<BatchStats, StoreError> {
        let d = &self.config.dispatcher;
        let lease_ms = (d.lease_seconds * 1000) as i64;
        let claimed = self
            .store
            .claim_notifications(&self.owner, &CHANNELS, d.batch_size, lease_ms, now_ms(), &self.message_id_domain)
            .await?;
        if claimed.is_empty() {
            return Ok(BatchStats::default());
        }
        let started = std::time::Instant::now();
        let templates = self.templates.load_full();
        let rules = self.rules.load_full();
        let permits = Arc::new(Semaphore::new(d.concurrency));
        let mut sending = JoinSet::new();
        for n in claimed {
            let Ok(permit) = permits.clone().acquire_owned().await else { break };
            let me = self.clone();
            let templates = templates.clone();
            let task = rules.get(&n.task).cloned();
            sending.spawn(async move {
                let delivery = me.deliver(&n, &templates, task.as_deref()).await;
                drop(permit);
                (n, delivery)
            });
        }
        let mut results = Vec::new();
        while let Some(done) = sending.join_next().await {
            match done {
                Ok(r) => results.push(r),
                // A panicking send leaves its row leased: it is taken over when the lease expires.
                Err(e) => error!(error = %e, "a notification send task failed"),
            }
        }
        let now = now_ms();
        let mut stats = BatchStats { claimed: results.len(), ..Default::default() };
        let mut outcomes = Vec::with_capacity(results.len());
        // Transient failures usually share their cause (the server is down): one line per cause and batch.
        let mut retried: std::collections::BTreeMap<(String, String), (usize, i64)> = Default::default();
        for (n, delivery) in results {
            let fate = self.fate(&n, delivery, now);
            let (id, protocollo, evento, canale, destinatario) =
                (n.id, n.protocollo.as_str(), n.event.as_str(), n.channel.as_str(), Masked(&n.recipient));
            match &fate {
                NotificationFate::Sent { .. } => {
                    stats.sent += 1;
                    info!(notifica = id, protocollo, evento, canale, %destinatario, tentativo = n.attempts, "notifica inviata");
                }
                NotificationFate::Retry { at, error } => {
                    stats.retried += 1;
                    debug!(notifica = id, protocollo, evento, canale, %destinatario, tentativo = n.attempts,
                           errore = %error, tra_ms = at - now, "notifica non inviata: nuovo tentativo");
                    let entry = retried.entry((n.channel.clone(), error.clone())).or_insert((0, i64::MAX));
                    entry.0 += 1;
                    entry.1 = entry.1.min(at - now);
                }
                NotificationFate::Failed { error, .. } => {
                    stats.failed += 1;
                    warn!(notifica = id, protocollo, evento, canale, %destinatario, errore = %error,
                          "notifica rifiutata (errore permanente): vedi `notifications list --dead`");
                }
                NotificationFate::Dead { error } => {
                    stats.dead += 1;
                    error!(notifica = id, protocollo, evento, canale, %destinatario, tentativi = n.attempts,
                           errore = %error, "notifica abbandonata: vedi `notifications list --dead`");
                }
            }
            let outcome = match &fate {
                NotificationFate::Sent { .. } => "sent",
                NotificationFate::Retry { .. } => "retried",
                NotificationFate::Failed { .. } => "failed",
                NotificationFate::Dead { .. } => "dead",
            };
            metrics::counter!(NOTIFICATIONS, "channel" => n.channel.clone(), "outcome" => outcome).increment(1);
            outcomes.push(NotificationOutcome { id: n.id, token: n.token, fate });
        }
        for ((canale, errore), (notifiche, tra_ms)) in retried {
            warn!(canale, notifiche, errore, tra_ms, "notifiche non inviate: nuovo tentativo");
        }
        let report = self.store.record_notifications(&outcomes, self.config.bounces.flag_contacts, now_ms()).await?;
        stats.stale = report.stale.len();
        if !report.stale.is_empty() {
            warn!(notifiche = ?report.stale, "lease lost while sending: results not recorded (another claim owns them)");
        }
        if !report.flagged_contacts.is_empty() {
            info!(contatti = ?report.flagged_contacts, "contacts flagged ANOMALO after a permanent bounce");
        }
        debug!(?stats, elapsed_ms = started.elapsed().as_millis() as u64, "notification batch done");
        Ok(stats)
    }

    /// Runs batches until shutdown; idle, polls every `poll_interval_ms` (or when woken).
    pub async fn run(self: Arc<Self>, mut shutdown: watch::Receiver<bool>, health: Arc<crate::health::Health>) {
        let poll = Duration::from_millis(self.config.dispatcher.poll_interval_ms);
        let mut failures = 0u32;
        while !*shutdown.borrow() {
            health.beat("dispatcher");
            match self.run_batch().await {
                Ok(stats) if stats.claimed > 0 => {
                    failures = 0;
                    continue;
                }
                Ok(_) => failures = 0,
                Err(e) => {
                    failures += 1;
                    error!(error = %e, "notification batch failed; retrying");
                }
            }
            let backoff = poll * 2u32.saturating_pow(failures.min(6));
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = self.wake.notified() => {}
                _ = shutdown.changed() => {}
            }
        }
        health.retire("dispatcher");
        debug!(owner = %self.owner, "dispatcher stopped");
    }
}
