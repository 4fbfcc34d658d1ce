//! One stock picture across every channel: reported on-hand per (SKU,
//! location), reservations held by approved orders, and what that leaves
//! available.

pub mod ledger;
