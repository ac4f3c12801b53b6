//! Every way a Vault interaction fails, as one typed [`VaultError`]: HTTP
//! statuses, vaultrs' login errors and transport failures all end up here, so
//! callers match on what the pod owner should do, not on how it was reported.

use rustify::errors::ClientError as Rest;
use vaultrs::api::AuthInfo;
use vaultrs::error::ClientError;

use super::retry::{self, Retry};

/// Longest Vault error text we repeat in a message.
const MAX_ERROR_TEXT: usize = 300;

/// A failed Vault interaction, by what the pod owner should do about it.
#[derive(Debug, Clone, thiserror::Error)]
pub enum VaultError {
    /// Vault refused the login (wrong role or secret ID, expired secret ID,
    /// JWT rejected).
    #[error("Vault refused the login: {0}")]
    LoginRefused(String),
    /// The token is valid but its policy does not allow the request; or, at
    /// login, the identity is valid but the role does not admit it (Kubernetes
    /// auth: service account or namespace not bound).
    #[error("permission denied: {0}")]
    PermissionDenied(String),
    /// No secret, version or namespace at that path.
    #[error("not found: {0}")]
    NotFound(String),
    /// Vault rejected the request's parameters (HTTP 400 on a read or write).
    #[error("Vault rejected the request: {0}")]
    Rejected(String),
    /// Unreachable, sealed, overloaded or too slow: worth retrying.
    #[error("Vault is unavailable: {0}")]
    Unavailable(String),
    /// The provider's own TLS configuration cannot be used.
    #[error("TLS configuration: {0}")]
    Tls(String),
    /// Vault answered something we cannot use.
    #[error("unexpected response from Vault: {0}")]
    Unexpected(String),
}

impl VaultError {
    /// A short, stable label for metrics (a closed set).
    pub fn label(&self) -> &'static str {
        match self {
            Self::LoginRefused(_) => "refused",
            Self::PermissionDenied(_) => "permission_denied",
            Self::NotFound(_) => "not_found",
            Self::Rejected(_) => "rejected",
            Self::Unavailable(_) => "unavailable",
            Self::Tls(_) => "tls",
            Self::Unexpected(_) => "unexpected",
        }
    }
}

/// Says how many attempts an unavailable Vault was given, so a pod owner
/// sees that the provider did retry (and did not hammer).
pub(super) fn with_attempts(err: VaultError, attempts: u32) -> VaultError {
    match err {
        VaultError::Unavailable(message) if attempts > 1 => {
            VaultError::Unavailable(format!("{message} (gave up after {attempts} attempts)"))
        }
        other => other,
    }
}

pub(super) fn transport_error(err: &reqwest::Error, what: &str) -> VaultError {
    let kind = if err.is_timeout() {
        "timed out"
    } else if err.is_connect() {
        "cannot connect"
    } else {
        "request failed"
    };
    // reqwest's Display includes the URL, which holds no secret; the chain
    // below it names the OS error (connection refused, reset, ...).
    let mut cause = String::new();
    let mut source = std::error::Error::source(err);
    while let Some(inner) = source {
        cause = inner.to_string();
        source = inner.source();
    }
    unavailable_or_tls(what, kind, &cause)
}

/// A transport failure: `Unavailable`, except for a certificate the provider
/// cannot verify, which is a configuration problem (CA, server name) that
/// retrying cannot fix.
fn unavailable_or_tls(what: &str, kind: &str, cause: &str) -> VaultError {
    // Vault's certificate is judged here; an alert from Vault means it did
    // not like ours (missing, expired, or from a CA it does not trust).
    if cause.contains("received fatal alert") {
        return VaultError::Tls(format!(
            "{what}: Vault refused the TLS handshake ({cause}); check the client certificate \
             (vaultTLSClientCertPath and vaultTLSClientKeyPath, or --vault-tls-client-cert and \
             --vault-tls-client-key) and that Vault trusts its CA"
        ));
    }
    if cause.contains("certificate") || cause.contains("Certificate") {
        return VaultError::Tls(format!(
            "{what}: Vault's TLS certificate was not accepted ({cause}); check vaultCACertPath, \
             vaultCADirectory or vaultTLSServerName"
        ));
    }
    VaultError::Unavailable(format!("{what}: {kind}: {cause}"))
}

pub(super) fn is_certificate_error(err: &reqwest::Error) -> bool {
    let mut source = std::error::Error::source(err);
    while let Some(inner) = source {
        let text = inner.to_string();
        if text.contains("certificate")
            || text.contains("Certificate")
            || text.contains("received fatal alert")
        {
            return true;
        }
        source = inner.source();
    }
    false
}

/// Vault's `{"errors": [...]}` text, shortened.
fn error_text(body: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    struct Errors {
        #[serde(default)]
        errors: Vec<String>,
    }
    let text = match serde_json::from_slice::<Errors>(body) {
        Ok(parsed) if !parsed.errors.is_empty() => parsed.errors.join("; "),
        Ok(_) => String::new(),
        Err(_) => String::from_utf8_lossy(body).trim().to_owned(),
    };
    let text = text.replace(['\n', '\t'], " ");
    let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if text.len() > MAX_ERROR_TEXT {
        let mut end = MAX_ERROR_TEXT;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}…", &text[..end])
    } else {
        text
    }
}

fn with_detail(what: &str, detail: &str) -> String {
    if detail.is_empty() {
        what.to_owned()
    } else {
        format!("{what}: {detail}")
    }
}

pub(super) fn status_error(status: u16, body: &[u8], what: &str) -> VaultError {
    let detail = error_text(body);
    match status {
        400 => VaultError::Rejected(with_detail(what, &detail)),
        401 | 403 => VaultError::PermissionDenied(with_detail(what, &detail)),
        404 => VaultError::NotFound(with_detail(what, &detail)),
        412 | 429 | 500 | 502 | 503 | 504 => {
            VaultError::Unavailable(with_detail(&format!("{what}: HTTP {status}"), &detail))
        }
        _ => VaultError::Unexpected(with_detail(&format!("{what}: HTTP {status}"), &detail)),
    }
}

/// A login Vault answered with 400, 401 or 403. Vault uses 403 both for credentials
/// it cannot verify (a bad or expired JWT: "permission denied") and for a valid
/// identity the role does not admit (Kubernetes auth: "service account name not
/// authorized", "namespace not authorized"). Only the second is a permission
/// problem (`PermissionDenied`); everything else is a refused login.
fn login_refused(code: u16, where_: &str, detail: &str) -> VaultError {
    if code == 403 && detail.contains("not authorized") {
        VaultError::PermissionDenied(with_detail(where_, detail))
    } else {
        VaultError::LoginRefused(with_detail(where_, detail))
    }
}

pub(super) fn login_error(err: ClientError, where_: &str) -> VaultError {
    match err {
        ClientError::APIError { code, errors } => {
            let detail = error_text(
                serde_json::json!({ "errors": errors })
                    .to_string()
                    .as_bytes(),
            );
            match code {
                400 | 401 | 403 => login_refused(code, where_, &detail),
                404 => VaultError::NotFound(with_detail(
                    &format!("{where_} (is the auth mount or namespace right?)"),
                    &detail,
                )),
                _ => status_error(
                    code,
                    serde_json::json!({ "errors": [detail] })
                        .to_string()
                        .as_bytes(),
                    where_,
                ),
            }
        }
        ClientError::RestClientError {
            source: Rest::ServerResponseError { code, content },
        } => {
            let body = content.unwrap_or_default();
            match code {
                400 | 401 | 403 => login_refused(code, where_, &error_text(body.as_bytes())),
                _ => status_error(code, body.as_bytes(), where_),
            }
        }
        ClientError::RestClientError {
            source: Rest::RequestError { source, .. },
        } => {
            let cause = source
                .chain()
                .last()
                .map(ToString::to_string)
                .unwrap_or_default();
            let kind = match source.downcast_ref::<reqwest::Error>() {
                Some(e) if e.is_timeout() => "timed out",
                Some(e) if e.is_connect() => "cannot connect",
                _ => "request failed",
            };
            unavailable_or_tls(&format!("login at {where_}"), kind, &cause)
        }
        ClientError::ResponseEmptyError | ClientError::ResponseDataEmptyError => {
            VaultError::Unexpected(format!("login at {where_} returned no auth data"))
        }
        other => VaultError::Unexpected(format!("login at {where_}: {other}")),
    }
}

/// The HTTP status behind a vaultrs login result, if a response arrived.
pub(super) fn login_status(result: &Result<AuthInfo, ClientError>) -> Option<u16> {
    match result {
        Ok(_) | Err(ClientError::ResponseEmptyError | ClientError::ResponseDataEmptyError) => {
            Some(200)
        }
        Err(ClientError::APIError { code, .. })
        | Err(ClientError::RestClientError {
            source: Rest::ServerResponseError { code, .. },
        }) => Some(*code),
        Err(_) => None,
    }
}

/// Whether a failed login may be repeated.
pub(super) fn login_retry(err: &ClientError) -> Retry {
    match err {
        ClientError::APIError { code, .. }
        | ClientError::RestClientError {
            source: Rest::ServerResponseError { code, .. },
        } => retry::for_login_status(*code),
        ClientError::RestClientError {
            source: Rest::RequestError { source, .. },
        } => match source.downcast_ref::<reqwest::Error>() {
            // Refused or unreachable: the login was never sent. (A TLS
            // failure is also a connect error, but retrying cannot fix it.)
            Some(e) if e.is_connect() && !is_certificate_error(e) => Retry::Always,
            _ => Retry::Never,
        },
        _ => Retry::Never,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_map_to_kinds() {
        let body = br#"{"errors":["permission denied"]}"#;
        assert!(
            matches!(status_error(403, body, "x"), VaultError::PermissionDenied(m) if m == "x: permission denied")
        );
        assert!(
            matches!(status_error(404, b"{\"errors\":[]}", "x"), VaultError::NotFound(m) if m == "x")
        );
        assert!(matches!(
            status_error(503, b"{\"errors\":[\"Vault is sealed\"]}", "x"),
            VaultError::Unavailable(_)
        ));
        assert!(matches!(
            status_error(429, b"", "x"),
            VaultError::Unavailable(_)
        ));
        assert!(matches!(
            status_error(400, b"{\"errors\":[\"bad\"]}", "x"),
            VaultError::Rejected(_)
        ));
        assert!(matches!(
            status_error(418, b"", "x"),
            VaultError::Unexpected(_)
        ));
    }

    #[test]
    fn a_role_that_does_not_admit_the_identity_is_permission_denied() {
        let api = |code: u16, text: &str| ClientError::APIError {
            code,
            errors: vec![text.to_owned()],
        };
        // OpenBao's answers, observed against a real apiserver (tests/kubernetes.rs).
        for text in [
            "service account name not authorized",
            "namespace not authorized",
        ] {
            assert!(
                matches!(login_error(api(403, text), "auth/kubernetes"),
                    VaultError::PermissionDenied(m) if m == format!("auth/kubernetes: {text}")),
                "{text}"
            );
        }
        for (code, text) in [
            (403, "permission denied"),
            (
                403,
                "invalid audience (aud) claim: audience claim does not match any expected audience",
            ),
            (400, "invalid role or secret ID"),
            (400, "invalid role name \"nope\""),
        ] {
            assert!(
                matches!(
                    login_error(api(code, text), "x"),
                    VaultError::LoginRefused(_)
                ),
                "{code} {text}"
            );
        }
    }

    #[test]
    fn error_text_is_bounded_and_flat() {
        let long = format!("{{\"errors\":[\"{}\"]}}", "é".repeat(400));
        assert!(error_text(long.as_bytes()).chars().count() <= MAX_ERROR_TEXT + 1);
        assert_eq!(
            error_text(
                b"{\"errors\":[\"1 error occurred:\\n\\t* invalid role or secret ID\\n\\n\"]}"
            ),
            "1 error occurred: * invalid role or secret ID"
        );
        assert_eq!(error_text(b"plain text"), "plain text");
    }
}
