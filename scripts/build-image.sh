#!/usr/bin/env bash
# Builds the provider's image without a registry and checks it:
#
#   scripts/build-image.sh [TAG]        (make image; TAG default vault-secrets-provider:<version>)
#
# The Dockerfile's build stage needs the `rust` image from a registry; this script
# builds the same static musl binary on this machine instead and assembles the
# Dockerfile's final stage from it with buildah (FROM scratch: CA bundle + binary,
# uid 0, entrypoint, `serve`). Then it runs `vault-secrets-provider --version` from
# the image (buildah run, chroot isolation) and fails unless it prints this crate's
# version. Needs buildah, the Rust target x86_64-unknown-linux-musl and musl-gcc
# (Debian: apt-get install buildah musl-tools; rustup target add x86_64-unknown-linux-musl).
# Image storage stays in .tools/containers (vfs driver: no overlay mounts needed);
# `buildah push` it from there to a registry or to `oci-archive:`/`docker-archive:`.
set -euo pipefail

repo="$(cd "$(dirname "$0")/.." && pwd)"
cd "$repo"
target=x86_64-unknown-linux-musl
version="$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)"
tag="${1:-vault-secrets-provider:$version}"
log() { echo "build-image: $*" >&2; }

for tool in buildah musl-gcc; do
    command -v "$tool" >/dev/null || { log "$tool not found (apt-get install buildah musl-tools)"; exit 1; }
done

CC_x86_64_unknown_linux_musl=musl-gcc cargo build --release --locked --target "$target"
bin="target/$target/release/vault-secrets-provider"
if ! file "$bin" | grep -q 'static'; then
    log "$bin is not statically linked: $(file "$bin")"
    exit 1
fi

# Symbols are for debugging here, not for every node's image.
stripped="$(mktemp)"
trap 'rm -f "$stripped"' EXIT
strip -o "$stripped" "$bin"
stripped_size="$(stat -c %s "$stripped")"

b=(buildah --root "$repo/.tools/containers/storage" --runroot "$repo/.tools/containers/run"
   --storage-driver vfs)
ctr="$("${b[@]}" from scratch)"
trap 'rm -f "$stripped"; "${b[@]}" rm "$ctr" >/dev/null 2>&1 || true' EXIT
"${b[@]}" copy --chmod 0644 "$ctr" /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt >/dev/null
"${b[@]}" copy --chmod 0755 "$ctr" "$stripped" /vault-secrets-provider >/dev/null
"${b[@]}" config --user 0:0 --port 8080 \
    --entrypoint '["/vault-secrets-provider"]' --cmd serve \
    --label "org.opencontainers.image.version=$version" "$ctr"
"${b[@]}" commit --quiet --rm "$ctr" "$tag" >/dev/null
rm -f "$stripped"
trap - EXIT

# The check: the binary runs from the image's filesystem (buildah run with chroot
# isolation: no OCI runtime or cgroup setup needed).
check="$("${b[@]}" from "$tag")"
trap '"${b[@]}" rm "$check" >/dev/null 2>&1 || true' EXIT
out="$("${b[@]}" run --isolation chroot "$check" -- /vault-secrets-provider --version)"
if [[ "$out" != "vault-secrets-provider $version" ]]; then
    log "unexpected --version from the image: $out"
    exit 1
fi
log "$tag: '$out' from the image; $("${b[@]}" images --format '{{.Size}}' "$tag") (binary: $stripped_size bytes stripped)"
