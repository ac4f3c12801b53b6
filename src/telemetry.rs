//! Logs and the health endpoint.
//!
//! Logging never carries secrets: the provider logs no attributes, secrets,
//! tokens or values, and the libraries below it that could (HTTP/2 and HTTP
//! frame traces, vaultrs' request traces) are capped whatever `--log-level`
//! says.

use std::convert::Infallible;
use std::net::SocketAddr;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tracing_subscriber::EnvFilter;

use crate::server::Serving;

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
    "hyper=info",
    "hyper_util=info",
    "reqwest=info",
    "rustls=info",
    "tower=info",
    "tonic=info",
    "loona_hpack=off",
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
            .with_current_span(false)
            .try_init(),
    };
    result.map_err(|err| format!("cannot install logger: {err}"))
}

/// Serves `/healthz` and `/readyz` on `addr` until the process ends.
pub async fn serve_health(listener: TcpListener, serving: Serving) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let serving = serving.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let serving = serving.clone();
                async move { Ok::<_, Infallible>(health_response(req.uri().path(), &serving)) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// Binds the health listener.
pub async fn bind_health(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

fn health_response(path: &str, serving: &Serving) -> Response<Full<Bytes>> {
    let (status, body) = match path {
        "/healthz" | "/readyz" if serving.get() => (StatusCode::OK, "ok\n"),
        "/healthz" | "/readyz" => (StatusCode::SERVICE_UNAVAILABLE, "socket not serving\n"),
        _ => (StatusCode::NOT_FOUND, "not found\n"),
    };
    Response::builder()
        .status(status)
        .header("content-type", "text/plain")
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .expect("static response")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn noisy_targets_are_capped_even_at_trace() {
        let directives = filter("trace").unwrap().to_string();
        assert!(directives.contains("vaultrs=off"), "{directives}");
        assert!(directives.contains("h2=info"), "{directives}");
        assert!(filter("not a level ===").is_err());
    }

    #[test]
    fn health_reflects_serving() {
        let serving = Serving::default();
        assert_eq!(
            health_response("/healthz", &serving).status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(
            health_response("/nope", &serving).status(),
            StatusCode::NOT_FOUND
        );
    }
}
