//! An OpenBao (or Vault, [`super::flavour`]) that survives restarts: a real (non-dev)
//! server with integrated (raft) storage on disk, initialised with one unseal key, which a
//! test may kill, restart, seal and unseal. Its data, AppRoles and tokens outlive each
//! restart, as in production, so the provider's cached token stays valid across an outage.
//!
//! Optional extra listener configuration (e.g. a TLS listener that requires
//! client certificates) is appended to its configuration file.
#![allow(dead_code)]

use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

use super::flavour::Server;
use super::openbao::OpenBao;

/// A disk-backed OpenBao owned by one test; killed on drop.
pub struct DurableOpenBao {
    bao: OpenBao,
    bin: PathBuf,
    dir: tempfile::TempDir,
    child: Option<Child>,
    unseal_key: String,
    pid_file: Option<PathBuf>,
}

impl DurableOpenBao {
    /// Starts, initialises and unseals a server on a free port.
    pub async fn start() -> DurableOpenBao {
        Self::start_with("").await
    }

    /// Like [`start`](Self::start), with `extra` appended to the server's
    /// HCL configuration.
    pub async fn start_with(extra: &str) -> DurableOpenBao {
        let server = Server::current();
        let bin = server.bin();
        // As HashiCorp advise with integrated storage; OpenBao's configuration is left as it was.
        let mlock = match server {
            Server::OpenBao => "",
            Server::Vault => "disable_mlock = true",
        };
        let dir = tempfile::Builder::new()
            .prefix("vsp-durable-bao.")
            .tempdir()
            .expect("tempdir");
        let port = free_port_pair();
        let config = format!(
            r#"
storage "raft" {{
  path = "{data}"
  node_id = "node-1"
}}
listener "tcp" {{
  address = "127.0.0.1:{port}"
  cluster_address = "127.0.0.1:{cluster}"
  tls_disable = true
}}
api_addr = "http://127.0.0.1:{port}"
cluster_addr = "https://127.0.0.1:{cluster}"
{mlock}
{extra}
"#,
            data = dir.path().join("data").display(),
            cluster = port + 1,
        );
        std::fs::create_dir(dir.path().join("data")).expect("data dir");
        std::fs::write(dir.path().join("server.hcl"), config).expect("write config");
        let mut server = DurableOpenBao {
            bao: OpenBao::new(format!("http://127.0.0.1:{port}"), "not-yet-initialised"),
            bin,
            dir,
            child: None,
            unseal_key: String::new(),
            pid_file: None,
        };
        server.spawn();
        server.wait_for(|status| status != 0).await;
        let (status, init) = server
            .request(
                None,
                "PUT",
                "",
                "sys/init",
                Some(json!({"secret_shares": 1, "secret_threshold": 1})),
            )
            .await
            .expect("sys/init");
        assert_eq!(status, 200, "sys/init: {init}");
        server.unseal_key = init["keys_base64"][0]
            .as_str()
            .expect("unseal key")
            .to_owned();
        super::secrets::register(&server.unseal_key);
        let root = init["root_token"].as_str().expect("root token").to_owned();
        server.bao = OpenBao::new(server.bao.addr.clone(), root);
        server.unseal().await;
        server
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("openbao.log")).unwrap_or_default()
    }

    /// The directory holding the configuration (for extra files such as certificates).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// SIGKILLs the server: no graceful shutdown, connections die.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some(f) = self.pid_file.take() {
            let _ = std::fs::remove_file(f);
        }
    }

    /// Starts the killed server again on the same port and storage, and
    /// unseals it.
    pub async fn restart(&mut self) {
        assert!(self.child.is_none(), "kill the server before restarting it");
        self.spawn();
        self.wait_for(|status| status != 0).await;
        self.unseal().await;
    }

    /// Seals the server (`sys/seal`): it answers 503 "Vault is sealed".
    pub async fn seal(&self) {
        self.api("PUT", "", "sys/seal", None).await;
        let (status, _) = self
            .request(None, "GET", "", "sys/health", None)
            .await
            .expect("sys/health");
        assert_eq!(status, 503, "sealed server must answer 503 on sys/health");
    }

    /// Unseals the server and waits until it is active.
    pub async fn unseal(&self) {
        let (status, body) = self
            .request(
                None,
                "PUT",
                "",
                "sys/unseal",
                Some(json!({"key": self.unseal_key})),
            )
            .await
            .expect("sys/unseal");
        assert_eq!(status, 200, "sys/unseal: {body}");
        self.wait_for(|status| status == 200).await;
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("openbao.log"))
            .expect("open log");
        let child = Command::new(&self.bin)
            .arg("server")
            .arg(format!(
                "-config={}",
                self.dir.path().join("server.hcl").display()
            ))
            .env_remove("BAO_ADDR")
            .env_remove("VAULT_ADDR")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log"))
            .stderr(log)
            .spawn()
            .expect("spawn bao server");
        // scripts/with-openbao.sh kills servers left behind by a dead test process.
        if let Some(dir) = std::env::var_os("VSP_TEST_BAO_RUN_DIR") {
            let f = PathBuf::from(dir).join(format!("{}.pid", child.id()));
            if std::fs::write(&f, child.id().to_string()).is_ok() {
                self.pid_file = Some(f);
            }
        }
        self.child = Some(child);
    }

    /// Polls `sys/health` until its status satisfies `ready` (0 = no answer).
    async fn wait_for(&self, ready: impl Fn(u16) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let status = self
                .request(None, "GET", "", "sys/health", None)
                .await
                .map_or(0, |(status, _)| status);
            if ready(status) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "OpenBao at {} not ready (sys/health {status}); log:\n{}",
                self.addr,
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Deref for DurableOpenBao {
    type Target = OpenBao;
    fn deref(&self) -> &OpenBao {
        &self.bao
    }
}

impl Drop for DurableOpenBao {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A port P with P and P+1 free on 127.0.0.1 (P+1: the cluster listener).
pub fn free_port_pair() -> u16 {
    loop {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        if port < 65535 && std::net::TcpListener::bind(("127.0.0.1", port + 1)).is_ok() {
            return port;
        }
    }
}
