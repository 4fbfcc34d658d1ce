//! SAP Business One Service Layer, simulated: the `/b1s/v1` OData (v3-style
//! JSON) API over the mock ERP. Sales orders are polled; the platform sends
//! no webhooks.
//!
//! What it imitates:
//! - `POST /b1s/v1/Login` with `CompanyDB`/`UserName`/`Password`, answering
//!   the `B1Sessions` element and two cookies, `B1SESSION` and the load
//!   balancer's `ROUTEID`; every other call needs both cookies. Sessions end
//!   after `SessionTimeout` idle minutes (counted from the last call) or at
//!   `POST /b1s/v1/Logout` (204).
//! - `GET /b1s/v1/Orders` with `$filter` (eq ne gt ge lt le, and/or/not,
//!   parentheses, `startswith`/`endswith`/`contains`/`substringof`),
//!   `$select`, `$orderby`, `$top`, `$skip` and `$inlinecount=allpages`;
//!   pages of 20 unless `Prefer: odata.maxpagesize=N` (or `B1S-PageSize: N`)
//!   asks otherwise, `0` meaning one page; `odata.nextLink` relative to
//!   `/b1s/v1/`, repeating the request's options with the next `$skip`.
//! - `GET|PATCH /b1s/v1/Orders(n)`, `POST /b1s/v1/Orders(n)/Cancel|Close`.
//! - `GET /b1s/v1/Items('SKU')` and `GET /b1s/v1/Items?$filter=…` with
//!   per-warehouse `ItemWarehouseInfoCollection`.
//! - `POST /b1s/v1/InventoryGenEntries|InventoryGenExits` (201 with the
//!   document, 204 with `Prefer: return-no-content`).
//! - Errors as `{"error":{"code":…,"message":{"lang":"en-us","value":…}}}`.
//!
//! Ids: `DocEntry` is the ERP order number, `DocNum` the number plus 10000,
//! `CardCode` is `C` + the ERP customer id, warehouse codes are `01`, `02`…
//! in ERP location order.
//!
//! Stock: an open sales order commits its units as soon as it exists, which is
//! what the ERP does when an order is placed. `Cancel` and `Close` give the
//! units back; a closed order is also marked cancelled in the ERP (it will not
//! ship). A cancel or shipment made through the control API shows as
//! `Cancelled: tYES` / `DocumentStatus: bost_Close` and moves
//! `UpdateDate`/`UpdateTime` to the moment the change is first seen.
//!
//! Fault operations: `Login`, `Logout`, `Orders.list`, `Orders.get`,
//! `Orders.update`, `Orders.cancel`, `Orders.close`, `Items.list`,
//! `Items.get`, `InventoryGenEntries.create`, `InventoryGenExits.create`.
//!
//! Choices where the public material was not conclusive:
//! - dates are answered as `YYYY-MM-DD` (v1) and compared on that form in
//!   filters; `$filter` takes plain string literals (`'2026-03-01'`), not
//!   `datetime'…'`;
//! - a failed login answers 401 `-304 "Fail to get DB Credentials from SLD"`;
//!   a body that is not JSON answers 400 `-1000`;
//! - an unknown property in `$select`/`$orderby`/`PATCH` answers 400 `-1000
//!   "Property 'X' of 'Document' is invalid"` (`'Item'` for items), in
//!   `$filter` 400 `201 "Property 'X' is invalid"`; a malformed filter 400
//!   `-1000 "Invalid filter expression"`;
//! - `Cancel`/`Close` of a document that is no longer open answers 400
//!   `-5002 "Document is already closed"`;
//! - inventory lines: errors `-10` in B1's `[DocumentLines.Field][line: n]`
//!   style; quantities must be whole units; a goods issue may not take stock
//!   below zero (`Quantity falls into negative inventory`); an identical
//!   document body posted again counts once and answers the first document;
//! - `PATCH` changes `Comments`, `NumAtCard` and the user-defined field
//!   `U_SyncDecision`; other existing properties are accepted and left as
//!   they are; collections are not merged;
//! - `$top` larger than the page size is served page by page, the next link
//!   carrying the remaining `$top`; unknown `$` options are ignored;
//! - `+` in the query string is read as a space.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, post};
use serde_json::{Map, Value, json};
use time::OffsetDateTime;

use crate::sandbox::erp::{Erp, OrderState, SimOrder};
use crate::sandbox::faults::{self, Faults, When};
use crate::sandbox::platforms::{Delivery, OrderEvent, SimConnection, SimContext, SimPlatform};

const NAME: &str = "sap-business-one";
const SERVICE_LAYER_VERSION: &str = "1000190";
const ROUTE_ID: &str = ".node1";
const DEFAULT_PAGE_SIZE: usize = 20;
const DEFAULT_SESSION_MINUTES: u64 = 30;

/// The company database and user the simulated Service Layer accepts.
#[derive(Debug, Clone)]
pub struct SapBusinessOneCredentials {
    pub company_db: String,
    pub username: String,
    pub password: String,
}

pub struct SapBusinessOneSim {
    pub erp: Arc<Erp>,
    faults: Arc<Faults>,
    pub creds: SapBusinessOneCredentials,
    /// Open sessions and when each was last used.
    sessions: Mutex<HashMap<String, Instant>>,
    session_timeout_minutes: AtomicU64,
    logins: AtomicU64,
    inventory_documents: Mutex<InventoryDocuments>,
}

/// Goods receipts and issues created so far, by the natural key of their body.
#[derive(Default)]
struct InventoryDocuments {
    last_entry: u64,
    by_key: HashMap<String, Value>,
}

/// Properties of a sales order document (the `Document` type).
const DOCUMENT_PROPERTIES: &[&str] = &[
    "DocEntry",
    "DocNum",
    "DocType",
    "DocDate",
    "DocDueDate",
    "TaxDate",
    "CreationDate",
    "CardCode",
    "CardName",
    "NumAtCard",
    "DocTotal",
    "DocCurrency",
    "DocumentStatus",
    "Cancelled",
    "Comments",
    "UpdateDate",
    "UpdateTime",
    "U_SyncDecision",
    "DocumentLines",
];

/// Properties of an item (the `Item` type).
const ITEM_PROPERTIES: &[&str] = &[
    "ItemCode",
    "ItemName",
    "ItemType",
    "InventoryItem",
    "SalesItem",
    "PurchaseItem",
    "QuantityOnStock",
    "QuantityOrderedFromVendors",
    "QuantityOrderedByCustomers",
    "Valid",
    "Frozen",
    "ItemWarehouseInfoCollection",
];

/// Document properties holding a date (compared on their `YYYY-MM-DD` form).
const DATE_PROPERTIES: &[&str] = &["DocDate", "DocDueDate", "TaxDate", "CreationDate", "UpdateDate"];

fn sl_error(status: StatusCode, code: i64, message: &str) -> Response {
    (status, axum::Json(json!({"error": {"code": code, "message": {"lang": "en-us", "value": message}}}))).into_response()
}

/// An error answer not yet rendered.
struct SlError {
    status: StatusCode,
    code: i64,
    message: String,
}

impl SlError {
    fn new(status: StatusCode, code: i64, message: impl Into<String>) -> Self {
        SlError { status, code, message: message.into() }
    }

    fn invalid_session() -> Self {
        SlError::new(StatusCode::UNAUTHORIZED, 301, "Invalid session or session already timeout.")
    }

    fn invalid_property(property: &str, type_name: &str) -> Self {
        SlError::new(StatusCode::BAD_REQUEST, -1000, format!("Property '{property}' of '{type_name}' is invalid"))
    }
}

impl IntoResponse for SlError {
    fn into_response(self) -> Response {
        sl_error(self.status, self.code, &self.message)
    }
}

fn server_error_body() -> Value {
    json!({"error": {"code": -1, "message": {"lang": "en-us", "value": "Internal error (-1) occurred"}}})
}

fn no_matching_records() -> Response {
    sl_error(StatusCode::NOT_FOUND, -2028, "No matching records found (ODBC -2028)")
}

fn line_error(message: &str) -> Response {
    sl_error(StatusCode::BAD_REQUEST, -10, message)
}

fn no_content() -> Response {
    StatusCode::NO_CONTENT.into_response()
}

fn ymd(t: OffsetDateTime) -> String {
    format!("{:04}-{:02}-{:02}", t.year(), u8::from(t.month()), t.day())
}

fn hms(t: OffsetDateTime) -> String {
    format!("{:02}:{:02}:{:02}", t.hour(), t.minute(), t.second())
}

fn instant_of(s: &str) -> OffsetDateTime {
    crate::clock::parse_instant(s).unwrap_or_else(OffsetDateTime::now_utc)
}

fn now_rfc3339() -> String {
    crate::clock::format_rfc3339(OffsetDateTime::now_utc())
}

/// `B1SESSION` and `ROUTEID` from the request's cookies.
fn session_cookies(headers: &HeaderMap) -> (Option<String>, Option<String>) {
    let (mut session, mut route) = (None, None);
    for value in headers.get_all("cookie") {
        let Ok(text) = value.to_str() else { continue };
        for pair in text.split(';') {
            match pair.trim().split_once('=') {
                Some(("B1SESSION", v)) => session = Some(v.trim().to_string()),
                Some(("ROUTEID", v)) => route = Some(v.trim().to_string()),
                _ => {}
            }
        }
    }
    (session, route)
}

/// Where this Service Layer is reached, for `odata.metadata` and `Location`.
fn service_root(headers: &HeaderMap) -> String {
    let host = headers.get("host").and_then(|h| h.to_str().ok()).unwrap_or("localhost");
    format!("http://{host}/{NAME}/b1s/v1")
}

/// A key between parentheses: `Orders(812)`, `Items('A-1')`.
#[derive(Debug, Clone, PartialEq)]
enum Key {
    Number(i64),
    Text(String),
}

/// `Orders(812)` → (`Orders`, Some(812)); `Orders` → (`Orders`, None).
fn parse_resource(segment: &str) -> Option<(String, Option<Key>)> {
    let Some(open) = segment.find('(') else {
        return Some((segment.to_string(), None));
    };
    let set = segment[..open].to_string();
    let inner = segment[open + 1..].strip_suffix(')')?;
    let key = if let Some(quoted) = inner.strip_prefix('\'').and_then(|s| s.strip_suffix('\'')) {
        Key::Text(quoted.replace("''", "'"))
    } else {
        Key::Number(inner.trim().parse().ok()?)
    };
    Some((set, Some(key)))
}

fn operation_name(method: &Method, set: &str, key: Option<&Key>, action: Option<&str>) -> String {
    let verb = match (method.as_str(), key, action) {
        ("POST", Some(_), Some(action)) => action.to_ascii_lowercase(),
        ("GET", None, _) => "list".into(),
        ("GET", Some(_), _) => "get".into(),
        ("PATCH", _, _) => "update".into(),
        ("POST", None, _) => "create".into(),
        (other, _, _) => other.to_ascii_lowercase(),
    };
    format!("{set}.{verb}")
}

impl SapBusinessOneSim {
    pub fn new(ctx: &SimContext) -> Arc<Self> {
        Arc::new(SapBusinessOneSim {
            erp: ctx.erp.clone(),
            faults: ctx.faults.clone(),
            creds: SapBusinessOneCredentials {
                company_db: "SBODEMOUS".into(),
                username: "manager".into(),
                password: crate::sandbox::random_hex(12),
            },
            sessions: Mutex::new(HashMap::new()),
            session_timeout_minutes: AtomicU64::new(DEFAULT_SESSION_MINUTES),
            logins: AtomicU64::new(0),
            inventory_documents: Mutex::new(InventoryDocuments::default()),
        })
    }

    /// End every session, as a Service Layer restart would.
    pub fn expire_sessions(&self) {
        self.sessions.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }

    /// Successful logins so far.
    pub fn logins(&self) -> u64 {
        self.logins.load(Ordering::Relaxed)
    }

    /// Idle minutes before a session ends (0: every session is over by its next call).
    pub fn set_session_timeout_minutes(&self, minutes: u64) {
        self.session_timeout_minutes.store(minutes, Ordering::Relaxed);
    }

    async fn with_faults(&self, operation: &str, answer: impl FnOnce() -> Response) -> Response {
        let fault = self.faults.pick(NAME, operation);
        if let Some((kind, When::Before)) = &fault {
            if let Some(r) = faults::before(kind, &server_error_body()).await {
                return r;
            }
        }
        let real = answer();
        match &fault {
            Some((kind, When::After)) => faults::after(kind, real, &server_error_body()).await,
            _ => real,
        }
    }

    /// A valid session (it is used now, so its idle time starts again) or the 401.
    fn check_session(&self, headers: &HeaderMap) -> Result<(), SlError> {
        let (Some(session), Some(route)) = session_cookies(headers) else {
            return Err(SlError::invalid_session());
        };
        if route != ROUTE_ID {
            return Err(SlError::invalid_session());
        }
        let timeout = Duration::from_secs(self.session_timeout_minutes.load(Ordering::Relaxed) * 60);
        let mut sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        match sessions.get_mut(&session) {
            Some(last_used) if last_used.elapsed() < timeout => {
                *last_used = Instant::now();
                Ok(())
            }
            Some(_) => {
                sessions.remove(&session);
                Err(SlError::invalid_session())
            }
            None => Err(SlError::invalid_session()),
        }
    }

    fn login(&self, headers: &HeaderMap, body: &[u8]) -> Response {
        let Ok(Value::Object(req)) = serde_json::from_slice::<Value>(body) else {
            return sl_error(StatusCode::BAD_REQUEST, -1000, "Invalid JSON format");
        };
        let field = |name: &str| req.get(name).and_then(Value::as_str).unwrap_or_default();
        if field("CompanyDB") != self.creds.company_db
            || field("UserName") != self.creds.username
            || field("Password") != self.creds.password
        {
            return sl_error(StatusCode::UNAUTHORIZED, -304, "Fail to get DB Credentials from SLD");
        }
        let session = crate::sandbox::uuid_like();
        self.sessions.lock().unwrap_or_else(|p| p.into_inner()).insert(session.clone(), Instant::now());
        self.logins.fetch_add(1, Ordering::Relaxed);
        let timeout = self.session_timeout_minutes.load(Ordering::Relaxed);
        let mut r = axum::Json(json!({
            "odata.metadata": format!("{}/$metadata#B1Sessions/@Element", service_root(headers)),
            "SessionId": session, "Version": SERVICE_LAYER_VERSION, "SessionTimeout": timeout,
        }))
        .into_response();
        for cookie in [format!("B1SESSION={session}; HttpOnly"), format!("ROUTEID={ROUTE_ID}; path=/b1s")] {
            if let Ok(v) = HeaderValue::from_str(&cookie) {
                r.headers_mut().append("set-cookie", v);
            }
        }
        r
    }

    fn logout(&self, headers: &HeaderMap) -> Response {
        if let Err(r) = self.check_session(headers) {
            return r.into_response();
        }
        if let (Some(session), _) = session_cookies(headers) {
            self.sessions.lock().unwrap_or_else(|p| p.into_inner()).remove(&session);
        }
        no_content()
    }

    // ---- sales orders ----

    /// This platform's orders, with status changes made elsewhere (the control
    /// API) stamped into `UpdateDate`/`UpdateTime` the first time they are seen.
    fn orders(&self) -> Vec<SimOrder> {
        let now = now_rfc3339();
        self.erp
            .orders()
            .into_iter()
            .filter(|o| o.platform == NAME)
            .filter_map(|o| {
                let status = status_of(&o);
                if o.extra.get("sap_status").and_then(Value::as_str) == Some(status) {
                    return Some(o);
                }
                self.erp.update_order(o.id, |o| {
                    if o.extra.contains_key("sap_status") || status != "open" {
                        o.extra.insert("sap_updated".into(), json!(now));
                    }
                    o.extra.insert("sap_status".into(), json!(status));
                    o.clone()
                })
            })
            .collect()
    }

    fn order_by_entry(&self, entry: i64) -> Option<SimOrder> {
        self.orders().into_iter().find(|o| o.number as i64 == entry)
    }

    fn warehouse_codes(&self) -> HashMap<u64, String> {
        self.erp.locations().iter().enumerate().map(|(i, l)| (l.id, format!("{:02}", i + 1))).collect()
    }

    fn location_by_code(&self, code: &str) -> Option<u64> {
        self.warehouse_codes().into_iter().find(|(_, c)| c == code).map(|(id, _)| id)
    }

    /// The sales order as the Service Layer answers it.
    fn document(&self, o: &SimOrder, warehouses: &HashMap<u64, String>) -> Value {
        let created = instant_of(&o.created_at);
        let updated = instant_of(o.extra.get("sap_updated").and_then(Value::as_str).unwrap_or(&o.created_at));
        let closed = status_of(o) != "open";
        let status = if closed { "bost_Close" } else { "bost_Open" };
        let cancelled = o.state == OrderState::Cancelled && !o.extra.contains_key("sap_closed");
        let warehouse = warehouses.get(&o.location).cloned().unwrap_or_else(|| "01".into());
        let mut total = 0.0;
        let lines: Vec<Value> = o
            .lines
            .iter()
            .enumerate()
            .map(|(i, l)| {
                let product = self.erp.product_by_sku(&l.sku);
                let price: f64 = product.as_ref().and_then(|p| p.price.parse().ok()).unwrap_or(0.0);
                let quantity = l.qty as f64;
                total += price * quantity;
                json!({
                    "LineNum": i, "ItemCode": l.sku, "ItemDescription": product.map_or_else(|| l.sku.clone(), |p| p.title),
                    "Quantity": quantity, "UnitPrice": price, "Price": price, "LineTotal": price * quantity,
                    "WarehouseCode": warehouse, "LineStatus": status,
                    "RemainingOpenQuantity": if closed { 0.0 } else { quantity },
                })
            })
            .collect();
        let c = &o.customer;
        let card_name = if c.company.is_empty() { format!("{} {}", c.first_name, c.last_name) } else { c.company.clone() };
        json!({
            "DocEntry": o.number, "DocNum": o.number + 10_000, "DocType": "dDocument_Items",
            "DocDate": ymd(created), "DocDueDate": ymd(created + time::Duration::days(7)), "TaxDate": ymd(created), "CreationDate": ymd(created),
            "CardCode": format!("C{}", c.id), "CardName": card_name,
            "NumAtCard": o.extra.get("sap_NumAtCard").cloned().unwrap_or(Value::Null),
            "DocTotal": total, "DocCurrency": "$",
            "DocumentStatus": status, "Cancelled": if cancelled { "tYES" } else { "tNO" },
            "Comments": o.extra.get("sap_Comments").cloned().unwrap_or(Value::Null),
            "UpdateDate": ymd(updated), "UpdateTime": hms(updated),
            "U_SyncDecision": o.extra.get("sap_U_SyncDecision").cloned().unwrap_or(Value::Null),
            "DocumentLines": lines,
        })
    }

    fn list_orders(&self, query: &Query, headers: &HeaderMap) -> Response {
        let warehouses = self.warehouse_codes();
        let filter = match query.filter(DOCUMENT_PROPERTIES) {
            Ok(f) => f,
            Err(r) => return r.into_response(),
        };
        let documents: Vec<Value> = self.orders().iter().map(|o| self.document(o, &warehouses)).collect();
        collection(query, headers, "Orders", "Document", DOCUMENT_PROPERTIES, "DocEntry", filter.as_ref(), documents)
    }

    fn get_order(&self, entry: i64, query: &Query, headers: &HeaderMap) -> Response {
        let Some(order) = self.order_by_entry(entry) else {
            return no_matching_records();
        };
        let document = self.document(&order, &self.warehouse_codes());
        element(query, headers, "Orders", "Document", DOCUMENT_PROPERTIES, document)
    }

    fn patch_order(&self, entry: i64, body: &[u8]) -> Response {
        let Ok(Value::Object(changes)) = serde_json::from_slice::<Value>(body) else {
            return sl_error(StatusCode::BAD_REQUEST, -1000, "Invalid JSON format");
        };
        let Some(order) = self.order_by_entry(entry) else {
            return no_matching_records();
        };
        for (property, value) in &changes {
            if !DOCUMENT_PROPERTIES.contains(&property.as_str()) {
                return SlError::invalid_property(property, "Document").into_response();
            }
            let writable = matches!(property.as_str(), "Comments" | "NumAtCard" | "U_SyncDecision");
            if writable && !(value.is_string() || value.is_null()) {
                return sl_error(StatusCode::BAD_REQUEST, -1000, &format!("Invalid value for property '{property}'"));
            }
        }
        let key = format!("{NAME}:patch:{entry}:{}", Value::Object(changes.clone()));
        let first_time = self.erp.effect(NAME, "order_update", Some(order.id), &key, Value::Object(changes.clone()));
        let now = now_rfc3339();
        self.erp.update_order(order.id, |o| {
            for property in ["Comments", "NumAtCard", "U_SyncDecision"] {
                if let Some(value) = changes.get(property) {
                    o.extra.insert(format!("sap_{property}"), value.clone());
                }
            }
            if first_time {
                if let Some(comment) = changes.get("Comments").and_then(Value::as_str) {
                    o.notes.push(comment.to_string());
                }
            }
            o.extra.insert("sap_updated".into(), json!(now));
        });
        no_content()
    }

    /// `Cancel` or `Close`: only an open document; its committed units go back.
    fn end_order(&self, entry: i64, action: &str) -> Response {
        let Some(order) = self.order_by_entry(entry) else {
            return no_matching_records();
        };
        let kind = if action == "Cancel" { "order_cancel" } else { "order_close" };
        let key = format!("{NAME}:{}:{entry}", action.to_ascii_lowercase());
        if status_of(&order) != "open" {
            self.erp.effect(NAME, kind, Some(order.id), &key, Value::Null);
            return sl_error(StatusCode::BAD_REQUEST, -5002, "Document is already closed");
        }
        if self.erp.effect(NAME, kind, Some(order.id), &key, json!({"DocEntry": entry})) {
            let now = now_rfc3339();
            let status = if action == "Cancel" { "cancelled" } else { "closed" };
            self.erp.update_order(order.id, |o| {
                o.state = OrderState::Cancelled;
                o.cancel_reason = Some(if action == "Cancel" { "CANCELLED".into() } else { "CLOSED".into() });
                o.extra.insert("cancelled_at".into(), json!(now));
                if action == "Close" {
                    o.extra.insert("sap_closed".into(), json!(true));
                }
                o.extra.insert("sap_status".into(), json!(status));
                o.extra.insert("sap_updated".into(), json!(now));
            });
            self.erp.release_commitment(order.id);
        }
        no_content()
    }

    // ---- items ----

    fn item(&self, sku: &str, warehouses: &[(u64, String)]) -> Option<Value> {
        let product = self.erp.product_by_sku(sku)?;
        let levels = self.erp.levels(sku);
        let mut totals = (0.0, 0.0, 0.0);
        let per_warehouse: Vec<Value> = warehouses
            .iter()
            .map(|(location, code)| {
                let level = levels.iter().find(|(l, _)| l.id == *location).map(|(_, l)| l.clone()).unwrap_or_default();
                let (on_hand, committed, incoming) = (level.on_hand as f64, level.committed as f64, level.incoming as f64);
                totals = (totals.0 + on_hand, totals.1 + committed, totals.2 + incoming);
                json!({"ItemCode": product.sku, "WarehouseCode": code, "InStock": on_hand, "Committed": committed, "Ordered": incoming,
                       "MinimalStock": 0.0, "MaximalStock": 0.0, "Locked": "tNO"})
            })
            .collect();
        let yes_no = |b: bool| if b { "tYES" } else { "tNO" };
        Some(json!({
            "ItemCode": product.sku, "ItemName": product.title, "ItemType": "itItems",
            "InventoryItem": "tYES", "SalesItem": yes_no(!product.discontinued), "PurchaseItem": "tYES",
            "QuantityOnStock": totals.0, "QuantityOrderedByCustomers": totals.1, "QuantityOrderedFromVendors": totals.2,
            "Valid": yes_no(!product.discontinued), "Frozen": yes_no(product.discontinued),
            "ItemWarehouseInfoCollection": per_warehouse,
        }))
    }

    fn ordered_warehouses(&self) -> Vec<(u64, String)> {
        self.erp.locations().iter().enumerate().map(|(i, l)| (l.id, format!("{:02}", i + 1))).collect()
    }

    fn get_item(&self, sku: &str, query: &Query, headers: &HeaderMap) -> Response {
        match self.item(sku, &self.ordered_warehouses()) {
            Some(item) => element(query, headers, "Items", "Item", ITEM_PROPERTIES, item),
            None => no_matching_records(),
        }
    }

    fn list_items(&self, query: &Query, headers: &HeaderMap) -> Response {
        let filter = match query.filter(ITEM_PROPERTIES) {
            Ok(f) => f,
            Err(r) => return r.into_response(),
        };
        let warehouses = self.ordered_warehouses();
        // `ItemCode eq 'A' or ItemCode eq 'B'` names its items: no need to build the catalogue.
        let skus: Vec<String> = match filter.as_ref().and_then(item_codes_named) {
            Some(codes) => codes,
            None => self.erp.products().into_iter().map(|p| p.sku).collect(),
        };
        let items: Vec<Value> = skus.iter().filter_map(|sku| self.item(sku, &warehouses)).collect();
        collection(query, headers, "Items", "Item", ITEM_PROPERTIES, "ItemCode", filter.as_ref(), items)
    }

    // ---- inventory documents ----

    fn create_inventory_document(&self, set: &str, headers: &HeaderMap, body: &[u8]) -> Response {
        let receipt = set == "InventoryGenEntries";
        let Ok(Value::Object(doc)) = serde_json::from_slice::<Value>(body) else {
            return sl_error(StatusCode::BAD_REQUEST, -1000, "Invalid JSON format");
        };
        let lines = doc.get("DocumentLines").and_then(Value::as_array).cloned().unwrap_or_default();
        if lines.is_empty() {
            return sl_error(StatusCode::BAD_REQUEST, -5002, "Document must contain at least one row");
        }
        // Validate every line before anything moves.
        let mut moves = Vec::new();
        for (i, line) in lines.iter().enumerate() {
            let n = i + 1;
            let Some(sku) = line.get("ItemCode").and_then(Value::as_str).filter(|s| !s.is_empty()) else {
                return line_error(&format!("Item number is missing; specify an item number [DocumentLines.ItemCode][line: {n}]"));
            };
            let Some(product) = self.erp.product_by_sku(sku) else {
                return line_error(&format!("Invalid item code [DocumentLines.ItemCode][line: {n}] , '{sku}'"));
            };
            let code = line.get("WarehouseCode").and_then(Value::as_str).unwrap_or("01");
            let Some(location) = self.location_by_code(code) else {
                return line_error(&format!("Invalid warehouse code [DocumentLines.WarehouseCode][line: {n}] , '{code}'"));
            };
            let quantity = line.get("Quantity").and_then(Value::as_f64).unwrap_or(0.0);
            if quantity <= 0.0 || quantity.fract() != 0.0 {
                return line_error(&format!("Quantity must be a positive whole number [DocumentLines.Quantity][line: {n}]"));
            }
            moves.push((product, location, code.to_string(), quantity as i64));
        }
        if !receipt {
            let mut taken: HashMap<(String, u64), i64> = HashMap::new();
            for (i, (product, location, _, quantity)) in moves.iter().enumerate() {
                let want = taken.entry((product.sku.clone(), *location)).or_insert(0);
                *want += quantity;
                let on_hand = self.erp.levels(&product.sku).iter().find(|(l, _)| l.id == *location).map_or(0, |(_, l)| l.on_hand);
                if on_hand < *want {
                    return line_error(&format!("Quantity falls into negative inventory [DocumentLines.ItemCode][line: {}]", i + 1));
                }
            }
        }
        let root = service_root(headers);
        let key = format!("{NAME}:{set}:{}", Value::Object(doc.clone()));
        let mut documents = self.inventory_documents.lock().unwrap_or_else(|p| p.into_inner());
        let kind = if receipt { "goods_receipt" } else { "goods_issue" };
        let created = if self.erp.effect(NAME, kind, None, &key, Value::Object(doc.clone())) {
            for (product, location, _, quantity) in &moves {
                self.erp.adjust_on_hand(&product.sku, *location, if receipt { *quantity } else { -quantity });
            }
            documents.last_entry += 1;
            let entry = documents.last_entry;
            let today = ymd(OffsetDateTime::now_utc());
            let date = doc.get("DocDate").and_then(Value::as_str).map_or(today, |d| d.chars().take(10).collect());
            let document_lines: Vec<Value> = moves
                .iter()
                .enumerate()
                .map(|(i, (p, _, code, q))| {
                    json!({"LineNum": i, "ItemCode": p.sku, "ItemDescription": p.title, "Quantity": *q as f64, "WarehouseCode": code})
                })
                .collect();
            let created = json!({
                "DocEntry": entry, "DocNum": entry, "DocType": "dDocument_Items",
                "DocObjectCode": if receipt { "oInventoryGenEntry" } else { "oInventoryGenExit" },
                "DocDate": date, "DocDueDate": date,
                "Comments": doc.get("Comments").cloned().unwrap_or(Value::Null),
                "DocumentLines": document_lines,
            });
            documents.by_key.insert(key, created.clone());
            created
        } else {
            match documents.by_key.get(&key) {
                Some(previous) => previous.clone(),
                None => return sl_error(StatusCode::INTERNAL_SERVER_ERROR, -1, "Internal error (-1) occurred"),
            }
        };
        drop(documents);
        let entry = created.get("DocEntry").and_then(Value::as_u64).unwrap_or_default();
        let location = format!("{root}/{set}({entry})");
        let mut r = if prefers(headers, "return-no-content") {
            no_content()
        } else {
            let mut body = created;
            if let Value::Object(m) = &mut body {
                m.insert("odata.metadata".into(), json!(format!("{root}/$metadata#{set}/@Element")));
            }
            (StatusCode::CREATED, axum::Json(body)).into_response()
        };
        if let Ok(v) = HeaderValue::from_str(&location) {
            r.headers_mut().insert("location", v);
        }
        r
    }

    fn answer(&self, method: &Method, resource: &str, action: Option<&str>, query: &Query, headers: &HeaderMap, body: &[u8]) -> Response {
        if let Err(r) = self.check_session(headers) {
            return r.into_response();
        }
        let Some((set, key)) = parse_resource(resource) else {
            return sl_error(StatusCode::BAD_REQUEST, -1000, &format!("Invalid key in segment '{resource}'"));
        };
        let key_text = |k: &Key| match k {
            Key::Text(s) => s.clone(),
            Key::Number(n) => n.to_string(),
        };
        match (set.as_str(), key.as_ref(), action, method.as_str()) {
            ("Orders", None, None, "GET") => self.list_orders(query, headers),
            ("Orders", Some(Key::Number(n)), None, "GET") => self.get_order(*n, query, headers),
            ("Orders", Some(Key::Number(n)), None, "PATCH") => self.patch_order(*n, body),
            ("Orders", Some(Key::Number(n)), Some(a @ ("Cancel" | "Close")), "POST") => self.end_order(*n, a),
            ("Orders", Some(Key::Text(_)), _, _) => no_matching_records(),
            ("Items", None, None, "GET") => self.list_items(query, headers),
            ("Items", Some(k), None, "GET") => self.get_item(&key_text(k), query, headers),
            ("InventoryGenEntries" | "InventoryGenExits", None, None, "POST") => self.create_inventory_document(&set, headers, body),
            (_, _, Some(a), _) => sl_error(StatusCode::NOT_FOUND, -1, &format!("Resource not found for the segment '{a}'")),
            ("Orders" | "Items" | "InventoryGenEntries" | "InventoryGenExits", _, _, _) => {
                sl_error(StatusCode::METHOD_NOT_ALLOWED, -1, &format!("The HTTP method {method} is not allowed on this resource"))
            }
            _ => sl_error(StatusCode::NOT_FOUND, -1, &format!("Resource not found for the segment '{set}'")),
        }
    }
}

/// `open`, `cancelled`, `closed` (closed by the Service Layer) or `delivered`.
fn status_of(o: &SimOrder) -> &'static str {
    if o.extra.contains_key("sap_closed") {
        "closed"
    } else if o.state == OrderState::Cancelled {
        "cancelled"
    } else if o.extra.contains_key("fulfilled") {
        "delivered"
    } else {
        "open"
    }
}

/// Whether `Prefer` asks for `wanted` (e.g. `return-no-content`).
fn prefers(headers: &HeaderMap, wanted: &str) -> bool {
    preferences(headers).iter().any(|(k, _)| k == wanted)
}

fn preferences(headers: &HeaderMap) -> Vec<(String, String)> {
    headers
        .get_all("prefer")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(',').map(str::to_string).collect::<Vec<_>>())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((&p, ""));
            (k.trim().to_ascii_lowercase(), v.trim().trim_matches('"').to_string())
        })
        .collect()
}

/// Rows per page: `Prefer: odata.maxpagesize=N`, else `B1S-PageSize: N`, else 20; 0 = all.
fn page_size(headers: &HeaderMap) -> usize {
    let from_prefer = preferences(headers).into_iter().find(|(k, _)| k == "odata.maxpagesize").and_then(|(_, v)| v.parse::<usize>().ok());
    let from_header = headers.get("b1s-pagesize").and_then(|v| v.to_str().ok()).and_then(|v| v.trim().parse::<usize>().ok());
    match from_prefer.or(from_header).unwrap_or(DEFAULT_PAGE_SIZE) {
        0 => usize::MAX,
        n => n,
    }
}

// ---- OData query options ----

/// The query options of a request, decoded, in the order they came.
struct Query {
    options: Vec<(String, String)>,
}

impl Query {
    fn parse(raw: Option<&str>) -> Query {
        let options = raw
            .unwrap_or("")
            .split('&')
            .filter(|p| !p.is_empty())
            .map(|p| {
                let (k, v) = p.split_once('=').unwrap_or((p, ""));
                (percent_decode(k), percent_decode(v))
            })
            .collect();
        Query { options }
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.options.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    fn number(&self, name: &str) -> Result<Option<usize>, SlError> {
        match self.get(name) {
            None => Ok(None),
            Some(v) => v
                .trim()
                .parse()
                .map(Some)
                .map_err(|_| SlError::new(StatusCode::BAD_REQUEST, -1000, format!("Invalid value '{v}' for query option {name}"))),
        }
    }

    /// `$select` as a list, checked against the type's properties.
    fn select(&self, properties: &[&str], type_name: &str) -> Result<Option<Vec<String>>, SlError> {
        let Some(select) = self.get("$select").filter(|s| !s.trim().is_empty()) else {
            return Ok(None);
        };
        let names: Vec<String> = select.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect();
        if let Some(bad) = names.iter().find(|n| n.as_str() != "*" && !properties.contains(&n.as_str())) {
            return Err(SlError::invalid_property(bad, type_name));
        }
        if names.iter().any(|n| n == "*") {
            return Ok(None);
        }
        Ok(Some(names))
    }

    fn filter(&self, properties: &[&str]) -> Result<Option<Expr>, SlError> {
        let Some(text) = self.get("$filter").filter(|s| !s.trim().is_empty()) else {
            return Ok(None);
        };
        let expr = parse_filter(text).ok_or_else(|| SlError::new(StatusCode::BAD_REQUEST, -1000, "Invalid filter expression"))?;
        let mut used = Vec::new();
        expr.properties(&mut used);
        if let Some(bad) = used.iter().find(|p| !properties.contains(&p.as_str())) {
            return Err(SlError::new(StatusCode::BAD_REQUEST, 201, format!("Property '{bad}' is invalid")));
        }
        Ok(Some(expr))
    }

    /// `$orderby` as (property, descending), checked against the type's properties.
    fn order_by(&self, properties: &[&str], type_name: &str) -> Result<Vec<(String, bool)>, SlError> {
        let Some(text) = self.get("$orderby") else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let mut words = part.split_whitespace();
            let property = words.next().unwrap_or_default().to_string();
            let descending = match words.next().map(str::to_ascii_lowercase).as_deref() {
                None | Some("asc") => false,
                Some("desc") => true,
                Some(other) => return Err(SlError::new(StatusCode::BAD_REQUEST, -1000, format!("Invalid sort direction '{other}'"))),
            };
            if !properties.contains(&property.as_str()) || property == "DocumentLines" || property == "ItemWarehouseInfoCollection" {
                return Err(SlError::invalid_property(&property, type_name));
            }
            out.push((property, descending));
        }
        Ok(out)
    }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%')
            .then(|| bytes.get(i + 1..i + 3))
            .flatten()
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], escaped) {
            (_, Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b'+', None) => {
                out.push(b' ');
                i += 1;
            }
            (b, None) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| if b.is_ascii_alphanumeric() || b"-_.~'(),$:/*".contains(&b) { (b as char).to_string() } else { format!("%{b:02X}") })
        .collect()
}

fn project(value: Value, select: Option<&[String]>) -> Value {
    match (value, select) {
        (Value::Object(m), Some(names)) => Value::Object(m.into_iter().filter(|(k, _)| names.iter().any(|n| n == k)).collect()),
        (v, _) => v,
    }
}

/// One entity: `{"odata.metadata": "…#Set/@Element", …}`, `$select` honoured.
fn element(query: &Query, headers: &HeaderMap, set: &str, type_name: &str, properties: &[&str], value: Value) -> Response {
    let select = match query.select(properties, type_name) {
        Ok(s) => s,
        Err(r) => return r.into_response(),
    };
    let mut out = Map::new();
    out.insert("odata.metadata".into(), json!(format!("{}/$metadata#{set}/@Element", service_root(headers))));
    if let Value::Object(m) = project(value, select.as_deref()) {
        out.extend(m);
    }
    axum::Json(Value::Object(out)).into_response()
}

/// A filtered, ordered page of a collection, with `odata.nextLink` when more remain.
#[allow(clippy::too_many_arguments)]
fn collection(
    query: &Query,
    headers: &HeaderMap,
    set: &str,
    type_name: &str,
    properties: &[&str],
    key_property: &str,
    filter: Option<&Expr>,
    records: Vec<Value>,
) -> Response {
    let select = match query.select(properties, type_name) {
        Ok(s) => s,
        Err(r) => return r.into_response(),
    };
    let order = match query.order_by(properties, type_name) {
        Ok(o) => o,
        Err(r) => return r.into_response(),
    };
    let (skip, top) = match (query.number("$skip"), query.number("$top")) {
        (Ok(s), Ok(t)) => (s.unwrap_or(0), t),
        (Err(r), _) | (_, Err(r)) => return r.into_response(),
    };
    let mut records: Vec<Value> = records.into_iter().filter(|r| filter.is_none_or(|f| f.matches(r))).collect();
    records.sort_by(|a, b| {
        for (property, descending) in &order {
            let ordering = compare_values(a.get(property), b.get(property));
            if ordering != std::cmp::Ordering::Equal {
                return if *descending { ordering.reverse() } else { ordering };
            }
        }
        compare_values(a.get(key_property), b.get(key_property))
    });
    let total = records.len();
    let wanted = top.unwrap_or(usize::MAX);
    let size = page_size(headers).min(wanted);
    let page: Vec<Value> = records.into_iter().skip(skip).take(size).map(|r| project(r, select.as_deref())).collect();
    let served = page.len();
    let mut out = Map::new();
    out.insert("odata.metadata".into(), json!(format!("{}/$metadata#{set}", service_root(headers))));
    if query.get("$inlinecount") == Some("allpages") {
        out.insert("odata.count".into(), json!(total));
    }
    out.insert("value".into(), Value::Array(page));
    let remaining_in_top = wanted.saturating_sub(served);
    if skip + served < total && remaining_in_top > 0 {
        let mut link: Vec<String> = query
            .options
            .iter()
            .filter(|(k, _)| k != "$skip" && k != "$top")
            .map(|(k, v)| format!("{}={}", percent_encode(k), percent_encode(v)))
            .collect();
        if top.is_some() {
            link.push(format!("$top={remaining_in_top}"));
        }
        link.push(format!("$skip={}", skip + served));
        out.insert("odata.nextLink".into(), json!(format!("{set}?{}", link.join("&"))));
    }
    axum::Json(Value::Object(out)).into_response()
}

fn compare_values(a: Option<&Value>, b: Option<&Value>) -> std::cmp::Ordering {
    use std::cmp::Ordering::*;
    match (a.unwrap_or(&Value::Null), b.unwrap_or(&Value::Null)) {
        (Value::Null, Value::Null) => Equal,
        (Value::Null, _) => Less,
        (_, Value::Null) => Greater,
        (Value::Number(x), Value::Number(y)) => x.as_f64().unwrap_or(0.0).partial_cmp(&y.as_f64().unwrap_or(0.0)).unwrap_or(Equal),
        (Value::String(x), Value::String(y)) => x.cmp(y),
        (x, y) => x.to_string().cmp(&y.to_string()),
    }
}

// ---- $filter ----

#[derive(Debug, Clone, Copy, PartialEq)]
enum Comparison {
    Eq,
    Ne,
    Gt,
    Ge,
    Lt,
    Le,
}

#[derive(Debug, Clone, PartialEq)]
enum Operand {
    Property(String),
    Literal(Value),
}

#[derive(Debug, Clone, PartialEq)]
enum Expr {
    Or(Box<Expr>, Box<Expr>),
    And(Box<Expr>, Box<Expr>),
    Not(Box<Expr>),
    Compare(Operand, Comparison, Operand),
    /// `startswith(P,'x')`, `endswith(P,'x')`, `contains(P,'x')`, `substringof('x',P)`.
    Call(String, Vec<Operand>),
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Open,
    Close,
    Comma,
    Word(String),
    Text(String),
    Number(f64),
}

fn tokenize(s: &str) -> Option<Vec<Token>> {
    let chars: Vec<char> = s.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            c if c.is_whitespace() => i += 1,
            '(' => {
                out.push(Token::Open);
                i += 1;
            }
            ')' => {
                out.push(Token::Close);
                i += 1;
            }
            ',' => {
                out.push(Token::Comma);
                i += 1;
            }
            '\'' => {
                let mut text = String::new();
                i += 1;
                loop {
                    match chars.get(i) {
                        None => return None,
                        Some('\'') if chars.get(i + 1) == Some(&'\'') => {
                            text.push('\'');
                            i += 2;
                        }
                        Some('\'') => {
                            i += 1;
                            break;
                        }
                        Some(ch) => {
                            text.push(*ch);
                            i += 1;
                        }
                    }
                }
                out.push(Token::Text(text));
            }
            c if c.is_ascii_digit() || (c == '-' && chars.get(i + 1).is_some_and(|d| d.is_ascii_digit())) => {
                let start = i;
                i += 1;
                while chars.get(i).is_some_and(|d| d.is_ascii_digit() || *d == '.') {
                    i += 1;
                }
                out.push(Token::Number(chars[start..i].iter().collect::<String>().parse().ok()?));
            }
            c if c.is_ascii_alphabetic() || c == '_' => {
                let start = i;
                while chars.get(i).is_some_and(|d| d.is_ascii_alphanumeric() || *d == '_') {
                    i += 1;
                }
                out.push(Token::Word(chars[start..i].iter().collect()));
            }
            _ => return None,
        }
    }
    Some(out)
}

struct FilterParser {
    tokens: Vec<Token>,
    at: usize,
}

fn parse_filter(text: &str) -> Option<Expr> {
    let mut p = FilterParser { tokens: tokenize(text)?, at: 0 };
    let expr = p.or()?;
    (p.at == p.tokens.len()).then_some(expr)
}

impl FilterParser {
    fn peek_word(&self, word: &str) -> bool {
        matches!(self.tokens.get(self.at), Some(Token::Word(w)) if w == word)
    }

    fn or(&mut self) -> Option<Expr> {
        let mut left = self.and()?;
        while self.peek_word("or") {
            self.at += 1;
            left = Expr::Or(Box::new(left), Box::new(self.and()?));
        }
        Some(left)
    }

    fn and(&mut self) -> Option<Expr> {
        let mut left = self.unary()?;
        while self.peek_word("and") {
            self.at += 1;
            left = Expr::And(Box::new(left), Box::new(self.unary()?));
        }
        Some(left)
    }

    fn unary(&mut self) -> Option<Expr> {
        if self.peek_word("not") {
            self.at += 1;
            return Some(Expr::Not(Box::new(self.unary()?)));
        }
        if self.tokens.get(self.at) == Some(&Token::Open) {
            self.at += 1;
            let inner = self.or()?;
            if self.tokens.get(self.at) != Some(&Token::Close) {
                return None;
            }
            self.at += 1;
            return Some(inner);
        }
        if let (Some(Token::Word(name)), Some(Token::Open)) = (self.tokens.get(self.at), self.tokens.get(self.at + 1)) {
            let name = name.clone();
            if !["startswith", "endswith", "contains", "substringof"].contains(&name.as_str()) {
                return None;
            }
            self.at += 2;
            let mut args = vec![self.operand()?];
            while self.tokens.get(self.at) == Some(&Token::Comma) {
                self.at += 1;
                args.push(self.operand()?);
            }
            if self.tokens.get(self.at) != Some(&Token::Close) || args.len() != 2 {
                return None;
            }
            self.at += 1;
            return Some(Expr::Call(name, args));
        }
        let left = self.operand()?;
        let op = match self.tokens.get(self.at) {
            Some(Token::Word(w)) => match w.as_str() {
                "eq" => Comparison::Eq,
                "ne" => Comparison::Ne,
                "gt" => Comparison::Gt,
                "ge" => Comparison::Ge,
                "lt" => Comparison::Lt,
                "le" => Comparison::Le,
                _ => return None,
            },
            _ => return None,
        };
        self.at += 1;
        let right = self.operand()?;
        Some(Expr::Compare(left, op, right))
    }

    fn operand(&mut self) -> Option<Operand> {
        let token = self.tokens.get(self.at)?.clone();
        self.at += 1;
        Some(match token {
            Token::Text(s) => Operand::Literal(Value::String(s)),
            Token::Number(n) => Operand::Literal(json!(n)),
            Token::Word(w) if w == "null" => Operand::Literal(Value::Null),
            Token::Word(w) if w == "true" || w == "false" => Operand::Literal(Value::Bool(w == "true")),
            Token::Word(w) if !["and", "or", "not", "eq", "ne", "gt", "ge", "lt", "le"].contains(&w.as_str()) => Operand::Property(w),
            _ => return None,
        })
    }
}

impl Expr {
    fn properties(&self, out: &mut Vec<String>) {
        let mut add = |o: &Operand| {
            if let Operand::Property(p) = o {
                out.push(p.clone());
            }
        };
        match self {
            Expr::Or(a, b) | Expr::And(a, b) => {
                a.properties(out);
                b.properties(out);
            }
            Expr::Not(a) => a.properties(out),
            Expr::Compare(l, _, r) => {
                add(l);
                add(r);
            }
            Expr::Call(_, args) => args.iter().for_each(add),
        }
    }

    fn matches(&self, record: &Value) -> bool {
        match self {
            Expr::Or(a, b) => a.matches(record) || b.matches(record),
            Expr::And(a, b) => a.matches(record) && b.matches(record),
            Expr::Not(a) => !a.matches(record),
            Expr::Compare(l, op, r) => {
                let date = [l, r].iter().any(|o| matches!(o, Operand::Property(p) if DATE_PROPERTIES.contains(&p.as_str())));
                let (a, b) = (resolve(l, record, date), resolve(r, record, date));
                compare(&a, *op, &b)
            }
            Expr::Call(name, args) => {
                let values: Vec<String> = args.iter().map(|a| resolve(a, record, false).as_str().unwrap_or_default().to_string()).collect();
                match name.as_str() {
                    "startswith" => values[0].starts_with(&values[1]),
                    "endswith" => values[0].ends_with(&values[1]),
                    "contains" => values[0].contains(&values[1]),
                    _ => values[1].contains(&values[0]),
                }
            }
        }
    }
}

/// An operand's value; dates keep their `YYYY-MM-DD` part.
fn resolve(operand: &Operand, record: &Value, date: bool) -> Value {
    let v = match operand {
        Operand::Property(p) => record.get(p).cloned().unwrap_or(Value::Null),
        Operand::Literal(v) => v.clone(),
    };
    match v {
        Value::String(s) if date => Value::String(s.chars().take(10).collect()),
        v => v,
    }
}

fn compare(a: &Value, op: Comparison, b: &Value) -> bool {
    use std::cmp::Ordering;
    let ordering = match (a, b) {
        (Value::Null, Value::Null) => Some(Ordering::Equal),
        (Value::Null, _) | (_, Value::Null) => None,
        (Value::Number(x), Value::Number(y)) => x.as_f64().unwrap_or(0.0).partial_cmp(&y.as_f64().unwrap_or(0.0)),
        (Value::String(x), Value::String(y)) => Some(x.cmp(y)),
        (Value::Bool(x), Value::Bool(y)) => Some(x.cmp(y)),
        _ => None,
    };
    match (op, ordering) {
        (Comparison::Eq, o) => o == Some(Ordering::Equal),
        (Comparison::Ne, o) => o != Some(Ordering::Equal),
        (_, None) => false,
        (Comparison::Gt, Some(o)) => o == Ordering::Greater,
        (Comparison::Ge, Some(o)) => o != Ordering::Less,
        (Comparison::Lt, Some(o)) => o == Ordering::Less,
        (Comparison::Le, Some(o)) => o != Ordering::Greater,
    }
}

/// The item codes of a filter that is only `ItemCode eq '…'` joined by `or`.
fn item_codes_named(expr: &Expr) -> Option<Vec<String>> {
    match expr {
        Expr::Or(a, b) => {
            let mut codes = item_codes_named(a)?;
            codes.extend(item_codes_named(b)?);
            Some(codes)
        }
        Expr::Compare(Operand::Property(p), Comparison::Eq, Operand::Literal(Value::String(code)))
        | Expr::Compare(Operand::Literal(Value::String(code)), Comparison::Eq, Operand::Property(p))
            if p == "ItemCode" =>
        {
            Some(vec![code.clone()])
        }
        _ => None,
    }
}

// ---- routes ----

impl SimPlatform for SapBusinessOneSim {
    fn name(&self) -> &'static str {
        NAME
    }

    fn router(self: Arc<Self>) -> Router {
        Router::new()
            .route("/b1s/v1/Login", post(login))
            .route("/b1s/v1/Logout", post(logout))
            .route("/b1s/v1/{resource}", any(resource))
            .route("/b1s/v1/{resource}/{action}", any(resource_action))
            .with_state(self)
    }

    fn connection(&self, _base_url: &str) -> SimConnection {
        SimConnection {
            values: [("company_db".to_string(), self.creds.company_db.clone())].into(),
            secrets: [("username".to_string(), self.creds.username.clone()), ("password".to_string(), self.creds.password.clone())].into(),
        }
    }

    /// Sales orders are polled: the Service Layer sends no webhooks.
    fn order_topic(&self, _event: OrderEvent) -> Option<&'static str> {
        None
    }

    fn order_delivery(&self, _event: OrderEvent, _order: &SimOrder, _url: &str) -> Delivery {
        Delivery { headers: Vec::new(), body: Vec::new() }
    }
}

async fn login(State(sim): State<Arc<SapBusinessOneSim>>, headers: HeaderMap, body: Bytes) -> Response {
    sim.with_faults("Login", || sim.login(&headers, &body)).await
}

async fn logout(State(sim): State<Arc<SapBusinessOneSim>>, headers: HeaderMap) -> Response {
    sim.with_faults("Logout", || sim.logout(&headers)).await
}

async fn resource(
    State(sim): State<Arc<SapBusinessOneSim>>,
    method: Method,
    Path(resource): Path<String>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    serve(sim, method, resource, None, raw, headers, body).await
}

async fn resource_action(
    State(sim): State<Arc<SapBusinessOneSim>>,
    method: Method,
    Path((resource, action)): Path<(String, String)>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    serve(sim, method, resource, Some(action), raw, headers, body).await
}

async fn serve(
    sim: Arc<SapBusinessOneSim>,
    method: Method,
    resource: String,
    action: Option<String>,
    raw: Option<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let parsed = parse_resource(&resource);
    let (set, key) = parsed.map_or((resource.clone(), None), |(s, k)| (s, k));
    let operation = operation_name(&method, &set, key.as_ref(), action.as_deref());
    let query = Query::parse(raw.as_deref());
    sim.with_faults(&operation, || sim.answer(&method, &resource, action.as_deref(), &query, &headers, &body)).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sandbox::erp::LineRequest;
    use crate::sandbox::faults::{FaultKind, FaultRule};
    use crate::sandbox::{Sandbox, SandboxOptions};

    struct Client {
        http: reqwest::Client,
        root: String,
        cookie: String,
    }

    impl Client {
        async fn get(&self, path: &str) -> reqwest::Response {
            self.http.get(format!("{}/{path}", self.root)).header("cookie", &self.cookie).send().await.unwrap()
        }

        async fn json(&self, path: &str) -> Value {
            let r = self.get(path).await;
            assert_eq!(r.status(), 200, "{path}");
            r.json().await.unwrap()
        }
    }

    async fn start() -> Sandbox {
        let sandbox =
            Sandbox::start(tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(), SandboxOptions::generated()).await.unwrap();
        crate::sandbox::erp::seed_amusement_catalogue(&sandbox.erp, "2026-12-10", "2027-02-01");
        sandbox
    }

    /// The Service Layer the sandbox serves, and how to log in to it.
    fn mounted(sandbox: &Sandbox) -> (String, [String; 3]) {
        let connection = sandbox.connection(NAME).expect("the platform is mounted");
        let login =
            [connection.values["company_db"].clone(), connection.secrets["username"].clone(), connection.secrets["password"].clone()];
        (format!("{}/b1s/v1", sandbox.base_url(NAME)), login)
    }

    /// An adapter over the sandbox's ERP, served on a listener of its own, for
    /// the test controls of its sessions.
    async fn own(sandbox: &Sandbox) -> (Arc<SapBusinessOneSim>, String, [String; 3]) {
        let sim = SapBusinessOneSim::new(&SimContext { erp: sandbox.erp.clone(), faults: sandbox.faults.clone() });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = Router::new().nest(&format!("/{NAME}"), sim.clone().router());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        let login = [sim.creds.company_db.clone(), sim.creds.username.clone(), sim.creds.password.clone()];
        (sim, format!("http://{addr}/{NAME}/b1s/v1"), login)
    }

    /// Log in the way a client does: the two cookies from `Set-Cookie`, sent back together.
    async fn login(root: &str, credentials: &[String; 3]) -> Client {
        let http = reqwest::Client::new();
        let [company, user, password] = credentials;
        let r = http
            .post(format!("{root}/Login"))
            .json(&json!({"CompanyDB": company, "UserName": user, "Password": password, "Language": 23}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let cookie = r
            .headers()
            .get_all("set-cookie")
            .iter()
            .map(|v| v.to_str().unwrap().split(';').next().unwrap().to_string())
            .collect::<Vec<_>>()
            .join("; ");
        let body: Value = r.json().await.unwrap();
        assert!(cookie.contains(&format!("B1SESSION={}", body["SessionId"].as_str().unwrap())), "{cookie}");
        assert!(cookie.contains("ROUTEID=.node1"));
        assert_eq!(body["Version"], SERVICE_LAYER_VERSION);
        assert!(body["odata.metadata"].as_str().unwrap().ends_with("/b1s/v1/$metadata#B1Sessions/@Element"));
        Client { http, root: root.to_string(), cookie }
    }

    async fn mounted_login(sandbox: &Sandbox) -> Client {
        let (root, credentials) = mounted(sandbox);
        login(&root, &credentials).await
    }

    fn customer(sandbox: &Sandbox, i: usize) -> u64 {
        sandbox.erp.customers()[i].id
    }

    fn line(sku: &str, qty: i64) -> LineRequest {
        LineRequest { sku: sku.into(), qty }
    }

    #[test]
    fn filters_parse_and_match_like_odata() {
        let doc = json!({"DocEntry": 812, "DocumentStatus": "bost_Open", "Cancelled": "tNO", "UpdateDate": "2026-03-02",
                         "UpdateTime": "14:05:11", "CardCode": "C-ARC-0042", "U_SyncDecision": null});
        let yes = [
            "DocEntry gt 800 and DocumentStatus eq 'bost_Open'",
            "(UpdateDate gt '2026-03-02' or (UpdateDate eq '2026-03-02' and UpdateTime ge '14:05:00')) and Cancelled eq 'tNO'",
            "UpdateDate ge '2026-03-02T00:00:00'",
            "U_SyncDecision eq null and not (DocEntry le 812 and CardCode ne 'C-ARC-0042')",
            "startswith(CardCode,'C-ARC') and substringof('0042',CardCode)",
        ];
        for f in yes {
            assert!(parse_filter(f).unwrap_or_else(|| panic!("{f}")).matches(&doc), "{f}");
        }
        for f in ["DocEntry lt 812", "U_SyncDecision ne null", "contains(CardCode,'XYZ')"] {
            assert!(!parse_filter(f).unwrap().matches(&doc), "{f}");
        }
        for f in ["DocEntry gt", "(DocEntry eq 1", "DocEntry eq 'x", "DocEntry = 1"] {
            assert!(parse_filter(f).is_none(), "{f}");
        }
        assert_eq!(percent_decode("a%20b+c%27%zz"), "a b c'%zz");
        assert_eq!(parse_resource("Items('A''B')"), Some(("Items".into(), Some(Key::Text("A'B".into())))));
        assert_eq!(parse_resource("Orders(812)"), Some(("Orders".into(), Some(Key::Number(812)))));
    }

    #[tokio::test]
    async fn sessions_need_both_cookies_and_end_when_idle_or_expired() {
        let sandbox = start().await;
        let (sim, root, credentials) = own(&sandbox).await;
        let http = reqwest::Client::new();
        let wrong = http
            .post(format!("{root}/Login"))
            .json(&json!({"CompanyDB": "SBODEMOUS", "UserName": "manager", "Password": "nope"}))
            .send()
            .await
            .unwrap();
        assert_eq!(wrong.status(), 401);
        assert_eq!(wrong.json::<Value>().await.unwrap()["error"]["code"], -304);

        let client = login(&root, &credentials).await;
        assert_eq!(sim.logins(), 1);
        assert_eq!(client.get("Orders").await.status(), 200);
        let only_session = client.cookie.split("; ").find(|c| c.starts_with("B1SESSION")).unwrap().to_string();
        let r = http.get(format!("{root}/Orders")).header("cookie", only_session).send().await.unwrap();
        assert_eq!(r.status(), 401);
        let body: Value = r.json().await.unwrap();
        assert_eq!(
            body,
            json!({"error": {"code": 301, "message": {"lang": "en-us", "value": "Invalid session or session already timeout."}}})
        );

        sim.set_session_timeout_minutes(0);
        assert_eq!(client.get("Orders").await.status(), 401, "idle past the timeout");
        sim.set_session_timeout_minutes(30);
        let client = login(&root, &credentials).await;
        sim.expire_sessions();
        assert_eq!(client.get("Items('CC-CLAW-42')").await.status(), 401);

        let client = login(&root, &credentials).await;
        let out = client.http.post(format!("{root}/Logout")).header("cookie", &client.cookie).send().await.unwrap();
        assert_eq!(out.status(), 204);
        assert_eq!(client.get("Orders").await.status(), 401);
        assert_eq!(sim.logins(), 3);
    }

    #[tokio::test]
    async fn orders_are_polled_with_filters_pages_and_selects() {
        let sandbox = start().await;
        for i in 0..5 {
            let (_, delivered) = sandbox.place_order(NAME, customer(&sandbox, i % 4), &[line("SP-FLIPPER-COIL-2550", 2)]).await.unwrap();
            assert_eq!(delivered, 0, "polled platforms deliver nothing");
        }
        let client = mounted_login(&sandbox).await;
        let today = ymd(OffsetDateTime::now_utc());
        let filter = format!(
            "$filter=UpdateDate ge '{today}' and DocumentStatus eq 'bost_Open'&$orderby=DocEntry asc&$select=DocEntry,DocNum,CardCode,DocumentStatus,UpdateDate,UpdateTime,DocumentLines"
        );
        let first = client
            .http
            .get(format!("{}/Orders?{}", client.root, filter.replace(' ', "%20")))
            .header("cookie", &client.cookie)
            .header("prefer", "odata.maxpagesize=2")
            .send()
            .await
            .unwrap();
        assert_eq!(first.status(), 200);
        let first: Value = first.json().await.unwrap();
        assert!(first["odata.metadata"].as_str().unwrap().ends_with("/b1s/v1/$metadata#Orders"));
        let page = first["value"].as_array().unwrap();
        assert_eq!(page.len(), 2);
        let doc = &page[0];
        assert_eq!(doc["DocumentStatus"], "bost_Open");
        assert!(doc.get("CardName").is_none(), "$select leaves the rest out");
        assert_eq!(doc["DocumentLines"][0]["Quantity"], json!(2.0));
        assert_eq!(doc["DocumentLines"][0]["WarehouseCode"], "01");
        assert_eq!(doc["UpdateDate"], today);
        assert_eq!(doc["UpdateTime"].as_str().unwrap().len(), 8);
        let mut seen: Vec<i64> = page.iter().map(|d| d["DocEntry"].as_i64().unwrap()).collect();
        let mut next = first["odata.nextLink"].as_str().map(str::to_string);
        while let Some(link) = next {
            assert!(link.starts_with("Orders?") && link.contains("$skip="), "{link}");
            let r =
                client.http.get(format!("{}/{link}", client.root)).header("cookie", &client.cookie).header("prefer", "odata.maxpagesize=2");
            let body: Value = r.send().await.unwrap().json().await.unwrap();
            seen.extend(body["value"].as_array().unwrap().iter().map(|d| d["DocEntry"].as_i64().unwrap()));
            next = body["odata.nextLink"].as_str().map(str::to_string);
        }
        assert_eq!(seen.len(), 5);
        assert!(seen.windows(2).all(|w| w[0] < w[1]));

        let newest: Value = client.json(&format!("Orders?$filter=DocEntry%20gt%20{}", seen[3])).await;
        assert_eq!(newest["value"].as_array().unwrap().len(), 1);
        assert!(newest.get("odata.nextLink").is_none());

        let one: Value = client.json(&format!("Orders({})", seen[0])).await;
        assert_eq!(one["DocEntry"].as_i64(), Some(seen[0]));
        assert_eq!(one["Cancelled"], "tNO");
        assert!(one["CardCode"].as_str().unwrap().starts_with('C'));
        assert_eq!(one["U_SyncDecision"], Value::Null);

        let missing = client.get("Orders(99999)").await;
        assert_eq!(missing.status(), 404);
        assert_eq!(missing.json::<Value>().await.unwrap()["error"]["code"], -2028);
        let bad = client.get("Orders?$select=DocStatus").await;
        assert_eq!(bad.status(), 400);
        assert_eq!(bad.json::<Value>().await.unwrap()["error"]["message"]["value"], "Property 'DocStatus' of 'Document' is invalid");
        assert_eq!(client.get("Orders?$filter=DocStatus%20eq%20'O'").await.status(), 400);
    }

    #[tokio::test]
    async fn write_backs_update_cancel_and_close_documents() {
        let sandbox = start().await;
        let (order, _) = sandbox.place_order(NAME, customer(&sandbox, 1), &[line("PB-STERN-GODZ-PRO", 1)]).await.unwrap();
        let (other, _) = sandbox.place_order(NAME, customer(&sandbox, 2), &[line("CC-CLAW-42", 1)]).await.unwrap();
        let client = mounted_login(&sandbox).await;
        let entry = order.number;
        let patch =
            |body: Value| client.http.patch(format!("{}/Orders({entry})", client.root)).header("cookie", &client.cookie).json(&body).send();
        let r = patch(json!({"Comments": "Approved by sync", "U_SyncDecision": "APPROVED"})).await.unwrap();
        assert_eq!(r.status(), 204);
        assert_eq!(patch(json!({"Comments": "Approved by sync", "U_SyncDecision": "APPROVED"})).await.unwrap().status(), 204);
        let doc: Value = client.json(&format!("Orders({entry})?$select=Comments,U_SyncDecision")).await;
        assert_eq!(doc["U_SyncDecision"], "APPROVED");
        assert_eq!(doc["Comments"], "Approved by sync");
        let updates: Vec<_> = sandbox.erp.effects().into_iter().filter(|e| e.kind == "order_update").collect();
        assert_eq!(updates.len(), 1, "the same update counts once");
        let bad = patch(json!({"U_Unknown": "x"})).await.unwrap();
        assert_eq!(bad.status(), 400);
        assert_eq!(bad.json::<Value>().await.unwrap()["error"]["message"]["value"], "Property 'U_Unknown' of 'Document' is invalid");

        assert_eq!(sandbox.erp.totals("PB-STERN-GODZ-PRO"), (3, 1, 2));
        let cancel = || client.http.post(format!("{}/Orders({entry})/Cancel", client.root)).header("cookie", &client.cookie).send();
        assert_eq!(cancel().await.unwrap().status(), 204);
        assert_eq!(sandbox.erp.totals("PB-STERN-GODZ-PRO"), (3, 0, 3), "the commitment is released");
        let again = cancel().await.unwrap();
        assert_eq!(again.status(), 400);
        assert_eq!(again.json::<Value>().await.unwrap()["error"]["code"], -5002);
        assert_eq!(sandbox.erp.totals("PB-STERN-GODZ-PRO"), (3, 0, 3));
        let doc: Value = client.json(&format!("Orders({entry})")).await;
        assert_eq!((doc["Cancelled"].as_str(), doc["DocumentStatus"].as_str()), (Some("tYES"), Some("bost_Close")));

        let close = client.http.post(format!("{}/Orders({})/Close", client.root, other.number)).header("cookie", &client.cookie);
        assert_eq!(close.send().await.unwrap().status(), 204);
        let doc: Value = client.json(&format!("Orders({})", other.number)).await;
        assert_eq!((doc["Cancelled"].as_str(), doc["DocumentStatus"].as_str()), (Some("tNO"), Some("bost_Close")));

        let (shipped, _) = sandbox.place_order(NAME, customer(&sandbox, 0), &[line("BD-JAMMA-60IN1", 1)]).await.unwrap();
        sandbox.ship_order(shipped.id).await.unwrap();
        let doc: Value = client.json(&format!("Orders({})", shipped.number)).await;
        assert_eq!(doc["DocumentStatus"], "bost_Close");
        assert_eq!(doc["DocumentLines"][0]["LineStatus"], "bost_Close");
        let open: Value = client.json("Orders?$filter=DocumentStatus%20eq%20'bost_Open'").await;
        assert!(open["value"].as_array().unwrap().is_empty());
    }

    #[tokio::test]
    async fn items_answer_stock_per_warehouse_and_inventory_documents_move_it() {
        let sandbox = start().await;
        sandbox.place_order(NAME, customer(&sandbox, 0), &[line("SP-COIN-MECH-EU", 2)]).await.unwrap();
        let client = mounted_login(&sandbox).await;
        let item: Value = client.json("Items('SP-COIN-MECH-EU')").await;
        assert!(item["odata.metadata"].as_str().unwrap().ends_with("#Items/@Element"));
        assert_eq!(item["QuantityOnStock"], json!(6.0));
        assert_eq!(item["QuantityOrderedByCustomers"], json!(2.0));
        assert_eq!(item["QuantityOrderedFromVendors"], json!(20.0));
        assert_eq!(
            item["ItemWarehouseInfoCollection"][0],
            json!({"ItemCode": "SP-COIN-MECH-EU", "WarehouseCode": "01", "InStock": 6.0, "Committed": 2.0, "Ordered": 20.0,
                   "MinimalStock": 0.0, "MaximalStock": 0.0, "Locked": "tNO"})
        );
        let selected: Value = client.json("Items('CC-CLAW-MINI')?$select=ItemCode,Valid,Frozen").await;
        assert_eq!(selected.as_object().unwrap().len(), 4);
        assert_eq!((selected["Valid"].as_str(), selected["Frozen"].as_str()), (Some("tNO"), Some("tYES")));
        assert_eq!(client.get("Items('NOPE')").await.status(), 404);
        let both: Value = client
            .json("Items?$filter=ItemCode%20eq%20'CC-CLAW-42'%20or%20ItemCode%20eq%20'AC-SF2-CAB-2P'&$select=ItemCode,QuantityOnStock")
            .await;
        let codes: Vec<&str> = both["value"].as_array().unwrap().iter().map(|i| i["ItemCode"].as_str().unwrap()).collect();
        assert_eq!(codes, ["AC-SF2-CAB-2P", "CC-CLAW-42"]);

        let receipt = json!({"DocDate": "2026-03-02", "Comments": "Sync adjustment 1", "DocumentLines": [
            {"ItemCode": "SP-COIN-MECH-EU", "Quantity": 3, "WarehouseCode": "01"}]});
        let post = |set: &str, body: &Value, prefer: Option<&str>| {
            let mut r = client.http.post(format!("{}/{set}", client.root)).header("cookie", &client.cookie).json(body);
            if let Some(p) = prefer {
                r = r.header("prefer", p);
            }
            r.send()
        };
        let created = post("InventoryGenEntries", &receipt, None).await.unwrap();
        assert_eq!(created.status(), 201);
        assert!(created.headers()["location"].to_str().unwrap().contains("/b1s/v1/InventoryGenEntries("));
        let created: Value = created.json().await.unwrap();
        assert!(created["DocEntry"].as_u64().is_some());
        assert_eq!(created["DocumentLines"][0]["Quantity"], json!(3.0));
        assert_eq!(sandbox.erp.totals("SP-COIN-MECH-EU").0, 9);
        assert_eq!(post("InventoryGenEntries", &receipt, Some("return-no-content")).await.unwrap().status(), 204);
        assert_eq!(sandbox.erp.totals("SP-COIN-MECH-EU").0, 9, "an identical document counts once");
        let issue = json!({"Comments": "Sync adjustment 2", "DocumentLines": [{"ItemCode": "SP-COIN-MECH-EU", "Quantity": 4}]});
        assert_eq!(post("InventoryGenExits", &issue, Some("return-no-content")).await.unwrap().status(), 204);
        assert_eq!(sandbox.erp.totals("SP-COIN-MECH-EU").0, 5);
        let too_many = json!({"DocumentLines": [{"ItemCode": "SP-COIN-MECH-EU", "Quantity": 50, "WarehouseCode": "01"}]});
        let refused = post("InventoryGenExits", &too_many, None).await.unwrap();
        assert_eq!(refused.status(), 400);
        let refused: Value = refused.json().await.unwrap();
        assert!(refused["error"]["message"]["value"].as_str().unwrap().starts_with("Quantity falls into negative inventory"));
        let kinds: Vec<String> = sandbox.erp.effects().into_iter().filter(|e| e.platform == NAME).map(|e| e.kind).collect();
        assert_eq!(kinds, ["goods_receipt", "goods_issue"]);
    }

    #[tokio::test]
    async fn faults_answer_in_the_service_layer_error_shape() {
        let sandbox = start().await;
        let client = mounted_login(&sandbox).await;
        sandbox.faults.set(vec![FaultRule {
            platform: NAME.into(),
            operation: Some("Items.get".into()),
            kind: FaultKind::Status { status: 500 },
            rate: 1.0,
            when: When::Before,
            limit: Some(1),
        }]);
        let failed = client.get("Items('CC-CLAW-42')").await;
        assert_eq!(failed.status(), 500);
        let body: Value = failed.json().await.unwrap();
        assert_eq!(body["error"]["message"]["lang"], "en-us");
        assert_eq!(client.get("Items('CC-CLAW-42')").await.status(), 200);
    }
}
