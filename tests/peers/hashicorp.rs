//! HashiCorp's `vault-csi-provider` (built by `make peer-provider` from its
//! release tarball, `tests/peers/csi-provider/build.sh`) as a process next to
//! ours, for `make bench` (section 6) and `make compat`.
//!
//! It is run as its DaemonSet runs it, as far as one machine allows: its
//! gRPC socket in a providers directory, `rest.InClusterConfig()` satisfied
//! by the test kube-apiserver (`scripts/with-kubernetes.sh`) with a service
//! account that may `get` and `create` Secrets in its namespace (its HMAC key
//! Secret), the service-account files on a tmpfs in a private mount
//! namespace (`unshare -m`), so the host's `/var/run/secrets` is untouched.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::kube::Kube;

/// The Kubernetes namespace the peer runs in (its HMAC key Secret lives there).
pub const PEER_NAMESPACE: &str = "vault-csi-provider";

/// Which build of HashiCorp's provider.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Variant {
    /// The release as published.
    Stock,
    /// client-go's client-side rate limit (5 QPS, burst 10) lifted, nothing
    /// else changed: for engine-to-engine comparisons only.
    Unthrottled,
}

impl Variant {
    pub fn binary_name(self) -> &'static str {
        match self {
            Variant::Stock => "vault-csi-provider",
            Variant::Unthrottled => "vault-csi-provider-unthrottled",
        }
    }
}

/// Why the peer cannot run here, in one sentence; None when it can.
pub fn unavailable() -> Option<String> {
    let tarball = tarball();
    if !tarball.exists() {
        return Some(format!(
            "HashiCorp's provider source tarball is absent (VSP_PEER_PROVIDER_TARBALL = {})",
            tarball.display()
        ));
    }
    for variant in [Variant::Stock, Variant::Unthrottled] {
        let bin = binary(variant);
        if !bin.exists() {
            return Some(format!(
                "{} is not built (run `make peer-provider`)",
                bin.display()
            ));
        }
    }
    if std::env::var("VSP_TEST_KUBE_SERVER").map_or(true, |s| s.is_empty()) {
        return Some(
            "no kube-apiserver for it (VSP_TEST_KUBE_SERVER is unset: run through the Makefile, \
             which starts one with scripts/with-kubernetes.sh)"
                .to_owned(),
        );
    }
    if !Command::new("unshare")
        .args(["-m", "true"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
    {
        return Some("`unshare -m` fails here (it needs root)".to_owned());
    }
    None
}

/// The release tarball (`VSP_PEER_PROVIDER_TARBALL`, relative to the repository).
pub fn tarball() -> PathBuf {
    let path = std::env::var("VSP_PEER_PROVIDER_TARBALL")
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "../shared/peers/vault-csi-provider-v1.7.4.tar.gz".to_owned());
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// The release's version, from the tarball's top directory (`vault-csi-provider-vX.Y.Z/`).
pub fn version() -> String {
    let output = Command::new("tar")
        .arg("-tzf")
        .arg(tarball())
        .output()
        .expect("run tar");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .next()
        .and_then(|l| l.split('/').next())
        .and_then(|top| top.strip_prefix("vault-csi-provider-"))
        .unwrap_or("?")
        .to_owned()
}

/// `$VSP_PEER_PROVIDER_DIR/<name>`, else the tool cache's `peers/bin/<name>`.
pub fn binary(variant: Variant) -> PathBuf {
    let dir = std::env::var("VSP_PEER_PROVIDER_DIR")
        .ok()
        .filter(|s| !s.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let tools = std::env::var("VSP_TOOLS_DIR").unwrap_or_else(|_| {
                format!(
                    "{}/.cache/vault-secrets-provider",
                    std::env::var("HOME").unwrap_or_default()
                )
            });
            Path::new(&tools).join("peers/bin")
        });
    dir.join(variant.binary_name())
}

/// The peer's identity on the test kube-apiserver: a service account in
/// [`PEER_NAMESPACE`] allowed to `get` and `create` Secrets there, and a token
/// of it (what kubelet would mount into its pod).
pub struct PeerAccount {
    pub token: String,
}

impl PeerAccount {
    /// Creates what is missing (idempotent) and mints a token.
    pub async fn ensure(kube: &Kube) -> PeerAccount {
        let ns = PEER_NAMESPACE;
        kube.create_if_absent(json!({
            "apiVersion": "v1", "kind": "Namespace", "metadata": { "name": ns }
        }))
        .await;
        kube.create_if_absent(json!({
            "apiVersion": "v1", "kind": "ServiceAccount",
            "metadata": { "name": "vault-csi-provider", "namespace": ns }
        }))
        .await;
        // As the Role of HashiCorp's Helm chart for the provider.
        kube.create_if_absent(json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
            "metadata": { "name": "vault-csi-provider-role", "namespace": ns },
            "rules": [
                { "apiGroups": [""], "resources": ["secrets"],
                  "resourceNames": ["vault-csi-provider-hmac-key"], "verbs": ["get"] },
                { "apiGroups": [""], "resources": ["secrets"], "verbs": ["create"] }
            ]
        }))
        .await;
        kube.create_if_absent(json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": { "name": "vault-csi-provider-rolebinding", "namespace": ns },
            "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                         "name": "vault-csi-provider-role" },
            "subjects": [{ "kind": "ServiceAccount", "name": "vault-csi-provider", "namespace": ns }]
        }))
        .await;
        PeerAccount {
            token: kube.token(ns, "vault-csi-provider", &[]).await,
        }
    }
}

/// One running `vault-csi-provider`; killed on drop.
pub struct PeerProvider {
    pub variant: Variant,
    child: Child,
    dir: tempfile::TempDir,
}

impl PeerProvider {
    /// Starts `variant` with `-vault-addr vault_addr`, serving
    /// `<providers_dir>/vault.sock`; returns once the socket exists.
    pub fn start(
        variant: Variant,
        vault_addr: &str,
        kube: &Kube,
        account: &PeerAccount,
    ) -> PeerProvider {
        let dir = tempfile::Builder::new()
            .prefix("vsp-peer.")
            .tempdir()
            .expect("tempdir");
        let sa = dir.path().join("serviceaccount");
        std::fs::create_dir(&sa).expect("mkdir serviceaccount");
        std::fs::write(sa.join("token"), &account.token).expect("write token");
        std::fs::write(sa.join("ca.crt"), &kube.ca_pem).expect("write ca.crt");
        std::fs::write(sa.join("namespace"), PEER_NAMESPACE).expect("write namespace");
        let providers = dir.path().join("providers");
        std::fs::create_dir(&providers).expect("mkdir providers");
        let socket = providers.join("vault.sock");
        let url = url::Url::parse(&kube.server).expect("kube server URL");
        let log = std::fs::File::create(dir.path().join("peer.log")).expect("peer log");
        // The service-account files go on a tmpfs visible to this process only.
        // /var/run/secrets is used when it exists; else a tmpfs over /var/run
        // (private to the peer, which needs nothing else from it) holds it.
        let script = r#"set -e
if [ -d /var/run/secrets ]; then mount -t tmpfs tmpfs /var/run/secrets
else mount -t tmpfs tmpfs /var/run; fi
mkdir -p /var/run/secrets/kubernetes.io/serviceaccount
cp "$1"/token "$1"/ca.crt "$1"/namespace /var/run/secrets/kubernetes.io/serviceaccount/
shift
exec "$@""#;
        let child = Command::new("unshare")
            .args(["-m", "--propagation", "private", "sh", "-c", script, "sh"])
            .arg(&sa)
            .arg(binary(variant))
            .arg("-endpoint")
            .arg(&socket)
            .args(["-health-addr", "127.0.0.1:0", "-log-level", "warn"])
            .args(["-vault-addr", vault_addr])
            .env(
                "KUBERNETES_SERVICE_HOST",
                url.host_str().expect("kube host"),
            )
            .env(
                "KUBERNETES_SERVICE_PORT",
                url.port_or_known_default().expect("kube port").to_string(),
            )
            .env_remove("VAULT_ADDR")
            .env_remove("VAULT_TOKEN")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log"))
            .stderr(log)
            .spawn()
            .expect("spawn unshare");
        let mut peer = PeerProvider {
            variant,
            child,
            dir,
        };
        let started = Instant::now();
        while !socket.exists() {
            if let Ok(Some(status)) = peer.child.try_wait() {
                panic!(
                    "{} exited with {status} before serving; its log:\n{}",
                    variant.binary_name(),
                    peer.log()
                );
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "{} did not create its socket within 20 s; its log:\n{}",
                variant.binary_name(),
                peer.log()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        peer
    }

    /// The directory holding `vault.sock` (the driver's `--providers-dir`).
    pub fn providers_dir(&self) -> PathBuf {
        self.dir.path().join("providers")
    }

    /// The provider's own process (`unshare` and `sh` exec it in place).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("peer.log")).unwrap_or_default()
    }
}

impl Drop for PeerProvider {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
