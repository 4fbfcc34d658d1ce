//! Odoo 17, simulated: the external JSON-RPC API (`POST /jsonrpc`, services
//! `common` and `object`) over the mock ERP. Sale orders are polled; the
//! outgoing webhooks of automation rules are not imitated.
//!
//! What it imitates:
//! - the JSON-RPC 2.0 envelope; every Odoo error, as Odoo does, with HTTP 200
//!   and `{"error":{"code":200,"message":"Odoo Server Error","data":{"name",
//!   "debug","message","arguments","context"}}}`; a body that is not JSON
//!   answers 400 `Invalid JSON data`, a JSON body that is not an object 400
//!   `Invalid JSON-RPC data`, a request without a JSON content type 400 with
//!   Odoo's "Request inferred type" page;
//! - `common.version`, `common.authenticate(db, login, key, {})` (uid or
//!   `false`), `common.login`, and `object.execute_kw` / `object.execute`
//!   with `(db, uid, key)` checked on every call (`AccessDenied`), an unknown
//!   database answering `psycopg2.OperationalError`;
//! - the ORM over the models below: `search_read`, `read`, `search`,
//!   `search_count`, `name_search`, `fields_get`, with positional or keyword
//!   arguments bound as Python binds them (`TypeError` otherwise), domains
//!   with `&`/`|`/`!`, every comparison operator, `like`/`ilike`/`=like`/
//!   `=ilike`, `in`/`not in`, `any`/`not any`, dotted paths through
//!   relational fields; `order` specs; many2one read as `[id, "name"]` (a
//!   bare id with `load: null`), x2many as id lists, empty values as `false`,
//!   datetimes as UTC `YYYY-MM-DD HH:MM:SS` (kept to the microsecond, as in
//!   the database, so `write_date > '…:00'` also matches a record written
//!   later within that second); unknown models (`UserError`),
//!   methods (`AttributeError`), fields (`ValueError`), records
//!   (`MissingError`), private methods (`AccessError`).
//!
//! Models: `sale.order` (one per ERP order of this platform; id = ERP order
//! number, name `S0` + number), `sale.order.line` (id = number × 1000 +
//! position), `product.product` (id = ERP product id − 9 000 000 000, type
//! `product` as in 17), `stock.warehouse` (`WH`, `WH2`… per ERP location),
//! `stock.location` (`WH/Stock` = 8, `WH2/Stock` = 18…, plus `Partners/Vendors`
//! = 4 and `Partners/Customers` = 5), `stock.quant` (id = product id × 100 +
//! location position; only quants holding or reserving stock, or with a
//! pending count), `res.partner` (customers from 10 on; tags as
//! `category_id`), `res.partner.category`, `crm.tag`, `res.company`,
//! `mail.message`, `mail.message.subtype`.
//!
//! Write methods: `sale.order.write` (`note`, `client_order_ref`, `origin`,
//! `tag_ids` with x2many commands or an id list), `action_confirm` (draft or
//! sent → `sale`, `date_order` set to the confirmation time), `action_cancel`,
//! `message_post` (keyword arguments only; a note unless `subtype_xmlid` is
//! `mail.mt_comment`; answers the message id; the body goes to the ERP
//! order's notes); `stock.quant.write({"inventory_quantity":
//! n})`, `create` with `context: {"inventory_mode": true}`,
//! `action_apply_inventory` (sets on-hand to the counted quantity; answers
//! `null`); `crm.tag.create`. Each change moves `write_date`.
//!
//! Stock: Odoo reserves stock only when an order is confirmed, so an order's
//! ERP commitment is released the first time the adapter sees it in draft and
//! committed again by `action_confirm`; `action_cancel` of a confirmed order
//! releases it. Quantities: `qty_available` = on hand, `outgoing_qty` and a
//! quant's `reserved_quantity` = ERP committed, `free_qty` = on hand −
//! committed, `incoming_qty` = ERP incoming, `virtual_available` = on hand −
//! committed + incoming; `context.warehouse` / `context.location` narrow them.
//! A cancel through the control API shows as `state: cancel`, a shipment as
//! `sale` (even for an order still in draft here) with `delivery_status:
//! full` and `qty_delivered` set, both moving `write_date` when first seen.
//!
//! Fault operations: `<model>.<method>` (e.g. `sale.order.search_read`),
//! `common.<method>` (e.g. `common.authenticate`), `db.<method>`.
//!
//! Choices where the public material was not conclusive:
//! - `action_cancel` always cancels and answers `true` (Odoo 17 may answer
//!   the cancel wizard's action for confirmed orders unless the context holds
//!   `disable_cancel_warning`);
//! - writes to existing `sale.order` fields other than those above are
//!   accepted and ignored; other models are read-only for the API user
//!   (`AccessError`);
//! - `message_post` with the same body on the same order counts once and
//!   answers the same message id; it does not move the order's `write_date`;
//! - `action_apply_inventory` applies only quants whose count was set;
//!   writing `inventory_quantity` is accepted with or without inventory mode;
//! - `warehouse_id` reads `[id, <ERP location name>]`.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use serde_json::{Map, Value, json};
use time::OffsetDateTime;

use crate::sandbox::erp::{Erp, OrderState, Product, SimOrder};
use crate::sandbox::faults::{self, Faults, When};
use crate::sandbox::platforms::{Delivery, OrderEvent, SimConnection, SimContext, SimPlatform};

const NAME: &str = "odoo";
const UID: i64 = 2;
const ADMIN_PARTNER: i64 = 3;
const COMPANY: (i64, &str) = (1, "My Company");
/// ERP product ids are this plus the Odoo `product.product` id.
const PRODUCT_ID_BASE: u64 = 9_000_000_000;
const FIRST_CUSTOMER_PARTNER: i64 = 10;
const FIRST_MESSAGE: i64 = 1000;

/// The database, user and API key the simulated server accepts.
#[derive(Debug, Clone)]
pub struct OdooCredentials {
    pub database: String,
    pub login: String,
    pub api_key: String,
}

pub struct OdooSim {
    pub erp: Arc<Erp>,
    faults: Arc<Faults>,
    pub creds: OdooCredentials,
    logins: AtomicU64,
    key_revoked: AtomicBool,
    state: Mutex<OdooState>,
}

#[derive(Default)]
struct OdooState {
    /// `crm.tag` names; a tag's id is its position + 1.
    tags: Vec<String>,
    /// Counted quantities waiting for `action_apply_inventory`, by quant id.
    counts: HashMap<i64, f64>,
    messages: Vec<Message>,
    /// Message ids by natural key (order and body), so a repeated post answers the first.
    message_keys: HashMap<String, i64>,
}

#[derive(Clone)]
struct Message {
    id: i64,
    res_id: i64,
    record_name: String,
    body: String,
    message_type: String,
    subtype: i64,
    date: String,
}

// ---- errors ----

/// An Odoo exception on its way to the JSON-RPC error envelope.
#[derive(Debug)]
struct OdooError {
    name: &'static str,
    message: String,
}

type OdooResult<T> = Result<T, OdooError>;

impl OdooError {
    fn new(name: &'static str, message: impl Into<String>) -> Self {
        OdooError { name, message: message.into() }
    }
    fn user(message: impl Into<String>) -> Self {
        OdooError::new("odoo.exceptions.UserError", message)
    }
    fn value(message: impl Into<String>) -> Self {
        OdooError::new("builtins.ValueError", message)
    }
    fn type_error(message: impl Into<String>) -> Self {
        OdooError::new("builtins.TypeError", message)
    }
    fn access_denied() -> Self {
        OdooError::new("odoo.exceptions.AccessDenied", "Access Denied")
    }
    fn access(message: impl Into<String>) -> Self {
        OdooError::new("odoo.exceptions.AccessError", message)
    }
    fn missing(model: &str, ids: &[i64]) -> Self {
        let ids: Vec<String> = ids.iter().map(i64::to_string).collect();
        let records = if ids.len() == 1 { format!("{model}({},)", ids[0]) } else { format!("{model}({})", ids.join(", ")) };
        OdooError::new(
            "odoo.exceptions.MissingError",
            format!("Record does not exist or has been deleted.\n(Record: {records}, User: {UID})"),
        )
    }

    fn to_json(&self) -> Value {
        let debug = format!(
            "Traceback (most recent call last):\n  File \"odoo/http.py\", in _serve_nodb\n  File \"odoo/service/model.py\", in execute_cr\n{}: {}\n",
            self.name, self.message
        );
        json!({"code": 200, "message": "Odoo Server Error",
               "data": {"name": self.name, "debug": debug, "message": self.message, "arguments": [self.message], "context": {}}})
    }
}

fn rpc_result(id: &Value, result: Value) -> Response {
    axum::Json(json!({"jsonrpc": "2.0", "id": id, "result": result})).into_response()
}

fn rpc_error(id: &Value, error: &OdooError) -> Response {
    axum::Json(json!({"jsonrpc": "2.0", "id": id, "error": error.to_json()})).into_response()
}

fn server_error_body(id: &Value) -> Value {
    let error = OdooError::new(
        "werkzeug.exceptions.InternalServerError",
        "500 Internal Server Error: The server encountered an internal error and was unable to complete your request.",
    );
    json!({"jsonrpc": "2.0", "id": id, "error": error.to_json()})
}

fn bad_request_text(text: &str) -> Response {
    let mut r = (StatusCode::BAD_REQUEST, text.to_string()).into_response();
    r.headers_mut().insert("content-type", HeaderValue::from_static("text/html; charset=utf-8"));
    r
}

// ---- Python-flavoured helpers ----

/// A JSON value as Python would print it (`False`, `'text'`, `[1, 2]`).
fn py_repr(v: &Value) -> String {
    match v {
        Value::Null => "None".into(),
        Value::Bool(true) => "True".into(),
        Value::Bool(false) => "False".into(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'")),
        Value::Array(items) => format!("[{}]", items.iter().map(py_repr).collect::<Vec<_>>().join(", ")),
        Value::Object(m) => format!("{{{}}}", m.iter().map(|(k, v)| format!("'{k}': {}", py_repr(v))).collect::<Vec<_>>().join(", ")),
    }
}

fn truthy(v: &Value) -> bool {
    match v {
        Value::Null | Value::Bool(false) => false,
        Value::Number(n) => n.as_f64() != Some(0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(m) => !m.is_empty(),
        Value::Bool(true) => true,
    }
}

/// A stored datetime: PostgreSQL keeps microseconds, the API shows whole
/// seconds (see [`shown_datetime`]). Comparing stored stamps as text against
/// a client's `YYYY-MM-DD HH:MM:SS` behaves as the database does.
fn odoo_datetime(t: OffsetDateTime) -> String {
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}.{:06}",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.microsecond()
    )
}

fn odoo_datetime_of(rfc3339: &str) -> String {
    odoo_datetime(crate::clock::parse_instant(rfc3339).unwrap_or_else(OffsetDateTime::now_utc))
}

fn now_odoo() -> String {
    odoo_datetime(OffsetDateTime::now_utc())
}

/// A stored datetime as `read` answers it: `YYYY-MM-DD HH:MM:SS`.
fn shown_datetime(stored: Value) -> Value {
    match stored {
        Value::String(s) if s.len() > 19 => Value::String(s[..19].to_string()),
        other => other,
    }
}

/// SQL `LIKE` matching with `%` and `_`.
fn like(text: &str, pattern: &str, case_insensitive: bool) -> bool {
    let (t, p): (Vec<char>, Vec<char>) = if case_insensitive {
        (text.to_lowercase().chars().collect(), pattern.to_lowercase().chars().collect())
    } else {
        (text.chars().collect(), pattern.chars().collect())
    };
    // matched[j]: the text so far matches p[..j].
    let mut matched = vec![false; p.len() + 1];
    matched[0] = true;
    for j in 1..=p.len() {
        matched[j] = matched[j - 1] && p[j - 1] == '%';
    }
    for c in &t {
        let mut next = vec![false; p.len() + 1];
        for j in 1..=p.len() {
            next[j] = match p[j - 1] {
                '%' => next[j - 1] || matched[j],
                '_' => matched[j - 1],
                pc => matched[j - 1] && pc == *c,
            };
        }
        matched = next;
    }
    matched[p.len()]
}

fn as_ids(v: &Value) -> Option<Vec<i64>> {
    match v {
        Value::Number(n) => n.as_i64().map(|i| vec![i]),
        Value::Array(items) => items.iter().map(Value::as_i64).collect(),
        Value::Bool(false) | Value::Null => Some(Vec::new()),
        _ => None,
    }
}

// ---- models ----

#[derive(Debug, Clone, Copy, PartialEq)]
enum FieldType {
    Integer,
    Float,
    Char,
    Html,
    Boolean,
    Selection,
    Datetime,
    Many2one(&'static str),
    One2many(&'static str),
    Many2many(&'static str),
}

impl FieldType {
    fn comodel(self) -> Option<&'static str> {
        match self {
            FieldType::Many2one(m) | FieldType::One2many(m) | FieldType::Many2many(m) => Some(m),
            _ => None,
        }
    }

    fn is_x2many(self) -> bool {
        matches!(self, FieldType::One2many(_) | FieldType::Many2many(_))
    }

    fn name(self) -> &'static str {
        match self {
            FieldType::Integer => "integer",
            FieldType::Float => "float",
            FieldType::Char => "char",
            FieldType::Html => "html",
            FieldType::Boolean => "boolean",
            FieldType::Selection => "selection",
            FieldType::Datetime => "datetime",
            FieldType::Many2one(_) => "many2one",
            FieldType::One2many(_) => "one2many",
            FieldType::Many2many(_) => "many2many",
        }
    }
}

struct ModelDef {
    name: &'static str,
    description: &'static str,
    order: &'static str,
    fields: &'static [(&'static str, FieldType)],
}

impl ModelDef {
    fn field(&self, name: &str) -> Option<FieldType> {
        self.fields.iter().find(|(n, _)| *n == name).map(|(_, t)| *t)
    }
}

use FieldType::*;

static MODELS: &[ModelDef] = &[
    ModelDef {
        name: "sale.order",
        description: "Sales Order",
        order: "date_order desc, id desc",
        fields: &[
            ("id", Integer),
            ("name", Char),
            ("display_name", Char),
            ("state", Selection),
            ("partner_id", Many2one("res.partner")),
            ("date_order", Datetime),
            ("create_date", Datetime),
            ("write_date", Datetime),
            ("order_line", One2many("sale.order.line")),
            ("warehouse_id", Many2one("stock.warehouse")),
            ("company_id", Many2one("res.company")),
            ("client_order_ref", Char),
            ("origin", Char),
            ("amount_untaxed", Float),
            ("amount_total", Float),
            ("tag_ids", Many2many("crm.tag")),
            ("note", Html),
            ("delivery_status", Selection),
            ("locked", Boolean),
            ("message_ids", One2many("mail.message")),
        ],
    },
    ModelDef {
        name: "sale.order.line",
        description: "Sales Order Line",
        order: "order_id, id",
        fields: &[
            ("id", Integer),
            ("display_name", Char),
            ("order_id", Many2one("sale.order")),
            ("product_id", Many2one("product.product")),
            ("name", Char),
            ("product_uom_qty", Float),
            ("qty_delivered", Float),
            ("price_unit", Float),
            ("price_subtotal", Float),
            ("state", Selection),
            ("sequence", Integer),
        ],
    },
    ModelDef {
        name: "product.product",
        description: "Product Variant",
        order: "default_code, name, id",
        fields: &[
            ("id", Integer),
            ("display_name", Char),
            ("name", Char),
            ("default_code", Char),
            ("barcode", Char),
            ("active", Boolean),
            ("sale_ok", Boolean),
            ("purchase_ok", Boolean),
            ("type", Selection),
            ("detailed_type", Selection),
            ("list_price", Float),
            ("qty_available", Float),
            ("virtual_available", Float),
            ("free_qty", Float),
            ("incoming_qty", Float),
            ("outgoing_qty", Float),
        ],
    },
    ModelDef {
        name: "stock.warehouse",
        description: "Warehouse",
        order: "id",
        fields: &[
            ("id", Integer),
            ("display_name", Char),
            ("name", Char),
            ("code", Char),
            ("lot_stock_id", Many2one("stock.location")),
            ("company_id", Many2one("res.company")),
        ],
    },
    ModelDef {
        name: "stock.location",
        description: "Inventory Locations",
        order: "complete_name, id",
        fields: &[
            ("id", Integer),
            ("display_name", Char),
            ("name", Char),
            ("complete_name", Char),
            ("usage", Selection),
            ("active", Boolean),
            ("warehouse_id", Many2one("stock.warehouse")),
            ("company_id", Many2one("res.company")),
        ],
    },
    ModelDef {
        name: "stock.quant",
        description: "Quants",
        order: "id",
        fields: &[
            ("id", Integer),
            ("display_name", Char),
            ("product_id", Many2one("product.product")),
            ("location_id", Many2one("stock.location")),
            ("warehouse_id", Many2one("stock.warehouse")),
            ("company_id", Many2one("res.company")),
            ("lot_id", Many2one("stock.lot")),
            ("package_id", Many2one("stock.quant.package")),
            ("owner_id", Many2one("res.partner")),
            ("quantity", Float),
            ("reserved_quantity", Float),
            ("available_quantity", Float),
            ("inventory_quantity", Float),
            ("inventory_diff_quantity", Float),
            ("inventory_quantity_set", Boolean),
            ("inventory_quantity_auto_apply", Float),
        ],
    },
    ModelDef {
        name: "res.partner",
        description: "Contact",
        order: "display_name, id",
        fields: &[
            ("id", Integer),
            ("display_name", Char),
            ("name", Char),
            ("email", Char),
            ("ref", Char),
            ("is_company", Boolean),
            ("company_name", Char),
            ("commercial_company_name", Char),
            ("category_id", Many2many("res.partner.category")),
            ("active", Boolean),
            ("customer_rank", Integer),
        ],
    },
    ModelDef {
        name: "res.partner.category",
        description: "Partner Tags",
        order: "name, id",
        fields: &[("id", Integer), ("display_name", Char), ("name", Char)],
    },
    ModelDef {
        name: "crm.tag",
        description: "CRM Tag",
        order: "name, id",
        fields: &[("id", Integer), ("display_name", Char), ("name", Char), ("color", Integer)],
    },
    ModelDef {
        name: "res.company",
        description: "Companies",
        order: "id",
        fields: &[("id", Integer), ("display_name", Char), ("name", Char)],
    },
    ModelDef {
        name: "mail.message",
        description: "Message",
        order: "id desc",
        fields: &[
            ("id", Integer),
            ("display_name", Char),
            ("model", Char),
            ("res_id", Integer),
            ("record_name", Char),
            ("body", Html),
            ("message_type", Selection),
            ("subtype_id", Many2one("mail.message.subtype")),
            ("author_id", Many2one("res.partner")),
            ("date", Datetime),
        ],
    },
    ModelDef {
        name: "mail.message.subtype",
        description: "Message subtypes",
        order: "id",
        fields: &[("id", Integer), ("display_name", Char), ("name", Char)],
    },
];

fn model_def(name: &str) -> Option<&'static ModelDef> {
    MODELS.iter().find(|m| m.name == name)
}

type Record = Map<String, Value>;

fn m2o(id: i64, name: &str) -> Value {
    json!([id, name])
}

/// Context keys the adapter reads.
#[derive(Default)]
struct Ctx {
    inventory_mode: bool,
    /// ERP location positions the quantities of `product.product` cover.
    locations: Option<Vec<usize>>,
}

// ---- domains ----

#[derive(Debug, Clone)]
enum DomainItem {
    And,
    Or,
    Not,
    Constant(bool),
    Leaf { path: Vec<String>, op: String, value: Value },
}

const OPERATORS: &[&str] = &[
    "=",
    "!=",
    "<>",
    ">",
    ">=",
    "<",
    "<=",
    "in",
    "not in",
    "like",
    "not like",
    "ilike",
    "not ilike",
    "=like",
    "=ilike",
    "child_of",
    "parent_of",
    "any",
    "not any",
];

fn leaf_repr(leaf: &[Value]) -> String {
    format!("({})", leaf.iter().map(py_repr).collect::<Vec<_>>().join(", "))
}

/// Parse and check a domain against `model` (fields along dotted paths included).
fn parse_domain(model: &'static ModelDef, domain: &Value) -> OdooResult<Vec<DomainItem>> {
    let items = match domain {
        Value::Null | Value::Bool(false) => return Ok(Vec::new()),
        Value::Array(items) => items,
        other => return Err(OdooError::value(format!("Invalid domain {}", py_repr(other)))),
    };
    let mut out = Vec::new();
    for item in items {
        match item {
            Value::String(s) if s == "&" => out.push(DomainItem::And),
            Value::String(s) if s == "|" => out.push(DomainItem::Or),
            Value::String(s) if s == "!" => out.push(DomainItem::Not),
            Value::Array(leaf) if leaf.len() == 3 => {
                let repr = leaf_repr(leaf);
                let op = leaf[1].as_str().map(str::to_ascii_lowercase).ok_or_else(|| OdooError::value(format!("Invalid leaf {repr}")))?;
                if let (Some(l), Some(r)) = (leaf[0].as_i64(), leaf[2].as_i64()) {
                    if op == "=" && r == 1 && (l == 0 || l == 1) {
                        out.push(DomainItem::Constant(l == 1));
                        continue;
                    }
                }
                let Some(path) = leaf[0].as_str() else {
                    return Err(OdooError::value(format!("Invalid leaf {repr}")));
                };
                if !OPERATORS.contains(&op.as_str()) {
                    return Err(OdooError::value(format!("Invalid leaf {repr}")));
                }
                let path: Vec<String> = path.split('.').map(str::to_string).collect();
                check_path(model, &path, &repr)?;
                if op == "any" || op == "not any" {
                    let last = path_type(model, &path).and_then(FieldType::comodel).and_then(model_def);
                    let Some(comodel) = last else {
                        return Err(OdooError::value(format!("Invalid leaf {repr}")));
                    };
                    parse_domain(comodel, &leaf[2])?;
                }
                out.push(DomainItem::Leaf { path, op, value: leaf[2].clone() });
            }
            other => return Err(OdooError::value(format!("Invalid domain term {}", py_repr(other)))),
        }
    }
    // Polish notation: every operator needs its operands.
    let mut depth: i64 = 0;
    for item in out.iter().rev() {
        depth += match item {
            DomainItem::And | DomainItem::Or => -1,
            DomainItem::Not => 0,
            _ => 1,
        };
        if depth < 1 {
            return Err(OdooError::value(format!("Invalid domain {}", py_repr(domain))));
        }
    }
    Ok(out)
}

fn check_path(model: &'static ModelDef, path: &[String], repr: &str) -> OdooResult<()> {
    let mut current = model;
    for (i, name) in path.iter().enumerate() {
        let Some(field) = current.field(name) else {
            return Err(OdooError::value(format!("Invalid field {}.{} in leaf {repr}", current.name, name)));
        };
        if i + 1 < path.len() {
            match field.comodel().and_then(model_def) {
                Some(next) => current = next,
                None => return Err(OdooError::value(format!("Invalid field {}.{} in leaf {repr}", current.name, path[i + 1]))),
            }
        }
    }
    Ok(())
}

fn path_type(model: &'static ModelDef, path: &[String]) -> Option<FieldType> {
    let mut current = model;
    let mut field = None;
    for name in path {
        let f = current.field(name)?;
        field = Some(f);
        if let Some(next) = f.comodel().and_then(model_def) {
            current = next;
        }
    }
    field
}

fn parse_order(model: &ModelDef, order: Option<&str>) -> OdooResult<Vec<(String, bool)>> {
    let spec = order.filter(|o| !o.trim().is_empty()).unwrap_or(model.order);
    let invalid = || {
        OdooError::user(format!(
            "Invalid \"order\" specified ({spec}). A valid \"order\" specification is a comma-separated list of valid field names (optionally followed by asc/desc for the direction)"
        ))
    };
    let parts: Vec<&str> = spec.split(',').map(str::trim).collect();
    let mut out = Vec::new();
    for part in &parts {
        let words: Vec<String> = part.split_whitespace().map(str::to_ascii_lowercase).collect();
        let Some(field) = words.first().filter(|f| f.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')) else {
            return Err(invalid());
        };
        let (descending, nulls) = match words.get(1).map(String::as_str) {
            Some("desc") => (true, &words[2..]),
            Some("asc") => (false, &words[2..]),
            _ => (false, &words[1..]),
        };
        if !(nulls.is_empty() || (nulls.len() == 2 && nulls[0] == "nulls" && (nulls[1] == "first" || nulls[1] == "last"))) {
            return Err(invalid());
        }
        match model.field(field) {
            Some(t) if !t.is_x2many() => out.push((field.to_string(), descending)),
            Some(_) => {}
            None => return Err(OdooError::value(format!("Invalid field '{field}' on model '{}'", model.name))),
        }
    }
    Ok(out)
}

/// Ordering key of a stored value: many2one by name, empty values as `None`.
fn sort_key(v: Option<&Value>) -> Option<Value> {
    match v {
        None | Some(Value::Null) | Some(Value::Bool(false)) => None,
        Some(Value::Array(pair)) if pair.len() == 2 && pair[1].is_string() => Some(pair[1].clone()),
        Some(v) => Some(v.clone()),
    }
}

fn compare_json(a: &Value, b: &Value) -> std::cmp::Ordering {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            x.as_f64().unwrap_or(0.0).partial_cmp(&y.as_f64().unwrap_or(0.0)).unwrap_or(std::cmp::Ordering::Equal)
        }
        (Value::String(x), Value::String(y)) => x.cmp(y),
        (Value::Bool(x), Value::Bool(y)) => x.cmp(y),
        (x, y) => x.to_string().cmp(&y.to_string()),
    }
}

fn equal_json(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        (x, y) => x == y,
    }
}

/// A stored scalar against a leaf, with Odoo's treatment of empty values.
fn compare_scalar(field: FieldType, stored: &Value, op: &str, value: &Value) -> bool {
    if field == FieldType::Boolean {
        let (s, v) = (truthy(stored), truthy(value));
        return match op {
            "=" => s == v,
            "!=" | "<>" => s != v,
            "in" => value.as_array().is_some_and(|a| a.iter().any(|x| truthy(x) == s)),
            "not in" => !value.as_array().is_some_and(|a| a.iter().any(|x| truthy(x) == s)),
            _ => false,
        };
    }
    let empty = matches!(stored, Value::Null | Value::Bool(false));
    let text = |v: &Value| match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        _ => String::new(),
    };
    let in_list = || {
        value.as_array().is_some_and(|a| {
            a.iter().any(|x| if matches!(x, Value::Bool(false) | Value::Null) { empty } else { !empty && equal_json(stored, x) })
        })
    };
    match op {
        "=" if !truthy(value) && !value.is_number() && !value.is_string() => empty,
        "=" => !empty && equal_json(stored, value),
        "!=" | "<>" if !truthy(value) && !value.is_number() && !value.is_string() => !empty,
        "!=" | "<>" => empty || !equal_json(stored, value),
        ">" => !empty && compare_json(stored, value).is_gt(),
        ">=" => !empty && compare_json(stored, value).is_ge(),
        "<" => !empty && compare_json(stored, value).is_lt(),
        "<=" => !empty && compare_json(stored, value).is_le(),
        "in" | "child_of" | "parent_of" => in_list(),
        "not in" => !in_list(),
        "like" => !empty && like(&text(stored), &format!("%{}%", text(value)), false),
        "ilike" => !empty && like(&text(stored), &format!("%{}%", text(value)), true),
        "not like" => empty || !like(&text(stored), &format!("%{}%", text(value)), false),
        "not ilike" => empty || !like(&text(stored), &format!("%{}%", text(value)), true),
        "=like" => !empty && like(&text(stored), &text(value), false),
        "=ilike" => !empty && like(&text(stored), &text(value), true),
        _ => false,
    }
}

// ---- the simulator ----

impl OdooSim {
    pub fn new(ctx: &SimContext) -> Arc<Self> {
        Arc::new(OdooSim {
            erp: ctx.erp.clone(),
            faults: ctx.faults.clone(),
            creds: OdooCredentials {
                database: "arcade".into(),
                login: "admin@arcade-supply.example".into(),
                api_key: crate::sandbox::random_hex(20),
            },
            logins: AtomicU64::new(0),
            key_revoked: AtomicBool::new(false),
            state: Mutex::new(OdooState::default()),
        })
    }

    /// Successful `authenticate` calls so far.
    pub fn logins(&self) -> u64 {
        self.logins.load(Ordering::Relaxed)
    }

    /// The user deletes the API key: every call is refused until it is restored.
    pub fn revoke_api_key(&self) {
        self.key_revoked.store(true, Ordering::Relaxed);
    }

    pub fn restore_api_key(&self) {
        self.key_revoked.store(false, Ordering::Relaxed);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, OdooState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn key_ok(&self, key: &Value) -> bool {
        key.as_str() == Some(self.creds.api_key.as_str()) && !self.key_revoked.load(Ordering::Relaxed)
    }

    fn check_db(&self, db: &Value) -> OdooResult<()> {
        if db.as_str() == Some(self.creds.database.as_str()) {
            return Ok(());
        }
        let name = db.as_str().map_or_else(|| py_repr(db), str::to_string);
        Err(OdooError::new(
            "psycopg2.OperationalError",
            format!("connection to server at \"localhost\" (127.0.0.1), port 5432 failed: FATAL:  database \"{name}\" does not exist\n"),
        ))
    }

    // ---- services ----

    fn dispatch(&self, service: &str, method: &str, args: &[Value]) -> OdooResult<Value> {
        match service {
            "common" => self.common(method, args),
            "object" => self.object(method, args),
            "db" => match method {
                "list" => Ok(json!([self.creds.database])),
                "server_version" => Ok(json!("17.0")),
                other => Err(OdooError::new("builtins.Exception", format!("Method not found: {other}"))),
            },
            other => Err(OdooError::new("builtins.KeyError", format!("'{other}'"))),
        }
    }

    fn common(&self, method: &str, args: &[Value]) -> OdooResult<Value> {
        let arity = |name: &str, names: &[&str]| -> OdooResult<()> {
            if args.len() < names.len() {
                let missing = &names[args.len()..];
                let list = missing.iter().map(|n| format!("'{n}'")).collect::<Vec<_>>().join(" and ");
                return Err(OdooError::type_error(format!(
                    "exp_{name}() missing {} required positional argument{}: {list}",
                    missing.len(),
                    if missing.len() == 1 { "" } else { "s" }
                )));
            }
            if args.len() > names.len() {
                return Err(OdooError::type_error(format!(
                    "exp_{name}() takes {} positional arguments but {} were given",
                    names.len(),
                    args.len()
                )));
            }
            Ok(())
        };
        match method {
            "version" => Ok(json!({"server_version": "17.0", "server_version_info": [17, 0, 0, "final", 0, ""],
                                   "server_serie": "17.0", "protocol_version": 1})),
            "authenticate" | "login" => {
                if method == "authenticate" {
                    arity("authenticate", &["db", "login", "password", "user_agent_env"])?;
                } else {
                    arity("login", &["db", "login", "password"])?;
                }
                self.check_db(&args[0])?;
                if args[1].as_str() == Some(self.creds.login.as_str()) && self.key_ok(&args[2]) {
                    self.logins.fetch_add(1, Ordering::Relaxed);
                    Ok(json!(UID))
                } else {
                    Ok(json!(false))
                }
            }
            other => Err(OdooError::new("builtins.Exception", format!("Method not found: {other}"))),
        }
    }

    fn object(&self, method: &str, params: &[Value]) -> OdooResult<Value> {
        if params.len() < 3 {
            return Err(OdooError::new("builtins.IndexError", "list index out of range"));
        }
        let uid = match &params[1] {
            Value::Number(n) => n.as_i64().unwrap_or(0),
            Value::Bool(b) => i64::from(*b),
            Value::String(s) => s.trim().parse().map_err(|_| OdooError::value(format!("invalid literal for int() with base 10: '{s}'")))?,
            other => {
                return Err(OdooError::type_error(format!(
                    "int() argument must be a string, a bytes-like object or a real number, not '{}'",
                    py_type(other)
                )));
            }
        };
        self.check_db(&params[0])?;
        if uid != UID || !self.key_ok(&params[2]) {
            return Err(OdooError::access_denied());
        }
        let rest = &params[3..];
        let (model, model_method, args, kwargs) = match method {
            "execute_kw" => {
                if rest.len() < 3 {
                    let missing = ["obj", "method", "args"][rest.len()..].iter().map(|n| format!("'{n}'")).collect::<Vec<_>>();
                    return Err(OdooError::type_error(format!(
                        "execute_kw() missing {} required positional argument{}: {}",
                        missing.len(),
                        if missing.len() == 1 { "" } else { "s" },
                        missing.join(" and ")
                    )));
                }
                let args = match &rest[2] {
                    Value::Array(a) => a.clone(),
                    other => {
                        return Err(OdooError::type_error(format!(
                            "odoo.service.model.execute() argument after * must be an iterable, not {}",
                            py_type(other)
                        )));
                    }
                };
                let kwargs = match rest.get(3) {
                    None | Some(Value::Null) => Map::new(),
                    Some(Value::Object(m)) => m.clone(),
                    Some(other) => {
                        return Err(OdooError::type_error(format!("argument after ** must be a mapping, not {}", py_type(other))));
                    }
                };
                (&rest[0], &rest[1], args, kwargs)
            }
            "execute" => {
                if rest.len() < 2 {
                    return Err(OdooError::type_error("execute() missing 2 required positional arguments: 'obj' and 'method'"));
                }
                (&rest[0], &rest[1], rest[2..].to_vec(), Map::new())
            }
            other => return Err(OdooError::new("builtins.NameError", format!("Method not available {other}"))),
        };
        let (Some(model), Some(model_method)) = (model.as_str(), model_method.as_str()) else {
            return Err(OdooError::type_error("unhashable type"));
        };
        self.call(model, model_method, args, kwargs)
    }

    // ---- the ORM ----

    fn call(&self, model: &str, method: &str, args: Vec<Value>, mut kwargs: Map<String, Value>) -> OdooResult<Value> {
        if method.starts_with('_') || method == "init" {
            return Err(OdooError::access(format!("Private methods (such as {method}) cannot be called remotely.")));
        }
        let Some(def) = model_def(model) else {
            return Err(OdooError::user(format!("Object {model} doesn't exist")));
        };
        let ctx = self.context(kwargs.remove("context"));
        self.sync_orders();
        match method {
            "search_read" => {
                let v = bind(method, &args, &kwargs, &["domain", "fields", "offset", "limit", "order"], 0, &["load"])?;
                let load = kwargs.get("load").is_none_or(truthy);
                let found = self.search(def, &v[0], &v[2], &v[3], v[4].as_str(), &ctx)?;
                let fields = field_list(def, &v[1])?;
                Ok(Value::Array(found.into_iter().map(|r| project(def, r, fields.as_deref(), load)).collect()))
            }
            "search" => {
                let v = bind(method, &args, &kwargs, &["domain", "offset", "limit", "order"], 1, &[])?;
                let found = self.search(def, &v[0], &v[1], &v[2], v[3].as_str(), &ctx)?;
                Ok(Value::Array(found.iter().map(|r| r.get("id").cloned().unwrap_or(Value::Null)).collect()))
            }
            "search_count" => {
                let v = bind(method, &args, &kwargs, &["domain", "limit"], 1, &[])?;
                let found = self.search(def, &v[0], &Value::Null, &v[1], Some("id"), &ctx)?;
                Ok(json!(found.len()))
            }
            "name_search" => {
                let v = bind(method, &args, &kwargs, &["name", "args", "operator", "limit"], 0, &[])?;
                let name = v[0].as_str().unwrap_or("").to_string();
                let operator = v[2].as_str().unwrap_or("ilike").to_string();
                let limit = if v[3].is_null() { json!(100) } else { v[3].clone() };
                let mut domain = v[1].as_array().cloned().unwrap_or_default();
                if !name.is_empty() {
                    domain.push(json!(["display_name", operator, name]));
                }
                let found = self.search(def, &Value::Array(domain), &Value::Null, &limit, None, &ctx)?;
                Ok(Value::Array(found.iter().map(|r| json!([r.get("id"), r.get("display_name")])).collect()))
            }
            "fields_get" => {
                let v = bind(method, &args, &kwargs, &["allfields", "attributes"], 0, &[])?;
                let wanted: Option<Vec<String>> =
                    v[0].as_array().map(|a| a.iter().filter_map(|s| s.as_str().map(str::to_string)).collect());
                let out: Map<String, Value> = def
                    .fields
                    .iter()
                    .filter(|(n, _)| wanted.as_ref().is_none_or(|w| w.iter().any(|x| x == n)))
                    .map(|(n, t)| {
                        let mut d = json!({"type": t.name(), "string": n.replace('_', " "), "readonly": *n == "id"});
                        if let Some(c) = t.comodel() {
                            d["relation"] = json!(c);
                        }
                        (n.to_string(), d)
                    })
                    .collect();
                Ok(Value::Object(out))
            }
            "read" => {
                let (ids, rest) = split_ids(&args)?;
                let v = bind(method, &rest, &kwargs, &["fields", "load"], 0, &[])?;
                let fields = field_list(def, &v[0])?;
                let load = kwargs.get("load").or(rest.get(1)).is_none_or(truthy);
                let records = self.existing(def, &ids, &ctx)?;
                Ok(Value::Array(records.into_iter().map(|r| project(def, r, fields.as_deref(), load)).collect()))
            }
            "write" => {
                let (ids, rest) = split_ids(&args)?;
                let v = bind(method, &rest, &kwargs, &["vals"], 1, &[])?;
                let Value::Object(vals) = &v[0] else {
                    return Err(OdooError::new("builtins.AttributeError", format!("'{}' object has no attribute 'items'", py_type(&v[0]))));
                };
                for key in vals.keys() {
                    if def.field(key).is_none() {
                        return Err(OdooError::value(format!("Invalid field '{key}' on model '{}'", def.name)));
                    }
                }
                match def.name {
                    "sale.order" => self.write_orders(&ids, vals, &ctx),
                    "stock.quant" => self.write_quants(&ids, vals, &ctx),
                    _ => Err(not_allowed(def, "modify")),
                }
            }
            "create" => {
                let v = bind(method, &args, &kwargs, &["vals_list"], 1, &[])?;
                let (list, single) = match &v[0] {
                    Value::Object(m) => (vec![m.clone()], true),
                    Value::Array(a) => (a.iter().filter_map(|x| x.as_object().cloned()).collect(), false),
                    other => return Err(OdooError::type_error(format!("'{}' object is not iterable", py_type(other)))),
                };
                let ids = match def.name {
                    "stock.quant" => self.create_quants(&list, &ctx)?,
                    "crm.tag" => self.create_tags(&list)?,
                    _ => return Err(not_allowed(def, "create")),
                };
                Ok(if single { json!(ids[0]) } else { json!(ids) })
            }
            "unlink" | "copy" => Err(not_allowed(def, if method == "unlink" { "delete" } else { "create" })),
            "action_confirm" | "action_cancel" | "message_post" if def.name == "sale.order" => {
                let (ids, rest) = split_ids(&args)?;
                match method {
                    "action_confirm" => {
                        bind(method, &rest, &kwargs, &[], 0, &[])?;
                        self.confirm(&ids, &ctx)
                    }
                    "action_cancel" => {
                        bind(method, &rest, &kwargs, &[], 0, &[])?;
                        self.cancel(&ids, &ctx)
                    }
                    _ => {
                        if !rest.is_empty() {
                            return Err(OdooError::type_error(format!(
                                "MailThread.message_post() takes 1 positional argument but {} were given",
                                rest.len() + 1
                            )));
                        }
                        self.message_post(&ids, &kwargs, &ctx)
                    }
                }
            }
            "action_apply_inventory" if def.name == "stock.quant" => {
                let (ids, rest) = split_ids(&args)?;
                bind(method, &rest, &kwargs, &[], 0, &[])?;
                self.apply_inventory(&ids, &ctx)
            }
            other => {
                Err(OdooError::new("builtins.AttributeError", format!("The method '{other}' does not exist on the model '{}'", def.name)))
            }
        }
    }

    fn context(&self, raw: Option<Value>) -> Ctx {
        let raw = raw.and_then(|v| v.as_object().cloned()).unwrap_or_default();
        let mut ctx = Ctx { inventory_mode: raw.get("inventory_mode").is_some_and(truthy), locations: None };
        let ids = |key: &str| raw.get(key).and_then(as_ids).filter(|ids| !ids.is_empty());
        let count = self.erp.locations().len();
        if let Some(locations) = ids("location") {
            ctx.locations = Some(locations.iter().filter_map(|id| location_position(*id, count)).collect());
        } else if let Some(warehouses) = ids("warehouse") {
            ctx.locations = Some(warehouses.iter().filter_map(|id| usize::try_from(id - 1).ok().filter(|p| *p < count)).collect());
        }
        ctx
    }

    /// Records of `def` matching `domain`, ordered, then `offset`/`limit`.
    fn search(
        &self,
        def: &'static ModelDef,
        domain: &Value,
        offset: &Value,
        limit: &Value,
        order: Option<&str>,
        ctx: &Ctx,
    ) -> OdooResult<Vec<Record>> {
        let items = parse_domain(def, domain)?;
        let order = parse_order(def, order)?;
        let offset = offset.as_u64().unwrap_or(0) as usize;
        let limit = limit.as_u64().filter(|l| *l > 0).map_or(usize::MAX, |l| l as usize);
        let candidates = narrow(self, def, &items);
        let mut records: Vec<Record> =
            self.records(def.name, candidates.as_deref(), ctx).into_iter().filter(|r| self.matches(def, r, &items, ctx)).collect();
        records.sort_by(|a, b| {
            for (field, descending) in &order {
                let (x, y) = (sort_key(a.get(field)), sort_key(b.get(field)));
                // PostgreSQL: empty values last ascending, first descending.
                let ordering = match (&x, &y) {
                    (None, None) => std::cmp::Ordering::Equal,
                    (None, Some(_)) => std::cmp::Ordering::Greater,
                    (Some(_), None) => std::cmp::Ordering::Less,
                    (Some(x), Some(y)) => compare_json(x, y),
                };
                let ordering = if *descending { ordering.reverse() } else { ordering };
                if ordering.is_ne() {
                    return ordering;
                }
            }
            compare_json(a.get("id").unwrap_or(&Value::Null), b.get("id").unwrap_or(&Value::Null))
        });
        Ok(records.into_iter().skip(offset).take(limit).collect())
    }

    /// The records behind `ids`, in that order, or `MissingError`.
    fn existing(&self, def: &'static ModelDef, ids: &[i64], ctx: &Ctx) -> OdooResult<Vec<Record>> {
        let found = self.records(def.name, Some(ids), ctx);
        let by_id: HashMap<i64, &Record> = found.iter().filter_map(|r| Some((r.get("id")?.as_i64()?, r))).collect();
        let missing: Vec<i64> = ids.iter().copied().filter(|id| !by_id.contains_key(id)).collect();
        if !missing.is_empty() {
            return Err(OdooError::missing(def.name, &missing));
        }
        let mut seen = BTreeSet::new();
        Ok(ids.iter().filter(|id| seen.insert(**id)).filter_map(|id| by_id.get(id).map(|r| (*r).clone())).collect())
    }

    fn matches(&self, def: &'static ModelDef, record: &Record, items: &[DomainItem], ctx: &Ctx) -> bool {
        let mut stack: Vec<bool> = Vec::new();
        for item in items.iter().rev() {
            let v = match item {
                DomainItem::Constant(b) => *b,
                DomainItem::Leaf { path, op, value } => self.leaf(def, record, path, op, value, ctx),
                DomainItem::Not => !stack.pop().unwrap_or(true),
                DomainItem::And => {
                    let (a, b) = (stack.pop().unwrap_or(true), stack.pop().unwrap_or(true));
                    a && b
                }
                DomainItem::Or => {
                    let (a, b) = (stack.pop().unwrap_or(false), stack.pop().unwrap_or(false));
                    a || b
                }
            };
            stack.push(v);
        }
        stack.into_iter().all(|b| b)
    }

    fn leaf(&self, def: &'static ModelDef, record: &Record, path: &[String], op: &str, value: &Value, ctx: &Ctx) -> bool {
        let Some(field) = def.field(&path[0]) else { return false };
        let stored = record.get(&path[0]).cloned().unwrap_or(Value::Bool(false));
        let related = |stored: &Value| -> Vec<i64> {
            match stored {
                Value::Array(pair) if matches!(field, FieldType::Many2one(_)) => pair.first().and_then(Value::as_i64).into_iter().collect(),
                Value::Array(ids) => ids.iter().filter_map(Value::as_i64).collect(),
                Value::Number(n) => n.as_i64().into_iter().collect(),
                _ => Vec::new(),
            }
        };
        let comodel = field.comodel().and_then(model_def);
        if path.len() > 1 || op == "any" || op == "not any" {
            let Some(comodel) = comodel else { return false };
            let targets = self.records(comodel.name, Some(&related(&stored)), ctx);
            if op == "any" || op == "not any" {
                let sub = parse_domain(comodel, value).unwrap_or_default();
                let any = targets.iter().any(|r| self.matches(comodel, r, &sub, ctx));
                return (op == "any") == any;
            }
            return targets.iter().any(|r| self.leaf(comodel, r, &path[1..], op, value, ctx));
        }
        match field {
            FieldType::Many2one(_) | FieldType::One2many(_) | FieldType::Many2many(_) => {
                let ids = related(&stored);
                let names = || -> Vec<String> {
                    comodel.map_or_else(Vec::new, |c| {
                        self.records(c.name, Some(&ids), ctx)
                            .iter()
                            .filter_map(|r| r.get("display_name")?.as_str().map(str::to_string))
                            .collect()
                    })
                };
                let wanted_ids = |v: &Value| -> Option<Vec<i64>> {
                    match v {
                        Value::Number(n) => n.as_i64().map(|i| vec![i]),
                        Value::Array(a) if a.iter().all(Value::is_i64) => Some(a.iter().filter_map(Value::as_i64).collect()),
                        _ => None,
                    }
                };
                let empty_value = matches!(value, Value::Bool(false) | Value::Null);
                match op {
                    "=" | "in" | "child_of" | "parent_of" if empty_value => ids.is_empty(),
                    "!=" | "<>" | "not in" if empty_value => !ids.is_empty(),
                    "=" | "in" | "child_of" | "parent_of" | "!=" | "<>" | "not in" => {
                        let positive = matches!(op, "=" | "in" | "child_of" | "parent_of");
                        let hit = match wanted_ids(value) {
                            Some(wanted) => ids.iter().any(|i| wanted.contains(i)),
                            None => {
                                let wanted: Vec<String> = match value {
                                    Value::Array(a) => a.iter().filter_map(|x| x.as_str().map(str::to_string)).collect(),
                                    Value::String(s) => vec![s.clone()],
                                    _ => Vec::new(),
                                };
                                names().iter().any(|n| wanted.contains(n))
                            }
                        };
                        if positive { hit } else { !hit }
                    }
                    ">" | ">=" | "<" | "<=" => ids.iter().any(|i| compare_scalar(FieldType::Integer, &json!(i), op, value)),
                    _ => {
                        let names = names();
                        if op.starts_with("not") {
                            names.iter().all(|n| compare_scalar(FieldType::Char, &json!(n), op, value))
                        } else {
                            names.iter().any(|n| compare_scalar(FieldType::Char, &json!(n), op, value))
                        }
                    }
                }
            }
            scalar => compare_scalar(scalar, &stored, op, value),
        }
    }

    // ---- records ----

    /// Every record of `model` (or those of `ids`), in classic `read` form.
    fn records(&self, model: &str, ids: Option<&[i64]>, ctx: &Ctx) -> Vec<Record> {
        let wanted = |id: i64| ids.is_none_or(|ids| ids.contains(&id));
        let to_records = |values: Vec<Value>| -> Vec<Record> {
            values
                .into_iter()
                .filter_map(|v| if let Value::Object(m) = v { Some(m) } else { None })
                .filter(|m| m.get("id").and_then(Value::as_i64).is_some_and(wanted))
                .collect()
        };
        match model {
            "sale.order" => {
                let messages = self.lock().messages.clone();
                self.odoo_orders().iter().filter(|o| wanted(o.number as i64)).map(|o| self.order_record(o, &messages)).collect()
            }
            "sale.order.line" => self
                .odoo_orders()
                .iter()
                .flat_map(|o| (0..o.lines.len()).map(move |i| (o, i)))
                .filter(|(o, i)| wanted(line_id(o, *i)))
                .map(|(o, i)| self.line_record(o, i))
                .collect(),
            "product.product" => {
                let products: Vec<Product> = match ids {
                    Some(ids) => ids.iter().filter_map(|id| u64::try_from(*id).ok()).filter_map(|id| self.erp.product_by_id(id + PRODUCT_ID_BASE)).collect(),
                    None => self.erp.products(),
                };
                products.iter().map(|p| self.product_record(p, ctx)).collect()
            }
            "stock.warehouse" => to_records(self.erp.locations().iter().enumerate().map(|(i, l)| {
                let (lid, lname) = stock_location(i);
                json!({"id": i + 1, "display_name": l.name, "name": l.name, "code": warehouse_code(i), "lot_stock_id": m2o(lid, &lname),
                       "company_id": m2o(COMPANY.0, COMPANY.1)})
            }).collect()),
            "stock.location" => {
                let mut all = vec![
                    json!({"id": 4, "display_name": "Partners/Vendors", "name": "Vendors", "complete_name": "Partners/Vendors", "usage": "supplier",
                           "active": true, "warehouse_id": false, "company_id": false}),
                    json!({"id": 5, "display_name": "Partners/Customers", "name": "Customers", "complete_name": "Partners/Customers",
                           "usage": "customer", "active": true, "warehouse_id": false, "company_id": false}),
                ];
                all.extend(self.erp.locations().iter().enumerate().map(|(i, l)| {
                    let (id, name) = stock_location(i);
                    json!({"id": id, "display_name": name, "name": "Stock", "complete_name": name, "usage": "internal", "active": true,
                           "warehouse_id": m2o(i as i64 + 1, &l.name), "company_id": m2o(COMPANY.0, COMPANY.1)})
                }));
                to_records(all)
            }
            "stock.quant" => self.quant_records(ids),
            "res.partner" => {
                let tags = partner_tags(&self.erp);
                let mut all = vec![json!({"id": ADMIN_PARTNER, "display_name": "Administrator", "name": "Administrator", "email": self.creds.login,
                    "ref": false, "is_company": false, "company_name": false, "commercial_company_name": COMPANY.1, "category_id": [],
                    "active": true, "customer_rank": 0})];
                all.extend(self.erp.customers().iter().enumerate().map(|(i, c)| {
                    let name = format!("{} {}", c.first_name, c.last_name);
                    let company = (!c.company.is_empty()).then(|| c.company.clone());
                    let category: Vec<i64> = c.tags.iter().filter_map(|t| tags.iter().position(|x| x == t).map(|p| p as i64 + 1)).collect();
                    json!({"id": FIRST_CUSTOMER_PARTNER + i as i64, "display_name": company.as_ref().map_or_else(|| name.clone(), |co| format!("{co}, {name}")),
                           "name": name, "email": c.email, "ref": false, "is_company": false,
                           "company_name": company.clone().map_or(Value::Bool(false), Value::String),
                           "commercial_company_name": company.unwrap_or_else(|| name.clone()), "category_id": category, "active": true,
                           "customer_rank": 1})
                }));
                to_records(all)
            }
            "res.partner.category" => to_records(
                partner_tags(&self.erp).iter().enumerate().map(|(i, t)| json!({"id": i + 1, "display_name": t, "name": t})).collect(),
            ),
            "crm.tag" => {
                let tags = self.lock().tags.clone();
                to_records(tags.iter().enumerate().map(|(i, t)| json!({"id": i + 1, "display_name": t, "name": t, "color": 0})).collect())
            }
            "res.company" => to_records(vec![json!({"id": COMPANY.0, "display_name": COMPANY.1, "name": COMPANY.1})]),
            "mail.message.subtype" => to_records(vec![
                json!({"id": 1, "display_name": "Discussions", "name": "Discussions"}),
                json!({"id": 2, "display_name": "Note", "name": "Note"}),
            ]),
            "mail.message" => {
                let messages = self.lock().messages.clone();
                to_records(
                    messages
                        .iter()
                        .map(|m| {
                            json!({"id": m.id, "display_name": m.record_name, "model": "sale.order", "res_id": m.res_id, "record_name": m.record_name,
                                   "body": m.body, "message_type": m.message_type,
                                   "subtype_id": m2o(m.subtype, if m.subtype == 2 { "Note" } else { "Discussions" }),
                                   "author_id": m2o(ADMIN_PARTNER, "Administrator"), "date": m.date})
                        })
                        .collect(),
                )
            }
            // `stock.lot`, `stock.quant.package`: no records.
            _ => Vec::new(),
        }
    }

    /// This platform's orders, first seen as drafts (their commitment released)
    /// and with changes made through the control API stamped into `write_date`.
    fn sync_orders(&self) {
        for o in self.erp.orders().into_iter().filter(|o| o.platform == NAME) {
            let first_sight = !o.extra.contains_key("odoo_state");
            if first_sight && o.state != OrderState::Cancelled && !o.extra.contains_key("fulfilled") {
                self.erp.release_commitment(o.id);
            }
            let signature = format!("{}:{}", order_state(&o), o.extra.contains_key("fulfilled"));
            if !first_sight && o.extra.get("odoo_seen").and_then(Value::as_str) == Some(signature.as_str()) {
                continue;
            }
            let now = now_odoo();
            self.erp.update_order(o.id, |o| {
                if first_sight {
                    let state = if o.extra.contains_key("fulfilled") { "sale" } else { "draft" };
                    o.extra.insert("odoo_state".into(), json!(state));
                    o.extra.insert("odoo_write_date".into(), json!(odoo_datetime_of(&o.created_at)));
                    if o.state == OrderState::Cancelled || o.extra.contains_key("fulfilled") {
                        o.extra.insert("odoo_write_date".into(), json!(now));
                    }
                } else {
                    o.extra.insert("odoo_write_date".into(), json!(now));
                }
                let signature = format!("{}:{}", order_state(o), o.extra.contains_key("fulfilled"));
                o.extra.insert("odoo_seen".into(), json!(signature));
            });
        }
    }

    fn odoo_orders(&self) -> Vec<SimOrder> {
        self.erp.orders().into_iter().filter(|o| o.platform == NAME).collect()
    }

    fn order_by_id(&self, id: i64) -> Option<SimOrder> {
        self.odoo_orders().into_iter().find(|o| o.number as i64 == id)
    }

    fn partner_of(&self, o: &SimOrder) -> Value {
        let customers = self.erp.customers();
        let position = customers.iter().position(|c| c.id == o.customer.id).unwrap_or(0);
        let c = &o.customer;
        let name = format!("{} {}", c.first_name, c.last_name);
        let display = if c.company.is_empty() { name } else { format!("{}, {name}", c.company) };
        m2o(FIRST_CUSTOMER_PARTNER + position as i64, &display)
    }

    fn order_record(&self, o: &SimOrder, messages: &[Message]) -> Record {
        let state = order_state(o);
        let location_position = self.erp.locations().iter().position(|l| l.id == o.location).unwrap_or(0);
        let warehouse_name = self.erp.locations().get(location_position).map(|l| l.name.clone()).unwrap_or_else(|| "WH".into());
        let total: f64 = o.lines.iter().map(|l| unit_price(&self.erp, &l.sku) * l.qty as f64).sum();
        let tags: Vec<i64> = {
            let mut st = self.lock();
            o.tags.iter().map(|t| tag_id(&mut st.tags, t)).collect()
        };
        let text = |key: &str| o.extra.get(key).cloned().filter(truthy).unwrap_or(Value::Bool(false));
        let delivery = match state {
            "sale" if o.extra.contains_key("fulfilled") => json!("full"),
            "sale" => json!("pending"),
            _ => Value::Bool(false),
        };
        let created = odoo_datetime_of(&o.created_at);
        let mut message_ids: Vec<i64> = messages.iter().filter(|m| m.res_id == o.number as i64).map(|m| m.id).collect();
        message_ids.reverse();
        let json = json!({
            "id": o.number, "name": order_name(o), "display_name": order_name(o), "state": state,
            "partner_id": self.partner_of(o),
            "date_order": o.extra.get("odoo_date_order").cloned().unwrap_or_else(|| json!(created)),
            "create_date": created,
            "write_date": o.extra.get("odoo_write_date").cloned().unwrap_or_else(|| json!(created)),
            "order_line": (0..o.lines.len()).map(|i| line_id(o, i)).collect::<Vec<_>>(),
            "warehouse_id": m2o(location_position as i64 + 1, &warehouse_name),
            "company_id": m2o(COMPANY.0, COMPANY.1),
            "client_order_ref": text("odoo_client_order_ref"), "origin": text("odoo_origin"),
            "amount_untaxed": total, "amount_total": total, "tag_ids": tags, "note": text("odoo_note"),
            "delivery_status": delivery, "locked": false, "message_ids": message_ids,
        });
        json.as_object().cloned().unwrap_or_default()
    }

    fn line_record(&self, o: &SimOrder, i: usize) -> Record {
        let l = &o.lines[i];
        let product = self.erp.product_by_sku(&l.sku);
        let (pid, label) = product.as_ref().map_or((0, l.sku.clone()), |p| (odoo_product_id(p), product_label(p)));
        let price = unit_price(&self.erp, &l.sku);
        let qty = l.qty as f64;
        let json = json!({
            "id": line_id(o, i), "display_name": format!("{} - {label}", order_name(o)),
            "order_id": m2o(o.number as i64, &order_name(o)), "product_id": m2o(pid, &label), "name": label,
            "product_uom_qty": qty, "qty_delivered": if o.extra.contains_key("fulfilled") { qty } else { 0.0 },
            "price_unit": price, "price_subtotal": price * qty, "state": order_state(o), "sequence": 10,
        });
        json.as_object().cloned().unwrap_or_default()
    }

    /// On hand, committed and incoming of `sku` over the context's locations.
    fn quantities(&self, sku: &str, ctx: &Ctx) -> (f64, f64, f64) {
        let locations = self.erp.locations();
        let mut out = (0.0, 0.0, 0.0);
        for (location, level) in self.erp.levels(sku) {
            let position = locations.iter().position(|l| l.id == location.id).unwrap_or(0);
            if ctx.locations.as_ref().is_some_and(|wanted| !wanted.contains(&position)) {
                continue;
            }
            out = (out.0 + level.on_hand as f64, out.1 + level.committed as f64, out.2 + level.incoming as f64);
        }
        out
    }

    fn product_record(&self, p: &Product, ctx: &Ctx) -> Record {
        let (on_hand, committed, incoming) = self.quantities(&p.sku, ctx);
        let json = json!({
            "id": odoo_product_id(p), "display_name": product_label(p), "name": p.title, "default_code": p.sku, "barcode": false,
            "active": true, "sale_ok": !p.discontinued, "purchase_ok": true, "type": "product", "detailed_type": "product",
            "list_price": p.price.parse::<f64>().unwrap_or(0.0),
            "qty_available": on_hand, "virtual_available": on_hand - committed + incoming, "free_qty": on_hand - committed,
            "incoming_qty": incoming, "outgoing_qty": committed,
        });
        json.as_object().cloned().unwrap_or_default()
    }

    /// Quants: one per product and stock location holding, reserving or counting stock.
    fn quant_records(&self, ids: Option<&[i64]>) -> Vec<Record> {
        let locations = self.erp.locations();
        let counts = self.lock().counts.clone();
        let products: Vec<Product> = match ids {
            Some(ids) => {
                let mut seen = BTreeSet::new();
                ids.iter()
                    .filter_map(|q| u64::try_from(q.div_euclid(100)).ok())
                    .filter(|p| seen.insert(*p))
                    .filter_map(|p| self.erp.product_by_id(p + PRODUCT_ID_BASE))
                    .collect()
            }
            None => self.erp.products(),
        };
        let mut out = Vec::new();
        for p in &products {
            let levels = self.erp.levels(&p.sku);
            for (position, location) in locations.iter().enumerate() {
                let id = quant_id(p, position);
                if ids.is_some_and(|ids| !ids.contains(&id)) {
                    continue;
                }
                let level = levels.iter().find(|(l, _)| l.id == location.id).map(|(_, l)| l.clone()).unwrap_or_default();
                let count = counts.get(&id).copied();
                if level.on_hand == 0 && level.committed == 0 && count.is_none() {
                    continue;
                }
                let (on_hand, reserved) = (level.on_hand as f64, level.committed as f64);
                let (lid, lname) = stock_location(position);
                let json = json!({
                    "id": id, "display_name": product_label(p), "product_id": m2o(odoo_product_id(p), &product_label(p)),
                    "location_id": m2o(lid, &lname), "warehouse_id": m2o(position as i64 + 1, &location.name),
                    "company_id": m2o(COMPANY.0, COMPANY.1), "lot_id": false, "package_id": false, "owner_id": false,
                    "quantity": on_hand, "reserved_quantity": reserved, "available_quantity": on_hand - reserved,
                    "inventory_quantity": count.unwrap_or(0.0), "inventory_diff_quantity": count.map_or(0.0, |c| c - on_hand),
                    "inventory_quantity_set": count.is_some(), "inventory_quantity_auto_apply": on_hand,
                });
                if let Value::Object(m) = json {
                    out.push(m);
                }
            }
        }
        out
    }

    // ---- writes ----

    fn write_orders(&self, ids: &[i64], vals: &Map<String, Value>, ctx: &Ctx) -> OdooResult<Value> {
        let def = model_def("sale.order").expect("declared above");
        let orders = self.existing(def, ids, ctx)?;
        let mut new_tags: Option<Vec<i64>> = None;
        if let Some(commands) = vals.get("tag_ids") {
            let known = self.lock().tags.len() as i64;
            new_tags = Some(Vec::new());
            for record in &orders {
                let current: Vec<i64> = record.get("tag_ids").and_then(as_ids).unwrap_or_default();
                let next = apply_x2many(current, commands, |name| self.tag_for(name))?;
                if let Some(bad) = next.iter().find(|id| **id < 1 || **id > known.max(self.lock().tags.len() as i64)) {
                    return Err(OdooError::missing("crm.tag", &[*bad]));
                }
                new_tags = Some(next);
            }
        }
        let now = now_odoo();
        for record in &orders {
            let Some(order) = record.get("id").and_then(Value::as_i64).and_then(|id| self.order_by_id(id)) else { continue };
            let key = format!("{NAME}:write:{}:{}", order.number, Value::Object(vals.clone()));
            self.erp.effect(NAME, "order_write", Some(order.id), &key, Value::Object(vals.clone()));
            let tag_names: Option<Vec<String>> = new_tags.as_ref().map(|ids| {
                let st = self.lock();
                ids.iter().filter_map(|id| st.tags.get(usize::try_from(id - 1).ok()?).cloned()).collect()
            });
            self.erp.update_order(order.id, |o| {
                for field in ["note", "client_order_ref", "origin"] {
                    if let Some(v) = vals.get(field) {
                        o.extra.insert(format!("odoo_{field}"), v.clone());
                    }
                }
                if let Some(names) = &tag_names {
                    o.tags = names.iter().cloned().collect();
                }
                o.extra.insert("odoo_write_date".into(), json!(now));
            });
        }
        Ok(json!(true))
    }

    fn tag_for(&self, name: &str) -> i64 {
        tag_id(&mut self.lock().tags, name)
    }

    fn create_tags(&self, list: &[Map<String, Value>]) -> OdooResult<Vec<i64>> {
        let mut ids = Vec::new();
        for vals in list {
            let Some(name) = vals.get("name").and_then(Value::as_str) else {
                return Err(OdooError::new(
                    "odoo.exceptions.ValidationError",
                    "The operation cannot be completed:\n- Create/update: a mandatory field is not set.\n- Delete: another model requires the record being deleted. If possible, archive it instead.\n\nModel: CRM Tag (crm.tag)\nField: Tag Name (name)",
                ));
            };
            let mut st = self.lock();
            if st.tags.iter().any(|t| t == name) {
                return Err(OdooError::new(
                    "odoo.exceptions.ValidationError",
                    "The operation cannot be completed: Tag name already exists!",
                ));
            }
            st.tags.push(name.to_string());
            ids.push(st.tags.len() as i64);
            drop(st);
            self.erp.effect(NAME, "tag_create", None, &format!("{NAME}:tag:{name}"), json!({"name": name}));
        }
        Ok(ids)
    }

    fn confirm(&self, ids: &[i64], ctx: &Ctx) -> OdooResult<Value> {
        let def = model_def("sale.order").expect("declared above");
        let records = self.existing(def, ids, ctx)?;
        let orders: Vec<SimOrder> = records.iter().filter_map(|r| self.order_by_id(r.get("id")?.as_i64()?)).collect();
        if orders.iter().any(|o| order_state(o) != "draft") {
            return Err(OdooError::user("Some orders are not in a state requiring confirmation."));
        }
        let now = now_odoo();
        for o in &orders {
            if self.erp.effect(NAME, "order_confirm", Some(o.id), &format!("{NAME}:confirm:{}", o.number), json!({"name": order_name(o)})) {
                self.erp.commit_order(o.id);
                self.erp.update_order(o.id, |o| {
                    o.extra.insert("odoo_state".into(), json!("sale"));
                    o.extra.insert("odoo_date_order".into(), json!(now));
                    o.extra.insert("odoo_write_date".into(), json!(now));
                    let signature = format!("{}:{}", order_state(o), o.extra.contains_key("fulfilled"));
                    o.extra.insert("odoo_seen".into(), json!(signature));
                });
            }
        }
        Ok(json!(true))
    }

    fn cancel(&self, ids: &[i64], ctx: &Ctx) -> OdooResult<Value> {
        let def = model_def("sale.order").expect("declared above");
        let records = self.existing(def, ids, ctx)?;
        let now = now_odoo();
        for o in records.iter().filter_map(|r| self.order_by_id(r.get("id")?.as_i64()?)) {
            let was = order_state(&o);
            let applied = self.erp.effect(NAME, "order_cancel", Some(o.id), &format!("{NAME}:cancel:{}", o.number), json!({"from": was}));
            if applied && was == "sale" && !o.extra.contains_key("fulfilled") {
                self.erp.release_commitment(o.id);
            }
            self.erp.update_order(o.id, |o| {
                if o.state != OrderState::Cancelled {
                    o.state = OrderState::Cancelled;
                    o.cancel_reason = Some("CANCELLED".into());
                    o.extra.insert("cancelled_at".into(), json!(crate::clock::format_rfc3339(OffsetDateTime::now_utc())));
                }
                o.extra.insert("odoo_state".into(), json!("cancel"));
                o.extra.insert("odoo_write_date".into(), json!(now));
                let signature = format!("{}:{}", order_state(o), o.extra.contains_key("fulfilled"));
                o.extra.insert("odoo_seen".into(), json!(signature));
            });
        }
        Ok(json!(true))
    }

    fn message_post(&self, ids: &[i64], kwargs: &Map<String, Value>, ctx: &Ctx) -> OdooResult<Value> {
        let def = model_def("sale.order").expect("declared above");
        if ids.len() != 1 {
            let list = ids.iter().map(i64::to_string).collect::<Vec<_>>().join(", ");
            return Err(OdooError::value(format!("Expected singleton: sale.order({list})")));
        }
        self.existing(def, ids, ctx)?;
        let order = self.order_by_id(ids[0]).ok_or_else(|| OdooError::missing("sale.order", ids))?;
        let body = kwargs.get("body").and_then(Value::as_str).unwrap_or("").to_string();
        let message_type = kwargs.get("message_type").and_then(Value::as_str).unwrap_or("notification").to_string();
        let subtype = match kwargs.get("subtype_xmlid").and_then(Value::as_str) {
            Some("mail.mt_note") | None => 2,
            Some("mail.mt_comment") => 1,
            Some(other) => return Err(OdooError::value(format!("External ID not found in the system: {other}"))),
        };
        let key = format!("{NAME}:message:{}:{subtype}:{body}", order.number);
        let mut st = self.lock();
        if let Some(id) = st.message_keys.get(&key).copied() {
            drop(st);
            self.erp.effect(NAME, "message_post", Some(order.id), &key, Value::Null);
            return Ok(json!(id));
        }
        let id = FIRST_MESSAGE + st.messages.len() as i64;
        st.messages.push(Message {
            id,
            res_id: order.number as i64,
            record_name: order_name(&order),
            body: body.clone(),
            message_type: message_type.clone(),
            subtype,
            date: now_odoo(),
        });
        st.message_keys.insert(key.clone(), id);
        drop(st);
        if self.erp.effect(NAME, "message_post", Some(order.id), &key, json!({"body": body, "message_type": message_type})) {
            self.erp.update_order(order.id, |o| o.notes.push(body.clone()));
        }
        Ok(json!(id))
    }

    /// (product, location position) of a quant id, if both exist.
    fn quant_parts(&self, id: i64) -> Option<(Product, usize, u64)> {
        let product = self.erp.product_by_id(u64::try_from(id.div_euclid(100)).ok()? + PRODUCT_ID_BASE)?;
        let position = usize::try_from(id.rem_euclid(100) - 1).ok()?;
        let location = self.erp.locations().get(position)?.id;
        Some((product, position, location))
    }

    fn write_quants(&self, ids: &[i64], vals: &Map<String, Value>, ctx: &Ctx) -> OdooResult<Value> {
        let def = model_def("stock.quant").expect("declared above");
        self.existing(def, ids, ctx)?;
        if vals.keys().any(|k| k != "inventory_quantity" && k != "inventory_quantity_auto_apply") {
            return Err(OdooError::user("Quant's editing is restricted, you can't do this operation."));
        }
        for id in ids {
            if let Some(v) = vals.get("inventory_quantity") {
                let count = v.as_f64().ok_or_else(|| OdooError::value(format!("could not convert string to float: {}", py_repr(v))))?;
                self.erp.effect(
                    NAME,
                    "inventory_count",
                    None,
                    &format!("{NAME}:count:{id}:{count}"),
                    json!({"quant": id, "inventory_quantity": count}),
                );
                self.lock().counts.insert(*id, count);
            }
            if let Some(v) = vals.get("inventory_quantity_auto_apply") {
                let count = v.as_f64().ok_or_else(|| OdooError::value(format!("could not convert string to float: {}", py_repr(v))))?;
                if ctx.inventory_mode {
                    self.lock().counts.insert(*id, count);
                    self.apply_one(*id);
                }
            }
        }
        Ok(json!(true))
    }

    fn create_quants(&self, list: &[Map<String, Value>], ctx: &Ctx) -> OdooResult<Vec<i64>> {
        if !ctx.inventory_mode {
            return Err(OdooError::user("Quant's creation is restricted, you can't do this operation."));
        }
        let mut ids = Vec::new();
        for vals in list {
            let product = vals
                .get("product_id")
                .and_then(Value::as_i64)
                .and_then(|p| u64::try_from(p).ok())
                .and_then(|p| self.erp.product_by_id(p + PRODUCT_ID_BASE));
            let location = vals.get("location_id").and_then(Value::as_i64);
            let (Some(product), Some(location)) = (product, location) else {
                return Err(OdooError::new(
                    "odoo.exceptions.ValidationError",
                    "The operation cannot be completed:\n- Create/update: a mandatory field is not set.\n- Delete: another model requires the record being deleted. If possible, archive it instead.\n\nModel: Quants (stock.quant)\nField: Product (product_id)",
                ));
            };
            let Some(position) = location_position(location, self.erp.locations().len()) else {
                return Err(OdooError::user(
                    "You cannot take products from or deliver products to a location of type \"view\" (Partners).",
                ));
            };
            let id = quant_id(&product, position);
            let count =
                vals.get("inventory_quantity").or_else(|| vals.get("inventory_quantity_auto_apply")).and_then(Value::as_f64).unwrap_or(0.0);
            self.erp.effect(
                NAME,
                "inventory_count",
                None,
                &format!("{NAME}:count:{id}:{count}"),
                json!({"quant": id, "inventory_quantity": count}),
            );
            self.lock().counts.insert(id, count);
            if vals.contains_key("inventory_quantity_auto_apply") {
                self.apply_one(id);
            }
            ids.push(id);
        }
        Ok(ids)
    }

    fn apply_inventory(&self, ids: &[i64], ctx: &Ctx) -> OdooResult<Value> {
        let def = model_def("stock.quant").expect("declared above");
        self.existing(def, ids, ctx)?;
        for id in ids {
            self.apply_one(*id);
        }
        Ok(Value::Null)
    }

    /// Set on hand to the pending count of a quant (an absolute count: applying it again changes nothing).
    fn apply_one(&self, id: i64) {
        let Some(count) = self.lock().counts.remove(&id) else { return };
        let Some((product, _, location)) = self.quant_parts(id) else { return };
        let on_hand = self.erp.levels(&product.sku).iter().find(|(l, _)| l.id == location).map_or(0, |(_, l)| l.on_hand);
        let target = count.round() as i64;
        self.erp.effect(
            NAME,
            "inventory_apply",
            None,
            &format!("{NAME}:apply:{id}:{target}"),
            json!({"quant": id, "sku": product.sku, "quantity": target}),
        );
        self.erp.adjust_on_hand(&product.sku, location, target - on_hand);
    }

    async fn serve(&self, headers: &HeaderMap, body: &[u8]) -> Response {
        let mime = headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        if mime != "application/json" && mime != "application/json-rpc" {
            return bad_request_text(
                "<!doctype html>\n<html lang=en>\n<title>400 Bad Request</title>\n<h1>Bad Request</h1>\n<p>Request inferred type is compatible with [&#39;http&#39;] but &#39;/jsonrpc&#39; is type=&#39;json&#39;.<br><br>Please verify the Content-Type request header and try again.</p>\n",
            );
        }
        let Ok(request) = serde_json::from_slice::<Value>(body) else {
            return bad_request_text("Invalid JSON data");
        };
        let Value::Object(request) = request else {
            return bad_request_text("Invalid JSON-RPC data");
        };
        let id = request.get("id").cloned().unwrap_or(Value::Null);
        let params = request.get("params").cloned().unwrap_or_else(|| json!({}));
        let service = params.get("service").and_then(Value::as_str).unwrap_or("").to_string();
        let method = params.get("method").and_then(Value::as_str).unwrap_or("").to_string();
        let args = params.get("args").cloned();
        let operation = match (service.as_str(), method.as_str(), args.as_ref()) {
            ("object", "execute_kw" | "execute", Some(Value::Array(a))) => {
                format!("{}.{}", a.get(3).and_then(Value::as_str).unwrap_or(""), a.get(4).and_then(Value::as_str).unwrap_or(""))
            }
            (s, m, _) => format!("{s}.{m}"),
        };
        let error_body = server_error_body(&id);
        let fault = self.faults.pick(NAME, &operation);
        if let Some((kind, When::Before)) = &fault {
            if let Some(r) = faults::before(kind, &error_body).await {
                return r;
            }
        }
        let real = {
            let missing: Vec<&str> = ["service", "method", "args"].into_iter().filter(|k| params.get(*k).is_none()).collect();
            if !params.is_object() {
                rpc_error(&id, &OdooError::type_error("'list' object is not a mapping"))
            } else if !missing.is_empty() {
                let quoted: Vec<String> = missing.iter().map(|n| format!("'{n}'")).collect();
                let list = match quoted.as_slice() {
                    [one] => one.clone(),
                    [a, b] => format!("{a} and {b}"),
                    [init @ .., last] => format!("{}, and {last}", init.join(", ")),
                    [] => String::new(),
                };
                let plural = if missing.len() == 1 { "" } else { "s" };
                rpc_error(
                    &id,
                    &OdooError::type_error(format!("RPC.jsonrpc() missing {} required positional argument{plural}: {list}", missing.len())),
                )
            } else {
                let args = match args {
                    Some(Value::Array(a)) => a,
                    Some(other) => vec![other],
                    None => Vec::new(),
                };
                match self.dispatch(&service, &method, &args) {
                    Ok(result) => rpc_result(&id, result),
                    Err(e) => rpc_error(&id, &e),
                }
            }
        };
        match &fault {
            Some((kind, When::After)) => faults::after(kind, real, &error_body).await,
            _ => real,
        }
    }
}

fn py_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "NoneType",
        Value::Bool(_) => "bool",
        Value::Number(n) if n.is_f64() => "float",
        Value::Number(_) => "int",
        Value::String(_) => "str",
        Value::Array(_) => "list",
        Value::Object(_) => "dict",
    }
}

fn not_allowed(def: &ModelDef, verb: &str) -> OdooError {
    OdooError::access(format!(
        "You are not allowed to {verb} '{}' ({}) records.\n\nContact your administrator to request access if necessary.",
        def.description, def.name
    ))
}

/// Bind positional and keyword arguments the way Python binds them; values
/// not given are `null`. `extra` names keywords accepted beyond `names`.
fn bind(
    method: &str,
    args: &[Value],
    kwargs: &Map<String, Value>,
    names: &[&str],
    required: usize,
    extra: &[&str],
) -> OdooResult<Vec<Value>> {
    if args.len() > names.len() {
        let takes =
            if required == names.len() { format!("{}", names.len() + 1) } else { format!("from {} to {}", required + 1, names.len() + 1) };
        return Err(OdooError::type_error(format!(
            "{method}() takes {takes} positional argument{} but {} were given",
            if names.is_empty() { "" } else { "s" },
            args.len() + 1
        )));
    }
    let mut out: Vec<Value> = names.iter().enumerate().map(|(i, _)| args.get(i).cloned().unwrap_or(Value::Null)).collect();
    for (k, v) in kwargs {
        match names.iter().position(|n| n == k) {
            Some(i) if i < args.len() => return Err(OdooError::type_error(format!("{method}() got multiple values for argument '{k}'"))),
            Some(i) => out[i] = v.clone(),
            None if extra.contains(&k.as_str()) => {}
            None => return Err(OdooError::type_error(format!("{method}() got an unexpected keyword argument '{k}'"))),
        }
    }
    if let Some(missing) = names.iter().take(required).enumerate().find(|(i, n)| args.get(*i).is_none() && !kwargs.contains_key(**n)) {
        return Err(OdooError::type_error(format!("{method}() missing 1 required positional argument: '{}'", missing.1)));
    }
    Ok(out)
}

/// The ids a record method is called on (first positional argument) and the rest.
fn split_ids(args: &[Value]) -> OdooResult<(Vec<i64>, Vec<Value>)> {
    let Some(first) = args.first() else {
        return Err(OdooError::new("builtins.IndexError", "list index out of range"));
    };
    let ids = as_ids(first).ok_or_else(|| OdooError::value(format!("Invalid ids {}", py_repr(first))))?;
    Ok((ids, args[1..].to_vec()))
}

fn field_list(def: &ModelDef, fields: &Value) -> OdooResult<Option<Vec<String>>> {
    let Some(list) = fields.as_array().filter(|a| !a.is_empty()) else {
        return Ok(None);
    };
    let mut out = Vec::new();
    for f in list {
        let name = f.as_str().unwrap_or_default();
        if def.field(name).is_none() {
            return Err(OdooError::value(format!("Invalid field '{name}' on model '{}'", def.name)));
        }
        out.push(name.to_string());
    }
    Ok(Some(out))
}

/// A record limited to `fields` (and `id`); many2one as bare ids without `load`.
fn project(def: &ModelDef, record: Record, fields: Option<&[String]>, load: bool) -> Value {
    let out: Map<String, Value> = record
        .into_iter()
        .filter(|(k, _)| k == "id" || fields.is_none_or(|f| f.iter().any(|x| x == k)))
        .map(|(k, v)| {
            let v = match (def.field(&k), v) {
                (Some(FieldType::Many2one(_)), Value::Array(pair)) if !load => pair.first().cloned().unwrap_or(Value::Bool(false)),
                (Some(FieldType::Datetime), v) => shown_datetime(v),
                (_, v) => v,
            };
            (k, v)
        })
        .collect();
    Value::Object(out)
}

/// Apply x2many commands (or a plain id list, meaning "set") to `current`.
fn apply_x2many(mut current: Vec<i64>, commands: &Value, mut create: impl FnMut(&str) -> i64) -> OdooResult<Vec<i64>> {
    let Value::Array(list) = commands else {
        return Err(OdooError::value(format!("Wrong value for tag_ids: {}", py_repr(commands))));
    };
    if list.iter().all(Value::is_i64) {
        return Ok(list.iter().filter_map(Value::as_i64).collect());
    }
    for command in list {
        let parts = command.as_array().cloned().unwrap_or_default();
        let code = parts.first().and_then(Value::as_i64);
        let id = parts.get(1).and_then(Value::as_i64).unwrap_or(0);
        match code {
            Some(0) => {
                let name = parts.get(2).and_then(|v| v.get("name")).and_then(Value::as_str).unwrap_or("");
                let new = create(name);
                if !current.contains(&new) {
                    current.push(new);
                }
            }
            Some(1) => {}
            Some(2) | Some(3) => current.retain(|x| *x != id),
            Some(4) if !current.contains(&id) => current.push(id),
            Some(4) => {}
            Some(5) => current.clear(),
            Some(6) => current = parts.get(2).and_then(as_ids).unwrap_or_default(),
            _ => return Err(OdooError::value(format!("Wrong value for tag_ids: {}", py_repr(commands)))),
        }
    }
    Ok(current)
}

/// Candidate ids when an all-AND domain pins `id`, a product's code or an order.
fn narrow(sim: &OdooSim, def: &ModelDef, items: &[DomainItem]) -> Option<Vec<i64>> {
    if items.iter().any(|i| matches!(i, DomainItem::Or | DomainItem::Not | DomainItem::And)) {
        return None;
    }
    let values = |v: &Value| -> Vec<Value> {
        match v {
            Value::Array(a) => a.clone(),
            v => vec![v.clone()],
        }
    };
    let product_ids = |codes: &[Value]| -> Vec<i64> {
        codes.iter().filter_map(|c| c.as_str()).filter_map(|c| sim.erp.product_by_sku(c)).map(|p| odoo_product_id(&p)).collect()
    };
    let locations = sim.erp.locations().len();
    for item in items {
        let DomainItem::Leaf { path, op, value } = item else { continue };
        if op != "=" && op != "in" {
            continue;
        }
        let path: Vec<&str> = path.iter().map(String::as_str).collect();
        let found = match (def.name, path.as_slice()) {
            (_, ["id"]) => values(value).iter().filter_map(Value::as_i64).collect(),
            ("product.product", ["default_code"]) => product_ids(&values(value)),
            ("stock.quant", ["product_id"]) => {
                values(value).iter().filter_map(Value::as_i64).flat_map(|p| (0..locations).map(move |l| p * 100 + l as i64 + 1)).collect()
            }
            ("stock.quant", ["product_id", "default_code"]) => {
                product_ids(&values(value)).into_iter().flat_map(|p| (0..locations).map(move |l| p * 100 + l as i64 + 1)).collect()
            }
            ("sale.order.line", ["order_id"]) => values(value)
                .iter()
                .filter_map(Value::as_i64)
                .filter_map(|o| sim.order_by_id(o))
                .flat_map(|o| (0..o.lines.len()).map(move |i| line_id(&o, i)))
                .collect(),
            _ => continue,
        };
        return Some(found);
    }
    None
}

fn order_state(o: &SimOrder) -> &'static str {
    if o.state == OrderState::Cancelled {
        return "cancel";
    }
    // A delivered order was confirmed, whether or not through the API.
    if o.extra.contains_key("fulfilled") {
        return "sale";
    }
    match o.extra.get("odoo_state").and_then(Value::as_str) {
        Some("sale") => "sale",
        Some("cancel") => "cancel",
        _ => "draft",
    }
}

fn order_name(o: &SimOrder) -> String {
    format!("S{:05}", o.number)
}

fn line_id(o: &SimOrder, position: usize) -> i64 {
    o.number as i64 * 1000 + position as i64 + 1
}

fn odoo_product_id(p: &Product) -> i64 {
    p.id.saturating_sub(PRODUCT_ID_BASE) as i64
}

fn product_label(p: &Product) -> String {
    format!("[{}] {}", p.sku, p.title)
}

fn quant_id(p: &Product, position: usize) -> i64 {
    odoo_product_id(p) * 100 + position as i64 + 1
}

fn unit_price(erp: &Erp, sku: &str) -> f64 {
    erp.product_by_sku(sku).and_then(|p| p.price.parse().ok()).unwrap_or(0.0)
}

fn warehouse_code(position: usize) -> String {
    if position == 0 { "WH".into() } else { format!("WH{}", position + 1) }
}

/// The stock location of the warehouse at `position`: (id, complete name).
fn stock_location(position: usize) -> (i64, String) {
    (8 + 10 * position as i64, format!("{}/Stock", warehouse_code(position)))
}

fn location_position(id: i64, count: usize) -> Option<usize> {
    let offset = id - 8;
    (offset >= 0 && offset % 10 == 0).then_some((offset / 10) as usize).filter(|p| *p < count)
}

fn tag_id(tags: &mut Vec<String>, name: &str) -> i64 {
    match tags.iter().position(|t| t == name) {
        Some(p) => p as i64 + 1,
        None => {
            tags.push(name.to_string());
            tags.len() as i64
        }
    }
}

/// Customer tags, sorted: a `res.partner.category` id is a position + 1.
fn partner_tags(erp: &Erp) -> Vec<String> {
    erp.customers().iter().flat_map(|c| c.tags.clone()).collect::<BTreeSet<_>>().into_iter().collect()
}

// ---- routes ----

impl SimPlatform for OdooSim {
    fn name(&self) -> &'static str {
        NAME
    }

    fn router(self: Arc<Self>) -> Router {
        Router::new().route("/jsonrpc", any(jsonrpc)).with_state(self)
    }

    fn connection(&self, _base_url: &str) -> SimConnection {
        SimConnection {
            values: [("database".to_string(), self.creds.database.clone())].into(),
            secrets: [("login".to_string(), self.creds.login.clone()), ("api_key".to_string(), self.creds.api_key.clone())].into(),
        }
    }

    /// Sale orders are polled (automation-rule webhooks are not imitated).
    fn order_topic(&self, _event: OrderEvent) -> Option<&'static str> {
        None
    }

    fn order_delivery(&self, _event: OrderEvent, _order: &SimOrder, _url: &str) -> Delivery {
        Delivery { headers: Vec::new(), body: Vec::new() }
    }
}

async fn jsonrpc(State(sim): State<Arc<OdooSim>>, headers: HeaderMap, body: Bytes) -> Response {
    sim.serve(&headers, &body).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sandbox::erp::LineRequest;
    use crate::sandbox::{Sandbox, SandboxOptions};

    /// A JSON-RPC client as an integration would write one.
    struct Rpc {
        http: reqwest::Client,
        url: String,
        database: String,
        login: String,
        key: String,
    }

    impl Rpc {
        async fn call(&self, service: &str, method: &str, args: Value) -> Value {
            let body = json!({"jsonrpc": "2.0", "method": "call", "id": 7, "params": {"service": service, "method": method, "args": args}});
            let r = self.http.post(&self.url).json(&body).send().await.unwrap();
            assert_eq!(r.status(), 200);
            let answer: Value = r.json().await.unwrap();
            assert_eq!((answer["jsonrpc"].as_str(), answer["id"].as_i64()), (Some("2.0"), Some(7)));
            answer
        }

        async fn execute(&self, model: &str, method: &str, args: Value, kwargs: Value) -> Result<Value, Value> {
            let answer = self.call("object", "execute_kw", json!([self.database, UID, self.key, model, method, args, kwargs])).await;
            match answer.get("error") {
                Some(e) => Err(e.clone()),
                None => Ok(answer["result"].clone()),
            }
        }

        async fn ok(&self, model: &str, method: &str, args: Value, kwargs: Value) -> Value {
            self.execute(model, method, args, kwargs).await.unwrap_or_else(|e| panic!("{model}.{method}: {e}"))
        }

        async fn error_name(&self, model: &str, method: &str, args: Value, kwargs: Value) -> String {
            let e = self.execute(model, method, args, kwargs).await.expect_err("an Odoo error");
            assert_eq!((e["code"].as_i64(), e["message"].as_str()), (Some(200), Some("Odoo Server Error")));
            e["data"]["name"].as_str().unwrap().to_string()
        }
    }

    async fn start() -> Sandbox {
        let sandbox =
            Sandbox::start(tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(), SandboxOptions::generated()).await.unwrap();
        crate::sandbox::erp::seed_amusement_catalogue(&sandbox.erp, "2026-12-10", "2027-02-01");
        sandbox
    }

    fn mounted(sandbox: &Sandbox) -> Rpc {
        let connection = sandbox.connection(NAME).expect("the platform is mounted");
        Rpc {
            http: reqwest::Client::new(),
            url: format!("{}/jsonrpc", sandbox.base_url(NAME)),
            database: connection.values["database"].clone(),
            login: connection.secrets["login"].clone(),
            key: connection.secrets["api_key"].clone(),
        }
    }

    /// An adapter over the sandbox's ERP on a listener of its own, for its test controls.
    async fn own(sandbox: &Sandbox) -> (Arc<OdooSim>, Rpc) {
        let sim = OdooSim::new(&SimContext { erp: sandbox.erp.clone(), faults: sandbox.faults.clone() });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = Router::new().nest(&format!("/{NAME}"), sim.clone().router());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        let rpc = Rpc {
            http: reqwest::Client::new(),
            url: format!("http://{addr}/{NAME}/jsonrpc"),
            database: sim.creds.database.clone(),
            login: sim.creds.login.clone(),
            key: sim.creds.api_key.clone(),
        };
        (sim, rpc)
    }

    fn line(sku: &str, qty: i64) -> LineRequest {
        LineRequest { sku: sku.into(), qty }
    }

    #[tokio::test]
    async fn authenticate_answers_a_uid_and_every_call_checks_the_key() {
        let sandbox = start().await;
        let (sim, rpc) = own(&sandbox).await;
        let version = rpc.call("common", "version", json!([])).await;
        assert_eq!(version["result"]["server_version"], "17.0");
        assert_eq!(version["result"]["protocol_version"], 1);
        let uid = rpc.call("common", "authenticate", json!([rpc.database, rpc.login, rpc.key, {}])).await;
        assert_eq!(uid["result"], json!(UID));
        let refused = rpc.call("common", "authenticate", json!([rpc.database, rpc.login, "wrong", {}])).await;
        assert_eq!(refused["result"], json!(false));
        assert_eq!(sim.logins(), 1);

        let denied = rpc.call("object", "execute_kw", json!([rpc.database, UID, "wrong", "sale.order", "search", [[]]])).await;
        let data = &denied["error"]["data"];
        assert_eq!((data["name"].as_str(), data["message"].as_str()), (Some("odoo.exceptions.AccessDenied"), Some("Access Denied")));
        assert_eq!(data["arguments"], json!(["Access Denied"]));
        assert!(data["debug"].as_str().unwrap().starts_with("Traceback"));

        sim.revoke_api_key();
        assert_eq!(rpc.call("common", "authenticate", json!([rpc.database, rpc.login, rpc.key, {}])).await["result"], json!(false));
        assert_eq!(rpc.error_name("sale.order", "search", json!([[]]), json!({})).await, "odoo.exceptions.AccessDenied");
        sim.restore_api_key();
        assert_eq!(rpc.ok("sale.order", "search", json!([[]]), json!({})).await, json!([]));

        let no_db = rpc.call("common", "authenticate", json!(["nope", rpc.login, rpc.key, {}])).await;
        assert_eq!(no_db["error"]["data"]["name"], "psycopg2.OperationalError");

        let not_json = rpc.http.post(&rpc.url).header("content-type", "application/json").body("{nope").send().await.unwrap();
        assert_eq!(not_json.status(), 400);
        assert_eq!(not_json.text().await.unwrap(), "Invalid JSON data");
        let not_object = rpc.http.post(&rpc.url).json(&json!([1])).send().await.unwrap();
        assert_eq!((not_object.status().as_u16(), not_object.text().await.unwrap().as_str()), (400, "Invalid JSON-RPC data"));
        let form = rpc.http.post(&rpc.url).header("content-type", "text/plain").body("{}").send().await.unwrap();
        assert_eq!(form.status(), 400);
    }

    #[tokio::test]
    async fn orders_poll_as_drafts_and_stock_reads_per_location() {
        let sandbox = start().await;
        let rpc = mounted(&sandbox);
        let customer = sandbox.erp.customers()[0].id;
        let mut placed = Vec::new();
        for sku in ["PB-STERN-GODZ-PRO", "CC-CLAW-42", "AC-SF2-CAB-2P"] {
            let (order, delivered) = sandbox.place_order(NAME, customer, &[line(sku, 1), line("SP-FLIPPER-COIL-2550", 4)]).await.unwrap();
            assert_eq!(delivered, 0, "polled");
            placed.push(order);
        }
        assert_eq!(sandbox.erp.totals("SP-FLIPPER-COIL-2550"), (40, 12, 28), "the ERP commits at once");

        let domain = json!([["write_date", ">=", "2000-01-01 00:00:00"], ["state", "in", ["draft", "sent"]]]);
        let fields = json!(["name", "state", "partner_id", "order_line", "write_date", "warehouse_id", "tag_ids", "client_order_ref"]);
        let first = rpc
            .ok(
                "sale.order",
                "search_read",
                json!([domain]),
                json!({"fields": fields, "limit": 2, "offset": 0, "order": "write_date asc, id asc"}),
            )
            .await;
        assert_eq!(sandbox.erp.totals("SP-FLIPPER-COIL-2550"), (40, 0, 40), "drafts reserve nothing");
        let first = first.as_array().unwrap().clone();
        assert_eq!(first.len(), 2);
        let rest = rpc.ok("sale.order", "search_read", json!([domain, fields, 2, 2, "write_date asc, id asc"]), json!({})).await;
        assert_eq!(rest.as_array().unwrap().len(), 1);
        let order = &first[0];
        assert_eq!(order["id"].as_u64(), Some(placed[0].number));
        assert_eq!(order["name"], format!("S{:05}", placed[0].number));
        assert_eq!(order["state"], "draft");
        assert_eq!(order["partner_id"][1], "Pinball Wizards Distribution, Dana Reyes");
        assert_eq!(order["warehouse_id"][0], 1);
        assert_eq!((order["tag_ids"].clone(), order["client_order_ref"].clone()), (json!([]), json!(false)));
        assert_eq!(order["write_date"].as_str().unwrap().len(), 19);
        let again = rpc.ok("sale.order", "search_count", json!([[["write_date", ">=", order["write_date"]]]]), json!({})).await;
        assert_eq!(again, json!(3), "the cursor's own second is included");
        assert!(order.get("amount_total").is_none(), "only the fields asked for, and id");
        assert_eq!(rpc.ok("sale.order", "search_count", json!([[["state", "=", "draft"]]]), json!({})).await, json!(3));

        let lines = rpc
            .ok("sale.order.line", "read", json!([order["order_line"]]), json!({"fields": ["product_id", "product_uom_qty", "order_id"]}))
            .await;
        assert_eq!(lines[0]["product_id"][1], "[PB-STERN-GODZ-PRO] Godzilla Pro pinball");
        assert_eq!(lines[1]["product_uom_qty"], json!(4.0));
        let bare = rpc.ok("sale.order.line", "read", json!([order["order_line"], ["product_id"]]), json!({"load": null})).await;
        assert!(bare[0]["product_id"].is_i64());

        let products = rpc
            .ok(
                "product.product",
                "search_read",
                json!([[["default_code", "in", ["PB-STERN-JAWS-PREM", "CC-CLAW-MINI"]]]]),
                json!({"fields": ["default_code", "qty_available", "free_qty", "incoming_qty", "virtual_available", "sale_ok", "type"]}),
            )
            .await;
        let jaws = products.as_array().unwrap().iter().find(|p| p["default_code"] == "PB-STERN-JAWS-PREM").unwrap();
        assert_eq!(
            (jaws["qty_available"].as_f64(), jaws["incoming_qty"].as_f64(), jaws["virtual_available"].as_f64()),
            (Some(1.0), Some(4.0), Some(5.0))
        );
        let mini = products.as_array().unwrap().iter().find(|p| p["default_code"] == "CC-CLAW-MINI").unwrap();
        assert_eq!((mini["sale_ok"].clone(), mini["type"].as_str()), (json!(false), Some("product")));
        let elsewhere =
            rpc.ok("product.product", "read", json!([[jaws["id"]], ["qty_available"]]), json!({"context": {"location": 18}})).await;
        assert_eq!(elsewhere[0]["qty_available"], json!(0.0), "no second location");

        let quants = rpc
            .ok(
                "stock.quant",
                "search_read",
                json!([[["product_id.default_code", "=", "SP-FLIPPER-COIL-2550"], ["location_id.usage", "=", "internal"]]]),
                json!({"fields": ["product_id", "location_id", "quantity", "reserved_quantity", "available_quantity", "lot_id"]}),
            )
            .await;
        assert_eq!(quants.as_array().unwrap().len(), 1);
        assert_eq!(quants[0]["location_id"][1], "WH/Stock");
        assert_eq!((quants[0]["quantity"].as_f64(), quants[0]["reserved_quantity"].as_f64()), (Some(40.0), Some(0.0)));
        assert_eq!(quants[0]["lot_id"], json!(false));
        let customers = rpc.ok("stock.quant", "search_count", json!([[["location_id.usage", "=", "customer"]]]), json!({})).await;
        assert_eq!(customers, json!(0));
    }

    #[tokio::test]
    async fn confirm_cancel_notes_and_writes_take_effect_once() {
        let sandbox = start().await;
        let rpc = mounted(&sandbox);
        let customer = sandbox.erp.customers()[3].id;
        let (order, _) = sandbox.place_order(NAME, customer, &[line("PB-STERN-GODZ-PRO", 2)]).await.unwrap();
        let (other, _) = sandbox.place_order(NAME, customer, &[line("CC-CLAW-42", 1)]).await.unwrap();
        let id = order.number as i64;
        let before = rpc.ok("sale.order", "read", json!([[id], ["write_date", "state"]]), json!({})).await;
        assert_eq!(before[0]["state"], "draft");
        assert_eq!(sandbox.erp.totals("PB-STERN-GODZ-PRO"), (3, 0, 3));

        assert_eq!(rpc.ok("sale.order", "action_confirm", json!([[id]]), json!({})).await, json!(true));
        assert_eq!(sandbox.erp.totals("PB-STERN-GODZ-PRO"), (3, 2, 1), "confirmation reserves");
        assert_eq!(rpc.error_name("sale.order", "action_confirm", json!([[id]]), json!({})).await, "odoo.exceptions.UserError");
        assert_eq!(sandbox.erp.totals("PB-STERN-GODZ-PRO"), (3, 2, 1));
        let confirmed = rpc.ok("sale.order", "read", json!([[id], ["state", "delivery_status", "write_date"]]), json!({})).await;
        assert_eq!((confirmed[0]["state"].as_str(), confirmed[0]["delivery_status"].as_str()), (Some("sale"), Some("pending")));
        assert!(confirmed[0]["write_date"].as_str() >= before[0]["write_date"].as_str());

        let note = json!({"body": "Waitlisted: PB-STERN-GODZ-PRO short 1", "message_type": "comment", "subtype_xmlid": "mail.mt_note"});
        let message = rpc.ok("sale.order", "message_post", json!([id]), note.clone()).await;
        assert!(message.is_i64());
        assert_eq!(rpc.ok("sale.order", "message_post", json!([[id]]), note).await, message, "the same note once");
        assert_eq!(sandbox.erp.order(order.id).unwrap().notes, ["Waitlisted: PB-STERN-GODZ-PRO short 1"]);
        assert_eq!(rpc.error_name("sale.order", "message_post", json!([[id], "positional body"]), json!({})).await, "builtins.TypeError");
        let messages = rpc
            .ok(
                "mail.message",
                "search_read",
                json!([[["model", "=", "sale.order"], ["res_id", "=", id]]]),
                json!({"fields": ["body", "subtype_id"]}),
            )
            .await;
        assert_eq!(messages[0]["subtype_id"][1], "Note");

        let tag = rpc.ok("crm.tag", "create", json!([{"name": "waitlist"}]), json!({})).await;
        let written = rpc.ok("sale.order", "write", json!([[id], {"tag_ids": [[4, tag]], "client_order_ref": "PO-77"}]), json!({})).await;
        assert_eq!(written, json!(true));
        let tagged = rpc
            .ok("sale.order", "search_read", json!([[["tag_ids.name", "=", "waitlist"]], ["client_order_ref", "tag_ids"]]), json!({}))
            .await;
        assert_eq!(tagged, json!([{"id": id, "client_order_ref": "PO-77", "tag_ids": [tag]}]));
        assert!(sandbox.erp.order(order.id).unwrap().tags.contains("waitlist"));

        assert_eq!(rpc.ok("sale.order", "action_cancel", json!([[id]]), json!({})).await, json!(true));
        assert_eq!(sandbox.erp.totals("PB-STERN-GODZ-PRO"), (3, 0, 3), "cancelling a confirmed order releases it");
        assert_eq!(rpc.ok("sale.order", "action_cancel", json!([[id]]), json!({})).await, json!(true));
        assert_eq!(sandbox.erp.totals("PB-STERN-GODZ-PRO"), (3, 0, 3));
        assert_eq!(rpc.ok("sale.order", "read", json!([[id], ["state"]]), json!({})).await[0]["state"], "cancel");

        rpc.ok("sale.order", "action_confirm", json!([[other.number]]), json!({})).await;
        sandbox.ship_order(other.id).await.unwrap();
        let shipped = rpc.ok("sale.order", "read", json!([[other.number], ["state", "delivery_status", "order_line"]]), json!({})).await;
        assert_eq!((shipped[0]["state"].as_str(), shipped[0]["delivery_status"].as_str()), (Some("sale"), Some("full")));
        let delivered = rpc.ok("sale.order.line", "read", json!([shipped[0]["order_line"], ["qty_delivered"]]), json!({})).await;
        assert_eq!(delivered[0]["qty_delivered"], json!(1.0));

        let (draft, _) = sandbox.place_order(NAME, customer, &[line("BD-JAMMA-60IN1", 1)]).await.unwrap();
        let seen = rpc.ok("sale.order", "read", json!([[draft.number], ["state", "write_date"]]), json!({})).await;
        assert_eq!(seen[0]["state"], "draft");
        sandbox.ship_order(draft.id).await.unwrap();
        let moved = rpc
            .ok(
                "sale.order",
                "search_read",
                json!([[["write_date", ">=", seen[0]["write_date"]], ["delivery_status", "=", "full"]], ["state"]]),
                json!({}),
            )
            .await;
        assert!(moved.as_array().unwrap().contains(&json!({"id": draft.number, "state": "sale"})), "{moved}");
        assert_eq!(rpc.error_name("sale.order", "action_confirm", json!([[draft.number]]), json!({})).await, "odoo.exceptions.UserError");

        let kinds: Vec<String> = sandbox.erp.effects().into_iter().filter(|e| e.platform == NAME).map(|e| e.kind).collect();
        assert_eq!(kinds, ["order_confirm", "message_post", "tag_create", "order_write", "order_cancel", "order_confirm"]);
    }

    #[tokio::test]
    async fn inventory_counts_are_applied_to_on_hand() {
        let sandbox = start().await;
        let rpc = mounted(&sandbox);
        let quant = rpc
            .ok(
                "stock.quant",
                "search",
                json!([[["product_id.default_code", "=", "BD-JAMMA-60IN1"], ["location_id.usage", "=", "internal"]]]),
                json!({}),
            )
            .await[0]
            .clone();
        let mode = json!({"context": {"inventory_mode": true}});
        assert_eq!(rpc.ok("stock.quant", "write", json!([[quant], {"inventory_quantity": 30.0}]), mode.clone()).await, json!(true));
        let pending = rpc
            .ok(
                "stock.quant",
                "read",
                json!([[quant], ["inventory_quantity", "inventory_diff_quantity", "inventory_quantity_set"]]),
                json!({}),
            )
            .await;
        assert_eq!(pending[0]["inventory_diff_quantity"], json!(5.0));
        assert_eq!(rpc.ok("stock.quant", "action_apply_inventory", json!([[quant]]), json!({})).await, Value::Null);
        assert_eq!(sandbox.erp.totals("BD-JAMMA-60IN1").0, 30);
        rpc.ok("stock.quant", "action_apply_inventory", json!([[quant]]), json!({})).await;
        assert_eq!(sandbox.erp.totals("BD-JAMMA-60IN1").0, 30, "nothing left to apply");

        let led = rpc.ok("product.product", "search", json!([[["default_code", "=", "SP-LED-GI-WW"]]]), json!({})).await[0].clone();
        let none = rpc.ok("stock.quant", "search", json!([[["product_id", "=", led]]]), json!({})).await;
        assert_eq!(none, json!([]), "no quant without stock");
        assert_eq!(
            rpc.error_name("stock.quant", "create", json!([{"product_id": led, "location_id": 8, "inventory_quantity": 12}]), json!({}))
                .await,
            "odoo.exceptions.UserError"
        );
        let created = rpc.ok("stock.quant", "create", json!([{"product_id": led, "location_id": 8, "inventory_quantity": 12}]), mode).await;
        rpc.ok("stock.quant", "action_apply_inventory", json!([[created]]), json!({})).await;
        assert_eq!(sandbox.erp.totals("SP-LED-GI-WW").0, 12);
        let kinds: Vec<String> = sandbox.erp.effects().into_iter().filter(|e| e.platform == NAME).map(|e| e.kind).collect();
        assert_eq!(kinds, ["inventory_count", "inventory_apply", "inventory_count", "inventory_apply"]);
    }

    #[tokio::test]
    async fn a_fault_after_confirmation_leaves_the_order_confirmed() {
        let sandbox = start().await;
        let rpc = mounted(&sandbox);
        let customer = sandbox.erp.customers()[1].id;
        let (order, _) = sandbox.place_order(NAME, customer, &[line("SP-COIN-MECH-EU", 2)]).await.unwrap();
        sandbox.faults.set(vec![crate::sandbox::faults::FaultRule {
            platform: NAME.into(),
            operation: Some("sale.order.action_confirm".into()),
            kind: crate::sandbox::faults::FaultKind::Status { status: 503 },
            rate: 1.0,
            when: When::After,
            limit: Some(1),
        }]);
        let body = json!({"jsonrpc": "2.0", "method": "call", "id": 3, "params": {"service": "object", "method": "execute_kw",
            "args": [rpc.database, UID, rpc.key, "sale.order", "action_confirm", [[order.number]]]}});
        let failed = rpc.http.post(&rpc.url).json(&body).send().await.unwrap();
        assert_eq!(failed.status(), 503);
        let failed: Value = failed.json().await.unwrap();
        assert_eq!(failed["error"]["message"], "Odoo Server Error");
        assert_eq!(sandbox.erp.totals("SP-COIN-MECH-EU"), (6, 2, 4), "confirmed all the same");
        assert_eq!(rpc.error_name("sale.order", "action_confirm", json!([[order.number]]), json!({})).await, "odoo.exceptions.UserError");
        let state = rpc.ok("sale.order", "read", json!([[order.number], ["state"]]), json!({})).await;
        assert_eq!(state[0]["state"], "sale");
        assert_eq!(sandbox.erp.effects().iter().filter(|e| e.platform == NAME).count(), 1);
    }

    #[tokio::test]
    async fn errors_name_the_python_exception() {
        let sandbox = start().await;
        let rpc = mounted(&sandbox);
        assert_eq!(rpc.error_name("sale.orders", "search", json!([[]]), json!({})).await, "odoo.exceptions.UserError");
        assert_eq!(rpc.error_name("sale.order", "frobnicate", json!([[]]), json!({})).await, "builtins.AttributeError");
        assert_eq!(rpc.error_name("sale.order", "_action_cancel", json!([[1]]), json!({})).await, "odoo.exceptions.AccessError");
        assert_eq!(rpc.error_name("sale.order", "search_read", json!([[["nope", "=", 1]]]), json!({})).await, "builtins.ValueError");
        assert_eq!(rpc.error_name("sale.order", "search_read", json!([[]]), json!({"fields": ["nope"]})).await, "builtins.ValueError");
        assert_eq!(rpc.error_name("sale.order", "search_read", json!([[]]), json!({"domian": []})).await, "builtins.TypeError");
        assert_eq!(
            rpc.error_name("sale.order", "search", json!([[]]), json!({"order": "write_date sideways"})).await,
            "odoo.exceptions.UserError"
        );
        assert_eq!(rpc.error_name("sale.order", "search", json!([[]]), json!({"order": "nope desc"})).await, "builtins.ValueError");
        assert_eq!(rpc.ok("sale.order", "search", json!([[]]), json!({"order": "write_date DESC NULLS LAST, id"})).await, json!([]));
        let no_params = rpc.http.post(&rpc.url).json(&json!({"jsonrpc": "2.0", "method": "call", "id": 1})).send().await.unwrap();
        let no_params: Value = no_params.json().await.unwrap();
        assert_eq!(
            no_params["error"]["data"]["message"],
            "RPC.jsonrpc() missing 3 required positional arguments: 'service', 'method', and 'args'"
        );
        assert_eq!(rpc.error_name("sale.order", "read", json!([[424242], ["name"]]), json!({})).await, "odoo.exceptions.MissingError");
        assert_eq!(
            rpc.error_name("product.product", "write", json!([[12345000], {"name": "x"}]), json!({})).await,
            "odoo.exceptions.AccessError"
        );
        let invalid = rpc.execute("sale.order", "search", json!([[["nope", "=", 1]]]), json!({})).await.unwrap_err();
        assert_eq!(invalid["data"]["message"], "Invalid field sale.order.nope in leaf ('nope', '=', 1)");
        let found = rpc
            .ok(
                "res.partner",
                "search_read",
                json!([["|", ["category_id.name", "=", "vip"], "!", ["company_name", "!=", false]], ["name"]]),
                json!({"order": "name desc"}),
            )
            .await;
        let names: Vec<&str> = found.as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap()).collect();
        assert_eq!(names, ["Lee Marsh", "Ines Kowalski", "Administrator"]);
        assert!(like("Pinball Wizards", "%ball w%", true) && !like("Pinball", "P_n", false) && like("Pin", "P_n", false));
    }
}
