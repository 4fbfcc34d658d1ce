//! Shopify end to end: orders arrive as signed webhooks, are decided against
//! the sandbox's stock and written back in Shopify's terms.

use ordersync::sandbox::erp::OrderState;

use crate::support::{DEADLINE, TestEnv, wait_until};

#[tokio::test]
async fn each_decision_is_written_back_in_shopify_terms() {
    let env = TestEnv::new("decisions").await;
    let daemon = env.start_daemon().await;

    let (approved, s1) = env.order(0, &[("PB-STERN-GODZ-PRO", 1), ("SP-FLIPPER-COIL-2550", 4)]).await;
    let (waitlisted, s2) = env.order(1, &[("PB-STERN-JAWS-PREM", 2)]).await;
    let (rejected, s3) = env.order(2, &[("CC-CLAW-MINI", 1)]).await;
    assert_eq!((s1, s2, s3), (200, 200, 200));

    let a = daemon.finished_order(approved).await;
    assert_eq!(a["order"]["status"], "approved", "{a}");
    assert_eq!(a["order"]["writeback"], "done");
    assert_eq!(a["order"]["allocations"].as_array().unwrap().len(), 2);
    let w = daemon.finished_order(waitlisted).await;
    assert_eq!(w["order"]["status"], "waitlisted", "{w}");
    let r = daemon.finished_order(rejected).await;
    assert_eq!(r["order"]["status"], "rejected", "{r}");
    assert!(r["order"]["reason"].as_str().unwrap().contains("discontinued"));

    // Both SKUs of the first order were looked up in one request: one call
    // per order reached Shopify, and the first order's audit has a lookup
    // entry per SKU, the call on the first.
    assert_eq!(env.sandbox.shopify.requests("productVariants"), 3);
    let audit = a_audit(&daemon, approved).await;
    let lookups: Vec<&serde_json::Value> = audit.as_array().unwrap().iter().filter(|e| e["kind"] == "lookup").collect();
    assert_eq!(lookups.len(), 2, "{audit}");
    assert_eq!(lookups[0]["call"]["request"], "inventory_by_skus", "{audit}");
    assert!(lookups[1]["call"].is_null(), "{audit}");

    let erp = &env.sandbox.erp;
    let a = erp.order(approved).unwrap();
    assert!(a.tags.contains("stock-approved") && a.state == OrderState::Open);
    let w = erp.order(waitlisted).unwrap();
    assert!(w.tags.contains("waitlist"));
    assert_eq!(w.holds.len(), 1);
    assert_eq!(w.holds[0].reason, "INVENTORY_OUT_OF_STOCK");
    let r = erp.order(rejected).unwrap();
    assert_eq!(r.state, OrderState::Cancelled);
    assert_eq!(r.cancel_reason.as_deref(), Some("INVENTORY"));

    // The reservation is visible to the next order: 3 on hand, 1 reserved.
    let (next, _) = env.order(3, &[("PB-STERN-GODZ-PRO", 3)]).await;
    let n = daemon.finished_order(next).await;
    assert_eq!(n["order"]["stock_seen"]["PB-STERN-GODZ-PRO"]["reserved"], 1, "{n}");
    assert_eq!(n["order"]["status"], "rejected", "{n}");

    // The audit trail shows each step and never a secret.
    let audit = serde_json::to_string(&a_audit(&daemon, approved).await).unwrap();
    for kind in ["mapped", "lookup", "rule", "reserve", "writeback"] {
        assert!(audit.contains(&format!("\"kind\":\"{kind}\"")), "{kind} missing in {audit}");
    }
    assert!(!audit.contains(&env.creds.access_token) && !audit.contains(&env.creds.webhook_secret));
    daemon.stop().await;
}

async fn a_audit(daemon: &crate::support::DaemonProcess, id: u64) -> serde_json::Value {
    daemon.api(&format!("/api/orders/shopify-main:{id}")).await.1["audit"].clone()
}

#[tokio::test]
async fn a_redelivered_webhook_is_processed_once() {
    let env = TestEnv::new("dedupe").await;
    let daemon = env.start_daemon().await;
    let (id, _) = env.order(0, &[("CC-CLAW-42", 1)]).await;
    daemon.finished_order(id).await;
    for _ in 0..3 {
        assert_eq!(env.sandbox.redeliver(id).await.unwrap(), 200);
    }
    let body = daemon.finished_order(id).await;
    let decisions = body["audit"].as_array().unwrap().iter().filter(|e| e["kind"] == "rule").count();
    assert_eq!(decisions, 1, "{body}");
    assert_eq!(daemon.status().await["queue_depth"], 0);
    let tags =
        env.sandbox.erp.attempts().iter().filter(|(k, _)| k.starts_with(&format!("shopify:tag:{id}:"))).map(|(_, n)| *n).sum::<u32>();
    assert_eq!(tags, 1, "the approve tag was requested {tags} times");
    daemon.stop().await;
}

#[tokio::test]
async fn a_failing_rule_puts_the_order_in_error_and_the_daemon_carries_on() {
    let env = TestEnv::new("rule-error").await;
    env.write("workflows/rules/amusement-machines.rhai", "let x = stock[\"NO-SUCH-SKU\"].available;\n#{ decision: \"approve\" }\n");
    let daemon = env.start_daemon().await;
    let (id, status) = env.order(0, &[("CC-CLAW-42", 1)]).await;
    assert_eq!(status, 200);
    let body = daemon.finished_order(id).await;
    assert_eq!(body["order"]["status"], "error", "{body}");
    assert!(body["order"]["error"].as_str().unwrap().contains("amusement-machines.rhai"), "{body}");

    // A rule that never ends stops at its operation limit.
    env.write("workflows/rules/amusement-machines.rhai", "loop { }\n");
    drop(daemon);
    let daemon = env.start_daemon().await;
    let (id, _) = env.order(1, &[("CC-CLAW-42", 1)]).await;
    let body = daemon.finished_order(id).await;
    assert_eq!(body["order"]["status"], "error");
    assert!(body["order"]["error"].as_str().unwrap().contains("limit"), "{body}");
    let health = daemon.client.get(daemon.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    daemon.stop().await;
}

#[tokio::test]
async fn a_restart_keeps_orders_dedupe_and_reservations() {
    let env = TestEnv::new("restart").await;
    let daemon = env.start_daemon().await;
    let (first, _) = env.order(0, &[("AC-SF2-CAB-2P", 1)]).await;
    let before = daemon.finished_order(first).await;
    daemon.stop().await;

    let daemon = env.start_daemon().await;
    let after = daemon.finished_order(first).await;
    assert_eq!(before["order"], after["order"]);
    // The same delivery after the restart is still a duplicate.
    assert_eq!(env.sandbox.redeliver(first).await.unwrap(), 200);
    // The reservation survived: 2 on hand, 1 reserved, so 2 more do not fit.
    let (second, _) = env.order(1, &[("AC-SF2-CAB-2P", 2)]).await;
    let body = daemon.finished_order(second).await;
    assert_eq!(body["order"]["stock_seen"]["AC-SF2-CAB-2P"]["reserved"], 1, "{body}");
    assert_ne!(body["order"]["status"], "approved");
    let total = wait_until("the order count", DEADLINE, || async { Some(daemon.status().await["orders"].as_u64().unwrap()) }).await;
    assert_eq!(total, 2);
    daemon.stop().await;
}
