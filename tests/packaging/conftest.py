"""Shared helpers for the packaging tests (Helm chart, kustomize manifests, Argo CD health check).

Tools are looked up in this order:
  helm:    $HELM, <repo>/bin/helm (from `make tools`), ~/.cache/rootkey-operator/tools/helm-*/helm, PATH
  kubectl: $KUBECTL, <repo>/bin/kubectl, ~/.cache/rootkey-operator/tools/k8s-*/kubectl, PATH
Server-side tests need a running API server: $KUBECONFIG (or $ROOTKEY_TEST_KUBECONFIG), as set by
`target/debug/controlplane --bin-dir bin run -- python -m pytest tests/packaging`. Without one they
are skipped.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "rootkey-operator"
CRD_SOURCE = REPO / "crds" / "antimatter.io_azurerootkeys.yaml"
ALL_ON = CHART / "ci" / "all-on-values.yaml"
RELEASE = "rootkey-operator"
RELEASE_NS = "rootkey-system"
CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "rootkey-operator"


def _find_tool(name: str, env: str, cache_glob: str) -> str | None:
    if os.environ.get(env):
        return os.environ[env]
    local = REPO / "bin" / name
    if local.exists():
        return str(local)
    cached = sorted(glob.glob(str(CACHE / "tools" / cache_glob / name)))
    if cached:
        return cached[-1]
    return shutil.which(name)


HELM = _find_tool("helm", "HELM", "helm-*")
KUBECTL = _find_tool("kubectl", "KUBECTL", "k8s-*")


def run(
    cmd: list[str], *, input: str | None = None, check: bool = True, env: dict | None = None
) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, input=input, capture_output=True, text=True, env=env, cwd=REPO, timeout=300)
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(cmd)} exited {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
        )
    return proc


@pytest.fixture(scope="session")
def helm() -> str:
    if not HELM:
        pytest.fail("helm not found: run `make tools` (builds bin/helm) or set $HELM")
    return HELM


@pytest.fixture(scope="session")
def kubectl() -> str:
    if not KUBECTL:
        pytest.fail("kubectl not found: run `make tools` (builds bin/kubectl) or set $KUBECTL")
    return KUBECTL


def docs(text: str) -> list[dict]:
    return [d for d in yaml.safe_load_all(text) if d]


def helm_template(helm_bin: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return run([helm_bin, "template", RELEASE, str(CHART), "--namespace", RELEASE_NS, *args], check=check)


@pytest.fixture(scope="session")
def render(helm):
    """render(*helm_args) -> list of manifests."""
    cache: dict[tuple, list[dict]] = {}

    def _render(*args: str) -> list[dict]:
        if args not in cache:
            cache[args] = docs(helm_template(helm, *args).stdout)
        return cache[args]

    return _render


def find(manifests: list[dict], kind: str, name: str | None = None) -> list[dict]:
    return [m for m in manifests if m["kind"] == kind and (name is None or m["metadata"]["name"] == name)]


@pytest.fixture(scope="session")
def cluster(kubectl):
    """A kubectl environment for the API server, with the CRDs and namespaces the manifests need."""
    kubeconfig = os.environ.get("KUBECONFIG") or os.environ.get("ROOTKEY_TEST_KUBECONFIG")
    if not kubeconfig:
        pytest.skip(
            "no API server: set KUBECONFIG, e.g. "
            "`target/debug/controlplane --bin-dir bin run -- python -m pytest tests/packaging`"
        )
    env = env_ = dict(os.environ, KUBECONFIG=kubeconfig)
    run([kubectl, "get", "--raw", "/readyz"], env=env)
    # The CRDs for real, so that objects of those kinds can be dry-run.
    stand_ins = [Path(__file__).with_name(f"{kind}-crd.yaml") for kind in ("servicemonitor", "prometheusrule")]
    for crd in (CRD_SOURCE, *stand_ins):
        run(
            [kubectl, "apply", "--server-side", "--force-conflicts", "--field-manager=packaging-tests", "-f", str(crd)],
            env=env,
        )
    run(
        [
            kubectl,
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            "crd/azurerootkeys.antimatter.io",
            "crd/servicemonitors.monitoring.coreos.com",
            "crd/prometheusrules.monitoring.coreos.com",
        ],
        env=env,
    )
    # Namespaces the chart and manifests deploy into, labelled so that Pod Security admission warns
    # about any pod template that is not "restricted".
    for ns in (RELEASE_NS, "team-a", "team-b"):
        ns_doc = {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {
                "name": ns,
                "labels": {
                    "pod-security.kubernetes.io/enforce": "restricted",
                    "pod-security.kubernetes.io/warn": "restricted",
                    "pod-security.kubernetes.io/audit": "restricted",
                },
            },
        }
        run(
            [kubectl, "apply", "--server-side", "--force-conflicts", "--field-manager=packaging-tests", "-f", "-"],
            input=yaml.safe_dump(ns_doc),
            env=env,
        )

    class Cluster:
        env = env_

        def kubectl(self, *args: str, input: str | None = None, check: bool = True):
            return run([kubectl, *args], input=input, env=env, check=check)

    return Cluster()
