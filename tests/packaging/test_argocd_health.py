"""The Argo CD health check (deploy/argocd/health.lua) run by a real Lua interpreter on sample objects.

Interpreter: the `lupa` package (Lua 5.4 embedded; tests/packaging/requirements.txt). If it is not
importable the test installs it with pip, and failing that uses a `lua5.4`/`lua` binary (Debian:
`apt-get install lua5.4`), installing it with apt-get when running as root.
"""

from __future__ import annotations

import copy
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
def health():
    script = HEALTH_LUA.read_text()
    # ROOTKEY_TEST_LUA=binary forces the lua5.4 binary path (to check both paths agree).
    lupa = None if os.environ.get("ROOTKEY_TEST_LUA") == "binary" else _lupa()
    if lupa is not None:

        def run_lupa(obj: dict) -> dict:
            rt = lupa.LuaRuntime()
            rt.globals().obj = rt.table_from(obj, recursive=True)
            # Argo CD runs the script as a chunk with `obj` set and reads the returned table.
            result = rt.execute(script)
            return {k: result[k] for k in ("status", "message") if result[k] is not None}

        return run_lupa
    lua = _lua_binary()
    if lua is None:
        pytest.fail("no Lua interpreter: pip install lupa, or apt-get install lua5.4")

    def run_binary(obj: dict) -> dict:
        chunk = (
            f"obj = {_lua_literal(obj)}\n"
            f"local hs = (function()\n{script}\nend)()\n"
            "io.write(hs.status or '', '\\n', hs.message or '')\n"
        )
        proc = subprocess.run([lua, "-"], input=chunk, capture_output=True, text=True, check=True)
        status, _, message = proc.stdout.partition("\n")
        return {"status": status, "message": message}

    return run_binary


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


def test_argocd_cm_snippet_matches_health_lua():
    cm = yaml.safe_load(ARGOCD_CM.read_text())
    assert cm["metadata"]["name"] == "argocd-cm"
    assert cm["data"]["resource.customizations.health.antimatter.io_AzureRootKey"] == HEALTH_LUA.read_text()


def test_healthy_on_the_objects_of_a_real_cluster(health):
    # `make e2e-cluster` exports its Ready AzureRootKeys (kubectl get -o json) and sets this.
    exported = os.environ.get("ROOTKEY_E2E_OBJECTS")
    if not exported:
        pytest.skip("ROOTKEY_E2E_OBJECTS not set: `make e2e-cluster` runs this on its objects")
    objects = json.loads(Path(exported).read_text())["items"]
    assert objects
    for obj in objects:
        assert health(obj)["status"] == "Healthy", obj["metadata"]["name"]
