//! Secrets at rest: the records of the tables that hold secrets are sealed with
//! XChaCha20-Poly1305 under a key kept apart from the store file.
//!
//! Every record of a sealed table ([`Table::is_sealed`]) is sealed when it is written and opened
//! when it is read, each with its own random 24-byte nonce and bound to its table and key (the
//! AEAD's associated data), so a sealed record copied under another key or into another table
//! does not open. Nothing here is cryptography of its own: it is the `chacha20poly1305` crate's
//! AEAD, a random key and random nonces.
//!
//! The key is 32 random bytes, written as 64 hex digits on one line, in a file only the service
//! reads: by default `<data_dir>/secrets.key`, made at the first start with mode 0600, or a path
//! from the `secrets_key_file` setting (a systemd credential, for one). The store keeps a sealed
//! check value (`Meta` key `secrets_key`): once it exists, a missing or different key is a
//! startup error, never a reason to make a new key.

use std::path::{Path, PathBuf};

use chacha20poly1305::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use redb::{ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use super::{Store, StoreError, Table};

/// The file name of the key in the data directory when no other path is set.
pub const KEY_FILE: &str = "secrets.key";
/// The name of the key as a systemd credential (`LoadCredential=hostplane-secrets-key:...`).
pub const CREDENTIAL_NAME: &str = "hostplane-secrets-key";
/// The `Meta` key of the [`KeyCheckRecord`].
pub const CHECK_META_KEY: &str = "secrets_key";
/// What the check value seals.
const CHECK_TEXT: &[u8] = b"hostplane secrets key check";
/// What the check value is bound to.
const CHECK_CONTEXT: &[u8] = b"hostplane/secrets_key_check";
/// The first bytes of every sealed value: a zero byte (no JSON document starts with one), a tag
/// and the format version.
const MAGIC: &[u8; 4] = b"\0hs1";
const NONCE_BYTES: usize = 24;
const KEY_BYTES: usize = 32;

/// Why the secrets key could not be had, or a sealed value not be opened.
#[derive(Debug, thiserror::Error)]
pub enum SealingError {
    #[error(
        "the store holds sealed secrets, but their key {path} is missing: restore the key file \
         (a new key cannot open them)"
    )]
    MissingKey { path: PathBuf },
    #[error("the key {path} is not the key this store's secrets were sealed with")]
    WrongKey { path: PathBuf },
    #[error("cannot read the secrets key {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the secrets key {path} is not 64 hex digits (32 bytes) on one line")]
    Malformed { path: PathBuf },
    #[error(
        "the secrets key {path} can be read or changed by other users (mode {mode:o}); \
         make it readable only by the service (chmod 600)"
    )]
    Exposed { path: PathBuf, mode: u32 },
    #[error("cannot write the secrets key {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the store was opened without its secrets key, so {table} cannot be read or written")]
    NoKey { table: &'static str },
    #[error("a sealed record in {table} under {key:?} does not open (tampered, or another key)")]
    Refused { table: &'static str, key: String },
    #[error("a value could not be sealed")]
    Seal,
}

/// Seals and opens values under one key. Its `Debug` output never shows the key.
pub struct Sealer {
    cipher: XChaCha20Poly1305,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("Sealer(<redacted>)")
    }
}

/// The sealed check value that tells whether a key is the store's key (table `Meta`, key
/// [`CHECK_META_KEY`]).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct KeyCheckRecord {
    /// [`CHECK_TEXT`] sealed under the key, hex.
    pub check: String,
    pub created_at: String,
}

impl Sealer {
    /// A sealer with the given key.
    pub fn new(key: &[u8; KEY_BYTES]) -> Sealer {
        Sealer {
            cipher: XChaCha20Poly1305::new(key.into()),
        }
    }

    /// A new random key.
    pub fn generate_key() -> [u8; KEY_BYTES] {
        XChaCha20Poly1305::generate_key(&mut OsRng).into()
    }

    /// `plain` sealed and bound to `context`: the format tag, a random nonce, then the
    /// ciphertext with its tag.
    pub fn seal(&self, context: &[u8], plain: &[u8]) -> Result<Vec<u8>, SealingError> {
        let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
        let ciphertext = self
            .cipher
            .encrypt(
                &nonce,
                Payload {
                    msg: plain,
                    aad: context,
                },
            )
            .map_err(|_| SealingError::Seal)?;
        let mut sealed = Vec::with_capacity(MAGIC.len() + NONCE_BYTES + ciphertext.len());
        sealed.extend_from_slice(MAGIC);
        sealed.extend_from_slice(&nonce);
        sealed.extend_from_slice(&ciphertext);
        Ok(sealed)
    }

    /// The plain value of what [`Sealer::seal`] made with the same key and `context`; `None`
    /// for anything else (another key or context, a changed byte, not a sealed value).
    pub fn open(&self, context: &[u8], sealed: &[u8]) -> Option<Vec<u8>> {
        let rest = sealed.strip_prefix(MAGIC)?;
        if rest.len() < NONCE_BYTES {
            return None;
        }
        let (nonce, ciphertext) = rest.split_at(NONCE_BYTES);
        self.cipher
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad: context,
                },
            )
            .ok()
    }

    /// True when `bytes` are in the sealed format (says nothing of whether they open).
    pub fn is_sealed(bytes: &[u8]) -> bool {
        bytes.starts_with(MAGIC)
    }
}

/// What a record of `table` under `key` is bound to.
fn record_context(table: Table, key: &str) -> Vec<u8> {
    format!("hostplane/{}/{key}", table.name()).into_bytes()
}

/// A record's bytes as stored: sealed when its table is a sealed one.
pub(super) fn seal_record(
    sealer: Option<&Sealer>,
    table: Table,
    key: &str,
    plain: Vec<u8>,
) -> Result<Vec<u8>, SealingError> {
    if !table.is_sealed() {
        return Ok(plain);
    }
    let sealer = sealer.ok_or(SealingError::NoKey {
        table: table.name(),
    })?;
    sealer.seal(&record_context(table, key), &plain)
}

/// A record's plain bytes: opened when its table is a sealed one. A record of a sealed table
/// that is not sealed is refused like a tampered one.
pub(super) fn open_record<'a>(
    sealer: Option<&Sealer>,
    table: Table,
    key: &str,
    stored: &'a [u8],
) -> Result<std::borrow::Cow<'a, [u8]>, SealingError> {
    if !table.is_sealed() {
        return Ok(std::borrow::Cow::Borrowed(stored));
    }
    let sealer = sealer.ok_or(SealingError::NoKey {
        table: table.name(),
    })?;
    sealer
        .open(&record_context(table, key), stored)
        .map(std::borrow::Cow::Owned)
        .ok_or_else(|| SealingError::Refused {
            table: table.name(),
            key: key.to_string(),
        })
}

/// Reads the key file: 64 hex digits, surrounding blanks ignored. `None` when it does not exist.
fn read_key(path: &Path) -> Result<Option<[u8; KEY_BYTES]>, SealingError> {
    use std::os::unix::fs::MetadataExt;
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(SealingError::Read {
                path: path.to_path_buf(),
                source,
            });
        }
    };
    let mode = std::fs::metadata(path)
        .map_err(|source| SealingError::Read {
            path: path.to_path_buf(),
            source,
        })?
        .mode();
    if mode & 0o007 != 0 || mode & 0o020 != 0 {
        return Err(SealingError::Exposed {
            path: path.to_path_buf(),
            mode: mode & 0o777,
        });
    }
    let bytes = hex::decode(text.trim()).map_err(|_| SealingError::Malformed {
        path: path.to_path_buf(),
    })?;
    let key: [u8; KEY_BYTES] = bytes.try_into().map_err(|_| SealingError::Malformed {
        path: path.to_path_buf(),
    })?;
    Ok(Some(key))
}

/// Writes a new key file, readable only by its owner; refuses to replace an existing file.
fn write_key(path: &Path, key: &[u8; KEY_BYTES]) -> Result<(), SealingError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let error = |source| SealingError::Write {
        path: path.to_path_buf(),
        source,
    };
    let temporary = path.with_extension("tmp");
    let _ = std::fs::remove_file(&temporary);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&temporary)
        .map_err(error)?;
    writeln!(file, "{}", hex::encode(key)).map_err(error)?;
    file.sync_all().map_err(error)?;
    std::fs::hard_link(&temporary, path).map_err(error)?;
    std::fs::remove_file(&temporary).map_err(error)?;
    if let Some(parent) = path.parent()
        && let Ok(directory) = std::fs::File::open(parent)
    {
        let _ = directory.sync_all();
    }
    Ok(())
}

/// The sealer for `store`, from the key at `key_path`: checked against the store's check value,
/// or made (with the check value) when the store has none and no key file exists yet. Records
/// of sealed tables written in the clear by an older version are sealed on the way.
pub(super) fn attach(store: &Store, key_path: &Path) -> Result<Sealer, StoreError> {
    let check: Option<KeyCheckRecord> = store.get(Table::Meta, CHECK_META_KEY)?;
    let key = match (read_key(key_path)?, &check) {
        (Some(key), _) => key,
        (None, Some(_)) => {
            return Err(SealingError::MissingKey {
                path: key_path.to_path_buf(),
            }
            .into());
        }
        (None, None) => {
            let key = Sealer::generate_key();
            write_key(key_path, &key)?;
            tracing::info!(path = %key_path.display(), "made the key that seals the store's secrets");
            key
        }
    };
    let sealer = Sealer::new(&key);
    match check {
        Some(check) => {
            let opened = hex::decode(&check.check)
                .ok()
                .and_then(|sealed| sealer.open(CHECK_CONTEXT, &sealed));
            if opened.as_deref() != Some(CHECK_TEXT) {
                return Err(SealingError::WrongKey {
                    path: key_path.to_path_buf(),
                }
                .into());
            }
        }
        None => {
            let record = KeyCheckRecord {
                check: hex::encode(sealer.seal(CHECK_CONTEXT, CHECK_TEXT)?),
                created_at: crate::clock::now_rfc3339(),
            };
            store.put(Table::Meta, CHECK_META_KEY, &record)?;
            // The first key attached: records written before sealing existed are sealed now.
            // Once the check exists, nothing writes a sealed table without the key, so later
            // starts need not read every sealed record again.
            seal_clear_records(store, &sealer)?;
        }
    }
    Ok(sealer)
}

/// Seals every record of a sealed table that is still in the clear (written before the table
/// was sealed).
fn seal_clear_records(store: &Store, sealer: &Sealer) -> Result<(), StoreError> {
    let transaction = store.database.begin_write()?;
    let mut changed = 0usize;
    for table in Table::ALL.iter().filter(|table| table.is_sealed()) {
        let definition: TableDefinition<'static, &'static str, &'static [u8]> =
            super::definition(*table);
        let mut opened = transaction.open_table(definition)?;
        let mut clear = Vec::new();
        for entry in opened.iter()? {
            let (key, value) = entry?;
            if !Sealer::is_sealed(value.value()) {
                clear.push((key.value().to_string(), value.value().to_vec()));
            }
        }
        for (key, plain) in clear {
            let sealed = sealer.seal(&record_context(*table, &key), &plain)?;
            opened.insert(key.as_str(), sealed.as_slice())?;
            changed += 1;
        }
    }
    transaction.commit()?;
    if changed > 0 {
        tracing::info!(
            records = changed,
            "sealed secrets an older version stored in the clear"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_value_opens_with_its_key_and_context_only() {
        let sealer = Sealer::new(&Sealer::generate_key());
        let sealed = sealer.seal(b"table/key", b"hunter2").unwrap();
        assert_eq!(sealer.open(b"table/key", &sealed).unwrap(), b"hunter2");
        assert!(!sealed.windows(7).any(|window| window == b"hunter2"));
        assert_eq!(
            sealer.open(b"table/other", &sealed),
            None,
            "another context"
        );
        let other = Sealer::new(&Sealer::generate_key());
        assert_eq!(other.open(b"table/key", &sealed), None, "another key");
    }

    #[test]
    fn a_changed_byte_anywhere_is_refused() {
        let sealer = Sealer::new(&Sealer::generate_key());
        let sealed = sealer.seal(b"context", b"a private key").unwrap();
        for index in MAGIC.len()..sealed.len() {
            let mut tampered = sealed.clone();
            tampered[index] ^= 0x01;
            assert_eq!(sealer.open(b"context", &tampered), None, "byte {index}");
        }
        assert_eq!(sealer.open(b"context", &sealed[..sealed.len() - 1]), None);
        assert_eq!(sealer.open(b"context", b"\0hs1short"), None);
        assert_eq!(sealer.open(b"context", b"{\"plain\":1}"), None);
    }

    #[test]
    fn every_sealing_has_its_own_nonce() {
        let sealer = Sealer::new(&Sealer::generate_key());
        let mut nonces = std::collections::HashSet::new();
        let mut ciphertexts = std::collections::HashSet::new();
        for _ in 0..1000 {
            let sealed = sealer.seal(b"context", b"the same secret").unwrap();
            let nonce = sealed[MAGIC.len()..MAGIC.len() + NONCE_BYTES].to_vec();
            assert!(nonces.insert(nonce), "a nonce came twice");
            assert!(ciphertexts.insert(sealed[MAGIC.len() + NONCE_BYTES..].to_vec()));
        }
    }

    #[test]
    fn the_debug_output_hides_the_key() {
        let key = [0xab; KEY_BYTES];
        let shown = format!("{:?}", Sealer::new(&key));
        assert!(!shown.to_lowercase().contains("abab"), "{shown}");
    }

    fn mode(path: &Path) -> u32 {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(path).unwrap().mode() & 0o777
    }

    #[test]
    fn the_first_start_makes_a_private_key_and_later_starts_need_it() {
        let dir = tempfile::tempdir().unwrap();
        let key_path = dir.path().join(KEY_FILE);
        {
            let store = Store::open_sealed(dir.path(), &key_path).unwrap();
            store
                .put(Table::ProxmoxNodes, "pve1", &"token secret")
                .unwrap();
        }
        assert_eq!(mode(&key_path), 0o600);
        let kept = std::fs::read_to_string(&key_path).unwrap();
        let store = Store::open_sealed(dir.path(), &key_path).unwrap();
        assert_eq!(
            store.get::<String>(Table::ProxmoxNodes, "pve1").unwrap(),
            Some("token secret".into())
        );
        drop(store);
        assert_eq!(std::fs::read_to_string(&key_path).unwrap(), kept);

        std::fs::rename(&key_path, dir.path().join("elsewhere")).unwrap();
        let error = Store::open_sealed(dir.path(), &key_path).unwrap_err();
        assert!(
            matches!(error, StoreError::Sealing(SealingError::MissingKey { .. })),
            "{error}"
        );
        assert!(!key_path.exists(), "no new key is made");

        write_key(&key_path, &Sealer::generate_key()).unwrap();
        let error = Store::open_sealed(dir.path(), &key_path).unwrap_err();
        assert!(
            matches!(error, StoreError::Sealing(SealingError::WrongKey { .. })),
            "{error}"
        );
    }

    #[test]
    fn a_key_others_can_read_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let key_path = dir.path().join(KEY_FILE);
        write_key(&key_path, &Sealer::generate_key()).unwrap();
        std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let error = Store::open_sealed(dir.path(), &key_path).unwrap_err();
        assert!(
            matches!(error, StoreError::Sealing(SealingError::Exposed { .. })),
            "{error}"
        );
    }

    #[test]
    fn records_of_sealed_tables_are_never_in_the_clear_and_do_not_move() {
        let dir = tempfile::tempdir().unwrap();
        let key_path = dir.path().join(KEY_FILE);
        let store = Store::open_sealed(dir.path(), &key_path).unwrap();
        store
            .put(Table::ProxmoxNodes, "pve1", &"first-node-secret")
            .unwrap();
        store
            .put(Table::ProxmoxNodes, "pve2", &"second-node-secret")
            .unwrap();
        // A sealed record moved under another key does not open.
        let transaction = store.database.begin_write().unwrap();
        {
            let mut table = transaction
                .open_table(super::super::definition(Table::ProxmoxNodes))
                .unwrap();
            let first = table.get("pve1").unwrap().unwrap().value().to_vec();
            table.insert("pve2", first.as_slice()).unwrap();
        }
        transaction.commit().unwrap();
        let error = store
            .get::<String>(Table::ProxmoxNodes, "pve2")
            .unwrap_err();
        assert!(
            matches!(error, StoreError::Sealing(SealingError::Refused { .. })),
            "{error}"
        );
        drop(store);
        let bytes = std::fs::read(dir.path().join("hostplane.redb")).unwrap();
        for secret in ["first-node-secret", "second-node-secret"] {
            assert!(
                !bytes
                    .windows(secret.len())
                    .any(|window| window == secret.as_bytes()),
                "{secret} is in the store file"
            );
        }
        // Without the key the table cannot be read at all.
        let store = Store::open(dir.path()).unwrap();
        let error = store
            .get::<String>(Table::ProxmoxNodes, "pve1")
            .unwrap_err();
        assert!(
            matches!(error, StoreError::Sealing(SealingError::NoKey { .. })),
            "{error}"
        );
    }

    #[test]
    fn records_an_older_version_wrote_in_the_clear_are_sealed_at_open() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path()).unwrap();
            let transaction = store.database.begin_write().unwrap();
            {
                let mut table = transaction
                    .open_table(super::super::definition(Table::ProxmoxNodes))
                    .unwrap();
                table
                    .insert("pve1", b"\"old-clear-secret\"".as_slice())
                    .unwrap();
            }
            transaction.commit().unwrap();
        }
        let key_path = dir.path().join(KEY_FILE);
        let store = Store::open_sealed(dir.path(), &key_path).unwrap();
        assert_eq!(
            store.get::<String>(Table::ProxmoxNodes, "pve1").unwrap(),
            Some("old-clear-secret".into())
        );
    }
}
