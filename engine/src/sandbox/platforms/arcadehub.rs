//! ArcadeHub, a made-up parts marketplace that the integrator guide
//! (examples/guide) adds to ordersync step by step. Small on purpose, but
//! shaped like many real REST APIs:
//!
//! - HTTP Basic auth with an API key id and secret;
//! - webhooks `order.created` signed with HMAC-SHA256 over the raw body,
//!   hex, in `X-ArcadeHub-Signature: sha256=…`, identified by
//!   `X-ArcadeHub-Delivery`;
//! - `GET /v1/stock/{sku}` with warehouses and inbound shipments with dates;
//! - `POST /v1/orders/{ref}/status` honouring an `Idempotency-Key` header;
//! - errors as `{"error": {"code": …, "message": …}}`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use serde_json::{Value, json};

use crate::config::raw::SignatureAlgorithm;
use crate::connector::webhook::{encode_hex, hmac_bytes};
use crate::sandbox::erp::{Erp, OrderState, SimOrder};
use crate::sandbox::platforms::{Delivery, OrderEvent, SimConnection, SimPlatform};

#[derive(Debug, Clone)]
pub struct ArcadeHubCredentials {
    pub key_id: String,
    pub key_secret: String,
    pub webhook_secret: String,
}

pub struct ArcadeHubSim {
    pub erp: Arc<Erp>,
    pub creds: ArcadeHubCredentials,
    /// Idempotency keys already answered, and their answers.
    seen: Mutex<HashMap<String, Value>>,
}

fn error(status: StatusCode, code: &str, message: &str) -> Response {
    (status, axum::Json(json!({"error": {"code": code, "message": message}}))).into_response()
}

impl ArcadeHubSim {
    pub fn new(erp: Arc<Erp>, creds: ArcadeHubCredentials) -> Arc<Self> {
        Arc::new(ArcadeHubSim { erp, creds, seen: Mutex::new(HashMap::new()) })
    }

    fn authorized(&self, headers: &HeaderMap) -> bool {
        let expected = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", self.creds.key_id, self.creds.key_secret))
        );
        headers.get("authorization").and_then(|v| v.to_str().ok()) == Some(expected.as_str())
    }

    /// The `order.created` body.
    pub fn order_payload(&self, o: &SimOrder) -> Value {
        let c = &o.customer;
        let tier = c.tags.first().cloned().unwrap_or_else(|| "standard".into());
        json!({
            "event": "order.created",
            "order": {
                "ref": format!("AH-{}", o.number),
                "placed_at": o.created_at,
                "buyer": {"account": format!("ACC-{}", c.id), "name": if c.company.is_empty() { format!("{} {}", c.first_name, c.last_name) } else { c.company.clone() }, "tier": tier},
                "items": o.lines.iter().map(|l| json!({"part_no": l.sku, "units": l.qty})).collect::<Vec<_>>(),
            }
        })
    }
}

impl SimPlatform for ArcadeHubSim {
    fn name(&self) -> &'static str {
        "arcadehub"
    }

    fn router(self: Arc<Self>) -> Router {
        Router::new().route("/v1/stock/{sku}", get(stock)).route("/v1/orders/{reference}/status", post(set_status)).with_state(self)
    }

    fn connection(&self, _base_url: &str) -> SimConnection {
        SimConnection {
            values: Default::default(),
            secrets: [
                ("key_id".to_string(), self.creds.key_id.clone()),
                ("key_secret".to_string(), self.creds.key_secret.clone()),
                ("webhook_secret".to_string(), self.creds.webhook_secret.clone()),
            ]
            .into(),
        }
    }

    fn order_topic(&self, event: OrderEvent) -> Option<&'static str> {
        (event == OrderEvent::Created).then_some("order.created")
    }

    /// `order.created`, signed; a redelivery keeps its delivery id.
    fn order_delivery(&self, _event: OrderEvent, order: &SimOrder, _url: &str) -> Delivery {
        let body = serde_json::to_vec(&self.order_payload(order)).expect("JSON serializes");
        let signature =
            format!("sha256={}", encode_hex(&hmac_bytes(SignatureAlgorithm::HmacSha256, self.creds.webhook_secret.as_bytes(), &body)));
        let delivery_id = order.extra.get("webhook_id").and_then(Value::as_str).unwrap_or_default().to_string();
        let headers = [
            ("Content-Type", "application/json".to_string()),
            ("X-ArcadeHub-Event", "order.created".to_string()),
            ("X-ArcadeHub-Delivery", delivery_id),
            ("X-ArcadeHub-Signature", signature),
        ];
        Delivery { headers: headers.into_iter().map(|(k, v)| (k.to_string(), v)).collect(), body }
    }
}

async fn stock(State(sim): State<Arc<ArcadeHubSim>>, Path(sku): Path<String>, headers: HeaderMap) -> Response {
    if !sim.authorized(&headers) {
        return error(StatusCode::UNAUTHORIZED, "unauthorized", "API key id or secret is wrong");
    }
    let Some(p) = sim.erp.product_by_sku(&sku) else {
        return error(StatusCode::NOT_FOUND, "unknown_part", &format!("no part {sku}"));
    };
    let levels = sim.erp.levels(&sku);
    let warehouses: Vec<Value> = levels.iter().map(|(loc, l)| json!({"code": format!("WH-{}", loc.id), "on_hand": l.on_hand})).collect();
    let inbound: Vec<Value> =
        levels.iter().filter(|(_, l)| l.incoming > 0).map(|(_, l)| json!({"units": l.incoming, "due": l.incoming_eta})).collect();
    axum::Json(json!({"sku": p.sku, "status": if p.discontinued { "discontinued" } else { "active" }, "warehouses": warehouses, "inbound": inbound})).into_response()
}

async fn set_status(
    State(sim): State<Arc<ArcadeHubSim>>,
    Path(reference): Path<String>,
    headers: HeaderMap,
    axum::Json(body): axum::Json<Value>,
) -> Response {
    if !sim.authorized(&headers) {
        return error(StatusCode::UNAUTHORIZED, "unauthorized", "API key id or secret is wrong");
    }
    let key = headers.get("idempotency-key").and_then(|v| v.to_str().ok()).map(str::to_string);
    if let Some(k) = &key {
        if let Some(previous) = sim.seen.lock().unwrap_or_else(|p| p.into_inner()).get(k) {
            return axum::Json(previous.clone()).into_response();
        }
    }
    let number: Option<u64> = reference.strip_prefix("AH-").and_then(|n| n.parse().ok());
    let Some(order) = number.and_then(|n| sim.erp.orders().into_iter().find(|o| o.number == n && o.platform == "arcadehub")) else {
        return error(StatusCode::NOT_FOUND, "unknown_order", &format!("no order {reference}"));
    };
    let status = body.get("status").and_then(Value::as_str).unwrap_or("");
    if !["confirmed", "backordered", "cancelled"].contains(&status) {
        return error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_status", "status must be confirmed, backordered or cancelled");
    }
    let note = body.get("note").and_then(Value::as_str).unwrap_or("").to_string();
    sim.erp.update_order(order.id, |o| {
        o.tags.insert(status.to_string());
        o.notes.push(note.clone());
        if status == "cancelled" {
            o.state = OrderState::Cancelled;
        }
    });
    sim.erp.effect(
        "arcadehub",
        "order_status",
        Some(order.id),
        &format!("arcadehub:status:{}:{}", order.id, key.clone().unwrap_or_else(|| status.to_string())),
        json!({"status": status}),
    );
    let answer = json!({"ref": reference, "status": status});
    if let Some(k) = key {
        sim.seen.lock().unwrap_or_else(|p| p.into_inner()).insert(k, answer.clone());
    }
    axum::Json(answer).into_response()
}
