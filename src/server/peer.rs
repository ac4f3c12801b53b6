//! Who may call the provider: an optional check of the caller's uid, taken
//! from the Unix socket's peer credentials (`SO_PEERCRED`, which the kernel
//! fills in and the caller cannot forge).
//!
//! The socket's mode (0600, owned by the provider's user) already keeps
//! everyone but root and that user out, so by default every peer is allowed.
//! `--allowed-peer-uid` narrows it further, for nodes where other root-level
//! agents share the providers directory, or where the socket must be group-
//! or world-writable. The provider's own uid (the socket's owner) is always
//! allowed: `/readyz` calls `Version` over the socket.

use std::sync::Arc;

use tonic::transport::server::UdsConnectInfo;
use tonic::{Request, Status};

/// The uids allowed to call, or everyone.
#[derive(Clone, Debug, Default)]
pub struct PeerPolicy {
    /// `None`: no check.
    allowed: Option<Arc<[u32]>>,
}

impl PeerPolicy {
    /// Every peer may call (the socket's mode is the only restriction).
    pub fn allow_all() -> Self {
        Self::default()
    }

    /// Only `uids` (and `owner`, the provider's own uid) may call; an empty
    /// list allows everyone.
    pub fn only(uids: &[u32], owner: Option<u32>) -> Self {
        if uids.is_empty() {
            return Self::allow_all();
        }
        let mut allowed = uids.to_vec();
        allowed.extend(owner);
        Self {
            allowed: Some(allowed.into()),
        }
    }

    /// Whether a caller with `uid` (None: unknown) may call.
    pub fn allows(&self, uid: Option<u32>) -> bool {
        match (&self.allowed, uid) {
            (None, _) => true,
            (Some(allowed), Some(uid)) => allowed.contains(&uid),
            (Some(_), None) => false,
        }
    }
}

impl tonic::service::Interceptor for PeerPolicy {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        if self.allowed.is_none() {
            return Ok(request);
        }
        let cred = request
            .extensions()
            .get::<UdsConnectInfo>()
            .and_then(|info| info.peer_cred);
        let uid = cred.map(|c| c.uid());
        if self.allows(uid) {
            return Ok(request);
        }
        tracing::warn!(
            peer_uid = uid,
            peer_pid = cred.and_then(|c| c.pid()),
            "refused a call from a peer that --allowed-peer-uid does not list"
        );
        Err(Status::permission_denied(format!(
            "vault-secrets-provider: callers with uid {} may not call this provider (--allowed-peer-uid)",
            uid.map_or_else(|| "unknown".to_owned(), |u| u.to_string())
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::service::Interceptor as _;

    #[test]
    fn default_allows_everyone() {
        assert!(PeerPolicy::allow_all().allows(Some(1000)));
        assert!(PeerPolicy::allow_all().allows(None));
        assert!(PeerPolicy::only(&[], Some(0)).allows(Some(1000)));
    }

    #[test]
    fn a_list_allows_only_its_uids_and_the_owner() {
        let policy = PeerPolicy::only(&[0, 1000], Some(1234));
        assert!(policy.allows(Some(0)));
        assert!(policy.allows(Some(1000)));
        assert!(policy.allows(Some(1234)));
        assert!(!policy.allows(Some(65534)));
        assert!(!policy.allows(None), "no credentials: refused");
    }

    #[test]
    fn a_request_without_credentials_is_refused_when_checking() {
        let mut policy = PeerPolicy::only(&[0], None);
        let status = policy.call(Request::new(())).unwrap_err();
        assert_eq!(status.code(), tonic::Code::PermissionDenied);
        assert!(status.message().contains("--allowed-peer-uid"));
        assert!(PeerPolicy::allow_all().call(Request::new(())).is_ok());
    }
}
