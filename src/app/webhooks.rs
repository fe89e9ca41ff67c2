//! Webhook subscriptions of integrators: create (a generated id and signing secret, the secret shown once),
//! list (never the secret), delete. A subscription starts after the feed's current end (or a cursor the
//! integrator gives, to resume from what it read of `GET /eventi`); `notify::webhooks` delivers it.

use std::net::IpAddr;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ring::rand::{SecureRandom, SystemRandom};

use super::feeds::{decode_cursor, encode_cursor};
use super::{Actor, AppError};
use crate::domain::request::FieldError;
use crate::domain::time::Millis;
use crate::intake::IntakeError;
use crate::store::{NewWebhook, Store, WebhookView};

/// The longest URL accepted.
pub const MAX_URL_CHARS: usize = 2048;
/// The longest description accepted.
pub const MAX_DESCRIPTION_CHARS: usize = 200;
/// Subscriptions per integrator.
pub const MAX_SUBSCRIPTIONS: usize = 20;
/// The prefix of a signing secret (Standard Webhooks); the rest is base64 of 32 random bytes.
pub const SECRET_PREFIX: &str = "whsec_";

/// A new subscription as its integrator sees it once: the only time the secret is shown.
#[derive(Debug, Clone)]
pub struct Created {
    pub id: String,
    pub secret: String,
    /// The feed cursor the subscription starts after.
    pub cursor: String,
}

fn integrator(actor: &Actor) -> Result<&str, AppError> {
    match actor {
        Actor::Integratore { id } => Ok(id),
        _ => Err(AppError::Forbidden("webhooks are for integrators".into())),
    }
}

fn invalid(field: &str, problem: impl Into<String>) -> AppError {
    AppError::Invalid(vec![IntakeError {
        source_name: "body".into(),
        position: String::new(),
        index: None,
        error: FieldError::new(field, problem),
    }])
}

/// Whether a receiver's URL is acceptable: absolute https (http only for a loopback host when `allow_http_loopback`),
/// no credentials in it, within [`MAX_URL_CHARS`]. The problem in words otherwise (never echoing the URL).
pub fn check_url(text: &str, allow_http_loopback: bool) -> Result<(), String> {
    if text.chars().count() > MAX_URL_CHARS {
        return Err(format!("longer than {MAX_URL_CHARS} characters"));
    }
    let url = reqwest::Url::parse(text).map_err(|_| "not an absolute URL".to_string())?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err("credentials do not belong in the URL".into());
    }
    let loopback = match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip).is_loopback(),
        Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip).is_loopback(),
        None => return Err("the URL has no host".into()),
    };
    match url.scheme() {
        "https" => Ok(()),
        "http" if allow_http_loopback && loopback => Ok(()),
        "http" if loopback => {
            Err("http is accepted only for loopback hosts with `webhooks.allow_http_loopback`".into())
        }
        _ => Err("the URL must be https".into()),
    }
}

/// Random bytes from the operating system.
fn random<const N: usize>() -> Result<[u8; N], AppError> {
    let mut bytes = [0u8; N];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| AppError::Store(crate::store::StoreError::Corrupt("no random bytes from the system".into())))?;
    Ok(bytes)
}

/// Subscribes `url` for the calling integrator, starting after `after` (a feed cursor) or the feed's end.
pub async fn create(
    store: &Store,
    actor: &Actor,
    url: &str,
    descrizione: Option<&str>,
    after: Option<&str>,
    allow_http_loopback: bool,
    now: Millis,
) -> Result<Created, AppError> {
    let who = integrator(actor)?;
    check_url(url, allow_http_loopback).map_err(|p| invalid("url", p))?;
    let descrizione = descrizione.map(str::trim).filter(|d| !d.is_empty());
    if let Some(d) = descrizione
        && (d.chars().count() > MAX_DESCRIPTION_CHARS || d.chars().any(char::is_control))
    {
        return Err(invalid(
            "descrizione",
            format!("at most {MAX_DESCRIPTION_CHARS} characters, no control characters"),
        ));
    }
    let start = match after {
        Some(c) => decode_cursor(c).ok_or_else(|| invalid("cursore", "not a cursor of the event feed"))?,
        None => store.feed_end().await?,
    };
    if store.webhooks_of(who).await?.len() >= MAX_SUBSCRIPTIONS {
        return Err(AppError::Store(crate::store::StoreError::Refused(format!(
            "at most {MAX_SUBSCRIPTIONS} subscriptions per integrator: delete one first"
        ))));
    }
    let id = crate::domain::hex_prefix(&random::<16>()?, 16);
    let secret = format!("{SECRET_PREFIX}{}", STANDARD.encode(random::<32>()?));
    let new = NewWebhook {
        id: id.clone(),
        integrator: who.to_string(),
        url: url.to_string(),
        descrizione: descrizione.map(str::to_string),
        secret: secret.clone(),
        start,
    };
    store.create_webhook(&new, now).await?;
    Ok(Created { id, secret, cursor: encode_cursor(start) })
}

/// The calling integrator's subscriptions.
pub async fn list(store: &Store, actor: &Actor) -> Result<Vec<WebhookView>, AppError> {
    Ok(store.webhooks_of(integrator(actor)?).await?)
}

/// Deletes one of the calling integrator's subscriptions (another's is not found).
pub async fn delete(store: &Store, actor: &Actor, id: &str) -> Result<(), AppError> {
    let who = integrator(actor)?;
    if store.delete_webhook(who, id).await? {
        Ok(())
    } else {
        Err(AppError::NotFound("no subscription with that id".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_https_or_loopback_http_when_allowed() {
        assert!(check_url("https://archivi.example.it/hook?k=1", false).is_ok());
        assert!(check_url("http://127.0.0.1:8080/x", true).is_ok());
        assert!(check_url("http://[::1]:8080/x", true).is_ok());
        assert!(check_url("http://localhost/x", true).is_ok());
        assert!(check_url("http://127.0.0.1:8080/x", false).is_err());
        assert!(check_url("http://example.com/x", true).is_err());
        assert!(check_url("ftp://127.0.0.1/x", true).is_err());
        assert!(check_url("https://u:p@example.com/x", false).is_err());
        assert!(check_url("/relative", false).is_err());
        assert!(check_url(&format!("https://e.it/{}", "a".repeat(MAX_URL_CHARS)), false).is_err());
    }
}
