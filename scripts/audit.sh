#!/usr/bin/env bash
# Supply-chain checks (`make audit`, run in CI):
#   - cargo deny: licences, bans and sources, offline, against deny.toml (fatal);
#   - cargo audit: RustSec advisories. The live database is cloned from GitHub;
#     where GitHub cannot be reached, a local snapshot of the database is used
#     instead ($VSP_ADVISORY_DB, default ../shared/rustsec-advisory-db next to the
#     clone) and its date is printed, so the result says how fresh it is. Only
#     when neither can be had is the check reported as NOT RUN (with the error).
#     A vulnerability found always fails it.
set -euo pipefail
cd "$(dirname "$0")/.."
bin="$(scripts/install-cargo-tools.sh)"

# cargo deny reads every dependency's sources, those of other platforms too: fetch them
# first (a build only downloads what this platform compiles).
cargo fetch --locked --quiet
"$bin/cargo-deny" --offline check licenses bans sources

out="$(mktemp)"
trap 'rm -f "$out"' EXIT
if "$bin/cargo-audit" audit --deny warnings >"$out" 2>&1; then
    tail -n 3 "$out"
    echo "audit: advisories checked, none found"
elif grep -q "couldn't fetch advisory database" "$out"; then
    grep -m1 "couldn't fetch advisory database" "$out" >&2
    snapshot="${VSP_ADVISORY_DB:-../shared/rustsec-advisory-db}"
    if [[ -f "$snapshot/SNAPSHOT" ]]; then
        when="$(sed -n 's/^date //p' "$snapshot/SNAPSHOT")"
        echo "audit: the live RustSec database is unreachable; checking against the snapshot of ${when:-unknown date}"
        "$bin/cargo-audit" audit --db "$snapshot" --no-fetch --stale --deny warnings
        echo "audit: advisories checked against the RustSec snapshot of ${when:-unknown date}, none found"
    else
        echo "audit: advisories NOT checked: the RustSec database is unreachable and no snapshot is at $snapshot" >&2
    fi
else
    cat "$out" >&2
    exit 1
fi
