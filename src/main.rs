//! `vault-secrets-provider`: wires the command line to the library.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context as _, Result};
use clap::Parser as _;

use vault_secrets_provider::admin::{self, Health};
use vault_secrets_provider::cli::{Cli, Command, MountArgs, ServeArgs};
use vault_secrets_provider::local;
use vault_secrets_provider::provider::Provider;
use vault_secrets_provider::request::VaultTarget;
use vault_secrets_provider::server::{self, ServerConfig, Serving};
use vault_secrets_provider::sync::{KubeConfig, SecretSync};
use vault_secrets_provider::telemetry::{self, LogFormat};
use vault_secrets_provider::vault::{Vault, VaultConfig};
use vault_secrets_provider::version::Versioner;
use vault_secrets_provider::write::WriteMode;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli.command) {
        Ok(code) => code,
        Err(err) => {
            // The whole chain on one line; no backtrace, whatever RUST_BACKTRACE says.
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(command: Command) -> Result<ExitCode> {
    match command {
        Command::Serve(args) => {
            telemetry::init(&args.log.log_level, args.log.log_format)
                .map_err(anyhow::Error::msg)?;
            tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("cannot start the async runtime")?
                .block_on(serve(args))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Mount(args) => mount(&args),
    }
}

async fn serve(args: ServeArgs) -> Result<()> {
    let defaults = args.vault.defaults().map_err(anyhow::Error::msg)?;
    let key_file = args.version_key_file.clone().unwrap_or_else(|| {
        args.endpoint
            .parent()
            .map_or_else(|| PathBuf::from("."), PathBuf::from)
            .join("vault-secrets-provider.key")
    });
    let versioner = Versioner::load_or_create(&key_file)
        .with_context(|| format!("cannot load the version key {}", key_file.display()))?;
    let vault = Vault::new(VaultConfig {
        request_timeout: args.vault.vault_request_timeout,
        token_cache_size: args.token_cache_size,
    })
    .with_allowed_origins(defaults.allowed_vault_addrs.clone())
    .with_max_in_flight_per_namespace(usize::from(args.max_in_flight_per_namespace));
    let vault_check = args.readyz_vault.then(|| VaultTarget {
        address: defaults.vault_address.clone(),
        tls: defaults.tls.clone(),
    });
    let mut provider = Provider::new(vault, versioner, defaults)
        .with_lease_capacity(args.lease_cache_size, args.lease_cache_bytes)
        .with_mount_budget(args.max_mount_bytes, args.max_response_size)
        .with_write_mode(args.write_mode);
    if args.write_mode == WriteMode::Direct {
        provider = provider.with_volume_refresh(args.refresh_interval, args.max_tracked_volumes);
    }
    if args.sync_secrets {
        let config = KubeConfig::resolve(
            args.kube_api_server.clone(),
            args.kube_ca_file.clone(),
            args.kube_token_file.clone(),
        )?;
        tracing::info!(server = %config.server, "provider-side Secret sync on");
        provider = provider.with_secret_sync(SecretSync::new(config)?);
    }
    let provider = Arc::new(provider);
    if args.write_mode == WriteMode::Direct {
        tracing::info!(
            refresh_interval = %humantime::format_duration(args.refresh_interval),
            "--write-mode direct: the provider writes files into the pods' tmpfs volumes \
             and keeps them fresh"
        );
    }
    provider.spawn_background();
    tokio::spawn(sweep_idle_state(
        provider.clone(),
        args.pod_state_idle_timeout,
        args.revoke_on_idle,
    ));

    let serving = Serving::default();
    let health = admin::bind_health(args.health_addr)
        .await
        .with_context(|| format!("cannot listen on --health-addr {}", args.health_addr))?;
    let health_addr = health.local_addr()?;
    tracing::info!(%health_addr, "health and metrics endpoint listening");
    tokio::spawn(admin::serve_health(
        health,
        Arc::new(Health {
            serving: serving.clone(),
            endpoint: args.endpoint.clone(),
            provider: provider.clone(),
            vault_check,
        }),
    ));

    let listener = server::bind(&args.endpoint, args.endpoint_permissions)
        .with_context(|| format!("cannot create socket {}", args.endpoint.display()))?;
    let config = ServerConfig {
        endpoint: args.endpoint.clone(),
        socket_mode: args.endpoint_permissions,
        mount_timeout: args.mount_timeout,
        drain_timeout: args.mount_timeout + std::time::Duration::from_secs(5),
        max_response_bytes: args.max_response_size,
        allowed_peer_uids: args.allowed_peer_uids.clone(),
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

/// `mount`: exit 0 when the files are written, 1 when the Mount fails (with
/// the message a pod's events would show) or anything else goes wrong.
fn mount(args: &MountArgs) -> Result<ExitCode> {
    telemetry::init(&args.log_level, LogFormat::Text).map_err(anyhow::Error::msg)?;
    let result = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?
        .block_on(local::run(args))?;
    match result {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(err) => {
            let status = tonic::Status::from(err);
            eprintln!("Mount failed: {:?}: {}", status.code(), status.message());
            Ok(ExitCode::FAILURE)
        }
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
