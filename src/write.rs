//! `--write-mode direct`: the provider writes the files into the pod's volume
//! (`target_path`) itself and returns only object versions, so the driver
//! writes nothing (the protocol's legacy contract).
//!
//! The on-disk layout is the driver's own, from its vendored Kubernetes
//! `AtomicWriter`, so a volume can move between modes in either direction:
//!
//! ```text
//! <target>/..2026_11_27_20_13_05.3141592653/   the files; directories 0755
//! <target>/..data -> ..2026_11_27_20_13_05.3141592653
//! <target>/db-password -> ..data/db-password   one link per top-level entry
//! ```
//!
//! **Crash safety.** New files go into a fresh timestamped directory nothing
//! points to; one `rename(2)` of `..data_tmp` over `..data` then switches every
//! file at once. A writer killed before that rename leaves the old set intact
//! (plus an orphaned directory, perhaps a `..data_tmp` and links to names that
//! do not resolve yet); killed after it, the new set (plus the old directory and
//! links to names that no longer resolve). Every file that can be read comes
//! from one set, never a mix, and every write starts by removing such leftovers.
//! An exclusive `flock` on the target directory serialises writers, including
//! two provider processes overlapping during a rolling update; the kernel
//! drops it when a writer dies.
//!
//! Only a tmpfs target is accepted: secrets must never land on a node's disk.
//! Unlike the driver, the writer can set the files' owner (`fileOwnerUid`,
//! `fileOwnerGid`), so a non-root pod can read mode-0400 files.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::{self, Write as _};
use std::os::unix::fs::{DirBuilderExt as _, MetadataExt as _, OpenOptionsExt as _};
use std::os::unix::fs::{PermissionsExt as _, symlink};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::proto::File;
use crate::request::{FileOwner, FilePath};

/// The link to the current timestamped directory.
const DATA_DIR: &str = "..data";
/// The new link, renamed over [`DATA_DIR`].
const DATA_DIR_TMP: &str = "..data_tmp";
/// Mode of the timestamped directory and any directory inside it: group and
/// others must be able to traverse it, whatever the umask.
const DIR_MODE: u32 = 0o755;
/// `TMPFS_MAGIC` from `linux/magic.h`.
const TMPFS_MAGIC: u64 = 0x0102_1994;

/// Who writes the files into the pod's volume (`--write-mode`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum WriteMode {
    /// The files go back in the Mount response and the driver writes them.
    #[default]
    Response,
    /// The provider writes them into `target_path` and returns none.
    Direct,
}

/// Why a direct write was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// `target_path` is relative, missing or not a directory.
    #[error("target path {}: {reason}", path.display())]
    InvalidTarget {
        /// The driver's `target_path`.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// `target_path` is not on tmpfs.
    #[error(
        "target path {} is on {filesystem}, not tmpfs: --write-mode direct writes secrets \
         only into the driver's tmpfs volume (is the kubelet pods directory mounted into \
         the provider with HostToContainer propagation?)",
        path.display()
    )]
    NotTmpfs {
        /// The driver's `target_path`.
        path: PathBuf,
        /// The filesystem type found there.
        filesystem: String,
    },
    /// A file path the writer will not write (normally refused earlier).
    #[error("file {path:?} {reason}")]
    InvalidFile {
        /// The file's path in the volume.
        path: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A filesystem operation failed.
    #[error("cannot write into {}: {what}: {source}", target.display())]
    Io {
        /// The driver's `target_path`.
        target: PathBuf,
        /// The step that failed.
        what: String,
        /// The OS error.
        source: io::Error,
    },
}

/// What a write did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The volume already held exactly these files: nothing was written.
    Unchanged,
    /// A new timestamped directory with this name is now `..data`.
    Written(String),
}

/// Opens `target` if it is an absolute path to a directory on tmpfs.
pub fn check_target(target: &Path) -> Result<fs::File, WriteError> {
    let invalid = |reason: &str| WriteError::InvalidTarget {
        path: target.to_owned(),
        reason: reason.to_owned(),
    };
    if !target.is_absolute() {
        return Err(invalid("is not an absolute path"));
    }
    let dir = fs::File::open(target).map_err(|err| match err.kind() {
        io::ErrorKind::NotFound => invalid("does not exist"),
        _ => io_error(target, "open the target directory")(err),
    })?;
    let meta = dir
        .metadata()
        .map_err(io_error(target, "stat the target directory"))?;
    if !meta.is_dir() {
        return Err(invalid("is not a directory"));
    }
    let stat = rustix::fs::fstatfs(&dir)
        .map_err(|err| io_error(target, "statfs the target directory")(err.into()))?;
    // `f_type` is a signed word on some targets; the magic numbers are 32-bit.
    let magic = (stat.f_type as u64) & 0xffff_ffff;
    if magic != TMPFS_MAGIC {
        return Err(WriteError::NotTmpfs {
            path: target.to_owned(),
            filesystem: filesystem_name(magic),
        });
    }
    Ok(dir)
}

/// Writes `files` into the tmpfs directory `target` with the driver's layout,
/// replacing what a previous write (ours or the driver's) left there.
pub fn write(target: &Path, files: &[File], owner: FileOwner) -> Result<Outcome, WriteError> {
    let dir = check_target(target)?;
    rustix::fs::flock(&dir, rustix::fs::FlockOperation::LockExclusive)
        .map_err(|err| io_error(target, "lock the target directory")(err.into()))?;
    // The lock is released when `dir` is closed, after the write.
    project(target, files, owner)
}

/// The volume at `target`, as a background refresh knows it: the device of
/// the tmpfs mounted there. Fails when `target` is gone, not on tmpfs, or
/// merely a directory on the filesystem above it (the driver unmounted the
/// volume).
pub fn volume_device(target: &Path) -> Result<u64, WriteError> {
    let dir = check_target(target)?;
    let device = dir
        .metadata()
        .map_err(io_error(target, "stat the target directory"))?
        .dev();
    let parent = target.parent().unwrap_or(target);
    let above = fs::metadata(parent)
        .map_err(io_error(target, "stat the target's parent directory"))?
        .dev();
    if device == above && parent != target {
        return Err(WriteError::InvalidTarget {
            path: target.to_owned(),
            reason: "is no longer a mount point (the volume was unmounted)".into(),
        });
    }
    Ok(device)
}

/// [`write`], but only into the volume `device` ([`volume_device`]): a
/// background refresh never writes into a directory that is not the tmpfs
/// it wrote before.
pub fn rewrite(
    target: &Path,
    files: &[File],
    owner: FileOwner,
    device: u64,
) -> Result<Outcome, WriteError> {
    let dir = check_target(target)?;
    let found = dir
        .metadata()
        .map_err(io_error(target, "stat the target directory"))?
        .dev();
    if found != device {
        return Err(WriteError::InvalidTarget {
            path: target.to_owned(),
            reason: "is no longer the volume written before (unmounted or replaced)".into(),
        });
    }
    rustix::fs::flock(&dir, rustix::fs::FlockOperation::LockExclusive)
        .map_err(|err| io_error(target, "lock the target directory")(err.into()))?;
    project(target, files, owner)
}

/// The files of one write, validated and sorted by path.
struct Payload<'a> {
    files: BTreeMap<&'a str, (&'a [u8], u32)>,
}

impl<'a> Payload<'a> {
    fn new(files: &'a [File]) -> Result<Self, WriteError> {
        let invalid = |path: &str, reason: String| WriteError::InvalidFile {
            path: path.to_owned(),
            reason,
        };
        let mut map = BTreeMap::new();
        for file in files {
            FilePath::parse(&file.path).map_err(|why| invalid(&file.path, why))?;
            // Go's os.FileMode keeps only the permission bits of a plain number.
            let mode = (file.mode as u32) & 0o777;
            if map
                .insert(file.path.as_str(), (file.contents.as_slice(), mode))
                .is_some()
            {
                return Err(invalid(&file.path, "appears twice".into()));
            }
        }
        for path in map.keys() {
            for parent in ancestors(path) {
                if map.contains_key(parent) {
                    return Err(invalid(
                        path,
                        format!("is inside {parent:?}, which is a file"),
                    ));
                }
            }
        }
        Ok(Self { files: map })
    }

    /// Every path the new version holds, directories included.
    fn paths(&self) -> BTreeSet<&'a str> {
        let mut paths = BTreeSet::new();
        for path in self.files.keys() {
            paths.insert(*path);
            paths.extend(ancestors(path));
        }
        paths
    }

    /// The visible top-level names.
    fn top_level(&self) -> BTreeSet<&'a str> {
        self.files
            .keys()
            .map(|p| p.split('/').next().unwrap_or(p))
            .collect()
    }
}

/// `a/b/c` → `a`, `a/b`.
fn ancestors(path: &str) -> impl Iterator<Item = &str> {
    path.match_indices('/').map(move |(i, _)| &path[..i])
}

/// Owner and group every file and directory of the write must have.
#[derive(Clone, Copy, Debug)]
struct Ids {
    uid: u32,
    gid: u32,
    /// Whether to chown at all (only when the SPC asks for an owner).
    chown: bool,
}

impl Ids {
    fn new(owner: FileOwner) -> Self {
        Self {
            uid: owner
                .uid
                .unwrap_or_else(|| rustix::process::geteuid().as_raw()),
            gid: owner
                .gid
                .unwrap_or_else(|| rustix::process::getegid().as_raw()),
            chown: owner.uid.is_some() || owner.gid.is_some(),
        }
    }
}

/// The write itself, on a target already checked and locked.
fn project(target: &Path, files: &[File], owner: FileOwner) -> Result<Outcome, WriteError> {
    let payload = Payload::new(files)?;
    let ids = Ids::new(owner);
    let current = remove_leftovers(target)?;
    remove_unlinked_entries(target, &payload)?;

    let mut stale = Vec::new();
    if let Some(old) = &current {
        let old_dir = target.join(old);
        let removed = removed_paths(&old_dir, &payload)
            .map_err(io_error(target, "list the current files"))?;
        let changed =
            differs(&old_dir, &payload, ids).map_err(io_error(target, "read the current files"))?;
        if !changed && removed.is_empty() {
            return Ok(Outcome::Unchanged);
        }
        // Nested paths go with the old directory; only top-level links remain.
        stale = removed.into_iter().filter(|p| !p.contains('/')).collect();
    }

    let new = create_timestamp_dir(target, ids)?;
    let new_dir = target.join(&new);
    let switched = write_files(&new_dir, &payload, ids)
        .map_err(io_error(target, "write the new files"))
        .and_then(|()| {
            create_visible_links(target, &payload)
                .map_err(io_error(target, "link the visible entries"))
        })
        .and_then(|()| {
            let tmp = target.join(DATA_DIR_TMP);
            symlink(&new, &tmp)
                .and_then(|()| fs::rename(&tmp, target.join(DATA_DIR)))
                .map_err(|err| {
                    let _ = fs::remove_file(&tmp);
                    io_error(target, "switch ..data to the new files")(err)
                })
        });
    if let Err(err) = switched {
        let _ = fs::remove_dir_all(&new_dir);
        return Err(err);
    }

    for name in stale {
        let path = target.join(name);
        if fs::symlink_metadata(&path).is_ok_and(|m| m.file_type().is_symlink()) {
            remove_if_present(fs::remove_file(&path))
                .map_err(io_error(target, "remove a file that is gone"))?;
        }
    }
    if let Some(old) = current.filter(|old| *old != new) {
        remove_if_present(fs::remove_dir_all(target.join(old)))
            .map_err(io_error(target, "remove the previous files"))?;
    }
    Ok(Outcome::Written(new))
}

/// Removes what an interrupted write (ours or the driver's) left behind:
/// `..data_tmp`, timestamped directories `..data` does not point to, and
/// top-level links into `..data` that do not resolve. Returns the directory
/// `..data` points to, if any.
fn remove_leftovers(target: &Path) -> Result<Option<String>, WriteError> {
    let current = match fs::read_link(target.join(DATA_DIR)) {
        Ok(link) => {
            let name = link.to_str().filter(|n| is_timestamp_name(n));
            Some(name.map(str::to_owned).ok_or_else(|| WriteError::Io {
                target: target.to_owned(),
                what: "read ..data".into(),
                source: io::Error::other(format!(
                    "..data points to {link:?}, not to a timestamped directory of the volume"
                )),
            })?)
        }
        Err(err) if err.kind() == io::ErrorKind::NotFound => None,
        Err(err) => return Err(io_error(target, "read ..data")(err)),
    };
    let leftovers = (|| {
        let mut removed = 0usize;
        let tmp = target.join(DATA_DIR_TMP);
        match fs::symlink_metadata(&tmp) {
            Ok(meta) if meta.is_dir() => fs::remove_dir_all(&tmp)?,
            Ok(_) => fs::remove_file(&tmp)?,
            Err(err) if err.kind() == io::ErrorKind::NotFound => {}
            Err(err) => return Err(err),
        }
        for entry in fs::read_dir(target)? {
            let entry = entry?;
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            let kind = entry.file_type()?;
            if is_timestamp_name(&name) && current.as_deref() != Some(name.as_str()) {
                if kind.is_dir() {
                    remove_if_present(fs::remove_dir_all(entry.path()))?;
                } else {
                    remove_if_present(fs::remove_file(entry.path()))?;
                }
                removed += 1;
            } else if !name.starts_with("..")
                && kind.is_symlink()
                && fs::read_link(entry.path())? == Path::new(DATA_DIR).join(&name)
                && !exists(&target.join(DATA_DIR).join(&name))?
            {
                remove_if_present(fs::remove_file(entry.path()))?;
                removed += 1;
            }
        }
        Ok(removed)
    })()
    .map_err(io_error(target, "remove leftovers of an interrupted write"))?;
    if leftovers > 0 {
        tracing::info!(
            target_path = %target.display(),
            entries = leftovers,
            "removed leftovers of an interrupted write"
        );
    }
    Ok(current)
}

/// The driver's migration for volumes a legacy provider wrote without links:
/// a top-level entry that is not a link but has the name of a new file's
/// first element is removed, so the link can take its place.
fn remove_unlinked_entries(target: &Path, payload: &Payload<'_>) -> Result<(), WriteError> {
    for name in payload.top_level() {
        let path = target.join(name);
        let result = match fs::symlink_metadata(&path) {
            Ok(meta) if meta.is_dir() => fs::remove_dir_all(&path),
            Ok(meta) if !meta.file_type().is_symlink() => fs::remove_file(&path),
            _ => Ok(()),
        };
        remove_if_present(result).map_err(io_error(target, "remove an unlinked entry"))?;
    }
    Ok(())
}

/// Paths under `old_dir` (files and directories) the payload no longer has.
fn removed_paths(old_dir: &Path, payload: &Payload<'_>) -> io::Result<BTreeSet<String>> {
    let mut old = BTreeSet::new();
    match walk(old_dir, "", &mut old) {
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(BTreeSet::new()),
        result => result?,
    }
    let new = payload.paths();
    Ok(old
        .into_iter()
        .filter(|p| !new.contains(p.as_str()))
        .collect())
}

fn walk(dir: &Path, prefix: &str, paths: &mut BTreeSet<String>) -> io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let rel = if prefix.is_empty() {
            name
        } else {
            format!("{prefix}/{name}")
        };
        if entry.file_type()?.is_dir() {
            walk(&entry.path(), &rel, paths)?;
        }
        paths.insert(rel);
    }
    Ok(())
}

/// Whether any file's content, mode or owner differs from what `old_dir`
/// holds. The driver compares content only; a changed `filePermission` or
/// owner is a change here too.
fn differs(old_dir: &Path, payload: &Payload<'_>, ids: Ids) -> io::Result<bool> {
    for (path, (contents, mode)) in &payload.files {
        let full = old_dir.join(path);
        let meta = match fs::symlink_metadata(&full) {
            Ok(meta) => meta,
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(true),
            Err(err) => return Err(err),
        };
        if !meta.is_file()
            || meta.len() != contents.len() as u64
            || meta.mode() & 0o7777 != *mode
            || meta.uid() != ids.uid
            || meta.gid() != ids.gid
            || fs::read(&full)? != *contents
        {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Creates `..YYYY_MM_DD_HH_MM_SS.<random>` (UTC), as Go's `os.MkdirTemp`
/// does for the driver.
fn create_timestamp_dir(target: &Path, ids: Ids) -> Result<String, WriteError> {
    let stamp = humantime::format_rfc3339_seconds(SystemTime::now()).to_string();
    let stamp = stamp.trim_end_matches('Z').replace(['-', 'T', ':'], "_");
    for _ in 0..100 {
        let name = format!("..{stamp}.{}", rand::random::<u32>());
        let path = target.join(&name);
        match fs::DirBuilder::new().mode(0o700).create(&path) {
            Ok(()) => {
                set_owner_and_mode(&path, ids, DIR_MODE)
                    .map_err(io_error(target, "prepare the new directory"))?;
                return Ok(name);
            }
            Err(err) if err.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(err) => return Err(io_error(target, "create the new directory")(err)),
        }
    }
    Err(io_error(target, "create the new directory")(
        io::Error::from(io::ErrorKind::AlreadyExists),
    ))
}

/// Whether `name` is one of the writer's timestamped directories.
fn is_timestamp_name(name: &str) -> bool {
    // ..2006_01_02_15_04_05.<suffix>
    let Some(rest) = name.strip_prefix("..") else {
        return false;
    };
    let bytes = rest.as_bytes();
    bytes.len() > 20
        && bytes[..19].iter().enumerate().all(|(i, b)| match i {
            4 | 7 | 10 | 13 | 16 => *b == b'_',
            _ => b.is_ascii_digit(),
        })
        && bytes[19] == b'.'
        && !rest.contains('/')
}

fn write_files(dir: &Path, payload: &Payload<'_>, ids: Ids) -> io::Result<()> {
    let mut made = BTreeSet::new();
    for (path, (contents, mode)) in &payload.files {
        for parent in ancestors(path) {
            if made.insert(parent) {
                let full = dir.join(parent);
                fs::DirBuilder::new().mode(0o700).create(&full)?;
                set_owner_and_mode(&full, ids, DIR_MODE)?;
            }
        }
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(dir.join(path))?;
        file.write_all(contents)?;
        // Explicit, so the umask has no say; before the chown, after which
        // only CAP_FOWNER could change the mode.
        file.set_permissions(fs::Permissions::from_mode(*mode))?;
        if ids.chown {
            std::os::unix::fs::fchown(&file, Some(ids.uid), Some(ids.gid))?;
        }
    }
    Ok(())
}

fn set_owner_and_mode(path: &Path, ids: Ids, mode: u32) -> io::Result<()> {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))?;
    if ids.chown {
        std::os::unix::fs::lchown(path, Some(ids.uid), Some(ids.gid))?;
    }
    Ok(())
}

/// `<name> -> ..data/<name>` for every top-level name that has no link yet.
fn create_visible_links(target: &Path, payload: &Payload<'_>) -> io::Result<()> {
    for name in payload.top_level() {
        let path = target.join(name);
        match fs::symlink_metadata(&path) {
            Ok(_) => {}
            Err(err) if err.kind() == io::ErrorKind::NotFound => {
                symlink(Path::new(DATA_DIR).join(name), &path)?;
            }
            Err(err) => return Err(err),
        }
    }
    Ok(())
}

fn exists(path: &Path) -> io::Result<bool> {
    match fs::symlink_metadata(path) {
        Ok(_) => Ok(true),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(err) => Err(err),
    }
}

fn remove_if_present(result: io::Result<()>) -> io::Result<()> {
    match result {
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

fn io_error(target: &Path, what: &str) -> impl FnOnce(io::Error) -> WriteError {
    let (target, what) = (target.to_owned(), what.to_owned());
    move |source| WriteError::Io {
        target,
        what,
        source,
    }
}

/// A name for the filesystem magic numbers a target is likely to show.
fn filesystem_name(magic: u64) -> String {
    match magic {
        0xef53 => "ext2/3/4".into(),
        0x5846_5342 => "xfs".into(),
        0x9123_683e => "btrfs".into(),
        0x794c_7630 => "overlayfs".into(),
        0x8584_58f6 => "ramfs".into(),
        0x6969 => "nfs".into(),
        0x2fc1_2fc1 => "zfs".into(),
        0x6573_5546 => "fuse".into(),
        0x9fa0 => "proc".into(),
        0x6265_6572 => "sysfs".into(),
        0x7371_7368 => "squashfs".into(),
        other => format!("a filesystem of type {other:#x}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str, contents: &str, mode: u32) -> File {
        File {
            path: path.into(),
            mode: mode as i32,
            contents: contents.as_bytes().to_vec(),
        }
    }

    fn names(dir: &Path) -> BTreeSet<String> {
        fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect()
    }

    fn timestamp_dirs(dir: &Path) -> Vec<String> {
        names(dir)
            .into_iter()
            .filter(|n| is_timestamp_name(n))
            .collect()
    }

    fn data_target(dir: &Path) -> String {
        fs::read_link(dir.join(DATA_DIR))
            .unwrap()
            .to_string_lossy()
            .into_owned()
    }

    #[test]
    fn layout_is_the_atomic_writers() {
        let dir = tempfile::tempdir().unwrap();
        let t = dir.path();
        let files = [
            file("dir/x", "x", 0o600),
            file("key", "k", 0o640),
            file("config", "c", 0o644),
        ];
        let Outcome::Written(ts) = project(t, &files, FileOwner::default()).unwrap() else {
            panic!("first write must write");
        };
        assert!(is_timestamp_name(&ts), "{ts}");
        assert_eq!(
            names(t),
            BTreeSet::from([
                ts.clone(),
                "..data".into(),
                "dir".into(),
                "key".into(),
                "config".into()
            ])
        );
        assert_eq!(data_target(t), ts);
        for name in ["dir", "key", "config"] {
            assert_eq!(
                fs::read_link(t.join(name)).unwrap(),
                Path::new("..data").join(name)
            );
        }
        let mode = |p: &str| fs::metadata(t.join(p)).unwrap().mode() & 0o7777;
        assert_eq!(mode(&ts), 0o755);
        assert_eq!(mode("dir"), 0o755);
        assert_eq!(mode("dir/x"), 0o600);
        assert_eq!(mode("key"), 0o640);
        assert_eq!(mode("config"), 0o644);
        assert_eq!(fs::read_to_string(t.join("dir/x")).unwrap(), "x");
    }

    #[test]
    fn unchanged_content_is_not_rewritten_but_mode_changes_are() {
        let dir = tempfile::tempdir().unwrap();
        let t = dir.path();
        let files = [file("a", "1", 0o644)];
        let first = project(t, &files, FileOwner::default()).unwrap();
        assert_eq!(
            project(t, &files, FileOwner::default()).unwrap(),
            Outcome::Unchanged
        );
        let second = project(t, &[file("a", "1", 0o600)], FileOwner::default()).unwrap();
        assert_ne!(first, second);
        assert_eq!(timestamp_dirs(t).len(), 1);
        assert_eq!(fs::metadata(t.join("a")).unwrap().mode() & 0o777, 0o600);
    }

    #[test]
    fn files_that_disappear_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let t = dir.path();
        let owner = FileOwner::default();
        project(
            t,
            &[
                file("a", "1", 0o644),
                file("b", "2", 0o644),
                file("d/x", "3", 0o644),
                file("d/y", "4", 0o644),
            ],
            owner,
        )
        .unwrap();
        // Same content for what remains: the disappearance alone forces a write.
        project(t, &[file("a", "1", 0o644), file("d/x", "3", 0o644)], owner).unwrap();
        let ts = timestamp_dirs(t);
        assert_eq!(ts.len(), 1);
        assert_eq!(
            names(t),
            BTreeSet::from([ts[0].clone(), "..data".into(), "a".into(), "d".into()])
        );
        assert_eq!(names(&t.join("d")), BTreeSet::from(["x".to_owned()]));
    }

    #[test]
    fn leftovers_of_an_interrupted_write_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let t = dir.path();
        let owner = FileOwner::default();
        project(t, &[file("a", "old", 0o644)], owner).unwrap();
        let live = data_target(t);
        // A write killed after its files and links, before the switch.
        let orphan = "..2026_01_02_03_04_05.42";
        fs::create_dir_all(t.join(orphan).join("sub")).unwrap();
        fs::write(t.join(orphan).join("new-only"), "new").unwrap();
        symlink(orphan, t.join(DATA_DIR_TMP)).unwrap();
        symlink("..data/new-only", t.join("new-only")).unwrap();
        // Unrelated entries stay: a link elsewhere, a `..` name that is not ours.
        symlink("somewhere", t.join("other-link")).unwrap();
        fs::write(t.join("..keep"), "").unwrap();

        assert_eq!(
            project(t, &[file("a", "old", 0o644)], owner).unwrap(),
            Outcome::Unchanged,
            "cleanup alone does not need a new version"
        );
        assert_eq!(data_target(t), live);
        assert_eq!(
            names(t),
            BTreeSet::from([
                live.clone(),
                "..data".into(),
                "..keep".into(),
                "a".into(),
                "other-link".into()
            ])
        );
    }

    #[test]
    fn a_first_write_that_died_is_cleaned_up() {
        let dir = tempfile::tempdir().unwrap();
        let t = dir.path();
        fs::create_dir(t.join("..2026_01_02_03_04_05.7")).unwrap();
        symlink("..data/a", t.join("a")).unwrap();
        project(t, &[file("b", "1", 0o644)], FileOwner::default()).unwrap();
        let ts = timestamp_dirs(t);
        assert_eq!(ts.len(), 1);
        assert_eq!(
            names(t),
            BTreeSet::from([ts[0].clone(), "..data".into(), "b".into()])
        );
    }

    #[test]
    fn entries_a_legacy_provider_wrote_become_links() {
        let dir = tempfile::tempdir().unwrap();
        let t = dir.path();
        fs::write(t.join("a"), "legacy").unwrap();
        fs::create_dir(t.join("d")).unwrap();
        fs::write(t.join("d/x"), "legacy").unwrap();
        project(
            t,
            &[file("a", "new", 0o644), file("d/x", "new", 0o644)],
            FileOwner::default(),
        )
        .unwrap();
        assert!(fs::symlink_metadata(t.join("a")).unwrap().is_symlink());
        assert_eq!(fs::read_to_string(t.join("d/x")).unwrap(), "new");
    }

    #[test]
    fn data_link_must_stay_inside_the_volume() {
        let dir = tempfile::tempdir().unwrap();
        let t = dir.path();
        symlink("/etc", t.join(DATA_DIR)).unwrap();
        let err = project(t, &[file("a", "1", 0o644)], FileOwner::default()).unwrap_err();
        assert!(err.to_string().contains("not to a timestamped"), "{err}");
        assert!(Path::new("/etc").exists());
    }

    #[test]
    fn bad_payloads_are_refused_before_anything_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let t = dir.path();
        for files in [
            vec![file("..data", "x", 0o644)],
            vec![file("a", "1", 0o644), file("a", "2", 0o644)],
            vec![file("a", "1", 0o644), file("a/b", "2", 0o644)],
            vec![file("/abs", "1", 0o644)],
        ] {
            assert!(matches!(
                project(t, &files, FileOwner::default()),
                Err(WriteError::InvalidFile { .. })
            ));
        }
        assert!(names(t).is_empty());
    }

    #[test]
    fn targets_are_checked() {
        let relative = check_target(Path::new("relative/dir")).unwrap_err();
        assert!(matches!(relative, WriteError::InvalidTarget { .. }));
        let missing = check_target(Path::new("/nonexistent/vsp-target")).unwrap_err();
        assert!(missing.to_string().contains("does not exist"), "{missing}");
        // procfs is never tmpfs.
        let proc = check_target(Path::new("/proc")).unwrap_err();
        assert!(
            matches!(&proc, WriteError::NotTmpfs { filesystem, .. } if filesystem == "proc"),
            "{proc}"
        );
        assert!(proc.to_string().contains("/proc is on proc, not tmpfs"));
    }

    #[test]
    fn timestamp_names() {
        assert!(is_timestamp_name("..2026_11_27_20_13_05.3141592653"));
        assert!(is_timestamp_name("..2016_02_01_15_04_05.1"));
        for name in [
            "..data",
            "..data_tmp",
            "..2026_11_27_20_13_05.",
            "..2026-11-27_20_13_05.1",
            "2026_11_27_20_13_05.1",
            "..keep",
        ] {
            assert!(!is_timestamp_name(name), "{name}");
        }
    }
}
