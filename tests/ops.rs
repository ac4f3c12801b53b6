//! What an operator relies on, against the real provider process, real OpenBao and
//! the driver's own client: `/metrics` moves with Mounts and Vault calls and carries no
//! secret or unbounded label; `/healthz` and `/readyz` flip when the socket is gone or
//! (with `--readyz-vault`) Vault is down; the logs have one `mount` span per Mount;
//! and `vault-secrets-provider mount` renders a SecretProviderClass file locally.

mod support;

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::{Command, Output};

use serde_json::{Value, json};
use support::deployment::{Deployment, POD_NAMESPACE, POD_UID};
use support::flavour::prefix_attributes;
use support::openbao::OpenBao;
use support::provider::{Provider, v16_client};
use support::secrets::assert_clean;

fn provider(extra: &[&str]) -> Provider {
    Provider::start(&OpenBao::shared().addr, extra)
}

/// The samples of a Prometheus text exposition: `name{labels}` → value.
fn samples(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let (key, value) = l
                .rsplit_once(' ')
                .unwrap_or_else(|| panic!("bad line {l:?}"));
            (
                key.to_owned(),
                value
                    .parse()
                    .unwrap_or_else(|_| panic!("bad value in {l:?}")),
            )
        })
        .collect()
}

async fn scrape(provider: &Provider) -> BTreeMap<String, f64> {
    let (status, content_type, body) = provider.get("/metrics").await;
    assert_eq!(status, 200, "{body}");
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    samples(&body)
}

fn value(samples: &BTreeMap<String, f64>, key: &str) -> f64 {
    samples.get(key).copied().unwrap_or(0.0)
}

#[tokio::test]
async fn metrics_move_with_mounts_and_carry_no_secrets() {
    let d = Deployment::new("metrics").await;
    d.put("app", json!({"password": "metrics-secret-value"}))
        .await;
    let provider = provider(&[]);
    let before = scrape(&provider).await;
    assert_eq!(value(&before, "vsp_mounts_in_flight"), 0.0);
    assert!(
        before
            .keys()
            .any(|k| k.starts_with("vsp_build_info{version="))
    );

    let objects = "- objectName: password\n  secretPath: secret/data/app\n  secretKey: password\n";
    let client = v16_client();
    for _ in 0..2 {
        client
            .mount_fresh(&provider, &d.attributes(objects), &d.secrets())
            .0
            .expect_ok();
    }
    client
        .mount_fresh(
            &provider,
            &d.attributes(objects),
            &json!({"secretId": "00000000-wrong-secret-id"}).to_string(),
        )
        .0
        .expect_err("Unauthenticated", "refused the login");

    let after = scrape(&provider).await;
    let delta = |key: &str| value(&after, key) - value(&before, key);
    let ok = r#"{pod_namespace="team-a",result="success",code="ok"}"#;
    let refused = r#"{pod_namespace="team-a",result="failure",code="unauthenticated"}"#;
    assert_eq!(delta(&format!("vsp_mounts_total{ok}")), 2.0, "{after:#?}");
    assert_eq!(
        delta(&format!("vsp_mounts_total{refused}")),
        1.0,
        "{after:#?}"
    );
    assert_eq!(
        delta(r#"vsp_mount_duration_seconds_count{result="success"}"#),
        2.0
    );
    assert_eq!(
        delta(r#"vsp_mount_duration_seconds_count{result="failure"}"#),
        1.0
    );
    assert!(delta(r#"vsp_mount_duration_seconds_sum{result="success"}"#) > 0.0);
    assert_eq!(value(&after, "vsp_mounts_in_flight"), 0.0);
    // One login for two Mounts of one identity; the wrong secret ID is refused (HTTP 400).
    assert_eq!(
        delta(r#"vsp_vault_logins_total{method="approle",result="ok"}"#),
        1.0
    );
    assert_eq!(
        delta(r#"vsp_vault_logins_total{method="approle",result="refused"}"#),
        1.0
    );
    assert_eq!(
        delta(r#"vsp_vault_requests_total{operation="login",status="2xx"}"#),
        1.0
    );
    assert_eq!(
        delta(r#"vsp_vault_requests_total{operation="login",status="4xx"}"#),
        1.0
    );
    assert_eq!(
        delta(r#"vsp_vault_requests_total{operation="read",status="2xx"}"#),
        2.0
    );
    assert_eq!(
        delta(r#"vsp_vault_request_duration_seconds_count{operation="read"}"#),
        2.0
    );
    assert_eq!(delta(r#"vsp_token_cache_lookups_total{result="hit"}"#), 1.0);
    assert_eq!(
        delta(r#"vsp_token_cache_lookups_total{result="miss"}"#),
        2.0
    );
    assert!(value(&after, "vsp_token_cache_entries") >= 1.0);

    // Labels hold closed sets and the pod's namespace, nothing a pod owner controls
    // beyond it, and never a secret.
    let (_, _, text) = provider.get("/metrics").await;
    for needle in [
        &d.ns,
        &d.role_id,
        "app-0",
        POD_UID,
        "app-secrets",
        "secret/data",
        "password",
    ] {
        assert!(!text.contains(needle), "/metrics mentions {needle:?}");
    }
    assert_clean("/metrics", &text, &[&d.secret_id]);

    // OpenMetrics for scrapers that ask for it.
    let (status, content_type, body) = provider
        .get_with(
            "/metrics",
            &[("accept", "application/openmetrics-text; version=1.0.0")],
        )
        .await;
    assert_eq!(status, 200);
    assert!(
        content_type.starts_with("application/openmetrics-text"),
        "{content_type}"
    );
    assert!(body.ends_with("# EOF\n"));
}

#[tokio::test]
async fn healthz_and_readyz_follow_the_socket() {
    let provider = provider(&[]);
    assert_eq!(provider.get("/healthz").await.0, 200);
    let (status, _, body) = provider.get("/readyz").await;
    assert_eq!((status, body.as_str()), (200, "ok\n"));
    assert_eq!(provider.get("/nope").await.0, 404);

    // The driver finds providers by socket path: without it we are unreachable.
    std::fs::remove_file(provider.socket()).unwrap();
    let (status, _, body) = provider.get("/readyz").await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("vault.sock"), "{body}");
    let (status, _, body) = provider.get("/healthz").await;
    assert_eq!(status, 503, "{body}");
}

#[tokio::test]
async fn readyz_checks_vault_only_with_the_flag() {
    let mut private = OpenBao::start_private().await;
    let checked = Provider::start(&private.addr, &["--readyz-vault"]);
    let unchecked = Provider::start(&private.addr, &[]);
    assert_eq!(checked.get("/readyz").await.0, 200);
    assert_eq!(unchecked.get("/readyz").await.0, 200);

    private.stop();
    let (status, _, body) = checked.get("/readyz").await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body.contains("vault") && body.contains("cannot connect"),
        "{body}"
    );
    assert_eq!(unchecked.get("/readyz").await.0, 200);
    assert_eq!(
        checked.get("/healthz").await.0,
        200,
        "liveness ignores Vault"
    );

    let metrics = scrape(&checked).await;
    assert!(
        value(
            &metrics,
            r#"vsp_vault_requests_total{operation="health",status="2xx"}"#
        ) >= 1.0
    );
    assert!(
        value(
            &metrics,
            r#"vsp_vault_requests_total{operation="health",status="error"}"#
        ) >= 1.0
    );
}

/// The JSON log lines whose message is `message`.
fn events<'a>(lines: &'a [Value], message: &str) -> Vec<&'a Value> {
    lines.iter().filter(|l| l["message"] == message).collect()
}

#[tokio::test]
async fn json_logs_have_one_mount_span_per_mount() {
    let d = Deployment::new("logs").await;
    d.put(
        "app",
        json!({"a": "log-secret-value-a", "b": "log-secret-value-b"}),
    )
    .await;
    let provider = provider(&["--log-format", "json"]);
    let objects = "- objectName: a\n  secretPath: secret/data/app\n  secretKey: a\n- objectName: b\n  secretPath: secret/data/app\n  secretKey: b\n";
    let client = v16_client();
    client
        .mount_fresh(&provider, &d.attributes(objects), &d.secrets())
        .0
        .expect_ok();
    let missing = "- objectName: gone\n  secretPath: secret/data/app-missing\n";
    client
        .mount_fresh(&provider, &d.attributes(missing), &d.secrets())
        .0
        .expect_err("NotFound", "object \"gone\"");

    let log = provider.log();
    let lines: Vec<Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let started = events(&lines, "health and metrics endpoint listening");
    assert_eq!(started.len(), 1, "{log}");

    let ok = events(&lines, "mount succeeded");
    assert_eq!(ok.len(), 1, "one line per Mount:\n{log}");
    let ok = ok[0];
    assert_eq!(ok["level"], "INFO");
    assert_eq!(ok["result"], "ok");
    assert!(
        ok["duration_ms"].as_f64().is_some_and(|ms| ms > 0.0),
        "{ok}"
    );
    let span = &ok["span"];
    assert_eq!(span["name"], "mount", "{ok}");
    assert_eq!(span["pod_namespace"], POD_NAMESPACE);
    assert_eq!(span["pod_name"], "app-0");
    assert_eq!(span["pod_uid"], POD_UID);
    assert_eq!(span["spc"], "app-secrets");
    assert_eq!(span["objects"], 2, "{ok}");

    let failed = events(&lines, "mount failed");
    assert_eq!(failed.len(), 1, "{log}");
    let failed = failed[0];
    assert_eq!(failed["level"], "WARN");
    assert_eq!(failed["result"], "not_found");
    assert!(
        failed["error"].as_str().unwrap().contains("gone"),
        "{failed}"
    );
    assert_eq!(failed["span"]["objects"], 1, "{failed}");
    assert_eq!(failed["span"]["spc"], "app-secrets");

    // Nothing of the request beyond those names, even at trace level: not the
    // objects YAML, not the role ID (both are in the raw attributes).
    assert!(!log.contains("secretKey"), "attributes logged:\n{log}");
    assert!(!log.contains(&d.role_id), "attributes logged:\n{log}");
}

#[tokio::test]
async fn text_logs_name_the_pod_and_spc_of_each_mount() {
    let d = Deployment::new("textlog").await;
    d.put("app", json!({"k": "text-log-value"})).await;
    let provider = provider(&[]);
    let client = v16_client();
    client
        .mount_fresh(
            &provider,
            &d.attributes("- objectName: k\n  secretPath: secret/data/app\n  secretKey: k\n"),
            &d.secrets(),
        )
        .0
        .expect_ok();
    let log = provider.log();
    let line = log
        .lines()
        .find(|l| l.contains("mount succeeded"))
        .unwrap_or_else(|| panic!("no mount line:\n{log}"));
    for field in [
        "mount{",
        "pod_namespace=\"team-a\"",
        "pod_name=\"app-0\"",
        "spc=\"app-secrets\"",
        "objects=1}",
        "duration_ms=",
        "result=\"ok\"",
    ] {
        assert!(line.contains(field), "{field} missing from {line}");
    }

    // At --log-level warn only failures are logged, still naming the pod.
    let quiet = provider_with_level("warn");
    let missing = "- objectName: gone\n  secretPath: secret/data/app-missing\n";
    client
        .mount_fresh(&quiet, &d.attributes(missing), &d.secrets())
        .0
        .expect_err("NotFound", "object \"gone\"");
    let log = quiet.log();
    let line = log
        .lines()
        .find(|l| l.contains("mount failed"))
        .unwrap_or_else(|| panic!("no mount line:\n{log}"));
    assert!(line.contains("pod_name=\"app-0\""), "{line}");
    assert!(!log.contains("INFO"), "{log}");
}

fn provider_with_level(level: &str) -> Provider {
    provider(&["--log-level", level])
}

fn run_mount(args: &[&str]) -> Output {
    let output = Command::new(env!("CARGO_BIN_EXE_vault-secrets-provider"))
        .arg("mount")
        .args(args)
        .env_remove("VAULT_ADDR")
        .env_remove("VAULT_NAMESPACE")
        .output()
        .expect("run vault-secrets-provider mount");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_clean("mount's standard output", &stdout, &[]);
    assert_clean("mount's standard error", &stderr, &[]);
    output
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[tokio::test]
async fn mount_command_renders_an_spc_file_into_a_directory() {
    let d = Deployment::new("local").await;
    d.put(
        "app",
        json!({"username": "local-user-name", "password": "local-pass-word"}),
    )
    .await;
    // (On HashiCorp Vault, the namespace becomes path prefixes: support::flavour.)
    let parameters = prefix_attributes(&json!({
        "vaultNamespace": d.ns,
        "roleId": d.role_id,
        "objects": "- objectName: password\n  secretPath: secret/data/app\n  secretKey: password\n  filePermission: 0400\n\
                    - objectName: config/app.json\n  secretPath: secret/data/app\n  render: data\n",
    }));
    let work = tempfile::tempdir().unwrap();
    let spc = work.path().join("spc.yaml");
    std::fs::write(
        &spc,
        format!(
            r#"# A Deployment may live in the same file.
apiVersion: apps/v1
kind: Deployment
metadata: {{ name: app }}
---
apiVersion: secrets-store.csi.x-k8s.io/v1
kind: SecretProviderClass
metadata:
  name: app-secrets
spec:
  provider: vault
  parameters: {parameters}
"#
        ),
    )
    .unwrap();
    let secret_id = work.path().join("secret-id");
    std::fs::write(&secret_id, format!("{}\n", d.secret_id)).unwrap();
    let out = work.path().join("out");
    let spc_arg = spc.to_str().unwrap();
    let out_arg = out.to_str().unwrap();
    let addr = &d.bao.addr;
    let base = [
        spc_arg,
        "--vault-addr",
        addr,
        "--secret-id-file",
        secret_id.to_str().unwrap(),
        "--output-dir",
        out_arg,
    ];

    let output = run_mount(&base);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        std::fs::read_to_string(out.join("password")).unwrap(),
        "local-pass-word"
    );
    let data: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("config/app.json")).unwrap())
            .unwrap();
    assert_eq!(data["username"], "local-user-name");
    assert_eq!(mode(&out.join("password")), 0o400);
    assert_eq!(mode(&out.join("config/app.json")), 0o644);
    assert_eq!(mode(&out), 0o700);
    // The summary: names, modes, sizes, versions; never values.
    assert!(stdout.contains("app-secrets"), "{stdout}");
    let line = stdout
        .lines()
        .find(|l| l.contains("password"))
        .expect("password line");
    assert!(line.contains("0400") && line.contains(" 15 "), "{line}");
    assert!(stdout.contains("config/app.json"), "{stdout}");

    // An output directory in use is not overwritten unless asked.
    let output = run_mount(&base);
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("--force"));
    let mut forced = base.to_vec();
    forced.push("--force");
    assert!(run_mount(&forced).status.success());

    // A failed Mount says why, as a pod event would, and leaves nothing behind.
    std::fs::write(&secret_id, "00000000-0000-0000-0000-000000000000").unwrap();
    let failed_out = work.path().join("failed");
    let mut failing = base.to_vec();
    failing[6] = failed_out.to_str().unwrap();
    let output = run_mount(&failing);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("Unauthenticated") && stderr.contains("secretId"),
        "{stderr}"
    );
    assert!(!failed_out.exists());
    let left: Vec<String> = std::fs::read_dir(work.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(left.is_empty(), "temporary directories left: {left:?}");

    // A bad file is explained before anything else happens.
    std::fs::write(&spc, "kind: SecretProviderClass\nmetadata: {name: x}\nspec:\n  provider: vault\n  parameters:\n    vaultSkipTLSVerify: true\n").unwrap();
    let output = run_mount(&base);
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("must be a string"));
}
