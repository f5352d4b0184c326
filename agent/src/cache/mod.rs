//! Per-vhost nginx caches (proxy or FastCGI): the cache key and the file it maps to, purging by
//! path or entirely, and the cache's size on disk. The settings and their validation are protocol
//! data (`protocol::web::cache`), shared with the coordinator.
//!
//! Invariant: a purge removes cache files only; the cache directory and its level directories stay,
//! so nginx never finds its cache path gone.

pub mod apply;

use std::io;
use std::path::{Path, PathBuf};

use md5::{Digest, Md5};
pub use protocol::web::cache::{
    Bypass, CacheSettings, CacheStatus, MAX_BYPASS_RULES, MAX_PURGE_PATHS, MAX_SIZE_MEGABYTES,
    MAX_TTL_SECONDS, PurgeReport, PurgeRequest,
};

/// The cache key and bypass patterns are part of the rendered configuration; named here too.
pub use crate::vhosts::render::{CACHE_KEY, bypass_pattern};
use crate::vhosts::spec::ServerName;

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
