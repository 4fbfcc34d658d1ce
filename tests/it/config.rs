//! Config errors: each kind is reported with the file, the line and column
//! where it was written, and what was expected.

use std::path::{Path, PathBuf};
use std::process::Command;

use ordersync::config::diagnostic::Diagnostic;
use ordersync::config::{ConfigPaths, LoadOptions, load};

use crate::support::{copy_shipped_config, temp_dir};

struct Broken {
    dir: PathBuf,
}

impl Broken {
    fn new(tag: &str) -> Broken {
        let dir = temp_dir(tag);
        copy_shipped_config(&dir);
        std::fs::copy(Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/ordersync.yaml"), dir.join("ordersync.yaml")).unwrap();
        Broken { dir }
    }

    /// Replace `from` with `to` in a file; return the 1-based line of `to`.
    fn edit(&self, file: &str, from: &str, to: &str) -> usize {
        let path = self.dir.join(file);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains(from), "{file} has no `{from}`");
        let new = text.replacen(from, to, 1);
        std::fs::write(&path, &new).unwrap();
        let at = new.find(to).unwrap();
        new[..at].matches('\n').count() + 1
    }

    fn errors(&self) -> Vec<Diagnostic> {
        match load(&ConfigPaths::new(&self.dir, None), LoadOptions { resolve_secrets: false, ..LoadOptions::default() }) {
            Ok(_) => panic!("the broken config loaded"),
            Err(d) => d.0,
        }
    }

    /// The one diagnostic for `file`, checked to sit on `line`.
    fn expect(&self, file: &str, line: usize, message: &str) -> Diagnostic {
        let errors = self.errors();
        let d = errors.iter().find(|d| d.file.ends_with(file) && d.message.contains(message));
        let d = d.unwrap_or_else(|| {
            panic!(
                "no error in {file} containing `{message}`; got:\n{}",
                errors.iter().map(|d| d.to_string()).collect::<Vec<_>>().join("\n")
            )
        });
        assert_eq!(d.line, line, "{d}");
        assert!(d.col >= 1, "{d}");
        d.clone()
    }
}

impl Drop for Broken {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn the_shipped_config_is_valid() {
    let b = Broken::new("valid");
    let set = load(&ConfigPaths::new(&b.dir, None), LoadOptions { resolve_secrets: false, ..LoadOptions::default() }).unwrap();
    assert!(set.workflows.contains_key("shopify-orders"));
}

#[test]
fn workflows_of_platforms_not_connected_stay_inactive() {
    let b = Broken::new("inactive");
    // This installation connects Shopify only.
    let instance = std::fs::read_to_string(b.dir.join("ordersync.yaml")).unwrap();
    let cut = instance.find("\n  woocommerce-main:").unwrap();
    let rest = instance.find("\n# One stock picture").unwrap();
    std::fs::write(b.dir.join("ordersync.yaml"), format!("{}\n{}", &instance[..cut], &instance[rest..])).unwrap();
    let set = load(&ConfigPaths::new(&b.dir, None), LoadOptions { resolve_secrets: false, ..LoadOptions::default() }).unwrap();
    assert!(set.workflows.contains_key("shopify-orders") && !set.workflows.contains_key("magento-orders"));
    let inactive = set.warnings.iter().find(|w| w.file.ends_with("magento-orders.yaml")).expect("a warning for magento-orders");
    assert!(inactive.message.contains("inactive") && inactive.message.contains("magento-main"), "{inactive}");
    // A near miss of a configured name is a misspelling, not an unconnected platform.
    let line = b.edit("workflows/shopify-stock.yaml", "connection: shopify-main", "connection: shopify-mian");
    b.expect("shopify-stock.yaml", line, "no connection named `shopify-mian`");
}

#[test]
fn bad_yaml_names_file_line_and_column() {
    let b = Broken::new("syntax");
    let line = b.edit(
        "workflows/shopify-orders.yaml",
        "events: [orders/create, orders/cancelled, orders/fulfilled]",
        "events: [orders/create, orders/cancelled",
    );
    let d = b.errors().into_iter().find(|d| d.file.ends_with("shopify-orders.yaml")).unwrap();
    assert!(d.message.contains("YAML"), "{d}");
    assert!(d.line >= line, "{d}");
}

#[test]
fn unknown_keys_suggest_the_right_one() {
    let b = Broken::new("unknown-key");
    let line = b.edit(
        "connectors.d/shopify.yaml",
        "    method: POST\n    path: /admin/api/{{values.api_version}}/graphql.json\n    json:\n      query: |\n        mutation AddTags",
        "    metod: POST\n    path: /admin/api/{{values.api_version}}/graphql.json\n    json:\n      query: |\n        mutation AddTags",
    );
    let d = b.expect("shopify.yaml", line, "unknown field `metod`");
    assert_eq!(d.help.as_deref(), Some("did you mean `method`?"));
    assert_eq!(d.col, 5);
}

#[test]
fn a_multi_sku_lookup_is_checked_and_kept_to_the_stock_request() {
    let b = Broken::new("per-sku-step");
    let line = b.edit("workflows/shopify-orders.yaml", "request: cancel_order", "request: inventory_by_skus # instead of cancel_order");
    let d = b.expect("shopify-orders.yaml", line, "request `inventory_by_skus` looks up several SKUs at once");
    assert_eq!(d.field, "on.reject.2.request");

    let b = Broken::new("per-sku-max");
    let line = b.edit("connectors.d/shopify.yaml", "      max: 5\n", "      max: 0\n");
    let d = b.expect("shopify.yaml", line, "`max` must be between 1 and 250");
    assert_eq!(d.field, "requests.inventory_by_skus.per_sku.max");

    let b = Broken::new("per-sku-single");
    let line = b.edit("connectors.d/shopify.yaml", "single: inventory_by_sku\n", "single: inventory_by_skuu\n");
    let d = b.expect("shopify.yaml", line, "no request `inventory_by_skuu` in this connector");
    assert_eq!(d.field, "requests.inventory_by_skus.per_sku.single");
    assert_eq!(d.help.as_deref(), Some("did you mean `inventory_by_sku`?"));

    // Its context has the batch, not one SKU's line.
    let b = Broken::new("per-sku-reads");
    b.edit("connectors.d/shopify.yaml", "sku:{{json this}}{{/each}}", "sku:{{json this}}{{/each}} {{line.qty}}");
    let set = load(&ConfigPaths::new(&b.dir, None), LoadOptions { resolve_secrets: false, ..LoadOptions::default() }).unwrap();
    let text: Vec<String> = set.warnings.iter().map(|w| w.to_string()).collect();
    let all = text.join("\n");
    assert!(all.contains("reads `line.qty`: `line` is not in this stock lookup's context (skus, sku_count,"), "{all}");
    // Only that: `skus`, `sku_count` and the `#each` item are its own.
    assert_eq!(all.matches("request `inventory_by_skus` reads").count(), 1, "{all}");
}

#[test]
fn dangling_references_are_reported_where_they_are_written() {
    let b = Broken::new("dangling");
    let line = b.edit("workflows/shopify-orders.yaml", "request: cancel_order", "request: cancel_ordr");
    let d = b.expect("shopify-orders.yaml", line, "has no request `cancel_ordr`");
    assert_eq!(d.help.as_deref(), Some("did you mean `cancel_order`?"));
    assert_eq!(d.field, "on.reject.2.request");

    let b = Broken::new("dangling-conn");
    let line = b.edit("workflows/shopify-orders.yaml", "connection: shopify-main", "connection: shopify-mian");
    b.expect("shopify-orders.yaml", line, "no connection named `shopify-mian`");

    let b = Broken::new("dangling-rule");
    let line = b.edit("workflows/shopify-orders.yaml", "rule: rules/amusement-machines.rhai", "rule: rules/missing.rhai");
    b.expect("shopify-orders.yaml", line, "rule file `rules/missing.rhai` was not found");
}

#[test]
fn bad_jsonpaths_are_reported() {
    let b = Broken::new("jsonpath");
    let line = b.edit("workflows/shopify-orders.yaml", "external_id: \"$.id\"", "external_id: \"id\"");
    b.expect("shopify-orders.yaml", line, "is not a JSONPath");
    let b = Broken::new("jsonpath2");
    let line = b.edit(
        "connectors.d/shopify.yaml",
        "all: \"$.data.order.fulfillmentOrders.nodes[*].id\"",
        "all: \"$.data.order.fulfillmentOrders.nodes[?(@.id==]\"",
    );
    b.expect("shopify.yaml", line, "not a valid JSONPath");
}

#[test]
fn bad_templates_point_into_the_template() {
    let b = Broken::new("template");
    let line = b.edit("connectors.d/shopify.yaml", "    Accept: application/json", "    X-Request-Tag: \"{{#if values.shop}}unclosed\"");
    b.expect("shopify.yaml", line, "invalid template");
    // Inside a block scalar the reported line is the template's own line.
    let b = Broken::new("template-block");
    let line = b.edit(
        "connectors.d/shopify.yaml",
        "inventorySetQuantities(input: $input) @idempotent(key: \"{{idempotency_key}}\")",
        "inventorySetQuantities(input: $input) @idempotent(key: \"{{idempotency_key}\")",
    );
    b.expect("shopify.yaml", line, "invalid template");
}

#[test]
fn bad_rules_are_reported_at_their_line() {
    let b = Broken::new("rhai");
    let line = b.edit("workflows/rules/amusement-machines.rhai", "let priority = 0;", "let priority = ;");
    b.expect("amusement-machines.rhai", line, "rule does not compile");
}

#[test]
fn missing_secrets_are_named_without_values() {
    let b = Broken::new("secrets");
    let errors = match load(&ConfigPaths::new(&b.dir, None), LoadOptions::default()) {
        Ok(_) => panic!("loaded without secrets"),
        Err(d) => d.0,
    };
    let d = errors.iter().find(|d| d.message.contains("SHOPIFY_ACCESS_TOKEN")).expect("the missing variable is named");
    assert!(d.file.ends_with("ordersync.yaml"));
    assert_eq!(d.field, "connections.shopify-main.secrets.access_token");
}

#[test]
fn validate_prints_every_error_and_exits_1() {
    let b = Broken::new("cli");
    let l1 = b.edit("workflows/shopify-orders.yaml", "request: cancel_order", "request: cancel_ordr");
    let l2 = b.edit("workflows/rules/amusement-machines.rhai", "let priority = 0;", "let priority = ;");
    let out = Command::new(env!("CARGO_BIN_EXE_ordersync")).arg("validate").arg("--config-dir").arg(&b.dir).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("shopify-orders.yaml:{l1}:")), "{err}");
    assert!(err.contains(&format!("amusement-machines.rhai:{l2}:")), "{err}");

    let ok = Command::new(env!("CARGO_BIN_EXE_ordersync")).arg("validate").current_dir(env!("CARGO_MANIFEST_DIR")).output().unwrap();
    assert_eq!(ok.status.code(), Some(0), "{}", String::from_utf8_lossy(&ok.stderr));
    assert!(String::from_utf8_lossy(&ok.stdout).starts_with("ok: "));
}

#[test]
fn validate_lints_templates_steps_and_decisions() {
    let b = Broken::new("lint");
    // A field the canonical order lacks, and a step read before it runs.
    b.edit(
        "connectors.d/shopify.yaml",
        "staffNote: \"Rejected by ordersync: {{decision.reason}}\"",
        "staffNote: \"Rejected: {{decision.reason}} {{order.nmber}}\"",
    );
    let hold = b.edit("workflows/shopify-orders.yaml", "    - request: fulfillment_orders\n    - request: hold_fulfillment_order", "    - request: hold_fulfillment_order\n      for_each: \"{{steps.fulfillment_orders.ids}}\"\n    - request: fulfillment_orders\n    - request: add_tags\n      name: again");
    // A rule that never waitlists.
    std::fs::write(b.dir.join("workflows/rules/amusement-machines.rhai"), "#{ decision: \"approve\" }\n").unwrap();
    let set = load(&ConfigPaths::new(&b.dir, None), LoadOptions { resolve_secrets: false, ..LoadOptions::default() }).unwrap();
    let text: Vec<String> = set.warnings.iter().map(|w| w.to_string()).collect();
    let all = text.join("\n");
    assert!(all.contains("reads `order.nmber`: the canonical order has no `nmber`"), "{all}");
    assert!(all.contains("no step `fulfillment_orders` runs before `hold_fulfillment_order`"), "{all}");
    assert!(all.contains("never decides `waitlist`"), "{all}");
    assert!(all.contains("never decides `reject`"), "{all}");
    let w = set.warnings.iter().find(|w| w.message.contains("no step `fulfillment_orders`")).unwrap();
    assert_eq!(w.line, hold, "{w}");

    let out =
        Command::new(env!("CARGO_BIN_EXE_ordersync")).args(["validate", "--deny-warnings", "--config-dir"]).arg(&b.dir).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("warning: "));
}
