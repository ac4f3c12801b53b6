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
        }
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
