//! User accounts: the rules for names, email addresses and passwords, and the store changes
//! that keep the username and email indexes and the "at least one admin" rule. The API, the
//! first start and the `user` subcommands all create and change users through here.

use crate::auth;
use crate::clock;
use crate::store::records::{Quota, Role, UserRecord};
use crate::store::{StoreError, Table, Write};

/// Why a user could not be created or changed.
#[derive(Debug, thiserror::Error)]
pub enum UserError {
    #[error("the username {0:?} is taken")]
    UsernameTaken(String),
    #[error("the email {0:?} is in use")]
    EmailInUse(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Checks a username: 2 to 64 of letters, digits, `.`, `_`, `-`, starting with a letter or digit.
pub fn validate_username(name: &str) -> Result<(), String> {
    let valid_characters = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    let starts_well = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric());
    if !(2..=64).contains(&name.len()) {
        return Err("must be 2 to 64 characters".into());
    }
    if !valid_characters || !starts_well {
        return Err("may hold only letters, digits, '.', '_' and '-', and must start with a letter or digit".into());
    }
    Ok(())
}

/// Checks an email address loosely: one `@`, something on each side, no spaces, a dot after `@`.
pub fn validate_email(email: &str) -> Result<(), String> {
    let valid = email.len() <= 254
        && !email.chars().any(|c| c.is_whitespace() || c.is_control())
        && email.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty()
                && domain.contains('.')
                && !domain.contains('@')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
        });
    if valid {
        Ok(())
    } else {
        Err("is not an email address".into())
    }
}

/// Checks a password: 6 characters to 1024 bytes.
pub fn validate_password(password: &str) -> Result<(), String> {
    if password.chars().count() < 6 {
        return Err("must be at least 6 characters".into());
    }
    if password.len() > 1024 {
        return Err("must be at most 1024 bytes".into());
    }
    Ok(())
}

/// Creates a user in one transaction, keeping the username and email indexes unique.
pub fn insert_user(
    write: &mut Write<'_>,
    username: &str,
    password_hash: String,
    email: Option<String>,
    role: Role,
) -> Result<UserRecord, UserError> {
    let username_key = username.to_ascii_lowercase();
    if write
        .get::<String>(Table::UsernameIndex, &username_key)?
        .is_some()
    {
        return Err(UserError::UsernameTaken(username.to_string()));
    }
    if let Some(email) = &email
        && write
            .get::<String>(Table::EmailIndex, &email.to_ascii_lowercase())?
            .is_some()
    {
        return Err(UserError::EmailInUse(email.clone()));
    }
    let now = clock::now_rfc3339();
    let user = UserRecord {
        id: auth::random_id(),
        username: username.to_string(),
        email: email.clone(),
        role,
        password_hash,
        created_at: now.clone(),
        updated_at: now,
        quota: Quota::default(),
    };
    write.put(Table::Users, &user.id, &user)?;
    write.put(Table::UsernameIndex, &username_key, &user.id)?;
    if let Some(email) = &email {
        write.put(Table::EmailIndex, &email.to_ascii_lowercase(), &user.id)?;
    }
    Ok(user)
}

/// How many users are admins.
pub fn count_admins(write: &Write<'_>) -> Result<usize, StoreError> {
    let users: Vec<(String, UserRecord)> = write.list(Table::Users)?;
    Ok(users
        .iter()
        .filter(|(_, user)| user.role == Role::Admin)
        .count())
}

/// Ends every ticket of a user.
pub fn remove_tickets_of(write: &mut Write<'_>, user: &str) -> Result<(), StoreError> {
    crate::store::tickets::remove_of_user(write, user).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames() {
        for good in ["ab", "alice", "a.b-c_d", "x1"] {
            assert!(validate_username(good).is_ok(), "{good}");
        }
        for bad in ["", "a", "-x", "a b", "a;b", "ä1", &"x".repeat(65)] {
            assert!(validate_username(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn emails() {
        for good in ["a@b.c", "first.last@example.org"] {
            assert!(validate_email(good).is_ok(), "{good}");
        }
        for bad in [
            "", "a", "a@b", "@b.c", "a@.c", "a b@c.d", "a@b@c.d", "a@b.c.",
        ] {
            assert!(validate_email(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn passwords() {
        assert!(validate_password("secret").is_ok());
        assert!(validate_password("short").is_err());
        assert!(validate_password(&"x".repeat(1025)).is_err());
    }
}
