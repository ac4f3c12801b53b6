//! The `objects` YAML: never a panic, and only valid, unique objects.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vault_secrets_provider::request::{FilePath, objects};

fuzz_target!(|yaml: &str| {
    let Ok(parsed) = objects::parse(yaml, None) else {
        return;
    };
    let mut names = std::collections::HashSet::new();
    for name in parsed
        .vault
        .iter()
        .map(|o| &o.name)
        .chain(parsed.templates.iter().map(|t| &t.name))
    {
        assert!(FilePath::parse(name.as_str()).is_ok());
        assert!(names.insert(name.as_str().to_owned()));
    }
    for object in &parsed.vault {
        assert!(object.mode.is_none_or(|m| m <= 0o777));
    }
});
