//! What a service handler is given: the model, the control plane, the token authority and the
//! endpoints, plus [`Loopback`], a way to send a request back through the sandbox without
//! knowing the server. Imports the layers below the services.

use crate::control::Control;
use crate::federation::TestIssuer;
use crate::model::Model;
use crate::tokens::Tokens;
use crate::wire::admin::Endpoints;
use crate::wire::{Req, Resp};
use std::future::Future;
use std::pin::Pin;

/// One sandbox instance, shared by every connection.
pub(crate) struct Context {
    pub model: Model,
    pub control: Control,
    pub tokens: Tokens,
    /// The sandbox's own OpenID issuer (`oidc.sandbox.localhost`).
    pub issuer: TestIssuer,
    /// TLS for fetching federated issuers' metadata: the sandbox CA and the configured ones.
    pub issuer_tls: std::sync::Arc<rustls::ClientConfig>,
    pub endpoints: Endpoints,
}

impl Context {
    /// The sandbox clock (see [`Control::now`]).
    pub fn now(&self) -> i64 {
        self.control.now()
    }

    /// Changes the settings; a moved clock may make rotation policies due.
    pub fn patch_settings(&self, p: &crate::wire::admin::SettingsPatch) {
        self.control.patch_settings(p);
        self.model.rotate_due_keys(None, self.now());
    }

    /// `https://<hsm>.managedhsm.sandbox.localhost:PORT`.
    pub fn hsm_url(&self, hsm: &str) -> String {
        format!("https://{hsm}.{}", self.endpoints.hsm_dns_suffix)
    }
}

/// Sends a request through the sandbox's own dispatch, as a client would (latency, faults, rate
/// limits, counters and the request log apply). The server implements it; Antimatter's pairing
/// check uses it, so the services need not import the server.
pub(crate) trait Loopback: Send + Sync {
    /// The answer, or `None` when a fault dropped the connection or trickles the body.
    fn send(&self, req: Req) -> Pin<Box<dyn Future<Output = Option<Resp>> + Send + '_>>;
}
