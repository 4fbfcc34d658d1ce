//! Per-connection rate limiting: a token bucket that requests draw from
//! before they are sent, so bursts do not earn 429s. Platforms that charge a
//! variable cost per request (Shopify's GraphQL leaky bucket) are followed
//! exactly: the estimated cost is corrected with the real one from the answer,
//! and the bucket is set to what the platform says is left.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use serde_json::Value;

use crate::adapters::jsonpath::JsonPath;

#[derive(Debug, Clone)]
pub struct RateLimit {
    pub per_second: f64,
    pub burst: f64,
    pub cost: f64,
    pub actual_cost: Option<JsonPath>,
    pub available: Option<JsonPath>,
}

/// The bucket of one connection; it outlives config versions.
pub struct Bucket {
    state: Mutex<State>,
}

struct State {
    tokens: f64,
    at: Instant,
    /// Cost of requests sent and not yet answered: the platform may already
    /// have charged them when it reports its balance.
    in_flight: f64,
}

impl Default for Bucket {
    fn default() -> Self {
        Bucket { state: Mutex::new(State { tokens: f64::NAN, at: Instant::now(), in_flight: 0.0 }) }
    }
}

impl Bucket {
    /// Wait until `spec.cost` tokens can be taken, and take them.
    pub async fn acquire(&self, spec: &RateLimit) {
        loop {
            let wait = {
                let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
                let now = Instant::now();
                if s.tokens.is_nan() {
                    s.tokens = spec.burst;
                    s.at = now;
                }
                s.tokens = (s.tokens + now.duration_since(s.at).as_secs_f64() * spec.per_second).min(spec.burst);
                s.at = now;
                if s.tokens >= spec.cost.min(spec.burst) {
                    s.tokens -= spec.cost;
                    s.in_flight += spec.cost;
                    return;
                }
                Duration::from_secs_f64(((spec.cost - s.tokens) / spec.per_second.max(1e-9)).min(60.0))
            };
            tokio::time::sleep(wait).await;
        }
    }

    /// The request is answered (or failed): correct the bucket with what the
    /// answer says about its cost and the platform's balance.
    pub fn settle(&self, spec: &RateLimit, body: &Value) {
        let num = |p: &Option<JsonPath>| p.as_ref().and_then(|p| p.first(body)).and_then(Value::as_f64);
        let (actual, available) = (num(&spec.actual_cost), num(&spec.available));
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        s.in_flight = (s.in_flight - spec.cost).max(0.0);
        if let Some(a) = actual {
            s.tokens += spec.cost - a;
        }
        if let Some(left) = available {
            // The platform's balance, less what is on its way to it. Answers
            // to concurrent requests arrive in any order, so an older, higher
            // balance must not undo a newer, lower one: the balance only
            // ever lowers the estimate (refill and `actual_cost` raise it).
            let now = Instant::now();
            let refilled = (s.tokens + now.duration_since(s.at).as_secs_f64() * spec.per_second).min(spec.burst);
            s.tokens = refilled.min(left - s.in_flight);
            s.at = now;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(per_second: f64, burst: f64) -> RateLimit {
        RateLimit { per_second, burst, cost: 1.0, actual_cost: None, available: Some(JsonPath::compile("$.left").unwrap()) }
    }

    #[tokio::test(start_paused = true)]
    async fn bursts_pass_then_the_rate_holds() {
        let b = Bucket::default();
        let s = spec(10.0, 5.0);
        let start = tokio::time::Instant::now();
        for _ in 0..15 {
            b.acquire(&s).await;
        }
        // 5 from the burst, then 10 at 10/s.
        let took = start.elapsed();
        assert!(took >= Duration::from_millis(950) && took <= Duration::from_millis(1100), "{took:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn the_platforms_balance_wins() {
        let b = Bucket::default();
        let s = spec(1.0, 100.0);
        b.acquire(&s).await;
        b.settle(&s, &serde_json::json!({"left": 0}));
        let start = tokio::time::Instant::now();
        b.acquire(&s).await;
        assert!(start.elapsed() >= Duration::from_millis(900));
    }
}
