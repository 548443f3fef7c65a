#!/usr/bin/env bash
# A Kubernetes cluster on loopback, from the binaries `make tools` builds:
#   hack/cluster.sh up DIR     start registry, etcd + kube-apiserver (audit log of AzureRootKey
#                              status writes), kube-controller-manager, kube-scheduler, and
#                              $CLUSTER_NODES (default 1) nodes, each a containerd and a kubelet,
#                              named 127.0.0.2, 127.0.0.3, …; write DIR/env; return
#   hack/cluster.sh down DIR   stop every process it started, unmount, remove DIR
# Everything listens on 127.0.0.1. Pods must use host networking: the only CNI plugin is
# `loopback`, so a pod's own network namespace reaches nothing (no pod or service CIDR traffic).
# containerd and runc are Debian's (README, "End-to-end in a two-node cluster" says why).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-$PWD/bin}
TARGET=${CARGO_TARGET_DIR:-target}/debug
CNI_BIN_DIR=${CNI_BIN_DIR:-/usr/lib/cni}
NODES=${CLUSTER_NODES:-1} # 1 to 9

cmd=${1:?usage: cluster.sh up|down DIR}
D=${2:?usage: cluster.sh up|down DIR}
log() { printf '[cluster] %s\n' "$*" >&2; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# Starts a process in the background, logging to DIR/logs/NAME.log, and records its pid for `down`.
# Its own session, so it outlives the shell that ran `up` (and that shell's process group).
start() {
  local name=$1; shift
  setsid "$@" >"$D/logs/$name.log" 2>&1 </dev/null &
  echo "$! $name" >>"$D/pids"
}

wait_for() {
  local what=$1 tries=$2; shift 2
  for _ in $(seq "$tries"); do "$@" >/dev/null 2>&1 && return 0; sleep 0.5; done
  log "$what not ready; last log lines:"; tail -n 20 "$D"/logs/*.log >&2; return 1
}

up() {
  for tool in kube-apiserver kube-controller-manager kube-scheduler kubelet kubectl etcd crane registry; do
    [ -x "$BIN/$tool" ] || { log "$BIN/$tool missing: run make tools"; exit 1; }
  done
  for tool in containerd containerd-shim-runc-v2 runc ctr "$CNI_BIN_DIR/loopback" gcc; do
    command -v "$tool" >/dev/null || { log "$tool missing: run make node-deps"; exit 1; }
  done
  rm -rf "$D" && mkdir -p "$D"/{logs,cni,registry}
  D=$(cd "$D" && pwd)
  : >"$D/pids"
  trap 'log "up failed; stopping what started"; down' ERR

  local registry_port kcm_port sched_port
  registry_port=$(free_port) kcm_port=$(free_port) sched_port=$(free_port)
  local registry=127.0.0.1:$registry_port
  local pause_image=$registry/pause:3.10

  log "OCI registry (distribution) on $registry"
  cat >"$D/registry.yaml" <<EOF
version: 0.1
log: {level: error, accesslog: {disabled: true}}
storage: {filesystem: {rootdirectory: $D/registry}, delete: {enabled: true}}
http: {addr: $registry}
EOF
  # No OpenTelemetry exporter: it would post traces to localhost:4318.
  OTEL_TRACES_EXPORTER=none start registry "$BIN/registry" serve "$D/registry.yaml"
  wait_for registry 40 curl -fsS "http://$registry/v2/"

  log "etcd + kube-apiserver"
  # Its PKI and etcd data under DIR (TMPDIR), not in /tmp beside every other test's.
  # Audit: who wrote which AzureRootKey's status, and when (the failover check reads it).
  cat >"$D/audit-policy.yaml" <<'EOF'
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
  - level: Metadata
    verbs: [patch, update]
    resources: [{group: antimatter.io, resources: [azurerootkeys/status]}]
  - level: None
EOF
  TMPDIR=$D start controlplane "$TARGET/controlplane" --bin-dir "$BIN" up --kubeconfig-out "$D/kubeconfig" \
    --audit-policy "$D/audit-policy.yaml" --audit-log "$D/logs/audit.log"
  wait_for controlplane 240 test -s "$D/kubeconfig"
  local kubeconfig=$D/kubeconfig pki
  pki=$(dirname "$(awk '/certificate-authority:/ {print $2; exit}' "$kubeconfig")")

  log "kube-controller-manager and kube-scheduler"
  start kube-controller-manager "$BIN/kube-controller-manager" --kubeconfig "$kubeconfig" \
    --bind-address 127.0.0.1 --secure-port "$kcm_port" --leader-elect=false \
    --root-ca-file "$pki/ca.crt" --service-account-private-key-file "$pki/sa.key" \
    --use-service-account-credentials=false
  start kube-scheduler "$BIN/kube-scheduler" --kubeconfig "$kubeconfig" \
    --bind-address 127.0.0.1 --secure-port "$sched_port" --leader-elect=false

  # Each node is a kubelet with its own containerd, named by its own loopback address: a kubelet
  # refuses a loopback --node-ip but takes an IP given as its hostname for the node's InternalIP
  # (nodestatus.NodeAddress), so host-network pods get that address as their pod IP and the nodes'
  # ports never meet. Without it the kubelet advertises the host's default-route address.
  cat >"$D/cni/10-loopback.conflist" <<'EOF'
{"cniVersion": "1.0.0", "name": "loopback", "plugins": [{"type": "loopback"}]}
EOF
  local kubectl=("$BIN/kubectl" --kubeconfig "$kubeconfig") node nodes=()
  for i in $(seq "$NODES"); do
    node=127.0.0.$((i + 1))
    nodes+=("$node")
    start_node "$i" "$node" "$pause_image" "$registry" "$kubeconfig" "$pki"
  done
  for node in "${nodes[@]}"; do
    wait_for "node $node Ready" 240 "${kubectl[@]}" wait --for condition=Ready "node/$node" --timeout 1s
  done
  wait_for "default ServiceAccount" 60 "${kubectl[@]}" -n default get serviceaccount default

  cat >"$D/env" <<EOF
export KUBECONFIG=$kubeconfig
export CLUSTER_REGISTRY=$registry
export CLUSTER_NODES="${nodes[*]}"
export CLUSTER_AUDIT_LOG=$D/logs/audit.log
export CLUSTER_API_HOST=127.0.0.1
export CLUSTER_API_PORT=$(sed -n 's#.*server: https://127.0.0.1:\([0-9]*\).*#\1#p' "$kubeconfig")
EOF
  log "nodes ${nodes[*]} Ready ($("$BIN/kubelet" --version)); environment in $D/env"
}

# Node I at address NODE: a containerd (CRI) in DIR/node-I with the pause image, and a kubelet.
start_node() {
  local i=$1 node=$2 pause_image=$3 registry=$4 kubeconfig=$5 pki=$6
  local n=$D/node-$i kubelet_port kubelet_healthz
  kubelet_port=$(free_port) kubelet_healthz=$(free_port)
  mkdir -p "$n"/{containerd,kubelet,pod-logs}
  log "node $node: containerd (CRI), pause image built from Kubernetes' pause.c"
  # restrict_oom_score_adj: this machine's root lacks CAP_SYS_RESOURCE, so lowering a pod's
  # oom_score_adj fails and kills every pod sandbox at creation. runc keeps its state per node (its
  # default, /run/containerd/runc, would be shared). The registry is plain HTTP on loopback, as a
  # mirror for itself.
  cat >"$n/containerd.toml" <<EOF
version = 2
root = "$n/containerd/root"
state = "$n/containerd/state"
[grpc]
  address = "$n/containerd.sock"
[ttrpc]
  address = "$n/containerd.sock.ttrpc"
[debug]
  level = "warn"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$pause_image"
  restrict_oom_score_adj = true
  stream_server_address = "$node"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "$CNI_BIN_DIR"
    conf_dir = "$D/cni"
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
    runtime_type = "io.containerd.runc.v2"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
      Root = "$n/runc"
  [plugins."io.containerd.grpc.v1.cri".registry.mirrors."$registry"]
    endpoint = ["http://$registry"]
EOF
  start "containerd-$i" containerd --config "$n/containerd.toml"
  wait_for "containerd-$i" 40 ctr --address "$n/containerd.sock" version
  build_pause "$pause_image"
  ctr --address "$n/containerd.sock" -n k8s.io images import "$D/pause/image.tar" >/dev/null
  ctr --address "$n/containerd.sock" -n k8s.io images check "name==$pause_image" | grep -q complete

  log "node $node: kubelet"
  cat >"$n/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $node
port: $kubelet_port
readOnlyPort: 0
healthzBindAddress: $node
healthzPort: $kubelet_healthz
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $pki/ca.crt}
authorization: {mode: Webhook}
containerRuntimeEndpoint: unix://$n/containerd.sock
# This machine: cgroup v1, the cgroupfs driver, no QoS cgroups or node allocatable enforcement.
failCgroupV1: false
cgroupDriver: cgroupfs
cgroupsPerQOS: false
enforceNodeAllocatable: []
failSwapOn: false
podLogsDir: $n/pod-logs
evictionHard: {memory.available: 100Mi, nodefs.available: 2%, imagefs.available: 2%}
imageGCHighThresholdPercent: 99
imageGCLowThresholdPercent: 98
EOF
  # -v=1 logs each failed probe with its output (the default logs none).
  start "kubelet-$i" "$BIN/kubelet" --config "$n/kubelet.yaml" --kubeconfig "$kubeconfig" \
    --root-dir "$n/kubelet" --cert-dir "$n/kubelet/pki" --hostname-override "$node" -v=1
}

# The pod sandbox image: registries are unreachable here, so Kubernetes' own pause.c (from the
# Kubernetes module the tools are built from) is compiled and packed by crane into DIR/pause, once.
build_pause() {
  local image=$1 k8s_src
  [ -s "$D/pause/image.tar" ] && return 0
  k8s_src=$(cd hack/tools/k8s && go list -m -f '{{.Dir}}' k8s.io/kubernetes)
  mkdir -p "$D/pause/rootfs"
  gcc -Os -static -o "$D/pause/rootfs/pause" "$k8s_src/build/pause/linux/pause.c"
  tar -C "$D/pause/rootfs" --owner 0 --group 0 -cf "$D/pause/layer.tar" pause
  "$BIN/crane" append --insecure --oci-empty-base -f "$D/pause/layer.tar" -t "$image-build" 2>/dev/null
  "$BIN/crane" mutate --insecure "$image-build" -t "$image" \
    --entrypoint /pause --user 65535:65535 --set-platform linux/amd64 2>/dev/null
  "$BIN/crane" pull --insecure "$image" "$D/pause/image.tar"
}

down() {
  [ -d "$D" ] || return 0
  D=$(cd "$D" && pwd)
  stop_named kubelet-{1..9} kube-scheduler kube-controller-manager
  # Kill every container's task so its shim exits, then each containerd.
  local sock ctr
  for sock in "$D"/node-*/containerd.sock; do
    [ -S "$sock" ] || continue
    ctr=(ctr --address "$sock" -n k8s.io)
    for task in $("${ctr[@]}" tasks ls -q 2>/dev/null); do
      "${ctr[@]}" tasks kill -s SIGKILL "$task" >/dev/null 2>&1 || true
    done
    sleep 1
    for task in $("${ctr[@]}" tasks ls -q 2>/dev/null); do "${ctr[@]}" tasks delete -f "$task" >/dev/null 2>&1 || true; done
  done
  stop_named containerd-{1..9} controlplane registry
  # Projected volumes, shm and container root filesystems left mounted under DIR, deepest first.
  findmnt -rn -o TARGET | grep "^$D/" | sort -r | while read -r mnt; do umount -l "$mnt" || true; done
  rm -rf "$D"
  log "stopped and removed $D"
}

stop_named() {
  local name pid n
  for name in "$@"; do
    while read -r pid n; do
      [ "$n" = "$name" ] || continue
      kill "$pid" 2>/dev/null || continue
      for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -9 "$pid" 2>/dev/null || true
    done <"$D/pids"
  done
}

"$cmd"
