//! Talking to Vault / OpenBao.
//!
//! vaultrs does the logins (AppRole, Kubernetes, JWT): we implement its
//! `Client` trait on a short-lived [`Scoped`] view that carries the namespace
//! and shares our connection pool, because vaultrs itself fixes the namespace
//! per client and builds a new connection pool per client. Reads go through
//! [`Vault::read`], our own request path, because vaultrs has no call for an
//! arbitrary path and method (which `objects` needs: KV v1/v2, PKI, any engine)
//! and reports 403/404 in two different shapes; here every failure becomes one
//! typed [`VaultError`].

pub mod flight;
mod health;
pub mod leases;
pub mod retry;
pub mod tokens;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use vaultrs::api::{AuthInfo, EndpointMiddleware};
use vaultrs::client::VaultClientSettings;
use vaultrs::error::ClientError;
use zeroize::{Zeroize as _, Zeroizing};

use crate::request::{AuthMethod, AuthPlan, Method, Namespace, Source, TlsSettings, VaultTarget};
use crate::telemetry::metrics::{self, Operation, metrics};
use retry::{Retry, RetryPolicy};
pub use tokens::{Identity, Origin, Refresh, Token, TokenCache};

/// Largest Vault response we accept. The driver's gRPC limit is 4 MiB for a
/// whole Mount, so anything bigger cannot be delivered anyway.
const MAX_RESPONSE_BYTES: usize = 8 << 20;
/// Longest Vault error text we repeat in a message.
const MAX_ERROR_TEXT: usize = 300;
/// Most requests to Vault in flight at once, over all Mounts; also the idle
/// connections each pool keeps, so a pod storm reuses that many connections
/// instead of opening one per request (200 pods of JWT identities once opened
/// about 1,000 at a time: tens of MiB, and a connection storm on Vault).
const MAX_IN_FLIGHT: usize = 64;

/// A failed Vault interaction, by what the pod owner should do about it.
#[derive(Debug, Clone, thiserror::Error)]
pub enum VaultError {
    /// Vault refused the login (wrong role or secret ID, expired secret ID,
    /// JWT rejected).
    #[error("Vault refused the login: {0}")]
    LoginRefused(String),
    /// The token is valid but its policy does not allow the request; or, at
    /// login, the identity is valid but the role does not admit it (Kubernetes
    /// auth: service account or namespace not bound).
    #[error("permission denied: {0}")]
    PermissionDenied(String),
    /// No secret, version or namespace at that path.
    #[error("not found: {0}")]
    NotFound(String),
    /// Vault rejected the request's parameters (HTTP 400 on a read or write).
    #[error("Vault rejected the request: {0}")]
    Rejected(String),
    /// Unreachable, sealed, overloaded or too slow: worth retrying.
    #[error("Vault is unavailable: {0}")]
    Unavailable(String),
    /// The provider's own TLS configuration cannot be used.
    #[error("TLS configuration: {0}")]
    Tls(String),
    /// Vault answered something we cannot use.
    #[error("unexpected response from Vault: {0}")]
    Unexpected(String),
}

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
    pools: Mutex<HashMap<PoolKey, Endpoint>>,
    tokens: TokenCache,
    /// Permits for [`MAX_IN_FLIGHT`] requests.
    in_flight: tokio::sync::Semaphore,
    config: VaultConfig,
    /// Retries of transient failures (see [`retry`]).
    retry: RetryPolicy,
    /// vaultrs requires settings on its client trait; nothing reads them in
    /// the calls we make, so one inert copy serves every scope.
    inert_settings: VaultClientSettings,
}

impl Vault {
    /// A client with empty caches.
    pub fn new(config: VaultConfig) -> Self {
        Self {
            pools: Mutex::new(HashMap::new()),
            tokens: TokenCache::new(config.token_cache_size),
            in_flight: tokio::sync::Semaphore::new(MAX_IN_FLIGHT),
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
            config,
            retry: RetryPolicy::default(),
        }
    }

    /// Replaces the default retry policy (3 attempts, 100 ms → 1 s backoff).
    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// The token cache (for metrics and tests).
    pub fn tokens(&self) -> &TokenCache {
        &self.tokens
    }

    /// A token for the plan's identity: cached, renewed, or from one login
    /// shared by all concurrent callers. `pod_uid` binds service-account
    /// identities to their pod, so a pod keeps one Vault token while kubelet
    /// rotates its JWT.
    pub async fn token(
        &self,
        target: &VaultTarget,
        auth: &AuthPlan,
        pod_uid: Option<&str>,
    ) -> Result<(Identity, Token, Origin), VaultError> {
        let identity = identity_of(target, auth, pod_uid);
        let found = self
            .tokens
            .get(
                &identity,
                || self.login(target, auth),
                |token| self.renew(target, auth, token),
            )
            .await;
        metrics().token_lookup(matches!(found, Ok((_, Origin::Cached))));
        let (token, origin) = found?;
        Ok((identity, token, origin))
    }

    /// `renew-self` with the token's own period; any failure means "log in".
    async fn renew(&self, target: &VaultTarget, auth: &AuthPlan, token: Token) -> Refresh {
        let Ok(scope) = self.scope(target, auth_namespace(auth), Some(&token)).await else {
            return Refresh::Login;
        };
        let increment = format!("{}s", token.ttl.as_secs().max(1));
        let _permit = self.permit().await;
        match vaultrs::token::renew_self(&scope, Some(&increment)).await {
            Ok(info) if info.lease_duration > 0 => {
                tracing::debug!(ttl_s = info.lease_duration, "renewed Vault token");
                Refresh::Renewed(Duration::from_secs(info.lease_duration))
            }
            Ok(_) => Refresh::Login,
            Err(err) => {
                tracing::debug!(error = %login_error(err, "token renewal"), "token renewal failed; logging in");
                Refresh::Login
            }
        }
    }

    /// Revokes every cached token (at shutdown, when asked to). Best effort:
    /// failures are logged and the tokens expire on their own.
    pub async fn revoke_all(&self) -> usize {
        let mut revoked = 0;
        for (identity, token) in self.tokens.drain() {
            revoked += usize::from(self.revoke_token(&identity, &token).await);
        }
        revoked
    }

    /// Revokes one token (`revoke-self`); returns whether Vault accepted.
    pub async fn revoke_token(&self, identity: &Identity, token: &Token) -> bool {
        let Ok(scope) = self
            .scope(&identity.target, identity.namespace.as_ref(), Some(token))
            .await
        else {
            return false;
        };
        let _permit = self.permit().await;
        match vaultrs::token::revoke_self(&scope).await {
            Ok(()) => true,
            Err(err) => {
                tracing::warn!(error = %login_error(err, "token revocation"), "cannot revoke a Vault token");
                false
            }
        }
    }

    /// A vaultrs client view on our pool, in `namespace`, with `token`.
    async fn scope<'a>(
        &'a self,
        target: &VaultTarget,
        namespace: Option<&Namespace>,
        token: Option<&Token>,
    ) -> Result<Scoped<'a>, VaultError> {
        let endpoint = self.endpoint(target).await?;
        Ok(Scoped {
            http: rustify::clients::reqwest::Client::new(
                endpoint.base.as_str().trim_end_matches('/'),
                endpoint.http,
            ),
            middle: EndpointMiddleware {
                token: token
                    .map(|t| t.secret.expose_secret().to_owned())
                    .unwrap_or_default(),
                version: "v1".to_owned(),
                wrap: None,
                namespace: namespace.map(|ns| ns.as_str().to_owned()),
            },
            settings: &self.inert_settings,
        })
    }

    /// Waits for one of the [`MAX_IN_FLIGHT`] request slots.
    async fn permit(&self) -> tokio::sync::SemaphorePermit<'_> {
        self.in_flight
            .acquire()
            .await
            .expect("the request semaphore is never closed")
    }

    /// Forgets a token that Vault no longer accepts.
    pub fn invalidate(&self, identity: &Identity, token: &Token) {
        self.tokens.invalidate(identity, token);
    }

    async fn login(&self, target: &VaultTarget, auth: &AuthPlan) -> Result<Token, VaultError> {
        let namespace = auth_namespace(auth);
        let mount = match auth {
            AuthPlan::AppRole { mount, .. } | AuthPlan::ServiceAccount { mount, .. } => {
                mount.as_str()
            }
        };
        let scope = self.scope(target, namespace, None).await?;
        let where_ = format!(
            "auth/{mount} in namespace {}",
            namespace.map_or("(root)", Namespace::as_str)
        );
        let mut failed = 0;
        let (result, status, started) = loop {
            let permit = self.permit().await;
            let started = Instant::now();
            let result = match auth {
                AuthPlan::AppRole {
                    role_id, secret_id, ..
                } => {
                    vaultrs::auth::approle::login(&scope, mount, role_id, secret_id.expose_secret())
                        .await
                }
                AuthPlan::ServiceAccount {
                    method: AuthMethod::Jwt,
                    role,
                    jwt,
                    ..
                } => {
                    vaultrs::auth::oidc::login(
                        &scope,
                        mount,
                        jwt.expose_secret(),
                        Some(role.clone()),
                    )
                    .await
                }
                AuthPlan::ServiceAccount { role, jwt, .. } => {
                    vaultrs::auth::kubernetes::login(&scope, mount, role, jwt.expose_secret()).await
                }
            };
            drop(permit);
            let status = metrics::login_status(&result);
            let Err(err) = &result else {
                break (result, status, started);
            };
            failed += 1;
            // A login is a write (it makes a token, and may spend a secret-ID
            // use), so it is repeated only when Vault surely did nothing.
            if !self.retry.again(failed, login_retry(err), false) {
                break (result, status, started);
            }
            metrics().vault_request(Operation::Login, status, started.elapsed());
            tracing::debug!(
                attempt = failed,
                status,
                "login failed transiently; retrying"
            );
            tokio::time::sleep(self.retry.backoff(failed)).await;
        };
        let result = result.map_err(|err| with_attempts(login_error(err, &where_), failed));
        metrics().login(auth, status, result.as_ref().err(), started.elapsed());
        let info: AuthInfo = result?;
        if info.client_token.is_empty() {
            return Err(VaultError::Unexpected(format!(
                "login at {where_} returned no token"
            )));
        }
        tracing::debug!(
            ttl_s = info.lease_duration,
            renewable = info.renewable,
            "logged in to Vault"
        );
        Ok(Token {
            secret: Arc::new(SecretString::from(info.client_token)),
            ttl: Duration::from_secs(info.lease_duration),
            renewable: info.renewable,
        })
    }

    /// Performs one object's request and returns Vault's whole JSON response.
    pub async fn read(
        &self,
        target: &VaultTarget,
        token: &Token,
        source: &Source,
    ) -> Result<serde_json::Value, VaultError> {
        let request = Call {
            namespace: source.namespace.as_ref(),
            method: source.method,
            path: &source.path,
            query: &source.query,
            body: source.args.clone(),
        };
        self.call(target, token, request, &describe(source)).await
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
        };
        let response = self.call(target, token, request, "lease renewal").await?;
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
        };
        match self.call(target, token, request, "lease revocation").await {
            Ok(_) | Err(VaultError::NotFound(_)) => Ok(()),
            Err(err) => Err(err),
        }
    }

    async fn call(
        &self,
        target: &VaultTarget,
        token: &Token,
        request: Call<'_>,
        what: &str,
    ) -> Result<serde_json::Value, VaultError> {
        let Endpoint { http, base } = self.endpoint(target).await?;
        let mut url = base;
        {
            let mut segments = url
                .path_segments_mut()
                .map_err(|()| VaultError::Unexpected("Vault address cannot hold a path".into()))?;
            segments.pop_if_empty().push("v1");
            segments.extend(request.path.split('/'));
        }
        {
            let mut query = url.query_pairs_mut();
            for (key, value) in request.query {
                query.append_pair(key, value);
            }
            if request.method == Method::List {
                query.append_pair("list", "true");
            }
        }
        if url.query() == Some("") {
            url.set_query(None);
        }

        let method = match request.method {
            Method::Get | Method::List => reqwest::Method::GET,
            Method::Put => reqwest::Method::PUT,
            Method::Post => reqwest::Method::POST,
        };
        let mut builder = http
            .request(method, url)
            .header("X-Vault-Request", "true")
            .header("X-Vault-Token", token.secret.expose_secret());
        if let Some(namespace) = request.namespace {
            builder = builder.header("X-Vault-Namespace", namespace.as_str());
        }
        if let Some(body) = request.body {
            builder = builder
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body);
        }
        let idempotent = matches!(request.method, Method::Get | Method::List);
        let mut failed = 0;
        loop {
            let attempt = builder
                .try_clone()
                .expect("request bodies are strings, which can be cloned");
            // The permit is held until the body is read: the connection is
            // busy until then.
            let permit = self.permit().await;
            let outcome = send(attempt, what).await;
            drop(permit);
            let (err, retry) = match outcome {
                Ok(value) => return Ok(value),
                Err(failure) => failure,
            };
            failed += 1;
            if !self.retry.again(failed, retry, idempotent) {
                return Err(with_attempts(err, failed));
            }
            tracing::debug!(attempt = failed, error = %err, "transient Vault failure; retrying");
            tokio::time::sleep(self.retry.backoff(failed)).await;
        }
    }

    /// The connection pool and base URL for a target, built on first use.
    ///
    /// With a TLS server name (`vaultTLSServerName`), requests go to that name
    /// (so SNI and certificate verification use it) while the connection is
    /// pinned to the addresses the configured host resolved to when the pool
    /// was built.
    async fn endpoint(&self, target: &VaultTarget) -> Result<Endpoint, VaultError> {
        let key = PoolKey {
            tls: target.tls.clone(),
            pinned_address: target
                .tls
                .server_name
                .as_ref()
                .map(|_| target.address.clone()),
        };
        let cached = self.pools.lock().expect("pool lock").get(&key).cloned();
        if let Some(endpoint) = cached {
            if key.pinned_address.is_none() {
                return Ok(Endpoint {
                    base: target.address.clone(),
                    ..endpoint
                });
            }
            return Ok(endpoint);
        }
        let mut builder = client_builder(&target.tls, self.config.request_timeout)?;
        let mut base = target.address.clone();
        if let Some(name) = &target.tls.server_name {
            let host = target
                .address
                .host_str()
                .ok_or_else(|| VaultError::Tls("the Vault address has no host".into()))?
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned();
            let port = target.address.port_or_known_default().unwrap_or(8200);
            let addrs: Vec<std::net::SocketAddr> = tokio::net::lookup_host((host.as_str(), port))
                .await
                .map_err(|err| VaultError::Unavailable(format!("cannot resolve {host}: {err}")))?
                .collect();
            base.set_host(Some(name)).map_err(|_| {
                VaultError::Tls(format!("TLS server name {name:?} is not a valid host name"))
            })?;
            builder = builder.resolve_to_addrs(name, &addrs);
        }
        let http = builder
            .build()
            .map_err(|err| VaultError::Tls(format!("cannot build the HTTP client: {err}")))?;
        let endpoint = Endpoint { http, base };
        self.pools
            .lock()
            .expect("pool lock")
            .insert(key, endpoint.clone());
        Ok(endpoint)
    }
}

/// One attempt of a Vault request: its JSON response, or why it failed and
/// whether it may be repeated.
async fn send(
    request: reqwest::RequestBuilder,
    what: &str,
) -> Result<serde_json::Value, (VaultError, Retry)> {
    let started = Instant::now();
    let sent = request.send().await;
    let status = sent.as_ref().ok().map(|r| r.status().as_u16());
    metrics().vault_request(Operation::Read, status, started.elapsed());
    let response = match sent {
        Ok(response) => response,
        Err(err) => {
            let mapped = transport_error(&err, what);
            let retry = match &mapped {
                VaultError::Unavailable(_) if err.is_connect() => Retry::Always,
                VaultError::Unavailable(_) => Retry::IfIdempotent,
                _ => Retry::Never,
            };
            return Err((mapped, retry));
        }
    };
    let status = response.status();
    // A body cut short (reset, timeout) is as transient as a failed send.
    // The raw body holds the secret in clear: wiped once parsed.
    let body = read_body(response, what)
        .await
        .map(Zeroizing::new)
        .map_err(|err| {
            let retry = match err {
                VaultError::Unavailable(_) => Retry::IfIdempotent,
                _ => Retry::Never,
            };
            (err, retry)
        })?;
    if status.is_success() {
        if body.is_empty() {
            return Err((
                VaultError::NotFound(format!("{what}: Vault returned no data")),
                Retry::Never,
            ));
        }
        return serde_json::from_slice(&body).map_err(|_| {
            (
                VaultError::Unexpected(format!("{what}: response is not JSON")),
                Retry::Never,
            )
        });
    }
    Err((
        status_error(status.as_u16(), &body, what),
        retry::for_status(status.as_u16()),
    ))
}

/// Whether a failed login may be repeated.
fn login_retry(err: &ClientError) -> Retry {
    use rustify::errors::ClientError as Rest;
    match err {
        ClientError::APIError { code, .. }
        | ClientError::RestClientError {
            source: Rest::ServerResponseError { code, .. },
        } => retry::for_login_status(*code),
        ClientError::RestClientError {
            source: Rest::RequestError { source, .. },
        } => match source.downcast_ref::<reqwest::Error>() {
            // Refused or unreachable: the login was never sent. (A TLS
            // failure is also a connect error, but retrying cannot fix it.)
            Some(e) if e.is_connect() && !is_certificate_error(e) => Retry::Always,
            _ => Retry::Never,
        },
        _ => Retry::Never,
    }
}

fn is_certificate_error(err: &reqwest::Error) -> bool {
    let mut source = std::error::Error::source(err);
    while let Some(inner) = source {
        let text = inner.to_string();
        if text.contains("certificate")
            || text.contains("Certificate")
            || text.contains("received fatal alert")
        {
            return true;
        }
        source = inner.source();
    }
    false
}

/// Says how many attempts an unavailable Vault was given, so a pod owner
/// sees that the provider did retry (and did not hammer).
fn with_attempts(err: VaultError, attempts: u32) -> VaultError {
    match err {
        VaultError::Unavailable(message) if attempts > 1 => {
            VaultError::Unavailable(format!("{message} (gave up after {attempts} attempts)"))
        }
        other => other,
    }
}

/// One HTTP request to Vault.
struct Call<'a> {
    namespace: Option<&'a Namespace>,
    method: Method,
    path: &'a str,
    query: &'a [(String, String)],
    body: Option<String>,
}

/// Connection pools are shared by every target with the same TLS settings;
/// a pinned TLS server name also pins the address it is resolved from.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct PoolKey {
    tls: TlsSettings,
    pinned_address: Option<url::Url>,
}

/// Where and how to send a request: a pooled client and the base URL to use
/// with it.
#[derive(Clone)]
struct Endpoint {
    http: reqwest::Client,
    base: url::Url,
}

/// vaultrs' client trait, implemented on a borrowed view: our shared pool,
/// a per-call namespace, no token (logins need none).
struct Scoped<'a> {
    http: rustify::clients::reqwest::Client,
    middle: EndpointMiddleware,
    settings: &'a VaultClientSettings,
}

impl Drop for Scoped<'_> {
    fn drop(&mut self) {
        // vaultrs wants the token as a plain String; wipe that copy.
        self.middle.token.zeroize();
    }
}

impl vaultrs::client::Client for Scoped<'_> {
    fn http(&self) -> &rustify::clients::reqwest::Client {
        &self.http
    }

    fn middle(&self) -> &EndpointMiddleware {
        &self.middle
    }

    fn settings(&self) -> &VaultClientSettings {
        self.settings
    }

    fn set_token(&mut self, token: &str) {
        token.clone_into(&mut self.middle.token);
    }
}

fn auth_namespace(auth: &AuthPlan) -> Option<&Namespace> {
    match auth {
        AuthPlan::AppRole { namespace, .. } | AuthPlan::ServiceAccount { namespace, .. } => {
            namespace.as_ref()
        }
    }
}

fn identity_of(target: &VaultTarget, auth: &AuthPlan, pod_uid: Option<&str>) -> Identity {
    match auth {
        AuthPlan::AppRole {
            mount,
            namespace,
            role_id,
            secret_id,
        } => Identity {
            target: target.clone(),
            namespace: namespace.clone(),
            mount: mount.clone(),
            principal: format!("approle:{role_id}"),
            credential_digest: Sha256::digest(secret_id.expose_secret().as_bytes()).into(),
        },
        AuthPlan::ServiceAccount {
            method,
            mount,
            namespace,
            role,
            jwt,
            audience,
        } => Identity {
            target: target.clone(),
            namespace: namespace.clone(),
            mount: mount.clone(),
            principal: format!("{method}:{role}:{audience}:pod={}", pod_uid.unwrap_or("")),
            // Without a pod UID the token itself is the only identity we have.
            credential_digest: match pod_uid {
                Some(_) => [0; 32],
                None => Sha256::digest(jwt.expose_secret().as_bytes()).into(),
            },
        },
    }
}

fn client_builder(
    tls: &TlsSettings,
    timeout: Duration,
) -> Result<reqwest::ClientBuilder, VaultError> {
    let mut builder = reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(5)))
        .pool_idle_timeout(Duration::from_secs(90))
        .pool_max_idle_per_host(MAX_IN_FLIGHT)
        .user_agent(concat!(
            "vault-secrets-provider/",
            env!("CARGO_PKG_VERSION")
        ));
    let read = |path: &std::path::Path, what: &str| {
        std::fs::read(path)
            .map_err(|err| VaultError::Tls(format!("cannot read {what} {}: {err}", path.display())))
    };
    let mut roots = Vec::new();
    if let Some(path) = &tls.ca_cert {
        roots.extend(
            reqwest::Certificate::from_pem_bundle(&read(path, "CA certificate")?).map_err(
                |_| VaultError::Tls(format!("{} holds no PEM certificate", path.display())),
            )?,
        );
    }
    if let Some(dir) = &tls.ca_directory {
        let entries = std::fs::read_dir(dir).map_err(|err| {
            VaultError::Tls(format!("cannot read CA directory {}: {err}", dir.display()))
        })?;
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_file() {
                // A CA directory may hold other files (hash links, READMEs).
                if let Ok(certs) =
                    reqwest::Certificate::from_pem_bundle(&read(&path, "CA certificate")?)
                {
                    roots.extend(certs);
                }
            }
        }
    }
    for root in roots {
        builder = builder.add_root_certificate(root);
    }
    if let (Some(cert), Some(key)) = (&tls.client_cert, &tls.client_key) {
        let mut pem = read(cert, "client certificate")?;
        pem.push(b'\n');
        pem.extend(read(key, "client key")?);
        let identity = reqwest::Identity::from_pem(&pem)
            .map_err(|_| VaultError::Tls("client certificate or key is not valid PEM".into()))?;
        builder = builder.identity(identity);
    }
    if tls.skip_verify {
        builder = builder.tls_danger_accept_invalid_certs(true);
    }
    Ok(builder)
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

async fn read_body(mut response: reqwest::Response, what: &str) -> Result<Vec<u8>, VaultError> {
    if response
        .content_length()
        .is_some_and(|len| len > MAX_RESPONSE_BYTES as u64)
    {
        return Err(VaultError::Unexpected(format!(
            "{what}: response larger than {MAX_RESPONSE_BYTES} bytes"
        )));
    }
    // Sized up front when Vault says how big: growing would leave copies of
    // the secret behind in freed memory that [`Zeroizing`] cannot reach.
    let mut body = Vec::with_capacity(response.content_length().unwrap_or(0) as usize);
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|err| transport_error(&err, what))?
    {
        if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
            return Err(VaultError::Unexpected(format!(
                "{what}: response larger than {MAX_RESPONSE_BYTES} bytes"
            )));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

fn transport_error(err: &reqwest::Error, what: &str) -> VaultError {
    let kind = if err.is_timeout() {
        "timed out"
    } else if err.is_connect() {
        "cannot connect"
    } else {
        "request failed"
    };
    // reqwest's Display includes the URL, which holds no secret; the chain
    // below it names the OS error (connection refused, reset, ...).
    let mut cause = String::new();
    let mut source = std::error::Error::source(err);
    while let Some(inner) = source {
        cause = inner.to_string();
        source = inner.source();
    }
    unavailable_or_tls(what, kind, &cause)
}

/// A transport failure: `Unavailable`, except for a certificate the provider
/// cannot verify, which is a configuration problem (CA, server name) that
/// retrying cannot fix.
fn unavailable_or_tls(what: &str, kind: &str, cause: &str) -> VaultError {
    // Vault's certificate is judged here; an alert from Vault means it did
    // not like ours (missing, expired, or from a CA it does not trust).
    if cause.contains("received fatal alert") {
        return VaultError::Tls(format!(
            "{what}: Vault refused the TLS handshake ({cause}); check the client certificate \
             (vaultTLSClientCertPath and vaultTLSClientKeyPath, or --vault-tls-client-cert and \
             --vault-tls-client-key) and that Vault trusts its CA"
        ));
    }
    if cause.contains("certificate") || cause.contains("Certificate") {
        return VaultError::Tls(format!(
            "{what}: Vault's TLS certificate was not accepted ({cause}); check vaultCACertPath, \
             vaultCADirectory or vaultTLSServerName"
        ));
    }
    VaultError::Unavailable(format!("{what}: {kind}: {cause}"))
}

/// Vault's `{"errors": [...]}` text, shortened.
fn error_text(body: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    struct Errors {
        #[serde(default)]
        errors: Vec<String>,
    }
    let text = match serde_json::from_slice::<Errors>(body) {
        Ok(parsed) if !parsed.errors.is_empty() => parsed.errors.join("; "),
        Ok(_) => String::new(),
        Err(_) => String::from_utf8_lossy(body).trim().to_owned(),
    };
    let text = text.replace(['\n', '\t'], " ");
    let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if text.len() > MAX_ERROR_TEXT {
        let mut end = MAX_ERROR_TEXT;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}…", &text[..end])
    } else {
        text
    }
}

fn with_detail(what: &str, detail: &str) -> String {
    if detail.is_empty() {
        what.to_owned()
    } else {
        format!("{what}: {detail}")
    }
}

fn status_error(status: u16, body: &[u8], what: &str) -> VaultError {
    let detail = error_text(body);
    match status {
        400 => VaultError::Rejected(with_detail(what, &detail)),
        401 | 403 => VaultError::PermissionDenied(with_detail(what, &detail)),
        404 => VaultError::NotFound(with_detail(what, &detail)),
        412 | 429 | 500 | 502 | 503 | 504 => {
            VaultError::Unavailable(with_detail(&format!("{what}: HTTP {status}"), &detail))
        }
        _ => VaultError::Unexpected(with_detail(&format!("{what}: HTTP {status}"), &detail)),
    }
}

/// A login Vault answered with 400, 401 or 403. Vault uses 403 both for credentials
/// it cannot verify (a bad or expired JWT: "permission denied") and for a valid
/// identity the role does not admit (Kubernetes auth: "service account name not
/// authorized", "namespace not authorized"). Only the second is a permission
/// problem (`PermissionDenied`); everything else is a refused login.
fn login_refused(code: u16, where_: &str, detail: &str) -> VaultError {
    if code == 403 && detail.contains("not authorized") {
        VaultError::PermissionDenied(with_detail(where_, detail))
    } else {
        VaultError::LoginRefused(with_detail(where_, detail))
    }
}

fn login_error(err: ClientError, where_: &str) -> VaultError {
    use rustify::errors::ClientError as Rest;
    match err {
        ClientError::APIError { code, errors } => {
            let detail = error_text(
                serde_json::json!({ "errors": errors })
                    .to_string()
                    .as_bytes(),
            );
            match code {
                400 | 401 | 403 => login_refused(code, where_, &detail),
                404 => VaultError::NotFound(with_detail(
                    &format!("{where_} (is the auth mount or namespace right?)"),
                    &detail,
                )),
                _ => status_error(
                    code,
                    serde_json::json!({ "errors": [detail] })
                        .to_string()
                        .as_bytes(),
                    where_,
                ),
            }
        }
        ClientError::RestClientError {
            source: Rest::ServerResponseError { code, content },
        } => {
            let body = content.unwrap_or_default();
            match code {
                400 | 401 | 403 => login_refused(code, where_, &error_text(body.as_bytes())),
                _ => status_error(code, body.as_bytes(), where_),
            }
        }
        ClientError::RestClientError {
            source: Rest::RequestError { source, .. },
        } => {
            let cause = source
                .chain()
                .last()
                .map(ToString::to_string)
                .unwrap_or_default();
            let kind = match source.downcast_ref::<reqwest::Error>() {
                Some(e) if e.is_timeout() => "timed out",
                Some(e) if e.is_connect() => "cannot connect",
                _ => "request failed",
            };
            unavailable_or_tls(&format!("login at {where_}"), kind, &cause)
        }
        ClientError::ResponseEmptyError | ClientError::ResponseDataEmptyError => {
            VaultError::Unexpected(format!("login at {where_} returned no auth data"))
        }
        other => VaultError::Unexpected(format!("login at {where_}: {other}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_map_to_kinds() {
        let body = br#"{"errors":["permission denied"]}"#;
        assert!(
            matches!(status_error(403, body, "x"), VaultError::PermissionDenied(m) if m == "x: permission denied")
        );
        assert!(
            matches!(status_error(404, b"{\"errors\":[]}", "x"), VaultError::NotFound(m) if m == "x")
        );
        assert!(matches!(
            status_error(503, b"{\"errors\":[\"Vault is sealed\"]}", "x"),
            VaultError::Unavailable(_)
        ));
        assert!(matches!(
            status_error(429, b"", "x"),
            VaultError::Unavailable(_)
        ));
        assert!(matches!(
            status_error(400, b"{\"errors\":[\"bad\"]}", "x"),
            VaultError::Rejected(_)
        ));
        assert!(matches!(
            status_error(418, b"", "x"),
            VaultError::Unexpected(_)
        ));
    }

    #[test]
    fn a_role_that_does_not_admit_the_identity_is_permission_denied() {
        let api = |code: u16, text: &str| ClientError::APIError {
            code,
            errors: vec![text.to_owned()],
        };
        // OpenBao's answers, observed against a real apiserver (tests/kubernetes.rs).
        for text in [
            "service account name not authorized",
            "namespace not authorized",
        ] {
            assert!(
                matches!(login_error(api(403, text), "auth/kubernetes"),
                    VaultError::PermissionDenied(m) if m == format!("auth/kubernetes: {text}")),
                "{text}"
            );
        }
        for (code, text) in [
            (403, "permission denied"),
            (
                403,
                "invalid audience (aud) claim: audience claim does not match any expected audience",
            ),
            (400, "invalid role or secret ID"),
            (400, "invalid role name \"nope\""),
        ] {
            assert!(
                matches!(
                    login_error(api(code, text), "x"),
                    VaultError::LoginRefused(_)
                ),
                "{code} {text}"
            );
        }
    }

    #[test]
    fn error_text_is_bounded_and_flat() {
        let long = format!("{{\"errors\":[\"{}\"]}}", "é".repeat(400));
        assert!(error_text(long.as_bytes()).chars().count() <= MAX_ERROR_TEXT + 1);
        assert_eq!(
            error_text(
                b"{\"errors\":[\"1 error occurred:\\n\\t* invalid role or secret ID\\n\\n\"]}"
            ),
            "1 error occurred: * invalid role or secret ID"
        );
        assert_eq!(error_text(b"plain text"), "plain text");
    }
}
