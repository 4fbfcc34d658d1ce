//! Running workflow test cases against the real engine, offline.
//!
//! Each case gets a fresh state file and a runtime whose HTTP client answers
//! from the case instead of the network. The delivery goes through intake
//! (signed with a stand-in secret), then mapping, lookups, the rule, the
//! reservation and the write-back run exactly as in the daemon. Time is the
//! case's fixed clock for the rule, and tokio's paused clock for waits, so
//! retries with backoff cost nothing.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, HeaderName, HeaderValue};
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};

use super::diff;
use super::file::{CaseRaw, ExpectedRequest, Failure, LedgerRaw, ResponseRaw, TestFile};
use crate::clock::{FixedClock, parse_instant};
use crate::config::ConfigSet;
use crate::config::diagnostic::{Diagnostic, did_you_mean};
use crate::config::yaml::{self, Parsed};
use crate::connector::client::{HttpClient, PreparedRequest, RawResponse, TransportError};
use crate::connector::webhook;
use crate::model::Incoming;
use crate::reload::registry::Registry;
use crate::runtime::{Runtime, intake, process};
use crate::store::{StockRow, Store};
use crate::workflow::{Trigger, Workflow};

/// The name test files use for the OAuth token call.
const OAUTH2_TOKEN: &str = "oauth2_token";

/// The outcome of one case.
#[derive(Debug)]
pub struct CaseResult {
    pub name: String,
    pub failures: Vec<String>,
    pub took: Duration,
}

impl CaseResult {
    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }
}

/// The outcome of one test file: its cases, or why it could not run.
#[derive(Debug)]
pub struct FileResult {
    pub path: PathBuf,
    pub cases: Vec<CaseResult>,
    pub errors: Vec<Diagnostic>,
    /// Why the file's cases did not run although nothing is wrong with it
    /// (its workflow's platform is not connected in the instance config).
    pub skipped: Option<String>,
}

/// A request the engine sent during a case.
#[derive(Debug, Clone)]
struct Captured {
    request: String,
    write_back: bool,
    method: String,
    path: String,
    query: BTreeMap<String, String>,
    headers: Vec<(String, String)>,
    body: Value,
}

/// Run every case of one test file against `cfg` (loaded with stand-in secrets).
pub fn run_file(cfg: &Arc<ConfigSet>, path: &Path) -> FileResult {
    let mut result = FileResult { path: path.to_path_buf(), cases: Vec::new(), errors: Vec::new(), skipped: None };
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => {
            result.errors.push(Diagnostic::new(path, (1, 1), "", format!("the test file cannot be read: {e}")));
            return result;
        }
    };
    let parsed: Parsed<TestFile> = match yaml::parse(path, &text) {
        Ok(p) => p,
        Err(d) => {
            result.errors.push(d);
            return result;
        }
    };
    let spans = &parsed.spans;
    let file = &parsed.value;
    let at = |field: &str, message: String| Diagnostic::new(path, spans.locate(field), field, message);
    let Some(wf) = cfg.workflows.get(&file.workflow).cloned() else {
        // A shipped workflow whose platform the instance config does not connect.
        let inactive = format!("workflow `{}` is inactive", file.workflow);
        if let Some(w) = cfg.warnings.iter().find(|w| w.message.starts_with(&inactive)) {
            result.skipped = Some(w.message.clone());
            return result;
        }
        let mut d = at("workflow", format!("no workflow named `{}`", file.workflow));
        if let Some(s) = did_you_mean(&file.workflow, cfg.workflows.keys().map(String::as_str)) {
            d = d.with_help(format!("did you mean `{s}`?"));
        }
        result.errors.push(d);
        return result;
    };
    let now = match &file.now {
        None => time::macros::datetime!(2026-01-01 00:00 UTC),
        Some(n) => match parse_instant(n) {
            Some(t) => t,
            None => {
                result.errors.push(at("now", format!("`{n}` is not an RFC 3339 time")));
                return result;
            }
        },
    };
    for (i, case) in file.cases.iter().enumerate() {
        let requests = &wf.connection.connector.requests;
        let oauth2 = matches!(wf.connection.connector.auth, crate::connector::Auth::OAuth2(_));
        let known = |name: &str| requests.contains_key(name) || (oauth2 && name == OAUTH2_TOKEN);
        for name in case.expect.calls.keys() {
            if !known(name) {
                result.errors.push(at(
                    &format!("cases.{i}.expect.calls.{name}"),
                    format!("connector `{}` has no request `{name}`", wf.connection.connector.name),
                ));
            }
        }
        for (name, list) in &case.responses {
            if !known(name) {
                let mut d = at(
                    &format!("cases.{i}.responses.{name}"),
                    format!("connector `{}` has no request `{name}`", wf.connection.connector.name),
                );
                if let Some(s) = did_you_mean(name, requests.keys().map(String::as_str)) {
                    d = d.with_help(format!("did you mean `{s}`?"));
                }
                result.errors.push(d);
            }
            for (j, r) in list.iter().enumerate() {
                if r.body.is_some() && r.body_text.is_some() {
                    result.errors.push(at(&format!("cases.{i}.responses.{name}.{j}"), "give `body` or `body_text`, not both".into()));
                }
            }
        }
        if case.trigger.payload.is_none() == case.trigger.payload_file.is_none() {
            result.errors.push(at(&format!("cases.{i}.trigger"), "give exactly one of `payload` and `payload_file`".into()));
        }
        if let Some(d) = &case.expect.decision {
            if crate::model::Decision::parse(d).is_none() {
                result.errors.push(at(
                    &format!("cases.{i}.expect.decision"),
                    format!("`{d}` is not a decision; expected approve, reject or waitlist"),
                ));
            }
        }
    }
    for name in file.responses.keys() {
        let requests = &wf.connection.connector.requests;
        if !requests.contains_key(name) && name != OAUTH2_TOKEN {
            result
                .errors
                .push(at(&format!("responses.{name}"), format!("connector `{}` has no request `{name}`", wf.connection.connector.name)));
        }
    }
    if !result.errors.is_empty() {
        return result;
    }
    let base = path.parent().unwrap_or(Path::new("."));
    for case in &file.cases {
        let started = Instant::now();
        let failures = match payload_of(case, base) {
            Ok(payload) => run_case(cfg, &wf, case, &file.responses, payload, now),
            Err(e) => vec![e],
        };
        result.cases.push(CaseResult { name: case.name.clone(), failures, took: started.elapsed() });
    }
    result
}

fn payload_of(case: &CaseRaw, base: &Path) -> Result<Vec<u8>, String> {
    match (&case.trigger.payload, &case.trigger.payload_file) {
        (Some(v), _) => Ok(serde_json::to_vec(v).expect("JSON values serialize")),
        (None, Some(f)) => std::fs::read(base.join(f)).map_err(|e| format!("payload file {f}: {e}")),
        (None, None) => Err("the case has no payload".into()),
    }
}

/// A dotted path (`sku`, `args.tags`, `order.number`) into a context.
fn lookup<'a>(ctx: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(ctx, |v, key| match v {
        Value::Object(m) => m.get(key),
        Value::Array(a) => key.parse::<usize>().ok().and_then(|i| a.get(i)),
        _ => None,
    })
}

struct Script {
    responses: BTreeMap<String, Vec<(ResponseRaw, u32)>>,
    captured: Vec<Captured>,
}

fn answer(
    script: &Mutex<Script>,
    req: &crate::connector::RequestSpec,
    p: &PreparedRequest,
    ctx: &Value,
) -> Result<RawResponse, TransportError> {
    let mut s = script.lock().unwrap_or_else(|e| e.into_inner());
    let (path, query) = split_url(&p.url, &p.path);
    let body = p
        .body
        .as_ref()
        .map_or(Value::Null, |b| serde_json::from_slice(b).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(b).into_owned())));
    s.captured.push(Captured {
        request: req.name.clone(),
        write_back: ctx.get("decision").is_some() || ctx.get("stock").and_then(|s| s.get("available")).is_some(),
        method: p.method.to_string(),
        path,
        query,
        headers: p.headers.clone(),
        body,
    });
    let chosen = s.responses.get_mut(&req.name).and_then(|list| {
        list.iter_mut().find(|(r, used)| r.times.is_none_or(|t| *used < t) && r.when.iter().all(|(k, v)| lookup(ctx, k) == Some(v))).map(
            |(r, used)| {
                *used += 1;
                r.clone()
            },
        )
    });
    let Some(r) = chosen else {
        let body = json!({"errors": format!("the test gives no response for request `{}` here", req.name)});
        if req.name == OAUTH2_TOKEN {
            // Token refreshes succeed unless the case says otherwise.
            let body = json!({"access_token": "test-access-token", "token_type": "bearer", "expires_in": 3600});
            return Ok(RawResponse { status: 200, body: serde_json::to_vec(&body).expect("JSON serializes"), ..RawResponse::default() });
        }
        return Ok(RawResponse { status: 501, body: serde_json::to_vec(&body).expect("JSON serializes"), ..RawResponse::default() });
    };
    match r.fail {
        Some(Failure::Timeout) => return Err(TransportError { message: "timed out (in the test)".into(), ambiguous: true }),
        Some(Failure::Reset) => return Err(TransportError { message: "connection reset (in the test)".into(), ambiguous: true }),
        None => {}
    }
    let body = match (&r.body, &r.body_text) {
        (Some(v), _) => serde_json::to_vec(v).expect("JSON values serialize"),
        (None, Some(t)) => t.clone().into_bytes(),
        (None, None) => Vec::new(),
    };
    let cookies = r.cookies.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    Ok(RawResponse { status: r.status.unwrap_or(200), retry_after: r.retry_after.map(Duration::from_secs_f64), body, cookies })
}

/// `https://h/x/y?a=1&b=2` with rendered path `/x/y` → (`/x/y`, {a: 1, b: 2}).
fn split_url(url: &str, path: &str) -> (String, BTreeMap<String, String>) {
    let path = path.split('?').next().unwrap_or(path).to_string();
    let query = url
        .split_once('?')
        .map(|(_, q)| q.split('&').filter_map(|kv| kv.split_once('=')).map(|(k, v)| (percent_decode(k), percent_decode(v))).collect())
        .unwrap_or_default();
    (path, query)
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(if b[i] == b'+' { b' ' } else { b[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn run_case(
    cfg: &Arc<ConfigSet>,
    wf: &Arc<Workflow>,
    case: &CaseRaw,
    shared: &BTreeMap<String, Vec<ResponseRaw>>,
    payload: Vec<u8>,
    now: time::OffsetDateTime,
) -> Vec<String> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().start_paused(true).build().expect("a test runtime starts");
    rt.block_on(run_case_async(cfg.clone(), wf.clone(), case, shared, payload, now)).unwrap_or_else(|e| vec![e])
}

async fn run_case_async(
    cfg: Arc<ConfigSet>,
    wf: Arc<Workflow>,
    case: &CaseRaw,
    shared: &BTreeMap<String, Vec<ResponseRaw>>,
    payload: Vec<u8>,
    now: time::OffsetDateTime,
) -> Result<Vec<String>, String> {
    let dir = std::env::temp_dir().join(format!("ordersync-test-{}-{:x}", std::process::id(), rand::random::<u64>()));
    let store = Store::open(&dir.join("state.redb")).map_err(|e| e.to_string())?;
    // The case's own answers come first; the file's shared ones after them.
    let mut responses: BTreeMap<String, Vec<(ResponseRaw, u32)>> =
        case.responses.iter().map(|(k, v)| (k.clone(), v.iter().map(|r| (r.clone(), 0)).collect())).collect();
    for (k, v) in shared {
        responses.entry(k.clone()).or_default().extend(v.iter().map(|r| (r.clone(), 0)));
    }
    let script = Arc::new(Mutex::new(Script { responses, captured: Vec::new() }));
    let responder_script = script.clone();
    let http = HttpClient::scripted(Arc::new(move |req, p, ctx| answer(&responder_script, req, p, ctx)));
    let (queue, mut rx) = mpsc::unbounded_channel();
    let (waitlist, _waitlist_rx) = mpsc::unbounded_channel();
    let (_stop, stopping) = watch::channel(false);
    let rt = Runtime {
        store: store.clone(),
        registry: Registry::from_live(cfg.clone(), cfg.paths.clone()),
        http,
        clock: Arc::new(FixedClock(now)),
        queue,
        stopping,
        attempts: Default::default(),
        waitlist,
        pushes: Default::default(),
    };

    seed_ledger(&store, &case.ledger, now).await?;
    let mut failures = Vec::new();
    let refused = deliver(&rt, &wf, case, &payload).await;
    match (refused, case.expect.refused) {
        (Some(got), Some(want)) if got == want => {}
        (Some(got), Some(want)) => failures.push(format!("the delivery was refused with {got}, expected {want}")),
        (Some(got), None) => failures.push(format!("the delivery was refused with {got}")),
        (None, Some(want)) => failures.push(format!("the delivery was accepted, expected a refusal with {want}")),
        (None, None) => {}
    }
    // Process until nothing is left: retried events come back after a backoff,
    // which the paused clock skips.
    for _ in 0..1000 {
        match rx.try_recv() {
            Ok(id) => process::process_event(&rt, id).await,
            Err(_) => {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                match rx.try_recv() {
                    Ok(id) => process::process_event(&rt, id).await,
                    Err(_) => break,
                }
            }
        }
    }
    let orders = store.orders(None, 10).map_err(|e| e.to_string())?;
    let failed_events = store.failed_events().map_err(|e| e.to_string())?;
    let dead_letters = store.dead_letters().map_err(|e| e.to_string())?;
    let captured = script.lock().unwrap_or_else(|e| e.into_inner()).captured.clone();
    check(&case.expect, orders.first(), &failed_events, &dead_letters, &captured, &mut failures);
    for (name, want) in &case.expect.calls {
        let got = captured.iter().filter(|c| c.request == *name).count() as u32;
        if got != *want {
            failures.push(format!("calls of {name}: expected {want}, sent {got}"));
        }
    }
    for (sku, want) in &case.expect.stock {
        let on_hand: i64 = store.stock(sku).map_err(|e| e.to_string())?.iter().map(|(_, r)| r.on_hand).sum();
        let reserved = store.reserved_total(sku).map_err(|e| e.to_string())?;
        if want.on_hand.is_some_and(|w| w != on_hand) || want.reserved.is_some_and(|w| w != reserved) {
            failures.push(format!("stock of {sku}: expected {want:?}, the ledger has on_hand {on_hand}, reserved {reserved}"));
        }
    }
    store.close().await;
    drop(store);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(failures)
}

/// Deliver the payload as the platform would; `Some(status)` when refused.
async fn deliver(rt: &Runtime, wf: &Workflow, case: &CaseRaw, payload: &[u8]) -> Option<u16> {
    let conn = &wf.connection;
    match &wf.trigger {
        Trigger::Webhook { events, .. } => {
            let mut headers = HeaderMap::new();
            let spec = conn.connector.webhook.as_ref();
            if let (Some(h), Some(e)) = (spec.and_then(|s| s.event_header.as_ref()), events.first()) {
                if let (Ok(n), Ok(v)) = (HeaderName::from_bytes(h.as_bytes()), HeaderValue::from_str(e)) {
                    headers.insert(n, v);
                }
            }
            let url = format!("https://ordersync.test/hooks/{}", wf.name);
            if let Some(sig) = spec.and_then(|s| s.signature.as_ref()).filter(|_| !case.trigger.unsigned) {
                let secret = conn.secret(&sig.secret).map(|s| s.expose().to_string()).unwrap_or_default();
                if let (Ok(n), Ok(v)) =
                    (HeaderName::from_bytes(sig.header.as_bytes()), HeaderValue::from_str(&webhook::sign(sig, &secret, &url, payload)))
                {
                    headers.insert(n, v);
                }
            }
            for (k, v) in &case.trigger.headers {
                if let (Ok(n), Ok(v)) = (HeaderName::from_bytes(k.as_bytes()), HeaderValue::from_str(v)) {
                    headers.insert(n, v);
                }
            }
            if payload.len() > spec.map_or(usize::MAX, |s| s.max_body_bytes) {
                return Some(413);
            }
            match intake::accept(rt, wf, &headers, payload, &url).await {
                Ok(_) => None,
                Err(intake::Refused::Signature(_)) => Some(401),
                Err(intake::Refused::BadJson(_)) => Some(400),
                Err(intake::Refused::Store(_)) => Some(503),
            }
        }
        _ => {
            let Ok(text) = String::from_utf8(payload.to_vec()) else { return Some(400) };
            let Ok(raw) = serde_json::value::RawValue::from_string(text) else { return Some(400) };
            let ev = crate::store::NewEvent {
                workflow: wf.name.clone(),
                received_at: rt.now(),
                delivery_ids: vec!["test:case".into()],
                event_type: None,
                payload: raw,
            };
            match rt.store.write(move |w| w.enqueue_event(ev)).await {
                Ok(crate::store::Enqueued::New(id)) => {
                    let _ = rt.queue.send(id);
                    None
                }
                _ => Some(503),
            }
        }
    }
}

fn check(
    expect: &super::file::ExpectRaw,
    order: Option<&crate::model::OrderRecord>,
    failed: &[crate::store::FailedEvent],
    dead: &[crate::store::DeadLetter],
    captured: &[Captured],
    failures: &mut Vec<String>,
) {
    let status = order.map(|o| o.status.as_str());
    let error = order
        .and_then(|o| o.error.clone())
        .or_else(|| failed.first().map(|f| f.error.clone()))
        .or_else(|| dead.first().map(|d| format!("step {}: {}", d.step, d.error)));
    let explain = || match (order, &error) {
        (Some(o), Some(e)) => format!(" (status {}, error: {e})", o.status.as_str()),
        (Some(o), None) => format!(" (status {}, reason: {})", o.status.as_str(), o.reason),
        (None, Some(e)) => format!(" (no order; the event failed: {e})"),
        (None, None) => " (no order was recorded)".into(),
    };
    if let Some(d) = &expect.decision {
        let want = crate::model::Decision::parse(d).map(|d| d.status().as_str());
        if status != want {
            failures.push(format!("decision: expected {d}, got {}{}", status.unwrap_or("none"), explain()));
        }
    }
    if let Some(s) = &expect.status {
        // `none`: no order was recorded at all.
        if status.unwrap_or("none") != s.as_str() {
            failures.push(format!("status: expected {s}, got {}{}", status.unwrap_or("none"), explain()));
        }
    }
    if let Some(r) = &expect.reason {
        let got = order.map(|o| o.reason.as_str()).unwrap_or("");
        if got != r {
            failures.push(format!("reason: expected \"{r}\", got \"{got}\""));
        }
    }
    if let Some(r) = &expect.reason_contains {
        let got = order.map(|o| o.reason.as_str()).unwrap_or("");
        if !got.contains(r.as_str()) {
            failures.push(format!("reason: expected it to contain \"{r}\", got \"{got}\""));
        }
    }
    if let Some(e) = &expect.error_contains {
        match &error {
            Some(got) if got.contains(e.as_str()) => {}
            Some(got) => failures.push(format!("error: expected it to contain \"{e}\", got \"{got}\"")),
            None => failures.push(format!("error: expected one containing \"{e}\", there was none{}", explain())),
        }
    }
    if let Some(a) = &expect.allocations {
        let got: Vec<(String, i64)> = order.map(|o| o.allocations.iter().map(|l| (l.sku.clone(), l.qty)).collect()).unwrap_or_default();
        let want: Vec<(String, i64)> = a.iter().map(|l| (l.sku.clone(), l.qty)).collect();
        if got != want {
            failures.push(format!("allocations: expected {want:?}, got {got:?}"));
        }
    }
    if let Some(w) = &expect.writeback {
        let got = order
            .map(|o| serde_json::to_value(o.writeback).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default())
            .unwrap_or_else(|| "none".into());
        if got != *w {
            failures.push(format!("write-back: expected {w}, got {got}{}", explain()));
        }
    }
    if let Some(want) = &expect.requests {
        let sent: Vec<&Captured> = captured.iter().filter(|c| c.write_back).collect();
        for (i, w) in want.iter().enumerate() {
            match sent.get(i) {
                None => failures.push(format!(
                    "request {}: expected {} ({}), nothing more was sent",
                    i + 1,
                    w.request,
                    w.method.as_deref().unwrap_or("any method")
                )),
                Some(got) => {
                    if let Some(diff) = compare_request(w, got) {
                        failures.push(format!("request {} ({}) differs, - expected + sent:\n{diff}", i + 1, w.request));
                    }
                }
            }
        }
        for (i, extra) in sent.iter().enumerate().skip(want.len()) {
            failures.push(format!("request {}: {} {} {} was sent but not expected", i + 1, extra.request, extra.method, extra.path));
        }
    }
}

/// The parts of a sent request the expectation names, side by side; `None` when they agree.
fn compare_request(w: &ExpectedRequest, got: &Captured) -> Option<String> {
    let mut want_v = serde_json::Map::new();
    let mut got_v = serde_json::Map::new();
    let mut field = |name: &str, want: Value, actual: Value| {
        want_v.insert(name.into(), want);
        got_v.insert(name.into(), actual);
    };
    field("request", json!(w.request), json!(got.request));
    if let Some(m) = &w.method {
        field("method", json!(m.to_ascii_uppercase()), json!(got.method));
    }
    if let Some(p) = &w.path {
        field("path", json!(p), json!(got.path));
    }
    if let Some(q) = &w.query {
        let actual: serde_json::Map<String, Value> = q.keys().filter_map(|k| got.query.get(k).map(|v| (k.clone(), json!(v)))).collect();
        field("query", json!(q), Value::Object(actual));
    }
    if !w.headers.is_empty() {
        let actual: serde_json::Map<String, Value> = w
            .headers
            .keys()
            .filter_map(|k| got.headers.iter().find(|(h, _)| h.eq_ignore_ascii_case(k)).map(|(_, v)| (k.clone(), json!(v))))
            .collect();
        field("headers", json!(w.headers), Value::Object(actual));
    }
    if let Some(b) = &w.body {
        field("body", b.clone(), got.body.clone());
    }
    if let Some(b) = &w.body_includes {
        field("body", b.clone(), pick(b, &got.body));
    }
    if !w.body_contains.is_empty() {
        let text = match &got.body {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        let found = w
            .body_contains
            .iter()
            .map(|piece| if text.contains(piece.as_str()) { json!(piece) } else { json!(format!("(not in the body) {piece}")) });
        field("body_contains", json!(w.body_contains), Value::Array(found.collect()));
    }
    let (want_v, got_v) = (Value::Object(want_v), Value::Object(got_v));
    (want_v != got_v).then(|| {
        diff::lines(&serde_json::to_string_pretty(&want_v).unwrap_or_default(), &serde_json::to_string_pretty(&got_v).unwrap_or_default())
    })
}

/// The parts of `actual` that `pattern` names (so a subset that matches compares equal).
fn pick(pattern: &Value, actual: &Value) -> Value {
    match (pattern, actual) {
        (Value::Object(p), Value::Object(a)) => {
            Value::Object(p.keys().filter_map(|k| a.get(k).map(|v| (k.clone(), pick(&p[k], v)))).collect())
        }
        (Value::Array(p), Value::Array(a)) if p.len() == a.len() => Value::Array(p.iter().zip(a).map(|(p, a)| pick(p, a)).collect()),
        (_, a) => a.clone(),
    }
}

/// Put a case's `ledger` in the store, as the stock master would have reported it.
async fn seed_ledger(store: &Store, ledger: &BTreeMap<String, LedgerRaw>, now: time::OffsetDateTime) -> Result<(), String> {
    struct Seed {
        sku: String,
        rows: Vec<(String, StockRow)>,
        incoming: Vec<Incoming>,
    }
    let reported_at = now.format(&time::format_description::well_known::Rfc3339).map_err(|e| e.to_string())?;
    let row = |l: &LedgerRaw, on_hand: i64| StockRow { on_hand, reported_at: reported_at.clone(), source: l.source.clone() };
    let seeds: Vec<Seed> = ledger
        .iter()
        .map(|(sku, l)| Seed {
            sku: sku.clone(),
            rows: l.on_hand.iter().map(|(location, n)| (location.clone(), row(l, *n))).collect(),
            incoming: l.incoming.iter().map(|i| Incoming { qty: i.qty, eta: i.eta.clone(), days_until: None }).collect(),
        })
        .collect();
    store
        .write(move |w| {
            for seed in &seeds {
                for (location, row) in &seed.rows {
                    w.put_stock(&seed.sku, location, row)?;
                }
                w.set_incoming(&seed.sku, &seed.incoming)?;
            }
            Ok(())
        })
        .await
        .map_err(|e| format!("seeding the ledger: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subsets_pick_what_the_pattern_names() {
        let got = json!({"query": "q", "variables": {"id": "gid://x", "tags": ["a"]}});
        assert_eq!(pick(&json!({"variables": {"tags": ["a"]}}), &got), json!({"variables": {"tags": ["a"]}}));
        assert_eq!(pick(&json!({"variables": {"tags": ["b"]}}), &got), json!({"variables": {"tags": ["a"]}}));
    }

    #[test]
    fn urls_split_into_path_and_query() {
        let (p, q) = split_url("https://x/api/v1/orders?modified_since=2026-01-01T00%3A00%3A00Z&page=2", "/api/v1/orders");
        assert_eq!(p, "/api/v1/orders");
        assert_eq!(q["modified_since"], "2026-01-01T00:00:00Z");
        assert_eq!(q["page"], "2");
    }
}
