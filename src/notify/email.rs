//! E-mail over SMTP with lettre: a pooled async transport over rustls (plain `smtp://` for tests, STARTTLS
//! with `?tls=required`, implicit TLS with `smtps://`), the password read from a credential file, and each
//! message carrying its notification's stable Message-ID.

use std::time::Duration;

use lettre::message::header::{HeaderName, HeaderValue};
use lettre::message::{Mailbox, MultiPart, SinglePart, header};
use lettre::transport::smtp::PoolConfig;
use lettre::transport::smtp::authentication::Credentials as SmtpCredentials;
use lettre::{Address, AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use super::Delivery;
use super::credentials::Credentials;
use super::privacy::redact;
use super::templates::EmailContent;
use crate::config::EmailConfig;
use crate::store::DueNotification;

/// RFC 3834 `Auto-Submitted: auto-generated`: auto-responders should not answer.
#[derive(Debug, Clone)]
struct AutoSubmitted;

impl header::Header for AutoSubmitted {
    fn name() -> HeaderName {
        HeaderName::new_from_ascii_str("Auto-Submitted")
    }

    fn parse(_: &str) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        Ok(AutoSubmitted)
    }

    fn display(&self) -> HeaderValue {
        HeaderValue::new(Self::name(), "auto-generated".into())
    }
}

pub struct EmailSender {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    reply_to: Option<Mailbox>,
    html: bool,
    /// The server, for logs and `check-config` (no user or password).
    endpoint: String,
}

/// `smtp://user:pass@host:25?x` without its user and password.
pub fn without_userinfo(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_string() };
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    format!("{scheme}://{host}{tail}")
}

impl EmailSender {
    pub fn new(config: &EmailConfig, credentials: &Credentials) -> Result<EmailSender, String> {
        let endpoint = without_userinfo(&config.url);
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::from_url(&config.url)
            .map_err(|e| format!("notify.email.url `{endpoint}`: {e}"))?;
        match (&config.username, &config.password_file) {
            (Some(user), Some(file)) => {
                let password = credentials.read(file).map_err(|e| format!("notify.email.password_file: {e}"))?;
                builder = builder.credentials(SmtpCredentials::new(user.clone(), password));
            }
            (Some(_), None) => return Err("notify.email: `username` needs `password_file`".into()),
            (None, Some(_)) => return Err("notify.email: `password_file` needs `username`".into()),
            (None, None) => {}
        }
        let transport = builder
            .timeout(Some(Duration::from_millis(config.timeout_ms)))
            .pool_config(PoolConfig::new().max_size(config.pool_size))
            .build();
        let from: Mailbox = config.from.parse().map_err(|e| format!("notify.email.from `{}`: {e}", config.from))?;
        let reply_to = config
            .reply_to
            .as_deref()
            .map(|r| r.parse::<Mailbox>().map_err(|e| format!("notify.email.reply_to `{r}`: {e}")))
            .transpose()?;
        Ok(EmailSender { transport, from, reply_to, html: config.html, endpoint })
    }

    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Whether to send the HTML alternative.
    pub fn html(&self) -> bool {
        self.html
    }

    /// Builds the message of a notification: Message-ID = the notification's reference.
    pub fn message(&self, n: &DueNotification, content: &EmailContent) -> Result<Message, Delivery> {
        let address: Address = n.recipient.parse().map_err(|_| Delivery::Permanent {
            error: "the recipient is not a valid e-mail address".into(),
            bounce: true,
        })?;
        let mut builder = Message::builder()
            .from(self.from.clone())
            .to(Mailbox::new(None, address))
            .subject(content.subject.clone())
            .message_id(Some(n.reference.clone()))
            .header(AutoSubmitted)
            .date_now();
        if let Some(r) = &self.reply_to {
            builder = builder.reply_to(r.clone());
        }
        let built = match &content.html {
            Some(html) => builder.multipart(MultiPart::alternative_plain_html(content.text.clone(), html.clone())),
            None => builder.singlepart(SinglePart::plain(content.text.clone())),
        };
        built.map_err(|e| Delivery::Transient { error: format!("cannot build the message: {e}"), retry_after: None })
    }

    /// Sends one message; the server's answer decides transient or permanent.
    pub async fn send(&self, n: &DueNotification, content: &EmailContent) -> Delivery {
        let message = match self.message(n, content) {
            Ok(m) => m,
            Err(d) => return d,
        };
        match self.transport.send(message).await {
            Ok(response) => Delivery::Sent {
                provider_id: Some(
                    format!("{} {}", response.code(), response.message().collect::<Vec<_>>().join(" "))
                        .chars()
                        .take(200)
                        .collect(),
                ),
            },
            Err(e) => classify(&e, &n.recipient),
        }
    }
}

/// SMTP 5xx is permanent (a bounce when it is about the mailbox: 550/551/553 or an enhanced 5.1.x status);
/// 4xx, connection failures, timeouts and TLS problems are transient.
fn classify(e: &lettre::transport::smtp::Error, recipient: &str) -> Delivery {
    let error = redact(&e.to_string(), recipient);
    if e.is_permanent() {
        let code = e.status().map(|c| c.to_string()).unwrap_or_default();
        let bounce = matches!(code.as_str(), "550" | "551" | "553") || error.contains(" 5.1.");
        Delivery::Permanent { error, bounce }
    } else {
        Delivery::Transient { error, retry_after: None }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_lose_their_password() {
        assert_eq!(without_userinfo("smtps://user:pw@mail.example.it:465"), "smtps://mail.example.it:465");
        assert_eq!(without_userinfo("smtp://localhost:2525?tls=required"), "smtp://localhost:2525?tls=required");
    }
}
