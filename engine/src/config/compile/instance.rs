//! Compiling the instance config: connections and inventory settings.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use super::{Compiler, Source, check_name};
use crate::config::diagnostic::did_you_mean;
use crate::config::raw;
use crate::config::secret::{Secret, SecretRef};
use crate::config::yaml::Parsed;
use crate::connector::Connector;
use crate::connector::ratelimit::RateLimit;
use crate::inventory::pattern::SkuPattern;
use crate::inventory::{InventorySettings, Master};

/// A connection with its references checked, before its base URL is rendered.
pub struct ConnectionDraft {
    pub name: String,
    pub connector: Arc<Connector>,
    pub base_url: Option<String>,
    pub values: BTreeMap<String, String>,
    pub secrets: BTreeMap<String, Secret>,
    pub rate_limit: Option<RateLimit>,
}

impl Compiler {
    pub fn connections(
        &mut self,
        file: &Path,
        parsed: &Parsed<raw::InstanceFile>,
        connectors: &BTreeMap<String, Arc<Connector>>,
        resolve_secrets: bool,
        fake_secrets: bool,
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
            if fake_secrets {
                for k in connector.secrets.keys() {
                    secrets.insert(k.clone(), Secret::new(format!("test-{k}")));
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

    pub fn inventory(
        &mut self,
        file: &Path,
        parsed: &Parsed<raw::InstanceFile>,
        connections: &BTreeMap<String, ConnectionDraft>,
    ) -> InventorySettings {
        let src = Source { file, spans: &parsed.spans };
        let raw = &parsed.value.inventory;
        let mut out = InventorySettings::default();
        for (i, m) in raw.masters.iter().enumerate() {
            if !connections.contains_key(&m.connection) && !self.broken_connections.contains(&m.connection) {
                let mut d = src.at(&format!("inventory.masters.{i}.connection"), format!("no connection named `{}`", m.connection));
                if let Some(s) = did_you_mean(&m.connection, connections.keys().map(String::as_str)) {
                    d = d.with_help(format!("did you mean `{s}`?"));
                }
                self.push(d);
            }
            out.masters.push(Master { connection: m.connection.clone(), skus: m.skus.iter().map(|p| SkuPattern::new(p)).collect() });
        }
        for (i, s) in raw.safety_stock.iter().enumerate() {
            if s.units < 0 {
                self.push(src.at(&format!("inventory.safety_stock.{i}.units"), "safety stock cannot be negative"));
            }
            out.safety.push((SkuPattern::new(&s.skus), s.units.max(0)));
        }
        out
    }
}
