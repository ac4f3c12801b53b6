//! The token cache: one Vault token per identity.
//!
//! A token is reused until about two thirds of its TTL (with jitter, so many
//! identities do not renew in lockstep), then renewed with `renew-self` by
//! the next caller; when it cannot be renewed (not renewable, renewal
//! refused, or capped by its max TTL and about to expire) a fresh login
//! replaces it. A token Vault refuses (403) is dropped. At most one login or
//! renewal runs per identity: concurrent Mounts wait for it instead of
//! starting their own.
//!
//! Tenants share the cache fairly: an identity holds a place only after a
//! successful login (a failed one leaves nothing), identities are per pod
//! namespace, and one namespace holds at most a quarter of the places, so a
//! namespace that floods the cache evicts its own tokens, not others'.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use secrecy::SecretString;
use tokio::time::Instant;

use super::VaultError;
use super::fair::Tenant;
use super::slots::{Slot, SlotMap, after};
use crate::request::{Namespace, VaultTarget};

/// Who a token belongs to. Credentials are kept only as a digest, so the key
/// itself holds nothing secret.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Identity {
    /// The pod namespace the token serves: tokens are never shared across
    /// namespaces, even for the same credentials.
    pub tenant: Tenant,
    /// The Vault server.
    pub target: VaultTarget,
    /// Namespace of the login.
    pub namespace: Option<Namespace>,
    /// Auth mount path.
    pub auth_mount: String,
    /// Non-secret principal: AppRole role ID, or method, role, audience and pod UID.
    pub principal: String,
    /// SHA-256 of the secret credential (secret ID; the JWT only for a
    /// service-account login without a pod UID).
    pub credential_digest: [u8; 32],
}

/// A token as Vault issued it.
#[derive(Clone)]
pub struct Token {
    /// The token; never logged.
    pub secret: Arc<SecretString>,
    /// Lifetime Vault granted (`lease_duration`); zero means it does not expire.
    pub ttl: Duration,
    /// Whether `renew-self` can extend it.
    pub renewable: bool,
    /// The pod namespace it serves: its requests count against that
    /// namespace's share of the requests in flight.
    pub tenant: Tenant,
}

/// What the cache does with a token that reached its renewal time.
pub enum Refresh {
    /// Renewed: Vault granted this TTL from now.
    Renewed(Duration),
    /// Renewal is impossible or failed: log in again.
    Login,
}

struct Cached {
    token: Token,
    /// When the next caller should renew or replace it.
    refresh_at: Instant,
    /// When Vault will stop accepting it (`None`: never).
    expires_at: Option<Instant>,
    /// TTL the last login granted, requested again on renewal.
    period: Duration,
    /// Background renewals failed in a row, and when to try again.
    failures: u32,
    retry_at: Option<Instant>,
}

/// Bounded map of identity → token. A slot's lock is held while logging in
/// or renewing, so one identity does that once at a time.
pub struct TokenCache {
    slots: SlotMap<Identity, Cached>,
}

/// Whether a token came from the cache or from a login just now (a fresh
/// token that gets a 403 means a policy denial, not a stale token).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// Reused (possibly renewed).
    Cached,
    /// Obtained by a login during this call.
    Fresh,
}

impl TokenCache {
    /// A cache holding at most `capacity` identities, at most a quarter of
    /// them (at least one) of one pod namespace.
    pub fn new(capacity: usize) -> Self {
        Self {
            slots: SlotMap::per_tenant(capacity, capacity / 4, |identity: &Identity| {
                identity.tenant.clone()
            }),
        }
    }

    /// Number of identities held.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether the cache is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Returns a usable token for `identity`. A cached token past its refresh
    /// time goes through `renew`; a missing or unrenewable one through
    /// `login`. Concurrent callers for one identity share that work.
    pub async fn get<L, LF, R, RF>(
        &self,
        identity: &Identity,
        login: L,
        renew: R,
    ) -> Result<(Token, Origin), VaultError>
    where
        L: FnOnce() -> LF,
        LF: Future<Output = Result<Token, VaultError>>,
        R: FnOnce(Token) -> RF,
        RF: Future<Output = Refresh>,
    {
        let slot = self.slots.slot(identity);
        if let Some(token) = Self::fresh(&slot) {
            return Ok((token, Origin::Cached));
        }
        let _refreshing = slot.busy.lock().await;
        // Another caller may have refreshed it while we waited.
        if let Some(token) = Self::fresh(&slot) {
            return Ok((token, Origin::Cached));
        }
        if let Some((token, period)) = Self::renewable(&slot)
            && let Refresh::Renewed(granted) = renew(token.clone()).await
        {
            Self::renewed(&slot, granted, period);
            slot.entry().last_used = Instant::now();
            return Ok((token, Origin::Cached));
        }
        let token = match login().await {
            Ok(token) => token,
            Err(err) => {
                // A failed login holds no place in the cache (unless a
                // token is still there, e.g. one a refused renewal left).
                drop(_refreshing);
                drop(slot);
                self.slots.remove_if_unused(identity);
                return Err(err);
            }
        };
        let now = Instant::now();
        let cached = Cached {
            refresh_at: if token.ttl.is_zero() {
                after(now, Duration::from_secs(365 * 24 * 3600))
            } else {
                after(now, refresh_delay(token.ttl))
            },
            expires_at: (!token.ttl.is_zero()).then(|| after(now, token.ttl)),
            period: token.ttl,
            token: token.clone(),
            failures: 0,
            retry_at: None,
        };
        {
            let mut entry = slot.entry();
            entry.value = Some(cached);
            entry.last_used = now;
        }
        self.slots.admit(identity, &slot);
        Ok((token, Origin::Fresh))
    }

    /// Identities whose token is due for renewal and can be renewed, now
    /// (for the background renewal; failed ones wait for their backoff).
    pub fn due(&self) -> Vec<Identity> {
        self.due_and_next().0
    }

    /// [`due`](Self::due), and when the next renewable token comes due.
    pub fn due_and_next(&self) -> (Vec<Identity>, Option<Instant>) {
        let now = Instant::now();
        let mut next: Option<Instant> = None;
        let due = self
            .slots
            .select(|_, cached: &Cached| {
                if !cached.token.renewable || !cached.alive(now) {
                    return None;
                }
                let at = cached.refresh_at.max(cached.retry_at.unwrap_or(now));
                if at > now {
                    next = Some(next.map_or(at, |n| n.min(at)));
                    return None;
                }
                Some(())
            })
            .into_iter()
            .map(|(identity, _, ())| identity)
            .collect();
        (due, next)
    }

    /// Renews `identity`'s token in the background, through `renew`, if it
    /// is still due and no caller is refreshing it. `None`: nothing to do;
    /// `Some(true)`: renewed; `Some(false)`: Vault refused or could not be
    /// reached, and the next try waits (1 s, doubling up to a minute). Never
    /// logs in (the next Mount does) and is not a use: an idle pod's token
    /// still expires with its state.
    pub async fn renew_in_background<R, RF>(&self, identity: &Identity, renew: R) -> Option<bool>
    where
        R: FnOnce(Token) -> RF,
        RF: Future<Output = Refresh>,
    {
        let slot = self.slots.peek_slot(identity)?;
        let _refreshing = slot.busy.try_lock().ok()?;
        if Self::fresh_untouched(&slot) {
            return None;
        }
        let (token, period) = Self::renewable(&slot)?;
        match renew(token).await {
            Refresh::Renewed(granted) => {
                Self::renewed(&slot, granted, period);
                Some(true)
            }
            Refresh::Login => {
                if let Some(cached) = slot.entry().value.as_mut() {
                    cached.failures = cached.failures.saturating_add(1);
                    cached.retry_at = Some(after(Instant::now(), backoff(cached.failures)));
                }
                Some(false)
            }
        }
    }

    /// Marks `identity`'s token as used now (a tracked volume keeps it from
    /// expiring with idle pod state).
    pub fn touch(&self, identity: &Identity) {
        if let Some(slot) = self.slots.peek_slot(identity) {
            slot.entry().last_used = Instant::now();
        }
    }

    /// Whether `identity` has a token that can still be used or renewed
    /// without a new login.
    pub fn usable(&self, identity: &Identity) -> bool {
        let now = Instant::now();
        self.slots
            .peek(identity, |cached| {
                now < cached.refresh_at || cached.alive(now)
            })
            .unwrap_or(false)
    }

    /// Records a renewal that granted `granted`. A grant shorter than asked
    /// means the max TTL is near: the token is used until shortly before it
    /// ends, then replaced by a login.
    fn renewed(slot: &Slot<Cached>, granted: Duration, period: Duration) {
        let now = Instant::now();
        let refresh_at = if granted.saturating_add(Duration::from_secs(1)) >= period {
            after(now, refresh_delay(granted))
        } else {
            after(now, granted.saturating_sub(safety_margin(granted)))
        };
        let mut entry = slot.entry();
        if let Some(cached) = entry.value.as_mut() {
            cached.refresh_at = refresh_at;
            cached.expires_at = Some(after(now, granted));
            cached.failures = 0;
            cached.retry_at = None;
        }
    }

    /// Whether the cached token is before its refresh time (without marking a use).
    fn fresh_untouched(slot: &Slot<Cached>) -> bool {
        let now = Instant::now();
        slot.entry()
            .value
            .as_ref()
            .is_some_and(|cached| now < cached.refresh_at)
    }

    /// Forgets `token` for `identity` if it is still the cached one (a Mount
    /// that saw a 403 must not throw away a newer token another Mount got).
    pub fn invalidate(&self, identity: &Identity, token: &Token) {
        let slot = self.slots.slot(identity);
        let mut entry = slot.entry();
        if entry
            .value
            .as_ref()
            .is_some_and(|cached| Arc::ptr_eq(&cached.token.secret, &token.secret))
        {
            entry.value = None;
        }
    }

    /// The cached token for `identity`, if any, without refreshing it.
    pub fn peek(&self, identity: &Identity) -> Option<Token> {
        self.slots.peek(identity, |cached| cached.token.clone())
    }

    /// Removes and returns every cached token (for revocation at shutdown).
    pub fn drain(&self) -> Vec<(Identity, Token)> {
        tokens(self.slots.drain())
    }

    /// Drops identities unused for longer than `idle`; returns their tokens.
    pub fn expire_idle(&self, idle: Duration) -> Vec<(Identity, Token)> {
        tokens(self.slots.expire_idle(idle))
    }

    /// The cached token if it is before its refresh time.
    fn fresh(slot: &Slot<Cached>) -> Option<Token> {
        let mut entry = slot.entry();
        let now = Instant::now();
        let cached = entry.value.as_ref()?;
        if now >= cached.refresh_at {
            return None;
        }
        let token = cached.token.clone();
        entry.last_used = now;
        Some(token)
    }

    /// The cached token if renewing it may help: renewable, not yet expired,
    /// and not already capped (a capped token's refresh time is its end).
    fn renewable(slot: &Slot<Cached>) -> Option<(Token, Duration)> {
        let entry = slot.entry();
        let cached = entry.value.as_ref()?;
        (cached.token.renewable && cached.alive(Instant::now()))
            .then(|| (cached.token.clone(), cached.period))
    }
}

impl Cached {
    /// Whether Vault will still accept the token a while longer.
    fn alive(&self, now: Instant) -> bool {
        self.expires_at
            .is_none_or(|end| now + safety_margin(self.period) < end)
    }
}

/// Wait before the next background try after `failures` failed ones (1 s,
/// doubling, at most a minute).
pub fn backoff(failures: u32) -> Duration {
    Duration::from_secs(1 << failures.clamp(1, 7).saturating_sub(1)).min(Duration::from_secs(60))
}

fn tokens(cached: Vec<(Identity, Cached)>) -> Vec<(Identity, Token)> {
    cached
        .into_iter()
        .map(|(identity, cached)| (identity, cached.token))
        .collect()
}

/// When to renew a token with this TTL: at 60–70% of it (jitter spreads the
/// renewals of many identities).
fn refresh_delay(ttl: Duration) -> Duration {
    let fraction = rand::random_range(0.60..0.70);
    ttl.mul_f64(fraction)
}

/// How long before expiry a token is no longer used.
fn safety_margin(ttl: Duration) -> Duration {
    (ttl / 10)
        .clamp(Duration::from_millis(500), Duration::from_secs(30))
        .min(ttl)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn identity(principal: &str) -> Identity {
        Identity {
            tenant: Tenant::new(Some("ns")),
            target: VaultTarget {
                address: url::Url::parse("http://127.0.0.1:1").unwrap(),
                tls: Default::default(),
            },
            namespace: None,
            auth_mount: "approle".into(),
            principal: principal.into(),
            credential_digest: [0; 32],
        }
    }

    fn token(ttl_secs: u64, renewable: bool) -> Token {
        Token {
            secret: Arc::new(SecretString::from("t".to_owned())),
            ttl: Duration::from_secs(ttl_secs),
            renewable,
            tenant: Tenant::default(),
        }
    }

    async fn no_renew(_: Token) -> Refresh {
        panic!("renewal not expected")
    }

    #[tokio::test]
    async fn concurrent_callers_share_one_login() {
        let cache = Arc::new(TokenCache::new(10));
        let logins = Arc::new(AtomicUsize::new(0));
        let tasks: Vec<_> = (0..50)
            .map(|_| {
                let cache = cache.clone();
                let logins = logins.clone();
                tokio::spawn(async move {
                    cache
                        .get(
                            &identity("a"),
                            || async {
                                logins.fetch_add(1, Ordering::SeqCst);
                                tokio::task::yield_now().await;
                                Ok(token(3600, true))
                            },
                            no_renew,
                        )
                        .await
                        .map(|(_, origin)| origin)
                })
            })
            .collect();
        let mut fresh = 0;
        for task in tasks {
            if task.await.unwrap().unwrap() == Origin::Fresh {
                fresh += 1;
            }
        }
        assert_eq!(logins.load(Ordering::SeqCst), 1);
        assert_eq!(fresh, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn renewed_at_two_thirds_then_replaced_at_max_ttl() {
        let cache = TokenCache::new(10);
        let id = identity("a");
        let (_, origin) = cache
            .get(&id, || async { Ok(token(90, true)) }, no_renew)
            .await
            .unwrap();
        assert_eq!(origin, Origin::Fresh);

        tokio::time::advance(Duration::from_secs(50)).await; // < 60% of 90 s
        let (_, origin) = cache
            .get(&id, || async { panic!("no login") }, no_renew)
            .await
            .unwrap();
        assert_eq!(origin, Origin::Cached);

        tokio::time::advance(Duration::from_secs(15)).await; // > 70%: renew
        let renewals = AtomicUsize::new(0);
        let (_, origin) = cache
            .get(
                &id,
                || async { panic!("no login") },
                |_| async {
                    renewals.fetch_add(1, Ordering::SeqCst);
                    Refresh::Renewed(Duration::from_secs(90))
                },
            )
            .await
            .unwrap();
        assert_eq!(
            (origin, renewals.load(Ordering::SeqCst)),
            (Origin::Cached, 1)
        );

        // Renewal capped by the max TTL: used until shortly before its end, then a login.
        tokio::time::advance(Duration::from_secs(64)).await;
        let (_, origin) = cache
            .get(
                &id,
                || async { panic!("no login") },
                |_| async { Refresh::Renewed(Duration::from_secs(20)) },
            )
            .await
            .unwrap();
        assert_eq!(origin, Origin::Cached);
        tokio::time::advance(Duration::from_secs(15)).await;
        let (_, origin) = cache
            .get(&id, || async { panic!("no login") }, no_renew)
            .await
            .unwrap();
        assert_eq!(origin, Origin::Cached, "still inside the capped lifetime");
        tokio::time::advance(Duration::from_secs(4)).await;
        let (_, origin) = cache
            .get(&id, || async { Ok(token(90, true)) }, no_renew)
            .await
            .unwrap();
        assert_eq!(
            origin,
            Origin::Fresh,
            "capped token is replaced by a login, not renewed again"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn unrenewable_or_refused_renewal_means_login() {
        let cache = TokenCache::new(10);
        let id = identity("a");
        cache
            .get(&id, || async { Ok(token(30, false)) }, no_renew)
            .await
            .unwrap();
        tokio::time::advance(Duration::from_secs(25)).await;
        let (_, origin) = cache
            .get(&id, || async { Ok(token(30, true)) }, no_renew)
            .await
            .unwrap();
        assert_eq!(origin, Origin::Fresh);
        tokio::time::advance(Duration::from_secs(25)).await;
        let (_, origin) = cache
            .get(
                &id,
                || async { Ok(token(30, true)) },
                |_| async { Refresh::Login },
            )
            .await
            .unwrap();
        assert_eq!(origin, Origin::Fresh);
    }

    #[tokio::test]
    async fn invalidate_only_drops_the_failed_token() {
        let cache = TokenCache::new(10);
        let id = identity("a");
        let (old, _) = cache
            .get(&id, || async { Ok(token(0, false)) }, no_renew)
            .await
            .unwrap();
        cache.invalidate(&id, &old);
        let (new, origin) = cache
            .get(&id, || async { Ok(token(0, false)) }, no_renew)
            .await
            .unwrap();
        assert_eq!(origin, Origin::Fresh);
        cache.invalidate(&id, &old); // stale: must keep `new`
        let (again, origin) = cache
            .get(&id, || async { Ok(token(0, false)) }, no_renew)
            .await
            .unwrap();
        assert_eq!(origin, Origin::Cached);
        assert!(Arc::ptr_eq(&new.secret, &again.secret));
    }

    #[tokio::test]
    async fn cache_is_bounded_and_drains() {
        let cache = TokenCache::new(20);
        for i in 0..100 {
            cache
                .get(
                    &identity(&i.to_string()),
                    || async { Ok(token(0, false)) },
                    no_renew,
                )
                .await
                .unwrap();
        }
        let held = cache.len();
        assert!((1..=20).contains(&held), "len {held}");
        assert_eq!(cache.drain().len(), held);
        assert!(cache.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn idle_identities_expire() {
        let cache = TokenCache::new(10);
        cache
            .get(&identity("old"), || async { Ok(token(0, false)) }, no_renew)
            .await
            .unwrap();
        tokio::time::advance(Duration::from_secs(100)).await;
        cache
            .get(&identity("new"), || async { Ok(token(0, false)) }, no_renew)
            .await
            .unwrap();
        let expired = cache.expire_idle(Duration::from_secs(60));
        assert_eq!(expired.len(), 1);
        assert_eq!(expired[0].0.principal, "old");
        assert_eq!(cache.len(), 1);
    }

    fn identity_in(namespace: &str, principal: &str) -> Identity {
        Identity {
            tenant: Tenant::new(Some(namespace)),
            ..identity(principal)
        }
    }

    #[tokio::test]
    async fn failed_logins_take_no_place_and_evict_nothing() {
        // One place per namespace: a failed login must not take it.
        let cache = TokenCache::new(4);
        let kept = identity_in("b", "kept");
        cache
            .get(&kept, || async { Ok(token(0, false)) }, no_renew)
            .await
            .unwrap();
        for i in 0..100 {
            let err = cache
                .get(
                    &identity_in("b", &i.to_string()),
                    || async { Err(VaultError::LoginRefused("no".into())) },
                    no_renew,
                )
                .await;
            assert!(err.is_err());
        }
        assert_eq!(cache.len(), 1);
        let (_, origin) = cache
            .get(&kept, || async { panic!("no login") }, no_renew)
            .await
            .unwrap();
        assert_eq!(origin, Origin::Cached);
    }

    #[tokio::test]
    async fn one_namespace_holds_at_most_a_quarter() {
        let cache = TokenCache::new(8);
        let victim = identity_in("b", "victim");
        cache
            .get(&victim, || async { Ok(token(0, false)) }, no_renew)
            .await
            .unwrap();
        for i in 0..50 {
            cache
                .get(
                    &identity_in("a", &i.to_string()),
                    || async { Ok(token(0, false)) },
                    no_renew,
                )
                .await
                .unwrap();
        }
        assert!(cache.len() <= 3, "a holds at most 2: {}", cache.len());
        assert!(cache.peek(&victim).is_some());
    }

    #[tokio::test]
    async fn failed_login_is_not_cached() {
        let cache = TokenCache::new(10);
        let id = identity("a");
        let err = cache
            .get(
                &id,
                || async { Err(VaultError::LoginRefused("no".into())) },
                no_renew,
            )
            .await;
        assert!(err.is_err());
        let (_, origin) = cache
            .get(&id, || async { Ok(token(0, false)) }, no_renew)
            .await
            .unwrap();
        assert_eq!(origin, Origin::Fresh);
    }

    #[tokio::test(start_paused = true)]
    async fn background_renewal_renews_due_tokens_without_logging_in() {
        let cache = TokenCache::new(10);
        let login = || async { Ok(token(100, true)) };
        cache.get(&identity("a"), login, no_renew).await.unwrap();
        assert!(cache.due().is_empty());
        tokio::time::advance(Duration::from_secs(71)).await;
        assert_eq!(cache.due(), [identity("a")]);
        let renewed = cache
            .renew_in_background(&identity("a"), |_| async {
                Refresh::Renewed(Duration::from_secs(100))
            })
            .await;
        assert_eq!(renewed, Some(true));
        assert!(cache.due().is_empty());
        assert!(cache.usable(&identity("a")));

        // Refused: no login, a backoff, then due again.
        tokio::time::advance(Duration::from_secs(71)).await;
        let refused = cache
            .renew_in_background(&identity("a"), |_| async { Refresh::Login })
            .await;
        assert_eq!(refused, Some(false));
        assert!(cache.due().is_empty(), "backing off");
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(cache.due().len(), 1);
        // Past its TTL the token is no longer usable: a login is needed.
        tokio::time::advance(Duration::from_secs(30)).await;
        assert!(!cache.usable(&identity("a")));
        assert!(cache.due().is_empty(), "an expired token is not renewed");
    }
}
