//! The built-in sandbox: simulated platforms over one mock ERP.
//!
//! Each platform is served under its own prefix (`/shopify/...`) on one
//! loopback listener and speaks that platform's wire format, so a connector
//! that works here is written the way the real API wants it. `/_sandbox/...`
//! is a control API for placing orders, setting stock and reading what the
//! platforms received. The demo, the integration tests and the benchmarks
//! all run against it.

pub mod erp;
pub mod faults;
pub mod platforms;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::oneshot;

use erp::{Erp, LineRequest, SimOrder};
use faults::{FaultRule, Faults};
use platforms::arcadehub::{ArcadeHubCredentials, ArcadeHubSim};
use platforms::shopify::{CostLimits, ShopifyCredentials, ShopifySim};
use platforms::{Delivery, OrderEvent, SimConnection, SimContext, SimPlatform};

pub struct SandboxOptions {
    pub shopify: ShopifyCredentials,
    pub arcadehub: ArcadeHubCredentials,
    pub shopify_limits: CostLimits,
    /// Seed of the fault plan's random choices (replay a run with the same seed).
    pub fault_seed: u64,
}

impl SandboxOptions {
    /// Fresh random credentials.
    pub fn generated() -> Self {
        SandboxOptions {
            shopify: ShopifyCredentials {
                shop: "arcade-supply".into(),
                access_token: format!("shpat_{}", random_hex(16)),
                webhook_secret: random_hex(32),
            },
            arcadehub: ArcadeHubCredentials {
                key_id: format!("ak_{}", random_hex(6)),
                key_secret: random_hex(16),
                webhook_secret: random_hex(24),
            },
            shopify_limits: CostLimits::default(),
            fault_seed: rand::random(),
        }
    }
}

pub fn random_hex(bytes: usize) -> String {
    (0..bytes).map(|_| format!("{:02x}", rand::random::<u8>())).collect()
}

/// A running sandbox.
pub struct Sandbox {
    pub addr: SocketAddr,
    pub erp: Arc<Erp>,
    pub shopify: Arc<ShopifySim>,
    pub arcadehub: Arc<ArcadeHubSim>,
    pub faults: Arc<Faults>,
    shared: Arc<Shared>,
    stop: Option<oneshot::Sender<()>>,
}

struct Shared {
    addr: SocketAddr,
    erp: Arc<Erp>,
    faults: Arc<Faults>,
    platforms: BTreeMap<&'static str, Arc<dyn SimPlatform>>,
    /// Where each platform delivers its webhooks (`platform` or `platform topic`).
    targets: RwLock<HashMap<String, String>>,
    client: reqwest::Client,
}

impl Sandbox {
    /// Serve on `listener` (bind it to a loopback address).
    pub async fn start(listener: tokio::net::TcpListener, opts: SandboxOptions) -> std::io::Result<Sandbox> {
        let erp = Arc::new(Erp::new());
        let faults = Arc::new(Faults::new(opts.fault_seed));
        let shopify = ShopifySim::new(erp.clone(), faults.clone(), opts.shopify, opts.shopify_limits);
        let arcadehub = ArcadeHubSim::new(erp.clone(), opts.arcadehub);
        let mut platforms: BTreeMap<&'static str, Arc<dyn SimPlatform>> = BTreeMap::new();
        platforms.insert(shopify.name(), shopify.clone());
        platforms.insert(arcadehub.name(), arcadehub.clone());
        for p in platforms::more_platforms(&SimContext { erp: erp.clone(), faults: faults.clone() }) {
            platforms.insert(p.name(), p);
        }
        let addr = listener.local_addr()?;
        let mut app = Router::new();
        for (name, p) in &platforms {
            app = app.nest(&format!("/{name}"), p.clone().router());
        }
        let shared = Arc::new(Shared {
            addr,
            erp: erp.clone(),
            faults: faults.clone(),
            platforms,
            targets: RwLock::new(HashMap::new()),
            client: reqwest::Client::new(),
        });
        let app = app.nest("/_sandbox", control(shared.clone()));
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stopped.await;
                })
                .await;
        });
        Ok(Sandbox { addr, erp, shopify, arcadehub, faults, shared, stop: Some(stop) })
    }

    /// Base URL of one simulated platform, for a connection's `base_url`.
    pub fn base_url(&self, platform: &str) -> String {
        self.shared.base_url(platform)
    }

    /// The simulated platforms, by name.
    pub fn platforms(&self) -> Vec<&'static str> {
        self.shared.platforms.keys().copied().collect()
    }

    /// The values and secrets of a connection to a simulated platform.
    pub fn connection(&self, platform: &str) -> Option<SimConnection> {
        self.shared.platforms.get(platform).map(|p| p.connection(&self.base_url(platform)))
    }

    /// The instance config's entry for a connection `name` to a simulated
    /// platform (`base_url`, `values`, `secrets`), indented for the
    /// `connections:` map; `secret_ref` stores each secret and returns its
    /// reference (e.g. `file:…`), so no secret is written into the config.
    pub fn connection_yaml(&self, platform: &str, name: &str, secret_ref: &mut dyn FnMut(&str, &str) -> String) -> Option<String> {
        let c = self.connection(platform)?;
        let quote = |s: &str| serde_json::Value::String(s.to_string()).to_string();
        let mut out = format!("  {name}:\n    connector: {platform}\n    base_url: {}\n", quote(&self.base_url(platform)));
        if !c.values.is_empty() {
            out.push_str("    values:\n");
            for (k, v) in &c.values {
                out.push_str(&format!("      {k}: {}\n", quote(v)));
            }
        }
        if !c.secrets.is_empty() {
            out.push_str("    secrets:\n");
            for (k, v) in &c.secrets {
                out.push_str(&format!("      {k}: {}\n", quote(&secret_ref(&format!("{name}-{k}"), v))));
            }
        }
        Some(out)
    }

    /// Where a platform delivers its order webhooks (and any topic without a target of its own).
    pub fn set_webhook_target(&self, platform: &str, url: &str) {
        self.shared.targets.write().unwrap_or_else(|p| p.into_inner()).insert(platform.to_string(), url.to_string());
    }

    /// Where one topic goes (e.g. `inventory_levels/update` to a stock workflow).
    pub fn set_topic_target(&self, platform: &str, topic: &str, url: &str) {
        self.shared.targets.write().unwrap_or_else(|p| p.into_inner()).insert(format!("{platform} {topic}"), url.to_string());
    }

    /// The customer cancels on the platform: stock goes back, the platform announces it.
    pub async fn cancel_order(&self, order_id: u64) -> Result<u16, String> {
        self.shared.cancel(order_id).await
    }

    /// The order ships: its units leave the warehouse, the platform announces it and its stock change.
    pub async fn ship_order(&self, order_id: u64) -> Result<u16, String> {
        self.shared.ship(order_id).await
    }

    /// Stock arrives (or is counted): set it and send the platforms' stock webhooks.
    pub async fn restock(&self, sku: &str, on_hand: i64, incoming: i64, eta: Option<&str>) -> Result<(), String> {
        self.shared.restock(sku, on_hand, incoming, eta).await
    }

    /// Place an order on a platform and deliver its webhook. Returns the order
    /// and the HTTP status the daemon answered, or 0 for a platform that is
    /// polled (the order waits to be read).
    pub async fn place_order(&self, platform: &str, customer: u64, lines: &[LineRequest]) -> Result<(SimOrder, u16), String> {
        self.shared.place_order(platform, customer, lines).await
    }

    /// Deliver an order's creation webhook to a given URL (one shop selling through several workflows).
    pub async fn deliver_to(&self, order_id: u64, url: &str) -> Result<u16, String> {
        let order = self.erp.order(order_id).ok_or_else(|| format!("no order {order_id}"))?;
        let platform = self.shared.platform(&order.platform)?;
        self.shared.post(url, platform.order_delivery(OrderEvent::Created, &order, url)).await
    }

    /// Place an order without delivering its webhook yet (see `redeliver`).
    pub fn create_order(&self, platform: &str, customer: u64, lines: &[LineRequest]) -> Result<SimOrder, String> {
        self.shared.create_order(platform, customer, lines)
    }

    /// Deliver an order's webhook again with the same delivery id, as a platform retry does.
    pub async fn redeliver(&self, order_id: u64) -> Result<u16, String> {
        self.shared.order_event(order_id, OrderEvent::Created).await
    }

    pub async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

impl Shared {
    fn base_url(&self, platform: &str) -> String {
        format!("http://{}/{platform}", self.addr)
    }

    fn platform(&self, name: &str) -> Result<&Arc<dyn SimPlatform>, String> {
        self.platforms.get(name).ok_or_else(|| format!("the sandbox has no platform `{name}`"))
    }

    fn create_order(&self, platform: &str, customer: u64, lines: &[LineRequest]) -> Result<SimOrder, String> {
        self.platform(platform)?;
        let now = crate::clock::format_rfc3339(time::OffsetDateTime::now_utc());
        let order = self.erp.place_order(platform, customer, lines, &now)?;
        let webhook_id = uuid_like();
        self.erp.update_order(order.id, |o| o.extra.insert("webhook_id".into(), json!(webhook_id)));
        Ok(self.erp.order(order.id).unwrap_or(order))
    }

    async fn place_order(&self, platform: &str, customer: u64, lines: &[LineRequest]) -> Result<(SimOrder, u16), String> {
        let order = self.create_order(platform, customer, lines)?;
        let status = self.order_event(order.id, OrderEvent::Created).await?;
        Ok((order, status))
    }

    fn target(&self, platform: &str, topic: &str) -> Option<String> {
        let t = self.targets.read().unwrap_or_else(|p| p.into_inner());
        t.get(&format!("{platform} {topic}")).or_else(|| t.get(platform)).cloned()
    }

    async fn cancel(&self, order_id: u64) -> Result<u16, String> {
        let now = crate::clock::format_rfc3339(time::OffsetDateTime::now_utc());
        let was_open = self.erp.update_order(order_id, |o| {
            let open = o.state != erp::OrderState::Cancelled;
            o.state = erp::OrderState::Cancelled;
            o.cancel_reason = Some("CUSTOMER".into());
            o.extra.insert("cancelled_at".into(), json!(now));
            open
        });
        match was_open {
            None => return Err(format!("no order {order_id}")),
            Some(true) => self.erp.release_commitment(order_id),
            Some(false) => {}
        }
        self.order_event(order_id, OrderEvent::Cancelled).await
    }

    async fn ship(&self, order_id: u64) -> Result<u16, String> {
        let order = self.erp.order(order_id).ok_or_else(|| format!("no order {order_id}"))?;
        if !order.extra.contains_key("fulfilled") {
            for l in &order.lines {
                self.erp.adjust_on_hand(&l.sku, order.location, -l.qty);
            }
            self.erp.release_commitment(order_id);
            self.erp.update_order(order_id, |o| o.extra.insert("fulfilled".into(), json!(true)));
        }
        let status = self.order_event(order_id, OrderEvent::Fulfilled).await?;
        for l in &order.lines {
            self.stock_event(&order.platform, &l.sku).await?;
        }
        Ok(status)
    }

    async fn restock(&self, sku: &str, on_hand: i64, incoming: i64, eta: Option<&str>) -> Result<(), String> {
        let loc = self.erp.locations().first().map(|l| l.id).ok_or("no locations")?;
        self.erp.set_stock(sku, loc, on_hand, incoming, eta);
        for name in self.platforms.keys() {
            self.stock_event(name, sku).await?;
        }
        Ok(())
    }

    /// Announce an order event; 0 when the platform has no webhook for it (it is polled).
    async fn order_event(&self, order_id: u64, event: OrderEvent) -> Result<u16, String> {
        let order = self.erp.order(order_id).ok_or_else(|| format!("no order {order_id}"))?;
        let platform = self.platform(&order.platform)?;
        let Some(topic) = platform.order_topic(event) else { return Ok(0) };
        let url = self.target(&order.platform, topic).ok_or_else(|| format!("no webhook target for {}", order.platform))?;
        self.post(&url, platform.order_delivery(event, &order, &url)).await
    }

    /// Send a platform's stock webhooks, when a target is set for its stock topic.
    async fn stock_event(&self, platform: &str, sku: &str) -> Result<(), String> {
        let platform = self.platform(platform)?;
        let Some(topic) = platform.stock_topic() else { return Ok(()) };
        let explicit = self.targets.read().unwrap_or_else(|p| p.into_inner()).get(&format!("{} {topic}", platform.name())).cloned();
        if let Some(url) = explicit {
            for d in platform.stock_deliveries(sku, &url) {
                self.post(&url, d).await?;
            }
        }
        Ok(())
    }

    async fn post(&self, url: &str, delivery: Delivery) -> Result<u16, String> {
        let mut req = self.client.post(url).body(delivery.body);
        for (k, v) in delivery.headers {
            req = req.header(k, v);
        }
        let resp = req.send().await.map_err(|e| e.to_string())?;
        Ok(resp.status().as_u16())
    }
}

pub(crate) fn uuid_like() -> String {
    let h = random_hex(16);
    format!("{}-{}-{}-{}-{}", &h[0..8], &h[8..12], &h[12..16], &h[16..20], &h[20..32])
}

fn control(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/catalog", get(catalog))
        .route("/orders", post(place).get(orders))
        .route("/orders/batch", post(batch))
        .route("/orders/{id}", get(order))
        .route("/stats", get(stats))
        .route("/orders/{id}/redeliver", post(redeliver))
        .route("/orders/{id}/cancel", post(cancel))
        .route("/orders/{id}/ship", post(ship))
        .route("/effects", get(effects))
        .route("/stock", put(set_stock))
        .route("/webhook-targets/{platform}", put(set_target))
        .route("/faults", put(set_faults).get(get_faults).delete(clear_faults))
        .with_state(shared)
}

fn bad(status: StatusCode, message: impl Into<String>) -> Response {
    (status, axum::Json(json!({"error": message.into()}))).into_response()
}

async fn catalog(State(s): State<Arc<Shared>>) -> Response {
    let stock: Vec<_> = s.erp.products().iter().map(|p| json!({"sku": p.sku, "levels": s.erp.levels(&p.sku)})).collect();
    axum::Json(json!({"products": s.erp.products(), "locations": s.erp.locations(), "customers": s.erp.customers(), "stock": stock}))
        .into_response()
}

#[derive(Deserialize)]
struct PlaceOrder {
    platform: String,
    customer: u64,
    lines: Vec<LineRequest>,
}

async fn place(State(s): State<Arc<Shared>>, axum::Json(req): axum::Json<PlaceOrder>) -> Response {
    match s.place_order(&req.platform, req.customer, &req.lines).await {
        Ok((order, status)) => axum::Json(json!({"order": order, "delivery_status": status})).into_response(),
        Err(e) => bad(StatusCode::BAD_REQUEST, e),
    }
}

#[derive(Deserialize)]
struct Batch {
    platform: String,
    count: usize,
    /// Customers to cycle through (default: every customer).
    #[serde(default)]
    customers: Vec<u64>,
    /// The same lines on every order…
    #[serde(default)]
    lines: Vec<LineRequest>,
    /// …or `lines_per_order` lines of one unit each, drawn in turn from
    /// `{prefix}{000000..count}` (see `add_generated_products`).
    sku_range: Option<SkuRange>,
    #[serde(default = "two")]
    lines_per_order: usize,
}

#[derive(Deserialize)]
struct SkuRange {
    prefix: String,
    count: usize,
}

fn two() -> usize {
    2
}

/// Create orders without delivering them; answer with each signed delivery
/// (body and headers), for a load generator to send.
async fn batch(State(s): State<Arc<Shared>>, axum::Json(req): axum::Json<Batch>) -> Response {
    let customers = if req.customers.is_empty() { s.erp.customers().iter().map(|c| c.id).collect() } else { req.customers.clone() };
    if customers.is_empty() {
        return bad(StatusCode::BAD_REQUEST, "no customers");
    }
    let mut out = Vec::with_capacity(req.count);
    for i in 0..req.count {
        let lines = match &req.sku_range {
            Some(r) if r.count > 0 => {
                let start = rand::random::<u64>() as usize;
                (0..req.lines_per_order.min(r.count))
                    .map(|k| LineRequest { sku: format!("{}{:06}", r.prefix, (start + k) % r.count), qty: 1 })
                    .collect()
            }
            _ => req.lines.clone(),
        };
        let order = match s.create_order(&req.platform, customers[i % customers.len()], &lines) {
            Ok(o) => o,
            Err(e) => return bad(StatusCode::BAD_REQUEST, e),
        };
        let Ok(platform) = s.platform(&req.platform) else {
            return bad(StatusCode::BAD_REQUEST, format!("the sandbox has no platform `{}`", req.platform));
        };
        let Some(topic) = platform.order_topic(OrderEvent::Created) else {
            return bad(StatusCode::BAD_REQUEST, format!("{} is polled; it delivers no webhooks", req.platform));
        };
        let url = s.target(&req.platform, topic).unwrap_or_default();
        let d = platform.order_delivery(OrderEvent::Created, &order, &url);
        let headers: serde_json::Map<String, serde_json::Value> = d.headers.into_iter().map(|(k, v)| (k, json!(v))).collect();
        out.push(json!({"order_id": order.id, "headers": headers, "body": String::from_utf8_lossy(&d.body)}));
    }
    axum::Json(json!({"deliveries": out})).into_response()
}

async fn stats(State(s): State<Arc<Shared>>) -> Response {
    let (orders, effects, requested) = s.erp.counts();
    axum::Json(json!({"orders": orders, "effects": effects, "requested_effects": requested})).into_response()
}

async fn orders(State(s): State<Arc<Shared>>) -> Response {
    axum::Json(json!({"orders": s.erp.orders()})).into_response()
}

async fn order(State(s): State<Arc<Shared>>, Path(id): Path<u64>) -> Response {
    match s.erp.order(id) {
        Some(o) => axum::Json(json!({"order": o})).into_response(),
        None => bad(StatusCode::NOT_FOUND, format!("no order {id}")),
    }
}

async fn redeliver(State(s): State<Arc<Shared>>, Path(id): Path<u64>) -> Response {
    match s.order_event(id, OrderEvent::Created).await {
        Ok(status) => axum::Json(json!({"delivery_status": status})).into_response(),
        Err(e) => bad(StatusCode::BAD_REQUEST, e),
    }
}

#[derive(Deserialize)]
struct EffectsQuery {
    /// Only effects after this sequence number (incremental reads).
    after: Option<u64>,
    limit: Option<usize>,
}

async fn cancel(State(s): State<Arc<Shared>>, Path(id): Path<u64>) -> Response {
    match s.cancel(id).await {
        Ok(status) => axum::Json(json!({"delivery_status": status})).into_response(),
        Err(e) => bad(StatusCode::BAD_REQUEST, e),
    }
}

async fn ship(State(s): State<Arc<Shared>>, Path(id): Path<u64>) -> Response {
    match s.ship(id).await {
        Ok(status) => axum::Json(json!({"delivery_status": status})).into_response(),
        Err(e) => bad(StatusCode::BAD_REQUEST, e),
    }
}

async fn effects(State(s): State<Arc<Shared>>, axum::extract::Query(q): axum::extract::Query<EffectsQuery>) -> Response {
    match q.after {
        Some(after) => axum::Json(json!({"effects": s.erp.effects_after(after, q.limit.unwrap_or(10_000))})).into_response(),
        None => axum::Json(json!({"effects": s.erp.effects(), "attempts": s.erp.attempts()})).into_response(),
    }
}

#[derive(Deserialize)]
struct SetStock {
    sku: String,
    location: Option<u64>,
    on_hand: i64,
    #[serde(default)]
    incoming: i64,
    eta: Option<String>,
}

async fn set_stock(State(s): State<Arc<Shared>>, axum::Json(req): axum::Json<SetStock>) -> Response {
    let Some(loc) = req.location.or_else(|| s.erp.locations().first().map(|l| l.id)) else {
        return bad(StatusCode::BAD_REQUEST, "the sandbox has no locations");
    };
    s.erp.set_stock(&req.sku, loc, req.on_hand, req.incoming, req.eta.as_deref());
    for name in s.platforms.keys() {
        if let Err(e) = s.stock_event(name, &req.sku).await {
            return bad(StatusCode::BAD_GATEWAY, format!("stock set, but the {name} webhook failed: {e}"));
        }
    }
    axum::Json(json!({"sku": req.sku, "levels": s.erp.levels(&req.sku)})).into_response()
}

async fn set_faults(State(s): State<Arc<Shared>>, axum::Json(rules): axum::Json<Vec<FaultRule>>) -> Response {
    s.faults.set(rules);
    get_faults(State(s)).await
}

async fn get_faults(State(s): State<Arc<Shared>>) -> Response {
    let rules: Vec<_> = s.faults.report().into_iter().map(|(r, fired)| json!({"rule": r, "fired": fired})).collect();
    axum::Json(json!({"seed": s.faults.seed, "rules": rules})).into_response()
}

async fn clear_faults(State(s): State<Arc<Shared>>) -> Response {
    s.faults.clear();
    get_faults(State(s)).await
}

#[derive(Deserialize)]
struct Target {
    url: String,
    /// Only this topic (default: every topic without a target of its own).
    topic: Option<String>,
}

/// `PUT /_sandbox/webhook-targets/shopify {"url": …, "topic": "inventory_levels/update"}`
async fn set_target(State(s): State<Arc<Shared>>, Path(platform): Path<String>, axum::Json(t): axum::Json<Target>) -> Response {
    let key = match &t.topic {
        Some(topic) => format!("{platform} {topic}"),
        None => platform.clone(),
    };
    s.targets.write().unwrap_or_else(|p| p.into_inner()).insert(key, t.url.clone());
    axum::Json(json!({"platform": platform, "url": t.url})).into_response()
}
