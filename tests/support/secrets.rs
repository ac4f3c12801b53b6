//! The secrets this test process has created, and the check that output holds none.
//!
//! The OpenBao helpers register what they create (root tokens, AppRole secret IDs,
//! login tokens, string values written to KV); every [`Provider`](super::provider::Provider)
//! checks its whole log against this list (and for anything shaped like a Vault token)
//! when it is dropped, so no test can forget to. Values shorter than
//! [`MIN_LEN`] are too likely to occur in a log by chance (`v`, `first`) to be checked.
#![allow(dead_code)]

use std::sync::{Mutex, OnceLock};

/// Shorter values are not checked.
pub const MIN_LEN: usize = 8;

fn registry() -> &'static Mutex<Vec<String>> {
    static SECRETS: OnceLock<Mutex<Vec<String>>> = OnceLock::new();
    SECRETS.get_or_init(Default::default)
}

/// Records a secret that must never appear in the provider's output.
pub fn register(secret: &str) {
    let secret = secret.trim();
    if secret.len() >= MIN_LEN {
        let mut secrets = registry().lock().unwrap_or_else(|e| e.into_inner());
        if !secrets.iter().any(|s| s == secret) {
            secrets.push(secret.to_owned());
        }
    }
}

/// Records every string leaf of a JSON value (e.g. the data written to a KV secret).
pub fn register_values(value: &serde_json::Value) {
    match value {
        serde_json::Value::String(s) => register(s),
        serde_json::Value::Array(items) => items.iter().for_each(register_values),
        serde_json::Value::Object(map) => map.values().for_each(register_values),
        _ => {}
    }
}

/// Every secret registered so far.
pub fn registered() -> Vec<String> {
    registry().lock().unwrap_or_else(|e| e.into_inner()).clone()
}

/// Asserts that `output` (named `what` in the failure) holds no registered secret, none
/// of `extra`, and nothing shaped like a Vault/OpenBao token. The failure message never
/// repeats the secret itself.
pub fn assert_clean(what: &str, output: &str, extra: &[&str]) {
    for secret in extra.iter().map(|s| s.to_string()).chain(registered()) {
        assert!(!secret.is_empty(), "empty secret given to assert_clean");
        assert!(
            !output.contains(&secret),
            "{what} contains a secret ({} chars, starting {:?})",
            secret.len(),
            secret.chars().take(3).collect::<String>()
        );
    }
    if let Some(at) = token_shaped(output) {
        panic!("{what} contains something shaped like a Vault token at byte {at}");
    }
}

/// The position of the first token-shaped word: a Vault/OpenBao token prefix
/// (`s.`, `b.`, `r.`, `hvs.`, `hvb.`, `hvr.`) at a word start, then 20+ alphanumerics.
pub fn token_shaped(text: &str) -> Option<usize> {
    const PREFIXES: [&str; 6] = ["hvs.", "hvb.", "hvr.", "s.", "b.", "r."];
    let bytes = text.as_bytes();
    for (i, _) in text.char_indices() {
        if i > 0 && (bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'.') {
            continue;
        }
        for prefix in PREFIXES {
            if let Some(rest) = text[i..].strip_prefix(prefix) {
                let run = rest.bytes().take_while(u8::is_ascii_alphanumeric).count();
                if run >= 20 {
                    return Some(i);
                }
            }
        }
    }
    None
}

#[test]
fn token_shapes() {
    assert!(token_shaped("token=s.AbCdEfGhIjKlMnOpQrStUvWx").is_some());
    assert!(token_shaped("\"hvs.CAESIAbCdEfGhIjKlMnOpQrStUvWx\"").is_some());
    assert!(token_shaped("keys.abcdefghijklmnopqrstuvwxyz").is_none());
    assert!(token_shaped("s.short").is_none());
}
