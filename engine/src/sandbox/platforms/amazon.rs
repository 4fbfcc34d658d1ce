//! Amazon Selling Partner API, simulated: Login with Amazon tokens, the
//! Orders API v0 (polled), the Listings Items API 2021-08-01 for the
//! merchant-fulfilled quantity, and seller cancellations through an
//! order-acknowledgement feed (Feeds API 2021-06-30), in Amazon's own shapes.
//!
//! What it imitates:
//! - `POST /auth/o2/token` (form or JSON body) trading the refresh token, client
//!   id and secret for an `Atza|…` access token valid one hour, with LWA's
//!   error bodies (`invalid_client` 401, `invalid_grant` 400, …);
//! - `x-amz-access-token` on every SP-API call (403 `Unauthorized` when
//!   missing, unknown or expired); `x-amzn-RequestId` on every answer and
//!   `x-amzn-RateLimit-Limit` on 200/201/202/400/404 answers;
//! - a token bucket per operation with Amazon's default rate and burst,
//!   answering 429 `QuotaExceeded` without `Retry-After`;
//! - `GET /orders/v0/orders` (either `CreatedAfter` or `LastUpdatedAfter`,
//!   `OrderStatuses`, `MaxResultsPerPage` 1–100, `NextToken` that replaces
//!   every filter but `MarketplaceIds`), `GET /orders/v0/orders/{id}` and
//!   `…/orderItems`; orders are `Unshipped`, then `Canceled` or `Shipped`;
//! - `GET`/`PATCH /listings/2021-08-01/items/{sellerId}/{sku}`: the DEFAULT
//!   (merchant-fulfilled) quantity is what the warehouse can still sell
//!   (on hand less committed; Amazon lowers it as orders come in); a PATCH of
//!   `/attributes/fulfillment_availability` sets it;
//! - the feed upload dance: `createFeedDocument` returns a pre-signed URL
//!   into an S3 look-alike under this prefix (`/tortuga-prod-na/{id}`, PUT
//!   without the SP-API token, the `Content-Type` given at creation, query
//!   signature checked, five minutes to use it), `createFeed` processes a
//!   `POST_ORDER_ACKNOWLEDGEMENT_DATA` feed at once (StatusCode `Failure`
//!   cancels the order, `Success` acknowledges it), `getFeed` reports `DONE`
//!   with a processing report as the result document.
//!
//! Choices where the docs were not conclusive:
//! - The query window ends now (Amazon ends it two minutes before now):
//!   `LastUpdatedBefore`/`CreatedBefore` in the answer is the time of the
//!   query, and a start or end later than now answers 400 `InvalidInput`
//!   with Amazon's generic message ("The input you have submitted is not
//!   valid. Please check your input and try again.", empty details), as does
//!   an end before the start, a malformed order id or an unreadable
//!   `NextToken`; an unreadable date answers "This is an invalid input" with
//!   details "Invalid date-time field(s) [createdAfter].". Every order is
//!   MFN, so `FulfillmentChannels=AFN` finds none.
//!   `LastUpdateDate` moves with every change; a cancel or shipment made
//!   outside this API is stamped when this API next reads the order.
//! - Canceled orders carry no `OrderTotal`; their items keep their quantities.
//! - An unknown order answers 404 `NotFound` (reports exist of 200 with an
//!   empty payload); a malformed order id answers 400 `InvalidInput`.
//! - Unknown SKU: 404 `NOT_FOUND` "SKU 'X' not found in marketplace …", for
//!   GET and PATCH. A `sellerId` other than the account's answers 403.
//! - PATCH: a body without `productType` or `patches` answers 400; a
//!   fulfillment availability without a DEFAULT channel or a whole quantity
//!   of zero or more answers status `INVALID` with an issue (code `90220`,
//!   unconfirmed); other attribute paths are accepted and ignored;
//!   `mode=VALIDATION_PREVIEW` answers `VALID` and changes nothing.
//! - Only `POST_ORDER_ACKNOWLEDGEMENT_DATA` feeds are simulated (others
//!   answer 400). A Failure acknowledgement cancels the whole order (whatever
//!   items it names); a shipped or unknown order is an error in the
//!   processing report. A feed whose document was never uploaded, or is not
//!   an `AmazonEnvelope`, ends `FATAL`.
//! - Grantless tokens (`client_credentials`) are issued but refused by the
//!   seller operations simulated here.
//! - `x-amzn-RateLimit-Limit` accompanies the answers the API models list it
//!   for (200, 201, 202, 400, 404), not 403, 429 or 5xx.
//! - A throttle fault answers like the service it hits: SP-API 429
//!   `QuotaExceeded`, Login with Amazon 429 `server_error` (shape of LWA's
//!   errors, wording unconfirmed), the document store 503 `SlowDown`.
//!
//! Fault operations: `lwa.token`, `orders.list`, `orders.get`,
//! `orderitems.get`, `listings.get`, `listings.patch`,
//! `feeddocuments.create`, `feeddocuments.get`, `feeds.create`, `feeds.get`,
//! `feeds.upload` (the S3 look-alike, PUT and GET).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use base64::Engine as _;
use serde_json::{Value, json};

use crate::config::raw::SignatureAlgorithm;
use crate::connector::webhook::{encode_hex, hmac_bytes};
use crate::sandbox::erp::{Erp, OrderLine, OrderState, Product, SimOrder};
use crate::sandbox::faults::{self, FaultKind, Faults, When};
use crate::sandbox::platforms::{Delivery, OrderEvent, SimConnection, SimContext, SimPlatform};

const NAME: &str = "amazon";
const MARKETPLACE_ID: &str = "ATVPDKIKX0DER";
const SELLER_ID: &str = "A2ARCADE0SELLER";
const TOKEN_LIFETIME: Duration = Duration::from_secs(3600);
const UPLOAD_LIFETIME_MS: u64 = 300_000;
const ACK_FEED: &str = "POST_ORDER_ACKNOWLEDGEMENT_DATA";
const REPORT_CONTENT_TYPE: &str = "text/xml; charset=UTF-8";
const GENERIC_INVALID_INPUT: &str = "The input you have submitted is not valid. Please check your input and try again.";

/// An operation's usage plan: requests per second and burst.
struct Plan {
    rate: f64,
    burst: f64,
    /// The rate as `x-amzn-RateLimit-Limit` shows it.
    header: &'static str,
}

const GET_ORDERS: Plan = Plan { rate: 0.0167, burst: 20.0, header: "0.0167" };
const GET_ORDER: Plan = Plan { rate: 0.5, burst: 30.0, header: "0.5" };
const GET_ORDER_ITEMS: Plan = Plan { rate: 0.5, burst: 30.0, header: "0.5" };
const GET_LISTINGS_ITEM: Plan = Plan { rate: 5.0, burst: 10.0, header: "5.0" };
const PATCH_LISTINGS_ITEM: Plan = Plan { rate: 5.0, burst: 5.0, header: "5.0" };
const CREATE_FEED_DOCUMENT: Plan = Plan { rate: 0.5, burst: 15.0, header: "0.5" };
const GET_FEED_DOCUMENT: Plan = Plan { rate: 0.0222, burst: 10.0, header: "0.0222" };
const CREATE_FEED: Plan = Plan { rate: 0.0083, burst: 15.0, header: "0.0083" };
const GET_FEED: Plan = Plan { rate: 2.0, burst: 15.0, header: "2.0" };

/// The app's LWA credentials and the selling account.
#[derive(Debug, Clone)]
pub struct AmazonCredentials {
    pub client_id: String,
    pub client_secret: String,
    pub refresh_token: String,
    pub seller_id: String,
    pub marketplace_id: String,
}

pub struct AmazonSim {
    pub erp: Arc<Erp>,
    faults: Arc<Faults>,
    pub creds: AmazonCredentials,
    state: Mutex<SimState>,
}

struct AccessToken {
    expires: Instant,
    /// Issued for `client_credentials`: no seller behind it.
    grantless: bool,
}

struct FeedDocument {
    content_type: String,
    content: Option<Vec<u8>>,
    /// The signature of the URL last handed out and until when it works.
    signature: String,
    expires_ms: u64,
}

struct SimState {
    tokens: HashMap<String, AccessToken>,
    token_requests: u64,
    buckets: HashMap<&'static str, (f64, Instant)>,
    rate_multiplier: f64,
    throttled: u64,
    /// Each order's status as last seen and when it last changed (ms).
    orders_seen: HashMap<u64, (&'static str, u64)>,
    listing_updated_ms: HashMap<String, u64>,
    documents: HashMap<String, FeedDocument>,
    feeds: BTreeMap<String, Value>,
    requests: HashMap<&'static str, u64>,
    url_secret: String,
    started_ms: u64,
}

/// Every simulator built, to find the one serving a given ERP (test controls).
static INSTANCES: Mutex<Vec<Weak<AmazonSim>>> = Mutex::new(Vec::new());

fn now_ms() -> u64 {
    crate::clock::unix_ms(time::OffsetDateTime::now_utc())
}

fn instant_of(ms: u64) -> time::OffsetDateTime {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
}

/// `2026-03-02T14:05:11Z`, as the Orders API writes times.
fn iso_seconds(ms: u64) -> String {
    instant_of(ms).format(time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z")).unwrap_or_default()
}

/// `2026-03-02T14:05:11.630Z`, as the Feeds API writes times.
fn iso_millis(ms: u64) -> String {
    instant_of(ms)
        .format(time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"))
        .unwrap_or_default()
}

/// An ISO 8601 time from a query; UTC when no zone is given. Unix ms.
fn parse_time(text: &str) -> Option<u64> {
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

/// `113-0581234-5670001` for ERP order 5812345670001.
fn amazon_order_id(id: u64) -> String {
    let digits = format!("{id:014}");
    format!("113-{}-{}", &digits[..7], &digits[7..14])
}

fn parse_amazon_order_id(text: &str) -> Option<u64> {
    let groups: Vec<&str> = text.split('-').collect();
    let well_formed =
        groups.len() == 3 && [3, 7, 7].iter().zip(&groups).all(|(n, g)| g.len() == *n && g.chars().all(|c| c.is_ascii_digit()));
    if !well_formed {
        return None;
    }
    if groups[0] != "113" {
        return Some(0);
    }
    format!("{}{}", groups[1], groups[2]).parse().ok()
}

fn asin(product_id: u64) -> String {
    let mut n = product_id;
    let mut out = Vec::new();
    for _ in 0..8 {
        let d = (n % 36) as u8;
        out.push(if d < 10 { b'0' + d } else { b'A' + d - 10 });
        n /= 36;
    }
    out.reverse();
    format!("B0{}", String::from_utf8_lossy(&out))
}

/// A price such as "8999.00" in cents.
fn cents(price: &str) -> i64 {
    let (whole, frac) = price.trim().split_once('.').unwrap_or((price.trim(), "0"));
    let frac: String = frac.chars().chain("00".chars()).take(2).collect();
    whole.parse::<i64>().unwrap_or(0) * 100 + frac.parse::<i64>().unwrap_or(0)
}

fn amount(cents: i64) -> String {
    format!("{}.{:02}", cents / 100, cents % 100)
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

fn form_pairs(raw: &str) -> HashMap<String, String> {
    raw.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

/// Query parameters (names are case-sensitive, as Amazon's are).
struct Query(HashMap<String, String>);

impl Query {
    fn parse(raw: Option<&str>) -> Query {
        Query(form_pairs(raw.unwrap_or("")))
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str).filter(|v| !v.is_empty())
    }

    fn list(&self, name: &str) -> Option<Vec<String>> {
        self.get(name).map(|v| v.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect())
    }
}

fn sp_error(status: StatusCode, code: &str, message: &str, details: &str) -> Response {
    (status, axum::Json(json!({"errors": [{"code": code, "message": message, "details": details}]}))).into_response()
}

fn invalid_input(message: &str) -> Response {
    sp_error(StatusCode::BAD_REQUEST, "InvalidInput", message, "")
}

/// An SP-API error, before it is answered.
struct SpError {
    status: StatusCode,
    code: &'static str,
    message: String,
    details: String,
}

impl SpError {
    fn invalid(message: impl Into<String>) -> SpError {
        SpError { status: StatusCode::BAD_REQUEST, code: "InvalidInput", message: message.into(), details: String::new() }
    }

    /// The Orders API's answer to a query it cannot use: one generic message, no details.
    fn unusable_input() -> SpError {
        SpError::invalid(GENERIC_INVALID_INPUT)
    }

    /// The Orders API's answer to a date-time parameter it cannot read.
    fn unreadable_time(parameter: &str) -> SpError {
        let mut camel = parameter.to_string();
        if let Some(first) = camel.get_mut(..1) {
            first.make_ascii_lowercase();
        }
        SpError { details: format!("Invalid date-time field(s) [{camel}]."), ..SpError::invalid("This is an invalid input") }
    }

    fn response(self) -> Response {
        sp_error(self.status, self.code, &self.message, &self.details)
    }
}

fn lwa_error(status: StatusCode, error: &str, description: &str) -> Response {
    (status, axum::Json(json!({"error_description": description, "error": error}))).into_response()
}

fn s3_error(code: &str, message: &str) -> Response {
    let body = format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code><Message>{message}</Message></Error>");
    (StatusCode::FORBIDDEN, [("content-type", "application/xml")], body).into_response()
}

fn order_status(order: &SimOrder) -> &'static str {
    if order.state == OrderState::Cancelled {
        "Canceled"
    } else if order.extra.contains_key("fulfilled") {
        "Shipped"
    } else {
        "Unshipped"
    }
}

// --- a little XML, enough for feed envelopes -----------------------------------

/// The inner text of every `<tag>` element in `xml`, in order.
fn elements<'a>(xml: &'a str, tag: &str) -> Vec<&'a str> {
    let (open, close) = (format!("<{tag}"), format!("</{tag}>"));
    let mut out = Vec::new();
    let mut rest = xml;
    while let Some(at) = rest.find(&open) {
        let after = &rest[at + open.len()..];
        if !after.starts_with(['>', ' ', '\t', '\n', '\r']) {
            rest = after;
            continue;
        }
        let Some(gt) = after.find('>') else { break };
        let body = &after[gt + 1..];
        let Some(end) = body.find(&close) else { break };
        out.push(&body[..end]);
        rest = &body[end + close.len()..];
    }
    out
}

fn element_text(xml: &str, tag: &str) -> Option<String> {
    elements(xml, tag)
        .first()
        .map(|t| t.trim().replace("&lt;", "<").replace("&gt;", ">").replace("&quot;", "\"").replace("&apos;", "'").replace("&amp;", "&"))
}

fn xml_escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

impl AmazonSim {
    pub fn new(ctx: &SimContext) -> Arc<Self> {
        let refresh: Vec<u8> = (0..96).map(|_| rand::random::<u8>()).collect();
        let sim = Arc::new(AmazonSim {
            erp: ctx.erp.clone(),
            faults: ctx.faults.clone(),
            creds: AmazonCredentials {
                client_id: format!("amzn1.application-oa2-client.{}", crate::sandbox::random_hex(16)),
                client_secret: format!("amzn1.oa2-cs.v1.{}", crate::sandbox::random_hex(32)),
                refresh_token: format!("Atzr|{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(refresh)),
                seller_id: SELLER_ID.into(),
                marketplace_id: MARKETPLACE_ID.into(),
            },
            state: Mutex::new(SimState {
                tokens: HashMap::new(),
                token_requests: 0,
                buckets: HashMap::new(),
                rate_multiplier: 1.0,
                throttled: 0,
                orders_seen: HashMap::new(),
                listing_updated_ms: HashMap::new(),
                documents: HashMap::new(),
                feeds: BTreeMap::new(),
                requests: HashMap::new(),
                url_secret: crate::sandbox::random_hex(32),
                started_ms: now_ms(),
            }),
        });
        let mut all = INSTANCES.lock().unwrap_or_else(|p| p.into_inner());
        all.retain(|w| w.strong_count() > 0);
        all.push(Arc::downgrade(&sim));
        sim
    }

    /// The simulator serving `erp` (for test controls).
    pub fn of(erp: &Arc<Erp>) -> Option<Arc<AmazonSim>> {
        let all = INSTANCES.lock().unwrap_or_else(|p| p.into_inner());
        all.iter().filter_map(Weak::upgrade).find(|s| Arc::ptr_eq(&s.erp, erp))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SimState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Make every access token handed out so far expire now.
    pub fn expire_access_tokens(&self) {
        let now = Instant::now();
        for t in self.lock().tokens.values_mut() {
            t.expires = now;
        }
    }

    /// How many requests reached the token endpoint.
    pub fn token_requests(&self) -> u64 {
        self.lock().token_requests
    }

    /// Refill every operation's bucket `multiplier` times faster than Amazon
    /// does (tests poll faster than real life).
    pub fn set_rate_multiplier(&self, multiplier: f64) {
        self.lock().rate_multiplier = multiplier.max(0.0);
    }

    /// Requests answered 429 by the usage plans.
    pub fn throttled(&self) -> u64 {
        self.lock().throttled
    }

    /// How many requests named `operation` (e.g. `orders.list`) arrived.
    pub fn requests(&self, operation: &str) -> u64 {
        self.lock().requests.get(operation).copied().unwrap_or(0)
    }

    /// Take a request from the operation's bucket; false when it is empty.
    fn take(&self, operation: &'static str, plan: &Plan) -> bool {
        let mut s = self.lock();
        let multiplier = s.rate_multiplier;
        let now = Instant::now();
        let (tokens, last) = s.buckets.entry(operation).or_insert((plan.burst, now));
        *tokens = (*tokens + now.duration_since(*last).as_secs_f64() * plan.rate * multiplier).min(plan.burst);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            s.throttled += 1;
            false
        }
    }

    fn unauthorized(details: &str) -> SpError {
        SpError {
            status: StatusCode::FORBIDDEN,
            code: "Unauthorized",
            message: "Access to requested resource is denied.".into(),
            details: details.into(),
        }
    }

    fn check_token(&self, headers: &HeaderMap) -> Result<(), SpError> {
        let Some(token) = headers.get("x-amz-access-token").and_then(|v| v.to_str().ok()) else {
            return Err(Self::unauthorized(""));
        };
        let s = self.lock();
        match s.tokens.get(token) {
            None => Err(Self::unauthorized("The access token you provided is revoked, malformed or invalid.")),
            Some(t) if t.expires <= Instant::now() => Err(Self::unauthorized("The access token you provided has expired.")),
            Some(t) if t.grantless => Err(Self::unauthorized("")),
            Some(_) => Ok(()),
        }
    }

    /// Run one SP-API operation: faults, token, usage plan, then `answer`.
    async fn sp_api(&self, operation: &'static str, plan: &Plan, headers: &HeaderMap, answer: impl FnOnce() -> Response) -> Response {
        *self.lock().requests.entry(operation).or_insert(0) += 1;
        let error_body = json!({"errors": [{"code": "InternalFailure", "message": "We encountered an internal error. Please try again.", "details": ""}]});
        let fault = self.faults.pick(NAME, operation);
        let mut response = 'answer: {
            if let Some((kind, When::Before)) = &fault {
                if matches!(kind, FaultKind::Throttle { .. }) {
                    break 'answer quota_exceeded();
                }
                if let Some(r) = faults::before(kind, &error_body).await {
                    break 'answer r;
                }
            }
            let real = match self.check_token(headers) {
                Err(e) => e.response(),
                Ok(()) if !self.take(operation, plan) => quota_exceeded(),
                Ok(()) => answer(),
            };
            match &fault {
                Some((kind, When::After)) => faults::after(kind, real, &error_body).await,
                _ => real,
            }
        };
        let status = response.status().as_u16();
        let h = response.headers_mut();
        if let Ok(v) = HeaderValue::from_str(&crate::sandbox::uuid_like()) {
            h.insert("x-amzn-RequestId", v);
        }
        if matches!(status, 200 | 201 | 202 | 400 | 404) {
            h.insert("x-amzn-RateLimit-Limit", HeaderValue::from_static(plan.header));
        }
        response
    }

    /// Faults for the endpoints outside the SP-API (the token endpoint, the
    /// document store): `throttled` is that service's own answer to too many requests.
    async fn plain_faults(
        &self,
        operation: &'static str,
        error_body: &Value,
        throttled: fn() -> Response,
        answer: impl FnOnce() -> Response,
    ) -> Response {
        *self.lock().requests.entry(operation).or_insert(0) += 1;
        let fault = self.faults.pick(NAME, operation);
        if let Some((kind, When::Before)) = &fault {
            if matches!(kind, FaultKind::Throttle { .. }) {
                return throttled();
            }
            if let Some(r) = faults::before(kind, error_body).await {
                return r;
            }
        }
        let real = answer();
        match &fault {
            Some((kind, When::After)) => faults::after(kind, real, error_body).await,
            _ => real,
        }
    }

    // --- Login with Amazon -----------------------------------------------------

    fn token(&self, headers: &HeaderMap, body: &[u8]) -> Response {
        self.lock().token_requests += 1;
        let content_type = headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_ascii_lowercase();
        let params: HashMap<String, String> = if content_type.starts_with("application/json") {
            match serde_json::from_slice::<Value>(body) {
                Ok(Value::Object(m)) => m.into_iter().filter_map(|(k, v)| v.as_str().map(|s| (k, s.to_string()))).collect(),
                _ => return lwa_error(StatusCode::BAD_REQUEST, "invalid_request", "The request has an invalid parameter : body"),
            }
        } else {
            form_pairs(&String::from_utf8_lossy(body))
        };
        let param = |name: &str| params.get(name).map(String::as_str).filter(|v| !v.is_empty());
        let Some(grant) = param("grant_type") else {
            return lwa_error(StatusCode::BAD_REQUEST, "invalid_request", "The request is missing a required parameter : grant_type");
        };
        if param("client_id") != Some(self.creds.client_id.as_str()) || param("client_secret") != Some(self.creds.client_secret.as_str()) {
            return lwa_error(StatusCode::UNAUTHORIZED, "invalid_client", "Client authentication failed");
        }
        let grantless = match grant {
            "refresh_token" => match param("refresh_token") {
                None => {
                    return lwa_error(
                        StatusCode::BAD_REQUEST,
                        "invalid_request",
                        "The request is missing a required parameter : refresh_token",
                    );
                }
                Some(t) if t != self.creds.refresh_token => {
                    return lwa_error(
                        StatusCode::BAD_REQUEST,
                        "invalid_grant",
                        "The request has an invalid grant parameter : refresh_token",
                    );
                }
                Some(_) => false,
            },
            "client_credentials" if param("scope").is_some() => true,
            "client_credentials" => {
                return lwa_error(StatusCode::BAD_REQUEST, "invalid_request", "The request is missing a required parameter : scope");
            }
            _ => {
                return lwa_error(
                    StatusCode::BAD_REQUEST,
                    "unsupported_grant_type",
                    "The authorization grant type is not supported by the authorization server",
                );
            }
        };
        let raw: Vec<u8> = (0..192).map(|_| rand::random::<u8>()).collect();
        let access = format!("Atza|{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw));
        self.lock().tokens.insert(access.clone(), AccessToken { expires: Instant::now() + TOKEN_LIFETIME, grantless });
        let answer = if grantless {
            json!({"access_token": access, "scope": param("scope"), "token_type": "bearer", "expires_in": TOKEN_LIFETIME.as_secs()})
        } else {
            json!({"access_token": access, "refresh_token": self.creds.refresh_token, "token_type": "bearer", "expires_in": TOKEN_LIFETIME.as_secs()})
        };
        axum::Json(answer).into_response()
    }

    // --- orders ------------------------------------------------------------------

    /// When the order last changed; a status changed since the last look is stamped now.
    fn last_update(&self, order: &SimOrder) -> u64 {
        let status = order_status(order);
        let mut s = self.lock();
        match s.orders_seen.get(&order.id).copied() {
            Some((seen, at)) if seen == status => at,
            Some((_, at)) => {
                let stamp = now_ms().max(at + 1);
                s.orders_seen.insert(order.id, (status, stamp));
                stamp
            }
            None => {
                let stamp = if status == "Unshipped" { created_ms(order) } else { now_ms() };
                s.orders_seen.insert(order.id, (status, stamp));
                stamp
            }
        }
    }

    fn order_lines<'a>(&self, order: &'a SimOrder) -> Vec<(Option<Product>, &'a OrderLine)> {
        order.lines.iter().map(|l| (self.erp.product_by_sku(&l.sku), l)).collect()
    }

    /// The Order as the Orders API v0 answers it.
    pub fn order_json(&self, order: &SimOrder) -> Value {
        let status = order_status(order);
        let units: i64 = order.lines.iter().map(|l| l.qty).sum();
        let total: i64 = self.order_lines(order).iter().map(|(p, l)| p.as_ref().map_or(0, |p| cents(&p.price)) * l.qty).sum();
        let purchased = created_ms(order);
        let (shipped, unshipped) = match status {
            "Shipped" => (units, 0),
            "Canceled" => (0, 0),
            _ => (0, units),
        };
        let mut o = json!({
            "AmazonOrderId": amazon_order_id(order.id),
            "PurchaseDate": iso_seconds(purchased),
            "LastUpdateDate": iso_seconds(self.last_update(order)),
            "OrderStatus": status,
            "FulfillmentChannel": "MFN",
            "SalesChannel": "Amazon.com",
            "ShipServiceLevel": "Std US D2D Dom",
            "NumberOfItemsShipped": shipped,
            "NumberOfItemsUnshipped": unshipped,
            "PaymentMethod": "Other",
            "PaymentMethodDetails": ["Standard"],
            "IsReplacementOrder": false,
            "MarketplaceId": self.creds.marketplace_id,
            "ShipmentServiceLevelCategory": "Standard",
            "OrderType": "StandardOrder",
            "EarliestShipDate": iso_seconds(purchased),
            "LatestShipDate": iso_seconds(purchased + 2 * 86_400_000),
            "IsBusinessOrder": !order.customer.company.is_empty(),
            "IsPrime": false,
            "IsPremiumOrder": false,
            "IsGlobalExpressEnabled": false,
            "IsSoldByAB": false,
            "IsISPU": false,
            "IsAccessPointOrder": false,
            "HasRegulatedItems": false,
        });
        if status != "Canceled" {
            o["OrderTotal"] = json!({"CurrencyCode": "USD", "Amount": amount(total)});
        }
        o
    }

    fn order_items_json(&self, order: &SimOrder) -> Value {
        let shipped = order_status(order) == "Shipped";
        let items: Vec<Value> = self
            .order_lines(order)
            .into_iter()
            .map(|(p, l)| {
                let (asin, title, price) = p.map_or((asin(0), l.sku.clone(), 0), |p| (asin(p.id), p.title, cents(&p.price)));
                json!({
                    "ASIN": asin, "SellerSKU": l.sku, "OrderItemId": format!("{:014}", l.id), "Title": title,
                    "QuantityOrdered": l.qty, "QuantityShipped": if shipped { l.qty } else { 0 },
                    "ProductInfo": {"NumberOfItems": "1"},
                    "ItemPrice": {"CurrencyCode": "USD", "Amount": amount(price * l.qty)},
                    "ItemTax": {"CurrencyCode": "USD", "Amount": "0.00"},
                    "PromotionDiscount": {"CurrencyCode": "USD", "Amount": "0.00"},
                    "IsGift": "false", "ConditionId": "New", "ConditionSubtypeId": "New",
                    "IsTransparency": false, "SerialNumberRequired": false,
                })
            })
            .collect();
        json!({"payload": {"AmazonOrderId": amazon_order_id(order.id), "OrderItems": items}})
    }

    fn find_order(&self, text: &str) -> Result<SimOrder, SpError> {
        let Some(id) = parse_amazon_order_id(text) else {
            return Err(SpError::unusable_input());
        };
        self.erp.order(id).filter(|o| o.platform == NAME).ok_or_else(|| SpError {
            status: StatusCode::NOT_FOUND,
            code: "NotFound",
            message: "Order not found".into(),
            details: String::new(),
        })
    }

    fn marketplaces_ok(&self, q: &Query, name: &str) -> Result<(), SpError> {
        match q.list(name) {
            None => Err(SpError::invalid(format!("Missing required parameter: {name}"))),
            Some(ids) if ids.len() > 50 => Err(SpError::invalid(format!("{name} cannot contain more than 50 values"))),
            Some(ids) if !ids.contains(&self.creds.marketplace_id) => {
                Err(SpError::invalid(format!("Invalid {name}: the seller does not participate in {}", ids.join(","))))
            }
            Some(_) => Ok(()),
        }
    }

    fn list_orders(&self, q: &Query) -> Response {
        if let Err(e) = self.marketplaces_ok(q, "MarketplaceIds") {
            return e.response();
        }
        let search = match q.get("NextToken") {
            Some(token) => match OrderSearch::from_token(token) {
                Some(s) => s,
                None => return SpError::unusable_input().response(),
            },
            None => match OrderSearch::from_query(q) {
                Ok(s) => s,
                Err(e) => return e.response(),
            },
        };
        let mut found: Vec<(u64, Value)> = self
            .erp
            .orders()
            .into_iter()
            .filter(|o| o.platform == NAME)
            .filter_map(|o| {
                let key = if search.by_update { self.last_update(&o) } else { created_ms(&o) };
                let in_window = key / 1000 >= search.after_ms / 1000 && key / 1000 <= search.before_ms / 1000;
                let status_ok = search.statuses.is_empty() || search.statuses.iter().any(|s| s.eq_ignore_ascii_case(order_status(&o)));
                let id_ok = search.ids.is_empty() || search.ids.contains(&amazon_order_id(o.id));
                let channel_ok = search.channels.is_empty() || search.channels.iter().any(|c| c == "MFN");
                (in_window && status_ok && id_ok && channel_ok).then(|| (key, self.order_json(&o)))
            })
            .collect();
        found.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1["AmazonOrderId"].as_str().cmp(&b.1["AmazonOrderId"].as_str())));
        let total = found.len();
        let page: Vec<Value> = found.into_iter().skip(search.offset).take(search.per_page).map(|(_, o)| o).collect();
        let mut payload = json!({"Orders": page});
        if search.offset + search.per_page < total {
            payload["NextToken"] = json!(OrderSearch { offset: search.offset + search.per_page, ..search.clone() }.token());
        }
        let end_name = if search.by_update { "LastUpdatedBefore" } else { "CreatedBefore" };
        payload[end_name] = json!(iso_seconds(search.before_ms));
        axum::Json(json!({"payload": payload})).into_response()
    }

    // --- listings ------------------------------------------------------------------

    /// What the warehouse can still sell: on hand less committed, over every location.
    fn listing_quantity(&self, sku: &str) -> i64 {
        self.erp.levels(sku).iter().map(|(_, l)| l.available()).sum::<i64>().max(0)
    }

    fn listing_checks(&self, seller: &str, sku: &str, q: &Query) -> Result<Product, SpError> {
        if seller != self.creds.seller_id {
            return Err(Self::unauthorized(""));
        }
        self.marketplaces_ok(q, "marketplaceIds")?;
        self.erp.product_by_sku(sku).ok_or_else(|| SpError {
            status: StatusCode::NOT_FOUND,
            code: "NOT_FOUND",
            message: format!("SKU '{sku}' not found in marketplace {}", self.creds.marketplace_id),
            details: String::new(),
        })
    }

    fn get_listing(&self, seller: &str, sku: &str, q: &Query) -> Response {
        let product = match self.listing_checks(seller, sku, q) {
            Ok(p) => p,
            Err(e) => return e.response(),
        };
        let included = q.list("includedData").unwrap_or_else(|| vec!["summaries".into()]);
        const KNOWN: &[&str] = &["summaries", "attributes", "issues", "offers", "fulfillmentAvailability", "procurement"];
        if let Some(bad) = included.iter().find(|d| !KNOWN.contains(&d.as_str())) {
            return invalid_input(&format!("Invalid includedData value: {bad}"));
        }
        let quantity = self.listing_quantity(sku);
        let (created, updated) = {
            let s = self.lock();
            (s.started_ms, s.listing_updated_ms.get(sku).copied().unwrap_or(s.started_ms))
        };
        let price = amount(cents(&product.price));
        let mut item = json!({"sku": product.sku});
        for data in &included {
            item[data.as_str()] = match data.as_str() {
                "summaries" => json!([{
                    "marketplaceId": self.creds.marketplace_id, "asin": asin(product.id), "productType": "PRODUCT",
                    "conditionType": "new_new",
                    "status": if product.discontinued { json!([]) } else { json!(["BUYABLE", "DISCOVERABLE"]) },
                    "itemName": product.title, "createdDate": iso_seconds(created), "lastUpdatedDate": iso_seconds(updated),
                }]),
                "attributes" => json!({
                    "item_name": [{"value": product.title, "marketplace_id": self.creds.marketplace_id}],
                    "fulfillment_availability": [{"fulfillment_channel_code": "DEFAULT", "quantity": quantity}],
                    "purchasable_offer": [{"currency": "USD", "marketplace_id": self.creds.marketplace_id,
                        "our_price": [{"schedule": [{"value_with_tax": cents(&product.price) as f64 / 100.0}]}]}],
                }),
                "issues" => json!([]),
                "offers" => json!([{"marketplaceId": self.creds.marketplace_id, "offerType": "B2C",
                    "price": {"currencyCode": "USD", "amount": price}}]),
                "fulfillmentAvailability" => json!([{"fulfillmentChannelCode": "DEFAULT", "quantity": quantity}]),
                _ => json!({}),
            };
        }
        axum::Json(item).into_response()
    }

    fn patch_listing(&self, seller: &str, sku: &str, q: &Query, body: &[u8]) -> Response {
        let product = match self.listing_checks(seller, sku, q) {
            Ok(p) => p,
            Err(e) => return e.response(),
        };
        let Ok(body) = serde_json::from_slice::<Value>(body) else {
            return invalid_input("The request body is not valid JSON");
        };
        if body.get("productType").and_then(Value::as_str).is_none_or(str::is_empty) {
            return invalid_input("Missing required field: productType");
        }
        let Some(patches) = body.get("patches").and_then(Value::as_array).filter(|p| !p.is_empty()) else {
            return invalid_input("Missing required field: patches");
        };
        let submission = crate::sandbox::uuid_like().replace('-', "");
        let invalid = |message: &str| {
            axum::Json(json!({"sku": sku, "status": "INVALID", "submissionId": submission, "issues": [{
                "code": "90220", "message": message, "severity": "ERROR", "attributeNames": ["fulfillment_availability"]}]}))
            .into_response()
        };
        let mut quantity = None;
        for patch in patches {
            let op = patch.get("op").and_then(Value::as_str).unwrap_or("");
            if !["add", "replace", "delete"].contains(&op) {
                return invalid_input(&format!("Invalid patch operation: '{op}'"));
            }
            if patch.get("path").and_then(Value::as_str) != Some("/attributes/fulfillment_availability") || op == "delete" {
                continue;
            }
            let values = patch.get("value").and_then(Value::as_array).cloned().unwrap_or_default();
            let Some(default) = values.iter().find(|v| v.get("fulfillment_channel_code").and_then(Value::as_str) == Some("DEFAULT")) else {
                return invalid("'fulfillment_availability' requires a value with fulfillment_channel_code DEFAULT.");
            };
            match default.get("quantity").and_then(Value::as_i64).filter(|q| *q >= 0) {
                Some(q) => quantity = Some(q),
                None => return invalid("'quantity' of 'fulfillment_availability' must be a whole number of zero or more."),
            }
        }
        if q.get("mode") == Some("VALIDATION_PREVIEW") {
            return axum::Json(json!({"sku": sku, "status": "VALID", "submissionId": submission, "issues": []})).into_response();
        }
        if let Some(target) = quantity {
            // Setting an absolute quantity is naturally idempotent: apply it every time.
            let delta = target - self.listing_quantity(sku);
            if let Some(first) = self.erp.locations().first() {
                self.erp.adjust_on_hand(&product.sku, first.id, delta);
            }
            self.lock().listing_updated_ms.insert(sku.to_string(), now_ms());
            self.erp.effect(
                NAME,
                "listing_quantity",
                None,
                &format!("{NAME}:listing_quantity:{sku}:{target}"),
                json!({"sku": sku, "quantity": target, "submissionId": submission}),
            );
        }
        axum::Json(json!({"sku": sku, "status": "ACCEPTED", "submissionId": submission, "issues": []})).into_response()
    }

    // --- feeds ---------------------------------------------------------------------------

    fn document_url(&self, host: &str, id: &str, content_type: &str) -> String {
        let now = now_ms();
        let date =
            instant_of(now).format(time::macros::format_description!("[year][month][day]T[hour][minute][second]Z")).unwrap_or_default();
        let mut s = self.lock();
        let signature = encode_hex(&hmac_bytes(
            SignatureAlgorithm::HmacSha256,
            s.url_secret.as_bytes(),
            format!("{id}\n{date}\n{content_type}").as_bytes(),
        ));
        if let Some(doc) = s.documents.get_mut(id) {
            doc.signature = signature.clone();
            doc.expires_ms = now + UPLOAD_LIFETIME_MS;
        }
        format!(
            "http://{host}/{NAME}/tortuga-prod-na/{id}?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Date={date}&X-Amz-SignedHeaders=content-type%3Bhost&X-Amz-Expires={}&X-Amz-Credential=AKIASANDBOX%2F{}%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Signature={signature}",
            UPLOAD_LIFETIME_MS / 1000,
            &date[..8]
        )
    }

    fn new_document(&self, content_type: &str, content: Option<Vec<u8>>) -> String {
        let id = format!("amzn1.tortuga.4.na.{}.T{}", crate::sandbox::uuid_like(), crate::sandbox::random_hex(6).to_ascii_uppercase());
        self.lock()
            .documents
            .insert(id.clone(), FeedDocument { content_type: content_type.to_string(), content, signature: String::new(), expires_ms: 0 });
        id
    }

    fn create_feed_document(&self, host: &str, body: &[u8]) -> Response {
        let content_type = serde_json::from_slice::<Value>(body)
            .ok()
            .and_then(|b| b.get("contentType").and_then(Value::as_str).map(str::to_string))
            .filter(|c| !c.trim().is_empty());
        let Some(content_type) = content_type else {
            return invalid_input("Missing required field: contentType");
        };
        let id = self.new_document(&content_type, None);
        let url = self.document_url(host, &id, &content_type);
        (StatusCode::CREATED, axum::Json(json!({"feedDocumentId": id, "url": url}))).into_response()
    }

    fn get_feed_document(&self, host: &str, id: &str) -> Response {
        let content_type = self.lock().documents.get(id).map(|d| d.content_type.clone());
        match content_type {
            Some(ct) => axum::Json(json!({"feedDocumentId": id, "url": self.document_url(host, id, &ct)})).into_response(),
            None => sp_error(StatusCode::NOT_FOUND, "NotFound", "The requested feed document was not found", ""),
        }
    }

    /// The S3 look-alike: check the pre-signed query, then store or hand back the bytes.
    fn document_transfer(&self, id: &str, q: &Query, headers: &HeaderMap, upload: Option<&[u8]>) -> Response {
        let mut s = self.lock();
        let Some(doc) = s.documents.get_mut(id) else {
            return s3_error("SignatureDoesNotMatch", "The request signature we calculated does not match the signature you provided.");
        };
        if doc.signature.is_empty() || q.get("X-Amz-Signature") != Some(doc.signature.as_str()) {
            return s3_error("SignatureDoesNotMatch", "The request signature we calculated does not match the signature you provided.");
        }
        if now_ms() > doc.expires_ms {
            return s3_error("AccessDenied", "Request has expired");
        }
        match upload {
            Some(bytes) => {
                let sent = headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("");
                let same = |a: &str, b: &str| a.replace(' ', "").eq_ignore_ascii_case(&b.replace(' ', ""));
                if !same(sent, &doc.content_type) {
                    return s3_error(
                        "SignatureDoesNotMatch",
                        "The request signature we calculated does not match the signature you provided. Check your key and signing method.",
                    );
                }
                doc.content = Some(bytes.to_vec());
                let etag = format!("\"{}\"", &encode_hex(&hmac_bytes(SignatureAlgorithm::HmacSha256, b"etag", bytes))[..32]);
                let mut r = StatusCode::OK.into_response();
                if let Ok(v) = HeaderValue::from_str(&etag) {
                    r.headers_mut().insert("etag", v);
                }
                r
            }
            None => match &doc.content {
                Some(bytes) => (StatusCode::OK, [("content-type", doc.content_type.clone())], bytes.clone()).into_response(),
                None => (
                    StatusCode::NOT_FOUND,
                    [("content-type", "application/xml".to_string())],
                    "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>NoSuchKey</Code><Message>The specified key does not exist.</Message></Error>",
                )
                    .into_response(),
            },
        }
    }

    fn create_feed(&self, body: &[u8]) -> Response {
        let Ok(body) = serde_json::from_slice::<Value>(body) else {
            return invalid_input("The request body is not valid JSON");
        };
        let Some(feed_type) = body.get("feedType").and_then(Value::as_str) else {
            return invalid_input("Missing required field: feedType");
        };
        if feed_type != ACK_FEED {
            return invalid_input(&format!("Unsupported feedType: {feed_type}"));
        }
        let marketplaces: Vec<String> = body
            .get("marketplaceIds")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(|m| m.as_str().map(str::to_string)).collect())
            .unwrap_or_default();
        if !marketplaces.contains(&self.creds.marketplace_id) {
            return invalid_input("Invalid marketplaceIds");
        }
        let Some(document_id) = body.get("inputFeedDocumentId").and_then(Value::as_str) else {
            return invalid_input("Missing required field: inputFeedDocumentId");
        };
        let content = {
            let s = self.lock();
            match s.documents.get(document_id) {
                None => return invalid_input(&format!("Invalid inputFeedDocumentId: {document_id}")),
                Some(d) => d.content.clone(),
            }
        };
        let started = now_ms();
        let feed_id = {
            let s = self.lock();
            format!("{}", 50_014_019_000 + s.feeds.len() as u64 + 1)
        };
        let (status, report) = match content {
            None => ("FATAL", processing_report(&feed_id, &[], Some("The feed document was not uploaded."))),
            Some(bytes) => self.process_acknowledgements(&feed_id, &String::from_utf8_lossy(&bytes)),
        };
        let result_id = self.new_document(REPORT_CONTENT_TYPE, Some(report.into_bytes()));
        let feed = json!({
            "feedId": feed_id, "feedType": feed_type, "marketplaceIds": marketplaces,
            "createdTime": iso_millis(started), "processingStatus": status,
            "processingStartTime": iso_millis(started), "processingEndTime": iso_millis(now_ms()),
            "resultFeedDocumentId": result_id,
        });
        self.lock().feeds.insert(feed_id.clone(), feed);
        (StatusCode::ACCEPTED, axum::Json(json!({"feedId": feed_id}))).into_response()
    }

    /// Apply an order-acknowledgement feed; the processing status and report.
    fn process_acknowledgements(&self, feed_id: &str, xml: &str) -> (&'static str, String) {
        let Some(envelope) = elements(xml, "AmazonEnvelope").first().copied() else {
            return ("FATAL", processing_report(feed_id, &[], Some("The document is not an AmazonEnvelope.")));
        };
        if element_text(envelope, "MessageType").as_deref() != Some("OrderAcknowledgement") {
            return ("FATAL", processing_report(feed_id, &[], Some("MessageType must be OrderAcknowledgement for this feed type.")));
        }
        let mut results = Vec::new();
        let messages = elements(envelope, "Message");
        for (n, message) in messages.iter().enumerate() {
            let message_id = element_text(message, "MessageID").unwrap_or_else(|| (n + 1).to_string());
            let outcome = self.acknowledge(message);
            results.push((message_id, outcome));
        }
        ("DONE", processing_report(feed_id, &results, None))
    }

    /// One acknowledgement message: Ok, or the error to report.
    fn acknowledge(&self, message: &str) -> Result<(), String> {
        let ack = elements(message, "OrderAcknowledgement").first().copied().ok_or("The message has no OrderAcknowledgement.")?;
        let order_id = element_text(ack, "AmazonOrderID").ok_or("AmazonOrderID is required.")?;
        let order = parse_amazon_order_id(&order_id)
            .and_then(|id| self.erp.order(id))
            .filter(|o| o.platform == NAME)
            .ok_or_else(|| format!("The order {order_id} could not be found."))?;
        let status = element_text(ack, "StatusCode").unwrap_or_default();
        match status.as_str() {
            "Success" => {
                let merchant_order = element_text(ack, "MerchantOrderID");
                self.erp.effect(
                    NAME,
                    "order_acknowledge",
                    Some(order.id),
                    &format!("{NAME}:acknowledge:{}", order.id),
                    json!({"AmazonOrderID": order_id, "MerchantOrderID": merchant_order}),
                );
                Ok(())
            }
            "Failure" => {
                let reason = elements(ack, "Item")
                    .iter()
                    .find_map(|item| element_text(item, "CancelReason"))
                    .unwrap_or_else(|| "NoInventory".into());
                match order_status(&order) {
                    "Shipped" => return Err(format!("The order {order_id} has already shipped and cannot be canceled.")),
                    "Canceled" => {
                        self.erp.effect(NAME, "order_cancel", Some(order.id), &format!("{NAME}:cancel:{}", order.id), Value::Null);
                        return Ok(());
                    }
                    _ => {}
                }
                let key = format!("{NAME}:cancel:{}", order.id);
                if self.erp.effect(NAME, "order_cancel", Some(order.id), &key, json!({"AmazonOrderID": order_id, "CancelReason": reason})) {
                    let was_open = self.erp.update_order(order.id, |o| {
                        let open = o.state != OrderState::Cancelled && !o.extra.contains_key("fulfilled");
                        if open {
                            o.state = OrderState::Cancelled;
                            o.cancel_reason = Some(reason.clone());
                            o.extra.insert("cancelled_at".into(), json!(crate::clock::format_rfc3339(time::OffsetDateTime::now_utc())));
                        }
                        open
                    });
                    if was_open == Some(true) {
                        self.erp.release_commitment(order.id);
                        let mut s = self.lock();
                        let previous = s.orders_seen.get(&order.id).map_or(0, |(_, at)| *at);
                        s.orders_seen.insert(order.id, ("Canceled", now_ms().max(previous + 1)));
                    }
                }
                Ok(())
            }
            other => Err(format!("StatusCode '{other}' is not valid: use Success or Failure.")),
        }
    }

    fn get_feed(&self, id: &str) -> Response {
        match self.lock().feeds.get(id) {
            Some(feed) => axum::Json(feed.clone()).into_response(),
            None => sp_error(StatusCode::NOT_FOUND, "NotFound", "The requested feed was not found", ""),
        }
    }
}

fn quota_exceeded() -> Response {
    sp_error(StatusCode::TOO_MANY_REQUESTS, "QuotaExceeded", "You exceeded your quota for the requested resource.", "")
}

fn report_error(message_id: &str, description: &str) -> String {
    format!(
        "<Result><MessageID>{message_id}</MessageID><ResultCode>Error</ResultCode><ResultMessageCode>18028</ResultMessageCode><ResultDescription>{}</ResultDescription></Result>",
        xml_escape(description)
    )
}

/// A feed processing report in Amazon's envelope.
fn processing_report(feed_id: &str, results: &[(String, Result<(), String>)], fatal: Option<&str>) -> String {
    let mut lines: String = results.iter().filter_map(|(id, r)| r.as_ref().err().map(|e| report_error(id, e))).collect();
    if let Some(f) = fatal {
        lines.push_str(&report_error("0", f));
    }
    let failed = results.iter().filter(|(_, r)| r.is_err()).count();
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<AmazonEnvelope xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\" xsi:noNamespaceSchemaLocation=\"amzn-envelope.xsd\"><Header><DocumentVersion>1.02</DocumentVersion><MerchantIdentifier>{SELLER_ID}</MerchantIdentifier></Header><MessageType>ProcessingReport</MessageType><Message><MessageID>1</MessageID><ProcessingReport><DocumentTransactionID>{feed_id}</DocumentTransactionID><StatusCode>Complete</StatusCode><ProcessingSummary><MessagesProcessed>{}</MessagesProcessed><MessagesSuccessful>{}</MessagesSuccessful><MessagesWithError>{}</MessagesWithError><MessagesWithWarning>0</MessagesWithWarning></ProcessingSummary>{lines}</ProcessingReport></Message></AmazonEnvelope>",
        results.len(),
        results.len() - failed,
        failed + usize::from(fatal.is_some()),
    )
}

/// A getOrders query, carried from page to page in `NextToken`.
#[derive(Clone, serde::Serialize, serde::Deserialize)]
struct OrderSearch {
    by_update: bool,
    after_ms: u64,
    before_ms: u64,
    statuses: Vec<String>,
    ids: Vec<String>,
    #[serde(default)]
    channels: Vec<String>,
    per_page: usize,
    offset: usize,
}

impl OrderSearch {
    fn from_query(q: &Query) -> Result<OrderSearch, SpError> {
        let time = |name: &str| -> Result<Option<u64>, SpError> {
            match q.get(name) {
                None => Ok(None),
                Some(v) => parse_time(v).map(Some).ok_or_else(|| SpError::unreadable_time(name)),
            }
        };
        let (created_after, created_before) = (time("CreatedAfter")?, time("CreatedBefore")?);
        let (updated_after, updated_before) = (time("LastUpdatedAfter")?, time("LastUpdatedBefore")?);
        let (by_update, after, before) = match (created_after, updated_after) {
            (None, None) => return Err(SpError::invalid("Either CreatedAfter or LastUpdatedAfter must be specified")),
            (Some(_), Some(_)) => return Err(SpError::invalid("CreatedAfter and LastUpdatedAfter cannot both be specified")),
            (Some(_), None) if updated_before.is_some() => {
                return Err(SpError::invalid("LastUpdatedBefore cannot be specified with CreatedAfter"));
            }
            (None, Some(_)) if created_before.is_some() => {
                return Err(SpError::invalid("CreatedBefore cannot be specified with LastUpdatedAfter"));
            }
            (Some(a), None) => (false, a, created_before),
            (None, Some(a)) => (true, a, updated_before),
        };
        let now = now_ms();
        if after > now {
            return Err(SpError::unusable_input());
        }
        let before = before.unwrap_or(now);
        if before > now {
            return Err(SpError::unusable_input());
        }
        if before < after {
            return Err(SpError::unusable_input());
        }
        let per_page = match q.get("MaxResultsPerPage") {
            None => 100,
            Some(v) => match v.parse::<usize>() {
                Ok(n) if (1..=100).contains(&n) => n,
                _ => return Err(SpError::invalid("MaxResultsPerPage must be between 1 and 100")),
            },
        };
        let ids = q.list("AmazonOrderIds").unwrap_or_default();
        if ids.len() > 50 {
            return Err(SpError::invalid("AmazonOrderIds cannot contain more than 50 values"));
        }
        Ok(OrderSearch {
            by_update,
            after_ms: after,
            before_ms: before,
            statuses: q.list("OrderStatuses").unwrap_or_default(),
            ids,
            channels: q.list("FulfillmentChannels").unwrap_or_default(),
            per_page,
            offset: 0,
        })
    }

    fn token(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(serde_json::to_vec(self).unwrap_or_default())
    }

    fn from_token(token: &str) -> Option<OrderSearch> {
        let bytes = base64::engine::general_purpose::STANDARD.decode(token.trim()).ok()?;
        serde_json::from_slice(&bytes).ok()
    }
}

impl SimPlatform for AmazonSim {
    fn name(&self) -> &'static str {
        NAME
    }

    fn router(self: Arc<Self>) -> Router {
        Router::new()
            .route("/auth/o2/token", post(lwa_token))
            .route("/orders/v0/orders", get(get_orders))
            .route("/orders/v0/orders/{order_id}", get(get_order))
            .route("/orders/v0/orders/{order_id}/orderItems", get(get_order_items))
            .route("/listings/2021-08-01/items/{seller_id}/{sku}", get(get_listings_item).patch(patch_listings_item))
            .route("/feeds/2021-06-30/documents", post(create_feed_document))
            .route("/feeds/2021-06-30/documents/{document_id}", get(get_feed_document))
            .route("/feeds/2021-06-30/feeds", post(create_feed))
            .route("/feeds/2021-06-30/feeds/{feed_id}", get(get_feed))
            .route("/tortuga-prod-na/{document_id}", put(upload_document).get(download_document))
            .with_state(self)
    }

    fn connection(&self, base_url: &str) -> SimConnection {
        SimConnection {
            values: [
                ("marketplace_id".to_string(), self.creds.marketplace_id.clone()),
                ("seller_id".to_string(), self.creds.seller_id.clone()),
                ("token_url".to_string(), format!("{base_url}/auth/o2/token")),
            ]
            .into(),
            secrets: [
                ("client_id".to_string(), self.creds.client_id.clone()),
                ("client_secret".to_string(), self.creds.client_secret.clone()),
                ("refresh_token".to_string(), self.creds.refresh_token.clone()),
            ]
            .into(),
        }
    }

    fn order_topic(&self, _event: OrderEvent) -> Option<&'static str> {
        None
    }

    /// Never called: orders are polled.
    fn order_delivery(&self, _event: OrderEvent, _order: &SimOrder, _url: &str) -> Delivery {
        Delivery { headers: Vec::new(), body: Vec::new() }
    }
}

type Sim = State<Arc<AmazonSim>>;

fn host(headers: &HeaderMap) -> String {
    headers.get("host").and_then(|v| v.to_str().ok()).unwrap_or("127.0.0.1").to_string()
}

async fn lwa_token(State(sim): Sim, headers: HeaderMap, body: axum::body::Bytes) -> Response {
    let error_body = json!({"error_description": "Internal Server Error", "error": "server_error"});
    sim.plain_faults("lwa.token", &error_body, lwa_throttled, || sim.token(&headers, &body)).await
}

async fn get_orders(State(sim): Sim, headers: HeaderMap, RawQuery(raw): RawQuery) -> Response {
    let q = Query::parse(raw.as_deref());
    sim.sp_api("orders.list", &GET_ORDERS, &headers, || sim.list_orders(&q)).await
}

async fn get_order(State(sim): Sim, Path(order_id): Path<String>, headers: HeaderMap) -> Response {
    sim.sp_api("orders.get", &GET_ORDER, &headers, || match sim.find_order(&order_id) {
        Ok(o) => axum::Json(json!({"payload": sim.order_json(&o)})).into_response(),
        Err(e) => e.response(),
    })
    .await
}

async fn get_order_items(State(sim): Sim, Path(order_id): Path<String>, headers: HeaderMap) -> Response {
    sim.sp_api("orderitems.get", &GET_ORDER_ITEMS, &headers, || match sim.find_order(&order_id) {
        Ok(o) => axum::Json(sim.order_items_json(&o)).into_response(),
        Err(e) => e.response(),
    })
    .await
}

async fn get_listings_item(
    State(sim): Sim,
    Path((seller, sku)): Path<(String, String)>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Response {
    let q = Query::parse(raw.as_deref());
    sim.sp_api("listings.get", &GET_LISTINGS_ITEM, &headers, || sim.get_listing(&seller, &sku, &q)).await
}

async fn patch_listings_item(
    State(sim): Sim,
    Path((seller, sku)): Path<(String, String)>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
    body: axum::body::Bytes,
) -> Response {
    let q = Query::parse(raw.as_deref());
    sim.sp_api("listings.patch", &PATCH_LISTINGS_ITEM, &headers, || sim.patch_listing(&seller, &sku, &q, &body)).await
}

async fn create_feed_document(State(sim): Sim, headers: HeaderMap, body: axum::body::Bytes) -> Response {
    let host = host(&headers);
    sim.sp_api("feeddocuments.create", &CREATE_FEED_DOCUMENT, &headers, || sim.create_feed_document(&host, &body)).await
}

async fn get_feed_document(State(sim): Sim, Path(document_id): Path<String>, headers: HeaderMap) -> Response {
    let host = host(&headers);
    sim.sp_api("feeddocuments.get", &GET_FEED_DOCUMENT, &headers, || sim.get_feed_document(&host, &document_id)).await
}

async fn create_feed(State(sim): Sim, headers: HeaderMap, body: axum::body::Bytes) -> Response {
    sim.sp_api("feeds.create", &CREATE_FEED, &headers, || sim.create_feed(&body)).await
}

async fn get_feed(State(sim): Sim, Path(feed_id): Path<String>, headers: HeaderMap) -> Response {
    sim.sp_api("feeds.get", &GET_FEED, &headers, || sim.get_feed(&feed_id)).await
}

/// Login with Amazon refusing a burst of token requests.
fn lwa_throttled() -> Response {
    lwa_error(StatusCode::TOO_MANY_REQUESTS, "server_error", "Too many requests, please try again later.")
}

/// S3 asking the caller to slow down.
fn s3_slow_down() -> Response {
    let body = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>";
    (StatusCode::SERVICE_UNAVAILABLE, [("content-type", "application/xml")], body).into_response()
}

fn s3_internal_error() -> Value {
    json!({"Error": {"Code": "InternalError", "Message": "We encountered an internal error. Please try again."}})
}

async fn upload_document(
    State(sim): Sim,
    Path(document_id): Path<String>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
    body: axum::body::Bytes,
) -> Response {
    let q = Query::parse(raw.as_deref());
    sim.plain_faults("feeds.upload", &s3_internal_error(), s3_slow_down, || sim.document_transfer(&document_id, &q, &headers, Some(&body)))
        .await
}

async fn download_document(State(sim): Sim, Path(document_id): Path<String>, headers: HeaderMap, RawQuery(raw): RawQuery) -> Response {
    let q = Query::parse(raw.as_deref());
    sim.plain_faults("feeds.upload", &s3_internal_error(), s3_slow_down, || sim.document_transfer(&document_id, &q, &headers, None)).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sandbox::erp::LineRequest;
    use crate::sandbox::{Sandbox, SandboxOptions};

    #[test]
    fn ids_and_xml_round_trip() {
        assert_eq!(amazon_order_id(5_812_345_670_001), "113-0581234-5670001");
        assert_eq!(parse_amazon_order_id("113-0581234-5670001"), Some(5_812_345_670_001));
        assert_eq!(parse_amazon_order_id("113-0581234"), None);
        assert_eq!(asin(9_012_345_000).len(), 10);
        let xml = "<AmazonEnvelope><MessageType>OrderAcknowledgement</MessageType><Message><MessageID>7</MessageID></Message><Message><MessageID>8</MessageID></Message></AmazonEnvelope>";
        let envelope = elements(xml, "AmazonEnvelope")[0];
        assert_eq!(elements(envelope, "Message").len(), 2);
        assert_eq!(element_text(envelope, "MessageType").as_deref(), Some("OrderAcknowledgement"));
        assert_eq!(elements("<MessageType>x</MessageType>", "Message").len(), 0);
    }

    struct Client {
        http: reqwest::Client,
        base: String,
        conn: SimConnection,
        token: String,
    }

    impl Client {
        async fn login(&mut self) -> reqwest::Response {
            let form = [
                ("grant_type", "refresh_token"),
                ("refresh_token", self.conn.secrets["refresh_token"].as_str()),
                ("client_id", self.conn.secrets["client_id"].as_str()),
                ("client_secret", self.conn.secrets["client_secret"].as_str()),
            ];
            let r = self.http.post(&self.conn.values["token_url"]).form(&form).send().await.unwrap();
            assert_eq!(r.status().as_u16(), 200);
            let body: Value = r.json().await.unwrap();
            self.token = body["access_token"].as_str().unwrap().to_string();
            assert_eq!(body["refresh_token"].as_str(), Some(self.conn.secrets["refresh_token"].as_str()));
            assert_eq!((body["token_type"].as_str(), body["expires_in"].as_u64()), (Some("bearer"), Some(3600)));
            self.http.get(format!("{}/orders/v0/orders", self.base)).send().await.unwrap()
        }

        async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, HeaderMap, Value) {
            let mut req = self.http.request(method, format!("{}{path}", self.base)).header("x-amz-access-token", &self.token);
            if let Some(b) = body {
                req = req.header("content-type", "application/json").body(b.to_string());
            }
            let r = req.send().await.unwrap();
            let status = r.status().as_u16();
            let headers = r.headers().clone();
            (status, headers, r.json().await.unwrap_or(Value::Null))
        }

        async fn get(&self, path: &str) -> (u16, Value) {
            let (status, _, body) = self.call(reqwest::Method::GET, path, None).await;
            (status, body)
        }
    }

    async fn start() -> (Sandbox, Client, Arc<AmazonSim>) {
        let sandbox =
            Sandbox::start(tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(), SandboxOptions::generated()).await.unwrap();
        crate::sandbox::erp::seed_amusement_catalogue(&sandbox.erp, "2026-12-10", "2027-02-01");
        let mut client = Client {
            http: reqwest::Client::new(),
            base: sandbox.base_url(NAME),
            conn: sandbox.connection(NAME).unwrap(),
            token: String::new(),
        };
        client.login().await;
        let sim = AmazonSim::of(&sandbox.erp).unwrap();
        (sandbox, client, sim)
    }

    fn line(sku: &str, qty: i64) -> LineRequest {
        LineRequest { sku: sku.into(), qty }
    }

    #[tokio::test]
    async fn login_with_amazon_and_the_access_token() {
        let (sandbox, mut client, sim) = start().await;
        assert_eq!(client.conn.values["marketplace_id"], MARKETPLACE_ID);
        let token_url = client.conn.values["token_url"].clone();
        let bad_grant = [
            ("grant_type", "refresh_token"),
            ("refresh_token", "Atzr|nope"),
            ("client_id", &client.conn.secrets["client_id"]),
            ("client_secret", &client.conn.secrets["client_secret"]),
        ];
        let r = client.http.post(&token_url).form(&bad_grant).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 400);
        assert_eq!(
            r.json::<Value>().await.unwrap(),
            json!({"error_description": "The request has an invalid grant parameter : refresh_token", "error": "invalid_grant"})
        );
        let bad_client = [
            ("grant_type", "refresh_token"),
            ("refresh_token", &client.conn.secrets["refresh_token"]),
            ("client_id", "x"),
            ("client_secret", "y"),
        ];
        let r = client.http.post(&token_url).form(&bad_client).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 401);
        assert_eq!(r.json::<Value>().await.unwrap()["error"], "invalid_client");

        let no_token = client.login().await;
        assert_eq!(no_token.status().as_u16(), 403);
        assert!(no_token.headers().contains_key("x-amzn-requestid"));
        let (status, ok) = client.get("/orders/v0/orders?MarketplaceIds=ATVPDKIKX0DER&CreatedAfter=2020-01-01T00:00:00Z").await;
        assert_eq!((status, ok["payload"]["Orders"].clone()), (200, json!([])));
        sim.expire_access_tokens();
        let (status, expired) = client.get("/orders/v0/orders?MarketplaceIds=ATVPDKIKX0DER&CreatedAfter=2020-01-01T00:00:00Z").await;
        assert_eq!(status, 403);
        assert_eq!(
            expired,
            json!({"errors": [{"code": "Unauthorized", "message": "Access to requested resource is denied.", "details": "The access token you provided has expired."}]})
        );
        client.token = "Atza|forged".into();
        let (_, forged) = client.get("/orders/v0/orders?MarketplaceIds=ATVPDKIKX0DER&CreatedAfter=2020-01-01T00:00:00Z").await;
        assert_eq!(forged["errors"][0]["details"], "The access token you provided is revoked, malformed or invalid.");
        assert_eq!(sim.token_requests(), 4);
        sandbox.stop().await;
    }

    #[tokio::test]
    async fn polls_orders_by_page_and_reads_items() {
        let (sandbox, client, _) = start().await;
        let customers = sandbox.erp.customers();
        let mut placed = Vec::new();
        for (sku, qty) in [("PB-STERN-GODZ-PRO", 1), ("SP-COIN-MECH-EU", 2), ("BD-JAMMA-60IN1", 3)] {
            placed.push(sandbox.place_order(NAME, customers[0].id, &[line(sku, qty)]).await.unwrap().0);
        }
        let (status, headers, first) = client
            .call(reqwest::Method::GET, "/orders/v0/orders?MarketplaceIds=ATVPDKIKX0DER&LastUpdatedAfter=2020-01-01T00:00:00Z&OrderStatuses=Unshipped&MaxResultsPerPage=2", None)
            .await;
        assert_eq!(status, 200);
        assert_eq!(headers["x-amzn-ratelimit-limit"], "0.0167");
        let orders = first["payload"]["Orders"].as_array().unwrap();
        assert_eq!(orders.len(), 2);
        assert_eq!(orders[0]["AmazonOrderId"], json!(amazon_order_id(placed[0].id)));
        assert_eq!((orders[0]["OrderStatus"].as_str(), orders[0]["FulfillmentChannel"].as_str()), (Some("Unshipped"), Some("MFN")));
        assert_eq!(orders[0]["OrderTotal"], json!({"CurrencyCode": "USD", "Amount": "8999.00"}));
        assert!(first["payload"]["LastUpdatedBefore"].as_str().unwrap().ends_with('Z'));
        let token = first["payload"]["NextToken"].as_str().unwrap();
        let next = format!(
            "/orders/v0/orders?MarketplaceIds=ATVPDKIKX0DER&NextToken={}",
            token.replace('+', "%2B").replace('/', "%2F").replace('=', "%3D")
        );
        let (_, second) = client.get(&next).await;
        assert_eq!(second["payload"]["Orders"].as_array().unwrap().len(), 1);
        assert!(second["payload"].get("NextToken").is_none());

        let (status, missing) = client.get("/orders/v0/orders?MarketplaceIds=ATVPDKIKX0DER").await;
        assert_eq!((status, missing["errors"][0]["code"].as_str()), (400, Some("InvalidInput")));
        let (status, future) = client.get("/orders/v0/orders?MarketplaceIds=ATVPDKIKX0DER&LastUpdatedAfter=2099-01-01T00:00:00Z").await;
        assert_eq!(status, 400);
        assert_eq!(
            future,
            json!({"errors": [{"code": "InvalidInput", "message": "The input you have submitted is not valid. Please check your input and try again.", "details": ""}]})
        );
        let (_, unreadable) = client.get("/orders/v0/orders?MarketplaceIds=ATVPDKIKX0DER&CreatedAfter=yesterday").await;
        assert_eq!(unreadable["errors"][0]["details"], "Invalid date-time field(s) [createdAfter].");
        let (_, by_amazon) =
            client.get("/orders/v0/orders?MarketplaceIds=ATVPDKIKX0DER&CreatedAfter=2020-01-01T00:00:00Z&FulfillmentChannels=AFN").await;
        assert_eq!(by_amazon["payload"]["Orders"], json!([]));

        let id = amazon_order_id(placed[1].id);
        let (status, order) = client.get(&format!("/orders/v0/orders/{id}")).await;
        assert_eq!((status, order["payload"]["NumberOfItemsUnshipped"].as_i64()), (200, Some(2)));
        let (_, items) = client.get(&format!("/orders/v0/orders/{id}/orderItems")).await;
        let item = &items["payload"]["OrderItems"][0];
        assert_eq!((item["SellerSKU"].as_str(), item["QuantityOrdered"].as_i64()), (Some("SP-COIN-MECH-EU"), Some(2)));
        assert_eq!(item["ItemPrice"]["Amount"], "130.00");
        assert_eq!(item["OrderItemId"].as_str().map(str::len), Some(14));

        // A shipment made elsewhere moves the order on, with a newer LastUpdateDate.
        sandbox.ship_order(placed[1].id).await.unwrap();
        let (_, shipped) = client.get(&format!("/orders/v0/orders/{id}")).await;
        assert_eq!(shipped["payload"]["OrderStatus"], "Shipped");
        assert_eq!(shipped["payload"]["NumberOfItemsShipped"], 2);
        let (status, unknown) = client.get("/orders/v0/orders/113-0000000-0000042").await;
        assert_eq!((status, unknown["errors"][0]["code"].as_str()), (404, Some("NotFound")));
        sandbox.stop().await;
    }

    #[tokio::test]
    async fn listings_show_and_set_the_merchant_quantity() {
        let (sandbox, client, _) = start().await;
        sandbox.place_order(NAME, sandbox.erp.customers()[1].id, &[line("AC-SF2-CAB-2P", 1)]).await.unwrap();
        let path = format!("/listings/2021-08-01/items/{SELLER_ID}/AC-SF2-CAB-2P?marketplaceIds=ATVPDKIKX0DER");
        let (status, headers, item) =
            client.call(reqwest::Method::GET, &format!("{path}&includedData=summaries,fulfillmentAvailability"), None).await;
        assert_eq!((status, headers["x-amzn-ratelimit-limit"].to_str().unwrap()), (200, "5.0"));
        assert_eq!(item["sku"], "AC-SF2-CAB-2P");
        assert_eq!(item["summaries"][0]["status"], json!(["BUYABLE", "DISCOVERABLE"]));
        assert_eq!(item["fulfillmentAvailability"], json!([{"fulfillmentChannelCode": "DEFAULT", "quantity": 1}]));
        let (_, summaries_only) = client.get(&path).await;
        assert!(summaries_only.get("fulfillmentAvailability").is_none());
        let (_, gone) = client.get(&format!("/listings/2021-08-01/items/{SELLER_ID}/CC-CLAW-MINI?marketplaceIds=ATVPDKIKX0DER")).await;
        assert_eq!(gone["summaries"][0]["status"], json!([]));
        let (status, unknown) = client.get(&format!("/listings/2021-08-01/items/{SELLER_ID}/NOPE-1?marketplaceIds=ATVPDKIKX0DER")).await;
        assert_eq!(status, 404);
        assert_eq!(
            unknown,
            json!({"errors": [{"code": "NOT_FOUND", "message": "SKU 'NOPE-1' not found in marketplace ATVPDKIKX0DER", "details": ""}]})
        );

        let patch = json!({"productType": "PRODUCT", "patches": [{"op": "replace", "path": "/attributes/fulfillment_availability",
            "value": [{"fulfillment_channel_code": "DEFAULT", "quantity": 5}]}]});
        for _ in 0..2 {
            let (status, _, answer) = client.call(reqwest::Method::PATCH, &path, Some(patch.clone())).await;
            assert_eq!((status, answer["status"].as_str(), answer["issues"].clone()), (200, Some("ACCEPTED"), json!([])));
        }
        assert_eq!(sandbox.erp.totals("AC-SF2-CAB-2P"), (6, 1, 5));
        assert_eq!(sandbox.erp.attempts()["amazon:listing_quantity:AC-SF2-CAB-2P:5"], 2);
        let (_, after) = client.get(&format!("{path}&includedData=fulfillmentAvailability")).await;
        assert_eq!(after["fulfillmentAvailability"][0]["quantity"], 5);
        let bad = json!({"productType": "PRODUCT", "patches": [{"op": "replace", "path": "/attributes/fulfillment_availability",
            "value": [{"fulfillment_channel_code": "DEFAULT", "quantity": -1}]}]});
        let (_, _, invalid) = client.call(reqwest::Method::PATCH, &path, Some(bad)).await;
        assert_eq!((invalid["status"].as_str(), invalid["issues"][0]["severity"].as_str()), (Some("INVALID"), Some("ERROR")));
        let (status, _, _) = client.call(reqwest::Method::PATCH, &path, Some(json!({"patches": []}))).await;
        assert_eq!(status, 400);
        sandbox.stop().await;
    }

    #[tokio::test]
    async fn usage_plans_throttle_until_the_bucket_refills() {
        let (sandbox, client, sim) = start().await;
        let path = "/orders/v0/orders?MarketplaceIds=ATVPDKIKX0DER&CreatedAfter=2020-01-01T00:00:00Z";
        for _ in 0..20 {
            assert_eq!(client.get(path).await.0, 200);
        }
        let (status, headers, body) = client.call(reqwest::Method::GET, path, None).await;
        assert_eq!(status, 429);
        assert!(!headers.contains_key("retry-after") && !headers.contains_key("x-amzn-ratelimit-limit"));
        assert_eq!(
            body,
            json!({"errors": [{"code": "QuotaExceeded", "message": "You exceeded your quota for the requested resource.", "details": ""}]})
        );
        assert_eq!(sim.throttled(), 1);
        sim.set_rate_multiplier(1e7);
        assert_eq!(client.get(path).await.0, 200);
        sandbox.stop().await;
    }

    #[tokio::test]
    async fn an_acknowledgement_feed_cancels_the_order() {
        let (sandbox, client, _) = start().await;
        let (order, _) = sandbox.place_order(NAME, sandbox.erp.customers()[2].id, &[line("CC-CLAW-42", 2)]).await.unwrap();
        assert_eq!(sandbox.erp.totals("CC-CLAW-42"), (2, 2, 0));
        let (_, items) = client.get(&format!("/orders/v0/orders/{}/orderItems", amazon_order_id(order.id))).await;
        let item_id = items["payload"]["OrderItems"][0]["OrderItemId"].as_str().unwrap().to_string();

        let (status, _, doc) = client
            .call(reqwest::Method::POST, "/feeds/2021-06-30/documents", Some(json!({"contentType": "text/xml; charset=UTF-8"})))
            .await;
        assert_eq!(status, 201);
        let url = doc["url"].as_str().unwrap().to_string();
        let xml = format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<AmazonEnvelope xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\" xsi:noNamespaceSchemaLocation=\"amzn-envelope.xsd\">\
             <Header><DocumentVersion>1.01</DocumentVersion><MerchantIdentifier>{SELLER_ID}</MerchantIdentifier></Header>\
             <MessageType>OrderAcknowledgement</MessageType><Message><MessageID>1</MessageID><OrderAcknowledgement>\
             <AmazonOrderID>{}</AmazonOrderID><StatusCode>Failure</StatusCode><Item><AmazonOrderItemCode>{item_id}</AmazonOrderItemCode>\
             <CancelReason>NoInventory</CancelReason></Item></OrderAcknowledgement></Message>\
             <Message><MessageID>2</MessageID><OrderAcknowledgement><AmazonOrderID>113-0000000-0000042</AmazonOrderID><StatusCode>Failure</StatusCode></OrderAcknowledgement></Message>\
             </AmazonEnvelope>",
            amazon_order_id(order.id)
        );
        let forged = client
            .http
            .put(url.replace("X-Amz-Signature=", "X-Amz-Signature=0"))
            .header("content-type", "text/xml; charset=UTF-8")
            .body(xml.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(forged.status().as_u16(), 403);
        assert!(forged.text().await.unwrap().contains("<Code>SignatureDoesNotMatch</Code>"));
        let uploaded = client.http.put(&url).header("content-type", "text/xml; charset=UTF-8").body(xml).send().await.unwrap();
        assert_eq!(uploaded.status().as_u16(), 200);

        let feed = json!({"feedType": ACK_FEED, "marketplaceIds": [MARKETPLACE_ID], "inputFeedDocumentId": doc["feedDocumentId"]});
        for _ in 0..2 {
            let (status, _, created) = client.call(reqwest::Method::POST, "/feeds/2021-06-30/feeds", Some(feed.clone())).await;
            assert_eq!(status, 202);
            let (_, state) = client.get(&format!("/feeds/2021-06-30/feeds/{}", created["feedId"].as_str().unwrap())).await;
            assert_eq!(state["processingStatus"], "DONE");
            let (_, result) = client.get(&format!("/feeds/2021-06-30/documents/{}", state["resultFeedDocumentId"].as_str().unwrap())).await;
            let report = client.http.get(result["url"].as_str().unwrap()).send().await.unwrap().text().await.unwrap();
            assert!(report.contains("<MessagesProcessed>2</MessagesProcessed><MessagesSuccessful>1</MessagesSuccessful><MessagesWithError>1</MessagesWithError>"), "{report}");
        }
        assert_eq!(sandbox.erp.totals("CC-CLAW-42"), (2, 0, 2));
        let cancels: Vec<_> = sandbox.erp.effects().into_iter().filter(|e| e.kind == "order_cancel").collect();
        assert_eq!(cancels.len(), 1);
        assert_eq!(cancels[0].detail["CancelReason"], "NoInventory");
        let (_, canceled) = client.get(&format!("/orders/v0/orders/{}", amazon_order_id(order.id))).await;
        assert_eq!(canceled["payload"]["OrderStatus"], "Canceled");
        assert!(canceled["payload"].get("OrderTotal").is_none());
        sandbox.stop().await;
    }
}
