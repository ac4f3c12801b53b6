//! Shared helpers for the integration tests (`mod support;` in each test file).
//!
//! - `openbao`: a real OpenBao server (the run-wide one that `scripts/with-openbao.sh`
//!   starts, or private ones a test owns) and root-token admin calls to set it up.
//! - `provider`: our provider binary as a process, the driver's real provider client
//!   (v1.5 and v1.6 builds from `tests/driver-client/`), and tmpfs volumes.
//! - `kube`: the run-wide kube-apiserver that `scripts/with-kubernetes.sh` starts, the
//!   driver's cluster objects from its own manifests, and the real driver binary
//!   (v1.5 and v1.6) with `kubelet-sim` playing kubelet.
pub mod kube;
pub mod openbao;
pub mod provider;
