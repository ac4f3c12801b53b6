//! Faults between the provider and a real OpenBao, through the driver's own
//! client: OpenBao killed and restarted under load, sealed and unsealed,
//! answers slower than our deadline, connection resets, 429/5xx bursts, our
//! token revoked behind our back, a secret ID used up or expired.
//!
//! For each: the right gRPC code, nothing written on failure, bounded retries
//! (at most 3 requests per source per Mount call; the driver makes at most 3
//! calls), and recovery without restarting the provider.
//!
//! Statuses, resets and delays come from a fault proxy in front of OpenBao
//! (`support::faults`); outages, seals and restarts from a disk-backed OpenBao
//! the test owns (`support::durable`).

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::deployment::{Deployment, RootApp};
use support::durable::DurableOpenBao;
use support::faults::{Fault, FaultProxy};
use support::flavour::Server;
use support::openbao::{OpenBao, unique};
use support::provider::{Provider, Volume, driver_clients, storm_request, v16_client};

/// Retries per Vault request (src/vault/retry.rs) and the driver's gRPC
/// attempts per Mount (its service config: MaxAttempts 3, UNAVAILABLE only).
const ATTEMPTS_PER_CALL: usize = 3;
const DRIVER_ATTEMPTS: usize = 3;

const OBJECTS: &str = "- objectName: k\n  secretPath: secret/data/app\n  secretKey: k\n";

/// Mount failures the provider answered, from its log (one line per call).
fn failed_calls(provider: &Provider) -> usize {
    provider.log().matches("mount failed").count()
}

/// [`RootApp::seed`] on a server the test owns, with `secret/app` = {k: value}.
async fn seed(bao: &OpenBao, value: &str) -> (Value, String) {
    let app = RootApp::seed(bao).await;
    bao.kv2_put("", "secret", "app", json!({"k": value})).await;
    (app.attributes(OBJECTS), app.secrets())
}

#[tokio::test]
async fn sealed_vault_is_unavailable_then_recovers_on_unseal() {
    let bao = DurableOpenBao::start().await;
    let (attributes, secrets) = seed(&bao, "sealed-value-1").await;
    let provider = Provider::start(&bao.addr, &[]);
    for client in driver_clients() {
        let (result, volume) = client.mount_fresh(&provider, &attributes, &secrets);
        result.expect_ok();
        assert_eq!(volume.read("k"), "sealed-value-1");
    }

    bao.seal().await;
    for client in driver_clients() {
        let (result, _) = client.mount_fresh(&provider, &attributes, &secrets);
        result.expect_err("Unavailable", "Vault is sealed");
        result.expect_err("Unavailable", "gave up after 3 attempts");
    }

    bao.unseal().await;
    bao.kv2_put("", "secret", "app", json!({"k": "sealed-value-2"}))
        .await;
    for client in driver_clients() {
        let (result, volume) = client.mount_fresh(&provider, &attributes, &secrets);
        result.expect_ok();
        assert_eq!(volume.read("k"), "sealed-value-2");
    }
    provider.assert_running();
}

/// Mounts run without pause on another thread while OpenBao is SIGKILLed and
/// restarted. Every Mount either succeeds with the current files or fails
/// `Unavailable` with nothing written; once OpenBao is back, every Mount
/// succeeds, with the same provider process.
#[tokio::test]
async fn vault_killed_and_restarted_under_load() {
    let mut bao = DurableOpenBao::start().await;
    let (attributes, secrets) = seed(&bao, "restart-value").await;
    let provider = Arc::new(Provider::start(&bao.addr, &[]));

    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let load = {
        let (provider, stop, done, failed) =
            (provider.clone(), stop.clone(), done.clone(), failed.clone());
        let attributes = attributes.clone();
        let secrets = secrets.clone();
        std::thread::spawn(move || {
            let client = v16_client();
            let mut log = Vec::new();
            while !stop.load(Ordering::SeqCst) {
                let volumes: Vec<Volume> = (0..4).map(|_| Volume::new()).collect();
                let requests: Vec<Value> = volumes
                    .iter()
                    .map(|v| storm_request(&attributes, &secrets, v.path()))
                    .collect();
                let started = Instant::now();
                for (result, volume) in client
                    .storm(&provider, &requests, 4)
                    .into_iter()
                    .zip(&volumes)
                {
                    if result.ok {
                        assert_eq!(volume.read("k"), "restart-value");
                    } else {
                        assert_eq!(result.grpc_code, "Unavailable", "{}", result.message);
                        assert!(volume.files().is_empty(), "files written by a failed Mount");
                        failed.fetch_add(1, Ordering::SeqCst);
                    }
                    log.push((started, Instant::now(), result.ok));
                    done.fetch_add(1, Ordering::SeqCst);
                }
            }
            log
        })
    };
    let wait_for = |n: usize| {
        let deadline = Instant::now() + Duration::from_secs(120);
        while done.load(Ordering::SeqCst) < n {
            assert!(Instant::now() < deadline, "Mounts stalled");
            std::thread::sleep(Duration::from_millis(20));
        }
    };

    wait_for(8);
    bao.kill();
    let killed = Instant::now();
    // Keep it down until Mounts have seen the outage.
    let deadline = Instant::now() + Duration::from_secs(120);
    while failed.load(Ordering::SeqCst) == 0 {
        assert!(
            Instant::now() < deadline,
            "no Mount failed while OpenBao was down"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    bao.restart().await;
    let recovered = Instant::now();
    let after = done.load(Ordering::SeqCst);
    wait_for(after + 12);
    stop.store(true, Ordering::SeqCst);
    let log = load.join().expect("load thread");

    // Batches that started after OpenBao was back all succeeded.
    let late: Vec<_> = log
        .iter()
        .filter(|(started, _, _)| *started > recovered)
        .collect();
    assert!(late.len() >= 4, "too few Mounts after the restart");
    assert!(
        late.iter().all(|(_, _, ok)| *ok),
        "Mounts failed after OpenBao recovered"
    );
    // Failures only inside the outage window.
    for (started, ended, ok) in &log {
        if !ok {
            assert!(*ended > killed, "a Mount failed before the outage");
            assert!(
                *started < recovered,
                "a Mount started after recovery failed"
            );
        }
    }
    provider.assert_running();
    eprintln!(
        "restart under load: {} Mounts, {} failed Unavailable during the outage",
        log.len(),
        failed.load(Ordering::SeqCst)
    );
}

#[tokio::test]
async fn answers_slower_than_our_deadline_are_unavailable() {
    let d = Deployment::new("slow-proxy").await;
    d.put("app", json!({"k": "slow-value"})).await;
    let proxy = FaultProxy::start(&d.bao.addr);
    let provider = Provider::start(&proxy.url(), &["--mount-timeout", "1s"]);
    let client = v16_client();
    let attributes = d.attributes(OBJECTS);

    proxy.inject_on(
        "secret/data",
        Fault::Delay(Duration::from_secs(3)),
        usize::MAX,
    );
    let started = Instant::now();
    let (result, _) = client.mount_fresh(&provider, &attributes, &d.secrets());
    // The Mount deadline's own message, not a single request's transport timeout.
    result.expect_err("Unavailable", "timed out after 1s waiting for Vault");
    // Three driver attempts, each cut at our 1 s deadline (plus its backoff).
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
    assert!(proxy.count("secret/data") <= DRIVER_ATTEMPTS * ATTEMPTS_PER_CALL);

    proxy.clear();
    let (result, volume) = client.mount_fresh(&provider, &attributes, &d.secrets());
    result.expect_ok();
    assert_eq!(volume.read("k"), "slow-value");
}

#[tokio::test]
async fn connection_resets_are_retried_within_the_budget() {
    let d = Deployment::new("resets").await;
    d.put("app", json!({"k": "reset-value"})).await;
    let proxy = FaultProxy::start(&d.bao.addr);
    let provider = Provider::start(&proxy.url(), &[]);
    let client = v16_client();
    let attributes = d.attributes(OBJECTS);

    // One reset on the login, two on the read: all inside the budget.
    proxy.inject_on("approle/login", Fault::Reset, 1);
    let (result, _) = client.mount_fresh(&provider, &attributes, &d.secrets());
    // A reset login may have reached Vault (a write): not repeated, so this
    // Mount call fails Unavailable and the driver's next call succeeds.
    result.expect_ok();
    proxy.reset_seen();
    proxy.inject_on("secret/data", Fault::Reset, 2);
    let (result, volume) = client.mount_fresh(&provider, &attributes, &d.secrets());
    result.expect_ok();
    assert_eq!(volume.read("k"), "reset-value");
    assert_eq!(proxy.count("secret/data"), 3, "two resets, then the answer");
    assert_eq!(
        failed_calls(&provider),
        1,
        "only the reset login failed a call"
    );

    // Resets without end: Unavailable, and no more than the budget per call.
    proxy.reset_seen();
    proxy.inject_on("secret/data", Fault::Reset, usize::MAX);
    let (result, _) = client.mount_fresh(&provider, &attributes, &d.secrets());
    result.expect_err("Unavailable", "gave up after 3 attempts");
    let calls = failed_calls(&provider) - 1;
    assert!((1..=DRIVER_ATTEMPTS).contains(&calls), "{calls} calls");
    assert_eq!(proxy.count("secret/data"), calls * ATTEMPTS_PER_CALL);

    proxy.clear();
    let (result, _) = client.mount_fresh(&provider, &attributes, &d.secrets());
    result.expect_ok();
}

#[tokio::test]
async fn status_bursts_shorter_than_the_budget_are_survived() {
    let d = Deployment::new("bursts").await;
    d.put("app", json!({"k": "burst-value"})).await;
    let proxy = FaultProxy::start(&d.bao.addr);
    let provider = Provider::start(&proxy.url(), &[]);
    let client = v16_client();
    let attributes = d.attributes(OBJECTS);
    client
        .mount_fresh(&provider, &attributes, &d.secrets())
        .0
        .expect_ok();

    for (status, message) in [
        (429, "rate limit quota exceeded"),
        (500, "internal error"),
        (502, "bad gateway"),
        (503, "Vault is sealed"),
        (504, "gateway timeout"),
        (412, "required index state not present"),
    ] {
        // A burst of 2: the third attempt gets through.
        proxy.reset_seen();
        proxy.inject_on("secret/data", Fault::Status(status, message), 2);
        let (result, volume) = client.mount_fresh(&provider, &attributes, &d.secrets());
        result.expect_ok();
        assert_eq!(volume.read("k"), "burst-value", "HTTP {status}");
        let seen = proxy.seen();
        assert_eq!(seen.len(), 3, "HTTP {status}: {seen:?}");
        // Jittered backoff: the retries waited, but never above the cap.
        let gaps: Vec<Duration> = seen.windows(2).map(|w| w[1].at - w[0].at).collect();
        assert!(
            gaps.iter().all(|g| *g < Duration::from_millis(1000)),
            "{gaps:?}"
        );

        // A longer burst: Unavailable, naming the status and the attempts.
        proxy.reset_seen();
        let before = failed_calls(&provider);
        proxy.inject_on("secret/data", Fault::Status(status, message), usize::MAX);
        let (result, _) = client.mount_fresh(&provider, &attributes, &d.secrets());
        result.expect_err("Unavailable", &format!("HTTP {status}: {message}"));
        result.expect_err("Unavailable", "gave up after 3 attempts");
        let calls = failed_calls(&provider) - before;
        assert_eq!(
            calls, DRIVER_ATTEMPTS,
            "HTTP {status}: the driver retries Unavailable"
        );
        assert_eq!(
            proxy.count("secret/data"),
            calls * ATTEMPTS_PER_CALL,
            "HTTP {status}"
        );
        proxy.clear();
    }
    eprintln!("status bursts: {} faults injected", 6 * (2 + 9));
}

/// A PKI issue is a write: a 503 after sending is not repeated by us (the
/// driver's own retry makes a new Mount call).
#[tokio::test]
async fn writes_are_not_repeated() {
    let d = Deployment::new("no-repeat").await;
    let bao = d.bao;
    bao.enable_secrets(&d.ns, "pki", "pki", None).await;
    bao.api(
        "POST",
        &d.ns,
        "pki/root/generate/internal",
        Some(json!({"common_name": "fault-ca", "ttl": "1h"})),
    )
    .await;
    bao.api(
        "POST",
        &d.ns,
        "pki/roles/app",
        Some(json!({"allowed_domains": "svc", "allow_subdomains": true, "max_ttl": "1h"})),
    )
    .await;
    bao.write_policy(
        &d.ns,
        "issue",
        r#"path "pki/issue/app" { capabilities = ["update"] }"#,
    )
    .await;
    let (role_id, secret_id) = bao
        .approle(&d.ns, "approle", "issuer", &["issue"], json!({}))
        .await;
    let mut attributes = d.attributes(
        "- objectName: tls.crt\n  secretPath: pki/issue/app\n  method: PUT\n  \
         secretArgs: {common_name: a.svc, ttl: 10m}\n  secretKey: certificate\n",
    );
    attributes["roleId"] = json!(role_id);
    let secrets = json!({"secretId": secret_id}).to_string();
    let proxy = FaultProxy::start(&bao.addr);
    let provider = Provider::start(&proxy.url(), &[]);
    let client = v16_client();

    proxy.inject_on(
        "pki/issue",
        Fault::Status(503, "Vault is sealed"),
        usize::MAX,
    );
    let (result, _) = client.mount_fresh(&provider, &attributes, &secrets);
    result.expect_err("Unavailable", "HTTP 503");
    let calls = failed_calls(&provider);
    assert_eq!(calls, DRIVER_ATTEMPTS);
    assert_eq!(
        proxy.count("pki/issue"),
        calls,
        "one PUT per Mount call, never repeated"
    );

    proxy.clear();
    let (result, volume) = client.mount_fresh(&provider, &attributes, &secrets);
    result.expect_ok();
    assert!(volume.read("tls.crt").contains("BEGIN CERTIFICATE"));
}

#[tokio::test]
async fn token_revoked_out_of_band_is_replaced_by_a_new_login() {
    let d = Deployment::new("revoked").await;
    d.put("app", json!({"k": "revoked-value"})).await;
    let provider = Provider::start(&d.bao.addr, &[]);
    let client = v16_client();
    let attributes = d.attributes(OBJECTS);
    client
        .mount_fresh(&provider, &attributes, &d.secrets())
        .0
        .expect_ok();
    assert_eq!(d.token_count().await, 1);

    revoke_all_tokens(&d).await;
    assert_eq!(d.token_count().await, 0);
    let (result, volume) = client.mount_fresh(&provider, &attributes, &d.secrets());
    result.expect_ok();
    assert_eq!(volume.read("k"), "revoked-value");
    assert_eq!(d.token_count().await, 1, "one new login after the 403");
    assert_eq!(failed_calls(&provider), 0);
}

async fn revoke_all_tokens(d: &Deployment) {
    for accessor in d.bao.token_accessors(&d.ns).await {
        d.bao
            .api(
                "POST",
                &d.ns,
                "auth/token/revoke-accessor",
                Some(json!({"accessor": accessor})),
            )
            .await;
    }
}

#[tokio::test]
async fn used_up_or_expired_secret_id_is_unauthenticated() {
    let d = Deployment::new("secret-id").await;
    d.put("app", json!({"k": "sid-value"})).await;
    let bao = d.bao;
    let role = unique("once");
    let (role_id, once) = bao
        .approle(
            &d.ns,
            "approle",
            &role,
            &["app-read"],
            json!({"secret_id_num_uses": 1, "secret_id_ttl": "1h"}),
        )
        .await;
    let provider = Provider::start(&bao.addr, &[]);
    let client = v16_client();
    let mut attributes = d.attributes(OBJECTS);
    attributes["roleId"] = json!(role_id);
    let secrets = json!({"secretId": once}).to_string();

    // The one use logs in; the cached token serves the next Mount.
    client
        .mount_fresh(&provider, &attributes, &secrets)
        .0
        .expect_ok();
    client
        .mount_fresh(&provider, &attributes, &secrets)
        .0
        .expect_ok();
    // Without the token, the used-up secret ID cannot log in again.
    revoke_all_tokens(&d).await;
    let (result, _) = client.mount_fresh(&provider, &attributes, &secrets);
    result.expect_err("Unauthenticated", "invalid role or secret ID");

    // A secret ID past its TTL.
    let short = unique("short");
    let (role_id, expiring) = bao
        .approle(
            &d.ns,
            "approle",
            &short,
            &["app-read"],
            json!({"secret_id_ttl": "2s"}),
        )
        .await;
    let created = Instant::now();
    attributes["roleId"] = json!(role_id);
    let secrets = json!({"secretId": expiring}).to_string();
    let (result, _) = client.mount_fresh(&provider, &attributes, &secrets);
    assert!(
        result.ok || created.elapsed() >= Duration::from_secs(2),
        "a fresh secret ID must log in: {} {}",
        result.grpc_code,
        result.message
    );
    // Wait out the TTL, asking the server rather than trusting a sleep.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if Server::current() == Server::Vault {
            // HashiCorp Vault's AppRole takes an expired secret ID until its tidy, run
            // once a minute, has removed it: ask for the tidy rather than wait for it.
            bao.api_status("POST", &d.ns, "auth/approle/tidy/secret-id", None)
                .await;
        }
        let (status, _) = bao
            .request(
                None,
                "POST",
                &d.ns,
                "auth/approle/login",
                Some(json!({"role_id": role_id, "secret_id": expiring})),
            )
            .await
            .expect("login");
        if status == 400 {
            break;
        }
        assert!(Instant::now() < deadline, "secret ID did not expire");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    revoke_all_tokens(&d).await;
    let (result, _) = client.mount_fresh(&provider, &attributes, &secrets);
    result.expect_err("Unauthenticated", "invalid role or secret ID");
}

/// All or nothing: one source failing fails the whole Mount, with nothing
/// written, and a volume that already holds files keeps them whole.
#[tokio::test]
async fn one_failing_source_fails_the_whole_mount() {
    let d = Deployment::new("partial").await;
    d.put("app", json!({"k": "partial-a1"})).await;
    d.put("app2", json!({"k": "partial-b1"})).await;
    let proxy = FaultProxy::start(&d.bao.addr);
    let provider = Provider::start(&proxy.url(), &[]);
    let attributes = d.attributes(
        "- objectName: a\n  secretPath: secret/data/app\n  secretKey: k\n\
         - objectName: b\n  secretPath: secret/data/app2\n  secretKey: k\n",
    );
    proxy.inject_on(
        "secret/data/app2",
        Fault::Status(500, "internal error"),
        usize::MAX,
    );
    for client in driver_clients() {
        let (result, _) = client.mount_fresh(&provider, &attributes, &d.secrets());
        result.expect_err("Unavailable", "object \"b\"");
    }

    // A rotation into a volume with files: the failed update leaves the old set.
    proxy.clear();
    let client = v16_client();
    let volume = Volume::new();
    client
        .mount(&provider, &attributes, &d.secrets(), volume.path())
        .expect_ok();
    d.put("app", json!({"k": "partial-a2"})).await;
    d.put("app2", json!({"k": "partial-b2"})).await;
    proxy.inject_on("secret/data/app2", Fault::Reset, usize::MAX);
    client
        .mount(&provider, &attributes, &d.secrets(), volume.path())
        .expect_err("Unavailable", "object \"b\"");
    assert_eq!(
        volume.read("a"),
        "partial-a1",
        "no file of the failed update"
    );
    assert_eq!(volume.read("b"), "partial-b1");
    proxy.clear();
    client
        .mount(&provider, &attributes, &d.secrets(), volume.path())
        .expect_ok();
    assert_eq!(
        (volume.read("a"), volume.read("b")),
        ("partial-a2".into(), "partial-b2".into())
    );
}
