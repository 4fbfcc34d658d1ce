//! Poll triggers: a request sent on a schedule, its records turned into
//! events like webhook deliveries.
//!
//! One task per polling workflow. Each poll reads every page, then commits
//! the records and the new cursor (the largest watermark seen) in one
//! transaction: a crash before the commit repeats the poll, a crash after
//! it does not lose the cursor, and records seen twice are dropped by their
//! delivery id (record id plus version) when the trigger names an `id`. The tasks follow the live config:
//! a new polling workflow starts polling, a removed one stops, and a changed
//! interval applies from the next wait.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::{Value, json};

use super::Runtime;
use crate::store::{Enqueued, NewEvent};
use crate::telemetry::metrics::METRICS;
use crate::workflow::mapping::scalar_text;
use crate::workflow::{PollSpec, Trigger, Workflow};

/// Start and stop poll tasks as config versions come and go.
pub async fn supervise(rt: Arc<Runtime>) {
    let mut versions = rt.registry.subscribe();
    let mut tasks: HashMap<String, tokio::task::JoinHandle<()>> = HashMap::new();
    loop {
        tasks.retain(|_, t| !t.is_finished());
        let cfg = rt.registry.current();
        for wf in cfg.workflows.values() {
            if matches!(wf.trigger, Trigger::Poll(_)) && !tasks.contains_key(&wf.name) {
                tracing::info!(workflow = %wf.name, "polling starts");
                tasks.insert(wf.name.clone(), tokio::spawn(poller(rt.clone(), wf.name.clone())));
            }
        }
        tokio::select! {
            changed = versions.changed() => if changed.is_err() { return },
            _ = rt.stopped() => return,
        }
    }
}

async fn poller(rt: Arc<Runtime>, name: String) {
    let mut versions = rt.registry.subscribe();
    loop {
        let cfg = rt.registry.current();
        let Some(wf) = cfg.workflows.get(&name).cloned() else {
            tracing::info!(workflow = %name, "polling stops: the workflow was removed");
            return;
        };
        let Trigger::Poll(spec) = &wf.trigger else {
            tracing::info!(workflow = %name, "polling stops: the workflow no longer polls");
            return;
        };
        match poll_once(&rt, &cfg, &wf, spec).await {
            Ok(n) => {
                tracing::debug!(workflow = %name, records = n, next_in_ms = spec.every.as_millis() as u64, "polled");
                METRICS.add("ordersync_polled_records_total", &[("workflow", &name)], n as u64)
            }
            Err(e) => {
                METRICS.inc("ordersync_poll_failures_total", &[("workflow", &name)]);
                tracing::warn!(workflow = %name, "poll failed: {e}");
            }
        }
        let every = spec.every;
        // Wake early on a config change: the interval may have changed.
        let deadline = tokio::time::Instant::now() + every;
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => break,
                changed = versions.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    let cfg = rt.registry.current();
                    match cfg.workflows.get(&name).map(|w| &w.trigger) {
                        Some(Trigger::Poll(s)) if s.every == every => continue,
                        _ => break,
                    }
                }
                _ = rt.stopped() => return,
            }
        }
    }
}

/// Read every page, then commit the records and the new cursor together.
/// Returns how many new records were queued.
pub async fn poll_once(rt: &Runtime, cfg: &crate::config::ConfigSet, wf: &Workflow, spec: &PollSpec) -> Result<usize, String> {
    let cursor = rt.store.cursor(&wf.name).map_err(|e| e.to_string())?.or_else(|| spec.initial_cursor.clone());
    let now = rt.now();
    // `page` is null on the first page (a GraphQL `after: null`, a query parameter left out).
    let mut page = Value::Null;
    let mut events = Vec::new();
    let run = rt.clock.now().unix_timestamp_nanos();
    let mut watermark: Option<Value> = None;
    for n in 0..spec.max_pages {
        let ctx = json!({ "cursor": cursor, "page": page, "values": wf.connection.values.clone(), "now": now });
        let ex = rt.http.send(&cfg.templates, &wf.connection, &spec.request, &ctx).await.map_err(|e| e.to_string())?;
        for record in spec.records.query(&ex.body) {
            if let Some(w) = spec.watermark.as_ref().and_then(|p| p.first(record)) {
                if watermark.as_ref().is_none_or(|cur| later(w, cur)) {
                    watermark = Some(w.clone());
                }
            }
            let id = spec.id.as_ref().and_then(|p| p.first(record)).and_then(scalar_text);
            let version = spec.version.as_ref().and_then(|p| p.first(record)).and_then(scalar_text);
            // With an id, a record seen again (same version) is a duplicate. Without
            // one every poll counts: stock figures are absolute, seeing one twice is harmless.
            let delivery = match id {
                Some(id) => format!("poll:{id}:{}", version.unwrap_or_default()),
                None => format!("poll-run:{run}:{}", events.len()),
            };
            let payload = serde_json::value::RawValue::from_string(record.to_string()).map_err(|e| e.to_string())?;
            events.push(NewEvent {
                workflow: wf.name.clone(),
                received_at: now.clone(),
                delivery_ids: vec![delivery],
                event_type: Some("poll".into()),
                payload,
            });
        }
        let next = spec.next_page.as_ref().and_then(|p| p.first(&ex.body)).and_then(scalar_text).filter(|s| !s.is_empty());
        match next {
            Some(next) if page.as_str() != Some(next.as_str()) && n + 1 < spec.max_pages => page = Value::String(next),
            _ => break,
        }
    }
    let new_cursor = watermark.as_ref().and_then(scalar_text);
    let name = wf.name.clone();
    let ids = rt
        .store
        .write(move |w| {
            let mut ids = Vec::new();
            for ev in events {
                if let Enqueued::New(id) = w.enqueue_event(ev)? {
                    ids.push(id);
                }
            }
            if let Some(c) = &new_cursor {
                w.set_cursor(&name, c)?;
            }
            Ok(ids)
        })
        .await
        .map_err(|e| e.to_string())?;
    for id in &ids {
        let _ = rt.queue.send(*id);
    }
    Ok(ids.len())
}

/// Watermarks compare as numbers when both are numbers, else as text
/// (ISO 8601 timestamps in one zone sort as text).
fn later(a: &Value, b: &Value) -> bool {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => x > y,
        _ => scalar_text(a).unwrap_or_default() > scalar_text(b).unwrap_or_default(),
    }
}
