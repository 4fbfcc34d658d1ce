//! One stock picture across every channel: reported on-hand per (SKU,
//! location), reservations held by approved orders, and what that leaves
//! available.

pub mod ledger;
pub mod pattern;

use pattern::SkuPattern;

/// The instance's inventory settings.
#[derive(Debug, Clone, Default)]
pub struct InventorySettings {
    /// Which connection's reports are the truth, per SKU; first match wins.
    pub masters: Vec<Master>,
    /// Units held back, per SKU; first match wins.
    pub safety: Vec<(SkuPattern, i64)>,
}

#[derive(Debug, Clone)]
pub struct Master {
    pub connection: String,
    pub skus: Vec<SkuPattern>,
}

impl InventorySettings {
    /// The connection that is stock master for `sku`, if one is configured.
    pub fn master_for(&self, sku: &str) -> Option<&str> {
        self.masters.iter().find(|m| pattern::any_matches(&m.skus, sku)).map(|m| m.connection.as_str())
    }

    /// Whether a report of `sku` from `connection` updates the ledger: always
    /// when the SKU has no master, else only from the master.
    pub fn accepts_report(&self, sku: &str, connection: &str) -> bool {
        self.master_for(sku).is_none_or(|m| m == connection)
    }

    pub fn safety_stock(&self, sku: &str) -> i64 {
        self.safety.iter().find(|(p, _)| p.matches(sku)).map_or(0, |(_, n)| *n)
    }
}
