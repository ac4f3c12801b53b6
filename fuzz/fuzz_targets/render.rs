//! Rendering: any Vault response with any selection and encoding, and any
//! template. Never a panic; files never leave their object's directory.
#![no_main]

use std::collections::BTreeMap;

use libfuzzer_sys::fuzz_target;
use vault_secrets_provider::render;
use vault_secrets_provider::request::{
    Encoding, FilePath, Method, ObjectSpec, Selection, Source, TemplateSpec,
};

fuzz_target!(|input: (&str, u8, &str, &str)| {
    let (response, choice, key, template) = input;
    let Ok(response) = serde_json::from_str::<serde_json::Value>(response) else {
        return;
    };
    let selection = match choice % 7 {
        0 => Selection::Response,
        1 => Selection::Data,
        2 => Selection::Keys,
        3 => Selection::CaChain,
        4 => Selection::FullChain,
        5 => Selection::Key(key.to_owned()),
        _ => Selection::KeyPath(key.split('.').map(str::to_owned).collect()),
    };
    let encoding = match (choice / 7) % 3 {
        0 => Encoding::Utf8,
        1 => Encoding::Base64,
        _ => Encoding::Hex,
    };
    let object = ObjectSpec {
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
    };
    let mut context = BTreeMap::new();
    if let Ok(files) = render::render_files(&object, &response) {
        for (path, contents) in files {
            assert!(path.as_str() == "obj" || path.as_str().starts_with("obj/"));
            context.insert(
                path.as_str().to_owned(),
                serde_json::Value::from(String::from_utf8_lossy(&contents).into_owned()),
            );
        }
    }
    let spec = TemplateSpec {
        name: FilePath::parse("t").unwrap(),
        template: template.to_owned(),
        mode: None,
    };
    if let Ok(out) = render::render_template(&spec, &context, &vault_secrets_provider::budget::ByteBudget::new(usize::MAX, "test")) {
        assert!(out.len() <= 1 << 20);
    }
});
