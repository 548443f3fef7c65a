//! Authority and ownership: each attack a hostile namespace user could try with the default install,
//! against the real API server and the sandbox. One module per part of the authority model.

mod support;

#[path = "authority/endpoints.rs"]
mod endpoints;
#[path = "authority/isolation.rs"]
mod isolation;
#[path = "authority/leader.rs"]
mod leader;
#[path = "authority/ownership.rs"]
mod ownership;
#[path = "authority/policy.rs"]
mod policy;
#[path = "authority/principal.rs"]
mod principal;
#[path = "authority/revoke.rs"]
mod revoke;
