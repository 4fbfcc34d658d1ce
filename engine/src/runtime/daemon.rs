//! Starting and stopping the daemon.
//!
//! Start: load and validate the config, open the store, bind the listener,
//! start workers, then resume whatever the last run left: queued events and
//! unfinished write-backs. Stop (SIGTERM): stop accepting webhooks, let
//! workers finish the event in hand, close the store.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::sync::{Mutex, mpsc, watch};
use tokio::task::JoinHandle;

use super::{Runtime, process, writeback};
use crate::clock::Clock;
use crate::config::secret::Secret;
use crate::config::{ConfigPaths, LoadOptions};
use crate::connector::client::HttpClient;
use crate::http::{self, AppState};
use crate::reload::registry::Registry;
use crate::reload::watcher::WatchOptions;
use crate::store::Store;

pub struct DaemonOptions {
    pub paths: ConfigPaths,
    pub data_dir: PathBuf,
    /// The redb file; defaults to `<data_dir>/ordersync.redb`.
    pub state: Option<PathBuf>,
    /// Overrides the instance config's `listen`.
    pub listen: Option<String>,
    pub workers: Option<usize>,
    pub clock: Arc<dyn Clock>,
    /// Watch the config files and reload on change (`None`: do not watch).
    pub watch: Option<WatchOptions>,
}

pub struct Daemon {
    pub addr: SocketAddr,
    pub runtime: Arc<Runtime>,
    stop: watch::Sender<bool>,
    server: JoinHandle<()>,
    workers: Vec<JoinHandle<()>>,
    background: Vec<JoinHandle<()>>,
}

const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
const DEFAULT_WORKERS: usize = 16;
const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

impl Daemon {
    pub async fn start(opts: DaemonOptions) -> anyhow::Result<Daemon> {
        let load_options = LoadOptions::default();
        let cfg =
            crate::config::load(&opts.paths, load_options).map_err(|d| anyhow::anyhow!("the config has {} error(s):\n{d}", d.len()))?;
        std::fs::create_dir_all(&opts.data_dir).with_context(|| format!("cannot create data directory {}", opts.data_dir.display()))?;
        let state_path = opts.state.clone().unwrap_or_else(|| opts.data_dir.join("ordersync.redb"));
        let store = Store::open(&state_path)?;
        let admin_token = admin_token(&cfg.instance.admin_token, &opts.data_dir)?;
        let listen = opts.listen.clone().or_else(|| cfg.instance.listen.clone()).unwrap_or_else(|| DEFAULT_LISTEN.to_string());
        let workers = opts.workers.or(cfg.instance.workers).unwrap_or(DEFAULT_WORKERS).max(1);
        tracing::info!(config = %cfg.summary(), state = %state_path.display(), "config loaded");
        for w in &cfg.warnings {
            tracing::warn!("config: {w}");
        }

        let (queue, rx) = mpsc::unbounded_channel();
        let (waitlist, waitlist_rx) = mpsc::unbounded_channel();
        let (stop, stopping) = watch::channel(false);
        let registry = Registry::new(cfg, opts.paths.clone(), load_options, opts.clock.now_rfc3339());
        let http = HttpClient::new()?.with_token_store(Arc::new(store.clone()));
        let rt = Arc::new(Runtime {
            store,
            registry,
            http,
            clock: opts.clock.clone(),
            queue,
            stopping: stopping.clone(),
            attempts: Default::default(),
            waitlist,
            pushes: Default::default(),
        });

        let listener = tokio::net::TcpListener::bind(&listen).await.with_context(|| format!("cannot listen on {listen}"))?;
        let addr = listener.local_addr()?;
        let app = http::router(Arc::new(AppState { rt: rt.clone(), admin_token }));
        let mut server_stop = stopping.clone();
        let server = tokio::spawn(async move {
            let shutdown = async move {
                let _ = server_stop.wait_for(|s| *s).await;
            };
            if let Err(e) = axum::serve(listener, app).with_graceful_shutdown(shutdown).await {
                tracing::error!("HTTP listener failed: {e}");
            }
        });

        let rx = Arc::new(Mutex::new(rx));
        let worker_handles = (0..workers).map(|_| tokio::spawn(worker(rt.clone(), rx.clone()))).collect();

        let mut background = vec![
            tokio::spawn(super::waitlist::run(rt.clone(), waitlist_rx)),
            tokio::spawn(super::push::run(rt.clone())),
            tokio::spawn(super::poll::supervise(rt.clone())),
            tokio::spawn(super::retention::run(rt.clone())),
        ];

        // Resume the previous run's work.
        let pending = rt.store.pending_events()?;
        let jobs = rt.store.writebacks()?;
        if !pending.is_empty() || !jobs.is_empty() {
            tracing::info!(events = pending.len(), writebacks = jobs.len(), "resuming unfinished work");
        }
        for id in pending {
            let _ = rt.queue.send(id);
        }
        // Stock may have arrived while the daemon was down.
        let waiting: std::collections::BTreeSet<String> = rt.store.waitlist(None)?.into_iter().map(|e| e.sku).collect();
        if !waiting.is_empty() {
            let _ = rt.waitlist.send(waiting.into_iter().collect());
        }
        if !jobs.is_empty() {
            let rt2 = rt.clone();
            background.push(tokio::spawn(async move {
                for job in jobs {
                    if rt2.is_stopping() {
                        break;
                    }
                    let cfg = rt2.registry.current();
                    writeback::run(&rt2, &cfg, &job.order_id, true).await;
                }
            }));
        }
        if let Some(w) = opts.watch {
            crate::reload::watcher::start(rt.clone(), w);
        }
        #[cfg(unix)]
        {
            let rt2 = rt.clone();
            tokio::spawn(async move {
                use tokio::signal::unix::{SignalKind, signal};
                let Ok(mut hup) = signal(SignalKind::hangup()) else { return };
                loop {
                    tokio::select! {
                        _ = hup.recv() => { crate::reload::reload(&rt2, "SIGHUP", true).await; }
                        _ = rt2.stopped() => return,
                    }
                }
            });
        }
        tracing::info!(%addr, workers, "ordersync is ready");
        Ok(Daemon { addr, runtime: rt, stop, server, workers: worker_handles, background })
    }

    /// Stop intake, finish in-flight work, close the store.
    pub async fn shutdown(self) {
        tracing::info!("shutting down: intake stops, work in hand finishes");
        let _ = self.stop.send(true);
        let _ = self.server.await;
        let all = async {
            for w in self.workers.into_iter().chain(self.background) {
                let _ = w.await;
            }
        };
        if tokio::time::timeout(SHUTDOWN_GRACE, all).await.is_err() {
            tracing::warn!("workers did not finish within {SHUTDOWN_GRACE:?}; their events resume on the next start");
        }
        self.runtime.store.close().await;
        tracing::info!("stopped");
    }
}

async fn worker(rt: Arc<Runtime>, rx: Arc<Mutex<mpsc::UnboundedReceiver<u64>>>) {
    let mut stopping = rt.stopping.clone();
    loop {
        let next = {
            let mut guard = rx.lock().await;
            tokio::select! {
                id = guard.recv() => id,
                _ = stopping.wait_for(|s| *s) => None,
            }
        };
        match next {
            Some(id) => process::process_event(&rt, id).await,
            None => return,
        }
    }
}

/// The admin token from the instance config, or one generated into the data
/// directory on first start. Its location is logged, never its value.
fn admin_token(configured: &Option<crate::config::secret::SecretRef>, data_dir: &std::path::Path) -> anyhow::Result<Secret> {
    if let Some(r) = configured {
        return r.resolve().map_err(|e| anyhow::anyhow!("admin_token: {e}"));
    }
    let path = data_dir.join("admin-token");
    if let Ok(existing) = std::fs::read_to_string(&path) {
        let t = existing.trim();
        if !t.is_empty() {
            tracing::info!(path = %path.display(), "admin API token read from the data directory");
            return Ok(Secret::new(t));
        }
    }
    let token: String = (0..32).map(|_| format!("{:02x}", rand::random::<u8>())).collect();
    write_private(&path, &token).with_context(|| format!("cannot write the admin token to {}", path.display()))?;
    tracing::info!(path = %path.display(), "generated an admin API token; read it from this file");
    Ok(Secret::new(token))
}

fn write_private(path: &std::path::Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path)?;
    f.write_all(contents.as_bytes())?;
    f.sync_all()
}
