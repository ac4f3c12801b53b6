//! Results, statistics and the Markdown report (printed, and written to
//! `BENCHMARKS.md` by `make bench`).

use std::fmt::Write as _;

use crate::vault::Counts;

/// Nearest-rank percentile (`p` in 0..=1) of unsorted samples.
pub fn percentile(samples: &[f64], p: f64) -> f64 {
    assert!(!samples.is_empty(), "no samples");
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Median of unsorted values (the lower middle for an even count).
pub fn median(values: &[f64]) -> f64 {
    percentile(values, 0.5)
}

/// The median of each field of `counts`.
pub fn median_counts(counts: &[Counts]) -> Counts {
    let m = |f: fn(&Counts) -> usize| {
        median(&counts.iter().map(|c| f(c) as f64).collect::<Vec<_>>()) as usize
    };
    Counts {
        total: m(|c| c.total),
        logins: m(|c| c.logins),
        kv_reads: m(|c| c.kv_reads),
        pki_issues: m(|c| c.pki_issues),
    }
}

/// How big a run is.
#[derive(Clone, Copy, Debug)]
pub struct Scale {
    pub quick: bool,
    /// Repetitions of each latency and storm measurement.
    pub reps: usize,
    /// Sequential Mounts (and direct reads) per repetition, warm.
    pub samples: usize,
    /// Cold Mounts per repetition.
    pub cold_samples: usize,
    /// Pods in a storm.
    pub storm_pods: usize,
    /// Pods re-mounted in each simulated minute.
    pub rotation_pods: usize,
    /// Simulated minutes.
    pub rotation_minutes: usize,
    /// Pods whose state the provider caches for the memory measurement.
    pub cached_pods: usize,
    /// Provider start-ups timed.
    pub startups: usize,
    /// Mounts of each shape of nested YAML (section 7).
    pub refusal_samples: usize,
    /// The victim's sequential Mounts per run, with and without the attack.
    pub victim_samples: usize,
    /// Runs of the victim, with and without the attack, alternated.
    pub victim_reps: usize,
    /// The attacking tenant's concurrent Mounts.
    pub attackers: usize,
    /// Section 6 (side by side with HashiCorp's provider): repetitions of the
    /// warm and cold runs, each provider in turn.
    pub peer_reps: usize,
    /// Section 6: sequential warm Mounts per repetition and object count.
    pub peer_samples: usize,
    /// Section 6: cold Mounts per repetition.
    pub peer_cold: usize,
    /// Section 6: repetitions of the pod storm.
    pub peer_storm_reps: usize,
    /// Section 6: rotation polls of one pod with a certificate.
    pub peer_polls: usize,
}

impl Scale {
    pub const FULL: Scale = Scale {
        quick: false,
        reps: 5,
        samples: 200,
        cold_samples: 40,
        storm_pods: 200,
        rotation_pods: 500,
        rotation_minutes: 3,
        cached_pods: 10_000,
        startups: 10,
        refusal_samples: 20,
        victim_samples: 200,
        victim_reps: 5,
        attackers: 200,
        peer_reps: 3,
        peer_samples: 40,
        peer_cold: 20,
        peer_storm_reps: 2,
        peer_polls: 30,
    };
    pub const QUICK: Scale = Scale {
        quick: true,
        reps: 2,
        samples: 20,
        cold_samples: 5,
        storm_pods: 20,
        rotation_pods: 20,
        rotation_minutes: 2,
        cached_pods: 200,
        startups: 3,
        refusal_samples: 5,
        victim_samples: 30,
        victim_reps: 2,
        attackers: 40,
        peer_reps: 1,
        peer_samples: 10,
        peer_cold: 5,
        peer_storm_reps: 1,
        peer_polls: 5,
    };
}

/// Objects in each storm and cold Mount.
pub const STORM_OBJECTS: usize = 5;

/// Warm Mount latency for one object count; medians over repetitions, µs.
pub struct Warm {
    pub objects: usize,
    pub direct_p50: f64,
    pub direct_p99: f64,
    pub mount_p50: f64,
    pub mount_p99: f64,
    pub provider_p50: f64,
    pub ratio_p50: f64,
    pub ratio_p99: f64,
    pub provider_ratio_p50: f64,
    /// The same Mount path and files with nothing to read.
    pub floor_p50: f64,
    /// The provider's own time for a floor Mount.
    pub floor_provider_p50: f64,
    /// CPU the provider process spent per Mount (all threads), µs.
    pub provider_cpu: f64,
    /// (Mount − floor) / direct.
    pub above_floor_ratio_p50: f64,
}

/// Cold Mount (login included); medians over repetitions, µs.
pub struct Cold {
    pub direct_p50: f64,
    pub mount_p50: f64,
    pub mount_p99: f64,
    pub ratio_p50: f64,
    pub mounts: usize,
    pub logins: usize,
}

/// One kind of pod storm; medians over repetitions.
pub struct Storm {
    pub label: &'static str,
    pub identities: String,
    pub total_ms: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// Over all repetitions.
    pub failures: usize,
    pub first_failure: Option<String>,
    pub logins: Counts,
}

/// Rotation polls with or without the certificate cache.
pub struct Rotation {
    pub cached: bool,
    /// Median per simulated minute.
    pub per_minute: Counts,
    /// Median wall time of one simulated minute's Mounts.
    pub seconds: f64,
}

/// Memory and start-up.
pub struct Memory {
    pub startup_ms: Vec<f64>,
    /// VmRSS one second after start-up, KiB (median over start-ups).
    pub idle_rss: f64,
    pub idle_hwm: f64,
    /// The long-running provider after the latency and storm runs.
    pub after_runs_rss: f64,
    pub after_runs_hwm: f64,
    pub cached: Vec<Cached>,
}

/// What a provider holds for many pods, each cached on a fresh provider.
pub struct Cached {
    pub label: &'static str,
    pub pods: usize,
    pub failures: usize,
    pub audit: Counts,
    pub token_entries: usize,
    /// KiB.
    pub empty_rss: f64,
    pub rss: f64,
    pub hwm: f64,
    pub fill_seconds: f64,
}

/// Everything section 7 measured.
pub struct Tenants {
    pub date: String,
    pub load_before: String,
    pub load_after: String,
    pub refusals: Vec<Refusal>,
    pub worst: Vec<Worst>,
    pub victim: Victim,
}

/// Mounts of one shape of nested YAML, one after another.
pub struct Refusal {
    pub label: &'static str,
    pub bytes: usize,
    pub samples: usize,
    /// Refused with `InvalidArgument` naming `objects`.
    pub refused: usize,
    pub first_other: Option<String>,
    /// End to end through the driver's client, ms.
    pub median_ms: f64,
    pub max_ms: f64,
    /// The provider's own time (`duration_ms` of its `mount failed` line), ms.
    pub provider_median_ms: f64,
    pub provider_max_ms: f64,
}

/// One heavy Mount, `concurrency` at once, on a fresh provider.
pub struct Worst {
    pub label: String,
    pub concurrency: usize,
    /// e.g. `4 × ResourceExhausted`.
    pub outcome: String,
    /// VmHWM of the fresh provider before, and after the Mounts, KiB.
    pub hwm_before: u64,
    pub hwm_after: u64,
    pub seconds: f64,
    /// The first error's message, shortened.
    pub first_error: Option<String>,
}

/// Tenant B's warm Mount with and without tenant A's flood; medians over
/// repetitions, µs.
pub struct Victim {
    pub samples: usize,
    pub reps: usize,
    pub attackers: usize,
    pub base_p50: f64,
    pub base_p99: f64,
    pub attack_p50: f64,
    pub attack_p99: f64,
    /// Median over repetitions of (p99 under attack / p99 without).
    pub ratio_p99: f64,
    pub ratio_p50: f64,
    /// Most of A's requests the slow server held at once (a request the
    /// provider gave up on no longer counts).
    pub held_max: usize,
    /// A's Mounts in flight in the provider while B measured (smallest seen).
    pub attack_in_flight: usize,
    pub victim_failures: usize,
    pub first_failure: Option<String>,
}

/// The DaemonSet's memory limit (`daemonset/`: 128Mi).
pub const MEMORY_LIMIT_MIB: f64 = 128.0;
/// Refusal of 1 MiB of nested YAML, end to end.
pub const REFUSAL_TARGET_MS: f64 = 100.0;
/// The victim's p99 under attack, against without.
pub const VICTIM_TARGET: f64 = 2.0;

/// Where and how the run happened.
pub struct Machine {
    pub date: String,
    pub cpu: String,
    pub cores: usize,
    pub memory: String,
    pub kernel: String,
    pub load_before: String,
    pub load_after: String,
    pub rustc: String,
    pub openbao: String,
    pub driver_client: String,
    pub tmpfs: bool,
}

/// Everything one run measured.
pub struct Results {
    pub scale: Scale,
    pub machine: Machine,
    pub warm: Vec<Warm>,
    pub cold: Cold,
    pub storms: Vec<Storm>,
    pub rotation: Vec<Rotation>,
    pub memory: Memory,
    pub peer: crate::hashicorp::Peer,
    pub tenants: Tenants,
    pub freshness: crate::freshness::Freshness,
}

fn us(v: f64) -> String {
    format!("{v:.0} µs")
}

fn ms(v: f64) -> String {
    format!("{v:.1} ms")
}

fn mib(kib: f64) -> String {
    format!("{:.1} MiB", kib / 1024.0)
}

fn verdict(met: bool) -> &'static str {
    if met { "met" } else { "**missed**" }
}

const WARM_TARGET: f64 = 1.2;
const IDLE_RSS_TARGET_MIB: f64 = 15.0;
const CACHED_RSS_TARGET_MIB: f64 = 64.0;
const STARTUP_TARGET_MS: f64 = 100.0;

impl Results {
    /// The report, as Markdown.
    pub fn markdown(&self) -> String {
        let s = &self.scale;
        let m = &self.machine;
        let mut out = String::new();
        let w = &mut out;
        writeln!(w, "# Benchmarks").unwrap();
        writeln!(w).unwrap();
        if s.quick {
            writeln!(w, "**Quick run (`make bench-quick`): small samples, a smoke test, not a measurement.**\n").unwrap();
        }
        writeln!(
            w,
            "Generated by `make bench` (`cargo bench --bench provider`, source in `benches/provider/`); \
             do not edit by hand: run it again.\n"
        )
        .unwrap();
        writeln!(w, "- Date: {}", m.date).unwrap();
        writeln!(
            w,
            "- Command: `{}`",
            if s.quick {
                "make bench-quick"
            } else {
                "make bench"
            }
        )
        .unwrap();
        writeln!(
            w,
            "- Machine: {} cores (`nproc`), {}, memory {} (`free -h` total / available), Linux {}",
            m.cores, m.cpu, m.memory, m.kernel
        )
        .unwrap();
        writeln!(
            w,
            "- Load average (1/5/15 min): {} at the start, {} at the end",
            m.load_before, m.load_after
        )
        .unwrap();
        writeln!(
            w,
            "- Software: {}; OpenBao {} (dev server, in-memory storage; its file audit device, which counts requests, is on for sections 3–5 and the counted runs of 6 only); \
             driver client: Secrets Store CSI Driver {}; provider built with the release profile; \
             pod volumes on {}",
            m.rustc,
            m.openbao,
            m.driver_client,
            if m.tmpfs { "tmpfs" } else { "a plain directory (not root: no tmpfs)" }
        )
        .unwrap();
        writeln!(
            w,
            "- Everything runs on this one machine over loopback: OpenBao, the provider, the driver's \
             client and the bench share the cores. Medians over {} repetitions unless said otherwise.\n",
            s.reps
        )
        .unwrap();

        writeln!(w, "## Summary\n").unwrap();
        writeln!(w, "| Quality bar | Measured | Target | |").unwrap();
        writeln!(w, "|---|---|---|---|").unwrap();
        for warm in &self.warm {
            writeln!(
                w,
                "| Warm Mount, {} KV object(s): Mount p50 / direct reads p50 | {:.2}x ({} vs {}) | ≤ {WARM_TARGET}x | {} |",
                warm.objects,
                warm.ratio_p50,
                us(warm.mount_p50),
                us(warm.direct_p50),
                verdict(warm.ratio_p50 <= WARM_TARGET)
            )
            .unwrap();
        }
        if let Some(storm) = self.storms.first() {
            writeln!(
                w,
                "| Pod storm, {} pods × {STORM_OBJECTS} objects, 2 AppRole identities: failures, logins | {} failures, {} logins | 0, 2 | {} |",
                s.storm_pods,
                storm.failures,
                storm.logins.logins,
                verdict(storm.failures == 0 && storm.logins.logins == 2)
            )
            .unwrap();
        }
        let mem = &self.memory;
        writeln!(
            w,
            "| Idle RSS (VmRSS) | {} | < {IDLE_RSS_TARGET_MIB} MiB | {} |",
            mib(mem.idle_rss),
            verdict(mem.idle_rss / 1024.0 < IDLE_RSS_TARGET_MIB)
        )
        .unwrap();
        for c in &mem.cached {
            writeln!(
                w,
                "| RSS with {} cached pods: {} (VmRSS / VmHWM) | {} / {} | < {CACHED_RSS_TARGET_MIB} MiB | {} |",
                c.pods,
                c.label,
                mib(c.rss),
                mib(c.hwm),
                verdict(c.rss / 1024.0 < CACHED_RSS_TARGET_MIB)
            )
            .unwrap();
        }
        let startup = median(&mem.startup_ms);
        writeln!(
            w,
            "| Start-up: process start → first `Version` answered (median) | {} | < {STARTUP_TARGET_MS} ms | {} |",
            ms(startup),
            verdict(startup < STARTUP_TARGET_MS)
        )
        .unwrap();
        write!(w, "{}", self.tenants.summary_rows()).unwrap();
        writeln!(w, "{}", self.peer.summary_row()).unwrap();

        writeln!(w, "## 1. Warm Mount latency (token cached)\n").unwrap();
        writeln!(
            w,
            "One pod mounts N KV v2 objects (one secret each, `secretKey`), {} times in a row per repetition, \
             through the driver's client (`storm --concurrency 1`, one gRPC connection). Columns:\n\n\
             - **direct**: the same N reads (same AppRole identity, same paths and namespace) by a minimal client in \
             the bench process: reqwest over a warm keep-alive pool, at most 16 in flight like our Mount, each \
             response read and parsed as JSON. The limit for a Mount.\n\
             - **Mount**: `micros` of the driver client's `MountContent` call: gRPC over the Unix socket, our \
             provider's whole Mount, and the driver's atomic write of the files into the pod's volume. Process \
             start-up and the socket dial are excluded.\n\
             - **provider**: the provider's own time for the Mount (`duration_ms` of its `mount succeeded` line: \
             request parsing, token cache, Vault reads, rendering, versions); **provider CPU**: the CPU time \
             its process spent per Mount (all threads, from `/proc/<pid>/task/*/schedstat`), gRPC included.\n\
             - **floor**: a Mount of N template objects of static text instead (the same files, no Vault request): \
             the fixed cost of any Mount — gRPC round trip over the socket, parsing, the driver's atomic write; \
             in brackets the provider's own time for it. \
             **above floor** = (Mount − floor) / direct: what the reads cost inside a Mount, against doing them directly.\n\
             - Ratios are taken inside each repetition (direct and Mount measured back to back), then the median \
             of the repetitions is shown.\n",
            s.samples
        )
        .unwrap();
        writeln!(
            w,
            "| objects | direct p50 | direct p99 | Mount p50 | Mount p99 | provider p50 | provider CPU | floor p50 | Mount/direct p50 | Mount/direct p99 | provider/direct p50 | above floor p50 |"
        )
        .unwrap();
        writeln!(w, "|---|---|---|---|---|---|---|---|---|---|---|---|").unwrap();
        for r in &self.warm {
            writeln!(
                w,
                "| {} | {} | {} | {} | {} | {} | {} | {} ({}) | {:.2}x | {:.2}x | {:.2}x | {:.2}x |",
                r.objects,
                us(r.direct_p50),
                us(r.direct_p99),
                us(r.mount_p50),
                us(r.mount_p99),
                us(r.provider_p50),
                us(r.provider_cpu),
                us(r.floor_p50),
                us(r.floor_provider_p50),
                r.ratio_p50,
                r.ratio_p99,
                r.provider_ratio_p50,
                r.above_floor_ratio_p50
            )
            .unwrap();
        }
        writeln!(
            w,
            "\nA read from OpenBao over loopback takes well under a millisecond here, so the fixed cost of any Mount \
             (the floor: the driver's gRPC call over the socket and its atomic write of the files — paid by every \
             provider, absent from the direct client) weighs most on small Mounts. The provider/direct and above-floor \
             columns isolate what our provider adds to the reads themselves.\n"
        )
        .unwrap();

        let c = &self.cold;
        writeln!(w, "## 2. Cold Mount (login included)\n").unwrap();
        writeln!(
            w,
            "{} Mounts of {STORM_OBJECTS} KV objects per repetition, one after another, each with a new AppRole secret ID \
             (a new identity, so a login). Direct: AppRole login then the same reads, with the bench's client.\n",
            s.cold_samples
        )
        .unwrap();
        writeln!(w, "| direct p50 | Mount p50 | Mount p99 | Mount/direct p50 | Vault logins (tokens created) / Mounts, all repetitions |").unwrap();
        writeln!(w, "|---|---|---|---|---|").unwrap();
        writeln!(
            w,
            "| {} | {} | {} | {:.2}x | {} / {} |\n",
            us(c.direct_p50),
            us(c.mount_p50),
            us(c.mount_p99),
            c.ratio_p50,
            c.logins,
            c.mounts
        )
        .unwrap();

        writeln!(w, "## 3. Pod storm\n").unwrap();
        writeln!(
            w,
            "{} pods × {STORM_OBJECTS} KV objects mounted at once: {} concurrent `MountContent` calls on one connection \
             to the socket, as the driver makes them. Total = from the start of the fan-out to the last answer; \
             p50/p99 per Mount from the driver client; Vault requests counted in OpenBao's audit log. Each repetition \
             uses new identities, so logins are cold.\n",
            s.storm_pods, s.storm_pods
        )
        .unwrap();
        writeln!(w, "| auth | identities | total | p50 | p99 | failures (all reps) | Vault logins | Vault KV reads | reads / object |").unwrap();
        writeln!(w, "|---|---|---|---|---|---|---|---|---|").unwrap();
        for r in &self.storms {
            writeln!(
                w,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {:.2} |",
                r.label,
                r.identities,
                ms(r.total_ms),
                ms(r.p50_ms),
                ms(r.p99_ms),
                r.failures,
                r.logins.logins,
                r.logins.kv_reads,
                r.logins.kv_reads as f64 / (s.storm_pods * STORM_OBJECTS) as f64
            )
            .unwrap();
        }
        for r in &self.storms {
            if let Some(first) = &r.first_failure {
                writeln!(w, "\nFirst failure ({}): `{first}`", r.label).unwrap();
            }
        }
        writeln!(w).unwrap();

        writeln!(w, "## 4. Rotation load\n").unwrap();
        writeln!(
            w,
            "{} pods, each with a TLS certificate and its key (one PKI issue, EC P-256, TTL 24 h) and one KV secret, \
             2 AppRole identities. After the pods' first Mount, each simulated minute re-mounts every pod once \
             (8 at a time, as fast as they go: time is compressed); the table shows the median over {} minutes \
             of the Vault requests counted in the audit log. \"Without\" is the same provider with \
             `--lease-cache-size 1`, so a pod's certificate is gone by its next poll — every poll re-issues, \
             which is what HashiCorp's provider does (its issue #238).\n",
            s.rotation_pods, s.rotation_minutes
        )
        .unwrap();
        writeln!(w, "| certificate cache | Vault requests / minute | PKI issues | KV reads | logins | other | wall time of a minute's Mounts |").unwrap();
        writeln!(w, "|---|---|---|---|---|---|---|").unwrap();
        for r in &self.rotation {
            let c = &r.per_minute;
            writeln!(
                w,
                "| {} | {} | {} | {} | {} | {} | {:.1} s |",
                if r.cached {
                    "with (default)"
                } else {
                    "without"
                },
                c.total,
                c.pki_issues,
                c.kv_reads,
                c.logins,
                c.other(),
                r.seconds
            )
            .unwrap();
        }
        if let [with, without] = self.rotation.as_slice() {
            writeln!(
                w,
                "\nWith the cache a certificate is re-issued only after `renewalPercent` (67%) of its lifetime: \
                 for 24 h certificates {} pods cause {:.2} issues per minute in steady state instead of {}. \
                 Requests per minute, with / without: {:.2}.",
                s.rotation_pods,
                s.rotation_pods as f64 / (0.67 * 24.0 * 60.0),
                without.per_minute.pki_issues,
                with.per_minute.total as f64 / without.per_minute.total.max(1) as f64
            )
            .unwrap();
        }
        writeln!(w).unwrap();

        writeln!(w, "## 5. Memory and start-up\n").unwrap();
        writeln!(
            w,
            "RSS from `/proc/<pid>/status` (VmRSS now, VmHWM peak). Start-up: from spawning \
             `vault-secrets-provider serve` to the first gRPC `Version` answered on its socket (polled every \
             0.5 ms), {} start-ups; idle RSS one second after each. Cached pods: {} pods mounted 16 at a time on \
             a fresh provider, whose caches keep the default capacity (10,000 each); RSS one second after the \
             last Mount. A pod's certificate is a PKI issue (EC P-256, with its key and CA chain: the whole \
             response is kept, as every rendering may need it) in the certificate cache; a JWT-auth pod has its \
             own pod-bound Vault token in the token cache, while AppRole pods share their identity's token.\n",
            s.startups, s.cached_pods
        )
        .unwrap();
        writeln!(w, "| measure | value |").unwrap();
        writeln!(w, "|---|---|").unwrap();
        writeln!(
            w,
            "| start-up to first `Version`: median / min / max | {} / {} / {} |",
            ms(startup),
            ms(mem.startup_ms.iter().copied().fold(f64::INFINITY, f64::min)),
            ms(mem.startup_ms.iter().copied().fold(0.0, f64::max))
        )
        .unwrap();
        writeln!(
            w,
            "| idle RSS (VmRSS / VmHWM) | {} / {} |",
            mib(mem.idle_rss),
            mib(mem.idle_hwm)
        )
        .unwrap();
        writeln!(
            w,
            "| after sections 1–3 (VmRSS / VmHWM) | {} / {} |\n",
            mib(mem.after_runs_rss),
            mib(mem.after_runs_hwm)
        )
        .unwrap();
        writeln!(w, "| cached pods | VmRSS before → after | VmHWM | per pod | fill time | failures | Vault logins | PKI issues | token cache entries |").unwrap();
        writeln!(w, "|---|---|---|---|---|---|---|---|---|").unwrap();
        for c in &mem.cached {
            writeln!(
                w,
                "| {} × {} | {} → {} | {} | {:.1} KiB | {:.1} s | {} | {} | {} | {} |",
                c.pods,
                c.label,
                mib(c.empty_rss),
                mib(c.rss),
                mib(c.hwm),
                (c.rss - c.empty_rss) / c.pods as f64,
                c.fill_seconds,
                c.failures,
                c.audit.logins,
                c.audit.pki_issues,
                c.token_entries
            )
            .unwrap();
        }
        writeln!(w).unwrap();

        out.push_str(&self.peer.markdown(false));
        out.push_str(&self.tenants.markdown(false));
        out.push('\n');
        out.push_str(&self.freshness.markdown(false));
        out
    }
}

impl Tenants {
    /// The slowest refusal, end to end, ms.
    fn slowest_refusal(&self) -> f64 {
        self.refusals.iter().map(|r| r.max_ms).fold(0.0, f64::max)
    }

    fn all_refused(&self) -> bool {
        self.refusals.iter().all(|r| r.refused == r.samples)
    }

    /// The highest peak memory of any case, KiB.
    fn worst_hwm(&self) -> Option<&Worst> {
        self.worst.iter().max_by_key(|w| w.hwm_after)
    }

    /// The three rows of the summary table (and of section 7's own).
    pub fn summary_rows(&self) -> String {
        let mut out = String::new();
        let w = &mut out;
        let median_ms = median(
            &self
                .refusals
                .iter()
                .map(|r| r.median_ms)
                .collect::<Vec<_>>(),
        );
        writeln!(
            w,
            "| Multi-tenant: refusing ~1 MiB of nested `objects` YAML (InvalidArgument), end to end: slowest / median | {} / {} | < {REFUSAL_TARGET_MS} ms | {} |",
            ms(self.slowest_refusal()),
            ms(median_ms),
            verdict(self.all_refused() && self.slowest_refusal() < REFUSAL_TARGET_MS)
        )
        .unwrap();
        if let Some(worst) = self.worst_hwm() {
            writeln!(
                w,
                "| Multi-tenant: provider peak RSS (VmHWM) under the worst Mount within the limits ({} × {}) | {} | < {MEMORY_LIMIT_MIB} MiB (DaemonSet limit) | {} |",
                worst.concurrency,
                worst.label,
                mib(worst.hwm_after as f64),
                verdict((worst.hwm_after as f64) / 1024.0 < MEMORY_LIMIT_MIB)
            )
            .unwrap();
        }
        let v = &self.victim;
        writeln!(
            w,
            "| Multi-tenant: another tenant's warm Mount p99 while one tenant floods a slow Vault / without | {:.2}x ({} vs {}; p50 {} vs {}) | ≤ {VICTIM_TARGET}x | {} |",
            v.ratio_p99,
            us(v.attack_p99),
            us(v.base_p99),
            us(v.attack_p50),
            us(v.base_p50),
            verdict(v.victim_failures == 0 && v.ratio_p99 <= VICTIM_TARGET)
        )
        .unwrap();
        out
    }

    /// Section 7. `separately`: measured on its own (`make bench-tenants`),
    /// not in the run the rest of the file comes from.
    pub fn markdown(&self, separately: bool) -> String {
        let mut out = String::new();
        let w = &mut out;
        writeln!(w, "## 7. Multi-tenant\n").unwrap();
        if separately {
            writeln!(
                w,
                "Measured separately from the sections above, with `make bench-tenants` \
                 (`cargo bench --bench provider -- --only tenants --write BENCHMARKS.md`, which replaces only this \
                 section), on {}; load average (1/5/15 min) {} at the start, {} at the end. Same machine, OpenBao \
                 and driver client as above; OpenBao's audit device off.\n",
                self.date, self.load_before, self.load_after
            )
            .unwrap();
        }
        writeln!(
            w,
            "One node's provider serves tenants who do not trust each other. Tenant A attacks; tenant B (another pod \
             namespace) just mounts. Where a real Vault cannot be made to misbehave (huge, dense or never-ending \
             answers), a **hostile test server of our own on loopback** plays tenant A's \"Vault\": the provider is \
             started with it as an allowed origin (`--allowed-vault-addr`), as an operator who allows tenants' own \
             Vaults would. Every other flag keeps its default (`--max-response-size` 4 MiB, `--max-mount-bytes` \
             8 MiB, `--max-in-flight-per-namespace` 16, `--mount-timeout` 30 s).\n"
        )
        .unwrap();
        writeln!(w, "| Multi-tenant | Measured | Target | |").unwrap();
        writeln!(w, "|---|---|---|---|").unwrap();
        write!(w, "{}", self.summary_rows()).unwrap();
        writeln!(w).unwrap();

        writeln!(w, "### Refusing nested YAML\n").unwrap();
        writeln!(
            w,
            "One object whose `secretArgs` nests as deep as ~1 MiB of `objects` allows (the parameter's limit is \
             1 MiB), mounted one after another through the driver's client. End to end: the driver client's \
             `MountContent` call (the 1 MiB request over the socket included); provider: its own time \
             (`duration_ms` of its `mount failed` line). Every Mount must be refused with `InvalidArgument` naming \
             `objects` (\"nested deeper than 32 levels\").\n"
        )
        .unwrap();
        writeln!(
            w,
            "| shape | `objects` bytes | refused / Mounts | end to end median | end to end max | provider median | provider max |"
        )
        .unwrap();
        writeln!(w, "|---|---|---|---|---|---|---|").unwrap();
        for r in &self.refusals {
            writeln!(
                w,
                "| {} | {} | {} / {} | {} | {} | {} | {} |",
                r.label,
                r.bytes,
                r.refused,
                r.samples,
                ms(r.median_ms),
                ms(r.max_ms),
                ms(r.provider_median_ms),
                ms(r.provider_max_ms)
            )
            .unwrap();
        }
        for r in &self.refusals {
            if let Some(other) = &r.first_other {
                writeln!(w, "\nNot refused as expected ({}): `{other}`", r.label).unwrap();
            }
        }
        writeln!(w).unwrap();

        writeln!(w, "### The worst single Mount within the limits\n").unwrap();
        writeln!(
            w,
            "Each case on a fresh provider (default budgets), one Mount and then four at once from the same \
             tenant; VmHWM (peak resident memory, `/proc/<pid>/status`) of the provider before and after, \
             against the DaemonSet's limit of {MEMORY_LIMIT_MIB} MiB. Template cases need no Vault; the others read \
             from the hostile test server (its answers are streamed; every other one has no `Content-Length`). \
             A dense answer is small on the wire but many values once parsed.\n"
        )
        .unwrap();
        writeln!(
            w,
            "| Mount | at once | answers | VmHWM before → after | wall time | first error |"
        )
        .unwrap();
        writeln!(w, "|---|---|---|---|---|---|").unwrap();
        for c in &self.worst {
            writeln!(
                w,
                "| {} | {} | {} | {} → {} | {:.2} s | {} |",
                c.label,
                c.concurrency,
                c.outcome,
                mib(c.hwm_before as f64),
                mib(c.hwm_after as f64),
                c.seconds,
                c.first_error
                    .as_deref()
                    .map_or(String::new(), |e| format!("`{}`", e.replace('|', "\\|")))
            )
            .unwrap();
        }
        writeln!(w).unwrap();

        let v = &self.victim;
        writeln!(w, "### Another tenant's latency under a flood\n").unwrap();
        writeln!(
            w,
            "Tenant B (pod namespace `tenant-b`, AppRole, token cached) mounts 1 KV object from the real OpenBao, \
             {} times in a row (`storm --concurrency 1`), without and then with tenant A's attack, alternating which \
             comes first, {} repetitions; medians of the repetitions' p50/p99, ratios taken inside each repetition. \
             The attack: {} concurrent Mounts from pod namespace `tenant-a`, each with its own AppRole identity, \
             against the slow hostile server, which holds every request until the measurement ends (then answers \
             403). B is measured once all of A's Mounts are inside the provider (`vsp_mounts_in_flight`) and its \
             requests are held. The attacker and the victim each run their own driver client process (two \
             connections to the socket).\n",
            v.samples, v.reps, v.attackers
        )
        .unwrap();
        writeln!(
            w,
            "| B p50 without | B p99 without | B p50 under attack | B p99 under attack | p50 ratio | p99 ratio | A's Mounts in flight during B's run (fewest seen at its end) | A's requests held by the slow server (most at once) | B failures |"
        )
        .unwrap();
        writeln!(w, "|---|---|---|---|---|---|---|---|---|").unwrap();
        writeln!(
            w,
            "| {} | {} | {} | {} | {:.2}x | {:.2}x | {} | {} | {} |",
            us(v.base_p50),
            us(v.base_p99),
            us(v.attack_p50),
            us(v.attack_p99),
            v.ratio_p50,
            v.ratio_p99,
            v.attack_in_flight,
            v.held_max,
            v.victim_failures
        )
        .unwrap();
        if let Some(first) = &v.first_failure {
            writeln!(w, "\nFirst failure of B: `{first}`").unwrap();
        }
        writeln!(w).unwrap();
        out
    }
}

/// `file` (a whole report) with the section whose heading starts with
/// `heading` (e.g. `"## 7. "`) replaced by `section`, or `section` put before
/// the next section's heading (appended when there is none); the rest kept
/// as it is.
pub fn replace_section(file: &str, heading: &str, section: &str) -> String {
    let Some(start) = file.find(heading) else {
        // Keep the sections in order: before the first later-numbered one.
        let number: u32 = heading
            .trim_start_matches('#')
            .trim()
            .split('.')
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or(u32::MAX);
        let later = file.match_indices("\n## ").find(|(i, _)| {
            file[i + 4..]
                .split('.')
                .next()
                .and_then(|n| n.parse::<u32>().ok())
                .is_some_and(|n| n > number)
        });
        return match later {
            Some((i, _)) => format!("{}\n{}{}", &file[..=i], section, &file[i + 1..]),
            None => {
                let mut out = file.trim_end().to_owned();
                out.push_str("\n\n");
                out.push_str(section);
                out
            }
        };
    };
    let after = start + heading.len();
    let end = file[after..]
        .find("\n## ")
        .map_or(file.len(), |i| after + i + 1);
    format!("{}{}{}", &file[..start], section, &file[end..])
}

/// `file` with its summary-table line that starts with `prefix` replaced by
/// `row` (a whole line, newline included); unchanged when it has none.
pub fn replace_row(file: &str, prefix: &str, row: &str) -> String {
    let Some(start) = file.find(prefix) else {
        return file.to_owned();
    };
    let end = file[start..]
        .find('\n')
        .map_or(file.len(), |i| start + i + 1);
    format!("{}{}{}", &file[..start], row, &file[end..])
}
