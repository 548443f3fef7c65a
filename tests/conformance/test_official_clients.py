"""Drive the sandbox with the official clients: azure-identity, azure-keyvault-keys,
azure-keyvault-administration and antimatter-api. Tests run in file order and share state."""

import os
import time
import uuid
from urllib.parse import urlparse

import antimatter_api as am
import pytest
import requests
from antimatter_api.exceptions import ApiException
from azure.core.exceptions import ClientAuthenticationError, HttpResponseError, ResourceNotFoundError
from azure.identity import ClientAssertionCredential, ClientSecretCredential
from azure.keyvault.administration import KeyVaultAccessControlClient, KeyVaultRoleScope
from azure.keyvault.keys import (
    KeyClient,
    KeyRotationLifetimeAction,
    KeyRotationPolicy,
    KeyRotationPolicyAction,
    KeyType,
)
from azure.keyvault.keys.crypto import CryptographyClient, KeyWrapAlgorithm

from conftest import (
    ANTIMATTER_APP,
    API_KEY,
    CONTOSO,
    DOMAIN,
    HSM,
    NOROLES_APP,
    NOROLES_SECRET,
    OPERATOR_APP,
    OPERATOR_SECRET,
)

KEY = "conf-key"
CRYPTO_USER = "21dbd100-6940-42c2-9190-5d6cb909625b"
shared = {}


def cred(ep, client=OPERATOR_APP, secret=OPERATOR_SECRET, tenant=CONTOSO):
    return ClientSecretCredential(
        tenant, client, secret, authority=ep["authority_url"], disable_instance_discovery=True
    )


def hsm_url(ep):
    return ep["hsms"][HSM]


def graph(ep, method, path, token, **kw):
    headers = {"Authorization": f"Bearer {token}", **kw.pop("headers", {})}
    return requests.request(method, ep["graph_url"] + path, headers=headers, timeout=10, **kw)


def counters(ep):
    return requests.get(ep["admin_url"] + "/counters", timeout=5).json()


# ---------------------------------------------------------------- Entra ID


def test_token_by_secret_and_errors(sandbox):
    tok = cred(sandbox).get_token(sandbox["hsm_resource"] + "/.default")
    assert tok.token.count(".") == 2 and tok.expires_on > time.time() + 3000

    with pytest.raises(ClientAuthenticationError) as e:
        cred(sandbox, secret="wrong").get_token(sandbox["hsm_resource"] + "/.default")
    assert "AADSTS7000215" in str(e.value)

    # MSAL fails at OIDC discovery for an unknown tenant (as against Entra); the raw endpoints say AADSTS90002.
    unknown = str(uuid.uuid4())
    with pytest.raises(ClientAuthenticationError) as e:
        cred(sandbox, tenant=unknown).get_token(sandbox["hsm_resource"] + "/.default")
    assert "Unable to get authority configuration" in str(e.value)
    r = requests.get(f"{sandbox['authority_url']}/{unknown}/v2.0/.well-known/openid-configuration", timeout=5)
    assert r.status_code == 400 and r.json()["error_codes"] == [90002]
    r = requests.post(
        f"{sandbox['authority_url']}/{unknown}/oauth2/v2.0/token",
        timeout=5,
        data={
            "grant_type": "client_credentials",
            "client_id": OPERATOR_APP,
            "client_secret": OPERATOR_SECRET,
            "scope": sandbox["graph_url"] + "/.default",
        },
    )
    assert r.status_code == 400 and "AADSTS90002" in r.json()["error_description"]

    # Antimatter's multi-tenant app has no service principal in the customer tenant yet.
    r = requests.post(
        f"{sandbox['authority_url']}/{CONTOSO}/oauth2/v2.0/token",
        data={
            "grant_type": "client_credentials",
            "client_id": ANTIMATTER_APP,
            "client_secret": "fake-antimatter-app-secret-not-real",
            "scope": sandbox["hsm_resource"] + "/.default",
        },
        timeout=10,
    )
    body = r.json()
    assert r.status_code == 400 and body["error"] == "unauthorized_client" and body["error_codes"] == [700016]
    assert {"timestamp", "trace_id", "correlation_id"} <= body.keys()


def federated_token(ep, **claims):
    """A service-account-like token from the sandbox's own OpenID issuer (admin API)."""
    body = {"subject": "system:serviceaccount:rootkey-system:rootkey-operator", **claims}
    r = requests.post(ep["admin_url"] + "/federated-tokens", json=body, timeout=5)
    assert r.status_code == 201, r.text
    return r.json()["token"]


def test_token_by_federated_assertion(sandbox):
    def assertion_credential(token):
        return ClientAssertionCredential(
            CONTOSO, OPERATOR_APP, lambda: token, authority=sandbox["authority_url"], disable_instance_discovery=True
        )

    assert assertion_credential(federated_token(sandbox)).get_token(sandbox["graph_url"] + "/.default").token
    good = federated_token(sandbox)
    head, claims, signature = good.split(".")
    tampered = signature[:4] + ("A" if signature[4] != "A" else "B") + signature[5:]
    for bad, code in (
        (federated_token(sandbox, subject="system:serviceaccount:x:y"), "AADSTS700213"),
        (federated_token(sandbox, issuer="https://evil.example"), "AADSTS700211"),
        (federated_token(sandbox, audience="api://other"), "AADSTS700212"),
        (federated_token(sandbox, lifetime_secs=-60), "AADSTS700024"),
        # Entra checks the signature against the keys the issuer publishes (OpenID discovery).
        (f"{head}.{claims}.{tampered}", "AADSTS700027"),
        (f"eyJhbGciOiJub25lIn0.{claims}.", "AADSTS50027"),
    ):
        with pytest.raises(ClientAuthenticationError) as e:
            assertion_credential(bad).get_token(sandbox["graph_url"] + "/.default")
        assert code in str(e.value)


# ---------------------------------------------------------------- Managed HSM keys


def test_create_get_update_list_versions(sandbox):
    kc = KeyClient(hsm_url(sandbox), cred(sandbox))
    key = kc.create_oct_key(KEY, size=256, hardware_protected=True)
    assert key.key_type == KeyType.oct_hsm
    assert sorted(key.key_operations) == sorted(["wrapKey", "unwrapKey", "encrypt", "decrypt"])
    assert key.id.startswith(hsm_url(sandbox) + f"/keys/{KEY}/") and len(key.properties.version) == 32
    assert key.properties.recovery_level == "Recoverable+Purgeable" and key.properties.enabled is True

    got = kc.get_key(KEY)
    assert got.id == key.id
    by_version = kc.get_key(KEY, version=key.properties.version)
    assert by_version.id == key.id

    updated = kc.update_key_properties(KEY, tags={"env": "conformance"})
    assert updated.properties.tags == {"env": "conformance"} and updated.id == key.id

    second = kc.create_oct_key(KEY, size=256, hardware_protected=True)
    versions = [p.version for p in kc.list_properties_of_key_versions(KEY)]
    assert sorted(versions) == sorted([key.properties.version, second.properties.version])
    names = [p.name for p in kc.list_properties_of_keys()]
    assert KEY in names and "existing-key" in names
    shared["kid"] = second.id
    shared["version"] = second.properties.version

    with pytest.raises(ResourceNotFoundError) as e:
        kc.get_key("does-not-exist")
    assert e.value.error.code == "KeyNotFound"

    with pytest.raises(HttpResponseError) as e:
        kc.create_oct_key("bad-size", size=512, hardware_protected=True)
    assert e.value.status_code == 400 and e.value.error.code == "BadParameter"


def test_wrap_unwrap_round_trip(sandbox):
    kc = KeyClient(hsm_url(sandbox), cred(sandbox))
    key = kc.get_key(KEY)
    cc = CryptographyClient(key, cred(sandbox))
    secret = os.urandom(32)
    wrapped = cc.wrap_key(KeyWrapAlgorithm.aes_256, secret)
    assert wrapped.encrypted_key != secret and len(wrapped.encrypted_key) == 40
    assert cc.unwrap_key(KeyWrapAlgorithm.aes_256, wrapped.encrypted_key).key == secret


def test_soft_delete_and_recover(sandbox):
    kc = KeyClient(hsm_url(sandbox), cred(sandbox))
    kc.create_oct_key("conf-deleted", size=128, hardware_protected=True)
    # Crypto User may delete; recovering needs Crypto Officer (the operator holds both).
    deleted = kc.begin_delete_key("conf-deleted").result()
    assert deleted.recovery_id.endswith("/deletedkeys/conf-deleted")
    with pytest.raises(HttpResponseError) as e:
        kc.create_oct_key("conf-deleted", size=128, hardware_protected=True)
    assert e.value.status_code == 409 and e.value.error.code == "Conflict"
    recovered = kc.begin_recover_deleted_key("conf-deleted").result()
    assert recovered.name == "conf-deleted"


def test_forbidden_without_role(sandbox):
    kc = KeyClient(hsm_url(sandbox), cred(sandbox, NOROLES_APP, NOROLES_SECRET))
    with pytest.raises(HttpResponseError) as e:
        kc.get_key(KEY)
    assert e.value.status_code == 403 and e.value.error.code == "Forbidden"
    assert "Microsoft.KeyVault/managedHsm/keys/read/action" in e.value.error.message


def test_api_version_and_challenge(sandbox):
    base = hsm_url(sandbox)
    r = requests.get(f"{base}/keys/{KEY}?api-version=7.5", timeout=5)
    # A real HSM's challenge: the two bytes OK (SDK recordings of Managed HSM); the SDKs read only the header.
    assert r.status_code == 401 and r.content == b"OK"
    h = r.headers["WWW-Authenticate"]
    assert f'authorization="{sandbox["authority_url"]}/{CONTOSO}"' in h and f'resource="{sandbox["hsm_resource"]}"' in h
    tok = cred(sandbox).get_token(sandbox["hsm_resource"] + "/.default").token
    r = requests.get(f"{base}/keys/{KEY}", headers={"Authorization": f"Bearer {tok}"}, timeout=5)
    assert r.status_code == 400 and r.json()["error"]["code"] == "BadParameter"
    r = requests.get(f"{base}/keys/{KEY}?api-version=1.0", headers={"Authorization": f"Bearer {tok}"}, timeout=5)
    assert r.status_code == 400 and "not recognized" in r.json()["error"]["message"]


def settings(ep, **patch):
    r = requests.patch(ep["admin_url"] + "/settings", json=patch, timeout=5)
    assert r.status_code == 200, r.text


def count(ep, operation):
    """HSM requests of `operation` answered 200 (not the challenge flow's first, unauthenticated one)."""
    rows = counters(ep)["counters"]
    return sum(r["count"] for r in rows if (r["service"], r["operation"], r["status"]) == ("hsm", operation, 200))


def test_rotation_policy_and_rotate(sandbox):
    kc = KeyClient(hsm_url(sandbox), cred(sandbox))
    kc.create_oct_key("conf-rotating", size=256, hardware_protected=True)
    assert kc.get_key_rotation_policy("conf-rotating").lifetime_actions == []
    policy = KeyRotationPolicy(
        lifetime_actions=[KeyRotationLifetimeAction(KeyRotationPolicyAction.rotate, time_after_create="P30D")],
        expires_in="P90D",
    )
    stored = kc.update_key_rotation_policy("conf-rotating", policy)
    assert stored.expires_in == "P90D" and stored.id.endswith("/keys/conf-rotating/rotationpolicy")
    (action,) = kc.get_key_rotation_policy("conf-rotating").lifetime_actions
    assert action.action == KeyRotationPolicyAction.rotate and action.time_after_create == "P30D"
    # Managed HSM has no Notify action.
    with pytest.raises(HttpResponseError) as e:
        notify = KeyRotationLifetimeAction(KeyRotationPolicyAction.notify, time_before_expiry="P30D")
        kc.update_key_rotation_policy("conf-rotating", KeyRotationPolicy(lifetime_actions=[notify]))
    assert e.value.status_code == 400
    first = kc.get_key("conf-rotating")
    rotated = kc.rotate_key("conf-rotating")
    assert rotated.properties.version != first.properties.version
    expiry = rotated.properties.expires_on - rotated.properties.created_on
    assert expiry.days == 90, "the policy's expiry applies to the new version"
    assert kc.get_key("conf-rotating").id == rotated.id
    # The NoRoles identity may not rotate.
    with pytest.raises(HttpResponseError) as e:
        KeyClient(hsm_url(sandbox), cred(sandbox, NOROLES_APP, NOROLES_SECRET)).rotate_key("conf-rotating")
    assert e.value.status_code == 403


def test_lists_are_followed_page_by_page(sandbox):
    kc = KeyClient(hsm_url(sandbox), cred(sandbox))
    acc = KeyVaultAccessControlClient(hsm_url(sandbox), cred(sandbox))
    previous = requests.get(sandbox["admin_url"] + "/settings", timeout=5).json()["page_size"]
    settings(sandbox, page_size=1)
    try:
        before = count(sandbox, "key.list")
        names = [p.name for p in kc.list_properties_of_keys()]
        assert {KEY, "existing-key", "conf-rotating"} <= set(names) and len(names) == len(set(names))
        assert count(sandbox, "key.list") - before == len(names), "one request per page"
        before = count(sandbox, "rbac.assignment.list")
        assignments = list(acc.list_role_assignments(KeyVaultRoleScope.GLOBAL))
        assert len(assignments) >= 3 and count(sandbox, "rbac.assignment.list") - before == len(assignments)
        definitions = list(acc.list_role_definitions(KeyVaultRoleScope.GLOBAL))
    finally:
        settings(sandbox, page_size=previous)
    # The built-in roles a real HSM lists (azure-keyvault-administration's recording of role definitions).
    assert {d.role_name: d.name for d in definitions} == {
        "Managed HSM Backup User": "7b127d3c-77bd-4e3e-bbe0-dbb8971fa7f8",
        "Managed HSM Crypto Service Encryption User": "33413926-3206-4cdd-b39a-83574fe37a17",
        "Managed HSM Crypto Service Release User": "21dbd100-6940-42c2-9190-5d6cb909625c",
        "Managed HSM Crypto Auditor": "2c18b078-7c48-4d3a-af88-5a3a1b3f82b3",
        "Managed HSM Policy Administrator": "4bd23610-cdcf-4971-bdee-bdc562cc28e4",
        "Managed HSM ARM User": "770fd66c-6266-4643-9d4e-b616870898d5",
        "Managed HSM Crypto User": "21dbd100-6940-42c2-9190-5d6cb909625b",
        "Managed HSM Crypto Officer": "515eb02d-2335-4d2d-92f2-b1cbdf9c3778",
        "Managed HSM Administrator": "a290e904-7015-4bba-90c8-60543313cdb4",
    }
    assert all(d.role_type == "AKVBuiltInRole" and d.assignable_scopes == ["/"] for d in definitions)


# ---------------------------------------------------------------- Graph


def test_graph_service_principals(sandbox):
    op = cred(sandbox).get_token(sandbox["graph_url"] + "/.default").token
    r = graph(sandbox, "GET", f"/v1.0/servicePrincipals(appId='{ANTIMATTER_APP}')", op)
    assert r.status_code == 404 and r.json()["error"]["code"] == "Request_ResourceNotFound"
    r = graph(sandbox, "GET", "/v1.0/servicePrincipals", op, params={"$filter": f"appId eq '{ANTIMATTER_APP}'"})
    assert r.status_code == 200 and r.json()["value"] == []

    noroles = cred(sandbox, NOROLES_APP, NOROLES_SECRET).get_token(sandbox["graph_url"] + "/.default").token
    r = graph(sandbox, "POST", "/v1.0/servicePrincipals", noroles, json={"appId": ANTIMATTER_APP})
    assert r.status_code == 403 and r.json()["error"]["code"] == "Authorization_RequestDenied"

    hsm_tok = cred(sandbox).get_token(sandbox["hsm_resource"] + "/.default").token
    r = graph(sandbox, "GET", f"/v1.0/servicePrincipals(appId='{ANTIMATTER_APP}')", hsm_tok)
    assert r.status_code == 401

    r = graph(sandbox, "POST", "/v1.0/servicePrincipals", op, json={"appId": str(uuid.uuid4())})
    assert r.status_code == 400
    shared["graph_token"] = op


# ---------------------------------------------------------------- Antimatter + RBAC


@pytest.fixture(scope="module")
def antimatter(sandbox):
    cfg = am.Configuration(host=sandbox["antimatter_url"])
    cfg.ssl_ca_cert = sandbox["ca_pem_path"]
    client = am.ApiClient(cfg)
    auth = am.AuthenticationApi(client).domain_authenticate(DOMAIN, am.DomainAuthenticate(token=API_KEY))
    cfg.access_token = auth.token
    return am.EncryptionApi(client), client, cfg


def test_antimatter_auth_and_providers(sandbox, antimatter):
    enc, client, _ = antimatter
    with pytest.raises(ApiException) as e:
        am.AuthenticationApi(client).domain_authenticate(DOMAIN, am.DomainAuthenticate(token="wrong"))
    assert e.value.status == 401
    providers = enc.domain_get_external_root_encryption_key_providers(DOMAIN).providers
    azure = [p.actual_instance for p in providers if p.actual_instance.name == "azure_am"]
    assert (
        azure and azure[0].type == "DelegatedRootEncryptionKeyProvider" and azure[0].account_details == ANTIMATTER_APP
    )


def test_expired_jwt_is_refused(sandbox):
    cfg = am.Configuration(host=sandbox["antimatter_url"])
    cfg.ssl_ca_cert = sandbox["ca_pem_path"]
    client = am.ApiClient(cfg)
    auth = am.AuthenticationApi(client).domain_authenticate(
        DOMAIN, am.DomainAuthenticate(token=API_KEY), token_lifetime=1
    )
    cfg.access_token = auth.token
    time.sleep(2.1)
    with pytest.raises(ApiException) as e:
        am.EncryptionApi(client).domain_list_external_root_encryption_key(DOMAIN)
    assert e.value.status == 401


def test_pairing_flow(sandbox, antimatter):
    enc, _, _ = antimatter
    kid = shared["kid"]
    info = am.KeyInfosKeyInformation(
        am.AntimatterDelegatedAzureKeyInfo(tenant_id=CONTOSO, key_url=kid, provider_name="azure_am")
    )
    with pytest.raises(ApiException) as e:
        bad = am.KeyInfosKeyInformation(
            am.AntimatterDelegatedAzureKeyInfo(
                tenant_id=CONTOSO, key_url=kid.rsplit("/", 1)[0], provider_name="azure_am"
            )
        )
        enc.domain_add_external_root_encryption_key(DOMAIN, am.KeyInfos(description="unversioned", key_information=bad))
    assert e.value.status == 400
    rek = enc.domain_add_external_root_encryption_key(
        DOMAIN, am.KeyInfos(description="conformance", key_information=info)
    ).rek_id
    listed = enc.domain_list_external_root_encryption_key(DOMAIN).keys
    assert any(k.rek_id == rek and k.var_resource_path == kid for k in listed)

    # 1. no service principal for Antimatter's app in the customer tenant
    res = enc.domain_external_root_encryption_key_test(DOMAIN, rek, {})
    assert res.status == "MISCONFIGURED" and "service principal" in res.status_message

    # 2. create it (Graph upsert) -> still no role on the key
    def upsert_antimatter_sp():
        return graph(
            sandbox,
            "PATCH",
            f"/v1.0/servicePrincipals(appId='{ANTIMATTER_APP}')",
            shared["graph_token"],
            json={},
            headers={"Prefer": "create-if-missing"},
        )

    r = upsert_antimatter_sp()
    assert r.status_code == 201
    sp_id = r.json()["id"]
    r = upsert_antimatter_sp()
    assert r.status_code == 204
    r = graph(sandbox, "POST", "/v1.0/servicePrincipals", shared["graph_token"], json={"appId": ANTIMATTER_APP})
    assert r.status_code == 409
    res = enc.domain_external_root_encryption_key_test(DOMAIN, rek, {})
    assert res.status == "MISCONFIGURED" and "Managed HSM Crypto User" in res.status_message

    # 3. role at /keys/<name> via the official access control client
    acc = KeyVaultAccessControlClient(hsm_url(sandbox), cred(sandbox))
    defs = {d.role_name: d for d in acc.list_role_definitions(KeyVaultRoleScope.GLOBAL)}
    assert defs["Managed HSM Crypto User"].name == CRYPTO_USER
    assert (
        "Microsoft.KeyVault/managedHsm/keys/wrap/action" in defs["Managed HSM Crypto User"].permissions[0].data_actions
    )
    scope = f"/keys/{KEY}"
    name = str(uuid.uuid4())
    ra = acc.create_role_assignment(scope, defs["Managed HSM Crypto User"].id, sp_id, name=name)
    assert ra.name == name and ra.properties.scope == scope and ra.properties.principal_id == sp_id
    again = acc.create_role_assignment(scope, defs["Managed HSM Crypto User"].id, sp_id, name=name)
    assert again.name == name
    with pytest.raises(HttpResponseError) as e:
        acc.create_role_assignment(scope, defs["Managed HSM Crypto User"].id, sp_id, name=str(uuid.uuid4()))
    assert e.value.status_code == 400 and "MatchingRoleAssignmentExists" in str(e.value)
    assert any(a.name == name for a in acc.list_role_assignments(scope))
    assert acc.get_role_assignment(scope, name).name == name

    # 4. role in place, tag missing
    res = enc.domain_external_root_encryption_key_test(DOMAIN, rek, {})
    assert res.status == "MISCONFIGURED" and f"{DOMAIN}=allow" in res.status_message

    # 5. tag the exact registered version
    kc = KeyClient(hsm_url(sandbox), cred(sandbox))
    current = kc.get_key(KEY, version=shared["version"]).properties.tags or {}
    kc.update_key_properties(KEY, version=shared["version"], tags={**current, DOMAIN: "allow"})
    res = enc.domain_external_root_encryption_key_test(DOMAIN, rek, {})
    assert res.status == "HEALTHY", res.status_message
    assert res.latency_ms >= 0 and res.id == rek and res.var_resource_path == kid

    # 6. activate, rotate, and refuse deleting the active key
    enc.domain_set_active_external_root_encryption_key(DOMAIN, am.ActiveRootEncryptionKeyID(key_id=rek))
    assert enc.domain_get_active_external_root_encryption_key(DOMAIN).rek_id == rek
    for _ in range(5):
        if not enc.domain_rotate_root_encryption_keys(DOMAIN, {}).has_more:
            break
    else:
        pytest.fail("rotation never finished")
    with pytest.raises(ApiException) as e:
        enc.domain_delete_external_root_encryption_key(DOMAIN, rek)
    assert e.value.status == 409

    # 7. a disabled key is reported as such; removing the role makes it MISCONFIGURED again
    kc.update_key_properties(KEY, version=shared["version"], enabled=False)
    res = enc.domain_external_root_encryption_key_test(DOMAIN, rek, {})
    assert res.status == "MISCONFIGURED" and "disabled" in res.status_message
    kc.update_key_properties(KEY, version=shared["version"], enabled=True)
    acc.delete_role_assignment(scope, name)
    res = enc.domain_external_root_encryption_key_test(DOMAIN, rek, {})
    assert res.status == "MISCONFIGURED"

    # 8. the HSM answering 503 makes the check UNREACHABLE
    requests.post(
        sandbox["admin_url"] + "/faults",
        json={"service": "hsm", "operation": "key.get", "action": {"kind": "status", "status": 503}, "count": 1},
        timeout=5,
    )
    res = enc.domain_external_root_encryption_key_test(DOMAIN, rek, {})
    assert res.status == "UNREACHABLE"


def test_cell_hosted_domain(sandbox):
    """A domain on cell eu1: the API answers 308 to the cell, authenticate (followed there by urllib3)
    names it in cellAddress, and the unchanged client works against it with the cell as its host."""
    r = requests.patch(f"{sandbox['admin_url']}/domains/{DOMAIN}", json={"cell": "eu1"}, timeout=5)
    assert r.status_code == 204, r.text
    try:
        api = am.Configuration(host=sandbox["antimatter_url"])
        api.ssl_ca_cert = sandbox["ca_pem_path"]
        client = am.ApiClient(api)
        auth = am.AuthenticationApi(client).domain_authenticate(DOMAIN, am.DomainAuthenticate(token=API_KEY))
        cell = f"https://antimatter-eu1.sandbox.localhost:{sandbox['port']}"
        assert auth.cell_address == cell
        # Through the API host the 308 is followed, but urllib3 drops Authorization across hosts.
        api.access_token = auth.token
        with pytest.raises(ApiException) as e:
            am.EncryptionApi(client).domain_list_external_root_encryption_key(DOMAIN)
        assert e.value.status == 401

        cfg = am.Configuration(host=auth.cell_address + urlparse(sandbox["antimatter_url"]).path)
        cfg.ssl_ca_cert = sandbox["ca_pem_path"]
        cfg.access_token = auth.token
        enc = am.EncryptionApi(am.ApiClient(cfg))
        listed = enc.domain_list_external_root_encryption_key(DOMAIN).keys
        assert any(k.var_resource_path == shared["kid"] for k in listed)
        version = requests.post(f"{sandbox['admin_url']}/hsms/{HSM}/keys/{KEY}/versions", timeout=5).json()["version"]
        kid = f"{hsm_url(sandbox)}/keys/{KEY}/{version}"
        info = am.KeyInfosKeyInformation(
            am.AntimatterDelegatedAzureKeyInfo(tenant_id=CONTOSO, key_url=kid, provider_name="azure_am")
        )
        rek = enc.domain_add_external_root_encryption_key(
            DOMAIN, am.KeyInfos(description="on a cell", key_information=info)
        ).rek_id
        res = enc.domain_external_root_encryption_key_test(DOMAIN, rek, {})
        assert res.id == rek and res.var_resource_path == kid and res.status in ("HEALTHY", "MISCONFIGURED")
        enc.domain_delete_external_root_encryption_key(DOMAIN, rek)
        hosts = {r["host"] for r in requests.get(sandbox["admin_url"] + "/requests", timeout=5).json()["requests"]}
        assert "antimatter-eu1.sandbox.localhost" in hosts
    finally:
        requests.patch(f"{sandbox['admin_url']}/domains/{DOMAIN}", json={"cell": None}, timeout=5)


def test_new_role_assignment_propagates_on_the_sandbox_clock(sandbox):
    """With rbac_propagation_secs set, a wrap right after a new assignment is 403 ("please observe
    propagation time"), and succeeds once the sandbox clock has passed the delay."""
    settings = sandbox["admin_url"] + "/settings"
    assert requests.patch(settings, json={"rbac_propagation_secs": 30}, timeout=5).status_code == 200
    try:
        acc = KeyVaultAccessControlClient(hsm_url(sandbox), cred(sandbox))
        role = f"Microsoft.KeyVault/providers/Microsoft.Authorization/roleDefinitions/{CRYPTO_USER}"
        noroles_sp = "1d2c3b4a-5f6e-4d7c-8b9a-0f1e2d3c4b90"
        name = str(uuid.uuid4())
        acc.create_role_assignment(f"/keys/{KEY}", role, noroles_sp, name=name)
        # By key ID, so the client calls the HSM's wrapkey (a KeyVaultKey may make it wrap locally).
        key_id = KeyClient(hsm_url(sandbox), cred(sandbox)).get_key(KEY).id
        cc = CryptographyClient(key_id, cred(sandbox, client=NOROLES_APP, secret=NOROLES_SECRET))
        with pytest.raises(HttpResponseError) as e:
            cc.wrap_key(KeyWrapAlgorithm.aes_256, os.urandom(32))
        assert e.value.status_code == 403 and "propagation time" in str(e.value)
        requests.patch(settings, json={"clock_offset_secs": 31}, timeout=5)
        assert len(cc.wrap_key(KeyWrapAlgorithm.aes_256, os.urandom(32)).encrypted_key) == 40
        wraps = [
            r
            for r in requests.get(sandbox["admin_url"] + "/requests", timeout=5).json()["requests"]
            if r["operation"] == "key.wrap" and not r["internal"]
        ]
        assert [r["status"] for r in wraps[-2:]] == [403, 200]
        acc.delete_role_assignment(f"/keys/{KEY}", name)
    finally:
        requests.patch(settings, json={"rbac_propagation_secs": 0, "clock_offset_secs": 0}, timeout=5)


def test_rotation_to_completion_then_the_old_key_may_go(sandbox, antimatter):
    """A large domain: the client rotates until has_more is false; the key active before may not be
    deleted while data keys may still be wrapped under it, and may once the rotation is done."""
    enc, _, _ = antimatter
    before = enc.domain_get_active_external_root_encryption_key(DOMAIN).rek_id
    batches = requests.get(sandbox["admin_url"] + "/settings", timeout=5).json()["rotate_batches"]
    r = requests.patch(sandbox["admin_url"] + "/settings", json={"rotate_batches": 60}, timeout=5)
    assert r.status_code == 200
    try:
        default = next(
            k.rek_id for k in enc.domain_list_external_root_encryption_key(DOMAIN).keys if k.source == "antimatter"
        )
        enc.domain_set_active_external_root_encryption_key(DOMAIN, am.ActiveRootEncryptionKeyID(key_id=default))
        with pytest.raises(ApiException) as e:
            enc.domain_delete_external_root_encryption_key(DOMAIN, before)
        assert e.value.status == 409 and "rotate" in e.value.body
        calls = 0
        while enc.domain_rotate_root_encryption_keys(DOMAIN, {}).has_more:
            calls += 1
            assert calls < 100, "rotation never finished"
        assert calls + 1 == 60
        enc.domain_delete_external_root_encryption_key(DOMAIN, before)
        assert all(k.rek_id != before for k in enc.domain_list_external_root_encryption_key(DOMAIN).keys)
    finally:
        requests.patch(sandbox["admin_url"] + "/settings", json={"rotate_batches": batches}, timeout=5)


def test_counters_recorded(sandbox):
    rows = counters(sandbox)["counters"]
    ops = {(r["service"], r["operation"]) for r in rows}
    for expected in [
        ("entra", "token"),
        ("hsm", "key.create"),
        ("hsm", "key.wrap"),
        ("hsm", "rbac.assignment.put"),
        ("graph", "sp.upsert"),
        ("antimatter", "rek.test"),
    ]:
        assert expected in ops
