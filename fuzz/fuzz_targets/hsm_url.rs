#![no_main]
//! The guard that decides where an Azure token may go.
use libfuzzer_sys::fuzz_target;
use rootkey_operator::{
    api::HsmRef,
    cloud::{Cloud, CloudName},
};

fuzz_target!(|data: &[u8]| {
    let Some(cloud) = Cloud::named(CloudName::AzurePublic) else { return };
    let hsm = HsmRef { name: None, url: Some(String::from_utf8_lossy(data).into_owned()) };
    if let Ok(endpoint) = cloud.hsm_endpoint(&hsm) {
        assert!(endpoint.url.starts_with("https://"));
        assert!(endpoint.url.ends_with(".managedhsm.azure.net"), "{}", endpoint.url);
    }
});
