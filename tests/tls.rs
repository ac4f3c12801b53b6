//! TLS to Vault, against an OpenBao started with a generated CA (`-dev-tls`):
//! the CA from a flag or from the SecretProviderClass, the server name
//! override, and a clear refusal when the certificate cannot be verified.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::deployment::{merge, pod_attributes};
use support::durable::free_port_pair;
use support::flavour::Server;
use support::provider::{Provider, assert_log_clean, mount_fresh};

/// An OpenBao dev server with TLS; killed on drop.
struct TlsOpenBao {
    child: Child,
    dir: tempfile::TempDir,
    addr: String,
    http: reqwest::Client,
}

impl TlsOpenBao {
    async fn start() -> TlsOpenBao {
        let server = Server::current();
        let dir = tempfile::Builder::new()
            .prefix("vsp-tls-bao.")
            .tempdir()
            .unwrap();
        let port = free_port_pair();
        let log = std::fs::File::create(dir.path().join("openbao.log")).unwrap();
        let child = Command::new(server.bin())
            .args(["server", "-dev-tls", "-dev-no-store-token"])
            .arg(format!("-dev-tls-cert-dir={}", dir.path().display()))
            .arg(format!("-dev-listen-address=127.0.0.1:{port}"))
            .env(server.dev_token_env(), "tls-root")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawn bao -dev-tls");
        let addr = format!("https://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(60);
        while !dir.path().join("vault-ca.pem").exists() {
            assert!(Instant::now() < deadline, "OpenBao -dev-tls wrote no CA");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let ca = reqwest::Certificate::from_pem(
            &std::fs::read(dir.path().join("vault-ca.pem")).unwrap(),
        )
        .unwrap();
        let http = reqwest::Client::builder()
            .add_root_certificate(ca)
            .pool_max_idle_per_host(0)
            .no_proxy()
            .build()
            .unwrap();
        let bao = TlsOpenBao {
            child,
            dir,
            addr,
            http,
        };
        while bao.call("GET", "sys/health", None).await.is_err() {
            assert!(
                Instant::now() < deadline,
                "OpenBao -dev-tls did not become healthy"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        bao
    }

    fn ca(&self) -> PathBuf {
        self.dir.path().join("vault-ca.pem")
    }

    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value, String> {
        let mut request = self
            .http
            .request(method.parse().unwrap(), format!("{}/v1/{path}", self.addr))
            .header("X-Vault-Token", "tls-root");
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.map_err(|e| e.to_string())?;
        let status = response.status();
        let text = response.text().await.map_err(|e| e.to_string())?;
        if !status.is_success() {
            return Err(format!("{method} {path}: {status}: {text}"));
        }
        Ok(serde_json::from_str(&text).unwrap_or(Value::Null))
    }
}

impl Drop for TlsOpenBao {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn attributes(role_id: &str, extra: Value) -> Value {
    let objects = "- objectName: k\n  secretPath: secret/data/app\n  secretKey: k\n";
    merge(pod_attributes(role_id, objects), extra)
}

#[tokio::test]
async fn tls_ca_server_name_and_refusal() {
    let bao = TlsOpenBao::start().await;
    // Dev mode mounts KV v2 at secret/.
    bao.call(
        "POST",
        "secret/data/app",
        Some(json!({"data": {"k": "over-tls"}})),
    )
    .await
    .unwrap();
    bao.call("POST", "sys/auth/approle", Some(json!({"type": "approle"})))
        .await
        .unwrap();
    bao.call(
        "POST",
        "sys/policies/acl/r",
        Some(json!({"policy": "path \"secret/data/app\" { capabilities = [\"read\"] }"})),
    )
    .await
    .unwrap();
    bao.call(
        "POST",
        "auth/approle/role/app",
        Some(json!({"token_policies": ["r"]})),
    )
    .await
    .unwrap();
    let role_id = bao
        .call("GET", "auth/approle/role/app/role-id", None)
        .await
        .unwrap()["data"]["role_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let secret_id = bao
        .call("POST", "auth/approle/role/app/secret-id", None)
        .await
        .unwrap()["data"]["secret_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let secrets = json!({"secretId": secret_id}).to_string();
    let ca = bao.ca();
    let ca = ca.to_str().unwrap();

    // CA from the provider's flag.
    let provider = Provider::start(&bao.addr, &["--vault-tls-ca-cert", ca]);
    let (result, volume) = mount_fresh(&provider, &attributes(&role_id, json!({})), &secrets);
    result.expect_ok();
    assert_eq!(volume.read("k"), "over-tls");

    // The certificate names localhost: a server name override to it verifies,
    // one to another name does not.
    let (result, volume) = mount_fresh(
        &provider,
        &attributes(&role_id, json!({"vaultTLSServerName": "localhost"})),
        &secrets,
    );
    result.expect_ok();
    assert_eq!(volume.read("k"), "over-tls");
    let (result, _) = mount_fresh(
        &provider,
        &attributes(&role_id, json!({"vaultTLSServerName": "vault.example"})),
        &secrets,
    );
    result.expect_err(
        "InvalidArgument",
        "Vault's TLS certificate was not accepted",
    );
    assert_log_clean(&provider.log(), &["over-tls", &secret_id]);
    drop(provider);

    // No CA anywhere: refused with a message that says what to configure.
    // (SecretProviderClasses may name files in the CA's directory.)
    let ca_dir = Path::new(ca).parent().unwrap().to_str().unwrap();
    let provider = Provider::start(&bao.addr, &["--spc-tls-dir", ca_dir]);
    let (result, _) = mount_fresh(&provider, &attributes(&role_id, json!({})), &secrets);
    result.expect_err(
        "InvalidArgument",
        "Vault's TLS certificate was not accepted",
    );
    result.expect_err("InvalidArgument", "vaultCACertPath");

    // The CA from the SecretProviderClass instead of the flag.
    let (result, volume) = mount_fresh(
        &provider,
        &attributes(&role_id, json!({"vaultCACertPath": ca})),
        &secrets,
    );
    result.expect_ok();
    assert_eq!(volume.read("k"), "over-tls");

    // A CA path that does not exist is a clear parameter error.
    let missing = Path::new(ca).with_file_name("missing.pem");
    let (result, _) = mount_fresh(
        &provider,
        &attributes(
            &role_id,
            json!({"vaultCACertPath": missing.to_str().unwrap()}),
        ),
        &secrets,
    );
    result.expect_err("InvalidArgument", "missing.pem");
    assert_log_clean(&provider.log(), &["over-tls", &secret_id]);
}
