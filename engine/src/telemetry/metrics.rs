//! Process metrics in Prometheus text format.
//!
//! A small registry of labelled counters and gauges; each call site names what
//! happened (`webhook`, `decision`, `writeback`, …) and the registry renders
//! them at `/metrics`. Counters and gauges each sit under one mutex, a map
//! per family keyed by the rendered label set; labels are rendered into a
//! reused per-thread buffer, so an increment of a series seen before costs a lock and two
//! lookups and allocates nothing.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{LazyLock, Mutex};

pub static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::default);

#[derive(Default)]
pub struct Metrics {
    counters: Mutex<Series<u64>>,
    gauges: Mutex<Series<f64>>,
    commits: AtomicU64,
    committed_jobs: AtomicU64,
}

/// Family name → rendered label set → value.
type Series<V> = BTreeMap<&'static str, BTreeMap<String, V>>;

thread_local! {
    static LABELS: RefCell<String> = const { RefCell::new(String::new()) };
}

/// Find (or start at `V::default()`) the series of `name` with these labels
/// and apply `f` to its value.
fn with_series<V: Default>(series: &Mutex<Series<V>>, name: &'static str, pairs: &[(&str, &str)], f: impl FnOnce(&mut V)) {
    LABELS.with_borrow_mut(|buf| {
        buf.clear();
        write_labels(buf, pairs);
        let mut m = series.lock().unwrap_or_else(|p| p.into_inner());
        let family = m.entry(name).or_default();
        match family.get_mut(buf.as_str()) {
            Some(v) => f(v),
            None => f(family.entry(buf.clone()).or_default()),
        }
    })
}

/// Each series of `series` as (labels, value) rows of its family.
fn rows_of<V: ToString>(series: &Mutex<Series<V>>, families: &mut BTreeMap<&'static str, Vec<(String, String)>>) {
    let m = series.lock().unwrap_or_else(|p| p.into_inner());
    for (name, values) in m.iter() {
        families.entry(name).or_default().extend(values.iter().map(|(l, v)| (l.clone(), v.to_string())));
    }
}

/// Help text for each metric family.
const HELP: &[(&str, &str)] = &[
    ("ordersync_webhooks_total", "Webhook deliveries by workflow and result."),
    ("ordersync_decisions_total", "Rule decisions by workflow and decision."),
    ("ordersync_order_errors_total", "Orders put in the error state, by workflow and stage."),
    ("ordersync_writeback_steps_total", "Write-back steps by workflow and result."),
    ("ordersync_requests_total", "Outbound platform requests by connection and outcome."),
    ("ordersync_config_reloads_total", "Config loads by result."),
    ("ordersync_config_version", "Version number of the live config."),
    ("ordersync_store_commits_total", "Durable write transactions committed."),
    ("ordersync_store_committed_jobs_total", "Writes folded into those transactions (group commit)."),
    ("ordersync_queue_depth", "Events accepted and not yet processed."),
    ("ordersync_outbox_pending", "Write-back jobs not yet finished."),
    ("ordersync_dead_letters", "Write-back steps in the dead-letter list."),
];

fn write_labels(s: &mut String, pairs: &[(&str, &str)]) {
    for (i, (k, v)) in pairs.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        let _ = write!(s, "{k}=\"");
        for c in v.chars() {
            match c {
                '\\' => s.push_str("\\\\"),
                '"' => s.push_str("\\\""),
                '\n' => s.push_str("\\n"),
                c => s.push(c),
            }
        }
        s.push('"');
    }
}

impl Metrics {
    pub fn inc(&self, name: &'static str, pairs: &[(&str, &str)]) {
        self.add(name, pairs, 1);
    }

    pub fn add(&self, name: &'static str, pairs: &[(&str, &str)], n: u64) {
        with_series(&self.counters, name, pairs, |v| *v += n);
    }

    pub fn set(&self, name: &'static str, pairs: &[(&str, &str)], v: f64) {
        with_series(&self.gauges, name, pairs, |g| *g = v);
    }

    pub fn counter(&self, name: &'static str, pairs: &[(&str, &str)]) -> u64 {
        let mut labels = String::new();
        write_labels(&mut labels, pairs);
        let m = self.counters.lock().unwrap_or_else(|p| p.into_inner());
        m.get(name).and_then(|f| f.get(&labels)).copied().unwrap_or(0)
    }

    /// Durable transactions committed so far.
    pub fn counter_commits(&self) -> u64 {
        self.commits.load(Ordering::Relaxed)
    }

    pub fn store_commit(&self, jobs: usize) {
        self.commits.fetch_add(1, Ordering::Relaxed);
        self.committed_jobs.fetch_add(jobs as u64, Ordering::Relaxed);
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let mut families: BTreeMap<&str, Vec<(String, String)>> = BTreeMap::new();
        rows_of(&self.counters, &mut families);
        rows_of(&self.gauges, &mut families);
        families
            .entry("ordersync_store_commits_total")
            .or_default()
            .push((String::new(), self.commits.load(Ordering::Relaxed).to_string()));
        families
            .entry("ordersync_store_committed_jobs_total")
            .or_default()
            .push((String::new(), self.committed_jobs.load(Ordering::Relaxed).to_string()));
        for (name, rows) in families {
            let help = HELP.iter().find(|(n, _)| *n == name).map_or("", |(_, h)| h);
            let kind = if name.ends_with("_total") { "counter" } else { "gauge" };
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (l, v) in rows {
                if l.is_empty() {
                    let _ = writeln!(out, "{name} {v}");
                } else {
                    let _ = writeln!(out, "{name}{{{l}}} {v}");
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_labelled_counters() {
        let m = Metrics::default();
        m.inc("ordersync_webhooks_total", &[("workflow", "a"), ("result", "accepted")]);
        m.inc("ordersync_webhooks_total", &[("workflow", "a"), ("result", "accepted")]);
        let text = m.render();
        assert!(text.contains("ordersync_webhooks_total{workflow=\"a\",result=\"accepted\"} 2"), "{text}");
        assert!(text.contains("# TYPE ordersync_webhooks_total counter"));
        assert_eq!(m.counter("ordersync_webhooks_total", &[("workflow", "a"), ("result", "accepted")]), 2);
        assert_eq!(m.counter("ordersync_webhooks_total", &[("workflow", "b"), ("result", "accepted")]), 0);
    }

    #[test]
    fn a_gauge_holds_its_last_value_per_label_set() {
        let m = Metrics::default();
        m.set("ordersync_queue_depth", &[], 5.0);
        m.set("ordersync_queue_depth", &[], 3.0);
        m.set("ordersync_config_version", &[("source", "a \"b\"")], 7.0);
        let text = m.render();
        assert!(text.contains("ordersync_queue_depth 3\n"), "{text}");
        assert!(text.contains("ordersync_config_version{source=\"a \\\"b\\\"\"} 7\n"), "{text}");
    }
}
