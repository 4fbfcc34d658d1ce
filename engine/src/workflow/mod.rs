//! Workflows: the compiled form of `workflows/<name>.yaml` — which trigger
//! starts it, how the payload maps to the canonical order, how stock is
//! looked up, which rule decides, and what is written back per decision.

pub mod mapping;
pub mod stock;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use serde_json::Value;

use crate::adapters::rules::Rule;
use crate::adapters::template::Template;
use crate::connector::{Connection, JsonTemplate, RequestSpec};
use crate::model::Decision;
use mapping::OrderMapping;

pub struct Workflow {
    pub name: String,
    pub file: PathBuf,
    pub connection: Arc<Connection>,
    pub trigger: Trigger,
    pub mapping: OrderMapping,
    pub stock: StockLookup,
    pub rule: Rule,
    pub params: Value,
    pub steps: BTreeMap<Decision, Vec<Step>>,
}

#[derive(Debug, Clone)]
pub enum Trigger {
    /// Signed deliveries at `/hooks/<workflow>`; `events` filters on the connector's event header.
    Webhook { events: Vec<String> },
}

pub struct StockLookup {
    pub request: Arc<RequestSpec>,
    pub safety_stock: i64,
}

/// One write-back request of a decision.
pub struct Step {
    pub name: String,
    pub request: Arc<RequestSpec>,
    pub args: Vec<(String, JsonTemplate)>,
    /// A lone expression that yields an array; the request is sent once per item.
    pub for_each: Option<Template>,
}

impl Workflow {
    pub fn steps_for(&self, decision: Decision) -> &[Step] {
        self.steps.get(&decision).map_or(&[], Vec::as_slice)
    }
}
