//! Provider-side sync: a Mount's files, server-side applied as a Kubernetes
//! Secret in the pod's namespace (`syncSecretName`, with `serve --sync-secrets`).
//!
//! The Secret is labelled as ours (`app.kubernetes.io/managed-by`), owned by the
//! mounting pod (an owner reference built from the driver's pod attributes, so
//! Kubernetes deletes it with the last pod that mounts it), and applied with one
//! field manager per pod, so every pod of a Deployment keeps its own owner
//! reference. A Secret of that name that is not labelled as ours is never touched:
//! the Mount fails instead.
//!
//! The provider never reads a Secret (its ClusterRole has no `get`: a node's provider
//! must not be able to read every Secret in the cluster). Whether a Secret of that
//! name is ours is asked with a JSON Patch made only of a `test` operation on our
//! label: 404 absent, 200 ours (nothing changes), 422 not ours. The component's
//! ValidatingAdmissionPolicy enforces the same rule in the apiserver (a create must
//! carry the label, an update must find it and keep it), which also closes the race
//! between that question and the apply; its denial is reported as not ours too.
//!
//! A few plain HTTPS calls with the client we already have (reqwest + rustls), not
//! kube-rs: two patches of one Secret are all we need, and kube-rs with k8s-openapi
//! would more than double the build for them.

use std::path::PathBuf;

use base64::Engine as _;
use secrecy::{ExposeSecret as _, SecretString};
use serde_json::{Value, json};

use crate::proto::File;
use crate::request::SyncSecret;

/// The label that marks a Secret as ours.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
/// Its value.
pub const MANAGED_BY: &str = "vault-secrets-provider";

/// Where the Kubernetes API is and how we authenticate to it.
#[derive(Clone, Debug)]
pub struct KubeConfig {
    /// `https://host:port`.
    pub server: String,
    /// PEM CA bundle for the API server's certificate.
    pub ca_file: PathBuf,
    /// A (rotating, projected) service-account token, re-read for every call.
    pub token_file: PathBuf,
}

const IN_CLUSTER_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

impl KubeConfig {
    /// The in-cluster defaults (`KUBERNETES_SERVICE_HOST`/`_PORT`, the mounted
    /// service-account token and CA), each overridable.
    pub fn resolve(
        server: Option<String>,
        ca_file: Option<PathBuf>,
        token_file: Option<PathBuf>,
    ) -> Result<Self, SyncError> {
        let server = match server {
            Some(s) => s,
            None => {
                let host = std::env::var("KUBERNETES_SERVICE_HOST").map_err(|_| {
                    SyncError::Config(
                        "--sync-secrets needs the Kubernetes API: not in a pod \
                         (KUBERNETES_SERVICE_HOST is unset) and no --kube-api-server"
                            .into(),
                    )
                })?;
                let port =
                    std::env::var("KUBERNETES_SERVICE_PORT").unwrap_or_else(|_| "443".into());
                if host.contains(':') {
                    format!("https://[{host}]:{port}")
                } else {
                    format!("https://{host}:{port}")
                }
            }
        };
        Ok(Self {
            server: server.trim_end_matches('/').to_owned(),
            ca_file: ca_file.unwrap_or_else(|| PathBuf::from(IN_CLUSTER_DIR).join("ca.crt")),
            token_file: token_file.unwrap_or_else(|| PathBuf::from(IN_CLUSTER_DIR).join("token")),
        })
    }
}

/// Why a sync failed.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// The provider cannot reach the API at all (start-up).
    #[error("{0}")]
    Config(String),
    /// A Secret of that name exists and is not ours.
    #[error(
        "Secret {namespace}/{name} exists and is not managed by vault-secrets-provider \
         (label {MANAGED_BY_LABEL}={MANAGED_BY}): refusing to overwrite it; choose another \
         syncSecretName or delete that Secret"
    )]
    NotOurs {
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
    },
    /// A file name that cannot be a Secret key.
    #[error(
        "file {0:?} cannot be a key of the synced Secret (allowed: letters, digits, '-', '_', '.')"
    )]
    InvalidKey(String),
    /// The API server refused.
    #[error("Kubernetes API: {what}: HTTP {status}: {message}")]
    Api {
        /// The call.
        what: String,
        /// HTTP status.
        status: u16,
        /// The Status message (never Secret data: the server does not echo it).
        message: String,
    },
    /// The API server could not be reached.
    #[error("Kubernetes API unreachable: {0}")]
    Unreachable(String),
}

/// The Kubernetes side of provider-side sync.
pub struct SecretSync {
    config: KubeConfig,
    client: reqwest::Client,
}

impl std::fmt::Debug for SecretSync {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretSync")
            .field("server", &self.config.server)
            .finish_non_exhaustive()
    }
}

impl SecretSync {
    /// A client for `config` (its CA is read now; the token at every call).
    pub fn new(config: KubeConfig) -> Result<Self, SyncError> {
        let ca = std::fs::read(&config.ca_file).map_err(|e| {
            SyncError::Config(format!(
                "cannot read the Kubernetes CA {}: {e}",
                config.ca_file.display()
            ))
        })?;
        let certs = reqwest::Certificate::from_pem_bundle(&ca).map_err(|e| {
            SyncError::Config(format!("bad CA bundle {}: {e}", config.ca_file.display()))
        })?;
        let client = reqwest::Client::builder()
            .tls_certs_only(certs)
            .connect_timeout(std::time::Duration::from_secs(5))
            .timeout(std::time::Duration::from_secs(15))
            .build()
            .map_err(|e| SyncError::Config(format!("HTTP client: {e}")))?;
        Ok(Self { config, client })
    }

    /// Creates or updates the Secret `target` with one key per file.
    pub async fn apply(&self, target: &SyncSecret, files: &[File]) -> Result<(), SyncError> {
        let mut data = serde_json::Map::new();
        for file in files {
            if file.path.is_empty()
                || !file
                    .path
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
            {
                return Err(SyncError::InvalidKey(file.path.clone()));
            }
            data.insert(
                file.path.clone(),
                json!(base64::engine::general_purpose::STANDARD.encode(&file.contents)),
            );
        }
        let secret = json!({
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {
                "name": target.name,
                "namespace": target.namespace,
                "labels": { MANAGED_BY_LABEL: MANAGED_BY },
                "ownerReferences": [{
                    "apiVersion": "v1", "kind": "Pod",
                    "name": target.pod_name, "uid": target.pod_uid,
                }],
            },
            "type": "Opaque",
            "data": data,
        });
        let path = format!(
            "/api/v1/namespaces/{}/secrets/{}",
            target.namespace, target.name
        );
        let not_ours = || SyncError::NotOurs {
            namespace: target.namespace.clone(),
            name: target.name.clone(),
        };
        // Is it ours? Asked without reading it: a patch that only tests our label
        // (the answer's body, the Secret itself when it is ours, is dropped unread).
        let probe = json!([{
            "op": "test",
            "path": format!("/metadata/labels/{}", MANAGED_BY_LABEL.replace('/', "~1")),
            "value": MANAGED_BY,
        }]);
        let (status, answer) = self
            .call(
                reqwest::Method::PATCH,
                &path,
                Some(probe.to_string()),
                "application/json-patch+json",
            )
            .await?;
        let force = match status {
            // Ours: take the fields other pods' managers applied with older values.
            200 => "true",
            // Not there: apply without force, so a Secret someone creates meanwhile
            // conflicts (409) or is refused by the admission policy, not taken over.
            404 => "false",
            // The test failed (no label, or another value); or the admission policy
            // refused even this no-op on a Secret that is not ours.
            422 => return Err(not_ours()),
            _ if denied_by_policy(status, &answer) => return Err(not_ours()),
            _ => return Err(api_error("check Secret", status, &answer)),
        };
        let manager = format!("{MANAGED_BY}-{}", target.pod_uid);
        let apply = format!("{path}?fieldManager={manager}&force={force}");
        let (status, body) = self
            .call(
                reqwest::Method::PATCH,
                &apply,
                Some(secret.to_string()),
                "application/apply-patch+yaml",
            )
            .await?;
        match status {
            200 | 201 => Ok(()),
            409 => Err(not_ours()),
            _ if denied_by_policy(status, &body) => Err(not_ours()),
            _ => Err(api_error("apply Secret", status, &body)),
        }
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<String>,
        content_type: &str,
    ) -> Result<(u16, Value), SyncError> {
        let token = std::fs::read_to_string(&self.config.token_file).map_err(|e| {
            SyncError::Unreachable(format!(
                "cannot read the service-account token {}: {e}",
                self.config.token_file.display()
            ))
        })?;
        let token = SecretString::from(token.trim().to_owned());
        let mut request = self
            .client
            .request(method, format!("{}{path}", self.config.server))
            .bearer_auth(token.expose_secret());
        if let Some(body) = body {
            request = request.header("Content-Type", content_type).body(body);
        }
        let response = request
            .send()
            .await
            .map_err(|e| SyncError::Unreachable(e.without_url().to_string()))?;
        let status = response.status().as_u16();
        let text = response
            .text()
            .await
            .map_err(|e| SyncError::Unreachable(e.without_url().to_string()))?;
        Ok((status, serde_json::from_str(&text).unwrap_or(Value::Null)))
    }
}

/// Whether the answer is the secret-sync component's ValidatingAdmissionPolicy
/// refusing a Secret that is not labelled as ours (its messages name the label; an
/// RBAC refusal is a 403 too, and stays `PermissionDenied`).
fn denied_by_policy(status: u16, body: &Value) -> bool {
    let message = body["message"].as_str().unwrap_or_default();
    (status == 403 || status == 422)
        && message.contains("ValidatingAdmissionPolicy")
        && message.contains(&format!("{MANAGED_BY_LABEL}={MANAGED_BY}"))
}

fn api_error(what: &str, status: u16, body: &Value) -> SyncError {
    SyncError::Api {
        what: what.to_owned(),
        status,
        message: body["message"].as_str().unwrap_or_default().to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_cluster_defaults_and_overrides() {
        let config = KubeConfig::resolve(
            Some("https://10.0.0.1:6443/".into()),
            None,
            Some("/tmp/token".into()),
        )
        .unwrap();
        assert_eq!(config.server, "https://10.0.0.1:6443");
        assert_eq!(
            config.ca_file,
            PathBuf::from("/var/run/secrets/kubernetes.io/serviceaccount/ca.crt")
        );
        assert_eq!(config.token_file, PathBuf::from("/tmp/token"));
    }

    #[test]
    fn only_the_policys_denial_counts_as_not_ours() {
        let policy = json!({ "message": "ValidatingAdmissionPolicy 'vault-secrets-provider-secret-sync' \
            with binding 'vault-secrets-provider-secret-sync' denied request: vault-secrets-provider \
            may only write Secrets labelled app.kubernetes.io/managed-by=vault-secrets-provider" });
        assert!(denied_by_policy(403, &policy));
        assert!(denied_by_policy(422, &policy));
        assert!(!denied_by_policy(500, &policy));
        let rbac = json!({ "message": "secrets \"app\" is forbidden: User \"system:serviceaccount:x:y\" \
            cannot patch resource \"secrets\" in API group \"\" in the namespace \"app\"" });
        assert!(!denied_by_policy(403, &rbac));
    }
}
