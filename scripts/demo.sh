#!/usr/bin/env bash
# The seed workflow, end to end on one machine (run by `make demo` inside
# scripts/with-openbao.sh, which provides a dev OpenBao):
#
#   1. an operator prepares Vault: namespace admin/deployments/demo, KV v2 secret,
#      a policy that reads only that secret, an AppRole with that policy;
#   2. the provider starts on a private socket;
#   3. the real driver client (v1.6 build) mounts a SecretProviderClass into a tmpfs
#      (a temporary directory if tmpfs cannot be mounted), exactly as the driver would;
#   4. the files are printed, and everything is cleaned up.
set -euo pipefail

repo="$(cd "$(dirname "$0")/.." && pwd)"
: "${VSP_TEST_VAULT_ADDR:?run via make demo}" "${VSP_TEST_VAULT_TOKEN:?run via make demo}"
bao="${VSP_TEST_BAO_BIN:?run via make demo}"
client="${VSP_TEST_DRIVER_CLIENT_DIR:?run via make demo}/driver-client-v1.6"
provider="$repo/target/debug/vault-secrets-provider"

export BAO_ADDR="$VSP_TEST_VAULT_ADDR" BAO_TOKEN="$VSP_TEST_VAULT_TOKEN"
work="$(mktemp -d "${TMPDIR:-/tmp}/vsp-demo.XXXXXX")"
volume="$work/volume"; mkdir -p "$volume"
provider_pid=""
cleanup() {
    [[ -n "$provider_pid" ]] && kill "$provider_pid" 2>/dev/null && wait "$provider_pid" 2>/dev/null || true
    mountpoint -q "$volume" && umount "$volume" || true
    rm -rf "$work"
}
trap cleanup EXIT

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
quiet() { "$@" >/dev/null; }

step "Vault: namespace admin/deployments/demo with a KV v2 secret and an AppRole"
BAO_NAMESPACE="" quiet "$bao" namespace create admin
BAO_NAMESPACE=admin quiet "$bao" namespace create deployments
BAO_NAMESPACE=admin/deployments quiet "$bao" namespace create demo
export BAO_NAMESPACE=admin/deployments/demo
quiet "$bao" secrets enable -path=secret kv-v2
quiet "$bao" kv put -mount=secret database username=demo-app password='s3cr3t-from-vault' port=5432
quiet "$bao" policy write demo-read - <<'POLICY'
path "secret/data/database" { capabilities = ["read"] }
POLICY
quiet "$bao" auth enable approle
quiet "$bao" write auth/approle/role/demo token_policies=demo-read token_ttl=1h
role_id="$("$bao" read -field=role_id auth/approle/role/demo/role-id)"
secret_id="$("$bao" write -f -field=secret_id auth/approle/role/demo/secret-id)"
unset BAO_NAMESPACE
echo "role ID (configuration): $role_id"
echo "secret ID: kept in a Kubernetes Secret in real life; not printed"

step "Provider: vault-secrets-provider serve"
"$provider" serve --endpoint "$work/providers/vault.sock" --health-addr 127.0.0.1:0 \
    --vault-addr "$VSP_TEST_VAULT_ADDR" >"$work/provider.log" 2>&1 &
provider_pid=$!
for _ in $(seq 200); do [[ -S "$work/providers/vault.sock" ]] && break; sleep 0.05; done
[[ -S "$work/providers/vault.sock" ]] || { cat "$work/provider.log"; exit 1; }
echo "listening on $work/providers/vault.sock"

step "Driver: mount the SecretProviderClass into the pod volume"
if mount -t tmpfs -o size=4m tmpfs "$volume" 2>/dev/null; then
    echo "volume: tmpfs at $volume"
else
    echo "volume: $volume (tmpfs needs root; using a plain directory)"
fi
objects='- objectName: db-password
  secretPath: secret/data/database
  secretKey: password
- objectName: db-username
  secretPath: secret/data/database
  secretKey: username
  filePermission: 0640
- objectName: database.json
  secretPath: secret/data/database
  render: data'
attributes="$(python3 -c 'import json,sys; print(json.dumps({
  "roleId": sys.argv[1], "vaultNamespace": "admin/deployments/demo", "objects": sys.argv[2],
  "secretProviderClass": "demo", "csi.storage.k8s.io/pod.name": "demo-0",
  "csi.storage.k8s.io/pod.namespace": "default", "csi.storage.k8s.io/pod.uid": "demo-uid",
  "csi.storage.k8s.io/serviceAccount.name": "default"}))' "$role_id" "$objects")"
request="$(python3 -c 'import json,sys; print(json.dumps({"attributes": sys.argv[1],
  "secrets": json.dumps({"secretId": sys.argv[2]}), "targetPath": sys.argv[3], "permission": "420"}))' \
  "$attributes" "$secret_id" "$volume")"
echo "SecretProviderClass objects:"; sed 's/^/    /' <<<"$objects"
result="$("$client" mount --providers-dir "$work/providers" --provider vault <<<"$request")"
echo "driver result: $result"

step "Files in the pod volume"
ls -l "$volume"
for f in db-password db-username database.json; do
    printf '%s: %s\n' "$f" "$(cat "$volume/$f")"
done

step "Provider log (no secrets in it)"
cat "$work/provider.log"
