//! Order workflows: a new order is mapped, its stock looked up, decided by
//! the rule, reserved and queued for write-back in one transaction; a later
//! event of the same order (cancelled, shipped) releases what it holds.
//!
//! `commit_decision` is shared with waitlist re-evaluation: both record the
//! decision, the reservation, the waitlist entries and the outbox job
//! together, and both decide again when stock vanished in the meantime.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use super::Runtime;
use super::process::{Attempt, fail_event};
use super::writeback::{self, FreshWriteback};
use crate::adapters::rules::{AllocatedLine, RuleInputs, RuleOutcome};
use crate::config::ConfigSet;
use crate::connector::RequestSpec;
use crate::connector::client::{CallSummary, Exchange, SendOptions};
use crate::connector::extract::extract_per_sku;
use crate::inventory::ledger::{self, Effects};
use crate::model::{Decision, Order, OrderRecord, OrderStatus, StatusChange, StockView, WritebackState};
use crate::store::{AuditEntry, AuditKind, EventRecord, StoreError, WaitlistEntry, WritebackJob};
use crate::telemetry::metrics::METRICS;
use crate::workflow::mapping::Origin;
use crate::workflow::stock::{self, ReportedStock};
use crate::workflow::{OrderFlow, Workflow};

/// How many times a decision is retaken when stock moved under it.
const MAX_REDECIDE: usize = 5;

/// Handle one event of an order workflow.
pub(super) async fn handle(
    rt: &Runtime,
    cfg: &Arc<ConfigSet>,
    wf: &Arc<Workflow>,
    flow: &OrderFlow,
    ev: EventRecord,
    payload: Value,
) -> Result<Attempt, StoreError> {
    let now = rt.now();
    // Requests may be retried until the connector's max age, counted from intake.
    let age = crate::clock::parse_instant(&ev.received_at).map(|t| (rt.clock.now() - t).unsigned_abs()).unwrap_or_default();
    let budget = wf.connection.connector.retry.max_age.saturating_sub(age);
    let completed = match complete_record(rt, cfg, wf, flow, payload, budget).await {
        Ok(c) => c,
        Err(LookupFailure { message, retryable: true }) if !budget.is_zero() && !rt.is_stopping() => {
            return Ok(Attempt::Later { reason: message });
        }
        Err(LookupFailure { message, .. }) => return fail_event(rt, &ev, message).await.map(|_| Attempt::Finished),
    };
    let (payload, skus) = completed;
    let origin = Origin { platform: &wf.connection.connector.name, connection: &wf.connection.name, workflow: &wf.name, now: &now };
    let order = match flow.mapping.map(&payload, &origin, skus.as_deref()) {
        Ok(o) => o,
        Err(e) => return fail_event(rt, &ev, e.0).await.map(|_| Attempt::Finished),
    };
    let cancelled = flow.mapping.cancelled.as_ref().is_some_and(|c| c.holds(&payload));
    let fulfilled = flow.mapping.fulfilled.as_ref().is_some_and(|c| c.holds(&payload));
    let existing = rt.store.order(&order.id)?;
    match existing {
        Some(rec) if rec.status != OrderStatus::Received && rec.status != OrderStatus::Error => {
            let change = if cancelled {
                Some(OrderStatus::Cancelled)
            } else if fulfilled {
                Some(OrderStatus::Fulfilled)
            } else {
                None
            };
            return later_event(rt, cfg, rec, change, &ev).await.map(|_| Attempt::Finished);
        }
        _ if cancelled || fulfilled => {
            // First heard of when it was already over: record it, decide nothing.
            let status = if cancelled { OrderStatus::Cancelled } else { OrderStatus::Fulfilled };
            return record_final(rt, cfg, order, payload, &ev, status).await.map(|_| Attempt::Finished);
        }
        _ if flow.mapping.ready.as_ref().is_some_and(|r| !r.holds(&payload)) => {
            // Not confirmed on the platform yet (e.g. unpaid): a later event decides it.
            tracing::info!(workflow = %wf.name, order = %order.id, "not ready to decide yet; waiting for a later event");
            let id = ev.id;
            return rt.store.write(move |w| w.remove_event(id)).await.map(|_| Attempt::Finished);
        }
        _ => {}
    }

    let mut audit = vec![AuditEntry {
        at: now.clone(),
        kind: AuditKind::Mapped,
        message: format!("event {} mapped to order {} with {} line(s)", ev.id, order.number, order.lines.len()),
        call: None,
    }];
    let mut base = OrderContext::new(wf, flow, &order, &payload, &now);
    let reported = match lookup_stock(rt, cfg, wf, flow, &order, &mut base, &mut audit, budget).await {
        // A platform whose figures leave out its open orders has left this
        // one out too: count its units back, as those of its other open orders are.
        Ok(r) if wf.connection.connector.reported_excludes_open_orders => with_own_units(r, &order),
        Ok(r) => r,
        Err(LookupFailure { message, retryable: true }) if !budget.is_zero() && !rt.is_stopping() => {
            return Ok(Attempt::Later { reason: message });
        }
        Err(LookupFailure { message, .. }) => {
            METRICS.inc("ordersync_order_errors_total", &[("workflow", &wf.name), ("stage", "lookup")]);
            return commit_error(rt, cfg, order, payload, &ev, audit, message).await.map(|_| Attempt::Finished);
        }
    };
    // The payload as delivered, unless fetches completed it.
    let payload_bytes: Arc<[u8]> = if flow.fetch.is_empty() {
        ev.payload.get().as_bytes().into()
    } else {
        serde_json::to_vec(&payload).expect("JSON values serialize").into()
    };
    // In SKU order, shared by the decision's attempts and their commits.
    let reported: Arc<[ReportedStock]> = reported.into_values().collect();
    let mut attempt = 0;
    loop {
        attempt += 1;
        let views = views(rt, cfg, wf, &reported, &now)?;
        let decided = match decide(rt, cfg, flow, &base, &order, views, &mut audit) {
            Ok(d) => d,
            Err(message) => {
                METRICS.inc("ordersync_order_errors_total", &[("workflow", &wf.name), ("stage", "rule")]);
                return commit_error(rt, cfg, order, payload, &ev, audit, message).await.map(|_| Attempt::Finished);
            }
        };
        let decision = decided.outcome.decision;
        let dc = DecisionCommit {
            order: order.clone(),
            payload: Some(payload_bytes.clone()),
            event: Some((ev.id, ev.received_at.clone())),
            previous: None,
            reported: reported.clone(),
            decided,
            audit: audit.clone(),
        };
        match commit_decision(rt, cfg, wf, dc).await? {
            Committed::Done { writeback } => {
                METRICS.inc("ordersync_decisions_total", &[("workflow", &wf.name), ("decision", decision.as_str())]);
                if let Some(fresh) = writeback {
                    let fields = base.into_fields();
                    writeback::run_fresh(rt, cfg, *fresh, payload, fields).await;
                }
                return Ok(Attempt::Finished);
            }
            Committed::Skipped => return Ok(Attempt::Finished),
            Committed::Shortfall(s) if attempt < MAX_REDECIDE => {
                audit.push(AuditEntry {
                    at: rt.now(),
                    kind: AuditKind::Reserve,
                    message: format!("{} wanted {} but only {} left at commit; deciding again", s.sku, s.wanted, s.available),
                    call: None,
                });
            }
            Committed::Shortfall(s) => {
                let message = format!("stock for {} kept changing under the decision ({attempt} attempts)", s.sku);
                return commit_error(rt, cfg, order, payload, &ev, audit, message).await.map(|_| Attempt::Finished);
            }
        }
    }
}

/// What rules and templates see: the order, values, params, now. The
/// order's raw payload is often most of it, so it is added only for the
/// readers that mention `raw`.
pub(super) struct OrderContext<'a> {
    /// `order` (without `raw`), `values`, `params`, `now`.
    fields: Value,
    payload: &'a Value,
}

impl<'a> OrderContext<'a> {
    pub fn new(wf: &Workflow, flow: &OrderFlow, order: &Order, payload: &'a Value, now: &str) -> Self {
        let order = serde_json::to_value(order).expect("orders serialize");
        OrderContext { fields: json!({ "order": order, "values": wf.connection.values, "params": flow.params, "now": now }), payload }
    }

    /// `order` (without `raw`), `values`, `params` and `now`, for the write-back to build on.
    pub fn into_fields(self) -> Value {
        self.fields
    }

    /// The context to add a request's own fields to (`sku`, `line`), with
    /// `order.raw` when `with_raw`; `take_back` removes them again.
    fn lend(&mut self, with_raw: bool) -> &mut Value {
        if let (true, Some(Value::Object(order))) = (with_raw, self.fields.get_mut("order")) {
            order.insert("raw".into(), self.payload.clone());
        }
        &mut self.fields
    }

    fn take_back(&mut self) {
        if let Value::Object(fields) = &mut self.fields {
            for lent in ["sku", "line", "skus", "sku_count"] {
                fields.remove(lent);
            }
            if let Some(Value::Object(order)) = fields.get_mut("order") {
                order.remove("raw");
            }
        }
    }
}

/// The order as rules and templates see it: canonical fields plus `raw`.
pub fn order_json(order: &Order, payload: &Value) -> Value {
    let mut v = serde_json::to_value(order).expect("orders serialize");
    if let Value::Object(m) = &mut v {
        m.insert("raw".into(), payload.clone());
    }
    v
}

/// Stock as the rule sees it: the fresh report where this channel is the
/// SKU's stock master (or the SKU has none), the ledger otherwise.
fn views(
    rt: &Runtime,
    cfg: &ConfigSet,
    wf: &Workflow,
    reported: &[ReportedStock],
    now: &str,
) -> Result<BTreeMap<String, StockView>, StoreError> {
    let conn = &wf.connection;
    let mut out = BTreeMap::new();
    let excludes = conn.connector.reported_excludes_open_orders;
    let skus: Vec<&str> = reported.iter().map(|r| r.sku.as_str()).collect();
    let pictures = rt.store.sku_pictures(&skus, excludes.then_some(conn.name.as_str()))?;
    for (r, ledger) in reported.iter().zip(pictures) {
        let sku = &r.sku;
        let safety = cfg.inventory.safety_stock(sku);
        let view = if cfg.inventory.accepts_report(sku, &conn.name) || ledger.rows.is_empty() {
            let mut r = Cow::Borrowed(r);
            if excludes {
                let held = ledger.reserved_by_connection;
                let levels = &mut r.to_mut().levels;
                match levels.first_mut() {
                    Some(first) => first.1 += held,
                    None if held > 0 => levels.push(("default".into(), held)),
                    None => {}
                }
            }
            ledger::view_of_report(&r, ledger.reserved, safety)
        } else {
            ledger::view_of_ledger(sku, &ledger.rows, ledger.reserved, safety, &ledger.incoming, r.refs.clone(), now)
        };
        out.insert(sku.clone(), view);
    }
    Ok(out)
}

/// A decision and everything that goes with it.
#[derive(Clone)]
pub(super) struct Decided {
    pub outcome: RuleOutcome,
    pub allocations: Vec<AllocatedLine>,
    pub views: BTreeMap<String, StockView>,
}

/// Run the rule; an `Err` is the message for the order's error state.
pub(super) fn decide(
    rt: &Runtime,
    cfg: &ConfigSet,
    flow: &OrderFlow,
    base: &OrderContext<'_>,
    order: &Order,
    views: BTreeMap<String, StockView>,
    audit: &mut Vec<AuditEntry>,
) -> Result<Decided, String> {
    let mut inputs = RuleInputs::default();
    for name in ["order", "params", "now"] {
        inputs.set(name, &base.fields[name]);
    }
    if flow.rule.reads_raw {
        inputs.set_field("order", "raw", base.payload);
    }
    inputs.set_serialized("stock", &views)?;
    let (outcome, took) = cfg.rules.decide_with(&flow.rule, inputs).map_err(|e| e.to_string())?;
    audit.push(AuditEntry {
        at: rt.now(),
        kind: AuditKind::Rule,
        message: format!(
            "rule {} decided {}{} in {:.2} ms",
            flow.rule.file.file_name().and_then(|n| n.to_str()).unwrap_or("?"),
            outcome.decision.as_str(),
            if outcome.reason.is_empty() { String::new() } else { format!(": {}", outcome.reason) },
            took.as_secs_f64() * 1000.0
        ),
        call: None,
    });
    let allocations = allocations(order, &outcome)?;
    Ok(Decided { outcome, allocations, views })
}

/// Complete a record before mapping: the workflow's `fetch` requests, then
/// the SKUs of lines that name only a catalogue id.
async fn complete_record(
    rt: &Runtime,
    cfg: &ConfigSet,
    wf: &Workflow,
    flow: &OrderFlow,
    mut record: Value,
    budget: Duration,
) -> Result<(Value, Option<Vec<String>>), LookupFailure> {
    let opts = SendOptions { budget: Some(budget), ..SendOptions::default() };
    let failed = |what: String, e: crate::connector::client::CallError| LookupFailure {
        message: format!("{what} failed: {e}"),
        retryable: e.is_retryable(),
    };
    for f in &flow.fetch {
        let ctx = json!({ "record": record, "values": wf.connection.values, "params": flow.params });
        let ex = rt
            .http
            .send_with(&cfg.templates, &wf.connection, &f.request, &ctx, opts)
            .await
            .map_err(|e| failed(format!("fetching the record with {}", f.request.name), e))?;
        let kept = match &f.path {
            Some(p) => p.first(&ex.body).cloned().ok_or_else(|| LookupFailure {
                message: format!("{} answered without `{}`", f.request.name, p.source()),
                retryable: false,
            })?,
            None => ex.body,
        };
        match (&f.into, &mut record) {
            (Some(key), Value::Object(m)) => {
                m.insert(key.clone(), kept);
            }
            (Some(key), _) => record = json!({ key.as_str(): kept }),
            (None, _) => record = kept,
        }
    }
    let Some((request, path)) = &flow.line_sku_request else {
        return Ok((record, None));
    };
    let mut skus = Vec::new();
    for (i, line) in flow.mapping.line_items(&record).into_iter().enumerate() {
        let ctx = json!({ "line": line, "record": record, "values": wf.connection.values, "params": flow.params });
        let ex = rt
            .http
            .send_with(&cfg.templates, &wf.connection, request, &ctx, opts)
            .await
            .map_err(|e| failed(format!("reading the SKU of line {} with {}", i + 1, request.name), e))?;
        let sku = path.first(&ex.body).and_then(crate::workflow::mapping::scalar_text).filter(|s| !s.trim().is_empty());
        skus.push(sku.ok_or_else(|| LookupFailure {
            message: format!("line {}: {} answered without a SKU at `{}`", i + 1, request.name, path.source()),
            retryable: false,
        })?);
    }
    Ok((record, Some(skus)))
}

/// Reported stock with the order's own units added back at its first location.
fn with_own_units(mut reported: BTreeMap<String, ReportedStock>, order: &Order) -> BTreeMap<String, ReportedStock> {
    for (sku, qty) in order.qty_by_sku() {
        if let Some(r) = reported.get_mut(sku) {
            match r.levels.first_mut() {
                Some(first) => first.1 += qty,
                None => r.levels.push(("default".into(), qty)),
            }
        }
    }
    reported
}

struct LookupFailure {
    message: String,
    /// The platform may answer later (unreachable, 5xx, throttled).
    retryable: bool,
}

/// Run the stock request once per distinct SKU, or once per batch of SKUs
/// when it looks up several at once (`per_sku`, with its one-SKU request
/// for any SKU an answer lacks), and the `also` requests per SKU.
#[allow(clippy::too_many_arguments)]
async fn lookup_stock(
    rt: &Runtime,
    cfg: &ConfigSet,
    wf: &Workflow,
    flow: &OrderFlow,
    order: &Order,
    base: &mut OrderContext<'_>,
    audit: &mut Vec<AuditEntry>,
    budget: Duration,
) -> Result<BTreeMap<String, ReportedStock>, LookupFailure> {
    let connector = &wf.connection.connector;
    let single = connector.single_for(&flow.stock.request);
    let needs_raw = std::iter::once(&flow.stock.request).chain(single).chain(&flow.stock.also).any(|r| connector.request_reads_raw(r));
    // The order's own context serves every request: each sets its own
    // `sku` and `line` (or `skus`); those and `raw` are taken out again when all are done.
    let lookups = Lookups { rt, cfg, wf, flow, order, opts: SendOptions { budget: Some(budget), ..SendOptions::default() }, now: rt.now() };
    let found = lookup_each_sku(&lookups, single, base.lend(needs_raw), audit).await;
    base.take_back();
    found
}

/// One order's stock lookups: what every request of them shares.
struct Lookups<'a> {
    rt: &'a Runtime,
    cfg: &'a ConfigSet,
    wf: &'a Workflow,
    flow: &'a OrderFlow,
    order: &'a Order,
    opts: SendOptions,
    now: String,
}

impl Lookups<'_> {
    /// Send one lookup request; a failure is counted and audited for `skus`.
    async fn send(&self, request: &RequestSpec, ctx: &Value, audit: &mut Vec<AuditEntry>, skus: &str) -> Result<Exchange, LookupFailure> {
        let conn = &self.wf.connection;
        let labels = |outcome| [("connection", conn.name.as_str()), ("outcome", outcome)];
        match self.rt.http.send_with(&self.cfg.templates, conn, request, ctx, self.opts).await {
            Ok(ex) => {
                METRICS.inc("ordersync_requests_total", &labels("ok"));
                Ok(ex)
            }
            Err(e) => {
                METRICS.inc("ordersync_requests_total", &labels("failed"));
                let call = e.summary().cloned();
                audit.push(AuditEntry { at: self.rt.now(), kind: AuditKind::Lookup, message: format!("{skus}: lookup failed"), call });
                Err(LookupFailure { message: format!("stock lookup for {skus} failed: {e}"), retryable: e.is_retryable() })
            }
        }
    }

    /// A SKU's first answer in hand: add what its `also` requests find,
    /// read the stock from it and put it on the record.
    async fn finish(
        &self,
        ctx: &mut Value,
        audit: &mut Vec<AuditEntry>,
        sku: &str,
        mut extracts: Value,
        call: Option<CallSummary>,
        out: &mut BTreeMap<String, ReportedStock>,
    ) -> Result<(), LookupFailure> {
        // Further requests add what the first one lacks (a product's status, say).
        if !self.flow.stock.also.is_empty() {
            set_sku(ctx, self.order, sku);
        }
        for also in &self.flow.stock.also {
            let more = self.send(also, ctx, audit, sku).await?;
            if let (Value::Object(into), Value::Object(from)) = (&mut extracts, more.extracts) {
                for (k, v) in from {
                    into.entry(k).or_insert(v);
                }
            }
        }
        let reported = stock::from_extracts(sku, &extracts, &self.now)
            .map_err(|e| LookupFailure { message: format!("stock lookup for {sku}: {e}"), retryable: false })?;
        audit.push(AuditEntry {
            at: self.rt.now(),
            kind: AuditKind::Lookup,
            message: format!("{sku}: on hand {} ({} location(s))", reported.on_hand(), reported.levels.len()),
            call,
        });
        out.insert(sku.to_string(), reported);
        Ok(())
    }
}

async fn lookup_each_sku(
    lookups: &Lookups<'_>,
    single: Option<&Arc<RequestSpec>>,
    ctx: &mut Value,
    audit: &mut Vec<AuditEntry>,
) -> Result<BTreeMap<String, ReportedStock>, LookupFailure> {
    let (rt, order) = (lookups.rt, lookups.order);
    let request = &lookups.flow.stock.request;
    let skus: Vec<&str> = order.qty_by_sku().into_keys().collect();
    let mut out = BTreeMap::new();
    let Some(per) = &request.per_sku else {
        for sku in skus {
            set_sku(ctx, order, sku);
            let ex = lookups.send(request, ctx, audit, sku).await?;
            lookups.finish(ctx, audit, sku, ex.extracts, Some(ex.summary), &mut out).await?;
        }
        return Ok(out);
    };
    let Some(single) = single else {
        return Err(LookupFailure { message: format!("request `{}` of {} is not configured", per.single, request.name), retryable: false });
    };
    for batch in skus.chunks(per.max) {
        let names = batch.join(", ");
        set_skus(ctx, batch);
        let ex = lookups.send(request, ctx, audit, &names).await?;
        let answers = extract_per_sku(per, &request.extract, &ex.body, batch).map_err(|e| LookupFailure {
            message: format!("stock lookup for {}: {}: {}", e.sku, request.name, e.missing),
            retryable: false,
        })?;
        let mut call = Some(ex.summary);
        let mut missing = Vec::new();
        for (&sku, answer) in batch.iter().zip(answers) {
            match answer {
                Some(extracts) => lookups.finish(ctx, audit, sku, extracts, call.take(), &mut out).await?,
                None => missing.push(sku),
            }
        }
        if let Some(call) = call {
            // No SKU of the batch was in its answer: the call still goes on record.
            audit.push(AuditEntry {
                at: rt.now(),
                kind: AuditKind::Lookup,
                message: format!("{names}: not in the answer"),
                call: Some(call),
            });
        }
        // Unknown, or crowded out of the page by other matches: asked one
        // by one, so an unknown SKU reads as the platform says it alone.
        for sku in missing {
            set_sku(ctx, order, sku);
            let ex = lookups.send(single, ctx, audit, sku).await?;
            lookups.finish(ctx, audit, sku, ex.extracts, Some(ex.summary), &mut out).await?;
        }
    }
    Ok(out)
}

/// One SKU's context: `sku`, and `line`, its first order line.
fn set_sku(ctx: &mut Value, order: &Order, sku: &str) {
    ctx["sku"] = Value::String(sku.to_string());
    ctx["line"] =
        order.lines.iter().find(|l| l.sku == sku).map_or(Value::Null, |line| serde_json::to_value(line).expect("lines serialize"));
}

/// A multi-SKU lookup's context: `skus` and `sku_count`.
fn set_skus(ctx: &mut Value, skus: &[&str]) {
    ctx["skus"] = Value::Array(skus.iter().map(|s| Value::String(s.to_string())).collect());
    ctx["sku_count"] = Value::from(skus.len());
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

/// Everything one decision writes.
pub(super) struct DecisionCommit {
    pub order: Order,
    /// The payload, for a first decision (shared by its attempts).
    pub payload: Option<Arc<[u8]>>,
    /// The event being processed (id, received at), for a first decision.
    pub event: Option<(u64, String)>,
    /// The record being decided again (waitlist), as it was read.
    pub previous: Option<OrderRecord>,
    /// The stock the platform reported (shared by the decision's attempts).
    pub reported: Arc<[ReportedStock]>,
    pub decided: Decided,
    pub audit: Vec<AuditEntry>,
}

pub(super) enum Committed {
    /// Decided; with the write-back job to run, if any.
    Done {
        writeback: Option<Box<FreshWriteback>>,
    },
    /// Someone else decided this order in the meantime.
    Skipped,
    Shortfall(ledger::Shortfall),
}

pub(super) async fn commit_decision(
    rt: &Runtime,
    cfg: &Arc<ConfigSet>,
    wf: &Arc<Workflow>,
    dc: DecisionCommit,
) -> Result<Committed, StoreError> {
    let now = rt.now();
    let decision = dc.decided.outcome.decision;
    let previous_decision = dc.previous.as_ref().and_then(|p| match p.status {
        OrderStatus::Waitlisted => Some(Decision::Waitlist),
        OrderStatus::Approved => Some(Decision::Approve),
        OrderStatus::Rejected => Some(Decision::Reject),
        _ => None,
    });
    let steps: Vec<_> = wf
        .steps_for(decision)
        .iter()
        .filter(|s| s.if_previous.is_empty() || previous_decision.is_some_and(|p| s.if_previous.contains(&p)))
        .map(|s| writeback::new_step(&wf.name, &dc.order.id, decision, &s.name))
        .collect();
    let job = (!steps.is_empty()).then(|| WritebackJob {
        order_id: dc.order.id.clone(),
        workflow: wf.name.clone(),
        decision,
        created_at: now.clone(),
        steps,
    });
    let has_job = job.is_some();
    let (event_id, arrival, mut history) = match (&dc.event, &dc.previous) {
        (Some((id, at)), _) => (*id, *id, vec![StatusChange { at: at.clone(), status: OrderStatus::Received, reason: String::new() }]),
        (None, Some(p)) => (p.event_id, p.arrival, p.history.clone()),
        (None, None) => (0, 0, Vec::new()),
    };
    history.push(StatusChange { at: now.clone(), status: decision.status(), reason: dc.decided.outcome.reason.clone() });
    let record = OrderRecord {
        order: dc.order,
        status: decision.status(),
        reason: dc.decided.outcome.reason.clone(),
        priority: dc.decided.outcome.priority,
        error: None,
        writeback: if has_job { WritebackState::Pending } else { WritebackState::None },
        history,
        stock_seen: dc.decided.views,
        allocations: dc.decided.allocations.clone(),
        config_version: cfg.version,
        event_id,
        arrival,
    };
    let settings = cfg.inventory.clone();
    let source = wf.connection.name.clone();
    let excludes = wf.connection.connector.reported_excludes_open_orders;
    let pushes = super::push::Targets::of(cfg);
    let (payload, previous, reported, mut audit) = (dc.payload, dc.previous, dc.reported, dc.audit);
    let first_event = dc.event.map(|(id, _)| id);
    let (result, effects) = rt
        .store
        .write(move |w| {
            let mut effects = Effects::default();
            let current = w.order(&record.order.id)?;
            let stale = match (&previous, &current) {
                // A first decision: only over nothing, a received or a failed order.
                (None, Some(c)) => c.status != OrderStatus::Received && c.status != OrderStatus::Error,
                // A decision again: only if nothing moved since it was read.
                (Some(p), Some(c)) => c.status != p.status || c.writeback == WritebackState::Pending || c.history.len() != p.history.len(),
                (Some(_), None) => true,
                (None, None) => false,
            };
            if stale {
                if let Some(id) = first_event {
                    w.remove_event(id)?;
                }
                return Ok((Committed::Skipped, effects));
            }
            let cause = format!("reported by {source} for order {}", record.order.id);
            for r in reported.iter() {
                ledger::record_report(w, &settings, r, &source, excludes, &now, &cause, &mut effects)?;
            }
            if decision == Decision::Approve {
                if let Err(short) = ledger::reserve(w, &settings, &record.order.id, &record.allocations, &now, &mut effects)? {
                    return Ok((Committed::Shortfall(short), effects));
                }
                let summary: Vec<String> = record.allocations.iter().map(|a| format!("{} ×{}", a.sku, a.qty)).collect();
                audit.push(AuditEntry {
                    at: now.clone(),
                    kind: AuditKind::Reserve,
                    message: format!("reserved {}", summary.join(", ")),
                    call: None,
                });
            }
            if let Some(p) = &previous {
                if p.status == OrderStatus::Waitlisted {
                    for e in waitlist_entries(p) {
                        w.remove_from_waitlist(&e)?;
                    }
                }
            }
            if decision == Decision::Waitlist {
                for e in waitlist_entries(&record) {
                    w.add_to_waitlist(&e)?;
                }
            }
            w.put_order(&record)?;
            if let Some(p) = &payload {
                w.put_payload(&record.order.id, p)?;
            }
            w.audit_all(&record.order.id, &audit)?;
            if let Some(job) = &job {
                w.put_writeback(job)?;
            }
            if let Some(id) = first_event {
                w.remove_event(id)?;
            }
            pushes.queue(w, &effects)?;
            Ok((Committed::Done { writeback: job.map(|job| Box::new(FreshWriteback { job, record })) }, effects))
        })
        .await?;
    if matches!(result, Committed::Done { .. }) {
        rt.after_commit(&effects);
    }
    Ok(result)
}

/// One waitlist entry per SKU of the order.
pub(super) fn waitlist_entries(rec: &OrderRecord) -> Vec<WaitlistEntry> {
    rec.order
        .qty_by_sku()
        .keys()
        .map(|sku| WaitlistEntry { sku: sku.to_string(), priority: rec.priority, arrival: rec.arrival, order_id: rec.order.id.clone() })
        .collect()
}

/// A later event of a decided order: cancelled or shipped releases what it
/// holds; anything else (a repeat, an update) is noted and ignored.
async fn later_event(
    rt: &Runtime,
    cfg: &ConfigSet,
    rec: OrderRecord,
    change: Option<OrderStatus>,
    ev: &EventRecord,
) -> Result<(), StoreError> {
    let now = rt.now();
    let event_id = ev.id;
    let settings = cfg.inventory.clone();
    let pushes = super::push::Targets::of(cfg);
    let id = rec.order.id.clone();
    let effects = rt
        .store
        .write(move |w| {
            let mut effects = Effects::default();
            let Some(mut current) = w.order(&id)? else {
                w.remove_event(event_id)?;
                return Ok(effects);
            };
            let message = match change {
                Some(to) if matches!(current.status, OrderStatus::Cancelled | OrderStatus::Fulfilled) => {
                    format!("event {event_id} reports the order {}; it is already {}", to.as_str(), current.status.as_str())
                }
                Some(to) => {
                    if current.status == OrderStatus::Waitlisted {
                        for e in waitlist_entries(&current) {
                            w.remove_from_waitlist(&e)?;
                        }
                    }
                    if current.status == OrderStatus::Approved {
                        if to == OrderStatus::Fulfilled {
                            ledger::fulfil(w, &settings, &id, &current.allocations, &now, &mut effects)?;
                        } else {
                            ledger::release(
                                w,
                                &settings,
                                &id,
                                &current.allocations,
                                &now,
                                &format!("order {id} cancelled on the platform"),
                                &mut effects,
                            )?;
                        }
                    }
                    let was = current.status;
                    current.status = to;
                    current.history.push(StatusChange {
                        at: now.clone(),
                        status: to,
                        reason: format!("reported by the platform (event {event_id})"),
                    });
                    w.put_order(&current)?;
                    format!("event {event_id}: the platform reports the order {} (it was {})", to.as_str(), was.as_str())
                }
                None => format!("event {event_id} repeats order {} (already {}); ignored", current.order.number, current.status.as_str()),
            };
            w.audit(&id, &AuditEntry { at: now.clone(), kind: AuditKind::Intake, message, call: None })?;
            w.remove_event(event_id)?;
            pushes.queue(w, &effects)?;
            Ok(effects)
        })
        .await?;
    rt.after_commit(&effects);
    Ok(())
}

/// An order first heard of when it was already cancelled or shipped.
async fn record_final(
    rt: &Runtime,
    cfg: &ConfigSet,
    order: Order,
    payload: Value,
    ev: &EventRecord,
    status: OrderStatus,
) -> Result<(), StoreError> {
    let now = rt.now();
    let record = OrderRecord {
        status,
        reason: "reported by the platform".into(),
        priority: 0,
        error: None,
        writeback: WritebackState::None,
        history: vec![StatusChange { at: now.clone(), status, reason: format!("first reported {} (event {})", status.as_str(), ev.id) }],
        stock_seen: BTreeMap::new(),
        allocations: Vec::new(),
        config_version: cfg.version,
        event_id: ev.id,
        arrival: ev.id,
        order,
    };
    let bytes = serde_json::to_vec(&payload).expect("JSON values serialize");
    let event_id = ev.id;
    rt.store
        .write(move |w| {
            if w.order(&record.order.id)?.is_none() {
                w.put_order(&record)?;
                w.put_payload(&record.order.id, &bytes)?;
            }
            w.remove_event(event_id)
        })
        .await
}

/// Put the order in `error` with a message (the daemon carries on).
async fn commit_error(
    rt: &Runtime,
    cfg: &ConfigSet,
    order: Order,
    payload: Value,
    ev: &EventRecord,
    mut audit: Vec<AuditEntry>,
    message: String,
) -> Result<(), StoreError> {
    tracing::warn!(workflow = %order.workflow, order = %order.id, "order put in error: {message}");
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
        arrival: ev.id,
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
            w.audit_all(&record.order.id, &audit)?;
            w.remove_event(event_id)
        })
        .await
}
