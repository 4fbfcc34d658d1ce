//! `ordersync stock` and `ordersync waitlist`: the ledger and the waitlist
//! of a running daemon, for purchasing and stock managers.

use std::process::ExitCode;

use serde_json::Value;

use super::client::ApiArgs;

#[derive(clap::Args)]
pub struct StockArgs {
    #[command(flatten)]
    api: ApiArgs,
    /// One SKU in detail (locations, reservations, waitlist, history).
    sku: Option<String>,
    /// History entries to show for one SKU.
    #[arg(long, default_value_t = 20)]
    history: usize,
}

#[derive(clap::Args)]
pub struct WaitlistArgs {
    #[command(flatten)]
    api: ApiArgs,
    /// Only this SKU's line.
    sku: Option<String>,
}

fn s(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

pub async fn stock(args: StockArgs) -> anyhow::Result<ExitCode> {
    let api = args.api.connect()?;
    match args.sku {
        None => {
            let (_, body) = api.get("/api/inventory").await?;
            println!("{:<28} {:>8} {:>8} {:>6} {:>9} {:>8}  master", "sku", "on hand", "reserved", "safety", "available", "incoming");
            for k in body["skus"].as_array().into_iter().flatten() {
                let incoming: i64 = k["incoming"].as_array().into_iter().flatten().filter_map(|i| i["qty"].as_i64()).sum();
                println!(
                    "{:<28} {:>8} {:>8} {:>6} {:>9} {:>8}  {}",
                    s(&k["sku"]),
                    k["on_hand"],
                    k["reserved"],
                    k["safety"],
                    k["available"],
                    incoming,
                    s(&k["master"])
                );
            }
            let t = &body["totals"];
            println!("{} SKUs: {} on hand, {} reserved, {} available", t["skus"], t["on_hand"], t["reserved"], t["available"]);
        }
        Some(sku) => {
            let (status, k) =
                api.get(&format!("/api/inventory/{}?history={}", crate::adapters::template::percent_encode(&sku), args.history)).await?;
            anyhow::ensure!(status == 200, "{}", s(&k["error"]));
            println!(
                "{}: {} on hand, {} reserved, {} safety, {} available (master: {})",
                s(&k["sku"]),
                k["on_hand"],
                k["reserved"],
                k["safety"],
                k["available"],
                s(&k["master"])
            );
            for l in k["locations"].as_array().into_iter().flatten() {
                println!(
                    "  location {:<36} {:>6} on hand, reported by {} at {}",
                    s(&l["location"]),
                    l["on_hand"],
                    s(&l["source"]),
                    s(&l["reported_at"])
                );
            }
            for i in k["incoming"].as_array().into_iter().flatten() {
                println!("  incoming {:>6} due {}", i["qty"], s(&i["eta"]));
            }
            for r in k["reservations"].as_array().into_iter().flatten() {
                println!("  reserved {:>6} by {}", r["qty"], s(&r["order"]));
            }
            for w in k["waitlist"].as_array().into_iter().flatten() {
                println!("  waiting  {} (priority {})", s(&w["order_id"]), w["priority"]);
            }
            println!("  history:");
            for h in k["history"].as_array().into_iter().flatten() {
                println!(
                    "  {:>5} {} {:<9} on hand {:+} → {}, reserved {:+} → {}  {}",
                    h["seq"],
                    s(&h["at"]),
                    s(&h["kind"]),
                    h["on_hand_delta"].as_i64().unwrap_or(0),
                    h["on_hand_after"],
                    h["reserved_delta"].as_i64().unwrap_or(0),
                    h["reserved_after"],
                    s(&h["cause"])
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn waitlist(args: WaitlistArgs) -> anyhow::Result<ExitCode> {
    let api = args.api.connect()?;
    let path = match &args.sku {
        Some(sku) => format!("/api/waitlist?sku={}", crate::adapters::template::percent_encode(sku)),
        None => "/api/waitlist".into(),
    };
    let (_, body) = api.get(&path).await?;
    let list = body["waitlist"].as_array().cloned().unwrap_or_default();
    if list.is_empty() {
        println!("nobody is waiting");
    }
    println!("{:<28} {:>4} {:>8} {:>8}  {:<10} {:<24} reason", "sku", "qty", "priority", "arrival", "order", "customer");
    for w in list {
        println!(
            "{:<28} {:>4} {:>8} {:>8}  {:<10} {:<24} {}",
            s(&w["sku"]),
            w["qty"],
            w["priority"],
            w["arrival"],
            s(&w["number"]),
            s(&w["customer"]),
            s(&w["reason"])
        );
    }
    Ok(ExitCode::SUCCESS)
}
