#!/usr/bin/env bash
# Builds HashiCorp's vault-csi-provider (the provider ours is a drop-in for) from its source
# tarball, to run side by side with ours in `make bench` and the compatibility checks. It is
# another project's code (BUSL-1.1; testing and benchmarking only): built from the tarball
# as published, never copied into this repository. Its Go module cannot be fetched through
# the proxy, hence the tarball.
#
#   vault-csi-provider               the release as published (its own go.mod/go.sum)
#   vault-csi-provider-unthrottled   the same source with one change made here at build time:
#                                    client-go's client-side rate limit (5 QPS, burst 10 by
#                                    default, no flag) raised right after rest.InClusterConfig()
#                                    in main.go. The stock provider GETs its HMAC key Secret
#                                    on every Mount through that limiter, which caps it near
#                                    5 Mounts/s per node; this variant exists only to compare
#                                    the two engines with that cap lifted. Report it as such.
#
# Usage: tests/peers/csi-provider/build.sh OUTDIR   (make peer-provider: OUTDIR = $VSP_TOOLS_DIR/peers)
#
# The tarball: VSP_PEER_PROVIDER_TARBALL (relative paths are taken from the repository root),
# default ../shared/peers/vault-csi-provider-v1.7.4.tar.gz. When it is absent this says so
# and exits 0: the benchmarks then run without the peer.
#
# Layout: OUTDIR/<name>/<version>/<name> with a .stamp of the inputs (the tarball's hash,
# this script, flags, Go version); a build whose stamp matches is skipped. Stable names:
# OUTDIR/bin/vault-csi-provider, OUTDIR/bin/vault-csi-provider-unthrottled.
set -euo pipefail

if [[ $# -ne 1 || -z "$1" ]]; then
    echo "usage: $0 OUTDIR" >&2
    exit 2
fi

here="$(cd "$(dirname "$0")" && pwd)"
self="$here/$(basename "$0")"
repo="$(cd "$here/../../.." && pwd)"
tools="${VSP_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/vault-secrets-provider}"   # per-user tool cache (Makefile)
log() { echo "peer-provider: $*" >&2; }
die() { echo "peer-provider: $*" >&2; exit 1; }

tarball="${VSP_PEER_PROVIDER_TARBALL:-../shared/peers/vault-csi-provider-v1.7.4.tar.gz}"
[[ "$tarball" == /* ]] || tarball="$repo/$tarball"
if [[ ! -f "$tarball" ]]; then
    log "no source tarball at $tarball: HashiCorp's provider is not built, and the"
    log "side-by-side benchmarks and compatibility checks will run without it."
    log "Set VSP_PEER_PROVIDER_TARBALL to a vault-csi-provider-vX.Y.Z.tar.gz release source tarball."
    exit 0
fi

mkdir -p "$1/bin"
out="$(cd "$1" && pwd)"
command -v go >/dev/null || die "go not found on PATH"

# Same Go cache layout as the Makefile and the other tool builds.
godir="$tools/go"
export GOPATH="${GOPATH:-$godir/path}"
export GOMODCACHE="${GOMODCACHE:-$godir/mod}"
export GOCACHE="${GOCACHE:-$godir/cache}"
export GOTOOLCHAIN=local   # the machine's Go; never download one
export CGO_ENABLED=0
export GOFLAGS="-mod=mod -trimpath -buildvcs=false"
# The machine is shared: lowest priority, one compile job by default.
jobs="${PEER_PROVIDER_BUILD_JOBS:-1}"
export GOMAXPROCS="${GOMAXPROCS:-$jobs}"
renice -n 19 -p $$ >/dev/null 2>&1 || true
ionice -c 2 -n 7 -p $$ >/dev/null 2>&1 || true

link() {  # link TARGET LINKNAME
    ln -sfn "$1" "$2.tmp" && mv -Tf "$2.tmp" "$2"
}

# The release's top directory names its version: vault-csi-provider-vX.Y.Z/.
top="$(tar -tzf "$tarball" | sed -n 1p)"   # reads it all: no SIGPIPE under pipefail
top="${top%%/*}"
[[ "$top" =~ ^vault-csi-provider-(v([0-9]+)\.([0-9]+)\.([0-9]+))$ ]] \
    || die "$tarball: expected a vault-csi-provider-vX.Y.Z/ source tree, found '$top/'"
version="${BASH_REMATCH[1]}"
major="${BASH_REMATCH[2]}" minor="${BASH_REMATCH[3]}" patch="${BASH_REMATCH[4]}"
tar_sum="$(sha256sum "$tarball" | cut -c1-64)"

# unthrottle SRCDIR: raise cfg.QPS/cfg.Burst right after the in-cluster config is read,
# before any client is made from it. Fails unless main.go has exactly the expected shape.
unthrottle() {
    local main="$1/main.go" at n
    [[ -f "$main" ]] || die "unthrottled variant: no main.go in the source tree"
    n="$(grep -c '^	cfg, err := rest\.InClusterConfig()$' "$main" || true)"
    [[ "$n" == 1 ]] || die "unthrottled variant: expected one 'cfg, err := rest.InClusterConfig()' in main.go, found $n"
    at="$(grep -n '^	cfg, err := rest\.InClusterConfig()$' "$main" | cut -d: -f1)"
    # The error check that follows it, then the first client built from cfg.
    [[ "$(sed -n "$((at + 1)),$((at + 4))p" "$main")" == $'\tif err != nil {\n\t\treturn err\n\t}\n\tclientset, err := kubernetes.NewForConfig(cfg)' ]] \
        || die "unthrottled variant: main.go around line $at is not 'cfg, err := rest.InClusterConfig()', its error check, 'kubernetes.NewForConfig(cfg)'"
    sed -i "$((at + 3))a\\
\\	// vault-secrets-provider benchmarks: client-go's client-side rate limit lifted (unthrottled variant).\\
\\	cfg.QPS, cfg.Burst = 100000, 100000" "$main"
    grep -q '^	cfg.QPS, cfg.Burst = 100000, 100000$' "$main" || die "unthrottled variant: the edit did not take"
    [[ "$(sed -n "$((at + 6))p" "$main")" == $'\tclientset, err := kubernetes.NewForConfig(cfg)' ]] \
        || die "unthrottled variant: the edit landed in the wrong place"
}

# build NAME VARIANT_VERSION [EDIT_FUNCTION]
build() {
    local name="$1" git_version="$2" edit="${3:-}"
    local dest="$out/$name/$version"
    local pkg=github.com/hashicorp/vault-csi-provider/internal/version
    local tree_state=clean
    [[ -z "$edit" ]] || tree_state=dirty
    # As its Makefile's ldflags-version.sh, with what a tarball has (no git commit, no build date).
    local ldflags="-s -w -X $pkg.Major=$major -X $pkg.Minor=$minor -X $pkg.Patch=$patch"
    ldflags+=" -X $pkg.GitVersion=$git_version -X $pkg.GitTreeState=$tree_state"
    ldflags+=" -X $pkg.GoVersion=$(go env GOVERSION) -X $pkg.Compiler=gc -X $pkg.Platform=$(go env GOOS)/$(go env GOARCH)"
    ldflags+=" -X $pkg.MinDriverVersion=v0.0.21"
    local stamp
    stamp="$( { cat "$self"; echo "$name $tar_sum $ldflags $GOFLAGS $(go env GOVERSION)"; } | sha256sum | cut -c1-16)"
    if [[ -x "$dest/$name" && -f "$dest/.stamp" && "$(cat "$dest/.stamp")" == "$stamp" ]]; then
        link "../$name/$version/$name" "$out/bin/$name"
        return 0
    fi
    log "building $name $version (once per version)"
    local start=$SECONDS work="$dest/src"
    mkdir -p "$dest"
    rm -rf "$work" && mkdir -p "$work"
    tar -xzf "$tarball" -C "$work" --strip-components=1
    [[ -z "$edit" ]] || "$edit" "$work"
    (cd "$work" && go build -p "$jobs" -ldflags "$ldflags" -o "$dest/$name.tmp" .)
    mv -f "$dest/$name.tmp" "$dest/$name"
    "$dest/$name" -version >/dev/null || die "the built $name does not run"
    echo "$stamp" >"$dest/.stamp"
    rm -rf "$work"
    link "../$name/$version/$name" "$out/bin/$name"
    log "built $name $version in $((SECONDS - start)) s ($(du -h "$dest/$name" | cut -f1))"
}

build vault-csi-provider "$version"
build vault-csi-provider-unthrottled "$version-unthrottled" unthrottle
