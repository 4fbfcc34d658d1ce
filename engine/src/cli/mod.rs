//! The `ordersync` command line: one subcommand per file.

mod bench;
mod client;
mod demo;
mod dlq;
mod reload;
mod rules;
mod run;
mod sandbox;
mod schema;
mod status;
mod stock;
mod test;
mod validate;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::telemetry::{self, LogFormat};

#[derive(Parser)]
#[command(name = "ordersync", version, about = "Keeps order intake, inventory and back-end systems in step across sales platforms")]
struct Cli {
    /// Log format.
    #[arg(long, global = true, value_enum, default_value = "text")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

/// Where the config lives; shared by every subcommand that reads it.
#[derive(clap::Args, Clone)]
pub struct ConfigArgs {
    /// Directory holding connectors.d/ and workflows/.
    #[arg(long, default_value = ".", env = "ORDERSYNC_CONFIG_DIR")]
    pub config_dir: PathBuf,
    /// Instance config (connections, listener). Default: <config-dir>/ordersync.yaml,
    /// or <config-dir>/examples/ordersync.yaml when that is absent.
    #[arg(long, env = "ORDERSYNC_INSTANCE")]
    pub instance: Option<PathBuf>,
}

impl ConfigArgs {
    pub fn paths(&self) -> crate::config::ConfigPaths {
        crate::config::ConfigPaths::new(&self.config_dir, self.instance.clone())
    }
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon.
    Run(run::Args),
    /// Check the whole config set; print every error, or a one-line summary.
    Validate(validate::Args),
    /// Run workflow test files (workflows/tests/*.test.yaml) offline.
    Test(test::Args),
    /// Try a rule on orders, or compare two versions of it.
    Rules(rules::Args),
    /// Write the JSON Schemas of the config files (for editors).
    Schema(schema::Args),
    /// Run the engine against the built-in sandbox with a stream of sample orders.
    Demo(demo::Args),
    /// Serve the simulated platforms on their own (for integrators and benchmarks).
    Sandbox(sandbox::Args),
    /// Ask a running daemon to load its config files again.
    Reload(reload::Args),
    /// Show what a running daemon is doing.
    Status(status::Args),
    /// Benchmarks against the built-in sandbox.
    Bench(bench::Args),
    /// Inspect, replay or drop write-backs that ran out of retries.
    Dlq(dlq::Args),
    /// Stock per SKU as the ledger sees it (or one SKU with its history).
    Stock(stock::StockArgs),
    /// Orders waiting for stock, in the order they will be served.
    Waitlist(stock::WaitlistArgs),
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match &cli.command {
        Command::Validate(_) | Command::Test(_) | Command::Rules(_) if std::env::var_os("RUST_LOG").is_none() => {}
        // The demo prints its own report; only warnings and errors are logged.
        Command::Demo(_) | Command::Bench(_) => telemetry::init_logging_with(cli.log_format, "warn"),
        _ => telemetry::init_logging(cli.log_format),
    }
    let result = match cli.command {
        Command::Validate(a) => return validate::run(a),
        Command::Test(a) => return test::run(a),
        Command::Schema(a) => match schema::run(a) {
            Ok(code) => return code,
            Err(e) => {
                eprintln!("error: {e:#}");
                return ExitCode::FAILURE;
            }
        },
        Command::Rules(a) => match rules::run(a) {
            Ok(code) => return code,
            Err(e) => {
                eprintln!("error: {e:#}");
                return ExitCode::FAILURE;
            }
        },
        Command::Run(a) => runtime().block_on(run::run(a)),
        Command::Demo(a) => runtime().block_on(demo::run(a)),
        Command::Sandbox(a) => runtime().block_on(sandbox::run(a)),
        Command::Reload(a) => runtime().block_on(reload::run(a)),
        Command::Status(a) => runtime().block_on(status::run(a)),
        Command::Bench(a) => runtime().block_on(bench::run(a)),
        Command::Dlq(a) => runtime().block_on(dlq::run(a)),
        Command::Stock(a) => runtime().block_on(stock::stock(a)),
        Command::Waitlist(a) => runtime().block_on(stock::waitlist(a)),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("the tokio runtime starts")
}

/// Until SIGTERM or Ctrl-C.
pub(crate) async fn wait_for_stop_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler installs");
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
