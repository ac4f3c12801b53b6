//! Section 8, freshness: what keeping direct-mode volumes fresh costs, with
//! the provider doing it alone (no driver rotation, no Mount after the first).
//!
//! 1. Steady state with N tracked volumes (1,000; 100 with `--quick`), each a
//!    short-lived PKI certificate (TTL 2 min) and one KV object, refresh
//!    interval 2 min, mounted in waves over one interval as pods arrive: Vault
//!    requests per minute (OpenBao's audit log) against the unavoidable ones
//!    (one KV read per volume per interval, one issue per certificate at its
//!    renewal point), provider CPU per minute, RSS, and the lag between a
//!    volume's due time and its rewrite (p50/p99, from the provider's debug
//!    line for each refresh).
//! 2. Memory with 10,000 tracked volumes (1,000 with `--quick`).
//!
//! Every volume is its own tmpfs mount (the provider forgets a target that is
//! not a mount point), under one parent tmpfs unmounted recursively at the end.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::clients::{DriverClient, cpu_ns, request, rss_kib};
use crate::report::{Scale, percentile};
use crate::support::provider::Provider;
use crate::vault::{Counts, Fixture, approle_attributes, approle_secrets, kv_objects};

/// The certificate's TTL; PKI backdates `not_before` by 30 s, so its
/// lifetime is 150 s and `renewalPercent` 67 re-issues it ~70 s after issue.
const CERT_TTL_S: f64 = 120.0;
const BACKDATE_S: f64 = 30.0;
const INTERVAL_S: f64 = 120.0;
/// Pod namespaces the volumes are spread over (a namespace may hold a
/// quarter of the tracked volumes and of the lease cache).
const NAMESPACES: usize = 8;

/// The section's results.
pub struct Freshness {
    pub date: String,
    pub load_before: String,
    pub load_after: String,
    pub volumes: usize,
    pub waves: usize,
    pub window: Duration,
    pub counts: Counts,
    pub cpu_ms: f64,
    pub rss_kib: (u64, u64),
    pub lags_ms: Vec<f64>,
    pub rewrites: usize,
    pub failed: usize,
    pub big: usize,
    pub big_rss_kib: (u64, u64),
    pub big_mount_s: f64,
}

pub async fn run(f: &Fixture, client: &DriverClient, scale: Scale) -> Freshness {
    let load_before = crate::loadavg();
    let date = crate::command_line("date", &["-u", "+%Y-%m-%d %H:%M UTC"]);
    // Pods arrive in waves 6 s apart over one refresh interval (a minute with
    // --quick), so the volumes' due times are spread as on a busy node.
    let (n, waves, window, big) = if scale.quick {
        (100, 10, Duration::from_secs(60), 1000)
    } else {
        (1000, 20, Duration::from_secs(240), 10_000)
    };
    let secrets = approle_secrets(&f.secret_id(0).await);

    crate::progress(&format!(
        "8. freshness: {n} volumes, mounted in {waves} waves 6 s apart"
    ));
    let mounts = MountPoints::new(n);
    let provider = fresh_provider(&f.bao.addr, n);
    for wave in 0..waves {
        let requests: Vec<_> = (wave * n / waves..(wave + 1) * n / waves)
            .map(|i| request(&attributes(f, i), &secrets, &mounts.of(i)))
            .collect();
        let outcomes = run_storm(client, provider.providers_dir(), &requests);
        if let Some(failed) = outcomes.iter().find(|o| !o.ok) {
            panic!("8. a Mount failed: {}", failed.message);
        }
        tokio::time::sleep(Duration::from_secs(6)).await;
    }
    crate::progress(&format!("8. freshness: measuring for {window:?}"));
    let log_from = provider.log().len();
    let mark = f.audit.mark();
    let cpu_before = cpu_ns(provider.pid());
    tokio::time::sleep(window).await;
    let counts = f.audit.since(mark);
    let cpu_ms = (cpu_ns(provider.pid()) - cpu_before) as f64 / 1e6;
    let rss = rss_kib(provider.pid());
    let log = provider.log();
    let refreshed: Vec<&str> = log[log_from..]
        .lines()
        .filter(|l| l.contains("volume refreshed"))
        .collect();
    let lags_ms: Vec<f64> = refreshed
        .iter()
        .filter_map(|l| field(l, "lag_ms="))
        .collect();
    let rewrites = refreshed.iter().filter(|l| l.contains("Rewritten")).count();
    let failed = refreshed.iter().filter(|l| l.contains("Failed")).count();
    drop(provider);
    drop(mounts);

    crate::progress(&format!("8. freshness: memory with {big} tracked volumes"));
    let mounts = MountPoints::new(big);
    let provider = fresh_provider(&f.bao.addr, big);
    let started = Instant::now();
    let requests: Vec<_> = (0..big)
        .map(|i| request(&attributes(f, i), &secrets, &mounts.of(i)))
        .collect();
    let outcomes = run_storm(client, provider.providers_dir(), &requests);
    if let Some(failed) = outcomes.iter().find(|o| !o.ok) {
        panic!("8. a Mount failed: {}", failed.message);
    }
    let big_mount_s = started.elapsed().as_secs_f64();
    let (_, _, metrics) = provider.get("/metrics").await;
    let tracked = metrics
        .lines()
        .find_map(|l| l.strip_prefix("vsp_volumes_tracked "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .unwrap_or(0.0) as usize;
    assert_eq!(tracked, big, "every volume tracked");
    // Let the Mount bursts' buffers go back before reading RSS.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let big_rss_kib = rss_kib(provider.pid());
    drop(provider);
    drop(mounts);

    Freshness {
        date,
        load_before,
        load_after: crate::loadavg(),
        volumes: n,
        waves,
        window,
        counts,
        cpu_ms,
        rss_kib: rss,
        lags_ms,
        rewrites,
        failed,
        big,
        big_rss_kib,
        big_mount_s,
    }
}

fn fresh_provider(addr: &str, volumes: usize) -> Provider {
    let capacity = (volumes + volumes / 5).max(10_000).to_string();
    Provider::start(
        addr,
        &[
            "--write-mode",
            "direct",
            "--refresh-interval",
            "2m",
            "--max-tracked-volumes",
            &capacity,
            "--lease-cache-size",
            &capacity,
            "--log-level",
            "info,vault_secrets_provider::provider::volumes=debug",
        ],
    )
}

/// Pod `i`: a 2-minute certificate and one KV object, in one of
/// [`NAMESPACES`] pod namespaces.
fn attributes(f: &Fixture, i: usize) -> serde_json::Value {
    let issue = format!(
        "  secretPath: pki/issue/app\n  method: PUT\n  secretArgs: {{common_name: app.bench.svc, ttl: {CERT_TTL_S}s}}\n"
    );
    let objects = format!(
        "- objectName: tls.crt\n{issue}  secretKey: certificate\n\
         - objectName: tls.key\n{issue}  secretKey: private_key\n{}",
        kv_objects(1)
    );
    let mut attributes = approle_attributes(&f.role_ids[0], &objects, &format!("fresh-{i}"));
    attributes["csi.storage.k8s.io/pod.namespace"] = json!(format!("team-{}", i % NAMESPACES));
    attributes
}

fn field(line: &str, name: &str) -> Option<f64> {
    let at = line.find(name)? + name.len();
    let value: String = line[at..]
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    value.parse().ok()
}

fn run_storm(
    client: &DriverClient,
    dir: &Path,
    requests: &[serde_json::Value],
) -> Vec<crate::clients::Outcome> {
    tokio::task::block_in_place(|| client.storm(dir, requests, 32))
}

/// `n` tmpfs mounts under one parent tmpfs.
struct MountPoints {
    dir: tempfile::TempDir,
}

impl MountPoints {
    fn new(n: usize) -> MountPoints {
        let dir = tempfile::Builder::new()
            .prefix("vsp-bench-fresh.")
            .tempdir()
            .expect("tempdir");
        let script = format!(
            "set -e; mount -t tmpfs -o size=16m,mode=0755 tmpfs {d}; \
             for i in $(seq 0 {last}); do mkdir {d}/v$i; \
             mount -t tmpfs -o size=64k,mode=0755 tmpfs {d}/v$i; done",
            d = dir.path().display(),
            last = n - 1
        );
        let ok = Command::new("sh")
            .args(["-c", &script])
            .stderr(Stdio::inherit())
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "8. cannot mount {n} tmpfs volumes (root is needed)");
        MountPoints { dir }
    }

    fn of(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("v{i}"))
    }
}

impl Drop for MountPoints {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-R")
            .arg(self.dir.path())
            .status();
    }
}

impl Freshness {
    pub fn markdown(&self, separately: bool) -> String {
        let minutes = self.window.as_secs_f64() / 60.0;
        let per_min = |n: usize| n as f64 / minutes;
        let n = self.volumes as f64;
        let issue_every_s = (CERT_TTL_S + BACKDATE_S) * 0.67 - BACKDATE_S;
        let unavoidable_kv = n / (INTERVAL_S / 60.0);
        let unavoidable_issues = n / (issue_every_s / 60.0);
        let unavoidable = unavoidable_kv + unavoidable_issues;
        let total = per_min(self.counts.total);
        let (p50, p99) = if self.lags_ms.is_empty() {
            (f64::NAN, f64::NAN)
        } else {
            (
                percentile(&self.lags_ms, 0.5),
                percentile(&self.lags_ms, 0.99),
            )
        };
        let mut out = String::new();
        out.push_str("## 8. Keeping volumes fresh (direct mode, no driver rotation)\n\n");
        if separately {
            out.push_str(&format!(
                "Measured {} with `make bench-freshness` (this section alone); load average before \
                 {}, after {}.\n\n",
                self.date, self.load_before, self.load_after
            ));
        }
        out.push_str(&format!(
            "{} tracked volumes, each a PKI certificate with a {CERT_TTL_S:.0} s TTL (re-issued at \
             `renewalPercent` 67, about {issue_every_s:.0} s after issue: PKI backdates \
             `not_before` by {BACKDATE_S:.0} s) and one KV object, `--refresh-interval 2m`; \
             mounted once each, in {} waves 6 s apart, then measured for {:.0} s with no Mount \
             at all. Vault requests from OpenBao's audit log.\n\n",
            self.volumes,
            self.waves,
            self.window.as_secs_f64()
        ));
        out.push_str("| | per minute | unavoidable per minute | ratio |\n|---|---|---|---|\n");
        out.push_str(&format!(
            "| Vault requests | {total:.0} | {unavoidable:.0} | {:.2}x |\n",
            total / unavoidable
        ));
        out.push_str(&format!(
            "| KV reads | {:.0} | {unavoidable_kv:.0} | {:.2}x |\n",
            per_min(self.counts.kv_reads),
            per_min(self.counts.kv_reads) / unavoidable_kv
        ));
        out.push_str(&format!(
            "| PKI issues | {:.0} | {unavoidable_issues:.0} | {:.2}x |\n",
            per_min(self.counts.pki_issues),
            per_min(self.counts.pki_issues) / unavoidable_issues
        ));
        out.push_str(&format!(
            "| logins, other | {:.1}, {:.1} | 0 | |\n\n",
            per_min(self.counts.logins),
            per_min(self.counts.other())
        ));
        out.push_str(&format!(
            "| Measure | Value | Target |\n|---|---|---|\n\
             | provider CPU | {:.0} ms per minute ({:.2}% of one core) | |\n\
             | provider VmRSS / VmHWM | {:.1} / {:.1} MiB | |\n\
             | refreshes (rewritten, failed) | {} ({}, {}) | |\n\
             | lag from due time to refresh done, p50 / p99 | {p50:.1} / {p99:.1} ms | p99 < 1 s |\n\
             | VmRSS / VmHWM with {} tracked volumes (mounted in {:.0} s) | {:.1} / {:.1} MiB | < 64 MiB |\n\n",
            self.cpu_ms / minutes,
            self.cpu_ms / minutes / 600.0,
            self.rss_kib.0 as f64 / 1024.0,
            self.rss_kib.1 as f64 / 1024.0,
            self.lags_ms.len(),
            self.rewrites,
            self.failed,
            self.big,
            self.big_mount_s,
            self.big_rss_kib.0 as f64 / 1024.0,
            self.big_rss_kib.1 as f64 / 1024.0,
        ));
        out.push_str(
            "A refresh that only a certificate made due reuses the volume's last KV response, \
             and the KV interval starts again whenever KV is read, so KV costs one read per \
             volume per interval and certificates one issue per lifetime. Tokens here live an \
             hour: no login or renewal falls in the window.\n",
        );
        out
    }
}
