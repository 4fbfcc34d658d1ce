//! Shopify, simulated: the Admin GraphQL endpoint and signed `orders/create`
//! webhooks, in Shopify's own shapes.
//!
//! What it imitates: `X-Shopify-Access-Token` auth (401 with Shopify's error
//! text otherwise), the GraphQL envelope (`data`, top-level `errors`,
//! `userErrors` in mutation payloads, `extensions.cost` with a leaky-bucket
//! throttle answering `THROTTLED`), GIDs, the REST-shaped webhook body and its
//! headers, HMAC-SHA256 base64 signatures over the raw body, and the
//! `@idempotent(key:)` directive on `inventoryAdjustQuantities`.
//!
//! GraphQL is not parsed in full: the first field of the operation picks the
//! resolver and its arguments come from `variables`, which is how every
//! client that follows Shopify's guidance sends them.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use base64::Engine as _;
use serde_json::{Value, json};

use crate::config::raw::SignatureAlgorithm;
use crate::connector::webhook::hmac_bytes;
use crate::sandbox::erp::{Erp, OrderState, SimOrder};
use crate::sandbox::faults::{self, Faults, When};
use crate::sandbox::platforms::{Delivery, OrderEvent, SimConnection, SimPlatform};

/// Credentials the simulated shop accepts and signs with.
#[derive(Debug, Clone)]
pub struct ShopifyCredentials {
    pub shop: String,
    pub access_token: String,
    pub webhook_secret: String,
}

/// The GraphQL cost bucket (points; Shopify's Standard plan refills 100/s).
#[derive(Debug, Clone, Copy)]
pub struct CostLimits {
    pub maximum: f64,
    pub restore_per_second: f64,
}

impl Default for CostLimits {
    fn default() -> Self {
        CostLimits { maximum: 2000.0, restore_per_second: 100.0 }
    }
}

pub struct ShopifySim {
    pub erp: Arc<Erp>,
    faults: Arc<Faults>,
    pub creds: ShopifyCredentials,
    limits: CostLimits,
    bucket: Mutex<(f64, Instant)>,
    /// Requests answered THROTTLED.
    pub throttled: std::sync::atomic::AtomicU64,
    /// Requests per GraphQL root field.
    requests: Mutex<std::collections::HashMap<String, u64>>,
}

const QUERY_COST: f64 = 10.0;
const API_VERSION: &str = "2026-10";

fn gid(kind: &str, id: u64) -> String {
    format!("gid://shopify/{kind}/{id}")
}

fn parse_gid(gid: &str, kind: &str) -> Option<u64> {
    gid.strip_prefix(&format!("gid://shopify/{kind}/"))?.split('?').next()?.parse().ok()
}

impl ShopifySim {
    pub fn new(erp: Arc<Erp>, faults: Arc<Faults>, creds: ShopifyCredentials, limits: CostLimits) -> Arc<Self> {
        Arc::new(ShopifySim {
            erp,
            faults,
            creds,
            limits,
            bucket: Mutex::new((limits.maximum, Instant::now())),
            throttled: Default::default(),
            requests: Default::default(),
        })
    }

    /// How many requests selected `field` (e.g. `productVariants`).
    pub fn requests(&self, field: &str) -> u64 {
        self.requests.lock().unwrap_or_else(|p| p.into_inner()).get(field).copied().unwrap_or(0)
    }

    /// Take `cost` points from the bucket; `Err(available)` when throttled.
    fn spend(&self, cost: f64) -> Result<f64, f64> {
        let mut b = self.bucket.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        b.0 = (b.0 + now.duration_since(b.1).as_secs_f64() * self.limits.restore_per_second).min(self.limits.maximum);
        b.1 = now;
        if b.0 < cost {
            return Err(b.0);
        }
        b.0 -= cost;
        Ok(b.0)
    }

    fn cost_extension(&self, cost: f64, available: f64) -> Value {
        json!({"cost": {"requestedQueryCost": cost, "actualQueryCost": cost, "throttleStatus": {
            "maximumAvailable": self.limits.maximum, "currentlyAvailable": available.floor(), "restoreRate": self.limits.restore_per_second}}})
    }

    /// The order as Shopify sends it in an `orders/create` webhook (REST shape).
    pub fn order_payload(&self, o: &SimOrder) -> Value {
        let line_items: Vec<Value> = o
            .lines
            .iter()
            .map(|l| {
                let p = self.erp.product_by_sku(&l.sku);
                let (pid, title, price) = p.map_or((0, l.sku.clone(), "0.00".into()), |p| (p.id, p.title, p.price));
                json!({"id": l.id, "admin_graphql_api_id": gid("LineItem", l.id), "variant_id": pid + 36_000_000_000, "product_id": pid,
                       "sku": l.sku, "title": title, "name": title, "quantity": l.qty, "fulfillable_quantity": l.qty, "price": price,
                       "requires_shipping": true, "fulfillment_status": null})
            })
            .collect();
        let c = &o.customer;
        let name = format!("{} {}", c.first_name, c.last_name);
        json!({
            "id": o.id, "admin_graphql_api_id": gid("Order", o.id), "name": format!("#{}", o.number), "order_number": o.number,
            "email": c.email, "created_at": o.created_at, "updated_at": o.created_at, "processed_at": o.created_at,
            "financial_status": "paid",
            "fulfillment_status": if o.extra.contains_key("fulfilled") { json!("fulfilled") } else { Value::Null },
            "cancelled_at": o.extra.get("cancelled_at").cloned().unwrap_or(Value::Null),
            "cancel_reason": o.cancel_reason.as_ref().map(|r| r.to_ascii_lowercase()),
            "tags": "", "note": null, "currency": "USD", "test": false,
            "customer": {"id": c.id, "admin_graphql_api_id": gid("Customer", c.id), "email": c.email, "first_name": c.first_name,
                         "last_name": c.last_name, "tags": c.tags.join(", "), "state": "enabled"},
            "billing_address": {"name": name, "company": if c.company.is_empty() { Value::Null } else { json!(c.company) }},
            "line_items": line_items,
        })
    }

    /// The body and headers of an `orders/create` delivery, signed.
    pub fn delivery(&self, order: &SimOrder, webhook_id: &str) -> (Vec<u8>, Vec<(&'static str, String)>) {
        self.signed(
            "orders/create",
            serde_json::to_vec(&self.order_payload(order)).expect("JSON serializes"),
            webhook_id,
            &format!("evt-{}", order.id),
            &order.created_at,
        )
    }

    /// Sign a body for a topic, with Shopify's delivery headers.
    pub fn signed(
        &self,
        topic: &str,
        body: Vec<u8>,
        webhook_id: &str,
        event_id: &str,
        triggered_at: &str,
    ) -> (Vec<u8>, Vec<(&'static str, String)>) {
        let signature = base64::engine::general_purpose::STANDARD.encode(hmac_bytes(
            SignatureAlgorithm::HmacSha256,
            self.creds.webhook_secret.as_bytes(),
            &body,
        ));
        let headers = vec![
            ("Content-Type", "application/json".to_string()),
            ("X-Shopify-Topic", topic.to_string()),
            ("X-Shopify-Hmac-Sha256", signature),
            ("X-Shopify-Shop-Domain", format!("{}.myshopify.com", self.creds.shop)),
            ("X-Shopify-API-Version", API_VERSION.to_string()),
            ("X-Shopify-Webhook-Id", webhook_id.to_string()),
            ("X-Shopify-Event-Id", event_id.to_string()),
            ("X-Shopify-Triggered-At", triggered_at.to_string()),
        ];
        (body, headers)
    }
}

fn owned(headers: Vec<(&'static str, String)>) -> Vec<(String, String)> {
    headers.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
}

impl SimPlatform for ShopifySim {
    fn name(&self) -> &'static str {
        "shopify"
    }

    fn router(self: Arc<Self>) -> Router {
        Router::new().route("/admin/api/{version}/graphql.json", post(graphql)).with_state(self)
    }

    fn connection(&self, _base_url: &str) -> SimConnection {
        SimConnection {
            values: [("shop".to_string(), self.creds.shop.clone())].into(),
            secrets: [
                ("access_token".to_string(), self.creds.access_token.clone()),
                ("webhook_secret".to_string(), self.creds.webhook_secret.clone()),
            ]
            .into(),
        }
    }

    fn order_topic(&self, event: OrderEvent) -> Option<&'static str> {
        Some(match event {
            OrderEvent::Created => "orders/create",
            OrderEvent::Cancelled => "orders/cancelled",
            OrderEvent::Fulfilled => "orders/fulfilled",
        })
    }

    fn order_delivery(&self, event: OrderEvent, order: &SimOrder, _url: &str) -> Delivery {
        let (body, headers) = match event {
            // A redelivery of the creation keeps its webhook id, as Shopify's retries do.
            OrderEvent::Created => {
                let webhook_id = order.extra.get("webhook_id").and_then(Value::as_str).unwrap_or_default().to_string();
                self.delivery(order, &webhook_id)
            }
            _ => {
                let topic = self.order_topic(event).expect("every order event has a topic");
                let body = serde_json::to_vec(&self.order_payload(order)).expect("JSON serializes");
                let now = crate::clock::format_rfc3339(time::OffsetDateTime::now_utc());
                self.signed(topic, body, &crate::sandbox::uuid_like(), &format!("evt-{topic}-{}", order.id), &now)
            }
        };
        Delivery { headers: owned(headers), body }
    }

    fn stock_topic(&self) -> Option<&'static str> {
        Some("inventory_levels/update")
    }

    /// `inventory_levels/update` for every level of `sku`.
    fn stock_deliveries(&self, sku: &str, _url: &str) -> Vec<Delivery> {
        let Some(p) = self.erp.product_by_sku(sku) else { return Vec::new() };
        let item = p.id + 40_000_000_000;
        let now = crate::clock::format_rfc3339(time::OffsetDateTime::now_utc());
        self.erp
            .levels(sku)
            .into_iter()
            .map(|(loc, level)| {
                let body = json!({"inventory_item_id": item, "location_id": loc.id, "available": level.available(), "updated_at": now,
                    "admin_graphql_api_id": format!("gid://shopify/InventoryLevel/{}?inventory_item_id={item}", loc.id)});
                let (body, headers) = self.signed(
                    "inventory_levels/update",
                    serde_json::to_vec(&body).expect("JSON serializes"),
                    &crate::sandbox::uuid_like(),
                    &crate::sandbox::uuid_like(),
                    &now,
                );
                Delivery { headers: owned(headers), body }
            })
            .collect()
    }
}

fn unauthorized() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        axum::Json(json!({"errors": "[API] Invalid API key or access token (unrecognized login or wrong password)"})),
    )
        .into_response()
}

fn gql_error(message: &str) -> Response {
    (StatusCode::OK, axum::Json(json!({"errors": [{"message": message, "locations": [{"line": 1, "column": 1}]}]}))).into_response()
}

/// The first field selected by the operation: `productVariants`, `tagsAdd`, ….
fn root_field(query: &str) -> Option<&str> {
    let body = &query[query.find('{')? + 1..];
    let start = body.find(|c: char| c.is_ascii_alphabetic() || c == '_')?;
    let rest = &body[start..];
    let end = rest.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(rest.len());
    Some(&rest[..end])
}

/// The root field's arguments, with `$variables` replaced by their values.
fn root_args(query: &str, vars: &Value) -> Value {
    let mut out = serde_json::Map::new();
    let Some(field) = root_field(query) else {
        return Value::Object(out);
    };
    let body = &query[query.find('{').unwrap_or(0)..];
    let Some(at) = body.find(field) else {
        return Value::Object(out);
    };
    let rest = &body[at + field.len()..];
    if !rest.trim_start().starts_with('(') {
        return Value::Object(out);
    }
    let open = rest.find('(').expect("checked above") + 1;
    let mut depth = 0;
    let mut end = rest.len();
    for (i, c) in rest[open..].char_indices() {
        match c {
            '(' | '[' | '{' => depth += 1,
            ')' if depth == 0 => {
                end = open + i;
                break;
            }
            ')' | ']' | '}' => depth -= 1,
            _ => {}
        }
    }
    let mut parts = Vec::new();
    let (mut depth, mut start, mut in_str) = (0, open, false);
    for (i, c) in rest[open..end].char_indices() {
        match c {
            '"' => in_str = !in_str,
            '(' | '[' | '{' if !in_str => depth += 1,
            ')' | ']' | '}' if !in_str => depth -= 1,
            ',' if depth == 0 && !in_str => {
                parts.push(&rest[start..open + i]);
                start = open + i + 1;
            }
            _ => {}
        }
    }
    parts.push(&rest[start..end]);
    for part in parts {
        let Some((name, value)) = part.split_once(':') else {
            continue;
        };
        let value = value.trim();
        let v = if let Some(var) = value.strip_prefix('$') {
            vars.get(var).cloned().unwrap_or(Value::Null)
        } else if let Ok(v) = serde_json::from_str::<Value>(value) {
            v
        } else {
            Value::String(value.to_string())
        };
        out.insert(name.trim().to_string(), v);
    }
    Value::Object(out)
}

/// `@idempotent(key: "…")` in the query text.
fn idempotent_key(query: &str) -> Option<String> {
    let at = query.find("@idempotent")?;
    let rest = &query[at..];
    let open = rest.find('"')? + 1;
    let close = rest[open..].find('"')? + open;
    Some(rest[open..close].to_string())
}

/// The quantity names a `quantities(names: [...])` selection asks for.
fn quantity_names(query: &str) -> Vec<String> {
    let Some(at) = query.find("quantities(names:") else {
        return vec!["available".into()];
    };
    let rest = &query[at..];
    let (Some(open), Some(close)) = (rest.find('['), rest.find(']')) else {
        return vec!["available".into()];
    };
    rest[open + 1..close].split(',').map(|s| s.trim().trim_matches('"').to_string()).filter(|s| !s.is_empty()).collect()
}

async fn graphql(State(sim): State<Arc<ShopifySim>>, Path(version): Path<String>, headers: HeaderMap, body: axum::body::Bytes) -> Response {
    let operation = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|v| v.get("query").and_then(Value::as_str).and_then(root_field).map(str::to_string))
        .unwrap_or_default();
    *sim.requests.lock().unwrap_or_else(|p| p.into_inner()).entry(operation.clone()).or_insert(0) += 1;
    let error_body = json!({"errors": "Internal Server Error"});
    let fault = sim.faults.pick("shopify", &operation);
    if let Some((kind, When::Before)) = &fault {
        if let Some(r) = faults::before(kind, &error_body).await {
            return r;
        }
    }
    let real = answer(&sim, &version, &headers, &body);
    match &fault {
        Some((kind, When::After)) => faults::after(kind, real, &error_body).await,
        _ => real,
    }
}

fn answer(sim: &ShopifySim, version: &str, headers: &HeaderMap, body: &[u8]) -> Response {
    if headers.get("x-shopify-access-token").and_then(|v| v.to_str().ok()) != Some(sim.creds.access_token.as_str()) {
        return unauthorized();
    }
    let Ok(req) = serde_json::from_slice::<Value>(body) else {
        return (StatusCode::BAD_REQUEST, axum::Json(json!({"errors": "Bad Request"}))).into_response();
    };
    let query = req.get("query").and_then(Value::as_str).unwrap_or("");
    let variables = req.get("variables").cloned().unwrap_or(json!({}));
    let Some(field) = root_field(query) else {
        return gql_error("syntax error, unexpected end of file");
    };
    let vars = root_args(query, &variables);
    let available = match sim.spend(QUERY_COST) {
        Ok(a) => a,
        Err(a) => {
            sim.throttled.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return (
                StatusCode::OK,
                axum::Json(json!({"errors": [{"message": "Throttled", "extensions": {"code": "THROTTLED",
                    "documentation": "https://shopify.dev/api/usage/rate-limits"}}], "extensions": sim.cost_extension(QUERY_COST, a)})),
            )
                .into_response();
        }
    };
    let data = match field {
        "productVariants" => match product_variants(sim, query, &vars) {
            Ok(d) => d,
            Err(message) => return gql_error(&message),
        },
        "order" => order(sim, query, &vars),
        "fulfillmentOrder" => fulfillment_order(sim, &vars),
        "fulfillmentOrderReleaseHold" => release_hold(sim, &vars),
        "tagsRemove" => tags_remove(sim, &vars),
        "inventoryItem" => inventory_item(sim, query, &vars),
        "inventorySetQuantities" => match set_quantities(sim, query, &vars, version) {
            Ok(d) => d,
            Err(message) => return gql_error(&message),
        },
        "tagsAdd" => tags_add(sim, &vars),
        "fulfillmentOrderHold" => hold(sim, &vars),
        "orderCancel" => cancel(sim, &vars),
        "inventoryAdjustQuantities" => match adjust(sim, query, &vars, version) {
            Ok(d) => d,
            Err(message) => return gql_error(&message),
        },
        other => {
            return gql_error(&format!("Field '{other}' doesn't exist on type 'QueryRoot'"));
        }
    };
    (StatusCode::OK, axum::Json(json!({"data": data, "extensions": sim.cost_extension(QUERY_COST, available)}))).into_response()
}

fn product_variants(sim: &ShopifySim, query: &str, vars: &Value) -> Result<Value, String> {
    // A connection takes `first` as an Int from 0 to 250; a string is refused
    // as GraphQL refuses any value of the wrong type.
    let first = match vars.get("first") {
        None => return Err("you must provide one of first or last".into()),
        Some(v) => match v.as_u64() {
            Some(n) if n <= 250 => n.max(1) as usize,
            Some(_) => return Err("The first argument must be between 0 and 250".into()),
            None => return Err(format!("Argument 'first' on Field 'productVariants' has an invalid value ({v}). Expected type 'Int'.")),
        },
    };
    let search = vars.get("query").and_then(Value::as_str).unwrap_or("");
    let names = quantity_names(query);
    let products: Vec<_> = match searched_skus(search) {
        // Shopify's search ignores letter case.
        Some(skus) => skus
            .iter()
            .filter_map(|sku| {
                sim.erp.product_by_sku(sku).or_else(|| sim.erp.products().into_iter().find(|p| p.sku.eq_ignore_ascii_case(sku)))
            })
            .collect(),
        None => sim.erp.products(),
    };
    // Cursor pagination: `after` is the opaque cursor of the last node seen.
    let start = vars
        .get("after")
        .and_then(Value::as_str)
        .and_then(|c| c.strip_prefix("cursor-"))
        .and_then(|n| n.parse::<usize>().ok())
        .map_or(0, |n| n + 1);
    let page: Vec<_> = products.iter().enumerate().skip(start).take(first).collect();
    let nodes: Vec<Value> = page
        .iter()
        .map(|(_, p)| {
            let levels: Vec<Value> = sim.erp.levels(&p.sku).into_iter().map(|(loc, l)| level_json(&names, &loc, &l)).collect();
            json!({
                "id": gid("ProductVariant", p.id + 36_000_000_000), "sku": p.sku,
                "product": {"id": gid("Product", p.id), "status": if p.discontinued { "ARCHIVED" } else { "ACTIVE" }, "tags": p.tags},
                "inventoryItem": {"id": gid("InventoryItem", p.id + 40_000_000_000), "tracked": true, "inventoryLevels": {"nodes": levels}},
            })
        })
        .collect();
    let end = page.last().map(|(i, _)| format!("cursor-{i}"));
    let has_next = page.last().is_some_and(|(i, _)| i + 1 < products.len());
    Ok(json!({"productVariants": {"nodes": nodes, "pageInfo": {"hasNextPage": has_next, "endCursor": end}}}))
}

/// The SKUs a variant search asks for: `sku:A`, `sku:"A" OR sku:"B"`, …
/// (Shopify's search syntax: terms joined by `OR`, or by `AND` or nothing,
/// which is AND). None when the search is not about SKUs; no SKUs when it
/// names one but mixes in what this imitation does not search (titles,
/// free words, a lowercase `or`, which Shopify takes as a word).
fn searched_skus(search: &str) -> Option<Vec<String>> {
    if !search.contains("sku:") {
        return None;
    }
    Some(sku_terms(search).unwrap_or_default())
}

fn sku_terms(search: &str) -> Option<Vec<String>> {
    let mut skus: Vec<String> = Vec::new();
    let mut all_or = true;
    let mut rest = search.trim();
    let mut expect_term = true;
    while !rest.is_empty() {
        if !expect_term {
            match rest.split_once(char::is_whitespace).map_or((rest, ""), |(a, b)| (a, b)) {
                ("OR", tail) => rest = tail.trim_start(),
                ("AND", tail) => (all_or, rest) = (false, tail.trim_start()),
                _ => all_or = false,
            }
            expect_term = true;
            continue;
        }
        let term = rest.strip_prefix("sku:")?;
        let (value, tail) = match term.chars().next() {
            Some(q @ ('"' | '\'')) => {
                let mut value = String::new();
                let mut chars = term[1..].char_indices();
                let mut end = None;
                while let Some((i, c)) = chars.next() {
                    match c {
                        '\\' => value.extend(chars.next().map(|(_, c)| c)),
                        c if c == q => {
                            end = Some(i + 2);
                            break;
                        }
                        c => value.push(c),
                    }
                }
                (value, &term[end?..])
            }
            _ => {
                let end = term.find(char::is_whitespace).unwrap_or(term.len());
                (term[..end].to_string(), &term[end..])
            }
        };
        skus.push(value);
        rest = tail.trim_start();
        expect_term = false;
    }
    if !all_or && skus.windows(2).any(|w| w[0] != w[1]) {
        // Different SKUs that must all hold: no variant has two.
        return Some(Vec::new());
    }
    let mut seen = std::collections::HashSet::new();
    skus.retain(|s| seen.insert(s.clone()));
    (!skus.is_empty()).then_some(skus)
}

/// A fulfillment order's status: on hold while it has holds, closed once shipped or cancelled.
fn fulfillment_status(o: &SimOrder, fo: u64) -> &'static str {
    if o.state == OrderState::Cancelled {
        "CANCELLED"
    } else if o.extra.contains_key("fulfilled") {
        "CLOSED"
    } else if o.holds.iter().any(|h| h.fulfillment_order == fo) {
        "ON_HOLD"
    } else {
        "OPEN"
    }
}

fn order(sim: &ShopifySim, query: &str, vars: &Value) -> Value {
    let id = vars.get("id").and_then(Value::as_str).and_then(|g| parse_gid(g, "Order"));
    // `fulfillmentOrders(query: "status:open")` filters by status.
    let wanted = query
        .find("status:")
        .map(|i| query[i + 7..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect::<String>().to_ascii_uppercase());
    match id.and_then(|id| sim.erp.order(id)) {
        None => json!({"order": null}),
        Some(o) => {
            let nodes: Vec<Value> = o
                .fulfillment_orders
                .iter()
                .map(|fo| (fo, fulfillment_status(&o, *fo)))
                .filter(|(_, st)| wanted.as_deref().is_none_or(|w| w == *st))
                .map(|(fo, st)| json!({"id": gid("FulfillmentOrder", *fo), "status": st}))
                .collect();
            let cancelled_at = o.extra.get("cancelled_at").cloned().unwrap_or(Value::Null);
            json!({"order": {"id": gid("Order", o.id), "cancelledAt": cancelled_at, "tags": o.tags, "fulfillmentOrders": {"nodes": nodes}}})
        }
    }
}

fn fulfillment_order(sim: &ShopifySim, vars: &Value) -> Value {
    let fo = vars.get("id").and_then(Value::as_str).and_then(|g| parse_gid(g, "FulfillmentOrder"));
    match fo.and_then(|fo| sim.erp.order_by_fulfillment_order(fo).map(|o| (fo, o))) {
        Some((fo, o)) => json!({"fulfillmentOrder": {"id": gid("FulfillmentOrder", fo), "status": fulfillment_status(&o, fo)}}),
        None => json!({"fulfillmentOrder": null}),
    }
}

fn release_hold(sim: &ShopifySim, vars: &Value) -> Value {
    let fo = vars.get("id").and_then(Value::as_str).and_then(|g| parse_gid(g, "FulfillmentOrder"));
    let Some((fo, order)) = fo.and_then(|fo| sim.erp.order_by_fulfillment_order(fo).map(|o| (fo, o))) else {
        return json!({"fulfillmentOrderReleaseHold": {"fulfillmentOrder": null, "userErrors": [{"field": ["id"], "message": "Fulfillment order does not exist.", "code": "FULFILLMENT_ORDER_NOT_FOUND"}]}});
    };
    if !order.holds.iter().any(|h| h.fulfillment_order == fo) {
        return json!({"fulfillmentOrderReleaseHold": {"fulfillmentOrder": {"id": gid("FulfillmentOrder", fo), "status": fulfillment_status(&order, fo)},
            "userErrors": [{"field": ["id"], "message": "The fulfillment order is not on hold.", "code": "INVALID_ACCESS"}]}});
    }
    sim.erp.update_order(order.id, |o| {
        o.holds.retain(|h| h.fulfillment_order != fo);
        if o.holds.is_empty() && o.state == OrderState::OnHold {
            o.state = OrderState::Open;
        }
    });
    sim.erp.effect("shopify", "fulfillment_release", Some(order.id), &format!("shopify:release:{fo}"), Value::Null);
    json!({"fulfillmentOrderReleaseHold": {"fulfillmentOrder": {"id": gid("FulfillmentOrder", fo), "status": "OPEN"}, "userErrors": []}})
}

fn tags_remove(sim: &ShopifySim, vars: &Value) -> Value {
    let id = vars.get("id").and_then(Value::as_str).and_then(|g| parse_gid(g, "Order"));
    let tags: Vec<String> = vars
        .get("tags")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(|t| t.as_str().map(str::to_string)).collect())
        .unwrap_or_default();
    let Some(id) = id.filter(|id| sim.erp.order(*id).is_some()) else {
        return json!({"tagsRemove": {"node": null, "userErrors": [{"field": ["id"], "message": "Order does not exist"}]}});
    };
    for t in &tags {
        if sim.erp.update_order(id, |o| o.tags.remove(t)).unwrap_or(false) {
            sim.erp.effect("shopify", "tags_remove", Some(id), &format!("shopify:untag:{id}:{t}"), json!({"tag": t}));
        }
    }
    json!({"tagsRemove": {"node": {"id": gid("Order", id)}, "userErrors": []}})
}

fn inventory_item(sim: &ShopifySim, query: &str, vars: &Value) -> Value {
    let item = vars.get("id").and_then(Value::as_str).and_then(|g| parse_gid(g, "InventoryItem"));
    let Some(p) = item.and_then(|i| sim.erp.product_by_id(i.saturating_sub(40_000_000_000))) else {
        return json!({"inventoryItem": null});
    };
    let names = quantity_names(query);
    let levels: Vec<Value> = sim.erp.levels(&p.sku).into_iter().map(|(loc, l)| level_json(&names, &loc, &l)).collect();
    json!({"inventoryItem": {"id": gid("InventoryItem", p.id + 40_000_000_000), "sku": p.sku, "tracked": true, "inventoryLevels": {"nodes": levels}}})
}

fn level_json(names: &[String], loc: &crate::sandbox::erp::Location, l: &crate::sandbox::erp::Level) -> Value {
    let quantities: Vec<Value> = names
        .iter()
        .map(|n| {
            let q = match n.as_str() {
                "on_hand" => l.on_hand,
                "available" => l.available(),
                "committed" => l.committed,
                "incoming" => l.incoming,
                _ => 0,
            };
            json!({"name": n, "quantity": q})
        })
        .collect();
    json!({"location": {"id": gid("Location", loc.id), "name": loc.name}, "quantities": quantities})
}

/// `inventorySetQuantities`: absolute quantities, deduplicated by the `@idempotent` key.
fn set_quantities(sim: &ShopifySim, query: &str, vars: &Value, version: &str) -> Result<Value, String> {
    let key = idempotent_key(query);
    if key.is_none() && version >= "2026-04" {
        return Err("The @idempotent directive is required for this mutation.".into());
    }
    let input = vars.get("input").cloned().unwrap_or(json!({}));
    let name = input.get("name").and_then(Value::as_str).unwrap_or("available").to_string();
    let quantities = input.get("quantities").and_then(Value::as_array).cloned().unwrap_or_default();
    let key = key.unwrap_or_else(|| format!("no-key:{input}"));
    let first_time = sim.erp.effect("shopify", "inventory_set", None, &format!("shopify:set:{key}"), input.clone());
    let mut changes = Vec::new();
    for q in &quantities {
        if version >= "2026-04" && q.get("changeFromQuantity").is_none() {
            return Ok(
                json!({"inventorySetQuantities": {"inventoryAdjustmentGroup": null, "userErrors": [{"field": ["input", "quantities", "changeFromQuantity"], "message": "changeFromQuantity is required; pass null to skip the check", "code": "INVALID"}]}}),
            );
        }
        let item = q.get("inventoryItemId").and_then(Value::as_str).and_then(|g| parse_gid(g, "InventoryItem"));
        let loc = q.get("locationId").and_then(Value::as_str).and_then(|g| parse_gid(g, "Location"));
        let quantity = q.get("quantity").and_then(Value::as_i64).unwrap_or(0);
        let Some((p, loc)) = item.and_then(|i| sim.erp.product_by_id(i.saturating_sub(40_000_000_000))).zip(loc) else {
            return Ok(
                json!({"inventorySetQuantities": {"inventoryAdjustmentGroup": null, "userErrors": [{"field": ["input", "quantities"], "message": "The specified inventory item could not be found.", "code": "INVENTORY_ITEM_NOT_FOUND"}]}}),
            );
        };
        let level = sim.erp.levels(&p.sku).into_iter().find(|(l, _)| l.id == loc).map(|(_, l)| l).unwrap_or_default();
        let current = if name == "on_hand" { level.on_hand } else { level.available() };
        if first_time {
            sim.erp.adjust_on_hand(&p.sku, loc, quantity - current);
        }
        changes.push(json!({"name": name, "delta": quantity - current}));
    }
    Ok(
        json!({"inventorySetQuantities": {"inventoryAdjustmentGroup": {"reason": input.get("reason"), "changes": changes}, "userErrors": []}}),
    )
}

fn tags_add(sim: &ShopifySim, vars: &Value) -> Value {
    let id = vars.get("id").and_then(Value::as_str).and_then(|g| parse_gid(g, "Order"));
    let tags: Vec<String> = vars
        .get("tags")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(|t| t.as_str().map(str::to_string)).collect())
        .unwrap_or_default();
    let Some(id) = id.filter(|id| sim.erp.order(*id).is_some()) else {
        return json!({"tagsAdd": {"node": null, "userErrors": [{"field": ["id"], "message": "Order does not exist"}]}});
    };
    for t in &tags {
        sim.erp.update_order(id, |o| o.tags.insert(t.clone()));
        sim.erp.effect("shopify", "tags_add", Some(id), &format!("shopify:tag:{id}:{t}"), json!({"tag": t}));
    }
    json!({"tagsAdd": {"node": {"id": gid("Order", id)}, "userErrors": []}})
}

fn hold(sim: &ShopifySim, vars: &Value) -> Value {
    let fo = vars.get("id").and_then(Value::as_str).and_then(|g| parse_gid(g, "FulfillmentOrder"));
    let hold = vars.get("fulfillmentHold").cloned().unwrap_or(json!({}));
    let handle = hold.get("handle").and_then(Value::as_str).unwrap_or("").to_string();
    let reason = hold.get("reason").and_then(Value::as_str).unwrap_or("").to_string();
    let Some(order) = fo.and_then(|fo| sim.erp.order_by_fulfillment_order(fo)) else {
        return json!({"fulfillmentOrderHold": {"fulfillmentHold": null, "fulfillmentOrder": null,
            "userErrors": [{"field": ["id"], "message": "Fulfillment order does not exist.", "code": "FULFILLMENT_ORDER_NOT_FOUND"}]}});
    };
    let fo = fo.expect("found above");
    if order.holds.iter().any(|h| h.fulfillment_order == fo && h.handle == handle) {
        sim.erp.effect("shopify", "fulfillment_hold", Some(order.id), &format!("shopify:hold:{fo}:{handle}"), Value::Null);
        return json!({"fulfillmentOrderHold": {"fulfillmentHold": null, "fulfillmentOrder": {"id": gid("FulfillmentOrder", fo), "status": "ON_HOLD"},
            "userErrors": [{"field": ["fulfillmentHold", "handle"], "message": "The handle provided for the fulfillment hold is already in use by this app for another hold on this fulfillment order.", "code": "DUPLICATE_FULFILLMENT_HOLD_HANDLE"}]}});
    }
    let notes = hold.get("reasonNotes").and_then(Value::as_str).unwrap_or("").to_string();
    sim.erp.update_order(order.id, |o| {
        o.holds.push(crate::sandbox::erp::Hold {
            fulfillment_order: fo,
            handle: handle.clone(),
            reason: reason.clone(),
            notes: notes.clone(),
        });
        o.state = OrderState::OnHold;
    });
    sim.erp.effect(
        "shopify",
        "fulfillment_hold",
        Some(order.id),
        &format!("shopify:hold:{fo}:{handle}"),
        json!({"reason": reason, "notes": notes}),
    );
    json!({"fulfillmentOrderHold": {"fulfillmentHold": {"id": gid("FulfillmentHold", fo), "handle": handle},
        "fulfillmentOrder": {"id": gid("FulfillmentOrder", fo), "status": "ON_HOLD"}, "userErrors": []}})
}

fn cancel(sim: &ShopifySim, vars: &Value) -> Value {
    let id = vars.get("orderId").and_then(Value::as_str).and_then(|g| parse_gid(g, "Order"));
    let Some(order) = id.and_then(|id| sim.erp.order(id)) else {
        return json!({"orderCancel": {"job": null, "orderCancelUserErrors": [{"field": ["orderId"], "message": "Order does not exist", "code": "NOT_FOUND"}], "userErrors": []}});
    };
    for required in ["reason", "restock", "refundMethod"] {
        if vars.get(required).is_none() {
            return json!({"orderCancel": {"job": null, "orderCancelUserErrors": [{"field": [required], "message": format!("{required} is required"), "code": "INVALID"}], "userErrors": []}});
        }
    }
    let key = format!("shopify:cancel:{}", order.id);
    if order.state == OrderState::Cancelled {
        sim.erp.effect("shopify", "order_cancel", Some(order.id), &key, Value::Null);
        return json!({"orderCancel": {"job": null, "orderCancelUserErrors": [{"field": ["orderId"], "message": "Cannot cancel an order that has already been canceled", "code": "INVALID"}], "userErrors": []}});
    }
    let reason = vars.get("reason").and_then(Value::as_str).unwrap_or("OTHER").to_string();
    sim.erp.update_order(order.id, |o| {
        o.state = OrderState::Cancelled;
        o.cancel_reason = Some(reason.clone());
        o.extra.insert("cancelled_at".into(), json!(crate::clock::format_rfc3339(time::OffsetDateTime::now_utc())));
        if let Some(note) = vars.get("staffNote").and_then(Value::as_str) {
            o.notes.push(note.to_string());
        }
    });
    if vars.get("restock").and_then(Value::as_bool) == Some(true) {
        sim.erp.release_commitment(order.id);
    }
    sim.erp.effect("shopify", "order_cancel", Some(order.id), &key, json!({"reason": reason}));
    json!({"orderCancel": {"job": {"id": gid("Job", order.id), "done": false}, "orderCancelUserErrors": [], "userErrors": []}})
}

fn adjust(sim: &ShopifySim, query: &str, vars: &Value, version: &str) -> Result<Value, String> {
    let key = idempotent_key(query);
    if key.is_none() && version >= "2026-04" {
        return Err("The @idempotent directive is required for this mutation.".into());
    }
    let input = vars.get("input").cloned().unwrap_or(json!({}));
    let changes = input.get("changes").and_then(Value::as_array).cloned().unwrap_or_default();
    let key = key.unwrap_or_else(|| format!("no-key:{}", serde_json::to_string(&input).unwrap_or_default()));
    let first_time = sim.erp.effect("shopify", "inventory_adjust", None, &format!("shopify:adjust:{key}"), input.clone());
    let mut out = Vec::new();
    for c in &changes {
        let item = c.get("inventoryItemId").and_then(Value::as_str).and_then(|g| parse_gid(g, "InventoryItem"));
        let loc = c.get("locationId").and_then(Value::as_str).and_then(|g| parse_gid(g, "Location"));
        let delta = c.get("delta").and_then(Value::as_i64).unwrap_or(0);
        let product = item.and_then(|i| sim.erp.product_by_id(i.saturating_sub(40_000_000_000)));
        match (product, loc) {
            (Some(p), Some(loc)) => {
                if first_time {
                    sim.erp.adjust_on_hand(&p.sku, loc, delta);
                }
                out.push(json!({"name": "available", "delta": delta}));
            }
            _ => {
                return Ok(
                    json!({"inventoryAdjustQuantities": {"inventoryAdjustmentGroup": null, "userErrors": [{"field": ["input", "changes"], "message": "The specified inventory item could not be found.", "code": "INVENTORY_ITEM_NOT_FOUND"}]}}),
                );
            }
        }
    }
    Ok(
        json!({"inventoryAdjustQuantities": {"inventoryAdjustmentGroup": {"createdAt": "2026-01-01T00:00:00Z", "reason": input.get("reason"), "changes": out}, "userErrors": []}}),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_root_field_and_directive() {
        assert_eq!(root_field("query X($q: String!) { productVariants(first: 1) { nodes { id } } }"), Some("productVariants"));
    }

    #[test]
    fn variant_searches_name_their_skus() {
        assert_eq!(searched_skus("sku:PB-1"), Some(vec!["PB-1".to_string()]));
        assert_eq!(
            searched_skus(r#"sku:"PB-1" OR sku:"SP \"2\"" OR sku:'C 3'"#),
            Some(vec!["PB-1".into(), "SP \"2\"".into(), "C 3".into()])
        );
        assert_eq!(searched_skus(r#"sku:"A" sku:"B""#), Some(Vec::new()));
        assert_eq!(searched_skus(r#"sku:"A" AND sku:"A""#), Some(vec!["A".to_string()]));
        assert_eq!(searched_skus("sku:A OR sku:B OR sku:A"), Some(vec!["A".to_string(), "B".to_string()]));
        assert_eq!(searched_skus("title:pinball"), None);
        assert_eq!(searched_skus(""), None);
        for unsearched in [r#"sku:"A" or sku:"B""#, r#"sku:"A"#, "title:x OR sku:A"] {
            assert_eq!(searched_skus(unsearched), Some(Vec::new()), "{unsearched}");
        }
        assert_eq!(root_field("mutation { tagsAdd(id: $id) { node { id } } }"), Some("tagsAdd"));
        assert_eq!(idempotent_key(r#"inventoryAdjustQuantities(input: $input) @idempotent(key: "abc-1") {"#).as_deref(), Some("abc-1"));
        assert_eq!(quantity_names(r#"quantities(names: ["on_hand", "incoming"]) { name }"#), vec!["on_hand", "incoming"]);
        assert_eq!(parse_gid("gid://shopify/Order/42", "Order"), Some(42));
        let args = root_args(
            "mutation H($x: ID!, $h: In!) { fulfillmentOrderHold(id: $x, fulfillmentHold: $h, note: \"a, b\", n: 3) { id } }",
            &json!({"x": "gid", "h": {"reason": "R"}}),
        );
        assert_eq!(args, json!({"id": "gid", "fulfillmentHold": {"reason": "R"}, "note": "a, b", "n": 3}));
    }
}
