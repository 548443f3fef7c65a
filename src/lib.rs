//! rootkey-operator: hands an Azure Managed HSM key to Antimatter as a domain's root encryption key.
#![forbid(unsafe_code)]

pub mod api;
pub mod crd;
pub mod script;
