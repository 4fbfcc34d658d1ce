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
use crate::workflow::mapping::{as_integer, scalar_text};
use crate::workflow::{Pages, PollSpec, Trigger, Workflow};

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
    let mut pager = Pager::new(&spec.pages);
    let mut events = Vec::new();
    let run = rt.clock.now().unix_timestamp_nanos();
    let mut watermark: Option<Value> = None;
    let mut next_cursor: Option<Value> = None;
    for n in 0..spec.max_pages {
        let ctx =
            json!({ "cursor": cursor, "page": pager.page, "page_size": pager.size(), "values": wf.connection.values.clone(), "now": now });
        let ex = match &pager.link {
            Some(url) => rt.http.send_link(&cfg.templates, &wf.connection, &spec.request, &ctx, url).await,
            None => rt.http.send(&cfg.templates, &wf.connection, &spec.request, &ctx).await,
        }
        .map_err(|e| e.to_string())?;
        let records = spec.records.query(&ex.body);
        let count = records.len();
        for record in records {
            if let Some(w) = spec.watermark.as_ref().and_then(|p| p.first(record)) {
                if watermark.as_ref().is_none_or(|cur| later(w, cur)) {
                    watermark = Some(w.clone());
                }
            }
            let id = spec.id.as_ref().and_then(|p| p.first(record)).and_then(scalar_text);
            let version: Vec<String> = spec.version.iter().map(|p| p.first(record).and_then(scalar_text).unwrap_or_default()).collect();
            // With an id, a record seen again (same version) is a duplicate. Without
            // one every poll counts: stock figures are absolute, seeing one twice is harmless.
            let delivery = match id {
                Some(id) => format!("poll:{id}:{}", version.join(":")),
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
        if let Some(c) = spec.next_cursor.as_ref().and_then(|p| p.first(&ex.body)).filter(|v| !v.is_null()) {
            if next_cursor.as_ref().is_none_or(|cur| later(c, cur)) {
                next_cursor = Some(c.clone());
            }
        }
        if n + 1 >= spec.max_pages || !pager.advance(&ex.body, count) {
            break;
        }
    }
    let new_cursor = watermark.or(next_cursor).as_ref().and_then(scalar_text);
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

/// Where a poll is in its pages.
struct Pager<'a> {
    pages: &'a Pages,
    /// `page` as templates see it: null on the first page of token and link
    /// paging (a GraphQL `after: null`, a parameter left out), else the
    /// page number or offset.
    page: Value,
    /// The next page's URL (link paging).
    link: Option<String>,
}

impl<'a> Pager<'a> {
    fn new(pages: &'a Pages) -> Self {
        let page = match pages {
            Pages::Number { first, .. } | Pages::Offset { first, .. } => json!(first),
            _ => Value::Null,
        };
        Pager { pages, page, link: None }
    }

    fn size(&self) -> Value {
        match self.pages {
            Pages::Number { size: Some(s), .. } | Pages::Offset { size: s, .. } => json!(s),
            _ => Value::Null,
        }
    }

    /// Move to the next page after one with `count` records; false when that was the last.
    fn advance(&mut self, body: &Value, count: usize) -> bool {
        let number = |p: &Option<crate::adapters::jsonpath::JsonPath>| p.as_ref().and_then(|p| p.first(body)).and_then(as_integer);
        match self.pages {
            Pages::Single => false,
            Pages::Token(path) => {
                let next = path.first(body).and_then(scalar_text).filter(|s| !s.is_empty());
                match next {
                    Some(next) if self.page.as_str() != Some(next.as_str()) => {
                        self.page = Value::String(next);
                        true
                    }
                    _ => false,
                }
            }
            Pages::Link(path) => {
                let next = path.first(body).and_then(scalar_text).filter(|s| !s.is_empty());
                match next {
                    Some(next) if self.link.as_deref() != Some(next.as_str()) => {
                        self.link = Some(next);
                        true
                    }
                    _ => false,
                }
            }
            Pages::Number { first, size, total_pages, total_count } => {
                let current = self.page.as_u64().unwrap_or(*first);
                let done_by_pages = number(total_pages).is_some_and(|total| current >= total.max(0) as u64);
                let done_by_count = match (number(total_count), size) {
                    (Some(total), Some(size)) => (current + 1 - first) * size >= total.max(0) as u64,
                    _ => false,
                };
                let short = size.is_some_and(|s| (count as u64) < s);
                if count == 0 || done_by_pages || done_by_count || short {
                    return false;
                }
                self.page = json!(current + 1);
                true
            }
            Pages::Offset { first, size, total_count } => {
                let current = self.page.as_u64().unwrap_or(*first);
                let next = current + size;
                let done_by_count = number(total_count).is_some_and(|total| next - first >= total.max(0) as u64);
                if (count as u64) < *size || done_by_count {
                    return false;
                }
                self.page = json!(next);
                true
            }
        }
    }
}

/// Watermarks compare as numbers when both are numbers, as instants when
/// both are timestamps with a zone (offsets may differ), else as text
/// (timestamps in one zone and format sort as text).
fn later(a: &Value, b: &Value) -> bool {
    if let (Some(x), Some(y)) = (a.as_f64(), b.as_f64()) {
        return x > y;
    }
    let (ta, tb) = (scalar_text(a).unwrap_or_default(), scalar_text(b).unwrap_or_default());
    match (parse_instant(&ta), parse_instant(&tb)) {
        (Some(x), Some(y)) => x > y,
        _ => ta > tb,
    }
}

fn parse_instant(s: &str) -> Option<time::OffsetDateTime> {
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapters::jsonpath::JsonPath;

    #[test]
    fn watermarks_compare_instants_across_offsets() {
        assert!(later(&json!("2026-06-02T07:15:00-07:00"), &json!("2026-06-02T10:00:00Z")));
        assert!(!later(&json!("2026-06-02T07:15:00+02:00"), &json!("2026-06-02T10:00:00Z")));
        assert!(later(&json!("2026-06-02 14:15:01"), &json!("2026-06-02 14:15:00")));
        assert!(later(&json!(12), &json!(9)));
    }

    #[test]
    fn number_pages_stop_at_the_totals_or_a_short_page() {
        let p = |s: &str| Some(JsonPath::compile(s).unwrap());
        let pages = Pages::Number { first: 1, size: Some(2), total_pages: None, total_count: p("$.total_count") };
        let mut pager = Pager::new(&pages);
        assert!(pager.advance(&json!({"total_count": 5}), 2));
        assert_eq!(pager.page, json!(2));
        assert!(pager.advance(&json!({"total_count": 5}), 2));
        // Page 3 holds the fifth record; asking past it would repeat the last page.
        assert!(!pager.advance(&json!({"total_count": 5}), 1));

        let pages = Pages::Number { first: 1, size: None, total_pages: p("$.Pagination.NumberOfPages"), total_count: None };
        let mut pager = Pager::new(&pages);
        assert!(pager.advance(&json!({"Pagination": {"NumberOfPages": 2}}), 200));
        assert!(!pager.advance(&json!({"Pagination": {"NumberOfPages": 2}}), 13));
    }

    #[test]
    fn offset_pages_step_by_the_size() {
        let pages = Pages::Offset { first: 1, size: 100, total_count: None };
        let mut pager = Pager::new(&pages);
        assert_eq!(pager.page, json!(1));
        assert!(pager.advance(&json!({}), 100));
        assert_eq!(pager.page, json!(101));
        assert!(!pager.advance(&json!({}), 40));
    }

    #[test]
    fn link_and_token_pages_follow_the_answer() {
        let pages = Pages::Link(JsonPath::compile("$['odata.nextLink']").unwrap());
        let mut pager = Pager::new(&pages);
        assert!(pager.advance(&json!({"odata.nextLink": "Orders?$skip=20"}), 20));
        assert_eq!(pager.link.as_deref(), Some("Orders?$skip=20"));
        assert!(!pager.advance(&json!({"value": []}), 0));
        let pages = Pages::Token(JsonPath::compile("$.payload.NextToken").unwrap());
        let mut pager = Pager::new(&pages);
        assert!(pager.advance(&json!({"payload": {"NextToken": "abc"}}), 100));
        assert_eq!(pager.page, json!("abc"));
        assert!(!pager.advance(&json!({"payload": {}}), 3));
    }
}
