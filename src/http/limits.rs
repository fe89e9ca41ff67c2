//! The API's limits (AgID RAC_ROBUSTEZZA_001/002): a per-caller rate limit announced on every answer, a
//! bound on the calls served at once that sheds load with 503, and `Retry-After` on every 429 and 503.
//!
//! The rate limit is a fixed window aligned on the clock, per caller: a caller is its bearer token (hashed:
//! the token itself is never kept), or its peer address without one. Counters live in the process, so with
//! several instances each enforces its own quota (a gateway in front enforces the global one). The map is
//! cleared at every window, so its size is bounded by the callers of one window, and by [`MAX_CALLERS`].

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;

use super::problem::Problem;
use crate::config::ApiConfig;

/// The most callers counted in one window; past it, new callers share one counter (a flood of fresh tokens
/// cannot grow the map without bound, and is limited as one caller).
const MAX_CALLERS: usize = 100_000;

const LIMIT: HeaderName = HeaderName::from_static("x-ratelimit-limit");
const REMAINING: HeaderName = HeaderName::from_static("x-ratelimit-remaining");
const RESET: HeaderName = HeaderName::from_static("x-ratelimit-reset");

type CallerKey = [u8; 16];

/// The shared state of the API's limits.
pub struct Limits {
    requests: u32,
    window_seconds: u64,
    windows: Mutex<Window>,
    in_flight: Semaphore,
    /// The open event streams (`api.max_streams`).
    streams: Arc<Semaphore>,
}

struct Window {
    /// The window's number (seconds since the epoch / window length).
    number: u64,
    calls: HashMap<CallerKey, u32>,
}

/// What the rate limit says about one call.
struct Quota {
    allowed: bool,
    remaining: u32,
    reset_seconds: u64,
}

impl Limits {
    pub fn new(config: &ApiConfig) -> Arc<Limits> {
        Arc::new(Limits {
            requests: config.rate_limit.requests,
            window_seconds: u64::from(config.rate_limit.window_seconds.max(1)),
            windows: Mutex::new(Window { number: 0, calls: HashMap::new() }),
            in_flight: Semaphore::new(config.max_in_flight.max(1)),
            streams: Arc::new(Semaphore::new(config.max_streams.max(1))),
        })
    }

    /// A place for one more event stream, held while it is open; None when all are taken (answer
    /// [`overloaded`]).
    pub fn stream_permit(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        self.streams.clone().try_acquire_owned().ok()
    }

    fn count(&self, caller: CallerKey, now_seconds: u64) -> Quota {
        let number = now_seconds / self.window_seconds;
        let reset_seconds = (number + 1) * self.window_seconds - now_seconds;
        // A poisoned lock only means a panic elsewhere mid-update: the counters are still usable.
        let mut window = self.windows.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if window.number != number {
            window.number = number;
            window.calls.clear();
        }
        let key =
            if window.calls.len() >= MAX_CALLERS && !window.calls.contains_key(&caller) { [0; 16] } else { caller };
        let calls = window.calls.entry(key).or_insert(0);
        let allowed = *calls < self.requests;
        if allowed {
            *calls += 1;
        }
        Quota { allowed, remaining: self.requests - *calls, reset_seconds }
    }
}

/// Who is calling, as a counter's key: the bearer token's hash, else the peer address's.
fn caller_of(request: &Request) -> CallerKey {
    let mut hasher = Sha256::new();
    match request.headers().get(AUTHORIZATION) {
        Some(token) => hasher.update(token.as_bytes()),
        None => {
            let peer = request.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip());
            hasher.update(format!("{peer:?}").as_bytes());
        }
    }
    let digest = hasher.finalize();
    let mut key = [0; 16];
    key.copy_from_slice(&digest[..16]);
    key
}

fn seconds_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn set(response: &mut Response, name: HeaderName, value: impl ToString) {
    if let Ok(v) = HeaderValue::from_str(&value.to_string()) {
        response.headers_mut().insert(name, v);
    }
}

/// The API's middleware: the rate limit, then the bound on calls in flight.
pub async fn enforce(State(limits): State<Arc<Limits>>, request: Request, next: Next) -> Response {
    let quota = limits.count(caller_of(&request), seconds_now());
    let mut response = if !quota.allowed {
        let mut p = Problem::new(
            StatusCode::TOO_MANY_REQUESTS,
            format!("more than {} calls in {} s: wait for the window to reset", limits.requests, limits.window_seconds),
        )
        .into_response();
        set(&mut p, RETRY_AFTER, quota.reset_seconds);
        p
    } else {
        match limits.in_flight.try_acquire() {
            Ok(_permit) => next.run(request).await,
            Err(_) => overloaded(),
        }
    };
    set(&mut response, LIMIT, limits.requests);
    set(&mut response, REMAINING, quota.remaining);
    set(&mut response, RESET, quota.reset_seconds);
    response
}

/// 503 with `Retry-After`: the service sheds load.
pub fn overloaded() -> Response {
    let mut response =
        Problem::new(StatusCode::SERVICE_UNAVAILABLE, "the service is busy: retry in a moment").into_response();
    set(&mut response, RETRY_AFTER, 1);
    response
}

/// A 503 that carries no body (the timeout's) becomes a problem with `Retry-After`, as every 503 must be.
pub fn problem_for_bare_503(response: Response) -> Response {
    if response.status() == StatusCode::SERVICE_UNAVAILABLE && !response.headers().contains_key(CONTENT_TYPE) {
        let mut problem =
            Problem::new(StatusCode::SERVICE_UNAVAILABLE, "the call took too long: retry in a moment").into_response();
        for (name, value) in response.headers() {
            problem.headers_mut().entry(name.clone()).or_insert_with(|| value.clone());
        }
        set(&mut problem, RETRY_AFTER, 1);
        return problem;
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(requests: u32) -> Arc<Limits> {
        let mut config = ApiConfig::default();
        config.rate_limit.requests = requests;
        config.rate_limit.window_seconds = 60;
        Limits::new(&config)
    }

    #[test]
    fn a_caller_gets_its_quota_per_window_and_others_their_own() {
        let l = limits(2);
        let (a, b) = ([1; 16], [2; 16]);
        let first = l.count(a, 120);
        assert!(first.allowed);
        assert_eq!((first.remaining, first.reset_seconds), (1, 60));
        assert!(l.count(a, 130).allowed);
        let third = l.count(a, 170);
        assert!(!third.allowed);
        assert_eq!((third.remaining, third.reset_seconds), (0, 10));
        assert!(l.count(b, 170).allowed, "another caller has its own quota");
        assert!(l.count(a, 180).allowed, "a new window resets the count");
    }
}
