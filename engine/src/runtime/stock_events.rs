//! Stock workflows: a delivery or polled record becomes reported stock
//! levels, taken into the ledger when its connection is the stock master.
//! A rise in what is available moves the waitlist; any change may be pushed
//! to other channels.

use std::sync::Arc;

use serde_json::{Value, json};

use super::Runtime;
use super::process::{Attempt, fail_event};
use crate::config::ConfigSet;
use crate::connector::client::SendOptions;
use crate::connector::extract::extract_object;
use crate::inventory::ledger::{self, Effects};
use crate::store::{EventRecord, StoreError};
use crate::telemetry::metrics::METRICS;
use crate::workflow::mapping::scalar_text;
use crate::workflow::stock::{self, ReportedStock};
use crate::workflow::{StockFlow, Workflow};

pub(super) async fn handle(
    rt: &Runtime,
    cfg: &Arc<ConfigSet>,
    wf: &Arc<Workflow>,
    flow: &StockFlow,
    ev: EventRecord,
    payload: Value,
) -> Result<Attempt, StoreError> {
    let now = rt.now();
    let mut reports: Vec<ReportedStock> = Vec::new();
    for item in flow.items.query(&payload) {
        let fields = match extract_object(&flow.fields, item) {
            Ok(f) => f,
            Err(e) => return fail_event(rt, &ev, format!("a stock item: {e}")).await.map(|_| Attempt::Finished),
        };
        let extracts = match &flow.request {
            None => fields,
            Some(request) => {
                let ctx = json!({ "item": fields, "values": wf.connection.values.clone(), "now": now });
                match rt.http.send_with(&cfg.templates, &wf.connection, request, &ctx, SendOptions::default()).await {
                    Ok(ex) => ex.extracts,
                    Err(e) if e.is_retryable() && !rt.is_stopping() => {
                        return Ok(Attempt::Later { reason: format!("stock lookup for {}: {e}", wf.name) });
                    }
                    Err(e) => return fail_event(rt, &ev, format!("stock lookup failed: {e}")).await.map(|_| Attempt::Finished),
                }
            }
        };
        let Some(sku) = extracts.get("sku").and_then(scalar_text).filter(|s| !s.is_empty()) else {
            // An item of a product without a SKU (or one the platform no longer knows).
            tracing::debug!(workflow = %wf.name, event = ev.id, "a stock item without a SKU; skipped");
            continue;
        };
        if ["on_hand", "available", "levels"].iter().all(|k| extracts.get(*k).is_none_or(Value::is_null)) {
            // No figure (e.g. a product whose stock the platform does not track): nothing to record.
            tracing::debug!(workflow = %wf.name, event = ev.id, %sku, "a stock item without a quantity; skipped");
            continue;
        }
        match stock::from_extracts(&sku, &extracts, &now) {
            Ok(r) => reports.push(r),
            Err(e) => return fail_event(rt, &ev, e).await.map(|_| Attempt::Finished),
        }
    }
    let settings = cfg.inventory.clone();
    let source = wf.connection.name.clone();
    let excludes = wf.connection.connector.reported_excludes_open_orders;
    let pushes = super::push::Targets::of(cfg);
    let cause = format!("{} event {} ({})", wf.name, ev.id, ev.event_type.clone().unwrap_or_else(|| "update".into()));
    let event_id = ev.id;
    let (taken, effects) = rt
        .store
        .write(move |w| {
            let mut effects = Effects::default();
            let mut taken = 0;
            for r in &reports {
                taken += usize::from(ledger::record_report(w, &settings, r, &source, excludes, &now, &cause, &mut effects)?);
            }
            pushes.queue(w, &effects)?;
            w.remove_event(event_id)?;
            Ok((taken, effects))
        })
        .await?;
    METRICS.add("ordersync_stock_reports_total", &[("workflow", &wf.name)], taken as u64);
    rt.after_commit(&effects);
    Ok(Attempt::Finished)
}
