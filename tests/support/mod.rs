//! Shared helpers for the integration tests (`mod support;` in each test file).
//!
//! - `openbao`: a real OpenBao server (the run-wide one that `scripts/with-openbao.sh`
//!   starts, or private ones a test owns) and root-token admin calls to set it up.
//! - `provider`: our provider binary as a process, the driver's real provider client
//!   (v1.5 and v1.6 builds from `tests/driver-client/`), and tmpfs volumes.
//! - `secrets`: every secret the tests create (secret IDs, tokens, values), so that each
//!   provider's log is checked for leaks when the provider is dropped.
pub mod openbao;
pub mod provider;
pub mod secrets;
