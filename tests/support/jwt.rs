//! Service-account-like JWTs signed with a key the test holds, for OpenBao's
//! `jwt` auth method (which checks the signature itself, with the public key).
#![allow(dead_code)]

use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::json;

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// An EC P-256 key pair made with openssl: (private PEM, public PEM).
pub fn signing_key() -> (String, String) {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("key.pem");
    let ok = Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
        ])
        .arg(&key)
        .status()
        .unwrap()
        .success();
    assert!(ok, "openssl genpkey");
    let public = Command::new("openssl")
        .args(["pkey", "-pubout", "-in"])
        .arg(&key)
        .output()
        .unwrap();
    assert!(public.status.success());
    (
        std::fs::read_to_string(&key).unwrap(),
        String::from_utf8(public.stdout).unwrap(),
    )
}

/// A service-account-like JWT signed with `private_pem`.
pub fn service_account_jwt(
    private_pem: &str,
    audience: &str,
    expires: u64,
    service_account: &str,
) -> String {
    let claims = json!({
        "iss": "https://kubernetes.default.svc.cluster.local",
        "sub": format!("system:serviceaccount:default:{service_account}"),
        "aud": [audience],
        "iat": unix_now() - 5,
        "nbf": unix_now() - 5,
        "exp": expires,
        "kubernetes.io": {
            "namespace": "default",
            "serviceaccount": {"name": service_account, "uid": "4f1c6b8e-0000-4000-8000-000000000001"},
            "pod": {"name": "app-0", "uid": "4f1c6b8e-0000-4000-8000-000000000002"},
        },
    });
    let key = jsonwebtoken::EncodingKey::from_ec_pem(private_pem.as_bytes()).unwrap();
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256),
        &claims,
        &key,
    )
    .unwrap()
}

pub fn tokens_attribute(audience: &str, jwt: &str) -> String {
    json!({ audience: {"token": jwt, "expirationTimestamp": "2030-01-01T00:00:00Z"} }).to_string()
}
