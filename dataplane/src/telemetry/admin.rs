//! The admin port: `/healthz` (the process is up), `/readyz` (a config is loaded),
//! `/metrics` (Prometheus), `/config` (the revision and services being served, and the
//! state of the config stream).

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;

use crate::control::ConfigState;
use crate::telemetry::metrics::Metrics;

#[derive(Debug)]
pub struct Admin {
    pub config: Arc<ConfigState>,
    pub metrics: Arc<Metrics>,
}

pub fn app(admin: Arc<Admin>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/config", get(config))
        .with_state(admin)
}

async fn readyz(State(a): State<Arc<Admin>>) -> impl IntoResponse {
    match a.config.readiness() {
        Ok(ready) => (StatusCode::OK, format!("{ready}\n")),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")),
    }
}

async fn metrics(State(a): State<Arc<Admin>>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        a.metrics.encode(),
    )
}

async fn config(State(a): State<Arc<Admin>>) -> impl IntoResponse {
    axum::Json(a.config.report())
}
