//! `ordersync validate`: check the whole config set as the daemon would.

use std::process::ExitCode;

use super::ConfigArgs;
use crate::config::{LoadOptions, load};

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    config: ConfigArgs,
    /// Also read every secret the connections reference.
    #[arg(long)]
    secrets: bool,
}

pub fn run(args: Args) -> ExitCode {
    let paths = args.config.paths();
    match load(&paths, LoadOptions { resolve_secrets: args.secrets, ..LoadOptions::default() }) {
        Ok(set) => {
            println!("ok: {}", set.summary());
            ExitCode::SUCCESS
        }
        Err(diags) => {
            for d in &diags.0 {
                eprintln!("{d}");
            }
            eprintln!("{} error(s) in {}", diags.len(), paths.dir.display());
            ExitCode::FAILURE
        }
    }
}
