//! Stock push: when a SKU's available quantity changes in the ledger, send
//! it to the channels that sell it, so shops stop selling what the
//! warehouse no longer has.
//!
//! The change is queued in the same transaction that changed the ledger (a
//! crash cannot lose it), one entry per (push workflow, SKU) holding the
//! latest figure: a burst of changes becomes one push of the newest value.
//! A push sets a state, so a failed one is simply tried again later; each
//! carries an idempotency key from workflow, SKU and change number.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use super::Runtime;
use super::writeback::send_step;
use crate::config::ConfigSet;
use crate::connector::client::SendOptions;
use crate::inventory::InventorySettings;
use crate::inventory::ledger::Effects;
use crate::inventory::pattern::{SkuPattern, any_matches};
use crate::model::Decision;
use crate::store::{PushState, StoreError, WriteTx};
use crate::telemetry::metrics::METRICS;
use crate::workflow::Trigger;

/// The push workflows of a config version.
#[derive(Clone, Default)]
pub struct Targets {
    /// (workflow, its connection, its SKU patterns)
    targets: Vec<(String, String, Vec<SkuPattern>)>,
    inventory: InventorySettings,
}

impl Targets {
    pub fn of(cfg: &ConfigSet) -> Targets {
        let targets: Vec<_> = cfg
            .workflows
            .values()
            .filter_map(|w| match &w.trigger {
                Trigger::StockChange { skus, .. } => Some((w.name.clone(), w.connection.name.clone(), skus.clone())),
                _ => None,
            })
            .collect();
        let inventory = if targets.is_empty() { InventorySettings::default() } else { cfg.inventory.clone() };
        Targets { targets, inventory }
    }

    /// Queue the ledger changes of a transaction for every matching push
    /// workflow. A channel that is the SKU's stock master is never pushed
    /// to: it is where the figure came from.
    pub fn queue(&self, w: &mut WriteTx<'_>, effects: &Effects) -> Result<(), StoreError> {
        for (workflow, connection, skus) in &self.targets {
            for (sku, a) in &effects.changed {
                if !any_matches(skus, sku) || self.inventory.master_for(sku) == Some(connection.as_str()) {
                    continue;
                }
                let state = match w.push_state(workflow, sku)? {
                    Some(mut p) => {
                        if p.available == a.after && p.on_hand == a.on_hand && p.reserved == a.reserved {
                            continue;
                        }
                        if p.available != a.after {
                            p.seq += 1;
                        }
                        p.available = a.after;
                        p.on_hand = a.on_hand;
                        p.reserved = a.reserved;
                        p
                    }
                    None => PushState {
                        workflow: workflow.clone(),
                        sku: sku.clone(),
                        available: a.after,
                        on_hand: a.on_hand,
                        reserved: a.reserved,
                        seq: 1,
                        pushed: None,
                        pushed_seq: 0,
                        last_error: None,
                    },
                };
                w.put_push_state(&state)?;
            }
        }
        Ok(())
    }
}

/// Send what is due until the daemon stops; woken by ledger changes.
pub async fn run(rt: Arc<Runtime>) {
    loop {
        let busy = match push_due(&rt).await {
            Ok(n) => n > 0,
            Err(e) => {
                tracing::error!("stock push: {e}");
                false
            }
        };
        let wait = if busy { Duration::from_millis(10) } else { Duration::from_secs(2) };
        tokio::select! {
            _ = rt.pushes.notified() => {}
            _ = tokio::time::sleep(wait) => {}
            _ = rt.stopped() => return,
        }
    }
}

/// Push every entry whose latest figure differs enough from what was sent.
async fn push_due(rt: &Runtime) -> Result<usize, StoreError> {
    let cfg = rt.registry.current();
    let mut sent = 0;
    for p in rt.store.pushes()? {
        let Some(wf) = cfg.workflows.get(&p.workflow) else { continue };
        let Trigger::StockChange { min_change, .. } = &wf.trigger else { continue };
        let due = match p.pushed {
            None => true,
            Some(before) => p.pushed_seq != p.seq && (p.available - before).abs() >= *min_change,
        };
        if !due || rt.is_stopping() {
            continue;
        }
        let ctx = json!({
            "sku": p.sku,
            "stock": {"available": p.available, "on_hand": p.on_hand, "reserved": p.reserved, "previous": p.pushed},
            "values": wf.connection.values.clone(),
            "now": rt.now(),
            "steps": {},
        });
        let mut ctx: Value = ctx;
        let mut error = None;
        for step in wf.steps_for(Decision::Approve) {
            let key = |n: usize| {
                super::writeback::idempotency_key(&p.workflow, &format!("push:{}:{}", p.sku, p.seq), Decision::Approve, &step.name, n)
            };
            // A push that cannot get through now is tried again later with the newest figure.
            let opts = SendOptions { budget: Some(Duration::from_secs(30)), ..SendOptions::default() };
            let run = send_step(rt, &cfg, &wf.connection, step, &mut ctx, "push", &key, opts).await;
            if let Some(e) = run.error {
                error = Some(e);
                break;
            }
            ctx["steps"][&step.name] =
                if step.for_each.is_some() { Value::Array(run.results) } else { run.results.into_iter().next().unwrap_or(Value::Null) };
        }
        let (workflow, sku, available, seq) = (p.workflow.clone(), p.sku.clone(), p.available, p.seq);
        let outcome = if error.is_some() { "failed" } else { "pushed" };
        METRICS.inc("ordersync_stock_pushes_total", &[("workflow", &workflow), ("result", outcome)]);
        if let Some(e) = &error {
            tracing::warn!(workflow = %workflow, sku = %sku, "stock push failed; it is tried again: {e}");
        }
        let ok = error.is_none();
        rt.store
            .write(move |w| {
                if let Some(mut cur) = w.push_state(&workflow, &sku)? {
                    match error {
                        None => {
                            cur.pushed = Some(available);
                            cur.pushed_seq = seq;
                            cur.last_error = None;
                        }
                        Some(e) => cur.last_error = Some(e),
                    }
                    w.put_push_state(&cur)?;
                }
                Ok(())
            })
            .await?;
        sent += usize::from(ok);
    }
    Ok(sent)
}
