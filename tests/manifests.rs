//! `daemonset/` applied for real to the run's kube-apiserver, the way
//! `kubectl apply -k --server-side` would: after the driver's CRDs (and the rest of
//! its installation), every object of
//!
//! - `daemonset/` (the default install: Namespace, ServiceAccount, DaemonSet),
//! - `daemonset/` with the `secret-sync` component (its RBAC and DaemonSet patch),
//! - `daemonset/examples/` (the seed workflow's SecretProviderClasses, Secrets, pod)
//!
//! is server-side applied (`PATCH` with `application/apply-patch+yaml`) and must be
//! accepted by validation and admission, CRD schemas included. Everything is applied
//! for real, not dry-run: the control plane has no scheduler or controller-manager, so
//! the example pod stays Pending and the DaemonSet makes no pods, but the objects are
//! stored exactly as a cluster would store them, and the test reads them back.
//!
//! No kubectl or kustomize binary is at hand: [`render`] does what kustomize does for
//! the few fields these kustomizations use (`resources`, `components`, `namespace`,
//! `images`, `patches` with strategic merge patches of maps and name-keyed lists) and
//! panics on anything else, so the rendering cannot silently diverge from kustomize's.

mod support;

use std::path::{Path, PathBuf};

use serde_json::{Map, Value, json};
use support::kube::{Kube, manifests, object_path};
use vault_secrets_provider::proto::MountRequest;
use vault_secrets_provider::request::{self, Credentials, Defaults, MountPlan};

const FIELD_MANAGER: &str = "vsp-manifests-test";

fn daemonset_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("daemonset")
}

/// The objects `kustomize build dir` prints, in the order of the kustomization.
fn render(dir: &Path) -> Vec<Value> {
    let kustomization = read_kustomization(dir, "Kustomization");
    let mut objects = Vec::new();
    for entry in list(&kustomization, "resources") {
        let path = dir.join(entry);
        if path.is_dir() {
            objects.extend(render(&path));
        } else {
            objects.extend(manifests(&path));
        }
    }
    for component in list(&kustomization, "components") {
        apply_component(&dir.join(component), &mut objects);
    }
    transform(&kustomization, &mut objects);
    objects
}

/// A Component's resources and patches, added to `objects`.
fn apply_component(dir: &Path, objects: &mut Vec<Value>) {
    let component = read_kustomization(dir, "Component");
    for entry in list(&component, "resources") {
        objects.extend(manifests(&dir.join(entry)));
    }
    transform(&component, objects);
}

/// `namespace`, `images` and `patches` of a kustomization, applied to `objects`.
fn transform(kustomization: &Value, objects: &mut [Value]) {
    for patch in kustomization["patches"].as_array().into_iter().flatten() {
        let keys: Vec<&String> = patch.as_object().expect("patch entry").keys().collect();
        assert_eq!(keys, ["path"], "only `patches: - path:` is rendered here");
        let file = patch["path"].as_str().expect("patch path");
        let dir = kustomization["__dir"].as_str().expect("dir");
        for patch in manifests(&Path::new(dir).join(file)) {
            let target = objects
                .iter_mut()
                .find(|o| same_object(o, &patch))
                .unwrap_or_else(|| panic!("patch {file}: no object it targets"));
            strategic_merge(target, &patch, file);
        }
    }
    if let Some(namespace) = kustomization["namespace"].as_str() {
        for object in objects.iter_mut() {
            if !cluster_scoped(object) {
                object["metadata"]["namespace"] = json!(namespace);
            }
        }
    }
    for image in kustomization["images"].as_array().into_iter().flatten() {
        let name = image["name"].as_str().expect("images[].name");
        for object in objects.iter_mut() {
            for container in containers(object) {
                let current = container["image"].as_str().expect("image").to_owned();
                let (repo, tag) = current.rsplit_once(':').unwrap_or((&current, ""));
                if repo != name {
                    continue;
                }
                let repo = image["newName"].as_str().unwrap_or(repo);
                let tag = image["newTag"].as_str().unwrap_or(tag);
                container["image"] = json!(format!("{repo}:{tag}"));
            }
        }
    }
}

fn read_kustomization(dir: &Path, kind: &str) -> Value {
    let mut docs = manifests(&dir.join("kustomization.yaml"));
    assert_eq!(docs.len(), 1, "{}: one document", dir.display());
    let mut k = docs.remove(0);
    assert_eq!(k["kind"], kind, "{}", dir.display());
    for key in k.as_object().expect("kustomization is a map").keys() {
        assert!(
            [
                "apiVersion",
                "kind",
                "resources",
                "components",
                "namespace",
                "images",
                "patches"
            ]
            .contains(&key.as_str()),
            "{}: field {key:?} is not rendered by this test; teach `render` about it",
            dir.display()
        );
    }
    k["__dir"] = json!(dir.to_str().expect("utf-8 path"));
    k
}

fn list<'a>(kustomization: &'a Value, key: &str) -> Vec<&'a str> {
    kustomization[key]
        .as_array()
        .into_iter()
        .flatten()
        .map(|v| v.as_str().expect("a path"))
        .collect()
}

fn same_object(a: &Value, b: &Value) -> bool {
    a["kind"] == b["kind"]
        && a["apiVersion"] == b["apiVersion"]
        && a["metadata"]["name"] == b["metadata"]["name"]
}

fn cluster_scoped(object: &Value) -> bool {
    ["Namespace", "ClusterRole", "ClusterRoleBinding"].contains(&object["kind"].as_str().unwrap())
}

/// The containers of a Pod or of a workload's pod template.
fn containers(object: &mut Value) -> Vec<&mut Value> {
    // (`pointer_mut`: indexing a `Value` mutably would add the missing keys.)
    let path = if object["kind"] == "Pod" {
        "/spec/containers"
    } else {
        "/spec/template/spec/containers"
    };
    match object.pointer_mut(path).and_then(Value::as_array_mut) {
        Some(cs) => cs.iter_mut().collect(),
        None => Vec::new(),
    }
}

/// A strategic merge patch: maps merge key by key; lists of maps with a `name`
/// merge by name (the merge key of containers, env, volumes and volume mounts, the
/// only lists these patches touch); other lists would need their types' patch
/// strategies, so they are refused rather than guessed.
fn strategic_merge(target: &mut Value, patch: &Value, file: &str) {
    match (target, patch) {
        (Value::Object(t), Value::Object(p)) => {
            for (key, value) in p {
                match value {
                    Value::Array(items) => {
                        let list = t.entry(key.clone()).or_insert(json!([]));
                        let list = list.as_array_mut().expect("a list patched by a list");
                        for item in items {
                            let name = item["name"].as_str().unwrap_or_else(|| {
                                panic!("{file}: only lists merged by `name` are rendered here")
                            });
                            match list.iter_mut().find(|e| e["name"] == name) {
                                Some(existing) => strategic_merge(existing, item, file),
                                None => list.push(item.clone()),
                            }
                        }
                    }
                    Value::Object(_) => strategic_merge(
                        t.entry(key.clone()).or_insert(Value::Object(Map::new())),
                        value,
                        file,
                    ),
                    Value::Null => {
                        t.remove(key);
                    }
                    _ => {
                        t.insert(key.clone(), value.clone());
                    }
                }
            }
        }
        (t, p) => *t = p.clone(),
    }
}

/// Server-side apply of `object`; returns it as stored. Panics unless accepted.
async fn apply(kube: &Kube, object: &Value) -> Value {
    let path = format!(
        "{}?fieldManager={FIELD_MANAGER}&force=true",
        object_path(object)
    );
    let (status, body) = kube
        .request("PATCH", &path, Some(object), "application/apply-patch+yaml")
        .await;
    assert!(
        status == 200 || status == 201,
        "apply {} {}: HTTP {status}: {body}",
        object["kind"],
        object["metadata"]["name"]
    );
    body
}

async fn apply_all(kube: &Kube, objects: &[Value]) -> Vec<Value> {
    let mut stored = Vec::new();
    for object in objects {
        stored.push(apply(kube, object).await);
    }
    stored
}

fn kinds(objects: &[Value]) -> Vec<String> {
    objects
        .iter()
        .map(|o| format!("{}/{}", o["kind"].as_str().unwrap(), o["metadata"]["name"]))
        .map(|s| s.replace('"', ""))
        .collect()
}

fn find<'a>(objects: &'a [Value], kind: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| o["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind}"))
}

/// What our provider makes of an example SecretProviderClass, mounted in the example
/// pod with `secret_ref`'s data: the attributes the driver would send.
fn plan_for(spc: &Value, pod: &Value, secret_ref: &Value) -> MountPlan {
    let mut attributes = spc["spec"]["parameters"].clone();
    attributes["secretProviderClass"] = spc["metadata"]["name"].clone();
    attributes["csi.storage.k8s.io/pod.name"] = pod["metadata"]["name"].clone();
    attributes["csi.storage.k8s.io/pod.namespace"] = pod["metadata"]["namespace"].clone();
    attributes["csi.storage.k8s.io/pod.uid"] = json!("00000000-0000-0000-0000-000000000001");
    attributes["csi.storage.k8s.io/serviceAccount.name"] =
        pod["spec"]["serviceAccountName"].clone();
    let request = MountRequest {
        attributes: attributes.to_string(),
        secrets: secret_ref["stringData"].to_string(),
        target_path: "/var/lib/kubelet/pods/x/volumes/kubernetes.io~csi/secrets/mount".into(),
        permission: "420".into(),
        current_object_version: vec![],
    };
    let defaults = Defaults {
        vault_address: "https://vault.vault.svc:8200".parse().unwrap(),
        vault_namespace: None,
        tls: Default::default(),
        allowed_vault_addrs: Default::default(),
        spc_tls_dir: None,
    };
    request::parse(&request, &defaults)
        .unwrap_or_else(|e| panic!("{}: {e}", spc["metadata"]["name"]))
}

/// The example SecretProviderClasses mean what their comments say, to our provider.
#[test]
fn the_example_secret_provider_classes_parse_as_the_seed_workflow() {
    let examples = render(&daemonset_dir().join("examples"));
    let named = |kind: &str, name: &str| {
        examples
            .iter()
            .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("no {kind} {name}"))
    };
    let pod = named("Pod", "app");
    let volumes = pod["spec"]["volumes"].as_array().unwrap();
    for volume in volumes {
        let spc = named(
            "SecretProviderClass",
            volume["csi"]["volumeAttributes"]["secretProviderClass"]
                .as_str()
                .unwrap(),
        );
        let secret = named(
            "Secret",
            volume["csi"]["nodePublishSecretRef"]["name"]
                .as_str()
                .unwrap(),
        );
        assert_eq!(
            secret["metadata"]["labels"]["secrets-store.csi.k8s.io/used"],
            "true"
        );
        let plan = plan_for(spc, pod, secret);
        let Credentials::AppRole { .. } = &plan.auth.credentials else {
            panic!("{}: AppRole expected", spc["metadata"]["name"]);
        };
        let namespace = &plan.auth.namespace;
        let sources: Vec<(String, Option<String>)> = plan
            .objects
            .iter()
            .map(|o| {
                (
                    o.name.as_str().to_owned(),
                    o.source.namespace.as_ref().map(|n| n.as_str().to_owned()),
                )
            })
            .collect();
        match spc["metadata"]["name"].as_str().unwrap() {
            "app-secrets" => {
                assert_eq!(
                    namespace.as_ref().unwrap().as_str(),
                    "admin/deployments/hie-prod-34"
                );
                assert_eq!(
                    sources,
                    [
                        (
                            "db-password".into(),
                            Some("admin/deployments/hie-prod-34".into())
                        ),
                        (
                            "db-username".into(),
                            Some("admin/deployments/hie-prod-34".into())
                        ),
                    ]
                );
                assert_eq!(plan.objects[1].mode, Some(0o640));
            }
            "app-tls" => {
                assert_eq!(namespace.as_ref().unwrap().as_str(), "admin");
                assert_eq!(
                    sources,
                    [
                        ("tls.crt".into(), Some("admin/central".into())),
                        ("tls.key".into(), Some("admin/central".into())),
                    ]
                );
                // One issue call for both: the certificate matches its key.
                assert_eq!(plan.objects[0].source, plan.objects[1].source);
                assert_eq!(plan.objects[1].mode, Some(0o400));
            }
            other => panic!("unexpected SecretProviderClass {other}"),
        }
    }
    assert_eq!(volumes.len(), 2);
}

#[tokio::test]
async fn the_install_the_secret_sync_component_and_the_examples_apply() {
    let kube = Kube::shared();
    // The driver's CRDs, CSIDriver and RBAC first, as an operator installs them.
    kube.driver_installed().await;

    // The default install: no RBAC at all.
    let base = render(&daemonset_dir());
    assert_eq!(
        kinds(&base),
        [
            "Namespace/vault-secrets-provider",
            "ServiceAccount/vault-secrets-provider",
            "DaemonSet/vault-secrets-provider"
        ]
    );
    let stored = apply_all(kube, &base).await;
    let ds = find(&stored, "DaemonSet");
    let pod = &ds["spec"]["template"]["spec"];
    assert_eq!(pod["automountServiceAccountToken"], false);
    assert_eq!(pod["tolerations"], json!([{ "operator": "Exists" }]));
    assert_eq!(
        pod["volumes"][0]["hostPath"]["path"],
        "/var/run/secrets-store-csi-providers"
    );
    let container = &pod["containers"][0];
    assert_eq!(container["image"], "vault-secrets-provider:0.1.0");
    assert!(container["args"].as_array().unwrap().contains(&json!(
        "--endpoint=/var/run/secrets-store-csi-providers/vault.sock"
    )));
    assert_eq!(
        container["volumeMounts"][0]["mountPath"],
        "/var/run/secrets-store-csi-providers"
    );
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(container["livenessProbe"]["httpGet"]["port"], "health");
    assert_eq!(container["ports"][0]["name"], "health");
    assert!(container["resources"]["requests"]["memory"].is_string());
    assert!(container["resources"]["limits"]["memory"].is_string());
    let security = &container["securityContext"];
    assert_eq!(security["privileged"], false);
    assert_eq!(security["allowPrivilegeEscalation"], false);
    assert_eq!(security["readOnlyRootFilesystem"], true);
    assert_eq!(security["capabilities"]["drop"], json!(["ALL"]));
    assert!(security["capabilities"]["add"].is_null());

    // With the optional component: RBAC for Secrets, the service-account token mounted.
    let mut with_sync = base.clone();
    apply_component(&daemonset_dir().join("secret-sync"), &mut with_sync);
    assert_eq!(
        kinds(&with_sync)[3..],
        [
            "ClusterRole/vault-secrets-provider-secret-sync",
            "ClusterRoleBinding/vault-secrets-provider-secret-sync"
        ]
    );
    let stored = apply_all(kube, &with_sync).await;
    let pod = &find(&stored, "DaemonSet")["spec"]["template"]["spec"];
    assert_eq!(pod["automountServiceAccountToken"], true);
    let containers = pod["containers"].as_array().unwrap();
    assert_eq!(
        containers.len(),
        1,
        "the patch merged into the provider container"
    );
    assert_eq!(
        containers[0]["env"],
        json!([
            { "name": "VSP_VAULT_ADDR", "value": "https://vault.vault.svc:8200" },
            { "name": "VSP_SYNC_SECRETS", "value": "true" }
        ])
    );
    assert_eq!(containers[0]["image"], "vault-secrets-provider:0.1.0");
    // What the binding grants, as the apiserver's authorizer sees it.
    for (verb, allowed) in [
        ("create", true),
        ("patch", true),
        ("get", true),
        ("list", false),
        ("delete", false),
    ] {
        let review = json!({
            "apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
            "spec": {
                "user": "system:serviceaccount:vault-secrets-provider:vault-secrets-provider",
                "groups": ["system:serviceaccounts"],
                "resourceAttributes": { "namespace": "any-app", "verb": verb, "resource": "secrets" }
            }
        });
        let (status, body) = kube
            .request(
                "POST",
                "/apis/authorization.k8s.io/v1/subjectaccessreviews",
                Some(&review),
                "application/json",
            )
            .await;
        assert_eq!(status, 201, "{body}");
        assert_eq!(body["status"]["allowed"], allowed, "{verb} secrets: {body}");
    }

    // The seed workflow's examples: accepted by the SecretProviderClass CRD's schema,
    // the pod by validation and admission (no scheduler: it stays Pending).
    let examples = render(&daemonset_dir().join("examples"));
    assert_eq!(
        kinds(&examples),
        [
            "Namespace/hie-prod-34",
            "ServiceAccount/app",
            "Secret/app-approle",
            "Secret/app-tls-approle",
            "SecretProviderClass/app-secrets",
            "SecretProviderClass/app-tls",
            "Pod/app"
        ]
    );
    let stored = apply_all(kube, &examples).await;
    for object in &stored[1..] {
        assert_eq!(object["metadata"]["namespace"], "hie-prod-34");
    }
    for (spc, rendered) in stored[4..6].iter().zip(&examples[4..6]) {
        assert_eq!(spc["spec"]["provider"], "vault");
        assert_eq!(spc["spec"]["parameters"], rendered["spec"]["parameters"]);
    }
    assert_eq!(
        stored[4]["spec"]["parameters"]["vaultNamespace"],
        "admin/deployments/hie-prod-34"
    );
    assert!(
        stored[5]["spec"]["parameters"]["objects"]
            .as_str()
            .unwrap()
            .contains("vaultNamespace: admin/central")
    );
    assert_eq!(
        stored[2]["metadata"]["labels"]["secrets-store.csi.k8s.io/used"],
        "true"
    );
    let pod = stored.last().unwrap();
    assert_eq!(pod["status"]["phase"], "Pending");
    assert_eq!(
        pod["spec"]["volumes"][0]["csi"]["nodePublishSecretRef"]["name"],
        "app-approle"
    );
}
