//! The coordinator's state in redb: the only module that opens transactions.
//!
//! Values are JSON documents of the record types in [`records`]; tables have versioned names
//! (see [`tables`]) so a change of layout gets a new table and a migration on open, never a
//! silent misread. Callers use the typed helpers here or compose several steps atomically in
//! [`Store::write`] / [`Store::read`], whose closures receive wrappers, not raw redb handles.

pub mod records;
pub mod tables;

use std::path::Path;
use std::sync::Arc;

use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use serde::Serialize;
use serde::de::DeserializeOwned;

pub use tables::Table;

/// A failure of the store. It is never shown to API callers in detail.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the store at {path} is used by another process (is a coordinator already running?)")]
    Locked { path: String },
    #[error("cannot open the store at {path}: {message}")]
    Open { path: String, message: String },
    #[error("store failure: {0}")]
    Database(String),
    #[error("a stored record in {table} under {key:?} is unreadable: {message}")]
    Corrupt {
        table: &'static str,
        key: String,
        message: String,
    },
    #[error("cannot encode a record for {table}: {message}")]
    Encode {
        table: &'static str,
        message: String,
    },
}

macro_rules! database_error {
    ($($type:ty),*) => {$(
        impl From<$type> for StoreError {
            fn from(error: $type) -> Self {
                StoreError::Database(error.to_string())
            }
        }
    )*};
}
database_error!(
    redb::Error,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

/// The open store. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    database: Arc<Database>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("Store")
    }
}

fn decode<T: DeserializeOwned>(table: Table, key: &str, bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|error| StoreError::Corrupt {
        table: table.name(),
        key: key.to_string(),
        message: error.to_string(),
    })
}

fn encode<T: Serialize>(table: Table, value: &T) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(value).map_err(|error| StoreError::Encode {
        table: table.name(),
        message: error.to_string(),
    })
}

/// Runs blocking work, moving the current worker's other tasks to another thread first when
/// running on a multi-threaded tokio runtime.
fn blocking<R>(work: impl FnOnce() -> R) -> R {
    match tokio::runtime::Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(work)
        }
        _ => work(),
    }
}

fn definition(table: Table) -> TableDefinition<'static, &'static str, &'static [u8]> {
    TableDefinition::new(table.name())
}

impl Store {
    /// Opens or creates `<dir>/hostplane.redb` and makes sure every table exists.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        let path = dir.join("hostplane.redb");
        let shown = path.display().to_string();
        let database = Database::create(&path).map_err(|error| match error {
            redb::DatabaseError::DatabaseAlreadyOpen => StoreError::Locked {
                path: shown.clone(),
            },
            other => StoreError::Open {
                path: shown.clone(),
                message: other.to_string(),
            },
        })?;
        let transaction = database.begin_write()?;
        for table in Table::ALL {
            transaction.open_table(definition(*table))?;
        }
        transaction.commit()?;
        Ok(Store {
            database: Arc::new(database),
        })
    }

    /// Runs `work` in one write transaction; it commits only if `work` returns `Ok`.
    ///
    /// Writes wait for the single writer and for the disk; on a multi-threaded runtime the
    /// worker thread hands its other tasks away meanwhile, so a slow commit never stalls
    /// request handling.
    pub fn write<R, E: From<StoreError>>(
        &self,
        work: impl FnOnce(&mut Write<'_>) -> Result<R, E>,
    ) -> Result<R, E> {
        blocking(|| self.write_now(work))
    }

    fn write_now<R, E: From<StoreError>>(
        &self,
        work: impl FnOnce(&mut Write<'_>) -> Result<R, E>,
    ) -> Result<R, E> {
        let transaction = self.database.begin_write().map_err(StoreError::from)?;
        let mut write = Write {
            transaction: &transaction,
        };
        let result = work(&mut write)?;
        transaction.commit().map_err(StoreError::from)?;
        Ok(result)
    }

    /// Like [`Store::write`], but the commit is not flushed to disk by itself: it becomes
    /// durable with the next ordinary write. For records whose loss in a crash is harmless
    /// (progress, log lines), so streaming them costs no fsync per line.
    pub fn write_buffered<R, E: From<StoreError>>(
        &self,
        work: impl FnOnce(&mut Write<'_>) -> Result<R, E>,
    ) -> Result<R, E> {
        blocking(|| self.write_buffered_now(work))
    }

    fn write_buffered_now<R, E: From<StoreError>>(
        &self,
        work: impl FnOnce(&mut Write<'_>) -> Result<R, E>,
    ) -> Result<R, E> {
        let mut transaction = self.database.begin_write().map_err(StoreError::from)?;
        transaction
            .set_durability(redb::Durability::None)
            .map_err(|error| StoreError::Database(error.to_string()))?;
        let mut write = Write {
            transaction: &transaction,
        };
        let result = work(&mut write)?;
        transaction.commit().map_err(StoreError::from)?;
        Ok(result)
    }

    /// Runs `work` against one consistent snapshot.
    pub fn read<R, E: From<StoreError>>(
        &self,
        work: impl FnOnce(&Read) -> Result<R, E>,
    ) -> Result<R, E> {
        let transaction = self.database.begin_read().map_err(StoreError::from)?;
        work(&Read { transaction })
    }

    /// One record.
    pub fn get<T: DeserializeOwned>(
        &self,
        table: Table,
        key: &str,
    ) -> Result<Option<T>, StoreError> {
        self.read(|read| read.get(table, key))
    }

    /// Every record of a table in key order.
    pub fn list<T: DeserializeOwned>(&self, table: Table) -> Result<Vec<(String, T)>, StoreError> {
        self.read(|read| read.list(table))
    }

    /// Writes one record.
    pub fn put<T: Serialize>(&self, table: Table, key: &str, value: &T) -> Result<(), StoreError> {
        self.write(|write| write.put(table, key, value))
    }

    /// Removes one record; true if it was there.
    pub fn delete(&self, table: Table, key: &str) -> Result<bool, StoreError> {
        self.write(|write| write.delete(table, key))
    }

    /// True when the database answers a read.
    pub fn is_healthy(&self) -> bool {
        self.database.begin_read().is_ok()
    }
}

/// A read snapshot handed to [`Store::read`] closures.
pub struct Read {
    transaction: redb::ReadTransaction,
}

impl Read {
    pub fn get<T: DeserializeOwned>(
        &self,
        table: Table,
        key: &str,
    ) -> Result<Option<T>, StoreError> {
        let opened = self.transaction.open_table(definition(table))?;
        match opened.get(key)? {
            Some(value) => Ok(Some(decode(table, key, value.value())?)),
            None => Ok(None),
        }
    }

    pub fn list<T: DeserializeOwned>(&self, table: Table) -> Result<Vec<(String, T)>, StoreError> {
        self.range(table, "", None)
    }

    /// Records whose keys start with `prefix`, in key order, at most `limit` of them.
    pub fn range<T: DeserializeOwned>(
        &self,
        table: Table,
        prefix: &str,
        limit: Option<usize>,
    ) -> Result<Vec<(String, T)>, StoreError> {
        let opened = self.transaction.open_table(definition(table))?;
        let mut out = Vec::new();
        for entry in opened.range(prefix..)? {
            let (key, value) = entry?;
            let key = key.value();
            if !key.starts_with(prefix) || limit.is_some_and(|limit| out.len() >= limit) {
                break;
            }
            out.push((key.to_string(), decode(table, key, value.value())?));
        }
        Ok(out)
    }

    pub fn count(&self, table: Table) -> Result<u64, StoreError> {
        let opened = self.transaction.open_table(definition(table))?;
        Ok(opened.len()?)
    }
}

/// A write transaction handed to [`Store::write`] closures.
pub struct Write<'a> {
    transaction: &'a redb::WriteTransaction,
}

impl Write<'_> {
    pub fn get<T: DeserializeOwned>(
        &self,
        table: Table,
        key: &str,
    ) -> Result<Option<T>, StoreError> {
        let opened = self.transaction.open_table(definition(table))?;
        let value = opened.get(key)?;
        match value {
            Some(value) => Ok(Some(decode(table, key, value.value())?)),
            None => Ok(None),
        }
    }

    pub fn list<T: DeserializeOwned>(&self, table: Table) -> Result<Vec<(String, T)>, StoreError> {
        let opened = self.transaction.open_table(definition(table))?;
        let mut out = Vec::new();
        for entry in opened.iter()? {
            let (key, value) = entry?;
            out.push((
                key.value().to_string(),
                decode(table, key.value(), value.value())?,
            ));
        }
        Ok(out)
    }

    pub fn put<T: Serialize>(
        &mut self,
        table: Table,
        key: &str,
        value: &T,
    ) -> Result<(), StoreError> {
        let bytes = encode(table, value)?;
        let mut opened = self.transaction.open_table(definition(table))?;
        opened.insert(key, bytes.as_slice())?;
        Ok(())
    }

    pub fn delete(&mut self, table: Table, key: &str) -> Result<bool, StoreError> {
        let mut opened = self.transaction.open_table(definition(table))?;
        let removed = opened.remove(key)?.is_some();
        Ok(removed)
    }

    /// The next number of a table keyed by zero-padded sequence numbers: one more than the
    /// last key, or 1 for an empty table.
    pub fn next_sequence(&self, table: Table) -> Result<u64, StoreError> {
        let opened = self.transaction.open_table(definition(table))?;
        let last = opened.last()?;
        Ok(last
            .and_then(|(key, _)| key.value().parse::<u64>().ok())
            .map_or(1, |last| last + 1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_survive_a_reopen_and_a_failed_write_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path()).unwrap();
            store.put(Table::Meta, "a", &1u32).unwrap();
            let failed: Result<(), StoreError> = store.write(|write| {
                write.put(Table::Meta, "b", &2u32)?;
                Err(StoreError::Database("refused on purpose".into()))
            });
            assert!(failed.is_err());
        }
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.get::<u32>(Table::Meta, "a").unwrap(), Some(1));
        assert_eq!(store.get::<u32>(Table::Meta, "b").unwrap(), None);
    }

    #[test]
    fn a_second_open_of_the_same_directory_is_refused_clearly() {
        let dir = tempfile::tempdir().unwrap();
        let _first = Store::open(dir.path()).unwrap();
        let error = Store::open(dir.path()).unwrap_err();
        assert!(matches!(error, StoreError::Locked { .. }), "{error}");
    }

    #[test]
    fn prefix_ranges_stop_at_the_prefix_and_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        for key in ["a/1", "a/2", "a/3", "b/1"] {
            store.put(Table::Meta, key, &key).unwrap();
        }
        let found: Vec<(String, String)> = store
            .read(|read| read.range(Table::Meta, "a/", Some(2)))
            .unwrap();
        assert_eq!(found.len(), 2);
        assert_eq!(found[1].0, "a/2");
    }
}
