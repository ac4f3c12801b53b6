//! Runs a [`MountPlan`]: one Vault request per distinct source, concurrently,
//! then every object rendered and versioned. All or nothing: any failure
//! fails the whole Mount and no file is returned.

use std::collections::HashMap;

use futures::{StreamExt as _, TryStreamExt as _};

use crate::error::MountError;
use crate::proto::{File, MountRequest, MountResponse, ObjectVersion};
use crate::render;
use crate::request::{self, Defaults, MountPlan, Source};
use crate::vault::{Origin, Token, Vault, VaultError};
use crate::version::Versioner;

/// Most Vault requests one Mount has in flight at once.
const FETCH_CONCURRENCY: usize = 16;

/// Everything a Mount needs that outlives a single request.
pub struct Provider {
    vault: Vault,
    versioner: Versioner,
    defaults: Defaults,
}

impl Provider {
    /// A provider with the given Vault client, version key and defaults.
    pub fn new(vault: Vault, versioner: Versioner, defaults: Defaults) -> Self {
        Self {
            vault,
            versioner,
            defaults,
        }
    }

    /// The Vault client (for health and metrics).
    pub fn vault(&self) -> &Vault {
        &self.vault
    }

    /// Parses and runs one driver request.
    pub async fn mount(&self, request: &MountRequest) -> Result<MountResponse, MountError> {
        let plan = request::parse(request, &self.defaults)?;
        // The Mount's log span (telemetry::MountObserver) has a field for this.
        tracing::Span::current().record("objects", plan.objects.len());
        self.run(&plan).await
    }

    /// Runs a parsed plan.
    pub async fn run(&self, plan: &MountPlan) -> Result<MountResponse, MountError> {
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

        let responses = self.fetch(plan, &sources).await?;

        let mut files = Vec::with_capacity(plan.objects.len());
        let mut versions = Vec::with_capacity(plan.objects.len());
        for (object, &i) in plan.objects.iter().zip(&source_of) {
            let contents = render::render(object, &responses[i])?;
            versions.push(ObjectVersion {
                id: object.name.to_string(),
                version: self.versioner.version(object.name.as_str(), &contents),
            });
            files.push(File {
                path: object.name.to_string(),
                mode: object.mode.unwrap_or(plan.default_mode) as i32,
                contents,
            });
        }
        Ok(MountResponse {
            object_version: versions,
            error: None,
            files,
        })
    }

    /// Fetches every source with the identity's token. A cached token that
    /// meets a 403 may have been revoked or expired early: it is dropped and
    /// the fetch is tried once more with a fresh login.
    async fn fetch(
        &self,
        plan: &MountPlan,
        sources: &[&Source],
    ) -> Result<Vec<serde_json::Value>, MountError> {
        let (identity, token, origin) = self
            .vault
            .token(&plan.vault, &plan.auth)
            .await
            .map_err(MountError::login)?;
        match self.fetch_with(plan, sources, &token).await {
            Err((_, VaultError::PermissionDenied(_))) if origin == Origin::Cached => {
                tracing::debug!("cached token refused; logging in again");
                self.vault.invalidate(&identity, &token);
                let (_, token, _) = self
                    .vault
                    .token(&plan.vault, &plan.auth)
                    .await
                    .map_err(MountError::login)?;
                self.fetch_with(plan, sources, &token)
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
        token: &Token,
    ) -> Result<Vec<serde_json::Value>, (&'a Source, VaultError)> {
        // Indices rather than references keep the stream's closure free of
        // higher-ranked lifetimes, which the gRPC service's Send bound needs.
        futures::stream::iter(0..sources.len())
            .map(|i| async move {
                self.vault
                    .read(&plan.vault, token, sources[i])
                    .await
                    .map_err(|err| (i, err))
            })
            .buffered(FETCH_CONCURRENCY)
            .try_collect()
            .await
            .map_err(|(i, err)| (sources[i], err))
    }
}
