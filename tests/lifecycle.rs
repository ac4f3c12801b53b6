//! Identity and secret lifecycles against real OpenBao: JWT login with a key
//! the test holds, token renewal and replacement at max TTL, PKI certificates
//! reused inside their window and re-issued after `renewalPercent`, idle pod
//! state dropped, and Vault request counts for storms and rotation polls.
//!
//! TTLs are real OpenBao TTLs of a few seconds, so some tests wait; each wait
//! leaves seconds of margin around the instant it is about.

mod support;

use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};
use support::certs::public_key;
use support::deployment::{Deployment, RootApp, merge};
use support::jwt::{service_account_jwt, tokens_attribute, unix_now};
use support::openbao::{OpenBao, unique};
use support::provider::{
    Provider, Volume, assert_log_clean, mount_fresh, storm_request, v16_client,
};

#[tokio::test]
async fn jwt_auth_with_audiences_and_expiry() {
    let d = Deployment::new("jwt").await;
    let bao = d.bao;
    d.put("app", json!({"k": "via-jwt"})).await;
    let private_pem = d
        .jwt_role(json!({
            "role_type": "jwt",
            "user_claim": "sub",
            "bound_audiences": ["vault"],
            "bound_subject": "system:serviceaccount:default:app",
            "token_policies": ["app-read"],
            "token_ttl": "10m",
        }))
        .await;
    let provider = Provider::start(&bao.addr, &[]);
    let attributes = |pod_uid: &str, tokens: String| {
        let mut a =
            d.attributes("- objectName: k\n  secretPath: secret/data/app\n  secretKey: k\n");
        let a_map = a.as_object_mut().unwrap();
        a_map.remove("roleId");
        a_map.insert("vaultAuthMethod".into(), json!("jwt"));
        a_map.insert("roleName".into(), json!("app"));
        a_map.insert("csi.storage.k8s.io/pod.uid".into(), json!(pod_uid));
        a_map.insert(
            "csi.storage.k8s.io/serviceAccount.tokens".into(),
            json!(tokens),
        );
        a
    };
    let good = service_account_jwt(&private_pem, "vault", unix_now() + 600, "app");

    let (result, files) = mount_fresh(
        &provider,
        &attributes("pod-good", tokens_attribute("vault", &good)),
        "null",
    );
    result.expect_ok();
    assert_eq!(files.read("k"), "via-jwt");

    // A token minted for another audience, handed over under the key "vault".
    let other_aud = service_account_jwt(&private_pem, "other", unix_now() + 600, "app");
    let (result, _) = mount_fresh(
        &provider,
        &attributes("pod-aud", tokens_attribute("vault", &other_aud)),
        "null",
    );
    result.expect_err("Unauthenticated", "audience");

    let expired = service_account_jwt(&private_pem, "vault", unix_now() - 60, "app");
    let (result, _) = mount_fresh(
        &provider,
        &attributes("pod-expired", tokens_attribute("vault", &expired)),
        "null",
    );
    result.expect_err("Unauthenticated", "Vault refused the login");

    let wrong_sa = service_account_jwt(&private_pem, "vault", unix_now() + 600, "intruder");
    let (result, _) = mount_fresh(
        &provider,
        &attributes("pod-sa", tokens_attribute("vault", &wrong_sa)),
        "null",
    );
    result.expect_err("Unauthenticated", "Vault refused the login");

    // The driver sent no token for the audience the SPC asks for.
    let mut wants_other = attributes("pod-missing", tokens_attribute("vault", &good));
    wants_other["audience"] = json!("vault-prod");
    let (result, _) = mount_fresh(&provider, &wants_other, "null");
    result.expect_err("InvalidArgument", "\"vault-prod\"");

    assert_log_clean(
        &provider.log(),
        &[&good, &other_aud, &expired, &wrong_sa, "via-jwt"],
    );
}

/// The token's accessor, found in the namespace's accessor list.
async fn accessors(d: &Deployment) -> Vec<String> {
    d.bao.token_accessors(&d.ns).await
}

#[tokio::test]
async fn token_is_renewed_then_replaced_after_its_max_ttl() {
    let d = Deployment::new("renew").await;
    d.put("app", json!({"k": "v"})).await;
    d.bao
        .approle(
            &d.ns,
            "approle",
            "short",
            &["app-read"],
            json!({"token_ttl": "6s", "token_max_ttl": "14s"}),
        )
        .await;
    let role_id = d
        .bao
        .api("GET", &d.ns, "auth/approle/role/short/role-id", None)
        .await["data"]["role_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let secret_id = d.bao.new_secret_id(&d.ns, "approle", "short").await;
    let mut attributes =
        d.attributes("- objectName: k\n  secretPath: secret/data/app\n  secretKey: k\n");
    attributes["roleId"] = json!(role_id);
    let secrets = json!({"secretId": secret_id}).to_string();
    let provider = Provider::start(&d.bao.addr, &[]);

    // t=0: login.
    mount_fresh(&provider, &attributes, &secrets).0.expect_ok();
    let first = accessors(&d).await;
    assert_eq!(first.len(), 1);

    // t≈4.5 (past 70% of 6 s): renewed, same token, TTL back near 6 s.
    tokio::time::sleep(Duration::from_millis(4500)).await;
    mount_fresh(&provider, &attributes, &secrets).0.expect_ok();
    assert_eq!(accessors(&d).await, first, "renewal must keep the token");
    let lookup = d
        .bao
        .api(
            "POST",
            &d.ns,
            "auth/token/lookup-accessor",
            Some(json!({"accessor": first[0]})),
        )
        .await;
    let ttl = lookup["data"]["ttl"].as_u64().unwrap();
    assert!(ttl >= 4, "TTL {ttl}s: the token was not renewed");

    // t≈15.5: the max TTL (14 s) has ended it; a fresh login replaces it.
    tokio::time::sleep(Duration::from_secs(11)).await;
    mount_fresh(&provider, &attributes, &secrets).0.expect_ok();
    let now = accessors(&d).await;
    assert!(
        !now.contains(&first[0]),
        "the expired token must not be the one in use"
    );
    assert_eq!(now.len(), 1);
    assert_log_clean(&provider.log(), &[&secret_id]);
}

/// A PKI mount in its own namespace with a role issuing short certificates;
/// the deployment's AppRole may issue from it (policy in `admin`).
struct Pki {
    ns: String,
    attributes: Value,
    secrets: String,
}

async fn pki_setup(prefix: &str, objects_extra: &str) -> Pki {
    let bao = OpenBao::shared();
    let ns = format!("admin/{}", unique(prefix));
    bao.create_namespace(&ns).await;
    bao.enable_secrets(&ns, "pki", "pki", None).await;
    bao.api(
        "POST",
        &ns,
        "pki/root/generate/internal",
        Some(json!({"common_name": "ca", "ttl": "24h"})),
    )
    .await;
    bao.api(
        "POST",
        &ns,
        "pki/roles/app",
        Some(json!({"allowed_domains": "svc", "allow_subdomains": true, "max_ttl": "1h", "not_before_duration": "1s"})),
    )
    .await;
    let mount = unique("pki-login");
    bao.enable_auth(&ns, &mount, "approle").await;
    bao.write_policy(
        &ns,
        "issue",
        r#"path "pki/issue/app" { capabilities = ["update"] }"#,
    )
    .await;
    let (role_id, secret_id) = bao.approle(&ns, &mount, "app", &["issue"], json!({})).await;
    let objects = format!(
        "- objectName: tls.crt\n  secretPath: pki/issue/app\n  method: PUT\n  secretArgs: {{common_name: api.svc, ttl: 20s}}\n  secretKey: certificate\n{objects_extra}\
         - objectName: tls.key\n  secretPath: pki/issue/app\n  method: PUT\n  secretArgs: {{common_name: api.svc, ttl: 20s}}\n  secretKey: private_key\n\
         - objectName: serial\n  secretPath: pki/issue/app\n  method: PUT\n  secretArgs: {{common_name: api.svc, ttl: 20s}}\n  secretKey: serial_number\n\
         - objectName: fullchain.pem\n  secretPath: pki/issue/app\n  method: PUT\n  secretArgs: {{common_name: api.svc, ttl: 20s}}\n  render: fullchain\n\
         - objectName: ca.pem\n  secretPath: pki/issue/app\n  method: PUT\n  secretArgs: {{common_name: api.svc, ttl: 20s}}\n  render: ca-chain\n"
    );
    let attributes = json!({
        "roleId": role_id,
        "vaultNamespace": ns,
        "vaultAuthMountPath": mount,
        "objects": objects,
        "csi.storage.k8s.io/pod.name": "web-0",
        "csi.storage.k8s.io/pod.namespace": "default",
        "csi.storage.k8s.io/pod.uid": format!("uid-{}", unique("pod")),
    });
    Pki {
        ns,
        attributes,
        secrets: json!({"secretId": secret_id}).to_string(),
    }
}

async fn issued_count(ns: &str) -> usize {
    let (status, body) = OpenBao::shared()
        .api_status("LIST", ns, "pki/certs", None)
        .await;
    if status == 404 {
        return 0;
    }
    // The CA certificate is listed too.
    body["data"]["keys"]
        .as_array()
        .map_or(0, |k| k.len().saturating_sub(1))
}

#[tokio::test]
async fn pki_certificate_is_reused_inside_its_window_then_reissued() {
    let pki = pki_setup("pki-reuse", "  renewalPercent: 50\n").await;
    let provider = Provider::start(&OpenBao::shared().addr, &[]);

    let (first, files) = mount_fresh(&provider, &pki.attributes, &pki.secrets);
    let first = first.expect_ok().clone();
    let first_serial = files.read("serial");
    let cert_key = public_key(&files.read("tls.crt"), &["x509", "-noout", "-pubkey"]);
    assert_eq!(
        cert_key,
        public_key(&files.read("tls.key"), &["pkey", "-pubout"]),
        "certificate and key must match"
    );
    assert!(
        files
            .read("fullchain.pem")
            .starts_with(files.read("tls.crt").trim()),
        "fullchain starts with the certificate"
    );
    assert!(
        files.read("fullchain.pem").ends_with(&files.read("ca.pem")),
        "fullchain ends with the CA chain"
    );
    verify_chain(&files.read("ca.pem"), &files.read("tls.crt"));

    // Rotation polls inside the window: the same certificate and versions.
    for _ in 0..5 {
        let (again, files) = mount_fresh(&provider, &pki.attributes, &pki.secrets);
        assert_eq!(again.expect_ok(), &first);
        assert_eq!(files.read("serial"), first_serial);
    }
    assert_eq!(issued_count(&pki.ns).await, 1);

    // Past 50% of ~21 s: a new certificate, new versions for its objects.
    tokio::time::sleep(Duration::from_secs(12)).await;
    let (renewed, files) = mount_fresh(&provider, &pki.attributes, &pki.secrets);
    let renewed = renewed.expect_ok().clone();
    assert_ne!(files.read("serial"), first_serial);
    assert_ne!(renewed["tls.crt"], first["tls.crt"]);
    assert_ne!(renewed["tls.key"], first["tls.key"]);
    assert_eq!(
        public_key(&files.read("tls.crt"), &["x509", "-noout", "-pubkey"]),
        public_key(&files.read("tls.key"), &["pkey", "-pubout"])
    );
    assert_eq!(issued_count(&pki.ns).await, 2);

    // Another pod gets its own certificate.
    let mut other_pod = pki.attributes.clone();
    other_pod["csi.storage.k8s.io/pod.uid"] = json!("uid-other-pod");
    let (_, files) = mount_fresh(&provider, &other_pod, &pki.secrets);
    assert_ne!(files.read("serial"), first_serial);
    assert_eq!(issued_count(&pki.ns).await, 3);
    assert_log_clean(&provider.log(), &["PRIVATE KEY-----\nM"]);
}

fn verify_chain(ca: &str, cert: &str) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ca.pem"), ca).unwrap();
    std::fs::write(dir.path().join("cert.pem"), cert).unwrap();
    let out = Command::new("openssl")
        .args(["verify", "-CAfile"])
        .arg(dir.path().join("ca.pem"))
        .arg(dir.path().join("cert.pem"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "certificate does not verify against ca-chain: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn idle_pod_state_is_dropped() {
    let pki = pki_setup("pki-idle", "").await;
    let provider = Provider::start(&OpenBao::shared().addr, &["--pod-state-idle-timeout", "2s"]);
    let (_, files) = mount_fresh(&provider, &pki.attributes, &pki.secrets);
    let first_serial = files.read("serial");
    let (_, files) = mount_fresh(&provider, &pki.attributes, &pki.secrets);
    assert_eq!(
        files.read("serial"),
        first_serial,
        "inside the window and not idle: reused"
    );

    tokio::time::sleep(Duration::from_secs(4)).await;
    let (_, files) = mount_fresh(&provider, &pki.attributes, &pki.secrets);
    assert_ne!(
        files.read("serial"),
        first_serial,
        "idle state must have been dropped"
    );
    assert!(provider.log().contains("dropped idle pod state"));
}

/// Vault requests counted from the server's own audit log on a private server:
/// a storm of Mounts by one identity and a series of rotation polls of a PKI
/// object. The counts are printed for the record and bounded by assertions.
#[tokio::test]
async fn vault_request_counts_for_storms_and_rotation_polls() {
    let audit_dir = tempfile::tempdir().unwrap();
    let audit_log = audit_dir.path().join("audit.log");
    let bao = OpenBao::start_private_audited(&audit_log).await;
    bao.enable_secrets("", "pki", "pki", None).await;
    bao.api(
        "POST",
        "",
        "pki/root/generate/internal",
        Some(json!({"common_name": "ca", "ttl": "24h"})),
    )
    .await;
    bao.api(
        "POST",
        "",
        "pki/roles/app",
        Some(json!({"allowed_domains": "svc", "allow_subdomains": true, "max_ttl": "1h"})),
    )
    .await;
    let app = RootApp::seed_with_policy(
        &bao,
        r#"path "secret/data/*" { capabilities = ["read"] }
path "pki/issue/app" { capabilities = ["update"] }"#,
    )
    .await;
    bao.kv2_put("", "secret", "a", json!({"k": "1"})).await;
    bao.kv2_put("", "secret", "b", json!({"k": "2"})).await;
    let provider = Provider::start(&bao.addr, &[]);
    let secrets = app.secrets();
    let attributes = |objects: &str, pod: usize| {
        merge(
            app.attributes(objects),
            json!({
                "csi.storage.k8s.io/pod.name": format!("app-{pod}"),
                "csi.storage.k8s.io/pod.uid": format!("uid-{pod}"),
            }),
        )
    };
    let count = |path: &str| {
        let log = std::fs::read_to_string(&audit_log).unwrap_or_default();
        log.lines()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .filter(|entry| entry["type"] == "request" && entry["request"]["path"] == path)
            .count()
    };

    // 100 pods of one AppRole identity, all at once.
    let kv = "- objectName: a\n  secretPath: secret/data/a\n  secretKey: k\n- objectName: b\n  secretPath: secret/data/b\n  secretKey: k\n";
    let client = v16_client();
    let volumes: Vec<Volume> = (0..100).map(|_| Volume::new()).collect();
    let requests: Vec<Value> = volumes
        .iter()
        .enumerate()
        .map(|(pod, volume)| storm_request(&attributes(kv, pod), &secrets, volume.path()))
        .collect();
    for result in client.storm(&provider, &requests, 50) {
        result.expect_ok();
    }
    let logins = count("auth/approle/login");
    let reads = count("secret/data/a") + count("secret/data/b");
    eprintln!(
        "100 concurrent Mounts of 2 KV objects by one AppRole identity: {logins} login(s), {reads} KV reads"
    );
    assert_eq!(logins, 1);
    assert!(reads <= 200, "{reads} reads for 200 object reads");

    // 100 rotation polls of one pod's PKI object.
    let pki = "- objectName: tls.crt\n  secretPath: pki/issue/app\n  method: PUT\n  secretArgs: {common_name: a.svc, ttl: 30m}\n  secretKey: certificate\n";
    let polls: Vec<Value> = (0..100)
        .map(|_| storm_request(&attributes(pki, 0), &secrets, volumes[0].path()))
        .collect();
    let results = client.storm(&provider, &polls, 1);
    let versions: std::collections::HashSet<String> = results
        .iter()
        .map(|r| r.expect_ok()["tls.crt"].clone())
        .collect();
    let issues = count("pki/issue/app");
    eprintln!(
        "100 rotation polls of one PKI object: {issues} issue request(s), {} distinct version(s)",
        versions.len()
    );
    assert_eq!(issues, 1);
    assert_eq!(versions.len(), 1);
    assert_eq!(count("auth/approle/login"), 1, "no further logins");
}

/// Database credentials from OpenBao's database engine and a real PostgreSQL:
/// kept for the pod, renewed at `renewalPercent`, replaced once renewal is
/// cut short by the max TTL.
#[tokio::test]
async fn leased_database_credentials_are_renewed_then_replaced() {
    let pg = support::postgres::Postgres::start();
    let d = Deployment::new("database").await;
    let bao = d.bao;
    let (attributes, secrets, secret_id) = d.database(&pg, "6s", "14s", json!({})).await;
    let provider = Provider::start(&bao.addr, &[]);
    let lease_ttl = |user: &str| {
        let sql = format!(
            "SELECT extract(epoch FROM rolvaliduntil - now())::int FROM pg_roles WHERE rolname = '{user}'"
        );
        pg.query(&sql).parse::<i64>().unwrap_or(-1)
    };

    // t=0: new credentials, a role that exists in PostgreSQL.
    let (result, files) = mount_fresh(&provider, &attributes, &secrets);
    result.expect_ok();
    let first_user = files.read("username");
    assert!(
        !first_user.is_empty() && lease_ttl(&first_user) > 0,
        "role {first_user} exists"
    );
    let first_password = files.read("password");

    // t≈1: a rotation poll returns the same credentials.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (_, files) = mount_fresh(&provider, &attributes, &secrets);
    assert_eq!(files.read("username"), first_user);

    // t≈5 (past 67% of 6 s): renewed, same credentials, validity extended.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let (_, files) = mount_fresh(&provider, &attributes, &secrets);
    assert_eq!(
        files.read("username"),
        first_user,
        "renewal keeps the credentials"
    );
    assert_eq!(files.read("password"), first_password);
    let remaining = bao
        .api(
            "PUT",
            &d.ns,
            "sys/leases/lookup",
            Some(json!({"lease_id": lease_of(&d, &first_user).await})),
        )
        .await;
    assert!(
        remaining["data"]["ttl"].as_u64().unwrap() >= 4,
        "lease was renewed: {remaining}"
    );

    // Keep polling: once the max TTL (14 s) caps renewal, new credentials.
    let mut replaced = None;
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let (result, files) = mount_fresh(&provider, &attributes, &secrets);
        result.expect_ok();
        if files.read("username") != first_user {
            replaced = Some(files.read("username"));
            break;
        }
    }
    let second_user = replaced.expect("credentials were never replaced");
    assert!(lease_ttl(&second_user) > 0, "the new role exists");
    assert_log_clean(&provider.log(), &[&first_password, &secret_id]);
}

/// The lease ID of the credentials for `user`, from the lease list.
async fn lease_of(d: &Deployment, user: &str) -> String {
    let (_, listed) = d
        .bao
        .api_status("LIST", &d.ns, "sys/leases/lookup/database/creds/app", None)
        .await;
    let ids: Vec<String> = listed["data"]["keys"]
        .as_array()
        .map(|k| {
            k.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(ids.len(), 1, "one lease for {user}: {ids:?}");
    format!("database/creds/app/{}", ids[0])
}

#[tokio::test]
async fn tokens_are_revoked_on_shutdown_when_asked() {
    let d = Deployment::new("revoke").await;
    d.put("app", json!({"k": "v"})).await;
    let attributes =
        d.attributes("- objectName: k\n  secretPath: secret/data/app\n  secretKey: k\n");

    let mut keeps = Provider::start(&d.bao.addr, &[]);
    mount_fresh(&keeps, &attributes, &d.secrets()).0.expect_ok();
    assert!(keeps.terminate().success());
    assert_eq!(
        accessors(&d).await.len(),
        1,
        "without the flag the token outlives the provider"
    );

    let mut revokes = Provider::start(&d.bao.addr, &["--revoke-tokens-on-shutdown"]);
    mount_fresh(&revokes, &attributes, &d.secrets())
        .0
        .expect_ok();
    assert_eq!(accessors(&d).await.len(), 2);
    assert!(revokes.terminate().success());
    assert_eq!(
        accessors(&d).await.len(),
        1,
        "the second provider revoked its token"
    );
    assert!(revokes.log().contains("revoked cached Vault tokens"));
}
