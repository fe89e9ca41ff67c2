//! The daemon's HTTP server (axum over hyper), served by `smart-taskd run` on `api.listen`: today the
//! operations routes ([`ops`]: `/metrics`, `/healthz`, `/readyz`); the versioned API mounts beside them.
//!
//! Layers, outermost first: a handler's panic becomes a 500 instead of a dropped connection; every request gets
//! an `x-request-id` (kept when the caller sent one) that the answer echoes; the trace records the method, the
//! matched route, the status and the latency — never the path's values, the query string or a body, which can
//! carry personal data; a request that takes longer than [`REQUEST_TIMEOUT`] answers 503; bodies are bounded.
//! Shutdown is graceful: the server stops accepting when the daemon stops, and finishes the requests in flight.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::MatchedPath;
use axum::http::{Request, StatusCode};
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tower::ServiceBuilder;
use tower_http::ServiceBuilderExt;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::compression::CompressionLayer;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::request_id::MakeRequestUuid;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

use crate::health::Health;
use crate::store::Store;

mod agenda;
pub mod api;
mod attachments;
pub mod auth;
mod body;
pub mod console;
mod esito;
mod fascicolo;
mod feeds;
mod jwt_crypto;
pub mod limits;
mod menu;
pub mod openapi;
mod operator;
mod ops;
pub mod problem;
mod questionnaire;
mod rule_sets;
mod webhooks;

/// How long a request may take before it is answered 503.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The largest request body accepted by the operations routes (they take none).
const OPS_BODY_LIMIT: usize = 16 * 1024;

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    pub metrics: PrometheusHandle,
    pub store: Store,
    pub health: Arc<Health>,
    /// The API's own state; None when `api.auth` is not configured (the API is then not served).
    pub api: Option<Arc<api::ApiState>>,
    /// The operators' console; None when `console` is not configured.
    pub console: Option<Arc<console::ConsoleState>>,
    /// The satisfaction questionnaire (its API and its gauges); None when `questionario` is not configured.
    pub questionario: Option<Arc<crate::config::QuestionnaireConfig>>,
}

/// Binds the listener (so a busy port fails the start, before READY=1).
pub async fn bind(addr: std::net::SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// Every route with its layers.
pub fn router(state: AppState) -> Router {
    let trace = TraceLayer::new_for_http().make_span_with(|request: &Request<_>| {
        // The route's template (`/rest/…/{id}`), not the path: values in paths are the caller's.
        let route = request.extensions().get::<MatchedPath>().map_or("unmatched", MatchedPath::as_str);
        let id = request.headers().get("x-request-id").and_then(|v| v.to_str().ok()).unwrap_or("");
        tracing::debug_span!("http", method = %request.method(), route, request_id = id)
    });
    let layers = ServiceBuilder::new()
        .layer(axum::middleware::from_fn(record_duration))
        .layer(CatchPanicLayer::new())
        .set_x_request_id(MakeRequestUuid)
        .propagate_x_request_id()
        .layer(trace)
        .map_response(limits::problem_for_bare_503)
        .layer(TimeoutLayer::with_status_code(StatusCode::SERVICE_UNAVAILABLE, REQUEST_TIMEOUT));
    let mut app = ops::routes().layer(RequestBodyLimitLayer::new(OPS_BODY_LIMIT));
    if let Some(api) = &state.api {
        // The API bounds its bodies itself (`intake.limits.max_document_bytes`), answering problem+json.
        let routes = api::routes()
            .merge(menu::routes())
            .merge(fascicolo::routes())
            .merge(esito::routes())
            .merge(webhooks::routes())
            .layer(axum::middleware::from_fn_with_state(api.limits.clone(), limits::enforce))
            .layer(CompressionLayer::new());
        app = app.nest(api::BASE, routes);
    }
    if let Some(console) = &state.console {
        app = app.nest(console.base(), console::routes());
    }
    app.with_state(state).layer(layers)
}

/// Records every answer in `smart_task_http_request_duration_seconds` (outermost, so a panic's 500 and the
/// timeout's 503 count too).
async fn record_duration(request: Request<axum::body::Body>, next: axum::middleware::Next) -> axum::response::Response {
    let started = std::time::Instant::now();
    let route = request.extensions().get::<MatchedPath>().map_or("unmatched", MatchedPath::as_str).to_string();
    let method = request.method().clone();
    let response = next.run(request).await;
    crate::telemetry::metrics::http_answered(
        &route,
        method.as_str(),
        response.status().as_u16(),
        started.elapsed().as_secs_f64(),
    );
    response
}

/// Serves `router` until `stop` turns true, then finishes the requests in flight.
pub async fn serve(listener: TcpListener, router: Router, mut stop: watch::Receiver<bool>) -> std::io::Result<()> {
    // The peer address keys the rate limit of a caller without a token.
    axum::serve(listener, router.into_make_service_with_connect_info::<std::net::SocketAddr>())
        .with_graceful_shutdown(async move {
            let _ = stop.wait_for(|stopped| *stopped).await;
        })
        .await
}
