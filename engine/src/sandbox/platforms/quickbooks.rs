//! QuickBooks Online, simulated: Intuit's OAuth 2.0 token endpoint, the v3
//! Accounting API (`/v3/company/{realmId}/…`) for Items, Customers and
//! Estimates, its query language, and signed data-change webhooks.
//!
//! What it imitates:
//! - `POST /oauth2/v1/tokens/bearer` with HTTP Basic client credentials and a
//!   form body `grant_type=refresh_token&refresh_token=…`. Every refresh issues
//!   a new refresh token and retires the previous one (400 `invalid_grant`);
//!   wrong client credentials are 401 `invalid_client`. Access tokens live
//!   `expires_in` seconds (3600 unless a test changes it).
//! - Bearer auth on the API: an unknown or expired token is 401 with
//!   `WWW-Authenticate: Bearer realm="Intuit", error="invalid_token"` and the
//!   gateway's lower-case `fault` body (`AuthenticationFailed; errorCode=003200`);
//!   another company's realm id is 403 `ApplicationAuthorizationFailed;
//!   errorCode=003100`. Every answer carries an `intuit_tid` header.
//! - JSON only when the request accepts `application/json`; otherwise the
//!   answer is XML (`<IntuitResponse>`), as QuickBooks answers by default.
//! - Faults as `{"Fault": {"Error": [{"Message", "Detail", "code", "element"}],
//!   "type"}, "time"}`: 610 Object Not Found (400), 5010 Stale Object Error on a
//!   stale `SyncToken` (400), 2010 for malformed or unknown properties, 2020 for
//!   a missing required one, 2170 for an invalid `TxnStatus`, 4000 (query that
//!   does not parse) and 4001 (unknown property or entity) for queries;
//!   throttling as 429 `ThrottleExceeded; errorCode=003001` without
//!   `Retry-After` (Intuit documents none).
//! - Customer orders are Estimates (QuickBooks has no sales order): `TxnStatus`
//!   `Pending` at creation; `Accepted`/`Rejected`/`Closed` through sparse
//!   updates (`POST …/estimate` with `"sparse": true`, `Id`, `SyncToken`). The
//!   `requestid` query parameter makes a write idempotent: the same id answers
//!   the first answer again without applying anything. `Rejected` gives the
//!   order's units back (once); leaving `Rejected` takes them again.
//! - The customer withdrawing (sandbox cancel) closes the estimate; shipping
//!   closes it with a `LinkedTxn` to the Invoice it became. Both bump the
//!   `SyncToken` and `MetaData.LastUpdatedTime`.
//! - Items: `Type` `Inventory`, `TrackQtyOnHand`, one company-wide `QtyOnHand`
//!   (the sum of on-hand units; QuickBooks keeps no per-location stock and
//!   estimates do not lower it), `Active` false for discontinued products.
//!   The `SyncToken` of an item rises whenever its `QtyOnHand` is seen to change.
//! - The query language: `SELECT * | COUNT(*) | <fields> FROM Item|Estimate|Customer
//!   [WHERE <cond> [AND <cond>]…] [ORDERBY <field> [ASC|DESC]]
//!   [STARTPOSITION n] [MAXRESULTS m]` with `=`, `<`, `>`, `<=`, `>=`, `IN (…)`
//!   and `LIKE '%…'`; keywords in any case, entity names as written; string
//!   comparisons ignore case; timestamps compare as instants (offsets allowed);
//!   `MAXRESULTS` at most 1000 (default 100), `STARTPOSITION` from 1. Items and
//!   customers are filtered to `Active = true` unless the query says otherwise.
//! - Webhooks: the legacy `eventNotifications` payload (Estimate `Create` when
//!   an order is placed, `Update` when it is cancelled or shipped) signed
//!   `base64(HMAC-SHA256(verifier token, raw body))` in `intuit-signature`.
//!   A redelivery repeats the same body.
//!
//! Choices where Intuit's documentation left a gap: a field list in a query
//! answers only those fields (plus `domain` and `"sparse": true`); company
//! times are written at a fixed -08:00 offset; an unknown entity in a query is a
//! 4001 validation fault; creating estimates is not simulated (a POST without
//! `Id` is a 2020 fault); the Item stock webhook is not sent.
//!
//! Fault operations: `oauth.token`, `item.read`, `customer.read`,
//! `estimate.read`, `estimate.update`, `query`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use serde_json::{Map, Value, json};
use time::{OffsetDateTime, UtcOffset};

use crate::config::raw::SignatureAlgorithm;
use crate::connector::webhook::hmac_bytes;
use crate::sandbox::erp::{Customer, Erp, OrderState, Product, SimOrder};
use crate::sandbox::faults::{self, FaultKind, Faults, When};
use crate::sandbox::platforms::{Delivery, OrderEvent, SimConnection, SimContext, SimPlatform};

const NAME: &str = "quickbooks";
const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(3600);
const REFRESH_TOKEN_LIFETIME_SECS: u64 = 8_726_400;
const DEFAULT_MAX_RESULTS: usize = 100;
const MAX_RESULTS: usize = 1000;
/// QuickBooks ids are small numbers: the ERP ids shifted so the first item is
/// "19", the first customer "58" and the first order "1001".
const ITEM_ID_BASE: u64 = 9_012_344_981;
const CUSTOMER_ID_BASE: u64 = 7_012_344_942;
const ESTIMATE_ID_BASE: u64 = 5_812_345_669_000;
const INVOICE_ID_OFFSET: u64 = 5000;

/// The company's clock offset (Pacific standard time).
fn company_offset() -> UtcOffset {
    UtcOffset::from_hms(-8, 0, 0).unwrap_or(UtcOffset::UTC)
}

/// Credentials of the simulated app and company.
#[derive(Debug, Clone)]
pub struct QuickBooksCredentials {
    pub realm_id: String,
    pub client_id: String,
    pub client_secret: String,
    pub webhook_verifier: String,
}

struct OAuthState {
    refresh_token: String,
    /// Access tokens issued, with the moment each stops working.
    access_tokens: HashMap<String, Instant>,
    refreshes: u64,
    lifetime: Duration,
}

pub struct QuickBooksSim {
    pub erp: Arc<Erp>,
    faults: Arc<Faults>,
    pub creds: QuickBooksCredentials,
    oauth: Mutex<OAuthState>,
    /// When the company was set up: creation time of items and customers.
    opened_at: OffsetDateTime,
    /// Per product: the QtyOnHand last seen, its SyncToken and when it changed.
    items_seen: Mutex<HashMap<u64, (i64, u64, OffsetDateTime)>>,
    /// Answers to writes that carried a `requestid`.
    answered: Mutex<HashMap<String, Value>>,
}

// ---------------------------------------------------------------- ids and times

pub fn item_id(product_id: u64) -> String {
    product_id.wrapping_sub(ITEM_ID_BASE).to_string()
}

pub fn customer_id(customer: u64) -> String {
    customer.wrapping_sub(CUSTOMER_ID_BASE).to_string()
}

pub fn estimate_id(order: u64) -> String {
    order.wrapping_sub(ESTIMATE_ID_BASE).to_string()
}

fn parse_id(id: &str, base: u64) -> Option<u64> {
    id.trim().parse::<u64>().ok().map(|n| n.wrapping_add(base))
}

/// "2026-11-27T07:15:00-08:00", as QuickBooks writes MetaData times.
fn company_time(t: OffsetDateTime) -> String {
    t.to_offset(company_offset())
        .format(time::macros::format_description!(
            "[year]-[month]-[day]T[hour]:[minute]:[second][offset_hour sign:mandatory]:[offset_minute]"
        ))
        .unwrap_or_else(|_| crate::clock::format_rfc3339(t))
}

fn company_date(t: OffsetDateTime) -> String {
    t.to_offset(company_offset()).date().to_string()
}

/// The `time` of an answer: "2026-11-27T07:15:00.123-08:00".
fn response_time() -> String {
    OffsetDateTime::now_utc()
        .to_offset(company_offset())
        .format(time::macros::format_description!(
            "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3][offset_hour sign:mandatory]:[offset_minute]"
        ))
        .unwrap_or_default()
}

/// "2026-11-27T15:15:00.000Z", as webhooks write `lastUpdated`.
fn utc_millis(t: OffsetDateTime) -> String {
    t.to_offset(UtcOffset::UTC)
        .format(time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"))
        .unwrap_or_default()
}

/// A time as a query or the ERP writes it: RFC 3339, `-00:00`, `-0700`, no
/// offset (company time) or a bare date.
fn parse_time(s: &str) -> Option<OffsetDateTime> {
    let s = s.trim();
    let fixed = if let Some(head) = s.strip_suffix("-00:00") {
        format!("{head}Z")
    } else if s.len() > 5 && s.is_char_boundary(s.len() - 5) {
        let (head, tail) = s.split_at(s.len() - 5);
        let sign = tail.starts_with('+') || tail.starts_with('-');
        if sign && tail[1..].chars().all(|c| c.is_ascii_digit()) && head.contains('T') {
            format!("{head}{}:{}", &tail[..3], &tail[3..])
        } else {
            s.to_string()
        }
    } else {
        s.to_string()
    };
    if let Ok(t) = OffsetDateTime::parse(&fixed, &time::format_description::well_known::Rfc3339) {
        return Some(t);
    }
    if let Ok(t) = time::PrimitiveDateTime::parse(s, time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]")) {
        return Some(t.assume_offset(company_offset()));
    }
    crate::clock::parse_instant(s)
}

fn amount(price: &str) -> f64 {
    price.parse().unwrap_or(0.0)
}

// ---------------------------------------------------------------- faults

/// A QuickBooks error answer.
struct Failure {
    status: StatusCode,
    body: Value,
    headers: Vec<(&'static str, String)>,
}

impl Failure {
    fn fault(status: StatusCode, kind: &str, code: &str, message: &str, detail: &str, element: &str) -> Failure {
        Failure {
            status,
            body: json!({"Fault": {"Error": [{"Message": message, "Detail": detail, "code": code, "element": element}], "type": kind},
                         "time": response_time()}),
            headers: Vec::new(),
        }
    }

    fn validation(code: &str, message: &str, detail: &str, element: &str) -> Failure {
        Failure::fault(StatusCode::BAD_REQUEST, "ValidationFault", code, message, detail, element)
    }

    fn not_found() -> Failure {
        Failure::validation(
            "610",
            "Object Not Found",
            "Object Not Found : Something you're trying to use has been made inactive. Check the fields with accounts, customers, items, vendors or employees.",
            "",
        )
    }

    fn missing(property: &str) -> Failure {
        Failure::validation(
            "2020",
            "Required param missing, need to supply the required value for the API",
            &format!("Required parameter {property} is missing in the request"),
            property,
        )
    }

    fn unsupported_property(detail: &str) -> Failure {
        Failure::validation("2010", "Request has invalid or unsupported property", &format!("Property Name:{detail}"), "")
    }

    fn query_parse(detail: &str) -> Failure {
        Failure::validation("4000", "Error parsing query", &format!("QueryParserError: {detail}"), "")
    }

    fn query_invalid(detail: &str) -> Failure {
        Failure::validation("4001", "Invalid query", &format!("QueryValidationError: {detail}"), "")
    }

    /// The API gateway's answer to a missing, unknown or expired token.
    fn unauthenticated(detail: &str) -> Failure {
        Failure {
            status: StatusCode::UNAUTHORIZED,
            body: gateway_fault("message=AuthenticationFailed; errorCode=003200; statusCode=401", json!(detail), "3200", "AUTHENTICATION"),
            headers: vec![("www-authenticate", r#"Bearer realm="Intuit", error="invalid_token""#.to_string())],
        }
    }

    /// The gateway's answer to a token used on another company.
    fn forbidden() -> Failure {
        Failure {
            status: StatusCode::FORBIDDEN,
            body: gateway_fault("message=ApplicationAuthorizationFailed; errorCode=003100; statusCode=403", Value::Null, "3100", "SERVICE"),
            headers: Vec::new(),
        }
    }

    fn throttled() -> Failure {
        Failure::fault(
            StatusCode::TOO_MANY_REQUESTS,
            "SERVICE",
            "003001",
            "message=ThrottleExceeded; errorCode=003001; statusCode=429",
            "The request limit was reached.",
            "",
        )
    }
}

fn gateway_fault(message: &str, detail: Value, code: &str, kind: &str) -> Value {
    json!({"warnings": null, "intuitObject": null,
           "fault": {"error": [{"message": message, "detail": detail, "code": code, "element": null}], "type": kind},
           "report": null, "queryResponse": null, "batchItemResponse": [], "attachableResponse": [], "syncErrorResponse": null,
           "requestId": null, "time": crate::clock::unix_ms(OffsetDateTime::now_utc()), "status": null, "cdcresponse": []})
}

fn system_fault_body() -> Value {
    json!({"Fault": {"Error": [{"Message": "An application error has occurred while processing your request",
        "Detail": "System Failure Error: An unexpected error occurred while accessing or saving your data. Please wait a few minutes and try again. If the problem persists, contact customer support.",
        "code": "10000", "element": ""}], "type": "SystemFault"}, "time": response_time()})
}

// ---------------------------------------------------------------- rendering

fn tid() -> String {
    format!("1-{}-{}", crate::sandbox::random_hex(4), crate::sandbox::random_hex(12))
}

fn wants_json(headers: &HeaderMap) -> bool {
    headers.get("accept").and_then(|v| v.to_str().ok()).is_some_and(|a| a.to_ascii_lowercase().contains("application/json"))
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

fn xml_element(out: &mut String, name: &str, value: &Value) {
    match value {
        Value::Null => {}
        Value::Array(items) => items.iter().for_each(|item| xml_element(out, name, item)),
        Value::Object(map) => {
            out.push_str(&format!("<{name}>"));
            for (k, v) in map {
                xml_element(out, k, v);
            }
            out.push_str(&format!("</{name}>"));
        }
        Value::String(s) => out.push_str(&format!("<{name}>{}</{name}>", xml_escape(s))),
        other => out.push_str(&format!("<{name}>{other}</{name}>")),
    }
}

/// An answer body as QuickBooks writes it without `Accept: application/json`.
fn to_xml(body: &Value) -> String {
    let time = body.get("time").and_then(Value::as_str).unwrap_or("");
    let mut out = format!(
        r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?><IntuitResponse xmlns="http://schema.intuit.com/finance/v3" time="{}">"#,
        xml_escape(time)
    );
    if let Some(map) = body.as_object() {
        for (k, v) in map.iter().filter(|(k, _)| *k != "time") {
            xml_element(&mut out, k, v);
        }
    }
    out.push_str("</IntuitResponse>");
    out
}

fn render(status: StatusCode, body: &Value, json_wanted: bool) -> Response {
    let mut r = if json_wanted {
        (status, axum::Json(body.clone())).into_response()
    } else {
        let mut r = (status, to_xml(body)).into_response();
        r.headers_mut().insert("content-type", HeaderValue::from_static("application/xml"));
        r
    };
    if let Ok(v) = HeaderValue::from_str(&tid()) {
        r.headers_mut().insert("intuit_tid", v);
    }
    r
}

impl Failure {
    fn into_answer(self, json_wanted: bool) -> Response {
        // The gateway's 401/403 are JSON whatever was asked.
        let gateway = self.body.get("fault").is_some();
        let mut r = render(self.status, &self.body, json_wanted || gateway);
        for (k, v) in self.headers {
            if let Ok(v) = HeaderValue::from_str(&v) {
                r.headers_mut().insert(k, v);
            }
        }
        r
    }
}

// ---------------------------------------------------------------- the simulation

impl QuickBooksSim {
    pub fn new(ctx: &SimContext) -> Arc<Self> {
        let digits: String = crate::sandbox::random_hex(12).bytes().map(|b| char::from(b'0' + b % 10)).collect();
        Arc::new(QuickBooksSim {
            erp: ctx.erp.clone(),
            faults: ctx.faults.clone(),
            creds: QuickBooksCredentials {
                realm_id: format!("9130{digits}"),
                client_id: format!("AB{}", crate::sandbox::random_hex(24)),
                client_secret: crate::sandbox::random_hex(20),
                webhook_verifier: crate::sandbox::uuid_like(),
            },
            oauth: Mutex::new(OAuthState {
                refresh_token: new_refresh_token(),
                access_tokens: HashMap::new(),
                refreshes: 0,
                lifetime: DEFAULT_TOKEN_LIFETIME,
            }),
            opened_at: OffsetDateTime::now_utc(),
            items_seen: Mutex::default(),
            answered: Mutex::default(),
        })
    }

    fn oauth(&self) -> std::sync::MutexGuard<'_, OAuthState> {
        self.oauth.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Every access token issued so far stops working now.
    pub fn expire_access_tokens(&self) {
        let now = Instant::now();
        for expiry in self.oauth().access_tokens.values_mut() {
            *expiry = now;
        }
    }

    /// How many refreshes succeeded.
    pub fn refreshes(&self) -> u64 {
        self.oauth().refreshes
    }

    /// The only refresh token that works now.
    pub fn current_refresh_token(&self) -> String {
        self.oauth().refresh_token.clone()
    }

    /// How long access tokens issued from now on live (`expires_in`).
    pub fn set_access_token_lifetime(&self, lifetime: Duration) {
        self.oauth().lifetime = lifetime;
    }

    /// Check the bearer token and the company of an API call.
    fn admit(&self, headers: &HeaderMap, realm: &str) -> Result<(), Failure> {
        let token = headers.get("authorization").and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer ")).map(str::trim);
        let Some(token) = token.filter(|t| !t.is_empty()) else {
            return Err(Failure::unauthenticated("Authorization header missing or malformed"));
        };
        match self.oauth().access_tokens.get(token) {
            None => return Err(Failure::unauthenticated("Token invalid")),
            Some(expiry) if *expiry <= Instant::now() => {
                let shown: String = token.chars().take(50).collect();
                return Err(Failure::unauthenticated(&format!("Token expired: {shown}")));
            }
            Some(_) => {}
        }
        if realm != self.creds.realm_id {
            return Err(Failure::forbidden());
        }
        Ok(())
    }

    /// Answer an API call: faults, auth, the real answer, rendered as asked.
    async fn api(&self, operation: &str, headers: &HeaderMap, realm: &str, answer: impl FnOnce() -> Result<Value, Failure>) -> Response {
        let json_wanted = wants_json(headers);
        let fault = self.faults.pick(NAME, operation);
        if let Some((kind, When::Before)) = &fault {
            if matches!(kind, FaultKind::Throttle { .. }) {
                return Failure::throttled().into_answer(json_wanted);
            }
            if let Some(r) = faults::before(kind, &system_fault_body()).await {
                return r;
            }
        }
        let real = match self.admit(headers, realm).and_then(|()| answer()) {
            Ok(body) => render(StatusCode::OK, &body, json_wanted),
            Err(failure) => failure.into_answer(json_wanted),
        };
        match &fault {
            Some((kind, When::After)) => faults::after(kind, real, &system_fault_body()).await,
            _ => real,
        }
    }

    /// The item's SyncToken and last change, moved on when its quantity changed.
    fn item_version(&self, p: &Product, qty: i64) -> (u64, OffsetDateTime) {
        let mut seen = self.items_seen.lock().unwrap_or_else(|e| e.into_inner());
        let entry = seen.entry(p.id).or_insert((qty, 0, self.opened_at));
        if entry.0 != qty {
            *entry = (qty, entry.1 + 1, OffsetDateTime::now_utc());
        }
        (entry.1, entry.2)
    }

    pub fn item_json(&self, p: &Product) -> Value {
        let qty = self.erp.levels(&p.sku).iter().map(|(_, l)| l.on_hand).sum::<i64>();
        let (sync, changed) = self.item_version(p, qty);
        json!({
            "Id": item_id(p.id), "Name": p.title, "Sku": p.sku, "Description": p.title, "Active": !p.discontinued,
            "FullyQualifiedName": p.title, "Taxable": false, "UnitPrice": amount(&p.price), "Type": "Inventory",
            "IncomeAccountRef": {"value": "79", "name": "Sales of Product Income"}, "PurchaseCost": 0,
            "ExpenseAccountRef": {"value": "80", "name": "Cost of Goods Sold"}, "AssetAccountRef": {"value": "81", "name": "Inventory Asset"},
            "TrackQtyOnHand": true, "QtyOnHand": qty, "InvStartDate": company_date(self.opened_at),
            "domain": "QBO", "sparse": false, "SyncToken": sync.to_string(),
            "MetaData": {"CreateTime": company_time(self.opened_at), "LastUpdatedTime": company_time(changed)},
        })
    }

    pub fn customer_json(&self, c: &Customer) -> Value {
        let display = if c.company.is_empty() { format!("{} {}", c.first_name, c.last_name) } else { c.company.clone() };
        let mut customer = json!({
            "Id": customer_id(c.id), "DisplayName": display, "GivenName": c.first_name, "FamilyName": c.last_name,
            "FullyQualifiedName": display, "PrintOnCheckName": display, "PrimaryEmailAddr": {"Address": c.email},
            "Active": true, "Taxable": false, "Job": false, "BillWithParent": false, "Balance": 0,
            "CurrencyRef": {"value": "USD", "name": "United States Dollar"}, "PreferredDeliveryMethod": "Email",
            "domain": "QBO", "sparse": false, "SyncToken": "0",
            "MetaData": {"CreateTime": company_time(self.opened_at), "LastUpdatedTime": company_time(self.opened_at)},
        });
        if !c.company.is_empty() {
            customer["CompanyName"] = json!(c.company);
        }
        customer
    }

    /// The order with what happened outside the API (the customer withdrew, it
    /// shipped) folded into its estimate.
    fn current(&self, id: u64) -> Option<SimOrder> {
        let now = OffsetDateTime::now_utc();
        self.erp
            .update_order(id, |o| {
                if o.platform != NAME {
                    return None;
                }
                if o.extra.contains_key("cancelled_at") && !o.extra.contains_key("qbo_saw_cancel") {
                    o.extra.insert("qbo_saw_cancel".into(), json!(true));
                    o.extra.insert("qbo_released".into(), json!(true));
                    if !o.extra.contains_key("qbo_closed") {
                        let at = o.extra.get("cancelled_at").and_then(Value::as_str).and_then(parse_time).unwrap_or(now);
                        o.extra.insert("qbo_closed".into(), json!(true));
                        touch(o, at);
                    }
                }
                if o.extra.contains_key("fulfilled") && !o.extra.contains_key("qbo_saw_fulfilled") {
                    o.extra.insert("qbo_saw_fulfilled".into(), json!(true));
                    o.extra.insert("qbo_closed".into(), json!(true));
                    o.extra.insert("qbo_invoiced".into(), json!(true));
                    touch(o, now);
                }
                Some(o.clone())
            })
            .flatten()
    }

    fn estimate(&self, id: &str) -> Option<SimOrder> {
        parse_id(id, ESTIMATE_ID_BASE).and_then(|erp_id| self.current(erp_id))
    }

    pub fn estimate_json(&self, o: &SimOrder) -> Value {
        let mut lines = Vec::new();
        let mut total = 0.0;
        for (i, l) in o.lines.iter().enumerate() {
            let product = self.erp.product_by_sku(&l.sku);
            let unit = product.as_ref().map_or(0.0, |p| amount(&p.price));
            let line_amount = unit * l.qty as f64;
            total += line_amount;
            let (item, name) = product.as_ref().map_or((String::new(), l.sku.clone()), |p| (item_id(p.id), p.title.clone()));
            lines.push(json!({
                "Id": (i + 1).to_string(), "LineNum": i + 1, "Description": name, "Amount": line_amount, "DetailType": "SalesItemLineDetail",
                "SalesItemLineDetail": {"ItemRef": {"value": item, "name": name}, "UnitPrice": unit, "Qty": l.qty,
                    "ItemAccountRef": {"value": "79", "name": "Sales of Product Income"}, "TaxCodeRef": {"value": "NON"}},
            }));
        }
        lines.push(json!({"Amount": total, "DetailType": "SubTotalLineDetail", "SubTotalLineDetail": {}}));
        let created = parse_time(&o.created_at).unwrap_or(self.opened_at);
        let updated = o.extra.get("qbo_updated_at").and_then(Value::as_str).and_then(parse_time).unwrap_or(created);
        let c = &o.customer;
        let display = if c.company.is_empty() { format!("{} {}", c.first_name, c.last_name) } else { c.company.clone() };
        let id = estimate_id(o.id);
        let linked: Vec<Value> = if o.extra.contains_key("qbo_invoiced") {
            let invoice = id.parse::<u64>().map_or_else(|_| format!("{id}1"), |n| (n + INVOICE_ID_OFFSET).to_string());
            vec![json!({"TxnId": invoice, "TxnType": "Invoice"})]
        } else {
            Vec::new()
        };
        let mut estimate = json!({
            "Id": id, "SyncToken": sync_token(o).to_string(), "domain": "QBO", "sparse": false,
            "MetaData": {"CreateTime": company_time(created), "LastUpdatedTime": company_time(updated)},
            "CustomField": [], "DocNumber": o.number.to_string(), "TxnDate": company_date(created),
            "CurrencyRef": {"value": "USD", "name": "United States Dollar"}, "TxnStatus": txn_status(o), "LinkedTxn": linked,
            "Line": lines, "TxnTaxDetail": {"TotalTax": 0}, "CustomerRef": {"value": customer_id(c.id), "name": display},
            "BillEmail": {"Address": c.email}, "TotalAmt": total, "ApplyTaxAfterDiscount": false,
            "PrintStatus": "NeedToPrint", "EmailStatus": "NotSet",
        });
        if let Some(fields) = o.extra.get("qbo_fields").and_then(Value::as_object) {
            // The status is settled above: closing outranks what was written.
            for (k, v) in fields.iter().filter(|(k, _)| k.as_str() != "TxnStatus") {
                estimate[k.as_str()] = v.clone();
            }
        }
        estimate
    }

    fn estimates(&self) -> Vec<SimOrder> {
        self.erp.orders().into_iter().filter(|o| o.platform == NAME).filter_map(|o| self.current(o.id)).collect()
    }

    /// The legacy data-change notification for one estimate event.
    pub fn notification(&self, order: &SimOrder, operation: &str) -> Value {
        let last_updated = if operation == "Create" {
            parse_time(&order.created_at)
        } else {
            order.extra.get("qbo_updated_at").and_then(Value::as_str).and_then(parse_time)
        }
        .unwrap_or(self.opened_at);
        json!({"eventNotifications": [{"realmId": self.creds.realm_id, "dataChangeEvent": {"entities": [
            {"name": "Estimate", "id": estimate_id(order.id), "operation": operation, "lastUpdated": utc_millis(last_updated)}]}}]})
    }

    /// A signed delivery of `body`.
    pub fn signed(&self, body: Vec<u8>) -> Delivery {
        let signature = base64::engine::general_purpose::STANDARD.encode(hmac_bytes(
            SignatureAlgorithm::HmacSha256,
            self.creds.webhook_verifier.as_bytes(),
            &body,
        ));
        Delivery {
            headers: vec![("Content-Type".to_string(), "application/json".to_string()), ("intuit-signature".to_string(), signature)],
            body,
        }
    }
}

fn new_refresh_token() -> String {
    format!("AB11{}", crate::sandbox::random_hex(24))
}

fn new_access_token() -> String {
    format!("eyJlbmMiOiJBMTI4Q0JDLUhTMjU2IiwiYWxnIjoiZGlyIn0..{}.{}", crate::sandbox::random_hex(32), crate::sandbox::random_hex(16))
}

fn sync_token(o: &SimOrder) -> i64 {
    o.extra.get("qbo_sync").and_then(Value::as_i64).unwrap_or(0)
}

/// One more change to an estimate: its SyncToken and LastUpdatedTime move on.
fn touch(o: &mut SimOrder, at: OffsetDateTime) {
    let next = sync_token(o) + 1;
    o.extra.insert("qbo_sync".into(), json!(next));
    o.extra.insert("qbo_updated_at".into(), json!(crate::clock::format_rfc3339(at)));
}

fn txn_status(o: &SimOrder) -> String {
    if o.extra.contains_key("qbo_closed") {
        return "Closed".into();
    }
    o.extra.get("qbo_fields").and_then(|f| f.get("TxnStatus")).and_then(Value::as_str).unwrap_or("Pending").to_string()
}

impl SimPlatform for QuickBooksSim {
    fn name(&self) -> &'static str {
        NAME
    }

    fn router(self: Arc<Self>) -> Router {
        Router::new()
            .route("/oauth2/v1/tokens/bearer", post(token))
            .route("/v3/company/{realm}/item/{id}", get(read_item))
            .route("/v3/company/{realm}/customer/{id}", get(read_customer))
            .route("/v3/company/{realm}/estimate/{id}", get(read_estimate))
            .route("/v3/company/{realm}/estimate", post(update_estimate))
            .route("/v3/company/{realm}/query", get(query_by_url).post(query_by_body))
            .with_state(self)
    }

    fn connection(&self, base_url: &str) -> SimConnection {
        SimConnection {
            values: [
                ("realm_id".to_string(), self.creds.realm_id.clone()),
                ("token_url".to_string(), format!("{base_url}/oauth2/v1/tokens/bearer")),
            ]
            .into(),
            secrets: [
                ("client_id".to_string(), self.creds.client_id.clone()),
                ("client_secret".to_string(), self.creds.client_secret.clone()),
                ("refresh_token".to_string(), self.current_refresh_token()),
                ("webhook_verifier".to_string(), self.creds.webhook_verifier.clone()),
            ]
            .into(),
        }
    }

    fn order_topic(&self, event: OrderEvent) -> Option<&'static str> {
        Some(match event {
            OrderEvent::Created => "Estimate.Create",
            OrderEvent::Cancelled | OrderEvent::Fulfilled => "Estimate.Update",
        })
    }

    fn order_delivery(&self, event: OrderEvent, order: &SimOrder, _url: &str) -> Delivery {
        let order = self.current(order.id).unwrap_or_else(|| order.clone());
        let operation = if event == OrderEvent::Created { "Create" } else { "Update" };
        self.signed(serde_json::to_vec(&self.notification(&order, operation)).expect("JSON serializes"))
    }
}

// ---------------------------------------------------------------- OAuth

fn oauth_error(status: StatusCode, error: &str) -> Response {
    (status, axum::Json(json!({"error": error}))).into_response()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                match std::str::from_utf8(&bytes[i + 1..i + 3]).ok().and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn form(body: &[u8]) -> HashMap<String, String> {
    String::from_utf8_lossy(body)
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

async fn token(State(sim): State<Arc<QuickBooksSim>>, headers: HeaderMap, body: axum::body::Bytes) -> Response {
    let fault = sim.faults.pick(NAME, "oauth.token");
    let error_body = json!({"error": "server_error"});
    if let Some((kind, When::Before)) = &fault {
        if matches!(kind, FaultKind::Throttle { .. }) {
            return Failure::throttled().into_answer(true);
        }
        if let Some(r) = faults::before(kind, &error_body).await {
            return r;
        }
    }
    let real = refresh(&sim, &headers, &body);
    match &fault {
        Some((kind, When::After)) => faults::after(kind, real, &error_body).await,
        _ => real,
    }
}

fn refresh(sim: &QuickBooksSim, headers: &HeaderMap, body: &[u8]) -> Response {
    let expected = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", sim.creds.client_id, sim.creds.client_secret))
    );
    if headers.get("authorization").and_then(|v| v.to_str().ok()).map(str::trim) != Some(expected.as_str()) {
        return oauth_error(StatusCode::UNAUTHORIZED, "invalid_client");
    }
    let params = form(body);
    match params.get("grant_type").map(String::as_str) {
        Some("refresh_token") => {}
        Some("authorization_code") => return oauth_error(StatusCode::BAD_REQUEST, "invalid_grant"),
        Some(_) => return oauth_error(StatusCode::BAD_REQUEST, "unsupported_grant_type"),
        None => return oauth_error(StatusCode::BAD_REQUEST, "invalid_request"),
    }
    let Some(presented) = params.get("refresh_token").filter(|t| !t.is_empty()) else {
        return oauth_error(StatusCode::BAD_REQUEST, "invalid_request");
    };
    let mut oauth = sim.oauth();
    if *presented != oauth.refresh_token {
        return oauth_error(StatusCode::BAD_REQUEST, "invalid_grant");
    }
    let access_token = new_access_token();
    let lifetime = oauth.lifetime;
    oauth.access_tokens.insert(access_token.clone(), Instant::now() + lifetime);
    oauth.refresh_token = new_refresh_token();
    oauth.refreshes += 1;
    let answer = json!({"access_token": access_token, "expires_in": lifetime.as_secs(), "refresh_token": oauth.refresh_token,
        "x_refresh_token_expires_in": REFRESH_TOKEN_LIFETIME_SECS, "token_type": "bearer"});
    let mut r = (StatusCode::OK, axum::Json(answer)).into_response();
    r.headers_mut().insert("cache-control", HeaderValue::from_static("no-cache, no-store"));
    if let Ok(v) = HeaderValue::from_str(&tid()) {
        r.headers_mut().insert("intuit_tid", v);
    }
    r
}

// ---------------------------------------------------------------- reads

type Sim = State<Arc<QuickBooksSim>>;

async fn read_item(State(sim): Sim, Path((realm, id)): Path<(String, String)>, headers: HeaderMap) -> Response {
    sim.api("item.read", &headers, &realm, || {
        let product = parse_id(&id, ITEM_ID_BASE).and_then(|pid| sim.erp.product_by_id(pid)).ok_or_else(Failure::not_found)?;
        Ok(json!({"Item": sim.item_json(&product), "time": response_time()}))
    })
    .await
}

async fn read_customer(State(sim): Sim, Path((realm, id)): Path<(String, String)>, headers: HeaderMap) -> Response {
    sim.api("customer.read", &headers, &realm, || {
        let wanted = parse_id(&id, CUSTOMER_ID_BASE);
        let customer = sim.erp.customers().into_iter().find(|c| Some(c.id) == wanted).ok_or_else(Failure::not_found)?;
        Ok(json!({"Customer": sim.customer_json(&customer), "time": response_time()}))
    })
    .await
}

async fn read_estimate(State(sim): Sim, Path((realm, id)): Path<(String, String)>, headers: HeaderMap) -> Response {
    sim.api("estimate.read", &headers, &realm, || {
        let order = sim.estimate(&id).ok_or_else(Failure::not_found)?;
        Ok(json!({"Estimate": sim.estimate_json(&order), "time": response_time()}))
    })
    .await
}

// ---------------------------------------------------------------- estimate updates

/// Every property an Estimate has; anything else is refused.
const ESTIMATE_PROPERTIES: &[&str] = &[
    "Id",
    "SyncToken",
    "sparse",
    "domain",
    "MetaData",
    "CustomField",
    "DocNumber",
    "TxnDate",
    "DepartmentRef",
    "CurrencyRef",
    "ExchangeRate",
    "PrivateNote",
    "TxnStatus",
    "LinkedTxn",
    "Line",
    "TxnTaxDetail",
    "CustomerRef",
    "CustomerMemo",
    "BillAddr",
    "ShipAddr",
    "FreeFormAddress",
    "ShipFromAddr",
    "ClassRef",
    "SalesTermRef",
    "DueDate",
    "ShipMethodRef",
    "ShipDate",
    "TrackingNum",
    "TotalAmt",
    "HomeTotalAmt",
    "ApplyTaxAfterDiscount",
    "PrintStatus",
    "EmailStatus",
    "BillEmail",
    "BillEmailCc",
    "BillEmailBcc",
    "ExpirationDate",
    "AcceptedBy",
    "AcceptedDate",
    "GlobalTaxCalculation",
    "TransactionLocationType",
    "ProjectRef",
    "RecurDataRef",
    "TaxExemptionRef",
    "TotalTax",
];

/// The properties an update may change here; the others are ignored, as
/// QuickBooks ignores read-only ones.
const WRITABLE: &[&str] = &[
    "TxnStatus",
    "PrivateNote",
    "CustomerMemo",
    "CustomField",
    "AcceptedBy",
    "AcceptedDate",
    "ExpirationDate",
    "PrintStatus",
    "EmailStatus",
];

const TXN_STATUSES: &[&str] = &["Pending", "Accepted", "Closed", "Rejected"];

async fn update_estimate(
    State(sim): Sim,
    Path(realm): Path<String>,
    Query(params): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    sim.api("estimate.update", &headers, &realm, || apply_update(&sim, params.get("requestid").map(String::as_str), &body)).await
}

fn apply_update(sim: &QuickBooksSim, request_id: Option<&str>, body: &[u8]) -> Result<Value, Failure> {
    let mut answered = sim.answered.lock().unwrap_or_else(|e| e.into_inner());
    let replay_key = request_id.filter(|r| !r.is_empty()).map(|r| format!("quickbooks:request:{r}"));
    let req: Value =
        serde_json::from_slice(body).map_err(|e| Failure::unsupported_property(&format!("{e} specified is unsupported or invalid")))?;
    let Some(fields) = req.as_object() else {
        return Err(Failure::unsupported_property("Estimate specified is unsupported or invalid"));
    };
    if let Some(key) = &replay_key {
        if let Some(first) = answered.get(key) {
            let order = fields.get("Id").and_then(Value::as_str).and_then(|id| parse_id(id, ESTIMATE_ID_BASE));
            sim.erp.effect(NAME, "estimate_update", order, key, req.clone());
            return Ok(first.clone());
        }
    }
    if let Some(unknown) = fields.keys().find(|k| !ESTIMATE_PROPERTIES.contains(&k.as_str())) {
        return Err(Failure::unsupported_property(&format!("{unknown} specified is unsupported or invalid")));
    }
    let Some(id) = fields.get("Id").and_then(Value::as_str) else {
        return Err(Failure::missing("Id"));
    };
    let order = sim.estimate(id).ok_or_else(Failure::not_found)?;
    let Some(presented) =
        fields.get("SyncToken").and_then(|t| t.as_str().map(str::to_string).or_else(|| t.as_i64().map(|n| n.to_string())))
    else {
        return Err(Failure::missing("SyncToken"));
    };
    let current = sync_token(&order);
    if presented.trim() != current.to_string() {
        return Err(Failure::validation(
            "5010",
            "Stale Object Error",
            "Stale Object Error : You and root were working on this at the same time. root finished before you did, so your work was not saved.",
            "",
        ));
    }
    if fields.get("sparse").and_then(Value::as_bool) != Some(true) {
        for required in ["CustomerRef", "Line"] {
            if !fields.contains_key(required) {
                return Err(Failure::missing(required));
            }
        }
    }
    if let Some(status) = fields.get("TxnStatus") {
        if !status.as_str().is_some_and(|s| TXN_STATUSES.contains(&s)) {
            return Err(Failure::validation("2170", "Invalid Enumeration", &format!("Invalid Enumeration : {status}"), "TxnStatus"));
        }
    }
    let changes: Map<String, Value> =
        fields.iter().filter(|(k, _)| WRITABLE.contains(&k.as_str())).map(|(k, v)| (k.clone(), v.clone())).collect();
    let effect_key = replay_key.clone().unwrap_or_else(|| format!("quickbooks:estimate:{}:sync{current}", order.id));
    if sim.erp.effect(NAME, "estimate_update", Some(order.id), &effect_key, Value::Object(changes.clone())) {
        apply_changes(sim, &order, &changes);
    }
    let updated = sim.current(order.id).unwrap_or(order);
    let answer = json!({"Estimate": sim.estimate_json(&updated), "time": response_time()});
    if let Some(key) = replay_key {
        answered.insert(key, answer.clone());
    }
    Ok(answer)
}

/// What an order's commitment has to do when its estimate changes status.
enum Commitment {
    Keep,
    Release,
    Take,
}

fn apply_changes(sim: &QuickBooksSim, order: &SimOrder, changes: &Map<String, Value>) {
    let new_status = changes.get("TxnStatus").and_then(Value::as_str).map(str::to_string);
    let commitment = sim
        .erp
        .update_order(order.id, |o| {
            let stored = o.extra.entry("qbo_fields".to_string()).or_insert_with(|| json!({}));
            if let Some(map) = stored.as_object_mut() {
                for (k, v) in changes {
                    map.insert(k.clone(), v.clone());
                }
            }
            let released = o.extra.get("qbo_released").and_then(Value::as_bool) == Some(true);
            let by_rejection = o.extra.get("qbo_rejected").and_then(Value::as_bool) == Some(true);
            let commitment = match new_status.as_deref() {
                Some("Rejected") if !released => {
                    o.extra.insert("qbo_released".into(), json!(true));
                    o.extra.insert("qbo_rejected".into(), json!(true));
                    o.state = OrderState::Cancelled;
                    o.cancel_reason.get_or_insert_with(|| "DECLINED".into());
                    Commitment::Release
                }
                Some(s) if s != "Rejected" && by_rejection && !o.extra.contains_key("qbo_saw_cancel") => {
                    o.extra.insert("qbo_released".into(), json!(false));
                    o.extra.insert("qbo_rejected".into(), json!(false));
                    o.state = OrderState::Open;
                    o.cancel_reason = None;
                    Commitment::Take
                }
                _ => Commitment::Keep,
            };
            touch(o, OffsetDateTime::now_utc());
            commitment
        })
        .unwrap_or(Commitment::Keep);
    match commitment {
        Commitment::Release => sim.erp.release_commitment(order.id),
        Commitment::Take => sim.erp.commit_order(order.id),
        Commitment::Keep => {}
    }
}

// ---------------------------------------------------------------- queries

async fn query_by_url(
    State(sim): Sim,
    Path(realm): Path<String>,
    Query(params): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    sim.api("query", &headers, &realm, || run_query(&sim, params.get("query").map(String::as_str).unwrap_or(""))).await
}

/// `POST …/query` with the statement as the body (`Content-Type: application/text`).
async fn query_by_body(State(sim): Sim, Path(realm): Path<String>, headers: HeaderMap, body: axum::body::Bytes) -> Response {
    let statement = String::from_utf8_lossy(&body).into_owned();
    sim.api("query", &headers, &realm, || run_query(&sim, &statement)).await
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Word(String),
    Text(String),
    Number(String),
    Symbol(String),
}

/// Tokens with the column each starts at (1-based).
fn tokenize(text: &str) -> Result<Vec<(Token, usize)>, Failure> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let column = i + 1;
        if c.is_whitespace() {
            i += 1;
        } else if c == '\'' {
            let mut s = String::new();
            i += 1;
            loop {
                match chars.get(i) {
                    None => {
                        return Err(Failure::query_parse(&format!(
                            "Lexical error at line 1, column {}.  Encountered: <EOF> after : \"\"",
                            chars.len() + 1
                        )));
                    }
                    Some('\\') if chars.get(i + 1).is_some() => {
                        s.push(chars[i + 1]);
                        i += 2;
                    }
                    Some('\'') if chars.get(i + 1) == Some(&'\'') => {
                        s.push('\'');
                        i += 2;
                    }
                    Some('\'') => {
                        i += 1;
                        break;
                    }
                    Some(other) => {
                        s.push(*other);
                        i += 1;
                    }
                }
            }
            out.push((Token::Text(s), column));
        } else if c.is_ascii_alphabetic() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == '.') {
                i += 1;
            }
            out.push((Token::Word(chars[start..i].iter().collect()), column));
        } else if c.is_ascii_digit() || (c == '-' && chars.get(i + 1).is_some_and(char::is_ascii_digit)) {
            let start = i;
            i += 1;
            while i < chars.len() && (chars[i].is_ascii_digit() || chars[i] == '.') {
                i += 1;
            }
            out.push((Token::Number(chars[start..i].iter().collect()), column));
        } else if matches!(c, '<' | '>') && chars.get(i + 1) == Some(&'=') {
            out.push((Token::Symbol(format!("{c}=")), column));
            i += 2;
        } else if matches!(c, '*' | ',' | '(' | ')' | '=' | '<' | '>') {
            out.push((Token::Symbol(c.to_string()), column));
            i += 1;
        } else {
            return Err(Failure::query_parse(&format!("Lexical error at line 1, column {column}.  Encountered: \"{c}\"")));
        }
    }
    Ok(out)
}

#[derive(Debug, Clone, PartialEq)]
enum Projection {
    All,
    Count,
    Fields(Vec<String>),
}

#[derive(Debug, Clone, PartialEq)]
enum Operator {
    Eq,
    Lt,
    Gt,
    Le,
    Ge,
    In,
    Like,
}

#[derive(Debug, Clone, PartialEq)]
struct Condition {
    field: String,
    operator: Operator,
    values: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
struct Statement {
    projection: Projection,
    entity: String,
    conditions: Vec<Condition>,
    order_by: Option<(String, bool)>,
    start_position: usize,
    max_results: usize,
}

struct Parser {
    tokens: Vec<(Token, usize)>,
    at: usize,
    end_column: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.at).map(|(t, _)| t)
    }

    fn unexpected(&self) -> Failure {
        match self.tokens.get(self.at) {
            None => Failure::query_parse(&format!("Encountered \"<EOF>\" at line 1, column {}.", self.end_column)),
            Some((token, column)) => {
                let shown = match token {
                    Token::Word(w) => format!("\" <IDENTIFIER> \"{w} \"\""),
                    Token::Text(t) => format!("\" <STRING> \"'{t}' \"\""),
                    Token::Number(n) => format!("\" <INTEGER> \"{n} \"\""),
                    Token::Symbol(s) => format!("\"{s}\""),
                };
                Failure::query_parse(&format!("Encountered {shown} at line 1, column {column}."))
            }
        }
    }

    fn keyword(&mut self, word: &str) -> bool {
        if matches!(self.peek(), Some(Token::Word(w)) if w.eq_ignore_ascii_case(word)) {
            self.at += 1;
            true
        } else {
            false
        }
    }

    fn expect_keyword(&mut self, word: &str) -> Result<(), Failure> {
        if self.keyword(word) { Ok(()) } else { Err(self.unexpected()) }
    }

    fn symbol(&mut self, symbol: &str) -> bool {
        if matches!(self.peek(), Some(Token::Symbol(s)) if s == symbol) {
            self.at += 1;
            true
        } else {
            false
        }
    }

    fn expect_symbol(&mut self, symbol: &str) -> Result<(), Failure> {
        if self.symbol(symbol) { Ok(()) } else { Err(self.unexpected()) }
    }

    fn identifier(&mut self) -> Result<String, Failure> {
        const RESERVED: &[&str] =
            &["select", "from", "where", "and", "or", "in", "like", "orderby", "asc", "desc", "startposition", "maxresults"];
        match self.peek() {
            Some(Token::Word(w)) if !RESERVED.contains(&w.to_ascii_lowercase().as_str()) => {
                let w = w.clone();
                self.at += 1;
                Ok(w)
            }
            _ => Err(self.unexpected()),
        }
    }

    fn value(&mut self) -> Result<String, Failure> {
        match self.peek().cloned() {
            Some(Token::Text(t)) | Some(Token::Number(t)) => {
                self.at += 1;
                Ok(t)
            }
            Some(Token::Word(w)) if w.eq_ignore_ascii_case("true") || w.eq_ignore_ascii_case("false") => {
                self.at += 1;
                Ok(w.to_ascii_lowercase())
            }
            _ => Err(self.unexpected()),
        }
    }

    fn number(&mut self) -> Result<usize, Failure> {
        match self.peek().cloned() {
            Some(Token::Number(n)) => {
                let parsed = n.parse::<usize>().map_err(|_| self.unexpected())?;
                self.at += 1;
                Ok(parsed)
            }
            _ => Err(self.unexpected()),
        }
    }

    fn statement(&mut self) -> Result<Statement, Failure> {
        self.expect_keyword("select")?;
        let projection = if self.symbol("*") {
            Projection::All
        } else if self.keyword("count") {
            self.expect_symbol("(")?;
            self.expect_symbol("*")?;
            self.expect_symbol(")")?;
            Projection::Count
        } else {
            let mut fields = vec![self.identifier()?];
            while self.symbol(",") {
                fields.push(self.identifier()?);
            }
            Projection::Fields(fields)
        };
        self.expect_keyword("from")?;
        let entity = self.identifier()?;
        let mut conditions = Vec::new();
        if self.keyword("where") {
            loop {
                conditions.push(self.condition()?);
                if !self.keyword("and") {
                    break;
                }
            }
        }
        let mut order_by = None;
        if self.keyword("orderby") {
            let field = self.identifier()?;
            let descending = if self.keyword("desc") {
                true
            } else {
                self.keyword("asc");
                false
            };
            order_by = Some((field, descending));
        }
        let (mut start_position, mut max_results) = (1, DEFAULT_MAX_RESULTS);
        loop {
            if self.keyword("startposition") {
                start_position = self.number()?.max(1);
            } else if self.keyword("maxresults") {
                max_results = self.number()?.min(MAX_RESULTS);
            } else {
                break;
            }
        }
        if self.at < self.tokens.len() {
            return Err(self.unexpected());
        }
        Ok(Statement { projection, entity, conditions, order_by, start_position, max_results })
    }

    fn condition(&mut self) -> Result<Condition, Failure> {
        let field = self.identifier()?;
        let operator = match self.peek().cloned() {
            Some(Token::Symbol(s)) => {
                self.at += 1;
                match s.as_str() {
                    "=" => Operator::Eq,
                    "<" => Operator::Lt,
                    ">" => Operator::Gt,
                    "<=" => Operator::Le,
                    ">=" => Operator::Ge,
                    _ => {
                        self.at -= 1;
                        return Err(self.unexpected());
                    }
                }
            }
            Some(Token::Word(w)) if w.eq_ignore_ascii_case("in") => {
                self.at += 1;
                Operator::In
            }
            Some(Token::Word(w)) if w.eq_ignore_ascii_case("like") => {
                self.at += 1;
                Operator::Like
            }
            _ => return Err(self.unexpected()),
        };
        let values = if operator == Operator::In {
            self.expect_symbol("(")?;
            let mut values = vec![self.value()?];
            while self.symbol(",") {
                values.push(self.value()?);
            }
            self.expect_symbol(")")?;
            values
        } else {
            vec![self.value()?]
        };
        Ok(Condition { field, operator, values })
    }
}

fn parse_statement(text: &str) -> Result<Statement, Failure> {
    let tokens = tokenize(text)?;
    Parser { tokens, at: 0, end_column: text.chars().count() + 1 }.statement()
}

/// The value of `field` (a property path such as `MetaData.LastUpdatedTime`,
/// matched without regard to case) in an entity; references read as their `value`.
fn field_value<'a>(entity: &'a Value, field: &str) -> Option<&'a Value> {
    let mut current = entity;
    for part in field.split('.') {
        let map = current.as_object()?;
        current = map.iter().find(|(k, _)| k.eq_ignore_ascii_case(part)).map(|(_, v)| v)?;
    }
    match current {
        Value::Object(map) => map.get("value").or_else(|| map.get("Address")),
        other => Some(other),
    }
}

fn text_of(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Compare an entity's value with a query literal: as instants for times, as
/// numbers when both are numbers, else as text without regard to case.
fn compare(field: &str, actual: &Value, literal: &str) -> Option<std::cmp::Ordering> {
    let actual = text_of(actual);
    let lower = field.to_ascii_lowercase();
    if lower.ends_with("time") || lower.ends_with("date") {
        return Some(parse_time(&actual)?.cmp(&parse_time(literal)?));
    }
    if let (Ok(a), Ok(b)) = (actual.parse::<f64>(), literal.parse::<f64>()) {
        return a.partial_cmp(&b);
    }
    Some(actual.to_ascii_lowercase().cmp(&literal.to_ascii_lowercase()))
}

fn like(actual: &str, pattern: &str) -> bool {
    let (actual, pattern) = (actual.to_ascii_lowercase(), pattern.to_ascii_lowercase());
    let parts: Vec<&str> = pattern.split('%').collect();
    if parts.len() == 1 {
        return actual == pattern;
    }
    let mut rest = actual.as_str();
    for (i, part) in parts.iter().enumerate() {
        if i == 0 {
            let Some(r) = rest.strip_prefix(part) else { return false };
            rest = r;
        } else if i == parts.len() - 1 {
            return rest.ends_with(part);
        } else {
            let Some(at) = rest.find(part) else { return false };
            rest = &rest[at + part.len()..];
        }
    }
    true
}

fn matches(entity: &Value, c: &Condition) -> bool {
    let Some(actual) = field_value(entity, &c.field) else { return false };
    let ordering = |literal: &str| compare(&c.field, actual, literal);
    match c.operator {
        Operator::Eq => ordering(&c.values[0]) == Some(std::cmp::Ordering::Equal),
        Operator::Lt => ordering(&c.values[0]) == Some(std::cmp::Ordering::Less),
        Operator::Gt => ordering(&c.values[0]) == Some(std::cmp::Ordering::Greater),
        Operator::Le => matches!(ordering(&c.values[0]), Some(std::cmp::Ordering::Less | std::cmp::Ordering::Equal)),
        Operator::Ge => matches!(ordering(&c.values[0]), Some(std::cmp::Ordering::Greater | std::cmp::Ordering::Equal)),
        Operator::In => c.values.iter().any(|v| ordering(v) == Some(std::cmp::Ordering::Equal)),
        Operator::Like => like(&text_of(actual), &c.values[0]),
    }
}

/// Does the entity have this property (path)?
fn has_property(sample: &Value, field: &str) -> bool {
    let mut current = sample;
    for part in field.split('.') {
        let Some(next) = current.as_object().and_then(|m| m.iter().find(|(k, _)| k.eq_ignore_ascii_case(part)).map(|(_, v)| v)) else {
            return false;
        };
        current = next;
    }
    true
}

fn run_query(sim: &QuickBooksSim, text: &str) -> Result<Value, Failure> {
    let statement = parse_statement(text)?;
    let (entities, name_list): (Vec<Value>, bool) = match statement.entity.as_str() {
        "Item" => (sim.erp.products().iter().map(|p| sim.item_json(p)).collect(), true),
        "Customer" => (sim.erp.customers().iter().map(|c| sim.customer_json(c)).collect(), true),
        "Estimate" => (sim.estimates().iter().map(|o| sim.estimate_json(o)).collect(), false),
        other => return Err(Failure::query_invalid(&format!("value {other} is not a valid entity."))),
    };
    // A property the entity lacks is refused even when nothing matches.
    let sample = match statement.entity.as_str() {
        "Estimate" => {
            let example = SimOrder {
                id: ESTIMATE_ID_BASE + 1,
                platform: NAME.into(),
                number: 1,
                customer: Customer {
                    id: CUSTOMER_ID_BASE,
                    first_name: String::new(),
                    last_name: String::new(),
                    company: "c".into(),
                    email: String::new(),
                    tags: Vec::new(),
                },
                lines: Vec::new(),
                location: 0,
                created_at: crate::clock::format_rfc3339(sim.opened_at),
                state: OrderState::Open,
                tags: Default::default(),
                notes: Vec::new(),
                fulfillment_orders: Vec::new(),
                holds: Vec::new(),
                cancel_reason: None,
                extra: [("qbo_fields".to_string(), json!({"PrivateNote": "", "CustomerMemo": {"value": ""}}))].into(),
            };
            sim.estimate_json(&example)
        }
        _ => entities.first().cloned().unwrap_or(json!({})),
    };
    let mut wanted: Vec<&str> = statement.conditions.iter().map(|c| c.field.as_str()).collect();
    if let Some((field, _)) = &statement.order_by {
        wanted.push(field);
    }
    if let Projection::Fields(fields) = &statement.projection {
        wanted.extend(fields.iter().map(String::as_str));
    }
    if let Some(unknown) = wanted.iter().find(|f| !has_property(&sample, f)) {
        return Err(Failure::query_invalid(&format!("Property {unknown} not found for Entity {}", statement.entity)));
    }
    let filters_active = statement.conditions.iter().any(|c| c.field.eq_ignore_ascii_case("Active"));
    let mut found: Vec<Value> = entities
        .into_iter()
        .filter(|e| !name_list || filters_active || e.get("Active") == Some(&json!(true)))
        .filter(|e| statement.conditions.iter().all(|c| matches(e, c)))
        .collect();
    match &statement.order_by {
        Some((field, descending)) => found.sort_by(|a, b| {
            let ordering = match (field_value(a, field), field_value(b, field)) {
                (Some(x), Some(y)) => compare(field, x, &text_of(y)).unwrap_or(std::cmp::Ordering::Equal),
                (x, y) => x.is_some().cmp(&y.is_some()),
            };
            if *descending { ordering.reverse() } else { ordering }
        }),
        None => found.sort_by_key(|e| e.get("Id").and_then(Value::as_str).and_then(|id| id.parse::<u64>().ok()).unwrap_or(u64::MAX)),
    }
    let mut response = Map::new();
    if statement.projection == Projection::Count {
        response.insert("totalCount".into(), json!(found.len()));
        return Ok(json!({"QueryResponse": response, "time": response_time()}));
    }
    let page: Vec<Value> = found
        .into_iter()
        .skip(statement.start_position - 1)
        .take(statement.max_results)
        .map(|e| match &statement.projection {
            Projection::Fields(fields) => {
                let mut sparse = Map::new();
                if let Some(map) = e.as_object() {
                    for f in fields {
                        let top = f.split('.').next().unwrap_or(f);
                        if let Some((k, v)) = map.iter().find(|(k, _)| k.eq_ignore_ascii_case(top)) {
                            sparse.insert(k.clone(), v.clone());
                        }
                    }
                }
                sparse.insert("domain".into(), json!("QBO"));
                sparse.insert("sparse".into(), json!(true));
                Value::Object(sparse)
            }
            _ => e,
        })
        .collect();
    if !page.is_empty() {
        let count = page.len();
        response.insert(statement.entity.clone(), Value::Array(page));
        response.insert("startPosition".into(), json!(statement.start_position));
        response.insert("maxResults".into(), json!(count));
    }
    Ok(json!({"QueryResponse": response, "time": response_time()}))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sandbox::erp::LineRequest;
    use crate::sandbox::platforms::testkit::{Received, receiver};

    #[test]
    fn parses_the_query_language() {
        let s = parse_statement(
            "select * from Estimate where MetaData.LastUpdatedTime > '2025-06-01T00:00:00-00:00' and Id in ('1', '2') orderby MetaData.LastUpdatedTime desc startposition 11 maxresults 5000",
        )
        .unwrap_or_else(|_| panic!("parses"));
        assert_eq!(s.entity, "Estimate");
        assert_eq!(s.conditions.len(), 2);
        assert_eq!(s.conditions[1].values, vec!["1", "2"]);
        assert_eq!(s.order_by, Some(("MetaData.LastUpdatedTime".into(), true)));
        assert_eq!((s.start_position, s.max_results), (11, 1000));
        let s = parse_statement("SELECT COUNT(*) FROM Item WHERE Name LIKE 'God%' AND Active = true").unwrap_or_else(|_| panic!("parses"));
        assert_eq!(s.projection, Projection::Count);
        let bad = parse_statement("SELECT * FROM Item WHERE").err().map(|f| f.body["Fault"]["Error"][0]["code"].clone());
        assert_eq!(bad, Some(json!("4000")));
        assert!(parse_statement("SELECT * FROM Item WHERE Name = 'a' OR Name = 'b'").is_err());
        assert!(like("Godzilla Pro pinball", "god%pinball"));
        assert!(!like("Jaws", "god%"));
        assert_eq!(parse_time("2011-08-10T10:20:30-0700"), parse_time("2011-08-10T17:20:30Z"));
        assert_eq!(parse_time("2025-06-01T00:00:00-00:00"), parse_time("2025-06-01T00:00:00Z"));
        assert!(parse_time("2025-06-01T00:00:00").is_some());
    }

    struct Client {
        http: reqwest::Client,
        base: String,
        realm: String,
        token: String,
    }

    impl Client {
        async fn get(&self, path: &str) -> (u16, Value) {
            let resp = self
                .http
                .get(format!("{}/v3/company/{}/{path}", self.base, self.realm))
                .bearer_auth(&self.token)
                .header("Accept", "application/json")
                .send()
                .await
                .unwrap();
            (resp.status().as_u16(), resp.json().await.unwrap_or(Value::Null))
        }

        async fn query(&self, q: &str) -> (u16, Value) {
            let resp = self
                .http
                .get(format!("{}/v3/company/{}/query", self.base, self.realm))
                .query(&[("query", q), ("minorversion", "75")])
                .bearer_auth(&self.token)
                .header("Accept", "application/json")
                .send()
                .await
                .unwrap();
            (resp.status().as_u16(), resp.json().await.unwrap_or(Value::Null))
        }

        async fn update(&self, body: Value, request_id: Option<&str>) -> (u16, Value) {
            let mut url = format!("{}/v3/company/{}/estimate?minorversion=75", self.base, self.realm);
            if let Some(r) = request_id {
                url.push_str(&format!("&requestid={r}"));
            }
            let resp = self.http.post(url).bearer_auth(&self.token).header("Accept", "application/json").json(&body).send().await.unwrap();
            (resp.status().as_u16(), resp.json().await.unwrap_or(Value::Null))
        }
    }

    async fn refresh_with(http: &reqwest::Client, token_url: &str, id: &str, secret: &str, refresh: &str) -> (u16, Value) {
        let resp = http
            .post(token_url)
            .basic_auth(id, Some(secret))
            .header("Accept", "application/json")
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body(format!("grant_type=refresh_token&refresh_token={refresh}"))
            .send()
            .await
            .unwrap();
        (resp.status().as_u16(), resp.json().await.unwrap_or(Value::Null))
    }

    struct Setup {
        sandbox: crate::sandbox::Sandbox,
        client: Client,
        verifier: String,
        hooks: Received,
    }

    async fn setup() -> Setup {
        let sandbox = crate::sandbox::Sandbox::start(
            tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
            crate::sandbox::SandboxOptions::generated(),
        )
        .await
        .unwrap();
        crate::sandbox::erp::seed_amusement_catalogue(&sandbox.erp, "2026-12-10", "2027-02-01");
        let (hook_url, hooks) = receiver().await;
        sandbox.set_webhook_target(NAME, &hook_url);
        let connection = sandbox.connection(NAME).unwrap();
        let http = reqwest::Client::new();
        let (status, tokens) = refresh_with(
            &http,
            &connection.values["token_url"],
            &connection.secrets["client_id"],
            &connection.secrets["client_secret"],
            &connection.secrets["refresh_token"],
        )
        .await;
        assert_eq!(status, 200, "{tokens}");
        Setup {
            client: Client {
                http,
                base: sandbox.base_url(NAME),
                realm: connection.values["realm_id"].clone(),
                token: tokens["access_token"].as_str().unwrap().to_string(),
            },
            verifier: connection.secrets["webhook_verifier"].clone(),
            sandbox,
            hooks,
        }
    }

    impl Setup {
        fn verified(&self, index: usize) -> Value {
            let (headers, body) = self.hooks.lock().unwrap()[index].clone();
            let expected = base64::engine::general_purpose::STANDARD.encode(hmac_bytes(
                SignatureAlgorithm::HmacSha256,
                self.verifier.as_bytes(),
                &body,
            ));
            assert_eq!(headers.get("intuit-signature").and_then(|v| v.to_str().ok()), Some(expected.as_str()));
            serde_json::from_slice(&body).unwrap()
        }

        fn customer(&self) -> u64 {
            self.sandbox.erp.customers()[0].id
        }
    }

    #[tokio::test]
    async fn refresh_tokens_rotate_and_access_tokens_expire() {
        let sandbox = crate::sandbox::Sandbox::start(
            tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
            crate::sandbox::SandboxOptions::generated(),
        )
        .await
        .unwrap();
        crate::sandbox::erp::seed_amusement_catalogue(&sandbox.erp, "2026-12-10", "2027-02-01");
        // An account of our own on the same ERP, to reach its test controls.
        let sim = QuickBooksSim::new(&SimContext { erp: sandbox.erp.clone(), faults: sandbox.faults.clone() });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}/quickbooks", listener.local_addr().unwrap());
        let app = Router::new().nest("/quickbooks", sim.clone().router());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        let connection = sim.connection(&base);
        let token_url = connection.values["token_url"].clone();
        let (id, secret) = (connection.secrets["client_id"].clone(), connection.secrets["client_secret"].clone());
        let first_refresh = connection.secrets["refresh_token"].clone();
        let http = reqwest::Client::new();

        let (status, body) = refresh_with(&http, &token_url, &id, "wrong", &first_refresh).await;
        assert_eq!((status, body), (401, json!({"error": "invalid_client"})));
        let (status, tokens) = refresh_with(&http, &token_url, &id, &secret, &first_refresh).await;
        assert_eq!(status, 200);
        assert_eq!(tokens["expires_in"], 3600);
        assert_eq!(tokens["token_type"], "bearer");
        assert_ne!(tokens["refresh_token"], json!(first_refresh));
        assert_eq!(tokens["refresh_token"], json!(sim.current_refresh_token()));
        let (status, body) = refresh_with(&http, &token_url, &id, &secret, &first_refresh).await;
        assert_eq!((status, body), (400, json!({"error": "invalid_grant"})));

        let client = Client {
            http: http.clone(),
            base: base.clone(),
            realm: sim.creds.realm_id.clone(),
            token: tokens["access_token"].as_str().unwrap().into(),
        };
        let (status, item) = client.get("item/19").await;
        assert_eq!(status, 200, "{item}");
        assert_eq!(item["Item"]["Sku"], "PB-STERN-GODZ-PRO");
        assert_eq!(item["Item"]["QtyOnHand"], 3);

        sim.expire_access_tokens();
        let resp = http
            .get(format!("{base}/v3/company/{}/item/19", sim.creds.realm_id))
            .bearer_auth(&client.token)
            .header("Accept", "application/json")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 401);
        assert_eq!(resp.headers().get("www-authenticate").unwrap(), r#"Bearer realm="Intuit", error="invalid_token""#);
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["fault"]["error"][0]["code"], "3200");
        assert!(body["fault"]["error"][0]["detail"].as_str().unwrap().starts_with("Token expired"));

        sim.set_access_token_lifetime(Duration::from_secs(60));
        let (status, again) = refresh_with(&http, &token_url, &id, &secret, &sim.current_refresh_token()).await;
        assert_eq!((status, again["expires_in"].as_u64()), (200, Some(60)));
        assert_eq!(sim.refreshes(), 2);
        let other = Client { realm: "123".into(), token: again["access_token"].as_str().unwrap().into(), ..client };
        let (status, forbidden) = other.get("item/19").await;
        assert_eq!((status, &forbidden["fault"]["error"][0]["code"]), (403, &json!("3100")));
    }

    #[tokio::test]
    async fn estimates_items_queries_and_webhooks() {
        let s = setup().await;
        let (order, status) =
            s.sandbox.place_order(NAME, s.customer(), &[LineRequest { sku: "PB-STERN-GODZ-PRO".into(), qty: 2 }]).await.unwrap();
        assert_eq!(status, 200);
        let created = s.verified(0);
        let entity = &created["eventNotifications"][0]["dataChangeEvent"]["entities"][0];
        assert_eq!(entity["name"], "Estimate");
        assert_eq!(entity["operation"], "Create");
        assert_eq!(created["eventNotifications"][0]["realmId"], json!(s.client.realm));
        let id = entity["id"].as_str().unwrap().to_string();
        assert_eq!(id, estimate_id(order.id));
        s.sandbox.redeliver(order.id).await.unwrap();
        let bodies: Vec<Vec<u8>> = s.hooks.lock().unwrap().iter().map(|(_, body)| body.clone()).collect();
        assert_eq!(bodies.len(), 2);
        assert_eq!(bodies[1], bodies[0]);

        let (status, estimate) = s.client.get(&format!("estimate/{id}")).await;
        assert_eq!(status, 200, "{estimate}");
        let e = &estimate["Estimate"];
        assert_eq!((e["TxnStatus"].as_str(), e["SyncToken"].as_str()), (Some("Pending"), Some("0")));
        assert_eq!(e["Line"][0]["DetailType"], "SalesItemLineDetail");
        assert_eq!(e["Line"][0]["SalesItemLineDetail"]["Qty"], 2);
        assert_eq!(e["Line"][1]["DetailType"], "SubTotalLineDetail");
        assert_eq!(e["TotalAmt"], 17998.0);
        let item = e["Line"][0]["SalesItemLineDetail"]["ItemRef"]["value"].as_str().unwrap().to_string();
        let (status, missing) = s.client.get("estimate/99999").await;
        assert_eq!((status, &missing["Fault"]["Error"][0]["code"]), (400, &json!("610")));

        // Stock: one company-wide figure that estimates do not lower.
        let (status, items) = s.client.query(&format!("SELECT Id, Sku, QtyOnHand FROM Item WHERE Id IN ('{item}', '20')")).await;
        assert_eq!(status, 200, "{items}");
        assert_eq!(items["QueryResponse"]["maxResults"], 2);
        assert_eq!(items["QueryResponse"]["Item"][0]["QtyOnHand"], 3);
        assert_eq!(items["QueryResponse"]["Item"][0]["sparse"], true);
        assert!(items["QueryResponse"]["Item"][0].get("Name").is_none());
        let (_, by_sku) = s.client.query("select * from Item where Sku = 'SP-COIN-MECH-EU'").await;
        assert_eq!(by_sku["QueryResponse"]["Item"][0]["QtyOnHand"], 6);
        let (_, count) = s.client.query("SELECT COUNT(*) FROM Item").await;
        assert_eq!(count["QueryResponse"]["totalCount"], 10, "the discontinued crane is inactive");
        let (_, all) = s.client.query("SELECT COUNT(*) FROM Item WHERE Active IN (true, false)").await;
        assert_eq!(all["QueryResponse"]["totalCount"], 11);
        let (_, page) = s.client.query("SELECT * FROM Item ORDERBY Name STARTPOSITION 9 MAXRESULTS 5").await;
        assert_eq!((page["QueryResponse"]["startPosition"].as_u64(), page["QueryResponse"]["maxResults"].as_u64()), (Some(9), Some(2)));
        let (_, none) = s.client.query("SELECT * FROM Item WHERE Name = 'Nothing like this'").await;
        assert_eq!(none["QueryResponse"], json!({}));
        let (status, bad) = s.client.query("SELECT * FROM Item WHERE Name = 'a' OR Name = 'b'").await;
        assert_eq!((status, &bad["Fault"]["Error"][0]["code"], &bad["Fault"]["type"]), (400, &json!("4000"), &json!("ValidationFault")));
        let (status, unknown) = s.client.query("SELECT * FROM Item WHERE Colour = 'red'").await;
        assert_eq!((status, &unknown["Fault"]["Error"][0]["code"]), (400, &json!("4001")));

        // Polling by LastUpdatedTime, with an offset in the literal.
        let (_, since) = s
            .client
            .query("SELECT * FROM Estimate WHERE MetaData.LastUpdatedTime > '2020-01-01T00:00:00-07:00' ORDERBY MetaData.LastUpdatedTime")
            .await;
        assert_eq!(since["QueryResponse"]["Estimate"][0]["Id"], json!(id));
        let (_, later) = s.client.query("SELECT * FROM Estimate WHERE MetaData.LastUpdatedTime > '2099-01-01T00:00:00Z'").await;
        assert_eq!(later["QueryResponse"], json!({}));

        // Without Accept: application/json the answer is XML.
        let resp = s
            .client
            .http
            .get(format!("{}/v3/company/{}/item/{item}", s.client.base, s.client.realm))
            .bearer_auth(&s.client.token)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.headers().get("content-type").unwrap(), "application/xml");
        assert!(resp.text().await.unwrap().starts_with("<?xml"));
    }

    #[tokio::test]
    async fn sparse_updates_are_idempotent_and_locked() {
        let s = setup().await;
        let (order, _) = s.sandbox.place_order(NAME, s.customer(), &[LineRequest { sku: "CC-CLAW-42".into(), qty: 1 }]).await.unwrap();
        let id = estimate_id(order.id);
        let accept = json!({"Id": id, "SyncToken": "0", "sparse": true, "TxnStatus": "Accepted", "PrivateNote": "stock-sync: approved"});
        let (status, first) = s.client.update(accept.clone(), Some("req-1")).await;
        assert_eq!(status, 200, "{first}");
        assert_eq!(first["Estimate"]["TxnStatus"], "Accepted");
        assert_eq!(first["Estimate"]["SyncToken"], "1");
        assert_eq!(first["Estimate"]["PrivateNote"], "stock-sync: approved");
        let (status, replay) = s.client.update(accept.clone(), Some("req-1")).await;
        assert_eq!((status, &replay["Estimate"]), (200, &first["Estimate"]));
        assert_eq!(s.sandbox.erp.attempts()["quickbooks:request:req-1"], 2);
        let (status, stale) = s.client.update(accept, None).await;
        assert_eq!((status, &stale["Fault"]["Error"][0]["code"]), (400, &json!("5010")));
        assert_eq!(stale["Fault"]["Error"][0]["Message"], "Stale Object Error");
        let (status, wrong) = s.client.update(json!({"Id": id, "SyncToken": "1", "sparse": true, "TxnStatus": "Approved"}), None).await;
        assert_eq!((status, &wrong["Fault"]["Error"][0]["code"]), (400, &json!("2170")));
        let (status, odd) = s.client.update(json!({"Id": id, "SyncToken": "1", "sparse": true, "Status": "x"}), None).await;
        assert_eq!((status, &odd["Fault"]["Error"][0]["code"]), (400, &json!("2010")));

        // Rejecting gives the units back once, even when the customer cancels afterwards.
        assert_eq!(s.sandbox.erp.totals("CC-CLAW-42").1, 1);
        let (status, rejected) = s.client.update(json!({"Id": id, "SyncToken": "1", "sparse": true, "TxnStatus": "Rejected"}), None).await;
        assert_eq!((status, &rejected["Estimate"]["TxnStatus"]), (200, &json!("Rejected")));
        assert_eq!(s.sandbox.erp.totals("CC-CLAW-42").1, 0);
        s.sandbox.cancel_order(order.id).await.unwrap();
        assert_eq!(s.sandbox.erp.totals("CC-CLAW-42").1, 0);
        let update = s.verified(1);
        assert_eq!(update["eventNotifications"][0]["dataChangeEvent"]["entities"][0]["operation"], "Update");
        let (_, closed) = s.client.get(&format!("estimate/{id}")).await;
        assert_eq!((closed["Estimate"]["TxnStatus"].as_str(), closed["Estimate"]["SyncToken"].as_str()), (Some("Closed"), Some("3")));
        let effects = s.sandbox.erp.effects().into_iter().filter(|e| e.kind == "estimate_update").count();
        assert_eq!(effects, 2);
    }

    #[tokio::test]
    async fn shipping_closes_the_estimate_and_faults_speak_quickbooks() {
        let s = setup().await;
        let (order, _) = s.sandbox.place_order(NAME, s.customer(), &[LineRequest { sku: "BD-JAMMA-60IN1".into(), qty: 5 }]).await.unwrap();
        let (_, before) = s.client.query("SELECT * FROM Item WHERE Sku = 'BD-JAMMA-60IN1'").await;
        assert_eq!(before["QueryResponse"]["Item"][0]["QtyOnHand"], 25, "estimates do not lower QtyOnHand");
        assert_eq!(before["QueryResponse"]["Item"][0]["SyncToken"], "0");
        s.sandbox.ship_order(order.id).await.unwrap();
        let (_, shipped) = s.client.get(&format!("estimate/{}", estimate_id(order.id))).await;
        assert_eq!(shipped["Estimate"]["TxnStatus"], "Closed");
        assert_eq!(shipped["Estimate"]["LinkedTxn"][0]["TxnType"], "Invoice");
        let (_, item) = s.client.query("SELECT * FROM Item WHERE Sku = 'BD-JAMMA-60IN1'").await;
        assert_eq!(item["QueryResponse"]["Item"][0]["QtyOnHand"], 20);
        assert_eq!(item["QueryResponse"]["Item"][0]["SyncToken"], "1");

        s.sandbox.faults.set(vec![crate::sandbox::faults::FaultRule {
            platform: NAME.into(),
            operation: Some("query".into()),
            kind: FaultKind::Throttle { retry_after_s: 2.0 },
            rate: 1.0,
            when: When::Before,
            limit: Some(1),
        }]);
        let resp = s
            .client
            .http
            .get(format!("{}/v3/company/{}/query", s.client.base, s.client.realm))
            .query(&[("query", "SELECT * FROM Item")])
            .bearer_auth(&s.client.token)
            .header("Accept", "application/json")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 429);
        assert!(resp.headers().get("retry-after").is_none());
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["Fault"]["Error"][0]["code"], "003001");
        let (status, _) = s.client.query("SELECT * FROM Item").await;
        assert_eq!(status, 200);
    }
}
