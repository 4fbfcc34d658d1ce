//! The stock ledger: one picture of every SKU across every channel.
//!
//! Per (SKU, location) it keeps on-hand as reported by the SKU's stock
//! master; per SKU the units reserved by approved orders of every channel,
//! and what is incoming. available = on-hand − reserved − safety stock.
//! Every change is written to the SKU's history with its cause, so the
//! history of a SKU always adds up to its current figures.
//!
//! All functions here run inside the store's single writer, so a check and
//! the write that depends on it are one serialised step: two channels can
//! never both take the last unit.

use std::collections::BTreeMap;

use crate::adapters::rules::AllocatedLine;
use crate::clock::days_between;
use crate::model::{Incoming, LocationStock, StockView};
use crate::store::{StockChange, StockChangeKind, StockRow, StoreError, WriteTx};
use crate::workflow::stock::ReportedStock;

use super::InventorySettings;

/// Not enough stock for an approval at commit time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shortfall {
    pub sku: String,
    pub wanted: i64,
    pub available: i64,
}

/// How a transaction changed each SKU's availability (first `before`, last `after`).
#[derive(Debug, Clone, Default)]
pub struct Effects {
    pub changed: BTreeMap<String, Availability>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Availability {
    pub before: i64,
    pub after: i64,
    pub on_hand: i64,
    pub reserved: i64,
}

impl Effects {
    fn note(&mut self, sku: &str, before: i64, after: i64, on_hand: i64, reserved: i64) {
        let e = self.changed.entry(sku.to_string()).or_insert(Availability { before, after, on_hand, reserved });
        e.after = after;
        e.on_hand = on_hand;
        e.reserved = reserved;
    }

    /// SKUs that have more available than before: the waitlist may move.
    pub fn increased(&self) -> Vec<String> {
        self.changed.iter().filter(|(_, a)| a.after > a.before).map(|(s, _)| s.clone()).collect()
    }

    pub fn is_empty(&self) -> bool {
        self.changed.is_empty()
    }
}

/// (on hand, reserved) of a SKU over every location.
pub fn totals(w: &mut WriteTx<'_>, sku: &str) -> Result<(i64, i64), StoreError> {
    let on_hand = w.stock(sku)?.iter().map(|(_, r)| r.on_hand).sum();
    Ok((on_hand, w.reserved_total(sku)?))
}

struct Change<'a> {
    kind: StockChangeKind,
    location: Option<&'a str>,
    on_hand_before: i64,
    reserved_before: i64,
    cause: &'a str,
    now: &'a str,
}

fn history(w: &mut WriteTx<'_>, settings: &InventorySettings, sku: &str, c: Change<'_>, effects: &mut Effects) -> Result<(), StoreError> {
    let (on_hand, reserved) = totals(w, sku)?;
    history_to(w, settings, sku, c, (on_hand, reserved), effects)
}

/// [`history`] for a caller that already knows the SKU's (on hand, reserved) after the change.
fn history_to(
    w: &mut WriteTx<'_>,
    settings: &InventorySettings,
    sku: &str,
    c: Change<'_>,
    (on_hand, reserved): (i64, i64),
    effects: &mut Effects,
) -> Result<(), StoreError> {
    if on_hand == c.on_hand_before && reserved == c.reserved_before {
        return Ok(());
    }
    w.add_stock_change(
        sku,
        StockChange {
            seq: 0,
            at: c.now.to_string(),
            kind: c.kind,
            location: c.location.map(str::to_string),
            on_hand_delta: on_hand - c.on_hand_before,
            reserved_delta: reserved - c.reserved_before,
            on_hand_after: on_hand,
            reserved_after: reserved,
            cause: c.cause.to_string(),
        },
    )?;
    let safety = settings.safety_stock(sku);
    effects.note(sku, c.on_hand_before - c.reserved_before - safety, on_hand - reserved - safety, on_hand, reserved);
    Ok(())
}

/// Take a platform's report of a SKU into the ledger, if that platform is
/// the SKU's stock master (or the ledger has no figure for it yet). A platform that lowers its own figure for its
/// open orders (`excludes_open_orders`) has what our reservations of its
/// orders hold added back, so no unit is counted twice. Returns whether the
/// report was taken.
#[allow(clippy::too_many_arguments)]
pub fn record_report(
    w: &mut WriteTx<'_>,
    settings: &InventorySettings,
    reported: &ReportedStock,
    source: &str,
    excludes_open_orders: bool,
    now: &str,
    cause: &str,
    effects: &mut Effects,
) -> Result<bool, StoreError> {
    let sku = reported.sku.as_str();
    // Another channel's figure stands in until the master first reports.
    let existing = w.stock(sku)?;
    if !settings.accepts_report(sku, source) && !existing.is_empty() {
        return Ok(false);
    }
    let on_hand_before = existing.iter().map(|(_, r)| r.on_hand).sum();
    let reserved_before = w.reserved_total(sku)?;
    let mut levels = reported.levels.clone();
    if excludes_open_orders {
        let held = w.reserved_by_connection(sku, source)?;
        match levels.first_mut() {
            Some(first) => first.1 += held,
            None if held > 0 => levels.push(("default".into(), held)),
            None => {}
        }
    }
    let mut rows_changed = false;
    for (loc, _) in &existing {
        if !levels.iter().any(|(l, _)| l == loc) {
            w.remove_stock(sku, loc)?;
            rows_changed = true;
        }
    }
    for (loc, qty) in &levels {
        let same = existing.iter().any(|(l, row)| l == loc && row.on_hand == *qty);
        if !same {
            w.put_stock(sku, loc, &StockRow { on_hand: *qty, reported_at: now.to_string(), source: source.to_string() })?;
            rows_changed = true;
        }
    }
    if w.incoming(sku)? != reported.incoming {
        w.set_incoming(sku, &reported.incoming)?;
    }
    // A report that matches the rows changes no figure: nothing for the history.
    if rows_changed {
        let location = (levels.len() == 1).then(|| levels[0].0.as_str());
        let change = Change { kind: StockChangeKind::Reported, location, on_hand_before, reserved_before, cause, now };
        history(w, settings, sku, change, effects)?;
    }
    Ok(true)
}

/// Reserve every line or none of them.
pub fn reserve(
    w: &mut WriteTx<'_>,
    settings: &InventorySettings,
    order_id: &str,
    lines: &[AllocatedLine],
    now: &str,
    effects: &mut Effects,
) -> Result<Result<(), Shortfall>, StoreError> {
    let mut wanted = Vec::new();
    for (sku, qty) in by_sku(lines) {
        let (on_hand, reserved) = totals(w, sku)?;
        let avail = on_hand - reserved - settings.safety_stock(sku);
        if avail < qty {
            return Ok(Err(Shortfall { sku: sku.to_string(), wanted: qty, available: avail }));
        }
        wanted.push((sku, qty, on_hand, reserved));
    }
    let cause = format!("order {order_id} approved");
    // Reserving moves only the reserved total, by what `set_reservation`
    // gives back: no need to read the SKU again.
    for (sku, qty, on_hand_before, reserved_before) in wanted {
        let held = w.reservation(sku, order_id)?;
        let reserved_after = reserved_before + w.set_reservation(sku, order_id, held + qty)?;
        let change = Change { kind: StockChangeKind::Reserved, location: None, on_hand_before, reserved_before, cause: &cause, now };
        history_to(w, settings, sku, change, (on_hand_before, reserved_after), effects)?;
    }
    Ok(Ok(()))
}

/// Give back what an order holds.
pub fn release(
    w: &mut WriteTx<'_>,
    settings: &InventorySettings,
    order_id: &str,
    lines: &[AllocatedLine],
    now: &str,
    cause: &str,
    effects: &mut Effects,
) -> Result<(), StoreError> {
    for sku in by_sku(lines).keys() {
        let (on_hand_before, reserved_before) = totals(w, sku)?;
        w.set_reservation(sku, order_id, 0)?;
        history(
            w,
            settings,
            sku,
            Change { kind: StockChangeKind::Released, location: None, on_hand_before, reserved_before, cause, now },
            effects,
        )?;
    }
    Ok(())
}

/// The order shipped: its reservation ends and its units leave on-hand
/// (until the stock master's next report says otherwise).
pub fn fulfil(
    w: &mut WriteTx<'_>,
    settings: &InventorySettings,
    order_id: &str,
    lines: &[AllocatedLine],
    now: &str,
    effects: &mut Effects,
) -> Result<(), StoreError> {
    let cause = format!("order {order_id} shipped");
    for (sku, qty) in by_sku(lines) {
        let (on_hand_before, reserved_before) = totals(w, sku)?;
        w.set_reservation(sku, order_id, 0)?;
        // Take the units from the locations with the most on hand.
        let mut rows = w.stock(sku)?;
        rows.sort_by_key(|(_, r)| std::cmp::Reverse(r.on_hand));
        let mut left = qty;
        for (loc, mut row) in rows {
            if left == 0 {
                break;
            }
            let take = left.min(row.on_hand.max(0));
            if take > 0 {
                row.on_hand -= take;
                row.reported_at = now.to_string();
                w.put_stock(sku, &loc, &row)?;
                left -= take;
            }
        }
        history(
            w,
            settings,
            sku,
            Change { kind: StockChangeKind::Fulfilled, location: None, on_hand_before, reserved_before, cause: &cause, now },
            effects,
        )?;
    }
    Ok(())
}

fn by_sku(lines: &[AllocatedLine]) -> BTreeMap<&str, i64> {
    let mut out = BTreeMap::new();
    for l in lines {
        *out.entry(l.sku.as_str()).or_insert(0) += l.qty;
    }
    out
}

/// The rule's view of a SKU from a fresh report.
pub fn view_of_report(reported: &ReportedStock, reserved: i64, safety: i64) -> StockView {
    let on_hand = reported.on_hand();
    StockView {
        sku: reported.sku.clone(),
        on_hand,
        reserved,
        safety,
        available: on_hand - reserved - safety,
        incoming: reported.incoming.clone(),
        locations: reported.levels.iter().map(|(l, q)| LocationStock { location: l.clone(), on_hand: *q }).collect(),
        refs: reported.refs.clone(),
    }
}

/// The rule's view of a SKU from the ledger (for the waitlist, and for
/// channels that are not the SKU's stock master).
pub fn view_of_ledger(
    sku: &str,
    rows: &[(String, StockRow)],
    reserved: i64,
    safety: i64,
    incoming: &[Incoming],
    refs: BTreeMap<String, serde_json::Value>,
    now: &str,
) -> StockView {
    let on_hand = rows.iter().map(|(_, r)| r.on_hand).sum();
    StockView {
        sku: sku.to_string(),
        on_hand,
        reserved,
        safety,
        available: on_hand - reserved - safety,
        incoming: incoming
            .iter()
            .map(|i| Incoming { qty: i.qty, eta: i.eta.clone(), days_until: i.eta.as_deref().and_then(|e| days_between(now, e)) })
            .collect(),
        locations: rows.iter().map(|(l, r)| LocationStock { location: l.clone(), on_hand: r.on_hand }).collect(),
        refs,
    }
}
