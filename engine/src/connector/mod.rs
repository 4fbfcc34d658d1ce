//! Connectors: the compiled shape of one platform's API, and the client that
//! speaks it.
//!
//! A `Connector` is what `connectors.d/<name>.yaml` compiles to: nothing in it
//! is account-specific. A `Connection` binds it to one account (base URL,
//! values, secrets) and is what requests are sent through.

pub mod auth;
pub mod client;
pub mod credentials;
pub mod extract;
pub mod ratelimit;
pub mod retry;
pub mod webhook;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use crate::adapters::jsonpath::{Condition, JsonPath};
use crate::adapters::template::Template;
use crate::config::raw::{HttpMethod, SignatureAlgorithm, SignatureEncoding, SignedBytes};
use crate::config::secret::Secret;
pub use auth::Auth;
use extract::Extractor;

pub struct Connector {
    pub name: String,
    pub file: PathBuf,
    pub base_url: Template,
    /// Declared values and their defaults (`None`: the connection must set it).
    pub values: BTreeMap<String, Option<String>>,
    /// Declared secrets; `true` when optional.
    pub secrets: BTreeMap<String, bool>,
    pub auth: Auth,
    pub webhook: Option<WebhookSpec>,
    pub default_headers: Vec<(String, Template)>,
    pub errors: ErrorRules,
    pub reported_excludes_open_orders: bool,
    pub retry: retry::RetryPolicy,
    pub rate_limit: Option<ratelimit::RateLimit>,
    pub connect_timeout: Duration,
    pub requests: BTreeMap<String, Arc<RequestSpec>>,
}

#[derive(Debug, Clone)]
pub struct WebhookSpec {
    pub signature: Option<SignatureSpec>,
    pub delivery_id_headers: Vec<String>,
    /// Header values and body fields that identify a delivery together.
    pub delivery_key: Option<DeliveryKey>,
    /// A body matching this is a ping: acknowledged, nothing stored.
    pub ping: Option<regex::Regex>,
    pub event_header: Option<String>,
    pub event_path: Option<JsonPath>,
    pub max_body_bytes: usize,
}

#[derive(Debug, Clone)]
pub struct DeliveryKey {
    pub headers: Vec<String>,
    pub body: Vec<JsonPath>,
}

#[derive(Debug, Clone)]
pub struct SignatureSpec {
    pub header: String,
    pub algorithm: SignatureAlgorithm,
    pub encoding: SignatureEncoding,
    pub secret: String,
    pub prefix: String,
    pub signed: SignedBytes,
}

#[derive(Debug, Clone, Default)]
pub struct ErrorRules {
    pub message: Option<JsonPath>,
    pub throttled: Option<JsonPath>,
}

pub struct RequestSpec {
    pub connector: String,
    pub name: String,
    pub method: HttpMethod,
    pub path: Template,
    pub query: Vec<(String, Template)>,
    pub headers: Vec<(String, Template)>,
    pub body: Body,
    /// With `per_sku`, applied by the stock lookup to each SKU's item rather
    /// than by the client to the whole answer.
    pub extract: Vec<(String, Extractor)>,
    /// Set for a stock lookup that answers for several SKUs at once.
    pub per_sku: Option<PerSku>,
    pub user_errors: Option<JsonPath>,
    /// A 2xx answer counts as done only when this matches something truthy.
    pub success_when: Option<JsonPath>,
    pub timeout: Duration,
    /// Read-before-write for resends.
    pub check: Option<Check>,
    /// Sent with the connector's auth (false for logins and pre-signed URLs).
    pub authenticate: bool,
}

/// How one answer of a multi-SKU stock lookup splits into SKUs.
#[derive(Debug, Clone)]
pub struct PerSku {
    /// The items of the answer, one per SKU found.
    pub items: JsonPath,
    /// An item's SKU, relative to the item.
    pub sku: JsonPath,
    /// Most SKUs asked for in one request.
    pub max: usize,
    /// The one-SKU request asked for each SKU missing from an answer.
    pub single: String,
}

impl Connector {
    /// The one-SKU request standing in for SKUs a multi-SKU `request`'s answer lacks.
    pub fn single_for(&self, request: &RequestSpec) -> Option<&Arc<RequestSpec>> {
        request.per_sku.as_ref().and_then(|p| self.requests.get(&p.single))
    }

    /// Whether sending `request` may read the order's raw payload (see
    /// [`Template::reads_raw`]).
    pub fn request_reads_raw(&self, request: &RequestSpec) -> bool {
        self.request_uses(request, &Template::reads_raw)
    }

    /// Whether any template used to send `request` satisfies `test`: its
    /// own, the connector's default headers, or its read-before-write check's.
    pub fn request_uses(&self, request: &RequestSpec, test: &dyn Fn(&Template) -> bool) -> bool {
        let check = request.check.as_ref().is_some_and(|c| {
            matches!(&c.done_when, DoneWhen::Template(t) if test(t)) || self.requests.get(&c.request).is_some_and(|r| r.uses(test))
        });
        check || request.uses(test) || self.default_headers.iter().any(|(_, t)| test(t))
    }
}

impl JsonTemplate {
    /// Whether any template inside satisfies `test`.
    pub fn uses(&self, test: &dyn Fn(&Template) -> bool) -> bool {
        match self {
            JsonTemplate::Fixed(_) => false,
            JsonTemplate::String(t) => test(t),
            JsonTemplate::Array(items) => items.iter().any(|i| i.uses(test)),
            JsonTemplate::Object(fields) => fields.iter().any(|(_, v)| v.uses(test)),
        }
    }
}

impl RequestSpec {
    /// Whether any template of the request (path, query, headers, body) satisfies `test`.
    pub fn uses(&self, test: &dyn Fn(&Template) -> bool) -> bool {
        let body = match &self.body {
            Body::None => false,
            Body::Json(t) => t.uses(test),
            Body::Text { template, .. } => test(template),
            Body::Form(fields) => fields.iter().any(|(_, t)| test(t)),
        };
        body || test(&self.path) || self.query.iter().chain(&self.headers).any(|(_, t)| test(t))
    }
}

/// Before a resend: run `request`; if `done_when` matches, the effect is there.
#[derive(Debug, Clone)]
pub struct Check {
    pub request: String,
    pub done_when: DoneWhen,
}

/// A JSONPath, or a template that renders one with the request's own
/// values (to look for the very note or line a request adds).
#[derive(Debug, Clone)]
pub enum DoneWhen {
    Condition(Condition),
    /// A JSONPath template, rendered per request.
    Template(Template),
}

pub enum Body {
    None,
    Json(JsonTemplate),
    Text { template: Template, content_type: String },
    Form(Vec<(String, Template)>),
}

/// A JSON value whose strings are templates.
#[derive(Debug, Clone)]
pub enum JsonTemplate {
    /// No template inside: used as is.
    Fixed(Value),
    String(Template),
    Array(Vec<JsonTemplate>),
    Object(Vec<(String, JsonTemplate)>),
}

impl HttpMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            HttpMethod::Get => "GET",
            HttpMethod::Post => "POST",
            HttpMethod::Put => "PUT",
            HttpMethod::Patch => "PATCH",
            HttpMethod::Delete => "DELETE",
        }
    }
}

/// One account on one platform.
pub struct Connection {
    pub name: String,
    pub connector: Arc<Connector>,
    pub base_url: String,
    /// `base_url` parsed once, so each request's URL is built on it without
    /// parsing scheme and host again.
    pub parsed_base: Option<reqwest::Url>,
    /// Values as templates see them (`values.<name>`).
    pub values: Value,
    pub secrets: BTreeMap<String, Secret>,
    /// The connector's rate limit with this account's overrides.
    pub rate_limit: Option<ratelimit::RateLimit>,
}

impl Connection {
    pub fn secret(&self, name: &str) -> Option<&Secret> {
        self.secrets.get(name)
    }
}
