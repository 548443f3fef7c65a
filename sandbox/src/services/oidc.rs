//! The sandbox's own OpenID issuer, `https://oidc.sandbox.localhost/<name>` for any name: the
//! discovery document and key set a Kubernetes API server publishes for its service-account
//! tokens (`/.well-known/openid-configuration`, `/openid/v1/jwks`), so tests without one can
//! present federated assertions that Entra checks like any other (tokens from the admin API).

use crate::context::Context;
use crate::wire::{Req, Resp};
use serde_json::json;

/// The issuer's host.
pub(crate) const HOST: &str = "oidc.sandbox.localhost";
const CONFIGURATION: &str = "/.well-known/openid-configuration";
const JWKS: &str = "/openid/v1/jwks";

/// An issuer route; the path prefix before it names the issuer.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Route {
    Configuration(String),
    Jwks,
    Unknown,
}

pub(crate) fn route(req: &Req) -> Route {
    match (req.method.as_str(), req.path.as_str()) {
        ("GET", p) if p.ends_with(CONFIGURATION) => Route::Configuration(p.trim_end_matches(CONFIGURATION).to_owned()),
        ("GET", p) if p.ends_with(JWKS) => Route::Jwks,
        _ => Route::Unknown,
    }
}

impl Route {
    pub(crate) fn operation(&self) -> &'static str {
        match self {
            Route::Configuration(_) => "openid-configuration",
            Route::Jwks => "jwks",
            Route::Unknown => "unknown",
        }
    }
}

pub(crate) fn handle(cx: &Context, route: Route) -> Resp {
    match route {
        // The fields Kubernetes publishes (its service-account issuer discovery).
        Route::Configuration(prefix) => Resp::json(
            200,
            &json!({
                "issuer": format!("https://{HOST}{prefix}"),
                "jwks_uri": format!("https://{HOST}:{}{prefix}{JWKS}", cx.endpoints.port),
                "response_types_supported": ["id_token"],
                "subject_types_supported": ["public"],
                "id_token_signing_alg_values_supported": ["ES256"],
            }),
        ),
        Route::Jwks => Resp::json(200, &cx.issuer.jwks()),
        Route::Unknown => Resp::text(404, "not found"),
    }
}
