//! JSON Schemas of the config files, generated from the Rust types that
//! read them, so editors (with the YAML language server) complete keys and
//! flag mistakes with the same rules `ordersync validate` applies.

use schemars::JsonSchema;

use super::raw::{ConnectorFile, InstanceFile, WorkflowFile};
use crate::testing::file::TestFile;

/// (file name, schema) for every kind of file.
pub fn all() -> Vec<(&'static str, String)> {
    vec![
        ("connector.schema.json", render::<ConnectorFile>("ordersync connector (connectors.d/*.yaml)")),
        ("workflow.schema.json", render::<WorkflowFile>("ordersync workflow (workflows/*.yaml)")),
        ("instance.schema.json", render::<InstanceFile>("ordersync instance config (ordersync.yaml)")),
        ("test.schema.json", render::<TestFile>("ordersync workflow test (workflows/tests/*.test.yaml)")),
    ]
}

fn render<T: JsonSchema>(title: &str) -> String {
    let mut schema = schemars::schema_for!(T);
    schema.insert("title".into(), title.into());
    let mut text = serde_json::to_string_pretty(&schema).expect("schemas serialize");
    text.push('\n');
    text
}

#[cfg(test)]
mod tests {
    /// The schemas committed under engine/schemas are the ones the code generates.
    #[test]
    fn committed_schemas_are_current() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("engine/schemas");
        for (name, text) in super::all() {
            let committed = std::fs::read_to_string(dir.join(name)).unwrap_or_default();
            assert!(committed == text, "engine/schemas/{name} is out of date: run `ordersync schema --out engine/schemas`");
        }
    }
}
