//! Reading a config directory from disk and compiling it as one set.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha2::{Digest, Sha256};

use super::compile::{Compiler, Source};
use super::diagnostic::{Diagnostic, Diagnostics};
use super::raw::{ConnectorFile, InstanceFile, WorkflowFile};
use super::secret::SecretRef;
use super::yaml::{self, Parsed};
use super::{ConfigSet, InstanceSettings};
use crate::adapters::rules::{RuleEngine, RuleLimits};
use crate::connector::Connection;
use crate::connector::webhook::encode_hex;

/// The directories and files of one config set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigPaths {
    pub dir: PathBuf,
    pub instance: PathBuf,
}

impl ConfigPaths {
    /// `instance` defaults to `<dir>/ordersync.yaml`, falling back to
    /// `<dir>/examples/ordersync.yaml` (the repository's sample).
    pub fn new(dir: impl Into<PathBuf>, instance: Option<PathBuf>) -> Self {
        let dir = dir.into();
        let instance = instance.unwrap_or_else(|| {
            let primary = dir.join("ordersync.yaml");
            let sample = dir.join("examples").join("ordersync.yaml");
            if !primary.exists() && sample.exists() { sample } else { primary }
        });
        ConfigPaths { dir, instance }
    }

    pub fn connectors_dir(&self) -> PathBuf {
        self.dir.join("connectors.d")
    }

    pub fn workflows_dir(&self) -> PathBuf {
        self.dir.join("workflows")
    }

    pub fn rules_dir(&self) -> PathBuf {
        self.workflows_dir().join("rules")
    }
}

#[derive(Debug, Clone, Copy)]
pub struct LoadOptions {
    /// Read every referenced secret now (the daemon does; `validate` need not).
    pub resolve_secrets: bool,
    /// Give every declared secret a stand-in value instead (workflow tests).
    pub fake_secrets: bool,
    pub rule_limits: RuleLimits,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions { resolve_secrets: true, fake_secrets: false, rule_limits: RuleLimits::default() }
    }
}

struct SourceFile {
    path: PathBuf,
    text: String,
}

/// Every file of one config set, as read from disk.
struct Sources {
    instance: Option<SourceFile>,
    connectors: Vec<SourceFile>,
    workflows: Vec<SourceFile>,
    rules: Vec<SourceFile>,
    /// Problems reading them (missing directory, permission, encoding).
    diags: Diagnostics,
}

impl Sources {
    fn read(paths: &ConfigPaths) -> Sources {
        let mut diags = Diagnostics::default();
        let instance = read_file(&paths.instance, &mut diags);
        let connectors = read_dir(&paths.connectors_dir(), &["yaml", "yml"], &mut diags);
        let workflows = read_dir(&paths.workflows_dir(), &["yaml", "yml"], &mut diags);
        let rules = if paths.rules_dir().is_dir() { read_dir(&paths.rules_dir(), &["rhai"], &mut diags) } else { Vec::new() };
        Sources { instance, connectors, workflows, rules, diags }
    }

    fn files(&self) -> impl Iterator<Item = &SourceFile> {
        self.instance.iter().chain(&self.connectors).chain(&self.workflows).chain(&self.rules)
    }

    /// SHA-256 over every path and content, and over read errors, so any
    /// change on disk (including a file becoming unreadable) changes it.
    fn fingerprint(&self) -> String {
        let mut hasher = Sha256::new();
        for f in self.files() {
            hasher.update(f.path.to_string_lossy().as_bytes());
            hasher.update([0]);
            hasher.update(f.text.as_bytes());
            hasher.update([0]);
        }
        hasher.update(self.diags.to_string().as_bytes());
        encode_hex(&hasher.finalize())
    }
}

/// The content hash of the set on disk, without compiling it: a cheap way to
/// tell whether a reload would change anything.
pub fn fingerprint(paths: &ConfigPaths) -> String {
    Sources::read(paths).fingerprint()
}

/// Load, compile and validate the whole set, or report every problem found.
pub fn load(paths: &ConfigPaths, opts: LoadOptions) -> Result<ConfigSet, Diagnostics> {
    let sources = Sources::read(paths);
    let hash = sources.fingerprint();
    let file_count = sources.files().count();
    let Sources { instance: instance_src, connectors: connector_srcs, workflows: workflow_srcs, rules: rule_srcs, diags } = sources;

    let mut c = Compiler::new(RuleEngine::new(opts.rule_limits));
    c.diags = diags;

    // Rules first: workflows refer to them by path.
    let mut rules = BTreeMap::new();
    for f in &rule_srcs {
        rules.insert(f.path.clone(), c.rule(&f.path, &f.text));
    }

    let mut connectors = BTreeMap::new();
    let mut connector_files: BTreeMap<String, PathBuf> = BTreeMap::new();
    let mut connector_spans: BTreeMap<String, (PathBuf, super::yaml::SpanIndex)> = BTreeMap::new();
    for f in &connector_srcs {
        let Some(parsed) = parse::<ConnectorFile>(f, &mut c.diags) else {
            // Its name is unknown; by convention it is the file's stem.
            if let Some(stem) = f.path.file_stem().and_then(|s| s.to_str()) {
                c.broken_connectors.insert(stem.to_string());
            }
            continue;
        };
        let name = parsed.value.connector.clone();
        if let Some(first) = connector_files.get(&name) {
            c.diags.push(Diagnostic::new(
                &f.path,
                parsed.spans.locate("connector"),
                "connector",
                format!("connector `{name}` is also defined in {}", first.display()),
            ));
            continue;
        }
        connector_files.insert(name.clone(), f.path.clone());
        connector_spans.insert(name.clone(), (f.path.clone(), parsed.spans.clone()));
        match c.connector(&f.path, &parsed) {
            Some(conn) => {
                connectors.insert(name, Arc::new(conn));
            }
            None => {
                c.broken_connectors.insert(name);
            }
        }
    }

    let instance = instance_src.as_ref().and_then(|f| parse::<InstanceFile>(f, &mut c.diags).map(|p| (f.path.clone(), p)));
    c.instance_broken = instance.is_none();
    let connection_drafts = match &instance {
        Some((path, parsed)) => c.connections(path, parsed, &connectors, opts.resolve_secrets, opts.fake_secrets),
        None => BTreeMap::new(),
    };
    let inventory = match &instance {
        Some((path, parsed)) => c.inventory(path, parsed, &connection_drafts),
        None => Default::default(),
    };

    let mut drafts = Vec::new();
    let mut workflow_files: BTreeMap<String, PathBuf> = BTreeMap::new();
    let mut spans = BTreeMap::new();
    for f in &workflow_srcs {
        let Some(parsed) = parse::<WorkflowFile>(f, &mut c.diags) else {
            continue;
        };
        let name = parsed.value.workflow.clone();
        if let Some(first) = workflow_files.get(&name) {
            c.diags.push(Diagnostic::new(
                &f.path,
                parsed.spans.locate("workflow"),
                "workflow",
                format!("workflow `{name}` is also defined in {}", first.display()),
            ));
            continue;
        }
        workflow_files.insert(name, f.path.clone());
        if let Some(d) = c.workflow(&f.path, &parsed, &rules, &paths.workflows_dir()) {
            drafts.push(d);
        }
        spans.insert(f.path.clone(), parsed.spans);
    }

    let templates = c.finish_templates();

    // Connections need the finished templates to render their base URLs.
    let mut connections = BTreeMap::new();
    if let Some((path, parsed)) = &instance {
        for (name, d) in connection_drafts {
            let values =
                serde_json::Value::Object(d.values.iter().map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone()))).collect());
            let base_url = match &d.base_url {
                Some(u) => Ok(u.clone()),
                None => templates.render(&d.connector.base_url, &serde_json::json!({ "values": values })),
            };
            match base_url {
                Ok(base_url) if base_url.starts_with("http://") || base_url.starts_with("https://") => {
                    connections.insert(
                        name.clone(),
                        Arc::new(Connection {
                            name,
                            connector: d.connector,
                            parsed_base: reqwest::Url::parse(&base_url).ok(),
                            base_url,
                            values,
                            secrets: d.secrets,
                            rate_limit: d.rate_limit,
                        }),
                    );
                }
                Ok(base_url) => {
                    c.broken_connections.insert(name.clone());
                    c.diags.push(Diagnostic::new(
                        path,
                        parsed.spans.locate(&format!("connections.{name}")),
                        format!("connections.{name}"),
                        format!("base URL `{base_url}` must start with http:// or https://"),
                    ));
                }
                Err(e) => {
                    c.broken_connections.insert(name.clone());
                    c.diags.push(Diagnostic::new(
                        path,
                        parsed.spans.locate(&format!("connections.{name}")),
                        format!("connections.{name}"),
                        e.0,
                    ));
                }
            }
        }
    }

    let mut workflows = BTreeMap::new();
    for d in drafts {
        let file = d.file.clone();
        let src = Source { file: &file, spans: &spans[&file] };
        if let Some(w) = c.link_workflow(src, d, &connections) {
            workflows.insert(w.name.clone(), Arc::new(w));
        }
    }

    let settings = instance
        .as_ref()
        .map(|(_, p)| InstanceSettings {
            listen: p.value.listen.clone(),
            admin_token: p.value.admin_token.as_deref().and_then(|r| SecretRef::parse(r).ok()),
            workers: p.value.workers,
            public_url: p.value.public_url.clone(),
        })
        .unwrap_or_default();

    let rule_texts: BTreeMap<PathBuf, String> = rule_srcs.iter().map(|f| (f.path.clone(), f.text.clone())).collect();
    let mut warnings = super::lint::lint(
        &connectors,
        &workflows,
        &super::lint::Sources { connectors: &connector_spans, workflows: &spans, rules: &rule_texts },
    );
    warnings.append(&mut c.inactive);
    warnings.sort_by(|a, b| (&a.file, a.line, a.col).cmp(&(&b.file, b.line, b.col)));
    let mut diags = std::mem::take(&mut c.diags);
    if !diags.is_empty() {
        diags.sort();
        return Err(diags);
    }
    let secrets_digest = secrets_digest(&connections);
    Ok(ConfigSet {
        version: 0,
        hash,
        secrets_digest,
        paths: paths.clone(),
        instance: settings,
        connectors,
        connections,
        workflows,
        inventory,
        templates,
        rules: c.rules,
        file_count,
        warnings,
    })
}

/// A digest of every secret value, keyed with a random per-process value so
/// that it reveals nothing even if it were seen.
fn secrets_digest(connections: &BTreeMap<String, Arc<Connection>>) -> String {
    static KEY: std::sync::LazyLock<[u8; 32]> = std::sync::LazyLock::new(rand::random);
    let mut h = Sha256::new();
    h.update(*KEY);
    for (name, c) in connections {
        for (k, v) in &c.secrets {
            h.update(name.as_bytes());
            h.update([0]);
            h.update(k.as_bytes());
            h.update([0]);
            h.update(v.expose().as_bytes());
            h.update([0]);
        }
    }
    encode_hex(&h.finalize())
}

fn parse<T: serde::de::DeserializeOwned>(f: &SourceFile, diags: &mut Diagnostics) -> Option<Parsed<T>> {
    match yaml::parse::<T>(&f.path, &f.text) {
        Ok(p) => Some(p),
        Err(d) => {
            diags.push(d);
            None
        }
    }
}

fn read_file(path: &Path, diags: &mut Diagnostics) -> Option<SourceFile> {
    match std::fs::read(path) {
        Ok(bytes) => match String::from_utf8(bytes) {
            Ok(text) => Some(SourceFile { path: path.to_path_buf(), text }),
            Err(e) => {
                let at = e.utf8_error().valid_up_to();
                let text = String::from_utf8_lossy(&e.into_bytes()[..at]).into_owned();
                let line = text.matches('\n').count() + 1;
                let col = text.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
                diags.push(Diagnostic::new(path, (line, col), "", "the file is not valid UTF-8").with_help("save it as UTF-8"));
                None
            }
        },
        Err(e) => {
            let what = match e.kind() {
                std::io::ErrorKind::NotFound => "the file does not exist".to_string(),
                std::io::ErrorKind::PermissionDenied => "permission denied reading the file".to_string(),
                _ => format!("the file cannot be read: {e}"),
            };
            diags.push(Diagnostic::new(path, (1, 1), "", what));
            None
        }
    }
}

/// Every file with one of `exts` directly in `dir`, sorted by name. Hidden
/// files and editor leftovers (`.swp`, `~`) are skipped.
fn read_dir(dir: &Path, exts: &[&str], diags: &mut Diagnostics) -> Vec<SourceFile> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) => {
            let what = match e.kind() {
                std::io::ErrorKind::NotFound => "the directory does not exist".to_string(),
                std::io::ErrorKind::PermissionDenied => "permission denied listing the directory".to_string(),
                _ => format!("the directory cannot be read: {e}"),
            };
            diags.push(Diagnostic::new(dir, (1, 1), "", what));
            return Vec::new();
        }
    };
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            !name.starts_with('.') && p.extension().and_then(|e| e.to_str()).is_some_and(|e| exts.contains(&e)) && p.is_file()
        })
        .collect();
    paths.sort();
    paths.into_iter().filter_map(|p| read_file(&p, diags)).collect()
}
