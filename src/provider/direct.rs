//! `--write-mode direct`, as the provider runs it: the target is checked
//! before Vault is asked for anything, and the files are written (all of
//! them, or none) only once the whole Mount has succeeded. The filesystem
//! work itself is [`crate::write`]'s, on the blocking pool.

use std::future::Future;
use std::io;
use std::path::PathBuf;

use super::MountError;
use crate::proto::MountResponse;
use crate::request::MountPlan;
use crate::write::{self, WriteError, check_target};

/// One Mount in direct mode: checks the target before `run` contacts Vault,
/// then writes the files `run` rendered (all of them, or nothing if it
/// failed) and returns its response without them.
pub(super) async fn direct(
    plan: &MountPlan,
    run: impl Future<Output = Result<MountResponse, MountError>>,
) -> Result<MountResponse, MountError> {
    let target = plan.target_path.clone();
    blocking(move || check_target(&target).map(drop)).await?;
    let mut response = run.await?;
    let files = std::mem::take(&mut response.files);
    let (target, owner) = (plan.target_path.clone(), plan.owner);
    let outcome = blocking(move || write::write(&target, &files, owner)).await?;
    tracing::debug!(target_path = %plan.target_path.display(), ?outcome, "direct write");
    Ok(response)
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
