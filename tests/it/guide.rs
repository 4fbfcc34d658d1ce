//! The integrator guide's made-up platform, end to end: its connector,
//! workflow and rule from examples/guide against its sandbox adapter.

use std::path::Path;

use ordersync::sandbox::erp::{LineRequest, seed_amusement_catalogue};
use ordersync::sandbox::{Sandbox, SandboxOptions};

use crate::support::{DEADLINE, DaemonProcess, copy_dir, temp_dir, wait_until};

#[tokio::test]
async fn arcadehub_orders_are_confirmed_backordered_and_cancelled() {
    let dir = temp_dir("guide");
    let guide = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/guide");
    copy_dir(&guide.join("connectors.d"), &dir.join("connectors.d"));
    copy_dir(&guide.join("workflows"), &dir.join("workflows"));
    let opts = SandboxOptions::generated();
    let creds = opts.arcadehub.clone();
    let sandbox = Sandbox::start(tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(), opts).await.unwrap();
    let today = time::OffsetDateTime::now_utc().date();
    seed_amusement_catalogue(
        &sandbox.erp,
        &(today + time::Duration::days(10)).to_string(),
        &(today + time::Duration::days(60)).to_string(),
    );
    for (name, value) in [
        ("key-id", &creds.key_id),
        ("key-secret", &creds.key_secret),
        ("webhook", &creds.webhook_secret),
        ("admin-token", &"guide-admin-token-123".to_string()),
    ] {
        std::fs::create_dir_all(dir.join("secrets")).unwrap();
        std::fs::write(dir.join("secrets").join(name), value).unwrap();
    }
    let d = dir.display();
    std::fs::write(
        dir.join("ordersync.yaml"),
        format!(
            "admin_token: file:{d}/secrets/admin-token\nconnections:\n  arcadehub:\n    connector: arcadehub\n    base_url: {}\n    secrets:\n      key_id: file:{d}/secrets/key-id\n      key_secret: file:{d}/secrets/key-secret\n      webhook_secret: file:{d}/secrets/webhook\n",
            sandbox.base_url("arcadehub")
        ),
    )
    .unwrap();
    let daemon = DaemonProcess::start(&dir).await;
    sandbox.set_webhook_target("arcadehub", &daemon.url("/hooks/arcadehub-orders"));
    let customer = sandbox.erp.customers()[1].id;
    let line = |sku: &str, qty: i64| vec![LineRequest { sku: sku.into(), qty }];
    let (confirmed, s1) = sandbox.place_order("arcadehub", customer, &line("BD-JAMMA-60IN1", 2)).await.unwrap();
    let (backordered, s2) = sandbox.place_order("arcadehub", customer, &line("SP-COIN-MECH-EU", 10)).await.unwrap();
    let (cancelled, s3) = sandbox.place_order("arcadehub", customer, &line("SP-LED-GI-WW", 5)).await.unwrap();
    assert_eq!((s1, s2, s3), (200, 200, 200));
    for (order, status) in [(&confirmed, "confirmed"), (&backordered, "backordered"), (&cancelled, "cancelled")] {
        let body = daemon.finished(&format!("arcadehub:AH-{}", order.number), DEADLINE).await;
        assert_eq!(body["order"]["writeback"], "done", "{body}");
        wait_until(&format!("{status} at ArcadeHub"), DEADLINE, || async {
            sandbox.erp.order(order.id).unwrap().tags.contains(status).then_some(())
        })
        .await;
    }
    // A redelivery is a duplicate; each status change happened once.
    assert_eq!(sandbox.redeliver(confirmed.id).await.unwrap(), 200);
    assert!(sandbox.erp.attempts().iter().filter(|(k, _)| k.starts_with("arcadehub:status:")).all(|(_, n)| *n == 1));
    daemon.stop().await;
    sandbox.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}
