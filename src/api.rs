//! The operations endpoint (default 127.0.0.1:9464): `/metrics` (Prometheus text format), `/healthz` (the
//! daemon's loops are alive) and `/readyz` (started, and the database answers). A deliberately small
//! HTTP/1.1 responder: one request per connection, GET only.

use std::net::SocketAddr;
use std::sync::Arc;

use metrics_exporter_prometheus::PrometheusHandle;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tracing::{debug, warn};

use crate::health::Health;
use crate::store::Store;
use crate::telemetry::metrics;
use crate::worker::now_ms;

/// Binds the listener (so a busy port fails the start, before READY=1).
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// Serves the endpoint until the task is dropped.
pub async fn serve(listener: TcpListener, handle: PrometheusHandle, store: Store, health: Arc<Health>) {
    loop {
        let Ok((mut socket, _)) = listener.accept().await else { continue };
        let (handle, store, health) = (handle.clone(), store.clone(), health.clone());
        tokio::spawn(async move {
            let mut buf = vec![0u8; 8192];
            let Ok(n) = socket.read(&mut buf).await else { return };
            let request = String::from_utf8_lossy(&buf[..n]);
            let path = request.split_whitespace().nth(1).unwrap_or("/");
            let (status, content_type, body) = match path {
                "/metrics" => {
                    sample(&store).await;
                    ("200 OK", "text/plain; version=0.0.4", handle.render() + metrics::process_families().as_str())
                }
                "/healthz" => match health.stale() {
                    None => ("200 OK", "text/plain", "ok\n".to_string()),
                    Some(lp) => {
                        ("503 Service Unavailable", "text/plain", format!("loop `{lp}` is not making progress\n"))
                    }
                },
                "/readyz" => {
                    if health.is_ready() && store.counts().await.is_ok() {
                        let detail = health.degraded().map(|d| format!("{d}\n")).unwrap_or_default();
                        ("200 OK", "text/plain", format!("ready\n{detail}"))
                    } else {
                        ("503 Service Unavailable", "text/plain", "not ready\n".to_string())
                    }
                }
                _ => ("404 Not Found", "text/plain", "try /metrics, /healthz or /readyz\n".to_string()),
            };
            let response = format!(
                "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            if let Err(e) = socket.write_all(response.as_bytes()).await {
                debug!(error = %e, "cannot answer a metrics request");
            }
        });
    }
}

/// Refreshes the gauges sampled from the store.
async fn sample(store: &Store) {
    match store.ops_snapshot(now_ms()).await {
        Ok(s) => metrics::queue(&s),
        Err(e) => warn!(error = %e, "cannot sample the queue for /metrics"),
    }
}
