"""Plain manifests: deploy/base and the overlays build with `kubectl kustomize` and are accepted by
the API server (`kubectl apply -k --dry-run=server`)."""

from __future__ import annotations

import pytest
import yaml

from conftest import CRD_SOURCE, REPO, docs, find, run
from test_chart import LEASE_RULES, NAMESPACE_RULES, WATCH_RULES, flatten

LAYOUTS = ["deploy/base", "deploy/overlays/workload-identity", "deploy/overlays/client-secret"]


@pytest.fixture(scope="module")
def built(kubectl):
    return {path: docs(run([kubectl, "kustomize", str(REPO / path)]).stdout) for path in LAYOUTS}


@pytest.mark.parametrize("path", LAYOUTS)
def test_builds(built, path):
    manifests = built[path]
    kinds = sorted(m["kind"] for m in manifests)
    assert kinds == sorted(
        [
            "Namespace",
            "CustomResourceDefinition",
            "ServiceAccount",
            "ClusterRole",
            "ClusterRoleBinding",
            "Role",
            "RoleBinding",
            "Deployment",
            "Service",
        ]
    )
    for m in manifests:
        if m["kind"] not in ("Namespace", "CustomResourceDefinition", "ClusterRole", "ClusterRoleBinding"):
            assert m["metadata"]["namespace"] == "rootkey-system", m["metadata"]
    (crd,) = find(manifests, "CustomResourceDefinition")
    assert crd["spec"] == yaml.safe_load(CRD_SOURCE.read_text())["spec"]
    (cr,) = find(manifests, "ClusterRole")
    assert flatten(cr["rules"]) == WATCH_RULES | NAMESPACE_RULES
    (role,) = find(manifests, "Role")
    assert flatten(role["rules"]) == LEASE_RULES
    (dep,) = find(manifests, "Deployment")
    c = dep["spec"]["template"]["spec"]["containers"][0]
    assert c["image"] == "ghcr.io/antimatterhq/rootkey-operator:0.1.0"
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    env = {e["name"]: e.get("value") for e in c["env"]}
    expected_identity = {
        "deploy/base": "auto",
        "deploy/overlays/workload-identity": "workload",
        "deploy/overlays/client-secret": "secret",
    }[path]
    assert env["AZURE_IDENTITY"] == expected_identity
    labels = dep["spec"]["template"]["metadata"]["labels"]
    (sa,) = find(manifests, "ServiceAccount")
    if expected_identity == "workload":
        assert labels["azure.workload.identity/use"] == "true"
        assert sa["metadata"]["annotations"]["azure.workload.identity/client-id"]
    else:
        assert "azure.workload.identity/use" not in labels
    if expected_identity == "secret":
        assert c["envFrom"] == [{"secretRef": {"name": "rootkey-operator-azure"}}]


def test_base_matches_the_chart_pod_security(built, render):
    """The plain Deployment and the chart's share the same pod and container security contexts."""
    (plain,) = find(built["deploy/base"], "Deployment")
    (chart,) = find(render(), "Deployment")
    for key in ("securityContext",):
        assert plain["spec"]["template"]["spec"][key] == chart["spec"]["template"]["spec"][key]
        assert (
            plain["spec"]["template"]["spec"]["containers"][0][key]
            == chart["spec"]["template"]["spec"]["containers"][0][key]
        )


@pytest.mark.parametrize("path", LAYOUTS)
def test_server_side_dry_run(cluster, path):
    proc = cluster.kubectl("apply", "-k", str(REPO / path), "--dry-run=server")
    assert "would violate PodSecurity" not in proc.stderr, proc.stderr
    assert "deployment.apps/rootkey-operator" in proc.stdout, proc.stdout
