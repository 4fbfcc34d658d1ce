//! Hot reload: load the whole set again, and swap it in only if it is valid.
//!
//! Triggers are a file watcher (with debouncing), SIGHUP, `POST /api/reload`
//! and a periodic fingerprint check as a safety net for filesystems that do
//! not report changes. Whatever triggers it, a reload reads and validates the
//! complete set exactly as `ordersync validate` does; a valid set becomes the
//! next version atomically, an invalid one is reported (log, `/api/status`,
//! metric) while the previous version stays live. Secrets are read again on
//! every load.

pub mod registry;
pub mod watcher;

use serde::Serialize;

use crate::runtime::Runtime;

/// What one reload did.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum Outcome {
    /// The files did not change.
    Unchanged { version: u64 },
    /// A new version is live.
    Installed { version: u64 },
    /// The files are invalid; `version` is still live.
    Rejected { version: u64, errors: Vec<String> },
}

/// Reload now. `force` compiles even when the fingerprint is unchanged
/// (SIGHUP and the API do, so secrets rotated behind unchanged files are read).
pub async fn reload(rt: &Runtime, cause: &str, force: bool) -> Outcome {
    let reg = &rt.registry;
    let _one_at_a_time = reg.reloading.lock().await;
    let paths = reg.paths.clone();
    let opts = reg.load_options;
    let state = reg.state();
    if !force {
        let p = paths.clone();
        let fp = tokio::task::spawn_blocking(move || crate::config::fingerprint(&p)).await.unwrap_or_default();
        if fp == state.hash {
            if state.last_result != "ok" {
                // The files are back to what is live: the earlier error is over.
                reg.back_to_live(rt.now(), cause);
                tracing::info!(version = state.version, cause, "config files are back to the live version {}", state.version);
            }
            return Outcome::Unchanged { version: state.version };
        }
        if Some(&fp) == state.rejected_hash.as_ref() {
            return Outcome::Unchanged { version: state.version };
        }
    }
    let loaded = tokio::task::spawn_blocking(move || {
        let hash = crate::config::fingerprint(&paths);
        (crate::config::load(&paths, opts), hash)
    })
    .await;
    let now = rt.now();
    match loaded {
        Ok((Ok(set), _)) => {
            let summary = set.summary();
            let (version, changed) = reg.install(set, now, cause);
            if changed {
                tracing::info!(version, cause, "config version {version} is live: {summary}");
                Outcome::Installed { version }
            } else {
                Outcome::Unchanged { version }
            }
        }
        Ok((Err(diags), hash)) => {
            let version = reg.state().version;
            tracing::error!(version, cause, "config reload rejected, version {version} stays live; {} error(s):\n{diags}", diags.len());
            reg.reject(&diags, hash, now, cause);
            Outcome::Rejected { version, errors: diags.0.iter().map(|d| d.to_string()).collect() }
        }
        Err(e) => {
            let version = reg.state().version;
            tracing::error!("config reload failed: {e}");
            Outcome::Rejected { version, errors: vec![format!("the reload task failed: {e}")] }
        }
    }
}
