//! Section 7, multi-tenant: what one hostile tenant can cost the node's
//! provider and the other tenants on it.
//!
//! 1. Refusal: ~1 MiB of deeply nested `objects` YAML, time to the
//!    `InvalidArgument` answer.
//! 2. The worst single Mount within the limits: the provider's peak memory
//!    (VmHWM) against the DaemonSet's 128 MiB limit, one Mount and several at
//!    once, each case on a fresh provider with the default budgets.
//! 3. Victim latency: tenant B's warm Mount against the real OpenBao, with and
//!    without tenant A flooding a slow "Vault".
//!
//! Where a real Vault cannot be made to misbehave (huge, dense or never-ending
//! answers), a hostile test server of our own on loopback plays tenant A's
//! "Vault"; the provider is started with it as an allowed origin
//! (`--allowed-vault-addr`), as an operator would allow a tenant's Vault.

use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::clients::{DriverClient, Outcome, Volumes, logged_micros, request, rss_kib};
use crate::report::{Refusal, Scale, Tenants, Victim, Worst, median, percentile};
use crate::support::provider::Provider;
use crate::vault::{Fixture, approle_attributes, approle_secrets, kv_objects};

/// The largest `objects` the provider takes (1 MiB), less some room.
const OBJECTS_BYTES: usize = (1 << 20) - 4096;

pub async fn run(f: &Fixture, client: &DriverClient, volumes: &Volumes, scale: Scale) -> Tenants {
    let load_before = crate::loadavg();
    let date = crate::command_line("date", &["-u", "+%Y-%m-%d %H:%M UTC"]);
    crate::progress("7. multi-tenant: refusing nested YAML");
    let refusals = refusals(f, client, volumes, scale).await;
    crate::progress("7. multi-tenant: the worst single Mount");
    let worst = worst_mounts(f, client, volumes).await;
    crate::progress("7. multi-tenant: victim latency under a slow-Vault flood");
    let victim = victim(f, client, volumes, scale).await;
    Tenants {
        date,
        load_before,
        load_after: crate::loadavg(),
        refusals,
        worst,
        victim,
    }
}

fn run_storm(
    client: &DriverClient,
    dir: &Path,
    requests: &[Value],
    concurrency: usize,
) -> Vec<Outcome> {
    tokio::task::block_in_place(|| client.storm(dir, requests, concurrency))
}

/// `objects` of one object whose `secretArgs` nest `[[[…]]]` as deep as
/// [`OBJECTS_BYTES`] allows.
fn nested_sequences() -> String {
    let head = "- objectName: deep\n  secretPath: secret/data/obj-01\n  secretArgs: {a: ";
    let depth = (OBJECTS_BYTES - head.len() - 4) / 2;
    format!("{head}{}1{}}}\n", "[".repeat(depth), "]".repeat(depth))
}

/// `secretArgs: {a: {a: {a: …}}}`.
fn nested_mappings() -> String {
    let head = "- objectName: deep\n  secretPath: secret/data/obj-01\n  secretArgs: ";
    let depth = (OBJECTS_BYTES - head.len() - 4) / 5;
    format!("{head}{}1{}\n", "{a: ".repeat(depth), "}".repeat(depth))
}

/// Block mappings, one level per line: the indentation limits the depth
/// to about a thousand in 1 MiB.
fn nested_blocks() -> String {
    let mut yaml =
        String::from("- objectName: deep\n  secretPath: secret/data/obj-01\n  secretArgs:\n");
    let mut level = 0;
    loop {
        let line = format!("{}a:\n", " ".repeat(4 + 2 * level));
        if yaml.len() + line.len() + 8 > OBJECTS_BYTES {
            break;
        }
        yaml.push_str(&line);
        level += 1;
    }
    yaml.push_str(&format!("{}a: 1\n", " ".repeat(4 + 2 * level)));
    yaml
}

async fn refusals(
    f: &Fixture,
    client: &DriverClient,
    volumes: &Volumes,
    scale: Scale,
) -> Vec<Refusal> {
    let provider = Provider::start(&f.bao.addr, &["--log-level", "info"]);
    let secrets = approle_secrets(&f.secret_id(0).await);
    let shapes: [(&'static str, String); 3] = [
        ("flow sequences `[[[…]]]`", nested_sequences()),
        ("flow mappings `{a: {a: …}}`", nested_mappings()),
        ("block mappings, one level per line", nested_blocks()),
    ];
    let mut out = Vec::new();
    for (label, objects) in shapes {
        let mut attributes = approle_attributes(&f.role_ids[0], &objects, "nested");
        attributes["csi.storage.k8s.io/pod.namespace"] = json!("tenant-a");
        let one = request(&attributes, &secrets, &volumes.of("nested"));
        let requests = vec![one; scale.refusal_samples];
        let log_from = provider.log().len();
        let outcomes = run_storm(client, provider.providers_dir(), &requests, 1);
        let refused = outcomes
            .iter()
            .filter(|o| {
                o.message.starts_with("InvalidArgument")
                    && o.message.contains("objects")
                    && o.message.contains("nested deeper")
            })
            .count();
        let first_other = outcomes
            .iter()
            .find(|o| !o.message.starts_with("InvalidArgument"))
            .map(|o| o.message.clone());
        let ms: Vec<f64> = outcomes.iter().map(|o| o.micros / 1e3).collect();
        let mut own: Vec<f64> = logged_micros(&provider.log(), log_from, "mount failed")
            .into_iter()
            .map(|us| us / 1e3)
            .collect();
        if own.is_empty() {
            own.push(f64::NAN);
        }
        out.push(Refusal {
            label,
            bytes: objects.len(),
            samples: outcomes.len(),
            refused,
            first_other,
            median_ms: median(&ms),
            max_ms: ms.iter().copied().fold(0.0, f64::max),
            provider_median_ms: median(&own),
            provider_max_ms: own.iter().copied().fold(0.0, f64::max),
        });
        crate::progress(&format!(
            "   {label}: {} bytes, {refused}/{} refused, median {:.1} ms, max {:.1} ms",
            objects.len(),
            outcomes.len(),
            median(&ms),
            ms.iter().copied().fold(0.0, f64::max)
        ));
    }
    out
}

/// `n` objects read from the hostile server (`secretKey: k`).
fn hostile_objects(n: usize) -> String {
    (0..n)
        .map(|i| format!("- objectName: o{i}\n  secretPath: secret/data/big{i}\n  secretKey: k\n"))
        .collect()
}

/// `n` template objects of `bytes` bytes each, no Vault request.
fn template_objects(n: usize, bytes: usize) -> String {
    (0..n)
        .map(|i| format!("- objectName: t{i}\n  template: \"{{{{ 'x' * {bytes} }}}}\"\n"))
        .collect()
}

async fn worst_mounts(f: &Fixture, client: &DriverClient, volumes: &Volumes) -> Vec<Worst> {
    let secret_id = f.secret_id(0).await;
    // (label, objects, answer of the hostile server, or None for OpenBao).
    let cases: Vec<(String, String, Option<Answer>)> = vec![
        (
            "300 templates of 3 MB each (900 MB if held)".to_owned(),
            template_objects(300, 3_000_000),
            None,
        ),
        (
            "4 templates of 1 MB each (inside the 4 MiB budget)".to_owned(),
            template_objects(4, 1_000_000),
            None,
        ),
        (
            "hostile server: 40 objects, 8 MB answers".to_owned(),
            hostile_objects(40),
            Some(Answer::Text(8_000_000)),
        ),
        (
            "hostile server: 1000 objects (the most allowed), 3.9 KB answers each".to_owned(),
            hostile_objects(1000),
            Some(Answer::Text(3_900)),
        ),
        (
            "hostile server: 1 object, 3.9 MB dense JSON array `[0,0,…]`".to_owned(),
            hostile_objects(1),
            Some(Answer::Dense(3_900_000)),
        ),
        (
            "hostile server: 40 objects, 8 MB dense JSON arrays".to_owned(),
            hostile_objects(40),
            Some(Answer::Dense(8_000_000)),
        ),
    ];
    let mut out = Vec::new();
    for (label, objects, answer) in cases {
        for concurrency in [1, 4] {
            let hostile = answer.map(HostileVault::start);
            let mut flags = vec!["--log-level".to_owned(), "info".to_owned()];
            if let Some(h) = &hostile {
                flags.extend(["--allowed-vault-addr".to_owned(), h.url()]);
            }
            let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
            let provider = Provider::start(&f.bao.addr, &flags);
            tokio::time::sleep(Duration::from_millis(300)).await;
            let (_, hwm_before) = rss_kib(provider.pid());
            let requests: Vec<Value> = (0..concurrency)
                .map(|i| {
                    let pod = format!("worst-{i}");
                    let mut attributes = approle_attributes(&f.role_ids[0], &objects, &pod);
                    attributes["csi.storage.k8s.io/pod.namespace"] = json!("tenant-a");
                    if let Some(h) = &hostile {
                        attributes["vaultAddress"] = json!(h.url());
                        attributes.as_object_mut().unwrap().remove("vaultNamespace");
                    }
                    request(&attributes, &approle_secrets(&secret_id), &volumes.of(&pod))
                })
                .collect();
            let started = Instant::now();
            let outcomes = run_storm(client, provider.providers_dir(), &requests, concurrency);
            let seconds = started.elapsed().as_secs_f64();
            let (_, hwm_after) = rss_kib(provider.pid());
            let outcome = summarize(&outcomes);
            let first_error = outcomes
                .iter()
                .find(|o| !o.ok)
                .map(|o| o.message.chars().take(160).collect::<String>());
            crate::progress(&format!(
                "   {label} × {concurrency}: {outcome}, VmHWM {hwm_before} → {hwm_after} KiB {first_error:?}"
            ));
            out.push(Worst {
                label: label.clone(),
                concurrency,
                outcome,
                hwm_before,
                hwm_after,
                seconds,
                first_error,
            });
        }
    }
    out
}

/// `3 × ok, 1 × ResourceExhausted` for the outcomes' gRPC codes.
fn summarize(outcomes: &[Outcome]) -> String {
    let mut counts: Vec<(String, usize)> = Vec::new();
    for o in outcomes {
        let code = if o.ok {
            "OK".to_owned()
        } else {
            o.message
                .split_whitespace()
                .next()
                .unwrap_or("error")
                .to_owned()
        };
        match counts.iter_mut().find(|(c, _)| *c == code) {
            Some((_, n)) => *n += 1,
            None => counts.push((code, 1)),
        }
    }
    counts
        .iter()
        .map(|(c, n)| format!("{n} × {c}"))
        .collect::<Vec<_>>()
        .join(", ")
}

async fn victim(f: &Fixture, client: &DriverClient, volumes: &Volumes, scale: Scale) -> Victim {
    let slow = HostileVault::start(Answer::Hold);
    let provider = Provider::start(
        &f.bao.addr,
        &["--log-level", "info", "--allowed-vault-addr", &slow.url()],
    );
    // Tenant B: one KV object from the real OpenBao, warm (token cached).
    let secret_id = f.secret_id(1).await;
    let mut attributes = approle_attributes(&f.role_ids[1], &kv_objects(1), "victim");
    attributes["csi.storage.k8s.io/pod.namespace"] = json!("tenant-b");
    let one = request(
        &attributes,
        &approle_secrets(&secret_id),
        &volumes.of("victim"),
    );
    let requests = vec![one; scale.victim_samples];
    let dir = provider.providers_dir().to_owned();
    let warm = run_storm(client, &dir, &requests[..20.min(requests.len())], 1);
    assert!(warm.iter().all(|o| o.ok), "victim warm-up: {:?}", warm[0]);

    // Tenant A: its own pod namespace, one identity per Mount (no shared
    // login), every login held by the slow hostile server.
    let scratch = volumes.of("attacker");
    let attacks: Vec<Value> = (0..scale.attackers)
        .map(|i| {
            let attributes = json!({
                "vaultAddress": slow.url(),
                "roleId": format!("hostile-role-{i}"),
                "objects": kv_objects(1),
                "csi.storage.k8s.io/pod.name": format!("attacker-{i}"),
                "csi.storage.k8s.io/pod.namespace": "tenant-a",
                "csi.storage.k8s.io/pod.uid": format!("uid-attacker-{i}"),
                "csi.storage.k8s.io/serviceAccount.name": "app",
            });
            request(&attributes, &approle_secrets("hostile"), &scratch)
        })
        .collect();

    let (mut per_rep, mut failures, mut first_failure) = (Vec::new(), 0, None);
    let mut attack_in_flight = usize::MAX;
    for rep in 0..scale.victim_reps {
        let mut measure = |outcomes: Vec<Outcome>| {
            for o in outcomes.iter().filter(|o| !o.ok) {
                failures += 1;
                first_failure.get_or_insert_with(|| o.message.clone());
            }
            let us: Vec<f64> = outcomes.iter().map(|o| o.micros).collect();
            (percentile(&us, 0.5), percentile(&us, 0.99))
        };
        // Alternate which goes first, so drift in the machine's load
        // weighs on both alike.
        let mut base = None;
        if rep % 2 == 0 {
            base = Some(measure(run_storm(client, &dir, &requests, 1)));
        }
        slow.hold();
        let flood = {
            let (client, dir, attacks) = (client.clone(), dir.clone(), attacks.clone());
            let n = attacks.len();
            std::thread::spawn(move || client.storm(&dir, &attacks, n))
        };
        // Wait until A's Mounts are all inside the provider and its requests
        // are held (a bounded wait, not a timing assertion).
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let in_flight = mounts_in_flight(&provider).await;
            if in_flight >= scale.attackers && slow.held() > 0 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "tenant A's flood did not arrive: {in_flight} Mounts in flight, {} held",
                slow.held()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        let attacked = measure(run_storm(client, &dir, &requests, 1));
        attack_in_flight = attack_in_flight.min(mounts_in_flight(&provider).await);
        slow.release();
        let flood = tokio::task::block_in_place(|| flood.join()).expect("flood thread");
        assert!(
            flood.iter().all(|o| !o.ok),
            "the hostile server never lets a Mount succeed"
        );
        let base = match base {
            Some(b) => b,
            None => measure(run_storm(client, &dir, &requests, 1)),
        };
        crate::progress(&format!(
            "   rep {rep}: victim p50/p99 {:.0}/{:.0} µs without, {:.0}/{:.0} µs under attack ({} of A's requests held at most)",
            base.0,
            base.1,
            attacked.0,
            attacked.1,
            slow.held_max()
        ));
        per_rep.push([base.0, base.1, attacked.0, attacked.1]);
    }
    let col = |i: usize| median(&per_rep.iter().map(|r| r[i]).collect::<Vec<_>>());
    Victim {
        samples: scale.victim_samples,
        reps: scale.victim_reps,
        attackers: scale.attackers,
        base_p50: col(0),
        base_p99: col(1),
        attack_p50: col(2),
        attack_p99: col(3),
        ratio_p99: median(&per_rep.iter().map(|r| r[3] / r[1]).collect::<Vec<_>>()),
        ratio_p50: median(&per_rep.iter().map(|r| r[2] / r[0]).collect::<Vec<_>>()),
        held_max: slow.held_max(),
        attack_in_flight,
        victim_failures: failures,
        first_failure,
    }
}

/// `vsp_mounts_in_flight` from the provider's `/metrics`.
async fn mounts_in_flight(provider: &Provider) -> usize {
    let (_, _, metrics) = provider.get("/metrics").await;
    metrics
        .lines()
        .find_map(|l| l.strip_prefix("vsp_mounts_in_flight "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .unwrap_or(0.0) as usize
}

/// What the hostile server answers to reads (logins always succeed, except
/// with [`Answer::Hold`]).
#[derive(Clone, Copy)]
enum Answer {
    /// `{"data":{"k":"xxx…"}}` of this many bytes, streamed (every other
    /// answer without a length).
    Text(usize),
    /// `{"data":{"k":[0,0,…]}}` of this many bytes: small input, many values.
    Dense(usize),
    /// Every request (the login first) is held until [`HostileVault::release`],
    /// then answered 403.
    Hold,
}

/// A hostile test server of our own on loopback, posing as a tenant-run
/// "Vault" (what a real Vault cannot be made to do: huge, dense or
/// never-ending answers). One thread per connection.
struct HostileVault {
    addr: String,
    released: Arc<AtomicBool>,
    held: Arc<AtomicUsize>,
    held_max: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl HostileVault {
    fn start(answer: Answer) -> HostileVault {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind hostile server");
        let addr = format!("http://{}", listener.local_addr().unwrap());
        let server = HostileVault {
            addr,
            released: Arc::new(AtomicBool::new(true)),
            held: Arc::new(AtomicUsize::new(0)),
            held_max: Arc::new(AtomicUsize::new(0)),
            stop: Arc::new(AtomicBool::new(false)),
        };
        let (released, held, held_max, stop) = (
            server.released.clone(),
            server.held.clone(),
            server.held_max.clone(),
            server.stop.clone(),
        );
        std::thread::spawn(move || {
            let reads = Arc::new(AtomicUsize::new(0));
            for stream in listener.incoming().flatten() {
                if stop.load(Ordering::SeqCst) {
                    return;
                }
                let (released, held, held_max, reads) = (
                    released.clone(),
                    held.clone(),
                    held_max.clone(),
                    reads.clone(),
                );
                std::thread::spawn(move || {
                    serve(stream, answer, &released, &held, &held_max, &reads)
                });
            }
        });
        server
    }

    fn url(&self) -> String {
        self.addr.clone()
    }

    /// From now on, hold every request.
    fn hold(&self) {
        self.released.store(false, Ordering::SeqCst);
    }

    /// Answer the held requests (403) and every later one at once.
    fn release(&self) {
        self.released.store(true, Ordering::SeqCst);
    }

    fn held(&self) -> usize {
        self.held.load(Ordering::SeqCst)
    }

    fn held_max(&self) -> usize {
        self.held_max.load(Ordering::SeqCst)
    }
}

impl Drop for HostileVault {
    fn drop(&mut self) {
        self.released.store(true, Ordering::SeqCst);
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees `stop`.
        let _ = TcpStream::connect(self.addr.trim_start_matches("http://"));
    }
}

fn serve(
    mut stream: TcpStream,
    answer: Answer,
    released: &AtomicBool,
    held: &AtomicUsize,
    held_max: &AtomicUsize,
    reads: &AtomicUsize,
) {
    loop {
        // One request per loop (keep-alive): its head, then its body.
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
        if stream.read_exact(&mut body).is_err() {
            return;
        }
        if let Answer::Hold = answer {
            let now = held.fetch_add(1, Ordering::SeqCst) + 1;
            held_max.fetch_max(now, Ordering::SeqCst);
            // Held until released, or until the provider hangs up (its
            // request deadline): then it no longer counts as held.
            let deadline = Instant::now() + Duration::from_secs(300);
            let _ = stream.set_nonblocking(true);
            let mut peek = [0u8; 1];
            let mut gone = false;
            while !released.load(Ordering::SeqCst) && Instant::now() < deadline {
                match stream.peek(&mut peek) {
                    Ok(0) => gone = true,
                    Err(e) if e.kind() != std::io::ErrorKind::WouldBlock => gone = true,
                    _ => {}
                }
                if gone {
                    break;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            held.fetch_sub(1, Ordering::SeqCst);
            if gone {
                return;
            }
            let _ = stream.set_nonblocking(false);
            let denied = r#"{"errors":["permission denied"]}"#;
            let _ = write!(
                stream,
                "HTTP/1.1 403 Forbidden\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{denied}",
                denied.len()
            );
            return;
        }
        if head.contains("/login ") {
            let login = json!({"request_id": "r", "lease_id": "", "lease_duration": 0,
                "renewable": false, "data": null, "warnings": null, "wrap_info": null, "auth": {
                "client_token": "hostile-token", "accessor": "a", "policies": ["default"],
                "token_policies": ["default"], "metadata": null, "lease_duration": 3600,
                "renewable": false, "entity_id": "", "token_type": "service", "orphan": true}})
            .to_string();
            if write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{login}",
                login.len()
            )
            .is_err()
            {
                return;
            }
            continue;
        }
        let n = reads.fetch_add(1, Ordering::SeqCst);
        let (prefix, unit, suffix, bytes): (&[u8], &[u8], &[u8], usize) = match answer {
            Answer::Text(b) => (b"{\"data\":{\"k\":\"", b"x", b"\"}}", b),
            Answer::Dense(b) => (b"{\"data\":{\"k\":[", b"0,", b"0]}}", b),
            Answer::Hold => unreachable!(),
        };
        let units = (bytes - prefix.len() - suffix.len()) / unit.len();
        let total = prefix.len() + units * unit.len() + suffix.len();
        let length = if n.is_multiple_of(2) {
            format!("Content-Length: {total}\r\n")
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
        let chunk = unit.repeat((64 << 10) / unit.len());
        let mut left = units;
        while left > 0 {
            let k = left.min(chunk.len() / unit.len());
            if stream.write_all(&chunk[..k * unit.len()]).is_err() {
                return; // the provider hung up: what its budget does
            }
            left -= k;
        }
        let _ = stream.write_all(suffix);
        return;
    }
}
