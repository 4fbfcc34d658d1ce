//! Handlebars request templates (the only user of handlebars).
//!
//! Every template in a config set is compiled once into one registry when the
//! set is loaded; rendering looks a template up by its handle. Strict mode is
//! on: a template that reads a field the context lacks fails loudly instead of
//! sending an empty string to a platform. Output is never HTML-escaped (these
//! are URLs, headers and JSON); the `json` and `urlencode` helpers escape for
//! those contexts explicitly.
//!
//! Three fast paths skip Handlebars (and the copy of the context it needs):
//! a template without `{{` is a literal; a template that is one lone
//! expression (`{{order.number}}`) is resolved directly, which also lets
//! structured JSON bodies keep the value's type (a number stays a number);
//! and text with plain expressions and `json`/`urlencode`/`xml` calls
//! (`/api/{{values.version}}/orders/{{urlencode order.external_id}}`) is
//! spliced directly, rendering exactly what Handlebars would.

use std::sync::Arc;

use handlebars::{Context, Handlebars, Helper, HelperResult, Output, RenderContext, RenderError, RenderErrorReason};
use serde_json::Value;

/// A compiled template handle. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Template {
    kind: Kind,
    source: Arc<str>,
    /// What its expressions read; worked out once, when compiled.
    reads: Reads,
}

/// What a template's expressions read: whether they reach the raw payload
/// (see [`Template::reads_raw`]), the words they use, and whether they may
/// reach the whole context (`this`, `.`, `..`, `@root`, a partial).
#[derive(Debug, Clone)]
struct Reads {
    raw: bool,
    everything: bool,
    words: Arc<[Box<str>]>,
}

#[derive(Debug, Clone)]
enum Kind {
    Literal,
    Lone(Arc<[Segment]>),
    /// Text and simple expressions; the registered copy renders the rare
    /// value that is not a scalar, as Handlebars has its own text for those.
    Spliced {
        parts: Arc<[Part]>,
        registered: Arc<str>,
    },
    Registered(Arc<str>),
}

#[derive(Debug, Clone)]
enum Part {
    Text(String),
    Value(Vec<Segment>),
    Call(Escape, Vec<Segment>),
}

#[derive(Debug, Clone, Copy)]
enum Escape {
    Json,
    Url,
    Xml,
}

#[derive(Debug, Clone)]
enum Segment {
    Key(String),
    Index(usize),
}

/// A template that does not compile, with the 1-based line and column inside it.
#[derive(Debug, Clone)]
pub struct TemplateError {
    pub line: usize,
    pub col: usize,
    pub message: String,
}

/// A failure while rendering, e.g. a missing variable in strict mode.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct RenderFailure(pub String);

impl Template {
    pub fn source(&self) -> &str {
        &self.source
    }

    /// True for a template that is one `{{expression}}` and nothing else.
    pub fn is_lone_expression(&self) -> bool {
        matches!(self.kind, Kind::Lone(_))
    }

    /// Whether the template may read the order's raw payload: an
    /// expression of it names `raw`, or takes the whole `order`
    /// (`{{json order}}`, `{{#with order}}`) rather than one of its fields.
    /// Cheap and conservative: a template that does neither can be rendered
    /// with `order.raw` left out of its context.
    pub fn reads_raw(&self) -> bool {
        self.reads.raw
    }

    /// Whether the template may read `name` from its context: an expression
    /// uses the word, or may reach the whole context. Conservative, like
    /// [`Template::reads_raw`]: a context without an unread name renders the same.
    pub fn may_read(&self, name: &str) -> bool {
        self.reads.everything || self.reads.words.iter().any(|w| &**w == name)
    }

    /// The variable paths this template reads (for lints), best effort.
    pub fn variables(&self) -> Vec<String> {
        let mut out = Vec::new();
        for expr in expressions(&self.source) {
            let expr = expr.trim_start_matches(['{', '#', '/', '~', '^', '!', '>']).trim();
            for word in expr.split_whitespace() {
                let word = word.trim_matches(|c| c == '(' || c == ')');
                let first = word.chars().next().unwrap_or(' ');
                // `this.…` reads inside a block are relative to the block's item.
                if (first.is_ascii_alphabetic() || first == '_') && word.contains('.') && !word.contains('=') && !word.starts_with("this.")
                {
                    out.push(word.to_string());
                }
            }
        }
        out
    }
}

/// Collects templates while a config set compiles.
pub struct TemplateBuilder {
    hb: Handlebars<'static>,
    next: usize,
}

impl Default for TemplateBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl TemplateBuilder {
    pub fn new() -> Self {
        let mut hb = Handlebars::new();
        hb.set_strict_mode(true);
        hb.register_escape_fn(handlebars::no_escape);
        hb.register_helper("json", Box::new(json_helper));
        hb.register_helper("urlencode", Box::new(urlencode_helper));
        hb.register_helper("xml", Box::new(xml_helper));
        hb.register_helper("odata", Box::new(odata_helper));
        hb.register_helper("default", Box::new(default_helper));
        hb.register_helper("join", Box::new(join_helper));
        hb.register_helper("datetime", Box::new(datetime_helper));
        TemplateBuilder { hb, next: 0 }
    }

    pub fn add(&mut self, source: &str) -> Result<Template, TemplateError> {
        let kind = if !source.contains("{{") {
            Kind::Literal
        } else if let Some(segments) = lone_expression(source) {
            // Compile anyway so syntax errors surface the same way.
            self.register(source)?;
            Kind::Lone(segments.into())
        } else if let Some(parts) = spliced(source) {
            Kind::Spliced { parts: parts.into(), registered: self.register(source)? }
        } else {
            Kind::Registered(self.register(source)?)
        };
        Ok(Template { kind, source: source.into(), reads: reads(source) })
    }

    fn register(&mut self, source: &str) -> Result<Arc<str>, TemplateError> {
        self.next += 1;
        let name: Arc<str> = format!("t{}", self.next).into();
        self.hb.register_template_string(&name, source).map_err(|e| {
            let (line, col) = e.pos().unwrap_or((1, 1));
            TemplateError { line, col, message: format!("invalid template: {}", e.reason()) }
        })?;
        Ok(name)
    }

    pub fn finish(self) -> Templates {
        Templates { hb: self.hb }
    }
}

/// The compiled templates of one config version.
pub struct Templates {
    hb: Handlebars<'static>,
}

impl Templates {
    /// Render to text.
    pub fn render(&self, t: &Template, ctx: &Value) -> Result<String, RenderFailure> {
        self.scope(ctx).render(t)
    }

    /// Render keeping the JSON type of a lone expression; other templates give a string.
    pub fn render_value(&self, t: &Template, ctx: &Value) -> Result<Value, RenderFailure> {
        self.scope(ctx).render_value(t)
    }

    /// Several templates over one context (a request's path, query, headers
    /// and body): Handlebars copies the context into its own form, and a
    /// scope does that at most once.
    pub fn scope<'a>(&'a self, ctx: &'a Value) -> Scope<'a> {
        Scope { templates: self, ctx, hb_ctx: std::cell::OnceCell::new() }
    }
}

/// Templates rendered over one context; see [`Templates::scope`].
pub struct Scope<'a> {
    templates: &'a Templates,
    ctx: &'a Value,
    hb_ctx: std::cell::OnceCell<handlebars::Context>,
}

impl Scope<'_> {
    /// Render to text.
    pub fn render(&self, t: &Template) -> Result<String, RenderFailure> {
        match &t.kind {
            Kind::Literal => Ok(t.source.to_string()),
            Kind::Lone(segs) => Ok(match resolve(segs, self.ctx, &t.source)? {
                Value::String(s) => s.clone(),
                Value::Null => String::new(),
                other => other.to_string(),
            }),
            Kind::Spliced { parts, registered } => match self.splice(parts, &t.source)? {
                Some(text) => Ok(text),
                None => self.render_registered(registered, &t.source),
            },
            Kind::Registered(name) => self.render_registered(name, &t.source),
        }
    }

    fn render_registered(&self, name: &str, source: &str) -> Result<String, RenderFailure> {
        let hb_ctx = self.hb_ctx.get_or_init(|| handlebars::Context::from(self.ctx.clone()));
        self.templates.hb.render_with_context(name, hb_ctx).map_err(|e| RenderFailure(describe(&e, source)))
    }

    /// The spliced text; `None` when a plain expression meets an array or
    /// object, which only Handlebars renders as Handlebars does.
    fn splice(&self, parts: &[Part], source: &str) -> Result<Option<String>, RenderFailure> {
        let mut out = String::new();
        for part in parts {
            match part {
                Part::Text(text) => out.push_str(text),
                Part::Value(segs) => match resolve(segs, self.ctx, source)? {
                    Value::String(s) => out.push_str(s),
                    Value::Null => {}
                    Value::Array(_) | Value::Object(_) => return Ok(None),
                    scalar => out.push_str(&scalar.to_string()),
                },
                Part::Call(escape, segs) => {
                    let v = resolve(segs, self.ctx, source)?;
                    let text = || text_of(v);
                    match escape {
                        Escape::Json => out.push_str(&v.to_string()),
                        Escape::Url => out.push_str(&percent_encode(&text())),
                        Escape::Xml => out.push_str(&xml_escape(&text())),
                    }
                }
            }
        }
        Ok(Some(out))
    }

    /// Render keeping the JSON type of a lone expression; other templates give a string.
    pub fn render_value(&self, t: &Template) -> Result<Value, RenderFailure> {
        match &t.kind {
            Kind::Lone(segs) => resolve(segs, self.ctx, &t.source).cloned(),
            _ => self.render(t).map(Value::String),
        }
    }
}

fn describe(e: &RenderError, source: &str) -> String {
    match e.reason() {
        RenderErrorReason::MissingVariable(Some(path)) => format!("template `{}` reads `{path}`, which is missing", short(source)),
        RenderErrorReason::MissingVariable(None) => {
            format!("template `{}` reads a missing value", short(source))
        }
        other => format!("template `{}` failed: {other}", short(source)),
    }
}

fn short(s: &str) -> String {
    let s = s.trim();
    if s.chars().count() > 60 { format!("{}…", s.chars().take(60).collect::<String>()) } else { s.to_string() }
}

/// The text between each `{{` and its `}}` (to the end for an unclosed one).
fn expressions(source: &str) -> impl Iterator<Item = &str> {
    let mut rest = source;
    std::iter::from_fn(move || {
        let open = rest.find("{{")?;
        let after = &rest[open + 2..];
        let expr = &after[..after.find("}}").unwrap_or(after.len())];
        rest = &after[expr.len()..];
        Some(expr)
    })
}

fn is_ident(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// [`Template::reads_raw`] and [`Template::may_read`], worked out from the source.
fn reads(source: &str) -> Reads {
    // `word` alone; with `whole`, also not as a segment of a longer path.
    let names = |expr: &str, word: &str, whole: bool| {
        expr.match_indices(word).any(|(i, w)| {
            let before = expr[..i].chars().next_back();
            let after = expr[i + w.len()..].chars().next();
            !before.is_some_and(is_ident) && !after.is_some_and(is_ident) && !(whole && (before == Some('.') || after == Some('.')))
        })
    };
    let (mut raw, mut everything) = (false, false);
    let mut words: Vec<Box<str>> = Vec::new();
    for expr in expressions(source) {
        raw |= names(expr, "raw", false) || names(expr, "order", true);
        let chars: Vec<char> = expr.chars().collect();
        let lone_dot = chars.iter().enumerate().any(|(i, &c)| {
            c == '.'
                && !(i > 0 && (is_ident(chars[i - 1]) || chars[i - 1] == ']') && chars.get(i + 1).is_some_and(|&n| is_ident(n) || n == '['))
        });
        everything |= lone_dot || expr.contains("@root") || expr.trim_start_matches(['{', '~']).trim_start().starts_with('>');
        for word in expr.split(|c: char| !is_ident(c)).filter(|w| !w.is_empty()) {
            everything |= word == "this";
            if !words.iter().any(|w| &**w == word) {
                words.push(word.into());
            }
        }
    }
    Reads { raw, everything, words: words.into() }
}

/// Text with `{{path}}`, `{{json path}}`, `{{urlencode path}}` and
/// `{{xml path}}` → its parts; `None` for anything else Handlebars offers
/// (blocks, other helpers, literals, whitespace control, escaped mustaches).
fn spliced(source: &str) -> Option<Vec<Part>> {
    let mut parts = Vec::new();
    let mut rest = source;
    while let Some(open) = rest.find("{{") {
        let text = &rest[..open];
        if text.ends_with('\\') || text.contains("}}") {
            return None;
        }
        if !text.is_empty() {
            parts.push(Part::Text(text.to_string()));
        }
        let after = &rest[open + 2..];
        let close = after.find("}}")?;
        let inner = &after[..close];
        if inner.starts_with(['{', '~']) || inner.ends_with('~') {
            return None;
        }
        let words: Vec<&str> = inner.split_whitespace().collect();
        // Literals (`{{5}}`, `{{true}}`) and keywords stay with Handlebars.
        if words.last().is_some_and(|w| {
            !w.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_') || ["true", "false", "null", "else", "this"].contains(w)
        }) {
            return None;
        }
        parts.push(match words.as_slice() {
            [path] => Part::Value(path_segments(path)?),
            [helper, path] => {
                let escape = match *helper {
                    "json" => Escape::Json,
                    "urlencode" => Escape::Url,
                    "xml" => Escape::Xml,
                    _ => return None,
                };
                Part::Call(escape, path_segments(path)?)
            }
            _ => return None,
        });
        rest = &after[close + 2..];
    }
    if rest.contains("}}") {
        return None;
    }
    if !rest.is_empty() {
        parts.push(Part::Text(rest.to_string()));
    }
    Some(parts)
}

/// `{{ a.b.[0].c }}` alone → its path segments.
fn lone_expression(source: &str) -> Option<Vec<Segment>> {
    path_segments(source.trim().strip_prefix("{{")?.strip_suffix("}}")?)
}

/// `a.b.[0].c` → its path segments; `None` for anything but a plain path.
fn path_segments(inner: &str) -> Option<Vec<Segment>> {
    let inner = inner.trim();
    if inner.is_empty() || inner.contains(['{', '}', ' ', '(', '"', '\'', '#', '/', '!', '>', '^', '~', '@', '=']) {
        return None;
    }
    inner
        .split('.')
        .map(|part| {
            let part = part.trim_start_matches('[').trim_end_matches(']');
            if part.is_empty() || part == "this" {
                None
            } else if let Ok(i) = part.parse::<usize>() {
                Some(Segment::Index(i))
            } else {
                Some(Segment::Key(part.to_string()))
            }
        })
        .collect()
}

fn resolve<'a>(segs: &[Segment], ctx: &'a Value, source: &str) -> Result<&'a Value, RenderFailure> {
    let mut cur = ctx;
    for (i, seg) in segs.iter().enumerate() {
        let next = match (seg, cur) {
            (Segment::Key(k), Value::Object(m)) => m.get(k),
            (Segment::Index(n), Value::Array(a)) => a.get(*n),
            (Segment::Key(k), Value::Array(a)) => k.parse::<usize>().ok().and_then(|n| a.get(n)),
            _ => None,
        };
        cur = next.ok_or_else(|| {
            let path: Vec<String> = segs[..=i]
                .iter()
                .map(|s| match s {
                    Segment::Key(k) => k.clone(),
                    Segment::Index(n) => n.to_string(),
                })
                .collect();
            RenderFailure(format!("template `{}` reads `{}`, which is missing", short(source), path.join(".")))
        })?;
    }
    Ok(cur)
}

fn param_value<'a>(h: &'a Helper, idx: usize, r: &Handlebars) -> Result<&'a Value, RenderError> {
    let p = h.param(idx).ok_or(RenderErrorReason::ParamNotFoundForIndex("helper", idx))?;
    if r.strict_mode() && p.is_value_missing() {
        return Err(RenderErrorReason::MissingVariable(p.relative_path().cloned()).into());
    }
    Ok(p.value())
}

/// `{{json value}}`: the value as JSON text (strings quoted and escaped).
fn json_helper(h: &Helper, r: &Handlebars, _: &Context, _: &mut RenderContext, out: &mut dyn Output) -> HelperResult {
    let v = param_value(h, 0, r)?;
    out.write(&v.to_string())?;
    Ok(())
}

/// A value as the text an escaping helper works on: a string as it is, anything else as JSON.
fn text_of(v: &Value) -> std::borrow::Cow<'_, str> {
    match v {
        Value::String(s) => std::borrow::Cow::Borrowed(s),
        other => std::borrow::Cow::Owned(other.to_string()),
    }
}

/// `{{urlencode value}}`: percent-encoded for a path segment or query value.
fn urlencode_helper(h: &Helper, r: &Handlebars, _: &Context, _: &mut RenderContext, out: &mut dyn Output) -> HelperResult {
    let s = text_of(param_value(h, 0, r)?);
    out.write(&percent_encode(&s))?;
    Ok(())
}

/// `{{xml value}}`: the value escaped for XML text and attributes (feeds, SOAP bodies).
fn xml_helper(h: &Helper, r: &Handlebars, _: &Context, _: &mut RenderContext, out: &mut dyn Output) -> HelperResult {
    let s = text_of(param_value(h, 0, r)?);
    out.write(&xml_escape(&s))?;
    Ok(())
}

/// `{{odata value}}`: the value as an OData string literal, quoted, with
/// its single quotes doubled (`O'Neil` → `'O''Neil'`), for `$filter`s.
fn odata_helper(h: &Helper, r: &Handlebars, _: &Context, _: &mut RenderContext, out: &mut dyn Output) -> HelperResult {
    let s = text_of(param_value(h, 0, r)?);
    out.write(&format!("'{}'", s.replace('\'', "''")))?;
    Ok(())
}

fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

/// `{{default value "fallback"}}`: the value, or the fallback when it is missing or null.
fn default_helper(h: &Helper, _: &Handlebars, _: &Context, _: &mut RenderContext, out: &mut dyn Output) -> HelperResult {
    let first = h.param(0).filter(|p| !p.is_value_missing() && !p.value().is_null()).map(|p| p.value());
    let v = match first {
        Some(v) => v,
        None => h.param(1).map(|p| p.value()).ok_or(RenderErrorReason::ParamNotFoundForIndex("default", 1))?,
    };
    match v {
        Value::String(s) => out.write(s)?,
        other => out.write(&other.to_string())?,
    }
    Ok(())
}

/// `{{join list ","}}`: array items joined by a separator.
fn join_helper(h: &Helper, r: &Handlebars, _: &Context, _: &mut RenderContext, out: &mut dyn Output) -> HelperResult {
    let v = param_value(h, 0, r)?;
    let sep = h.param(1).and_then(|p| p.value().as_str()).unwrap_or(",");
    let items: Vec<String> = match v {
        Value::Array(a) => a
            .iter()
            .map(|x| match x {
                Value::String(s) => s.clone(),
                o => o.to_string(),
            })
            .collect(),
        Value::String(s) => vec![s.clone()],
        _ => Vec::new(),
    };
    out.write(&items.join(sep))?;
    Ok(())
}

/// `{{datetime value "[year]-[month]-[day]"}}`: a point in time re-written
/// in UTC with a `time` format description (default RFC 3339). It reads
/// RFC 3339, `YYYY-MM-DD HH:MM:SS` and `YYYY-MM-DD` (taken as UTC), the
/// .NET `/Date(ms)/` form, and Unix seconds or milliseconds; anything else
/// is a render error rather than a wrong date sent to a platform.
fn datetime_helper(h: &Helper, r: &Handlebars, _: &Context, _: &mut RenderContext, out: &mut dyn Output) -> HelperResult {
    let v = param_value(h, 0, r)?;
    let at = parse_datetime(v).ok_or_else(|| RenderErrorReason::Other(format!("`{v}` is not a date or time datetime can read")))?;
    let text = match h.param(1).and_then(|p| p.value().as_str()) {
        None => at.format(&time::format_description::well_known::Rfc3339),
        Some(f) => {
            let format = time::format_description::parse_borrowed::<2>(f)
                .map_err(|e| RenderErrorReason::Other(format!("datetime format `{f}`: {e}")))?;
            at.format(&format)
        }
    }
    .map_err(|e| RenderErrorReason::Other(format!("datetime: {e}")))?;
    out.write(&text)?;
    Ok(())
}

/// A point in time from the forms platforms send, in UTC.
pub fn parse_datetime(v: &Value) -> Option<time::OffsetDateTime> {
    use time::format_description::well_known::Rfc3339;
    let from_number = |n: i128| {
        // Milliseconds once the number is past what seconds reach this millennium.
        let nanos = if n.abs() > 100_000_000_000 { n * 1_000_000 } else { n * 1_000_000_000 };
        time::OffsetDateTime::from_unix_timestamp_nanos(nanos).ok()
    };
    let at = match v {
        Value::Number(n) => from_number(n.as_i64()? as i128)?,
        Value::String(s) => {
            let s = s.trim();
            if let Some(inner) = s.strip_prefix("/Date(").and_then(|r| r.strip_suffix(")/")) {
                // `/Date(1740823200000)/`, optionally with an offset that does not move the instant.
                let end = inner[1..].find(['+', '-']).map_or(inner.len(), |i| i + 1);
                from_number(inner[..end].parse().ok()?)?
            } else if let Ok(t) = time::OffsetDateTime::parse(s, &Rfc3339) {
                t
            } else if let Ok(t) =
                time::PrimitiveDateTime::parse(s, time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second]"))
            {
                t.assume_utc()
            } else if let Ok(t) =
                time::PrimitiveDateTime::parse(s, time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]"))
            {
                t.assume_utc()
            } else if let Ok(d) = time::Date::parse(s, time::macros::format_description!("[year]-[month]-[day]")) {
                d.midnight().assume_utc()
            } else {
                from_number(s.parse().ok()?)?
            }
        }
        _ => return None,
    };
    Some(at.to_offset(time::UtcOffset::UTC))
}

/// RFC 3986 unreserved characters pass; everything else is %XX-encoded.
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn strict_mode_rejects_missing_variables() {
        let mut b = TemplateBuilder::new();
        let t = b.add("/orders/{{order.id}}/x{{order.nope}}").unwrap();
        let ts = b.finish();
        let err = ts.render(&t, &json!({"order": {"id": 1}})).unwrap_err();
        assert!(err.0.contains("order.nope"), "{}", err.0);
    }

    #[test]
    fn xml_values_are_escaped() {
        let mut b = TemplateBuilder::new();
        let t = b.add("<Note>{{xml note}}</Note>").unwrap();
        let ts = b.finish();
        assert_eq!(
            ts.render(&t, &json!({"note": "Tom & Jerry's <\"cab\">"})).unwrap(),
            "<Note>Tom &amp; Jerry&apos;s &lt;&quot;cab&quot;&gt;</Note>"
        );
    }

    #[test]
    fn datetimes_are_read_in_every_platform_form() {
        let mut b = TemplateBuilder::new();
        let iso = b.add("{{datetime at}}").unwrap();
        let local = b.add("{{datetime at \"[year]-[month]-[day]T[hour]:[minute]:[second]\"}}").unwrap();
        let ts = b.finish();
        let render = |t: &Template, v: Value| ts.render(t, &json!({ "at": v }));
        assert_eq!(render(&iso, json!("/Date(1740823200000)/")).unwrap(), "2025-03-01T10:00:00Z");
        assert_eq!(render(&local, json!("/Date(1740823200000+0000)/")).unwrap(), "2025-03-01T10:00:00");
        assert_eq!(render(&iso, json!("2026-06-02T07:15:00-07:00")).unwrap(), "2026-06-02T14:15:00Z");
        assert_eq!(render(&iso, json!("2026-06-02 14:15:00")).unwrap(), "2026-06-02T14:15:00Z");
        assert_eq!(render(&iso, json!("2026-06-02")).unwrap(), "2026-06-02T00:00:00Z");
        assert_eq!(render(&iso, json!(1740823200)).unwrap(), "2025-03-01T10:00:00Z");
        assert!(render(&iso, json!("soon")).is_err());
    }

    #[test]
    fn lone_expressions_keep_their_type() {
        let mut b = TemplateBuilder::new();
        let t = b.add("{{ order.lines.[0].qty }}").unwrap();
        let lit = b.add("plain").unwrap();
        let ts = b.finish();
        let ctx = json!({"order": {"lines": [{"qty": 2}]}});
        assert_eq!(ts.render_value(&t, &ctx).unwrap(), json!(2));
        assert_eq!(ts.render(&lit, &ctx).unwrap(), "plain");
        assert!(ts.render_value(&t, &json!({"order": {"lines": []}})).is_err());
    }

    #[test]
    fn helpers_escape_for_their_context() {
        let mut b = TemplateBuilder::new();
        let j = b.add("{\"q\": {{json sku}}}").unwrap();
        let u = b.add("/p/{{urlencode sku}}").unwrap();
        let d = b.add("{{default note \"none\"}}").unwrap();
        let o = b.add("{{#each skus}}{{#unless @first}} or {{/unless}}ItemCode eq {{odata this}}{{/each}}").unwrap();
        let ts = b.finish();
        let ctx = json!({"sku": "A \"B\"/C", "skus": ["PB-1", "O'Neil"]});
        assert_eq!(ts.render(&o, &ctx).unwrap(), "ItemCode eq 'PB-1' or ItemCode eq 'O''Neil'");
        assert_eq!(ts.render(&j, &ctx).unwrap(), r#"{"q": "A \"B\"/C"}"#);
        assert_eq!(ts.render(&u, &ctx).unwrap(), "/p/A%20%22B%22%2FC");
        assert_eq!(ts.render(&d, &ctx).unwrap(), "none");
    }

    /// Splicing must render exactly what Handlebars renders.
    #[test]
    fn spliced_templates_render_as_handlebars_does() {
        let sources = [
            "/admin/api/{{values.version}}/orders/{{order.id}}.json",
            "sku:{{json sku}}",
            "{\"q\": {{json sku}}, \"n\": {{json n}}}",
            "/p/{{urlencode sku}}?x={{urlencode n}}&f={{urlencode f}}",
            "<a n=\"{{xml sku}}\">{{xml n}}</a>{{ b }}",
            "{{n}}/{{f}}/{{b}}/{{z}}/{{order.lines.[1].sku}}",
            "{{json order}} {{json order.lines}}",
        ];
        let ctx = json!({
            "values": {"version": "2025-01"},
            "order": {"id": 7, "lines": [{"sku": "A"}, {"sku": "B & \"C\""}]},
            "sku": "A \"B\"/C <d> é",
            "n": 12, "f": 1.5, "b": true, "z": null
        });
        let mut b = TemplateBuilder::new();
        let templates: Vec<Template> = sources.iter().map(|s| b.add(s).unwrap()).collect();
        let ts = b.finish();
        for t in &templates {
            let Kind::Spliced { parts, registered } = &t.kind else { panic!("{} should be spliced", t.source()) };
            let scope = ts.scope(&ctx);
            let spliced = scope.splice(parts, t.source()).unwrap().expect("scalars only");
            assert_eq!(spliced, scope.render_registered(registered, t.source()).unwrap(), "{}", t.source());
            assert_eq!(ts.render(t, &ctx).unwrap(), spliced);
        }
    }

    #[test]
    fn other_templates_stay_with_handlebars() {
        let mut b = TemplateBuilder::new();
        for source in [
            "{{#each xs}}{{this}}{{/each}}",
            "{{default a \"b\"}}",
            "x {{{a}}}",
            "\\{{a}}",
            "{{~a}} b",
            "{{5}} a",
            "{{a}} {{join xs \",\"}}",
        ] {
            let t = b.add(source).unwrap();
            assert!(matches!(t.kind, Kind::Registered(_)), "{source}");
        }
        // A plain expression meeting a list renders as Handlebars renders it.
        let t = b.add("x {{xs}}").unwrap();
        let ts = b.finish();
        let ctx = json!({"xs": [1, 2]});
        let Kind::Spliced { registered, .. } = &t.kind else { panic!("spliced") };
        assert_eq!(ts.render(&t, &ctx).unwrap(), ts.scope(&ctx).render_registered(registered, t.source()).unwrap());
    }

    #[test]
    fn readers_of_the_raw_payload_are_recognised() {
        let mut b = TemplateBuilder::new();
        for (source, reads) in [
            ("/orders/{{order.external_id}}", false),
            ("{{json order.lines}} {{values.order_prefix}}", false),
            ("{{order.raw.note}}", true),
            ("{{json order}}", true),
            ("{{#with order}}{{json this}}{{/with}}", true),
            ("{{#each order }}{{@key}}{{/each}}", true),
            ("query { order(id: $id) { rawTags } } {{json vars}}", false),
            ("{{ order.raw }}", true),
        ] {
            assert_eq!(b.add(source).unwrap().reads_raw(), reads, "{source}");
        }
    }

    #[test]
    fn the_names_a_template_may_read_are_recognised() {
        let mut b = TemplateBuilder::new();
        for (source, stock) in [
            ("{{order.id}} {{json decision.lines}}", false),
            ("{{#each order.lines}}{{lookup ../stock sku}}{{/each}}", true),
            ("{{stock.PB1.available}}", true),
            ("{{order.stock_note}}", false),
            ("{{#each order.lines}}{{this.sku}}{{/each}}", true),
            ("{{#each order.lines}}{{json ../this}}{{/each}}", true),
            ("{{json @root}}", true),
            ("{{> partial}}", true),
            ("{{order.lines.[0].sku}}", false),
            ("no expressions", false),
        ] {
            assert_eq!(b.add(source).unwrap().may_read("stock"), stock, "{source}");
        }
    }

    #[test]
    fn syntax_errors_have_positions() {
        let mut b = TemplateBuilder::new();
        let e = b.add("ok\n{{#if x}}unclosed").unwrap_err();
        assert!(e.line >= 1 && e.message.contains("invalid template"), "{e:?}");
    }
}
