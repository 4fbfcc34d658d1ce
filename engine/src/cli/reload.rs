//! `ordersync reload`: ask a running daemon to load its config again.

use std::process::ExitCode;

use super::client::ApiArgs;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    api: ApiArgs,
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let (status, body) = args.api.connect()?.post("/api/reload", None).await?;
    match body["result"].as_str() {
        Some("installed") => println!("version {} is live", body["version"]),
        Some("unchanged") => println!("nothing changed; version {} stays live", body["version"]),
        Some("rejected") => {
            for e in body["errors"].as_array().into_iter().flatten() {
                eprintln!("{}", e.as_str().unwrap_or_default());
            }
            eprintln!("rejected; version {} stays live", body["version"]);
            return Ok(ExitCode::FAILURE);
        }
        _ => anyhow::bail!("unexpected answer ({status}): {body}"),
    }
    Ok(ExitCode::SUCCESS)
}
