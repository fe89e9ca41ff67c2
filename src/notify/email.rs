//! E-mail over SMTP with lettre: a pooled async transport over rustls (plain `smtp://` for tests, STARTTLS
//! with `?tls=required`, implicit TLS with `smtps://`), the password read from a credential file, and each
//! message carrying its notification's stable Message-ID; or, with `maildir:PATH`, each message written whole
//! into a Maildir ([`super::files`]) for a machine without a mail server.
//!
//! What a server answered is never kept beyond its codes: replies quote addresses and sometimes the message.

use std::time::Duration;

use lettre::message::header::{HeaderName, HeaderValue};
use lettre::message::{Attachment, Mailbox, MultiPart, SinglePart, header};
use lettre::transport::smtp::PoolConfig;
use lettre::transport::smtp::authentication::Credentials as SmtpCredentials;
use lettre::{Address, AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use super::credentials::Credentials;
use super::files::Maildir;
use super::privacy::mask_password;
use super::templates::EmailContent;
use super::{Delivery, NotifyConfigError};
use crate::config::{EmailConfig, MAILDIR_SCHEME};
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

/// Where messages go.
enum Transport {
    Smtp(AsyncSmtpTransport<Tokio1Executor>),
    Maildir(Maildir),
}

pub struct EmailSender {
    transport: Transport,
    from: Mailbox,
    reply_to: Option<Mailbox>,
    html: bool,
    /// The server or the Maildir, for logs and `check-config` (the password masked).
    endpoint: String,
}

impl EmailSender {
    pub fn new(config: &EmailConfig, credentials: &Credentials) -> Result<EmailSender, NotifyConfigError> {
        let endpoint = mask_password(&config.url);
        let transport = match config.url.strip_prefix(MAILDIR_SCHEME) {
            Some(dir) => Transport::Maildir(Maildir::new(dir.into())),
            None => Transport::Smtp(Self::smtp(config, credentials, &endpoint)?),
        };
        let from: Mailbox =
            config.from.parse().map_err(|error| NotifyConfigError::EmailFrom { from: config.from.clone(), error })?;
        let reply_to = config
            .reply_to
            .as_deref()
            .map(|r| {
                r.parse::<Mailbox>().map_err(|error| NotifyConfigError::EmailReplyTo { reply_to: r.into(), error })
            })
            .transpose()?;
        Ok(EmailSender { transport, from, reply_to, html: config.html, endpoint })
    }

    fn smtp(
        config: &EmailConfig,
        credentials: &Credentials,
        endpoint: &str,
    ) -> Result<AsyncSmtpTransport<Tokio1Executor>, NotifyConfigError> {
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::from_url(&config.url)
            .map_err(|error| NotifyConfigError::EmailUrl { endpoint: endpoint.into(), error })?;
        match (&config.username, &config.password_file) {
            (Some(user), Some(file)) => {
                let password = credentials.read(file).map_err(|e| NotifyConfigError::EmailPasswordFile(Box::new(e)))?;
                builder = builder.credentials(SmtpCredentials::new(user.clone(), password));
            }
            (Some(_), None) => return Err(NotifyConfigError::EmailUsernameWithoutPassword),
            (None, Some(_)) => return Err(NotifyConfigError::EmailPasswordWithoutUsername),
            (None, None) => {}
        }
        Ok(builder
            .timeout(Some(Duration::from_millis(config.timeout_ms)))
            .pool_config(PoolConfig::new().max_size(config.pool_size))
            .build())
    }

    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Whether to send the HTML alternative.
    pub fn html(&self) -> bool {
        self.html
    }

    /// Builds the message of a notification: Message-ID = the notification's reference; a document, when given,
    /// goes as an attachment beside the text (multipart/mixed).
    pub fn message(
        &self,
        n: &DueNotification,
        content: &EmailContent,
        document: Option<&Document>,
    ) -> Result<Message, Delivery> {
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
        let built = match (&content.html, document) {
            (Some(html), None) => {
                builder.multipart(MultiPart::alternative_plain_html(content.text.clone(), html.clone()))
            }
            (None, None) => builder.singlepart(SinglePart::plain(content.text.clone())),
            (html, Some(document)) => {
                let body = match html {
                    Some(html) => MultiPart::mixed()
                        .multipart(MultiPart::alternative_plain_html(content.text.clone(), html.clone())),
                    None => MultiPart::mixed().singlepart(SinglePart::plain(content.text.clone())),
                };
                builder.multipart(body.singlepart(document.part()))
            }
        };
        built.map_err(|e| Delivery::Transient { error: format!("cannot build the message: {e}"), retry_after: None })
    }

    /// Sends one message; the server's answer decides transient or permanent.
    pub async fn send(&self, n: &DueNotification, content: &EmailContent, document: Option<&Document>) -> Delivery {
        let message = match self.message(n, content, document) {
            Ok(m) => m,
            Err(d) => return d,
        };
        match &self.transport {
            Transport::Smtp(smtp) => match smtp.send(message).await {
                Ok(response) => Delivery::Sent { provider_id: Some(accepted(&response)) },
                Err(e) => classify(&e),
            },
            Transport::Maildir(maildir) => match maildir.deliver(&n.reference, &message.formatted()).await {
                Ok(name) => Delivery::Sent { provider_id: Some(format!("maildir {name}")) },
                Err(e) => Delivery::Transient { error: e.to_string(), retry_after: None },
            },
        }
    }
}

/// A PDF sent with an e-mail (the esito of the request the chiusura is about).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Document {
    pub filename: String,
    pub pdf: Vec<u8>,
}

impl Document {
    fn part(&self) -> SinglePart {
        let pdf = header::ContentType::parse("application/pdf").unwrap_or(header::ContentType::TEXT_PLAIN);
        Attachment::new(self.filename.clone()).body(self.pdf.clone(), pdf)
    }
}

/// What is kept of a server's acceptance: its codes and queue id (`250 2.0.0 queued as 4XyZ`), nothing it
/// may have quoted.
fn accepted(response: &lettre::transport::smtp::response::Response) -> String {
    let text = response.message().collect::<Vec<_>>().join(" ");
    let mut out = response.code().to_string();
    if let Some(enhanced) = enhanced_status(&text) {
        out.push(' ');
        out.push_str(&enhanced);
    }
    let words: Vec<&str> = text.split_whitespace().collect();
    let queue_id = words
        .windows(3)
        .find(|w| w[0].eq_ignore_ascii_case("queued") && w[1].eq_ignore_ascii_case("as"))
        .map(|w| w[2])
        .filter(|id| id.len() <= 64 && id.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)));
    if let Some(id) = queue_id {
        out.push_str(" queued as ");
        out.push_str(id);
    }
    out
}

/// The enhanced status code (RFC 3463) opening a reply's text: `5.1.1`.
fn enhanced_status(text: &str) -> Option<String> {
    let first = text.split_whitespace().next()?;
    let parts: Vec<&str> = first.split('.').collect();
    let valid = parts.len() == 3
        && ["2", "4", "5"].contains(&parts[0])
        && parts[1..].iter().all(|p| (1..=3).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit()));
    valid.then(|| first.to_string())
}

/// What an SMTP failure means, from its codes alone (the reply's text is dropped: it quotes addresses).
/// Only a refusal of the recipient's address is a bounce: an enhanced status 5.1.x about the destination
/// (not 5.1.7/5.1.8, the sender), or 550/551/553 without one. Any other 5xx — a greeting, HELO, AUTH or MAIL
/// FROM refused, relaying denied, a policy or system error — is the relay's fault, not the message's: it is
/// retried with backoff like a 4xx, and ends `dead` if it lasts. Connection failures, timeouts and TLS
/// problems are transient.
fn classify(e: &lettre::transport::smtp::Error) -> Delivery {
    let Some(code) = e.status() else {
        let error = if e.is_timeout() {
            "SMTP: tempo scaduto".to_string()
        } else if e.is_response() || e.is_client() {
            // A reply that could not be parsed: its text may be anything.
            "SMTP: risposta del server non valida".to_string()
        } else {
            // Connection, network, TLS: the local system's description (e.g. "Connection refused").
            e.to_string()
        };
        return Delivery::Transient { error, retry_after: None };
    };
    let basic = u16::from(code);
    let enhanced = std::error::Error::source(e).and_then(|s| enhanced_status(&s.to_string()));
    let codes = match &enhanced {
        Some(x) => format!("SMTP {basic} {x}"),
        None => format!("SMTP {basic}"),
    };
    let about_recipient = match enhanced.as_deref() {
        Some(x) => x.starts_with("5.1.") && !matches!(x, "5.1.7" | "5.1.8"),
        None => matches!(basic, 550 | 551 | 553),
    };
    if e.is_permanent() && about_recipient {
        Delivery::Permanent { error: format!("{codes}: indirizzo del destinatario rifiutato"), bounce: true }
    } else if e.is_permanent() {
        let error = format!("{codes}: il server rifiuta l'invio (errore del server, non del destinatario)");
        Delivery::Transient { error, retry_after: None }
    } else {
        Delivery::Transient { error: format!("{codes}: errore temporaneo del server"), retry_after: None }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enhanced_codes_are_read_and_nothing_else() {
        assert_eq!(enhanced_status("5.1.1 <a@b.it>: user unknown").as_deref(), Some("5.1.1"));
        assert_eq!(enhanced_status("2.0.0 Ok: queued as 4Xy"), Some("2.0.0".into()));
        assert_eq!(enhanced_status("<a@b.it> 5.1.1"), None);
        assert_eq!(enhanced_status("1.2.3.4 x"), None);
    }
}
