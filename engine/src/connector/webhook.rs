//! Webhook signature verification (and signing, for the sandbox).
//!
//! Verification runs on the raw body bytes before any JSON parsing, and the
//! comparison is constant-time (`Mac::verify_slice`).

use axum::http::HeaderMap;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::{Sha256, Sha512};

use super::SignatureSpec;
use crate::config::raw::{SignatureAlgorithm, SignatureEncoding, SignedBytes};
use crate::config::secret::Secret;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("the signature header {0} is missing")]
    MissingHeader(String),
    #[error("the signature in {0} is not valid {1}")]
    Malformed(String, &'static str),
    #[error("the signature in {0} does not match the body")]
    Mismatch(String),
    #[error("the connection has no secret `{0}` to verify webhooks with")]
    NoSecret(String),
}

/// Check a delivery's signature. `url` is the public URL the platform posted
/// to, needed only when the URL is part of the signed bytes.
pub fn verify(spec: &SignatureSpec, secret: Option<&Secret>, headers: &HeaderMap, body: &[u8], url: &str) -> Result<(), VerifyError> {
    let secret = secret.ok_or_else(|| VerifyError::NoSecret(spec.secret.clone()))?;
    let header =
        headers.get(spec.header.as_str()).and_then(|v| v.to_str().ok()).ok_or_else(|| VerifyError::MissingHeader(spec.header.clone()))?;
    let encoded =
        header.trim().strip_prefix(spec.prefix.as_str()).ok_or_else(|| VerifyError::Malformed(spec.header.clone(), "(wrong prefix)"))?;
    let given = match spec.encoding {
        SignatureEncoding::Base64 => {
            base64::engine::general_purpose::STANDARD.decode(encoded).map_err(|_| VerifyError::Malformed(spec.header.clone(), "base64"))?
        }
        SignatureEncoding::Hex => decode_hex(encoded).ok_or_else(|| VerifyError::Malformed(spec.header.clone(), "hex"))?,
    };
    let ok = match spec.algorithm {
        SignatureAlgorithm::HmacSha256 => check::<Hmac<Sha256>>(secret, spec.signed, url, body, &given),
        SignatureAlgorithm::HmacSha1 => check::<Hmac<sha1_alias::Sha1>>(secret, spec.signed, url, body, &given),
        SignatureAlgorithm::HmacSha512 => check::<Hmac<Sha512>>(secret, spec.signed, url, body, &given),
    };
    if ok { Ok(()) } else { Err(VerifyError::Mismatch(spec.header.clone())) }
}

fn check<M: Mac + hmac::digest::KeyInit>(secret: &Secret, signed: SignedBytes, url: &str, body: &[u8], given: &[u8]) -> bool {
    let Ok(mut mac) = <M as hmac::digest::KeyInit>::new_from_slice(secret.expose().as_bytes()) else {
        return false;
    };
    if signed == SignedBytes::UrlAndBody {
        mac.update(url.as_bytes());
    }
    mac.update(body);
    mac.verify_slice(given).is_ok()
}

/// Compute the header value a platform would send (used by the sandbox and tests).
pub fn sign(spec: &SignatureSpec, secret: &str, url: &str, body: &[u8]) -> String {
    let mut signed = Vec::with_capacity(url.len() + body.len());
    if spec.signed == SignedBytes::UrlAndBody {
        signed.extend_from_slice(url.as_bytes());
    }
    signed.extend_from_slice(body);
    let raw = hmac_bytes(spec.algorithm, secret.as_bytes(), &signed);
    let encoded = match spec.encoding {
        SignatureEncoding::Base64 => base64::engine::general_purpose::STANDARD.encode(raw),
        SignatureEncoding::Hex => encode_hex(&raw),
    };
    format!("{}{}", spec.prefix, encoded)
}

/// Raw HMAC of `data` under `key`.
pub fn hmac_bytes(algorithm: SignatureAlgorithm, key: &[u8], data: &[u8]) -> Vec<u8> {
    fn run<M: Mac + hmac::digest::KeyInit>(key: &[u8], data: &[u8]) -> Vec<u8> {
        let mut mac = <M as hmac::digest::KeyInit>::new_from_slice(key).expect("HMAC takes keys of any length");
        mac.update(data);
        mac.finalize().into_bytes().to_vec()
    }
    match algorithm {
        SignatureAlgorithm::HmacSha256 => run::<Hmac<Sha256>>(key, data),
        SignatureAlgorithm::HmacSha1 => run::<Hmac<sha1_alias::Sha1>>(key, data),
        SignatureAlgorithm::HmacSha512 => run::<Hmac<Sha512>>(key, data),
    }
}

/// Lower-case hex text of `bytes`.
pub fn encode_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    out
}

fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok()).collect()
}

/// SHA-1 is only ever used where a platform still signs with HMAC-SHA1.
mod sha1_alias {
    pub use sha1::Sha1;
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn spec(encoding: SignatureEncoding, signed: SignedBytes) -> SignatureSpec {
        SignatureSpec {
            header: "X-Sig".into(),
            algorithm: SignatureAlgorithm::HmacSha256,
            encoding,
            secret: "s".into(),
            prefix: String::new(),
            signed,
        }
    }

    #[test]
    fn known_vector_base64() {
        // HMAC-SHA256("key", "The quick brown fox jumps over the lazy dog")
        let s = spec(SignatureEncoding::Hex, SignedBytes::Body);
        assert_eq!(
            sign(&s, "key", "", b"The quick brown fox jumps over the lazy dog"),
            "f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8"
        );
    }

    #[test]
    fn verifies_and_rejects() {
        for s in [spec(SignatureEncoding::Base64, SignedBytes::Body), spec(SignatureEncoding::Hex, SignedBytes::UrlAndBody)] {
            let secret = Secret::new("topsecret");
            let body = br#"{"id":1}"#;
            let url = "https://example.test/hooks/x";
            let mut h = HeaderMap::new();
            h.insert("x-sig", HeaderValue::from_str(&sign(&s, "topsecret", url, body)).unwrap());
            assert_eq!(verify(&s, Some(&secret), &h, body, url), Ok(()));
            assert!(matches!(verify(&s, Some(&secret), &h, b"{\"id\":2}", url), Err(VerifyError::Mismatch(_))));
            assert!(matches!(verify(&s, Some(&secret), &HeaderMap::new(), body, url), Err(VerifyError::MissingHeader(_))));
        }
    }
}
