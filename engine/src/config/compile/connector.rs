//! Compiling `connectors.d/*.yaml`.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use super::{Compiler, Source, check_name};
use crate::config::diagnostic::did_you_mean;
use crate::config::raw;
use crate::config::yaml::Parsed;
use crate::connector::auth::{OAuth2Spec, SessionSpec, SignedQuerySpec};
use crate::connector::ratelimit::RateLimit;
use crate::connector::retry::RetryPolicy;
use crate::connector::{Auth, Body, Check, Connector, DeliveryKey, DoneWhen, ErrorRules, PerSku, RequestSpec, SignatureSpec, WebhookSpec};

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const DEFAULT_MAX_BODY: usize = 1024 * 1024;
/// Most SKUs one multi-SKU lookup may ask for (the common page limit of the platforms' APIs).
const MAX_SKUS_PER_REQUEST: usize = 250;

impl Compiler {
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
            raw::AuthRaw::Oauth2RefreshToken(o) => {
                need_secret(self, "auth.client_id", &o.client_id);
                need_secret(self, "auth.client_secret", &o.client_secret);
                need_secret(self, "auth.refresh_token", &o.refresh_token);
                match self.token_request(src, &raw.connector, o) {
                    Some(token_request) => Auth::OAuth2(Arc::new(OAuth2Spec {
                        client_id: o.client_id.clone(),
                        client_secret: o.client_secret.clone(),
                        refresh_token: o.refresh_token.clone(),
                        client_auth: o.client_auth,
                        header: o.header.clone().unwrap_or_else(|| "Authorization".into()),
                        prefix: o.prefix.clone().unwrap_or_else(|| "Bearer ".into()),
                        refresh_on: o.refresh_on.clone().unwrap_or_else(|| vec![401]),
                        refresh_before: Duration::from_secs(o.refresh_before_s.unwrap_or(120)),
                        token_request: Arc::new(token_request),
                    })),
                    None => Auth::None,
                }
            }
            raw::AuthRaw::Session(sr) => {
                if !raw.requests.contains_key(&sr.login) {
                    let mut d = src.at("auth.login", format!("no request `{}` in this connector", sr.login));
                    if let Some(s) = did_you_mean(&sr.login, raw.requests.keys().map(String::as_str)) {
                        d = d.with_help(format!("did you mean `{s}`?"));
                    }
                    self.push(d);
                }
                for name in &sr.request_secrets {
                    need_secret(self, "auth.request_secrets", name);
                }
                let mut keep = Vec::new();
                for (name, path) in &sr.keep {
                    if let Some(p) = self.jsonpath(src, &format!("auth.keep.{name}"), path) {
                        keep.push((name.clone(), p));
                    }
                }
                let headers = self.templates_of(src, "auth.headers", &sr.headers);
                let idle_minutes_from = self.opt_jsonpath(src, "auth.idle_minutes_from", sr.idle_minutes_from.as_ref()).flatten();
                let relogin_when = self.opt_jsonpath(src, "auth.relogin_when", sr.relogin_when.as_ref()).flatten();
                Auth::Session(Arc::new(SessionSpec {
                    login: sr.login.clone(),
                    keep,
                    cookies: sr.cookies.clone(),
                    headers,
                    idle_minutes_from,
                    idle_minutes: sr.idle_minutes,
                    relogin_on: sr.relogin_on.clone().unwrap_or_else(|| vec![401]),
                    relogin_when,
                    request_secrets: sr.request_secrets.clone(),
                }))
            }
            raw::AuthRaw::SignedQuery(q) => {
                need_secret(self, "auth.secret", &q.secret);
                for secret in q.headers.values() {
                    need_secret(self, "auth.headers", secret);
                }
                Auth::SignedQuery(Arc::new(SignedQuerySpec {
                    header: q.header.clone(),
                    secret: q.secret.clone(),
                    algorithm: q.algorithm,
                    encoding: q.encoding,
                    headers: q.headers.iter().map(|(h, s)| (h.clone(), s.clone())).collect(),
                }))
            }
        };
        let webhook = raw.webhook.as_ref().map(|w| {
            if let Some(sig) = &w.signature {
                need_secret(self, "webhook.signature.secret", &sig.secret);
            }
            let delivery_key = w.delivery_key.as_ref().map(|k| DeliveryKey {
                headers: k.headers.clone(),
                body: k
                    .body
                    .iter()
                    .enumerate()
                    .filter_map(|(i, p)| self.jsonpath(src, &format!("webhook.delivery_key.body.{i}"), p))
                    .collect(),
            });
            if w.delivery_key.as_ref().is_some_and(|k| k.headers.is_empty() && k.body.is_empty()) {
                self.push(src.at("webhook.delivery_key", "a delivery key needs at least one header or body field"));
            }
            let ping = w.ping.as_ref().and_then(|p| match regex::Regex::new(&format!("^(?:{p})$")) {
                Ok(r) => Some(r),
                Err(e) => {
                    self.push(src.at("webhook.ping", format!("not a valid regular expression: {e}")));
                    None
                }
            });
            if w.event_header.is_some() && w.event_path.is_some() {
                self.push(src.at("webhook.event_path", "the event type comes from `event_header` or `event_path`, not both"));
            }
            let event_path = self.opt_jsonpath(src, "webhook.event_path", w.event_path.as_ref()).flatten();
            WebhookSpec {
                event_path,
                delivery_key,
                ping,
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
            let login = match &raw.auth {
                raw::AuthRaw::Session(s) => Some(s.login.as_str()),
                _ => None,
            };
            if let Some(req) = self.request(src, &raw.connector, name, r, timeout, login) {
                requests.insert(name.clone(), Arc::new(req));
            }
        }
        for (name, r) in &raw.requests {
            if let Some(per) = &r.per_sku {
                let field = format!("requests.{name}.per_sku.single");
                match raw.requests.get(&per.single) {
                    Some(single) if single.per_sku.is_none() => {}
                    Some(_) => self.push(src.at(&field, format!("`{}` must look up one SKU (it has `per_sku` itself)", per.single))),
                    None => {
                        let mut d = src.at(&field, format!("no request `{}` in this connector", per.single));
                        if let Some(s) = did_you_mean(&per.single, raw.requests.keys().map(String::as_str)) {
                            d = d.with_help(format!("did you mean `{s}`?"));
                        }
                        self.push(d);
                    }
                }
            }
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
    pub(super) fn rate_limit(&mut self, src: Source, field: &str, raw: &raw::RateLimitRaw, base: Option<&RateLimit>) -> Option<RateLimit> {
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

    fn request(
        &mut self,
        src: Source,
        connector: &str,
        name: &str,
        r: &raw::RequestRaw,
        default_timeout: Duration,
        login_request: Option<&str>,
    ) -> Option<RequestSpec> {
        let field = format!("requests.{name}");
        let before = self.diags.len();
        let is_login = login_request == Some(name);
        let path = self.template(src, &format!("{field}.path"), &r.path);
        let absolute = r.path.starts_with("https://") || r.path.starts_with("http://");
        if !r.path.starts_with('/') && !r.path.starts_with("{{") && !absolute {
            self.push(src.at(&format!("{field}.path"), format!("path `{}` must start with `/` (or be a whole URL)", r.path)));
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
        let per_sku = r.per_sku.as_ref().map(|p| {
            if !(1..=MAX_SKUS_PER_REQUEST).contains(&p.max) {
                self.push(src.at(&format!("{field}.per_sku.max"), format!("`max` must be between 1 and {MAX_SKUS_PER_REQUEST}")));
            }
            let items = self.jsonpath(src, &format!("{field}.per_sku.items"), &p.items);
            let sku = self.jsonpath(src, &format!("{field}.per_sku.sku"), &p.sku);
            Some(PerSku { items: items?, sku: sku?, max: p.max, single: p.single.clone() })
        });
        let user_errors = self.opt_jsonpath(src, &format!("{field}.user_errors"), r.user_errors.as_ref());
        let success_when = self.opt_jsonpath(src, &format!("{field}.success_when"), r.success_when.as_ref());
        let check = r.check.as_ref().and_then(|c| {
            let field = format!("{field}.check.done_when");
            let done_when = match &c.done_when {
                raw::ConditionRaw::Path(p) if p.contains("{{") => DoneWhen::Template(self.template(src, &field, p)?),
                other => DoneWhen::Condition(self.condition(src, &field, other)?),
            };
            Some(Check { request: c.request.clone(), done_when })
        });
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
            per_sku: per_sku.flatten(),
            user_errors: user_errors?,
            success_when: success_when?,
            timeout: r.timeout_ms.map_or(default_timeout, Duration::from_millis),
            check,
            authenticate: r.auth.unwrap_or(true) && !is_login,
        })
    }

    /// The token call of the OAuth refresh-token grant, as a request of its own (`oauth2_token`).
    fn token_request(&mut self, src: Source, connector: &str, o: &raw::OAuth2Raw) -> Option<RequestSpec> {
        let path = self.template(src, "auth.token_url", &o.token_url)?;
        let mut form = vec![
            ("grant_type".to_string(), self.template(src, "auth", "refresh_token")?),
            ("refresh_token".to_string(), self.template(src, "auth", "{{refresh_token}}")?),
        ];
        let mut headers = vec![("Accept".to_string(), self.template(src, "auth", "application/json")?)];
        match o.client_auth {
            raw::ClientAuth::Basic => headers.push(("Authorization".to_string(), self.template(src, "auth", "{{client_basic}}")?)),
            raw::ClientAuth::Body => {
                form.push(("client_id".to_string(), self.template(src, "auth", "{{client_id}}")?));
                form.push(("client_secret".to_string(), self.template(src, "auth", "{{client_secret}}")?));
            }
        }
        Some(RequestSpec {
            connector: connector.to_string(),
            name: "oauth2_token".into(),
            method: raw::HttpMethod::Post,
            path,
            query: Vec::new(),
            headers,
            body: Body::Form(form),
            extract: Vec::new(),
            per_sku: None,
            user_errors: None,
            success_when: None,
            timeout: DEFAULT_TIMEOUT,
            check: None,
            authenticate: false,
        })
    }
}
