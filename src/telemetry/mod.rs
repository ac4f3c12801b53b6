//! Logs, metrics and health: what an operator sees of the provider.
//!
//! - this module: log setup (`--log-level`, `--log-format`);
//! - [`metrics`]: the Prometheus metrics, recorded with closed `&'static str`
//!   labels so that this module depends on nothing else in the crate.
//!
//! The per-Mount span and log line are the server's (`server::observer`); the
//! HTTP endpoint serving `/metrics` is [`crate::admin`].
//!
//! Logging never carries secrets: the provider logs no attributes, secrets,
//! tokens or values, and the libraries below it that could (HTTP/2 and HTTP
//! frame traces, vaultrs' request traces) are capped whatever `--log-level`
//! says.

pub mod metrics;

use tracing_subscriber::EnvFilter;

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
}
