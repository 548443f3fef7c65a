#!/usr/bin/env bash
# `make e2e-cluster`: the operator as users run it. A two-node cluster on loopback (hack/cluster.sh),
# the project's image built by crane and pulled by the kubelets from a loopback registry, the chart
# `helm push`ed there and installed from oci:// with two replicas, the sandbox standing in for Azure
# and Antimatter. Checks: the chart's pod passes Pod Security "restricted"; the pods become Ready
# through their own probes; the sample reconciles to Ready; the leader's /metrics counts it; deleting
# the leader pod, and killing the leader's process, hands the Lease over while objects are created,
# and the audit log shows no two pods writing status in one term; `helm upgrade` while objects are
# created duplicates nothing; Argo CD's health script and kstatus read the real objects; `helm
# uninstall` keeps the objects and a reinstall writes nothing. Stops everything on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
BIN=${BIN:-$PWD/bin}
TARGET=${CARGO_TARGET_DIR:-target}/debug
STATIC_BIN=${STATIC_BIN:?set STATIC_BIN (make static)}
E2E_DIR=${E2E_DIR:-$PWD/.e2e-cluster}
NS=rootkey-system
TENANT_NS=tenant-a
LOAD=${E2E_LOAD:-50}
FAILOVER_LOAD=${E2E_FAILOVER_LOAD:-20}
LEASE_DURATION=15 # src/leader.rs
step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }
fail() {
  echo "e2e-cluster: FAILED: $*" >&2
  "$BIN/kubectl" get azurerootkeys -A >&2 || true
  "$BIN/kubectl" get pods -A -o wide >&2 || true
  "$BIN/kubectl" -n "$NS" describe pods >&2 || true
  "$BIN/kubectl" get events -A --sort-by=.lastTimestamp >&2 || true
  ss -ltnp >&2 || true
  tail -n 30 "$E2E_DIR"/cluster/node-*/pod-logs/*/*/*.log "$E2E_DIR"/cluster/logs/kubelet-*.log >&2 || true
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
  for n in "$E2E_DIR"/cluster/node-*; do cp -r "$n/pod-logs" "$E2E_DIR/pod-logs-${n##*/}" 2>/dev/null || true; done
  hack/cluster.sh down "$E2E_DIR/cluster" || true
}
trap cleanup EXIT
trap 'exit 130' INT TERM

step "two-node cluster"
CLUSTER_NODES=2 hack/cluster.sh up "$E2E_DIR/cluster"
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

# The README's install lines (its "## Install" block), placeholders filled in: the registry, and the
# ids (the same as the values file's).
readme_line() {
  python3 - "$1" "$REPO/README.md" <<'PY'
import re, sys
block = re.search(r"^## Install\n+```sh\n(.*?)```", open(sys.argv[2]).read(), re.S | re.M).group(1)
(line,) = [l for l in block.replace("\\\n", " ").splitlines() if l.startswith(sys.argv[1])]
print(line)
PY
}
readme_run() {
  local line
  line=$(readme_line "$1")
  line=${line//<registry>/$CLUSTER_REGISTRY} line=${line//<client-id>/$CLIENT_ID} line=${line//<tenant-id>/$TENANT_ID}
  shift
  echo "    \$ $line $*"
  eval "$line" '"$@"'
}
CLIENT_ID=3f2b8c1d-9e4a-4b7c-a6d5-1e8f2c3b4a50 TENANT_ID=7b0e4c2a-5d1f-4e8a-9c3b-2f6a1d8e4c10

step "chart: the README's helm package and helm push to oci://$CLUSTER_REGISTRY/charts"
(cd "$E2E_DIR" && ln -s "$REPO/charts" charts && readme_run "helm package" --plain-http) || fail "helm package/push"
chart_tgz=$(ls "$E2E_DIR"/rootkey-operator-*.tgz)
chart_version=$(basename "$chart_tgz" .tgz | sed 's/^rootkey-operator-//')

METRICS_PORT=$(free_port) PROBE_PORT=$(free_port)
python3 - "$E2E_DIR/values.yaml" <<PY
import json, sys
port = "$SANDBOX_PORT"
hosts = ["login", "graph", "api", "contoso-hsm.managedhsm"]
values = {
    "image": {"repository": "${IMAGE_REF%@*}", "digest": "${IMAGE_REF#*@}"},
    # The cluster gives pods no network of their own; the API server is on the host's loopback,
    # which the kubelet cannot advertise (it refuses a loopback node IP). Each node has its own
    # loopback address, and each replica binds its ports there.
    "hostNetwork": True,
    "listenOnPodIP": True,
    "replicaCount": 2,
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
        "tenantId": "$TENANT_ID",
        "clientId": "$CLIENT_ID",
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
readme_run "helm install" --version "$chart_version" --plain-http -f "$E2E_DIR/values.yaml" --wait --timeout 180s 2>&1 |
  tee "$E2E_DIR/helm-install.log" || fail "helm install"
# The warning (its quotes escaped in the log line) must name host networking and nothing else.
violations=$(grep -o 'would violate PodSecurity .*' "$E2E_DIR/helm-install.log" |
  sed -E 's/.*restricted:latest\\?"?: //; s/\\?"$//' | sort -u || true)
[ "$violations" = "host namespaces (hostNetwork=true)" ] ||
  fail "Pod Security restricted: expected only the host networking warning, got: ${violations:-none}"

step "both operator pods Ready through their probes, one per node"
kubectl -n "$NS" wait --for condition=Ready pod -l app.kubernetes.io/name=rootkey-operator --timeout 120s || fail "pods not Ready"
kubectl -n "$NS" get pod -l app.kubernetes.io/name=rootkey-operator \
  -o jsonpath='{range .items[*]}{.metadata.name} {.spec.nodeName} {.status.podIP} {.status.containerStatuses[0].imageID}{"\n"}{end}'
[ "$(kubectl -n "$NS" get pod -l app.kubernetes.io/name=rootkey-operator -o jsonpath='{.items[*].spec.nodeName}' | tr ' ' '\n' | sort -u | wc -l)" = 2 ] ||
  fail "the two replicas are not on two nodes"

# The Lease's holder (a pod name, or empty) and its transitions; the leader's metrics URL.
lease() { kubectl -n "$NS" get lease rootkey-operator -o jsonpath="{.spec.$1}" 2>/dev/null || true; }
leader_metrics() {
  local holder ip
  for _ in $(seq 60); do
    holder=$(lease holderIdentity)
    ip=$([ -n "$holder" ] && kubectl -n "$NS" get pod "$holder" -o jsonpath='{.status.podIP}' 2>/dev/null || true)
    [ -n "$ip" ] && { echo "http://$ip:$METRICS_PORT/metrics"; return; }
    sleep 1
  done
  fail "no leader"
}

step "sample AzureRootKey in $TENANT_NS reconciles to Ready"
kubectl create namespace "$TENANT_NS" >/dev/null
sed "s/:8443\//:$SANDBOX_PORT\//" deploy/sandbox/demo.yaml | kubectl -n "$TENANT_NS" apply -f - >/dev/null
kubectl -n "$TENANT_NS" wait --for condition=Ready azurerootkey/contoso-root --timeout 120s || {
  kubectl -n "$TENANT_NS" get azurerootkey contoso-root -o yaml >&2; fail "sample not Ready"
}

METRICS_URL=$(leader_metrics)
step "metrics scraped from the leader pod ($METRICS_URL, its pod IP)"
for _ in $(seq 30); do
  curl -fsS "$METRICS_URL" >"$E2E_DIR/metrics.txt" || fail "no /metrics"
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

# AzureRootKeys PREFIX-1… (COUNT of them), each with its own key.
objects() {
  for i in $(seq -w 1 "$2"); do
    cat <<YAML
---
apiVersion: antimatter.io/v1alpha1
kind: AzureRootKey
metadata: {name: $1-$i}
spec:
  domainId: dm-7fQ2xPz9KdL
  tenantId: 7b0e4c2a-5d1f-4e8a-9c3b-2f6a1d8e4c10
  hsm: {name: contoso-hsm}
  key: {name: $1-$i}
  antimatter:
    apiUrl: https://api.sandbox.localhost:$SANDBOX_PORT/v2
    apiKeySecretRef: {name: antimatter-api-key}
YAML
  done
}
# Seconds (with tenths) since the epoch.
now() { date +%s.%N | cut -c1-12; }
# Waits until the Lease's holder is not $1 (empty: until anyone holds it) and prints the seconds
# since $2, or fails after $3 seconds.
wait_new_holder() {
  local holder
  for _ in $(seq $(($3 * 10))); do
    holder=$(lease holderIdentity)
    if [ -n "$holder" ] && [ "$holder" != "$1" ]; then
      python3 -c "print(f'{$(now) - $2:.1f}')"
      return
    fi
    sleep 0.1
  done
  fail "no new leader within $3 s (holder: ${holder:-none})"
}

step "failover: the leader pod is deleted while $FAILOVER_LOAD AzureRootKeys are created"
old_leader=$(lease holderIdentity)
objects failover "$FAILOVER_LOAD" >"$E2E_DIR/failover.yaml"
kubectl -n "$TENANT_NS" apply -f "$E2E_DIR/failover.yaml" >/dev/null
sleep 3 # the leader is writing statuses (key creations are paced at about one a second)
deleted_at=$(now)
kubectl -n "$NS" delete pod "$old_leader" --wait=false >/dev/null
graceful=$(wait_new_holder "$old_leader" "$deleted_at" "$LEASE_DURATION")
new_leader=$(lease holderIdentity)
echo "    $old_leader deleted; $new_leader leads ${graceful} s later (Lease released on SIGTERM)"
kubectl -n "$TENANT_NS" wait --for condition=Ready azurerootkey --all --timeout 120s >/dev/null ||
  fail "not every object Ready after the failover"

step "failover: the leader's process is killed (SIGKILL) while $FAILOVER_LOAD more are created"
objects crash "$FAILOVER_LOAD" >"$E2E_DIR/crash.yaml"
kubectl -n "$NS" wait --for condition=Ready pod -l app.kubernetes.io/name=rootkey-operator --timeout 120s >/dev/null ||
  fail "the replacement pod is not Ready"
kubectl -n "$TENANT_NS" apply -f "$E2E_DIR/crash.yaml" >/dev/null
sleep 3
pid=$(grep -lz "^POD_NAME=$new_leader\$" /proc/[0-9]*/environ 2>/dev/null | cut -d/ -f3 | head -n 1 || true)
[ -n "$pid" ] || fail "no process of $new_leader"
killed_at=$(now)
kill -9 "$pid"
while kill -0 "$pid" 2>/dev/null; do sleep 0.05; done
renewed=$(lease renewTime)
# A new term starts when a live replica renews the Lease: the standby after the lease expires, or
# the killed pod's restarted container, which holds the same identity, as soon as it runs.
for _ in $(seq $(((LEASE_DURATION + 10) * 10))); do
  [ "$(lease renewTime)" != "$renewed" ] && [ -n "$(lease holderIdentity)" ] && break
  sleep 0.1
done
forced=$(python3 -c "print(f'{$(now) - $killed_at:.1f}')")
echo "    $new_leader's process killed; $(lease holderIdentity) leads ${forced} s later (lease ${LEASE_DURATION} s)"
python3 -c "import sys; sys.exit(0 if $forced <= $LEASE_DURATION + 2 else 1)" ||
  fail "leadership resumed ${forced} s after the leader was killed (lease ${LEASE_DURATION} s)"
kubectl -n "$TENANT_NS" wait --for condition=Ready azurerootkey --all --timeout 120s >/dev/null ||
  fail "not every object Ready after the killed leader"

step "helm upgrade (a changed value rolls the pods) while $LOAD more AzureRootKeys are created"
objects load "$LOAD" >"$E2E_DIR/load.yaml"
kubectl -n "$TENANT_NS" apply -f "$E2E_DIR/load.yaml" >/dev/null &
load_pid=$!
helm upgrade rootkey-operator "oci://$CLUSTER_REGISTRY/charts/rootkey-operator" --version "$chart_version" --plain-http \
  -n "$NS" --reuse-values --set concurrency=16 --wait --timeout 180s >"$E2E_DIR/helm-upgrade.log" 2>&1 ||
  fail "helm upgrade: $(cat "$E2E_DIR/helm-upgrade.log")"
wait "$load_pid"
[ "$(kubectl -n "$NS" get deployment rootkey-operator -o jsonpath='{.spec.template.spec.containers[0].env[?(@.name=="CONCURRENCY")].value}')" = 16 ] ||
  fail "the upgrade did not change CONCURRENCY"
kubectl -n "$TENANT_NS" wait --for condition=Ready azurerootkey --all --timeout 300s >/dev/null || fail "not every object Ready after the upgrade"
total=$((LOAD + 2 * FAILOVER_LOAD + 1))
# What Azure and Antimatter hold for each object, from the sandbox's state: one key version, one
# Crypto User assignment at the key, one registration. (Counting calls would not do: a reconcile cut
# by a failover may PUT the same assignment again, which changes nothing.)
kubectl -n "$TENANT_NS" get azurerootkey -o jsonpath='{range .items[*]}{.spec.key.name}{"\n"}{end}' >"$E2E_DIR/keys.txt"
curl -fsS "$SANDBOX_ADMIN/state" >"$E2E_DIR/state.json"
python3 - "$E2E_DIR/state.json" "$E2E_DIR/keys.txt" "$total" <<'PY' || fail "duplicates or missing pieces in Azure or Antimatter"
import json, sys
state, keys, total = json.load(open(sys.argv[1])), open(sys.argv[2]).read().split(), int(sys.argv[3])
(hsm,) = [h for h in state["hsms"] if h["name"] == "contoso-hsm"]
versions = {k["name"]: len(k["versions"]) for k in hsm["keys"]}
crypto_user = "21dbd100-6940-42c2-9190-5d6cb909625b"
regs = [r for d in state["domains"] for r in d["keys"] if r["source"] == "azure_am"]
wrong = []
for key in keys:
    assignments = [a for a in hsm["roleAssignments"]
                   if a["properties"]["scope"] == f"/keys/{key}" and a["properties"]["roleDefinitionId"].endswith(crypto_user)]
    registered = [r for r in regs if r["resourcePath"].startswith(f"{hsm['url']}/keys/{key}/")]
    if (versions.get(key), len(assignments), len(registered)) != (1, 1, 1):
        wrong.append(f"{key}: {versions.get(key, 0)} versions, {len(assignments)} assignments, {len(registered)} registrations")
assert len(keys) == total, f"{len(keys)} objects, expected {total}"
assert not wrong, "\n".join(wrong)
PY
echo "    $total objects Ready; one key version, one role assignment and one registration each" \
  "(calls: $(count_ok hsm key.create) key creations, $(count_ok hsm rbac.assignment.put) assignment PUTs, $(count_ok antimatter rek.add) registrations)"
kubectl -n "$TENANT_NS" get azurerootkey -o json >"$E2E_DIR/objects.json"
ROOTKEY_E2E_OBJECTS=$E2E_DIR/objects.json "$VENV/bin/python" -m pytest -q \
  tests/packaging/test_argocd_health.py -k real_cluster || fail "the Argo CD health check on the real objects"
# kstatus (the library Flux and kpt read health with) on the same objects.
"$BIN/kstatus" <"$E2E_DIR/objects.json" >"$E2E_DIR/kstatus.txt" || fail "kstatus on the real objects"
[ "$(grep -c '"status":"Current"' "$E2E_DIR/kstatus.txt")" = "$total" ] ||
  fail "kstatus: not every object Current: $(grep -v '"status":"Current"' "$E2E_DIR/kstatus.txt")"
echo "    kstatus: $total objects Current"

step "audit log: status writes, by pod, never from two pods in one Lease term"
"$VENV/bin/python" - "$CLUSTER_AUDIT_LOG" "$(lease leaseTransitions)" "system:serviceaccount:$NS:rootkey-operator" <<'PY' ||
import json, sys
log, transitions, user = sys.argv[1], int(sys.argv[2]), sys.argv[3]
writes = []
for line in open(log):
    e = json.loads(line)
    if e["user"]["username"] != user or e.get("responseStatus", {}).get("code", 0) >= 300:
        continue
    (pod,) = e["user"]["extra"]["authentication.kubernetes.io/pod-name"]
    writes.append((e["requestReceivedTimestamp"], pod))
writes.sort()
# Runs of consecutive writes by one pod: each change of writer needs a change of leader.
runs = [pod for i, (_, pod) in enumerate(writes) if i == 0 or writes[i - 1][1] != pod]
print(f"    {len(writes)} status writes by {len(set(runs))} pods in {len(runs)} runs: {' -> '.join(runs)}; "
      f"{transitions} Lease transitions")
assert len(set(runs)) >= 3, "the failovers did not happen while statuses were written"
assert len(runs) - 1 <= transitions, "two pods wrote status within one Lease term"
PY
  fail "the audit log shows overlapping writers"

step "helm uninstall keeps the CRD and the objects; a reinstall adopts them with no writes"
helm uninstall rootkey-operator -n "$NS" --wait --timeout 120s >/dev/null
kubectl get crd azurerootkeys.antimatter.io >/dev/null || fail "the CRD went with the release"
[ "$(kubectl -n "$TENANT_NS" get azurerootkey -o name | wc -l)" = "$total" ] || fail "objects went with the release"
curl -fsS -X DELETE "$SANDBOX_ADMIN/counters" >/dev/null
helm install rootkey-operator "oci://$CLUSTER_REGISTRY/charts/rootkey-operator" --version "$chart_version" --plain-http \
  -n "$NS" -f "$E2E_DIR/values.yaml" --wait --timeout 180s >"$E2E_DIR/helm-reinstall.log" 2>&1 ||
  fail "helm reinstall: $(cat "$E2E_DIR/helm-reinstall.log")"
# Every object is reconciled once by the new leader (the reconcile counter starts at 0 in it).
METRICS_URL=$(leader_metrics)
for _ in $(seq 60); do
  ok=$( { curl -fsS "$METRICS_URL" 2>/dev/null || true; } | awk '$1 == "rootkey_operator_reconciles_total{result=\"ok\"}" {print $2}')
  [ "${ok:-0}" -ge "$total" ] && break
  sleep 1
done
[ "${ok:-0}" -ge "$total" ] || fail "the reinstalled operator reconciled ${ok:-0} of $total objects"
n=$(writes)
[ "$n" = 0 ] || fail "the reinstalled operator made $n writes to Azure or Antimatter"
echo "    $total objects reconciled by the new pod with 0 writes"

step "passed in $(($(date +%s) - started)) s"
