//! Per-vhost nginx caches (proxy or FastCGI): settings and their validation, the cache key and the
//! file it maps to, purging by path or entirely, and the cache's size on disk.
//!
//! Invariant: a purge removes cache files only; the cache directory and its level directories stay,
//! so nginx never finds its cache path gone.

pub mod apply;

use std::io;
use std::path::{Path, PathBuf};

use md5::{Digest, Md5};
use serde::{Deserialize, Serialize};

use crate::vhosts::spec::{ServerName, ValidationError, is_safe_path_character};

/// The longest TTL accepted (one year).
pub const MAX_TTL_SECONDS: u32 = 365 * 24 * 3600;
/// The largest cache accepted (100 GiB).
pub const MAX_SIZE_MEGABYTES: u32 = 100 * 1024;
/// The most bypass rules of each kind.
pub const MAX_BYPASS_RULES: usize = 32;
/// The most paths one purge request may name.
pub const MAX_PURGE_PATHS: usize = 1000;

/// The nginx cache key of every vhost cache; [`cache_file`] computes the same key.
pub const CACHE_KEY: &str = "$scheme://$host$request_uri";

/// A vhost's cache settings, as a customer sends them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheSettings {
    /// How long a successful answer stays fresh, in seconds.
    #[serde(alias = "ttl")]
    pub ttl_seconds: u32,
    /// The most disk space the cache may take, in megabytes.
    #[serde(alias = "max_size")]
    pub max_size_megabytes: u32,
    /// Requests that go around the cache.
    #[serde(default)]
    pub bypass: Bypass,
}

/// Requests that are neither answered from nor stored in the cache.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bypass {
    /// Cookie names: a request carrying any of them bypasses the cache (a login session, say).
    #[serde(default)]
    pub cookies: Vec<String>,
    /// Path prefixes that bypass the cache (`/wp-admin/`).
    #[serde(default)]
    pub paths: Vec<String>,
}

impl CacheSettings {
    /// Checks every field; the settings are then safe to render.
    pub fn validate(&self) -> Result<(), ValidationError> {
        let mut errors = ValidationError::default();
        if self.ttl_seconds == 0 || self.ttl_seconds > MAX_TTL_SECONDS {
            errors.push(
                "ttl_seconds",
                format!("must be between 1 and {MAX_TTL_SECONDS}"),
            );
        }
        if self.max_size_megabytes == 0 || self.max_size_megabytes > MAX_SIZE_MEGABYTES {
            errors.push(
                "max_size_megabytes",
                format!("must be between 1 and {MAX_SIZE_MEGABYTES}"),
            );
        }
        if self.bypass.cookies.len() > MAX_BYPASS_RULES {
            errors.push(
                "bypass.cookies",
                format!("at most {MAX_BYPASS_RULES} cookies"),
            );
        }
        for (index, cookie) in self.bypass.cookies.iter().enumerate() {
            let valid = !cookie.is_empty()
                && cookie.len() <= 64
                && cookie
                    .chars()
                    .all(|character| character.is_ascii_alphanumeric() || character == '_');
            if !valid {
                errors.push(
                    format!("bypass.cookies[{index}]"),
                    "a cookie name is 1 to 64 letters, digits or '_'",
                );
            }
        }
        if self.bypass.paths.len() > MAX_BYPASS_RULES {
            errors.push("bypass.paths", format!("at most {MAX_BYPASS_RULES} paths"));
        }
        for (index, path) in self.bypass.paths.iter().enumerate() {
            if let Err(reason) = check_bypass_path(path) {
                errors.push(format!("bypass.paths[{index}]"), reason);
            }
        }
        errors.into_result(())
    }

    /// How long nginx keeps an entry nobody asks for.
    pub fn inactive_seconds(&self) -> u32 {
        self.ttl_seconds.max(60)
    }
}

fn check_bypass_path(path: &str) -> Result<(), String> {
    if !path.starts_with('/') {
        return Err("must start with '/'".into());
    }
    if path.len() > 256 {
        return Err("is longer than 256 characters".into());
    }
    match path
        .chars()
        .find(|character| !is_safe_path_character(*character))
    {
        Some(bad) => Err(format!("contains the character {bad:?}")),
        None => Ok(()),
    }
}

/// A bypass path prefix as an anchored PCRE pattern; the only characters of a valid path that
/// PCRE treats specially (`.` and `+`) are put in character classes, so no backslash is needed.
pub fn bypass_pattern(path: &str) -> String {
    let mut pattern = String::from("^");
    for character in path.chars() {
        if matches!(character, '.' | '+') {
            pattern.push('[');
            pattern.push(character);
            pattern.push(']');
        } else {
            pattern.push(character);
        }
    }
    pattern
}

/// What a purge removes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PurgeRequest {
    /// Every cached answer of the vhost.
    All,
    /// The answers for these request URIs (path and query, as the client sent them).
    Paths(Vec<String>),
}

impl PurgeRequest {
    /// Checks the paths of a path purge.
    pub fn validate(&self) -> Result<(), ValidationError> {
        let PurgeRequest::Paths(paths) = self else {
            return Ok(());
        };
        let mut errors = ValidationError::default();
        if paths.is_empty() || paths.len() > MAX_PURGE_PATHS {
            errors.push("paths", format!("give 1 to {MAX_PURGE_PATHS} paths"));
        }
        for (index, path) in paths.iter().enumerate() {
            let valid = path.starts_with('/')
                && path.len() <= 4096
                && path.chars().all(|character| character.is_ascii_graphic());
            if !valid {
                errors.push(
                    format!("paths[{index}]"),
                    "a path starts with '/' and holds only visible ASCII characters",
                );
            }
        }
        errors.into_result(())
    }
}

/// What a purge did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PurgeReport {
    /// Cache files removed.
    pub removed_files: u64,
}

/// A cache's settings and its use of disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheStatus {
    /// The settings, when the cache is on.
    pub settings: Option<CacheSettings>,
    /// Bytes taken by cache files.
    pub size_bytes: u64,
    /// How many answers are cached.
    pub files: u64,
}

/// The cache key nginx computes for a request (see [`CACHE_KEY`]).
pub fn cache_key(scheme: &str, host: &str, request_uri: &str) -> String {
    format!("{scheme}://{host}{request_uri}")
}

/// The file nginx stores a key in, for a cache with `levels=1:2`.
pub fn cache_file(cache_dir: &Path, key: &str) -> PathBuf {
    let digest = hex::encode(Md5::digest(key.as_bytes()));
    cache_dir
        .join(&digest[31..32])
        .join(&digest[29..31])
        .join(&digest)
}

/// Every file a path purge removes: both schemes, every plain name of the vhost.
pub fn purge_files(cache_dir: &Path, names: &[ServerName], paths: &[String]) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for path in paths {
        for name in names.iter().filter(|name| !name.is_wildcard()) {
            for scheme in ["http", "https"] {
                files.push(cache_file(
                    cache_dir,
                    &cache_key(scheme, name.as_str(), path),
                ));
            }
        }
    }
    files
}

/// Whether a file name is one of nginx's cache files (an MD5 in hex), not a temporary file.
fn is_cache_file_name(name: &str) -> bool {
    name.len() == 32 && name.chars().all(|character| character.is_ascii_hexdigit())
}

/// Removes the given files, counting those that existed.
pub fn remove_files(files: &[PathBuf]) -> io::Result<PurgeReport> {
    let mut report = PurgeReport::default();
    for file in files {
        match std::fs::remove_file(file) {
            Ok(()) => report.removed_files += 1,
            Err(error) if error.kind() == io::ErrorKind::NotFound => {}
            Err(error) => return Err(error),
        }
    }
    Ok(report)
}

/// The depth of nginx's `levels=1:2` tree below the cache directory.
const LEVELS: usize = 2;

/// Removes every cache file under the directory, keeping the directories themselves.
pub fn purge_all(cache_dir: &Path) -> io::Result<PurgeReport> {
    let mut report = PurgeReport::default();
    walk_cache(cache_dir, 0, &mut |path, _| {
        match std::fs::remove_file(path) {
            Ok(()) => report.removed_files += 1,
            Err(error) if error.kind() == io::ErrorKind::NotFound => {}
            Err(error) => return Err(error),
        }
        Ok(())
    })?;
    Ok(report)
}

/// The size of the cache: bytes and number of cache files.
pub fn cache_usage(cache_dir: &Path) -> io::Result<(u64, u64)> {
    let mut bytes = 0;
    let mut files = 0;
    walk_cache(cache_dir, 0, &mut |_, metadata| {
        bytes += metadata.len();
        files += 1;
        Ok(())
    })?;
    Ok((bytes, files))
}

/// Visits every cache file, bounded by the level depth; a missing directory has no files.
fn walk_cache(
    dir: &Path,
    depth: usize,
    visit: &mut dyn FnMut(&Path, &std::fs::Metadata) -> io::Result<()>,
) -> io::Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(error) => return Err(error),
    };
    for entry in entries {
        let entry = entry?;
        let metadata = entry.metadata()?;
        let path = entry.path();
        if metadata.is_dir() {
            if depth < LEVELS {
                walk_cache(&path, depth + 1, visit)?;
            }
        } else if metadata.is_file()
            && depth == LEVELS
            && is_cache_file_name(&entry.file_name().to_string_lossy())
        {
            visit(&path, &metadata)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_file_follows_nginx_levels() {
        // md5("") is d41d8cd98f00b204e9800998ecf8427e: the last character, then the two before it.
        let cases = [("", "/c/e/27/d41d8cd98f00b204e9800998ecf8427e")];
        for (key, expected) in cases {
            assert_eq!(cache_file(Path::new("/c"), key), PathBuf::from(expected));
        }
        assert_eq!(
            cache_key("https", "a.example", "/x?y"),
            "https://a.example/x?y"
        );
    }

    #[test]
    fn settings_validation_cases() {
        let base = CacheSettings {
            ttl_seconds: 60,
            max_size_megabytes: 10,
            bypass: Bypass::default(),
        };
        let cases: Vec<(CacheSettings, Option<&str>)> = vec![
            (base.clone(), None),
            (
                CacheSettings {
                    ttl_seconds: 0,
                    ..base.clone()
                },
                Some("ttl_seconds"),
            ),
            (
                CacheSettings {
                    max_size_megabytes: 0,
                    ..base.clone()
                },
                Some("max_size_megabytes"),
            ),
            (
                CacheSettings {
                    bypass: Bypass {
                        cookies: vec!["wordpress_logged_in".into()],
                        paths: vec!["/wp-admin/".into()],
                    },
                    ..base.clone()
                },
                None,
            ),
            (
                CacheSettings {
                    bypass: Bypass {
                        cookies: vec!["a;b".into()],
                        paths: vec![],
                    },
                    ..base.clone()
                },
                Some("bypass.cookies[0]"),
            ),
            (
                CacheSettings {
                    bypass: Bypass {
                        cookies: vec!["$x".into()],
                        paths: vec![],
                    },
                    ..base.clone()
                },
                Some("bypass.cookies[0]"),
            ),
            (
                CacheSettings {
                    bypass: Bypass {
                        cookies: vec![],
                        paths: vec!["admin".into()],
                    },
                    ..base.clone()
                },
                Some("bypass.paths[0]"),
            ),
            (
                CacheSettings {
                    bypass: Bypass {
                        cookies: vec![],
                        paths: vec!["/a\"b".into()],
                    },
                    ..base.clone()
                },
                Some("bypass.paths[0]"),
            ),
            (
                CacheSettings {
                    bypass: Bypass {
                        cookies: vec![],
                        paths: vec!["/a b".into()],
                    },
                    ..base.clone()
                },
                Some("bypass.paths[0]"),
            ),
            (
                CacheSettings {
                    bypass: Bypass {
                        cookies: vec![],
                        paths: vec!["/{x}".into()],
                    },
                    ..base
                },
                Some("bypass.paths[0]"),
            ),
        ];
        for (settings, refused) in cases {
            let result = settings.validate();
            match refused {
                None => assert!(result.is_ok(), "{settings:?} refused: {result:?}"),
                Some(field) => assert!(
                    result.as_ref().is_err_and(|error| error.has(field)),
                    "{settings:?}: {result:?}"
                ),
            }
        }
    }

    #[test]
    fn bypass_patterns_neutralise_regex_characters() {
        for (path, pattern) in [
            ("/wp-admin/", "^/wp-admin/"),
            ("/a.b", "^/a[.]b"),
            ("/x+y.php", "^/x[+]y[.]php"),
        ] {
            assert_eq!(bypass_pattern(path), pattern);
        }
    }

    #[test]
    fn purge_files_cover_both_schemes_and_plain_names() {
        let names = vec![
            ServerName::parse("a.example").unwrap(),
            ServerName::parse("*.b.example").unwrap(),
        ];
        let files = purge_files(Path::new("/c"), &names, &["/x?y=1".to_string()]);
        assert_eq!(
            files,
            vec![
                cache_file(Path::new("/c"), "http://a.example/x?y=1"),
                cache_file(Path::new("/c"), "https://a.example/x?y=1"),
            ]
        );
    }

    #[test]
    fn purge_all_keeps_directories_and_temporary_files() {
        let dir = tempfile::tempdir().unwrap();
        let file = cache_file(dir.path(), "http://a.example/");
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(&file, b"cached").unwrap();
        let temporary = file.parent().unwrap().join("0000000001");
        std::fs::write(&temporary, b"being written").unwrap();
        assert_eq!(cache_usage(dir.path()).unwrap(), (6, 1));
        assert_eq!(purge_all(dir.path()).unwrap().removed_files, 1);
        assert!(!file.exists());
        assert!(temporary.exists());
        assert!(file.parent().unwrap().is_dir());
        assert_eq!(cache_usage(dir.path()).unwrap(), (0, 0));
    }
}
