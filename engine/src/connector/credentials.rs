//! Credentials that must be obtained and kept fresh: OAuth 2.0 access
//! tokens (refresh-token grant) and login sessions.
//!
//! One slot per connection holds the live credential. Obtaining one is
//! single-flight (concurrent requests wait for the same refresh or login),
//! and a credential is renewed before it lapses (token expiry, session idle
//! timeout) or when the platform refuses it. OAuth refresh tokens that
//! rotate are written to the state store before the new access token is
//! used, so a restart continues with the newest refresh token; a refresh
//! token changed in the connection's secrets replaces the stored one.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use tokio::time::Instant;

use super::auth::{Auth, OAuth2Spec, SessionSpec, basic};
use super::client::{CallError, HttpClient};
use super::{Connection, webhook};
use crate::adapters::template::Templates;
use crate::config::raw::ClientAuth;
use crate::config::secret::Secret;

/// A refresh token as persisted, with the configured token it descends from.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StoredToken {
    /// Digest of the refresh token configured when this chain began.
    pub origin: String,
    pub refresh_token: String,
    pub access_token: Option<String>,
    pub expires_at_unix_ms: Option<u64>,
}

type SaveFuture = Pin<Box<dyn Future<Output = Result<(), String>> + Send>>;

/// Where rotated refresh tokens are kept across restarts.
pub trait TokenStore: Send + Sync {
    fn load_token(&self, connection: &str) -> Option<StoredToken>;
    fn save_token(&self, connection: &str, token: StoredToken) -> SaveFuture;
}

/// A live credential: what it adds to requests.
pub struct Credential {
    pub headers: Vec<(String, String)>,
    /// `session.*` for templates (sessions).
    pub session: Value,
    /// Values to scrub from error text.
    pub redact: Vec<Secret>,
    generation: u64,
    expires_at: Option<Instant>,
    idle_timeout: Option<Duration>,
    last_used: Mutex<Instant>,
}

impl Credential {
    fn fresh(&self, now: Instant, refresh_before: Duration) -> bool {
        let not_expired = self.expires_at.is_none_or(|at| now + refresh_before < at);
        // Renew a little before the platform's idle limit, not exactly at it.
        let not_idle = self.idle_timeout.is_none_or(|idle| {
            let last = *self.last_used.lock().unwrap_or_else(|p| p.into_inner());
            now.duration_since(last) < idle.mul_f64(0.9)
        });
        not_expired && not_idle
    }

    pub fn touch(&self) {
        *self.last_used.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
    }

    pub fn generation(&self) -> u64 {
        self.generation
    }
}

#[derive(Default)]
struct SlotState {
    current: Option<Arc<Credential>>,
    generation: u64,
    /// The refresh token in use and the digest of the configured one it descends from.
    refresh: Option<(Secret, String)>,
}

/// One connection's credential.
#[derive(Default)]
pub struct CredentialSlot {
    state: tokio::sync::Mutex<SlotState>,
}

impl CredentialSlot {
    /// Drop the credential of `generation` (refused by the platform); a
    /// newer one obtained meanwhile stays.
    pub async fn invalidate(&self, generation: u64) {
        let mut s = self.state.lock().await;
        if s.current.as_ref().is_some_and(|c| c.generation == generation) {
            s.current = None;
        }
    }
}

fn digest(text: &str) -> String {
    webhook::encode_hex(&Sha256::digest(text.as_bytes())[..12])
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

fn missing(conn: &Connection, name: &str) -> CallError {
    CallError::Render(format!("connection `{}` has no secret `{name}` for its auth", conn.name))
}

/// The connection's live credential, obtained or renewed as needed.
pub async fn current(
    client: &HttpClient,
    templates: &Templates,
    conn: &Connection,
    slot: &CredentialSlot,
) -> Result<Arc<Credential>, CallError> {
    let mut s = slot.state.lock().await;
    let refresh_before = match &conn.connector.auth {
        Auth::OAuth2(o) => o.refresh_before,
        _ => Duration::ZERO,
    };
    if let Some(c) = &s.current {
        if c.fresh(Instant::now(), refresh_before) {
            return Ok(c.clone());
        }
    }
    s.generation += 1;
    let generation = s.generation;
    let credential = match &conn.connector.auth {
        Auth::OAuth2(spec) => refresh(client, templates, conn, spec, &mut s, generation).await?,
        Auth::Session(spec) => login(client, templates, conn, spec, generation).await?,
        _ => return Err(CallError::Render(format!("connection `{}` has no renewable credential", conn.name))),
    };
    let credential = Arc::new(credential);
    s.current = Some(credential.clone());
    Ok(credential)
}

/// The refresh token to use: the stored descendant of the configured one, or the configured one.
fn refresh_token_in_use(
    client: &HttpClient,
    conn: &Connection,
    spec: &OAuth2Spec,
    s: &mut SlotState,
) -> Result<(Secret, String), CallError> {
    let configured = conn.secret(&spec.refresh_token).ok_or_else(|| missing(conn, &spec.refresh_token))?;
    let origin = digest(configured.expose());
    if let Some((token, from)) = &s.refresh {
        if *from == origin {
            return Ok((token.clone(), origin));
        }
        tracing::info!(connection = %conn.name, "the configured refresh token changed; using the new one");
    }
    let stored = client.token_store().and_then(|store| store.load_token(&conn.name)).filter(|t| t.origin == origin);
    let token = stored.map_or_else(|| configured.clone(), |t| Secret::new(t.refresh_token));
    s.refresh = Some((token.clone(), origin.clone()));
    Ok((token, origin))
}

async fn refresh(
    client: &HttpClient,
    templates: &Templates,
    conn: &Connection,
    spec: &OAuth2Spec,
    s: &mut SlotState,
    generation: u64,
) -> Result<Credential, CallError> {
    let (refresh_token, origin) = refresh_token_in_use(client, conn, spec, s)?;
    // A stored access token that is still good spares a refresh at start.
    if s.current.is_none() {
        if let Some(stored) = client.token_store().and_then(|st| st.load_token(&conn.name)).filter(|t| t.origin == origin) {
            let now_ms = unix_ms(SystemTime::now());
            if let (Some(access), Some(at)) = (stored.access_token, stored.expires_at_unix_ms) {
                let left = Duration::from_millis(at.saturating_sub(now_ms));
                if left > spec.refresh_before {
                    return Ok(bearer(spec, &access, Some(Instant::now() + left), generation));
                }
            }
        }
    }
    let client_id = conn.secret(&spec.client_id).ok_or_else(|| missing(conn, &spec.client_id))?;
    let client_secret = conn.secret(&spec.client_secret).ok_or_else(|| missing(conn, &spec.client_secret))?;
    let ctx = json!({
        "values": conn.values,
        "refresh_token": refresh_token.expose(),
        "client_id": client_id.expose(),
        "client_secret": client_secret.expose(),
        "client_basic": match spec.client_auth {
            ClientAuth::Basic => basic(client_id.expose(), client_secret.expose()),
            ClientAuth::Body => String::new(),
        },
    });
    let redact = [refresh_token.clone(), client_secret.clone()];
    let ex =
        client.call_unauthenticated(templates, conn, &spec.token_request, &ctx, &redact).await.map_err(|e| token_refused(conn, spec, e))?;
    let access =
        ex.body.get("access_token").and_then(Value::as_str).filter(|t| !t.is_empty()).ok_or_else(|| {
            CallError::Render(format!("the token endpoint of connection `{}` answered without an access_token", conn.name))
        })?;
    let expires_in = ex.body.get("expires_in").and_then(|v| v.as_u64().or_else(|| v.as_str()?.parse().ok())).unwrap_or(3600);
    let rotated = ex.body.get("refresh_token").and_then(Value::as_str).filter(|t| !t.is_empty() && *t != refresh_token.expose());
    let next_refresh = rotated.map_or_else(|| refresh_token.clone(), Secret::new);
    if let Some(store) = client.token_store() {
        let stored = StoredToken {
            origin: origin.clone(),
            refresh_token: next_refresh.expose().to_string(),
            access_token: Some(access.to_string()),
            expires_at_unix_ms: Some(unix_ms(SystemTime::now() + Duration::from_secs(expires_in))),
        };
        // The old refresh token may be dead already: keep the new one before using anything.
        if let Err(e) = store.save_token(&conn.name, stored).await {
            tracing::error!(connection = %conn.name, "the refreshed OAuth token could not be stored: {e}");
        }
    }
    if rotated.is_some() {
        tracing::info!(connection = %conn.name, "OAuth refresh token rotated");
    }
    s.refresh = Some((next_refresh, origin));
    tracing::debug!(connection = %conn.name, expires_in, "OAuth access token refreshed");
    Ok(bearer(spec, access, Some(Instant::now() + Duration::from_secs(expires_in)), generation))
}

fn bearer(spec: &OAuth2Spec, access: &str, expires_at: Option<Instant>, generation: u64) -> Credential {
    Credential {
        headers: vec![(spec.header.clone(), format!("{}{access}", spec.prefix))],
        session: Value::Null,
        redact: vec![Secret::new(access)],
        generation,
        expires_at,
        idle_timeout: None,
        last_used: Mutex::new(Instant::now()),
    }
}

/// A refused refresh explains itself: what the platform said and what to do.
fn token_refused(conn: &Connection, spec: &OAuth2Spec, e: CallError) -> CallError {
    match e {
        CallError::Failed { message, retryable, ambiguous, retry_after, summary, .. } if !retryable => {
            let message = format!(
                "the OAuth token endpoint refused to refresh the access token of connection `{}` ({message}); if the refresh token was revoked or expired, authorize the app again and put the new refresh token in secret `{}`",
                conn.name, spec.refresh_token
            );
            CallError::Failed { message, retryable, ambiguous, retry_after, summary, auth_refused: false }
        }
        other => other,
    }
}

async fn login(
    client: &HttpClient,
    templates: &Templates,
    conn: &Connection,
    spec: &SessionSpec,
    generation: u64,
) -> Result<Credential, CallError> {
    let Some(request) = conn.connector.requests.get(&spec.login) else {
        return Err(CallError::Render(format!("connector `{}` has no login request `{}`", conn.connector.name, spec.login)));
    };
    let secrets: Map<String, Value> = conn.secrets.iter().map(|(k, v)| (k.clone(), json!(v.expose()))).collect();
    let ctx = json!({ "values": conn.values, "secrets": secrets });
    let redact: Vec<Secret> = conn.secrets.values().cloned().collect();
    let ex = client.call_unauthenticated(templates, conn, request, &ctx, &redact).await.map_err(|e| match e {
        CallError::Failed { message, retryable, ambiguous, retry_after, summary, .. } => CallError::Failed {
            message: format!("logging in to connection `{}` failed: {message}", conn.name),
            retryable,
            ambiguous,
            retry_after,
            summary,
            auth_refused: false,
        },
        other => other,
    })?;
    let mut session = Map::new();
    for (name, path) in &spec.keep {
        let v = path.first(&ex.body).cloned().filter(|v| !matches!(v, Value::Null | Value::Bool(false)));
        let Some(v) = v else {
            return Err(CallError::Failed {
                message: format!("logging in to connection `{}` gave no `{name}` at `{}`: the login was refused", conn.name, path.source()),
                retryable: false,
                ambiguous: false,
                retry_after: None,
                summary: Box::new(ex.summary.clone()),
                auth_refused: false,
            });
        };
        session.insert(name.clone(), v);
    }
    let mut redact = Vec::new();
    let mut cookie_pairs = Vec::new();
    for name in &spec.cookies {
        if let Some(value) = ex.cookies.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()) {
            redact.push(Secret::new(value.as_str()));
            session.insert(format!("cookie_{name}"), json!(value));
            cookie_pairs.push(format!("{name}={value}"));
        }
    }
    let session = Value::Object(session);
    let mut headers = Vec::new();
    if !cookie_pairs.is_empty() {
        headers.push(("Cookie".to_string(), cookie_pairs.join("; ")));
    }
    let header_ctx = json!({ "values": conn.values, "session": session });
    for (name, t) in &spec.headers {
        let v = templates.render(t, &header_ctx)?;
        redact.push(Secret::new(v.as_str()));
        headers.push((name.clone(), v));
    }
    for v in session.as_object().into_iter().flat_map(|m| m.values()) {
        if let Value::String(s) = v {
            redact.push(Secret::new(s.as_str()));
        }
    }
    let idle_minutes =
        spec.idle_minutes_from.as_ref().and_then(|p| p.first(&ex.body)).and_then(|v| v.as_f64()).or(spec.idle_minutes.map(|m| m as f64));
    tracing::info!(connection = %conn.name, "logged in");
    Ok(Credential {
        headers,
        session,
        redact,
        generation,
        expires_at: None,
        idle_timeout: idle_minutes.filter(|m| *m > 0.0).map(|m| Duration::from_secs_f64(m * 60.0)),
        last_used: Mutex::new(Instant::now()),
    })
}
