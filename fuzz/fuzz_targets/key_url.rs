#![no_main]
//! Versioned key URLs (`kid`) as the HSM returns them.
use libfuzzer_sys::fuzz_target;
use rootkey_operator::azure::keys::parse_kid;

fuzz_target!(|data: &[u8]| {
    if let Some((name, version)) = parse_kid(&String::from_utf8_lossy(data)) {
        assert!(!name.is_empty() && !version.is_empty());
    }
});
