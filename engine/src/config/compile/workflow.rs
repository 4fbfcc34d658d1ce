//! Compiling `workflows/*.yaml`: first on its own (`workflow`), then against
//! the connections it names (`link_workflow`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::Value;

use super::{Compiler, Source, check_name};
use crate::adapters::jsonpath::JsonPath;
use crate::adapters::rules::Rule;
use crate::adapters::template::Template;
use crate::config::diagnostic::did_you_mean;
use crate::config::raw;
use crate::config::yaml::Parsed;
use crate::connector::extract::Extractor;
use crate::connector::{Connection, Connector, JsonTemplate, RequestSpec};
use crate::inventory::pattern::SkuPattern;
use crate::model::Decision;
use crate::workflow::mapping::OrderMapping;
use crate::workflow::stock::STOCK_FIELDS;
use crate::workflow::{Fetch, Kind, OrderFlow, Pages, PollSpec, PushFlow, Step, StockFlow, StockLookup, Trigger, Workflow, parse_interval};

/// A workflow compiled up to the point where it needs its connection.
pub struct WorkflowDraft {
    /// False when the file had errors of its own: references are still
    /// checked, but the workflow is not built.
    pub ok: bool,
    pub name: String,
    pub file: PathBuf,
    pub connection: String,
    trigger: Option<TriggerDraft>,
    kind: Option<KindDraft>,
}

enum TriggerDraft {
    Webhook { events: Vec<String>, records: Option<JsonPath>, record_key: Vec<JsonPath> },
    Poll { request: String, spec: Box<PollDraft> },
    StockChange { skus: Vec<SkuPattern>, min_change: i64 },
}

struct PollDraft {
    every: std::time::Duration,
    records: JsonPath,
    id: Option<JsonPath>,
    version: Vec<JsonPath>,
    watermark: Option<JsonPath>,
    next_cursor: Option<JsonPath>,
    initial_cursor: Option<String>,
    pages: Pages,
    max_pages: u32,
}

struct FetchDraft {
    request: String,
    field: String,
    path: Option<JsonPath>,
    into: Option<String>,
}

enum KindDraft {
    /// Parts are missing when they had errors; references are still checked.
    Orders {
        fetch: Vec<FetchDraft>,
        /// The request that reads a line's SKU, and the path in its answer.
        line_sku_request: Option<(String, JsonPath)>,
        mapping: Option<Box<OrderMapping>>,
        stock_request: Option<String>,
        stock_also: Vec<String>,
        rule: Option<Rule>,
        params: Value,
        steps: BTreeMap<Decision, Vec<StepDraft>>,
    },
    Stock {
        items: JsonPath,
        fields: Vec<(String, Extractor)>,
        request: Option<String>,
    },
    Push {
        steps: Vec<StepDraft>,
    },
}

struct StepDraft {
    name: String,
    request: String,
    field: String,
    args: Vec<(String, JsonTemplate)>,
    for_each: Option<Template>,
    if_previous: Vec<Decision>,
}

impl Compiler {
    pub fn workflow(
        &mut self,
        file: &Path,
        parsed: &Parsed<raw::WorkflowFile>,
        rules: &BTreeMap<PathBuf, Option<Rule>>,
        workflows_dir: &Path,
    ) -> Option<WorkflowDraft> {
        let src = Source { file, spans: &parsed.spans };
        let raw = &parsed.value;
        let before = self.diags.len();
        check_name(self, src, "workflow", &raw.workflow);

        let kinds = [raw.order.is_some(), raw.stock_update.is_some(), raw.push.is_some()].iter().filter(|k| **k).count();
        if kinds != 1 {
            self.push(
                src.at("workflow", "a workflow needs exactly one of `order` (decide orders), `stock_update` (feed the stock ledger) or `push` (send stock changes)")
                    .with_help("see examples/ for one of each"),
            );
        }
        let trigger = self.trigger(src, &raw.trigger);
        let kind = if let Some(order) = &raw.order {
            self.order_kind(src, raw, order, rules, workflows_dir)
        } else if let Some(update) = &raw.stock_update {
            self.not_for_kind(src, raw, "stock_update");
            self.stock_kind(src, update)
        } else if let Some(push) = &raw.push {
            self.not_for_kind(src, raw, "push");
            self.steps(src, "push", push).map(|steps| KindDraft::Push { steps })
        } else {
            None
        };
        match (&trigger, &kind) {
            (Some(TriggerDraft::StockChange { .. }), Some(KindDraft::Orders { .. } | KindDraft::Stock { .. })) => {
                self.push(src.at("trigger.stock_change", "a `stock_change` trigger starts push workflows only"));
            }
            (Some(TriggerDraft::Webhook { .. } | TriggerDraft::Poll { .. }), Some(KindDraft::Push { .. })) => {
                self.push(src.at("trigger", "push workflows are started by `trigger: {stock_change: {...}}`"));
            }
            _ => {}
        }
        Some(WorkflowDraft {
            ok: self.diags.len() == before && trigger.is_some() && kind.is_some(),
            name: raw.workflow.clone(),
            file: file.to_path_buf(),
            connection: raw.connection.clone(),
            trigger,
            kind,
        })
    }

    /// Order-workflow fields in a workflow of another kind are mistakes.
    fn not_for_kind(&mut self, src: Source, raw: &raw::WorkflowFile, kind: &str) {
        let stray = [
            ("stock", raw.stock.is_some()),
            ("fetch", !raw.fetch.is_empty()),
            ("rule", raw.rule.is_some()),
            ("on", !raw.on.approve.is_empty() || !raw.on.reject.is_empty() || !raw.on.waitlist.is_empty()),
        ];
        for (field, present) in stray {
            if present {
                self.push(src.at(field, format!("`{field}` belongs to order workflows, not to a `{kind}` workflow")));
            }
        }
    }

    fn trigger(&mut self, src: Source, t: &raw::TriggerRaw) -> Option<TriggerDraft> {
        let count = [t.webhook.is_some(), t.poll.is_some(), t.stock_change.is_some()].iter().filter(|b| **b).count();
        if count != 1 {
            self.push(
                src.at("trigger", "a workflow needs exactly one trigger: `webhook`, `poll` or `stock_change`")
                    .with_help("e.g. `trigger: {webhook: {events: [orders/create]}}`"),
            );
            return None;
        }
        if let Some(w) = &t.webhook {
            let records = self.opt_jsonpath(src, "trigger.webhook.records", w.records.as_ref()).flatten();
            let record_key = self.paths(src, "trigger.webhook.record_key", &w.record_key.0);
            if records.is_none() && !w.record_key.0.is_empty() {
                self.push(src.at("trigger.webhook.record_key", "`record_key` identifies records of a batch: it needs `records`"));
            }
            return Some(TriggerDraft::Webhook { events: w.events.clone(), records, record_key });
        }
        if let Some(s) = &t.stock_change {
            return Some(TriggerDraft::StockChange {
                skus: s.skus.iter().map(|p| SkuPattern::new(p)).collect(),
                min_change: s.min_change.unwrap_or(1).max(1),
            });
        }
        let p = t.poll.as_ref().expect("one trigger is set");
        let every = parse_interval(&p.every);
        if every.is_none() {
            self.push(
                src.at("trigger.poll.every", format!("`{}` is not an interval", p.every)).with_help("write e.g. `30s`, `5m` or `1h`"),
            );
        }
        let path =
            |c: &mut Compiler, f: &str, v: &Option<String>| v.as_ref().and_then(|v| c.jsonpath(src, &format!("trigger.poll.{f}"), v));
        let records = self.jsonpath(src, "trigger.poll.records", &p.records);
        if p.watermark.is_some() && p.next_cursor.is_some() {
            self.push(src.at("trigger.poll.next_cursor", "a poll takes its next cursor from `watermark` or from `next_cursor`, not both"));
        }
        let pages = self.pages(src, p);
        let spec = PollDraft {
            every: every.unwrap_or_default(),
            records: records.clone().unwrap_or_else(|| JsonPath::compile("$").expect("$ compiles")),
            id: path(self, "id", &p.id),
            version: self.paths(src, "trigger.poll.version", &p.version.0),
            watermark: path(self, "watermark", &p.watermark),
            next_cursor: path(self, "next_cursor", &p.next_cursor),
            initial_cursor: p.initial_cursor.clone(),
            pages,
            max_pages: p.max_pages.unwrap_or(100).max(1),
        };
        (every.is_some() && records.is_some()).then(|| TriggerDraft::Poll { request: p.request.clone(), spec: Box::new(spec) })
    }

    fn paths(&mut self, src: Source, field: &str, list: &[String]) -> Vec<JsonPath> {
        let one = list.len() == 1;
        list.iter()
            .enumerate()
            .filter_map(|(i, p)| if one { self.jsonpath(src, field, p) } else { self.jsonpath(src, &format!("{field}.{i}"), p) })
            .collect()
    }

    /// How a poll asks for further pages.
    fn pages(&mut self, src: Source, p: &raw::PollTriggerRaw) -> Pages {
        let Some(pages) = &p.pages else {
            return match &p.next_page {
                Some(next) => self.jsonpath(src, "trigger.poll.next_page", next).map_or(Pages::Single, Pages::Token),
                None => Pages::Single,
            };
        };
        if p.next_page.is_some() {
            self.push(src.at("trigger.poll.pages", "use either `next_page` (a token) or `pages`, not both"));
        }
        let total_pages = self.opt_jsonpath(src, "trigger.poll.pages.total_pages", pages.total_pages.as_ref()).flatten();
        let total_count = self.opt_jsonpath(src, "trigger.poll.pages.total_count", pages.total_count.as_ref()).flatten();
        match pages.by {
            raw::PageStyle::Number => {
                if total_count.is_some() && pages.size.is_none() {
                    self.push(src.at("trigger.poll.pages.size", "`total_count` needs the page `size` to tell the last page"));
                }
                Pages::Number { first: pages.first.unwrap_or(1), size: pages.size, total_pages, total_count }
            }
            raw::PageStyle::Offset => match pages.size {
                Some(size) if size > 0 => Pages::Offset { first: pages.first.unwrap_or(0), size, total_count },
                _ => {
                    self.push(src.at("trigger.poll.pages", "offset pages need `size` (records per page)"));
                    Pages::Single
                }
            },
            raw::PageStyle::Link => match &pages.link {
                Some(link) => self.jsonpath(src, "trigger.poll.pages.link", link).map_or(Pages::Single, Pages::Link),
                None => {
                    self.push(src.at("trigger.poll.pages", "link pages need `link`, the JSONPath of the next page's URL"));
                    Pages::Single
                }
            },
        }
    }

    fn order_kind(
        &mut self,
        src: Source,
        raw: &raw::WorkflowFile,
        m: &raw::OrderMappingRaw,
        rules: &BTreeMap<PathBuf, Option<Rule>>,
        workflows_dir: &Path,
    ) -> Option<KindDraft> {
        let mapping = (|| {
            Some(OrderMapping {
                ready: match &m.ready {
                    Some(c) => Some(self.condition(src, "order.ready", c)?),
                    None => None,
                },
                cancelled: match &m.cancelled {
                    Some(c) => Some(self.condition(src, "order.cancelled", c)?),
                    None => None,
                },
                fulfilled: match &m.fulfilled {
                    Some(c) => Some(self.condition(src, "order.fulfilled", c)?),
                    None => None,
                },
                external_id: self.jsonpath(src, "order.external_id", &m.external_id)?,
                number: self.opt_jsonpath(src, "order.number", m.number.as_ref())?,
                customer_id: self.opt_jsonpath(src, "order.customer.id", m.customer.id.as_ref())?,
                customer_name: self.opt_jsonpath(src, "order.customer.name", m.customer.name.as_ref())?,
                customer_group: self.opt_jsonpath(src, "order.customer.group", m.customer.group.as_ref())?,
                lines_each: self.jsonpath(src, "order.lines.each", &m.lines.each)?,
                line_sku: match &m.lines.sku {
                    raw::SkuSourceRaw::Path(p) => Some(self.jsonpath(src, "order.lines.sku", p)?),
                    raw::SkuSourceRaw::Request(_) => None,
                },
                line_fields: {
                    let mut out = Vec::new();
                    for (name, p) in &m.lines.fields {
                        out.push((name.clone(), self.jsonpath(src, &format!("order.lines.fields.{name}"), p)?));
                    }
                    out
                },
                line_qty: self.jsonpath(src, "order.lines.qty", &m.lines.qty)?,
                line_location: self.opt_jsonpath(src, "order.lines.location", m.lines.location.as_ref())?,
                received_at: self.opt_jsonpath(src, "order.received_at", m.received_at.as_ref())?,
            })
        })();
        let line_sku_request = match &m.lines.sku {
            raw::SkuSourceRaw::Request(r) => self.jsonpath(src, "order.lines.sku.path", &r.path).map(|p| (r.request.clone(), p)),
            raw::SkuSourceRaw::Path(_) => None,
        };
        let mut fetch = Vec::new();
        for (i, f) in raw.fetch.iter().enumerate() {
            let field = format!("fetch.{i}");
            let path = self.opt_jsonpath(src, &format!("{field}.path"), f.path.as_ref()).flatten();
            fetch.push(FetchDraft { request: f.request.clone(), field, path, into: f.into.clone() });
        }
        let stock_also = raw.stock.as_ref().map(|s| s.also.clone()).unwrap_or_default();
        let stock_request = match &raw.stock {
            Some(s) => Some(s.request.clone()),
            None => {
                self.push(src.at("order", "an order workflow needs `stock: {request: ...}` to look stock up"));
                None
            }
        };
        let rule = match &raw.rule {
            None => {
                self.push(
                    src.at("order", "an order workflow needs `rule:`, the script that decides")
                        .with_help("e.g. `rule: rules/amusement-machines.rhai`"),
                );
                None
            }
            Some(r) => match rules.get(&workflows_dir.join(r)) {
                Some(Some(rule)) => Some(rule.clone()),
                // The script's own error is reported at the script.
                Some(None) => None,
                None => {
                    self.push(
                        src.at("rule", format!("rule file `{r}` was not found next to the workflows"))
                            .with_help("rules live in workflows/rules/*.rhai; write e.g. `rule: rules/amusement-machines.rhai`"),
                    );
                    None
                }
            },
        };
        let mut steps = BTreeMap::new();
        for (decision, list) in
            [(Decision::Approve, &raw.on.approve), (Decision::Reject, &raw.on.reject), (Decision::Waitlist, &raw.on.waitlist)]
        {
            steps.insert(decision, self.steps(src, &format!("on.{}", decision.as_str()), list).unwrap_or_default());
        }
        Some(KindDraft::Orders {
            fetch,
            line_sku_request,
            mapping: mapping.map(Box::new),
            stock_request,
            stock_also,
            rule,
            params: Value::Object(raw.params.clone().into_iter().collect()),
            steps,
        })
    }

    fn stock_kind(&mut self, src: Source, u: &raw::StockUpdateRaw) -> Option<KindDraft> {
        let items = self.jsonpath(src, "stock_update.items", u.items.as_deref().unwrap_or("$"));
        let mut fields = Vec::new();
        let mut ok = true;
        for (name, e) in &u.fields {
            match self.extractor(src, &format!("stock_update.fields.{name}"), e) {
                Some(x) => fields.push((name.clone(), x)),
                None => ok = false,
            }
        }
        if u.request.is_none() {
            let names: Vec<&str> = u.fields.keys().map(String::as_str).collect();
            if !names.contains(&"sku") || !names.iter().any(|n| ["on_hand", "available", "levels"].contains(n)) {
                self.push(
                    src.at(
                        "stock_update.fields",
                        "without a `request`, the fields must give `sku` and one of `on_hand`, `available`, `levels`",
                    )
                    .with_help("or name a stock lookup `request` that reads them, with these fields as its inputs"),
                );
                ok = false;
            }
        }
        (ok && items.is_some()).then(|| KindDraft::Stock { items: items.expect("checked"), fields, request: u.request.clone() })
    }

    fn steps(&mut self, src: Source, field: &str, list: &[raw::StepRaw]) -> Option<Vec<StepDraft>> {
        let before = self.diags.len();
        let mut out = Vec::new();
        let mut names = BTreeSet::new();
        for (i, s) in list.iter().enumerate() {
            let field = format!("{field}.{i}");
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
                    if t.as_ref().is_some_and(|t| !t.is_lone_expression()) {
                        self.push(src.at(
                            &format!("{field}.for_each"),
                            "`for_each` must be a single expression such as `{{steps.fulfillment_orders.ids}}`",
                        ));
                    }
                    t
                }
            };
            let mut if_previous = Vec::new();
            for (j, d) in s.if_previous.iter().flatten().enumerate() {
                match Decision::parse(d) {
                    Some(d) => if_previous.push(d),
                    None => {
                        self.push(src.at(
                            &format!("{field}.if_previous.{j}"),
                            format!("`{d}` is not a decision; expected approve, reject or waitlist"),
                        ))
                    }
                }
            }
            out.push(StepDraft { name, request: s.request.clone(), field, args, for_each, if_previous });
        }
        (self.diags.len() == before).then_some(out)
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
            // A name close to a configured connection is a misspelling; any
            // other name is a platform this installation does not connect,
            // whose shipped workflows stay inactive until it does.
            match did_you_mean(&draft.connection, connections.keys().map(String::as_str)) {
                Some(s) => self.push(
                    src.at("connection", format!("no connection named `{}` in the instance config", draft.connection))
                        .with_help(format!("did you mean `{s}`?")),
                ),
                None => self.inactive.push(
                    src.at(
                        "connection",
                        format!("workflow `{}` is inactive: the instance config has no connection `{}`", draft.name, draft.connection),
                    )
                    .with_help("add the connection to the instance config to run it"),
                ),
            }
            return None;
        };
        let connector = connection.connector.clone();
        let before = self.diags.len();
        let trigger = match draft.trigger {
            Some(TriggerDraft::Webhook { events, records, record_key }) => {
                if connector.webhook.is_none() {
                    self.push(src.at(
                        "trigger.webhook",
                        format!("connector `{}` declares no `webhook` section, so it cannot verify deliveries", connector.name),
                    ));
                }
                Some(Trigger::Webhook { events, records, record_key })
            }
            Some(TriggerDraft::StockChange { skus, min_change }) => Some(Trigger::StockChange { skus, min_change }),
            Some(TriggerDraft::Poll { request, spec }) => self.find(src, &connector, "trigger.poll.request", &request).map(|request| {
                let s = *spec;
                Trigger::Poll(Box::new(PollSpec {
                    request,
                    every: s.every,
                    records: s.records,
                    id: s.id,
                    version: s.version,
                    watermark: s.watermark,
                    next_cursor: s.next_cursor,
                    initial_cursor: s.initial_cursor,
                    pages: s.pages,
                    max_pages: s.max_pages,
                }))
            }),
            None => None,
        };
        let kind = match draft.kind {
            Some(KindDraft::Orders { fetch, line_sku_request, mapping, stock_request, stock_also, rule, params, steps }) => {
                let also: Vec<Arc<RequestSpec>> = stock_also
                    .iter()
                    .enumerate()
                    .filter_map(|(i, name)| self.find(src, &connector, &format!("stock.also.{i}"), name))
                    .collect();
                let fetch: Vec<Fetch> = fetch
                    .into_iter()
                    .filter_map(|f| {
                        let request = self.find(src, &connector, &format!("{}.request", f.field), &f.request)?;
                        Some(Fetch { request, path: f.path, into: f.into })
                    })
                    .collect();
                let line_sku_request = match line_sku_request {
                    Some((name, path)) => self.find(src, &connector, "order.lines.sku.request", &name).map(|r| Some((r, path))),
                    None => Some(None),
                };
                let request = stock_request.and_then(|name| self.find_any(src, &connector, "stock.request", &name));
                if let Some(r) = &request {
                    self.check_stock_extracts(src, "stock.request", r, false);
                }
                let mut linked = BTreeMap::new();
                for (decision, drafts) in steps {
                    linked.insert(decision, self.link_steps(src, &connector, drafts));
                }
                match (request, mapping, rule, line_sku_request) {
                    (Some(request), Some(mapping), Some(rule), Some(line_sku_request)) => Some(Kind::Orders(Box::new(OrderFlow {
                        fetch,
                        line_sku_request,
                        mapping: *mapping,
                        stock: StockLookup { request, also },
                        rule,
                        params,
                        steps: linked,
                    }))),
                    _ => None,
                }
            }
            Some(KindDraft::Stock { items, fields, request }) => {
                let request = match request {
                    Some(name) => match self.find(src, &connector, "stock_update.request", &name) {
                        Some(r) => {
                            self.check_stock_extracts(src, "stock_update.request", &r, true);
                            Some(Some(r))
                        }
                        None => None,
                    },
                    None => Some(None),
                };
                request.map(|request| Kind::Stock(StockFlow { items, fields, request }))
            }
            Some(KindDraft::Push { steps }) => Some(Kind::Push(PushFlow { steps: self.link_steps(src, &connector, steps) })),
            None => None,
        };
        if self.diags.len() > before || !draft.ok {
            return None;
        }
        Some(Workflow { name: draft.name, file: draft.file, connection: connection.clone(), trigger: trigger?, kind: kind? })
    }

    /// A request sent for one thing at a time: anything but a multi-SKU stock lookup.
    fn find(&mut self, src: Source, connector: &Connector, field: &str, name: &str) -> Option<Arc<RequestSpec>> {
        let found = self.find_any(src, connector, field, name)?;
        if found.per_sku.is_some() {
            let d = src.at(field, format!("request `{name}` looks up several SKUs at once (`per_sku`); only `stock.request` can send it"));
            self.push(d.with_help("use a request that answers for one SKU or item here"));
            return None;
        }
        Some(found)
    }

    fn find_any(&mut self, src: Source, connector: &Connector, field: &str, name: &str) -> Option<Arc<RequestSpec>> {
        let found = connector.requests.get(name).cloned();
        if found.is_none() {
            let mut d = src.at(field, format!("connector `{}` has no request `{name}`", connector.name));
            if let Some(s) = did_you_mean(name, connector.requests.keys().map(String::as_str)) {
                d = d.with_help(format!("did you mean `{s}`?"));
            }
            self.push(d);
        }
        found
    }

    fn link_steps(&mut self, src: Source, connector: &Connector, drafts: Vec<StepDraft>) -> Vec<Step> {
        drafts
            .into_iter()
            .filter_map(|s| {
                let request = self.find(src, connector, &format!("{}.request", s.field), &s.request)?;
                Some(Step { name: s.name, request, args: s.args, for_each: s.for_each, if_previous: s.if_previous })
            })
            .collect()
    }

    /// A stock lookup must say how many units there are (and, feeding the
    /// ledger from a webhook, which SKU).
    fn check_stock_extracts(&mut self, src: Source, field: &str, r: &RequestSpec, needs_sku: bool) {
        let names: Vec<&str> = r.extract.iter().map(|(n, _)| n.as_str()).collect();
        let describe = || if names.is_empty() { "nothing".to_string() } else { names.join(", ") };
        if !names.iter().any(|n| ["on_hand", "available", "levels"].contains(n)) {
            let d = src.at(field, format!("request `{}` extracts none of on_hand, available, levels", r.name));
            self.push(d.with_help(format!("a stock lookup must extract one of them; it extracts: {}", describe())));
        }
        if needs_sku && !names.contains(&"sku") {
            self.push(
                src.at(field, format!("request `{}` must also extract `sku` to feed the ledger", r.name))
                    .with_help(format!("it extracts: {}", describe())),
            );
        }
        let _ = STOCK_FIELDS;
    }
}
