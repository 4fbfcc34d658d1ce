//! `ordersync dlq`: write-back steps that ran out of retries, for an
//! operator to inspect, send again (same idempotency key) or give up on.

use std::process::ExitCode;

use clap::Subcommand;
use serde_json::Value;

use super::client::ApiArgs;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    api: ApiArgs,
    #[command(subcommand)]
    action: Action,
}

#[derive(Subcommand)]
enum Action {
    /// Every dead letter, oldest first.
    List,
    /// One dead letter with its order and write-back progress.
    Show { id: u64 },
    /// Send the step again (and the steps after it); `--all` replays every one.
    Replay {
        id: Option<u64>,
        #[arg(long, conflicts_with = "id")]
        all: bool,
    },
    /// Give up on the step: nothing more is sent for that decision.
    Drop { id: u64 },
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let api = args.api.connect()?;
    match args.action {
        Action::List => {
            let (_, body) = api.get("/api/dead-letters").await?;
            let list = body["dead_letters"].as_array().cloned().unwrap_or_default();
            if list.is_empty() {
                println!("no dead letters");
            }
            for d in list {
                println!(
                    "{:>5}  {:<28} {:<9} {:<24} {}  {}",
                    d["id"],
                    s(&d["order_id"]),
                    s(&d["decision"]),
                    s(&d["step"]),
                    s(&d["at"]),
                    s(&d["error"])
                );
            }
        }
        Action::Show { id } => {
            let (status, body) = api.get(&format!("/api/dead-letters/{id}")).await?;
            anyhow::ensure!(status == 200, "{}", s(&body["error"]));
            println!("{}", serde_json::to_string_pretty(&body)?);
        }
        Action::Replay { id, all } => {
            let ids: Vec<u64> = match (id, all) {
                (Some(id), _) => vec![id],
                (None, true) => api.get("/api/dead-letters").await?.1["dead_letters"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|d| d["id"].as_u64())
                    .collect(),
                (None, false) => anyhow::bail!("name a dead letter, or --all"),
            };
            let mut failed = 0;
            for id in ids {
                let (status, body) = api.post(&format!("/api/dead-letters/{id}/replay"), None).await?;
                anyhow::ensure!(status == 200, "dead letter {id}: {}", s(&body["error"]));
                let wb = s(&body["order"]["writeback"]);
                println!("{id}: {} write-back {wb}", s(&body["order"]["order"]["id"]));
                failed += usize::from(wb != "done");
            }
            if failed > 0 {
                eprintln!("{failed} replay(s) failed again; see `ordersync dlq list`");
                return Ok(ExitCode::FAILURE);
            }
        }
        Action::Drop { id } => {
            let (status, body) = api.delete(&format!("/api/dead-letters/{id}")).await?;
            anyhow::ensure!(status == 200, "{}", s(&body["error"]));
            println!("dropped {id}: {} {}", s(&body["dropped"]["order_id"]), s(&body["dropped"]["step"]));
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn s(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}
