//! The reconcile steps against in-memory services: every step's success, each failure class, the
//! adoption paths, suspend, the route without an API key, `Retry-After`, and that a second run over
//! an unchanged world changes nothing. No API server, no sandbox: milliseconds per case.

#[path = "support/fakes.rs"]
mod fakes;

use fakes::{APP_ID, Fake, Fault, HSM_URL, World};
use rootkey_operator::{
    antimatter::{ApiKey, DomainTarget},
    api::{
        AzureRootKey, AzureRootKeySpec, AzureRootKeyStatus, ConditionStatus, CreatePolicy, KeyRotationPolicySpec,
        RotationState, VersionState,
    },
    azure::{
        Identity,
        rbac::{CRYPTO_USER_ROLE_DEFINITION, RoleAssignment, RoleAssignmentProperties},
    },
    cloud::HsmEndpoint,
    controller::{
        conditions::Outcome,
        errors::Failure,
        inputs::{Application, Inputs},
        ownership::OWNER_TAG,
        reasons::Reason,
        status,
        steps::{self, Found, Kind, Report},
    },
    policy::Grant,
};
use serde_json::json;

use ConditionStatus::{False as F, True as T, Unknown as U};

const DOMAIN: &str = "dm-AbCdEfGhJkL";
const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
const CLUSTER: &str = "cluster-uid";

fn object(tweak: impl FnOnce(&mut AzureRootKeySpec)) -> AzureRootKey {
    let mut ark: AzureRootKey = serde_json::from_value(json!({
        "apiVersion": "antimatter.io/v1alpha1", "kind": "AzureRootKey",
        "metadata": {"name": "root", "namespace": "team-a", "generation": 1, "uid": "uid-root"},
        "spec": {"domainId": DOMAIN, "tenantId": TENANT, "hsm": {"name": "contoso"}, "key": {"name": "k"},
                 "antimatter": {"apiKeySecretRef": {"name": "am"}, "activate": true}}
    }))
    .expect("object");
    tweak(&mut ark.spec);
    ark
}

fn inputs(api_key: bool) -> Inputs {
    Inputs {
        hsm: HsmEndpoint { url: HSM_URL.to_owned(), scope: "https://managedhsm.azure.net/.default".to_owned() },
        identity: Identity { tenant_id: TENANT.to_owned(), secret: None },
        domain: api_key.then(|| DomainTarget {
            api_url: "https://api.antimatter.io/v2".parse().expect("url"),
            domain_id: DOMAIN.to_owned(),
            api_key: ApiKey::new("not-a-real-key".to_owned()),
        }),
        grant: Grant { claim_existing_keys: true, unverified_principals: false },
        application: if api_key { Application::FromAntimatter } else { Application::Configured(APP_ID.to_owned()) },
    }
}

struct Run {
    report: Report,
    found: Found,
    ready: Outcome,
    status: AzureRootKeyStatus,
}

async fn run_once(fake: &Fake, ark: &AzureRootKey, known: &AzureRootKeyStatus, api_key: bool) -> Run {
    run_with(fake, ark, known, &inputs(api_key)).await
}

async fn run_with(fake: &Fake, ark: &AzureRootKey, known: &AzureRootKeyStatus, inputs: &Inputs) -> Run {
    let (report, found) = steps::run(fake, CLUSTER, ark, known, inputs).await;
    let ready = report.ready(inputs.domain.is_some(), ark.spec.antimatter.activate);
    let status = status::build(ark, known, &report, &found, &ready, Some(HSM_URL.to_owned()));
    Run { report, found, ready, status }
}

/// One table row: a world and a spec, and what the run must report.
struct Case {
    name: &'static str,
    world: fn(&mut World),
    spec: fn(&mut AzureRootKeySpec),
    api_key: bool,
    /// What the tenancy policy and the configuration decided (default: `inputs(api_key)`).
    inputs: fn(&mut Inputs),
    /// Conditions that must be reported (others are not checked).
    expect: &'static [(Kind, ConditionStatus, Reason)],
    ready: (ConditionStatus, Reason),
    /// The changes made, as event reasons, in order.
    changes: &'static [&'static str],
    /// Calls that must not have been made.
    never: &'static [&'static str],
    retry_after_secs: Option<u64>,
    /// Text the message of the first expected condition must contain.
    message: Option<&'static str>,
}

const BASE: Case = Case {
    name: "",
    world: |_| {},
    spec: |_| {},
    api_key: true,
    inputs: |_| {},
    expect: &[],
    ready: (T, Reason::Ready),
    changes: &[],
    never: &[],
    retry_after_secs: None,
    message: None,
};

/// The owner marker of the object `object()` makes, in cluster `CLUSTER`.
const MARKER: &str = "cluster-uid/team-a/root";

/// A key this object tagged and marked before.
fn tagged_key(w: &mut World) {
    w.keys.insert("k".into(), World::key("k", &[(DOMAIN, "allow"), (OWNER_TAG, MARKER)]));
}

fn untagged_key(w: &mut World) {
    w.keys.insert("k".into(), World::key("k", &[("owner", "platform")]));
}

/// Antimatter's principal exists as `sp-given` (as if created by hand), and the key is ours.
fn given_principal(w: &mut World) {
    tagged_key(w);
    w.principals.insert(APP_ID.into(), "sp-given".into());
}

/// Crypto User at `/keys/k` for `principal`, assigned by hand (not under the operator's name).
fn assigned_by_hand(w: &mut World, principal: &str) {
    let properties = RoleAssignmentProperties {
        scope: Some("/keys/k".into()),
        role_definition_id: CRYPTO_USER_ROLE_DEFINITION.into(),
        principal_id: principal.into(),
    };
    w.assignments.insert(("/keys/k".into(), "by-hand".into()), RoleAssignment { name: "by-hand".into(), properties });
}

fn existing_principal(w: &mut World) {
    tagged_key(w);
    w.principals.insert(APP_ID.into(), "sp-existing".into());
}

const ALL_TRUE: &[(Kind, ConditionStatus, Reason)] = &[
    (Kind::KeyReady, T, Reason::KeyUsable),
    (Kind::TagApplied, T, Reason::TagPresent),
    (Kind::ServicePrincipalReady, T, Reason::ServicePrincipalFound),
    (Kind::RoleAssigned, T, Reason::RoleAssigned),
    (Kind::Registered, T, Reason::Registered),
    (Kind::Paired, T, Reason::PairingHealthy),
    (Kind::Active, T, Reason::KeyActive),
];

fn cases() -> Vec<Case> {
    vec![
        // Every step succeeds.
        Case {
            name: "new key: created, principal created, assigned, registered, paired, activated",
            expect: ALL_TRUE,
            changes: &["KeyCreated", "ServicePrincipalCreated", "RoleAssigned", "Registered", "Activated"],
            never: &["key.tags", "rbac.get", "rbac.list", "am.list"],
            ..BASE
        },
        Case {
            name: "existing untagged key is tagged and marked, not created",
            world: untagged_key,
            expect: ALL_TRUE,
            changes: &["TagAdded", "OwnerMarked", "ServicePrincipalCreated", "RoleAssigned", "Registered", "Activated"],
            never: &["key.create"],
            ..BASE
        },
        Case {
            name: "existing tagged key and principal: only the role, registration and activation change",
            world: existing_principal,
            expect: ALL_TRUE,
            changes: &["RoleAssigned", "Registered", "Activated"],
            never: &["key.create", "key.tags"],
            ..BASE
        },
        Case {
            name: "a tag with another value is replaced by allow",
            world: |w| {
                w.keys.insert("k".into(), World::key("k", &[(DOMAIN, "deny")]));
            },
            expect: &[(Kind::TagApplied, T, Reason::TagPresent)],
            changes: &["TagAdded", "OwnerMarked", "ServicePrincipalCreated", "RoleAssigned", "Registered", "Activated"],
            ..BASE
        },
        // Ownership: one object per (HSM, key).
        Case {
            name: "a key another object of this cluster owns is refused and nothing changes",
            world: |w| {
                w.keys.insert("k".into(), World::key("k", &[(OWNER_TAG, "cluster-uid/team-b/theirs")]));
                w.objects.insert(("team-b".into(), "theirs".into()));
            },
            expect: &[
                (Kind::KeyReady, F, Reason::KeyClaimed),
                (Kind::TagApplied, U, Reason::WaitingKeyReady),
                (Kind::ServicePrincipalReady, U, Reason::WaitingKeyReady),
                (Kind::RoleAssigned, U, Reason::WaitingKeyReady),
                (Kind::Registered, U, Reason::WaitingKeyReady),
            ],
            ready: (F, Reason::KeyClaimed),
            never: &["key.tags", "graph.sp", "graph.sp.get", "rbac.get", "rbac.put", "am.add", "am.list"],
            message: Some("team-b/theirs"),
            ..BASE
        },
        Case {
            name: "a marker whose object was deleted is stale: the key is claimed",
            world: |w| {
                w.keys
                    .insert("k".into(), World::key("k", &[(DOMAIN, "allow"), (OWNER_TAG, "cluster-uid/team-b/gone")]));
            },
            expect: ALL_TRUE,
            changes: &["OwnerMarked", "ServicePrincipalCreated", "RoleAssigned", "Registered", "Activated"],
            ..BASE
        },
        Case {
            name: "a key another cluster manages is refused",
            world: |w| {
                w.keys.insert("k".into(), World::key("k", &[(OWNER_TAG, "other-cluster/team-a/root")]));
            },
            expect: &[(Kind::KeyReady, F, Reason::KeyClaimed)],
            ready: (F, Reason::KeyClaimed),
            never: &["key.tags", "graph.sp", "rbac.put", "am.add"],
            message: Some("another cluster (other-cluster)"),
            ..BASE
        },
        Case {
            name: "a key another cluster managed is taken over with adopt",
            world: |w| {
                w.keys.insert(
                    "k".into(),
                    World::key("k", &[(DOMAIN, "allow"), (OWNER_TAG, "other-cluster/team-a/root")]),
                );
            },
            spec: |s| s.key.adopt = true,
            expect: ALL_TRUE,
            changes: &["OwnerMarked", "ServicePrincipalCreated", "RoleAssigned", "Registered", "Activated"],
            ..BASE
        },
        Case {
            name: "an unmarked existing key where the policy forbids claiming",
            world: untagged_key,
            inputs: |i| i.grant.claim_existing_keys = false,
            expect: &[(Kind::KeyReady, F, Reason::PolicyDenied)],
            ready: (F, Reason::PolicyDenied),
            never: &["key.tags", "graph.sp", "rbac.put"],
            message: Some("claimExistingKeys"),
            ..BASE
        },
        Case {
            name: "a new key is created with the domain tag and the owner marker",
            spec: |s| s.key.create = CreatePolicy::IfMissing,
            expect: &[(Kind::KeyReady, T, Reason::KeyUsable), (Kind::TagApplied, T, Reason::TagPresent)],
            changes: &["KeyCreated", "ServicePrincipalCreated", "RoleAssigned", "Registered", "Activated"],
            never: &["key.tags"],
            ..BASE
        },
        // KeyReady failures.
        Case {
            name: "missing key with create Never",
            spec: |s| s.key.create = CreatePolicy::Never,
            expect: &[
                (Kind::KeyReady, F, Reason::KeyNotFound),
                (Kind::TagApplied, U, Reason::WaitingKeyReady),
                (Kind::ServicePrincipalReady, U, Reason::WaitingKeyReady),
                (Kind::RoleAssigned, U, Reason::WaitingKeyReady),
                (Kind::Registered, U, Reason::WaitingKeyReady),
                (Kind::Paired, U, Reason::WaitingRegistered),
                (Kind::Active, U, Reason::WaitingPaired),
            ],
            ready: (F, Reason::KeyNotFound),
            never: &["key.create", "rbac.put", "am.add", "am.test"],
            message: Some("spec.key.create is Never"),
            ..BASE
        },
        Case {
            name: "an RSA key is reported, never replaced or tagged",
            world: |w| {
                w.keys.insert("k".into(), World::key("k", &[]));
                w.keys.get_mut("k").expect("k").kty = "RSA-HSM".into();
            },
            expect: &[(Kind::KeyReady, F, Reason::UnsupportedKeyType), (Kind::TagApplied, U, Reason::WaitingKeyReady)],
            ready: (F, Reason::UnsupportedKeyType),
            never: &["key.create", "key.tags", "rbac.put"],
            ..BASE
        },
        Case {
            name: "a disabled key",
            world: |w| {
                untagged_key(w);
                w.keys.get_mut("k").expect("k").enabled = false;
            },
            expect: &[(Kind::KeyReady, F, Reason::KeyDisabled)],
            ready: (F, Reason::KeyDisabled),
            never: &["key.tags"],
            ..BASE
        },
        Case {
            name: "an expired key",
            world: |w| {
                tagged_key(w);
                w.keys.get_mut("k").expect("k").expires = Some(jiff::Timestamp::from_second(1_000).expect("ts"));
            },
            expect: &[(Kind::KeyReady, F, Reason::KeyNotUsable)],
            ready: (F, Reason::KeyNotUsable),
            message: Some("expired"),
            ..BASE
        },
        Case {
            name: "a key not valid yet",
            world: |w| {
                tagged_key(w);
                w.keys.get_mut("k").expect("k").not_before = Some(jiff::Timestamp::MAX);
            },
            expect: &[(Kind::KeyReady, F, Reason::KeyNotUsable)],
            ready: (F, Reason::KeyNotUsable),
            message: Some("not yet valid"),
            ..BASE
        },
        Case {
            name: "a key without unwrapKey",
            world: |w| {
                tagged_key(w);
                w.keys.get_mut("k").expect("k").ops = vec!["wrapKey".into()];
            },
            expect: &[(Kind::KeyReady, F, Reason::MissingKeyOperations)],
            ready: (F, Reason::MissingKeyOperations),
            message: Some("unwrapKey"),
            ..BASE
        },
        Case {
            name: "an unusable key that carries the tag reports the tag",
            world: |w| {
                tagged_key(w);
                w.keys.get_mut("k").expect("k").enabled = false;
            },
            expect: &[(Kind::KeyReady, F, Reason::KeyDisabled), (Kind::TagApplied, T, Reason::TagPresent)],
            ready: (F, Reason::KeyDisabled),
            never: &["rbac.put", "am.add"],
            ..BASE
        },
        Case {
            name: "no rights on keys: Forbidden names Crypto User",
            world: |w| {
                w.faults.insert("key.get", Fault::Status(403, "Forbidden", None));
            },
            expect: &[(Kind::KeyReady, F, Reason::Forbidden), (Kind::TagApplied, U, Reason::WaitingKeyReady)],
            ready: (F, Reason::Forbidden),
            never: &["key.create"],
            message: Some("Managed HSM Crypto User"),
            ..BASE
        },
        Case {
            name: "a throttled key read honours Retry-After",
            world: |w| {
                w.faults.insert("key.get", Fault::Status(429, "Throttled", Some(7)));
            },
            expect: &[(Kind::KeyReady, F, Reason::Throttled)],
            ready: (F, Reason::Throttled),
            retry_after_secs: Some(7),
            ..BASE
        },
        Case {
            name: "an unreachable HSM",
            world: |w| {
                w.faults.insert("key.get", Fault::Unreachable);
            },
            expect: &[(Kind::KeyReady, F, Reason::AzureUnreachable)],
            ready: (F, Reason::AzureUnreachable),
            ..BASE
        },
        Case {
            name: "refused credentials",
            world: |w| {
                w.faults.insert("key.get", Fault::Credentials);
                w.faults.insert("graph.sp", Fault::Credentials);
            },
            expect: &[
                (Kind::KeyReady, F, Reason::InvalidCredentials),
                (Kind::ServicePrincipalReady, U, Reason::WaitingKeyReady),
                (Kind::RoleAssigned, U, Reason::WaitingKeyReady),
            ],
            ready: (F, Reason::InvalidCredentials),
            ..BASE
        },
        Case {
            name: "key creation failing with 500",
            world: |w| {
                w.faults.insert("key.create", Fault::Status(500, "InternalError", None));
            },
            expect: &[(Kind::KeyReady, F, Reason::AzureUnreachable)],
            ready: (F, Reason::AzureUnreachable),
            ..BASE
        },
        Case {
            name: "key creation refused with another 4xx",
            world: |w| {
                w.faults.insert("key.create", Fault::Status(400, "BadParameter", None));
            },
            expect: &[(Kind::KeyReady, F, Reason::AzureRequestRejected)],
            ready: (F, Reason::AzureRequestRejected),
            message: Some("BadParameter"),
            ..BASE
        },
        // TagApplied failures: the role does not need the tag; the registration does.
        Case {
            name: "tagging forbidden: the role is still assigned, registration waits",
            world: |w| {
                untagged_key(w);
                w.faults.insert("key.tags", Fault::Status(403, "Forbidden", None));
            },
            expect: &[
                (Kind::KeyReady, T, Reason::KeyUsable),
                (Kind::TagApplied, F, Reason::Forbidden),
                (Kind::RoleAssigned, T, Reason::RoleAssigned),
                (Kind::Registered, U, Reason::WaitingTagApplied),
                (Kind::Paired, U, Reason::WaitingRegistered),
            ],
            ready: (F, Reason::Forbidden),
            changes: &["ServicePrincipalCreated", "RoleAssigned"],
            never: &["am.add"],
            ..BASE
        },
        // ServicePrincipalReady.
        Case {
            name: "a principal given in the spec: Graph confirms it is Antimatter's, nothing is looked up or created",
            world: given_principal,
            spec: |s| s.antimatter.service_principal_object_id = Some("sp-given".into()),
            expect: &[(Kind::ServicePrincipalReady, T, Reason::ServicePrincipalGiven)],
            changes: &["RoleAssigned", "Registered", "Activated"],
            never: &["graph.sp"],
            ..BASE
        },
        Case {
            name: "a given principal of another application is never granted",
            world: |w| {
                given_principal(w);
                w.principals.insert("0f0f0f0f-0000-4000-8000-000000000000".into(), "sp-other".into());
            },
            spec: |s| s.antimatter.service_principal_object_id = Some("sp-other".into()),
            expect: &[
                (Kind::ServicePrincipalReady, F, Reason::PolicyDenied),
                (Kind::RoleAssigned, U, Reason::WaitingServicePrincipalReady),
            ],
            ready: (F, Reason::PolicyDenied),
            // The key is ours and tagged, so it is registered; no access is granted.
            changes: &["Registered"],
            never: &["rbac.put", "rbac.get", "graph.sp"],
            message: Some("not to Antimatter's"),
            ..BASE
        },
        Case {
            name: "a given principal the tenant does not have is never granted",
            world: tagged_key,
            spec: |s| s.antimatter.service_principal_object_id = Some("sp-nowhere".into()),
            expect: &[(Kind::ServicePrincipalReady, F, Reason::PolicyDenied)],
            ready: (F, Reason::PolicyDenied),
            // The key is ours and tagged, so it is registered; no access is granted.
            changes: &["Registered"],
            never: &["rbac.put"],
            message: Some("no service principal sp-nowhere"),
            ..BASE
        },
        Case {
            name: "a given principal Graph will not describe (403) is not used",
            world: |w| {
                given_principal(w);
                w.faults.insert("graph.sp.get", Fault::Status(403, "Authorization_RequestDenied", None));
            },
            spec: |s| s.antimatter.service_principal_object_id = Some("sp-given".into()),
            expect: &[(Kind::ServicePrincipalReady, F, Reason::PolicyDenied)],
            ready: (F, Reason::PolicyDenied),
            // The key is ours and tagged, so it is registered; no access is granted.
            changes: &["Registered"],
            never: &["rbac.put"],
            message: Some("unverifiedPrincipals"),
            ..BASE
        },
        Case {
            name: "where the policy allows unverified principals, a given one is used without Graph",
            world: tagged_key,
            spec: |s| s.antimatter.service_principal_object_id = Some("sp-given".into()),
            inputs: |i| {
                i.grant.unverified_principals = true;
                i.application = Application::NotNeeded;
            },
            expect: &[(Kind::ServicePrincipalReady, T, Reason::ServicePrincipalGiven)],
            changes: &["RoleAssigned", "Registered", "Activated"],
            never: &["graph.sp", "graph.sp.get", "am.providers"],
            message: Some("unverified"),
            ..BASE
        },
        Case {
            name: "a spec applicationId that is not Antimatter's is refused before Graph",
            world: tagged_key,
            spec: |s| s.antimatter.application_id = Some("0f0f0f0f-0000-4000-8000-000000000000".into()),
            expect: &[(Kind::ServicePrincipalReady, F, Reason::PolicyDenied)],
            ready: (F, Reason::PolicyDenied),
            // The key is ours and tagged, so it is registered; no access is granted.
            changes: &["Registered"],
            never: &["graph.sp", "graph.sp.get", "rbac.put"],
            message: Some("is not Antimatter's application"),
            ..BASE
        },
        Case {
            name: "an application ID in the spec that is Antimatter's is accepted",
            world: existing_principal,
            spec: |s| s.antimatter.application_id = Some(APP_ID.to_uppercase()),
            expect: &[(Kind::ServicePrincipalReady, T, Reason::ServicePrincipalFound)],
            changes: &["RoleAssigned", "Registered", "Activated"],
            ..BASE
        },
        Case {
            name: "Antimatter names no application",
            world: |w| {
                tagged_key(w);
                w.application_id = None;
            },
            expect: &[
                (Kind::ServicePrincipalReady, F, Reason::InvalidSpec),
                (Kind::RoleAssigned, U, Reason::WaitingServicePrincipalReady),
                (Kind::Registered, T, Reason::Registered),
                (Kind::Paired, U, Reason::WaitingRoleAssigned),
            ],
            ready: (F, Reason::InvalidSpec),
            changes: &["Registered"],
            never: &["graph.sp", "rbac.put"],
            message: Some("applicationId"),
            ..BASE
        },
        Case {
            name: "Antimatter refuses the API key on the providers call",
            world: |w| {
                tagged_key(w);
                w.faults.insert("am.providers", Fault::Status(401, "Unauthorized", None));
            },
            expect: &[(Kind::ServicePrincipalReady, F, Reason::InvalidCredentials)],
            ready: (F, Reason::InvalidCredentials),
            changes: &["Registered"],
            message: Some("apiKeySecretRef"),
            ..BASE
        },
        Case {
            name: "Graph forbidden names the Graph permission",
            world: |w| {
                tagged_key(w);
                w.faults.insert("graph.sp", Fault::Status(403, "Authorization_RequestDenied", None));
            },
            expect: &[(Kind::ServicePrincipalReady, F, Reason::Forbidden)],
            ready: (F, Reason::Forbidden),
            changes: &["Registered"],
            message: Some("Application.ReadWrite.OwnedBy"),
            ..BASE
        },
        Case {
            name: "Graph throttled",
            world: |w| {
                tagged_key(w);
                w.faults.insert("graph.sp", Fault::Status(429, "TooManyRequests", Some(20)));
            },
            expect: &[(Kind::ServicePrincipalReady, F, Reason::Throttled)],
            ready: (F, Reason::Throttled),
            changes: &["Registered"],
            retry_after_secs: Some(20),
            ..BASE
        },
        // RoleAssigned.
        Case {
            name: "no Policy Administrator: Forbidden names it; pairing waits for the role",
            world: |w| {
                existing_principal(w);
                w.faults.insert("rbac.put", Fault::Status(403, "Forbidden", None));
            },
            expect: &[
                (Kind::RoleAssigned, F, Reason::Forbidden),
                (Kind::Registered, T, Reason::Registered),
                (Kind::Paired, U, Reason::WaitingRoleAssigned),
                (Kind::Active, U, Reason::WaitingPaired),
            ],
            ready: (F, Reason::Forbidden),
            changes: &["Registered"],
            never: &["am.test", "am.activate"],
            message: Some("Managed HSM Policy Administrator"),
            ..BASE
        },
        Case {
            name: "MatchingRoleAssignmentExists: the assignment made by hand is adopted",
            world: |w| {
                existing_principal(w);
                assigned_by_hand(w, "sp-existing");
            },
            expect: &[(Kind::RoleAssigned, T, Reason::RoleAssigned)],
            changes: &["Registered", "Activated"],
            ..BASE
        },
        Case {
            name: "RBAC throttled",
            world: |w| {
                existing_principal(w);
                w.faults.insert("rbac.put", Fault::Status(429, "Throttled", Some(3)));
            },
            expect: &[(Kind::RoleAssigned, F, Reason::Throttled)],
            ready: (F, Reason::Throttled),
            changes: &["Registered"],
            retry_after_secs: Some(3),
            ..BASE
        },
        // Registered.
        Case {
            name: "a key URL Antimatter already has (409) is found in its list",
            world: |w| {
                existing_principal(w);
                w.registrations.insert("rek-known".into(), format!("{HSM_URL}/keys/k/v1"));
            },
            expect: &[(Kind::Registered, T, Reason::Registered)],
            changes: &["RoleAssigned", "Activated"],
            message: Some("rek-known"),
            ..BASE
        },
        Case {
            name: "registration failing with 503",
            world: |w| {
                existing_principal(w);
                w.faults.insert("am.add", Fault::Status(503, "Unavailable", None));
            },
            expect: &[
                (Kind::Registered, F, Reason::AntimatterUnreachable),
                (Kind::Paired, U, Reason::WaitingRegistered),
            ],
            ready: (F, Reason::AntimatterUnreachable),
            changes: &["RoleAssigned"],
            ..BASE
        },
        Case {
            name: "registration refused with another 4xx",
            world: |w| {
                existing_principal(w);
                w.faults.insert("am.add", Fault::Status(400, "keyURL", None));
            },
            expect: &[(Kind::Registered, F, Reason::AntimatterRequestRejected)],
            ready: (F, Reason::AntimatterRequestRejected),
            changes: &["RoleAssigned"],
            ..BASE
        },
        Case {
            name: "Antimatter unreachable",
            world: |w| {
                existing_principal(w);
                w.faults.insert("am.add", Fault::Unreachable);
            },
            expect: &[(Kind::Registered, F, Reason::AntimatterUnreachable)],
            ready: (F, Reason::AntimatterUnreachable),
            changes: &["RoleAssigned"],
            ..BASE
        },
        // Paired.
        Case {
            name: "pairing misconfigured with a grant the operator did not make: a failure, activation waits",
            world: |w| {
                existing_principal(w);
                assigned_by_hand(w, "sp-existing");
                w.pairing = "MISCONFIGURED";
            },
            expect: &[(Kind::Paired, F, Reason::PairingMisconfigured), (Kind::Active, U, Reason::WaitingPaired)],
            ready: (F, Reason::PairingMisconfigured),
            changes: &["Registered"],
            never: &["am.activate", "am.active"],
            ..BASE
        },
        Case {
            name: "pairing misconfigured right after the operator's own grant: propagation, checked again soon",
            world: |w| {
                existing_principal(w);
                w.pairing = "MISCONFIGURED";
            },
            expect: &[(Kind::Paired, U, Reason::PropagationPending), (Kind::Active, U, Reason::WaitingPaired)],
            ready: (U, Reason::Progressing),
            changes: &["RoleAssigned", "Registered"],
            never: &["am.activate", "am.active"],
            retry_after_secs: Some(3),
            message: Some("take time to propagate"),
            ..BASE
        },
        Case {
            name: "pairing misconfigured right after the operator created the principal: propagation",
            world: |w| {
                tagged_key(w);
                w.pairing = "MISCONFIGURED";
            },
            expect: &[(Kind::Paired, U, Reason::PropagationPending)],
            ready: (U, Reason::Progressing),
            changes: &["ServicePrincipalCreated", "RoleAssigned", "Registered"],
            retry_after_secs: Some(3),
            ..BASE
        },
        Case {
            name: "pairing unreachable",
            world: |w| {
                existing_principal(w);
                w.pairing = "UNREACHABLE";
            },
            expect: &[(Kind::Paired, F, Reason::PairingUnreachable)],
            ready: (F, Reason::PairingUnreachable),
            changes: &["RoleAssigned", "Registered"],
            ..BASE
        },
        Case {
            name: "pairing check throttled",
            world: |w| {
                existing_principal(w);
                w.faults.insert("am.test", Fault::Status(429, "TooManyRequests", Some(9)));
            },
            expect: &[(Kind::Paired, F, Reason::Throttled)],
            ready: (F, Reason::Throttled),
            changes: &["RoleAssigned", "Registered"],
            retry_after_secs: Some(9),
            ..BASE
        },
        // Active.
        Case {
            name: "activate false: not required for Ready, no active-key calls",
            world: existing_principal,
            spec: |s| s.antimatter.activate = false,
            expect: &[(Kind::Paired, T, Reason::PairingHealthy), (Kind::Active, F, Reason::ActivationNotRequested)],
            changes: &["RoleAssigned", "Registered"],
            never: &["am.active", "am.activate"],
            ..BASE
        },
        Case {
            name: "many rotation batches: active, still rotating, back in a second",
            world: |w| {
                existing_principal(w);
                w.rotation_batches = 50;
            },
            expect: &[(Kind::Active, U, Reason::RotationInProgress)],
            ready: (U, Reason::Progressing),
            changes: &["RoleAssigned", "Registered", "Activated"],
            retry_after_secs: Some(1),
            ..BASE
        },
        Case {
            name: "a few rotation batches finish in the same run",
            world: |w| {
                existing_principal(w);
                w.rotation_batches = 3;
            },
            expect: &[(Kind::Active, T, Reason::KeyActive)],
            changes: &["RoleAssigned", "Registered", "Activated"],
            ..BASE
        },
        Case {
            name: "a rotate failure after activating keeps the activation's change",
            world: |w| {
                existing_principal(w);
                w.rotation_batches = 5;
                w.faults.insert("am.rotate", Fault::Status(502, "BadGateway", None));
            },
            expect: &[(Kind::Active, F, Reason::AntimatterUnreachable)],
            ready: (F, Reason::AntimatterUnreachable),
            changes: &["RoleAssigned", "Registered", "Activated"],
            ..BASE
        },
        Case {
            name: "activation refused",
            world: |w| {
                existing_principal(w);
                w.faults.insert("am.activate", Fault::Status(403, "Forbidden", None));
            },
            expect: &[(Kind::Active, F, Reason::Forbidden)],
            ready: (F, Reason::Forbidden),
            changes: &["RoleAssigned", "Registered"],
            message: Some("API key is not allowed"),
            ..BASE
        },
        // Without an API key: the Azure side only, and what to paste into the dashboard.
        Case {
            name: "no API key: Azure side done, the dashboard route is described",
            world: existing_principal,
            spec: |s| s.antimatter.application_id = Some(APP_ID.into()),
            api_key: false,
            expect: &[
                (Kind::RoleAssigned, T, Reason::RoleAssigned),
                (Kind::Registered, U, Reason::ManualRegistrationRequired),
                (Kind::Paired, U, Reason::ManualRegistrationRequired),
                (Kind::Active, U, Reason::ManualRegistrationRequired),
            ],
            changes: &["RoleAssigned"],
            never: &["am.providers", "am.add", "am.test", "am.active"],
            message: None,
            ..BASE
        },
        Case {
            name: "no API key: the configured application is used, and the pre-check names the failing step",
            world: |w| {
                tagged_key(w);
                w.faults.insert("graph.sp", Fault::Status(403, "Authorization_RequestDenied", None));
            },
            api_key: false,
            expect: &[
                (Kind::ServicePrincipalReady, F, Reason::Forbidden),
                (Kind::Registered, U, Reason::ManualRegistrationRequired),
            ],
            ready: (F, Reason::Forbidden),
            never: &["am.providers", "rbac.put"],
            ..BASE
        },
        // Suspended: observe only.
        Case {
            name: "suspended with no key: nothing is created",
            spec: |s| s.suspend = true,
            expect: &[
                (Kind::KeyReady, F, Reason::KeyNotFound),
                (Kind::ServicePrincipalReady, U, Reason::WaitingKeyReady),
            ],
            ready: (F, Reason::KeyNotFound),
            never: &["key.create", "graph.sp", "rbac.put", "am.add"],
            message: Some("suspended"),
            ..BASE
        },
        Case {
            name: "suspended with an untagged key: not tagged, the role is read, not put",
            world: |w| {
                given_principal(w);
                untagged_key(w);
            },
            spec: |s| {
                s.suspend = true;
                s.antimatter.service_principal_object_id = Some("sp-given".into());
            },
            expect: &[
                (Kind::TagApplied, F, Reason::Suspended),
                (Kind::RoleAssigned, F, Reason::Suspended),
                (Kind::Registered, U, Reason::WaitingTagApplied),
            ],
            ready: (F, Reason::Suspended),
            never: &["key.tags", "rbac.put", "am.add"],
            ..BASE
        },
        Case {
            name: "suspended and not registered: the list is read, nothing added",
            world: |w| {
                given_principal(w);
                assigned_by_hand(w, "sp-given");
            },
            spec: |s| {
                s.suspend = true;
                s.antimatter.service_principal_object_id = Some("sp-given".into());
            },
            expect: &[(Kind::Registered, F, Reason::Suspended)],
            ready: (F, Reason::Suspended),
            never: &["am.add", "rbac.put"],
            ..BASE
        },
        // Retry-After: the longest wait any step was asked for.
        Case {
            name: "the longest Retry-After of concurrent steps wins",
            world: |w| {
                w.faults.insert("key.get", Fault::Status(429, "Throttled", Some(7)));
                w.faults.insert("am.providers", Fault::Status(429, "TooManyRequests", Some(30)));
            },
            expect: &[
                (Kind::KeyReady, F, Reason::Throttled),
                (Kind::ServicePrincipalReady, U, Reason::WaitingKeyReady),
            ],
            ready: (F, Reason::Throttled),
            retry_after_secs: Some(30),
            ..BASE
        },
    ]
}

#[tokio::test]
async fn every_case_reports_what_it_should() {
    let cases = cases();
    assert!(cases.len() >= 40, "{} cases", cases.len());
    let mut failures = Vec::new();
    for case in &cases {
        let mut world = World::default();
        (case.world)(&mut world);
        let fake = Fake::new(world);
        let ark = object(case.spec);
        let mut case_inputs = inputs(case.api_key);
        (case.inputs)(&mut case_inputs);
        let run = run_with(&fake, &ark, &AzureRootKeyStatus::default(), &case_inputs).await;
        let mut wrong = Vec::new();
        for (kind, status, reason) in case.expect {
            match run.report.outcome(*kind) {
                Some(o) if o.status == *status && o.reason == *reason => {}
                other => wrong.push(format!("{kind:?}: want {status:?}/{reason}, got {other:?}")),
            }
        }
        if let (Some(text), Some((kind, ..))) = (case.message, case.expect.first()) {
            let message = run.report.outcome(*kind).map(|o| o.message.clone()).unwrap_or_default();
            if !message.contains(text) {
                wrong.push(format!("{kind:?} message {message:?} lacks {text:?}"));
            }
        }
        if (run.ready.status, run.ready.reason) != case.ready {
            wrong.push(format!("Ready: want {:?}, got {:?}/{}", case.ready, run.ready.status, run.ready.reason));
        }
        let changes: Vec<&str> = run.report.changes.iter().map(|c| c.reason.as_str()).collect();
        if changes != case.changes {
            wrong.push(format!("changes: want {:?}, got {changes:?}", case.changes));
        }
        let world = fake.world();
        for call in case.never {
            if world.count(call) > 0 {
                wrong.push(format!("called {call}"));
            }
        }
        let retry = run.report.retry_after.map(|d| d.as_secs());
        if retry != case.retry_after_secs {
            wrong.push(format!("retry_after: want {:?}, got {retry:?}", case.retry_after_secs));
        }
        if run.report.outcomes().count() != Kind::ALL.len() {
            wrong.push(format!("{} conditions", run.report.outcomes().count()));
        }
        if !wrong.is_empty() {
            failures.push(format!("{}:\n    {}", case.name, wrong.join("\n    ")));
        }
    }
    assert!(failures.is_empty(), "{} of {} cases wrong:\n{}", failures.len(), cases.len(), failures.join("\n"));
}

/// What a first run found is in the status; a second run over the same world makes no change, no
/// write-worthy difference, and only the steady reads.
#[tokio::test]
async fn a_second_run_over_an_unchanged_world_changes_nothing() {
    let fake = Fake::default();
    let ark = object(|_| {});
    let first = run_once(&fake, &ark, &AzureRootKeyStatus::default(), true).await;
    assert!(first.ready.is_true(), "{:?}", first.ready);
    let status = &first.status;
    assert_eq!(status.key_url.as_deref(), Some(format!("{HSM_URL}/keys/k/v1").as_str()));
    assert!(status.service_principal_object_id.is_some() && status.role_assignment_name.is_some());
    assert!(status.root_encryption_key_id.is_some() && status.pairing.is_some());

    fake.world().calls.clear();
    let second = run_once(&fake, &ark, status, true).await;
    assert!(second.report.changes.is_empty(), "{:?}", second.report.changes);
    // The only difference is the time of the check (status.pairing.lastCheckTime and the healthy
    // time with it): one status write per check, nothing else changed.
    let check_times =
        |s: &AzureRootKeyStatus| s.pairing.as_ref().map(|p| (p.last_check_time.clone(), p.last_healthy_time.clone()));
    let without_check_times = |s: &AzureRootKeyStatus| {
        let mut s = s.clone();
        if let Some(p) = s.pairing.as_mut() {
            (p.last_check_time, p.last_healthy_time) = (None, None);
        }
        s
    };
    assert_eq!(
        without_check_times(&second.status),
        without_check_times(status),
        "nothing but the check's time changed"
    );
    assert!(check_times(&second.status) > check_times(status), "the second check's time is recorded");
    let first_seen = |s: &AzureRootKeyStatus| s.pairing.as_ref().and_then(|p| p.first_seen_time.clone());
    assert_eq!(first_seen(&second.status), first_seen(status), "the same result keeps its first-seen time");
    let calls = fake.world().calls.clone();
    assert_eq!(calls.iter().copied().filter(|c| c.starts_with("key.")).collect::<Vec<_>>(), ["key.get"]);
    assert_eq!(calls.iter().copied().filter(|c| c.starts_with("rbac.")).collect::<Vec<_>>(), ["rbac.get"]);
    for op in ["am.add", "am.activate", "am.rotate", "key.create", "key.tags", "rbac.put"] {
        assert_eq!(fake.world().count(op), 0, "{op} in {calls:?}");
    }
}

/// Drift: a tag and an assignment removed by hand are put back on the next run.
#[tokio::test]
async fn drift_is_repaired_on_the_next_run() {
    let fake = Fake::default();
    let ark = object(|_| {});
    let first = run_once(&fake, &ark, &AzureRootKeyStatus::default(), true).await;
    {
        let mut world = fake.world();
        // Someone drops the domain tag (the owner marker stays) and the assignment.
        world.keys.get_mut("k").expect("k").tags.remove(DOMAIN);
        world.assignments.clear();
    }
    let second = run_once(&fake, &ark, &first.status, true).await;
    let changes: Vec<&str> = second.report.changes.iter().map(|c| c.reason.as_str()).collect();
    assert_eq!(changes, ["TagAdded", "RoleAssigned"]);
    assert!(second.ready.is_true());
    assert_eq!(fake.world().assignments.len(), 1, "exactly one assignment");
}

/// A registration deleted in Antimatter is forgotten and registered again on the next run.
#[tokio::test]
async fn a_lost_registration_is_registered_again() {
    let fake = Fake::default();
    let ark = object(|_| {});
    let first = run_once(&fake, &ark, &AzureRootKeyStatus::default(), true).await;
    let old = first.status.root_encryption_key_id.clone().expect("registered");
    fake.world().registrations.clear();

    let second = run_once(&fake, &ark, &first.status, true).await;
    assert_eq!(second.report.outcome(Kind::Paired).map(|o| o.reason), Some(Reason::RegistrationMissing));
    assert_eq!(second.report.retry_after.map(|d| d.as_secs()), Some(1));
    assert_eq!(second.status.root_encryption_key_id, None, "the lost registration is forgotten");

    let third = run_once(&fake, &ark, &second.status, true).await;
    assert!(third.ready.is_true(), "{:?}", third.ready);
    let new = third.status.root_encryption_key_id.expect("registered again");
    assert_ne!(new, old);
    assert!(fake.world().registrations.contains_key(&new));
}

/// A MISCONFIGURED pairing check is propagation while the operator's own grant is recent (known
/// from `status.created` and when `RoleAssigned` turned True), and a failure once it is old.
#[tokio::test]
async fn misconfigured_is_propagation_only_within_the_grace_after_the_own_grant() {
    let fake = Fake::default();
    let ark = object(|_| {});
    let first = run_once(&fake, &ark, &AzureRootKeyStatus::default(), true).await;
    assert!(first.ready.is_true(), "{:?}", first.ready);
    assert!(first.status.created.as_ref().and_then(|c| c.role_assignment_name.as_ref()).is_some());
    fake.world().pairing = "MISCONFIGURED";

    // Granted moments ago (the status says so, this run granted nothing): still propagating.
    let soon = run_once(&fake, &ark, &first.status, true).await;
    assert!(soon.report.changes.is_empty(), "{:?}", soon.report.changes);
    let paired = soon.report.outcome(Kind::Paired).expect("paired");
    assert_eq!((paired.status, paired.reason), (U, Reason::PropagationPending), "{}", paired.message);
    assert_eq!(soon.report.retry_after.map(|d| d.as_secs()), Some(3));

    // Granted 11 minutes ago: the check's answer is the truth.
    let mut old = first.status.clone();
    for c in old.conditions.iter_mut().filter(|c| c.type_ == "RoleAssigned") {
        c.last_transition_time.0 = jiff::Timestamp::now() - jiff::SignedDuration::from_mins(11);
    }
    let late = run_once(&fake, &ark, &old, true).await;
    let paired = late.report.outcome(Kind::Paired).expect("paired");
    assert_eq!((paired.status, paired.reason), (F, Reason::PairingMisconfigured), "{}", paired.message);
    assert_eq!((late.ready.status, late.ready.reason), (F, Reason::PairingMisconfigured));
}

/// The recorded assignment is checked with one read; gone, it is put again under our name.
#[tokio::test]
async fn a_recorded_assignment_is_read_and_restored_when_gone() {
    let fake = Fake::default();
    let ark = object(|_| {});
    let first = run_once(&fake, &ark, &AzureRootKeyStatus::default(), true).await;
    let name = first.status.role_assignment_name.clone().expect("assigned");
    fake.world().assignments.clear();
    fake.world().calls.clear();
    let second = run_once(&fake, &ark, &first.status, true).await;
    assert_eq!(second.found.assignment.as_deref(), Some(name.as_str()), "the same deterministic name");
    let calls = fake.world().calls.clone();
    assert_eq!(calls.iter().copied().filter(|c| c.starts_with("rbac.")).collect::<Vec<_>>(), ["rbac.get", "rbac.put"]);
}

/// An object refused before any call: the first step says why, every other waits for it.
#[test]
fn a_refused_object_reports_the_refusal_first_and_waits_everywhere_else() {
    let report = Report::refused(Outcome::failed(Reason::PolicyDenied, "not this namespace"));
    let ready = report.ready(true, true);
    assert_eq!((ready.status, ready.reason), (F, Reason::PolicyDenied));
    let reasons: Vec<Reason> = report.outcomes().map(|(_, o)| o.reason).collect();
    assert_eq!(reasons[0], Reason::PolicyDenied);
    assert!(reasons[1..].iter().all(|r| *r == Reason::WaitingKeyReady), "{reasons:?}");
}

/// The dependency table is the only source of gating: a step never acts before what it needs.
#[test]
fn the_dependency_table_orders_the_steps() {
    for kind in Kind::ALL {
        for need in kind.needs() {
            assert!(need < &kind, "{kind:?} needs {need:?}, which runs after it");
        }
    }
    assert!(Kind::Paired.needs().contains(&Kind::RoleAssigned), "Antimatter checks only with the role in place");
    assert!(Kind::Registered.needs().contains(&Kind::TagApplied), "registered only once tagged");
    assert!(!Kind::Active.required(true, false) && Kind::Active.required(true, true));
    assert!(!Kind::Paired.required(false, true) && Kind::RoleAssigned.required(false, false));
}

/// `steps::revoke` with an API key, as the finalizer calls it.
async fn revoke(fake: &Fake, ark: &AzureRootKey) -> Result<steps::Revoked, Failure> {
    let inputs = inputs(true);
    let target = inputs.domain.clone().expect("an API key");
    steps::revoke(fake, CLUSTER, ark, &inputs, &target).await
}

/// The object after one run, with the status that run wrote.
async fn settled(fake: &Fake, mut ark: AzureRootKey) -> AzureRootKey {
    let run = run_once(fake, &ark, &AzureRootKeyStatus::default(), true).await;
    ark.status = Some(run.status);
    ark
}

fn with_uid(mut ark: AzureRootKey, uid: &str) -> AzureRootKey {
    ark.metadata.uid = Some(uid.to_owned());
    ark
}

/// Revoke removes the registration, then the assignment, then the tag (and its marker); never the
/// key nor another tag; and is refused while the key is Antimatter's active key.
#[tokio::test]
async fn revoke_undoes_what_was_made_but_never_the_key() {
    let fake = Fake::default();
    let ark = settled(&fake, object(|s| s.antimatter.activate = false)).await;
    let created = ark.status.as_ref().and_then(|s| s.created.clone()).expect("a record");
    assert!(created.domain_tag && created.role_assignment_name.is_some() && created.root_encryption_key_id.is_some());
    fake.world().keys.get_mut("k").expect("k").tags.insert("owner".into(), "platform".into());

    let rek = created.root_encryption_key_id.clone().expect("rek");
    fake.world().active = Some(format!("{DOMAIN}::{rek}"));
    let refused = revoke(&fake, &ark).await.expect_err("active key");
    assert_eq!(refused.outcome.reason, Reason::KeyIsActive);
    assert_eq!(fake.world().assignments.len(), 1, "nothing removed while active");

    fake.world().active = None;
    let revoked = revoke(&fake, &ark).await.expect("revoked");
    assert_eq!(revoked.removed.len(), 3, "{revoked:?}");
    assert!(revoked.kept.is_empty(), "{revoked:?}");
    {
        let world = fake.world();
        assert!(world.registrations.is_empty() && world.assignments.is_empty());
        let key = world.keys.get("k").expect("the key is kept");
        assert_eq!(key.tags.get("owner").map(String::as_str), Some("platform"), "foreign tags kept");
        assert!(!key.tags.keys().any(|t| t.contains(DOMAIN)), "the domain tag and its marker removed: {:?}", key.tags);
        assert!(key.tags.contains_key(OWNER_TAG), "the owner marker stays (stale once the object is gone)");
    }
    revoke(&fake, &ark).await.expect("revoking again finds nothing to do");
}

/// A second object on the same key and domain finds the tag, the assignment and the registration
/// in place: it records none of them as its own, and its Revoke removes none of them.
#[tokio::test]
async fn revoke_of_a_shadow_object_leaves_the_owners_access() {
    let fake = Fake::default();
    let owner = settled(&fake, object(|s| s.antimatter.activate = false)).await;
    let shadow = settled(&fake, with_uid(object(|s| s.antimatter.activate = false), "uid-shadow")).await;
    let status = shadow.status.clone().expect("status");
    assert_eq!(status.created, Some(Default::default()), "the shadow added nothing");
    assert_eq!(status.root_encryption_key_id, owner.status.as_ref().and_then(|s| s.root_encryption_key_id.clone()));
    let snapshot = |w: &World| (w.assignments.clone(), w.registrations.clone(), w.keys.clone());
    let before = snapshot(&fake.world());

    let revoked = revoke(&fake, &shadow).await.expect("released: it has nothing of its own to remove");
    assert!(revoked.removed.is_empty(), "{revoked:?}");
    assert_eq!(revoked.kept.len(), 3, "tells what it left: {revoked:?}");
    let after = snapshot(&fake.world());
    assert_eq!(before, after, "nothing of the owner's removed");
}

/// While Antimatter still re-wraps data keys (after another key became active), the key may still
/// be needed: Revoke waits, calling rotate, and removes nothing until has_more is false.
#[tokio::test]
async fn revoke_waits_until_rotation_is_complete() {
    let fake = Fake::default();
    let ark = settled(&fake, object(|s| s.antimatter.activate = false)).await;
    {
        let mut world = fake.world();
        world.active = Some("rek-other".into());
        world.rotation_batches = 30;
    }
    let waiting = revoke(&fake, &ark).await.expect_err("rotation not complete");
    assert_eq!((waiting.outcome.status, waiting.outcome.reason), (U, Reason::RotationIncomplete));
    assert!(waiting.retry_after.is_some(), "comes back soon");
    {
        let world = fake.world();
        assert!(world.count("am.rotate") > 1, "the operator drives the rotation");
        assert_eq!((world.registrations.len(), world.assignments.len()), (1, 1), "nothing removed");
    }

    let revoked = revoke(&fake, &ark).await.expect("rotation finished");
    assert_eq!(revoked.removed.len(), 3, "{revoked:?}");
    assert_eq!(fake.world().rotation_batches, 0);
}

/// A key registered by hand (before the object adopted it) may be made active by a person at any
/// time: its access is never removed while that registration exists; while it is active, nothing
/// is touched.
#[tokio::test]
async fn revoke_keeps_access_while_a_registration_it_did_not_make_remains() {
    let fake = Fake::default();
    fake.world().keys.insert("k".into(), World::key("k", &[]));
    let url = World::key("k", &[]).kid;
    fake.world().registrations.insert("rek-by-hand".into(), url);
    let ark = settled(&fake, object(|s| s.antimatter.activate = false)).await;
    let created = ark.status.as_ref().and_then(|s| s.created.clone()).expect("record");
    assert_eq!(created.root_encryption_key_id, None, "adopted, not created");
    assert!(created.domain_tag && created.role_assignment_name.is_some());

    fake.world().active = Some("rek-by-hand".into());
    assert_eq!(revoke(&fake, &ark).await.expect_err("active").outcome.reason, Reason::KeyIsActive);
    fake.world().active = None;
    let refused = revoke(&fake, &ark).await.expect_err("still registered");
    assert_eq!(refused.outcome.reason, Reason::KeyStillRegistered);
    assert!(refused.outcome.message.contains("rek-by-hand"), "{}", refused.outcome.message);
    let world = fake.world();
    assert_eq!((world.registrations.len(), world.assignments.len()), (1, 1));
    assert!(world.keys["k"].tags.contains_key(DOMAIN), "the tag stays too");
}

/// Another domain allowed on the key reaches it through the same principal: the assignment stays
/// (and is reported kept); this domain's tag goes.
#[tokio::test]
async fn revoke_keeps_the_assignment_another_domain_still_needs() {
    let fake = Fake::default();
    let ark = settled(&fake, object(|s| s.antimatter.activate = false)).await;
    fake.world().keys.get_mut("k").expect("k").tags.insert("dm-OtherDomain1".into(), "allow".into());
    let revoked = revoke(&fake, &ark).await.expect("revoked");
    assert_eq!(fake.world().assignments.len(), 1, "still needed by dm-OtherDomain1");
    assert!(revoked.kept.iter().any(|k| k.contains("dm-OtherDomain1")), "{revoked:?}");
    assert!(!fake.world().keys["k"].tags.contains_key(DOMAIN));
    assert!(fake.world().registrations.is_empty());
}

/// The proof of what an object added lives with the thing itself, so a restart between the change
/// and the status write (the status is lost) still records, and revokes, all of it.
#[tokio::test]
async fn ownership_survives_a_lost_status_write() {
    let fake = Fake::default();
    let ark = object(|s| s.antimatter.activate = false);
    run_once(&fake, &ark, &AzureRootKeyStatus::default(), true).await;
    let again = run_once(&fake, &ark, &AzureRootKeyStatus::default(), true).await;
    let created = again.status.created.clone().expect("record");
    assert!(created.domain_tag && created.role_assignment_name.is_some() && created.root_encryption_key_id.is_some());
    let ark = AzureRootKey { status: Some(again.status), ..ark };
    assert_eq!(revoke(&fake, &ark).await.expect("revoked").removed.len(), 3);
}

/// An object from before the record (status names an assignment and a registration, but nothing
/// proves this object made them): Revoke removes nothing and lists what it left.
#[tokio::test]
async fn revoke_of_an_object_from_before_the_record_removes_nothing() {
    let fake = Fake::default();
    let mut key = World::key("k", &[(DOMAIN, "allow")]);
    key.tags.insert("owner".into(), "platform".into());
    let url = key.kid.clone();
    let assignment = RoleAssignment {
        name: "legacy-assignment".into(),
        properties: RoleAssignmentProperties {
            scope: Some("/keys/k".into()),
            role_definition_id: CRYPTO_USER_ROLE_DEFINITION.into(),
            principal_id: "sp-existing".into(),
        },
    };
    {
        let mut world = fake.world();
        world.keys.insert("k".into(), key);
        world.registrations.insert("rek-legacy".into(), url);
        world.descriptions.insert("rek-legacy".into(), "AzureRootKey team-a/root".into());
        world.assignments.insert(("/keys/k".into(), "legacy-assignment".into()), assignment);
    }
    let mut ark = object(|s| s.antimatter.activate = false);
    ark.status = Some(AzureRootKeyStatus {
        role_assignment_name: Some("legacy-assignment".into()),
        root_encryption_key_id: Some("rek-legacy".into()),
        ..Default::default()
    });
    let revoked = revoke(&fake, &ark).await.expect("released: nothing is provably its own");
    assert!(revoked.removed.is_empty(), "{revoked:?}");
    assert!(revoked.kept.iter().any(|k| k.contains("legacy-assignment")), "{revoked:?}");
    assert!(revoked.kept.iter().any(|k| k.contains("rek-legacy")), "{revoked:?}");
    let world = fake.world();
    assert_eq!((world.assignments.len(), world.registrations.len()), (1, 1));
    assert!(world.keys["k"].tags.contains_key(DOMAIN));
    assert!(!world.calls.contains(&"am.active") && !world.calls.contains(&"am.rotate"), "nothing to check");
}

/// `atScope()` lists the principal's assignment at `/` too; the one adopted after a 409 is the one
/// at the key's scope (so `Revoke` can never delete an HSM-wide grant), found whatever the GUID case.
#[tokio::test]
async fn a_conflict_adopts_the_assignment_at_the_keys_scope_not_one_above_it() {
    let assignment = |scope: &str, name: &str, principal: &str| {
        let properties = RoleAssignmentProperties {
            scope: Some(scope.into()),
            role_definition_id: CRYPTO_USER_ROLE_DEFINITION.into(),
            principal_id: principal.into(),
        };
        ((scope.to_owned(), name.to_owned()), RoleAssignment { name: name.into(), properties })
    };
    let mut world = World::default();
    given_principal(&mut world);
    world.assignments.extend([assignment("/", "hsm-wide", "sp-given"), assignment("/keys/k", "by-hand", "SP-GIVEN")]);
    world.faults.insert("rbac.put", Fault::Status(409, "MatchingRoleAssignmentExists", None));
    let fake = Fake::new(world);
    let ark = object(|s| s.antimatter.service_principal_object_id = Some("sp-given".into()));
    let run = run_once(&fake, &ark, &AzureRootKeyStatus::default(), true).await;
    assert_eq!(run.report.outcome(Kind::RoleAssigned).map(|o| o.reason), Some(Reason::RoleAssigned));
    assert_eq!(run.found.assignment.as_deref(), Some("by-hand"));
}

// The key's lifecycle: rotation to completion, activation that does not fight, new key versions.

/// The status without the times of the pairing check (each check records its own).
fn without_check_times(status: &AzureRootKeyStatus) -> AzureRootKeyStatus {
    let mut status = status.clone();
    if let Some(p) = status.pairing.as_mut() {
        (p.last_check_time, p.last_healthy_time) = (None, None);
    }
    status
}

fn changes(run: &Run) -> Vec<&'static str> {
    run.report.changes.iter().map(|c| c.reason.as_str()).collect()
}

fn active(run: &Run) -> (ConditionStatus, Reason) {
    run.report.outcome(Kind::Active).map(|o| (o.status, o.reason)).expect("Active reported")
}

/// 50 batches at 20 a reconcile: three reconciles, each recording its progress; Ready only after
/// the last; then no more rotate calls.
#[tokio::test]
async fn rotation_is_driven_to_completion_across_reconciles() {
    let fake = Fake::default();
    fake.world().rotation_batches = 50;
    let ark = object(|_| {});
    let mut known = AzureRootKeyStatus::default();
    let mut batches = Vec::new();
    for round in 0..3 {
        let run = run_once(&fake, &ark, &known, true).await;
        let rotation = run.status.rotation.clone().expect("rotation recorded");
        batches.push(rotation.batches);
        if round < 2 {
            assert_eq!(active(&run), (U, Reason::RotationInProgress), "round {round}");
            assert_eq!((run.ready.status, rotation.state), (U, RotationState::InProgress), "round {round}");
            assert_eq!(run.report.retry_after.map(|d| d.as_secs()), Some(1));
        } else {
            assert_eq!(active(&run), (T, Reason::KeyActive));
            assert!(run.ready.is_true(), "{:?}", run.ready);
            assert_eq!(rotation.state, RotationState::Complete);
            assert!(rotation.completed_at.is_some());
            assert_eq!(changes(&run), ["RotationCompleted"]);
        }
        known = run.status;
    }
    assert_eq!(batches, [20, 40, 50]);
    assert_eq!(fake.world().count("am.activate"), 1, "activated once");
    fake.world().calls.clear();
    let settled = run_once(&fake, &ark, &known, true).await;
    assert!(settled.ready.is_true());
    assert_eq!(fake.world().count("am.rotate"), 0, "a finished rotation is not asked again");
    assert_eq!(without_check_times(&settled.status), without_check_times(&known), "nothing but the check's time");
}

/// Someone makes another key active: reported, left as it is; taken back only with reclaimActive.
#[tokio::test]
async fn a_changed_active_key_is_reported_and_left_unless_reclaimed() {
    let fake = Fake::default();
    let ark = object(|_| {});
    let first = run_once(&fake, &ark, &AzureRootKeyStatus::default(), true).await;
    assert!(first.ready.is_true());
    fake.world().active = Some("rek-emergency".into());
    fake.world().calls.clear();

    let second = run_once(&fake, &ark, &first.status, true).await;
    assert_eq!(active(&second), (F, Reason::ActiveKeyChanged));
    let message = &second.report.outcome(Kind::Active).expect("active").message;
    assert!(message.contains("rek-emergency"), "{message}");
    assert_eq!(fake.world().count("am.activate"), 0, "not taken back");
    assert_eq!(fake.world().active.as_deref(), Some("rek-emergency"));
    let third = run_once(&fake, &ark, &second.status, true).await;
    assert_eq!(active(&third), (F, Reason::ActiveKeyChanged), "still left alone");
    assert_eq!(fake.world().count("am.activate"), 0);

    let reclaiming = object(|s| s.antimatter.reclaim_active = true);
    let fourth = run_once(&fake, &reclaiming, &third.status, true).await;
    assert_eq!(active(&fourth), (T, Reason::KeyActive));
    assert_eq!(changes(&fourth), ["Activated"]);
    assert_eq!(fake.world().active, first.status.root_encryption_key_id);
}

/// Two objects asking to activate in one domain: the later one is refused before any active-key call.
#[tokio::test]
async fn a_second_object_asking_to_activate_in_a_domain_is_refused() {
    let fake = Fake::default();
    fake.world().activators =
        vec![(DOMAIN.into(), "team-b".into(), "first".into()), (DOMAIN.into(), "team-a".into(), "root".into())];
    let ark = object(|_| {});
    let run = run_once(&fake, &ark, &AzureRootKeyStatus::default(), true).await;
    assert_eq!(active(&run), (F, Reason::ActivationConflict));
    assert!(run.report.outcome(Kind::Active).expect("active").message.contains("team-b/first"));
    let calls = fake.world().calls.clone();
    assert!(!calls.iter().any(|c| *c == "am.active" || *c == "am.activate"), "{calls:?}");
    assert_eq!(run.report.outcome(Kind::Paired).map(|o| o.status), Some(T), "registered and paired all the same");

    fake.world().activators.remove(0);
    let alone = run_once(&fake, &ark, &run.status, true).await;
    assert_eq!(active(&alone), (T, Reason::KeyActive), "the first is gone: this one may activate");
}

/// A new version of the key (here without the owner marker, as `az keyvault key rotate` may leave
/// it): tagged, registered, paired, activated, rotated; the old registration retired; the HSM key
/// version is never touched.
#[tokio::test]
async fn a_new_key_version_takes_over_and_the_old_registration_is_retired() {
    let fake = Fake::default();
    let ark = object(|_| {});
    let first = run_once(&fake, &ark, &AzureRootKeyStatus::default(), true).await;
    assert!(first.ready.is_true());
    let old_rek = first.status.root_encryption_key_id.clone().expect("registered");
    assert_eq!(first.status.versions.len(), 1);
    assert_eq!(first.status.versions[0].state, VersionState::Current);

    let v2 = {
        let mut world = fake.world();
        let mut key = World::key("k", &[]);
        key.kid = format!("{HSM_URL}/keys/k/v2");
        key.version = "v2".into();
        world.keys.insert("k".into(), key);
        world.rotation_batches = 3;
        world.calls.clear();
        world.keys["k"].kid.clone()
    };
    let inputs = Inputs { grant: Grant { claim_existing_keys: false, unverified_principals: false }, ..inputs(true) };
    let second = run_with(&fake, &ark, &first.status, &inputs).await;
    assert!(second.ready.is_true(), "{:?}", second.report.outcomes().collect::<Vec<_>>());
    assert_eq!(second.status.key_url.as_deref(), Some(v2.as_str()));
    let new_rek = second.status.root_encryption_key_id.clone().expect("new registration");
    assert_ne!(new_rek, old_rek);
    assert_eq!(fake.world().active.as_deref(), Some(new_rek.as_str()));
    assert_eq!(changes(&second), ["TagAdded", "OwnerMarked", "Registered", "Activated", "Retired"]);
    let states: Vec<_> = second.status.versions.iter().map(|v| (v.version.as_str(), v.state)).collect();
    assert_eq!(states, [("v2", VersionState::Current), ("v1", VersionState::Retired)]);
    assert!(!fake.world().registrations.contains_key(&old_rek), "old registration deleted");
    assert_eq!(fake.world().keys["k"].tags.get(DOMAIN).map(String::as_str), Some("allow"), "the new version is tagged");
    let calls = fake.world().calls.clone();
    assert!(!calls.iter().any(|c| c.starts_with("key.") && *c != "key.get" && *c != "key.tags"), "{calls:?}");

    fake.world().calls.clear();
    let third = run_with(&fake, &ark, &second.status, &inputs).await;
    assert!(third.ready.is_true());
    assert_eq!(without_check_times(&third.status), without_check_times(&second.status), "settled");
    assert_eq!(fake.world().count("am.delete"), 0);
}

/// An older version's registration that someone else made is kept; one still active (activate:
/// false, and a person made it active) waits.
#[tokio::test]
async fn only_this_objects_inactive_old_registrations_are_retired() {
    let new_version = |fake: &Fake, v: &str| {
        let mut world = fake.world();
        let mut key = World::key("k", &[(DOMAIN, "allow"), (OWNER_TAG, MARKER)]);
        key.kid = format!("{HSM_URL}/keys/k/{v}");
        key.version = v.into();
        world.keys.insert("k".into(), key);
    };
    // Registered by hand before the object: its registration is found, not made.
    let fake = Fake::new(World::default());
    existing_principal(&mut fake.world());
    fake.world().registrations.insert("rek-by-hand".into(), format!("{HSM_URL}/keys/k/v1"));
    let ark = object(|s| s.antimatter.activate = false);
    let first = run_once(&fake, &ark, &AzureRootKeyStatus::default(), true).await;
    assert_eq!(first.status.root_encryption_key_id.as_deref(), Some("rek-by-hand"));
    new_version(&fake, "v2");
    let second = run_once(&fake, &ark, &first.status, true).await;
    let states: Vec<_> = second.status.versions.iter().map(|v| v.state).collect();
    assert_eq!(states, [VersionState::Current, VersionState::Kept]);
    assert!(fake.world().registrations.contains_key("rek-by-hand"), "not this object's: kept");

    // Made by this object, but a person made it active: it waits, and goes once it is not.
    let v2_rek = second.status.root_encryption_key_id.clone().expect("v2 registered");
    fake.world().active = Some(v2_rek.clone());
    new_version(&fake, "v3");
    let third = run_once(&fake, &ark, &second.status, true).await;
    assert_eq!(
        third.status.versions.iter().map(|v| v.state).collect::<Vec<_>>(),
        [VersionState::Current, VersionState::Retiring, VersionState::Kept]
    );
    assert!(fake.world().registrations.contains_key(&v2_rek), "active: kept");
    fake.world().active = third.status.root_encryption_key_id.clone();
    let fourth = run_once(&fake, &ark, &third.status, true).await;
    assert_eq!(fourth.status.versions[1].state, VersionState::Retired);
    assert!(!fake.world().registrations.contains_key(&v2_rek));
}

/// `spec.key.rotationPolicy` is applied once and then only read; a refusal is the key's condition.
#[tokio::test]
async fn the_specified_rotation_policy_is_applied_once_and_a_refusal_is_reported() {
    let fake = Fake::default();
    let ark = object(|s| {
        s.key.rotation_policy =
            Some(KeyRotationPolicySpec { rotate_after: "P30D".into(), expire_after: Some("P90D".into()) })
    });
    let first = run_once(&fake, &ark, &AzureRootKeyStatus::default(), true).await;
    assert!(first.ready.is_true(), "{:?}", first.ready);
    assert!(changes(&first).contains(&"RotationPolicySet"), "{:?}", changes(&first));
    let stored = fake.world().rotation_policies.get("k").cloned().expect("policy set");
    assert_eq!((stored.rotate_after_create.as_deref(), stored.expiry_time.as_deref()), (Some("P30D"), Some("P90D")));
    assert_eq!(first.status.rotation_policy, ark.spec.key.rotation_policy);

    fake.world().calls.clear();
    let second = run_once(&fake, &ark, &first.status, true).await;
    assert!(!changes(&second).contains(&"RotationPolicySet"));
    let (gets, puts) = {
        let world = fake.world();
        (world.count("key.rotationpolicy.get"), world.count("key.rotationpolicy.put"))
    };
    assert_eq!((gets, puts), (1, 0));

    let other = object(|s| {
        s.key.rotation_policy = Some(KeyRotationPolicySpec { rotate_after: "P60D".into(), expire_after: None })
    });
    fake.world().faults.insert("key.rotationpolicy.put", Fault::Status(403, "Forbidden", None));
    let refused = run_once(&fake, &other, &second.status, true).await;
    let key = refused.report.outcome(Kind::KeyReady).expect("key");
    assert_eq!((key.status, key.reason), (F, Reason::Forbidden));
    assert!(key.message.starts_with("Applying spec.key.rotationPolicy: "), "{}", key.message);

    // Without the field the key's policy is left as it is: not even read.
    fake.world().calls.clear();
    let unmanaged = run_once(&fake, &object(|_| {}), &first.status, true).await;
    assert_eq!(unmanaged.status.rotation_policy, None);
    let calls = fake.world().calls.clone();
    assert!(!calls.iter().any(|c| c.starts_with("key.rotationpolicy")), "{calls:?}");
}
