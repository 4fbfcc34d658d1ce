//! The live config version and the history of loads.
//!
//! A run takes `current()` once and keeps that `Arc` to its end, so a reload
//! never changes the rules under an order that is already being processed.

use std::sync::Arc;
use std::sync::Mutex;

use arc_swap::ArcSwap;
use serde::Serialize;

use crate::config::ConfigSet;
use crate::config::diagnostic::Diagnostics;
use crate::telemetry::metrics::METRICS;

pub struct Registry {
    live: ArcSwap<ConfigSet>,
    state: Mutex<ReloadState>,
}

/// What `/api/status` shows about config loads.
#[derive(Debug, Clone, Serialize, Default)]
pub struct ReloadState {
    pub version: u64,
    pub hash: String,
    pub loaded_at: String,
    pub last_result: String,
    pub last_attempt_at: String,
    pub last_error: Option<String>,
    pub reloads_ok: u64,
    pub reloads_failed: u64,
}

impl Registry {
    pub fn new(mut first: ConfigSet, now: String) -> Self {
        first.version = 1;
        let state = ReloadState {
            version: 1,
            hash: first.hash.clone(),
            loaded_at: now.clone(),
            last_result: "ok".into(),
            last_attempt_at: now,
            last_error: None,
            reloads_ok: 1,
            reloads_failed: 0,
        };
        METRICS.inc("ordersync_config_reloads_total", &[("result", "ok")]);
        METRICS.set("ordersync_config_version", &[], 1.0);
        Registry { live: ArcSwap::from_pointee(first), state: Mutex::new(state) }
    }

    pub fn current(&self) -> Arc<ConfigSet> {
        self.live.load_full()
    }

    pub fn state(&self) -> ReloadState {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Put a newly loaded set live, unless it is identical to the live one.
    /// Returns the live version afterwards and whether it changed.
    pub fn install(&self, mut next: ConfigSet, now: String) -> (u64, bool) {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        st.last_attempt_at = now.clone();
        st.last_result = "ok".into();
        st.last_error = None;
        if next.hash == st.hash {
            return (st.version, false);
        }
        st.version += 1;
        next.version = st.version;
        st.hash = next.hash.clone();
        st.loaded_at = now;
        st.reloads_ok += 1;
        self.live.store(Arc::new(next));
        METRICS.inc("ordersync_config_reloads_total", &[("result", "ok")]);
        METRICS.set("ordersync_config_version", &[], st.version as f64);
        (st.version, true)
    }

    /// Record a load that failed; the live version stays.
    pub fn reject(&self, errors: &Diagnostics, now: String) {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        st.last_attempt_at = now;
        st.last_result = "error".into();
        st.last_error = Some(errors.to_string());
        st.reloads_failed += 1;
        METRICS.inc("ordersync_config_reloads_total", &[("result", "error")]);
    }
}
