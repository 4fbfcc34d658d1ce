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
    /// Fail on warnings (lints) too.
    #[arg(long)]
    deny_warnings: bool,
}

pub fn run(args: Args) -> ExitCode {
    let paths = args.config.paths();
    match load(&paths, LoadOptions { resolve_secrets: args.secrets, ..LoadOptions::default() }) {
        Ok(set) => {
            for w in &set.warnings {
                eprintln!("warning: {w}");
            }
            let warned = if set.warnings.is_empty() { String::new() } else { format!(", {} warning(s)", set.warnings.len()) };
            println!("ok: {}{warned}", set.summary());
            if args.deny_warnings && !set.warnings.is_empty() { ExitCode::FAILURE } else { ExitCode::SUCCESS }
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
