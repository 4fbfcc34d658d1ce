//! Sending a connector request: render, authenticate, rate-limit, send,
//! classify the answer, extract values — and retry what is worth retrying.
//!
//! A failure is *retryable* when another attempt may succeed (transport
//! errors, timeouts, 429, the connector's retry statuses, a throttled
//! answer), and *ambiguous* when the failed attempt may nevertheless have
//! taken effect (a timeout or reset after the request was sent, a 5xx).
//! Before resending after an ambiguous failure, a request with a `check`
//! reads the platform's state first and skips the resend if the effect is
//! already there.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use serde_json::{Map, Value};
use tokio::time::Instant;

use super::auth::{self, Auth};
use super::credentials::{self, Credential, CredentialSlot, TokenStore};
use super::ratelimit::Bucket;
use super::retry::parse_retry_after;
use super::{Body, Connection, DoneWhen, JsonTemplate, RequestSpec};
use crate::adapters::jsonpath::{Condition, JsonPath};
use crate::adapters::template::{RenderFailure, Scope, Templates, percent_encode};
use crate::config::secret::Secret;
use crate::connector::extract::extract_object;
use crate::telemetry::redact::redact;

/// Largest response body read; larger answers are cut and treated as non-JSON.
const MAX_RESPONSE_BYTES: usize = 16 * 1024 * 1024;

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
    /// The effect was found already in place by the request's check; nothing was resent.
    pub already_done: bool,
    /// Cookies the answer set (name, value).
    pub cookies: Vec<(String, String)>,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum CallError {
    /// A template could not be rendered: a config problem, not worth retrying.
    #[error("{0}")]
    Render(String),
    #[error("{message}")]
    Failed {
        message: String,
        retryable: bool,
        /// The attempt may have taken effect despite failing.
        ambiguous: bool,
        retry_after: Option<Duration>,
        summary: Box<CallSummary>,
        /// The platform refused the credential (a fresh token or session may help).
        auth_refused: bool,
    },
}

impl CallError {
    pub fn summary(&self) -> Option<&CallSummary> {
        match self {
            CallError::Render(_) => None,
            CallError::Failed { summary, .. } => Some(summary),
        }
    }

    pub fn is_retryable(&self) -> bool {
        matches!(self, CallError::Failed { retryable: true, .. })
    }
}

impl From<RenderFailure> for CallError {
    fn from(e: RenderFailure) -> Self {
        CallError::Render(e.0)
    }
}

/// How one `send` may behave.
#[derive(Debug, Clone, Copy, Default)]
pub struct SendOptions {
    /// Stop retrying after this long (default: the connector's max age).
    pub budget: Option<Duration>,
    /// An earlier attempt (before a restart) may have taken effect: check first.
    pub maybe_applied: bool,
    /// Never retry (one attempt only).
    pub single_attempt: bool,
}

enum Checked {
    Done(Exchange),
    NotDone,
    Unknown(CallError),
}

/// A request ready to go: what a transport sends.
#[derive(Debug, Clone)]
pub struct PreparedRequest {
    pub method: &'static str,
    /// The full URL, query included.
    pub url: String,
    /// The rendered path (after the base URL), for summaries.
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Option<Vec<u8>>,
}

/// A platform's answer as a transport got it.
#[derive(Debug, Clone, Default)]
pub struct RawResponse {
    pub status: u16,
    pub retry_after: Option<Duration>,
    pub body: Vec<u8>,
    /// `Set-Cookie` values, as name and value.
    pub cookies: Vec<(String, String)>,
}

/// Why a transport got no answer.
#[derive(Debug, Clone)]
pub struct TransportError {
    pub message: String,
    /// The request may have reached the platform.
    pub ambiguous: bool,
}

/// Answers a request without a network (workflow tests).
pub type Responder = Arc<dyn Fn(&RequestSpec, &PreparedRequest, &Value) -> Result<RawResponse, TransportError> + Send + Sync>;

/// How requests reach the platforms.
#[derive(Clone, Default)]
pub enum Transport {
    #[default]
    Http,
    Scripted(Responder),
}

async fn send_http(
    client: &reqwest::Client,
    conn: &Connection,
    p: PreparedRequest,
    timeout: Duration,
) -> Result<RawResponse, TransportError> {
    let method = reqwest::Method::from_bytes(p.method.as_bytes()).expect("static method names are valid");
    let builder = match url_on_base(conn.parsed_base.as_ref(), &conn.base_url, &p.url) {
        Some(url) => client.request(method, url),
        None => client.request(method, &p.url),
    };
    let mut builder = builder.timeout(timeout);
    for (k, v) in &p.headers {
        builder = builder.header(k.as_str(), v.as_str());
    }
    if let Some(b) = p.body {
        builder = builder.body(b);
    }
    let response = builder.send().await.map_err(|e| {
        let what = if e.is_timeout() {
            "timed out"
        } else if e.is_connect() {
            "could not connect"
        } else {
            "failed in transport"
        };
        // A refused connection never reached the platform; anything later might have.
        TransportError { message: format!("{what}: {}", root_cause(&e)), ambiguous: !e.is_connect() }
    })?;
    let status = response.status().as_u16();
    let retry_after = response.headers().get("retry-after").and_then(|v| v.to_str().ok()).and_then(parse_retry_after);
    let cookies = response.headers().get_all("set-cookie").iter().filter_map(|v| v.to_str().ok()).filter_map(parse_set_cookie).collect();
    let body = read_limited(response)
        .await
        .map_err(|e| TransportError { message: format!("reading the answer failed: {}", root_cause(&e)), ambiguous: true })?;
    Ok(RawResponse { status, retry_after, body, cookies })
}

/// `url` (the base URL's text followed by a path and query) built on the
/// already parsed base: only the path and query are parsed. `None` when
/// `url` does not continue the base that way (an absolute link elsewhere);
/// the caller then parses it whole.
fn url_on_base(base: Option<&reqwest::Url>, base_text: &str, url: &str) -> Option<reqwest::Url> {
    let base = base.filter(|b| b.query().is_none() && b.fragment().is_none() && !b.cannot_be_a_base())?;
    let rest = url.strip_prefix(base_text.trim_end_matches('/'))?;
    if !(rest.is_empty() || rest.starts_with('/') || rest.starts_with('?')) || rest.contains('#') {
        return None;
    }
    let (path, query) = match rest.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (rest, None),
    };
    let mut out = base.clone();
    out.set_path(&format!("{}{path}", base.path().trim_end_matches('/')));
    out.set_query(query);
    Some(out)
}

/// `B1SESSION=abc; HttpOnly; path=/` → (`B1SESSION`, `abc`).
pub fn parse_set_cookie(header: &str) -> Option<(String, String)> {
    let (name, value) = header.split(';').next()?.split_once('=')?;
    let name = name.trim();
    (!name.is_empty()).then(|| (name.to_string(), value.trim().to_string()))
}

/// Per-connection transport state that outlives config versions.
struct ConnState {
    client: reqwest::Client,
    connect_timeout: Duration,
    bucket: Bucket,
    credential: CredentialSlot,
}

/// The daemon's HTTP client: one connection pool and one rate-limit bucket
/// per platform connection.
#[derive(Clone, Default)]
pub struct HttpClient {
    states: Arc<Mutex<HashMap<String, Arc<ConnState>>>>,
    transport: Transport,
    tokens: Option<Arc<dyn TokenStore>>,
}

impl HttpClient {
    pub fn new() -> anyhow::Result<Self> {
        Ok(HttpClient::default())
    }

    /// A client whose requests are answered by `responder`, never sent.
    pub fn scripted(responder: Responder) -> Self {
        HttpClient { states: Default::default(), transport: Transport::Scripted(responder), tokens: None }
    }

    /// Keep rotated OAuth refresh tokens in `store` across restarts.
    pub fn with_token_store(mut self, store: Arc<dyn TokenStore>) -> Self {
        self.tokens = Some(store);
        self
    }

    pub fn token_store(&self) -> Option<&Arc<dyn TokenStore>> {
        self.tokens.as_ref()
    }

    fn state(&self, conn: &Connection) -> Result<Arc<ConnState>, CallError> {
        let mut states = self.states.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = states.get(&conn.name).filter(|s| s.connect_timeout == conn.connector.connect_timeout) {
            return Ok(s.clone());
        }
        let client = reqwest::Client::builder()
            .connect_timeout(conn.connector.connect_timeout)
            .pool_idle_timeout(Duration::from_secs(60))
            .user_agent(concat!("ordersync/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| CallError::Render(format!("HTTP client for {}: {e}", conn.name)))?;
        let s = Arc::new(ConnState {
            client,
            connect_timeout: conn.connector.connect_timeout,
            bucket: Bucket::default(),
            credential: CredentialSlot::default(),
        });
        states.insert(conn.name.clone(), s.clone());
        Ok(s)
    }

    /// Send with retries for transient failures.
    pub async fn send(&self, templates: &Templates, conn: &Connection, req: &RequestSpec, ctx: &Value) -> Result<Exchange, CallError> {
        self.send_with(templates, conn, req, ctx, SendOptions::default()).await
    }

    pub async fn send_with(
        &self,
        templates: &Templates,
        conn: &Connection,
        req: &RequestSpec,
        ctx: &Value,
        opts: SendOptions,
    ) -> Result<Exchange, CallError> {
        self.send_inner(templates, conn, req, ctx, opts, None).await
    }

    /// Send `req` to the page URL `link` (absolute, or relative to the
    /// request's own URL) instead of its path and query: the next page of a
    /// collection that names its successor.
    pub async fn send_link(
        &self,
        templates: &Templates,
        conn: &Connection,
        req: &RequestSpec,
        ctx: &Value,
        link: &str,
    ) -> Result<Exchange, CallError> {
        self.send_inner(templates, conn, req, ctx, SendOptions::default(), Some(link)).await
    }

    async fn send_inner(
        &self,
        templates: &Templates,
        conn: &Connection,
        req: &RequestSpec,
        ctx: &Value,
        opts: SendOptions,
        link: Option<&str>,
    ) -> Result<Exchange, CallError> {
        let policy = &conn.connector.retry;
        let started = Instant::now();
        let budget = opts.budget.unwrap_or(policy.max_age);
        let mut maybe_applied = opts.maybe_applied;
        let mut attempt = 1;
        loop {
            let checked = if maybe_applied && req.check.is_some() { self.check(templates, conn, req, ctx).await } else { Checked::NotDone };
            let result = match checked {
                Checked::Done(mut ex) => {
                    ex.summary.attempts = attempt;
                    return Ok(ex);
                }
                // Whether the effect is there is unknown: resending blind could
                // double it, so this counts as a failed attempt.
                Checked::Unknown(e) => Err(e),
                Checked::NotDone => self.call_at(templates, conn, req, ctx, link).await,
            };
            let (retryable, ambiguous, retry_after) = match &result {
                Ok(_) => {
                    return result.map(|mut ex| {
                        ex.summary.attempts = attempt;
                        ex
                    });
                }
                Err(CallError::Render(_)) => return result,
                Err(CallError::Failed { retryable, ambiguous, retry_after, .. }) => (*retryable, *ambiguous, *retry_after),
            };
            let wait = policy.wait(attempt, retry_after);
            let out_of_time = started.elapsed() + wait > budget;
            if !retryable || opts.single_attempt || attempt >= policy.max_attempts || out_of_time {
                let mut e = result.expect_err("handled Ok above");
                if let CallError::Failed { summary, message, .. } = &mut e {
                    summary.attempts = attempt;
                    if retryable && !opts.single_attempt {
                        let why = if out_of_time {
                            format!("its {}s retry window ran out", budget.as_secs())
                        } else {
                            format!("{attempt} attempts")
                        };
                        *message = format!("{message} (gave up after {why})");
                    }
                }
                return Err(e);
            }
            tracing::debug!(connection = %conn.name, request = %req.name, attempt, wait_ms = wait.as_millis() as u64, "retrying: {}", result.as_ref().err().map(ToString::to_string).unwrap_or_default());
            maybe_applied |= ambiguous;
            tokio::time::sleep(wait).await;
            attempt += 1;
        }
    }

    /// Run the request's check: is its effect already on the platform?
    async fn check(&self, templates: &Templates, conn: &Connection, req: &RequestSpec, ctx: &Value) -> Checked {
        let Some(check) = req.check.as_ref() else { return Checked::NotDone };
        let Some(check_req) = conn.connector.requests.get(&check.request) else { return Checked::NotDone };
        match self.call(templates, conn, check_req, ctx).await {
            Ok(mut ex) => {
                let done = match &check.done_when {
                    DoneWhen::Condition(c) => c.holds(&ex.body),
                    DoneWhen::Template(t) => {
                        let compiled = templates.render(t, ctx).map_err(|e| e.0).and_then(|text| {
                            JsonPath::compile(&text).map_err(|e| format!("the check's done_when `{text}` is not a JSONPath: {}", e.message))
                        });
                        match compiled {
                            Ok(path) => Condition { path, equals: Vec::new(), negate: false }.holds(&ex.body),
                            Err(e) => return Checked::Unknown(CallError::Render(format!("{}: {e}", req.name))),
                        }
                    }
                };
                if !done {
                    return Checked::NotDone;
                }
                tracing::info!(connection = %conn.name, request = %req.name, "already in effect on the platform; not resent");
                ex.already_done = true;
                ex.summary.request = format!("{} (check: {})", req.name, check.request);
                Checked::Done(ex)
            }
            Err(CallError::Failed { message, retryable, retry_after, summary, .. }) => {
                let message = format!("{} could not be checked before a resend: {message}", req.name);
                Checked::Unknown(CallError::Failed { message, retryable, ambiguous: true, retry_after, summary, auth_refused: false })
            }
            Err(e) => Checked::Unknown(e),
        }
    }

    /// Render a request as it would be sent with the connection's static
    /// auth (stateful credentials are added when it is sent).
    pub fn prepare(&self, templates: &Templates, conn: &Connection, req: &RequestSpec, ctx: &Value) -> Result<PreparedRequest, CallError> {
        render_request(templates, conn, req, ctx, None, None)
    }

    /// One attempt, with a stateful credential obtained (and renewed once
    /// when the platform refuses it) as the connector's auth needs.
    pub async fn call(&self, templates: &Templates, conn: &Connection, req: &RequestSpec, ctx: &Value) -> Result<Exchange, CallError> {
        self.call_at(templates, conn, req, ctx, None).await
    }

    async fn call_at(
        &self,
        templates: &Templates,
        conn: &Connection,
        req: &RequestSpec,
        ctx: &Value,
        link: Option<&str>,
    ) -> Result<Exchange, CallError> {
        let stateful = matches!(conn.connector.auth, Auth::OAuth2(_) | Auth::Session(_));
        if !stateful || !req.authenticate {
            return self.attempt(templates, conn, req, ctx, None, &[], link).await;
        }
        let state = self.state(conn)?;
        let credential = credentials::current(self, templates, conn, &state.credential).await?;
        match self.attempt(templates, conn, req, ctx, Some(&credential), &[], link).await {
            Err(CallError::Failed { auth_refused: true, message, .. }) => {
                tracing::info!(connection = %conn.name, request = %req.name, "credential refused ({message}); renewing it");
                state.credential.invalidate(credential.generation()).await;
                let renewed = credentials::current(self, templates, conn, &state.credential).await?;
                self.attempt(templates, conn, req, ctx, Some(&renewed), &[], link).await.map_err(|e| match e {
                    CallError::Failed { message, ambiguous, retry_after, summary, auth_refused: true, .. } => CallError::Failed {
                        message: format!("{message} (a fresh credential was refused too)"),
                        retryable: false,
                        ambiguous,
                        retry_after,
                        summary,
                        auth_refused: false,
                    },
                    other => other,
                })
            }
            other => other,
        }
    }

    /// One attempt without the connector's auth (token and login calls).
    pub(super) async fn call_unauthenticated(
        &self,
        templates: &Templates,
        conn: &Connection,
        req: &RequestSpec,
        ctx: &Value,
        redact: &[Secret],
    ) -> Result<Exchange, CallError> {
        self.attempt(templates, conn, req, ctx, None, redact, None).await
    }

    #[allow(clippy::too_many_arguments)]
    async fn attempt(
        &self,
        templates: &Templates,
        conn: &Connection,
        req: &RequestSpec,
        ctx: &Value,
        credential: Option<&Credential>,
        redact_more: &[Secret],
        link: Option<&str>,
    ) -> Result<Exchange, CallError> {
        let prepared = match credential {
            Some(c) => render_request(templates, conn, req, &with_session(conn, ctx, c), Some(c), link)?,
            None => render_request(templates, conn, req, ctx, None, link)?,
        };
        if let Some(c) = credential {
            c.touch();
        }
        let path = prepared.path.clone();
        let state = self.state(conn)?;
        if let Some(limit) = &conn.rate_limit {
            state.bucket.acquire(limit).await;
        }

        let mut summary = CallSummary {
            request: req.name.clone(),
            method: req.method.as_str().to_string(),
            path: summary_path(&path).to_string(),
            status: None,
            duration_ms: 0,
            attempts: 1,
            error: None,
        };
        let started = Instant::now();
        let scrub = |text: &str| {
            let more = credential.map(|c| c.redact.as_slice()).unwrap_or_default();
            redact(text, conn.secrets.values().chain(more).chain(redact_more))
        };
        let fail = |mut summary: CallSummary, message: String, retryable: bool, ambiguous: bool, retry_after: Option<Duration>| {
            let message = scrub(&message);
            summary.error = Some(message.clone());
            CallError::Failed { message, retryable, ambiguous, retry_after, summary: Box::new(summary), auth_refused: false }
        };
        let settle = |body: &Value| {
            if let Some(limit) = &conn.rate_limit {
                state.bucket.settle(limit, body);
            }
        };

        let answer = match &self.transport {
            Transport::Http => send_http(&state.client, conn, prepared, req.timeout).await,
            Transport::Scripted(responder) => responder(req, &prepared, ctx),
        };
        let response = match answer {
            Ok(r) => r,
            Err(e) => {
                settle(&Value::Null);
                summary.duration_ms = started.elapsed().as_millis() as u64;
                return Err(fail(
                    summary,
                    format!("{} {} {}", req.method.as_str(), summary_path(&path), e.message),
                    true,
                    e.ambiguous,
                    None,
                ));
            }
        };
        let status = response.status;
        summary.status = Some(status);
        let retry_after = response.retry_after;
        let bytes = response.body;
        summary.duration_ms = started.elapsed().as_millis() as u64;
        let body: Value = if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes).unwrap_or(Value::Null) };
        settle(&body);

        if credential.is_some() {
            let relogin_when = match &conn.connector.auth {
                Auth::Session(s) => s.relogin_when.as_ref(),
                _ => None,
            };
            let refused_status = conn.connector.auth.renew_on().contains(&status);
            if refused_status || relogin_when.is_some_and(|p| p.query(&body).iter().any(|v| !is_empty(v))) {
                let detail = error_text(conn.connector.errors.message.as_ref().map(|p| p.query(&body)), &bytes);
                let mut e = fail(summary, format!("{} answered {status}: {detail}", req.name), false, false, retry_after);
                if let CallError::Failed { auth_refused, .. } = &mut e {
                    *auth_refused = true;
                }
                return Err(e);
            }
        }

        let rules = &conn.connector.errors;
        if let Some(t) = &rules.throttled {
            if t.first(&body).is_some() {
                return Err(fail(summary, format!("{} was throttled by the platform", req.name), true, false, retry_after));
            }
        }
        if !(200..300).contains(&status) {
            let detail = error_text(rules.message.as_ref().map(|p| p.query(&body)), &bytes);
            let retryable = status == 429 || conn.connector.retry.retry_statuses.contains(&status);
            return Err(fail(summary, format!("{} answered {status}: {detail}", req.name), retryable, status >= 500, retry_after));
        }
        if let Some(p) = &rules.message {
            let found = p.query(&body);
            if !found.is_empty() {
                return Err(fail(
                    summary,
                    format!("{} reported errors: {}", req.name, error_text(Some(found), &bytes)),
                    false,
                    false,
                    None,
                ));
            }
        }
        if let Some(p) = &req.user_errors {
            let found: Vec<&Value> = p.query(&body).into_iter().filter(|v| !is_empty(v)).collect();
            if !found.is_empty() {
                return Err(fail(summary, format!("{} was refused: {}", req.name, error_text(Some(found), &bytes)), false, false, None));
            }
        }
        if let Some(p) = &req.success_when {
            if !p.query(&body).into_iter().any(|v| !matches!(v, Value::Null | Value::Bool(false)) && !is_empty(v)) {
                return Err(fail(
                    summary,
                    format!("{} was declined: the platform answered {}", req.name, error_text(None, &bytes)),
                    false,
                    false,
                    None,
                ));
            }
        }
        // A multi-SKU answer is split by the stock lookup, which knows the SKUs asked for.
        let extracts = if req.extract.is_empty() || req.per_sku.is_some() {
            Value::Object(Map::new())
        } else {
            extract_object(&req.extract, &body).map_err(|e| fail(summary.clone(), format!("{}: {e}", req.name), false, false, None))?
        };
        Ok(Exchange { status, body, extracts, summary, already_done: false, cookies: response.cookies })
    }
}

/// The context a request of a session connector renders with: `session.*`
/// and the secrets its requests may read.
fn with_session(conn: &Connection, ctx: &Value, credential: &Credential) -> Value {
    let Auth::Session(spec) = &conn.connector.auth else { return ctx.clone() };
    let mut out = ctx.clone();
    if let Value::Object(m) = &mut out {
        m.insert("session".into(), credential.session.clone());
        if !spec.request_secrets.is_empty() {
            let secrets: Map<String, Value> = spec
                .request_secrets
                .iter()
                .filter_map(|name| conn.secret(name).map(|s| (name.clone(), Value::String(s.expose().to_string()))))
                .collect();
            m.insert("secrets".into(), Value::Object(secrets));
        }
    }
    out
}

/// Render a request: URL (base, path, query, or an absolute URL), headers
/// (auth included), body.
fn render_request(
    templates: &Templates,
    conn: &Connection,
    req: &RequestSpec,
    ctx: &Value,
    credential: Option<&Credential>,
    link: Option<&str>,
) -> Result<PreparedRequest, CallError> {
    let scope = templates.scope(ctx);
    let mut path = scope.render(&req.path)?;
    let mut url = if path.starts_with("https://") || path.starts_with("http://") {
        path.clone()
    } else {
        format!("{}{}", conn.base_url.trim_end_matches('/'), path)
    };
    if let Some(link) = link {
        let base = reqwest::Url::parse(&url).map_err(|e| CallError::Render(format!("{}: `{url}` is not a URL: {e}", req.name)))?;
        let next = base.join(link).map_err(|e| CallError::Render(format!("{}: next-page link `{link}` is not a URL: {e}", req.name)))?;
        url = next.to_string();
        path = match next.query() {
            Some(q) => format!("{}?{q}", next.path()),
            None => next.path().to_string(),
        };
    }
    let mut sep = if url.contains('?') { '&' } else { '?' };
    for (k, t) in req.query.iter().filter(|_| link.is_none()) {
        // A parameter that renders empty is left out (e.g. no cursor on a first poll).
        let v = scope.render(t)?;
        if !v.is_empty() {
            url.push(sep);
            url.push_str(&percent_encode(k));
            url.push('=');
            url.push_str(&percent_encode(&v));
            sep = '&';
        }
    }
    let mut headers = Vec::with_capacity(req.headers.len() + 4);
    for (k, t) in conn.connector.default_headers.iter().chain(req.headers.iter()) {
        headers.push((k.clone(), scope.render(t)?));
    }
    let body = match &req.body {
        Body::None => None,
        Body::Json(t) => {
            let v = render_json(&scope, t)?;
            headers.push(("content-type".into(), "application/json".into()));
            Some(serde_json::to_vec(&v).expect("JSON values serialize"))
        }
        Body::Text { template, content_type } => {
            headers.push(("content-type".into(), content_type.clone()));
            Some(scope.render(template)?.into_bytes())
        }
        Body::Form(fields) => {
            let mut pairs = Vec::with_capacity(fields.len());
            for (k, t) in fields {
                pairs.push((k.as_str(), scope.render(t)?));
            }
            headers.push(("content-type".into(), "application/x-www-form-urlencoded".into()));
            Some(form_encode(&pairs).into_bytes())
        }
    };
    if req.authenticate {
        headers.extend(auth::static_headers(conn, &url).map_err(|e| CallError::Render(e.to_string()))?);
        if let Some(c) = credential {
            headers.extend(c.headers.iter().cloned());
        }
    }
    Ok(PreparedRequest { method: req.method.as_str(), url, path, headers, body })
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

pub fn render_json(scope: &Scope, t: &JsonTemplate) -> Result<Value, RenderFailure> {
    Ok(match t {
        JsonTemplate::Fixed(v) => v.clone(),
        JsonTemplate::String(t) => scope.render_value(t)?,
        JsonTemplate::Array(items) => Value::Array(items.iter().map(|i| render_json(scope, i)).collect::<Result<_, _>>()?),
        JsonTemplate::Object(fields) => {
            let mut m = Map::with_capacity(fields.len());
            for (k, v) in fields {
                m.insert(k.clone(), render_json(scope, v)?);
            }
            Value::Object(m)
        }
    })
}

fn form_encode(pairs: &[(&str, String)]) -> String {
    pairs.iter().map(|(k, v)| format!("{}={}", percent_encode(k), percent_encode(v))).collect::<Vec<_>>().join("&")
}

#[cfg(test)]
mod tests {
    use super::url_on_base;

    #[test]
    fn urls_built_on_a_parsed_base_match_parsing_them_whole() {
        let cases = [
            ("https://shop.example.com", "/admin/api/2025-01/graphql.json"),
            ("https://shop.example.com/", "/admin/api/2025-01/graphql.json"),
            ("http://127.0.0.1:8080", "/orders?status=open&since=2026-01-01T00:00:00Z"),
            ("https://erp.example.com/sap/opu/odata/sap/API_SALES_ORDER_SRV", "/A_SalesOrder('42')?$format=json&$filter=x eq 'a b'"),
            ("https://erp.example.com/b1s/v1/", "/Items('AM-100')?$select=ItemCode,QuantityOnStock"),
            ("https://api.example.com/v2", "/items/caf\u{e9} machine/../stock"),
            ("https://api.example.com/v2", "?only=query"),
            ("https://api.example.com/v2", ""),
            ("https://API.Example.com:443/a/", "/b/%7Bsku%7D/{sku}|x"),
        ];
        for (base, rest) in cases {
            let parsed = reqwest::Url::parse(base).unwrap();
            let full = format!("{}{rest}", base.trim_end_matches('/'));
            let built = url_on_base(Some(&parsed), base, &full).unwrap_or_else(|| panic!("{full} continues {base}"));
            assert_eq!(built, reqwest::Url::parse(&full).unwrap(), "{full}");
        }
    }

    #[test]
    fn urls_not_continuing_the_base_are_left_to_a_whole_parse() {
        let base = reqwest::Url::parse("https://shop.example.com/api").unwrap();
        for url in ["https://cdn.example.com/page?2", "https://shop.example.com/apix/1", "https://shop.example.com/api/a#frag"] {
            assert!(url_on_base(Some(&base), "https://shop.example.com/api", url).is_none(), "{url}");
        }
        assert!(url_on_base(None, "https://shop.example.com", "https://shop.example.com/a").is_none());
    }
}
