//! Workflows: the compiled form of `workflows/<name>.yaml`.
//!
//! A workflow has one trigger and one kind of work:
//! - **orders**: map a new order, look up stock, let the rule decide,
//!   reserve, write back; later events of the same order (cancelled,
//!   shipped) release what it holds;
//! - **stock**: turn a delivery or polled record into reported stock levels
//!   for the ledger;
//! - **push**: when a SKU's available quantity changes, send it to a channel.

pub mod mapping;
pub mod stock;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use crate::adapters::jsonpath::JsonPath;
use crate::adapters::rules::Rule;
use crate::adapters::template::Template;
use crate::connector::extract::Extractor;
use crate::connector::{Connection, JsonTemplate, RequestSpec};
use crate::inventory::pattern::SkuPattern;
use crate::model::Decision;
use mapping::OrderMapping;

pub struct Workflow {
    pub name: String,
    pub file: PathBuf,
    pub connection: Arc<Connection>,
    pub trigger: Trigger,
    pub kind: Kind,
}

pub enum Trigger {
    /// Signed deliveries at `/hooks/<workflow>`; `events` filters on the connector's event header.
    Webhook {
        events: Vec<String>,
        /// A delivery that batches records: each is its own event.
        records: Option<JsonPath>,
        /// What identifies a record of a batch (for dedupe).
        record_key: Vec<JsonPath>,
    },
    Poll(Box<PollSpec>),
    /// The ledger's available quantity of a matching SKU changed by at least `min_change`.
    StockChange {
        skus: Vec<SkuPattern>,
        min_change: i64,
    },
}

pub struct PollSpec {
    pub request: Arc<RequestSpec>,
    pub every: Duration,
    pub records: JsonPath,
    pub id: Option<JsonPath>,
    pub version: Vec<JsonPath>,
    pub watermark: Option<JsonPath>,
    pub next_cursor: Option<JsonPath>,
    pub initial_cursor: Option<String>,
    pub pages: Pages,
    pub max_pages: u32,
}

/// How a poll asks for the next page.
pub enum Pages {
    /// One page only.
    Single,
    /// The answer names the next page's token (`page` in templates).
    Token(JsonPath),
    /// Page numbers from `first`; the last page is the one the totals name,
    /// or one shorter than `size`, or an empty one.
    Number { first: u64, size: Option<u64>, total_pages: Option<JsonPath>, total_count: Option<JsonPath> },
    /// Record offsets from `first`, `size` apart; a short page is the last.
    Offset { first: u64, size: u64, total_count: Option<JsonPath> },
    /// The answer holds the next page's URL.
    Link(JsonPath),
}

pub enum Kind {
    Orders(Box<OrderFlow>),
    Stock(StockFlow),
    Push(PushFlow),
}

pub struct OrderFlow {
    /// Requests that complete a record before it is mapped.
    pub fetch: Vec<Fetch>,
    pub mapping: OrderMapping,
    /// Where lines name only a catalogue id: the request that reads a line's SKU, and where in its answer.
    pub line_sku_request: Option<(Arc<RequestSpec>, JsonPath)>,
    pub stock: StockLookup,
    pub rule: Rule,
    pub params: Value,
    pub steps: BTreeMap<Decision, Vec<Step>>,
}

/// A request that completes a record: its answer (or the part at `path`)
/// replaces the record, or goes under `into`.
pub struct Fetch {
    pub request: Arc<RequestSpec>,
    pub path: Option<JsonPath>,
    pub into: Option<String>,
}

pub struct StockLookup {
    pub request: Arc<RequestSpec>,
    /// More requests whose extracts join the first one's.
    pub also: Vec<Arc<RequestSpec>>,
}

pub struct StockFlow {
    pub items: JsonPath,
    pub fields: Vec<(String, Extractor)>,
    pub request: Option<Arc<RequestSpec>>,
}

pub struct PushFlow {
    pub steps: Vec<Step>,
}

/// One write-back request.
pub struct Step {
    pub name: String,
    pub request: Arc<RequestSpec>,
    pub args: Vec<(String, JsonTemplate)>,
    /// A lone expression that yields an array; the request is sent once per item.
    pub for_each: Option<Template>,
    /// Only when the order's previous decision was one of these (empty: always).
    pub if_previous: Vec<Decision>,
}

impl Workflow {
    pub fn orders(&self) -> Option<&OrderFlow> {
        match &self.kind {
            Kind::Orders(o) => Some(o),
            _ => None,
        }
    }

    pub fn kind_name(&self) -> &'static str {
        match self.kind {
            Kind::Orders(_) => "orders",
            Kind::Stock(_) => "stock",
            Kind::Push(_) => "push",
        }
    }

    pub fn trigger_name(&self) -> &'static str {
        match self.trigger {
            Trigger::Webhook { .. } => "webhook",
            Trigger::Poll(_) => "poll",
            Trigger::StockChange { .. } => "stock_change",
        }
    }

    /// The write-back steps of a decision (order workflows) or the push steps.
    pub fn steps_for(&self, decision: Decision) -> &[Step] {
        match &self.kind {
            Kind::Orders(o) => o.steps.get(&decision).map_or(&[], Vec::as_slice),
            Kind::Push(p) => &p.steps,
            Kind::Stock(_) => &[],
        }
    }
}

/// `30s`, `5m`, `1h`, `250ms` → a duration.
pub fn parse_interval(s: &str) -> Option<Duration> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit())?;
    let (n, unit) = s.split_at(split);
    let n: u64 = n.parse().ok()?;
    let d = match unit.trim() {
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n * 60),
        "h" => Duration::from_secs(n * 3600),
        _ => return None,
    };
    (!d.is_zero()).then_some(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_parse() {
        assert_eq!(parse_interval("30s"), Some(Duration::from_secs(30)));
        assert_eq!(parse_interval("5m"), Some(Duration::from_secs(300)));
        assert_eq!(parse_interval("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_interval("0s"), None);
        assert_eq!(parse_interval("soon"), None);
    }
}
