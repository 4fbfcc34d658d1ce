//! Retry policy: which failures are worth another attempt and how long to
//! wait before it (exponential backoff with jitter, or what the platform
//! asked for in `Retry-After`), within a count and an age limit.

use std::time::Duration;

#[derive(Debug, Clone)]
pub struct RetryPolicy {
    pub max_attempts: u32,
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    /// Give up this long after the first attempt.
    pub max_age: Duration,
    /// Statuses worth another attempt (transport failures always are).
    pub retry_statuses: Vec<u16>,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 8,
            initial_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(30),
            max_age: Duration::from_secs(3600),
            retry_statuses: vec![408, 425, 429, 500, 502, 503, 504],
        }
    }
}

impl RetryPolicy {
    /// How long to wait before attempt `attempt + 1`.
    pub fn wait(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        retry_after.unwrap_or_else(|| backoff(self, attempt)).min(self.max_backoff)
    }
}

/// `Retry-After` in seconds (fractions allowed, as Shopify sends `2.0`).
pub fn parse_retry_after(v: &str) -> Option<Duration> {
    let secs: f64 = v.trim().parse().ok()?;
    (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs.min(3600.0)))
}

/// Exponential backoff with jitter: between half and all of
/// `initial × 2^(attempt-1)`, capped.
pub fn backoff(policy: &RetryPolicy, attempt: u32) -> Duration {
    let base = policy.initial_backoff.saturating_mul(1u32 << attempt.clamp(1, 17).saturating_sub(1));
    let capped = base.min(policy.max_backoff);
    let jitter = rand::random::<f64>();
    Duration::from_secs_f64(capped.as_secs_f64() * (0.5 + jitter / 2.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_accepts_fractions() {
        assert_eq!(parse_retry_after("2.0"), Some(Duration::from_secs(2)));
        assert_eq!(parse_retry_after("soon"), None);
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let p = RetryPolicy { initial_backoff: Duration::from_millis(100), max_backoff: Duration::from_secs(1), ..Default::default() };
        assert!(backoff(&p, 1) <= Duration::from_millis(100));
        assert!(backoff(&p, 10) <= Duration::from_secs(1));
        assert!(backoff(&p, 10) >= Duration::from_millis(500));
        assert_eq!(p.wait(3, Some(Duration::from_secs(5))), Duration::from_secs(1));
    }
}
