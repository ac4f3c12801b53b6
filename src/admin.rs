//! The admin HTTP endpoint on `--health-addr`: `/healthz`, `/readyz`,
//! `/metrics`. It sits above the server and the provider core, and looks at both.
//!
//! - `/healthz` (liveness): the gRPC server runs and its socket file is still
//!   in place. A socket deleted from under us cannot be reached by the driver
//!   again, so a restart is the right cure.
//! - `/readyz` (readiness): a real gRPC `Version` call over our own socket
//!   succeeds, i.e. the driver could talk to us now; with
//!   `--readyz-vault`, Vault's `sys/health` at `--vault-addr` must answer too.
//! - `/metrics`: Prometheus text (OpenMetrics when the scraper asks for it).
//!
//! Every answer is `200` or `503` with a one-line reason, `404` elsewhere.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::os::unix::fs::FileTypeExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::{TcpListener, UnixStream};

use crate::proto::VersionRequest;
use crate::proto::csi_driver_provider_client::CsiDriverProviderClient;
use crate::provider::Provider;
use crate::request::VaultTarget;
use crate::server::{API_VERSION, Serving};
use crate::telemetry::metrics::{OPENMETRICS_CONTENT_TYPE, PROMETHEUS_CONTENT_TYPE, metrics};

/// Budget for each readiness check: kubelet's probe timeout defaults to 1 s,
/// so both checks run concurrently and give up before it.
const CHECK_TIMEOUT: Duration = Duration::from_millis(900);

/// What the health endpoint looks at.
pub struct Health {
    /// Set while the gRPC server accepts connections.
    pub serving: Serving,
    /// The socket the driver calls.
    pub endpoint: PathBuf,
    /// The provider (for its token cache size, and its Vault client).
    pub provider: Arc<Provider>,
    /// `--readyz-vault`: the Vault whose `sys/health` readiness requires.
    pub vault_check: Option<VaultTarget>,
}

/// Binds the health listener.
pub async fn bind_health(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// Serves `/healthz`, `/readyz` and `/metrics` on `listener` until the process ends.
pub async fn serve_health(listener: TcpListener, health: Arc<Health>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let health = health.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let health = health.clone();
                async move { Ok::<_, Infallible>(health.respond(&req).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

impl Health {
    async fn respond<B>(&self, req: &Request<B>) -> Response<Full<Bytes>> {
        match req.uri().path() {
            "/healthz" => match self.live() {
                Ok(()) => text(StatusCode::OK, "ok\n".into()),
                Err(why) => text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("not live: {why}\n"),
                ),
            },
            "/readyz" => match self.ready().await {
                Ok(()) => text(StatusCode::OK, "ok\n".into()),
                Err(why) => text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("not ready: {why}\n"),
                ),
            },
            "/metrics" => {
                let openmetrics = req
                    .headers()
                    .get(hyper::header::ACCEPT)
                    .and_then(|v| v.to_str().ok())
                    .is_some_and(|v| v.contains("application/openmetrics-text"));
                let body = metrics().encode(self.provider.vault().tokens().len(), openmetrics);
                let content_type = if openmetrics {
                    OPENMETRICS_CONTENT_TYPE
                } else {
                    PROMETHEUS_CONTENT_TYPE
                };
                response(StatusCode::OK, content_type, body)
            }
            _ => text(StatusCode::NOT_FOUND, "not found\n".into()),
        }
    }

    fn live(&self) -> Result<(), String> {
        if !self.serving.get() {
            return Err("the gRPC server is not serving".into());
        }
        socket_present(&self.endpoint)
    }

    async fn ready(&self) -> Result<(), String> {
        self.live()?;
        let socket = async {
            tokio::time::timeout(CHECK_TIMEOUT, grpc_version(&self.endpoint))
                .await
                .map_err(|_| format!("gRPC Version call timed out after {CHECK_TIMEOUT:?}"))?
        };
        let vault = async {
            let Some(target) = &self.vault_check else {
                return Ok(());
            };
            self.provider
                .vault()
                .health(target, CHECK_TIMEOUT)
                .await
                .map_err(|err| format!("vault {}: {err}", target.address))
        };
        let (socket, vault) = tokio::join!(socket, vault);
        socket.and(vault)
    }
}

fn socket_present(endpoint: &Path) -> Result<(), String> {
    match std::fs::symlink_metadata(endpoint) {
        Ok(meta) if meta.file_type().is_socket() => Ok(()),
        Ok(_) => Err(format!("{} is no longer a socket", endpoint.display())),
        Err(err) => Err(format!("socket {}: {err}", endpoint.display())),
    }
}

/// Calls our own `Version` over the socket, the way the driver would.
async fn grpc_version(endpoint: &Path) -> Result<(), String> {
    let stream = UnixStream::connect(endpoint)
        .await
        .map_err(|err| format!("cannot connect to {}: {err}", endpoint.display()))?;
    let (sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .map_err(|err| format!("HTTP/2 handshake on {} failed: {err}", endpoint.display()))?;
    // Ends when the last sender is dropped, i.e. when this call returns.
    tokio::spawn(connection);
    let service = tower::service_fn(move |req: Request<tonic::body::Body>| {
        let mut sender = sender.clone();
        async move { sender.send_request(req).await }
    });
    let mut client =
        CsiDriverProviderClient::with_origin(service, http::Uri::from_static("http://localhost"));
    let response = client
        .version(VersionRequest {
            version: API_VERSION.to_owned(),
        })
        .await
        .map_err(|status| {
            format!(
                "gRPC Version call failed: {:?} {}",
                status.code(),
                status.message()
            )
        })?
        .into_inner();
    if response.version != API_VERSION {
        return Err(format!(
            "gRPC Version answered {:?}, expected {API_VERSION:?}",
            response.version
        ));
    }
    Ok(())
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    response(status, "text/plain; charset=utf-8", body)
}

fn response(status: StatusCode, content_type: &str, body: String) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header(hyper::header::CONTENT_TYPE, content_type)
        .header(hyper::header::CACHE_CONTROL, "no-store")
        .body(Full::new(Bytes::from(body)))
        .expect("valid response parts")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_socket_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vault.sock");
        assert!(socket_present(&path).is_err());
        std::fs::write(&path, b"").unwrap();
        assert!(
            socket_present(&path)
                .unwrap_err()
                .contains("no longer a socket")
        );
    }

    #[tokio::test]
    async fn version_call_fails_without_a_server() {
        let dir = tempfile::tempdir().unwrap();
        let err = grpc_version(&dir.path().join("vault.sock"))
            .await
            .unwrap_err();
        assert!(err.contains("cannot connect"), "{err}");
    }
}
