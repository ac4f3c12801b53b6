//! The command line. Every flag can also be set with `VSP_<NAME>`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::telemetry::LogFormat;
use crate::write::WriteMode;

/// Default socket: HashiCorp's provider uses the same, so we are a drop-in.
pub const DEFAULT_ENDPOINT: &str = "/var/run/secrets-store-csi-providers/vault.sock";

/// A HashiCorp Vault / OpenBao provider for the Kubernetes Secrets Store CSI Driver.
#[derive(Debug, Parser)]
#[command(name = "vault-secrets-provider", version, about, long_about = None)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the provider: serve the driver's gRPC calls on a Unix socket.
    Serve(ServeArgs),
}

/// `serve` flags.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Unix socket the driver connects to (`<providers dir>/<provider name>.sock`).
    #[arg(long, env = "VSP_ENDPOINT", default_value = DEFAULT_ENDPOINT)]
    pub endpoint: PathBuf,

    /// Socket file mode, octal. The driver runs as root, so 0600 is enough.
    #[arg(long, env = "VSP_ENDPOINT_PERMISSIONS", default_value = "0600", value_parser = parse_octal_mode)]
    pub endpoint_permissions: u32,

    /// Address of the HTTP health endpoint (`/healthz`, `/readyz`).
    #[arg(long, env = "VSP_HEALTH_ADDR", default_value = "0.0.0.0:8080")]
    pub health_addr: SocketAddr,

    /// Default Vault address (else `VAULT_ADDR`, else https://127.0.0.1:8200).
    /// A SecretProviderClass may override it with `vaultAddress`.
    #[arg(long, env = "VSP_VAULT_ADDR")]
    pub vault_addr: Option<String>,

    /// Default Vault namespace (else `VAULT_NAMESPACE`). Overridden by `vaultNamespace`.
    #[arg(long, env = "VSP_VAULT_NAMESPACE")]
    pub vault_namespace: Option<String>,

    /// PEM file of CA certificates to trust for Vault's TLS certificate.
    #[arg(long, env = "VSP_VAULT_TLS_CA_CERT")]
    pub vault_tls_ca_cert: Option<PathBuf>,

    /// Directory of PEM CA certificates to trust.
    #[arg(long, env = "VSP_VAULT_TLS_CA_DIRECTORY")]
    pub vault_tls_ca_directory: Option<PathBuf>,

    /// Server name to verify Vault's certificate against.
    #[arg(long, env = "VSP_VAULT_TLS_SERVER_NAME")]
    pub vault_tls_server_name: Option<String>,

    /// Client certificate (PEM) for mutual TLS.
    #[arg(
        long,
        env = "VSP_VAULT_TLS_CLIENT_CERT",
        requires = "vault_tls_client_key"
    )]
    pub vault_tls_client_cert: Option<PathBuf>,

    /// Client key (PEM) for mutual TLS.
    #[arg(
        long,
        env = "VSP_VAULT_TLS_CLIENT_KEY",
        requires = "vault_tls_client_cert"
    )]
    pub vault_tls_client_key: Option<PathBuf>,

    /// Skip verification of Vault's TLS certificate. Insecure; for testing only.
    #[arg(long, env = "VSP_VAULT_TLS_SKIP_VERIFY")]
    pub vault_tls_skip_verify: bool,

    /// Log level (`error`, `warn`, `info`, `debug`, `trace`) or filter directives.
    #[arg(long, env = "VSP_LOG_LEVEL", default_value = "info")]
    pub log_level: String,

    /// Log format.
    #[arg(long, env = "VSP_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,

    /// Deadline for one Mount, applied even when the driver sends none
    /// (its v1.5 rotation reconciler does not).
    #[arg(long, env = "VSP_MOUNT_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    pub mount_timeout: Duration,

    /// Deadline for one HTTP request to Vault.
    #[arg(long, env = "VSP_VAULT_REQUEST_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub vault_request_timeout: Duration,

    /// Most Vault identities (AppRole credentials, roles) whose tokens are cached.
    #[arg(long, env = "VSP_TOKEN_CACHE_SIZE", default_value_t = 10_000)]
    pub token_cache_size: usize,

    /// Most pod certificates and leased secrets kept between Mounts.
    #[arg(long, env = "VSP_LEASE_CACHE_SIZE", default_value_t = 10_000)]
    pub lease_cache_size: usize,

    /// Per-pod state (certificates, leases, tokens) that no Mount has used for
    /// this long is dropped: the driver never says when a pod is gone.
    #[arg(long, env = "VSP_POD_STATE_IDLE_TIMEOUT", default_value = "30m", value_parser = humantime::parse_duration)]
    pub pod_state_idle_timeout: Duration,

    /// Revoke the leases and tokens of idle pod state when dropping it (needs
    /// a policy allowing `sys/leases/revoke`).
    #[arg(long, env = "VSP_REVOKE_ON_IDLE")]
    pub revoke_on_idle: bool,

    /// Revoke every cached Vault token on shutdown.
    #[arg(long, env = "VSP_REVOKE_TOKENS_ON_SHUTDOWN")]
    pub revoke_tokens_on_shutdown: bool,

    /// Who writes the files into the pod's volume: `response` returns them to
    /// the driver, which writes them; `direct` writes them into the volume
    /// here (tmpfs only; needs the kubelet pods directory mounted with
    /// HostToContainer propagation) and allows `fileOwnerUid`/`fileOwnerGid`.
    #[arg(long, env = "VSP_WRITE_MODE", value_enum, default_value = "response")]
    pub write_mode: WriteMode,

    /// File holding the key for object versions (created, mode 0600, if
    /// missing). Default: `vault-secrets-provider.key` next to the socket.
    #[arg(long, env = "VSP_VERSION_KEY_FILE")]
    pub version_key_file: Option<PathBuf>,
}

fn parse_octal_mode(raw: &str) -> Result<u32, String> {
    let digits = raw.trim_start_matches("0o");
    let mode = u32::from_str_radix(digits, 8)
        .map_err(|_| format!("{raw:?} is not an octal mode such as 0600"))?;
    if mode > 0o777 {
        return Err(format!("{raw:?} has bits outside 0777"));
    }
    Ok(mode)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory as _;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn octal_modes() {
        assert_eq!(parse_octal_mode("0600").unwrap(), 0o600);
        assert_eq!(parse_octal_mode("0o660").unwrap(), 0o660);
        assert!(parse_octal_mode("0800").is_err());
        assert!(parse_octal_mode("7777").is_err());
    }
}
