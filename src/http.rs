//! `/metrics`, `/healthz` and `/readyz` for Prometheus and the orchestrator's probes.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;

use crate::metrics::METRICS;

/// Readiness: every stage of this process has restored its state and is processing.
#[derive(Default)]
pub struct Health {
    pub stages_total: AtomicUsize,
    pub stages_ready: AtomicUsize,
    pub failed: AtomicBool,
    /// Set first thing on SIGTERM/SIGINT, so the orchestrator stops routing to us before the
    /// stages stop.
    pub stopping: AtomicBool,
}

impl Health {
    pub fn ready(&self) -> bool {
        !self.failed.load(Ordering::Relaxed)
            && !self.stopping.load(Ordering::Relaxed)
            && self.stages_ready.load(Ordering::Relaxed)
                >= self.stages_total.load(Ordering::Relaxed)
    }
}

/// Serves the endpoints until the process ends.
pub async fn serve(addr: SocketAddr, health: Arc<Health>) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen for metrics on {addr}: {e}; pick another `metrics.listen` or set SLUICE_METRICS_LISTEN"))?;
    let ready = health.clone();
    let app = Router::new()
        .route("/metrics", get(|| async { METRICS.render() }))
        .route(
            "/healthz",
            get(move || {
                let h = health.clone();
                async move {
                    if h.failed.load(Ordering::Relaxed) {
                        (StatusCode::SERVICE_UNAVAILABLE, "failed\n")
                    } else {
                        (StatusCode::OK, "ok\n")
                    }
                }
            }),
        )
        .route(
            "/readyz",
            get(move || {
                let h = ready.clone();
                async move {
                    if h.ready() {
                        (StatusCode::OK, "ready\n")
                    } else if h.stopping.load(Ordering::Relaxed) {
                        (StatusCode::SERVICE_UNAVAILABLE, "stopping\n")
                    } else {
                        (StatusCode::SERVICE_UNAVAILABLE, "restoring\n")
                    }
                }
            }),
        );
    axum::serve(listener, app).await?;
    Ok(())
}
