//! Per-vhost cache settings as a customer sends them, purge requests, and what the agent reports
//! about a cache.

use serde::{Deserialize, Serialize};

use crate::web::ValidationError;
use crate::web::vhost::is_safe_path_character;

/// The longest TTL accepted (one year).
pub const MAX_TTL_SECONDS: u32 = 365 * 24 * 3600;
/// The largest cache accepted (100 GiB).
pub const MAX_SIZE_MEGABYTES: u32 = 100 * 1024;
/// The most bypass rules of each kind.
pub const MAX_BYPASS_RULES: usize = 32;
/// The most paths one purge request may name.
pub const MAX_PURGE_PATHS: usize = 1000;

/// A vhost's cache settings, as a customer sends them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheSettings {
    /// How long a successful answer stays fresh, in seconds.
    #[serde(alias = "ttl")]
    pub ttl_seconds: u32,
    /// The most disk space the cache may take, in megabytes.
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

/// What a purge removes.
///
/// New variants are only ever appended.
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

#[cfg(test)]
mod tests {
    use super::*;

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
    fn purge_requests_are_checked() {
        let cases = [
            (PurgeRequest::All, true),
            (PurgeRequest::Paths(vec!["/a?b=1".into()]), true),
            (PurgeRequest::Paths(vec![]), false),
            (PurgeRequest::Paths(vec!["a".into()]), false),
            (PurgeRequest::Paths(vec!["/a b".into()]), false),
            (PurgeRequest::Paths(vec!["/a\n".into()]), false),
        ];
        for (request, valid) in cases {
            assert_eq!(request.validate().is_ok(), valid, "{request:?}");
        }
        let json: PurgeRequest = serde_json::from_str(r#"{"paths":["/x"]}"#).unwrap();
        assert_eq!(json, PurgeRequest::Paths(vec!["/x".into()]));
        let settings: CacheSettings = serde_json::from_str(
            r#"{"ttl":60,"max_size_megabytes":10,"bypass":{"cookies":["s"]}}"#,
        )
        .unwrap();
        assert_eq!(settings.ttl_seconds, 60);
    }
}
