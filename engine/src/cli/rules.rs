//! `ordersync rules try`: run a rule over one order or a file of orders,
//! without a daemon or a platform, and compare two versions of a rule.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use clap::Subcommand;
use serde_json::{Map, Value, json};

use crate::adapters::rules::{Rule, RuleEngine, RuleLimits, RuleOutcome};
use crate::clock::{days_between, format_rfc3339};

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    action: Action,
}

#[derive(Subcommand)]
enum Action {
    /// Decide orders with a rule and show what it decided, why, and how fast.
    Try {
        /// The rule script (e.g. workflows/rules/amusement-machines.rhai).
        rule: PathBuf,
        /// One canonical order (JSON).
        #[arg(long, conflicts_with = "orders")]
        order: Option<PathBuf>,
        /// Many orders: a JSON array (or JSON lines) of orders, or of `{"order": …, "stock": …}`.
        #[arg(long)]
        orders: Option<PathBuf>,
        /// Stock per SKU: `{"SKU": {"on_hand": 3, "reserved": 1, "incoming": [{"qty": 2, "eta": "2026-12-01"}]}}`.
        #[arg(long)]
        stock: Option<PathBuf>,
        /// The rule's `params` (JSON object).
        #[arg(long)]
        params: Option<PathBuf>,
        /// The time the rule sees (RFC 3339; default now).
        #[arg(long)]
        now: Option<String>,
        /// Another version of the rule: show the orders it decides differently.
        #[arg(long)]
        compare: Option<PathBuf>,
        /// Operation limit (default as in the daemon).
        #[arg(long)]
        max_operations: Option<u64>,
    },
}

fn read_json(path: &Path) -> anyhow::Result<Value> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    match serde_json::from_str(&text) {
        Ok(v) => Ok(v),
        // JSON lines
        Err(first) => {
            let lines: Result<Vec<Value>, _> = text.lines().filter(|l| !l.trim().is_empty()).map(serde_json::from_str).collect();
            lines.map(Value::Array).map_err(|_| anyhow::anyhow!("{} is not JSON: {first}", path.display()))
        }
    }
}

/// Complete a stock entry the way the daemon builds it: available, days until each ETA.
fn stock_view(sku: &str, v: &Value, now: &str) -> Value {
    let num = |k: &str| v.get(k).and_then(Value::as_i64).unwrap_or(0);
    let (on_hand, reserved, safety) = (num("on_hand"), num("reserved"), num("safety"));
    let available = v.get("available").and_then(Value::as_i64).unwrap_or(on_hand - reserved - safety);
    let incoming: Vec<Value> = v
        .get("incoming")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|i| {
            let eta = i.get("eta").and_then(Value::as_str);
            json!({"qty": i.get("qty").and_then(Value::as_i64).unwrap_or(0), "eta": eta, "days_until": eta.and_then(|e| days_between(now, e))})
        })
        .collect();
    json!({"sku": sku, "on_hand": on_hand, "reserved": reserved, "safety": safety, "available": available, "incoming": incoming,
           "locations": [], "refs": v.get("refs").cloned().unwrap_or(json!({}))})
}

fn stock_map(v: &Value, now: &str) -> Value {
    Value::Object(v.as_object().map(|m| m.iter().map(|(k, s)| (k.clone(), stock_view(k, s, now))).collect()).unwrap_or_default())
}

/// Fill in what a canonical order may leave out.
fn order_view(o: &Value) -> Value {
    let mut o = o.clone();
    if let Value::Object(m) = &mut o {
        m.entry("customer").or_insert(json!({"id": null, "name": null, "group": null}));
        m.entry("raw").or_insert(json!({}));
        m.entry("number").or_insert(json!(""));
        if let Some(Value::Array(lines)) = m.get_mut("lines") {
            for l in lines {
                if let Value::Object(l) = l {
                    l.entry("location").or_insert(Value::Null);
                }
            }
        }
    }
    o
}

fn decide(engine: &RuleEngine, rule: &Rule, order: &Value, stock: &Value, params: &Value, now: &str) -> (Result<RuleOutcome, String>, f64) {
    let input = json!({"order": order_view(order), "stock": stock, "params": params, "now": now});
    match engine.decide(rule, &input) {
        Ok((o, took)) => (Ok(o), took.as_secs_f64() * 1000.0),
        Err(e) => (Err(e.to_string()), 0.0),
    }
}

fn describe(r: &Result<RuleOutcome, String>) -> String {
    match r {
        Ok(o) => o.decision.as_str().to_string(),
        Err(_) => "error".into(),
    }
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let Action::Try { rule, order, orders, stock, params, now, compare, max_operations } = args.action;
    let limits = RuleLimits { max_operations: max_operations.unwrap_or(RuleLimits::default().max_operations), ..RuleLimits::default() };
    let engine = RuleEngine::new(limits);
    let compile = |p: &Path| -> anyhow::Result<Rule> {
        let text = std::fs::read_to_string(p).with_context(|| format!("cannot read {}", p.display()))?;
        engine.compile(p, &text).map_err(|e| anyhow::anyhow!("{}:{}:{}: rule does not compile: {}", p.display(), e.line, e.col, e.message))
    };
    let rule_a = compile(&rule)?;
    let rule_b = compare.as_deref().map(compile).transpose()?;
    let now = now.unwrap_or_else(|| format_rfc3339(time::OffsetDateTime::now_utc()));
    let params = params.as_deref().map(read_json).transpose()?.unwrap_or(json!({}));
    let stock = stock.as_deref().map(read_json).transpose()?.unwrap_or(json!({}));

    // (order, stock) pairs
    let cases: Vec<(Value, Value)> = match (order, orders) {
        (Some(p), _) => vec![(read_json(&p)?, stock.clone())],
        (None, Some(p)) => match read_json(&p)? {
            Value::Array(items) => items
                .into_iter()
                .map(|i| match (i.get("order").cloned(), i.get("stock").cloned()) {
                    (Some(o), Some(s)) => (o, s),
                    (Some(o), None) => (o, stock.clone()),
                    _ => (i, stock.clone()),
                })
                .collect(),
            other => vec![(other, stock.clone())],
        },
        (None, None) => bail!("give --order FILE or --orders FILE"),
    };

    if cases.len() == 1 && rule_b.is_none() {
        let (o, s) = &cases[0];
        let (result, took) = decide(&engine, &rule_a, o, &stock_map(s, &now), &params, &now);
        return Ok(match result {
            Ok(out) => {
                println!("decision: {}", out.decision.as_str());
                println!("reason:   {}", out.reason);
                println!("priority: {}", out.priority);
                if let Some(lines) = &out.lines {
                    let l: Vec<String> = lines.iter().map(|l| format!("{} ×{}", l.sku, l.qty)).collect();
                    println!("lines:    {}", l.join(", "));
                }
                println!("took:     {took:.3} ms");
                ExitCode::SUCCESS
            }
            Err(e) => {
                println!("error:    {e}");
                ExitCode::FAILURE
            }
        });
    }

    let mut changed = 0;
    let mut counts: Map<String, Value> = Map::new();
    println!("{:>4}  {:<14} {:<26} {:<9} {:>8}  reason", "#", "order", "customer", "decision", "ms");
    for (i, (o, s)) in cases.iter().enumerate() {
        let stock = stock_map(s, &now);
        let (a, took) = decide(&engine, &rule_a, o, &stock, &params, &now);
        let number = o.get("number").and_then(Value::as_str).or(o.get("id").and_then(Value::as_str)).unwrap_or("").to_string();
        let customer = o.pointer("/customer/name").and_then(Value::as_str).unwrap_or("").to_string();
        let reason = match &a {
            Ok(out) => out.reason.clone(),
            Err(e) => e.clone(),
        };
        let entry = counts.entry(describe(&a)).or_insert(json!(0));
        *entry = json!(entry.as_u64().unwrap_or(0) + 1);
        match &rule_b {
            None => println!("{:>4}  {:<14} {:<26} {:<9} {:>8.3}  {}", i + 1, number, customer, describe(&a), took, reason),
            Some(b) => {
                let (bd, _) = decide(&engine, b, o, &stock, &params, &now);
                let mark = if describe(&a) != describe(&bd) {
                    changed += 1;
                    format!(" → {} ({})", describe(&bd), bd.as_ref().map(|o| o.reason.clone()).unwrap_or_else(|e| e.clone()))
                } else {
                    String::new()
                };
                println!("{:>4}  {:<14} {:<26} {:<9} {:>8.3}  {}{}", i + 1, number, customer, describe(&a), took, reason, mark);
            }
        }
    }
    let summary: Vec<String> = counts.iter().map(|(k, v)| format!("{v} {k}")).collect();
    println!("{} orders: {}", cases.len(), summary.join(", "));
    if let Some(b) = &compare {
        println!("{changed} order(s) decided differently by {}", b.display());
    }
    Ok(ExitCode::SUCCESS)
}
