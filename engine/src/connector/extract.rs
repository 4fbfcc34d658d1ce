//! Extractors: compiled JSONPath specs that pull named values out of a
//! response or payload, as declared under `extract:` in a connector.

use serde_json::{Map, Value};

use super::PerSku;
use crate::adapters::jsonpath::JsonPath;

#[derive(Debug, Clone)]
pub enum Extractor {
    /// First match, or the default, or null (or an error when required).
    First { path: JsonPath, default: Option<Value>, required: bool },
    /// Every match as an array.
    All { path: JsonPath },
    /// Sum of the numeric matches.
    Sum { path: JsonPath },
    /// One object per item matched by `path`, built from `fields` relative to the item.
    Each { path: JsonPath, fields: Vec<(String, Extractor)> },
    /// True when a match equals one of `equals` (with `negate`: when none does).
    Test { path: JsonPath, equals: Vec<Value>, negate: bool },
}

#[derive(Debug, Clone, thiserror::Error)]
#[error("`{path}` matched nothing in the response")]
pub struct MissingValue {
    pub path: String,
}

impl Extractor {
    pub fn extract(&self, doc: &Value) -> Result<Value, MissingValue> {
        match self {
            Extractor::First { path, default, required } => match path.first(doc) {
                Some(v) => Ok(v.clone()),
                None => match default {
                    Some(d) => Ok(d.clone()),
                    None if *required => Err(MissingValue { path: path.source().to_string() }),
                    None => Ok(Value::Null),
                },
            },
            Extractor::All { path } => Ok(Value::Array(path.query(doc).into_iter().cloned().collect())),
            Extractor::Test { path, equals, negate } => Ok(Value::Bool(path.query(doc).into_iter().any(|v| equals.contains(v)) != *negate)),
            Extractor::Sum { path } => {
                let mut int_sum: i64 = 0;
                let mut float_sum = 0.0;
                let mut is_float = false;
                for v in path.query(doc) {
                    match v {
                        Value::Number(n) if n.is_i64() => int_sum += n.as_i64().unwrap_or(0),
                        Value::Number(n) => {
                            is_float = true;
                            float_sum += n.as_f64().unwrap_or(0.0);
                        }
                        Value::String(s) => match s.trim().parse::<i64>() {
                            Ok(i) => int_sum += i,
                            Err(_) => {
                                if let Ok(f) = s.trim().parse::<f64>() {
                                    is_float = true;
                                    float_sum += f;
                                }
                            }
                        },
                        _ => {}
                    }
                }
                Ok(if is_float { Value::from(float_sum + int_sum as f64) } else { Value::from(int_sum) })
            }
            Extractor::Each { path, fields } => {
                let mut items = Vec::new();
                for item in path.query(doc) {
                    items.push(extract_object(fields, item)?);
                }
                Ok(Value::Array(items))
            }
        }
    }
}

/// Apply named extractors to one document, giving an object of their results.
pub fn extract_object(fields: &[(String, Extractor)], doc: &Value) -> Result<Value, MissingValue> {
    let mut obj = Map::with_capacity(fields.len());
    for (name, ex) in fields {
        obj.insert(name.clone(), ex.extract(doc)?);
    }
    Ok(Value::Object(obj))
}

/// The answer of a multi-SKU lookup, split by SKU: an object from each
/// item's SKU to `fields` applied to that item. An item without a SKU is
/// skipped; of several items with one SKU, the first counts (as a one-SKU
/// lookup takes its first match).
pub fn extract_per_sku(per: &PerSku, fields: &[(String, Extractor)], doc: &Value) -> Result<Value, MissingValue> {
    let mut by_sku = Map::new();
    for item in per.items.query(doc) {
        let Some(sku) = per.sku.first(item).and_then(sku_text) else { continue };
        if !by_sku.contains_key(&sku) {
            let found = extract_object(fields, item)?;
            by_sku.insert(sku, found);
        }
    }
    Ok(Value::Object(by_sku))
}

fn sku_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn p(s: &str) -> JsonPath {
        JsonPath::compile(s).unwrap()
    }

    #[test]
    fn each_builds_objects_from_items() {
        let doc = json!({"levels": [{"loc": {"id": "L1"}, "q": [{"name": "on_hand", "quantity": 4}]}, {"loc": {"id": "L2"}, "q": []}]});
        let ex = Extractor::Each {
            path: p("$.levels[*]"),
            fields: vec![
                ("location".into(), Extractor::First { path: p("$.loc.id"), default: None, required: true }),
                (
                    "on_hand".into(),
                    Extractor::First { path: p("$.q[?(@.name=='on_hand')].quantity"), default: Some(json!(0)), required: false },
                ),
            ],
        };
        assert_eq!(ex.extract(&doc).unwrap(), json!([{"location": "L1", "on_hand": 4}, {"location": "L2", "on_hand": 0}]));
    }

    #[test]
    fn sum_adds_numbers_and_numeric_strings() {
        let doc = json!({"a": [{"n": 2}, {"n": "3"}, {"n": null}]});
        assert_eq!(Extractor::Sum { path: p("$.a[*].n") }.extract(&doc).unwrap(), json!(5));
    }

    #[test]
    fn tests_turn_platform_flags_into_booleans() {
        let ex = Extractor::Test { path: p("$.Frozen"), equals: vec![json!("tYES")], negate: false };
        assert_eq!(ex.extract(&json!({"Frozen": "tYES"})).unwrap(), json!(true));
        assert_eq!(ex.extract(&json!({"Frozen": "tNO"})).unwrap(), json!(false));
        assert_eq!(ex.extract(&json!({})).unwrap(), json!(false));
        // Not buyable: no status in any summary says so.
        let ex = Extractor::Test { path: p("$.summaries[*].status[*]"), equals: vec![json!("BUYABLE")], negate: true };
        assert_eq!(ex.extract(&json!({"summaries": [{"status": ["DISCOVERABLE", "BUYABLE"]}]})).unwrap(), json!(false));
        assert_eq!(ex.extract(&json!({"summaries": [{"status": ["DISCOVERABLE"]}]})).unwrap(), json!(true));
        assert_eq!(ex.extract(&json!({})).unwrap(), json!(true));
    }

    #[test]
    fn a_multi_sku_answer_splits_into_one_object_per_sku() {
        let per = PerSku { items: p("$.data.nodes[*]"), sku: p("$.sku"), max: 5 };
        let fields = vec![("on_hand".into(), Extractor::First { path: p("$.qty"), default: Some(json!(0)), required: false })];
        let doc = json!({"data": {"nodes": [
            {"sku": "A", "qty": 3},
            {"sku": 42, "qty": 1},
            {"sku": "A", "qty": 9},
            {"qty": 5},
            {"sku": "B"}
        ]}});
        let split = extract_per_sku(&per, &fields, &doc).unwrap();
        assert_eq!(split, json!({"A": {"on_hand": 3}, "42": {"on_hand": 1}, "B": {"on_hand": 0}}));
        assert_eq!(extract_per_sku(&per, &fields, &json!({"data": {"nodes": []}})).unwrap(), json!({}));
    }

    #[test]
    fn required_values_must_match() {
        let ex = Extractor::First { path: p("$.id"), default: None, required: true };
        assert!(ex.extract(&json!({})).is_err());
    }
}
