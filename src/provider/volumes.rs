//! `--write-mode direct` volumes that the provider keeps fresh itself, with
//! no help from the driver: after a successful Mount the volume is tracked,
//! and a scheduler of our own on the runtime (one task, no thread per pod)
//! runs its plan again
//!
//! - when its earliest certificate or lease reaches `renewalPercent` of its
//!   lifetime (the lease cache then renews the lease, or issues or fetches
//!   anew what cannot be renewed), and
//! - every `--refresh-interval` for everything else (KV), with ±10% jitter so
//!   that volumes mounted together do not refresh together (`0`: only
//!   certificates and leases),
//!
//! and writes the files again, with the same atomic `..data` swap, only when
//! they changed (a synced Secret follows). When only a certificate or a lease
//! is due, the KV responses of the last read (kept as compact JSON text) are
//! used again, so a volume costs Vault one KV read per interval plus what its
//! certificates and leases need, and no more. Before each refresh, and every
//! [`CHECK_EVERY`] in between, it checks that the target is still the tmpfs it
//! wrote: a volume whose target is gone, no longer a mount point (the driver
//! unmounted it) or another mount is forgotten, and nothing is written there.
//!
//! Credentials stay in memory only, inside the kept plan (`secrecy` values).
//! AppRole volumes log in again on their own. A Kubernetes/JWT login needs a
//! fresh pod token that only the driver brings, so such a volume refreshes
//! while its Vault token can be used or renewed, then is marked stale
//! (metric, one log line) until the driver's next Mount for the target, which
//! replaces the registration. Nothing survives a restart of the provider: the
//! next Mount of each volume tracks it again.
//!
//! Bounded: at most `--max-tracked-volumes` volumes, a quarter of them (at
//! least one) of one pod namespace; at most [`CONCURRENCY`] refreshes at once,
//! each with the Vault client's own per-namespace bound. A refresh that fails
//! is tried again after a backoff (1 s, doubling up to a minute, never later
//! than the next due time).

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use sha2::{Digest as _, Sha256};
use tokio::sync::Notify;
use tokio::time::Instant;

use super::direct::Written;
use super::{Due, Provider, Statics, direct};
use crate::proto::File;
use crate::request::{AuthMethod, MountPlan, ObjectSpec, VaultTarget};
use crate::telemetry::metrics::{Refreshed, metrics};
use crate::vault::{Tenant, Vault};

/// Refreshes running at once.
const CONCURRENCY: usize = 8;
/// How often a tracked volume is checked for still being mounted, at most.
pub const CHECK_EVERY: Duration = Duration::from_secs(30);
/// Most bytes all tracked volumes keep (their plans and KV responses); a pod
/// namespace may keep a quarter. A volume beyond it is not tracked.
const KEPT_BYTES: usize = 64 << 20;
/// Largest KV responses one volume keeps for reuse; beyond it, its
/// certificate refreshes read KV again instead.
const STATICS_MAX: usize = 64 << 10;

/// Roughly the bytes a tracked plan keeps: its strings and a share for the
/// structures around them (counted in full even where volumes share them).
fn plan_weight(plan: &MountPlan) -> usize {
    let objects: usize = plan
        .objects
        .iter()
        .map(|o| {
            let query: usize = o.source.query.iter().map(|(k, v)| k.len() + v.len()).sum();
            256 + o.name.as_str().len()
                + o.source.path.len()
                + o.source.args.as_ref().map_or(0, String::len)
                + query
        })
        .sum();
    let templates: usize = plan
        .templates
        .iter()
        .map(|t| 128 + t.name.as_str().len() + t.template.len())
        .sum();
    1024 + objects + templates + plan.target_path.as_os_str().len()
}

fn statics_bytes(statics: &Statics) -> usize {
    statics.iter().flatten().map(|text| text.len()).sum()
}

/// `statics` if small enough to keep ([`STATICS_MAX`]), else none.
fn keepable(statics: &Statics) -> Statics {
    if statics_bytes(statics) <= STATICS_MAX {
        statics.clone()
    } else {
        Vec::new()
    }
}

/// "Never" for a schedule: a year away.
const FAR: Duration = Duration::from_secs(365 * 24 * 3600);

/// When a volume's plan runs next: at `kv_due` or at the certificate's or
/// lease's `due`, whichever is first, and not before [`MIN_WAIT`].
fn next_content(now: Instant, kv_due: Instant, due: Due) -> Instant {
    kv_due.min(due.unwrap_or(now + FAR)).max(now + MIN_WAIT)
}

/// Soonest a volume runs again after a refresh: a certificate whose renewal
/// point has already passed must not make a busy loop.
const MIN_WAIT: Duration = Duration::from_secs(1);

/// The files of a write, as one digest: paths, modes and contents, each
/// length-prefixed.
pub(super) fn digest(files: &[File]) -> [u8; 32] {
    let mut hash = Sha256::new();
    for file in files {
        hash.update((file.path.len() as u64).to_be_bytes());
        hash.update(file.path.as_bytes());
        hash.update(file.mode.to_be_bytes());
        hash.update((file.contents.len() as u64).to_be_bytes());
        hash.update(&file.contents);
    }
    hash.finalize().into()
}

/// The tracked volumes and their schedule.
pub struct Volumes {
    state: Mutex<State>,
    wake: Notify,
    /// `--refresh-interval` (zero: certificates and leases only).
    interval: Duration,
    /// `--max-tracked-volumes`, and a quarter of it per pod namespace.
    capacity: usize,
    tenant_cap: usize,
}

#[derive(Default)]
struct State {
    by_target: HashMap<PathBuf, Volume>,
    /// (when, registration): the schedule.
    queue: BTreeSet<(Instant, u64)>,
    /// Registration → its plan (whose `target_path` keys `by_target`).
    targets: HashMap<u64, Arc<MountPlan>>,
    /// Tracked volumes and their kept bytes per pod namespace.
    per_tenant: HashMap<Tenant, (usize, usize)>,
    /// Kept bytes of all tracked volumes (plans and KV responses).
    bytes: usize,
    next_id: u64,
    /// One copy of each SecretProviderClass's objects, by digest: the pods of
    /// one Deployment share it.
    objects: HashMap<[u8; 32], Weak<[ObjectSpec]>>,
    /// One copy of each Vault server's address and TLS settings.
    vaults: HashMap<VaultTarget, Weak<VaultTarget>>,
}

struct Volume {
    /// Registration: a new Mount of the target replaces it with a new one.
    id: u64,
    plan: Arc<MountPlan>,
    tenant: Tenant,
    /// The tmpfs written to.
    device: u64,
    /// What is in it now.
    digest: [u8; 32],
    /// The last run's KV responses, reused when only a certificate or a
    /// lease is due.
    statics: Arc<Statics>,
    /// Bytes it keeps ([`plan_weight`] + its KV responses), charged to
    /// [`KEPT_BYTES`] and its namespace's quarter of it.
    weight: usize,
    /// When KV is next re-read.
    kv_due: Instant,
    /// When the plan runs again (KV interval, or a certificate or lease).
    content_due: Instant,
    /// When the scheduler looks at it next (content, or the mount check).
    due: Instant,
    failures: u32,
    stale: bool,
}

/// One scheduled look at a volume.
struct Job {
    id: u64,
    target: PathBuf,
    plan: Arc<MountPlan>,
    device: u64,
    digest: [u8; 32],
    due: Instant,
    /// Whether the content is due (else only the mount check).
    content: bool,
    /// KV responses to reuse (`None`: KV is due, read it again).
    reuse: Option<Arc<Statics>>,
    stale: bool,
}

impl Volumes {
    /// Tracks at most `capacity` volumes; re-reads KV every `interval`.
    pub fn new(interval: Duration, capacity: usize) -> Self {
        Self {
            state: Mutex::new(State::default()),
            wake: Notify::new(),
            interval,
            capacity,
            tenant_cap: (capacity / 4).max(1),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().expect("volumes lock")
    }

    /// Volumes tracked.
    pub fn len(&self) -> usize {
        self.state().by_target.len()
    }

    /// Whether none is tracked.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Tracked volumes marked stale.
    pub fn stale(&self) -> usize {
        self.state().by_target.values().filter(|v| v.stale).count()
    }

    /// Tracks the volume a Mount just wrote (`digest`) into `device` at the
    /// plan's target, replacing any earlier registration of that target.
    pub(super) fn track(&self, plan: MountPlan, written: &Written) {
        let Some(device) = written.device else {
            tracing::debug!(
                target_path = %plan.target_path.display(),
                "not tracked: the target is not a mount point of its own"
            );
            return;
        };
        let now = Instant::now();
        let tenant = Tenant::new(plan.pod.namespace.as_deref());
        let mut plan = plan;
        let mut state = self.state();
        state.remove(&plan.target_path);
        plan.objects = state.share(&plan.objects);
        let (held, held_bytes) = state.per_tenant.get(&tenant).copied().unwrap_or_default();
        let statics = keepable(&written.ran.statics);
        let weight = plan_weight(&plan) + statics_bytes(&statics);
        if state.by_target.len() >= self.capacity
            || held >= self.tenant_cap
            || state.bytes + weight > KEPT_BYTES
            || held_bytes + weight > KEPT_BYTES / 4
        {
            drop(state);
            metrics().volume_untracked();
            tracing::warn!(
                pod = plan.pod.name.as_deref().unwrap_or(""),
                pod_namespace = plan.pod.namespace.as_deref().unwrap_or(""),
                "volume not kept fresh: --max-tracked-volumes, or the bytes tracked volumes may \
                 keep (or this pod namespace's quarter of either), is reached; it is refreshed \
                 only by the driver's Mounts"
            );
            self.publish();
            return;
        }
        let kv_due = self.next_kv(now);
        let content_due = next_content(now, kv_due, written.ran.due);
        let id = state.next_id;
        state.next_id += 1;
        plan.vault = state.share_target(&plan.vault);
        let plan = Arc::new(plan);
        let target = plan.target_path.clone();
        let volume = Volume {
            id,
            plan: plan.clone(),
            tenant: tenant.clone(),
            device,
            digest: written.digest,
            statics: Arc::new(statics),
            weight,
            kv_due,
            content_due,
            due: content_due.min(now + CHECK_EVERY),
            failures: 0,
            stale: false,
        };
        state.queue.insert((volume.due, id));
        state.targets.insert(id, plan);
        let held = state.per_tenant.entry(tenant).or_default();
        held.0 += 1;
        held.1 += weight;
        state.bytes += weight;
        state.by_target.insert(target, volume);
        drop(state);
        self.publish();
        self.wake.notify_one();
    }

    /// When KV is next re-read: one interval (±10% jitter) from `now`;
    /// never with an interval of zero.
    fn next_kv(&self, now: Instant) -> Instant {
        if self.interval.is_zero() {
            now + FAR
        } else {
            now + self.interval.mul_f64(rand::random_range(0.9..=1.1))
        }
    }

    /// Updates the gauges.
    fn publish(&self) {
        let (tracked, stale) = {
            let state = self.state();
            let stale = state.by_target.values().filter(|v| v.stale).count();
            (state.by_target.len(), stale)
        };
        metrics().volumes(tracked, stale);
    }

    /// Takes the jobs due at `now` off the schedule; returns them and when
    /// the next one is due.
    fn take_due(&self, now: Instant) -> (Vec<Job>, Option<Instant>) {
        let mut state = self.state();
        let mut jobs = Vec::new();
        while let Some(&(at, id)) = state.queue.first() {
            if at > now {
                break;
            }
            state.queue.pop_first();
            let Some(target) = state.targets.get(&id).map(|p| p.target_path.clone()) else {
                continue;
            };
            let Some(volume) = state.by_target.get(&target) else {
                continue;
            };
            // KV due within the jitter: read it now, with the certificate.
            let kv = now + self.interval / 10 >= volume.kv_due;
            jobs.push(Job {
                id,
                plan: volume.plan.clone(),
                device: volume.device,
                digest: volume.digest,
                due: volume.due,
                content: now >= volume.content_due,
                reuse: (!kv).then(|| volume.statics.clone()),
                stale: volume.stale,
                target,
            });
        }
        let next = state.queue.first().map(|(at, _)| *at);
        (jobs, next)
    }

    /// The scheduler: runs each volume's job when it is due, at most
    /// [`CONCURRENCY`] at once. Runs until the runtime stops.
    pub async fn run(self: Arc<Self>, provider: Arc<Provider>) {
        let permits = Arc::new(tokio::sync::Semaphore::new(CONCURRENCY));
        loop {
            let (jobs, next) = self.take_due(Instant::now());
            for job in jobs {
                let permit = permits
                    .clone()
                    .acquire_owned()
                    .await
                    .expect("the refresh semaphore is never closed");
                let (volumes, provider) = (self.clone(), provider.clone());
                tokio::spawn(async move {
                    let _permit = permit;
                    volumes.refresh(&provider, job).await;
                });
            }
            match next {
                Some(at) => {
                    tokio::select! {
                        () = tokio::time::sleep_until(at) => {}
                        () = self.wake.notified() => {}
                    }
                }
                None => self.wake.notified().await,
            }
        }
    }

    /// One job: the mount check, then, if due, the plan and the write.
    async fn refresh(&self, provider: &Provider, job: Job) {
        if !direct::still_mounted(job.target.clone(), job.device).await {
            self.forget(job.id);
            return;
        }
        let identity = Vault::identity(&job.plan.vault, &job.plan.auth, &job.plan.pod);
        let tokens = provider.vault().tokens();
        if !job.content {
            // Tracked is in use: its token must not go with idle pod state.
            tokens.touch(&identity);
            self.reschedule(job.id, None);
            return;
        }
        let needs_pod_token = job.plan.auth.credentials.method() != AuthMethod::AppRole;
        if needs_pod_token && !tokens.usable(&identity) {
            if !job.stale {
                tracing::warn!(
                    pod = job.plan.pod.name.as_deref().unwrap_or(""),
                    pod_namespace = job.plan.pod.namespace.as_deref().unwrap_or(""),
                    auth = %job.plan.auth.credentials.method(),
                    "volume is stale: its Vault token reached its max TTL, and logging in again \
                     needs the fresh service-account token that the driver's next Mount brings"
                );
            }
            self.finish(job.id, Outcome::Stale, job.due);
            return;
        }
        let outcome = match provider.run_reusing(&job.plan, job.reuse.as_deref()).await {
            Ok(ran) => {
                let response = ran.response;
                let new = digest(&response.files);
                let done = |rewritten| Outcome::Done {
                    digest: new,
                    due: ran.due,
                    statics: job.reuse.is_none().then(|| Arc::new(ran.statics)),
                    rewritten,
                };
                if new == job.digest {
                    done(false)
                } else if !self.is_current(job.id) {
                    // A Mount replaced this registration meanwhile: its
                    // files are newer than ours.
                    return;
                } else {
                    match self.write(provider, &job, response.files).await {
                        Ok(()) => done(true),
                        Err(err) => Outcome::Failed(err),
                    }
                }
            }
            Err(err) => Outcome::Failed(err.to_string()),
        };
        if let Outcome::Failed(err) = &outcome {
            tracing::warn!(
                pod = job.plan.pod.name.as_deref().unwrap_or(""),
                pod_namespace = job.plan.pod.namespace.as_deref().unwrap_or(""),
                error = %err,
                "volume refresh failed; trying again later"
            );
        }
        self.finish(job.id, outcome, job.due);
    }

    /// Writes new files into the volume, then its synced Secret.
    async fn write(&self, provider: &Provider, job: &Job, files: Vec<File>) -> Result<(), String> {
        let plan = &job.plan;
        let sync = plan.sync_secret.as_ref().zip(provider.secret_sync.as_ref());
        // The Secret gets the same files; keep them only when needed.
        let for_sync = sync.map(|_| files.clone());
        direct::rewrite(job.target.clone(), files, plan.owner, job.device)
            .await
            .map_err(|err| err.to_string())?;
        if let (Some((target, sync)), Some(files)) = (sync, for_sync) {
            sync.apply(target, &files)
                .await
                .map_err(|err| err.to_string())?;
        }
        Ok(())
    }

    fn is_current(&self, id: u64) -> bool {
        self.state().targets.contains_key(&id)
    }

    /// Records a job's outcome and schedules the volume's next one.
    fn finish(&self, id: u64, outcome: Outcome, due: Instant) {
        let now = Instant::now();
        let result = match &outcome {
            Outcome::Done { rewritten, .. } if *rewritten => Refreshed::Rewritten,
            Outcome::Done { .. } => Refreshed::Unchanged,
            Outcome::Failed(_) => Refreshed::Failed,
            Outcome::Stale => Refreshed::Stale,
        };
        let lag = now.saturating_duration_since(due);
        metrics().volume_refreshed(result, lag);
        tracing::debug!(
            result = ?result,
            lag_ms = lag.as_secs_f64() * 1e3,
            "volume refreshed"
        );
        self.reschedule(id, Some(outcome));
    }

    /// Puts the volume back on the schedule after a job (`None`: only the
    /// mount check ran).
    fn reschedule(&self, id: u64, outcome: Option<Outcome>) {
        let now = Instant::now();
        {
            let mut state = self.state();
            let Some(target) = state.targets.get(&id).map(|p| p.target_path.clone()) else {
                return;
            };
            let mut recharge = None;
            let Some(volume) = state.by_target.get_mut(&target) else {
                return;
            };
            match outcome {
                None => {}
                Some(Outcome::Done {
                    digest,
                    due,
                    statics,
                    ..
                }) => {
                    volume.digest = digest;
                    volume.failures = 0;
                    volume.stale = false;
                    if let Some(statics) = statics {
                        // KV was read: the interval starts again.
                        volume.kv_due = self.next_kv(now);
                        recharge = Some(statics);
                    }
                    volume.content_due = next_content(now, volume.kv_due, due);
                }
                Some(Outcome::Failed(_)) => {
                    volume.failures = volume.failures.saturating_add(1);
                    let backoff = crate::vault::tokens::backoff(volume.failures);
                    volume.content_due = now + backoff;
                }
                Some(Outcome::Stale) => {
                    volume.stale = true;
                    volume.content_due = next_content(now, self.next_kv(now), None);
                }
            }
            volume.due = volume.content_due.min(now + CHECK_EVERY);
            let (due, tenant) = (volume.due, volume.tenant.clone());
            state.queue.insert((due, id));
            if let Some(statics) = recharge {
                state.keep_statics(&target, &tenant, &statics);
            }
        }
        self.publish();
        self.wake.notify_one();
    }

    /// Stops tracking registration `id` (its target is no longer the volume).
    fn forget(&self, id: u64) {
        let forgotten = {
            let mut state = self.state();
            match state.targets.get(&id).map(|p| p.target_path.clone()) {
                Some(target) => state.remove(&target),
                None => false,
            }
        };
        if forgotten {
            metrics().volume_forgotten();
            tracing::debug!("forgot a volume: its target is no longer mounted");
        }
        self.publish();
    }
}

impl State {
    /// The tracked copy of `objects` if a volume holds equal ones, else
    /// `objects`, now the copy others get.
    fn share(&mut self, objects: &Arc<[ObjectSpec]>) -> Arc<[ObjectSpec]> {
        let key: [u8; 32] = Sha256::digest(format!("{objects:?}").as_bytes()).into();
        if let Some(found) = self.objects.get(&key).and_then(Weak::upgrade)
            && found == *objects
        {
            return found;
        }
        if self.objects.len() > 2 * self.by_target.len() + 64 {
            self.objects.retain(|_, weak| weak.strong_count() > 0);
        }
        self.objects.insert(key, Arc::downgrade(objects));
        objects.clone()
    }

    /// The tracked copy of the Vault server `target` names, if a volume
    /// holds one, else `target`.
    fn share_target(&mut self, target: &Arc<VaultTarget>) -> Arc<VaultTarget> {
        if let Some(found) = self.vaults.get(target).and_then(Weak::upgrade) {
            return found;
        }
        if self.vaults.len() > 2 * self.by_target.len() + 64 {
            self.vaults.retain(|_, weak| weak.strong_count() > 0);
        }
        self.vaults
            .insert(VaultTarget::clone(target), Arc::downgrade(target));
        target.clone()
    }

    /// Keeps `statics` (a new KV read) for the volume at `target` if they fit
    /// the byte bounds, else none: its next refreshes then read KV again.
    fn keep_statics(&mut self, target: &PathBuf, tenant: &Tenant, statics: &Statics) {
        let (total, held) = (
            self.bytes,
            self.per_tenant.get(tenant).map_or(0, |held| held.1),
        );
        let Some(volume) = self.by_target.get_mut(target) else {
            return;
        };
        let base = volume.weight - statics_bytes(&volume.statics);
        let mut kept = keepable(statics);
        let fits = |extra: usize| {
            total - volume.weight + extra <= KEPT_BYTES
                && held - volume.weight + extra <= KEPT_BYTES / 4
        };
        if !fits(base + statics_bytes(&kept)) {
            kept = Vec::new();
        }
        let weight = base + statics_bytes(&kept);
        self.bytes = total - volume.weight + weight;
        if let Some(held) = self.per_tenant.get_mut(tenant) {
            held.1 = held.1 - volume.weight + weight;
        }
        volume.weight = weight;
        volume.statics = Arc::new(kept);
    }

    /// Removes the registration of `target`, if any.
    fn remove(&mut self, target: &PathBuf) -> bool {
        let Some(volume) = self.by_target.remove(target) else {
            return false;
        };
        self.queue.remove(&(volume.due, volume.id));
        self.targets.remove(&volume.id);
        self.bytes -= volume.weight;
        if let Some(held) = self.per_tenant.get_mut(&volume.tenant) {
            held.0 -= 1;
            held.1 -= volume.weight;
            if held.0 == 0 {
                self.per_tenant.remove(&volume.tenant);
            }
        }
        true
    }
}

/// What a job came to.
enum Outcome {
    /// The plan ran: the files now in the volume, and when its earliest
    /// certificate or lease is due.
    Done {
        digest: [u8; 32],
        due: Due,
        /// The KV responses read, if KV was read.
        statics: Option<Arc<Statics>>,
        rewritten: bool,
    },
    /// Vault, the write or the Secret failed.
    Failed(String),
    /// A Kubernetes/JWT volume without a usable Vault token.
    Stale,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{MountRequest, MountResponse};
    use crate::provider::Ran;
    use crate::request::{Defaults, TlsSettings};

    /// The plan of pod `pod` in namespace `ns` whose `objects` YAML is about
    /// `objects_bytes` long (one object, its `secretArgs` padded).
    fn plan(ns: &str, pod: usize, objects_bytes: usize) -> MountPlan {
        let pad = "x".repeat(objects_bytes);
        let objects = format!(
            "- objectName: a\n  secretPath: pki/issue/app\n  method: PUT\n  secretArgs: {{pad: {pad}}}\n"
        );
        let attributes = serde_json::json!({
            "roleId": "role", "objects": objects,
            "csi.storage.k8s.io/pod.name": format!("pod-{pod}"),
            "csi.storage.k8s.io/pod.namespace": ns,
            "csi.storage.k8s.io/pod.uid": format!("uid-{ns}-{pod}"),
        });
        let request = MountRequest {
            attributes: attributes.to_string(),
            secrets: r#"{"secretId":"s"}"#.into(),
            target_path: format!("/volumes/{ns}/{pod}"),
            permission: "420".into(),
            current_object_version: vec![],
        };
        let defaults = Defaults {
            vault_address: url::Url::parse("http://127.0.0.1:8200").unwrap(),
            vault_namespace: None,
            tls: TlsSettings::default(),
            allowed_vault_addrs: Default::default(),
            spc_tls_dir: None,
        };
        crate::request::parse(&request, &defaults).expect("a valid plan")
    }

    fn written(statics_bytes: usize) -> Written {
        Written {
            ran: Ran {
                response: MountResponse::default(),
                due: None,
                statics: vec![Some(Arc::from("k".repeat(statics_bytes)))],
            },
            device: Some(1),
            digest: [0; 32],
        }
    }

    #[tokio::test]
    async fn what_tracked_volumes_keep_is_bounded_in_bytes_per_namespace() {
        let volumes = Volumes::new(Duration::from_secs(120), 10_000);
        // ~900 KiB plans: a namespace's quarter of the byte bound holds a
        // handful, far below its quarter of the volume count.
        for pod in 0..40 {
            volumes.track(plan("greedy", pod, 900 << 10), &written(0));
        }
        let greedy = volumes.len();
        assert!((10..=18).contains(&greedy), "{greedy} tracked");
        // Another namespace is not crowded out.
        for pod in 0..40 {
            volumes.track(plan("other", pod, 100), &written(0));
        }
        assert_eq!(volumes.len(), greedy + 40);
        let state = volumes.state();
        assert!(state.bytes <= KEPT_BYTES);
        assert!(
            state
                .per_tenant
                .values()
                .all(|held| held.1 <= KEPT_BYTES / 4)
        );
    }

    #[tokio::test]
    async fn large_kv_responses_are_not_kept_for_reuse() {
        let volumes = Volumes::new(Duration::from_secs(120), 10_000);
        volumes.track(plan("ns", 0, 100), &written(STATICS_MAX + 1));
        volumes.track(plan("ns", 1, 100), &written(1000));
        let state = volumes.state();
        let kept = |pod: usize| {
            let volume = &state.by_target[std::path::Path::new(&format!("/volumes/ns/{pod}"))];
            statics_bytes(&volume.statics)
        };
        assert_eq!((kept(0), kept(1)), (0, 1000));
        // Replacing a registration gives its bytes back.
        drop(state);
        let before = volumes.state().bytes;
        volumes.track(plan("ns", 1, 100), &written(1000));
        assert_eq!(volumes.state().bytes, before);
    }
}
