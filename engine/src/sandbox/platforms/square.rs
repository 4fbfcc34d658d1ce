//! Square, simulated: the v2 Catalog, Locations, Inventory and Orders APIs
//! and the signed webhooks `order.created`, `order.updated` and
//! `inventory.count.updated`, in Square's own shapes.
//!
//! What it imitates:
//! - `Authorization: Bearer <access token>` on every `/v2/…` call (401
//!   `AUTHENTICATION_ERROR`/`UNAUTHORIZED` otherwise) and an optional
//!   `Square-Version: YYYY-MM-DD` header (400 `INVALID_SQUARE_VERSION_FORMAT`
//!   when it is not a date);
//! - errors as `{"errors": [{"category", "code", "detail", "field"?}]}`;
//!   throttling as 429 `RATE_LIMIT_ERROR`/`RATE_LIMITED` without a
//!   `Retry-After` header (Square documents none);
//! - empty list fields left out of answers, as Square does (`{}` when a search
//!   finds nothing);
//! - Square-looking ids derived from the ERP ids: item variations and items
//!   (24 uppercase characters), locations (`L` + 12), customers (26), orders
//!   (27 mixed-case characters), line and fulfillment uids (22);
//! - optimistic locking on `PUT /v2/orders/{order_id}` through `order.version`
//!   (`VERSION_MISMATCH`), sparse updates (fulfillments merged by uid,
//!   metadata by key, `fields_to_clear`), and `idempotency_key`s: a repeated key
//!   answers the first answer again without applying anything (Square's docs:
//!   an update that reuses a key returns 200 without the update);
//! - `idempotency_key` required on `POST /v2/inventory/changes/batch-create`;
//!   the same key with another body is `IDEMPOTENCY_KEY_REUSED`;
//! - webhooks signed `base64(HMAC-SHA256(signature key, notification URL + raw
//!   body))` in `x-square-hmacsha256-signature`, with `square-environment`,
//!   `square-initial-delivery-timestamp` and, on a repeated delivery,
//!   `square-retry-number`. The `event_id` of an event is kept on redelivery.
//!
//! Choices where Square's documentation left a gap:
//! - The IN_STOCK count of a variation at a location is the ERP's on-hand
//!   figure. Square lowers stock only when an order is completed (shipped), so
//!   open orders are not subtracted; the units they hold stay committed in the
//!   ERP. `calculated_at` is the first time the simulation saw the current
//!   figure.
//! - An order leaves `OPEN` for good: `CANCELED` (through the API, or when the
//!   customer cancels) or `COMPLETED` (when it ships, or when the API completes
//!   it, which takes its units out of stock as Square does). A fulfillment moved
//!   to `CANCELED` through the API also gives the order's units back (once).
//! - `data.type` of `inventory.count.updated` is `inventory_counts`, as the
//!   current API specification says (an older example in the reference shows
//!   `inventory`).
//! - Quantities must be whole numbers: the simulated variations have no
//!   measurement unit.
//! - Stock changed through the API sends no webhook here; only the sandbox's
//!   ship and restock actions announce stock.
//!
//! Fault operations: `locations.list`, `catalog.retrieve`,
//! `catalog.batch_retrieve`, `catalog.search`, `inventory.batch_retrieve_counts`,
//! `inventory.retrieve_count`, `inventory.batch_change`, `orders.retrieve`,
//! `orders.batch_retrieve`, `orders.search`, `orders.update`.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use serde_json::{Map, Value, json};
use time::OffsetDateTime;

use crate::config::raw::SignatureAlgorithm;
use crate::connector::webhook::hmac_bytes;
use crate::sandbox::erp::{Erp, Level, Location, OrderState, Product, SimOrder};
use crate::sandbox::faults::{self, FaultKind, Faults, When};
use crate::sandbox::platforms::{Delivery, OrderEvent, SimConnection, SimContext, SimPlatform};

const NAME: &str = "square";
const CURRENCY: &str = "USD";
const ORDER_SOURCE: &str = "Arcade Supply Online";
const MAX_INVENTORY_LIMIT: u64 = 1000;
const MAX_ORDER_LIMIT: u64 = 1000;
const DEFAULT_ORDER_LIMIT: u64 = 500;
const MAX_SEARCH_LOCATIONS: usize = 10;
const MAX_METADATA_ENTRIES: usize = 10;

/// Credentials the simulated seller account accepts and signs with.
#[derive(Debug, Clone)]
pub struct SquareCredentials {
    pub access_token: String,
    pub signature_key: String,
}

pub struct SquareSim {
    pub erp: Arc<Erp>,
    faults: Arc<Faults>,
    pub creds: SquareCredentials,
    merchant_id: String,
    /// The version every catalog object carries (Square versions are epoch-like numbers).
    catalog_version: i64,
    /// When the account was opened: `created_at` of locations and catalog objects.
    opened_at: String,
    /// Last IN_STOCK figure seen per (product, location), and since when.
    counts_seen: Mutex<HashMap<(u64, u64), (i64, String)>>,
    /// Answers already given to idempotent writes: key → (request, answer).
    idempotent: Mutex<HashMap<String, (Value, Value)>>,
    /// Deliveries per (event id, URL): how often sent, and when first.
    deliveries: Mutex<HashMap<(String, String), (u32, String)>>,
}

// ---------------------------------------------------------------- ids

const BASE32: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
const MIX: u64 = 0x9E37_79B9_7F4A_7C15;
const MIX_INVERSE: u64 = multiplicative_inverse(MIX);
const SALT_VARIATION: u64 = 0x5A17_C0DE_0000_0001;
const SALT_ITEM: u64 = 0x5A17_C0DE_0000_0002;
const SALT_LOCATION: u64 = 0x5A17_C0DE_0000_0003;
const SALT_CUSTOMER: u64 = 0x5A17_C0DE_0000_0004;
const SALT_ORDER: u64 = 0x5A17_C0DE_0000_0005;
const SALT_LINE: u64 = 0x5A17_C0DE_0000_0006;
const SALT_FULFILLMENT: u64 = 0x5A17_C0DE_0000_0007;

const fn multiplicative_inverse(odd: u64) -> u64 {
    let mut x = odd;
    let mut i = 0;
    while i < 6 {
        x = x.wrapping_mul(2u64.wrapping_sub(odd.wrapping_mul(x)));
        i += 1;
    }
    x
}

/// A reversible scramble, so consecutive ERP ids give unrelated-looking ids.
fn scramble(id: u64, salt: u64) -> u64 {
    (id ^ salt).wrapping_mul(MIX).rotate_left(23)
}

fn unscramble(value: u64, salt: u64) -> u64 {
    value.rotate_right(23).wrapping_mul(MIX_INVERSE) ^ salt
}

/// Filler characters that depend on `seed` only.
fn filler(seed: u64, alphabet: &[u8], len: usize) -> String {
    let mut state = seed;
    (0..len)
        .map(|_| {
            state = state.wrapping_add(MIX);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            alphabet[(z % alphabet.len() as u64) as usize] as char
        })
        .collect()
}

fn base32_13(value: u64) -> String {
    (0..13).map(|i| BASE32[((value >> (60 - 5 * i)) & 31) as usize] as char).collect()
}

fn decode_base32_13(s: &str) -> Option<u64> {
    let mut value: u128 = 0;
    for c in s.bytes() {
        value = (value << 5) | BASE32.iter().position(|b| *b == c)? as u128;
    }
    u64::try_from(value).ok()
}

fn base62_11(value: u64) -> String {
    let mut digits = [0u8; 11];
    let mut rest = value;
    for d in digits.iter_mut().rev() {
        *d = BASE62[(rest % 62) as usize];
        rest /= 62;
    }
    String::from_utf8_lossy(&digits).into_owned()
}

fn decode_base62_11(s: &str) -> Option<u64> {
    let mut value: u128 = 0;
    for c in s.bytes() {
        value = value * 62 + BASE62.iter().position(|b| *b == c)? as u128;
    }
    u64::try_from(value).ok()
}

/// A 24-character uppercase catalog id that encodes `id`.
fn catalog_id(id: u64, salt: u64) -> String {
    let scrambled = scramble(id, salt);
    // The filler depends on the kind too, so an item id never reads as a variation id.
    format!("{}{}", base32_13(scrambled), filler(scrambled.wrapping_add(salt), BASE32, 11))
}

fn parse_catalog_id(s: &str, salt: u64) -> Option<u64> {
    let id = unscramble(decode_base32_13(s.get(..13)?)?, salt);
    (catalog_id(id, salt) == s).then_some(id)
}

pub fn variation_id(product_id: u64) -> String {
    catalog_id(product_id, SALT_VARIATION)
}

pub fn item_id(product_id: u64) -> String {
    catalog_id(product_id, SALT_ITEM)
}

pub fn location_id(location: u64) -> String {
    format!("L{}", &catalog_id(location, SALT_LOCATION)[1..13])
}

pub fn customer_id(customer: u64) -> String {
    let scrambled = scramble(customer, SALT_CUSTOMER);
    format!("{}{}", base32_13(scrambled), filler(scrambled, BASE32, 13))
}

/// The Square order id of an ERP order: 27 mixed-case characters.
pub fn order_id(order: u64) -> String {
    let scrambled = scramble(order, SALT_ORDER);
    format!("{}{}ZY", base62_11(scrambled), filler(scrambled, BASE62, 14))
}

fn parse_order_id(s: &str) -> Option<u64> {
    let id = unscramble(decode_base62_11(s.get(..11)?)?, SALT_ORDER);
    (order_id(id) == s).then_some(id)
}

fn uid(id: u64, salt: u64) -> String {
    let scrambled = scramble(id, salt);
    format!("{}{}", base62_11(scrambled), filler(scrambled, BASE62, 11))
}

// ---------------------------------------------------------------- time and money

fn timestamp(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    t.format(time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"))
        .unwrap_or_else(|_| crate::clock::format_rfc3339(t))
}

fn now() -> String {
    timestamp(OffsetDateTime::now_utc())
}

/// An RFC 3339 time from the ERP in Square's form (UTC, milliseconds).
fn normalized(t: &str) -> String {
    crate::clock::parse_instant(t).map_or_else(|| t.to_string(), timestamp)
}

/// "8999.00" → 899900 (cents).
fn cents(price: &str) -> i64 {
    let (whole, fraction) = price.split_once('.').unwrap_or((price, ""));
    let fraction: String = fraction.chars().chain("00".chars()).take(2).collect();
    whole.parse::<i64>().unwrap_or(0) * 100 + fraction.parse::<i64>().unwrap_or(0)
}

fn money(amount: i64) -> Value {
    json!({"amount": amount, "currency": CURRENCY})
}

/// A decimal quantity string that must hold a whole number ("3", "3.00000").
fn whole_quantity(q: &Value) -> Option<i64> {
    let s = q.as_str()?.trim();
    let (whole, fraction) = s.split_once('.').unwrap_or((s, ""));
    if fraction.len() > 5 || !fraction.chars().all(|c| c == '0') {
        return None;
    }
    whole.parse().ok()
}

// ---------------------------------------------------------------- errors

/// An error answer: its status and Square's `errors` body.
struct Failure {
    status: StatusCode,
    body: Value,
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        (self.status, axum::Json(self.body)).into_response()
    }
}

fn error(status: StatusCode, category: &str, code: &str, detail: &str, field: Option<&str>) -> Failure {
    let mut e = json!({"category": category, "code": code, "detail": detail});
    if let Some(f) = field {
        e["field"] = json!(f);
    }
    Failure { status, body: json!({"errors": [e]}) }
}

fn invalid(code: &str, detail: &str, field: Option<&str>) -> Failure {
    error(StatusCode::BAD_REQUEST, "INVALID_REQUEST_ERROR", code, detail, field)
}

fn not_found(detail: &str, field: Option<&str>) -> Failure {
    error(StatusCode::NOT_FOUND, "INVALID_REQUEST_ERROR", "NOT_FOUND", detail, field)
}

fn unauthorized() -> Failure {
    error(StatusCode::UNAUTHORIZED, "AUTHENTICATION_ERROR", "UNAUTHORIZED", "This request could not be authorized.", None)
}

fn rate_limited() -> Failure {
    error(StatusCode::TOO_MANY_REQUESTS, "RATE_LIMIT_ERROR", "RATE_LIMITED", "Rate limit exceeded. Try again later.", None)
}

/// Square's body for a failed request with this status.
fn server_error_body(kind: &FaultKind) -> Value {
    let status = match kind {
        FaultKind::Status { status } => *status,
        _ => 503,
    };
    let (code, detail) = match status {
        503 => ("SERVICE_UNAVAILABLE", "The service is temporarily unavailable. Try again later."),
        504 => ("GATEWAY_TIMEOUT", "The request timed out."),
        _ => ("INTERNAL_SERVER_ERROR", "An internal error has occurred, and the API was unable to service your request."),
    };
    json!({"errors": [{"category": "API_ERROR", "code": code, "detail": detail}]})
}

/// Put `items` under `key` unless there are none (Square leaves empty fields out).
fn put_list(body: &mut Map<String, Value>, key: &str, items: Vec<Value>) {
    if !items.is_empty() {
        body.insert(key.to_string(), Value::Array(items));
    }
}

/// Page cursors are opaque to clients: the offset of the next page.
fn encode_cursor(offset: usize) -> String {
    base64::engine::general_purpose::STANDARD.encode(format!("offset:{offset}"))
}

fn decode_cursor(cursor: Option<&Value>) -> Result<usize, Failure> {
    let Some(c) = cursor.and_then(Value::as_str).filter(|c| !c.is_empty()) else {
        return Ok(0);
    };
    base64::engine::general_purpose::STANDARD
        .decode(c)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|s| s.strip_prefix("offset:").and_then(|n| n.parse().ok()))
        .ok_or_else(|| invalid("INVALID_CURSOR", "The pagination cursor is not valid.", Some("cursor")))
}

fn parse_body(body: &[u8]) -> Result<Value, Failure> {
    let value = serde_json::from_slice::<Value>(body).map_err(|_| invalid("BAD_REQUEST", "Invalid JSON in request body.", None))?;
    if value.is_object() { Ok(value) } else { Err(invalid("BAD_REQUEST", "The request body must be a JSON object.", None)) }
}

fn strings(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array).map(|a| a.iter().filter_map(|s| s.as_str().map(str::to_string)).collect()).unwrap_or_default()
}

fn limit(v: Option<&Value>, default: u64, max: u64) -> Result<usize, Failure> {
    match v {
        None | Some(Value::Null) => Ok(default as usize),
        Some(v) => match v.as_u64() {
            Some(0) => Err(invalid("VALUE_TOO_LOW", "`limit` must be at least 1.", Some("limit"))),
            Some(n) if n > max => Err(invalid("VALUE_TOO_HIGH", &format!("`limit` must be at most {max}."), Some("limit"))),
            Some(n) => Ok(n as usize),
            None => Err(invalid("EXPECTED_INTEGER", "`limit` must be an integer.", Some("limit"))),
        },
    }
}

// ---------------------------------------------------------------- the simulation

impl SquareSim {
    pub fn new(ctx: &SimContext) -> Arc<Self> {
        let merchant_seed = u64::from_str_radix(&crate::sandbox::random_hex(8), 16).unwrap_or(7);
        Arc::new(SquareSim {
            erp: ctx.erp.clone(),
            faults: ctx.faults.clone(),
            creds: SquareCredentials {
                access_token: format!("EAAA{}", crate::sandbox::random_hex(30)),
                signature_key: crate::sandbox::random_hex(11),
            },
            merchant_id: format!("ML{}", &base32_13(merchant_seed)[2..13]),
            catalog_version: crate::clock::unix_ms(OffsetDateTime::now_utc()) as i64,
            opened_at: now(),
            counts_seen: Mutex::default(),
            idempotent: Mutex::default(),
            deliveries: Mutex::default(),
        })
    }

    /// Refuse a request without the right token or with a malformed `Square-Version`.
    fn refuse(&self, headers: &HeaderMap) -> Result<(), Failure> {
        let expected = format!("Bearer {}", self.creds.access_token);
        if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some(expected.as_str()) {
            return Err(unauthorized());
        }
        if let Some(version) = headers.get("square-version") {
            let v = version.to_str().unwrap_or("");
            let well_formed = v.len() == 10 && v.char_indices().all(|(i, c)| if i == 4 || i == 7 { c == '-' } else { c.is_ascii_digit() });
            if !well_formed {
                return Err(invalid(
                    "INVALID_SQUARE_VERSION_FORMAT",
                    "The Square-Version header must be a date in the form YYYY-MM-DD.",
                    None,
                ));
            }
        }
        Ok(())
    }

    /// Answer a request, with whatever fault the plan injects for `operation`.
    async fn guarded(&self, operation: &str, answer: impl FnOnce() -> Result<Value, Failure>) -> Response {
        let fault = self.faults.pick(NAME, operation);
        if let Some((kind, When::Before)) = &fault {
            if matches!(kind, FaultKind::Throttle { .. }) {
                return rate_limited().into_response();
            }
            if let Some(r) = faults::before(kind, &server_error_body(kind)).await {
                return r;
            }
        }
        let real = match answer() {
            Ok(body) => (StatusCode::OK, axum::Json(body)).into_response(),
            Err(failure) => failure.into_response(),
        };
        match &fault {
            Some((kind, When::After)) => faults::after(kind, real, &server_error_body(kind)).await,
            _ => real,
        }
    }

    fn location_json(&self, loc: &Location) -> Value {
        json!({"id": location_id(loc.id), "name": loc.name, "merchant_id": self.merchant_id, "status": "ACTIVE", "type": "PHYSICAL",
               "country": "US", "currency": CURRENCY, "language_code": "en-US", "timezone": "America/Los_Angeles",
               "business_name": "Arcade Supply", "created_at": self.opened_at,
               "capabilities": ["CREDIT_CARD_PROCESSING", "AUTOMATIC_TRANSFERS"]})
    }

    fn location_by_square_id(&self, id: &str) -> Option<Location> {
        self.erp.locations().into_iter().find(|l| location_id(l.id) == id)
    }

    fn variation_json(&self, p: &Product) -> Value {
        json!({
            "type": "ITEM_VARIATION", "id": variation_id(p.id), "updated_at": self.opened_at, "created_at": self.opened_at,
            "version": self.catalog_version, "is_deleted": false, "present_at_all_locations": true,
            "item_variation_data": {
                "item_id": item_id(p.id), "name": "Regular", "sku": p.sku, "ordinal": 1, "pricing_type": "FIXED_PRICING",
                "price_money": money(cents(&p.price)), "track_inventory": true, "sellable": !p.discontinued, "stockable": true,
            }
        })
    }

    fn item_json(&self, p: &Product) -> Value {
        json!({
            "type": "ITEM", "id": item_id(p.id), "updated_at": self.opened_at, "created_at": self.opened_at,
            "version": self.catalog_version, "is_deleted": false, "present_at_all_locations": true,
            "item_data": {"name": p.title, "is_taxable": true, "product_type": "REGULAR", "variations": [self.variation_json(p)],
                          "is_archived": p.discontinued},
        })
    }

    /// The catalog object with this id (an item variation or its item).
    fn catalog_object(&self, id: &str) -> Option<Value> {
        if let Some(p) = parse_catalog_id(id, SALT_VARIATION).and_then(|pid| self.erp.product_by_id(pid)) {
            return Some(self.variation_json(&p));
        }
        parse_catalog_id(id, SALT_ITEM).and_then(|pid| self.erp.product_by_id(pid)).map(|p| self.item_json(&p))
    }

    /// The IN_STOCK count row of a product at a location.
    fn count_json(&self, p: &Product, loc: &Location, level: &Level) -> Value {
        let calculated_at = {
            let mut seen = self.counts_seen.lock().unwrap_or_else(|e| e.into_inner());
            let entry = seen.entry((p.id, loc.id)).or_insert_with(|| (level.on_hand, now()));
            if entry.0 != level.on_hand {
                *entry = (level.on_hand, now());
            }
            entry.1.clone()
        };
        json!({"catalog_object_id": variation_id(p.id), "catalog_object_type": "ITEM_VARIATION", "state": "IN_STOCK",
               "location_id": location_id(loc.id), "quantity": level.on_hand.to_string(), "calculated_at": calculated_at})
    }

    fn counts_of(&self, p: &Product, locations: Option<&[String]>) -> Vec<Value> {
        self.erp
            .levels(&p.sku)
            .into_iter()
            .filter(|(loc, _)| locations.is_none_or(|ids| ids.contains(&location_id(loc.id))))
            .map(|(loc, level)| self.count_json(p, &loc, &level))
            .collect()
    }

    /// The order with its Square state brought up to date with what happened
    /// outside the API (the customer cancelled, the order shipped).
    fn current(&self, id: u64) -> Option<SimOrder> {
        let now = now();
        self.erp
            .update_order(id, |o| {
                if o.platform != NAME {
                    return None;
                }
                let terminal = o.extra.get("square_state").and_then(Value::as_str).map(str::to_string);
                if o.extra.contains_key("cancelled_at") && !o.extra.contains_key("square_saw_cancel") {
                    o.extra.insert("square_saw_cancel".into(), json!(true));
                    if terminal.is_none() {
                        let at = o.extra.get("cancelled_at").and_then(Value::as_str).map_or_else(|| now.clone(), normalized);
                        o.extra.insert("square_state".into(), json!("CANCELED"));
                        o.extra.insert("square_released".into(), json!(true));
                        bump_version(o, &at);
                        o.extra.insert("square_closed_at".into(), json!(at));
                    }
                }
                if o.extra.contains_key("fulfilled") && !o.extra.contains_key("square_saw_fulfilled") {
                    o.extra.insert("square_saw_fulfilled".into(), json!(true));
                    if !o.extra.contains_key("square_state") {
                        o.extra.insert("square_state".into(), json!("COMPLETED"));
                        bump_version(o, &now);
                        o.extra.insert("square_closed_at".into(), json!(now));
                    }
                }
                Some(o.clone())
            })
            .flatten()
    }

    fn order_by_square_id(&self, id: &str) -> Option<SimOrder> {
        parse_order_id(id).and_then(|erp_id| self.current(erp_id))
    }

    pub fn order_json(&self, o: &SimOrder) -> Value {
        let state = order_state(o);
        let fulfillment_state = fulfillment_state(o);
        let mut total = 0;
        let line_items: Vec<Value> = o
            .lines
            .iter()
            .map(|l| {
                let product = self.erp.product_by_sku(&l.sku);
                let price = product.as_ref().map_or(0, |p| cents(&p.price));
                total += price * l.qty;
                let mut line = json!({
                    "uid": uid(l.id, SALT_LINE), "name": product.as_ref().map_or_else(|| l.sku.clone(), |p| p.title.clone()),
                    "quantity": l.qty.to_string(), "variation_name": "Regular", "item_type": "ITEM",
                    "base_price_money": money(price), "variation_total_price_money": money(price * l.qty),
                    "gross_sales_money": money(price * l.qty), "total_tax_money": money(0), "total_discount_money": money(0),
                    "total_money": money(price * l.qty),
                });
                if let Some(p) = &product {
                    line["catalog_object_id"] = json!(variation_id(p.id));
                    line["catalog_version"] = json!(self.catalog_version);
                }
                line
            })
            .collect();
        let c = &o.customer;
        let display_name = if c.company.is_empty() { format!("{} {}", c.first_name, c.last_name) } else { c.company.clone() };
        let fulfillment_uid = uid(o.fulfillment_orders.first().copied().unwrap_or(o.id), SALT_FULFILLMENT);
        let created_at = normalized(&o.created_at);
        let mut order = json!({
            "id": order_id(o.id), "location_id": location_id(o.location), "reference_id": format!("ARC-{}", o.number),
            "source": {"name": ORDER_SOURCE}, "customer_id": customer_id(c.id), "line_items": line_items,
            "fulfillments": [{"uid": fulfillment_uid, "type": "SHIPMENT", "state": fulfillment_state,
                "shipment_details": {"recipient": {"display_name": display_name, "email_address": c.email}}}],
            "created_at": created_at,
            "updated_at": o.extra.get("square_updated_at").cloned().unwrap_or_else(|| json!(created_at)),
            "state": state, "version": version(o),
            "total_money": money(total), "total_tax_money": money(0), "total_discount_money": money(0),
            "total_tip_money": money(0), "total_service_charge_money": money(0),
            "net_amount_due_money": money(0),
        });
        if let Some(closed) = o.extra.get("square_closed_at") {
            order["closed_at"] = closed.clone();
        }
        if let Some(metadata) = o.extra.get("square_metadata").filter(|m| m.as_object().is_some_and(|m| !m.is_empty())) {
            order["metadata"] = metadata.clone();
        }
        order
    }

    fn orders_of_platform(&self) -> Vec<SimOrder> {
        self.erp.orders().into_iter().filter(|o| o.platform == NAME).filter_map(|o| self.current(o.id)).collect()
    }

    /// The event id of an order event, kept in the order so redeliveries repeat it.
    fn event_id(&self, order: &SimOrder, event: OrderEvent) -> String {
        let slot = match event {
            OrderEvent::Created => {
                if let Some(id) = order.extra.get("webhook_id").and_then(Value::as_str).filter(|s| !s.is_empty()) {
                    return id.to_string();
                }
                "created"
            }
            OrderEvent::Cancelled => "cancelled",
            OrderEvent::Fulfilled => "fulfilled",
        };
        self.erp
            .update_order(order.id, |o| {
                let ids = o.extra.entry("square_event_ids".to_string()).or_insert_with(|| json!({}));
                if let Some(existing) = ids.get(slot).and_then(Value::as_str) {
                    return existing.to_string();
                }
                let id = crate::sandbox::uuid_like();
                if let Some(map) = ids.as_object_mut() {
                    map.insert(slot.to_string(), json!(id));
                }
                id
            })
            .unwrap_or_else(crate::sandbox::uuid_like)
    }

    /// Sign a body for `url` with Square's delivery headers.
    pub fn signed(&self, event_id: &str, body: Vec<u8>, url: &str) -> Delivery {
        let mut signed = url.as_bytes().to_vec();
        signed.extend_from_slice(&body);
        let signature = base64::engine::general_purpose::STANDARD.encode(hmac_bytes(
            SignatureAlgorithm::HmacSha256,
            self.creds.signature_key.as_bytes(),
            &signed,
        ));
        let (sent_before, first_at) = {
            let mut deliveries = self.deliveries.lock().unwrap_or_else(|e| e.into_inner());
            let entry = deliveries.entry((event_id.to_string(), url.to_string())).or_insert_with(|| (0, now()));
            entry.0 += 1;
            (entry.0 - 1, entry.1.clone())
        };
        let mut headers = vec![
            ("Content-Type".to_string(), "application/json".to_string()),
            ("x-square-hmacsha256-signature".to_string(), signature),
            ("square-environment".to_string(), "Production".to_string()),
            ("square-initial-delivery-timestamp".to_string(), first_at),
        ];
        if sent_before > 0 {
            headers.push(("square-retry-number".to_string(), sent_before.to_string()));
        }
        Delivery { headers, body }
    }

    /// The event body announcing `event` for `order`.
    pub fn event_body(&self, event: OrderEvent, order: &SimOrder, event_id: &str) -> Value {
        let id = order_id(order.id);
        let created_at = normalized(&order.created_at);
        match event {
            OrderEvent::Created => json!({
                "merchant_id": self.merchant_id, "type": "order.created", "event_id": event_id, "created_at": created_at,
                "data": {"type": "order_created", "id": id, "object": {"order_created": {
                    "created_at": created_at, "location_id": location_id(order.location), "order_id": id, "state": "OPEN", "version": 1}}}
            }),
            OrderEvent::Cancelled | OrderEvent::Fulfilled => {
                let updated_at = order.extra.get("square_updated_at").cloned().unwrap_or_else(|| json!(created_at));
                json!({
                    "merchant_id": self.merchant_id, "type": "order.updated", "event_id": event_id, "created_at": updated_at,
                    "data": {"type": "order_updated", "id": id, "object": {"order_updated": {
                        "created_at": created_at, "location_id": location_id(order.location), "order_id": id,
                        "state": order_state(order), "updated_at": updated_at, "version": version(order)}}}
                })
            }
        }
    }
}

fn version(o: &SimOrder) -> i64 {
    o.extra.get("square_version").and_then(Value::as_i64).unwrap_or(1)
}

fn bump_version(o: &mut SimOrder, at: &str) {
    let v = version(o) + 1;
    o.extra.insert("square_version".into(), json!(v));
    o.extra.insert("square_updated_at".into(), json!(at));
}

fn order_state(o: &SimOrder) -> &str {
    o.extra.get("square_state").and_then(Value::as_str).unwrap_or("OPEN")
}

fn fulfillment_state(o: &SimOrder) -> &str {
    match order_state(o) {
        "COMPLETED" => "COMPLETED",
        "CANCELED" if o.extra.get("square_fulfillment_state").and_then(Value::as_str) != Some("COMPLETED") => "CANCELED",
        _ => o.extra.get("square_fulfillment_state").and_then(Value::as_str).unwrap_or("PROPOSED"),
    }
}

impl SimPlatform for SquareSim {
    fn name(&self) -> &'static str {
        NAME
    }

    fn router(self: Arc<Self>) -> Router {
        Router::new()
            .route("/v2/locations", get(list_locations))
            .route("/v2/catalog/object/{object_id}", get(retrieve_catalog_object))
            .route("/v2/catalog/batch-retrieve", post(batch_retrieve_catalog))
            .route("/v2/catalog/search", post(search_catalog))
            .route("/v2/inventory/counts/batch-retrieve", post(batch_retrieve_counts))
            .route("/v2/inventory/changes/batch-create", post(batch_change_inventory))
            .route("/v2/inventory/{catalog_object_id}", get(retrieve_count))
            .route("/v2/orders/batch-retrieve", post(batch_retrieve_orders))
            .route("/v2/orders/search", post(search_orders))
            .route("/v2/orders/{order_id}", get(retrieve_order).put(update_order))
            .with_state(self)
    }

    fn connection(&self, _base_url: &str) -> SimConnection {
        SimConnection {
            values: Default::default(),
            secrets: [
                ("access_token".to_string(), self.creds.access_token.clone()),
                ("signature_key".to_string(), self.creds.signature_key.clone()),
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

    fn order_delivery(&self, event: OrderEvent, order: &SimOrder, url: &str) -> Delivery {
        let order = self.current(order.id).unwrap_or_else(|| order.clone());
        let event_id = self.event_id(&order, event);
        let body = serde_json::to_vec(&self.event_body(event, &order, &event_id)).expect("JSON serializes");
        self.signed(&event_id, body, url)
    }

    fn stock_topic(&self) -> Option<&'static str> {
        Some("inventory.count.updated")
    }

    /// One `inventory.count.updated` event with the count of `sku` at every location.
    fn stock_deliveries(&self, sku: &str, url: &str) -> Vec<Delivery> {
        let Some(p) = self.erp.product_by_sku(sku) else { return Vec::new() };
        let counts = self.counts_of(&p, None);
        if counts.is_empty() {
            return Vec::new();
        }
        let event_id = crate::sandbox::uuid_like();
        let body = json!({"merchant_id": self.merchant_id, "type": "inventory.count.updated", "event_id": event_id, "created_at": now(),
            "data": {"type": "inventory_counts", "id": crate::sandbox::uuid_like(), "object": {"inventory_counts": counts}}});
        vec![self.signed(&event_id, serde_json::to_vec(&body).expect("JSON serializes"), url)]
    }
}

// ---------------------------------------------------------------- handlers

type Sim = State<Arc<SquareSim>>;

async fn list_locations(State(sim): Sim, headers: HeaderMap) -> Response {
    sim.guarded("locations.list", || {
        sim.refuse(&headers)?;
        let locations: Vec<Value> = sim.erp.locations().iter().map(|l| sim.location_json(l)).collect();
        let mut body = Map::new();
        put_list(&mut body, "locations", locations);
        Ok(Value::Object(body))
    })
    .await
}

async fn retrieve_catalog_object(State(sim): Sim, Path(object_id): Path<String>, headers: HeaderMap) -> Response {
    sim.guarded("catalog.retrieve", || {
        sim.refuse(&headers)?;
        match sim.catalog_object(&object_id) {
            Some(object) => Ok(json!({"object": object})),
            None => Err(not_found(&format!("Object with ID `{object_id}` not found."), None)),
        }
    })
    .await
}

async fn batch_retrieve_catalog(State(sim): Sim, headers: HeaderMap, body: axum::body::Bytes) -> Response {
    sim.guarded("catalog.batch_retrieve", || {
        sim.refuse(&headers)?;
        let req = parse_body(&body)?;
        let Some(ids) = req.get("object_ids").and_then(Value::as_array) else {
            return Err(invalid("MISSING_REQUIRED_PARAMETER", "Field must be set", Some("object_ids")));
        };
        let objects: Vec<Value> = ids.iter().filter_map(Value::as_str).filter_map(|id| sim.catalog_object(id)).collect();
        let mut out = Map::new();
        put_list(&mut out, "objects", objects);
        Ok(Value::Object(out))
    })
    .await
}

/// Does a catalog object match a `query` of SearchCatalogObjects?
fn catalog_matches(object: &Value, query: &Value) -> Result<bool, Failure> {
    let data = object.get("item_variation_data").or_else(|| object.get("item_data")).cloned().unwrap_or(json!({}));
    let attribute = |name: &str| data.get(name).and_then(Value::as_str).map(str::to_string);
    let Some(query) = query.as_object().filter(|q| !q.is_empty()) else {
        return Ok(true);
    };
    for (kind, spec) in query {
        let name = spec.get("attribute_name").and_then(Value::as_str).unwrap_or("");
        let matched = match kind.as_str() {
            "exact_query" => {
                let wanted = spec.get("attribute_value").and_then(Value::as_str).unwrap_or("");
                attribute(name).is_some_and(|v| v.eq_ignore_ascii_case(wanted))
            }
            "set_query" => {
                let wanted = strings(spec.get("attribute_values"));
                attribute(name).is_some_and(|v| wanted.iter().any(|w| w.eq_ignore_ascii_case(&v)))
            }
            "prefix_query" => {
                let prefix = spec.get("attribute_prefix").and_then(Value::as_str).unwrap_or("").to_ascii_lowercase();
                attribute(name).is_some_and(|v| v.to_ascii_lowercase().starts_with(&prefix))
            }
            "text_query" => {
                let text = [attribute("name"), attribute("sku")].into_iter().flatten().collect::<Vec<_>>().join(" ").to_ascii_lowercase();
                strings(spec.get("keywords")).iter().all(|k| text.contains(&k.to_ascii_lowercase()))
            }
            "sorted_attribute_query" => true,
            other => {
                return Err(invalid("INVALID_VALUE", &format!("Unsupported query type `{other}`."), Some("query")));
            }
        };
        if !matched {
            return Ok(false);
        }
    }
    Ok(true)
}

async fn search_catalog(State(sim): Sim, headers: HeaderMap, body: axum::body::Bytes) -> Response {
    sim.guarded("catalog.search", || {
        sim.refuse(&headers)?;
        let req = parse_body(&body)?;
        let types = strings(req.get("object_types"));
        let start = decode_cursor(req.get("cursor"))?;
        let page_size = limit(req.get("limit"), 100, 1000)?;
        let query = req.get("query").cloned().unwrap_or(json!({}));
        let mut found = Vec::new();
        for p in sim.erp.products() {
            for (kind, object) in [("ITEM", sim.item_json(&p)), ("ITEM_VARIATION", sim.variation_json(&p))] {
                if !types.is_empty() && !types.iter().any(|t| t == kind) {
                    continue;
                }
                if catalog_matches(&object, &query)? {
                    found.push(object);
                }
            }
        }
        let total = found.len();
        let page: Vec<Value> = found.into_iter().skip(start).take(page_size).collect();
        let mut out = Map::new();
        let next = start + page.len();
        put_list(&mut out, "objects", page);
        if next < total {
            out.insert("cursor".into(), json!(encode_cursor(next)));
        }
        out.insert("latest_time".into(), json!(now()));
        Ok(Value::Object(out))
    })
    .await
}

async fn batch_retrieve_counts(State(sim): Sim, headers: HeaderMap, body: axum::body::Bytes) -> Response {
    sim.guarded("inventory.batch_retrieve_counts", || {
        sim.refuse(&headers)?;
        let req = parse_body(&body)?;
        let start = decode_cursor(req.get("cursor"))?;
        let page_size = limit(req.get("limit"), MAX_INVENTORY_LIMIT, MAX_INVENTORY_LIMIT)?;
        let object_ids = strings(req.get("catalog_object_ids"));
        let location_ids = strings(req.get("location_ids"));
        let states = strings(req.get("states"));
        let updated_after = match req.get("updated_after").and_then(Value::as_str) {
            Some(t) => match crate::clock::parse_instant(t) {
                Some(t) => Some(t),
                None => return Err(invalid("INVALID_TIME", "`updated_after` must be an RFC 3339 timestamp.", Some("updated_after"))),
            },
            None => None,
        };
        if !states.is_empty() && !states.iter().any(|s| s == "IN_STOCK") {
            return Ok(json!({}));
        }
        let products: Vec<Product> = if object_ids.is_empty() {
            sim.erp.products()
        } else {
            object_ids.iter().filter_map(|id| parse_catalog_id(id, SALT_VARIATION)).filter_map(|pid| sim.erp.product_by_id(pid)).collect()
        };
        let locations = (!location_ids.is_empty()).then_some(location_ids.as_slice());
        let mut counts: Vec<Value> = products.iter().flat_map(|p| sim.counts_of(p, locations)).collect();
        if let Some(after) = updated_after {
            counts.retain(|c| {
                c.get("calculated_at").and_then(Value::as_str).and_then(crate::clock::parse_instant).is_some_and(|at| at > after)
            });
        }
        // Newest first, as Square sorts counts.
        counts.sort_by(|a, b| {
            let key = |c: &Value| c.get("calculated_at").and_then(Value::as_str).unwrap_or("").to_string();
            key(b).cmp(&key(a))
        });
        let total = counts.len();
        let page: Vec<Value> = counts.into_iter().skip(start).take(page_size).collect();
        let next = start + page.len();
        let mut out = Map::new();
        put_list(&mut out, "counts", page);
        if next < total {
            out.insert("cursor".into(), json!(encode_cursor(next)));
        }
        Ok(Value::Object(out))
    })
    .await
}

async fn retrieve_count(
    State(sim): Sim,
    Path(object_id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    sim.guarded("inventory.retrieve_count", || {
        sim.refuse(&headers)?;
        let locations: Vec<String> = query
            .get("location_ids")
            .map(|l| l.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect())
            .unwrap_or_default();
        let Some(p) = parse_catalog_id(&object_id, SALT_VARIATION).and_then(|pid| sim.erp.product_by_id(pid)) else {
            return Ok(json!({}));
        };
        let mut out = Map::new();
        put_list(&mut out, "counts", sim.counts_of(&p, (!locations.is_empty()).then_some(locations.as_slice())));
        Ok(Value::Object(out))
    })
    .await
}

/// One inventory change, checked: (product, location, delta to IN_STOCK at that location).
type Movement = (Product, Location, i64);

fn parse_change(sim: &SquareSim, index: usize, change: &Value) -> Result<Vec<Movement>, Failure> {
    let kind = change.get("type").and_then(Value::as_str).unwrap_or("");
    let (field, body) = match kind {
        "PHYSICAL_COUNT" => ("physical_count", change.get("physical_count")),
        "ADJUSTMENT" => ("adjustment", change.get("adjustment")),
        "TRANSFER" => ("transfer", change.get("transfer")),
        _ => {
            return Err(invalid(
                "INVALID_ENUM_VALUE",
                "`type` must be PHYSICAL_COUNT, ADJUSTMENT or TRANSFER.",
                Some(&format!("changes[{index}].type")),
            ));
        }
    };
    let path = |name: &str| format!("changes[{index}].{field}.{name}");
    let Some(body) = body else {
        return Err(invalid("MISSING_REQUIRED_PARAMETER", "Field must be set", Some(&format!("changes[{index}].{field}"))));
    };
    let product = {
        let id = body.get("catalog_object_id").and_then(Value::as_str);
        let Some(id) = id else {
            return Err(invalid("MISSING_REQUIRED_PARAMETER", "Field must be set", Some(&path("catalog_object_id"))));
        };
        parse_catalog_id(id, SALT_VARIATION)
            .and_then(|pid| sim.erp.product_by_id(pid))
            .ok_or_else(|| invalid("NOT_FOUND", &format!("Object with ID `{id}` not found."), Some(&path("catalog_object_id"))))?
    };
    let location = |name: &str| -> Result<Location, Failure> {
        let Some(id) = body.get(name).and_then(Value::as_str) else {
            return Err(invalid("MISSING_REQUIRED_PARAMETER", "Field must be set", Some(&path(name))));
        };
        sim.location_by_square_id(id).ok_or_else(|| invalid("NOT_FOUND", &format!("Location `{id}` not found."), Some(&path(name))))
    };
    let quantity = match body.get("quantity") {
        None => return Err(invalid("MISSING_REQUIRED_PARAMETER", "Field must be set", Some(&path("quantity")))),
        Some(q) => whole_quantity(q)
            .filter(|q| *q >= 0)
            .ok_or_else(|| invalid("INVALID_VALUE", "Quantity must be a whole, non-negative decimal string.", Some(&path("quantity"))))?,
    };
    let state = |name: &str| body.get(name).and_then(Value::as_str).unwrap_or("").to_string();
    match kind {
        "PHYSICAL_COUNT" => {
            let loc = location("location_id")?;
            if state("state") != "IN_STOCK" {
                return Ok(Vec::new());
            }
            let current = sim.erp.levels(&product.sku).into_iter().find(|(l, _)| l.id == loc.id).map_or(0, |(_, l)| l.on_hand);
            Ok(vec![(product, loc, quantity - current)])
        }
        "ADJUSTMENT" => {
            let loc = location("location_id")?;
            let (from, to) = (state("from_state"), state("to_state"));
            if from.is_empty() || to.is_empty() {
                let missing = if from.is_empty() { "from_state" } else { "to_state" };
                return Err(invalid("MISSING_REQUIRED_PARAMETER", "Field must be set", Some(&path(missing))));
            }
            if from == to {
                return Err(invalid("INVALID_VALUE", "`from_state` and `to_state` must differ.", Some(&path("to_state"))));
            }
            let delta = match (from.as_str(), to.as_str()) {
                ("IN_STOCK", _) => -quantity,
                (_, "IN_STOCK") => quantity,
                _ => 0,
            };
            Ok(vec![(product, loc, delta)])
        }
        _ => {
            let (from, to) = (location("from_location_id")?, location("to_location_id")?);
            if state("state") != "IN_STOCK" {
                return Ok(Vec::new());
            }
            Ok(vec![(product.clone(), from, -quantity), (product, to, quantity)])
        }
    }
}

async fn batch_change_inventory(State(sim): Sim, headers: HeaderMap, body: axum::body::Bytes) -> Response {
    sim.guarded("inventory.batch_change", || {
        sim.refuse(&headers)?;
        let req = parse_body(&body)?;
        let Some(key) = req.get("idempotency_key").and_then(Value::as_str).filter(|k| !k.is_empty()) else {
            return Err(invalid("MISSING_REQUIRED_PARAMETER", "Field must be set", Some("idempotency_key")));
        };
        if key.chars().count() > 128 {
            return Err(invalid("VALUE_TOO_LONG", "`idempotency_key` must be at most 128 characters.", Some("idempotency_key")));
        }
        let effect_key = format!("square:inventory:{key}");
        let mut answered = sim.idempotent.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((first_request, first_answer)) = answered.get(&effect_key) {
            if *first_request != req {
                return Err(invalid(
                    "IDEMPOTENCY_KEY_REUSED",
                    "The idempotency key can only be retried with the same request data.",
                    Some("idempotency_key"),
                ));
            }
            sim.erp.effect(NAME, "inventory_change", None, &effect_key, req.clone());
            return Ok(first_answer.clone());
        }
        let changes = req.get("changes").and_then(Value::as_array).cloned().unwrap_or_default();
        if changes.len() > 100 {
            return Err(invalid("ARRAY_LENGTH_TOO_LONG", "At most 100 changes may be sent in one request.", Some("changes")));
        }
        let mut movements = Vec::new();
        for (i, change) in changes.iter().enumerate() {
            movements.extend(parse_change(&sim, i, change)?);
        }
        let ignore_unchanged = req.get("ignore_unchanged_counts").and_then(Value::as_bool).unwrap_or(true);
        if sim.erp.effect(NAME, "inventory_change", None, &effect_key, req.clone()) {
            for (p, loc, delta) in &movements {
                if *delta != 0 || !ignore_unchanged {
                    sim.erp.adjust_on_hand(&p.sku, loc.id, *delta);
                }
            }
        }
        let at = now();
        let mut touched: Vec<(u64, u64)> = Vec::new();
        let mut counts = Vec::new();
        for (p, loc, _) in &movements {
            if touched.contains(&(p.id, loc.id)) {
                continue;
            }
            touched.push((p.id, loc.id));
            let level = sim.erp.levels(&p.sku).into_iter().find(|(l, _)| l.id == loc.id).map(|(_, l)| l).unwrap_or_default();
            counts.push(sim.count_json(p, loc, &level));
        }
        let recorded: Vec<Value> = changes
            .iter()
            .map(|c| {
                let mut c = c.clone();
                for field in ["physical_count", "adjustment", "transfer"] {
                    if let Some(inner) = c.get_mut(field).and_then(Value::as_object_mut) {
                        inner.insert("id".into(), json!(catalog_id(rand::random::<u64>() >> 1, 0)));
                        inner.insert("created_at".into(), json!(at));
                        inner.entry("occurred_at").or_insert_with(|| json!(at));
                    }
                }
                c
            })
            .collect();
        let mut out = Map::new();
        put_list(&mut out, "counts", counts);
        put_list(&mut out, "changes", recorded);
        let answer = Value::Object(out);
        answered.insert(effect_key, (req, answer.clone()));
        Ok(answer)
    })
    .await
}

async fn retrieve_order(State(sim): Sim, Path(order_id): Path<String>, headers: HeaderMap) -> Response {
    sim.guarded("orders.retrieve", || {
        sim.refuse(&headers)?;
        match sim.order_by_square_id(&order_id) {
            Some(o) => Ok(json!({"order": sim.order_json(&o)})),
            None => Err(not_found(&format!("Order with ID `{order_id}` not found."), Some("order_id"))),
        }
    })
    .await
}

async fn batch_retrieve_orders(State(sim): Sim, headers: HeaderMap, body: axum::body::Bytes) -> Response {
    sim.guarded("orders.batch_retrieve", || {
        sim.refuse(&headers)?;
        let req = parse_body(&body)?;
        let Some(ids) = req.get("order_ids").and_then(Value::as_array) else {
            return Err(invalid("MISSING_REQUIRED_PARAMETER", "Field must be set", Some("order_ids")));
        };
        if ids.len() > 100 {
            return Err(invalid("ARRAY_LENGTH_TOO_LONG", "At most 100 order ids may be sent in one request.", Some("order_ids")));
        }
        let location = req.get("location_id").and_then(Value::as_str);
        let orders: Vec<Value> = ids
            .iter()
            .filter_map(Value::as_str)
            .filter_map(|id| sim.order_by_square_id(id))
            .filter(|o| location.is_none_or(|l| location_id(o.location) == l))
            .map(|o| sim.order_json(&o))
            .collect();
        let mut out = Map::new();
        put_list(&mut out, "orders", orders);
        Ok(Value::Object(out))
    })
    .await
}

async fn search_orders(State(sim): Sim, headers: HeaderMap, body: axum::body::Bytes) -> Response {
    sim.guarded("orders.search", || {
        sim.refuse(&headers)?;
        let req = parse_body(&body)?;
        search(&sim, &req)
    })
    .await
}

fn time_range(filter: &Value, field: &str) -> Result<(Option<OffsetDateTime>, Option<OffsetDateTime>), Failure> {
    let bound = |name: &str| -> Result<Option<OffsetDateTime>, Failure> {
        match filter.get(name).and_then(Value::as_str) {
            None => Ok(None),
            Some(t) => crate::clock::parse_instant(t).map(Some).ok_or_else(|| {
                invalid(
                    "INVALID_TIME",
                    "Times must be RFC 3339 timestamps.",
                    Some(&format!("query.filter.date_time_filter.{field}.{name}")),
                )
            }),
        }
    };
    Ok((bound("start_at")?, bound("end_at")?))
}

fn search(sim: &SquareSim, req: &Value) -> Result<Value, Failure> {
    let locations = strings(req.get("location_ids"));
    if locations.is_empty() {
        return Err(invalid("MISSING_REQUIRED_PARAMETER", "Field must be set", Some("location_ids")));
    }
    if locations.len() > MAX_SEARCH_LOCATIONS {
        return Err(invalid("ARRAY_LENGTH_TOO_LONG", "At most 10 location ids may be searched at once.", Some("location_ids")));
    }
    let start = decode_cursor(req.get("cursor"))?;
    let page_size = limit(req.get("limit"), DEFAULT_ORDER_LIMIT, MAX_ORDER_LIMIT)?;
    let query = req.get("query").cloned().unwrap_or(json!({}));
    let filter = query.get("filter").cloned().unwrap_or(json!({}));
    let sort = query.get("sort").cloned().unwrap_or(json!({}));
    let sort_field = sort.get("sort_field").and_then(Value::as_str).unwrap_or("CREATED_AT").to_string();
    let descending = sort.get("sort_order").and_then(Value::as_str).unwrap_or("DESC") == "DESC";
    if !["CREATED_AT", "UPDATED_AT", "CLOSED_AT"].contains(&sort_field.as_str()) {
        return Err(invalid(
            "INVALID_ENUM_VALUE",
            "`sort_field` must be CREATED_AT, UPDATED_AT or CLOSED_AT.",
            Some("query.sort.sort_field"),
        ));
    }
    let states = strings(filter.pointer("/state_filter/states"));
    let customers = strings(filter.pointer("/customer_filter/customer_ids"));
    let sources = strings(filter.pointer("/source_filter/source_names"));
    let fulfillment_states = strings(filter.pointer("/fulfillment_filter/fulfillment_states"));
    let mut time_filter = None;
    if let Some(dt) = filter.get("date_time_filter").and_then(Value::as_object) {
        for (field, range) in dt {
            let sorted_by = match field.as_str() {
                "created_at" => "CREATED_AT",
                "updated_at" => "UPDATED_AT",
                "closed_at" => "CLOSED_AT",
                _ => continue,
            };
            if sorted_by != sort_field {
                return Err(invalid(
                    "INVALID_VALUE",
                    &format!("A `{field}` time filter requires `sort_field` {sorted_by}."),
                    Some("query.sort.sort_field"),
                ));
            }
            time_filter = Some((field.clone(), time_range(range, field)?));
        }
    }
    let sort_key = match sort_field.as_str() {
        "UPDATED_AT" => "updated_at",
        "CLOSED_AT" => "closed_at",
        _ => "created_at",
    };
    let mut found: Vec<(OffsetDateTime, Value)> = Vec::new();
    for o in sim.orders_of_platform() {
        let order = sim.order_json(&o);
        let text = |path: &str| order.pointer(path).and_then(Value::as_str).unwrap_or("").to_string();
        if !locations.contains(&text("/location_id")) {
            continue;
        }
        if !states.is_empty() && !states.contains(&text("/state")) {
            continue;
        }
        if !customers.is_empty() && !customers.contains(&text("/customer_id")) {
            continue;
        }
        if !sources.is_empty() && !sources.contains(&text("/source/name")) {
            continue;
        }
        if !fulfillment_states.is_empty() && !fulfillment_states.contains(&text("/fulfillments/0/state")) {
            continue;
        }
        let Some(at) = order.get(sort_key).and_then(Value::as_str).and_then(crate::clock::parse_instant) else {
            // Sorting by CLOSED_AT leaves out orders that are not closed.
            continue;
        };
        if let Some((_, (from, to))) = &time_filter {
            if from.is_some_and(|f| at < f) || to.is_some_and(|t| at > t) {
                continue;
            }
        }
        found.push((at, order));
    }
    found.sort_by(|a, b| if descending { b.0.cmp(&a.0) } else { a.0.cmp(&b.0) });
    let total = found.len();
    let page: Vec<Value> = found.into_iter().skip(start).take(page_size).map(|(_, o)| o).collect();
    let next = start + page.len();
    let mut out = Map::new();
    if req.get("return_entries").and_then(Value::as_bool) == Some(true) {
        let entries = page.iter().map(|o| json!({"order_id": o["id"], "version": o["version"], "location_id": o["location_id"]})).collect();
        put_list(&mut out, "order_entries", entries);
    } else {
        put_list(&mut out, "orders", page);
    }
    if next < total {
        out.insert("cursor".into(), json!(encode_cursor(next)));
    }
    Ok(Value::Object(out))
}

const FULFILLMENT_STATES: [&str; 6] = ["PROPOSED", "RESERVED", "PREPARED", "COMPLETED", "CANCELED", "FAILED"];

fn valid_metadata_key(k: &str) -> bool {
    !k.is_empty() && k.len() <= 60 && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// What an UpdateOrder request asks for, checked against the order.
struct OrderChange {
    state: Option<String>,
    fulfillment_state: Option<String>,
    metadata: BTreeMap<String, Value>,
}

fn plan_update(o: &SimOrder, sparse: &Value, fields_to_clear: &[String]) -> Result<OrderChange, Failure> {
    let state = match sparse.get("state").and_then(Value::as_str) {
        None => None,
        Some(s @ ("OPEN" | "CANCELED" | "COMPLETED")) => Some(s.to_string()),
        Some(other) => {
            return Err(invalid("INVALID_ENUM_VALUE", &format!("`{other}` is not a valid order state here."), Some("order.state")));
        }
    };
    let fulfillment_uid = uid(o.fulfillment_orders.first().copied().unwrap_or(o.id), SALT_FULFILLMENT);
    let mut requested_fulfillment_state = None;
    if let Some(fulfillments) = sparse.get("fulfillments").and_then(Value::as_array) {
        for (i, f) in fulfillments.iter().enumerate() {
            let field = |name: &str| format!("order.fulfillments[{i}].{name}");
            match f.get("uid").and_then(Value::as_str) {
                Some(u) if u == fulfillment_uid => {}
                Some(u) => return Err(invalid("NOT_FOUND", &format!("Fulfillment `{u}` not found on this order."), Some(&field("uid")))),
                None => return Err(invalid("BAD_REQUEST", "Fulfillments cannot be added to this order.", Some(&field("uid")))),
            }
            if let Some(s) = f.get("state").and_then(Value::as_str) {
                if !FULFILLMENT_STATES.contains(&s) {
                    return Err(invalid("INVALID_ENUM_VALUE", &format!("`{s}` is not a valid fulfillment state."), Some(&field("state"))));
                }
                let current = fulfillment_state(o);
                if ["COMPLETED", "CANCELED", "FAILED"].contains(&current) && current != s {
                    return Err(invalid(
                        "BAD_REQUEST",
                        &format!("A fulfillment in state {current} cannot change to {s}."),
                        Some(&field("state")),
                    ));
                }
                requested_fulfillment_state = Some(s.to_string());
            }
        }
    }
    let mut metadata: BTreeMap<String, Value> = o
        .extra
        .get("square_metadata")
        .and_then(Value::as_object)
        .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
        .unwrap_or_default();
    for f in fields_to_clear {
        if f == "metadata" {
            metadata.clear();
        } else if let Some(k) = f.strip_prefix("metadata.") {
            metadata.remove(k);
        }
    }
    if let Some(m) = sparse.get("metadata") {
        let Some(m) = m.as_object() else {
            return Err(invalid("EXPECTED_OBJECT", "`metadata` must be an object.", Some("order.metadata")));
        };
        for (k, v) in m {
            let field = format!("order.metadata.{k}");
            if !valid_metadata_key(k) {
                return Err(invalid("INVALID_VALUE", "Metadata keys are 1 to 60 characters of [a-zA-Z0-9_-].", Some(&field)));
            }
            let Some(text) = v.as_str() else {
                return Err(invalid("EXPECTED_STRING", "Metadata values must be strings.", Some(&field)));
            };
            if text.chars().count() > 255 {
                return Err(invalid("VALUE_TOO_LONG", "Metadata values are at most 255 characters.", Some(&field)));
            }
            metadata.insert(k.clone(), v.clone());
        }
    }
    if metadata.len() > MAX_METADATA_ENTRIES {
        return Err(invalid("ARRAY_LENGTH_TOO_LONG", "An order holds at most 10 metadata entries.", Some("order.metadata")));
    }
    Ok(OrderChange { state, fulfillment_state: requested_fulfillment_state, metadata })
}

async fn update_order(State(sim): Sim, Path(square_id): Path<String>, headers: HeaderMap, body: axum::body::Bytes) -> Response {
    sim.guarded("orders.update", || {
        sim.refuse(&headers)?;
        let req = parse_body(&body)?;
        apply_update(&sim, &square_id, &req)
    })
    .await
}

fn apply_update(sim: &SquareSim, square_id: &str, req: &Value) -> Result<Value, Failure> {
    let key = req.get("idempotency_key").and_then(Value::as_str).filter(|k| !k.is_empty()).map(str::to_string);
    if key.as_ref().is_some_and(|k| k.chars().count() > 192) {
        return Err(invalid("VALUE_TOO_LONG", "`idempotency_key` must be at most 192 characters.", Some("idempotency_key")));
    }
    let mut answered = sim.idempotent.lock().unwrap_or_else(|e| e.into_inner());
    let Some(order) = sim.order_by_square_id(square_id) else {
        return Err(not_found(&format!("Order with ID `{square_id}` not found."), Some("order_id")));
    };
    let replay_key = key.as_ref().map(|k| format!("square:update:{k}"));
    if let Some(k) = &replay_key {
        if let Some((_, first_answer)) = answered.get(k) {
            sim.erp.effect(NAME, "order_update", Some(order.id), k, req.clone());
            return Ok(first_answer.clone());
        }
    }
    let Some(sparse) = req.get("order").filter(|o| o.is_object()) else {
        return Err(invalid("MISSING_REQUIRED_PARAMETER", "Field must be set", Some("order")));
    };
    if sparse.get("location_id").and_then(Value::as_str).is_none_or(str::is_empty) {
        return Err(invalid("MISSING_REQUIRED_PARAMETER", "Field must be set", Some("order.location_id")));
    }
    let Some(supplied) = sparse.get("version").and_then(Value::as_i64) else {
        return Err(invalid("BAD_REQUEST", "Missing required parameter.", Some("order.version")));
    };
    let current = version(&order);
    if supplied != current {
        return Err(invalid(
            "VERSION_MISMATCH",
            &format!("Supplied version {supplied} does not match the current version {current} of order {square_id}."),
            Some("order.version"),
        ));
    }
    if order_state(&order) != "OPEN" {
        return Err(invalid("BAD_REQUEST", &format!("An order in state {} cannot be updated.", order_state(&order)), Some("order.state")));
    }
    let fields_to_clear = strings(req.get("fields_to_clear"));
    let change = plan_update(&order, sparse, &fields_to_clear)?;
    let effect_key = replay_key.clone().unwrap_or_else(|| format!("square:update:{}:v{current}", order.id));
    let detail = json!({"version": current, "state": change.state, "fulfillment_state": change.fulfillment_state,
                        "metadata": change.metadata, "fields_to_clear": fields_to_clear});
    if sim.erp.effect(NAME, "order_update", Some(order.id), &effect_key, detail) {
        apply_change(sim, &order, &change);
    }
    let updated = sim.current(order.id).unwrap_or(order);
    let answer = json!({"order": sim.order_json(&updated)});
    if let Some(k) = replay_key {
        answered.insert(k, (req.clone(), answer.clone()));
    }
    Ok(answer)
}

fn apply_change(sim: &SquareSim, order: &SimOrder, change: &OrderChange) {
    let at = now();
    let cancels = change.state.as_deref() == Some("CANCELED");
    let completes = change.state.as_deref() == Some("COMPLETED") || change.fulfillment_state.as_deref() == Some("COMPLETED");
    let gives_back = cancels || change.fulfillment_state.as_deref() == Some("CANCELED");
    let release = sim
        .erp
        .update_order(order.id, |o| {
            if let Some(s) = &change.fulfillment_state {
                o.extra.insert("square_fulfillment_state".into(), json!(s));
            }
            o.extra.insert("square_metadata".into(), json!(change.metadata));
            if cancels {
                o.extra.insert("square_state".into(), json!("CANCELED"));
                o.extra.insert("square_closed_at".into(), json!(at));
                o.cancel_reason.get_or_insert_with(|| "DECLINED".into());
            }
            let mut release = false;
            if gives_back && !o.extra.contains_key("square_released") {
                o.extra.insert("square_released".into(), json!(true));
                o.state = OrderState::Cancelled;
                release = true;
            }
            bump_version(o, &at);
            release
        })
        .unwrap_or(false);
    if release {
        sim.erp.release_commitment(order.id);
    }
    if completes && !gives_back && !order.extra.contains_key("fulfilled") {
        // Completing an order takes its units out of stock, as Square does.
        for l in &order.lines {
            sim.erp.adjust_on_hand(&l.sku, order.location, -l.qty);
        }
        sim.erp.release_commitment(order.id);
        sim.erp.update_order(order.id, |o| {
            o.extra.insert("fulfilled".into(), json!(true));
            o.extra.insert("square_saw_fulfilled".into(), json!(true));
            o.extra.insert("square_released".into(), json!(true));
            // A paid order whose fulfillment is complete is complete.
            o.extra.insert("square_state".into(), json!("COMPLETED"));
            o.extra.insert("square_fulfillment_state".into(), json!("COMPLETED"));
            o.extra.insert("square_closed_at".into(), json!(at));
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sandbox::erp::LineRequest;
    use crate::sandbox::platforms::testkit::{Received, receiver};

    #[test]
    fn ids_look_like_square_ids_and_decode() {
        let v = variation_id(9_012_345_000);
        assert_eq!(v.len(), 24);
        assert!(v.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit()), "{v}");
        assert_eq!(parse_catalog_id(&v, SALT_VARIATION), Some(9_012_345_000));
        assert_eq!(parse_catalog_id(&v, SALT_ITEM), None);
        assert_ne!(variation_id(9_012_345_001)[..6], v[..6]);
        let o = order_id(5_812_345_670_001);
        assert_eq!(o.len(), 27);
        assert_eq!(parse_order_id(&o), Some(5_812_345_670_001));
        assert_eq!(parse_order_id("CAISENgvlJ6jLWAzERDzjyHVybY"), None);
        assert_eq!(location_id(71_234_567).len(), 13);
        assert_eq!(customer_id(7_012_345_000).len(), 26);
        assert_eq!(cents("8999.00"), 899_900);
        assert_eq!(cents("24.5"), 2450);
        assert_eq!(whole_quantity(&json!("3.00000")), Some(3));
        assert_eq!(whole_quantity(&json!("2.5")), None);
    }

    #[test]
    fn signs_the_documented_test_vector() {
        let sim = SquareSim {
            erp: Arc::new(Erp::new()),
            faults: Arc::new(Faults::new(1)),
            creds: SquareCredentials { access_token: "t".into(), signature_key: "sq-test-signature-key".into() },
            merchant_id: "MLTEST123".into(),
            catalog_version: 1,
            opened_at: now(),
            counts_seen: Mutex::default(),
            idempotent: Mutex::default(),
            deliveries: Mutex::default(),
        };
        let body = br#"{"merchant_id":"MLTEST123","type":"order.created","event_id":"7a1f0c2e-0000-4000-8000-000000000001"}"#.to_vec();
        let d = sim.signed("7a1f0c2e-0000-4000-8000-000000000001", body, "https://engine.example.com/hooks/square");
        let signature = d.headers.iter().find(|(k, _)| k == "x-square-hmacsha256-signature").map(|(_, v)| v.as_str());
        assert_eq!(signature, Some("rPgofQv7sZCpD0HDP3lA50rLsljtfQxnCu51psBNeMU="));
    }

    struct Setup {
        sandbox: crate::sandbox::Sandbox,
        base: String,
        token: String,
        signature_key: String,
        hook_url: String,
        hooks: Received,
        http: reqwest::Client,
    }

    async fn setup() -> Setup {
        let sandbox = crate::sandbox::Sandbox::start(
            tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
            crate::sandbox::SandboxOptions::generated(),
        )
        .await
        .unwrap();
        crate::sandbox::erp::seed_amusement_catalogue(&sandbox.erp, "2026-12-10", "2027-02-01");
        let connection = sandbox.connection(NAME).unwrap();
        let (hook_url, hooks) = receiver().await;
        sandbox.set_webhook_target(NAME, &hook_url);
        Setup {
            base: sandbox.base_url(NAME),
            token: connection.secrets["access_token"].clone(),
            signature_key: connection.secrets["signature_key"].clone(),
            sandbox,
            hook_url,
            hooks,
            http: reqwest::Client::new(),
        }
    }

    impl Setup {
        async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
            let mut req =
                self.http.request(method, format!("{}{path}", self.base)).bearer_auth(&self.token).header("Square-Version", "2025-08-20");
            if let Some(b) = body {
                req = req.json(&b);
            }
            let resp = req.send().await.unwrap();
            let status = resp.status().as_u16();
            (status, resp.json().await.unwrap_or(Value::Null))
        }

        fn verify(&self, headers: &HeaderMap, body: &[u8]) -> bool {
            let mut signed = self.hook_url.as_bytes().to_vec();
            signed.extend_from_slice(body);
            let expected = base64::engine::general_purpose::STANDARD.encode(hmac_bytes(
                SignatureAlgorithm::HmacSha256,
                self.signature_key.as_bytes(),
                &signed,
            ));
            headers.get("x-square-hmacsha256-signature").and_then(|v| v.to_str().ok()) == Some(expected.as_str())
        }

        fn customer(&self) -> u64 {
            self.sandbox.erp.customers()[0].id
        }
    }

    #[tokio::test]
    async fn auth_catalog_locations_and_counts() {
        let s = setup().await;
        let resp = s.http.get(format!("{}/v2/locations", s.base)).bearer_auth("wrong").send().await.unwrap();
        assert_eq!(resp.status().as_u16(), 401);
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["errors"][0]["category"], "AUTHENTICATION_ERROR");
        assert_eq!(body["errors"][0]["code"], "UNAUTHORIZED");

        let (status, locations) = s.call(reqwest::Method::GET, "/v2/locations", None).await;
        assert_eq!(status, 200);
        let location = locations["locations"][0]["id"].as_str().unwrap().to_string();
        assert!(location.starts_with('L') && location.len() == 13);

        let (status, found) = s
            .call(
                reqwest::Method::POST,
                "/v2/catalog/search",
                Some(json!({"object_types": ["ITEM_VARIATION"], "query": {"exact_query": {"attribute_name": "sku", "attribute_value": "PB-STERN-GODZ-PRO"}}})),
            )
            .await;
        assert_eq!(status, 200);
        let variation = found["objects"][0]["id"].as_str().unwrap().to_string();
        assert_eq!(found["objects"][0]["item_variation_data"]["sku"], "PB-STERN-GODZ-PRO");
        assert_eq!(found["objects"][0]["item_variation_data"]["track_inventory"], true);
        let (_, nothing) = s
            .call(
                reqwest::Method::POST,
                "/v2/catalog/search",
                Some(json!({"object_types": ["ITEM_VARIATION"], "query": {"exact_query": {"attribute_name": "sku", "attribute_value": "NOPE"}}})),
            )
            .await;
        assert!(nothing.get("objects").is_none());
        let (_, mini) = s
            .call(
                reqwest::Method::POST,
                "/v2/catalog/search",
                Some(json!({"object_types": ["ITEM_VARIATION"], "query": {"exact_query": {"attribute_name": "sku", "attribute_value": "CC-CLAW-MINI"}}})),
            )
            .await;
        assert_eq!(mini["objects"][0]["item_variation_data"]["sellable"], false);

        let (status, object) = s.call(reqwest::Method::GET, &format!("/v2/catalog/object/{variation}"), None).await;
        assert_eq!(status, 200);
        assert_eq!(object["object"]["type"], "ITEM_VARIATION");
        let (status, missing) = s.call(reqwest::Method::GET, "/v2/catalog/object/NOSUCHOBJECTAAAAAAAAAAAA", None).await;
        assert_eq!((status, missing["errors"][0]["code"].as_str()), (404, Some("NOT_FOUND")));

        // An open order does not lower Square's IN_STOCK count.
        s.sandbox.place_order(NAME, s.customer(), &[LineRequest { sku: "PB-STERN-GODZ-PRO".into(), qty: 1 }]).await.unwrap();
        let (status, counts) = s
            .call(
                reqwest::Method::POST,
                "/v2/inventory/counts/batch-retrieve",
                Some(json!({"catalog_object_ids": [variation], "location_ids": [location], "states": ["IN_STOCK"]})),
            )
            .await;
        assert_eq!(status, 200);
        assert_eq!(counts["counts"][0]["quantity"], "3");
        assert_eq!(counts["counts"][0]["catalog_object_type"], "ITEM_VARIATION");
        assert!(counts.get("cursor").is_none());

        // Pagination over every count, one per page.
        let mut cursor: Option<String> = None;
        let mut seen = 0;
        loop {
            let (_, page) =
                s.call(reqwest::Method::POST, "/v2/inventory/counts/batch-retrieve", Some(json!({"limit": 4, "cursor": cursor}))).await;
            seen += page["counts"].as_array().map_or(0, Vec::len);
            match page.get("cursor").and_then(Value::as_str) {
                Some(c) => cursor = Some(c.to_string()),
                None => break,
            }
        }
        assert_eq!(seen, 11);

        let (status, single) = s.call(reqwest::Method::GET, &format!("/v2/inventory/{variation}?location_ids={location}"), None).await;
        assert_eq!(status, 200);
        assert_eq!(single["counts"][0]["quantity"], "3");

        // A stock change, replayed by its key; another body under the same key is refused.
        let change = json!({"idempotency_key": "inv-1", "ignore_unchanged_counts": true, "changes": [{"type": "ADJUSTMENT", "adjustment": {
            "catalog_object_id": variation, "location_id": location, "from_state": "IN_STOCK", "to_state": "SOLD", "quantity": "1",
            "occurred_at": "2026-11-01T10:00:00Z"}}]});
        let (status, first) = s.call(reqwest::Method::POST, "/v2/inventory/changes/batch-create", Some(change.clone())).await;
        assert_eq!(status, 200);
        assert_eq!(first["counts"][0]["quantity"], "2");
        let (_, again) = s.call(reqwest::Method::POST, "/v2/inventory/changes/batch-create", Some(change.clone())).await;
        assert_eq!(again, first);
        assert_eq!(s.sandbox.erp.totals("PB-STERN-GODZ-PRO").0, 2);
        let mut other = change.clone();
        other["changes"][0]["adjustment"]["quantity"] = json!("2");
        let (status, reused) = s.call(reqwest::Method::POST, "/v2/inventory/changes/batch-create", Some(other)).await;
        assert_eq!((status, reused["errors"][0]["code"].as_str()), (400, Some("IDEMPOTENCY_KEY_REUSED")));
        let (status, keyless) = s.call(reqwest::Method::POST, "/v2/inventory/changes/batch-create", Some(json!({"changes": []}))).await;
        assert_eq!((status, keyless["errors"][0]["field"].as_str()), (400, Some("idempotency_key")));
        assert_eq!(s.sandbox.erp.attempts()["square:inventory:inv-1"], 2);
    }

    #[tokio::test]
    async fn orders_webhooks_and_updates() {
        let s = setup().await;
        let (order, status) =
            s.sandbox.place_order(NAME, s.customer(), &[LineRequest { sku: "AC-SF2-CAB-2P".into(), qty: 1 }]).await.unwrap();
        assert_eq!(status, 200);
        let (headers, body) = s.hooks.lock().unwrap()[0].clone();
        assert!(s.verify(&headers, &body));
        assert_eq!(headers.get("square-environment").unwrap(), "Production");
        let event: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(event["type"], "order.created");
        assert_eq!(event["data"]["type"], "order_created");
        let id = event["data"]["id"].as_str().unwrap().to_string();
        assert_eq!(id, order_id(order.id));
        assert_eq!(event["data"]["object"]["order_created"]["version"], 1);

        // Redelivery keeps the event id and says it is a retry.
        s.sandbox.redeliver(order.id).await.unwrap();
        let (headers2, body2) = s.hooks.lock().unwrap()[1].clone();
        assert_eq!(body2, body);
        assert_eq!(headers2.get("square-retry-number").unwrap(), "1");

        let (status, fetched) = s.call(reqwest::Method::GET, &format!("/v2/orders/{id}"), None).await;
        assert_eq!(status, 200);
        let o = &fetched["order"];
        assert_eq!(o["state"], "OPEN");
        assert_eq!(o["version"], 1);
        assert_eq!(o["line_items"][0]["quantity"], "1");
        assert!(o.get("metadata").is_none());
        let location = o["location_id"].as_str().unwrap().to_string();
        let fulfillment = o["fulfillments"][0]["uid"].as_str().unwrap().to_string();

        // Search by updated_at, sorted to match.
        let (status, search) = s
            .call(
                reqwest::Method::POST,
                "/v2/orders/search",
                Some(json!({"location_ids": [location], "limit": 10, "query": {"filter": {"state_filter": {"states": ["OPEN"]},
                    "date_time_filter": {"updated_at": {"start_at": "2020-01-01T00:00:00Z"}}}, "sort": {"sort_field": "UPDATED_AT", "sort_order": "ASC"}}})),
            )
            .await;
        assert_eq!(status, 200);
        assert_eq!(search["orders"][0]["id"], id);
        let (status, mismatch) = s
            .call(
                reqwest::Method::POST,
                "/v2/orders/search",
                Some(json!({"location_ids": [location], "query": {"filter": {"date_time_filter": {"updated_at": {"start_at": "2020-01-01T00:00:00Z"}}}}})),
            )
            .await;
        assert_eq!(status, 400, "{mismatch}");
        let (_, batch) = s.call(reqwest::Method::POST, "/v2/orders/batch-retrieve", Some(json!({"order_ids": [id]}))).await;
        assert_eq!(batch["orders"][0]["id"], id);

        // Approve: fulfillment RESERVED plus metadata, replayed by key, stale version refused.
        let update = json!({"idempotency_key": "ord-approve-1", "order": {"location_id": location, "version": 1,
            "fulfillments": [{"uid": fulfillment, "state": "RESERVED"}], "metadata": {"sync_decision": "approved"}}});
        let (status, updated) = s.call(reqwest::Method::PUT, &format!("/v2/orders/{id}"), Some(update.clone())).await;
        assert_eq!(status, 200, "{updated}");
        assert_eq!(updated["order"]["version"], 2);
        assert_eq!(updated["order"]["fulfillments"][0]["state"], "RESERVED");
        assert_eq!(updated["order"]["metadata"]["sync_decision"], "approved");
        let (status, replay) = s.call(reqwest::Method::PUT, &format!("/v2/orders/{id}"), Some(update)).await;
        assert_eq!((status, &replay), (200, &updated));
        let stale = json!({"order": {"location_id": location, "version": 1, "metadata": {"sync_decision": "x"}}});
        let (status, err) = s.call(reqwest::Method::PUT, &format!("/v2/orders/{id}"), Some(stale)).await;
        assert_eq!((status, err["errors"][0]["code"].as_str()), (400, Some("VERSION_MISMATCH")));
        let effects: Vec<_> = s.sandbox.erp.effects().into_iter().filter(|e| e.kind == "order_update").collect();
        assert_eq!(effects.len(), 1);

        // Reject: the order is cancelled and its units come back once.
        assert_eq!(s.sandbox.erp.totals("AC-SF2-CAB-2P").1, 1);
        let reject = json!({"order": {"location_id": location, "version": 2, "state": "CANCELED"}});
        let (status, cancelled) = s.call(reqwest::Method::PUT, &format!("/v2/orders/{id}"), Some(reject)).await;
        assert_eq!(status, 200);
        assert_eq!(cancelled["order"]["state"], "CANCELED");
        assert_eq!(cancelled["order"]["fulfillments"][0]["state"], "CANCELED");
        assert_eq!(s.sandbox.erp.totals("AC-SF2-CAB-2P").1, 0);
        let late = json!({"order": {"location_id": location, "version": 3, "metadata": {"a": "b"}}});
        let (status, closed) = s.call(reqwest::Method::PUT, &format!("/v2/orders/{id}"), Some(late)).await;
        assert_eq!((status, closed["errors"][0]["code"].as_str()), (400, Some("BAD_REQUEST")));
        s.sandbox.cancel_order(order.id).await.unwrap();
        assert_eq!(s.sandbox.erp.totals("AC-SF2-CAB-2P").1, 0);
    }

    #[tokio::test]
    async fn shipping_completes_the_order_and_announces_it() {
        let s = setup().await;
        s.sandbox.set_topic_target(NAME, "inventory.count.updated", &s.hook_url);
        let (order, _) = s.sandbox.place_order(NAME, s.customer(), &[LineRequest { sku: "CC-CLAW-42".into(), qty: 2 }]).await.unwrap();
        s.sandbox.ship_order(order.id).await.unwrap();
        let hooks = s.hooks.lock().unwrap().clone();
        assert_eq!(hooks.len(), 3);
        let updated: Value = serde_json::from_slice(&hooks[1].1).unwrap();
        assert_eq!(updated["type"], "order.updated");
        assert_eq!(updated["data"]["object"]["order_updated"]["state"], "COMPLETED");
        assert_eq!(updated["data"]["object"]["order_updated"]["version"], 2);
        assert!(s.verify(&hooks[2].0, &hooks[2].1));
        let stock: Value = serde_json::from_slice(&hooks[2].1).unwrap();
        assert_eq!(stock["type"], "inventory.count.updated");
        assert_eq!(stock["data"]["object"]["inventory_counts"][0]["quantity"], "0");
        let (_, fetched) = s.call(reqwest::Method::GET, &format!("/v2/orders/{}", order_id(order.id)), None).await;
        assert_eq!(fetched["order"]["state"], "COMPLETED");
        assert!(fetched["order"]["closed_at"].is_string());
    }

    #[tokio::test]
    async fn faults_answer_in_square_shapes() {
        let s = setup().await;
        s.sandbox.faults.set(vec![crate::sandbox::faults::FaultRule {
            platform: NAME.into(),
            operation: Some("inventory".into()),
            kind: FaultKind::Throttle { retry_after_s: 1.0 },
            rate: 1.0,
            when: When::Before,
            limit: Some(1),
        }]);
        let (status, body) = s.call(reqwest::Method::POST, "/v2/inventory/counts/batch-retrieve", Some(json!({}))).await;
        assert_eq!((status, body["errors"][0]["code"].as_str()), (429, Some("RATE_LIMITED")));
        assert_eq!(body["errors"][0]["category"], "RATE_LIMIT_ERROR");
        let (status, _) = s.call(reqwest::Method::POST, "/v2/inventory/counts/batch-retrieve", Some(json!({}))).await;
        assert_eq!(status, 200);
        let resp =
            s.http.get(format!("{}/v2/locations", s.base)).bearer_auth(&s.token).header("Square-Version", "August").send().await.unwrap();
        assert_eq!(resp.status().as_u16(), 400);
    }
}
