#!/usr/bin/env bash
# Build driver-client against both Secrets Store CSI Driver lines:
#   OUTDIR/driver-client-v1.5  (driver v1.5.x, grpc-go v1.56.3: sends the
#                               socket path as HTTP/2 :authority)
#   OUTDIR/driver-client-v1.6  (driver v1.6.x: sends :authority localhost)
#
# Usage: tests/driver-client/build.sh OUTDIR
#
# The same two modules also pin the driver binary itself (their `tool` line):
# tests/kubernetes/build.sh builds it from them, so the end-to-end tests run the
# driver at exactly the version whose client these tests use.
#
# Go's caches live in the per-user tool cache ($VSP_TOOLS_DIR/go, outside the clone);
# override with GOCACHE / GOMODCACHE / GOPATH or DRIVER_CLIENT_GO_DIR.
# Modules come from the Go module proxy configured in the environment.
# Rebuilds are near-instant once the caches are warm.
set -euo pipefail

if [[ $# -ne 1 || -z "$1" ]]; then
    echo "usage: $0 OUTDIR" >&2
    exit 2
fi

here="$(cd "$(dirname "$0")" && pwd)"
tools="${VSP_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/vault-secrets-provider}"   # per-user tool cache (Makefile)
mkdir -p "$1"
outdir="$(cd "$1" && pwd)"

command -v go >/dev/null || { echo "$0: go not found on PATH" >&2; exit 1; }

godir="${DRIVER_CLIENT_GO_DIR:-$tools/go}"
mkdir -p "$godir"
godir="$(cd "$godir" && pwd)"
# Same layout as the top-level Makefile, so both share one cache.
export GOPATH="${GOPATH:-$godir/path}"
export GOMODCACHE="${GOMODCACHE:-$godir/mod}"
export GOCACHE="${GOCACHE:-$godir/cache}"
# Use the machine's Go; never download a toolchain.
export GOTOOLCHAIN="${GOTOOLCHAIN:-local}"
export CGO_ENABLED=0
# go.sum is committed: build exactly what go.mod/go.sum pin, fail on drift.
export GOFLAGS="-mod=readonly -trimpath -buildvcs=false"

for v in v1.5 v1.6; do
    (cd "$here/$v" && go build -o "$outdir/driver-client-$v" .)
done

# The pin that matters: the v1.5 build must link grpc-go v1.56.3.
grpc15="$(cd "$here/v1.5" && go list -m -f '{{.Version}}' google.golang.org/grpc)"
if [[ "$grpc15" != "v1.56.3" ]]; then
    echo "$0: v1.5 build resolved google.golang.org/grpc $grpc15, expected v1.56.3" >&2
    exit 1
fi
