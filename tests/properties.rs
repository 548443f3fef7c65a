//! Fuzz-style property tests on stable (`cargo fuzz`, `make fuzz`, needs nightly): random
//! and mutated inputs into the key-URL parsers, the cloud's HSM guard, and the serde models of remote
//! responses. The properties: never panic, and the guard never accepts a URL outside the suffixes.

use rootkey_operator::{
    antimatter::{PairingResult, Provider, RootKey},
    api::HsmRef,
    azure::{keys::parse_kid, rbac::RoleAssignment},
    cloud::{Cloud, CloudName},
};

const ITERATIONS: usize = 20_000;

const SEEDS: [&str; 8] = [
    "https://contoso-hsm.managedhsm.azure.net/keys/root/0123456789abcdef0123456789abcdef",
    "https://h.managedhsm.azure.net",
    "{\"rekID\":\"r-1\",\"source\":\"azure_am\",\"resourcePath\":\"https://h/keys/k/v\",\"description\":\"d\"}",
    "{\"status\":\"HEALTHY\",\"message\":\"ok\",\"latencyMs\":12}",
    "[{\"name\":\"azure_am\",\"attributes\":{\"applicationID\":\"8d4e2f1a\"}}]",
    "{\"id\":\"/providers/Microsoft.Authorization/roleAssignments/x\",\"name\":\"x\",\"properties\":{\"scope\":\"/keys/k\",\"roleDefinitionId\":\"r\",\"principalId\":\"p\"}}",
    "eyJhbGciOiJIUzI1NiJ9.eyJleHAiOjE3MDAwMDAwMDB9.c2ln",
    "https://[::1]:8443/keys/a%2Fb/%00",
];

fn mutate(rng: &mut fastrand::Rng, input: &[u8]) -> Vec<u8> {
    let mut v = input.to_vec();
    for _ in 0..rng.usize(1..8) {
        match rng.u8(0..6) {
            0 if !v.is_empty() => {
                let i = rng.usize(..v.len());
                v[i] = rng.u8(..);
            }
            1 => {
                let i = rng.usize(..=v.len());
                let b = *rng.choice(b"/.:@%?#[]{}\",\\\x00\xff0aZ-_ ").unwrap_or(&b'x');
                v.insert(i, b);
            }
            2 if !v.is_empty() => {
                let i = rng.usize(..v.len());
                v.remove(i);
            }
            3 => v.truncate(rng.usize(..=v.len())),
            4 if !v.is_empty() => {
                let i = rng.usize(..v.len());
                let j = rng.usize(i..v.len());
                let chunk = v[i..=j].to_vec();
                v.splice(i..i, chunk);
            }
            _ => v.extend(std::iter::repeat_n(b'9', rng.usize(..64))),
        }
    }
    v
}

fn inputs(seed: u64) -> impl Iterator<Item = Vec<u8>> {
    let mut rng = fastrand::Rng::with_seed(seed);
    (0..ITERATIONS).map(move |i| {
        if i % 10 == 0 {
            (0..rng.usize(..200)).map(|_| rng.u8(..)).collect()
        } else {
            let s = SEEDS[rng.usize(..SEEDS.len())].as_bytes();
            mutate(&mut rng, s)
        }
    })
}

#[test]
fn parse_kid_never_panics_and_only_returns_non_empty_parts() {
    for bytes in inputs(1) {
        let s = String::from_utf8_lossy(&bytes);
        if let Some((name, version)) = parse_kid(&s) {
            assert!(!name.is_empty() && !version.is_empty(), "{s:?}");
            assert!(!name.contains('/') && !version.contains('/'), "{s:?}");
        }
    }
}

#[test]
fn hsm_guard_never_panics_and_never_accepts_a_foreign_or_insecure_url() {
    let cloud = Cloud::named(CloudName::AzurePublic).expect("public cloud");
    for bytes in inputs(2) {
        let s = String::from_utf8_lossy(&bytes).into_owned();
        for hsm in [HsmRef { name: Some(s.clone()), url: None }, HsmRef { name: None, url: Some(s.clone()) }] {
            if let Ok(ep) = cloud.hsm_endpoint(&hsm) {
                let url = url::Url::parse(&ep.url).expect("accepted URL parses");
                let host = url.host_str().expect("host");
                assert_eq!(url.scheme(), "https", "{s:?}");
                assert!(host.ends_with(".managedhsm.azure.net"), "{s:?} -> {}", ep.url);
                assert!(url.username().is_empty() && url.password().is_none(), "{s:?}");
            }
        }
    }
}

#[test]
fn remote_response_models_never_panic_on_random_bytes() {
    for bytes in inputs(3) {
        let _ = serde_json::from_slice::<RootKey>(&bytes);
        let _ = serde_json::from_slice::<Vec<RootKey>>(&bytes);
        let _ = serde_json::from_slice::<PairingResult>(&bytes);
        let _ = serde_json::from_slice::<Vec<Provider>>(&bytes);
        let _ = serde_json::from_slice::<RoleAssignment>(&bytes);
        if let Ok(p) = serde_json::from_slice::<Provider>(&bytes) {
            let _ = p.application_id();
        }
    }
}
