//! `ordersync status`: what a running daemon is doing.

use std::process::ExitCode;

use super::client::ApiArgs;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    api: ApiArgs,
    /// Print the raw JSON.
    #[arg(long)]
    json: bool,
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let (_, s) = args.api.connect()?.get("/api/status").await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&s)?);
        return Ok(ExitCode::SUCCESS);
    }
    let c = &s["config"];
    println!(
        "config version {} (hash {}), loaded {}",
        c["version"],
        c["hash"].as_str().unwrap_or("").get(..12).unwrap_or(""),
        c["loaded_at"].as_str().unwrap_or("")
    );
    if c["last_result"] == "error" {
        println!("last reload ({}) was rejected:", c["last_cause"].as_str().unwrap_or(""));
        for e in c["last_errors"].as_array().into_iter().flatten() {
            println!("  {}", e.as_str().unwrap_or(""));
        }
    }
    println!(
        "orders {}, queued events {}, pending write-backs {}, dead letters {}",
        s["orders"], s["queue_depth"], s["outbox_pending"], s["dead_letters"]
    );
    for w in s["workflows"].as_array().into_iter().flatten() {
        println!(
            "  {:<28} {:<16} {}",
            w["name"].as_str().unwrap_or(""),
            w["connection"].as_str().unwrap_or(""),
            w["trigger"].as_str().unwrap_or("")
        );
    }
    Ok(ExitCode::SUCCESS)
}
