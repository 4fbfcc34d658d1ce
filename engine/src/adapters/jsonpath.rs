//! JSONPath, compiled once per config version (the only user of jsonpath-rust).
//!
//! Most paths in connectors are member chains (`$.data.order.id`,
//! `$.line_items[0].sku`), sometimes with a wildcard (`$.line_items[*]`) or an
//! equality filter (`[?(@.name == 'on_hand')]`); those are resolved by a
//! direct walk with RFC 9535's meaning, which allocates next to nothing per
//! order. Anything else (slices, unions, recursive descent, other filters)
//! goes to jsonpath-rust's RFC 9535 engine.

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
    /// `[*]`: every element of an array, every member value of an object.
    All,
    /// `[?(@.a.b == literal)]`: the children whose relative path equals the literal.
    Equals {
        path: Vec<String>,
        literal: Value,
    },
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
            Compiled::Members(members) => {
                let mut out = Vec::new();
                walk(members, root, &mut |v| {
                    out.push(v);
                    true
                });
                out
            }
            Compiled::Query(q) => js_path_process(q, root).map(|refs| refs.into_iter().map(|r| r.val).collect()).unwrap_or_default(),
        }
    }

    /// The first match, if any.
    pub fn first<'a>(&self, root: &'a Value) -> Option<&'a Value> {
        match &self.compiled {
            Compiled::Members(members) => {
                let mut found = None;
                walk(members, root, &mut |v| {
                    found = Some(v);
                    false
                });
                found
            }
            Compiled::Query(_) => self.query(root).into_iter().next(),
        }
    }
}

/// Hand every match of `members` under `cur` to `found`, in document order,
/// until it returns false. Returns false once stopped.
fn walk<'a>(members: &[Member], cur: &'a Value, found: &mut dyn FnMut(&'a Value) -> bool) -> bool {
    let Some((m, rest)) = members.split_first() else {
        return found(cur);
    };
    match (m, cur) {
        (Member::Key(k), Value::Object(map)) => map.get(k).is_none_or(|v| walk(rest, v, found)),
        (Member::Index(i), Value::Array(items)) => {
            let idx = if *i < 0 { items.len().checked_sub(i.unsigned_abs() as usize) } else { Some(*i as usize) };
            idx.and_then(|i| items.get(i)).is_none_or(|v| walk(rest, v, found))
        }
        (Member::All, _) => children(cur).all(|v| walk(rest, v, found)),
        (Member::Equals { path, literal }, _) => {
            children(cur).filter(|child| relative(path, child).is_some_and(|v| same_value(v, literal))).all(|v| walk(rest, v, found))
        }
        _ => true,
    }
}

/// The children a wildcard or filter selects from: array elements, object member values.
fn children(v: &Value) -> Box<dyn Iterator<Item = &Value> + '_> {
    match v {
        Value::Array(items) => Box::new(items.iter()),
        Value::Object(map) => Box::new(map.values()),
        _ => Box::new(std::iter::empty()),
    }
}

fn relative<'a>(path: &[String], mut v: &'a Value) -> Option<&'a Value> {
    for key in path {
        v = v.as_object()?.get(key)?;
    }
    Some(v)
}

/// RFC 9535 equality: numbers compare by value (1 == 1.0), the rest structurally.
fn same_value(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_i64(), y.as_i64()) {
            (Some(x), Some(y)) => x == y,
            _ => x.as_f64() == y.as_f64(),
        },
        _ => a == b,
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
                if inner.starts_with('?') {
                    // A filter may hold a `]` inside its literal: leave such paths to the engine.
                    out.push(parse_equals(inner)?);
                } else if inner == "*" {
                    out.push(Member::All);
                } else if let Ok(n) = inner.parse::<i64>() {
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

/// `?(@.a.b == 'text')`, `?@.a == 3` → a filter the walk can apply; `None`
/// for every other filter expression.
fn parse_equals(inner: &str) -> Option<Member> {
    let expr = inner.strip_prefix('?')?.trim();
    let expr = match expr.strip_prefix('(') {
        Some(e) => e.strip_suffix(')')?.trim(),
        None => expr,
    };
    let (lhs, rhs) = expr.split_once("==")?;
    let path = lhs.trim().strip_prefix("@.")?;
    let keys: Vec<String> = path.split('.').map(str::to_string).collect();
    if keys.iter().any(|k| k.is_empty() || !k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')) {
        return None;
    }
    let rhs = rhs.trim();
    let quoted = |q: char| rhs.len() >= 2 && rhs.starts_with(q) && rhs.ends_with(q);
    let literal = if quoted('\'') || quoted('"') {
        let text = &rhs[1..rhs.len() - 1];
        if text.contains(['\\', '\'', '"']) {
            return None;
        }
        Value::String(text.to_string())
    } else if let Ok(n) = rhs.parse::<i64>() {
        Value::from(n)
    } else {
        return None;
    };
    Some(Member::Equals { path: keys, literal })
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
    fn wildcards_and_equality_filters_walk_directly() {
        let v = json!({"q": [{"name": "available", "quantity": 3}, {"name": "on_hand", "quantity": 5}]});
        let p = JsonPath::compile("$.q[?(@.name=='on_hand')].quantity").unwrap();
        assert!(matches!(p.compiled, Compiled::Members(_)));
        assert_eq!(p.query(&v), vec![&json!(5)]);
        let all = JsonPath::compile("$.q[*].quantity").unwrap();
        assert!(matches!(all.compiled, Compiled::Members(_)));
        assert_eq!(all.query(&v), vec![&json!(3), &json!(5)]);
        assert_eq!(all.first(&v), Some(&json!(3)));
    }

    /// The direct walk must answer exactly as the RFC 9535 engine does.
    #[test]
    fn the_direct_walk_agrees_with_the_engine() {
        let doc = json!({
            "nodes": [
                {"location": {"id": "L1"}, "quantities": [{"name": "on_hand", "quantity": 4}, {"name": "incoming", "quantity": 2}]},
                {"location": {"id": "L2"}, "quantities": [{"name": "on_hand", "quantity": 1.0}, {"name": "incoming", "quantity": 0}]},
                {"location": {"id": "L3"}, "quantities": "none"},
                7
            ],
            "by_id": {"b": {"kind": {"v": 1}}, "a": {"kind": {"v": 2}}, "c": {"kind": {"v": 1}}},
            "n": [{"k": 1}, {"k": 1.0}, {"k": "1"}, {"k": null}, {}]
        });
        let paths = [
            "$.nodes[*]",
            "$.nodes[*].location.id",
            "$.nodes[*].quantities[?(@.name == 'on_hand')].quantity",
            "$.nodes[*].quantities[?@.name==\"incoming\"].quantity",
            "$.nodes[0].quantities[*].name",
            "$.nodes[-1]",
            "$.nodes[9].x",
            "$.by_id[*]",
            "$.by_id[?(@.kind.v == 1)]",
            "$.n[?(@.k == 1)]",
            "$.n[?(@.k == '1')]",
            "$.by_id.a[*]",
            "$.missing[*]",
        ];
        for source in paths {
            let direct = JsonPath::compile(source).unwrap();
            assert!(matches!(direct.compiled, Compiled::Members(_)), "{source} should walk directly");
            let engine = parse_json_path(source).unwrap();
            let want: Vec<&Value> = js_path_process(&engine, &doc).unwrap().into_iter().map(|r| r.val).collect();
            assert_eq!(direct.query(&doc), want, "{source}");
            assert_eq!(direct.first(&doc), want.first().copied(), "{source}");
        }
    }

    #[test]
    fn other_filters_use_the_engine() {
        let v = json!({"q": [{"n": 3}, {"n": 5}]});
        let p = JsonPath::compile("$.q[?(@.n > 4)].n").unwrap();
        assert!(matches!(p.compiled, Compiled::Query(_)));
        assert_eq!(p.query(&v), vec![&json!(5)]);
        assert!(matches!(JsonPath::compile("$.q[?(@.n == 'a]b')]").unwrap().compiled, Compiled::Query(_)));
    }

    #[test]
    fn bad_paths_are_reported() {
        assert!(JsonPath::compile("data.id").is_err());
        let e = JsonPath::compile("$.a[?(@.x==]").unwrap_err();
        assert!(e.message.contains("not a valid JSONPath"), "{}", e.message);
    }
}
