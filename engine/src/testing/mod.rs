//! Declarative workflow tests: `workflows/tests/*.test.yaml` give a
//! delivery, what the platform answers to each request, and what must
//! happen; `ordersync test` runs them offline against the real engine.

pub mod diff;
pub mod file;
pub mod runner;
