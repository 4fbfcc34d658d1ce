//! Every shipped platform end to end: the daemon connected to the sandbox's
//! imitation of the platform (its auth handshake, its webhooks or its
//! polled lists, its stock endpoints and its write-back calls), three orders
//! placed there, each decided and written back in the platform's terms.

use std::collections::BTreeMap;

use ordersync::sandbox::erp::LineRequest;
use serde_json::Value;

use crate::support::{DaemonProcess, TestEnv, wait_until};

/// A machine and parts in stock; a machine short with more due in ten days;
/// a discontinued claw machine.
const APPROVE: &[(&str, i64)] = &[("PB-STERN-GODZ-PRO", 1), ("SP-FLIPPER-COIL-2550", 4)];
const WAITLIST: &[(&str, i64)] = &[("PB-STERN-JAWS-PREM", 2)];
const REJECT: &[(&str, i64)] = &[("CC-CLAW-MINI", 1)];

/// Platforms whose shipped lookup asks for all of an order's SKUs in one request.
const MULTI_SKU_LOOKUPS: &[&str] = &["woocommerce", "sap-business-one"];

/// A word each decision's write-back shows on the platform (a status, a
/// state, a call); `None` where the platform is told nothing (Amazon has no
/// approval and no hold).
struct Terms {
    approve: Option<&'static str>,
    waitlist: Option<&'static str>,
    reject: &'static str,
}

async fn orders_run_through(platform: &str, terms: Terms) {
    let env = TestEnv::new(&format!("platform-{platform}")).await;
    env.connect(platform);
    // The warehouse behind Shopify is the stock master for machines: it
    // knows what is on its way (which most shops do not report) and what is
    // gone (which a marketplace listing may not show yet).
    env.inventory("  masters:\n    - connection: shopify-main\n      skus: [\"PB-STERN-JAWS-PREM\", \"CC-CLAW-MINI\"]\n");
    let workflow = format!("workflows/{platform}-orders.yaml");
    let polled = std::fs::read_to_string(env.dir.join(&workflow)).unwrap().contains("\n  poll:\n");
    if polled {
        poll_every_second(&env, &workflow);
    }
    let daemon = env.start_daemon().await;
    env.sandbox.set_webhook_target(platform, &daemon.url(&format!("/hooks/{platform}-orders")));
    let due = (time::OffsetDateTime::now_utc().date() + time::Duration::days(10)).to_string();
    env.sandbox.restock(WAITLIST[0].0, 1, 4, Some(&due)).await.unwrap();
    env.sandbox.restock(REJECT[0].0, 0, 0, None).await.unwrap();
    wait_until("the stock master's count of the machines", crate::support::DEADLINE, || async {
        let (_, short) = daemon.api(&format!("/api/inventory/{}", WAITLIST[0].0)).await;
        let (gone, _) = daemon.api(&format!("/api/inventory/{}", REJECT[0].0)).await;
        (short["incoming"].as_array().is_some_and(|i| !i.is_empty()) && gone == 200).then_some(())
    })
    .await;

    let mut placed = Vec::new();
    for (i, lines) in [APPROVE, WAITLIST, REJECT].into_iter().enumerate() {
        let lines: Vec<LineRequest> = lines.iter().map(|(sku, qty)| LineRequest { sku: sku.to_string(), qty: *qty }).collect();
        let (order, status) = env.sandbox.place_order(platform, env.customer(i), &lines).await.unwrap();
        // A webhook is acknowledged with 2xx; a polled platform delivers nothing (0).
        assert!(if polled { status == 0 } else { (200..300).contains(&status) }, "{platform} delivery answered {status}");
        placed.push(order.id);
    }

    let finished = finished_orders(&daemon, platform, 3).await;
    let by_sku = |sku: &str| -> &Value {
        finished.iter().find(|o| o["order"]["lines"].as_array().unwrap().iter().any(|l| l["sku"] == sku)).unwrap()
    };
    let (approved, short, rejected) = (by_sku(APPROVE[0].0), by_sku(WAITLIST[0].0), by_sku(REJECT[0].0));
    assert_eq!(approved["status"], "approved", "{approved}");
    assert_eq!(short["status"], "waitlisted", "{short}");
    assert_eq!(rejected["status"], "rejected", "{rejected}");
    assert!(rejected["reason"].as_str().unwrap().contains("discontinued"), "{rejected}");
    // Where the platform can search several SKUs at once, the two-line order
    // took one stock request; elsewhere one per SKU.
    let id = approved["order"]["id"].as_str().unwrap();
    let audit = daemon.api(&format!("/api/orders/{id}")).await.1["audit"].clone();
    let calls = audit.as_array().unwrap().iter().filter(|e| e["kind"] == "lookup" && !e["call"].is_null()).count();
    let expected = if MULTI_SKU_LOOKUPS.contains(&platform) { 1 } else { APPROVE.len() };
    assert_eq!(calls, expected, "{platform}: {audit}");
    for o in [approved, short, rejected] {
        assert!(o["writeback"] == "done" || o["writeback"] == "none", "{o}");
        assert!(o["error"].is_null(), "{o}");
    }
    assert_eq!(daemon.api("/api/dead-letters").await.1["dead_letters"], Value::Array(vec![]));

    // The platform received each effect once, in its own terms.
    let effects = env.sandbox.erp.effects();
    let mut per_key = BTreeMap::new();
    for e in effects.iter().filter(|e| e.platform == platform) {
        *per_key.entry(e.key.clone()).or_insert(0) += 1;
    }
    assert!(per_key.values().all(|n| *n == 1), "{per_key:?}");
    let seen = |erp_id: u64| -> String {
        let mine = effects.iter().filter(|e| e.platform == platform && e.order == Some(erp_id));
        mine.map(|e| format!("{} {} {}\n", e.kind, e.key, e.detail)).collect()
    };
    for ((decision, term), erp_id) in
        [("approve", terms.approve), ("waitlist", terms.waitlist), ("reject", Some(terms.reject))].into_iter().zip(&placed)
    {
        let effects = seen(*erp_id);
        match term {
            Some(term) => assert!(effects.contains(term), "{platform} {decision}: no `{term}` in what it received:\n{effects}"),
            None => assert!(effects.is_empty(), "{platform} {decision}: expected nothing, received:\n{effects}"),
        }
    }

    // The container arrives: the waitlisted order is approved and the
    // platform told so in the same terms as any approval.
    env.sandbox.restock(WAITLIST[0].0, 5, 0, None).await.unwrap();
    let id = short["order"]["id"].as_str().unwrap().to_string();
    let now_approved = wait_until("the waitlisted order to be approved", crate::support::DEADLINE, || async {
        let (_, body) = daemon.api(&format!("/api/orders/{id}")).await;
        (body["order"]["status"] == "approved" && body["order"]["writeback"] != "pending").then_some(body)
    })
    .await;
    assert!(now_approved["order"]["writeback"] == "done" || now_approved["order"]["writeback"] == "none", "{now_approved}");
    if let Some(term) = terms.approve {
        let effects: String = env
            .sandbox
            .erp
            .effects()
            .iter()
            .filter(|e| e.platform == platform && e.order == Some(placed[1]))
            .map(|e| format!("{} {} {}\n", e.kind, e.key, e.detail))
            .collect();
        assert!(effects.contains(term), "{platform}: the late approval shows no `{term}`:\n{effects}");
    }

    // The approval holds its units in the ledger; the rejection holds none.
    let inventory = daemon.api(&format!("/api/inventory/{}", APPROVE[0].0)).await.1;
    assert_eq!(inventory["reserved"], 1, "{inventory}");
    let inventory = daemon.api(&format!("/api/inventory/{}", WAITLIST[0].0)).await.1;
    assert_eq!(inventory["reserved"], 2, "{inventory}");
    let inventory = daemon.api(&format!("/api/inventory/{}", REJECT[0].0)).await.1;
    assert_eq!(inventory["reserved"], 0, "{inventory}");
    daemon.stop().await;
}

/// Make the platform's order poll run every second instead of every few minutes.
fn poll_every_second(env: &TestEnv, workflow: &str) {
    let text = std::fs::read_to_string(env.dir.join(workflow)).unwrap();
    let line = text.lines().find(|l| l.trim_start().starts_with("every:")).expect("a poll interval").to_string();
    env.edit(workflow, &line, "    every: 1s");
}

/// Wait until `count` orders of `{platform}-main` are decided and written back.
async fn finished_orders(daemon: &DaemonProcess, platform: &str, count: usize) -> Vec<Value> {
    let prefix = format!("{platform}-main:");
    wait_until(&format!("{count} {platform} orders to finish"), std::time::Duration::from_secs(30), || async {
        let (_, body) = daemon.api("/api/orders").await;
        let mine: Vec<Value> = body["orders"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|o| o["order"]["id"].as_str().is_some_and(|id| id.starts_with(&prefix)))
            .cloned()
            .collect();
        let done = mine.iter().filter(|o| o["status"] != "received" && o["writeback"] != "pending").count();
        (done >= count).then_some(mine)
    })
    .await
}

#[tokio::test]
async fn woocommerce_orders_run_through() {
    orders_run_through("woocommerce", Terms { approve: Some("\"approve\""), waitlist: Some("on-hold"), reject: "cancelled" }).await;
}

#[tokio::test]
async fn magento_orders_run_through() {
    orders_run_through("magento", Terms { approve: Some("stock reserved"), waitlist: Some("order_hold"), reject: "order_cancel" }).await;
}

#[tokio::test]
async fn square_orders_run_through() {
    orders_run_through("square", Terms { approve: Some("RESERVED"), waitlist: Some("\"waitlist\""), reject: "CANCELED" }).await;
}

#[tokio::test]
async fn sap_business_one_orders_run_through() {
    orders_run_through("sap-business-one", Terms { approve: Some("APPROVED"), waitlist: Some("WAITLIST"), reject: "order_cancel" }).await;
}

#[tokio::test]
async fn unleashed_orders_run_through() {
    orders_run_through("unleashed", Terms { approve: Some("Placed"), waitlist: Some("Waitlist"), reject: "order_delete" }).await;
}

#[tokio::test]
async fn odoo_orders_run_through() {
    orders_run_through("odoo", Terms { approve: Some("order_confirm"), waitlist: Some("waiting for stock"), reject: "order_cancel" }).await;
}

#[tokio::test]
async fn amazon_orders_run_through() {
    orders_run_through("amazon", Terms { approve: None, waitlist: None, reject: "order_cancel" }).await;
}

#[tokio::test]
async fn quickbooks_orders_run_through() {
    orders_run_through("quickbooks", Terms { approve: Some("Accepted"), waitlist: Some("waiting for stock"), reject: "Rejected" }).await;
}

/// The shipped stock workflows of other platforms feed the ledger:
/// WooCommerce's `product.updated` webhooks and QuickBooks' polled items.
#[tokio::test]
async fn woocommerce_and_quickbooks_stock_reach_the_ledger() {
    let env = TestEnv::new("platform-stock").await;
    env.connect("woocommerce");
    env.connect("quickbooks");
    poll_every_second(&env, "workflows/quickbooks-stock.yaml");
    let daemon = env.start_daemon().await;
    // Only WooCommerce announces stock changes here (Shopify's announcements go nowhere).
    env.sandbox.set_topic_target("shopify", "inventory_levels/update", &daemon.url("/hooks/nowhere"));
    env.sandbox.set_topic_target("woocommerce", "product.updated", &daemon.url("/hooks/woocommerce-stock"));
    // A product QuickBooks no longer lists (inactive), so only WooCommerce reports it.
    env.sandbox.restock("CC-CLAW-MINI", 9, 0, None).await.unwrap();
    reported_by(&daemon, "CC-CLAW-MINI", 9, "woocommerce-stock").await;
    // A count entered in the back office, announced to nobody: QuickBooks' poll finds it.
    let loc = env.sandbox.erp.locations()[0].id;
    env.sandbox.erp.set_stock("SP-COIN-MECH-EU", loc, 23, 0, None);
    reported_by(&daemon, "SP-COIN-MECH-EU", 23, "quickbooks-stock").await;
    daemon.stop().await;
}

/// Wait until the ledger holds `on_hand` for `sku`, recorded by `workflow`.
async fn reported_by(daemon: &DaemonProcess, sku: &str, on_hand: i64, workflow: &str) {
    wait_until(&format!("{workflow}'s report of {sku}"), crate::support::DEADLINE, || async {
        let (code, body) = daemon.api(&format!("/api/inventory/{sku}?history=100")).await;
        let by_workflow =
            body["history"].as_array().into_iter().flatten().any(|h| h["cause"].as_str().is_some_and(|c| c.starts_with(workflow)));
        (code == 200 && body["on_hand"] == on_hand && by_workflow).then_some(())
    })
    .await;
}

/// The README's first command: every platform with an order workflow shows
/// each kind of decision, and nothing ends in error.
#[test]
fn the_demo_decides_on_every_platform() {
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ordersync")).arg("demo").arg("--config-dir").arg(repo).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    for entry in std::fs::read_dir(repo.join("workflows")).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().to_string();
        if let Some(platform) = name.strip_suffix("-orders.yaml") {
            assert!(text.contains(&format!("== {platform} (")), "no {platform} section in:\n{text}");
        }
    }
    assert!(text.contains("approved") && text.contains("waitlisted") && text.contains("rejected"), "{text}");
}
