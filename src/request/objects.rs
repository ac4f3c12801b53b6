//! The `objects` parameter: a YAML list in HashiCorp's schema, parsed into
//! typed [`ObjectSpec`]s.
//!
//! Values are read the way HashiCorp's provider (Go yaml.v3) reads them, so an
//! existing SecretProviderClass keeps its meaning: `filePermission: 0640` is
//! octal, scalar fields accept numbers, unknown fields are ignored (and logged
//! by name, never by value).

use std::collections::{BTreeMap, HashSet};
use std::fmt;

use serde_yaml_ng::Value as Yaml;

use super::nesting::check_nesting;
use super::path::FilePath;
use super::{Namespace, RequestError};

/// Most objects one SecretProviderClass may list; far above any real use, low
/// enough that a hostile SPC cannot make one Mount fan out without bound.
pub const MAX_OBJECTS: usize = 1000;

/// One entry of `objects`: what to fetch and how to turn it into a file.
#[derive(Clone, Debug, PartialEq)]
pub struct ObjectSpec {
    /// The file path in the volume and the `ObjectVersion` id.
    pub name: FilePath,
    /// Where the data comes from; objects with equal sources share one response.
    pub source: Source,
    /// Which part of the response becomes the file.
    pub selection: Selection,
    /// How a selected value is decoded before it is written.
    pub encoding: Encoding,
    /// `filePermission`, if given (otherwise the request's default applies).
    pub mode: Option<u32>,
    /// `renewalPercent`: share of a certificate's or lease's lifetime after
    /// which it is re-issued or renewed (1–99, default 67).
    pub renewal_percent: u8,
}

/// Default `renewalPercent`.
pub const DEFAULT_RENEWAL_PERCENT: u8 = 67;

/// An object composed from other objects with a template (`template`).
#[derive(Clone, Debug, PartialEq)]
pub struct TemplateSpec {
    /// The file path in the volume and the `ObjectVersion` id.
    pub name: FilePath,
    /// Template text (MiniJinja syntax); `objects["name"]` is another
    /// object's content.
    pub template: String,
    /// `filePermission`, if given.
    pub mode: Option<u32>,
}

/// The parsed `objects` list.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Objects {
    /// Objects read from Vault, in list order.
    pub vault: Vec<ObjectSpec>,
    /// Objects composed by templates, rendered after the others.
    pub templates: Vec<TemplateSpec>,
}

enum Entry {
    Vault(ObjectSpec),
    Template(TemplateSpec),
}

impl Entry {
    fn name(&self) -> &FilePath {
        match self {
            Entry::Vault(o) => &o.name,
            Entry::Template(t) => &t.name,
        }
    }
}

/// Longest template accepted, in bytes.
const MAX_TEMPLATE_LEN: usize = 64 * 1024;

/// One Vault request. Equal sources within a Mount are fetched once, so a
/// certificate and its key (or a username and its password) always match.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Source {
    /// Vault namespace of the read (`None` = root namespace).
    pub namespace: Option<Namespace>,
    /// API path without `/v1/` and without query, e.g. `secret/data/app`.
    pub path: String,
    /// Query parameters from `secretPath`, e.g. `version=2`.
    pub query: Vec<(String, String)>,
    /// HTTP method.
    pub method: Method,
    /// `secretArgs` as canonical JSON (sorted keys), sent as the request body.
    pub args: Option<String>,
}

impl Source {
    /// The path with its query, as the user wrote it (for messages).
    pub fn display_path(&self) -> String {
        if self.query.is_empty() {
            self.path.clone()
        } else {
            let query: Vec<String> = self.query.iter().map(|(k, v)| format!("{k}={v}")).collect();
            format!("{}?{}", self.path, query.join("&"))
        }
    }
}

/// HTTP methods an object may use. `LIST` is Vault's list operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Method {
    /// Read (the default).
    Get,
    /// Write with `secretArgs` as body, e.g. PKI issue.
    Put,
    /// Same as PUT for Vault.
    Post,
    /// Vault's LIST.
    List,
}

impl Method {
    fn parse(raw: &str) -> Option<Self> {
        match raw.to_ascii_uppercase().as_str() {
            "" | "GET" => Some(Self::Get),
            "PUT" => Some(Self::Put),
            "POST" => Some(Self::Post),
            "LIST" => Some(Self::List),
            _ => None,
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Get => "GET",
            Self::Put => "PUT",
            Self::Post => "POST",
            Self::List => "LIST",
        })
    }
}

/// Which part of the Vault response becomes the file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Selection {
    /// The whole response envelope as JSON, byte-compatible with HashiCorp's
    /// provider (its behaviour when `secretKey` is empty).
    Response,
    /// Only the secret's data as JSON: `data.data` for KV v2, else `data`
    /// (`render: data`).
    Data,
    /// One key of the data (`secretKey`).
    Key(String),
    /// A value nested inside the data (`secretKeyPath: a.b.0.c`): map keys
    /// and array indices separated by dots.
    KeyPath(Vec<String>),
    /// Every key of the data as its own file, `objectName/<key>`
    /// (`render: keys`).
    Keys,
    /// PKI: the CA chain as concatenated PEM (`ca_chain`, else `issuing_ca`)
    /// (`render: ca-chain`).
    CaChain,
    /// PKI: the certificate followed by its CA chain, as TLS servers and
    /// `kubernetes.io/tls` Secrets expect (`render: fullchain`).
    FullChain,
}

/// `encoding`: how a selected value is decoded before writing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encoding {
    /// Written as is.
    Utf8,
    /// Standard base64, decoded to bytes.
    Base64,
    /// Hex, decoded to bytes.
    Hex,
}

/// Parses the `objects` YAML. `default_namespace` is the namespace objects
/// without their own `vaultNamespace` read from.
pub fn parse(raw: &str, default_namespace: Option<&Namespace>) -> Result<Objects, RequestError> {
    let invalid = |msg: String| RequestError::invalid("objects", msg);
    if raw.trim().is_empty() {
        return Err(invalid("no objects configured".into()));
    }
    // The YAML parser's time grows faster than its input with nesting
    // (1 MiB of `[[[[...` took minutes): refused before it runs.
    check_nesting(raw).map_err(invalid)?;
    let entries: Vec<Yaml> = match serde_yaml_ng::from_str::<Yaml>(raw) {
        Ok(Yaml::Sequence(entries)) => entries,
        Ok(Yaml::Null) => Vec::new(),
        Ok(_) => return Err(invalid("must be a YAML list of objects".into())),
        Err(err) => return Err(invalid(format!("is not valid YAML: {err}"))),
    };
    if entries.is_empty() {
        return Err(invalid("no objects configured".into()));
    }
    if entries.len() > MAX_OBJECTS {
        return Err(invalid(format!(
            "lists {} objects; at most {MAX_OBJECTS} are allowed",
            entries.len()
        )));
    }
    let objects = entries
        .into_iter()
        .enumerate()
        .map(|(index, entry)| parse_object(index, entry, default_namespace))
        .collect::<Result<Vec<_>, _>>()?;

    let mut seen = HashSet::new();
    let mut duplicates: Vec<&str> = objects
        .iter()
        .map(|o| o.name().as_str())
        .filter(|name| !seen.insert(*name))
        .collect();
    if !duplicates.is_empty() {
        duplicates.sort_unstable();
        duplicates.dedup();
        return Err(invalid(format!(
            "objectName must be unique; duplicated: {}",
            duplicates.join(", ")
        )));
    }
    // The driver creates one top-level entry per first path element, so
    // `a` and `a/b` cannot both exist.
    let names: HashSet<&str> = objects.iter().map(|o| o.name().as_str()).collect();
    for object in &objects {
        let name = object.name().as_str();
        let mut prefix_end = 0;
        while let Some(pos) = name[prefix_end..].find('/') {
            let prefix = &name[..prefix_end + pos];
            if names.contains(prefix) {
                return Err(invalid(format!(
                    "objectName {prefix:?} is a file but {name:?} needs it as a directory"
                )));
            }
            prefix_end += pos + 1;
        }
    }
    let mut parsed = Objects::default();
    for object in objects {
        match object {
            Entry::Vault(o) => parsed.vault.push(o),
            Entry::Template(t) => parsed.templates.push(t),
        }
    }
    Ok(parsed)
}

fn parse_object(
    index: usize,
    entry: Yaml,
    default_namespace: Option<&Namespace>,
) -> Result<Entry, RequestError> {
    let position = format!("objects[{index}]");
    let Yaml::Mapping(mapping) = entry else {
        return Err(RequestError::invalid(
            &position,
            "must be a mapping with objectName and secretPath",
        ));
    };
    let mut fields: BTreeMap<String, Yaml> = BTreeMap::new();
    for (key, value) in mapping {
        let Some(key) = scalar(&key) else {
            return Err(RequestError::invalid(
                &position,
                "has a field name that is not a string",
            ));
        };
        fields.insert(key, value);
    }

    let name_raw = string_field(&mut fields, "objectName", &position)?
        .ok_or_else(|| RequestError::invalid(&position, "objectName is required"))?;
    let name = FilePath::parse(&name_raw).map_err(|why| {
        RequestError::invalid(
            &position,
            format!("objectName {} {why}", super::quote(&name_raw)),
        )
    })?;
    // From here on, messages name the object rather than its index.
    let position = format!("object {name_raw:?}");

    if let Some(template) = string_field(&mut fields, "template", &position)? {
        return parse_template(name, template, fields, &position).map(Entry::Template);
    }

    let path_raw = string_field(&mut fields, "secretPath", &position)?
        .ok_or_else(|| RequestError::invalid(&position, "secretPath is required"))?;
    let (path, query) = parse_secret_path(&path_raw)
        .map_err(|why| RequestError::invalid(&position, format!("secretPath {why}")))?;

    let method_raw = string_field(&mut fields, "method", &position)?.unwrap_or_default();
    let method = Method::parse(&method_raw).ok_or_else(|| {
        RequestError::invalid(
            &position,
            format!("method {method_raw:?} is not one of GET, PUT, POST, LIST"),
        )
    })?;
    refuse_auth_paths(&path, method)
        .map_err(|why| RequestError::invalid(&position, format!("secretPath {why}")))?;

    let args = match fields.remove("secretArgs") {
        None | Some(Yaml::Null) => None,
        Some(value @ Yaml::Mapping(_)) => {
            let json = serde_json::to_value(&value).map_err(|err| {
                RequestError::invalid(
                    &position,
                    format!("secretArgs cannot be sent as JSON: {err}"),
                )
            })?;
            // serde_json's map is ordered by key, so this string is canonical.
            Some(json.to_string())
        }
        Some(_) => {
            return Err(RequestError::invalid(
                &position,
                "secretArgs must be a mapping",
            ));
        }
    };

    let namespace = match string_field(&mut fields, "vaultNamespace", &position)? {
        Some(raw) => Namespace::parse(&raw)
            .map_err(|why| RequestError::invalid(&position, format!("vaultNamespace {why}")))?,
        None => default_namespace.cloned(),
    };

    let secret_key = string_field(&mut fields, "secretKey", &position)?.filter(|k| !k.is_empty());
    let key_path = string_field(&mut fields, "secretKeyPath", &position)?.filter(|k| !k.is_empty());
    let render = string_field(&mut fields, "render", &position)?;
    let selection = match (secret_key, key_path, render.as_deref()) {
        (Some(_), Some(_), _) => {
            return Err(RequestError::invalid(
                &position,
                "set either secretKey or secretKeyPath, not both",
            ));
        }
        (None, Some(_), Some(_)) | (Some(_), None, Some(_)) => {
            return Err(RequestError::invalid(
                &position,
                "set either secretKey/secretKeyPath or render, not both",
            ));
        }
        (Some(key), None, None) => Selection::Key(key),
        (None, Some(path), None) => {
            let segments: Vec<String> = path.split('.').map(str::to_owned).collect();
            if segments.iter().any(String::is_empty) {
                return Err(RequestError::invalid(
                    &position,
                    format!("secretKeyPath {path:?} has an empty segment"),
                ));
            }
            Selection::KeyPath(segments)
        }
        (None, None, Some("keys")) => Selection::Keys,
        (None, None, None | Some("response")) => Selection::Response,
        (None, None, Some("data")) => Selection::Data,
        (None, None, Some("ca-chain")) => Selection::CaChain,
        (None, None, Some("fullchain")) => Selection::FullChain,
        (None, None, Some(other)) => {
            return Err(RequestError::invalid(
                &position,
                format!("render {other:?} is not one of response, data, keys, ca-chain, fullchain"),
            ));
        }
    };

    let encoding_raw = string_field(&mut fields, "encoding", &position)?.unwrap_or_default();
    let encoding = match encoding_raw.to_ascii_lowercase().as_str() {
        "" | "utf-8" | "utf8" => Encoding::Utf8,
        "base64" => Encoding::Base64,
        "hex" => Encoding::Hex,
        _ => {
            return Err(RequestError::invalid(
                &position,
                format!("encoding {encoding_raw:?} is not one of utf-8, base64, hex"),
            ));
        }
    };

    let mode = match fields.remove("filePermission") {
        None | Some(Yaml::Null) => None,
        Some(value) => Some(
            parse_mode(&value)
                .map_err(|why| RequestError::invalid(&position, format!("filePermission {why}")))?,
        ),
    };

    let renewal_percent = match fields.remove("renewalPercent") {
        None | Some(Yaml::Null) => DEFAULT_RENEWAL_PERCENT,
        Some(value) => scalar(&value)
            .and_then(|text| text.trim().trim_end_matches('%').parse::<u8>().ok())
            .filter(|p| (1..=99).contains(p))
            .ok_or_else(|| {
                RequestError::invalid(
                    &position,
                    "renewalPercent must be a whole number from 1 to 99",
                )
            })?,
    };

    if !fields.is_empty() {
        let unknown: Vec<&str> = fields.keys().map(String::as_str).collect();
        tracing::warn!(object = %name, fields = ?unknown, "ignoring unknown object fields");
    }

    Ok(Entry::Vault(ObjectSpec {
        name,
        source: Source {
            namespace,
            path,
            query,
            method,
            args,
        },
        selection,
        encoding,
        mode,
        renewal_percent,
    }))
}

fn parse_template(
    name: FilePath,
    template: String,
    mut fields: BTreeMap<String, Yaml>,
    position: &str,
) -> Result<TemplateSpec, RequestError> {
    if template.len() > MAX_TEMPLATE_LEN {
        return Err(RequestError::invalid(
            position,
            format!("template is longer than {MAX_TEMPLATE_LEN} bytes"),
        ));
    }
    let mode = match fields.remove("filePermission") {
        None | Some(Yaml::Null) => None,
        Some(value) => Some(
            parse_mode(&value)
                .map_err(|why| RequestError::invalid(position, format!("filePermission {why}")))?,
        ),
    };
    if !fields.is_empty() {
        let extra: Vec<&str> = fields.keys().map(String::as_str).collect();
        return Err(RequestError::invalid(
            position,
            format!(
                "a template object takes only objectName, template and filePermission; remove {}",
                extra.join(", ")
            ),
        ));
    }
    Ok(TemplateSpec {
        name,
        template,
        mode,
    })
}

/// Text of a YAML scalar, the way yaml.v3 would decode it into a Go string.
fn scalar(value: &Yaml) -> Option<String> {
    match value {
        Yaml::String(s) => Some(s.clone()),
        Yaml::Number(n) => Some(n.to_string()),
        Yaml::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn string_field(
    fields: &mut BTreeMap<String, Yaml>,
    name: &str,
    position: &str,
) -> Result<Option<String>, RequestError> {
    match fields.remove(name) {
        None | Some(Yaml::Null) => Ok(None),
        Some(value) => scalar(&value)
            .map(Some)
            .ok_or_else(|| RequestError::invalid(position, format!("{name} must be a string"))),
    }
}

/// Splits `secretPath` into an API path and query. Accepts the forms
/// HashiCorp's provider accepts: `a/b`, `/a/b`, `v1/a/b`, `/v1/a/b`.
fn parse_secret_path(raw: &str) -> Result<(String, Vec<(String, String)>), String> {
    let (path, query) = match raw.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (raw, None),
    };
    let path = path.trim_start_matches('/');
    let path = path.strip_prefix("v1/").unwrap_or(path);
    let path = path.trim_end_matches('/');
    if path.is_empty() {
        return Err(format!("{raw:?} names no path"));
    }
    if path
        .split('/')
        .any(|segment| segment.is_empty() || segment == "." || segment == "..")
    {
        return Err(format!(
            "{raw:?} must not contain empty, '.' or '..' segments"
        ));
    }
    if path.chars().any(char::is_control) {
        return Err(format!("{raw:?} must not contain control characters"));
    }
    let query = query
        .map(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect()
        })
        .unwrap_or_default();
    Ok((path.to_owned(), query))
}

/// Refuses API paths under `auth/`: a login or `auth/token/create` there
/// returns a token, and a login is sent with the provider's own client
/// certificate (`--vault-tls-client-cert`), so `auth/cert/login` would hand a
/// tenant the provider's identity. Vault also takes a namespace as a path
/// prefix (`team-a/auth/cert/login`), so a write with an `auth` segment
/// anywhere is refused too. Vault matches mounts case-sensitively; this is
/// case-insensitive to be safe.
fn refuse_auth_paths(path: &str, method: Method) -> Result<(), String> {
    let is_auth = |segment: &str| segment.eq_ignore_ascii_case("auth");
    let first = path.split('/').next().unwrap_or_default();
    let write = matches!(method, Method::Put | Method::Post);
    if is_auth(first) || (write && path.split('/').any(is_auth)) {
        return Err(format!(
            "{path:?} is under auth/: objects cannot call auth methods (they return tokens)"
        ));
    }
    Ok(())
}

/// A file mode as yaml.v3 decodes it into Go's `os.FileMode`: an integer
/// whose text follows Go's base prefixes (`0640` octal, `0o640`, `0x1a4`,
/// otherwise decimal). Only permission bits are allowed.
fn parse_mode(value: &Yaml) -> Result<u32, String> {
    let mode = match value {
        Yaml::Number(n) => n
            .as_u64()
            .ok_or_else(|| format!("{n} is not a non-negative integer"))?,
        Yaml::String(s) => parse_go_int(s).ok_or_else(|| format!("{s:?} is not an integer"))?,
        _ => return Err("must be an integer such as 0644".into()),
    };
    if mode > 0o777 {
        return Err(format!("{mode:#o} has bits outside 0777"));
    }
    Ok(mode as u32)
}

fn parse_go_int(text: &str) -> Option<u64> {
    let text = text.trim().replace('_', "");
    let (digits, radix) =
        if let Some(rest) = text.strip_prefix("0o").or_else(|| text.strip_prefix("0O")) {
            (rest.to_owned(), 8)
        } else if let Some(rest) = text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
            (rest.to_owned(), 16)
        } else if text.len() > 1 && text.starts_with('0') {
            (text[1..].to_owned(), 8)
        } else {
            (text, 10)
        };
    if digits.is_empty() {
        return None;
    }
    u64::from_str_radix(&digits, radix).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::nesting::MAX_NESTING;

    fn one(yaml: &str) -> ObjectSpec {
        let mut objects = parse(yaml, None).expect("valid objects").vault;
        assert_eq!(objects.len(), 1);
        objects.remove(0)
    }

    fn error(yaml: &str) -> String {
        parse(yaml, None)
            .expect_err("should be refused")
            .to_string()
    }

    /// `depth` nested flow sequences around one scalar, as `secretArgs`.
    fn nested_flow(depth: usize) -> String {
        format!(
            "- objectName: a\n  secretPath: pki/issue/x\n  secretArgs: {{k: {}1{}}}\n",
            "[".repeat(depth),
            "]".repeat(depth)
        )
    }

    #[test]
    fn deep_nesting_is_refused_before_parsing() {
        // Within the limit: the parser sees it (and `secretArgs` keeps it).
        assert!(parse(&nested_flow(MAX_NESTING - 5), None).is_ok());
        for yaml in [
            nested_flow(MAX_NESTING),
            // Flow collections spread over lines.
            format!("- objectName: a\n  secretArgs:\n{}", "  [\n".repeat(40)),
            // Block mappings, one level per line.
            (0..40)
                .map(|i| format!("{}k{i}:\n", " ".repeat(i)))
                .collect(),
            // Compact nested sequences on one line.
            format!("{}x\n", "- ".repeat(40)),
            // Flow mappings.
            format!("- {}\n", "{a: ".repeat(40)),
        ] {
            let err = error(&yaml);
            assert!(
                err.contains("objects") && err.contains("nested deeper"),
                "{err}"
            );
        }
    }

    #[test]
    fn nesting_hidden_in_scalars_and_comments_is_not_counted() {
        let deep = "[".repeat(100);
        for yaml in [
            format!("- objectName: a\n  secretPath: p\n  secretKey: '{deep}'\n"),
            format!("- objectName: a\n  secretPath: p\n  secretKey: \"{deep}\\\"\"\n"),
            format!("- objectName: a # {deep}\n  secretPath: p\n"),
            format!(
                "- objectName: t\n  template: |\n    {{{{ '{deep}' }}}}\n    {deep}\n- objectName: a\n  secretPath: p\n"
            ),
        ] {
            parse(&yaml, None).unwrap_or_else(|err| panic!("{yaml}: {err}"));
        }
        // A quote inside a plain scalar starts nothing: what follows counts.
        let err = error(&format!("- objectName: don't{deep}\n"));
        assert!(err.contains("nested deeper"), "{err}");
        // A block scalar ends at a line indented no more than its key.
        let err = error(&format!(
            "- objectName: t\n  template: |\n    x\n  secretArgs: {deep}\n"
        ));
        assert!(err.contains("nested deeper"), "{err}");
    }

    /// Not a timing assertion: prints how long refusing 1 MiB of nesting
    /// takes (`cargo test --release -- --nocapture nesting_refusal_time`).
    #[test]
    fn nesting_refusal_time() {
        // Worst case for the scan: 1 MiB nested just within the limit (read
        // to the end), then once too deep.
        let allowed = nested_flow(MAX_NESTING - 5);
        let mut yaml = allowed.repeat((1 << 20) / allowed.len());
        yaml.push_str(&nested_flow(1 << 10));
        let started = std::time::Instant::now();
        let err = error(&yaml);
        println!(
            "refused {} bytes of nested YAML in {:?}",
            yaml.len(),
            started.elapsed()
        );
        assert!(err.contains("nested deeper"), "{err}");
        // And what the parser costs for the same text within the limit.
        let yaml = yaml[..yaml.len() - nested_flow(1 << 10).len()].to_owned();
        let started = std::time::Instant::now();
        let parsed = serde_yaml_ng::from_str::<Yaml>(&yaml);
        println!(
            "parsed {} bytes nested {} deep in {:?}",
            yaml.len(),
            MAX_NESTING - 5,
            started.elapsed()
        );
        assert!(parsed.is_ok());
    }

    #[test]
    fn hashicorp_example_parses() {
        let o = one(
            "- objectName: \"db-password\"\n  secretPath: \"secret/data/db-pass\"\n  secretKey: \"password\"\n",
        );
        assert_eq!(o.name.as_str(), "db-password");
        assert_eq!(o.source.path, "secret/data/db-pass");
        assert_eq!(o.source.method, Method::Get);
        assert_eq!(o.selection, Selection::Key("password".into()));
        assert_eq!(o.encoding, Encoding::Utf8);
        assert_eq!(o.mode, None);
    }

    #[test]
    fn secret_path_forms_and_query() {
        for form in [
            "secret/data/x",
            "/secret/data/x",
            "v1/secret/data/x",
            "/v1/secret/data/x",
        ] {
            let o = one(&format!(
                "- objectName: a\n  secretPath: {form}?version=3\n"
            ));
            assert_eq!(o.source.path, "secret/data/x");
            assert_eq!(o.source.query, vec![("version".to_owned(), "3".to_owned())]);
            assert_eq!(o.source.display_path(), "secret/data/x?version=3");
        }
        assert!(error("- objectName: a\n  secretPath: secret/../sys/x\n").contains("'..'"));
        assert!(error("- objectName: a\n  secretPath: /v1/\n").contains("names no path"));
    }

    #[test]
    fn auth_paths_are_refused() {
        for (path, method) in [
            ("auth/token/create", "POST"),
            ("/v1/auth/cert/login", "PUT"),
            ("v1/auth/approle/role/x/secret-id", "POST"),
            ("AUTH/token/lookup-self", "GET"),
            ("Auth/token/create", "LIST"),
            ("team-a/auth/cert/login", "PUT"),
            ("team-a/Auth/cert/login", "POST"),
        ] {
            let err = error(&format!(
                "- objectName: a\n  secretPath: {path}\n  method: {method}\n"
            ));
            assert!(err.contains("under auth/"), "{path}: {err}");
        }
        // A KV secret called auth is a read, and fine.
        for path in ["secret/data/auth", "secret/data/app/auth/db", "kv/auth"] {
            assert_eq!(
                one(&format!("- objectName: a\n  secretPath: {path}\n"))
                    .source
                    .path,
                path
            );
        }
    }

    #[test]
    fn file_permission_is_read_like_yaml_v3() {
        for (text, mode) in [
            ("0640", 0o640),
            ("420", 420),
            ("0o600", 0o600),
            ("0x1A4", 0o644),
            ("'0400'", 0o400),
        ] {
            let o = one(&format!(
                "- objectName: a\n  secretPath: s/x\n  filePermission: {text}\n"
            ));
            assert_eq!(o.mode, Some(mode), "filePermission: {text}");
        }
        assert!(
            error("- objectName: a\n  secretPath: s/x\n  filePermission: 01777\n")
                .contains("outside 0777")
        );
        assert!(
            error("- objectName: a\n  secretPath: s/x\n  filePermission: rw\n")
                .contains("filePermission")
        );
        assert!(
            error("- objectName: a\n  secretPath: s/x\n  filePermission: -1\n")
                .contains("filePermission")
        );
    }

    #[test]
    fn secret_args_are_canonical_and_part_of_the_source() {
        let a = one(
            "- objectName: a\n  secretPath: pki/issue/r\n  method: PUT\n  secretArgs:\n    ttl: 1h\n    common_name: x\n",
        );
        let b = one(
            "- objectName: b\n  secretPath: pki/issue/r\n  method: put\n  secretArgs: {common_name: x, ttl: 1h}\n",
        );
        assert_eq!(a.source, b.source);
        assert_eq!(
            a.source.args.as_deref(),
            Some(r#"{"common_name":"x","ttl":"1h"}"#)
        );
        let c = one(
            "- objectName: c\n  secretPath: pki/issue/r\n  method: PUT\n  secretArgs: {common_name: y}\n",
        );
        assert_ne!(a.source, c.source);
    }

    #[test]
    fn encodings_methods_and_render() {
        let o = one("- objectName: a\n  secretPath: s/x\n  secretKey: k\n  encoding: BASE64\n");
        assert_eq!(o.encoding, Encoding::Base64);
        let o = one("- objectName: a\n  secretPath: s/x\n  render: data\n");
        assert_eq!(o.selection, Selection::Data);
        assert!(
            error("- objectName: a\n  secretPath: s/x\n  encoding: rot13\n").contains("encoding")
        );
        assert!(error("- objectName: a\n  secretPath: s/x\n  method: DELETE\n").contains("method"));
        assert!(error("- objectName: a\n  secretPath: s/x\n  render: all\n").contains("render"));
        assert!(
            error("- objectName: a\n  secretPath: s/x\n  secretKey: k\n  render: data\n")
                .contains("not both")
        );
    }

    #[test]
    fn key_paths_keys_and_templates() {
        let o = one("- objectName: a\n  secretPath: s/x\n  secretKeyPath: db.hosts.0\n");
        assert_eq!(
            o.selection,
            Selection::KeyPath(vec!["db".into(), "hosts".into(), "0".into()])
        );
        assert_eq!(
            one("- objectName: a\n  secretPath: s/x\n  render: keys\n").selection,
            Selection::Keys
        );
        assert!(
            error("- objectName: a\n  secretPath: s/x\n  secretKeyPath: a..b\n")
                .contains("empty segment")
        );
        assert!(
            error("- objectName: a\n  secretPath: s/x\n  secretKey: a\n  secretKeyPath: b\n")
                .contains("not both")
        );

        let parsed = parse(
            "- objectName: user\n  secretPath: s/x\n  secretKey: u\n- objectName: app.env\n  template: 'U={{ objects.user }}'\n  filePermission: 0600\n",
            None,
        )
        .unwrap();
        assert_eq!(parsed.vault.len(), 1);
        assert_eq!(parsed.templates.len(), 1);
        assert_eq!(parsed.templates[0].mode, Some(0o600));
        assert!(
            error("- objectName: t\n  template: x\n  secretPath: s/x\n")
                .contains("remove secretPath")
        );
        assert!(
            error("- objectName: t\n  template: x\n- objectName: t\n  secretPath: s/x\n")
                .contains("duplicated: t")
        );
    }

    #[test]
    fn renewal_percent() {
        assert_eq!(
            one("- objectName: a\n  secretPath: s/x\n").renewal_percent,
            67
        );
        assert_eq!(
            one("- objectName: a\n  secretPath: s/x\n  renewalPercent: 50\n").renewal_percent,
            50
        );
        assert!(
            error("- objectName: a\n  secretPath: s/x\n  renewalPercent: 100\n")
                .contains("renewalPercent")
        );
        assert!(
            error("- objectName: a\n  secretPath: s/x\n  renewalPercent: x\n")
                .contains("renewalPercent")
        );
    }

    #[test]
    fn numeric_scalars_are_strings() {
        let o = one("- objectName: 2024\n  secretPath: s/x\n  secretKey: 123\n");
        assert_eq!(o.name.as_str(), "2024");
        assert_eq!(o.selection, Selection::Key("123".into()));
    }

    #[test]
    fn namespaces_per_object() {
        let default = Namespace::parse("admin/deployments/a").unwrap();
        let objects = parse(
            "- objectName: a\n  secretPath: s/x\n- objectName: b\n  secretPath: pki/issue/r\n  vaultNamespace: /admin/central/\n",
            default.as_ref(),
        )
        .unwrap()
        .vault;
        assert_eq!(
            objects[0].source.namespace.as_ref().unwrap().as_str(),
            "admin/deployments/a"
        );
        assert_eq!(
            objects[1].source.namespace.as_ref().unwrap().as_str(),
            "admin/central"
        );
    }

    #[test]
    fn structural_errors_are_clear() {
        assert!(error("").contains("no objects"));
        assert!(error("[]").contains("no objects"));
        assert!(error("a: b").contains("YAML list"));
        assert!(error("- objectName: [a\n").contains("not valid YAML"));
        assert!(error("- secretPath: s/x\n").contains("objectName is required"));
        assert!(error("- objectName: a\n").contains("secretPath is required"));
        assert!(error("- objectName: ../a\n  secretPath: s/x\n").contains("objectName"));
        assert!(error("- objectName: /a\n  secretPath: s/x\n").contains("relative"));
        assert!(
            error("- objectName: a\n  secretPath: s/x\n- objectName: a\n  secretPath: s/y\n")
                .contains("duplicated: a")
        );
        assert!(
            error("- objectName: a\n  secretPath: s/x\n- objectName: a/b\n  secretPath: s/y\n")
                .contains("directory")
        );
        assert!(
            error("- objectName: a\n  secretPath: [x]\n").contains("secretPath must be a string")
        );
        assert!(error("- just a string\n").contains("mapping"));
    }

    #[test]
    fn too_many_objects_are_refused() {
        let yaml: String = (0..=MAX_OBJECTS)
            .map(|i| format!("- objectName: o{i}\n  secretPath: s/x\n"))
            .collect();
        assert!(error(&yaml).contains("at most"));
    }
}
