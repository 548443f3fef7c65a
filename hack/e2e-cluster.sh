#!/usr/bin/env bash
# `make e2e-cluster`: the operator as users run it. A one-node cluster on loopback (hack/cluster.sh),
# the project's image built by crane and pulled by the kubelet from a loopback registry, the chart
# `helm push`ed there and installed from oci://, the sandbox standing in for Azure and Antimatter.
# Checks: the chart's pod passes Pod Security "restricted"; the pod becomes Ready through its own
# probes; the sample reconciles to Ready; the pod's /metrics counts it; `helm upgrade` while objects
# are created duplicates nothing; `helm uninstall` keeps the objects and a reinstall writes nothing.
# Stops everything on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-$PWD/bin}
TARGET=${CARGO_TARGET_DIR:-target}/debug
STATIC_BIN=${STATIC_BIN:?set STATIC_BIN (make static)}
E2E_DIR=${E2E_DIR:-$PWD/.e2e-cluster}
NS=rootkey-system
TENANT_NS=tenant-a
LOAD=${E2E_LOAD:-50}
step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }
fail() {
  echo "e2e-cluster: FAILED: $*" >&2
  "$BIN/kubectl" get azurerootkeys -A >&2 || true
  "$BIN/kubectl" get pods -A -o wide >&2 || true
  "$BIN/kubectl" -n "$NS" describe pods >&2 || true
  tail -n 30 "$E2E_DIR"/cluster/pod-logs/*/*/*.log "$E2E_DIR"/cluster/logs/kubelet.log >&2 || true
  exit 1
}
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
started=$(date +%s)

rm -rf "$E2E_DIR" && mkdir -p "$E2E_DIR"
sandbox_pid=
cleanup() {
  trap - EXIT INT TERM
  [ -n "$sandbox_pid" ] && kill "$sandbox_pid" 2>/dev/null
  # The cluster's and the pods' logs outlive it, for a failed run.
  cp -r "$E2E_DIR/cluster/logs" "$E2E_DIR/cluster-logs" 2>/dev/null || true
  cp -r "$E2E_DIR/cluster/pod-logs" "$E2E_DIR/pod-logs" 2>/dev/null || true
  hack/cluster.sh down "$E2E_DIR/cluster" || true
}
trap cleanup EXIT
trap 'exit 130' INT TERM

step "one-node cluster"
hack/cluster.sh up "$E2E_DIR/cluster"
# shellcheck disable=SC1091
source "$E2E_DIR/cluster/env"
kubectl() { "$BIN/kubectl" "$@"; }
helm() { "$BIN/helm" "$@"; }
VENV=${VENV:?set VENV (make venv)}

step "sandbox (Entra ID, Graph, Managed HSM, Antimatter)"
# The operator's Entra application trusts this cluster's ServiceAccount tokens (its issuer, the
# chart's ServiceAccount, the workload identity audience), as `az identity federated-credential
# create` makes it trust an AKS cluster's.
ISSUER=$(kubectl get --raw /.well-known/openid-configuration | python3 -c 'import json,sys; print(json.load(sys.stdin)["issuer"])')
"$VENV/bin/python" - "$E2E_DIR/world.yaml" <<PY
import sys, yaml
world = yaml.safe_load(open("deploy/sandbox/world.yaml"))
(operator,) = [a for a in world["applications"] if a["name"] == "rootkey-operator"]
operator["federated_credentials"].append({
    "name": "e2e-cluster",
    "issuer": "$ISSUER",
    "subject": "system:serviceaccount:$NS:rootkey-operator",
    "audiences": ["api://AzureADTokenExchange"],
})
yaml.safe_dump(world, open(sys.argv[1], "w"))
PY
# Entra checks an assertion against its issuer's keys (OpenID discovery): the sandbox fetches them
# from the API server, whose serving certificate this cluster's CA signed.
CLUSTER_CA=$(awk '/certificate-authority:/ {print $2; exit}' "$KUBECONFIG")
"$TARGET/rootkey-sandbox" --world "$E2E_DIR/world.yaml" --port 0 --admin-port 0 \
  --issuer-ca "$CLUSTER_CA" --state-dir "$E2E_DIR/sandbox" >"$E2E_DIR/sandbox.log" 2>&1 &
sandbox_pid=$!
for _ in $(seq 50); do [ -s "$E2E_DIR/sandbox/endpoints.json" ] && break; sleep 0.2; done
[ -s "$E2E_DIR/sandbox/endpoints.json" ] || { cat "$E2E_DIR/sandbox.log"; exit 1; }
SANDBOX_PORT=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["port"])' "$E2E_DIR/sandbox/endpoints.json")
SANDBOX_ADMIN=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["admin_url"])' "$E2E_DIR/sandbox/endpoints.json")

step "image (crane) into the registry at $CLUSTER_REGISTRY"
IMAGE_REF=$(STATIC_BIN=$STATIC_BIN IMAGE_DIR=$E2E_DIR/image hack/image.sh)
echo "    $IMAGE_REF"
ROOTKEY_IMAGE_DIR=$E2E_DIR/image "$VENV/bin/python" -m pytest -q tests/packaging/test_image.py

step "chart: helm package, helm push oci://$CLUSTER_REGISTRY/charts"
helm package charts/rootkey-operator -d "$E2E_DIR" >/dev/null
chart_tgz=$(ls "$E2E_DIR"/rootkey-operator-*.tgz)
chart_version=$(basename "$chart_tgz" .tgz | sed 's/^rootkey-operator-//')
helm push "$chart_tgz" "oci://$CLUSTER_REGISTRY/charts" --plain-http

METRICS_PORT=$(free_port) PROBE_PORT=$(free_port)
python3 - "$E2E_DIR/values.yaml" <<PY
import json, sys
port = "$SANDBOX_PORT"
hosts = ["login", "graph", "api", "contoso-hsm.managedhsm"]
values = {
    "image": {"repository": "${IMAGE_REF%@*}", "digest": "${IMAGE_REF#*@}"},
    # The one-node cluster gives pods no network of their own; the API server is on the node's
    # loopback, which the kubelet cannot advertise (it refuses a loopback node IP).
    "hostNetwork": True,
    "hostAliases": [{"ip": "127.0.0.1", "hostnames": [f"{h}.sandbox.localhost" for h in hosts]}],
    "extraEnv": [
        {"name": "KUBERNETES_SERVICE_HOST", "value": "$CLUSTER_API_HOST"},
        {"name": "KUBERNETES_SERVICE_PORT", "value": "$CLUSTER_API_PORT"},
    ],
    "metrics": {"port": $METRICS_PORT},
    "probePort": $PROBE_PORT,
    "logFormat": "text",
    "azure": {
        # Workload identity without the webhook: the chart mounts the projected token itself.
        "identity": "workload",
        "workloadIdentityToken": {"mount": True},
        "tenantId": "7b0e4c2a-5d1f-4e8a-9c3b-2f6a1d8e4c10",
        "clientId": "3f2b8c1d-9e4a-4b7c-a6d5-1e8f2c3b4a50",
        "cloud": "Custom",
        "authorityHost": f"https://login.sandbox.localhost:{port}",
        "graphUrl": f"https://graph.sandbox.localhost:{port}",
        "hsmDnsSuffixes": [f"managedhsm.sandbox.localhost:{port}"],
    },
    "antimatter": {
        "apiUrls": [f"https://api.sandbox.localhost:{port}/v2"],
        "applicationId": "8d4e2f1a-7c3b-4e5d-b9a8-6f2e1d4c3b70",
    },
    "extraCABundle": {"pem": open("$E2E_DIR/sandbox/ca.pem").read()},
}
json.dump(values, open(sys.argv[1], "w"), indent=2)
PY

step "Pod Security: the chart's pod (without host networking) is admitted by a namespace enforcing restricted"
kubectl create namespace restricted-check >/dev/null
kubectl label namespace restricted-check pod-security.kubernetes.io/enforce=restricted >/dev/null
helm template rootkey-operator "oci://$CLUSTER_REGISTRY/charts/rootkey-operator" --version "$chart_version" --plain-http \
  -n restricted-check -f "$E2E_DIR/values.yaml" --set hostNetwork=false --set crds.install=false |
  kubectl -n restricted-check apply --dry-run=server -f - 2>&1 | tee "$E2E_DIR/restricted-check.log" | grep -i deployment
if grep -qi "violate\|forbidden" "$E2E_DIR/restricted-check.log"; then fail "restricted refused the chart's pod: $(cat "$E2E_DIR/restricted-check.log")"; fi

step "helm install from oci:// into $NS (restricted is warned and audited; host networking is the one exception)"
kubectl create namespace "$NS" >/dev/null
kubectl label namespace "$NS" pod-security.kubernetes.io/enforce=privileged \
  pod-security.kubernetes.io/warn=restricted pod-security.kubernetes.io/audit=restricted >/dev/null
helm install rootkey-operator "oci://$CLUSTER_REGISTRY/charts/rootkey-operator" --version "$chart_version" --plain-http \
  -n "$NS" -f "$E2E_DIR/values.yaml" --wait --timeout 180s 2>&1 | tee "$E2E_DIR/helm-install.log" ||
  fail "helm install"
# The warning (its quotes escaped in the log line) must name host networking and nothing else.
violations=$(grep -o 'would violate PodSecurity .*' "$E2E_DIR/helm-install.log" |
  sed -E 's/.*restricted:latest\\?"?: //; s/\\?"$//' | sort -u || true)
[ "$violations" = "host namespaces (hostNetwork=true)" ] ||
  fail "Pod Security restricted: expected only the host networking warning, got: ${violations:-none}"

step "operator pod Ready through its probes"
kubectl -n "$NS" wait --for condition=Ready pod -l app.kubernetes.io/name=rootkey-operator --timeout 120s || fail "pod not Ready"
POD=$(kubectl -n "$NS" get pod -l app.kubernetes.io/name=rootkey-operator -o jsonpath='{.items[0].metadata.name}')
kubectl -n "$NS" get pod "$POD" -o jsonpath='{.status.containerStatuses[0].imageID}{"\n"}'

step "sample AzureRootKey in $TENANT_NS reconciles to Ready"
kubectl create namespace "$TENANT_NS" >/dev/null
sed "s/:8443\//:$SANDBOX_PORT\//" deploy/sandbox/demo.yaml | kubectl -n "$TENANT_NS" apply -f - >/dev/null
kubectl -n "$TENANT_NS" wait --for condition=Ready azurerootkey/contoso-root --timeout 120s || {
  kubectl -n "$TENANT_NS" get azurerootkey contoso-root -o yaml >&2; fail "sample not Ready"
}

step "metrics scraped from the pod (host network: 127.0.0.1:$METRICS_PORT)"
# The Ready gauge is refreshed every 10 s.
for _ in $(seq 30); do
  curl -fsS "http://127.0.0.1:$METRICS_PORT/metrics" >"$E2E_DIR/metrics.txt" || fail "no /metrics"
  grep -qE '^rootkey_operator_objects\{ready="True"\} 1$' "$E2E_DIR/metrics.txt" && break
  sleep 1
done
grep -E '^rootkey_operator_objects\{ready="True"\} 1$' "$E2E_DIR/metrics.txt" || fail "metrics do not count the Ready object"
# The projected token was exchanged at Entra ID, and the key was created once.
grep -E '^rootkey_operator_remote_calls_total\{service="entra",operation="token",code="200"\} [1-9]' "$E2E_DIR/metrics.txt" ||
  fail "no token from Entra ID"
grep -E '^rootkey_operator_remote_calls_total\{service="hsm",operation="key.create",code="200"\} 1$' "$E2E_DIR/metrics.txt" ||
  fail "the key was not created exactly once"

# Sandbox calls that change Azure or Antimatter, summed from its counters (successful ones only).
writes() {
  curl -fsS "$SANDBOX_ADMIN/counters" | python3 -c '
import json, sys
# Reads, tokens and crypto with the key (the pairing check) change nothing.
unchanging = ("get", "list", "versions", "token", "openid-configuration", "instance-discovery", "authenticate",
              "test", "wrap", "unwrap", "encrypt", "decrypt")
rows = json.load(sys.stdin)["counters"]
changes = [r for r in rows if 200 <= r["status"] < 300 and r["operation"].split(".")[-1] not in unchanging]
for r in changes:
    print(r["service"], r["operation"], r["count"], file=sys.stderr)
print(sum(r["count"] for r in changes))'
}
count_ok() { curl -fsS "$SANDBOX_ADMIN/counters?service=$1&operation=$2" | python3 -c '
import json, sys
print(sum(r["count"] for r in json.load(sys.stdin)["counters"] if 200 <= r["status"] < 300))'; }

step "helm upgrade (a changed value rolls the pod) while $LOAD more AzureRootKeys are created"
for i in $(seq -w 1 "$LOAD"); do
  cat <<YAML
---
apiVersion: antimatter.io/v1alpha1
kind: AzureRootKey
metadata: {name: load-$i}
spec:
  domainId: dm-7fQ2xPz9KdL
  tenantId: 7b0e4c2a-5d1f-4e8a-9c3b-2f6a1d8e4c10
  hsm: {name: contoso-hsm}
  key: {name: load-$i}
  antimatter:
    apiUrl: https://api.sandbox.localhost:$SANDBOX_PORT/v2
    apiKeySecretRef: {name: antimatter-api-key}
YAML
done >"$E2E_DIR/load.yaml"
kubectl -n "$TENANT_NS" apply -f "$E2E_DIR/load.yaml" >/dev/null &
load_pid=$!
helm upgrade rootkey-operator "oci://$CLUSTER_REGISTRY/charts/rootkey-operator" --version "$chart_version" --plain-http \
  -n "$NS" --reuse-values --set concurrency=16 --wait --timeout 180s >"$E2E_DIR/helm-upgrade.log" 2>&1 ||
  fail "helm upgrade: $(cat "$E2E_DIR/helm-upgrade.log")"
wait "$load_pid"
[ "$(kubectl -n "$NS" get deployment rootkey-operator -o jsonpath='{.spec.template.spec.containers[0].env[?(@.name=="CONCURRENCY")].value}')" = 16 ] ||
  fail "the upgrade did not change CONCURRENCY"
kubectl -n "$TENANT_NS" wait --for condition=Ready azurerootkey --all --timeout 300s >/dev/null || fail "not every object Ready after the upgrade"
total=$((LOAD + 1))
for op in "hsm key.create" "hsm rbac.assignment.put" "antimatter rek.add"; do
  # shellcheck disable=SC2086
  n=$(count_ok $op)
  [ "$n" = "$total" ] || fail "$op succeeded $n times for $total objects"
done
echo "    $total objects Ready; one key, one role assignment and one registration each"
kubectl -n "$TENANT_NS" get azurerootkey -o json >"$E2E_DIR/objects.json"
ROOTKEY_E2E_OBJECTS=$E2E_DIR/objects.json "$VENV/bin/python" -m pytest -q \
  tests/packaging/test_argocd_health.py -k real_cluster || fail "the Argo CD health check on the real objects"

step "helm uninstall keeps the CRD and the objects; a reinstall adopts them with no writes"
helm uninstall rootkey-operator -n "$NS" --wait --timeout 120s >/dev/null
kubectl get crd azurerootkeys.antimatter.io >/dev/null || fail "the CRD went with the release"
[ "$(kubectl -n "$TENANT_NS" get azurerootkey -o name | wc -l)" = "$total" ] || fail "objects went with the release"
curl -fsS -X DELETE "$SANDBOX_ADMIN/counters" >/dev/null
helm install rootkey-operator "oci://$CLUSTER_REGISTRY/charts/rootkey-operator" --version "$chart_version" --plain-http \
  -n "$NS" -f "$E2E_DIR/values.yaml" --wait --timeout 180s >"$E2E_DIR/helm-reinstall.log" 2>&1 ||
  fail "helm reinstall: $(cat "$E2E_DIR/helm-reinstall.log")"
# Every object is reconciled once by the new pod (the reconcile counter starts at 0 in it).
for _ in $(seq 60); do
  ok=$( { curl -fsS "http://127.0.0.1:$METRICS_PORT/metrics" 2>/dev/null || true; } | awk '$1 == "rootkey_operator_reconciles_total{result=\"ok\"}" {print $2}')
  [ "${ok:-0}" -ge "$total" ] && break
  sleep 1
done
[ "${ok:-0}" -ge "$total" ] || fail "the reinstalled operator reconciled ${ok:-0} of $total objects"
n=$(writes)
[ "$n" = 0 ] || fail "the reinstalled operator made $n writes to Azure or Antimatter"
echo "    $total objects reconciled by the new pod with 0 writes"

step "passed in $(($(date +%s) - started)) s"
