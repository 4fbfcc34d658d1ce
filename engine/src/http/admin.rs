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
        .route("/inventory", get(inventory))
        .route("/inventory/{sku}", get(inventory_sku))
        .route("/waitlist", get(waitlist))
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
        .map(|w| {
            let hook = matches!(w.trigger, crate::workflow::Trigger::Webhook { .. }).then(|| format!("/hooks/{}", w.name));
            json!({"name": w.name, "kind": w.kind_name(), "connection": w.connection.name, "platform": w.connection.connector.name, "trigger": w.trigger_name(), "hook": hook})
        })
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

/// One SKU's figures over every location.
fn sku_figures(
    rt: &crate::runtime::Runtime,
    cfg: &crate::config::ConfigSet,
    sku: &str,
    rows: &[(String, crate::store::StockRow)],
    reserved: i64,
) -> serde_json::Value {
    let on_hand: i64 = rows.iter().map(|(_, r)| r.on_hand).sum();
    let safety = cfg.inventory.safety_stock(sku);
    let incoming = rt.store.incoming(sku).unwrap_or_default();
    let locations: Vec<_> =
        rows.iter().map(|(l, r)| json!({"location": l, "on_hand": r.on_hand, "source": r.source, "reported_at": r.reported_at})).collect();
    json!({
        "sku": sku,
        "on_hand": on_hand,
        "reserved": reserved,
        "safety": safety,
        "available": on_hand - reserved - safety,
        "incoming": incoming,
        "master": cfg.inventory.master_for(sku),
        "locations": locations,
    })
}

async fn inventory(State(state): State<Arc<AppState>>) -> Response {
    let rt = &state.rt;
    let cfg = rt.registry.current();
    let (rows, reserved) = match (rt.store.stock_all(), rt.store.reserved_all()) {
        (Ok(r), Ok(q)) => (r, q),
        (Err(e), _) | (_, Err(e)) => return internal(e),
    };
    let mut by_sku: std::collections::BTreeMap<String, Vec<(String, crate::store::StockRow)>> = Default::default();
    for (sku, loc, row) in rows {
        by_sku.entry(sku).or_default().push((loc, row));
    }
    let reserved: std::collections::BTreeMap<String, i64> = reserved.into_iter().collect();
    for sku in reserved.keys() {
        by_sku.entry(sku.clone()).or_default();
    }
    let skus: Vec<_> = by_sku.iter().map(|(sku, rows)| sku_figures(rt, &cfg, sku, rows, reserved.get(sku).copied().unwrap_or(0))).collect();
    let total = |k: &str| skus.iter().map(|s| s[k].as_i64().unwrap_or(0)).sum::<i64>();
    let totals = json!({"skus": skus.len(), "on_hand": total("on_hand"), "reserved": total("reserved"), "available": total("available")});
    axum::Json(json!({ "totals": totals, "skus": skus })).into_response()
}

#[derive(Deserialize)]
struct SkuQuery {
    /// How many history entries to include (newest; default 100).
    history: Option<usize>,
}

async fn inventory_sku(State(state): State<Arc<AppState>>, Path(sku): Path<String>, Query(q): Query<SkuQuery>) -> Response {
    let rt = &state.rt;
    let cfg = rt.registry.current();
    let rows = match rt.store.stock(&sku) {
        Ok(r) => r,
        Err(e) => return internal(e),
    };
    let reservations = rt.store.reservations(&sku).unwrap_or_default();
    let reserved = reservations.iter().map(|(_, q)| q).sum();
    if rows.is_empty() && reservations.is_empty() && rt.store.stock_history(&sku, 1).unwrap_or_default().is_empty() {
        return error(StatusCode::NOT_FOUND, format!("the ledger knows no SKU `{sku}`"));
    }
    let mut body = sku_figures(rt, &cfg, &sku, &rows, reserved);
    body["reservations"] = json!(reservations.iter().map(|(o, q)| json!({"order": o, "qty": q})).collect::<Vec<_>>());
    body["waitlist"] = json!(rt.store.waitlist(Some(&sku)).unwrap_or_default());
    body["history"] = json!(rt.store.stock_history(&sku, q.history.unwrap_or(100)).unwrap_or_default());
    axum::Json(body).into_response()
}

#[derive(Deserialize)]
struct WaitlistQuery {
    sku: Option<String>,
}

async fn waitlist(State(state): State<Arc<AppState>>, Query(q): Query<WaitlistQuery>) -> Response {
    let rt = &state.rt;
    match rt.store.waitlist(q.sku.as_deref()) {
        Ok(entries) => {
            let list: Vec<_> = entries
                .into_iter()
                .map(|e| {
                    let rec = rt.store.order(&e.order_id).ok().flatten();
                    let qty = rec.as_ref().map_or(0, |r| r.order.lines.iter().filter(|l| l.sku == e.sku).map(|l| l.qty).sum::<i64>());
                    json!({
                        "sku": e.sku, "order": e.order_id, "priority": e.priority, "arrival": e.arrival, "qty": qty,
                        "number": rec.as_ref().map(|r| r.order.number.clone()),
                        "customer": rec.as_ref().and_then(|r| r.order.customer.name.clone()),
                        "reason": rec.as_ref().map(|r| r.reason.clone()),
                    })
                })
                .collect();
            axum::Json(json!({ "waitlist": list })).into_response()
        }
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
