//! From parsed files to the ready-to-run set: every template, JSONPath and
//! script is compiled here, once per config version, and every reference is
//! resolved. Problems are collected, never returned early, so one run reports
//! all of them.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use super::diagnostic::{Diagnostic, Diagnostics, did_you_mean};
use super::raw::{self, ExtractRaw};
use super::secret::SecretRef;
use super::yaml::{Parsed, SpanIndex};
use crate::adapters::jsonpath::JsonPath;
use crate::adapters::rules::{Rule, RuleEngine};
use crate::adapters::template::{Template, TemplateBuilder, Templates};
use crate::connector::extract::Extractor;
use crate::connector::ratelimit::RateLimit;
use crate::connector::retry::RetryPolicy;
use crate::connector::{Auth, Body, Check, Connection, Connector, ErrorRules, JsonTemplate, RequestSpec, SignatureSpec, WebhookSpec};
use crate::model::Decision;
use crate::workflow::mapping::OrderMapping;
use crate::workflow::stock::STOCK_FIELDS;
use crate::workflow::{Step, StockLookup, Trigger, Workflow};

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const DEFAULT_MAX_BODY: usize = 1024 * 1024;

/// A file and its field positions, for pinning diagnostics.
#[derive(Clone, Copy)]
pub struct Source<'a> {
    pub file: &'a Path,
    pub spans: &'a SpanIndex,
}

impl Source<'_> {
    fn at(&self, field: &str, message: impl Into<String>) -> Diagnostic {
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
    templates: TemplateBuilder,
    pub rules: RuleEngine,
}

/// A workflow compiled up to the point where it needs its connection.
pub struct WorkflowDraft {
    /// False when the file had errors of its own: references are still
    /// checked, but the workflow is not built.
    pub ok: bool,
    pub name: String,
    pub file: std::path::PathBuf,
    pub connection: String,
    pub trigger: Option<Trigger>,
    pub mapping: Option<OrderMapping>,
    pub stock_request: String,
    pub safety_stock: i64,
    pub rule: Option<Rule>,
    pub params: Value,
    pub steps: BTreeMap<Decision, Vec<StepDraft>>,
}

pub struct StepDraft {
    pub name: String,
    pub request: String,
    pub field: String,
    pub args: Vec<(String, JsonTemplate)>,
    pub for_each: Option<Template>,
}

/// A connection with its references checked, before its base URL is rendered.
pub struct ConnectionDraft {
    pub name: String,
    pub connector: Arc<Connector>,
    pub base_url: Option<String>,
    pub values: BTreeMap<String, String>,
    pub secrets: BTreeMap<String, crate::config::secret::Secret>,
    pub rate_limit: Option<RateLimit>,
}

impl Compiler {
    pub fn new(rules: RuleEngine) -> Self {
        Compiler {
            diags: Diagnostics::default(),
            broken_connectors: Default::default(),
            broken_connections: Default::default(),
            instance_broken: false,
            templates: TemplateBuilder::new(),
            rules,
        }
    }

    pub fn finish_templates(&mut self) -> Templates {
        std::mem::take(&mut self.templates).finish()
    }

    fn push(&mut self, d: Diagnostic) {
        self.diags.push(d);
    }

    fn template(&mut self, src: Source, field: &str, text: &str) -> Option<Template> {
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

    fn jsonpath(&mut self, src: Source, field: &str, text: &str) -> Option<JsonPath> {
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

    fn opt_jsonpath(&mut self, src: Source, field: &str, text: Option<&String>) -> Option<Option<JsonPath>> {
        match text {
            None => Some(None),
            Some(t) => self.jsonpath(src, field, t).map(Some),
        }
    }

    fn extractor(&mut self, src: Source, field: &str, raw: &ExtractRaw) -> Option<Extractor> {
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
                if (spec.default.is_some() || spec.required) && spec.path.is_none() {
                    self.push(src.at(field, "`default` and `required` only go with `path`"));
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
                Some(Extractor::First { path, default: spec.default.clone(), required: spec.required })
            }
        }
    }

    fn json_template(&mut self, src: Source, field: &str, v: &Value) -> Option<JsonTemplate> {
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

    fn templates_of(&mut self, src: Source, field: &str, map: &BTreeMap<String, String>) -> Vec<(String, Template)> {
        map.iter().filter_map(|(k, v)| self.template(src, &format!("{field}.{k}"), v).map(|t| (k.clone(), t))).collect()
    }

    // ------------------------------------------------------------ connector

    pub fn connector(&mut self, file: &Path, parsed: &Parsed<raw::ConnectorFile>) -> Option<Connector> {
        let src = Source { file, spans: &parsed.spans };
        let raw = &parsed.value;
        let before = self.diags.len();
        check_name(self, src, "connector", &raw.connector);

        let secret_names: Vec<&str> = raw.secrets.keys().map(String::as_str).collect();
        let need_secret = |c: &mut Compiler, field: &str, name: &str| {
            if !raw.secrets.contains_key(name) {
                let mut d = src.at(field, format!("secret `{name}` is not declared under `secrets`"));
                if let Some(s) = did_you_mean(name, secret_names.iter().copied()) {
                    d = d.with_help(format!("did you mean `{s}`?"));
                }
                c.push(d);
            }
        };
        let auth = match &raw.auth {
            raw::AuthRaw::None => Auth::None,
            raw::AuthRaw::Header { header, secret, prefix } => {
                need_secret(self, "auth.secret", secret);
                Auth::Header { header: header.clone(), secret: secret.clone(), prefix: prefix.clone() }
            }
            raw::AuthRaw::Bearer { secret } => {
                need_secret(self, "auth.secret", secret);
                Auth::Header { header: "Authorization".into(), secret: secret.clone(), prefix: "Bearer ".into() }
            }
            raw::AuthRaw::Basic { username, password } => {
                need_secret(self, "auth.username", username);
                need_secret(self, "auth.password", password);
                Auth::Basic { username: username.clone(), password: password.clone() }
            }
        };
        let webhook = raw.webhook.as_ref().map(|w| {
            if let Some(sig) = &w.signature {
                need_secret(self, "webhook.signature.secret", &sig.secret);
            }
            WebhookSpec {
                signature: w.signature.as_ref().map(|s| SignatureSpec {
                    header: s.header.clone(),
                    algorithm: s.algorithm,
                    encoding: s.encoding,
                    secret: s.secret.clone(),
                    prefix: s.prefix.clone(),
                    signed: s.signed,
                }),
                delivery_id_headers: w.delivery_id_headers.clone(),
                event_header: w.event_header.clone(),
                max_body_bytes: w.max_body_bytes.unwrap_or(DEFAULT_MAX_BODY),
            }
        });
        let base_url = self.template(src, "base_url", &raw.base_url);
        let default_headers = self.templates_of(src, "defaults.headers", &raw.defaults.headers);
        let errors = ErrorRules {
            message: self.opt_jsonpath(src, "errors.message", raw.errors.message.as_ref()).flatten(),
            throttled: self.opt_jsonpath(src, "errors.throttled", raw.errors.throttled.as_ref()).flatten(),
        };
        let timeout = raw.defaults.timeout_ms.map_or(DEFAULT_TIMEOUT, Duration::from_millis);
        let mut requests = BTreeMap::new();
        for (name, r) in &raw.requests {
            check_name(self, src, &format!("requests.{name}"), name);
            if let Some(req) = self.request(src, &raw.connector, name, r, timeout) {
                requests.insert(name.clone(), Arc::new(req));
            }
        }
        for (name, r) in &raw.requests {
            if let Some(check) = &r.check {
                let field = format!("requests.{name}.check.request");
                if check.request == *name {
                    self.push(src.at(&field, "a request cannot be its own check"));
                } else if !raw.requests.contains_key(&check.request) {
                    let mut d = src.at(&field, format!("no request `{}` in this connector", check.request));
                    if let Some(s) = did_you_mean(&check.request, raw.requests.keys().map(String::as_str)) {
                        d = d.with_help(format!("did you mean `{s}`?"));
                    }
                    self.push(d);
                }
            }
        }
        let retry = self.retry_policy(src, &raw.retry);
        let rate_limit = match &raw.rate_limit {
            Some(r) => self.rate_limit(src, "rate_limit", r, None),
            None => None,
        };
        if self.diags.len() > before {
            return None;
        }
        Some(Connector {
            name: raw.connector.clone(),
            file: file.to_path_buf(),
            base_url: base_url?,
            values: raw.values.iter().map(|(k, v)| (k.clone(), v.default.clone())).collect(),
            secrets: raw.secrets.iter().map(|(k, v)| (k.clone(), v.optional)).collect(),
            auth,
            webhook,
            default_headers,
            errors,
            reported_excludes_open_orders: raw.stock.reported_excludes_open_orders,
            retry,
            rate_limit,
            connect_timeout: raw.defaults.connect_timeout_ms.map_or(DEFAULT_CONNECT_TIMEOUT, Duration::from_millis),
            requests,
        })
    }

    fn retry_policy(&mut self, src: Source, raw: &raw::RetryRaw) -> RetryPolicy {
        let d = RetryPolicy::default();
        if raw.max_attempts == Some(0) {
            self.push(src.at("retry.max_attempts", "at least 1 attempt is needed"));
        }
        RetryPolicy {
            max_attempts: raw.max_attempts.unwrap_or(d.max_attempts).max(1),
            initial_backoff: raw.initial_backoff_ms.map_or(d.initial_backoff, Duration::from_millis),
            max_backoff: raw.max_backoff_ms.map_or(d.max_backoff, Duration::from_millis),
            max_age: raw.max_age_s.map_or(d.max_age, Duration::from_secs),
            retry_statuses: raw.retry_on.clone().unwrap_or(d.retry_statuses),
        }
    }

    /// A rate limit from `raw`, over `base` (a connection's override over its connector's).
    fn rate_limit(&mut self, src: Source, field: &str, raw: &raw::RateLimitRaw, base: Option<&RateLimit>) -> Option<RateLimit> {
        let per_second = raw.per_second.or(base.map(|b| b.per_second));
        let Some(per_second) = per_second.filter(|p| *p > 0.0) else {
            self.push(src.at(&format!("{field}.per_second"), "a rate limit needs `per_second` above 0"));
            return None;
        };
        let burst = raw.burst.or(base.map(|b| b.burst)).unwrap_or(per_second.max(1.0));
        let cost = raw.cost.or(base.map(|b| b.cost)).unwrap_or(1.0);
        if burst < cost {
            self.push(src.at(&format!("{field}.burst"), format!("a burst of {burst} cannot pay for one request costing {cost}")));
            return None;
        }
        let actual_cost = match &raw.actual_cost {
            Some(p) => Some(self.jsonpath(src, &format!("{field}.actual_cost"), p)?),
            None => base.and_then(|b| b.actual_cost.clone()),
        };
        let available = match &raw.available {
            Some(p) => Some(self.jsonpath(src, &format!("{field}.available"), p)?),
            None => base.and_then(|b| b.available.clone()),
        };
        Some(RateLimit { per_second, burst, cost, actual_cost, available })
    }

    fn request(&mut self, src: Source, connector: &str, name: &str, r: &raw::RequestRaw, default_timeout: Duration) -> Option<RequestSpec> {
        let field = format!("requests.{name}");
        let before = self.diags.len();
        let path = self.template(src, &format!("{field}.path"), &r.path);
        if !r.path.starts_with('/') && !r.path.starts_with("{{") {
            self.push(src.at(&format!("{field}.path"), format!("path `{}` must start with `/`", r.path)));
        }
        let query = self.templates_of(src, &format!("{field}.query"), &r.query);
        let headers = self.templates_of(src, &format!("{field}.headers"), &r.headers);
        let bodies = [r.json.is_some(), r.body.is_some(), r.form.is_some()].iter().filter(|b| **b).count();
        if bodies > 1 {
            self.push(src.at(&field, "a request has at most one of `json`, `body` and `form`"));
        }
        if r.content_type.is_some() && r.body.is_none() {
            self.push(src.at(&format!("{field}.content_type"), "`content_type` only goes with a text `body`"));
        }
        let body = if let Some(j) = &r.json {
            self.json_template(src, &format!("{field}.json"), j).map(Body::Json)
        } else if let Some(b) = &r.body {
            self.template(src, &format!("{field}.body"), b)
                .map(|template| Body::Text { template, content_type: r.content_type.clone().unwrap_or_else(|| "application/json".into()) })
        } else if let Some(f) = &r.form {
            Some(Body::Form(self.templates_of(src, &format!("{field}.form"), f)))
        } else {
            Some(Body::None)
        };
        let mut extract = Vec::new();
        for (k, e) in &r.extract {
            if let Some(x) = self.extractor(src, &format!("{field}.extract.{k}"), e) {
                extract.push((k.clone(), x));
            }
        }
        let user_errors = self.opt_jsonpath(src, &format!("{field}.user_errors"), r.user_errors.as_ref());
        let check = match &r.check {
            Some(c) => self
                .jsonpath(src, &format!("{field}.check.done_when"), &c.done_when)
                .map(|done_when| Check { request: c.request.clone(), done_when }),
            None => None,
        };
        if self.diags.len() > before {
            return None;
        }
        Some(RequestSpec {
            connector: connector.to_string(),
            name: name.to_string(),
            method: r.method,
            path: path?,
            query,
            headers,
            body: body?,
            extract,
            user_errors: user_errors?,
            timeout: r.timeout_ms.map_or(default_timeout, Duration::from_millis),
            check,
        })
    }

    // ------------------------------------------------------------- instance

    pub fn connections(
        &mut self,
        file: &Path,
        parsed: &Parsed<raw::InstanceFile>,
        connectors: &BTreeMap<String, Arc<Connector>>,
        resolve_secrets: bool,
    ) -> BTreeMap<String, ConnectionDraft> {
        let src = Source { file, spans: &parsed.spans };
        let mut out = BTreeMap::new();
        if let Some(r) = &parsed.value.admin_token {
            if let Err(e) = SecretRef::parse(r) {
                self.push(src.at("admin_token", e));
            }
        }
        for (name, c) in &parsed.value.connections {
            let field = format!("connections.{name}");
            check_name(self, src, &field, name);
            let Some(connector) = connectors.get(&c.connector) else {
                if self.broken_connectors.contains(&c.connector) {
                    self.broken_connections.insert(name.clone());
                    continue;
                }
                let mut d = src.at(&format!("{field}.connector"), format!("no connector named `{}` in connectors.d/", c.connector));
                if let Some(s) = did_you_mean(&c.connector, connectors.keys().map(String::as_str)) {
                    d = d.with_help(format!("did you mean `{s}`?"));
                }
                self.push(d);
                continue;
            };
            let before = self.diags.len();
            for k in c.values.keys() {
                if !connector.values.contains_key(k) {
                    let mut d = src.at(&format!("{field}.values.{k}"), format!("connector `{}` declares no value `{k}`", connector.name));
                    if let Some(s) = did_you_mean(k, connector.values.keys().map(String::as_str)) {
                        d = d.with_help(format!("did you mean `{s}`?"));
                    }
                    self.push(d);
                }
            }
            let mut values = BTreeMap::new();
            for (k, default) in &connector.values {
                match c.values.get(k).or(default.as_ref()) {
                    Some(v) => {
                        values.insert(k.clone(), v.clone());
                    }
                    None if c.base_url.is_some() => {}
                    None => self.push(src.at(&format!("{field}.values"), format!("connector `{}` needs value `{k}`", connector.name))),
                }
            }
            let mut secrets = BTreeMap::new();
            for (k, r) in &c.secrets {
                let sfield = format!("{field}.secrets.{k}");
                if !connector.secrets.contains_key(k) {
                    let mut d = src.at(&sfield, format!("connector `{}` declares no secret `{k}`", connector.name));
                    if let Some(s) = did_you_mean(k, connector.secrets.keys().map(String::as_str)) {
                        d = d.with_help(format!("did you mean `{s}`?"));
                    }
                    self.push(d);
                    continue;
                }
                match SecretRef::parse(r) {
                    Err(e) => self.push(src.at(&sfield, e)),
                    Ok(reference) if resolve_secrets => match reference.resolve() {
                        Ok(secret) if secret.expose().len() < 4 => self.push(src.at(&sfield, "the secret is shorter than 4 characters")),
                        Ok(secret) => {
                            secrets.insert(k.clone(), secret);
                        }
                        Err(e) => self.push(src.at(&sfield, e)),
                    },
                    Ok(_) => {}
                }
            }
            for (k, optional) in &connector.secrets {
                if !optional && !c.secrets.contains_key(k) {
                    self.push(src.at(&format!("{field}.secrets"), format!("connector `{}` needs secret `{k}`", connector.name)));
                }
            }
            let rate_limit = match &c.rate_limit {
                Some(r) => self.rate_limit(src, &format!("{field}.rate_limit"), r, connector.rate_limit.as_ref()),
                None => connector.rate_limit.clone(),
            };
            if self.diags.len() > before {
                self.broken_connections.insert(name.clone());
            } else {
                out.insert(
                    name.clone(),
                    ConnectionDraft {
                        name: name.clone(),
                        connector: connector.clone(),
                        base_url: c.base_url.clone(),
                        values,
                        secrets,
                        rate_limit,
                    },
                );
            }
        }
        out
    }

    // ------------------------------------------------------------- workflow

    pub fn workflow(
        &mut self,
        file: &Path,
        parsed: &Parsed<raw::WorkflowFile>,
        rules: &mut BTreeMap<std::path::PathBuf, Option<Rule>>,
        workflows_dir: &Path,
    ) -> Option<WorkflowDraft> {
        let src = Source { file, spans: &parsed.spans };
        let raw = &parsed.value;
        let before = self.diags.len();
        check_name(self, src, "workflow", &raw.workflow);
        let trigger = match &raw.trigger.webhook {
            Some(w) => Some(Trigger::Webhook { events: w.events.clone() }),
            None => {
                self.push(
                    src.at("trigger", "a workflow needs a trigger").with_help("e.g. `trigger: {webhook: {events: [orders/create]}}`"),
                );
                None
            }
        };
        let m = &raw.order;
        let mapping = (|| {
            Some(OrderMapping {
                external_id: self.jsonpath(src, "order.external_id", &m.external_id)?,
                number: self.opt_jsonpath(src, "order.number", m.number.as_ref())?,
                customer_id: self.opt_jsonpath(src, "order.customer.id", m.customer.id.as_ref())?,
                customer_name: self.opt_jsonpath(src, "order.customer.name", m.customer.name.as_ref())?,
                customer_group: self.opt_jsonpath(src, "order.customer.group", m.customer.group.as_ref())?,
                lines_each: self.jsonpath(src, "order.lines.each", &m.lines.each)?,
                line_sku: self.jsonpath(src, "order.lines.sku", &m.lines.sku)?,
                line_qty: self.jsonpath(src, "order.lines.qty", &m.lines.qty)?,
                line_location: self.opt_jsonpath(src, "order.lines.location", m.lines.location.as_ref())?,
                received_at: self.opt_jsonpath(src, "order.received_at", m.received_at.as_ref())?,
            })
        })();
        if raw.stock.safety_stock < 0 {
            self.push(src.at("stock.safety_stock", "safety stock cannot be negative"));
        }

        let rule_path = workflows_dir.join(&raw.rule);
        let rule = match rules.get(&rule_path) {
            Some(Some(r)) => Some(r.clone()),
            // The script's own error is reported at the script.
            Some(None) => None,
            None => {
                self.push(
                    src.at("rule", format!("rule file `{}` was not found next to the workflows", raw.rule))
                        .with_help("rules live in workflows/rules/*.rhai; write e.g. `rule: rules/amusement-machines.rhai`"),
                );
                None
            }
        };

        let mut steps = BTreeMap::new();
        for (decision, list) in
            [(Decision::Approve, &raw.on.approve), (Decision::Reject, &raw.on.reject), (Decision::Waitlist, &raw.on.waitlist)]
        {
            let mut drafts = Vec::new();
            let mut names = std::collections::BTreeSet::new();
            for (i, s) in list.iter().enumerate() {
                let field = format!("on.{}.{i}", decision.as_str());
                let name = s.name.clone().unwrap_or_else(|| s.request.clone());
                if !names.insert(name.clone()) {
                    self.push(src.at(&field, format!("two steps are named `{name}`; give one a `name`")));
                }
                let mut args = Vec::new();
                for (k, v) in &s.args {
                    if let Some(t) = self.json_template(src, &format!("{field}.args.{k}"), v) {
                        args.push((k.clone(), t));
                    }
                }
                let for_each = match &s.for_each {
                    None => None,
                    Some(expr) => {
                        let t = self.template(src, &format!("{field}.for_each"), expr);
                        if let Some(t) = &t {
                            if !t.is_lone_expression() {
                                self.push(src.at(
                                    &format!("{field}.for_each"),
                                    "`for_each` must be a single expression such as `{{steps.fulfillment_orders.ids}}`",
                                ));
                            }
                        }
                        t
                    }
                };
                drafts.push(StepDraft { name, request: s.request.clone(), field, args, for_each });
            }
            steps.insert(decision, drafts);
        }
        Some(WorkflowDraft {
            ok: self.diags.len() == before && trigger.is_some() && mapping.is_some() && rule.is_some(),
            name: raw.workflow.clone(),
            file: file.to_path_buf(),
            connection: raw.connection.clone(),
            trigger,
            mapping,
            stock_request: raw.stock.request.clone(),
            safety_stock: raw.stock.safety_stock,
            rule,
            params: Value::Object(raw.params.clone().into_iter().collect()),
            steps,
        })
    }

    /// Resolve a draft's references against the connections.
    pub fn link_workflow(
        &mut self,
        src: Source,
        draft: WorkflowDraft,
        connections: &BTreeMap<String, Arc<Connection>>,
    ) -> Option<Workflow> {
        let Some(connection) = connections.get(&draft.connection) else {
            if self.instance_broken || self.broken_connections.contains(&draft.connection) {
                return None;
            }
            let mut d = src.at("connection", format!("no connection named `{}` in the instance config", draft.connection));
            if let Some(s) = did_you_mean(&draft.connection, connections.keys().map(String::as_str)) {
                d = d.with_help(format!("did you mean `{s}`?"));
            }
            self.push(d);
            return None;
        };
        let connector = &connection.connector;
        let before = self.diags.len();
        let find = |c: &mut Compiler, field: &str, name: &str| -> Option<Arc<RequestSpec>> {
            let found = connector.requests.get(name).cloned();
            if found.is_none() {
                let mut d = src.at(field, format!("connector `{}` has no request `{name}`", connector.name));
                if let Some(s) = did_you_mean(name, connector.requests.keys().map(String::as_str)) {
                    d = d.with_help(format!("did you mean `{s}`?"));
                }
                c.push(d);
            }
            found
        };
        let stock_request = find(self, "stock.request", &draft.stock_request);
        if let Some(r) = &stock_request {
            let names: Vec<&str> = r.extract.iter().map(|(n, _)| n.as_str()).collect();
            if !names.iter().any(|n| ["on_hand", "available", "levels"].contains(n)) {
                self.push(src.at("stock.request", format!("request `{}` extracts none of on_hand, available, levels", r.name)).with_help(
                    format!(
                        "a stock lookup must extract one of them; it extracts: {}",
                        if names.is_empty() { "nothing".into() } else { names.join(", ") }
                    ),
                ));
            }
            let _ = STOCK_FIELDS;
        }
        if matches!(draft.trigger, Some(Trigger::Webhook { .. })) && connector.webhook.is_none() {
            self.push(src.at(
                "trigger.webhook",
                format!("connector `{}` declares no `webhook` section, so it cannot verify deliveries", connector.name),
            ));
        }
        let mut steps = BTreeMap::new();
        for (decision, drafts) in draft.steps {
            let mut list = Vec::new();
            for s in drafts {
                if let Some(request) = find(self, &format!("{}.request", s.field), &s.request) {
                    list.push(Step { name: s.name, request, args: s.args, for_each: s.for_each });
                }
            }
            steps.insert(decision, list);
        }
        if self.diags.len() > before || !draft.ok {
            return None;
        }
        Some(Workflow {
            name: draft.name,
            file: draft.file,
            connection: connection.clone(),
            trigger: draft.trigger?,
            mapping: draft.mapping?,
            stock: StockLookup { request: stock_request?, safety_stock: draft.safety_stock },
            rule: draft.rule?,
            params: draft.params,
            steps,
        })
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
fn check_name(c: &mut Compiler, src: Source, field: &str, name: &str) {
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
