"""The Helm chart: lint, schema, rendered security posture and RBAC, and a server-side dry run."""

from __future__ import annotations

import json
import re
import tarfile

import pytest
import yaml

from conftest import ALL_ON, CHART, CRD_SOURCE, RELEASE_NS, docs, find, helm_template, run

VALUE_SETS = {
    "default": (),
    "all-on": ("-f", str(ALL_ON)),
    "secret-identity": ("--set", "azure.identity=secret", "--set", "azure.existingSecret=azure-creds"),
    "managed-identity": (
        "--set",
        "azure.identity=managed",
        "--set",
        "azure.clientId=3f2504e0-4f89-41d3-9a0c-0305e82c3301",
    ),
}

# What the operator needs, and nothing more: (apiGroup, resource, verb, resourceNames). Secrets are
# only read: no list, no watch, in any mode.
WATCH_RULES = {
    ("antimatter.io", "azurerootkeys", "get", ()),
    ("antimatter.io", "azurerootkeys", "list", ()),
    ("antimatter.io", "azurerootkeys", "watch", ()),
    ("antimatter.io", "azurerootkeys", "patch", ()),
    ("antimatter.io", "azurerootkeys/status", "patch", ()),
    ("antimatter.io", "azurerootkeys/finalizers", "update", ()),
    ("", "secrets", "get", ()),
    ("events.k8s.io", "events", "create", ()),
}
CLUSTER_UID_RULES = {("", "namespaces", "get", ("kube-system",))}
# Whether an object's namespace is being deleted (a Revoke object is then released without revoking).
NAMESPACE_RULES = {("", "namespaces", "get", ())}
LEASE_RULES = {
    ("coordination.k8s.io", "leases", "create", ()),
    ("coordination.k8s.io", "leases", "get", ("rootkey-operator",)),
    ("coordination.k8s.io", "leases", "update", ("rootkey-operator",)),
}


def flatten(rules: list[dict]) -> set[tuple]:
    out = set()
    for r in rules:
        assert not r.get("nonResourceURLs"), r
        for g in r.get("apiGroups", []):
            for res in r.get("resources", []):
                for v in r.get("verbs", []):
                    out.add((g, res, v, tuple(r.get("resourceNames", []))))
    return out


def test_lint(helm):
    for name, args in VALUE_SETS.items():
        proc = run([helm, "lint", "--strict", str(CHART), "--namespace", RELEASE_NS, *args])
        assert "0 chart(s) failed" in proc.stdout, (name, proc.stdout)


def test_chart_metadata():
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["apiVersion"] == "v2"
    assert chart["version"] == "0.1.0"
    cargo = (CHART.parents[1] / "Cargo.toml").read_text()
    crate_version = re.search(r'^version\s*=\s*"([^"]+)"', cargo, re.M).group(1)
    assert chart["appVersion"] == crate_version


def test_every_value_is_commented():
    """Each value in values.yaml has a comment line right above it. Parent blocks are exempt (their
    leaves carry the comments), and so are the keys inside free-form maps such as `resources`."""
    schema = json.loads((CHART / "values.schema.json").read_text())
    lines = (CHART / "values.yaml").read_text().splitlines()
    stack: list[tuple[int, str]] = []  # (indent, key)
    for i, line in enumerate(lines):
        m = re.match(r"^(\s*)([A-Za-z][\w./-]*):", line)
        if not m:
            continue
        indent = len(m.group(1))
        while stack and stack[-1][0] >= indent:
            stack.pop()
        parent = schema
        for _, key in stack:
            parent = parent.get("properties", {}).get(key, {})
        stack.append((indent, m.group(2)))
        if "properties" not in parent:
            continue  # inside a free-form map (resources, nodeSelector, …)
        assert m.group(2) in parent["properties"], f"values.yaml:{i + 1}: {m.group(2)} is not in the schema"
        if not line.split(":", 1)[1].strip():
            continue  # a parent block
        prev = lines[i - 1].strip() if i else ""
        assert prev.startswith("#"), f"values.yaml:{i + 1}: {line.strip()!r} has no comment"


def test_schema_top_level_is_closed():
    schema = json.loads((CHART / "values.schema.json").read_text())
    assert schema["additionalProperties"] is False
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert set(values) <= set(schema["properties"]), set(values) - set(schema["properties"])


@pytest.mark.parametrize(
    "args, message",
    [
        (("--set", "replicaCount=two"), "replicaCount"),
        (("--set-string", "concurrency=16"), "concurrency"),
        (("--set", "crds.install=maybe"), "install"),
        (("--set", "bogusKey=1"), "bogusKey"),
        (("--set", "azure.identity=kerberos"), "identity"),
        (("--set", "logFormat=xml"), "logFormat"),
        (("--set", "image.digest=latest"), "digest"),
        (("--set", "dnsPolicy=HostFirst"), "dnsPolicy"),
        (("--set", "hostAliases[0].ip=127.0.0.1"), "hostnames"),
    ],
)
def test_schema_rejects(helm, args, message):
    proc = helm_template(helm, *args, check=False)
    assert proc.returncode != 0, proc.stdout[:500]
    assert message in proc.stderr, proc.stderr


def test_template_fails_on_missing_identity_values(helm):
    proc = helm_template(helm, "--set", "azure.identity=secret", check=False)
    assert proc.returncode != 0 and "azure.existingSecret" in proc.stderr


def _deployment(manifests):
    (dep,) = find(manifests, "Deployment")
    return dep


def _env(container) -> dict:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


@pytest.mark.parametrize("values", list(VALUE_SETS))
def test_pod_security_restricted(render, values):
    dep = _deployment(render(*VALUE_SETS[values]))
    pod = dep["spec"]["template"]["spec"]
    psc = pod["securityContext"]
    assert psc["runAsNonRoot"] is True
    assert psc["runAsUser"] == 65532
    assert psc["seccompProfile"]["type"] == "RuntimeDefault"
    assert not pod.get("hostNetwork") and not pod.get("hostPID") and not pod.get("hostIPC")
    for c in pod["containers"] + pod.get("initContainers", []):
        sc = c["securityContext"]
        assert sc["runAsNonRoot"] is True
        assert sc["runAsUser"] == 65532
        assert sc["readOnlyRootFilesystem"] is True
        assert sc["allowPrivilegeEscalation"] is False
        assert sc.get("privileged", False) is False
        assert sc["capabilities"]["drop"] == ["ALL"]
        assert not sc["capabilities"].get("add")
        assert sc["seccompProfile"]["type"] == "RuntimeDefault"
        assert c["resources"]["requests"] and c["resources"]["limits"]
        assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "probes"}
        assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "probes"}
        ports = {p["name"]: p["containerPort"] for p in c["ports"]}
        assert ports == {"metrics": 8080, "probes": 8081}
        env = _env(c)
        assert env["POD_NAME"] == {"fieldRef": {"fieldPath": "metadata.name"}}
        assert env["POD_NAMESPACE"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
        assert env["METRICS_ADDR"] == "0.0.0.0:8080"
        assert env["PROBE_ADDR"] == "0.0.0.0:8081"
        assert c["command"] == ["/rootkey-operator", "run"]
    for v in pod.get("volumes", []):
        assert set(v) & {"configMap", "secret", "projected", "emptyDir", "downwardAPI"}, v


def test_defaults(render):
    manifests = render()
    dep = _deployment(manifests)
    pod = dep["spec"]["template"]
    c = pod["spec"]["containers"][0]
    env = _env(c)
    assert dep["spec"]["replicas"] == 1
    assert c["image"] == "ghcr.io/antimatterhq/rootkey-operator:0.1.0"
    assert env["LEADER_ELECT"] == "true", "a rolling update briefly runs two pods"
    assert env["WATCH_NAMESPACES"] == ""
    assert env["CONCURRENCY"] == "64"
    assert env["AZURE_IDENTITY"] == "workload"
    assert env["AZURE_CLOUD"] == "AzurePublic"
    assert env["LOG_FORMAT"] == "json"
    assert "ROOTKEY_TENANCY_POLICY" not in env and "ROOTKEY_CA_BUNDLE" not in env
    assert pod["metadata"]["labels"]["azure.workload.identity/use"] == "true"
    (sa,) = find(manifests, "ServiceAccount")
    assert "annotations" not in sa["metadata"], "no client ID by default: NOTES.txt warns instead"
    (sa,) = find(render("--set", "azure.clientId=3f2504e0-4f89-41d3-9a0c-0305e82c3301"), "ServiceAccount")
    assert sa["metadata"]["annotations"]["azure.workload.identity/client-id"] == "3f2504e0-4f89-41d3-9a0c-0305e82c3301"
    assert not find(manifests, "PodDisruptionBudget")
    assert not find(manifests, "ServiceMonitor")
    assert not find(manifests, "NetworkPolicy")
    (role,) = find(manifests, "Role")  # the Lease only: no per-namespace roles
    assert flatten(role["rules"]) == LEASE_RULES
    (svc,) = find(manifests, "Service")
    assert svc["spec"]["ports"] == [{"name": "metrics", "port": 8080, "targetPort": "metrics", "protocol": "TCP"}]


def test_all_on(render):
    manifests = render("-f", str(ALL_ON))
    dep = _deployment(manifests)
    pod = dep["spec"]["template"]
    spec = pod["spec"]
    c = spec["containers"][0]
    env = _env(c)
    assert dep["spec"]["replicas"] == 2
    assert c["image"].startswith("ghcr.io/antimatterhq/rootkey-operator@sha256:"), "digest wins over tag"
    assert env["LEADER_ELECT"] == "true"
    assert env["WATCH_NAMESPACES"] == "team-a,team-b"
    assert env["ROOTKEY_TENANCY_POLICY"] == "/etc/rootkey-operator/tenancy/policy.yaml"
    assert env["ROOTKEY_CA_BUNDLE"] == "/etc/rootkey-operator/ca/ca.crt"
    assert env["AZURE_HSM_DNS_SUFFIXES"] == "managedhsm.azure.net"
    assert spec["topologySpreadConstraints"][0]["topologyKey"] == "kubernetes.io/hostname"
    assert spec["priorityClassName"] == "system-cluster-critical"
    assert spec["imagePullSecrets"] == [{"name": "regcred"}]
    assert pod["metadata"]["annotations"]["example.com/team"] == "platform"
    assert pod["metadata"]["labels"]["example.com/tier"] == "security"
    mounts = {m["name"]: m for m in c["volumeMounts"]}
    assert mounts["tenancy-policy"]["readOnly"] and mounts["ca-bundle"]["readOnly"]
    (policy_cm,) = find(manifests, "ConfigMap", "rootkey-operator-tenancy-policy")
    policy = yaml.safe_load(policy_cm["data"]["policy.yaml"])
    assert policy["rules"][0] == {
        "namespaces": ["team-a"],
        "hsms": ["contoso-*"],
        "keys": ["team-a-*"],
        "manualRoute": False,
    }
    assert env["ANTIMATTER_API_URLS"] == "https://api.antimatter.io/v2,https://api.eu.antimatter.io/v2"
    assert env["ANTIMATTER_APPLICATION_ID"] == "8d4e2f1a-7c3b-4e5d-b9a8-6f2e1d4c3b70"
    (ca_cm,) = find(manifests, "ConfigMap", "rootkey-operator-ca-bundle")
    assert ca_cm["data"]["ca.crt"].startswith("-----BEGIN CERTIFICATE-----")
    (pdb,) = find(manifests, "PodDisruptionBudget")
    assert pdb["spec"]["minAvailable"] == 1
    (sm,) = find(manifests, "ServiceMonitor")
    assert sm["spec"]["endpoints"][0]["port"] == "metrics" and sm["spec"]["endpoints"][0]["path"] == "/metrics"
    assert sm["metadata"]["labels"]["release"] == "prometheus"
    (np,) = find(manifests, "NetworkPolicy")
    egress_ports = [(p.get("protocol"), p["port"]) for rule in np["spec"]["egress"] for p in rule["ports"]]
    assert egress_ports == [("UDP", 53), ("TCP", 53), ("TCP", 443), ("TCP", 443)]
    assert np["spec"]["egress"][1]["to"] == [{"ipBlock": {"cidr": "10.0.0.1/32"}}]


def test_secret_identity(render):
    c = _deployment(render(*VALUE_SETS["secret-identity"]))["spec"]["template"]["spec"]["containers"][0]
    assert c["envFrom"] == [{"secretRef": {"name": "azure-creds"}}]
    assert _env(c)["AZURE_IDENTITY"] == "secret"
    created = render(
        "--set", "azure.identity=secret", "--set", "azure.clientId=abc", "--set", "azure.clientSecret=s3cr3t"
    )
    (secret,) = find(created, "Secret")
    assert secret["stringData"] == {"AZURE_CLIENT_ID": "abc", "AZURE_CLIENT_SECRET": "s3cr3t"}
    dep = _deployment(created)
    assert dep["spec"]["template"]["spec"]["containers"][0]["envFrom"] == [
        {"secretRef": {"name": secret["metadata"]["name"]}}
    ]
    assert "azure.workload.identity/use" not in dep["spec"]["template"]["metadata"]["labels"]


def test_host_network_and_aliases(render):
    dep = _deployment(
        render(
            "--set", "hostNetwork=true",
            "--set", "dnsPolicy=ClusterFirstWithHostNet",
            "--set", "hostAliases[0].ip=127.0.0.1",
            "--set", "hostAliases[0].hostnames={login.sandbox.localhost,api.sandbox.localhost}",
        )
    )  # fmt: skip
    spec = dep["spec"]["template"]["spec"]
    assert spec["hostNetwork"] is True
    # The new pod cannot start beside the old one on the same host ports.
    assert dep["spec"]["strategy"] == {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1}}
    assert spec["dnsPolicy"] == "ClusterFirstWithHostNet"
    hostnames = ["login.sandbox.localhost", "api.sandbox.localhost"]
    assert spec["hostAliases"] == [{"ip": "127.0.0.1", "hostnames": hostnames}]
    default = _deployment(render())
    assert not {"hostNetwork", "dnsPolicy", "hostAliases"} & set(default["spec"]["template"]["spec"])
    assert "strategy" not in default["spec"]


def test_listen_on_pod_ip(render):
    (c,) = _deployment(render("--set", "hostNetwork=true", "--set", "listenOnPodIP=true"))["spec"]["template"]["spec"][
        "containers"
    ]
    (listen,) = [e for e in c["env"] if e["name"] == "LISTEN_IP"]
    assert listen == {"name": "LISTEN_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}
    (default,) = _deployment(render())["spec"]["template"]["spec"]["containers"]
    assert "LISTEN_IP" not in _env(default)


def test_workload_identity_token_mounted_by_the_chart(render):
    spec = _deployment(render("--set", "azure.clientId=abc", "--set", "azure.workloadIdentityToken.mount=true"))[
        "spec"
    ]["template"]["spec"]
    c = spec["containers"][0]
    assert _env(c)["AZURE_FEDERATED_TOKEN_FILE"] == "/var/run/secrets/azure/tokens/azure-identity-token"
    (mount,) = [m for m in c["volumeMounts"] if m["name"] == "azure-identity-token"]
    assert mount == {"name": "azure-identity-token", "mountPath": "/var/run/secrets/azure/tokens", "readOnly": True}
    (volume,) = [v for v in spec["volumes"] if v["name"] == "azure-identity-token"]
    assert volume["projected"]["sources"] == [
        {
            "serviceAccountToken": {
                "path": "azure-identity-token",
                "audience": "api://AzureADTokenExchange",
                "expirationSeconds": 3600,
            }
        }
    ]
    # Left to the webhook by default, and never mounted for the other identities.
    for args in ((), ("--set", "azure.workloadIdentityToken.mount=true", *VALUE_SETS["managed-identity"])):
        c = _deployment(render(*args))["spec"]["template"]["spec"]["containers"][0]
        assert "AZURE_FEDERATED_TOKEN_FILE" not in _env(c)


def test_managed_identity(render):
    manifests = render(*VALUE_SETS["managed-identity"])
    env = _env(_deployment(manifests)["spec"]["template"]["spec"]["containers"][0])
    assert env["AZURE_IDENTITY"] == "managed"
    assert env["AZURE_CLIENT_ID"] == "3f2504e0-4f89-41d3-9a0c-0305e82c3301"
    (sa,) = find(manifests, "ServiceAccount")
    assert "azure.workload.identity/client-id" not in (sa["metadata"].get("annotations") or {})


def test_leader_election_can_be_turned_off_only_with_one_replica(render):
    manifests = render("--set", "leaderElection.enabled=false")
    assert _env(_deployment(manifests)["spec"]["template"]["spec"]["containers"][0])["LEADER_ELECT"] == "false"
    assert not find(manifests, "Role")
    assert not find(manifests, "PodDisruptionBudget")
    two = render("--set", "leaderElection.enabled=false", "--set", "replicaCount=2")
    assert _env(_deployment(two)["spec"]["template"]["spec"]["containers"][0])["LEADER_ELECT"] == "true"


def _no_wildcards(manifests):
    for m in manifests:
        if m["kind"] in ("Role", "ClusterRole"):
            for r in m["rules"]:
                for field in ("apiGroups", "resources", "verbs", "resourceNames"):
                    assert "*" not in r.get(field, []), (m["metadata"]["name"], r)
                if "secrets" in r.get("resources", []):
                    assert set(r["verbs"]) == {"get"}, r


def test_rbac_cluster_wide(render):
    manifests = render()
    _no_wildcards(manifests)
    (cr,) = find(manifests, "ClusterRole")
    assert flatten(cr["rules"]) == WATCH_RULES | NAMESPACE_RULES
    (crb,) = find(manifests, "ClusterRoleBinding")
    assert crb["roleRef"]["name"] == cr["metadata"]["name"]
    assert crb["subjects"] == [{"kind": "ServiceAccount", "name": "rootkey-operator", "namespace": RELEASE_NS}]


def test_rbac_watch_namespaces(render):
    manifests = render("-f", str(ALL_ON))
    _no_wildcards(manifests)
    roles = {(r["metadata"]["namespace"], r["metadata"]["name"]): r for r in find(manifests, "Role")}
    assert set(roles) == {
        ("team-a", "rootkey-operator"),
        ("team-b", "rootkey-operator"),
        (RELEASE_NS, "rootkey-operator-leader-election"),
    }
    for ns in ("team-a", "team-b"):
        assert flatten(roles[(ns, "rootkey-operator")]["rules"]) == WATCH_RULES | {("", "namespaces", "get", (ns,))}
    assert flatten(roles[(RELEASE_NS, "rootkey-operator-leader-election")]["rules"]) == LEASE_RULES
    (cr,) = find(manifests, "ClusterRole")
    assert flatten(cr["rules"]) == CLUSTER_UID_RULES
    bindings = find(manifests, "RoleBinding")
    assert {(b["metadata"]["namespace"], b["roleRef"]["name"]) for b in bindings} == set(roles)


def test_crd_rendered_from_the_repository_file(render):
    manifests = render()
    (crd,) = find(manifests, "CustomResourceDefinition")
    source = yaml.safe_load(CRD_SOURCE.read_text())
    assert crd["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    assert crd["spec"] == source["spec"]
    assert crd["metadata"]["name"] == source["metadata"]["name"]
    assert not find(render("--set", "crds.install=false"), "CustomResourceDefinition")


def test_chart_crd_is_byte_identical_to_the_repository_crd():
    chart_crd = CHART / "files" / "antimatter.io_azurerootkeys.yaml"
    assert chart_crd.read_bytes() == CRD_SOURCE.read_bytes(), (
        "charts/rootkey-operator/files/antimatter.io_azurerootkeys.yaml is stale: "
        "cp crds/antimatter.io_azurerootkeys.yaml charts/rootkey-operator/files/"
    )


def test_package_contains_the_crd(helm, tmp_path):
    """`helm package` ships the CRD, and the packaged chart renders it."""
    run([helm, "package", str(CHART), "--destination", str(tmp_path)])
    (tgz,) = tmp_path.glob("rootkey-operator-0.1.0.tgz")
    with tarfile.open(tgz) as tar:
        member = tar.getmember("rootkey-operator/files/antimatter.io_azurerootkeys.yaml")
        assert member.isfile()
        assert tar.extractfile(member).read() == CRD_SOURCE.read_bytes()
    # And the packaged chart renders the CRD too.
    out = run([helm, "template", "x", str(tgz), "--namespace", RELEASE_NS]).stdout
    assert find(docs(out), "CustomResourceDefinition")


def test_notes_tell_the_next_step(helm, cluster):
    """`helm install --dry-run` against the API server renders NOTES.txt with the next step.
    (crds.install=false: the fixture installed the CRD without Helm's ownership metadata.)"""
    proc = run(
        [
            helm,
            "install",
            "rootkey-operator",
            str(CHART),
            "--dry-run",
            "--namespace",
            RELEASE_NS,
            "--set",
            "crds.install=false",
        ],
        env=cluster.env,
    )
    notes = proc.stdout.split("NOTES:", 1)[1]
    assert "kubectl get ark -n <namespace> -w" in notes
    assert "kind: AzureRootKey" in notes
    assert "no tenancyPolicy is set" in notes
    assert "azure.clientId is empty" in notes


@pytest.mark.parametrize("values", ["default", "all-on"])
def test_server_side_dry_run(helm, cluster, values):
    manifests = helm_template(helm, *VALUE_SETS[values]).stdout
    proc = cluster.kubectl("apply", "--dry-run=server", "-f", "-", input=manifests)
    assert "would violate PodSecurity" not in proc.stderr, proc.stderr
    created = {line.split()[0] for line in proc.stdout.splitlines() if line.strip()}
    assert any(x.startswith("deployment.apps/") for x in created), proc.stdout
    assert any(x.startswith("customresourcedefinition.apiextensions.k8s.io/") for x in created), proc.stdout
    if values == "all-on":
        assert any(x.startswith("servicemonitor.monitoring.coreos.com/") for x in created), proc.stdout
        assert any(x.startswith("prometheusrule.monitoring.coreos.com/") for x in created), proc.stdout
        assert any(x == "configmap/rootkey-operator-dashboard" for x in created), proc.stdout
        assert any(x.startswith("networkpolicy.networking.k8s.io/") for x in created), proc.stdout
