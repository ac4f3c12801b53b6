//! `--write-mode direct`, as the provider runs it: the target is checked
//! before Vault is asked for anything, and the files are written (all of
//! them, or none) only once the whole Mount has succeeded. The filesystem
//! work itself is [`crate::write`]'s, on the blocking pool.

use std::future::Future;
use std::io;
use std::path::PathBuf;

use super::{MountError, Ran};
use crate::proto::File;
use crate::request::{FileOwner, MountPlan};
use crate::write::{self, WriteError, check_target};

/// What a direct-mode Mount wrote, for keeping the volume fresh.
pub(super) struct Written {
    /// The run, its response without the files.
    pub ran: Ran,
    /// The tmpfs written to (`None` if the target is not a mount point of
    /// its own, which the driver's volumes always are).
    pub device: Option<u64>,
    /// What was written ([`super::volumes::digest`]).
    pub digest: [u8; 32],
}

/// One Mount in direct mode: checks the target before `run` contacts Vault,
/// then writes the files `run` rendered (all of them, or nothing if it
/// failed) and returns its response without them.
pub(super) async fn direct(
    plan: &MountPlan,
    run: impl Future<Output = Result<Ran, MountError>>,
) -> Result<Written, MountError> {
    let target = plan.target_path.clone();
    blocking(move || check_target(&target).map(drop)).await?;
    let mut ran = run.await?;
    let files = std::mem::take(&mut ran.response.files);
    let digest = super::volumes::digest(&files);
    let (target, owner) = (plan.target_path.clone(), plan.owner);
    let (outcome, device) = blocking(move || {
        let outcome = write::write(&target, &files, owner)?;
        Ok((outcome, write::volume_device(&target).ok()))
    })
    .await?;
    tracing::debug!(target_path = %plan.target_path.display(), ?outcome, "direct write");
    Ok(Written {
        ran,
        device,
        digest,
    })
}

/// Writes `files` again into the volume `device` at `target` (a background
/// refresh).
pub(super) async fn rewrite(
    target: PathBuf,
    files: Vec<File>,
    owner: FileOwner,
    device: u64,
) -> Result<write::Outcome, MountError> {
    blocking(move || write::rewrite(&target, &files, owner, device)).await
}

/// Whether `target` is still the volume `device`.
pub(super) async fn still_mounted(target: PathBuf, device: u64) -> bool {
    tokio::task::spawn_blocking(move || write::volume_device(&target).ok() == Some(device))
        .await
        .unwrap_or(false)
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, WriteError> + Send + 'static,
) -> Result<T, MountError> {
    match tokio::task::spawn_blocking(f).await {
        Ok(result) => result.map_err(MountError::from),
        Err(join) => Err(MountError::from(WriteError::Io {
            target: PathBuf::new(),
            what: "writer task".into(),
            source: io::Error::other(join.to_string()),
        })),
    }
}
