#![no_main]
//! The Antimatter JWT's `expiry`, which decides when the operator re-authenticates.
use libfuzzer_sys::fuzz_target;
use rootkey_operator::antimatter::refresh_time;

fuzz_target!(|data: &[u8]| {
    let _ = refresh_time(&String::from_utf8_lossy(data));
});
