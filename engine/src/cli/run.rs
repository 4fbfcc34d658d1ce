//! `ordersync run`: the daemon, until SIGTERM or Ctrl-C.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use super::ConfigArgs;
use crate::clock::SystemClock;
use crate::reload::watcher::WatchOptions;
use crate::runtime::daemon::{Daemon, DaemonOptions};

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    config: ConfigArgs,
    /// The redb state file. Default: <data-dir>/ordersync.redb.
    #[arg(long, env = "ORDERSYNC_STATE")]
    state: Option<PathBuf>,
    /// Data directory (state file, generated admin token).
    #[arg(long, env = "ORDERSYNC_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Listen address, e.g. 127.0.0.1:8080 (overrides the instance config).
    #[arg(long, env = "ORDERSYNC_LISTEN")]
    listen: Option<String>,
    /// Concurrent order workers.
    #[arg(long)]
    workers: Option<usize>,
    /// Do not watch the config files (reload with SIGHUP or `ordersync reload`).
    #[arg(long)]
    no_watch: bool,
    /// Write the bound address to this file once ready (for supervisors and tests).
    #[arg(long)]
    ready_file: Option<PathBuf>,
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let data_dir = args.data_dir.unwrap_or_else(crate::config::default_data_dir);
    let daemon = Daemon::start(DaemonOptions {
        paths: args.config.paths(),
        data_dir,
        state: args.state,
        listen: args.listen,
        workers: args.workers,
        clock: Arc::new(SystemClock),
        watch: (!args.no_watch).then(WatchOptions::default),
    })
    .await?;
    if let Some(path) = &args.ready_file {
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, daemon.addr.to_string())?;
        std::fs::rename(&tmp, path)?;
    }
    super::wait_for_stop_signal().await;
    daemon.shutdown().await;
    Ok(ExitCode::SUCCESS)
}
