//! Webhook intake: verify, deduplicate, commit, and only then acknowledge.
//!
//! Nothing is stored for a delivery that fails any check. A delivery whose
//! id was seen before is acknowledged again without being queued, so a
//! platform's retries never process an order twice.

use axum::http::HeaderMap;
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};

use super::Runtime;
use crate::connector::webhook::{self, VerifyError};
use crate::store::{Enqueued, NewEvent, StoreError};
use crate::telemetry::metrics::METRICS;
use crate::workflow::{Trigger, Workflow};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Accepted {
    Queued(u64),
    Duplicate(u64),
    /// An event type the workflow does not handle; acknowledged, not stored.
    Ignored(String),
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
        if let Some(sig) = spec.and_then(|s| s.signature.as_ref()) {
            webhook::verify(sig, conn.secret(&sig.secret), headers, body, url)?;
        }
        let event_type = spec
            .and_then(|s| s.event_header.as_ref())
            .and_then(|h| headers.get(h.as_str()))
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let events: &[String] = match &wf.trigger {
            Trigger::Webhook { events } => events,
            _ => &[],
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
        if delivery_ids.is_empty() {
            // Without an id header, an identical body is the same delivery.
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
        Ok(Accepted::Queued(_)) => "accepted",
        Ok(Accepted::Duplicate(_)) => "duplicate",
        Ok(Accepted::Ignored(_)) => "ignored",
        Err(Refused::Signature(_)) => "bad_signature",
        Err(Refused::BadJson(_)) => "bad_json",
        Err(Refused::Store(_)) => "store_error",
    };
    METRICS.inc("ordersync_webhooks_total", &[("workflow", &wf.name), ("result", label)]);
    result
}
