//! The token cache: one Vault token per identity, reused until shortly before
//! it expires, replaced after a 403, and obtained by at most one login at a
//! time per identity (concurrent Mounts wait for that login instead of
//! starting their own).

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use secrecy::SecretString;
use tokio::time::Instant;

use super::VaultError;
use crate::request::{Namespace, VaultTarget};

/// Who a token belongs to. Credentials are kept only as a digest, so the key
/// itself holds nothing secret.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Identity {
    /// The Vault server.
    pub target: VaultTarget,
    /// Namespace of the login.
    pub namespace: Option<Namespace>,
    /// Auth mount.
    pub mount: String,
    /// Non-secret principal: AppRole role ID, or role name.
    pub principal: String,
    /// SHA-256 of the secret credential (secret ID or JWT).
    pub credential_digest: [u8; 32],
}

/// A token as Vault issued it.
#[derive(Clone)]
pub struct Token {
    /// The token; never logged.
    pub secret: Arc<SecretString>,
    /// Lifetime Vault granted (`lease_duration`); zero means it does not expire.
    pub ttl: Duration,
}

struct Entry {
    token: Option<(Token, Instant)>,
    last_used: Instant,
}

struct Slot {
    entry: Mutex<Entry>,
    /// Held while logging in, so one identity logs in once at a time.
    login: tokio::sync::Mutex<()>,
}

/// Bounded map of identity → token.
pub struct TokenCache {
    slots: Mutex<HashMap<Identity, Arc<Slot>>>,
    capacity: usize,
}

/// Whether a token came from the cache or from a login just now (a fresh
/// token that gets a 403 means a policy denial, not a stale token).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// Reused.
    Cached,
    /// Obtained by a login during this call.
    Fresh,
}

impl TokenCache {
    /// A cache holding at most `capacity` identities.
    pub fn new(capacity: usize) -> Self {
        Self {
            slots: Mutex::new(HashMap::new()),
            capacity: capacity.max(1),
        }
    }

    /// Number of identities held.
    pub fn len(&self) -> usize {
        self.slots.lock().expect("token cache lock").len()
    }

    /// Whether the cache is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Returns a usable token for `identity`, calling `login` only if there is
    /// none; concurrent callers for one identity share a single login.
    pub async fn get_or_login<F, Fut>(
        &self,
        identity: &Identity,
        login: F,
    ) -> Result<(Token, Origin), VaultError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Token, VaultError>>,
    {
        let slot = self.slot(identity);
        if let Some(token) = Self::usable(&slot) {
            return Ok((token, Origin::Cached));
        }
        let _login = slot.login.lock().await;
        // Another caller may have logged in while we waited.
        if let Some(token) = Self::usable(&slot) {
            return Ok((token, Origin::Cached));
        }
        let token = login().await?;
        let mut entry = slot.entry.lock().expect("token slot lock");
        entry.token = Some((token.clone(), Instant::now()));
        entry.last_used = Instant::now();
        Ok((token, Origin::Fresh))
    }

    /// Forgets `token` for `identity` if it is still the cached one (a Mount
    /// that saw a 403 must not throw away a newer token another Mount got).
    pub fn invalidate(&self, identity: &Identity, token: &Token) {
        let slot = self.slot(identity);
        let mut entry = slot.entry.lock().expect("token slot lock");
        if entry
            .token
            .as_ref()
            .is_some_and(|(cached, _)| Arc::ptr_eq(&cached.secret, &token.secret))
        {
            entry.token = None;
        }
    }

    fn slot(&self, identity: &Identity) -> Arc<Slot> {
        let mut slots = self.slots.lock().expect("token cache lock");
        if let Some(slot) = slots.get(identity) {
            return slot.clone();
        }
        if slots.len() >= self.capacity {
            Self::evict(&mut slots);
        }
        let slot = Arc::new(Slot {
            entry: Mutex::new(Entry {
                token: None,
                last_used: Instant::now(),
            }),
            login: tokio::sync::Mutex::new(()),
        });
        slots.insert(identity.clone(), slot.clone());
        slot
    }

    /// Drops the least recently used tenth of the identities. Runs only when
    /// the cache is full, so its linear scan is rare.
    fn evict(slots: &mut HashMap<Identity, Arc<Slot>>) {
        let mut by_age: Vec<(Instant, Identity)> = slots
            .iter()
            .map(|(id, slot)| {
                (
                    slot.entry.lock().expect("token slot lock").last_used,
                    id.clone(),
                )
            })
            .collect();
        by_age.sort_by_key(|(used, _)| *used);
        let drop_count = (slots.len() / 10).max(1);
        for (_, id) in by_age.into_iter().take(drop_count) {
            slots.remove(&id);
        }
    }

    fn usable(slot: &Slot) -> Option<Token> {
        let mut entry = slot.entry.lock().expect("token slot lock");
        let now = Instant::now();
        let (token, obtained) = entry.token.as_ref()?;
        if !token.ttl.is_zero() && now >= *obtained + refresh_after(token.ttl) {
            return None;
        }
        let token = token.clone();
        entry.last_used = now;
        Some(token)
    }
}

/// How long a token is reused: until 80% of its TTL has passed (at least two
/// seconds before expiry), so no request goes out with a token about to die.
fn refresh_after(ttl: Duration) -> Duration {
    let margin = (ttl / 5).max(Duration::from_secs(2)).min(ttl);
    ttl - margin
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn identity(principal: &str) -> Identity {
        Identity {
            target: VaultTarget {
                address: url::Url::parse("http://127.0.0.1:1").unwrap(),
                tls: Default::default(),
            },
            namespace: None,
            mount: "approle".into(),
            principal: principal.into(),
            credential_digest: [0; 32],
        }
    }

    fn token(ttl_secs: u64) -> Token {
        Token {
            secret: Arc::new(SecretString::from("t".to_owned())),
            ttl: Duration::from_secs(ttl_secs),
        }
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
                        .get_or_login(&identity("a"), || async {
                            logins.fetch_add(1, Ordering::SeqCst);
                            tokio::task::yield_now().await;
                            Ok(token(3600))
                        })
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
    async fn token_is_replaced_before_it_expires() {
        let cache = TokenCache::new(10);
        let id = identity("a");
        let (_, origin) = cache
            .get_or_login(&id, || async { Ok(token(100)) })
            .await
            .unwrap();
        assert_eq!(origin, Origin::Fresh);
        tokio::time::advance(Duration::from_secs(79)).await;
        let (_, origin) = cache
            .get_or_login(&id, || async { Ok(token(100)) })
            .await
            .unwrap();
        assert_eq!(origin, Origin::Cached);
        tokio::time::advance(Duration::from_secs(2)).await;
        let (_, origin) = cache
            .get_or_login(&id, || async { Ok(token(100)) })
            .await
            .unwrap();
        assert_eq!(origin, Origin::Fresh);
    }

    #[tokio::test]
    async fn invalidate_only_drops_the_failed_token() {
        let cache = TokenCache::new(10);
        let id = identity("a");
        let (old, _) = cache
            .get_or_login(&id, || async { Ok(token(0)) })
            .await
            .unwrap();
        cache.invalidate(&id, &old);
        let (new, origin) = cache
            .get_or_login(&id, || async { Ok(token(0)) })
            .await
            .unwrap();
        assert_eq!(origin, Origin::Fresh);
        cache.invalidate(&id, &old); // stale: must keep `new`
        let (again, origin) = cache
            .get_or_login(&id, || async { Ok(token(0)) })
            .await
            .unwrap();
        assert_eq!(origin, Origin::Cached);
        assert!(Arc::ptr_eq(&new.secret, &again.secret));
    }

    #[tokio::test]
    async fn cache_is_bounded() {
        let cache = TokenCache::new(20);
        for i in 0..100 {
            cache
                .get_or_login(&identity(&i.to_string()), || async { Ok(token(0)) })
                .await
                .unwrap();
        }
        assert!(cache.len() <= 20, "len {}", cache.len());
    }

    #[tokio::test]
    async fn failed_login_is_not_cached() {
        let cache = TokenCache::new(10);
        let id = identity("a");
        let err = cache
            .get_or_login(&id, || async { Err(VaultError::LoginRefused("no".into())) })
            .await;
        assert!(err.is_err());
        let (_, origin) = cache
            .get_or_login(&id, || async { Ok(token(0)) })
            .await
            .unwrap();
        assert_eq!(origin, Origin::Fresh);
    }
}
