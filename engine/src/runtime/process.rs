//! Processing one queued event: load it, take the live config once (the
//! run finishes on that version), and hand it to its workflow's kind.

use serde_json::Value;

use super::{Runtime, orders, stock_events};
use crate::store::{EventRecord, FailedEvent, StoreError};
use crate::telemetry::metrics::METRICS;
use crate::workflow::Kind;

/// What became of one attempt at an event.
pub(super) enum Attempt {
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
    match &wf.kind {
        Kind::Orders(flow) => orders::handle(rt, &cfg, &wf, flow, ev, payload).await,
        Kind::Stock(flow) => stock_events::handle(rt, &cfg, &wf, flow, ev, payload).await,
        Kind::Push(_) => {
            fail_event(rt, &ev, format!("workflow `{}` pushes stock; it takes no events", wf.name)).await.map(|_| Attempt::Finished)
        }
    }
}

/// The event cannot be used at all: keep it aside with the reason.
pub(super) async fn fail_event(rt: &Runtime, ev: &EventRecord, error: String) -> Result<(), StoreError> {
    tracing::warn!(workflow = %ev.workflow, event = ev.id, "event not processed: {error}");
    METRICS.inc("ordersync_order_errors_total", &[("workflow", &ev.workflow), ("stage", "mapping")]);
    let failure = FailedEvent { event_id: ev.id, workflow: ev.workflow.clone(), error, at: rt.now(), payload: ev.payload.clone() };
    rt.store.write(move |w| w.fail_event(&failure)).await
}
