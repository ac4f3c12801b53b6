//! [`RequestError`]: a request the provider refuses, always the caller's
//! fault (`InvalidArgument`), with the parameter it names and a bounded message.

/// A request the provider refuses; always the caller's fault
/// (`InvalidArgument`). The message names the parameter, never its value when
/// that value may be secret.
#[derive(Debug, thiserror::Error)]
#[error("{parameter}: {message}")]
pub struct RequestError {
    /// The parameter or field at fault, e.g. `objects` or `object "db"`.
    pub parameter: String,
    /// What is wrong and, where useful, what is expected.
    pub message: String,
}

impl RequestError {
    /// A refusal naming `parameter`. Both parts are cut to a few hundred
    /// bytes: they may quote what the caller sent, which can be huge, and
    /// they end up in the pod's events and in our log.
    pub fn invalid(parameter: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            parameter: shorten(parameter.into(), MAX_PARAMETER_NAME),
            message: shorten(message.into(), MAX_ERROR_MESSAGE),
        }
    }
}

/// Longest parameter name quoted in an error, in bytes.
const MAX_PARAMETER_NAME: usize = 128;

/// Longest error message, in bytes.
pub(super) const MAX_ERROR_MESSAGE: usize = 1024;

/// `text` cut at a character boundary to at most `max` bytes, marked with `…`.
pub(super) fn shorten(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push('…');
    }
    text
}

/// `raw` quoted for an error message, cut to its first 64 bytes.
pub(crate) fn quote(raw: &str) -> String {
    format!("{:?}", shorten(raw.to_owned(), 64))
}
