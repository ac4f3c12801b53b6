#!/usr/bin/env bash
# Runs CMD with one real OpenBao dev server up for its whole duration.
#
#   scripts/with-openbao.sh CMD [ARGS...]
#
# - installs/locates `bao` via scripts/install-openbao.sh (or uses $VSP_TEST_BAO_BIN if set)
# - starts `bao server -dev` on a free 127.0.0.1 port with a random root token
#   (the dev cluster listener takes port+1 as well; both are checked, and a bind race
#   is retried with another port)
# - logs to $VSP_TEST_BAO_DIR/openbao.log (default: a temporary dir, removed after a
#   successful run and kept -- its path printed -- after a failed one)
# - waits until /v1/sys/health answers 200 and our token is accepted (so we never
#   talk to somebody else's server)
# - exports VSP_TEST_VAULT_ADDR, VSP_TEST_VAULT_TOKEN, VSP_TEST_BAO_BIN and
#   VSP_TEST_BAO_RUN_DIR (private servers started by tests record their pids there,
#   and any left over are killed here at the end)
# - runs CMD, stops the server(s) on EXIT/INT/TERM, exits with CMD's status.
set -euo pipefail

script_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
lib_name=with-openbao
# shellcheck source=scripts/lib.sh
source "$script_dir/lib.sh"
require_cmd "$@"

bao="${VSP_TEST_BAO_BIN:-}"
if [[ -z "$bao" ]]; then
    bao="$("$script_dir/install-openbao.sh" | tail -n1)"
fi
[[ -x "$bao" ]] || { log "bao binary not executable: $bao"; exit 1; }

make_work VSP_TEST_BAO_DIR vsp-openbao
run_dir="$work/private"; mkdir -p "$run_dir"
logfile="$work/openbao.log"

server_pid=""

stop_servers() {
    stop_and_reap "$server_pid" 50
    # Private servers a test failed to stop (e.g. the test process was killed).
    local f p
    for f in "$run_dir"/*.pid; do
        [[ -e "$f" ]] || continue
        p="$(cat "$f" 2>/dev/null || true)"
        if [[ "$p" =~ ^[0-9]+$ ]] && tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null | grep -q 'server -dev'; then
            stop_pid "$p" 50
        fi
        rm -f "$f"
    done
}
kept_message() { echo "OpenBao log kept at $logfile"; }
install_traps

http_code() {  # http_code URL [TOKEN]
    local args=(-s -o /dev/null -w '%{http_code}' --max-time 2)
    [[ -n "${2:-}" ]] && args+=(-H "X-Vault-Token: $2")
    curl "${args[@]}" "$1" 2>/dev/null || true
}

token="$(od -An -tx1 -N16 /dev/urandom | tr -d ' \n')"
started=0
for attempt in 1 2 3 4 5 6 7 8 9 10; do
    # Below the usual ephemeral range (32768+) so outgoing connections don't take it.
    port=$((20000 + (RANDOM % 6000) * 2))
    if port_in_use "$port" || port_in_use "$((port + 1))"; then continue; fi
    addr="http://127.0.0.1:$port"
    : >"$logfile"
    # Token via env, not argv, so it does not show in `ps`. setsid: Ctrl-C in the
    # terminal reaches this script only; the trap stops the server.
    BAO_DEV_ROOT_TOKEN_ID="$token" setsid "$bao" server -dev -dev-no-store-token \
        -dev-listen-address="127.0.0.1:$port" >>"$logfile" 2>&1 </dev/null &
    server_pid=$!
    deadline=$((SECONDS + 60))
    while ((SECONDS < deadline)); do
        if ! kill -0 "$server_pid" 2>/dev/null; then break; fi
        if [[ "$(http_code "$addr/v1/sys/health")" == 200 ]]; then
            if [[ "$(http_code "$addr/v1/auth/token/lookup-self" "$token")" == 200 ]]; then
                started=1
            fi
            break
        fi
        sleep 0.05
    done
    [[ "$started" -eq 1 ]] && break
    stop_and_reap "$server_pid" 50; server_pid=""
    log "attempt $attempt on port $port failed; last log lines:"; tail -n 5 "$logfile" >&2 || true
done
[[ "$started" -eq 1 ]] || { log "could not start OpenBao"; exit 1; }

start_watchdog "$server_pid"

log "OpenBao $("$bao" version | head -n1 | awk '{print $2}') at $addr (log: $logfile)"
export VSP_TEST_VAULT_ADDR="$addr"
export VSP_TEST_VAULT_TOKEN="$token"
export VSP_TEST_BAO_BIN="$bao"
export VSP_TEST_BAO_RUN_DIR="$run_dir"

run_cmd "$@"
