//! Object paths: accepted exactly when the driver's rules hold.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vault_secrets_provider::request::FilePath;

fuzz_target!(|path: &str| {
    let elements: Vec<&str> = path.split('/').collect();
    let driver_accepts = !path.is_empty()
        && !path.starts_with('/')
        && path.len() <= 4096
        && !path.contains('\0')
        && !elements[0].starts_with("..")
        && elements
            .iter()
            .all(|e| !e.is_empty() && *e != "." && *e != ".." && e.len() <= 255);
    assert_eq!(FilePath::parse(path).is_ok(), driver_accepts, "{path:?}");
});
