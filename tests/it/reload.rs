//! Hot reload: config changes go live while webhooks keep flowing; broken
//! changes are reported and never take the live version down.

use std::path::Path;
use std::time::Duration;

use crate::support::{DEADLINE, TestEnv, post_signed, wait_until};

const CLOSED_RULE: &str = "#{ decision: \"reject\", reason: \"closed for stocktaking\" }\n";

/// Replace a file the way editors do: write a temporary, rename it over.
fn save(path: &Path, content: &str) {
    let tmp = path.with_extension("swp~");
    std::fs::write(&tmp, content).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

#[tokio::test]
async fn a_valid_change_goes_live_while_webhooks_flow() {
    let env = std::sync::Arc::new(TestEnv::new("reload-live").await);
    let daemon = env.start_daemon().await;
    let sender = {
        let env = env.clone();
        tokio::spawn(async move {
            let mut sent = Vec::new();
            for _ in 0..30 {
                sent.push(env.order(0, &[("SP-FLIPPER-COIL-2550", 1)]).await);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            sent
        })
    };
    tokio::time::sleep(Duration::from_millis(30)).await;
    save(&env.dir.join("workflows/rules/amusement-machines.rhai"), CLOSED_RULE);
    let status = daemon.wait_version(2).await;
    assert_eq!(status["config"]["last_result"], "ok");
    assert_eq!(status["config"]["last_cause"], "file change");

    let sent = sender.await.unwrap();
    assert!(sent.iter().all(|(_, code)| *code == 200), "a webhook was refused during the reload: {sent:?}");
    for (id, _) in &sent {
        let o = daemon.finished_order(*id).await;
        assert!(["approved", "rejected"].contains(&o["order"]["status"].as_str().unwrap()), "{o}");
    }
    // The changed rule decides the next order.
    let (next, _) = env.order(1, &[("CC-CLAW-42", 1)]).await;
    let o = daemon.finished_order(next).await;
    assert_eq!(o["order"]["reason"], "closed for stocktaking", "{o}");
    assert_eq!(o["order"]["config_version"], 2);
    daemon.stop().await;
}

#[tokio::test]
async fn broken_changes_are_reported_and_the_previous_version_stays() {
    let env = TestEnv::new("reload-broken").await;
    let daemon = env.start_daemon().await;
    let wf = env.dir.join("workflows/shopify-orders.yaml");
    let good = std::fs::read_to_string(&wf).unwrap();

    // Half-written: the file stops in the middle of a mapping.
    let cut = good.find("  lines:").unwrap() + 9;
    std::fs::write(&wf, &good[..cut]).unwrap();
    let s = daemon.wait_rejected("shopify-orders.yaml:").await;
    assert_eq!(s["config"]["version"], 1);
    let errors = s["config"]["last_errors"].to_string();
    assert!(errors.contains("shopify-orders.yaml:"), "{errors}");
    let metrics = daemon.client.get(daemon.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("ordersync_config_reloads_total{result=\"error\"}"), "{metrics}");

    // Orders are still decided by version 1.
    let (id, code) = env.order(0, &[("CC-CLAW-42", 1)]).await;
    assert_eq!(code, 200);
    assert_eq!(daemon.finished_order(id).await["order"]["config_version"], 1);

    std::fs::write(&wf, b"workflow: shopify-orders\ndescription: \"caf\xe9\"\n").unwrap();
    daemon.wait_rejected("not valid UTF-8").await;
    std::fs::write(&wf, "").unwrap();
    daemon.wait_rejected("empty").await;

    save(&wf, &good);
    let s = wait_until("the restored file to be accepted", DEADLINE, || async {
        let s = daemon.status().await;
        (s["config"]["last_result"] == "ok").then_some(s)
    })
    .await;
    // The restored set is the live one, so nothing new went live.
    assert_eq!(s["config"]["version"], 1);
    daemon.stop().await;
}

#[tokio::test]
async fn adding_and_removing_a_workflow_starts_and_stops_its_hook() {
    let env = TestEnv::new("reload-add").await;
    let daemon = env.start_daemon().await;
    let body = br##"{"id": 4242, "name": "#4242", "line_items": [{"sku": "CC-CLAW-42", "quantity": 1}]}"##;
    let secret = env.creds.webhook_secret.clone();
    assert_eq!(post_signed(&daemon, "/hooks/shopify-second", body, &secret).await, 404);

    let original = std::fs::read_to_string(env.dir.join("workflows/shopify-orders.yaml")).unwrap();
    env.write("workflows/shopify-second.yaml", &original.replace("workflow: shopify-orders", "workflow: shopify-second"));
    daemon.wait_version(2).await;
    assert_eq!(post_signed(&daemon, "/hooks/shopify-second", body, &secret).await, 200);

    std::fs::remove_file(env.dir.join("workflows/shopify-second.yaml")).unwrap();
    daemon.wait_version(3).await;
    assert_eq!(post_signed(&daemon, "/hooks/shopify-second", body, &secret).await, 404);
    assert_eq!(post_signed(&daemon, "/hooks/shopify-orders", body, &secret).await, 200);
    daemon.stop().await;
}

#[tokio::test]
async fn deleted_files_and_removed_directories_are_reported_until_restored() {
    let env = TestEnv::new("reload-dirs").await;
    let daemon = env.start_daemon().await;
    let rule = env.dir.join("workflows/rules/amusement-machines.rhai");
    let text = std::fs::read_to_string(&rule).unwrap();
    std::fs::remove_file(&rule).unwrap();
    daemon.wait_rejected("was not found").await;
    std::fs::write(&rule, CLOSED_RULE).unwrap();
    daemon.wait_version(2).await;

    let moved = env.dir.join("workflows-away");
    std::fs::rename(env.dir.join("workflows"), &moved).unwrap();
    daemon.wait_rejected("the directory does not exist").await;
    let (id, code) = env.order(0, &[("CC-CLAW-42", 1)]).await;
    assert_eq!(code, 200, "the live version keeps taking orders");
    assert_eq!(daemon.finished_order(id).await["order"]["reason"], "closed for stocktaking");
    std::fs::rename(&moved, env.dir.join("workflows")).unwrap();
    std::fs::write(&rule, &text).unwrap();
    daemon.wait_version(3).await;
    daemon.stop().await;
}

#[tokio::test]
async fn a_configmap_symlink_swap_is_picked_up() {
    use std::os::unix::fs::symlink;
    let env = TestEnv::new("reload-configmap").await;
    // Lay the config out the way Kubernetes mounts a ConfigMap.
    let first = env.dir.join("..2026_11_27_a");
    std::fs::create_dir_all(&first).unwrap();
    for d in ["connectors.d", "workflows"] {
        std::fs::rename(env.dir.join(d), first.join(d)).unwrap();
    }
    symlink("..2026_11_27_a", env.dir.join("..data")).unwrap();
    for d in ["connectors.d", "workflows"] {
        symlink(format!("..data/{d}"), env.dir.join(d)).unwrap();
    }
    let daemon = env.start_daemon().await;

    let second = env.dir.join("..2026_11_27_b");
    crate::support::copy_dir(&first, &second);
    std::fs::write(second.join("workflows/rules/amusement-machines.rhai"), CLOSED_RULE).unwrap();
    symlink("..2026_11_27_b", env.dir.join("..data_tmp")).unwrap();
    std::fs::rename(env.dir.join("..data_tmp"), env.dir.join("..data")).unwrap();
    std::fs::remove_dir_all(&first).unwrap();

    daemon.wait_version(2).await;
    let (id, _) = env.order(0, &[("CC-CLAW-42", 1)]).await;
    assert_eq!(daemon.finished_order(id).await["order"]["reason"], "closed for stocktaking");
    daemon.stop().await;
}

#[tokio::test]
async fn an_unreadable_file_is_reported() {
    use std::os::unix::fs::PermissionsExt;
    let env = TestEnv::new("reload-perm").await;
    let daemon = env.start_daemon_with(&[], true).await;
    let file = env.dir.join("connectors.d/shopify.yaml");
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o000)).unwrap();
    daemon.wait_rejected("permission denied").await;
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    wait_until("the readable file to be accepted", DEADLINE, || async {
        (daemon.status().await["config"]["last_result"] == "ok").then_some(())
    })
    .await;
    daemon.stop().await;
}

#[tokio::test]
async fn sighup_and_the_reload_command_read_rotated_secrets() {
    let env = TestEnv::new("reload-secrets").await;
    let daemon = env.start_daemon_with(&["--no-watch"], false).await;
    let body = br##"{"id": 5151, "name": "#5151", "line_items": [{"sku": "CC-CLAW-42", "quantity": 1}]}"##;
    let rotated = "rotated-webhook-secret-0123456789";
    env.write("secrets/shopify-webhook", rotated);
    assert_eq!(post_signed(&daemon, "/hooks/shopify-orders", body, rotated).await, 401, "not read before a reload");

    let out = crate::support::cli(&daemon, &["reload"]).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("version 2 is live"), "{}", String::from_utf8_lossy(&out.stdout));
    assert_eq!(post_signed(&daemon, "/hooks/shopify-orders", body, rotated).await, 200);

    // SIGHUP reloads too (this daemon does not watch files).
    std::fs::write(env.dir.join("workflows/rules/amusement-machines.rhai"), CLOSED_RULE).unwrap();
    std::process::Command::new("kill").args(["-HUP", &daemon.pid().to_string()]).status().unwrap();
    let s = daemon.wait_version(3).await;
    assert_eq!(s["config"]["last_cause"], "SIGHUP");
    assert!(!s.to_string().contains(rotated));
    daemon.stop().await;
}

#[tokio::test]
async fn polls_start_change_pace_and_stop_with_the_config() {
    let env = TestEnv::new("reload-poll").await;
    let daemon = env.start_daemon().await;
    let polls = || env.sandbox.shopify.requests("productVariants");
    let poll = std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/workflows/shopify-stock-poll.yaml"))
        .unwrap();

    // Added: it polls at once and the ledger learns every SKU.
    env.write("workflows/shopify-stock-poll.yaml", &poll.replace("every: 5m", "every: 1h"));
    daemon.wait_version(2).await;
    let skus = wait_until("the first poll", DEADLINE, || async {
        let n = daemon.api("/api/inventory").await.1["totals"]["skus"].as_u64().unwrap_or(0);
        (n >= 11).then_some(n)
    })
    .await;
    assert_eq!(skus, 11);
    let after_first = polls();

    // Faster: a change on the platform shows up without a restart.
    let loc = env.sandbox.erp.locations()[0].id;
    env.sandbox.erp.set_stock("CC-CLAW-42", loc, 9, 0, None);
    env.write("workflows/shopify-stock-poll.yaml", &poll.replace("every: 5m", "every: 100ms"));
    daemon.wait_version(3).await;
    wait_until("the new figure", DEADLINE, || async {
        let k = daemon.api("/api/inventory/CC-CLAW-42").await.1;
        (k["on_hand"] == 9).then_some(())
    })
    .await;
    wait_until("polls at the new pace", DEADLINE, || async { (polls() >= after_first + 3).then_some(()) }).await;

    // Removed: the polls stop. (Nothing to wait for but time: watch a few intervals pass.)
    std::fs::remove_file(env.dir.join("workflows/shopify-stock-poll.yaml")).unwrap();
    daemon.wait_version(4).await;
    tokio::time::sleep(Duration::from_millis(150)).await;
    let stopped_at = polls();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(polls(), stopped_at, "polling went on after the workflow was removed");
    daemon.stop().await;
}
