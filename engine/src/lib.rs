//! ordersync: a declarative order-to-inventory sync engine.
//!
//! Integrators describe each platform in YAML: a *connector*
//! (`connectors.d/`) is the shape of one platform's API, a *connection* (in
//! the instance config) binds it to one account, and a *workflow*
//! (`workflows/`) says what to do with that platform's orders: which trigger,
//! how the payload maps to the canonical order, how stock is looked up,
//! which Rhai rule decides approve / reject / waitlist, and what is written
//! back for each decision.
//!
//! The layers, from file to running task:
//!
//! - [`config`] reads the whole set, compiles every template, JSONPath and
//!   script once, and reports every error with file:line:col.
//! - [`adapters`] wraps handlebars, jsonpath-rust and rhai, one file each.
//! - [`connector`] and [`workflow`] are the compiled, ready-to-run forms.
//! - [`runtime`] is the daemon: intake commits each webhook before it is
//!   acknowledged, workers map → look up → decide → reserve, and the outbox
//!   writes the decision back with idempotency keys and retries.
//! - [`store`] keeps all state in redb behind domain verbs, with group
//!   commit through a single writer (which also serialises reservations).
//! - [`inventory`] is the stock ledger that keeps channels from overselling.
//! - [`http`] serves webhooks, the admin API and metrics; [`sandbox`]
//!   imitates the platforms for the demo, the tests and the benchmarks.
//!
//! Guarantees: an acknowledged webhook is durable; a delivery id is processed
//! once (within a dedupe window of two to three weeks; an order is never
//! decided twice); a decision and its reservation commit together;
//! write-backs survive restarts. Secrets never reach logs, errors or the
//! audit trail.

#![forbid(unsafe_code)]

pub mod adapters;
pub mod bench;
pub mod cli;
pub mod clock;
pub mod config;
pub mod connector;
pub mod http;
pub mod inventory;
pub mod model;
pub mod reload;
pub mod runtime;
pub mod sandbox;
pub mod store;
pub mod telemetry;
pub mod testing;
pub mod workflow;
