//! JSONPath, compiled once per config version (the only user of jsonpath-rust).
//!
//! Most paths in connectors are plain member chains (`$.data.order.id`,
//! `$.line_items[0].sku`); those are resolved by a direct walk, which costs no
//! allocation per order. Anything with wildcards, filters, slices or recursive
//! descent goes to jsonpath-rust's RFC 9535 engine.

use jsonpath_rust::parser::model::JpQuery;
use jsonpath_rust::parser::parse_json_path;
use jsonpath_rust::query::js_path_process;
use serde_json::Value;

#[derive(Debug, Clone)]
pub struct JsonPath {
    source: String,
    compiled: Compiled,
}

#[derive(Debug, Clone)]
enum Compiled {
    Members(Vec<Member>),
    Query(Box<JpQuery>),
}

#[derive(Debug, Clone)]
enum Member {
    Key(String),
    Index(i64),
}

/// A path that does not compile, with the 1-based column inside the path.
#[derive(Debug, Clone)]
pub struct PathError {
    pub col: usize,
    pub message: String,
}

impl JsonPath {
    pub fn compile(source: &str) -> Result<JsonPath, PathError> {
        let source = source.trim();
        if !source.starts_with('$') {
            return Err(PathError { col: 1, message: format!("`{source}` is not a JSONPath; it must start with `$`") });
        }
        let compiled = match parse_members(source) {
            Some(members) => Compiled::Members(members),
            None => Compiled::Query(Box::new(parse_json_path(source).map_err(|e| {
                let col = match &e {
                    jsonpath_rust::parser::errors::JsonPathError::PestError(p) => match p.line_col {
                        pest::error::LineColLocation::Pos((_, c)) | pest::error::LineColLocation::Span((_, c), _) => c,
                    },
                    _ => 1,
                };
                PathError { col, message: format!("`{source}` is not a valid JSONPath: {}", first_line(&e.to_string())) }
            })?)),
        };
        Ok(JsonPath { source: source.to_string(), compiled })
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    /// Every match, in document order.
    pub fn query<'a>(&self, root: &'a Value) -> Vec<&'a Value> {
        match &self.compiled {
            Compiled::Members(members) => self.walk(members, root).into_iter().collect(),
            Compiled::Query(q) => js_path_process(q, root).map(|refs| refs.into_iter().map(|r| r.val).collect()).unwrap_or_default(),
        }
    }

    /// The first match, if any.
    pub fn first<'a>(&self, root: &'a Value) -> Option<&'a Value> {
        match &self.compiled {
            Compiled::Members(members) => self.walk(members, root),
            Compiled::Query(_) => self.query(root).into_iter().next(),
        }
    }

    fn walk<'a>(&self, members: &[Member], root: &'a Value) -> Option<&'a Value> {
        let mut cur = root;
        for m in members {
            cur = match (m, cur) {
                (Member::Key(k), Value::Object(map)) => map.get(k)?,
                (Member::Index(i), Value::Array(items)) => {
                    let idx = if *i < 0 { items.len().checked_sub(i.unsigned_abs() as usize)? } else { *i as usize };
                    items.get(idx)?
                }
                _ => return None,
            };
        }
        Some(cur)
    }
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or(s)
}

/// `$.a.b[0]['c d']` → members; `None` when the path needs the full engine.
fn parse_members(source: &str) -> Option<Vec<Member>> {
    let mut out = Vec::new();
    let bytes = source.as_bytes();
    let mut i = 1; // skip '$'
    while i < bytes.len() {
        match bytes[i] {
            b'.' => {
                if bytes.get(i + 1) == Some(&b'.') {
                    return None;
                }
                let start = i + 1;
                let mut end = start;
                while end < bytes.len() && (bytes[end].is_ascii_alphanumeric() || bytes[end] == b'_' || bytes[end] == b'-') {
                    end += 1;
                }
                if end == start {
                    return None;
                }
                out.push(Member::Key(source[start..end].to_string()));
                i = end;
            }
            b'[' => {
                let close = source[i..].find(']')? + i;
                let inner = source[i + 1..close].trim();
                if let Ok(n) = inner.parse::<i64>() {
                    out.push(Member::Index(n));
                } else if inner.len() >= 2
                    && ((inner.starts_with('\'') && inner.ends_with('\'')) || (inner.starts_with('"') && inner.ends_with('"')))
                {
                    let key = &inner[1..inner.len() - 1];
                    if key.contains(['\\', '\'', '"']) {
                        return None;
                    }
                    out.push(Member::Key(key.to_string()));
                } else {
                    return None;
                }
                i = close + 1;
            }
            _ => return None,
        }
    }
    Some(out)
}

/// A JSONPath that holds when it matches something other than null, false
/// or empty — or, with `equals`, one of those values; `negate` turns it
/// around. Filters in JSONPath select among a value's children, so a test
/// on an object's own field (`state == holded`) is written as `path` plus
/// `equals` rather than as a filter.
#[derive(Debug, Clone)]
pub struct Condition {
    pub path: JsonPath,
    pub equals: Vec<Value>,
    pub negate: bool,
}

impl Condition {
    pub fn holds(&self, doc: &Value) -> bool {
        let matched = self.path.query(doc).into_iter().any(|v| {
            if self.equals.is_empty() {
                !matches!(v, Value::Null | Value::Bool(false)) && v.as_str() != Some("") && v.as_array().is_none_or(|a| !a.is_empty())
            } else {
                self.equals.contains(v)
            }
        });
        matched != self.negate
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn member_paths_walk_directly() {
        let v = json!({"a": {"b": [{"c": 1}, {"c": 2}]}, "x y": 3});
        let p = JsonPath::compile("$.a.b[1].c").unwrap();
        assert!(matches!(p.compiled, Compiled::Members(_)));
        assert_eq!(p.first(&v), Some(&json!(2)));
        assert_eq!(JsonPath::compile("$['x y']").unwrap().first(&v), Some(&json!(3)));
        assert_eq!(JsonPath::compile("$.a.b[-1].c").unwrap().first(&v), Some(&json!(2)));
        assert_eq!(JsonPath::compile("$.a.missing").unwrap().first(&v), None);
    }

    #[test]
    fn wildcards_and_filters_use_the_engine() {
        let v = json!({"q": [{"name": "available", "quantity": 3}, {"name": "on_hand", "quantity": 5}]});
        let p = JsonPath::compile("$.q[?(@.name=='on_hand')].quantity").unwrap();
        assert_eq!(p.query(&v), vec![&json!(5)]);
        let all = JsonPath::compile("$.q[*].quantity").unwrap();
        assert_eq!(all.query(&v).len(), 2);
    }

    #[test]
    fn bad_paths_are_reported() {
        assert!(JsonPath::compile("data.id").is_err());
        let e = JsonPath::compile("$.a[?(@.x==]").unwrap_err();
        assert!(e.message.contains("not a valid JSONPath"), "{}", e.message);
    }
}
