#!/usr/bin/env bash
# Builds the install tools the manifest tests run, from their Go source modules
# (fetched through the Go module proxy configured in the environment):
#
#   helm        helm.sh/helm/v3/cmd/helm              pinned in tests/install-tools/helm/go.mod
#   kustomize   sigs.k8s.io/kustomize/kustomize/v5    pinned in tests/install-tools/kustomize/go.mod
#
# One module each, so neither's dependency versions move the other's (both use
# k8s.io and kustomize/kyaml libraries). The version strings the release builds
# stamp in are set with the same -X flags as upstream's Makefiles, so `helm version`,
# `kustomize version` and helm's default Kubernetes version for lint/template match
# a release binary of that version.
#
# Usage: tests/install-tools/build.sh OUTDIR   (make install-tools: OUTDIR = $VSP_TOOLS_DIR/install-tools)
#
# Layout: OUTDIR/<name>/<version>/ holds each build, with a stamp of its inputs (go.mod,
# go.sum, flags, Go version); a build whose stamp matches is skipped. Stable names for
# the tests: OUTDIR/bin/helm, OUTDIR/bin/kustomize.
set -euo pipefail

if [[ $# -ne 1 || -z "$1" ]]; then
    echo "usage: $0 OUTDIR" >&2
    exit 2
fi

here="$(cd "$(dirname "$0")" && pwd)"
tools="${VSP_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/vault-secrets-provider}"   # per-user tool cache (Makefile)
mkdir -p "$1/bin"
out="$(cd "$1" && pwd)"

command -v go >/dev/null || { echo "$0: go not found on PATH" >&2; exit 1; }
log() { echo "install-tools: $*" >&2; }

# Same Go cache layout as the Makefile and tests/kubernetes/build.sh.
godir="$tools/go"
export GOPATH="${GOPATH:-$godir/path}"
export GOMODCACHE="${GOMODCACHE:-$godir/mod}"
export GOCACHE="${GOCACHE:-$godir/cache}"
export GOTOOLCHAIN="${GOTOOLCHAIN:-local}"   # the machine's Go; never download one
export CGO_ENABLED=0
export GOFLAGS="-mod=readonly -trimpath -buildvcs=false"   # exactly what go.mod/go.sum pin
# The machine is shared: at most two compile jobs, two threads each.
parallel="${INSTALL_TOOLS_BUILD_JOBS:-2}"
export GOMAXPROCS="${GOMAXPROCS:-2}"

module_version() {  # module_version MODDIR MODULE
    (cd "$1" && go list -m -f '{{.Version}}' "$2")
}

# build NAME VERSION MODDIR PACKAGE LDFLAGS
build() {
    local name="$1" version="$2" moddir="$3" pkg="$4" ldflags="$5"
    local dest="$out/$name/$version"
    local stamp
    stamp="$( { cat "$moddir/go.mod" "$moddir/go.sum"; echo "$ldflags $(go env GOVERSION)"; } \
        | sha256sum | cut -c1-16)"
    if [[ -x "$dest/$name" && -f "$dest/.stamp" && "$(cat "$dest/.stamp")" == "$stamp" ]]; then
        return 0
    fi
    log "building $name $version (once per version)"
    mkdir -p "$dest"
    local start=$SECONDS
    (cd "$moddir" && go build -p "$parallel" -ldflags "$ldflags" -o "$dest/$name.tmp" "$pkg")
    mv -f "$dest/$name.tmp" "$dest/$name"
    echo "$stamp" >"$dest/.stamp"
    log "built $name $version in $((SECONDS - start)) s"
}

link() {  # link TARGET LINKNAME
    ln -sfn "$1" "$2.tmp" && mv -Tf "$2.tmp" "$2"
}

# --- helm ----------------------------------------------------------------------------------
helm_mod="$here/helm"
helm_version="$(module_version "$helm_mod" helm.sh/helm/v3)"
# As helm's Makefile: the Kubernetes version helm assumes without a cluster (lint, template)
# is that of the client-go it is built with, 0.x -> 1.x.
client_go="$(module_version "$helm_mod" k8s.io/client-go)"
k8s_minor="${client_go#v0.}"; k8s_minor="${k8s_minor%%.*}"
helm_ldflags="-s -w -X helm.sh/helm/v3/internal/version.version=$helm_version"
helm_ldflags+=" -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
for pkg in helm.sh/helm/v3/pkg/lint/rules helm.sh/helm/v3/pkg/chartutil; do
    helm_ldflags+=" -X $pkg.k8sVersionMajor=1 -X $pkg.k8sVersionMinor=$k8s_minor"
done
build helm "$helm_version" "$helm_mod" helm.sh/helm/v3/cmd/helm "$helm_ldflags"
link "../helm/$helm_version/helm" "$out/bin/helm"

# --- kustomize -----------------------------------------------------------------------------
kustomize_mod="$here/kustomize"
kustomize_version="$(module_version "$kustomize_mod" sigs.k8s.io/kustomize/kustomize/v5)"
kustomize_ldflags="-s -w -X sigs.k8s.io/kustomize/api/provenance.version=kustomize/$kustomize_version"
build kustomize "$kustomize_version" "$kustomize_mod" sigs.k8s.io/kustomize/kustomize/v5 "$kustomize_ldflags"
link "../kustomize/$kustomize_version/kustomize" "$out/bin/kustomize"
