//! One simulator a platform, each a thin adapter over the mock ERP.

pub mod arcadehub;
pub mod shopify;
