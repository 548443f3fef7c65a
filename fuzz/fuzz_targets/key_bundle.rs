#![no_main]
//! Key bundles from the HSM, through the SDK model and the operator's reading of it.
use azure_security_keyvault_keys::models::Key;
use libfuzzer_sys::fuzz_target;
use rootkey_operator::azure::keys::key_info;

fuzz_target!(|data: &[u8]| {
    if let Ok(key) = serde_json::from_slice::<Key>(data) {
        let _ = key_info(key);
    }
});
