//! The live config version and the record of every load.
//!
//! A run takes `current()` once and keeps that `Arc` to its end, so a reload
//! never changes the rules under an order that is already being processed;
//! the next `current()` sees the new version.

use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use serde::Serialize;
use tokio::sync::watch;

use crate::config::diagnostic::Diagnostics;
use crate::config::{ConfigPaths, ConfigSet, LoadOptions};
use crate::telemetry::metrics::METRICS;

pub struct Registry {
    live: ArcSwap<ConfigSet>,
    state: Mutex<ReloadState>,
    pub paths: ConfigPaths,
    pub load_options: LoadOptions,
    /// One reload at a time.
    pub(super) reloading: tokio::sync::Mutex<()>,
    /// The live version number, for tasks that follow config changes.
    versions: watch::Sender<u64>,
}

/// What `/api/status` shows about config loads.
#[derive(Debug, Clone, Serialize, Default)]
pub struct ReloadState {
    pub version: u64,
    pub hash: String,
    pub loaded_at: String,
    pub last_result: String,
    pub last_attempt_at: String,
    pub last_cause: String,
    /// Every error of the last failed load, one `file:line:col: …` line each.
    pub last_errors: Vec<String>,
    pub reloads_ok: u64,
    pub reloads_failed: u64,
    /// Hash of the last set that failed, so an unchanged broken set is not re-reported.
    #[serde(skip)]
    pub rejected_hash: Option<String>,
}

impl Registry {
    pub fn new(mut first: ConfigSet, paths: ConfigPaths, load_options: LoadOptions, now: String) -> Self {
        first.version = 1;
        let state = ReloadState {
            version: 1,
            hash: first.hash.clone(),
            loaded_at: now.clone(),
            last_result: "ok".into(),
            last_attempt_at: now,
            last_cause: "start".into(),
            reloads_ok: 1,
            ..ReloadState::default()
        };
        METRICS.inc("ordersync_config_reloads_total", &[("result", "ok")]);
        METRICS.set("ordersync_config_version", &[], 1.0);
        let (versions, _) = watch::channel(1);
        Registry {
            live: ArcSwap::from_pointee(first),
            state: Mutex::new(state),
            paths,
            load_options,
            reloading: tokio::sync::Mutex::new(()),
            versions,
        }
    }

    /// A registry over a set already loaded and numbered (workflow tests).
    pub fn from_live(set: Arc<ConfigSet>, paths: ConfigPaths) -> Self {
        let state = ReloadState { version: set.version, hash: set.hash.clone(), last_result: "ok".into(), ..ReloadState::default() };
        let (versions, _) = watch::channel(set.version);
        Registry {
            live: ArcSwap::new(set),
            state: Mutex::new(state),
            paths,
            load_options: LoadOptions { resolve_secrets: false, fake_secrets: true, ..LoadOptions::default() },
            reloading: tokio::sync::Mutex::new(()),
            versions,
        }
    }

    pub fn current(&self) -> Arc<ConfigSet> {
        self.live.load_full()
    }

    pub fn state(&self) -> ReloadState {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Follow the live version number.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.versions.subscribe()
    }

    /// Put a newly loaded set live unless it is identical to the live one.
    /// Returns the live version afterwards and whether it changed.
    pub fn install(&self, mut next: ConfigSet, now: String, cause: &str) -> (u64, bool) {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        st.last_attempt_at = now.clone();
        st.last_cause = cause.to_string();
        st.last_result = "ok".into();
        st.last_errors.clear();
        st.rejected_hash = None;
        if next.hash == st.hash && next.secrets_digest == self.live.load().secrets_digest {
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
        let version = st.version;
        drop(st);
        self.versions.send_replace(version);
        (version, true)
    }

    /// The files on disk are the live version again after a failed load.
    pub fn back_to_live(&self, now: String, cause: &str) {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        st.last_attempt_at = now;
        st.last_cause = cause.to_string();
        st.last_result = "ok".into();
        st.last_errors.clear();
        st.rejected_hash = None;
    }

    /// Record a load that failed; the live version stays.
    pub fn reject(&self, errors: &Diagnostics, hash: String, now: String, cause: &str) {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        st.last_attempt_at = now;
        st.last_cause = cause.to_string();
        st.last_result = "error".into();
        st.last_errors = errors.0.iter().map(|d| d.to_string()).collect();
        st.rejected_hash = Some(hash);
        st.reloads_failed += 1;
        METRICS.inc("ordersync_config_reloads_total", &[("result", "error")]);
    }
}
