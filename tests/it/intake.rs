//! Webhook intake refusals and admin API access: a refused delivery gets the
//! right status and leaves nothing behind.

use crate::support::{DaemonProcess, TestEnv, shopify_signature as sign};

async fn post(d: &DaemonProcess, path: &str, body: Vec<u8>, signature: Option<String>) -> (u16, String) {
    let mut req = d
        .client
        .post(d.url(path))
        .header("X-Shopify-Topic", "orders/create")
        .header("X-Shopify-Webhook-Id", format!("w-{}", rand::random::<u64>()))
        .body(body);
    if let Some(s) = signature {
        req = req.header("X-Shopify-Hmac-Sha256", s);
    }
    let r = req.send().await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

/// POST headers declaring a body of `len` bytes, send only a little of it,
/// and read the status line the daemon answers with.
async fn declared_too_large(d: &DaemonProcess, len: usize) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(d.addr).await.unwrap();
    let head = format!(
        "POST /hooks/shopify-orders HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nX-Shopify-Topic: orders/create\r\nContent-Length: {len}\r\n\r\n{{\"pad\": \"",
        d.addr
    );
    s.write_all(head.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 512];
    let n = s.read(&mut buf).await.unwrap();
    let text = String::from_utf8_lossy(&buf[..n]);
    text.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0)
}

#[tokio::test]
async fn bad_deliveries_are_refused_and_store_nothing() {
    let env = TestEnv::new("intake").await;
    let d = env.start_daemon().await;
    let secret = env.creds.webhook_secret.clone();
    let good = br#"{"id": 1, "line_items": [{"sku": "CC-CLAW-42", "quantity": 1}]}"#.to_vec();

    let (code, body) = post(&d, "/hooks/shopify-orders", good.clone(), None).await;
    assert_eq!(code, 401, "{body}");
    let (code, _) = post(&d, "/hooks/shopify-orders", good.clone(), Some(sign("not-the-secret", &good))).await;
    assert_eq!(code, 401);
    let (code, _) = post(&d, "/hooks/shopify-orders", good.clone(), Some("!!not base64!!".into())).await;
    assert_eq!(code, 401);

    let bad_json = b"{\"id\": 1, \"line_items\": [".to_vec();
    let (code, body) = post(&d, "/hooks/shopify-orders", bad_json.clone(), Some(sign(&secret, &bad_json))).await;
    assert_eq!(code, 400, "{body}");

    // Refused on its declared length, before the body is read.
    assert_eq!(declared_too_large(&d, 3 * 1024 * 1024).await, 413);

    let (code, body) = post(&d, "/hooks/no-such-workflow", good.clone(), Some(sign(&secret, &good))).await;
    assert_eq!(code, 404, "{body}");

    let status = d.status().await;
    assert_eq!(status["queue_depth"], 0, "{status}");
    assert_eq!(status["orders"], 0, "{status}");
    assert_eq!(d.api("/api/failed-events").await.1["failed_events"].as_array().unwrap().len(), 0);

    // Other topics are acknowledged and ignored, not stored.
    let r = d
        .client
        .post(d.url("/hooks/shopify-orders"))
        .header("X-Shopify-Topic", "orders/paid")
        .header("X-Shopify-Hmac-Sha256", sign(&secret, &good))
        .body(good.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<serde_json::Value>().await.unwrap()["status"], "ignored");
    assert_eq!(d.status().await["queue_depth"], 0);

    // A well-signed payload without the fields the mapping needs is kept aside, with why.
    let unmappable = br#"{"id": 77, "line_items": []}"#.to_vec();
    let (code, _) = post(&d, "/hooks/shopify-orders", unmappable.clone(), Some(sign(&secret, &unmappable))).await;
    assert_eq!(code, 200);
    let failed = crate::support::wait_until("the failed event", crate::support::DEADLINE, || async {
        let list = d.api("/api/failed-events").await.1["failed_events"].clone();
        (list.as_array().is_some_and(|a| !a.is_empty())).then_some(list)
    })
    .await;
    assert!(failed[0]["error"].as_str().unwrap().contains("no order lines"), "{failed}");
    d.stop().await;
}

#[tokio::test]
async fn the_admin_api_needs_the_token_and_health_does_not() {
    let env = TestEnv::new("admin").await;
    let d = env.start_daemon().await;
    for auth in [None, Some("Bearer wrong-token"), Some("Basic dGVzdA==")] {
        let mut req = d.client.get(d.url("/api/status"));
        if let Some(a) = auth {
            req = req.header("Authorization", a);
        }
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), 401, "{auth:?}");
        assert_eq!(r.headers()["www-authenticate"], "Bearer");
    }
    assert_eq!(d.api("/api/status").await.0, 200);
    assert_eq!(d.client.get(d.url("/healthz")).send().await.unwrap().status(), 200);
    let metrics = d.client.get(d.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("ordersync_config_version 1"), "{metrics}");
    // The generated-token path: without admin_token in the instance config the
    // daemon writes one into its data directory, readable by the owner only.
    d.stop().await;
    let instance = std::fs::read_to_string(env.dir.join("ordersync.yaml")).unwrap();
    env.write("ordersync.yaml", &instance.lines().filter(|l| !l.starts_with("admin_token")).collect::<Vec<_>>().join("\n"));
    let d = DaemonProcess::start(&env.dir).await;
    let token_file = env.dir.join("data/admin-token");
    let token = std::fs::read_to_string(&token_file).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&token_file).unwrap().permissions().mode() & 0o777, 0o600);
    }
    let r = d.client.get(d.url("/api/status")).bearer_auth(token.trim()).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let log = std::fs::read_to_string(env.dir.join("daemon.log")).unwrap();
    assert!(!log.contains(token.trim()), "the token leaked into the log");
    d.stop().await;
}
