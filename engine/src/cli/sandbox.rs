//! `ordersync sandbox`: the simulated platforms as a process of their own,
//! for integrators developing a connector and for benchmarks that measure
//! the daemon apart from the platforms it talks to.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use serde_json::json;

use crate::sandbox::erp::seed_amusement_catalogue;
use crate::sandbox::{Sandbox, SandboxOptions};

#[derive(clap::Args)]
pub struct Args {
    /// Listen address (loopback).
    #[arg(long, default_value = "127.0.0.1:9090")]
    listen: String,
    /// Write the simulated accounts' credentials (JSON) to this file.
    #[arg(long)]
    credentials_file: PathBuf,
    /// Where a platform delivers its webhooks: `shopify=http://127.0.0.1:8080/hooks/shopify-orders`.
    #[arg(long = "webhook-target", value_name = "PLATFORM=URL")]
    webhook_targets: Vec<String>,
    /// GraphQL cost points Shopify restores per second (raise it for load tests).
    #[arg(long, default_value_t = 100.0)]
    shopify_restore_rate: f64,
    /// Add this many generated spare parts (SP-GEN-000000 …) with plenty of stock.
    #[arg(long, default_value_t = 0)]
    generated_skus: usize,
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let mut opts = SandboxOptions::generated();
    opts.shopify_limits.restore_per_second = args.shopify_restore_rate;
    opts.shopify_limits.maximum = opts.shopify_limits.maximum.max(args.shopify_restore_rate * 2.0);
    let creds = opts.shopify.clone();
    let hub = opts.arcadehub.clone();
    let listener = tokio::net::TcpListener::bind(&args.listen).await.with_context(|| format!("cannot listen on {}", args.listen))?;
    let sandbox = Sandbox::start(listener, opts).await?;
    let today = time::OffsetDateTime::now_utc().date();
    seed_amusement_catalogue(
        &sandbox.erp,
        &(today + time::Duration::days(10)).to_string(),
        &(today + time::Duration::days(60)).to_string(),
    );
    if args.generated_skus > 0 {
        crate::sandbox::erp::add_generated_products(&sandbox.erp, "SP-GEN-", args.generated_skus, 1_000_000_000);
    }
    for t in &args.webhook_targets {
        let (platform, url) = t.split_once('=').with_context(|| format!("--webhook-target {t}: expected PLATFORM=URL"))?;
        sandbox.set_webhook_target(platform, url);
    }
    let creds_json = json!({
        "addr": sandbox.addr.to_string(),
        "shopify": {"base_url": sandbox.base_url("shopify"), "shop": creds.shop, "access_token": creds.access_token, "webhook_secret": creds.webhook_secret},
        "arcadehub": {"base_url": sandbox.base_url("arcadehub"), "key_id": hub.key_id, "key_secret": hub.key_secret, "webhook_secret": hub.webhook_secret},
    });
    std::fs::write(&args.credentials_file, serde_json::to_vec_pretty(&creds_json)?)?;
    tracing::info!(addr = %sandbox.addr, credentials = %args.credentials_file.display(), "sandbox ready; control API under /_sandbox");
    super::wait_for_stop_signal().await;
    sandbox.stop().await;
    Ok(ExitCode::SUCCESS)
}
