//! `hostplane-coordinator user ...`: manage users and keys on the machine, without the API
//! (first access, lost keys, forgotten passwords). Works on the store directly, so the
//! coordinator must be stopped (the store refuses a second opener with a clear message).

use std::path::Path;

use crate::api::ApiError;
use crate::api::users::{insert_user, validate_email, validate_username};
use crate::auth::{self, Role};
use crate::clock;
use crate::store::records::UserRecord;
use crate::store::{Store, StoreError, Table};

/// A failure of an administrative command, printed as one line.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Refused(String),
}

impl From<ApiError> for CliError {
    fn from(error: ApiError) -> Self {
        CliError::Refused(error.message)
    }
}

fn find_user(store: &Store, username: &str) -> Result<UserRecord, CliError> {
    let user: Option<UserRecord> = store.read(|read| {
        match read.get::<String>(Table::UsernameIndex, &username.to_ascii_lowercase())? {
            Some(id) => read.get(Table::Users, &id),
            None => Ok(None),
        }
    })?;
    user.ok_or_else(|| CliError::Refused(format!("no user named {username:?}")))
}

/// Creates a user; returns its id.
pub fn create_user(
    data_dir: &Path,
    username: &str,
    password: &str,
    email: Option<String>,
    admin: bool,
) -> Result<String, CliError> {
    validate_username(username)
        .map_err(|reason| CliError::Refused(format!("username {reason}")))?;
    if password.chars().count() < 6 {
        return Err(CliError::Refused(
            "the password must be at least 6 characters".into(),
        ));
    }
    if let Some(email) = &email {
        validate_email(email).map_err(|reason| CliError::Refused(format!("email {reason}")))?;
    }
    let store = Store::open(data_dir)?;
    let hash = auth::hash_password(password)?;
    let role = if admin { Role::Admin } else { Role::Customer };
    let user = store.write(|write| insert_user(write, username, hash, email, role))?;
    Ok(user.id)
}

/// Lists users as lines `id username role email`.
pub fn list_users(data_dir: &Path) -> Result<Vec<String>, CliError> {
    let store = Store::open(data_dir)?;
    let users: Vec<(String, UserRecord)> = store.list(Table::Users)?;
    Ok(users
        .iter()
        .map(|(_, user)| {
            let role = if user.role == Role::Admin {
                "admin"
            } else {
                "customer"
            };
            format!(
                "{} {} {} {}",
                user.id,
                user.username,
                role,
                user.email.as_deref().unwrap_or("-")
            )
        })
        .collect())
}

/// Creates an API key for a user with the user's role; returns the key text.
pub fn create_key(data_dir: &Path, username: &str, name: &str) -> Result<String, CliError> {
    let store = Store::open(data_dir)?;
    let user = find_user(&store, username)?;
    let (text, record) = auth::new_api_key(&user.id, name, user.role, None, None);
    store.put(Table::ApiKeys, &record.id, &record)?;
    Ok(text)
}

/// Sets a new password and ends the user's tickets.
pub fn reset_password(data_dir: &Path, username: &str, password: &str) -> Result<(), CliError> {
    if password.chars().count() < 6 {
        return Err(CliError::Refused(
            "the password must be at least 6 characters".into(),
        ));
    }
    let store = Store::open(data_dir)?;
    let user = find_user(&store, username)?;
    let hash = auth::hash_password(password)?;
    store.write(|write| {
        let mut current: UserRecord = write
            .get(Table::Users, &user.id)?
            .ok_or_else(|| StoreError::Database("the user vanished".into()))?;
        current.password_hash = hash;
        current.updated_at = clock::now_rfc3339();
        write.put(Table::Users, &current.id, &current)?;
        crate::store::tickets::remove_of_user(write, &current.id)?;
        Ok::<_, StoreError>(())
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_and_keys_from_the_command_line() {
        let dir = tempfile::tempdir().unwrap();
        let id = create_user(dir.path(), "carol", "secret1", None, true).unwrap();
        let again = create_user(dir.path(), "Carol", "secret1", None, false).unwrap_err();
        assert!(again.to_string().contains("taken"), "{again}");
        let short = create_user(dir.path(), "dave", "x", None, false).unwrap_err();
        assert!(short.to_string().contains("6 characters"));
        let lines = list_users(dir.path()).unwrap();
        assert_eq!(lines, vec![format!("{id} carol admin -")]);
        let key = create_key(dir.path(), "carol", "rescue").unwrap();
        assert!(key.starts_with("hpk_"));
        assert!(create_key(dir.path(), "nobody", "x").is_err());
        reset_password(dir.path(), "carol", "another-secret").unwrap();
        let store = Store::open(dir.path()).unwrap();
        let user: UserRecord = store.get(Table::Users, &id).unwrap().unwrap();
        assert!(auth::verify_password("another-secret", &user.password_hash));
    }
}
