//! Process metrics in Prometheus text format.
//!
//! A small registry of labelled counters and gauges; each call site names what
//! happened (`webhook`, `decision`, `writeback`, …) and the registry renders
//! them at `/metrics`. Counters are kept in one mutex-guarded map: an
//! increment costs a lock and a hash, far below a network round trip.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{LazyLock, Mutex};

pub static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::default);

#[derive(Default)]
pub struct Metrics {
    counters: Mutex<BTreeMap<(&'static str, String), u64>>,
    gauges: Mutex<BTreeMap<(&'static str, String), f64>>,
    commits: AtomicU64,
    committed_jobs: AtomicU64,
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

fn labels(pairs: &[(&str, &str)]) -> String {
    let mut s = String::new();
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
    s
}

impl Metrics {
    pub fn inc(&self, name: &'static str, pairs: &[(&str, &str)]) {
        self.add(name, pairs, 1);
    }

    pub fn add(&self, name: &'static str, pairs: &[(&str, &str)], n: u64) {
        let key = (name, labels(pairs));
        let mut m = self.counters.lock().unwrap_or_else(|p| p.into_inner());
        *m.entry(key).or_insert(0) += n;
    }

    pub fn set(&self, name: &'static str, pairs: &[(&str, &str)], v: f64) {
        let mut m = self.gauges.lock().unwrap_or_else(|p| p.into_inner());
        m.insert((name, labels(pairs)), v);
    }

    pub fn counter(&self, name: &'static str, pairs: &[(&str, &str)]) -> u64 {
        let m = self.counters.lock().unwrap_or_else(|p| p.into_inner());
        m.get(&(name, labels(pairs))).copied().unwrap_or(0)
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
        {
            let c = self.counters.lock().unwrap_or_else(|p| p.into_inner());
            for ((name, l), v) in c.iter() {
                families.entry(name).or_default().push((l.clone(), v.to_string()));
            }
        }
        {
            let g = self.gauges.lock().unwrap_or_else(|p| p.into_inner());
            for ((name, l), v) in g.iter() {
                families.entry(name).or_default().push((l.clone(), v.to_string()));
            }
        }
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
    }
}
