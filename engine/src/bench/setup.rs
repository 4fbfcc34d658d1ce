//! A throwaway installation for a benchmark: the shipped connectors and
//! rules, `n` workflows, secrets in files, and a sandbox to talk to.

use std::path::{Path, PathBuf};

use anyhow::Context as _;

use crate::sandbox::SandboxOptions;
use crate::sandbox::platforms::shopify::ShopifyCredentials;

pub struct BenchDir {
    pub dir: PathBuf,
}

impl Drop for BenchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for e in std::fs::read_dir(from)? {
        let e = e?;
        if e.file_type()?.is_dir() {
            copy_dir(&e.path(), &to.join(e.file_name()))?;
        } else {
            std::fs::copy(e.path(), to.join(e.file_name()))?;
        }
    }
    Ok(())
}

/// Sandbox options for load: Shopify's cost bucket out of the way.
pub fn load_sandbox_options() -> SandboxOptions {
    let mut o = SandboxOptions::generated();
    o.shopify_limits.maximum = 1e12;
    o.shopify_limits.restore_per_second = 1e12;
    o
}

impl BenchDir {
    /// Copy `source`'s connectors and rules, and write `workflows` Shopify
    /// workflows (`shopify-orders` plus numbered copies).
    pub fn create(source: &Path, workflows: usize, shopify_base: &str, creds: &ShopifyCredentials) -> anyhow::Result<BenchDir> {
        let dir = std::env::temp_dir().join(format!("ordersync-bench-{}-{:x}", std::process::id(), rand::random::<u32>()));
        let b = BenchDir { dir };
        copy_dir(&source.join("connectors.d"), &b.dir.join("connectors.d")).context("copying connectors.d")?;
        copy_dir(&source.join("workflows/rules"), &b.dir.join("workflows/rules")).context("copying workflows/rules")?;
        let template =
            std::fs::read_to_string(source.join("workflows/shopify-orders.yaml")).context("reading workflows/shopify-orders.yaml")?;
        std::fs::write(b.dir.join("workflows/shopify-orders.yaml"), &template)?;
        for i in 1..workflows {
            let text = template.replace("workflow: shopify-orders", &format!("workflow: shopify-orders-{i:03}"));
            std::fs::write(b.dir.join(format!("workflows/shopify-orders-{i:03}.yaml")), text)?;
        }
        let secrets = b.dir.join("secrets");
        std::fs::create_dir_all(&secrets)?;
        std::fs::write(secrets.join("admin-token"), crate::sandbox::random_hex(16))?;
        std::fs::write(secrets.join("shopify-token"), &creds.access_token)?;
        std::fs::write(secrets.join("shopify-webhook"), &creds.webhook_secret)?;
        let s = secrets.display();
        std::fs::write(
            b.dir.join("ordersync.yaml"),
            format!(
                "listen: 127.0.0.1:0\nadmin_token: file:{s}/admin-token\nconnections:\n  shopify-main:\n    connector: shopify\n    base_url: {shopify_base}\n    values:\n      shop: {}\n    secrets:\n      access_token: file:{s}/shopify-token\n      webhook_secret: file:{s}/shopify-webhook\n",
                creds.shop
            ),
        )?;
        Ok(b)
    }

    pub fn paths(&self) -> crate::config::ConfigPaths {
        crate::config::ConfigPaths::new(&self.dir, Some(self.dir.join("ordersync.yaml")))
    }
}
