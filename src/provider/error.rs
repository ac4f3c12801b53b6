//! [`MountError`]: why a Mount failed, and the one place where that becomes a
//! gRPC status.
//!
//! The status message reaches the pod's events (`FailedMount`), so it says what
//! failed and what to check, and never carries a secret. The code matters to
//! the driver: it retries only `UNAVAILABLE`, so that code is kept for faults
//! that may pass on their own.

use std::time::Duration;

use tonic::{Code, Status};

use crate::render::RenderError;
use crate::request::{MountPlan, RequestError, Source};
use crate::sync::SyncError;
use crate::vault::VaultError;
use crate::write::WriteError;

/// A failed Mount.
#[derive(Debug, thiserror::Error)]
pub enum MountError {
    /// The SecretProviderClass or request is invalid.
    #[error("invalid parameter {0}")]
    Request(#[from] RequestError),
    /// Logging in to Vault failed.
    #[error("login failed: {0}")]
    Login(VaultError),
    /// Fetching an object from Vault failed.
    #[error("object {object:?}: {source}")]
    Read {
        /// The (first) object that needed the failed request.
        object: String,
        /// What Vault said.
        source: VaultError,
    },
    /// An object's data could not become a file.
    #[error(transparent)]
    Render(#[from] RenderError),
    /// The files are too big for the driver to receive.
    #[error(
        "the Mount's response is {bytes} bytes, above the limit of {limit} bytes: split the \
         SecretProviderClass, or raise the driver's --max-call-recv-msg-size and this provider's \
         --max-response-size together"
    )]
    TooLarge {
        /// Encoded response size.
        bytes: usize,
        /// The configured limit.
        limit: usize,
    },
    /// `--write-mode direct` could not write into the pod's volume.
    #[error(transparent)]
    Write(#[from] WriteError),
    /// Provider-side sync (`syncSecretName`) could not apply the Secret.
    #[error("syncSecretName: {0}")]
    Sync(#[from] SyncError),
    /// The Mount did not finish within its deadline.
    #[error("timed out after {0:?} waiting for Vault")]
    Timeout(Duration),
}

impl MountError {
    /// A login failure.
    pub fn login(err: VaultError) -> Self {
        Self::Login(err)
    }

    /// A failed read, attributed to the first object that uses `source`.
    pub fn read(plan: &MountPlan, source: &Source, err: VaultError) -> Self {
        let object = plan
            .objects
            .iter()
            .find(|o| &o.source == source)
            .map(|o| o.name.to_string())
            .unwrap_or_default();
        Self::Read {
            object,
            source: err,
        }
    }

    /// The gRPC code the driver (and the pod owner) sees.
    pub fn code(&self) -> Code {
        match self {
            Self::Request(_) => Code::InvalidArgument,
            Self::Login(err) | Self::Read { source: err, .. } => match err {
                VaultError::LoginRefused(_) => Code::Unauthenticated,
                VaultError::PermissionDenied(_) => Code::PermissionDenied,
                VaultError::NotFound(_) => Code::NotFound,
                VaultError::Rejected(_) | VaultError::Tls(_) => Code::InvalidArgument,
                VaultError::Unavailable(_) => Code::Unavailable,
                VaultError::Unexpected(_) => Code::Internal,
            },
            Self::Render(
                RenderError::Decode { .. }
                | RenderError::BadFileName { .. }
                | RenderError::Template { .. },
            ) => Code::InvalidArgument,
            Self::Render(_) => Code::NotFound,
            Self::Write(WriteError::InvalidTarget { .. } | WriteError::InvalidFile { .. }) => {
                Code::InvalidArgument
            }
            Self::Write(WriteError::NotTmpfs { .. }) => Code::FailedPrecondition,
            Self::Write(WriteError::Io { .. }) => Code::Internal,
            Self::Sync(err) => match err {
                SyncError::NotOurs { .. } => Code::FailedPrecondition,
                SyncError::InvalidKey(_) => Code::InvalidArgument,
                SyncError::Api { status: 403, .. } => Code::PermissionDenied,
                SyncError::Api { status, .. } if *status == 429 || *status >= 500 => {
                    Code::Unavailable
                }
                SyncError::Unreachable(_) => Code::Unavailable,
                SyncError::Api { .. } | SyncError::Config(_) => Code::Internal,
            },
            Self::Timeout(_) => Code::Unavailable,
            Self::TooLarge { .. } => Code::ResourceExhausted,
        }
    }

    /// A short, stable label for logs and metrics.
    pub fn label(&self) -> &'static str {
        match self.code() {
            Code::InvalidArgument => "invalid_argument",
            Code::Unauthenticated => "unauthenticated",
            Code::PermissionDenied => "permission_denied",
            Code::NotFound => "not_found",
            Code::Unavailable => "unavailable",
            Code::ResourceExhausted => "resource_exhausted",
            Code::FailedPrecondition => "failed_precondition",
            _ => "internal",
        }
    }

    fn hint(&self) -> Option<&'static str> {
        match self {
            Self::Login(VaultError::LoginRefused(_)) => Some(
                "check the AppRole role ID and the secretId in the nodePublishSecretRef Secret \
                 (or the role and audience for Kubernetes/JWT auth)",
            ),
            Self::Login(VaultError::PermissionDenied(_)) => Some(
                "the Vault role does not admit this pod's service account or namespace: \
                 check its bound_service_account_names and bound_service_account_namespaces",
            ),
            Self::Read {
                source: VaultError::PermissionDenied(_),
                ..
            } => Some("the role's Vault policy does not allow this path"),
            Self::Write(WriteError::Io { source, .. })
                if source.kind() == std::io::ErrorKind::PermissionDenied =>
            {
                Some(
                    "with fileOwnerUid/fileOwnerGid the provider needs the CHOWN and \
                     DAC_OVERRIDE capabilities",
                )
            }
            _ => None,
        }
    }
}

impl From<MountError> for Status {
    fn from(err: MountError) -> Self {
        let message = match err.hint() {
            Some(hint) => format!("vault-secrets-provider: {err} ({hint})"),
            None => format!("vault-secrets-provider: {err}"),
        };
        Status::new(err.code(), message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_follow_the_spec() {
        let api = |status| {
            MountError::Sync(SyncError::Api {
                what: "apply Secret".into(),
                status,
                message: "x".into(),
            })
        };
        let cases = [
            (
                MountError::Sync(SyncError::NotOurs {
                    namespace: "n".into(),
                    name: "s".into(),
                }),
                Code::FailedPrecondition,
            ),
            (
                MountError::Sync(SyncError::InvalidKey("a/b".into())),
                Code::InvalidArgument,
            ),
            (api(403), Code::PermissionDenied),
            (api(429), Code::Unavailable),
            (api(503), Code::Unavailable),
            (api(422), Code::Internal),
            (
                MountError::Sync(SyncError::Unreachable("x".into())),
                Code::Unavailable,
            ),
            (
                MountError::Request(RequestError::invalid("objects", "x")),
                Code::InvalidArgument,
            ),
            (
                MountError::Login(VaultError::LoginRefused("x".into())),
                Code::Unauthenticated,
            ),
            (
                MountError::Login(VaultError::PermissionDenied("x".into())),
                Code::PermissionDenied,
            ),
            (
                MountError::Login(VaultError::Unavailable("x".into())),
                Code::Unavailable,
            ),
            (
                MountError::Read {
                    object: "a".into(),
                    source: VaultError::PermissionDenied("x".into()),
                },
                Code::PermissionDenied,
            ),
            (
                MountError::Read {
                    object: "a".into(),
                    source: VaultError::NotFound("x".into()),
                },
                Code::NotFound,
            ),
            (
                MountError::Render(RenderError::MissingKey {
                    object: "a".into(),
                    key: "k".into(),
                    path: "p".into(),
                }),
                Code::NotFound,
            ),
            (
                MountError::Timeout(Duration::from_secs(1)),
                Code::Unavailable,
            ),
            (
                MountError::Write(WriteError::NotTmpfs {
                    path: "/t".into(),
                    filesystem: "ext2/3/4".into(),
                }),
                Code::FailedPrecondition,
            ),
            (
                MountError::Write(WriteError::InvalidTarget {
                    path: "t".into(),
                    reason: "is not an absolute path".into(),
                }),
                Code::InvalidArgument,
            ),
        ];
        for (err, code) in cases {
            assert_eq!(Status::from(err).code(), code);
        }
    }

    #[test]
    fn messages_name_the_object_and_give_a_hint() {
        let status = Status::from(MountError::Read {
            object: "db".into(),
            source: VaultError::PermissionDenied(
                "GET secret/data/x in namespace a: permission denied".into(),
            ),
        });
        assert!(
            status.message().contains("object \"db\""),
            "{}",
            status.message()
        );
        assert!(status.message().contains("policy"), "{}", status.message());
    }
}
