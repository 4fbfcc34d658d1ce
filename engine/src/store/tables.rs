//! Every table of the state file and how its keys are encoded.
//!
//! Values are JSON (readable with any redb tool, and cheap next to the
//! network round trips an order costs). Composite keys are tuples so range
//! scans over one SKU or one order stay ordered.

use redb::TableDefinition;

/// Counters: `next_event_id`, `next_dead_letter_id`, `next_stock_change`.
pub const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// Queued events by id: accepted, not yet fully processed.
pub const EVENTS: TableDefinition<u64, &[u8]> = TableDefinition::new("events");
/// Delivery ids (`workflow\0Header:value`) by the week they arrived in →
/// the event that carried them first. Platforms' ids are often random
/// (UUIDs): filed under their week, new ids land among this week's pages,
/// and older weeks are only read until they are forgotten.
pub const DELIVERY_IDS: TableDefinition<(u32, &str), u64> = TableDefinition::new("delivery_ids");
/// Older state files: delivery ids without their week. Read while it holds
/// any; emptied once the ids filed by week span the whole dedupe window.
pub const DELIVERIES: TableDefinition<&str, u64> = TableDefinition::new("deliveries");
/// Orders by platform-qualified id.
pub const ORDERS: TableDefinition<&str, &[u8]> = TableDefinition::new("orders");
/// The original payload of each order, kept apart so order records stay small.
pub const PAYLOADS: TableDefinition<&str, &[u8]> = TableDefinition::new("payloads");
/// Audit trail: (order id, sequence) → an entry, or the entries appended together (a JSON array).
pub const AUDIT: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("audit");
/// Reported stock: (sku, location) → row.
pub const STOCK: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("stock");
/// Reservations: (order id, sku) → units held. Keyed by order, not by SKU:
/// order ids of a connection grow, so a commit's new holds land on the same
/// few pages, and an order's holds are one range.
pub const RESERVATIONS: TableDefinition<(&str, &str), i64> = TableDefinition::new("order_reservations");
/// Units reserved per (sku, connection), kept in step with `RESERVATIONS`;
/// a SKU's total is the sum of its rows (one per channel holding it).
pub const RESERVED: TableDefinition<(&str, &str), i64> = TableDefinition::new("reserved_by_connection");
/// Older state files: reservations keyed (sku, order id) and a total per
/// SKU. Moved into the two tables above, then dropped, when such a file is opened.
pub const RESERVATIONS_BY_SKU: TableDefinition<(&str, &str), i64> = TableDefinition::new("reservations");
pub const RESERVED_TOTALS_BY_SKU: TableDefinition<&str, i64> = TableDefinition::new("reserved_totals");
/// Outbox: write-back jobs by order id.
pub const OUTBOX: TableDefinition<&str, &[u8]> = TableDefinition::new("outbox");
/// Stock history: (sku, sequence) → one change of on-hand or reserved, with its cause.
pub const STOCK_HISTORY: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("stock_history");
/// Stock changes not yet filed under their SKU: (sequence, sku) → change.
/// Filing each change at once would rewrite one page per SKU touched in
/// every commit; appended here, they fill pages in order and are moved to
/// `STOCK_HISTORY` in bulk (see `STOCK_JOURNAL_FOLD_AT`).
pub const STOCK_JOURNAL: TableDefinition<(u64, &str), &[u8]> = TableDefinition::new("stock_journal");
/// Incoming stock (purchase orders) per SKU, as the stock master reported it.
pub const INCOMING: TableDefinition<&str, &[u8]> = TableDefinition::new("incoming");
/// Waitlist: (sku, inverted priority, arrival, order id) → (); iteration order is service order.
pub const WAITLIST: TableDefinition<(&str, u64, u64, &str), ()> = TableDefinition::new("waitlist");
/// Stock pushes: (workflow, sku) → what to send and what was last sent.
pub const PUSHES: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("pushes");
/// Poll cursors: workflow → the watermark of its last poll.
pub const CURSORS: TableDefinition<&str, &str> = TableDefinition::new("cursors");
/// OAuth tokens per connection (the newest refresh token of a rotating chain).
pub const AUTH_TOKENS: TableDefinition<&str, &[u8]> = TableDefinition::new("auth_tokens");
/// Dead letters by id.
pub const DEAD_LETTERS: TableDefinition<u64, &[u8]> = TableDefinition::new("dead_letters");
/// Events that could not be mapped to an order, by event id.
pub const FAILED_EVENTS: TableDefinition<u64, &[u8]> = TableDefinition::new("failed_events");

pub const NEXT_EVENT_ID: &str = "next_event_id";
pub const NEXT_DEAD_LETTER_ID: &str = "next_dead_letter_id";
/// One sequence over the stock changes of every SKU.
pub const NEXT_STOCK_CHANGE: &str = "next_stock_change";

/// The stock journal is filed into the history once it holds this many changes.
pub const STOCK_JOURNAL_FOLD_AT: u64 = 1024;

/// Higher priority sorts first.
pub fn inverted_priority(priority: i64) -> u64 {
    (i64::MAX as i128 - priority as i128).clamp(0, u64::MAX as i128) as u64
}

/// The connection an order belongs to: its id is `connection:external id`
/// (connection names have no `:`).
pub fn connection_of(order_id: &str) -> &str {
    order_id.split_once(':').map_or("", |(connection, _)| connection)
}

/// How many whole weeks before the current one a delivery id is still
/// recognised: ids are remembered for 14 to 21 days, far longer than any
/// platform is known to retry a delivery (Shopify for hours, Square for 24
/// hours, TradeGecko for up to 3 days). A delivery of an order after that
/// is queued again, then noted as a repeat and ignored, as the order was
/// decided already.
pub const DEDUPE_WEEKS: u32 = 2;

/// The week (days since 1970-01-01 over 7) an RFC 3339 time falls in; 0 if it does not parse.
pub fn week_of(at: &str) -> u32 {
    crate::clock::parse_instant(at).map_or(0, |t| (t.unix_timestamp().max(0) / 86_400 / 7) as u32)
}

/// The week the ids filed by week were first used in (`delivery_ids_since`):
/// the older table is emptied once it is more than [`DEDUPE_WEEKS`] behind.
pub const DELIVERY_IDS_SINCE: &str = "delivery_ids_since";

pub fn delivery_key(workflow: &str, delivery_id: &str) -> String {
    format!("{workflow}\0{delivery_id}")
}
