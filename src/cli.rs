//! The command line. Every flag can also be set with `VSP_<NAME>`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use url::Url;

use crate::request::{AllowedOrigins, Defaults, Namespace, TlsSettings};
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
    /// Render a SecretProviderClass file into a local directory, without a
    /// driver or a cluster: the quickest way to debug an SPC.
    #[command(after_help = MOUNT_EXAMPLES)]
    Mount(MountArgs),
}

const MOUNT_EXAMPLES: &str = "\
Examples:
  # AppRole: the secret ID that would be in the nodePublishSecretRef Secret
  vault-secrets-provider mount spc.yaml --secret-id-file ./secret-id -o ./out \\
      --vault-addr https://vault.example.internal:8200

  # Any key of that Secret, e.g. a role ID kept there too
  vault-secrets-provider mount spc.yaml --secret roleId=./role-id --secret secretId=./secret-id -o ./out

  # Kubernetes or JWT auth: a service-account token for the SPC's audience
  vault-secrets-provider mount spc.yaml --service-account-token-file ./token \\
      --pod-namespace team-a --service-account app -o ./out

The files are written with their modes into a new directory that appears whole
(or not at all); a summary of names, sizes, modes and versions is printed, never
the values. Exit status: 0 on success, 1 when the Mount fails (the message is the
one a pod's events would show), 2 on bad usage.";

/// `serve` flags.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Unix socket the driver connects to (`<providers dir>/<provider name>.sock`).
    #[arg(long, env = "VSP_ENDPOINT", default_value = DEFAULT_ENDPOINT)]
    pub endpoint: PathBuf,

    /// Socket file mode, octal. The driver runs as root, so 0600 is enough.
    #[arg(long, env = "VSP_ENDPOINT_PERMISSIONS", default_value = "0600", value_parser = parse_octal_mode)]
    pub endpoint_permissions: u32,

    /// Only callers with this uid (repeatable, or comma-separated) may call,
    /// checked from the socket's peer credentials; the provider's own uid
    /// always may. Default: anyone the socket's mode lets in (0600: root and
    /// our own user).
    #[arg(
        long = "allowed-peer-uid",
        env = "VSP_ALLOWED_PEER_UID",
        value_name = "UID",
        value_delimiter = ','
    )]
    pub allowed_peer_uids: Vec<u32>,

    /// Address of the HTTP endpoint for probes and metrics: `/healthz`,
    /// `/readyz`, `/metrics`. Port 0 picks a free port (logged at start-up).
    #[arg(long, env = "VSP_HEALTH_ADDR", default_value = "0.0.0.0:8080")]
    pub health_addr: SocketAddr,

    /// Make `/readyz` also require Vault's `sys/health` at `--vault-addr` to
    /// answer (initialized and unsealed; standbys count). Off by default: a
    /// Vault outage then marks every node's provider unready.
    #[arg(long, env = "VSP_READYZ_VAULT")]
    pub readyz_vault: bool,

    /// Deadline for one Mount, applied even when the driver sends none
    /// (its v1.5 rotation reconciler does not).
    #[arg(long, env = "VSP_MOUNT_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    pub mount_timeout: Duration,

    /// Most Vault identities (AppRole credentials, roles) whose tokens are
    /// cached. Identities are per pod namespace; one namespace holds at most
    /// a quarter of the cache, and only after a successful login.
    #[arg(long, env = "VSP_TOKEN_CACHE_SIZE", default_value_t = 10_000)]
    pub token_cache_size: usize,

    /// Most Vault requests one pod namespace has in flight at once, under the
    /// global bound of 64: a slow Vault used by one namespace cannot delay
    /// another namespace's Mounts.
    #[arg(
        long,
        env = "VSP_MAX_IN_FLIGHT_PER_NAMESPACE",
        default_value_t = 16,
        value_parser = clap::value_parser!(u16).range(1..=64)
    )]
    pub max_in_flight_per_namespace: u16,

    /// Largest Mount response, in bytes. Keep it at or below the driver's
    /// `--max-call-recv-msg-size` (4 MiB by default): a bigger response is
    /// refused here with a clear error instead of failing inside the driver.
    /// With `--write-mode response`, also each Mount's byte budget when it is
    /// below `--max-mount-bytes`.
    #[arg(long, env = "VSP_MAX_RESPONSE_SIZE", default_value_t = 4 << 20)]
    pub max_response_size: usize,

    /// Bytes one Mount may fetch from Vault, and again render into files; a
    /// Mount fails with `ResourceExhausted` as soon as it would exceed either,
    /// before the memory is spent. The files going back to the driver are
    /// bounded by `--max-response-size` too; in `--write-mode direct` only
    /// by this.
    #[arg(long, env = "VSP_MAX_MOUNT_BYTES", default_value_t = 8 << 20)]
    pub max_mount_bytes: usize,

    /// Most pod certificates and leased secrets kept between Mounts.
    #[arg(long, env = "VSP_LEASE_CACHE_SIZE", default_value_t = 10_000)]
    pub lease_cache_size: usize,

    /// Most bytes of pod certificates and leased secrets kept between Mounts
    /// (as compact JSON); the least recently used are dropped beyond it.
    #[arg(long, env = "VSP_LEASE_CACHE_BYTES", default_value_t = 32 << 20)]
    pub lease_cache_bytes: usize,

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

    /// With `--write-mode direct`: how often the provider re-reads each
    /// volume's objects and rewrites the files that changed, by itself
    /// (±10% jitter). Certificates and leases are renewed or replaced at
    /// their `renewalPercent` whatever this says; `0` refreshes only them.
    #[arg(long, env = "VSP_REFRESH_INTERVAL", default_value = "2m", value_parser = humantime::parse_duration)]
    pub refresh_interval: Duration,

    /// With `--write-mode direct`: most volumes kept fresh at once (a pod
    /// namespace may hold a quarter); beyond it, a volume is refreshed only
    /// by the driver's Mounts.
    #[arg(long, env = "VSP_MAX_TRACKED_VOLUMES", default_value_t = 10_000)]
    pub max_tracked_volumes: usize,

    /// File holding the key for object versions (created, mode 0600, if
    /// missing). Default: `vault-secrets-provider.key` next to the socket.
    #[arg(long, env = "VSP_VERSION_KEY_FILE")]
    pub version_key_file: Option<PathBuf>,

    /// Provider-side Secret sync: a SecretProviderClass with `syncSecretName`
    /// also gets its files server-side applied as that Secret in the pod's
    /// namespace, owned by the pod. Needs RBAC (daemonset/secret-sync/).
    #[arg(long, env = "VSP_SYNC_SECRETS")]
    pub sync_secrets: bool,

    /// Kubernetes API server for --sync-secrets (default: in-cluster,
    /// `https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT`).
    #[arg(long, env = "VSP_KUBE_API_SERVER")]
    pub kube_api_server: Option<String>,

    /// CA bundle of the API server (default: the service account's ca.crt).
    #[arg(long, env = "VSP_KUBE_CA_FILE")]
    pub kube_ca_file: Option<PathBuf>,

    /// Bearer token file, re-read for every call (default: the service
    /// account's token).
    #[arg(long, env = "VSP_KUBE_TOKEN_FILE")]
    pub kube_token_file: Option<PathBuf>,

    /// Vault flags.
    #[command(flatten, next_help_heading = "Vault")]
    pub vault: VaultArgs,

    /// Log flags.
    #[command(flatten, next_help_heading = "Logging")]
    pub log: LogArgs,
}

/// How to reach Vault: defaults that a SecretProviderClass may override.
#[derive(Debug, Args)]
pub struct VaultArgs {
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

    /// Vault origin (`scheme://host[:port]`) a SecretProviderClass's
    /// `vaultAddress` may name, and a redirect may lead to; repeatable (the
    /// variable takes a comma-separated list). `--vault-addr`'s origin is
    /// always allowed, and by default the only one; `*` allows any (what
    /// HashiCorp's provider does: tenants can then aim the provider anywhere).
    #[arg(
        long = "allowed-vault-addr",
        env = "VSP_ALLOWED_VAULT_ADDR",
        value_name = "ORIGIN",
        value_delimiter = ','
    )]
    pub allowed_vault_addrs: Vec<String>,

    /// Directory whose files SecretProviderClass file parameters
    /// (`vaultCACertPath`, `vaultCADirectory`, `vaultTLSClientCertPath`,
    /// `vaultTLSClientKeyPath`) may name, symlinks resolved. Unset (the
    /// default): those parameters are refused; the `--vault-tls-*` flags are
    /// not affected.
    #[arg(long, env = "VSP_SPC_TLS_DIR", value_name = "DIR")]
    pub spc_tls_dir: Option<PathBuf>,

    /// Deadline for one HTTP request to Vault.
    #[arg(long, env = "VSP_VAULT_REQUEST_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub vault_request_timeout: Duration,
}

impl VaultArgs {
    /// The provider-wide defaults these flags (and `VAULT_ADDR`,
    /// `VAULT_NAMESPACE`) give.
    pub fn defaults(&self) -> Result<Defaults, String> {
        let address = self
            .vault_addr
            .clone()
            .or_else(|| std::env::var("VAULT_ADDR").ok().filter(|v| !v.is_empty()))
            .unwrap_or_else(|| "https://127.0.0.1:8200".to_owned());
        let namespace = self
            .vault_namespace
            .clone()
            .or_else(|| std::env::var("VAULT_NAMESPACE").ok())
            .unwrap_or_default();
        let vault_address = Url::parse(&address)
            .map_err(|err| format!("--vault-addr {address:?} is not a URL: {err}"))?;
        let allowed_vault_addrs = AllowedOrigins::parse(&self.allowed_vault_addrs)
            .map_err(|why| format!("--allowed-vault-addr {why}"))?
            .with(&vault_address);
        Ok(Defaults {
            vault_address,
            vault_namespace: Namespace::parse(&namespace)
                .map_err(|why| format!("--vault-namespace {why}"))?,
            tls: TlsSettings {
                ca_cert: self.vault_tls_ca_cert.clone(),
                ca_directory: self.vault_tls_ca_directory.clone(),
                server_name: self.vault_tls_server_name.clone(),
                client_cert: self.vault_tls_client_cert.clone(),
                client_key: self.vault_tls_client_key.clone(),
                skip_verify: self.vault_tls_skip_verify,
            },
            allowed_vault_addrs,
            spc_tls_dir: self
                .spc_tls_dir
                .as_ref()
                .map(|dir| {
                    std::fs::canonicalize(dir)
                        .map_err(|err| format!("--spc-tls-dir {}: {err}", dir.display()))
                })
                .transpose()?,
        })
    }
}

/// Log flags.
#[derive(Debug, Args)]
pub struct LogArgs {
    /// Log level (`error`, `warn`, `info`, `debug`, `trace`) or filter directives.
    /// Whatever the level, no secret, token or attribute is ever logged.
    #[arg(long, env = "VSP_LOG_LEVEL", default_value = "info")]
    pub log_level: String,

    /// Log format: `text` lines, or one JSON object per line.
    #[arg(long, env = "VSP_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,
}

/// `mount` flags.
#[derive(Debug, Args)]
pub struct MountArgs {
    /// SecretProviderClass YAML file (`-` for standard input). It may hold
    /// several documents; see `--name`.
    #[arg(value_name = "SPC_FILE")]
    pub spc_file: PathBuf,

    /// Directory to create with the files. It must not exist or be empty,
    /// unless `--force`.
    #[arg(short, long, value_name = "DIR")]
    pub output_dir: PathBuf,

    /// Replace a non-empty output directory (the old one is removed only once
    /// the new one is in place).
    #[arg(long)]
    pub force: bool,

    /// Which SecretProviderClass of the file (`metadata.name`), when it holds
    /// more than one.
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,

    /// File holding the AppRole secret ID: key `secretId` of the
    /// `nodePublishSecretRef` Secret.
    #[arg(long, value_name = "FILE")]
    pub secret_id_file: Option<PathBuf>,

    /// Any key of the `nodePublishSecretRef` Secret, from a file
    /// (e.g. `roleId=./role-id`). Repeatable.
    #[arg(long = "secret", value_name = "KEY=FILE", value_parser = parse_key_file)]
    pub secrets: Vec<(String, PathBuf)>,

    /// File holding a service-account token (a JWT) for Kubernetes or JWT
    /// auth; it is passed for the SPC's `audience` (default `vault`), as the
    /// driver's `tokenRequests` would.
    #[arg(long, value_name = "FILE")]
    pub service_account_token_file: Option<PathBuf>,

    /// Pod name, as the driver would send it.
    #[arg(long, default_value = "local")]
    pub pod_name: String,

    /// Pod namespace.
    #[arg(long, default_value = "default")]
    pub pod_namespace: String,

    /// Pod UID.
    #[arg(long, default_value = "00000000-0000-0000-0000-000000000000")]
    pub pod_uid: String,

    /// Pod service account.
    #[arg(long, default_value = "default")]
    pub service_account: String,

    /// File mode for objects without `filePermission`, octal (the driver sends 0644).
    #[arg(long, default_value = "0644", value_parser = parse_octal_mode)]
    pub permission: u32,

    /// Deadline for the whole Mount.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub mount_timeout: Duration,

    /// Log level on standard error (`warn` by default, `debug` to see each step).
    #[arg(long, default_value = "warn")]
    pub log_level: String,

    /// Vault flags.
    #[command(flatten, next_help_heading = "Vault")]
    pub vault: VaultArgs,
}

fn parse_key_file(raw: &str) -> Result<(String, PathBuf), String> {
    match raw.split_once('=') {
        Some((key, file)) if !key.is_empty() && !file.is_empty() => {
            Ok((key.to_owned(), PathBuf::from(file)))
        }
        _ => Err(format!("{raw:?} is not KEY=FILE")),
    }
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

    #[test]
    fn key_files() {
        assert_eq!(
            parse_key_file("roleId=./a=b").unwrap(),
            ("roleId".to_owned(), PathBuf::from("./a=b"))
        );
        assert!(parse_key_file("roleId").is_err());
        assert!(parse_key_file("=x").is_err());
    }

    #[test]
    fn allowed_vault_addrs() {
        let defaults = |args: &[&str]| {
            let cli = Cli::try_parse_from(
                ["vsp", "serve", "--vault-addr", "https://vault:8200"]
                    .iter()
                    .chain(args),
            )
            .unwrap();
            let Command::Serve(serve) = cli.command else {
                panic!("not serve")
            };
            serve.vault.defaults()
        };
        let url = |raw: &str| Url::parse(raw).unwrap();
        let only_default = defaults(&[]).unwrap().allowed_vault_addrs;
        assert!(only_default.allows(&url("https://vault:8200/x")));
        assert!(!only_default.allows(&url("https://other:8200")));
        let listed = defaults(&["--allowed-vault-addr", "https://a,http://b:8200"])
            .unwrap()
            .allowed_vault_addrs;
        for ok in ["https://vault:8200", "https://a:443", "http://b:8200"] {
            assert!(listed.allows(&url(ok)), "{ok}");
        }
        assert!(
            defaults(&["--allowed-vault-addr", "*"])
                .unwrap()
                .allowed_vault_addrs
                .allows(&url("http://anything:1"))
        );
        let err = defaults(&["--allowed-vault-addr", "https://a/path"]).unwrap_err();
        assert!(err.contains("--allowed-vault-addr"), "{err}");
        let err = defaults(&["--spc-tls-dir", "/no/such/dir"]).unwrap_err();
        assert!(err.contains("--spc-tls-dir"), "{err}");
    }
}
