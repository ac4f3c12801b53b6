#!/usr/bin/env bash
# Runs CMD with one real HashiCorp Vault (OSS) dev server up for its whole duration: what
# scripts/with-openbao.sh does for OpenBao, for the second pass of the Vault-facing suites.
#
#   scripts/with-vault.sh CMD [ARGS...]
#
# - uses $VSP_TEST_VAULT_BIN, else the binary `make vault-server` built
#   ($VSP_TOOLS_DIR/peers/bin/vault, from tests/peers/vault/build.sh)
# - starts `vault server -dev` on a free 127.0.0.1 port with a random root token, health-
#   and token-checked like OpenBao (scripts/lib.sh: start_dev_server)
# - logs to $VSP_TEST_VAULT_DIR/vault.log (default: a temporary dir, removed after a
#   successful run and kept -- its path printed -- after a failed one)
# - exports VSP_TEST_SERVER=vault (tests/support/flavour.rs), VSP_TEST_VAULT_ADDR,
#   VSP_TEST_VAULT_TOKEN, VSP_TEST_VAULT_BIN and VSP_TEST_BAO_RUN_DIR (the pid files of
#   private servers, killed here at the end if a test left them running)
# - runs CMD, stops the server(s) on EXIT/INT/TERM, exits with CMD's status.
set -euo pipefail

script_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
lib_name=with-vault
# shellcheck source=scripts/lib.sh
source "$script_dir/lib.sh"
require_cmd "$@"

tools="${VSP_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/vault-secrets-provider}"
vault="${VSP_TEST_VAULT_BIN:-$tools/peers/bin/vault}"
[[ -x "$vault" ]] || { log "no Vault binary at $vault (make vault-server)"; exit 1; }

make_work VSP_TEST_VAULT_DIR vsp-vault
run_dir="$work/private"; mkdir -p "$run_dir"
logfile="$work/vault.log"

server_pid=""

stop_servers() {
    stop_and_reap "$server_pid" 50
    stop_private_servers "$run_dir"
}
kept_message() { echo "Vault log kept at $logfile"; }
install_traps

start_dev_server "$vault" VAULT_DEV_ROOT_TOKEN_ID "HashiCorp Vault"

start_watchdog "$server_pid"

log "$("$vault" version | head -n1 | cut -d, -f1) at $addr (log: $logfile)"
export VSP_TEST_SERVER=vault
export VSP_TEST_VAULT_ADDR="$addr"
export VSP_TEST_VAULT_TOKEN="$token"
export VSP_TEST_VAULT_BIN="$vault"
export VSP_TEST_BAO_RUN_DIR="$run_dir"

run_cmd "$@"
