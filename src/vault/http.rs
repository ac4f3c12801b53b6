//! The HTTP transport to Vault: one connection pool per TLS setting, the
//! request path every object read, lease call and health check takes (any
//! path and method, per-request namespace, bounded response size), the bound
//! on requests in flight, and retries of transient failures.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use secrecy::ExposeSecret as _;
use zeroize::Zeroizing;

use super::error::{VaultError, status_error, transport_error, with_attempts};
use super::fair::{FairShare, Permit, Tenant};
use super::retry::{self, Retry, RetryPolicy};
use super::tokens::Token;
use crate::budget::ByteBudget;
use crate::request::{AllowedOrigins, Method, Namespace, TlsSettings, VaultTarget};
use crate::telemetry::metrics::{Operation, metrics};

/// Largest Vault response we accept for calls outside a Mount's budget
/// (lease renewals and revocations); an object's read is capped by what is
/// left of its Mount's [`ByteBudget`].
const MAX_RESPONSE_BYTES: usize = 8 << 20;
/// Most HTTP clients (one per TLS setting) kept; the least recently used is
/// dropped beyond that, so SecretProviderClasses naming ever new TLS settings
/// cannot grow memory without bound (each client holds some 100 KiB).
pub(super) const MAX_CLIENTS: usize = 64;
/// Most requests to Vault in flight at once, over all Mounts; also the idle
/// connections each pool keeps, so a pod storm reuses that many connections
/// instead of opening one per request (200 pods of JWT identities once opened
/// about 1,000 at a time: tens of MiB, and a connection storm on Vault).
pub(super) const MAX_IN_FLIGHT: usize = 64;
/// Default bound on one pod namespace's requests in flight, under
/// [`MAX_IN_FLIGHT`] (`--max-in-flight-per-namespace`): a slow Vault of one
/// namespace holds at most this many, leaving the rest to the others.
pub const DEFAULT_MAX_IN_FLIGHT_PER_NAMESPACE: usize = 16;
/// Most redirects followed for one request (a standby pointing at the active
/// node needs one).
const MAX_REDIRECTS: usize = 2;

/// Connection pools, the in-flight bound and the retry policy: everything
/// every request to Vault shares.
pub(super) struct Http {
    /// Clients by TLS setting, with when each was last used: a bounded LRU of
    /// [`MAX_CLIENTS`] (hand-written: 64 entries, a linear scan on insert).
    pools: Mutex<Pools>,
    /// Clients built so far (for tests: an evicted one is rebuilt).
    built: AtomicUsize,
    /// Permits for [`MAX_IN_FLIGHT`] requests, and for each pod namespace's share.
    pub(super) fair: FairShare,
    /// Deadline for one HTTP request.
    request_timeout: Duration,
    /// Retries of transient failures (see [`retry`]).
    pub(super) retry: RetryPolicy,
    /// Where redirects may lead (`--allowed-vault-addr`).
    pub(super) allowed: Arc<AllowedOrigins>,
}

impl Http {
    pub(super) fn new(request_timeout: Duration) -> Self {
        Self {
            pools: Mutex::new(Pools::default()),
            built: AtomicUsize::new(0),
            fair: FairShare::new(MAX_IN_FLIGHT, DEFAULT_MAX_IN_FLIGHT_PER_NAMESPACE),
            request_timeout,
            retry: RetryPolicy::default(),
            allowed: Arc::new(AllowedOrigins::default()),
        }
    }

    /// Waits for one of `tenant`'s request slots, then for one of the
    /// [`MAX_IN_FLIGHT`] global ones.
    pub(super) async fn permit(&self, tenant: &Tenant) -> Permit<'_> {
        self.fair.acquire(tenant).await
    }

    pub(super) async fn call(
        &self,
        target: &VaultTarget,
        token: &Token,
        request: Call<'_>,
        what: &str,
    ) -> Result<serde_json::Value, VaultError> {
        let Endpoint { http, base } = self.endpoint(target).await?;
        let mut url = api_url(base, request.path.split('/'))?;
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
        // Built once, so a header value that cannot be sent is an error here
        // rather than a panic on cloning (tokens are checked at login too).
        let request_once = builder
            .build()
            .map_err(|_| VaultError::Unexpected(format!("{what}: the request cannot be built")))?;
        let idempotent = matches!(request.method, Method::Get | Method::List);
        let mut failed = 0;
        loop {
            let attempt = request_once.try_clone().ok_or_else(|| {
                VaultError::Unexpected(format!("{what}: the request cannot be repeated"))
            })?;
            // The permit is held until the body is read: the connection is
            // busy until then.
            let permit = self.permit(&token.tenant).await;
            let outcome = send(&http, attempt, what, request.budget).await;
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
        let cached = self.pools.lock().expect("pool lock").get(&key);
        if let Some(endpoint) = cached {
            if key.pinned_address.is_none() {
                return Ok(Endpoint {
                    base: target.address.clone(),
                    ..endpoint
                });
            }
            return Ok(endpoint);
        }
        let mut builder = client_builder(&target.tls, self.request_timeout)?
            .redirect(redirect_policy(self.allowed.clone()));
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
        self.built.fetch_add(1, Ordering::Relaxed);
        let endpoint = Endpoint { http, base };
        self.pools
            .lock()
            .expect("pool lock")
            .insert(key, endpoint.clone());
        Ok(endpoint)
    }

    /// Clients built so far.
    #[cfg(test)]
    fn built(&self) -> usize {
        self.built.load(Ordering::Relaxed)
    }
}

/// The clients by TLS setting, least recently used dropped first.
#[derive(Default)]
struct Pools {
    clients: HashMap<PoolKey, (Endpoint, u64)>,
    /// Advances on every use; the smallest stamp is the least recently used.
    clock: u64,
}

impl Pools {
    fn get(&mut self, key: &PoolKey) -> Option<Endpoint> {
        self.clock += 1;
        let (endpoint, used) = self.clients.get_mut(key)?;
        *used = self.clock;
        Some(endpoint.clone())
    }

    fn insert(&mut self, key: PoolKey, endpoint: Endpoint) {
        self.clock += 1;
        if !self.clients.contains_key(&key) && self.clients.len() >= MAX_CLIENTS {
            let oldest = self
                .clients
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(key, _)| key.clone());
            if let Some(oldest) = oldest {
                self.clients.remove(&oldest);
            }
        }
        self.clients.insert(key, (endpoint, self.clock));
    }
}

/// One attempt of a Vault request: its JSON response, or why it failed and
/// whether it may be repeated.
async fn send(
    http: &reqwest::Client,
    request: reqwest::Request,
    what: &str,
    budget: Option<&ByteBudget>,
) -> Result<serde_json::Value, (VaultError, Retry)> {
    let started = Instant::now();
    let sent = http.execute(request).await;
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
    // Without a Mount's budget (lease calls), the fixed per-response cap.
    let fixed = ByteBudget::new(MAX_RESPONSE_BYTES, "no flag");
    let budget = budget.unwrap_or(&fixed);
    // A body cut short (reset, timeout) is as transient as a failed send.
    // The raw body holds the secret in clear: wiped once parsed.
    let body = read_body(response, what, Some(budget))
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
        // Parsed, a body weighs more than on the wire (a dense `[0,0,…]` of
        // 4 MB is some 130 MB of values): that is charged before parsing.
        if budget.charge(parsed_weight(&body)).is_err() {
            return Err((
                VaultError::TooLarge(format!("{what}: {}", budget.over())),
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
    /// The Mount's byte budget, charged while the response streams in
    /// (`None`: capped at [`MAX_RESPONSE_BYTES`]).
    pub(super) budget: Option<&'a ByteBudget>,
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

/// The one rule for where an API path goes: `<address path>/v1/<api path>`,
/// so a Vault behind a path prefix (`https://host/vault`) gets
/// `https://host/vault/v1/secret/data/x`, the way Vault's own clients join it.
/// Reads, leases and `sys/health` use it; logins through vaultrs get the same
/// through [`vaultrs_base`].
pub(super) fn api_url<'a>(
    mut base: url::Url,
    path: impl IntoIterator<Item = &'a str>,
) -> Result<url::Url, VaultError> {
    base.path_segments_mut()
        .map_err(|()| VaultError::Unexpected("Vault address cannot hold a path".into()))?
        .pop_if_empty()
        .push("v1")
        .extend(path);
    Ok(base)
}

/// [`api_url`]'s rule for vaultrs, which builds `<base>/<api path>` and then
/// puts its "version" in front of the whole path: so the base is the origin
/// alone and the "version" is `<address path>/v1`.
pub(super) fn vaultrs_base(base: &url::Url) -> (String, String) {
    let prefix = base.path().trim_matches('/');
    let version = if prefix.is_empty() {
        "v1".to_owned()
    } else {
        format!("{prefix}/v1")
    };
    (base.origin().ascii_serialization(), version)
}

/// Follows a redirect only to the request's own origin or an allowed one, at
/// most [`MAX_REDIRECTS`] times; anything else fails the request before it is
/// sent there (reqwest's default follows 10 hops anywhere, and our
/// `X-Vault-Token` header goes along).
fn redirect_policy(allowed: Arc<AllowedOrigins>) -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(move |attempt| {
        // `previous` starts with the original URL.
        if attempt.previous().len() > MAX_REDIRECTS {
            return attempt.error(RedirectRefused(format!(
                "more than {MAX_REDIRECTS} redirects"
            )));
        }
        let same_origin = attempt
            .previous()
            .first()
            .is_some_and(|first| first.origin() == attempt.url().origin());
        if same_origin || allowed.allows(attempt.url()) {
            attempt.follow()
        } else {
            attempt.error(RedirectRefused(
                "redirected to an origin --allowed-vault-addr does not list".into(),
            ))
        }
    })
}

/// Bytes a parsed JSON value takes per value beyond its text: a
/// `serde_json::Value` is 32 bytes, plus its share of the array or map that
/// holds it (measured: about 65 bytes per value for a dense array of numbers).
const PARSED_VALUE_BYTES: usize = 64;

/// What parsing `body` will hold beyond the body itself, from one linear pass:
/// each value (counted by the separators and openers outside strings, and by
/// the strings themselves) at [`PARSED_VALUE_BYTES`].
fn parsed_weight(body: &[u8]) -> usize {
    let mut values = 1usize;
    let mut in_string = false;
    let mut escaped = false;
    for &byte in body {
        if in_string {
            match byte {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match byte {
            b'"' => in_string = true,
            b',' | b'[' | b'{' | b':' => values += 1,
            _ => {}
        }
    }
    values.saturating_mul(PARSED_VALUE_BYTES)
}

/// A redirect the policy did not follow.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(super) struct RedirectRefused(String);

/// Reads a response body, charging `budget` (if any) before the bytes are
/// held: a body that does not fit fails as soon as it is known not to, and
/// what an attempt charged is given back if it fails.
async fn read_body(
    response: reqwest::Response,
    what: &str,
    budget: Option<&ByteBudget>,
) -> Result<Vec<u8>, VaultError> {
    let fixed = ByteBudget::new(MAX_RESPONSE_BYTES, "no flag");
    let budget = budget.unwrap_or(&fixed);
    let mut charged = 0;
    let result = read_charged(response, what, budget, &mut charged).await;
    if result.is_err() {
        budget.refund(charged);
    }
    result
}

async fn read_charged(
    mut response: reqwest::Response,
    what: &str,
    budget: &ByteBudget,
    charged: &mut usize,
) -> Result<Vec<u8>, VaultError> {
    let over = |budget: &ByteBudget| VaultError::TooLarge(format!("{what}: {}", budget.over()));
    let mut charge = |bytes: usize| {
        *charged += bytes;
        budget.charge(bytes).map_err(|_| over(budget))
    };
    let declared = response.content_length().unwrap_or(0);
    if declared > budget.remaining() as u64 {
        return Err(over(budget));
    }
    let declared = declared as usize;
    charge(declared)?;
    // Sized up front when Vault says how big: growing would leave copies of
    // the secret behind in freed memory that [`Zeroizing`] cannot reach.
    let mut body = Vec::with_capacity(declared);
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|err| transport_error(&err, what))?
    {
        let beyond = (body.len() + chunk.len()).saturating_sub(declared.max(body.len()));
        if beyond > 0 {
            charge(beyond)?;
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parsed_weight_counts_values_not_bytes() {
        let dense = format!("[{}0]", "0,".repeat(1000));
        assert_eq!(parsed_weight(dense.as_bytes()), 1002 * PARSED_VALUE_BYTES);
        // A long string is one value, whatever it holds.
        let text = format!(r#"{{"data":{{"v":"{}"}}}}"#, r#"a,b:[{\"#.repeat(1000));
        assert_eq!(parsed_weight(text.as_bytes()), 5 * PARSED_VALUE_BYTES);
        // What a real KV v2 answer costs: a few KiB at most.
        let kv = br#"{"request_id":"x","lease_id":"","renewable":false,"lease_duration":0,"data":{"data":{"password":"p","user":"u"},"metadata":{"created_time":"t","deletion_time":"","destroyed":false,"version":3}},"wrap_info":null,"warnings":null,"auth":null}"#;
        assert!(parsed_weight(kv) < 4096, "{}", parsed_weight(kv));
    }

    #[test]
    fn one_rule_joins_paths_for_reads_and_logins() {
        for (address, read, login) in [
            (
                "https://h:8200",
                "https://h:8200/v1/secret/data/x",
                "https://h:8200/v1/auth/approle/login",
            ),
            (
                "https://h:8200/vault/",
                "https://h:8200/vault/v1/secret/data/x",
                "https://h:8200/vault/v1/auth/approle/login",
            ),
            (
                "http://h/a/b",
                "http://h/a/b/v1/secret/data/x",
                "http://h/a/b/v1/auth/approle/login",
            ),
        ] {
            let base = url::Url::parse(address).unwrap();
            assert_eq!(
                api_url(base.clone(), "secret/data/x".split('/'))
                    .unwrap()
                    .as_str(),
                read
            );
            // What vaultrs does with (origin, version): `<origin>/<path>`,
            // then `version` put in front of the whole path.
            let (origin, version) = vaultrs_base(&base);
            let mut url = url::Url::parse(&origin).unwrap();
            url.path_segments_mut()
                .unwrap()
                .extend("auth/approle/login".split('/'));
            let path = format!("{version}{}", url.path());
            url.set_path(&path);
            assert_eq!(url.as_str(), login);
        }
    }

    fn target(n: usize) -> VaultTarget {
        VaultTarget {
            address: url::Url::parse("http://127.0.0.1:8200").unwrap(),
            tls: TlsSettings {
                server_name: Some(format!("vault-{n}.test")),
                ..TlsSettings::default()
            },
        }
    }

    #[tokio::test]
    async fn clients_are_a_bounded_lru() {
        let http = Http::new(Duration::from_secs(1));
        for n in 0..MAX_CLIENTS {
            http.endpoint(&target(n)).await.unwrap();
        }
        assert_eq!(http.built(), MAX_CLIENTS);
        // Used again: target 1 is now the least recently used.
        http.endpoint(&target(0)).await.unwrap();
        assert_eq!(http.built(), MAX_CLIENTS, "reused, not rebuilt");

        http.endpoint(&target(MAX_CLIENTS)).await.unwrap();
        assert_eq!(http.built(), MAX_CLIENTS + 1);
        assert_eq!(http.pools.lock().unwrap().clients.len(), MAX_CLIENTS);
        http.endpoint(&target(0)).await.unwrap();
        assert_eq!(http.built(), MAX_CLIENTS + 1, "target 0 was kept");
        http.endpoint(&target(1)).await.unwrap();
        assert_eq!(
            http.built(),
            MAX_CLIENTS + 2,
            "target 1 was evicted and is rebuilt"
        );
        assert_eq!(http.pools.lock().unwrap().clients.len(), MAX_CLIENTS);
    }
}
