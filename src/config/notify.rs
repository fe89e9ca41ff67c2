//! The `notify` section: channels (SMTP or a Maildir, an SMS gateway or a directory), templates, retries
//! and bounces.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::{ConfigError, MAILDIR_SCHEME, base_dir};

/// The notification dispatcher: channels, templates, retries and bounces.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NotifyConfig {
    /// Off: the dispatcher does not run; notifications wait in the outbox.
    pub enabled: bool,
    /// One template per event and channel: `email/<evento>.txt` (+ `.html`), `sms/<evento>.txt`.
    pub templates_dir: PathBuf,
    /// Where credentials (`password_file`, `credential("name")` in SMS providers) are looked up when
    /// $CREDENTIALS_DIRECTORY (systemd `LoadCredential=`) is not set.
    pub credentials_dir: Option<PathBuf>,
    pub email: Option<EmailConfig>,
    pub sms: Option<SmsConfig>,
    pub retry: NotifyRetryConfig,
    pub dispatcher: DispatcherConfig,
    pub bounces: BounceConfig,
}

impl Default for NotifyConfig {
    fn default() -> Self {
        NotifyConfig {
            enabled: true,
            templates_dir: PathBuf::from("templates"),
            credentials_dir: None,
            email: None,
            sms: None,
            retry: NotifyRetryConfig::default(),
            dispatcher: DispatcherConfig::default(),
            bounces: BounceConfig::default(),
        }
    }
}

impl NotifyConfig {
    /// The channels that are configured (and so dispatched), when notifications are enabled.
    pub fn channels(&self) -> Vec<&'static str> {
        let mut out = Vec::new();
        if self.enabled && self.email.is_some() {
            out.push("email");
        }
        if self.enabled && self.sms.is_some() {
            out.push("sms");
        }
        out
    }
}

/// E-mail over SMTP.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmailConfig {
    /// `smtp://host:25` (plain: tests only), `smtp://host:587?tls=required` (STARTTLS required),
    /// `smtp://host:587?tls=opportunistic`, `smtps://host:465` (implicit TLS), or `maildir:PATH` (each message
    /// written into a Maildir, PATH relative to this file). `SMART_TASK_SMTP_URL` overrides it.
    pub url: String,
    /// The sender, e.g. `"INPS - Smart-Task <noreply.smarttask@inps.it>"`.
    pub from: String,
    #[serde(default)]
    pub reply_to: Option<String>,
    #[serde(default)]
    pub username: Option<String>,
    /// The password's file: an absolute path, or a credential name looked up in $CREDENTIALS_DIRECTORY or
    /// `notify.credentials_dir`.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// Pooled SMTP connections.
    #[serde(default = "default_smtp_pool_size")]
    pub pool_size: u32,
    #[serde(default = "default_send_timeout_ms")]
    pub timeout_ms: u64,
    /// The right-hand side of each Message-ID (`<outbox-ID@DOMAIN>`); keep it stable.
    #[serde(default = "default_message_id_domain")]
    pub message_id_domain: String,
    /// Send an HTML alternative next to the text (when the event has an `.html` template).
    #[serde(default = "default_true")]
    pub html: bool,
}

/// SMS through an HTTP gateway.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmsConfig {
    /// No gateway: each SMS is written as a text file in this directory (relative to this file)…
    #[serde(default)]
    pub dir: Option<PathBuf>,
    /// …or the gateway's description (e.g. `sms-providers/skebby.yaml`), relative to this file…
    #[serde(default)]
    pub provider_file: Option<PathBuf>,
    /// …or inline.
    #[serde(default)]
    pub provider: Option<SmsProviderConfig>,
    /// Replaces the provider's URL; `SMART_TASK_SMS_URL` replaces both.
    #[serde(default)]
    pub url: Option<String>,
    /// The sender shown to the recipient: an alias (at most 11 letters and digits) or a number.
    pub sender: String,
    /// Longer messages are cut to fit this many segments (160 GSM-7 / 70 UCS-2 characters for one).
    #[serde(default = "default_max_segments")]
    pub max_segments: u32,
}

/// An HTTP SMS gateway: where and how to post one message. String values (URL, headers, body leaves) are
/// minijinja templates over `to`, `to_digits`, `text`, `sender`, `reference`, `encoding`, `segments`, and
/// `credential("name")`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmsProviderConfig {
    pub name: String,
    pub url: String,
    /// POST (default) or PUT.
    #[serde(default = "default_http_method")]
    pub method: String,
    #[serde(default)]
    pub headers: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    pub basic_auth: Option<BasicAuthConfig>,
    /// `json` (default) or `form` (`application/x-www-form-urlencoded`, a flat map).
    #[serde(default)]
    pub content_type: SmsBodyFormat,
    /// The request body: a map whose string leaves are templates.
    pub body: serde_json::Value,
    /// Statuses that mean "accepted" (default: any 2xx).
    #[serde(default)]
    pub success_status: Vec<u16>,
    /// A JSON pointer to the provider's message id in the response (e.g. `/order_id`).
    #[serde(default)]
    pub message_id_pointer: Option<String>,
    /// Error statuses that mean "this number cannot be reached" (a bounce: the contact can be flagged).
    #[serde(default)]
    pub recipient_error_status: Vec<u16>,
    #[serde(default = "default_send_timeout_ms")]
    pub timeout_ms: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BasicAuthConfig {
    pub username: String,
    pub password: String,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SmsBodyFormat {
    #[default]
    Json,
    Form,
}

/// Retries of transient failures (connection refused or timed out, SMTP 4xx, HTTP 429/5xx): exponential
/// backoff with jitter, honouring `Retry-After`; after `max_attempts` the notification is dead.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NotifyRetryConfig {
    pub max_attempts: i64,
    pub base_ms: i64,
    pub max_ms: i64,
}

impl Default for NotifyRetryConfig {
    fn default() -> Self {
        NotifyRetryConfig { max_attempts: 8, base_ms: 30_000, max_ms: 3_600_000 }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DispatcherConfig {
    /// Notifications claimed (and recorded) per batch.
    pub batch_size: u32,
    /// Sends in flight at once.
    pub concurrency: usize,
    /// How long a claim holds a notification before another dispatcher may take it over.
    pub lease_seconds: u64,
    /// How often an idle dispatcher looks for due notifications.
    pub poll_interval_ms: u64,
}

impl Default for DispatcherConfig {
    fn default() -> Self {
        DispatcherConfig { batch_size: 32, concurrency: 4, lease_seconds: 300, poll_interval_ms: 1_000 }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BounceConfig {
    /// A permanent failure towards a contact on file flags it ANOMALO (EMAIL_HARD_BOUNCE, PEC_NON_VALIDA,
    /// SMS_NON_RECAPITABILE), which CANCELLAZIONE_CONTATTI_ANOMALI_NDR relies on.
    pub flag_contacts: bool,
}

impl Default for BounceConfig {
    fn default() -> Self {
        BounceConfig { flag_contacts: true }
    }
}

fn default_true() -> bool {
    true
}

fn default_smtp_pool_size() -> u32 {
    4
}

fn default_send_timeout_ms() -> u64 {
    30_000
}

fn default_message_id_domain() -> String {
    "smart-task".into()
}

fn default_max_segments() -> u32 {
    2
}

fn default_http_method() -> String {
    "POST".into()
}

/// Checks the `notify` section and anchors its relative paths to the file's directory.
pub(super) fn check_notify(n: &mut NotifyConfig, path: &Path) -> Result<(), ConfigError> {
    let invalid = |field, problem: String| ConfigError::Invalid { path: path.to_path_buf(), field, problem };
    let base = base_dir(path);
    for dir in [Some(&mut n.templates_dir), n.credentials_dir.as_mut()].into_iter().flatten() {
        if dir.is_relative() {
            *dir = base.join(&*dir);
        }
    }
    let mut longest_send_ms = 0;
    if let Some(e) = n.email.as_mut() {
        if let Some(dir) = e.url.strip_prefix(MAILDIR_SCHEME) {
            if dir.is_empty() {
                return Err(invalid(
                    "notify.email.url",
                    "`maildir:` needs a directory, e.g. maildir:../var/mail".into(),
                ));
            }
            e.url = format!("{}{}", MAILDIR_SCHEME, base.join(dir).display());
        } else if !(e.url.starts_with("smtp://") || e.url.starts_with("smtps://")) {
            return Err(invalid(
                "notify.email.url",
                format!(
                    "a URL of scheme `{}`: expected smtp://HOST[:PORT][?tls=required|opportunistic], smtps://HOST[:PORT] \
                     or maildir:PATH",
                    e.url.split(':').next().unwrap_or_default()
                ),
            ));
        }
        if e.pool_size == 0 || e.timeout_ms == 0 {
            return Err(invalid("notify.email", "`pool_size` and `timeout_ms` must be at least 1".into()));
        }
        if e.from.trim().is_empty() {
            return Err(invalid("notify.email.from", "the sender is empty".into()));
        }
        longest_send_ms = e.timeout_ms;
    }
    if let Some(s) = n.sms.as_mut() {
        match (&mut s.provider_file, &s.provider, &mut s.dir) {
            (Some(file), None, None) | (None, None, Some(file)) => {
                if file.is_relative() {
                    *file = base.join(&*file);
                }
            }
            (None, Some(p), None) => longest_send_ms = longest_send_ms.max(p.timeout_ms),
            _ => {
                return Err(invalid(
                    "notify.sms",
                    "give exactly one of `dir` (SMS written as files), `provider_file` and `provider`".into(),
                ));
            }
        }
        if !(1..=10).contains(&s.max_segments) {
            return Err(invalid("notify.sms.max_segments", "must be between 1 and 10".into()));
        }
        if s.sender.trim().is_empty() {
            return Err(invalid("notify.sms.sender", "the sender is empty".into()));
        }
    }
    let r = &n.retry;
    if r.max_attempts < 1 || r.base_ms < 1 || r.max_ms < r.base_ms {
        return Err(invalid(
            "notify.retry",
            "`max_attempts` and `base_ms` must be at least 1, and `max_ms` at least `base_ms`".into(),
        ));
    }
    let d = &n.dispatcher;
    if d.batch_size == 0 || d.concurrency == 0 || d.poll_interval_ms == 0 {
        return Err(invalid(
            "notify.dispatcher",
            "`batch_size`, `concurrency` and `poll_interval_ms` must be at least 1".into(),
        ));
    }
    // A batch must be able to finish within its lease, or another claim takes it over while it is sending.
    let rounds = u64::from(d.batch_size).div_ceil(d.concurrency as u64);
    if d.lease_seconds * 1000 <= rounds * longest_send_ms {
        return Err(invalid(
            "notify.dispatcher.lease_seconds",
            format!(
                "{} s is too short: a batch of {} sent {} at a time may take {} s with a send timeout of {} ms",
                d.lease_seconds,
                d.batch_size,
                d.concurrency,
                rounds * longest_send_ms / 1000,
                longest_send_ms
            ),
        ));
    }
    Ok(())
}
