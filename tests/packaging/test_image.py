"""The image `make image` builds (crane, no Docker) and the Dockerfile describe the same image.

Reads the image `make image` left in $ROOTKEY_IMAGE_DIR (default: the static binary's directory's
image/); skipped when none was built. `make e2e-cluster` runs these against the image it installs.
"""

from __future__ import annotations

import json
import os
import re
import tarfile
from pathlib import Path

import pytest

from conftest import REPO

DOCKERFILE_FINAL = (REPO / "Dockerfile").read_text().rsplit("\nFROM ", 1)[1]
TARGET_DIR = Path(os.environ.get("CARGO_TARGET_DIR") or REPO / "target")
IMAGE_DIR = Path(os.environ.get("ROOTKEY_IMAGE_DIR") or TARGET_DIR / "x86_64-unknown-linux-gnu" / "release" / "image")


@pytest.fixture(scope="module")
def config() -> dict:
    path = IMAGE_DIR / "config.json"
    if not path.exists():
        pytest.skip(f"no image in {IMAGE_DIR}: run `make image`")
    return json.loads(path.read_text())["config"]


@pytest.fixture(scope="module")
def files() -> dict[str, tarfile.TarInfo]:
    path = IMAGE_DIR / "rootkey-operator.tar"
    if not path.exists():
        pytest.skip(f"no image in {IMAGE_DIR}: run `make image`")
    with tarfile.open(path) as image:
        manifest = json.load(image.extractfile("manifest.json"))
        entries = {}
        for layer in manifest[0]["Layers"]:
            with tarfile.open(fileobj=image.extractfile(layer)) as tar:
                entries.update({m.name.removeprefix("./"): m for m in tar.getmembers()})
    return entries


def test_user_matches_the_dockerfile(config):
    user = re.search(r"^USER (\S+)$", DOCKERFILE_FINAL, re.M).group(1)
    assert config["User"] == user == "65532:65532"


def test_entrypoint_matches_the_dockerfile(config):
    entrypoint = json.loads(re.search(r"^ENTRYPOINT (.+)$", DOCKERFILE_FINAL, re.M).group(1))
    assert config["Entrypoint"] == entrypoint
    assert not config.get("Cmd")


def test_ports_match_the_dockerfile(config):
    exposed = re.search(r"^EXPOSE (.+)$", DOCKERFILE_FINAL, re.M).group(1).split()
    assert sorted(config["ExposedPorts"]) == sorted(f"{p}/tcp" for p in exposed)


def test_labels_match_the_dockerfile(config):
    dockerfile_labels = set(re.findall(r"(org\.opencontainers\.image\.[a-z]+)=", DOCKERFILE_FINAL))
    # The Dockerfile's url label repeats its source label; everything else must be on both.
    assert dockerfile_labels - {"org.opencontainers.image.url"} <= set(config["Labels"])
    assert config["Labels"]["org.opencontainers.image.licenses"] == "Apache-2.0"


def test_no_shell_and_root_owned_binary(files):
    assert not any(name in files for name in ("bin/sh", "bin/bash", "bin/busybox")), sorted(files)
    binary = files["rootkey-operator"]
    assert (binary.uid, binary.gid, binary.mode & 0o777) == (0, 0, 0o755)


def test_carries_what_distroless_static_gives_the_operator(files):
    # System CA roots (Azure, Graph, Antimatter), the nonroot user, hosts from files first.
    for path in ("etc/ssl/certs/ca-certificates.crt", "etc/passwd", "etc/group", "etc/nsswitch.conf"):
        assert path in files, path
