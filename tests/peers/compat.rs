//! `make compat`: the SecretProviderClasses of HashiCorp's own end-to-end
//! suite, mounted through HashiCorp's `vault-csi-provider` and through ours,
//! with the driver's real client, against one OpenBao set up as that suite
//! sets up its Vault; the files and outcomes compared.
//!
//! Read at run time from the peer's release tarball (`VSP_PEER_PROVIDER_TARBALL`):
//! `test/bats/configs/*secretproviderclass*.yaml`, the policies
//! (`vault-policy-*.hcl`) and the database role's creation statements. The
//! rest of its `provider.bats` set-up (auth roles, secrets, PKI role, the
//! database engine) is repeated here, against a real OpenBao, a real
//! kube-apiserver (Kubernetes auth: TokenReview; JWT auth: the apiserver's
//! service-account signing key) and a real PostgreSQL. Each case is one pod of
//! one of its bats tests: the SPC, the pod's service account, its tokens.
//!
//! Files must be equal byte for byte, modes included. Allowed, and said so in
//! the table: Vault's `request_id` in whole-response files; in a PKI issue, the
//! certificate, its key, serial and validity times (new per issue: both must parse as
//! certificates for the requested name); database credentials (a new lease per
//! Mount: both must be live roles in PostgreSQL, one lease per Mount).
//! Outcomes must agree (both succeed, or both fail); gRPC codes may differ
//! (README, migration notes: HashiCorp's provider answers `Unknown` for every
//! error). Anything else fails the run.
//!
//! Not part of `make test`: `cargo test --test compat -- --compat` with the
//! Makefile's environment (`make compat`; `COMPAT_ARGS=--verbose` prints
//! every file and error of both providers). The peer's SPCs name `https://vault:8200`
//! and TLS files from their kind cluster; both providers are pointed at the
//! test OpenBao instead (plain HTTP on loopback), the only change made to them.

#[path = "../support/mod.rs"]
mod support;

#[path = "hashicorp.rs"]
mod hashicorp_peer;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use serde_json::{Value, json};

use hashicorp_peer::{PeerAccount, PeerProvider, Variant};
use support::kube::Kube;
use support::openbao::OpenBao;
use support::postgres::Postgres;
use support::provider::{Provider, Volume, v16_client};

/// The bats suite's Kubernetes namespace for its pods.
const TEST_NS: &str = "test";

/// One pod of the bats suite: which SPC, which service account, which test.
struct Case {
    spc: &'static str,
    account: &'static str,
    test: &'static str,
    /// For a pod the suite expects to fail: what its bats test greps the
    /// pod's events for (Vault's own error), which both messages must carry.
    refused_with: Option<&'static str>,
}

/// The pods of `provider.bats` (engine and service account of its nginx chart).
const CASES: &[Case] = &[
    Case {
        spc: "vault-kv",
        account: "nginx-kv",
        test: "1 inline volume, file permissions",
        refused_with: None,
    },
    Case {
        spc: "vault-kv-sync",
        account: "nginx-kv",
        test: "2 sync to a Kubernetes Secret",
        refused_with: None,
    },
    Case {
        spc: "vault-kv-sync-1",
        account: "nginx-kv",
        test: "4 several SPCs in a pod",
        refused_with: None,
    },
    Case {
        spc: "vault-kv-sync-2",
        account: "nginx-kv",
        test: "4 several SPCs in a pod",
        refused_with: None,
    },
    Case {
        spc: "vault-pki",
        account: "nginx-pki",
        test: "5 PUT with secretArgs, whole response",
        refused_with: None,
    },
    Case {
        spc: "vault-db",
        account: "nginx-db",
        test: "6 dynamic secrets, one read",
        refused_with: None,
    },
    Case {
        spc: "vault-all",
        account: "nginx-all",
        test: "7 several secret types",
        refused_with: None,
    },
    Case {
        spc: "vault-kv",
        account: "nginx-pki",
        test: "8 wrong service account: refused",
        refused_with: Some("service account name not authorized"),
    },
    Case {
        spc: "vault-kv-namespace",
        account: "nginx-kv-namespace",
        test: "9 Vault namespace",
        refused_with: None,
    },
    Case {
        spc: "vault-kv-custom-audience",
        account: "nginx-kv-custom-audience",
        test: "10 custom audience",
        refused_with: None,
    },
    Case {
        spc: "vault-kv-jwt-auth",
        account: "nginx-kv",
        test: "12 JWT auth",
        refused_with: None,
    },
];

/// The audiences the CSIDriver object asks kubelet to mint tokens for in
/// that suite's cluster (`vault`, and the custom one of test 10).
const AUDIENCES: &[&str] = &["vault", "custom-audience"];

fn main() -> ExitCode {
    if !std::env::args().any(|a| a == "--compat") {
        println!("tests/peers/compat.rs: run it with `make compat`");
        return ExitCode::SUCCESS;
    }
    if !hashicorp_peer::tarball().exists() {
        println!(
            "compat: skipped: HashiCorp's provider source tarball is absent ({}); set VSP_PEER_PROVIDER_TARBALL",
            hashicorp_peer::tarball().display()
        );
        return ExitCode::SUCCESS;
    }
    if let Some(reason) = hashicorp_peer::unavailable() {
        eprintln!("compat: cannot run: {reason}");
        return ExitCode::FAILURE;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let verbose = std::env::args().any(|a| a == "--verbose");
    if runtime.block_on(run(verbose)) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// The suite's files, extracted from the tarball.
struct Configs {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl Configs {
    fn extract() -> Configs {
        let dir = tempfile::Builder::new()
            .prefix("vsp-compat.")
            .tempdir()
            .expect("tempdir");
        let ok = Command::new("tar")
            .arg("-xzf")
            .arg(hashicorp_peer::tarball())
            .arg("-C")
            .arg(dir.path())
            .args([
                "--strip-components=1",
                "--wildcards",
                "*/test/bats/configs/*",
            ])
            .status()
            .expect("run tar")
            .success();
        assert!(ok, "extracting test/bats/configs from the tarball failed");
        let path = dir.path().join("test/bats/configs");
        Configs { _dir: dir, path }
    }

    fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.path.join(name))
            .unwrap_or_else(|e| panic!("{name} in the tarball's test/bats/configs: {e}"))
    }

    /// Every SecretProviderClass of `*secretproviderclass*.yaml`: name → parameters.
    fn spcs(&self) -> BTreeMap<String, BTreeMap<String, String>> {
        let mut spcs = BTreeMap::new();
        let mut files: Vec<PathBuf> = std::fs::read_dir(&self.path)
            .expect("read configs")
            .map(|e| e.expect("entry").path())
            .filter(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().contains("secretproviderclass"))
            })
            .collect();
        files.sort();
        for file in files {
            for doc in support::kube::manifests(&file) {
                if doc["kind"] != "SecretProviderClass" {
                    continue;
                }
                let name = doc["metadata"]["name"].as_str().expect("name").to_owned();
                let params = doc["spec"]["parameters"]
                    .as_object()
                    .expect("parameters")
                    .iter()
                    .map(|(k, v)| {
                        let v = v.as_str().map_or_else(|| v.to_string(), str::to_owned);
                        (k.clone(), v)
                    })
                    .collect();
                spcs.insert(name, params);
            }
        }
        spcs
    }
}

/// OpenBao set up as `provider.bats` sets up its Vault.
async fn set_up_openbao(
    bao: &OpenBao,
    configs: &Configs,
    kube: &Kube,
    reviewer_jwt: &str,
    pg: &Postgres,
) {
    for (file, name) in [
        ("vault-policy-db.hcl", "db-policy"),
        ("vault-policy-kv.hcl", "kv-policy"),
        ("vault-policy-pki.hcl", "pki-policy"),
        (
            "vault-policy-kv-custom-audience.hcl",
            "kv-custom-audience-policy",
        ),
    ] {
        bao.write_policy("", name, &configs.read(file)).await;
    }
    bao.create_namespace("acceptance").await;
    bao.write_policy(
        "acceptance",
        "kv-namespace-policy",
        &configs.read("vault-policy-kv-namespace.hcl"),
    )
    .await;

    let kubernetes_config = json!({
        "kubernetes_host": kube.server,
        "kubernetes_ca_cert": kube.ca_pem,
        "token_reviewer_jwt": reviewer_jwt,
        "disable_local_ca_jwt": true,
    });
    for ns in ["", "acceptance"] {
        bao.enable_auth(ns, "kubernetes", "kubernetes").await;
        bao.api(
            "POST",
            ns,
            "auth/kubernetes/config",
            Some(kubernetes_config.clone()),
        )
        .await;
    }
    for (ns, role, account, audience, policies) in [
        ("", "db-role", "nginx-db", "vault", "db-policy"),
        ("", "kv-role", "nginx-kv", "vault", "kv-policy"),
        (
            "",
            "kv-custom-audience-role",
            "nginx-kv-custom-audience",
            "custom-audience",
            "kv-custom-audience-policy",
        ),
        (
            "acceptance",
            "kv-namespace-role",
            "nginx-kv-namespace",
            "vault",
            "kv-namespace-policy",
        ),
        ("", "pki-role", "nginx-pki", "vault", "pki-policy"),
        (
            "",
            "all-role",
            "nginx-all",
            "vault",
            "db-policy,kv-policy,pki-policy",
        ),
    ] {
        bao.api(
            "POST",
            ns,
            &format!("auth/kubernetes/role/{role}"),
            Some(json!({
                "bound_service_account_names": account,
                "bound_service_account_namespaces": TEST_NS,
                "audience": audience,
                "policies": policies,
                "ttl": "20m",
            })),
        )
        .await;
    }

    // JWT auth: the suite points it at the apiserver's OIDC discovery; here its
    // signing key is given directly (the apiserver's discovery needs a client
    // identity the test OpenBao does not have). Same validation, same claims.
    let sa_pub = Path::new(&std::env::var("VSP_TEST_KUBE_CA_FILE").expect("VSP_TEST_KUBE_CA_FILE"))
        .with_file_name("sa.pub");
    let public_key =
        std::fs::read_to_string(&sa_pub).unwrap_or_else(|e| panic!("{}: {e}", sa_pub.display()));
    bao.enable_auth("", "jwt", "jwt").await;
    bao.api(
        "POST",
        "",
        "auth/jwt/config",
        Some(json!({
            "jwt_validation_pubkeys": [public_key],
            "bound_issuer": format!("{}/", kube.server),
        })),
    )
    .await;
    bao.api(
        "POST",
        "",
        "auth/jwt/role/jwt-kv-role",
        Some(json!({
            "role_type": "jwt",
            "bound_audiences": "vault",
            "user_claim": "sub",
            "bound_subject": format!("system:serviceaccount:{TEST_NS}:nginx-kv"),
            "policies": "kv-policy",
            "ttl": "1h",
        })),
    )
    .await;

    bao.enable_secrets("", "pki", "pki", None).await;
    bao.api(
        "POST",
        "",
        "pki/root/generate/internal",
        Some(json!({"common_name": "example.com"})),
    )
    .await;
    bao.api(
        "POST",
        "",
        "pki/config/urls",
        Some(json!({"issuing_certificates": "http://127.0.0.1:8200/v1/pki/ca"})),
    )
    .await;
    bao.api(
        "POST",
        "",
        "pki/roles/example-dot-com",
        Some(json!({"allowed_domains": "example.com", "allow_subdomains": true})),
    )
    .await;

    bao.enable_secrets("", "secret", "kv", Some(json!({"version": "2"})))
        .await;
    for (path, key, value) in [
        ("kv1", "bar1", "hello1"),
        ("kv2", "bar2", "hello2"),
        ("kv-sync1", "bar1", "hello-sync1"),
        ("kv-sync2", "bar2", "hello-sync2"),
        ("kv-sync3", "bar3", "aGVsbG8tc3luYzM="),
        ("kv-custom-audience", "bar", "hello-custom-audience"),
    ] {
        bao.kv2_put("", "secret", path, json!({ key: value })).await;
    }
    bao.enable_secrets("acceptance", "secret", "kv", Some(json!({"version": "2"})))
        .await;
    bao.kv2_put(
        "acceptance",
        "secret",
        "kv1-namespace",
        json!({"greeting": "hello-namespaces"}),
    )
    .await;

    bao.enable_secrets("", "database", "database", None).await;
    bao.api(
        "POST",
        "",
        "database/config/postgres",
        Some(json!({
            "plugin_name": "postgresql-database-plugin",
            "allowed_roles": "*",
            "connection_url": format!(
                "postgres://{{{{username}}}}:{{{{password}}}}@127.0.0.1:{}/postgres?sslmode=disable",
                pg.port
            ),
            "username": "postgres",
            "password": "unused-with-trust-auth",
            "verify_connection": false,
        })),
    )
    .await;
    bao.api(
        "POST",
        "",
        "database/roles/test-role",
        Some(json!({
            "db_name": "postgres",
            "default_ttl": "1h",
            "max_ttl": "24h",
            "creation_statements": configs.read("postgres-creation-statements.sql"),
        })),
    )
    .await;
}

/// The suite's service accounts in namespace `test`, a token reviewer for
/// OpenBao's Kubernetes auth; returns the reviewer's token.
async fn set_up_kubernetes(kube: &Kube) -> String {
    kube.create_if_absent(json!({
        "apiVersion": "v1", "kind": "Namespace", "metadata": { "name": TEST_NS }
    }))
    .await;
    let mut accounts: Vec<&str> = CASES.iter().map(|c| c.account).collect();
    accounts.push("vault-token-reviewer");
    accounts.sort();
    accounts.dedup();
    for account in accounts {
        kube.create_if_absent(json!({
            "apiVersion": "v1", "kind": "ServiceAccount",
            "metadata": { "name": account, "namespace": TEST_NS }
        }))
        .await;
    }
    kube.create_if_absent(json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": { "name": "compat-vault-token-reviewer" },
        "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                     "name": "system:auth-delegator" },
        "subjects": [{ "kind": "ServiceAccount", "name": "vault-token-reviewer",
                       "namespace": TEST_NS }]
    }))
    .await;
    kube.token(TEST_NS, "vault-token-reviewer", &[]).await
}

/// What the driver sends for pod `pod` of `case`: the SPC's parameters
/// (pointed at the test OpenBao) and the pod's details and tokens.
async fn attributes(
    kube: &Kube,
    case: &Case,
    params: &BTreeMap<String, String>,
    vault_addr: &str,
    pod: &str,
) -> Value {
    let mut attributes = serde_json::Map::new();
    for (k, v) in params {
        match k.as_str() {
            // Their kind cluster's Vault and its TLS files.
            "vaultCACertPath" | "vaultTLSClientCertPath" | "vaultTLSClientKeyPath" => {}
            "vaultAddress" => {
                attributes.insert(k.clone(), json!(vault_addr));
            }
            _ => {
                attributes.insert(k.clone(), json!(v));
            }
        }
    }
    let mut tokens = serde_json::Map::new();
    for audience in AUDIENCES {
        tokens.insert(
            (*audience).to_owned(),
            json!({
                "token": kube.token(TEST_NS, case.account, &[audience]).await,
                "expirationTimestamp": "2030-01-01T00:00:00Z",
            }),
        );
    }
    for (k, v) in [
        ("secretProviderClass", case.spc.to_owned()),
        ("csi.storage.k8s.io/pod.name", pod.to_owned()),
        ("csi.storage.k8s.io/pod.namespace", TEST_NS.to_owned()),
        ("csi.storage.k8s.io/pod.uid", format!("uid-{pod}")),
        (
            "csi.storage.k8s.io/serviceAccount.name",
            case.account.to_owned(),
        ),
        ("csi.storage.k8s.io/ephemeral", "false".to_owned()),
        (
            "csi.storage.k8s.io/serviceAccount.tokens",
            Value::Object(tokens.clone()).to_string(),
        ),
    ] {
        attributes.insert(k.to_owned(), json!(v));
    }
    Value::Object(attributes)
}

/// One provider's answer to one case.
struct Answer {
    ok: bool,
    code: String,
    message: String,
    files: BTreeMap<String, (Vec<u8>, u32)>,
    /// Database leases created by the Mount.
    new_leases: usize,
}

async fn lease_count(bao: &OpenBao) -> usize {
    let (status, body) = bao
        .api_status(
            "LIST",
            "",
            "sys/leases/lookup/database/creds/test-role",
            None,
        )
        .await;
    if status == 404 {
        return 0;
    }
    body["data"]["keys"].as_array().map_or(0, Vec::len)
}

async fn mount(bao: &OpenBao, providers_dir: &Path, attributes: &Value) -> Answer {
    let volume = Volume::new();
    let before = lease_count(bao).await;
    let result = tokio::task::block_in_place(|| {
        v16_client().mount_in(providers_dir, attributes, "{}", volume.path())
    });
    Answer {
        ok: result.ok,
        code: if result.ok {
            "OK".to_owned()
        } else {
            result.grpc_code
        },
        message: result.message,
        files: volume.files(),
        new_leases: lease_count(bao).await - before,
    }
}

/// `raw` (a JSON document) with the values of `keys`, wherever they are,
/// replaced by `"…"`; everything else byte for byte as it was.
fn mask(raw: &str, keys: &[&str]) -> String {
    let bytes = raw.as_bytes();
    let mut out = String::with_capacity(raw.len());
    let mut i = 0;
    while i < bytes.len() {
        let masked = keys.iter().find_map(|key| {
            let pattern = format!("\"{key}\":");
            raw[i..].starts_with(&pattern).then_some(pattern.len())
        });
        if let Some(len) = masked {
            out.push_str(&raw[i..i + len]);
            out.push_str("\"…\"");
            i = skip_value(bytes, i + len);
        } else if bytes[i] == b'"' {
            // A string that is not a masked key: copy it whole.
            let end = skip_value(bytes, i);
            out.push_str(&raw[i..end]);
            i = end;
        } else {
            let c = raw[i..].chars().next().expect("char");
            out.push(c);
            i += c.len_utf8();
        }
    }
    out
}

/// The index just past the JSON value starting at `i`.
fn skip_value(b: &[u8], mut i: usize) -> usize {
    match b.get(i) {
        Some(b'"') => {
            i += 1;
            while i < b.len() && b[i] != b'"' {
                i += if b[i] == b'\\' { 2 } else { 1 };
            }
            i + 1
        }
        Some(b'[') | Some(b'{') => {
            let mut depth = 0usize;
            while i < b.len() {
                match b[i] {
                    b'"' => {
                        i = skip_value(b, i);
                        continue;
                    }
                    b'[' | b'{' => depth += 1,
                    b']' | b'}' => {
                        depth -= 1;
                        if depth == 0 {
                            return i + 1;
                        }
                    }
                    _ => {}
                }
                i += 1;
            }
            i
        }
        _ => {
            while i < b.len() && !matches!(b[i], b',' | b'}' | b']') {
                i += 1;
            }
            i
        }
    }
}

/// The subject of a PEM certificate, or None when it does not parse.
fn certificate_subject(pem: &str) -> Option<String> {
    let mut child = Command::new("openssl")
        .args(["x509", "-noout", "-subject", "-ext", "subjectAltName"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .ok()?;
    use std::io::Write as _;
    child.stdin.take()?.write_all(pem.as_bytes()).ok()?;
    let out = child.wait_with_output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// How one file of ours compares with theirs: Ok(how it is equal) or
/// Err(the difference).
fn compare_file(
    name: &str,
    object: &Value,
    ours: &[u8],
    theirs: &[u8],
    pg: &Postgres,
) -> Result<&'static str, String> {
    if ours == theirs {
        return Ok("byte for byte");
    }
    let path = object["secretPath"].as_str().unwrap_or_default();
    let (Ok(ours_text), Ok(theirs_text)) = (std::str::from_utf8(ours), std::str::from_utf8(theirs))
    else {
        return Err(format!("{name}: binary contents differ"));
    };
    let whole = object.get("secretKey").is_none();
    if whole {
        let pki = path.contains("pki/issue/");
        let keys: &[&str] = if pki {
            &[
                "request_id",
                "certificate",
                "issuing_ca",
                "ca_chain",
                "private_key",
                "serial_number",
                "expiration",
                "not_before",
            ]
        } else {
            &["request_id"]
        };
        let (o, t) = (mask(ours_text, keys), mask(theirs_text, keys));
        if o != t {
            return Err(format!(
                "{name}: whole response differs beyond {keys:?}:\n  ours:   {o}\n  theirs: {t}"
            ));
        }
        if !pki {
            return Ok("apart from request_id");
        }
        let common_name = object["secretArgs"]["common_name"]
            .as_str()
            .unwrap_or_default();
        for (who, text) in [("ours", ours_text), ("theirs", theirs_text)] {
            let v: Value =
                serde_json::from_str(text).map_err(|e| format!("{name} ({who}): {e}"))?;
            for field in ["certificate", "issuing_ca"] {
                let subject = v["data"][field]
                    .as_str()
                    .and_then(certificate_subject)
                    .ok_or_else(|| format!("{name} ({who}): data.{field} is not a certificate"))?;
                if field == "certificate" && !subject.contains(common_name) {
                    return Err(format!(
                        "{name} ({who}): the certificate is not for {common_name}: {subject}"
                    ));
                }
            }
        }
        return Ok(
            "apart from request_id and the issue (certificate, key, serial, validity; both parse)",
        );
    }
    if path.starts_with("database/creds/") {
        let key = object["secretKey"].as_str().unwrap_or_default();
        if ours.is_empty() || theirs.is_empty() {
            return Err(format!("{name}: empty database credential"));
        }
        if key == "username" {
            for (who, user) in [("ours", ours_text), ("theirs", theirs_text)] {
                let live = pg.query(&format!(
                    "SELECT count(*) FROM pg_roles WHERE rolname = '{}'",
                    user.replace('\'', "''")
                ));
                if live.trim() != "1" {
                    return Err(format!(
                        "{name} ({who}): {user} is not a role in PostgreSQL"
                    ));
                }
            }
        }
        return Ok("new lease each (both live roles)");
    }
    Err(format!(
        "{name}: contents differ:\n  ours:   {}\n  theirs: {}",
        String::from_utf8_lossy(ours),
        String::from_utf8_lossy(theirs)
    ))
}

/// Row of the printed table.
struct Row {
    spc: String,
    test: &'static str,
    objects: usize,
    ours: String,
    theirs: String,
    files: String,
    problems: Vec<String>,
}

async fn run(verbose: bool) -> bool {
    let started = std::time::Instant::now();
    let configs = Configs::extract();
    let spcs = configs.spcs();
    eprintln!(
        "compat: {} SecretProviderClasses from HashiCorp's provider {} (test/bats/configs)",
        spcs.len(),
        hashicorp_peer::version()
    );
    let kube = Kube::shared();
    let reviewer = set_up_kubernetes(kube).await;
    let pg = Postgres::start();
    let bao = OpenBao::start_private().await;
    set_up_openbao(&bao, &configs, kube, &reviewer, &pg).await;
    let account = PeerAccount::ensure(kube).await;
    let ours = Provider::start(&bao.addr, &["--log-level", "warn"]);
    let theirs = PeerProvider::start(Variant::Stock, &bao.addr, kube, &account);

    let mut rows = Vec::new();
    for spc in spcs.keys() {
        if !CASES.iter().any(|c| c.spc == spc.as_str()) {
            rows.push(Row {
                spc: spc.clone(),
                test: "",
                objects: 0,
                ours: String::new(),
                theirs: String::new(),
                files: String::new(),
                problems: vec![format!("{spc}: no case for this SPC (add one to CASES)")],
            });
        }
    }
    for (i, case) in CASES.iter().enumerate() {
        let Some(params) = spcs.get(case.spc) else {
            rows.push(Row {
                spc: case.spc.to_owned(),
                test: case.test,
                objects: 0,
                ours: String::new(),
                theirs: String::new(),
                files: String::new(),
                problems: vec![format!("{}: not in the tarball", case.spc)],
            });
            continue;
        };
        let objects: Vec<Value> =
            serde_yaml_ng::from_str(params.get("objects").map_or("", String::as_str))
                .unwrap_or_default();
        let by_name: BTreeMap<String, Value> = objects
            .iter()
            .map(|o| {
                (
                    o["objectName"].as_str().unwrap_or_default().to_owned(),
                    o.clone(),
                )
            })
            .collect();
        let pod = format!("nginx-{i}-{}", case.spc.trim_start_matches("vault-"));
        let attrs = attributes(kube, case, params, &bao.addr, &pod).await;
        // Each provider its own pod UID, so neither reuses a login of the other's pod.
        let mut ours_attrs = attrs.clone();
        ours_attrs["csi.storage.k8s.io/pod.uid"] = json!(format!("uid-ours-{pod}"));
        let a = mount(&bao, ours.providers_dir(), &ours_attrs).await;
        let t = mount(&bao, &theirs.providers_dir(), &attrs).await;
        let mut problems = Vec::new();
        let mut how: Vec<&str> = Vec::new();
        if verbose {
            for (name, (o, _)) in &a.files {
                let th = t
                    .files
                    .get(name)
                    .map(|(b, _)| b.as_slice())
                    .unwrap_or_default();
                eprintln!(
                    "compat: {} {name}\n  ours:   {}\n  theirs: {}",
                    case.spc,
                    String::from_utf8_lossy(o),
                    String::from_utf8_lossy(th)
                );
            }
            if !a.ok || !t.ok {
                eprintln!(
                    "compat: {} ({})\n  ours:   {} {}\n  theirs: {} {}",
                    case.spc, case.account, a.code, a.message, t.code, t.message
                );
            }
        }
        if let Some(needle) = case.refused_with {
            for (who, x) in [("ours", &a), ("theirs", &t)] {
                if x.ok || !x.message.contains(needle) {
                    problems.push(format!(
                        "{who}: expected a refusal carrying {needle:?}, got {} {:?}",
                        x.code, x.message
                    ));
                }
            }
        }
        if a.ok != t.ok {
            problems.push(format!(
                "outcome differs: ours {} {:?}, theirs {} {:?}",
                a.code, a.message, t.code, t.message
            ));
        } else if a.ok {
            let names: Vec<&String> = a.files.keys().collect();
            if names != t.files.keys().collect::<Vec<_>>() {
                problems.push(format!(
                    "files differ: ours {names:?}, theirs {:?}",
                    t.files.keys().collect::<Vec<_>>()
                ));
            }
            for (name, (ours_bytes, ours_mode)) in &a.files {
                let Some((theirs_bytes, theirs_mode)) = t.files.get(name) else {
                    continue;
                };
                if ours_mode != theirs_mode {
                    problems.push(format!(
                        "{name}: mode {ours_mode:o} (ours) vs {theirs_mode:o} (theirs)"
                    ));
                }
                let object = by_name.get(name).cloned().unwrap_or(Value::Null);
                match compare_file(name, &object, ours_bytes, theirs_bytes, &pg) {
                    Ok(h) => {
                        if !how.contains(&h) {
                            how.push(h);
                        }
                    }
                    Err(e) => problems.push(e),
                }
            }
            let reads_db = objects.iter().any(|o| {
                o["secretPath"]
                    .as_str()
                    .is_some_and(|p| p.starts_with("database/creds/"))
            });
            if reads_db && (a.new_leases != 1 || t.new_leases != 1) {
                problems.push(format!(
                    "database leases per Mount: ours {}, theirs {} (the SPC expects one read)",
                    a.new_leases, t.new_leases
                ));
            }
        }
        let files = if !problems.is_empty() {
            "**no**".to_owned()
        } else if !a.ok {
            "both refused (no files)".to_owned()
        } else {
            format!("yes: {}", how.join("; "))
        };
        let outcome = |x: &Answer| match (x.ok, x.files.len(), case.refused_with) {
            (true, 1, _) => "OK, 1 file".to_owned(),
            (true, n, _) => format!("OK, {n} files"),
            (false, _, Some(needle)) if x.message.contains(needle) => {
                format!("{}, with Vault's \"{needle}\"", x.code)
            }
            (false, _, _) => {
                let message: String = x.message.chars().take(90).collect();
                format!("{}: {}", x.code, message.replace('|', "\\|"))
            }
        };
        rows.push(Row {
            spc: format!("{} ({})", case.spc, case.account),
            test: case.test,
            objects: objects.len(),
            ours: outcome(&a),
            theirs: outcome(&t),
            files,
            problems,
        });
    }
    drop(theirs);
    drop(ours);

    println!(
        "\nmake compat: HashiCorp's e2e SecretProviderClasses (vault-csi-provider {}), ours vs theirs, driver client v1.6\n",
        hashicorp_peer::version()
    );
    println!("| SPC (service account) | bats test | objects | ours | theirs | files equal? |");
    println!("|---|---|---|---|---|---|");
    for r in &rows {
        println!(
            "| {} | {} | {} | {} | {} | {} |",
            r.spc, r.test, r.objects, r.ours, r.theirs, r.files
        );
    }
    let problems: Vec<&String> = rows.iter().flat_map(|r| &r.problems).collect();
    println!(
        "\nAdapted for this machine: `vaultAddress` points at the test OpenBao and the TLS file parameters \
         (`vaultCACertPath`, `vaultTLSClient*`) are dropped (plain HTTP on loopback); JWT auth validates with \
         the apiserver's service-account key instead of OIDC discovery."
    );
    println!(
        "Error codes may differ: HashiCorp's provider answers gRPC Unknown for every error (README: migration notes)."
    );
    eprintln!("compat: {:.1} s", started.elapsed().as_secs_f64());
    if problems.is_empty() {
        println!("\ncompat: no unexplained difference");
        true
    } else {
        println!("\ncompat: {} unexplained difference(s):", problems.len());
        for p in problems {
            println!("- {p}");
        }
        false
    }
}
