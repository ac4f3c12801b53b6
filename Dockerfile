# syntax=docker/dockerfile:1
# The provider's image: one static (musl) binary on an empty base.
#
#   docker build -t vault-secrets-provider:0.1.0 .      (or: buildah bud, podman build)
#
# Offline (no registry for the build stage): `make image` builds the same final stage
# from a binary built on this machine (scripts/build-image.sh).

FROM rust:1-bookworm AS build
ARG TARGET=x86_64-unknown-linux-musl
RUN apt-get update \
 && apt-get install -y --no-install-recommends musl-tools cmake ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && rustup target add "$TARGET"
WORKDIR /src
COPY Cargo.toml Cargo.lock build.rs ./
COPY proto proto
COPY src src
# No system protoc needed: build.rs compiles the proto with protox.
RUN CC_x86_64_unknown_linux_musl=musl-gcc cargo build --release --locked --target "$TARGET" \
 && strip -o /vault-secrets-provider "target/$TARGET/release/vault-secrets-provider"

FROM scratch
# Public CAs for Vault's TLS certificate when no vaultCACertPath is given.
COPY --from=build /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY --from=build /vault-secrets-provider /vault-secrets-provider
# Root (uid 0), but without privileges: the only thing it writes is its socket (and
# the object-version key) in the node's root-owned hostPath
# /var/run/secrets-store-csi-providers, which the driver also runs as root to read.
# The DaemonSet drops every capability and mounts the root filesystem read-only.
USER 0:0
EXPOSE 8080
ENTRYPOINT ["/vault-secrets-provider"]
CMD ["serve"]
