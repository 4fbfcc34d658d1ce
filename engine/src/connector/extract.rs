//! Extractors: compiled JSONPath specs that pull named values out of a
//! response or payload, as declared under `extract:` in a connector.

use std::borrow::Cow;

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

/// A required value missing from the item of one SKU of a multi-SKU answer.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{sku}: {missing}")]
pub struct MissingForSku {
    pub sku: String,
    pub missing: MissingValue,
}

/// The answer of a multi-SKU lookup, split by the SKUs asked for: for each,
/// `fields` applied to the first item with that SKU (or, failing that, the
/// first whose SKU differs only in letter case or surrounding spaces, as
/// platforms search), or `None` when no item has it.
pub fn extract_per_sku(
    per: &PerSku,
    fields: &[(String, Extractor)],
    doc: &Value,
    wanted: &[&str],
) -> Result<Vec<Option<Value>>, MissingForSku> {
    let items: Vec<(Cow<str>, &Value)> =
        per.items.query(doc).into_iter().filter_map(|item| Some((sku_text(per.sku.first(item)?)?, item))).collect();
    let loose = |s: &str| s.trim().to_lowercase();
    wanted
        .iter()
        .map(|&sku| {
            let item = items.iter().find(|(s, _)| *s == sku).or_else(|| {
                let sku = loose(sku);
                items.iter().find(|(s, _)| loose(s) == sku)
            });
            item.map(|(_, item)| extract_object(fields, item))
                .transpose()
                .map_err(|missing| MissingForSku { sku: sku.to_string(), missing })
        })
        .collect()
}

fn sku_text(v: &Value) -> Option<Cow<'_, str>> {
    match v {
        Value::String(s) if !s.is_empty() => Some(Cow::Borrowed(s)),
        Value::Number(n) => Some(Cow::Owned(n.to_string())),
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
    fn a_multi_sku_answer_splits_into_the_skus_asked_for() {
        let per = PerSku { items: p("$.data.nodes[*]"), sku: p("$.sku"), max: 5, single: "one".into() };
        let fields = vec![("on_hand".into(), Extractor::First { path: p("$.qty"), default: Some(json!(0)), required: false })];
        let doc = json!({"data": {"nodes": [
            {"sku": "A", "qty": 3},
            {"sku": 42, "qty": 1},
            {"sku": "A", "qty": 9},
            {"qty": 5},
            {"sku": "b ", "qty": 6},
            {"sku": "B", "qty": 7},
            {"sku": "ÉCRAN", "qty": 8}
        ]}});
        let wanted = ["A", "42", "b", "écran", "C"];
        let split = extract_per_sku(&per, &fields, &doc, &wanted).unwrap();
        // The first item of a SKU counts; an exact match before a loose one.
        assert_eq!(
            split,
            vec![Some(json!({"on_hand": 3})), Some(json!({"on_hand": 1})), Some(json!({"on_hand": 6})), Some(json!({"on_hand": 8})), None]
        );
        assert_eq!(extract_per_sku(&per, &fields, &doc, &["B"]).unwrap(), vec![Some(json!({"on_hand": 7}))]);
        // A required value missing names the SKU; items nobody asked for are not read.
        let required = vec![("qty".into(), Extractor::First { path: p("$.qty"), default: None, required: true })];
        let doc = json!({"data": {"nodes": [{"sku": "A"}, {"sku": "Z"}]}});
        assert_eq!(extract_per_sku(&per, &required, &doc, &["A"]).unwrap_err().sku, "A");
        assert_eq!(extract_per_sku(&per, &required, &json!({"data": {"nodes": [{"sku": "Z"}]}}), &["A"]).unwrap(), vec![None]);
    }

    #[test]
    fn required_values_must_match() {
        let ex = Extractor::First { path: p("$.id"), default: None, required: true };
        assert!(ex.extract(&json!({})).is_err());
    }
}
