//! `ordersync demo`: the engine against the built-in sandbox, end to end.
//!
//! Starts the simulated platforms and the daemon on loopback, wires a
//! connection to the sandbox (secrets in temporary files, as `file:`
//! references), sends a stream of amusement-machine orders as signed
//! webhooks, and reports what was decided and what the platform received.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

use super::ConfigArgs;
use crate::clock::SystemClock;
use crate::model::{OrderRecord, OrderStatus, WritebackState};
use crate::runtime::daemon::{Daemon, DaemonOptions};
use crate::sandbox::erp::{LineRequest, seed_amusement_catalogue};
use crate::sandbox::{Sandbox, SandboxOptions};

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    config: ConfigArgs,
    /// Leave the daemon and the sandbox running after the report (Ctrl-C stops them).
    #[arg(long)]
    keep_running: bool,
}

/// One scripted order: customer index, lines.
const SCRIPT: &[(usize, &[(&str, i64)])] = &[
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

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let paths = args.config.paths();
    if !paths.connectors_dir().is_dir() || !paths.workflows_dir().is_dir() {
        bail!("{} has no connectors.d/ and workflows/; run the demo from the repository root or pass --config-dir", paths.dir.display());
    }
    let work = std::env::temp_dir().join(format!("ordersync-demo-{}", std::process::id()));
    std::fs::create_dir_all(&work)?;
    let result = demo(&args, paths.dir.clone(), &work).await;
    let _ = std::fs::remove_dir_all(&work);
    result
}

async fn demo(args: &Args, config_dir: PathBuf, work: &std::path::Path) -> anyhow::Result<ExitCode> {
    let today: time::Date = time::OffsetDateTime::now_utc().date();
    let in_days = |n: i64| -> String { (today + time::Duration::days(n)).to_string() };
    let opts = SandboxOptions::generated();
    let creds = opts.shopify.clone();
    let sandbox = Sandbox::start(tokio::net::TcpListener::bind("127.0.0.1:0").await?, opts).await?;
    seed_amusement_catalogue(&sandbox.erp, &in_days(10), &in_days(60));

    // The instance config a real installation would write, pointed at the sandbox.
    let secret = |name: &str, value: &str| -> anyhow::Result<String> {
        let p = work.join(name);
        std::fs::write(&p, value)?;
        Ok(format!("file:{}", p.display()))
    };
    let instance = work.join("ordersync.yaml");
    let admin_token = crate::sandbox::random_hex(16);
    std::fs::write(
        &instance,
        format!(
            "listen: 127.0.0.1:0\nadmin_token: {}\nconnections:\n  shopify-main:\n    connector: shopify\n    base_url: {}\n    values:\n      shop: {}\n    secrets:\n      access_token: {}\n      webhook_secret: {}\n",
            secret("admin-token", &admin_token)?,
            sandbox.base_url("shopify"),
            creds.shop,
            secret("shopify-access-token", &creds.access_token)?,
            secret("shopify-webhook-secret", &creds.webhook_secret)?,
        ),
    )?;
    let daemon = Daemon::start(DaemonOptions {
        paths: crate::config::ConfigPaths::new(config_dir, Some(instance)),
        data_dir: work.join("data"),
        state: None,
        listen: None,
        workers: None,
        clock: Arc::new(SystemClock),
        watch: None,
    })
    .await
    .context("the daemon did not start")?;
    sandbox.set_webhook_target("shopify", &format!("http://{}/hooks/shopify-orders", daemon.addr));
    println!("ordersync demo: daemon on http://{}, sandbox on http://{}\n", daemon.addr, sandbox.addr);

    let customers = sandbox.erp.customers();
    let started = Instant::now();
    let mut placed = Vec::new();
    for (who, lines) in SCRIPT {
        let lines: Vec<LineRequest> = lines.iter().map(|(sku, qty)| LineRequest { sku: sku.to_string(), qty: *qty }).collect();
        let (order, status) = sandbox.place_order("shopify", customers[*who].id, &lines).await.map_err(anyhow::Error::msg)?;
        if status != 200 {
            bail!("the daemon answered {status} to the webhook of order #{}", order.number);
        }
        // One at a time, so the stock each order meets is easy to follow.
        wait_final(&daemon, &format!("shopify-main:{}", order.id)).await?;
        placed.push(order);
    }
    // A platform retry of the first delivery: acknowledged, not processed again.
    let redelivery = sandbox.redeliver(placed[0].id).await.map_err(anyhow::Error::msg)?;
    let elapsed = started.elapsed();

    let mut report = String::new();
    let _ = writeln!(report, "{:<7} {:<30} {:<44} {:<10} reason", "order", "customer", "lines", "decision");
    let mut counts = std::collections::BTreeMap::new();
    for o in &placed {
        let rec = daemon.runtime.store.order(&format!("shopify-main:{}", o.id))?.context("order missing")?;
        *counts.entry(rec.status.as_str()).or_insert(0) += 1;
        let who = if o.customer.company.is_empty() {
            format!("{} {}", o.customer.first_name, o.customer.last_name)
        } else {
            o.customer.company.clone()
        };
        let lines: Vec<String> = o.lines.iter().map(|l| format!("{}×{}", l.qty, l.sku)).collect();
        let _ = writeln!(
            report,
            "#{:<6} {:<30} {:<44} {:<10} {}",
            o.number,
            clip(&who, 30),
            clip(&lines.join(" "), 44),
            rec.status.as_str(),
            rec.reason
        );
    }
    println!("{report}");
    println!("What Shopify received:");
    for o in &placed {
        let Some(s) = sandbox.erp.order(o.id) else {
            continue;
        };
        let mut what = Vec::new();
        if !s.tags.is_empty() {
            what.push(format!("tags {}", s.tags.iter().cloned().collect::<Vec<_>>().join(",")));
        }
        for h in &s.holds {
            what.push(format!("fulfillment hold ({})", h.reason));
        }
        if let Some(r) = &s.cancel_reason {
            what.push(format!("cancelled ({r}), restocked"));
        }
        println!("  #{:<6} {}", s.number, what.join("; "));
    }
    let effects = sandbox.erp.effects().len();
    let attempts: u32 = sandbox.erp.attempts().values().sum();
    println!(
        "\n{} orders in {:.2}s: {} approved, {} waitlisted, {} rejected. {} write-back effects ({} requests). Redelivery of #{} answered {} and was not processed again.",
        placed.len(),
        elapsed.as_secs_f64(),
        counts.get("approved").unwrap_or(&0),
        counts.get("waitlisted").unwrap_or(&0),
        counts.get("rejected").unwrap_or(&0),
        effects,
        attempts,
        placed[0].number,
        redelivery
    );
    let all_three = ["approved", "waitlisted", "rejected"].iter().all(|k| counts.contains_key(k));
    let errors = counts.get("error").copied().unwrap_or(0);

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

fn clip(s: &str, n: usize) -> String {
    if s.chars().count() <= n { s.to_string() } else { format!("{}…", s.chars().take(n - 1).collect::<String>()) }
}

/// Wait until the order is decided and its write-back is over.
async fn wait_final(daemon: &Daemon, id: &str) -> anyhow::Result<OrderRecord> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(rec) = daemon.runtime.store.order(id)? {
            if rec.status != OrderStatus::Received && rec.writeback != WritebackState::Pending {
                return Ok(rec);
            }
        }
        if Instant::now() > deadline {
            bail!("order {id} was not finished within 30 s");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
