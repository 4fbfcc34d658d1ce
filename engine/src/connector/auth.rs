//! How a connector authenticates its requests, as compiled from its `auth`
//! section, and the headers the stateless schemes add.
//!
//! Stateless schemes (a secret in a header, HTTP Basic, a signature over the
//! query string) are computed per request here. The stateful ones (an OAuth
//! access token, a login session) live in `credentials.rs`, which obtains,
//! caches and renews them.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;

use super::webhook::{encode_hex, hmac_bytes};
use super::{Connection, RequestSpec};
use crate::adapters::jsonpath::JsonPath;
use crate::adapters::template::Template;
use crate::config::raw::{ClientAuth, SignatureAlgorithm, SignatureEncoding};

#[derive(Clone)]
pub enum Auth {
    None,
    /// A secret in a header, behind an optional prefix.
    Header {
        header: String,
        secret: String,
        prefix: String,
    },
    Basic {
        username: String,
        password: String,
    },
    OAuth2(Arc<OAuth2Spec>),
    Session(Arc<SessionSpec>),
    SignedQuery(Arc<SignedQuerySpec>),
}

/// The OAuth 2.0 refresh-token grant.
pub struct OAuth2Spec {
    /// Secret names.
    pub client_id: String,
    pub client_secret: String,
    pub refresh_token: String,
    pub client_auth: ClientAuth,
    pub header: String,
    pub prefix: String,
    /// Statuses meaning the access token was refused.
    pub refresh_on: Vec<u16>,
    pub refresh_before: Duration,
    /// The token call (`oauth2_token`), sent without auth; it sees
    /// `refresh_token`, `client_id`, `client_secret` and `client_basic`.
    pub token_request: Arc<RequestSpec>,
}

/// A login session.
pub struct SessionSpec {
    /// The login request's name.
    pub login: String,
    pub keep: Vec<(String, JsonPath)>,
    pub cookies: Vec<String>,
    pub headers: Vec<(String, Template)>,
    pub idle_minutes_from: Option<JsonPath>,
    pub idle_minutes: Option<u64>,
    pub relogin_on: Vec<u16>,
    pub relogin_when: Option<JsonPath>,
    pub request_secrets: Vec<String>,
}

/// An HMAC over each request's query string.
pub struct SignedQuerySpec {
    pub header: String,
    pub secret: String,
    pub algorithm: SignatureAlgorithm,
    pub encoding: SignatureEncoding,
    /// Header name → secret name.
    pub headers: Vec<(String, String)>,
}

impl Auth {
    /// Statuses that mean the credential was refused and a fresh one may help.
    pub fn renew_on(&self) -> &[u16] {
        match self {
            Auth::OAuth2(o) => &o.refresh_on,
            Auth::Session(s) => &s.relogin_on,
            _ => &[],
        }
    }

    pub fn kind_name(&self) -> &'static str {
        match self {
            Auth::None => "none",
            Auth::Header { .. } => "header",
            Auth::Basic { .. } => "basic",
            Auth::OAuth2(_) => "oauth2_refresh_token",
            Auth::Session(_) => "session",
            Auth::SignedQuery(_) => "signed_query",
        }
    }
}

#[derive(Debug, Clone, thiserror::Error)]
#[error("connection `{connection}` has no secret `{secret}` for its auth")]
pub struct MissingSecret {
    pub connection: String,
    pub secret: String,
}

fn need<'a>(conn: &'a Connection, name: &str) -> Result<&'a str, MissingSecret> {
    conn.secret(name).map(|s| s.expose()).ok_or_else(|| MissingSecret { connection: conn.name.clone(), secret: name.to_string() })
}

/// `Basic base64(user:password)`.
pub fn basic(user: &str, password: &str) -> String {
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}")))
}

/// The headers a stateless scheme adds to a request of `conn` going to `url`.
pub fn static_headers(conn: &Connection, url: &str) -> Result<Vec<(String, String)>, MissingSecret> {
    Ok(match &conn.connector.auth {
        Auth::None | Auth::OAuth2(_) | Auth::Session(_) => Vec::new(),
        Auth::Header { header, secret, prefix } => vec![(header.clone(), format!("{prefix}{}", need(conn, secret)?))],
        Auth::Basic { username, password } => vec![("Authorization".into(), basic(need(conn, username)?, need(conn, password)?))],
        Auth::SignedQuery(spec) => {
            let mut out = Vec::with_capacity(spec.headers.len() + 1);
            for (header, secret) in &spec.headers {
                out.push((header.clone(), need(conn, secret)?.to_string()));
            }
            out.push((spec.header.clone(), sign_query(spec, need(conn, &spec.secret)?, url)));
            out
        }
    })
}

/// The signature of `url`'s query string (the bytes after `?`, exactly as
/// sent; empty when there is none).
pub fn sign_query(spec: &SignedQuerySpec, key: &str, url: &str) -> String {
    let query = url.split_once('?').map_or("", |(_, q)| q.split('#').next().unwrap_or(""));
    let raw = hmac_bytes(spec.algorithm, key.as_bytes(), query.as_bytes());
    match spec.encoding {
        SignatureEncoding::Base64 => base64::engine::general_purpose::STANDARD.encode(raw),
        SignatureEncoding::Hex => encode_hex(&raw),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> SignedQuerySpec {
        SignedQuerySpec {
            header: "api-auth-signature".into(),
            secret: "api_key".into(),
            algorithm: SignatureAlgorithm::HmacSha256,
            encoding: SignatureEncoding::Base64,
            headers: vec![],
        }
    }

    #[test]
    fn query_signatures_match_the_platform_test_vectors() {
        let s = spec();
        assert_eq!(
            sign_query(&s, "ul-test-api-key", "https://api.example/StockOnHand?productCode=PIN-STERN-GDZ&warehouseCode=MAIN"),
            "509gdDLg3QwThR0lS1jVLwDyFPoAMpKqAypJ9zhIsoY="
        );
        assert_eq!(sign_query(&s, "ul-test-api-key", "https://api.example/SalesOrders/1"), "LTHZDRDN7nFJWtv48NvWJLRHl+HeT6nw8FLBr9HWiaY=");
    }
}
