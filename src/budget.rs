//! [`ByteBudget`]: how many bytes one Mount may fetch and render.
//!
//! A Mount's response must fit the driver's gRPC limit (`--max-response-size`),
//! so anything a Mount holds beyond that can never be delivered. The budget is
//! charged while Vault bodies stream in and while files and templates are
//! rendered, so a hostile SecretProviderClass (or a hostile "Vault") fails its
//! Mount before the memory is spent, not after. Imports nothing else from the
//! crate: the Vault client and the renderers both charge it.

use std::sync::atomic::{AtomicUsize, Ordering};

/// The flag that bounds a Mount whose files go back to the driver.
pub const RESPONSE_FLAG: &str = "--max-response-size";
/// The flag that bounds every Mount (and alone, in `--write-mode direct`).
pub const MOUNT_FLAG: &str = "--max-mount-bytes";

/// Bytes one Mount may still fetch and render. Shared by the Mount's
/// concurrent fetches; charges are never given back (what was fetched is held
/// until the Mount ends).
#[derive(Debug)]
pub struct ByteBudget {
    limit: usize,
    /// The flag that set `limit`, for messages.
    flag: &'static str,
    used: AtomicUsize,
}

/// A Mount went over its [`ByteBudget`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "the Mount's data is above the limit of {limit} bytes per Mount ({flag}): split the \
     SecretProviderClass, or raise {flag}{also}",
    also = if *flag == RESPONSE_FLAG {
        " together with the driver's --max-call-recv-msg-size"
    } else {
        ""
    }
)]
pub struct OverBudget {
    /// The budget's limit.
    pub limit: usize,
    /// The flag that set it.
    pub flag: &'static str,
}

impl ByteBudget {
    /// A budget of `limit` bytes, set by `flag`.
    pub fn new(limit: usize, flag: &'static str) -> Self {
        Self {
            limit,
            flag,
            used: AtomicUsize::new(0),
        }
    }

    /// The limit.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Bytes still available (0 once over).
    pub fn remaining(&self) -> usize {
        self.limit.saturating_sub(self.used.load(Ordering::Relaxed))
    }

    /// Charges `bytes`; fails once the total is over the limit (the charge
    /// stays: the Mount is over and will fail).
    pub fn charge(&self, bytes: usize) -> Result<(), OverBudget> {
        let before = self.used.fetch_add(bytes, Ordering::Relaxed);
        if before.saturating_add(bytes) > self.limit {
            return Err(self.over());
        }
        Ok(())
    }

    /// Gives back a charge for bytes no longer held (a failed attempt that
    /// will be retried).
    pub fn refund(&self, bytes: usize) {
        let _ = self
            .used
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |used| {
                Some(used.saturating_sub(bytes))
            });
    }

    /// The error for this budget.
    pub fn over(&self) -> OverBudget {
        OverBudget {
            limit: self.limit,
            flag: self.flag,
        }
    }
}

/// Bytes to charge for a parsed JSON value a Mount uses without having read
/// it itself (a response shared by the single flight, or kept in the lease
/// cache): its strings' lengths plus 64 bytes per value, about what reading
/// and parsing it charges the Mount that fetched it.
pub fn json_weight(value: &serde_json::Value) -> usize {
    const PER_VALUE: usize = 64;
    match value {
        serde_json::Value::String(text) => PER_VALUE + text.len(),
        serde_json::Value::Array(items) => items
            .iter()
            .fold(PER_VALUE, |sum, item| sum.saturating_add(json_weight(item))),
        serde_json::Value::Object(map) => map.iter().fold(PER_VALUE, |sum, (key, item)| {
            sum.saturating_add(PER_VALUE + key.len())
                .saturating_add(json_weight(item))
        }),
        _ => PER_VALUE,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_weight_counts_values_and_text() {
        assert_eq!(json_weight(&serde_json::json!(null)), 64);
        assert_eq!(json_weight(&serde_json::json!("abcd")), 68);
        assert_eq!(json_weight(&serde_json::json!([0, 0, 0])), 64 * 4);
        assert_eq!(json_weight(&serde_json::json!({"k": "vv"})), 64 + 65 + 66);
    }

    #[test]
    fn charges_until_over() {
        let budget = ByteBudget::new(10, RESPONSE_FLAG);
        assert_eq!(budget.charge(4), Ok(()));
        assert_eq!(budget.charge(6), Ok(()));
        assert_eq!(budget.remaining(), 0);
        let err = budget.charge(1).unwrap_err();
        assert_eq!(err.limit, 10);
        assert!(err.to_string().contains("--max-response-size"), "{err}");
        assert_eq!(budget.remaining(), 0);
    }
}
