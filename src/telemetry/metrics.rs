//! Prometheus metrics, served on `--health-addr` at `/metrics`.
//!
//! One process-wide [`Metrics`] ([`metrics()`]) so that the data path records
//! with one call and nothing has to be threaded through constructors. Recording
//! is a label lookup under a read lock plus an atomic add: cheap next to a Vault
//! round trip.
//!
//! Labels are closed sets chosen by us (operation, status class, gRPC code,
//! auth method), plus the pod's namespace on Mount counts: never a secret path,
//! object name, role, pod name or anything else a pod owner can make unbounded.

use std::sync::LazyLock;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::{Registry, Unit};

/// `Content-Type` of the Prometheus text format we serve by default.
pub const PROMETHEUS_CONTENT_TYPE: &str =
    prometheus_client::encoding::prometheus_text::CONTENT_TYPE;
/// `Content-Type` of the OpenMetrics text format, served when asked for.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Mount latency buckets, seconds: a warm Mount takes milliseconds, a cold one
/// a login more; the deadline is 30 s by default.
const MOUNT_BUCKETS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
/// Vault request latency buckets, seconds.
const VAULT_BUCKETS: [f64; 11] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

/// The process-wide metrics.
pub fn metrics() -> &'static Metrics {
    static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);
    &METRICS
}

/// A Vault HTTP call, by what it was for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operation {
    /// An auth method's login.
    Login,
    /// An object's request (any path and method).
    Read,
    /// `sys/health`, for `/readyz`.
    Health,
}

impl Operation {
    fn label(self) -> &'static str {
        match self {
            Self::Login => "login",
            Self::Read => "read",
            Self::Health => "health",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MountLabels {
    pod_namespace: String,
    result: &'static str,
    code: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    operation: &'static str,
    status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OperationLabel {
    operation: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LoginLabels {
    method: &'static str,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RenewalLabels {
    kind: &'static str,
    result: &'static str,
}

/// What a background renewal renewed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Renewed {
    /// A Vault token (`renew-self`).
    Token,
    /// A lease (`sys/leases/renew`).
    Lease,
}

/// What one refresh of a direct-mode volume did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refreshed {
    /// Same content: nothing written.
    Unchanged,
    /// New content written (and synced).
    Rewritten,
    /// Vault or the write failed; tried again after a backoff.
    Failed,
    /// A Kubernetes/JWT volume whose Vault token reached its max TTL: it
    /// waits for the driver's next Mount.
    Stale,
}

impl Refreshed {
    fn label(self) -> &'static str {
        match self {
            Self::Unchanged => "unchanged",
            Self::Rewritten => "rewritten",
            Self::Failed => "failed",
            Self::Stale => "stale",
        }
    }
}

/// Refresh lag buckets, seconds: how long after it was due a volume's
/// refresh finished.
const LAG_BUCKETS: [f64; 11] = [0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];

/// Every metric the provider exports, and the registry that encodes them.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    mounts: Family<MountLabels, Counter>,
    mount_duration: Family<ResultLabel, Histogram>,
    mounts_in_flight: Gauge,
    vault_requests: Family<RequestLabels, Counter>,
    vault_request_duration: Family<OperationLabel, Histogram>,
    logins: Family<LoginLabels, Counter>,
    token_cache_lookups: Family<ResultLabel, Counter>,
    token_cache_entries: Gauge,
    renewals: Family<RenewalLabels, Counter>,
    volume_refreshes: Family<ResultLabel, Counter>,
    volume_refresh_lag: Histogram,
    volumes_tracked: Gauge,
    volumes_stale: Gauge,
    volumes_forgotten: Counter,
    volumes_untracked: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A fresh set of metrics (the process uses [`metrics()`]; tests make their own).
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("vsp");
        let mounts = Family::default();
        registry.register(
            "mounts",
            "Mount calls answered, by pod namespace, result (success, failure) and gRPC code",
            mounts.clone(),
        );
        let mount_duration = Family::<ResultLabel, Histogram>::new_with_constructor(|| {
            Histogram::new(MOUNT_BUCKETS)
        });
        registry.register_with_unit(
            "mount_duration",
            "Time to answer a Mount, by result",
            Unit::Seconds,
            mount_duration.clone(),
        );
        let mounts_in_flight = Gauge::default();
        registry.register(
            "mounts_in_flight",
            "Mount calls being answered now",
            mounts_in_flight.clone(),
        );
        let vault_requests = Family::default();
        registry.register(
            "vault_requests",
            "HTTP requests to Vault, by operation (login, read, health) and status class \
             (2xx, 4xx, 5xx, ...; error when no response arrived)",
            vault_requests.clone(),
        );
        let vault_request_duration =
            Family::<OperationLabel, Histogram>::new_with_constructor(|| {
                Histogram::new(VAULT_BUCKETS)
            });
        registry.register_with_unit(
            "vault_request_duration",
            "Time until Vault's response headers arrived, by operation",
            Unit::Seconds,
            vault_request_duration.clone(),
        );
        let logins = Family::default();
        registry.register(
            "vault_logins",
            "Vault logins, by auth method and result (ok, or why it failed)",
            logins.clone(),
        );
        let token_cache_lookups = Family::default();
        registry.register(
            "token_cache_lookups",
            "Token cache lookups, by result: hit (cached token reused) or miss (login needed)",
            token_cache_lookups.clone(),
        );
        let token_cache_entries = Gauge::default();
        registry.register(
            "token_cache_entries",
            "Vault identities held in the token cache",
            token_cache_entries.clone(),
        );
        let renewals = Family::default();
        registry.register(
            "background_renewals",
            "Token and lease renewals made in the background, by kind (token, lease) and \
             result (ok, failed)",
            renewals.clone(),
        );
        let volume_refreshes = Family::default();
        registry.register(
            "volume_refreshes",
            "Refreshes of direct-mode volumes, by result (unchanged, rewritten, failed, stale)",
            volume_refreshes.clone(),
        );
        let volume_refresh_lag = Histogram::new(LAG_BUCKETS);
        registry.register_with_unit(
            "volume_refresh_lag",
            "How long after it was due a volume's refresh finished",
            Unit::Seconds,
            volume_refresh_lag.clone(),
        );
        let volumes_tracked = Gauge::default();
        registry.register(
            "volumes_tracked",
            "Direct-mode volumes the provider keeps fresh",
            volumes_tracked.clone(),
        );
        let volumes_stale = Gauge::default();
        registry.register(
            "volumes_stale",
            "Tracked volumes waiting for the driver's next Mount (Kubernetes/JWT auth past the \
             Vault token's max TTL)",
            volumes_stale.clone(),
        );
        let volumes_forgotten = Counter::default();
        registry.register(
            "volumes_forgotten",
            "Volumes no longer tracked because their target was unmounted or replaced",
            volumes_forgotten.clone(),
        );
        let volumes_untracked = Counter::default();
        registry.register(
            "volumes_untracked",
            "Direct-mode Mounts not kept fresh because --max-tracked-volumes (or a pod \
             namespace's quarter of it) was reached",
            volumes_untracked.clone(),
        );
        registry.register(
            "build",
            "The provider's version",
            Info::new(BuildLabels {
                version: env!("CARGO_PKG_VERSION"),
            }),
        );
        Self {
            registry,
            mounts,
            mount_duration,
            mounts_in_flight,
            vault_requests,
            vault_request_duration,
            logins,
            token_cache_lookups,
            token_cache_entries,
            renewals,
            volume_refreshes,
            volume_refresh_lag,
            volumes_tracked,
            volumes_stale,
            volumes_forgotten,
            volumes_untracked,
        }
    }

    /// One background renewal of `kind`: renewed (`ok`) or not.
    pub fn background_renewal(&self, kind: Renewed, ok: bool) {
        let kind = match kind {
            Renewed::Token => "token",
            Renewed::Lease => "lease",
        };
        let result = if ok { "ok" } else { "failed" };
        self.renewals
            .get_or_create(&RenewalLabels { kind, result })
            .inc();
    }

    /// One refresh of a direct-mode volume, finished `lag` after it was due.
    pub fn volume_refreshed(&self, result: Refreshed, lag: Duration) {
        self.volume_refreshes
            .get_or_create(&ResultLabel {
                result: result.label(),
            })
            .inc();
        self.volume_refresh_lag.observe(lag.as_secs_f64());
    }

    /// Direct-mode volumes tracked now, and how many of them are stale.
    pub fn volumes(&self, tracked: usize, stale: usize) {
        self.volumes_tracked
            .set(i64::try_from(tracked).unwrap_or(i64::MAX));
        self.volumes_stale
            .set(i64::try_from(stale).unwrap_or(i64::MAX));
    }

    /// A volume was forgotten (unmounted or replaced by another mount).
    pub fn volume_forgotten(&self) {
        self.volumes_forgotten.inc();
    }

    /// A direct-mode Mount was not tracked (capacity).
    pub fn volume_untracked(&self) {
        self.volumes_untracked.inc();
    }

    /// A Mount has started; call [`mount_finished`](Self::mount_finished) when it ends.
    pub fn mount_started(&self) {
        self.mounts_in_flight.inc();
    }

    /// A Mount has ended with gRPC `code` (`ok`, or the failure's label).
    pub fn mount_finished(&self, pod_namespace: &str, code: &'static str, elapsed: Duration) {
        self.mounts_in_flight.dec();
        let result = if code == "ok" { "success" } else { "failure" };
        self.mounts
            .get_or_create(&MountLabels {
                pod_namespace: pod_namespace.to_owned(),
                result,
                code,
            })
            .inc();
        self.mount_duration
            .get_or_create(&ResultLabel { result })
            .observe(elapsed.as_secs_f64());
    }

    /// One HTTP request to Vault; `status` is `None` when no response arrived.
    pub fn vault_request(&self, operation: Operation, status: Option<u16>, elapsed: Duration) {
        let operation = operation.label();
        self.vault_requests
            .get_or_create(&RequestLabels {
                operation,
                status: status_class(status),
            })
            .inc();
        self.vault_request_duration
            .get_or_create(&OperationLabel { operation })
            .observe(elapsed.as_secs_f64());
    }

    /// A login with auth `method`: its HTTP status (`None` when no response
    /// arrived) and `result` (`ok`, or the failure's label).
    pub fn login(
        &self,
        method: &'static str,
        status: Option<u16>,
        result: &'static str,
        elapsed: Duration,
    ) {
        self.vault_request(Operation::Login, status, elapsed);
        self.logins
            .get_or_create(&LoginLabels { method, result })
            .inc();
    }

    /// A token cache lookup: `hit` when a cached token was reused.
    pub fn token_lookup(&self, hit: bool) {
        let result = if hit { "hit" } else { "miss" };
        self.token_cache_lookups
            .get_or_create(&ResultLabel { result })
            .inc();
    }

    /// Encodes every metric, with the token cache size sampled now. OpenMetrics
    /// text when `openmetrics`, else Prometheus text 0.0.4.
    pub fn encode(&self, token_cache_entries: usize, openmetrics: bool) -> String {
        self.token_cache_entries
            .set(i64::try_from(token_cache_entries).unwrap_or(i64::MAX));
        let mut out = String::with_capacity(8 * 1024);
        let encoded = if openmetrics {
            prometheus_client::encoding::text::encode(&mut out, &self.registry)
        } else {
            prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry)
        };
        encoded.expect("writing to a String cannot fail");
        out
    }
}

fn status_class(status: Option<u16>) -> &'static str {
    match status {
        None => "error",
        Some(100..=199) => "1xx",
        Some(200..=299) => "2xx",
        Some(300..=399) => "3xx",
        Some(400..=499) => "4xx",
        Some(500..=599) => "5xx",
        Some(_) => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_show_up_in_both_formats() {
        let m = Metrics::new();
        m.mount_started();
        m.mount_finished("team-a", "ok", Duration::from_millis(12));
        m.mount_started();
        m.mount_finished("team-a", "permission_denied", Duration::from_millis(3));
        m.vault_request(Operation::Read, Some(200), Duration::from_millis(2));
        m.vault_request(Operation::Read, None, Duration::from_millis(2));
        m.login("approle", Some(400), "refused", Duration::from_millis(1));
        m.login("approle", Some(200), "ok", Duration::from_millis(1));
        m.token_lookup(true);
        m.token_lookup(false);

        let text = m.encode(3, false);
        for line in [
            r#"vsp_mounts_total{pod_namespace="team-a",result="success",code="ok"} 1"#,
            r#"vsp_mounts_total{pod_namespace="team-a",result="failure",code="permission_denied"} 1"#,
            r#"vsp_mount_duration_seconds_count{result="success"} 1"#,
            "vsp_mounts_in_flight 0",
            r#"vsp_vault_requests_total{operation="read",status="2xx"} 1"#,
            r#"vsp_vault_requests_total{operation="read",status="error"} 1"#,
            r#"vsp_vault_requests_total{operation="login",status="4xx"} 1"#,
            r#"vsp_vault_requests_total{operation="login",status="2xx"} 1"#,
            r#"vsp_vault_logins_total{method="approle",result="refused"} 1"#,
            r#"vsp_vault_logins_total{method="approle",result="ok"} 1"#,
            r#"vsp_token_cache_lookups_total{result="hit"} 1"#,
            "vsp_token_cache_entries 3",
            r#"vsp_build_info{version=""#,
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
        let open = m.encode(3, true);
        assert!(open.ends_with("# EOF\n"), "{open}");
        assert!(open.contains("vsp_mounts_total{"), "{open}");
    }

    #[test]
    fn status_classes() {
        assert_eq!(status_class(Some(204)), "2xx");
        assert_eq!(status_class(Some(503)), "5xx");
        assert_eq!(status_class(None), "error");
    }
}
