//! [`MountObserver`]: the one span, log line and metric update per Mount.

use std::time::{Duration, Instant};

use tracing::Span;
use tracing::field::Empty;

use crate::proto::MountResponse;
use crate::provider::MountError;
use crate::telemetry::metrics;

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
/// [`crate::provider::Provider::mount`] once the request is parsed), one log line when it ends (duration, result,
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
    use crate::telemetry::metrics::metrics;

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
