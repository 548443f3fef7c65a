"""Start the sandbox binary once per session on random ports and expose its endpoints."""

import json
import os
import pathlib
import signal
import subprocess
import tempfile
import time

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
WORLD = ROOT / "deploy" / "sandbox" / "world.yaml"

CONTOSO = "7b0e4c2a-5d1f-4e8a-9c3b-2f6a1d8e4c10"
OPERATOR_APP = "3f2b8c1d-9e4a-4b7c-a6d5-1e8f2c3b4a50"
OPERATOR_SECRET = "fake-operator-secret-not-real"
OPERATOR_SP = "5c1a7e3b-2d4f-4a6b-9e8c-7f1d3b5a2c60"
NOROLES_APP = "6e5d4c3b-2a1f-4e9d-8c7b-5a4f3e2d1c80"
NOROLES_SECRET = "fake-noroles-secret-not-real"
ANTIMATTER_APP = "8d4e2f1a-7c3b-4e5d-b9a8-6f2e1d4c3b70"
DOMAIN = "dm-7fQ2xPz9KdL"
API_KEY = "fake-antimatter-api-key-not-real"
HSM = "contoso-hsm"


def _binary():
    env = os.environ.get("ROOTKEY_SANDBOX_BIN")
    if env:
        return env
    target = pathlib.Path(os.environ.get("CARGO_TARGET_DIR") or ROOT / "target")
    return str(target / "debug" / "rootkey-sandbox")


@pytest.fixture(scope="session")
def sandbox():
    state = tempfile.mkdtemp(prefix="rootkey-sandbox-conf-")
    proc = subprocess.Popen(
        [_binary(), "--world", str(WORLD), "--port", "0", "--admin-port", "0", "--state-dir", state],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    ep_file = pathlib.Path(state) / "endpoints.json"
    deadline = time.time() + 10
    while not ep_file.exists():
        if proc.poll() is not None or time.time() > deadline:
            out = proc.stdout.read().decode() if proc.stdout else ""
            pytest.fail(f"sandbox did not start: {out}")
        time.sleep(0.05)
    time.sleep(0.05)
    ep = json.loads(ep_file.read_text())
    # Point every HTTP stack at the sandbox CA.
    os.environ["REQUESTS_CA_BUNDLE"] = ep["ca_pem_path"]
    os.environ["SSL_CERT_FILE"] = ep["ca_pem_path"]
    yield ep
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
    assert proc.returncode == 0, "sandbox did not stop cleanly on SIGTERM"
