//! `vault-secrets-provider`: wires the command line to the library.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context as _, Result};
use clap::Parser as _;
use url::Url;

use vault_secrets_provider::cli::{Cli, Command, ServeArgs};
use vault_secrets_provider::mount::Provider;
use vault_secrets_provider::request::{Defaults, Namespace, TlsSettings};
use vault_secrets_provider::server::{self, ServerConfig, Serving};
use vault_secrets_provider::telemetry;
use vault_secrets_provider::vault::{Vault, VaultConfig};
use vault_secrets_provider::version::Versioner;
use vault_secrets_provider::write::WriteMode;

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => {
            telemetry::init(&args.log_level, args.log_format).map_err(anyhow::Error::msg)?;
            tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("cannot start the async runtime")?
                .block_on(serve(args))
        }
    }
}

async fn serve(args: ServeArgs) -> Result<()> {
    let address = args
        .vault_addr
        .clone()
        .or_else(|| std::env::var("VAULT_ADDR").ok().filter(|v| !v.is_empty()))
        .unwrap_or_else(|| "https://127.0.0.1:8200".to_owned());
    let namespace = args
        .vault_namespace
        .clone()
        .or_else(|| std::env::var("VAULT_NAMESPACE").ok())
        .unwrap_or_default();
    let defaults = Defaults {
        vault_address: Url::parse(&address)
            .with_context(|| format!("--vault-addr {address:?} is not a URL"))?,
        vault_namespace: Namespace::parse(&namespace)
            .map_err(|why| anyhow::anyhow!("--vault-namespace {why}"))?,
        tls: TlsSettings {
            ca_cert: args.vault_tls_ca_cert.clone(),
            ca_directory: args.vault_tls_ca_directory.clone(),
            server_name: args.vault_tls_server_name.clone(),
            client_cert: args.vault_tls_client_cert.clone(),
            client_key: args.vault_tls_client_key.clone(),
            skip_verify: args.vault_tls_skip_verify,
        },
    };
    let key_file = args.version_key_file.clone().unwrap_or_else(|| {
        args.endpoint
            .parent()
            .map_or_else(|| PathBuf::from("."), PathBuf::from)
            .join("vault-secrets-provider.key")
    });
    let versioner = Versioner::load_or_create(&key_file)
        .with_context(|| format!("cannot load the version key {}", key_file.display()))?;
    let vault = Vault::new(VaultConfig {
        request_timeout: args.vault_request_timeout,
        token_cache_size: args.token_cache_size,
    });
    let provider = Arc::new(
        Provider::new(vault, versioner, defaults)
            .with_lease_capacity(args.lease_cache_size)
            .with_write_mode(args.write_mode),
    );
    if args.write_mode == WriteMode::Direct {
        tracing::info!(
            "--write-mode direct: the provider writes files into the pods' tmpfs volumes"
        );
    }
    tokio::spawn(sweep_idle_state(
        provider.clone(),
        args.pod_state_idle_timeout,
        args.revoke_on_idle,
    ));

    let serving = Serving::default();
    let health = telemetry::bind_health(args.health_addr)
        .await
        .with_context(|| format!("cannot listen on --health-addr {}", args.health_addr))?;
    tokio::spawn(telemetry::serve_health(health, serving.clone()));

    let listener = server::bind(&args.endpoint, args.endpoint_permissions)
        .with_context(|| format!("cannot create socket {}", args.endpoint.display()))?;
    let config = ServerConfig {
        endpoint: args.endpoint.clone(),
        socket_mode: args.endpoint_permissions,
        mount_timeout: args.mount_timeout,
        drain_timeout: args.mount_timeout + std::time::Duration::from_secs(5),
    };
    server::serve(
        listener,
        provider.clone(),
        config,
        serving,
        shutdown_signal(),
    )
    .await
    .context("gRPC server failed")?;
    if args.revoke_tokens_on_shutdown {
        let revoked = provider.vault().revoke_all().await;
        tracing::info!(revoked, "revoked cached Vault tokens");
    }
    tracing::info!("stopped");
    Ok(())
}

/// Drops per-pod state no Mount has used for `idle`, checking a few times per
/// idle period.
async fn sweep_idle_state(provider: Arc<Provider>, idle: std::time::Duration, revoke: bool) {
    let period = (idle / 4).clamp(
        std::time::Duration::from_secs(1),
        std::time::Duration::from_secs(60),
    );
    let mut ticks = tokio::time::interval(period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        provider.expire_idle(idle, revoke).await;
    }
}

/// Resolves on the first SIGTERM or SIGINT.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    tokio::select! {
        _ = term.recv() => tracing::info!("received SIGTERM"),
        _ = int.recv() => tracing::info!("received SIGINT"),
    }
}
