//! The provider core: runs a [`MountPlan`]: one Vault request per distinct
//! source, concurrently, then every object rendered and versioned. All or
//! nothing: any failure fails the whole Mount and no file is returned.
//!
//! - this module: [`Provider`] and the orchestration of one Mount;
//! - [`error`](self::error): [`MountError`], the one place where a failure
//!   becomes a gRPC status;
//! - `direct`: `--write-mode direct` around a Mount (target checked first,
//!   files written only when everything succeeded).
//!
//! Fewer Vault calls by design: objects sharing a source share one response;
//! identical reads of one identity across simultaneous Mounts share one call
//! (single flight); and a pod's certificates and leased credentials are kept
//! until `renewalPercent` of their lifetime (see [`crate::vault::leases`]).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use futures::{StreamExt as _, TryStreamExt as _};

mod direct;
pub mod error;
mod renewal;
pub mod volumes;

pub use error::MountError;

use crate::budget::ByteBudget;
use crate::proto::{File, MountRequest, MountResponse, ObjectVersion};
use crate::render;
use crate::request::{self, Defaults, Method, MountPlan, RequestError, Source};
use crate::sync::SecretSync;
use crate::vault::flight::{Flights, Role};
use crate::vault::leases::{self, LeaseCache, LeaseKey};
use crate::vault::{Identity, Origin, Token, Vault, VaultError};
use crate::version::Versioner;
use crate::write::WriteMode;
use volumes::Volumes;

/// Most Vault requests one Mount has in flight at once.
const FETCH_CONCURRENCY: usize = 16;
/// Default bound on cached pod certificates and leases.
const DEFAULT_LEASE_CAPACITY: usize = 10_000;
/// Default byte budget of the lease cache.
const DEFAULT_LEASE_BYTES: usize = 32 << 20;
/// Default bytes one Mount may fetch, and render (`--max-mount-bytes`).
const DEFAULT_MOUNT_BYTES: usize = 8 << 20;
/// Default largest response to the driver (`--max-response-size`).
const DEFAULT_RESPONSE_BYTES: usize = 4 << 20;
/// Most parses and renders running at once. They run on tokio's blocking
/// threads, never on the async workers, so a costly SecretProviderClass
/// cannot stall the workers that answer `/healthz` and other Mounts; this
/// bounds how many cores they take.
const CPU_CONCURRENCY: usize = 2;

/// The files of a multi-file object as one byte string for its version:
/// each path and content length-prefixed, so no two file sets collide.
fn concat_files(files: &[(request::FilePath, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (path, contents) in files {
        out.extend_from_slice(&(path.as_str().len() as u64).to_be_bytes());
        out.extend_from_slice(path.as_str().as_bytes());
        out.extend_from_slice(&(contents.len() as u64).to_be_bytes());
        out.extend_from_slice(contents);
    }
    out
}

/// An object's content as a template sees it: its text, or for `render:
/// keys` a map of key to text.
fn template_input(
    object: &request::ObjectSpec,
    rendered: &[(request::FilePath, Vec<u8>)],
) -> serde_json::Value {
    let text =
        |bytes: &[u8]| serde_json::Value::String(String::from_utf8_lossy(bytes).into_owned());
    if object.selection == request::Selection::Keys {
        let prefix = format!("{}/", object.name);
        serde_json::Value::Object(
            rendered
                .iter()
                .map(|(path, contents)| {
                    (
                        path.as_str().trim_start_matches(&prefix).to_owned(),
                        text(contents),
                    )
                })
                .collect(),
        )
    } else {
        rendered
            .first()
            .map_or(serde_json::Value::Null, |(_, contents)| text(contents))
    }
}

/// A Vault response, shared between the objects and Mounts that use it.
type Response = Arc<serde_json::Value>;

/// When a response, or the earliest of several, is due for renewal or
/// re-fetch: `None` for static data.
type Due = Option<tokio::time::Instant>;

/// A run's static (KV) responses, per source, as compact JSON text (`None`
/// for certificates and leases): what a volume refresh that only a
/// certificate or lease made due reuses instead of reading KV again.
type Statics = Vec<Option<Arc<str>>>;

/// How a run fetches its sources: each source's `renewalPercent`, and the
/// static responses it may reuse.
#[derive(Clone, Copy)]
struct Fetching<'r> {
    percent: &'r [u8],
    reuse: Option<&'r Statics>,
}

/// What running a plan gave.
struct Ran {
    response: MountResponse,
    /// When its earliest certificate or lease is due.
    due: Due,
    /// Its static responses (kept only in direct mode, for volume refreshes).
    statics: Statics,
}

/// Everything a Mount needs that outlives a single request.
pub struct Provider {
    vault: Vault,
    versioner: Arc<Versioner>,
    defaults: Arc<Defaults>,
    /// Bytes one Mount may fetch, and again render.
    max_mount_bytes: usize,
    /// Largest response to the driver: the tighter budget when the files go
    /// back to it.
    max_response_bytes: usize,
    /// Permits for [`CPU_CONCURRENCY`] parses and renders.
    cpu: Arc<tokio::sync::Semaphore>,
    leases: LeaseCache,
    reads: Flights<(Identity, Source), Result<Response, VaultError>>,
    write_mode: WriteMode,
    secret_sync: Option<SecretSync>,
    /// Direct-mode volumes kept fresh (`None`: response mode).
    volumes: Option<Arc<Volumes>>,
}

impl Provider {
    /// A provider with the given Vault client, version key and defaults.
    pub fn new(vault: Vault, versioner: Versioner, defaults: Defaults) -> Self {
        Self {
            vault,
            versioner: Arc::new(versioner),
            defaults: Arc::new(defaults),
            max_mount_bytes: DEFAULT_MOUNT_BYTES,
            max_response_bytes: DEFAULT_RESPONSE_BYTES,
            cpu: Arc::new(tokio::sync::Semaphore::new(CPU_CONCURRENCY)),
            leases: LeaseCache::new(DEFAULT_LEASE_CAPACITY, DEFAULT_LEASE_BYTES),
            reads: Flights::default(),
            write_mode: WriteMode::Response,
            secret_sync: None,
            volumes: None,
        }
    }

    /// In `--write-mode direct`, keeps at most `max_volumes` volumes fresh
    /// after their Mount, re-reading KV every `interval` (zero: certificates
    /// and leases only). Takes effect with [`Provider::spawn_background`].
    pub fn with_volume_refresh(mut self, interval: Duration, max_volumes: usize) -> Self {
        self.volumes = Some(Arc::new(Volumes::new(interval, max_volumes)));
        self
    }

    /// The tracked direct-mode volumes (for metrics and tests).
    pub fn volumes(&self) -> Option<&Volumes> {
        self.volumes.as_deref()
    }

    /// Starts the background work on the current runtime: token and lease
    /// renewal (both write modes) and, in direct mode, the volume refreshes.
    pub fn spawn_background(self: &Arc<Self>) {
        tokio::spawn(renewal::run(self.clone()));
        if self.write_mode == WriteMode::Direct
            && let Some(volumes) = &self.volumes
        {
            tokio::spawn(volumes.clone().run(self.clone()));
        }
    }

    /// Who writes the files: the driver (default) or the provider itself.
    pub fn with_write_mode(mut self, mode: WriteMode) -> Self {
        self.write_mode = mode;
        self
    }

    /// Bounds the per-pod certificate and lease cache to `capacity` entries
    /// and `bytes` of kept responses.
    pub fn with_lease_capacity(mut self, capacity: usize, bytes: usize) -> Self {
        self.leases = LeaseCache::new(capacity, bytes);
        self
    }

    /// Bytes one Mount may fetch from Vault, and again render into files
    /// (`--max-mount-bytes`), and the largest response to the driver
    /// (`--max-response-size`), which is the budget when it is smaller and
    /// the files go back to the driver. A Mount over its budget fails as soon
    /// as it is, not after holding everything.
    pub fn with_mount_budget(mut self, mount_bytes: usize, response_bytes: usize) -> Self {
        self.max_mount_bytes = mount_bytes;
        self.max_response_bytes = response_bytes;
        self
    }

    /// A fresh budget for one Mount (one for fetching, one for rendering).
    fn budget(&self) -> ByteBudget {
        match self.write_mode {
            WriteMode::Response if self.max_response_bytes <= self.max_mount_bytes => {
                ByteBudget::new(self.max_response_bytes, crate::budget::RESPONSE_FLAG)
            }
            _ => ByteBudget::new(self.max_mount_bytes, crate::budget::MOUNT_FLAG),
        }
    }

    /// Runs CPU-bound work (parsing, rendering) on a blocking thread, at most
    /// [`CPU_CONCURRENCY`] at once. The permit goes with the work, so a Mount
    /// that times out does not free it while the work still runs.
    async fn off_workers<T: Send + 'static>(&self, work: impl FnOnce() -> T + Send + 'static) -> T {
        let permit = self
            .cpu
            .clone()
            .acquire_owned()
            .await
            .expect("the CPU semaphore is never closed");
        let task = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            work()
        });
        match task.await {
            Ok(value) => value,
            Err(err) => std::panic::resume_unwind(err.into_panic()),
        }
    }

    /// The per-pod certificate and lease cache (for metrics and tests).
    pub fn leases(&self) -> &LeaseCache {
        &self.leases
    }

    /// Drops per-pod state (certificates, leases, tokens) unused for longer
    /// than `idle`; with `revoke`, revokes the leases and tokens it drops.
    pub async fn expire_idle(&self, idle: Duration, revoke: bool) {
        let leases = self.leases.expire_idle(idle);
        let tokens = self.vault.tokens().expire_idle(idle);
        if !leases.is_empty() || !tokens.is_empty() {
            tracing::info!(
                leases = leases.len(),
                tokens = tokens.len(),
                "dropped idle pod state"
            );
        }
        if !revoke {
            return;
        }
        for (key, lease) in leases {
            let Some(token) = self.vault.tokens().peek(&key.identity) else {
                continue;
            };
            if let Err(err) = self
                .vault
                .revoke_lease(
                    &key.identity.target,
                    &token,
                    key.source.namespace.as_ref(),
                    &lease.id,
                )
                .await
            {
                tracing::warn!(error = %err, "cannot revoke an idle lease");
            }
        }
        for (identity, token) in tokens {
            self.vault.revoke_token(&identity, &token).await;
        }
    }

    /// Mounts waiting for another Mount's identical read now (for tests).
    pub fn reads_following(&self) -> usize {
        self.reads.following()
    }

    /// The Vault client (for health and metrics).
    pub fn vault(&self) -> &Vault {
        &self.vault
    }

    /// Parses and runs one driver request.
    pub async fn mount(&self, request: &MountRequest) -> Result<MountResponse, MountError> {
        let plan = {
            let request = request.clone();
            let defaults = self.defaults.clone();
            self.off_workers(move || request::parse(&request, &defaults))
                .await?
        };
        // The Mount's log span (server::observer::MountObserver) has a field for this.
        tracing::Span::current().record("objects", plan.objects.len() + plan.templates.len());
        match self.write_mode {
            WriteMode::Response => {
                plan.check_response_mode()?;
                self.run_and_sync(&plan).await.map(|ran| ran.response)
            }
            WriteMode::Direct => {
                let written = direct::direct(&plan, self.run_and_sync(&plan)).await?;
                if let Some(volumes) = &self.volumes {
                    volumes.track(plan, &written);
                }
                Ok(written.ran.response)
            }
        }
    }

    /// Provider-side sync of `syncSecretName` Secrets (`serve --sync-secrets`).
    pub fn with_secret_sync(mut self, sync: SecretSync) -> Self {
        self.secret_sync = Some(sync);
        self
    }

    /// Runs a plan, then applies its Secret if it asks for one: the Mount
    /// succeeds only if both do.
    async fn run_and_sync(&self, plan: &MountPlan) -> Result<Ran, MountError> {
        let Some(target) = &plan.sync_secret else {
            return self.run_reusing(plan, None).await;
        };
        let Some(sync) = &self.secret_sync else {
            return Err(RequestError::invalid(
                "syncSecretName",
                "provider-side Secret sync is off on this provider (serve --sync-secrets)",
            )
            .into());
        };
        let ran = self.run_reusing(plan, None).await?;
        sync.apply(target, &ran.response.files).await?;
        Ok(ran)
    }

    /// Runs a parsed plan.
    pub async fn run(&self, plan: &MountPlan) -> Result<MountResponse, MountError> {
        self.run_reusing(plan, None).await.map(|ran| ran.response)
    }

    /// Runs a parsed plan, taking the static sources from `reuse` (an earlier
    /// run's [`Statics`]) where it has them; also says when its earliest
    /// certificate or lease is due for renewal or re-fetch.
    async fn run_reusing(
        &self,
        plan: &MountPlan,
        reuse: Option<&Statics>,
    ) -> Result<Ran, MountError> {
        // Objects sharing a source get one response: a certificate and its
        // key, or a username and its password, always belong together.
        let mut sources: Vec<&Source> = Vec::new();
        let mut index: HashMap<&Source, usize> = HashMap::new();
        let mut source_of = Vec::with_capacity(plan.objects.len());
        for object in &plan.objects {
            let next = sources.len();
            let i = *index.entry(&object.source).or_insert(next);
            if i == next {
                sources.push(&object.source);
            }
            source_of.push(i);
        }

        // A shared source renews at the earliest share any of its objects asks for.
        let mut percent = vec![leases::DEFAULT_PERCENT; sources.len()];
        for (object, &i) in plan.objects.iter().zip(&source_of) {
            percent[i] = percent[i].min(object.renewal_percent);
        }
        let budget = self.budget();
        let how = Fetching {
            percent: &percent,
            reuse,
        };
        let fetched = self.fetch(plan, &sources, how, &budget).await?;
        let due = fetched.iter().filter_map(|(_, due)| *due).min();
        let responses: Vec<Response> = fetched.into_iter().map(|(r, _)| r).collect();
        let statics = if self.volumes.is_some() {
            let now = tokio::time::Instant::now();
            responses
                .iter()
                .map(|r| {
                    leases::classify(r, 100, now)
                        .is_none()
                        .then(|| Arc::from(r.to_string()))
                })
                .collect()
        } else {
            Vec::new()
        };

        // Rendering is charged anew: the files are what the response holds.
        let objects = plan.objects.clone();
        let templates = plan.templates.clone();
        let default_mode = plan.default_mode;
        // Versions are keyed per pod namespace: no one can compare them
        // across namespaces to confirm a guess.
        let versioner = self.versioner.for_namespace(plan.pod.namespace.as_deref());
        let budget = self.budget();
        self.off_workers(move || {
            render_all(
                &objects,
                &templates,
                default_mode,
                &source_of,
                &responses,
                &versioner,
                &budget,
            )
        })
        .await
        .map(|response| Ran {
            response,
            due,
            statics,
        })
    }

    /// Fetches every source with the identity's token. A cached token that
    /// meets a 403 may have been revoked or expired early: it is dropped and
    /// the fetch is tried once more with a fresh login.
    async fn fetch(
        &self,
        plan: &MountPlan,
        sources: &[&Source],
        how: Fetching<'_>,
        budget: &ByteBudget,
    ) -> Result<Vec<(Response, Due)>, MountError> {
        let (identity, token, origin) = self
            .vault
            .token(&plan.vault, &plan.auth, &plan.pod)
            .await
            .map_err(MountError::login)?;
        match self
            .fetch_with(plan, sources, how, &identity, &token, budget)
            .await
        {
            Err((_, VaultError::PermissionDenied(_))) if origin == Origin::Cached => {
                tracing::debug!("cached token refused; logging in again");
                self.vault.invalidate(&identity, &token);
                let (identity, token, _) = self
                    .vault
                    .token(&plan.vault, &plan.auth, &plan.pod)
                    .await
                    .map_err(MountError::login)?;
                self.fetch_with(plan, sources, how, &identity, &token, budget)
                    .await
                    .map_err(|(source, err)| MountError::read(plan, source, err))
            }
            result => result.map_err(|(source, err)| MountError::read(plan, source, err)),
        }
    }

    async fn fetch_with<'a>(
        &self,
        plan: &MountPlan,
        sources: &[&'a Source],
        how: Fetching<'_>,
        identity: &Identity,
        token: &Token,
        budget: &ByteBudget,
    ) -> Result<Vec<(Response, Due)>, (&'a Source, VaultError)> {
        // Indices rather than references keep the stream's closure free of
        // higher-ranked lifetimes, which the gRPC service's Send bound needs.
        futures::stream::iter(0..sources.len())
            .map(|i| async move {
                if let Some(text) = how.reuse.and_then(|r| r.get(i)).and_then(Option::as_ref) {
                    let response: Response = Arc::new(
                        serde_json::from_str(text).expect("JSON text that serde_json wrote"),
                    );
                    charge_shared(budget, sources[i], &response).map_err(|err| (i, err))?;
                    return Ok((response, None));
                }
                self.fetch_source(plan, sources[i], how.percent[i], identity, token, budget)
                    .await
                    .map_err(|err| (i, err))
            })
            .buffered(FETCH_CONCURRENCY)
            .try_collect()
            .await
            .map_err(|(i, err)| (sources[i], err))
    }

    /// One source: from the pod's cache if it holds a live certificate or
    /// lease, else from Vault (shared with identical concurrent reads).
    async fn fetch_source(
        &self,
        plan: &MountPlan,
        source: &Source,
        percent: u8,
        identity: &Identity,
        token: &Token,
        budget: &ByteBudget,
    ) -> Result<(Response, Due), VaultError> {
        let Some(pod_uid) = plan.pod.uid.as_deref() else {
            let (response, _) = self
                .shared_read(plan, source, identity, token, budget)
                .await?;
            let due = leases::classify(&response, percent, tokio::time::Instant::now())
                .map(|dynamic| dynamic.refresh_at);
            return Ok((response, due));
        };
        let key = LeaseKey {
            pod_uid: pod_uid.to_owned(),
            identity: identity.clone(),
            source: source.clone(),
        };
        let fetch = || async {
            let (response, role) = self
                .shared_read(plan, source, identity, token, budget)
                .await?;
            // Another pod's certificate or credentials are not ours to use.
            if role == Role::Follower
                && leases::classify(&response, percent, tokio::time::Instant::now()).is_some()
            {
                return self
                    .vault
                    .read(&plan.vault, token, source, budget)
                    .await
                    .map(Arc::new);
            }
            Ok(response)
        };
        let renew = |lease: leases::Lease| async move {
            self.vault
                .renew_lease(
                    &plan.vault,
                    token,
                    source.namespace.as_ref(),
                    &lease.id,
                    lease.duration,
                )
                .await
        };
        let (response, outcome) = self.leases.get(&key, percent, fetch, renew).await?;
        if outcome != leases::Outcome::Fetched {
            // Kept from an earlier Mount: this one holds it all the same.
            charge_shared(budget, source, &response)?;
        }
        Ok((response, self.leases.refresh_at(&key)))
    }

    /// Reads are shared between simultaneous Mounts of one identity; writes
    /// (e.g. PKI issue) never are.
    async fn shared_read(
        &self,
        plan: &MountPlan,
        source: &Source,
        identity: &Identity,
        token: &Token,
        budget: &ByteBudget,
    ) -> Result<(Response, Role), VaultError> {
        let read = || async {
            self.vault
                .read(&plan.vault, token, source, budget)
                .await
                .map(Arc::new)
        };
        if matches!(source.method, Method::Get | Method::List) {
            let (result, role) = self
                .reads
                .run(&(identity.clone(), source.clone()), read)
                .await;
            let response = result?;
            if role == Role::Follower {
                // The leader's Mount paid for reading it; this one holds it too.
                charge_shared(budget, source, &response)?;
            }
            Ok((response, role))
        } else {
            read().await.map(|r| (r, Role::Leader))
        }
    }
}

/// Charges `budget` for a response this Mount did not read itself.
fn charge_shared(
    budget: &ByteBudget,
    source: &Source,
    response: &Response,
) -> Result<(), VaultError> {
    budget
        .charge(crate::budget::json_weight(response))
        .map_err(|over| VaultError::TooLarge(format!("{}: {over}", source.display_path())))
}

/// Every object rendered and versioned, templates last; the files are
/// charged to `budget` as they are made. CPU-bound: runs off the workers.
fn render_all(
    objects: &[request::ObjectSpec],
    templates: &[request::TemplateSpec],
    default_mode: u32,
    source_of: &[usize],
    responses: &[Response],
    versioner: &Versioner,
    budget: &ByteBudget,
) -> Result<MountResponse, MountError> {
    let mut files = Vec::with_capacity(objects.len() + templates.len());
    let mut versions = Vec::with_capacity(objects.len() + templates.len());
    // What templates may refer to; built only when there are templates.
    let mut context = BTreeMap::new();
    for (object, &i) in objects.iter().zip(source_of) {
        let rendered = render::render_files(object, &responses[i])?;
        let bytes = rendered
            .iter()
            .map(|(path, contents)| path.as_str().len() + contents.len());
        budget
            .charge(bytes.sum())
            .map_err(|source| render::RenderError::TooLarge {
                object: object.name.to_string(),
                source,
            })?;
        let mode = object.mode.unwrap_or(default_mode) as i32;
        let version = match rendered.as_slice() {
            [(path, contents)] if *path == object.name => {
                versioner.version(object.name.as_str(), contents)
            }
            many => versioner.version(object.name.as_str(), &concat_files(many)),
        };
        versions.push(ObjectVersion {
            id: object.name.to_string(),
            version,
        });
        if !templates.is_empty() {
            context.insert(object.name.to_string(), template_input(object, &rendered));
        }
        files.extend(rendered.into_iter().map(|(path, contents)| File {
            path: path.to_string(),
            mode,
            contents,
        }));
    }
    for template in templates {
        let contents = render::render_template(template, &context, budget)?;
        versions.push(ObjectVersion {
            id: template.name.to_string(),
            version: versioner.version(template.name.as_str(), &contents),
        });
        files.push(File {
            path: template.name.to_string(),
            mode: template.mode.unwrap_or(default_mode) as i32,
            contents,
        });
    }
    Ok(MountResponse {
        object_version: versions,
        error: None,
        files,
    })
}
