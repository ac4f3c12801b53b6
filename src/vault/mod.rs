//! Talking to Vault / OpenBao.
//!
//! - [`auth`](self::auth): logins (AppRole, Kubernetes, JWT) through vaultrs on
//!   a per-call view of our pool, token renewal and revocation;
//! - [`tokens`]: the token cache (one token per identity);
//! - `http`: our own request path for objects, leases and health (vaultrs has
//!   no call for an arbitrary path and method, which `objects` needs: KV v1/v2,
//!   PKI, any engine), TLS, pools, the in-flight bound;
//! - [`fair`]: the fair share of requests in flight per pod namespace;
//! - [`error`](self::error): every failure as one typed [`VaultError`];
//! - [`retry`]: which failures are repeated, and how often;
//! - [`leases`]: the per-pod cache of certificates and leased secrets;
//! - [`flight`]: identical concurrent reads shared (single flight);
//! - `compact`: kept responses as text whose long strings (CA chains) are shared.

mod auth;
mod compact;
mod error;
pub mod fair;
pub mod flight;
mod health;
mod http;
pub mod leases;
pub mod retry;
mod slots;
pub mod tokens;

use std::time::Duration;

use vaultrs::client::VaultClientSettings;

use crate::budget::ByteBudget;
use crate::request::{AllowedOrigins, Method, Namespace, Source, VaultTarget};
pub use error::VaultError;
pub use fair::Tenant;
pub use http::DEFAULT_MAX_IN_FLIGHT_PER_NAMESPACE;
use http::{Call, Http, MAX_IN_FLIGHT};
use retry::RetryPolicy;
pub use tokens::{Identity, Origin, Refresh, Token, TokenCache};

/// Settings that apply to every Vault request.
#[derive(Clone, Debug)]
pub struct VaultConfig {
    /// Deadline for one HTTP request to Vault.
    pub request_timeout: Duration,
    /// Most identities whose tokens are cached.
    pub token_cache_size: usize,
}

/// The provider's Vault client: connection pools per TLS setting, and the
/// token cache.
pub struct Vault {
    http: Http,
    tokens: TokenCache,
    /// vaultrs requires settings on its client trait; nothing reads them in
    /// the calls we make, so one inert copy serves every scope.
    inert_settings: VaultClientSettings,
}

impl Vault {
    /// A client with empty caches.
    pub fn new(config: VaultConfig) -> Self {
        Self {
            http: Http::new(config.request_timeout),
            tokens: TokenCache::new(config.token_cache_size),
            inert_settings: VaultClientSettings {
                address: url::Url::parse("http://127.0.0.1:8200").expect("static URL"),
                ca_certs: Vec::new(),
                identity: None,
                timeout: Some(config.request_timeout),
                token: String::new(),
                verify: true,
                version: 1,
                wrapping: false,
                namespace: None,
                proxy: None,
            },
        }
    }

    /// Replaces the default retry policy (3 attempts, 100 ms → 1 s backoff).
    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.http.retry = retry;
        self
    }

    /// Lets redirects lead to `allowed` origins too (besides the origin of
    /// the request itself, always allowed). Without it, or with an origin not
    /// listed, a redirect elsewhere fails the request before anything is sent
    /// there: it would carry the tenant's token.
    pub fn with_allowed_origins(mut self, allowed: AllowedOrigins) -> Self {
        self.http.allowed = std::sync::Arc::new(allowed);
        self
    }

    /// Bounds one pod namespace's Vault requests in flight to `limit` (at
    /// least one, at most the global bound of 64; default
    /// [`DEFAULT_MAX_IN_FLIGHT_PER_NAMESPACE`]).
    pub fn with_max_in_flight_per_namespace(mut self, limit: usize) -> Self {
        self.http.fair = fair::FairShare::new(MAX_IN_FLIGHT, limit);
        self
    }

    /// The token cache (for metrics and tests).
    pub fn tokens(&self) -> &TokenCache {
        &self.tokens
    }

    /// Performs one object's request and returns Vault's whole JSON response.
    /// The body is charged to `budget` as it streams in.
    pub async fn read(
        &self,
        target: &VaultTarget,
        token: &Token,
        source: &Source,
        budget: &ByteBudget,
    ) -> Result<serde_json::Value, VaultError> {
        let request = Call {
            namespace: source.namespace.as_ref(),
            method: source.method,
            path: &source.path,
            query: &source.query,
            body: source.args.clone(),
            budget: Some(budget),
        };
        self.http
            .call(target, token, request, &describe(source))
            .await
    }

    /// Extends a lease (`sys/leases/renew`) by `increment`; returns the
    /// duration Vault granted, which is shorter when the lease hits its max TTL.
    pub async fn renew_lease(
        &self,
        target: &VaultTarget,
        token: &Token,
        namespace: Option<&Namespace>,
        lease_id: &str,
        increment: Duration,
    ) -> Result<Duration, VaultError> {
        let body = serde_json::json!({ "lease_id": lease_id, "increment": increment.as_secs() })
            .to_string();
        let request = Call {
            namespace,
            method: Method::Put,
            path: "sys/leases/renew",
            query: &[],
            body: Some(body),
            budget: None,
        };
        let response = self
            .http
            .call(target, token, request, "lease renewal")
            .await?;
        Ok(Duration::from_secs(
            response["lease_duration"].as_u64().unwrap_or(0),
        ))
    }

    /// Revokes a lease (`sys/leases/revoke`).
    pub async fn revoke_lease(
        &self,
        target: &VaultTarget,
        token: &Token,
        namespace: Option<&Namespace>,
        lease_id: &str,
    ) -> Result<(), VaultError> {
        let body = serde_json::json!({ "lease_id": lease_id }).to_string();
        let request = Call {
            namespace,
            method: Method::Put,
            path: "sys/leases/revoke",
            query: &[],
            body: Some(body),
            budget: None,
        };
        match self
            .http
            .call(target, token, request, "lease revocation")
            .await
        {
            Ok(_) | Err(VaultError::NotFound(_)) => Ok(()),
            Err(err) => Err(err),
        }
    }
}

fn describe(source: &Source) -> String {
    format!(
        "{} {} in namespace {}",
        source.method,
        source.display_path(),
        source
            .namespace
            .as_ref()
            .map_or("(root)", Namespace::as_str)
    )
}
