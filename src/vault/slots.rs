//! [`SlotMap`]: the bounded map under the token cache and the lease cache.
//!
//! Each key gets a [`Slot`]: its value (absent until first filled), when it was
//! last used, and an async lock that callers hold while they fetch or refresh
//! the value, so concurrent callers for one key do that work once. A full map
//! drops its least recently used tenth; idle slots can be expired, and their
//! values are handed back so the caller can revoke what they hold.
//!
//! Hand-written rather than a cache crate: values must come back on expiry
//! (for revocation), and the per-key async lock must be held across a login or
//! a renewal, which is the single flight itself.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::time::Instant;

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

/// Key → [`Slot`], holding at most `capacity` keys.
pub(super) struct SlotMap<K, V> {
    slots: Mutex<HashMap<K, Arc<Slot<V>>>>,
    capacity: usize,
}

impl<K: Clone + Eq + Hash, V> SlotMap<K, V> {
    /// A map of at most `capacity` keys (at least one).
    pub(super) fn new(capacity: usize) -> Self {
        Self {
            slots: Mutex::new(HashMap::new()),
            capacity: capacity.max(1),
        }
    }

    fn slots(&self) -> MutexGuard<'_, HashMap<K, Arc<Slot<V>>>> {
        self.slots.lock().expect("slot map lock")
    }

    /// Keys held.
    pub(super) fn len(&self) -> usize {
        self.slots().len()
    }

    /// The slot for `key`, created empty if absent (evicting the least
    /// recently used tenth when the map is full).
    pub(super) fn slot(&self, key: &K) -> Arc<Slot<V>> {
        let mut slots = self.slots();
        if let Some(slot) = slots.get(key) {
            return slot.clone();
        }
        if slots.len() >= self.capacity {
            Self::evict(&mut slots);
        }
        let slot = Arc::new(Slot {
            entry: Mutex::new(Entry {
                value: None,
                last_used: Instant::now(),
            }),
            busy: tokio::sync::Mutex::new(()),
        });
        slots.insert(key.clone(), slot.clone());
        slot
    }

    /// Reads `key`'s value, if any, without creating a slot or touching it.
    pub(super) fn peek<R>(&self, key: &K, read: impl FnOnce(&V) -> R) -> Option<R> {
        let slots = self.slots();
        let entry = slots.get(key)?.entry();
        entry.value.as_ref().map(read)
    }

    /// Removes every slot; returns the values they held.
    pub(super) fn drain(&self) -> Vec<(K, V)> {
        let slots = std::mem::take(&mut *self.slots());
        slots
            .into_iter()
            .filter_map(|(key, slot)| Some((key, slot.entry().value.take()?)))
            .collect()
    }

    /// Removes the slots unused for longer than `idle`; returns their values.
    pub(super) fn expire_idle(&self, idle: Duration) -> Vec<(K, V)> {
        let now = Instant::now();
        let mut slots = self.slots();
        let stale: Vec<K> = slots
            .iter()
            .filter(|(_, slot)| now.duration_since(slot.entry().last_used) > idle)
            .map(|(key, _)| key.clone())
            .collect();
        stale
            .into_iter()
            .filter_map(|key| {
                let slot = slots.remove(&key)?;
                let value = slot.entry().value.take()?;
                Some((key, value))
            })
            .collect()
    }

    /// Removes `key`'s slot if it holds no value and no caller holds it.
    pub(super) fn remove_if_unused(&self, key: &K) {
        let mut slots = self.slots();
        let unused = slots
            .get(key)
            .is_some_and(|slot| Arc::strong_count(slot) == 1 && slot.entry().value.is_none());
        if unused {
            slots.remove(key);
        }
    }

    /// Drops the least recently used tenth. Runs only when the map is full,
    /// so its linear scan is rare.
    fn evict(slots: &mut HashMap<K, Arc<Slot<V>>>) {
        let mut by_age: Vec<(Instant, K)> = slots
            .iter()
            .map(|(key, slot)| (slot.entry().last_used, key.clone()))
            .collect();
        by_age.sort_by_key(|(used, _)| *used);
        let count = (slots.len() / 10).max(1);
        for (_, key) in by_age.into_iter().take(count) {
            slots.remove(&key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_full_map_drops_its_least_recently_used_tenth() {
        let map: SlotMap<u32, u32> = SlotMap::new(10);
        for key in 0..10 {
            map.slot(&key).entry().value = Some(key);
            tokio::time::advance(Duration::from_secs(1)).await;
        }
        // Key 0 is used again, so key 1 is now the least recently used.
        map.slot(&0).entry().last_used = Instant::now();
        map.slot(&10);
        assert_eq!(map.len(), 10);
        assert_eq!(map.peek(&0, |v| *v), Some(0));
        assert_eq!(map.peek(&1, |v| *v), None);
    }

    #[tokio::test(start_paused = true)]
    async fn idle_slots_expire_and_hand_back_their_values() {
        let map: SlotMap<&str, u32> = SlotMap::new(10);
        map.slot(&"old").entry().value = Some(1);
        map.slot(&"empty");
        tokio::time::advance(Duration::from_secs(60)).await;
        map.slot(&"new").entry().value = Some(2);
        let expired = map.expire_idle(Duration::from_secs(30));
        assert_eq!(expired, vec![("old", 1)]);
        assert_eq!(map.len(), 1, "the empty idle slot goes too");
        assert_eq!(map.drain(), vec![("new", 2)]);
        assert_eq!(map.len(), 0);
    }

    #[test]
    fn unused_empty_slots_are_removed_but_held_ones_stay() {
        let map: SlotMap<u8, u8> = SlotMap::new(4);
        let held = map.slot(&1);
        map.remove_if_unused(&1);
        assert_eq!(map.len(), 1, "a caller still holds it");
        drop(held);
        map.remove_if_unused(&1);
        assert_eq!(map.len(), 0);
        map.slot(&2).entry().value = Some(2);
        map.remove_if_unused(&2);
        assert_eq!(map.len(), 1, "it holds a value");
    }
}
