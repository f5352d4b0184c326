//! Database and user names and passwords, checked before anything runs, and the quoting of
//! identifiers and string literals for each engine.
//!
//! Rules:
//! - MariaDB database names: `^[a-zA-Z0-9_]{1,64}$`; user names `^[a-zA-Z0-9_]{1,80}$`.
//! - PostgreSQL database and user names: `^[a-z_][a-z0-9_]{0,62}$` (lowercase, so that the
//!   name never depends on quoting; 63 bytes is the server's limit).
//! - Reserved names are refused: the system databases (`mysql`, `information_schema`,
//!   `performance_schema`, `sys`; `postgres`, `template0`, `template1`) and the administrative
//!   users (`root`, `mysql`, `mariadb_sys`; `postgres` and every `pg_*` name).
//! - Passwords: 1 to [`MAX_PASSWORD`] bytes, no control characters (so a password never breaks
//!   a line of the script that carries it).
//!
//! Quoting is applied even to checked names, so the checks and the quoting each suffice alone.

use crate::{DatabaseEngine, Secret};

/// The longest password accepted, in bytes.
pub const MAX_PASSWORD: usize = 1024;

/// Why a name or password was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {what} {text:?}: {reason}")]
pub struct NameError {
    /// What was checked: `database name`, `user name` or `password`.
    pub what: &'static str,
    /// What was sent (empty for a password, which is never repeated).
    pub text: String,
    /// Why it was refused.
    pub reason: String,
}

const MARIADB_RESERVED_DATABASES: [&str; 4] =
    ["mysql", "information_schema", "performance_schema", "sys"];
const MARIADB_RESERVED_USERS: [&str; 3] = ["root", "mysql", "mariadb_sys"];
const POSTGRES_RESERVED_DATABASES: [&str; 3] = ["postgres", "template0", "template1"];
const POSTGRES_RESERVED_USERS: [&str; 1] = ["postgres"];

/// Checks a database name for `engine`.
pub fn check_database(engine: DatabaseEngine, name: &str) -> Result<(), NameError> {
    let refuse = |reason: &str| NameError {
        what: "database name",
        text: name.chars().take(100).collect(),
        reason: reason.to_string(),
    };
    match engine {
        DatabaseEngine::MariaDb => {
            check_mariadb_shape(name, 64).map_err(refuse)?;
            if MARIADB_RESERVED_DATABASES
                .iter()
                .any(|reserved| reserved.eq_ignore_ascii_case(name))
            {
                return Err(refuse("this is a system database"));
            }
        }
        DatabaseEngine::PostgreSql => {
            check_postgres_shape(name).map_err(refuse)?;
            if POSTGRES_RESERVED_DATABASES.contains(&name) {
                return Err(refuse("this is a system database"));
            }
        }
    }
    Ok(())
}

/// Checks a user name for `engine`.
pub fn check_user(engine: DatabaseEngine, name: &str) -> Result<(), NameError> {
    let refuse = |reason: &str| NameError {
        what: "user name",
        text: name.chars().take(100).collect(),
        reason: reason.to_string(),
    };
    match engine {
        DatabaseEngine::MariaDb => {
            check_mariadb_shape(name, 80).map_err(refuse)?;
            if MARIADB_RESERVED_USERS
                .iter()
                .any(|reserved| reserved.eq_ignore_ascii_case(name))
            {
                return Err(refuse("this is an administrative user"));
            }
        }
        DatabaseEngine::PostgreSql => {
            check_postgres_shape(name).map_err(refuse)?;
            if POSTGRES_RESERVED_USERS.contains(&name) || name.starts_with("pg_") {
                return Err(refuse("this is an administrative or reserved user"));
            }
        }
    }
    Ok(())
}

/// Checks a password (the same rules for both engines). The error never repeats it.
pub fn check_password(password: &Secret) -> Result<(), NameError> {
    let refuse = |reason: &str| NameError {
        what: "password",
        text: String::new(),
        reason: reason.to_string(),
    };
    let value = password.expose();
    if value.is_empty() {
        return Err(refuse("the password is empty"));
    }
    if value.len() > MAX_PASSWORD {
        return Err(refuse("the password is longer than 1024 bytes"));
    }
    if value.chars().any(char::is_control) {
        return Err(refuse("the password contains a control character"));
    }
    Ok(())
}

fn check_mariadb_shape(name: &str, longest: usize) -> Result<(), &'static str> {
    if name.is_empty() || name.len() > longest {
        return Err(if longest == 64 {
            "a name has 1 to 64 characters"
        } else {
            "a name has 1 to 80 characters"
        });
    }
    if !name
        .bytes()
        .all(|byte| byte.is_ascii_alphanumeric() || byte == b'_')
    {
        return Err("a name has only letters, digits and '_'");
    }
    Ok(())
}

fn check_postgres_shape(name: &str) -> Result<(), &'static str> {
    if name.is_empty() || name.len() > 63 {
        return Err("a name has 1 to 63 characters");
    }
    if !name
        .bytes()
        .next()
        .is_some_and(|byte| byte.is_ascii_lowercase() || byte == b'_')
    {
        return Err("a name starts with a lowercase letter or '_'");
    }
    if !name
        .bytes()
        .all(|byte| byte.is_ascii_lowercase() || byte.is_ascii_digit() || byte == b'_')
    {
        return Err("a name has only lowercase letters, digits and '_'");
    }
    Ok(())
}

/// A MariaDB identifier in backticks, inner backticks doubled.
pub fn mariadb_identifier(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

/// A MariaDB database name as a GRANT pattern: in a database-level GRANT, `_` and `%` are
/// wildcards, so they are escaped to stand for themselves only.
pub fn mariadb_grant_database(name: &str) -> String {
    mariadb_identifier(
        &name
            .replace('\\', "\\\\")
            .replace('_', "\\_")
            .replace('%', "\\%"),
    )
}

/// A MariaDB string literal. Backslash escapes are used, so the script that contains it must
/// run with `NO_BACKSLASH_ESCAPES` off (the scripts this module writes turn it off first).
pub fn mariadb_string(value: &str) -> String {
    let mut literal = String::with_capacity(value.len() + 2);
    literal.push('\'');
    for character in value.chars() {
        match character {
            '\\' => literal.push_str("\\\\"),
            '\'' => literal.push_str("''"),
            '\0' => literal.push_str("\\0"),
            '\n' => literal.push_str("\\n"),
            '\r' => literal.push_str("\\r"),
            '\u{1a}' => literal.push_str("\\Z"),
            other => literal.push(other),
        }
    }
    literal.push('\'');
    literal
}

/// A PostgreSQL identifier in double quotes, inner double quotes doubled.
pub fn postgres_identifier(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A PostgreSQL escape string literal (`E'...'`): backslashes and quotes escaped, which reads
/// the same whatever `standard_conforming_strings` is.
pub fn postgres_string(value: &str) -> String {
    format!("E'{}'", value.replace('\\', "\\\\").replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    use DatabaseEngine::{MariaDb, PostgreSql};

    #[test]
    fn database_names_table() {
        let cases = [
            (MariaDb, "shop", true),
            (MariaDb, "Shop_2024", true),
            (MariaDb, &"a".repeat(64), true),
            (MariaDb, &"a".repeat(65), false),
            (MariaDb, "", false),
            (MariaDb, "shop-db", false),
            (MariaDb, "shop db", false),
            (MariaDb, "shop`; DROP DATABASE x; --", false),
            (MariaDb, "mysql", false),
            (MariaDb, "MySQL", false),
            (MariaDb, "information_schema", false),
            (MariaDb, "sys", false),
            (PostgreSql, "shop", true),
            (PostgreSql, "_shop_2", true),
            (PostgreSql, &"a".repeat(63), true),
            (PostgreSql, &"a".repeat(64), false),
            (PostgreSql, "Shop", false),
            (PostgreSql, "2shop", false),
            (PostgreSql, "shop\"; DROP", false),
            (PostgreSql, "postgres", false),
            (PostgreSql, "template1", false),
            (PostgreSql, "sh\u{f6}p", false),
        ];
        for (engine, name, valid) in cases {
            assert_eq!(
                check_database(engine, name).is_ok(),
                valid,
                "{engine:?} {name:?}"
            );
        }
    }

    #[test]
    fn user_names_table() {
        let cases = [
            (MariaDb, "shop_user", true),
            (MariaDb, &"u".repeat(80), true),
            (MariaDb, &"u".repeat(81), false),
            (MariaDb, "root", false),
            (MariaDb, "ROOT", false),
            (MariaDb, "user@host", false),
            (MariaDb, "o'brien", false),
            (PostgreSql, "shop_user", true),
            (PostgreSql, "postgres", false),
            (PostgreSql, "pg_monitor", false),
            (PostgreSql, "Shop", false),
        ];
        for (engine, name, valid) in cases {
            assert_eq!(
                check_user(engine, name).is_ok(),
                valid,
                "{engine:?} {name:?}"
            );
        }
    }

    #[test]
    fn passwords_table() {
        let cases = [
            ("correct horse battery staple", true),
            ("it's a \"quote\" \\ and `tick` $x :var", true),
            ("p\u{e4}ssw\u{f6}rd", true),
            ("", false),
            ("line\nbreak", false),
            ("nul\0byte", false),
            ("tab\there", false),
        ];
        for (password, valid) in cases {
            let result = check_password(&Secret::new(password));
            assert_eq!(result.is_ok(), valid, "{password:?}");
            if let Err(error) = result {
                assert!(error.text.is_empty());
            }
        }
        assert!(check_password(&Secret::new("x".repeat(MAX_PASSWORD + 1))).is_err());
    }

    #[test]
    fn quoting_table() {
        assert_eq!(mariadb_identifier("shop"), "`shop`");
        assert_eq!(mariadb_identifier("a`b"), "`a``b`");
        assert_eq!(mariadb_grant_database("shop_db"), "`shop\\_db`");
        assert_eq!(mariadb_string("it's"), "'it''s'");
        assert_eq!(mariadb_string("back\\slash"), "'back\\\\slash'");
        assert_eq!(mariadb_string("\\'; DROP"), "'\\\\''; DROP'");
        assert_eq!(postgres_identifier("shop"), "\"shop\"");
        assert_eq!(postgres_identifier("a\"b"), "\"a\"\"b\"");
        assert_eq!(postgres_string("it's"), "E'it''s'");
        assert_eq!(postgres_string("back\\slash"), "E'back\\\\slash'");
    }
}
