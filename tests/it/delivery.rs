//! Delivery guarantees: platform faults are ridden out, exhausted
//! write-backs are dead-lettered and can be replayed, redeliveries are
//! processed once, and kill -9 at any moment loses and doubles nothing.

use std::collections::BTreeMap;
use std::time::Duration;

use ordersync::sandbox::erp::{LineRequest, OrderState};
use ordersync::sandbox::faults::{FaultKind, FaultRule, When};
use serde_json::Value;

use crate::support::{TestEnv, cli, post_signed, wait_until};

fn rule(operation: Option<&str>, kind: FaultKind, rate: f64, when: When) -> FaultRule {
    FaultRule { platform: "shopify".into(), operation: operation.map(str::to_string), kind, rate, when, limit: None }
}

/// What the platform must show for an order, given our decision.
fn assert_written_back(env: &TestEnv, id: u64, status: &str) {
    let o = env.sandbox.erp.order(id).unwrap();
    match status {
        "approved" => assert!(o.tags.contains("stock-approved") && o.state == OrderState::Open, "{id}: {o:?}"),
        "waitlisted" => assert!(o.tags.contains("waitlist") && o.holds.len() == 1, "{id}: {o:?}"),
        "rejected" => assert!(o.tags.contains("stock-rejected") && o.state == OrderState::Cancelled, "{id}: {o:?}"),
        other => panic!("order {id} ended {other}"),
    }
}

/// Deliver until the daemon says 200, as a platform's retries would.
async fn deliver(env: &TestEnv, id: u64) {
    wait_until(&format!("delivery of {id}"), Duration::from_secs(60), || async {
        matches!(env.sandbox.redeliver(id).await, Ok(200)).then_some(())
    })
    .await;
}

const MIX: &[&[(&str, i64)]] = &[
    &[("SP-FLIPPER-COIL-2550", 1)],
    &[("CC-CLAW-MINI", 1)],
    &[("PB-STERN-JAWS-PREM", 5)],
    &[("BD-JAMMA-60IN1", 1), ("SP-FLIPPER-COIL-2550", 2)],
];

#[tokio::test]
async fn orders_complete_through_errors_timeouts_resets_and_throttling() {
    let env = TestEnv::new("faults").await;
    env.fast_retries(12);
    let loc = env.sandbox.erp.locations()[0].id;
    env.sandbox.erp.set_stock("SP-FLIPPER-COIL-2550", loc, 100_000, 0, None);
    env.sandbox.erp.set_stock("BD-JAMMA-60IN1", loc, 100_000, 0, None);
    let daemon = env.start_daemon().await;
    env.sandbox.faults.set(vec![
        rule(None, FaultKind::Throttle { retry_after_s: 0.05 }, 0.05, When::Before),
        rule(None, FaultKind::Timeout { delay_ms: 1_000 }, 0.05, When::After),
        rule(None, FaultKind::Reset, 0.03, When::After),
        rule(None, FaultKind::Status { status: 503 }, 0.10, When::Before),
        rule(None, FaultKind::Status { status: 500 }, 0.10, When::After),
    ]);
    let mut ids = Vec::new();
    for i in 0..120 {
        let o = env.sandbox.create_order("shopify", env.customer(i % 4), &lines(MIX[i % MIX.len()])).unwrap();
        ids.push(o.id);
    }
    for id in &ids {
        deliver(&env, *id).await;
    }
    let mut decisions = BTreeMap::new();
    for id in &ids {
        let body = daemon.finished(&format!("shopify-main:{id}"), Duration::from_secs(90)).await;
        let status = body["order"]["status"].as_str().unwrap().to_string();
        assert_eq!(body["order"]["writeback"], "done", "{body}");
        assert_written_back(&env, *id, &status);
        *decisions.entry(status).or_insert(0) += 1;
    }
    assert_eq!(decisions.len(), 3, "{decisions:?}");
    let fired: u64 = env.sandbox.faults.report().iter().map(|(_, n)| n).sum();
    assert!(fired > 30, "only {fired} faults fired");
    assert!(env.sandbox.erp.attempts().values().any(|n| *n > 1), "no effect was ever resent");
    assert_eq!(daemon.api("/api/dead-letters").await.1["dead_letters"], Value::Array(vec![]));
    daemon.stop().await;
}

fn lines(l: &[(&str, i64)]) -> Vec<LineRequest> {
    l.iter().map(|(s, q)| LineRequest { sku: s.to_string(), qty: *q }).collect()
}

#[tokio::test]
async fn a_platform_down_too_long_dead_letters_and_replay_delivers_once() {
    let env = TestEnv::new("dlq").await;
    env.fast_retries(3);
    let daemon = env.start_daemon().await;
    env.sandbox.faults.set(vec![rule(Some("tagsAdd"), FaultKind::Status { status: 503 }, 1.0, When::Before)]);
    let (a, _) = env.order(0, &[("CC-CLAW-42", 1)]).await;
    let (b, _) = env.order(1, &[("SP-FLIPPER-COIL-2550", 1)]).await;
    for id in [a, b] {
        let body = daemon.finished_order(id).await;
        assert_eq!(body["order"]["status"], "approved");
        assert_eq!(body["order"]["writeback"], "dead_lettered", "{body}");
    }
    let letters = daemon.api("/api/dead-letters").await.1["dead_letters"].clone();
    assert_eq!(letters.as_array().unwrap().len(), 2, "{letters}");
    assert!(letters[0]["error"].as_str().unwrap().contains("503"), "{letters}");
    let id_of = |order: u64| {
        letters.as_array().unwrap().iter().find(|d| d["order_id"] == format!("shopify-main:{order}")).unwrap()["id"].as_u64().unwrap()
    };

    // The platform is back: replay one from the command line, drop the other.
    env.sandbox.faults.clear();
    let out = cli(&daemon, &["dlq", "list"]).await;
    assert!(String::from_utf8_lossy(&out.stdout).contains(&format!("shopify-main:{a}")));
    let out = cli(&daemon, &["dlq", "replay", &id_of(a).to_string()]).await;
    assert!(
        out.status.success(),
        "{} {} {}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout),
        daemon.api(&format!("/api/orders/shopify-main:{a}")).await.1
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("write-back done"), "{}", String::from_utf8_lossy(&out.stdout));
    let out = cli(&daemon, &["dlq", "drop", &id_of(b).to_string()]).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    assert_eq!(daemon.finished_order(a).await["order"]["writeback"], "done");
    assert_written_back(&env, a, "approved");
    assert_eq!(env.sandbox.erp.attempts()[&format!("shopify:tag:{a}:stock-approved")], 1, "the tag reached the platform once");
    assert_eq!(daemon.finished_order(b).await["order"]["writeback"], "dropped");
    assert!(!env.sandbox.erp.order(b).unwrap().tags.contains("stock-approved"));
    assert_eq!(daemon.api("/api/dead-letters").await.1["dead_letters"], Value::Array(vec![]));
    daemon.stop().await;
}

#[tokio::test]
async fn a_delivery_sent_three_times_at_once_and_later_is_processed_once() {
    let env = TestEnv::new("redelivery").await;
    let daemon = env.start_daemon().await;
    let o = env.sandbox.create_order("shopify", env.customer(0), &lines(&[("CC-CLAW-42", 1)])).unwrap();
    let (r1, r2, r3) = tokio::join!(env.sandbox.redeliver(o.id), env.sandbox.redeliver(o.id), env.sandbox.redeliver(o.id));
    assert_eq!((r1.unwrap(), r2.unwrap(), r3.unwrap()), (200, 200, 200));
    daemon.finished_order(o.id).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(env.sandbox.redeliver(o.id).await.unwrap(), 200);
    let body = daemon.finished_order(o.id).await;
    let rules = body["audit"].as_array().unwrap().iter().filter(|e| e["kind"] == "rule").count();
    assert_eq!(rules, 1, "{body}");
    assert_eq!(daemon.status().await["queue_depth"], 0);
    assert_eq!(env.sandbox.erp.attempts()[&format!("shopify:tag:{}:stock-approved", o.id)], 1);
    daemon.stop().await;
}

/// Delivery ids are forgotten after the dedupe window; an order delivered
/// again after that, under ids never seen, is queued but not decided again.
#[tokio::test]
async fn an_order_delivered_again_under_new_ids_is_not_decided_twice() {
    let env = TestEnv::new("new-ids").await;
    let daemon = env.start_daemon().await;
    let o = env.sandbox.create_order("shopify", env.customer(0), &lines(&[("CC-CLAW-42", 1)])).unwrap();
    deliver(&env, o.id).await;
    daemon.finished_order(o.id).await;
    let order = env.sandbox.erp.order(o.id).unwrap();
    let body = serde_json::to_vec(&env.sandbox.shopify.order_payload(&order)).unwrap();
    assert_eq!(post_signed(&daemon, "/hooks/shopify-orders", &body, &env.creds.webhook_secret).await, 200);
    // Acknowledged means queued; an empty queue means it was handled.
    wait_until("the second delivery handled", Duration::from_secs(30), || async {
        (daemon.status().await["queue_depth"] == 0).then_some(())
    })
    .await;
    // Both deliveries were queued as new, none refused as a duplicate.
    let metrics = daemon.client.get(daemon.url("/metrics")).send().await.unwrap().text().await.unwrap();
    let accepted = r#"ordersync_webhooks_total{workflow="shopify-orders",result="accepted"} 2"#;
    assert!(metrics.lines().any(|l| l == accepted), "{metrics}");
    let body = daemon.finished_order(o.id).await;
    let audit = body["audit"].as_array().unwrap();
    assert_eq!(audit.iter().filter(|e| e["kind"] == "rule").count(), 1, "{body}");
    assert!(audit.iter().any(|e| e["kind"] == "intake" && e["message"].as_str().unwrap().contains("repeats order")), "{body}");
    assert_eq!(env.sandbox.erp.attempts()[&format!("shopify:tag:{}:stock-approved", o.id)], 1);
    let (_, reserved) = daemon.api("/api/inventory/CC-CLAW-42").await;
    assert_eq!(reserved["reserved"], 1, "{reserved}");
    daemon.stop().await;
}

#[tokio::test]
async fn kill_9_at_random_moments_loses_nothing_and_doubles_nothing() {
    let env = std::sync::Arc::new(TestEnv::new("crash").await);
    let loc = env.sandbox.erp.locations()[0].id;
    env.sandbox.erp.set_stock("SP-FLIPPER-COIL-2550", loc, 100_000, 0, None);
    env.sandbox.erp.set_stock("BD-JAMMA-60IN1", loc, 100_000, 0, None);
    // Some answers are slow, so kills land in the middle of requests too.
    env.sandbox.faults.set(vec![rule(None, FaultKind::Slow { delay_ms: 20 }, 0.2, When::After)]);
    let mut ids = Vec::new();
    for i in 0..1000 {
        ids.push(env.sandbox.create_order("shopify", env.customer(i % 4), &lines(MIX[i % MIX.len()])).unwrap().id);
    }
    let mut daemon = env.start_daemon().await;
    let sender = {
        let env = env.clone();
        let ids = ids.clone();
        tokio::spawn(async move {
            for id in ids {
                deliver(&env, id).await;
            }
        })
    };
    let mut kills = 0;
    while kills < 6 {
        tokio::time::sleep(Duration::from_millis(150 + rand::random::<u64>() % 350)).await;
        daemon.kill9();
        kills += 1;
        daemon = env.start_daemon().await;
    }
    sender.await.unwrap();

    let mut decisions = BTreeMap::new();
    for id in &ids {
        let body = daemon.finished(&format!("shopify-main:{id}"), Duration::from_secs(120)).await;
        let o = &body["order"];
        let status = o["status"].as_str().unwrap().to_string();
        assert_eq!(o["writeback"], "done", "{body}");
        // One decision, taken once.
        assert_eq!(o["history"].as_array().unwrap().len(), 2, "{body}");
        let rules = body["audit"].as_array().unwrap().iter().filter(|e| e["kind"] == "rule").count();
        assert_eq!(rules, 1, "{body}");
        assert_written_back(&env, *id, &status);
        *decisions.entry(status).or_insert(0) += 1;
    }
    assert_eq!(decisions.values().sum::<usize>(), 1000);
    assert_eq!(decisions.len(), 3, "{decisions:?}");
    // Every effect the platform recorded is one per key, and each expected one is there.
    let effects = env.sandbox.erp.effects();
    let mut per_key = BTreeMap::new();
    for e in &effects {
        *per_key.entry(e.key.clone()).or_insert(0) += 1;
    }
    assert!(per_key.values().all(|n| *n == 1));
    let expected: usize = decisions.get("approved").unwrap_or(&0)
        + 2 * decisions.get("waitlisted").unwrap_or(&0)
        + 2 * decisions.get("rejected").unwrap_or(&0);
    assert_eq!(effects.len(), expected, "effects {} for decisions {decisions:?}", effects.len());
    assert_eq!(daemon.api("/api/dead-letters").await.1["dead_letters"], Value::Array(vec![]));
    let status = daemon.status().await;
    assert_eq!(status["queue_depth"], 0);
    assert_eq!(status["orders"], 1000);
    daemon.stop().await;
}

#[tokio::test]
async fn the_rate_limit_keeps_a_burst_under_the_platforms_bucket() {
    use ordersync::sandbox::platforms::shopify::CostLimits;
    use std::sync::atomic::Ordering;
    // A small plan: 100 points in the bucket, 400 back per second; each call costs 10.
    let env = TestEnv::with_platform_limits(
        "ratelimit",
        CostLimits { maximum: 100.0, restore_per_second: 400.0 },
        "    rate_limit:\n      per_second: 400\n      burst: 100\n",
    )
    .await;
    let loc = env.sandbox.erp.locations()[0].id;
    env.sandbox.erp.set_stock("SP-FLIPPER-COIL-2550", loc, 100_000, 0, None);
    let daemon = env.start_daemon().await;
    let mut ids = Vec::new();
    for i in 0..30 {
        ids.push(env.sandbox.create_order("shopify", env.customer(i % 4), &lines(&[("SP-FLIPPER-COIL-2550", 1)])).unwrap().id);
    }
    for id in &ids {
        deliver(&env, *id).await;
    }
    for id in &ids {
        assert_eq!(daemon.finished_order(*id).await["order"]["writeback"], "done");
    }
    // 30 orders × (lookup + tag) × 10 points is six buckets' worth, sent as fast as the limiter allows.
    assert_eq!(env.sandbox.shopify.throttled.load(Ordering::Relaxed), 0, "the platform had to throttle");
    daemon.stop().await;
}
