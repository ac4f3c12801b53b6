//! Per-pod cache of dynamic secrets: PKI certificates and leased credentials.
//!
//! The driver calls Mount again on every rotation poll (v1.5) or republish
//! (v1.6, about once a minute). Re-issuing a certificate each time would churn
//! pods (HashiCorp's provider issue #238) and pile up leases, so a response
//! that carries a certificate or a lease is kept for the pod that got it and
//! returned unchanged — same bytes, same version — until `renewalPercent` of
//! its lifetime has passed. Then a renewable lease is renewed; a certificate,
//! or a lease that cannot be renewed (or whose renewal was cut short by its
//! max TTL), is fetched anew. Plain KV reads are never cached.
//!
//! There is no Unmount call, so entries a pod stops asking for are dropped
//! after an idle time ([`LeaseCache::expire_idle`]).

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use tokio::time::Instant;

use super::compact::{Compact, Strings};
use super::slots::{SlotMap, after};
use super::{Identity, VaultError};
use crate::request::Source;

/// Default `renewalPercent`.
pub const DEFAULT_PERCENT: u8 = crate::request::objects::DEFAULT_RENEWAL_PERCENT;

/// One pod's copy of one dynamic source, fetched with one identity.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct LeaseKey {
    /// The pod.
    pub pod_uid: String,
    /// Who fetched it.
    pub identity: Identity,
    /// What was fetched.
    pub source: Source,
}

/// A lease Vault attached to a response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lease {
    /// `lease_id`.
    pub id: String,
    /// `lease_duration` as granted.
    pub duration: Duration,
    /// Whether `sys/leases/renew` can extend it.
    pub renewable: bool,
}

/// When a dynamic response is due, and its lease.
#[derive(Clone, Debug)]
pub struct Dynamic {
    /// When to renew or re-fetch.
    pub refresh_at: Instant,
    /// The lease, if any.
    pub lease: Option<Lease>,
    /// Whether the lease is still worth renewing (false once renewal was cut
    /// short by the max TTL, or for certificates).
    pub renew: bool,
}

/// What happened on a [`LeaseCache::get`], for metrics and tests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The cached response was returned.
    Reused,
    /// The lease was renewed and the cached response returned.
    Renewed,
    /// Fetched from Vault (first time, expired, or not dynamic).
    Fetched,
}

/// Whether `response` is dynamic, and if so when it should be refreshed.
/// `percent` is `renewalPercent`.
pub fn classify(response: &Arc<Value>, percent: u8, now: Instant) -> Option<Dynamic> {
    let fraction = f64::from(percent) / 100.0;
    let lease = response["lease_id"]
        .as_str()
        .filter(|id| !id.is_empty())
        .zip(response["lease_duration"].as_u64().filter(|d| *d > 0))
        .map(|(id, duration)| Lease {
            id: id.to_owned(),
            duration: Duration::from_secs(duration),
            renewable: response["renewable"].as_bool().unwrap_or(false),
        });
    let data = &response["data"];
    if data["certificate"].is_string()
        && let Some(expiration) = data["expiration"].as_u64()
    {
        // Lifetime from the certificate's own validity window: PKI
        // backdates `not_before`, and that is the window clients check.
        let unix_now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs_f64();
        let start = data["not_before"]
            .as_u64()
            .map_or(unix_now, |t| t as f64)
            .min(unix_now);
        let lifetime = (expiration as f64 - start).max(0.0);
        let refresh_unix = start + lifetime * fraction;
        let wait = (refresh_unix - unix_now).max(0.0);
        return Some(Dynamic {
            refresh_at: after(
                now,
                Duration::try_from_secs_f64(wait).unwrap_or(Duration::MAX),
            ),
            lease,
            renew: false,
        });
    }
    let lease = lease?;
    Some(Dynamic {
        refresh_at: after(now, lease.duration.mul_f64(fraction)),
        renew: lease.renewable,
        lease: Some(lease),
    })
}

/// A dynamic response as the cache keeps it: as compact JSON text, parsed
/// again on each reuse (microseconds, once per rotation poll). Every pod
/// keeps its own (up to `--lease-cache-size`, 10,000 by default), and a PKI
/// response held as text takes about 2.5 KiB against some 4 KiB parsed; its
/// CA chain, the same for every certificate of an issuer, is shared
/// ([`Compact`]), which leaves about 1.2 KiB each.
#[derive(Clone)]
struct Kept {
    dynamic: Dynamic,
    text: Arc<Compact>,
    /// `renewalPercent` it was fetched with.
    percent: u8,
    /// Background renewals failed in a row, and when to try again.
    failures: u32,
    retry_at: Option<Instant>,
}

impl Kept {
    fn new(dynamic: Dynamic, response: &Value, percent: u8, strings: &Strings) -> Self {
        Self {
            dynamic,
            text: Arc::new(Compact::new(response, strings)),
            percent,
            failures: 0,
            retry_at: None,
        }
    }

    /// This entry after a renewal of `lease` that granted `granted`, next
    /// due at `share` of it (`renewalPercent`, less any jitter). A grant
    /// shorter than asked means the max TTL is near: the lease is used until
    /// then, and new credentials are fetched instead of renewing again.
    fn renewed(self, lease: &Lease, granted: Duration, share: f64) -> Self {
        let capped = granted.saturating_add(Duration::from_secs(1)) < lease.duration;
        Self {
            dynamic: Dynamic {
                refresh_at: after(Instant::now(), granted.mul_f64(share)),
                renew: !capped,
                ..self.dynamic
            },
            failures: 0,
            retry_at: None,
            ..self
        }
    }

    /// Bytes it holds, its shared strings counted in full (the budget errs
    /// on the safe side).
    fn weight(&self) -> usize {
        self.text.len()
    }

    /// The response, as first returned.
    fn response(&self) -> Arc<Value> {
        Arc::new(self.text.value())
    }
}

/// Bounded map of (pod, identity, source) → dynamic response. A slot's lock
/// is held while fetching or renewing, so one pod's concurrent Mounts do it
/// once. Bounded twice: in entries (`--lease-cache-size`) and in bytes of
/// kept responses (`--lease-cache-bytes`), the least recently used going
/// first; a response bigger than the whole byte budget is not kept.
pub struct LeaseCache {
    slots: SlotMap<LeaseKey, Kept>,
    /// The byte budget.
    max_bytes: usize,
    /// Bytes kept: every value stored is added, every value replaced is
    /// taken off; entries dropped by eviction or expiry are not, so this may
    /// overcount until the next [`SlotMap::shrink_to`] recounts.
    bytes: AtomicUsize,
    /// Long strings shared between kept responses.
    strings: Strings,
}

impl LeaseCache {
    /// A cache of at most `capacity` entries and `max_bytes` of responses.
    pub fn new(capacity: usize, max_bytes: usize) -> Self {
        Self {
            // A namespace may hold a quarter: one flooding namespace cannot
            // push out the others' certificates and leases.
            slots: SlotMap::per_tenant(capacity, capacity / 4, |key: &LeaseKey| {
                key.identity.tenant.clone()
            }),
            max_bytes,
            bytes: AtomicUsize::new(0),
            strings: Strings::default(),
        }
    }

    /// Bytes of kept responses, recounted.
    pub fn bytes(&self) -> usize {
        let bytes = self.slots.shrink_to(usize::MAX, Kept::weight);
        self.bytes.store(bytes, Ordering::Relaxed);
        bytes
    }

    /// Accounts for a value stored in place of another, dropping the least
    /// recently used entries when over the byte budget.
    fn stored(&self, old: usize, new: usize) {
        let mut total = 0;
        let _ = self
            .bytes
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |bytes| {
                total = bytes.saturating_add(new).saturating_sub(old);
                Some(total)
            });
        if total > self.max_bytes {
            let kept = self.slots.shrink_to(self.max_bytes, Kept::weight);
            self.bytes.store(kept, Ordering::Relaxed);
        }
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The response for `key`: cached while fresh; renewed through `renew`
    /// (given the lease, returning the granted duration) when due and
    /// renewable; otherwise from `fetch`, and kept if it is dynamic.
    pub async fn get<F, FF, R, RF>(
        &self,
        key: &LeaseKey,
        percent: u8,
        fetch: F,
        renew: R,
    ) -> Result<(Arc<Value>, Outcome), VaultError>
    where
        F: FnOnce() -> FF,
        FF: Future<Output = Result<Arc<Value>, VaultError>>,
        R: FnOnce(Lease) -> RF,
        RF: Future<Output = Result<Duration, VaultError>>,
    {
        let slot = self.slots.slot(key);
        let _busy = slot.busy.lock().await;
        let now = Instant::now();
        let cached = {
            let mut entry = slot.entry();
            entry.last_used = now;
            entry.value.clone()
        };
        if let Some(cached) = cached {
            if now < cached.dynamic.refresh_at {
                return Ok((cached.response(), Outcome::Reused));
            }
            if let (true, Some(lease)) = (cached.dynamic.renew, cached.dynamic.lease.clone()) {
                match renew(lease.clone()).await {
                    Ok(granted) if !granted.is_zero() => {
                        let fraction = f64::from(percent) / 100.0;
                        let refreshed = cached.renewed(&lease, granted, fraction);
                        let response = refreshed.response();
                        tracing::debug!(
                            granted_s = granted.as_secs(),
                            capped = !refreshed.dynamic.renew,
                            "renewed lease"
                        );
                        slot.entry().value = Some(refreshed);
                        return Ok((response, Outcome::Renewed));
                    }
                    Ok(_) => {}
                    Err(err) => {
                        tracing::debug!(error = %err, "lease renewal failed; fetching new credentials")
                    }
                }
            }
        }
        let response = match fetch().await {
            Ok(response) => response,
            Err(err) => {
                // A failed fetch holds no place (an empty slot is not
                // counted, so it must not linger either).
                drop(_busy);
                drop(slot);
                self.slots.remove_if_unused(key);
                return Err(err);
            }
        };
        let kept = classify(&response, percent, Instant::now())
            .map(|dynamic| Kept::new(dynamic, &response, percent, &self.strings))
            .filter(|kept| kept.weight() <= self.max_bytes);
        let keep = kept.is_some();
        let new = kept.as_ref().map_or(0, Kept::weight);
        let old = std::mem::replace(&mut slot.entry().value, kept);
        self.stored(old.as_ref().map_or(0, Kept::weight), new);
        if keep {
            self.slots.admit(key, &slot);
        } else {
            // Static data is re-read every time; don't hold a slot for it.
            drop(_busy);
            drop(slot);
            self.slots.remove_if_unused(key);
        }
        Ok((response, Outcome::Fetched))
    }

    /// When `key`'s kept response is next due for renewal or re-fetch
    /// (`None` when nothing is kept for it).
    pub fn refresh_at(&self, key: &LeaseKey) -> Option<Instant> {
        self.slots.peek(key, |kept| kept.dynamic.refresh_at)
    }

    /// Renewable leases due now (for the background renewal; failed ones
    /// wait for their backoff).
    pub fn due(&self) -> Vec<(LeaseKey, Lease)> {
        self.due_and_next().0
    }

    /// [`due`](Self::due), and when the next renewable lease comes due.
    pub fn due_and_next(&self) -> (Vec<(LeaseKey, Lease)>, Option<Instant>) {
        let now = Instant::now();
        let mut next: Option<Instant> = None;
        let due = self
            .slots
            .select(|_, kept: &Kept| {
                let lease = kept.dynamic.lease.as_ref().filter(|_| kept.dynamic.renew)?;
                let at = kept.dynamic.refresh_at.max(kept.retry_at.unwrap_or(now));
                if at > now {
                    next = Some(next.map_or(at, |n| n.min(at)));
                    return None;
                }
                Some(lease.clone())
            })
            .into_iter()
            .map(|(key, _, lease)| (key, lease))
            .collect();
        (due, next)
    }

    /// Renews `key`'s lease in the background, through `renew`, if it is
    /// still due and no Mount is using it. `None`: nothing to do;
    /// `Some(Ok(granted))`: renewed (next due at `renewalPercent` of the
    /// grant, less up to 5% jitter so that many leases granted together do
    /// not come due together); `Some(Err)`: failed, and the next try waits
    /// (1 s, doubling up to a minute). The kept response stays as it is:
    /// a Mount that finds it due renews or fetches anew itself. Not a use:
    /// an idle pod's leases still go with its state.
    pub async fn renew_in_background<R, RF>(
        &self,
        key: &LeaseKey,
        renew: R,
    ) -> Option<Result<Duration, VaultError>>
    where
        R: FnOnce(Lease) -> RF,
        RF: Future<Output = Result<Duration, VaultError>>,
    {
        let slot = self.slots.peek_slot(key)?;
        let _busy = slot.busy.try_lock().ok()?;
        let kept = slot.entry().value.clone()?;
        let lease = kept.dynamic.lease.clone()?;
        if !kept.dynamic.renew || Instant::now() < kept.dynamic.refresh_at {
            return None;
        }
        let result = match renew(lease.clone()).await {
            Ok(granted) if granted.is_zero() => Err(VaultError::Unexpected(
                "Vault renewed the lease for 0 seconds".into(),
            )),
            other => other,
        };
        let mut entry = slot.entry();
        let Some(current) = entry.value.take() else {
            return Some(result);
        };
        entry.value = Some(match &result {
            Ok(granted) => {
                let share = f64::from(current.percent) / 100.0 * rand::random_range(0.95..=1.0);
                current.renewed(&lease, *granted, share)
            }
            Err(_) => {
                let failures = current.failures.saturating_add(1);
                Kept {
                    failures,
                    retry_at: Some(after(Instant::now(), super::tokens::backoff(failures))),
                    ..current
                }
            }
        });
        Some(result)
    }

    /// Drops entries unused for longer than `idle`; returns the leases they held.
    pub fn expire_idle(&self, idle: Duration) -> Vec<(LeaseKey, Lease)> {
        self.slots
            .expire_idle(idle)
            .into_iter()
            .filter_map(|(key, kept)| Some((key, kept.dynamic.lease?)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::{Method, VaultTarget};
    use serde_json::json;

    fn key() -> LeaseKey {
        LeaseKey {
            pod_uid: "pod".into(),
            identity: Identity {
                tenant: Default::default(),
                target: VaultTarget {
                    address: url::Url::parse("http://127.0.0.1:1").unwrap(),
                    tls: Default::default(),
                },
                namespace: None,
                auth_mount: "approle".into(),
                principal: "p".into(),
                credential_digest: [0; 32],
            },
            source: Source {
                namespace: None,
                path: "database/creds/app".into(),
                query: vec![],
                method: Method::Get,
                args: None,
            },
        }
    }

    fn leased(id: &str, duration: u64, renewable: bool) -> Arc<Value> {
        Arc::new(
            json!({"lease_id": id, "lease_duration": duration, "renewable": renewable, "data": {"username": id}}),
        )
    }

    async fn no_renew(_: Lease) -> Result<Duration, VaultError> {
        panic!("no renewal expected")
    }

    #[test]
    fn certificates_refresh_at_a_share_of_their_validity() {
        let now_unix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let response = Arc::new(json!({"lease_id": "", "lease_duration": 0, "data": {
            "certificate": "PEM", "not_before": now_unix - 30, "expiration": now_unix + 70}}));
        let now = Instant::now();
        let dynamic = classify(&response, 50, now).unwrap();
        let wait = dynamic.refresh_at - now;
        assert!(
            wait > Duration::from_secs(18) && wait < Duration::from_secs(21),
            "{wait:?}"
        );
        assert!(!dynamic.renew);
        let kv2 = Arc::new(json!({"data": {"k": "v"}, "lease_id": "", "lease_duration": 0}));
        let kv1 = Arc::new(json!({"data": {"k": "v"}, "lease_id": "", "lease_duration": 2764800}));
        assert!(classify(&kv2, 67, now).is_none());
        assert!(classify(&kv1, 67, now).is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn leases_are_reused_renewed_then_replaced() {
        let cache = LeaseCache::new(10, 1 << 20);
        let (first, outcome) = cache
            .get(
                &key(),
                50,
                || async { Ok(leased("a", 100, true)) },
                no_renew,
            )
            .await
            .unwrap();
        assert_eq!(outcome, Outcome::Fetched);

        tokio::time::advance(Duration::from_secs(49)).await;
        let (again, outcome) = cache
            .get(&key(), 50, || async { panic!("no fetch") }, no_renew)
            .await
            .unwrap();
        assert_eq!(outcome, Outcome::Reused);
        assert_eq!(first, again, "the same response");

        tokio::time::advance(Duration::from_secs(2)).await;
        let (renewed, outcome) = cache
            .get(
                &key(),
                50,
                || async { panic!("no fetch") },
                |lease| async move {
                    assert_eq!(lease.id, "a");
                    Ok(Duration::from_secs(100))
                },
            )
            .await
            .unwrap();
        assert_eq!(outcome, Outcome::Renewed);
        assert_eq!(first, renewed, "renewal keeps the credentials");

        // Capped renewal: used for its share, then new credentials.
        tokio::time::advance(Duration::from_secs(51)).await;
        let (_, outcome) = cache
            .get(
                &key(),
                50,
                || async { panic!("no fetch") },
                |_| async { Ok(Duration::from_secs(20)) },
            )
            .await
            .unwrap();
        assert_eq!(outcome, Outcome::Renewed);
        tokio::time::advance(Duration::from_secs(11)).await;
        let (replaced, outcome) = cache
            .get(
                &key(),
                50,
                || async { Ok(leased("b", 100, true)) },
                no_renew,
            )
            .await
            .unwrap();
        assert_eq!(outcome, Outcome::Fetched);
        assert_eq!(replaced["data"]["username"], "b");
    }

    #[tokio::test(start_paused = true)]
    async fn failed_renewal_fetches_new_credentials() {
        let cache = LeaseCache::new(10, 1 << 20);
        cache
            .get(&key(), 50, || async { Ok(leased("a", 10, true)) }, no_renew)
            .await
            .unwrap();
        tokio::time::advance(Duration::from_secs(6)).await;
        let (value, outcome) = cache
            .get(
                &key(),
                50,
                || async { Ok(leased("b", 10, true)) },
                |_| async { Err(VaultError::NotFound("lease not found".into())) },
            )
            .await
            .unwrap();
        assert_eq!(
            (outcome, value["data"]["username"].as_str()),
            (Outcome::Fetched, Some("b"))
        );
    }

    #[tokio::test]
    async fn static_responses_are_not_kept() {
        let cache = LeaseCache::new(10, 1 << 20);
        let kv =
            Arc::new(json!({"lease_id": "", "lease_duration": 0, "data": {"data": {"k": "v"}}}));
        let (_, outcome) = cache
            .get(&key(), 67, || async { Ok(kv.clone()) }, no_renew)
            .await
            .unwrap();
        assert_eq!(outcome, Outcome::Fetched);
        assert!(cache.is_empty());
    }

    #[tokio::test]
    async fn failed_fetches_leave_no_slot() {
        let cache = LeaseCache::new(10, usize::MAX);
        for pod in 0..100 {
            let key = LeaseKey {
                pod_uid: format!("pod-{pod}"),
                ..key()
            };
            let failed = cache
                .get(
                    &key,
                    67,
                    || async { Err(VaultError::Unavailable("down".into())) },
                    no_renew,
                )
                .await;
            assert!(failed.is_err());
        }
        assert_eq!(cache.slots.held(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn the_byte_budget_drops_the_least_recently_used() {
        let one = Kept::new(
            classify(&leased("x", 100, true), 50, Instant::now()).unwrap(),
            &leased("x", 100, true),
            50,
            &Strings::default(),
        )
        .weight();
        // Room for three responses; entries for ten in this (one) namespace,
        // which may hold a quarter of the capacity.
        let cache = LeaseCache::new(40, one * 3 + one / 2);
        let pod = |n: u32| LeaseKey {
            pod_uid: format!("pod{n}"),
            ..key()
        };
        for n in 0..3 {
            cache
                .get(
                    &pod(n),
                    50,
                    || async { Ok(leased("x", 100, true)) },
                    no_renew,
                )
                .await
                .unwrap();
            tokio::time::advance(Duration::from_secs(1)).await;
        }
        // pod0 used again: pod1 is now the least recently used.
        let (_, outcome) = cache
            .get(&pod(0), 50, || async { panic!("no fetch") }, no_renew)
            .await
            .unwrap();
        assert_eq!(outcome, Outcome::Reused);
        tokio::time::advance(Duration::from_secs(1)).await;
        cache
            .get(
                &pod(3),
                50,
                || async { Ok(leased("x", 100, true)) },
                no_renew,
            )
            .await
            .unwrap();
        assert_eq!(cache.len(), 3);
        assert_eq!(cache.bytes(), one * 3);
        let (_, outcome) = cache
            .get(
                &pod(1),
                50,
                || async { Ok(leased("x", 100, true)) },
                no_renew,
            )
            .await
            .unwrap();
        assert_eq!(outcome, Outcome::Fetched, "pod1 was dropped");
        let (_, outcome) = cache
            .get(&pod(3), 50, || async { panic!("no fetch") }, no_renew)
            .await
            .unwrap();
        assert_eq!(outcome, Outcome::Reused, "pod3 was kept");

        // A response bigger than the whole budget is returned, not kept.
        let small = LeaseCache::new(10, 10);
        small
            .get(
                &key(),
                50,
                || async { Ok(leased("x", 100, true)) },
                no_renew,
            )
            .await
            .unwrap();
        assert!(small.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn idle_entries_expire_with_their_leases() {
        let cache = LeaseCache::new(10, 1 << 20);
        cache
            .get(
                &key(),
                50,
                || async { Ok(leased("a", 1000, true)) },
                no_renew,
            )
            .await
            .unwrap();
        tokio::time::advance(Duration::from_secs(120)).await;
        let expired = cache.expire_idle(Duration::from_secs(60));
        assert_eq!(expired.len(), 1);
        assert_eq!(expired[0].1.id, "a");
        assert!(cache.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn background_renewal_extends_due_leases_then_backs_off() {
        let cache = LeaseCache::new(10, 1 << 20);
        cache
            .get(
                &key(),
                50,
                || async { Ok(leased("a", 100, true)) },
                no_renew,
            )
            .await
            .unwrap();
        assert!(cache.due().is_empty(), "not due before 50% of its TTL");
        tokio::time::advance(Duration::from_secs(51)).await;
        let due = cache.due();
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].1.id, "a");

        let renewed = cache
            .renew_in_background(&key(), |lease| async move {
                assert_eq!(lease.duration, Duration::from_secs(100));
                Ok(Duration::from_secs(100))
            })
            .await;
        assert_eq!(renewed.unwrap().unwrap(), Duration::from_secs(100));
        assert!(cache.due().is_empty());
        // Next due at 47.5–50% of the grant (jitter), and the same response.
        let next = cache.refresh_at(&key()).unwrap() - Instant::now();
        assert!(
            next >= Duration::from_millis(47_400) && next <= Duration::from_secs(50),
            "{next:?}"
        );
        let (same, outcome) = cache
            .get(&key(), 50, || async { panic!("no fetch") }, no_renew)
            .await
            .unwrap();
        assert_eq!(
            (outcome, same["data"]["username"].as_str()),
            (Outcome::Reused, Some("a"))
        );

        // A failed renewal waits for its backoff before the next try.
        tokio::time::advance(Duration::from_secs(51)).await;
        let failed = cache
            .renew_in_background(&key(), |_| async {
                Err(VaultError::Unavailable("down".into()))
            })
            .await;
        assert!(failed.unwrap().is_err());
        assert!(cache.due().is_empty(), "backing off");
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(cache.due().len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn background_renewal_leaves_certificates_and_capped_leases_alone() {
        let cache = LeaseCache::new(10, 1 << 20);
        cache
            .get(
                &key(),
                50,
                || async { Ok(leased("a", 100, false)) },
                no_renew,
            )
            .await
            .unwrap();
        tokio::time::advance(Duration::from_secs(60)).await;
        assert!(cache.due().is_empty(), "not renewable");
        assert!(
            cache
                .renew_in_background(&key(), |_| async { panic!("no renewal") })
                .await
                .is_none()
        );

        let cache = LeaseCache::new(10, 1 << 20);
        cache
            .get(
                &key(),
                50,
                || async { Ok(leased("b", 100, true)) },
                no_renew,
            )
            .await
            .unwrap();
        tokio::time::advance(Duration::from_secs(60)).await;
        // The max TTL cut the grant short: no more renewals, a Mount fetches anew.
        let capped = cache
            .renew_in_background(&key(), |_| async { Ok(Duration::from_secs(30)) })
            .await;
        assert!(capped.unwrap().is_ok());
        tokio::time::advance(Duration::from_secs(20)).await;
        assert!(cache.due().is_empty(), "capped: never renewed again");
    }
}
