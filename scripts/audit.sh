#!/usr/bin/env bash
# Supply-chain checks (`make audit`, run in CI):
#   - cargo deny: licences, bans and sources, offline, against deny.toml (fatal);
#   - cargo audit: RustSec advisories. The database is cloned from GitHub; where
#     GitHub cannot be reached the check is reported as NOT RUN (with the error)
#     rather than passed, and does not fail the build. A vulnerability found
#     always fails it.
set -euo pipefail
cd "$(dirname "$0")/.."
bin="$(scripts/install-cargo-tools.sh)"

"$bin/cargo-deny" --offline check licenses bans sources

out="$(mktemp)"
trap 'rm -f "$out"' EXIT
if "$bin/cargo-audit" audit --deny warnings >"$out" 2>&1; then
    tail -n 3 "$out"
    echo "audit: advisories checked, none found"
elif grep -q "couldn't fetch advisory database" "$out"; then
    grep -m1 -A2 "couldn't fetch advisory database" "$out" >&2
    echo "audit: advisories NOT checked: the RustSec database (GitHub) is unreachable from here" >&2
else
    cat "$out" >&2
    exit 1
fi
