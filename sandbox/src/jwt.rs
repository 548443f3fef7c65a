//! Minimal JWT: HS256 signing and verification, and unverified decoding of foreign JWTs. Imports
//! [`crate::util`].

use crate::util::{b64url, b64url_decode};
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Sign `claims` with HS256 under `key`, with an optional `kid` header.
pub fn sign(key: &[u8], kid: &str, claims: &Value) -> String {
    let header = serde_json::json!({"typ": "JWT", "alg": "HS256", "kid": kid});
    let h = b64url(header.to_string().as_bytes());
    let c = b64url(claims.to_string().as_bytes());
    let input = format!("{h}.{c}");
    let sig = mac(key, input.as_bytes());
    format!("{input}.{}", b64url(&sig))
}

fn mac(key: &[u8], data: &[u8]) -> Vec<u8> {
    match HmacSha256::new_from_slice(key) {
        Ok(mut m) => {
            m.update(data);
            m.finalize().into_bytes().to_vec()
        }
        Err(_) => Vec::new(),
    }
}

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JwtError {
    /// Not three base64url parts of JSON.
    Malformed,
    /// Signature does not verify under the sandbox key.
    BadSignature,
}

/// Verify an HS256 token signed by [`sign`] and return its claims (expiry is the caller's business).
pub fn verify(key: &[u8], token: &str) -> Result<Value, JwtError> {
    let mut parts = token.split('.');
    let (Some(h), Some(c), Some(s), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return Err(JwtError::Malformed);
    };
    let header: Value = b64url_decode(h).and_then(|b| serde_json::from_slice(&b).ok()).ok_or(JwtError::Malformed)?;
    if header.get("alg").and_then(Value::as_str) != Some("HS256") {
        return Err(JwtError::BadSignature);
    }
    let sig = b64url_decode(s).ok_or(JwtError::Malformed)?;
    let input = format!("{h}.{c}");
    let mut m = HmacSha256::new_from_slice(key).map_err(|_| JwtError::BadSignature)?;
    m.update(input.as_bytes());
    m.verify_slice(&sig).map_err(|_| JwtError::BadSignature)?;
    b64url_decode(c).and_then(|b| serde_json::from_slice(&b).ok()).ok_or(JwtError::Malformed)
}

/// Decode the header of a JWT without verifying its signature.
pub fn decode_unverified_header(token: &str) -> Option<Value> {
    let v: Value = serde_json::from_slice(&b64url_decode(token.split('.').next()?)?).ok()?;
    v.is_object().then_some(v)
}

/// Decode the claims of a JWT without verifying its signature.
pub fn decode_unverified(token: &str) -> Option<Value> {
    let mut parts = token.split('.');
    let _h = parts.next()?;
    let c = parts.next()?;
    let _s = parts.next()?;
    let v: Value = serde_json::from_slice(&b64url_decode(c)?).ok()?;
    v.is_object().then_some(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let k = b"k3y";
        let t = sign(k, "x", &serde_json::json!({"a": 1}));
        assert_eq!(verify(k, &t).unwrap()["a"], 1);
        assert_eq!(verify(b"other", &t), Err(JwtError::BadSignature));
        assert_eq!(decode_unverified(&t).unwrap()["a"], 1);
        assert_eq!(verify(k, "a.b"), Err(JwtError::Malformed));
    }
}
