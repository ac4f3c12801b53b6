//! How a Mount logs in to Vault: [`AuthPlan`], parsed from `vaultAuthMethod`,
//! `roleId`/`roleName`, `vaultAuthMountPath`, `audience`, the
//! `nodePublishSecretRef` Secret and the pod's service-account tokens.
//!
//! Adding an auth method: one [`Credentials`] variant and its arm in
//! [`parse_auth`] and in the matches of [`Credentials`] here, and one login arm
//! in `vault::auth`.

use std::collections::HashMap;
use std::fmt;

use secrecy::{ExposeSecret as _, SecretString};
use sha2::{Digest as _, Sha256};

use super::error::RequestError;
use super::params::Params;
use super::target::Namespace;

/// How the provider logs in for this Mount.
#[derive(Clone, Debug)]
pub struct AuthPlan {
    /// The auth method's mount path, without `auth/` (`vaultAuthMountPath`;
    /// default: the method's name).
    pub auth_mount: String,
    /// Namespace the login happens in (`vaultAuthNamespace`, else `vaultNamespace`).
    pub namespace: Option<Namespace>,
    /// What the login presents.
    pub credentials: Credentials,
}

/// What a login presents to Vault, by auth method.
#[derive(Clone, Debug)]
pub enum Credentials {
    /// AppRole: role ID (non-secret configuration) and secret ID (from the
    /// `nodePublishSecretRef` Secret).
    AppRole {
        /// The role ID.
        role_id: String,
        /// The secret ID; never logged.
        secret_id: SecretString,
    },
    /// Kubernetes auth: Vault checks the pod's token with a TokenReview.
    Kubernetes(ServiceAccountLogin),
    /// JWT auth: Vault checks the pod's token's signature itself.
    Jwt(ServiceAccountLogin),
}

/// A login with the pod's service-account token.
#[derive(Clone, Debug)]
pub struct ServiceAccountLogin {
    /// `roleName`.
    pub role: String,
    /// The token for the chosen audience; never logged.
    pub jwt: SecretString,
    /// The audience the token was picked for.
    pub audience: String,
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

impl AuthMethod {
    /// The parameter value, the default mount path, and the metrics label.
    pub fn label(self) -> &'static str {
        match self {
            Self::AppRole => "approle",
            Self::Kubernetes => "kubernetes",
            Self::Jwt => "jwt",
        }
    }
}

impl fmt::Display for AuthMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

impl Credentials {
    /// The auth method these credentials are for.
    pub fn method(&self) -> AuthMethod {
        match self {
            Self::AppRole { .. } => AuthMethod::AppRole,
            Self::Kubernetes(_) => AuthMethod::Kubernetes,
            Self::Jwt(_) => AuthMethod::Jwt,
        }
    }

    /// Who logs in, as the token cache keys it: a non-secret principal, and a
    /// SHA-256 of the secret part that distinguishes identities. A
    /// service-account identity is bound to its pod (`pod_uid`), so a pod
    /// keeps one Vault token while kubelet rotates its JWT; without a pod UID
    /// the token itself is the only identity there is.
    pub fn identity(&self, pod_uid: Option<&str>) -> (String, [u8; 32]) {
        match self {
            Self::AppRole { role_id, secret_id } => (
                format!("approle:{role_id}"),
                Sha256::digest(secret_id.expose_secret().as_bytes()).into(),
            ),
            Self::Kubernetes(login) | Self::Jwt(login) => (
                format!(
                    "{}:{}:{}:pod={}",
                    self.method(),
                    login.role,
                    login.audience,
                    pod_uid.unwrap_or("")
                ),
                match pod_uid {
                    Some(_) => [0; 32],
                    None => Sha256::digest(login.jwt.expose_secret().as_bytes()).into(),
                },
            ),
        }
    }
}

/// The login part of a SecretProviderClass. Like HashiCorp's provider, the
/// method defaults to Kubernetes, except that a role ID without a `roleName`
/// means AppRole.
pub(super) fn parse_auth(
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

    let auth_mount = parse_auth_mount(params, method)?;

    let service_account = || -> Result<ServiceAccountLogin, RequestError> {
        let role = role_name.clone().ok_or_else(|| {
            RequestError::invalid(
                "roleName",
                format!("{method} auth needs roleName (or use AppRole: set roleId and a secretId Secret)"),
            )
        })?;
        let audience = params.get("audience").unwrap_or_else(|| "vault".to_owned());
        let jwt = service_account_token(params, &audience)?;
        Ok(ServiceAccountLogin {
            role,
            jwt,
            audience,
        })
    };
    let credentials = match method {
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
            Credentials::AppRole {
                role_id,
                secret_id: SecretString::from(secret_id.to_owned()),
            }
        }
        AuthMethod::Kubernetes => Credentials::Kubernetes(service_account()?),
        AuthMethod::Jwt => Credentials::Jwt(service_account()?),
    };
    Ok(AuthPlan {
        auth_mount,
        namespace,
        credentials,
    })
}

/// `vaultAuthMountPath` (or HashiCorp's older `vaultKubernetesMountPath`),
/// with or without `auth/`; default: the method's name.
fn parse_auth_mount(params: &Params<'_>, method: AuthMethod) -> Result<String, RequestError> {
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
        (None, None) => method.label().to_owned(),
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
    Ok(mount)
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
