//! `daemonset/` as users install it, with the real tools, applied for real to the run's
//! kube-apiserver:
//!
//! - **kustomize**: `kustomize build` (the binary, built from `sigs.k8s.io/kustomize/kustomize/v5`
//!   by `make install-tools`) of `daemonset/` (Namespace, ServiceAccount, DaemonSet), of
//!   `daemonset/` with the `secret-sync` component, and of `daemonset/examples/` (the seed
//!   workflow's SecretProviderClasses, Secrets and pod);
//! - **Helm**: `helm lint --strict` and `helm template` (the binary, built from
//!   `helm.sh/helm/v3`) of `daemonset/chart/` for the default values, for every combination of
//!   its switches (secret sync × direct write) and for the values files in its `ci/` (one written
//!   for HashiCorp's Vault chart's `csi.*` keys, one setting every `serve` flag). The chart must
//!   render the same DaemonSet as kustomize for the same settings (parsed objects compared), and
//!   the same other objects; typos and unsupported values must fail; the `serve` values must be
//!   the binary's flags with the binary's defaults, and what the chart renders from them must
//!   parse as the binary's command line;
//! - **`helm install` / `helm upgrade`** against the apiserver (the kubeconfig of
//!   scripts/with-kubernetes.sh): from the default install to one with secret sync (and direct
//!   write) and back, checking by label that the cluster holds exactly the release's objects at
//!   every step, and nothing after `helm uninstall`.
//!
//! Every rendering is server-side applied (`PATCH` with `application/apply-patch+yaml`, as
//! `kubectl apply --server-side` does), after the driver's CRDs, and must be accepted by
//! validation and admission, CRD schemas included. Nothing is dry-run: the control plane has no
//! scheduler or controller-manager, so the example pod stays Pending and the DaemonSets make no
//! pods, but the objects are stored exactly as a cluster would store them.

mod support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use clap::{CommandFactory as _, Parser as _};
use serde_json::{Value, json};
use support::kube::{Kube, manifests_from_str, object_path};
use vault_secrets_provider::cli::{self, Cli};
use vault_secrets_provider::proto::MountRequest;
use vault_secrets_provider::request::{self, Credentials, Defaults, MountPlan};

const FIELD_MANAGER: &str = "vsp-manifests-test";
/// The kustomize install's namespace; the chart is rendered for it too.
const NAMESPACE: &str = "vault-secrets-provider";
const RELEASE: &str = "vault-secrets-provider";
/// The cluster-scoped objects of secret sync (fixed names, in both installs): its RBAC and
/// its admission policy.
const SYNC_RBAC: [&str; 4] = [
    "/apis/rbac.authorization.k8s.io/v1/clusterroles/vault-secrets-provider-secret-sync",
    "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings/vault-secrets-provider-secret-sync",
    "/apis/admissionregistration.k8s.io/v1/validatingadmissionpolicies/vault-secrets-provider-secret-sync",
    "/apis/admissionregistration.k8s.io/v1/validatingadmissionpolicybindings/vault-secrets-provider-secret-sync",
];

/// The tests that write the installs' objects (the same names in the same namespace, and
/// cluster-wide RBAC) take turns.
static CLUSTER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn daemonset_dir() -> PathBuf {
    repo().join("daemonset")
}

fn chart_dir() -> PathBuf {
    daemonset_dir().join("chart")
}

/// A binary the Makefile builds and names in `var`.
fn tool(var: &str) -> PathBuf {
    match std::env::var(var) {
        Ok(path) if Path::new(&path).is_file() => PathBuf::from(path),
        _ => panic!(
            "{var} does not name a binary: run the tests via `make test`, which builds helm and \
             kustomize (make install-tools) and exports their paths"
        ),
    }
}

/// Runs `command`; its standard output. Panics with its standard error unless it succeeds.
fn run(command: &mut Command) -> String {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("{command:?}: {e}"));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "{command:?}: {}\n{stderr}",
        output.status
    );
    String::from_utf8(output.stdout).expect("utf-8 output")
}

/// Runs `command`, which must fail; its standard error.
fn run_failing(command: &mut Command) -> String {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("{command:?}: {e}"));
    assert!(
        !output.status.success(),
        "{command:?} succeeded:\n{}",
        String::from_utf8_lossy(&output.stdout)
    );
    String::from_utf8_lossy(&output.stderr).into_owned()
}

// --- kustomize ------------------------------------------------------------------------------

/// The objects `kustomize build dir` prints.
fn kustomize_build(dir: &Path) -> Vec<Value> {
    let out = run(Command::new(tool("VSP_TEST_KUSTOMIZE_BIN"))
        .arg("build")
        .arg(dir));
    manifests_from_str(&out)
}

/// `daemonset/` with `components` (directories of daemonset/), as an overlay adds them.
fn kustomize_install(components: &[&str]) -> Vec<Value> {
    if components.is_empty() {
        return kustomize_build(&daemonset_dir());
    }
    // kustomize takes only relative paths, from the overlay's directory.
    let overlay = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("overlay dir");
    let base = relative(overlay.path(), &daemonset_dir());
    let kustomization = json!({
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": [base],
        "components": components.iter().map(|c| base.join(c)).collect::<Vec<_>>(),
    });
    std::fs::write(
        overlay.path().join("kustomization.yaml"),
        kustomization.to_string(),
    )
    .expect("write overlay");
    kustomize_build(overlay.path())
}

fn relative(from_dir: &Path, to: &Path) -> PathBuf {
    let from = from_dir.canonicalize().expect("canonical path");
    let to = to.canonicalize().expect("canonical path");
    let common = from
        .components()
        .zip(to.components())
        .take_while(|(a, b)| a == b)
        .count();
    let mut path = PathBuf::new();
    for _ in from.components().skip(common) {
        path.push("..");
    }
    for component in to.components().skip(common) {
        path.push(component);
    }
    path
}

/// Whether `daemonset/direct-write/` (the kustomize component for `--write-mode direct`)
/// exists yet; until it does, the chart's direct-write DaemonSet is checked against the
/// README's description of it.
fn direct_write_component() -> bool {
    daemonset_dir()
        .join("direct-write/kustomization.yaml")
        .is_file()
}

/// The kustomize install with the components for these switches.
fn kustomize_with(sync: bool, direct: bool) -> Vec<Value> {
    let mut components = Vec::new();
    if sync {
        components.push("secret-sync");
    }
    if direct && direct_write_component() {
        components.push("direct-write");
    }
    kustomize_install(&components)
}

// --- helm -----------------------------------------------------------------------------------

/// `helm` with its own (empty) configuration, cache and data directories.
fn helm() -> Command {
    let home = Path::new(env!("CARGO_TARGET_TMPDIR")).join("helm-home");
    let mut command = Command::new(tool("VSP_TEST_HELM_BIN"));
    for (var, dir) in [
        ("HELM_CACHE_HOME", "cache"),
        ("HELM_CONFIG_HOME", "config"),
        ("HELM_DATA_HOME", "data"),
    ] {
        command.env(var, home.join(dir));
    }
    command.env_remove("KUBECONFIG");
    command
}

/// Values as helm arguments: `--set` for `key=value`, `--values` for a file name in the
/// chart's `ci/`.
fn value_args(values: &[&str]) -> Vec<String> {
    values
        .iter()
        .flat_map(|v| {
            if v.contains('=') {
                ["--set".to_owned(), (*v).to_owned()]
            } else {
                [
                    "--values".to_owned(),
                    chart_dir().join("ci").join(v).display().to_string(),
                ]
            }
        })
        .collect()
}

fn helm_lint(values: &[&str]) {
    let out = run(helm()
        .args(["lint", "--strict"])
        .arg(chart_dir())
        .args(value_args(values)));
    assert!(out.contains("0 chart(s) failed"), "{out}");
}

/// The objects `helm template` renders for the kustomize install's namespace.
fn helm_template(values: &[&str]) -> Vec<Value> {
    let out = run(helm()
        .args(["template", RELEASE])
        .arg(chart_dir())
        .args(["--namespace", NAMESPACE])
        .args(value_args(values)));
    manifests_from_str(&out)
}

fn switches(sync: bool, direct: bool) -> [String; 2] {
    [
        format!("secretSync.enabled={sync}"),
        format!("directWrite.enabled={direct}"),
    ]
}

// --- comparing and applying -----------------------------------------------------------------

/// Where `a` and `b` differ, as JSON pointers.
fn differences(a: &Value, b: &Value, at: &str, out: &mut Vec<String>) {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            for key in x.keys().chain(y.keys()).collect::<BTreeSet<_>>() {
                let (va, vb) = (x.get(key), y.get(key));
                differences(
                    va.unwrap_or(&Value::Null),
                    vb.unwrap_or(&Value::Null),
                    &format!("{at}/{key}"),
                    out,
                );
            }
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
            for (i, (va, vb)) in x.iter().zip(y).enumerate() {
                differences(va, vb, &format!("{at}/{i}"), out);
            }
        }
        _ if a == b => {}
        _ => out.push(format!("{at}: chart {a} ≠ kustomize {b}")),
    }
}

fn assert_same(chart: &Value, kustomize: &Value, what: &str) {
    let mut diff = Vec::new();
    differences(chart, kustomize, "", &mut diff);
    assert!(
        diff.is_empty(),
        "{what}: the chart and kustomize differ:\n  {}",
        diff.join("\n  ")
    );
}

/// The README's direct-write DaemonSet ("Direct writes"): `ds` plus `--write-mode direct`, the
/// kubelet's pods directory at the same path with HostToContainer propagation, and the
/// CHOWN, DAC_OVERRIDE and FOWNER capabilities, nothing else; where a kustomize component's
/// strategic merge patch would put them (new list entries first).
fn with_direct_write(ds: &Value) -> Value {
    let mut ds = ds.clone();
    let pod = &mut ds["spec"]["template"]["spec"];
    pod["volumes"].as_array_mut().expect("volumes").insert(
        0,
        json!({
            "name": "kubelet-pods",
            "hostPath": { "path": "/var/lib/kubelet/pods", "type": "Directory" }
        }),
    );
    let container = &mut pod["containers"][0];
    if !container["env"].is_array() {
        container["env"] = json!([]);
    }
    let env = container["env"].as_array_mut().unwrap();
    env.insert(0, json!({ "name": "VSP_WRITE_MODE", "value": "direct" }));
    container["securityContext"]["capabilities"]["add"] =
        json!(["CHOWN", "DAC_OVERRIDE", "FOWNER"]);
    container["volumeMounts"]
        .as_array_mut()
        .expect("volumeMounts")
        .insert(
            0,
            json!({
                "name": "kubelet-pods",
                "mountPath": "/var/lib/kubelet/pods",
                "mountPropagation": "HostToContainer"
            }),
        );
    ds
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

fn named<'a>(objects: &'a [Value], kind: &str, name: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name}"))
}

/// Waits until the authorizer answers `allowed` for the provider's account and `verb` on
/// Secrets (it sees RBAC changes through an informer, a moment later).
async fn assert_secrets_access(kube: &Kube, account_namespace: &str, verb: &str, allowed: bool) {
    let review = json!({
        "apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
        "spec": {
            "user": format!("system:serviceaccount:{account_namespace}:vault-secrets-provider"),
            "groups": ["system:serviceaccounts"],
            "resourceAttributes": { "namespace": "any-app", "verb": verb, "resource": "secrets" }
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
        assert_eq!(status, 201, "{body}");
        if body["status"]["allowed"] == allowed {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{verb} secrets: allowed should be {allowed}: {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
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
    let examples = kustomize_build(&daemonset_dir().join("examples"));
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
    let _turn = CLUSTER.lock().await;

    // The default install: no RBAC at all.
    let base = kustomize_install(&[]);
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
    let with_sync = kustomize_install(&["secret-sync"]);
    assert_eq!(
        kinds(&with_sync),
        [
            "Namespace/vault-secrets-provider",
            "ServiceAccount/vault-secrets-provider",
            "ClusterRole/vault-secrets-provider-secret-sync",
            "ClusterRoleBinding/vault-secrets-provider-secret-sync",
            "ValidatingAdmissionPolicy/vault-secrets-provider-secret-sync",
            "ValidatingAdmissionPolicyBinding/vault-secrets-provider-secret-sync",
            "DaemonSet/vault-secrets-provider"
        ]
    );
    let stored = apply_all(kube, &with_sync).await;
    let policy = named(
        &stored,
        "ValidatingAdmissionPolicy",
        "vault-secrets-provider-secret-sync",
    );
    assert!(
        policy["spec"]["matchConditions"][0]["expression"]
            .as_str()
            .unwrap()
            .contains("'system:serviceaccount:vault-secrets-provider:vault-secrets-provider'"),
        "the policy names the install's account: {policy}"
    );
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
        // (kustomize puts a patch's new list entries first)
        json!([
            { "name": "VSP_SYNC_SECRETS", "value": "true" },
            { "name": "VSP_VAULT_ADDR", "value": "https://vault.vault.svc:8200" }
        ])
    );
    assert_eq!(containers[0]["image"], "vault-secrets-provider:0.1.0");
    // What the binding grants, as the apiserver's authorizer sees it.
    for (verb, allowed) in [
        ("create", true),
        ("patch", true),
        ("get", false),
        ("list", false),
        ("delete", false),
    ] {
        assert_secrets_access(kube, NAMESPACE, verb, allowed).await;
    }

    // The seed workflow's examples: accepted by the SecretProviderClass CRD's schema,
    // the pod by validation and admission (no scheduler: it stays Pending).
    let examples = kustomize_build(&daemonset_dir().join("examples"));
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

/// For the default values and each combination of the switches: `helm lint --strict`
/// passes, `helm template` renders the kustomize install's objects (the same DaemonSet, the
/// same ServiceAccount and RBAC; the Namespace with `namespace.create`), and the apiserver
/// accepts them.
#[tokio::test]
async fn the_chart_renders_the_kustomize_install_for_each_switch() {
    let kube = Kube::shared();
    kube.driver_installed().await;
    let _turn = CLUSTER.lock().await;

    // The default values render what the switches off do.
    helm_lint(&[]);
    let defaults = helm_template(&[]);
    let off = switches(false, false);
    assert_eq!(defaults, helm_template(&[&off[0], &off[1]]));
    assert_eq!(
        kinds(&defaults),
        [
            "ServiceAccount/vault-secrets-provider",
            "DaemonSet/vault-secrets-provider"
        ]
    );

    for (sync, direct) in [(false, false), (true, false), (false, true), (true, true)] {
        let what = format!("secretSync {sync}, directWrite {direct}");
        let set = switches(sync, direct);
        let set: Vec<&str> = set.iter().map(String::as_str).collect();
        helm_lint(&set);
        let mut with_namespace = set.clone();
        with_namespace.push("namespace.create=true");
        let chart = helm_template(&with_namespace);
        let kustomize = kustomize_with(sync, direct);

        // The same objects, the DaemonSet aside; the Namespace only with namespace.create.
        let sorted = |objects: &[Value]| {
            let mut names = kinds(objects);
            names.sort();
            names
        };
        assert_eq!(sorted(&chart), sorted(&kustomize), "{what}");
        assert_eq!(
            helm_template(&set),
            chart[1..].to_vec(),
            "{what}: namespace.create adds the Namespace (first) and nothing else"
        );
        for object in chart.iter().filter(|o| o["kind"] != "DaemonSet") {
            let name = object["metadata"]["name"].as_str().unwrap();
            let kind = object["kind"].as_str().unwrap();
            assert_same(
                object,
                named(&kustomize, kind, name),
                &format!("{what}: {kind}"),
            );
        }

        // The same DaemonSet: what kustomize renders, or for direct write (until
        // daemonset/direct-write/ exists) exactly what the README describes on top of it.
        let chart_ds = find(&chart, "DaemonSet");
        let kustomize_ds = find(&kustomize, "DaemonSet");
        if direct && !direct_write_component() {
            assert_same(chart_ds, &with_direct_write(kustomize_ds), &what);
        } else {
            assert_same(chart_ds, kustomize_ds, &what);
        }

        // Accepted by the apiserver, and stored as rendered.
        let stored = apply_all(kube, &chart).await;
        let ds = find(&stored, "DaemonSet");
        let pod = &ds["spec"]["template"]["spec"];
        assert_eq!(pod["automountServiceAccountToken"], sync, "{what}");
        let container = &pod["containers"][0];
        let caps = &container["securityContext"]["capabilities"];
        let mounts = container["volumeMounts"].as_array().unwrap();
        if direct {
            assert_eq!(caps["add"], json!(["CHOWN", "DAC_OVERRIDE", "FOWNER"]));
            let pods = mounts
                .iter()
                .find(|m| m["mountPath"] == "/var/lib/kubelet/pods")
                .expect("the kubelet pods dir mounted");
            assert_eq!(pods["mountPropagation"], "HostToContainer");
        } else {
            assert!(caps["add"].is_null(), "{what}");
            assert_eq!(mounts.len(), 1, "{what}");
        }
        if sync {
            assert_secrets_access(kube, NAMESPACE, "patch", true).await;
        }
    }
}

/// The values files in the chart's `ci/`: lint, render and apply. `hashicorp-values.yaml`, a
/// file written for HashiCorp's Vault chart (`csi.*`, `global.*`), means here what it means
/// there; from `all-flags-values.yaml` the chart renders arguments the binary accepts, with
/// the values given.
#[tokio::test]
async fn the_ci_values_files_render_and_apply() {
    let kube = Kube::shared();
    kube.driver_installed().await;
    let _turn = CLUSTER.lock().await;

    let mut files: Vec<String> = std::fs::read_dir(chart_dir().join("ci"))
        .expect("chart ci/")
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|name| name.ends_with("-values.yaml"))
        .collect();
    files.sort();
    assert_eq!(files, ["all-flags-values.yaml", "hashicorp-values.yaml"]);
    for file in &files {
        helm_lint(&[file]);
        // (with its Namespace, so that it applies whichever test runs first)
        let objects = helm_template(&[file, "namespace.create=true"]);
        let stored = apply_all(kube, &objects).await;
        assert_eq!(kinds(&stored), kinds(&objects));
    }

    // HashiCorp's keys, each where its meaning lands.
    let objects = helm_template(&["hashicorp-values.yaml"]);
    assert_eq!(
        kinds(&objects),
        [
            "ServiceAccount/vault-secrets-provider",
            "DaemonSet/vault-secrets-provider"
        ]
    );
    let account = find(&objects, "ServiceAccount");
    assert_eq!(account["metadata"]["labels"]["team"], "platform");
    assert_eq!(
        account["metadata"]["annotations"]["example.com/owner"],
        "platform"
    );
    let ds = find(&objects, "DaemonSet");
    assert_eq!(ds["metadata"]["labels"]["team"], "platform");
    assert_eq!(
        ds["metadata"]["annotations"]["example.com/owner"],
        "platform"
    );
    assert_eq!(
        ds["spec"]["updateStrategy"],
        json!({ "type": "RollingUpdate", "rollingUpdate": { "maxUnavailable": "10%" } })
    );
    let template = &ds["spec"]["template"];
    assert_eq!(template["metadata"]["labels"]["team"], "platform");
    assert_eq!(
        template["metadata"]["annotations"],
        json!({ "example.com/release": RELEASE }),
        "csi.pod.annotations as a templated string"
    );
    let pod = &template["spec"];
    assert_eq!(
        pod["tolerations"],
        json!([{ "key": "node-role.kubernetes.io/control-plane", "operator": "Exists", "effect": "NoSchedule" }])
    );
    assert_eq!(
        pod["nodeSelector"],
        json!({ "kubernetes.io/os": "linux", "pool": "apps" })
    );
    assert_eq!(pod["priorityClassName"], "system-cluster-critical");
    assert_eq!(
        pod["imagePullSecrets"],
        json!([{ "name": "registry-credentials" }])
    );
    assert!(pod["hostNetwork"].is_null());
    // HashiCorp's providers dir on the node, where the driver looks for vault.sock.
    assert_eq!(
        pod["volumes"][0]["hostPath"]["path"],
        "/etc/kubernetes/secrets-store-csi-providers"
    );
    assert_eq!(pod["volumes"][1]["secret"]["secretName"], "vault-ca");
    let container = &pod["containers"][0];
    assert_eq!(container["image"], "example/vault-secrets-provider:0.1.0");
    assert_eq!(container["imagePullPolicy"], "Always");
    assert_eq!(
        container["resources"],
        json!({ "requests": { "cpu": "50m", "memory": "128Mi" }, "limits": { "cpu": "50m", "memory": "128Mi" } })
    );
    assert_eq!(container["volumeMounts"][1]["mountPath"], "/vault/tls");
    for probe in ["livenessProbe", "readinessProbe"] {
        assert_eq!(container[probe]["failureThreshold"], 2);
        assert_eq!(container[probe]["timeoutSeconds"], 3);
    }
    assert_eq!(
        container["env"],
        json!([{ "name": "VSP_VAULT_ADDR", "value": "https://vault.example.internal:8200" }]),
        "global.externalVaultAddr"
    );
    // csi.debug: true is --log-level=debug; csi.extraArgs come last.
    let args = string_args(container);
    assert_eq!(
        args[4..],
        ["--log-level=debug", "--vault-tls-ca-cert=/vault/tls/ca.crt"]
    );
    assert!(parse_serve(&args).vault.vault_tls_ca_cert.is_some());

    // Every flag, as the binary reads it.
    let objects = helm_template(&["all-flags-values.yaml"]);
    let container = &find(&objects, "DaemonSet")["spec"]["template"]["spec"]["containers"][0];
    let serve = parse_serve(&string_args(container));
    assert_eq!(serve.endpoint, Path::new("/run/providers/vault.sock"));
    assert_eq!(serve.endpoint_permissions, 0o660);
    assert_eq!(serve.allowed_peer_uids, [0, 1000]);
    assert_eq!(serve.health_addr, "[::]:9090".parse().unwrap());
    assert_eq!(container["ports"][0]["containerPort"], 9090);
    assert!(serve.readyz_vault && serve.revoke_on_idle && serve.revoke_tokens_on_shutdown);
    assert_eq!(serve.mount_timeout, Duration::from_secs(45));
    assert_eq!(serve.token_cache_size, 500);
    assert_eq!(serve.max_response_size, 2 << 20);
    assert_eq!(serve.lease_cache_size, 600);
    assert_eq!(serve.max_in_flight_per_namespace, 8);
    assert_eq!(serve.max_mount_bytes, 6 << 20);
    assert_eq!(serve.lease_cache_bytes, 1 << 20);
    assert_eq!(serve.pod_state_idle_timeout, Duration::from_secs(5400));
    assert_eq!(serve.refresh_interval, Duration::from_secs(45));
    assert_eq!(serve.max_tracked_volumes, 2500);
    assert_eq!(
        serve.version_key_file.as_deref(),
        Some(Path::new("/run/providers/key"))
    );
    assert_eq!(
        serve.kube_api_server.as_deref(),
        Some("https://kubernetes.default.svc")
    );
    assert!(serve.kube_ca_file.is_some() && serve.kube_token_file.is_some());
    let vault = &serve.vault;
    assert_eq!(vault.vault_namespace.as_deref(), Some("admin"));
    assert_eq!(
        vault.vault_tls_server_name.as_deref(),
        Some("vault.example.internal")
    );
    assert!(vault.vault_tls_ca_cert.is_some() && vault.vault_tls_ca_directory.is_some());
    assert!(vault.vault_tls_client_cert.is_some() && vault.vault_tls_client_key.is_some());
    assert!(vault.vault_tls_skip_verify);
    assert_eq!(vault.vault_request_timeout, Duration::from_secs(5));
    assert_eq!(
        vault.allowed_vault_addrs,
        ["https://vault-b.example.internal", "http://10.0.0.1:8200"]
    );
    assert_eq!(
        vault.spc_tls_dir.as_deref(),
        Some(Path::new("/vault/spc-tls"))
    );
    assert_eq!(serve.log.log_level, "debug");
    assert_eq!(
        serve.log.log_format,
        vault_secrets_provider::telemetry::LogFormat::Text
    );
    // The rest is set through the environment: each variable is one the binary reads.
    let env_vars = serve_arguments()
        .into_iter()
        .filter_map(|a| a.get_env().map(|e| e.to_string_lossy().into_owned()))
        .collect::<BTreeSet<_>>();
    let env = container["env"].as_array().unwrap();
    assert_eq!(env.len(), 3);
    for var in env {
        assert!(env_vars.contains(var["name"].as_str().unwrap()), "{var}");
    }
    let mounts = container["volumeMounts"].as_array().unwrap();
    let providers = mounts.iter().find(|m| m["name"] == "providers").unwrap();
    assert_eq!(
        providers["mountPath"], "/run/providers",
        "the providers dir is mounted where the socket is"
    );
}

fn string_args(container: &Value) -> Vec<String> {
    container["args"]
        .as_array()
        .expect("args")
        .iter()
        .map(|a| a.as_str().expect("a string argument").to_owned())
        .collect()
}

/// `args` as the binary parses them (`serve` and its flags).
fn parse_serve(args: &[String]) -> cli::ServeArgs {
    let argv = std::iter::once("vault-secrets-provider").chain(args.iter().map(String::as_str));
    match Cli::try_parse_from(argv) {
        Ok(Cli {
            command: cli::Command::Serve(serve),
        }) => serve,
        Ok(other) => panic!("not serve: {other:?}"),
        Err(e) => panic!("the binary refuses {args:?}:\n{e}"),
    }
}

fn serve_arguments() -> Vec<clap::Arg> {
    Cli::command()
        .find_subcommand("serve")
        .expect("serve")
        .get_arguments()
        .filter(|a| a.get_id() != "help")
        .cloned()
        .collect()
}

fn camel_case(snake: &str) -> String {
    let mut out = String::new();
    let mut upper = false;
    for c in snake.chars() {
        if c == '_' {
            upper = true;
        } else if upper {
            out.push(c.to_ascii_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

/// The chart's values hold every `serve` flag with the binary's default, but for the
/// deliberate exceptions (each checked against the kustomize install), and nothing else.
#[test]
fn the_serve_values_are_the_binary_flags_with_its_defaults() {
    let values: Value = serde_yaml_ng::from_str(
        &std::fs::read_to_string(chart_dir().join("values.yaml")).expect("values.yaml"),
    )
    .expect("values.yaml parses");
    let serve = values["serve"].as_object().expect("serve:");
    let kustomize = kustomize_install(&[]);
    let container = &find(&kustomize, "DaemonSet")["spec"]["template"]["spec"]["containers"][0];
    let kustomize_args = string_args(container);

    let mut covered = BTreeSet::new();
    for arg in serve_arguments() {
        let id = arg.get_id().as_str().to_owned();
        let default = match arg.get_action() {
            // (clap fills in a switch's "false" only when the command is built)
            clap::ArgAction::SetTrue => Some("false".to_owned()),
            _ => arg
                .get_default_values()
                .first()
                .map(|d| d.to_string_lossy().into_owned()),
        };
        let value = match id.as_str() {
            // The HashiCorp key, and the two switches.
            "log_level" => &values["csi"]["logLevel"],
            "sync_secrets" => {
                assert_eq!(values["secretSync"]["enabled"], false);
                continue;
            }
            "write_mode" => {
                assert_eq!(default.as_deref(), Some("response"));
                assert_eq!(values["directWrite"]["enabled"], false);
                continue;
            }
            // What the kustomize install sets, where the binary's default does not suit a pod.
            "vault_addr" => {
                assert!(default.is_none());
                assert_eq!(serve["vaultAddr"], container["env"][0]["value"]);
                covered.insert("vaultAddr".to_owned());
                continue;
            }
            "log_format" => {
                assert_eq!(default.as_deref(), Some("text"));
                assert_eq!(serve["logFormat"], "json");
                assert!(kustomize_args.contains(&"--log-format=json".to_owned()));
                covered.insert("logFormat".to_owned());
                continue;
            }
            _ => {
                let key = camel_case(&id);
                covered.insert(key.clone());
                serve.get(&key).unwrap_or_else(|| {
                    panic!("no value serve.{key} for --{}", arg.get_long().unwrap())
                })
            }
        };
        let value = match value {
            Value::String(s) if s.is_empty() => None,
            Value::String(s) => Some(s.clone()),
            Value::Array(a) if a.is_empty() => None,
            Value::Bool(b) => Some(b.to_string()),
            Value::Number(n) => Some(n.to_string()),
            other => panic!("{id}: unexpected value {other}"),
        };
        assert_eq!(
            value,
            default,
            "--{}: the chart's default",
            arg.get_long().unwrap()
        );
    }
    let keys: BTreeSet<String> = serve.keys().cloned().collect();
    assert_eq!(
        keys, covered,
        "serve: values that are no flag of the binary"
    );
}

/// The chart installs the version the kustomize install does, which is this crate's.
#[test]
fn the_chart_kustomize_and_crate_versions_agree() {
    let chart: Value = serde_yaml_ng::from_str(
        &std::fs::read_to_string(chart_dir().join("Chart.yaml")).expect("Chart.yaml"),
    )
    .expect("Chart.yaml parses");
    assert_eq!(chart["appVersion"], env!("CARGO_PKG_VERSION"));
    let kustomize = kustomize_install(&[]);
    assert_eq!(
        find(&kustomize, "DaemonSet")["spec"]["template"]["spec"]["containers"][0]["image"],
        format!("vault-secrets-provider:{}", env!("CARGO_PKG_VERSION"))
    );
}

/// `csi.enabled: false` or `global.enabled: false` (HashiCorp's switches) render nothing.
#[test]
fn the_chart_disabled_renders_nothing() {
    for set in ["csi.enabled=false", "global.enabled=false"] {
        assert_eq!(
            helm_template(&[set, "namespace.create=true"]),
            Vec::<Value>::new(),
            "{set}"
        );
    }
}

/// A typo or a value the chart cannot honour fails `helm template`, saying what is wrong (and
/// `helm install`: the same schema check and templates); the schema's refusals fail
/// `helm lint --strict` too.
#[test]
fn typos_and_unsupported_values_fail() {
    for (set, message) in [
        ("csi.imag.tag=1", "additional properties 'imag' not allowed"),
        (
            "tolerations=x",
            "additional properties 'tolerations' not allowed",
        ),
        (
            "serve.mountTimout=5s",
            "additional properties 'mountTimout' not allowed",
        ),
        ("serve.mountTimeout=soon", "does not match pattern"),
        ("serve.logFormat=yaml", "value must be one of"),
        ("serve.tokenCacheSize=0", "minimum"),
        ("secretSync.enabled=yes", "want boolean"),
        ("server.enabled=true", "value must be false"),
        (
            "csi.hmacSecretName=vault-csi-provider-hmac-key",
            "csi.hmacSecretName: not supported",
        ),
        ("serve.healthAddr=0.0.0.0:0", "needs a fixed port"),
    ] {
        let stderr = run_failing(
            helm()
                .args(["template", RELEASE])
                .arg(chart_dir())
                .args(["--set", set]),
        );
        assert!(stderr.contains(message), "--set {set}: {stderr}");
        if message.ends_with("not supported") || message.ends_with("fixed port") {
            // `fail` in a template: helm lint reports it as [INFO] and passes, by design.
            continue;
        }
        let lint = helm()
            .args(["lint", "--strict"])
            .arg(chart_dir())
            .args(["--set", set])
            .output()
            .expect("helm lint");
        assert!(!lint.status.success(), "helm lint --set {set} passed");
    }
}

/// Every object in the cluster that carries the chart's labels as `helm install` sets them
/// (`app.kubernetes.io/managed-by: Helm`, added by helm itself), of every kind the chart
/// renders or a chart commonly does: `Kind/namespace/name`, sorted.
async fn labelled(kube: &Kube) -> Vec<String> {
    let selector =
        "app.kubernetes.io/name%3Dvault-secrets-provider,app.kubernetes.io/managed-by%3DHelm";
    let mut found = Vec::new();
    for collection in [
        "/api/v1/namespaces",
        "/api/v1/serviceaccounts",
        "/api/v1/configmaps",
        "/api/v1/secrets",
        "/api/v1/services",
        "/apis/apps/v1/daemonsets",
        "/apis/apps/v1/deployments",
        "/apis/rbac.authorization.k8s.io/v1/clusterroles",
        "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
        "/apis/rbac.authorization.k8s.io/v1/roles",
        "/apis/rbac.authorization.k8s.io/v1/rolebindings",
        "/apis/admissionregistration.k8s.io/v1/validatingadmissionpolicies",
        "/apis/admissionregistration.k8s.io/v1/validatingadmissionpolicybindings",
    ] {
        let list = kube
            .get(&format!("{collection}?labelSelector={selector}"))
            .await
            .unwrap_or_else(|| panic!("list {collection}"));
        let kind = list["kind"].as_str().unwrap().trim_end_matches("List");
        for item in list["items"].as_array().unwrap() {
            let meta = &item["metadata"];
            found.push(format!(
                "{kind}/{}/{}",
                meta["namespace"].as_str().unwrap_or(""),
                meta["name"].as_str().unwrap()
            ));
        }
    }
    found.sort();
    found
}

/// The objects of a rendering (or of `helm get manifest`), named as [`labelled`] names them.
fn names_of(objects: &[Value]) -> Vec<String> {
    let mut names: Vec<String> = objects
        .iter()
        .map(|o| {
            format!(
                "{}/{}/{}",
                o["kind"].as_str().unwrap(),
                o["metadata"]["namespace"].as_str().unwrap_or(""),
                o["metadata"]["name"].as_str().unwrap()
            )
        })
        .collect();
    names.sort();
    names
}

/// The real `helm install`, `helm upgrade` and `helm uninstall` against the test apiserver:
/// from the default install to secret sync, then direct write too, then back to the
/// defaults. After each step the cluster holds exactly the objects of the release's
/// manifest, which is what `helm template` renders for those values; nothing is left after
/// the uninstall.
#[tokio::test]
async fn helm_upgrade_to_secret_sync_and_back_leaves_no_orphans() {
    let kube = Kube::shared();
    kube.driver_installed().await;
    let _turn = CLUSTER.lock().await;
    // A namespace of its own, labelled as NOTES.txt says; the cluster-wide RBAC of the
    // kustomize tests removed first (helm adopts nothing it did not create).
    let namespace = kube.namespace("helm-release").await;
    apply(
        kube,
        &json!({
            "apiVersion": "v1", "kind": "Namespace",
            "metadata": { "name": namespace, "labels": { "pod-security.kubernetes.io/enforce": "privileged" } }
        }),
    )
    .await;
    for path in SYNC_RBAC {
        kube.request("DELETE", path, None, "").await;
        wait_until(|| async { kube.get(path).await.is_none() }, path).await;
    }
    assert_eq!(labelled(kube).await, Vec::<String>::new());

    let helm_at = |args: &[&str]| {
        let mut command = helm();
        command
            .arg("--kubeconfig")
            .arg(&kube.kubeconfig)
            .args(["--namespace", &namespace])
            .args(args);
        command
    };
    let template = |values: &[&str]| {
        let out = run(helm()
            .args(["template", RELEASE])
            .arg(chart_dir())
            .args(["--namespace", &namespace])
            .args(value_args(values)));
        manifests_from_str(&out)
    };
    let chart = chart_dir().display().to_string();
    let sync_on = ["secretSync.enabled=true"];
    let both_on = ["secretSync.enabled=true", "directWrite.enabled=true"];
    let steps: [(&str, &[&str]); 4] = [
        ("install", &[]),
        ("upgrade", &sync_on),
        ("upgrade", &both_on),
        ("upgrade", &[]),
    ];
    for (revision, (action, values)) in steps.iter().enumerate() {
        let mut args = vec![*action, RELEASE, chart.as_str()];
        if *action == "upgrade" {
            // What `helm upgrade` with a values file does: these values, not the last ones.
            args.push("--reset-values");
        }
        let value_args = value_args(values);
        args.extend(value_args.iter().map(String::as_str));
        let out = run(&mut helm_at(&args));
        assert!(out.contains("STATUS: deployed"), "{out}");
        assert!(
            out.contains(&format!("REVISION: {}", revision + 1)),
            "{out}"
        );
        // NOTES.txt: what to do next, and what the switches mean.
        assert!(
            out.contains(&format!(
                "kubectl -n {namespace} rollout status daemonset/vault-secrets-provider"
            )),
            "{out}"
        );
        assert_eq!(
            out.contains("Provider-side Secret sync is on"),
            values.contains(&"secretSync.enabled=true"),
            "{out}"
        );

        let manifest = manifests_from_str(&run(&mut helm_at(&["get", "manifest", RELEASE])));
        let rendered = template(values);
        assert_eq!(
            manifest, rendered,
            "{action} {values:?}: the release is the rendering"
        );
        assert_eq!(
            labelled(kube).await,
            names_of(&rendered),
            "{action} {values:?}: what the cluster holds with the chart's labels"
        );
        let ds = kube
            .get(&format!(
                "/apis/apps/v1/namespaces/{namespace}/daemonsets/vault-secrets-provider"
            ))
            .await
            .expect("the DaemonSet");
        assert_eq!(
            ds["metadata"]["annotations"]["meta.helm.sh/release-name"],
            RELEASE
        );
        let sync = values.contains(&"secretSync.enabled=true");
        assert_eq!(
            ds["spec"]["template"]["spec"]["automountServiceAccountToken"],
            sync
        );
        for path in SYNC_RBAC {
            assert_eq!(
                kube.get(path).await.is_some(),
                sync,
                "{action} {values:?}: {path}"
            );
        }
        if sync {
            assert_secrets_access(kube, &namespace, "patch", true).await;
            // The admission policy names the release's account.
            let policy = kube.get(SYNC_RBAC[2]).await.expect("the admission policy");
            let account = format!("'system:serviceaccount:{namespace}:vault-secrets-provider'");
            assert!(
                policy["spec"]["matchConditions"][0]["expression"]
                    .as_str()
                    .unwrap()
                    .contains(&account),
                "{policy}"
            );
        }
    }
    // Back on the defaults: the RBAC of secret sync is gone, and the access with it.
    assert_secrets_access(kube, &namespace, "patch", false).await;
    let history = run(&mut helm_at(&["history", RELEASE, "--output", "json"]));
    let history: Value = serde_json::from_str(&history).expect("history JSON");
    let statuses: Vec<&str> = history
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["status"].as_str().unwrap())
        .collect();
    assert_eq!(
        statuses,
        ["superseded", "superseded", "superseded", "deployed"]
    );

    run(&mut helm_at(&["uninstall", RELEASE]));
    wait_until(
        || async { labelled(kube).await.is_empty() },
        "nothing with the chart's labels after helm uninstall",
    )
    .await;
    let (_, secrets) = kube
        .request(
            "GET",
            &format!("/api/v1/namespaces/{namespace}/secrets"),
            None,
            "",
        )
        .await;
    assert_eq!(
        secrets["items"],
        json!([]),
        "helm's release records are gone too"
    );
}

/// Polls `done` (every 100 ms, up to a minute) until it holds.
async fn wait_until<F, Fut>(done: F, what: &str)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done().await {
        assert!(Instant::now() < deadline, "not after a minute: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
