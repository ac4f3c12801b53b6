//! What the bench drives and measures with: the driver's own provider client
//! (`storm`), a minimal keep-alive HTTP client for the same Vault reads done
//! directly, the pod volumes, and the provider process (log, RSS, start-up).

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use serde_json::{Value, json};

/// Most reads one of our Mounts has in flight (`FETCH_CONCURRENCY` in
/// `src/mount.rs`); the direct client does the same.
pub const MOUNT_FETCH_CONCURRENCY: usize = 16;

/// One Mount as the driver's client saw it.
#[derive(Clone, Debug)]
pub struct Outcome {
    pub ok: bool,
    /// The `MountContent` call: gRPC over the socket, the provider's work and
    /// the driver's atomic write of the files.
    pub micros: f64,
    /// From the start of the storm to the end of this call.
    pub end_micros: f64,
    pub message: String,
}

/// The driver's provider client, v1.6 build (`tests/driver-client`).
#[derive(Clone)]
pub struct DriverClient {
    bin: PathBuf,
}

impl DriverClient {
    /// The build in `VSP_TEST_DRIVER_CLIENT_DIR`.
    pub fn v1_6() -> DriverClient {
        let dir = std::env::var("VSP_TEST_DRIVER_CLIENT_DIR")
            .expect("VSP_TEST_DRIVER_CLIENT_DIR is not set: run `make bench`");
        let bin = Path::new(&dir).join("driver-client-v1.6");
        assert!(
            bin.exists(),
            "{} is missing: run `make bench`",
            bin.display()
        );
        DriverClient { bin }
    }

    /// Runs `requests` over one client connection, `concurrency` in flight
    /// (`storm`); results in input order.
    pub fn storm(
        &self,
        providers_dir: &Path,
        requests: &[Value],
        concurrency: usize,
    ) -> Vec<Outcome> {
        let mut child = Command::new(&self.bin)
            .arg("storm")
            .arg("--providers-dir")
            .arg(providers_dir)
            .args(["--provider", "vault", "--timeout", "60s", "--concurrency"])
            .arg(concurrency.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn driver client");
        {
            let mut stdin = std::io::BufWriter::new(child.stdin.take().expect("stdin"));
            for request in requests {
                writeln!(stdin, "{request}").expect("write request");
            }
        }
        let output = child.wait_with_output().expect("driver client output");
        assert!(
            output.status.success(),
            "driver client failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout)
            .expect("utf-8")
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|line| {
                let v: Value = serde_json::from_str(line).expect("result JSON");
                Outcome {
                    ok: v["ok"].as_bool().unwrap_or(false),
                    micros: v["micros"].as_f64().unwrap_or(0.0),
                    end_micros: v["endMicros"].as_f64().unwrap_or(0.0),
                    message: format!(
                        "{} {}",
                        v["grpcCode"].as_str().unwrap_or_default(),
                        v["message"].as_str().unwrap_or_default()
                    ),
                }
            })
            .collect()
    }
}

/// A driver request for `attributes` and `secrets`, files into `target`.
pub fn request(attributes: &Value, secrets: &str, target: &Path) -> Value {
    json!({
        "attributes": attributes.to_string(),
        "secrets": secrets,
        "targetPath": target,
        "permission": "420",
    })
}

/// The reads a Mount makes, done directly: reqwest with a warm keep-alive
/// pool (HTTP/1.1), no retries, each response read and parsed as JSON.
pub struct Direct {
    http: reqwest::Client,
    addr: String,
    namespace: String,
}

impl Direct {
    pub fn new(addr: &str, namespace: &str) -> Direct {
        Direct {
            http: reqwest::Client::builder()
                .no_proxy()
                .pool_max_idle_per_host(64)
                .timeout(Duration::from_secs(30))
                .build()
                .expect("reqwest client"),
            addr: addr.trim_end_matches('/').to_owned(),
            namespace: namespace.to_owned(),
        }
    }

    /// AppRole login; returns the token.
    pub async fn login(&self, role_id: &str, secret_id: &str) -> String {
        let response: Value = self
            .http
            .post(format!("{}/v1/auth/approle/login", self.addr))
            .header("X-Vault-Namespace", &self.namespace)
            .json(&json!({"role_id": role_id, "secret_id": secret_id}))
            .send()
            .await
            .expect("login")
            .error_for_status()
            .expect("login status")
            .json()
            .await
            .expect("login JSON");
        let token = response["auth"]["client_token"]
            .as_str()
            .expect("client_token")
            .to_owned();
        crate::support::secrets::register(&token);
        token
    }

    /// GETs every path (relative to `/v1/`), at most
    /// [`MOUNT_FETCH_CONCURRENCY`] at once; returns the time taken.
    pub async fn read_all(&self, token: &str, paths: &[String]) -> Duration {
        let started = Instant::now();
        let reads = futures::stream::iter(paths)
            .map(|path| async move {
                let bytes = self
                    .http
                    .get(format!("{}/v1/{path}", self.addr))
                    .header("X-Vault-Token", token)
                    .header("X-Vault-Namespace", &self.namespace)
                    .send()
                    .await
                    .expect("read")
                    .error_for_status()
                    .expect("read status")
                    .bytes()
                    .await
                    .expect("read body");
                serde_json::from_slice::<Value>(&bytes).expect("read JSON")
            })
            .buffer_unordered(MOUNT_FETCH_CONCURRENCY)
            .collect::<Vec<_>>()
            .await;
        assert_eq!(reads.len(), paths.len());
        started.elapsed()
    }
}

/// Pod volumes: sub-directories of one tmpfs (a plain temporary directory
/// when tmpfs cannot be mounted, i.e. not root).
pub struct Volumes {
    dir: tempfile::TempDir,
    tmpfs: bool,
}

impl Volumes {
    pub fn new() -> Volumes {
        let dir = tempfile::Builder::new()
            .prefix("vsp-bench-volumes.")
            .tempdir()
            .expect("tempdir");
        let tmpfs = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=2g,mode=0755", "tmpfs"])
            .arg(dir.path())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        Volumes { dir, tmpfs }
    }

    /// The (existing) volume of pod `pod`.
    pub fn of(&self, pod: &str) -> PathBuf {
        let path = self.dir.path().join(pod);
        std::fs::create_dir_all(&path).expect("create volume");
        path
    }

    pub fn is_tmpfs(&self) -> bool {
        self.tmpfs
    }
}

impl Drop for Volumes {
    fn drop(&mut self) {
        if self.tmpfs {
            let _ = Command::new("umount").arg(self.dir.path()).status();
        }
    }
}

/// The provider's own time for each Mount it logged after byte `from` of its
/// log (`duration_ms` of "mount succeeded"), in microseconds.
pub fn logged_mount_micros(log: &str, from: usize) -> Vec<f64> {
    logged_micros(log, from, "mount succeeded")
}

/// The provider's own time for each Mount whose log line after byte `from`
/// contains `message` (`"mount succeeded"`, `"mount failed"`), in microseconds.
pub fn logged_micros(log: &str, from: usize, message: &str) -> Vec<f64> {
    log.get(from..)
        .unwrap_or_default()
        .lines()
        .filter(|line| line.contains(message))
        .filter_map(|line| {
            let at = line.find("duration_ms=")? + "duration_ms=".len();
            let value: String = line[at..]
                .chars()
                .take_while(|c| c.is_ascii_digit() || *c == '.')
                .collect();
            value.parse::<f64>().ok().map(|ms| ms * 1000.0)
        })
        .collect()
}

/// Resident memory of a process from `/proc/<pid>/status`: (VmRSS, VmHWM) in KiB.
pub fn rss_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read status");
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|kib| kib.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// CPU time a process has used so far, over all its threads
/// (`/proc/<pid>/task/*/schedstat`, nanoseconds on a CPU).
pub fn cpu_ns(pid: u32) -> u64 {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .expect("read tasks")
        .flatten()
        .filter_map(|task| std::fs::read_to_string(task.path().join("schedstat")).ok())
        .filter_map(|stat| stat.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

/// Starts the provider binary and times it from spawn to its first answered
/// gRPC `Version` on the socket, polling every 0.5 ms. Returns the time and
/// the running process (killed on drop).
pub async fn start_and_time(vault_addr: &str) -> (Duration, Running) {
    let dir = tempfile::Builder::new()
        .prefix("vsp-bench-start.")
        .tempdir()
        .expect("tempdir");
    let socket = dir.path().join("vault.sock");
    let log = std::fs::File::create(dir.path().join("provider.log")).expect("log file");
    let started = Instant::now();
    let child = Command::new(env!("CARGO_BIN_EXE_vault-secrets-provider"))
        .arg("serve")
        .arg("--endpoint")
        .arg(&socket)
        .args(["--health-addr", "127.0.0.1:0", "--log-level", "info"])
        .args(["--vault-addr", vault_addr])
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("clone log"))
        .stderr(log)
        .spawn()
        .expect("spawn provider");
    let mut running = Running { child, _dir: dir };
    loop {
        if grpc_version(&socket).await.is_ok() {
            return (started.elapsed(), running);
        }
        if let Ok(Some(status)) = running.child.try_wait() {
            panic!("provider exited with {status} before serving");
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "provider did not answer Version within 20 s"
        );
        tokio::time::sleep(Duration::from_micros(500)).await;
    }
}

/// A provider process started by [`start_and_time`].
pub struct Running {
    child: std::process::Child,
    _dir: tempfile::TempDir,
}

impl Running {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One gRPC `Version` call over the socket, as the driver makes it first.
async fn grpc_version(socket: &Path) -> Result<(), String> {
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use vault_secrets_provider::proto::VersionRequest;
    use vault_secrets_provider::proto::csi_driver_provider_client::CsiDriverProviderClient;

    let stream = tokio::net::UnixStream::connect(socket)
        .await
        .map_err(|e| e.to_string())?;
    let (sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
    tokio::spawn(connection);
    let service = tower::service_fn(move |req: http::Request<tonic::body::Body>| {
        let mut sender = sender.clone();
        async move { sender.send_request(req).await }
    });
    let mut client =
        CsiDriverProviderClient::with_origin(service, http::Uri::from_static("http://localhost"));
    client
        .version(VersionRequest {
            version: "v1alpha1".to_owned(),
        })
        .await
        .map_err(|status| status.message().to_owned())?;
    Ok(())
}
