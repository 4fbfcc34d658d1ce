//! Simulated platforms.
