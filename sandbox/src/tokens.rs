//! The sandbox's token authority: one signing key for the Entra access tokens and the Antimatter
//! domain tokens it issues, and the validation the HSM and Graph apply to access tokens. Imports
//! [`crate::jwt`] and [`crate::util`].

use crate::jwt::{self, JwtError};
use serde_json::Value;

/// Claims of a validated sandbox access token.
#[derive(Debug, Clone)]
pub(crate) struct Claims {
    pub tid: String,
    pub oid: String,
    pub appid: String,
    pub aud: String,
    pub roles: Vec<String>,
}

/// Why an access token was refused.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum TokenError {
    Malformed,
    Expired,
}

pub(crate) struct Tokens {
    key: Vec<u8>,
}

impl Tokens {
    /// An authority with a fresh random key.
    pub fn new() -> Tokens {
        Tokens { key: crate::util::random_bytes(32) }
    }

    pub fn sign(&self, kid: &str, claims: &Value) -> String {
        jwt::sign(&self.key, kid, claims)
    }

    /// The claims of a token this authority signed (expiry is the caller's business).
    pub fn verify(&self, token: &str) -> Result<Value, JwtError> {
        jwt::verify(&self.key, token)
    }

    /// Verify signature and expiry of an access token at time `now`.
    pub fn validate_access_token(&self, token: &str, now: i64) -> Result<Claims, TokenError> {
        let c = self.verify(token).map_err(|_| TokenError::Malformed)?;
        let s = |k: &str| c.get(k).and_then(Value::as_str).unwrap_or_default().to_string();
        let exp = c.get("exp").and_then(Value::as_i64).ok_or(TokenError::Malformed)?;
        let claims = Claims {
            tid: s("tid"),
            oid: s("oid"),
            appid: s("appid"),
            aud: s("aud"),
            roles: c
                .get("roles")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(Value::as_str).map(str::to_string).collect())
                .unwrap_or_default(),
        };
        if exp <= now {
            return Err(TokenError::Expired);
        }
        Ok(claims)
    }
}
