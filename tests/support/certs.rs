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

/// Watches a volume's `tls.crt` and `tls.key` (`read(name)` gives a file's
/// content) until `count` different certificates have been seen, looking
/// every `every` for at most `within`. At each look the certificate must be
/// unexpired and, when new, match the key beside it (never one without the
/// other). `also` runs at each look too (e.g. to watch another file).
pub async fn watch_certificates(
    read: impl Fn(&str) -> String,
    count: usize,
    every: std::time::Duration,
    within: std::time::Duration,
    mut also: impl FnMut(),
) {
    let deadline = std::time::Instant::now() + within;
    let mut certificates = vec![read("tls.crt")];
    while certificates.len() < count {
        assert!(
            std::time::Instant::now() < deadline,
            "only {} certificates in {within:?}",
            certificates.len()
        );
        let (cert, key) = (read("tls.crt"), read("tls.key"));
        assert!(unexpired(&cert), "the volume holds an expired certificate");
        if cert != *certificates.last().unwrap() {
            assert_eq!(
                public_key(&cert, &["x509", "-noout", "-pubkey"]),
                public_key(&key, &["pkey", "-pubout"]),
                "certificate and key from one issue"
            );
            certificates.push(cert);
        }
        also();
        tokio::time::sleep(every).await;
    }
}
