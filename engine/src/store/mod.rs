//! Durable state, behind domain verbs.
//!
//! Callers record events, claim work, save orders, reserve stock and keep the
//! outbox; how that maps onto tables is `redb.rs`'s business alone (with the
//! table layout in `tables.rs`). A PostgreSQL backend would implement the same
//! verbs.
//!
//! Writes go through one writer thread that gathers whatever is queued into a
//! single durable transaction (group commit): one fsync covers many events,
//! so durability does not cap throughput at one fsync per order, and because
//! there is one writer, check-then-write steps such as "reserve if available"
//! are serialised by construction. A write nothing else waits on (closing a
//! finished write-back) waits a moment for a write that someone does wait
//! on, so at a low rate it does not cost a commit of its own.

mod redb;
pub mod tables;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

pub use self::redb::{Store, WriteTx};
use crate::adapters::rules::AllocatedLine;
use crate::connector::client::CallSummary;
use crate::model::Decision;
pub use tables::inverted_priority;

#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("the state file {path} cannot be opened: {message}")]
    Open { path: String, message: String },
    #[error("storage failed: {0}; the write was not committed")]
    Storage(String),
    #[error("a stored record is unreadable ({what}): {message}")]
    Corrupt { what: String, message: String },
    #[error("the store is shutting down")]
    Closed,
}

/// A delivery accepted from a trigger, waiting to be processed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EventRecord {
    pub id: u64,
    pub workflow: String,
    pub received_at: String,
    /// `Header-Name:value` of each delivery id the platform sent.
    pub delivery_ids: Vec<String>,
    /// Value of the connector's event header (e.g. `orders/create`).
    pub event_type: Option<String>,
    pub payload: Box<RawValue>,
}

/// What happened to an intake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enqueued {
    New(u64),
    /// Seen before: the id of the first event with one of these delivery ids.
    Duplicate(u64),
}

/// An event to store: everything but its id.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub workflow: String,
    pub received_at: String,
    pub delivery_ids: Vec<String>,
    pub event_type: Option<String>,
    pub payload: Box<RawValue>,
}

/// One step of an order's processing, for the audit trail. Never holds secrets.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AuditEntry {
    pub at: String,
    pub kind: AuditKind,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub call: Option<CallSummary>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum AuditKind {
    Intake,
    Mapped,
    Lookup,
    Rule,
    Reserve,
    Writeback,
    Error,
}

/// The outbox entry of one decision: its steps and how far they got.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct WritebackJob {
    pub order_id: String,
    pub workflow: String,
    pub decision: Decision,
    pub created_at: String,
    pub steps: Vec<StepProgress>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StepProgress {
    pub name: String,
    pub idempotency_key: String,
    pub state: StepState,
    pub attempts: u32,
    /// Extracts of each request sent (one per `for_each` item).
    pub results: Vec<serde_json::Value>,
    pub last_error: Option<String>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum StepState {
    Pending,
    Done,
    DeadLettered,
    Dropped,
}

/// A write-back step that exhausted its retries.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DeadLetter {
    pub id: u64,
    pub order_id: String,
    pub workflow: String,
    pub decision: Decision,
    pub step: String,
    pub idempotency_key: String,
    pub error: String,
    pub at: String,
}

/// Stock of one SKU at one location as last reported by a platform.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct StockRow {
    pub on_hand: i64,
    pub reported_at: String,
    /// Which connection reported it.
    pub source: String,
}

/// What the ledger holds for one SKU, read at one instant.
#[derive(Debug, Clone, Default)]
pub struct SkuPicture {
    /// (location, row) in location order.
    pub rows: Vec<(String, StockRow)>,
    /// Units reserved by approved orders of every channel.
    pub reserved: i64,
    /// Units of it reserved by the orders of the connection asked for.
    pub reserved_by_connection: i64,
    pub incoming: Vec<crate::model::Incoming>,
}

/// One change of a SKU's stock, with its cause; the history of a SKU adds up
/// to its current on-hand and reserved units.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StockChange {
    /// Orders the changes: one sequence over every SKU.
    pub seq: u64,
    pub at: String,
    pub kind: StockChangeKind,
    pub location: Option<String>,
    pub on_hand_delta: i64,
    pub reserved_delta: i64,
    /// Totals over every location after the change.
    pub on_hand_after: i64,
    pub reserved_after: i64,
    /// Which order, which sync.
    pub cause: String,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum StockChangeKind {
    /// A platform reported a new on-hand figure.
    Reported,
    Reserved,
    Released,
    /// Shipped: the reservation ends and the units leave.
    Fulfilled,
}

/// A SKU waiting in line.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct WaitlistEntry {
    pub sku: String,
    pub priority: i64,
    pub arrival: u64,
    pub order_id: String,
}

/// The latest available figure of a SKU for one push workflow.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PushState {
    pub workflow: String,
    pub sku: String,
    pub available: i64,
    pub on_hand: i64,
    pub reserved: i64,
    /// Bumped on every change; part of the idempotency key.
    pub seq: u64,
    /// What the channel was last told (none yet).
    pub pushed: Option<i64>,
    pub pushed_seq: u64,
    pub last_error: Option<String>,
}

/// An order's hold on stock.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Reservation {
    pub order_id: String,
    pub lines: Vec<AllocatedLine>,
}

/// An event that could not become an order (bad mapping), kept for inspection.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FailedEvent {
    pub event_id: u64,
    pub workflow: String,
    pub error: String,
    pub at: String,
    pub payload: Box<RawValue>,
}
