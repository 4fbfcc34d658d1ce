//! Lints: things that load fine but are probably mistakes. They are
//! reported as warnings by `ordersync validate` (and logged by the daemon);
//! they never stop a config from going live.
//!
//! - a connector request no workflow uses;
//! - write-back steps for a decision the rule never makes;
//! - templates that read what the context never provides (an order field
//!   the canonical order lacks, a step that has not run yet, an argument
//!   the step does not give, a value the connector does not declare).

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;

use super::diagnostic::Diagnostic;
use super::yaml::SpanIndex;
use crate::adapters::template::Template;
use crate::connector::{Auth, Body, Connector, JsonTemplate, RequestSpec};
use crate::model::Decision;
use crate::workflow::{Kind, Step, Trigger, Workflow};

const ORDER_FIELDS: &[&str] =
    &["id", "platform", "connection", "workflow", "external_id", "number", "customer", "lines", "received_at", "raw"];
const CUSTOMER_FIELDS: &[&str] = &["id", "name", "group"];
const DECISION_FIELDS: &[&str] = &["decision", "reason", "priority", "lines"];

pub struct Sources<'a> {
    /// Connector name → its file and spans.
    pub connectors: &'a BTreeMap<String, (PathBuf, SpanIndex)>,
    /// Workflow file → its spans.
    pub workflows: &'a BTreeMap<PathBuf, SpanIndex>,
    /// Rule file → its text.
    pub rules: &'a BTreeMap<PathBuf, String>,
}

pub fn lint(
    connectors: &BTreeMap<String, Arc<Connector>>,
    workflows: &BTreeMap<String, Arc<Workflow>>,
    src: &Sources<'_>,
) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    unused_requests(connectors, workflows, src, &mut out);
    for wf in workflows.values() {
        let spans = src.workflows.get(&wf.file);
        let at = |field: &str, msg: String| Diagnostic::new(&wf.file, spans.map_or((1, 1), |s| s.locate(field)), field, msg);
        if let Kind::Orders(flow) = &wf.kind {
            let rule_text = src.rules.get(&flow.rule.file).map(String::as_str).unwrap_or("");
            for d in Decision::ALL {
                let steps = wf.steps_for(d);
                if !steps.is_empty() && !rule_text.contains(&format!("\"{}\"", d.as_str())) {
                    out.push(at(
                        &format!("on.{}", d.as_str()),
                        format!("the rule {} never decides `{}`, so these steps never run", flow.rule.file.display(), d.as_str()),
                    ));
                }
                let mut earlier: Vec<&str> = Vec::new();
                for (i, step) in steps.iter().enumerate() {
                    let field = format!("on.{}.{i}", d.as_str());
                    for problem in step_reads(wf, step, &earlier) {
                        out.push(at(&field, problem));
                    }
                    earlier.push(&step.name);
                }
            }
            let single = wf.connection.connector.single_for(&flow.stock.request);
            for (name, v, why) in std::iter::once(&flow.stock.request).chain(single).chain(&flow.stock.also).flat_map(|r| {
                // A multi-SKU lookup is given its batch; any other, its one SKU.
                let (own, listed) =
                    if r.per_sku.is_some() { (["skus", "sku_count"], "skus, sku_count") } else { (["sku", "line"], "sku, line") };
                reads(r, &move |root, rest| match root {
                    _ if own.contains(&root) => None,
                    "now" | "params" => None,
                    "order" => order_field(rest),
                    "values" => value_field(&wf.connection.connector, rest),
                    "session" | "secrets" => auth_field(&wf.connection.connector, root, rest),
                    other => Some(format!("`{other}` is not in this stock lookup's context ({listed}, order, values, params, now)")),
                })
                .into_iter()
                .map(move |(v, why)| (r.name.clone(), v, why))
            }) {
                out.push(at("stock.request", format!("request `{name}` reads `{v}`: {why}")));
            }
        }
        if let Kind::Push(p) = &wf.kind {
            let mut earlier: Vec<&str> = Vec::new();
            for (i, step) in p.steps.iter().enumerate() {
                for problem in step_reads(wf, step, &earlier) {
                    out.push(at(&format!("push.{i}"), problem));
                }
                earlier.push(&step.name);
            }
        }
    }
    out
}

fn order_field(rest: &[&str]) -> Option<String> {
    match rest.first() {
        None => None,
        Some(f) if !ORDER_FIELDS.contains(f) => Some(format!("the canonical order has no `{f}` (it has {})", ORDER_FIELDS.join(", "))),
        Some(&"customer") => {
            rest.get(1).filter(|f| !CUSTOMER_FIELDS.contains(f)).map(|f| format!("a customer has only id, name and group, not `{f}`"))
        }
        _ => None,
    }
}

/// `session.*` and `secrets.*` exist only for session auth, and only the secrets it lets requests read.
fn auth_field(c: &Connector, root: &str, rest: &[&str]) -> Option<String> {
    let Auth::Session(spec) = &c.auth else {
        return Some(format!("`{root}` is set only for connectors with `auth: {{kind: session}}`"));
    };
    match (root, rest.first()) {
        ("secrets", Some(name)) if !spec.request_secrets.iter().any(|s| s == name) => {
            Some(format!("secret `{name}` is not listed in the connector's `auth.request_secrets`"))
        }
        _ => None,
    }
}

fn value_field(c: &Connector, rest: &[&str]) -> Option<String> {
    rest.first().filter(|v| !c.values.contains_key(**v)).map(|v| format!("connector `{}` declares no value `{v}`", c.name))
}

/// Problems with what a step's request reads.
fn step_reads(wf: &Workflow, step: &Step, earlier: &[&str]) -> Vec<String> {
    let push = matches!(wf.trigger, Trigger::StockChange { .. });
    let check = |root: &str, rest: &[&str]| -> Option<String> {
        match root {
            "order" if !push => order_field(rest),
            "decision" if !push => rest
                .first()
                .filter(|f| !DECISION_FIELDS.contains(f))
                .map(|f| format!("a decision has decision, reason, priority and lines, not `{f}`")),
            "stock" | "params" | "now" | "idempotency_key" => None,
            "sku" if push => None,
            "values" => value_field(&wf.connection.connector, rest),
            "session" | "secrets" => auth_field(&wf.connection.connector, root, rest),
            "args" => {
                rest.first().filter(|a| !step.args.iter().any(|(k, _)| k == *a)).map(|a| format!("step `{}` gives no arg `{a}`", step.name))
            }
            "steps" => rest.first().filter(|s| !earlier.contains(s)).map(|s| format!("no step `{s}` runs before `{}`", step.name)),
            "item" => {
                step.for_each.is_none().then(|| format!("`item` is set only for a step with `for_each`, and `{}` has none", step.name))
            }
            other => Some(format!("`{other}` is not in a write-back's context")),
        }
    };
    let mut out: Vec<String> =
        reads(&step.request, &check).into_iter().map(|(v, why)| format!("request `{}` reads `{v}`: {why}", step.request.name)).collect();
    // What the step itself computes: its `for_each` and `args` (which see neither `item` nor `args` of their own).
    let own =
        |root: &str, rest: &[&str]| if root == "args" || (root == "item" && step.for_each.is_some()) { None } else { check(root, rest) };
    let mut templates: Vec<&Template> = step.for_each.iter().collect();
    for (_, a) in &step.args {
        json_templates(a, &mut templates);
    }
    for t in templates {
        for v in t.variables() {
            let parts: Vec<&str> = v.split('.').filter(|p| !p.is_empty() && !p.starts_with('[') && p.parse::<usize>().is_err()).collect();
            if let Some((root, rest)) = parts.split_first() {
                if let Some(why) = own(root, rest) {
                    out.push(format!("step `{}` reads `{v}`: {why}", step.name));
                }
            }
        }
    }
    out
}

fn json_templates<'a>(t: &'a JsonTemplate, out: &mut Vec<&'a Template>) {
    match t {
        JsonTemplate::Fixed(_) => {}
        JsonTemplate::String(t) => out.push(t),
        JsonTemplate::Array(items) => items.iter().for_each(|i| json_templates(i, out)),
        JsonTemplate::Object(fields) => fields.iter().for_each(|(_, i)| json_templates(i, out)),
    }
}

/// Every variable a request's templates read that `check` objects to.
fn reads(req: &RequestSpec, check: &dyn Fn(&str, &[&str]) -> Option<String>) -> Vec<(String, String)> {
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for t in templates_of(req) {
        for v in t.variables() {
            let parts: Vec<&str> = v.split('.').filter(|p| !p.is_empty() && !p.starts_with('[') && p.parse::<usize>().is_err()).collect();
            let Some((root, rest)) = parts.split_first() else { continue };
            if let Some(why) = check(root, rest) {
                if seen.insert(v.clone()) {
                    out.push((v, why));
                }
            }
        }
    }
    out
}

fn templates_of(req: &RequestSpec) -> Vec<&Template> {
    let mut out = vec![&req.path];
    out.extend(req.query.iter().map(|(_, t)| t));
    out.extend(req.headers.iter().map(|(_, t)| t));
    match &req.body {
        Body::None => {}
        Body::Json(t) => json_templates(t, &mut out),
        Body::Text { template, .. } => out.push(template),
        Body::Form(fields) => out.extend(fields.iter().map(|(_, t)| t)),
    }
    out
}

fn unused_requests(
    connectors: &BTreeMap<String, Arc<Connector>>,
    workflows: &BTreeMap<String, Arc<Workflow>>,
    src: &Sources<'_>,
    out: &mut Vec<Diagnostic>,
) {
    let mut used: BTreeSet<(String, String)> = BTreeSet::new();
    for wf in workflows.values() {
        let c = wf.connection.connector.name.clone();
        let mut mark = |r: &RequestSpec| {
            used.insert((c.clone(), r.name.clone()));
            if let Some(check) = &r.check {
                used.insert((c.clone(), check.request.clone()));
            }
        };
        if let Trigger::Poll(p) = &wf.trigger {
            mark(&p.request);
        }
        if let Auth::Session(s) = &wf.connection.connector.auth {
            if let Some(login) = wf.connection.connector.requests.get(&s.login) {
                mark(login);
            }
        }
        match &wf.kind {
            Kind::Orders(o) => {
                mark(&o.stock.request);
                if let Some(single) = wf.connection.connector.single_for(&o.stock.request) {
                    mark(single);
                }
                o.fetch.iter().for_each(|f| mark(&f.request));
                o.stock.also.iter().for_each(|r| mark(r));
                if let Some((r, _)) = &o.line_sku_request {
                    mark(r);
                }
                for steps in o.steps.values() {
                    steps.iter().for_each(|s| mark(&s.request));
                }
            }
            Kind::Stock(s) => {
                if let Some(r) = &s.request {
                    mark(r);
                }
            }
            Kind::Push(p) => p.steps.iter().for_each(|s| mark(&s.request)),
        }
    }
    for (name, c) in connectors {
        // A connector no workflow uses is a library for later; only partly used ones are suspicious.
        if !used.iter().any(|(cn, _)| cn == name) {
            continue;
        }
        for r in c.requests.keys() {
            if !used.contains(&(name.clone(), r.clone())) {
                let (file, spans) = src.connectors.get(name).map_or((c.file.clone(), None), |(f, s)| (f.clone(), Some(s)));
                let field = format!("requests.{r}");
                out.push(Diagnostic::new(&file, spans.map_or((1, 1), |s| s.locate(&field)), field, "no workflow uses this request"));
            }
        }
    }
}
