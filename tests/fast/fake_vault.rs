//! A FAKE Vault, for the fast tier only (`tests/core.rs`, `make unit`).
//!
//! This is not Vault and does not try to be: it checks no policies, keeps no
//! storage, and knows only the handful of API calls the provider's Mount
//! orchestration makes. Whether the provider talks to a real Vault correctly
//! is what the integration suites check against real OpenBao (`make test`);
//! this fake exists so the orchestration in between (source de-duplication,
//! the single flight, the lease and token caches, the 403 re-login) can be
//! tested in-process in milliseconds, counting every request it makes.
//!
//! It listens on a loopback port and runs on the test's own runtime. It answers
//!
//! - `POST|PUT /v1/auth/<mount>/login`: AppRole with [`ROLE_ID`] and
//!   [`SECRET_ID`] (any mount) → a new token, valid until revoked;
//! - `POST|PUT /v1/auth/token/renew-self`, `.../revoke-self`;
//! - `PUT|POST /v1/sys/leases/renew` (grants the increment asked for) and
//!   `.../revoke`;
//! - any other path given a [`Secret`] with [`FakeVault::put`], with a valid
//!   token (403 without one), and 404 for the rest.
//!
//! Tests script it: the next N requests to a path answer a status
//! ([`FakeVault::fail_next`]); requests to a path wait at a gate until the test
//! opens it ([`FakeVault::hold`], [`FakeVault::release`]), which orders
//! concurrent Mounts without sleeping; tokens can be revoked behind the
//! provider's back ([`FakeVault::revoke_tokens`]). Every request is recorded
//! ([`FakeVault::seen`], [`FakeVault::count`]) with the token and namespace it
//! carried.
#![allow(dead_code)]

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::sync::watch;

/// The AppRole role ID the fake accepts.
pub const ROLE_ID: &str = "fake-role-id";
/// The AppRole secret ID the fake accepts.
pub const SECRET_ID: &str = "fake-secret-id";

/// What a path answers.
#[derive(Clone, Debug)]
pub enum Secret {
    /// The same response every time (see [`kv2`]).
    Static(Value),
    /// New credentials per request, under a new lease: `lease_id`
    /// `<path>/<n>`, `data.username` `user-<n>`, `data.password` `pass-<n>`.
    Lease {
        /// `lease_duration`, seconds.
        duration: u64,
        /// Whether `sys/leases/renew` extends it.
        renewable: bool,
    },
    /// A new certificate per request (as PKI issue does): `data.certificate`
    /// `CERT-<n>`, `data.serial_number` `<n>`, valid from now for `ttl` seconds.
    Certificate {
        /// Validity, seconds.
        ttl: u64,
    },
}

/// A KV v2 read response holding `data`.
pub fn kv2(data: Value) -> Secret {
    Secret::Static(json!({
        "request_id": "fake", "lease_id": "", "lease_duration": 0, "renewable": false,
        "data": {"data": data, "metadata": {"version": 1, "created_time": "2026-01-01T00:00:00Z"}},
    }))
}

/// One request the fake received.
#[derive(Clone, Debug)]
pub struct Seen {
    /// `GET`, `PUT`, `POST`.
    pub method: String,
    /// Path without `/v1/` and without query, e.g. `secret/data/app`.
    pub path: String,
    /// `X-Vault-Token`, if sent.
    pub token: Option<String>,
    /// `X-Vault-Namespace`, if sent.
    pub namespace: Option<String>,
    /// The JSON body (`Null` if none).
    pub body: Value,
    /// The status answered (0 while the request is still waiting at a gate).
    pub status: u16,
}

struct Failure {
    path: String,
    status: u16,
    remaining: usize,
}

#[derive(Default)]
struct State {
    secrets: HashMap<String, Secret>,
    /// Issued tokens → still valid.
    tokens: HashMap<String, bool>,
    token_ttl: u64,
    /// Known leases → duration granted last.
    leases: HashMap<String, u64>,
    issued: u64,
    failures: Vec<Failure>,
    /// Closed gates (`false`) and open ones, by path.
    gates: HashMap<String, watch::Sender<bool>>,
    /// Requests waiting at each path's gate.
    held: HashMap<String, usize>,
    seen: Vec<Seen>,
}

struct Shared {
    state: Mutex<State>,
    /// Bumped on every change a test may wait for.
    changed: watch::Sender<u64>,
}

impl Shared {
    fn update<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        let out = f(&mut self.state.lock().expect("fake vault lock"));
        self.changed.send_modify(|n| *n += 1);
        out
    }
}

/// The running fake; stops accepting connections when dropped.
pub struct FakeVault {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: tokio::task::JoinHandle<()>,
}

impl Drop for FakeVault {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

impl FakeVault {
    /// A fake on a free loopback port, served by the current runtime. Tokens
    /// it issues have a TTL of one hour unless [`Self::set_token_ttl`] says otherwise.
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the fake Vault");
        let addr = listener.local_addr().expect("fake Vault address");
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                token_ttl: 3600,
                ..State::default()
            }),
            changed: watch::channel(0).0,
        });
        let serving = shared.clone();
        let accept = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let shared = serving.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |request| {
                        let shared = shared.clone();
                        async move { Ok::<_, Infallible>(handle(&shared, request).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self {
            addr,
            shared,
            accept,
        }
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> url::Url {
        url::Url::parse(&format!("http://{}", self.addr)).expect("fake Vault URL")
    }

    /// Makes `path` (without `/v1/`) answer `secret`.
    pub fn put(&self, path: &str, secret: Secret) {
        self.shared
            .update(|s| s.secrets.insert(path.to_owned(), secret));
    }

    /// TTL (seconds) of the tokens issued from now on; also what `renew-self` grants.
    pub fn set_token_ttl(&self, seconds: u64) {
        self.shared.update(|s| s.token_ttl = seconds);
    }

    /// The next `n` requests to `path` answer `status` (`{"errors":["scripted"]}`).
    pub fn fail_next(&self, path: &str, n: usize, status: u16) {
        self.shared.update(|s| {
            s.failures.push(Failure {
                path: path.to_owned(),
                status,
                remaining: n,
            })
        });
    }

    /// Requests to `path` wait until [`Self::release`].
    pub fn hold(&self, path: &str) {
        self.shared
            .update(|s| s.gates.insert(path.to_owned(), watch::channel(false).0));
    }

    /// Lets the requests waiting at `path` (and later ones) through.
    pub fn release(&self, path: &str) {
        self.shared.update(|s| {
            if let Some(gate) = s.gates.remove(path) {
                gate.send_replace(true);
            }
        });
    }

    /// Waits until `n` requests to `path` wait at its gate.
    pub async fn held(&self, path: &str, n: usize) {
        self.until(|s| s.held.get(path).copied().unwrap_or(0) >= n)
            .await;
    }

    /// Revokes every token issued so far: requests with them get 403.
    pub fn revoke_tokens(&self) {
        self.shared
            .update(|s| s.tokens.values_mut().for_each(|valid| *valid = false));
    }

    /// Every request so far, in arrival order.
    pub fn seen(&self) -> Vec<Seen> {
        self.shared
            .state
            .lock()
            .expect("fake vault lock")
            .seen
            .clone()
    }

    /// Requests so far to `path` (without `/v1/`), any method.
    pub fn count(&self, path: &str) -> usize {
        self.seen().iter().filter(|s| s.path == path).count()
    }

    /// Logins so far, at any auth mount.
    pub fn logins(&self) -> usize {
        self.seen()
            .iter()
            .filter(|s| s.path.starts_with("auth/") && s.path.ends_with("/login"))
            .count()
    }

    async fn until(&self, done: impl Fn(&State) -> bool) {
        let mut changed = self.shared.changed.subscribe();
        loop {
            if done(&self.shared.state.lock().expect("fake vault lock")) {
                return;
            }
            changed.changed().await.expect("the fake Vault is alive");
        }
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

fn reply(status: u16, body: &Value) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .expect("a valid response")
}

fn errors(status: u16, message: &str) -> (u16, Value) {
    (status, json!({ "errors": [message] }))
}

/// A login or `renew-self` answer in Vault's shape (vaultrs needs every field).
fn auth(token: &str, ttl: u64) -> Value {
    json!({
        "request_id": "fake", "lease_id": "", "lease_duration": 0, "renewable": false,
        "data": null, "warnings": null, "wrap_info": null,
        "auth": {
            "client_token": token, "accessor": format!("accessor-{token}"),
            "policies": ["default"], "token_policies": ["default"], "metadata": null,
            "lease_duration": ttl, "renewable": true, "entity_id": "", "token_type": "service",
            "orphan": true,
        },
    })
}

async fn handle(shared: &Shared, request: Request<hyper::body::Incoming>) -> Response<Full<Bytes>> {
    let method = request.method().as_str().to_owned();
    let path = request
        .uri()
        .path()
        .strip_prefix("/v1/")
        .unwrap_or(request.uri().path())
        .to_owned();
    let header = |name: &str| {
        request
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let (token, namespace) = (header("x-vault-token"), header("x-vault-namespace"));
    let body = request
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let (index, gate) = shared.update(|s| {
        s.seen.push(Seen {
            method: method.clone(),
            path: path.clone(),
            token: token.clone(),
            namespace,
            body: body.clone(),
            status: 0,
        });
        let gate = s.gates.get(&path).map(watch::Sender::subscribe);
        if gate.is_some() {
            *s.held.entry(path.clone()).or_default() += 1;
        }
        (s.seen.len() - 1, gate)
    });
    if let Some(mut gate) = gate {
        let _ = gate.wait_for(|open| *open).await;
        shared.update(|s| *s.held.entry(path.clone()).or_default() -= 1);
    }
    let (status, answer) = shared.update(|s| {
        let answer = answer(s, &method, &path, token.as_deref(), &body);
        s.seen[index].status = answer.0;
        answer
    });
    reply(status, &answer)
}

fn answer(
    s: &mut State,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &Value,
) -> (u16, Value) {
    if let Some(failure) = s
        .failures
        .iter_mut()
        .find(|f| f.path == path && f.remaining > 0)
    {
        failure.remaining -= 1;
        return errors(failure.status, "scripted");
    }
    let write = method == "PUT" || method == "POST";
    if write && path.starts_with("auth/") && path.ends_with("/login") {
        if body["role_id"] != ROLE_ID || body["secret_id"] != SECRET_ID {
            return errors(400, "invalid role or secret ID");
        }
        s.issued += 1;
        let token = format!("fake-token-{}", s.issued);
        s.tokens.insert(token.clone(), true);
        return (200, auth(&token, s.token_ttl));
    }
    let Some(token) = token.filter(|t| s.tokens.get(*t) == Some(&true)) else {
        return errors(403, "permission denied");
    };
    match (write, path) {
        (true, "auth/token/renew-self") => (200, auth(token, s.token_ttl)),
        (true, "auth/token/revoke-self") => {
            s.tokens.insert(token.to_owned(), false);
            (204, Value::Null)
        }
        (true, "sys/leases/renew") => {
            let id = body["lease_id"].as_str().unwrap_or_default();
            let increment = body["increment"].as_u64().unwrap_or(0);
            match s.leases.get_mut(id) {
                Some(granted) => {
                    *granted = increment;
                    (
                        200,
                        json!({"lease_id": id, "lease_duration": increment, "renewable": true, "data": null}),
                    )
                }
                None => errors(400, "lease not found"),
            }
        }
        (true, "sys/leases/revoke") => {
            s.leases
                .remove(body["lease_id"].as_str().unwrap_or_default());
            (204, Value::Null)
        }
        _ => match s.secrets.get(path).cloned() {
            None => (404, json!({"errors": []})),
            Some(Secret::Static(response)) => (200, response),
            Some(Secret::Lease {
                duration,
                renewable,
            }) => {
                s.issued += 1;
                let n = s.issued;
                let id = format!("{path}/{n}");
                s.leases.insert(id.clone(), duration);
                (
                    200,
                    json!({
                        "request_id": "fake", "lease_id": id, "lease_duration": duration,
                        "renewable": renewable,
                        "data": {"username": format!("user-{n}"), "password": format!("pass-{n}")},
                    }),
                )
            }
            Some(Secret::Certificate { ttl }) => {
                s.issued += 1;
                let n = s.issued;
                let now = unix_now();
                (
                    200,
                    json!({
                        "request_id": "fake", "lease_id": "", "lease_duration": 0, "renewable": false,
                        "data": {
                            "certificate": format!("CERT-{n}"), "private_key": format!("KEY-{n}"),
                            "issuing_ca": "CA", "serial_number": n.to_string(),
                            "not_before": now, "expiration": now + ttl,
                        },
                    }),
                )
            }
        },
    }
}
