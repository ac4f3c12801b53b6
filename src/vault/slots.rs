//! [`SlotMap`]: the bounded map under the token cache and the lease cache.
//!
//! Each key gets a [`Slot`]: its value (absent until first filled), when it was
//! last used, and an async lock that callers hold while they fetch or refresh
//! the value, so concurrent callers for one key do that work once. A slot
//! counts against the capacity only once it is [admitted](SlotMap::admit),
//! after its value was filled (a login or fetch that fails leaves nothing
//! behind: its caller removes the empty slot). Each tenant (pod namespace)
//! may hold at most `tenant_cap` admitted slots; past that, its own least
//! recently used tenth goes. A full map drops the least recently used tenth
//! of the tenant holding the most, so a tenant that floods the map evicts
//! its own entries first. Idle slots can be expired, and their values are
//! handed back so the caller can revoke what they hold.
//!
//! Hand-written rather than a cache crate: values must come back on expiry
//! (for revocation), the per-key async lock must be held across a login or
//! a renewal, which is the single flight itself, and eviction is per tenant.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::time::Instant;

use super::fair::Tenant;

/// Longest wait the caches schedule: a server's lifetime (`lease_duration`,
/// a certificate's `expiration`) may say anything, and an `Instant` that far
/// in the future would overflow.
const MAX_WAIT: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// `now + wait`, with `wait` capped at ten years (never overflows).
pub(super) fn after(now: Instant, wait: Duration) -> Instant {
    now + wait.min(MAX_WAIT)
}

/// A slot's value and when it was last used.
pub(super) struct Entry<V> {
    /// The value, once a caller has filled it.
    pub(super) value: Option<V>,
    /// Last use, for idle expiry and eviction.
    pub(super) last_used: Instant,
}

/// One key's entry and its refresh lock.
pub(super) struct Slot<V> {
    entry: Mutex<Entry<V>>,
    /// Held while the value is fetched or refreshed.
    pub(super) busy: tokio::sync::Mutex<()>,
}

impl<V> Slot<V> {
    /// The entry, locked (never across an await).
    pub(super) fn entry(&self) -> MutexGuard<'_, Entry<V>> {
        self.entry.lock().expect("slot lock")
    }
}

/// A slot in the map, and whether it counts against the capacity.
struct Held<V> {
    slot: Arc<Slot<V>>,
    admitted: bool,
}

struct Slots<K, V> {
    map: HashMap<K, Held<V>>,
    /// Admitted slots per tenant, and in all.
    per_tenant: HashMap<Tenant, usize>,
    admitted: usize,
}

/// Key → [`Slot`], holding at most `capacity` admitted keys, and at most
/// `tenant_cap` of one tenant.
pub(super) struct SlotMap<K, V> {
    slots: Mutex<Slots<K, V>>,
    capacity: usize,
    tenant_cap: usize,
    tenant: fn(&K) -> Tenant,
}

impl<K: Clone + Eq + Hash, V> SlotMap<K, V> {
    /// A map of at most `capacity` admitted keys (at least one), one tenant.
    #[cfg(test)]
    fn new(capacity: usize) -> Self {
        Self::per_tenant(capacity, capacity, |_| Tenant::default())
    }

    /// A map of at most `capacity` admitted keys, at most `tenant_cap` of
    /// them of one tenant (both at least one).
    pub(super) fn per_tenant(capacity: usize, tenant_cap: usize, tenant: fn(&K) -> Tenant) -> Self {
        let capacity = capacity.max(1);
        Self {
            slots: Mutex::new(Slots {
                map: HashMap::new(),
                per_tenant: HashMap::new(),
                admitted: 0,
            }),
            capacity,
            tenant_cap: tenant_cap.clamp(1, capacity),
            tenant,
        }
    }

    fn slots(&self) -> MutexGuard<'_, Slots<K, V>> {
        self.slots.lock().expect("slot map lock")
    }

    /// Admitted keys held.
    pub(super) fn len(&self) -> usize {
        self.slots().admitted
    }

    /// Slots in the map, admitted or not (for tests).
    #[cfg(test)]
    pub(super) fn held(&self) -> usize {
        self.slots().map.len()
    }

    /// The slot for `key`, created empty if absent. An empty slot does not
    /// count against the capacity: fill it and [`admit`](Self::admit) it, or
    /// drop it and [`remove_if_unused`](Self::remove_if_unused).
    pub(super) fn slot(&self, key: &K) -> Arc<Slot<V>> {
        let mut slots = self.slots();
        if let Some(held) = slots.map.get(key) {
            return held.slot.clone();
        }
        let slot = Arc::new(Slot {
            entry: Mutex::new(Entry {
                value: None,
                last_used: Instant::now(),
            }),
            busy: tokio::sync::Mutex::new(()),
        });
        slots.map.insert(
            key.clone(),
            Held {
                slot: slot.clone(),
                admitted: false,
            },
        );
        slot
    }

    /// Counts `key`'s slot, just filled, against the capacity, evicting
    /// others if the tenant or the map is over its bound. A slot that was
    /// dropped meanwhile (expired, evicted) is put back; one that another
    /// caller replaced is left alone.
    pub(super) fn admit(&self, key: &K, slot: &Arc<Slot<V>>) {
        let mut slots = self.slots();
        match slots.map.get_mut(key) {
            Some(held) if Arc::ptr_eq(&held.slot, slot) => {
                if held.admitted {
                    return;
                }
                held.admitted = true;
            }
            Some(_) => return,
            None => {
                slots.map.insert(
                    key.clone(),
                    Held {
                        slot: slot.clone(),
                        admitted: true,
                    },
                );
            }
        }
        let tenant = (self.tenant)(key);
        slots.admitted += 1;
        let count = {
            let count = slots.per_tenant.entry(tenant.clone()).or_default();
            *count += 1;
            *count
        };
        if count > self.tenant_cap {
            Self::evict(&mut slots, &tenant, key, self.tenant);
        }
        while slots.admitted > self.capacity {
            // The tenant holding the most goes first; on a tie, the one
            // that is adding.
            let Some(largest) = slots
                .per_tenant
                .iter()
                .filter(|(t, n)| **n > usize::from(**t == tenant))
                .max_by_key(|(t, n)| (**n, **t == tenant))
                .map(|(t, _)| t.clone())
            else {
                break;
            };
            if Self::evict(&mut slots, &largest, key, self.tenant) == 0 {
                break;
            }
        }
    }

    /// `key`'s slot if it exists (never creates one).
    pub(super) fn peek_slot(&self, key: &K) -> Option<Arc<Slot<V>>> {
        self.slots().map.get(key).map(|held| held.slot.clone())
    }

    /// Reads `key`'s value, if any, without creating a slot or touching it.
    pub(super) fn peek<R>(&self, key: &K, read: impl FnOnce(&V) -> R) -> Option<R> {
        let slots = self.slots();
        let entry = slots.map.get(key)?.slot.entry();
        entry.value.as_ref().map(read)
    }

    /// For every slot holding a value, `pick(key, value)`; the `Some`s, with
    /// their slots. Neither creates nor touches a slot (a background renewal
    /// is not a use). A linear scan, for the once-a-second renewal sweep.
    pub(super) fn select<R>(
        &self,
        mut pick: impl FnMut(&K, &V) -> Option<R>,
    ) -> Vec<(K, Arc<Slot<V>>, R)> {
        let slots = self.slots();
        slots
            .map
            .iter()
            .filter_map(|(key, held)| {
                let picked = held
                    .slot
                    .entry()
                    .value
                    .as_ref()
                    .and_then(|v| pick(key, v))?;
                Some((key.clone(), held.slot.clone(), picked))
            })
            .collect()
    }

    /// Removes every slot; returns the values they held.
    pub(super) fn drain(&self) -> Vec<(K, V)> {
        let drained = {
            let mut slots = self.slots();
            slots.per_tenant.clear();
            slots.admitted = 0;
            std::mem::take(&mut slots.map)
        };
        drained
            .into_iter()
            .filter_map(|(key, held)| Some((key, held.slot.entry().value.take()?)))
            .collect()
    }

    /// Removes the slots unused for longer than `idle`; returns their values.
    pub(super) fn expire_idle(&self, idle: Duration) -> Vec<(K, V)> {
        let now = Instant::now();
        let mut slots = self.slots();
        let stale: Vec<K> = slots
            .map
            .iter()
            .filter(|(_, held)| now.duration_since(held.slot.entry().last_used) > idle)
            .map(|(key, _)| key.clone())
            .collect();
        stale
            .into_iter()
            .filter_map(|key| {
                let slot = Self::remove(&mut slots, &key, self.tenant)?;
                let value = slot.entry().value.take()?;
                Some((key, value))
            })
            .collect()
    }

    /// Removes `key`'s slot if it holds no value and no caller holds it.
    pub(super) fn remove_if_unused(&self, key: &K) {
        let mut slots = self.slots();
        let unused = slots.map.get(key).is_some_and(|held| {
            Arc::strong_count(&held.slot) == 1 && held.slot.entry().value.is_none()
        });
        if unused {
            Self::remove(&mut slots, key, self.tenant);
        }
    }

    fn remove(slots: &mut Slots<K, V>, key: &K, tenant: fn(&K) -> Tenant) -> Option<Arc<Slot<V>>> {
        let held = slots.map.remove(key)?;
        if held.admitted {
            slots.admitted -= 1;
            let tenant = tenant(key);
            if let Some(count) = slots.per_tenant.get_mut(&tenant) {
                *count -= 1;
                if *count == 0 {
                    slots.per_tenant.remove(&tenant);
                }
            }
        }
        Some(held.slot)
    }

    /// Drops the least recently used slots holding a value until the values
    /// left weigh at most `budget`; returns what they weigh. A linear scan:
    /// callers run it only when their running total says they are over.
    pub(super) fn shrink_to(&self, budget: usize, weigh: impl Fn(&V) -> usize) -> usize {
        let mut slots = self.slots();
        let mut by_age: Vec<(Instant, usize, K)> = slots
            .map
            .iter()
            .filter_map(|(key, held)| {
                let entry = held.slot.entry();
                let weight = entry.value.as_ref().map(&weigh)?;
                Some((entry.last_used, weight, key.clone()))
            })
            .collect();
        let mut total: usize = by_age.iter().map(|(_, weight, _)| weight).sum();
        if total <= budget {
            return total;
        }
        by_age.sort_by_key(|(used, _, _)| *used);
        for (_, weight, key) in by_age {
            if total <= budget {
                break;
            }
            Self::remove(&mut slots, &key, self.tenant);
            total -= weight;
        }
        total
    }

    /// Drops the least recently used tenth of `tenant`'s admitted slots
    /// (at least one), never `keep`. Runs only when a bound is reached, so
    /// its linear scan is rare.
    fn evict(
        slots: &mut Slots<K, V>,
        tenant: &Tenant,
        keep: &K,
        tenant_of: fn(&K) -> Tenant,
    ) -> usize {
        let mut by_age: Vec<(Instant, K)> = slots
            .map
            .iter()
            .filter(|(key, held)| held.admitted && *key != keep && tenant_of(key) == *tenant)
            .map(|(key, held)| (held.slot.entry().last_used, key.clone()))
            .collect();
        by_age.sort_by_key(|(used, _)| *used);
        let count = (by_age.len() / 10).max(1).min(by_age.len());
        for (_, key) in by_age.into_iter().take(count) {
            Self::remove(slots, &key, tenant_of);
        }
        count
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fill<K: Clone + Eq + Hash, V>(map: &SlotMap<K, V>, key: K, value: V) {
        let slot = map.slot(&key);
        slot.entry().value = Some(value);
        map.admit(&key, &slot);
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_map_drops_its_least_recently_used_tenth() {
        let map: SlotMap<u32, u32> = SlotMap::new(10);
        for key in 0..10 {
            fill(&map, key, key);
            tokio::time::advance(Duration::from_secs(1)).await;
        }
        // Key 0 is used again, so key 1 is now the least recently used.
        map.slot(&0).entry().last_used = Instant::now();
        fill(&map, 10, 10);
        assert_eq!(map.len(), 10);
        assert_eq!(map.peek(&0, |v| *v), Some(0));
        assert_eq!(map.peek(&1, |v| *v), None);
    }

    #[test]
    fn empty_slots_do_not_count_or_evict() {
        let map: SlotMap<u32, u32> = SlotMap::new(2);
        fill(&map, 0, 0);
        fill(&map, 1, 1);
        for key in 100..200 {
            let slot = map.slot(&key);
            drop(slot);
            map.remove_if_unused(&key);
        }
        assert_eq!(map.len(), 2);
        assert_eq!(
            (map.peek(&0, |v| *v), map.peek(&1, |v| *v)),
            (Some(0), Some(1))
        );
    }

    fn tenant_of(key: &(&'static str, u32)) -> Tenant {
        Tenant::new(Some(key.0))
    }

    #[tokio::test(start_paused = true)]
    async fn a_flooding_tenant_evicts_its_own_entries() {
        let map: SlotMap<(&str, u32), u32> = SlotMap::per_tenant(20, 5, tenant_of);
        fill(&map, ("victim", 0), 0);
        fill(&map, ("victim", 1), 1);
        tokio::time::advance(Duration::from_secs(1)).await;
        for i in 0..100 {
            fill(&map, ("flood", i), i);
            tokio::time::advance(Duration::from_millis(1)).await;
        }
        assert_eq!(map.peek(&("victim", 0), |v| *v), Some(0));
        assert_eq!(map.peek(&("victim", 1), |v| *v), Some(1));
        assert!(map.len() <= 7, "flood holds at most its cap: {}", map.len());
        assert_eq!(
            map.peek(&("flood", 99), |v| *v),
            Some(99),
            "the newest stays"
        );
        // Many tenants at their caps: a full map evicts from the largest.
        let map: SlotMap<(&str, u32), u32> = SlotMap::per_tenant(10, 5, tenant_of);
        fill(&map, ("victim", 0), 0);
        tokio::time::advance(Duration::from_secs(1)).await;
        for (tenant, i) in ["a", "b", "c"]
            .iter()
            .flat_map(|t| (0..5).map(move |i| (*t, i)))
        {
            fill(&map, (tenant, i), i);
        }
        assert!(map.len() <= 10);
        assert_eq!(
            map.peek(&("victim", 0), |v| *v),
            Some(0),
            "the smallest tenant keeps its entry"
        );
    }

    #[test]
    fn after_never_overflows() {
        let now = Instant::now();
        assert_eq!(after(now, Duration::MAX), now + MAX_WAIT);
        assert_eq!(
            after(now, Duration::from_secs(1)),
            now + Duration::from_secs(1)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn shrinking_drops_the_least_recently_used_until_under_budget() {
        let map: SlotMap<u32, usize> = SlotMap::new(100);
        for key in 0..5 {
            let slot = map.slot(&key);
            slot.entry().value = Some(10);
            map.admit(&key, &slot);
            tokio::time::advance(Duration::from_secs(1)).await;
        }
        map.slot(&0).entry().last_used = Instant::now();
        assert_eq!(
            map.shrink_to(50, |v| *v),
            50,
            "within budget: nothing dropped"
        );
        assert_eq!(map.shrink_to(25, |v| *v), 20);
        assert_eq!(map.len(), 2);
        assert!(map.peek(&0, |v| *v).is_some(), "recently used: kept");
        assert!(map.peek(&4, |v| *v).is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn idle_slots_expire_and_hand_back_their_values() {
        let map: SlotMap<&str, u32> = SlotMap::new(10);
        fill(&map, "old", 1);
        map.slot(&"empty");
        tokio::time::advance(Duration::from_secs(60)).await;
        fill(&map, "new", 2);
        let expired = map.expire_idle(Duration::from_secs(30));
        assert_eq!(expired, vec![("old", 1)]);
        assert_eq!(map.len(), 1);
        assert_eq!(map.held(), 1, "the empty idle slot goes too");
        assert_eq!(map.drain(), vec![("new", 2)]);
        assert_eq!(map.len(), 0);
    }

    #[test]
    fn unused_empty_slots_are_removed_but_held_ones_stay() {
        let map: SlotMap<u8, u8> = SlotMap::new(4);
        let held = map.slot(&1);
        map.remove_if_unused(&1);
        assert_eq!(map.held(), 1, "a caller still holds it");
        drop(held);
        map.remove_if_unused(&1);
        assert_eq!(map.held(), 0);
        fill(&map, 2, 2);
        map.remove_if_unused(&2);
        assert_eq!(map.len(), 1, "it holds a value");
    }
}
