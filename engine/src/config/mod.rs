//! Configuration: files on disk → parsed (`raw`) → compiled (`ConfigSet`).
//!
//! A config directory holds `connectors.d/*.yaml`, `workflows/*.yaml` and
//! `workflows/rules/*.rhai`; the instance config (connections, listener,
//! admin token) sits beside them as `ordersync.yaml`. The whole set is loaded
//! and validated together and becomes one immutable, versioned `ConfigSet`.

pub mod compile;
pub mod diagnostic;
pub mod lint;
mod load;
pub mod raw;
pub mod schema;
pub mod secret;
pub mod yaml;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

pub use load::{ConfigPaths, LoadOptions, fingerprint, load};

use crate::adapters::rules::RuleEngine;
use crate::adapters::template::Templates;
use crate::connector::{Connection, Connector};
use crate::workflow::Workflow;
use secret::SecretRef;

/// Everything one config version needs to run, compiled once.
pub struct ConfigSet {
    /// Assigned when the set goes live; 0 until then.
    pub version: u64,
    /// SHA-256 over every file of the set, to tell whether anything changed.
    pub hash: String,
    /// Digest of the resolved secret values under a per-process key: tells a
    /// rotated secret apart without exposing anything. Never shown.
    pub secrets_digest: String,
    pub paths: ConfigPaths,
    pub instance: InstanceSettings,
    pub connectors: BTreeMap<String, Arc<Connector>>,
    pub connections: BTreeMap<String, Arc<Connection>>,
    pub workflows: BTreeMap<String, Arc<Workflow>>,
    pub inventory: crate::inventory::InventorySettings,
    pub templates: Templates,
    pub rules: RuleEngine,
    /// Files read, for the summary line.
    pub file_count: usize,
    /// Probable mistakes that do not stop the set (see `lint`).
    pub warnings: Vec<diagnostic::Diagnostic>,
}

#[derive(Debug, Clone, Default)]
pub struct InstanceSettings {
    pub listen: Option<String>,
    pub admin_token: Option<SecretRef>,
    pub workers: Option<usize>,
    pub public_url: Option<String>,
}

impl ConfigSet {
    /// One line for logs and `validate`.
    pub fn summary(&self) -> String {
        format!(
            "{} connectors, {} connections, {} workflows from {} files (hash {})",
            self.connectors.len(),
            self.connections.len(),
            self.workflows.len(),
            self.file_count,
            &self.hash[..12.min(self.hash.len())]
        )
    }
}

/// Where the data directory is when none is given.
pub fn default_data_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(d).join("ordersync");
    }
    if let Some(h) = std::env::var_os("HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(h).join(".local/share/ordersync");
    }
    PathBuf::from("ordersync-data")
}
