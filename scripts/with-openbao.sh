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
# - exports VSP_TEST_SERVER=openbao, VSP_TEST_VAULT_ADDR, VSP_TEST_VAULT_TOKEN, VSP_TEST_BAO_BIN and
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
    stop_private_servers "$run_dir"
}
kept_message() { echo "OpenBao log kept at $logfile"; }
install_traps

start_dev_server "$bao" BAO_DEV_ROOT_TOKEN_ID OpenBao

start_watchdog "$server_pid"

log "OpenBao $("$bao" version | head -n1 | awk '{print $2}') at $addr (log: $logfile)"
export VSP_TEST_SERVER=openbao
export VSP_TEST_VAULT_ADDR="$addr"
export VSP_TEST_VAULT_TOKEN="$token"
export VSP_TEST_BAO_BIN="$bao"
export VSP_TEST_BAO_RUN_DIR="$run_dir"

run_cmd "$@"
