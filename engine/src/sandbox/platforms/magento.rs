//! Magento 2 / Adobe Commerce, simulated: the REST web API under
//! `/rest/{store_code}/V1/…` (and `/rest/V1/…`), polled for orders, with MSI
//! inventory.
//!
//! What it imitates:
//! - integration access tokens sent as `Authorization: Bearer …`; without a
//!   valid one every route answers 401 "The consumer isn't authorized to
//!   access %resources." naming the route's ACL resource;
//! - store codes `default` and `all` (and none); any other code, like any
//!   unknown path or method, answers 404 "Request does not match any route.";
//! - `GET /V1/orders?searchCriteria[…]` parsed as Magento does: filter groups
//!   (filters OR'ed inside a group, groups AND'ed), condition types `eq`
//!   (default), `neq`, `gt`, `gteq`, `lt`, `lteq`, `in`, `nin`, `like`,
//!   `null`, `notnull` (also `moreq`, `from`, `to`, `finset`), several
//!   `sortOrders`, `pageSize`, `currentPage` (1-based; past the last page the
//!   last page is answered again), snake_case or camelCase keys; the answer
//!   is `{"items","search_criteria","total_count"}`;
//! - orders in Magento's shape; optional values that are null are left out
//!   of the answer, as the web API does (so `parent_item_id` is absent on
//!   simple items); new orders are state `new` / status `pending`;
//! - `POST /V1/orders/{id}/hold`, `/unhold`, `/cancel` (`true`, or `false`
//!   when the order cannot be cancelled), `/comments`, and
//!   `POST /V1/order/{id}/invoice` (state `processing`), each bumping
//!   `updated_at`; `GET /V1/orders/{id}/comments`;
//! - MSI: `GET|POST /V1/inventory/source-items` (physical quantity per
//!   source, reservations ignored),
//!   `GET /V1/inventory/get-product-salable-quantity/{sku}/{stockId}` (a
//!   bare number: on hand minus reservations over all sources of stock 1),
//!   `GET /V1/products/{sku}` with
//!   `extension_attributes.stock_item`. Placing an order reserves its units
//!   (the ERP commits them at once); shipping takes them off the source;
//!   cancelling gives the reservation back, once;
//! - errors as `{"message", "parameters"?}`; JSON encoded as PHP's
//!   `json_encode` does (`\/`, non-ASCII as `\uXXXX`).
//!
//! Choices where the platform leaves room or the docs were unconfirmed:
//! - `entity_id` is the ERP order number and `increment_id` that number on
//!   nine digits; `item_id` is `entity_id * 1000 + line position`; product
//!   and customer ids are the ERP ids;
//! - `customer_group_id` comes from the customer's first ERP tag:
//!   `distributor` → 2 (Wholesale), `operator` → 3 (Retailer), else 1
//!   (General);
//! - a comment's `status` must be one of the current state's statuses (new:
//!   pending; processing: processing; holded: holded; canceled: canceled;
//!   complete: complete), else 400 "The order status \"%1\" is not valid for
//!   the order state \"%2\"." (message text unconfirmed); a comment without
//!   status keeps the order's status;
//! - hold / unhold / invoice refusals answer 400 with Magento's messages; a
//!   repeated identical comment is recorded once (the answer is still
//!   `true`); an invoice answers its id as a JSON string (`"1"`), the way
//!   the id comes out of the database;
//! - saving a source item validates as MSI does (`Validation Failed` with
//!   `errors`); an unknown source code fails the whole save with "Could not
//!   save Source Item"; an unknown SKU is saved (MSI does not check the
//!   catalogue);
//! - source codes: `default` for the ERP's first location, the others'
//!   names in snake case; a source item's `status` is what was last saved for
//!   it, else 1 when its quantity is positive;
//! - unknown filter or sort fields answer Magento's production-mode 500
//!   (the SQL error is hidden behind a report id), as do injected failures;
//!   an injected 429 answers `{"message": "Too Many Requests"}` with
//!   `Retry-After` in whole seconds (throttling comes from a CDN in front of
//!   Magento, not from Magento);
//! - the `fields` response filter is not applied (the whole answer comes
//!   back).
//!
//! Fault operations: `orders.list`, `orders.get`, `orders.hold`,
//! `orders.unhold`, `orders.cancel`, `orders.comments`,
//! `orders.comments.list`, `orders.invoice`, `inventory.source-items.list`,
//! `inventory.source-items.save`, `inventory.salable-qty`, `products.get`.

use std::cmp::Ordering as CmpOrdering;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{RawPathParams, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Map, Value, json};

use crate::sandbox::erp::{Erp, OrderState, SimOrder};
use crate::sandbox::faults::{self, FaultKind, Faults, When};
use crate::sandbox::platforms::{Delivery, OrderEvent, SimConnection, SimContext, SimPlatform};

const NAME: &str = "magento";
const DEFAULT_SOURCE: &str = "default";
const DEFAULT_STOCK: u64 = 1;

// Keys of the per-order state kept in `SimOrder::extra`.
const STATE: &str = "mage_state";
const STATUS: &str = "mage_status";
const UPDATED: &str = "mage_updated_at";
const HISTORIES: &str = "mage_status_histories";
const HOLD_BEFORE: &str = "mage_hold_before";
const HOLDS: &str = "mage_holds";
const UNHOLDS: &str = "mage_unholds";
const INVOICE: &str = "mage_invoice_id";
const CANCEL_SEEN: &str = "mage_cancel_seen";
const SHIPMENT_SEEN: &str = "mage_shipment_seen";

/// Order columns a search may filter or sort on.
const ORDER_COLUMNS: &[&str] = &[
    "entity_id",
    "increment_id",
    "state",
    "status",
    "store_id",
    "customer_id",
    "customer_email",
    "customer_firstname",
    "customer_lastname",
    "customer_group_id",
    "customer_is_guest",
    "created_at",
    "updated_at",
    "grand_total",
    "base_grand_total",
    "subtotal",
    "base_subtotal",
    "total_qty_ordered",
    "total_item_count",
    "order_currency_code",
    "base_currency_code",
    "hold_before_state",
    "hold_before_status",
    "quote_id",
];

const SOURCE_ITEM_COLUMNS: &[&str] = &["sku", "source_code", "quantity", "status"];

/// The integration token the simulated store accepts.
#[derive(Debug, Clone)]
pub struct MagentoCredentials {
    pub access_token: String,
}

pub struct MagentoSim {
    pub erp: Arc<Erp>,
    faults: Arc<Faults>,
    pub creds: MagentoCredentials,
    /// `entity_id` (the ERP order number) → ERP order id, filled on demand.
    order_ids: Mutex<HashMap<u64, u64>>,
    /// Source item statuses as last saved, by (sku, source code).
    source_status: Mutex<HashMap<(String, String), i64>>,
    next_history_id: AtomicU64,
    next_invoice_id: AtomicU64,
    /// When the catalogue was created, for products' `created_at`.
    published: String,
}

/// `YYYY-MM-DD HH:MM:SS`, UTC, as Magento writes dates.
fn mage_date(t: time::OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!("{:04}-{:02}-{:02} {:02}:{:02}:{:02}", t.year(), u8::from(t.month()), t.day(), t.hour(), t.minute(), t.second())
}

fn now_date() -> String {
    mage_date(time::OffsetDateTime::now_utc())
}

fn mage_date_of(rfc3339: &str) -> String {
    crate::clock::parse_instant(rfc3339).map(mage_date).unwrap_or_else(|| rfc3339.chars().take(19).collect::<String>().replace('T', " "))
}

/// JSON as PHP's `json_encode` writes it: slashes escaped, non-ASCII as `\uXXXX`.
fn php_json_bytes(value: &Value) -> Vec<u8> {
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

fn mage_response(status: StatusCode, value: &Value) -> Response {
    let mut r = (status, php_json_bytes(value)).into_response();
    r.headers_mut().insert("content-type", HeaderValue::from_static("application/json; charset=utf-8"));
    r
}

/// A web API error: `{"message": …, "parameters": …}`.
#[derive(Debug)]
struct MageError {
    status: StatusCode,
    body: Value,
}

impl IntoResponse for MageError {
    fn into_response(self) -> Response {
        mage_response(self.status, &self.body)
    }
}

type Answer = Result<Response, MageError>;

fn mage_error(status: StatusCode, message: &str) -> MageError {
    MageError { status, body: json!({"message": message}) }
}

fn mage_error_with(status: StatusCode, message: &str, parameters: Value) -> MageError {
    MageError { status, body: json!({"message": message, "parameters": parameters}) }
}

fn no_route() -> MageError {
    mage_error(StatusCode::NOT_FOUND, "Request does not match any route.")
}

fn no_order() -> MageError {
    mage_error(StatusCode::NOT_FOUND, "The entity that was requested doesn't exist. Verify the entity and try again.")
}

fn no_product() -> MageError {
    mage_error(StatusCode::NOT_FOUND, "The product that was requested doesn't exist. Verify the product and try again.")
}

fn wrong_type(value: &str, expected: &str) -> MageError {
    mage_error_with(
        StatusCode::BAD_REQUEST,
        "The \"%value\" value's type is invalid. The \"%type\" type was expected. Verify and try again.",
        json!({"value": value, "type": expected}),
    )
}

fn required(field: &str) -> MageError {
    mage_error_with(StatusCode::BAD_REQUEST, "\"%fieldName\" is required. Enter and try again.", json!({"fieldName": field}))
}

/// Magento's production-mode answer to an internal failure.
fn internal_error_body() -> Value {
    json!({"message": format!("Internal Error. Details are available in Magento log file. Report ID: webapi-{}", &crate::sandbox::random_hex(7)[..13])})
}

fn internal_error() -> MageError {
    MageError { status: StatusCode::INTERNAL_SERVER_ERROR, body: internal_error_body() }
}

fn throttled(retry_after_s: f64) -> Response {
    let mut r = mage_response(StatusCode::TOO_MANY_REQUESTS, &json!({"message": "Too Many Requests"}));
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
            _ => faults::before(kind, &internal_error_body()).await,
        };
        if let Some(r) = early {
            return r;
        }
    }
    let real = answer().unwrap_or_else(IntoResponse::into_response);
    match &fault {
        Some((kind, When::After)) => faults::after(kind, real, &internal_error_body()).await,
        _ => real,
    }
}

// ----- query strings and searchCriteria -------------------------------------------

fn percent_decode(s: &str) -> String {
    fn hex(b: u8) -> Option<u8> {
        (b as char).to_digit(16).and_then(|d| u8::try_from(d).ok())
    }
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

/// The query string as PHP reads it: `a[b][0][c]=v` becomes nested objects.
fn php_query(raw: &str) -> Value {
    let mut root = Value::Object(Map::new());
    for pair in raw.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let key = percent_decode(key);
        let value = percent_decode(value);
        let (head, rest) = match key.find('[') {
            Some(i) => (&key[..i], &key[i..]),
            None => (key.as_str(), ""),
        };
        let mut path = vec![head.to_string()];
        let mut rest = rest;
        while let Some(inner) = rest.strip_prefix('[') {
            let Some(close) = inner.find(']') else { break };
            path.push(inner[..close].to_string());
            rest = &inner[close + 1..];
        }
        let mut node = &mut root;
        for (i, segment) in path.iter().enumerate() {
            if !node.is_object() {
                *node = Value::Object(Map::new());
            }
            let Some(map) = node.as_object_mut() else { break };
            if i + 1 == path.len() {
                map.insert(segment.clone(), Value::String(value.clone()));
                break;
            }
            node = map.entry(segment.clone()).or_insert_with(|| Value::Object(Map::new()));
        }
    }
    root
}

/// A child by its snake_case or camelCase name.
fn child<'a>(node: &'a Value, snake: &str) -> Option<&'a Value> {
    node.get(snake).or_else(|| {
        let camel: String =
            snake.split('_').enumerate().map(|(i, w)| if i == 0 { w.to_string() } else { w[..1].to_ascii_uppercase() + &w[1..] }).collect();
        node.get(camel)
    })
}

/// The entries of a PHP list (an object keyed 0, 1, …), in key order.
fn entries(node: Option<&Value>) -> Vec<&Value> {
    let Some(map) = node.and_then(Value::as_object) else { return Vec::new() };
    let mut keyed: Vec<(i64, &Value)> = map.iter().map(|(k, v)| (k.parse::<i64>().unwrap_or(i64::MAX), v)).collect();
    keyed.sort_by_key(|(k, _)| *k);
    keyed.into_iter().map(|(_, v)| v).collect()
}

fn text(node: Option<&Value>) -> Option<String> {
    node.and_then(Value::as_str).map(str::to_string)
}

struct Filter {
    field: String,
    value: String,
    condition: String,
}

struct SortOrder {
    field: String,
    descending: bool,
}

struct SearchCriteria {
    groups: Vec<Vec<Filter>>,
    sort: Vec<SortOrder>,
    page_size: Option<i64>,
    current_page: Option<i64>,
    echo: Value,
}

impl SearchCriteria {
    /// Read `searchCriteria[…]` from a query string; `None` when absent.
    fn parse(raw_query: &str) -> Result<Option<SearchCriteria>, MageError> {
        let tree = php_query(raw_query);
        let Some(sc) = tree.get("searchCriteria") else { return Ok(None) };
        let mut groups = Vec::new();
        let mut echo_groups = Vec::new();
        for group in entries(child(sc, "filter_groups")) {
            let mut filters = Vec::new();
            let mut echo_filters = Vec::new();
            for f in entries(child(group, "filters")) {
                let field = text(child(f, "field")).unwrap_or_default();
                let value = text(child(f, "value")).unwrap_or_default();
                let condition = text(child(f, "condition_type")).filter(|c| !c.is_empty()).unwrap_or_else(|| "eq".into());
                echo_filters.push(json!({"field": field, "value": value, "condition_type": condition}));
                filters.push(Filter { field, value, condition: condition.to_ascii_lowercase() });
            }
            echo_groups.push(json!({"filters": echo_filters}));
            groups.push(filters);
        }
        let mut echo = json!({"filter_groups": echo_groups});
        let mut sort = Vec::new();
        let sort_entries = entries(child(sc, "sort_orders"));
        if !sort_entries.is_empty() {
            let mut echo_sort = Vec::new();
            for s in sort_entries {
                let field = text(child(s, "field")).unwrap_or_default();
                let direction = text(child(s, "direction")).unwrap_or_else(|| "ASC".into());
                echo_sort.push(json!({"field": field, "direction": direction}));
                sort.push(SortOrder { field, descending: direction.eq_ignore_ascii_case("desc") });
            }
            echo["sort_orders"] = Value::Array(echo_sort);
        }
        let number = |name: &str| -> Result<Option<i64>, MageError> {
            match text(child(sc, name)) {
                None => Ok(None),
                Some(raw) => raw.trim().parse::<i64>().map(Some).map_err(|_| wrong_type(&raw, "int")),
            }
        };
        let page_size = number("page_size")?;
        let current_page = number("current_page")?;
        if let Some(n) = page_size {
            echo["page_size"] = json!(n);
        }
        if let Some(n) = current_page {
            echo["current_page"] = json!(n);
        }
        Ok(Some(SearchCriteria { groups, sort, page_size, current_page, echo }))
    }

    /// Filter, sort and page `rows` (objects whose `columns` may be searched).
    fn apply(&self, rows: Vec<Value>, columns: &[&str]) -> Result<(Vec<Value>, usize), MageError> {
        let known = |field: &str| columns.contains(&field);
        if self.groups.iter().flatten().any(|f| !known(&f.field)) || self.sort.iter().any(|s| !known(&s.field)) {
            // The SQL error about an unknown column hides behind a report id.
            return Err(internal_error());
        }
        let mut rows: Vec<Value> = rows
            .into_iter()
            .filter(|row| self.groups.iter().all(|group| group.is_empty() || group.iter().any(|f| f.matches(row.get(&f.field)))))
            .collect();
        for order in self.sort.iter().rev() {
            rows.sort_by(|a, b| {
                let ordering = compare_values(a.get(&order.field), b.get(&order.field));
                if order.descending { ordering.reverse() } else { ordering }
            });
        }
        let total = rows.len();
        let Some(size) = self.page_size.filter(|n| *n > 0) else { return Ok((rows, total)) };
        let size = size as usize;
        let last_page = total.div_ceil(size).max(1);
        let page = (self.current_page.unwrap_or(1).max(1) as usize).min(last_page);
        Ok((rows.into_iter().skip((page - 1) * size).take(size).collect(), total))
    }
}

/// A date as MySQL reads it: `T` or space between date and time, a date alone at midnight.
fn normalize_date(s: &str) -> String {
    let s = s.trim().trim_end_matches('Z').replace('T', " ");
    if s.len() == 10 { format!("{s} 00:00:00") } else { s.chars().take(19).collect() }
}

fn looks_like_date(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() >= 10 && b[4] == b'-' && b[7] == b'-' && b[..4].iter().all(u8::is_ascii_digit)
}

/// Text as the column's collation compares it: case-insensitive, dates as dates.
fn compare_text(a: &str, b: &str) -> CmpOrdering {
    if looks_like_date(a) && looks_like_date(b) {
        normalize_date(a).cmp(&normalize_date(b))
    } else {
        a.to_lowercase().cmp(&b.to_lowercase())
    }
}

/// A column value against a filter value, by the column's type: numbers as
/// numbers, text as text. `None` when the column is NULL.
fn compare_column(actual: &Value, expected: &str) -> Option<CmpOrdering> {
    match actual {
        Value::Null => None,
        Value::Number(n) => {
            let n = n.as_f64().unwrap_or(0.0);
            // MySQL reads a non-numeric string as 0 against a number column.
            let e = expected.trim().parse::<f64>().unwrap_or(0.0);
            Some(n.partial_cmp(&e).unwrap_or(CmpOrdering::Equal))
        }
        Value::Bool(b) => compare_column(&json!(i64::from(*b)), expected),
        Value::String(s) => Some(compare_text(s, expected)),
        other => Some(compare_text(&other.to_string(), expected)),
    }
}

/// Two values of one column, for sorting (NULL first, as MySQL sorts it ascending).
fn compare_values(a: Option<&Value>, b: Option<&Value>) -> CmpOrdering {
    match (a.filter(|v| !v.is_null()), b.filter(|v| !v.is_null())) {
        (Some(Value::String(x)), Some(Value::String(y))) => compare_text(x, y),
        (Some(x), Some(y)) => {
            let (x, y) = (x.as_f64().unwrap_or(0.0), y.as_f64().unwrap_or(0.0));
            x.partial_cmp(&y).unwrap_or(CmpOrdering::Equal)
        }
        (None, Some(_)) => CmpOrdering::Less,
        (Some(_), None) => CmpOrdering::Greater,
        (None, None) => CmpOrdering::Equal,
    }
}

/// SQL `LIKE` with `%` and `_`, case-insensitive as MySQL's default collation.
fn like(text: &str, pattern: &str) -> bool {
    fn go(t: &[char], p: &[char]) -> bool {
        match p.split_first() {
            None => t.is_empty(),
            Some(('%', rest)) => (0..=t.len()).any(|i| go(&t[i..], rest)),
            Some(('_', rest)) => !t.is_empty() && go(&t[1..], rest),
            Some((c, rest)) => t.first() == Some(c) && go(&t[1..], rest),
        }
    }
    let t: Vec<char> = text.to_lowercase().chars().collect();
    let p: Vec<char> = pattern.to_lowercase().chars().collect();
    go(&t, &p)
}

impl Filter {
    fn matches(&self, actual: Option<&Value>) -> bool {
        let actual = actual.unwrap_or(&Value::Null);
        let is_null = actual.is_null();
        let cmp = |expected: &str| compare_column(actual, expected);
        let listed = || self.value.split(',').any(|v| cmp(v.trim()) == Some(CmpOrdering::Equal));
        let as_text = || match actual {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        match self.condition.as_str() {
            "null" => is_null,
            "notnull" => !is_null,
            _ if is_null => false,
            "neq" => cmp(&self.value) != Some(CmpOrdering::Equal),
            "gt" => cmp(&self.value) == Some(CmpOrdering::Greater),
            "gteq" | "moreq" | "from" => matches!(cmp(&self.value), Some(CmpOrdering::Greater | CmpOrdering::Equal)),
            "lt" => cmp(&self.value) == Some(CmpOrdering::Less),
            "lteq" | "to" => matches!(cmp(&self.value), Some(CmpOrdering::Less | CmpOrdering::Equal)),
            "in" => listed(),
            "nin" => !listed(),
            "like" => like(&as_text(), &self.value),
            "finset" => as_text().split(',').any(|part| part.trim().eq_ignore_ascii_case(self.value.trim())),
            _ => cmp(&self.value) == Some(CmpOrdering::Equal),
        }
    }
}

// ----- the store ------------------------------------------------------------------

/// Statuses each state allows (Magento's default state/status assignment).
fn state_statuses(state: &str) -> &'static [&'static str] {
    match state {
        "new" => &["pending"],
        "processing" => &["processing"],
        "holded" => &["holded"],
        "canceled" => &["canceled"],
        "complete" => &["complete"],
        "closed" => &["closed"],
        _ => &[],
    }
}

fn customer_group(tags: &[String]) -> u64 {
    match tags.first().map(String::as_str) {
        Some("distributor") => 2,
        Some("operator") => 3,
        _ => 1,
    }
}

/// The code of a source, from the ERP location at `index`.
fn source_code(index: usize, name: &str) -> String {
    if index == 0 {
        return DEFAULT_SOURCE.to_string();
    }
    let mut code = String::new();
    for c in name.chars() {
        if c.is_ascii_alphanumeric() {
            code.push(c.to_ascii_lowercase());
        } else if !code.is_empty() && !code.ends_with('_') {
            code.push('_');
        }
    }
    code.trim_end_matches('_').to_string()
}

/// A refused order action, as Magento words it. `repeat_of` is the effect
/// key of the same action applied before, when this is a repeat of it: the
/// request still counts as an attempt of that effect.
enum Refusal {
    NotFound,
    Refused { message: &'static str, repeat_of: Option<String> },
}

fn refused(message: &'static str, repeat_of: Option<String>) -> Result<(), Refusal> {
    Err(Refusal::Refused { message, repeat_of })
}

impl MagentoSim {
    pub fn new(ctx: &SimContext) -> Arc<Self> {
        Arc::new(MagentoSim {
            erp: ctx.erp.clone(),
            faults: ctx.faults.clone(),
            creds: MagentoCredentials { access_token: crate::sandbox::random_hex(16) },
            order_ids: Mutex::new(HashMap::new()),
            source_status: Mutex::new(HashMap::new()),
            next_history_id: AtomicU64::new(1),
            next_invoice_id: AtomicU64::new(1),
            published: now_date(),
        })
    }

    fn authorize(&self, headers: &HeaderMap, resource: &str) -> Result<(), MageError> {
        let token = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
            .map(str::trim);
        if token == Some(self.creds.access_token.as_str()) {
            Ok(())
        } else {
            Err(mage_error_with(
                StatusCode::UNAUTHORIZED,
                "The consumer isn't authorized to access %resources.",
                json!({"resources": resource}),
            ))
        }
    }

    // ----- orders -------------------------------------------------------

    fn erp_order_id(&self, entity_id: u64) -> Option<u64> {
        if let Some(id) = self.order_ids.lock().unwrap_or_else(|p| p.into_inner()).get(&entity_id) {
            return Some(*id);
        }
        let mut ids = self.order_ids.lock().unwrap_or_else(|p| p.into_inner());
        for o in self.erp.orders().into_iter().filter(|o| o.platform == NAME) {
            ids.insert(o.number, o.id);
        }
        ids.get(&entity_id).copied()
    }

    /// The order as the store sees it now: its Magento state set up on first
    /// sight, then brought in line with what happened to it in the ERP (a
    /// customer cancellation, a shipment).
    fn observe(&self, erp_id: u64) -> Option<SimOrder> {
        let now = now_date();
        let order = self.erp.update_order(erp_id, |o| {
            if o.platform != NAME {
                return o.clone();
            }
            if !o.extra.contains_key(STATE) {
                o.extra.insert(STATE.into(), json!("new"));
                o.extra.insert(STATUS.into(), json!("pending"));
                o.extra.insert(UPDATED.into(), json!(mage_date_of(&o.created_at)));
                o.extra.insert(HISTORIES.into(), json!([]));
            }
            let state = o.extra.get(STATE).and_then(Value::as_str).unwrap_or("new").to_string();
            if o.state == OrderState::Cancelled && state != "canceled" && !o.extra.contains_key(CANCEL_SEEN) {
                // Cancelled outside the API: the reservation went back there.
                o.extra.insert(CANCEL_SEEN.into(), json!(true));
                o.extra.insert(STATE.into(), json!("canceled"));
                o.extra.insert(STATUS.into(), json!("canceled"));
                o.extra.insert(UPDATED.into(), json!(now));
            } else if o.extra.contains_key("fulfilled") && !o.extra.contains_key(SHIPMENT_SEEN) {
                o.extra.insert(SHIPMENT_SEEN.into(), json!(true));
                if state != "canceled" {
                    o.extra.insert(STATE.into(), json!("complete"));
                    o.extra.insert(STATUS.into(), json!("complete"));
                    o.extra.insert(UPDATED.into(), json!(now));
                }
            }
            o.clone()
        })?;
        if order.platform != NAME {
            return None;
        }
        self.order_ids.lock().unwrap_or_else(|p| p.into_inner()).insert(order.number, order.id);
        Some(order)
    }

    fn find_order(&self, entity_id: u64) -> Option<SimOrder> {
        self.erp_order_id(entity_id).and_then(|id| self.observe(id))
    }

    fn store_orders(&self) -> Vec<SimOrder> {
        let mine: Vec<u64> = self.erp.orders().into_iter().filter(|o| o.platform == NAME).map(|o| o.id).collect();
        mine.into_iter().filter_map(|id| self.observe(id)).collect()
    }

    /// The order as `GET /V1/orders/{id}` answers it.
    pub fn order_json(&self, o: &SimOrder) -> Value {
        let entity_id = o.number;
        let text = |key: &str, default: &str| o.extra.get(key).and_then(Value::as_str).unwrap_or(default).to_string();
        let state = text(STATE, "new");
        let status = text(STATUS, "pending");
        let created = mage_date_of(&o.created_at);
        let updated = o.extra.get(UPDATED).and_then(Value::as_str).map_or_else(|| created.clone(), str::to_string);
        let canceled = state == "canceled";
        let shipped = o.extra.contains_key("fulfilled") && !canceled;
        let invoiced = o.extra.contains_key(INVOICE) || state == "complete";
        let mut subtotal = 0.0;
        let mut qty_total = 0.0;
        let items: Vec<Value> = o
            .lines
            .iter()
            .enumerate()
            .map(|(i, l)| {
                let product = self.erp.product_by_sku(&l.sku);
                let (product_id, name, price) =
                    product.map_or((0, l.sku.clone(), 0.0), |p| (p.id, p.title.clone(), p.price.parse::<f64>().unwrap_or(0.0)));
                let qty = l.qty as f64;
                subtotal += price * qty;
                qty_total += qty;
                json!({"item_id": entity_id * 1000 + i as u64 + 1, "order_id": entity_id, "quote_item_id": entity_id * 1000 + i as u64 + 1,
                       "sku": l.sku, "name": name, "product_id": product_id, "product_type": "simple", "store_id": 1,
                       "qty_ordered": qty, "qty_canceled": if canceled { qty } else { 0.0 }, "qty_shipped": if shipped { qty } else { 0.0 },
                       "qty_invoiced": if invoiced { qty } else { 0.0 }, "qty_refunded": 0.0,
                       "price": price, "base_price": price, "original_price": price, "row_total": price * qty, "base_row_total": price * qty,
                       "tax_amount": 0.0, "discount_amount": 0.0, "is_virtual": 0, "created_at": created, "updated_at": updated})
            })
            .collect();
        let c = &o.customer;
        let mut histories: Vec<Value> = o.extra.get(HISTORIES).and_then(Value::as_array).cloned().unwrap_or_default();
        // Newest first, as the history collection is sorted.
        histories.reverse();
        let mut order = json!({
            "entity_id": entity_id, "increment_id": format!("{entity_id:09}"), "state": state, "status": status,
            "store_id": 1, "store_name": "Main Website\nMain Website Store\nDefault Store View", "quote_id": entity_id,
            "customer_id": c.id, "customer_email": c.email, "customer_firstname": c.first_name, "customer_lastname": c.last_name,
            "customer_group_id": customer_group(&c.tags), "customer_is_guest": 0, "customer_note_notify": 1,
            "created_at": created, "updated_at": updated, "protect_code": format!("{:06x}", entity_id.wrapping_mul(0x9e37_79b9) & 0xff_ffff),
            "base_currency_code": "USD", "order_currency_code": "USD", "global_currency_code": "USD", "store_currency_code": "USD",
            "subtotal": subtotal, "base_subtotal": subtotal, "grand_total": subtotal, "base_grand_total": subtotal,
            "total_qty_ordered": qty_total, "total_item_count": o.lines.len(), "email_sent": 1, "is_virtual": 0,
        });
        let more = json!({
            "items": items,
            "billing_address": {"address_type": "billing", "entity_id": entity_id, "parent_id": entity_id, "email": c.email,
                                "firstname": c.first_name, "lastname": c.last_name, "company": c.company, "street": [""], "city": "",
                                "postcode": "", "country_id": "US", "telephone": ""},
            "payment": {"entity_id": entity_id, "parent_id": entity_id, "method": "checkmo", "amount_ordered": subtotal,
                        "base_amount_ordered": subtotal, "additional_information": ["Check / Money order"]},
            "status_histories": histories,
            "extension_attributes": {},
        });
        if let (Some(fields), Value::Object(more)) = (order.as_object_mut(), more) {
            fields.extend(more);
        }
        if let Some(before) = o.extra.get(HOLD_BEFORE) {
            order["hold_before_state"] = before["state"].clone();
            order["hold_before_status"] = before["status"].clone();
        }
        if c.company.trim().is_empty() {
            if let Some(address) = order.get_mut("billing_address").and_then(Value::as_object_mut) {
                address.remove("company");
            }
        }
        order
    }

    /// An order action that moves it between states, when Magento allows it.
    fn transition(&self, order: &SimOrder, action: &str) -> Result<(), Refusal> {
        let now = now_date();
        let count = |o: &SimOrder, key: &str| o.extra.get(key).and_then(Value::as_u64).unwrap_or(0);
        let result = self
            .erp
            .update_order(order.id, |o| {
                let state = o.extra.get(STATE).and_then(Value::as_str).unwrap_or("new").to_string();
                let status = o.extra.get(STATUS).and_then(Value::as_str).unwrap_or("pending").to_string();
                let number = o.number;
                let result = match action {
                    "hold" if state == "holded" => {
                        refused("A hold action is not available.", Some(format!("{NAME}:hold:{number}:{}", count(o, HOLDS))))
                    }
                    "hold" if ["canceled", "complete", "closed"].contains(&state.as_str()) => {
                        refused("A hold action is not available.", None)
                    }
                    "hold" => {
                        o.extra.insert(HOLD_BEFORE.into(), json!({"state": state, "status": status}));
                        o.extra.insert(STATE.into(), json!("holded"));
                        o.extra.insert(STATUS.into(), json!("holded"));
                        o.extra.insert(HOLDS.into(), json!(count(o, HOLDS) + 1));
                        o.state = OrderState::OnHold;
                        Ok(())
                    }
                    "unhold" if state != "holded" => {
                        let repeat = (count(o, UNHOLDS) > 0).then(|| format!("{NAME}:unhold:{number}:{}", count(o, UNHOLDS)));
                        refused("You cannot remove the hold.", repeat)
                    }
                    "unhold" => {
                        let before = o.extra.remove(HOLD_BEFORE).unwrap_or(json!({"state": "new", "status": "pending"}));
                        o.extra.insert(STATE.into(), before["state"].clone());
                        o.extra.insert(STATUS.into(), before["status"].clone());
                        o.extra.insert(UNHOLDS.into(), json!(count(o, UNHOLDS) + 1));
                        o.state = OrderState::Open;
                        Ok(())
                    }
                    "cancel" if state == "canceled" => refused("", Some(format!("{NAME}:cancel:{number}"))),
                    // A held, completed or invoiced order cannot be cancelled.
                    "cancel" if ["holded", "complete", "closed"].contains(&state.as_str()) || o.extra.contains_key(INVOICE) => {
                        refused("", None)
                    }
                    "cancel" => {
                        o.extra.insert(STATE.into(), json!("canceled"));
                        o.extra.insert(STATUS.into(), json!("canceled"));
                        o.extra.insert(CANCEL_SEEN.into(), json!(true));
                        o.extra.insert("cancelled_at".into(), json!(crate::clock::format_rfc3339(time::OffsetDateTime::now_utc())));
                        o.state = OrderState::Cancelled;
                        Ok(())
                    }
                    "invoice" if o.extra.contains_key(INVOICE) => {
                        refused("The order does not allow an invoice to be created.", Some(format!("{NAME}:invoice:{number}")))
                    }
                    "invoice" if !["new", "processing"].contains(&state.as_str()) => {
                        refused("The order does not allow an invoice to be created.", None)
                    }
                    "invoice" => {
                        o.extra.insert(INVOICE.into(), json!(self.next_invoice_id.fetch_add(1, Ordering::Relaxed)));
                        o.extra.insert(STATE.into(), json!("processing"));
                        o.extra.insert(STATUS.into(), json!("processing"));
                        Ok(())
                    }
                    _ => Err(Refusal::NotFound),
                };
                if result.is_ok() {
                    o.extra.insert(UPDATED.into(), json!(now));
                }
                result
            })
            .unwrap_or(Err(Refusal::NotFound));
        if let Err(Refusal::Refused { repeat_of: Some(key), .. }) = &result {
            self.erp.effect(NAME, &format!("order_{action}"), Some(order.id), key, Value::Null);
        }
        result
    }

    /// Append a comment; its status must suit the order's state.
    fn add_comment(&self, order: &SimOrder, history: &Value) -> Result<(), MageError> {
        let state = order.extra.get(STATE).and_then(Value::as_str).unwrap_or("new").to_string();
        let current = order.extra.get(STATUS).and_then(Value::as_str).unwrap_or("pending").to_string();
        let status = match history.get("status") {
            None | Some(Value::Null) => current.clone(),
            Some(Value::String(s)) if s.is_empty() => current.clone(),
            Some(Value::String(s)) => s.clone(),
            Some(other) => return Err(wrong_type(&other.to_string(), "string")),
        };
        if !state_statuses(&state).contains(&status.as_str()) {
            return Err(mage_error_with(
                StatusCode::BAD_REQUEST,
                "The order status \"%1\" is not valid for the order state \"%2\".",
                json!([status, state]),
            ));
        }
        let comment = match history.get("comment") {
            None | Some(Value::Null) => String::new(),
            Some(Value::String(s)) => s.clone(),
            Some(other) => other.to_string(),
        };
        let flag = |name: &str| match history.get(name) {
            Some(Value::Bool(b)) => json!(i64::from(*b)),
            Some(Value::Number(n)) => json!(i64::from(n.as_i64().unwrap_or(0) != 0)),
            Some(Value::String(s)) => json!(i64::from(matches!(s.as_str(), "1" | "true"))),
            _ => Value::Null,
        };
        let notified = flag("is_customer_notified");
        let visible = match flag("is_visible_on_front") {
            Value::Null => json!(0),
            v => v,
        };
        let key = format!("{NAME}:comment:{}:{status}:{comment}", order.number);
        if !self.erp.effect(NAME, "order_comment", Some(order.id), &key, json!({"comment": comment, "status": status})) {
            return Ok(());
        }
        let now = now_date();
        let mut entry = json!({"entity_id": self.next_history_id.fetch_add(1, Ordering::Relaxed), "parent_id": order.number,
                               "comment": comment, "status": status, "is_visible_on_front": visible,
                               "created_at": now, "entity_name": "order"});
        if !notified.is_null() {
            entry["is_customer_notified"] = notified;
        }
        self.erp.update_order(order.id, |o| {
            if let Some(list) = o.extra.entry(HISTORIES.to_string()).or_insert_with(|| json!([])).as_array_mut() {
                list.push(entry);
            }
            o.extra.insert(STATUS.into(), json!(status));
            o.extra.insert(UPDATED.into(), json!(now));
        });
        Ok(())
    }

    // ----- inventory ----------------------------------------------------

    /// Every source item: (sku, source code, ERP location id, on hand).
    fn source_items(&self, skus: Option<&[String]>) -> Vec<Value> {
        let locations = self.erp.locations();
        let products: Vec<String> = match skus {
            Some(skus) => skus.to_vec(),
            None => self.erp.products().into_iter().map(|p| p.sku).collect(),
        };
        let statuses = self.source_status.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let mut items = Vec::new();
        for sku in products {
            for (location, level) in self.erp.levels(&sku) {
                let index = locations.iter().position(|l| l.id == location.id).unwrap_or(0);
                let code = source_code(index, &location.name);
                let status = statuses.get(&(sku.clone(), code.clone())).copied().unwrap_or(i64::from(level.on_hand > 0));
                items.push(json!({"sku": sku, "source_code": code, "quantity": level.on_hand, "status": status}));
            }
        }
        items
    }

    fn location_of(&self, code: &str) -> Option<u64> {
        self.erp.locations().iter().enumerate().find(|(i, l)| source_code(*i, &l.name) == code).map(|(_, l)| l.id)
    }

    fn product_json(&self, sku: &str) -> Option<Value> {
        let p = self.erp.product_by_sku(sku)?;
        let first = self.erp.locations().first().map(|l| l.id);
        let default_qty = self.erp.levels(sku).into_iter().find(|(l, _)| Some(l.id) == first).map_or(0, |(_, level)| level.on_hand);
        let price = p.price.parse::<f64>().unwrap_or(0.0);
        Some(json!({
            "id": p.id, "sku": p.sku, "name": p.title, "attribute_set_id": 4, "price": price,
            "status": if p.discontinued { 2 } else { 1 }, "visibility": 4, "type_id": "simple",
            "created_at": self.published, "updated_at": self.published,
            "extension_attributes": {"website_ids": [1],
                "stock_item": {"item_id": p.id, "product_id": p.id, "stock_id": DEFAULT_STOCK, "qty": default_qty,
                               "is_in_stock": default_qty > 0, "is_qty_decimal": false, "manage_stock": true, "backorders": 0,
                               "min_sale_qty": 1, "max_sale_qty": 10000}},
            "product_links": [], "options": [], "media_gallery_entries": [], "tier_prices": [],
            "custom_attributes": [{"attribute_code": "url_key", "value": p.sku.to_lowercase()}],
        }))
    }
}

impl SimPlatform for MagentoSim {
    fn name(&self) -> &'static str {
        NAME
    }

    fn router(self: Arc<Self>) -> Router {
        let v1 = Router::new()
            .route("/orders", get(list_orders))
            .route("/orders/{id}", get(get_order))
            .route("/orders/{id}/hold", post(hold))
            .route("/orders/{id}/unhold", post(unhold))
            .route("/orders/{id}/cancel", post(cancel))
            .route("/orders/{id}/comments", post(add_comment).get(list_comments))
            .route("/order/{id}/invoice", post(invoice))
            .route("/inventory/source-items", get(list_source_items).post(save_source_items))
            .route("/inventory/get-product-salable-quantity/{sku}/{stock_id}", get(salable_quantity))
            .route("/products/{sku}", get(get_product))
            .fallback(|| async { no_route().into_response() })
            .method_not_allowed_fallback(|| async { no_route().into_response() })
            .with_state(self);
        Router::new().nest("/rest/V1", v1.clone()).nest("/rest/{store_code}/V1", v1).fallback(|| async { no_route().into_response() })
    }

    fn connection(&self, _base_url: &str) -> SimConnection {
        SimConnection {
            values: [("store_code".to_string(), "default".to_string())].into(),
            secrets: [("access_token".to_string(), self.creds.access_token.clone())].into(),
        }
    }

    /// Magento Open Source sends no order webhooks: orders are polled.
    fn order_topic(&self, _event: OrderEvent) -> Option<&'static str> {
        None
    }

    fn order_delivery(&self, _event: OrderEvent, _order: &SimOrder, _url: &str) -> Delivery {
        Delivery { headers: Vec::new(), body: Vec::new() }
    }
}

// ----- handlers -------------------------------------------------------------------

type Sim = State<Arc<MagentoSim>>;

/// The path parameters, after checking the store code (`default`, `all` or none).
fn path_params(params: &RawPathParams) -> Result<HashMap<String, String>, MageError> {
    let map: HashMap<String, String> = params.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    match map.get("store_code").map(String::as_str) {
        None | Some("default") | Some("all") => Ok(map),
        Some(_) => Err(no_route()),
    }
}

fn entity_id(params: &HashMap<String, String>) -> Result<u64, MageError> {
    let raw = params.get("id").map(String::as_str).unwrap_or_default();
    raw.trim().parse::<u64>().map_err(|_| wrong_type(raw, "int"))
}

fn parse_body(body: &[u8]) -> Result<Value, MageError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(json!({}));
    }
    serde_json::from_slice::<Value>(body).map_err(|_| mage_error(StatusCode::BAD_REQUEST, "Decoding error: Syntax error"))
}

/// Answer `true`, as the management endpoints do.
fn answer_true() -> Answer {
    Ok(mage_response(StatusCode::OK, &json!(true)))
}

async fn list_orders(State(sim): Sim, params: RawPathParams, headers: HeaderMap, RawQuery(raw): RawQuery) -> Response {
    with_faults(&sim.faults.clone(), "orders.list", || {
        path_params(&params)?;
        sim.authorize(&headers, "Magento_Sales::actions_view")?;
        let criteria = SearchCriteria::parse(raw.as_deref().unwrap_or_default())?.ok_or_else(|| required("searchCriteria"))?;
        let rows: Vec<Value> = sim.store_orders().iter().map(|o| sim.order_json(o)).collect();
        let (items, total) = criteria.apply(rows, ORDER_COLUMNS)?;
        Ok(mage_response(StatusCode::OK, &json!({"items": items, "search_criteria": criteria.echo, "total_count": total})))
    })
    .await
}

async fn get_order(State(sim): Sim, params: RawPathParams, headers: HeaderMap) -> Response {
    with_faults(&sim.faults.clone(), "orders.get", || {
        let params = path_params(&params)?;
        sim.authorize(&headers, "Magento_Sales::actions_view")?;
        let order = sim.find_order(entity_id(&params)?).ok_or_else(no_order)?;
        Ok(mage_response(StatusCode::OK, &sim.order_json(&order)))
    })
    .await
}

/// Hold, unhold or invoice: `true`, or Magento's refusal.
fn act(sim: &MagentoSim, params: &RawPathParams, headers: &HeaderMap, resource: &str, action: &str) -> Result<SimOrder, MageError> {
    let params = path_params(params)?;
    sim.authorize(headers, resource)?;
    let order = sim.find_order(entity_id(&params)?).ok_or_else(no_order)?;
    match sim.transition(&order, action) {
        Ok(()) => Ok(order),
        Err(Refusal::NotFound) => Err(no_order()),
        Err(Refusal::Refused { message, .. }) => Err(mage_error(StatusCode::BAD_REQUEST, message)),
    }
}

async fn hold(State(sim): Sim, params: RawPathParams, headers: HeaderMap) -> Response {
    with_faults(&sim.faults.clone(), "orders.hold", || {
        let order = act(&sim, &params, &headers, "Magento_Sales::hold", "hold")?;
        let holds = sim.erp.order(order.id).and_then(|o| o.extra.get(HOLDS).and_then(Value::as_u64)).unwrap_or(1);
        sim.erp.effect(NAME, "order_hold", Some(order.id), &format!("{NAME}:hold:{}:{holds}", order.number), Value::Null);
        answer_true()
    })
    .await
}

async fn unhold(State(sim): Sim, params: RawPathParams, headers: HeaderMap) -> Response {
    with_faults(&sim.faults.clone(), "orders.unhold", || {
        let order = act(&sim, &params, &headers, "Magento_Sales::unhold", "unhold")?;
        let unholds = sim.erp.order(order.id).and_then(|o| o.extra.get(UNHOLDS).and_then(Value::as_u64)).unwrap_or(1);
        sim.erp.effect(NAME, "order_unhold", Some(order.id), &format!("{NAME}:unhold:{}:{unholds}", order.number), Value::Null);
        answer_true()
    })
    .await
}

async fn invoice(State(sim): Sim, params: RawPathParams, headers: HeaderMap, body: Bytes) -> Response {
    with_faults(&sim.faults.clone(), "orders.invoice", || {
        parse_body(&body)?;
        let order = act(&sim, &params, &headers, "Magento_Sales::sales_invoice", "invoice")?;
        let invoice_id = sim.erp.order(order.id).and_then(|o| o.extra.get(INVOICE).and_then(Value::as_u64)).unwrap_or(0);
        sim.erp.effect(
            NAME,
            "order_invoice",
            Some(order.id),
            &format!("{NAME}:invoice:{}", order.number),
            json!({"invoice_id": invoice_id}),
        );
        Ok(mage_response(StatusCode::OK, &json!(invoice_id.to_string())))
    })
    .await
}

async fn cancel(State(sim): Sim, params: RawPathParams, headers: HeaderMap) -> Response {
    with_faults(&sim.faults.clone(), "orders.cancel", || {
        let params = path_params(&params)?;
        sim.authorize(&headers, "Magento_Sales::cancel")?;
        let order = sim.find_order(entity_id(&params)?).ok_or_else(no_order)?;
        match sim.transition(&order, "cancel") {
            Ok(()) => {
                sim.erp.release_commitment(order.id);
                sim.erp.effect(NAME, "order_cancel", Some(order.id), &format!("{NAME}:cancel:{}", order.number), Value::Null);
                answer_true()
            }
            Err(Refusal::NotFound) => Err(no_order()),
            Err(Refusal::Refused { .. }) => Ok(mage_response(StatusCode::OK, &json!(false))),
        }
    })
    .await
}

async fn add_comment(State(sim): Sim, params: RawPathParams, headers: HeaderMap, body: Bytes) -> Response {
    with_faults(&sim.faults.clone(), "orders.comments", || {
        let params = path_params(&params)?;
        sim.authorize(&headers, "Magento_Sales::comment")?;
        let id = entity_id(&params)?;
        let body = parse_body(&body)?;
        let history = child(&body, "status_history").filter(|h| h.is_object()).ok_or_else(|| required("statusHistory"))?;
        let order = sim.find_order(id).ok_or_else(no_order)?;
        sim.add_comment(&order, history)?;
        answer_true()
    })
    .await
}

async fn list_comments(State(sim): Sim, params: RawPathParams, headers: HeaderMap) -> Response {
    with_faults(&sim.faults.clone(), "orders.comments.list", || {
        let params = path_params(&params)?;
        sim.authorize(&headers, "Magento_Sales::actions_view")?;
        let id = entity_id(&params)?;
        let order = sim.find_order(id).ok_or_else(no_order)?;
        let items = sim.order_json(&order)["status_histories"].clone();
        let total = items.as_array().map_or(0, Vec::len);
        let criteria = json!({"filter_groups": [{"filters": [{"field": "parent_id", "value": id.to_string(), "condition_type": "eq"}]}]});
        Ok(mage_response(StatusCode::OK, &json!({"items": items, "search_criteria": criteria, "total_count": total})))
    })
    .await
}

async fn list_source_items(State(sim): Sim, params: RawPathParams, headers: HeaderMap, RawQuery(raw): RawQuery) -> Response {
    with_faults(&sim.faults.clone(), "inventory.source-items.list", || {
        path_params(&params)?;
        sim.authorize(&headers, "Magento_InventoryApi::source")?;
        let criteria = SearchCriteria::parse(raw.as_deref().unwrap_or_default())?.ok_or_else(|| required("searchCriteria"))?;
        // A search by SKU only needs those products' items (catalogues can be large).
        let skus: Option<Vec<String>> = match criteria.groups.as_slice() {
            [group] if !group.is_empty() && group.iter().all(|f| f.field == "sku" && matches!(f.condition.as_str(), "eq" | "in")) => {
                Some(group.iter().flat_map(|f| f.value.split(',').map(|s| s.trim().to_string()).collect::<Vec<_>>()).collect())
            }
            _ => None,
        };
        let rows = sim.source_items(skus.as_deref());
        let (items, total) = criteria.apply(rows, SOURCE_ITEM_COLUMNS)?;
        Ok(mage_response(StatusCode::OK, &json!({"items": items, "search_criteria": criteria.echo, "total_count": total})))
    })
    .await
}

async fn save_source_items(State(sim): Sim, params: RawPathParams, headers: HeaderMap, body: Bytes) -> Response {
    with_faults(&sim.faults.clone(), "inventory.source-items.save", || {
        path_params(&params)?;
        sim.authorize(&headers, "Magento_InventoryApi::source")?;
        let body = parse_body(&body)?;
        let items = child(&body, "source_items").and_then(Value::as_array).cloned().ok_or_else(|| required("sourceItems"))?;
        // Validate every item first: the save is all or nothing.
        let mut valid = Vec::new();
        let mut errors = Vec::new();
        for item in &items {
            let sku = item.get("sku").and_then(Value::as_str).unwrap_or_default().to_string();
            let code = item.get("source_code").and_then(Value::as_str).unwrap_or_default().to_string();
            let quantity = item.get("quantity").and_then(|q| q.as_f64().or_else(|| q.as_str().and_then(|s| s.trim().parse().ok())));
            let status = item.get("status").and_then(|s| s.as_i64().or_else(|| s.as_str().and_then(|s| s.trim().parse().ok())));
            for (field, missing) in [("sku", sku.is_empty()), ("source_code", code.is_empty())] {
                if missing {
                    errors.push(json!({"message": "\"%field\" can not be empty.", "parameters": {"field": field}}));
                }
            }
            if quantity.is_none() {
                errors.push(json!({"message": "\"%field\" should be numeric.", "parameters": {"field": "quantity"}}));
            }
            if !matches!(status, Some(0 | 1)) {
                errors.push(json!({"message": "\"%field\" should a known status.", "parameters": {"field": "status"}}));
            }
            let location = sim.location_of(&code);
            if let (Some(location), Some(quantity), Some(status)) = (location, quantity, status) {
                valid.push((sku, code, location, quantity.floor() as i64, status));
            }
        }
        if !errors.is_empty() {
            return Err(MageError { status: StatusCode::BAD_REQUEST, body: json!({"message": "Validation Failed", "errors": errors}) });
        }
        // An unknown source breaks the save at the database.
        if valid.len() < items.len() {
            return Err(mage_error(StatusCode::BAD_REQUEST, "Could not save Source Item"));
        }
        for (sku, code, location, quantity, status) in valid {
            let on_hand = sim.erp.levels(&sku).into_iter().find(|(l, _)| l.id == location).map_or(0, |(_, level)| level.on_hand);
            if on_hand != quantity {
                sim.erp.adjust_on_hand(&sku, location, quantity - on_hand);
            }
            sim.source_status.lock().unwrap_or_else(|p| p.into_inner()).insert((sku.clone(), code.clone()), status);
            sim.erp.effect(
                NAME,
                "source_item_save",
                None,
                &format!("{NAME}:source-item:{sku}:{code}:{quantity}:{status}"),
                json!({"sku": sku, "source_code": code, "quantity": quantity, "status": status}),
            );
        }
        Ok(mage_response(StatusCode::OK, &json!([])))
    })
    .await
}

async fn salable_quantity(State(sim): Sim, params: RawPathParams, headers: HeaderMap) -> Response {
    with_faults(&sim.faults.clone(), "inventory.salable-qty", || {
        let params = path_params(&params)?;
        sim.authorize(&headers, "Magento_InventorySalesApi::stock")?;
        let raw_stock = params.get("stock_id").map(String::as_str).unwrap_or_default();
        let stock = raw_stock.trim().parse::<u64>().map_err(|_| wrong_type(raw_stock, "int"))?;
        if stock != DEFAULT_STOCK {
            return Err(mage_error_with(
                StatusCode::NOT_FOUND,
                "The stock with \"%1\" ID wasn't found. Verify the ID and try again.",
                json!([stock.to_string()]),
            ));
        }
        let sku = params.get("sku").map(String::as_str).unwrap_or_default();
        sim.erp.product_by_sku(sku).ok_or_else(no_product)?;
        let (_, _, salable) = sim.erp.totals(sku);
        Ok(mage_response(StatusCode::OK, &json!(salable)))
    })
    .await
}

async fn get_product(State(sim): Sim, params: RawPathParams, headers: HeaderMap) -> Response {
    with_faults(&sim.faults.clone(), "products.get", || {
        let params = path_params(&params)?;
        sim.authorize(&headers, "Magento_Catalog::products")?;
        let sku = params.get("sku").map(String::as_str).unwrap_or_default();
        let product = sim.product_json(sku).ok_or_else(no_product)?;
        Ok(mage_response(StatusCode::OK, &product))
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sandbox::erp::LineRequest;
    use crate::sandbox::{Sandbox, SandboxOptions};

    struct Store {
        sandbox: Sandbox,
        /// `…/rest/default/V1`
        base: String,
        token: String,
        client: reqwest::Client,
    }

    impl Store {
        async fn start() -> Store {
            let sandbox =
                Sandbox::start(tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(), SandboxOptions::generated()).await.unwrap();
            crate::sandbox::erp::seed_amusement_catalogue(&sandbox.erp, "2026-12-10", "2027-02-01");
            let conn = sandbox.connection(NAME).unwrap();
            Store {
                base: format!("{}/rest/{}/V1", sandbox.base_url(NAME), conn.values["store_code"]),
                token: conn.secrets["access_token"].clone(),
                sandbox,
                client: reqwest::Client::new(),
            }
        }

        fn get(&self, path: &str) -> reqwest::RequestBuilder {
            self.client.get(format!("{}{path}", self.base)).bearer_auth(&self.token)
        }

        fn post(&self, path: &str, body: Value) -> reqwest::RequestBuilder {
            self.client.post(format!("{}{path}", self.base)).bearer_auth(&self.token).json(&body)
        }

        fn customer(&self, company: &str) -> u64 {
            self.sandbox.erp.customers().iter().find(|c| c.company == company).map(|c| c.id).unwrap()
        }

        async fn place(&self, company: &str, sku: &str, qty: i64) -> SimOrder {
            let (order, delivered) =
                self.sandbox.place_order(NAME, self.customer(company), &[LineRequest { sku: sku.into(), qty }]).await.unwrap();
            assert_eq!(delivered, 0, "orders are polled, nothing is delivered");
            order
        }
    }

    #[test]
    fn reads_search_criteria_like_php() {
        let q = "searchCriteria[filterGroups][0][filters][0][field]=status&searchCriteria[filterGroups][0][filters][0][value]=pending\
                 &searchCriteria[filterGroups][1][filters][0][field]=updated_at&searchCriteria[filterGroups][1][filters][0][value]=2025-03-01%2000:00:00\
                 &searchCriteria[filterGroups][1][filters][0][conditionType]=gt&searchCriteria[sortOrders][0][field]=entity_id\
                 &searchCriteria[sortOrders][0][direction]=DESC&searchCriteria[pageSize]=2&searchCriteria[currentPage]=1";
        let sc = SearchCriteria::parse(q).unwrap().unwrap();
        assert_eq!(sc.groups.len(), 2);
        assert_eq!((sc.groups[1][0].field.as_str(), sc.groups[1][0].condition.as_str()), ("updated_at", "gt"));
        assert_eq!(sc.echo["filter_groups"][0]["filters"][0]["condition_type"], "eq");
        assert_eq!(sc.echo["page_size"], 2);
        assert!(like("Pinball Wizards", "pin%wiz%"));
        assert!(!like("Pinball", "pin_"));
        assert_eq!(compare_text("2025-03-01T10:00:00", "2025-03-01 09:59:59"), CmpOrdering::Greater);
        assert_eq!(compare_text("2025-03-01 00:00:00", "2025-03-01"), CmpOrdering::Equal);
        assert_eq!(compare_column(&json!(10), "9"), Some(CmpOrdering::Greater));
        assert_eq!(compare_column(&json!("000001001"), "1001"), Some(CmpOrdering::Less), "a text column compares as text");
        assert!(SearchCriteria::parse("searchCriteria[pageSize]=ten").is_err());
        assert!(SearchCriteria::parse("").unwrap().is_none());
    }

    #[tokio::test]
    async fn token_search_and_paging() {
        let store = Store::start().await;
        let dana = store.place("Pinball Wizards Distribution", "PB-STERN-GODZ-PRO", 1).await;
        let sam = store.place("Retro Arcade Bar", "AC-SF2-CAB-2P", 1).await;
        let ines = store.place("FunZone Family Entertainment", "SP-COIN-MECH-EU", 2).await;

        let r = store.client.get(format!("{}/orders?searchCriteria[pageSize]=1", store.base)).send().await.unwrap();
        assert_eq!(r.status(), 401);
        assert_eq!(
            r.json::<Value>().await.unwrap(),
            json!({"message": "The consumer isn't authorized to access %resources.", "parameters": {"resources": "Magento_Sales::actions_view"}})
        );
        let r = store.client.get(format!("{}/orders/1", store.base)).bearer_auth("wrong").send().await.unwrap();
        assert_eq!(r.status(), 401);
        let r = store.get("/orders").send().await.unwrap();
        assert_eq!(r.status(), 400);
        assert_eq!(r.json::<Value>().await.unwrap()["parameters"]["fieldName"], "searchCriteria");

        // Wholesale or retail buyers (OR in one group), new ones (AND), newest first, one per page.
        let q = "searchCriteria[filter_groups][0][filters][0][field]=customer_group_id&searchCriteria[filter_groups][0][filters][0][value]=2\
                 &searchCriteria[filter_groups][0][filters][1][field]=customer_group_id&searchCriteria[filter_groups][0][filters][1][value]=3\
                 &searchCriteria[filter_groups][1][filters][0][field]=updated_at&searchCriteria[filter_groups][1][filters][0][value]=2000-01-01 00:00:00\
                 &searchCriteria[filter_groups][1][filters][0][condition_type]=gt\
                 &searchCriteria[sortOrders][0][field]=entity_id&searchCriteria[sortOrders][0][direction]=DESC&searchCriteria[pageSize]=1";
        let page: Value = store.get(&format!("/orders?{q}&searchCriteria[currentPage]=1")).send().await.unwrap().json().await.unwrap();
        assert_eq!(page["total_count"], 3);
        assert_eq!(page["items"][0]["entity_id"], ines.number);
        assert_eq!(page["search_criteria"]["page_size"], 1);
        let last: Value = store.get(&format!("/orders?{q}&searchCriteria[currentPage]=3")).send().await.unwrap().json().await.unwrap();
        assert_eq!(last["items"][0]["entity_id"], dana.number);
        let past: Value = store.get(&format!("/orders?{q}&searchCriteria[currentPage]=9")).send().await.unwrap().json().await.unwrap();
        assert_eq!(past["items"], last["items"], "past the last page the last page comes again");

        let o = &page["items"][0];
        assert_eq!(o["increment_id"], format!("{:09}", ines.number));
        assert_eq!((o["state"].as_str(), o["status"].as_str()), (Some("new"), Some("pending")));
        assert_eq!(o["customer_group_id"], 3);
        assert_eq!(o["items"][0]["sku"], "SP-COIN-MECH-EU");
        assert_eq!(o["items"][0]["qty_ordered"], 2.0);
        assert!(o["items"][0].get("parent_item_id").is_none());
        assert_eq!(o["created_at"].as_str().map(str::len), Some(19));

        let dist: Value = store
            .get("/orders?searchCriteria[filter_groups][0][filters][0][field]=customer_email&searchCriteria[filter_groups][0][filters][0][value]=%25pinball%25&searchCriteria[filter_groups][0][filters][0][condition_type]=like")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(dist["total_count"], 1);
        assert_eq!(dist["items"][0]["customer_group_id"], 2);
        let r = store.get("/orders?searchCriteria[filter_groups][0][filters][0][field]=colour&searchCriteria[filter_groups][0][filters][0][value]=red").send().await.unwrap();
        assert_eq!(r.status(), 500);
        assert!(r.json::<Value>().await.unwrap()["message"].as_str().unwrap().starts_with("Internal Error."));

        // The same order through `/rest/V1` and `/rest/all/V1`; an unknown store code has no route.
        let plain = format!("{}/rest/V1/orders/{}", store.sandbox.base_url(NAME), sam.number);
        let one: Value = store.client.get(&plain).bearer_auth(&store.token).send().await.unwrap().json().await.unwrap();
        assert_eq!(one["customer_email"], "sam@retroarcadebar.example");
        let all = format!("{}/rest/all/V1/orders/{}", store.sandbox.base_url(NAME), sam.number);
        assert_eq!(store.client.get(&all).bearer_auth(&store.token).send().await.unwrap().status(), 200);
        let r = store
            .client
            .get(format!("{}/rest/nowhere/V1/orders/1", store.sandbox.base_url(NAME)))
            .bearer_auth(&store.token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404);
        assert_eq!(r.json::<Value>().await.unwrap()["message"], "Request does not match any route.");
        for r in [store.get("/nothing").send().await.unwrap(), store.get(&format!("/orders/{}/hold", sam.number)).send().await.unwrap()] {
            assert_eq!(r.status(), 404);
            assert_eq!(r.json::<Value>().await.unwrap(), json!({"message": "Request does not match any route."}));
        }
        let r = store.get("/orders/999999").send().await.unwrap();
        assert_eq!(r.status(), 404);
        assert_eq!(
            r.json::<Value>().await.unwrap()["message"],
            "The entity that was requested doesn't exist. Verify the entity and try again."
        );
    }

    #[tokio::test]
    async fn hold_unhold_cancel_and_comments() {
        let store = Store::start().await;
        let order = store.place("Retro Arcade Bar", "AC-SF2-CAB-2P", 2).await;
        let id = order.number;
        assert_eq!(store.sandbox.erp.totals("AC-SF2-CAB-2P"), (2, 2, 0));

        let before: Value = store.get(&format!("/orders/{id}")).send().await.unwrap().json().await.unwrap();
        assert_eq!(store.post(&format!("/orders/{id}/hold"), json!({})).send().await.unwrap().json::<Value>().await.unwrap(), json!(true));
        let held: Value = store.get(&format!("/orders/{id}")).send().await.unwrap().json().await.unwrap();
        assert_eq!((held["state"].as_str(), held["status"].as_str()), (Some("holded"), Some("holded")));
        assert_eq!(held["hold_before_state"], "new");
        assert!(held["updated_at"].as_str() >= before["updated_at"].as_str());
        let again = store.post(&format!("/orders/{id}/hold"), json!({})).send().await.unwrap();
        assert_eq!(again.status(), 400);
        assert_eq!(again.json::<Value>().await.unwrap(), json!({"message": "A hold action is not available."}));
        assert_eq!(store.sandbox.erp.attempts()[&format!("magento:hold:{id}:1")], 2);
        // A held order cannot be cancelled.
        assert_eq!(
            store.post(&format!("/orders/{id}/cancel"), json!({})).send().await.unwrap().json::<Value>().await.unwrap(),
            json!(false)
        );

        let comment = json!({"statusHistory": {"comment": "Waitlisted: AC-SF2-CAB-2P short by 1", "is_customer_notified": 0,
                                                "is_visible_on_front": 0, "parent_id": id, "status": "holded"}});
        assert_eq!(
            store.post(&format!("/orders/{id}/comments"), comment.clone()).send().await.unwrap().json::<Value>().await.unwrap(),
            json!(true)
        );
        store.post(&format!("/orders/{id}/comments"), comment).send().await.unwrap();
        let r = store
            .post(&format!("/orders/{id}/comments"), json!({"statusHistory": {"comment": "go", "status": "processing"}}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400);
        let with_comment: Value = store.get(&format!("/orders/{id}")).send().await.unwrap().json().await.unwrap();
        let histories = with_comment["status_histories"].as_array().unwrap();
        assert_eq!(histories.len(), 1);
        assert_eq!(histories[0]["entity_name"], "order");
        assert_eq!(histories[0]["parent_id"], id);
        let listed: Value = store.get(&format!("/orders/{id}/comments")).send().await.unwrap().json().await.unwrap();
        assert_eq!(listed["total_count"], 1);

        assert_eq!(
            store.post(&format!("/orders/{id}/unhold"), json!({})).send().await.unwrap().json::<Value>().await.unwrap(),
            json!(true)
        );
        let r = store.post(&format!("/orders/{id}/unhold"), json!({})).send().await.unwrap();
        assert_eq!(r.json::<Value>().await.unwrap(), json!({"message": "You cannot remove the hold."}));
        let unheld: Value = store.get(&format!("/orders/{id}")).send().await.unwrap().json().await.unwrap();
        assert_eq!((unheld["state"].as_str(), unheld["status"].as_str()), (Some("new"), Some("pending")));

        assert_eq!(
            store.post(&format!("/orders/{id}/cancel"), json!({})).send().await.unwrap().json::<Value>().await.unwrap(),
            json!(true)
        );
        assert_eq!(
            store.post(&format!("/orders/{id}/cancel"), json!({})).send().await.unwrap().json::<Value>().await.unwrap(),
            json!(false)
        );
        assert_eq!(store.sandbox.erp.totals("AC-SF2-CAB-2P"), (2, 0, 2), "the reservation goes back once");
        let canceled: Value = store.get(&format!("/orders/{id}")).send().await.unwrap().json().await.unwrap();
        assert_eq!(canceled["state"], "canceled");
        assert_eq!(canceled["items"][0]["qty_canceled"], 2.0);
        let kinds: Vec<String> = store.sandbox.erp.effects().into_iter().filter(|e| e.order == Some(order.id)).map(|e| e.kind).collect();
        assert_eq!(kinds, ["order_hold", "order_comment", "order_unhold", "order_cancel"]);
    }

    #[tokio::test]
    async fn invoice_ship_and_customer_cancel_show_in_state() {
        let store = Store::start().await;
        let shipped = store.place("Retro Arcade Bar", "CC-CLAW-42", 1).await;
        let r = store.post(&format!("/order/{}/invoice", shipped.number), json!({"capture": true})).send().await.unwrap();
        assert_eq!(r.status(), 200);
        let processing: Value = store.get(&format!("/orders/{}", shipped.number)).send().await.unwrap().json().await.unwrap();
        assert_eq!((processing["state"].as_str(), processing["status"].as_str()), (Some("processing"), Some("processing")));
        let ok = store
            .post(
                &format!("/orders/{}/comments", shipped.number),
                json!({"statusHistory": {"comment": "approved", "status": "processing"}}),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(ok.status(), 200);
        store.sandbox.ship_order(shipped.id).await.unwrap();
        let complete: Value = store.get(&format!("/orders/{}", shipped.number)).send().await.unwrap().json().await.unwrap();
        assert_eq!(complete["state"], "complete");
        assert_eq!(complete["items"][0]["qty_shipped"], 1.0);

        let gone = store.place("Pinball Wizards Distribution", "CC-CLAW-42", 1).await;
        store.sandbox.cancel_order(gone.id).await.unwrap();
        let canceled: Value = store.get(&format!("/orders/{}", gone.number)).send().await.unwrap().json().await.unwrap();
        assert_eq!((canceled["state"].as_str(), canceled["status"].as_str()), (Some("canceled"), Some("canceled")));
        assert_eq!(
            store.post(&format!("/orders/{}/cancel", gone.number), json!({})).send().await.unwrap().json::<Value>().await.unwrap(),
            json!(false)
        );
        assert_eq!(store.sandbox.erp.totals("CC-CLAW-42"), (1, 0, 1));
    }

    #[tokio::test]
    async fn msi_source_items_salable_quantity_and_products() {
        let store = Store::start().await;
        store.place("Retro Arcade Bar", "BD-JAMMA-60IN1", 5).await;
        let q =
            "searchCriteria[filter_groups][0][filters][0][field]=sku&searchCriteria[filter_groups][0][filters][0][value]=BD-JAMMA-60IN1";
        let items: Value = store.get(&format!("/inventory/source-items?{q}")).send().await.unwrap().json().await.unwrap();
        assert_eq!(items["total_count"], 1);
        assert_eq!(items["items"][0], json!({"sku": "BD-JAMMA-60IN1", "source_code": "default", "quantity": 25, "status": 1}));
        assert_eq!(items["search_criteria"]["filter_groups"][0]["filters"][0]["field"], "sku");
        let salable: Value =
            store.get("/inventory/get-product-salable-quantity/BD-JAMMA-60IN1/1").send().await.unwrap().json().await.unwrap();
        assert_eq!(salable, json!(20), "salable quantity subtracts the reservation, the source quantity does not");

        let save = json!({"sourceItems": [{"sku": "BD-JAMMA-60IN1", "source_code": "default", "quantity": 30, "status": 1}]});
        assert_eq!(store.post("/inventory/source-items", save.clone()).send().await.unwrap().json::<Value>().await.unwrap(), json!([]));
        store.post("/inventory/source-items", save).send().await.unwrap();
        assert_eq!(store.sandbox.erp.totals("BD-JAMMA-60IN1"), (30, 5, 25));
        assert_eq!(store.sandbox.erp.effects().iter().filter(|e| e.kind == "source_item_save").count(), 1);
        let bad = store.post(
            "/inventory/source-items",
            json!({"sourceItems": [{"sku": "BD-JAMMA-60IN1", "source_code": "default", "quantity": 1, "status": 7}]}),
        );
        let bad: Value = bad.send().await.unwrap().json().await.unwrap();
        assert_eq!(bad["message"], "Validation Failed");
        assert_eq!(bad["errors"][0]["parameters"]["field"], "status");

        let mini: Value = store.get("/products/CC-CLAW-MINI").send().await.unwrap().json().await.unwrap();
        assert_eq!(mini["status"], 2, "a discontinued product is disabled");
        assert_eq!(mini["extension_attributes"]["stock_item"]["is_in_stock"], false);
        let jamma: Value = store.get("/products/BD-JAMMA-60IN1").send().await.unwrap().json().await.unwrap();
        assert_eq!(jamma["extension_attributes"]["stock_item"]["qty"], 30);
        let r = store.get("/products/NOPE").send().await.unwrap();
        assert_eq!(r.status(), 404);
        assert_eq!(
            r.json::<Value>().await.unwrap()["message"],
            "The product that was requested doesn't exist. Verify the product and try again."
        );
        let r = store.client.get(format!("{}/products/CC-CLAW-MINI", store.base)).send().await.unwrap();
        assert_eq!(r.json::<Value>().await.unwrap()["parameters"]["resources"], "Magento_Catalog::products");
    }

    #[tokio::test]
    async fn injected_failures_speak_magento() {
        let store = Store::start().await;
        store.sandbox.faults.set(vec![crate::sandbox::faults::FaultRule {
            platform: NAME.into(),
            operation: Some("inventory.salable-qty".into()),
            kind: FaultKind::Status { status: 503 },
            rate: 1.0,
            when: When::Before,
            limit: Some(1),
        }]);
        let r = store.get("/inventory/get-product-salable-quantity/BD-JAMMA-60IN1/1").send().await.unwrap();
        assert_eq!(r.status(), 503);
        assert!(r.json::<Value>().await.unwrap()["message"].as_str().unwrap().contains("Report ID: webapi-"));
        assert_eq!(store.get("/inventory/get-product-salable-quantity/BD-JAMMA-60IN1/1").send().await.unwrap().status(), 200);
    }
}
