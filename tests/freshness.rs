//! Secrets that stay fresh without the driver (`--write-mode direct`): after
//! one Mount through the driver's real v1.6 client, the provider itself keeps
//! the volume up to date against real OpenBao and a real PostgreSQL:
//! certificates re-issued before they expire, KV changes within the refresh
//! interval, leased database credentials renewed in the background and then
//! replaced at their max TTL; a JWT volume marked stale at its Vault token's
//! max TTL until the next Mount; nothing written once the volume is
//! unmounted; and after a provider restart, volumes adopted again at their
//! next Mount (nothing is kept on disk).
//!
//! TTLs are a few seconds, so the tests wait; each wait leaves margin around
//! what it is about.

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::certs::watch_certificates;
use support::deployment::Deployment;
use support::jwt::{service_account_jwt, tokens_attribute, unix_now};
use support::provider::{Provider, Volume, assert_log_clean, v16_client};

/// KV re-read interval of these tests' providers.
const INTERVAL: Duration = Duration::from_secs(2);

/// A direct-mode provider re-reading KV every `interval` (`"2s"`: [`INTERVAL`]).
fn direct_provider(addr: &str, interval: &str) -> Provider {
    Provider::start(addr, &direct_args(interval))
}

fn direct_args(interval: &str) -> [&str; 4] {
    ["--write-mode", "direct", "--refresh-interval", interval]
}

/// Polls `read` every 100 ms until it returns `Some`, for at most `within`.
async fn wait_for<T>(what: &str, within: Duration, mut read: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(value) = read() {
            return value;
        }
        assert!(Instant::now() < deadline, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn entries(path: &Path) -> usize {
    std::fs::read_dir(path).map_or(0, |d| d.count())
}

/// One Mount, then no more: the 8-second certificate is replaced (with its
/// key, never one without the other) at least three times, each time before
/// the one in the volume expires; a KV change is in the file within the
/// refresh interval (+10% jitter) + 1 s; modes stay. Once the volume is
/// unmounted the provider forgets it and writes nothing into the directory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_and_kv_stay_fresh_without_mounts() {
    let d = Deployment::new("fresh").await;
    let (role_id, secret_id) = d.pki_issuer().await;
    d.put("app", json!({"k": "one"})).await;
    let issue = "secretPath: pki/issue/app\n  method: PUT\n  secretArgs: {common_name: api.svc, ttl: 8s}\n  renewalPercent: 50";
    let objects = format!(
        "- objectName: tls.crt\n  {issue}\n  secretKey: certificate\n\
         - objectName: tls.key\n  {issue}\n  secretKey: private_key\n  filePermission: 0600\n\
         - objectName: k\n  secretPath: secret/data/app\n  secretKey: k\n"
    );
    let mut attributes = d.attributes(&objects);
    attributes["roleId"] = json!(role_id);
    let secrets = json!({"secretId": secret_id}).to_string();
    let provider = direct_provider(&d.bao.addr, "2s");
    let mut volume = Volume::new();
    v16_client()
        .mount(&provider, &attributes, &secrets, volume.path())
        .expect_ok();
    assert_eq!(volume.read("k"), "one");
    assert_eq!(provider.metric("vsp_volumes_tracked").await, 1.0);

    // The operator changes the KV secret; the provider's own refresh brings it.
    let changed = Instant::now();
    d.put("app", json!({"k": "two"})).await;
    let mut kv_seen = None;
    let read = |name: &str| volume.read(name);
    watch_certificates(
        read,
        4,
        Duration::from_millis(200),
        Duration::from_secs(30),
        || {
            if kv_seen.is_none() && volume.read("k") == "two" {
                kv_seen = Some(changed.elapsed());
            }
        },
    )
    .await;
    let kv_seen = kv_seen.expect("the KV change was never written");
    assert!(
        kv_seen <= INTERVAL.mul_f64(1.1) + Duration::from_secs(1),
        "KV change written after {kv_seen:?}"
    );
    assert_eq!(volume.mode("tls.key"), 0o600, "modes stay across rewrites");
    assert_eq!(volume.mode("k"), 0o644);
    assert!(
        provider
            .metric(r#"vsp_volume_refreshes_total{result="rewritten"}"#)
            .await
            >= 4.0
    );

    // The driver unmounts the volume: forgotten, nothing written any more.
    volume.unmount();
    d.put("app", json!({"k": "three"})).await;
    tokio::time::sleep(INTERVAL * 2).await;
    assert_eq!(entries(volume.path()), 0, "nothing written after unmount");
    assert_eq!(provider.metric("vsp_volumes_tracked").await, 0.0);
    assert_eq!(provider.metric("vsp_volumes_forgotten_total").await, 1.0);
    assert_log_clean(&provider.log(), &[&secret_id]);
}

/// `--refresh-interval 0s`: certificates only. A refresh that a certificate
/// made due re-issues it and reuses the KV response of the last read: a KV
/// change stays out of the volume until the next Mount, and each refresh
/// costs Vault exactly one request (the issue).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_refresh_reads_no_kv() {
    let d = Deployment::new("fresh-cert-only").await;
    let (role_id, secret_id) = d.pki_issuer().await;
    d.put("app", json!({"k": "one"})).await;
    let issue = "secretPath: pki/issue/app\n  method: PUT\n  secretArgs: {common_name: api.svc, ttl: 4s}\n  renewalPercent: 50";
    let objects = format!(
        "- objectName: tls.crt\n  {issue}\n  secretKey: certificate\n\
         - objectName: k\n  secretPath: secret/data/app\n  secretKey: k\n"
    );
    let mut attributes = d.attributes(&objects);
    attributes["roleId"] = json!(role_id);
    let secrets = json!({"secretId": secret_id}).to_string();
    let provider = direct_provider(&d.bao.addr, "0s");
    let volume = Volume::new();
    let client = v16_client();
    client
        .mount(&provider, &attributes, &secrets, volume.path())
        .expect_ok();
    d.put("app", json!({"k": "two"})).await;
    let reads = r#"vsp_vault_requests_total{operation="read",status="2xx"}"#;
    let first = volume.read("tls.crt");
    let mut seen = vec![first];
    while seen.len() < 4 {
        let cert = wait_for("a new certificate", Duration::from_secs(6), || {
            let cert = volume.read("tls.crt");
            (cert != *seen.last().unwrap()).then_some(cert)
        })
        .await;
        seen.push(cert);
    }
    assert_eq!(volume.read("k"), "one", "KV is not re-read with interval 0");
    // The Mount read KV and issued; each refresh since then issued once (a
    // fourth issue may be under way as we look).
    let count = provider.metric(reads).await;
    assert!((5.0..=6.0).contains(&count), "Vault reads: {count}");
    client
        .mount(&provider, &attributes, &secrets, volume.path())
        .expect_ok();
    assert_eq!(volume.read("k"), "two", "the next Mount reads KV");
}

/// Response mode (the driver writes the files), one Mount and no rotation:
/// the provider still renews the pod's Vault token and its lease (6 s TTLs)
/// in the background, so the credentials the driver wrote keep logging in
/// to PostgreSQL at twice their TTL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_and_leases_are_renewed_in_the_background() {
    let pg = support::postgres::Postgres::start();
    let d = Deployment::new("renew-db").await;
    let (attributes, secrets, secret_id) = d
        .database(
            &pg,
            "6s",
            "20s",
            json!({"token_ttl": "6s", "token_max_ttl": "120s"}),
        )
        .await;
    let provider = Provider::start(&d.bao.addr, &[]);
    let volume = Volume::new();
    v16_client()
        .mount(&provider, &attributes, &secrets, volume.path())
        .expect_ok();
    let (user, password) = (volume.read("username"), volume.read("password"));
    assert!(pg.login(&user, &password));

    tokio::time::sleep(Duration::from_secs(12)).await;
    assert!(
        pg.login(&user, &password),
        "the lease was renewed: the credentials log in after twice their TTL"
    );
    for kind in ["token", "lease"] {
        let renewed = provider
            .metric(&format!(
                r#"vsp_background_renewals_total{{kind="{kind}",result="ok"}}"#
            ))
            .await;
        assert!(renewed >= 2.0, "{kind} renewals: {renewed}");
    }
    assert_log_clean(&provider.log(), &[&password, &secret_id]);
}

/// Direct mode, mounted once: the lease is renewed (same credentials, still
/// able to log in to PostgreSQL past their first TTL), then, once the max
/// TTL caps the renewal, replaced by new credentials in the volume before
/// the old ones end; the new ones log in too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leased_database_credentials_stay_valid_without_mounts() {
    let pg = support::postgres::Postgres::start();
    let d = Deployment::new("fresh-db").await;
    let (attributes, secrets, secret_id) = d
        .database(
            &pg,
            "6s",
            "20s",
            json!({"token_ttl": "6s", "token_max_ttl": "120s"}),
        )
        .await;
    // KV interval off: only the lease drives this volume.
    let provider = direct_provider(&d.bao.addr, "0s");
    let volume = Volume::new();
    v16_client()
        .mount(&provider, &attributes, &secrets, volume.path())
        .expect_ok();
    let (first_user, first_password) = (volume.read("username"), volume.read("password"));
    assert!(pg.login(&first_user, &first_password));
    let started = Instant::now();

    // Past the first TTL (6 s): renewed, same credentials, and they still
    // log in (VALID UNTIL moved with the lease).
    tokio::time::sleep(Duration::from_secs(8)).await;
    assert_eq!(volume.read("username"), first_user);
    assert!(
        pg.login(&first_user, &first_password),
        "renewed credentials log in after their first TTL"
    );

    // The max TTL (20 s) caps the renewals: new credentials in the volume,
    // and whatever the volume holds logs in at every moment until then.
    let deadline = Instant::now() + Duration::from_secs(25);
    let second_user = loop {
        let (user, password) = (volume.read("username"), volume.read("password"));
        if volume.read("username") != user {
            continue; // read across a rewrite
        }
        assert!(
            pg.login(&user, &password),
            "the volume's credentials log in {:?} after the Mount",
            started.elapsed()
        );
        if user != first_user {
            break user;
        }
        assert!(Instant::now() < deadline, "credentials never replaced");
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert_ne!(second_user, first_user);
    assert_log_clean(&provider.log(), &[&first_password, &secret_id]);
}

/// JWT auth: a volume whose Vault token has a 3 s TTL and a 6 s max TTL
/// refreshes while the token can be renewed, is then marked stale (metric,
/// one log line) and left alone, and the next Mount, with a fresh pod token,
/// brings it back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jwt_volume_goes_stale_at_max_ttl_until_the_next_mount() {
    let d = Deployment::new("fresh-jwt").await;
    let bao = d.bao;
    d.put("app", json!({"k": "one"})).await;
    let private_pem = d
        .jwt_role(json!({
            "role_type": "jwt",
            "user_claim": "sub",
            "bound_audiences": ["vault"],
            "token_policies": ["app-read"],
            "token_ttl": "3s",
            "token_max_ttl": "6s",
        }))
        .await;
    let attributes = || {
        let jwt = service_account_jwt(&private_pem, "vault", unix_now() + 600, "app");
        let mut a =
            d.attributes("- objectName: k\n  secretPath: secret/data/app\n  secretKey: k\n");
        let map = a.as_object_mut().unwrap();
        map.remove("roleId");
        map.insert("vaultAuthMethod".into(), json!("jwt"));
        map.insert("roleName".into(), json!("app"));
        map.insert(
            "csi.storage.k8s.io/serviceAccount.tokens".into(),
            json!(tokens_attribute("vault", &jwt)),
        );
        a
    };
    let provider = direct_provider(&bao.addr, "2s");
    let volume = Volume::new();
    let client = v16_client();
    client
        .mount(&provider, &attributes(), "{}", volume.path())
        .expect_ok();

    // While the token can be renewed, the volume refreshes.
    d.put("app", json!({"k": "two"})).await;
    wait_for("KV change", Duration::from_secs(4), || {
        (volume.read("k") == "two").then_some(())
    })
    .await;

    // Past the token's max TTL: stale, and nothing more is read.
    wait_for("stale", Duration::from_secs(12), || {
        provider.log().contains("volume is stale").then_some(())
    })
    .await;
    assert_eq!(provider.metric("vsp_volumes_stale").await, 1.0);
    d.put("app", json!({"k": "three"})).await;
    tokio::time::sleep(INTERVAL * 2).await;
    assert_eq!(volume.read("k"), "two", "a stale volume is left as it is");
    assert_eq!(
        provider.log().matches("volume is stale").count(),
        1,
        "one log line per stale volume"
    );

    // The driver's next Mount brings a fresh pod token: fresh again.
    client
        .mount(&provider, &attributes(), "{}", volume.path())
        .expect_ok();
    assert_eq!(volume.read("k"), "three");
    assert_eq!(provider.metric("vsp_volumes_stale").await, 0.0);
    d.put("app", json!({"k": "four"})).await;
    wait_for(
        "refresh after the new Mount",
        Duration::from_secs(4),
        || (volume.read("k") == "four").then_some(()),
    )
    .await;
}

/// Nothing is kept across a provider restart (credentials live in memory
/// only): the new process refreshes no volume until the driver mounts it
/// again, and from that Mount on keeps it fresh as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_provider_adopts_volumes_at_their_next_mount() {
    let d = Deployment::new("fresh-restart").await;
    d.put("app", json!({"k": "one"})).await;
    let attributes: Value =
        d.attributes("- objectName: k\n  secretPath: secret/data/app\n  secretKey: k\n");
    let client = v16_client();
    let volume = Volume::new();
    let mut provider = direct_provider(&d.bao.addr, "2s");
    client
        .mount(&provider, &attributes, &d.secrets(), volume.path())
        .expect_ok();
    provider.kill();
    let provider = Provider::start_in(provider.into_dir(), &d.bao.addr, &direct_args("2s"));

    d.put("app", json!({"k": "two"})).await;
    tokio::time::sleep(INTERVAL * 2).await;
    assert_eq!(volume.read("k"), "one", "not tracked before its next Mount");
    assert_eq!(provider.metric("vsp_volumes_tracked").await, 0.0);

    client
        .mount(&provider, &attributes, &d.secrets(), volume.path())
        .expect_ok();
    assert_eq!(volume.read("k"), "two");
    d.put("app", json!({"k": "three"})).await;
    wait_for("refresh after adoption", Duration::from_secs(4), || {
        (volume.read("k") == "three").then_some(())
    })
    .await;
}
