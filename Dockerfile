# syntax=docker/dockerfile:1
# rootkey-operator: a static (musl) binary on distroless/static, running as UID 65532.
#   docker build -t rootkey-operator:dev .
# Build args: VERSION (OCI label; keep it equal to the crate version), REVISION (git commit).

ARG RUST_VERSION=1.95

FROM rust:${RUST_VERSION}-bookworm AS builder
ARG TARGET=x86_64-unknown-linux-musl
RUN apt-get update \
 && apt-get install -y --no-install-recommends musl-tools=1.2.3-1 \
 && rm -rf /var/lib/apt/lists/* \
 && rustup target add "${TARGET}"
WORKDIR /src
# Dependencies first, for layer caching: a manifest-only build with stub sources.
COPY Cargo.toml Cargo.lock ./
COPY controlplane/Cargo.toml controlplane/Cargo.toml
COPY sandbox/Cargo.toml sandbox/Cargo.toml
RUN mkdir -p src controlplane/src sandbox/src \
 && echo 'fn main() {}' > src/main.rs && touch src/lib.rs \
 && echo 'fn main() {}' > controlplane/src/main.rs && touch controlplane/src/lib.rs \
 && echo 'fn main() {}' > sandbox/src/main.rs && touch sandbox/src/lib.rs \
 && cargo fetch --locked --target "${TARGET}"
COPY . .
RUN cargo build --release --locked --target "${TARGET}" --bin rootkey-operator \
 && cp "target/${TARGET}/release/rootkey-operator" /rootkey-operator

FROM gcr.io/distroless/static-debian12:nonroot
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="rootkey-operator" \
      org.opencontainers.image.description="Kubernetes operator that delegates an Azure Managed HSM key to Antimatter" \
      org.opencontainers.image.source="https://github.com/antimatterhq/rootkey-operator" \
      org.opencontainers.image.url="https://github.com/antimatterhq/rootkey-operator" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.vendor="Antimatter"
COPY --from=builder --chown=0:0 --chmod=0755 /rootkey-operator /rootkey-operator
USER 65532:65532
EXPOSE 8080 8081
ENTRYPOINT ["/rootkey-operator", "run"]
