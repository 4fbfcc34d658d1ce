//! One stock picture across channels: reservations never oversell, the
//! ledger's history adds up, the waitlist moves in priority then arrival
//! order when stock arrives, cancellations and shipments release stock, and
//! changes are pushed to other channels.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use ordersync::sandbox::erp::{LineRequest, add_generated_products};
use serde_json::Value;

use crate::support::{DEADLINE, DaemonProcess, TestEnv, wait_until};

/// Deliver an order to a channel's hook until the daemon takes it.
async fn deliver(env: &TestEnv, d: &DaemonProcess, order: u64, channel: &str) {
    let url = d.url(&format!("/hooks/{channel}-orders"));
    wait_until(&format!("delivery of {order}"), DEADLINE, || async {
        matches!(env.sandbox.deliver_to(order, &url).await, Ok(200)).then_some(())
    })
    .await;
}

async fn sku(d: &DaemonProcess, sku: &str) -> Value {
    let (code, body) = d.api(&format!("/api/inventory/{sku}?history=1000000")).await;
    assert_eq!(code, 200, "{body}");
    body
}

/// The history of a SKU adds up to its figures.
fn assert_history_adds_up(k: &Value) {
    let h = k["history"].as_array().unwrap();
    let on_hand: i64 = h.iter().map(|c| c["on_hand_delta"].as_i64().unwrap()).sum();
    let reserved: i64 = h.iter().map(|c| c["reserved_delta"].as_i64().unwrap()).sum();
    assert_eq!((on_hand, reserved), (k["on_hand"].as_i64().unwrap(), k["reserved"].as_i64().unwrap()), "{}", k["sku"]);
    if let Some(last) = h.last() {
        assert_eq!((&last["on_hand_after"], &last["reserved_after"]), (&k["on_hand"], &k["reserved"]));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_orders_from_three_channels_never_oversell() {
    let env = Arc::new(TestEnv::new("oversell").await);
    for c in ["outlet", "ebay"] {
        env.add_channel(c);
    }
    env.inventory("  masters:\n    - connection: shopify-main\n");
    let loc = env.sandbox.erp.locations()[0].id;
    add_generated_products(&env.sandbox.erp, "SP-GEN-", 50, 0);
    let mut supply = BTreeMap::new();
    for i in 0..50 {
        let units = (i * 37 % 90) as i64;
        env.sandbox.erp.set_stock(&format!("SP-GEN-{i:06}"), loc, units, 0, None);
        supply.insert(format!("SP-GEN-{i:06}"), units);
    }
    let d = Arc::new(env.start_daemon_with(&["--workers", "32"], false).await);
    let channels = ["shopify", "outlet", "ebay"];
    let mut demand: BTreeMap<String, i64> = BTreeMap::new();
    let mut orders = Vec::new();
    for n in 0..10_000usize {
        let sku = format!("SP-GEN-{:06}", (n * 7919) % 50);
        let qty = 1 + (n % 3) as i64;
        *demand.entry(sku.clone()).or_insert(0) += qty;
        let o = env.sandbox.create_order("shopify", env.customer(n % 4), &[LineRequest { sku, qty }]).unwrap();
        orders.push((o.id, channels[n % 3]));
    }
    // Three channels deliver at once.
    let mut senders = Vec::new();
    for chunk in orders.chunks(orders.len() / 12 + 1) {
        let (env, d, chunk) = (env.clone(), d.clone(), chunk.to_vec());
        senders.push(tokio::spawn(async move {
            for (id, channel) in chunk {
                deliver(&env, &d, id, channel).await;
            }
        }));
    }
    for s in senders {
        s.await.unwrap();
    }
    let mut approved: BTreeMap<String, i64> = BTreeMap::new();
    for (id, channel) in &orders {
        let conn = if *channel == "shopify" { "shopify-main" } else { channel };
        let body = d.finished(&format!("{conn}:{id}"), Duration::from_secs(300)).await;
        let o = &body["order"];
        assert!(["approved", "rejected"].contains(&o["status"].as_str().unwrap()), "{body}");
        for a in o["allocations"].as_array().unwrap() {
            *approved.entry(a["sku"].as_str().unwrap().to_string()).or_insert(0) += a["qty"].as_i64().unwrap();
        }
    }
    for (s, units) in &supply {
        let k = sku(&d, s).await;
        let reserved = k["reserved"].as_i64().unwrap();
        assert!(reserved <= k["on_hand"].as_i64().unwrap(), "{s} oversold: {k}");
        assert_eq!(reserved, approved.get(s).copied().unwrap_or(0), "{s}: reservations and approvals differ");
        // Spare parts may be split, so all the stock there was went out.
        assert_eq!(reserved, (*units).min(demand[s]), "{s}: {units} in stock, {} wanted", demand[s]);
        assert_history_adds_up(&k);
    }
    Arc::try_unwrap(d).ok().unwrap().stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_channels_racing_for_the_last_unit_one_wins_every_time() {
    let env = Arc::new(TestEnv::new("race").await);
    env.add_channel("outlet");
    env.inventory("  masters:\n    - connection: shopify-main\n");
    add_generated_products(&env.sandbox.erp, "SP-GEN-", 1000, 1);
    let d = Arc::new(env.start_daemon_with(&["--workers", "32"], false).await);
    let mut pairs = Vec::new();
    for i in 0..1000 {
        let line = [LineRequest { sku: format!("SP-GEN-{i:06}"), qty: 1 }];
        let a = env.sandbox.create_order("shopify", env.customer(0), &line).unwrap().id;
        let b = env.sandbox.create_order("shopify", env.customer(1), &line).unwrap().id;
        pairs.push((a, b));
    }
    let mut tasks = Vec::new();
    for chunk in pairs.chunks(50) {
        let (env, d, chunk) = (env.clone(), d.clone(), chunk.to_vec());
        tasks.push(tokio::spawn(async move {
            for (a, b) in chunk {
                tokio::join!(deliver(&env, &d, a, "shopify"), deliver(&env, &d, b, "outlet"));
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    for (i, (a, b)) in pairs.iter().enumerate() {
        let a = d.finished(&format!("shopify-main:{a}"), Duration::from_secs(120)).await;
        let b = d.finished(&format!("outlet:{b}"), Duration::from_secs(120)).await;
        let wins = [&a, &b].iter().filter(|o| o["order"]["status"] == "approved").count();
        assert_eq!(wins, 1, "round {i}: {} and {}", a["order"]["status"], b["order"]["status"]);
    }
    Arc::try_unwrap(d).ok().unwrap().stop().await;
}

#[tokio::test]
async fn arriving_stock_serves_the_waitlist_in_priority_then_arrival_order() {
    let env = TestEnv::new("waitlist").await;
    let d = env.start_daemon().await;
    // 0 in stock, 20 coming with no date: every order waits.
    let sku_name = "AC-OUTRUN-DLX";
    env.sandbox.restock(sku_name, 0, 20, None).await.unwrap();
    let mut placed = Vec::new();
    for i in 0..20 {
        // Customers: 0 distributor (100), 1 operator (50), 2 none (0), 3 operator+vip (50).
        let who = [2, 1, 0, 3, 2][i % 5];
        let (id, _) = env.order(who, &[(sku_name, 1)]).await;
        let body = d.finished_order(id).await;
        assert_eq!(body["order"]["status"], "waitlisted", "{body}");
        placed.push((id, body["order"]["priority"].as_i64().unwrap(), body["order"]["arrival"].as_u64().unwrap()));
    }
    let line = d.api(&format!("/api/waitlist?sku={sku_name}")).await.1["waitlist"].as_array().unwrap().len();
    assert_eq!(line, 20);

    // A container arrives: 8 cabinets now, 12 still coming.
    env.sandbox.restock(sku_name, 8, 12, None).await.unwrap();
    let k = wait_until("8 approvals", DEADLINE, || async {
        let k = sku(&d, sku_name).await;
        (k["reserved"] == 8).then_some(k)
    })
    .await;
    let mut ranked = placed.clone();
    ranked.sort_by_key(|(_, p, a)| (std::cmp::Reverse(*p), *a));
    let (first, rest) = ranked.split_at(8);
    for (id, _, _) in first {
        let body = d.finished_order(*id).await;
        assert_eq!(body["order"]["status"], "approved", "{body}");
        let o = env.sandbox.erp.order(*id).unwrap();
        assert!(o.holds.is_empty() && o.tags.contains("stock-approved") && !o.tags.contains("waitlist"), "{o:?}");
    }
    for (id, _, _) in rest {
        assert_eq!(d.finished_order(*id).await["order"]["status"], "waitlisted");
    }
    // And in that order: the reservations in the history follow the ranking.
    let reserved_in_order: Vec<String> = k["history"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["kind"] == "reserved")
        .map(|c| c["cause"].as_str().unwrap().to_string())
        .collect();
    let expected: Vec<String> = first.iter().map(|(id, _, _)| format!("order shopify-main:{id} approved")).collect();
    assert_eq!(reserved_in_order, expected);
    assert_eq!(d.api(&format!("/api/waitlist?sku={sku_name}")).await.1["waitlist"].as_array().unwrap().len(), 12);
    assert_history_adds_up(&sku(&d, sku_name).await);
    d.stop().await;
}

#[tokio::test]
async fn cancellations_and_shipments_release_what_orders_hold() {
    let env = TestEnv::new("release").await;
    let d = env.start_daemon().await;
    let (a, _) = env.order(0, &[("CC-CLAW-42", 1)]).await;
    let (b, _) = env.order(1, &[("CC-CLAW-42", 1)]).await;
    assert_eq!(d.finished_order(a).await["order"]["status"], "approved");
    assert_eq!(d.finished_order(b).await["order"]["status"], "approved");
    assert_eq!(sku(&d, "CC-CLAW-42").await["available"], 0);
    // A waiting order that the customer cancels leaves the line.
    let (w, _) = env.order(2, &[("PB-STERN-JAWS-PREM", 3)]).await;
    assert_eq!(d.finished_order(w).await["order"]["status"], "waitlisted");

    assert_eq!(env.sandbox.cancel_order(a).await.unwrap(), 200);
    let k = wait_until("the cancellation", DEADLINE, || async {
        let k = sku(&d, "CC-CLAW-42").await;
        (k["reserved"] == 1).then_some(k)
    })
    .await;
    assert_eq!(k["available"], 1);
    assert_eq!(d.finished_order(a).await["order"]["status"], "cancelled");

    assert_eq!(env.sandbox.ship_order(b).await.unwrap(), 200);
    let k = wait_until("the shipment", DEADLINE, || async {
        let k = sku(&d, "CC-CLAW-42").await;
        (k["reserved"] == 0 && k["on_hand"] == 1).then_some(k)
    })
    .await;
    assert_eq!(k["available"], 1);
    assert_eq!(d.finished_order(b).await["order"]["status"], "fulfilled");
    assert_history_adds_up(&k);

    assert_eq!(env.sandbox.cancel_order(w).await.unwrap(), 200);
    wait_until("the waitlisted order to leave the line", DEADLINE, || async {
        let list = d.api("/api/waitlist").await.1["waitlist"].clone();
        list.as_array().unwrap().is_empty().then_some(())
    })
    .await;
    assert_eq!(d.finished_order(w).await["order"]["status"], "cancelled");
    d.stop().await;
}

#[tokio::test]
async fn stock_changes_are_pushed_to_another_shop() {
    use ordersync::sandbox::{Sandbox, SandboxOptions};
    let env = TestEnv::new("push").await;
    // A second shop (the outlet) that sells the same machines.
    let outlet = Sandbox::start(tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(), SandboxOptions::generated()).await.unwrap();
    ordersync::sandbox::erp::seed_amusement_catalogue(&outlet.erp, "2099-01-01", "2099-02-01");
    env.write("secrets/outlet-token", &outlet.shopify.creds.access_token);
    env.write("secrets/outlet-webhook", &outlet.shopify.creds.webhook_secret);
    let d = env.dir.display();
    let mut instance = std::fs::read_to_string(env.dir.join("ordersync.yaml")).unwrap();
    instance = instance.replacen(
        "connections:\n",
        &format!(
            "connections:\n  shopify-outlet:\n    connector: shopify\n    base_url: {}\n    values:\n      shop: outlet\n    secrets:\n      access_token: file:{d}/secrets/outlet-token\n      webhook_secret: file:{d}/secrets/outlet-webhook\n",
            outlet.base_url("shopify")
        ),
        1,
    );
    env.write("ordersync.yaml", &instance);
    env.inventory("  masters:\n    - connection: shopify-main\n");
    let push = std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/workflows/outlet-stock-push.yaml"))
        .unwrap();
    env.write("workflows/outlet-stock-push.yaml", &push);
    let daemon = env.start_daemon().await;
    let outlet_available = |sku: &str| outlet.erp.totals(sku).2;

    // An approval on the main shop leaves 1 of 2 claw cranes free.
    let (id, _) = env.order(0, &[("CC-CLAW-42", 1)]).await;
    assert_eq!(daemon.finished_order(id).await["order"]["status"], "approved");
    wait_until("the outlet to show 1 free", DEADLINE, || async { (outlet_available("CC-CLAW-42") == 1).then_some(()) }).await;

    // More arrive at the warehouse: 7 on hand, 1 reserved, so the outlet may sell 6.
    env.sandbox.restock("CC-CLAW-42", 7, 0, None).await.unwrap();
    wait_until("the outlet to show 6 free", DEADLINE, || async { (outlet_available("CC-CLAW-42") == 6).then_some(()) }).await;
    let pushes: Vec<_> = outlet.erp.effects().into_iter().filter(|e| e.kind == "inventory_set").collect();
    assert!(pushes.len() >= 2, "{pushes:?}");
    // Only SKUs the push workflow names are pushed.
    let (spare, _) = env.order(1, &[("SP-FLIPPER-COIL-2550", 1)]).await;
    daemon.finished_order(spare).await;
    let (id2, _) = env.order(2, &[("CC-CLAW-42", 1)]).await;
    daemon.finished_order(id2).await;
    wait_until("the outlet to show 5 free", DEADLINE, || async { (outlet_available("CC-CLAW-42") == 5).then_some(()) }).await;
    assert_eq!(outlet_available("SP-FLIPPER-COIL-2550"), 40, "a spare part was pushed");
    daemon.stop().await;
    outlet.stop().await;
}
