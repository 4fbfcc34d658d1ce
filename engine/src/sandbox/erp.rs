//! The mock ERP every simulated platform sits on: products, locations, stock
//! per location, customers, orders and a log of every effect a platform
//! call had. Platform adapters translate their wire format to these verbs.
//!
//! Effects are counted by key (the idempotency key a call carried, or a
//! natural key such as "tag X on order Y"), so tests can prove that each
//! write-back took effect exactly once however often it was sent.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Mutex;

use serde::Serialize;
use serde_json::Value;

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Machine,
    Board,
    Part,
}

#[derive(Debug, Clone, Serialize)]
pub struct Product {
    pub id: u64,
    pub sku: String,
    pub title: String,
    pub kind: Kind,
    pub price: String,
    pub tags: Vec<String>,
    pub discontinued: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Location {
    pub id: u64,
    pub name: String,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Level {
    /// Physical units.
    pub on_hand: i64,
    /// Units promised to open orders on the platform that owns this stock.
    pub committed: i64,
    pub incoming: i64,
    pub incoming_eta: Option<String>,
}

impl Level {
    pub fn available(&self) -> i64 {
        self.on_hand - self.committed
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Customer {
    pub id: u64,
    pub first_name: String,
    pub last_name: String,
    pub company: String,
    pub email: String,
    pub tags: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct OrderLine {
    pub id: u64,
    pub sku: String,
    pub qty: i64,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum OrderState {
    Open,
    OnHold,
    Cancelled,
}

#[derive(Debug, Clone, Serialize)]
pub struct Hold {
    pub fulfillment_order: u64,
    pub handle: String,
    pub reason: String,
    pub notes: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct SimOrder {
    pub id: u64,
    pub platform: String,
    pub number: u64,
    pub customer: Customer,
    pub lines: Vec<OrderLine>,
    pub location: u64,
    pub created_at: String,
    pub state: OrderState,
    pub tags: BTreeSet<String>,
    pub notes: Vec<String>,
    pub fulfillment_orders: Vec<u64>,
    pub holds: Vec<Hold>,
    pub cancel_reason: Option<String>,
    /// Platform-specific values an adapter keeps (e.g. a version counter).
    pub extra: BTreeMap<String, Value>,
}

/// One change a platform call made.
#[derive(Debug, Clone, Serialize)]
pub struct Effect {
    pub seq: u64,
    /// When it took effect (Unix milliseconds).
    pub at_ms: u64,
    pub platform: String,
    pub kind: String,
    pub order: Option<u64>,
    pub key: String,
    pub detail: Value,
}

#[derive(Default)]
struct State {
    products: Vec<Product>,
    /// Product index by SKU and by id (catalogues can be large).
    by_sku: HashMap<String, usize>,
    by_id: HashMap<u64, usize>,
    locations: Vec<Location>,
    levels: HashMap<(String, u64), Level>,
    customers: Vec<Customer>,
    orders: BTreeMap<u64, SimOrder>,
    /// Orders whose units are committed now: releasing and committing again
    /// happen once each, however many parties (the platform adapter, a
    /// cancellation, a shipment) ask for it.
    holding: HashSet<u64>,
    next_order: u64,
    next_number: u64,
    next_line: u64,
    next_fo: u64,
    effects: Vec<Effect>,
    /// How many times each effect key was requested (applied or not).
    attempts: HashMap<String, u32>,
}

pub struct Erp {
    state: Mutex<State>,
}

impl State {
    fn push_product(&mut self, p: Product) {
        self.by_sku.insert(p.sku.clone(), self.products.len());
        self.by_id.insert(p.id, self.products.len());
        self.products.push(p);
    }
}

/// What an order line asks for when a sandbox order is placed.
#[derive(Debug, Clone, serde::Deserialize, Serialize)]
pub struct LineRequest {
    pub sku: String,
    pub qty: i64,
}

impl Default for Erp {
    fn default() -> Self {
        Erp::new()
    }
}

impl Erp {
    pub fn new() -> Self {
        Erp {
            state: Mutex::new(State {
                next_order: 5_812_345_670_001,
                next_number: 1001,
                next_line: 14_123_456_001,
                next_fo: 6_712_345_001,
                ..State::default()
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn add_location(&self, name: &str) -> u64 {
        let mut s = self.lock();
        let id = 71_234_567 + s.locations.len() as u64;
        s.locations.push(Location { id, name: name.to_string() });
        id
    }

    pub fn add_product(&self, sku: &str, title: &str, kind: Kind, price: &str, tags: &[&str]) -> u64 {
        let mut s = self.lock();
        let id = 9_012_345_000 + s.products.len() as u64;
        let discontinued = tags.contains(&"discontinued");
        s.push_product(Product {
            id,
            sku: sku.into(),
            title: title.into(),
            kind,
            price: price.into(),
            tags: tags.iter().map(|t| t.to_string()).collect(),
            discontinued,
        });
        id
    }

    pub fn add_customer(&self, first: &str, last: &str, company: &str, email: &str, tags: &[&str]) -> u64 {
        let mut s = self.lock();
        let id = 7_012_345_000 + s.customers.len() as u64;
        s.customers.push(Customer {
            id,
            first_name: first.into(),
            last_name: last.into(),
            company: company.into(),
            email: email.into(),
            tags: tags.iter().map(|t| t.to_string()).collect(),
        });
        id
    }

    pub fn set_stock(&self, sku: &str, location: u64, on_hand: i64, incoming: i64, eta: Option<&str>) {
        let mut s = self.lock();
        let l = s.levels.entry((sku.to_string(), location)).or_default();
        l.on_hand = on_hand;
        l.incoming = incoming;
        l.incoming_eta = eta.map(str::to_string);
    }

    pub fn products(&self) -> Vec<Product> {
        self.lock().products.clone()
    }

    pub fn product_by_sku(&self, sku: &str) -> Option<Product> {
        let s = self.lock();
        s.by_sku.get(sku).map(|i| s.products[*i].clone())
    }

    pub fn product_by_id(&self, id: u64) -> Option<Product> {
        let s = self.lock();
        s.by_id.get(&id).map(|i| s.products[*i].clone())
    }

    pub fn locations(&self) -> Vec<Location> {
        self.lock().locations.clone()
    }

    pub fn customers(&self) -> Vec<Customer> {
        self.lock().customers.clone()
    }

    /// Stock of a SKU per location (locations without a level are left out).
    pub fn levels(&self, sku: &str) -> Vec<(Location, Level)> {
        let s = self.lock();
        s.locations.iter().filter_map(|loc| s.levels.get(&(sku.to_string(), loc.id)).map(|l| (loc.clone(), l.clone()))).collect()
    }

    /// Place an order; the platform commits stock for it at the first location.
    pub fn place_order(&self, platform: &str, customer_id: u64, lines: &[LineRequest], created_at: &str) -> Result<SimOrder, String> {
        let mut s = self.lock();
        let customer = s.customers.iter().find(|c| c.id == customer_id).cloned().ok_or_else(|| format!("no customer {customer_id}"))?;
        for l in lines {
            if !s.by_sku.contains_key(&l.sku) {
                return Err(format!("no product with SKU {}", l.sku));
            }
            if l.qty <= 0 {
                return Err(format!("quantity of {} must be positive", l.sku));
            }
        }
        let location = s.locations.first().map(|l| l.id).ok_or("no locations")?;
        let id = s.next_order;
        s.next_order += 1;
        let number = s.next_number;
        s.next_number += 1;
        let mut order_lines = Vec::new();
        for l in lines {
            let line_id = s.next_line;
            s.next_line += 1;
            order_lines.push(OrderLine { id: line_id, sku: l.sku.clone(), qty: l.qty });
            s.levels.entry((l.sku.clone(), location)).or_default().committed += l.qty;
        }
        let fo = s.next_fo;
        s.next_fo += 1;
        let order = SimOrder {
            id,
            platform: platform.to_string(),
            number,
            customer,
            lines: order_lines,
            location,
            created_at: created_at.to_string(),
            state: OrderState::Open,
            tags: BTreeSet::new(),
            notes: Vec::new(),
            fulfillment_orders: vec![fo],
            holds: Vec::new(),
            cancel_reason: None,
            extra: BTreeMap::new(),
        };
        s.orders.insert(id, order.clone());
        s.holding.insert(id);
        Ok(order)
    }

    pub fn order(&self, id: u64) -> Option<SimOrder> {
        self.lock().orders.get(&id).cloned()
    }

    pub fn orders(&self) -> Vec<SimOrder> {
        self.lock().orders.values().cloned().collect()
    }

    pub fn order_by_fulfillment_order(&self, fo: u64) -> Option<SimOrder> {
        self.lock().orders.values().find(|o| o.fulfillment_orders.contains(&fo)).cloned()
    }

    /// Change an order in place under the lock.
    pub fn update_order<R>(&self, id: u64, f: impl FnOnce(&mut SimOrder) -> R) -> Option<R> {
        self.lock().orders.get_mut(&id).map(f)
    }

    /// Record that an effect was requested; `apply` runs only the first time
    /// its key is seen. Returns whether it was applied now.
    pub fn effect(&self, platform: &str, kind: &str, order: Option<u64>, key: &str, detail: Value) -> bool {
        let mut s = self.lock();
        let n = s.attempts.entry(key.to_string()).or_insert(0);
        *n += 1;
        if *n > 1 {
            return false;
        }
        let seq = s.effects.len() as u64 + 1;
        let at_ms = crate::clock::unix_ms(time::OffsetDateTime::now_utc());
        s.effects.push(Effect { seq, at_ms, platform: platform.into(), kind: kind.into(), order, key: key.into(), detail });
        true
    }

    pub fn effects(&self) -> Vec<Effect> {
        self.lock().effects.clone()
    }

    /// Effects after sequence number `after`, at most `limit`.
    pub fn effects_after(&self, after: u64, limit: usize) -> Vec<Effect> {
        let s = self.lock();
        s.effects.iter().skip(after as usize).take(limit).cloned().collect()
    }

    /// (orders, effects, requested effects) so far.
    pub fn counts(&self) -> (usize, usize, u64) {
        let s = self.lock();
        (s.orders.len(), s.effects.len(), s.attempts.values().map(|n| u64::from(*n)).sum())
    }

    /// How many times each effect key was requested.
    pub fn attempts(&self) -> HashMap<String, u32> {
        self.lock().attempts.clone()
    }

    /// Units of a SKU: on_hand, committed, available over every location.
    pub fn totals(&self, sku: &str) -> (i64, i64, i64) {
        let levels = self.levels(sku);
        let on_hand = levels.iter().map(|(_, l)| l.on_hand).sum();
        let committed = levels.iter().map(|(_, l)| l.committed).sum();
        (on_hand, committed, on_hand - committed)
    }

    /// Give back what a cancelled order had committed.
    pub fn release_commitment(&self, order_id: u64) {
        let mut s = self.lock();
        let Some(o) = s.orders.get(&order_id).cloned() else {
            return;
        };
        if !s.holding.remove(&order_id) {
            return;
        }
        for l in &o.lines {
            if let Some(level) = s.levels.get_mut(&(l.sku.clone(), o.location)) {
                level.committed = (level.committed - l.qty).max(0);
            }
        }
    }

    /// Commit an order's units again (after `release_commitment`): for
    /// platforms that allocate stock only when an order is confirmed.
    pub fn commit_order(&self, order_id: u64) {
        let mut s = self.lock();
        let Some(o) = s.orders.get(&order_id).cloned() else {
            return;
        };
        if !s.holding.insert(order_id) {
            return;
        }
        for l in &o.lines {
            s.levels.entry((l.sku.clone(), o.location)).or_default().committed += l.qty;
        }
    }

    /// Change on-hand units at a location (an inventory adjustment).
    pub fn adjust_on_hand(&self, sku: &str, location: u64, delta: i64) {
        let mut s = self.lock();
        s.levels.entry((sku.to_string(), location)).or_default().on_hand += delta;
    }
}

/// `count` spare parts `{prefix}{000000..}` with `on_hand` units each at the
/// first location, for load tests that need a large catalogue.
pub fn add_generated_products(erp: &Erp, prefix: &str, count: usize, on_hand: i64) {
    let loc = erp.locations().first().map(|l| l.id).unwrap_or_else(|| erp.add_location("Main warehouse"));
    let mut s = erp.lock();
    for i in 0..count {
        let sku = format!("{prefix}{i:06}");
        let id = 9_500_000_000 + i as u64;
        s.push_product(Product {
            id,
            sku: sku.clone(),
            title: format!("Generated part {i}"),
            kind: Kind::Part,
            price: "1.00".into(),
            tags: vec!["spare-part".into()],
            discontinued: false,
        });
        s.levels.insert((sku, loc), Level { on_hand, ..Level::default() });
    }
}

/// sku, title, kind, price, tags, on hand, incoming, incoming ETA.
type SeedRow<'a> = (&'a str, &'a str, Kind, &'a str, &'a [&'a str], i64, i64, Option<&'a str>);

/// The amusement-machine catalogue the demo, tests and benchmarks use.
pub fn seed_amusement_catalogue(erp: &Erp, eta_soon: &str, eta_late: &str) {
    let main = erp.add_location("Main warehouse");
    let products: &[SeedRow] = &[
        ("PB-STERN-GODZ-PRO", "Godzilla Pro pinball", Kind::Machine, "8999.00", &["pinball"], 3, 0, None),
        ("PB-STERN-JAWS-PREM", "Jaws Premium pinball", Kind::Machine, "10999.00", &["pinball"], 1, 4, Some(eta_soon)),
        ("PB-JJP-ELTON-CE", "Elton John Collector's Edition pinball", Kind::Machine, "14999.00", &["pinball"], 0, 2, Some(eta_late)),
        ("AC-SF2-CAB-2P", "Street Fighter II two-player cabinet", Kind::Machine, "3499.00", &["arcade"], 2, 0, None),
        ("AC-OUTRUN-DLX", "Out Run deluxe sit-down cabinet", Kind::Machine, "6999.00", &["arcade"], 0, 3, Some(eta_soon)),
        ("CC-CLAW-42", "42-inch claw crane", Kind::Machine, "4299.00", &["crane"], 2, 0, None),
        ("CC-CLAW-MINI", "Mini claw crane", Kind::Machine, "1199.00", &["crane", "discontinued"], 0, 0, None),
        ("BD-JAMMA-60IN1", "JAMMA 60-in-1 game board", Kind::Board, "89.00", &["board"], 25, 0, None),
        ("SP-FLIPPER-COIL-2550", "Flipper coil 25-500", Kind::Part, "24.50", &["spare-part"], 40, 0, None),
        ("SP-COIN-MECH-EU", "Electronic coin mechanism (EUR)", Kind::Part, "65.00", &["spare-part"], 6, 20, Some(eta_soon)),
        ("SP-LED-GI-WW", "Warm white GI LED, pack of 50", Kind::Part, "19.90", &["spare-part"], 0, 0, None),
    ];
    for (sku, title, kind, price, tags, on_hand, incoming, eta) in products {
        erp.add_product(sku, title, kind.clone(), price, tags);
        erp.set_stock(sku, main, *on_hand, *incoming, *eta);
    }
    erp.add_customer("Dana", "Reyes", "Pinball Wizards Distribution", "orders@pinballwizards.example", &["distributor"]);
    erp.add_customer("Sam", "Okafor", "Retro Arcade Bar", "sam@retroarcadebar.example", &["operator"]);
    erp.add_customer("Lee", "Marsh", "", "lee.marsh@example.net", &[]);
    erp.add_customer("Ines", "Kowalski", "FunZone Family Entertainment", "purchasing@funzone.example", &["operator", "vip"]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placing_an_order_commits_stock_and_effects_count_once() {
        let erp = Erp::new();
        seed_amusement_catalogue(&erp, "2026-01-10", "2026-06-01");
        let c = erp.customers()[0].id;
        let o = erp.place_order("shopify", c, &[LineRequest { sku: "PB-STERN-GODZ-PRO".into(), qty: 1 }], "2026-01-01T00:00:00Z").unwrap();
        assert_eq!(erp.totals("PB-STERN-GODZ-PRO"), (3, 1, 2));
        assert!(erp.effect("shopify", "tags_add", Some(o.id), "k1", Value::Null));
        assert!(!erp.effect("shopify", "tags_add", Some(o.id), "k1", Value::Null));
        assert_eq!(erp.effects().len(), 1);
        assert_eq!(erp.attempts()["k1"], 2);
        erp.release_commitment(o.id);
        assert_eq!(erp.totals("PB-STERN-GODZ-PRO"), (3, 0, 3));
        // A second release (the platform's and a cancellation's) gives nothing back twice.
        let other =
            erp.place_order("shopify", c, &[LineRequest { sku: "PB-STERN-GODZ-PRO".into(), qty: 1 }], "2026-01-01T00:00:00Z").unwrap();
        erp.release_commitment(o.id);
        assert_eq!(erp.totals("PB-STERN-GODZ-PRO"), (3, 1, 2));
        erp.commit_order(other.id);
        assert_eq!(erp.totals("PB-STERN-GODZ-PRO"), (3, 1, 2));
    }
}
