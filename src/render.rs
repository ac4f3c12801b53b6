//! Vault response → file bytes.
//!
//! The default renderings are byte-compatible with HashiCorp's provider, which
//! writes Go's `encoding/json` output: map keys sorted, `<`, `>`, `&`, U+2028
//! and U+2029 escaped. A SecretProviderClass moved from it to us produces the
//! same files.

use base64::Engine as _;
use serde_json::Value;

use crate::request::{Encoding, ObjectSpec, Selection};

/// An object whose data cannot become a file.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RenderError {
    /// `secretKey` names a key the secret does not have.
    #[error("object {object:?}: key {key:?} does not exist at {path}")]
    MissingKey {
        /// objectName.
        object: String,
        /// secretKey.
        key: String,
        /// secretPath.
        path: String,
    },
    /// The response carries no `data` to select from.
    #[error("object {object:?}: {path} returned no data")]
    NoData {
        /// objectName.
        object: String,
        /// secretPath.
        path: String,
    },
    /// The value is not valid in the declared `encoding`.
    #[error("object {object:?}: the value of {key:?} is not valid {encoding}")]
    Decode {
        /// objectName.
        object: String,
        /// secretKey.
        key: String,
        /// The declared encoding.
        encoding: &'static str,
    },
}

/// Renders one object from the Vault response of its source.
pub fn render(object: &ObjectSpec, response: &Value) -> Result<Vec<u8>, RenderError> {
    let path = || object.source.display_path();
    match &object.selection {
        Selection::Response => Ok(envelope_json(response)),
        Selection::Data => {
            let data = secret_data(response).ok_or_else(|| RenderError::NoData {
                object: object.name.to_string(),
                path: path(),
            })?;
            Ok(go_json(data))
        }
        Selection::CaChain | Selection::FullChain => {
            let data = response.get("data").and_then(Value::as_object);
            let pem = |key: &str| {
                data.and_then(|d| d.get(key))
                    .and_then(Value::as_str)
                    .map(str::trim)
            };
            let chain: Vec<&str> = match data
                .and_then(|d| d.get("ca_chain"))
                .and_then(Value::as_array)
            {
                Some(items) => items
                    .iter()
                    .filter_map(Value::as_str)
                    .map(str::trim)
                    .collect(),
                None => pem("issuing_ca").into_iter().collect(),
            };
            let mut parts = Vec::new();
            if object.selection == Selection::FullChain {
                let certificate = pem("certificate").ok_or_else(|| RenderError::MissingKey {
                    object: object.name.to_string(),
                    key: "certificate".into(),
                    path: path(),
                })?;
                parts.push(certificate);
            }
            for ca in chain {
                if !parts.contains(&ca) {
                    parts.push(ca);
                }
            }
            if parts.is_empty() {
                return Err(RenderError::MissingKey {
                    object: object.name.to_string(),
                    key: "ca_chain".into(),
                    path: path(),
                });
            }
            let mut out = parts.join("\n").into_bytes();
            out.push(b'\n');
            Ok(out)
        }
        Selection::Key(key) => {
            let data = secret_data(response).ok_or_else(|| RenderError::NoData {
                object: object.name.to_string(),
                path: path(),
            })?;
            let value = data.get(key).ok_or_else(|| RenderError::MissingKey {
                object: object.name.to_string(),
                key: key.clone(),
                path: path(),
            })?;
            let raw = match value {
                Value::String(s) => s.as_bytes().to_vec(),
                other => go_json(other),
            };
            decode(raw, object.encoding).ok_or_else(|| RenderError::Decode {
                object: object.name.to_string(),
                key: key.clone(),
                encoding: match object.encoding {
                    Encoding::Utf8 => "utf-8",
                    Encoding::Base64 => "base64",
                    Encoding::Hex => "hex",
                },
            })
        }
    }
}

/// The secret's own key/value map: `data.data` for KV v2, else `data`
/// (HashiCorp's rule, so a KV v1 secret with a map under `data` is read the
/// same way there and here).
fn secret_data(response: &Value) -> Option<&serde_json::Map<String, Value>> {
    let data = response.get("data")?.as_object()?;
    match data.get("data") {
        Some(Value::Object(inner)) => Some(inner),
        _ => Some(data),
    }
}

fn decode(raw: Vec<u8>, encoding: Encoding) -> Option<Vec<u8>> {
    match encoding {
        Encoding::Utf8 => Some(raw),
        Encoding::Base64 => base64::engine::general_purpose::STANDARD.decode(&raw).ok(),
        Encoding::Hex => hex::decode(&raw).ok(),
    }
}

/// The response envelope laid out like Go's `api.Secret`: fixed field order,
/// `auth`, `wrap_info` and `mount_type` only when present.
fn envelope_json(response: &Value) -> Vec<u8> {
    let field = |name: &str| response.get(name).cloned().unwrap_or(Value::Null);
    let mut out = Vec::with_capacity(256);
    out.push(b'{');
    let mut first = true;
    let mut put = |name: &str, value: &Value, out: &mut Vec<u8>| {
        if !first {
            out.push(b',');
        }
        first = false;
        write_string(name, out);
        out.push(b':');
        write_value(value, out);
    };
    put(
        "request_id",
        &or(field("request_id"), Value::String(String::new())),
        &mut out,
    );
    put(
        "lease_id",
        &or(field("lease_id"), Value::String(String::new())),
        &mut out,
    );
    put(
        "lease_duration",
        &or(field("lease_duration"), Value::from(0)),
        &mut out,
    );
    put(
        "renewable",
        &or(field("renewable"), Value::Bool(false)),
        &mut out,
    );
    put("data", &field("data"), &mut out);
    put("warnings", &field("warnings"), &mut out);
    for optional in ["auth", "wrap_info"] {
        let value = field(optional);
        if !value.is_null() {
            put(optional, &value, &mut out);
        }
    }
    if let Some(Value::String(mount_type)) = response.get("mount_type")
        && !mount_type.is_empty()
    {
        put("mount_type", &Value::String(mount_type.clone()), &mut out);
    }
    out.push(b'}');
    out
}

fn or(value: Value, default: Value) -> Value {
    if value.is_null() { default } else { value }
}

/// Compact JSON as Go's `json.Marshal` writes it.
pub fn go_json(value: &impl serde::Serialize) -> Vec<u8> {
    let value = serde_json::to_value(value).unwrap_or(Value::Null);
    let mut out = Vec::new();
    write_value(&value, &mut out);
    out
}

fn write_value(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
        Value::Number(n) => out.extend_from_slice(n.to_string().as_bytes()),
        Value::String(s) => write_string(s, out),
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_value(item, out);
            }
            out.push(b']');
        }
        Value::Object(map) => {
            // Sorted explicitly: serde_json's map order depends on a cargo
            // feature another crate could switch on.
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            out.push(b'{');
            for (i, (key, item)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_string(key, out);
                out.push(b':');
                write_value(item, out);
            }
            out.push(b'}');
        }
    }
}

fn write_string(s: &str, out: &mut Vec<u8>) {
    out.push(b'"');
    for c in s.chars() {
        match c {
            '"' => out.extend_from_slice(b"\\\""),
            '\\' => out.extend_from_slice(b"\\\\"),
            '\n' => out.extend_from_slice(b"\\n"),
            '\r' => out.extend_from_slice(b"\\r"),
            '\t' => out.extend_from_slice(b"\\t"),
            '\u{8}' => out.extend_from_slice(b"\\b"),
            '\u{c}' => out.extend_from_slice(b"\\f"),
            '<' | '>' | '&' | '\u{2028}' | '\u{2029}' => {
                out.extend_from_slice(format!("\\u{:04x}", c as u32).as_bytes());
            }
            c if (c as u32) < 0x20 => {
                out.extend_from_slice(format!("\\u{:04x}", c as u32).as_bytes())
            }
            c => {
                let mut buf = [0; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            }
        }
    }
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::objects;
    use serde_json::json;

    fn object(yaml: &str) -> ObjectSpec {
        objects::parse(yaml, None).unwrap().remove(0)
    }

    fn kv2() -> Value {
        json!({
            "request_id": "r-1", "lease_id": "", "renewable": false, "lease_duration": 0,
            "data": {"data": {"password": "p<&>", "port": 5432, "nested": {"b": 1, "a": [true, null]},
                              "blob": "aGVsbG8=", "hexed": "6869"},
                     "metadata": {"version": 3, "created_time": "2026-11-27T00:00:00Z"}},
            "wrap_info": null, "warnings": null, "auth": null, "mount_type": "kv"
        })
    }

    #[test]
    fn key_selection_follows_hashicorp() {
        let o = object("- objectName: a\n  secretPath: s/data/x\n  secretKey: password\n");
        assert_eq!(render(&o, &kv2()).unwrap(), b"p<&>");
        let o = object("- objectName: a\n  secretPath: s/data/x\n  secretKey: port\n");
        assert_eq!(render(&o, &kv2()).unwrap(), b"5432");
        let o = object("- objectName: a\n  secretPath: s/data/x\n  secretKey: nested\n");
        assert_eq!(render(&o, &kv2()).unwrap(), br#"{"a":[true,null],"b":1}"#);
        let v1 = json!({"data": {"password": "v1"}});
        let o = object("- objectName: a\n  secretPath: s/x\n  secretKey: password\n");
        assert_eq!(render(&o, &v1).unwrap(), b"v1");
    }

    #[test]
    fn encodings_decode_the_value() {
        let o = object(
            "- objectName: a\n  secretPath: s/data/x\n  secretKey: blob\n  encoding: base64\n",
        );
        assert_eq!(render(&o, &kv2()).unwrap(), b"hello");
        let o = object(
            "- objectName: a\n  secretPath: s/data/x\n  secretKey: hexed\n  encoding: hex\n",
        );
        assert_eq!(render(&o, &kv2()).unwrap(), b"hi");
        let o = object(
            "- objectName: a\n  secretPath: s/data/x\n  secretKey: password\n  encoding: base64\n",
        );
        assert!(matches!(
            render(&o, &kv2()),
            Err(RenderError::Decode { .. })
        ));
    }

    #[test]
    fn whole_response_matches_go_json_of_api_secret() {
        let o = object("- objectName: a\n  secretPath: s/data/x\n");
        let text = String::from_utf8(render(&o, &kv2()).unwrap()).unwrap();
        assert_eq!(
            text,
            r#"{"request_id":"r-1","lease_id":"","lease_duration":0,"renewable":false,"data":{"data":{"blob":"aGVsbG8=","hexed":"6869","nested":{"a":[true,null],"b":1},"password":"p\u003c\u0026\u003e","port":5432},"metadata":{"created_time":"2026-11-27T00:00:00Z","version":3}},"warnings":null,"mount_type":"kv"}"#
        );
    }

    #[test]
    fn data_only_drops_the_envelope() {
        let o = object("- objectName: a\n  secretPath: s/data/x\n  render: data\n");
        let text = String::from_utf8(render(&o, &kv2()).unwrap()).unwrap();
        assert!(text.starts_with(r#"{"blob":"aGVsbG8=","#), "{text}");
        assert!(!text.contains("metadata"));
    }

    #[test]
    fn pki_chains() {
        let issued = json!({"data": {"certificate": "CERT\n", "issuing_ca": "INTER", "ca_chain": ["INTER", "ROOT"],
                                      "private_key": "KEY"}});
        let o = object("- objectName: a\n  secretPath: pki/issue/r\n  render: fullchain\n");
        assert_eq!(render(&o, &issued).unwrap(), b"CERT\nINTER\nROOT\n");
        let o = object("- objectName: a\n  secretPath: pki/issue/r\n  render: ca-chain\n");
        assert_eq!(render(&o, &issued).unwrap(), b"INTER\nROOT\n");
        let no_chain = json!({"data": {"certificate": "CERT", "issuing_ca": "CA"}});
        assert_eq!(render(&o, &no_chain).unwrap(), b"CA\n");
        let o = object("- objectName: a\n  secretPath: secret/data/x\n  render: fullchain\n");
        assert!(matches!(
            render(&o, &kv2()),
            Err(RenderError::MissingKey { .. })
        ));
    }

    #[test]
    fn missing_key_and_data_are_errors() {
        let o = object("- objectName: a\n  secretPath: s/data/x\n  secretKey: nope\n");
        assert!(matches!(
            render(&o, &kv2()),
            Err(RenderError::MissingKey { .. })
        ));
        assert!(matches!(
            render(&o, &json!({"data": null})),
            Err(RenderError::NoData { .. })
        ));
    }

    #[test]
    fn go_string_escapes() {
        let mut out = Vec::new();
        write_string("a\"\\\n\u{1}\u{2028}é", &mut out);
        assert_eq!(String::from_utf8(out).unwrap(), r#""a\"\\\n\u0001\u2028é""#);
    }
}
