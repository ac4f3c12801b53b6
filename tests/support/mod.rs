//! Shared helpers for the integration tests (`mod support;` in each test file).
//!
//! - `flavour`: which server the suites run against (OpenBao, or HashiCorp Vault with
//!   `VSP_TEST_SERVER=vault`), and namespaces as path prefixes on Vault, which has none.
//! - `openbao`: a real OpenBao server (the run-wide one that `scripts/with-openbao.sh`
//!   starts, or private ones a test owns) and root-token admin calls to set it up.
//! - `certs`: certificates and keys checked with `openssl` (validity, public keys).
//! - `deployment`: a namespace `admin/deployments/<unique>` with KV v2, an AppRole and
//!   its policy, as in the seed workflow (`Deployment`); the same in the root namespace of
//!   a server the test owns (`RootApp`); the pod attributes every Mount sends.
//! - `durable`: a disk-backed OpenBao a test may kill, restart, seal and unseal.
//! - `faults`: an HTTP fault proxy in front of OpenBao (statuses, resets, delays).
//! - `postgres`: a private PostgreSQL for the database engine's leased credentials.
//! - `provider`: our provider binary as a process, the driver's real provider client
//!   (v1.5 and v1.6 builds from `tests/driver-client/`), and tmpfs volumes. A Mount is
//!   usually one line: `mount_fresh(&provider, &d.attributes(objects), &d.secrets())`
//!   (the v1.6 client, a fresh volume, nothing written on failure), or
//!   `client.mount_fresh(..)` for each of `driver_clients()`.
//! - `secrets`: every secret the tests create (secret IDs, tokens, values), so that each
//!   provider's log is checked for leaks when the provider is dropped.
//! - `jwt`: service-account-like JWTs signed with a key the test holds (`jwt` auth).
//! - `kube`: the run-wide kube-apiserver that `scripts/with-kubernetes.sh` starts, the
//!   driver's cluster objects from its own manifests, and the real driver binary
//!   (v1.5 and v1.6) with `kubelet-sim` playing kubelet.
pub mod certs;
pub mod deployment;
pub mod durable;
pub mod faults;
pub mod flavour;
pub mod jwt;
pub mod kube;
pub mod openbao;
pub mod postgres;
pub mod provider;
pub mod secrets;
