//! Property tests of everything that parses or renders input from outside:
//! the driver's request (`attributes`, `secrets`, `permission`), the `objects`
//! YAML, object paths, and rendering of Vault responses and templates.
//!
//! They run on stable Rust in `make test`, a bounded number of cases each
//! (`PROPTEST_CASES`, default below); `make fuzz` runs the same entry points
//! under cargo-fuzz (libFuzzer, nightly) for longer (`fuzz/`). Crashes found
//! either way become cases in `regressions()` at the end of this file.
//!
//! No OpenBao needed: these run against the library alone.

use std::collections::BTreeMap;

use proptest::prelude::*;
use proptest::test_runner::Config;
use serde_json::{Value, json};
use vault_secrets_provider::budget::ByteBudget;
use vault_secrets_provider::proto::MountRequest;
use vault_secrets_provider::render;
use vault_secrets_provider::request::{
    self, Defaults, Encoding, FilePath, Method, ObjectSpec, Selection, Source, TemplateSpec,
    TlsSettings,
};

/// Cases per property unless `PROPTEST_CASES` says otherwise.
const CASES: u32 = 2000;

fn config() -> Config {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(CASES);
    Config {
        cases,
        // Shrinking a failure can take long; the failing input is printed anyway.
        max_shrink_iters: 2000,
        failure_persistence: None,
        ..Config::default()
    }
}

/// Strings over an alphabet that reaches the interesting corners: separators,
/// dots, NUL, whitespace, non-ASCII and look-alike slashes.
fn tricky_string(max: usize) -> impl Strategy<Value = String> + Clone {
    let alphabet = vec![
        "a",
        "b",
        "/",
        "/",
        ".",
        ".",
        "..",
        "\0",
        " ",
        "\t",
        "\n",
        "é",
        "∕",
        "\u{202e}",
        "~",
        "-",
        "_",
        "%2e",
        "x".repeat(255).leak(),
    ];
    prop::collection::vec(prop::sample::select(alphabet), 0..max).prop_map(|parts| parts.concat())
}

/// The driver's rules for a file path, restated independently of
/// `FilePath::parse`.
fn driver_accepts(path: &str) -> bool {
    let elements: Vec<&str> = path.split('/').collect();
    !path.is_empty()
        && !path.starts_with('/')
        && path.len() <= 4096
        && !path.contains('\0')
        && !elements[0].starts_with("..")
        && elements
            .iter()
            .all(|e| !e.is_empty() && *e != "." && *e != ".." && e.len() <= 255)
}

fn defaults() -> Defaults {
    Defaults {
        vault_address: url::Url::parse("http://127.0.0.1:8200").unwrap(),
        vault_namespace: None,
        tls: TlsSettings::default(),
        allowed_vault_addrs: Default::default(),
        spc_tls_dir: None,
    }
}

/// A value for an `objects` field: valid-looking, wrong-typed or hostile.
fn yaml_scalar() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("secret/data/app".to_owned()),
        Just("0644".to_owned()),
        Just("0o7777".to_owned()),
        Just("-1".to_owned()),
        Just("base64".to_owned()),
        Just("keys".to_owned()),
        Just("PUT".to_owned()),
        Just("[1, 2]".to_owned()),
        Just("{a: b}".to_owned()),
        Just("*alias".to_owned()),
        Just("&anchor x".to_owned()),
        Just("~".to_owned()),
        Just("\"\\0\"".to_owned()),
        Just("99999999999999999999999".to_owned()),
        tricky_string(6).prop_map(|s| format!("{s:?}")),
    ]
}

const FIELDS: &[&str] = &[
    "objectName",
    "secretPath",
    "secretKey",
    "secretKeyPath",
    "render",
    "encoding",
    "filePermission",
    "method",
    "secretArgs",
    "vaultNamespace",
    "renewalPercent",
    "template",
    "unknownField",
];

/// An `objects` list of 0–6 entries, each a random subset of fields.
fn objects_yaml() -> impl Strategy<Value = String> {
    let entry = prop::collection::vec((prop::sample::select(FIELDS), yaml_scalar()), 0..6);
    prop::collection::vec(entry, 0..6).prop_map(|entries| {
        let mut yaml = String::new();
        for fields in entries {
            yaml.push('-');
            if fields.is_empty() {
                yaml.push_str(" {}\n");
            }
            for (i, (name, value)) in fields.iter().enumerate() {
                let indent = if i == 0 { " " } else { "  " };
                yaml.push_str(&format!("{indent}{name}: {value}\n"));
            }
        }
        yaml
    })
}

/// JSON values of any shape, a few levels deep.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| json!(f)),
        tricky_string(8).prop_map(Value::from),
        Just(Value::from("aGVsbG8=")),
        Just(Value::from("68656c6c6f")),
        Just(Value::from(
            "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----"
        )),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(tricky_string(4), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A Vault-like response around arbitrary data (KV v2, KV v1 or PKI shape).
fn response() -> impl Strategy<Value = Value> {
    (json_value(), 0..4u8).prop_map(|(data, shape)| match shape {
        0 => json!({"data": {"data": data, "metadata": {"version": 1}}}),
        1 => json!({"data": data, "lease_id": "", "lease_duration": 0}),
        2 => json!({"data": {"certificate": "C", "ca_chain": data, "issuing_ca": "I", "expiration": 1}}),
        _ => data,
    })
}

fn selection() -> impl Strategy<Value = Selection> {
    let key = tricky_string(4);
    prop_oneof![
        Just(Selection::Response),
        Just(Selection::Data),
        Just(Selection::Keys),
        Just(Selection::CaChain),
        Just(Selection::FullChain),
        key.clone().prop_map(Selection::Key),
        prop::collection::vec(
            prop_oneof![key, Just("0".to_owned()), Just("1".to_owned())],
            1..4
        )
        .prop_map(Selection::KeyPath),
    ]
}

fn object(selection: Selection, encoding: Encoding) -> ObjectSpec {
    ObjectSpec {
        name: FilePath::parse("obj").unwrap(),
        source: Source {
            namespace: None,
            path: "secret/data/app".into(),
            query: Vec::new(),
            method: Method::Get,
            args: None,
        },
        selection,
        encoding,
        mode: None,
        renewal_percent: 67,
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn paths_are_accepted_exactly_as_the_driver_would(path in tricky_string(12)) {
        let parsed = FilePath::parse(&path);
        prop_assert_eq!(parsed.is_ok(), driver_accepts(&path), "{:?}: {:?}", path, parsed);
        if let Ok(p) = parsed {
            prop_assert_eq!(p.as_str(), path.as_str());
            prop_assert!(!p.top_level().is_empty());
        }
    }

    #[test]
    fn objects_yaml_never_panics_and_yields_only_valid_objects(yaml in objects_yaml()) {
        check_objects(&yaml)?;
    }

    #[test]
    fn objects_of_any_text_never_panic(text in any::<String>()) {
        check_objects(&text)?;
    }

    #[test]
    fn requests_never_panic_and_errors_stay_short(
        attributes in prop::collection::btree_map(
            prop::sample::select(vec![
                "objects", "roleId", "roleName", "vaultAddress", "vaultNamespace",
                "vaultAuthNamespace", "vaultAuthMethod", "vaultAuthMountPath",
                "vaultKubernetesMountPath", "vaultSkipTLSVerify", "vaultTLSClientCertPath",
                "audience", "csi.storage.k8s.io/serviceAccount.tokens",
                "csi.storage.k8s.io/pod.uid",
            ]),
            prop_oneof![yaml_scalar(), objects_yaml(), tricky_string(10)],
            0..8,
        ),
        secrets in prop::collection::btree_map(
            prop::sample::select(vec!["secretId", "id", "roleId", "other"]),
            tricky_string(6),
            0..3,
        ),
        permission in prop_oneof![Just("420".to_owned()), tricky_string(4), any::<u32>().prop_map(|n| n.to_string())],
        raw in prop::option::of(any::<String>()),
    ) {
        let request = MountRequest {
            attributes: raw.unwrap_or_else(|| json!(attributes).to_string()),
            secrets: json!(secrets).to_string(),
            target_path: "/tmp/x".into(),
            permission,
            current_object_version: Vec::new(),
        };
        match request::parse(&request, &defaults()) {
            Ok(plan) => {
                prop_assert!(plan.default_mode <= 0o777);
                prop_assert!(!plan.objects.is_empty() || !plan.templates.is_empty());
            }
            Err(err) => {
                prop_assert!(err.to_string().len() < 1300, "{} bytes", err.to_string().len());
                prop_assert!(!err.parameter.is_empty());
            }
        }
    }

    #[test]
    fn rendering_any_response_never_panics(
        response in response(),
        selection in selection(),
        encoding in prop::sample::select(vec![Encoding::Utf8, Encoding::Base64, Encoding::Hex]),
    ) {
        let object = object(selection, encoding);
        if let Ok(files) = render::render_files(&object, &response) {
            for (path, _) in &files {
                prop_assert!(driver_accepts(path.as_str()), "{:?}", path);
                prop_assert!(
                    path.as_str() == "obj" || path.as_str().starts_with("obj/"),
                    "{:?} escapes its object", path
                );
            }
        }
    }

    #[test]
    fn templates_never_panic_and_stay_bounded(
        template in prop_oneof![
            tricky_string(10),
            prop::collection::vec(prop::sample::select(vec![
                "{{", "}}", "{%", "%}", "objects.a", "objects[\"b\"]", " for x in range(1000000) ",
                " endfor ", "x", "|", "length", " if ", " endif ", "~", "loop", "(", ")", "*", "9",
                // Whole pieces, so that some templates loop over a long `a`.
                "{% for x in range(4300) %}", "{{ objects.a }}", "{% endfor %}",
            ]), 0..14).prop_map(|p| p.concat()),
        ],
        a in tricky_string(6),
    ) {
        let spec = TemplateSpec { name: FilePath::parse("t").unwrap(), template, mode: None };
        let context = BTreeMap::from([
            ("a".to_owned(), Value::from(a)),
            ("b".to_owned(), json!({"k": "v"})),
        ]);
        if let Ok(out) = render::render_template(&spec, &context, &unlimited()) {
            prop_assert!(out.len() <= MAX_TEMPLATE_OUTPUT, "{} bytes", out.len());
        }
    }
}

/// The most template output src/render.rs accepts (the driver's whole gRPC
/// message). Its fuel alone would allow more: minijinja charges 1/64 fuel per
/// output byte, so 100,000 fuel pays for ~6 MB of a value emitted in a loop.
const MAX_TEMPLATE_OUTPUT: usize = 4 << 20;

/// Output just under the limit renders whole; just over it is refused by the
/// limit itself, not by the fuel (both loops cost well under the fuel).
#[test]
fn template_output_is_bounded_by_the_limit_not_only_by_fuel() {
    let long = "x".repeat(1000);
    let context = BTreeMap::from([("a".to_owned(), Value::from(long.as_str()))]);
    let template = |times: usize| TemplateSpec {
        name: FilePath::parse("t").unwrap(),
        template: format!("{{% for i in range({times}) %}}{{{{ objects.a }}}}{{% endfor %}}"),
        mode: None,
    };
    let under =
        render::render_template(&template(4000), &context, &unlimited()).expect("4,000,000 bytes");
    assert_eq!(under.len(), 4_000_000);
    assert!(under.len() <= MAX_TEMPLATE_OUTPUT);
    let err = render::render_template(&template(4300), &context, &unlimited())
        .expect_err("4,300,000 bytes is over the limit")
        .to_string();
    assert!(
        err.contains(&format!(
            "output is larger than {MAX_TEMPLATE_OUTPUT} bytes"
        )),
        "{err}"
    );
}

/// No per-Mount byte budget: these properties are about the renderer's own limits.
fn unlimited() -> ByteBudget {
    ByteBudget::new(usize::MAX, "test")
}

fn check_objects(yaml: &str) -> Result<(), TestCaseError> {
    let Ok(objects) = request::objects::parse(yaml, None) else {
        return Ok(());
    };
    let mut names = std::collections::HashSet::new();
    for name in objects
        .vault
        .iter()
        .map(|o| &o.name)
        .chain(objects.templates.iter().map(|t| &t.name))
    {
        prop_assert!(driver_accepts(name.as_str()), "{:?}", name);
        prop_assert!(
            names.insert(name.as_str().to_owned()),
            "duplicate {:?}",
            name
        );
    }
    for object in &objects.vault {
        prop_assert!(object.mode.is_none_or(|m| m <= 0o777));
        prop_assert!((1..=99).contains(&object.renewal_percent));
        prop_assert!(
            !object
                .source
                .path
                .split('/')
                .any(|s| s.is_empty() || s == "..")
        );
    }
    Ok(())
}

/// Inputs that once broke (or nearly broke) a parser, kept as plain tests.
#[test]
fn regressions() {
    // YAML aliases expanding into millions of nodes (billion laughs).
    let mut bomb = String::from(
        "- objectName: x\n  secretPath: s/a\n  secretArgs:\n    a: &a [l,l,l,l,l,l,l,l,l]\n",
    );
    for (prev, next) in ('a'..='h').zip('b'..='i') {
        bomb.push_str(&format!(
            "    {next}: &{next} [*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev}]\n"
        ));
    }
    assert!(request::objects::parse(&bomb, None).is_err());
    // Deeply nested JSON in attributes.
    let request = MountRequest {
        attributes: "[".repeat(100_000),
        secrets: String::new(),
        target_path: String::new(),
        permission: String::new(),
        current_object_version: Vec::new(),
    };
    assert!(request::parse(&request, &defaults()).is_err());
    // A key path through a huge array index.
    let object = object(
        Selection::KeyPath(vec!["99999999999999999999".into()]),
        Encoding::Utf8,
    );
    assert!(render::render_files(&object, &json!({"data": [1]})).is_err());
    // Multi-byte characters around the 255-byte element limit.
    assert!(FilePath::parse(&"é".repeat(127)).is_ok());
    assert!(FilePath::parse(&"é".repeat(128)).is_err());
}
