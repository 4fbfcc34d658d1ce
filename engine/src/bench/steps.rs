//! Micro-benchmarks of the hot steps an order goes through, each on its own
//! with the shipped Shopify connector and workflow: the webhook signature
//! check, mapping the payload, rendering the stock lookup, extracting from
//! its answer, the rule, a reservation commit and group commits of N events.
//!
//! Each step runs in a loop for a fixed time after a warm-up; the report is
//! the mean time per operation. Like every benchmark here it asserts
//! nothing: the figures are read, not checked.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use axum::http::{HeaderMap, HeaderValue};
use serde::Serialize;
use serde_json::{Value, json};

use crate::adapters::rules::AllocatedLine;
use crate::config::{ConfigPaths, ConfigSet};
use crate::config::{LoadOptions, load};
use crate::connector::{Body, client, webhook};
use crate::inventory::InventorySettings;
use crate::inventory::ledger::{self, Effects};
use crate::model::StockView;
use crate::store::{NewEvent, StockRow, Store};
use crate::workflow::mapping::Origin;
use crate::workflow::{Kind, Workflow};

#[derive(Debug, Serialize)]
pub struct Step {
    pub step: String,
    pub iterations: u64,
    pub micros_per_op: f64,
}

#[derive(Debug, Serialize)]
pub struct StepsReport {
    pub steps: Vec<Step>,
}

/// Run `op` for about `budget` (after a tenth of it as warm-up); the mean.
fn measure(step: &str, budget: Duration, mut op: impl FnMut()) -> Step {
    let warm = Instant::now();
    while warm.elapsed() < budget / 10 {
        op();
    }
    let (started, mut iterations) = (Instant::now(), 0u64);
    while started.elapsed() < budget {
        op();
        iterations += 1;
    }
    Step { step: step.to_string(), iterations, micros_per_op: started.elapsed().as_secs_f64() * 1e6 / iterations as f64 }
}

/// The same for an async operation.
async fn measure_async<F, Fut>(step: &str, budget: Duration, mut op: F) -> anyhow::Result<Step>
where
    F: FnMut(u64) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let (started, mut iterations) = (Instant::now(), 0u64);
    while started.elapsed() < budget {
        op(iterations).await?;
        iterations += 1;
    }
    Ok(Step { step: step.to_string(), iterations, micros_per_op: started.elapsed().as_secs_f64() * 1e6 / iterations as f64 })
}

pub async fn steps(source: &Path, budget: Duration) -> anyhow::Result<StepsReport> {
    let paths = ConfigPaths::new(source, Some(source.join("examples/ordersync.yaml")));
    let cfg = load(&paths, LoadOptions { resolve_secrets: false, fake_secrets: true, ..LoadOptions::default() })
        .map_err(|d| anyhow::anyhow!("the shipped config does not load: {d:?}"))?;
    let wf = cfg.workflows.get("shopify-orders").context("the shipped shopify-orders workflow")?.clone();
    let Kind::Orders(flow) = &wf.kind else { bail!("shopify-orders is not an order workflow") };
    let body = std::fs::read(source.join("examples/payloads/shopify-orders-create.json")).context("the example Shopify payload")?;
    let payload: Value = serde_json::from_slice(&body)?;
    let mut out = Vec::new();

    // Webhook signature check (HMAC-SHA256 over the raw body, base64).
    let conn = &wf.connection;
    let sig = conn.connector.webhook.as_ref().and_then(|w| w.signature.as_ref()).context("Shopify's webhook signature")?;
    let secret = conn.secret(&sig.secret).context("the webhook secret")?;
    let mut headers = HeaderMap::new();
    let mac = webhook::hmac_bytes(sig.algorithm, secret.expose().as_bytes(), &body);
    use base64::Engine as _;
    headers.insert("x-shopify-hmac-sha256", HeaderValue::from_str(&base64::engine::general_purpose::STANDARD.encode(mac))?);
    webhook::verify(sig, Some(secret), &headers, &body, "").map_err(|e| anyhow::anyhow!("{e}"))?;
    out.push(measure("webhook signature check", budget, || {
        let _ = webhook::verify(sig, Some(secret), &headers, &body, "");
    }));

    // Parsing the payload and mapping it to the canonical order.
    let now = "2026-11-20T16:00:00Z";
    let origin = Origin { platform: "shopify", connection: &conn.name, workflow: &wf.name, now };
    out.push(measure("payload parse and mapping", budget, || {
        let v: Value = serde_json::from_slice(&body).expect("checked above");
        let _ = flow.mapping.map(&v, &origin, None);
    }));
    let order = flow.mapping.map(&payload, &origin, None).map_err(|e| anyhow::anyhow!(e.0))?;

    // Rendering the stock lookup request (path, headers, GraphQL body).
    // The context as the runtime builds it: the canonical order with the platform's `raw` payload.
    let mut ctx =
        json!({ "order": crate::runtime::orders::order_json(&order, &payload), "values": conn.values, "params": flow.params, "now": now });
    ctx["sku"] = json!(order.lines[0].sku);
    ctx["line"] = serde_json::to_value(&order.lines[0])?;
    ctx["skus"] = json!([order.lines[0].sku]);
    ctx["sku_count"] = json!(1);
    let lookup = &flow.stock.request;
    out.push(measure("template rendering (stock lookup request)", budget, || {
        let scope = cfg.templates.scope(&ctx);
        let _ = scope.render(&lookup.path);
        if let Body::Json(t) = &lookup.body {
            let _ = client::render_json(&scope, t);
        }
    }));

    // Extracting stock from Shopify's answer.
    let answer = shopify_inventory_answer(&order.lines[0].sku);
    out.push(measure("JSONPath extraction (stock answer)", budget, || {
        let _ = match &lookup.per_sku {
            Some(per) => crate::connector::extract::extract_per_sku(per, &lookup.extract, &answer, &[order.lines[0].sku.as_str()]).is_ok(),
            None => crate::connector::extract::extract_object(&lookup.extract, &answer).is_ok(),
        };
    }));

    // The rule over the order and its stock.
    out.push(rule_step(&cfg, &wf, &ctx, &order, budget)?);

    // Durable writes: one reservation per commit, then N events per commit.
    let dir = std::env::temp_dir().join(format!("ordersync-bench-steps-{}-{:x}", std::process::id(), rand::random::<u32>()));
    std::fs::create_dir_all(&dir)?;
    let store = Store::open(&dir.join("state.redb"))?;
    store
        .write(|w| w.put_stock("SKU-1", "main", &StockRow { on_hand: i64::MAX / 4, reported_at: String::new(), source: "bench".into() }))
        .await?;
    let settings = InventorySettings::default();
    out.push(
        measure_async("reservation commit (durable, one per commit)", budget, |i| {
            let (store, s) = (store.clone(), settings.clone());
            async move {
                store
                    .write(move |w| {
                        let lines = [AllocatedLine { sku: "SKU-1".into(), qty: 1 }];
                        ledger::reserve(w, &s, &format!("bench:{i}"), &lines, now, &mut Effects::default()).map(|_| ())
                    })
                    .await?;
                Ok(())
            }
        })
        .await?,
    );
    for n in [1usize, 10, 100] {
        let raw = serde_json::value::RawValue::from_string(String::from_utf8_lossy(&body).into_owned())?;
        let mut step = measure_async(&format!("group commit of {n} events (durable)"), budget, |i| {
            let (store, raw) = (store.clone(), raw.clone());
            async move {
                store
                    .write(move |w| {
                        for k in 0..n {
                            let ev = NewEvent {
                                workflow: "shopify-orders".into(),
                                received_at: now.into(),
                                delivery_ids: vec![format!("bench-{i}-{k}")],
                                event_type: None,
                                payload: raw.clone(),
                            };
                            w.enqueue_event(ev)?;
                        }
                        Ok(())
                    })
                    .await?;
                Ok(())
            }
        })
        .await?;
        step.step = format!("{} — {:.1} µs per event", step.step, step.micros_per_op / n as f64);
        out.push(step);
    }
    store.close().await;
    drop(store);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(StepsReport { steps: out })
}

fn rule_step(cfg: &ConfigSet, wf: &Workflow, ctx: &Value, order: &crate::model::Order, budget: Duration) -> anyhow::Result<Step> {
    let Kind::Orders(flow) = &wf.kind else { bail!("not an order workflow") };
    let mut views = BTreeMap::new();
    for line in &order.lines {
        let view = StockView { sku: line.sku.clone(), on_hand: 10, available: 10, ..StockView::default() };
        views.insert(line.sku.clone(), view);
    }
    let mut input = ctx.clone();
    input["stock"] = serde_json::to_value(&views)?;
    if !flow.rule.reads_raw {
        if let Some(Value::Object(order)) = input.get_mut("order") {
            order.remove("raw");
        }
    }
    if let Value::Object(m) = &mut input {
        m.remove("values");
    }
    cfg.rules.decide(&flow.rule, &input).map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(measure("rule evaluation (shipped amusement-machine rule)", budget, || {
        let _ = cfg.rules.decide(&flow.rule, &input);
    }))
}

/// What Shopify's `productVariants` query answers for one SKU at two locations.
fn shopify_inventory_answer(sku: &str) -> Value {
    let level = |loc: u32, on_hand: i64| {
        json!({ "location": { "id": format!("gid://shopify/Location/{loc}") },
                "quantities": [ { "name": "on_hand", "quantity": on_hand }, { "name": "available", "quantity": on_hand - 1 }, { "name": "incoming", "quantity": 2 } ] })
    };
    json!({ "data": { "productVariants": { "nodes": [ {
        "sku": sku,
        "product": { "status": "ACTIVE", "tags": ["pinball"] },
        "inventoryItem": { "id": "gid://shopify/InventoryItem/1", "inventoryLevels": { "nodes": [ level(1, 9), level(2, 3) ] } }
    } ] } },
    "extensions": { "cost": { "requestedQueryCost": 12, "actualQueryCost": 6, "throttleStatus": { "maximumAvailable": 2000.0, "currentlyAvailable": 1994, "restoreRate": 100.0 } } } })
}
