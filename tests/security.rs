//! Security properties, each against the real thing: the socket's mode and
//! owner, the optional peer-uid check (a driver client run as another user),
//! and TLS to an OpenBao listener that requires client certificates (mTLS),
//! with verification on by default. Every provider's log is checked for
//! secrets on drop (`support::secrets`), as in every other test.

mod support;

use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::Path;
use std::process::Command;

use serde_json::{Value, json};
use support::deployment::{Deployment, RootApp, merge};
use support::durable::{DurableOpenBao, free_port_pair};
use support::provider::{
    DriverClient, MountResult, Provider, Volume, driver_clients, mount_fresh, v16_client,
};

const OBJECTS: &str = "- objectName: k\n  secretPath: secret/data/app\n  secretKey: k\n";
/// `nobody`: a caller that is not root.
const OTHER_UID: u32 = 65534;

fn is_root() -> bool {
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

#[tokio::test]
async fn socket_mode_and_owner() {
    let provider = Provider::start(&support::openbao::OpenBao::shared().addr, &[]);
    let meta = std::fs::metadata(provider.socket()).unwrap();
    let me = std::fs::metadata("/proc/self").unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    assert_eq!(
        (meta.uid(), meta.gid()),
        (me.uid(), me.gid()),
        "owned by the provider's user"
    );

    let provider = Provider::start(
        &support::openbao::OpenBao::shared().addr,
        &["--endpoint-permissions", "0660"],
    );
    let meta = std::fs::metadata(provider.socket()).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o660);
}

/// A volume and providers directory another uid can use.
fn open_up(provider: &Provider, volume: &Volume) {
    std::fs::set_permissions(
        provider.providers_dir(),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    std::os::unix::fs::chown(volume.path(), Some(OTHER_UID), Some(OTHER_UID)).unwrap();
}

/// One Mount by [`OTHER_UID`] into a fresh volume it may write; a failure
/// must have written nothing.
fn mount_as_other(
    client: &DriverClient,
    provider: &Provider,
    attributes: &Value,
    secrets: &str,
) -> (MountResult, Volume) {
    let volume = Volume::new();
    open_up(provider, &volume);
    let result = client
        .as_uid(OTHER_UID)
        .mount(provider, attributes, secrets, volume.path());
    if !result.ok {
        assert!(volume.files().is_empty(), "files written by a failed Mount");
    }
    (result, volume)
}

#[tokio::test]
async fn allowed_peer_uids() {
    let d = Deployment::new("peer-uid").await;
    d.put("app", json!({"k": "peer-value"})).await;
    let attributes = d.attributes(OBJECTS);

    // Our own uid (the socket's owner) may always call, whatever the list says.
    let provider = Provider::start(&d.bao.addr, &["--allowed-peer-uid", "4242,4343"]);
    for client in driver_clients() {
        let (result, volume) = client.mount_fresh(&provider, &attributes, &d.secrets());
        result.expect_ok();
        assert_eq!(volume.read("k"), "peer-value");
    }
    // So may /readyz, which calls Version over the socket.
    assert_eq!(provider.get("/readyz").await.0, 200);
    drop(provider);

    assert!(
        is_root(),
        "calls from another uid need root (setpriv); run the tests as root, as CI does"
    );
    // A world-writable socket, but only root may call.
    let provider = Provider::start(
        &d.bao.addr,
        &["--endpoint-permissions", "0666", "--allowed-peer-uid", "0"],
    );
    for client in driver_clients() {
        mount_as_other(&client, &provider, &attributes, &d.secrets())
            .0
            .expect_err("PermissionDenied", &format!("uid {OTHER_UID}"));
        // Root still may.
        client
            .mount_fresh(&provider, &attributes, &d.secrets())
            .0
            .expect_ok();
    }
    assert!(provider.log().contains("refused a call from a peer"));
    drop(provider);

    // The listed uid may.
    let provider = Provider::start(
        &d.bao.addr,
        &[
            "--endpoint-permissions",
            "0666",
            "--allowed-peer-uid",
            &OTHER_UID.to_string(),
        ],
    );
    for client in driver_clients() {
        let (result, volume) = mount_as_other(&client, &provider, &attributes, &d.secrets());
        result.expect_ok();
        assert_eq!(volume.read("k"), "peer-value");
    }
    drop(provider);

    // Without the flag, the default socket mode (0600) keeps other users out.
    let provider = Provider::start(&d.bao.addr, &[]);
    let client = v16_client();
    let volume = Volume::new();
    open_up(&provider, &volume);
    // The driver's client waits for a connection until its deadline.
    let result = client.as_uid(OTHER_UID).with_timeout("3s").mount(
        &provider,
        &attributes,
        &d.secrets(),
        volume.path(),
    );
    assert!(!result.ok, "a non-root caller reached a 0600 socket");
    assert!(
        result.message.contains("permission denied"),
        "{} {}",
        result.grpc_code,
        result.message
    );
    assert!(volume.files().is_empty());
}

/// A CA, a server certificate for 127.0.0.1/localhost, a client certificate
/// from that CA, and one from a CA OpenBao does not trust.
fn certificates(dir: &Path) {
    let sh = |script: &str| {
        let out = Command::new("sh")
            .arg("-ec")
            .arg(script)
            .current_dir(dir)
            .output()
            .expect("run openssl");
        assert!(
            out.status.success(),
            "openssl: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    sh(r#"
        ca() { openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
               -keyout "$1.key" -out "$1.pem" -days 1 -subj "/CN=$1" 2>/dev/null; }
        leaf() { # name ca extensions
            openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
                -keyout "$1.key" -out "$1.csr" -subj "/CN=$1" 2>/dev/null
            printf '%s\n' "$3" > "$1.ext"
            openssl x509 -req -in "$1.csr" -CA "$2.pem" -CAkey "$2.key" -CAcreateserial \
                -out "$1.pem" -days 1 -extfile "$1.ext" 2>/dev/null
        }
        ca ca; ca rogue-ca
        leaf server ca "subjectAltName=IP:127.0.0.1,DNS:localhost
extendedKeyUsage=serverAuth"
        leaf client ca "extendedKeyUsage=clientAuth"
        leaf rogue rogue-ca "extendedKeyUsage=clientAuth"
        chmod 0644 *.key
    "#);
}

#[tokio::test]
async fn mutual_tls_with_verification_on_by_default() {
    let certs = tempfile::Builder::new()
        .prefix("vsp-mtls.")
        .tempdir()
        .unwrap();
    let dir = certs.path();
    certificates(dir);
    let port = free_port_pair();
    let listener = format!(
        r#"
listener "tcp" {{
  address = "127.0.0.1:{port}"
  cluster_address = "127.0.0.1:{cluster}"
  tls_cert_file = "{d}/server.pem"
  tls_key_file = "{d}/server.key"
  tls_client_ca_file = "{d}/ca.pem"
  tls_require_and_verify_client_cert = true
}}
"#,
        cluster = port + 1,
        d = dir.display(),
    );
    let bao = DurableOpenBao::start_with(&listener).await;
    let app = RootApp::seed(&bao).await;
    bao.kv2_put("", "secret", "app", json!({"k": "over-mtls"}))
        .await;
    let mtls_addr = format!("https://127.0.0.1:{port}");
    let attributes = |extra: Value| merge(app.attributes(OBJECTS), extra);
    let path = |name: &str| dir.join(name).display().to_string();
    let mount =
        |provider: &Provider, attributes: &Value| mount_fresh(provider, attributes, &app.secrets());

    // Verification is on by default: OpenBao's CA is not trusted.
    let provider = Provider::start(&mtls_addr, &[]);
    let (result, _) = mount(&provider, &attributes(json!({})));
    result.expect_err(
        "InvalidArgument",
        "Vault's TLS certificate was not accepted",
    );
    result.expect_err("InvalidArgument", "vaultCACertPath");

    // CA and client certificate from the provider's flags.
    let (ca, cert, key) = (path("ca.pem"), path("client.pem"), path("client.key"));
    let provider = Provider::start(
        &mtls_addr,
        &[
            "--vault-tls-ca-cert",
            &ca,
            "--vault-tls-client-cert",
            &cert,
            "--vault-tls-client-key",
            &key,
        ],
    );
    let (result, volume) = mount(&provider, &attributes(json!({})));
    result.expect_ok();
    assert_eq!(volume.read("k"), "over-mtls");
    // With a server name the certificate holds (SNI and verification use it).
    let (result, _) = mount(
        &provider,
        &attributes(json!({"vaultTLSServerName": "localhost"})),
    );
    result.expect_ok();
    drop(provider);

    // The CA alone: OpenBao wants a client certificate.
    let spc_tls_dir = dir.display().to_string();
    let provider = Provider::start(
        &mtls_addr,
        &["--vault-tls-ca-cert", &ca, "--spc-tls-dir", &spc_tls_dir],
    );
    let (result, _) = mount(&provider, &attributes(json!({})));
    result.expect_err("InvalidArgument", "Vault refused the TLS handshake");
    result.expect_err("InvalidArgument", "client certificate");
    // The client certificate from the SecretProviderClass instead.
    let (result, volume) = mount(
        &provider,
        &attributes(json!({"vaultTLSClientCertPath": cert, "vaultTLSClientKeyPath": key})),
    );
    result.expect_ok();
    assert_eq!(volume.read("k"), "over-mtls");
    // A client certificate from a CA OpenBao does not trust.
    let (result, _) = mount(
        &provider,
        &attributes(json!({
            "vaultTLSClientCertPath": path("rogue.pem"),
            "vaultTLSClientKeyPath": path("rogue.key"),
        })),
    );
    result.expect_err("InvalidArgument", "Vault refused the TLS handshake");
    result.expect_err("InvalidArgument", "client certificate");
    // Skipping verification is possible, but only when asked.
    let (result, _) = mount(
        &provider,
        &attributes(json!({
            "vaultCACertPath": path("rogue-ca.pem"),
            "vaultTLSClientCertPath": cert,
            "vaultTLSClientKeyPath": key,
        })),
    );
    result.expect_err(
        "InvalidArgument",
        "Vault's TLS certificate was not accepted",
    );
    result.expect_err("InvalidArgument", "vaultCACertPath");
    let (result, _) = mount(
        &provider,
        &attributes(json!({
            "vaultCACertPath": path("rogue-ca.pem"),
            "vaultSkipTLSVerify": "true",
            "vaultTLSClientCertPath": cert,
            "vaultTLSClientKeyPath": key,
        })),
    );
    result.expect_ok();
}
