//! Unleashed Software, simulated: the REST API of an inventory system whose
//! sales orders are polled, in Unleashed's own shapes.
//!
//! What it imitates:
//! - every request signed with `api-auth-id` and `api-auth-signature`, the
//!   base64 HMAC-SHA256 of the query string exactly as sent (without `?`, the
//!   empty string when there is none) keyed by the API key; a wrong id or
//!   signature answers 403;
//! - `Accept` must ask for `application/json` (the real API also speaks XML,
//!   which is not simulated: any other `Accept`, or none, answers 406), and a
//!   body must be sent as `application/json` (415 otherwise);
//! - `/SalesOrders` pages (page number as a path segment, `pageSize` default
//!   200, at most 1000) with `orderStatus` (Deleted excluded by default),
//!   `customOrderStatus`, `modifiedSince`, `orderNumber`, `customerCode`,
//!   `warehouseCode`, `startDate`, `endDate`; dates as `/Date(ms)/`;
//! - `PUT /SalesOrders/{guid}`, `POST /SalesOrders/{guid}/Complete` and
//!   `DELETE /SalesOrders/{guid}`; `/StockOnHand` (totals, per warehouse,
//!   filtered); `/Products` (`productCode` matches codes that start with it,
//!   obsolete products hidden unless `includeObsolete=true`);
//!   `POST /StockAdjustments/{guid}` with absolute `NewQuantity` per line.
//!
//! Stock: a Parked order allocates nothing, so the units the sandbox
//! committed when the order was placed are released the first time this API
//! sees the order; moving it to Placed commits them again (Backordered instead
//! of Placed when the warehouse lacks the units, still allocated). Unplacing
//! (Placed → Parked), DELETE and Complete release what the order holds.
//! `extra["unleashed_allocated"]` says whether an order holds its units
//! (until this API first reads an order, the sandbox's commitment stands).
//!
//! Ids: GUIDs are derived from the ERP ids (the first group names the kind of
//! record), order numbers are `SO-` and eight digits, the first ERP location
//! is warehouse `MAIN` (then `WH2`, …), customer codes are the first ten
//! letters and digits of the company (or last and first name), upper case.
//!
//! Choices where the docs were not conclusive:
//! - PUT needs `OrderStatus`; a `Guid` in the body must match the path. As the
//!   docs warn that partial updates are not supported, an omitted `Comments`
//!   or `CustomOrderStatus` is blanked. Lines and warehouse are not changed
//!   by PUT (an unknown warehouse is refused). PUT cannot complete or delete.
//! - Custom order statuses configured in Settings: `Waitlist` and `Rejected`.
//! - Error bodies: validation errors answer 400
//!   `{"Items":[{"Field":…,"Description":…}]}`; other errors answer
//!   `{"description":…}` (403 `Forbidden`, 404 `Not Found`, 429, 5xx).
//! - `DELETE` answers 204; a repeated Complete or DELETE answers 400.
//! - `GET /StockOnHand/{productGuid}` answers one object with the totals of
//!   every warehouse (warehouse fields null); `/AllWarehouses` and the list
//!   answer `{"Pagination","Items"}`. The list without `warehouseCode` has one
//!   total row per product.
//! - A repeated `POST /StockAdjustments/{guid}` answers the stored
//!   adjustment (200) without applying it again; a Parked one is applied when
//!   it is posted again as Completed.
//! - `LastModifiedOn` moves with every change made through this API, and with
//!   a cancel or shipment made elsewhere when this API next reads the order.
//!
//! Fault operations: `salesorders.list`, `salesorders.get`,
//! `salesorders.update`, `salesorders.delete`, `salesorders.complete`,
//! `stockonhand.get`, `products.get`, `stockadjustments.get`,
//! `stockadjustments.create`.

use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex, Weak};

use axum::Router;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use serde_json::{Value, json};

use crate::config::raw::SignatureAlgorithm;
use crate::connector::webhook::hmac_bytes;
use crate::sandbox::erp::{Customer, Erp, Kind, Location, OrderState, Product, SimOrder};
use crate::sandbox::faults::{self, FaultKind, Faults, When};
use crate::sandbox::platforms::{Delivery, OrderEvent, SimConnection, SimContext, SimPlatform};

const NAME: &str = "unleashed";
const CUSTOM_STATUSES: &[&str] = &["Waitlist", "Rejected"];
const DEFAULT_PAGE_SIZE: usize = 200;
const MAX_PAGE_SIZE: usize = 1000;
const MAX_COMMENTS: usize = 2048;

/// GUID families: the first group of a derived GUID says what it names.
const ORDER_GUID: u32 = 0x5a1e_0001;
const LINE_GUID: u32 = 0x5a1e_0002;
const PRODUCT_GUID: u32 = 0x5a1e_0003;
const CUSTOMER_GUID: u32 = 0x5a1e_0004;
const WAREHOUSE_GUID: u32 = 0x5a1e_0005;
const CURRENCY_GUID: u32 = 0x5a1e_0006;
const TAX_GUID: u32 = 0x5a1e_0007;
const GROUP_GUID: u32 = 0x5a1e_0008;

/// The API id and key of the simulated company.
#[derive(Debug, Clone)]
pub struct UnleashedCredentials {
    pub api_id: String,
    pub api_key: String,
}

pub struct UnleashedSim {
    pub erp: Arc<Erp>,
    faults: Arc<Faults>,
    pub creds: UnleashedCredentials,
    state: Mutex<SimState>,
}

#[derive(Default)]
struct SimState {
    /// Stock adjustments posted, by lowercase GUID.
    adjustments: BTreeMap<String, Value>,
    /// Last seen (on hand, allocated, on purchase) of each SKU and when it changed.
    stock_seen: HashMap<String, ((i64, i64, i64), u64)>,
    /// Requests per operation.
    requests: HashMap<&'static str, u64>,
    started_ms: u64,
}

/// Every simulator built, to find the one serving a given ERP (test controls).
static INSTANCES: Mutex<Vec<Weak<UnleashedSim>>> = Mutex::new(Vec::new());

fn now_ms() -> u64 {
    crate::clock::unix_ms(time::OffsetDateTime::now_utc())
}

fn dotnet_date(ms: u64) -> String {
    format!("/Date({ms})/")
}

/// A GUID of family `kind` for an ERP id (ids stay below 2^48).
fn guid(kind: u32, id: u64) -> String {
    format!("{kind:08x}-0000-4000-8000-{:012x}", id & 0xffff_ffff_ffff)
}

fn parse_guid(kind: u32, text: &str) -> Option<u64> {
    let text = text.to_ascii_lowercase();
    let rest = text.strip_prefix(&format!("{kind:08x}-0000-4000-8000-"))?;
    (rest.len() == 12).then(|| u64::from_str_radix(rest, 16).ok()).flatten()
}

fn is_guid(text: &str) -> bool {
    let groups: Vec<&str> = text.split('-').collect();
    groups.len() == 5 && groups.iter().zip([8, 4, 4, 4, 12]).all(|(g, n)| g.len() == n && g.chars().all(|c| c.is_ascii_hexdigit()))
}

/// A price such as "8999.00" in cents.
fn cents(price: &str) -> i64 {
    let (whole, frac) = price.trim().split_once('.').unwrap_or((price.trim(), "0"));
    let frac: String = frac.chars().chain("00".chars()).take(2).collect();
    whole.parse::<i64>().unwrap_or(0) * 100 + frac.parse::<i64>().unwrap_or(0)
}

fn money(cents: i64) -> f64 {
    cents as f64 / 100.0
}

fn text_hash(text: &str) -> u64 {
    let mut h = std::hash::DefaultHasher::new();
    text.hash(&mut h);
    h.finish()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match u8::from_str_radix(std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("zz"), 16) {
                Ok(b) => {
                    out.push(b);
                    i += 2;
                }
                Err(_) => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Query parameters, decoded; names are matched without regard to case.
struct Query(Vec<(String, String)>);

impl Query {
    fn parse(raw: Option<&str>) -> Query {
        Query(
            raw.unwrap_or("")
                .split('&')
                .filter(|p| !p.is_empty())
                .map(|p| {
                    let (k, v) = p.split_once('=').unwrap_or((p, ""));
                    (percent_decode(k), percent_decode(v))
                })
                .collect(),
        )
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str()).filter(|v| !v.is_empty())
    }

    fn flag(&self, name: &str) -> bool {
        self.get(name).is_some_and(|v| v.eq_ignore_ascii_case("true"))
    }
}

/// A date filter: `2026-03-01`, `2026-03-01T00:00:00`, with or without
/// milliseconds or a zone; UTC when none is given. Unix milliseconds.
fn parse_filter_date(text: &str) -> Option<u64> {
    let t = text.trim();
    let with_zone = if !t.contains('T') {
        format!("{t}T00:00:00Z")
    } else if t.ends_with('Z') || t[t.find('T')?..].contains(['+', '-']) {
        t.to_string()
    } else {
        format!("{t}Z")
    };
    let instant = time::OffsetDateTime::parse(&with_zone, &time::format_description::well_known::Rfc3339).ok()?;
    Some(crate::clock::unix_ms(instant))
}

fn created_ms(order: &SimOrder) -> u64 {
    crate::clock::parse_instant(&order.created_at).map(crate::clock::unix_ms).unwrap_or(0)
}

/// An order's status as Unleashed shows it.
fn status_of(order: &SimOrder) -> String {
    if order.state == OrderState::Cancelled {
        "Deleted".into()
    } else if order.extra.contains_key("fulfilled") {
        "Completed".into()
    } else {
        order.extra.get("unleashed_status").and_then(Value::as_str).unwrap_or("Parked").to_string()
    }
}

fn extra_str<'a>(order: &'a SimOrder, key: &str) -> Option<&'a str> {
    order.extra.get(key).and_then(Value::as_str)
}

fn allocated(order: &SimOrder) -> bool {
    order.extra.get("unleashed_allocated").and_then(Value::as_bool).unwrap_or(false)
}

fn modified_ms(order: &SimOrder) -> u64 {
    order.extra.get("unleashed_modified_ms").and_then(Value::as_u64).unwrap_or_else(|| created_ms(order))
}

fn group_number(kind: &Kind) -> u64 {
    match kind {
        Kind::Machine => 1,
        Kind::Board => 2,
        Kind::Part => 3,
    }
}

/// A new `LastModifiedOn` for a change made now: never earlier than, nor equal to, the last one.
fn next_stamp(order: &SimOrder, now: u64) -> u64 {
    now.max(modified_ms(order) + 1)
}

fn customer_code(c: &Customer) -> String {
    let source = if c.company.is_empty() { format!("{}{}", c.last_name, c.first_name) } else { c.company.clone() };
    source.chars().filter(char::is_ascii_alphanumeric).map(|c| c.to_ascii_uppercase()).take(10).collect()
}

fn customer_name(c: &Customer) -> String {
    if c.company.is_empty() { format!("{} {}", c.first_name, c.last_name) } else { c.company.clone() }
}

fn warehouse_code(index: usize) -> String {
    if index == 0 { "MAIN".into() } else { format!("WH{}", index + 1) }
}

fn warehouse_json(index: usize, loc: &Location) -> Value {
    json!({"Guid": guid(WAREHOUSE_GUID, loc.id), "WarehouseCode": warehouse_code(index), "WarehouseName": loc.name,
           "IsDefault": index == 0, "Obsolete": false})
}

fn validation(field: &str, description: &str) -> Response {
    (StatusCode::BAD_REQUEST, axum::Json(json!({"Items": [{"Field": field, "Description": description}]}))).into_response()
}

fn described(status: StatusCode, description: &str) -> Response {
    (status, axum::Json(json!({"description": description}))).into_response()
}

fn not_found() -> Response {
    described(StatusCode::NOT_FOUND, "Not Found")
}

fn page_envelope(items: Vec<Value>, page: usize, page_size: usize) -> Value {
    let total = items.len();
    let pages = total.div_ceil(page_size);
    let shown: Vec<Value> = items.into_iter().skip((page - 1) * page_size).take(page_size).collect();
    json!({"Pagination": {"NumberOfItems": total, "PageSize": page_size, "PageNumber": page, "NumberOfPages": pages}, "Items": shown})
}

/// A request that fails validation: the field and what is wrong with it.
struct Invalid(String, String);

impl Invalid {
    fn response(self) -> Response {
        validation(&self.0, &self.1)
    }
}

fn page_size(q: &Query) -> Result<usize, Invalid> {
    match q.get("pageSize") {
        None => Ok(DEFAULT_PAGE_SIZE),
        Some(v) => match v.parse::<usize>() {
            Ok(n) if n > 0 => Ok(n.min(MAX_PAGE_SIZE)),
            _ => Err(Invalid("pageSize".into(), "pageSize must be a positive whole number".into())),
        },
    }
}

fn date_filter(q: &Query, name: &str) -> Result<Option<u64>, Invalid> {
    match q.get(name) {
        None => Ok(None),
        Some(v) => parse_filter_date(v).map(Some).ok_or_else(|| Invalid(name.into(), format!("'{v}' is not a valid date"))),
    }
}

impl UnleashedSim {
    pub fn new(ctx: &SimContext) -> Arc<Self> {
        let key_bytes: Vec<u8> = (0..64).map(|_| rand::random::<u8>()).collect();
        let sim = Arc::new(UnleashedSim {
            erp: ctx.erp.clone(),
            faults: ctx.faults.clone(),
            creds: UnleashedCredentials {
                api_id: crate::sandbox::uuid_like(),
                api_key: base64::engine::general_purpose::STANDARD.encode(key_bytes),
            },
            state: Mutex::new(SimState { started_ms: now_ms(), ..SimState::default() }),
        });
        let mut all = INSTANCES.lock().unwrap_or_else(|p| p.into_inner());
        all.retain(|w| w.strong_count() > 0);
        all.push(Arc::downgrade(&sim));
        sim
    }

    /// The simulator serving `erp` (for test controls).
    pub fn of(erp: &Arc<Erp>) -> Option<Arc<UnleashedSim>> {
        let all = INSTANCES.lock().unwrap_or_else(|p| p.into_inner());
        all.iter().filter_map(Weak::upgrade).find(|s| Arc::ptr_eq(&s.erp, erp))
    }

    /// How many requests named `operation` (e.g. `salesorders.list`) arrived.
    pub fn requests(&self, operation: &str) -> u64 {
        self.lock().requests.get(operation).copied().unwrap_or(0)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SimState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The signature Unleashed expects for a query string.
    pub fn signature(api_key: &str, query: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(hmac_bytes(SignatureAlgorithm::HmacSha256, api_key.as_bytes(), query.as_bytes()))
    }

    fn authorized(&self, headers: &HeaderMap, raw_query: Option<&str>) -> bool {
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        header("api-auth-id") == Some(self.creds.api_id.as_str())
            && header("api-auth-signature") == Some(Self::signature(&self.creds.api_key, raw_query.unwrap_or("")).as_str())
    }

    /// Run one operation: faults, signature, content negotiation, then `answer`.
    async fn guarded(
        &self,
        operation: &'static str,
        headers: &HeaderMap,
        raw_query: Option<&str>,
        body: &[u8],
        answer: impl FnOnce(&Query) -> Response,
    ) -> Response {
        *self.lock().requests.entry(operation).or_insert(0) += 1;
        let error_body = json!({"description": "Internal Server Error"});
        let fault = self.faults.pick(NAME, operation);
        if let Some((kind, When::Before)) = &fault {
            if let FaultKind::Throttle { retry_after_s } = kind {
                let mut r = described(StatusCode::TOO_MANY_REQUESTS, "Too Many Requests");
                if let Ok(v) = HeaderValue::from_str(&format!("{}", retry_after_s.ceil().max(1.0) as u64)) {
                    r.headers_mut().insert("retry-after", v);
                }
                return r;
            }
            if let Some(r) = faults::before(kind, &error_body).await {
                return r;
            }
        }
        let real = self.answer(headers, raw_query, body, answer);
        match &fault {
            Some((kind, When::After)) => faults::after(kind, real, &error_body).await,
            _ => real,
        }
    }

    fn answer(&self, headers: &HeaderMap, raw_query: Option<&str>, body: &[u8], answer: impl FnOnce(&Query) -> Response) -> Response {
        if !self.authorized(headers, raw_query) {
            return described(StatusCode::FORBIDDEN, "Forbidden");
        }
        let accept = headers.get("accept").and_then(|v| v.to_str().ok()).unwrap_or("");
        if !accept.to_ascii_lowercase().contains("application/json") {
            return (StatusCode::NOT_ACCEPTABLE, [("content-type", "text/plain")], "Accept must be application/json or application/xml")
                .into_response();
        }
        let content_type = headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("");
        if !body.is_empty() && !content_type.to_ascii_lowercase().starts_with("application/json") {
            return described(StatusCode::UNSUPPORTED_MEDIA_TYPE, "Content-Type must be application/json or application/xml");
        }
        answer(&Query::parse(raw_query))
    }

    // --- orders --------------------------------------------------------------

    /// Look at an order as Unleashed: on first sight a Parked order gives back
    /// the units the sandbox committed; a status changed elsewhere bumps
    /// `LastModifiedOn`. Returns the order as it is now.
    fn observe(&self, order: SimOrder) -> SimOrder {
        let status = status_of(&order);
        if extra_str(&order, "unleashed_observed") == Some(status.as_str()) {
            return order;
        }
        let now = now_ms();
        let first_sight_of_parked = self.erp.update_order(order.id, |o| {
            let status = status_of(o);
            let seen = extra_str(o, "unleashed_observed").map(str::to_string);
            match seen {
                None => {
                    let parked = status == "Parked";
                    o.extra.insert("unleashed_allocated".into(), json!(false));
                    let stamp = if parked { created_ms(o) } else { now };
                    o.extra.insert("unleashed_modified_ms".into(), json!(stamp));
                    o.extra.insert("unleashed_observed".into(), json!(status));
                    parked
                }
                Some(seen) if seen != status => {
                    o.extra.insert("unleashed_modified_ms".into(), json!(next_stamp(o, now)));
                    o.extra.insert("unleashed_observed".into(), json!(status));
                    false
                }
                Some(_) => false,
            }
        });
        if first_sight_of_parked == Some(true) {
            self.erp.release_commitment(order.id);
        }
        self.erp.order(order.id).unwrap_or(order)
    }

    fn orders(&self) -> Vec<SimOrder> {
        self.erp.orders().into_iter().filter(|o| o.platform == NAME).map(|o| self.observe(o)).collect()
    }

    fn order_by_guid(&self, text: &str) -> Option<SimOrder> {
        let id = parse_guid(ORDER_GUID, text)?;
        self.erp.order(id).filter(|o| o.platform == NAME).map(|o| self.observe(o))
    }

    fn location_index(&self, location: u64) -> (usize, Location) {
        let locations = self.erp.locations();
        locations
            .iter()
            .position(|l| l.id == location)
            .map(|i| (i, locations[i].clone()))
            .unwrap_or((0, Location { id: location, name: "Main Warehouse".into() }))
    }

    /// The SalesOrder as Unleashed answers it.
    pub fn order_json(&self, o: &SimOrder) -> Value {
        let currency = json!({"CurrencyCode": "USD", "Description": "United States of America, Dollars", "Guid": guid(CURRENCY_GUID, 1)});
        let (index, location) = self.location_index(o.location);
        let due = dotnet_date(created_ms(o) + 7 * 86_400_000);
        let mut subtotal = 0;
        let lines: Vec<Value> = o
            .lines
            .iter()
            .enumerate()
            .map(|(i, l)| {
                let product = self.erp.product_by_sku(&l.sku);
                let (pid, description, unit) = product.map_or((0, l.sku.clone(), 0), |p| (p.id, p.title.clone(), cents(&p.price)));
                subtotal += unit * l.qty;
                json!({
                    "Guid": guid(LINE_GUID, l.id), "LineNumber": i + 1, "LineType": null,
                    "Product": {"Guid": guid(PRODUCT_GUID, pid), "ProductCode": l.sku, "ProductDescription": description},
                    "DueDate": due, "OrderQuantity": l.qty as f64, "UnitPrice": money(unit), "DiscountRate": 0.0,
                    "LineTotal": money(unit * l.qty), "LineTax": 0.0, "LineTaxCode": null, "TaxRate": 0.0,
                    "BCUnitPrice": money(unit), "BCLineTotal": money(unit * l.qty), "BCLineTax": 0.0,
                    "Comments": null, "Volume": null, "Weight": null, "XeroTaxCode": null, "XeroSalesAccount": null,
                    "LastModifiedOn": dotnet_date(created_ms(o)),
                })
            })
            .collect();
        let status = status_of(o);
        let completed = (status == "Completed").then(|| dotnet_date(modified_ms(o)));
        let c = &o.customer;
        let mut order = json!({
            "Guid": guid(ORDER_GUID, o.id),
            "OrderNumber": format!("SO-{:08}", o.number),
            "OrderDate": dotnet_date(created_ms(o)),
            "RequiredDate": due,
            "CompletedDate": completed,
            "OrderStatus": status,
            "CustomOrderStatus": o.extra.get("unleashed_custom_status").cloned().unwrap_or(Value::Null),
            "Customer": {"Guid": guid(CUSTOMER_GUID, c.id), "CustomerCode": customer_code(c), "CustomerName": customer_name(c),
                         "CurrencyId": 110, "LastModifiedOn": dotnet_date(created_ms(o))},
            "CustomerRef": null,
            "Comments": o.extra.get("unleashed_comments").cloned().unwrap_or(Value::Null),
            "Warehouse": warehouse_json(index, &location),
            "ReceivedDate": dotnet_date(created_ms(o)),
        });
        let rest = json!({
            "DeliveryName": customer_name(c),
            "DeliveryInstruction": null, "DeliveryMethod": null, "DeliveryStreetAddress": "", "DeliveryStreetAddress2": null,
            "DeliverySuburb": null, "DeliveryCity": null, "DeliveryRegion": null, "DeliveryCountry": "", "DeliveryPostCode": null,
            "Currency": currency,
            "ExchangeRate": 1.0,
            "DiscountRate": 0.0,
            "Tax": {"Guid": guid(TAX_GUID, 1), "TaxCode": "NONE", "Description": "No Tax", "TaxRate": 0.0},
            "TaxRate": 0.0,
            "XeroTaxCode": null,
            "SubTotal": money(subtotal), "TaxTotal": 0.0, "Total": money(subtotal),
            "BCSubTotal": money(subtotal), "BCTaxTotal": 0.0, "BCTotal": money(subtotal),
            "TotalVolume": 0.0, "TotalWeight": 0.0,
            "PaymentDueDate": due,
            "SalesOrderGroup": null, "Salesperson": null, "SourceId": null,
            "SalesOrderLines": lines,
            "CreatedBy": "sandbox", "CreatedOn": dotnet_date(created_ms(o)),
            "LastModifiedBy": "sandbox", "LastModifiedOn": dotnet_date(modified_ms(o)),
        });
        if let (Some(head), Value::Object(tail)) = (order.as_object_mut(), rest) {
            head.extend(tail);
        }
        order
    }

    fn list_orders(&self, q: &Query, page: usize) -> Response {
        let size = match page_size(q) {
            Ok(s) => s,
            Err(e) => return e.response(),
        };
        let (modified_since, start, end) = match (date_filter(q, "modifiedSince"), date_filter(q, "startDate"), date_filter(q, "endDate")) {
            (Ok(a), Ok(b), Ok(c)) => (a, b, c),
            (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => return e.response(),
        };
        let list = |name: &str| -> Option<Vec<String>> {
            q.get(name).map(|v| v.split(',').map(|s| s.trim().to_ascii_lowercase()).filter(|s| !s.is_empty()).collect())
        };
        let statuses = list("orderStatus");
        let custom = list("customOrderStatus");
        let number = q.get("orderNumber");
        let customer = q.get("customerCode").map(str::to_ascii_lowercase);
        let warehouse = q.get("warehouseCode").map(str::to_ascii_lowercase);
        let items: Vec<Value> = self
            .orders()
            .into_iter()
            .filter(|o| {
                if let Some(n) = number {
                    return format!("SO-{:08}", o.number).eq_ignore_ascii_case(n);
                }
                let status = status_of(o).to_ascii_lowercase();
                let status_ok = match (&custom, &statuses) {
                    (Some(c), _) => extra_str(o, "unleashed_custom_status").is_some_and(|s| c.contains(&s.to_ascii_lowercase())),
                    (None, Some(s)) => s.contains(&status),
                    (None, None) => status != "deleted",
                };
                status_ok
                    && modified_since.is_none_or(|since| modified_ms(o) >= since)
                    && start.is_none_or(|s| created_ms(o) >= s)
                    && end.is_none_or(|e| created_ms(o) <= e)
                    && customer.as_ref().is_none_or(|c| customer_code(&o.customer).to_ascii_lowercase().starts_with(c))
                    && warehouse.as_ref().is_none_or(|w| warehouse_code(self.location_index(o.location).0).to_ascii_lowercase() == *w)
            })
            .map(|o| self.order_json(&o))
            .collect();
        axum::Json(page_envelope(items, page, size)).into_response()
    }

    fn update_order(&self, guid_text: &str, body: &[u8]) -> Response {
        let Some(order) = self.order_by_guid(guid_text) else { return not_found() };
        let Ok(body) = serde_json::from_slice::<Value>(body) else {
            return validation("", "The request body is not valid JSON");
        };
        if let Some(g) = body.get("Guid").and_then(Value::as_str) {
            if !g.eq_ignore_ascii_case(guid_text) {
                return validation("Guid", "The Guid in the body does not match the Guid in the URL");
            }
        }
        let Some(requested) = body.get("OrderStatus").and_then(Value::as_str) else {
            return validation("OrderStatus", "The OrderStatus field is required.");
        };
        let current = status_of(&order);
        if current == "Completed" || current == "Deleted" {
            return validation("OrderStatus", &format!("A sales order with status {current} cannot be updated"));
        }
        let requested = match requested.to_ascii_lowercase().as_str() {
            "parked" => "Parked",
            "placed" => "Placed",
            "backordered" => "Backordered",
            "completed" | "deleted" => {
                return validation("OrderStatus", "Use /SalesOrders/{orderGuid}/Complete or DELETE to complete or delete a sales order");
            }
            _ => return validation("OrderStatus", &format!("'{requested}' is not a valid OrderStatus")),
        };
        let custom = match body.get("CustomOrderStatus") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) if s.is_empty() => None,
            Some(Value::String(s)) => match CUSTOM_STATUSES.iter().find(|c| c.eq_ignore_ascii_case(s)) {
                Some(c) => Some(c.to_string()),
                None => return validation("CustomOrderStatus", &format!("'{s}' is not a custom order status configured in Settings")),
            },
            Some(_) => return validation("CustomOrderStatus", "CustomOrderStatus must be text"),
        };
        let comments = match body.get("Comments") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) if s.chars().count() > MAX_COMMENTS => {
                return validation("Comments", &format!("Comments cannot be longer than {MAX_COMMENTS} characters"));
            }
            Some(Value::String(s)) if s.is_empty() => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(_) => return validation("Comments", "Comments must be text"),
        };
        if let Some(w) = body.get("Warehouse").filter(|w| !w.is_null()) {
            let locations = self.erp.locations();
            let known = locations.iter().enumerate().any(|(i, l)| {
                w.get("Guid").and_then(Value::as_str).is_some_and(|g| parse_guid(WAREHOUSE_GUID, g) == Some(l.id))
                    || w.get("WarehouseCode").and_then(Value::as_str).is_some_and(|c| c.eq_ignore_ascii_case(&warehouse_code(i)))
            });
            if !known {
                return validation("Warehouse", "The warehouse does not exist");
            }
        }

        // Allocation follows the status: placing commits the units, unplacing gives them back.
        let wants_allocation = requested != "Parked";
        let backordered = wants_allocation && !allocated(&order) && self.short_of_stock(&order);
        let now = now_ms();
        let change = self.erp.update_order(order.id, |o| {
            let before = status_of(o);
            let was_allocated = allocated(o);
            let new_status = match (wants_allocation, was_allocated) {
                (true, false) if backordered => "Backordered".to_string(),
                (true, false) => "Placed".to_string(),
                (true, true) => before.clone(),
                (false, _) => "Parked".to_string(),
            };
            let explicit_before = extra_str(o, "unleashed_status").map(str::to_string);
            o.extra.insert("unleashed_status".into(), json!(new_status));
            o.extra.insert("unleashed_allocated".into(), json!(wants_allocation));
            let old_custom = extra_str(o, "unleashed_custom_status").map(str::to_string);
            let old_comments = extra_str(o, "unleashed_comments").map(str::to_string);
            match &custom {
                Some(c) => o.extra.insert("unleashed_custom_status".into(), json!(c)),
                None => o.extra.remove("unleashed_custom_status"),
            };
            match &comments {
                Some(c) => o.extra.insert("unleashed_comments".into(), json!(c)),
                None => o.extra.remove("unleashed_comments"),
            };
            o.extra.insert("unleashed_modified_ms".into(), json!(next_stamp(o, now)));
            o.extra.insert("unleashed_observed".into(), json!(new_status));
            (before, new_status, explicit_before, was_allocated, old_custom, old_comments)
        });
        let Some((before, new_status, explicit_before, was_allocated, old_custom, old_comments)) = change else { return not_found() };
        match (was_allocated, wants_allocation) {
            (false, true) => self.erp.commit_order(order.id),
            (true, false) => self.erp.release_commitment(order.id),
            _ => {}
        }
        let id = order.id;
        if before != new_status || explicit_before.as_deref() == Some(new_status.as_str()) {
            self.erp.effect(
                NAME,
                "order_status",
                Some(id),
                &format!("{NAME}:status:{id}:{new_status}"),
                json!({"OrderStatus": new_status, "from": before}),
            );
        }
        match (&custom, &old_custom) {
            (Some(c), _) => {
                self.erp.effect(
                    NAME,
                    "custom_order_status",
                    Some(id),
                    &format!("{NAME}:custom_status:{id}:{c}"),
                    json!({"CustomOrderStatus": c}),
                );
            }
            (None, Some(_)) => {
                self.erp.effect(
                    NAME,
                    "custom_order_status",
                    Some(id),
                    &format!("{NAME}:custom_status:{id}:"),
                    json!({"CustomOrderStatus": null}),
                );
            }
            (None, None) => {}
        }
        match (&comments, &old_comments) {
            (Some(c), _) => {
                let key = format!("{NAME}:comments:{id}:{:016x}", text_hash(c));
                self.erp.effect(NAME, "comments", Some(id), &key, json!({"Comments": c}));
            }
            (None, Some(_)) => {
                self.erp.effect(NAME, "comments", Some(id), &format!("{NAME}:comments:{id}:"), json!({"Comments": null}));
            }
            (None, None) => {}
        }
        match self.erp.order(id) {
            Some(o) => axum::Json(self.order_json(&o)).into_response(),
            None => not_found(),
        }
    }

    /// Whether the order's warehouse lacks units for any line (the order holds none).
    fn short_of_stock(&self, order: &SimOrder) -> bool {
        order.lines.iter().any(|l| {
            let available: i64 =
                self.erp.levels(&l.sku).iter().filter(|(loc, _)| loc.id == order.location).map(|(_, lv)| lv.available()).sum();
            available < l.qty
        })
    }

    fn delete_order(&self, guid_text: &str) -> Response {
        let Some(order) = self.order_by_guid(guid_text) else { return not_found() };
        let key = format!("{NAME}:delete:{}", order.id);
        let status = status_of(&order);
        if status == "Completed" || status == "Deleted" {
            self.erp.effect(NAME, "order_delete", Some(order.id), &key, Value::Null);
            return validation("OrderStatus", &format!("A sales order with status {status} cannot be deleted"));
        }
        let now = now_ms();
        let held = self.erp.update_order(order.id, |o| {
            if o.state == OrderState::Cancelled {
                return None;
            }
            let held = allocated(o);
            o.state = OrderState::Cancelled;
            o.cancel_reason = Some("DELETED".into());
            o.extra.insert("cancelled_at".into(), json!(crate::clock::format_rfc3339(time::OffsetDateTime::now_utc())));
            o.extra.insert("unleashed_allocated".into(), json!(false));
            o.extra.insert("unleashed_modified_ms".into(), json!(next_stamp(o, now)));
            o.extra.insert("unleashed_observed".into(), json!("Deleted"));
            Some(held)
        });
        match held.flatten() {
            Some(held) => {
                if held {
                    self.erp.release_commitment(order.id);
                }
                self.erp.effect(NAME, "order_delete", Some(order.id), &key, json!({"OrderStatus": "Deleted"}));
                StatusCode::NO_CONTENT.into_response()
            }
            None => validation("OrderStatus", "A sales order with status Deleted cannot be deleted"),
        }
    }

    fn complete_order(&self, guid_text: &str) -> Response {
        let Some(order) = self.order_by_guid(guid_text) else { return not_found() };
        let key = format!("{NAME}:complete:{}", order.id);
        let status = status_of(&order);
        if status == "Completed" || status == "Deleted" {
            self.erp.effect(NAME, "order_complete", Some(order.id), &key, Value::Null);
            return validation("OrderStatus", &format!("A sales order with status {status} cannot be completed"));
        }
        if self.erp.effect(NAME, "order_complete", Some(order.id), &key, json!({"OrderStatus": "Completed"})) {
            let now = now_ms();
            let held = self.erp.update_order(order.id, |o| {
                let held = allocated(o);
                o.extra.insert("fulfilled".into(), json!(true));
                o.extra.insert("unleashed_allocated".into(), json!(false));
                o.extra.insert("unleashed_modified_ms".into(), json!(next_stamp(o, now)));
                o.extra.insert("unleashed_observed".into(), json!("Completed"));
                held
            });
            for l in &order.lines {
                self.erp.adjust_on_hand(&l.sku, order.location, -l.qty);
            }
            if held == Some(true) {
                self.erp.release_commitment(order.id);
            }
        }
        match self.erp.order(order.id) {
            Some(o) => axum::Json(self.order_json(&o)).into_response(),
            None => not_found(),
        }
    }

    // --- stock and products ----------------------------------------------------

    /// When a SKU's stock last changed, as far as this API has seen.
    fn stock_modified(&self, sku: &str, now_seen: (i64, i64, i64)) -> u64 {
        let mut s = self.lock();
        let started = s.started_ms;
        let entry = s.stock_seen.entry(sku.to_string()).or_insert((now_seen, started));
        if entry.0 != now_seen {
            *entry = (now_seen, now_ms());
        }
        entry.1
    }

    fn stock_row(&self, p: &Product, warehouse: Option<(usize, &Location)>) -> Value {
        let levels = self.erp.levels(&p.sku);
        let mine = |loc: &Location| warehouse.is_none_or(|(_, w)| w.id == loc.id);
        let (on_hand, allocated, on_purchase) = levels
            .iter()
            .filter(|(loc, _)| mine(loc))
            .fold((0, 0, 0), |(a, b, c), (_, l)| (a + l.on_hand, b + l.committed, c + l.incoming));
        let total_seen = levels.iter().fold((0, 0, 0), |(a, b, c), (_, l)| (a + l.on_hand, b + l.committed, c + l.incoming));
        let modified = self.stock_modified(&p.sku, total_seen);
        let avg_cost = money(cents(&p.price) * 6 / 10);
        let (warehouse_id, code, name) = match warehouse {
            Some((i, loc)) => (json!(guid(WAREHOUSE_GUID, loc.id)), json!(warehouse_code(i)), json!(loc.name)),
            None => (Value::Null, Value::Null, Value::Null),
        };
        json!({
            "Guid": guid(PRODUCT_GUID, p.id), "ProductGuid": guid(PRODUCT_GUID, p.id), "ProductCode": p.sku,
            "ProductDescription": p.title, "ProductGroupName": format!("{:?}", p.kind), "ProductSourceId": null,
            "WarehouseId": warehouse_id, "WarehouseCode": code, "Warehouse": name,
            "DaysSinceLastSale": null, "OnPurchase": on_purchase as f64, "AllocatedQty": allocated as f64,
            "AvailableQty": (on_hand - allocated) as f64, "QtyOnHand": on_hand as f64,
            "AvgCost": avg_cost, "TotalCost": avg_cost * on_hand as f64, "LastModifiedOn": dotnet_date(modified),
        })
    }

    fn product_by_guid(&self, text: &str) -> Option<Product> {
        parse_guid(PRODUCT_GUID, text).and_then(|id| self.erp.product_by_id(id))
    }

    /// Make sure every order has been seen, so allocations are up to date.
    fn observe_all(&self) {
        let _ = self.orders();
    }

    fn stock_of_product(&self, guid_text: &str) -> Response {
        self.observe_all();
        match self.product_by_guid(guid_text) {
            Some(p) => axum::Json(self.stock_row(&p, None)).into_response(),
            None => not_found(),
        }
    }

    fn stock_all_warehouses(&self, guid_text: &str) -> Response {
        self.observe_all();
        let Some(p) = self.product_by_guid(guid_text) else { return not_found() };
        let locations = self.erp.locations();
        let rows: Vec<Value> = locations.iter().enumerate().map(|(i, loc)| self.stock_row(&p, Some((i, loc)))).collect();
        let n = rows.len().max(1);
        axum::Json(page_envelope(rows, 1, n)).into_response()
    }

    fn stock_list(&self, q: &Query, page: usize) -> Response {
        self.observe_all();
        let size = match page_size(q) {
            Ok(s) => s,
            Err(e) => return e.response(),
        };
        let since = match date_filter(q, "modifiedSince") {
            Ok(s) => s,
            Err(e) => return e.response(),
        };
        let locations = self.erp.locations();
        let warehouse = match q.get("warehouseCode") {
            None => None,
            Some(code) => match (0..locations.len()).find(|i| warehouse_code(*i).eq_ignore_ascii_case(code)) {
                Some(i) => Some((i, &locations[i])),
                // No such warehouse: nothing is stocked there.
                None => return axum::Json(page_envelope(Vec::new(), page, size)).into_response(),
            },
        };
        let wanted: Option<Vec<u64>> =
            q.get("productId").map(|ids| ids.split(',').filter_map(|g| parse_guid(PRODUCT_GUID, g.trim())).collect());
        let products: Vec<Product> = match &wanted {
            Some(ids) => ids.iter().filter_map(|id| self.erp.product_by_id(*id)).collect(),
            None => self.erp.products(),
        };
        let rows: Vec<Value> = products
            .iter()
            .map(|p| self.stock_row(p, warehouse))
            .filter(|row| {
                since.is_none_or(|s| {
                    row.get("LastModifiedOn")
                        .and_then(Value::as_str)
                        .and_then(|d| d.trim_start_matches("/Date(").trim_end_matches(")/").parse::<u64>().ok())
                        .is_some_and(|m| m >= s)
                })
            })
            .collect();
        axum::Json(page_envelope(rows, page, size)).into_response()
    }

    pub fn product_json(&self, p: &Product) -> Value {
        let price = money(cents(&p.price));
        let cost = money(cents(&p.price) * 6 / 10);
        let started = dotnet_date(self.lock().started_ms);
        json!({
            "Guid": guid(PRODUCT_GUID, p.id), "ProductCode": p.sku, "ProductDescription": p.title,
            "Barcode": null, "PackSize": null, "Width": null, "Height": null, "Depth": null, "Weight": null,
            "MinStockAlertLevel": null, "MaxStockAlertLevel": null, "ReOrderPoint": null,
            "UnitOfMeasure": {"Guid": guid(GROUP_GUID, 0), "Name": "EA"},
            "NeverDiminishing": false, "LastCost": cost, "DefaultPurchasePrice": cost, "DefaultSellPrice": price,
            "CustomerSellPrice": null, "AverageLandPrice": cost,
            "Obsolete": p.discontinued, "Notes": null, "Images": null, "ImageUrl": null,
            "TaxablePurchase": true, "TaxableSales": true,
            "IsComponent": false, "IsAssembledProduct": false, "IsSellable": true, "IsPurchasable": true,
            "IsSerialized": false, "IsBatchTracked": false,
            "ProductGroup": {"GroupName": format!("{:?}", p.kind), "Guid": guid(GROUP_GUID, group_number(&p.kind))},
            "BinLocation": null, "Supplier": null, "SourceId": null,
            "CreatedBy": "sandbox", "CreatedOn": started, "LastModifiedBy": "sandbox", "LastModifiedOn": started,
        })
    }

    fn product_list(&self, q: &Query, page: usize) -> Response {
        let size = match page_size(q) {
            Ok(s) => s,
            Err(e) => return e.response(),
        };
        let code = q.get("productCode").map(str::to_ascii_lowercase);
        let term = q.get("product").map(str::to_ascii_lowercase);
        let ids: Option<Vec<u64>> = q.get("productId").map(|v| v.split(',').filter_map(|g| parse_guid(PRODUCT_GUID, g.trim())).collect());
        let include_obsolete = q.flag("includeObsolete");
        let items: Vec<Value> = self
            .erp
            .products()
            .iter()
            .filter(|p| {
                (include_obsolete || !p.discontinued)
                    && code.as_ref().is_none_or(|c| p.sku.to_ascii_lowercase().starts_with(c))
                    && term.as_ref().is_none_or(|t| p.sku.to_ascii_lowercase().contains(t) || p.title.to_ascii_lowercase().contains(t))
                    && ids.as_ref().is_none_or(|ids| ids.contains(&p.id))
            })
            .map(|p| self.product_json(p))
            .collect();
        axum::Json(page_envelope(items, page, size)).into_response()
    }

    // --- stock adjustments -------------------------------------------------------

    fn create_adjustment(&self, guid_text: &str, body: &[u8]) -> Response {
        if !is_guid(guid_text) {
            return validation("Guid", &format!("'{guid_text}' is not a valid Guid"));
        }
        let key = guid_text.to_ascii_lowercase();
        let Ok(body) = serde_json::from_slice::<Value>(body) else {
            return validation("", "The request body is not valid JSON");
        };
        if let Some(g) = body.get("Guid").and_then(Value::as_str) {
            if !g.eq_ignore_ascii_case(guid_text) {
                return validation("Guid", "The Guid in the body does not match the Guid in the URL");
            }
        }
        let status = match body.get("Status").and_then(Value::as_str).unwrap_or("Parked") {
            s if s.eq_ignore_ascii_case("completed") => "Completed",
            s if s.eq_ignore_ascii_case("parked") => "Parked",
            s => return validation("Status", &format!("'{s}' is not a valid Status (Parked or Completed)")),
        };
        let existing = self.lock().adjustments.get(&key).cloned();
        if let Some(existing) = &existing {
            if existing.get("Status").and_then(Value::as_str) == Some("Completed") || status == "Parked" {
                self.erp.effect(NAME, "stock_adjustment", None, &format!("{NAME}:adjustment:{key}:{status}"), Value::Null);
                return axum::Json(existing.clone()).into_response();
            }
        }
        let Some(reason) = body.get("AdjustmentReason").and_then(Value::as_str).filter(|r| !r.is_empty()) else {
            return validation("AdjustmentReason", "The AdjustmentReason field is required.");
        };
        if reason.chars().count() > 20 {
            return validation("AdjustmentReason", "AdjustmentReason cannot be longer than 20 characters");
        }
        let locations = self.erp.locations();
        let w = body.get("Warehouse").cloned().unwrap_or(Value::Null);
        let Some(index) = locations.iter().enumerate().position(|(i, l)| {
            w.get("Guid").and_then(Value::as_str).is_some_and(|g| parse_guid(WAREHOUSE_GUID, g) == Some(l.id))
                || w.get("WarehouseCode").and_then(Value::as_str).is_some_and(|c| c.eq_ignore_ascii_case(&warehouse_code(i)))
        }) else {
            return validation("Warehouse", "The Warehouse field is required and must name an existing warehouse.");
        };
        let location = locations[index].clone();
        let Some(lines) = body.get("StockAdjustmentLines").and_then(Value::as_array).filter(|l| !l.is_empty()) else {
            return validation("StockAdjustmentLines", "At least one stock adjustment line is required.");
        };
        let mut parsed = Vec::new();
        for (i, line) in lines.iter().enumerate() {
            let product = line.get("Product").cloned().unwrap_or(Value::Null);
            let found = product
                .get("Guid")
                .and_then(Value::as_str)
                .and_then(|g| self.product_by_guid(g))
                .or_else(|| product.get("ProductCode").and_then(Value::as_str).and_then(|c| self.erp.product_by_sku(c)));
            let Some(product) = found else {
                return validation(&format!("StockAdjustmentLines[{i}].Product"), "The product does not exist");
            };
            let Some(quantity) = line.get("NewQuantity").and_then(Value::as_f64).filter(|q| *q >= 0.0 && q.fract() == 0.0) else {
                return validation(&format!("StockAdjustmentLines[{i}].NewQuantity"), "NewQuantity must be a whole number of zero or more");
            };
            parsed.push((product, quantity as i64, line.get("Comments").cloned().unwrap_or(Value::Null)));
        }
        let now = now_ms();
        let number = {
            let s = self.lock();
            existing
                .as_ref()
                .and_then(|e| e.get("AdjustmentNumber").cloned())
                .unwrap_or_else(|| json!(format!("SA-{:08}", s.adjustments.len() + 1)))
        };
        let record = json!({
            "Guid": key, "AdjustmentNumber": number, "AdjustmentDate": dotnet_date(now), "AdjustmentReason": reason,
            "Status": status, "Warehouse": warehouse_json(index, &location),
            "StockAdjustmentLines": parsed.iter().enumerate().map(|(i, (p, q, c))| json!({
                "Guid": guid(LINE_GUID, (text_hash(&key) & 0xffff_ffff) * 1000 + i as u64), "LineNumber": i + 1,
                "Product": {"Guid": guid(PRODUCT_GUID, p.id), "ProductCode": p.sku, "ProductDescription": p.title},
                "NewQuantity": *q as f64, "NewActualValue": money(cents(&p.price) * 6 / 10) * *q as f64, "Comments": c,
            })).collect::<Vec<_>>(),
            "CreatedBy": "sandbox", "CreatedOn": dotnet_date(now), "LastModifiedBy": "sandbox", "LastModifiedOn": dotnet_date(now),
        });
        let detail = json!({"Status": status, "Warehouse": warehouse_code(index),
            "lines": parsed.iter().map(|(p, q, _)| json!({"ProductCode": p.sku, "NewQuantity": q})).collect::<Vec<_>>()});
        let applied = self.erp.effect(NAME, "stock_adjustment", None, &format!("{NAME}:adjustment:{key}:{status}"), detail);
        if applied && status == "Completed" {
            for (p, quantity, _) in &parsed {
                let current: i64 = self.erp.levels(&p.sku).iter().filter(|(l, _)| l.id == location.id).map(|(_, l)| l.on_hand).sum();
                self.erp.adjust_on_hand(&p.sku, location.id, quantity - current);
            }
        }
        let stored = {
            let mut s = self.lock();
            if applied {
                s.adjustments.insert(key.clone(), record);
            }
            s.adjustments.get(&key).cloned().unwrap_or(Value::Null)
        };
        let status_code = if existing.is_none() && applied { StatusCode::CREATED } else { StatusCode::OK };
        (status_code, axum::Json(stored)).into_response()
    }

    fn view_adjustment(&self, guid_text: &str) -> Response {
        match self.lock().adjustments.get(&guid_text.to_ascii_lowercase()) {
            Some(a) => axum::Json(a.clone()).into_response(),
            None => not_found(),
        }
    }
}

impl SimPlatform for UnleashedSim {
    fn name(&self) -> &'static str {
        NAME
    }

    fn router(self: Arc<Self>) -> Router {
        Router::new()
            .route("/SalesOrders", get(sales_orders))
            .route("/SalesOrders/Page/{page}", get(sales_orders_page))
            .route("/SalesOrders/{id}", get(sales_order_or_page).put(sales_order_update).delete(sales_order_delete))
            .route("/SalesOrders/{id}/Complete", post(sales_order_complete))
            .route("/StockOnHand", get(stock_on_hand))
            .route("/StockOnHand/Page/{page}", get(stock_on_hand_page))
            .route("/StockOnHand/{id}", get(stock_on_hand_product_or_page))
            .route("/StockOnHand/{id}/AllWarehouses", get(stock_on_hand_all_warehouses))
            .route("/Products", get(products))
            .route("/Products/Page/{page}", get(products_page))
            .route("/Products/{id}", get(product_or_page))
            .route("/StockAdjustments/{id}", get(stock_adjustment).post(stock_adjustment_create))
            .with_state(self)
    }

    fn connection(&self, _base_url: &str) -> SimConnection {
        SimConnection {
            values: Default::default(),
            secrets: [("api_id".to_string(), self.creds.api_id.clone()), ("api_key".to_string(), self.creds.api_key.clone())].into(),
        }
    }

    fn order_topic(&self, _event: OrderEvent) -> Option<&'static str> {
        None
    }

    /// Never called: sales orders are polled.
    fn order_delivery(&self, _event: OrderEvent, _order: &SimOrder, _url: &str) -> Delivery {
        Delivery { headers: Vec::new(), body: Vec::new() }
    }
}

type Sim = State<Arc<UnleashedSim>>;

fn page_number(text: &str) -> Option<usize> {
    text.parse::<usize>().ok().filter(|n| *n > 0)
}

async fn sales_orders(State(sim): Sim, headers: HeaderMap, RawQuery(raw): RawQuery) -> Response {
    sim.guarded("salesorders.list", &headers, raw.as_deref(), &[], |q| sim.list_orders(q, 1)).await
}

async fn sales_orders_page(State(sim): Sim, Path(page): Path<String>, headers: HeaderMap, RawQuery(raw): RawQuery) -> Response {
    sim.guarded("salesorders.list", &headers, raw.as_deref(), &[], |q| match page_number(&page) {
        Some(n) => sim.list_orders(q, n),
        None => not_found(),
    })
    .await
}

async fn sales_order_or_page(State(sim): Sim, Path(id): Path<String>, headers: HeaderMap, RawQuery(raw): RawQuery) -> Response {
    match page_number(&id) {
        Some(n) => sim.guarded("salesorders.list", &headers, raw.as_deref(), &[], |q| sim.list_orders(q, n)).await,
        None => {
            sim.guarded("salesorders.get", &headers, raw.as_deref(), &[], |_| match sim.order_by_guid(&id) {
                Some(o) => axum::Json(sim.order_json(&o)).into_response(),
                None => not_found(),
            })
            .await
        }
    }
}

async fn sales_order_update(
    State(sim): Sim,
    Path(id): Path<String>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
    body: axum::body::Bytes,
) -> Response {
    sim.guarded("salesorders.update", &headers, raw.as_deref(), &body, |_| sim.update_order(&id, &body)).await
}

async fn sales_order_delete(State(sim): Sim, Path(id): Path<String>, headers: HeaderMap, RawQuery(raw): RawQuery) -> Response {
    sim.guarded("salesorders.delete", &headers, raw.as_deref(), &[], |_| sim.delete_order(&id)).await
}

async fn sales_order_complete(
    State(sim): Sim,
    Path(id): Path<String>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
    body: axum::body::Bytes,
) -> Response {
    sim.guarded("salesorders.complete", &headers, raw.as_deref(), &body, |_| sim.complete_order(&id)).await
}

async fn stock_on_hand(State(sim): Sim, headers: HeaderMap, RawQuery(raw): RawQuery) -> Response {
    sim.guarded("stockonhand.get", &headers, raw.as_deref(), &[], |q| sim.stock_list(q, 1)).await
}

async fn stock_on_hand_page(State(sim): Sim, Path(page): Path<String>, headers: HeaderMap, RawQuery(raw): RawQuery) -> Response {
    sim.guarded("stockonhand.get", &headers, raw.as_deref(), &[], |q| match page_number(&page) {
        Some(n) => sim.stock_list(q, n),
        None => not_found(),
    })
    .await
}

async fn stock_on_hand_product_or_page(State(sim): Sim, Path(id): Path<String>, headers: HeaderMap, RawQuery(raw): RawQuery) -> Response {
    sim.guarded("stockonhand.get", &headers, raw.as_deref(), &[], |q| match page_number(&id) {
        Some(n) => sim.stock_list(q, n),
        None => sim.stock_of_product(&id),
    })
    .await
}

async fn stock_on_hand_all_warehouses(State(sim): Sim, Path(id): Path<String>, headers: HeaderMap, RawQuery(raw): RawQuery) -> Response {
    sim.guarded("stockonhand.get", &headers, raw.as_deref(), &[], |_| sim.stock_all_warehouses(&id)).await
}

async fn products(State(sim): Sim, headers: HeaderMap, RawQuery(raw): RawQuery) -> Response {
    sim.guarded("products.get", &headers, raw.as_deref(), &[], |q| sim.product_list(q, 1)).await
}

async fn products_page(State(sim): Sim, Path(page): Path<String>, headers: HeaderMap, RawQuery(raw): RawQuery) -> Response {
    sim.guarded("products.get", &headers, raw.as_deref(), &[], |q| match page_number(&page) {
        Some(n) => sim.product_list(q, n),
        None => not_found(),
    })
    .await
}

async fn product_or_page(State(sim): Sim, Path(id): Path<String>, headers: HeaderMap, RawQuery(raw): RawQuery) -> Response {
    sim.guarded("products.get", &headers, raw.as_deref(), &[], |q| match page_number(&id) {
        Some(n) => sim.product_list(q, n),
        None => match sim.product_by_guid(&id) {
            Some(p) => axum::Json(sim.product_json(&p)).into_response(),
            None => not_found(),
        },
    })
    .await
}

async fn stock_adjustment(State(sim): Sim, Path(id): Path<String>, headers: HeaderMap, RawQuery(raw): RawQuery) -> Response {
    sim.guarded("stockadjustments.get", &headers, raw.as_deref(), &[], |_| sim.view_adjustment(&id)).await
}

async fn stock_adjustment_create(
    State(sim): Sim,
    Path(id): Path<String>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
    body: axum::body::Bytes,
) -> Response {
    sim.guarded("stockadjustments.create", &headers, raw.as_deref(), &body, |_| sim.create_adjustment(&id, &body)).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sandbox::erp::LineRequest;
    use crate::sandbox::{Sandbox, SandboxOptions};

    #[test]
    fn signs_the_query_string_as_unleashed_documents() {
        assert_eq!(
            UnleashedSim::signature("ul-test-api-key", "productCode=PIN-STERN-GDZ&warehouseCode=MAIN"),
            "509gdDLg3QwThR0lS1jVLwDyFPoAMpKqAypJ9zhIsoY="
        );
        assert_eq!(UnleashedSim::signature("ul-test-api-key", ""), "LTHZDRDN7nFJWtv48NvWJLRHl+HeT6nw8FLBr9HWiaY=");
        assert_eq!(parse_guid(ORDER_GUID, &guid(ORDER_GUID, 5_812_345_670_001)), Some(5_812_345_670_001));
        assert!(is_guid("7F3C1A9E-2b44-4c1e-9a51-0c7d1e5b2a10") && !is_guid("7f3c1a9e"));
        assert_eq!(parse_filter_date("2026-03-01T00:00:00.250"), Some(1_772_323_200_250));
        assert_eq!(parse_filter_date("2026-03-01"), Some(1_772_323_200_000));
    }

    struct Client {
        http: reqwest::Client,
        base: String,
        id: String,
        key: String,
    }

    impl Client {
        fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
            let query = path.split_once('?').map_or("", |(_, q)| q);
            self.http
                .request(method, format!("{}{path}", self.base))
                .header("api-auth-id", &self.id)
                .header("api-auth-signature", UnleashedSim::signature(&self.key, query))
                .header("Accept", "application/json")
                .header("client-type", "arcade/ordersync")
        }

        async fn get(&self, path: &str) -> (u16, Value) {
            let r = self.request(reqwest::Method::GET, path).send().await.unwrap();
            (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
        }

        async fn send(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
            let mut req = self.request(method, path);
            if let Some(b) = body {
                req = req.header("Content-Type", "application/json").body(b.to_string());
            }
            let r = req.send().await.unwrap();
            (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
        }
    }

    async fn start() -> (Sandbox, Client) {
        let sandbox =
            Sandbox::start(tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(), SandboxOptions::generated()).await.unwrap();
        crate::sandbox::erp::seed_amusement_catalogue(&sandbox.erp, "2026-12-10", "2027-02-01");
        let conn = sandbox.connection(NAME).unwrap();
        let client = Client {
            http: reqwest::Client::new(),
            base: sandbox.base_url(NAME),
            id: conn.secrets["api_id"].clone(),
            key: conn.secrets["api_key"].clone(),
        };
        (sandbox, client)
    }

    fn line(sku: &str, qty: i64) -> LineRequest {
        LineRequest { sku: sku.into(), qty }
    }

    #[tokio::test]
    async fn refuses_bad_signatures_and_answers_json_only_when_asked() {
        let (sandbox, client) = start().await;
        let (status, _) = client.get("/SalesOrders?orderStatus=Parked").await;
        assert_eq!(status, 200);
        let wrong = client
            .http
            .get(format!("{}/SalesOrders?orderStatus=Parked", client.base))
            .header("api-auth-id", &client.id)
            .header("api-auth-signature", UnleashedSim::signature(&client.key, "orderStatus=Placed"))
            .header("Accept", "application/json")
            .send()
            .await
            .unwrap();
        assert_eq!(wrong.status().as_u16(), 403);
        assert_eq!(wrong.json::<Value>().await.unwrap(), json!({"description": "Forbidden"}));
        let no_accept = client
            .http
            .get(format!("{}/Products", client.base))
            .header("api-auth-id", &client.id)
            .header("api-auth-signature", UnleashedSim::signature(&client.key, ""))
            .send()
            .await
            .unwrap();
        assert_eq!(no_accept.status().as_u16(), 406);
        // The signature covers the query exactly as sent: a re-encoded query no longer matches.
        let encoded = client
            .http
            .get(format!("{}/SalesOrders?orderStatus=Parked%2CPlaced", client.base))
            .header("api-auth-id", &client.id)
            .header("api-auth-signature", UnleashedSim::signature(&client.key, "orderStatus=Parked,Placed"))
            .header("Accept", "application/json")
            .send()
            .await
            .unwrap();
        assert_eq!(encoded.status().as_u16(), 403);
        sandbox.stop().await;
    }

    #[tokio::test]
    async fn lists_orders_by_page_and_modified_date() {
        let (sandbox, client) = start().await;
        let customers = sandbox.erp.customers();
        let (first, _) = sandbox.place_order(NAME, customers[3].id, &[line("PB-STERN-GODZ-PRO", 1)]).await.unwrap();
        sandbox.place_order(NAME, customers[1].id, &[line("SP-FLIPPER-COIL-2550", 4)]).await.unwrap();
        sandbox.create_order("shopify", customers[0].id, &[line("SP-FLIPPER-COIL-2550", 1)]).unwrap();

        let (status, page1) = client.get("/SalesOrders?orderStatus=Parked,Placed&pageSize=1").await;
        assert_eq!(status, 200);
        assert_eq!(page1["Pagination"], json!({"NumberOfItems": 2, "PageSize": 1, "PageNumber": 1, "NumberOfPages": 2}));
        let order = &page1["Items"][0];
        assert_eq!(order["Guid"], json!(guid(ORDER_GUID, first.id)));
        assert_eq!(order["OrderNumber"], json!(format!("SO-{:08}", first.number)));
        assert_eq!(order["OrderStatus"], "Parked");
        assert_eq!(order["Customer"]["CustomerCode"], "FUNZONEFAM");
        assert_eq!(order["Warehouse"]["WarehouseCode"], "MAIN");
        assert_eq!(order["SalesOrderLines"][0]["Product"]["ProductCode"], "PB-STERN-GODZ-PRO");
        assert_eq!(order["SalesOrderLines"][0]["OrderQuantity"], 1.0);
        assert_eq!(order["Total"], 8999.0);
        assert!(order["LastModifiedOn"].as_str().unwrap().starts_with("/Date("));

        let (_, page2) = client.get("/SalesOrders/2?orderStatus=Parked,Placed&pageSize=1").await;
        assert_eq!(page2["Pagination"]["PageNumber"], 2);
        assert_eq!(page2["Items"][0]["SalesOrderLines"][0]["Product"]["ProductCode"], "SP-FLIPPER-COIL-2550");
        let (_, same) = client.get("/SalesOrders/Page/2?orderStatus=Parked,Placed&pageSize=1").await;
        assert_eq!(same["Items"], page2["Items"]);

        let (_, later) = client.get("/SalesOrders?modifiedSince=2099-01-01T00:00:00.000").await;
        assert_eq!(later["Pagination"]["NumberOfItems"], 0);
        let (status, bad) = client.get("/SalesOrders?modifiedSince=yesterday").await;
        assert_eq!(status, 400);
        assert_eq!(bad["Items"][0]["Field"], "modifiedSince");
        let (status, missing) = client.get(&format!("/SalesOrders/{}", guid(ORDER_GUID, 42))).await;
        assert_eq!((status, missing), (404, json!({"description": "Not Found"})));
        sandbox.stop().await;
    }

    #[tokio::test]
    async fn placing_allocates_stock_once_and_custom_statuses_are_checked() {
        let (sandbox, client) = start().await;
        let customer = sandbox.erp.customers()[0].id;
        let (order, _) = sandbox.place_order(NAME, customer, &[line("PB-STERN-GODZ-PRO", 2)]).await.unwrap();
        let product = sandbox.erp.product_by_sku("PB-STERN-GODZ-PRO").unwrap();
        let product_guid = guid(PRODUCT_GUID, product.id);

        // Parked orders allocate nothing.
        let (status, stock) = client.get(&format!("/StockOnHand/{product_guid}")).await;
        assert_eq!(status, 200);
        assert_eq!(
            (stock["QtyOnHand"].as_f64(), stock["AllocatedQty"].as_f64(), stock["AvailableQty"].as_f64()),
            (Some(3.0), Some(0.0), Some(3.0))
        );
        let (_, by_warehouse) = client.get(&format!("/StockOnHand?productId={product_guid}&warehouseCode=MAIN")).await;
        assert_eq!(by_warehouse["Items"][0]["WarehouseCode"], "MAIN");
        assert_eq!(by_warehouse["Items"][0]["AvailableQty"], 3.0);

        let order_guid = guid(ORDER_GUID, order.id);
        let waitlist =
            json!({"Guid": order_guid, "OrderStatus": "Parked", "CustomOrderStatus": "Waitlist", "Comments": "Waitlisted: short 1"});
        let (status, body) = client.send(reqwest::Method::PUT, &format!("/SalesOrders/{order_guid}"), Some(waitlist)).await;
        assert_eq!(status, 200);
        assert_eq!((body["OrderStatus"].as_str(), body["CustomOrderStatus"].as_str()), (Some("Parked"), Some("Waitlist")));

        let unknown = json!({"Guid": order_guid, "OrderStatus": "Parked", "CustomOrderStatus": "Maybe"});
        let (status, error) = client.send(reqwest::Method::PUT, &format!("/SalesOrders/{order_guid}"), Some(unknown)).await;
        assert_eq!(status, 400);
        assert_eq!(error["Items"][0]["Field"], "CustomOrderStatus");
        let (status, error) =
            client.send(reqwest::Method::PUT, &format!("/SalesOrders/{order_guid}"), Some(json!({"Comments": "x"}))).await;
        assert_eq!((status, error["Items"][0]["Field"].as_str()), (400, Some("OrderStatus")));
        let long = json!({"OrderStatus": "Parked", "Comments": "x".repeat(2049)});
        assert_eq!(client.send(reqwest::Method::PUT, &format!("/SalesOrders/{order_guid}"), Some(long)).await.0, 400);

        let place = json!({"Guid": order_guid, "OrderStatus": "Placed", "Comments": "Approved"});
        for _ in 0..2 {
            let (status, body) = client.send(reqwest::Method::PUT, &format!("/SalesOrders/{order_guid}"), Some(place.clone())).await;
            assert_eq!((status, body["OrderStatus"].as_str(), body["CustomOrderStatus"].clone()), (200, Some("Placed"), Value::Null));
        }
        assert_eq!(sandbox.erp.totals("PB-STERN-GODZ-PRO"), (3, 2, 1));
        let placed: Vec<_> =
            sandbox.erp.effects().into_iter().filter(|e| e.key == format!("unleashed:status:{}:Placed", order.id)).collect();
        assert_eq!(placed.len(), 1);
        assert_eq!(sandbox.erp.attempts()[&format!("unleashed:status:{}:Placed", order.id)], 2);

        let (_, listed) = client.get("/SalesOrders?orderStatus=Placed").await;
        assert_eq!(listed["Items"][0]["Comments"], "Approved");

        // Completing ships the units and frees the allocation; a second completion is refused.
        let (status, done) = client.send(reqwest::Method::POST, &format!("/SalesOrders/{order_guid}/Complete"), None).await;
        assert_eq!((status, done["OrderStatus"].as_str()), (200, Some("Completed")));
        assert_eq!(sandbox.erp.totals("PB-STERN-GODZ-PRO"), (1, 0, 1));
        assert_eq!(client.send(reqwest::Method::POST, &format!("/SalesOrders/{order_guid}/Complete"), None).await.0, 400);
        sandbox.stop().await;
    }

    #[tokio::test]
    async fn deletes_cancellations_products_and_stock_adjustments() {
        let (sandbox, client) = start().await;
        let customer = sandbox.erp.customers()[1].id;
        let (a, _) = sandbox.place_order(NAME, customer, &[line("CC-CLAW-42", 1)]).await.unwrap();
        let (b, _) = sandbox.place_order(NAME, customer, &[line("CC-CLAW-42", 1)]).await.unwrap();
        let a_guid = guid(ORDER_GUID, a.id);
        assert_eq!(sandbox.erp.totals("CC-CLAW-42"), (2, 2, 0), "units stay committed until Unleashed sees the orders");
        assert_eq!(client.get("/SalesOrders").await.1["Pagination"]["NumberOfItems"], 2);
        assert_eq!(sandbox.erp.totals("CC-CLAW-42"), (2, 0, 2));
        let put = json!({"OrderStatus": "Placed"});
        assert_eq!(client.send(reqwest::Method::PUT, &format!("/SalesOrders/{a_guid}"), Some(put)).await.0, 200);
        assert_eq!(sandbox.erp.totals("CC-CLAW-42"), (2, 1, 1));
        assert_eq!(client.send(reqwest::Method::DELETE, &format!("/SalesOrders/{a_guid}"), None).await.0, 204);
        assert_eq!(client.send(reqwest::Method::DELETE, &format!("/SalesOrders/{a_guid}"), None).await.0, 400);
        assert_eq!(sandbox.erp.totals("CC-CLAW-42"), (2, 0, 2));
        let (_, deleted) = client.get("/SalesOrders?orderStatus=Deleted").await;
        assert_eq!(deleted["Items"][0]["Guid"], json!(a_guid));
        let (_, open) = client.get("/SalesOrders").await;
        assert_eq!(open["Pagination"]["NumberOfItems"], 1);

        // A cancellation made elsewhere shows as Deleted with a newer LastModifiedOn.
        let (_, before) = client.get(&format!("/SalesOrders/{}", guid(ORDER_GUID, b.id))).await;
        sandbox.cancel_order(b.id).await.unwrap();
        let (_, after) = client.get(&format!("/SalesOrders/{}", guid(ORDER_GUID, b.id))).await;
        assert_eq!(after["OrderStatus"], "Deleted");
        assert_ne!(after["LastModifiedOn"], before["LastModifiedOn"]);

        let (_, found) = client.get("/Products?productCode=CC-CLAW").await;
        let codes: Vec<&str> = found["Items"].as_array().unwrap().iter().filter_map(|p| p["ProductCode"].as_str()).collect();
        assert_eq!(codes, vec!["CC-CLAW-42"]);
        let (_, with_obsolete) = client.get("/Products?productCode=CC-CLAW-MINI&includeObsolete=true").await;
        assert_eq!(with_obsolete["Items"][0]["Obsolete"], true);

        let adjustment_guid = "6f1c2a9e-2b44-4c1e-9a51-0c7d1e5b2a10";
        let adjust = json!({"Guid": adjustment_guid, "Warehouse": {"WarehouseCode": "MAIN"}, "AdjustmentReason": "Sync engine", "Status": "Completed",
            "StockAdjustmentLines": [{"Product": {"ProductCode": "CC-CLAW-42"}, "NewQuantity": 7, "Comments": "recount"}]});
        let (status, created) =
            client.send(reqwest::Method::POST, &format!("/StockAdjustments/{adjustment_guid}"), Some(adjust.clone())).await;
        assert_eq!((status, created["AdjustmentNumber"].as_str()), (201, Some("SA-00000001")));
        sandbox.erp.adjust_on_hand("CC-CLAW-42", sandbox.erp.locations()[0].id, -1);
        let (status, _) = client.send(reqwest::Method::POST, &format!("/StockAdjustments/{adjustment_guid}"), Some(adjust)).await;
        assert_eq!(status, 200);
        assert_eq!(sandbox.erp.totals("CC-CLAW-42").0, 6, "a repeated adjustment is not applied again");
        let bad = json!({"Warehouse": {"WarehouseCode": "MAIN"}, "AdjustmentReason": "x", "Status": "Completed",
            "StockAdjustmentLines": [{"Product": {"ProductCode": "NOPE"}, "NewQuantity": 1}]});
        let (status, error) = client.send(reqwest::Method::POST, "/StockAdjustments/7f1c2a9e-2b44-4c1e-9a51-0c7d1e5b2a10", Some(bad)).await;
        assert_eq!((status, error["Items"][0]["Field"].as_str()), (400, Some("StockAdjustmentLines[0].Product")));
        sandbox.stop().await;
    }

    #[tokio::test]
    async fn throttles_with_retry_after_when_a_fault_says_so() {
        let (sandbox, client) = start().await;
        sandbox.faults.set(vec![crate::sandbox::faults::FaultRule {
            platform: NAME.into(),
            operation: Some("stockonhand".into()),
            kind: FaultKind::Throttle { retry_after_s: 2.0 },
            rate: 1.0,
            when: When::Before,
            limit: Some(1),
        }]);
        let r = client.request(reqwest::Method::GET, "/StockOnHand").send().await.unwrap();
        assert_eq!(r.status().as_u16(), 429);
        assert_eq!(r.headers()["retry-after"], "2");
        assert_eq!(client.get("/StockOnHand").await.0, 200);
        assert_eq!(UnleashedSim::of(&sandbox.erp).unwrap().requests("stockonhand.get"), 2);
        sandbox.stop().await;
    }
}
