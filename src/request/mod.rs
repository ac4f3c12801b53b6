//! Parses the driver's `MountRequest` once, at the edge, into a typed
//! [`MountPlan`]. Nothing after this module looks at the raw `attributes`,
//! `secrets` or `permission` strings, and nothing here ever logs them.
//!
//! - [`plan`](self::plan): the [`MountPlan`] and [`parse`], the entry point;
//! - [`auth`](self::auth): how the Mount logs in ([`AuthPlan`], [`Credentials`]);
//! - [`target`](self::target): which Vault, TLS, namespaces, provider defaults;
//! - [`objects`]: the `objects` YAML: what to fetch and how to render it
//!   (`nesting`: the linear pre-scan that runs before the YAML parser);
//! - [`path`]: file paths validated as the driver does;
//! - `params`: the raw parameter maps, size limits, Go-compatible scalars;
//! - [`error`](self::error): [`RequestError`], the one way a request is refused.

pub mod auth;
pub mod error;
mod nesting;
pub mod objects;
mod params;
pub mod path;
pub mod plan;
pub mod target;

pub use auth::{AuthMethod, AuthPlan, Credentials, ServiceAccountLogin};
pub use error::RequestError;
pub(crate) use error::quote;
pub use objects::{Encoding, Method, ObjectSpec, Selection, Source, TemplateSpec};
pub use path::FilePath;
pub use plan::{FileOwner, MountPlan, PodInfo, SyncSecret, parse};
pub use target::{AllowedOrigins, Defaults, Namespace, TlsSettings, VaultTarget};
