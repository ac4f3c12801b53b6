//! Object versions: `HMAC-SHA256(namespaceKey, objectName, content)`, with
//! `namespaceKey = HMAC-SHA256(key, "namespace:" + podNamespace)`.
//!
//! The driver stores versions in SecretProviderClassPodStatus objects that many
//! can read, and uses them to decide whether anything changed. A keyed hash
//! changes exactly when the content changes and, unlike a plain hash, lets no
//! one confirm a guess of a low-entropy secret. The key lives in a file
//! (default: next to the socket, on the node) so versions survive provider
//! restarts. Each pod namespace gets its own key derived from it: the same
//! content has unrelated versions in two namespaces, so a tenant who can read
//! another namespace's pod statuses cannot confirm a guess by mounting the
//! guessed value itself and comparing versions.

use std::fs;
use std::io::{self, Write as _};
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use zeroize::Zeroizing;

const KEY_LEN: usize = 32;

/// Computes object versions with one key.
pub struct Versioner {
    key: Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for Versioner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Versioner { key: <redacted> }")
    }
}

impl Versioner {
    /// Reads the key at `path`, creating it (32 random bytes, mode 0600) if it
    /// does not exist. Safe when several processes start at once: the key is
    /// written to a private temporary file and hard-linked into place, so the
    /// first one wins and the others read it.
    pub fn load_or_create(path: &Path) -> io::Result<Self> {
        match fs::read(path) {
            Ok(key) => return Self::from_file_contents(path, key),
            Err(err) if err.kind() == io::ErrorKind::NotFound => {}
            Err(err) => return Err(with_path(err, path)),
        }
        let dir = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        fs::create_dir_all(dir).map_err(|err| with_path(err, dir))?;
        let temp = temp_name(path);
        let mut key = Zeroizing::new(vec![0u8; KEY_LEN]);
        rand::fill(&mut key[..]);
        {
            let mut file = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&temp)
                .map_err(|err| with_path(err, &temp))?;
            file.write_all(&key)?;
            file.sync_all()?;
        }
        let linked = fs::hard_link(&temp, path);
        let _ = fs::remove_file(&temp);
        match linked {
            Ok(()) => Ok(Self { key }),
            Err(err) if err.kind() == io::ErrorKind::AlreadyExists => {
                Self::from_file_contents(path, fs::read(path).map_err(|err| with_path(err, path))?)
            }
            Err(err) => Err(with_path(err, path)),
        }
    }

    /// A random key that lives only as long as the process (tests, the local
    /// `mount` command).
    pub fn ephemeral() -> Self {
        let mut key = Zeroizing::new(vec![0u8; KEY_LEN]);
        rand::fill(&mut key[..]);
        Self { key }
    }

    fn from_file_contents(path: &Path, key: Vec<u8>) -> io::Result<Self> {
        let key = Zeroizing::new(key);
        if key.len() < KEY_LEN {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "version key {} is shorter than {KEY_LEN} bytes",
                    path.display()
                ),
            ));
        }
        if let Ok(meta) = fs::metadata(path)
            && meta.permissions().mode() & 0o077 != 0
        {
            tracing::warn!(path = %path.display(), "version key file is readable by group or others; chmod 600 it");
        }
        Ok(Self { key })
    }

    /// The versioner for one pod namespace (`None`: requests without pod
    /// info, e.g. the local `mount` command): its key is derived from this
    /// one, so it is as stable as the key file.
    pub fn for_namespace(&self, pod_namespace: Option<&str>) -> Self {
        let mut mac =
            Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC accepts any key length");
        mac.update(b"namespace:");
        mac.update(pod_namespace.unwrap_or_default().as_bytes());
        Self {
            key: Zeroizing::new(mac.finalize().into_bytes().to_vec()),
        }
    }

    /// The version of one object's content.
    pub fn version(&self, object_name: &str, content: &[u8]) -> String {
        let mut mac =
            Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC accepts any key length");
        // Length-prefixed so (name, content) pairs cannot collide by shifting bytes.
        mac.update(&(object_name.len() as u64).to_be_bytes());
        mac.update(object_name.as_bytes());
        mac.update(content);
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
    }
}

fn temp_name(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(
        ".tmp-{}-{:x}",
        std::process::id(),
        rand::random::<u64>()
    ));
    path.with_file_name(name)
}

fn with_path(err: io::Error, path: &Path) -> io::Error {
    io::Error::new(err.kind(), format!("{}: {err}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_change_exactly_with_content() {
        let v = Versioner::ephemeral();
        assert_eq!(v.version("a", b"x"), v.version("a", b"x"));
        assert_ne!(v.version("a", b"x"), v.version("a", b"y"));
        assert_ne!(v.version("a", b"bx"), v.version("ab", b"x"));
        assert_ne!(
            Versioner::ephemeral().version("a", b"x"),
            v.version("a", b"x")
        );
    }

    #[test]
    fn key_file_is_created_once_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/key");
        let first = Versioner::load_or_create(&path).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let second = Versioner::load_or_create(&path).unwrap();
        assert_eq!(first.version("a", b"x"), second.version("a", b"x"));
        assert_eq!(
            fs::read_dir(path.parent().unwrap()).unwrap().count(),
            1,
            "no temp files left"
        );
    }

    #[test]
    fn short_key_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        fs::write(&path, b"short").unwrap();
        assert!(Versioner::load_or_create(&path).is_err());
    }

    #[test]
    fn versions_differ_across_namespaces_and_survive_a_reload() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        let v = Versioner::load_or_create(&path).unwrap();
        let (a, b) = (v.for_namespace(Some("a")), v.for_namespace(Some("b")));
        assert_ne!(a.version("p", b"x"), b.version("p", b"x"));
        assert_ne!(a.version("p", b"x"), v.version("p", b"x"));
        assert_ne!(
            v.for_namespace(None).version("p", b"x"),
            a.version("p", b"x")
        );
        let reloaded = Versioner::load_or_create(&path).unwrap();
        assert_eq!(
            reloaded.for_namespace(Some("a")).version("p", b"x"),
            a.version("p", b"x")
        );
        // The prefix keeps a namespace from colliding with the plain key.
        assert_ne!(v.for_namespace(Some("")).key, v.key);
    }

    #[test]
    fn version_reveals_nothing_obvious() {
        let v = Versioner::ephemeral();
        let version = v.version("password", b"hunter2");
        assert_eq!(version.len(), 43);
        assert!(!version.contains("hunter2"));
    }
}
