# rootkey-operator — every entry point the README, CI and developers use.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

# Heavy builds live outside the clone, keyed by version, so fresh clones on a warm machine reuse them.
CACHE_DIR ?= $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/rootkey-operator
K8S_VERSION := $(shell awk '$$1=="k8s.io/kubernetes" {print $$2; exit} $$2=="k8s.io/kubernetes" {print $$3; exit}' hack/tools/k8s/go.mod)
HELM_VERSION := $(shell awk '$$1=="helm.sh/helm/v3" {print $$2; exit} $$2=="helm.sh/helm/v3" {print $$3; exit}' hack/tools/helm/go.mod)
OCI_TOOLS := $(CACHE_DIR)/tools/oci-$(shell sha256sum hack/tools/oci/go.sum | cut -c1-12)
K8S_TOOLS := $(CACHE_DIR)/tools/k8s-$(K8S_VERSION)-$(shell sha256sum hack/tools/k8s/go.sum | cut -c1-12)
HELM_TOOLS := $(CACHE_DIR)/tools/helm-$(HELM_VERSION)-$(shell sha256sum hack/tools/helm/go.sum | cut -c1-12)
PROMETHEUS_VERSION := $(shell awk '$$1=="github.com/prometheus/prometheus" {print $$2; exit} $$2=="github.com/prometheus/prometheus" {print $$3; exit}' hack/tools/prometheus/go.mod)
KSTATUS_VERSION := $(shell awk '$$1=="sigs.k8s.io/cli-utils" {print $$2; exit} $$2=="sigs.k8s.io/cli-utils" {print $$3; exit}' hack/tools/kstatus/go.mod)
# These two also build programs of their own: their sources are part of the hash.
PROMETHEUS_TOOLS := $(CACHE_DIR)/tools/prometheus-$(PROMETHEUS_VERSION)-$(shell cat hack/tools/prometheus/go.sum hack/tools/prometheus/cmd/*/*.go | sha256sum | cut -c1-12)
KSTATUS_TOOLS := $(CACHE_DIR)/tools/kstatus-$(KSTATUS_VERSION)-$(shell cat hack/tools/kstatus/go.sum hack/tools/kstatus/cmd/*/*.go | sha256sum | cut -c1-12)
PY_REQUIREMENTS := $(wildcard tests/*/requirements.txt) bench/requirements.txt
VENV := $(CACHE_DIR)/venv-$(shell cat $(PY_REQUIREMENTS) | sha256sum | cut -c1-12)
CARGO_TOOLS := $(CACHE_DIR)/cargo-tools
# Tools build in their own target directory: the project's is locked while tests run.
CARGO_INSTALL := CARGO_TARGET_DIR=$(CARGO_TOOLS)/target cargo install --locked
CARGO_TARGET_DIR ?= $(CURDIR)/target
export CARGO_TARGET_DIR
BIN := $(CURDIR)/bin
CONTROLPLANE := $(CARGO_TARGET_DIR)/debug/controlplane

.PHONY: help
help: ## List the targets
	@grep -hE '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

.PHONY: tools
tools: $(K8S_TOOLS)/.done $(HELM_TOOLS)/.done $(OCI_TOOLS)/.done $(PROMETHEUS_TOOLS)/.done $(KSTATUS_TOOLS)/.done host-deps ## Build the Kubernetes binaries, etcd, helm, crane, registry, promtool and kstatus (cached) into bin/
	@mkdir -p $(BIN)
	@for t in $(K8S_CMDS) etcd; do ln -sfn $(K8S_TOOLS)/$$t $(BIN)/$$t; done
	@ln -sfn $(HELM_TOOLS)/helm $(BIN)/helm
	@for t in crane registry; do ln -sfn $(OCI_TOOLS)/$$t $(BIN)/$$t; done
	@for t in promtool promql-selectors; do ln -sfn $(PROMETHEUS_TOOLS)/$$t $(BIN)/$$t; done
	@ln -sfn $(KSTATUS_TOOLS)/kstatus $(BIN)/kstatus
	@echo "tools: Kubernetes $(K8S_VERSION), helm $(HELM_VERSION), Prometheus $(PROMETHEUS_VERSION), cli-utils $(KSTATUS_VERSION) in $(BIN)"

# Content-addressed (the directory name carries the go.sum hash): no mtime prerequisites, so a fresh
# clone reuses the cache.
# Without the version in ldflags every component reports v0.0.0-master, and the kubelet's node
# version would not match the API server's.
K8S_LDFLAGS := -s $(addprefix -X k8s.io/component-base/version.,gitVersion=$(K8S_VERSION) gitMajor=$(word 1,$(subst ., ,$(K8S_VERSION:v%=%))) gitMinor=$(word 2,$(subst ., ,$(K8S_VERSION))) gitTreeState=clean)
K8S_CMDS := kube-apiserver kube-controller-manager kube-scheduler kubelet kubectl

$(K8S_TOOLS)/.done:
	@echo "building $(K8S_CMDS) and etcd $(K8S_VERSION) from Go modules (first time only: several minutes)"
	@rm -rf $(K8S_TOOLS).tmp && mkdir -p $(K8S_TOOLS).tmp
	cd hack/tools/k8s && go build -trimpath -ldflags='$(K8S_LDFLAGS)' -o $(K8S_TOOLS).tmp/ $(addprefix k8s.io/kubernetes/cmd/,$(K8S_CMDS)) ./cmd/etcd
	@touch $(K8S_TOOLS).tmp/.done && rm -rf $(K8S_TOOLS) && mv $(K8S_TOOLS).tmp $(K8S_TOOLS)

$(HELM_TOOLS)/.done:
	@echo "building helm $(HELM_VERSION) from its Go module (first time only)"
	@rm -rf $(HELM_TOOLS).tmp && mkdir -p $(HELM_TOOLS).tmp
	cd hack/tools/helm && go build -trimpath -ldflags=-s -o $(HELM_TOOLS).tmp/ helm.sh/helm/v3/cmd/helm
	@touch $(HELM_TOOLS).tmp/.done && rm -rf $(HELM_TOOLS) && mv $(HELM_TOOLS).tmp $(HELM_TOOLS)

$(OCI_TOOLS)/.done:
	@echo "building crane and the distribution registry from their Go modules (first time only)"
	@rm -rf $(OCI_TOOLS).tmp && mkdir -p $(OCI_TOOLS).tmp
	cd hack/tools/oci && go build -trimpath -ldflags=-s -o $(OCI_TOOLS).tmp/ github.com/google/go-containerregistry/cmd/crane github.com/distribution/distribution/v3/cmd/registry
	@touch $(OCI_TOOLS).tmp/.done && rm -rf $(OCI_TOOLS) && mv $(OCI_TOOLS).tmp $(OCI_TOOLS)

$(PROMETHEUS_TOOLS)/.done:
	@echo "building promtool and promql-selectors from Prometheus $(PROMETHEUS_VERSION)'s Go module (first time only)"
	@rm -rf $(PROMETHEUS_TOOLS).tmp && mkdir -p $(PROMETHEUS_TOOLS).tmp
	cd hack/tools/prometheus && go build -trimpath -ldflags=-s -o $(PROMETHEUS_TOOLS).tmp/ github.com/prometheus/prometheus/cmd/promtool ./cmd/promql-selectors
	@touch $(PROMETHEUS_TOOLS).tmp/.done && rm -rf $(PROMETHEUS_TOOLS) && mv $(PROMETHEUS_TOOLS).tmp $(PROMETHEUS_TOOLS)

$(KSTATUS_TOOLS)/.done:
	@echo "building kstatus from sigs.k8s.io/cli-utils $(KSTATUS_VERSION) (first time only)"
	@rm -rf $(KSTATUS_TOOLS).tmp && mkdir -p $(KSTATUS_TOOLS).tmp
	cd hack/tools/kstatus && go build -trimpath -ldflags=-s -o $(KSTATUS_TOOLS).tmp/ ./cmd/kstatus
	@touch $(KSTATUS_TOOLS).tmp/.done && rm -rf $(KSTATUS_TOOLS) && mv $(KSTATUS_TOOLS).tmp $(KSTATUS_TOOLS)

# The sandbox serves every Azure host under *.sandbox.localhost; glibc resolves *.localhost to
# loopback through nss-myhostname.
.PHONY: host-deps
host-deps:
	@getent hosts probe.sandbox.localhost >/dev/null || { \
	  echo "installing libnss-myhostname so *.localhost resolves to loopback"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libnss-myhostname >/dev/null; \
	  getent hosts probe.sandbox.localhost >/dev/null; }

# Every generated file is checked in; `make verify` (CI) fails when one differs from what `make
# generate` writes. A new generator: one line in generate's recipe, and its output in GENERATED.
CRD := crds/antimatter.io_azurerootkeys.yaml
GENERATED := $(CRD) charts/rootkey-operator/files/$(notdir $(CRD)) docs/reference.md

.PHONY: generate
generate: ## Regenerate every generated file (the CRD from the Rust types, the chart's copy, the reference's tables)
	cargo run -q --bin rootkey-operator -- crd > $(CRD)
	cp $(CRD) charts/rootkey-operator/files/
	cargo run -q --bin rootkey-operator -- reference-tables docs/reference.md

.PHONY: crds
crds: generate

.PHONY: verify
verify: generate ## Fail when a checked-in generated file is stale or not committed
	@stale=$$( { git diff --name-only -- $(GENERATED); git ls-files --others --exclude-standard -- $(GENERATED); } | sort -u); \
	if [ -n "$$stale" ]; then \
	  git --no-pager diff --stat -- $(GENERATED); \
	  for f in $$stale; do echo "verify: $$f is stale or not committed: run \`make generate\` and commit it" >&2; done; \
	  exit 1; \
	fi; \
	echo "verify: every generated file is up to date"

.PHONY: build
build: ## Build all Rust binaries (debug)
	cargo build --workspace --bins

$(VENV)/.done:
	@echo "creating the Python test environment $(VENV)"
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q --disable-pip-version-check $(addprefix -r ,$(PY_REQUIREMENTS))
	@touch $@

.PHONY: venv
venv: $(VENV)/.done

.PHONY: test
test: tools build venv ## Run every test against a fresh local control plane
	cargo build --workspace --tests
	$(CONTROLPLANE) --bin-dir $(BIN) run -- $(MAKE) --no-print-directory test-suites

# Runs inside `controlplane run` (KUBECONFIG set); every suite runs even when an earlier one fails.
.PHONY: test-suites
test-suites:
	@rc=0; \
	cargo test --workspace --no-fail-fast || rc=1; \
	$(VENV)/bin/python -m pytest -q tests/packaging || rc=1; \
	ROOTKEY_SANDBOX_BIN=$(CARGO_TARGET_DIR)/debug/rootkey-sandbox $(VENV)/bin/python -m pytest -q tests/conformance || rc=1; \
	exit $$rc

.PHONY: demo
demo: tools build ## Local control plane + sandbox + operator + a sample key, until Ready (Ctrl-C stops)
	BIN=$(BIN) bash hack/demo.sh

STATIC_TARGET := x86_64-unknown-linux-gnu
STATIC_BIN := $(CARGO_TARGET_DIR)/$(STATIC_TARGET)/release/rootkey-operator

.PHONY: static
static: ## Build the operator as a static executable and check it has no dynamic dependencies
	RUSTFLAGS="-C target-feature=+crt-static" cargo build --release --target $(STATIC_TARGET) --bin rootkey-operator
	@if readelf -d $(STATIC_BIN) | grep -q NEEDED; then echo "$(STATIC_BIN) is dynamically linked" >&2; exit 1; fi
	@$(STATIC_BIN) version >/dev/null
	@echo "static binary: $(STATIC_BIN), $$(stat -c %s $(STATIC_BIN)) bytes, no dynamic dependencies"

.PHONY: bench
bench: tools venv static ## Benchmark against Azure's limits and a one-key-at-a-time script (bench/results/)
	python3 bench/gen_world.py
	BENCH_PEER_PYTHON=$(VENV)/bin/python $(VENV)/bin/python bench/run.py --static-bin $(STATIC_BIN)

.PHONY: bench-quick
bench-quick: tools venv static ## Short benchmark (N <= 100, 20 ms; numbers not judged)
	python3 bench/gen_world.py
	BENCH_PEER_PYTHON=$(VENV)/bin/python $(VENV)/bin/python bench/run.py --quick --static-bin $(STATIC_BIN)

.PHONY: soak
soak: tools build ## Long fault/restart/hostile-input scenarios; prints and writes bench/soak-results.md
	cargo build --workspace --tests
	$(CONTROLPLANE) --bin-dir $(BIN) run -- cargo test --test soak -- --ignored --test-threads 1 --nocapture
	$(MAKE) --no-print-directory fuzz

FUZZ_SECONDS ?= 20
FUZZ_TARGETS := key_url hsm_url key_bundle role_assignment jwt_expiry antimatter_responses

$(CARGO_TOOLS)/bin/cargo-fuzz:
	$(CARGO_INSTALL) cargo-fuzz --root $(CARGO_TOOLS)

.PHONY: fuzz
fuzz: $(CARGO_TOOLS)/bin/cargo-fuzz ## cargo fuzz: each parser target for FUZZ_SECONDS (needs a nightly toolchain)
	@for t in $(FUZZ_TARGETS); do \
	  echo "fuzzing $$t for $(FUZZ_SECONDS) s"; \
	  PATH=$(CARGO_TOOLS)/bin:$$PATH cargo +nightly fuzz run $$t -- -max_total_time=$(FUZZ_SECONDS) -rss_limit_mb=2048 2>&1 | tail -2 || exit 1; \
	done

$(CARGO_TOOLS)/bin/cargo-deny:
	$(CARGO_INSTALL) cargo-deny --root $(CARGO_TOOLS)

.PHONY: deny
deny: $(CARGO_TOOLS)/bin/cargo-deny ## Licences, bans and sources (advisories: make audit)
	$(CARGO_TOOLS)/bin/cargo-deny check licenses bans sources

$(CARGO_TOOLS)/bin/cargo-audit:
	$(CARGO_INSTALL) cargo-audit --root $(CARGO_TOOLS)

# Both checks read a snapshot of the RustSec advisory database beside the clone and never fetch it.
# cargo audit reads the directory as it is. cargo-deny wants a git checkout named after the
# database's URL under its db-path (deny.toml: $ROOTKEY_ADVISORY_DBS), so the recipe commits a copy
# into a throwaway repository dated by the snapshot's newest advisory: deny.toml's
# maximum-db-staleness measures that date. Crates come from the package registry as for any build.
# Both tools run; either one's finding fails the target.
ADVISORY_DB ?= ../shared/advisory-db
# cargo-deny's directory for its default database: the URL's last segment and a hash of the URL.
DENY_DB_NAME := advisory-db-3157b0e258782691

.PHONY: audit
audit: $(CARGO_TOOLS)/bin/cargo-deny $(CARGO_TOOLS)/bin/cargo-audit ## Known vulnerabilities: cargo deny advisories + cargo audit, offline against ADVISORY_DB
	@test -d $(ADVISORY_DB)/crates || { echo "audit: no RustSec advisory database at $(ADVISORY_DB) (set ADVISORY_DB)" >&2; exit 1; }
	cargo fetch --locked
	@dbs=$$(mktemp -d); trap 'rm -rf "$$dbs"' EXIT; repo=$$dbs/$(DENY_DB_NAME); \
	newest=$$(grep -rhoE '^date = "[0-9]{4}-[0-9]{2}-[0-9]{2}"' $(ADVISORY_DB)/crates | cut -d'"' -f2 | sort | tail -1); \
	echo "audit: advisory database $(ADVISORY_DB), newest advisory $$newest ($$(( ($$(date +%s) - $$(date -d $$newest +%s)) / 86400 )) days ago)"; \
	cp -R $(ADVISORY_DB) $$repo && chmod -R u+w $$repo; \
	git -C $$repo -c init.defaultBranch=main init -q && git -C $$repo add -A; \
	GIT_AUTHOR_DATE=$${newest}T00:00:00Z GIT_COMMITTER_DATE=$${newest}T00:00:00Z git -C $$repo \
	  -c user.name=make-audit -c user.email=make-audit@invalid -c commit.gpgsign=false commit -q --no-verify -m snapshot; \
	touch -d $${newest}T00:00:00Z $$repo/.git/HEAD; \
	rc=0; ROOTKEY_ADVISORY_DBS=$$dbs $(CARGO_TOOLS)/bin/cargo-deny --offline check advisories || rc=1; \
	$(CARGO_TOOLS)/bin/cargo-audit audit --db $(ADVISORY_DB) --no-fetch --deny warnings || rc=1; \
	exit $$rc

$(CARGO_TOOLS)/bin/cargo-cyclonedx:
	$(CARGO_INSTALL) cargo-cyclonedx --root $(CARGO_TOOLS)

.PHONY: release-artifacts
release-artifacts: $(CARGO_TOOLS)/bin/cargo-cyclonedx ## Release binaries and a CycloneDX SBOM
	cargo build --release --workspace --bins
	PATH=$(CARGO_TOOLS)/bin:$$PATH cargo cyclonedx --format json
	@mkdir -p dist && mv -f *.cdx.json */*.cdx.json dist/
	cp $(CARGO_TARGET_DIR)/release/rootkey-operator $(CARGO_TARGET_DIR)/release/rootkey-sandbox dist/
	@echo "release artifacts and CycloneDX SBOMs in dist/"

.PHONY: lint
lint: venv ## rustfmt, clippy, rustdoc (no warnings), and ruff (lint and format) on every Python file
	cargo fmt --all --check
	cargo clippy --workspace --all-targets -- -D warnings
	RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --quiet
	$(VENV)/bin/ruff check
	$(VENV)/bin/ruff format --check

# The node side of `make e2e-cluster`: Debian's containerd (1.6) and runc, the CNI loopback plugin,
# and gcc with a static libc for the pause binary (README, "End-to-end in a two-node cluster").
NODE_DEPS := containerd runc containernetworking-plugins gcc libc6-dev

.PHONY: node-deps
node-deps:
	@dpkg-query -W $(NODE_DEPS) >/dev/null 2>&1 || { \
	  echo "installing $(NODE_DEPS)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(NODE_DEPS) >/dev/null; }

IMAGE_DIR := $(dir $(STATIC_BIN))image

.PHONY: image
image: tools static venv ## The static binary as an OCI image (crane, no Docker) beside it in image/; imported into containerd at $CONTAINERD_ADDRESS if set
	STATIC_BIN=$(STATIC_BIN) IMAGE_DIR=$(IMAGE_DIR) BIN=$(BIN) bash hack/image.sh
	ROOTKEY_IMAGE_DIR=$(IMAGE_DIR) $(VENV)/bin/python -m pytest -q tests/packaging/test_image.py

.PHONY: e2e-cluster
e2e-cluster: tools node-deps build static venv ## Two-node cluster on loopback: image, OCI registry, helm install from oci:// (two replicas), the sample to Ready, failover, upgrade, reinstall
	STATIC_BIN=$(STATIC_BIN) BIN=$(BIN) VENV=$(VENV) bash hack/e2e-cluster.sh
