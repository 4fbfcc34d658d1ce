//! Rhai rule scripts in a sandbox (the only user of rhai).
//!
//! A rule is a script whose last expression is the decision map
//! `#{ decision: "approve" | "reject" | "waitlist", reason: "...", lines: [...], priority: 0 }`.
//! It sees `order`, `stock`, `params` and `now` and nothing else: no file,
//! network or module access (the `no_module` build has no `import`), `eval` is
//! disabled, and operations, call depth, expression depth and string, array and
//! map sizes are capped so a runaway rule fails that order, not the daemon.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use rhai::{AST, Dynamic, Engine, Position, Scope};
use serde_json::Value;

use crate::model::Decision;

/// Sandbox limits for every rule of a config version.
#[derive(Debug, Clone, Copy)]
pub struct RuleLimits {
    pub max_operations: u64,
    pub max_call_levels: usize,
    pub max_expr_depth: usize,
    pub max_string_size: usize,
    pub max_array_size: usize,
    pub max_map_size: usize,
}

impl Default for RuleLimits {
    fn default() -> Self {
        RuleLimits {
            max_operations: 500_000,
            max_call_levels: 32,
            max_expr_depth: 64,
            max_string_size: 64 * 1024,
            max_array_size: 10_000,
            max_map_size: 10_000,
        }
    }
}

/// A compiled rule script.
#[derive(Clone)]
pub struct Rule {
    pub file: PathBuf,
    ast: Arc<AST>,
    /// Whether the script mentions `raw` outside comments: only then does
    /// it get `order.raw`, the platform's whole payload, which costs more
    /// to hand over than the rest of its input together.
    pub reads_raw: bool,
}

impl std::fmt::Debug for Rule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rule").field("file", &self.file).finish()
    }
}

/// A script that does not compile, with its 1-based position.
#[derive(Debug, Clone)]
pub struct ScriptError {
    pub line: usize,
    pub col: usize,
    pub message: String,
}

/// Why a rule gave no usable decision; the order goes to `error` with this text.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RuleFailure {
    #[error("rule {file} stopped at line {line}: {message}")]
    Script { file: String, line: usize, message: String },
    #[error("rule {file} hit its limit of {limit}: {message}")]
    Limit { file: String, limit: String, message: String },
    #[error("rule {file} returned {message}")]
    BadResult { file: String, message: String },
}

/// What a rule decided.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RuleOutcome {
    pub decision: Decision,
    pub reason: String,
    /// Quantities to allocate per SKU when the rule approves part of an order.
    pub lines: Option<Vec<AllocatedLine>>,
    /// Higher goes first on the waitlist.
    pub priority: i64,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AllocatedLine {
    pub sku: String,
    pub qty: i64,
}

/// One sandboxed engine per config version; rules compile and run on it.
pub struct RuleEngine {
    engine: Engine,
    limits: RuleLimits,
}

impl RuleEngine {
    pub fn new(limits: RuleLimits) -> Self {
        let mut engine = Engine::new();
        engine
            .set_max_operations(limits.max_operations)
            .set_max_call_levels(limits.max_call_levels)
            .set_max_expr_depths(limits.max_expr_depth, limits.max_expr_depth / 2)
            .set_max_string_size(limits.max_string_size)
            .set_max_array_size(limits.max_array_size)
            .set_max_map_size(limits.max_map_size)
            .set_max_variables(1_000)
            .set_max_functions(1_000);
        engine.disable_symbol("eval");
        engine.on_print(|s| tracing::info!(target: "ordersync::rule", "{s}"));
        engine.on_debug(
            |s, src, pos| tracing::debug!(target: "ordersync::rule", source = src.unwrap_or(""), line = pos.line().unwrap_or(0), "{s}"),
        );
        RuleEngine { engine, limits }
    }

    pub fn limits(&self) -> RuleLimits {
        self.limits
    }

    pub fn compile(&self, file: &Path, source: &str) -> Result<Rule, ScriptError> {
        let ast = self.engine.compile(source).map_err(|e| {
            let (line, col) = position(e.position());
            ScriptError { line, col, message: e.err_type().to_string() }
        })?;
        Ok(Rule { file: file.to_path_buf(), ast: Arc::new(ast), reads_raw: mentions_word(source, "raw") })
    }

    /// Run a rule over its inputs. `input` must be a JSON object; each of its
    /// keys becomes a variable of the script (`order`, `stock`, `params`, `now`).
    pub fn decide(&self, rule: &Rule, input: &Value) -> Result<(RuleOutcome, std::time::Duration), RuleFailure> {
        let mut inputs = RuleInputs::default();
        if let Value::Object(map) = input {
            for (k, v) in map {
                inputs.set(k, v);
            }
        }
        self.decide_with(rule, inputs)
    }

    /// Run a rule over variables set one by one (no JSON object of them is built).
    pub fn decide_with(&self, rule: &Rule, inputs: RuleInputs) -> Result<(RuleOutcome, std::time::Duration), RuleFailure> {
        let started = Instant::now();
        let mut scope = inputs.scope;
        let result = self.engine.eval_ast_with_scope::<Dynamic>(&mut scope, &rule.ast).map_err(|e| self.failure(&rule.file, *e))?;
        let outcome = outcome_from(result).map_err(|message| RuleFailure::BadResult { file: rule.file.display().to_string(), message })?;
        Ok((outcome, started.elapsed()))
    }

    fn failure(&self, file: &Path, e: rhai::EvalAltResult) -> RuleFailure {
        use rhai::EvalAltResult as E;
        let file = file.display().to_string();
        let (line, _) = position(e.position());
        let limit = match &e {
            E::ErrorTooManyOperations(_) => Some(format!("{} operations", self.limits.max_operations)),
            E::ErrorStackOverflow(_) => Some(format!("{} nested calls", self.limits.max_call_levels)),
            E::ErrorDataTooLarge(what, _) => Some(format!("data size ({what})")),
            E::ErrorTooManyVariables(_) => Some("1000 variables".into()),
            _ => None,
        };
        match limit {
            Some(limit) => RuleFailure::Limit { file, limit, message: e.to_string() },
            None => RuleFailure::Script { file, line, message: strip_position(&e.to_string()) },
        }
    }
}

/// The variables a rule sees, converted from JSON as they are set.
#[derive(Default)]
pub struct RuleInputs {
    scope: Scope<'static>,
}

impl RuleInputs {
    pub fn set(&mut self, name: &str, value: &Value) {
        self.scope.push_dynamic(name, dynamic_of(value));
    }

    /// Set a variable straight from a serializable value: what `set` would
    /// make of its JSON, without building the JSON first.
    pub fn set_serialized<T: serde::Serialize>(&mut self, name: &str, value: &T) -> Result<(), String> {
        let dynamic = rhai::serde::to_dynamic(value).map_err(|e| format!("{name} cannot be handed to the rule: {e}"))?;
        self.scope.push_dynamic(name, dynamic);
        Ok(())
    }

    /// Set `name.field` on a map variable set before (e.g. `order.raw`);
    /// nothing happens when `name` is not a map.
    pub fn set_field(&mut self, name: &str, field: &str, value: &Value) {
        if let Some(mut map) = self.scope.get_mut(name).and_then(|d| d.write_lock::<rhai::Map>()) {
            map.insert(field.into(), dynamic_of(value));
        }
    }
}

/// JSON as a script sees it; numbers follow rhai's own serde conversion
/// (integers that fit `i64` stay integers, everything else is a float).
fn dynamic_of(value: &Value) -> Dynamic {
    match value {
        Value::Null => Dynamic::UNIT,
        Value::Bool(b) => Dynamic::from_bool(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => Dynamic::from_int(i),
            None => Dynamic::from_float(n.as_f64().unwrap_or(f64::NAN)),
        },
        Value::String(s) => Dynamic::from(rhai::ImmutableString::from(s.as_str())),
        Value::Array(items) => Dynamic::from_array(items.iter().map(dynamic_of).collect()),
        Value::Object(map) => Dynamic::from_map(map.iter().map(|(k, v)| (k.as_str().into(), dynamic_of(v))).collect()),
    }
}

/// `word` as a whole word in `source` outside `//` and `/* */` comments.
fn mentions_word(source: &str, word: &str) -> bool {
    let mut code = String::with_capacity(source.len());
    let mut rest = source;
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix("//") {
            rest = after.find('\n').map_or("", |i| &after[i..]);
        } else if let Some(after) = rest.strip_prefix("/*") {
            rest = after.find("*/").map_or("", |i| &after[i + 2..]);
            code.push(' ');
        } else {
            let c = rest.chars().next().unwrap_or(' ');
            code.push(c);
            rest = &rest[c.len_utf8()..];
        }
    }
    let is_ident = |c: char| c.is_alphanumeric() || c == '_';
    code.match_indices(word)
        .any(|(i, _)| !code[..i].chars().next_back().is_some_and(is_ident) && !code[i + word.len()..].chars().next().is_some_and(is_ident))
}

fn position(p: Position) -> (usize, usize) {
    (p.line().unwrap_or(1), p.position().unwrap_or(1))
}

fn strip_position(s: &str) -> String {
    match s.rfind(" (line ") {
        Some(i) => s[..i].to_string(),
        None => s.to_string(),
    }
}

fn outcome_from(result: Dynamic) -> Result<RuleOutcome, String> {
    let type_name = result.type_name().to_string();
    let value: Value = rhai::serde::from_dynamic(&result).map_err(|e| format!("a value that is not data: {e}"))?;
    let Value::Object(map) = value else {
        return Err(format!("a {type_name} instead of a map like #{{ decision: \"approve\", reason: \"...\" }}"));
    };
    let decision = match map.get("decision") {
        Some(Value::String(s)) => {
            Decision::parse(s).ok_or_else(|| format!("decision \"{s}\"; expected \"approve\", \"reject\" or \"waitlist\""))?
        }
        Some(other) => return Err(format!("decision {other}; expected a string")),
        None => return Err("a map without `decision`".into()),
    };
    let reason = match map.get("reason") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    };
    let priority = match map.get("priority") {
        None | Some(Value::Null) => 0,
        Some(v) => v.as_i64().ok_or_else(|| format!("priority {v}; expected an integer"))?,
    };
    let lines = match map.get("lines") {
        None | Some(Value::Null) => None,
        Some(Value::Array(items)) => Some(
            items
                .iter()
                .map(|l| {
                    let sku = l.get("sku").and_then(Value::as_str).ok_or_else(|| format!("a line without a sku: {l}"))?;
                    let qty = l.get("qty").and_then(Value::as_i64).ok_or_else(|| format!("a line without an integer qty: {l}"))?;
                    if qty < 0 {
                        return Err(format!("a negative qty for {sku}"));
                    }
                    Ok(AllocatedLine { sku: sku.to_string(), qty })
                })
                .collect::<Result<Vec<_>, String>>()?,
        ),
        Some(other) => return Err(format!("lines {other}; expected an array")),
    };
    Ok(RuleOutcome { decision, reason, lines, priority })
}

#[cfg(test)]
mod tests {

    #[test]
    fn raw_is_noticed_only_in_code() {
        assert!(!mentions_word("// order.raw is the payload\nlet x = order.number; /* raw */", "raw"));
        assert!(mentions_word("let tier = order.raw.customer.tier;", "raw"));
        assert!(mentions_word("let r = order[\"raw\"];", "raw"));
        assert!(!mentions_word("let drawer = 1; let raws = 2;", "raw"));
    }

    use super::*;
    use serde_json::json;

    #[test]
    fn inputs_convert_as_rhai_serde_converts_them() {
        let value = json!({
            "s": "text", "t": true, "n": null, "i": -7, "big": u64::MAX, "f": 1.5, "one": 1.0,
            "lines": [{ "sku": "PB-1", "qty": 2 }, [], {}], "nested": { "a": { "b": [1, "x", null] } }
        });
        let ours = dynamic_of(&value);
        let theirs: Dynamic = rhai::serde::to_dynamic(&value).unwrap();
        assert_eq!(format!("{ours:?}"), format!("{theirs:?}"));
        let mut back: Value = rhai::serde::from_dynamic(&ours).unwrap();
        assert_eq!(back["big"], json!(u64::MAX as f64), "beyond i64 a number becomes a float");
        back["big"] = value["big"].clone();
        assert_eq!(back, value);
    }

    #[test]
    fn a_serialized_input_is_what_its_json_would_give() {
        #[derive(serde::Serialize)]
        struct Level {
            on_hand: i64,
            eta: Option<String>,
            refs: std::collections::BTreeMap<String, Value>,
            locations: Vec<(String, i64)>,
        }
        let refs = [("tags".to_string(), json!(["a", 1, null])), ("big".to_string(), json!(u64::MAX))].into();
        let level = Level { on_hand: -3, eta: None, refs, locations: vec![("shelf".into(), 4)] };
        let stock = std::collections::BTreeMap::from([("PB-1".to_string(), level)]);
        let mut direct = RuleInputs::default();
        direct.set_serialized("stock", &stock).unwrap();
        let mut via_json = RuleInputs::default();
        via_json.set("stock", &serde_json::to_value(&stock).unwrap());
        let seen = |inputs: &RuleInputs| format!("{:?}", inputs.scope.get_value::<Dynamic>("stock").unwrap());
        assert_eq!(seen(&direct), seen(&via_json));
    }

    #[test]
    fn a_field_can_be_added_to_a_map_input() {
        let e = RuleEngine::new(RuleLimits::default());
        let rule = e
            .compile(Path::new("r.rhai"), r#"#{ decision: if order.raw.vip && order.number == 7 { "approve" } else { "reject" } }"#)
            .unwrap();
        let mut inputs = RuleInputs::default();
        inputs.set("order", &json!({ "number": 7 }));
        inputs.set_field("order", "raw", &json!({ "vip": true }));
        assert_eq!(e.decide_with(&rule, inputs).unwrap().0.decision, Decision::Approve);
    }

    fn run(src: &str, input: Value) -> Result<RuleOutcome, RuleFailure> {
        let e = RuleEngine::new(RuleLimits { max_operations: 10_000, ..Default::default() });
        let rule = e.compile(Path::new("r.rhai"), src).unwrap();
        e.decide(&rule, &input).map(|(o, _)| o)
    }

    #[test]
    fn a_rule_sees_its_inputs_and_decides() {
        let out = run(
            r#"if stock[order.lines[0].sku].available >= order.lines[0].qty { #{decision: "approve", reason: "in stock"} } else { #{decision: "waitlist", priority: 2} }"#,
            json!({"order": {"lines": [{"sku": "A", "qty": 2}]}, "stock": {"A": {"available": 1}}}),
        )
        .unwrap();
        assert_eq!(out.decision, Decision::Waitlist);
        assert_eq!(out.priority, 2);
    }

    #[test]
    fn endless_loops_stop_at_the_operation_limit() {
        let err = run("loop { }", json!({})).unwrap_err();
        assert!(matches!(err, RuleFailure::Limit { .. }), "{err}");
    }

    #[test]
    fn bad_results_and_script_errors_are_explained() {
        assert!(matches!(run("42", json!({})).unwrap_err(), RuleFailure::BadResult { .. }));
        assert!(matches!(run(r#"#{decision: "maybe"}"#, json!({})).unwrap_err(), RuleFailure::BadResult { .. }));
        let err = run("let x = 1;\nx.nothing()", json!({})).unwrap_err();
        assert!(matches!(err, RuleFailure::Script { line: 2, .. }), "{err}");
    }

    #[test]
    fn compile_errors_have_positions() {
        let e = RuleEngine::new(RuleLimits::default());
        let err = e.compile(Path::new("r.rhai"), "let x = ;").unwrap_err();
        assert_eq!(err.line, 1);
        assert!(err.col > 1);
    }

    #[test]
    fn eval_is_not_available() {
        let e = RuleEngine::new(RuleLimits::default());
        assert!(e.compile(Path::new("r.rhai"), r#"eval("1")"#).is_err());
    }
}
