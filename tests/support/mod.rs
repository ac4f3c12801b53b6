//! Shared helpers for the integration tests (`mod support;` in each test file).
//!
//! `openbao`: a real OpenBao server (the run-wide one that `scripts/with-openbao.sh`
//! starts, or private ones a test owns) and root-token admin calls to set it up.
pub mod openbao;
