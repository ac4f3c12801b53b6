//! Background renewal, in both write modes: every second, the Vault tokens
//! and the leases of the pods served that have reached their renewal point
//! (`renewalPercent` of the lease, about two thirds of a token's TTL) are
//! renewed, without waiting for a Mount, until the pod's state is dropped
//! (`--pod-state-idle-timeout`; a renewal is not a use). Nothing is fetched
//! or issued here: a certificate, or a lease renewal cut short by its max
//! TTL, needs new files, which only a Mount (or, in direct mode, the volume's
//! own refresh) can deliver. Failures back off per entry and are counted.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;

use super::Provider;
use crate::telemetry::metrics::{Renewed, metrics};

/// How often the caches are swept for due entries.
const SWEEP: Duration = Duration::from_secs(1);
/// Lease renewals running at once.
const CONCURRENCY: usize = 8;

/// Sweeps forever.
pub(super) async fn run(provider: Arc<Provider>) {
    let mut ticks = tokio::time::interval(SWEEP);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        provider.renew_due().await;
    }
}

impl Provider {
    /// Renews every token, then every lease, that is due now; returns how
    /// many renewals succeeded and failed.
    pub async fn renew_due(&self) -> (usize, usize) {
        let (tokens_ok, tokens_failed) = self.vault.renew_due_tokens().await;
        for (ok, n) in [(true, tokens_ok), (false, tokens_failed)] {
            for _ in 0..n {
                metrics().background_renewal(Renewed::Token, ok);
            }
        }
        let results = futures::stream::iter(self.leases.due())
            .map(|(key, _)| async move {
                // A lease is renewed with the token of the identity that got it.
                let token = self.vault.tokens().peek(&key.identity)?;
                let key = &key;
                self.leases
                    .renew_in_background(key, |lease| async move {
                        self.vault
                            .renew_lease(
                                &key.identity.target,
                                &token,
                                key.source.namespace.as_ref(),
                                &lease.id,
                                lease.duration,
                            )
                            .await
                    })
                    .await
            })
            .buffer_unordered(CONCURRENCY)
            .collect::<Vec<_>>()
            .await;
        let (mut ok, mut failed) = (tokens_ok, tokens_failed);
        for result in results.into_iter().flatten() {
            metrics().background_renewal(Renewed::Lease, result.is_ok());
            match result {
                Ok(_) => ok += 1,
                Err(err) => {
                    failed += 1;
                    tracing::debug!(error = %err, "background lease renewal failed");
                }
            }
        }
        (ok, failed)
    }
}
