//! Sending a connector request: render, authenticate, send, classify the
//! answer, extract values. Retries wrap `call` in `send`.

use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::{Map, Value};

use super::{Body, Connection, JsonTemplate, RequestSpec, auth};
use crate::adapters::template::{RenderFailure, Templates};
use crate::connector::extract::extract_object;
use crate::telemetry::redact::redact;

/// Largest response body read; larger answers are cut and treated as non-JSON.
const MAX_RESPONSE_BYTES: usize = 16 * 1024 * 1024;

/// How requests are retried.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    pub max_attempts: u32,
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    /// Statuses worth another try besides 429 and transport failures.
    pub retry_statuses: Vec<u16>,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 5,
            initial_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(30),
            retry_statuses: vec![408, 425, 429, 500, 502, 503, 504],
        }
    }
}

/// What one request did, for the audit trail. Holds no secret and no query string.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
pub struct CallSummary {
    pub request: String,
    pub method: String,
    pub path: String,
    pub status: Option<u16>,
    pub duration_ms: u64,
    pub attempts: u32,
    pub error: Option<String>,
}

/// A successful answer.
#[derive(Debug, Clone)]
pub struct Exchange {
    pub status: u16,
    pub body: Value,
    /// The request's named extracts.
    pub extracts: Value,
    pub summary: CallSummary,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum CallError {
    #[error("{0}")]
    Render(String),
    #[error("{message}")]
    Failed { message: String, retryable: bool, retry_after: Option<Duration>, summary: Box<CallSummary> },
}

impl CallError {
    pub fn summary(&self) -> Option<&CallSummary> {
        match self {
            CallError::Render(_) => None,
            CallError::Failed { summary, .. } => Some(summary),
        }
    }
}

impl From<RenderFailure> for CallError {
    fn from(e: RenderFailure) -> Self {
        CallError::Render(e.0)
    }
}

/// A shared HTTP client (one connection pool for the daemon).
#[derive(Clone)]
pub struct HttpClient {
    inner: reqwest::Client,
}

impl HttpClient {
    pub fn new() -> anyhow::Result<Self> {
        let inner = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .pool_idle_timeout(Duration::from_secs(60))
            .user_agent(concat!("ordersync/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(HttpClient { inner })
    }

    /// Send with retries for transient failures, honouring `Retry-After`.
    pub async fn send(&self, templates: &Templates, conn: &Connection, req: &RequestSpec, ctx: &Value) -> Result<Exchange, CallError> {
        let policy = &conn.connector.retry;
        let mut attempt = 1;
        loop {
            match self.call(templates, conn, req, ctx).await {
                Ok(mut ex) => {
                    ex.summary.attempts = attempt;
                    return Ok(ex);
                }
                Err(CallError::Failed { retryable: true, retry_after, message, mut summary }) if attempt < policy.max_attempts => {
                    let wait = retry_after.unwrap_or_else(|| backoff(policy, attempt)).min(policy.max_backoff);
                    tracing::debug!(connection = %conn.name, request = %req.name, attempt, wait_ms = wait.as_millis() as u64, "{message}; retrying");
                    summary.attempts = attempt;
                    tokio::time::sleep(wait).await;
                    attempt += 1;
                }
                Err(CallError::Failed { message, retryable, retry_after, mut summary }) => {
                    summary.attempts = attempt;
                    return Err(CallError::Failed { message, retryable, retry_after, summary });
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// One attempt.
    pub async fn call(&self, templates: &Templates, conn: &Connection, req: &RequestSpec, ctx: &Value) -> Result<Exchange, CallError> {
        let path = templates.render(&req.path, ctx)?;
        let url = format!("{}{}", conn.base_url.trim_end_matches('/'), path);
        let method = reqwest::Method::from_bytes(req.method.as_str().as_bytes()).expect("static method names are valid");
        let mut builder = self.inner.request(method, &url).timeout(req.timeout);
        if !req.query.is_empty() {
            let mut pairs = Vec::with_capacity(req.query.len());
            for (k, t) in &req.query {
                pairs.push((k.as_str(), templates.render(t, ctx)?));
            }
            builder = builder.query(&pairs);
        }
        for (k, t) in conn.connector.default_headers.iter().chain(req.headers.iter()) {
            builder = builder.header(k.as_str(), templates.render(t, ctx)?);
        }
        builder = match &req.body {
            Body::None => builder,
            Body::Json(t) => {
                let v = render_json(templates, t, ctx)?;
                builder.header("content-type", "application/json").body(serde_json::to_vec(&v).expect("JSON values serialize"))
            }
            Body::Text { template, content_type } => {
                builder.header("content-type", content_type.as_str()).body(templates.render(template, ctx)?)
            }
            Body::Form(fields) => {
                let mut pairs = Vec::with_capacity(fields.len());
                for (k, t) in fields {
                    pairs.push((k.as_str(), templates.render(t, ctx)?));
                }
                builder.header("content-type", "application/x-www-form-urlencoded").body(form_encode(&pairs))
            }
        };
        let builder = auth::apply(conn, builder).map_err(|e| CallError::Render(e.to_string()))?;

        let mut summary = CallSummary {
            request: req.name.clone(),
            method: req.method.as_str().to_string(),
            path: path.split('?').next().unwrap_or("").to_string(),
            status: None,
            duration_ms: 0,
            attempts: 1,
            error: None,
        };
        let started = Instant::now();
        let fail = |mut summary: CallSummary, message: String, retryable: bool, retry_after: Option<Duration>| {
            let message = redact(&message, conn.secrets.values());
            summary.error = Some(message.clone());
            CallError::Failed { message, retryable, retry_after, summary: Box::new(summary) }
        };

        let response = match builder.send().await {
            Ok(r) => r,
            Err(e) => {
                summary.duration_ms = started.elapsed().as_millis() as u64;
                let what = if e.is_timeout() {
                    "timed out"
                } else if e.is_connect() {
                    "could not connect"
                } else {
                    "failed in transport"
                };
                return Err(fail(
                    summary,
                    format!("{} {} {what}: {}", req.method.as_str(), summary_path(&path), root_cause(&e)),
                    true,
                    None,
                ));
            }
        };
        let status = response.status().as_u16();
        summary.status = Some(status);
        let retry_after = response.headers().get("retry-after").and_then(|v| v.to_str().ok()).and_then(parse_retry_after);
        let bytes = match read_limited(response).await {
            Ok(b) => b,
            Err(e) => {
                summary.duration_ms = started.elapsed().as_millis() as u64;
                return Err(fail(summary, format!("reading the answer to {} failed: {e}", req.name), true, None));
            }
        };
        summary.duration_ms = started.elapsed().as_millis() as u64;
        let body: Value = if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes).unwrap_or(Value::Null) };

        let rules = &conn.connector.errors;
        if let Some(t) = &rules.throttled {
            if t.first(&body).is_some() {
                return Err(fail(summary, format!("{} was throttled by the platform", req.name), true, retry_after));
            }
        }
        if !(200..300).contains(&status) {
            let detail = error_text(rules.message.as_ref().map(|p| p.query(&body)), &bytes);
            let retryable = status == 429 || conn.connector.retry.retry_statuses.contains(&status);
            return Err(fail(summary, format!("{} answered {status}: {detail}", req.name), retryable, retry_after));
        }
        if let Some(p) = &rules.message {
            let found = p.query(&body);
            if !found.is_empty() {
                return Err(fail(summary, format!("{} reported errors: {}", req.name, error_text(Some(found), &bytes)), false, None));
            }
        }
        if let Some(p) = &req.user_errors {
            let found: Vec<&Value> = p.query(&body).into_iter().filter(|v| !is_empty(v)).collect();
            if !found.is_empty() {
                return Err(fail(summary, format!("{} was refused: {}", req.name, error_text(Some(found), &bytes)), false, None));
            }
        }
        let extracts = if req.extract.is_empty() {
            Value::Object(Map::new())
        } else {
            extract_object(&req.extract, &body).map_err(|e| fail(summary.clone(), format!("{}: {e}", req.name), false, None))?
        };
        Ok(Exchange { status, body, extracts, summary })
    }
}

fn summary_path(path: &str) -> &str {
    path.split('?').next().unwrap_or("")
}

fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur: &dyn std::error::Error = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

async fn read_limited(mut response: reqwest::Response) -> Result<Vec<u8>, reqwest::Error> {
    let mut out = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        if out.len() + chunk.len() > MAX_RESPONSE_BYTES {
            break;
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        Value::String(s) => s.is_empty(),
        _ => false,
    }
}

/// Error detail for a message: extracted messages when we have them, else a body excerpt.
fn error_text(found: Option<Vec<&Value>>, bytes: &[u8]) -> String {
    if let Some(found) = found.filter(|f| !f.is_empty()) {
        let parts: Vec<String> = found
            .iter()
            .map(|v| match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            })
            .collect();
        return truncate(&parts.join("; "), 500);
    }
    let text = String::from_utf8_lossy(bytes);
    if text.trim().is_empty() { "(empty body)".into() } else { truncate(text.trim(), 500) }
}

fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max { s.to_string() } else { format!("{}…", s.chars().take(max).collect::<String>()) }
}

/// `Retry-After` as seconds (fractions allowed, as Shopify sends `2.0`).
pub fn parse_retry_after(v: &str) -> Option<Duration> {
    let secs: f64 = v.trim().parse().ok()?;
    (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs.min(3600.0)))
}

/// Exponential backoff with full jitter.
pub fn backoff(policy: &RetryPolicy, attempt: u32) -> Duration {
    let base = policy.initial_backoff.saturating_mul(1u32 << attempt.min(16).saturating_sub(1));
    let capped = base.min(policy.max_backoff);
    let jitter = rand::random::<f64>();
    Duration::from_secs_f64(capped.as_secs_f64() * (0.5 + jitter / 2.0))
}

pub fn render_json(templates: &Templates, t: &JsonTemplate, ctx: &Value) -> Result<Value, RenderFailure> {
    Ok(match t {
        JsonTemplate::Fixed(v) => v.clone(),
        JsonTemplate::String(t) => templates.render_value(t, ctx)?,
        JsonTemplate::Array(items) => Value::Array(items.iter().map(|i| render_json(templates, i, ctx)).collect::<Result<_, _>>()?),
        JsonTemplate::Object(fields) => {
            let mut m = Map::with_capacity(fields.len());
            for (k, v) in fields {
                m.insert(k.clone(), render_json(templates, v, ctx)?);
            }
            Value::Object(m)
        }
    })
}

fn form_encode(pairs: &[(&str, String)]) -> String {
    use crate::adapters::template::percent_encode;
    pairs.iter().map(|(k, v)| format!("{}={}", percent_encode(k), percent_encode(v))).collect::<Vec<_>>().join("&")
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
    }
}
