//! Reading a stock lookup's extracts into reported stock levels.
//!
//! A connector's stock request declares, by extract name, what it found:
//! `on_hand` or `available` (one figure), or `levels` (one item per location
//! with `location` and `on_hand`/`available`), optionally `incoming` (items
//! with `qty` and `eta`, or one number), and anything else, which rules see
//! as `refs` (product status, inventory item ids, …).

use std::collections::BTreeMap;

use serde_json::Value;

use super::mapping::{as_integer, scalar_text};
use crate::clock::days_between;
use crate::model::Incoming;

/// Names with a meaning of their own in a stock lookup's extracts.
pub const STOCK_FIELDS: [&str; 4] = ["on_hand", "available", "levels", "incoming"];

/// Stock of one SKU as the platform reported it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ReportedStock {
    pub sku: String,
    /// On-hand per location; `default` when the platform gives one figure.
    pub levels: Vec<(String, i64)>,
    pub incoming: Vec<Incoming>,
    pub refs: BTreeMap<String, Value>,
}

impl ReportedStock {
    pub fn on_hand(&self) -> i64 {
        self.levels.iter().map(|(_, q)| q).sum()
    }
}

pub fn from_extracts(sku: &str, extracts: &Value, now: &str) -> Result<ReportedStock, String> {
    let Value::Object(map) = extracts else {
        return Err("the stock lookup extracted nothing".into());
    };
    let qty = |v: &Value, what: &str| as_integer(v).ok_or_else(|| format!("{what} for {sku} is {v}, not a whole number"));
    let level_qty = |obj: &Value| -> Result<i64, String> {
        match (obj.get("on_hand").filter(|v| !v.is_null()), obj.get("available").filter(|v| !v.is_null())) {
            (Some(v), _) => qty(v, "on_hand"),
            (None, Some(v)) => qty(v, "available"),
            (None, None) => Err(format!("a stock level for {sku} has neither on_hand nor available")),
        }
    };
    let levels = match map.get("levels").filter(|v| !v.is_null()) {
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| {
                let location = item.get("location").and_then(scalar_text).unwrap_or_else(|| "default".to_string());
                Ok((location, level_qty(item)?))
            })
            .collect::<Result<Vec<_>, String>>()?,
        Some(other) => return Err(format!("levels for {sku} is {other}, not a list")),
        None => {
            let has_any = ["on_hand", "available"].iter().any(|k| map.get(*k).is_some_and(|v| !v.is_null()));
            if has_any { vec![("default".to_string(), level_qty(extracts)?)] } else { Vec::new() }
        }
    };
    let incoming = match map.get("incoming") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(|item| {
                let q = item.get("qty").and_then(as_integer).or_else(|| as_integer(item))?;
                let eta = item.get("eta").and_then(scalar_text);
                Some(Incoming { qty: q, days_until: eta.as_deref().and_then(|e| days_between(now, e)), eta })
            })
            .filter(|i| i.qty > 0)
            .collect(),
        Some(v) => match as_integer(v) {
            Some(q) if q > 0 => vec![Incoming { qty: q, eta: None, days_until: None }],
            _ => Vec::new(),
        },
    };
    let refs = map.iter().filter(|(k, _)| !STOCK_FIELDS.contains(&k.as_str())).map(|(k, v)| (k.clone(), v.clone())).collect();
    Ok(ReportedStock { sku: sku.to_string(), levels, incoming, refs })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_levels_incoming_and_refs() {
        let s = from_extracts(
            "A",
            &json!({"levels": [{"location": "L1", "on_hand": 2}, {"location": "L2", "available": "3"}], "incoming": [{"qty": 4, "eta": "2026-01-11"}], "status": "ACTIVE"}),
            "2026-01-01T00:00:00Z",
        )
        .unwrap();
        assert_eq!(s.on_hand(), 5);
        assert_eq!(s.incoming[0].days_until, Some(10));
        assert_eq!(s.refs["status"], json!("ACTIVE"));
    }

    #[test]
    fn a_single_figure_is_the_default_location() {
        let s = from_extracts("A", &json!({"available": 7, "incoming": 2}), "2026-01-01T00:00:00Z").unwrap();
        assert_eq!(s.levels, vec![("default".to_string(), 7)]);
        assert_eq!(s.incoming[0].qty, 2);
    }

    #[test]
    fn unknown_skus_have_no_levels() {
        let s = from_extracts("A", &json!({"on_hand": null}), "2026-01-01T00:00:00Z").unwrap();
        assert!(s.levels.is_empty());
    }
}
