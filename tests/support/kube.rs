//! A real Kubernetes control plane and the real Secrets Store CSI Driver.
//!
//! * [`Kube::shared`]: the run-wide kube-apiserver (with etcd) that
//!   `scripts/with-kubernetes.sh` starts (`make test` wraps `cargo test` in it),
//!   reached with its admin client certificate (`VSP_TEST_KUBE_*`). Tests isolate
//!   themselves in their own namespaces ([`Kube::namespace`]), so they run in
//!   parallel on it. Calls panic with the HTTP status and body on failure.
//! * [`Kube::driver_installed`]: once per test process, what an operator installs
//!   for the driver, from the driver module's own `deploy/` manifests: the CRDs, the
//!   CSIDriver object (with `tokenRequests` for audience `vault`, as the Helm chart's
//!   `tokenRequests` value adds) and the driver's RBAC; plus a token-reviewer service
//!   account (bound to `system:auth-delegator`) for OpenBao's Kubernetes auth.
//! * [`Driver`]: one `secrets-store-csi-driver` process (v1.5.x or v1.6.x) per test,
//!   with its own node name, CSI socket and kubelet directory, logged in as the
//!   driver's service account and finding our provider's socket in its providers
//!   directory. [`Driver::publish`] plays kubelet (`kubelet-sim`): NodePublishVolume
//!   for a pod's CSI volume, with the pod info, tokens and secrets kubelet would send.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{Value, json};
use tokio::sync::OnceCell;

use super::openbao::unique;
use super::provider::{Provider, files_in};

/// The driver's name (CSIDriver object, pod volumes).
pub const DRIVER_NAME: &str = "secrets-store.csi.k8s.io";
/// The audience kubelet mints pod tokens for (CSIDriver `tokenRequests`), our
/// provider's default `audience`.
pub const TOKEN_AUDIENCE: &str = "vault";
/// How long tests wait for the driver's controllers or the apiserver to converge.
const CONVERGE: Duration = Duration::from_secs(60);

const RUN_VIA_MAKE: &str = "run the tests via `make test`, which builds the Kubernetes tools \
     (make k8s-tools) and starts a control plane (scripts/with-kubernetes.sh)";

fn env(name: &str) -> String {
    match std::env::var(name) {
        Ok(v) if !v.is_empty() => v,
        _ => panic!("{name} is not set: {RUN_VIA_MAKE}"),
    }
}

/// The admin's handle on the run-wide kube-apiserver.
pub struct Kube {
    /// `https://127.0.0.1:<port>`.
    pub server: String,
    /// The cluster CA (PEM), which signed the apiserver's serving certificate.
    pub ca_pem: String,
    /// An admin kubeconfig (client certificate, `system:masters`).
    pub kubeconfig: PathBuf,
    /// Where files that live as long as the control plane go.
    run_dir: PathBuf,
    client: reqwest::Client,
}

impl std::fmt::Debug for Kube {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kube")
            .field("server", &self.server)
            .finish_non_exhaustive()
    }
}

/// What [`Kube::driver_installed`] set up.
#[derive(Debug)]
pub struct DriverInstall {
    /// Kubeconfig for the driver: its own service account's token.
    pub driver_kubeconfig: PathBuf,
    /// A token of `kube-system/vsp-token-reviewer`, allowed to call TokenReview.
    pub reviewer_jwt: String,
}

impl Kube {
    /// The run-wide control plane from scripts/with-kubernetes.sh.
    pub fn shared() -> &'static Kube {
        static SHARED: OnceLock<Kube> = OnceLock::new();
        SHARED.get_or_init(|| {
            let read = |var: &str| {
                let path = env(var);
                std::fs::read(&path).unwrap_or_else(|e| panic!("read {var}={path}: {e}"))
            };
            let ca = read("VSP_TEST_KUBE_CA_FILE");
            let mut identity = read("VSP_TEST_KUBE_ADMIN_CERT_FILE");
            identity.extend(read("VSP_TEST_KUBE_ADMIN_KEY_FILE"));
            let client = reqwest::Client::builder()
                // Each #[tokio::test] has its own runtime while this client lives for the
                // whole process: pooled connections would belong to a runtime that may be gone.
                .pool_max_idle_per_host(0)
                .no_proxy()
                .tls_certs_only([reqwest::Certificate::from_pem(&ca).expect("cluster CA")])
                .identity(reqwest::Identity::from_pem(&identity).expect("admin identity"))
                .connect_timeout(Duration::from_secs(5))
                .timeout(Duration::from_secs(60))
                .build()
                .expect("build reqwest client");
            let run_dir = PathBuf::from(env("VSP_TEST_KUBE_RUN_DIR"));
            Kube {
                server: env("VSP_TEST_KUBE_SERVER"),
                ca_pem: String::from_utf8(ca).expect("PEM is text"),
                kubeconfig: PathBuf::from(env("VSP_TEST_KUBECONFIG")),
                run_dir,
                client,
            }
        })
    }

    /// Any request; returns (status, body as JSON, Null when empty). `path` starts
    /// with `/api` or `/apis`.
    pub async fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
        content_type: &str,
    ) -> (u16, Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("HTTP method");
        let mut req = self
            .client
            .request(method.clone(), format!("{}{path}", self.server));
        if let Some(b) = body {
            req = req.header("Content-Type", content_type).body(b.to_string());
        }
        let resp = req
            .send()
            .await
            .unwrap_or_else(|e| panic!("kube-apiserver {method} {path}: {e}"));
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        let value = if text.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        (status, value)
    }

    /// Creates `object` (its apiVersion, kind and namespace say where); returns it as
    /// stored. Panics on any failure.
    pub async fn create(&self, object: Value) -> Value {
        let path = collection_path(&object);
        let (status, body) = self
            .request("POST", &path, Some(&object), "application/json")
            .await;
        assert!(
            (200..300).contains(&status),
            "create {} {:?}: HTTP {status}: {body}",
            object["kind"],
            object["metadata"]["name"]
        );
        body
    }

    /// Creates every object of a YAML manifest (documents separated by `---`), in
    /// order; returns them as stored.
    pub async fn create_all(&self, yaml: &str) -> Vec<Value> {
        let mut created = Vec::new();
        for object in manifests_from_str(yaml) {
            created.push(self.create(object).await);
        }
        created
    }

    /// Creates `object` unless one of that name exists (cluster-wide set-up that any
    /// test process may have done already).
    pub async fn create_if_absent(&self, object: Value) {
        let path = collection_path(&object);
        let (status, body) = self
            .request("POST", &path, Some(&object), "application/json")
            .await;
        assert!(
            (200..300).contains(&status) || status == 409,
            "create {} {:?}: HTTP {status}: {body}",
            object["kind"],
            object["metadata"]["name"]
        );
    }

    /// GET; None on 404.
    pub async fn get(&self, path: &str) -> Option<Value> {
        match self.request("GET", path, None, "").await {
            (200, body) => Some(body),
            (404, _) => None,
            (status, body) => panic!("GET {path}: HTTP {status}: {body}"),
        }
    }

    /// Polls `path` until it exists and `ready` holds for it (up to a minute); returns
    /// the object. Any other answer counts as "not yet" (e.g. 429 "storage is
    /// (re)initializing" just after a CRD is established). `what` names the awaited
    /// state in the panic message.
    pub async fn wait_for(&self, path: &str, what: &str, ready: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + CONVERGE;
        loop {
            let (status, body) = self.request("GET", path, None, "").await;
            if status == 200 && ready(&body) {
                return body;
            }
            assert!(
                Instant::now() < deadline,
                "{path}: not {what} after {CONVERGE:?}; last: HTTP {status}: {body}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// A fresh namespace `t-<prefix>-<hex>`; returns its name.
    pub async fn namespace(&self, prefix: &str) -> String {
        let name = unique(prefix);
        self.create(json!({
            "apiVersion": "v1", "kind": "Namespace", "metadata": { "name": name }
        }))
        .await;
        name
    }

    /// Creates a service account.
    pub async fn service_account(&self, namespace: &str, name: &str) {
        self.create(json!({
            "apiVersion": "v1", "kind": "ServiceAccount",
            "metadata": { "name": name, "namespace": namespace }
        }))
        .await;
    }

    /// Mints a token for a service account (TokenRequest).
    pub async fn token(&self, namespace: &str, account: &str, audiences: &[&str]) -> String {
        let path = format!("/api/v1/namespaces/{namespace}/serviceaccounts/{account}/token");
        let request = json!({
            "apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
            "spec": { "audiences": audiences, "expirationSeconds": 6 * 3600 }
        });
        let (status, body) = self
            .request("POST", &path, Some(&request), "application/json")
            .await;
        assert_eq!(status, 201, "TokenRequest {namespace}/{account}: {body}");
        body["status"]["token"]
            .as_str()
            .expect("status.token")
            .to_owned()
    }

    /// Installs the driver's cluster-wide objects once per process (see the module doc).
    pub async fn driver_installed(&'static self) -> &'static DriverInstall {
        static INSTALL: OnceCell<DriverInstall> = OnceCell::const_new();
        INSTALL.get_or_init(|| self.install_driver()).await
    }

    async fn install_driver(&self) -> DriverInstall {
        let v15 = DriverVersion::V1_5.dir().join("deploy");
        let v16 = DriverVersion::V1_6.dir().join("deploy");

        // The CRDs (the same in both lines; v1.6's are newer).
        for crd in [
            "secrets-store.csi.x-k8s.io_secretproviderclasses.yaml",
            "secrets-store.csi.x-k8s.io_secretproviderclasspodstatuses.yaml",
        ] {
            for object in manifests(&v16.join(crd)) {
                let name = object["metadata"]["name"]
                    .as_str()
                    .expect("name")
                    .to_owned();
                self.create_if_absent(object).await;
                self.wait_for(
                    &format!("/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}"),
                    "Established",
                    |crd| condition_true(crd, "Established"),
                )
                .await;
            }
        }
        // Served once discovery has them.
        for plural in ["secretproviderclasses", "secretproviderclasspodstatuses"] {
            self.wait_for(
                &format!("/apis/secrets-store.csi.x-k8s.io/v1/{plural}"),
                "served",
                |_| true,
            )
            .await;
        }

        // The CSIDriver object kubelet reads: the v1.6 manifest (requiresRepublish),
        // plus the token kubelet must mint for the pod.
        for mut object in manifests(&v16.join("csidriver.yaml")) {
            object["spec"]["tokenRequests"] = json!([{ "audience": TOKEN_AUDIENCE }]);
            self.create_if_absent(object).await;
        }

        // The driver's RBAC: v1.5.x's manifests are v1.6.x's plus rotation (secrets
        // list/watch) and token requests; both lines run as the same service account.
        for dir in [&v16, &v15] {
            let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
                .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
                .map(|e| e.expect("dir entry").path())
                .filter(|p| {
                    p.file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with("rbac-"))
                })
                .collect();
            files.sort();
            for file in files {
                for object in manifests(&file) {
                    self.create_if_absent(object).await;
                }
            }
        }
        let driver_token = self
            .token("kube-system", "secrets-store-csi-driver", &[])
            .await;
        std::fs::create_dir_all(&self.run_dir).expect("run dir");
        let driver_kubeconfig = self
            .run_dir
            .join(format!("driver-{}.kubeconfig", std::process::id()));
        self.write_kubeconfig(&driver_kubeconfig, &driver_token);

        // The reviewer OpenBao calls TokenReview with.
        self.create_if_absent(json!({
            "apiVersion": "v1", "kind": "ServiceAccount",
            "metadata": { "name": "vsp-token-reviewer", "namespace": "kube-system" }
        }))
        .await;
        self.create_if_absent(json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": { "name": "vsp-token-reviewer" },
            "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                         "name": "system:auth-delegator" },
            "subjects": [{ "kind": "ServiceAccount", "name": "vsp-token-reviewer",
                           "namespace": "kube-system" }]
        }))
        .await;
        let reviewer_jwt = self.token("kube-system", "vsp-token-reviewer", &[]).await;

        DriverInstall {
            driver_kubeconfig,
            reviewer_jwt,
        }
    }

    fn write_kubeconfig(&self, path: &Path, token: &str) {
        let ca_file = env("VSP_TEST_KUBE_CA_FILE");
        let config = format!(
            "apiVersion: v1\nkind: Config\n\
             clusters:\n- name: vsp-test\n  cluster:\n    server: {}\n    certificate-authority: {ca_file}\n\
             users:\n- name: driver\n  user:\n    token: {token}\n\
             contexts:\n- name: vsp-test\n  context:\n    cluster: vsp-test\n    user: driver\n\
             current-context: vsp-test\n",
            self.server
        );
        std::fs::write(path, config).expect("write kubeconfig");
        set_mode(path, 0o600);
    }
}

/// The REST path of the collection `object` belongs in (the plural is the lowercased
/// kind + `s`, `es` after an `s`, `ies` for a final `y`: right for every kind these tests
/// create).
pub fn collection_path(object: &Value) -> String {
    let api_version = object["apiVersion"].as_str().expect("apiVersion");
    let kind = object["kind"].as_str().expect("kind").to_ascii_lowercase();
    let plural = if kind.ends_with('s') {
        format!("{kind}es")
    } else if let Some(stem) = kind.strip_suffix('y') {
        format!("{stem}ies")
    } else {
        format!("{kind}s")
    };
    let root = if api_version.contains('/') {
        format!("/apis/{api_version}")
    } else {
        format!("/api/{api_version}")
    };
    match object["metadata"]["namespace"].as_str() {
        Some(ns) => format!("{root}/namespaces/{ns}/{plural}"),
        None => format!("{root}/{plural}"),
    }
}

/// The REST path of `object` itself.
pub fn object_path(object: &Value) -> String {
    format!(
        "{}/{}",
        collection_path(object),
        object["metadata"]["name"].as_str().expect("metadata.name")
    )
}

/// Every document of a YAML manifest file, as JSON.
pub fn manifests(path: &Path) -> Vec<Value> {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    manifests_from_str(&text)
}

/// Every (non-empty) document of a YAML manifest, as JSON.
pub fn manifests_from_str(yaml: &str) -> Vec<Value> {
    serde_yaml_ng::Deserializer::from_str(yaml)
        .map(|doc| {
            serde::Deserialize::deserialize(doc)
                .unwrap_or_else(|e| panic!("parse manifest: {e}\n{yaml}"))
        })
        .filter(|v: &Value| !v.is_null())
        .collect()
}

fn condition_true(object: &Value, kind: &str) -> bool {
    object["status"]["conditions"].as_array().is_some_and(|cs| {
        cs.iter()
            .any(|c| c["type"] == kind && c["status"] == "True")
    })
}

/// The value of `data.<key>` of a Secret, decoded.
pub fn secret_value(secret: &Value, key: &str) -> Option<String> {
    let encoded = secret["data"][key].as_str()?;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .expect("Secret data is base64");
    Some(String::from_utf8(bytes).expect("utf-8 Secret value"))
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

/// A driver line the tests run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DriverVersion {
    /// v1.5.x: grpc-go 1.56.3; rotation by its own reconciler (polling).
    V1_5,
    /// v1.6.x: rotation on kubelet's republish (CSIDriver requiresRepublish).
    V1_6,
}

impl DriverVersion {
    /// `v1.5` or `v1.6`.
    pub fn line(self) -> &'static str {
        match self {
            Self::V1_5 => "v1.5",
            Self::V1_6 => "v1.6",
        }
    }

    /// The build directory: the binary and the module's `deploy/` manifests.
    fn dir(self) -> PathBuf {
        Path::new(&env("VSP_TEST_K8S_TOOLS"))
            .join(format!("secrets-store-csi-driver-{}", self.line()))
    }
}

/// What kubelet-sim reported for one NodePublishVolume / NodeUnpublishVolume.
#[derive(Clone, Debug)]
pub struct Publish {
    /// Whether the call succeeded.
    pub ok: bool,
    /// The gRPC code name on failure (e.g. `PermissionDenied`).
    pub grpc_code: String,
    /// The status message on failure (what kubelet puts in the pod's events).
    pub message: String,
    /// The pod volume's target path (`…/pods/<uid>/volumes/kubernetes.io~csi/<volume>/mount`).
    pub target_path: PathBuf,
}

impl Publish {
    /// Asserts success.
    pub fn expect_ok(&self) -> &Self {
        assert!(
            self.ok,
            "CSI call failed: {} {}",
            self.grpc_code, self.message
        );
        self
    }

    /// Asserts a failure with `code` whose message contains `needle`.
    pub fn expect_err(&self, code: &str, needle: &str) {
        assert!(!self.ok, "CSI call succeeded but {code} was expected");
        assert_eq!(self.grpc_code, code, "message: {}", self.message);
        assert!(
            self.message.contains(needle),
            "{code} message {:?} lacks {needle:?}",
            self.message
        );
    }

    /// Whether the target path is a tmpfs mount point now.
    pub fn is_tmpfs(&self) -> bool {
        mount_points().get(&self.target_path).map(String::as_str) == Some("tmpfs")
    }

    /// The files the pod sees (following the atomic writer's symlinks).
    pub fn files(&self) -> BTreeMap<String, (Vec<u8>, u32)> {
        if !self.target_path.exists() {
            return BTreeMap::new();
        }
        files_in(&self.target_path)
    }

    /// One file's content as text.
    pub fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.target_path.join(name))
            .unwrap_or_else(|e| panic!("read {name}: {e}"))
    }
}

/// This process's effective user id, from /proc/self/status.
fn effective_uid() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    line.split_whitespace().nth(2)?.parse().ok()
}

/// Mount points → filesystem type, from /proc/self/mountinfo.
fn mount_points() -> BTreeMap<PathBuf, String> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    info.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            let sep = fields.iter().position(|f| *f == "-")?;
            let point = fields.get(4)?.replace("\\040", " ");
            Some((PathBuf::from(point), fields.get(sep + 1)?.to_string()))
        })
        .collect()
}

/// A running `secrets-store-csi-driver` for one node.
pub struct Driver {
    /// Its line.
    pub version: DriverVersion,
    /// Its `--nodeid`; pods for it need `spec.nodeName` = this.
    pub node: String,
    child: Option<Child>,
    dir: tempfile::TempDir,
    log_path: PathBuf,
}

impl Driver {
    /// A node name to give pods before the driver for it starts (the driver caches
    /// the objects it needs when it starts; creating them first avoids waiting for its
    /// watches).
    pub fn new_node_name() -> String {
        unique("node")
    }

    /// Starts the driver for `node`, finding `provider`'s socket, with `extra` flags
    /// (e.g. rotation); waits for its CSI socket.
    pub async fn start(
        version: DriverVersion,
        node: &str,
        provider: &Provider,
        extra: &[&str],
    ) -> Driver {
        assert!(
            effective_uid() == Some(0),
            "the driver mounts a tmpfs for every volume: run the Kubernetes tests as root"
        );
        let install = Kube::shared().driver_installed().await;
        let dir = tempfile::Builder::new()
            .prefix("vsp-driver.")
            .tempdir()
            .expect("tempdir");
        let log_path = dir.path().join("driver.log");
        let log = std::fs::File::create(&log_path).expect("create driver log");
        let bin = version.dir().join("secrets-store-csi-driver");
        let providers = provider.providers_dir();
        let child = Command::new(&bin)
            .arg(format!(
                "--endpoint=unix://{}",
                dir.path().join("csi.sock").display()
            ))
            .arg(format!("--nodeid={node}"))
            .arg(format!("--provider-volume={}", providers.display()))
            // Not /etc/kubernetes/secrets-store-csi-providers: only our provider's directory.
            .arg(format!(
                "--additional-provider-volume-paths={}",
                providers.display()
            ))
            // "0" turns the metrics server off: nothing listens beyond the CSI socket.
            .args(["--metrics-addr=0", "-v=2"])
            .args(extra)
            .env("KUBECONFIG", &install.driver_kubeconfig)
            .env_remove("KUBERNETES_SERVICE_HOST")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", bin.display()));
        let mut driver = Driver {
            version,
            node: node.to_owned(),
            child: Some(child),
            dir,
            log_path,
        };
        let socket = driver.dir.path().join("csi.sock");
        let deadline = Instant::now() + CONVERGE;
        while !socket.exists() {
            if let Some(status) = driver
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!(
                    "driver exited with {status} before serving:\n{}",
                    driver.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "driver {} did not create its socket:\n{}",
                version.line(),
                driver.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        driver
    }

    /// Everything the driver logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// kubelet's NodePublishVolume for volume `volume` of pod `namespace/pod`
    /// (again on a mounted volume: kubelet's republish).
    pub async fn publish(&self, namespace: &str, pod: &str, volume: &str) -> Publish {
        self.kubelet("publish", namespace, pod, volume).await
    }

    /// kubelet's NodeUnpublishVolume for that volume.
    pub async fn unpublish(&self, namespace: &str, pod: &str, volume: &str) -> Publish {
        self.kubelet("unpublish", namespace, pod, volume).await
    }

    async fn kubelet(&self, command: &str, namespace: &str, pod: &str, volume: &str) -> Publish {
        let bin = Path::new(&env("VSP_TEST_K8S_TOOLS")).join("bin/kubelet-sim");
        let output = tokio::process::Command::new(&bin)
            .arg(command)
            .arg("--kubeconfig")
            .arg(&Kube::shared().kubeconfig)
            .arg(format!(
                "--endpoint=unix://{}",
                self.dir.path().join("csi.sock").display()
            ))
            .arg("--pods-dir")
            .arg(self.dir.path().join("kubelet"))
            .args(["--namespace", namespace, "--pod", pod, "--volume", volume])
            .args(["--timeout", "90s"])
            .stdin(Stdio::null())
            .output()
            .await
            .unwrap_or_else(|e| panic!("spawn {}: {e}", bin.display()));
        assert!(
            output.status.success(),
            "kubelet-sim {command} failed ({}): {}\ndriver log:\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr),
            self.log()
        );
        let line = String::from_utf8_lossy(&output.stdout);
        let value: Value = serde_json::from_str(line.trim())
            .unwrap_or_else(|e| panic!("bad kubelet-sim output {line:?}: {e}"));
        Publish {
            ok: value["ok"].as_bool().unwrap_or(false),
            grpc_code: value["grpcCode"].as_str().unwrap_or_default().to_owned(),
            message: value["message"].as_str().unwrap_or_default().to_owned(),
            target_path: PathBuf::from(value["targetPath"].as_str().unwrap_or_default()),
        }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            // The test failed: its output shows what the driver did.
            eprintln!(
                "--- secrets-store-csi-driver {} log ---\n{}",
                self.version.line(),
                self.log()
            );
        }
        // Volumes a failed test left mounted (kubelet would unpublish them), deepest
        // first, so the temporary directory can go.
        let mut leftover: Vec<PathBuf> = mount_points()
            .into_keys()
            .filter(|p| p.starts_with(self.dir.path()))
            .collect();
        leftover.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
        for point in leftover {
            let _ = Command::new("umount").arg("-l").arg(&point).status();
        }
    }
}
