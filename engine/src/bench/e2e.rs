//! End to end: signed webhooks at a chosen concurrency through the whole
//! path (intake → durable queue → stock lookups over HTTP → rule →
//! reservation → write-back over HTTP), until every write-back has reached
//! the sandbox.
//!
//! The daemon (`ordersync run`) and the sandbox (`ordersync sandbox`) run as
//! processes of their own, so the daemon's CPU time and memory are measured
//! apart; this process is the load generator, and what it and the sandbox
//! cost is reported too.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, bail};
use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::{Mutex, mpsc};

use super::percentiles;
use super::procstat::{self, Usage};
use super::setup::BenchDir;
use crate::sandbox::platforms::shopify::ShopifyCredentials;

#[derive(Debug, Clone)]
pub struct E2eOptions {
    pub source: PathBuf,
    /// Orders to send (ignored when `seconds` is set).
    pub orders: usize,
    /// Send for this long instead of a fixed count.
    pub seconds: Option<u64>,
    pub concurrency: usize,
    /// Open loop: orders offered per second, each sent at its turn by
    /// whichever sender is free (`None`: every sender sends again as soon as
    /// it is answered).
    pub rate: Option<f64>,
    pub workflows: usize,
    /// SKUs in the sandbox catalogue the orders draw from.
    pub skus: usize,
    /// Orders written into the state file before the run.
    pub past_orders: usize,
    pub workers: Option<usize>,
}

#[derive(Debug, Serialize)]
pub struct E2eReport {
    pub cores: usize,
    pub orders: usize,
    pub concurrency: usize,
    /// Orders per second offered in an open-loop run; its latencies count
    /// from each order's turn, so a late start (every sender busy) counts too.
    pub offered_orders_per_s: Option<f64>,
    pub workflows: usize,
    pub skus: usize,
    pub past_orders: usize,
    pub lines_per_order: usize,
    /// Whether every order was placed in the sandbox before sending began
    /// (fixed-count runs) rather than while the run went on (timed runs).
    pub orders_made_ahead: bool,
    pub sending_s: f64,
    pub wall_s: f64,
    pub orders_per_s: f64,
    pub ack_p50_ms: f64,
    pub ack_p99_ms: f64,
    pub ack_max_ms: f64,
    pub e2e_p50_ms: f64,
    pub e2e_p99_ms: f64,
    pub e2e_max_ms: f64,
    pub non_2xx: usize,
    pub incomplete: usize,
    pub start_to_ready_ms: f64,
    pub daemon_idle_rss_mb: f64,
    pub daemon_peak_rss_mb: f64,
    pub daemon_cpu_s: f64,
    pub daemon_cpu_ms_per_order: f64,
    pub sandbox_cpu_ms_per_order: f64,
    pub loadgen_cpu_ms_per_order: f64,
    /// What the daemon wrote to storage (the state file, mostly) per order.
    pub daemon_written_kb_per_order: f64,
    pub store_commits: u64,
    pub store_jobs_per_commit: f64,
    pub commit_strategy: String,
}

struct Proc {
    child: Child,
    log: PathBuf,
}

impl Proc {
    /// If the process has ended: how, with the end of its log (the work
    /// directory holding the log is removed when the run ends).
    fn ended(&mut self) -> Option<String> {
        let status = self.child.try_wait().ok().flatten()?;
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        let tail = &lines[lines.len().saturating_sub(20)..];
        Some(format!("exited ({status}); the end of its log:\n{}", tail.join("\n")))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn(args: &[&str], log: &Path) -> anyhow::Result<Proc> {
    let exe = std::env::current_exe().context("finding the ordersync binary")?;
    let file = std::fs::File::create(log)?;
    let child =
        Command::new(exe).args(args).stdout(Stdio::null()).stderr(file).env("RUST_LOG", "warn").spawn().context("starting a process")?;
    Ok(Proc { child, log: log.to_path_buf() })
}

async fn wait_for_file(path: &Path, what: &str, proc: &mut Proc) -> anyhow::Result<String> {
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        if let Ok(text) = std::fs::read_to_string(path) {
            if !text.trim().is_empty() {
                return Ok(text);
            }
        }
        if let Some(how) = proc.ended() {
            bail!("{what} stopped before it was ready: it {how}");
        }
        if Instant::now() > deadline {
            bail!("{what} was not ready in time");
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

struct Delivery {
    order_id: u64,
    headers: Vec<(String, String)>,
    body: String,
}

pub async fn run(mut o: E2eOptions) -> anyhow::Result<E2eReport> {
    o.rate = o.rate.filter(|r| *r > 0.0);
    // At a steady rate a duration is a count, placed ahead like any other.
    if let (Some(seconds), Some(rate)) = (o.seconds, o.rate) {
        o.orders = (seconds as f64 * rate).ceil() as usize;
        o.seconds = None;
    }
    let work = std::env::temp_dir().join(format!("ordersync-bench-e2e-{}-{:x}", std::process::id(), rand::random::<u32>()));
    std::fs::create_dir_all(&work)?;
    let result = run_in(&o, &work).await;
    let _ = std::fs::remove_dir_all(&work);
    result
}

async fn run_in(o: &E2eOptions, work: &Path) -> anyhow::Result<E2eReport> {
    let http = reqwest::Client::builder().pool_max_idle_per_host(o.concurrency * 2).build()?;

    // The sandbox, as its own process.
    let creds_file = work.join("sandbox.json");
    let skus = o.skus.max(2).to_string();
    let mut sandbox = spawn(
        &[
            "sandbox",
            "--listen",
            "127.0.0.1:0",
            "--credentials-file",
            creds_file.to_str().unwrap_or_default(),
            "--shopify-restore-rate",
            "1000000000",
            "--generated-skus",
            &skus,
        ],
        &work.join("sandbox.log"),
    )?;
    let creds: Value = serde_json::from_str(&wait_for_file(&creds_file, "the sandbox", &mut sandbox).await?)?;
    let sandbox_url = format!("http://{}", creds["addr"].as_str().unwrap_or_default());
    let shop = &creds["shopify"];
    let creds = ShopifyCredentials {
        shop: shop["shop"].as_str().unwrap_or_default().into(),
        access_token: shop["access_token"].as_str().unwrap_or_default().into(),
        webhook_secret: shop["webhook_secret"].as_str().unwrap_or_default().into(),
    };

    // The config, with the connection's rate limit out of the way (the
    // sandbox stands in for a platform plan with room for this load).
    let dir = BenchDir::create(&o.source, o.workflows.max(1), shop["base_url"].as_str().unwrap_or_default(), &creds)?;
    let instance = dir.dir.join("ordersync.yaml");
    let text = std::fs::read_to_string(&instance)?;
    std::fs::write(&instance, format!("{text}    rate_limit:\n      per_second: 1000000000\n      burst: 1000000000\n"))?;
    let data = dir.dir.join("data");
    if o.past_orders > 0 {
        super::setup::prefill_orders(&data.join("ordersync.redb"), o.past_orders).await?;
    }

    // The daemon, as its own process.
    let ready = work.join("ready");
    let workers = o.workers.unwrap_or(64).to_string();
    let started = Instant::now();
    let mut daemon = spawn(
        &[
            "run",
            "--config-dir",
            dir.dir.to_str().unwrap_or_default(),
            "--instance",
            instance.to_str().unwrap_or_default(),
            "--data-dir",
            data.to_str().unwrap_or_default(),
            "--listen",
            "127.0.0.1:0",
            "--workers",
            &workers,
            "--no-watch",
            "--ready-file",
            ready.to_str().unwrap_or_default(),
        ],
        &work.join("daemon.log"),
    )?;
    let addr = wait_for_file(&ready, "the daemon", &mut daemon).await?;
    let start_to_ready = started.elapsed();
    let daemon_pid = daemon.child.id();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let idle = procstat::usage(daemon_pid).unwrap_or_default();
    let hook = format!("http://{}/hooks/shopify-orders", addr.trim());

    // Producer: orders made in the sandbox ahead of the senders. A fixed
    // count is made in full before the clock starts: placing orders is the
    // platform's work, not the daemon's, and the sandbox's CPU should be what
    // answering the daemon costs. A timed run has no count to make ahead, so
    // its orders are made while it runs (and the sandbox's figure includes them).
    let (tx, rx) = mpsc::channel::<Delivery>(if o.seconds.is_some() { 20_000 } else { o.orders.max(1) });
    let total = if o.seconds.is_some() { usize::MAX } else { o.orders };
    let deadline = o.seconds.map(|s| Instant::now() + Duration::from_secs(s));
    let producer = {
        let (http, url) = (http.clone(), sandbox_url.clone());
        let skus = o.skus.max(2);
        tokio::spawn(async move {
            let mut made = 0usize;
            while made < total && deadline.is_none_or(|d| Instant::now() < d) {
                let n = (total - made).min(500);
                let body =
                    json!({"platform": "shopify", "count": n, "sku_range": {"prefix": "SP-GEN-", "count": skus}, "lines_per_order": 2});
                let resp: Value = http.post(format!("{url}/_sandbox/orders/batch")).json(&body).send().await?.json().await?;
                for d in resp["deliveries"].as_array().into_iter().flatten() {
                    let headers = d["headers"]
                        .as_object()
                        .map(|h| h.iter().map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string())).collect())
                        .unwrap_or_default();
                    let delivery = Delivery {
                        order_id: d["order_id"].as_u64().unwrap_or_default(),
                        headers,
                        body: d["body"].as_str().unwrap_or_default().to_string(),
                    };
                    if tx.send(delivery).await.is_err() {
                        return Ok::<usize, anyhow::Error>(made);
                    }
                    made += 1;
                }
            }
            Ok(made)
        })
    };
    let (made_ahead, producing) = match o.seconds {
        None => (Some(producer.await??), None),
        Some(_) => (None, Some(producer)),
    };

    // Senders.
    let cpu0 = (
        procstat::usage(daemon_pid).unwrap_or_default(),
        procstat::usage(sandbox.child.id()).unwrap_or_default(),
        procstat::usage(std::process::id()).unwrap_or_default(),
    );
    // Each delivery is numbered as it is taken; in an open-loop run its turn
    // is the start plus its number over the rate.
    let queue = Arc::new(Mutex::new((rx, 0u32)));
    let interval = o.rate.map(|r| Duration::from_secs_f64(1.0 / r));
    let send_started = Instant::now();
    let mut senders = Vec::new();
    for _ in 0..o.concurrency {
        let (queue, http, hook) = (queue.clone(), http.clone(), hook.clone());
        senders.push(tokio::spawn(async move {
            let mut out = Vec::new();
            // A timed run ends at its deadline; what was made but not sent stays unsent.
            while deadline.is_none_or(|d| Instant::now() < d) {
                let (d, turn) = {
                    let mut q = queue.lock().await;
                    let Some(d) = q.0.recv().await else { return out };
                    q.1 += 1;
                    (d, interval.map(|i| send_started + i * (q.1 - 1)))
                };
                // A sender that waits for the turn starts when it wakes; one
                // that takes the delivery after its turn (every sender was
                // busy) is timed from the turn, so the daemon's lateness counts.
                let t = match turn {
                    Some(turn) if Instant::now() < turn => {
                        tokio::time::sleep_until(turn.into()).await;
                        Instant::now()
                    }
                    Some(turn) => turn,
                    None => Instant::now(),
                };
                let sent_ms = unix_ms().saturating_sub(t.elapsed().as_millis() as u64);
                let mut req = http.post(&hook).body(d.body);
                for (k, v) in &d.headers {
                    req = req.header(k, v);
                }
                let status = req.send().await.map(|r| r.status().as_u16()).unwrap_or(0);
                out.push((d.order_id, sent_ms, t.elapsed(), status));
            }
            out
        }));
    }
    // The senders hold the queue alone: once they stop, a producer still
    // making orders finds no one to hand them to, and stops too.
    drop(queue);
    let made = match producing {
        Some(producer) => producer.await??,
        None => made_ahead.unwrap_or_default(),
    };
    let mut sent = Vec::with_capacity(made);
    for s in senders {
        sent.extend(s.await?);
    }
    let sending = send_started.elapsed();

    // Completion: every order's write-back effect has reached the sandbox.
    let sent_at: HashMap<u64, u64> = sent.iter().map(|(id, ms, _, _)| (*id, *ms)).collect();
    let mut done_at: HashMap<u64, u64> = HashMap::with_capacity(sent.len());
    let mut after = 0u64;
    let finish_deadline = Instant::now() + Duration::from_secs(300);
    while done_at.len() < sent_at.len() && Instant::now() < finish_deadline {
        for (what, proc) in [("the daemon", &mut daemon), ("the sandbox", &mut sandbox)] {
            if let Some(how) = proc.ended() {
                bail!("{what} stopped during the run ({} of {} orders written back): it {how}", done_at.len(), sent_at.len());
            }
        }
        let resp: Value = http.get(format!("{sandbox_url}/_sandbox/effects?after={after}&limit=50000")).send().await?.json().await?;
        let effects = resp["effects"].as_array().cloned().unwrap_or_default();
        if effects.is_empty() {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        }
        for e in &effects {
            after = after.max(e["seq"].as_u64().unwrap_or(0));
            if let (Some(order), Some(at)) = (e["order"].as_u64(), e["at_ms"].as_u64()) {
                if sent_at.contains_key(&order) {
                    done_at.entry(order).or_insert(at);
                }
            }
        }
    }
    let wall = send_started.elapsed();
    let cpu1 = (
        procstat::usage(daemon_pid).unwrap_or_default(),
        procstat::usage(sandbox.child.id()).unwrap_or_default(),
        procstat::usage(std::process::id()).unwrap_or_default(),
    );
    let last_done = done_at.values().copied().max().unwrap_or(0);
    let first_sent = sent.iter().map(|(_, ms, _, _)| *ms).min().unwrap_or(0);

    let metrics = http.get(format!("http://{}/metrics", addr.trim())).send().await?.text().await.unwrap_or_default();
    let metric = |name: &str| {
        metrics
            .lines()
            .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    let commits = metric("ordersync_store_commits_total");
    let jobs = metric("ordersync_store_committed_jobs_total");

    let mut acks: Vec<Duration> = sent.iter().map(|(_, _, d, _)| *d).collect();
    let mut e2e: Vec<Duration> = done_at.iter().map(|(id, at)| Duration::from_millis(at.saturating_sub(sent_at[id]))).collect();
    let (a50, a99, amax) = percentiles(&mut acks);
    let (e50, e99, emax) = percentiles(&mut e2e);
    let n = sent.len().max(1) as f64;
    let per_order = |a: Usage, b: Usage| (b.cpu.saturating_sub(a.cpu)).as_secs_f64() * 1000.0 / n;
    let daemon_final = procstat::usage(daemon_pid).unwrap_or_default();
    drop(daemon);
    drop(sandbox);
    Ok(E2eReport {
        cores: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        orders: sent.len(),
        concurrency: o.concurrency,
        offered_orders_per_s: o.rate,
        workflows: o.workflows.max(1),
        skus: o.skus.max(2),
        past_orders: o.past_orders,
        lines_per_order: 2,
        orders_made_ahead: made_ahead.is_some(),
        sending_s: sending.as_secs_f64(),
        wall_s: wall.as_secs_f64(),
        orders_per_s: done_at.len() as f64 / (last_done.saturating_sub(first_sent).max(1) as f64 / 1000.0),
        ack_p50_ms: a50,
        ack_p99_ms: a99,
        ack_max_ms: amax,
        e2e_p50_ms: e50,
        e2e_p99_ms: e99,
        e2e_max_ms: emax,
        non_2xx: sent.iter().filter(|(_, _, _, s)| !(200..300).contains(s)).count(),
        incomplete: sent_at.len() - done_at.len(),
        start_to_ready_ms: start_to_ready.as_secs_f64() * 1000.0,
        daemon_idle_rss_mb: idle.rss_bytes as f64 / 1048576.0,
        daemon_peak_rss_mb: daemon_final.peak_rss_bytes as f64 / 1048576.0,
        daemon_cpu_s: cpu1.0.cpu.saturating_sub(cpu0.0.cpu).as_secs_f64(),
        daemon_cpu_ms_per_order: per_order(cpu0.0, cpu1.0),
        sandbox_cpu_ms_per_order: per_order(cpu0.1, cpu1.1),
        loadgen_cpu_ms_per_order: per_order(cpu0.2, cpu1.2),
        daemon_written_kb_per_order: cpu1.0.written_bytes.saturating_sub(cpu0.0.written_bytes) as f64 / 1024.0 / n,
        store_commits: commits as u64,
        store_jobs_per_commit: if commits > 0.0 { jobs / commits } else { 0.0 },
        commit_strategy: "group commit: one writer thread folds every queued write into one redb transaction with Durability::Immediate (fsync) before any caller is answered; a webhook is acknowledged only after its commit; closing a finished write-back waits up to 2 ms to share a commit".into(),
    })
}
