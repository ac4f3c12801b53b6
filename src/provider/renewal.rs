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
use tokio::time::Instant;

use super::Provider;
use crate::telemetry::metrics::{Renewed, metrics};
use crate::vault::Identity;
use crate::vault::leases::{Lease, LeaseKey};

/// Longest wait between sweeps (an entry added meanwhile is found by then).
const MAX_SWEEP: Duration = Duration::from_secs(1);
/// Shortest wait between sweeps: each is a scan of both caches.
const MIN_SWEEP: Duration = Duration::from_millis(100);
/// Lease renewals running at once.
const CONCURRENCY: usize = 8;

/// Sweeps forever: at the next entry's renewal point, at most a second and
/// at least 100 ms after the last sweep (a token with a TTL of seconds must
/// be renewed within the fraction of a second it allows).
pub(super) async fn run(provider: Arc<Provider>) {
    loop {
        let started = Instant::now();
        let next = provider.renew_due_and_next().await;
        let wake = next
            .unwrap_or(started + MAX_SWEEP)
            .clamp(started + MIN_SWEEP, started + MAX_SWEEP);
        tokio::time::sleep_until(wake).await;
    }
}

impl Provider {
    /// Renews every token, then every lease, that is due now; returns how
    /// many renewals succeeded and failed.
    pub async fn renew_due(&self) -> (usize, usize) {
        let (tokens, _) = self.vault.tokens().due_and_next();
        let (leases, _) = self.leases.due_and_next();
        self.renew(tokens, leases).await
    }

    /// [`renew_due`](Self::renew_due); returns when the next entry is due.
    async fn renew_due_and_next(&self) -> Option<Instant> {
        let (tokens, next_token) = self.vault.tokens().due_and_next();
        let (leases, next_lease) = self.leases.due_and_next();
        self.renew(tokens, leases).await;
        next_token.into_iter().chain(next_lease).min()
    }

    async fn renew(&self, tokens: Vec<Identity>, leases: Vec<(LeaseKey, Lease)>) -> (usize, usize) {
        let (tokens_ok, tokens_failed) = self.vault.renew_tokens(tokens).await;
        for (ok, n) in [(true, tokens_ok), (false, tokens_failed)] {
            for _ in 0..n {
                metrics().background_renewal(Renewed::Token, ok);
            }
        }
        let results = futures::stream::iter(leases)
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
