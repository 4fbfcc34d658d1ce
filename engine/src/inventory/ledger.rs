//! The stock ledger: availability checks and reservations.
//!
//! available = on-hand (as last reported) − reserved (by approved orders of
//! every channel) − safety stock. Reservations happen inside the store's one
//! writer, so the check and the write are a single serialised step: two
//! channels can never both take the last unit.

use std::collections::BTreeMap;

use crate::adapters::rules::AllocatedLine;
use crate::model::StockView;
use crate::store::{StockRow, StoreError, WriteTx};
use crate::workflow::stock::ReportedStock;

/// Not enough stock for an approval at commit time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shortfall {
    pub sku: String,
    pub wanted: i64,
    pub available: i64,
}

/// Replace the stored levels of a SKU with what a platform just reported.
pub fn record_reported(w: &mut WriteTx<'_>, reported: &ReportedStock, source: &str, now: &str) -> Result<(), StoreError> {
    let existing = w.stock(&reported.sku)?;
    for (loc, _) in &existing {
        if !reported.levels.iter().any(|(l, _)| l == loc) {
            w.remove_stock(&reported.sku, loc)?;
        }
    }
    for (loc, qty) in &reported.levels {
        let unchanged = existing.iter().any(|(l, row)| l == loc && row.on_hand == *qty && row.source == source);
        if !unchanged {
            w.put_stock(&reported.sku, loc, &StockRow { on_hand: *qty, reported_at: now.to_string(), source: source.to_string() })?;
        }
    }
    Ok(())
}

/// What `sku` has available right now, inside the transaction.
pub fn available(w: &mut WriteTx<'_>, sku: &str, safety: i64) -> Result<i64, StoreError> {
    let on_hand: i64 = w.stock(sku)?.iter().map(|(_, r)| r.on_hand).sum();
    Ok(on_hand - w.reserved_total(sku)? - safety)
}

/// Reserve every line or none of them.
pub fn reserve(w: &mut WriteTx<'_>, order_id: &str, lines: &[AllocatedLine], safety: i64) -> Result<Result<(), Shortfall>, StoreError> {
    let mut wanted: BTreeMap<&str, i64> = BTreeMap::new();
    for l in lines {
        *wanted.entry(l.sku.as_str()).or_insert(0) += l.qty;
    }
    for (sku, qty) in &wanted {
        let avail = available(w, sku, safety)?;
        if avail < *qty {
            return Ok(Err(Shortfall { sku: sku.to_string(), wanted: *qty, available: avail }));
        }
    }
    for (sku, qty) in wanted {
        w.set_reservation(sku, order_id, qty)?;
    }
    Ok(Ok(()))
}

/// Give back what an order holds.
pub fn release(w: &mut WriteTx<'_>, order_id: &str, lines: &[AllocatedLine]) -> Result<(), StoreError> {
    for l in lines {
        w.set_reservation(&l.sku, order_id, 0)?;
    }
    Ok(())
}

/// The rule's view of one SKU.
pub fn view(reported: &ReportedStock, reserved: i64, safety: i64) -> StockView {
    let on_hand = reported.on_hand();
    StockView {
        sku: reported.sku.clone(),
        on_hand,
        reserved,
        safety,
        available: on_hand - reserved - safety,
        incoming: reported.incoming.clone(),
        locations: reported.levels.iter().map(|(l, q)| crate::model::LocationStock { location: l.clone(), on_hand: *q }).collect(),
        refs: reported.refs.clone(),
    }
}
