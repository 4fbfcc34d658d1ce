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
    /// Reservations per second through the store's serialised, durable writer.
    Reserve {
        #[arg(long, default_value_t = 50_000)]
        reservations: usize,
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
        #[arg(long, default_value_t = 100)]
        skus: usize,
        #[arg(long)]
        json: bool,
    },
    /// A long waitlist, one stock arrival: how soon the approvals happen.
    Waitlist {
        #[command(flatten)]
        config: ConfigArgs,
        #[arg(long, default_value_t = 10_000)]
        orders: usize,
        /// Units that arrive.
        #[arg(long, default_value_t = 100)]
        arrive: i64,
        #[arg(long)]
        json: bool,
    },
    /// Orders end to end through separate daemon and sandbox processes.
    E2e {
        #[command(flatten)]
        config: ConfigArgs,
        /// Orders to send.
        #[arg(long, default_value_t = 20_000)]
        orders: usize,
        /// Send for this many seconds instead of a fixed count (with
        /// `--rate`: the rate times this many orders).
        #[arg(long)]
        seconds: Option<u64>,
        /// Concurrent webhook senders.
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
        /// Offer this many orders per second (open loop, at most
        /// `--concurrency` in flight) instead of sending again as soon as
        /// each webhook is answered.
        #[arg(long)]
        rate: Option<f64>,
        /// Workflows loaded (orders go to one of them).
        #[arg(long, default_value_t = 1)]
        workflows: usize,
        /// SKUs the orders draw from (and the ledger grows to).
        #[arg(long, default_value_t = 100)]
        skus: usize,
        /// Past orders written into the state file first.
        #[arg(long, default_value_t = 0)]
        past_orders: usize,
        /// Daemon workers.
        #[arg(long)]
        workers: Option<usize>,
        #[arg(long)]
        json: bool,
    },
    /// The hot steps one at a time: signature check, mapping, template
    /// rendering, JSONPath extraction, the rule, a reservation commit, group commits.
    Steps {
        #[command(flatten)]
        config: ConfigArgs,
        /// Seconds each step runs for.
        #[arg(long, default_value_t = 1.0)]
        seconds_per_step: f64,
        #[arg(long)]
        json: bool,
    },
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
        Which::Reserve { reservations, concurrency, skus, json } => {
            let r = crate::bench::stock::reserve(reservations, concurrency, skus).await?;
            if json {
                println!("{}", serde_json::to_string(&r)?);
            } else {
                println!(
                    "{} reservations from {} tasks over {} SKUs in {:.2} s: {:.0} reservations/s, {} durable commits ({:.1} per commit)",
                    r.reservations,
                    r.concurrency,
                    r.skus,
                    r.seconds,
                    r.per_second,
                    r.commits,
                    r.reservations as f64 / r.commits.max(1) as f64
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Which::Waitlist { config, orders, arrive, json } => {
            let r = crate::bench::stock::waitlist(&config.config_dir, orders, arrive).await?;
            if json {
                println!("{}", serde_json::to_string(&r)?);
            } else {
                println!(
                    "{} orders waitlisted ({:.1} s to set up); {} units arrive: all reserved after {:.0} ms, all written back after {:.0} ms",
                    r.waitlisted, r.setup_s, r.arrived, r.approvals_ms, r.written_back_ms
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Which::E2e { config, orders, seconds, concurrency, rate, workflows, skus, past_orders, workers, json } => {
            let r = crate::bench::e2e::run(crate::bench::e2e::E2eOptions {
                source: config.config_dir,
                orders,
                seconds,
                concurrency,
                rate,
                workflows,
                skus,
                past_orders,
                workers,
            })
            .await?;
            if json {
                println!("{}", serde_json::to_string(&r)?);
            } else {
                println!(
                    "{} orders ({} lines each), {} senders, {} workflows, {} SKUs, {} past orders, {} cores",
                    r.orders, r.lines_per_order, r.concurrency, r.workflows, r.skus, r.past_orders, r.cores
                );
                if let Some(rate) = r.offered_orders_per_s {
                    println!("  offered         {rate:.0} orders/s, open loop: latencies count from each order's turn");
                }
                println!(
                    "  throughput      {:.0} orders/s end to end ({:.1} s sending, {} incomplete, {} non-2xx)",
                    r.orders_per_s, r.sending_s, r.incomplete, r.non_2xx
                );
                println!("  webhook ack     p50 {:.2} ms, p99 {:.2} ms, max {:.1} ms", r.ack_p50_ms, r.ack_p99_ms, r.ack_max_ms);
                println!("  end to end      p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms", r.e2e_p50_ms, r.e2e_p99_ms, r.e2e_max_ms);
                println!(
                    "  daemon CPU      {:.3} ms per order, i.e. {:.3} s per 1,000 orders ({:.1} s in all)",
                    r.daemon_cpu_ms_per_order, r.daemon_cpu_ms_per_order, r.daemon_cpu_s
                );
                println!(
                    "  daemon memory   {:.1} MB idle, {:.1} MB peak; ready {:.0} ms after start",
                    r.daemon_idle_rss_mb, r.daemon_peak_rss_mb, r.start_to_ready_ms
                );
                println!(
                    "  others' CPU     sandbox {:.3} ms per order, load generator {:.3} ms per order ({})",
                    r.sandbox_cpu_ms_per_order,
                    r.loadgen_cpu_ms_per_order,
                    if r.orders_made_ahead { "orders placed before the clock started" } else { "orders placed while the run went on" }
                );
                println!(
                    "  durable commits {} ({:.1} writes each, {:.1} KB written per order): {}",
                    r.store_commits, r.store_jobs_per_commit, r.daemon_written_kb_per_order, r.commit_strategy
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Which::Steps { config, seconds_per_step, json } => {
            let r = crate::bench::steps::steps(&config.config_dir, std::time::Duration::from_secs_f64(seconds_per_step)).await?;
            if json {
                println!("{}", serde_json::to_string(&r)?);
            } else {
                for s in &r.steps {
                    println!("{:>10.2} µs/op  {:>9} ops  {}", s.micros_per_op, s.iterations, s.step);
                }
            }
            Ok(ExitCode::SUCCESS)
        }
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
