//! The HTTP transport to Vault: one connection pool per TLS setting, the
//! request path every object read, lease call and health check takes (any
//! path and method, per-request namespace, bounded response size), the bound
//! on requests in flight, and retries of transient failures.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use secrecy::ExposeSecret as _;
use zeroize::Zeroizing;

use super::error::{VaultError, status_error, transport_error, with_attempts};
use super::retry::{self, Retry, RetryPolicy};
use super::tokens::Token;
use crate::request::{Method, Namespace, TlsSettings, VaultTarget};
use crate::telemetry::metrics::{Operation, metrics};

/// Largest Vault response we accept. The driver's gRPC limit is 4 MiB for a
/// whole Mount, so anything bigger cannot be delivered anyway.
const MAX_RESPONSE_BYTES: usize = 8 << 20;
/// Most requests to Vault in flight at once, over all Mounts; also the idle
/// connections each pool keeps, so a pod storm reuses that many connections
/// instead of opening one per request (200 pods of JWT identities once opened
/// about 1,000 at a time: tens of MiB, and a connection storm on Vault).
const MAX_IN_FLIGHT: usize = 64;

/// Connection pools, the in-flight bound and the retry policy: everything
/// every request to Vault shares.
pub(super) struct Http {
    pools: Mutex<HashMap<PoolKey, Endpoint>>,
    /// Permits for [`MAX_IN_FLIGHT`] requests.
    in_flight: tokio::sync::Semaphore,
    /// Deadline for one HTTP request.
    request_timeout: Duration,
    /// Retries of transient failures (see [`retry`]).
    pub(super) retry: RetryPolicy,
}

impl Http {
    pub(super) fn new(request_timeout: Duration) -> Self {
        Self {
            pools: Mutex::new(HashMap::new()),
            in_flight: tokio::sync::Semaphore::new(MAX_IN_FLIGHT),
            request_timeout,
            retry: RetryPolicy::default(),
        }
    }

    /// Waits for one of the [`MAX_IN_FLIGHT`] request slots.
    pub(super) async fn permit(&self) -> tokio::sync::SemaphorePermit<'_> {
        self.in_flight
            .acquire()
            .await
            .expect("the request semaphore is never closed")
    }

    pub(super) async fn call(
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
    pub(super) async fn endpoint(&self, target: &VaultTarget) -> Result<Endpoint, VaultError> {
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
        let mut builder = client_builder(&target.tls, self.request_timeout)?;
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

/// One HTTP request to Vault.
pub(super) struct Call<'a> {
    pub(super) namespace: Option<&'a Namespace>,
    pub(super) method: Method,
    pub(super) path: &'a str,
    pub(super) query: &'a [(String, String)],
    pub(super) body: Option<String>,
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
pub(super) struct Endpoint {
    pub(super) http: reqwest::Client,
    pub(super) base: url::Url,
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
