//! Stock ledger benchmarks: reservation throughput with durable commits, and
//! waitlist re-evaluation when stock arrives for a long line of orders.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde::Serialize;

use super::setup::{BenchDir, load_sandbox_options};
use crate::adapters::rules::AllocatedLine;
use crate::clock::SystemClock;
use crate::inventory::InventorySettings;
use crate::inventory::ledger::{self, Effects};
use crate::runtime::daemon::{Daemon, DaemonOptions};
use crate::sandbox::Sandbox;
use crate::sandbox::erp::{LineRequest, seed_amusement_catalogue};
use crate::store::{StockRow, Store};

#[derive(Debug, Serialize)]
pub struct ReserveReport {
    pub reservations: usize,
    pub concurrency: usize,
    pub skus: usize,
    pub seconds: f64,
    pub per_second: f64,
    pub commits: u64,
}

/// `n` reservations from `concurrency` tasks over `skus` SKUs, each a
/// check-and-reserve in the store's serialised writer, durably committed.
pub async fn reserve(n: usize, concurrency: usize, skus: usize) -> anyhow::Result<ReserveReport> {
    let dir = std::env::temp_dir().join(format!("ordersync-bench-reserve-{}-{:x}", std::process::id(), rand::random::<u32>()));
    std::fs::create_dir_all(&dir)?;
    let store = Store::open(&dir.join("state.redb"))?;
    store
        .write(move |w| {
            for i in 0..skus {
                w.put_stock(
                    &format!("SKU-{i:05}"),
                    "main",
                    &StockRow { on_hand: 1_000_000_000, reported_at: String::new(), source: "bench".into() },
                )?;
            }
            Ok(())
        })
        .await?;
    let commits_before = crate::telemetry::metrics::METRICS.counter_commits();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for t in 0..concurrency {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let settings = InventorySettings::default();
            let mut i = t;
            while i < n {
                let sku = format!("SKU-{:05}", i % skus);
                let order = format!("bench:{i}");
                let s = settings.clone();
                store
                    .write(move |w| {
                        let mut effects = Effects::default();
                        let lines = [AllocatedLine { sku, qty: 1 }];
                        ledger::reserve(w, &s, &order, &lines, "2026-01-01T00:00:00Z", &mut effects).map(|r| r.is_ok())
                    })
                    .await?;
                i += concurrency;
            }
            Ok::<_, crate::store::StoreError>(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let took = started.elapsed();
    let commits = crate::telemetry::metrics::METRICS.counter_commits() - commits_before;
    store.close().await;
    drop(store);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(ReserveReport {
        reservations: n,
        concurrency,
        skus,
        seconds: took.as_secs_f64(),
        per_second: n as f64 / took.as_secs_f64(),
        commits,
    })
}

#[derive(Debug, Serialize)]
pub struct WaitlistReport {
    pub waitlisted: usize,
    pub arrived: i64,
    /// From the stock webhook to the last approval's reservation.
    pub approvals_ms: f64,
    /// From the stock webhook to the last approval's write-back at the platform.
    pub written_back_ms: f64,
    pub setup_s: f64,
}

/// `orders` orders wait for one arcade cabinet model; then `arrive` units arrive.
pub async fn waitlist(source: &std::path::Path, orders: usize, arrive: i64) -> anyhow::Result<WaitlistReport> {
    let setup = Instant::now();
    let opts = load_sandbox_options();
    let creds = opts.shopify.clone();
    let sandbox = Arc::new(Sandbox::start(tokio::net::TcpListener::bind("127.0.0.1:0").await?, opts).await?);
    seed_amusement_catalogue(&sandbox.erp, "2099-01-01", "2099-06-01");
    let sku = "AC-OUTRUN-DLX";
    let loc = sandbox.erp.locations()[0].id;
    sandbox.erp.set_stock(sku, loc, 0, orders as i64 * 2, None);
    let dir = BenchDir::create(source, 1, &sandbox.base_url("shopify"), &creds)?;
    std::fs::copy(source.join("workflows/shopify-stock.yaml"), dir.dir.join("workflows/shopify-stock.yaml"))
        .context("copying the stock workflow")?;
    let instance = dir.dir.join("ordersync.yaml");
    let text = std::fs::read_to_string(&instance)?;
    std::fs::write(&instance, format!("{text}    rate_limit:\n      per_second: 1000000000\n      burst: 1000000000\n"))?;
    let daemon = Daemon::start(DaemonOptions {
        paths: dir.paths(),
        data_dir: dir.dir.join("data"),
        state: None,
        listen: None,
        workers: Some(32),
        clock: Arc::new(SystemClock),
        watch: None,
    })
    .await?;
    sandbox.set_webhook_target("shopify", &format!("http://{}/hooks/shopify-orders", daemon.addr));
    sandbox.set_topic_target("shopify", "inventory_levels/update", &format!("http://{}/hooks/shopify-stock", daemon.addr));
    let customers: Vec<u64> = sandbox.erp.customers().iter().map(|c| c.id).collect();
    let mut senders = Vec::new();
    for t in 0..16 {
        let (sandbox, customers) = (sandbox.clone(), customers.clone());
        senders.push(tokio::spawn(async move {
            let mut i = t;
            while i < orders {
                let line = [LineRequest { sku: sku.into(), qty: 1 }];
                sandbox.place_order("shopify", customers[i % customers.len()], &line).await.map_err(anyhow::Error::msg)?;
                i += 16;
            }
            Ok::<_, anyhow::Error>(())
        }));
    }
    for s in senders {
        s.await??;
    }
    let deadline = Instant::now() + Duration::from_secs(600);
    while daemon.runtime.store.waitlist(Some(sku))?.len() < orders {
        anyhow::ensure!(Instant::now() < deadline, "the orders did not all reach the waitlist");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let setup_s = setup.elapsed().as_secs_f64();

    let effects_before = sandbox.erp.effects().iter().filter(|e| e.kind == "tags_add").count();
    let started = Instant::now();
    sandbox.restock(sku, arrive, orders as i64 * 2, None).await.map_err(anyhow::Error::msg)?;
    let mut approvals_ms = 0.0;
    loop {
        if approvals_ms == 0.0 && daemon.runtime.store.reserved_total(sku)? >= arrive {
            approvals_ms = started.elapsed().as_secs_f64() * 1000.0;
        }
        let tagged = sandbox.erp.effects().iter().filter(|e| e.kind == "tags_add").count() - effects_before;
        if approvals_ms > 0.0 && tagged as i64 >= arrive {
            break;
        }
        anyhow::ensure!(Instant::now() < deadline, "the waitlist did not move");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let written_back_ms = started.elapsed().as_secs_f64() * 1000.0;
    daemon.shutdown().await;
    Ok(WaitlistReport { waitlisted: orders, arrived: arrive, approvals_ms, written_back_ms, setup_s })
}
