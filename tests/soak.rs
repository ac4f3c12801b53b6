//! Soak: Mounts without pause through the driver's client (v1.5 and v1.6 in
//! turn), the secret rotated between batches, and OpenBao killed and
//! restarted periodically, for `VSP_SOAK_SECS` seconds (30 in `make test`,
//! 300 in `make soak`).
//!
//! Checked: no Mount fails outside an outage window (a batch overlapping the
//! time OpenBao was down may fail, `Unavailable` only, writing nothing); every
//! successful Mount has the current value, and versions change exactly with
//! it; the provider is never restarted; its memory (RSS), threads and open
//! file descriptors are flat at the end compared to after warm-up.

mod support;

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::deployment::RootApp;
use support::durable::DurableOpenBao;
use support::provider::{Provider, Volume, driver_clients, storm_request};

/// Seconds to run unless `VSP_SOAK_SECS` says otherwise.
const DEFAULT_SECS: u64 = 30;
/// Mounts per batch, and how many run at once.
const BATCH: usize = 8;
const CONCURRENCY: usize = 4;

/// A process's resident memory (KiB), threads and open descriptors.
#[derive(Clone, Copy, Debug)]
struct Usage {
    rss_kib: u64,
    threads: u64,
    fds: usize,
}

fn usage(pid: u32) -> Usage {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{name} missing from /proc/{pid}/status"))
    };
    Usage {
        rss_kib: field("VmRSS:"),
        threads: field("Threads:"),
        fds: std::fs::read_dir(format!("/proc/{pid}/fd"))
            .expect("proc fd")
            .count(),
    }
}

#[tokio::test]
async fn soak_with_rotation_and_vault_restarts() {
    let secs = std::env::var("VSP_SOAK_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_SECS);
    let duration = Duration::from_secs(secs);
    // About four restarts over a long soak, at least one in a short one.
    let restart_every = (duration / 5).max(Duration::from_secs(12));

    let mut bao = DurableOpenBao::start().await;
    let app = RootApp::seed(&bao).await;
    bao.kv2_put("", "secret", "rotating", json!({"v": "soak-value-0"}))
        .await;
    bao.kv2_put("", "secret", "steady", json!({"v": "soak-steady-value"}))
        .await;
    let attributes = app.attributes(
        "- objectName: rotating\n  secretPath: secret/data/rotating\n  secretKey: v\n\
             - objectName: steady\n  secretPath: secret/data/steady\n  secretKey: v\n",
    );
    let secrets = app.secrets();
    let provider = Provider::start(&bao.addr, &[]);
    let pid = provider.pid();
    let clients = driver_clients();

    let started = Instant::now();
    let mut value = 0u64;
    let mut versions: Option<(String, String)> = None;
    let (mut served, mut failed_in_outage, mut restarts) = (0usize, 0usize, 0usize);
    let mut outside: Vec<String> = Vec::new();
    let mut warm: Option<Usage> = None;
    let mut next_restart = started + restart_every;
    let mut batch_number = 0usize;

    // Runs one batch; failures are allowed only when `outage` is true.
    let mut run_batch = |size: usize, outage: bool, value: u64, batch_number: usize| {
        let client = &clients[batch_number % clients.len()];
        let volumes: Vec<Volume> = (0..size).map(|_| Volume::new()).collect();
        let requests: Vec<Value> = volumes
            .iter()
            .map(|v| storm_request(&attributes, &secrets, v.path()))
            .collect();
        let mut ok = Vec::new();
        let mut failed = 0;
        for (result, volume) in client
            .storm(&provider, &requests, CONCURRENCY)
            .iter()
            .zip(&volumes)
        {
            if result.ok {
                assert_eq!(volume.read("rotating"), format!("soak-value-{value}"));
                assert_eq!(volume.read("steady"), "soak-steady-value");
                ok.push((
                    result.object_versions["rotating"].clone(),
                    result.object_versions["steady"].clone(),
                ));
            } else {
                assert!(volume.files().is_empty(), "a failed Mount wrote files");
                if outage {
                    assert_eq!(result.grpc_code, "Unavailable", "{}", result.message);
                } else {
                    outside.push(format!("{} {}", result.grpc_code, result.message));
                }
                failed += 1;
            }
        }
        (ok, failed)
    };

    while started.elapsed() < duration {
        if Instant::now() >= next_restart {
            // Outage: OpenBao killed; Mounts fail Unavailable until it is back.
            bao.kill();
            let (_, failed) = run_batch(2, true, value, batch_number);
            batch_number += 1;
            failed_in_outage += failed;
            served += 2;
            bao.restart().await;
            restarts += 1;
            next_restart = Instant::now() + restart_every;
            continue;
        }
        // Rotation: a new value every other batch.
        let rotated = batch_number.is_multiple_of(2);
        if rotated {
            value += 1;
            bao.kv2_put(
                "",
                "secret",
                "rotating",
                json!({"v": format!("soak-value-{value}")}),
            )
            .await;
        }
        let (ok, _) = run_batch(BATCH, false, value, batch_number);
        served += BATCH;
        if let (Some(first), Some(previous)) = (ok.first(), &versions) {
            assert_eq!(
                first.1, previous.1,
                "an unchanged secret changed its version"
            );
            if rotated {
                assert_ne!(first.0, previous.0, "a rotated secret kept its version");
            } else {
                assert_eq!(
                    first.0, previous.0,
                    "an unchanged secret changed its version"
                );
            }
        }
        assert!(
            ok.windows(2).all(|w| w[0] == w[1]),
            "one batch, one content, one version"
        );
        if let Some(last) = ok.last() {
            versions = Some(last.clone());
        }
        batch_number += 1;
        if warm.is_none() && batch_number >= 4 {
            warm = Some(usage(pid));
        }
    }

    let end = usage(pid);
    let warm = warm.expect("the soak ran fewer than 4 batches");
    let elapsed = started.elapsed();
    eprintln!(
        "soak: {:.0} s, {served} Mounts, {restarts} OpenBao restarts, {failed_in_outage} failed \
         inside outages, {} outside; RSS {} → {} KiB, threads {} → {}, fds {} → {}",
        elapsed.as_secs_f64(),
        outside.len(),
        warm.rss_kib,
        end.rss_kib,
        warm.threads,
        end.threads,
        warm.fds,
        end.fds,
    );
    assert!(
        outside.is_empty(),
        "Mounts failed outside outages:\n{}",
        outside.join("\n")
    );
    assert!(restarts >= 1, "no restart happened");
    provider.assert_running();
    assert!(
        end.rss_kib <= warm.rss_kib + warm.rss_kib / 2 + 16 * 1024,
        "RSS grew from {} to {} KiB",
        warm.rss_kib,
        end.rss_kib
    );
    // Tokio's blocking pool may hold a few idle threads for a while.
    assert!(
        end.threads <= warm.threads + 8,
        "threads {warm:?} → {end:?}"
    );
    assert!(end.fds <= warm.fds + 16, "descriptors {warm:?} → {end:?}");
}
