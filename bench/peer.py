#!/usr/bin/env python3
"""The peer: the product page's steps as a straight-line script, one key at a time, with the
official Azure SDK for Python (azure-identity, azure-keyvault-keys, azure-keyvault-administration),
requests for Microsoft Graph and the `antimatter-api` client — against the sandbox.

Per key: read the key (create an oct-HSM key if missing and allowed), tag the version
<domain>=allow keeping other tags, find-or-create Antimatter's service principal (Graph), look up the
"Managed HSM Crypto User" role definition, assign it at /keys/<name>, register the versioned key URL
with Antimatter, run the pairing check. Credentials and the Antimatter session are reused across keys
(the script's best case). Prints one JSON line: {"n", "seconds", "per_key_seconds", "failures"}.

usage: peer.py ENDPOINTS_JSON PLAN_JSON     (PLAN_JSON: [{"hsm","key","create"}...])
"""

import json
import os
import pathlib
import sys
import time
import uuid

from driver.world import ANTIMATTER_APP, API_KEY, DOMAIN, OPERATOR_APP, OPERATOR_SECRET, TENANT

ep = json.loads(pathlib.Path(sys.argv[1]).read_text())
plan = json.loads(pathlib.Path(sys.argv[2]).read_text())
os.environ["REQUESTS_CA_BUNDLE"] = ep["ca_pem_path"]
os.environ["SSL_CERT_FILE"] = ep["ca_pem_path"]

import antimatter_api as am  # noqa: E402
import requests  # noqa: E402
from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceNotFoundError  # noqa: E402
from azure.identity import ClientSecretCredential  # noqa: E402
from azure.keyvault.administration import KeyVaultAccessControlClient, KeyVaultRoleScope  # noqa: E402
from azure.keyvault.keys import KeyClient  # noqa: E402

cred = ClientSecretCredential(
    TENANT, OPERATOR_APP, OPERATOR_SECRET, authority=ep["authority_url"], disable_instance_discovery=True
)
session = requests.Session()
cfg = am.Configuration(host=ep["antimatter_url"])
cfg.ssl_ca_cert = ep["ca_pem_path"]
amc = am.ApiClient(cfg)

started = time.monotonic()
cfg.access_token = am.AuthenticationApi(amc).domain_authenticate(DOMAIN, am.DomainAuthenticate(token=API_KEY)).token
enc = am.EncryptionApi(amc)
failures = []
for item in plan:
    hsm_url = ep["hsms"][item["hsm"]]
    name = item["key"]
    try:
        kc = KeyClient(hsm_url, cred)
        try:
            key = kc.get_key(name)
        except ResourceNotFoundError:
            if item["create"] == "Never":
                raise
            key = kc.create_oct_key(name, size=256, hardware_protected=True)
        tags = dict(key.properties.tags or {})
        tags[DOMAIN] = "allow"
        kc.update_key_properties(name, version=key.properties.version, tags=tags)
        gtok = cred.get_token(ep["graph_url"] + "/.default").token
        h = {"Authorization": f"Bearer {gtok}"}
        r = session.get(f"{ep['graph_url']}/v1.0/servicePrincipals(appId='{ANTIMATTER_APP}')", headers=h, timeout=30)
        if r.status_code == 404:
            r = session.post(
                f"{ep['graph_url']}/v1.0/servicePrincipals", headers=h, json={"appId": ANTIMATTER_APP}, timeout=30
            )
        r.raise_for_status()
        sp_id = r.json()["id"]
        acc = KeyVaultAccessControlClient(hsm_url, cred)
        role = next(
            d for d in acc.list_role_definitions(KeyVaultRoleScope.GLOBAL) if d.role_name == "Managed HSM Crypto User"
        )
        try:
            acc.create_role_assignment(f"/keys/{name}", role.id, sp_id, name=str(uuid.uuid4()))
        except (ResourceExistsError, HttpResponseError) as e:
            if getattr(e, "status_code", None) != 409:
                raise
        info = am.KeyInfosKeyInformation(
            am.AntimatterDelegatedAzureKeyInfo(tenant_id=TENANT, key_url=key.id, provider_name="azure_am")
        )
        rek = enc.domain_add_external_root_encryption_key(
            DOMAIN, am.KeyInfos(description=f"peer {name}", key_information=info)
        ).rek_id
        res = enc.domain_external_root_encryption_key_test(DOMAIN, rek, {})
        if str(getattr(res, "status", "")).upper().find("HEALTHY") < 0:
            failures.append(f"{item['hsm']}/{name}: pairing {res.status}: {getattr(res, 'status_message', '')}")
    except Exception as e:  # a straight-line script stops at the first error; we note it and go on
        failures.append(f"{item['hsm']}/{name}: {type(e).__name__}: {str(e)[:200]}")
elapsed = time.monotonic() - started
print(
    json.dumps(
        {
            "n": len(plan),
            "seconds": elapsed,
            "per_key_seconds": elapsed / max(len(plan), 1),
            "failures": failures[:10],
            "failure_count": len(failures),
        }
    )
)
