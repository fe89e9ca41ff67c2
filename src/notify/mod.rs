//! Notifications: the outbox dispatcher and its channels.
//!
//! Outbox rows are written in the transaction of the event that causes them (store); the [`Dispatcher`]
//! claims due rows with a lease and a fencing token, renders them ([`templates`]), sends them by e-mail
//! ([`email`], SMTP with lettre) or SMS ([`sms`], an HTTP gateway described in YAML) — or writes them as files
//! ([`files`]: a Maildir, a text file per SMS) where no server is configured —, and records each result in
//! one fenced transaction per batch: sent (never sent again), retried with backoff, failed (permanent: a
//! bounce may flag the contact on file) or dead (attempts exhausted). Delivery is at least once: a crash
//! between sending and recording resends with the same Message-ID / gateway reference, so the copy can be
//! recognised downstream. A row of a channel that is not configured fails at once, saying so (it can be retried
//! once the channel is configured). Recipients are masked in logs ([`privacy`]); bodies and servers' answers
//! are never logged nor stored, only their codes.

pub mod credentials;
pub mod dispatcher;
pub mod email;
pub mod files;
pub mod privacy;
pub mod segments;
pub mod sms;
pub mod templates;
pub mod webhooks;

use std::path::PathBuf;
use std::time::Duration;

pub use dispatcher::{BatchStats, Dispatcher};

use crate::config::NotifyConfig;
use credentials::Credentials;
use email::EmailSender;
use sms::SmsSender;
use templates::Templates;

/// What a channel made of one notification.
#[derive(Debug, Clone, PartialEq)]
pub enum Delivery {
    /// Accepted by the server or gateway, with what it answered (queue id, message id).
    Sent { provider_id: Option<String> },
    /// Worth trying again (connection refused or timed out, SMTP 4xx, HTTP 429/5xx), not before `retry_after`
    /// when the gateway said so.
    Transient { error: String, retry_after: Option<Duration> },
    /// Will not succeed as it is (SMTP 5xx, HTTP 4xx); `bounce`: the address or number itself was refused.
    Permanent { error: String, bounce: bool },
}

/// Installs ring as the process's rustls crypto provider (reqwest is built without one); later calls are
/// no-ops. The only TLS stack in the binary is rustls on ring: no OpenSSL, no aws-lc.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// What is wrong with the notification channels' configuration or their credentials. The messages name the
/// configuration key (or the credential) at fault.
#[derive(Debug, thiserror::Error)]
pub enum NotifyConfigError {
    #[error("credential `{}`: expected a name or an absolute path", .0.display())]
    CredentialName(PathBuf),
    #[error(
        "credential `{}`: neither ${} nor notify.credentials_dir is set",
        .0.display(),
        credentials::CREDENTIALS_DIRECTORY_ENV
    )]
    CredentialNoDirectory(PathBuf),
    #[error("credential `{}` is not in {}", .name.display(), credentials::display_dirs(.dirs))]
    CredentialMissing { name: PathBuf, dirs: Vec<PathBuf> },
    #[error("cannot read credential `{}`: {error}", .path.display())]
    CredentialUnreadable { path: PathBuf, error: std::io::Error },
    #[error("notify.email.url `{endpoint}`: {error}")]
    EmailUrl { endpoint: String, error: lettre::transport::smtp::Error },
    #[error("notify.email.password_file: {0}")]
    EmailPasswordFile(Box<NotifyConfigError>),
    #[error("notify.email: `username` needs `password_file`")]
    EmailUsernameWithoutPassword,
    #[error("notify.email: `password_file` needs `username`")]
    EmailPasswordWithoutUsername,
    #[error("notify.email.from `{from}`: {error}")]
    EmailFrom { from: String, error: lettre::address::AddressError },
    #[error("notify.email.reply_to `{reply_to}`: {error}")]
    EmailReplyTo { reply_to: String, error: lettre::address::AddressError },
    #[error("notify.sms.url (or SMART_TASK_SMS_URL) needs a gateway (`provider_file` or `provider`), not `dir`")]
    SmsUrlWithDir,
    #[error("notify.sms: give exactly one of `dir`, `provider_file` and `provider`")]
    SmsTransport,
    #[error("cannot read {}: {error}", .path.display())]
    SmsProviderUnreadable { path: PathBuf, error: std::io::Error },
    #[error("{}: {error}", .path.display())]
    SmsProviderInvalid { path: PathBuf, error: Box<serde_saphyr::Error> },
    #[error("SMS provider `{name}`: method `{method}`: expected POST or PUT")]
    SmsProviderMethod { name: String, method: String },
    #[error("SMS provider `{name}`: a form body must be a flat map")]
    SmsProviderFormBody { name: String },
    #[error("SMS provider `{name}`: `body` must be a map")]
    SmsProviderBody { name: String },
    #[error("SMS provider `{name}`: {template}: {error}")]
    SmsProviderTemplate { name: String, template: String, error: minijinja::Error },
    #[error("SMS provider `{name}`: cannot build the HTTP client: {error}")]
    SmsProviderClient { name: String, error: reqwest::Error },
}

impl NotifyConfigError {
    /// A credential that is missing or unreadable here (it may exist where the daemon runs), as opposed to a
    /// configuration that cannot work anywhere.
    pub fn is_credential(&self) -> bool {
        match self {
            NotifyConfigError::CredentialName(_)
            | NotifyConfigError::CredentialNoDirectory(_)
            | NotifyConfigError::CredentialMissing { .. }
            | NotifyConfigError::CredentialUnreadable { .. } => true,
            NotifyConfigError::EmailPasswordFile(e) => e.is_credential(),
            _ => false,
        }
    }
}

/// The configured channels, ready to send.
pub struct Channels {
    pub email: Option<EmailSender>,
    pub sms: Option<SmsSender>,
}

impl Channels {
    pub fn from_config(config: &NotifyConfig) -> Result<Channels, NotifyConfigError> {
        install_crypto_provider();
        let credentials = Credentials::new(config.credentials_dir.as_deref());
        let email = match (&config.email, config.enabled) {
            (Some(e), true) => Some(EmailSender::new(e, &credentials)?),
            _ => None,
        };
        let sms = match (&config.sms, config.enabled) {
            (Some(s), true) => Some(SmsSender::new(s, credentials)?),
            _ => None,
        };
        Ok(Channels { email, sms })
    }
}

/// The templates of the configured channels.
pub fn load_templates(config: &NotifyConfig) -> Result<Templates, templates::TemplateError> {
    Templates::load(&config.templates_dir, &config.channels())
}

/// `check-config`: what the notification section configures, or what is wrong with it. Lines to print, and
/// warnings (a credential missing here may exist where the daemon runs).
pub fn check(config: &NotifyConfig) -> Result<(Vec<String>, Vec<String>), String> {
    if !config.enabled || config.channels().is_empty() {
        return Ok((vec!["notify:  off (notifications wait in the outbox)".into()], Vec::new()));
    }
    let mut lines = Vec::new();
    let mut warnings = Vec::new();
    let credentials = Credentials::new(config.credentials_dir.as_deref());
    if let Some(e) = &config.email {
        match EmailSender::new(e, &credentials) {
            Ok(sender) => lines.push(format!("  email: {} from {}", sender.endpoint(), e.from)),
            Err(problem) if problem.is_credential() => {
                warnings.push(problem.to_string());
                lines.push(format!("  email: {}", privacy::mask_password(&e.url)));
            }
            Err(problem) => return Err(problem.to_string()),
        }
    }
    if let Some(s) = &config.sms {
        let sender = SmsSender::new(s, credentials).map_err(|e| e.to_string())?;
        warnings.extend(sender.check()?);
        lines.push(format!(
            "  sms:   {}, sender {}, at most {} segment(s)",
            sender.describe(),
            s.sender,
            s.max_segments
        ));
    }
    for channel in dispatcher::CHANNELS.iter().filter(|c| !config.channels().contains(c)) {
        lines.push(format!("  {channel}: {}", dispatcher::not_configured(channel)));
    }
    let templates = load_templates(config).map_err(|e| e.to_string())?;
    lines.push(format!(
        "  templates: {} — {} events × {}",
        templates.dir().display(),
        templates::EVENTS.len(),
        config.channels().join(", ")
    ));
    let r = &config.retry;
    lines.push(format!(
        "  retries: {} attempts, backoff {} ms to {} ms; bounces flag contacts: {}",
        r.max_attempts,
        r.base_ms,
        r.max_ms,
        if config.bounces.flag_contacts { "yes" } else { "no" }
    ));
    lines.insert(0, "notify:  on".into());
    Ok((lines, warnings))
}
