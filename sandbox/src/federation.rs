//! Federated assertions (workload identity): checking a JWT's signature against the keys its
//! issuer publishes (JWKS; RS256 and ES256, with `ring`), and the sandbox's own test issuer, an
//! ES256 key for tests that have no Kubernetes API server to issue service-account tokens. Imports
//! [`crate::util`].

use crate::util::{b64url, b64url_decode};
use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, KeyPair, RsaPublicKeyComponents, UnparsedPublicKey};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// Why an assertion's signature was not accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignatureError {
    /// Not a JWS with a JSON header.
    Malformed,
    /// The issuer publishes no key with the assertion's `kid`.
    UnknownKey(String),
    /// The key was found but the signature does not verify under it.
    BadSignature(String),
    /// An algorithm other than RS256 and ES256 (what Kubernetes and Entra's federation accept).
    UnsupportedAlgorithm(String),
}

/// Verifies the signature of the compact JWS `token` under the matching key of `jwks`
/// (`{"keys": [...]}`): by `kid`, or the only key when the token names none.
pub fn verify(token: &str, jwks: &Value) -> Result<(), SignatureError> {
    let mut parts = token.split('.');
    let (Some(h), Some(c), Some(s), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return Err(SignatureError::Malformed);
    };
    let header: Value =
        b64url_decode(h).and_then(|b| serde_json::from_slice(&b).ok()).ok_or(SignatureError::Malformed)?;
    let sig = b64url_decode(s).ok_or(SignatureError::Malformed)?;
    let alg = header.get("alg").and_then(Value::as_str).unwrap_or_default();
    let kid = header.get("kid").and_then(Value::as_str);
    let keys = jwks.get("keys").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
    let key = match kid {
        Some(kid) => keys.iter().find(|k| k.get("kid").and_then(Value::as_str) == Some(kid)),
        None if keys.len() == 1 => keys.first(),
        None => None,
    }
    .ok_or_else(|| SignatureError::UnknownKey(kid.unwrap_or_default().to_owned()))?;
    let field = |name: &str| key.get(name).and_then(Value::as_str).and_then(b64url_decode);
    let message = format!("{h}.{c}");
    let kid = kid.unwrap_or_default().to_owned();
    let verified = match (alg, key.get("kty").and_then(Value::as_str)) {
        ("RS256", Some("RSA")) => {
            let (Some(n), Some(e)) = (field("n"), field("e")) else { return Err(SignatureError::BadSignature(kid)) };
            RsaPublicKeyComponents { n, e }.verify(&signature::RSA_PKCS1_2048_8192_SHA256, message.as_bytes(), &sig)
        }
        ("ES256", Some("EC")) => {
            let (Some(x), Some(y)) = (field("x"), field("y")) else { return Err(SignatureError::BadSignature(kid)) };
            let point = [&[0x04][..], &x, &y].concat();
            UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, point).verify(message.as_bytes(), &sig)
        }
        ("RS256" | "ES256", _) => return Err(SignatureError::BadSignature(kid)),
        (other, _) => return Err(SignatureError::UnsupportedAlgorithm(other.to_owned())),
    };
    verified.map_err(|_| SignatureError::BadSignature(kid))
}

/// The sandbox's own OpenID issuer key: P-256, new at every start.
pub struct TestIssuer {
    key: EcdsaKeyPair,
    kid: String,
    rng: SystemRandom,
}

impl TestIssuer {
    pub fn generate() -> Result<TestIssuer, ring::error::Unspecified> {
        let rng = SystemRandom::new();
        let alg = &signature::ECDSA_P256_SHA256_FIXED_SIGNING;
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(alg, &rng)?;
        let key = EcdsaKeyPair::from_pkcs8(alg, pkcs8.as_ref(), &rng).map_err(|_| ring::error::Unspecified)?;
        // Like Kubernetes: the key ID is a hash of the public key.
        let kid = b64url(&Sha256::digest(key.public_key().as_ref()));
        Ok(TestIssuer { key, kid, rng })
    }

    /// The published key set (`jwks_uri`).
    pub fn jwks(&self) -> Value {
        let point = self.key.public_key().as_ref();
        json!({"keys": [{
            "use": "sig", "kty": "EC", "crv": "P-256", "alg": "ES256", "kid": self.kid,
            "x": b64url(&point[1..33]), "y": b64url(&point[33..65]),
        }]})
    }

    /// `claims` as an ES256 JWT under this key.
    pub fn sign(&self, claims: &Value) -> Result<String, ring::error::Unspecified> {
        let header = json!({"alg": "ES256", "kid": self.kid, "typ": "JWT"});
        let input = format!("{}.{}", b64url(header.to_string().as_bytes()), b64url(claims.to_string().as_bytes()));
        let sig = self.key.sign(&self.rng, input.as_bytes())?;
        Ok(format!("{input}.{}", b64url(sig.as_ref())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_verifies_under_its_issuers_keys_only() {
        let issuer = TestIssuer::generate().expect("key");
        let other = TestIssuer::generate().expect("key");
        let token = issuer.sign(&json!({"sub": "a"})).expect("sign");
        assert_eq!(verify(&token, &issuer.jwks()), Ok(()));
        assert!(matches!(verify(&token, &other.jwks()), Err(SignatureError::UnknownKey(_))));
        // The same key ID with another key's signature.
        let forged = other.sign(&json!({"sub": "a"})).expect("sign");
        let (head, _) = token.rsplit_once('.').expect("jws");
        let (_, foreign_sig) = forged.rsplit_once('.').expect("jws");
        assert!(matches!(
            verify(&format!("{head}.{foreign_sig}"), &issuer.jwks()),
            Err(SignatureError::BadSignature(_))
        ));
        let unsigned = format!("{}.{}.", b64url(br#"{"alg":"none"}"#), b64url(br#"{"sub":"a"}"#));
        assert_eq!(verify(&unsigned, &issuer.jwks()), Err(SignatureError::UnsupportedAlgorithm("none".into())));
        assert_eq!(verify("a.b", &issuer.jwks()), Err(SignatureError::Malformed));
    }
}
