//! End to end on a real Kubernetes control plane (kube-apiserver + etcd built from
//! source, started once per run by `scripts/with-kubernetes.sh`) with the real Secrets
//! Store CSI Driver binary, v1.5.x and v1.6.x, calling our provider, against the run's
//! real OpenBao. The test plays kubelet (`kubelet-sim`): it creates the Pod object and
//! calls the driver's NodePublishVolume with what kubelet would send (pod info, tokens
//! minted by TokenRequest, the nodePublishSecretRef Secret's data).
//!
//! - the seed workflow: an SPC exactly as an operator writes it for
//!   `admin/deployments/<deployment>` (AppRole, role ID in the parameters, secret ID
//!   in a labelled `nodePublishSecretRef` Secret, `secretObjects` to sync); files on
//!   the pod's tmpfs, the SecretProviderClassPodStatus, the synced Secret, rotation
//!   of both after the KV secret changes, and unpublish;
//! - Kubernetes auth for real: OpenBao's `kubernetes` auth mount reviews the pod's
//!   token with this apiserver (TokenReview, reviewer service account); a pod whose
//!   service account the role does not bind gets `PermissionDenied`.
//!
//! - `--write-mode direct` with the driver's rotation off: the provider alone
//!   keeps the volume fresh (certificates re-issued, KV re-read) until unpublish.
//!
//! Each test has its own Kubernetes namespace, OpenBao namespace, provider, driver
//! (own node name, CSI socket and kubelet directory), so the tests run in parallel.

mod support;

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::certs::watch_certificates;
use support::deployment::Deployment;
use support::flavour::prefix_attributes;
use support::kube::{DRIVER_NAME, Driver, DriverVersion, Kube, Publish, secret_value};
use support::openbao::{OpenBao, deployment_namespace};
use support::provider::{Provider, assert_log_clean};

const SPC: &str = "app-secrets";
const VOLUME: &str = "secrets";

/// A pod on `node` (the scheduler's choice) that runs as service account `account`
/// and mounts SecretProviderClass `app-secrets` at `/mnt/secrets`, with
/// `nodePublishSecretRef` `secret_ref` if given: the operator's Deployment template.
fn pod_yaml(
    namespace: &str,
    name: &str,
    node: &str,
    account: &str,
    secret_ref: Option<&str>,
) -> String {
    let secret_ref = secret_ref
        .map(|s| format!("\n        nodePublishSecretRef: {{ name: {s} }}"))
        .unwrap_or_default();
    format!(
        r#"
apiVersion: v1
kind: Pod
metadata:
  name: {name}
  namespace: {namespace}
spec:
  nodeName: {node}
  serviceAccountName: {account}
  containers:
    - name: app
      image: registry.invalid/app:1
      volumeMounts:
        - name: {VOLUME}
          mountPath: /mnt/secrets
          readOnly: true
  volumes:
    - name: {VOLUME}
      csi:
        driver: {DRIVER_NAME}
        readOnly: true
        volumeAttributes:
          secretProviderClass: {SPC}{secret_ref}
"#
    )
}

/// The driver's status object for a pod's volume (`<pod>-<namespace>-<spc>`).
fn pod_status_path(namespace: &str, pod: &str) -> String {
    format!(
        "/apis/secrets-store.csi.x-k8s.io/v1/namespaces/{namespace}/secretproviderclasspodstatuses/{pod}-{namespace}-{SPC}"
    )
}

/// `status.objects` of a SecretProviderClassPodStatus: id → version.
fn status_objects(status: &Value) -> Vec<(String, String)> {
    let mut objects: Vec<(String, String)> = status["status"]["objects"]
        .as_array()
        .map(|objects| {
            objects
                .iter()
                .map(|o| {
                    (
                        o["id"].as_str().unwrap_or_default().to_owned(),
                        o["version"].as_str().unwrap_or_default().to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    objects.sort();
    objects
}

/// Polls until `file` in the published volume reads `want` (the v1.5 rotation
/// reconciler rewrites it on its own schedule).
async fn wait_for_file(publish: &Publish, file: &str, want: &str, driver: &Driver) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let content = std::fs::read_to_string(publish.target_path.join(file)).unwrap_or_default();
        if content == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{file} still {content:?}, want {want:?}; driver log:\n{}",
            driver.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The operator's seed workflow, mounted through the real driver: AppRole in
/// `admin/deployments/<deployment>`, role ID in the SPC, secret ID in the
/// `nodePublishSecretRef` Secret, the driver syncing a Kubernetes Secret; then the KV
/// secret changes and both the file and the synced Secret follow.
async fn seed_workflow(version: DriverVersion) {
    let kube = Kube::shared();
    // The CRDs and the rest of the driver's installation, before any SPC.
    kube.driver_installed().await;
    let bao = OpenBao::shared();

    // Vault, as the operator's guide sets up a deployment.
    let deployment = deployment_namespace(bao, &format!("seed-{}", version.line())).await;
    bao.write_policy(
        &deployment,
        "app-read",
        r#"path "secret/data/database" { capabilities = ["read"] }"#,
    )
    .await;
    let (role_id, secret_id) = bao
        .approle(&deployment, "approle", "app", &["app-read"], json!({}))
        .await;
    bao.kv2_put(
        &deployment,
        "secret",
        "database",
        json!({"username": "svc-app", "password": "first-password"}),
    )
    .await;

    // Kubernetes, as the operator writes it: the secret ID in a Secret (labelled so
    // the driver's v1.5 rotation can watch it), the SecretProviderClass with the role
    // ID and a Secret to sync, and the app's pod.
    let ns = kube.namespace(&format!("seed-{}", version.line())).await;
    let node = Driver::new_node_name();
    // (On HashiCorp Vault, the namespace becomes path prefixes: support::flavour.)
    let parameters = prefix_attributes(&json!({
        "vaultAddress": bao.addr,
        "vaultNamespace": deployment,
        "roleId": role_id,
        "objects": "- objectName: db-password\n  secretPath: secret/data/database\n  secretKey: password\n\
                    - objectName: db-username\n  secretPath: secret/data/database\n  secretKey: username\n  filePermission: 0640\n",
    }));
    let created = kube
        .create_all(&format!(
            r#"
apiVersion: v1
kind: ServiceAccount
metadata:
  name: app
  namespace: {ns}
---
apiVersion: v1
kind: Secret
metadata:
  name: app-approle
  namespace: {ns}
  labels:
    secrets-store.csi.k8s.io/used: "true"
stringData:
  secretId: {secret_id}
---
apiVersion: secrets-store.csi.x-k8s.io/v1
kind: SecretProviderClass
metadata:
  name: {SPC}
  namespace: {ns}
spec:
  provider: vault
  parameters: {parameters}
  secretObjects:
    - secretName: app-database
      type: Opaque
      data:
        - objectName: db-password
          key: password
        - objectName: db-username
          key: username
---
{pod}"#,
            pod = pod_yaml(&ns, "app-0", &node, "app", Some("app-approle")),
        ))
        .await;
    let pod_uid = created[3]["metadata"]["uid"]
        .as_str()
        .expect("uid")
        .to_owned();

    let provider = Provider::start(&bao.addr, &[]);
    // Rotation: v1.6 remounts on kubelet's republish (0s: no throttle between the
    // test's publishes); v1.5 polls with its own reconciler.
    let rotation: &[&str] = match version {
        DriverVersion::V1_6 => &["--enable-secret-rotation", "--rotation-poll-interval=0s"],
        DriverVersion::V1_5 => &["--enable-secret-rotation", "--rotation-poll-interval=1s"],
    };
    let driver = Driver::start(version, &node, &provider, rotation).await;

    // The pod starts: files on its tmpfs volume.
    let publish = driver.publish(&ns, "app-0", VOLUME).await;
    publish.expect_ok();
    assert!(
        publish.target_path.to_string_lossy().contains(&format!(
            "/pods/{pod_uid}/volumes/kubernetes.io~csi/{VOLUME}/mount"
        )),
        "{}",
        publish.target_path.display()
    );
    assert!(
        publish.is_tmpfs(),
        "the driver mounts a tmpfs at the target path"
    );
    let files = publish.files();
    assert_eq!(
        files.keys().collect::<Vec<_>>(),
        ["db-password", "db-username"],
        "driver {}",
        version.line()
    );
    assert_eq!(publish.read("db-password"), "first-password");
    assert_eq!(publish.read("db-username"), "svc-app");
    assert_eq!(files["db-password"].1, 0o644);
    assert_eq!(files["db-username"].1, 0o640);

    // The driver's record of the mount.
    let status_path = pod_status_path(&ns, "app-0");
    let status = kube
        .wait_for(&status_path, "mounted", |s| s["status"]["mounted"] == true)
        .await;
    assert_eq!(status["status"]["podName"], "app-0");
    assert_eq!(status["status"]["secretProviderClassName"], SPC);
    assert_eq!(
        status["status"]["targetPath"],
        publish.target_path.to_string_lossy().as_ref()
    );
    let first_versions = status_objects(&status);
    assert_eq!(
        first_versions
            .iter()
            .map(|(id, _)| id.as_str())
            .collect::<Vec<_>>(),
        ["db-password", "db-username"]
    );
    assert!(first_versions.iter().all(|(_, v)| !v.is_empty()));

    // The Kubernetes Secret the driver syncs from the files.
    let secret_path = format!("/api/v1/namespaces/{ns}/secrets/app-database");
    let synced = kube
        .wait_for(&secret_path, "synced", |s| {
            secret_value(s, "password").as_deref() == Some("first-password")
        })
        .await;
    assert_eq!(
        secret_value(&synced, "username").as_deref(),
        Some("svc-app")
    );
    assert_eq!(
        synced["metadata"]["labels"]["secrets-store.csi.k8s.io/managed"],
        "true"
    );

    // Rotation: the operator changes the KV secret.
    bao.kv2_put(
        &deployment,
        "secret",
        "database",
        json!({"username": "svc-app", "password": "second-password"}),
    )
    .await;
    match version {
        DriverVersion::V1_6 => {
            // kubelet's periodic republish (requiresRepublish).
            driver.publish(&ns, "app-0", VOLUME).await.expect_ok();
            assert_eq!(publish.read("db-password"), "second-password");
        }
        DriverVersion::V1_5 => {
            wait_for_file(&publish, "db-password", "second-password", &driver).await;
        }
    }
    assert_eq!(publish.read("db-username"), "svc-app");
    let status = kube
        .wait_for(&status_path, "updated with the new version", |s| {
            status_objects(s) != first_versions
        })
        .await;
    let versions = status_objects(&status);
    assert_eq!(versions[1], first_versions[1], "db-username did not change");
    assert_ne!(versions[0], first_versions[0], "db-password changed");
    kube.wait_for(&secret_path, "re-synced", |s| {
        secret_value(s, "password").as_deref() == Some("second-password")
    })
    .await;

    // The pod goes away: kubelet unpublishes, the tmpfs and its files are gone.
    driver.unpublish(&ns, "app-0", VOLUME).await.expect_ok();
    assert!(!publish.is_tmpfs());
    assert!(publish.files().is_empty());

    assert_log_clean(
        &provider.log(),
        &[&secret_id, "first-password", "second-password"],
    );
}

#[tokio::test]
async fn seed_workflow_through_driver_v1_5() {
    seed_workflow(DriverVersion::V1_5).await;
}

#[tokio::test]
async fn seed_workflow_through_driver_v1_6() {
    seed_workflow(DriverVersion::V1_6).await;
}

/// The metadata of every token issued in an OpenBao namespace (one per login).
async fn vault_logins(bao: &OpenBao, namespace: &str) -> Vec<Value> {
    let mut logins = Vec::new();
    for accessor in bao.token_accessors(namespace).await {
        let token = bao
            .api(
                "POST",
                namespace,
                "auth/token/lookup-accessor",
                Some(json!({ "accessor": accessor })),
            )
            .await;
        logins.push(token["data"]["meta"].clone());
    }
    logins
}

/// OpenBao's Kubernetes auth against this apiserver: the pod's own service-account
/// token (minted for audience `vault`, bound to the pod) logs in; a pod whose service
/// account the role does not bind is refused with PermissionDenied, and nothing is
/// mounted for it.
async fn kubernetes_auth(version: DriverVersion) {
    let kube = Kube::shared();
    let install = kube.driver_installed().await;
    let bao = OpenBao::shared();
    let ns = kube
        .namespace(&format!("k8s-auth-{}", version.line()))
        .await;

    let deployment = deployment_namespace(bao, &format!("k8s-auth-{}", version.line())).await;
    bao.write_policy(
        &deployment,
        "app-read",
        r#"path "secret/data/app" { capabilities = ["read"] }"#,
    )
    .await;
    bao.kv2_put(
        &deployment,
        "secret",
        "app",
        json!({"api-key": "k8s-auth-secret"}),
    )
    .await;
    bao.enable_auth(&deployment, "kubernetes", "kubernetes")
        .await;
    bao.api(
        "POST",
        &deployment,
        "auth/kubernetes/config",
        Some(json!({
            "kubernetes_host": kube.server,
            "kubernetes_ca_cert": kube.ca_pem,
            "token_reviewer_jwt": install.reviewer_jwt,
            "disable_local_ca_jwt": true,
        })),
    )
    .await;
    bao.api(
        "POST",
        &deployment,
        "auth/kubernetes/role/app",
        Some(json!({
            "bound_service_account_names": ["app"],
            "bound_service_account_namespaces": [ns],
            "audience": "vault",
            "token_policies": ["app-read"],
        })),
    )
    .await;

    // A SecretProviderClass for the role, no nodePublishSecretRef: the pod's own
    // token is the credential. The intruder's pod uses it under another account.
    // (On HashiCorp Vault, the namespace becomes path prefixes: support::flavour.)
    let parameters = prefix_attributes(&json!({
        "vaultAddress": bao.addr,
        "vaultNamespace": deployment,
        "roleName": "app",
        "objects": "- objectName: api-key\n  secretPath: secret/data/app\n  secretKey: api-key\n",
    }));
    let node = Driver::new_node_name();
    kube.create_all(&format!(
        r#"
apiVersion: v1
kind: ServiceAccount
metadata:
  name: app
  namespace: {ns}
---
apiVersion: v1
kind: ServiceAccount
metadata:
  name: intruder
  namespace: {ns}
---
apiVersion: secrets-store.csi.x-k8s.io/v1
kind: SecretProviderClass
metadata:
  name: {SPC}
  namespace: {ns}
spec:
  provider: vault
  parameters: {parameters}
---
{app}
---
{intruder}"#,
        app = pod_yaml(&ns, "app-0", &node, "app", None),
        intruder = pod_yaml(&ns, "intruder-0", &node, "intruder", None),
    ))
    .await;

    let provider = Provider::start(&bao.addr, &[]);
    let driver = Driver::start(version, &node, &provider, &[]).await;

    let publish = driver.publish(&ns, "app-0", VOLUME).await;
    publish.expect_ok();
    assert!(publish.is_tmpfs());
    assert_eq!(publish.read("api-key"), "k8s-auth-secret");
    kube.wait_for(&pod_status_path(&ns, "app-0"), "mounted", |s| {
        s["status"]["mounted"] == true
    })
    .await;
    // The one login in the deployment namespace was the pod's service account,
    // as the apiserver's TokenReview told OpenBao.
    let logins = vault_logins(bao, &deployment).await;
    assert_eq!(logins.len(), 1, "{logins:?}");
    assert_eq!(logins[0]["service_account_name"], "app");
    assert_eq!(logins[0]["service_account_namespace"], ns.as_str());
    assert_eq!(logins[0]["role"], "app");

    let refused = driver.publish(&ns, "intruder-0", VOLUME).await;
    refused.expect_err("PermissionDenied", "service account name not authorized");
    assert!(
        !refused.is_tmpfs(),
        "the driver unmounts after a failed first mount"
    );
    assert!(refused.files().is_empty());
    assert!(
        kube.get(&pod_status_path(&ns, "intruder-0"))
            .await
            .is_none(),
        "no SecretProviderClassPodStatus for a refused mount"
    );

    assert_eq!(
        vault_logins(bao, &deployment).await.len(),
        1,
        "the refused pod got no token"
    );

    driver.unpublish(&ns, "app-0", VOLUME).await.expect_ok();
    assert_log_clean(&provider.log(), &["k8s-auth-secret", &install.reviewer_jwt]);
}

#[tokio::test]
async fn kubernetes_auth_through_driver_v1_5() {
    kubernetes_auth(DriverVersion::V1_5).await;
}

#[tokio::test]
async fn kubernetes_auth_through_driver_v1_6() {
    kubernetes_auth(DriverVersion::V1_6).await;
}

/// `--write-mode direct` through the real driver with its rotation off: after
/// the one NodePublishVolume, the provider alone keeps the pod's volume fresh.
/// A 15-second certificate is replaced (with its key) at least three times,
/// each before the one in the volume expires; a KV change is in the file
/// within the refresh interval (+10% jitter) + 1 s; after NodeUnpublishVolume
/// nothing is written again and the provider forgets the volume.
async fn direct_mode_volume_stays_fresh(version: DriverVersion) {
    let kube = Kube::shared();
    kube.driver_installed().await;
    let d = Deployment::new(&format!("fresh-{}", version.line())).await;
    let (role_id, secret_id) = d.pki_issuer().await;
    d.put("app", json!({"api-key": "fresh-kv-first"})).await;

    let ns = kube.namespace(&format!("fresh-{}", version.line())).await;
    let node = Driver::new_node_name();
    let issue = "secretPath: pki/issue/app\n  method: PUT\n  secretArgs: {common_name: api.svc, ttl: 15s}\n  renewalPercent: 50";
    // (On HashiCorp Vault, the namespace becomes path prefixes: support::flavour.)
    let parameters = prefix_attributes(&json!({
        "vaultAddress": d.bao.addr,
        "vaultNamespace": d.ns,
        "roleId": role_id,
        "objects": format!(
            "- objectName: tls.crt\n  {issue}\n  secretKey: certificate\n\
             - objectName: tls.key\n  {issue}\n  secretKey: private_key\n  filePermission: 0600\n\
             - objectName: api-key\n  secretPath: secret/data/app\n  secretKey: api-key\n"
        ),
    }));
    kube.create_all(&format!(
        r#"
apiVersion: v1
kind: ServiceAccount
metadata:
  name: app
  namespace: {ns}
---
apiVersion: v1
kind: Secret
metadata:
  name: app-approle
  namespace: {ns}
stringData:
  secretId: {secret_id}
---
apiVersion: secrets-store.csi.x-k8s.io/v1
kind: SecretProviderClass
metadata:
  name: {SPC}
  namespace: {ns}
spec:
  provider: vault
  parameters: {parameters}
---
{pod}"#,
        pod = pod_yaml(&ns, "app-0", &node, "app", Some("app-approle")),
    ))
    .await;
    let provider = Provider::start(
        &d.bao.addr,
        &["--write-mode", "direct", "--refresh-interval", "2s"],
    );
    // No rotation flags: the driver never calls the provider again by itself.
    let driver = Driver::start(version, &node, &provider, &[]).await;
    let publish = driver.publish(&ns, "app-0", VOLUME).await;
    publish.expect_ok();
    assert_eq!(publish.read("api-key"), "fresh-kv-first");

    let changed = Instant::now();
    d.put("app", json!({"api-key": "fresh-kv-second"})).await;
    let mut kv_seen = None;
    let read = |name: &str| publish.read(name);
    watch_certificates(
        read,
        4,
        Duration::from_millis(250),
        Duration::from_secs(45),
        || {
            if kv_seen.is_none() && publish.read("api-key") == "fresh-kv-second" {
                kv_seen = Some(changed.elapsed());
            }
        },
    )
    .await;
    let kv_seen = kv_seen.expect("the KV change was never written");
    assert!(
        kv_seen <= Duration::from_millis(3200),
        "KV change written after {kv_seen:?}"
    );
    let mounts = provider
        .metric(&format!(
            r#"vsp_mounts_total{{pod_namespace="{ns}",result="success",code="ok"}}"#
        ))
        .await;
    assert_eq!(mounts, 1.0, "one Mount: the NodePublishVolume");

    // The pod goes away: kubelet unpublishes, the driver unmounts the tmpfs.
    driver.unpublish(&ns, "app-0", VOLUME).await.expect_ok();
    d.put("app", json!({"api-key": "fresh-kv-third"})).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(!publish.is_tmpfs());
    assert!(
        publish.files().is_empty(),
        "nothing written after unpublish"
    );
    assert_eq!(provider.metric("vsp_volumes_tracked").await, 0.0);
    assert_log_clean(
        &provider.log(),
        &[&secret_id, "fresh-kv-first", "fresh-kv-second"],
    );
}

#[tokio::test]
async fn direct_mode_volume_stays_fresh_through_driver_v1_5() {
    direct_mode_volume_stays_fresh(DriverVersion::V1_5).await;
}

#[tokio::test]
async fn direct_mode_volume_stays_fresh_through_driver_v1_6() {
    direct_mode_volume_stays_fresh(DriverVersion::V1_6).await;
}
