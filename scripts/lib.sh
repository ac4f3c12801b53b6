# Shared by scripts/with-openbao.sh and scripts/with-kubernetes.sh (sourced, not run):
# the work directory, stopping processes, the EXIT/INT/TERM traps, a watchdog for a
# SIGKILLed script, free ports, and running CMD as a child whose status is ours.
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
