//! A throwaway installation for a benchmark: the shipped connectors and
//! rules, `n` workflows, secrets in files, and a sandbox to talk to.

use std::path::{Path, PathBuf};

use anyhow::Context as _;

use crate::sandbox::SandboxOptions;
use crate::sandbox::platforms::shopify::ShopifyCredentials;

pub struct BenchDir {
    pub dir: PathBuf,
}

impl Drop for BenchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for e in std::fs::read_dir(from)? {
        let e = e?;
        if e.file_type()?.is_dir() {
            copy_dir(&e.path(), &to.join(e.file_name()))?;
        } else {
            std::fs::copy(e.path(), to.join(e.file_name()))?;
        }
    }
    Ok(())
}

/// Sandbox options for load: Shopify's cost bucket out of the way.
pub fn load_sandbox_options() -> SandboxOptions {
    let mut o = SandboxOptions::generated();
    o.shopify_limits.maximum = 1e12;
    o.shopify_limits.restore_per_second = 1e12;
    o
}

impl BenchDir {
    /// Copy `source`'s connectors and rules, and write `workflows` Shopify
    /// workflows (`shopify-orders` plus numbered copies).
    pub fn create(source: &Path, workflows: usize, shopify_base: &str, creds: &ShopifyCredentials) -> anyhow::Result<BenchDir> {
        let dir = std::env::temp_dir().join(format!("ordersync-bench-{}-{:x}", std::process::id(), rand::random::<u32>()));
        let b = BenchDir { dir };
        copy_dir(&source.join("connectors.d"), &b.dir.join("connectors.d")).context("copying connectors.d")?;
        copy_dir(&source.join("workflows/rules"), &b.dir.join("workflows/rules")).context("copying workflows/rules")?;
        let template =
            std::fs::read_to_string(source.join("workflows/shopify-orders.yaml")).context("reading workflows/shopify-orders.yaml")?;
        std::fs::write(b.dir.join("workflows/shopify-orders.yaml"), &template)?;
        for i in 1..workflows {
            let text = template.replace("workflow: shopify-orders", &format!("workflow: shopify-orders-{i:03}"));
            std::fs::write(b.dir.join(format!("workflows/shopify-orders-{i:03}.yaml")), text)?;
        }
        let secrets = b.dir.join("secrets");
        std::fs::create_dir_all(&secrets)?;
        std::fs::write(secrets.join("admin-token"), crate::sandbox::random_hex(16))?;
        std::fs::write(secrets.join("shopify-token"), &creds.access_token)?;
        std::fs::write(secrets.join("shopify-webhook"), &creds.webhook_secret)?;
        let s = secrets.display();
        std::fs::write(
            b.dir.join("ordersync.yaml"),
            format!(
                "listen: 127.0.0.1:0\nadmin_token: file:{s}/admin-token\nconnections:\n  shopify-main:\n    connector: shopify\n    base_url: {shopify_base}\n    values:\n      shop: {}\n    secrets:\n      access_token: file:{s}/shopify-token\n      webhook_secret: file:{s}/shopify-webhook\n",
                creds.shop
            ),
        )?;
        Ok(b)
    }

    pub fn paths(&self) -> crate::config::ConfigPaths {
        crate::config::ConfigPaths::new(&self.dir, Some(self.dir.join("ordersync.yaml")))
    }
}

/// Write `n` finished past orders into a new state file, for runs that
/// measure the cost of a large history. Each leaves what a processed order
/// leaves: its delivery ids (kept for deduplication), its payload, its
/// record and its audit trail (the decision's entries in one row, the
/// write-back's in another). They arrived evenly over the past year, and
/// the ids of those older than the dedupe window are forgotten, as the
/// daemon does.
pub async fn prefill_orders(state: &Path, n: usize) -> anyhow::Result<()> {
    use crate::adapters::rules::AllocatedLine;
    use crate::model::{Customer, Line, Order, OrderRecord, OrderStatus, StatusChange, WritebackState};
    use crate::store::{AuditEntry, AuditKind, NewEvent};
    const YEAR_MS: i128 = 365 * 86_400_000;
    let now = time::OffsetDateTime::now_utc();
    let arrival = move |i: usize| {
        let ago = YEAR_MS * (n - i) as i128 / n.max(1) as i128;
        crate::clock::format_rfc3339(now - time::Duration::milliseconds(ago as i64))
    };
    let store = crate::store::Store::open(state)?;
    let mut written = 0;
    while written < n {
        let batch = (n - written).min(20_000);
        let start = written;
        store
            .write(move |w| {
                for i in start..start + batch {
                    let at = arrival(i);
                    let sku = format!("SP-OLD-{:06}", i % 5000);
                    let id = format!("history:{i}");
                    let payload = serde_json::json!({
                        "id": i, "name": format!("#H{i}"), "order_number": i, "email": format!("buyer{}@example.com", i % 977),
                        "created_at": at, "updated_at": at, "processed_at": at, "financial_status": "paid", "currency": "USD",
                        "customer": {"id": i % 977, "email": format!("buyer{}@example.com", i % 977), "first_name": "Past", "last_name": "Customer", "tags": ""},
                        "line_items": [{"id": i * 10, "sku": sku, "title": "Past machine", "quantity": 1, "price": "1200.00", "requires_shipping": true}],
                    })
                    .to_string();
                    let event = w.enqueue_event(NewEvent {
                        workflow: "shopify-orders".into(),
                        received_at: at.clone(),
                        delivery_ids: vec![
                            format!("X-Shopify-Webhook-Id:{}", crate::sandbox::uuid_like()),
                            format!("X-Shopify-Event-Id:evt-history-{i}"),
                        ],
                        event_type: Some("orders/create".into()),
                        payload: serde_json::value::RawValue::from_string(payload.clone()).expect("serialized JSON is valid JSON"),
                    })?;
                    if let crate::store::Enqueued::New(event_id) = event {
                        w.remove_event(event_id)?;
                    }
                    let order = Order {
                        id: id.clone(),
                        platform: "shopify".into(),
                        connection: "history".into(),
                        workflow: "shopify-orders".into(),
                        external_id: i.to_string(),
                        number: format!("#H{i}"),
                        customer: Customer { id: Some((i % 977).to_string()), name: Some("Past customer".into()), group: None },
                        lines: vec![Line { sku: sku.clone(), qty: 1, location: None, fields: Default::default() }],
                        received_at: at.clone(),
                    };
                    let status = if i % 7 == 0 { OrderStatus::Rejected } else { OrderStatus::Approved };
                    w.put_order(&OrderRecord {
                        order,
                        status,
                        reason: "past order".into(),
                        priority: 0,
                        error: None,
                        writeback: WritebackState::Done,
                        history: vec![StatusChange { at: at.clone(), status, reason: String::new() }],
                        stock_seen: Default::default(),
                        allocations: vec![AllocatedLine { sku: sku.clone(), qty: 1 }],
                        config_version: 1,
                        event_id: 0,
                        arrival: 0,
                    })?;
                    w.put_payload(&id, payload.as_bytes())?;
                    let entry = |kind, message: String| AuditEntry { at: at.clone(), kind, message, call: None };
                    w.audit_all(
                        &id,
                        &[
                            entry(AuditKind::Intake, "delivery accepted".into()),
                            entry(AuditKind::Lookup, format!("{sku}: 40 on hand")),
                            entry(AuditKind::Rule, format!("{status:?} by rule: past order")),
                            entry(AuditKind::Reserve, format!("{sku} x1 held")),
                        ],
                    )?;
                    w.audit(&id, &entry(AuditKind::Writeback, "tag_order: done".into()))?;
                }
                Ok(())
            })
            .await?;
        written += batch;
    }
    let now = crate::clock::format_rfc3339(now);
    while store
        .write({
            let now = now.clone();
            move |w| w.forget_delivery_ids(&now, 20_000)
        })
        .await?
        == 20_000
    {}
    store.close().await;
    Ok(())
}
