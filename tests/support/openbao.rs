//! A real OpenBao (or HashiCorp Vault, see [`super::flavour`]) for integration tests.
//!
//! * [`OpenBao::shared`]: the run-wide dev server that `scripts/with-openbao.sh` starts
//!   (`make test` wraps `cargo test` in it); found through `VSP_TEST_VAULT_ADDR` and
//!   `VSP_TEST_VAULT_TOKEN`. Tests isolate themselves in their own namespaces
//!   ([`deployment_namespace`], [`unique`]), so they can run in parallel on it.
//! * [`OpenBao::start_private`]: a dev server owned by one test (for tests that stop it),
//!   started from `VSP_TEST_BAO_BIN` and killed on drop.
//!
//! Admin calls use the root token and, where a namespace is given, `X-Vault-Namespace`
//! (`""` = the root namespace). They panic with the HTTP status and body on failure,
//! which is what a test wants. [`OpenBao::request`] is the non-panicking form, with any
//! token, for asserting on error responses. On HashiCorp Vault, which has no namespaces,
//! a namespace is a path prefix instead ([`flavour::root_request`]).
#![allow(dead_code)]

use std::collections::HashSet;
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener};
use std::ops::{Deref, DerefMut};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::flavour::{self, Server};

/// Handle on one OpenBao server, with its root token.
pub struct OpenBao {
    pub addr: String,
    pub root_token: String,
    client: reqwest::Client,
}

impl std::fmt::Debug for OpenBao {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenBao")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

/// Namespaces known to exist, per server (addr + root token: a new private server on a
/// reused port has another token), so concurrent tests don't re-create `admin` etc.
fn known_namespaces() -> &'static Mutex<HashSet<(String, String, String)>> {
    static KNOWN: OnceLock<Mutex<HashSet<(String, String, String)>>> = OnceLock::new();
    KNOWN.get_or_init(Default::default)
}

fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        // Each #[tokio::test] has its own runtime while `shared()` lives for the whole
        // process: pooled connections would belong to a runtime that may be gone.
        .pool_max_idle_per_host(0)
        .no_proxy()
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(60))
        .build()
        .expect("build reqwest client")
}

const RUN_VIA_MAKE: &str = "run the tests via `make test` (or `scripts/with-openbao.sh cargo test ...`), \
     which starts a real OpenBao server and sets VSP_TEST_VAULT_ADDR, VSP_TEST_VAULT_TOKEN and VSP_TEST_BAO_BIN";

impl OpenBao {
    /// A handle on any server (e.g. one a test started itself).
    pub fn new(addr: impl Into<String>, root_token: impl Into<String>) -> OpenBao {
        let root_token = root_token.into();
        super::secrets::register(&root_token);
        OpenBao {
            addr: addr.into().trim_end_matches('/').to_string(),
            root_token,
            client: http_client(),
        }
    }

    /// The run-wide server from scripts/with-openbao.sh (env VSP_TEST_VAULT_ADDR/TOKEN).
    pub fn shared() -> &'static OpenBao {
        static SHARED: OnceLock<OpenBao> = OnceLock::new();
        SHARED.get_or_init(|| {
            let get = |k: &str| match std::env::var(k) {
                Ok(v) if !v.is_empty() => v,
                _ => panic!("{k} is not set: {RUN_VIA_MAKE}"),
            };
            OpenBao::new(get("VSP_TEST_VAULT_ADDR"), get("VSP_TEST_VAULT_TOKEN"))
        })
    }

    /// A private dev server this test owns (for tests that stop it); killed on drop.
    pub async fn start_private() -> PrivateOpenBao {
        Self::start_private_with(&[]).await
    }

    /// Like [`start_private`](Self::start_private), with extra server arguments
    /// (e.g. `-config=<file>` declaring an audit device, which OpenBao only
    /// accepts from configuration).
    pub async fn start_private_with(extra_args: &[String]) -> PrivateOpenBao {
        let server = Server::current();
        let bin = server.bin();
        let dir = tempfile::Builder::new()
            .prefix("vsp-private-bao.")
            .tempdir()
            .expect("tempdir for private OpenBao");
        let token = format!("root-{}", random_hex(16));
        let mut last_err = String::new();
        for _attempt in 0..10 {
            let Some(port) = pick_port_pair() else {
                continue;
            };
            let log_path = dir.path().join(format!("openbao-{port}.log"));
            let log = std::fs::File::create(&log_path).expect("create OpenBao log");
            let child = Command::new(&bin)
                .args(["server", "-dev", "-dev-no-store-token"])
                .arg(format!("-dev-listen-address=127.0.0.1:{port}"))
                .args(extra_args)
                // Token via env so it does not show in `ps`.
                .env(server.dev_token_env(), &token)
                .env_remove("BAO_ADDR")
                .env_remove("VAULT_ADDR")
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("clone log fd"))
                .stderr(log)
                .spawn()
                .unwrap_or_else(|e| panic!("spawn {}: {e}", bin.display()));
            let mut private = PrivateOpenBao {
                bao: OpenBao::new(format!("http://127.0.0.1:{port}"), token.clone()),
                child: Some(child),
                pid_file: None,
                log_path: log_path.clone(),
                _dir: None,
            };
            private.record_pid();
            match private.wait_ready(Duration::from_secs(60)).await {
                Ok(()) => {
                    private._dir = Some(dir);
                    return private;
                }
                Err(e) => {
                    private.stop();
                    let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                    let tail: Vec<&str> = log.lines().rev().take(10).collect();
                    last_err = format!(
                        "port {port}: {e}; log tail:\n{}",
                        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                    );
                }
            }
        }
        panic!("could not start a private OpenBao: {last_err}");
    }

    /// A private dev server with a file audit device writing to `audit_log`, the way each
    /// server takes one: OpenBao only from its configuration file, Vault through the API
    /// (`sys/audit/<name>`), which OpenBao refuses.
    pub async fn start_private_audited(audit_log: &std::path::Path) -> PrivateOpenBao {
        match Server::current() {
            Server::OpenBao => {
                let config = audit_log.with_extension("hcl");
                std::fs::write(
                    &config,
                    format!(
                        "audit \"file\" \"count\" {{\n  options {{\n    file_path = \"{}\"\n  }}\n}}\n",
                        audit_log.display()
                    ),
                )
                .expect("write the audit configuration");
                Self::start_private_with(&[format!("-config={}", config.display())]).await
            }
            Server::Vault => {
                let private = Self::start_private().await;
                private
                    .api(
                        "POST",
                        "",
                        "sys/audit/count",
                        Some(json!({
                            "type": "file",
                            "options": { "file_path": audit_log.display().to_string() },
                        })),
                    )
                    .await;
                private
            }
        }
    }

    /// Any request, with any token (None = no token header), never panics on HTTP status:
    /// returns (status, body as JSON; Null when empty, a JSON string when not JSON).
    /// `path` is relative to `/v1/` and may carry a query (`secret/data/x?version=1`).
    /// `method` may be any HTTP method or `LIST`.
    pub async fn request(
        &self,
        token: Option<&str>,
        method: &str,
        namespace: &str,
        path: &str,
        body: Option<Value>,
    ) -> Result<(u16, Value), reqwest::Error> {
        let method = reqwest::Method::from_bytes(method.to_ascii_uppercase().as_bytes())
            .unwrap_or_else(|e| panic!("bad HTTP method {method:?}: {e}"));
        let (path, body) = flavour::root_request(namespace, path, body);
        let url = format!("{}/v1/{}", self.addr, path.trim_start_matches('/'));
        let mut req = self.client.request(method, url);
        if let Some(t) = token {
            req = req.header("X-Vault-Token", t);
        }
        let ns = namespace.trim_matches('/');
        if !ns.is_empty() && Server::current().has_namespaces() {
            req = req.header("X-Vault-Namespace", ns);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await?;
        let status = resp.status().as_u16();
        let text = resp.text().await?;
        let value = if text.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        Ok((status, value))
    }

    /// Admin call with the root token; panics with status + body on non-2xx.
    /// Returns Null for 204 (and any empty body).
    pub async fn api(
        &self,
        method: &str,
        namespace: &str,
        path: &str,
        body: Option<Value>,
    ) -> Value {
        let (status, value) = self.api_status(method, namespace, path, body).await;
        if !(200..300).contains(&status) {
            panic!(
                "OpenBao {method} {path} (namespace {namespace:?}) at {}: HTTP {status}: {value}",
                self.addr
            );
        }
        value
    }

    /// Like [`api`](Self::api) but returns the status instead of panicking on it
    /// (still panics when the server cannot be reached).
    pub async fn api_status(
        &self,
        method: &str,
        namespace: &str,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        match self
            .request(Some(&self.root_token), method, namespace, path, body)
            .await
        {
            Ok(r) => r,
            Err(e) => panic!(
                "OpenBao {method} {path} (namespace {namespace:?}) at {}: {e}",
                self.addr
            ),
        }
    }

    /// Creates every level of `path` (e.g. "admin/deployments/x" creates admin,
    /// admin/deployments, admin/deployments/x). Existing levels are fine (OpenBao answers
    /// 200 with the existing namespace); concurrent creation of the same level is retried.
    /// Nothing to create on Vault, where a namespace is only a path prefix.
    pub async fn create_namespace(&self, path: &str) {
        if !Server::current().has_namespaces() {
            return;
        }
        let mut parent = String::new();
        for name in path.split('/').filter(|s| !s.is_empty()) {
            let full = if parent.is_empty() {
                name.to_string()
            } else {
                format!("{parent}/{name}")
            };
            let key = (self.addr.clone(), self.root_token.clone(), full.clone());
            if !known_namespaces().lock().unwrap().contains(&key) {
                // A concurrent creation of the same namespace makes OpenBao answer 400
                // "namespace with that name exists and is currently being created or
                // deleted" until the other one finishes: retry that.
                let deadline = Instant::now() + Duration::from_secs(30);
                loop {
                    let (status, body) = self
                        .api_status("POST", &parent, &format!("sys/namespaces/{name}"), None)
                        .await;
                    if (200..300).contains(&status) || errors_contain(&body, "already exists") {
                        break;
                    }
                    if !errors_contain(&body, "being created") || Instant::now() > deadline {
                        panic!(
                            "create namespace {full:?} at {}: HTTP {status}: {body}",
                            self.addr
                        );
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                known_namespaces().lock().unwrap().insert(key);
            }
            parent = full;
        }
    }

    /// Mounts a secrets engine, e.g. ("ns", "secret", "kv", Some(json!({"version":"2"}))).
    /// An existing mount at that path is tolerated.
    pub async fn enable_secrets(
        &self,
        namespace: &str,
        mount: &str,
        kind: &str,
        options: Option<Value>,
    ) {
        let mut body = json!({ "type": kind });
        if let Some(o) = options {
            body["options"] = o;
        }
        let mount = mount.trim_matches('/');
        let (status, resp) = self
            .api_status(
                "POST",
                namespace,
                &format!("sys/mounts/{mount}"),
                Some(body),
            )
            .await;
        if !(200..300).contains(&status) && !errors_contain(&resp, "already in use") {
            panic!("mount {kind} at {mount:?} (namespace {namespace:?}): HTTP {status}: {resp}");
        }
    }

    /// Writes a KV v2 secret; returns the new version.
    pub async fn kv2_put(&self, namespace: &str, mount: &str, path: &str, data: Value) -> u64 {
        let api_path = format!(
            "{}/data/{}",
            mount.trim_matches('/'),
            path.trim_matches('/')
        );
        super::secrets::register_values(&data);
        let body = json!({ "data": data });
        // A freshly mounted KV v2 can briefly answer "upgrading" / no handler while it
        // sets itself up; retry those for a few seconds.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let (status, resp) = self
                .api_status("POST", namespace, &api_path, Some(body.clone()))
                .await;
            if (200..300).contains(&status) {
                return resp["data"]["version"].as_u64().unwrap_or_else(|| {
                    panic!("KV v2 write to {api_path} returned no version: {resp}")
                });
            }
            let transient =
                errors_contain(&resp, "upgrading") || errors_contain(&resp, "no handler for route");
            if !transient || Instant::now() > deadline {
                panic!(
                    "KV v2 write to {api_path:?} (namespace {namespace:?}): HTTP {status}: {resp}"
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Writes (creates or replaces) an ACL policy.
    pub async fn write_policy(&self, namespace: &str, name: &str, hcl: &str) {
        self.api(
            "PUT",
            namespace,
            &format!("sys/policies/acl/{name}"),
            Some(json!({ "policy": hcl })),
        )
        .await;
    }

    /// Enables an auth method at `mount`; an existing mount there is tolerated.
    pub async fn enable_auth(&self, namespace: &str, mount: &str, kind: &str) {
        let mount = mount.trim_matches('/');
        let (status, resp) = self
            .api_status(
                "POST",
                namespace,
                &format!("sys/auth/{mount}"),
                Some(json!({ "type": kind })),
            )
            .await;
        if !(200..300).contains(&status) && !errors_contain(&resp, "already in use") {
            panic!(
                "enable auth {kind} at {mount:?} (namespace {namespace:?}): HTTP {status}: {resp}"
            );
        }
    }

    /// Creates (or updates) an AppRole role with `policies` (as `token_policies`) and extra
    /// `params` (an object, e.g. `{"token_ttl": "1m"}`; may be Null); returns (role_id, secret_id).
    pub async fn approle(
        &self,
        namespace: &str,
        mount: &str,
        role: &str,
        policies: &[&str],
        params: Value,
    ) -> (String, String) {
        let mount = mount.trim_matches('/');
        let mut body = match params {
            Value::Null => json!({}),
            Value::Object(m) => Value::Object(m),
            other => panic!("approle params must be a JSON object, got {other}"),
        };
        body["token_policies"] = json!(policies);
        self.api(
            "POST",
            namespace,
            &format!("auth/{mount}/role/{role}"),
            Some(body),
        )
        .await;
        let resp = self
            .api(
                "GET",
                namespace,
                &format!("auth/{mount}/role/{role}/role-id"),
                None,
            )
            .await;
        let role_id = resp["data"]["role_id"]
            .as_str()
            .unwrap_or_else(|| panic!("no role_id in {resp}"))
            .to_string();
        let secret_id = self.new_secret_id(namespace, mount, role).await;
        (role_id, secret_id)
    }

    /// Generates a fresh secret ID for an AppRole role.
    pub async fn new_secret_id(&self, namespace: &str, mount: &str, role: &str) -> String {
        let mount = mount.trim_matches('/');
        let resp = self
            .api(
                "POST",
                namespace,
                &format!("auth/{mount}/role/{role}/secret-id"),
                None,
            )
            .await;
        let secret_id = resp["data"]["secret_id"]
            .as_str()
            .unwrap_or_else(|| panic!("no secret_id in response to secret-id generation"))
            .to_string();
        super::secrets::register(&secret_id);
        secret_id
    }

    /// AppRole login (`auth/<mount>/login` in `namespace`); returns the client token.
    pub async fn approle_login(
        &self,
        namespace: &str,
        mount: &str,
        role_id: &str,
        secret_id: &str,
    ) -> String {
        let mount = mount.trim_matches('/');
        let body = json!({ "role_id": role_id, "secret_id": secret_id });
        let (status, resp) = self
            .request(
                None,
                "POST",
                namespace,
                &format!("auth/{mount}/login"),
                Some(body),
            )
            .await
            .unwrap_or_else(|e| panic!("AppRole login at {}: {e}", self.addr));
        if status != 200 {
            panic!(
                "AppRole login (namespace {namespace:?}, mount {mount:?}): HTTP {status}: {resp}"
            );
        }
        let token = resp["auth"]["client_token"]
            .as_str()
            .unwrap_or_else(|| panic!("no auth.client_token in login response"))
            .to_string();
        super::secrets::register(&token);
        token
    }

    /// The accessors of the tokens that exist in `namespace`. On Vault, where the token
    /// store is shared, those whose login path lies under the namespace's prefix.
    pub async fn token_accessors(&self, namespace: &str) -> Vec<String> {
        let (status, body) = self
            .api_status("LIST", namespace, "auth/token/accessors", None)
            .await;
        if status == 404 {
            return Vec::new();
        }
        let all = body["data"]["keys"]
            .as_array()
            .unwrap_or_else(|| panic!("LIST auth/token/accessors: {body}"))
            .iter()
            .map(|k| k.as_str().expect("accessor").to_owned());
        let ns = namespace.trim_matches('/');
        if Server::current().has_namespaces() || ns.is_empty() {
            return all.collect();
        }
        let login_prefix = format!("auth/{ns}/");
        let mut accessors = Vec::new();
        for accessor in all {
            let (status, token) = self
                .api_status(
                    "POST",
                    "",
                    "auth/token/lookup-accessor",
                    Some(json!({ "accessor": accessor })),
                )
                .await;
            // A token may expire between the list and its lookup.
            if status == 200
                && token["data"]["path"]
                    .as_str()
                    .is_some_and(|p| p.starts_with(&login_prefix))
            {
                accessors.push(accessor);
            }
        }
        accessors
    }

    async fn is_ready(&self) -> Result<(), String> {
        let (status, body) = self
            .request(None, "GET", "", "sys/health", None)
            .await
            .map_err(|e| e.to_string())?;
        if status != 200 {
            return Err(format!("sys/health: HTTP {status}: {body}"));
        }
        // Make sure the server on this port is ours (it accepts our root token).
        let (status, _) = self
            .request(
                Some(&self.root_token),
                "GET",
                "",
                "auth/token/lookup-self",
                None,
            )
            .await
            .map_err(|e| e.to_string())?;
        if status != 200 {
            return Err(format!(
                "root token refused (HTTP {status}): another server on this port?"
            ));
        }
        Ok(())
    }
}

fn errors_contain(body: &Value, needle: &str) -> bool {
    let needle = needle.to_ascii_lowercase();
    body["errors"].as_array().is_some_and(|errs| {
        errs.iter().any(|e| {
            e.as_str()
                .is_some_and(|s| s.to_ascii_lowercase().contains(&needle))
        })
    })
}

fn random_hex(bytes: usize) -> String {
    (0..bytes)
        .map(|_| format!("{:02x}", rand::random::<u8>()))
        .collect()
}

/// A port P with P and P+1 free on 127.0.0.1 (the dev server's cluster listener takes
/// P+1). Chosen below the usual ephemeral range so outgoing connections don't take it;
/// a race with another process is handled by the caller retrying.
fn pick_port_pair() -> Option<u16> {
    for _ in 0..50 {
        let port = rand::random_range(10000u16..16000) * 2;
        let free = |p: u16| TcpListener::bind(SocketAddrV4::new(Ipv4Addr::LOCALHOST, p)).is_ok();
        if free(port) && free(port + 1) {
            return Some(port);
        }
    }
    None
}

/// A unique name for per-test isolation: `t-<prefix>-<8 random hex>`, with `prefix`
/// reduced to `[a-z0-9-]` (usable as a namespace, mount, role or policy name).
pub fn unique(prefix: &str) -> String {
    let clean: String = prefix
        .to_ascii_lowercase()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    let clean = clean.trim_matches('-');
    let clean: String = clean.chars().take(40).collect();
    format!("t-{}-{}", clean, random_hex(4))
}

/// Creates namespace `admin/deployments/<unique(prefix)>`, mounts KV v2 at `secret` and
/// enables AppRole at `approle` in it; returns the namespace path.
pub async fn deployment_namespace(bao: &OpenBao, prefix: &str) -> String {
    let ns = format!("admin/deployments/{}", unique(prefix));
    bao.create_namespace(&ns).await;
    bao.enable_secrets(&ns, "secret", "kv", Some(json!({ "version": "2" })))
        .await;
    bao.enable_auth(&ns, "approle", "approle").await;
    ns
}

/// A dev server owned by one test; derefs to [`OpenBao`]. Killed on drop.
pub struct PrivateOpenBao {
    bao: OpenBao,
    child: Option<Child>,
    pid_file: Option<PathBuf>,
    /// The server's log (stdout + stderr).
    pub log_path: PathBuf,
    _dir: Option<tempfile::TempDir>,
}

impl PrivateOpenBao {
    /// Kills the server and waits for it to exit. Idempotent. The address stays
    /// (nothing listens on it any more).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some(f) = self.pid_file.take() {
            let _ = std::fs::remove_file(f);
        }
    }

    /// The server's process id, while it runs (e.g. to send it SIGHUP, which
    /// makes OpenBao reload its `-config` file).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the server process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Lets scripts/with-openbao.sh kill the server if this test process dies without
    /// running destructors.
    fn record_pid(&mut self) {
        let (Some(dir), Some(child)) = (
            std::env::var_os("VSP_TEST_BAO_RUN_DIR"),
            self.child.as_ref(),
        ) else {
            return;
        };
        let f = PathBuf::from(dir).join(format!("{}.pid", child.id()));
        if std::fs::write(&f, child.id().to_string()).is_ok() {
            self.pid_file = Some(f);
        }
    }

    async fn wait_ready(&mut self, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        let mut last = String::from("not polled");
        while Instant::now() < deadline {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                return Err(format!("server exited early ({status})"));
            }
            match self.bao.is_ready().await {
                Ok(()) => return Ok(()),
                Err(e) => last = e,
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err(format!("not ready after {timeout:?}: {last}"))
    }
}

impl Deref for PrivateOpenBao {
    type Target = OpenBao;
    fn deref(&self) -> &OpenBao {
        &self.bao
    }
}

impl DerefMut for PrivateOpenBao {
    fn deref_mut(&mut self) -> &mut OpenBao {
        &mut self.bao
    }
}

impl Drop for PrivateOpenBao {
    fn drop(&mut self) {
        self.stop();
    }
}
