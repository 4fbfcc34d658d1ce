//! The workflow test file format (`workflows/tests/<name>.test.yaml`).

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

/// One file: cases for one workflow.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TestFile {
    /// The workflow under test.
    pub workflow: String,
    /// The clock the rule sees (RFC 3339); default 2026-01-01T00:00:00Z, so ETAs decide the same every run.
    pub now: Option<String>,
    /// Answers every case may use after its own (a login, a catalogue lookup).
    #[serde(default)]
    pub responses: BTreeMap<String, Vec<ResponseRaw>>,
    pub cases: Vec<CaseRaw>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CaseRaw {
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub trigger: TriggerInput,
    /// What the platform answers, per connector request name (`oauth2_token`
    /// for an OAuth connector's token call, which otherwise succeeds); the
    /// first entry whose `when` matches (and is not used up) answers.
    #[serde(default)]
    pub responses: BTreeMap<String, Vec<ResponseRaw>>,
    /// What the ledger already knows before the trigger arrives, per SKU:
    /// stock reported by the SKU's stock master (another channel), which
    /// the workflow's own report then does not override.
    #[serde(default)]
    pub ledger: BTreeMap<String, LedgerRaw>,
    pub expect: ExpectRaw,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LedgerRaw {
    /// The connection that reported it (the stock master in the instance config).
    pub source: String,
    /// On-hand units per location.
    #[serde(default)]
    pub on_hand: BTreeMap<String, i64>,
    /// Units on their way, with their expected arrival dates where known.
    #[serde(default)]
    pub incoming: Vec<IncomingRaw>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct IncomingRaw {
    pub qty: i64,
    /// Expected arrival, an RFC 3339 date or date-time.
    pub eta: Option<String>,
}

/// What arrives: a webhook body (signed for you) or a polled record.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TriggerInput {
    /// The body, as YAML or JSON.
    pub payload: Option<Value>,
    /// Or a JSON file with it, relative to the test file.
    pub payload_file: Option<String>,
    /// Extra headers of the delivery (the event header, delivery ids).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Send the body as it is, unsigned or with `headers`' signature (to test refusals).
    #[serde(default)]
    pub unsigned: bool,
}

#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ResponseRaw {
    /// Answer only requests whose context has these values (dotted paths, e.g. `sku`, `item`, `args.tags`).
    #[serde(default)]
    pub when: BTreeMap<String, Value>,
    /// HTTP status (default 200).
    pub status: Option<u16>,
    /// `Retry-After` in seconds.
    pub retry_after: Option<f64>,
    /// A JSON body (as YAML or JSON).
    pub body: Option<Value>,
    /// Or a text body.
    pub body_text: Option<String>,
    /// No answer at all: `timeout` or `reset`.
    pub fail: Option<Failure>,
    /// Cookies the answer sets (a login's session cookie).
    #[serde(default)]
    pub cookies: BTreeMap<String, String>,
    /// Answer this many requests, then step aside (default: all).
    pub times: Option<u32>,
}

#[derive(Debug, Clone, Copy, Deserialize, schemars::JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Failure {
    Timeout,
    Reset,
}

#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExpectRaw {
    /// approve, reject or waitlist.
    pub decision: Option<String>,
    /// The order's status when no decision is expected (error, cancelled,
    /// fulfilled…, or `none` when no order may be recorded).
    pub status: Option<String>,
    pub reason: Option<String>,
    pub reason_contains: Option<String>,
    /// Part of the order's error message (status error), of the failed
    /// event's, or of the dead letter's (a write-back that gave up).
    pub error_contains: Option<String>,
    /// What the approval reserves.
    pub allocations: Option<Vec<AllocationRaw>>,
    /// done, dead_lettered, none…
    pub writeback: Option<String>,
    /// The write-back requests, in order, and no others.
    pub requests: Option<Vec<ExpectedRequest>>,
    /// The delivery is refused with this HTTP status and nothing is processed.
    pub refused: Option<u16>,
    /// The ledger afterwards, per SKU (stock workflows).
    #[serde(default)]
    pub stock: BTreeMap<String, StockExpect>,
    /// How many times requests were sent, by name, counting every attempt
    /// (lookups, logins and token refreshes included).
    #[serde(default)]
    pub calls: BTreeMap<String, u32>,
}

#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StockExpect {
    pub on_hand: Option<i64>,
    pub reserved: Option<i64>,
}

#[derive(Debug, Clone, Deserialize, schemars::JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AllocationRaw {
    pub sku: String,
    pub qty: i64,
}

#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExpectedRequest {
    /// The connector request's name.
    pub request: String,
    pub method: Option<String>,
    /// The rendered path, without the base URL or the query.
    pub path: Option<String>,
    /// Query parameters that must be present with these values.
    pub query: Option<BTreeMap<String, String>>,
    /// Headers that must be present with these values (names are case-insensitive).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// The whole JSON body.
    pub body: Option<Value>,
    /// Fields the JSON body must contain (objects may have more; arrays match item by item).
    pub body_includes: Option<Value>,
    /// Pieces of text the body must contain (for XML, form and other text bodies).
    #[serde(default)]
    pub body_contains: Vec<String>,
}
