//! Processing one queued event: map → look up stock → rule → reserve → outbox.
//!
//! The run takes the live config once and finishes on that version. The
//! decision, its reservation, the audit entries and the outbox job commit in
//! one transaction; if stock vanished between lookup and commit, the rule
//! decides again on the fresh figures, so an approval is never oversold.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{Value, json};

use super::Runtime;
use super::writeback;
use crate::adapters::rules::{AllocatedLine, RuleOutcome};
use crate::config::ConfigSet;
use crate::connector::client::SendOptions;
use crate::inventory::ledger;
use crate::model::{Decision, Order, OrderRecord, OrderStatus, StatusChange, StockView, WritebackState};
use crate::store::{AuditEntry, AuditKind, EventRecord, FailedEvent, StoreError, WritebackJob};
use crate::telemetry::metrics::METRICS;
use crate::workflow::Workflow;
use crate::workflow::mapping::Origin;
use crate::workflow::stock::{self, ReportedStock};

/// How many times a decision is retaken when stock moved under it.
const MAX_REDECIDE: usize = 5;

/// What became of one attempt at an event.
enum Attempt {
    Finished,
    /// A platform was unreachable; the event stays queued and is tried again.
    Later {
        reason: String,
    },
}

/// Process one event. When a platform cannot be reached, or the store
/// fails, the event stays queued and is retried after a pause that grows
/// with each failure.
pub async fn process_event(rt: &Runtime, event_id: u64) {
    let reason = match try_process(rt, event_id).await {
        Ok(Attempt::Finished) => {
            rt.forget_attempts(event_id);
            return;
        }
        Ok(Attempt::Later { reason }) => reason,
        Err(e) => format!("the store failed: {e}"),
    };
    let n = rt.count_attempt(event_id);
    let wait =
        crate::connector::retry::backoff(&crate::connector::retry::RetryPolicy::default(), n).max(std::time::Duration::from_millis(500));
    tracing::warn!(event_id, attempt = n, wait_ms = wait.as_millis() as u64, "event stays queued: {reason}");
    let queue = rt.queue.clone();
    tokio::spawn(async move {
        tokio::time::sleep(wait).await;
        let _ = queue.send(event_id);
    });
}

async fn try_process(rt: &Runtime, event_id: u64) -> Result<Attempt, StoreError> {
    let Some(ev) = rt.store.event(event_id)? else {
        return Ok(Attempt::Finished);
    };
    let cfg = rt.registry.current();
    let Some(wf) = cfg.workflows.get(&ev.workflow).cloned() else {
        return fail_event(rt, &ev, format!("workflow `{}` is no longer configured", ev.workflow)).await.map(|_| Attempt::Finished);
    };
    let payload: Value = match serde_json::from_str(ev.payload.get()) {
        Ok(v) => v,
        Err(e) => return fail_event(rt, &ev, format!("stored payload is not JSON: {e}")).await.map(|_| Attempt::Finished),
    };
    let now = rt.now();
    let origin = Origin { platform: &wf.connection.connector.name, connection: &wf.connection.name, workflow: &wf.name, now: &now };
    let order = match wf.mapping.map(&payload, &origin) {
        Ok(o) => o,
        Err(e) => return fail_event(rt, &ev, e.0).await.map(|_| Attempt::Finished),
    };
    if let Some(existing) = rt.store.order(&order.id)? {
        if existing.status != OrderStatus::Received {
            let id = order.id.clone();
            let at = now.clone();
            let status = existing.status.as_str();
            let message = format!("event {event_id} repeats order {} (already {status}); ignored", order.number);
            rt.store
                .write(move |w| {
                    w.audit(&id, &AuditEntry { at, kind: AuditKind::Intake, message, call: None })?;
                    w.remove_event(event_id)
                })
                .await?;
            return Ok(Attempt::Finished);
        }
    }

    let mut audit = vec![AuditEntry {
        at: now.clone(),
        kind: AuditKind::Mapped,
        message: format!("event {event_id} mapped to order {} with {} line(s)", order.number, order.lines.len()),
        call: None,
    }];
    let mut base = json!({ "order": order_json(&order, &payload), "values": wf.connection.values.clone(), "params": wf.params.clone(), "now": now.clone() });

    // Lookups may be retried until the connector's max age, counted from intake.
    let age = crate::clock::parse_instant(&ev.received_at).map(|t| (rt.clock.now() - t).unsigned_abs()).unwrap_or_default();
    let budget = wf.connection.connector.retry.max_age.saturating_sub(age);
    let reported = match lookup_stock(rt, &cfg, &wf, &order, &mut base, &mut audit, budget).await {
        Ok(r) => r,
        Err(LookupFailure { message, retryable: true }) if !budget.is_zero() && !rt.is_stopping() => {
            return Ok(Attempt::Later { reason: message });
        }
        Err(LookupFailure { message, .. }) => {
            METRICS.inc("ordersync_order_errors_total", &[("workflow", &wf.name), ("stage", "lookup")]);
            return commit_error(rt, &cfg, &wf, order, payload, ev, audit, message).await.map(|_| Attempt::Finished);
        }
    };

    let mut attempt = 0;
    let mut reserved = reserved_now(rt, &reported)?;
    loop {
        attempt += 1;
        let views: BTreeMap<String, StockView> = reported
            .iter()
            .map(|(sku, r)| (sku.clone(), ledger::view(r, reserved.get(sku).copied().unwrap_or(0), wf.stock.safety_stock)))
            .collect();
        let input = rule_input(&base, &views);
        let outcome = match cfg.rules.decide(&wf.rule, &input) {
            Ok((o, took)) => {
                audit.push(AuditEntry {
                    at: rt.now(),
                    kind: AuditKind::Rule,
                    message: format!(
                        "rule {} decided {}{} in {:.2} ms",
                        wf.rule.file.file_name().and_then(|n| n.to_str()).unwrap_or("?"),
                        o.decision.as_str(),
                        if o.reason.is_empty() { String::new() } else { format!(": {}", o.reason) },
                        took.as_secs_f64() * 1000.0
                    ),
                    call: None,
                });
                o
            }
            Err(e) => {
                METRICS.inc("ordersync_order_errors_total", &[("workflow", &wf.name), ("stage", "rule")]);
                return commit_error(rt, &cfg, &wf, order, payload, ev, audit, e.to_string()).await.map(|_| Attempt::Finished);
            }
        };
        let allocations = match allocations(&order, &outcome) {
            Ok(a) => a,
            Err(message) => {
                METRICS.inc("ordersync_order_errors_total", &[("workflow", &wf.name), ("stage", "rule")]);
                return commit_error(rt, &cfg, &wf, order, payload, ev, audit, message).await.map(|_| Attempt::Finished);
            }
        };
        let result = commit_decision(rt, &cfg, &wf, &order, &payload, &ev, &reported, views, &outcome, allocations, audit.clone()).await?;
        match result {
            Committed::Done { writeback } => {
                METRICS.inc("ordersync_decisions_total", &[("workflow", &wf.name), ("decision", outcome.decision.as_str())]);
                if writeback {
                    writeback::run(rt, &cfg, &order.id, false).await;
                }
                return Ok(Attempt::Finished);
            }
            Committed::AlreadyDecided => return Ok(Attempt::Finished),
            Committed::Shortfall(s) if attempt < MAX_REDECIDE => {
                audit.push(AuditEntry {
                    at: rt.now(),
                    kind: AuditKind::Reserve,
                    message: format!("{} wanted {} but only {} left at commit; deciding again", s.sku, s.wanted, s.available),
                    call: None,
                });
                reserved = reserved_now(rt, &reported)?;
            }
            Committed::Shortfall(s) => {
                let message = format!("stock for {} kept changing under the decision ({} attempts)", s.sku, attempt);
                return commit_error(rt, &cfg, &wf, order, payload, ev, audit, message).await.map(|_| Attempt::Finished);
            }
        }
    }
}

fn reserved_now(rt: &Runtime, reported: &BTreeMap<String, ReportedStock>) -> Result<BTreeMap<String, i64>, StoreError> {
    reported.keys().map(|sku| Ok((sku.clone(), rt.store.reserved_total(sku)?))).collect()
}

/// The order as rules and templates see it: canonical fields plus `raw`.
pub fn order_json(order: &Order, payload: &Value) -> Value {
    let mut v = serde_json::to_value(order).expect("orders serialize");
    if let Value::Object(m) = &mut v {
        m.insert("raw".into(), payload.clone());
    }
    v
}

fn rule_input(base: &Value, views: &BTreeMap<String, StockView>) -> Value {
    let mut input = base.clone();
    if let Value::Object(m) = &mut input {
        m.remove("values");
        m.insert("stock".into(), serde_json::to_value(views).expect("stock views serialize"));
    }
    input
}

struct LookupFailure {
    message: String,
    /// The platform may answer later (unreachable, 5xx, throttled).
    retryable: bool,
}

/// Run the stock request once per distinct SKU.
async fn lookup_stock(
    rt: &Runtime,
    cfg: &ConfigSet,
    wf: &Workflow,
    order: &Order,
    base: &mut Value,
    audit: &mut Vec<AuditEntry>,
    budget: std::time::Duration,
) -> Result<BTreeMap<String, ReportedStock>, LookupFailure> {
    let mut out = BTreeMap::new();
    let now = rt.now();
    for sku in order.qty_by_sku().keys() {
        let mut ctx = base.clone();
        ctx["sku"] = Value::String(sku.to_string());
        let opts = SendOptions { budget: Some(budget), ..SendOptions::default() };
        match rt.http.send_with(&cfg.templates, &wf.connection, &wf.stock.request, &ctx, opts).await {
            Ok(ex) => {
                METRICS.inc("ordersync_requests_total", &[("connection", &wf.connection.name), ("outcome", "ok")]);
                let reported = stock::from_extracts(sku, &ex.extracts, &now)
                    .map_err(|e| LookupFailure { message: format!("stock lookup for {sku}: {e}"), retryable: false })?;
                audit.push(AuditEntry {
                    at: rt.now(),
                    kind: AuditKind::Lookup,
                    message: format!("{sku}: on hand {} ({} location(s))", reported.on_hand(), reported.levels.len()),
                    call: Some(ex.summary),
                });
                out.insert(sku.to_string(), reported);
            }
            Err(e) => {
                METRICS.inc("ordersync_requests_total", &[("connection", &wf.connection.name), ("outcome", "failed")]);
                audit.push(AuditEntry {
                    at: rt.now(),
                    kind: AuditKind::Lookup,
                    message: format!("{sku}: lookup failed"),
                    call: e.summary().cloned(),
                });
                return Err(LookupFailure { message: format!("stock lookup for {sku} failed: {e}"), retryable: e.is_retryable() });
            }
        }
    }
    let stock_json = serde_json::to_value(out.iter().map(|(k, r)| (k.clone(), json!({"refs": r.refs}))).collect::<BTreeMap<_, _>>())
        .unwrap_or(Value::Null);
    base["stock"] = stock_json;
    Ok(out)
}

/// What an approval reserves: the rule's `lines`, or every order line.
fn allocations(order: &Order, outcome: &RuleOutcome) -> Result<Vec<AllocatedLine>, String> {
    if outcome.decision != Decision::Approve {
        return Ok(Vec::new());
    }
    let ordered = order.qty_by_sku();
    match &outcome.lines {
        None => Ok(ordered.iter().map(|(sku, qty)| AllocatedLine { sku: sku.to_string(), qty: *qty }).collect()),
        Some(lines) => {
            let mut out: BTreeMap<&str, i64> = BTreeMap::new();
            for l in lines {
                let Some(max) = ordered.get(l.sku.as_str()) else {
                    return Err(format!("the rule allocated {} which is not on the order", l.sku));
                };
                let total = out.entry(l.sku.as_str()).or_insert(0);
                *total += l.qty;
                if *total > *max {
                    return Err(format!("the rule allocated {} of {} but only {} were ordered", total, l.sku, max));
                }
            }
            Ok(out.into_iter().filter(|(_, q)| *q > 0).map(|(sku, qty)| AllocatedLine { sku: sku.to_string(), qty }).collect())
        }
    }
}

enum Committed {
    Done { writeback: bool },
    AlreadyDecided,
    Shortfall(ledger::Shortfall),
}

#[allow(clippy::too_many_arguments)]
async fn commit_decision(
    rt: &Runtime,
    cfg: &ConfigSet,
    wf: &Arc<Workflow>,
    order: &Order,
    payload: &Value,
    ev: &EventRecord,
    reported: &BTreeMap<String, ReportedStock>,
    views: BTreeMap<String, StockView>,
    outcome: &RuleOutcome,
    allocations: Vec<AllocatedLine>,
    mut audit: Vec<AuditEntry>,
) -> Result<Committed, StoreError> {
    let now = rt.now();
    let decision = outcome.decision;
    let steps = wf.steps_for(decision);
    let job = (!steps.is_empty()).then(|| WritebackJob {
        order_id: order.id.clone(),
        workflow: wf.name.clone(),
        decision,
        created_at: now.clone(),
        steps: steps.iter().map(|s| writeback::new_step(&wf.name, &order.id, decision, &s.name)).collect(),
    });
    let record = OrderRecord {
        order: order.clone(),
        status: decision.status(),
        reason: outcome.reason.clone(),
        priority: outcome.priority,
        error: None,
        writeback: if job.is_some() { WritebackState::Pending } else { WritebackState::None },
        history: vec![
            StatusChange { at: ev.received_at.clone(), status: OrderStatus::Received, reason: String::new() },
            StatusChange { at: now.clone(), status: decision.status(), reason: outcome.reason.clone() },
        ],
        stock_seen: views,
        allocations: allocations.clone(),
        config_version: cfg.version,
        event_id: ev.id,
    };
    let payload_bytes = serde_json::to_vec(payload).expect("JSON values serialize");
    let reported: Vec<ReportedStock> = reported.values().cloned().collect();
    let source = wf.connection.name.clone();
    let safety = wf.stock.safety_stock;
    let event_id = ev.id;
    let has_job = job.is_some();
    rt.store
        .write(move |w| {
            if let Some(existing) = w.order(&record.order.id)? {
                if existing.status != OrderStatus::Received && existing.status != OrderStatus::Error {
                    w.remove_event(event_id)?;
                    return Ok(Committed::AlreadyDecided);
                }
            }
            for r in &reported {
                ledger::record_reported(w, r, &source, &now)?;
            }
            if decision == Decision::Approve {
                if let Err(short) = ledger::reserve(w, &record.order.id, &allocations, safety)? {
                    return Ok(Committed::Shortfall(short));
                }
                let summary: Vec<String> = allocations.iter().map(|a| format!("{} ×{}", a.sku, a.qty)).collect();
                audit.push(AuditEntry {
                    at: now.clone(),
                    kind: AuditKind::Reserve,
                    message: format!("reserved {}", summary.join(", ")),
                    call: None,
                });
            }
            w.put_order(&record)?;
            w.put_payload(&record.order.id, &payload_bytes)?;
            for a in &audit {
                w.audit(&record.order.id, a)?;
            }
            if let Some(job) = &job {
                w.put_writeback(job)?;
            }
            w.remove_event(event_id)?;
            Ok(Committed::Done { writeback: has_job })
        })
        .await
}

/// Put the order in `error` with a message (the daemon carries on).
#[allow(clippy::too_many_arguments)]
async fn commit_error(
    rt: &Runtime,
    cfg: &ConfigSet,
    wf: &Workflow,
    order: Order,
    payload: Value,
    ev: EventRecord,
    mut audit: Vec<AuditEntry>,
    message: String,
) -> Result<(), StoreError> {
    tracing::warn!(workflow = %wf.name, order = %order.id, "order put in error: {message}");
    let now = rt.now();
    audit.push(AuditEntry { at: now.clone(), kind: AuditKind::Error, message: message.clone(), call: None });
    let record = OrderRecord {
        status: OrderStatus::Error,
        reason: String::new(),
        priority: 0,
        error: Some(message.clone()),
        writeback: WritebackState::None,
        history: vec![
            StatusChange { at: ev.received_at.clone(), status: OrderStatus::Received, reason: String::new() },
            StatusChange { at: now, status: OrderStatus::Error, reason: message },
        ],
        stock_seen: BTreeMap::new(),
        allocations: Vec::new(),
        config_version: cfg.version,
        event_id: ev.id,
        order,
    };
    let payload_bytes = serde_json::to_vec(&payload).expect("JSON values serialize");
    let event_id = ev.id;
    rt.store
        .write(move |w| {
            if let Some(existing) = w.order(&record.order.id)? {
                if existing.status != OrderStatus::Received && existing.status != OrderStatus::Error {
                    return w.remove_event(event_id);
                }
            }
            w.put_order(&record)?;
            w.put_payload(&record.order.id, &payload_bytes)?;
            for a in &audit {
                w.audit(&record.order.id, a)?;
            }
            w.remove_event(event_id)
        })
        .await
}

/// The event cannot become an order at all: keep it aside with the reason.
async fn fail_event(rt: &Runtime, ev: &EventRecord, error: String) -> Result<(), StoreError> {
    tracing::warn!(workflow = %ev.workflow, event = ev.id, "event not processed: {error}");
    METRICS.inc("ordersync_order_errors_total", &[("workflow", &ev.workflow), ("stage", "mapping")]);
    let failure = FailedEvent { event_id: ev.id, workflow: ev.workflow.clone(), error, at: rt.now(), payload: ev.payload.clone() };
    rt.store.write(move |w| w.fail_event(&failure)).await
}
