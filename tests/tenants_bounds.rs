//! Bounded work and memory per Mount, against a hostile tenant: deeply nested
//! `objects` YAML, templates that render more than a Mount may hold, and a
//! "Vault" of the tenant's own answering huge bodies. Each is refused with a
//! clear status while another tenant's Mount and `/healthz` keep answering,
//! nothing is written, and the provider's peak memory (VmHWM) stays under the
//! DaemonSet's 128 MiB limit.

mod support;

use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use serde_json::json;
use support::deployment::Deployment;
use support::provider::{Provider, Volume, driver_clients, mount_fresh};

/// The DaemonSet's memory limit.
const MEMORY_LIMIT_KIB: u64 = 128 << 10;

/// The provider's peak resident memory so far, in KiB.
fn vm_hwm_kib(provider: &Provider) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", provider.pid()))
        .expect("provider's /proc status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc status")
}

/// `objects` just under the 1 MiB parameter limit: one object whose
/// `secretArgs` nests flow sequences as deep as the space allows.
fn nested_objects() -> String {
    let head = "- objectName: deep\n  secretPath: pki/issue/x\n  secretArgs: {a: ";
    let depth = (1_000_000 - head.len() - 4) / 2;
    format!("{head}{}1{}}}\n", "[".repeat(depth), "]".repeat(depth))
}

#[tokio::test]
async fn nested_yaml_is_refused_while_others_keep_answering() {
    let d = Deployment::new("bounds-yaml").await;
    d.put("app", json!({"k": "victim-value"})).await;
    let provider = Provider::start(&d.bao.addr, &[]);
    let client = driver_clients().remove(0).with_timeout("30s");
    let dir: PathBuf = provider.providers_dir().to_owned();

    // Four attackers at once: more than the provider's CPU permits.
    let hostile = d.attributes(&nested_objects());
    let attacks: Vec<_> = (0..4)
        .map(|_| {
            let (client, dir, hostile, secrets) =
                (client.clone(), dir.clone(), hostile.clone(), d.secrets());
            tokio::task::spawn_blocking(move || {
                let volume = Volume::new();
                let started = Instant::now();
                let result = client.mount_in(&dir, &hostile, &secrets, volume.path());
                (result, started.elapsed(), volume.files().len())
            })
        })
        .collect();
    // Meanwhile: the probe and another tenant's Mount.
    assert_eq!(provider.get("/healthz").await.0, 200);
    let victim = d.attributes("- objectName: k\n  secretPath: secret/data/app\n  secretKey: k\n");
    let volume = Volume::new();
    client
        .mount(&provider, &victim, &d.secrets(), volume.path())
        .expect_ok();
    assert_eq!(volume.read("k"), "victim-value");

    for attack in attacks {
        let (result, elapsed, written) = attack.await.unwrap();
        println!("refused 1 MB of nested YAML in {elapsed:?} (driver round trip)");
        result.expect_err("InvalidArgument", "objects");
        assert!(
            result.message.contains("nested deeper"),
            "{}",
            result.message
        );
        assert_eq!(written, 0, "nothing written");
    }
    assert_eq!(provider.get("/healthz").await.0, 200);
}

#[tokio::test]
async fn templates_beyond_the_budget_are_resource_exhausted() {
    let d = Deployment::new("bounds-template").await;
    d.put("app", json!({"k": "v"})).await;
    let provider = Provider::start(&d.bao.addr, &[]);
    let client = driver_clients().remove(0);
    let before = vm_hwm_kib(&provider);

    // 300 templates of 3 MB each: 900 MB if every file were held.
    let mut objects =
        String::from("- objectName: k\n  secretPath: secret/data/app\n  secretKey: k\n");
    for i in 0..300 {
        objects.push_str(&format!(
            "- objectName: t{i}\n  template: \"{{{{ 'x' * 3000000 }}}}\"\n"
        ));
    }
    let attributes = d.attributes(&objects);
    let dir: PathBuf = provider.providers_dir().to_owned();
    let mounts: Vec<_> = (0..3)
        .map(|_| {
            let (client, dir, attributes, secrets) =
                (client.clone(), dir.clone(), attributes.clone(), d.secrets());
            tokio::task::spawn_blocking(move || {
                let volume = Volume::new();
                let result = client.mount_in(&dir, &attributes, &secrets, volume.path());
                (result, volume.files().len())
            })
        })
        .collect();
    for mount in mounts {
        let (result, written) = mount.await.unwrap();
        result.expect_err("ResourceExhausted", "--max-response-size");
        assert_eq!(written, 0, "nothing written");
    }
    let after = vm_hwm_kib(&provider);
    println!("VmHWM {before} KiB before, {after} KiB after three 900 MB template Mounts");
    assert!(
        after < MEMORY_LIMIT_KIB,
        "peak memory {after} KiB is above the DaemonSet's limit"
    );
    assert_eq!(provider.get("/healthz").await.0, 200);
}

/// A hostile test server of our own, posing as a tenant-run "Vault": logins
/// succeed, and every read answers a body of `body_bytes` (streamed, half of
/// them without a length): one long string, or with `dense` an array of
/// zeros (`[0,0,…]`, small on the wire, large once parsed). Counts the reads
/// it was sent.
struct HostileVault {
    addr: String,
    reads: Arc<AtomicUsize>,
}

impl HostileVault {
    fn start(body_bytes: usize) -> HostileVault {
        Self::start_with(body_bytes, false)
    }

    fn start_with(body_bytes: usize, dense: bool) -> HostileVault {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind hostile server");
        let addr = format!("http://{}", listener.local_addr().unwrap());
        let reads = Arc::new(AtomicUsize::new(0));
        let counter = reads.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let counter = counter.clone();
                std::thread::spawn(move || Self::answer(stream, body_bytes, dense, &counter));
            }
        });
        HostileVault { addr, reads }
    }

    fn answer(mut stream: TcpStream, body_bytes: usize, dense: bool, reads: &AtomicUsize) {
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            if stream.read(&mut byte).unwrap_or(0) == 0 {
                return;
            }
            head.push(byte[0]);
        }
        let head = String::from_utf8_lossy(&head).to_string();
        let length: usize = head
            .lines()
            .find_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix("content-length:")
                    .map(|v| v.trim().parse().unwrap_or(0))
            })
            .unwrap_or(0);
        let mut body = vec![0u8; length];
        let _ = stream.read_exact(&mut body);
        if head.contains("/auth/approle/login") {
            let login = json!({"request_id": "r", "lease_id": "", "lease_duration": 0,
                "renewable": false, "data": null, "warnings": null, "wrap_info": null, "auth": {
                "client_token": "hostile-token", "accessor": "a", "policies": ["default"],
                "token_policies": ["default"], "metadata": null, "lease_duration": 3600,
                "renewable": false, "entity_id": "", "token_type": "service", "orphan": true}})
            .to_string();
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{login}",
                login.len()
            );
            return;
        }
        let n = reads.fetch_add(1, Ordering::SeqCst);
        let (prefix, suffix): (&[u8], &[u8]) = if dense {
            (b"{\"data\":{\"k\":[", b"0]}}")
        } else {
            (b"{\"data\":{\"k\":\"", b"\"}}")
        };
        let filler = body_bytes - prefix.len() - suffix.len();
        let length = if n.is_multiple_of(2) {
            format!("Content-Length: {body_bytes}\r\n")
        } else {
            String::new()
        };
        let _ = write!(
            stream,
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n{length}Connection: close\r\n\r\n"
        );
        if stream.write_all(prefix).is_err() {
            return;
        }
        let chunk = if dense {
            b"0,".repeat(32 << 10)
        } else {
            vec![b'x'; 64 << 10]
        };
        let mut left = filler;
        while left > 0 {
            let n = left.min(chunk.len());
            if stream.write_all(&chunk[..n]).is_err() {
                return; // the provider hung up: what we wanted
            }
            left -= n;
        }
        let _ = stream.write_all(suffix);
    }
}

/// One Mount of tenant A's `objects` from the hostile server (the provider's
/// own Vault): it must fail with `ResourceExhausted` and write nothing.
fn mount_from_hostile(provider: &Provider, objects: &str) {
    let attributes = json!({
        "roleId": "any",
        "objects": objects,
        "csi.storage.k8s.io/pod.name": "app-0",
        "csi.storage.k8s.io/pod.namespace": "tenant-a",
        "csi.storage.k8s.io/pod.uid": "0b7e2f8a-9999-2222-3333-444455556666",
        "csi.storage.k8s.io/serviceAccount.name": "app",
    });
    let secrets = json!({"secretId": "any"}).to_string();
    let (result, _) = mount_fresh(provider, &attributes, &secrets);
    result.expect_err("ResourceExhausted", "--max-response-size");
}

#[tokio::test]
async fn huge_answers_from_a_hostile_vault_are_resource_exhausted() {
    let hostile = HostileVault::start(8_000_000);
    // The provider's own Vault is the hostile server, so no address check
    // stands in the way: what is tested is the byte budget alone.
    let provider = Provider::start(&hostile.addr, &[]);
    let before = vm_hwm_kib(&provider);

    let objects: String = (0..40)
        .map(|i| format!("- objectName: o{i}\n  secretPath: secret/big{i}\n  secretKey: k\n"))
        .collect();
    mount_from_hostile(&provider, &objects);
    assert!(
        hostile.reads.load(Ordering::SeqCst) > 0,
        "the reads reached it"
    );

    let after = vm_hwm_kib(&provider);
    println!(
        "VmHWM {before} KiB before, {after} KiB after 40 answers of 8 MB ({} requested)",
        hostile.reads.load(Ordering::SeqCst)
    );
    assert!(
        after < MEMORY_LIMIT_KIB,
        "peak memory {after} KiB is above the DaemonSet's limit"
    );
    assert_eq!(provider.get("/healthz").await.0, 200);
}

/// An answer within the byte budget on the wire that would parse into far
/// more memory (a dense array of numbers: about 65 bytes per value once
/// parsed) is refused before it is parsed.
#[tokio::test]
async fn a_dense_answer_is_charged_for_what_it_parses_into() {
    let hostile = HostileVault::start_with(3_900_000, true);
    let provider = Provider::start(&hostile.addr, &[]);
    let before = vm_hwm_kib(&provider);
    mount_from_hostile(
        &provider,
        "- objectName: dense\n  secretPath: secret/dense\n",
    );
    assert_eq!(
        hostile.reads.load(Ordering::SeqCst),
        1,
        "one read, not retried"
    );
    let after = vm_hwm_kib(&provider);
    println!("VmHWM {before} KiB before, {after} KiB after a dense 3.9 MB answer");
    assert!(
        after < before + 32 * 1024,
        "parsing the dense answer took {} KiB",
        after - before
    );
    assert_eq!(provider.get("/healthz").await.0, 200);
}
