//! The one HTTP listener: `/hooks/{workflow}` for platforms, `/api/...` for
//! operators (bearer token), `/metrics`, `/healthz`.

pub mod admin;
pub mod hooks;

use std::sync::Arc;

use axum::Router;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::json;

use crate::config::secret::Secret;
use crate::runtime::Runtime;
use crate::telemetry::metrics::METRICS;

pub struct AppState {
    pub rt: Arc<Runtime>,
    pub admin_token: Secret,
}

pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/hooks/{workflow}", post(hooks::receive))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .nest("/api", admin::router(state.clone()))
        .with_state(state)
}

async fn healthz() -> Response {
    (StatusCode::OK, axum::Json(json!({"status": "ok"}))).into_response()
}

async fn metrics(axum::extract::State(state): axum::extract::State<Arc<AppState>>) -> Response {
    if let Ok(depth) = state.rt.store.queue_depth() {
        METRICS.set("ordersync_queue_depth", &[], depth as f64);
    }
    if let Ok(jobs) = state.rt.store.writebacks() {
        METRICS.set("ordersync_outbox_pending", &[], jobs.len() as f64);
    }
    if let Ok(dl) = state.rt.store.dead_letters() {
        METRICS.set("ordersync_dead_letters", &[], dl.len() as f64);
    }
    ([("content-type", "text/plain; version=0.0.4")], METRICS.render()).into_response()
}

/// A JSON error body: `{"error": "..."}`.
pub fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, axum::Json(json!({ "error": message.into() }))).into_response()
}
