//! Where a Mount's Vault is and how to reach it: the address, TLS settings,
//! namespaces, and the provider-wide defaults an SPC may override.

use std::fmt;
use std::path::PathBuf;

use url::Url;

use super::error::RequestError;
use super::params::Params;

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

pub(super) fn parse_address(raw: &str) -> Result<Url, String> {
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

pub(super) fn parse_tls(
    params: &Params<'_>,
    defaults: &TlsSettings,
) -> Result<TlsSettings, RequestError> {
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
