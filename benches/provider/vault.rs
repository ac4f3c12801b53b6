//! The one OpenBao of a bench run, set up like the seed workflow, and the
//! audit log that counts every request it answers.
//!
//! Namespace `admin/deployments/bench` holds KV v2 at `secret` (20 secrets
//! `obj-01`…`obj-20`), PKI at `pki` (EC P-256 root, role `app`, certificates
//! not stored), AppRole roles `app-a` and `app-b`, and a JWT auth mount whose
//! role `app` accepts tokens this process signs (audience `vault`). Policy
//! `app` reads `secret/data/*` and issues from `pki/issue/app`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use crate::support::openbao::{OpenBao, PrivateOpenBao};

/// The namespace every benchmark works in.
pub const NAMESPACE: &str = "admin/deployments/bench";
/// How many KV secrets exist (`obj-01` … `obj-20`).
pub const KV_SECRETS: usize = 20;

/// The bench's OpenBao with its fixtures.
pub struct Fixture {
    pub bao: PrivateOpenBao,
    pub audit: Audit,
    /// Role IDs of AppRole roles `app-a` and `app-b`.
    pub role_ids: [String; 2],
    jwt_key: jsonwebtoken::EncodingKey,
    _dir: tempfile::TempDir,
}

impl Fixture {
    /// Starts OpenBao with a file audit device and sets everything up.
    pub async fn start() -> Fixture {
        let dir = tempfile::Builder::new()
            .prefix("vsp-bench.")
            .tempdir()
            .expect("tempdir");
        let audit = Audit {
            path: dir.path().join("audit.log"),
            config: dir.path().join("audit.hcl"),
        };
        audit.write_config(true);
        let bao =
            OpenBao::start_private_with(&[format!("-config={}", audit.config.display())]).await;

        let ns = NAMESPACE;
        bao.create_namespace(ns).await;
        bao.enable_secrets(ns, "secret", "kv", Some(json!({"version": "2"})))
            .await;
        for i in 1..=KV_SECRETS {
            bao.kv2_put(
                ns,
                "secret",
                &kv_name(i),
                json!({"value": random_hex(16), "user": format!("bench-user-{i}")}),
            )
            .await;
        }

        bao.enable_secrets(ns, "pki", "pki", None).await;
        bao.api(
            "POST",
            ns,
            "sys/mounts/pki/tune",
            Some(json!({"max_lease_ttl": "87600h"})),
        )
        .await;
        bao.api(
            "POST",
            ns,
            "pki/root/generate/internal",
            Some(json!({"common_name": "bench-ca", "ttl": "8760h", "key_type": "ec", "key_bits": 256})),
        )
        .await;
        bao.api(
            "POST",
            ns,
            "pki/roles/app",
            Some(json!({
                "allowed_domains": "svc", "allow_subdomains": true, "max_ttl": "48h",
                "key_type": "ec", "key_bits": 256, "no_store": true,
            })),
        )
        .await;

        bao.write_policy(
            ns,
            "app",
            r#"path "secret/data/*" { capabilities = ["read"] }
path "pki/issue/app" { capabilities = ["update"] }"#,
        )
        .await;
        bao.enable_auth(ns, "approle", "approle").await;
        let mut role_ids = Vec::new();
        for role in ["app-a", "app-b"] {
            let (role_id, _) = bao
                .approle(ns, "approle", role, &["app"], json!({"token_ttl": "1h"}))
                .await;
            role_ids.push(role_id);
        }

        let (private_pem, public_pem) = signing_key(dir.path());
        bao.enable_auth(ns, "jwt", "jwt").await;
        bao.api(
            "POST",
            ns,
            "auth/jwt/config",
            Some(json!({"jwt_validation_pubkeys": [public_pem]})),
        )
        .await;
        bao.api(
            "POST",
            ns,
            "auth/jwt/role/app",
            Some(json!({
                "role_type": "jwt", "user_claim": "sub", "bound_audiences": ["vault"],
                "token_policies": ["app"], "token_ttl": "1h",
            })),
        )
        .await;

        Fixture {
            bao,
            audit,
            role_ids: role_ids.try_into().expect("two roles"),
            jwt_key: jsonwebtoken::EncodingKey::from_ec_pem(private_pem.as_bytes())
                .expect("EC key"),
            _dir: dir,
        }
    }

    /// Turns the audit device on or off: OpenBao manages audit devices only
    /// from its configuration file, and reloads it on SIGHUP. Latency runs
    /// go without it (it writes two log lines per request).
    pub async fn set_audit(&self, on: bool) {
        self.audit.write_config(on);
        let pid = self.bao.pid().expect("OpenBao runs");
        let sent = Command::new("kill")
            .args(["-HUP", &pid.to_string()])
            .status()
            .expect("run kill");
        assert!(sent.success(), "kill -HUP {pid}");
        for _ in 0..200 {
            let devices = self.bao.api("GET", "", "sys/audit", None).await;
            if devices["data"].get("count/").is_some() == on {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
        panic!(
            "OpenBao did not turn its audit device {}",
            if on { "on" } else { "off" }
        );
    }

    /// Tokens that exist in the bench namespace (one per login so far).
    pub async fn token_count(&self) -> usize {
        let (status, body) = self
            .bao
            .api_status("LIST", NAMESPACE, "auth/token/accessors", None)
            .await;
        if status == 404 {
            return 0;
        }
        body["data"]["keys"].as_array().map_or(0, Vec::len)
    }

    /// A fresh secret ID for role `app-a` (`which` = 0) or `app-b` (1): a new
    /// identity, so its first Mount logs in.
    pub async fn secret_id(&self, which: usize) -> String {
        let role = ["app-a", "app-b"][which];
        self.bao.new_secret_id(NAMESPACE, "approle", role).await
    }

    /// A service-account token for `pod`, signed for audience `vault`.
    pub fn pod_jwt(&self, pod: &str) -> String {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let claims = json!({
            "iss": "https://kubernetes.default.svc.cluster.local",
            "sub": "system:serviceaccount:default:app",
            "aud": ["vault"],
            "iat": now - 5, "nbf": now - 5, "exp": now + 3600,
            "kubernetes.io": {
                "namespace": "default",
                "serviceaccount": {"name": "app", "uid": "4f1c6b8e-0000-4000-8000-000000000001"},
                "pod": {"name": pod, "uid": pod_uid(pod)},
            },
        });
        jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256),
            &claims,
            &self.jwt_key,
        )
        .expect("sign JWT")
    }
}

/// `obj-07` for 7.
pub fn kv_name(i: usize) -> String {
    format!("obj-{i:02}")
}

/// The pod UID the bench gives pod `name`.
pub fn pod_uid(name: &str) -> String {
    format!("uid-{name}")
}

/// SecretProviderClass `objects` for the first `n` KV secrets.
pub fn kv_objects(n: usize) -> String {
    (1..=n)
        .map(|i| {
            let name = kv_name(i);
            format!("- objectName: {name}\n  secretPath: secret/data/{name}\n  secretKey: value\n")
        })
        .collect()
}

/// `objects` with `n` template objects of static text, as long as a KV
/// value: the same files as [`kv_objects`] but nothing to read from Vault.
pub fn template_objects(n: usize) -> String {
    (1..=n)
        .map(|i| {
            format!(
                "- objectName: {}\n  template: '{}'\n",
                kv_name(i),
                "x".repeat(32)
            )
        })
        .collect()
}

/// `objects` for a TLS certificate and its key (one PKI issue) plus one KV secret.
pub fn pki_objects() -> String {
    let issue = "  secretPath: pki/issue/app\n  method: PUT\n  secretArgs: {common_name: app.bench.svc, ttl: 24h}\n";
    format!(
        "- objectName: tls.crt\n{issue}  secretKey: certificate\n\
         - objectName: tls.key\n{issue}  secretKey: private_key\n{}",
        kv_objects(1)
    )
}

/// The attributes the driver sends for pod `pod` of an AppRole SPC.
pub fn approle_attributes(role_id: &str, objects: &str, pod: &str) -> Value {
    let mut attributes = pod_attributes(objects, pod);
    attributes["roleId"] = json!(role_id);
    attributes
}

/// The attributes for pod `pod` of a JWT-auth SPC, with the pod's token.
pub fn jwt_attributes(objects: &str, pod: &str, jwt: &str) -> Value {
    let mut attributes = pod_attributes(objects, pod);
    attributes["vaultAuthMethod"] = json!("jwt");
    attributes["roleName"] = json!("app");
    attributes["csi.storage.k8s.io/serviceAccount.tokens"] = json!(
        json!({"vault": {"token": jwt, "expirationTimestamp": "2030-01-01T00:00:00Z"}}).to_string()
    );
    attributes
}

fn pod_attributes(objects: &str, pod: &str) -> Value {
    json!({
        "vaultNamespace": NAMESPACE,
        "objects": objects,
        "secretProviderClass": "bench",
        "csi.storage.k8s.io/pod.name": pod,
        "csi.storage.k8s.io/pod.namespace": "default",
        "csi.storage.k8s.io/pod.uid": pod_uid(pod),
        "csi.storage.k8s.io/serviceAccount.name": "app",
        "csi.storage.k8s.io/ephemeral": "true",
    })
}

/// The secrets the driver sends for an AppRole secret ID.
pub fn approle_secrets(secret_id: &str) -> String {
    json!({"secretId": secret_id}).to_string()
}

/// Requests counted in OpenBao's audit log.
#[derive(Clone, Copy, Debug, Default)]
pub struct Counts {
    /// Every request.
    pub total: usize,
    /// `auth/*/login`.
    pub logins: usize,
    /// KV reads (`secret/…`).
    pub kv_reads: usize,
    /// PKI issues (`pki/issue/…`).
    pub pki_issues: usize,
}

impl Counts {
    /// Everything that is not a login, KV read or PKI issue (e.g. renewals).
    pub fn other(&self) -> usize {
        self.total - self.logins - self.kv_reads - self.pki_issues
    }
}

/// OpenBao's file audit device: one JSON line per request and per response.
pub struct Audit {
    path: PathBuf,
    /// The server's `-config` file, which declares the device.
    config: PathBuf,
}

impl Audit {
    fn write_config(&self, on: bool) {
        let stanza = if on {
            format!(
                "audit \"file\" \"count\" {{\n  options {{\n    file_path = \"{}\"\n  }}\n}}\n",
                self.path.display()
            )
        } else {
            String::new()
        };
        std::fs::write(&self.config, stanza).expect("write OpenBao config");
    }

    /// A position in the log, before some work.
    pub fn mark(&self) -> u64 {
        std::fs::metadata(&self.path).map_or(0, |m| m.len())
    }

    /// The requests logged since `mark`.
    pub fn since(&self, mark: u64) -> Counts {
        use std::io::{Read as _, Seek as _};
        let mut tail = Vec::new();
        if let Ok(mut file) = std::fs::File::open(&self.path) {
            file.seek(std::io::SeekFrom::Start(mark))
                .expect("seek audit log");
            file.read_to_end(&mut tail).expect("read audit log");
        }
        let mut counts = Counts::default();
        for line in tail.split(|b| *b == b'\n') {
            let Ok(entry) = serde_json::from_slice::<Value>(line) else {
                continue;
            };
            if entry["type"] != "request" {
                continue;
            }
            let path = entry["request"]["path"].as_str().unwrap_or_default();
            counts.total += 1;
            if path.starts_with("auth/") && path.ends_with("/login") {
                counts.logins += 1;
            } else if path.starts_with("secret/") {
                counts.kv_reads += 1;
            } else if path.starts_with("pki/issue/") {
                counts.pki_issues += 1;
            }
        }
        counts
    }
}

/// An EC P-256 key pair made with openssl: (private PEM, public PEM).
fn signing_key(dir: &Path) -> (String, String) {
    let key = dir.join("jwt-key.pem");
    let ok = Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
        ])
        .arg(&key)
        .status()
        .expect("run openssl")
        .success();
    assert!(ok, "openssl genpkey failed");
    let public = Command::new("openssl")
        .args(["pkey", "-pubout", "-in"])
        .arg(&key)
        .output()
        .expect("run openssl");
    assert!(public.status.success(), "openssl pkey failed");
    (
        std::fs::read_to_string(&key).expect("read key"),
        String::from_utf8(public.stdout).expect("PEM"),
    )
}

fn random_hex(bytes: usize) -> String {
    (0..bytes)
        .map(|_| format!("{:02x}", rand::random::<u8>()))
        .collect()
}
