//! Bounded retries with jittered exponential backoff for transient Vault
//! failures.
//!
//! A Vault that is restarting, failing over, sealed for a moment or shedding
//! load answers with a refused connection, a reset, 429 or 5xx. One quick
//! retry usually succeeds, which spares the pod a `FailedMount` event and the
//! driver's own (slower) retry. The budget stays small, because the driver
//! retries `UNAVAILABLE` itself (3 times) and a Vault in trouble must not be
//! hammered by every node: at most [`RetryPolicy::attempts`] requests per
//! call, with full jitter so that many providers do not retry in lockstep.
//! The Mount's deadline bounds the whole thing: its timeout cancels a pending
//! backoff like any other wait.
//!
//! Only requests that are safe to repeat are repeated:
//! - any request whose connection could not be opened (nothing was sent);
//! - reads (`GET`, `LIST`) after a reset, a timeout or 412/429/500/502/503/504;
//! - logins after 429 or 503 (Vault refused before doing anything: sealed,
//!   standby, rate limit; no token was made and no secret-ID use was spent).
//!
//! Writes (`PUT`/`POST`, e.g. a PKI issue) are never repeated once sent: a
//! lost answer may hide a certificate that was issued anyway.

use std::time::Duration;

/// How many attempts a call gets and how long to wait between them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in total, the first included (at least 1).
    pub attempts: u32,
    /// Upper bound of the first backoff; it doubles with each failure.
    pub base: Duration,
    /// Upper bound of any backoff.
    pub cap: Duration,
}

impl Default for RetryPolicy {
    /// 3 attempts, backoff up to 100 ms then up to 200 ms (never above 1 s).
    fn default() -> Self {
        Self {
            attempts: 3,
            base: Duration::from_millis(100),
            cap: Duration::from_secs(1),
        }
    }
}

impl RetryPolicy {
    /// No retries at all.
    pub fn none() -> Self {
        Self {
            attempts: 1,
            ..Self::default()
        }
    }

    /// The longest wait after `failed` failed attempts (1 = after the first):
    /// `min(cap, base * 2^(failed-1))`.
    pub fn ceiling(&self, failed: u32) -> Duration {
        let doublings = failed.saturating_sub(1).min(31);
        self.base.saturating_mul(1u32 << doublings).min(self.cap)
    }

    /// The wait after `failed` failed attempts: uniform in `[0, ceiling]`
    /// ("full jitter").
    pub fn backoff(&self, failed: u32) -> Duration {
        let ceiling = self.ceiling(failed);
        if ceiling.is_zero() {
            return ceiling;
        }
        ceiling.mul_f64(rand::random_range(0.0..=1.0))
    }

    /// Whether a call that failed `failed` times, in a way that allows
    /// `retry`, gets another attempt.
    pub fn again(&self, failed: u32, retry: Retry, idempotent: bool) -> bool {
        failed < self.attempts
            && match retry {
                Retry::Never => false,
                Retry::IfIdempotent => idempotent,
                Retry::Always => true,
            }
    }
}

/// What a failed attempt allows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Retry {
    /// Not transient (4xx, TLS, bad response): retrying cannot help.
    Never,
    /// Transient, but the request may have reached Vault (reset, timeout,
    /// 5xx): only requests that are safe to repeat are repeated.
    IfIdempotent,
    /// Nothing reached Vault (connection refused), or Vault refused before
    /// acting: any request may be repeated.
    Always,
}

/// What a read's HTTP status allows.
pub fn for_status(status: u16) -> Retry {
    match status {
        412 | 429 | 500 | 502 | 503 | 504 => Retry::IfIdempotent,
        _ => Retry::Never,
    }
}

/// What a login's HTTP status allows: only refusals that mean Vault did
/// nothing (sealed or standby: 503; rate limited: 429).
pub fn for_login_status(status: u16) -> Retry {
    match status {
        429 | 503 => Retry::Always,
        _ => Retry::Never,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_budget_is_small() {
        let policy = RetryPolicy::default();
        assert_eq!(policy.attempts, 3);
        assert_eq!(policy.ceiling(1), Duration::from_millis(100));
        assert_eq!(policy.ceiling(2), Duration::from_millis(200));
        // The worst case of all waits of one call stays well under a second.
        let total: Duration = (1..policy.attempts).map(|n| policy.ceiling(n)).sum();
        assert!(total <= Duration::from_millis(300), "{total:?}");
    }

    #[test]
    fn ceiling_doubles_up_to_the_cap_without_overflow() {
        let policy = RetryPolicy {
            attempts: 100,
            base: Duration::from_millis(100),
            cap: Duration::from_secs(1),
        };
        let ceilings: Vec<u128> = (1..=6).map(|n| policy.ceiling(n).as_millis()).collect();
        assert_eq!(ceilings, [100, 200, 400, 800, 1000, 1000]);
        assert_eq!(policy.ceiling(0), Duration::from_millis(100));
        assert_eq!(policy.ceiling(u32::MAX), Duration::from_secs(1));
    }

    #[test]
    fn backoff_is_jittered_within_its_ceiling() {
        let policy = RetryPolicy::default();
        for failed in 1..=4 {
            let ceiling = policy.ceiling(failed);
            let waits: Vec<Duration> = (0..2000).map(|_| policy.backoff(failed)).collect();
            assert!(waits.iter().all(|w| *w <= ceiling), "failed={failed}");
            // Full jitter: spread over the whole range, not clustered at the top.
            let low = waits.iter().filter(|w| **w < ceiling / 4).count();
            let high = waits.iter().filter(|w| **w > ceiling * 3 / 4).count();
            assert!(
                low > 200 && high > 200,
                "failed={failed}: {low} low, {high} high"
            );
            let distinct: std::collections::HashSet<_> = waits.iter().collect();
            assert!(distinct.len() > 1000, "waits are not random");
        }
        let zero = RetryPolicy {
            base: Duration::ZERO,
            ..policy
        };
        assert_eq!(zero.backoff(1), Duration::ZERO);
    }

    #[test]
    fn only_safe_requests_are_repeated_and_only_within_the_budget() {
        let policy = RetryPolicy::default();
        assert!(policy.again(1, Retry::Always, false));
        assert!(policy.again(2, Retry::IfIdempotent, true));
        assert!(!policy.again(3, Retry::Always, true), "budget spent");
        assert!(!policy.again(1, Retry::IfIdempotent, false), "a write");
        assert!(!policy.again(1, Retry::Never, true));
        assert!(!RetryPolicy::none().again(1, Retry::Always, true));
    }

    #[test]
    fn statuses() {
        for status in [412, 429, 500, 502, 503, 504] {
            assert_eq!(for_status(status), Retry::IfIdempotent, "{status}");
        }
        for status in [200, 400, 401, 403, 404, 405, 501] {
            assert_eq!(for_status(status), Retry::Never, "{status}");
        }
        assert_eq!(for_login_status(503), Retry::Always);
        assert_eq!(for_login_status(429), Retry::Always);
        for status in [400, 403, 500, 502, 504] {
            assert_eq!(for_login_status(status), Retry::Never, "{status}");
        }
    }
}
