//! Fair share between tenants (pod namespaces) on one node's provider, against
//! the real provider process, the driver's own client and the real OpenBao:
//!
//! - a slow Vault used by namespace A holds at most A's share of the requests
//!   in flight, and namespace B's Mount completes while A's are still stuck;
//! - namespace A flooding the token cache (failed logins, or more identities
//!   than its share) does not evict namespace B's token;
//! - no answer from a hostile Vault makes the provider panic: a clean gRPC
//!   error, and the provider keeps serving;
//! - object versions are keyed per pod namespace and survive a restart.
//!
//! Where a real Vault cannot be made to misbehave, a hostile test server of
//! our own on loopback plays tenant A's Vault. Each test's provider is started
//! with `--vault-addr` pointing at that server (or at the fault proxy in front
//! of OpenBao), so the tests hold whatever the provider allows as SPC
//! `vaultAddress`.

mod support;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use serde_json::{Value, json};
use support::deployment::Deployment;
use support::faults::{Fault, FaultProxy};
use support::openbao::{OpenBao, unique};
use support::provider::{Provider, Volume, driver_clients};

const OBJECTS: &str = "- objectName: k\n  secretPath: secret/data/app\n  secretKey: k\n";

/// `attributes` as the driver sends them for a pod in `pod_namespace`.
fn in_namespace(mut attributes: Value, pod_namespace: &str, pod: usize) -> Value {
    attributes["csi.storage.k8s.io/pod.namespace"] = json!(pod_namespace);
    attributes["csi.storage.k8s.io/pod.name"] = json!(format!("pod-{pod}"));
    attributes["csi.storage.k8s.io/pod.uid"] = json!(format!("0b7e2f8a-1111-2222-3333-{pod:012}"));
    attributes
}

/// Namespace A's Mounts all log in through a "Vault" that never answers (the
/// fault proxy in front of OpenBao holds every request for A's auth mount);
/// there are more of them than the provider's global bound of 64 requests in
/// flight. Namespace B's Mount against the real OpenBao still completes, while
/// A's are stuck and A holds exactly its share (16) of the requests.
#[tokio::test(flavor = "multi_thread")]
async fn a_slow_vault_of_one_namespace_does_not_delay_another() {
    const A_MOUNTS: usize = 80;
    let b = Deployment::new("fair-b").await;
    b.put("app", json!({"k": "b-value"})).await;
    // Tenant A's hostile slow Vault: every request for A's auth mount is held.
    let proxy = FaultProxy::start(&OpenBao::shared().addr);
    proxy.inject_on(
        "auth/hostile-a/",
        Fault::Delay(Duration::from_secs(3600)),
        10 * A_MOUNTS,
    );
    let provider = Arc::new(Provider::start(
        &proxy.url(),
        &["--vault-request-timeout", "600s", "--mount-timeout", "600s"],
    ));
    let client = driver_clients().pop().unwrap();
    let scratch = Volume::new();
    let requests: Vec<Value> = (0..A_MOUNTS)
        .map(|i| {
            // One identity per Mount, so no two share a login.
            let attributes = in_namespace(
                json!({
                    "roleId": format!("hostile-role-{i}"),
                    "vaultAuthMountPath": "hostile-a",
                    "objects": OBJECTS,
                }),
                "tenant-a",
                i,
            );
            json!({"attributes": attributes.to_string(), "secrets": r#"{"secretId":"x"}"#,
                   "targetPath": scratch.path(), "permission": "420"})
        })
        .collect();
    let storm = {
        let (provider, client) = (provider.clone(), client.clone());
        std::thread::spawn(move || client.storm(&provider, &requests, A_MOUNTS))
    };
    // Every A Mount is inside the provider, and A's share is used up.
    let deadline = Instant::now() + Duration::from_secs(60);
    while provider.metric("vsp_mounts_in_flight").await < A_MOUNTS as f64
        || proxy.count("auth/hostile-a/") < 16
    {
        assert!(
            Instant::now() < deadline,
            "A's Mounts did not arrive: {} logins seen",
            proxy.count("auth/hostile-a/")
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let volume = Volume::new();
    let attributes = in_namespace(b.attributes(OBJECTS), "tenant-b", 1000);
    client
        .with_timeout("60s")
        .mount(&provider, &attributes, &b.secrets(), volume.path())
        .expect_ok();
    assert_eq!(volume.read("k"), "b-value");
    assert!(
        !storm.is_finished(),
        "B completed while A's Mounts are still stuck"
    );
    assert_eq!(
        proxy.count("auth/hostile-a/"),
        16,
        "A has exactly its share of requests in flight"
    );
    // Unstick A: the hostile server goes away, A's Mounts fail.
    drop(proxy);
    let results = storm.join().unwrap();
    assert_eq!(results.len(), A_MOUNTS);
    assert!(results.iter().all(|r| !r.ok));
}

/// With a token cache of 8 (2 per namespace), namespace A floods it with 50
/// identities whose logins fail and 10 whose logins succeed (more than the
/// whole cache); namespace B's
/// token survives: B's next Mount needs no login (OpenBao counts the tokens
/// in B's namespace; the provider counts successful logins).
#[tokio::test]
async fn token_cache_flooding_by_one_namespace_keeps_another_namespaces_token() {
    let b = Deployment::new("flood-b").await;
    b.put("app", json!({"k": "b-value"})).await;
    let a = Deployment::new("flood-a").await;
    a.put("app", json!({"k": "a-value"})).await;
    let mut a_identities = Vec::new();
    for i in 0..10 {
        a_identities.push(
            a.bao
                .approle(
                    &a.ns,
                    "approle",
                    &format!("app-{i}"),
                    &["app-read"],
                    json!({}),
                )
                .await,
        );
    }
    let provider = Provider::start(&b.bao.addr, &["--token-cache-size", "8"]);
    let client = driver_clients().pop().unwrap();
    let b_attributes = in_namespace(b.attributes(OBJECTS), "tenant-b", 0);
    let volume = Volume::new();
    client
        .mount(&provider, &b_attributes, &b.secrets(), volume.path())
        .expect_ok();
    assert_eq!(b.token_count().await, 1);

    // Failed logins: unknown role IDs in A's namespace.
    let scratch = Volume::new();
    let failing: Vec<Value> = (0..50)
        .map(|i| {
            let mut attributes = in_namespace(a.attributes(OBJECTS), "tenant-a", i);
            attributes["roleId"] = json!(format!("no-such-role-{i}"));
            json!({"attributes": attributes.to_string(), "secrets": a.secrets(),
                   "targetPath": scratch.path(), "permission": "420"})
        })
        .collect();
    for result in client.storm(&provider, &failing, 8) {
        result.expect_err("Unauthenticated", "refused");
    }
    // Successful logins: more A identities than A's share of the cache.
    for (i, (role_id, secret_id)) in a_identities.iter().enumerate() {
        let mut attributes = in_namespace(a.attributes(OBJECTS), "tenant-a", 100 + i);
        attributes["roleId"] = json!(role_id);
        let volume = Volume::new();
        client
            .mount(
                &provider,
                &attributes,
                &json!({ "secretId": secret_id }).to_string(),
                volume.path(),
            )
            .expect_ok();
    }
    assert_eq!(
        provider
            .metric(r#"vsp_vault_logins_total{method="approle",result="ok"}"#)
            .await,
        11.0
    );

    client
        .mount(&provider, &b_attributes, &b.secrets(), volume.path())
        .expect_ok();
    assert_eq!(b.token_count().await, 1, "B's token was kept: no new login");
    assert_eq!(
        provider
            .metric(r#"vsp_vault_logins_total{method="approle",result="ok"}"#)
            .await,
        11.0
    );
}

/// What the hostile test server answers: (status, body) for a path.
type Answer = Arc<dyn Fn(&str) -> (u16, String) + Send + Sync>;

/// A hostile test "Vault" of our own on loopback: answers every request with
/// whatever the test says, however malformed. Stops when dropped.
struct HostileVault {
    addr: SocketAddr,
    requests: Arc<AtomicUsize>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl HostileVault {
    fn start(answer: impl Fn(&str) -> (u16, String) + Send + Sync + 'static) -> HostileVault {
        let answer: Answer = Arc::new(answer);
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("addr");
        let requests = Arc::new(AtomicUsize::new(0));
        let counted = requests.clone();
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                loop {
                    let stream = tokio::select! {
                        _ = &mut stopped => break,
                        accepted = listener.accept() => match accepted {
                            Ok((stream, _)) => stream,
                            Err(_) => continue,
                        },
                    };
                    let answer = answer.clone();
                    let counted = counted.clone();
                    tokio::spawn(async move {
                        let service = hyper::service::service_fn(
                            move |request: hyper::Request<hyper::body::Incoming>| {
                                counted.fetch_add(1, Ordering::SeqCst);
                                let (status, body) =
                                    answer(request.uri().path().trim_start_matches("/v1/"));
                                async move {
                                    Ok::<_, Infallible>(
                                        hyper::Response::builder()
                                            .status(status)
                                            .header("content-type", "application/json")
                                            .body(Full::new(Bytes::from(body)))
                                            .expect("response"),
                                    )
                                }
                            },
                        );
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                            .await;
                    });
                }
            });
        });
        HostileVault {
            addr,
            requests,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for HostileVault {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn login_answer(auth: Value) -> String {
    json!({ "request_id": "1", "lease_id": "", "renewable": false, "lease_duration": 0,
            "data": null, "wrap_info": null, "warnings": null, "auth": auth })
    .to_string()
}

fn auth(token: &str, lease_duration: Value) -> Value {
    json!({ "client_token": token, "accessor": "acc", "policies": ["default"],
            "token_policies": ["default"], "metadata": null, "lease_duration": lease_duration,
            "renewable": true, "entity_id": "", "token_type": "service", "orphan": true })
}

/// One hostile case: what it is, the login answer, the read answer, and the
/// gRPC code and message part expected (`None`: the Mount succeeds).
type Case = (
    &'static str,
    String,
    String,
    Option<(&'static str, &'static str)>,
);

/// Malformed answers to a login, and answers whose numbers overflow: each
/// Mount gets a clean gRPC error (or succeeds), the provider never panics,
/// and it keeps answering (`/readyz` calls its gRPC `Version` over the socket).
#[tokio::test]
async fn hostile_answers_never_panic_the_provider() {
    let huge = json!(u64::MAX);
    let kv = |lease: Value| {
        json!({ "lease_id": "secret/creds/x", "lease_duration": lease, "renewable": true,
                "data": { "data": { "k": "v" } } })
        .to_string()
    };
    let certificate = json!({ "lease_id": "", "lease_duration": 0, "renewable": false,
        "data": { "certificate": "c", "expiration": u64::MAX, "not_before": 0 } })
    .to_string();
    let cases: Vec<Case> = vec![
        (
            "token with a newline",
            login_answer(auth("a\nb", json!(60))),
            kv(json!(60)),
            Some(("Internal", "visible ASCII")),
        ),
        (
            "token with a space",
            login_answer(auth("a b", json!(60))),
            kv(json!(60)),
            Some(("Internal", "visible ASCII")),
        ),
        (
            "token too long",
            login_answer(auth(&"a".repeat(10_000), json!(60))),
            kv(json!(60)),
            Some(("Internal", "longer than")),
        ),
        (
            "not JSON",
            "<html>hello</html>".to_owned(),
            kv(json!(60)),
            Some(("Internal", "login")),
        ),
        (
            "auth null",
            login_answer(Value::Null),
            kv(json!(60)),
            Some(("Internal", "login")),
        ),
        (
            "negative lease",
            login_answer(auth("hvs.x", json!(-5))),
            kv(json!(60)),
            Some(("Internal", "login")),
        ),
        (
            "float lease",
            login_answer(auth("hvs.x", json!(1.5))),
            kv(json!(60)),
            Some(("Internal", "login")),
        ),
        (
            "huge lease on the token and the secret",
            login_answer(auth("hvs.x", huge.clone())),
            kv(huge.clone()),
            None,
        ),
        (
            "huge certificate expiration",
            login_answer(auth("hvs.x", json!(60))),
            certificate,
            None,
        ),
    ];
    let client = driver_clients().pop().unwrap();
    for (what, login, read, expected) in cases {
        let login = login.clone();
        let hostile = HostileVault::start(move |path| {
            if path.contains("/login") {
                (200, login.clone())
            } else {
                (200, read.clone())
            }
        });
        let provider = Provider::start(&hostile.url(), &[]);
        let objects = if what.contains("certificate") {
            "- objectName: k\n  secretPath: pki/issue/x\n  secretKey: certificate\n"
        } else {
            OBJECTS
        };
        let attributes = in_namespace(
            json!({ "roleId": unique("r"), "objects": objects }),
            "tenant-a",
            1,
        );
        let volume = Volume::new();
        // Twice: the second Mount takes the cached token and lease paths.
        for _ in 0..2 {
            let result = client.mount(&provider, &attributes, r#"{"secretId":"s"}"#, volume.path());
            match expected {
                Some((code, needle)) => {
                    result.expect_err(code, needle);
                    assert!(!result.message.contains("a\nb"), "{what}: token echoed");
                }
                None => {
                    result.expect_ok();
                }
            }
        }
        let (status, _, _) = provider.get("/readyz").await;
        assert_eq!(
            status,
            200,
            "{what}: provider not ready:\n{}",
            provider.log()
        );
        assert!(hostile.requests.load(Ordering::SeqCst) > 0);
        let log = provider.log();
        assert!(
            !log.contains("panicked"),
            "{what}: the provider panicked:\n{log}"
        );
    }
}

/// The same content has different versions in two pod namespaces, and each
/// namespace's versions are the same after a provider restart.
#[tokio::test]
async fn versions_differ_across_namespaces_and_survive_restart() {
    let d = Deployment::new("fair-versions").await;
    d.put("app", json!({"k": "same"})).await;
    let client = driver_clients().pop().unwrap();
    let mount_in = |provider: &Provider, ns: &str| {
        let volume = Volume::new();
        client
            .mount(
                provider,
                &in_namespace(d.attributes(OBJECTS), ns, 1),
                &d.secrets(),
                volume.path(),
            )
            .expect_ok()["k"]
            .clone()
    };
    let mut provider = Provider::start(&d.bao.addr, &[]);
    let a = mount_in(&provider, "tenant-a");
    let b = mount_in(&provider, "tenant-b");
    assert_ne!(a, b, "same content, same version across namespaces");
    assert_eq!(mount_in(&provider, "tenant-a"), a);
    assert!(provider.terminate().success());
    let provider = Provider::start_in(provider.into_dir(), &d.bao.addr, &[]);
    assert_eq!(
        mount_in(&provider, "tenant-a"),
        a,
        "stable across a restart"
    );
    assert_eq!(
        mount_in(&provider, "tenant-b"),
        b,
        "stable across a restart"
    );
}
