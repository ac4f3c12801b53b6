//! Mounts through the real driver client (v1.5 with grpc-go 1.56.3, and v1.6)
//! into our provider process, against a real OpenBao (or HashiCorp Vault): AppRole login in a
//! deployment namespace, KV v2 and v1 reads, PKI from a central namespace, and every
//! failure the pod owner must be able to act on.
//!
//! Each test creates its own namespace `admin/deployments/<unique>` (on Vault, a path
//! prefix: `support::flavour`), so the tests run in parallel on the one server of the run.

mod support;

use std::collections::BTreeMap;
use std::process::Command;

use serde_json::{Value, json};
use support::deployment::{Deployment, RootApp};
use support::flavour::{skip_part_without_namespaces, skip_without_namespaces};
use support::openbao::{OpenBao, unique};
use support::provider::{
    DriverClient, Provider, Volume, assert_log_clean, driver_clients, mount_fresh, storm_request,
    v16_client,
};

fn provider() -> Provider {
    Provider::start(&OpenBao::shared().addr, &[])
}

/// Mounts through every driver client; returns each version's volume and versions.
fn mount_all(
    provider: &Provider,
    attributes: &Value,
    secrets: &str,
) -> Vec<(DriverClient, Volume, BTreeMap<String, String>)> {
    driver_clients()
        .into_iter()
        .map(|client| {
            let (result, volume) = client.mount_fresh(provider, attributes, secrets);
            let versions = result.expect_ok().clone();
            (client, volume, versions)
        })
        .collect()
}

/// Mounts through every driver client and expects the same failure from each,
/// with nothing written.
fn expect_failure(
    provider: &Provider,
    attributes: &Value,
    secrets: &str,
    code: &str,
    needle: &str,
) {
    for client in driver_clients() {
        client
            .mount_fresh(provider, attributes, secrets)
            .0
            .expect_err(code, needle);
    }
}

#[tokio::test]
async fn single_key_whole_secret_and_data_only() {
    let d = Deployment::new("render").await;
    d.put(
        "app",
        json!({"username": "svc-app", "password": "pa<ss>&word", "port": 5432}),
    )
    .await;
    let provider = provider();
    let objects = r#"
- objectName: password
  secretPath: secret/data/app
  secretKey: password
- objectName: port
  secretPath: secret/data/app
  secretKey: port
- objectName: whole.json
  secretPath: /v1/secret/data/app
- objectName: data.json
  secretPath: secret/data/app
  render: data
"#;
    for (client, volume, versions) in mount_all(&provider, &d.attributes(objects), &d.secrets()) {
        assert!(
            volume.is_tmpfs() || std::env::var("CI").is_err(),
            "CI runs as root and must use tmpfs"
        );
        assert_eq!(
            volume.read("password"),
            "pa<ss>&word",
            "driver {}",
            client.version
        );
        assert_eq!(volume.read("port"), "5432");
        assert_eq!(volume.mode("password"), 0o644);

        let whole: Value = serde_json::from_str(&volume.read("whole.json")).unwrap();
        assert_eq!(whole["data"]["data"]["username"], "svc-app");
        assert_eq!(whole["data"]["metadata"]["version"], 1);
        assert!(whole["request_id"].is_string() && whole.get("lease_duration").is_some());
        // Go's encoding/json escapes HTML characters; so do we, to stay byte-compatible.
        assert!(
            volume
                .read("whole.json")
                .contains(r"pa\u003css\u003e\u0026word")
        );

        assert_eq!(
            volume.read("data.json"),
            r#"{"password":"pa\u003css\u003e\u0026word","port":5432,"username":"svc-app"}"#
        );
        assert_eq!(
            versions.keys().collect::<Vec<_>>(),
            ["data.json", "password", "port", "whole.json"]
        );
    }
    assert_log_clean(&provider.log(), &["pa<ss>&word", "svc-app", &d.secret_id]);
}

/// KV v1: the secret's fields are the response's `data` itself (no `data.data`, no
/// metadata, no versions).
#[tokio::test]
async fn kv_version_1_secrets() {
    let d = Deployment::new("kv1").await;
    d.bao
        .enable_secrets(&d.ns, "kv1", "kv", Some(json!({"version": "1"})))
        .await;
    let data = json!({"password": "kv1-password-value", "port": 5432});
    support::secrets::register_values(&data);
    d.bao.api("POST", &d.ns, "kv1/app", Some(data)).await;
    d.bao
        .write_policy(
            &d.ns,
            "app-read",
            r#"path "secret/data/app*" { capabilities = ["read"] }
path "kv1/app" { capabilities = ["read"] }"#,
        )
        .await;
    let provider = provider();
    let objects = r#"
- objectName: password
  secretPath: kv1/app
  secretKey: password
- objectName: whole.json
  secretPath: kv1/app
- objectName: data.json
  secretPath: kv1/app
  render: data
"#;
    for (client, volume, _) in mount_all(&provider, &d.attributes(objects), &d.secrets()) {
        assert_eq!(
            volume.read("password"),
            "kv1-password-value",
            "driver {}",
            client.version
        );
        let whole: Value = serde_json::from_str(&volume.read("whole.json")).unwrap();
        assert_eq!(whole["data"]["password"], "kv1-password-value");
        assert!(whole["data"].get("metadata").is_none(), "{whole}");
        assert_eq!(
            volume.read("data.json"),
            r#"{"password":"kv1-password-value","port":5432}"#
        );
    }
    assert_log_clean(&provider.log(), &["kv1-password-value", &d.secret_id]);
}

#[tokio::test]
async fn pinned_version_binary_and_file_permission() {
    let d = Deployment::new("pinned").await;
    let binary: Vec<u8> = vec![0, 1, 2, 0xfe, 0xff, b'\n', 0x80];
    use base64::Engine as _;
    let encoded = base64::engine::general_purpose::STANDARD.encode(&binary);
    d.put("app", json!({"token": "first", "blob": encoded}))
        .await;
    d.put("app", json!({"token": "second", "blob": encoded}))
        .await;
    let provider = provider();
    let objects = r#"
- objectName: v1
  secretPath: secret/data/app?version=1
  secretKey: token
- objectName: current
  secretPath: secret/data/app
  secretKey: token
  filePermission: 0600
- objectName: certs/blob.bin
  secretPath: secret/data/app
  secretKey: blob
  encoding: base64
  filePermission: 0440
"#;
    for (client, volume, _) in mount_all(&provider, &d.attributes(objects), &d.secrets()) {
        assert_eq!(volume.read("v1"), "first", "driver {}", client.version);
        assert_eq!(volume.read("current"), "second");
        assert_eq!(volume.mode("current"), 0o600);
        assert_eq!(volume.mode("v1"), 0o644);
        assert_eq!(
            std::fs::read(volume.path().join("certs/blob.bin")).unwrap(),
            binary
        );
        assert_eq!(volume.mode("certs/blob.bin"), 0o440);
    }
    assert_log_clean(
        &provider.log(),
        &["first", "second", &encoded, &d.secret_id],
    );
}

#[tokio::test]
async fn secret_id_in_the_id_key_and_role_id_in_the_secret() {
    let d = Deployment::new("id-key").await;
    d.put("app", json!({"k": "from-id-key"})).await;
    let provider = provider();
    let mut attributes =
        d.attributes("- objectName: k\n  secretPath: secret/data/app\n  secretKey: k\n");
    attributes.as_object_mut().unwrap().remove("roleId");
    let secrets = json!({"roleId": d.role_id, "id": d.secret_id}).to_string();
    for (_, volume, _) in mount_all(&provider, &attributes, &secrets) {
        assert_eq!(volume.read("k"), "from-id-key");
    }
    assert_log_clean(&provider.log(), &["from-id-key", &d.secret_id]);
}

/// A certificate and its key come from one PKI response (and from another
/// namespace than the KV secrets), so they always match.
#[tokio::test]
async fn objects_sharing_a_source_come_from_one_response() {
    if skip_without_namespaces() {
        return;
    }
    let d = Deployment::new("pki").await;
    let bao = d.bao;
    let central = format!("admin/{}", unique("central"));
    bao.create_namespace(&central).await;
    bao.enable_secrets(&central, "pki", "pki", None).await;
    bao.api(
        "POST",
        &central,
        "pki/root/generate/internal",
        Some(json!({"common_name": "test-ca", "ttl": "24h"})),
    )
    .await;
    bao.api(
        "POST",
        &central,
        "pki/roles/app",
        Some(json!({"allowed_domains": "svc", "allow_subdomains": true, "max_ttl": "1h"})),
    )
    .await;
    // The role logs in in `admin` so one token can read both namespaces below it.
    let auth_mount = unique("ci");
    bao.enable_auth("admin", &auth_mount, "approle").await;
    bao.write_policy(
        "admin",
        &auth_mount,
        &format!(
            "path \"{central_child}/pki/issue/app\" {{ capabilities = [\"update\"] }}\n\
             path \"{dep_child}/secret/data/app\" {{ capabilities = [\"read\"] }}",
            central_child = central.trim_start_matches("admin/"),
            dep_child = d.ns.trim_start_matches("admin/"),
        ),
    )
    .await;
    let (role_id, secret_id) = bao
        .approle("admin", &auth_mount, "app", &[&auth_mount], json!({}))
        .await;
    d.put("app", json!({"greeting": "hello"})).await;

    let objects = format!(
        r#"
- objectName: tls.crt
  secretPath: pki/issue/app
  method: PUT
  secretArgs: {{common_name: api.svc, ttl: 10m}}
  secretKey: certificate
  vaultNamespace: {central}
- objectName: tls.key
  secretPath: pki/issue/app
  method: PUT
  secretArgs: {{ttl: 10m, common_name: api.svc}}
  secretKey: private_key
  vaultNamespace: {central}
- objectName: other.crt
  secretPath: pki/issue/app
  method: PUT
  secretArgs: {{common_name: other.svc, ttl: 10m}}
  secretKey: certificate
  vaultNamespace: {central}
- objectName: greeting
  secretPath: secret/data/app
  secretKey: greeting
"#
    );
    let mut attributes = d.attributes(&objects);
    attributes["roleId"] = json!(role_id);
    attributes["vaultAuthNamespace"] = json!("admin");
    attributes["vaultAuthMountPath"] = json!(auth_mount);
    let secrets = json!({"secretId": secret_id}).to_string();
    let provider = provider();
    for (client, volume, _) in mount_all(&provider, &attributes, &secrets) {
        assert_eq!(volume.read("greeting"), "hello");
        let cert_key = openssl(
            &["x509", "-noout", "-pubkey"],
            volume.path().join("tls.crt"),
        );
        let key_key = openssl(&["pkey", "-pubout"], volume.path().join("tls.key"));
        assert_eq!(
            cert_key, key_key,
            "driver {}: certificate and key come from different responses",
            client.version
        );
        let subject = openssl(
            &["x509", "-noout", "-subject"],
            volume.path().join("other.crt"),
        );
        assert!(
            subject.contains("other.svc"),
            "different secretArgs must be a different request: {subject}"
        );
    }
    assert_log_clean(
        &provider.log(),
        &[
            &secret_id,
            "BEGIN RSA PRIVATE KEY",
            "BEGIN EC PRIVATE KEY",
            "hello",
        ],
    );
}

fn openssl(args: &[&str], file: std::path::PathBuf) -> String {
    let out = Command::new("openssl")
        .args(args)
        .arg("-in")
        .arg(&file)
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test]
async fn login_and_policy_failures_have_their_codes() {
    let d = Deployment::new("denied").await;
    d.put("app", json!({"k": "v"})).await;
    d.put("other", json!({"k": "forbidden-value"})).await;
    let provider = provider();

    let wrong = json!({"secretId": "00000000-0000-0000-0000-000000000000"}).to_string();
    let objects = "- objectName: k\n  secretPath: secret/data/app\n  secretKey: k\n";
    expect_failure(
        &provider,
        &d.attributes(objects),
        &wrong,
        "Unauthenticated",
        "invalid role or secret ID",
    );

    let denied = "- objectName: ok\n  secretPath: secret/data/app\n  secretKey: k\n- objectName: no\n  secretPath: secret/data/other\n  secretKey: k\n";
    expect_failure(
        &provider,
        &d.attributes(denied),
        &d.secrets(),
        "PermissionDenied",
        "object \"no\"",
    );

    let missing = "- objectName: k\n  secretPath: secret/data/app-missing\n  secretKey: k\n";
    expect_failure(
        &provider,
        &d.attributes(missing),
        &d.secrets(),
        "NotFound",
        "secret/data/app-missing",
    );

    let missing_key = "- objectName: k\n  secretPath: secret/data/app\n  secretKey: nope\n";
    expect_failure(
        &provider,
        &d.attributes(missing_key),
        &d.secrets(),
        "NotFound",
        "key \"nope\" does not exist",
    );

    let missing_version =
        "- objectName: k\n  secretPath: secret/data/app?version=7\n  secretKey: k\n";
    expect_failure(
        &provider,
        &d.attributes(missing_version),
        &d.secrets(),
        "NotFound",
        "version=7",
    );

    if !skip_part_without_namespaces("a namespace that does not exist") {
        let mut wrong_ns = d.attributes(objects);
        wrong_ns["vaultNamespace"] = json!(format!("{}-gone", d.ns));
        expect_failure(
            &provider,
            &wrong_ns,
            &d.secrets(),
            "NotFound",
            "namespace not found",
        );
    }

    assert_log_clean(&provider.log(), &["forbidden-value", &d.secret_id]);
}

#[tokio::test]
async fn bad_parameters_are_invalid_argument_and_write_nothing() {
    let d = Deployment::new("invalid").await;
    d.put("app", json!({"k": "v"})).await;
    let provider = provider();
    let cases: &[(&str, &str)] = &[
        ("- objectName: [unclosed\n", "not valid YAML"),
        ("objectName: a\n", "YAML list"),
        ("- secretPath: secret/data/app\n", "objectName is required"),
        ("- objectName: a\n", "secretPath is required"),
        (
            "- objectName: a\n  secretPath: secret/data/app\n- objectName: a\n  secretPath: secret/data/app\n",
            "duplicated: a",
        ),
        (
            "- objectName: ../escape\n  secretPath: secret/data/app\n",
            "'..'",
        ),
        (
            "- objectName: /etc/passwd\n  secretPath: secret/data/app\n",
            "relative",
        ),
        (
            "- objectName: a//b\n  secretPath: secret/data/app\n",
            "clean",
        ),
        (
            "- objectName: a\n  secretPath: secret/data/app\n  encoding: rot13\n",
            "encoding",
        ),
        (
            "- objectName: a\n  secretPath: secret/data/app\n  filePermission: 0999\n",
            "filePermission",
        ),
        (
            "- objectName: a\n  secretPath: secret/data/app\n  method: DELETE\n",
            "method",
        ),
    ];
    for (objects, needle) in cases {
        expect_failure(
            &provider,
            &d.attributes(objects),
            &d.secrets(),
            "InvalidArgument",
            needle,
        );
    }

    let mut no_objects = d.attributes("");
    no_objects.as_object_mut().unwrap().remove("objects");
    expect_failure(
        &provider,
        &no_objects,
        &d.secrets(),
        "InvalidArgument",
        "objects",
    );

    let objects = "- objectName: a\n  secretPath: secret/data/app\n  secretKey: k\n";
    expect_failure(
        &provider,
        &d.attributes(objects),
        "null",
        "InvalidArgument",
        "secretId",
    );
    expect_failure(
        &provider,
        &d.attributes(objects),
        "{}",
        "InvalidArgument",
        "secretId",
    );

    let mut no_role = d.attributes(objects);
    no_role.as_object_mut().unwrap().remove("roleId");
    expect_failure(
        &provider,
        &no_role,
        &d.secrets(),
        "InvalidArgument",
        "roleName",
    );

    let mut bad_method = d.attributes(objects);
    bad_method["vaultAuthMethod"] = json!("ldap");
    expect_failure(
        &provider,
        &bad_method,
        &d.secrets(),
        "InvalidArgument",
        "vaultAuthMethod",
    );

    for client in driver_clients() {
        let volume = Volume::new();
        client
            .mount_raw(&provider, "{not json", &d.secrets(), volume.path(), "420")
            .expect_err("InvalidArgument", "attributes");
        client
            .mount_raw(
                &provider,
                &d.attributes(objects).to_string(),
                &d.secrets(),
                volume.path(),
                "rw-r--r--",
            )
            .expect_err("InvalidArgument", "permission");
        assert!(volume.files().is_empty());
    }
    assert_log_clean(&provider.log(), &[&d.secret_id]);
}

#[tokio::test]
async fn vault_down_is_unavailable() {
    let mut private = OpenBao::start_private().await;
    let app = RootApp::seed(&private).await;
    private
        .kv2_put("", "secret", "app", json!({"k": "up"}))
        .await;
    let provider = Provider::start(&private.addr, &[]);
    let attributes =
        app.attributes("- objectName: k\n  secretPath: secret/data/app\n  secretKey: k\n");
    let secrets = app.secrets();

    for (_, volume, _) in mount_all(&provider, &attributes, &secrets) {
        assert_eq!(volume.read("k"), "up");
    }
    private.stop();
    expect_failure(
        &provider,
        &attributes,
        &secrets,
        "Unavailable",
        "cannot connect",
    );
    assert_log_clean(&provider.log(), &[&app.secret_id]);
}

#[tokio::test]
async fn slow_vault_hits_our_own_mount_deadline() {
    // A Vault that accepts connections and never answers.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = format!("http://{}", listener.local_addr().unwrap());
    let _hold = std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming().take(16) {
            held.push(stream);
        }
    });
    let d = Deployment::new("slow").await;
    let provider = Provider::start(&addr, &["--mount-timeout", "1s"]);
    let attributes =
        d.attributes("- objectName: k\n  secretPath: secret/data/app\n  secretKey: k\n");
    let started = std::time::Instant::now();
    // The Mount deadline's own message (MountError::Timeout), not the transport's
    // "timed out" from a single request.
    mount_fresh(&provider, &attributes, &d.secrets())
        .0
        .expect_err("Unavailable", "timed out after 1s waiting for Vault");
    // The driver retries UNAVAILABLE three times; each attempt ends at our 1 s deadline.
    assert!(started.elapsed() < std::time::Duration::from_secs(30));
}

#[tokio::test]
async fn versions_change_exactly_with_content_and_survive_restart() {
    let d = Deployment::new("versions").await;
    d.put("app", json!({"a": "1", "b": "2"})).await;
    d.put("app-other", json!({"c": "3"})).await;
    let objects = r#"
- objectName: a
  secretPath: secret/data/app
  secretKey: a
- objectName: b
  secretPath: secret/data/app
  secretKey: b
- objectName: c
  secretPath: secret/data/app-other
  secretKey: c
"#;
    let attributes = d.attributes(objects);
    let provider = provider();
    let mount = |provider: &Provider| {
        mount_fresh(provider, &attributes, &d.secrets())
            .0
            .expect_ok()
            .clone()
    };
    let first = mount(&provider);
    assert_eq!(
        first,
        mount(&provider),
        "unchanged content must keep its version"
    );
    // HMAC-SHA256 in URL-safe base64 without padding (src/version.rs): 43
    // characters, nothing of the content, a different one per object.
    for version in first.values() {
        assert_eq!(version.len(), 43, "not an HMAC-SHA256: {version:?}");
        assert!(
            version
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
            "not URL-safe base64 without padding: {version:?}"
        );
    }
    assert_ne!(first["a"], first["b"]);

    let dir = provider.into_dir();
    let provider = Provider::start_in(dir, &OpenBao::shared().addr, &[]);
    assert_eq!(
        first,
        mount(&provider),
        "versions must survive a provider restart"
    );

    d.put("app", json!({"a": "1", "b": "changed"})).await;
    let after = mount(&provider);
    assert_eq!(after["a"], first["a"], "a did not change");
    assert_ne!(after["b"], first["b"], "b changed");
    assert_eq!(after["c"], first["c"], "c did not change");

    // Every driver client sees the same versions for the same content.
    for (_, _, versions) in mount_all(&provider, &attributes, &d.secrets()) {
        assert_eq!(versions, after);
    }
}

#[tokio::test]
async fn concurrent_mounts_of_one_identity_log_in_once() {
    let d = Deployment::new("storm").await;
    d.put("app", json!({"k": "v"})).await;
    d.put("app2", json!({"k": "w"})).await;
    let provider = provider();
    let objects = "- objectName: a\n  secretPath: secret/data/app\n  secretKey: k\n- objectName: b\n  secretPath: secret/data/app2\n  secretKey: k\n";
    let before = d.token_count().await;
    for client in driver_clients() {
        let volumes: Vec<Volume> = (0..40).map(|_| Volume::new()).collect();
        let requests: Vec<Value> = volumes
            .iter()
            .map(|v| storm_request(&d.attributes(objects), &d.secrets(), v.path()))
            .collect();
        let results = client.storm(&provider, &requests, 40);
        assert_eq!(results.len(), 40);
        for (result, volume) in results.iter().zip(&volumes) {
            result.expect_ok();
            assert_eq!(volume.read("a"), "v");
            assert_eq!(volume.read("b"), "w");
        }
    }
    assert_eq!(
        d.token_count().await - before,
        1,
        "80 Mounts by one AppRole identity must log in once"
    );
}

#[tokio::test]
async fn socket_is_private_and_removed_on_sigterm() {
    use std::os::unix::fs::{FileTypeExt as _, PermissionsExt as _};
    let mut provider = provider();
    let socket = provider.socket();
    let meta = std::fs::metadata(&socket).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);

    let status = provider.terminate();
    assert!(status.success(), "provider exit status {status}");
    assert!(!socket.exists(), "socket must be removed on shutdown");
    assert!(provider.log().contains("received SIGTERM"));
}

/// SIGTERM while a Mount is waiting on Vault: the Mount still completes with
/// its files, then the provider exits and removes its socket. The delay comes
/// from a small TCP proxy in front of the real OpenBao (a slow Vault is not
/// something the dev server can be asked to be).
// Multi-threaded: the test thread blocks on the driver client while the
// proxy's tasks must keep running.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_in_flight_mounts() {
    let d = Deployment::new("drain").await;
    d.put("app", json!({"k": "drained"})).await;
    let upstream = OpenBao::shared()
        .addr
        .trim_start_matches("http://")
        .to_owned();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy_addr = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            let upstream = upstream.clone();
            tokio::spawn(async move {
                tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
                if let Ok(mut outbound) = tokio::net::TcpStream::connect(&upstream).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    });

    let mut provider = Provider::start(&proxy_addr, &[]);
    let socket = provider.socket();
    let attributes =
        d.attributes("- objectName: k\n  secretPath: secret/data/app\n  secretKey: k\n");
    let secrets = d.secrets();
    let client = v16_client();
    let volume = Volume::new();
    let target = volume.path().to_owned();
    let pending = {
        let provider_dir = provider.providers_dir().to_owned();
        std::thread::spawn(move || client.mount_in(&provider_dir, &attributes, &secrets, &target))
    };
    std::thread::sleep(std::time::Duration::from_millis(400));
    let status = provider.terminate();
    pending.join().unwrap().expect_ok();
    assert_eq!(volume.read("k"), "drained");
    assert!(status.success(), "provider exit status {status}");
    assert!(!socket.exists());
}

#[tokio::test]
async fn renderings_with_real_data() {
    let d = Deployment::new("renderings").await;
    d.put(
        "app",
        json!({"username": "svc-render", "password": "pw-render-123", "config": {"hosts": ["db-1", "db-2"], "port": 5432}}),
    )
    .await;
    let provider = provider();
    let objects = r#"
- objectName: all
  secretPath: secret/data/app
  render: keys
- objectName: host
  secretPath: secret/data/app
  secretKeyPath: config.hosts.1
- objectName: data.json
  secretPath: secret/data/app
  render: data
- objectName: app.env
  template: |
    DB_USER={{ objects.all.username }}
    DB_PASSWORD={{ objects.all.password }}
    DB_HOST={{ objects.host }}:{{ objects["data.json"] | length > 0 }}
  filePermission: 0600
"#;
    for (client, volume, versions) in mount_all(&provider, &d.attributes(objects), &d.secrets()) {
        let files = volume.files();
        let names: Vec<&str> = files.keys().map(String::as_str).collect();
        assert_eq!(
            names,
            [
                "all/config",
                "all/password",
                "all/username",
                "app.env",
                "data.json",
                "host"
            ],
            "driver {}",
            client.version
        );
        assert_eq!(volume.read("all/username"), "svc-render");
        assert_eq!(
            volume.read("all/config"),
            r#"{"hosts":["db-1","db-2"],"port":5432}"#
        );
        assert_eq!(volume.read("host"), "db-2");
        assert_eq!(
            volume.read("app.env"),
            "DB_USER=svc-render\nDB_PASSWORD=pw-render-123\nDB_HOST=db-2:True\n"
        );
        assert_eq!(volume.mode("app.env"), 0o600);
        assert_eq!(
            versions.keys().collect::<Vec<_>>(),
            ["all", "app.env", "data.json", "host"]
        );
    }

    let broken = "- objectName: x\n  secretPath: secret/data/app\n  secretKey: username\n\
                  - objectName: t\n  template: '{{ objects.missing }}'\n";
    expect_failure(
        &provider,
        &d.attributes(broken),
        &d.secrets(),
        "InvalidArgument",
        "undefined",
    );
}

#[tokio::test]
async fn oversized_responses_are_refused_with_a_clear_error() {
    let d = Deployment::new("oversized").await;
    // Two halves: HashiCorp Vault refuses to store a JSON string above 1 MiB.
    let half = "x".repeat(750_000);
    d.put("app", json!({"big1": half, "big2": half})).await;
    let provider = provider();
    let one = "- objectName: a\n  secretPath: secret/data/app\n  secretKey: big1\n\
               - objectName: b\n  secretPath: secret/data/app\n  secretKey: big2\n";
    for (_, volume, _) in mount_all(&provider, &d.attributes(one), &d.secrets()) {
        assert_eq!(volume.read("a").len() + volume.read("b").len(), 1_500_000);
    }
    assert!(
        provider.log().contains("above 1 MiB"),
        "a response above 1 MiB is worth a warning"
    );

    let three: String = ["a", "b", "c"]
        .iter()
        .map(|o| {
            format!(
                "- objectName: {o}1\n  secretPath: secret/data/app\n  secretKey: big1\n\
                 - objectName: {o}2\n  secretPath: secret/data/app\n  secretKey: big2\n"
            )
        })
        .collect();
    expect_failure(
        &provider,
        &d.attributes(&three),
        &d.secrets(),
        "ResourceExhausted",
        "above the limit",
    );
}
