//! `POST /hooks/{workflow}`: where platforms deliver webhooks.
//!
//! Status codes tell the platform what to do: 200 means stored (or a known
//! duplicate, or an event this workflow ignores) and it must not resend;
//! 401/400/404/413 mean the delivery is wrong and nothing was stored; 503
//! means we could not store it and the platform should retry.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::{AppState, error};
use crate::runtime::intake::{self, Accepted, Refused};
use crate::telemetry::metrics::METRICS;

pub async fn receive(State(state): State<Arc<AppState>>, Path(name): Path<String>, uri: Uri, headers: HeaderMap, body: Body) -> Response {
    let cfg = state.rt.registry.current();
    let Some(wf) = cfg.workflows.get(&name).cloned() else {
        METRICS.inc("ordersync_webhooks_total", &[("workflow", "(unknown)"), ("result", "unknown_workflow")]);
        return error(StatusCode::NOT_FOUND, format!("no workflow named `{name}`"));
    };
    let limit = wf.connection.connector.webhook.as_ref().map_or(1024 * 1024, |w| w.max_body_bytes);
    let declared = headers.get("content-length").and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        METRICS.inc("ordersync_webhooks_total", &[("workflow", &name), ("result", "too_large")]);
        return error(StatusCode::PAYLOAD_TOO_LARGE, format!("the body is larger than {limit} bytes"));
    }
    let bytes = match axum::body::to_bytes(body, limit).await {
        Ok(b) => b,
        Err(_) => {
            METRICS.inc("ordersync_webhooks_total", &[("workflow", &name), ("result", "too_large")]);
            return error(StatusCode::PAYLOAD_TOO_LARGE, format!("the body is larger than {limit} bytes or was cut off"));
        }
    };
    let url = public_url(&cfg.instance.public_url, &headers, &uri);
    match intake::accept(&state.rt, &wf, &headers, &bytes, &url).await {
        Ok(Accepted::Queued(id)) => (StatusCode::OK, axum::Json(json!({"status": "accepted", "event": id}))).into_response(),
        Ok(Accepted::Duplicate(id)) => (StatusCode::OK, axum::Json(json!({"status": "duplicate", "event": id}))).into_response(),
        Ok(Accepted::Batch { queued, duplicates }) => {
            (StatusCode::OK, axum::Json(json!({"status": "accepted", "events": queued, "duplicates": duplicates}))).into_response()
        }
        Ok(Accepted::Ignored(reason)) => (StatusCode::OK, axum::Json(json!({"status": "ignored", "reason": reason}))).into_response(),
        Ok(Accepted::Ping) => (StatusCode::OK, axum::Json(json!({"status": "ping"}))).into_response(),
        Err(Refused::Signature(e)) => {
            tracing::warn!(workflow = %name, "webhook refused: {e}");
            error(StatusCode::UNAUTHORIZED, e.to_string())
        }
        Err(Refused::BadJson(e)) => error(StatusCode::BAD_REQUEST, format!("the body is not valid JSON: {e}")),
        Err(Refused::Store(e)) => {
            tracing::error!(workflow = %name, "webhook not stored: {e}");
            error(StatusCode::SERVICE_UNAVAILABLE, "the delivery could not be stored; retry later")
        }
    }
}

/// The URL the platform posted to, as it signed it: the configured public
/// base URL, or what the Host header says.
fn public_url(base: &Option<String>, headers: &HeaderMap, uri: &Uri) -> String {
    let path = uri.path_and_query().map_or(uri.path(), |p| p.as_str());
    match base {
        Some(b) => format!("{}{}", b.trim_end_matches('/'), path),
        None => {
            let host = headers.get("host").and_then(|v| v.to_str().ok()).unwrap_or("localhost");
            let scheme = headers.get("x-forwarded-proto").and_then(|v| v.to_str().ok()).unwrap_or("http");
            format!("{scheme}://{host}{path}")
        }
    }
}
