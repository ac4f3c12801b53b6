//! `make bench`: the provider measured against its performance targets (warm Mount within
//! 1.2x of direct reads, storms with one login per identity, RSS, start-up) on one OpenBao.
//!
//! 1. Warm Mount latency against the same reads done directly.
//! 2. Cold Mount (login included) and the login count.
//! 3. Pod storms: many pods at once, AppRole (2 identities) and JWT (one per pod).
//! 4. Rotation load with and without the per-pod certificate cache.
//! 5. Memory (idle, after the runs, with many cached pods) and start-up time.
//! 6. Side by side with HashiCorp's `vault-csi-provider` (`hashicorp.rs`),
//!    stock and unthrottled, on JWT auth; needs the peer's builds and a
//!    kube-apiserver (`make bench` provides both), else says why not.
//! 7. Multi-tenant (`tenants.rs`): refusing nested YAML, the worst Mount's
//!    peak memory, another tenant's latency while one floods a slow Vault.
//! 8. Freshness (`freshness.rs`): direct-mode volumes kept fresh by the
//!    provider alone: Vault requests, CPU, RSS and lag per tracked volume.
//!
//! Mounts go through the Secrets Store CSI Driver's own provider client
//! (`tests/driver-client`, v1.6 build, its `storm` subcommand); Vault requests
//! are counted in OpenBao's audit log. `report.rs` explains every column in
//! the report it writes.
//!
//! Usage (through cargo, which passes `--bench`):
//! `cargo bench --bench provider -- [--quick] [--write BENCHMARKS.md]`.
//! `-- --only tenants` runs section 7 alone, `-- --only freshness` section 8;
//! with `--write` each replaces only its section of the file
//! (`make bench-tenants`, `make bench-freshness`). `-- --only hashicorp` does
//! the same for section 6 and its summary row (`make bench-hashicorp`).
//! `cargo test --all-targets` runs this file without `--bench`: it then does
//! nothing, so `make test` never runs the benchmark.

#[path = "../../tests/support/mod.rs"]
mod support;

#[path = "../../tests/peers/hashicorp.rs"]
mod hashicorp_peer;

mod clients;
mod freshness;
mod hashicorp;
mod report;
mod tenants;
mod vault;

use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use serde_json::Value;

use clients::{
    Direct, DriverClient, Outcome, Volumes, cpu_ns, logged_mount_micros, request, rss_kib,
};
use report::{
    Cached, Cold, Machine, Memory, Results, Rotation, STORM_OBJECTS, Scale, Storm, Warm, median,
    median_counts, percentile,
};
use support::provider::Provider;
use vault::{
    Fixture, NAMESPACE, approle_attributes, approle_secrets, jwt_attributes, kv_name, kv_objects,
    pki_objects, template_objects,
};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if !args.iter().any(|a| a == "--bench") {
        println!("benches/provider: run it with `make bench` or `make bench-quick`");
        return ExitCode::SUCCESS;
    }
    let mut scale = if args.iter().any(|a| a == "--quick") {
        Scale::QUICK
    } else {
        Scale::FULL
    };
    if let Some(i) = args.iter().position(|a| a == "--cached-pods") {
        scale.cached_pods = args
            .get(i + 1)
            .and_then(|n| n.parse().ok())
            .expect("--cached-pods needs a number");
    }
    let write = args
        .iter()
        .position(|a| a == "--write")
        .map(|i| args.get(i + 1).expect("--write needs a file name").clone());
    if write.is_some() && scale.quick {
        eprintln!("--write records a full run only; drop --quick");
        return ExitCode::FAILURE;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    match args
        .iter()
        .position(|a| a == "--only")
        .map(|i| args.get(i + 1))
    {
        None => {}
        Some(Some(section)) if section == "tenants" => {
            let section = runtime.block_on(only_tenants(scale)).markdown(true);
            println!("{section}");
            if let Some(path) = write {
                let file = std::fs::read_to_string(&path).unwrap_or_default();
                std::fs::write(&path, report::replace_section(&file, "## 7. ", &section))
                    .expect("write the report");
                eprintln!("bench: section 7 replaced in {path}");
            }
            return ExitCode::SUCCESS;
        }
        Some(Some(section)) if section == "freshness" => {
            let section = runtime.block_on(only_freshness(scale)).markdown(true);
            println!("{section}");
            if let Some(path) = write {
                let file = std::fs::read_to_string(&path).unwrap_or_default();
                std::fs::write(&path, report::replace_section(&file, "## 8. ", &section))
                    .expect("write the report");
                eprintln!("bench: section 8 replaced in {path}");
            }
            return ExitCode::SUCCESS;
        }
        Some(Some(section)) if section == "hashicorp" => {
            let peer = runtime.block_on(only_hashicorp(scale));
            let section = peer.markdown(true);
            println!("{section}");
            if let Some(path) = write {
                let file = std::fs::read_to_string(&path).unwrap_or_default();
                let file = report::replace_section(&file, "## 6. ", &section);
                let file = report::replace_row(
                    &file,
                    "| Side by side with HashiCorp's",
                    &peer.summary_row(),
                );
                std::fs::write(&path, file).expect("write the report");
                eprintln!("bench: section 6 and its summary row replaced in {path}");
            }
            return ExitCode::SUCCESS;
        }
        Some(other) => {
            eprintln!("--only takes `tenants`, `freshness` or `hashicorp` (got {other:?})");
            return ExitCode::FAILURE;
        }
    }
    let report = runtime.block_on(run(scale)).markdown();
    println!("{report}");
    if let Some(path) = write {
        std::fs::write(&path, &report).expect("write the report");
        eprintln!("bench: report written to {path}");
    }
    ExitCode::SUCCESS
}

fn progress(what: &str) {
    eprintln!("bench: {what}");
}

async fn run(scale: Scale) -> Results {
    let load_before = loadavg();
    progress("starting OpenBao and setting it up");
    let f = Fixture::start().await;
    let client = DriverClient::v1_6();
    let volumes = Volumes::new();
    // Latency without the audit device's two log writes per request; it is
    // turned on where Vault requests are counted (sections 3 to 5).
    f.set_audit(false).await;

    progress("5. start-up and idle memory");
    let mut startup_ms = Vec::new();
    let mut idle = Vec::new();
    for _ in 0..scale.startups {
        let (elapsed, running) = clients::start_and_time(&f.bao.addr).await;
        startup_ms.push(elapsed.as_secs_f64() * 1e3);
        tokio::time::sleep(Duration::from_secs(1)).await;
        idle.push(rss_kib(running.pid()));
    }

    let provider = Provider::start(&f.bao.addr, &["--log-level", "info"]);
    let direct = Direct::new(&f.bao.addr, NAMESPACE);

    let mut warm = Vec::new();
    for objects in [1, 5, 20] {
        progress(&format!("1. warm Mount latency, {objects} object(s)"));
        warm.push(warm_latency(&f, &provider, &client, &volumes, &direct, objects, scale).await);
        progress(&format!(
            "   provider VmRSS/VmHWM {:?} KiB",
            rss_kib(provider.pid())
        ));
    }
    progress("2. cold Mount");
    let cold = cold_mount(&f, &provider, &client, &volumes, &direct, scale).await;
    progress(&format!(
        "   provider VmRSS/VmHWM {:?} KiB",
        rss_kib(provider.pid())
    ));
    f.set_audit(true).await;
    progress("3. pod storms");
    let mut storms = Vec::new();
    for jwt in [false, true] {
        storms.push(storm(&f, &provider, &client, &volumes, scale, jwt).await);
        progress(&format!(
            "   provider VmRSS/VmHWM {:?} KiB",
            rss_kib(provider.pid())
        ));
    }
    let after_runs = rss_kib(provider.pid());
    drop(provider);

    progress("4. rotation load");
    let rotation = vec![
        rotation(&f, &client, &volumes, scale, true).await,
        rotation(&f, &client, &volumes, scale, false).await,
    ];

    let mut cached = Vec::new();
    for kind in [
        PodKind::AppRoleCertificate,
        PodKind::JwtToken,
        PodKind::JwtCertificate,
    ] {
        progress(&format!("5. memory with {} cached pods", scale.cached_pods));
        cached.push(cached_memory(&f, &client, &volumes, scale, kind).await);
    }
    f.set_audit(false).await;
    let peer = hashicorp::run(&f, &client, &volumes, scale).await;
    let tenants = tenants::run(&f, &client, &volumes, scale).await;
    f.set_audit(true).await;
    let freshness = freshness::run(&f, &client, scale).await;
    f.set_audit(false).await;
    let kib = |values: Vec<u64>| median(&values.into_iter().map(|v| v as f64).collect::<Vec<_>>());
    let memory = Memory {
        startup_ms,
        idle_rss: kib(idle.iter().map(|i| i.0).collect()),
        idle_hwm: kib(idle.iter().map(|i| i.1).collect()),
        after_runs_rss: after_runs.0 as f64,
        after_runs_hwm: after_runs.1 as f64,
        cached,
    };

    let machine = machine(load_before, volumes.is_tmpfs());
    Results {
        scale,
        machine,
        warm,
        cold,
        storms,
        rotation,
        memory,
        peer,
        tenants,
        freshness,
    }
}

/// Section 7 alone, on its own OpenBao.
async fn only_tenants(scale: Scale) -> report::Tenants {
    progress("starting OpenBao and setting it up");
    let f = Fixture::start().await;
    f.set_audit(false).await;
    tenants::run(&f, &DriverClient::v1_6(), &Volumes::new(), scale).await
}

async fn only_freshness(scale: Scale) -> freshness::Freshness {
    progress("starting OpenBao and setting it up");
    let f = Fixture::start().await;
    freshness::run(&f, &DriverClient::v1_6(), scale).await
}

/// Section 6 alone, on its own OpenBao.
async fn only_hashicorp(scale: Scale) -> hashicorp::Peer {
    progress("starting OpenBao and setting it up");
    let f = Fixture::start().await;
    f.set_audit(false).await;
    hashicorp::run(&f, &DriverClient::v1_6(), &Volumes::new(), scale).await
}

/// Runs a storm off the async workers (the driver client is a process we wait for).
fn run_storm(
    client: &DriverClient,
    provider_dir: &std::path::Path,
    requests: &[Value],
    concurrency: usize,
) -> Vec<Outcome> {
    tokio::task::block_in_place(|| client.storm(provider_dir, requests, concurrency))
}

fn assert_all_ok(outcomes: &[Outcome], what: &str) {
    if let Some(failed) = outcomes.iter().find(|o| !o.ok) {
        panic!("{what}: a Mount failed: {}", failed.message);
    }
}

fn micros(outcomes: &[Outcome]) -> Vec<f64> {
    outcomes.iter().map(|o| o.micros).collect()
}

async fn warm_latency(
    f: &Fixture,
    provider: &Provider,
    client: &DriverClient,
    volumes: &Volumes,
    direct: &Direct,
    objects: usize,
    scale: Scale,
) -> Warm {
    let secret_id = f.secret_id(0).await;
    let pod = format!("warm-{objects}");
    let attributes = approle_attributes(&f.role_ids[0], &kv_objects(objects), &pod);
    let one = request(&attributes, &approle_secrets(&secret_id), &volumes.of(&pod));
    let requests = vec![one; scale.samples];
    // The floor: the same files from template objects, so no Vault request.
    let floor_attributes = approle_attributes(&f.role_ids[0], &template_objects(objects), &pod);
    let floor = vec![
        request(
            &floor_attributes,
            &approle_secrets(&secret_id),
            &volumes.of(&pod)
        );
        scale.samples
    ];
    let token = direct.login(&f.role_ids[0], &secret_id).await;
    let paths: Vec<String> = (1..=objects)
        .map(|i| format!("secret/data/{}", kv_name(i)))
        .collect();

    // Warm-up: the provider's token and connections, the direct pool.
    assert_all_ok(
        &run_storm(
            client,
            provider.providers_dir(),
            &requests[..20.min(requests.len())],
            1,
        ),
        "warm-up",
    );
    for _ in 0..20 {
        direct.read_all(&token, &paths).await;
    }

    let mut per_rep: Vec<[f64; 10]> = Vec::new();
    for _ in 0..scale.reps {
        let mut direct_us = Vec::with_capacity(scale.samples);
        for _ in 0..scale.samples {
            direct_us.push(direct.read_all(&token, &paths).await.as_secs_f64() * 1e6);
        }
        let log_from = provider.log().len();
        let cpu_before = cpu_ns(provider.pid());
        let outcomes = run_storm(client, provider.providers_dir(), &requests, 1);
        let cpu_us = (cpu_ns(provider.pid()) - cpu_before) as f64 / 1e3 / scale.samples as f64;
        assert_all_ok(&outcomes, "warm Mount");
        let mount_us = micros(&outcomes);
        let provider_us = logged_mount_micros(&provider.log(), log_from);
        assert_eq!(provider_us.len(), scale.samples, "one log line per Mount");
        let (d50, d99) = (percentile(&direct_us, 0.5), percentile(&direct_us, 0.99));
        let (m50, m99) = (percentile(&mount_us, 0.5), percentile(&mount_us, 0.99));
        let p50 = percentile(&provider_us, 0.5);
        let log_from = provider.log().len();
        let floor_outcomes = run_storm(client, provider.providers_dir(), &floor, 1);
        assert_all_ok(&floor_outcomes, "Mount floor");
        let f50 = percentile(&micros(&floor_outcomes), 0.5);
        let floor_provider = percentile(&logged_mount_micros(&provider.log(), log_from), 0.5);
        per_rep.push([
            d50,
            d99,
            m50,
            m99,
            p50,
            m50 / d50,
            m99 / d99,
            f50,
            cpu_us,
            floor_provider,
        ]);
    }
    let col = |i: usize| median(&per_rep.iter().map(|r| r[i]).collect::<Vec<_>>());
    Warm {
        objects,
        direct_p50: col(0),
        direct_p99: col(1),
        mount_p50: col(2),
        mount_p99: col(3),
        provider_p50: col(4),
        ratio_p50: col(5),
        ratio_p99: col(6),
        provider_ratio_p50: median(&per_rep.iter().map(|r| r[4] / r[0]).collect::<Vec<_>>()),
        floor_p50: col(7),
        provider_cpu: col(8),
        floor_provider_p50: col(9),
        above_floor_ratio_p50: median(
            &per_rep
                .iter()
                .map(|r| (r[2] - r[7]) / r[0])
                .collect::<Vec<_>>(),
        ),
    }
}

async fn cold_mount(
    f: &Fixture,
    provider: &Provider,
    client: &DriverClient,
    volumes: &Volumes,
    direct: &Direct,
    scale: Scale,
) -> Cold {
    let objects = kv_objects(STORM_OBJECTS);
    let paths: Vec<String> = (1..=STORM_OBJECTS)
        .map(|i| format!("secret/data/{}", kv_name(i)))
        .collect();
    let (mut per_rep, mut mounts, mut logins) = (Vec::new(), 0, 0);
    for rep in 0..scale.reps {
        let mut requests = Vec::new();
        let mut direct_ids = Vec::new();
        for i in 0..scale.cold_samples {
            let pod = format!("cold-{rep}-{i}");
            let attributes = approle_attributes(&f.role_ids[0], &objects, &pod);
            let secrets = approle_secrets(&f.secret_id(0).await);
            requests.push(request(&attributes, &secrets, &volumes.of(&pod)));
            direct_ids.push(f.secret_id(0).await);
        }
        let mut direct_us = Vec::new();
        for secret_id in &direct_ids {
            let started = Instant::now();
            let token = direct.login(&f.role_ids[0], secret_id).await;
            direct.read_all(&token, &paths).await;
            direct_us.push(started.elapsed().as_secs_f64() * 1e6);
        }
        let tokens_before = f.token_count().await;
        let outcomes = run_storm(client, provider.providers_dir(), &requests, 1);
        assert_all_ok(&outcomes, "cold Mount");
        logins += f.token_count().await - tokens_before;
        mounts += outcomes.len();
        let mount_us = micros(&outcomes);
        let (d50, m50) = (percentile(&direct_us, 0.5), percentile(&mount_us, 0.5));
        per_rep.push([d50, m50, percentile(&mount_us, 0.99), m50 / d50]);
    }
    let col = |i: usize| median(&per_rep.iter().map(|r| r[i]).collect::<Vec<_>>());
    Cold {
        direct_p50: col(0),
        mount_p50: col(1),
        mount_p99: col(2),
        ratio_p50: col(3),
        mounts,
        logins,
    }
}

async fn storm(
    f: &Fixture,
    provider: &Provider,
    client: &DriverClient,
    volumes: &Volumes,
    scale: Scale,
    jwt: bool,
) -> Storm {
    let objects = kv_objects(STORM_OBJECTS);
    let (mut totals, mut p50s, mut p99s, mut counts) = (vec![], vec![], vec![], vec![]);
    let (mut failures, mut first_failure) = (0, None);
    for rep in 0..scale.reps {
        let secret_ids = [f.secret_id(0).await, f.secret_id(1).await];
        let requests: Vec<Value> = (0..scale.storm_pods)
            .map(|i| {
                if jwt {
                    let pod = format!("storm-jwt-{rep}-{i}");
                    let attributes = jwt_attributes(&objects, &pod, &f.pod_jwt(&pod));
                    request(&attributes, "null", &volumes.of(&pod))
                } else {
                    let pod = format!("storm-{rep}-{i}");
                    let attributes = approle_attributes(&f.role_ids[i % 2], &objects, &pod);
                    request(
                        &attributes,
                        &approle_secrets(&secret_ids[i % 2]),
                        &volumes.of(&pod),
                    )
                }
            })
            .collect();
        let mark = f.audit.mark();
        let outcomes = run_storm(
            client,
            provider.providers_dir(),
            &requests,
            scale.storm_pods,
        );
        counts.push(f.audit.since(mark));
        for o in outcomes.iter().filter(|o| !o.ok) {
            failures += 1;
            first_failure.get_or_insert_with(|| o.message.clone());
        }
        let mount_us = micros(&outcomes);
        totals.push(outcomes.iter().map(|o| o.end_micros).fold(0.0, f64::max) / 1e3);
        p50s.push(percentile(&mount_us, 0.5) / 1e3);
        p99s.push(percentile(&mount_us, 0.99) / 1e3);
    }
    Storm {
        label: if jwt { "JWT" } else { "AppRole" },
        identities: if jwt {
            format!("{} (one per pod)", scale.storm_pods)
        } else {
            "2".to_owned()
        },
        total_ms: median(&totals),
        p50_ms: median(&p50s),
        p99_ms: median(&p99s),
        failures,
        first_failure,
        logins: median_counts(&counts),
    }
}

/// Concurrent re-mounts during a simulated minute.
const ROTATION_CONCURRENCY: usize = 8;

async fn rotation(
    f: &Fixture,
    client: &DriverClient,
    volumes: &Volumes,
    scale: Scale,
    cached: bool,
) -> Rotation {
    let mut flags = vec!["--log-level", "info"];
    if !cached {
        flags.extend(["--lease-cache-size", "1"]);
    }
    let provider = Provider::start(&f.bao.addr, &flags);
    let secret_ids = [f.secret_id(0).await, f.secret_id(1).await];
    let objects = pki_objects();
    let tag = if cached { "rot-cache" } else { "rot-nocache" };
    let requests: Vec<Value> = (0..scale.rotation_pods)
        .map(|i| {
            let pod = format!("{tag}-{i}");
            let attributes = approle_attributes(&f.role_ids[i % 2], &objects, &pod);
            request(
                &attributes,
                &approle_secrets(&secret_ids[i % 2]),
                &volumes.of(&pod),
            )
        })
        .collect();
    // The pods start.
    assert_all_ok(
        &run_storm(
            client,
            provider.providers_dir(),
            &requests,
            ROTATION_CONCURRENCY,
        ),
        "rotation: first Mounts",
    );
    let (mut minutes, mut seconds) = (Vec::new(), Vec::new());
    for _ in 0..scale.rotation_minutes {
        let mark = f.audit.mark();
        let started = Instant::now();
        let outcomes = run_storm(
            client,
            provider.providers_dir(),
            &requests,
            ROTATION_CONCURRENCY,
        );
        seconds.push(started.elapsed().as_secs_f64());
        assert_all_ok(&outcomes, "rotation poll");
        minutes.push(f.audit.since(mark));
    }
    Rotation {
        cached,
        per_minute: median_counts(&minutes),
        seconds: median(&seconds),
    }
}

/// What the cached pods mount and how they log in.
#[derive(Clone, Copy)]
enum PodKind {
    /// AppRole (2 identities) + a certificate: only the certificate cache grows.
    AppRoleCertificate,
    /// JWT + KV only: only the token cache grows.
    JwtToken,
    /// JWT + a certificate: both grow.
    JwtCertificate,
}

async fn cached_memory(
    f: &Fixture,
    client: &DriverClient,
    volumes: &Volumes,
    scale: Scale,
    kind: PodKind,
) -> Cached {
    let provider = Provider::start(&f.bao.addr, &["--log-level", "info"]);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (empty_rss, _) = rss_kib(provider.pid());
    let secret_ids = [f.secret_id(0).await, f.secret_id(1).await];
    let (label, tag) = match kind {
        PodKind::AppRoleCertificate => ("AppRole, a certificate each", "mem-cert"),
        PodKind::JwtToken => ("JWT, a token each", "mem-token"),
        PodKind::JwtCertificate => ("JWT, a token and a certificate each", "mem-both"),
    };
    let requests: Vec<Value> = (0..scale.cached_pods)
        .map(|i| {
            let pod = format!("{tag}-{i}");
            let volume = volumes.of(&pod);
            match kind {
                PodKind::AppRoleCertificate => request(
                    &approle_attributes(&f.role_ids[i % 2], &pki_objects(), &pod),
                    &approle_secrets(&secret_ids[i % 2]),
                    &volume,
                ),
                PodKind::JwtToken => request(
                    &jwt_attributes(&kv_objects(1), &pod, &f.pod_jwt(&pod)),
                    "null",
                    &volume,
                ),
                PodKind::JwtCertificate => request(
                    &jwt_attributes(&pki_objects(), &pod, &f.pod_jwt(&pod)),
                    "null",
                    &volume,
                ),
            }
        })
        .collect();
    let mark = f.audit.mark();
    let started = Instant::now();
    let outcomes = run_storm(client, provider.providers_dir(), &requests, 16);
    let fill_seconds = started.elapsed().as_secs_f64();
    let audit = f.audit.since(mark);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (rss, hwm) = rss_kib(provider.pid());
    let (_, _, metrics) = provider.get("/metrics").await;
    let token_entries = metrics
        .lines()
        .find_map(|l| l.strip_prefix("vsp_token_cache_entries "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    Cached {
        label,
        pods: scale.cached_pods,
        failures: outcomes.iter().filter(|o| !o.ok).count(),
        audit,
        token_entries,
        empty_rss: empty_rss as f64,
        rss: rss as f64,
        hwm: hwm as f64,
        fill_seconds,
    }
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn command_line(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

fn machine(load_before: String, tmpfs: bool) -> Machine {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".to_owned());
    let free = command_line("free", &["-h"]);
    let memory = free
        .lines()
        .find(|l| l.starts_with("Mem:"))
        .map(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            format!(
                "{} / {}",
                cols.get(1).unwrap_or(&"?"),
                cols.get(6).unwrap_or(&"?")
            )
        })
        .unwrap_or_default();
    let bao_bin = std::env::var("VSP_TEST_BAO_BIN").unwrap_or_default();
    let openbao = command_line(&bao_bin, &["version"])
        .split_whitespace()
        .nth(1)
        .unwrap_or("?")
        .to_owned();
    let driver = command_line(
        &format!(
            "{}/driver-client-v1.6",
            std::env::var("VSP_TEST_DRIVER_CLIENT_DIR").unwrap_or_default()
        ),
        &["version"],
    );
    let driver_client = driver
        .lines()
        .find_map(|l| l.strip_prefix("sigs.k8s.io/secrets-store-csi-driver "))
        .unwrap_or("?")
        .to_owned();
    Machine {
        date: command_line("date", &["-u", "+%Y-%m-%d %H:%M UTC"]),
        cpu,
        cores: std::thread::available_parallelism().map_or(0, |n| n.get()),
        memory,
        kernel: command_line("uname", &["-r"]),
        load_before,
        load_after: loadavg(),
        rustc: command_line("rustc", &["--version"]),
        openbao,
        driver_client,
        tmpfs,
    }
}
