//! Logging in to Vault, and the tokens that come of it: vaultrs does the
//! logins, renewals and revocations, on a short-lived [`Scoped`] view that
//! carries the namespace and shares our connection pool (vaultrs itself fixes
//! the namespace per client and builds a pool per client).
//!
//! Adding an auth method: one [`Credentials`] variant in `request::auth`, and
//! one arm in [`Vault::login`] here.

use std::sync::Arc;

use futures::StreamExt as _;
use std::time::{Duration, Instant};

use secrecy::{ExposeSecret as _, SecretString};
use vaultrs::api::{AuthInfo, EndpointMiddleware};
use vaultrs::client::VaultClientSettings;
use zeroize::Zeroize as _;

use super::Vault;
use super::error::{VaultError, login_error, login_retry, login_status, with_attempts};
use super::fair::Tenant;
use super::http::vaultrs_base;
use super::tokens::{Identity, Origin, Refresh, Token};
use crate::request::{AuthPlan, Credentials, Namespace, PodInfo, VaultTarget};

/// Longest token we accept from a login. Service tokens are about 100
/// characters, batch tokens a few hundred.
const MAX_TOKEN_LEN: usize = 4096;
/// Background renewals running at once.
pub(crate) const BACKGROUND_CONCURRENCY: usize = 8;
use crate::telemetry::metrics::{Operation, metrics};

impl Vault {
    /// A token for the plan's identity: cached, renewed, or from one login
    /// shared by all concurrent callers. The pod's UID binds service-account
    /// identities to their pod, so a pod keeps one Vault token while kubelet
    /// rotates its JWT; its namespace is the tenant the token serves.
    pub async fn token(
        &self,
        target: &VaultTarget,
        auth: &AuthPlan,
        pod: &PodInfo,
    ) -> Result<(Identity, Token, Origin), VaultError> {
        let identity = Self::identity(target, auth, pod);
        let tenant = identity.tenant.clone();
        let found = self
            .tokens
            .get(
                &identity,
                || self.login(target, auth, &tenant),
                |token| self.renew(target, auth.namespace.as_ref(), token),
            )
            .await;
        metrics().token_lookup(matches!(found, Ok((_, Origin::Cached))));
        let (token, origin) = found?;
        Ok((identity, token, origin))
    }

    /// Who logs in for `auth` on behalf of `pod`: the token cache's key.
    pub fn identity(target: &VaultTarget, auth: &AuthPlan, pod: &PodInfo) -> Identity {
        let (principal, credential_digest) = auth.credentials.identity(pod.uid.as_deref());
        Identity {
            tenant: Tenant::new(pod.namespace.as_deref()),
            target: target.clone(),
            namespace: auth.namespace.clone(),
            auth_mount: auth.auth_mount.clone(),
            principal,
            credential_digest,
        }
    }

    /// Renews, in the background, every cached token that is due and
    /// renewable; returns how many were renewed and how many failed. Never
    /// logs in: that needs credentials only a Mount brings.
    pub async fn renew_due_tokens(&self) -> (usize, usize) {
        let due = self.tokens.due();
        self.renew_tokens(due).await
    }

    /// Renews these tokens in the background, as [`Vault::renew_due_tokens`].
    pub async fn renew_tokens(&self, due: Vec<Identity>) -> (usize, usize) {
        let results = futures::stream::iter(due)
            .map(|identity| async move {
                self.tokens
                    .renew_in_background(&identity, |token| {
                        self.renew(&identity.target, identity.namespace.as_ref(), token)
                    })
                    .await
            })
            .buffer_unordered(BACKGROUND_CONCURRENCY)
            .collect::<Vec<_>>()
            .await;
        let renewed = results.iter().filter(|r| **r == Some(true)).count();
        let failed = results.iter().filter(|r| **r == Some(false)).count();
        (renewed, failed)
    }

    /// `renew-self` with the token's own period; any failure means "log in".
    async fn renew(
        &self,
        target: &VaultTarget,
        namespace: Option<&Namespace>,
        token: Token,
    ) -> Refresh {
        let Ok(scope) = self.scope(target, namespace, Some(&token)).await else {
            return Refresh::Login;
        };
        let increment = format!("{}s", token.ttl.as_secs().max(1));
        let _permit = self.http.permit(&token.tenant).await;
        match vaultrs::token::renew_self(&scope, Some(&increment)).await {
            Ok(info) if info.lease_duration > 0 => {
                tracing::debug!(ttl_s = info.lease_duration, "renewed Vault token");
                Refresh::Renewed(Duration::from_secs(info.lease_duration))
            }
            Ok(_) => Refresh::Login,
            Err(err) => {
                tracing::debug!(error = %login_error(err, "token renewal"), "token renewal failed; logging in");
                Refresh::Login
            }
        }
    }

    /// Revokes every cached token (at shutdown, when asked to). Best effort:
    /// failures are logged and the tokens expire on their own.
    pub async fn revoke_all(&self) -> usize {
        let mut revoked = 0;
        for (identity, token) in self.tokens.drain() {
            revoked += usize::from(self.revoke_token(&identity, &token).await);
        }
        revoked
    }

    /// Revokes one token (`revoke-self`); returns whether Vault accepted.
    pub async fn revoke_token(&self, identity: &Identity, token: &Token) -> bool {
        let Ok(scope) = self
            .scope(&identity.target, identity.namespace.as_ref(), Some(token))
            .await
        else {
            return false;
        };
        let _permit = self.http.permit(&identity.tenant).await;
        match vaultrs::token::revoke_self(&scope).await {
            Ok(()) => true,
            Err(err) => {
                tracing::warn!(error = %login_error(err, "token revocation"), "cannot revoke a Vault token");
                false
            }
        }
    }

    /// Forgets a token that Vault no longer accepts.
    pub fn invalidate(&self, identity: &Identity, token: &Token) {
        self.tokens.invalidate(identity, token);
    }

    /// A vaultrs client view on our pool, in `namespace`, with `token`.
    async fn scope<'a>(
        &'a self,
        target: &VaultTarget,
        namespace: Option<&Namespace>,
        token: Option<&Token>,
    ) -> Result<Scoped<'a>, VaultError> {
        let endpoint = self.http.endpoint(target).await?;
        let (origin, version) = vaultrs_base(&endpoint.base);
        Ok(Scoped {
            http: rustify::clients::reqwest::Client::new(&origin, endpoint.http),
            middle: EndpointMiddleware {
                token: token
                    .map(|t| t.secret.expose_secret().to_owned())
                    .unwrap_or_default(),
                version,
                wrap: None,
                namespace: namespace.map(|ns| ns.as_str().to_owned()),
            },
            settings: &self.inert_settings,
        })
    }

    async fn login(
        &self,
        target: &VaultTarget,
        auth: &AuthPlan,
        tenant: &Tenant,
    ) -> Result<Token, VaultError> {
        let namespace = auth.namespace.as_ref();
        let mount = auth.auth_mount.as_str();
        let scope = self.scope(target, namespace, None).await?;
        let where_ = format!(
            "auth/{mount} in namespace {}",
            namespace.map_or("(root)", Namespace::as_str)
        );
        let mut failed = 0;
        let (result, status, started) = loop {
            let permit = self.http.permit(tenant).await;
            let started = Instant::now();
            // One arm per auth method.
            let result = match &auth.credentials {
                Credentials::AppRole { role_id, secret_id } => {
                    vaultrs::auth::approle::login(&scope, mount, role_id, secret_id.expose_secret())
                        .await
                }
                Credentials::Kubernetes(login) => {
                    vaultrs::auth::kubernetes::login(
                        &scope,
                        mount,
                        &login.role,
                        login.jwt.expose_secret(),
                    )
                    .await
                }
                Credentials::Jwt(login) => {
                    vaultrs::auth::oidc::login(
                        &scope,
                        mount,
                        login.jwt.expose_secret(),
                        Some(login.role.clone()),
                    )
                    .await
                }
            };
            drop(permit);
            let status = login_status(&result);
            let Err(err) = &result else {
                break (result, status, started);
            };
            failed += 1;
            // A login is a write (it makes a token, and may spend a secret-ID
            // use), so it is repeated only when Vault surely did nothing.
            if !self.http.retry.again(failed, login_retry(err), false) {
                break (result, status, started);
            }
            metrics().vault_request(Operation::Login, status, started.elapsed());
            tracing::debug!(
                attempt = failed,
                status,
                "login failed transiently; retrying"
            );
            tokio::time::sleep(self.http.retry.backoff(failed)).await;
        };
        let result = result.map_err(|err| with_attempts(login_error(err, &where_), failed));
        metrics().login(
            auth.credentials.method().label(),
            status,
            result.as_ref().map_or_else(VaultError::label, |_| "ok"),
            started.elapsed(),
        );
        let info: AuthInfo = result?;
        check_token(&info.client_token, &where_)?;
        tracing::debug!(
            ttl_s = info.lease_duration,
            renewable = info.renewable,
            "logged in to Vault"
        );
        Ok(Token {
            secret: Arc::new(SecretString::from(info.client_token)),
            ttl: Duration::from_secs(info.lease_duration),
            renewable: info.renewable,
            tenant: tenant.clone(),
        })
    }
}

/// A token must fit in an HTTP header as it is: visible ASCII, bounded. A
/// login answering anything else (a hostile or broken server) fails here
/// instead of later, when the token would be sent.
fn check_token(token: &str, where_: &str) -> Result<(), VaultError> {
    if token.is_empty() {
        return Err(VaultError::Unexpected(format!(
            "login at {where_} returned no token"
        )));
    }
    if token.len() > MAX_TOKEN_LEN {
        return Err(VaultError::Unexpected(format!(
            "login at {where_} returned a token longer than {MAX_TOKEN_LEN} characters"
        )));
    }
    if !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(VaultError::Unexpected(format!(
            "login at {where_} returned a token with characters other than visible ASCII"
        )));
    }
    Ok(())
}

/// vaultrs' client trait, implemented on a borrowed view: our shared pool,
/// a per-call namespace, no token (logins need none).
struct Scoped<'a> {
    http: rustify::clients::reqwest::Client,
    middle: EndpointMiddleware,
    settings: &'a VaultClientSettings,
}

impl Drop for Scoped<'_> {
    fn drop(&mut self) {
        // vaultrs wants the token as a plain String; wipe that copy.
        self.middle.token.zeroize();
    }
}

impl vaultrs::client::Client for Scoped<'_> {
    fn http(&self) -> &rustify::clients::reqwest::Client {
        &self.http
    }

    fn middle(&self) -> &EndpointMiddleware {
        &self.middle
    }

    fn settings(&self) -> &VaultClientSettings {
        self.settings
    }

    fn set_token(&mut self, token: &str) {
        token.clone_into(&mut self.middle.token);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_must_be_visible_ascii_and_bounded() {
        assert!(check_token("hvs.CAESIabc-_.", "x").is_ok());
        for bad in [
            "",
            "a\nb",
            "a b",
            "a\u{7f}",
            "é",
            &"a".repeat(MAX_TOKEN_LEN + 1),
        ] {
            let err = check_token(bad, "auth/approle").unwrap_err();
            assert!(matches!(err, VaultError::Unexpected(_)), "{bad:?}: {err}");
            assert!(!err.to_string().contains(bad) || bad.is_empty());
        }
    }
}
