//! `ordersync schema`: write the JSON Schemas of the config files.

use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    /// Directory to write into (default: print the connector schema).
    #[arg(long)]
    out: Option<PathBuf>,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let schemas = crate::config::schema::all();
    match args.out {
        None => print!("{}", schemas[0].1),
        Some(dir) => {
            std::fs::create_dir_all(&dir)?;
            for (name, text) in schemas {
                std::fs::write(dir.join(name), text)?;
                println!("wrote {}", dir.join(name).display());
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
