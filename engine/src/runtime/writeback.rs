//! The outbox: sending a decision's write-back steps, one after another.
//!
//! Each step is recorded in the outbox before it is sent and marked done
//! after, so a restart resumes where the daemon stopped. Every request carries
//! a deterministic idempotency key (from workflow, order, decision, step and
//! item) that templates can send where the platform accepts one. A step whose
//! retries run out goes to the dead-letter list and the job stops there.

use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use super::Runtime;
use crate::adapters::template::Template;
use crate::config::ConfigSet;
use crate::connector::Connection;
use crate::connector::client::{SendOptions, render_json};
use crate::connector::webhook::encode_hex;
use crate::model::{Decision, OrderRecord, WritebackState};
use crate::store::{AuditEntry, AuditKind, DeadLetter, StepProgress, StepState, StoreError, WriteTx, WritebackJob};
use crate::telemetry::metrics::METRICS;
use crate::workflow::Step;

/// A deterministic key for one effect: the same inputs always give the same
/// key, formatted as a UUID so platforms that expect one accept it.
pub fn idempotency_key(workflow: &str, order_id: &str, decision: Decision, step: &str, item: usize) -> String {
    let mut h = Sha256::new();
    for part in [workflow, order_id, decision.as_str(), step, &item.to_string()] {
        h.update(part.as_bytes());
        h.update([0]);
    }
    let d = h.finalize();
    let mut b = [0u8; 16];
    b.copy_from_slice(&d[..16]);
    b[6] = (b[6] & 0x0f) | 0x50; // version 5 (name-based, SHA)
    b[8] = (b[8] & 0x3f) | 0x80; // RFC 4122 variant
    let hex = encode_hex(&b);
    format!("{}-{}-{}-{}-{}", &hex[0..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..32])
}

pub fn new_step(workflow: &str, order_id: &str, decision: Decision, name: &str) -> StepProgress {
    StepProgress {
        name: name.to_string(),
        idempotency_key: idempotency_key(workflow, order_id, decision, name, 0),
        state: StepState::Pending,
        attempts: 0,
        results: Vec::new(),
        last_error: None,
    }
}

/// Send whatever is pending for `order_id`. Failures are recorded, not
/// returned. `resumed`: the job was left unfinished by an earlier run, so its
/// first pending step may already have taken effect (steps with a check
/// look before they resend).
pub async fn run(rt: &Runtime, cfg: &ConfigSet, order_id: &str, resumed: bool) {
    if let Err(e) = try_run(rt, cfg, order_id, resumed).await {
        tracing::error!(order = order_id, "write-back could not be recorded: {e}; it resumes on the next start");
    }
}

/// A write-back job just committed with its decision, and the order record
/// it was made for: nothing needs reading back.
pub struct FreshWriteback {
    pub job: WritebackJob,
    pub record: OrderRecord,
}

/// Run a job just committed, with the payload and the decision's context
/// (`order` without `raw`, `values`, `params`) in hand.
pub async fn run_fresh(rt: &Runtime, cfg: &ConfigSet, fresh: FreshWriteback, payload: Value, decided_in: Value) {
    let order_id = fresh.record.order.id.clone();
    let FreshWriteback { job, record } = fresh;
    if let Err(e) = execute(rt, cfg, job, record, payload, Some(decided_in), false).await {
        tracing::error!(order = order_id, "write-back could not be recorded: {e}; it resumes on the next start");
    }
}

async fn try_run(rt: &Runtime, cfg: &ConfigSet, order_id: &str, resumed: bool) -> Result<(), StoreError> {
    let Some(job) = rt.store.writeback(order_id)? else {
        return Ok(());
    };
    let Some(record) = rt.store.order(order_id)? else {
        return Ok(());
    };
    let payload: Value = rt.store.payload(order_id)?.and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or(Value::Null);
    execute(rt, cfg, job, record, payload, None, resumed).await
}

async fn execute(
    rt: &Runtime,
    cfg: &ConfigSet,
    job: WritebackJob,
    record: OrderRecord,
    payload: Value,
    decided_in: Option<Value>,
    resumed: bool,
) -> Result<(), StoreError> {
    let order_id = record.order.id.clone();
    let order_id = order_id.as_str();
    let Some(wf) = cfg.workflows.get(&job.workflow).cloned() else {
        tracing::warn!(order = order_id, workflow = %job.workflow, "write-back waits: its workflow is not configured");
        return Ok(());
    };
    let steps = wf.steps_for(job.decision);
    let mut ctx = match decided_in {
        Some(fields) => fields,
        None => json!({
            "order": serde_json::to_value(&record.order).expect("orders serialize"),
            "values": wf.connection.values,
            "params": wf.orders().map_or(&Value::Null, |f| &f.params),
        }),
    };
    if let Value::Object(fields) = &mut ctx {
        // The raw payload and the stock views are often most of the context:
        // left out when no step reads them.
        let any_step_uses = |test: &dyn Fn(&Template) -> bool| steps.iter().any(|s| step_uses(&wf.connection, s, test));
        if any_step_uses(&Template::reads_raw)
            && let Some(Value::Object(order)) = fields.get_mut("order")
        {
            order.insert("raw".into(), payload);
        }
        if any_step_uses(&|t| t.may_read("stock")) {
            fields.insert("stock".into(), serde_json::to_value(&record.stock_seen).unwrap_or(Value::Null));
        }
        let decision =
            json!({ "decision": job.decision, "reason": record.reason, "priority": record.priority, "lines": record.allocations });
        fields.insert("decision".into(), decision);
        fields.insert("now".into(), Value::String(rt.now()));
        fields.insert("steps".into(), Value::Object(Map::new()));
    }
    // The retry window runs from when the decision was made.
    let age = crate::clock::parse_instant(&job.created_at).map(|t| (rt.clock.now() - t).unsigned_abs()).unwrap_or_default();
    let budget = wf.connection.connector.retry.max_age.saturating_sub(age);
    let mut maybe_applied = resumed;
    let last = job.steps.len().saturating_sub(1);
    for (i, progress) in job.steps.iter().enumerate() {
        match progress.state {
            StepState::Done => {
                ctx["steps"][&progress.name] = step_results(&progress.results, has_for_each(steps, &progress.name));
                if i == last {
                    mark(rt, order_id, i, StepState::Done, progress.results.clone(), Vec::new(), true).await?;
                }
                continue;
            }
            StepState::DeadLettered | StepState::Dropped => return Ok(()),
            StepState::Pending => {}
        }
        let Some(step) = steps.iter().find(|s| s.name == progress.name) else {
            let message = format!("step {} is no longer configured; skipped", progress.name);
            mark(
                rt,
                order_id,
                i,
                StepState::Done,
                Vec::new(),
                vec![AuditEntry { at: rt.now(), kind: AuditKind::Writeback, message, call: None }],
                i == last,
            )
            .await?;
            continue;
        };
        let opts = SendOptions { budget: Some(budget), maybe_applied, single_attempt: false };
        let key = |n: usize| idempotency_key(&job.workflow, order_id, job.decision, &step.name, n);
        let run = send_step(rt, cfg, &wf.connection, step, &mut ctx, job.decision.as_str(), &key, opts).await;
        if let Some(error) = run.error {
            METRICS.inc("ordersync_writeback_steps_total", &[("workflow", &job.workflow), ("result", "dead_lettered")]);
            dead_letter(rt, &job.workflow, order_id, job.decision, i, progress, error, run.audit).await?;
            return Ok(());
        }
        maybe_applied = false;
        ctx["steps"][&step.name] = step_results(&run.results, step.for_each.is_some());
        METRICS.inc("ordersync_writeback_steps_total", &[("workflow", &job.workflow), ("result", "done")]);
        let mut audit = run.audit;
        audit.push(AuditEntry { at: rt.now(), kind: AuditKind::Writeback, message: format!("step {} done", step.name), call: None });
        mark(rt, order_id, i, StepState::Done, run.results, audit, i == last).await?;
    }
    Ok(())
}

/// What sending one step did.
pub(super) struct StepRun {
    /// The extracts of each request sent (one per `for_each` item).
    pub results: Vec<Value>,
    /// One entry per request, for the audit trail.
    pub audit: Vec<AuditEntry>,
    /// Why the step gave up, if it did.
    pub error: Option<String>,
}

/// Send one step: once, or once per `for_each` item, each with its args and
/// idempotency key (`key(n)` for item `n`). Each call sees `ctx` with its
/// `item`, `idempotency_key` and `args` set; they are gone again afterwards.
#[allow(clippy::too_many_arguments)]
pub(super) async fn send_step(
    rt: &Runtime,
    cfg: &ConfigSet,
    conn: &Connection,
    step: &Step,
    ctx: &mut Value,
    label: &str,
    key: &(dyn Fn(usize) -> String + Sync),
    opts: SendOptions,
) -> StepRun {
    let run = send_calls(rt, cfg, conn, step, ctx, label, key, opts).await;
    if let Value::Object(fields) = ctx {
        for k in CALL_FIELDS {
            fields.remove(k);
        }
    }
    run
}

/// What each call of a step adds to the context.
const CALL_FIELDS: [&str; 3] = ["item", "idempotency_key", "args"];

#[allow(clippy::too_many_arguments)]
async fn send_calls(
    rt: &Runtime,
    cfg: &ConfigSet,
    conn: &Connection,
    step: &Step,
    ctx: &mut Value,
    label: &str,
    key: &(dyn Fn(usize) -> String + Sync),
    opts: SendOptions,
) -> StepRun {
    let mut run = StepRun { results: Vec::new(), audit: Vec::new(), error: None };
    let items: Vec<Value> = match &step.for_each {
        None => vec![Value::Null],
        Some(t) => match cfg.templates.render_value(t, ctx) {
            Ok(Value::Array(a)) => a,
            Ok(Value::Null) => Vec::new(),
            Ok(other) => vec![other],
            Err(e) => {
                run.error = Some(e.0);
                return run;
            }
        },
    };
    for (n, item) in items.into_iter().enumerate() {
        // The context is not copied per call: this call's fields replace the last one's.
        let call_ctx = &mut *ctx;
        if let Value::Object(fields) = call_ctx {
            fields.remove("args");
        }
        call_ctx["item"] = item;
        call_ctx["idempotency_key"] = Value::String(key(n));
        let mut args = Map::new();
        for (k, t) in &step.args {
            match render_json(&cfg.templates.scope(call_ctx), t) {
                Ok(v) => {
                    args.insert(k.clone(), v);
                }
                Err(e) => {
                    run.error = Some(e.0);
                    return run;
                }
            }
        }
        call_ctx["args"] = Value::Object(args);
        match rt.http.send_with(&cfg.templates, conn, &step.request, call_ctx, opts).await {
            Ok(ex) => {
                METRICS.inc("ordersync_requests_total", &[("connection", &conn.name), ("outcome", "ok")]);
                let what = if ex.already_done { "was already in effect; not resent" } else { "sent" };
                run.audit.push(AuditEntry {
                    at: rt.now(),
                    kind: AuditKind::Writeback,
                    message: format!("{} {what} ({label})", step.name),
                    call: Some(ex.summary),
                });
                run.results.push(ex.extracts);
            }
            Err(e) => {
                METRICS.inc("ordersync_requests_total", &[("connection", &conn.name), ("outcome", "failed")]);
                run.audit.push(AuditEntry {
                    at: rt.now(),
                    kind: AuditKind::Writeback,
                    message: format!("{} failed", step.name),
                    call: e.summary().cloned(),
                });
                run.error = Some(e.to_string());
                return run;
            }
        }
    }
    run
}

/// Whether any template used to send `step` (its request, args, `for_each`) satisfies `test`.
fn step_uses(conn: &Connection, step: &Step, test: &dyn Fn(&Template) -> bool) -> bool {
    conn.connector.request_uses(&step.request, test)
        || step.args.iter().any(|(_, t)| t.uses(test))
        || step.for_each.as_ref().is_some_and(test)
}

fn has_for_each(steps: &[Step], name: &str) -> bool {
    steps.iter().any(|s| s.name == name && s.for_each.is_some())
}

/// A step's extracts as later steps see them: one object, or a list for `for_each`.
fn step_results(results: &[Value], per_item: bool) -> Value {
    if per_item { Value::Array(results.to_vec()) } else { results.first().cloned().unwrap_or_else(|| Value::Object(Map::new())) }
}

/// Record a step's outcome in its job, with the step's audit, in one
/// commit. The last step closes the job instead, and with it the order's
/// write-back: the store reads a pending write-back without a job as done.
async fn mark(
    rt: &Runtime,
    order_id: &str,
    index: usize,
    state: StepState,
    results: Vec<Value>,
    audit: Vec<AuditEntry>,
    last: bool,
) -> Result<(), StoreError> {
    let id = order_id.to_string();
    let write = move |w: &mut WriteTx<'_>| {
        if last {
            w.remove_writeback(&id)?;
        } else if let Some(mut job) = w.writeback(&id)? {
            if let Some(step) = job.steps.get_mut(index) {
                step.state = state;
                step.results = results;
                step.attempts += 1;
                step.last_error = None;
            }
            w.put_writeback(&job)?;
        }
        w.audit_all(&id, &audit)?;
        Ok(())
    };
    // The next step is sent only once its predecessor's mark is durable;
    // closing the job holds nothing up, so it shares the next commit. A crash
    // before that commit sends the last step again on restart, under the same
    // idempotency key, as a crash just after any send always could.
    if last { rt.store.write_unhurried(write).await } else { rt.store.write(write).await }
}

#[allow(clippy::too_many_arguments)]
async fn dead_letter(
    rt: &Runtime,
    workflow: &str,
    order_id: &str,
    decision: Decision,
    index: usize,
    progress: &StepProgress,
    error: String,
    mut audit: Vec<AuditEntry>,
) -> Result<(), StoreError> {
    tracing::warn!(order = order_id, step = %progress.name, "write-back step dead-lettered: {error}");
    let letter = DeadLetter {
        id: 0,
        order_id: order_id.to_string(),
        workflow: workflow.to_string(),
        decision,
        step: progress.name.clone(),
        idempotency_key: progress.idempotency_key.clone(),
        error: error.clone(),
        at: rt.now(),
    };
    let id = order_id.to_string();
    audit.push(AuditEntry {
        at: rt.now(),
        kind: AuditKind::Error,
        message: format!("step {} gave up: {error}", progress.name),
        call: None,
    });
    rt.store
        .write(move |w| {
            w.add_dead_letter(letter)?;
            if let Some(mut job) = w.writeback(&id)? {
                if let Some(step) = job.steps.get_mut(index) {
                    step.state = StepState::DeadLettered;
                    step.attempts += 1;
                    step.last_error = Some(error);
                }
                w.put_writeback(&job)?;
            }
            if let Some(mut rec) = w.order(&id)? {
                rec.writeback = WritebackState::DeadLettered;
                w.put_order(&rec)?;
            }
            w.audit_all(&id, &audit)?;
            Ok(())
        })
        .await
}

/// Why a dead letter could not be acted on.
#[derive(Debug, thiserror::Error)]
pub enum DeadLetterError {
    #[error("no dead letter {0}")]
    NotFound(u64),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Send a dead-lettered step again (same idempotency key), then the steps after it.
pub async fn replay(rt: &Runtime, id: u64) -> Result<crate::model::OrderRecord, DeadLetterError> {
    let now = rt.now();
    let letter = rt
        .store
        .write(move |w| {
            let Some(letter) = w.take_dead_letter(id)? else { return Ok(None) };
            if let Some(mut job) = w.writeback(&letter.order_id)? {
                for step in job.steps.iter_mut().filter(|s| s.state == StepState::DeadLettered) {
                    step.state = StepState::Pending;
                }
                // A replay gets a fresh retry window.
                job.created_at = now.clone();
                w.put_writeback(&job)?;
            }
            if let Some(mut rec) = w.order(&letter.order_id)? {
                rec.writeback = WritebackState::Pending;
                w.put_order(&rec)?;
            }
            let entry = AuditEntry {
                at: now,
                kind: AuditKind::Writeback,
                message: format!("dead letter {id} ({}) replayed by an operator", letter.step),
                call: None,
            };
            w.audit(&letter.order_id, &entry)?;
            Ok(Some(letter))
        })
        .await?
        .ok_or(DeadLetterError::NotFound(id))?;
    let cfg = rt.registry.current();
    run(rt, &cfg, &letter.order_id, true).await;
    rt.store.order(&letter.order_id)?.ok_or(DeadLetterError::NotFound(id))
}

/// Give up on a dead-lettered step for good: nothing more is sent for its job.
pub async fn drop_letter(rt: &Runtime, id: u64) -> Result<DeadLetter, DeadLetterError> {
    let now = rt.now();
    rt.store
        .write(move |w| {
            let Some(letter) = w.take_dead_letter(id)? else { return Ok(None) };
            if let Some(job) = w.writeback(&letter.order_id)? {
                w.remove_writeback(&job.order_id)?;
            }
            if let Some(mut rec) = w.order(&letter.order_id)? {
                rec.writeback = WritebackState::Dropped;
                w.put_order(&rec)?;
            }
            let entry = AuditEntry {
                at: now,
                kind: AuditKind::Writeback,
                message: format!("dead letter {id} ({}) dropped by an operator", letter.step),
                call: None,
            };
            w.audit(&letter.order_id, &entry)?;
            Ok(Some(letter))
        })
        .await?
        .ok_or(DeadLetterError::NotFound(id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_stable_and_distinct() {
        let a = idempotency_key("wf", "shop:1", Decision::Approve, "tag", 0);
        assert_eq!(a, idempotency_key("wf", "shop:1", Decision::Approve, "tag", 0));
        assert_ne!(a, idempotency_key("wf", "shop:1", Decision::Approve, "tag", 1));
        assert_ne!(a, idempotency_key("wf", "shop:1", Decision::Waitlist, "tag", 0));
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "5");
    }
}
