//! Which server the Vault-facing suites run against: OpenBao (the default) or HashiCorp
//! Vault OSS (`VSP_TEST_SERVER=vault`, as `scripts/with-vault.sh` sets it; `make test` runs
//! those suites once against each).
//!
//! Vault OSS has no namespaces: `sys/namespaces/*` answers 404 and an `X-Vault-Namespace`
//! header is silently ignored. So that the suites still isolate themselves on the one
//! shared server, a namespace `N` becomes a path prefix on Vault, the way Vault Enterprise
//! itself addresses a namespaced path from the root namespace: the KV mount `secret` of `N`
//! is mounted at `N/secret`, its AppRole at `auth/N/approle`, its policy `app-read` is named
//! `N/app-read` and grants `N/secret/data/...`. The admin helpers translate their calls
//! ([`root_request`]) and the driver client translates each Mount's attributes
//! ([`prefix_attributes`]), so a test reads the same on both servers. What depends on
//! namespaces themselves (several namespaces in one Mount, a missing namespace, a path that
//! names its namespace) cannot run on Vault OSS: such a test starts with
//! `if skip_without_namespaces() { return; }` and says on the terminal that it was skipped.
#![allow(dead_code)]

use std::io::Write as _;
use std::path::PathBuf;

use serde_json::Value;

/// The server under test.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Server {
    OpenBao,
    Vault,
}

impl Server {
    /// The server this run is against, from `VSP_TEST_SERVER` (`openbao`, the default, or `vault`).
    pub fn current() -> Server {
        match std::env::var("VSP_TEST_SERVER").as_deref() {
            Ok("vault") => Server::Vault,
            Ok("openbao") | Ok("") | Err(_) => Server::OpenBao,
            Ok(other) => panic!("VSP_TEST_SERVER={other:?}: expected `openbao` or `vault`"),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Server::OpenBao => "OpenBao",
            Server::Vault => "HashiCorp Vault",
        }
    }

    /// Whether the server has namespaces (Vault's are Enterprise-only).
    pub fn has_namespaces(self) -> bool {
        self == Server::OpenBao
    }

    /// The server binary, for the tests that start servers of their own
    /// (`VSP_TEST_BAO_BIN` or `VSP_TEST_VAULT_BIN`, exported by the `with-*` scripts).
    pub fn bin(self) -> PathBuf {
        let var = match self {
            Server::OpenBao => "VSP_TEST_BAO_BIN",
            Server::Vault => "VSP_TEST_VAULT_BIN",
        };
        match std::env::var(var) {
            Ok(v) if !v.is_empty() => PathBuf::from(v),
            _ => panic!(
                "{var} is not set: run the tests via `make test` (or scripts/with-openbao.sh / \
                 scripts/with-vault.sh cargo test ...)"
            ),
        }
    }

    /// The environment variable a dev server takes its root token from (not argv: `ps`).
    pub fn dev_token_env(self) -> &'static str {
        match self {
            Server::OpenBao => "BAO_DEV_ROOT_TOKEN_ID",
            Server::Vault => "VAULT_DEV_ROOT_TOKEN_ID",
        }
    }
}

/// On a server without namespaces, prints that the running test is skipped and why, and
/// returns true (the test then returns). Written past the test harness's capture, so the
/// skip shows in `cargo test`'s output instead of passing silently.
pub fn skip_without_namespaces() -> bool {
    skipped(None)
}

/// Like [`skip_without_namespaces`], for one part of a test (`what`), the rest of which
/// runs on every server.
pub fn skip_part_without_namespaces(what: &str) -> bool {
    skipped(Some(what))
}

fn skipped(part: Option<&str>) -> bool {
    let server = Server::current();
    if server.has_namespaces() {
        return false;
    }
    let thread = std::thread::current();
    let test = thread.name().unwrap_or("this test");
    let part = part.map(|p| format!(" ({p})")).unwrap_or_default();
    let _ = writeln!(
        std::io::stderr(),
        "{test}{part}: skipped on {}: namespaces are Enterprise-only",
        server.name()
    );
    true
}

/// An admin call in namespace `namespace` as the server takes it: unchanged on OpenBao
/// (the caller sends `X-Vault-Namespace`); on Vault, the path and body of the same call in
/// the root namespace, with `namespace` as a path prefix (see the module comment).
/// The token store stays shared (`auth/token/*` is not prefixed); a lease ID in the body
/// gets the prefix as its mount did.
pub fn root_request(namespace: &str, path: &str, body: Option<Value>) -> (String, Option<Value>) {
    let ns = namespace.trim_matches('/');
    if ns.is_empty() || Server::current().has_namespaces() {
        return (path.to_owned(), body);
    }
    let path = path.trim_start_matches('/');
    let prefixed = if let Some(rest) = ["sys/mounts/", "sys/auth/", "sys/leases/lookup/"]
        .iter()
        .find_map(|sys| {
            path.strip_prefix(sys)
                .map(|rest| format!("{sys}{ns}/{rest}"))
        }) {
        rest
    } else if let Some(name) = path.strip_prefix("sys/policies/acl/") {
        format!("sys/policies/acl/{ns}/{name}")
    } else {
        in_root(ns, path)
    };
    let body = body.map(|mut body| {
        if let Some(hcl) = body.get("policy").and_then(Value::as_str) {
            body["policy"] = Value::String(policy_in_root(ns, hcl));
        }
        if let Some(lease) = body.get("lease_id").and_then(Value::as_str) {
            body["lease_id"] = Value::String(format!("{ns}/{lease}"));
        }
        for key in ["token_policies", "policies"] {
            if let Some(names) = body.get(key).and_then(Value::as_array) {
                let names = names
                    .iter()
                    .map(|n| match n.as_str() {
                        Some("default") | Some("root") | None => n.clone(),
                        Some(name) => Value::String(format!("{ns}/{name}")),
                    })
                    .collect();
                body[key] = Value::Array(names);
            }
        }
        body
    });
    (prefixed, body)
}

/// An ACL policy of namespace `ns` with each `path "..."` it grants moved by [`in_root`].
fn policy_in_root(ns: &str, hcl: &str) -> String {
    let mut out = String::with_capacity(hcl.len());
    let mut rest = hcl;
    while let Some(at) = rest.find("path \"") {
        let (head, tail) = rest.split_at(at + "path \"".len());
        let end = tail.find('"').unwrap_or(tail.len());
        out.push_str(head);
        out.push_str(&in_root(ns, &tail[..end]));
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

/// Where path `path` of namespace `ns` lives in the root namespace: an auth method's
/// `auth/<mount>/...` at `auth/ns/<mount>/...` (the token store, `auth/token/`, is shared),
/// `sys/...` where it is, anything else (a secrets engine) at `ns/path`. `auth` is matched
/// as the provider matches it, in any case.
fn in_root(ns: &str, path: &str) -> String {
    let first = path.split('/').next().unwrap_or_default();
    if first.eq_ignore_ascii_case("auth") {
        let rest = path[first.len()..].trim_start_matches('/');
        if rest.starts_with("token/") {
            path.to_owned()
        } else {
            format!("{first}/{ns}/{rest}")
        }
    } else if first == "sys" {
        path.to_owned()
    } else {
        format!("{ns}/{path}")
    }
}

/// A Mount's attributes as the server takes them: unchanged on OpenBao; on Vault a
/// `vaultNamespace` becomes the prefix of each object's `secretPath` and of the auth
/// mount (`vaultAuthMountPath`, default: the method's name), as [`root_request`] set them up.
/// Also for a SecretProviderClass's `parameters`, which the real driver passes on as they are.
/// Attributes naming namespaces per object or for the login are left alone: such a test
/// is skipped on Vault, or feeds the parser bad input, which no prefix makes good.
pub fn prefix_attributes(attributes: &Value) -> Value {
    if Server::current().has_namespaces() {
        return attributes.clone();
    }
    let Some(ns) = attributes["vaultNamespace"].as_str() else {
        return attributes.clone();
    };
    let ns = ns.trim_matches('/');
    let objects = attributes["objects"].as_str().unwrap_or_default();
    if ns.is_empty()
        || attributes.get("vaultAuthNamespace").is_some()
        || objects.contains("vaultNamespace")
    {
        return attributes.clone();
    }
    let mut attributes = attributes.clone();
    let map = attributes.as_object_mut().expect("attributes: an object");
    map.remove("vaultNamespace");
    // The provider's default method: Kubernetes for a `roleName`, else AppRole.
    let default_method = if map.contains_key("roleName") {
        "kubernetes"
    } else {
        "approle"
    };
    let method = map
        .get("vaultAuthMethod")
        .and_then(Value::as_str)
        .unwrap_or(default_method)
        .to_ascii_lowercase();
    let mount = map
        .get("vaultAuthMountPath")
        .and_then(Value::as_str)
        .map_or(method, |m| m.trim_start_matches("auth/").to_owned());
    map.insert(
        "vaultAuthMountPath".into(),
        Value::String(format!("{ns}/{mount}")),
    );
    map.insert("objects".into(), Value::String(prefix_paths(ns, objects)));
    attributes
}

/// Each plain `secretPath: <path>` line of `objects` with the path moved where
/// [`in_root`] puts it (after a leading `/v1/` or `/`); quoted values are left as written.
fn prefix_paths(ns: &str, objects: &str) -> String {
    let mut out = String::with_capacity(objects.len());
    for line in objects.split_inclusive('\n') {
        let Some(at) = line.find("secretPath: ") else {
            out.push_str(line);
            continue;
        };
        let (head, value) = line.split_at(at + "secretPath: ".len());
        let lead = ["/v1/", "/"]
            .into_iter()
            .find(|l| value.starts_with(l))
            .unwrap_or("");
        let rest = &value[lead.len()..];
        if rest.starts_with(|c: char| c.is_ascii_alphanumeric()) {
            out.push_str(&format!("{head}{lead}{}", in_root(ns, rest)));
        } else {
            out.push_str(line);
        }
    }
    out
}

#[test]
fn policies_grant_the_prefixed_paths() {
    assert_eq!(
        policy_in_root(
            "admin/t-x",
            "path \"secret/data/app*\" { capabilities = [\"read\"] }\n\
             path \"auth/token/lookup-self\" { capabilities = [\"read\"] }"
        ),
        "path \"admin/t-x/secret/data/app*\" { capabilities = [\"read\"] }\n\
         path \"auth/token/lookup-self\" { capabilities = [\"read\"] }"
    );
}

#[test]
fn paths_get_the_namespace_as_a_prefix() {
    let objects = "- objectName: a\n  secretPath: secret/data/app\n\
                   - objectName: b\n  secretPath: /v1/secret/data/app?version=1\n\
                   - objectName: c\n  secretPath: \"?version=1\"\n\
                   - objectName: d\n  secretPath: auth/cert/login\n\
                   - objectName: e\n  secretPath: AUTH/token/lookup-self\n";
    assert_eq!(
        prefix_paths("admin/t-x", objects),
        "- objectName: a\n  secretPath: admin/t-x/secret/data/app\n\
         - objectName: b\n  secretPath: /v1/admin/t-x/secret/data/app?version=1\n\
         - objectName: c\n  secretPath: \"?version=1\"\n\
         - objectName: d\n  secretPath: auth/admin/t-x/cert/login\n\
         - objectName: e\n  secretPath: AUTH/token/lookup-self\n"
    );
}
