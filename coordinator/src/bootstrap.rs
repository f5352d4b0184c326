//! First start: create the admin account and its API key, printed once and written to
//! `<data-dir>/admin.key` (0600, the key alone on one line).

use std::path::Path;

use crate::auth::{self, AuthError};
use crate::store::records::{Role, UserRecord};
use crate::store::{Store, StoreError, Table};
use crate::users::{UserError, insert_user};

/// Why the first admin could not be made.
#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    #[error(transparent)]
    User(#[from] UserError),
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot write the admin key file: {0}")]
    KeyFile(std::io::Error),
}

/// The name of the account made on first start.
pub const ADMIN_USERNAME: &str = "admin";

/// Creates the first admin and a key when the store has no user yet; returns the key text
/// then, `None` on every later start.
pub fn ensure_admin(store: &Store, data_dir: &Path) -> Result<Option<String>, BootstrapError> {
    let existing: Vec<(String, UserRecord)> =
        store.read(|read| read.range(Table::Users, "", Some(1)))?;
    if !existing.is_empty() {
        return Ok(None);
    }
    // The password is random and unknown: the admin logs in with the key, or resets it with
    // `hostplane-coordinator user reset-password`.
    let hash = auth::hash_password(&auth::random_token(24))?;
    let key = store.write(|write| {
        let user = insert_user(write, ADMIN_USERNAME, hash, None, Role::Admin)?;
        let (text, record) =
            auth::new_api_key(&user.id, "first admin key", Role::Admin, None, None);
        write.put(Table::ApiKeys, &record.id, &record)?;
        Ok::<_, BootstrapError>(text)
    })?;
    write_secret_file(&data_dir.join("admin.key"), &key).map_err(BootstrapError::KeyFile)?;
    Ok(Some(key))
}

/// Writes a secret alone on one line to a file readable only by its owner.
pub fn write_secret_file(path: &Path, secret: &str) -> std::io::Result<()> {
    shell::write_atomically(path, format!("{secret}\n").as_bytes(), Some(0o600))
}
