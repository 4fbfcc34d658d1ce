//! Serde structs that mirror the config files one to one.
//!
//! Nothing here is validated beyond its shape; `compile.rs` turns these into
//! the ready-to-run set. Every struct rejects unknown keys so a typo is an
//! error with a suggestion, never a silently ignored setting.

use std::collections::BTreeMap;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer};
use serde_json::Value;

// ---------------------------------------------------------------- connectors

/// `connectors.d/<name>.yaml`: how to talk to one platform's API.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ConnectorFile {
    /// The connector's name, referenced by connections.
    pub connector: String,
    #[serde(default)]
    pub description: String,
    /// Template for the API's base URL over the connection's `values`.
    pub base_url: String,
    /// Account-specific values a connection provides, with defaults.
    #[serde(default)]
    pub values: BTreeMap<String, ValueDecl>,
    /// Names of the secrets a connection must provide.
    #[serde(default)]
    pub secrets: BTreeMap<String, SecretDecl>,
    #[serde(default)]
    pub auth: AuthRaw,
    /// How the platform signs and identifies webhook deliveries.
    pub webhook: Option<WebhookRaw>,
    #[serde(default)]
    pub defaults: RequestDefaultsRaw,
    /// How failures show in response bodies that arrive with a 2xx status.
    #[serde(default)]
    pub errors: ErrorsRaw,
    /// What the platform's reported stock quantities mean.
    #[serde(default)]
    pub stock: StockSemanticsRaw,
    /// How failed requests are retried.
    #[serde(default)]
    pub retry: RetryRaw,
    /// How fast requests may be sent, per connection.
    pub rate_limit: Option<RateLimitRaw>,
    /// Named requests that workflows call.
    pub requests: BTreeMap<String, RequestRaw>,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ValueDecl {
    #[serde(default)]
    pub description: String,
    /// Used when the connection does not set the value; without one the value is required.
    pub default: Option<String>,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SecretDecl {
    #[serde(default)]
    pub description: String,
    /// A connection may leave an optional secret out.
    #[serde(default)]
    pub optional: bool,
}

/// How every request authenticates.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum AuthRaw {
    #[default]
    None,
    /// A secret sent in a header, optionally behind a prefix (`Bearer `).
    Header {
        header: String,
        secret: String,
        #[serde(default)]
        prefix: String,
    },
    /// `Authorization: Bearer <secret>`.
    Bearer { secret: String },
    /// HTTP basic auth; `username` and `password` name secrets.
    Basic { username: String, password: String },
    /// OAuth 2.0 refresh-token grant: an access token is fetched from
    /// `token_url` with the refresh token, kept (with a rotated refresh
    /// token) in the state store, refreshed before it expires and whenever
    /// the platform answers one of `refresh_on`.
    Oauth2RefreshToken(OAuth2Raw),
    /// A login request opens a session (a cookie, a token, a user id) that
    /// later requests carry; the daemon logs in again when the session
    /// expires or the platform says it is gone.
    Session(SessionRaw),
    /// Each request signed by an HMAC over its query string (sent in
    /// `header`), with fixed id headers beside it.
    SignedQuery(SignedQueryRaw),
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OAuth2Raw {
    /// Template of the token endpoint's URL (e.g. `{{values.token_url}}`).
    pub token_url: String,
    /// Secret names of the client id, client secret and (initial) refresh token.
    pub client_id: String,
    pub client_secret: String,
    pub refresh_token: String,
    /// How the client credentials reach the token endpoint (default `basic`).
    #[serde(default)]
    pub client_auth: ClientAuth,
    /// Header that carries the access token (default `Authorization`).
    pub header: Option<String>,
    /// Text before the token in that header (default `Bearer `).
    pub prefix: Option<String>,
    /// Statuses that mean the access token was refused: refresh and send again, once (default 401).
    pub refresh_on: Option<Vec<u16>>,
    /// Refresh this long before the token expires (default 120).
    pub refresh_before_s: Option<u64>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ClientAuth {
    /// `Authorization: Basic base64(client_id:client_secret)`.
    #[default]
    Basic,
    /// `client_id` and `client_secret` in the form body.
    Body,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SessionRaw {
    /// The request (in `requests`) that logs in; its templates see `secrets.<name>`.
    pub login: String,
    /// Values kept from the login answer (name → JSONPath); requests see them as `session.<name>`.
    #[serde(default)]
    pub keep: BTreeMap<String, String>,
    /// Cookies set by the login answer that every request sends back.
    #[serde(default)]
    pub cookies: Vec<String>,
    /// Headers every request sends; templates over `session.*`.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Idle minutes after which the platform drops the session, as a JSONPath into the login answer.
    pub idle_minutes_from: Option<String>,
    /// Idle minutes after which the platform drops the session (when the answer does not say).
    pub idle_minutes: Option<u64>,
    /// Statuses that mean the session is gone: log in again and send again, once (default 401).
    pub relogin_on: Option<Vec<u16>>,
    /// JSONPath into any answer whose match means the session is gone (for APIs that answer errors with 200).
    pub relogin_when: Option<String>,
    /// Secrets that request templates may read as `secrets.<name>` (JSON-RPC APIs that pass the key in every call).
    #[serde(default)]
    pub request_secrets: Vec<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SignedQueryRaw {
    /// Header that carries the signature.
    pub header: String,
    /// Secret used as the HMAC key.
    pub secret: String,
    pub algorithm: SignatureAlgorithm,
    pub encoding: SignatureEncoding,
    /// More headers sent with every request: header name → secret name (e.g. an API id).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookRaw {
    pub signature: Option<SignatureRaw>,
    /// Headers that identify a delivery; a repeat of any of them is a duplicate.
    #[serde(default)]
    pub delivery_id_headers: Vec<String>,
    /// A delivery's identity when no header carries one that survives
    /// redelivery: header values and body fields, joined. Two deliveries
    /// with the same key are the same delivery.
    pub delivery_key: Option<DeliveryKeyRaw>,
    /// A body that is a platform's ping (e.g. sent when a webhook is saved),
    /// as a regular expression over the whole body: acknowledged, not
    /// verified, not stored.
    pub ping: Option<String>,
    /// Header naming the event type (e.g. `X-Shopify-Topic`).
    pub event_header: Option<String>,
    /// Or a JSONPath to the event type in the body (e.g. Square's `$.type`).
    pub event_path: Option<String>,
    /// Largest accepted body; larger deliveries get 413.
    pub max_body_bytes: Option<usize>,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DeliveryKeyRaw {
    #[serde(default)]
    pub headers: Vec<String>,
    /// JSONPaths into the body.
    #[serde(default)]
    pub body: Vec<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SignatureRaw {
    /// Header carrying the signature.
    pub header: String,
    pub algorithm: SignatureAlgorithm,
    pub encoding: SignatureEncoding,
    /// Name of the connection secret used as the HMAC key.
    pub secret: String,
    /// Text before the signature in the header (e.g. `sha256=`).
    #[serde(default)]
    pub prefix: String,
    /// What bytes are signed.
    #[serde(default)]
    pub signed: SignedBytes,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum SignatureAlgorithm {
    HmacSha256,
    HmacSha1,
    HmacSha512,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum SignatureEncoding {
    Base64,
    Hex,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SignedBytes {
    /// The raw request body.
    #[default]
    Body,
    /// The public notification URL followed by the raw body (Square).
    UrlAndBody,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RetryRaw {
    /// Attempts in all, the first included (default 8).
    pub max_attempts: Option<u32>,
    /// First wait; each retry doubles it, with jitter (default 200).
    pub initial_backoff_ms: Option<u64>,
    /// Longest wait between attempts (default 30000).
    pub max_backoff_ms: Option<u64>,
    /// Give up this long after the first attempt, whatever the count (default 3600).
    pub max_age_s: Option<u64>,
    /// Statuses worth another try (default 408, 425, 429, 500, 502, 503, 504).
    pub retry_on: Option<Vec<u16>>,
}

/// A token bucket per connection; each request takes `cost` tokens.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RateLimitRaw {
    /// Tokens added per second.
    pub per_second: Option<f64>,
    /// Bucket size: how large a burst may be.
    pub burst: Option<f64>,
    /// Tokens one request takes before its answer is known (default 1).
    pub cost: Option<f64>,
    /// JSONPath to what the request really cost, read from the answer.
    pub actual_cost: Option<String>,
    /// JSONPath to the tokens the platform says are left, read from the answer.
    pub available: Option<String>,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RequestDefaultsRaw {
    pub timeout_ms: Option<u64>,
    /// Time allowed to open a connection (default 5000).
    pub connect_timeout_ms: Option<u64>,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ErrorsRaw {
    /// JSONPath to error messages; any match marks the response as failed.
    pub message: Option<String>,
    /// JSONPath whose match means "throttled, retry later" even with a 200.
    pub throttled: Option<String>,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StockSemanticsRaw {
    /// `true` when the platform's reported quantity already excludes its own
    /// open orders (it lowers stock as soon as an order is placed).
    #[serde(default)]
    pub reported_excludes_open_orders: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum HttpMethod {
    Get,
    Post,
    Put,
    Patch,
    Delete,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RequestRaw {
    #[serde(default)]
    pub description: String,
    pub method: HttpMethod,
    /// Path template, appended to the base URL.
    pub path: String,
    #[serde(default)]
    pub query: BTreeMap<String, String>,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// A JSON body as YAML; each string is a template, and a string that is a
    /// single `{{expression}}` keeps the type of its value.
    pub json: Option<Value>,
    /// A text body template (use the `json` helper to escape values).
    pub body: Option<String>,
    /// Content type of a text `body`.
    pub content_type: Option<String>,
    /// A form-encoded body; each value is a template.
    pub form: Option<BTreeMap<String, String>>,
    /// Values to pull out of the response, by name (with `per_sku`, out of
    /// each SKU's item).
    #[serde(default)]
    pub extract: BTreeMap<String, ExtractRaw>,
    /// A stock lookup that answers for several SKUs at once: its context has
    /// `skus` (and `sku_count`) instead of `sku`, and the answer holds one
    /// item per SKU found.
    pub per_sku: Option<PerSkuRaw>,
    /// JSONPath to errors reported inside a 2xx response (e.g. GraphQL `userErrors`).
    pub user_errors: Option<String>,
    /// JSONPath that must match something other than null, false or empty in
    /// a 2xx answer for it to count as done (an API that answers `false`
    /// when it declines).
    pub success_when: Option<String>,
    pub timeout_ms: Option<u64>,
    /// `false` for a request that must go without the connector's auth (a
    /// pre-signed upload URL, a login). Default true.
    pub auth: Option<bool>,
    /// Read-before-write: before sending this request again after an attempt
    /// that may have taken effect (a timeout, a reset, a 5xx, a restart), run
    /// `request` and skip the resend when `done_when` matches its answer.
    pub check: Option<CheckRaw>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PerSkuRaw {
    /// JSONPath of the items in the answer, one per SKU found.
    pub items: String,
    /// JSONPath of an item's SKU, relative to the item.
    pub sku: String,
    /// Most SKUs asked for in one request (the platform's page or query-cost
    /// limit); an order with more is looked up in several requests.
    #[schemars(range(min = 1, max = 250))]
    pub max: usize,
    /// A one-SKU request of this connector, asked for each SKU missing from
    /// the answer: its answer (an unknown SKU, an error) stands as it would
    /// without batching.
    pub single: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CheckRaw {
    /// A request of the same connector that reads the current state.
    pub request: String,
    /// When this holds for its answer, the effect is there. A JSONPath (a
    /// match that is not null, false or empty means done), which may be a
    /// template over the request's context (e.g. `$[?(@.note == {{json
    /// args.note}})]`, rendered before it is used); or `path` with `equals`
    /// (and `negate`) to test a field of the answer itself.
    pub done_when: ConditionRaw,
}

/// A value pulled from a JSON document: a JSONPath string (first match), or a spec.
#[derive(Debug, Clone)]
pub enum ExtractRaw {
    Path(String),
    Spec(ExtractSpecRaw),
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExtractSpecRaw {
    /// JSONPath of the value; the first match is taken.
    pub path: Option<String>,
    /// JSONPath whose matches are collected into an array.
    pub all: Option<String>,
    /// JSONPath whose numeric matches are added up.
    pub sum: Option<String>,
    /// JSONPath of items; each item becomes an object built from `fields`.
    pub each: Option<String>,
    pub fields: Option<BTreeMap<String, ExtractRaw>>,
    /// Used when `path` matches nothing.
    pub default: Option<Value>,
    /// Fail when `path` matches nothing (and there is no default).
    #[serde(default)]
    pub required: bool,
    /// With `path`: true when a match equals one of these values, else false
    /// (a flag from a platform's own vocabulary, e.g. `tYES`).
    pub equals: Option<Vec<Value>>,
    /// With `equals`: true when no match equals any of the values (e.g. a
    /// listing whose statuses lack `BUYABLE`).
    #[serde(default)]
    pub negate: bool,
}

impl JsonSchema for ExtractRaw {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Extract".into()
    }

    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        let spec = generator.subschema_for::<ExtractSpecRaw>();
        json_schema!({
            "description": "A JSONPath (its first match), or a map with one of `path` (with `default`, `required` or `equals`), `all`, `sum`, `each`.",
            "oneOf": [{ "type": "string" }, spec]
        })
    }
}

impl<'de> Deserialize<'de> for ExtractRaw {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = ExtractRaw;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSONPath string, or a map with one of `path`, `all`, `sum`, `each`")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<ExtractRaw, E> {
                Ok(ExtractRaw::Path(v.to_string()))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<ExtractRaw, A::Error> {
                ExtractSpecRaw::deserialize(serde::de::value::MapAccessDeserializer::new(map)).map(ExtractRaw::Spec)
            }
        }
        d.deserialize_any(V)
    }
}

/// One JSONPath or a list of them.
#[derive(Debug, Clone, Default)]
pub struct Paths(pub Vec<String>);

impl JsonSchema for Paths {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Paths".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "A JSONPath, or a list of them.",
            "oneOf": [{ "type": "string" }, { "type": "array", "items": { "type": "string" } }]
        })
    }
}

impl<'de> Deserialize<'de> for Paths {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Paths;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSONPath string or a list of them")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Paths, E> {
                Ok(Paths(vec![v.to_string()]))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Paths, A::Error> {
                let mut out = Vec::new();
                while let Some(p) = seq.next_element::<String>()? {
                    out.push(p);
                }
                Ok(Paths(out))
            }
        }
        d.deserialize_any(V)
    }
}

// ----------------------------------------------------------------- workflows

/// `workflows/<name>.yaml`: one business flow of one connection. Its kind
/// follows from what it has: `order` (decide new orders), `stock_update`
/// (feed the stock ledger) or `push` (send stock changes to a channel).
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WorkflowFile {
    /// The workflow's name; webhooks arrive at `/hooks/<name>`.
    pub workflow: String,
    #[serde(default)]
    pub description: String,
    /// The connection (from the instance config) this workflow talks to.
    pub connection: String,
    pub trigger: TriggerRaw,
    /// Order workflows: how the platform payload maps to the canonical order.
    pub order: Option<OrderMappingRaw>,
    /// Order workflows: requests that complete a delivered or polled record
    /// before it is mapped (a thin webhook that names only the order, lines
    /// kept in another resource). Each sees `record` (the record so far).
    #[serde(default)]
    pub fetch: Vec<FetchRaw>,
    /// Order workflows: how to look up stock for each SKU of the order.
    pub stock: Option<StockLookupRaw>,
    /// Order workflows: path of the rule script, relative to the workflows directory.
    pub rule: Option<String>,
    /// Values handed to the rule and to templates as `params`.
    #[serde(default)]
    pub params: BTreeMap<String, Value>,
    /// Order workflows: write-back steps for each decision.
    #[serde(default)]
    pub on: DecisionStepsRaw,
    /// Stock workflows: how a payload or polled record becomes stock levels.
    pub stock_update: Option<StockUpdateRaw>,
    /// Push workflows: steps sent when a SKU's available quantity changes.
    pub push: Option<Vec<StepRaw>>,
}

/// Exactly one kind of trigger.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TriggerRaw {
    /// Signed deliveries at `/hooks/<workflow>`.
    pub webhook: Option<WebhookTriggerRaw>,
    /// A request sent on a schedule; its records are processed like deliveries.
    pub poll: Option<PollTriggerRaw>,
    /// A change of available stock in the ledger (push workflows).
    pub stock_change: Option<StockChangeTriggerRaw>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FetchRaw {
    /// The connector request to send; it sees `record`.
    pub request: String,
    /// JSONPath of the part of the answer to keep (default: the whole answer).
    pub path: Option<String>,
    /// Put the kept part under this key of the record; without it, the kept
    /// part replaces the record.
    pub into: Option<String>,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookTriggerRaw {
    /// Accepted values of the connector's event header; others are acknowledged and ignored.
    #[serde(default)]
    pub events: Vec<String>,
    /// JSONPath of the records in one delivery, for platforms that batch
    /// several changes into one notification; each becomes its own event.
    pub records: Option<String>,
    /// JSONPaths in a record that identify it (with `records`): a record
    /// seen again with the same values is a duplicate.
    #[serde(default)]
    pub record_key: Paths,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PollTriggerRaw {
    /// The connector request to send. It sees `cursor` (the watermark of the
    /// last poll, or `initial_cursor`) and `page` (the next-page token, empty
    /// on the first page). A query parameter that renders empty is left out.
    pub request: String,
    /// How often, e.g. `30s`, `5m`, `1h`.
    pub every: String,
    /// JSONPath to the records in one answer.
    pub records: String,
    /// JSONPath in a record to its id; with `version` it identifies a delivery for dedupe.
    pub id: Option<String>,
    /// JSONPaths in a record to its version (e.g. last modified date and
    /// time); a new version is a new delivery.
    #[serde(default)]
    pub version: Paths,
    /// JSONPath in a record whose largest value becomes the next `cursor`.
    pub watermark: Option<String>,
    /// JSONPath in the answer whose value becomes the next `cursor` (a
    /// platform that reports the end of the window it searched).
    pub next_cursor: Option<String>,
    /// The cursor of the very first poll.
    pub initial_cursor: Option<String>,
    /// JSONPath in the answer to the next page's token; none ends the poll.
    pub next_page: Option<String>,
    /// How further pages are asked for, when not by `next_page` token.
    pub pages: Option<PagesRaw>,
    /// Most pages read per poll (default 100).
    pub max_pages: Option<u32>,
}

/// Page-by-number, page-by-offset or page-by-link pagination. The request
/// sees `page` (the number or offset) and `page_size`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PagesRaw {
    /// `number` (1, 2, 3 …), `offset` (0, 100, 200 … or 1, 101 … with `first: 1`) or `link`.
    pub by: PageStyle,
    /// The first page's number or offset (default 1 for `number`, 0 for `offset`).
    pub first: Option<u64>,
    /// Records per page; a shorter page is the last one.
    pub size: Option<u64>,
    /// JSONPath in the answer to the number of pages.
    pub total_pages: Option<String>,
    /// JSONPath in the answer to the number of records over all pages.
    pub total_count: Option<String>,
    /// With `by: link`: JSONPath in the answer to the next page's URL,
    /// absolute or relative to the request's URL.
    pub link: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum PageStyle {
    Number,
    Offset,
    Link,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StockChangeTriggerRaw {
    /// SKU patterns (`*` matches any run of characters); none means every SKU.
    #[serde(default)]
    pub skus: Vec<String>,
    /// Smallest change of available units worth a push (default 1).
    pub min_change: Option<i64>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OrderMappingRaw {
    pub external_id: String,
    pub number: Option<String>,
    #[serde(default)]
    pub customer: CustomerMappingRaw,
    pub lines: LinesMappingRaw,
    pub received_at: Option<String>,
    /// Decide the order only once this holds (e.g. paid, confirmed); earlier
    /// events are acknowledged and a later event of the order decides it.
    pub ready: Option<ConditionRaw>,
    /// When this holds, the platform reports the order cancelled.
    pub cancelled: Option<ConditionRaw>,
    /// When this holds, the platform reports the order shipped.
    pub fulfilled: Option<ConditionRaw>,
}

/// A JSONPath that holds when it matches something other than null, false
/// or empty — or, with `equals`, one of the listed values.
#[derive(Debug, Clone)]
pub enum ConditionRaw {
    Path(String),
    Spec(ConditionSpecRaw),
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ConditionSpecRaw {
    pub path: String,
    /// Holds when a match equals one of these values.
    #[serde(default)]
    pub equals: Vec<Value>,
    /// Holds when the test fails instead (e.g. state is not `holded`).
    #[serde(default)]
    pub negate: bool,
}

impl JsonSchema for ConditionRaw {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Condition".into()
    }

    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        let spec = generator.subschema_for::<ConditionSpecRaw>();
        json_schema!({
            "description": "A JSONPath that holds when it matches something other than null, false or empty; or `path` with `equals`.",
            "oneOf": [{ "type": "string" }, spec]
        })
    }
}

impl<'de> Deserialize<'de> for ConditionRaw {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = ConditionRaw;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSONPath string, or a map with `path` and `equals`")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<ConditionRaw, E> {
                Ok(ConditionRaw::Path(v.to_string()))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<ConditionRaw, A::Error> {
                ConditionSpecRaw::deserialize(serde::de::value::MapAccessDeserializer::new(map)).map(ConditionRaw::Spec)
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CustomerMappingRaw {
    pub id: Option<String>,
    pub name: Option<String>,
    pub group: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LinesMappingRaw {
    /// JSONPath of the line items in the payload.
    pub each: String,
    /// JSONPath relative to one line item; or, where lines name only a
    /// catalogue id, a request (seeing `line`, the raw line item) and the
    /// JSONPath of the SKU in its answer.
    pub sku: SkuSourceRaw,
    pub qty: String,
    pub location: Option<String>,
    /// More values of each line (name → JSONPath in the line item), kept
    /// with the order; the stock lookup sees the first line of its SKU as `line`.
    #[serde(default)]
    pub fields: BTreeMap<String, String>,
}

/// Where a line's SKU is.
#[derive(Debug, Clone)]
pub enum SkuSourceRaw {
    Path(String),
    Request(SkuRequestRaw),
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SkuRequestRaw {
    pub request: String,
    pub path: String,
}

impl JsonSchema for SkuSourceRaw {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "SkuSource".into()
    }

    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        let spec = generator.subschema_for::<SkuRequestRaw>();
        json_schema!({
            "description": "A JSONPath in the line item, or `request` and `path` for a SKU read from another resource.",
            "oneOf": [{ "type": "string" }, spec]
        })
    }
}

impl<'de> Deserialize<'de> for SkuSourceRaw {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = SkuSourceRaw;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSONPath string, or a map with `request` and `path`")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<SkuSourceRaw, E> {
                Ok(SkuSourceRaw::Path(v.to_string()))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<SkuSourceRaw, A::Error> {
                SkuRequestRaw::deserialize(serde::de::value::MapAccessDeserializer::new(map)).map(SkuSourceRaw::Request)
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StockLookupRaw {
    /// Connector request run once per SKU with `sku` (and `line`, the first
    /// order line of the SKU) in its context, or, when it has `per_sku`,
    /// once for up to its `max` SKUs with `skus` and `sku_count`. It must extract `on_hand` or
    /// `available`, or `levels` (items with `location` and
    /// `on_hand`/`available`); `incoming` (items with `qty` and `eta`, or one
    /// number) is optional; every other extract is passed on as `refs`.
    pub request: String,
    /// More requests per SKU whose extracts join the first one's (e.g. the
    /// product's status where stock lives in another resource).
    #[serde(default)]
    pub also: Vec<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StockUpdateRaw {
    /// JSONPath of the changed items in a payload or polled record (default `$`).
    pub items: Option<String>,
    /// What to take from each item. Without `request` they must give `sku`
    /// and `on_hand`, `available` or `levels` (and may give `location`,
    /// `incoming`); with `request`, they are its inputs, seen as `item.<name>`.
    pub fields: BTreeMap<String, ExtractRaw>,
    /// A stock lookup (as in order workflows) run per item when the items
    /// carry no quantities; it must also extract `sku`.
    pub request: Option<String>,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DecisionStepsRaw {
    #[serde(default)]
    pub approve: Vec<StepRaw>,
    #[serde(default)]
    pub reject: Vec<StepRaw>,
    #[serde(default)]
    pub waitlist: Vec<StepRaw>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StepRaw {
    /// The connector request to send.
    pub request: String,
    /// Name under which later steps see this step's extracts (`steps.<name>`); defaults to the request name.
    pub name: Option<String>,
    /// Template values handed to the request as `args`.
    #[serde(default)]
    pub args: BTreeMap<String, Value>,
    /// A lone expression giving an array; the request is sent once per item, seen as `item`.
    pub for_each: Option<String>,
    /// Send this step only when the order's previous decision was one of
    /// these (e.g. `[waitlist]` to release a hold when stock arrives).
    pub if_previous: Option<Vec<String>>,
}

// ------------------------------------------------------------------ instance

/// The instance config: this installation's connections and settings.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct InstanceFile {
    /// Address of the HTTP listener (default `127.0.0.1:8080`).
    pub listen: Option<String>,
    /// Secret reference for the admin API token (`env:NAME` or `file:PATH`).
    pub admin_token: Option<String>,
    /// Number of workers that process orders concurrently.
    pub workers: Option<usize>,
    /// Public base URL under which platforms reach `/hooks/...` (for signatures over the URL).
    pub public_url: Option<String>,
    #[serde(default)]
    pub connections: BTreeMap<String, ConnectionRaw>,
    /// The one stock picture across channels.
    #[serde(default)]
    pub inventory: InventoryRaw,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct InventoryRaw {
    /// Which connection's reported on-hand is the truth, per SKU pattern;
    /// the first match wins. With none, every report counts.
    #[serde(default)]
    pub masters: Vec<MasterRaw>,
    /// Units held back per SKU pattern (`*` matches any run of characters);
    /// the first match wins.
    #[serde(default)]
    pub safety_stock: Vec<SafetyStockRaw>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MasterRaw {
    pub connection: String,
    /// SKU patterns (default: every SKU).
    #[serde(default)]
    pub skus: Vec<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SafetyStockRaw {
    pub skus: String,
    pub units: i64,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ConnectionRaw {
    /// The connector this connection uses.
    pub connector: String,
    /// Replaces the connector's base URL (e.g. to point at the sandbox).
    pub base_url: Option<String>,
    #[serde(default)]
    pub values: BTreeMap<String, String>,
    /// Secret references: `env:NAME` or `file:PATH`.
    #[serde(default)]
    pub secrets: BTreeMap<String, String>,
    /// Replaces parts of the connector's rate limit (plans differ per account).
    pub rate_limit: Option<RateLimitRaw>,
}
