//! Fault injection for the simulated platforms: errors, throttling,
//! timeouts, connection resets and slow answers, per platform and operation,
//! at a chosen rate, before or after the effect takes place.
//!
//! The random choices come from a seeded generator, so a failing run can be
//! replayed with the same seed. A fault *after* the effect is the nasty one:
//! the platform did the work but the caller never hears so, which is how
//! exactly-once write-back is put to the test.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use serde_json::json;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum FaultKind {
    /// Answer with this status (5xx) and the platform's error body.
    Status { status: u16 },
    /// 429 with `Retry-After`.
    Throttle { retry_after_s: f64 },
    /// Answer only after this long (longer than the caller waits).
    Timeout { delay_ms: u64 },
    /// Close the connection in the middle of the answer.
    Reset,
    /// Answer normally, after this long.
    Slow { delay_ms: u64 },
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum When {
    /// The request is not processed.
    #[default]
    Before,
    /// The request is processed, then the answer fails.
    After,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FaultRule {
    /// `shopify`, … or `*`.
    pub platform: String,
    /// The operation (a GraphQL root field, a path fragment); none for all.
    #[serde(default)]
    pub operation: Option<String>,
    #[serde(flatten)]
    pub kind: FaultKind,
    /// Probability per request, 0..=1.
    #[serde(default = "always")]
    pub rate: f64,
    #[serde(default)]
    pub when: When,
    /// Apply at most this many times.
    #[serde(default)]
    pub limit: Option<u64>,
}

fn always() -> f64 {
    1.0
}

/// The fault plan of a sandbox.
pub struct Faults {
    rules: Mutex<Vec<(FaultRule, u64)>>,
    rng: Mutex<StdRng>,
    pub seed: u64,
}

impl Faults {
    pub fn new(seed: u64) -> Self {
        Faults { rules: Mutex::new(Vec::new()), rng: Mutex::new(StdRng::seed_from_u64(seed)), seed }
    }

    pub fn set(&self, rules: Vec<FaultRule>) {
        *self.rules.lock().unwrap_or_else(|p| p.into_inner()) = rules.into_iter().map(|r| (r, 0)).collect();
    }

    pub fn clear(&self) {
        self.set(Vec::new());
    }

    /// Each rule with how often it fired.
    pub fn report(&self) -> Vec<(FaultRule, u64)> {
        self.rules.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The fault to inject into this request, if any (first matching rule wins).
    pub fn pick(&self, platform: &str, operation: &str) -> Option<(FaultKind, When)> {
        let mut rules = self.rules.lock().unwrap_or_else(|p| p.into_inner());
        let mut rng = self.rng.lock().unwrap_or_else(|p| p.into_inner());
        for (rule, fired) in rules.iter_mut() {
            let platform_ok = rule.platform == "*" || rule.platform == platform;
            let op_ok = rule.operation.as_deref().is_none_or(|o| operation.contains(o));
            let under_limit = rule.limit.is_none_or(|l| *fired < l);
            if platform_ok && op_ok && under_limit && rng.random::<f64>() < rule.rate {
                *fired += 1;
                let when = if matches!(rule.kind, FaultKind::Throttle { .. }) { When::Before } else { rule.when };
                return Some((rule.kind.clone(), when));
            }
        }
        None
    }
}

/// The answer to a request that fails before it is processed.
pub async fn before(kind: &FaultKind, error_body: &serde_json::Value) -> Option<Response> {
    Some(match kind {
        FaultKind::Status { status } => failed_status(*status, error_body),
        FaultKind::Throttle { retry_after_s } => {
            let mut r = (
                StatusCode::TOO_MANY_REQUESTS,
                axum::Json(
                    json!({"errors": "Exceeded 2 calls per second for api client. Reduce request rates to resume uninterrupted service."}),
                ),
            )
                .into_response();
            r.headers_mut()
                .insert("retry-after", HeaderValue::from_str(&format!("{retry_after_s:.1}")).expect("a number is a valid header"));
            r
        }
        FaultKind::Timeout { delay_ms } => {
            tokio::time::sleep(Duration::from_millis(*delay_ms)).await;
            failed_status(503, error_body)
        }
        FaultKind::Reset => reset(),
        FaultKind::Slow { delay_ms } => {
            tokio::time::sleep(Duration::from_millis(*delay_ms)).await;
            return None;
        }
    })
}

/// Spoil the real answer of a request that was processed.
pub async fn after(kind: &FaultKind, real: Response, error_body: &serde_json::Value) -> Response {
    match kind {
        FaultKind::Status { status } => failed_status(*status, error_body),
        FaultKind::Timeout { delay_ms } | FaultKind::Slow { delay_ms } => {
            tokio::time::sleep(Duration::from_millis(*delay_ms)).await;
            real
        }
        FaultKind::Reset => reset(),
        FaultKind::Throttle { .. } => real,
    }
}

fn failed_status(status: u16, body: &serde_json::Value) -> Response {
    (StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR), axum::Json(body.clone())).into_response()
}

/// A response whose body breaks off after its first bytes: the server drops
/// the connection mid-answer, which the caller sees as a reset.
fn reset() -> Response {
    let mut r = Response::new(axum::body::Body::new(BrokenBody { sent: false }));
    r.headers_mut().insert("content-type", HeaderValue::from_static("application/json"));
    r
}

struct BrokenBody {
    sent: bool,
}

impl http_body::Body for BrokenBody {
    type Data = axum::body::Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        if self.sent {
            return std::task::Poll::Ready(Some(Err(std::io::Error::new(
                std::io::ErrorKind::ConnectionReset,
                "connection reset by the sandbox",
            ))));
        }
        self.sent = true;
        std::task::Poll::Ready(Some(Ok(http_body::Frame::data(axum::body::Bytes::from_static(b"{\"data\":")))))
    }
}

/// A counter of injected faults by rule, for reports.
pub fn summary(faults: &Faults) -> BTreeMap<String, u64> {
    faults.report().into_iter().map(|(r, n)| (format!("{}:{}:{:?}", r.platform, r.operation.unwrap_or_default(), r.kind), n)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_picks_the_same_faults() {
        let plan = || {
            let f = Faults::new(7);
            f.set(vec![FaultRule {
                platform: "shopify".into(),
                operation: None,
                kind: FaultKind::Status { status: 503 },
                rate: 0.3,
                when: When::Before,
                limit: None,
            }]);
            (0..100).map(|_| f.pick("shopify", "tagsAdd").is_some()).collect::<Vec<_>>()
        };
        let a = plan();
        assert_eq!(a, plan());
        let hits = a.iter().filter(|h| **h).count();
        assert!((15..=45).contains(&hits), "{hits}");
    }

    #[test]
    fn limits_and_operations_narrow_a_rule() {
        let f = Faults::new(1);
        f.set(vec![FaultRule {
            platform: "*".into(),
            operation: Some("orderCancel".into()),
            kind: FaultKind::Reset,
            rate: 1.0,
            when: When::After,
            limit: Some(2),
        }]);
        assert!(f.pick("shopify", "tagsAdd").is_none());
        assert!(f.pick("shopify", "orderCancel").is_some());
        assert!(f.pick("shopify", "orderCancel").is_some());
        assert!(f.pick("shopify", "orderCancel").is_none());
    }
}
