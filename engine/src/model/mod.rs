//! The canonical data every workflow maps into and every rule and template
//! sees, whatever platform an order came from.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::adapters::rules::AllocatedLine;

/// What a rule decides for an order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Decision {
    Approve,
    Reject,
    Waitlist,
}

impl Decision {
    pub const ALL: [Decision; 3] = [Decision::Approve, Decision::Reject, Decision::Waitlist];

    pub fn parse(s: &str) -> Option<Decision> {
        match s {
            "approve" => Some(Decision::Approve),
            "reject" => Some(Decision::Reject),
            "waitlist" => Some(Decision::Waitlist),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Approve => "approve",
            Decision::Reject => "reject",
            Decision::Waitlist => "waitlist",
        }
    }

    pub fn status(self) -> OrderStatus {
        match self {
            Decision::Approve => OrderStatus::Approved,
            Decision::Reject => OrderStatus::Rejected,
            Decision::Waitlist => OrderStatus::Waitlisted,
        }
    }
}

/// An order in platform-neutral form.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Order {
    /// Platform-qualified id: `{connection}:{external_id}`.
    pub id: String,
    /// The connector name, e.g. `shopify`.
    pub platform: String,
    pub connection: String,
    pub workflow: String,
    pub external_id: String,
    pub number: String,
    pub customer: Customer,
    pub lines: Vec<Line>,
    pub received_at: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Customer {
    pub id: Option<String>,
    pub name: Option<String>,
    pub group: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Line {
    pub sku: String,
    pub qty: i64,
    pub location: Option<String>,
    /// Platform values of the line the workflow keeps (e.g. a catalogue id).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub fields: BTreeMap<String, serde_json::Value>,
}

impl Order {
    /// Quantity per SKU across lines (an order may list a SKU twice).
    pub fn qty_by_sku(&self) -> BTreeMap<&str, i64> {
        let mut out = BTreeMap::new();
        for l in &self.lines {
            *out.entry(l.sku.as_str()).or_insert(0) += l.qty;
        }
        out
    }
}

/// Where an order is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OrderStatus {
    Received,
    Approved,
    Rejected,
    Waitlisted,
    /// The rule failed or the payload could not be used; see `error`.
    Error,
    Cancelled,
    Fulfilled,
}

impl OrderStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            OrderStatus::Received => "received",
            OrderStatus::Approved => "approved",
            OrderStatus::Rejected => "rejected",
            OrderStatus::Waitlisted => "waitlisted",
            OrderStatus::Error => "error",
            OrderStatus::Cancelled => "cancelled",
            OrderStatus::Fulfilled => "fulfilled",
        }
    }

    pub fn parse(s: &str) -> Option<OrderStatus> {
        [
            OrderStatus::Received,
            OrderStatus::Approved,
            OrderStatus::Rejected,
            OrderStatus::Waitlisted,
            OrderStatus::Error,
            OrderStatus::Cancelled,
            OrderStatus::Fulfilled,
        ]
        .into_iter()
        .find(|st| st.as_str() == s)
    }
}

/// Progress of the write-back for the current decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WritebackState {
    /// Nothing to write (no decision yet, or no steps configured).
    None,
    /// Steps wait in the outbox. The record is not written again when they
    /// are done: the store reads `Pending` without an outbox job as `Done`.
    Pending,
    Done,
    /// A step exhausted its retries; see the dead-letter list.
    DeadLettered,
    /// An operator dropped the dead-lettered step; nothing more is sent.
    Dropped,
}

/// One entry of an order's status history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusChange {
    pub at: String,
    pub status: OrderStatus,
    pub reason: String,
}

/// Stock of one SKU as a rule sees it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StockView {
    pub sku: String,
    pub on_hand: i64,
    pub reserved: i64,
    pub safety: i64,
    pub available: i64,
    pub incoming: Vec<Incoming>,
    pub locations: Vec<LocationStock>,
    /// Other values the lookup extracted (product status, item ids, …).
    pub refs: BTreeMap<String, Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Incoming {
    pub qty: i64,
    pub eta: Option<String>,
    /// Whole days from now until `eta`, when it is known.
    pub days_until: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LocationStock {
    pub location: String,
    pub on_hand: i64,
}

/// The durable record of one order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrderRecord {
    pub order: Order,
    pub status: OrderStatus,
    pub reason: String,
    pub priority: i64,
    pub error: Option<String>,
    pub writeback: WritebackState,
    pub history: Vec<StatusChange>,
    /// Stock as the rule saw it, per SKU.
    pub stock_seen: BTreeMap<String, StockView>,
    /// What is reserved for this order, per SKU.
    pub allocations: Vec<AllocatedLine>,
    pub config_version: u64,
    /// The event that created this order.
    pub event_id: u64,
    /// Place in line among orders of equal priority (the creating event's id).
    pub arrival: u64,
}
