//! Vault response → file bytes.
//!
//! The default renderings are byte-compatible with HashiCorp's provider, which
//! writes Go's `encoding/json` output: map keys sorted, `<`, `>`, `&`, U+2028
//! and U+2029 escaped. A SecretProviderClass moved from it to us produces the
//! same files.

use base64::Engine as _;
use serde_json::Value;

use std::collections::BTreeMap;

use crate::budget::{ByteBudget, OverBudget};
use crate::request::{Encoding, FilePath, ObjectSpec, Selection, TemplateSpec};

/// Most template output accepted, in bytes (the driver's whole gRPC limit).
const MAX_TEMPLATE_OUTPUT: usize = 4 << 20;
/// Template evaluation budget: enough for any real template, small enough
/// that a hostile loop ends quickly.
const TEMPLATE_FUEL: u64 = 100_000;

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
    /// `render: keys` met a key that cannot be a file name.
    #[error("object {object:?}: key {key:?} cannot be a file name ({why})")]
    BadFileName {
        /// objectName.
        object: String,
        /// The key.
        key: String,
        /// Why the path is refused.
        why: String,
    },
    /// A template failed to render.
    #[error("object {object:?}: template: {message}")]
    Template {
        /// objectName.
        object: String,
        /// What went wrong.
        message: String,
    },
    /// The files would take the Mount over its byte budget
    /// (`--max-response-size`); rendering stopped there.
    #[error("object {object:?}: {source}")]
    TooLarge {
        /// objectName.
        object: String,
        /// The budget that ran out.
        source: OverBudget,
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

/// The files of one object: one file, or one per key for `render: keys`.
pub fn render_files(
    object: &ObjectSpec,
    response: &Value,
) -> Result<Vec<(FilePath, Vec<u8>)>, RenderError> {
    if object.selection != Selection::Keys {
        return Ok(vec![(object.name.clone(), render(object, response)?)]);
    }
    let data = secret_data(response).ok_or_else(|| RenderError::NoData {
        object: object.name.to_string(),
        path: object.source.display_path(),
    })?;
    let mut files = Vec::with_capacity(data.len());
    for (key, value) in data {
        let bad = |why: String| RenderError::BadFileName {
            object: object.name.to_string(),
            key: key.clone(),
            why,
        };
        if key.contains('/') {
            return Err(bad("contains '/'".into()));
        }
        let path = FilePath::parse(&format!("{}/{key}", object.name)).map_err(bad)?;
        files.push((path, value_bytes(object, key, value)?));
    }
    Ok(files)
}

/// Renders a single-file object from the Vault response of its source.
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
            value_bytes(object, key, value)
        }
        Selection::KeyPath(segments) => {
            let data = secret_data(response).ok_or_else(|| RenderError::NoData {
                object: object.name.to_string(),
                path: path(),
            })?;
            let joined = segments.join(".");
            let mut value = data.get(&segments[0]);
            for segment in &segments[1..] {
                value = match value {
                    Some(Value::Object(map)) => map.get(segment),
                    Some(Value::Array(items)) => {
                        segment.parse::<usize>().ok().and_then(|i| items.get(i))
                    }
                    _ => None,
                };
            }
            let value = value.ok_or_else(|| RenderError::MissingKey {
                object: object.name.to_string(),
                key: joined.clone(),
                path: path(),
            })?;
            value_bytes(object, &joined, value)
        }
        Selection::Keys => unreachable!("render_files handles render: keys"),
    }
}

/// A selected value as file bytes: strings raw, anything else as compact
/// JSON, then decoded by the object's `encoding`.
fn value_bytes(object: &ObjectSpec, key: &str, value: &Value) -> Result<Vec<u8>, RenderError> {
    let raw = match value {
        Value::String(s) => s.as_bytes().to_vec(),
        other => go_json(other),
    };
    decode(raw, object.encoding).ok_or_else(|| RenderError::Decode {
        object: object.name.to_string(),
        key: key.to_owned(),
        encoding: match object.encoding {
            Encoding::Utf8 => "utf-8",
            Encoding::Base64 => "base64",
            Encoding::Hex => "hex",
        },
    })
}

/// Renders a template object. `objects` maps every other object's name to
/// its content (a string; for `render: keys` objects, a map of key to
/// content). Undefined names are errors, and evaluation is bounded: in steps
/// (fuel) and in output, which is charged to `budget` as it is written, so a
/// template that would produce more than the Mount may hold stops there.
pub fn render_template(
    spec: &TemplateSpec,
    objects: &BTreeMap<String, Value>,
    budget: &ByteBudget,
) -> Result<Vec<u8>, RenderError> {
    let fail = |message: String| RenderError::Template {
        object: spec.name.to_string(),
        message,
    };
    let mut env = minijinja::Environment::new();
    env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
    env.set_fuel(Some(TEMPLATE_FUEL));
    env.set_syntax(
        minijinja::syntax::SyntaxConfig::builder()
            .keep_trailing_newline(true)
            .build()
            .expect("default delimiters are valid"),
    );
    env.set_auto_escape_callback(|_| minijinja::AutoEscape::None);
    let template = env
        .template_from_str(&spec.template)
        .map_err(|err| fail(template_error(&err)))?;
    let mut output = Charged {
        out: Vec::new(),
        budget,
        over: false,
    };
    let rendered = template.render_captured_to(
        minijinja::context! { objects => template_value(&Value::Object(objects.clone().into_iter().collect())) },
        &mut output,
    );
    if output.over {
        return Err(RenderError::TooLarge {
            object: spec.name.to_string(),
            source: budget.over(),
        });
    }
    rendered.map_err(|err| fail(template_error(&err)))?;
    if output.out.len() > MAX_TEMPLATE_OUTPUT {
        return Err(fail(format!(
            "output is larger than {MAX_TEMPLATE_OUTPUT} bytes"
        )));
    }
    Ok(output.out)
}

/// A template's output, charged to the Mount's budget before it is kept.
struct Charged<'a> {
    out: Vec<u8>,
    budget: &'a ByteBudget,
    over: bool,
}

impl std::io::Write for Charged<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.budget.charge(buf.len()).is_err() {
            self.over = true;
            return Err(std::io::Error::other("over the Mount's byte budget"));
        }
        self.out.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn template_value(value: &Value) -> minijinja::Value {
    match value {
        Value::Null => minijinja::Value::from(()),
        Value::Bool(b) => minijinja::Value::from(*b),
        Value::Number(n) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => minijinja::Value::from(i),
            (None, Some(f)) => minijinja::Value::from(f),
            _ => minijinja::Value::from(n.to_string()),
        },
        Value::String(s) => minijinja::Value::from(s.as_str()),
        Value::Array(items) => {
            minijinja::Value::from(items.iter().map(template_value).collect::<Vec<_>>())
        }
        Value::Object(map) => {
            minijinja::Value::from_pairs(map.iter().map(|(k, v)| (k.as_str(), template_value(v))))
        }
    }
}

/// MiniJinja's message without the template source it may quote (which can
/// hold rendered secrets in its debug output).
fn template_error(err: &minijinja::Error) -> String {
    let mut message = err.kind().to_string();
    if let Some(detail) = err.detail() {
        message.push_str(": ");
        message.push_str(detail);
    }
    if let Some(line) = err.line() {
        message.push_str(&format!(" (line {line})"));
    }
    message
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
        objects::parse(yaml, None).unwrap().vault.remove(0)
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
    fn key_paths_and_keys() {
        let nested = json!({"data": {"data": {"db": {"hosts": ["a", "b"], "port": 5432}}}});
        let o = object("- objectName: a\n  secretPath: s/data/x\n  secretKeyPath: db.hosts.1\n");
        assert_eq!(render(&o, &nested).unwrap(), b"b");
        let o = object("- objectName: a\n  secretPath: s/data/x\n  secretKeyPath: db.port\n");
        assert_eq!(render(&o, &nested).unwrap(), b"5432");
        let o = object("- objectName: a\n  secretPath: s/data/x\n  secretKeyPath: db.hosts.7\n");
        assert!(
            matches!(render(&o, &nested), Err(RenderError::MissingKey { key, .. }) if key == "db.hosts.7")
        );

        let o = object("- objectName: all\n  secretPath: s/data/x\n  render: keys\n");
        let files = render_files(&o, &kv2()).unwrap();
        let names: Vec<&str> = files.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(
            names,
            [
                "all/blob",
                "all/hexed",
                "all/nested",
                "all/password",
                "all/port"
            ]
        );
        assert_eq!(files[3].1, b"p<&>");
        let bad = json!({"data": {"data": {"../x": "v"}}});
        assert!(matches!(
            render_files(&o, &bad),
            Err(RenderError::BadFileName { .. })
        ));
        let bad = json!({"data": {"data": {"a/b": "v"}}});
        assert!(matches!(
            render_files(&o, &bad),
            Err(RenderError::BadFileName { .. })
        ));
    }

    #[test]
    fn templates_compose_objects() {
        let parsed = objects::parse(
            "- objectName: app.env\n  template: \"USER={{ objects.user }}\\nPASS={{ objects['db-pass'] }}\\nHOSTS={{ objects.all.hosts }}\\n\"\n",
            None,
        )
        .unwrap();
        let spec = &parsed.templates[0];
        let mut context = BTreeMap::new();
        context.insert("user".to_owned(), json!("svc"));
        context.insert("db-pass".to_owned(), json!("p<&>"));
        context.insert("all".to_owned(), json!({"hosts": "a,b"}));
        assert_eq!(
            render_template(spec, &context, &unlimited()).unwrap(),
            b"USER=svc\nPASS=p<&>\nHOSTS=a,b\n"
        );

        context.remove("user");
        let err = render_template(spec, &context, &unlimited())
            .unwrap_err()
            .to_string();
        assert!(err.contains("undefined"), "{err}");
        assert!(!err.contains("p<&>"), "error must not quote values: {err}");

        let looping = TemplateSpec {
            name: FilePath::parse("x").unwrap(),
            template:
                "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}"
                    .into(),
            mode: None,
        };
        assert!(
            render_template(&looping, &BTreeMap::new(), &unlimited()).is_err(),
            "fuel must stop runaway templates"
        );
    }

    fn unlimited() -> ByteBudget {
        ByteBudget::new(usize::MAX, "test")
    }

    #[test]
    fn template_output_is_charged_while_it_is_written() {
        let spec = TemplateSpec {
            name: FilePath::parse("big").unwrap(),
            template: "{{ 'x' * 3000000 }}".into(),
            mode: None,
        };
        let budget = ByteBudget::new(4 << 20, "--max-response-size");
        assert_eq!(
            render_template(&spec, &BTreeMap::new(), &budget)
                .unwrap()
                .len(),
            3_000_000
        );
        // The second one no longer fits the Mount's budget.
        let err = render_template(&spec, &BTreeMap::new(), &budget).unwrap_err();
        assert!(matches!(err, RenderError::TooLarge { .. }), "{err}");
        assert!(err.to_string().contains("--max-response-size"), "{err}");
        // Output in many small writes stops too, before the loop ends.
        let looping = TemplateSpec {
            name: FilePath::parse("loop").unwrap(),
            template: "{% for i in range(1000) %}{{ 'y' * 10000 }}{% endfor %}".into(),
            mode: None,
        };
        let err = render_template(
            &looping,
            &BTreeMap::new(),
            &ByteBudget::new(1 << 20, "--max-response-size"),
        )
        .unwrap_err();
        assert!(matches!(err, RenderError::TooLarge { .. }), "{err}");
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
