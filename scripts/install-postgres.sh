#!/usr/bin/env bash
# Makes sure PostgreSQL's server binaries are installed (Debian package
# `postgresql`), for the leased-credentials tests (OpenBao's database engine).
# Prints the directory holding `initdb` and `postgres` on its last line.
set -euo pipefail

find_bin() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1; }

bin="$(find_bin)"
if [[ -z "$bin" || ! -x "$bin/initdb" ]]; then
    if [[ "$(id -u)" != 0 ]]; then
        echo "install-postgres: PostgreSQL is missing; run as root or: apt-get install postgresql" >&2
        exit 1
    fi
    echo "install-postgres: installing the Debian package postgresql" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2
    apt-get install -y -qq --no-install-recommends postgresql >&2
    bin="$(find_bin)"
fi
echo "$bin"
