//! `--write-mode direct`: the provider writes into the pod's tmpfs volume
//! itself. Every test mounts its own tmpfs (root is required) and mounts
//! through the driver's real provider client, which writes nothing when the
//! response has no files; the response-mode volumes the tests compare against
//! are written by the driver's real atomic writer (`fileutil.WritePayloads`).

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::deployment::Deployment;
use support::openbao::OpenBao;
use support::provider::{Provider, Volume, driver_clients, v16_client};

fn direct_provider() -> Provider {
    Provider::start(&OpenBao::shared().addr, &["--write-mode", "direct"])
}

fn response_provider() -> Provider {
    Provider::start(&OpenBao::shared().addr, &[])
}

/// A tmpfs volume; direct mode refuses anything else, so without root these
/// tests cannot run at all.
fn tmpfs(size: &str) -> Volume {
    let volume = Volume::with_size(size);
    assert!(
        volume.is_tmpfs(),
        "direct-mode tests need root to mount a tmpfs"
    );
    volume
}

/// `..2026_11_27_20_13_05.<random>`, the writer's timestamped directories.
fn is_timestamp_dir(name: &str) -> bool {
    let Some(rest) = name.strip_prefix("..") else {
        return false;
    };
    rest.len() > 20
        && rest.as_bytes()[..19]
            .iter()
            .enumerate()
            .all(|(i, b)| match i {
                4 | 7 | 10 | 13 | 16 => *b == b'_',
                _ => b.is_ascii_digit(),
            })
        && rest.as_bytes()[19] == b'.'
}

/// One entry of a volume, without following links.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Node {
    Dir {
        mode: u32,
        uid: u32,
        gid: u32,
    },
    File {
        mode: u32,
        uid: u32,
        gid: u32,
        contents: Vec<u8>,
    },
    Link(String),
}

/// The whole volume, links not followed, with every timestamped directory
/// name replaced by `..<timestamp>` so two volumes can be compared.
fn tree(root: &Path) -> BTreeMap<String, Node> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, Node>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let rel = normalise(&path.strip_prefix(root).unwrap().to_string_lossy());
            let meta = std::fs::symlink_metadata(&path).unwrap();
            let (mode, uid, gid) = (meta.mode() & 0o7777, meta.uid(), meta.gid());
            let node = if meta.file_type().is_symlink() {
                Node::Link(normalise(
                    &std::fs::read_link(&path).unwrap().to_string_lossy(),
                ))
            } else if meta.is_dir() {
                walk(root, &path, out);
                Node::Dir { mode, uid, gid }
            } else {
                Node::File {
                    mode,
                    uid,
                    gid,
                    contents: std::fs::read(&path).unwrap(),
                }
            };
            out.insert(rel, node);
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

fn normalise(path: &str) -> String {
    path.split('/')
        .map(|part| {
            if is_timestamp_dir(part) {
                "..<timestamp>"
            } else {
                part
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

fn show(tree: &BTreeMap<String, Node>) -> Vec<String> {
    tree.iter()
        .map(|(path, node)| match node {
            Node::Dir { mode, .. } => format!("{path}/  dir {mode:04o}"),
            Node::File { mode, contents, .. } => format!(
                "{path}  file {mode:04o} {:?}",
                String::from_utf8_lossy(contents)
            ),
            Node::Link(target) => format!("{path} -> {target}"),
        })
        .collect()
}

fn side_by_side(left_title: &str, left: &[String], right_title: &str, right: &[String]) -> String {
    let width = left
        .iter()
        .map(String::len)
        .chain([left_title.len()])
        .max()
        .unwrap_or(0);
    let mut out = format!("{left_title:width$} | {right_title}\n");
    out.push_str(&format!("{} | {}\n", "-".repeat(width), "-".repeat(width)));
    for i in 0..left.len().max(right.len()) {
        let l = left.get(i).map_or("", String::as_str);
        let r = right.get(i).map_or("", String::as_str);
        out.push_str(&format!("{l:width$} | {r}\n"));
    }
    out
}

fn timestamp_dirs(root: &Path) -> Vec<String> {
    let mut dirs: Vec<String> = std::fs::read_dir(root)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| is_timestamp_dir(n))
        .collect();
    dirs.sort();
    dirs
}

/// What a reader of the volume can see: every file reachable through the
/// visible (non-`..`) entries, and the visible links that lead nowhere.
fn readable(root: &Path) -> (BTreeMap<String, Vec<u8>>, Vec<String>) {
    fn walk(root: &Path, dir: &Path, files: &mut BTreeMap<String, Vec<u8>>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if std::fs::metadata(&path).unwrap().is_dir() {
                walk(root, &path, files);
            } else {
                let rel = path.strip_prefix(root).unwrap().to_string_lossy().into();
                files.insert(rel, std::fs::read(&path).unwrap());
            }
        }
    }
    let mut files = BTreeMap::new();
    let mut dangling = Vec::new();
    for entry in std::fs::read_dir(root).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("..") {
            continue;
        }
        match std::fs::metadata(entry.path()) {
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => dangling.push(name),
            Err(err) => panic!("stat {name}: {err}"),
            Ok(meta) if meta.is_dir() => walk(root, &entry.path(), &mut files),
            Ok(_) => {
                files.insert(name, std::fs::read(entry.path()).unwrap());
            }
        }
    }
    dangling.sort();
    (files, dangling)
}

/// The volume holds exactly `expected` in the writer's layout and nothing
/// left over: one timestamped directory, `..data` pointing to it, one link
/// per top-level name, no `..data_tmp`, no link that leads nowhere.
fn assert_clean(root: &Path, expected: &BTreeMap<String, Vec<u8>>) {
    let dirs = timestamp_dirs(root);
    assert_eq!(dirs.len(), 1, "timestamped directories: {dirs:?}");
    assert_eq!(
        std::fs::read_link(root.join("..data")).unwrap(),
        Path::new(&dirs[0])
    );
    let top: BTreeSet<String> = expected
        .keys()
        .map(|p| p.split('/').next().unwrap().to_owned())
        .collect();
    let mut names: BTreeSet<String> = std::fs::read_dir(root)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.remove("..data"));
    assert!(names.remove(&dirs[0]));
    assert_eq!(
        names, top,
        "visible entries (no ..data_tmp, no stale links)"
    );
    for name in &top {
        assert_eq!(
            std::fs::read_link(root.join(name)).unwrap(),
            Path::new("..data").join(name)
        );
    }
    let (files, dangling) = readable(root);
    assert!(dangling.is_empty(), "links leading nowhere: {dangling:?}");
    assert!(
        files == *expected,
        "files differ: have {:?}, want {:?}",
        files.keys().collect::<Vec<_>>(),
        expected.keys().collect::<Vec<_>>()
    );
}

const PARITY_OBJECTS: &str = r#"
- objectName: dir/x
  secretPath: secret/data/app
  secretKey: x
  filePermission: 0600
- objectName: tls.key
  secretPath: secret/data/app
  secretKey: key
  filePermission: 0640
- objectName: config
  secretPath: secret/data/app
  secretKey: config
"#;

/// The same payload written by the driver's atomic writer (response mode) and
/// by our direct mode gives the same tree: names, link targets, modes and
/// contents; only the random part of the timestamped directory differs.
#[tokio::test]
async fn layout_matches_the_drivers_atomic_writer() {
    let d = Deployment::new("direct-parity").await;
    d.put(
        "app",
        json!({"x": "nested secret", "key": "private key", "config": "debug = false"}),
    )
    .await;
    let attributes = d.attributes(PARITY_OBJECTS);
    // One version key for both, so their object versions can be compared too.
    let key = tempfile::tempdir().unwrap();
    let key = key.path().join("version.key");
    let key = key.to_str().unwrap();
    let addr = &OpenBao::shared().addr;
    let response = Provider::start(addr, &["--version-key-file", key]);
    let direct = Provider::start(addr, &["--write-mode", "direct", "--version-key-file", key]);
    for client in driver_clients() {
        let by_driver = tmpfs("16m");
        let by_provider = tmpfs("16m");
        let driver_versions = client
            .mount(&response, &attributes, &d.secrets(), by_driver.path())
            .expect_ok()
            .clone();
        let direct_versions = client
            .mount(&direct, &attributes, &d.secrets(), by_provider.path())
            .expect_ok()
            .clone();
        assert_eq!(
            driver_versions, direct_versions,
            "driver {}",
            client.version
        );

        let (left, right) = (tree(by_driver.path()), tree(by_provider.path()));
        println!(
            "driver {}:\n{}",
            client.version,
            side_by_side(
                "driver's atomic writer (--write-mode response)",
                &show(&left),
                "vault-secrets-provider --write-mode direct",
                &show(&right),
            )
        );
        assert_eq!(left, right, "driver {}", client.version);
        assert_eq!(timestamp_dirs(by_provider.path()).len(), 1);
        assert_eq!(by_provider.read("dir/x"), "nested secret");
        assert_eq!(by_provider.mode("dir/x"), 0o600);
        assert_eq!(by_provider.mode("tls.key"), 0o640);
        assert_eq!(by_provider.mode("config"), 0o644);
    }
}

/// A volume written by the driver can be taken over by direct mode and handed
/// back: each writer reads the other's layout, replaces the files and leaves
/// no leftovers.
#[tokio::test]
async fn a_volume_moves_between_modes() {
    let d = Deployment::new("direct-switch").await;
    let attributes = d.attributes(PARITY_OBJECTS);
    let response = response_provider();
    let direct = direct_provider();
    let client = v16_client();
    let volume = tmpfs("16m");
    let expect = |x: &str| -> BTreeMap<String, Vec<u8>> {
        [("dir/x", x), ("tls.key", "k"), ("config", "c")]
            .into_iter()
            .map(|(p, c)| (p.to_owned(), c.as_bytes().to_vec()))
            .collect()
    };
    let steps: [(&Provider, &str); 4] = [
        (&response, "written by the driver"),
        (&direct, "then by the provider"),
        (&response, "by the driver again"),
        (&direct, "and by the provider again"),
    ];
    for (provider, x) in steps {
        d.put("app", json!({"x": x, "key": "k", "config": "c"}))
            .await;
        client
            .mount(provider, &attributes, &d.secrets(), volume.path())
            .expect_ok();
        assert_clean(volume.path(), &expect(x));
        assert_eq!(volume.mode("dir/x"), 0o600, "{x}");
    }
}

#[tokio::test]
async fn targets_that_are_not_tmpfs_are_refused_and_left_untouched() {
    let d = Deployment::new("direct-refuse").await;
    d.put("app", json!({"x": "x", "key": "k", "config": "c"}))
        .await;
    let attributes = d.attributes(PARITY_OBJECTS);
    let provider = direct_provider();
    let client = v16_client();

    // ramfs is memory too, but has no size limit and is not what the driver mounts.
    let ramfs = tempfile::tempdir().unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "ramfs", "ramfs"])
        .arg(ramfs.path())
        .status()
        .unwrap();
    assert!(mounted.success(), "mount ramfs (needs root)");
    let on_disk = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let mut targets = vec![(ramfs.path().to_owned(), "ramfs")];
    let disk_fs = rustix::fs::statfs(on_disk.path()).unwrap().f_type as u64 & 0xffff_ffff;
    if disk_fs != 0x0102_1994 {
        targets.push((on_disk.path().to_owned(), "not tmpfs"));
    }

    let logins = d.token_count().await;
    for (target, filesystem) in &targets {
        std::fs::write(target.join("keep"), "pre-existing").unwrap();
        std::fs::create_dir(target.join("..2026_01_01_00_00_00.1")).unwrap();
        std::os::unix::fs::symlink("..2026_01_01_00_00_00.1", target.join("..data")).unwrap();
        let before = tree(target);
        let result = client.mount(&provider, &attributes, &d.secrets(), target);
        result.expect_err("FailedPrecondition", "not tmpfs");
        assert!(
            result.message.contains(&target.display().to_string())
                && result.message.contains(filesystem),
            "{}",
            result.message
        );
        assert_eq!(tree(target), before, "{} was modified", target.display());
    }
    let _ = Command::new("umount").arg(ramfs.path()).status();

    let missing = PathBuf::from("/nonexistent/vsp-direct-target");
    client
        .mount(&provider, &attributes, &d.secrets(), &missing)
        .expect_err("InvalidArgument", "does not exist");
    client
        .mount(
            &provider,
            &attributes,
            &d.secrets(),
            Path::new("relative/target"),
        )
        .expect_err("InvalidArgument", "not an absolute path");
    assert!(!Path::new("relative").exists());
    assert_eq!(
        d.token_count().await,
        logins,
        "a refused target must fail before the provider logs in to Vault"
    );
}

/// Each Mount's files are the complete set: files of objects that left the
/// SecretProviderClass disappear (top-level and nested), an unchanged set is
/// not rewritten, and a changed one gets a new timestamped directory.
#[tokio::test]
async fn files_that_leave_the_secret_provider_class_are_removed() {
    let d = Deployment::new("direct-stale").await;
    d.put("app", json!({"a": "1", "b": "2", "c": "3", "d": "4"}))
        .await;
    let object = |name: &str, key: &str| {
        format!("- objectName: {name}\n  secretPath: secret/data/app\n  secretKey: {key}\n")
    };
    let first = [
        object("a", "a"),
        object("b", "b"),
        object("dir/c", "c"),
        object("dir/d", "d"),
    ]
    .concat();
    let second = [object("a", "a"), object("dir/c", "c"), object("e", "d")].concat();
    // Root without any capability, as the DaemonSet runs it (`drop: [ALL]`).
    let provider = Provider::start_with_capabilities(
        &[],
        &OpenBao::shared().addr,
        &["--write-mode", "direct"],
    );
    let client = v16_client();
    let volume = tmpfs("16m");
    let mount = |objects: &str| {
        client.mount(
            &provider,
            &d.attributes(objects),
            &d.secrets(),
            volume.path(),
        )
    };
    let files = |pairs: &[(&str, &str)]| -> BTreeMap<String, Vec<u8>> {
        pairs
            .iter()
            .map(|(p, c)| ((*p).to_owned(), c.as_bytes().to_vec()))
            .collect()
    };

    mount(&first).expect_ok();
    assert_clean(
        volume.path(),
        &files(&[("a", "1"), ("b", "2"), ("dir/c", "3"), ("dir/d", "4")]),
    );

    mount(&second).expect_ok();
    let expected = files(&[("a", "1"), ("dir/c", "3"), ("e", "4")]);
    assert_clean(volume.path(), &expected);
    let written = timestamp_dirs(volume.path());

    mount(&second).expect_ok();
    assert_clean(volume.path(), &expected);
    assert_eq!(
        timestamp_dirs(volume.path()),
        written,
        "unchanged files are not rewritten"
    );

    d.put("app", json!({"a": "changed", "b": "2", "c": "3", "d": "4"}))
        .await;
    mount(&second).expect_ok();
    assert_clean(
        volume.path(),
        &files(&[("a", "changed"), ("dir/c", "3"), ("e", "4")]),
    );
    assert_ne!(timestamp_dirs(volume.path()), written);
}

fn cat_as(uid: u32, gid: u32, path: &Path) -> Result<String, String> {
    let out = Command::new("setpriv")
        .arg(format!("--reuid={uid}"))
        .arg(format!("--regid={gid}"))
        .args(["--clear-groups", "cat"])
        .arg(path)
        .stdin(Stdio::null())
        .output()
        .expect("run setpriv");
    if out.status.success() {
        Ok(String::from_utf8(out.stdout).unwrap())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// `fileOwnerUid`/`fileOwnerGid` make a mode-0400 file readable by a non-root
/// pod's user, which the driver itself cannot offer.
#[tokio::test]
async fn owner_parameters_let_a_non_root_pod_read_0400_files() {
    let d = Deployment::new("direct-owner").await;
    d.put("app", json!({"key": "private", "ca": "shared"}))
        .await;
    let objects = r#"
- objectName: tls/key
  secretPath: secret/data/app
  secretKey: key
  filePermission: 0400
- objectName: ca
  secretPath: secret/data/app
  secretKey: ca
  filePermission: 0440
"#;
    let (uid, gid) = (4242, 4343);
    let mut attributes = d.attributes(objects);
    attributes["fileOwnerUid"] = json!(uid.to_string());
    attributes["fileOwnerGid"] = json!(gid.to_string());
    // The capabilities the README asks for: CHOWN to give the files away,
    // DAC_OVERRIDE to compare and replace them afterwards.
    let provider = Provider::start_with_capabilities(
        &["chown", "dac_override"],
        &OpenBao::shared().addr,
        &["--write-mode", "direct"],
    );
    let client = v16_client();
    let volume = tmpfs("16m");
    client
        .mount(&provider, &attributes, &d.secrets(), volume.path())
        .expect_ok();

    let ts = timestamp_dirs(volume.path()).pop().unwrap();
    for (path, mode) in [
        (ts.clone(), 0o755),
        (format!("{ts}/tls"), 0o755),
        (format!("{ts}/tls/key"), 0o400),
        (format!("{ts}/ca"), 0o440),
    ] {
        let meta = std::fs::symlink_metadata(volume.path().join(&path)).unwrap();
        assert_eq!(
            (meta.uid(), meta.gid(), meta.mode() & 0o7777),
            (uid, gid, mode),
            "{path}"
        );
    }
    let key = volume.path().join("tls/key");
    assert_eq!(cat_as(uid, gid, &key).unwrap(), "private");
    let denied = cat_as(uid + 1, gid, &key).unwrap_err();
    assert!(denied.contains("Permission denied"), "{denied}");
    assert_eq!(
        cat_as(uid + 1, gid, &volume.path().join("ca")).unwrap(),
        "shared",
        "group members read 0440 files"
    );

    // A new owner alone is a change: the files are rewritten for it.
    attributes["fileOwnerUid"] = json!((uid + 1).to_string());
    client
        .mount(&provider, &attributes, &d.secrets(), volume.path())
        .expect_ok();
    assert_eq!(cat_as(uid + 1, gid, &key).unwrap(), "private");
    assert!(cat_as(uid, gid, &key).is_err());

    attributes["fileOwnerUid"] = json!("-1");
    client
        .mount(&provider, &attributes, &d.secrets(), volume.path())
        .expect_err("InvalidArgument", "fileOwnerUid");

    // The driver writes every file as root: the parameters need direct mode.
    attributes["fileOwnerUid"] = json!(uid.to_string());
    let response = response_provider();
    let elsewhere = tmpfs("16m");
    client
        .mount(&response, &attributes, &d.secrets(), elsewhere.path())
        .expect_err("InvalidArgument", "--write-mode direct");
    assert!(elsewhere.files().is_empty());
}

/// Where the test kills the provider during a write.
#[derive(Clone, Copy, Debug)]
enum KillPoint {
    /// As soon as the new timestamped directory exists.
    DirectoryCreated,
    /// Once half of the new nested files exist.
    HalfTheFilesWritten,
    /// Once the link for the new set's only top-level name exists.
    NewLinkCreated,
    /// Once `..data` points to the new directory.
    Switched,
}

const NESTED: usize = 160;
const TOP: usize = 32;
const FILE_SIZE: usize = 32 * 1024;

/// Payload `tag` (`a` or `b`): `NESTED` files under `set/`, `TOP` top-level
/// files and one name only this payload has; every content names its payload.
fn payload(tag: &str) -> (Value, String, BTreeMap<String, Vec<u8>>) {
    payload_at(tag, &format!("app-{tag}"), Some(format!("only-{tag}")))
}

/// Payload `tag` read from `secret/data/<path>`, with one more name `own` if given.
fn payload_at(
    tag: &str,
    path: &str,
    own: Option<String>,
) -> (Value, String, BTreeMap<String, Vec<u8>>) {
    let filler = "x".repeat(FILE_SIZE);
    let mut data = serde_json::Map::new();
    let mut objects = String::new();
    let mut expected = BTreeMap::new();
    let names = (0..NESTED)
        .map(|i| format!("set/f{i:03}"))
        .chain((0..TOP).map(|i| format!("t{i:02}")))
        .chain(own);
    for (i, name) in names.enumerate() {
        let key = format!("k{i:03}");
        let contents = format!("{tag}:{name}:{filler}");
        objects.push_str(&format!(
            "- objectName: {name}\n  secretPath: secret/data/{path}\n  secretKey: {key}\n"
        ));
        data.insert(key, json!(contents));
        expected.insert(name, contents.into_bytes());
    }
    (Value::Object(data), objects, expected)
}

/// kill -9 during large direct writes (≈6 MiB in 193 files), alternating two
/// payloads that share most names: after every kill a reader sees exactly the
/// old or the new complete set (links that lead nowhere are not files); the
/// next Mount by a restarted provider removes what the killed one left and
/// leaves exactly one timestamped directory with the right files.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_mid_write_leaves_the_old_or_the_new_set() {
    let d = Deployment::new("direct-crash").await;
    let mut attributes = Vec::new();
    let mut expected = Vec::new();
    for tag in ["a", "b"] {
        let (data, objects, files) = payload(tag);
        d.put(&format!("app-{tag}"), data).await;
        attributes.push(d.attributes(&objects));
        expected.push(files);
    }
    let secrets = d.secrets();
    let client = v16_client();
    // A call to a killed provider keeps retrying until its deadline.
    let doomed = v16_client().with_timeout("5s");
    // Old set, an orphaned new one and the new one fit at once.
    let volume = tmpfs("64m");
    let root = volume.path().to_owned();

    let mut provider = direct_provider();
    client
        .mount(&provider, &attributes[0], &secrets, &root)
        .expect_ok();
    assert_clean(&root, &expected[0]);
    let mut current = 0;

    let points = [
        KillPoint::DirectoryCreated,
        KillPoint::HalfTheFilesWritten,
        KillPoint::NewLinkCreated,
        KillPoint::Switched,
    ];
    let mut report = Vec::new();
    let (mut old_seen, mut new_seen, mut orphans_seen) = (0, 0, 0);
    for round in 0..12 {
        let next = 1 - current;
        let point = points[round % points.len()];
        let before: BTreeSet<String> = timestamp_dirs(&root).into_iter().collect();
        let only_new = format!("only-{}", ["a", "b"][next]);
        let pending = {
            let (client, dir, attributes, secrets, root) = (
                doomed.clone(),
                provider.providers_dir().to_owned(),
                attributes[next].clone(),
                secrets.clone(),
                root.clone(),
            );
            std::thread::spawn(move || client.mount_in(&dir, &attributes, &secrets, &root))
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let new_dir = timestamp_dirs(&root)
                .into_iter()
                .find(|n| !before.contains(n));
            let reached = match (point, &new_dir) {
                (_, None) => false,
                (KillPoint::DirectoryCreated, Some(_)) => true,
                (KillPoint::HalfTheFilesWritten, Some(dir)) => {
                    std::fs::read_dir(root.join(dir).join("set"))
                        .is_ok_and(|entries| entries.count() >= NESTED / 2)
                }
                (KillPoint::NewLinkCreated, Some(_)) => {
                    std::fs::symlink_metadata(root.join(&only_new)).is_ok()
                }
                (KillPoint::Switched, Some(dir)) => {
                    std::fs::read_link(root.join("..data")).is_ok_and(|l| l == Path::new(dir))
                }
            };
            if reached || pending.is_finished() {
                break;
            }
            assert!(Instant::now() < deadline, "round {round}: no write seen");
            std::thread::yield_now();
        }
        provider.kill();
        let finished = pending.join().unwrap().ok;

        let (files, dangling) = readable(&root);
        let seen = if files == expected[current] {
            old_seen += 1;
            "old"
        } else if files == expected[next] {
            new_seen += 1;
            current = next;
            "new"
        } else {
            let from = |set: usize| {
                files
                    .iter()
                    .filter(|(k, v)| expected[set].get(*k) == Some(*v))
                    .count()
            };
            panic!(
                "round {round} ({point:?}): a mix is visible: {} files, {} from the old set, \
                 {} from the new one; links leading nowhere: {dangling:?}",
                files.len(),
                from(current),
                from(next),
            );
        };
        let orphans = timestamp_dirs(&root).len() - 1;
        orphans_seen += usize::from(orphans > 0);
        report.push(format!(
            "kill {round:2} at {point:?}: {seen} set visible{}; left: {orphans} extra \
             timestamped dir(s), ..data_tmp {}, dangling links {dangling:?}",
            if finished {
                " (write had finished)"
            } else {
                ""
            },
            if root.join("..data_tmp").exists() {
                "yes"
            } else {
                "no"
            },
        ));
        provider = Provider::start_in(
            provider.into_dir(),
            &OpenBao::shared().addr,
            &["--write-mode", "direct"],
        );
    }
    println!("{}", report.join("\n"));

    // The restarted provider's next Mount cleans up whatever the kills left.
    let next = 1 - current;
    client
        .mount(&provider, &attributes[next], &secrets, &root)
        .expect_ok();
    assert_clean(&root, &expected[next]);
    client
        .mount(&provider, &attributes[current], &secrets, &root)
        .expect_ok();
    assert_clean(&root, &expected[current]);

    assert!(
        old_seen > 0 && new_seen > 0 && orphans_seen > 0,
        "the kills must land both before and after the switch, at least once mid-write \
         (old {old_seen}, new {new_seen}, with leftovers {orphans_seen}):\n{}",
        report.join("\n")
    );
}

/// kill -9 while the provider rewrites a volume on its own (a KV change its
/// refresh picked up, no Mount involved): a reader sees exactly the old or
/// the new complete set; a restarted provider's next Mount cleans up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_mid_refresh_leaves_the_old_or_the_new_set() {
    let d = Deployment::new("refresh-crash").await;
    let (a, objects, expected_a) = payload_at("a", "app-refresh", None);
    let (b, _, expected_b) = payload_at("b", "app-refresh", None);
    let (data, expected) = ([a, b], [expected_a, expected_b]);
    d.put("app-refresh", data[0].clone()).await;
    let attributes = d.attributes(&objects);
    let secrets = d.secrets();
    let client = v16_client();
    let volume = tmpfs("64m");
    let root = volume.path().to_owned();
    let args = ["--write-mode", "direct", "--refresh-interval", "1s"];
    let mut provider = Provider::start(&d.bao.addr, &args);
    client
        .mount(&provider, &attributes, &secrets, &root)
        .expect_ok();
    let mut current = 0;
    let mut seen = Vec::new();
    for round in 0..4 {
        let next = 1 - current;
        let before: BTreeSet<String> = timestamp_dirs(&root).into_iter().collect();
        d.put("app-refresh", data[next].clone()).await;
        // Kill as soon as the refresh has started writing (a new timestamped
        // directory), or once half of its nested files exist.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let new_dir = timestamp_dirs(&root)
                .into_iter()
                .find(|n| !before.contains(n));
            let reached = new_dir.is_some_and(|dir| {
                round % 2 == 0
                    || std::fs::read_dir(root.join(dir).join("set"))
                        .is_ok_and(|entries| entries.count() >= NESTED / 2)
            });
            if reached {
                break;
            }
            assert!(Instant::now() < deadline, "round {round}: no refresh seen");
            std::thread::yield_now();
        }
        provider.kill();
        let (files, dangling) = readable(&root);
        if files == expected[current] {
            seen.push("old");
        } else if files == expected[next] {
            seen.push("new");
        } else {
            panic!(
                "round {round}: a mix is visible ({} files); links leading nowhere: {dangling:?}",
                files.len()
            );
        }
        // Restarted, the provider adopts the volume at its next Mount, which
        // writes the current content and removes what the kill left.
        provider = Provider::start_in(provider.into_dir(), &d.bao.addr, &args);
        client
            .mount(&provider, &attributes, &secrets, &root)
            .expect_ok();
        assert_clean(&root, &expected[next]);
        current = next;
    }
    println!("after each kill: {seen:?}");
}
