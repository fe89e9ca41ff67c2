//! Webhook delivery: one loop per instance leases subscriptions that have an event after their cursor (lease +
//! fencing token on the subscription's row, so two instances never deliver one subscription at once), POSTs
//! each one's next feed item — the same JSON as `GET /eventi` — signed as Standard Webhooks do, and records
//! the outcome fenced by the lease: a 2xx moves the cursor past the event (at least once, in feed order); a
//! failure is retried with exponential backoff and jitter (at least what `Retry-After` asks) until
//! `webhooks.max_attempts`, then the event becomes a dead letter (ids, attempts, last status) and the cursor
//! moves on. Logs carry subscription and event ids and status codes only: never URLs, bodies or answers.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;
use tracing::{debug, error, info, warn};

use crate::app::feeds::FeedItem;
use crate::app::webhooks::SECRET_PREFIX;
use crate::clock::now_ms;
use crate::config::{Config, WebhooksConfig};
use crate::domain::closing::RetryPolicy;
use crate::store::{DueWebhook, FeedSource, Store, StoreError};
use crate::telemetry::metrics::WEBHOOK_DELIVERIES;

/// Subscriptions leased per round (each delivered concurrently, one event each).
const CLAIM: i64 = 16;
/// The longest wait a `Retry-After` may ask for.
const MAX_RETRY_AFTER_MS: i64 = 86_400_000;

#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("cannot build the webhook HTTP client: {0}")]
    Client(reqwest::Error),
}

/// The Standard Webhooks signature header of a delivery: `v1,` + base64 of HMAC-SHA256 with the secret's
/// bytes over `{id}.{timestamp}.{body}`; None when the secret is not `whsec_` + base64.
pub fn signature(secret: &str, id: &str, timestamp: i64, body: &[u8]) -> Option<String> {
    let key = STANDARD.decode(secret.strip_prefix(SECRET_PREFIX)?).ok()?;
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &key);
    let mut ctx = ring::hmac::Context::with_key(&key);
    ctx.update(format!("{id}.{timestamp}.").as_bytes());
    ctx.update(body);
    Some(format!("v1,{}", STANDARD.encode(ctx.sign().as_ref())))
}

/// The delivery id of an event for a subscription: the same on every retry.
pub fn delivery_id(subscription: &str, event_id: i64) -> String {
    format!("{subscription}_{event_id}")
}

/// What one attempt got: a 2xx, another status (with `Retry-After` in ms), or no answer (status 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attempt {
    Delivered,
    Failed { status: u16, retry_after_ms: Option<i64> },
}

/// What to record after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    Retry { attempts: i64, at: i64 },
    Dead { attempts: i64 },
}

/// The fate of the `attempts`-th failure (1-based), `jitter` in [0, 1).
pub fn fate(config: &WebhooksConfig, attempts: i64, retry_after_ms: Option<i64>, now: i64, jitter: f64) -> Fate {
    if attempts >= config.max_attempts {
        return Fate::Dead { attempts };
    }
    let policy = RetryPolicy {
        max_failures: config.max_attempts,
        base_delay_ms: config.retry_base_ms,
        max_delay_ms: config.retry_max_ms,
    };
    let asked = retry_after_ms.unwrap_or(0).clamp(0, MAX_RETRY_AFTER_MS);
    Fate::Retry { attempts, at: now + policy.delay_ms(attempts, jitter).max(asked) }
}

/// `Retry-After` in seconds (an HTTP date is not read: the backoff applies).
fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<i64> {
    let text = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?;
    text.trim().parse::<i64>().ok().map(|s| s.saturating_mul(1000))
}

pub struct Webhooks {
    store: Store,
    client: reqwest::Client,
    config: WebhooksConfig,
    owner: String,
    /// Wakes an idle loop.
    pub wake: Notify,
}

impl Webhooks {
    /// The delivery loop of a configuration; None when `webhooks.enabled` is false.
    pub fn new(config: &Config, store: Store) -> Result<Option<Arc<Webhooks>>, WebhookError> {
        if !config.webhooks.enabled {
            return Ok(None);
        }
        let client = reqwest::Client::builder()
            .timeout(Duration::from_millis(config.webhooks.timeout_ms))
            .user_agent(concat!("smart-taskd/", env!("CARGO_PKG_VERSION")))
            // A redirect is a failed delivery: the receiver is the URL the integrator registered.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(WebhookError::Client)?;
        Ok(Some(Arc::new(Webhooks {
            store,
            client,
            config: config.webhooks.clone(),
            owner: format!("{}/webhooks", config.lease_owner()),
            wake: Notify::new(),
        })))
    }

    /// One POST of `body` to the subscription's URL.
    async fn post(&self, sub: &DueWebhook, id: &str, body: Vec<u8>) -> Attempt {
        let timestamp = chrono::Utc::now().timestamp();
        let Some(signature) = signature(&sub.secret, id, timestamp, &body) else {
            error!(webhook = %sub.id, "the subscription's secret is not whsec_ + base64: cannot sign");
            return Attempt::Failed { status: 0, retry_after_ms: None };
        };
        let sent = self
            .client
            .post(&sub.url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header("webhook-id", id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(body)
            .send()
            .await;
        match sent {
            Ok(answer) if answer.status().is_success() => Attempt::Delivered,
            // The answer's body is never read: it may quote personal data.
            Ok(answer) => {
                Attempt::Failed { status: answer.status().as_u16(), retry_after_ms: retry_after(answer.headers()) }
            }
            Err(e) => {
                // reqwest's message names the URL: only the kind of failure is logged.
                let kind = if e.is_timeout() {
                    "timeout"
                } else if e.is_connect() {
                    "connect"
                } else {
                    "request"
                };
                debug!(webhook = %sub.id, kind, "webhook delivery got no answer");
                Attempt::Failed { status: 0, retry_after_ms: None }
            }
        }
    }

    /// Delivers a leased subscription's next event and records the outcome (fenced by the lease).
    async fn deliver(&self, sub: DueWebhook) -> Result<(), StoreError> {
        let Some(event) = self.store.feed(FeedSource::Events, sub.cursor, 1).await?.into_iter().next() else {
            self.store.release_webhook(&sub.id, sub.token).await?;
            return Ok(());
        };
        let position = event.position;
        let id = delivery_id(&sub.id, position.id);
        let body = serde_json::to_vec(&FeedItem::from(event))
            .map_err(|e| StoreError::Corrupt(format!("cannot encode a feed item: {e}")))?;
        let attempt = self.post(&sub, &id, body).await;
        let now = now_ms();
        let (recorded, outcome) = match attempt {
            Attempt::Delivered => {
                debug!(webhook = %sub.id, evento = position.id, tentativo = sub.attempts + 1, "webhook delivered");
                (self.store.webhook_delivered(&sub.id, sub.token, position).await?, "delivered")
            }
            Attempt::Failed { status, retry_after_ms } => {
                match fate(&self.config, sub.attempts + 1, retry_after_ms, now, rand::random::<f64>()) {
                    Fate::Retry { attempts, at } => {
                        debug!(webhook = %sub.id, evento = position.id, stato = status, tentativo = attempts,
                               tra_ms = at - now, "webhook not delivered: retrying");
                        (
                            self.store.webhook_failed(&sub.id, sub.token, attempts, i64::from(status), at).await?,
                            "retried",
                        )
                    }
                    Fate::Dead { attempts } => {
                        warn!(webhook = %sub.id, evento = position.id, stato = status, tentativi = attempts,
                              "webhook not delivered after webhooks.max_attempts: recorded as a dead letter");
                        let dead = self
                            .store
                            .webhook_dead(&sub.id, sub.token, position, attempts, i64::from(status), now)
                            .await?;
                        (dead, "dead")
                    }
                }
            }
        };
        metrics::counter!(WEBHOOK_DELIVERIES, "outcome" => outcome).increment(1);
        if !recorded {
            warn!(webhook = %sub.id, evento = position.id, "lease lost while delivering: outcome not recorded");
        }
        Ok(())
    }

    /// Leases due subscriptions and delivers one event of each; the number leased.
    pub async fn run_round(self: &Arc<Self>) -> Result<usize, StoreError> {
        let due = self.store.claim_webhooks(&self.owner, CLAIM, self.config.lease_ms(), now_ms()).await?;
        let leased = due.len();
        let mut deliveries = JoinSet::new();
        for sub in due {
            let me = self.clone();
            deliveries.spawn(async move {
                let id = sub.id.clone();
                (id, me.deliver(sub).await)
            });
        }
        while let Some(done) = deliveries.join_next().await {
            match done {
                Ok((_, Ok(()))) => {}
                // The lease expires and the next claim delivers again (the same webhook-id).
                Ok((id, Err(e))) => error!(webhook = %id, error = %e, "cannot record a webhook delivery"),
                Err(e) => error!(error = %e, "a webhook delivery task failed"),
            }
        }
        Ok(leased)
    }

    /// Rounds until shutdown; idle, polls every `poll_interval_ms`. Gives back its leases when stopping.
    pub async fn run(self: Arc<Self>, mut shutdown: watch::Receiver<bool>, health: Arc<crate::health::Health>) {
        let poll = Duration::from_millis(self.config.poll_interval_ms);
        let mut failures = 0u32;
        debug!(owner = %self.owner, "webhook deliveries started");
        while !*shutdown.borrow() {
            health.beat("webhooks");
            // A round lasts up to `timeout_ms` (a slow receiver): the loop stays alive for the watchdog meanwhile.
            let round = self.run_round();
            tokio::pin!(round);
            let mut alive = tokio::time::interval(Duration::from_secs(1));
            let result = loop {
                tokio::select! {
                    done = &mut round => break done,
                    _ = alive.tick() => health.beat("webhooks"),
                }
            };
            match result {
                Ok(leased) if leased > 0 => {
                    failures = 0;
                    continue;
                }
                Ok(_) => failures = 0,
                Err(e) => {
                    failures += 1;
                    error!(error = %e, "webhook round failed; retrying");
                }
            }
            let backoff = poll * 2u32.saturating_pow(failures.min(6));
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = self.wake.notified() => {}
                _ = shutdown.changed() => {}
            }
        }
        health.retire("webhooks");
        match self.store.release_webhooks(&self.owner).await {
            Ok(0) => {}
            Ok(n) => info!(owner = %self.owner, released = n, "released webhook leases"),
            Err(e) => error!(error = %e, "cannot release webhook leases (they will expire)"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_like_the_standard_webhooks_reference() {
        // The test vector of the Standard Webhooks libraries.
        let got = signature(
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            br#"{"test": 2432232314}"#,
        );
        assert_eq!(got.as_deref(), Some("v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="));
        assert_eq!(signature("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "m", 1, b""), None);
    }

    #[test]
    fn failures_back_off_honour_retry_after_and_end_dead() {
        let c = WebhooksConfig { max_attempts: 3, retry_base_ms: 100, retry_max_ms: 1_000, ..Default::default() };
        assert_eq!(fate(&c, 1, None, 0, 0.0), Fate::Retry { attempts: 1, at: 50 });
        assert_eq!(fate(&c, 2, None, 0, 0.999), Fate::Retry { attempts: 2, at: 199 });
        assert_eq!(fate(&c, 2, Some(5_000), 0, 0.0), Fate::Retry { attempts: 2, at: 5_000 });
        assert_eq!(fate(&c, 3, Some(5_000), 0, 0.0), Fate::Dead { attempts: 3 });
        assert_eq!(delivery_id("ab", 7), "ab_7");
    }
}
