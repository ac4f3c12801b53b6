#!/usr/bin/env bash
# Smoke check of a Vault server binary (the one tests/peers/vault/build.sh makes): starts
# `vault server -dev` on a free 127.0.0.1 port and checks over plain HTTP, with curl, the
# features our suites use: AppRole login, KV v2 write/read, a PKI issue, a JWT auth mount
# with a login, a file audit device enabled through the API. Then stops the server.
#
# Usage: tests/peers/vault/smoke.sh [VAULT_BIN]
#        (default: $VSP_TOOLS_DIR/peers/bin/vault, where `make vault-server` puts it)
# Exits 0 when every check passed; the server's log is kept (path printed) on failure.
set -euo pipefail

tools="${VSP_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/vault-secrets-provider}"
vault="${1:-$tools/peers/bin/vault}"
[[ -x "$vault" ]] || { echo "smoke: no Vault binary at $vault (make vault-server)" >&2; exit 1; }
for tool in curl jq openssl; do
    command -v "$tool" >/dev/null || { echo "smoke: $tool not found on PATH" >&2; exit 1; }
done

work="$(mktemp -d "${TMPDIR:-/tmp}/vsp-vault-smoke.XXXXXX")"
logfile="$work/vault.log"
server_pid=""
failed=0
cleanup() {
    local rc=$?
    if [[ -n "$server_pid" ]]; then
        kill -TERM "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
    fi
    if [[ "$rc" -eq 0 ]]; then rm -rf "$work"; else echo "smoke: Vault log kept at $logfile" >&2; fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

say() { echo "smoke: $*" >&2; }
passed=0
ok() { say "ok    $*"; passed=$((passed + 1)); }
fail() { say "FAIL  $*"; failed=1; }

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# A random root token (through the environment: not in argv), and no ~/.vault-token written.
token="$(od -An -tx1 -N16 /dev/urandom | tr -d ' \n')"
started=0
for attempt in 1 2 3 4 5; do
    port=$((20000 + (RANDOM % 6000) * 2))   # the dev cluster listener takes port+1
    if port_in_use "$port" || port_in_use "$((port + 1))"; then continue; fi
    addr="http://127.0.0.1:$port"
    : >"$logfile"
    HOME="$work" VAULT_DEV_ROOT_TOKEN_ID="$token" "$vault" server -dev -dev-no-store-token \
        -dev-listen-address="127.0.0.1:$port" >>"$logfile" 2>&1 </dev/null &
    server_pid=$!
    deadline=$((SECONDS + 60))
    while ((SECONDS < deadline)) && kill -0 "$server_pid" 2>/dev/null; do
        if [[ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 -H "X-Vault-Token: $token" \
                "$addr/v1/auth/token/lookup-self" || true)" == 200 ]]; then
            started=1; break
        fi
        sleep 0.1
    done
    [[ "$started" -eq 1 ]] && break
    kill -TERM "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; server_pid=""
    say "attempt $attempt on port $port failed"; tail -n 5 "$logfile" >&2 || true
done
[[ "$started" -eq 1 ]] || { say "could not start $vault"; exit 1; }
say "$("$vault" version) at $addr"

# api METHOD PATH [JSON] [TOKEN]: prints the body; the status goes to $work/status.
api() {
    local args=(-s -o "$work/body" -w '%{http_code}' --max-time 20 -X "$1"
        -H "X-Vault-Token: ${4:-$token}")
    [[ -z "${3:-}" ]] || args+=(-H 'Content-Type: application/json' --data "$3")
    : >"$work/body"
    curl "${args[@]}" "$addr/v1/$2" >"$work/status" || echo 000 >"$work/status"
    cat "$work/body"
}
status() { cat "$work/status"; }
expect() {  # expect WHAT CODE...: the last call answered one of CODE
    local s c; s="$(status)"
    for c in "${@:2}"; do [[ "$s" == "$c" ]] && return 0; done
    fail "$1: HTTP $s: $(head -c 300 "$work/body")"; return 1
}

# --- health and version ----------------------------------------------------------------------
h="$(api GET sys/health)"
if expect "sys/health" 200; then
    ok "sys/health: version $(jq -r .version <<<"$h"), sealed $(jq -r .sealed <<<"$h")"
fi

# --- AppRole -----------------------------------------------------------------------------------
api POST sys/auth/approle '{"type":"approle"}' >/dev/null; expect "enable approle" 204 200 &&
api POST auth/approle/role/smoke '{"token_policies":["default"],"token_ttl":"10m"}' >/dev/null &&
    expect "approle role" 204 200 &&
role_id="$(api GET auth/approle/role/smoke/role-id | jq -r .data.role_id)" && expect "role-id" 200 &&
secret_id="$(api POST auth/approle/role/smoke/secret-id '{}' | jq -r .data.secret_id)" &&
    expect "secret-id" 200 &&
login="$(api POST auth/approle/login "$(jq -cn --arg r "$role_id" --arg s "$secret_id" \
    '{role_id:$r,secret_id:$s}')" "")" && expect "approle login" 200 && {
    t="$(jq -r .auth.client_token <<<"$login")"
    if [[ "$t" == hvs.* ]]; then
        ok "AppRole login: token hvs.… ($(jq -r '.auth.policies|join(",")' <<<"$login"), ttl $(jq -r .auth.lease_duration <<<"$login") s)"
    else
        fail "AppRole login: token '$t' is not an hvs. service token"
    fi
}

# --- KV v2 (mounted at secret/ in dev mode) ----------------------------------------------------
w="$(api POST secret/data/smoke '{"data":{"username":"app","password":"s3cr3t"}}')" &&
    expect "kv v2 write" 200 &&
r="$(api GET secret/data/smoke)" && expect "kv v2 read" 200 && {
    if [[ "$(jq -r .data.data.password <<<"$r")" == s3cr3t && "$(jq -r .data.metadata.version <<<"$r")" == 1 ]]; then
        ok "KV v2: wrote version $(jq -r .data.version <<<"$w"), read it back"
    else
        fail "KV v2 read: unexpected body $(head -c 300 <<<"$r")"
    fi
}

# --- PKI -----------------------------------------------------------------------------------------
api POST sys/mounts/pki '{"type":"pki","config":{"max_lease_ttl":"87600h"}}' >/dev/null &&
    expect "enable pki" 204 200 &&
api POST pki/root/generate/internal '{"common_name":"smoke root","ttl":"87600h","key_type":"ec"}' >/dev/null &&
    expect "pki root" 200 &&
api POST pki/roles/smoke '{"allowed_domains":["example.com"],"allow_subdomains":true,"max_ttl":"72h","key_type":"ec"}' >/dev/null &&
    expect "pki role" 204 200 &&
c="$(api POST pki/issue/smoke '{"common_name":"app.example.com","ttl":"1h"}')" && expect "pki issue" 200 && {
    jq -r .data.certificate <<<"$c" >"$work/leaf.pem"
    if subject="$(openssl x509 -in "$work/leaf.pem" -noout -subject 2>/dev/null)" &&
        [[ "$subject" == *app.example.com* && "$(jq -r .data.private_key <<<"$c")" == -----BEGIN* ]]; then
        ok "PKI issue: serial $(jq -r .data.serial_number <<<"$c"), $subject"
    else
        fail "PKI issue: no usable certificate/key in $(head -c 300 <<<"$c")"
    fi
}

# --- JWT auth: mount, key, role, login with a token signed here -----------------------------------
b64url() { openssl base64 -A | tr '+/' '-_' | tr -d '='; }
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$work/jwt.key" 2>/dev/null
openssl pkey -in "$work/jwt.key" -pubout -out "$work/jwt.pub" 2>/dev/null
api POST sys/auth/jwt '{"type":"jwt"}' >/dev/null && expect "enable jwt" 204 200 &&
api POST auth/jwt/config "$(jq -cn --rawfile k "$work/jwt.pub" \
    '{jwt_validation_pubkeys:[$k],bound_issuer:"https://issuer.smoke"}')" >/dev/null &&
    expect "jwt config" 204 200 &&
api POST auth/jwt/role/smoke '{"role_type":"jwt","bound_audiences":["vault"],"user_claim":"sub","token_policies":["default"],"token_ttl":"10m"}' >/dev/null &&
    expect "jwt role" 204 200 && {
    now="$(date +%s)"
    header="$(printf '{"alg":"RS256","typ":"JWT"}' | b64url)"
    claims="$(jq -cn --argjson n "$now" \
        '{iss:"https://issuer.smoke",sub:"system:serviceaccount:default:app",aud:"vault",iat:$n,nbf:$n,exp:($n+300)}' | b64url)"
    sig="$(printf '%s.%s' "$header" "$claims" | openssl dgst -sha256 -sign "$work/jwt.key" -binary | b64url)"
    login="$(api POST auth/jwt/login "$(jq -cn --arg j "$header.$claims.$sig" '{role:"smoke",jwt:$j}')" "")"
    if expect "jwt login" 200; then
        ok "JWT login: token $(jq -r .auth.client_token <<<"$login" | cut -c1-4)… for $(jq -r .auth.metadata.role <<<"$login")"
    fi
}

# --- file audit device, enabled through the API (OpenBao only takes it from its config) ----------
api POST sys/audit/file "$(jq -cn --arg p "$work/audit.log" '{type:"file",options:{file_path:$p}}')" >/dev/null &&
    expect "enable file audit" 204 200 && {
    api GET secret/data/smoke >/dev/null
    if [[ -s "$work/audit.log" ]] && grep -q '"path":"secret/data/smoke"' "$work/audit.log"; then
        ok "file audit device: $(wc -l <"$work/audit.log") entries after one read"
    else
        fail "file audit device: the read was not logged"
    fi
}

checks=6   # the ok lines above: a chain cut short by a failing command counts as failed
if [[ "$failed" -ne 0 || "$passed" -ne "$checks" ]]; then
    say "$passed of $checks checks passed"; exit 1
fi
say "all checks passed"
