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

if [[ $# -eq 0 ]]; then
    echo "usage: $0 CMD [ARGS...]" >&2
    exit 2
fi

script_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
log() { echo "with-openbao: $*" >&2; }

bao="${VSP_TEST_BAO_BIN:-}"
if [[ -z "$bao" ]]; then
    bao="$("$script_dir/install-openbao.sh" | tail -n1)"
fi
[[ -x "$bao" ]] || { log "bao binary not executable: $bao"; exit 1; }

tmp_owned=0
if [[ -n "${VSP_TEST_BAO_DIR:-}" ]]; then
    work="$VSP_TEST_BAO_DIR"; mkdir -p "$work"
else
    work="$(mktemp -d "${TMPDIR:-/tmp}/vsp-openbao.XXXXXX")"; tmp_owned=1
fi
work="$(cd "$work" && pwd)"
run_dir="$work/private"; mkdir -p "$run_dir"
logfile="$work/openbao.log"

server_pid=""
watchdog_pid=""
cmd_pid=""

stop_pid() {  # stop_pid PID: TERM, wait up to ~5 s, then KILL
    local p="$1" i
    kill -TERM "$p" 2>/dev/null || return 0
    for ((i = 0; i < 50; i++)); do
        kill -0 "$p" 2>/dev/null || return 0
        sleep 0.1
    done
    kill -KILL "$p" 2>/dev/null || true
}

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    if [[ -n "$cmd_pid" ]] && kill -0 "$cmd_pid" 2>/dev/null; then
        kill -TERM "$cmd_pid" 2>/dev/null || true
        wait "$cmd_pid" 2>/dev/null || true
    fi
    if [[ -n "$server_pid" ]]; then
        stop_pid "$server_pid"
        wait "$server_pid" 2>/dev/null || true
    fi
    # Private servers a test failed to stop (e.g. the test process was killed).
    local f p
    for f in "$run_dir"/*.pid; do
        [[ -e "$f" ]] || continue
        p="$(cat "$f" 2>/dev/null || true)"
        if [[ "$p" =~ ^[0-9]+$ ]] && tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null | grep -q 'server -dev'; then
            stop_pid "$p"
        fi
        rm -f "$f"
    done
    if [[ -n "$watchdog_pid" ]]; then kill "$watchdog_pid" 2>/dev/null || true; fi
    if [[ "$rc" -eq 0 && "$tmp_owned" -eq 1 ]]; then
        rm -rf "$work"
    elif [[ "$rc" -ne 0 ]]; then
        log "OpenBao log kept at $logfile"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

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
    stop_pid "$server_pid"; wait "$server_pid" 2>/dev/null || true; server_pid=""
    log "attempt $attempt on port $port failed; last log lines:"; tail -n 5 "$logfile" >&2 || true
done
[[ "$started" -eq 1 ]] || { log "could not start OpenBao"; exit 1; }

# If this script is SIGKILLed the traps cannot run: a watchdog stops the server then.
( while kill -0 $$ 2>/dev/null; do sleep 1; done; kill -TERM "$server_pid" 2>/dev/null ) \
    >/dev/null 2>&1 </dev/null &
watchdog_pid=$!

log "OpenBao $("$bao" version | head -n1 | awk '{print $2}') at $addr (log: $logfile)"
export VSP_TEST_VAULT_ADDR="$addr"
export VSP_TEST_VAULT_TOKEN="$token"
export VSP_TEST_BAO_BIN="$bao"
export VSP_TEST_BAO_RUN_DIR="$run_dir"

# CMD runs as a child we wait for, so INT/TERM reach the traps at once (a foreground
# child would delay them until it exits); stdin is passed through explicitly.
"$@" <&0 &
cmd_pid=$!
set +e
wait "$cmd_pid"
cmd_status=$?
set -e
cmd_pid=""
exit "$cmd_status"
