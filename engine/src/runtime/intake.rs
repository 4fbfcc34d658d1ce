//! Webhook intake: verify, deduplicate, commit, and only then acknowledge.
//!
//! Nothing is stored for a delivery that fails any check. A delivery whose
//! id was seen before is acknowledged again without being queued, so a
//! platform's retries never process an order twice.

use axum::http::HeaderMap;
use serde_json::Value;
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};

use super::Runtime;
use crate::adapters::jsonpath::JsonPath;
use crate::connector::DeliveryKey;
use crate::connector::webhook::{self, VerifyError};
use crate::store::{Enqueued, NewEvent, StoreError};
use crate::telemetry::metrics::METRICS;
use crate::workflow::mapping::scalar_text;
use crate::workflow::{Trigger, Workflow};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Accepted {
    Queued(u64),
    Duplicate(u64),
    /// A delivery batching several records: the events queued and how many were seen before.
    Batch {
        queued: Vec<u64>,
        duplicates: usize,
    },
    /// An event type the workflow does not handle; acknowledged, not stored.
    Ignored(String),
    /// The platform's ping (a webhook being saved); acknowledged, not stored.
    Ping,
}

#[derive(Debug, thiserror::Error)]
pub enum Refused {
    #[error("bad signature: {0}")]
    Signature(#[from] VerifyError),
    #[error("the body is not valid JSON: {0}")]
    BadJson(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Verify and commit one delivery for `wf`. `url` is the public URL it was posted to.
pub async fn accept(rt: &Runtime, wf: &Workflow, headers: &HeaderMap, body: &[u8], url: &str) -> Result<Accepted, Refused> {
    let conn = &wf.connection;
    let spec = conn.connector.webhook.as_ref();
    let result = async {
        if let Some(ping) = spec.and_then(|s| s.ping.as_ref()) {
            if std::str::from_utf8(body).is_ok_and(|text| ping.is_match(text.trim())) {
                return Ok(Accepted::Ping);
            }
        }
        if let Some(sig) = spec.and_then(|s| s.signature.as_ref()) {
            webhook::verify(sig, conn.secret(&sig.secret), headers, body, url)?;
        }
        // The body as JSON, parsed at most once, and only when something reads it.
        let mut doc: Option<Value> = None;
        let event_type = match spec.and_then(|s| s.event_path.as_ref()) {
            Some(path) => path.first(parsed(&mut doc, body)?).and_then(scalar_text),
            None => spec
                .and_then(|s| s.event_header.as_ref())
                .and_then(|h| headers.get(h.as_str()))
                .and_then(|v| v.to_str().ok())
                .map(str::to_string),
        };
        let (events, records, record_key): (&[String], _, &[JsonPath]) = match &wf.trigger {
            Trigger::Webhook { events, records, record_key } => (events, records.as_ref(), record_key),
            _ => (&[], None, &[]),
        };
        if !events.is_empty() {
            match &event_type {
                Some(t) if events.iter().any(|e| e == t) => {}
                other => {
                    return Ok(Accepted::Ignored(format!("event {} is not handled by {}", other.as_deref().unwrap_or("(none)"), wf.name)));
                }
            }
        }
        let text = std::str::from_utf8(body).map_err(|e| Refused::BadJson(e.to_string()))?;
        if let Some(records) = records {
            return accept_batch(rt, wf, parsed(&mut doc, body)?, records, record_key, event_type).await;
        }
        let payload = RawValue::from_string(text.to_string()).map_err(|e| Refused::BadJson(e.to_string()))?;
        if !payload.get().trim_start().starts_with('{') {
            return Err(Refused::BadJson("expected a JSON object".into()));
        }
        let mut delivery_ids: Vec<String> = spec
            .map(|s| s.delivery_id_headers.as_slice())
            .unwrap_or_default()
            .iter()
            .filter_map(|h| headers.get(h.as_str()).and_then(|v| v.to_str().ok()).filter(|v| !v.is_empty()).map(|v| format!("{h}:{v}")))
            .collect();
        if let Some(key) = spec.and_then(|s| s.delivery_key.as_ref()) {
            delivery_ids.push(delivery_key(key, headers, parsed(&mut doc, body)?));
        }
        if delivery_ids.is_empty() {
            // Without an id, an identical body is the same delivery.
            let digest = Sha256::digest(body);
            delivery_ids.push(format!("body-sha256:{}", webhook::encode_hex(&digest)));
        }
        let ev = NewEvent { workflow: wf.name.clone(), received_at: rt.now(), delivery_ids, event_type, payload };
        let outcome = rt.store.write(move |w| w.enqueue_event(ev)).await?;
        Ok(match outcome {
            Enqueued::New(id) => {
                let _ = rt.queue.send(id);
                Accepted::Queued(id)
            }
            Enqueued::Duplicate(id) => Accepted::Duplicate(id),
        })
    }
    .await;
    let label = match &result {
        Ok(Accepted::Queued(_) | Accepted::Batch { .. }) => "accepted",
        Ok(Accepted::Duplicate(_)) => "duplicate",
        Ok(Accepted::Ignored(_)) => "ignored",
        Ok(Accepted::Ping) => "ping",
        Err(Refused::Signature(_)) => "bad_signature",
        Err(Refused::BadJson(_)) => "bad_json",
        Err(Refused::Store(_)) => "store_error",
    };
    METRICS.inc("ordersync_webhooks_total", &[("workflow", &wf.name), ("result", label)]);
    result
}

/// The body as JSON, parsing it on first use.
fn parsed<'a>(doc: &'a mut Option<Value>, body: &[u8]) -> Result<&'a Value, Refused> {
    if doc.is_none() {
        *doc = Some(serde_json::from_slice(body).map_err(|e| Refused::BadJson(e.to_string()))?);
    }
    Ok(doc.as_ref().expect("parsed just above"))
}

/// Header values and body fields that together identify a delivery.
fn delivery_key(key: &DeliveryKey, headers: &HeaderMap, doc: &Value) -> String {
    let mut parts: Vec<String> =
        key.headers.iter().map(|h| headers.get(h.as_str()).and_then(|v| v.to_str().ok()).unwrap_or("").to_string()).collect();
    parts.extend(key.body.iter().map(|p| p.first(doc).map(|v| scalar_text(v).unwrap_or_else(|| v.to_string())).unwrap_or_default()));
    let digest = Sha256::digest(parts.join("\u{1f}").as_bytes());
    format!("key:{}", webhook::encode_hex(&digest[..16]))
}

/// A delivery that batches records: each record becomes an event, all
/// committed together; records seen before are duplicates.
async fn accept_batch(
    rt: &Runtime,
    wf: &Workflow,
    doc: &Value,
    records: &JsonPath,
    record_key: &[JsonPath],
    event_type: Option<String>,
) -> Result<Accepted, Refused> {
    let found = records.query(doc);
    if found.is_empty() {
        return Ok(Accepted::Ignored(format!("the delivery holds no records at `{}`", records.source())));
    }
    let now = rt.now();
    let mut events = Vec::with_capacity(found.len());
    for record in found {
        let identity = if record_key.is_empty() {
            webhook::encode_hex(&Sha256::digest(record.to_string().as_bytes())[..16])
        } else {
            record_key.iter().map(|p| p.first(record).and_then(scalar_text).unwrap_or_default()).collect::<Vec<_>>().join(":")
        };
        let payload = RawValue::from_string(record.to_string()).map_err(|e| Refused::BadJson(e.to_string()))?;
        events.push(NewEvent {
            workflow: wf.name.clone(),
            received_at: now.clone(),
            delivery_ids: vec![format!("record:{identity}")],
            event_type: event_type.clone(),
            payload,
        });
    }
    let outcomes = rt.store.write(move |w| events.into_iter().map(|ev| w.enqueue_event(ev)).collect::<Result<Vec<_>, _>>()).await?;
    let mut queued = Vec::new();
    let mut duplicates = 0;
    for o in outcomes {
        match o {
            Enqueued::New(id) => {
                let _ = rt.queue.send(id);
                queued.push(id);
            }
            Enqueued::Duplicate(_) => duplicates += 1,
        }
    }
    Ok(Accepted::Batch { queued, duplicates })
}
