//! Applying a connector's auth scheme to an outgoing request.

use super::{Auth, Connection};

#[derive(Debug, Clone, thiserror::Error)]
#[error("connection `{connection}` has no secret `{secret}` for its auth")]
pub struct MissingSecret {
    pub connection: String,
    pub secret: String,
}

pub fn apply(conn: &Connection, req: reqwest::RequestBuilder) -> Result<reqwest::RequestBuilder, MissingSecret> {
    let need = |name: &str| conn.secret(name).ok_or_else(|| MissingSecret { connection: conn.name.clone(), secret: name.to_string() });
    Ok(match &conn.connector.auth {
        Auth::None => req,
        Auth::Header { header, secret, prefix } => {
            let value = format!("{prefix}{}", need(secret)?.expose());
            req.header(header.as_str(), value)
        }
        Auth::Basic { username, password } => req.basic_auth(need(username)?.expose(), Some(need(password)?.expose())),
    })
}
