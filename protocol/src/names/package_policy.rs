//! The allow/deny list an administrator sets for the packages customers may install: a pure
//! check the coordinator applies before it sends an operation.
//!
//! Patterns are globs over package names: `*` matches any run of characters (also none), `?`
//! matches exactly one, every other character matches itself. A name is refused when a deny
//! pattern matches it; otherwise it is permitted when the allow list is empty or an allow pattern
//! matches it. Deny always wins.

use super::package::{PackageSpec, parse_all};

/// The longest pattern accepted.
pub const MAX_PATTERN: usize = 128;

/// A set of allow and deny patterns.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PackagePolicy {
    allow: Vec<String>,
    deny: Vec<String>,
}

/// A pattern that cannot be part of a policy.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid package pattern {pattern:?}: only lowercase letters, digits, '+', '-', '.', '*' and '?' are allowed, at most {MAX_PATTERN} characters"
)]
pub struct PatternError {
    /// The pattern.
    pub pattern: String,
}

/// Why a policy refused a package.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The name is not a valid package name at all.
    #[error("{0}")]
    InvalidName(#[from] super::package::NameError),
    /// A deny pattern matches.
    #[error("package {name:?} is denied by the pattern {pattern:?}")]
    Denied {
        /// The package name.
        name: String,
        /// The deny pattern that matched.
        pattern: String,
    },
    /// The allow list is not empty and no allow pattern matches.
    #[error("package {name:?} is not on the list of allowed packages")]
    NotAllowed {
        /// The package name.
        name: String,
    },
}

impl PackagePolicy {
    /// A policy that permits every valid name.
    pub fn permit_all() -> PackagePolicy {
        PackagePolicy::default()
    }

    /// A policy from allow and deny patterns, each checked.
    pub fn new(
        allow: impl IntoIterator<Item = impl Into<String>>,
        deny: impl IntoIterator<Item = impl Into<String>>,
    ) -> Result<PackagePolicy, PatternError> {
        let check = |pattern: String| {
            let valid = !pattern.is_empty()
                && pattern.len() <= MAX_PATTERN
                && pattern.bytes().all(|byte| {
                    byte.is_ascii_lowercase()
                        || byte.is_ascii_digit()
                        || matches!(byte, b'+' | b'-' | b'.' | b'*' | b'?')
                });
            if valid {
                Ok(pattern)
            } else {
                Err(PatternError { pattern })
            }
        };
        Ok(PackagePolicy {
            allow: allow
                .into_iter()
                .map(Into::into)
                .map(check)
                .collect::<Result<_, _>>()?,
            deny: deny
                .into_iter()
                .map(Into::into)
                .map(check)
                .collect::<Result<_, _>>()?,
        })
    }

    /// Whether the policy permits the package `spec` names.
    pub fn permits(&self, spec: &PackageSpec) -> Result<(), Refusal> {
        if let Some(pattern) = self
            .deny
            .iter()
            .find(|pattern| glob_matches(pattern, &spec.name))
        {
            return Err(Refusal::Denied {
                name: spec.name.clone(),
                pattern: pattern.clone(),
            });
        }
        if self.allow.is_empty()
            || self
                .allow
                .iter()
                .any(|pattern| glob_matches(pattern, &spec.name))
        {
            Ok(())
        } else {
            Err(Refusal::NotAllowed {
                name: spec.name.clone(),
            })
        }
    }

    /// Checks every name (validity first, then the patterns); all refusals come back together.
    pub fn check(&self, names: &[String]) -> Result<(), Vec<Refusal>> {
        let specs = parse_all(names)
            .map_err(|errors| errors.into_iter().map(Refusal::from).collect::<Vec<_>>())?;
        let refusals: Vec<Refusal> = specs
            .iter()
            .filter_map(|spec| self.permits(spec).err())
            .collect();
        if refusals.is_empty() {
            Ok(())
        } else {
            Err(refusals)
        }
    }
}

/// Whether `text` matches the glob `pattern` (`*` and `?` only). Linear in the input for the
/// usual patterns; at worst the product of both lengths, which are both bounded.
pub fn glob_matches(pattern: &str, text: &str) -> bool {
    let pattern = pattern.as_bytes();
    let text = text.as_bytes();
    let (mut pattern_index, mut text_index) = (0, 0);
    // Where to resume after the last `*`: the pattern position after it and the text position
    // it currently swallows up to.
    let mut backtrack: Option<(usize, usize)> = None;
    while text_index < text.len() {
        match pattern.get(pattern_index) {
            Some(b'*') => {
                backtrack = Some((pattern_index + 1, text_index));
                pattern_index += 1;
            }
            Some(&byte) if byte == b'?' || byte == text[text_index] => {
                pattern_index += 1;
                text_index += 1;
            }
            _ => match backtrack {
                Some((after_star, swallowed)) => {
                    pattern_index = after_star;
                    text_index = swallowed + 1;
                    backtrack = Some((after_star, swallowed + 1));
                }
                None => return false,
            },
        }
    }
    pattern[pattern_index..].iter().all(|byte| *byte == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_table() {
        let cases = [
            ("hello", "hello", true),
            ("hello", "hello2", false),
            ("hel*", "hello", true),
            ("hel*", "hel", true),
            ("*", "anything", true),
            ("*-dev", "libssl-dev", true),
            ("*-dev", "libssl-dev-doc", false),
            ("lib*-dev", "libssl-dev", true),
            ("lib*-dev", "libdev", false),
            ("php?.?", "php8.2", true),
            ("php?.?", "php8.21", false),
            ("*a*b*c", "xaxbxc", true),
            ("*a*b*c", "xaxcxb", false),
            ("g++", "g++", true),
            ("a.b", "axb", false),
        ];
        for (pattern, text, expected) in cases {
            assert_eq!(glob_matches(pattern, text), expected, "{pattern} ~ {text}");
        }
    }

    #[test]
    fn deny_wins_and_allow_narrows() {
        let policy =
            PackagePolicy::new(["php*", "nginx", "redis-*"], ["php*-dev", "redis-tools"]).unwrap();
        let names = |list: &[&str]| list.iter().map(|name| name.to_string()).collect::<Vec<_>>();
        assert_eq!(
            policy.check(&names(&["php8.2", "nginx", "redis-server"])),
            Ok(())
        );
        let refusals = policy
            .check(&names(&[
                "php8.2-dev",
                "openssh-server",
                "redis-tools",
                "-y",
            ]))
            .unwrap_err();
        // An invalid name is refused before any pattern is looked at.
        assert_eq!(refusals.len(), 1);
        assert!(matches!(refusals[0], Refusal::InvalidName(_)));
        let refusals = policy
            .check(&names(&[
                "php8.2-dev",
                "openssh-server",
                "redis-tools:amd64",
            ]))
            .unwrap_err();
        assert_eq!(
            refusals,
            vec![
                Refusal::Denied {
                    name: "php8.2-dev".to_string(),
                    pattern: "php*-dev".to_string()
                },
                Refusal::NotAllowed {
                    name: "openssh-server".to_string()
                },
                Refusal::Denied {
                    name: "redis-tools".to_string(),
                    pattern: "redis-tools".to_string()
                },
            ]
        );
    }

    #[test]
    fn an_empty_allow_list_permits_all_but_the_denied() {
        let policy = PackagePolicy::new(Vec::<String>::new(), ["telnetd"]).unwrap();
        assert!(policy.check(&["hello".to_string()]).is_ok());
        assert!(policy.check(&["telnetd".to_string()]).is_err());
        assert!(
            PackagePolicy::permit_all()
                .check(&["hello".to_string()])
                .is_ok()
        );
    }

    #[test]
    fn bad_patterns_are_refused() {
        for pattern in ["", "Hello", "a b", "[abc]", "x/y", "a\n"] {
            assert!(
                PackagePolicy::new([pattern], Vec::<String>::new()).is_err(),
                "{pattern:?}"
            );
        }
    }
}
