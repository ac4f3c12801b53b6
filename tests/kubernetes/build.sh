#!/usr/bin/env bash
# Builds everything the Kubernetes end-to-end tests run, from Go source modules
# (fetched through the Go module proxy configured in the environment):
#
#   kube-apiserver    k8s.io/kubernetes            } pinned in tests/kubernetes/go.mod
#   etcd              go.etcd.io/etcd/server/v3    }
#   kubelet-sim       ./cmd/kubelet-sim (plays kubelet's CSI part, client-go and CSI
#                     spec at kubelet's versions), same module
#   cluster-pki       ./cmd/cluster-pki (certs and keys for one test cluster)
#   secrets-store-csi-driver v1.5.x and v1.6.x, pinned in tests/driver-client/v1.5 and
#                     v1.6 (the same modules the driver's provider client is built from,
#                     so binary and client are always the same driver version); the
#                     module's deploy/ manifests are linked next to each binary
#
# Usage: tests/kubernetes/build.sh OUTDIR        (make k8s-tools: OUTDIR = $VSP_TOOLS_DIR/k8s)
#
# Layout: OUTDIR/<name>/<version>/ holds each build, with a stamp of its inputs (go.mod,
# go.sum, our sources, flags); a build whose stamp matches is skipped, so only the first
# run pays (kube-apiserver takes minutes on two cores). Stable names for the tests:
#   OUTDIR/bin/{kube-apiserver,etcd,kubelet-sim,cluster-pki}
#   OUTDIR/secrets-store-csi-driver-v1.5, -v1.6  (directories: binary + deploy/)
set -euo pipefail

if [[ $# -ne 1 || -z "$1" ]]; then
    echo "usage: $0 OUTDIR" >&2
    exit 2
fi

here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
tools="${VSP_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/vault-secrets-provider}"   # per-user tool cache (Makefile)
mkdir -p "$1/bin"
out="$(cd "$1" && pwd)"

command -v go >/dev/null || { echo "$0: go not found on PATH" >&2; exit 1; }
log() { echo "k8s-tools: $*" >&2; }

# Same Go cache layout as the Makefile and tests/driver-client/build.sh.
godir="$tools/go"
export GOPATH="${GOPATH:-$godir/path}"
export GOMODCACHE="${GOMODCACHE:-$godir/mod}"
export GOCACHE="${GOCACHE:-$godir/cache}"
export GOTOOLCHAIN="${GOTOOLCHAIN:-local}"   # the machine's Go; never download one
export CGO_ENABLED=0
export GOFLAGS="-mod=readonly -trimpath -buildvcs=false"   # exactly what go.mod/go.sum pin
# The machine is shared: two compile jobs, two threads each, at most.
parallel="${K8S_TOOLS_BUILD_JOBS:-2}"
export GOMAXPROCS="${GOMAXPROCS:-2}"

module_version() {  # module_version MODDIR MODULE
    (cd "$1" && go list -m -f '{{.Version}}' "$2")
}

stamp_of() {  # stamp_of FILE...: hash of the build inputs
    cat "$@" | sha256sum | cut -c1-16
}

# build NAME VERSION MODDIR PACKAGE STAMP_INPUTS... -- LDFLAGS
build() {
    local name="$1" version="$2" moddir="$3" pkg="$4"; shift 4
    local inputs=() ldflags=""
    while [[ $# -gt 0 ]]; do
        if [[ "$1" == "--" ]]; then ldflags="${2:-}"; break; fi
        inputs+=("$1"); shift
    done
    local dest="$out/$name/$version"
    local stamp
    stamp="$( { stamp_of "${inputs[@]}"; echo "$ldflags $(go env GOVERSION)"; } | sha256sum | cut -c1-16)"
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

# --- control plane and kubelet side: one module, Kubernetes v1.36 -----------------------
kube_mod="$here"
kube_version="$(module_version "$kube_mod" k8s.io/kubernetes)"
etcd_version="$(module_version "$kube_mod" go.etcd.io/etcd/server/v3)"
kube_inputs=("$kube_mod/go.mod" "$kube_mod/go.sum")
minor="${kube_version#v1.}"; minor="${minor%%.*}"
kube_ldflags=""
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    kube_ldflags+=" -X $pkg.gitVersion=$kube_version -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor -X $pkg.gitTreeState=clean"
done

build etcd "$etcd_version" "$kube_mod" go.etcd.io/etcd/server/v3 "${kube_inputs[@]}"
build kube-apiserver "$kube_version" "$kube_mod" k8s.io/kubernetes/cmd/kube-apiserver "${kube_inputs[@]}" -- "$kube_ldflags"
build kubelet-sim "$kube_version" "$kube_mod" ./cmd/kubelet-sim "${kube_inputs[@]}" "$kube_mod/cmd/kubelet-sim/main.go"
build cluster-pki "$kube_version" "$kube_mod" ./cmd/cluster-pki "${kube_inputs[@]}" "$kube_mod/cmd/cluster-pki/main.go"
link "../etcd/$etcd_version/etcd" "$out/bin/etcd"
for name in kube-apiserver kubelet-sim cluster-pki; do
    link "../$name/$kube_version/$name" "$out/bin/$name"
done

# --- the driver, both lines ----------------------------------------------------------------
driver_module=sigs.k8s.io/secrets-store-csi-driver
for line in v1.5 v1.6; do
    moddir="$repo/tests/driver-client/$line"
    version="$(module_version "$moddir" "$driver_module")"
    build secrets-store-csi-driver "$version" "$moddir" "$driver_module/cmd/secrets-store-csi-driver" \
        "$moddir/go.mod" "$moddir/go.sum" "$repo/tests/stand-ins/mlog/mlog.go" \
        -- "-X $driver_module/pkg/version.BuildVersion=$version"
    # Its CRDs, CSIDriver and RBAC manifests, straight from the module.
    link "$(cd "$moddir" && go list -m -f '{{.Dir}}' "$driver_module")/deploy" \
        "$out/secrets-store-csi-driver/$version/deploy"
    link "secrets-store-csi-driver/$version" "$out/secrets-store-csi-driver-$line"
done
