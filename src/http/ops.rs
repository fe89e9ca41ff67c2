//! The operations routes: `/metrics` (Prometheus text format, the store's gauges sampled on each scrape),
//! `/healthz` (the daemon's loops are making progress) and `/readyz` (started, and the database answers; a
//! degraded mode, such as running the last activated rules, is named in the body).

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tracing::warn;

use super::AppState;
use crate::app::questionnaire;
use crate::clock::now_ms;
use crate::telemetry::metrics;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/metrics", get(scrape))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .fallback(|| async { text(StatusCode::NOT_FOUND, "try /metrics, /healthz or /readyz\n".into()) })
}

fn text(status: StatusCode, body: String) -> Response {
    (status, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], body).into_response()
}

async fn scrape(State(s): State<AppState>) -> Response {
    match s.store.ops_snapshot(now_ms()).await {
        Ok(snapshot) => metrics::queue(&snapshot),
        Err(e) => warn!(error = %e, "cannot sample the queue for /metrics"),
    }
    if let Some(config) = &s.questionario {
        let since = questionnaire::previous_month(now_ms());
        match questionnaire::aggregate(&s.store, config, Some(&since)).await {
            Ok(results) => {
                for g in &results.gruppi {
                    metrics::questionnaire_group(&g.task, &g.categoria, &g.mese, g.risposte, &g.domande);
                }
            }
            Err(e) => warn!(error = %e, "cannot aggregate the questionnaire for /metrics"),
        }
    }
    let body = s.metrics.render() + metrics::process_families().as_str();
    (StatusCode::OK, [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], body).into_response()
}

async fn healthz(State(s): State<AppState>) -> Response {
    match s.health.stale() {
        None => text(StatusCode::OK, "ok\n".into()),
        Some(stuck) => text(StatusCode::SERVICE_UNAVAILABLE, format!("loop `{stuck}` is not making progress\n")),
    }
}

async fn readyz(State(s): State<AppState>) -> Response {
    if s.health.is_ready() && s.store.counts().await.is_ok() {
        let detail = s.health.degraded().map(|d| format!("{d}\n")).unwrap_or_default();
        text(StatusCode::OK, format!("ready\n{detail}"))
    } else {
        text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n".into())
    }
}
