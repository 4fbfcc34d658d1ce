//! Waitlist re-evaluation: when a SKU's available quantity rises, its
//! waitlisted orders are decided again, in priority then arrival order,
//! from the ledger's figures. Approvals reserve and write back as usual
//! (including the steps meant for orders coming off the waitlist); the walk
//! stops as soon as nothing of the SKU is left to give.

use std::collections::BTreeSet;
use std::sync::Arc;

use serde_json::Value;
use tokio::sync::mpsc;

use super::orders::{Committed, DecisionCommit, OrderContext, commit_decision, decide};
use super::{Runtime, writeback};
use crate::inventory::ledger;
use crate::model::{OrderStatus, WritebackState};
use crate::store::{AuditEntry, AuditKind, StoreError};
use crate::telemetry::metrics::METRICS;

/// Re-evaluate the SKUs sent on `rx` until the daemon stops.
pub async fn run(rt: Arc<Runtime>, mut rx: mpsc::UnboundedReceiver<Vec<String>>) {
    loop {
        let first = tokio::select! {
            got = rx.recv() => got,
            _ = rt.stopped() => None,
        };
        let Some(first) = first else { return };
        let mut skus: BTreeSet<String> = first.into_iter().collect();
        while let Ok(more) = rx.try_recv() {
            skus.extend(more);
        }
        for sku in skus {
            if rt.is_stopping() {
                return;
            }
            if let Err(e) = reevaluate(&rt, &sku).await {
                tracing::error!(sku = %sku, "waitlist re-evaluation failed: {e}");
            }
        }
    }
}

/// Decide the waitlisted orders of `sku` again; the number approved. The
/// decisions are taken one by one, in line order; their write-backs run
/// alongside.
pub async fn reevaluate(rt: &Arc<Runtime>, sku: &str) -> Result<usize, StoreError> {
    let mut approved = 0;
    for entry in rt.store.waitlist(Some(sku))? {
        let cfg = rt.registry.current();
        let ledger = rt.store.sku_picture(sku, None)?;
        let free = ledger.rows.iter().map(|(_, r)| r.on_hand).sum::<i64>() - ledger.reserved - cfg.inventory.safety_stock(sku);
        if free <= 0 {
            break;
        }
        let Some(rec) = rt.store.order(&entry.order_id)? else { continue };
        if rec.status != OrderStatus::Waitlisted || rec.writeback == WritebackState::Pending {
            continue;
        }
        let Some(wf) = cfg.workflows.get(&rec.order.workflow).cloned() else { continue };
        let Some(flow) = wf.orders() else { continue };
        let now = rt.now();
        let payload: Value = rt.store.payload(&rec.order.id)?.and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or(Value::Null);
        let base = OrderContext::new(&wf, flow, &rec.order, &payload, &now);
        let mut views = std::collections::BTreeMap::new();
        let skus: Vec<&str> = rec.order.qty_by_sku().into_keys().collect();
        for (s, picture) in skus.iter().zip(rt.store.sku_pictures(&skus, None)?) {
            let refs = rec.stock_seen.get(*s).map(|v| v.refs.clone()).unwrap_or_default();
            let view =
                ledger::view_of_ledger(s, &picture.rows, picture.reserved, cfg.inventory.safety_stock(s), &picture.incoming, refs, &now);
            views.insert(s.to_string(), view);
        }
        let mut audit = vec![AuditEntry {
            at: now.clone(),
            kind: AuditKind::Rule,
            message: format!("stock of {sku} rose; deciding again"),
            call: None,
        }];
        let decided = match decide(rt, &cfg, flow, &base, &rec.order, views, &mut audit) {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(order = %rec.order.id, "waitlisted order could not be decided again: {e}");
                continue;
            }
        };
        if decided.outcome.decision == crate::model::Decision::Waitlist && decided.outcome.priority == rec.priority {
            continue;
        }
        let id = rec.order.id.clone();
        let decision = decided.outcome.decision;
        let dc = DecisionCommit {
            order: rec.order.clone(),
            payload: None,
            event: None,
            previous: Some(rec),
            reported: Arc::from([]),
            decided,
            audit,
        };
        match commit_decision(rt, &cfg, &wf, dc).await? {
            Committed::Done { writeback } => {
                METRICS.inc("ordersync_decisions_total", &[("workflow", &wf.name), ("decision", decision.as_str())]);
                approved += usize::from(decision == crate::model::Decision::Approve);
                if writeback.is_some() {
                    let (rt, cfg) = (rt.clone(), cfg.clone());
                    tokio::spawn(async move { writeback::run(&rt, &cfg, &id, false).await });
                }
            }
            Committed::Skipped | Committed::Shortfall(_) => {}
        }
    }
    Ok(approved)
}
