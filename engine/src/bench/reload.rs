//! Reload latency (file write → new version live, debounce included) and
//! webhook delivery while the config is reloaded under steady load.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde::Serialize;

use super::percentiles;
use super::setup::{BenchDir, load_sandbox_options};
use crate::clock::SystemClock;
use crate::model::OrderStatus;
use crate::reload::watcher::WatchOptions;
use crate::runtime::daemon::{Daemon, DaemonOptions};
use crate::sandbox::Sandbox;
use crate::sandbox::erp::{LineRequest, seed_amusement_catalogue};

#[derive(Debug, Serialize)]
pub struct ReloadReport {
    pub workflows: usize,
    pub reloads: usize,
    pub latency_p50_ms: f64,
    pub latency_p99_ms: f64,
    pub latency_max_ms: f64,
    pub orders_sent: usize,
    pub non_2xx: usize,
    pub lost: usize,
}

pub async fn run(source: &std::path::Path, workflows: usize, reloads: usize, orders_per_second: u32) -> anyhow::Result<ReloadReport> {
    let opts = load_sandbox_options();
    let creds = opts.shopify.clone();
    let sandbox = Arc::new(Sandbox::start(tokio::net::TcpListener::bind("127.0.0.1:0").await?, opts).await?);
    seed_amusement_catalogue(&sandbox.erp, "2099-01-01", "2099-06-01");
    let loc = sandbox.erp.locations()[0].id;
    sandbox.erp.set_stock("SP-FLIPPER-COIL-2550", loc, 1_000_000_000, 0, None);
    let dir = BenchDir::create(source, workflows, &sandbox.base_url("shopify"), &creds)?;
    let daemon = Daemon::start(DaemonOptions {
        paths: dir.paths(),
        data_dir: dir.dir.join("data"),
        state: None,
        listen: None,
        workers: None,
        clock: Arc::new(SystemClock),
        watch: Some(WatchOptions::default()),
    })
    .await
    .context("the daemon did not start")?;
    sandbox.set_webhook_target("shopify", &format!("http://{}/hooks/shopify-orders", daemon.addr));

    // Steady load for the whole run.
    let running = Arc::new(AtomicBool::new(true));
    let load = {
        let (sandbox, running) = (sandbox.clone(), running.clone());
        let customer = sandbox.erp.customers()[0].id;
        tokio::spawn(async move {
            let mut sent = Vec::new();
            let gap = Duration::from_secs_f64(1.0 / f64::from(orders_per_second.max(1)));
            let mut next = tokio::time::Instant::now();
            while running.load(Ordering::Relaxed) {
                let lines = [LineRequest { sku: "SP-FLIPPER-COIL-2550".into(), qty: 1 }];
                let r = sandbox.place_order("shopify", customer, &lines).await;
                sent.push(r.map(|(o, s)| (o.id, s)).unwrap_or((0, 0)));
                next += gap;
                tokio::time::sleep_until(next).await;
            }
            sent
        })
    };

    let rule = dir.dir.join("workflows/rules/amusement-machines.rhai");
    let base = std::fs::read_to_string(&rule)?;
    let mut samples = Vec::with_capacity(reloads);
    for i in 0..reloads {
        let before = daemon.runtime.registry.state().version;
        let started = Instant::now();
        std::fs::write(&rule, format!("{base}\n// reload {i}\n"))?;
        loop {
            if daemon.runtime.registry.state().version > before {
                break;
            }
            anyhow::ensure!(started.elapsed() < Duration::from_secs(10), "reload {i} did not go live within 10 s");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        samples.push(started.elapsed());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    running.store(false, Ordering::Relaxed);
    let sent = load.await?;
    let non_2xx = sent.iter().filter(|(_, s)| !(200..300).contains(s)).count();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut lost = 0;
    for (id, _) in sent.iter().filter(|(id, _)| *id != 0) {
        loop {
            match daemon.runtime.store.order(&format!("shopify-main:{id}"))? {
                Some(o) if o.status != OrderStatus::Received => break,
                _ if Instant::now() > deadline => {
                    lost += 1;
                    break;
                }
                _ => tokio::time::sleep(Duration::from_millis(5)).await,
            }
        }
    }
    daemon.shutdown().await;
    let (p50, p99, max) = percentiles(&mut samples);
    Ok(ReloadReport {
        workflows,
        reloads,
        latency_p50_ms: p50,
        latency_p99_ms: p99,
        latency_max_ms: max,
        orders_sent: sent.len(),
        non_2xx,
        lost,
    })
}
