//! Hostile tenants: a SecretProviderClass is written by a namespace admin the
//! node's other tenants do not trust, so whatever it names (an address, a
//! redirecting "Vault" of its own, a path under `auth/`, a file on the node)
//! must not turn the provider into that tenant's proxy or file reader.
//!
//! What a real Vault cannot be made to do (redirect elsewhere, answer HTML)
//! comes from a hostile test server of our own on loopback
//! ([`HostileVault`]), which counts every connection and request it gets, so
//! a test can assert that nothing reached it. Everything else runs against
//! the real OpenBao and the driver's real provider client.

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::{Request, Response};
use serde_json::{Value, json};
use support::deployment::Deployment;
use support::durable::{DurableOpenBao, free_port_pair};
use support::flavour::skip_part_without_namespaces;
use support::provider::{MountResult, Provider, Volume, driver_clients};

const OBJECTS: &str = "- objectName: k\n  secretPath: secret/data/app\n  secretKey: k\n";

/// What the hostile test server answers.
#[derive(Clone, Debug)]
enum Answer {
    /// `307` to this base URL with the request's path and query appended.
    RedirectTo(String),
    /// `307` to the same path on itself, forever.
    RedirectLoop,
    /// This status, content type and body.
    Body(u16, &'static str, String),
    /// A successful AppRole login (token `hostile-token`) for any path under
    /// `auth/`, and the inner answer for everything else.
    LoginThen(Box<Answer>),
    /// A reverse proxy to `upstream` for paths under `prefix` (stripped);
    /// anything else gets 404 (not hostile: a Vault behind a path prefix).
    StripPrefix { prefix: String, upstream: String },
}

/// A request the server got.
#[derive(Clone, Debug)]
struct Seen {
    method: String,
    /// The full path, as sent.
    path: String,
    /// The `X-Vault-Token` header, if any.
    token: Option<String>,
}

#[derive(Default)]
struct Counts {
    connections: AtomicUsize,
    seen: Mutex<Vec<Seen>>,
}

/// A tenant-run "Vault" on loopback (or, with [`Answer::StripPrefix`], a
/// reverse proxy of ours); stops when dropped.
struct HostileVault {
    addr: SocketAddr,
    counts: Arc<Counts>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl HostileVault {
    fn start(answer: Answer) -> HostileVault {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("addr");
        let counts = Arc::new(Counts::default());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let shared = counts.clone();
        // Its own thread and runtime: the tests block on the driver client.
        let thread = std::thread::spawn(move || {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .expect("runtime")
                .block_on(serve(listener, answer, shared, stopped));
        });
        HostileVault {
            addr,
            counts,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// TCP connections accepted so far.
    fn connections(&self) -> usize {
        self.counts.connections.load(Ordering::SeqCst)
    }

    fn seen(&self) -> Vec<Seen> {
        self.counts.seen.lock().unwrap().clone()
    }
}

impl Drop for HostileVault {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn serve(
    listener: std::net::TcpListener,
    answer: Answer,
    counts: Arc<Counts>,
    mut stopped: tokio::sync::oneshot::Receiver<()>,
) {
    let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
    let client = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let stream = tokio::select! {
            _ = &mut stopped => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(_) => continue,
            },
        };
        counts.connections.fetch_add(1, Ordering::SeqCst);
        let (answer, counts, client) = (answer.clone(), counts.clone(), client.clone());
        connections.spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                handle(request, answer.clone(), counts.clone(), client.clone())
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
    answer: Answer,
    counts: Arc<Counts>,
    client: reqwest::Client,
) -> Result<Response<Full<Bytes>>, std::convert::Infallible> {
    let path_and_query = request
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();
    counts.seen.lock().unwrap().push(Seen {
        method: request.method().to_string(),
        path: request.uri().path().to_owned(),
        token: request
            .headers()
            .get("x-vault-token")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
    });
    let mut answer = answer;
    if let Answer::LoginThen(then) = answer {
        if request.uri().path().starts_with("/v1/auth/") {
            let login = json!({
                "request_id": "hostile", "lease_id": "", "lease_duration": 0, "renewable": false,
                "data": null, "warnings": null, "wrap_info": null,
                "auth": {
                    "client_token": "hostile-token", "accessor": "a", "policies": ["default"],
                    "token_policies": ["default"], "metadata": null, "lease_duration": 600,
                    "renewable": false, "entity_id": "", "token_type": "service", "orphan": true,
                },
            });
            return Ok(respond(200, "application/json", login.to_string()));
        }
        answer = *then;
    }
    Ok(match answer {
        Answer::RedirectTo(base) => redirect(&format!("{base}{path_and_query}")),
        Answer::RedirectLoop => redirect(&path_and_query),
        Answer::Body(status, content_type, body) => respond(status, content_type, body),
        Answer::LoginThen(_) => unreachable!("handled above"),
        Answer::StripPrefix { prefix, upstream } => {
            match path_and_query.strip_prefix(prefix.as_str()) {
                Some(rest) if rest.starts_with('/') => {
                    let url = format!("{upstream}{rest}");
                    forward(request, &client, &url).await.unwrap_or_else(|err| {
                        respond(502, "text/plain", format!("prefix proxy: {err}"))
                    })
                }
                _ => respond(404, "application/json", r#"{"errors":[]}"#.into()),
            }
        }
    })
}

fn respond(status: u16, content_type: &str, body: String) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .body(Full::new(Bytes::from(body)))
        .expect("response")
}

fn redirect(location: &str) -> Response<Full<Bytes>> {
    Response::builder()
        .status(307)
        .header("location", location)
        .body(Full::new(Bytes::new()))
        .expect("response")
}

async fn forward(
    request: Request<hyper::body::Incoming>,
    client: &reqwest::Client,
    url: &str,
) -> Result<Response<Full<Bytes>>, Box<dyn std::error::Error + Send + Sync>> {
    let (parts, body) = request.into_parts();
    let mut outbound = client.request(
        reqwest::Method::from_bytes(parts.method.as_str().as_bytes())?,
        url,
    );
    for (name, value) in &parts.headers {
        if name != "host" && name != "content-length" {
            outbound = outbound.header(name.as_str(), value.as_bytes());
        }
    }
    let body = body.collect().await?.to_bytes();
    let response = outbound.body(body).send().await?;
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json")
        .to_owned();
    Ok(respond(status, &content_type, response.text().await?))
}

/// SPC parameters for a tenant whose AppRole is `r`/`s` (the hostile server
/// takes any).
fn hostile_attributes(vault_address: &str) -> Value {
    json!({
        "roleId": "r",
        "vaultAddress": vault_address,
        "objects": OBJECTS,
        "csi.storage.k8s.io/pod.name": "tenant-0",
        "csi.storage.k8s.io/pod.namespace": "tenant-a",
        "csi.storage.k8s.io/pod.uid": "5f1c-tenant",
    })
}

const HOSTILE_SECRETS: &str = r#"{"secretId":"s"}"#;

fn mount(provider: &Provider, attributes: &Value, secrets: &str) -> (MountResult, Volume) {
    let client = driver_clients().pop().unwrap();
    let volume = Volume::new();
    let result = client.mount(provider, attributes, secrets, volume.path());
    if !result.ok {
        assert!(volume.files().is_empty(), "files written by a failed Mount");
    }
    (result, volume)
}

#[tokio::test]
async fn a_vault_address_not_allowed_is_refused_before_any_connection() {
    let d = Deployment::new("tenant-reach").await;
    let hostile = HostileVault::start(Answer::LoginThen(Box::new(Answer::Body(
        200,
        "application/json",
        json!({"data": {"k": "from-hostile"}}).to_string(),
    ))));
    // By default only --vault-addr's origin may be named.
    let provider = Provider::start(&d.bao.addr, &[]);
    for address in [
        hostile.url(),
        format!("{}/some/prefix", hostile.url()),
        // Same host, another port; same port, another scheme.
        format!("http://localhost:{}", hostile.addr.port()),
        d.bao.addr.replace("http://", "https://"),
    ] {
        let (result, _) = mount(&provider, &hostile_attributes(&address), HOSTILE_SECRETS);
        result.expect_err("InvalidArgument", "vaultAddress");
        result.expect_err("InvalidArgument", "--allowed-vault-addr");
    }
    assert_eq!(hostile.connections(), 0, "the provider connected anyway");

    // --vault-addr's own origin may be spelled out (default port, trailing slash).
    let mut attributes = d.attributes(OBJECTS);
    attributes["vaultAddress"] = json!(format!("{}/", d.bao.addr));
    d.put("app", json!({"k": "own-vault"})).await;
    let (result, volume) = mount(&provider, &attributes, &d.secrets());
    result.expect_ok();
    assert_eq!(volume.read("k"), "own-vault");
    drop(provider);

    // Listed, the same address is used; `*` allows any.
    for allowed in [hostile.url(), "*".to_owned()] {
        let provider = Provider::start(&d.bao.addr, &["--allowed-vault-addr", &allowed]);
        let (result, volume) = mount(
            &provider,
            &hostile_attributes(&hostile.url()),
            HOSTILE_SECRETS,
        );
        result.expect_ok();
        assert_eq!(volume.read("k"), "from-hostile");
    }
    assert!(hostile.connections() > 0);
}

#[tokio::test]
async fn redirects_lead_only_to_allowed_origins() {
    // The second server stands for anything the tenant wants the provider to
    // reach with a token: another Vault, a metadata service, an internal API.
    let second = HostileVault::start(Answer::Body(
        200,
        "application/json",
        json!({"data": {"k": "read-through-redirect"}}).to_string(),
    ));
    let read_redirected = HostileVault::start(Answer::LoginThen(Box::new(Answer::RedirectTo(
        second.url(),
    ))));
    let all_redirected = HostileVault::start(Answer::RedirectTo(second.url()));
    let provider = Provider::start(
        &support::openbao::OpenBao::shared().addr,
        &[
            "--allowed-vault-addr",
            &read_redirected.url(),
            "--allowed-vault-addr",
            &all_redirected.url(),
        ],
    );

    // The read (with the tenant's token) and the login (with its secret ID)
    // are both stopped before anything is sent to the second server.
    for hostile in [&read_redirected, &all_redirected] {
        let (result, _) = mount(
            &provider,
            &hostile_attributes(&hostile.url()),
            HOSTILE_SECRETS,
        );
        assert!(!result.ok);
        assert!(
            result.message.contains("--allowed-vault-addr"),
            "{} {}",
            result.grpc_code,
            result.message
        );
        assert!(hostile.connections() > 0);
    }
    assert_eq!(second.connections(), 0, "{:?}", second.seen());
    // Not retried: one login and one read reached the first server.
    assert_eq!(
        read_redirected.seen().len(),
        2,
        "{:?}",
        read_redirected.seen()
    );
    drop(provider);

    // Redirects to an allowed origin are followed (a standby pointing at the
    // active node), token included: what the refusal above prevented.
    let provider = Provider::start(
        &support::openbao::OpenBao::shared().addr,
        &[
            "--allowed-vault-addr",
            &format!("{},{}", read_redirected.url(), second.url()),
        ],
    );
    let (result, volume) = mount(
        &provider,
        &hostile_attributes(&read_redirected.url()),
        HOSTILE_SECRETS,
    );
    result.expect_ok();
    assert_eq!(volume.read("k"), "read-through-redirect");
    let seen = second.seen();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].method, "GET");
    assert_eq!(seen[0].token.as_deref(), Some("hostile-token"));
    drop(provider);

    // At most two hops, even within one origin.
    let looping = HostileVault::start(Answer::LoginThen(Box::new(Answer::RedirectLoop)));
    let provider = Provider::start(
        &support::openbao::OpenBao::shared().addr,
        &["--allowed-vault-addr", &looping.url()],
    );
    let (result, _) = mount(
        &provider,
        &hostile_attributes(&looping.url()),
        HOSTILE_SECRETS,
    );
    assert!(!result.ok);
    assert!(result.message.contains("redirects"), "{}", result.message);
    let reads = looping
        .seen()
        .iter()
        .filter(|s| s.path.contains("secret"))
        .count();
    assert_eq!(reads, 3, "the request and two redirects");
}

#[tokio::test]
async fn non_vault_bodies_are_never_quoted() {
    const MARKER: &str = "internal-page-7f3a";
    let html = format!("<html><body>{MARKER}</body></html>");
    let not_vault_json = json!({"message": MARKER, "token": MARKER}).to_string();
    let cases = [
        // A read answered by something that is not Vault.
        Answer::LoginThen(Box::new(Answer::Body(403, "text/html", html.clone()))),
        Answer::LoginThen(Box::new(Answer::Body(
            404,
            "application/json",
            not_vault_json.clone(),
        ))),
        Answer::LoginThen(Box::new(Answer::Body(418, "text/plain", MARKER.to_owned()))),
        // So is the login.
        Answer::Body(400, "text/html", html.clone()),
        Answer::Body(403, "application/json", not_vault_json.clone()),
        Answer::Body(200, "text/html", html.clone()),
    ];
    let servers: Vec<HostileVault> = cases.into_iter().map(HostileVault::start).collect();
    let allowed: Vec<String> = servers.iter().map(HostileVault::url).collect();
    let provider = Provider::start(
        &support::openbao::OpenBao::shared().addr,
        &["--allowed-vault-addr", &allowed.join(",")],
    );
    for server in &servers {
        let (result, _) = mount(
            &provider,
            &hostile_attributes(&server.url()),
            HOSTILE_SECRETS,
        );
        assert!(!result.ok);
        assert!(
            !result.message.contains(MARKER),
            "quoted: {}",
            result.message
        );
        assert!(server.connections() > 0);
    }
    assert!(!provider.log().contains(MARKER), "logged the body");

    // Vault's own error text is still given, bounded.
    let vault = HostileVault::start(Answer::LoginThen(Box::new(Answer::Body(
        403,
        "application/json",
        json!({"errors": ["1 error occurred: permission denied"]}).to_string(),
    ))));
    let provider = Provider::start(
        &support::openbao::OpenBao::shared().addr,
        &["--allowed-vault-addr", &vault.url()],
    );
    let (result, _) = mount(
        &provider,
        &hostile_attributes(&vault.url()),
        HOSTILE_SECRETS,
    );
    result.expect_err("PermissionDenied", "permission denied");
}

#[tokio::test]
async fn objects_under_auth_are_refused() {
    let d = Deployment::new("tenant-auth").await;
    let provider = Provider::start(&d.bao.addr, &[]);
    let logins_before = d.token_count().await;
    let in_namespace = format!("{}/auth/token/create", d.ns);
    for (path, method) in [
        ("auth/token/create", "POST"),
        ("/v1/auth/token/create", "PUT"),
        ("auth/cert/login", "PUT"),
        ("AUTH/token/lookup-self", "GET"),
        (in_namespace.as_str(), "POST"),
    ] {
        if path == in_namespace && skip_part_without_namespaces("a path naming its namespace") {
            continue;
        }
        let objects = format!("- objectName: t\n  secretPath: {path}\n  method: {method}\n");
        let (result, _) = mount(&provider, &d.attributes(&objects), &d.secrets());
        result.expect_err("InvalidArgument", "under auth/");
    }
    // Refused while parsing: not even a login happened.
    assert_eq!(d.token_count().await, logins_before);
}

/// A CA and a server certificate for 127.0.0.1 in `dir`, and another CA.
fn certificates(dir: &Path) {
    let out = Command::new("sh")
        .arg("-ec")
        .arg(
            r#"
        openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
            -keyout ca.key -out ca.pem -days 1 -subj "/CN=ca" 2>/dev/null
        openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
            -keyout server.key -out server.csr -subj "/CN=server" 2>/dev/null
        printf 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' > server.ext
        openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial \
            -out server.pem -days 1 -extfile server.ext 2>/dev/null
        chmod 0644 *.key
    "#,
        )
        .current_dir(dir)
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn spc_tls_files_only_from_the_spc_tls_dir() {
    let root = tempfile::Builder::new()
        .prefix("vsp-spc-tls.")
        .tempdir()
        .unwrap();
    // The node's files: the server's certificates, and (outside the
    // directory the operator opened) a copy of the CA a tenant would like us
    // to read as root.
    let node = root.path().join("node");
    let spc_tls = root.path().join("spc-tls");
    std::fs::create_dir_all(&node).unwrap();
    std::fs::create_dir_all(spc_tls.join("cas")).unwrap();
    certificates(&node);
    std::fs::copy(node.join("ca.pem"), spc_tls.join("ca.pem")).unwrap();
    std::fs::copy(node.join("ca.pem"), spc_tls.join("cas/ca.pem")).unwrap();
    std::os::unix::fs::symlink(node.join("ca.pem"), spc_tls.join("link.pem")).unwrap();
    std::os::unix::fs::symlink(&node, spc_tls.join("node-dir")).unwrap();

    let port = free_port_pair();
    let bao = DurableOpenBao::start_with(&format!(
        r#"
listener "tcp" {{
  address = "127.0.0.1:{port}"
  cluster_address = "127.0.0.1:{cluster}"
  tls_cert_file = "{d}/server.pem"
  tls_key_file = "{d}/server.key"
}}
"#,
        cluster = port + 1,
        d = node.display(),
    ))
    .await;
    bao.enable_secrets("", "secret", "kv", Some(json!({"version": "2"})))
        .await;
    bao.enable_auth("", "approle", "approle").await;
    bao.write_policy(
        "",
        "r",
        r#"path "secret/data/*" { capabilities = ["read"] }"#,
    )
    .await;
    let (role_id, secret_id) = bao.approle("", "approle", "app", &["r"], json!({})).await;
    bao.kv2_put("", "secret", "app", json!({"k": "over-tls"}))
        .await;
    let tls_addr = format!("https://127.0.0.1:{port}");
    let attributes = |extra: Value| {
        let mut a = json!({
            "roleId": role_id,
            "objects": OBJECTS,
            "csi.storage.k8s.io/pod.name": "tls-0",
            "csi.storage.k8s.io/pod.namespace": "tenant-a",
            "csi.storage.k8s.io/pod.uid": "7d3e-spc-tls",
        });
        for (k, v) in extra.as_object().unwrap() {
            a[k] = v.clone();
        }
        a
    };
    let secrets = json!({"secretId": secret_id}).to_string();
    let path = |p: &Path| p.display().to_string();

    // Without --spc-tls-dir every SPC file parameter is refused, before any
    // connection, naming the parameter and the flag.
    let provider = Provider::start(&tls_addr, &[]);
    for parameter in ["vaultCACertPath", "vaultCADirectory"] {
        let (result, _) = mount(
            &provider,
            &attributes(json!({ parameter: path(&spc_tls) })),
            &secrets,
        );
        result.expect_err("InvalidArgument", parameter);
        result.expect_err("InvalidArgument", "--spc-tls-dir");
    }
    let (result, _) = mount(
        &provider,
        &attributes(json!({
            "vaultTLSClientCertPath": path(&spc_tls.join("ca.pem")),
            "vaultTLSClientKeyPath": path(&spc_tls.join("ca.pem")),
        })),
        &secrets,
    );
    result.expect_err("InvalidArgument", "--spc-tls-dir");
    drop(provider);

    let dir_flag = path(&spc_tls);
    let provider = Provider::start(&tls_addr, &["--spc-tls-dir", &dir_flag]);
    // Inside the directory: honoured (a file, a relative name, a directory).
    for extra in [
        json!({"vaultCACertPath": path(&spc_tls.join("ca.pem"))}),
        json!({"vaultCACertPath": "ca.pem"}),
        json!({"vaultCADirectory": path(&spc_tls.join("cas"))}),
    ] {
        let (result, volume) = mount(&provider, &attributes(extra.clone()), &secrets);
        result.expect_ok();
        assert_eq!(volume.read("k"), "over-tls", "{extra}");
    }
    // Outside it, directly, through `..` or through a symlink inside it:
    // refused, and in the same words whether the file exists or not.
    let refusal = |raw: String, parameter: &str| {
        let (result, _) = mount(&provider, &attributes(json!({ parameter: raw })), &secrets);
        result.expect_err("InvalidArgument", parameter);
        result.expect_err("InvalidArgument", "--spc-tls-dir");
        result.message.replace(&raw, "PATH")
    };
    let words = refusal(path(&node.join("ca.pem")), "vaultCACertPath");
    for raw in [
        path(&node.join("no-such.pem")),
        path(&spc_tls.join("../node/ca.pem")),
        path(&spc_tls.join("link.pem")),
        "link.pem".to_owned(),
        path(&spc_tls.join("node-dir/ca.pem")),
        "/etc/passwd".to_owned(),
    ] {
        assert_eq!(refusal(raw.clone(), "vaultCACertPath"), words, "{raw}");
    }
    refusal(path(&spc_tls.join("node-dir")), "vaultCADirectory");
    refusal(path(&node.join("server.key")), "vaultTLSClientKeyPath");
    // The provider's own flags are not confined.
    drop(provider);
    let ca_flag = path(&node.join("ca.pem"));
    let provider = Provider::start(
        &tls_addr,
        &["--spc-tls-dir", &dir_flag, "--vault-tls-ca-cert", &ca_flag],
    );
    let (result, volume) = mount(&provider, &attributes(json!({})), &secrets);
    result.expect_ok();
    assert_eq!(volume.read("k"), "over-tls");
}

#[tokio::test]
async fn a_vault_behind_a_path_prefix_gets_one_rule_for_every_call() {
    let d = Deployment::new("tenant-prefix").await;
    d.put("app", json!({"k": "behind-prefix"})).await;
    // A reverse proxy serving OpenBao under /vault only.
    let proxy = HostileVault::start(Answer::StripPrefix {
        prefix: "/vault".into(),
        upstream: d.bao.addr.trim_end_matches('/').to_owned(),
    });
    let address = format!("{}/vault", proxy.url());
    let provider = Provider::start(&address, &["--readyz-vault"]);
    // Logins (vaultrs), reads (ours) and sys/health all use <prefix>/v1/<path>.
    let (result, volume) = mount(&provider, &d.attributes(OBJECTS), &d.secrets());
    result.expect_ok();
    assert_eq!(volume.read("k"), "behind-prefix");
    let (status, _, body) = provider.get("/readyz").await;
    assert_eq!(status, 200, "{body}");
    let seen = proxy.seen();
    let paths: Vec<&str> = seen.iter().map(|s| s.path.as_str()).collect();
    // (On HashiCorp Vault both lie under the deployment's path prefix: support::flavour.)
    assert!(
        paths
            .iter()
            .any(|p| p.starts_with("/vault/v1/auth/") && p.ends_with("/approle/login")),
        "{paths:?}"
    );
    assert!(
        paths
            .iter()
            .any(|p| p.starts_with("/vault/v1/") && p.ends_with("/secret/data/app")),
        "{paths:?}"
    );
    assert!(paths.contains(&"/vault/v1/sys/health"), "{paths:?}");
    assert!(
        paths.iter().all(|p| p.starts_with("/vault/v1/")),
        "{paths:?}"
    );

    // The same address named by a SecretProviderClass.
    let mut attributes = d.attributes(OBJECTS);
    attributes["vaultAddress"] = json!(address);
    attributes["csi.storage.k8s.io/pod.uid"] = json!("another-pod");
    let provider = Provider::start(&d.bao.addr, &["--allowed-vault-addr", &proxy.url()]);
    let (result, volume) = mount(&provider, &attributes, &d.secrets());
    result.expect_ok();
    assert_eq!(volume.read("k"), "behind-prefix");
}
