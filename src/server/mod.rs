//! The Unix socket and the driver's gRPC service.
//!
//! The socket is created atomically with its final mode (bound under a
//! temporary name, chmod-ed, then renamed into place), so there is no moment
//! when it is open to everyone. A stale socket from a previous run is
//! replaced; any other kind of file at that path is left alone and reported.
//! On shutdown the server stops accepting, lets in-flight Mounts finish, and
//! removes its socket.

pub mod authority;
mod observer;
pub mod peer;

use std::fs;
use std::future::Future;
use std::io;
use std::os::unix::fs::{FileTypeExt as _, MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::TryStreamExt as _;
use tokio::net::UnixListener;
use tokio_stream::wrappers::UnixListenerStream;
use tonic::{Request, Response, Status};
use tracing::Instrument as _;

use crate::proto::csi_driver_provider_server::{CsiDriverProvider, CsiDriverProviderServer};
use crate::proto::{MountRequest, MountResponse, VersionRequest, VersionResponse};
use crate::provider::{MountError, Provider};
use authority::AuthorityRepair;
use observer::MountObserver;

/// The protocol version the driver speaks.
pub const API_VERSION: &str = "v1alpha1";
/// Our name in `VersionResponse.runtime_name`.
pub const RUNTIME_NAME: &str = "vault-secrets-provider";

/// How the gRPC server runs.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Socket path.
    pub endpoint: PathBuf,
    /// Socket file mode (0600 by default: only root, i.e. the driver).
    pub socket_mode: u32,
    /// Our own deadline for one Mount, applied even when the driver sends none.
    pub mount_timeout: Duration,
    /// How long shutdown waits for in-flight Mounts.
    pub drain_timeout: Duration,
    /// Largest Mount response sent; the driver refuses bigger ones (its
    /// `--max-call-recv-msg-size`, 4 MiB by default).
    pub max_response_bytes: usize,
    /// Uids allowed to call besides our own (empty: everyone the socket's
    /// mode lets in).
    pub allowed_peer_uids: Vec<u32>,
}

/// Above this, the driver's sync to a Kubernetes Secret fails (a Secret
/// holds at most 1 MiB), so the Mount logs a warning.
const SECRET_SYNC_LIMIT: usize = 1 << 20;

/// Set while the socket accepts connections; read by the health endpoint.
#[derive(Clone, Debug, Default)]
pub struct Serving(Arc<AtomicBool>);

impl Serving {
    /// Whether the socket is accepting.
    pub fn get(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }

    fn set(&self, value: bool) {
        self.0.store(value, Ordering::SeqCst);
    }
}

/// Creates the socket at `path` with `mode`, replacing a stale socket but
/// never another kind of file.
pub fn bind(path: &Path, mode: u32) -> io::Result<UnixListener> {
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {}
        Ok(_) => {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!(
                    "{} exists and is not a socket; refusing to replace it",
                    path.display()
                ),
            ));
        }
        Err(err) if err.kind() == io::ErrorKind::NotFound => {}
        Err(err) => return Err(err),
    }
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    fs::create_dir_all(dir)?;
    let mut temp_name = path.file_name().unwrap_or_default().to_os_string();
    temp_name.push(format!(".{}.tmp", std::process::id()));
    let temp = path.with_file_name(temp_name);
    let _ = fs::remove_file(&temp);
    let listener = UnixListener::bind(&temp)?;
    let placed = fs::set_permissions(&temp, fs::Permissions::from_mode(mode))
        .and_then(|()| fs::rename(&temp, path));
    if let Err(err) = placed {
        let _ = fs::remove_file(&temp);
        return Err(err);
    }
    Ok(listener)
}

/// Serves the provider on `listener` until `shutdown` resolves, then drains
/// in-flight calls (up to `drain_timeout`) and removes the socket.
pub async fn serve(
    listener: UnixListener,
    provider: Arc<Provider>,
    config: ServerConfig,
    serving: Serving,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let socket_meta = fs::metadata(&config.endpoint).ok();
    let socket_inode = socket_meta.as_ref().map(|m| m.ino());
    // The socket's owner is this process: always allowed to call itself.
    let peers = peer::PeerPolicy::only(&config.allowed_peer_uids, socket_meta.map(|m| m.uid()));
    let service = ProviderService {
        provider,
        mount_timeout: config.mount_timeout,
        max_response_bytes: config.max_response_bytes,
    };
    let incoming = UnixListenerStream::new(listener).map_ok(AuthorityRepair::new);

    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(CsiDriverProviderServer::with_interceptor(service, peers))
            .serve_with_incoming_shutdown(incoming, async move {
                let _ = stop_rx.await;
            }),
    );
    serving.set(true);
    tracing::info!(endpoint = %config.endpoint.display(), "serving");

    shutdown.await;
    serving.set(false);
    tracing::info!("shutting down: no new connections, draining in-flight Mounts");
    let _ = stop_tx.send(());
    let result = match tokio::time::timeout(config.drain_timeout, server).await {
        Ok(Ok(Ok(()))) => Ok(()),
        Ok(Ok(Err(err))) => Err(io::Error::other(err)),
        Ok(Err(join)) => Err(io::Error::other(join)),
        Err(_) => {
            tracing::warn!(timeout = ?config.drain_timeout, "in-flight Mounts did not finish; stopping anyway");
            Ok(())
        }
    };
    remove_socket(&config.endpoint, socket_inode);
    result
}

/// Removes the socket only if it is still ours: during a rolling update a new
/// provider may already have put its own in place.
fn remove_socket(path: &Path, inode: Option<u64>) {
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() && Some(meta.ino()) == inode => {
            if let Err(err) = fs::remove_file(path) {
                tracing::warn!(endpoint = %path.display(), error = %err, "cannot remove socket");
            }
        }
        _ => {}
    }
}

/// The `v1alpha1.CSIDriverProvider` implementation.
struct ProviderService {
    provider: Arc<Provider>,
    mount_timeout: Duration,
    max_response_bytes: usize,
}

#[tonic::async_trait]
impl CsiDriverProvider for ProviderService {
    async fn version(
        &self,
        _request: Request<VersionRequest>,
    ) -> Result<Response<VersionResponse>, Status> {
        Ok(Response::new(VersionResponse {
            version: API_VERSION.to_owned(),
            runtime_name: RUNTIME_NAME.to_owned(),
            runtime_version: env!("CARGO_PKG_VERSION").to_owned(),
        }))
    }

    async fn mount(
        &self,
        request: Request<MountRequest>,
    ) -> Result<Response<MountResponse>, Status> {
        let deadline = grpc_timeout(request.metadata())
            .map_or(self.mount_timeout, |caller| caller.min(self.mount_timeout));
        let request = request.into_inner();
        let observer = MountObserver::start(&request.attributes);
        let mount = tokio::time::timeout(deadline, self.provider.mount(&request));
        let result = match mount.instrument(observer.span().clone()).await {
            Ok(result) => result.and_then(|response| self.check_size(response)),
            Err(_) => Err(MountError::Timeout(deadline)),
        };
        observer.finish(&result);
        result.map(Response::new).map_err(Status::from)
    }
}

impl ProviderService {
    /// Refuses a response the driver would reject for its size, instead of
    /// letting the driver fail with a transport error.
    fn check_size(&self, response: MountResponse) -> Result<MountResponse, MountError> {
        let bytes = prost::Message::encoded_len(&response);
        if bytes > self.max_response_bytes {
            return Err(MountError::TooLarge {
                bytes,
                limit: self.max_response_bytes,
            });
        }
        if bytes > SECRET_SYNC_LIMIT {
            tracing::warn!(
                bytes,
                "Mount response is above 1 MiB: syncing it to a Kubernetes Secret will fail"
            );
        }
        Ok(response)
    }
}

/// The caller's deadline from the `grpc-timeout` header (`<digits><unit>`).
fn grpc_timeout(metadata: &tonic::metadata::MetadataMap) -> Option<Duration> {
    let raw = metadata.get("grpc-timeout")?.to_str().ok()?;
    let (digits, unit) = raw.split_at(raw.len().checked_sub(1)?);
    let value: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(value.saturating_mul(3600)),
        "M" => Duration::from_secs(value.saturating_mul(60)),
        "S" => Duration::from_secs(value),
        "m" => Duration::from_millis(value),
        "u" => Duration::from_micros(value),
        "n" => Duration::from_nanos(value),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeout_units() {
        let mut md = tonic::metadata::MetadataMap::new();
        for (raw, expected) in [
            ("2S", 2000),
            ("150m", 150),
            ("1M", 60_000),
            ("3H", 10_800_000),
        ] {
            md.insert("grpc-timeout", raw.parse().unwrap());
            assert_eq!(
                grpc_timeout(&md),
                Some(Duration::from_millis(expected)),
                "{raw}"
            );
        }
        md.insert("grpc-timeout", "12X".parse().unwrap());
        assert_eq!(grpc_timeout(&md), None);
    }

    #[tokio::test]
    async fn bind_replaces_stale_socket_but_not_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vault.sock");
        let first = bind(&path, 0o600).unwrap();
        drop(first); // leaves a stale socket file behind
        assert!(fs::symlink_metadata(&path).unwrap().file_type().is_socket());
        let _second = bind(&path, 0o600).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);

        let file = dir.path().join("not-a-socket");
        fs::write(&file, b"keep me").unwrap();
        let err = bind(&file, 0o600).unwrap_err();
        assert!(err.to_string().contains("not a socket"));
        assert_eq!(fs::read(&file).unwrap(), b"keep me");
    }
}
