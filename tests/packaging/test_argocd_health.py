"""The Argo CD health check (deploy/argocd/health.lua) run by a real Lua interpreter on sample objects.

Interpreter: the `lupa` package (Lua 5.4 embedded; tests/packaging/requirements.txt). If it is not
importable the test installs it with pip, and failing that uses a `lua5.4`/`lua` binary (Debian:
`apt-get install lua5.4`), installing it with apt-get when running as root.
"""

from __future__ import annotations

import copy
import datetime
import importlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import REPO

HEALTH_LUA = REPO / "deploy" / "argocd" / "health.lua"
RECHECK_LUA = REPO / "deploy" / "argocd" / "recheck-action.lua"
ARGOCD_CM = REPO / "deploy" / "argocd" / "argocd-cm.yaml"
TERMINAL = [
    "InvalidSpec",
    "PolicyDenied",
    "KeyClaimed",
    "KeyNotFound",
    "UnsupportedKeyType",
    "KeyDisabled",
    "KeyNotUsable",
    "MissingKeyOperations",
    "Forbidden",
    "InvalidCredentials",
    "PairingMisconfigured",
]


def _lupa():
    try:
        return importlib.import_module("lupa.lua54")
    except ImportError:
        pass
    try:
        return importlib.import_module("lupa")
    except ImportError:
        pass
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "lupa>=2.0"], capture_output=True, text=True
    )
    if proc.returncode == 0:
        importlib.invalidate_caches()
        try:
            return importlib.import_module("lupa.lua54")
        except ImportError:
            return importlib.import_module("lupa")
    return None


def _lua_binary():
    for name in ("lua5.4", "lua"):
        if shutil.which(name):
            return shutil.which(name)
    if hasattr(os, "geteuid") and os.geteuid() == 0 and shutil.which("apt-get"):
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        subprocess.run(["apt-get", "update", "-qq"], capture_output=True, env=env)
        subprocess.run(["apt-get", "install", "-y", "-qq", "lua5.4"], capture_output=True, env=env)
        return shutil.which("lua5.4")
    return None


def _lua_literal(v) -> str:
    if v is None:
        return "nil"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)  # a JSON string literal is a valid Lua string literal for these samples
    if isinstance(v, list):
        return "{" + ", ".join(_lua_literal(x) for x in v) + "}"
    if isinstance(v, dict):
        return "{" + ", ".join(f"[{json.dumps(k)}] = {_lua_literal(x)}" for k, x in v.items()) + "}"
    raise TypeError(v)


@pytest.fixture(scope="module")
def lua():
    """lua(script, obj, exprs) -> the values of Lua expressions `exprs` over the script's result
    `hs`, as strings ("" for nil), the script run as Argo CD runs it: a chunk with `obj` set."""
    # ROOTKEY_TEST_LUA=binary forces the lua5.4 binary path (to check both paths agree).
    lupa = None if os.environ.get("ROOTKEY_TEST_LUA") == "binary" else _lupa()
    if lupa is not None:

        def run_lupa(script: str, obj: dict, exprs: list[str]) -> list[str]:
            rt = lupa.LuaRuntime()
            rt.globals().obj = rt.table_from(obj, recursive=True)
            result = rt.execute(script)
            values = [rt.eval(f"function(hs) return {e} end")(result) for e in exprs]
            return ["" if v is None else str(v) for v in values]

        return run_lupa
    binary = _lua_binary()
    if binary is None:
        pytest.fail("no Lua interpreter: pip install lupa, or apt-get install lua5.4")

    def run_binary(script: str, obj: dict, exprs: list[str]) -> list[str]:
        writes = ", '\\0', ".join(f"tostring(({e}) or '')" for e in exprs)
        chunk = f"obj = {_lua_literal(obj)}\nlocal hs = (function()\n{script}\nend)()\nio.write({writes})\n"
        proc = subprocess.run([binary, "-"], input=chunk, capture_output=True, text=True, check=True)
        return proc.stdout.split("\0")

    return run_binary


@pytest.fixture(scope="module")
def health(lua):
    script = HEALTH_LUA.read_text()

    def run(obj: dict) -> dict:
        status, message = lua(script, obj, ["hs.status", "hs.message"])
        return {k: v for k, v in (("status", status), ("message", message)) if v}

    return run


BASE = {
    "apiVersion": "antimatter.io/v1alpha1",
    "kind": "AzureRootKey",
    "metadata": {"name": "contoso-root", "namespace": "team-a", "generation": 3},
    "spec": {"domainId": "dm-AbCdEfGhJkL", "hsm": {"name": "contoso-hsm"}, "key": {"name": "antimatter-root"}},
}


def sample(*, status=None, suspend=None, generation=3):
    obj = copy.deepcopy(BASE)
    obj["metadata"]["generation"] = generation
    if suspend is not None:
        obj["spec"]["suspend"] = suspend
    if status is not None:
        obj["status"] = status
    return obj


def ready(status, reason, message, observed=3):
    return {
        "observedGeneration": observed,
        "keyUrl": "https://contoso-hsm.managedhsm.azure.net/keys/antimatter-root/0123",
        "conditions": [
            {"type": "KeyReady", "status": "True", "reason": "KeyFound", "message": "ok"},
            {
                "type": "Ready",
                "status": status,
                "reason": reason,
                "message": message,
                "lastTransitionTime": "2025-01-01T00:00:00Z",
                "observedGeneration": observed,
            },
        ],
    }


def test_healthy(health):
    hs = health(sample(status=ready("True", "Ready", "Key delegated; pairing Healthy")))
    assert hs == {"status": "Healthy", "message": "Key delegated; pairing Healthy"}


def test_progressing_without_status(health):
    assert health(sample())["status"] == "Progressing"


def test_progressing_on_old_generation(health):
    hs = health(sample(status=ready("True", "Ready", "ok", observed=2), generation=3))
    assert hs["status"] == "Progressing"
    assert "generation 3" in hs["message"]


def test_progressing_when_ready_is_unknown_or_absent(health):
    assert health(sample(status=ready("Unknown", "Reconciling", "Creating the key")))["status"] == "Progressing"
    no_ready = {"observedGeneration": 3, "conditions": [{"type": "KeyReady", "status": "True"}]}
    assert health(sample(status=no_ready))["status"] == "Progressing"


def test_progressing_on_transient_failure(health):
    hs = health(sample(status=ready("False", "AzureUnavailable", "Managed HSM returned 503; retrying")))
    assert hs == {"status": "Progressing", "message": "AzureUnavailable: Managed HSM returned 503; retrying"}


def test_degraded_on_terminal_failure(health):
    hs = health(sample(status=ready("False", "KeyNotFound", "key antimatter-root not found and key.create is Never")))
    assert hs == {"status": "Degraded", "message": "KeyNotFound: key antimatter-root not found and key.create is Never"}


@pytest.mark.parametrize("reason", TERMINAL)
def test_every_terminal_reason_is_degraded(health, reason):
    assert health(sample(status=ready("False", reason, "x")))["status"] == "Degraded"


def test_suspended(health):
    hs = health(sample(suspend=True, status=ready("False", "KeyNotFound", "x")))
    assert hs["status"] == "Suspended"
    assert health(sample(suspend=False, status=ready("True", "Ready", "ok")))["status"] == "Healthy"


def deleting(status, reason, message):
    blocked = ready("True", "Ready", "ok")
    blocked["conditions"].append({"type": "Deleting", "status": status, "reason": reason, "message": message})
    obj = sample(status=blocked)
    obj["metadata"]["deletionTimestamp"] = "2026-12-01T10:00:00Z"
    return obj


def test_progressing_while_being_deleted(health):
    obj = sample(status=ready("True", "Ready", "ok"))
    obj["metadata"]["deletionTimestamp"] = "2026-12-01T10:00:00Z"
    assert health(obj)["status"] == "Progressing", "not Healthy once deletion started"
    waiting = "Antimatter is still re-wrapping data keys"
    hs = health(deleting("Unknown", "RotationIncomplete", waiting))
    assert hs == {"status": "Progressing", "message": f"Deleting: RotationIncomplete: {waiting}"}


@pytest.mark.parametrize("reason", ["KeyIsActive", "KeyStillRegistered"])
def test_degraded_when_revoke_is_refused(health, reason):
    refused = "Set spec.deletionPolicy: Retain to release the object without revoking."
    hs = health(deleting("False", reason, refused))
    assert hs == {"status": "Degraded", "message": f"Deletion blocked: {reason}: {refused}"}


def test_a_suspended_object_being_deleted_is_not_suspended(health):
    obj = deleting("False", "KeyIsActive", "refused")
    obj["spec"]["suspend"] = True
    assert health(obj)["status"] == "Degraded"


def test_recheck_action_sets_the_annotation_to_now(lua):
    before = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
    obj = sample(status=ready("True", "Ready", "ok"))
    (set_to,) = lua(RECHECK_LUA.read_text(), obj, ['hs.metadata.annotations["antimatter.io/recheck"]'])
    at = datetime.datetime.strptime(set_to, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.UTC)
    assert before <= at <= datetime.datetime.now(datetime.UTC), set_to
    obj["metadata"]["annotations"] = {"team": "a", "antimatter.io/recheck": "2020-01-01T00:00:00Z"}
    annotation = 'hs.metadata.annotations["antimatter.io/recheck"]'
    kept, changed = lua(RECHECK_LUA.read_text(), obj, ['hs.metadata.annotations["team"]', annotation])
    assert kept == "a" and changed != "2020-01-01T00:00:00Z", "other annotations kept; a second recheck changes it"


def test_argocd_cm_snippets_match_the_scripts():
    cm = yaml.safe_load(ARGOCD_CM.read_text())
    assert cm["metadata"]["name"] == "argocd-cm"
    assert cm["data"]["resource.customizations.health.antimatter.io_AzureRootKey"] == HEALTH_LUA.read_text()
    actions = yaml.safe_load(cm["data"]["resource.customizations.actions.antimatter.io_AzureRootKey"])
    assert 'actions["recheck"]' in actions["discovery.lua"]
    (recheck,) = actions["definitions"]
    assert recheck["name"] == "recheck"
    assert recheck["action.lua"] == RECHECK_LUA.read_text()


def test_healthy_on_the_objects_of_a_real_cluster(health):
    # `make e2e-cluster` exports its Ready AzureRootKeys (kubectl get -o json) and sets this.
    exported = os.environ.get("ROOTKEY_E2E_OBJECTS")
    if not exported:
        pytest.skip("ROOTKEY_E2E_OBJECTS not set: `make e2e-cluster` runs this on its objects")
    objects = json.loads(Path(exported).read_text())["items"]
    assert objects
    for obj in objects:
        assert health(obj)["status"] == "Healthy", obj["metadata"]["name"]
