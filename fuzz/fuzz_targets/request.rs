//! The driver's request: `attributes`, `secrets` and `permission` as sent.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vault_secrets_provider::proto::MountRequest;
use vault_secrets_provider::request::{self, Defaults, TlsSettings};

fuzz_target!(|input: (&str, &str, &str)| {
    let (attributes, secrets, permission) = input;
    let request = MountRequest {
        attributes: attributes.to_owned(),
        secrets: secrets.to_owned(),
        target_path: "/tmp/fuzz".to_owned(),
        permission: permission.to_owned(),
        current_object_version: Vec::new(),
    };
    let defaults = Defaults {
        vault_address: url::Url::parse("http://127.0.0.1:8200").unwrap(),
        vault_namespace: None,
        tls: TlsSettings::default(),
    };
    match request::parse(&request, &defaults) {
        Ok(plan) => assert!(plan.default_mode <= 0o777),
        Err(err) => assert!(err.to_string().len() < 1300),
    }
});
