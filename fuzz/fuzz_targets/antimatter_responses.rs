#![no_main]
//! Antimatter API responses: root keys, pairing results, providers.
use libfuzzer_sys::fuzz_target;
use rootkey_operator::antimatter::{PairingResult, Provider, RootKey};

fuzz_target!(|data: &[u8]| {
    let _ = serde_json::from_slice::<RootKey>(data);
    let _ = serde_json::from_slice::<PairingResult>(data);
    if let Ok(provider) = serde_json::from_slice::<Provider>(data) {
        let _ = provider.application_id();
    }
});
