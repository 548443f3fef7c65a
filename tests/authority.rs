//! Authority and ownership: each attack a hostile namespace user could try with the default install,
//! against the real API server and the sandbox. One module per part of the authority model.

mod support;

#[path = "authority/revoke.rs"]
mod revoke;
