//! The `api` and `webhooks` sections: the HTTP server, its bearer tokens and limits, and webhook deliveries.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::ConfigError;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    /// Address of the HTTP server (/metrics, /healthz, /readyz, and the API when `auth` is set); `null` turns
    /// it off.
    pub listen: Option<std::net::SocketAddr>,
    /// Bearer tokens of the API (`/rest/smart-task/v1/…`): without this section the API is not served.
    pub auth: Option<AuthConfig>,
    /// How many API calls one caller may make per window (per instance).
    pub rate_limit: RateLimitConfig,
    /// The most API calls served at once; beyond it a call answers 503 with `Retry-After` at once instead
    /// of queueing (the load is shed before it piles up behind the database).
    pub max_in_flight: usize,
    /// The most Server-Sent-Events streams of the change feeds open at once; beyond it, 503 with
    /// `Retry-After` (a stream holds a connection for minutes, not a call's milliseconds).
    pub max_streams: usize,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            listen: Some(std::net::SocketAddr::from(([127, 0, 0, 1], 9464))),
            auth: None,
            rate_limit: RateLimitConfig::default(),
            max_in_flight: 1024,
            max_streams: 64,
        }
    }
}

/// A fixed window per caller (a caller is a bearer token; without one, the peer address): `requests` calls
/// per `window_seconds`, announced on every answer in `X-RateLimit-Limit`, `X-RateLimit-Remaining` and
/// `X-RateLimit-Reset` (AgID RAC_ROBUSTEZZA_001); over it, 429 with `Retry-After`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitConfig {
    pub requests: u32,
    pub window_seconds: u32,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        RateLimitConfig { requests: 6000, window_seconds: 60 }
    }
}

/// How the API validates bearer JWTs: signed by a key of the JWKS file, with pinned issuer, audience and
/// algorithms, inside `exp`/`nbf` (with `leeway_seconds` of clock skew).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// A JWKS document (RFC 7517) holding the public keys; relative to this file's directory.
    pub jwks_file: PathBuf,
    /// The `iss` every token must carry.
    pub issuer: String,
    /// The `aud` every token must carry.
    pub audience: String,
    /// The signature algorithms accepted (asymmetric only: ES256, ES384, RS256, RS384, RS512, PS256, EdDSA …).
    #[serde(default = "default_algorithms")]
    pub algorithms: Vec<String>,
    #[serde(default = "default_leeway")]
    pub leeway_seconds: u64,
    /// AgID ID_AUTH_REST_02: every token must carry a `jti`, and a second use before its `exp` is refused.
    /// The ids are kept in the database, so every instance on it refuses a replay.
    #[serde(default)]
    pub jti_replay: bool,
}

fn default_algorithms() -> Vec<String> {
    vec!["ES256".into(), "RS256".into()]
}

fn default_leeway() -> u64 {
    30
}

pub(super) fn check_api_limits(api: &ApiConfig, path: &Path) -> Result<(), ConfigError> {
    let invalid =
        |field, problem: &str| ConfigError::Invalid { path: path.to_path_buf(), field, problem: problem.into() };
    if api.rate_limit.requests == 0 {
        return Err(invalid("api.rate_limit.requests", "must be at least 1 (0 would refuse every call)"));
    }
    if !(1..=3600).contains(&api.rate_limit.window_seconds) {
        return Err(invalid("api.rate_limit.window_seconds", "must be 1 to 3600 seconds"));
    }
    if api.max_in_flight == 0 {
        return Err(invalid("api.max_in_flight", "must be at least 1 (0 would refuse every call)"));
    }
    if api.max_streams == 0 {
        return Err(invalid("api.max_streams", "must be at least 1 (0 would refuse every event stream)"));
    }
    Ok(())
}

/// Webhooks (`POST /webhook` subscriptions): one loop per instance pushes each subscription's next feed item,
/// signed (Standard Webhooks), and retries a failure with exponential backoff and jitter (at least what
/// `Retry-After` asks) until `max_attempts`, then records a dead letter and moves on.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebhooksConfig {
    /// Whether this instance delivers (subscriptions are managed through the API either way).
    pub enabled: bool,
    /// How often an idle delivery loop looks for subscriptions with events to deliver.
    pub poll_interval_ms: u64,
    /// How long one delivery may take (connect, send, answer) before it counts as failed.
    pub timeout_ms: u64,
    /// Attempts per event before it goes to the dead letters (`webhook_dead_letters`).
    pub max_attempts: i64,
    pub retry_base_ms: i64,
    pub retry_max_ms: i64,
    /// Accept `http://` URLs whose host is a loopback address (tests, a local relay); otherwise only https.
    pub allow_http_loopback: bool,
}

impl Default for WebhooksConfig {
    fn default() -> Self {
        WebhooksConfig {
            enabled: true,
            poll_interval_ms: 1_000,
            timeout_ms: 10_000,
            max_attempts: 10,
            retry_base_ms: 5_000,
            retry_max_ms: 3_600_000,
            allow_http_loopback: false,
        }
    }
}

impl WebhooksConfig {
    /// How long a delivery's lease lasts: the request's timeout and a margin to record its outcome.
    pub fn lease_ms(&self) -> i64 {
        i64::try_from(self.timeout_ms).unwrap_or(i64::MAX / 2).saturating_add(30_000)
    }
}

pub(super) fn check_webhooks(w: &WebhooksConfig, path: &Path) -> Result<(), ConfigError> {
    let invalid =
        |field, problem: &str| ConfigError::Invalid { path: path.to_path_buf(), field, problem: problem.into() };
    if w.poll_interval_ms == 0 {
        return Err(invalid("webhooks.poll_interval_ms", "must be at least 1 (0 would poll without pause)"));
    }
    if !(1..=300_000).contains(&w.timeout_ms) {
        return Err(invalid("webhooks.timeout_ms", "must be 1 to 300000 ms"));
    }
    if w.max_attempts < 1 {
        return Err(invalid("webhooks.max_attempts", "must be at least 1"));
    }
    if w.retry_base_ms < 1 {
        return Err(invalid("webhooks.retry_base_ms", "must be at least 1"));
    }
    if w.retry_max_ms < w.retry_base_ms {
        return Err(invalid("webhooks.retry_max_ms", "must be at least `retry_base_ms`"));
    }
    Ok(())
}
