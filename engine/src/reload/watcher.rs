//! Watching the config files.
//!
//! The config root, `connectors.d/`, `workflows/`, `workflows/rules/` and the
//! instance config's directory are watched one level deep. An editor's save
//! (write to a temporary, rename over the original) or a Kubernetes ConfigMap
//! update (a `..data` symlink swapped to a new directory) arrives as a burst
//! of events; the burst is debounced into one reload, and watches are set up
//! again afterwards, because a directory that was removed and re-created, or
//! a symlink that now points elsewhere, needs a fresh watch. A periodic
//! fingerprint check covers filesystems that report nothing.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc;

use crate::config::ConfigPaths;
use crate::runtime::Runtime;

#[derive(Debug, Clone, Copy)]
pub struct WatchOptions {
    /// Quiet time after the last event before reloading.
    pub debounce: Duration,
    /// Longest a burst of events may postpone the reload.
    pub max_delay: Duration,
    /// Fingerprint check interval, for changes no event reported.
    pub poll_interval: Duration,
}

impl Default for WatchOptions {
    fn default() -> Self {
        WatchOptions { debounce: Duration::from_millis(50), max_delay: Duration::from_millis(500), poll_interval: Duration::from_secs(10) }
    }
}

fn relevant(kind: &EventKind) -> bool {
    use notify::event::{AccessKind, AccessMode};
    match kind {
        // Reading the files (ours included) is not a change.
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) => false,
        _ => true,
    }
}

/// Whether a changed path belongs to the config: the instance file, anything
/// in the config directories, or the directories themselves and Kubernetes'
/// `..data` links in the root. Other files there (a log, the state file) are not.
fn config_path(p: &ConfigPaths, path: &Path) -> bool {
    if path == p.instance || path.starts_with(p.connectors_dir()) || path.starts_with(p.workflows_dir()) {
        return true;
    }
    path.parent() == Some(p.dir.as_path())
        && path.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("..") || n == "connectors.d" || n == "workflows")
}

/// Set the watches up now (so no change after start-up is missed), then
/// follow them in a task until the daemon stops.
pub fn start(rt: Arc<Runtime>, opts: WatchOptions) -> tokio::task::JoinHandle<()> {
    let (tx, rx) = mpsc::unbounded_channel::<()>();
    let paths = rt.registry.paths.clone();
    let watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| match res {
        Ok(ev) if relevant(&ev.kind) && (ev.paths.is_empty() || ev.paths.iter().any(|path| config_path(&paths, path))) => {
            let _ = tx.send(());
        }
        Ok(_) => {}
        Err(e) => tracing::debug!("file watch error: {e}"),
    });
    let mut watcher = match watcher {
        Ok(w) => Some(w),
        Err(e) => {
            tracing::warn!("config files cannot be watched ({e}); changes are found by the periodic check and SIGHUP");
            None
        }
    };
    let dirs = watched_dirs(&rt);
    if let Some(w) = watcher.as_mut() {
        rewatch(w, &dirs);
    }
    tracing::debug!(dirs = ?dirs, "watching the config files");
    tokio::spawn(follow(rt, opts, watcher, dirs, rx))
}

async fn follow(
    rt: Arc<Runtime>,
    opts: WatchOptions,
    mut watcher: Option<RecommendedWatcher>,
    dirs: Vec<PathBuf>,
    mut rx: mpsc::UnboundedReceiver<()>,
) {
    let mut tick = tokio::time::interval(opts.poll_interval);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = rt.stopped() => return,
            got = rx.recv() => {
                if got.is_none() {
                    return;
                }
                debounce(&mut rx, opts).await;
                tracing::debug!("config files changed");
                if let Some(w) = watcher.as_mut() {
                    rewatch(w, &dirs);
                }
                super::reload(&rt, "file change", false).await;
            }
            _ = tick.tick() => {
                if let Some(w) = watcher.as_mut() {
                    rewatch(w, &dirs);
                }
                super::reload(&rt, "periodic check", false).await;
            }
        }
    }
}

/// Wait until events stop for `debounce`, or `max_delay` has passed.
async fn debounce(rx: &mut mpsc::UnboundedReceiver<()>, opts: WatchOptions) {
    let deadline = tokio::time::Instant::now() + opts.max_delay;
    loop {
        let quiet_until = (tokio::time::Instant::now() + opts.debounce).min(deadline);
        match tokio::time::timeout_at(quiet_until, rx.recv()).await {
            Ok(Some(())) if tokio::time::Instant::now() < deadline => continue,
            _ => return,
        }
    }
}

fn watched_dirs(rt: &Runtime) -> Vec<PathBuf> {
    let p = &rt.registry.paths;
    let mut dirs = vec![p.dir.clone(), p.connectors_dir(), p.workflows_dir(), p.rules_dir()];
    if let Some(parent) = p.instance.parent().filter(|d| !d.as_os_str().is_empty()) {
        dirs.push(parent.to_path_buf());
    }
    dirs.sort();
    dirs.dedup();
    dirs
}

/// (Re)establish a watch on every directory that exists now.
fn rewatch(w: &mut RecommendedWatcher, dirs: &[PathBuf]) {
    for d in dirs {
        let _ = w.unwatch(d);
        if d.is_dir() {
            if let Err(e) = w.watch(d, RecursiveMode::NonRecursive) {
                tracing::debug!(dir = %d.display(), "cannot watch: {e}");
            }
        }
    }
}
