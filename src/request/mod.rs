//! Parses the driver's `MountRequest` once, at the edge, into a typed
//! [`MountPlan`]. Nothing after this module looks at the raw `attributes`,
//! `secrets` or `permission` strings, and nothing here ever logs them.

pub mod objects;
pub mod path;

use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;

use secrecy::SecretString;
use url::Url;

use crate::proto::MountRequest;
pub use objects::{Encoding, Method, ObjectSpec, Selection, Source, TemplateSpec};
pub use path::FilePath;

/// Default file mode when the driver sends no `permission` (it always sends
/// `"420"`, i.e. 0644).
const DEFAULT_MODE: u32 = 0o644;

/// Keys the driver adds to `attributes` for the pod being mounted.
const POD_NAME: &str = "csi.storage.k8s.io/pod.name";
const POD_NAMESPACE: &str = "csi.storage.k8s.io/pod.namespace";
const POD_UID: &str = "csi.storage.k8s.io/pod.uid";
const SERVICE_ACCOUNT: &str = "csi.storage.k8s.io/serviceAccount.name";

/// A request the provider refuses; always the caller's fault
/// (`InvalidArgument`). The message names the parameter, never its value when
/// that value may be secret.
#[derive(Debug, thiserror::Error)]
#[error("{parameter}: {message}")]
pub struct RequestError {
    /// The parameter or field at fault, e.g. `objects` or `object "db"`.
    pub parameter: String,
    /// What is wrong and, where useful, what is expected.
    pub message: String,
}

impl RequestError {
    /// A refusal naming `parameter`. Both parts are cut to a few hundred
    /// bytes: they may quote what the caller sent, which can be huge, and
    /// they end up in the pod's events and in our log.
    pub fn invalid(parameter: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            parameter: shorten(parameter.into(), MAX_PARAMETER_NAME),
            message: shorten(message.into(), MAX_ERROR_MESSAGE),
        }
    }
}

/// Longest parameter name quoted in an error, in bytes.
const MAX_PARAMETER_NAME: usize = 128;
/// Longest error message, in bytes.
const MAX_ERROR_MESSAGE: usize = 1024;

/// `text` cut at a character boundary to at most `max` bytes, marked with `…`.
fn shorten(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push('…');
    }
    text
}

/// `raw` quoted for an error message, cut to its first 64 bytes.
pub(crate) fn quote(raw: &str) -> String {
    format!("{:?}", shorten(raw.to_owned(), 64))
}

/// Longest `objects` value (and service-account token set) accepted, in
/// bytes. A whole SecretProviderClass is at most about 1.5 MiB in etcd.
const MAX_LARGE_PARAMETER: usize = 1 << 20;
/// Longest value of any other parameter, and of the secret keys we read.
const MAX_PARAMETER: usize = 64 << 10;

/// A Vault namespace path such as `admin/deployments/prod-34`, normalised
/// without leading or trailing slashes. The root namespace is `None`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Namespace(String);

impl Namespace {
    /// Normalises `raw`; an empty or `/` value means the root namespace.
    pub fn parse(raw: &str) -> Result<Option<Self>, String> {
        let trimmed = raw.trim().trim_matches('/');
        if trimmed.is_empty() {
            return Ok(None);
        }
        if trimmed
            .split('/')
            .any(|part| part.is_empty() || part == "." || part == "..")
        {
            return Err(format!("{raw:?} is not a valid namespace path"));
        }
        if trimmed.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err(format!(
                "{raw:?} must not contain spaces or control characters"
            ));
        }
        Ok(Some(Self(trimmed.to_owned())))
    }

    /// The path sent as `X-Vault-Namespace`.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Namespace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Provider-wide settings a SecretProviderClass may override.
#[derive(Clone, Debug)]
pub struct Defaults {
    /// `--vault-addr`.
    pub vault_address: Url,
    /// `--vault-namespace`.
    pub vault_namespace: Option<Namespace>,
    /// TLS flags (`--vault-tls-*`).
    pub tls: TlsSettings,
}

/// How to reach Vault over TLS. Paths are inside the provider's container.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct TlsSettings {
    /// PEM bundle of CAs to trust (`vaultCACertPath`).
    pub ca_cert: Option<PathBuf>,
    /// Directory of PEM CAs (`vaultCADirectory`).
    pub ca_directory: Option<PathBuf>,
    /// Name to verify the server certificate against (`vaultTLSServerName`).
    pub server_name: Option<String>,
    /// Client certificate for mTLS (`vaultTLSClientCertPath`).
    pub client_cert: Option<PathBuf>,
    /// Client key for mTLS (`vaultTLSClientKeyPath`).
    pub client_key: Option<PathBuf>,
    /// Skip verification (`vaultSkipTLSVerify`); never the default.
    pub skip_verify: bool,
}

/// The Vault server a Mount talks to.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct VaultTarget {
    /// Base address, e.g. `https://vault.vault:8200`.
    pub address: Url,
    /// TLS settings for it.
    pub tls: TlsSettings,
}

/// The pod the volume belongs to, from the driver's `csi.storage.k8s.io/*`
/// keys. The v1.5 rotation reconciler sends only some of them, so all are
/// optional; they are used for logs and pod-bound identities.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodInfo {
    /// Pod name.
    pub name: Option<String>,
    /// Pod namespace.
    pub namespace: Option<String>,
    /// Pod UID.
    pub uid: Option<String>,
    /// Service account name.
    pub service_account: Option<String>,
}

/// How the provider logs in for this Mount.
#[derive(Clone, Debug)]
pub enum AuthPlan {
    /// AppRole: role ID (non-secret configuration) and secret ID (from the
    /// `nodePublishSecretRef` Secret).
    AppRole {
        /// Auth mount, default `approle`.
        mount: String,
        /// Namespace the login happens in.
        namespace: Option<Namespace>,
        /// The role ID.
        role_id: String,
        /// The secret ID; never logged.
        secret_id: SecretString,
    },
    /// Kubernetes or JWT login with the pod's service-account token.
    ServiceAccount {
        /// `kubernetes` or `jwt`, for messages.
        method: AuthMethod,
        /// Auth mount, default `kubernetes` / `jwt`.
        mount: String,
        /// Namespace the login happens in.
        namespace: Option<Namespace>,
        /// `roleName`.
        role: String,
        /// The token for the chosen audience; never logged.
        jwt: SecretString,
        /// The audience the token was picked for.
        audience: String,
    },
}

/// `vaultAuthMethod`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthMethod {
    /// AppRole.
    AppRole,
    /// Kubernetes auth (TokenReview).
    Kubernetes,
    /// JWT auth (signature check).
    Jwt,
}

impl fmt::Display for AuthMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::AppRole => "approle",
            Self::Kubernetes => "kubernetes",
            Self::Jwt => "jwt",
        })
    }
}

/// Everything one Mount needs, validated.
#[derive(Clone, Debug)]
pub struct MountPlan {
    /// The pod, for logs.
    pub pod: PodInfo,
    /// `secretProviderClass` if the driver sent it (v1.5 rotation does not).
    pub spc_name: Option<String>,
    /// The Vault server.
    pub vault: VaultTarget,
    /// How to log in.
    pub auth: AuthPlan,
    /// What to fetch and write, in `objects` order.
    pub objects: Vec<ObjectSpec>,
    /// Objects composed from the others by templates.
    pub templates: Vec<TemplateSpec>,
    /// File mode for objects without `filePermission`.
    pub default_mode: u32,
    /// The pod's volume directory.
    pub target_path: PathBuf,
    /// `fileOwnerUid` / `fileOwnerGid`: owner of the files (direct mode only).
    pub owner: FileOwner,
    /// `syncSecretName`: also apply the files as this Secret (provider-side sync).
    pub sync_secret: Option<SyncSecret>,
}

/// The Secret provider-side sync writes (`syncSecretName`), in the pod's
/// namespace and owned by the pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyncSecret {
    /// The Secret's name.
    pub name: String,
    /// The pod's namespace (and the Secret's).
    pub namespace: String,
    /// The owner pod's name.
    pub pod_name: String,
    /// The owner pod's UID.
    pub pod_uid: String,
}

/// Who owns the written files and directories (`fileOwnerUid`,
/// `fileOwnerGid`). Only the provider's direct mode can honour it; unset
/// means the provider's own user (root).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FileOwner {
    /// Numeric user ID.
    pub uid: Option<u32>,
    /// Numeric group ID.
    pub gid: Option<u32>,
}

/// Parses a `MountRequest` into a plan, or says exactly which parameter is wrong.
pub fn parse(request: &MountRequest, defaults: &Defaults) -> Result<MountPlan, RequestError> {
    let attributes: HashMap<String, String> = parse_string_map(&request.attributes)
        .map_err(|why| RequestError::invalid("attributes", why))?;
    let secrets: HashMap<String, String> =
        parse_string_map(&request.secrets).map_err(|why| RequestError::invalid("secrets", why))?;
    check_sizes(&attributes, &secrets)?;
    let params = Params(&attributes);

    let pod = PodInfo {
        name: params.get(POD_NAME),
        namespace: params.get(POD_NAMESPACE),
        uid: params.get(POD_UID),
        service_account: params.get(SERVICE_ACCOUNT),
    };

    let vault = VaultTarget {
        address: match params.get("vaultAddress") {
            Some(raw) => {
                parse_address(&raw).map_err(|why| RequestError::invalid("vaultAddress", why))?
            }
            None => defaults.vault_address.clone(),
        },
        tls: parse_tls(&params, &defaults.tls)?,
    };

    let namespace = match params.get("vaultNamespace") {
        Some(raw) => {
            Namespace::parse(&raw).map_err(|why| RequestError::invalid("vaultNamespace", why))?
        }
        None => defaults.vault_namespace.clone(),
    };
    let auth_namespace = match params.get("vaultAuthNamespace") {
        Some(raw) => Namespace::parse(&raw)
            .map_err(|why| RequestError::invalid("vaultAuthNamespace", why))?,
        None => namespace.clone(),
    };

    let auth = parse_auth(&params, &secrets, auth_namespace)?;

    let objects_raw = params.get("objects").ok_or_else(|| {
        RequestError::invalid("objects", "is required: list the secrets to mount")
    })?;
    let objects = objects::parse(&objects_raw, namespace.as_ref())?;
    let sync_secret = parse_sync_secret(&params, &pod)?;

    Ok(MountPlan {
        pod,
        spc_name: params.get("secretProviderClass"),
        vault,
        auth,
        objects: objects.vault,
        templates: objects.templates,
        default_mode: parse_permission(&request.permission)?,
        target_path: PathBuf::from(&request.target_path),
        owner: FileOwner {
            uid: parse_id(&params, "fileOwnerUid", "user")?,
            gid: parse_id(&params, "fileOwnerGid", "group")?,
        },
        sync_secret,
    })
}

/// Refuses values far larger than any real configuration, before anything
/// parses them or sends them to Vault.
fn check_sizes(
    attributes: &HashMap<String, String>,
    secrets: &HashMap<String, String>,
) -> Result<(), RequestError> {
    for (key, value) in attributes {
        let limit = match key.as_str() {
            "objects" | "csi.storage.k8s.io/serviceAccount.tokens" => MAX_LARGE_PARAMETER,
            _ => MAX_PARAMETER,
        };
        if value.len() > limit {
            return Err(RequestError::invalid(
                key.as_str(),
                format!(
                    "is {} bytes long; at most {limit} are accepted",
                    value.len()
                ),
            ));
        }
    }
    for key in ["secretId", "id", "roleId"] {
        if secrets.get(key).is_some_and(|v| v.len() > MAX_PARAMETER) {
            return Err(RequestError::invalid(
                format!("secret key {key}"),
                format!("is longer than {MAX_PARAMETER} bytes"),
            ));
        }
    }
    Ok(())
}

/// `syncSecretName`: a Secret name (DNS subdomain), and the pod it belongs to.
fn parse_sync_secret(
    params: &Params<'_>,
    pod: &PodInfo,
) -> Result<Option<SyncSecret>, RequestError> {
    const KEY: &str = "syncSecretName";
    let Some(name) = params.get(KEY) else {
        return Ok(None);
    };
    let valid = name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        });
    if !valid {
        return Err(RequestError::invalid(
            KEY,
            format!("{name:?} is not a valid Secret name (lowercase DNS subdomain)"),
        ));
    }
    match (&pod.namespace, &pod.name, &pod.uid) {
        (Some(namespace), Some(pod_name), Some(pod_uid)) => Ok(Some(SyncSecret {
            name,
            namespace: namespace.clone(),
            pod_name: pod_name.clone(),
            pod_uid: pod_uid.clone(),
        })),
        _ => Err(RequestError::invalid(
            KEY,
            "needs the pod's namespace, name and uid, which the driver sends \
             (csi.storage.k8s.io/pod.*)",
        )),
    }
}

/// SecretProviderClass parameters; empty values count as unset, as in
/// HashiCorp's provider.
struct Params<'a>(&'a HashMap<String, String>);

impl Params<'_> {
    fn get(&self, key: &str) -> Option<String> {
        self.0
            .get(key)
            .map(|v| v.trim())
            .filter(|v| !v.is_empty())
            .map(str::to_owned)
    }

    fn flag(&self, key: &str) -> Result<Option<bool>, RequestError> {
        self.get(key)
            .map(|raw| {
                parse_go_bool(&raw).ok_or_else(|| {
                    RequestError::invalid(key, format!("{raw:?} is not a boolean (true or false)"))
                })
            })
            .transpose()
    }
}

/// `attributes` and `secrets` are JSON objects of strings. `secrets` is
/// `null` when the volume has no `nodePublishSecretRef`.
fn parse_string_map(raw: &str) -> Result<HashMap<String, String>, String> {
    if raw.trim().is_empty() {
        return Ok(HashMap::new());
    }
    let value: serde_json::Value =
        serde_json::from_str(raw).map_err(|err| format!("is not valid JSON ({err})"))?;
    match value {
        serde_json::Value::Null => Ok(HashMap::new()),
        serde_json::Value::Object(map) => map
            .into_iter()
            .map(|(key, value)| match value {
                serde_json::Value::String(s) => Ok((key, s)),
                _ => Err(format!("value of key {key:?} is not a string")),
            })
            .collect(),
        _ => Err("must be a JSON object of strings".into()),
    }
}

fn parse_address(raw: &str) -> Result<Url, String> {
    let url = Url::parse(raw).map_err(|err| format!("{raw:?} is not a URL ({err})"))?;
    match url.scheme() {
        "http" | "https" => {}
        other => return Err(format!("scheme {other:?} is not http or https")),
    }
    if url.host().is_none() {
        return Err(format!("{raw:?} has no host"));
    }
    Ok(url)
}

fn parse_tls(params: &Params<'_>, defaults: &TlsSettings) -> Result<TlsSettings, RequestError> {
    let tls = TlsSettings {
        ca_cert: params
            .get("vaultCACertPath")
            .map(PathBuf::from)
            .or_else(|| defaults.ca_cert.clone()),
        ca_directory: params
            .get("vaultCADirectory")
            .map(PathBuf::from)
            .or_else(|| defaults.ca_directory.clone()),
        server_name: params
            .get("vaultTLSServerName")
            .or_else(|| defaults.server_name.clone()),
        client_cert: params
            .get("vaultTLSClientCertPath")
            .map(PathBuf::from)
            .or_else(|| defaults.client_cert.clone()),
        client_key: params
            .get("vaultTLSClientKeyPath")
            .map(PathBuf::from)
            .or_else(|| defaults.client_key.clone()),
        skip_verify: params
            .flag("vaultSkipTLSVerify")?
            .unwrap_or(defaults.skip_verify),
    };
    if tls.client_cert.is_some() != tls.client_key.is_some() {
        return Err(RequestError::invalid(
            "vaultTLSClientCertPath",
            "client certificate and key must be set together (vaultTLSClientKeyPath)",
        ));
    }
    Ok(tls)
}

fn parse_auth(
    params: &Params<'_>,
    secrets: &HashMap<String, String>,
    namespace: Option<Namespace>,
) -> Result<AuthPlan, RequestError> {
    let secret = |key: &str| secrets.get(key).map(|v| v.trim()).filter(|v| !v.is_empty());
    let role_name = params.get("roleName");
    let role_id = params
        .get("roleId")
        .or_else(|| secret("roleId").map(str::to_owned));

    let method = match params.get("vaultAuthMethod") {
        Some(raw) => match raw.to_ascii_lowercase().as_str() {
            "approle" => AuthMethod::AppRole,
            "kubernetes" => AuthMethod::Kubernetes,
            "jwt" => AuthMethod::Jwt,
            _ => {
                return Err(RequestError::invalid(
                    "vaultAuthMethod",
                    format!("{raw:?} is not one of approle, kubernetes, jwt"),
                ));
            }
        },
        None if role_id.is_some() && role_name.is_none() => AuthMethod::AppRole,
        None => AuthMethod::Kubernetes,
    };

    let mount = match (
        params.get("vaultAuthMountPath"),
        params.get("vaultKubernetesMountPath"),
    ) {
        (Some(_), Some(_)) => {
            return Err(RequestError::invalid(
                "vaultAuthMountPath",
                "cannot set both vaultAuthMountPath and vaultKubernetesMountPath",
            ));
        }
        (Some(mount), None) | (None, Some(mount)) => mount,
        (None, None) => method.to_string(),
    };
    let mount = mount
        .trim_matches('/')
        .trim_start_matches("auth/")
        .to_owned();
    if mount.is_empty()
        || mount
            .split('/')
            .any(|p| p.is_empty() || p == "." || p == "..")
    {
        return Err(RequestError::invalid(
            "vaultAuthMountPath",
            "is not a valid auth mount path",
        ));
    }

    match method {
        AuthMethod::AppRole => {
            let role_id = role_id.ok_or_else(|| {
                RequestError::invalid(
                    "roleId",
                    "AppRole needs a role ID: set the roleId parameter or key roleId in the nodePublishSecretRef Secret",
                )
            })?;
            let secret_id = secret("secretId").or_else(|| secret("id")).ok_or_else(|| {
                RequestError::invalid(
                    "secretId",
                    "AppRole needs a secret ID: key secretId (or id) in the nodePublishSecretRef Secret",
                )
            })?;
            Ok(AuthPlan::AppRole {
                mount,
                namespace,
                role_id,
                secret_id: SecretString::from(secret_id.to_owned()),
            })
        }
        AuthMethod::Kubernetes | AuthMethod::Jwt => {
            let role = role_name.ok_or_else(|| {
                RequestError::invalid(
                    "roleName",
                    format!("{method} auth needs roleName (or use AppRole: set roleId and a secretId Secret)"),
                )
            })?;
            let audience = params.get("audience").unwrap_or_else(|| "vault".to_owned());
            let jwt = service_account_token(params, &audience)?;
            Ok(AuthPlan::ServiceAccount {
                method,
                mount,
                namespace,
                role,
                jwt,
                audience,
            })
        }
    }
}

/// Picks the pod's token for `audience` from the driver's
/// `csi.storage.k8s.io/serviceAccount.tokens` (a JSON string of
/// audience → {token, expirationTimestamp}).
fn service_account_token(
    params: &Params<'_>,
    audience: &str,
) -> Result<SecretString, RequestError> {
    const KEY: &str = "csi.storage.k8s.io/serviceAccount.tokens";
    let missing = || {
        RequestError::invalid(
            "audience",
            format!(
                "the driver sent no service-account token for audience {audience:?}; \
                 add it to the CSIDriver's tokenRequests"
            ),
        )
    };
    let raw = params.0.get(KEY).ok_or_else(missing)?;
    #[derive(serde::Deserialize)]
    struct Token {
        token: SecretString,
    }
    let tokens: HashMap<String, Token> = serde_json::from_str(raw).map_err(|_| {
        RequestError::invalid(KEY, "is not a JSON object of {token, expirationTimestamp}")
    })?;
    tokens
        .into_iter()
        .find(|(aud, _)| aud == audience)
        .map(|(_, t)| t.token)
        .ok_or_else(missing)
}

/// The request's default mode: JSON of Go's `os.FileMode`, a decimal number.
fn parse_permission(raw: &str) -> Result<u32, RequestError> {
    let raw = raw.trim().trim_matches('"');
    if raw.is_empty() {
        return Ok(DEFAULT_MODE);
    }
    let mode: u32 = raw.parse().map_err(|_| {
        RequestError::invalid("permission", format!("{raw:?} is not a decimal file mode"))
    })?;
    if mode > 0o777 {
        return Err(RequestError::invalid(
            "permission",
            format!("{mode:#o} has bits outside 0777"),
        ));
    }
    Ok(mode)
}

/// A numeric user or group ID. `4294967295` is `-1` to `chown(2)` ("leave
/// unchanged"), so it is refused rather than silently ignored.
fn parse_id(params: &Params<'_>, key: &str, what: &str) -> Result<Option<u32>, RequestError> {
    let Some(raw) = params.get(key) else {
        return Ok(None);
    };
    raw.parse::<u32>()
        .ok()
        .filter(|id| raw.bytes().all(|b| b.is_ascii_digit()) && *id != u32::MAX)
        .map(Some)
        .ok_or_else(|| {
            RequestError::invalid(
                key,
                format!("{raw:?} is not a numeric {what} ID (0 to 4294967294)"),
            )
        })
}

/// Go's `strconv.ParseBool`, which HashiCorp's provider uses.
fn parse_go_bool(raw: &str) -> Option<bool> {
    match raw {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    fn defaults() -> Defaults {
        Defaults {
            vault_address: Url::parse("http://127.0.0.1:8200").unwrap(),
            vault_namespace: None,
            tls: TlsSettings::default(),
        }
    }

    fn request(attributes: serde_json::Value, secrets: &str) -> MountRequest {
        MountRequest {
            attributes: attributes.to_string(),
            secrets: secrets.to_owned(),
            target_path: "/tmp/t".into(),
            permission: "420".into(),
            current_object_version: vec![],
        }
    }

    const OBJECTS: &str = "- objectName: a\n  secretPath: secret/data/a\n  secretKey: k\n";

    #[test]
    fn sync_secret_names_the_pod_as_owner() {
        let mut attributes = serde_json::json!({
            "roleId": "rid", "objects": OBJECTS, "syncSecretName": "app-vault",
            "csi.storage.k8s.io/pod.name": "p", "csi.storage.k8s.io/pod.uid": "u",
            "csi.storage.k8s.io/pod.namespace": "team-a",
        });
        let plan = parse(
            &request(attributes.clone(), r#"{"secretId":"s"}"#),
            &defaults(),
        )
        .unwrap();
        assert_eq!(
            plan.sync_secret,
            Some(SyncSecret {
                name: "app-vault".into(),
                namespace: "team-a".into(),
                pod_name: "p".into(),
                pod_uid: "u".into(),
            })
        );
        for bad in ["App", "a_b", "-a", "a..b", &"a".repeat(254)] {
            attributes["syncSecretName"] = serde_json::json!(bad);
            let err = parse(
                &request(attributes.clone(), r#"{"secretId":"s"}"#),
                &defaults(),
            )
            .unwrap_err();
            assert!(err.to_string().contains("syncSecretName"), "{bad}: {err}");
        }
        attributes["syncSecretName"] = serde_json::json!("app-vault");
        attributes
            .as_object_mut()
            .unwrap()
            .remove("csi.storage.k8s.io/pod.uid");
        let err = parse(&request(attributes, r#"{"secretId":"s"}"#), &defaults()).unwrap_err();
        assert!(err.to_string().contains("uid"), "{err}");
    }

    #[test]
    fn approle_with_role_id_parameter() {
        let plan = parse(
            &request(
                serde_json::json!({
                    "roleId": "rid", "objects": OBJECTS,
                    "vaultNamespace": "admin/deployments/x",
                    "csi.storage.k8s.io/pod.name": "p", "csi.storage.k8s.io/pod.uid": "u",
                }),
                r#"{"secretId":"sid"}"#,
            ),
            &defaults(),
        )
        .unwrap();
        let AuthPlan::AppRole {
            mount,
            namespace,
            role_id,
            secret_id,
        } = &plan.auth
        else {
            panic!("expected AppRole");
        };
        assert_eq!(mount, "approle");
        assert_eq!(namespace.as_ref().unwrap().as_str(), "admin/deployments/x");
        assert_eq!(role_id, "rid");
        assert_eq!(secret_id.expose_secret(), "sid");
        assert_eq!(plan.default_mode, 0o644);
        assert_eq!(plan.pod.name.as_deref(), Some("p"));
        assert_eq!(
            plan.objects[0].source.namespace.as_ref().unwrap().as_str(),
            "admin/deployments/x"
        );
    }

    #[test]
    fn approle_from_secret_keys_and_auth_namespace() {
        let plan = parse(
            &request(
                serde_json::json!({
                    "objects": OBJECTS, "vaultNamespace": "admin/a", "vaultAuthNamespace": "admin",
                    "vaultAuthMountPath": "auth/ci-approle",
                }),
                r#"{"roleId":"rid","id":"sid"}"#,
            ),
            &defaults(),
        )
        .unwrap();
        let AuthPlan::AppRole {
            mount,
            namespace,
            secret_id,
            ..
        } = &plan.auth
        else {
            panic!("expected AppRole");
        };
        assert_eq!(mount, "ci-approle");
        assert_eq!(namespace.as_ref().unwrap().as_str(), "admin");
        assert_eq!(secret_id.expose_secret(), "sid");
        assert_eq!(
            plan.objects[0].source.namespace.as_ref().unwrap().as_str(),
            "admin/a"
        );
    }

    #[test]
    fn secrets_may_be_null_empty_or_missing() {
        for secrets in ["null", "{}", ""] {
            let err = parse(
                &request(
                    serde_json::json!({"roleId": "r", "objects": OBJECTS}),
                    secrets,
                ),
                &defaults(),
            )
            .unwrap_err();
            assert_eq!(err.parameter, "secretId", "secrets = {secrets:?}");
        }
    }

    #[test]
    fn kubernetes_is_the_default_like_hashicorp() {
        let tokens = serde_json::json!({"vault": {"token": "jwt-v", "expirationTimestamp": "x"}})
            .to_string();
        let plan = parse(
            &request(
                serde_json::json!({"roleName": "app", "objects": OBJECTS,
                    "csi.storage.k8s.io/serviceAccount.tokens": tokens}),
                "null",
            ),
            &defaults(),
        )
        .unwrap();
        let AuthPlan::ServiceAccount {
            method,
            mount,
            jwt,
            audience,
            ..
        } = &plan.auth
        else {
            panic!("expected service-account auth");
        };
        assert_eq!(*method, AuthMethod::Kubernetes);
        assert_eq!(mount, "kubernetes");
        assert_eq!(audience, "vault");
        assert_eq!(jwt.expose_secret(), "jwt-v");

        let err = parse(
            &request(
                serde_json::json!({"roleName": "app", "objects": OBJECTS, "audience": "other",
                "csi.storage.k8s.io/serviceAccount.tokens": tokens}),
                "null",
            ),
            &defaults(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("\"other\""), "{err}");
    }

    #[test]
    fn bad_parameters_name_themselves() {
        let cases = [
            (
                serde_json::json!({"roleId": "r", "objects": OBJECTS, "vaultAuthMethod": "ldap"}),
                "vaultAuthMethod",
            ),
            (
                serde_json::json!({"roleId": "r", "objects": OBJECTS, "vaultAddress": "ftp://x"}),
                "vaultAddress",
            ),
            (
                serde_json::json!({"roleId": "r", "objects": OBJECTS, "vaultSkipTLSVerify": "yes"}),
                "vaultSkipTLSVerify",
            ),
            (
                serde_json::json!({"roleId": "r", "objects": OBJECTS, "vaultNamespace": "a/../b"}),
                "vaultNamespace",
            ),
            (serde_json::json!({"roleId": "r"}), "objects"),
            (serde_json::json!({"objects": OBJECTS}), "roleName"),
            (
                serde_json::json!({"roleId": "r", "objects": OBJECTS, "vaultAuthMountPath": "a", "vaultKubernetesMountPath": "b"}),
                "vaultAuthMountPath",
            ),
            (
                serde_json::json!({"roleId": "r", "objects": OBJECTS, "vaultTLSClientCertPath": "/c"}),
                "vaultTLSClientCertPath",
            ),
        ];
        for (attributes, parameter) in cases {
            let err = parse(
                &request(attributes.clone(), r#"{"secretId":"s"}"#),
                &defaults(),
            )
            .unwrap_err();
            assert_eq!(err.parameter, parameter, "{attributes}");
        }
    }

    #[test]
    fn malformed_json_is_refused() {
        let mut req = request(serde_json::json!({}), "null");
        req.attributes = "{not json".into();
        assert_eq!(
            parse(&req, &defaults()).unwrap_err().parameter,
            "attributes"
        );
        req.attributes = r#"{"objects": 5}"#.into();
        assert_eq!(
            parse(&req, &defaults()).unwrap_err().parameter,
            "attributes"
        );
        req.attributes = serde_json::json!({"roleId": "r", "objects": OBJECTS}).to_string();
        req.secrets = "[1]".into();
        assert_eq!(parse(&req, &defaults()).unwrap_err().parameter, "secrets");
    }

    #[test]
    fn huge_values_are_refused_and_never_echoed_whole() {
        let huge = "x".repeat(MAX_PARAMETER + 1);
        let err = parse(
            &request(
                serde_json::json!({"roleId": huge, "objects": OBJECTS}),
                r#"{"secretId":"s"}"#,
            ),
            &defaults(),
        )
        .unwrap_err();
        assert_eq!(err.parameter, "roleId");
        let objects = format!("- objectName: {}\n  secretPath: a\n", "é".repeat(3000));
        let err = parse(
            &request(
                serde_json::json!({"roleId": "r", "objects": objects}),
                r#"{"secretId":"s"}"#,
            ),
            &defaults(),
        )
        .unwrap_err();
        assert!(err.message.contains("objectName"), "{err}");
        assert!(err.message.len() <= MAX_ERROR_MESSAGE + '…'.len_utf8());
        let secrets = serde_json::json!({"secretId": huge}).to_string();
        let err = parse(
            &request(
                serde_json::json!({"roleId": "r", "objects": OBJECTS}),
                &secrets,
            ),
            &defaults(),
        )
        .unwrap_err();
        assert_eq!(err.parameter, "secret key secretId");
        assert!(
            !err.to_string().contains("xxxxxxxx"),
            "the value is not echoed"
        );
    }

    #[test]
    fn permission_is_decimal() {
        assert_eq!(parse_permission("420").unwrap(), 0o644);
        assert_eq!(parse_permission("\"384\"").unwrap(), 0o600);
        assert_eq!(parse_permission("").unwrap(), 0o644);
        assert!(parse_permission("0644x").is_err());
        assert!(parse_permission("4096").is_err());
    }

    #[test]
    fn file_owner_ids_are_numeric() {
        let with = |uid: &str, gid: &str| {
            parse(
                &request(
                    serde_json::json!({"roleId": "r", "objects": OBJECTS,
                        "fileOwnerUid": uid, "fileOwnerGid": gid}),
                    r#"{"secretId":"s"}"#,
                ),
                &defaults(),
            )
        };
        assert_eq!(
            with("1000", "").unwrap().owner,
            FileOwner {
                uid: Some(1000),
                gid: None
            }
        );
        assert_eq!(with("0", "65534").unwrap().owner.gid, Some(65534));
        for (uid, gid, parameter) in [
            ("-1", "", "fileOwnerUid"),
            ("app", "", "fileOwnerUid"),
            ("+5", "", "fileOwnerUid"),
            ("4294967295", "", "fileOwnerUid"),
            ("1000", "1e3", "fileOwnerGid"),
            ("", "4294967296", "fileOwnerGid"),
        ] {
            let err = with(uid, gid).unwrap_err();
            assert_eq!(err.parameter, parameter, "{uid:?} {gid:?}");
            assert!(err.message.contains("numeric"), "{err}");
        }
    }

    #[test]
    fn secret_id_never_appears_in_debug_output() {
        let plan = parse(
            &request(
                serde_json::json!({"roleId": "r", "objects": OBJECTS}),
                r#"{"secretId":"s3cr3t-id"}"#,
            ),
            &defaults(),
        )
        .unwrap();
        assert!(!format!("{plan:?}").contains("s3cr3t-id"));
    }
}
