//! WooCommerce, simulated: the `wc/v3` REST API under `/wp-json/wc/v3/…` and
//! signed webhooks, in WooCommerce's own shapes.
//!
//! What it imitates:
//! - auth with a REST key: `consumer_key`/`consumer_secret` query parameters
//!   (read first, as WooCommerce does) or HTTP Basic. A known key with a wrong
//!   secret answers 401 `woocommerce_rest_authentication_error` "Consumer
//!   secret is invalid." with `WWW-Authenticate`; no key or an unknown key
//!   answers the route's permission error (`woocommerce_rest_cannot_view`,
//!   `_cannot_edit`, `_cannot_create`, `_cannot_batch`), 401;
//! - products: `GET /products?sku=A,B` (an array), `GET|PUT /products/{id}`,
//!   `POST /products/batch` (≤ 100 objects, else 413). WooCommerce keeps one
//!   stock pool per product: `stock_quantity` is the sum over locations of
//!   on hand minus committed, and an absolute write moves the first
//!   location's on hand so that it matches;
//! - orders: `GET /orders` with WordPress paging (`page`, `per_page` ≤ 100,
//!   `X-WP-Total`, `X-WP-TotalPages`, one `Link` header per `rel="prev"` /
//!   `rel="next"`), filters `status` (comma list), `after`/`before`,
//!   `modified_after`/`modified_before` (exclusive), `dates_are_gmt`,
//!   `customer`, `orderby` (date, id, include, title, slug, modified) and
//!   `order`; `GET|PUT /orders/{id}`; `GET|POST /orders/{id}/notes`;
//! - order statuses move stock as core does: entering processing, on-hold or
//!   completed reduces stock once, entering cancelled or pending gives it
//!   back once; every change bumps `date_modified(_gmt)` and adds the
//!   system note "Order status changed from X to Y.";
//! - errors as WordPress `{"code","message","data":{"status"}}`, including
//!   `rest_invalid_param` with `params` and `details`, `rest_no_route`,
//!   `rest_invalid_json`; a PUT to an unknown id answers 400 "Invalid ID."
//!   and a GET 404, as the CRUD controller does;
//! - JSON encoded the way `wp_json_encode` does it (`\/` in strings,
//!   non-ASCII as `\uXXXX`), in answers and webhook bodies alike;
//! - webhooks `order.created`, `order.updated` (on cancel and on shipment)
//!   and `product.updated` (on stock changes): the body is the `GET` answer,
//!   signed `base64(HMAC-SHA256(secret, raw body))` in
//!   `X-WC-Webhook-Signature`, with a fixed `X-WC-Webhook-ID` per topic and a
//!   fresh `X-WC-Webhook-Delivery-ID` on every delivery, redeliveries
//!   included.
//!
//! Choices where the platform leaves room or the docs were unconfirmed:
//! - the site's timezone is UTC (the WordPress default), so `date_*` equal
//!   `date_*_gmt`; dates carry no `Z` suffix;
//! - the order id (and `number`) is the ERP order number; product and
//!   customer ids are the ERP ids;
//! - Basic auth is accepted over plain HTTP (a real store only takes it over
//!   HTTPS and wants OAuth 1.0a signatures otherwise, which are not served);
//! - `meta_data` carries `customer_group` (the customer's first ERP tag, or
//!   "") as a B2B plugin would store it; a PUT `meta_data` entry updates the
//!   first meta with its key (or its `id`) and adds one otherwise;
//! - order status `trash` is refused on PUT as in the v3 schema (trashing is
//!   a DELETE, not served);
//! - a repeated identical note is recorded once (effects count by a natural
//!   key) and the answer repeats the first note;
//! - `added_by_user: true` attributes a note to the key's user
//!   (`shop-manager`); otherwise its author is `system`;
//! - batch `create`/`delete` entries are refused per item: the catalogue is
//!   the ERP's;
//! - throttling is not built into WooCommerce; an injected 429 answers a
//!   WordPress-shaped `too_many_requests` error with `Retry-After` in whole
//!   seconds, other injected failures the critical-error body with the
//!   fault's status.
//!
//! Fault operations: `products.list`, `products.get`, `products.update`,
//! `products.batch`, `orders.list`, `orders.get`, `orders.update`,
//! `orders.notes.list`, `orders.notes.create`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use serde_json::{Value, json};

use crate::config::raw::SignatureAlgorithm;
use crate::connector::webhook::hmac_bytes;
use crate::sandbox::erp::{Erp, OrderState, Product, SimOrder};
use crate::sandbox::faults::{self, FaultKind, Faults, When};
use crate::sandbox::platforms::{Delivery, OrderEvent, SimConnection, SimContext, SimPlatform};

const NAME: &str = "woocommerce";
const WC_VERSION: &str = "9.8.5";
const USER_AGENT: &str = "WooCommerce/9.8.5 Hookshot (WordPress/6.8.1)";
const API_USER: &str = "shop-manager";
const MAX_PER_PAGE: i64 = 100;
const MAX_BATCH: usize = 100;

/// Order statuses a PUT accepts (the v3 item schema's enum).
const ORDER_STATUSES: &[&str] =
    &["auto-draft", "pending", "processing", "on-hold", "completed", "cancelled", "refunded", "failed", "checkout-draft"];

/// Statuses in which an order holds its stock, and those that give it back.
const HOLDS_STOCK: &[&str] = &["processing", "on-hold", "completed"];
const RESTORES_STOCK: &[&str] = &["cancelled", "pending"];

/// Webhook ids, fixed per topic.
const WEBHOOK_ORDER_CREATED: u64 = 1;
const WEBHOOK_ORDER_UPDATED: u64 = 2;
const WEBHOOK_PRODUCT_UPDATED: u64 = 3;

// Keys of the per-order state kept in `SimOrder::extra`.
const STATUS: &str = "woo_status";
const MODIFIED: &str = "woo_modified_gmt";
const COMPLETED: &str = "woo_completed_gmt";
const META: &str = "woo_meta";
const NOTES: &str = "woo_notes";
const STOCK_HELD: &str = "woo_stock_reduced";
const SHIPMENT_SEEN: &str = "woo_shipment_seen";

/// The REST key and webhook secret of the simulated store.
#[derive(Debug, Clone)]
pub struct WooCommerceCredentials {
    pub consumer_key: String,
    pub consumer_secret: String,
    pub webhook_secret: String,
}

pub struct WooCommerceSim {
    pub erp: Arc<Erp>,
    faults: Arc<Faults>,
    pub creds: WooCommerceCredentials,
    /// Order id (the ERP order number) → ERP order id, filled on demand.
    order_ids: Mutex<HashMap<u64, u64>>,
    /// Product tag ids by tag name, handed out in the order tags are first seen.
    tag_ids: Mutex<HashMap<String, u64>>,
    /// Last `PUT` of each product (GMT), for `date_modified`.
    product_modified: Mutex<HashMap<u64, String>>,
    next_meta_id: AtomicU64,
    next_note_id: AtomicU64,
    /// The site URL without trailing slash, as last seen.
    site: RwLock<String>,
    /// When the catalogue was published (GMT), for products' `date_created`.
    published: String,
}

/// Now, as WooCommerce writes dates: `YYYY-MM-DDTHH:MM:SS`, UTC.
fn now_gmt() -> String {
    wc_date(time::OffsetDateTime::now_utc())
}

fn wc_date(t: time::OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!("{:04}-{:02}-{:02}T{:02}:{:02}:{:02}", t.year(), u8::from(t.month()), t.day(), t.hour(), t.minute(), t.second())
}

/// An ERP timestamp (RFC 3339) as a WooCommerce date.
fn wc_date_of(rfc3339: &str) -> String {
    crate::clock::parse_instant(rfc3339).map(wc_date).unwrap_or_else(|| rfc3339.chars().take(19).collect())
}

/// A request date as `rest_parse_date` accepts it (`T` or space, optional
/// fraction, optional `Z`/offset), converted to the site's time (UTC) and cut
/// to whole seconds as the date query compares it.
fn parse_request_date(raw: &str) -> Option<String> {
    let s = raw.trim();
    let b = s.as_bytes();
    if b.len() < 19 || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    let digits = |r: std::ops::Range<usize>| s.get(r).filter(|d| d.bytes().all(|c| c.is_ascii_digit())).and_then(|d| d.parse::<u32>().ok());
    let (year, month, day) = (digits(0..4)?, digits(5..7)?, digits(8..10)?);
    let (hour, minute, second) = (digits(11..13)?, digits(14..16)?, digits(17..19)?);
    if b[4] != b'-' || b[7] != b'-' || b[13] != b':' || b[16] != b':' {
        return None;
    }
    let mut rest = &s[19..];
    if let Some(fraction) = rest.strip_prefix('.') {
        let end = fraction.find(|c: char| !c.is_ascii_digit()).unwrap_or(fraction.len());
        if end == 0 {
            return None;
        }
        rest = &fraction[end..];
    }
    let offset_seconds: i32 = match rest {
        "" | "Z" | "z" => 0,
        tz => {
            let sign = match tz.as_bytes()[0] {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            let tz = &tz[1..];
            let (h, m) = match tz.len() {
                2 => (tz.parse::<i32>().ok()?, 0),
                5 if tz.as_bytes()[2] == b':' => (tz[0..2].parse::<i32>().ok()?, tz[3..5].parse::<i32>().ok()?),
                _ => return None,
            };
            sign * (h * 3600 + m * 60)
        }
    };
    let month = time::Month::try_from(u8::try_from(month).ok()?).ok()?;
    let date = time::Date::from_calendar_date(i32::try_from(year).ok()?, month, u8::try_from(day).ok()?).ok()?;
    let clock = time::Time::from_hms(u8::try_from(hour).ok()?, u8::try_from(minute).ok()?, u8::try_from(second).ok()?).ok()?;
    let offset = time::UtcOffset::from_whole_seconds(offset_seconds).ok()?;
    Some(wc_date(time::PrimitiveDateTime::new(date, clock).assume_offset(offset)))
}

/// A WordPress slug: lower case, dashes between words.
fn slugify(text: &str) -> String {
    let mut slug = String::new();
    for c in text.chars() {
        if c.is_ascii_alphanumeric() {
            slug.push(c.to_ascii_lowercase());
        } else if !slug.is_empty() && !slug.ends_with('-') && c != '\'' {
            slug.push('-');
        }
    }
    slug.trim_end_matches('-').to_string()
}

/// The status's label, as order notes show it.
fn status_label(status: &str) -> String {
    match status {
        "pending" => "Pending payment".into(),
        "on-hold" => "On hold".into(),
        "checkout-draft" => "Draft".into(),
        other => {
            let mut chars = other.chars();
            chars.next().map(|c| c.to_ascii_uppercase().to_string() + chars.as_str()).unwrap_or_default()
        }
    }
}

/// A list the way WordPress writes one in messages: "a, b, and c".
fn wp_list(items: &[&str]) -> String {
    match items {
        [] => String::new(),
        [one] => one.to_string(),
        [a, b] => format!("{a} and {b}"),
        [init @ .., last] => format!("{}, and {last}", init.join(", ")),
    }
}

/// JSON encoded as `wp_json_encode` does: slashes escaped, non-ASCII as `\uXXXX`.
fn wp_json_bytes(value: &Value) -> Vec<u8> {
    let raw = serde_json::to_string(value).expect("JSON serializes");
    let mut out = String::with_capacity(raw.len() + raw.len() / 8);
    for c in raw.chars() {
        match c {
            '/' => out.push_str("\\/"),
            c if c.is_ascii() => out.push(c),
            c => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    out.push_str(&format!("\\u{unit:04x}"));
                }
            }
        }
    }
    out.into_bytes()
}

fn wp_response(status: StatusCode, value: &Value) -> Response {
    let mut r = (status, wp_json_bytes(value)).into_response();
    r.headers_mut().insert("content-type", HeaderValue::from_static("application/json; charset=UTF-8"));
    r
}

/// A WordPress error answer: `{"code","message","data":{"status",…}}`.
struct WpError {
    status: StatusCode,
    body: Value,
    /// Ask for Basic credentials (`WWW-Authenticate`), as a failed key check does.
    challenge: bool,
}

impl IntoResponse for WpError {
    fn into_response(self) -> Response {
        let mut r = wp_response(self.status, &self.body);
        if self.challenge {
            r.headers_mut().insert(
                "www-authenticate",
                HeaderValue::from_static(
                    "Basic realm=\"WooCommerce API. Use a consumer key in the username field and a consumer secret in the password field.\"",
                ),
            );
        }
        r
    }
}

/// What a handler answers: a response, or WordPress's error.
type Answer = Result<Response, WpError>;

fn wp_error(status: StatusCode, code: &str, message: &str) -> WpError {
    WpError { status, body: json!({"code": code, "message": message, "data": {"status": status.as_u16()}}), challenge: false }
}

/// `rest_invalid_param` for one parameter, with WordPress's `details`.
fn invalid_param(param: &str, message: &str, detail_code: &str) -> WpError {
    WpError {
        status: StatusCode::BAD_REQUEST,
        body: json!({"code": "rest_invalid_param", "message": format!("Invalid parameter(s): {param}"),
                     "data": {"status": 400, "params": {param: message},
                              "details": {param: {"code": detail_code, "message": message, "data": null}}}}),
        challenge: false,
    }
}

fn no_route() -> Response {
    wp_error(StatusCode::NOT_FOUND, "rest_no_route", "No route was found matching the URL and request method.").into_response()
}

/// The body of a failure injected with `status`: WordPress's critical-error answer.
fn server_error(status: u16) -> Value {
    json!({"code": "internal_server_error",
           "message": "<p>There has been a critical error on this website.</p><p><a href=\"https://wordpress.org/documentation/article/faq-troubleshooting/\">Learn more about troubleshooting WordPress.</a></p>",
           "data": {"status": status}, "additional_errors": []})
}

fn throttled(retry_after_s: f64) -> Response {
    let mut r = wp_error(StatusCode::TOO_MANY_REQUESTS, "too_many_requests", "Too Many Requests").into_response();
    let seconds = retry_after_s.max(0.0).ceil() as u64;
    r.headers_mut().insert("retry-after", HeaderValue::from_str(&seconds.to_string()).expect("a number is a valid header"));
    r
}

/// Run one operation under the fault plan.
async fn with_faults(faults: &Faults, operation: &str, answer: impl FnOnce() -> Answer) -> Response {
    let fault = faults.pick(NAME, operation);
    if let Some((kind, When::Before)) = &fault {
        let early = match kind {
            FaultKind::Throttle { retry_after_s } => Some(throttled(*retry_after_s)),
            FaultKind::Status { status } => faults::before(kind, &server_error(*status)).await,
            _ => faults::before(kind, &server_error(503)).await,
        };
        if let Some(r) = early {
            return r;
        }
    }
    let real = answer().unwrap_or_else(IntoResponse::into_response);
    match &fault {
        Some((kind, When::After)) => {
            let status = if let FaultKind::Status { status } = kind { *status } else { 500 };
            faults::after(kind, real, &server_error(status)).await
        }
        _ => real,
    }
}

/// Decode `application/x-www-form-urlencoded` pairs.
fn query_pairs(raw: &str) -> Vec<(String, String)> {
    fn hex(b: u8) -> Option<u8> {
        (b as char).to_digit(16).and_then(|d| u8::try_from(d).ok())
    }
    fn decode(s: &str) -> String {
        let bytes = s.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'+' => out.push(b' '),
                b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                    (Some(high), Some(low)) => {
                        out.push(high * 16 + low);
                        i += 2;
                    }
                    _ => out.push(b'%'),
                },
                b => out.push(b),
            }
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    }
    raw.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (decode(k), decode(v)),
            None => (decode(p), String::new()),
        })
        .collect()
}

/// Which request is being authorised, for the permission error it gets.
#[derive(Clone, Copy)]
enum Access {
    List,
    View,
    Edit,
    Create,
    Batch,
}

impl Access {
    fn refusal(self) -> WpError {
        let (code, message) = match self {
            Access::List => ("woocommerce_rest_cannot_view", "Sorry, you cannot list resources."),
            Access::View => ("woocommerce_rest_cannot_view", "Sorry, you cannot view this resource."),
            Access::Edit => ("woocommerce_rest_cannot_edit", "Sorry, you are not allowed to edit this resource."),
            Access::Create => ("woocommerce_rest_cannot_create", "Sorry, you are not allowed to create resources."),
            Access::Batch => ("woocommerce_rest_cannot_batch", "Sorry, you are not allowed to batch manipulate this resource."),
        };
        wp_error(StatusCode::UNAUTHORIZED, code, message)
    }
}

/// The query of a request, decoded and raw (for paging links).
struct Request {
    query: Vec<(String, String)>,
    raw_query: String,
}

impl Request {
    fn param(&self, name: &str) -> Option<&str> {
        self.query.iter().rev().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

impl WooCommerceSim {
    pub fn new(ctx: &SimContext) -> Arc<Self> {
        Arc::new(WooCommerceSim {
            erp: ctx.erp.clone(),
            faults: ctx.faults.clone(),
            creds: WooCommerceCredentials {
                consumer_key: format!("ck_{}", crate::sandbox::random_hex(20)),
                consumer_secret: format!("cs_{}", crate::sandbox::random_hex(20)),
                webhook_secret: crate::sandbox::random_hex(24),
            },
            order_ids: Mutex::new(HashMap::new()),
            tag_ids: Mutex::new(HashMap::new()),
            product_modified: Mutex::new(HashMap::new()),
            next_meta_id: AtomicU64::new(4101),
            next_note_id: AtomicU64::new(301),
            site: RwLock::new(format!("http://localhost/{NAME}")),
            published: now_gmt(),
        })
    }

    /// The site URL, without trailing slash.
    fn site(&self) -> String {
        self.site.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn remember_site(&self, headers: &HeaderMap) {
        if let Some(host) = headers.get("host").and_then(|h| h.to_str().ok()) {
            let site = format!("http://{host}/{NAME}");
            if *self.site.read().unwrap_or_else(|p| p.into_inner()) != site {
                *self.site.write().unwrap_or_else(|p| p.into_inner()) = site;
            }
        }
    }

    fn rest_url(&self, route: &str) -> String {
        format!("{}/wp-json/wc/v3/{route}", self.site())
    }

    /// Authenticate as WooCommerce does: query parameters first, then Basic.
    fn authorize(&self, headers: &HeaderMap, req: &Request, access: Access) -> Result<(), WpError> {
        let from_query = req.param("consumer_key").filter(|k| !k.is_empty()).zip(req.param("consumer_secret").filter(|s| !s.is_empty()));
        let (key, secret) = match from_query {
            Some((k, s)) => (k.to_string(), s.to_string()),
            None => {
                let basic = headers
                    .get("authorization")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.strip_prefix("Basic ").or_else(|| v.strip_prefix("basic ")))
                    .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b.trim()).ok())
                    .and_then(|b| String::from_utf8(b).ok());
                match basic.as_deref().and_then(|b| b.split_once(':')) {
                    Some((k, s)) if !k.is_empty() && !s.is_empty() => (k.to_string(), s.to_string()),
                    _ => return Err(access.refusal()),
                }
            }
        };
        if key != self.creds.consumer_key {
            return Err(access.refusal());
        }
        if secret != self.creds.consumer_secret {
            let mut refusal = wp_error(StatusCode::UNAUTHORIZED, "woocommerce_rest_authentication_error", "Consumer secret is invalid.");
            refusal.challenge = true;
            return Err(refusal);
        }
        Ok(())
    }

    // ----- orders -------------------------------------------------------

    /// The ERP id of WooCommerce order `id`, if it is one of this store's.
    fn erp_order_id(&self, id: u64) -> Option<u64> {
        if let Some(erp_id) = self.order_ids.lock().unwrap_or_else(|p| p.into_inner()).get(&id) {
            return Some(*erp_id);
        }
        let mut ids = self.order_ids.lock().unwrap_or_else(|p| p.into_inner());
        for o in self.erp.orders().into_iter().filter(|o| o.platform == NAME) {
            ids.insert(o.number, o.id);
        }
        ids.get(&id).copied()
    }

    fn store_orders(&self) -> Vec<SimOrder> {
        let mine: Vec<u64> = self.erp.orders().into_iter().filter(|o| o.platform == NAME).map(|o| o.id).collect();
        mine.into_iter().filter_map(|id| self.observe(id)).collect()
    }

    fn new_note(&self, author: &str, note: &str, customer_note: bool) -> Value {
        let id = self.next_note_id.fetch_add(1, Ordering::Relaxed);
        json!({"id": id, "author": author, "date_created_gmt": now_gmt(), "note": note, "customer_note": customer_note})
    }

    /// The order as the store sees it now: its WooCommerce state set up on
    /// first sight, then brought in line with what happened to it in the ERP
    /// (a customer cancellation, a shipment).
    fn observe(&self, erp_id: u64) -> Option<SimOrder> {
        let now = now_gmt();
        let mut commit_again = false;
        let order = self.erp.update_order(erp_id, |o| {
            if o.platform != NAME {
                return o.clone();
            }
            if !o.extra.contains_key(STATUS) {
                let group = o.customer.tags.first().cloned().unwrap_or_default();
                let meta_id = self.next_meta_id.fetch_add(1, Ordering::Relaxed);
                o.extra.insert(STATUS.into(), json!("processing"));
                o.extra.insert(MODIFIED.into(), json!(wc_date_of(&o.created_at)));
                o.extra.insert(META.into(), json!([{"id": meta_id, "key": "customer_group", "value": group}]));
                o.extra.insert(NOTES.into(), json!([]));
                o.extra.insert(STOCK_HELD.into(), json!(true));
            }
            let status = o.extra.get(STATUS).and_then(Value::as_str).unwrap_or("processing").to_string();
            let held = o.extra.get(STOCK_HELD).and_then(Value::as_bool).unwrap_or(true);
            let mut changes: Vec<(String, String)> = Vec::new();
            if o.state == OrderState::Cancelled && status != "cancelled" {
                // Cancelled outside the API: the ERP gave the units back already,
                // so an order whose stock was not held has had them given twice.
                if !held {
                    commit_again = true;
                }
                o.extra.insert(STOCK_HELD.into(), json!(false));
                changes.push((status.clone(), "cancelled".into()));
            } else if o.extra.contains_key("fulfilled") && !o.extra.contains_key(SHIPMENT_SEEN) {
                o.extra.insert(SHIPMENT_SEEN.into(), json!(true));
                if status != "cancelled" && status != "completed" {
                    if !held {
                        commit_again = true;
                        o.extra.insert(STOCK_HELD.into(), json!(true));
                    }
                    o.extra.insert(COMPLETED.into(), json!(now));
                    changes.push((status.clone(), "completed".into()));
                }
            }
            for (from, to) in changes {
                o.extra.insert(STATUS.into(), json!(to));
                o.extra.insert(MODIFIED.into(), json!(now));
                let note =
                    self.new_note("system", &format!("Order status changed from {} to {}.", status_label(&from), status_label(&to)), false);
                if let Some(notes) = o.extra.get_mut(NOTES).and_then(Value::as_array_mut) {
                    notes.push(note);
                }
            }
            o.clone()
        })?;
        if commit_again {
            self.erp.commit_order(erp_id);
        }
        if order.platform != NAME {
            return None;
        }
        self.order_ids.lock().unwrap_or_else(|p| p.into_inner()).insert(order.number, order.id);
        Some(order)
    }

    fn find_order(&self, id: u64) -> Option<SimOrder> {
        self.erp_order_id(id).and_then(|erp_id| self.observe(erp_id))
    }

    /// The order as `GET /orders/{id}` (and every order webhook) answers it.
    pub fn order_json(&self, o: &SimOrder) -> Value {
        let id = o.number;
        let status = o.extra.get(STATUS).and_then(Value::as_str).unwrap_or("processing");
        let created = wc_date_of(&o.created_at);
        let modified = o.extra.get(MODIFIED).and_then(Value::as_str).map(str::to_string).unwrap_or_else(|| created.clone());
        let completed = o.extra.get(COMPLETED).cloned().unwrap_or(Value::Null);
        let mut order_total = 0.0;
        let line_items: Vec<Value> = o
            .lines
            .iter()
            .map(|l| {
                let product = self.erp.product_by_sku(&l.sku);
                let (product_id, name, unit) =
                    product.map_or((0, l.sku.clone(), 0.0), |p| (p.id, p.title.clone(), p.price.parse::<f64>().unwrap_or(0.0)));
                let total = unit * l.qty as f64;
                order_total += total;
                json!({"id": l.id, "name": name, "product_id": product_id, "variation_id": 0, "quantity": l.qty, "tax_class": "",
                       "subtotal": format!("{total:.2}"), "subtotal_tax": "0.00", "total": format!("{total:.2}"), "total_tax": "0.00",
                       "taxes": [], "meta_data": [], "sku": l.sku, "price": unit, "image": {"id": 0, "src": ""}, "parent_name": null})
            })
            .collect();
        let c = &o.customer;
        let mut links =
            json!({"self": [{"href": self.rest_url(&format!("orders/{id}"))}], "collection": [{"href": self.rest_url("orders")}]});
        links["customer"] = json!([{"href": self.rest_url(&format!("customers/{}", c.id))}]);
        let needs_payment = matches!(status, "pending" | "failed");
        let mut order = json!({
            "id": id, "parent_id": 0, "status": status, "currency": "USD", "version": WC_VERSION, "prices_include_tax": false,
            "date_created": created, "date_created_gmt": created, "date_modified": modified, "date_modified_gmt": modified,
            "discount_total": "0.00", "discount_tax": "0.00", "shipping_total": "0.00", "shipping_tax": "0.00", "cart_tax": "0.00",
            "total": format!("{order_total:.2}"), "total_tax": "0.00", "customer_id": c.id,
            "order_key": format!("wc_order_{}", &format!("{:016x}", id.wrapping_mul(0x9e37_79b9_7f4a_7c15))[..13]),
            "billing": {"first_name": c.first_name, "last_name": c.last_name, "company": c.company, "address_1": "", "address_2": "",
                        "city": "", "state": "", "postcode": "", "country": "", "email": c.email, "phone": ""},
            "shipping": {"first_name": c.first_name, "last_name": c.last_name, "company": c.company, "address_1": "", "address_2": "",
                         "city": "", "state": "", "postcode": "", "country": "", "phone": ""},
        });
        let more = json!({
            "payment_method": "bacs", "payment_method_title": "Direct bank transfer", "transaction_id": "",
            "customer_ip_address": "", "customer_user_agent": "", "created_via": "checkout", "customer_note": "",
            "date_completed": completed, "date_completed_gmt": completed, "date_paid": created, "date_paid_gmt": created,
            "cart_hash": "", "number": id.to_string(),
            "meta_data": o.extra.get(META).cloned().unwrap_or(json!([])),
            "line_items": line_items, "tax_lines": [], "shipping_lines": [], "fee_lines": [], "coupon_lines": [], "refunds": [],
            "payment_url": format!("{}/checkout/order-pay/{id}/", self.site()),
            "is_editable": matches!(status, "pending" | "on-hold" | "auto-draft" | "checkout-draft"),
            "needs_payment": needs_payment, "needs_processing": true, "currency_symbol": "$",
            "_links": links,
        });
        if let (Some(fields), Value::Object(more)) = (order.as_object_mut(), more) {
            fields.extend(more);
        }
        order
    }

    fn note_json(&self, order_id: u64, note: &Value) -> Value {
        let id = note.get("id").and_then(Value::as_u64).unwrap_or(0);
        let date = note.get("date_created_gmt").cloned().unwrap_or(Value::Null);
        json!({"id": id, "author": note.get("author").cloned().unwrap_or(json!("system")), "date_created": date, "date_created_gmt": date,
               "note": note.get("note").cloned().unwrap_or(json!("")), "customer_note": note.get("customer_note").and_then(Value::as_bool).unwrap_or(false),
               "_links": {"self": [{"href": self.rest_url(&format!("orders/{order_id}/notes/{id}"))}],
                          "collection": [{"href": self.rest_url(&format!("orders/{order_id}/notes"))}],
                          "up": [{"href": self.rest_url(&format!("orders/{order_id}"))}]}})
    }

    /// Add a note; the same note again is recorded once and answers the first one.
    fn add_note(&self, order: &SimOrder, text: &str, customer_note: bool, added_by_user: bool) -> Value {
        let key = format!("{NAME}:note:{}:{customer_note}:{text}", order.number);
        if self.erp.effect(NAME, "order_note", Some(order.id), &key, json!({"note": text, "customer_note": customer_note})) {
            let note = self.new_note(if added_by_user { API_USER } else { "system" }, text, customer_note);
            let stored = note.clone();
            self.erp.update_order(order.id, |o| {
                if let Some(list) = o.extra.entry(NOTES.to_string()).or_insert_with(|| json!([])).as_array_mut() {
                    list.push(stored);
                }
            });
            return note;
        }
        let same = |n: &&Value| {
            n.get("note").and_then(Value::as_str) == Some(text) && n.get("customer_note").and_then(Value::as_bool) == Some(customer_note)
        };
        order
            .extra
            .get(NOTES)
            .and_then(Value::as_array)
            .and_then(|notes| notes.iter().find(same))
            .cloned()
            .unwrap_or_else(|| self.new_note(if added_by_user { API_USER } else { "system" }, text, customer_note))
    }

    /// Move an order to `to`, with core's stock handling. Returns whether it changed.
    fn set_status(&self, order: &SimOrder, to: &str) -> bool {
        let now = now_gmt();
        enum StockMove {
            None,
            Reduce,
            Restore,
        }
        let mut stock = StockMove::None;
        let changed = self
            .erp
            .update_order(order.id, |o| {
                let from = o.extra.get(STATUS).and_then(Value::as_str).unwrap_or("processing").to_string();
                if from == to {
                    return false;
                }
                let held = o.extra.get(STOCK_HELD).and_then(Value::as_bool).unwrap_or(true);
                if HOLDS_STOCK.contains(&to) && !held {
                    stock = StockMove::Reduce;
                    o.extra.insert(STOCK_HELD.into(), json!(true));
                } else if RESTORES_STOCK.contains(&to) && held {
                    stock = StockMove::Restore;
                    o.extra.insert(STOCK_HELD.into(), json!(false));
                }
                match to {
                    "cancelled" => {
                        o.state = OrderState::Cancelled;
                        o.extra.insert("cancelled_at".into(), json!(crate::clock::format_rfc3339(time::OffsetDateTime::now_utc())));
                    }
                    "on-hold" => o.state = OrderState::OnHold,
                    _ => {
                        o.state = OrderState::Open;
                        o.extra.remove("cancelled_at");
                    }
                }
                if to == "completed" {
                    o.extra.insert(COMPLETED.into(), json!(now));
                }
                o.extra.insert(STATUS.into(), json!(to));
                o.extra.insert(MODIFIED.into(), json!(now));
                let note =
                    self.new_note("system", &format!("Order status changed from {} to {}.", status_label(&from), status_label(to)), false);
                if let Some(notes) = o.extra.get_mut(NOTES).and_then(Value::as_array_mut) {
                    notes.push(note);
                }
                true
            })
            .unwrap_or(false);
        let shipped = order.extra.contains_key("fulfilled");
        match stock {
            StockMove::None => {}
            // A shipped order's units have left the warehouse: its stock moves on hand.
            StockMove::Reduce if shipped => order.lines.iter().for_each(|l| self.erp.adjust_on_hand(&l.sku, order.location, -l.qty)),
            StockMove::Reduce => self.erp.commit_order(order.id),
            StockMove::Restore if shipped => order.lines.iter().for_each(|l| self.erp.adjust_on_hand(&l.sku, order.location, l.qty)),
            StockMove::Restore => self.erp.release_commitment(order.id),
        }
        changed
    }

    /// `update_meta_data`: by id, else the first meta with the key, else a new one.
    fn set_meta(&self, order: &SimOrder, entries: &[Value]) -> bool {
        let now = now_gmt();
        let mut changed_any = false;
        for entry in entries {
            let Some(key) = entry.get("key").and_then(Value::as_str) else { continue };
            let value = entry.get("value").cloned().unwrap_or(Value::Null);
            let wanted_id = entry.get("id").and_then(Value::as_u64);
            let changed = self
                .erp
                .update_order(order.id, |o| {
                    let meta = o.extra.entry(META.to_string()).or_insert_with(|| json!([]));
                    let Some(list) = meta.as_array_mut() else { return false };
                    let at = wanted_id
                        .and_then(|id| list.iter().position(|m| m.get("id").and_then(Value::as_u64) == Some(id)))
                        .or_else(|| list.iter().position(|m| m.get("key").and_then(Value::as_str) == Some(key)));
                    let changed = match at {
                        Some(i) if list[i]["value"] == value && list[i]["key"] == key => false,
                        Some(i) => {
                            list[i]["key"] = json!(key);
                            list[i]["value"] = value.clone();
                            true
                        }
                        None => {
                            list.push(json!({"id": self.next_meta_id.fetch_add(1, Ordering::Relaxed), "key": key, "value": value}));
                            true
                        }
                    };
                    if changed {
                        o.extra.insert(MODIFIED.into(), json!(now));
                    }
                    changed
                })
                .unwrap_or(false);
            self.erp.effect(
                NAME,
                "order_meta",
                Some(order.id),
                &format!("{NAME}:meta:{}:{key}:{value}", order.number),
                json!({"key": key, "value": value}),
            );
            changed_any |= changed;
        }
        changed_any
    }

    // ----- products -----------------------------------------------------

    fn tag_id(&self, name: &str) -> u64 {
        let mut ids = self.tag_ids.lock().unwrap_or_else(|p| p.into_inner());
        let next = 15 + ids.len() as u64;
        *ids.entry(name.to_string()).or_insert(next)
    }

    /// The product as `GET /products/{id}` answers it.
    pub fn product_json(&self, p: &Product) -> Value {
        let (_, _, stock) = self.erp.totals(&p.sku);
        let modified =
            self.product_modified.lock().unwrap_or_else(|e| e.into_inner()).get(&p.id).cloned().unwrap_or_else(|| self.published.clone());
        let tags: Vec<Value> = p.tags.iter().map(|t| json!({"id": self.tag_id(t), "name": t, "slug": slugify(t)})).collect();
        let slug = slugify(&p.title);
        let mut product = json!({
            "id": p.id, "name": p.title, "slug": slug, "permalink": format!("{}/product/{slug}/", self.site()),
            "date_created": self.published, "date_created_gmt": self.published, "date_modified": modified, "date_modified_gmt": modified,
            "type": "simple", "status": "publish", "featured": false, "catalog_visibility": "visible",
            "description": "", "short_description": "", "sku": p.sku,
            "price": p.price, "regular_price": p.price, "sale_price": "", "on_sale": false, "purchasable": true,
        });
        let more = json!({
            "total_sales": 0, "virtual": false, "downloadable": false, "tax_status": "taxable", "tax_class": "",
            "manage_stock": true, "stock_quantity": stock, "stock_status": if stock > 0 { "instock" } else { "outofstock" },
            "backorders": "no", "backorders_allowed": false, "backordered": false, "low_stock_amount": null,
            "sold_individually": false, "weight": "", "dimensions": {"length": "", "width": "", "height": ""},
            "categories": [], "tags": tags, "images": [], "attributes": [], "variations": [], "meta_data": [],
            "_links": {"self": [{"href": self.rest_url(&format!("products/{}", p.id))}], "collection": [{"href": self.rest_url("products")}]},
        });
        if let (Some(fields), Value::Object(more)) = (product.as_object_mut(), more) {
            fields.extend(more);
        }
        product
    }

    /// A product `PUT` (also one entry of a batch update).
    fn update_product(&self, id: u64, body: &Value) -> Result<Value, WpError> {
        let Some(product) = self.erp.product_by_id(id) else {
            return Err(wp_error(StatusCode::BAD_REQUEST, "woocommerce_rest_product_invalid_id", "Invalid ID."));
        };
        if let Some(raw) = body.get("stock_quantity").filter(|v| !v.is_null()) {
            let quantity = raw.as_i64().or_else(|| raw.as_str().and_then(|s| s.trim().parse::<i64>().ok()));
            let Some(quantity) = quantity else {
                return Err(invalid_param("stock_quantity", "stock_quantity is not of type integer.", "rest_invalid_type"));
            };
            let (_, _, available) = self.erp.totals(&product.sku);
            let location = self.erp.levels(&product.sku).first().map(|(l, _)| l.id).or_else(|| self.erp.locations().first().map(|l| l.id));
            if let Some(location) = location {
                if quantity != available {
                    self.erp.adjust_on_hand(&product.sku, location, quantity - available);
                }
            }
            self.product_modified.lock().unwrap_or_else(|p| p.into_inner()).insert(id, now_gmt());
            self.erp.effect(
                NAME,
                "stock_set",
                None,
                &format!("{NAME}:stock:{id}:{quantity}"),
                json!({"sku": product.sku, "stock_quantity": quantity}),
            );
        }
        Ok(self.product_json(&product))
    }
}

impl SimPlatform for WooCommerceSim {
    fn name(&self) -> &'static str {
        NAME
    }

    fn router(self: Arc<Self>) -> Router {
        Router::new()
            .route("/wp-json/wc/v3/products", get(list_products))
            .route("/wp-json/wc/v3/products/batch", post(batch_products).put(batch_products).patch(batch_products))
            .route("/wp-json/wc/v3/products/{id}", get(get_product).put(update_product).post(update_product).patch(update_product))
            .route("/wp-json/wc/v3/orders", get(list_orders))
            .route("/wp-json/wc/v3/orders/{id}", get(get_order).put(update_order).post(update_order).patch(update_order))
            .route("/wp-json/wc/v3/orders/{id}/notes", get(list_notes).post(create_note))
            .fallback(|| async { no_route() })
            .with_state(self)
    }

    fn connection(&self, base_url: &str) -> SimConnection {
        *self.site.write().unwrap_or_else(|p| p.into_inner()) = base_url.trim_end_matches('/').to_string();
        SimConnection {
            values: Default::default(),
            secrets: [
                ("consumer_key".to_string(), self.creds.consumer_key.clone()),
                ("consumer_secret".to_string(), self.creds.consumer_secret.clone()),
                ("webhook_secret".to_string(), self.creds.webhook_secret.clone()),
            ]
            .into(),
        }
    }

    fn order_topic(&self, event: OrderEvent) -> Option<&'static str> {
        Some(match event {
            OrderEvent::Created => "order.created",
            OrderEvent::Cancelled | OrderEvent::Fulfilled => "order.updated",
        })
    }

    fn order_delivery(&self, event: OrderEvent, order: &SimOrder, _url: &str) -> Delivery {
        let current = self.observe(order.id).unwrap_or_else(|| order.clone());
        let (topic, webhook_id) = match event {
            OrderEvent::Created => ("order.created", WEBHOOK_ORDER_CREATED),
            OrderEvent::Cancelled | OrderEvent::Fulfilled => ("order.updated", WEBHOOK_ORDER_UPDATED),
        };
        self.signed(topic, webhook_id, &self.order_json(&current))
    }

    fn stock_topic(&self) -> Option<&'static str> {
        Some("product.updated")
    }

    fn stock_deliveries(&self, sku: &str, _url: &str) -> Vec<Delivery> {
        self.erp
            .product_by_sku(sku)
            .map(|p| vec![self.signed("product.updated", WEBHOOK_PRODUCT_UPDATED, &self.product_json(&p))])
            .unwrap_or_default()
    }
}

impl WooCommerceSim {
    /// A webhook delivery: the body as WordPress encodes it, signed, with a fresh delivery id.
    fn signed(&self, topic: &str, webhook_id: u64, payload: &Value) -> Delivery {
        let body = wp_json_bytes(payload);
        let signature = webhook_signature(&self.creds.webhook_secret, &body);
        let (resource, event) = topic.split_once('.').unwrap_or((topic, ""));
        let headers = [
            ("Content-Type", "application/json".to_string()),
            ("User-Agent", USER_AGENT.to_string()),
            ("X-WC-Webhook-Source", format!("{}/", self.site())),
            ("X-WC-Webhook-Topic", topic.to_string()),
            ("X-WC-Webhook-Resource", resource.to_string()),
            ("X-WC-Webhook-Event", event.to_string()),
            ("X-WC-Webhook-Signature", signature),
            ("X-WC-Webhook-ID", webhook_id.to_string()),
            ("X-WC-Webhook-Delivery-ID", crate::sandbox::random_hex(16)),
        ];
        Delivery { headers: headers.into_iter().map(|(k, v)| (k.to_string(), v)).collect(), body }
    }
}

/// `base64(HMAC-SHA256(secret, body))`, as `X-WC-Webhook-Signature` carries it.
pub fn webhook_signature(secret: &str, body: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(hmac_bytes(SignatureAlgorithm::HmacSha256, secret.as_bytes(), body))
}

// ----- handlers ---------------------------------------------------------------

fn request(raw: Option<String>) -> Request {
    let raw_query = raw.unwrap_or_default();
    Request { query: query_pairs(&raw_query), raw_query }
}

fn parse_id(raw: &str) -> Option<u64> {
    raw.parse::<u64>().ok().filter(|_| raw.bytes().all(|b| b.is_ascii_digit()))
}

fn parse_body(body: &[u8]) -> Result<Value, WpError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(json!({}));
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(v) if v.is_object() => Ok(v),
        Ok(_) => Ok(json!({})),
        Err(e) => Err(WpError {
            status: StatusCode::BAD_REQUEST,
            body: json!({"code": "rest_invalid_json", "message": "Invalid JSON body passed.",
                         "data": {"status": 400, "json_error_code": 4, "json_error_message": e.to_string()}}),
            challenge: false,
        }),
    }
}

/// An integer query parameter within bounds, or WordPress's validation error.
fn int_param(req: &Request, name: &str, default: i64, min: i64, max: Option<i64>) -> Result<i64, WpError> {
    let Some(raw) = req.param(name) else { return Ok(default) };
    let Ok(n) = raw.trim().parse::<i64>() else {
        return Err(invalid_param(name, &format!("{name} is not of type integer."), "rest_invalid_type"));
    };
    match max {
        Some(max) if n < min || n > max => {
            Err(invalid_param(name, &format!("{name} must be between {min} (inclusive) and {max} (inclusive)"), "rest_out_of_bounds"))
        }
        None if n < min => Err(invalid_param(name, &format!("{name} must be greater than or equal to {min}"), "rest_out_of_bounds")),
        _ => Ok(n),
    }
}

fn optional_int_param(req: &Request, name: &str, min: i64) -> Result<Option<i64>, WpError> {
    match req.param(name) {
        Some(_) => int_param(req, name, 0, min, None).map(Some),
        None => Ok(None),
    }
}

fn enum_param<'a>(req: &'a Request, name: &str, allowed: &[&str], default: &'a str) -> Result<&'a str, WpError> {
    let value = req.param(name).unwrap_or(default);
    if allowed.contains(&value) {
        Ok(value)
    } else {
        Err(invalid_param(name, &format!("{name} is not one of {}.", wp_list(allowed)), "rest_not_in_enum"))
    }
}

fn bool_param(req: &Request, name: &str) -> Result<bool, WpError> {
    match req.param(name).map(str::to_ascii_lowercase).as_deref() {
        None | Some("false") | Some("0") | Some("") => Ok(false),
        Some("true") | Some("1") => Ok(true),
        Some(_) => Err(invalid_param(name, &format!("{name} is not of type boolean."), "rest_invalid_type")),
    }
}

/// A boolean in a JSON body, as WordPress coerces one.
fn bool_field(body: &Value, name: &str) -> Result<bool, WpError> {
    match body.get(name) {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(Value::String(s)) if matches!(s.as_str(), "true" | "1") => Ok(true),
        Some(Value::String(s)) if matches!(s.as_str(), "false" | "0" | "") => Ok(false),
        Some(Value::Number(n)) if matches!(n.as_u64(), Some(0 | 1)) => Ok(n.as_u64() == Some(1)),
        Some(_) => Err(invalid_param(name, &format!("{name} is not of type boolean."), "rest_invalid_type")),
    }
}

fn date_param(req: &Request, name: &str) -> Result<Option<String>, WpError> {
    match req.param(name) {
        None => Ok(None),
        Some(raw) => parse_request_date(raw).map(Some).ok_or_else(|| invalid_param(name, "Invalid date.", "rest_invalid_date")),
    }
}

/// A page of a collection, with WordPress's paging headers and links.
fn paged(sim: &WooCommerceSim, route: &str, req: &Request, items: Vec<Value>, total: usize, page: i64, per_page: i64) -> Response {
    let pages = total.div_ceil(per_page as usize) as i64;
    let mut r = wp_response(StatusCode::OK, &Value::Array(items));
    let headers = r.headers_mut();
    headers.insert("x-wp-total", HeaderValue::from(total as u64));
    headers.insert("x-wp-totalpages", HeaderValue::from(pages as u64));
    let link = |page: i64| {
        let mut pairs: Vec<String> = req.raw_query.split('&').filter(|p| !p.is_empty()).map(str::to_string).collect();
        match pairs.iter().position(|p| p.split('=').next() == Some("page")) {
            Some(i) => pairs[i] = format!("page={page}"),
            None => pairs.push(format!("page={page}")),
        }
        format!("{}/wp-json/wc/v3/{route}?{}", sim.site(), pairs.join("&"))
    };
    if page > 1 {
        let prev = (page - 1).min(pages.max(1));
        if let Ok(v) = HeaderValue::from_str(&format!("<{}>; rel=\"prev\"", link(prev))) {
            headers.append("link", v);
        }
    }
    if pages > page {
        if let Ok(v) = HeaderValue::from_str(&format!("<{}>; rel=\"next\"", link(page + 1))) {
            headers.append("link", v);
        }
    }
    r
}

type Sim = State<Arc<WooCommerceSim>>;

async fn list_products(State(sim): Sim, headers: HeaderMap, RawQuery(raw): RawQuery) -> Response {
    sim.remember_site(&headers);
    let req = request(raw);
    with_faults(&sim.faults.clone(), "products.list", || {
        sim.authorize(&headers, &req, Access::List)?;
        let per_page = int_param(&req, "per_page", 10, 1, Some(MAX_PER_PAGE))?;
        let page = int_param(&req, "page", 1, 1, None)?;
        let order = enum_param(&req, "order", &["asc", "desc"], "desc")?;
        let mut products: Vec<Product> = match req.param("sku").filter(|s| !s.trim().is_empty()) {
            Some(skus) => skus.split(',').filter_map(|s| sim.erp.product_by_sku(s.trim())).collect(),
            None => sim.erp.products(),
        };
        products.sort_by_key(|p| p.id);
        products.dedup_by_key(|p| p.id);
        if order == "desc" {
            products.reverse();
        }
        if let Some(wanted) = req.param("stock_status") {
            products.retain(|p| {
                let (_, _, stock) = sim.erp.totals(&p.sku);
                wanted == if stock > 0 { "instock" } else { "outofstock" }
            });
        }
        let total = products.len();
        let start = ((page - 1) * per_page) as usize;
        let items: Vec<Value> = products.iter().skip(start).take(per_page as usize).map(|p| sim.product_json(p)).collect();
        Ok(paged(&sim, "products", &req, items, total, page, per_page))
    })
    .await
}

async fn get_product(State(sim): Sim, Path(id): Path<String>, headers: HeaderMap, RawQuery(raw): RawQuery) -> Response {
    sim.remember_site(&headers);
    let req = request(raw);
    let Some(id) = parse_id(&id) else { return no_route() };
    with_faults(&sim.faults.clone(), "products.get", || {
        sim.authorize(&headers, &req, Access::View)?;
        let product = sim
            .erp
            .product_by_id(id)
            .ok_or_else(|| wp_error(StatusCode::NOT_FOUND, "woocommerce_rest_product_invalid_id", "Invalid ID."))?;
        Ok(wp_response(StatusCode::OK, &sim.product_json(&product)))
    })
    .await
}

async fn update_product(State(sim): Sim, Path(id): Path<String>, headers: HeaderMap, RawQuery(raw): RawQuery, body: Bytes) -> Response {
    sim.remember_site(&headers);
    let req = request(raw);
    let Some(id) = parse_id(&id) else { return no_route() };
    with_faults(&sim.faults.clone(), "products.update", || {
        sim.authorize(&headers, &req, Access::Edit)?;
        let body = parse_body(&body)?;
        Ok(wp_response(StatusCode::OK, &sim.update_product(id, &body)?))
    })
    .await
}

/// The error entry of one batch item, as the batch answer lists it.
fn batch_item_error(error: WpError, id: Value) -> Value {
    json!({"id": id, "error": error.body})
}

async fn batch_products(State(sim): Sim, headers: HeaderMap, RawQuery(raw): RawQuery, body: Bytes) -> Response {
    sim.remember_site(&headers);
    let req = request(raw);
    with_faults(&sim.faults.clone(), "products.batch", || {
        sim.authorize(&headers, &req, Access::Batch)?;
        let body = parse_body(&body)?;
        let list = |name: &str| body.get(name).and_then(Value::as_array).cloned();
        let (create, update, delete) = (list("create"), list("update"), list("delete"));
        let count = [&create, &update, &delete].iter().map(|l| l.as_ref().map_or(0, Vec::len)).sum::<usize>();
        if count > MAX_BATCH {
            return Err(wp_error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "woocommerce_rest_request_entity_too_large",
                &format!("Unable to accept more than {MAX_BATCH} items for this request."),
            ));
        }
        let mut answer = serde_json::Map::new();
        if let Some(create) = create {
            let refused = create.iter().map(|_| batch_item_error(Access::Create.refusal(), json!(0))).collect();
            answer.insert("create".into(), Value::Array(refused));
        }
        if let Some(update) = update {
            let updated = update
                .iter()
                .map(|item| {
                    let id = item.get("id").cloned().unwrap_or(Value::Null);
                    let product_id = id.as_u64().or_else(|| id.as_str().and_then(|s| s.parse().ok())).unwrap_or(0);
                    sim.update_product(product_id, item).unwrap_or_else(|e| batch_item_error(e, id))
                })
                .collect();
            answer.insert("update".into(), Value::Array(updated));
        }
        if let Some(delete) = delete {
            let refused = delete
                .iter()
                .map(|id| {
                    let refusal = wp_error(
                        StatusCode::UNAUTHORIZED,
                        "woocommerce_rest_cannot_delete",
                        "Sorry, you are not allowed to delete this resource.",
                    );
                    batch_item_error(refusal, id.clone())
                })
                .collect();
            answer.insert("delete".into(), Value::Array(refused));
        }
        Ok(wp_response(StatusCode::OK, &Value::Object(answer)))
    })
    .await
}

/// The `status` filter of the orders list: a comma list of statuses, `any` for all but trash.
fn status_filter(req: &Request) -> Result<Option<Vec<String>>, WpError> {
    let Some(raw) = req.param("status") else { return Ok(None) };
    let allowed: Vec<&str> = ["any", "trash"].iter().chain(ORDER_STATUSES.iter()).copied().collect();
    let mut wanted = Vec::new();
    for (i, s) in raw.split(',').map(str::trim).filter(|s| !s.is_empty()).enumerate() {
        if !allowed.contains(&s) {
            return Err(invalid_param("status", &format!("status[{i}] is not one of {}.", wp_list(&allowed)), "rest_not_in_enum"));
        }
        if s == "any" {
            return Ok(None);
        }
        wanted.push(s.to_string());
    }
    Ok(if wanted.is_empty() { None } else { Some(wanted) })
}

/// What the orders list is asked for.
struct OrderQuery {
    per_page: i64,
    page: i64,
    offset: Option<i64>,
    descending: bool,
    orderby: String,
    statuses: Option<Vec<String>>,
    after: Option<String>,
    before: Option<String>,
    modified_after: Option<String>,
    modified_before: Option<String>,
    customer: Option<u64>,
}

impl OrderQuery {
    fn parse(req: &Request) -> Result<OrderQuery, WpError> {
        bool_param(req, "dates_are_gmt")?;
        Ok(OrderQuery {
            per_page: int_param(req, "per_page", 10, 1, Some(MAX_PER_PAGE))?,
            page: int_param(req, "page", 1, 1, None)?,
            offset: optional_int_param(req, "offset", 0)?,
            descending: enum_param(req, "order", &["asc", "desc"], "desc")? == "desc",
            orderby: enum_param(req, "orderby", &["date", "id", "include", "title", "slug", "modified"], "date")?.to_string(),
            statuses: status_filter(req)?,
            after: date_param(req, "after")?,
            before: date_param(req, "before")?,
            modified_after: date_param(req, "modified_after")?,
            modified_before: date_param(req, "modified_before")?,
            customer: optional_int_param(req, "customer", 0)?.map(|c| c as u64),
        })
    }

    /// Whether an order created and last modified at these times is asked for.
    fn wants(&self, o: &SimOrder, created: &str, modified: &str) -> bool {
        let status = o.extra.get(STATUS).and_then(Value::as_str).unwrap_or("processing");
        let later = |bound: &Option<String>, t: &str| bound.as_deref().is_none_or(|b| t > b);
        let earlier = |bound: &Option<String>, t: &str| bound.as_deref().is_none_or(|b| t < b);
        self.statuses.as_ref().is_none_or(|s| s.iter().any(|w| w == status))
            && later(&self.after, created)
            && earlier(&self.before, created)
            && later(&self.modified_after, modified)
            && earlier(&self.modified_before, modified)
            && self.customer.is_none_or(|c| o.customer.id == c)
    }
}

async fn list_orders(State(sim): Sim, headers: HeaderMap, RawQuery(raw): RawQuery) -> Response {
    sim.remember_site(&headers);
    let req = request(raw);
    with_faults(&sim.faults.clone(), "orders.list", || {
        sim.authorize(&headers, &req, Access::List)?;
        let q = OrderQuery::parse(&req)?;
        let mut rows: Vec<(String, String, SimOrder)> = sim
            .store_orders()
            .into_iter()
            .map(|o| {
                let created = wc_date_of(&o.created_at);
                let modified = o.extra.get(MODIFIED).and_then(Value::as_str).map_or_else(|| created.clone(), str::to_string);
                (created, modified, o)
            })
            .filter(|(created, modified, o)| q.wants(o, created, modified))
            .collect();
        // Dates tie-break on the id, as WordPress orders by "date ID".
        match q.orderby.as_str() {
            "modified" => rows.sort_by(|a, b| (&a.1, a.2.number).cmp(&(&b.1, b.2.number))),
            "date" => rows.sort_by(|a, b| (&a.0, a.2.number).cmp(&(&b.0, b.2.number))),
            _ => rows.sort_by_key(|r| r.2.number),
        }
        if q.descending {
            rows.reverse();
        }
        let total = rows.len();
        let start = q.offset.unwrap_or((q.page - 1) * q.per_page) as usize;
        let items: Vec<Value> = rows.iter().skip(start).take(q.per_page as usize).map(|r| sim.order_json(&r.2)).collect();
        Ok(paged(&sim, "orders", &req, items, total, q.page, q.per_page))
    })
    .await
}

fn invalid_order(status: StatusCode) -> WpError {
    wp_error(status, "woocommerce_rest_shop_order_invalid_id", "Invalid ID.")
}

async fn get_order(State(sim): Sim, Path(id): Path<String>, headers: HeaderMap, RawQuery(raw): RawQuery) -> Response {
    sim.remember_site(&headers);
    let req = request(raw);
    let Some(id) = parse_id(&id) else { return no_route() };
    with_faults(&sim.faults.clone(), "orders.get", || {
        sim.authorize(&headers, &req, Access::View)?;
        let order = sim.find_order(id).ok_or_else(|| invalid_order(StatusCode::NOT_FOUND))?;
        Ok(wp_response(StatusCode::OK, &sim.order_json(&order)))
    })
    .await
}

async fn update_order(State(sim): Sim, Path(id): Path<String>, headers: HeaderMap, RawQuery(raw): RawQuery, body: Bytes) -> Response {
    sim.remember_site(&headers);
    let req = request(raw);
    let Some(id) = parse_id(&id) else { return no_route() };
    with_faults(&sim.faults.clone(), "orders.update", || {
        sim.authorize(&headers, &req, Access::Edit)?;
        let body = parse_body(&body)?;
        let status = match body.get("status") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) if ORDER_STATUSES.contains(&s.as_str()) => Some(s.clone()),
            Some(Value::String(_)) => {
                return Err(invalid_param("status", &format!("status is not one of {}.", wp_list(ORDER_STATUSES)), "rest_not_in_enum"));
            }
            Some(_) => return Err(invalid_param("status", "status is not of type string.", "rest_invalid_type")),
        };
        let meta = match body.get("meta_data") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(entries)) => entries.clone(),
            Some(_) => return Err(invalid_param("meta_data", "meta_data is not of type array.", "rest_invalid_type")),
        };
        // An unknown id is a bad request on update (a not-found on read).
        let order = sim.find_order(id).ok_or_else(|| invalid_order(StatusCode::BAD_REQUEST))?;
        sim.set_meta(&order, &meta);
        if let Some(status) = status {
            let from = order.extra.get(STATUS).and_then(Value::as_str).unwrap_or("processing").to_string();
            sim.set_status(&order, &status);
            sim.erp.effect(
                NAME,
                "order_status",
                Some(order.id),
                &format!("{NAME}:status:{id}:{status}"),
                json!({"from": from, "to": status}),
            );
        }
        let order = sim.find_order(id).ok_or_else(|| invalid_order(StatusCode::BAD_REQUEST))?;
        Ok(wp_response(StatusCode::OK, &sim.order_json(&order)))
    })
    .await
}

async fn list_notes(State(sim): Sim, Path(id): Path<String>, headers: HeaderMap, RawQuery(raw): RawQuery) -> Response {
    sim.remember_site(&headers);
    let req = request(raw);
    let Some(id) = parse_id(&id) else { return no_route() };
    with_faults(&sim.faults.clone(), "orders.notes.list", || {
        sim.authorize(&headers, &req, Access::List)?;
        let kind = enum_param(&req, "type", &["any", "customer", "internal"], "any")?;
        let order = sim
            .find_order(id)
            .ok_or_else(|| wp_error(StatusCode::NOT_FOUND, "woocommerce_rest_shop_order_invalid_id", "Invalid order ID."))?;
        let notes = order.extra.get(NOTES).and_then(Value::as_array).cloned().unwrap_or_default();
        // Newest first, as the comment query sorts them.
        let items: Vec<Value> = notes
            .iter()
            .rev()
            .filter(|n| {
                let customer = n.get("customer_note").and_then(Value::as_bool).unwrap_or(false);
                kind == "any" || (kind == "customer") == customer
            })
            .map(|n| sim.note_json(id, n))
            .collect();
        Ok(wp_response(StatusCode::OK, &Value::Array(items)))
    })
    .await
}

async fn create_note(State(sim): Sim, Path(id): Path<String>, headers: HeaderMap, RawQuery(raw): RawQuery, body: Bytes) -> Response {
    sim.remember_site(&headers);
    let req = request(raw);
    let Some(id) = parse_id(&id) else { return no_route() };
    with_faults(&sim.faults.clone(), "orders.notes.create", || {
        sim.authorize(&headers, &req, Access::Create)?;
        let body = parse_body(&body)?;
        let text = match body.get("note") {
            None | Some(Value::Null) => {
                return Err(WpError {
                    status: StatusCode::BAD_REQUEST,
                    body: json!({"code": "rest_missing_callback_param", "message": "Missing parameter(s): note",
                                 "data": {"status": 400, "params": ["note"]}}),
                    challenge: false,
                });
            }
            Some(Value::String(text)) => text.clone(),
            Some(_) => return Err(invalid_param("note", "note is not of type string.", "rest_invalid_type")),
        };
        let customer_note = bool_field(&body, "customer_note")?;
        let added_by_user = bool_field(&body, "added_by_user")?;
        let order =
            sim.find_order(id).ok_or_else(|| wp_error(StatusCode::NOT_FOUND, "woocommerce_rest_order_invalid_id", "Invalid order ID."))?;
        let note = sim.add_note(&order, &text, customer_note, added_by_user);
        let note = sim.note_json(id, &note);
        let mut r = wp_response(StatusCode::CREATED, &note);
        if let Ok(location) = HeaderValue::from_str(&sim.rest_url(&format!("orders/{id}/notes/{}", note["id"]))) {
            r.headers_mut().insert("location", location);
        }
        Ok(r)
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sandbox::erp::LineRequest;
    use crate::sandbox::platforms::testkit::receiver;
    use crate::sandbox::{Sandbox, SandboxOptions};

    struct Store {
        sandbox: Sandbox,
        base: String,
        key: String,
        secret: String,
        webhook_secret: String,
        client: reqwest::Client,
    }

    impl Store {
        async fn start() -> Store {
            let sandbox =
                Sandbox::start(tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(), SandboxOptions::generated()).await.unwrap();
            crate::sandbox::erp::seed_amusement_catalogue(&sandbox.erp, "2026-12-10", "2027-02-01");
            let conn = sandbox.connection(NAME).unwrap();
            Store {
                base: format!("{}/wp-json/wc/v3", sandbox.base_url(NAME)),
                key: conn.secrets["consumer_key"].clone(),
                secret: conn.secrets["consumer_secret"].clone(),
                webhook_secret: conn.secrets["webhook_secret"].clone(),
                sandbox,
                client: reqwest::Client::new(),
            }
        }

        fn get(&self, path: &str) -> reqwest::RequestBuilder {
            self.client.get(format!("{}{path}", self.base)).basic_auth(&self.key, Some(&self.secret))
        }

        fn put(&self, path: &str, body: Value) -> reqwest::RequestBuilder {
            self.client.put(format!("{}{path}", self.base)).basic_auth(&self.key, Some(&self.secret)).json(&body)
        }

        fn customer(&self, company: &str) -> u64 {
            self.sandbox.erp.customers().iter().find(|c| c.company == company).map(|c| c.id).unwrap()
        }
    }

    fn line(sku: &str, qty: i64) -> LineRequest {
        LineRequest { sku: sku.into(), qty }
    }

    #[test]
    fn signs_like_the_documented_example_and_encodes_like_wordpress() {
        assert_eq!(
            webhook_signature("wc-test-secret", br#"{"id":5012,"status":"processing"}"#),
            "66Mpc4g7YvmJRsQK0jvJPzY+n7MMGbaEIljHGTeKo7g="
        );
        assert_eq!(
            wp_json_bytes(&json!({"href": "http://a/b", "name": "Café"})),
            br#"{"href":"http:\/\/a\/b","name":"Caf\u00e9"}"#.to_vec()
        );
        assert_eq!(parse_request_date("2025-03-01T00:00:00").as_deref(), Some("2025-03-01T00:00:00"));
        assert_eq!(parse_request_date("2025-03-01 02:00:00.5+02:00").as_deref(), Some("2025-03-01T00:00:00"));
        assert_eq!(parse_request_date("yesterday"), None);
        assert_eq!(
            query_pairs("status=processing%2Con-hold&a+b=c"),
            vec![("status".into(), "processing,on-hold".into()), ("a b".into(), "c".into())]
        );
    }

    #[tokio::test]
    async fn keys_stock_lookup_and_stock_write() {
        let store = Store::start().await;
        // No key, a wrong secret, the key in the query string.
        let r = store.client.get(format!("{}/products?sku=CC-CLAW-42", store.base)).send().await.unwrap();
        assert_eq!(r.status(), 401);
        assert_eq!(r.json::<Value>().await.unwrap()["code"], "woocommerce_rest_cannot_view");
        let r = store.client.get(format!("{}/products", store.base)).basic_auth(&store.key, Some("cs_wrong")).send().await.unwrap();
        assert_eq!(r.status(), 401);
        assert!(r.headers().contains_key("www-authenticate"));
        assert_eq!(r.json::<Value>().await.unwrap()["message"], "Consumer secret is invalid.");
        let r = store.client.put(format!("{}/products/1", store.base)).json(&json!({"stock_quantity": 1})).send().await.unwrap();
        assert_eq!(r.json::<Value>().await.unwrap()["code"], "woocommerce_rest_cannot_edit");
        let r = store
            .client
            .get(format!("{}/products?sku=CC-CLAW-42,CC-CLAW-MINI&consumer_key={}&consumer_secret={}", store.base, store.key, store.secret))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let products: Vec<Value> = r.json().await.unwrap();
        assert_eq!(products.len(), 2);
        let claw = products.iter().find(|p| p["sku"] == "CC-CLAW-42").unwrap().clone();
        assert_eq!(
            (claw["stock_quantity"].as_i64(), claw["stock_status"].as_str(), claw["manage_stock"].as_bool()),
            (Some(2), Some("instock"), Some(true))
        );
        let mini = products.iter().find(|p| p["sku"] == "CC-CLAW-MINI").unwrap();
        assert!(mini["tags"].as_array().unwrap().iter().any(|t| t["slug"] == "discontinued"));
        assert_eq!(mini["stock_status"], "outofstock");
        let none: Vec<Value> = store.get("/products?sku=NOPE").send().await.unwrap().json().await.unwrap();
        assert!(none.is_empty());

        // An order holds stock in the single pool; an absolute write sets what is available.
        store.sandbox.create_order(NAME, store.customer("Retro Arcade Bar"), &[line("CC-CLAW-42", 1)]).unwrap();
        let id = claw["id"].as_u64().unwrap();
        let p: Value = store.get(&format!("/products/{id}")).send().await.unwrap().json().await.unwrap();
        assert_eq!(p["stock_quantity"], 1);
        let p: Value = store
            .put(&format!("/products/{id}"), json!({"manage_stock": true, "stock_quantity": 5}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(p["stock_quantity"], 5);
        assert_eq!(store.sandbox.erp.totals("CC-CLAW-42"), (6, 1, 5));
        store.put(&format!("/products/{id}"), json!({"stock_quantity": 5})).send().await.unwrap();
        let writes = store.sandbox.erp.effects().iter().filter(|e| e.kind == "stock_set").count();
        assert_eq!(writes, 1);
        let r = store.put("/products/42", json!({"stock_quantity": 5})).send().await.unwrap();
        assert_eq!(r.status(), 400);
        assert_eq!(r.json::<Value>().await.unwrap()["code"], "woocommerce_rest_product_invalid_id");

        // Batch: one good, one unknown id.
        let r: Value = store
            .client
            .post(format!("{}/products/batch", store.base))
            .basic_auth(&store.key, Some(&store.secret))
            .json(&json!({"update": [{"id": id, "stock_quantity": 2}, {"id": 7, "stock_quantity": 1}]}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(r["update"][0]["stock_quantity"], 2);
        assert_eq!(r["update"][1]["error"]["code"], "woocommerce_rest_product_invalid_id");
    }

    #[tokio::test]
    async fn order_webhook_is_signed_and_matches_the_rest_answer() {
        let store = Store::start().await;
        let (url, got) = receiver().await;
        store.sandbox.set_webhook_target(NAME, &url);
        let (order, status) =
            store.sandbox.place_order(NAME, store.customer("Pinball Wizards Distribution"), &[line("PB-STERN-GODZ-PRO", 2)]).await.unwrap();
        assert_eq!(status, 200);
        store.sandbox.redeliver(order.id).await.unwrap();
        let deliveries = got.lock().unwrap_or_else(|p| p.into_inner()).clone();
        assert_eq!(deliveries.len(), 2);
        let (headers, body) = &deliveries[0];
        let header = |h: &HeaderMap, name: &str| h.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
        assert_eq!(header(headers, "x-wc-webhook-signature"), webhook_signature(&store.webhook_secret, body));
        assert_eq!(header(headers, "x-wc-webhook-topic"), "order.created");
        assert_eq!(header(headers, "x-wc-webhook-resource"), "order");
        assert_eq!(header(headers, "x-wc-webhook-event"), "created");
        assert_eq!(header(headers, "x-wc-webhook-source"), format!("{}/", store.sandbox.base_url(NAME)));
        assert!(header(headers, "user-agent").starts_with("WooCommerce/"));
        assert_eq!(header(headers, "x-wc-webhook-id"), header(&deliveries[1].0, "x-wc-webhook-id"));
        assert_ne!(header(headers, "x-wc-webhook-delivery-id"), header(&deliveries[1].0, "x-wc-webhook-delivery-id"));
        assert!(String::from_utf8_lossy(body).contains(r#"http:\/\/"#));

        let pushed: Value = serde_json::from_slice(body).unwrap();
        let id = order.number;
        assert_eq!(pushed["id"], id);
        assert_eq!(pushed["number"], id.to_string());
        assert_eq!(pushed["status"], "processing");
        assert_eq!(pushed["billing"]["company"], "Pinball Wizards Distribution");
        assert_eq!(pushed["line_items"][0]["sku"], "PB-STERN-GODZ-PRO");
        assert_eq!(pushed["line_items"][0]["quantity"], 2);
        assert_eq!(pushed["meta_data"][0]["key"], "customer_group");
        assert_eq!(pushed["meta_data"][0]["value"], "distributor");
        assert!(!pushed["date_modified_gmt"].as_str().unwrap().ends_with('Z'));
        let fetched = store.get(&format!("/orders/{id}")).send().await.unwrap().bytes().await.unwrap();
        assert_eq!(fetched.as_ref(), body.as_slice());

        // The customer cancels: order.updated with the cancelled status.
        store.sandbox.cancel_order(order.id).await.unwrap();
        let deliveries = got.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let (headers, body) = deliveries.last().unwrap();
        assert_eq!(header(headers, "x-wc-webhook-topic"), "order.updated");
        assert_eq!(serde_json::from_slice::<Value>(body).unwrap()["status"], "cancelled");
        assert_eq!(store.sandbox.erp.totals("PB-STERN-GODZ-PRO"), (3, 0, 3));
        let r = store.get("/orders/999999").send().await.unwrap();
        assert_eq!(r.status(), 404);
        assert_eq!(
            r.json::<Value>().await.unwrap(),
            json!({"code": "woocommerce_rest_shop_order_invalid_id", "message": "Invalid ID.", "data": {"status": 404}})
        );
    }

    #[tokio::test]
    async fn status_writes_move_stock_once_and_notes_are_kept() {
        let store = Store::start().await;
        let order = store.sandbox.create_order(NAME, store.customer("Retro Arcade Bar"), &[line("AC-SF2-CAB-2P", 1)]).unwrap();
        let id = order.number;
        assert_eq!(store.sandbox.erp.totals("AC-SF2-CAB-2P"), (2, 1, 1));
        let before: Value = store.get(&format!("/orders/{id}")).send().await.unwrap().json().await.unwrap();

        let body = json!({"status": "cancelled", "meta_data": [{"key": "sync_decision", "value": "reject"}]});
        let after: Value = store.put(&format!("/orders/{id}"), body.clone()).send().await.unwrap().json().await.unwrap();
        assert_eq!(after["status"], "cancelled");
        assert!(after["meta_data"].as_array().unwrap().iter().any(|m| m["key"] == "sync_decision" && m["value"] == "reject"));
        assert!(after["date_modified_gmt"].as_str() >= before["date_modified_gmt"].as_str());
        store.put(&format!("/orders/{id}"), body).send().await.unwrap();
        assert_eq!(store.sandbox.erp.totals("AC-SF2-CAB-2P"), (2, 0, 2));
        let status_effects: Vec<_> = store.sandbox.erp.effects().into_iter().filter(|e| e.kind == "order_status").collect();
        assert_eq!(status_effects.len(), 1);
        assert_eq!(store.sandbox.erp.attempts()[&format!("woocommerce:status:{id}:cancelled")], 2);

        // Back to processing takes the stock again.
        store.put(&format!("/orders/{id}"), json!({"status": "processing"})).send().await.unwrap();
        assert_eq!(store.sandbox.erp.totals("AC-SF2-CAB-2P"), (2, 1, 1));

        let r = store.put(&format!("/orders/{id}"), json!({"status": "shipped"})).send().await.unwrap();
        assert_eq!(r.status(), 400);
        let error: Value = r.json().await.unwrap();
        assert_eq!(error["code"], "rest_invalid_param");
        assert_eq!(error["data"]["details"]["status"]["code"], "rest_not_in_enum");
        let r = store.put("/orders/999999", json!({"status": "on-hold"})).send().await.unwrap();
        assert_eq!(r.status(), 400);
        assert_eq!(r.json::<Value>().await.unwrap()["code"], "woocommerce_rest_shop_order_invalid_id");

        let note = json!({"note": "Waitlisted: AC-SF2-CAB-2P short by 1", "customer_note": false});
        let url = format!("{}/orders/{id}/notes", store.base);
        let first = store.client.post(&url).basic_auth(&store.key, Some(&store.secret)).json(&note).send().await.unwrap();
        assert_eq!(first.status(), 201);
        let first: Value = first.json().await.unwrap();
        assert_eq!(first["author"], "system");
        assert_eq!(first["customer_note"], false);
        let again: Value =
            store.client.post(&url).basic_auth(&store.key, Some(&store.secret)).json(&note).send().await.unwrap().json().await.unwrap();
        assert_eq!(again["id"], first["id"]);
        let notes: Vec<Value> = store.get(&format!("/orders/{id}/notes")).send().await.unwrap().json().await.unwrap();
        assert_eq!(notes[0]["note"], "Waitlisted: AC-SF2-CAB-2P short by 1");
        assert!(notes.iter().any(|n| n["note"] == "Order status changed from Processing to Cancelled."));
        let missing = store.client.post(&url).basic_auth(&store.key, Some(&store.secret)).json(&json!({})).send().await.unwrap();
        assert_eq!(missing.status(), 400);
        assert_eq!(missing.json::<Value>().await.unwrap()["code"], "rest_missing_callback_param");
    }

    #[tokio::test]
    async fn orders_page_by_number_with_totals_and_links() {
        let store = Store::start().await;
        let who = store.customer("FunZone Family Entertainment");
        let ids: Vec<u64> =
            (0..3).map(|_| store.sandbox.create_order(NAME, who, &[line("SP-FLIPPER-COIL-2550", 1)]).unwrap().number).collect();
        store.put(&format!("/orders/{}", ids[1]), json!({"status": "on-hold"})).send().await.unwrap();

        let r = store.get("/orders?status=processing,on-hold&orderby=id&order=asc&per_page=2&page=1").send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["x-wp-total"], "3");
        assert_eq!(r.headers()["x-wp-totalpages"], "2");
        let links: Vec<String> = r.headers().get_all("link").iter().map(|v| v.to_str().unwrap().to_string()).collect();
        assert_eq!(links.len(), 1);
        assert!(links[0].ends_with("page=2>; rel=\"next\""), "{links:?}");
        let page: Vec<Value> = r.json().await.unwrap();
        assert_eq!(page.iter().map(|o| o["id"].as_u64().unwrap()).collect::<Vec<_>>(), ids[..2].to_vec());
        let next = links[0].trim_start_matches('<').split('>').next().unwrap().to_string();
        let r = store.client.get(&next).basic_auth(&store.key, Some(&store.secret)).send().await.unwrap();
        assert!(r.headers().get_all("link").iter().any(|v| v.to_str().unwrap().ends_with("rel=\"prev\"")));
        let page: Vec<Value> = r.json().await.unwrap();
        assert_eq!(page.len(), 1);
        assert_eq!(page[0]["id"], ids[2]);

        let held: Vec<Value> = store.get("/orders?status=on-hold").send().await.unwrap().json().await.unwrap();
        assert_eq!(held.len(), 1);
        let later: Vec<Value> =
            store.get("/orders?modified_after=2999-01-01T00:00:00&dates_are_gmt=true").send().await.unwrap().json().await.unwrap();
        assert!(later.is_empty());
        let r = store.get("/orders?per_page=500").send().await.unwrap();
        assert_eq!(r.status(), 400);
        assert_eq!(
            r.json::<Value>().await.unwrap()["data"]["params"]["per_page"],
            "per_page must be between 1 (inclusive) and 100 (inclusive)"
        );
        let r = store.get("/orders?modified_after=yesterday").send().await.unwrap();
        assert_eq!(r.json::<Value>().await.unwrap()["data"]["params"]["modified_after"], "Invalid date.");
        let r = store.get("/nothing-here").send().await.unwrap();
        assert_eq!(r.status(), 404);
        assert_eq!(r.json::<Value>().await.unwrap()["code"], "rest_no_route");
    }

    #[tokio::test]
    async fn injected_failures_speak_wordpress() {
        let store = Store::start().await;
        store.sandbox.faults.set(vec![
            crate::sandbox::faults::FaultRule {
                platform: NAME.into(),
                operation: Some("orders.list".into()),
                kind: FaultKind::Throttle { retry_after_s: 1.5 },
                rate: 1.0,
                when: When::Before,
                limit: Some(1),
            },
            crate::sandbox::faults::FaultRule {
                platform: NAME.into(),
                operation: Some("products.get".into()),
                kind: FaultKind::Status { status: 503 },
                rate: 1.0,
                when: When::Before,
                limit: Some(1),
            },
        ]);
        let r = store.get("/orders").send().await.unwrap();
        assert_eq!(r.status(), 429);
        assert_eq!(r.headers()["retry-after"], "2");
        assert_eq!(r.json::<Value>().await.unwrap()["data"]["status"], 429);
        let r = store.get("/products/1").send().await.unwrap();
        assert_eq!(r.status(), 503);
        let body: Value = r.json().await.unwrap();
        assert_eq!((body["code"].as_str(), body["data"]["status"].as_u64()), (Some("internal_server_error"), Some(503)));
        assert_eq!(store.get("/orders").send().await.unwrap().status(), 200);
    }
}
