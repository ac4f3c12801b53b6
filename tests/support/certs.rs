//! Certificates and keys as a pod sees them, checked with `openssl`.
#![allow(dead_code)]

use std::process::Command;

/// Whether the certificate `pem` is still valid now (`openssl x509 -checkend 0`).
pub fn unexpired(pem: &str) -> bool {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("cert.pem");
    std::fs::write(&file, pem).unwrap();
    Command::new("openssl")
        .args(["x509", "-noout", "-checkend", "0", "-in"])
        .arg(&file)
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap()
        .success()
}

/// The public key of a certificate or a private key, as openssl prints it.
pub fn public_key(pem: &str, args: &[&str]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("in.pem");
    std::fs::write(&file, pem).unwrap();
    let out = Command::new("openssl")
        .args(args)
        .arg("-in")
        .arg(&file)
        .output()
        .unwrap();
    assert!(out.status.success(), "openssl {args:?}");
    String::from_utf8(out.stdout).unwrap()
}
