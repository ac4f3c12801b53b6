//! Logging in to Vault, and the tokens that come of it: vaultrs does the
//! logins, renewals and revocations, on a short-lived [`Scoped`] view that
//! carries the namespace and shares our connection pool (vaultrs itself fixes
//! the namespace per client and builds a pool per client).
//!
//! Adding an auth method: one [`Credentials`] variant in `request::auth`, and
//! one arm in [`Vault::login`] here.

use std::sync::Arc;
use std::time::{Duration, Instant};

use secrecy::{ExposeSecret as _, SecretString};
use vaultrs::api::{AuthInfo, EndpointMiddleware};
use vaultrs::client::VaultClientSettings;
use zeroize::Zeroize as _;

use super::Vault;
use super::error::{VaultError, login_error, login_retry, login_status, with_attempts};
use super::tokens::{Identity, Origin, Refresh, Token};
use crate::request::{AuthPlan, Credentials, Namespace, VaultTarget};
use crate::telemetry::metrics::{Operation, metrics};

impl Vault {
    /// A token for the plan's identity: cached, renewed, or from one login
    /// shared by all concurrent callers. `pod_uid` binds service-account
    /// identities to their pod, so a pod keeps one Vault token while kubelet
    /// rotates its JWT.
    pub async fn token(
        &self,
        target: &VaultTarget,
        auth: &AuthPlan,
        pod_uid: Option<&str>,
    ) -> Result<(Identity, Token, Origin), VaultError> {
        let (principal, credential_digest) = auth.credentials.identity(pod_uid);
        let identity = Identity {
            target: target.clone(),
            namespace: auth.namespace.clone(),
            auth_mount: auth.auth_mount.clone(),
            principal,
            credential_digest,
        };
        let found = self
            .tokens
            .get(
                &identity,
                || self.login(target, auth),
                |token| self.renew(target, auth, token),
            )
            .await;
        metrics().token_lookup(matches!(found, Ok((_, Origin::Cached))));
        let (token, origin) = found?;
        Ok((identity, token, origin))
    }

    /// `renew-self` with the token's own period; any failure means "log in".
    async fn renew(&self, target: &VaultTarget, auth: &AuthPlan, token: Token) -> Refresh {
        let Ok(scope) = self
            .scope(target, auth.namespace.as_ref(), Some(&token))
            .await
        else {
            return Refresh::Login;
        };
        let increment = format!("{}s", token.ttl.as_secs().max(1));
        let _permit = self.http.permit().await;
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
        let _permit = self.http.permit().await;
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
        Ok(Scoped {
            http: rustify::clients::reqwest::Client::new(
                endpoint.base.as_str().trim_end_matches('/'),
                endpoint.http,
            ),
            middle: EndpointMiddleware {
                token: token
                    .map(|t| t.secret.expose_secret().to_owned())
                    .unwrap_or_default(),
                version: "v1".to_owned(),
                wrap: None,
                namespace: namespace.map(|ns| ns.as_str().to_owned()),
            },
            settings: &self.inert_settings,
        })
    }

    async fn login(&self, target: &VaultTarget, auth: &AuthPlan) -> Result<Token, VaultError> {
        let namespace = auth.namespace.as_ref();
        let mount = auth.auth_mount.as_str();
        let scope = self.scope(target, namespace, None).await?;
        let where_ = format!(
            "auth/{mount} in namespace {}",
            namespace.map_or("(root)", Namespace::as_str)
        );
        let mut failed = 0;
        let (result, status, started) = loop {
            let permit = self.http.permit().await;
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
        if info.client_token.is_empty() {
            return Err(VaultError::Unexpected(format!(
                "login at {where_} returned no token"
            )));
        }
        tracing::debug!(
            ttl_s = info.lease_duration,
            renewable = info.renewable,
            "logged in to Vault"
        );
        Ok(Token {
            secret: Arc::new(SecretString::from(info.client_token)),
            ttl: Duration::from_secs(info.lease_duration),
            renewable: info.renewable,
        })
    }
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
