//! Kept responses as compact JSON text whose long strings are shared between
//! responses. Every certificate from one issuer carries the same
//! `issuing_ca` and `ca_chain`: about half of a PKI response, the same in
//! thousands of kept responses. Strings of [`SHARED_MIN`] bytes or more are
//! interned in a [`Strings`] set and the text keeps a reference to them.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use serde_json::Value;

/// Shortest string worth sharing (a PEM certificate is ~700 bytes or more).
pub const SHARED_MIN: usize = 256;
/// What stands for a shared string while the text is cut into pieces: JSON
/// text that serde_json writes never holds a raw NUL, so the escaped form
/// can only be ours, unless a response holds this very string (then the
/// pieces do not add up and the text is kept whole).
const MARK: &str = "\u{0}vsp-shared\u{0}";

/// The set of shared strings, each held as long as a kept response uses it.
#[derive(Default)]
pub struct Strings {
    set: Mutex<(HashSet<Arc<str>>, usize)>,
}

impl Strings {
    /// The shared copy of `text`.
    fn intern(&self, text: String) -> Arc<str> {
        let mut guard = self.set.lock().expect("strings lock");
        let (set, prune_at) = &mut *guard;
        if let Some(found) = set.get(text.as_str()) {
            return found.clone();
        }
        // Drop the strings no response uses any more, now and then.
        if set.len() >= *prune_at {
            set.retain(|s| Arc::strong_count(s) > 1);
            *prune_at = (set.len() * 2).max(64);
        }
        let shared: Arc<str> = Arc::from(text);
        set.insert(shared.clone());
        shared
    }

    /// Shared strings held (for tests).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.set.lock().expect("strings lock").0.len()
    }
}

enum Piece {
    Text(Box<str>),
    /// A string value, as JSON (quoted and escaped).
    Shared(Arc<str>),
}

/// A JSON value as compact text, its long strings shared.
pub struct Compact {
    pieces: Box<[Piece]>,
    len: usize,
}

impl Compact {
    /// `value` as text, its strings of [`SHARED_MIN`] bytes or more from `strings`.
    pub fn new(value: &Value, strings: &Strings) -> Self {
        let mut long = Vec::new();
        let skeleton = mark_long(value, &mut long);
        if long.is_empty() {
            return Self::whole(value.to_string());
        }
        let text = skeleton.to_string();
        let mark = serde_json::to_string(MARK).expect("a string serialises");
        let parts: Vec<&str> = text.split(mark.as_str()).collect();
        if parts.len() != long.len() + 1 {
            return Self::whole(value.to_string());
        }
        let mut pieces = Vec::with_capacity(parts.len() * 2);
        let mut len = 0;
        for (i, part) in parts.iter().enumerate() {
            len += part.len();
            pieces.push(Piece::Text(Box::from(*part)));
            if let Some(string) = long.get(i) {
                let json = serde_json::to_string(string).expect("a string serialises");
                len += json.len();
                pieces.push(Piece::Shared(strings.intern(json)));
            }
        }
        Self {
            pieces: pieces.into_boxed_slice(),
            len,
        }
    }

    fn whole(text: String) -> Self {
        Self {
            len: text.len(),
            pieces: Box::new([Piece::Text(text.into_boxed_str())]),
        }
    }

    /// Length of the whole text (what it would take unshared).
    pub fn len(&self) -> usize {
        self.len
    }

    /// The value again.
    pub fn value(&self) -> Value {
        let mut text = String::with_capacity(self.len);
        for piece in &self.pieces {
            match piece {
                Piece::Text(t) => text.push_str(t),
                Piece::Shared(s) => text.push_str(s),
            }
        }
        serde_json::from_str(&text).expect("JSON text that serde_json wrote")
    }
}

/// `value` with each long string replaced by [`MARK`], the strings in `long`
/// in the order serialisation writes them.
fn mark_long(value: &Value, long: &mut Vec<String>) -> Value {
    match value {
        Value::String(s) if s.len() >= SHARED_MIN => {
            long.push(s.clone());
            Value::String(MARK.to_owned())
        }
        Value::Array(items) => Value::Array(items.iter().map(|v| mark_long(v, long)).collect()),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), mark_long(v, long)))
                .collect(),
        ),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pem(tag: &str) -> String {
        format!(
            "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----",
            tag.repeat(400)
        )
    }

    #[test]
    fn long_strings_are_shared_and_values_come_back_the_same() {
        let strings = Strings::default();
        let issue = |leaf: &str| {
            json!({"lease_id": "", "data": {
                "certificate": pem(leaf), "issuing_ca": pem("ca"), "ca_chain": [pem("ca")],
                "private_key": "short", "serial_number": "01:02", "quote\"and\\slash": "x\ny"}})
        };
        let values: Vec<Value> = (0..10).map(|i| issue(&format!("leaf{i}"))).collect();
        let kept: Vec<Compact> = values.iter().map(|v| Compact::new(v, &strings)).collect();
        for (value, compact) in values.iter().zip(&kept) {
            assert_eq!(&compact.value(), value);
            assert_eq!(compact.len(), value.to_string().len());
        }
        // Ten leaves and one CA, not ten CAs twice.
        assert_eq!(strings.len(), 11);
        drop(kept);
        let _ = Compact::new(&issue("again"), &strings);
        for i in 0..100 {
            let _ = Compact::new(&issue(&format!("more{i}")), &strings);
        }
        assert!(
            strings.len() < 80,
            "unused strings are dropped: {}",
            strings.len()
        );
    }

    #[test]
    fn a_response_that_holds_the_mark_is_kept_whole() {
        let strings = Strings::default();
        let value = json!({"a": MARK, "b": pem("x")});
        let compact = Compact::new(&value, &strings);
        assert_eq!(compact.value(), value);
        assert_eq!(strings.len(), 0);
    }
}
