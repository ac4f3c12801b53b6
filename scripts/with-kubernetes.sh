#!/usr/bin/env bash
# Runs CMD with one local Kubernetes control plane (etcd + kube-apiserver) up for its
# whole duration, the way controller-runtime's envtest runs one:
#
#   scripts/with-kubernetes.sh CMD [ARGS...]
#
# - binaries from $VSP_TEST_ETCD_BIN, $VSP_TEST_KUBE_APISERVER_BIN and
#   $VSP_TEST_CLUSTER_PKI_BIN (`make k8s-tools` builds them from Go source into the tool cache)
# - cluster-pki writes a fresh CA, the apiserver's serving cert (127.0.0.1, localhost),
#   an admin client cert (O=system:masters) and the service-account signing key
# - etcd on 127.0.0.1 (client and peer ports, no fsync: test data only), then
#   kube-apiserver on 127.0.0.1 with client-cert authentication, RBAC, TokenRequest /
#   TokenReview (service-account issuer and keys), envtest's other defaults
# - waits until /readyz answers 200 to the admin credential
# - exports VSP_TEST_KUBE_SERVER (https://127.0.0.1:PORT), VSP_TEST_KUBECONFIG (admin),
#   VSP_TEST_KUBE_CA_FILE, VSP_TEST_KUBE_ADMIN_CERT_FILE, VSP_TEST_KUBE_ADMIN_KEY_FILE, and
#   VSP_TEST_KUBE_RUN_DIR (for files tests keep as long as the cluster, e.g. kubeconfigs)
# - logs in $VSP_TEST_KUBE_DIR (default: a temporary dir, removed after a successful run
#   and kept -- its path printed -- after a failed one)
# - runs CMD, stops both servers on EXIT/INT/TERM, exits with CMD's status.
#
# Composes with scripts/with-openbao.sh: `with-kubernetes.sh with-openbao.sh cargo test`.
set -euo pipefail

script_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
lib_name=with-kubernetes
# shellcheck source=scripts/lib.sh
source "$script_dir/lib.sh"
require_cmd "$@"

for var in VSP_TEST_ETCD_BIN VSP_TEST_KUBE_APISERVER_BIN VSP_TEST_CLUSTER_PKI_BIN; do
    bin="${!var:-}"
    if [[ -z "$bin" || ! -x "$bin" ]]; then
        log "$var is not set to an executable (run via make, which builds it: make k8s-tools)"
        exit 1
    fi
done

make_work VSP_TEST_KUBE_DIR vsp-kubernetes
pki="$work/pki"

etcd_pid=""
apiserver_pid=""

stop_servers() {
    # The apiserver first, so it does not spend its shutdown retrying a gone etcd.
    stop_and_reap "$apiserver_pid"
    stop_and_reap "$etcd_pid"
}
kept_message() { echo "logs kept in $work (etcd.log, kube-apiserver.log)"; }
install_traps

# A free port below the usual ephemeral range (32768+), so outgoing connections don't take it.
free_port() {
    local p
    for _ in $(seq 50); do
        p=$((26000 + RANDOM % 6000))
        if ! port_in_use "$p"; then echo "$p"; return 0; fi
    done
    log "no free port found"; return 1
}

"$VSP_TEST_CLUSTER_PKI_BIN" "$pki"

# --- etcd ------------------------------------------------------------------------------
started=0
for attempt in 1 2 3 4 5; do
    etcd_port="$(free_port)"; peer_port="$(free_port)"
    [[ "$etcd_port" != "$peer_port" ]] || continue
    rm -rf "$work/etcd"
    etcd_url="http://127.0.0.1:$etcd_port"
    peer_url="http://127.0.0.1:$peer_port"
    # setsid: Ctrl-C in the terminal reaches this script only; the trap stops the server.
    setsid "$VSP_TEST_ETCD_BIN" --name vsp-test --data-dir "$work/etcd" \
        --listen-client-urls "$etcd_url" --advertise-client-urls "$etcd_url" \
        --listen-peer-urls "$peer_url" --initial-advertise-peer-urls "$peer_url" \
        --initial-cluster "vsp-test=$peer_url" --unsafe-no-fsync --log-level warn \
        >"$work/etcd.log" 2>&1 </dev/null &
    etcd_pid=$!
    deadline=$((SECONDS + 30))
    while ((SECONDS < deadline)) && kill -0 "$etcd_pid" 2>/dev/null; do
        if curl -fs --max-time 2 "$etcd_url/health" 2>/dev/null | grep -q '"health":"true"'; then
            started=1; break
        fi
        sleep 0.1
    done
    [[ "$started" -eq 1 ]] && break
    stop_and_reap "$etcd_pid"; etcd_pid=""
    log "etcd attempt $attempt failed; last log lines:"; tail -n 5 "$work/etcd.log" >&2 || true
done
[[ "$started" -eq 1 ]] || { log "could not start etcd"; exit 1; }

# --- kube-apiserver ----------------------------------------------------------------------
admin_curl() {
    curl -s -o /dev/null -w '%{http_code}' --max-time 5 --cacert "$pki/ca.crt" \
        --cert "$pki/admin.crt" --key "$pki/admin.key" "$@" 2>/dev/null || true
}

started=0
for attempt in 1 2 3 4 5; do
    port="$(free_port)"
    server="https://127.0.0.1:$port"
    # Flags after controller-runtime's envtest (pkg/internal/testing/controlplane):
    # RBAC, no ServiceAccount admission (no controller-manager creates default SAs),
    # a service-account issuer and keys so TokenRequest and TokenReview work. No
    # endpoint reconciler: the `kubernetes` Service cannot point at a loopback address.
    setsid "$VSP_TEST_KUBE_APISERVER_BIN" \
        --etcd-servers "$etcd_url" \
        --advertise-address 127.0.0.1 --bind-address 127.0.0.1 --secure-port "$port" \
        --cert-dir "$work/apiserver-certs" \
        --tls-cert-file "$pki/apiserver.crt" --tls-private-key-file "$pki/apiserver.key" \
        --client-ca-file "$pki/ca.crt" \
        --authorization-mode RBAC \
        --disable-admission-plugins ServiceAccount \
        --service-cluster-ip-range 10.0.0.0/24 \
        --allow-privileged=true \
        --service-account-issuer "$server/" \
        --service-account-key-file "$pki/sa.pub" \
        --service-account-signing-key-file "$pki/sa.key" \
        --profiling=false \
        --endpoint-reconciler-type none \
        >"$work/kube-apiserver.log" 2>&1 </dev/null &
    apiserver_pid=$!
    deadline=$((SECONDS + 120))
    while ((SECONDS < deadline)) && kill -0 "$apiserver_pid" 2>/dev/null; do
        if [[ "$(admin_curl "$server/readyz")" == 200 ]]; then started=1; break; fi
        sleep 0.2
    done
    [[ "$started" -eq 1 ]] && break
    stop_and_reap "$apiserver_pid"; apiserver_pid=""
    log "kube-apiserver attempt $attempt on port $port failed; last log lines:"
    tail -n 5 "$work/kube-apiserver.log" >&2 || true
done
[[ "$started" -eq 1 ]] || { log "could not start kube-apiserver"; exit 1; }

start_watchdog "$apiserver_pid" "$etcd_pid"

cat >"$work/admin.kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: vsp-test
  cluster:
    server: $server
    certificate-authority: $pki/ca.crt
users:
- name: vsp-test-admin
  user:
    client-certificate: $pki/admin.crt
    client-key: $pki/admin.key
contexts:
- name: vsp-test
  context:
    cluster: vsp-test
    user: vsp-test-admin
current-context: vsp-test
EOF

log "kube-apiserver $("$VSP_TEST_KUBE_APISERVER_BIN" --version | awk '{print $2}') at $server, etcd at $etcd_url (logs: $work)"
export VSP_TEST_KUBE_SERVER="$server"
export VSP_TEST_KUBECONFIG="$work/admin.kubeconfig"
export VSP_TEST_KUBE_CA_FILE="$pki/ca.crt"
export VSP_TEST_KUBE_ADMIN_CERT_FILE="$pki/admin.crt"
export VSP_TEST_KUBE_ADMIN_KEY_FILE="$pki/admin.key"
mkdir -p "$work/run"
export VSP_TEST_KUBE_RUN_DIR="$work/run"

run_cmd "$@"
