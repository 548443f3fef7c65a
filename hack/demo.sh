#!/usr/bin/env bash
# `make demo`: a local control plane + the Azure/Antimatter sandbox + the operator + a sample
# AzureRootKey, until Ready. Ctrl-C (or DEMO_EXIT=1, as in CI) stops everything cleanly.
set -euo pipefail
cd "$(dirname "$0")/.."

TARGET=${CARGO_TARGET_DIR:-target}/debug
BIN=${BIN:-bin}
DEMO_DIR=${DEMO_DIR:-.demo}
PORT=${DEMO_SANDBOX_PORT:-8443}
ADMIN_PORT=${DEMO_SANDBOX_ADMIN_PORT:-8444}
METRICS_PORT=${DEMO_METRICS_PORT:-18080}
PROBE_PORT=${DEMO_PROBE_PORT:-18081}
NS=demo
step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }

rm -rf "$DEMO_DIR" && mkdir -p "$DEMO_DIR"
pids=()
cleanup() {
  trap - EXIT INT TERM
  step "stopping"
  for ((i=${#pids[@]}-1; i>=0; i--)); do kill "${pids[$i]}" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT
trap 'exit 130' INT TERM

step "starting the local control plane (etcd + kube-apiserver)"
"$TARGET/controlplane" --bin-dir "$BIN" up --kubeconfig-out "$DEMO_DIR/kubeconfig" 2>"$DEMO_DIR/controlplane.log" &
pids+=($!)
for _ in $(seq 120); do [ -s "$DEMO_DIR/kubeconfig" ] && break; sleep 0.5; done
[ -s "$DEMO_DIR/kubeconfig" ] || { cat "$DEMO_DIR/controlplane.log"; exit 1; }
export KUBECONFIG=$PWD/$DEMO_DIR/kubeconfig
kubectl() { "$BIN/kubectl" "$@"; }

step "starting the sandbox (Entra ID, Microsoft Graph, Managed HSM, Antimatter API) on port $PORT"
"$TARGET/rootkey-sandbox" --world deploy/sandbox/world.yaml --port "$PORT" --admin-port "$ADMIN_PORT" \
  --state-dir "$DEMO_DIR/sandbox" >"$DEMO_DIR/sandbox.log" 2>&1 &
pids+=($!)
for _ in $(seq 50); do [ -s "$DEMO_DIR/sandbox/endpoints.json" ] && break; sleep 0.2; done
[ -s "$DEMO_DIR/sandbox/endpoints.json" ] || { cat "$DEMO_DIR/sandbox.log"; exit 1; }
sed 's/^/    /' "$DEMO_DIR/sandbox.log"

step "installing the CRD and a sample AzureRootKey with its API-key Secret"
kubectl apply --server-side -f crds/antimatter.io_azurerootkeys.yaml >/dev/null
kubectl wait --for condition=established crd/azurerootkeys.antimatter.io --timeout=30s >/dev/null
kubectl create namespace "$NS" >/dev/null
sed "s/:8443\//:$PORT\//" deploy/sandbox/demo.yaml | kubectl -n "$NS" apply -f -

step "starting the operator (the same code it runs against Azure; only endpoints, CA and credentials differ)"
AZURE_CLIENT_ID=3f2b8c1d-9e4a-4b7c-a6d5-1e8f2c3b4a50 AZURE_CLIENT_SECRET=fake-operator-secret-not-real \
"$TARGET/rootkey-operator" run --log-format text \
  --cloud Custom --authority-host "https://login.sandbox.localhost:$PORT" --graph-url "https://graph.sandbox.localhost:$PORT" \
  --hsm-dns-suffixes "managedhsm.sandbox.localhost:$PORT" --ca-bundle "$DEMO_DIR/sandbox/ca.pem" \
  --antimatter-api-urls "https://api.sandbox.localhost:$PORT/v2" --antimatter-application-id 8d4e2f1a-7c3b-4e5d-b9a8-6f2e1d4c3b70 \
  --azure-identity secret --metrics-addr 127.0.0.1:$METRICS_PORT --probe-addr 127.0.0.1:$PROBE_PORT >"$DEMO_DIR/operator.log" 2>&1 &
pids+=($!)

step "waiting for Ready (conditions as they change)"
last=""
for i in $(seq 120); do
  now=$(kubectl -n "$NS" get ark contoso-root -o jsonpath='{range .status.conditions[*]}{.type}={.status} {end}' 2>/dev/null || true)
  [ "$now" != "$last" ] && [ -n "$now" ] && echo "    $now" && last=$now
  if kubectl -n "$NS" get ark contoso-root -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null | grep -q True; then break; fi
  if [ "$i" = 120 ]; then
    echo "not Ready after 60s; operator log:"; tail -30 "$DEMO_DIR/operator.log"
    kubectl -n "$NS" describe ark contoso-root; exit 1
  fi
  sleep 0.5
done

step "Ready"
kubectl -n "$NS" get ark
kubectl -n "$NS" get ark contoso-root -o jsonpath='{"\n"}    key URL:        {.status.keyUrl}{"\n"}    tenant:         {.status.tenantId}{"\n"}    principal:      {.status.servicePrincipalObjectId}{"\n"}    role assignment:{.status.roleAssignmentName}{"\n"}    root key ID:    {.status.rootEncryptionKeyId}{"\n"}    pairing:        {.status.pairing.status} in {.status.pairing.latencyMs} ms{"\n"}'

step "remote calls the sandbox served (including Antimatter's own pairing-check calls)"
python3 - "$ADMIN_PORT" <<'PY'
import json, sys, urllib.request
rows = json.load(urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/counters"))["counters"]
for r in sorted(rows, key=lambda r: (r["service"], r["operation"], r["status"])):
    print(f"    {r['service']:<11} {r['operation']:<24} {r['status']:>4}  x{r['count']}")
PY

cat <<EOF

Look next:
  KUBECONFIG=$KUBECONFIG $BIN/kubectl -n $NS describe ark contoso-root
  curl -s http://127.0.0.1:$ADMIN_PORT/state        # what the sandbox holds now
  curl -s http://127.0.0.1:$METRICS_PORT/metrics           # the operator's metrics
  logs: $DEMO_DIR/operator.log, $DEMO_DIR/sandbox.log
EOF
if [ "${DEMO_EXIT:-}" = 1 ] || [ ! -t 0 ]; then exit 0; fi
echo "Ctrl-C stops everything."
while true; do sleep 3600; done
