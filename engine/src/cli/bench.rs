//! `ordersync bench …`: benchmarks against the sandbox on loopback.

use std::process::ExitCode;

use clap::Subcommand;

use super::ConfigArgs;

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    which: Which,
}

#[derive(Subcommand)]
enum Which {
    /// Reload latency and webhook delivery during reloads under steady load.
    Reload {
        #[command(flatten)]
        config: ConfigArgs,
        /// Workflow files in the set (each run also measures nothing else).
        #[arg(long, default_value_t = 24)]
        workflows: usize,
        #[arg(long, default_value_t = 50)]
        reloads: usize,
        /// Steady webhook load while reloading.
        #[arg(long, default_value_t = 200)]
        orders_per_second: u32,
        #[arg(long)]
        json: bool,
    },
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    match args.which {
        Which::Reload { config, workflows, reloads, orders_per_second, json } => {
            let r = crate::bench::reload::run(&config.config_dir, workflows, reloads, orders_per_second).await?;
            if json {
                println!("{}", serde_json::to_string(&r)?);
            } else {
                println!(
                    "reload with {} workflows: {} reloads, latency p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms (file write to live, debounce included); {} webhooks sent during reloads: {} non-2xx, {} lost",
                    r.workflows, r.reloads, r.latency_p50_ms, r.latency_p99_ms, r.latency_max_ms, r.orders_sent, r.non_2xx, r.lost
                );
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
