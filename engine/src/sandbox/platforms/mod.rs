//! One simulator per platform, each a thin adapter over the mock ERP.
//!
//! Every adapter implements [`SimPlatform`]: the routes it serves under
//! `/<name>/…` (the platform's real paths after the host), the connection a
//! daemon needs to reach it, and — for platforms that push — the signed
//! deliveries of order and stock events. Polled platforms answer their list
//! endpoints from the ERP and deliver nothing.

pub mod amazon;
pub mod arcadehub;
pub mod magento;
pub mod odoo;
pub mod quickbooks;
pub mod sap_business_one;
pub mod shopify;
pub mod square;
pub mod unleashed;
pub mod woocommerce;

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Router;

use super::erp::{Erp, SimOrder};
use super::faults::Faults;

/// What happened to an order, as a platform would announce it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OrderEvent {
    Created,
    Cancelled,
    Fulfilled,
}

/// A webhook ready to POST: headers (signature included) and body.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// How a daemon reaches one simulated account: the `values` and `secrets`
/// of its connection (the sandbox adds `base_url`).
#[derive(Debug, Clone, Default)]
pub struct SimConnection {
    pub values: BTreeMap<String, String>,
    pub secrets: BTreeMap<String, String>,
}

/// One simulated platform.
pub trait SimPlatform: Send + Sync + 'static {
    /// The prefix it is served under, and the `platform` of its orders.
    fn name(&self) -> &'static str;

    /// Its routes, relative to `/<name>`.
    fn router(self: Arc<Self>) -> Router;

    /// The connection to this account; `base_url` is where the sandbox serves
    /// the platform (for values such as a token endpoint on the same host).
    fn connection(&self, base_url: &str) -> SimConnection;

    /// The webhook topic announcing `event`, or `None` when the platform has
    /// no such webhook (its orders are polled).
    fn order_topic(&self, event: OrderEvent) -> Option<&'static str>;

    /// The signed delivery of `event` for `order`, posted to `url`.
    fn order_delivery(&self, event: OrderEvent, order: &SimOrder, url: &str) -> Delivery;

    /// The topic of stock-change webhooks, if the platform sends them.
    fn stock_topic(&self) -> Option<&'static str> {
        None
    }

    /// The stock-change deliveries for `sku`, posted to `url`.
    fn stock_deliveries(&self, _sku: &str, _url: &str) -> Vec<Delivery> {
        Vec::new()
    }
}

/// What every adapter is built from.
pub struct SimContext {
    pub erp: Arc<Erp>,
    pub faults: Arc<Faults>,
}

/// The platforms beyond Shopify and ArcadeHub (which take options of their own).
pub fn more_platforms(ctx: &SimContext) -> Vec<Arc<dyn SimPlatform>> {
    let platforms: Vec<Arc<dyn SimPlatform>> = vec![
        amazon::AmazonSim::new(ctx),
        magento::MagentoSim::new(ctx),
        odoo::OdooSim::new(ctx),
        quickbooks::QuickBooksSim::new(ctx),
        sap_business_one::SapBusinessOneSim::new(ctx),
        square::SquareSim::new(ctx),
        unleashed::UnleashedSim::new(ctx),
        woocommerce::WooCommerceSim::new(ctx),
    ];
    platforms
}

/// What the adapters' tests share.
#[cfg(test)]
pub(crate) mod testkit {
    use std::sync::{Arc, Mutex};

    use axum::Router;
    use axum::http::{HeaderMap, StatusCode};
    use axum::routing::post;

    /// The deliveries a receiver got: headers and raw body.
    pub type Received = Arc<Mutex<Vec<(HeaderMap, Vec<u8>)>>>;

    /// A webhook receiver on loopback that keeps every delivery; its URL.
    pub async fn receiver() -> (String, Received) {
        let got: Received = Arc::default();
        let keep = got.clone();
        let app = Router::new().route(
            "/hooks",
            post(move |headers: HeaderMap, body: axum::body::Bytes| {
                let keep = keep.clone();
                async move {
                    keep.lock().unwrap_or_else(|p| p.into_inner()).push((headers, body.to_vec()));
                    StatusCode::OK
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a loopback port");
        let addr = listener.local_addr().expect("a bound address");
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        (format!("http://{addr}/hooks"), got)
    }
}
