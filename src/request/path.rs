//! File paths, validated exactly as the driver's atomic writer validates them,
//! so a bad `objectName` is refused here with a clear message instead of
//! failing later inside the driver.

use std::fmt;

/// Longest path the driver accepts, in bytes.
const MAX_PATH_LEN: usize = 4096;
/// Longest single path element the driver accepts, in bytes.
const MAX_ELEMENT_LEN: usize = 255;

/// A relative file path inside the pod's volume that the driver will accept.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FilePath(String);

impl FilePath {
    /// Validates `path` with the driver's rules: non-empty, relative, at most
    /// 4096 bytes with elements of at most 255, no `..` element, no first
    /// element starting with `..`, and already clean (no `.`/empty elements,
    /// no trailing slash).
    pub fn parse(path: &str) -> Result<Self, String> {
        if path.is_empty() {
            return Err("must not be empty".into());
        }
        if path.starts_with('/') {
            return Err("must be a relative path, not absolute".into());
        }
        if path.len() > MAX_PATH_LEN {
            return Err(format!("is longer than {MAX_PATH_LEN} bytes"));
        }
        if path.contains('\0') {
            return Err("must not contain a NUL byte".into());
        }
        let mut elements = path.split('/').peekable();
        if elements.peek().is_some_and(|first| first.starts_with("..")) {
            return Err("must not start with '..'".into());
        }
        for element in path.split('/') {
            if element.len() > MAX_ELEMENT_LEN {
                return Err(format!(
                    "has an element longer than {MAX_ELEMENT_LEN} bytes"
                ));
            }
            match element {
                ".." => return Err("must not contain a '..' element".into()),
                "" | "." => {
                    return Err("must be a clean path (no '//', './', '/.' or trailing '/')".into());
                }
                _ => {}
            }
        }
        Ok(Self(path.to_owned()))
    }

    /// The path as the driver receives it.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The first element, which becomes the visible top-level entry in the volume.
    pub fn top_level(&self) -> &str {
        self.0.split('/').next().unwrap_or(&self.0)
    }
}

impl fmt::Display for FilePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::FilePath;

    #[test]
    fn accepts_what_the_driver_accepts() {
        for ok in ["a", "a/b/c", ".env", "a..b", "a/..b", "dir/file.txt", "x.y"] {
            assert!(FilePath::parse(ok).is_ok(), "{ok} should be accepted");
        }
    }

    #[test]
    fn refuses_what_the_driver_refuses() {
        let long_element = "x".repeat(256);
        let long_path = ["y"; 2100].join("/");
        for bad in [
            "",
            "/etc/passwd",
            "..",
            "../x",
            "a/../b",
            "a/..",
            "..foo",
            "..data",
            "./a",
            "a/./b",
            "a//b",
            "a/",
            ".",
            long_element.as_str(),
            long_path.as_str(),
            "a\0b",
        ] {
            assert!(FilePath::parse(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn top_level_is_the_first_element() {
        assert_eq!(FilePath::parse("a/b").unwrap().top_level(), "a");
        assert_eq!(FilePath::parse("a").unwrap().top_level(), "a");
    }
}
