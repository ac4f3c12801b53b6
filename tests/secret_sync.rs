//! Provider-side Secret sync (`serve --sync-secrets`, SPC `syncSecretName`) against
//! the run's real kube-apiserver and OpenBao: the provider logs in to the apiserver
//! as the DaemonSet's service account bound by `daemonset/secret-sync/rbac.yaml`
//! (nothing more) and confined by the component's ValidatingAdmissionPolicy
//! (`admission-policy.yaml`), mounts through the driver's own client, and the Secret
//! appears in the pod's namespace: labelled as ours, owned by the pod (each mounting
//! pod adds its owner reference), updated when the KV secret changes; a Secret of
//! that name that is not ours is left alone and the Mount fails. The policy itself is
//! tested with direct API calls as the provider's account: what it refuses (a Secret
//! not labelled as ours, taking one over, unlabelling one) and whom it leaves alone.

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::deployment::{Deployment, POD_NAME, POD_NAMESPACE, POD_UID};
use support::kube::{Kube, manifests, secret_value};
use support::provider::{Provider, assert_log_clean, mount_fresh, v16_client};

const OBJECTS: &str = "- objectName: password\n  secretPath: secret/data/app\n  secretKey: password\n- objectName: username\n  secretPath: secret/data/app\n  secretKey: username\n";

const PROVIDER_ACCOUNT: &str =
    "system:serviceaccount:vault-secrets-provider:vault-secrets-provider";
const OURS: &str = "app.kubernetes.io/managed-by";
/// What the admission policy answers (its two messages).
const ONLY_LABELLED: &str = "vault-secrets-provider may only write Secrets labelled app.kubernetes.io/managed-by=vault-secrets-provider";
const NOT_FOREIGN: &str = "vault-secrets-provider may not change a Secret that is not labelled app.kubernetes.io/managed-by=vault-secrets-provider";

/// The DaemonSet's service account with the optional component's RBAC and admission
/// policy, as `daemonset/` + `secret-sync` installs them; returns a token file for it
/// once both are in effect.
async fn provider_account_token(kube: &'static Kube, dir: &Path) -> std::path::PathBuf {
    kube.create_if_absent(json!({
        "apiVersion": "v1", "kind": "Namespace", "metadata": { "name": "vault-secrets-provider" }
    }))
    .await;
    kube.create_if_absent(json!({
        "apiVersion": "v1", "kind": "ServiceAccount",
        "metadata": { "name": "vault-secrets-provider", "namespace": "vault-secrets-provider" }
    }))
    .await;
    let component = Path::new(env!("CARGO_MANIFEST_DIR")).join("daemonset/secret-sync");
    for file in ["rbac.yaml", "admission-policy.yaml"] {
        for object in manifests(&component.join(file)) {
            kube.create_if_absent(object).await;
        }
    }
    rbac_in_effect(kube, PROVIDER_ACCOUNT, "default").await;
    let token = kube
        .token("vault-secrets-provider", "vault-secrets-provider", &[])
        .await;
    let path = dir.join("token");
    std::fs::write(&path, &token).expect("write token");
    policy_in_effect(kube, &token).await;
    path
}

/// The authorizer sees a new binding through its informer: waits until `user` may
/// patch Secrets in `namespace`.
async fn rbac_in_effect(kube: &Kube, user: &str, namespace: &str) {
    let review = json!({
        "apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
        "spec": {
            "user": user,
            "groups": ["system:serviceaccounts"],
            "resourceAttributes": { "namespace": namespace, "verb": "patch", "resource": "secrets" }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (status, body) = kube
            .request(
                "POST",
                "/apis/authorization.k8s.io/v1/subjectaccessreviews",
                Some(&review),
                "application/json",
            )
            .await;
        if status == 201 && body["status"]["allowed"] == true {
            return;
        }
        assert!(Instant::now() < deadline, "RBAC not effective: {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// An account named like the provider's but in `namespace`, given the component's
/// ClusterRole there: the admission policy, which names the provider's account in full,
/// does not apply to it. Returns its token.
async fn namesake_account(kube: &Kube, namespace: &str) -> String {
    kube.service_account(namespace, "vault-secrets-provider")
        .await;
    kube.create(json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": { "name": "secret-sync", "namespace": namespace },
        "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
            "name": "vault-secrets-provider-secret-sync"
        },
        "subjects": [{
            "kind": "ServiceAccount", "name": "vault-secrets-provider", "namespace": namespace
        }]
    }))
    .await;
    let user = format!("system:serviceaccount:{namespace}:vault-secrets-provider");
    rbac_in_effect(kube, &user, namespace).await;
    kube.token(namespace, "vault-secrets-provider", &[]).await
}

/// The apiserver loads admission policies through an informer: creates unlabelled
/// Secrets as the provider's account (fresh names) until the policy refuses one.
async fn policy_in_effect(kube: &Kube, token: &str) {
    let ns = kube.namespace("policy-wait").await;
    let deadline = Instant::now() + Duration::from_secs(60);
    for attempt in 0.. {
        let (status, body) = as_account(
            kube,
            token,
            "POST",
            &format!("/api/v1/namespaces/{ns}/secrets"),
            &json!({ "metadata": { "name": format!("probe-{attempt}") } }),
            "application/json",
        )
        .await;
        if status == 403
            && body["message"]
                .as_str()
                .unwrap_or("")
                .contains(ONLY_LABELLED)
        {
            return;
        }
        assert_eq!(status, 201, "before the policy: created; {body}");
        assert!(Instant::now() < deadline, "admission policy not in effect");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A request to the apiserver with a service account's token (the admin client
/// authenticates with its certificate).
async fn as_account(
    kube: &Kube,
    token: &str,
    method: &str,
    path: &str,
    body: &Value,
    content_type: &str,
) -> (u16, Value) {
    let client = reqwest::Client::builder()
        .no_proxy()
        .tls_certs_only([reqwest::Certificate::from_pem(kube.ca_pem.as_bytes()).expect("CA")])
        .build()
        .expect("client");
    let response = client
        .request(
            reqwest::Method::from_bytes(method.as_bytes()).expect("method"),
            format!("{}{path}", kube.server),
        )
        .bearer_auth(token)
        .header("Content-Type", content_type)
        .body(body.to_string())
        .send()
        .await
        .expect("apiserver");
    let status = response.status().as_u16();
    let body = response.json().await.unwrap_or(Value::Null);
    (status, body)
}

async fn pod(kube: &Kube, namespace: &str, name: &str) -> String {
    let pod = kube
        .create(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": { "name": name, "namespace": namespace },
            "spec": { "containers": [{ "name": "app", "image": "registry.invalid/app:1" }] }
        }))
        .await;
    pod["metadata"]["uid"].as_str().expect("uid").to_owned()
}

/// A provider with `--sync-secrets` against the run's apiserver, as the
/// service account whose token is in `token_file`, with `extra` flags.
fn sync_provider_with(d: &Deployment, kube: &Kube, token_file: &Path, extra: &[&str]) -> Provider {
    let ca_file = std::env::var("VSP_TEST_KUBE_CA_FILE").expect("VSP_TEST_KUBE_CA_FILE");
    let mut args = vec![
        "--sync-secrets".to_owned(),
        format!("--kube-api-server={}", kube.server),
        format!("--kube-ca-file={ca_file}"),
        format!("--kube-token-file={}", token_file.display()),
    ];
    args.extend(extra.iter().map(|a| a.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Provider::start(&d.bao.addr, &args)
}

fn sync_provider(d: &Deployment, kube: &Kube, token_file: &Path) -> Provider {
    sync_provider_with(d, kube, token_file, &[])
}

fn attributes(d: &Deployment, namespace: &str, pod: &str, uid: &str, secret: &str) -> Value {
    let mut a = d.attributes(OBJECTS);
    a["csi.storage.k8s.io/pod.name"] = json!(pod);
    a["csi.storage.k8s.io/pod.namespace"] = json!(namespace);
    a["csi.storage.k8s.io/pod.uid"] = json!(uid);
    a["syncSecretName"] = json!(secret);
    a
}

/// Creates `theirs` (a Secret named `theirs`, not ours), mounts a pod of
/// `namespace` that asks to sync into it: the Mount fails with
/// FailedPrecondition and the Secret gains no owner. Returns it as stored.
async fn foreign_secret_left_alone(
    kube: &Kube,
    provider: &Provider,
    d: &Deployment,
    namespace: &str,
    uid: &str,
    theirs: Value,
) -> Value {
    kube.create(theirs).await;
    mount_fresh(
        provider,
        &attributes(d, namespace, "app-0", uid, "theirs"),
        &d.secrets(),
    )
    .0
    .expect_err(
        "FailedPrecondition",
        "not managed by vault-secrets-provider",
    );
    let theirs = kube
        .get(&format!("/api/v1/namespaces/{namespace}/secrets/theirs"))
        .await
        .expect("their Secret");
    assert!(theirs["metadata"]["ownerReferences"].is_null());
    theirs
}

fn owner_uids(secret: &Value) -> Vec<String> {
    let mut uids: Vec<String> = secret["metadata"]["ownerReferences"]
        .as_array()
        .into_iter()
        .flatten()
        .inspect(|r| {
            assert_eq!(r["kind"], "Pod");
            assert_eq!(r["apiVersion"], "v1");
        })
        .map(|r| r["uid"].as_str().unwrap().to_owned())
        .collect();
    uids.sort();
    uids
}

#[tokio::test]
async fn mounts_apply_a_secret_owned_by_the_pod_and_never_take_one_over() {
    let kube = Kube::shared();
    let d = Deployment::new("sync").await;
    d.put(
        "app",
        json!({"username": "svc-sync", "password": "first-sync-password"}),
    )
    .await;
    let dir = tempfile::tempdir().expect("tempdir");
    let token_file = provider_account_token(kube, dir.path()).await;
    let provider = sync_provider(&d, kube, &token_file);
    let client = v16_client();

    let ns = kube.namespace("sync").await;
    let uid0 = pod(kube, &ns, "app-0").await;
    let secret_path = format!("/api/v1/namespaces/{ns}/secrets/app-vault");

    // The first pod mounts: files, and the Secret.
    let (result, volume) = mount_fresh(
        &provider,
        &attributes(&d, &ns, "app-0", &uid0, "app-vault"),
        &d.secrets(),
    );
    result.expect_ok();
    assert_eq!(volume.read("password"), "first-sync-password");
    let secret = kube.get(&secret_path).await.expect("the synced Secret");
    assert_eq!(
        secret_value(&secret, "password").as_deref(),
        Some("first-sync-password")
    );
    assert_eq!(
        secret_value(&secret, "username").as_deref(),
        Some("svc-sync")
    );
    assert_eq!(secret["type"], "Opaque");
    assert_eq!(
        secret["metadata"]["labels"]["app.kubernetes.io/managed-by"],
        "vault-secrets-provider"
    );
    assert_eq!(owner_uids(&secret), vec![uid0.clone()]);

    // The KV secret changes; a second pod of the same app mounts: new value, both owners.
    d.put(
        "app",
        json!({"username": "svc-sync", "password": "second-sync-password"}),
    )
    .await;
    let uid1 = pod(kube, &ns, "app-1").await;
    mount_fresh(
        &provider,
        &attributes(&d, &ns, "app-1", &uid1, "app-vault"),
        &d.secrets(),
    )
    .0
    .expect_ok();
    let secret = kube.get(&secret_path).await.expect("the synced Secret");
    assert_eq!(
        secret_value(&secret, "password").as_deref(),
        Some("second-sync-password")
    );
    let mut both = vec![uid0.clone(), uid1.clone()];
    both.sort();
    assert_eq!(owner_uids(&secret), both);
    // The first pod's rotation re-applies: still both owners, same data.
    client
        .mount(
            &provider,
            &attributes(&d, &ns, "app-0", &uid0, "app-vault"),
            &d.secrets(),
            volume.path(),
        )
        .expect_ok();
    let secret = kube.get(&secret_path).await.expect("the synced Secret");
    assert_eq!(owner_uids(&secret), both);
    assert_eq!(
        secret_value(&secret, "password").as_deref(),
        Some("second-sync-password")
    );

    // Someone else's Secret of that name: left alone, the Mount fails.
    let theirs = json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": { "name": "theirs", "namespace": ns },
        "stringData": { "password": "not-from-vault" }
    });
    let theirs = foreign_secret_left_alone(kube, &provider, &d, &ns, &uid0, theirs).await;
    assert_eq!(
        secret_value(&theirs, "password").as_deref(),
        Some("not-from-vault")
    );

    // Not a Secret name.
    mount_fresh(
        &provider,
        &attributes(&d, &ns, "app-0", &uid0, "Not_A_Name"),
        &d.secrets(),
    )
    .0
    .expect_err("InvalidArgument", "syncSecretName");

    assert_log_clean(
        &provider.log(),
        &[&d.secret_id, "first-sync-password", "second-sync-password"],
    );
}

#[tokio::test]
async fn sync_is_opt_in() {
    let d = Deployment::new("nosync").await;
    d.put("app", json!({"username": "u", "password": "p"}))
        .await;
    let provider = Provider::start(&d.bao.addr, &[]);
    mount_fresh(
        &provider,
        &attributes(&d, POD_NAMESPACE, POD_NAME, POD_UID, "app-vault"),
        &d.secrets(),
    )
    .0
    .expect_err("InvalidArgument", "--sync-secrets");
}

/// A provider whose service account lacks the sync component's RBAC: the Mount
/// fails with `PermissionDenied` naming the Secret, and nothing is created.
/// Decided so because a SecretProviderClass that asks for a Secret depends on
/// it (env vars, other consumers): a silent success would hide a broken sync,
/// while the failed Mount surfaces the missing permission in the pod's events
/// and kubelet retries it once the RBAC is fixed.
#[tokio::test]
async fn sync_without_rbac_is_permission_denied_and_creates_nothing() {
    let kube = Kube::shared();
    let d = Deployment::new("norbac").await;
    d.put(
        "app",
        json!({"username": "svc-norbac", "password": "norbac-password"}),
    )
    .await;
    let ns = kube.namespace("norbac").await;
    kube.create_if_absent(json!({
        "apiVersion": "v1", "kind": "ServiceAccount",
        "metadata": { "name": "no-rbac", "namespace": ns }
    }))
    .await;
    let dir = tempfile::tempdir().expect("tempdir");
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, kube.token(&ns, "no-rbac", &[]).await).expect("write token");
    let provider = sync_provider(&d, kube, &token_file);
    let uid = pod(kube, &ns, "app-0").await;
    mount_fresh(
        &provider,
        &attributes(&d, &ns, "app-0", &uid, "app-vault"),
        &d.secrets(),
    )
    .0
    .expect_err("PermissionDenied", "app-vault");
    let secret_path = format!("/api/v1/namespaces/{ns}/secrets/app-vault");
    assert!(
        kube.get(&secret_path).await.is_none(),
        "no Secret may be created"
    );
    assert_log_clean(&provider.log(), &[&d.secret_id, "norbac-password"]);
}

/// The component's ValidatingAdmissionPolicy, with direct API calls as the provider's
/// account (what a compromised provider could try): a Secret not labelled as ours can be
/// neither created nor taken over nor made from one of ours; ours can be created and
/// updated; other users, a same-named account of another namespace included, are not
/// matched at all.
#[tokio::test]
async fn the_admission_policy_confines_the_provider_to_secrets_labelled_as_ours() {
    let kube = Kube::shared();
    let dir = tempfile::tempdir().expect("tempdir");
    let token_file = provider_account_token(kube, dir.path()).await;
    let token = std::fs::read_to_string(&token_file).expect("token");
    let ns = kube.namespace("policy").await;
    let secrets = format!("/api/v1/namespaces/{ns}/secrets");
    let secret = |name: &str, labels: Value, password: &str| {
        json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": { "name": name, "namespace": ns, "labels": labels },
            "stringData": { "password": password }
        })
    };
    let provider = |method: &'static str, path: String, body: Value, content_type: &'static str| {
        let token = token.clone();
        async move { as_account(kube, &token, method, &path, &body, content_type).await }
    };
    let apply = |name: &str, body: Value| {
        provider(
            "PATCH",
            format!("{secrets}/{name}?fieldManager=vsp-policy-test&force=true"),
            body,
            "application/apply-patch+yaml",
        )
    };
    let denied = |(status, body): (u16, Value), message: &str| {
        let text = body["message"].as_str().unwrap_or_default().to_owned();
        assert_eq!(status, 403, "{body}");
        // What src/sync.rs recognises as the policy's refusal.
        assert!(
            text.contains("ValidatingAdmissionPolicy 'vault-secrets-provider-secret-sync'"),
            "{text}"
        );
        assert!(text.contains(message), "{text}");
    };

    // (a) Not labelled as ours, or labelled by someone else: refused, nothing created.
    denied(
        provider(
            "POST",
            secrets.clone(),
            secret("plain", json!({}), "x"),
            "application/json",
        )
        .await,
        ONLY_LABELLED,
    );
    denied(
        apply("plain", secret("plain", json!({ "team": "a" }), "x")).await,
        ONLY_LABELLED,
    );
    denied(
        apply("plain", secret("plain", json!({ OURS: "Helm" }), "x")).await,
        ONLY_LABELLED,
    );
    assert!(kube.get(&format!("{secrets}/plain")).await.is_none());

    // (c) Ours: created and updated.
    let (status, body) = apply(
        "ours",
        secret("ours", json!({ OURS: "vault-secrets-provider" }), "one"),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = apply(
        "ours",
        secret("ours", json!({ OURS: "vault-secrets-provider" }), "two"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let ours = kube.get(&format!("{secrets}/ours")).await.expect("ours");
    assert_eq!(secret_value(&ours, "password").as_deref(), Some("two"));
    // ... but not handed back unlabelled.
    denied(
        provider(
            "PATCH",
            format!("{secrets}/ours"),
            json!({ "metadata": { "labels": { OURS: null } } }),
            "application/merge-patch+json",
        )
        .await,
        ONLY_LABELLED,
    );

    // (b) Someone else's Secret: not taken over, by apply or by relabelling it.
    kube.create(secret("theirs", json!({ "team": "a" }), "theirs-password"))
        .await;
    denied(
        apply(
            "theirs",
            secret("theirs", json!({ OURS: "vault-secrets-provider" }), "x"),
        )
        .await,
        NOT_FOREIGN,
    );
    denied(
        provider(
            "PATCH",
            format!("{secrets}/theirs"),
            json!({ "metadata": { "labels": { OURS: "vault-secrets-provider" } } }),
            "application/merge-patch+json",
        )
        .await,
        NOT_FOREIGN,
    );
    let theirs = kube
        .get(&format!("{secrets}/theirs"))
        .await
        .expect("theirs");
    assert_eq!(
        secret_value(&theirs, "password").as_deref(),
        Some("theirs-password")
    );
    assert_eq!(theirs["metadata"]["labels"], json!({ "team": "a" }));
    let ours = kube.get(&format!("{secrets}/ours")).await.expect("ours");
    assert_eq!(ours["metadata"]["labels"][OURS], "vault-secrets-provider");

    // (d) Everyone else: the admin writes unlabelled Secrets and changes theirs ...
    kube.create(secret("admins", json!({}), "a")).await;
    let (status, body) = kube
        .request(
            "PATCH",
            &format!("{secrets}/theirs"),
            Some(&json!({ "metadata": { "labels": { "team": "b" } } })),
            "application/merge-patch+json",
        )
        .await;
    assert_eq!(status, 200, "{body}");
    // ... and so does an account of the same name in another namespace, with the same
    // ClusterRole (bound in its namespace): the policy names the provider's account.
    let namesake = namesake_account(kube, &ns).await;
    let (status, body) = as_account(
        kube,
        &namesake,
        "POST",
        &secrets,
        &secret("namesakes", json!({}), "n"),
        "application/json",
    )
    .await;
    assert_eq!(status, 201, "{body}");
}

/// The provider's own check, without the admission policy (as an account the policy does
/// not name): a Secret of that name that is not labelled as ours fails the Mount with
/// `FailedPrecondition` and is left as it was, although the account may patch it.
#[tokio::test]
async fn without_the_policy_the_provider_still_leaves_a_foreign_secret_alone() {
    let kube = Kube::shared();
    let d = Deployment::new("nopolicy").await;
    d.put(
        "app",
        json!({"username": "svc-nopolicy", "password": "nopolicy-password"}),
    )
    .await;
    let ns = kube.namespace("nopolicy").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, namesake_account(kube, &ns).await).expect("write token");
    let provider = sync_provider(&d, kube, &token_file);
    let uid = pod(kube, &ns, "app-0").await;
    let theirs = json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": { "name": "theirs", "namespace": ns, "labels": { "team": "a" } },
        "stringData": { "other": "not-from-vault" }
    });
    let theirs = foreign_secret_left_alone(kube, &provider, &d, &ns, &uid, theirs).await;
    assert_eq!(theirs["metadata"]["labels"], json!({ "team": "a" }));
    assert_eq!(
        secret_value(&theirs, "other").as_deref(),
        Some("not-from-vault")
    );
    assert!(secret_value(&theirs, "password").is_none());
    // The same account syncs a Secret of its own.
    mount_fresh(
        &provider,
        &attributes(&d, &ns, "app-0", &uid, "app-vault"),
        &d.secrets(),
    )
    .0
    .expect_ok();
    let ours = kube
        .get(&format!("/api/v1/namespaces/{ns}/secrets/app-vault"))
        .await
        .expect("the synced Secret");
    assert_eq!(
        secret_value(&ours, "password").as_deref(),
        Some("nopolicy-password")
    );
    assert_log_clean(&provider.log(), &[&d.secret_id, "nopolicy-password"]);
}

/// `--write-mode direct`: when the provider refreshes a volume by itself (a
/// KV change, no Mount), the synced Secret follows the files.
#[tokio::test]
async fn the_secret_follows_a_refreshed_volume() {
    let kube = Kube::shared();
    let d = Deployment::new("sync-refresh").await;
    d.put(
        "app",
        json!({"username": "svc-sync", "password": "sync-refresh-first"}),
    )
    .await;
    let dir = tempfile::tempdir().expect("tempdir");
    let token_file = provider_account_token(kube, dir.path()).await;
    let provider = sync_provider_with(
        &d,
        kube,
        &token_file,
        &["--write-mode", "direct", "--refresh-interval", "1s"],
    );
    let ns = kube.namespace("sync-refresh").await;
    let uid = pod(kube, &ns, "app-0").await;
    let (result, volume) = mount_fresh(
        &provider,
        &attributes(&d, &ns, "app-0", &uid, "app-vault"),
        &d.secrets(),
    );
    result.expect_ok();
    let secret_path = format!("/api/v1/namespaces/{ns}/secrets/app-vault");
    kube.wait_for(&secret_path, "synced", |s| {
        secret_value(s, "password").as_deref() == Some("sync-refresh-first")
    })
    .await;

    d.put(
        "app",
        json!({"username": "svc-sync", "password": "sync-refresh-second"}),
    )
    .await;
    kube.wait_for(&secret_path, "the refreshed value", |s| {
        secret_value(s, "password").as_deref() == Some("sync-refresh-second")
    })
    .await;
    assert_eq!(volume.read("password"), "sync-refresh-second");
    assert_log_clean(
        &provider.log(),
        &["sync-refresh-first", "sync-refresh-second"],
    );
}
