# Shared by scripts/with-openbao.sh, scripts/with-vault.sh and scripts/with-kubernetes.sh
# (sourced, not run): the work directory, stopping processes, the EXIT/INT/TERM traps, a
# watchdog for a SIGKILLed script, free ports, a dev server of OpenBao or Vault, and running
# CMD as a child whose status is ours.
#
# The sourcing script sets `lib_name` (the prefix of its log lines) before sourcing,
# then defines `stop_servers` (stops what it started; called by the EXIT trap) and
# `kept_message` (what to say when a failed run keeps the work directory).

log() { echo "$lib_name: $*" >&2; }

require_cmd() {  # require_cmd "$@": a usage line when there is no CMD
    if [[ $# -eq 0 ]]; then
        echo "usage: $0 CMD [ARGS...]" >&2
        exit 2
    fi
}

# make_work DIR_VAR PREFIX: sets `work` to $DIR_VAR (created) or to a fresh temporary
# directory, removed after a successful run (`tmp_owned=1`).
make_work() {
    local dir="${!1:-}"
    tmp_owned=0
    if [[ -n "$dir" ]]; then
        work="$dir"; mkdir -p "$work"
    else
        work="$(mktemp -d "${TMPDIR:-/tmp}/$2.XXXXXX")"; tmp_owned=1
    fi
    work="$(cd "$work" && pwd)"
}

watchdog_pid=""
cmd_pid=""

stop_pid() {  # stop_pid PID [TENTHS]: TERM, wait up to TENTHS/10 s (default 10 s), then KILL
    local p="$1" tenths="${2:-100}" i
    kill -TERM "$p" 2>/dev/null || return 0
    for ((i = 0; i < tenths; i++)); do
        kill -0 "$p" 2>/dev/null || return 0
        sleep 0.1
    done
    kill -KILL "$p" 2>/dev/null || true
}

stop_and_reap() {  # stop_and_reap PID [TENTHS]: stop_pid, then reap it (our child)
    [[ -n "$1" ]] || return 0
    stop_pid "$@"
    wait "$1" 2>/dev/null || true
}

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    if [[ -n "$cmd_pid" ]] && kill -0 "$cmd_pid" 2>/dev/null; then
        kill -TERM "$cmd_pid" 2>/dev/null || true
        wait "$cmd_pid" 2>/dev/null || true
    fi
    stop_servers
    if [[ -n "$watchdog_pid" ]]; then kill "$watchdog_pid" 2>/dev/null || true; fi
    if [[ "$rc" -eq 0 && "${tmp_owned:-0}" -eq 1 ]]; then
        rm -rf "$work"
    elif [[ "$rc" -ne 0 ]]; then
        log "$(kept_message)"
    fi
    exit "$rc"
}

install_traps() {
    trap cleanup EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
}

# start_watchdog PID...: if this script is SIGKILLed the traps cannot run, so a
# background loop TERMs the servers once the script is gone.
start_watchdog() {
    ( while kill -0 $$ 2>/dev/null; do sleep 1; done; kill -TERM "$@" 2>/dev/null ) \
        >/dev/null 2>&1 </dev/null &
    watchdog_pid=$!
}

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

http_code() {  # http_code URL [TOKEN]
    local args=(-s -o /dev/null -w '%{http_code}' --max-time 2)
    [[ -n "${2:-}" ]] && args+=(-H "X-Vault-Token: $2")
    curl "${args[@]}" "$1" 2>/dev/null || true
}

# stop_private_servers DIR: the dev servers whose pid files tests left in DIR (a test
# that was killed cannot stop its private server itself).
stop_private_servers() {
    local f p
    for f in "$1"/*.pid; do
        [[ -e "$f" ]] || continue
        p="$(cat "$f" 2>/dev/null || true)"
        if [[ "$p" =~ ^[0-9]+$ ]] && tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null | grep -q 'server -dev'; then
            stop_pid "$p" 50
        fi
        rm -f "$f"
    done
}

# start_dev_server BIN TOKEN_ENV NAME: starts `BIN server -dev` (OpenBao's `bao` or
# Vault's `vault`, which take the same flags) on a free 127.0.0.1 port with a random root
# token passed in the environment variable TOKEN_ENV (not argv, so it does not show in
# `ps`), logging to $logfile; the dev cluster listener takes port+1 as well: both are
# checked, and a bind race is retried with another port. Waits until /v1/sys/health
# answers 200 and our token is accepted (so we never talk to somebody else's server).
# Sets `server_pid`, `addr` and `token`; exits when no attempt worked.
start_dev_server() {
    local bin="$1" token_env="$2" name="$3" attempt port deadline started=0
    token="$(od -An -tx1 -N16 /dev/urandom | tr -d ' \n')"
    for attempt in 1 2 3 4 5 6 7 8 9 10; do
        # Below the usual ephemeral range (32768+) so outgoing connections don't take it.
        port=$((20000 + (RANDOM % 6000) * 2))
        if port_in_use "$port" || port_in_use "$((port + 1))"; then continue; fi
        addr="http://127.0.0.1:$port"
        : >"$logfile"
        # setsid: Ctrl-C in the terminal reaches this script only; the trap stops the server.
        env "$token_env=$token" setsid "$bin" server -dev -dev-no-store-token \
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
        [[ "$started" -eq 1 ]] && return 0
        stop_and_reap "$server_pid" 50; server_pid=""
        log "attempt $attempt on port $port failed; last log lines:"; tail -n 5 "$logfile" >&2 || true
    done
    log "could not start $name"
    exit 1
}

# run_cmd CMD [ARGS...]: CMD runs as a child we wait for, so INT/TERM reach the traps at
# once (a foreground child would delay them until it exits); stdin is passed through
# explicitly. Exits with CMD's status.
run_cmd() {
    "$@" <&0 &
    cmd_pid=$!
    local status
    set +e
    wait "$cmd_pid"
    status=$?
    set -e
    cmd_pid=""
    exit "$status"
}
