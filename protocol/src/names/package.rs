//! Package names as a customer may send them, checked against Debian's rules before anything runs.
//!
//! Accepted form: `name[:architecture][=version]`.
//! - name (Debian policy 5.6.1): lowercase letters, digits, `+`, `-` and `.`; at least two
//!   characters; starts with a letter or digit; at most [`MAX_NAME`] characters.
//! - architecture: lowercase letters, digits and `-`, starting with a letter or digit, at most
//!   [`MAX_ARCHITECTURE`] characters (`amd64`, `i386`, `all`, ...).
//! - version (Debian policy 5.6.12): `[epoch:]upstream[-revision]` made of letters, digits and
//!   `. + ~ - :`, where the epoch is digits and the upstream part starts with a digit; at most
//!   [`MAX_VERSION`] characters.
//!
//! Invariant: a name that passes can never be read as an option by apt or dpkg (it cannot start
//! with `-`) and contains no glob, space, slash or shell character.

/// The longest package name accepted.
pub const MAX_NAME: usize = 128;
/// The longest architecture accepted.
pub const MAX_ARCHITECTURE: usize = 32;
/// The longest version accepted.
pub const MAX_VERSION: usize = 128;

/// A package named by a customer, checked.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PackageSpec {
    /// The package name.
    pub name: String,
    /// An architecture qualifier, as in `libc6:i386`.
    pub architecture: Option<String>,
    /// A version pin, as in `hello=2.10-3`.
    pub version: Option<String>,
}

/// Why a package name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid package name {text:?}: {reason}")]
pub struct NameError {
    /// What was sent (cut to a reasonable length).
    pub text: String,
    /// Why it was refused, one sentence.
    pub reason: String,
}

impl PackageSpec {
    /// Checks `text` against the rules in the module documentation.
    pub fn parse(text: &str) -> Result<PackageSpec, NameError> {
        let refuse = |reason: &str| NameError {
            text: text.chars().take(MAX_NAME + MAX_VERSION).collect(),
            reason: reason.to_string(),
        };
        let (rest, version) = match text.split_once('=') {
            Some((rest, version)) => (rest, Some(version)),
            None => (text, None),
        };
        let (name, architecture) = match rest.split_once(':') {
            Some((name, architecture)) => (name, Some(architecture)),
            None => (rest, None),
        };
        check_name(name).map_err(&refuse)?;
        if let Some(architecture) = architecture {
            check_architecture(architecture).map_err(&refuse)?;
        }
        if let Some(version) = version {
            check_version(version).map_err(&refuse)?;
        }
        Ok(PackageSpec {
            name: name.to_string(),
            architecture: architecture.map(str::to_string),
            version: version.map(str::to_string),
        })
    }

    /// The form apt-get takes: `name[:architecture][=version]`.
    pub fn apt_argument(&self) -> String {
        let mut argument = self.query_argument();
        if let Some(version) = &self.version {
            argument.push('=');
            argument.push_str(version);
        }
        argument
    }

    /// The form dpkg-query takes: `name[:architecture]`.
    pub fn query_argument(&self) -> String {
        match &self.architecture {
            Some(architecture) => format!("{}:{}", self.name, architecture),
            None => self.name.clone(),
        }
    }
}

/// Parses every name; all refusals are reported together, in order.
pub fn parse_all(texts: &[String]) -> Result<Vec<PackageSpec>, Vec<NameError>> {
    let mut specs = Vec::with_capacity(texts.len());
    let mut errors = Vec::new();
    for text in texts {
        match PackageSpec::parse(text) {
            Ok(spec) => specs.push(spec),
            Err(error) => errors.push(error),
        }
    }
    if errors.is_empty() {
        Ok(specs)
    } else {
        Err(errors)
    }
}

fn check_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("the name is empty");
    }
    if name.len() < 2 {
        return Err("a package name has at least two characters");
    }
    if name.len() > MAX_NAME {
        return Err("the name is too long");
    }
    if !name
        .bytes()
        .next()
        .is_some_and(|byte| byte.is_ascii_lowercase() || byte.is_ascii_digit())
    {
        return Err("a package name starts with a lowercase letter or a digit");
    }
    if !name.bytes().all(|byte| {
        byte.is_ascii_lowercase() || byte.is_ascii_digit() || matches!(byte, b'+' | b'-' | b'.')
    }) {
        return Err("a package name has only lowercase letters, digits, '+', '-' and '.'");
    }
    Ok(())
}

fn check_architecture(architecture: &str) -> Result<(), &'static str> {
    if architecture.is_empty() || architecture.len() > MAX_ARCHITECTURE {
        return Err("the architecture is empty or too long");
    }
    if !architecture
        .bytes()
        .next()
        .is_some_and(|byte| byte.is_ascii_lowercase() || byte.is_ascii_digit())
        || !architecture
            .bytes()
            .all(|byte| byte.is_ascii_lowercase() || byte.is_ascii_digit() || byte == b'-')
    {
        return Err("an architecture has only lowercase letters, digits and '-'");
    }
    Ok(())
}

fn check_version(version: &str) -> Result<(), &'static str> {
    if version.is_empty() || version.len() > MAX_VERSION {
        return Err("the version is empty or too long");
    }
    if !version.bytes().all(|byte| {
        byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'+' | b'~' | b'-' | b':')
    }) {
        return Err("a version has only letters, digits and '.', '+', '~', '-', ':'");
    }
    let upstream = match version.split_once(':') {
        Some((epoch, upstream)) => {
            if epoch.is_empty() || !epoch.bytes().all(|byte| byte.is_ascii_digit()) {
                return Err("a version's epoch (before ':') is a number");
            }
            upstream
        }
        None => version,
    };
    if !upstream
        .bytes()
        .next()
        .is_some_and(|byte| byte.is_ascii_digit())
    {
        return Err("a version starts with a digit (after the epoch)");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str, architecture: Option<&str>, version: Option<&str>) -> PackageSpec {
        PackageSpec {
            name: name.to_string(),
            architecture: architecture.map(str::to_string),
            version: version.map(str::to_string),
        }
    }

    #[test]
    fn accepted_names() {
        let cases = [
            ("hello", spec("hello", None, None)),
            ("g++", spec("g++", None, None)),
            ("libstdc++6", spec("libstdc++6", None, None)),
            ("python3.11-venv", spec("python3.11-venv", None, None)),
            ("0ad", spec("0ad", None, None)),
            ("libc6:i386", spec("libc6", Some("i386"), None)),
            ("hello=2.10-3", spec("hello", None, Some("2.10-3"))),
            (
                "nginx:amd64=1:1.22.1-9+deb12u1",
                spec("nginx", Some("amd64"), Some("1:1.22.1-9+deb12u1")),
            ),
            ("foo=1.0~rc1", spec("foo", None, Some("1.0~rc1"))),
        ];
        for (text, expected) in cases {
            assert_eq!(PackageSpec::parse(text), Ok(expected.clone()), "{text}");
        }
    }

    #[test]
    fn refused_names() {
        let cases = [
            "",
            "a",
            "-y",
            "--force-yes",
            "-oAPT::Get::AllowUnauthenticated=1",
            "+plus",
            ".hidden",
            "Hello",
            "hel lo",
            "hello;rm",
            "hello*",
            "hel?o",
            "hello/stable",
            "../hello",
            "hello\n",
            "héllo",
            "hello:",
            "hello:AMD64",
            "hello:-x",
            "hello=",
            "hello=abc",
            "hello=x:1.0",
            "hello=:1.0",
            "hello=1.0 2",
            "hello=1.0;ls",
            "hello:amd64:i386",
        ];
        for text in cases {
            assert!(PackageSpec::parse(text).is_err(), "{text:?} was accepted");
        }
        let long = "a".repeat(MAX_NAME + 1);
        assert!(PackageSpec::parse(&long).is_err());
    }

    #[test]
    fn arguments_for_apt_and_dpkg_query() {
        let pinned = PackageSpec::parse("libc6:i386=2.36-9").unwrap();
        assert_eq!(pinned.apt_argument(), "libc6:i386=2.36-9");
        assert_eq!(pinned.query_argument(), "libc6:i386");
        let plain = PackageSpec::parse("hello").unwrap();
        assert_eq!(plain.apt_argument(), "hello");
    }

    #[test]
    fn every_refusal_is_reported() {
        let texts = vec!["hello".to_string(), "-y".to_string(), "X".to_string()];
        let errors = parse_all(&texts).unwrap_err();
        assert_eq!(errors.len(), 2);
        assert_eq!(errors[0].text, "-y");
        assert_eq!(errors[1].text, "X");
    }
}
