#![no_main]
//! Managed HSM role assignments.
use libfuzzer_sys::fuzz_target;
use rootkey_operator::azure::rbac::RoleAssignment;

fuzz_target!(|data: &[u8]| {
    let _ = serde_json::from_slice::<RoleAssignment>(data);
});
