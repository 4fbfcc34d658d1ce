//! Authenticating an outgoing request: the headers a connector's auth
//! scheme adds, with the connection's secrets.

use base64::Engine as _;

use super::{Auth, Connection};

#[derive(Debug, Clone, thiserror::Error)]
#[error("connection `{connection}` has no secret `{secret}` for its auth")]
pub struct MissingSecret {
    pub connection: String,
    pub secret: String,
}

/// The headers that authenticate a request of `conn`.
pub fn headers(conn: &Connection) -> Result<Vec<(String, String)>, MissingSecret> {
    let need = |name: &str| conn.secret(name).ok_or_else(|| MissingSecret { connection: conn.name.clone(), secret: name.to_string() });
    Ok(match &conn.connector.auth {
        Auth::None => Vec::new(),
        Auth::Header { header, secret, prefix } => vec![(header.clone(), format!("{prefix}{}", need(secret)?.expose()))],
        Auth::Basic { username, password } => {
            let pair = format!("{}:{}", need(username)?.expose(), need(password)?.expose());
            vec![("Authorization".into(), format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(pair)))]
        }
    })
}
