//! The fast tier: the provider core — the same `Provider` `serve` builds —
//! driven in-process against a fake Vault (`fast/fake_vault.rs`), one Mount
//! call at a time. No socket to the driver, no binary, no OpenBao: each test
//! runs in milliseconds and counts exactly which requests reached "Vault".
//!
//! What is tested here is orchestration: which requests a Mount makes and
//! which answers it reuses or shares. Whether those requests are right for a
//! real Vault is for the integration suites, against real OpenBao.
//!
//! Time. The lease and token caches run on tokio's clock, so a test moves
//! time forward with [`travel`]: the clock is paused, advanced and resumed
//! between Mounts, with nothing in flight. The tests do not start paused
//! (`start_paused = true`), although that works today: a paused runtime
//! that finds no task ready jumps its clock to the next timer, and during a
//! Mount that is reqwest's request timeout. Tokio 1.54 does not jump when
//! the I/O it just polled woke a task, and Linux usually delivers loopback
//! data within the send, so 50 Mounts on a paused runtime saw no jump; but
//! a reply the kernel has not delivered yet when the runtime polls (softirq
//! work deferred under load) would time a request out. With the clock
//! running that is only a short wait, and each `travel` leaves tens of
//! seconds of margin to the next deadline for the real time a Mount takes.
//! Concurrency is ordered with the fake's gates, never with sleeps.

#[path = "fast/fake_vault.rs"]
mod fake_vault;

use std::collections::BTreeMap;
use std::time::Duration;

use fake_vault::{FakeVault, ROLE_ID, SECRET_ID, Secret, kv2};
use serde_json::json;
use tonic::{Code, Status};
use vault_secrets_provider::proto::{MountRequest, MountResponse};
use vault_secrets_provider::provider::{MountError, Provider};
use vault_secrets_provider::request::{Defaults, TlsSettings};
use vault_secrets_provider::vault::{Vault, VaultConfig, VaultError};
use vault_secrets_provider::version::Versioner;

/// A provider as `serve` builds it (default flags), pointed at `fake`.
fn provider(fake: &FakeVault) -> Provider {
    let vault = Vault::new(VaultConfig {
        request_timeout: Duration::from_secs(10),
        token_cache_size: 1000,
    });
    let defaults = Defaults {
        vault_address: fake.url(),
        vault_namespace: None,
        tls: TlsSettings::default(),
        allowed_vault_addrs: Default::default(),
        spc_tls_dir: None,
    };
    Provider::new(vault, Versioner::ephemeral(), defaults)
}

/// The driver's request for pod `pod_uid` with this `objects` YAML, logging
/// in with the fake's AppRole (the same identity for every pod).
fn request(pod_uid: &str, objects: &str) -> MountRequest {
    let attributes = json!({
        "roleId": ROLE_ID,
        "objects": objects,
        "csi.storage.k8s.io/pod.name": format!("app-{pod_uid}"),
        "csi.storage.k8s.io/pod.namespace": "default",
        "csi.storage.k8s.io/pod.uid": pod_uid,
        "csi.storage.k8s.io/serviceAccount.name": "default",
    });
    MountRequest {
        attributes: attributes.to_string(),
        secrets: json!({ "secretId": SECRET_ID }).to_string(),
        target_path: "/fast-tier/no/volume".into(),
        permission: "420".into(),
        current_object_version: Vec::new(),
    }
}

/// File path → contents.
fn files(response: &MountResponse) -> BTreeMap<String, String> {
    response
        .files
        .iter()
        .map(|f| {
            let text = String::from_utf8(f.contents.clone()).expect("text file");
            (f.path.clone(), text)
        })
        .collect()
}

/// Object → version.
fn versions(response: &MountResponse) -> BTreeMap<String, String> {
    response
        .object_version
        .iter()
        .map(|v| (v.id.clone(), v.version.clone()))
        .collect()
}

/// Moves tokio's clock forward by `by`, with nothing in flight (see the
/// module comment for why the clock is paused only for the jump).
async fn travel(by: Duration) {
    tokio::time::pause();
    tokio::time::advance(by).await;
    tokio::time::resume();
}

#[tokio::test]
async fn objects_sharing_a_source_share_one_request() {
    let fake = FakeVault::start().await;
    fake.put(
        "secret/data/app",
        kv2(json!({"user": "u", "password": "p"})),
    );
    fake.put("secret/data/other", kv2(json!({"k": "v"})));
    fake.put("pki/issue/web", Secret::Certificate { ttl: 3600 });
    let provider = provider(&fake);
    // A source is (namespace, path, method, secretArgs): `method: GET` is
    // the default, and secretArgs compare as data, not as text.
    let objects = r#"
- {objectName: user, secretPath: secret/data/app, secretKey: user}
- {objectName: password, secretPath: secret/data/app, secretKey: password, method: GET}
- {objectName: other, secretPath: secret/data/other, secretKey: k}
- {objectName: team-user, secretPath: secret/data/app, secretKey: user, vaultNamespace: team-a}
- {objectName: web.crt, secretPath: pki/issue/web, method: PUT, secretKey: certificate,
   secretArgs: {common_name: web, ttl: 1h}}
- {objectName: web.key, secretPath: pki/issue/web, method: PUT, secretKey: private_key,
   secretArgs: {ttl: 1h, common_name: web}}
- {objectName: api.crt, secretPath: pki/issue/web, method: PUT, secretKey: certificate,
   secretArgs: {common_name: api, ttl: 1h}}
"#;
    let response = provider.mount(&request("pod-1", objects)).await.unwrap();

    let got = files(&response);
    assert_eq!(got["user"], "u");
    assert_eq!(got["password"], "p");
    assert_eq!(got["other"], "v");
    assert_eq!(got["team-user"], "u");
    // The certificate and its key come from one issue; the other one is its own.
    let serial = got["web.crt"].trim_start_matches("CERT-");
    assert_eq!(got["web.key"], format!("KEY-{serial}"));
    assert_ne!(got["api.crt"], got["web.crt"]);

    let app: Vec<_> = fake
        .seen()
        .into_iter()
        .filter(|s| s.path == "secret/data/app")
        .map(|s| s.namespace)
        .collect();
    assert_eq!(app.len(), 2, "one read per namespace: {app:?}");
    assert!(app.contains(&None) && app.contains(&Some("team-a".into())));
    assert_eq!(fake.count("secret/data/other"), 1);
    assert_eq!(fake.count("pki/issue/web"), 2, "one issue per secretArgs");
    assert_eq!(fake.logins(), 1);
    assert_eq!(fake.seen().len(), 1 + 2 + 1 + 2, "nothing else was sent");
}

#[tokio::test]
async fn a_shared_lease_renews_at_the_smallest_renewal_percent_of_its_objects() {
    let fake = FakeVault::start().await;
    fake.put(
        "database/creds/app",
        Secret::Lease {
            duration: 1000,
            renewable: true,
        },
    );
    let provider = provider(&fake);
    let objects = r#"
- {objectName: username, secretPath: database/creds/app, secretKey: username, renewalPercent: 80}
- {objectName: password, secretPath: database/creds/app, secretKey: password, renewalPercent: 20}
"#;
    let request = request("pod-1", objects);
    let mount = || provider.mount(&request);
    let first = mount().await.unwrap();
    assert_eq!(fake.count("database/creds/app"), 1);

    // 150 s into a 1000 s lease: before 20 %, the pod's copy is reused as is.
    travel(Duration::from_secs(150)).await;
    let reused = mount().await.unwrap();
    assert_eq!(files(&reused), files(&first));
    assert_eq!(versions(&reused), versions(&first));
    assert_eq!(fake.count("database/creds/app"), 1);
    assert_eq!(fake.count("sys/leases/renew"), 0);

    // 250 s: past 20 % (though not 80 %), the lease is renewed, not replaced.
    travel(Duration::from_secs(100)).await;
    let renewed = mount().await.unwrap();
    assert_eq!(
        files(&renewed),
        files(&first),
        "renewal keeps the credentials"
    );
    assert_eq!(versions(&renewed), versions(&first));
    let renewals: Vec<_> = fake
        .seen()
        .into_iter()
        .filter(|s| s.path == "sys/leases/renew")
        .collect();
    assert_eq!(renewals.len(), 1, "{renewals:?}");
    let lease = format!(
        "database/creds/app/{}",
        files(&first)["username"].trim_start_matches("user-")
    );
    assert_eq!(
        renewals[0].body,
        json!({"lease_id": lease, "increment": 1000})
    );
    assert_eq!(fake.count("database/creds/app"), 1);

    // 150 s after the renewal: again before 20 % of the 1000 s granted.
    travel(Duration::from_secs(150)).await;
    mount().await.unwrap();
    assert_eq!(fake.count("sys/leases/renew"), 1);
    assert_eq!(fake.count("database/creds/app"), 1);
    assert_eq!(fake.logins(), 1);
}

#[tokio::test]
async fn a_lease_that_cannot_be_renewed_is_replaced_at_its_renewal_percent() {
    let fake = FakeVault::start().await;
    fake.put(
        "database/creds/app",
        Secret::Lease {
            duration: 1000,
            renewable: false,
        },
    );
    let provider = provider(&fake);
    let objects = "- {objectName: username, secretPath: database/creds/app, secretKey: username, renewalPercent: 50}\n";
    let request = request("pod-1", objects);
    let mount = || provider.mount(&request);
    let first = mount().await.unwrap();
    travel(Duration::from_secs(450)).await;
    assert_eq!(versions(&mount().await.unwrap()), versions(&first));
    assert_eq!(fake.count("database/creds/app"), 1);

    travel(Duration::from_secs(100)).await;
    let replaced = mount().await.unwrap();
    assert_ne!(files(&replaced)["username"], files(&first)["username"]);
    assert_ne!(
        versions(&replaced),
        versions(&first),
        "new content, new version"
    );
    assert_eq!(fake.count("database/creds/app"), 2);
    assert_eq!(fake.count("sys/leases/renew"), 0);
}

#[tokio::test]
async fn a_revoked_cached_token_costs_one_login_and_the_mount_succeeds() {
    let fake = FakeVault::start().await;
    fake.put("secret/data/app", kv2(json!({"k": "v"})));
    let provider = provider(&fake);
    let objects = "- {objectName: k, secretPath: secret/data/app, secretKey: k}\n";
    let request = request("pod-1", objects);
    let mount = || provider.mount(&request);
    mount().await.unwrap();
    assert_eq!(fake.logins(), 1);

    fake.revoke_tokens();
    let response = mount().await.expect("the Mount logs in again and succeeds");
    assert_eq!(files(&response)["k"], "v");
    assert_eq!(fake.logins(), 2, "exactly one more login");
    let reads: Vec<_> = fake
        .seen()
        .into_iter()
        .filter(|s| s.path == "secret/data/app")
        .collect();
    let statuses: Vec<u16> = reads.iter().map(|s| s.status).collect();
    assert_eq!(statuses, [200, 403, 200]);
    assert_eq!(reads[0].token, reads[1].token, "the cached token was tried");
    assert_ne!(reads[1].token, reads[2].token, "then a new one");

    // The new token is the cached one now.
    mount().await.unwrap();
    assert_eq!(fake.logins(), 2);
    assert_eq!(fake.count("secret/data/app"), 4);
}

#[tokio::test]
async fn a_fresh_token_that_is_refused_fails_the_mount_without_another_login() {
    let fake = FakeVault::start().await;
    fake.put("secret/data/app", kv2(json!({"k": "v"})));
    let provider = provider(&fake);
    let objects = "- {objectName: k, secretPath: secret/data/app, secretKey: k}\n";
    // A token just issued that gets a 403 means the policy says no: logging
    // in again would only repeat the answer.
    fake.fail_next("secret/data/app", 1, 403);
    let err = provider
        .mount(&request("pod-1", objects))
        .await
        .expect_err("403");
    assert!(
        matches!(&err, MountError::Read { object, source: VaultError::PermissionDenied(_) } if object == "k"),
        "{err:?}"
    );
    assert_eq!(err.code(), Code::PermissionDenied);
    assert_eq!((fake.logins(), fake.count("secret/data/app")), (1, 1));
}

#[tokio::test]
async fn concurrent_pods_share_a_kv_read_but_never_a_lease_or_a_certificate() {
    let fake = FakeVault::start().await;
    fake.put("secret/data/app", kv2(json!({"k": "v"})));
    fake.put(
        "database/creds/app",
        Secret::Lease {
            duration: 3600,
            renewable: true,
        },
    );
    fake.put("pki/issue/web", Secret::Certificate { ttl: 3600 });
    let provider = provider(&fake);
    // Cache the identity's token first: then a Mount reaches the single
    // flight without any I/O to Vault.
    provider
        .mount(&request(
            "pod-0",
            "- {objectName: k, secretPath: secret/data/app}\n",
        ))
        .await
        .unwrap();

    // Pod a's read is held at the fake; pod b's Mount, polled once, joins
    // it as a follower; then the read is let through.
    for (path, objects) in [
        (
            "secret/data/app",
            "- {objectName: k, secretPath: secret/data/app, secretKey: k}\n",
        ),
        (
            "database/creds/app",
            "- {objectName: u, secretPath: database/creds/app, secretKey: username}\n",
        ),
    ] {
        let before = fake.count(path);
        fake.hold(path);
        let (req_a, req_b) = (request("pod-a", objects), request("pod-b", objects));
        let a = provider.mount(&req_a);
        let b = provider.mount(&req_b);
        tokio::pin!(a, b);
        tokio::select! {
            r = &mut a => panic!("pod a finished while its read was held: {r:?}"),
            () = fake.held(path, 1) => {}
        }
        // Pod b's request is parsed off the async workers first; then it
        // joins pod a's read.
        tokio::select! {
            r = &mut b => panic!("pod b finished while the read was held: {r:?}"),
            () = async {
                while provider.reads_following() == 0 {
                    tokio::task::yield_now().await;
                }
            } => {}
        }
        assert_eq!(fake.count(path), before + 1, "pod b sent nothing yet");
        fake.release(path);
        let (a, b) = tokio::join!(a, b);
        let (a, b) = (files(&a.unwrap()), files(&b.unwrap()));
        if path == "secret/data/app" {
            assert_eq!(fake.count(path), before + 1, "one read for both pods");
            assert_eq!((a["k"].as_str(), b["k"].as_str()), ("v", "v"));
        } else {
            assert_eq!(fake.count(path), before + 2, "pod b read its own lease");
            assert_ne!(a["u"], b["u"], "each pod has its own credentials");
        }
    }

    // Issuing is a write: never shared, even when both are in flight at once.
    fake.hold("pki/issue/web");
    let objects = "- {objectName: crt, secretPath: pki/issue/web, method: PUT, secretKey: certificate, secretArgs: {common_name: web}}\n";
    let (req_a, req_b) = (request("pod-a", objects), request("pod-b", objects));
    let a = provider.mount(&req_a);
    let b = provider.mount(&req_b);
    tokio::pin!(a, b);
    tokio::select! {
        r = &mut a => panic!("pod a finished while its issue was held: {r:?}"),
        r = &mut b => panic!("pod b finished while its issue was held: {r:?}"),
        () = fake.held("pki/issue/web", 2) => {}
    }
    fake.release("pki/issue/web");
    let (a, b) = tokio::join!(a, b);
    assert_ne!(files(&a.unwrap())["crt"], files(&b.unwrap())["crt"]);
    assert_eq!(fake.count("pki/issue/web"), 2);
    assert_eq!(fake.logins(), 1);
}

#[tokio::test]
async fn one_failing_source_fails_the_whole_mount() {
    let fake = FakeVault::start().await;
    fake.put("secret/data/app", kv2(json!({"k": "v"})));
    let provider = provider(&fake);
    let objects = r#"
- {objectName: present, secretPath: secret/data/app, secretKey: k}
- {objectName: missing, secretPath: secret/data/gone, secretKey: k}
- {objectName: also-present, secretPath: secret/data/app, secretKey: k}
"#;
    let err = provider
        .mount(&request("pod-1", objects))
        .await
        .expect_err("one object cannot be read");
    assert!(
        matches!(&err, MountError::Read { object, source: VaultError::NotFound(_) } if object == "missing"),
        "{err:?}"
    );
    assert_eq!(err.code(), Code::NotFound);
    // A key the response lacks fails it too, after the reads.
    let objects = "- {objectName: a, secretPath: secret/data/app, secretKey: k}\n- {objectName: b, secretPath: secret/data/app, secretKey: nope}\n";
    let err = provider
        .mount(&request("pod-1", objects))
        .await
        .expect_err("no such key");
    assert!(matches!(err, MountError::Render(_)), "{err:?}");
}

#[tokio::test]
async fn one_token_serves_every_mount_and_is_renewed_rather_than_replaced() {
    let fake = FakeVault::start().await;
    fake.set_token_ttl(1000);
    fake.put("secret/data/app", kv2(json!({"k": "v"})));
    let provider = provider(&fake);
    let objects = "- {objectName: k, secretPath: secret/data/app, secretKey: k}\n";
    // Concurrent first Mounts share one login.
    let requests: Vec<_> = (0..5)
        .map(|i| request(&format!("pod-{i}"), objects))
        .collect();
    for result in futures::future::join_all(requests.iter().map(|r| provider.mount(r))).await {
        result.unwrap();
    }
    assert_eq!(fake.logins(), 1);

    // At 60–70 % of its TTL the token is renewed (renew-self), not replaced.
    travel(Duration::from_secs(750)).await;
    provider.mount(&requests[0]).await.unwrap();
    assert_eq!(fake.count("auth/token/renew-self"), 1);
    assert_eq!(fake.logins(), 1);
    let tokens: std::collections::BTreeSet<_> = fake
        .seen()
        .into_iter()
        .filter(|s| s.path == "secret/data/app")
        .map(|s| s.token)
        .collect();
    assert_eq!(tokens.len(), 1, "every read used the one token");
}

/// A Mount is charged for every response it uses, also one it did not read
/// itself (another Mount's read it joined, or a response kept for its pod):
/// whether it fits its byte budget does not depend on who else is mounting.
#[tokio::test]
async fn a_shared_response_is_charged_to_every_mount_that_uses_it() {
    let fake = FakeVault::start().await;
    let pad = "x".repeat(20_000);
    fake.put("secret/data/s", kv2(json!({"k": "small", "pad": pad})));
    fake.put("secret/data/t", kv2(json!({"k": "small", "pad": pad})));
    // Room for one 20 KB answer, not two.
    let provider = provider(&fake).with_mount_budget(30_000, 30_000);
    let one = "- {objectName: s, secretPath: secret/data/s, secretKey: k}\n";
    let two = "- {objectName: s, secretPath: secret/data/s, secretKey: k}\n\
               - {objectName: t, secretPath: secret/data/t, secretKey: k}\n";
    provider.mount(&request("pod-0", one)).await.unwrap();
    let alone = provider.mount(&request("pod-1", two)).await.unwrap_err();
    assert_eq!(Status::from(alone).code(), Code::ResourceExhausted);

    // Pod b joins pod a's read of s (held at the fake) and reads t itself.
    fake.hold("secret/data/s");
    let (req_a, req_b) = (request("pod-a", one), request("pod-b", two));
    let a = provider.mount(&req_a);
    let b = provider.mount(&req_b);
    tokio::pin!(a, b);
    tokio::select! {
        r = &mut a => panic!("pod a finished while its read was held: {r:?}"),
        () = fake.held("secret/data/s", 1) => {}
    }
    tokio::select! {
        r = &mut b => panic!("pod b finished while the read was held: {r:?}"),
        () = async {
            while provider.reads_following() == 0 {
                tokio::task::yield_now().await;
            }
        } => {}
    }
    fake.release("secret/data/s");
    let (a, b) = tokio::join!(a, b);
    assert_eq!(files(&a.unwrap())["s"], "small");
    let err = b.expect_err("pod b holds both answers: over its budget");
    assert_eq!(Status::from(err).code(), Code::ResourceExhausted);
}
