#!/usr/bin/env bash
# `make image`: the static release binary as an OCI image, without Docker. crane (go-containerregistry)
# appends one layer to an empty base and sets what the Dockerfile sets: user 65532:65532, entrypoint
# ["/rootkey-operator", "run"], ports 8080 and 8081, the OCI labels. Besides the binary the layer
# holds what distroless/static gives the Dockerfile's image and the operator reads: the system CA
# roots, /etc/passwd and /etc/group naming the nonroot user, and nsswitch.conf (hosts from files
# first, so a pod's hostAliases resolve). No shell.
#   STATIC_BIN=… hack/image.sh
# Pushes to $CLUSTER_REGISTRY (a loopback registry; without one, a throwaway one is started), writes
# $IMAGE_DIR/rootkey-operator.tar, and imports it into containerd at $CONTAINERD_ADDRESS when set.
# Prints the pushed reference (by digest) last.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-$PWD/bin}
STATIC_BIN=${STATIC_BIN:?set STATIC_BIN to the static release binary (make static)}
IMAGE_DIR=${IMAGE_DIR:-$(dirname "$STATIC_BIN")/image}
VERSION=$(awk -F'"' '/^version *=/ {print $2; exit}' Cargo.toml)
REVISION=$(git rev-parse HEAD 2>/dev/null || echo unknown)
TAG=${IMAGE_TAG:-$VERSION}
crane() { "$BIN/crane" --insecure "$@"; }

rm -rf "$IMAGE_DIR" && mkdir -p "$IMAGE_DIR/rootfs/etc/ssl/certs"
if [ -z "${CLUSTER_REGISTRY:-}" ]; then
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  CLUSTER_REGISTRY=127.0.0.1:$port
  printf 'version: 0.1\nlog: {level: warn}\nstorage: {filesystem: {rootdirectory: %s}}\nhttp: {addr: %s}\n' \
    "$IMAGE_DIR/registry" "$CLUSTER_REGISTRY" >"$IMAGE_DIR/registry.yaml"
  OTEL_TRACES_EXPORTER=none "$BIN/registry" serve "$IMAGE_DIR/registry.yaml" >"$IMAGE_DIR/registry.log" 2>&1 &
  registry_pid=$!
  trap 'kill $registry_pid' EXIT
  for _ in $(seq 40); do curl -fsS "http://$CLUSTER_REGISTRY/v2/" >/dev/null 2>&1 && break; sleep 0.25; done
fi

root=$IMAGE_DIR/rootfs
install -m 0755 "$STATIC_BIN" "$root/rootkey-operator"
install -m 0644 /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"
printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' >"$root/etc/passwd"
printf 'root:x:0:\nnonroot:x:65532:\n' >"$root/etc/group"
printf 'hosts: files dns\n' >"$root/etc/nsswitch.conf"
# Reproducible layer: fixed owner, order and timestamps.
tar -C "$root" --sort=name --owner=0 --group=0 --numeric-owner --mtime=@0 -cf "$IMAGE_DIR/layer.tar" .

repo=$CLUSTER_REGISTRY/rootkey-operator
crane append --oci-empty-base --platform linux/amd64 -f "$IMAGE_DIR/layer.tar" -t "$repo:build" >/dev/null
crane mutate "$repo:build" -t "$repo:$TAG" \
  --user 65532:65532 --entrypoint /rootkey-operator,run --exposed-ports 8080/tcp,8081/tcp \
  --set-platform linux/amd64 \
  -l org.opencontainers.image.title=rootkey-operator \
  -l "org.opencontainers.image.description=Kubernetes operator that delegates an Azure Managed HSM key to Antimatter" \
  -l org.opencontainers.image.source=https://github.com/antimatterhq/rootkey-operator \
  -l org.opencontainers.image.version="$VERSION" -l org.opencontainers.image.revision="$REVISION" \
  -l org.opencontainers.image.licenses=Apache-2.0 -l org.opencontainers.image.vendor=Antimatter >/dev/null
crane delete "$repo:build" 2>/dev/null || true
crane config "$repo:$TAG" >"$IMAGE_DIR/config.json"
crane pull "$repo:$TAG" "$IMAGE_DIR/rootkey-operator.tar"
if [ -n "${CONTAINERD_ADDRESS:-}" ]; then
  ctr --address "$CONTAINERD_ADDRESS" -n k8s.io images import "$IMAGE_DIR/rootkey-operator.tar" >/dev/null
fi
echo "image: $IMAGE_DIR/rootkey-operator.tar, config $IMAGE_DIR/config.json" >&2
echo "$repo@$(crane digest "$repo:$TAG")"
