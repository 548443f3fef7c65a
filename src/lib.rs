//! rootkey-operator: hands an Azure Managed HSM key to Antimatter as a domain's root encryption key.
#![forbid(unsafe_code)]

pub mod antimatter;
pub mod api;
pub mod apiserver;
pub mod authority;
pub mod azure;
pub mod bounded;
pub mod check;
pub mod cli;
pub mod cloud;
pub mod controller;
pub mod crd;
pub mod leader;
pub mod locks;
pub mod memo;
pub mod metrics;
pub mod pacing;
pub mod policy;
pub mod reference;
pub mod remote;
pub mod remotes;
pub mod run;
pub mod script;
