//! Provider-side Secret sync (`serve --sync-secrets`, SPC `syncSecretName`) against
//! the run's real kube-apiserver and OpenBao: the provider logs in to the apiserver
//! as the DaemonSet's service account bound by `daemonset/secret-sync/rbac.yaml`
//! (nothing more), mounts through the driver's own client, and the Secret appears
//! in the pod's namespace: labelled as ours, owned by the pod (each mounting pod
//! adds its owner reference), updated when the KV secret changes; a Secret of that
//! name that is not ours is left alone and the Mount fails.

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::deployment::{Deployment, POD_NAME, POD_NAMESPACE, POD_UID};
use support::kube::{Kube, manifests, secret_value};
use support::provider::{Provider, assert_log_clean, mount_fresh, v16_client};

const OBJECTS: &str = "- objectName: password\n  secretPath: secret/data/app\n  secretKey: password\n- objectName: username\n  secretPath: secret/data/app\n  secretKey: username\n";

/// The DaemonSet's service account with the optional component's RBAC, as
/// `daemonset/` + `secret-sync` installs them; returns a token file for it.
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
    let rbac = Path::new(env!("CARGO_MANIFEST_DIR")).join("daemonset/secret-sync/rbac.yaml");
    for object in manifests(&rbac) {
        kube.create_if_absent(object).await;
    }
    // The authorizer sees a new binding through its informer: wait for it.
    let review = json!({
        "apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
        "spec": {
            "user": "system:serviceaccount:vault-secrets-provider:vault-secrets-provider",
            "groups": ["system:serviceaccounts"],
            "resourceAttributes": { "namespace": "default", "verb": "patch", "resource": "secrets" }
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
            break;
        }
        assert!(Instant::now() < deadline, "RBAC not effective: {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let token = kube
        .token("vault-secrets-provider", "vault-secrets-provider", &[])
        .await;
    let path = dir.join("token");
    std::fs::write(&path, token).expect("write token");
    path
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
/// service account whose token is in `token_file`.
fn sync_provider(d: &Deployment, kube: &Kube, token_file: &Path) -> Provider {
    let ca_file = std::env::var("VSP_TEST_KUBE_CA_FILE").expect("VSP_TEST_KUBE_CA_FILE");
    Provider::start(
        &d.bao.addr,
        &[
            "--sync-secrets",
            &format!("--kube-api-server={}", kube.server),
            &format!("--kube-ca-file={ca_file}"),
            &format!("--kube-token-file={}", token_file.display()),
        ],
    )
}

fn attributes(d: &Deployment, namespace: &str, pod: &str, uid: &str, secret: &str) -> Value {
    let mut a = d.attributes(OBJECTS);
    a["csi.storage.k8s.io/pod.name"] = json!(pod);
    a["csi.storage.k8s.io/pod.namespace"] = json!(namespace);
    a["csi.storage.k8s.io/pod.uid"] = json!(uid);
    a["syncSecretName"] = json!(secret);
    a
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
    kube.create(json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": { "name": "theirs", "namespace": ns },
        "stringData": { "password": "not-from-vault" }
    }))
    .await;
    mount_fresh(
        &provider,
        &attributes(&d, &ns, "app-0", &uid0, "theirs"),
        &d.secrets(),
    )
    .0
    .expect_err(
        "FailedPrecondition",
        "not managed by vault-secrets-provider",
    );
    let theirs = kube
        .get(&format!("/api/v1/namespaces/{ns}/secrets/theirs"))
        .await
        .expect("their Secret");
    assert_eq!(
        secret_value(&theirs, "password").as_deref(),
        Some("not-from-vault")
    );
    assert!(theirs["metadata"]["ownerReferences"].is_null());

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
