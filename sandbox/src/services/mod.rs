//! One module per service, doing HTTP translation only: parse the request into a route, answer
//! each route in its own function by reading the model or calling its changes, and render the
//! response. They import the context, the model, the control plane, the token authority and the
//! wire types; none imports the server.

pub(crate) mod admin;
pub(crate) mod antimatter;
pub(crate) mod entra;
pub(crate) mod graph;
pub(crate) mod hsm;
pub(crate) mod oidc;
