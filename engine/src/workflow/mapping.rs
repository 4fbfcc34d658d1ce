//! Mapping a platform payload to the canonical order with compiled JSONPaths.

use serde_json::Value;

pub use crate::adapters::jsonpath::Condition;
use crate::adapters::jsonpath::JsonPath;
use crate::model::{Customer, Line, Order};

pub struct OrderMapping {
    /// When set, an order is decided only once this holds (e.g. paid);
    /// events before that are acknowledged and left for a later one.
    pub ready: Option<Condition>,
    pub cancelled: Option<Condition>,
    pub fulfilled: Option<Condition>,
    pub external_id: JsonPath,
    pub number: Option<JsonPath>,
    pub customer_id: Option<JsonPath>,
    pub customer_name: Option<JsonPath>,
    pub customer_group: Option<JsonPath>,
    pub lines_each: JsonPath,
    /// `None` when the SKU is read by a request (see `OrderFlow::line_sku_request`).
    pub line_sku: Option<JsonPath>,
    pub line_qty: JsonPath,
    pub line_location: Option<JsonPath>,
    pub line_fields: Vec<(String, JsonPath)>,
    pub received_at: Option<JsonPath>,
}

/// Why a payload could not become an order.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct MappingError(pub String);

/// Who the order belongs to, filled in by the caller.
pub struct Origin<'a> {
    pub platform: &'a str,
    pub connection: &'a str,
    pub workflow: &'a str,
    pub now: &'a str,
}

impl OrderMapping {
    /// The payload's line items.
    pub fn line_items<'a>(&self, payload: &'a Value) -> Vec<&'a Value> {
        self.lines_each.query(payload)
    }

    /// Map a payload; `skus` gives each line item's SKU where a request read them.
    pub fn map(&self, payload: &Value, origin: &Origin<'_>, skus: Option<&[String]>) -> Result<Order, MappingError> {
        let external_id = self
            .external_id
            .first(payload)
            .and_then(scalar_text)
            .ok_or_else(|| MappingError(format!("the payload has no order id at `{}`", self.external_id.source())))?;
        let text = |p: &Option<JsonPath>| p.as_ref().and_then(|p| p.first(payload)).and_then(scalar_text);
        let items = self.lines_each.query(payload);
        if items.is_empty() {
            return Err(MappingError(format!("the payload has no order lines at `{}`", self.lines_each.source())));
        }
        let mut lines = Vec::with_capacity(items.len());
        for (i, item) in items.into_iter().enumerate() {
            let sku = match (&self.line_sku, skus) {
                (Some(path), _) => path
                    .first(item)
                    .and_then(scalar_text)
                    .filter(|s| !s.trim().is_empty())
                    .ok_or_else(|| MappingError(format!("line {} has no SKU at `{}`", i + 1, path.source())))?,
                (None, Some(skus)) => skus.get(i).cloned().ok_or_else(|| MappingError(format!("line {} has no SKU", i + 1)))?,
                (None, None) => return Err(MappingError(format!("line {}: its SKU was not read", i + 1))),
            };
            let qty = self.line_qty.first(item).and_then(as_integer).ok_or_else(|| {
                MappingError(format!("line {} ({sku}) has no whole-number quantity at `{}`", i + 1, self.line_qty.source()))
            })?;
            if qty <= 0 {
                return Err(MappingError(format!("line {} ({sku}) has quantity {qty}; expected at least 1", i + 1)));
            }
            let location = self.line_location.as_ref().and_then(|p| p.first(item)).and_then(scalar_text);
            let fields = self
                .line_fields
                .iter()
                .filter_map(|(name, path)| path.first(item).filter(|v| !v.is_null()).map(|v| (name.clone(), v.clone())))
                .collect();
            lines.push(Line { sku, qty, location, fields });
        }
        Ok(Order {
            id: format!("{}:{}", origin.connection, external_id),
            platform: origin.platform.to_string(),
            connection: origin.connection.to_string(),
            workflow: origin.workflow.to_string(),
            number: text(&self.number).unwrap_or_else(|| external_id.clone()),
            external_id,
            customer: Customer { id: text(&self.customer_id), name: text(&self.customer_name), group: text(&self.customer_group) },
            lines,
            received_at: text(&self.received_at).unwrap_or_else(|| origin.now.to_string()),
        })
    }
}

/// Strings and numbers as text; ids arrive as either.
pub fn scalar_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// Whole numbers, whether sent as numbers, numeric strings or `2.0`.
pub fn as_integer(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64().or_else(|| n.as_f64().filter(|f| f.fract() == 0.0 && f.abs() < 9e15).map(|f| f as i64)),
        Value::String(s) => s
            .trim()
            .parse::<i64>()
            .ok()
            .or_else(|| s.trim().parse::<f64>().ok().filter(|f| f.fract() == 0.0 && f.abs() < 9e15).map(|f| f as i64)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn mapping() -> OrderMapping {
        let p = |s: &str| JsonPath::compile(s).unwrap();
        OrderMapping {
            ready: None,
            cancelled: None,
            fulfilled: None,
            external_id: p("$.id"),
            number: Some(p("$.name")),
            customer_id: Some(p("$.customer.id")),
            customer_name: None,
            customer_group: None,
            lines_each: p("$.line_items[*]"),
            line_sku: Some(p("$.sku")),
            line_qty: p("$.quantity"),
            line_location: None,
            line_fields: vec![],
            received_at: Some(p("$.created_at")),
        }
    }

    const ORIGIN: Origin<'static> = Origin { platform: "shopify", connection: "shop", workflow: "wf", now: "2026-01-01T00:00:00Z" };

    #[test]
    fn maps_a_payload() {
        let o = mapping()
            .map(&json!({"id": 42, "name": "#1001", "customer": {"id": 7}, "line_items": [{"sku": "A", "quantity": 2}, {"sku": "B", "quantity": "1"}]}), &ORIGIN, None)
            .unwrap();
        assert_eq!(o.id, "shop:42");
        assert_eq!(o.customer.id.as_deref(), Some("7"));
        assert_eq!(o.lines.len(), 2);
        assert_eq!(o.lines[1].qty, 1);
        assert_eq!(o.received_at, "2026-01-01T00:00:00Z");
    }

    #[test]
    fn conditions_hold_on_values() {
        let c = Condition { path: JsonPath::compile("$.cancelled_at").unwrap(), equals: vec![], negate: false };
        assert!(c.holds(&json!({"cancelled_at": "2026-01-01"})));
        assert!(!c.holds(&json!({"cancelled_at": null})));
        let f =
            Condition { path: JsonPath::compile("$.status").unwrap(), equals: vec![json!("fulfilled"), json!("shipped")], negate: false };
        assert!(f.holds(&json!({"status": "shipped"})) && !f.holds(&json!({"status": "partial"})));
    }

    #[test]
    fn explains_what_is_missing() {
        let m = mapping();
        assert!(m.map(&json!({"line_items": []}), &ORIGIN, None).unwrap_err().0.contains("no order id"));
        assert!(m.map(&json!({"id": 1, "line_items": [{"quantity": 1}]}), &ORIGIN, None).unwrap_err().0.contains("no SKU"));
        assert!(m.map(&json!({"id": 1, "line_items": [{"sku": "A", "quantity": 0}]}), &ORIGIN, None).unwrap_err().0.contains("at least 1"));
    }
}
