//! Our provider as a real process, the driver's real provider client, and a
//! tmpfs volume for the files.
//!
//! * [`Provider::start`] runs the `vault-secrets-provider serve` binary on a
//!   socket in a private providers directory and captures its log.
//! * [`DriverClient`] is the Go program in `tests/driver-client/`, built from
//!   the Secrets Store CSI Driver's own provider client at v1.5.x (grpc-go
//!   1.56.3, which sends the socket path as `:authority`) and v1.6.x; it calls
//!   our socket with `MountContent`, and the driver's atomic writer puts the
//!   files into the target directory.
//! * On HashiCorp Vault, a Mount's `vaultNamespace` is turned into path prefixes before
//!   it is sent ([`super::flavour`]), as the suites' set-up put the mounts there.
//! * [`Volume`] is that target directory: a tmpfs when we may mount one (root),
//!   otherwise a plain temporary directory.
//!
//! Every provider's whole log is checked for secrets when it is dropped
//! ([`super::secrets`]), so every test asserts that no secret is ever logged.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::flavour::prefix_attributes;

/// A running `vault-secrets-provider serve`.
pub struct Provider {
    child: Option<Child>,
    dir: tempfile::TempDir,
    log_path: PathBuf,
    health_addr: Option<String>,
}

impl Provider {
    /// Starts the provider with `--vault-addr vault_addr` plus `extra` flags,
    /// and waits until its socket exists.
    pub fn start(vault_addr: &str, extra: &[&str]) -> Provider {
        let dir = tempfile::Builder::new()
            .prefix("vsp-provider.")
            .tempdir()
            .expect("tempdir");
        Self::start_in(dir, vault_addr, extra)
    }

    /// Starts the provider in an existing directory (e.g. to restart it with
    /// the same version key).
    pub fn start_in(dir: tempfile::TempDir, vault_addr: &str, extra: &[&str]) -> Provider {
        Self::start_wrapped(dir, &[], vault_addr, extra)
    }

    /// Starts the provider with only the Linux `capabilities` given (e.g.
    /// `["chown"]`; none at all when empty), as a DaemonSet that drops `ALL`
    /// and adds those would.
    pub fn start_with_capabilities(
        capabilities: &[&str],
        vault_addr: &str,
        extra: &[&str],
    ) -> Provider {
        let dir = tempfile::Builder::new()
            .prefix("vsp-provider.")
            .tempdir()
            .expect("tempdir");
        let bounding: String = std::iter::once("-all".to_owned())
            .chain(capabilities.iter().map(|c| format!("+{c}")))
            .collect::<Vec<_>>()
            .join(",");
        let wrapper = ["setpriv", "--bounding-set", bounding.as_str(), "--"];
        Self::start_wrapped(dir, &wrapper, vault_addr, extra)
    }

    /// Starts the provider as the last argument of `wrapper` (a program that
    /// execs it, so the pid stays the provider's).
    fn start_wrapped(
        dir: tempfile::TempDir,
        wrapper: &[&str],
        vault_addr: &str,
        extra: &[&str],
    ) -> Provider {
        let log_path = dir.path().join(format!("provider-{}.log", unique_suffix()));
        let log = std::fs::File::create(&log_path).expect("create provider log");
        let socket = dir.path().join("vault.sock");
        let binary = env!("CARGO_BIN_EXE_vault-secrets-provider");
        let mut command = match wrapper.split_first() {
            Some((program, args)) => {
                let mut command = Command::new(program);
                command.args(args).arg(binary);
                command
            }
            None => Command::new(binary),
        };
        let child = command
            .arg("serve")
            .arg("--endpoint")
            .arg(&socket)
            .args(["--health-addr", "127.0.0.1:0", "--vault-addr", vault_addr])
            // Trace unless the test chooses: the log must be clean at every level.
            .env("VSP_LOG_LEVEL", "trace")
            .args(extra)
            .env_remove("VAULT_ADDR")
            .env_remove("VAULT_NAMESPACE")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log"))
            .stderr(log)
            .spawn()
            .expect("spawn vault-secrets-provider");
        let mut provider = Provider {
            child: Some(child),
            dir,
            log_path,
            health_addr: None,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !provider.socket().exists() {
            if let Some(status) = provider
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!(
                    "provider exited with {status} before serving:\n{}",
                    provider.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "provider did not create its socket:\n{}",
                provider.log()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        // Logged before the socket is created (`--health-addr 127.0.0.1:0` picks the port).
        provider.health_addr = health_addr_in(&provider.log());
        provider
    }

    /// The address of the HTTP endpoint (`/healthz`, `/readyz`, `/metrics`).
    pub fn health_addr(&self) -> &str {
        self.health_addr
            .as_deref()
            .unwrap_or_else(|| panic!("the provider logged no health_addr:\n{}", self.log()))
    }

    /// GETs `path` from the HTTP endpoint: (status, content type, body).
    pub async fn get(&self, path: &str) -> (u16, String, String) {
        self.get_with(path, &[]).await
    }

    /// Like [`get`](Self::get), with extra request headers.
    pub async fn get_with(&self, path: &str, headers: &[(&str, &str)]) -> (u16, String, String) {
        let client = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(10))
            .build()
            .expect("reqwest client");
        let mut request = client.get(format!("http://{}{path}", self.health_addr()));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"));
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        (status, content_type, response.text().await.expect("body"))
    }

    /// One series' value from `/metrics` (`series` is the name with its
    /// labels, as printed); 0 when absent.
    pub async fn metric(&self, series: &str) -> f64 {
        let (_, _, body) = self.get("/metrics").await;
        body.lines()
            .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
            .unwrap_or(0.0)
    }

    /// The providers directory the driver searches (`<dir>/vault.sock` inside).
    pub fn providers_dir(&self) -> &Path {
        self.dir.path()
    }

    /// The socket path.
    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("vault.sock")
    }

    /// Everything the provider logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Sends SIGTERM and waits for the process to exit.
    pub fn terminate(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("provider still running");
        signal(&child, "TERM");
        wait_with_timeout(&mut child, Duration::from_secs(60))
    }

    /// SIGKILLs the provider (no cleanup of any kind runs) and waits for it.
    /// Its stale socket is removed, so a restart in the same directory can
    /// wait for the new one.
    pub fn kill(&mut self) {
        let mut child = self.child.take().expect("provider still running");
        signal(&child, "KILL");
        wait_with_timeout(&mut child, Duration::from_secs(10));
        let _ = std::fs::remove_file(self.socket());
    }

    /// Stops the provider and hands back its directory (socket dir, version key).
    pub fn into_dir(mut self) -> tempfile::TempDir {
        if self.child.is_some() {
            self.terminate();
        }
        std::mem::replace(&mut self.dir, tempfile::tempdir().expect("tempdir"))
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Whether the process is still alive: not exited, and not a zombie
    /// waiting to be reaped (we reap only in `terminate`, `kill` and drop, so
    /// an exit or crash shows here as state `Z`).
    pub fn is_running(&self) -> bool {
        let Some(child) = self.child.as_ref() else {
            return false;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{}/stat", child.id())) else {
            return false;
        };
        // `pid (comm) state ...`; comm may hold spaces and parentheses.
        let state = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.trim_start().chars().next());
        !matches!(state, None | Some('Z' | 'X' | 'x'))
    }

    /// Asserts that the process is still running (never restarted or crashed).
    pub fn assert_running(&self) {
        assert!(
            self.is_running(),
            "the provider is no longer running:\n{}",
            self.log()
        );
    }
}

impl Drop for Provider {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        // A second panic while unwinding would abort and hide the first failure.
        if !std::thread::panicking() {
            super::secrets::assert_clean("the provider log", &self.log(), &[]);
        }
    }
}

/// The `health_addr` field of the start-up line, in text (`health_addr=IP:PORT`)
/// or JSON (`"health_addr":"IP:PORT"`) logs.
fn health_addr_in(log: &str) -> Option<String> {
    let at = log.find("health_addr")? + "health_addr".len();
    let rest = log[at..].trim_start_matches(['=', '"', ':']);
    let addr: String = rest
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | ':' | '[' | ']'))
        .collect();
    (!addr.is_empty()).then_some(addr)
}

fn signal(child: &Child, name: &str) {
    let status = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(child.id().to_string())
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{name} failed");
}

fn wait_with_timeout(child: &mut Child, timeout: Duration) -> ExitStatus {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().expect("wait provider") {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("provider did not exit within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn unique_suffix() -> String {
    format!("{:08x}", rand::random::<u32>())
}

/// One build of the driver's provider client.
#[derive(Clone, Debug)]
pub struct DriverClient {
    /// `v1.5` or `v1.6`.
    pub version: &'static str,
    bin: PathBuf,
    /// Run as this uid (and gid) through `setpriv` (needs root).
    uid: Option<u32>,
    timeout: &'static str,
}

/// What `MountContent` returned.
#[derive(Clone, Debug)]
pub struct MountResult {
    /// Whether the Mount succeeded.
    pub ok: bool,
    /// objectName → version, on success.
    pub object_versions: BTreeMap<String, String>,
    /// The gRPC code name on failure (e.g. `InvalidArgument`).
    pub grpc_code: String,
    /// The status message on failure.
    pub message: String,
}

impl MountResult {
    /// Asserts success and returns the versions.
    pub fn expect_ok(&self) -> &BTreeMap<String, String> {
        assert!(self.ok, "mount failed: {} {}", self.grpc_code, self.message);
        &self.object_versions
    }

    /// Asserts a failure with `code` whose message contains `needle`.
    pub fn expect_err(&self, code: &str, needle: &str) {
        assert!(!self.ok, "mount succeeded but {code} was expected");
        assert_eq!(self.grpc_code, code, "message: {}", self.message);
        assert!(
            self.message.contains(needle),
            "{code} message {:?} lacks {needle:?}",
            self.message
        );
    }
}

/// Both driver client builds, v1.5 first.
pub fn driver_clients() -> Vec<DriverClient> {
    let dir = std::env::var("VSP_TEST_DRIVER_CLIENT_DIR").unwrap_or_else(|_| {
        panic!("VSP_TEST_DRIVER_CLIENT_DIR is not set: run the tests via `make test`, which builds the driver clients")
    });
    ["v1.5", "v1.6"]
        .into_iter()
        .map(|version| {
            let bin = Path::new(&dir).join(format!("driver-client-{version}"));
            assert!(
                bin.exists(),
                "{} is missing: run `make tools`",
                bin.display()
            );
            DriverClient {
                version,
                bin,
                uid: None,
                timeout: "60s",
            }
        })
        .collect()
}

/// One line of [`DriverClient::storm`]'s input: a Mount of `attributes` into `target`.
pub fn storm_request(attributes: &Value, secrets: &str, target: &Path) -> Value {
    json!({
        "attributes": prefix_attributes(attributes).to_string(),
        "secrets": secrets,
        "targetPath": target,
        "permission": "420",
    })
}

/// The newest driver client build (v1.6), for tests that need one client only.
pub fn v16_client() -> DriverClient {
    driver_clients().pop().expect("the v1.6 driver client")
}

/// One Mount through [`v16_client`] into a fresh [`Volume`]; see
/// [`DriverClient::mount_fresh`].
pub fn mount_fresh(
    provider: &Provider,
    attributes: &Value,
    secrets: &str,
) -> (MountResult, Volume) {
    v16_client().mount_fresh(provider, attributes, secrets)
}

impl DriverClient {
    /// One Mount into a fresh [`Volume`]: the result and the volume. A failed
    /// Mount must have written nothing, which this asserts.
    pub fn mount_fresh(
        &self,
        provider: &Provider,
        attributes: &Value,
        secrets: &str,
    ) -> (MountResult, Volume) {
        let volume = Volume::new();
        let result = self.mount(provider, attributes, secrets, volume.path());
        if !result.ok {
            assert!(
                volume.files().is_empty(),
                "driver {}: files written by a failed Mount ({} {})",
                self.version,
                result.grpc_code,
                result.message
            );
        }
        (result, volume)
    }

    /// The same client, run as `uid` (gid too, no supplementary groups)
    /// through `setpriv`: a caller that is not root. Needs root.
    pub fn as_uid(&self, uid: u32) -> DriverClient {
        DriverClient {
            uid: Some(uid),
            ..self.clone()
        }
    }

    /// The same client with another deadline per call (default 60s), e.g. so
    /// a call to a killed provider gives up soon.
    pub fn with_timeout(mut self, timeout: &'static str) -> Self {
        self.timeout = timeout;
        self
    }

    /// Calls `Mount` through the driver's client; files land in `target`.
    pub fn mount(
        &self,
        provider: &Provider,
        attributes: &Value,
        secrets: &str,
        target: &Path,
    ) -> MountResult {
        let attributes = prefix_attributes(attributes).to_string();
        self.mount_raw(provider, &attributes, secrets, target, "420")
    }

    /// Like [`mount`](Self::mount), given only the providers directory (for
    /// calls made from another thread while the test controls the process).
    pub fn mount_in(
        &self,
        providers_dir: &Path,
        attributes: &Value,
        secrets: &str,
        target: &Path,
    ) -> MountResult {
        let request = json!({
            "attributes": prefix_attributes(attributes).to_string(),
            "secrets": secrets,
            "targetPath": target,
            "permission": "420",
        });
        parse_result(
            self.run_in("mount", providers_dir, &request.to_string(), &[])
                .trim(),
        )
    }

    /// Like [`mount`](Self::mount) with raw strings, for malformed input.
    pub fn mount_raw(
        &self,
        provider: &Provider,
        attributes: &str,
        secrets: &str,
        target: &Path,
        permission: &str,
    ) -> MountResult {
        let request = json!({
            "attributes": attributes,
            "secrets": secrets,
            "targetPath": target,
            "permission": permission,
        });
        let output = self.run("mount", provider, &request.to_string(), &[]);
        parse_result(output.trim())
    }

    /// Runs many Mounts over one client with `concurrency` in flight
    /// (the `storm` subcommand); results in input order.
    pub fn storm(
        &self,
        provider: &Provider,
        requests: &[Value],
        concurrency: usize,
    ) -> Vec<MountResult> {
        let input: String = requests.iter().map(|r| format!("{r}\n")).collect();
        let output = self.run(
            "storm",
            provider,
            &input,
            &["--concurrency", &concurrency.to_string()],
        );
        output
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(parse_result)
            .collect()
    }

    fn run(&self, command: &str, provider: &Provider, input: &str, extra: &[&str]) -> String {
        self.run_in(command, provider.providers_dir(), input, extra)
    }

    fn run_in(&self, command: &str, providers_dir: &Path, input: &str, extra: &[&str]) -> String {
        use std::io::Write as _;
        let mut child = match self.uid {
            None => Command::new(&self.bin),
            Some(uid) => {
                let mut setpriv = Command::new("setpriv");
                setpriv
                    .arg(format!("--reuid={uid}"))
                    .arg(format!("--regid={uid}"))
                    .arg("--clear-groups")
                    .arg(&self.bin);
                setpriv
            }
        };
        let mut child = child
            .arg(command)
            .arg("--providers-dir")
            .arg(providers_dir)
            .args(["--provider", "vault", "--timeout", self.timeout])
            .args(extra)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", self.bin.display()));
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input.as_bytes())
            .expect("write request");
        let output = child.wait_with_output().expect("driver client output");
        assert!(
            output.status.success(),
            "driver client {} failed ({}): {}",
            self.version,
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).expect("utf-8 output")
    }
}

fn parse_result(line: &str) -> MountResult {
    let value: Value = serde_json::from_str(line)
        .unwrap_or_else(|e| panic!("bad driver client output {line:?}: {e}"));
    MountResult {
        ok: value["ok"].as_bool().unwrap_or(false),
        object_versions: value["objectVersions"]
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                    .collect()
            })
            .unwrap_or_default(),
        grpc_code: value["grpcCode"].as_str().unwrap_or_default().to_owned(),
        message: value["message"].as_str().unwrap_or_default().to_owned(),
    }
}

/// A pod volume: tmpfs when possible.
pub struct Volume {
    dir: tempfile::TempDir,
    tmpfs: bool,
}

impl Volume {
    /// A fresh, empty volume.
    pub fn new() -> Volume {
        Self::with_size("16m")
    }

    /// A fresh, empty volume whose tmpfs holds at most `size` (e.g. `64m`).
    pub fn with_size(size: &str) -> Volume {
        let dir = tempfile::Builder::new()
            .prefix("vsp-volume.")
            .tempdir()
            .expect("tempdir");
        let tmpfs = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0755"),
                "tmpfs",
            ])
            .arg(dir.path())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        Volume { dir, tmpfs }
    }

    /// Unmounts its tmpfs, as the driver does at NodeUnpublishVolume; the
    /// directory stays.
    pub fn unmount(&mut self) {
        if self.tmpfs {
            let ok = Command::new("umount")
                .arg(self.dir.path())
                .status()
                .is_ok_and(|s| s.success());
            assert!(ok, "umount {}", self.dir.path().display());
            self.tmpfs = false;
        }
    }

    /// Its path (the driver's `target_path`).
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Whether it is a real tmpfs.
    pub fn is_tmpfs(&self) -> bool {
        self.tmpfs
    }

    /// The visible files (following the writer's symlinks): path → (content, mode).
    pub fn files(&self) -> BTreeMap<String, (Vec<u8>, u32)> {
        files_in(self.path())
    }

    /// One file's content as text.
    pub fn read(&self, name: &str) -> String {
        String::from_utf8(
            std::fs::read(self.path().join(name)).unwrap_or_else(|e| panic!("read {name}: {e}")),
        )
        .expect("utf-8 file")
    }

    /// One file's mode.
    pub fn mode(&self, name: &str) -> u32 {
        std::fs::metadata(self.path().join(name))
            .expect("stat")
            .permissions()
            .mode()
            & 0o7777
    }
}

/// The files a pod sees in a volume written by the driver's atomic writer
/// (following its symlinks, skipping its `..data` bookkeeping): path → (content, mode).
pub fn files_in(root: &Path) -> BTreeMap<String, (Vec<u8>, u32)> {
    let mut files = BTreeMap::new();
    collect(root, root, &mut files);
    files
}

fn collect(root: &Path, dir: &Path, files: &mut BTreeMap<String, (Vec<u8>, u32)>) {
    for entry in std::fs::read_dir(dir).expect("read volume") {
        let entry = entry.expect("entry");
        let name = entry.file_name().to_string_lossy().into_owned();
        // The atomic writer's own bookkeeping: `..data` and `..<timestamp>`.
        if dir == root && name.starts_with("..") {
            continue;
        }
        let path = entry.path();
        let meta = std::fs::metadata(&path).expect("stat");
        if meta.is_dir() {
            collect(root, &path, files);
        } else {
            let rel = path
                .strip_prefix(root)
                .expect("under root")
                .to_string_lossy()
                .into_owned();
            files.insert(
                rel,
                (
                    std::fs::read(&path).expect("read"),
                    meta.permissions().mode() & 0o7777,
                ),
            );
        }
    }
}

impl Drop for Volume {
    fn drop(&mut self) {
        if self.tmpfs {
            let _ = Command::new("umount").arg(self.dir.path()).status();
        }
    }
}

/// Asserts that no secret in `secrets`, none registered by the test helpers, and
/// nothing shaped like a Vault token appears in `log`. (Dropping a [`Provider`]
/// checks its log the same way; this is for checking at a given point, or with
/// extra values such as short ones.)
pub fn assert_log_clean(log: &str, secrets: &[&str]) {
    super::secrets::assert_clean("the provider log", log, secrets);
}
