//! `ordersync test`, tested: passing cases, a failing case with its diff,
//! error responses, and malformed test files reported like any config.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::support::{copy_dir, copy_shipped_config, temp_dir};

struct Dir(PathBuf);

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn setup(tag: &str) -> Dir {
    let d = temp_dir(tag);
    copy_shipped_config(&d);
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    std::fs::copy(repo.join("examples/ordersync.yaml"), d.join("ordersync.yaml")).unwrap();
    copy_dir(&repo.join("examples/payloads"), &d.join("examples/payloads"));
    Dir(d)
}

fn run(dir: &Path, files: &[&str]) -> (i32, String) {
    let out: Output = Command::new(env!("CARGO_BIN_EXE_ordersync"))
        .arg("test")
        .arg("--config-dir")
        .arg(dir)
        .args(files.iter().map(|f| dir.join(f)))
        .output()
        .unwrap();
    (out.status.code().unwrap_or(-1), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

#[test]
fn the_shipped_cases_pass() {
    let d = setup("wt-pass");
    let (code, out) = run(&d.0, &[]);
    assert_eq!(code, 0, "{out}");
    // Every case in every shipped test file ran.
    let mut cases = 0;
    for f in std::fs::read_dir(d.0.join("workflows/tests")).unwrap() {
        cases += std::fs::read_to_string(f.unwrap().path()).unwrap().lines().filter(|l| l.starts_with("  - name:")).count();
    }
    assert!(cases > 11, "{cases}");
    assert!(out.contains(&format!("{cases} passed, 0 failed")), "{out}");
}

#[test]
fn cases_of_platforms_not_connected_are_skipped() {
    let d = setup("wt-skip");
    let instance = std::fs::read_to_string(d.0.join("ordersync.yaml")).unwrap();
    let (from, to) = (instance.find("\n  amazon-main:").unwrap(), instance.find("\n# One stock picture").unwrap());
    std::fs::write(d.0.join("ordersync.yaml"), format!("{}\n{}", &instance[..from], &instance[to..])).unwrap();
    let (code, out) = run(&d.0, &[]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("SKIP ") && out.contains("workflow `amazon-orders` is inactive"), "{out}");
    assert!(out.contains("0 failed, 1 file(s) skipped"), "{out}");
}

#[test]
fn a_failing_case_shows_what_differs() {
    let d = setup("wt-fail");
    let f = d.0.join("workflows/tests/shopify-orders.test.yaml");
    let text = std::fs::read_to_string(&f).unwrap().replacen("tags: [stock-approved]", "tags: [stock-aproved]", 1);
    std::fs::write(&f, text).unwrap();
    let (code, out) = run(&d.0, &["workflows/tests/shopify-orders.test.yaml"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("FAIL ") && out.contains(":: a pinball machine and coils in stock are approved and tagged"), "{out}");
    assert!(out.contains("request 1 (add_tags) differs"), "{out}");
    assert!(out.contains("-         \"stock-aproved\"") && out.contains("+         \"stock-approved\""), "{out}");
    assert!(out.contains("10 passed, 1 failed"), "{out}");
}

#[test]
fn error_responses_run_the_failure_paths() {
    let d = setup("wt-errors");
    std::fs::write(
        d.0.join("workflows/tests/errors.test.yaml"),
        r#"workflow: shopify-orders
cases:
  - name: a platform that keeps failing ends in the dead-letter list
    trigger:
      payload_file: ../../examples/payloads/shopify-orders-create.json
    responses:
      inventory_by_skus:
        - body: { data: { productVariants: { nodes: [
            { sku: PB-STERN-GODZ-PRO, product: { status: ACTIVE, tags: [] }, inventoryItem: { inventoryLevels: { nodes: [ { location: { id: L }, quantities: [ { name: on_hand, quantity: 9 } ] } ] } } },
            { sku: SP-FLIPPER-COIL-2550, product: { status: ACTIVE, tags: [] }, inventoryItem: { inventoryLevels: { nodes: [ { location: { id: L }, quantities: [ { name: on_hand, quantity: 9 } ] } ] } } } ] } } }
      add_tags:
        - status: 503
          body: { errors: "Service Unavailable" }
    expect:
      decision: approve
      writeback: dead_lettered
  - name: a timeout on the cancel is checked before it is sent again
    trigger:
      payload: { id: 77, admin_graphql_api_id: "gid://shopify/Order/77", line_items: [ { sku: CC-CLAW-MINI, quantity: 1 } ] }
    responses:
      inventory_by_skus:
        - body: { data: { productVariants: { nodes: [ { sku: CC-CLAW-MINI, product: { status: ACTIVE, tags: [discontinued] }, inventoryItem: { inventoryLevels: { nodes: [] } } } ] } } }
      add_tags:
        - body: { data: { tagsAdd: { userErrors: [] } } }
      cancel_order:
        - fail: timeout
          times: 1
      order_cancelled:
        - body: { data: { order: { id: "gid://shopify/Order/77", cancelledAt: "2026-01-01T00:00:00Z" } } }
    expect:
      decision: reject
      writeback: done
      requests:
        - request: add_tags
        - request: cancel_order
        - request: order_cancelled
"#,
    )
    .unwrap();
    let (code, out) = run(&d.0, &["workflows/tests/errors.test.yaml"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("2 passed, 0 failed"), "{out}");
}

#[test]
fn a_malformed_test_file_is_reported_with_its_position() {
    let d = setup("wt-bad");
    std::fs::write(
        d.0.join("workflows/tests/bad.test.yaml"),
        "workflow: shopify-orders\ncases:\n  - name: x\n    trigger:\n      payload: {}\n    responses:\n      inventory_by_skuss: []\n    expect:\n      decison: approve\n",
    )
    .unwrap();
    let (code, out) = run(&d.0, &["workflows/tests/bad.test.yaml"]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("bad.test.yaml:9:7:") && out.contains("unknown field `decison`") && out.contains("did you mean `decision`?"),
        "{out}"
    );

    std::fs::write(d.0.join("workflows/tests/bad.test.yaml"), "workflow: shopify-orders\ncases:\n  - name: x\n    trigger:\n      payload: {}\n    responses:\n      inventory_by_skuss: []\n    expect: {}\n").unwrap();
    let (code, out) = run(&d.0, &["workflows/tests/bad.test.yaml"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("bad.test.yaml:7:"), "{out}");
    assert!(out.contains("has no request `inventory_by_skuss`") && out.contains("did you mean `inventory_by_skus`?"), "{out}");
}

#[test]
fn the_guides_platform_passes_its_cases() {
    let guide = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/guide");
    let out = Command::new(env!("CARGO_BIN_EXE_ordersync")).arg("test").arg("--config-dir").arg(&guide).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("6 passed, 0 failed"), "{text}");
}
