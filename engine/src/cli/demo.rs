//! `ordersync demo`: the engine against the built-in sandbox, end to end.
//!
//! Starts the simulated platforms and the daemon on loopback and connects the
//! daemon to every platform that ships an order workflow (or the ones named
//! with `--platform`), the way a real installation would: secrets in files
//! referenced as `file:`, Shopify's warehouse as the stock master for the
//! machines. Orders are placed on each platform (delivered as signed
//! webhooks, or picked up by the platform's poll, which the demo's copy of
//! the config runs every second), and the report shows each decision and
//! what the platform received.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

use super::ConfigArgs;
use crate::clock::SystemClock;
use crate::model::{OrderRecord, OrderStatus, WritebackState};
use crate::runtime::daemon::{Daemon, DaemonOptions};
use crate::sandbox::erp::{Effect, LineRequest, SimOrder, seed_amusement_catalogue};
use crate::sandbox::{Sandbox, SandboxOptions};

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    config: ConfigArgs,
    /// Only these platforms (e.g. `--platform woocommerce,amazon`); default: every platform with an order workflow.
    #[arg(long, value_delimiter = ',')]
    platform: Vec<String>,
    /// Leave the daemon and the sandbox running after the report (Ctrl-C stops them).
    #[arg(long)]
    keep_running: bool,
}

type Script = &'static [(usize, &'static [(&'static str, i64)])];

/// Shopify's orders: customer index, lines. Shopify goes first and longest:
/// its orders draw the machines down, so later ones meet short stock.
const SHOPIFY_SCRIPT: Script = &[
    (0, &[("PB-STERN-GODZ-PRO", 1), ("SP-FLIPPER-COIL-2550", 4)]),
    (2, &[("CC-CLAW-MINI", 1)]),
    (1, &[("PB-STERN-JAWS-PREM", 2)]),
    (3, &[("AC-SF2-CAB-2P", 1), ("BD-JAMMA-60IN1", 2)]),
    (2, &[("PB-JJP-ELTON-CE", 1)]),
    (1, &[("SP-COIN-MECH-EU", 10)]),
    (0, &[("PB-STERN-GODZ-PRO", 2)]),
    (2, &[("PB-STERN-GODZ-PRO", 1)]),
    (3, &[("AC-OUTRUN-DLX", 1)]),
    (1, &[("SP-LED-GI-WW", 5)]),
    (0, &[("CC-CLAW-42", 2)]),
    (2, &[("BD-JAMMA-60IN1", 1), ("SP-FLIPPER-COIL-2550", 2)]),
    (1, &[("AC-SF2-CAB-2P", 1)]),
    (3, &[("AC-SF2-CAB-2P", 1)]),
];

/// Every other platform: boards and parts in stock, a cabinet that is on its
/// way, a discontinued crane. Each first line's SKU tells the orders apart.
const PLATFORM_SCRIPT: Script =
    &[(0, &[("BD-JAMMA-60IN1", 1), ("SP-FLIPPER-COIL-2550", 2)]), (1, &[("AC-OUTRUN-DLX", 1)]), (2, &[("CC-CLAW-MINI", 1)])];

/// Machines the warehouse counts before the orders come in: what is on its
/// way (which most shops do not report) and what is gone (which a
/// marketplace listing may not show yet).
const WAREHOUSE_COUNT: &[&str] = &["PB-STERN-JAWS-PREM", "PB-JJP-ELTON-CE", "AC-OUTRUN-DLX", "CC-CLAW-MINI"];

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let paths = args.config.paths();
    if !paths.connectors_dir().is_dir() || !paths.workflows_dir().is_dir() {
        bail!("{} has no connectors.d/ and workflows/; run the demo from the repository root or pass --config-dir", paths.dir.display());
    }
    let work = std::env::temp_dir().join(format!("ordersync-demo-{}", std::process::id()));
    std::fs::create_dir_all(&work)?;
    let result = demo(&args, &paths.dir, &work).await;
    let _ = std::fs::remove_dir_all(&work);
    result
}

async fn demo(args: &Args, config_dir: &Path, work: &Path) -> anyhow::Result<ExitCode> {
    let today: time::Date = time::OffsetDateTime::now_utc().date();
    let in_days = |n: i64| -> String { (today + time::Duration::days(n)).to_string() };
    let sandbox = Sandbox::start(tokio::net::TcpListener::bind("127.0.0.1:0").await?, SandboxOptions::generated()).await?;
    seed_amusement_catalogue(&sandbox.erp, &in_days(10), &in_days(60));

    let platforms = choose_platforms(&args.platform, &sandbox, config_dir)?;
    let config = work.join("config");
    copy_config(config_dir, &config, &platforms)?;

    // The instance config a real installation would write, pointed at the sandbox.
    let mut secret = |name: &str, value: &str| -> String {
        let p = work.join(name);
        // A failed write surfaces as the daemon's missing-secret error.
        let _ = std::fs::write(&p, value);
        format!("file:{}", p.display())
    };
    let admin_token = crate::sandbox::random_hex(16);
    let mut instance = format!("listen: 127.0.0.1:0\nadmin_token: {}\nconnections:\n", secret("admin-token", &admin_token));
    for p in std::iter::once("shopify").chain(platforms.iter().map(String::as_str).filter(|p| *p != "shopify")) {
        let entry = sandbox.connection_yaml(p, &format!("{p}-main"), &mut secret).context("a simulated platform")?;
        instance.push_str(&entry);
    }
    instance.push_str("inventory:\n  masters:\n    - connection: shopify-main\n      skus: [\"PB-*\", \"AC-*\", \"CC-*\"]\n");
    let instance_path = work.join("ordersync.yaml");
    std::fs::write(&instance_path, instance)?;

    let daemon = Daemon::start(DaemonOptions {
        paths: crate::config::ConfigPaths::new(config.clone(), Some(instance_path)),
        data_dir: work.join("data"),
        state: None,
        listen: None,
        workers: None,
        clock: Arc::new(SystemClock),
        watch: None,
    })
    .await
    .context("the daemon did not start")?;
    let hook = |workflow: &str| format!("http://{}/hooks/{workflow}", daemon.addr);
    for p in &platforms {
        sandbox.set_webhook_target(p, &hook(&format!("{p}-orders")));
    }
    sandbox.set_topic_target("shopify", "inventory_levels/update", &hook("shopify-stock"));
    println!("ordersync demo: daemon on http://{}, sandbox on http://{}", daemon.addr, sandbox.addr);
    println!("platforms: {}\n", platforms.join(", "));

    // The warehouse's count: orders on every channel are decided against it.
    for sku in WAREHOUSE_COUNT {
        if let Some((_, level)) = sandbox.erp.levels(sku).into_iter().next() {
            sandbox.restock(sku, level.on_hand, level.incoming, level.incoming_eta.as_deref()).await.map_err(anyhow::Error::msg)?;
        }
    }
    wait_for_count(&daemon, WAREHOUSE_COUNT).await?;

    let started = Instant::now();
    let mut totals: BTreeMap<&'static str, usize> = BTreeMap::new();
    let mut placed_total = 0;
    for platform in &platforms {
        let script = if platform == "shopify" { SHOPIFY_SCRIPT } else { PLATFORM_SCRIPT };
        let placed = place_script(&sandbox, &daemon, platform, script).await?;
        placed_total += placed.len();
        let mut report = String::new();
        let polled = !placed.is_empty() && placed[0].1.is_none();
        let _ = writeln!(report, "== {platform} ({}) ==", if polled { "polled" } else { "webhooks" });
        let _ = writeln!(report, "{:<9} {:<30} {:<44} {:<10} reason", "order", "customer", "lines", "decision");
        let effects = sandbox.erp.effects();
        for (order, rec) in placed.iter().map(|(o, _)| o).zip(finished_in_order(&daemon, platform, &placed).await?) {
            *totals.entry(rec.status.as_str()).or_insert(0) += 1;
            let who = if order.customer.company.is_empty() {
                format!("{} {}", order.customer.first_name, order.customer.last_name)
            } else {
                order.customer.company.clone()
            };
            let lines: Vec<String> = order.lines.iter().map(|l| format!("{}×{}", l.qty, l.sku)).collect();
            let _ = writeln!(
                report,
                "#{:<8} {:<30} {:<44} {:<10} {}",
                order.number,
                clip(&who, 30),
                clip(&lines.join(" "), 44),
                rec.status.as_str(),
                rec.reason
            );
            let _ = writeln!(report, "          {platform} received: {}", received(&effects, platform, order.id));
        }
        println!("{report}");
    }
    // A platform retry of Shopify's first delivery: acknowledged, not processed again.
    let redelivered = match sandbox.erp.orders().into_iter().find(|o| o.platform == "shopify") {
        Some(first) => format!(
            " A redelivery of Shopify order #{} was answered {} and not processed again.",
            first.number,
            sandbox.redeliver(first.id).await.map_err(anyhow::Error::msg)?
        ),
        None => String::new(),
    };
    let attempts: u32 = sandbox.erp.attempts().values().sum();
    println!(
        "{placed_total} orders on {} platform(s) in {:.2}s: {} approved, {} waitlisted, {} rejected. {} write-back effects ({attempts} requests).{redelivered}",
        platforms.len(),
        started.elapsed().as_secs_f64(),
        totals.get("approved").unwrap_or(&0),
        totals.get("waitlisted").unwrap_or(&0),
        totals.get("rejected").unwrap_or(&0),
        sandbox.erp.effects().len(),
    );
    let all_three = ["approved", "waitlisted", "rejected"].iter().all(|k| totals.contains_key(k));
    let errors = totals.get("error").copied().unwrap_or(0);

    if args.keep_running {
        println!("\nStill running. Admin API: http://{}/api/status with `Authorization: Bearer {admin_token}`. Ctrl-C stops.", daemon.addr);
        let _ = tokio::signal::ctrl_c().await;
    }
    daemon.shutdown().await;
    sandbox.stop().await;
    if errors > 0 || !all_three {
        eprintln!("demo failed: {errors} order(s) in error; every decision type seen: {all_three}");
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

/// The platforms asked for, or every simulated one with a shipped order workflow.
fn choose_platforms(asked: &[String], sandbox: &Sandbox, config_dir: &Path) -> anyhow::Result<Vec<String>> {
    let has_workflow = |p: &str| config_dir.join("workflows").join(format!("{p}-orders.yaml")).is_file();
    let available: Vec<String> = sandbox.platforms().into_iter().filter(|p| has_workflow(p)).map(str::to_string).collect();
    if asked.is_empty() {
        // Shopify first: its longer script draws the machines down.
        let mut all = available;
        all.sort_by_key(|p| (p != "shopify", p.clone()));
        return Ok(all);
    }
    for p in asked {
        if !available.contains(p) {
            bail!("no platform `{p}` in the demo; choose from {}", available.join(", "));
        }
    }
    Ok(asked.to_vec())
}

/// The shipped connectors and the chosen platforms' workflows, with order
/// polls every second so the demo does not wait minutes for a poll.
fn copy_config(from: &Path, to: &Path, platforms: &[String]) -> anyhow::Result<()> {
    let connectors = to.join("connectors.d");
    std::fs::create_dir_all(&connectors)?;
    for e in std::fs::read_dir(from.join("connectors.d"))? {
        let e = e?;
        std::fs::copy(e.path(), connectors.join(e.file_name()))?;
    }
    let workflows = to.join("workflows");
    std::fs::create_dir_all(workflows.join("rules"))?;
    for e in std::fs::read_dir(from.join("workflows/rules"))? {
        let e = e?;
        std::fs::copy(e.path(), workflows.join("rules").join(e.file_name()))?;
    }
    let mut names: Vec<String> = platforms.iter().map(|p| format!("{p}-orders.yaml")).collect();
    names.push("shopify-stock.yaml".into());
    for name in names {
        let text = std::fs::read_to_string(from.join("workflows").join(&name)).with_context(|| format!("reading workflows/{name}"))?;
        let text: Vec<String> =
            text.lines().map(|l| if l.trim_start().starts_with("every:") { "    every: 1s".to_string() } else { l.to_string() }).collect();
        std::fs::write(workflows.join(&name), text.join("\n") + "\n")?;
    }
    Ok(())
}

/// Place a platform's orders one at a time, each finished before the next
/// (so the stock each order meets is easy to follow). Returns each order
/// with the webhook's status, or `None` for a polled platform.
async fn place_script(sandbox: &Sandbox, daemon: &Daemon, platform: &str, script: Script) -> anyhow::Result<Vec<(SimOrder, Option<u16>)>> {
    let customers = sandbox.erp.customers();
    let mut placed = Vec::new();
    for (who, lines) in script {
        let lines: Vec<LineRequest> = lines.iter().map(|(sku, qty)| LineRequest { sku: sku.to_string(), qty: *qty }).collect();
        let (order, status) = sandbox.place_order(platform, customers[*who].id, &lines).await.map_err(anyhow::Error::msg)?;
        if status != 0 && !(200..300).contains(&status) {
            bail!("the daemon answered {status} to the {platform} webhook of order #{}", order.number);
        }
        placed.push((order, (status != 0).then_some(status)));
        finished_in_order(daemon, platform, &placed).await?;
    }
    Ok(placed)
}

/// The daemon's records of `placed`, once all are decided and written back.
/// Platforms number orders their own way, so an order is recognised by its
/// connection and its first line's SKU among those not yet matched.
async fn finished_in_order(daemon: &Daemon, platform: &str, placed: &[(SimOrder, Option<u16>)]) -> anyhow::Result<Vec<OrderRecord>> {
    let connection = format!("{platform}-main");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut mine: Vec<OrderRecord> =
            daemon.runtime.store.orders(None, 100_000)?.into_iter().filter(|r| r.order.connection == connection).collect();
        mine.sort_by_key(|r| r.arrival);
        let finished = mine.iter().all(|r| r.status != OrderStatus::Received && r.writeback != WritebackState::Pending);
        if finished && mine.len() >= placed.len() {
            let mut out = Vec::new();
            for (order, _) in placed {
                let first = order.lines.first().map(|l| l.sku.as_str());
                let at = mine.iter().position(|r| r.order.lines.first().map(|l| l.sku.as_str()) == first);
                out.push(mine.remove(at.context("an order the daemon never recorded")?));
            }
            return Ok(out);
        }
        if Instant::now() > deadline {
            bail!("{platform} orders were not finished within 30 s");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Wait until the ledger holds the stock master's count of `skus`.
async fn wait_for_count(daemon: &Daemon, skus: &[&str]) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !skus.iter().all(|sku| daemon.runtime.store.stock(sku).is_ok_and(|rows| !rows.is_empty())) {
        if Instant::now() > deadline {
            bail!("the stock master's count did not reach the ledger within 30 s");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(())
}

/// What the platform recorded for one order, in short.
fn received(effects: &[Effect], platform: &str, order: u64) -> String {
    let mine: Vec<String> = effects
        .iter()
        .filter(|e| e.platform == platform && e.order == Some(order))
        .map(|e| if e.detail.is_null() { e.kind.clone() } else { format!("{} {}", e.kind, clip(&e.detail.to_string(), 70)) })
        .collect();
    if mine.is_empty() { "nothing (the platform has no such state)".to_string() } else { mine.join("; ") }
}

fn clip(s: &str, n: usize) -> String {
    if s.chars().count() <= n { s.to_string() } else { format!("{}…", s.chars().take(n - 1).collect::<String>()) }
}
