//! From parsed files to the ready-to-run set: every template, JSONPath and
//! script is compiled here, once per config version, and every reference is
//! resolved. Problems are collected, never returned early, so one run reports
//! all of them.

use std::path::Path;

use serde_json::Value;

mod connector;
mod instance;
mod workflow;

use std::collections::BTreeMap;

use super::diagnostic::{Diagnostic, Diagnostics};
use super::raw::{ConditionRaw, ExtractRaw};
use super::yaml::SpanIndex;
use crate::adapters::jsonpath::{Condition, JsonPath};
use crate::adapters::rules::{Rule, RuleEngine};
use crate::adapters::template::{Template, TemplateBuilder, Templates};
use crate::connector::JsonTemplate;
use crate::connector::extract::Extractor;

pub use instance::ConnectionDraft;
pub use workflow::WorkflowDraft;

/// A file and its field positions, for pinning diagnostics.
#[derive(Clone, Copy)]
pub struct Source<'a> {
    pub file: &'a Path,
    pub spans: &'a SpanIndex,
}

impl Source<'_> {
    pub(super) fn at(&self, field: &str, message: impl Into<String>) -> Diagnostic {
        Diagnostic::new(self.file, self.spans.locate(field), field, message)
    }
}

pub struct Compiler {
    pub diags: Diagnostics,
    /// Connectors and connections with errors of their own: references to
    /// them are not reported a second time.
    pub broken_connectors: std::collections::BTreeSet<String>,
    pub broken_connections: std::collections::BTreeSet<String>,
    /// The instance config itself failed: no connection can be checked.
    pub instance_broken: bool,
    /// Workflows left inactive because the instance does not connect their
    /// platform: reported as warnings, not errors.
    pub inactive: Vec<Diagnostic>,
    templates: TemplateBuilder,
    pub rules: RuleEngine,
}

impl Compiler {
    pub fn new(rules: RuleEngine) -> Self {
        Compiler {
            diags: Diagnostics::default(),
            broken_connectors: Default::default(),
            broken_connections: Default::default(),
            instance_broken: false,
            inactive: Vec::new(),
            templates: TemplateBuilder::new(),
            rules,
        }
    }

    pub fn finish_templates(&mut self) -> Templates {
        std::mem::take(&mut self.templates).finish()
    }

    pub(super) fn push(&mut self, d: Diagnostic) {
        self.diags.push(d);
    }

    pub(super) fn template(&mut self, src: Source, field: &str, text: &str) -> Option<Template> {
        match self.templates.add(text) {
            Ok(t) => Some(t),
            Err(e) => {
                let pos = src.spans.locate_within(field, e.line, e.col);
                self.push(
                    Diagnostic::new(src.file, pos, field, e.message)
                        .with_help("templates use Handlebars: {{order.number}}, {{json value}}, {{#each order.lines}}…{{/each}}"),
                );
                None
            }
        }
    }

    pub(super) fn jsonpath(&mut self, src: Source, field: &str, text: &str) -> Option<JsonPath> {
        match JsonPath::compile(text) {
            Ok(p) => Some(p),
            Err(e) => {
                let (line, col) = src.spans.locate(field);
                self.push(
                    Diagnostic::new(src.file, (line, col + e.col.saturating_sub(1)), field, e.message)
                        .with_help("expected a JSONPath such as `$.line_items[*].sku`"),
                );
                None
            }
        }
    }

    pub(super) fn opt_jsonpath(&mut self, src: Source, field: &str, text: Option<&String>) -> Option<Option<JsonPath>> {
        match text {
            None => Some(None),
            Some(t) => self.jsonpath(src, field, t).map(Some),
        }
    }

    pub(super) fn extractor(&mut self, src: Source, field: &str, raw: &ExtractRaw) -> Option<Extractor> {
        match raw {
            ExtractRaw::Path(p) => Some(Extractor::First { path: self.jsonpath(src, field, p)?, default: None, required: false }),
            ExtractRaw::Spec(spec) => {
                let modes = [&spec.path, &spec.all, &spec.sum, &spec.each].iter().filter(|m| m.is_some()).count();
                if modes != 1 {
                    self.push(src.at(field, "give exactly one of `path`, `all`, `sum` or `each`"));
                    return None;
                }
                if spec.fields.is_some() && spec.each.is_none() {
                    self.push(src.at(&format!("{field}.fields"), "`fields` only goes with `each`"));
                    return None;
                }
                if (spec.default.is_some() || spec.required || spec.equals.is_some()) && spec.path.is_none() {
                    self.push(src.at(field, "`default`, `required` and `equals` only go with `path`"));
                    return None;
                }
                if let Some(each) = &spec.each {
                    let path = self.jsonpath(src, &format!("{field}.each"), each);
                    let Some(fields_raw) = &spec.fields else {
                        self.push(src.at(field, "`each` needs `fields`: what to take from every item"));
                        return None;
                    };
                    let mut fields = Vec::new();
                    let mut ok = true;
                    for (name, f) in fields_raw {
                        match self.extractor(src, &format!("{field}.fields.{name}"), f) {
                            Some(e) => fields.push((name.clone(), e)),
                            None => ok = false,
                        }
                    }
                    return (ok && path.is_some()).then(|| Extractor::Each { path: path.unwrap(), fields });
                }
                if let Some(p) = &spec.all {
                    return Some(Extractor::All { path: self.jsonpath(src, &format!("{field}.all"), p)? });
                }
                if let Some(p) = &spec.sum {
                    return Some(Extractor::Sum { path: self.jsonpath(src, &format!("{field}.sum"), p)? });
                }
                let p = spec.path.as_ref().expect("exactly one mode is set");
                let path = self.jsonpath(src, &format!("{field}.path"), p)?;
                if let Some(equals) = &spec.equals {
                    if spec.default.is_some() || spec.required {
                        self.push(src.at(field, "`equals` gives true or false; it takes no `default` or `required`"));
                        return None;
                    }
                    return Some(Extractor::Test { path, equals: equals.clone(), negate: spec.negate });
                }
                if spec.negate {
                    self.push(src.at(&format!("{field}.negate"), "`negate` turns an `equals` test around; give the values in `equals`"));
                    return None;
                }
                Some(Extractor::First { path, default: spec.default.clone(), required: spec.required })
            }
        }
    }

    pub(super) fn condition(&mut self, src: Source, field: &str, c: &ConditionRaw) -> Option<Condition> {
        match c {
            ConditionRaw::Path(p) => Some(Condition { path: self.jsonpath(src, field, p)?, equals: Vec::new(), negate: false }),
            ConditionRaw::Spec(s) => {
                Some(Condition { path: self.jsonpath(src, &format!("{field}.path"), &s.path)?, equals: s.equals.clone(), negate: s.negate })
            }
        }
    }

    pub(super) fn json_template(&mut self, src: Source, field: &str, v: &Value) -> Option<JsonTemplate> {
        Some(match v {
            Value::String(s) if s.contains("{{") => JsonTemplate::String(self.template(src, field, s)?),
            Value::Array(items) => {
                if !contains_template(v) {
                    return Some(JsonTemplate::Fixed(v.clone()));
                }
                let mut out = Vec::with_capacity(items.len());
                for (i, item) in items.iter().enumerate() {
                    out.push(self.json_template(src, &format!("{field}.{i}"), item)?);
                }
                JsonTemplate::Array(out)
            }
            Value::Object(map) => {
                if !contains_template(v) {
                    return Some(JsonTemplate::Fixed(v.clone()));
                }
                let mut out = Vec::with_capacity(map.len());
                for (k, item) in map {
                    out.push((k.clone(), self.json_template(src, &format!("{field}.{k}"), item)?));
                }
                JsonTemplate::Object(out)
            }
            other => JsonTemplate::Fixed(other.clone()),
        })
    }

    pub(super) fn templates_of(&mut self, src: Source, field: &str, map: &BTreeMap<String, String>) -> Vec<(String, Template)> {
        map.iter().filter_map(|(k, v)| self.template(src, &format!("{field}.{k}"), v).map(|t| (k.clone(), t))).collect()
    }

    pub fn rule(&mut self, file: &Path, text: &str) -> Option<Rule> {
        match self.rules.compile(file, text) {
            Ok(r) => Some(r),
            Err(e) => {
                self.push(Diagnostic::new(file, (e.line, e.col), "", format!("rule does not compile: {}", e.message)));
                None
            }
        }
    }
}

fn contains_template(v: &Value) -> bool {
    match v {
        Value::String(s) => s.contains("{{"),
        Value::Array(a) => a.iter().any(contains_template),
        Value::Object(o) => o.values().any(contains_template),
        _ => false,
    }
}

/// Names become URL path segments and redb keys: keep them plain.
pub(super) fn check_name(c: &mut Compiler, src: Source, field: &str, name: &str) {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.chars().next().is_some_and(|ch| ch.is_ascii_alphanumeric())
        && name.chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '-' || ch == '_');
    if !ok {
        c.push(
            src.at(field, format!("`{name}` is not a valid name"))
                .with_help("use letters, digits, `-` and `_`, starting with a letter or digit"),
        );
    }
}
