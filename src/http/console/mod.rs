//! The operators' console, served by `smart-taskd run` under `console.path`: pages rendered on the server
//! (minijinja, templates and assets built into the binary), in Italian, with one small script for the live
//! updates. Operators log in through OpenID Connect ([`oidc`]) or arrive behind a trusted proxy with the API's
//! bearer token; their sede and role come from the identity. Every answer carries a Content-Security-Policy
//! whose only script source is a per-answer nonce, `no-store`, `noindex`, and no framing; every form is guarded
//! twice against cross-site requests (the `Sec-Fetch-Site`/`Origin` check of tower-http's `CsrfLayer`, and a token
//! bound to the session). No personal data goes in a URL: pages name requests by their opaque id.

mod oidc;
mod pages;
mod session;

use std::sync::Arc;

use arc_swap::ArcSwap;
use axum::Router;
use axum::extract::{FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use minijinja::Environment;
use tower_http::csrf::CsrfLayer;

use super::AppState;
use crate::app::Actor;
use crate::clock::now_ms;
use crate::config::{ConsoleConfig, IntakeConfig};
use crate::rules::RuleSet;
use session::{SESSION_COOKIE, Session, Signer, cookie};

/// What the console's handlers share.
pub struct ConsoleState {
    pub config: ConsoleConfig,
    signer: Signer,
    provider: Option<oidc::Provider>,
    templates: Environment<'static>,
    pub rules: Arc<ArcSwap<RuleSet>>,
    pub pipeline: Arc<crate::worker::Pipeline>,
    pub intake: IntakeConfig,
    pub instance: String,
    /// Turns true when the daemon stops: the live-update streams end.
    pub stop: tokio::sync::watch::Receiver<bool>,
    /// Cookies carry `Secure` unless the console is reached over plain HTTP on loopback (tests).
    secure_cookies: bool,
}

/// Why the console could not start.
#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    #[error("console.session_key_file {path}: {error}")]
    Key { path: String, error: String },
    #[error("console: {0}")]
    Setup(String),
}

const TEMPLATES: [(&str, &str); 7] = [
    ("base.html", include_str!("templates/base.html")),
    ("coda.html", include_str!("templates/coda.html")),
    ("richiesta.html", include_str!("templates/richiesta.html")),
    ("sospese.html", include_str!("templates/sospese.html")),
    ("conferma.html", include_str!("templates/conferma.html")),
    ("operazioni.html", include_str!("templates/operazioni.html")),
    ("errore.html", include_str!("templates/errore.html")),
];

impl ConsoleState {
    pub fn new(
        config: ConsoleConfig,
        rules: Arc<ArcSwap<RuleSet>>,
        pipeline: Arc<crate::worker::Pipeline>,
        intake: IntakeConfig,
        instance: String,
        stop: tokio::sync::watch::Receiver<bool>,
    ) -> Result<ConsoleState, ConsoleError> {
        let secret = match &config.session_key_file {
            Some(path) => {
                let key = std::fs::read(path)
                    .map_err(|e| ConsoleError::Key { path: path.display().to_string(), error: e.to_string() })?;
                if key.len() < 32 {
                    return Err(ConsoleError::Key {
                        path: path.display().to_string(),
                        error: format!(
                            "{} bytes: expected at least 32 random bytes (e.g. `head -c 32 /dev/urandom`)",
                            key.len()
                        ),
                    });
                }
                key
            }
            None => session::random_token(32).into_bytes(),
        };
        let provider =
            config.oidc.clone().map(oidc::Provider::new).transpose().map_err(|e| ConsoleError::Setup(e.to_string()))?;
        let secure_cookies = config.oidc.as_ref().is_none_or(|o| o.redirect_url.starts_with("https://"));
        let mut templates = Environment::new();
        for (name, text) in TEMPLATES {
            templates.add_template(name, text).map_err(|e| ConsoleError::Setup(format!("template {name}: {e}")))?;
        }
        Ok(ConsoleState {
            config,
            signer: Signer::new(&secret),
            provider,
            templates,
            rules,
            pipeline,
            intake,
            instance,
            stop,
            secure_cookies,
        })
    }

    /// The path prefix of every page.
    pub fn base(&self) -> &str {
        &self.config.path
    }
}

/// The console's routes, to be nested under `console.path`.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(pages::home))
        .route("/robots.txt", get(pages::robots))
        .route("/static/console.css", get(pages::stylesheet))
        .route("/static/console.js", get(pages::script))
        .route("/static/icona.svg", get(pages::icon))
        .route("/login", get(pages::login))
        .route("/callback", get(pages::callback))
        .route("/logout", post(pages::logout))
        .route("/coda", get(pages::queue))
        .route("/coda/eventi", get(pages::queue_events))
        .route("/coda/sospese", get(pages::parked))
        .route("/coda/sospese/conferma", get(pages::confirm_requeue))
        .route("/coda/sospese/rimessa", post(pages::requeue_parked))
        .route("/richieste/{id}", get(pages::request))
        .route("/richieste/{id}/eventi", get(pages::request_events))
        .route("/richieste/{id}/allegati/{n}", get(pages::attachment))
        .route("/richieste/{id}/{azione}", post(pages::act))
        .route("/operazioni", get(pages::operations))
        .route("/operazioni/notifiche/{id}/ritenta", post(pages::retry_notification))
        .layer(CsrfLayer::new())
        .layer(axum::extract::DefaultBodyLimit::max(pages::FORM_LIMIT))
        .layer(axum::middleware::from_fn(security_headers))
}

/// The nonce of this answer's script, for the templates.
#[derive(Clone)]
struct CspNonce(String);

/// Sets the headers every console answer carries, with a fresh script nonce.
async fn security_headers(mut request: Request, next: Next) -> Response {
    let nonce = session::random_token(18);
    request.extensions_mut().insert(CspNonce(nonce.clone()));
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    let csp = format!(
        "default-src 'none'; script-src 'nonce-{nonce}'; style-src 'self'; img-src 'self'; connect-src 'self'; \
         form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    );
    if let Ok(csp) = HeaderValue::from_str(&csp) {
        headers.insert(header::CONTENT_SECURITY_POLICY, csp);
    }
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert("x-robots-tag", HeaderValue::from_static("noindex, nofollow"));
    headers.entry(header::CACHE_CONTROL).or_insert(HeaderValue::from_static("no-store"));
    response
}

/// The logged-in operator of a request: from the session cookie, or (behind a trusted proxy) from the API's
/// bearer token. Without one, a page answers with the way to the login.
pub struct Operator {
    pub console: Arc<ConsoleState>,
    pub session: Session,
    pub csrf: String,
    pub nonce: String,
}

impl Operator {
    pub fn actor(&self) -> Actor {
        self.session.actor()
    }
}

impl FromRequestParts<AppState> for Operator {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let Some(console) = state.console.clone() else {
            return Err(StatusCode::NOT_FOUND.into_response());
        };
        let nonce = parts.extensions.get::<CspNonce>().map(|n| n.0.clone()).unwrap_or_default();
        let now = now_ms();
        let from_cookie = cookie(&parts.headers, SESSION_COOKIE).and_then(|c| console.signer.session(c, now));
        // A session its operator ended is refused (a database read: instances share what was ended).
        let ended = match &from_cookie {
            Some(s) => state.store.jti_recorded(&s.ended_id(), now / 1000).await.unwrap_or(true),
            None => false,
        };
        let session = match from_cookie.filter(|_| !ended) {
            Some(s) => Some(s),
            None if console.config.trusted_proxy => from_bearer(parts, state, now),
            None => None,
        };
        let Some(session) = session else {
            return Err(Redirect::to(&format!("{}/login", console.base())).into_response());
        };
        let csrf = console.signer.csrf(&session);
        Ok(Operator { console, session, csrf, nonce })
    }
}

/// An operator's bearer token, checked like the API's; anything but an operator is no session.
fn from_bearer(parts: &Parts, state: &AppState, now: crate::domain::time::Millis) -> Option<Session> {
    let api = state.api.as_ref()?;
    let token = parts.headers.get(header::AUTHORIZATION)?.to_str().ok()?.strip_prefix("Bearer ")?;
    let verified = api.verifier.verify(token).ok()?;
    match verified.actor {
        // The token's own expiry: the forms' CSRF token, derived from the session, stays the same per token.
        Actor::Operatore { id, sede, agisce } => {
            let sid = verified.jti.unwrap_or_default();
            Some(Session { sid, sub: id, sede, agisce, exp: verified.exp.saturating_mul(1000) }).filter(|s| s.exp > now)
        }
        _ => None,
    }
}
