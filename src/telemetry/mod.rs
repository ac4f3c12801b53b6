//! Logs, metrics and health: what an operator sees of the provider.
//!
//! - this module: log setup (`--log-level`, `--log-format`) and
//!   [`MountObserver`], the one span, log line and metric update per Mount;
//! - [`metrics`]: the Prometheus metrics;
//! - [`health`]: the HTTP endpoint (`/healthz`, `/readyz`, `/metrics`).
//!
//! Logging never carries secrets: the provider logs no attributes, secrets,
//! tokens or values, and the libraries below it that could (HTTP/2 and HTTP
//! frame traces, vaultrs' request traces) are capped whatever `--log-level`
//! says.

pub mod health;
pub mod metrics;

use std::time::{Duration, Instant};

use tracing::Span;
use tracing::field::Empty;
use tracing_subscriber::EnvFilter;

use crate::error::MountError;
use crate::proto::MountResponse;
pub use health::{Health, bind_health, serve_health};
pub use metrics::metrics;

/// Log output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Targets whose verbose output may include headers or bodies: never below
/// `info`, and vaultrs/rustify (which trace request bodies) never at all.
const CAPS: &[&str] = &[
    "h2=info",
    "loona_hpack=off",
    "hyper=info",
    "hyper_util=info",
    "reqwest=info",
    "rustls=info",
    "tower=info",
    "tonic=info",
    "vaultrs=off",
    "rustify=off",
];

/// Builds the log filter for `level` (a level or an `EnvFilter` directive list).
pub fn filter(level: &str) -> Result<EnvFilter, String> {
    let mut directives = level.to_owned();
    for cap in CAPS {
        directives.push(',');
        directives.push_str(cap);
    }
    EnvFilter::try_new(&directives).map_err(|err| format!("invalid --log-level {level:?}: {err}"))
}

/// Installs the global logger, writing to stderr.
pub fn init(level: &str, format: LogFormat) -> Result<(), String> {
    let filter = filter(level)?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false);
    let result = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
    };
    result.map_err(|err| format!("cannot install logger: {err}"))
}

/// The pod and SecretProviderClass of a Mount, read leniently from the raw
/// `attributes` (only these keys), so that a request that does not parse is
/// still logged with them.
#[derive(Debug, Default, serde::Deserialize)]
struct MountContext {
    #[serde(rename = "csi.storage.k8s.io/pod.namespace")]
    pod_namespace: Option<String>,
    #[serde(rename = "csi.storage.k8s.io/pod.name")]
    pod_name: Option<String>,
    #[serde(rename = "csi.storage.k8s.io/pod.uid")]
    pod_uid: Option<String>,
    #[serde(rename = "secretProviderClass")]
    spc: Option<String>,
}

/// Observes one Mount: a `mount` span carrying the pod's namespace, name and
/// UID and the SecretProviderClass name (its `objects` field is recorded by
/// [`crate::mount::Provider::mount`] once the request is parsed), one log line when it ends (duration, result,
/// and the error a pod owner sees), and the Mount metrics. A Mount dropped
/// before it ends (the driver hung up) is logged and counted as `cancelled`.
///
/// Nothing from the request but those names is recorded: never attributes,
/// secrets, tokens or values.
pub struct MountObserver {
    span: Span,
    pod_namespace: String,
    started: Instant,
    finished: bool,
}

impl MountObserver {
    /// Starts observing a Mount whose raw `attributes` are given.
    pub fn start(attributes: &str) -> Self {
        let context: MountContext = serde_json::from_str(attributes).unwrap_or_default();
        // At ERROR level so that the span is enabled whenever any of the
        // Mount's lines is (`--log-level warn` still shows which pod failed).
        let span = tracing::error_span!(
            "mount",
            pod_namespace = context.pod_namespace.as_deref(),
            pod_name = context.pod_name.as_deref(),
            pod_uid = context.pod_uid.as_deref(),
            spc = context.spc.as_deref(),
            objects = Empty,
        );
        metrics().mount_started();
        Self {
            span,
            pod_namespace: context.pod_namespace.unwrap_or_default(),
            started: Instant::now(),
            finished: false,
        }
    }

    /// The Mount's span: run the Mount inside it.
    pub fn span(&self) -> &Span {
        &self.span
    }

    /// Logs and counts the Mount's result.
    pub fn finish(mut self, result: &Result<MountResponse, MountError>) {
        self.finished = true;
        let elapsed = self.started.elapsed();
        let duration_ms = millis(elapsed);
        let _entered = self.span.enter();
        let code = match result {
            Ok(_) => {
                tracing::info!(duration_ms, result = "ok", "mount succeeded");
                "ok"
            }
            Err(err) => {
                let code = err.label();
                tracing::warn!(duration_ms, result = code, error = %err, "mount failed");
                code
            }
        };
        metrics().mount_finished(&self.pod_namespace, code, elapsed);
    }
}

impl Drop for MountObserver {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        let elapsed = self.started.elapsed();
        let _entered = self.span.enter();
        tracing::warn!(
            duration_ms = millis(elapsed),
            result = "cancelled",
            "mount cancelled: the driver closed the call before it ended"
        );
        metrics().mount_finished(&self.pod_namespace, "cancelled", elapsed);
    }
}

fn millis(elapsed: Duration) -> f64 {
    (elapsed.as_secs_f64() * 1e6).round() / 1e3
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn noisy_targets_are_capped_even_at_trace() {
        let directives = filter("trace").unwrap().to_string();
        assert!(directives.contains("vaultrs=off"), "{directives}");
        assert!(directives.contains("h2=info"), "{directives}");
        assert!(directives.contains("loona_hpack=off"), "{directives}");
        assert!(filter("not a level ===").is_err());
    }

    #[test]
    fn a_mount_dropped_before_it_ends_counts_as_cancelled() {
        let attributes = r#"{"csi.storage.k8s.io/pod.namespace":"unit-cancel"}"#;
        drop(MountObserver::start(attributes));
        MountObserver::start(attributes).finish(&Err(MountError::Timeout(Duration::ZERO)));
        let text = metrics().encode(0, false);
        for line in [
            r#"vsp_mounts_total{pod_namespace="unit-cancel",result="failure",code="cancelled"} 1"#,
            r#"vsp_mounts_total{pod_namespace="unit-cancel",result="failure",code="unavailable"} 1"#,
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
    }

    #[test]
    fn mount_context_is_read_leniently() {
        let context: MountContext = serde_json::from_str(
            r#"{"csi.storage.k8s.io/pod.name":"p","secretProviderClass":"spc","objects":"- x"}"#,
        )
        .unwrap();
        assert_eq!(context.pod_name.as_deref(), Some("p"));
        assert_eq!(context.spc.as_deref(), Some("spc"));
        assert!(context.pod_namespace.is_none());
        assert!(serde_json::from_str::<MountContext>("not json").is_err());
    }
}
