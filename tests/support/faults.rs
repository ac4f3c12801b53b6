//! A small HTTP fault proxy between the provider and a real OpenBao.
//!
//! The dev server cannot be asked to be slow, to reset connections or to answer
//! 429/5xx, so tests put this proxy in front of it (`--vault-addr` = the proxy)
//! and inject faults into the next N matching requests: a canned status, a
//! connection reset (RST, via SO_LINGER 0), or a delay before forwarding.
//! Every request is recorded, so a test can count what reached "Vault" and see
//! the gaps between retries.
//!
//! The proxy runs on its own thread and runtime: the tests block their own
//! thread on the driver client while the proxy must keep serving.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::{Request, Response};

/// One kind of fault.
#[derive(Clone, Debug)]
pub enum Fault {
    /// Answer with this status and `{"errors":[message]}` instead of forwarding.
    Status(u16, &'static str),
    /// Reset the connection (RST) instead of answering.
    Reset,
    /// Wait this long, then forward.
    Delay(Duration),
}

/// A request the proxy saw.
#[derive(Clone, Debug)]
pub struct Seen {
    /// When it arrived.
    pub at: Instant,
    /// HTTP method.
    pub method: String,
    /// Path without `/v1/`, e.g. `secret/data/app` or `auth/approle/login`.
    pub path: String,
    /// The fault it got, if any.
    pub fault: Option<Fault>,
}

struct Rule {
    /// Only requests whose path contains this (None: every request).
    path: Option<String>,
    fault: Fault,
    remaining: usize,
}

#[derive(Default)]
struct State {
    rules: Vec<Rule>,
    seen: Vec<Seen>,
}

/// The running proxy; stops when dropped.
pub struct FaultProxy {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FaultProxy {
    /// A proxy on a free loopback port forwarding to `upstream`
    /// (`http://127.0.0.1:port`).
    pub fn start(upstream: &str) -> FaultProxy {
        let upstream = upstream.trim_end_matches('/').to_owned();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("proxy addr");
        let state = Arc::new(Mutex::new(State::default()));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let shared = state.clone();
        let thread = std::thread::spawn(move || {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("proxy runtime")
                .block_on(run(listener, upstream, shared, stopped));
        });
        FaultProxy {
            addr,
            state,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// The address to give the provider as `--vault-addr`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The next `count` requests get `fault`.
    pub fn inject(&self, fault: Fault, count: usize) {
        self.add(None, fault, count);
    }

    /// The next `count` requests whose path contains `path` get `fault`.
    pub fn inject_on(&self, path: &str, fault: Fault, count: usize) {
        self.add(Some(path.to_owned()), fault, count);
    }

    fn add(&self, path: Option<String>, fault: Fault, remaining: usize) {
        self.state.lock().unwrap().rules.push(Rule {
            path,
            fault,
            remaining,
        });
    }

    /// Removes every pending fault.
    pub fn clear(&self) {
        self.state.lock().unwrap().rules.clear();
    }

    /// Every request seen so far, in arrival order.
    pub fn seen(&self) -> Vec<Seen> {
        self.state.lock().unwrap().seen.clone()
    }

    /// Requests seen whose path contains `path`.
    pub fn count(&self, path: &str) -> usize {
        self.seen().iter().filter(|s| s.path.contains(path)).count()
    }

    /// Requests that got a fault.
    pub fn injected(&self) -> usize {
        self.seen().iter().filter(|s| s.fault.is_some()).count()
    }

    /// Forgets the requests seen so far.
    pub fn reset_seen(&self) {
        self.state.lock().unwrap().seen.clear();
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn run(
    listener: std::net::TcpListener,
    upstream: String,
    state: Arc<Mutex<State>>,
    mut stopped: tokio::sync::oneshot::Receiver<()>,
) {
    let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
    let client = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(16)
        .timeout(Duration::from_secs(60))
        .build()
        .expect("proxy client");
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let stream = tokio::select! {
            _ = &mut stopped => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(_) => continue,
            },
        };
        // Every close is abortive: a connection dropped on a Reset fault is an RST.
        let _ = stream.set_zero_linger();
        let client = client.clone();
        let upstream = upstream.clone();
        let state = state.clone();
        connections.spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                handle(request, client.clone(), upstream.clone(), state.clone())
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                .await;
        });
    }
    connections.abort_all();
}

async fn handle(
    request: Request<hyper::body::Incoming>,
    client: reqwest::Client,
    upstream: String,
    state: Arc<Mutex<State>>,
) -> Result<Response<Full<Bytes>>, std::io::Error> {
    let path = request.uri().path().trim_start_matches("/v1/").to_owned();
    let method = request.method().to_string();
    let fault = {
        let mut state = state.lock().unwrap();
        let fault = state
            .rules
            .iter_mut()
            .find(|r| r.remaining > 0 && r.path.as_ref().is_none_or(|p| path.contains(p)))
            .map(|rule| {
                rule.remaining -= 1;
                rule.fault.clone()
            });
        state.seen.push(Seen {
            at: Instant::now(),
            method: method.clone(),
            path: path.clone(),
            fault: fault.clone(),
        });
        fault
    };
    match fault {
        Some(Fault::Status(code, message)) => {
            let body = serde_json::json!({ "errors": [message] }).to_string();
            return Ok(Response::builder()
                .status(code)
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from(body)))
                .expect("response"));
        }
        Some(Fault::Reset) => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::ConnectionReset,
                "injected reset",
            ));
        }
        Some(Fault::Delay(delay)) => tokio::time::sleep(delay).await,
        None => {}
    }
    Ok(forward(request, &client, &upstream)
        .await
        .unwrap_or_else(|err| {
            Response::builder()
                .status(502)
                .body(Full::new(Bytes::from(format!("proxy: {err}"))))
                .expect("response")
        }))
}

async fn forward(
    request: Request<hyper::body::Incoming>,
    client: &reqwest::Client,
    upstream: &str,
) -> Result<Response<Full<Bytes>>, Box<dyn std::error::Error + Send + Sync>> {
    let (parts, body) = request.into_parts();
    let url = format!(
        "{upstream}{}",
        parts.uri.path_and_query().map_or("/", |p| p.as_str())
    );
    let method = reqwest::Method::from_bytes(parts.method.as_str().as_bytes())?;
    let mut outbound = client.request(method, url);
    for (name, value) in &parts.headers {
        if !matches!(
            name.as_str(),
            "host" | "content-length" | "connection" | "transfer-encoding"
        ) {
            outbound = outbound.header(name.as_str(), value.as_bytes());
        }
    }
    let body = body.collect().await?.to_bytes();
    let answer = outbound.body(body).send().await?;
    let mut response = Response::builder().status(answer.status().as_u16());
    if let Some(kind) = answer.headers().get("content-type") {
        response = response.header("content-type", kind.as_bytes());
    }
    Ok(response.body(Full::new(answer.bytes().await?))?)
}
