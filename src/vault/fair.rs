//! Fair share of the Vault requests in flight: a global bound, and under it
//! a bound per pod namespace (the tenant), so a slow or hostile Vault that one
//! namespace's SecretProviderClasses point at can hold at most its own share
//! of the permits and never delay another namespace's Mounts.
//!
//! A request waits for its namespace's permit first and only then for a
//! global one, so a namespace that is at its bound queues behind itself and
//! holds no global permit while it waits.
//!
//! Hand-written rather than a tower `ConcurrencyLimit` per key: the keys are
//! open-ended (any namespace), so the per-key semaphores live in a map that
//! drops the idle ones; the semaphores themselves are tokio's.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore, SemaphorePermit};

/// The pod namespace a Vault request is made for: its share of the requests
/// in flight and of the token cache is counted per tenant. Requests without
/// a pod namespace (the local `mount` command, a driver that does not send
/// pod info) share one tenant.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tenant(Arc<str>);

impl Tenant {
    /// The tenant of a pod namespace.
    pub fn new(pod_namespace: Option<&str>) -> Self {
        Self(Arc::from(pod_namespace.unwrap_or_default()))
    }

    /// The pod namespace ("" when there is none).
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Per-tenant semaphores are swept when the map reaches this many: at most
/// this many idle ones are kept, plus those in use.
const SWEEP_AT: usize = 256;

/// The global bound and the per-tenant bounds under it.
pub(super) struct FairShare {
    global: Semaphore,
    per_tenant: usize,
    tenants: Mutex<HashMap<Tenant, Arc<Semaphore>>>,
}

/// One request's permits; released when dropped.
pub(super) struct Permit<'a> {
    _global: SemaphorePermit<'a>,
    _tenant: OwnedSemaphorePermit,
}

impl FairShare {
    /// `global` requests in flight at once, at most `per_tenant` of them for
    /// one tenant (both at least one).
    pub(super) fn new(global: usize, per_tenant: usize) -> Self {
        Self {
            global: Semaphore::new(global.max(1)),
            per_tenant: per_tenant.clamp(1, global.max(1)),
            tenants: Mutex::new(HashMap::new()),
        }
    }

    /// The per-tenant bound.
    #[cfg(test)]
    fn per_tenant(&self) -> usize {
        self.per_tenant
    }

    /// Waits for the tenant's permit, then for a global one.
    pub(super) async fn acquire(&self, tenant: &Tenant) -> Permit<'_> {
        let semaphore = self.semaphore(tenant);
        let tenant_permit = semaphore
            .acquire_owned()
            .await
            .expect("the request semaphores are never closed");
        let global = self
            .global
            .acquire()
            .await
            .expect("the request semaphores are never closed");
        Permit {
            _global: global,
            _tenant: tenant_permit,
        }
    }

    /// Per-tenant semaphores held (in use or idle and not yet swept).
    #[cfg(test)]
    fn tenants(&self) -> usize {
        self.lock().len()
    }

    fn semaphore(&self, tenant: &Tenant) -> Arc<Semaphore> {
        let mut tenants = self.lock();
        if let Some(semaphore) = tenants.get(tenant) {
            return semaphore.clone();
        }
        if tenants.len() >= SWEEP_AT {
            // Only the map holds an idle semaphore: no permit is out (a permit
            // holds its semaphore) and nobody waits (a waiter holds a clone).
            tenants.retain(|_, semaphore| Arc::strong_count(semaphore) > 1);
        }
        let semaphore = Arc::new(Semaphore::new(self.per_tenant));
        tenants.insert(tenant.clone(), semaphore.clone());
        semaphore
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Tenant, Arc<Semaphore>>> {
        // The map holds no invariant a panicking holder could break.
        self.tenants
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_tenant_at_its_bound_leaves_the_rest_to_others() {
        let fair = FairShare::new(4, 2);
        let a = Tenant::new(Some("a"));
        let b = Tenant::new(Some("b"));
        let _a1 = fair.acquire(&a).await;
        let _a2 = fair.acquire(&a).await;
        // A third request of `a` waits, and holds no global permit meanwhile.
        let third = tokio::time::timeout(Duration::from_millis(50), fair.acquire(&a)).await;
        assert!(third.is_err(), "tenant a is at its bound");
        let _b1 = fair.acquire(&b).await;
        let _b2 = fair.acquire(&b).await;
        assert_eq!(fair.global.available_permits(), 0);
    }

    #[tokio::test]
    async fn waiting_tenants_hold_no_global_permit() {
        let fair = Arc::new(FairShare::new(4, 2));
        let a = Tenant::new(Some("a"));
        let held = vec![fair.acquire(&a).await, fair.acquire(&a).await];
        let waiters: Vec<_> = (0..10)
            .map(|_| {
                let fair = fair.clone();
                let a = a.clone();
                tokio::spawn(async move {
                    let _permit = fair.acquire(&a).await;
                })
            })
            .collect();
        tokio::task::yield_now().await;
        assert_eq!(fair.global.available_permits(), 2);
        drop(held);
        for waiter in waiters {
            waiter.await.unwrap();
        }
        assert_eq!(fair.global.available_permits(), 4);
    }

    #[tokio::test]
    async fn idle_tenants_are_swept() {
        let fair = FairShare::new(64, 16);
        let busy = Tenant::new(Some("busy"));
        let _held = fair.acquire(&busy).await;
        for i in 0..(3 * SWEEP_AT) {
            drop(fair.acquire(&Tenant::new(Some(&format!("ns-{i}")))).await);
        }
        assert!(fair.tenants() <= SWEEP_AT + 1, "{}", fair.tenants());
        assert!(fair.lock().contains_key(&busy), "a tenant in use is kept");
    }

    #[test]
    fn the_bound_per_tenant_is_within_the_global_one() {
        assert_eq!(FairShare::new(64, 0).per_tenant(), 1);
        assert_eq!(FairShare::new(64, 1000).per_tenant(), 64);
        assert_eq!(Tenant::new(None).as_str(), "");
    }
}
