//! Where a Mount's Vault is and how to reach it: the address, TLS settings,
//! namespaces, and the provider-wide defaults an SPC may override.

use std::fmt;
use std::path::{Path, PathBuf};

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
    /// `--allowed-vault-addr`: the origins an SPC's `vaultAddress` may name
    /// (besides `--vault-addr`'s own, always allowed).
    pub allowed_vault_addrs: AllowedOrigins,
    /// `--spc-tls-dir`: the only directory SPC file parameters may name;
    /// `None` refuses them all.
    pub spc_tls_dir: Option<PathBuf>,
}

impl Defaults {
    /// Whether a Mount may talk to `address`: `--vault-addr`'s origin, or one
    /// of `--allowed-vault-addr`.
    pub fn allows(&self, address: &Url) -> bool {
        address.origin() == self.vault_address.origin() || self.allowed_vault_addrs.allows(address)
    }
}

/// The Vault origins (`scheme://host:port`) the provider may be sent to by a
/// SecretProviderClass or a redirect. Default ports are normalised
/// (`https://vault` is `https://vault:443`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AllowedOrigins {
    /// `*`: any origin (HashiCorp's provider's behaviour).
    Any,
    /// Only these.
    Only(Vec<url::Origin>),
}

impl Default for AllowedOrigins {
    fn default() -> Self {
        Self::Only(Vec::new())
    }
}

impl AllowedOrigins {
    /// Parses `--allowed-vault-addr` values: `*`, or `scheme://host[:port]`
    /// (http or https, no path, query or credentials).
    pub fn parse<S: AsRef<str>>(values: &[S]) -> Result<Self, String> {
        let mut origins = Vec::new();
        for raw in values.iter().map(AsRef::as_ref).map(str::trim) {
            if raw == "*" {
                return Ok(Self::Any);
            }
            if raw.is_empty() {
                continue;
            }
            let url = parse_address(raw)?;
            if url.path() != "/"
                || url.query().is_some()
                || url.fragment().is_some()
                || !url.username().is_empty()
                || url.password().is_some()
            {
                return Err(format!(
                    "{raw:?} is not an origin: give scheme://host[:port] only"
                ));
            }
            origins.push(url.origin());
        }
        Ok(Self::Only(origins))
    }

    /// Adds `address`'s origin (for `--vault-addr`, which is always allowed).
    pub fn with(mut self, address: &Url) -> Self {
        if let Self::Only(origins) = &mut self
            && !origins.contains(&address.origin())
        {
            origins.push(address.origin());
        }
        self
    }

    /// Whether `address`'s origin is allowed.
    pub fn allows(&self, address: &Url) -> bool {
        match self {
            Self::Any => true,
            Self::Only(origins) => origins.contains(&address.origin()),
        }
    }
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
    spc_tls_dir: Option<&Path>,
) -> Result<TlsSettings, RequestError> {
    let file = |parameter: &str| -> Result<Option<PathBuf>, RequestError> {
        params
            .get(parameter)
            .map(|raw| confine(parameter, &raw, spc_tls_dir))
            .transpose()
    };
    let tls = TlsSettings {
        ca_cert: file("vaultCACertPath")?.or_else(|| defaults.ca_cert.clone()),
        ca_directory: file("vaultCADirectory")?.or_else(|| defaults.ca_directory.clone()),
        server_name: params
            .get("vaultTLSServerName")
            .or_else(|| defaults.server_name.clone()),
        client_cert: file("vaultTLSClientCertPath")?.or_else(|| defaults.client_cert.clone()),
        client_key: file("vaultTLSClientKeyPath")?.or_else(|| defaults.client_key.clone()),
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

/// An SPC file parameter resolved (symlinks included) to a path inside
/// `--spc-tls-dir`, which is what the provider later reads as root. A
/// relative path is taken inside the directory. Whatever the reason (outside,
/// missing, unreadable), the refusal reads the same, so it cannot tell a
/// tenant whether a path outside the directory exists.
fn confine(
    parameter: &str,
    raw: &str,
    spc_tls_dir: Option<&Path>,
) -> Result<PathBuf, RequestError> {
    let Some(dir) = spc_tls_dir else {
        return Err(RequestError::invalid(
            parameter,
            "file paths in a SecretProviderClass are honoured only when the provider runs \
             with --spc-tls-dir (and only for files inside it); ask the cluster operator, \
             or use the provider's --vault-tls-* flags",
        ));
    };
    let refused = || {
        RequestError::invalid(
            parameter,
            format!(
                "{raw:?} is not a readable file inside --spc-tls-dir {} (symlinks resolved)",
                dir.display()
            ),
        )
    };
    let dir = std::fs::canonicalize(dir).map_err(|_| refused())?;
    let resolved = std::fs::canonicalize(dir.join(raw)).map_err(|_| refused())?;
    if resolved.starts_with(&dir) {
        Ok(resolved)
    } else {
        Err(refused())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(raw: &str) -> Url {
        Url::parse(raw).unwrap()
    }

    #[test]
    fn origins_normalise_default_ports() {
        let allowed =
            AllowedOrigins::parse(&["https://vault.example", "http://10.0.0.1:8200/"]).unwrap();
        assert!(allowed.allows(&url("https://vault.example:443/some/path")));
        assert!(allowed.allows(&url("https://VAULT.example")));
        assert!(allowed.allows(&url("http://10.0.0.1:8200")));
        assert!(!allowed.allows(&url("http://vault.example")));
        assert!(!allowed.allows(&url("https://vault.example:8200")));
        assert!(!allowed.allows(&url("http://10.0.0.1:8201")));
        let http = AllowedOrigins::parse(&["http://h"]).unwrap();
        assert!(http.allows(&url("http://h:80")));
        assert!(
            AllowedOrigins::parse(&["https://a:1", "*"])
                .unwrap()
                .allows(&url("http://x:9"))
        );
        assert!(!AllowedOrigins::default().allows(&url("http://127.0.0.1:8200")));
    }

    #[test]
    fn origins_are_only_origins() {
        for bad in [
            "https://h/vault",
            "https://h?x=1",
            "https://u:p@h",
            "ftp://h",
            "h:8200",
        ] {
            assert!(AllowedOrigins::parse(&[bad]).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_default_address_is_always_allowed() {
        let defaults = Defaults {
            vault_address: url("https://vault.vault:8200/prefix"),
            vault_namespace: None,
            tls: TlsSettings::default(),
            allowed_vault_addrs: AllowedOrigins::default(),
            spc_tls_dir: None,
        };
        assert!(defaults.allows(&url("https://vault.vault:8200")));
        assert!(!defaults.allows(&url("https://vault.vault:8201")));
        assert!(!defaults.allows(&url("http://vault.vault:8200")));
    }

    #[test]
    fn spc_files_are_confined_to_the_directory() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("spc-tls");
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("ca.pem"), "x").unwrap();
        std::fs::write(root.path().join("outside.pem"), "x").unwrap();
        std::os::unix::fs::symlink(root.path().join("outside.pem"), dir.join("link.pem")).unwrap();
        std::os::unix::fs::symlink(root.path().join("gone.pem"), dir.join("dangling.pem")).unwrap();
        let inside = dir.join("ca.pem").display().to_string();
        assert_eq!(
            confine("vaultCACertPath", &inside, Some(&dir)).unwrap(),
            std::fs::canonicalize(dir.join("ca.pem")).unwrap()
        );
        // Relative paths are taken inside the directory.
        assert!(confine("vaultCACertPath", "ca.pem", Some(&dir)).is_ok());

        let outside = root.path().join("outside.pem").display().to_string();
        let missing = root.path().join("missing.pem").display().to_string();
        let dotdot = dir.join("../outside.pem").display().to_string();
        let refusal = |raw: &str| {
            let err = confine("vaultCACertPath", raw, Some(&dir)).unwrap_err();
            assert_eq!(err.parameter, "vaultCACertPath");
            assert!(err.message.contains("--spc-tls-dir"), "{err}");
            err.message.replace(raw, "PATH")
        };
        // Outside, missing, through `..` or a symlink: the same words, so
        // the answer tells nothing about what exists outside.
        let words = refusal(&outside);
        for raw in [
            missing.as_str(),
            dotdot.as_str(),
            "link.pem",
            "dangling.pem",
            "/etc/shadow",
        ] {
            assert_eq!(refusal(raw), words, "{raw}");
        }

        // No directory: every SPC file parameter is refused, naming the flag.
        let err = confine("vaultTLSClientKeyPath", &inside, None).unwrap_err();
        assert_eq!(err.parameter, "vaultTLSClientKeyPath");
        assert!(err.message.contains("--spc-tls-dir"), "{err}");
    }
}
