//! vault-secrets-provider: a HashiCorp Vault / OpenBao provider for the
//! Kubernetes Secrets Store CSI Driver.
//!
//! The driver calls us over a Unix socket for every pod volume it mounts. The
//! modules follow one Mount through the provider:
//!
//! - [`server`]: the Unix socket, the gRPC service (`Version`, `Mount`), the
//!   HTTP/2 `:authority` repair older drivers need, the optional peer-uid
//!   check, and graceful shutdown.
//! - [`request`]: the driver's `attributes`, `secrets` and `permission` parsed
//!   once into a typed [`request::MountPlan`]; everything after works on it.
//! - [`vault`]: the Vault client (per-request namespace, typed errors, bounded
//!   retries of transient failures), login and the token cache.
//! - [`mount`]: runs a plan: one Vault call per distinct source, concurrently,
//!   then renders files and versions, all or nothing.
//! - [`render`]: Vault response → file bytes.
//! - [`version`]: keyed object versions that reveal nothing of the content.
//! - [`sync`]: provider-side sync: the files applied as a Kubernetes Secret
//!   owned by the pod (`syncSecretName`, `serve --sync-secrets`).
//! - [`write`]: `--write-mode direct`: the files written into the pod's tmpfs
//!   by the provider itself, with the driver's atomic `..data` layout.
//! - [`error`]: the one place where failures become gRPC status codes.
//! - [`telemetry`]: logs (one span per Mount), Prometheus metrics, and the
//!   HTTP endpoint for probes and metrics.
//! - [`local`]: the `mount` subcommand: a SecretProviderClass file rendered
//!   into a directory through the same plan and Mount, without a driver.
//! - [`cli`]: the command line.
#![forbid(unsafe_code)]
#![deny(rust_2018_idioms)]

pub mod cli;
pub mod error;
pub mod local;
pub mod mount;
pub mod proto;
pub mod render;
pub mod request;
pub mod server;
pub mod sync;
pub mod telemetry;
pub mod vault;
pub mod version;
pub mod write;
