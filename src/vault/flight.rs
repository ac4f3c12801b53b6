//! Single flight: concurrent identical requests share one Vault call.
//!
//! During a pod storm many Mounts of one identity read the same paths at the
//! same moment; the first caller (the leader) makes the request and the
//! others wait for its result. Nothing is cached after the call completes.
//! If the leader is cancelled (its Mount timed out), a waiting caller simply
//! makes the call itself.

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::watch;

/// Whether a caller made the call or received another caller's result.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Made the call.
    Leader,
    /// Shared the leader's result.
    Follower,
}

/// Calls in flight, by key.
pub struct Flights<K, V> {
    calls: Mutex<HashMap<K, watch::Receiver<Option<V>>>>,
    /// Callers waiting for another's result now.
    following: AtomicUsize,
}

impl<K: Clone + Eq + Hash, V: Clone> Default for Flights<K, V> {
    fn default() -> Self {
        Self {
            calls: Mutex::new(HashMap::new()),
            following: AtomicUsize::new(0),
        }
    }
}

impl<K: Clone + Eq + Hash, V: Clone> Flights<K, V> {
    /// Runs `call` unless an identical one is in flight, in which case its
    /// result is shared.
    pub async fn run<F, Fut>(&self, key: &K, call: F) -> (V, Role)
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = V>,
    {
        let joined = {
            let mut calls = self.calls.lock().expect("flights lock");
            match calls.get(key) {
                Some(receiver) => Err(receiver.clone()),
                None => {
                    let (sender, receiver) = watch::channel(None);
                    calls.insert(key.clone(), receiver);
                    Ok(sender)
                }
            }
        };
        let mut receiver = match joined {
            Ok(sender) => return self.lead(key, sender, call).await,
            Err(receiver) => receiver,
        };
        let following = Following::new(&self.following);
        loop {
            if let Some(value) = receiver.borrow_and_update().clone() {
                return (value, Role::Follower);
            }
            if receiver.changed().await.is_err() {
                break; // the leader was cancelled
            }
        }
        drop(following);
        (call().await, Role::Leader)
    }

    async fn lead<F, Fut>(&self, key: &K, sender: watch::Sender<Option<V>>, call: F) -> (V, Role)
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = V>,
    {
        // Unregisters the call even if this future is dropped mid-way.
        struct Done<'a, K: Eq + Hash, V> {
            calls: &'a Mutex<HashMap<K, watch::Receiver<Option<V>>>>,
            key: &'a K,
        }
        impl<K: Eq + Hash, V> Drop for Done<'_, K, V> {
            fn drop(&mut self) {
                self.calls.lock().expect("flights lock").remove(self.key);
            }
        }
        let _done = Done {
            calls: &self.calls,
            key,
        };
        let value = call().await;
        let _ = sender.send(Some(value.clone()));
        (value, Role::Leader)
    }

    /// Calls in flight now.
    pub fn len(&self) -> usize {
        self.calls.lock().expect("flights lock").len()
    }

    /// Callers waiting for another caller's result now.
    pub fn following(&self) -> usize {
        self.following.load(Ordering::SeqCst)
    }

    /// Whether no call is in flight.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Counts a waiting follower for as long as it waits (even if dropped).
struct Following<'a>(&'a AtomicUsize);

impl<'a> Following<'a> {
    fn new(count: &'a AtomicUsize) -> Self {
        count.fetch_add(1, Ordering::SeqCst);
        Self(count)
    }
}

impl Drop for Following<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    #[tokio::test]
    async fn concurrent_calls_share_one_result() {
        let flights = Arc::new(Flights::<&'static str, usize>::default());
        let calls = Arc::new(AtomicUsize::new(0));
        let tasks: Vec<_> = (0..20)
            .map(|_| {
                let (flights, calls) = (flights.clone(), calls.clone());
                tokio::spawn(async move {
                    flights
                        .run(&"k", || async {
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            calls.fetch_add(1, Ordering::SeqCst) + 100
                        })
                        .await
                })
            })
            .collect();
        let mut leaders = 0;
        for task in tasks {
            let (value, role) = task.await.unwrap();
            assert_eq!(value, 100);
            leaders += usize::from(role == Role::Leader);
        }
        assert_eq!((calls.load(Ordering::SeqCst), leaders), (1, 1));
        assert!(flights.is_empty());
    }

    #[tokio::test]
    async fn sequential_calls_are_not_cached() {
        let flights = Flights::<u8, u8>::default();
        assert_eq!(flights.run(&1, || async { 1 }).await, (1, Role::Leader));
        assert_eq!(flights.run(&1, || async { 2 }).await, (2, Role::Leader));
    }

    #[tokio::test]
    async fn a_cancelled_leader_does_not_strand_followers() {
        let flights = Arc::new(Flights::<u8, u8>::default());
        let leader = {
            let flights = flights.clone();
            tokio::spawn(async move {
                flights
                    .run(&1, || async {
                        tokio::time::sleep(Duration::from_secs(3600)).await;
                        0
                    })
                    .await
            })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        let follower = {
            let flights = flights.clone();
            tokio::spawn(async move { flights.run(&1, || async { 7 }).await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        leader.abort();
        let (value, _) = tokio::time::timeout(Duration::from_secs(5), follower)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(value, 7);
    }
}
