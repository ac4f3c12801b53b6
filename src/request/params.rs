//! SecretProviderClass parameters as the driver sends them: the `attributes`
//! and `secrets` JSON maps, their size limits, and Go-compatible scalars.

use std::collections::HashMap;

use super::error::RequestError;

/// Longest `objects` value (and service-account token set) accepted, in
/// bytes. A whole SecretProviderClass is at most about 1.5 MiB in etcd.
pub(super) const MAX_LARGE_PARAMETER: usize = 1 << 20;

/// Longest value of any other parameter, and of the secret keys we read.
pub(super) const MAX_PARAMETER: usize = 64 << 10;

/// SecretProviderClass parameters; empty values count as unset, as in
/// HashiCorp's provider.
pub(super) struct Params<'a>(pub(super) &'a HashMap<String, String>);

impl Params<'_> {
    pub(super) fn get(&self, key: &str) -> Option<String> {
        self.0
            .get(key)
            .map(|v| v.trim())
            .filter(|v| !v.is_empty())
            .map(str::to_owned)
    }

    pub(super) fn flag(&self, key: &str) -> Result<Option<bool>, RequestError> {
        self.get(key)
            .map(|raw| {
                parse_go_bool(&raw).ok_or_else(|| {
                    RequestError::invalid(key, format!("{raw:?} is not a boolean (true or false)"))
                })
            })
            .transpose()
    }
}

/// `attributes` and `secrets` are JSON objects of strings. `secrets` is
/// `null` when the volume has no `nodePublishSecretRef`.
pub(super) fn parse_string_map(raw: &str) -> Result<HashMap<String, String>, String> {
    if raw.trim().is_empty() {
        return Ok(HashMap::new());
    }
    let value: serde_json::Value =
        serde_json::from_str(raw).map_err(|err| format!("is not valid JSON ({err})"))?;
    match value {
        serde_json::Value::Null => Ok(HashMap::new()),
        serde_json::Value::Object(map) => map
            .into_iter()
            .map(|(key, value)| match value {
                serde_json::Value::String(s) => Ok((key, s)),
                _ => Err(format!("value of key {key:?} is not a string")),
            })
            .collect(),
        _ => Err("must be a JSON object of strings".into()),
    }
}

/// Refuses values far larger than any real configuration, before anything
/// parses them or sends them to Vault.
pub(super) fn check_sizes(
    attributes: &HashMap<String, String>,
    secrets: &HashMap<String, String>,
) -> Result<(), RequestError> {
    for (key, value) in attributes {
        let limit = match key.as_str() {
            "objects" | "csi.storage.k8s.io/serviceAccount.tokens" => MAX_LARGE_PARAMETER,
            _ => MAX_PARAMETER,
        };
        if value.len() > limit {
            return Err(RequestError::invalid(
                key.as_str(),
                format!(
                    "is {} bytes long; at most {limit} are accepted",
                    value.len()
                ),
            ));
        }
    }
    for key in ["secretId", "id", "roleId"] {
        if secrets.get(key).is_some_and(|v| v.len() > MAX_PARAMETER) {
            return Err(RequestError::invalid(
                format!("secret key {key}"),
                format!("is longer than {MAX_PARAMETER} bytes"),
            ));
        }
    }
    Ok(())
}

/// Go's `strconv.ParseBool`, which HashiCorp's provider uses.
fn parse_go_bool(raw: &str) -> Option<bool> {
    match raw {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Some(false),
        _ => None,
    }
}
