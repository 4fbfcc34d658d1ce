//! Benchmarks run by `ordersync bench …`: the daemon against the sandbox
//! on loopback, measured from outside the way an operator would see it.
//! Figures are printed (and `--json` for machines); nothing here asserts a
//! target: targets are checked by reading the report.

pub mod e2e;
pub mod procstat;
pub mod reload;
pub mod setup;
pub mod steps;
pub mod stock;

use std::time::Duration;

/// p50, p99 and max of a set of durations, in milliseconds.
pub fn percentiles(samples: &mut [Duration]) -> (f64, f64, f64) {
    if samples.is_empty() {
        return (0.0, 0.0, 0.0);
    }
    samples.sort();
    let at = |q: f64| {
        let i = ((samples.len() as f64 * q).ceil() as usize).clamp(1, samples.len()) - 1;
        samples[i].as_secs_f64() * 1000.0
    };
    (at(0.50), at(0.99), samples[samples.len() - 1].as_secs_f64() * 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_pick_ranks() {
        let mut s: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        let (p50, p99, max) = percentiles(&mut s);
        assert_eq!((p50, p99, max), (50.0, 99.0, 100.0));
    }
}
