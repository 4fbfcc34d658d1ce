//! `/api/...`: the admin and reporting API, behind a bearer token.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, Query, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::json;

use super::{AppState, error};
use crate::model::OrderStatus;

pub fn router(state: Arc<AppState>) -> Router<Arc<AppState>> {
    Router::new()
        .route("/status", get(status))
        .route("/reload", post(reload))
        .route("/orders", get(orders))
        .route("/orders/{id}", get(order))
        .route("/failed-events", get(failed_events))
        .route("/dead-letters", get(dead_letters))
        .route("/dead-letters/{id}", get(dead_letter).delete(drop_dead_letter))
        .route("/dead-letters/{id}/replay", post(replay_dead_letter))
        .layer(middleware::from_fn_with_state(state, require_token))
}

/// Constant-time check of `Authorization: Bearer <token>`.
async fn require_token(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let given = req.headers().get("authorization").and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer ")).unwrap_or("");
    let expected = state.admin_token.expose().as_bytes();
    let ok = given.len() == expected.len() && given.bytes().zip(expected.iter()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0;
    if !ok {
        let mut r = error(StatusCode::UNAUTHORIZED, "the admin API needs `Authorization: Bearer <token>`");
        r.headers_mut().insert("www-authenticate", "Bearer".parse().expect("static header"));
        return r;
    }
    next.run(req).await
}

fn internal(e: impl std::fmt::Display) -> Response {
    error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
}

async fn status(State(state): State<Arc<AppState>>) -> Response {
    let rt = &state.rt;
    let cfg = rt.registry.current();
    let reload = rt.registry.state();
    let workflows: Vec<_> = cfg
        .workflows
        .values()
        .map(|w| json!({"name": w.name, "connection": w.connection.name, "platform": w.connection.connector.name, "trigger": "webhook", "hook": format!("/hooks/{}", w.name)}))
        .collect();
    let queue = rt.store.queue_depth().unwrap_or(0);
    let outbox = rt.store.writebacks().map(|j| j.len()).unwrap_or(0);
    let dead = rt.store.dead_letters().map(|d| d.len()).unwrap_or(0);
    axum::Json(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "config": reload,
        "workflows": workflows,
        "queue_depth": queue,
        "outbox_pending": outbox,
        "dead_letters": dead,
        "orders": rt.store.order_count().unwrap_or(0),
    }))
    .into_response()
}

/// Load the config files again now (also reads rotated secrets).
async fn reload(State(state): State<Arc<AppState>>) -> Response {
    let outcome = crate::reload::reload(&state.rt, "admin API", true).await;
    let status = match outcome {
        crate::reload::Outcome::Rejected { .. } => StatusCode::UNPROCESSABLE_ENTITY,
        _ => StatusCode::OK,
    };
    (status, axum::Json(outcome)).into_response()
}

#[derive(Deserialize)]
struct OrdersQuery {
    status: Option<String>,
    limit: Option<usize>,
}

async fn orders(State(state): State<Arc<AppState>>, Query(q): Query<OrdersQuery>) -> Response {
    let status = match q.status.as_deref().map(|s| OrderStatus::parse(s).ok_or(s)) {
        None => None,
        Some(Ok(s)) => Some(s),
        Some(Err(s)) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("unknown status `{s}`; expected received, approved, rejected, waitlisted, error, cancelled or fulfilled"),
            );
        }
    };
    match state.rt.store.orders(status, q.limit.unwrap_or(1000).min(100_000)) {
        Ok(list) => axum::Json(json!({ "orders": list })).into_response(),
        Err(e) => internal(e),
    }
}

async fn order(State(state): State<Arc<AppState>>, Path(id): Path<String>) -> Response {
    let store = &state.rt.store;
    match store.order(&id) {
        Ok(Some(rec)) => {
            let audit = store.audit(&id).unwrap_or_default();
            let writeback = store.writeback(&id).ok().flatten();
            axum::Json(json!({ "order": rec, "audit": audit, "writeback": writeback })).into_response()
        }
        Ok(None) => error(StatusCode::NOT_FOUND, format!("no order `{id}`")),
        Err(e) => internal(e),
    }
}

async fn failed_events(State(state): State<Arc<AppState>>) -> Response {
    match state.rt.store.failed_events() {
        Ok(list) => axum::Json(json!({ "failed_events": list })).into_response(),
        Err(e) => internal(e),
    }
}

async fn dead_letter(State(state): State<Arc<AppState>>, Path(id): Path<u64>) -> Response {
    match state.rt.store.dead_letter(id) {
        Ok(Some(d)) => {
            let order = state.rt.store.order(&d.order_id).ok().flatten();
            let writeback = state.rt.store.writeback(&d.order_id).ok().flatten();
            axum::Json(json!({ "dead_letter": d, "order": order, "writeback": writeback })).into_response()
        }
        Ok(None) => error(StatusCode::NOT_FOUND, format!("no dead letter {id}")),
        Err(e) => internal(e),
    }
}

/// Send the step again with the same idempotency key; answers once the
/// write-back has run (done, or dead-lettered again).
async fn replay_dead_letter(State(state): State<Arc<AppState>>, Path(id): Path<u64>) -> Response {
    use crate::runtime::writeback::{DeadLetterError, replay};
    match replay(&state.rt, id).await {
        Ok(order) => axum::Json(json!({ "order": order })).into_response(),
        Err(DeadLetterError::NotFound(_)) => error(StatusCode::NOT_FOUND, format!("no dead letter {id}")),
        Err(e) => internal(e),
    }
}

async fn drop_dead_letter(State(state): State<Arc<AppState>>, Path(id): Path<u64>) -> Response {
    use crate::runtime::writeback::{DeadLetterError, drop_letter};
    match drop_letter(&state.rt, id).await {
        Ok(d) => axum::Json(json!({ "dropped": d })).into_response(),
        Err(DeadLetterError::NotFound(_)) => error(StatusCode::NOT_FOUND, format!("no dead letter {id}")),
        Err(e) => internal(e),
    }
}

async fn dead_letters(State(state): State<Arc<AppState>>) -> Response {
    match state.rt.store.dead_letters() {
        Ok(list) => axum::Json(json!({ "dead_letters": list })).into_response(),
        Err(e) => internal(e),
    }
}
