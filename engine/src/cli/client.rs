//! Talking to a running daemon's admin API from the command line.

use std::path::PathBuf;

use anyhow::{Context as _, bail};
use serde_json::Value;

/// Where the daemon is and how to authenticate.
#[derive(clap::Args, Clone)]
pub struct ApiArgs {
    /// The daemon's base URL.
    #[arg(long, global = true, env = "ORDERSYNC_URL", default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// File holding the admin token (default: <data-dir>/admin-token). The
    /// token itself may instead be given in ORDERSYNC_ADMIN_TOKEN.
    #[arg(long, global = true, env = "ORDERSYNC_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
    /// The daemon's data directory, where a generated token lives.
    #[arg(long, global = true, env = "ORDERSYNC_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
}

pub struct Api {
    base: String,
    token: String,
    client: reqwest::Client,
}

impl ApiArgs {
    pub fn connect(&self) -> anyhow::Result<Api> {
        let token = match std::env::var("ORDERSYNC_ADMIN_TOKEN").ok().filter(|t| !t.is_empty()) {
            Some(t) => t,
            None => {
                let file = self
                    .token_file
                    .clone()
                    .unwrap_or_else(|| self.data_dir.clone().unwrap_or_else(crate::config::default_data_dir).join("admin-token"));
                std::fs::read_to_string(&file)
                    .with_context(|| format!("cannot read the admin token from {}", file.display()))?
                    .trim()
                    .to_string()
            }
        };
        Ok(Api { base: self.url.trim_end_matches('/').to_string(), token, client: reqwest::Client::new() })
    }
}

impl Api {
    async fn send(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> anyhow::Result<(u16, Value)> {
        let mut req = self.client.request(method, format!("{}{path}", self.base)).bearer_auth(&self.token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.with_context(|| format!("cannot reach the daemon at {}", self.base))?;
        let status = resp.status().as_u16();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        if status == 401 {
            bail!("the daemon refused the admin token");
        }
        Ok((status, body))
    }

    pub async fn get(&self, path: &str) -> anyhow::Result<(u16, Value)> {
        self.send(reqwest::Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: Option<Value>) -> anyhow::Result<(u16, Value)> {
        self.send(reqwest::Method::POST, path, body).await
    }

    pub async fn delete(&self, path: &str) -> anyhow::Result<(u16, Value)> {
        self.send(reqwest::Method::DELETE, path, None).await
    }
}
