//! Integration tests: each boots the real `ordersync` binary on a loopback
//! port against the built-in sandbox and waits on conditions through the
//! admin API. One test binary, one module per area.

mod config;
mod delivery;
mod guide;
mod intake;
mod inventory;
mod platforms;
mod reload;
mod shopify;
mod support;
mod workflow_tests;
