#!/usr/bin/env bash
# Builds the HashiCorp Vault server (OSS) from its Go module, for running the Vault-facing
# suites against HashiCorp's server as well as OpenBao.
#
#   vault    github.com/hashicorp/vault@v1.21.4 (BUSL-1.1; testing and benchmarking only)
#
# The module as published cannot be built as is: its go.mod replaces five nested modules
# (api, three api/auth modules, sdk) with directories the module zip does not contain, and
# the exact sdk it was released with is not published. So the module is copied to a work
# directory, those five replaces are dropped (the require lines already name published
# versions), and the three call sites that differ from the published sdk v0.21.0 are
# adapted. Every adaptation checks that it applies exactly once and fails the build
# otherwise, so a version bump cannot silently build something else.
#
# Usage: tests/peers/vault/build.sh OUTDIR    (make vault-server: OUTDIR = $VSP_TOOLS_DIR/peers)
#
# Layout: OUTDIR/vault/<version>/vault with a .stamp of the inputs (this script, which holds
# the version and the adaptations, the module's checksum, flags, Go version); a build whose
# stamp matches is skipped. Stable name: OUTDIR/bin/vault.
#
# Cost: cold, a few minutes of downloads (~3.7 GB into the shared Go module cache) and
# tens of minutes of compiling (~4 GB of build cache); it runs at the lowest CPU priority
# with one compile job (VAULT_BUILD_JOBS to change), as the machine is shared.
set -euo pipefail

if [[ $# -ne 1 || -z "$1" ]]; then
    echo "usage: $0 OUTDIR" >&2
    exit 2
fi

module=github.com/hashicorp/vault
version=v1.21.4

self="$(cd "$(dirname "$0")" && pwd)/$(basename "$0")"
tools="${VSP_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/vault-secrets-provider}"   # per-user tool cache (Makefile)
mkdir -p "$1/bin"
out="$(cd "$1" && pwd)"

command -v go >/dev/null || { echo "$0: go not found on PATH" >&2; exit 1; }
log() { echo "vault-server: $*" >&2; }
die() { echo "vault-server: $*" >&2; exit 1; }

# Same Go cache layout as the Makefile and the other tool builds.
godir="$tools/go"
export GOPATH="${GOPATH:-$godir/path}"
export GOMODCACHE="${GOMODCACHE:-$godir/mod}"
export GOCACHE="${GOCACHE:-$godir/cache}"
export GOTOOLCHAIN=local   # the machine's Go; never download one
export CGO_ENABLED=0
# -mod=mod: the nested modules come from the proxy now, so go.sum gains their lines
# (checked against the checksum database as usual).
export GOFLAGS="-mod=mod -trimpath -buildvcs=false"
# The machine is shared: lowest priority, one compile job, one thread.
jobs="${VAULT_BUILD_JOBS:-1}"
export GOMAXPROCS="${GOMAXPROCS:-$jobs}"
renice -n 19 -p $$ >/dev/null 2>&1 || true
ionice -c 2 -n 7 -p $$ >/dev/null 2>&1 || true

link() {  # link TARGET LINKNAME
    ln -sfn "$1" "$2.tmp" && mv -Tf "$2.tmp" "$2"
}

# replace_once FILE OLD NEW: literal, single-line OLD must occur exactly once in FILE.
replace_once() {
    local file="$1" old="$2" new="$3" n content
    [[ -f "$file" ]] || die "adaptation: $file not found (module layout changed?)"
    n="$(grep -cF -- "$old" "$file" || true)"
    [[ "$n" == 1 ]] || die "adaptation does not apply: expected one '$old' in ${file#"$work"/}, found $n"
    content="$(<"$file")"
    printf '%s\n' "${content/"$old"/"$new"}" >"$file"
    grep -qF -- "$new" "$file" || die "adaptation did not take in ${file#"$work"/}"
}

# --- the module (small: its dependencies come with the build) ------------------------------
info="$(go mod download -json "$module@$version")" || die "go mod download $module@$version failed"
json_field() { sed -n "s/^[[:space:]]*\"$1\": \"\(.*\)\",\{0,1\}\$/\1/p;T;q" <<<"$info"; }   # first match only
moddir="$(json_field Dir)"
modsum="$(json_field Sum)"
infofile="$(json_field Info)"
[[ -d "$moddir" && -n "$modsum" && -f "$infofile" ]] || die "unexpected go mod download output: $info"
# The release's own time as the build date (the binary otherwise reports "now minus a year").
build_date="$(sed -n 's/.*"Time":"\([^"]*\)".*/\1/p' "$infofile")"
[[ -n "$build_date" ]] || die "no release time in $infofile"

ldflags="-s -w -X $module/version.BuildDate=$build_date"
dest="$out/vault/$version"
stamp="$( { cat "$self"; echo "$modsum $ldflags $GOFLAGS $(go env GOVERSION)"; } | sha256sum | cut -c1-16)"
if [[ -x "$dest/vault" && -f "$dest/.stamp" && "$(cat "$dest/.stamp")" == "$stamp" ]]; then
    link "../vault/$version/vault" "$out/bin/vault"
    exit 0
fi

log "building Vault $version from $module (once per version; tens of minutes the first time)"
start=$SECONDS
mkdir -p "$dest"
work="$dest/src"
chmod -R u+w "$work" 2>/dev/null || true
rm -rf "$work"
cp -R "$moddir" "$work"
chmod -R u+w "$work"   # the module cache is read-only

# 1. The five replaces that point inside the (absent) repository tree.
(cd "$work" && go mod edit \
    -dropreplace=github.com/hashicorp/vault/api \
    -dropreplace=github.com/hashicorp/vault/api/auth/approle \
    -dropreplace=github.com/hashicorp/vault/api/auth/kubernetes \
    -dropreplace=github.com/hashicorp/vault/api/auth/userpass \
    -dropreplace=github.com/hashicorp/vault/sdk)
left="$(cd "$work" && go mod edit -json | grep -c '"Path": "\./' || true)"
[[ "$left" == 0 ]] || die "go.mod still replaces $left module(s) with local directories"

# 2. Call sites adapted to the published sdk v0.21.0.
#    framework.Backend.ActivationFunc takes a third string argument there.
replace_once "$work/vault/identity_store.go" \
    'ActivationFunc: iStore.activateDeduplication,' \
    'ActivationFunc: func(ctx context.Context, req *logical.Request, _ string) error { return iStore.activateDeduplication(ctx, req) },'
replace_once "$work/vault/logical_system_activation_flags.go" \
    'b.idStoreBackend.ActivationFunc(ctx, nil)' \
    'b.idStoreBackend.ActivationFunc(ctx, nil, "")'
#    keysutil.LockManager.RestorePolicy returns only an error there; the restored name
#    only feeds an observation record, so record the requested name.
replace_once "$work/builtin/logical/transit/path_restore.go" \
    'restoredKeyName, err := b.lm.RestorePolicy(ctx, req.Storage, keyName, backupB64, force)' \
    'restoredKeyName, err := keyName, b.lm.RestorePolicy(ctx, req.Storage, keyName, backupB64, force)'

(cd "$work" && go build -p "$jobs" -ldflags "$ldflags" -o "$dest/vault.tmp" .)
mv -f "$dest/vault.tmp" "$dest/vault"
"$dest/vault" version >&2 || die "the built binary does not run"
echo "$stamp" >"$dest/.stamp"
chmod -R u+w "$work" && rm -rf "$work"
link "../vault/$version/vault" "$out/bin/vault"
log "built Vault $version in $((SECONDS - start)) s ($(du -h "$dest/vault" | cut -f1))"
