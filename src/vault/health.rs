//! Vault's `sys/health`, for the provider's readiness probe (`--readyz-vault`).

use std::time::{Duration, Instant};

use super::Vault;
use super::error::{VaultError, transport_error};
use super::http::Endpoint;
use crate::request::VaultTarget;
use crate::telemetry::metrics::{Operation, metrics};

impl Vault {
    /// Whether the Vault at `target` answers and can serve requests:
    /// initialized and unsealed (a standby counts, it forwards to the active
    /// node). Sent without token or namespace; `timeout` bounds the request.
    pub async fn health(&self, target: &VaultTarget, timeout: Duration) -> Result<(), VaultError> {
        let Endpoint {
            http,
            base: mut url,
        } = self.http.endpoint(target).await?;
        url.path_segments_mut()
            .map_err(|()| VaultError::Unexpected("Vault address cannot hold a path".into()))?
            .pop_if_empty()
            .extend(["v1", "sys", "health"]);
        url.set_query(Some("standbyok=true&perfstandbyok=true"));
        let started = Instant::now();
        let sent = http.get(url).timeout(timeout).send().await;
        let status = sent.as_ref().ok().map(|r| r.status().as_u16());
        metrics().vault_request(Operation::Health, status, started.elapsed());
        let response = sent.map_err(|err| transport_error(&err, "GET sys/health"))?;
        match response.status().as_u16() {
            200 => Ok(()),
            501 => Err(VaultError::Unavailable("Vault is not initialized".into())),
            503 => Err(VaultError::Unavailable("Vault is sealed".into())),
            code => Err(VaultError::Unavailable(format!(
                "sys/health answered HTTP {code}"
            ))),
        }
    }
}
