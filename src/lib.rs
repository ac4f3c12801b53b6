//! vault-secrets-provider: a HashiCorp Vault / OpenBao provider for the
//! Kubernetes Secrets Store CSI Driver.
//!
//! The driver calls us over a Unix socket for every pod volume it mounts. The
//! modules follow one Mount through the provider, top to bottom; a module only
//! names modules below it (`tests/layers.rs` checks that there are no cycles):
//!
//! - [`admin`]: the HTTP endpoint for probes and metrics (`/healthz`,
//!   `/readyz`, `/metrics`), looking at the server and the provider.
//! - [`server`]: the Unix socket, the gRPC service (`Version`, `Mount`), the
//!   HTTP/2 `:authority` repair older drivers need, the optional peer-uid
//!   check, the per-Mount span and log line, and graceful shutdown.
//! - [`provider`]: the core: runs a plan: one Vault call per distinct source,
//!   concurrently, then renders files and versions, all or nothing; direct
//!   write mode around it; [`provider::MountError`] → gRPC status.
//! - [`vault`]: the Vault client: HTTP transport and TLS, logins and the token
//!   cache, per-pod certificates and leases, single flight, retries.
//! - [`render`]: Vault response → file bytes.
//! - [`write`]: `--write-mode direct`'s filesystem work: the files written into
//!   the pod's tmpfs with the driver's atomic `..data` layout.
//! - [`sync`]: provider-side sync: the files applied as a Kubernetes Secret
//!   owned by the pod (`syncSecretName`, `serve --sync-secrets`).
//! - [`version`]: keyed object versions that reveal nothing of the content.
//! - [`request`]: the driver's `attributes`, `secrets` and `permission` parsed
//!   once into a typed [`request::MountPlan`]; everything after works on it.
//! - [`telemetry`]: log setup and Prometheus metrics (imports nothing else
//!   from the crate).
//! - [`local`]: the `mount` subcommand: a SecretProviderClass file rendered
//!   into a directory through the same plan and Mount, without a driver.
//! - [`cli`]: the command line.
#![forbid(unsafe_code)]
#![deny(rust_2018_idioms)]

pub mod admin;
pub mod cli;
pub mod local;
pub mod proto;
pub mod provider;
pub mod render;
pub mod request;
pub mod server;
pub mod sync;
pub mod telemetry;
pub mod vault;
pub mod version;
pub mod write;
