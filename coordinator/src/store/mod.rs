//! The coordinator's state in redb: the only module that opens transactions.
//!
//! Values are JSON documents of the record types in [`records`]; tables have versioned names
//! (see [`tables`]) so a change of layout gets a new table and a migration on open, never a
//! silent misread. Callers use the typed helpers here or compose several steps atomically in
//! [`Store::write`] / [`Store::read`], whose closures receive wrappers, not raw redb handles.
//!
//! # Schema version
//!
//! The store records its layout version, [`SCHEMA_VERSION`], in `Meta` under `schema_version`
//! when it is created. On open a store of a newer version is refused ([`StoreError::TooNew`]:
//! this build would misread it), and one of an older version is brought up to date by the
//! registered [`Migration`]s, each from its version to the next, in order, in the same write
//! transaction that records the new version: a failed migration leaves the store as it was. A
//! store written before the version was recorded is version 1.

pub mod records;
pub mod sealing;
pub mod tables;
pub mod tickets;

use shell::sync::MutexExt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

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
    #[error(
        "the store at {path} has schema version {found}, newer than version {supported} that this \
         coordinator reads; run a coordinator as new as the one that wrote it"
    )]
    TooNew {
        path: String,
        found: u32,
        supported: u32,
    },
    #[error("cannot migrate the store at {path} from schema version {from}: {message}")]
    Migration {
        path: String,
        from: u32,
        message: String,
    },
    #[error(transparent)]
    Sealing(#[from] sealing::SealingError),
}

/// The layout version of the store this build reads and writes.
pub const SCHEMA_VERSION: u32 = 2;

/// The `Meta` key of the schema version (a JSON number).
pub const SCHEMA_VERSION_KEY: &str = "schema_version";

/// The version of a store that holds data but no recorded version: it was written before the
/// version was recorded, in the layout of version 1.
const UNRECORDED_VERSION: u32 = 1;

/// One step of the store's layout, from version `from` to `from + 1`.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    /// The version this step starts from.
    pub from: u32,
    /// What the step changes, for errors and logs.
    pub describe: &'static str,
    /// The step itself, inside the transaction that records the new version.
    pub run: fn(&mut Write<'_>) -> Result<(), StoreError>,
}

/// The migrations of this build, in order: `MIGRATIONS[i].from == i + 1`.
const MIGRATIONS: &[Migration] = &[Migration {
    from: 1,
    describe: "index the tickets by user and by expiry",
    run: tickets::index_existing,
}];

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
    counts: Arc<CommitCounts>,
    flushes: Arc<Flushes>,
    /// Seals and opens the records of sealed tables; `None` when opened without the key.
    sealer: Option<Arc<sealing::Sealer>>,
}

/// Group commit: writers commit without flushing, then wait until one flush covers them. A
/// flush is an empty durable commit, which makes every earlier commit durable; writers that
/// commit while a flush is under way share the next one.
#[derive(Debug, Default)]
struct Flushes {
    state: std::sync::Mutex<FlushState>,
    finished: std::sync::Condvar,
}

#[derive(Debug, Default)]
struct FlushState {
    /// Numbers the grouped commits in the order they were counted after committing.
    committed: u64,
    /// Every grouped commit up to this number is durable.
    durable: u64,
    /// A flush is under way.
    flushing: bool,
    /// The last flush failed (the commits up to this number may not be durable, and their
    /// writers fail); a later writer flushes anew.
    failed: Option<(u64, String)>,
}

/// Counters of write transactions since the store was opened.
#[derive(Debug, Default)]
struct CommitCounts {
    commits: AtomicU64,
    flushes: AtomicU64,
}

/// Write activity since the store was opened: `commits` counts transactions that changed
/// something, `flushes` the waits for the disk (a plain write's commit, or a flush shared by
/// grouped writes).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CommitStats {
    pub commits: u64,
    pub flushes: u64,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("Store")
    }
}

fn decode<T: DeserializeOwned>(
    sealer: Option<&sealing::Sealer>,
    table: Table,
    key: &str,
    bytes: &[u8],
) -> Result<T, StoreError> {
    let bytes = sealing::open_record(sealer, table, key, bytes)?;
    serde_json::from_slice(&bytes).map_err(|error| StoreError::Corrupt {
        table: table.name(),
        key: key.to_string(),
        message: error.to_string(),
    })
}

fn encode<T: Serialize>(
    sealer: Option<&sealing::Sealer>,
    table: Table,
    key: &str,
    value: &T,
) -> Result<Vec<u8>, StoreError> {
    let plain = serde_json::to_vec(value).map_err(|error| StoreError::Encode {
        table: table.name(),
        message: error.to_string(),
    })?;
    Ok(sealing::seal_record(sealer, table, key, plain)?)
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
    /// Opens the store with the key that seals its secrets (see [`sealing`]): the key at
    /// `key_path`, made there on the very first start.
    pub fn open_sealed(dir: &Path, key_path: &Path) -> Result<Store, StoreError> {
        let mut store = Store::open(dir)?;
        store.sealer = Some(Arc::new(sealing::attach(&store, key_path)?));
        Ok(store)
    }

    /// Opens or creates `<dir>/hostplane.redb`, makes sure every table exists, and brings an
    /// older store up to [`SCHEMA_VERSION`] (see the module's documentation). Without its key:
    /// sealed tables can be neither read nor written.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        Store::open_at_version(dir, SCHEMA_VERSION, MIGRATIONS)
    }

    /// [`Store::open`] with the version and migrations given, so tests can add steps.
    fn open_at_version(
        dir: &Path,
        version: u32,
        migrations: &[Migration],
    ) -> Result<Store, StoreError> {
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
        let mut fresh = true;
        for table in Table::ALL {
            let opened = transaction.open_table(definition(*table))?;
            fresh &= opened.is_empty()?;
        }
        let mut write = Write {
            transaction: &transaction,
            sealer: None,
        };
        migrate(&mut write, &shown, fresh, version, migrations)?;
        transaction.commit()?;
        let store = Store {
            database: Arc::new(database),
            counts: Arc::new(CommitCounts::default()),
            flushes: Arc::new(Flushes::default()),
            sealer: None,
        };
        Ok(store)
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
            sealer: self.sealer.as_deref(),
        };
        let result = work(&mut write)?;
        transaction.commit().map_err(StoreError::from)?;
        self.counts.commits.fetch_add(1, Ordering::Relaxed);
        self.counts.flushes.fetch_add(1, Ordering::Relaxed);
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
            sealer: self.sealer.as_deref(),
        };
        let result = work(&mut write)?;
        transaction.commit().map_err(StoreError::from)?;
        self.counts.commits.fetch_add(1, Ordering::Relaxed);
        Ok(result)
    }

    /// Like [`Store::write`] (the changes are durable when it returns), but concurrent writers
    /// share one flush to disk: each commits without flushing and then waits for a flush that
    /// covers its commit. Under load this turns one flush per write into one per group; alone
    /// it costs what [`Store::write`] does. The changes are visible to other transactions a
    /// moment before they are durable, so a reader may see what a crash in that moment loses;
    /// the writer itself never goes on before its changes are durable.
    pub fn write_grouped<R, E: From<StoreError>>(
        &self,
        work: impl FnOnce(&mut Write<'_>) -> Result<R, E>,
    ) -> Result<R, E> {
        blocking(|| {
            let result = self.write_buffered_now(work)?;
            let number = {
                let mut state = self.flush_state();
                state.committed += 1;
                state.committed
            };
            self.flush_through(number)?;
            Ok(result)
        })
    }

    fn flush_state(&self) -> std::sync::MutexGuard<'_, FlushState> {
        self.flushes.state.locked()
    }

    /// Blocks until grouped commit `number` is durable, flushing when no flush is under way.
    fn flush_through(&self, number: u64) -> Result<(), StoreError> {
        let mut state = self.flush_state();
        loop {
            if state.durable >= number {
                return Ok(());
            }
            if state.flushing {
                state = self
                    .flushes
                    .finished
                    .wait(state)
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
                if state.durable < number
                    && let Some((covered, message)) = &state.failed
                    && number <= *covered
                {
                    return Err(StoreError::Database(message.clone()));
                }
                continue;
            }
            // Every commit counted so far finished before this flush begins, so the flush
            // covers it.
            let target = state.committed;
            state.flushing = true;
            state.failed = None;
            drop(state);
            let outcome = self.flush_now();
            state = self.flush_state();
            state.flushing = false;
            match &outcome {
                Ok(()) => state.durable = state.durable.max(target),
                Err(error) => state.failed = Some((target, error.to_string())),
            }
            self.flushes.finished.notify_all();
            outcome?;
        }
    }

    /// An empty durable commit: makes every earlier commit durable.
    fn flush_now(&self) -> Result<(), StoreError> {
        let transaction = self.database.begin_write()?;
        transaction.commit()?;
        self.counts.flushes.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// How many transactions committed since the store was opened.
    pub fn commit_stats(&self) -> CommitStats {
        CommitStats {
            commits: self.counts.commits.load(Ordering::Relaxed),
            flushes: self.counts.flushes.load(Ordering::Relaxed),
        }
    }

    /// Runs `work` against one consistent snapshot.
    pub fn read<R, E: From<StoreError>>(
        &self,
        work: impl FnOnce(&Read) -> Result<R, E>,
    ) -> Result<R, E> {
        let transaction = self.database.begin_read().map_err(StoreError::from)?;
        work(&Read {
            transaction,
            sealer: self.sealer.clone(),
        })
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

/// Records `version` in a fresh store, refuses a newer one and runs `migrations` on an older
/// one, all in the caller's transaction.
fn migrate(
    write: &mut Write<'_>,
    path: &str,
    fresh: bool,
    version: u32,
    migrations: &[Migration],
) -> Result<(), StoreError> {
    let recorded: Option<u32> = write.get(Table::Meta, SCHEMA_VERSION_KEY)?;
    let found = match (recorded, fresh) {
        (Some(found), _) => found,
        (None, true) => return write.put(Table::Meta, SCHEMA_VERSION_KEY, &version),
        (None, false) => UNRECORDED_VERSION,
    };
    if found > version {
        return Err(StoreError::TooNew {
            path: path.to_string(),
            found,
            supported: version,
        });
    }
    for from in found..version {
        let step = migrations
            .iter()
            .find(|migration| migration.from == from)
            .ok_or_else(|| StoreError::Migration {
                path: path.to_string(),
                from,
                message: "no migration is registered for this version".into(),
            })?;
        tracing::info!(
            from,
            to = from + 1,
            step = step.describe,
            "migrating the store"
        );
        (step.run)(write).map_err(|error| StoreError::Migration {
            path: path.to_string(),
            from,
            message: format!("{}: {error}", step.describe),
        })?;
    }
    if recorded != Some(version) {
        write.put(Table::Meta, SCHEMA_VERSION_KEY, &version)?;
    }
    Ok(())
}

/// A read snapshot handed to [`Store::read`] closures.
pub struct Read {
    transaction: redb::ReadTransaction,
    sealer: Option<Arc<sealing::Sealer>>,
}

impl Read {
    pub fn get<T: DeserializeOwned>(
        &self,
        table: Table,
        key: &str,
    ) -> Result<Option<T>, StoreError> {
        let opened = self.transaction.open_table(definition(table))?;
        match opened.get(key)? {
            Some(value) => Ok(Some(decode(
                self.sealer.as_deref(),
                table,
                key,
                value.value(),
            )?)),
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
            out.push((
                key.to_string(),
                decode(self.sealer.as_deref(), table, key, value.value())?,
            ));
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
    sealer: Option<&'a sealing::Sealer>,
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
            Some(value) => Ok(Some(decode(self.sealer, table, key, value.value())?)),
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
                decode(self.sealer, table, key.value(), value.value())?,
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
        let bytes = encode(self.sealer, table, key, value)?;
        let mut opened = self.transaction.open_table(definition(table))?;
        opened.insert(key, bytes.as_slice())?;
        Ok(())
    }

    pub fn delete(&mut self, table: Table, key: &str) -> Result<bool, StoreError> {
        let mut opened = self.transaction.open_table(definition(table))?;
        let removed = opened.remove(key)?.is_some();
        Ok(removed)
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
            out.push((
                key.to_string(),
                decode(self.sealer, table, key, value.value())?,
            ));
        }
        Ok(out)
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

    #[test]
    fn concurrent_grouped_writes_share_flushes_and_all_land() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let before = store.commit_stats();
        std::thread::scope(|scope| {
            for thread in 0..8 {
                let store = store.clone();
                scope.spawn(move || {
                    for index in 0..25 {
                        store
                            .write_grouped(|write| {
                                write.put(
                                    Table::Meta,
                                    &format!("grouped/{thread}/{index:02}"),
                                    &index,
                                )
                            })
                            .unwrap();
                    }
                });
            }
        });
        let after = store.commit_stats();
        assert_eq!(after.commits - before.commits, 200);
        assert!(
            after.flushes - before.flushes < 200,
            "concurrent writers share flushes: {after:?}"
        );
        let failed: Result<(), StoreError> = store.write_grouped(|write| {
            write.put(Table::Meta, "refused", &1u32)?;
            Err(StoreError::Database("refused on purpose".into()))
        });
        assert!(failed.is_err());
        drop(store);
        let store = Store::open(dir.path()).unwrap();
        let all: Vec<(String, u32)> = store
            .read(|read| read.range(Table::Meta, "grouped/", None))
            .unwrap();
        assert_eq!(all.len(), 200);
        assert_eq!(store.get::<u32>(Table::Meta, "refused").unwrap(), None);
    }

    /// Run in a child process: writes, then aborts without closing the store.
    const ABORT_CHILD: &str = "HOSTPLANE_STORE_ABORT_CHILD";

    #[test]
    fn a_grouped_write_survives_an_abort_right_after_it_returns() {
        if let Some(dir) = std::env::var_os(ABORT_CHILD) {
            let store = Store::open(Path::new(&dir)).unwrap();
            store
                .write_grouped(|write| write.put(Table::Meta, "grouped", &1u32))
                .unwrap();
            store
                .write_buffered(|write| write.put(Table::Meta, "buffered", &2u32))
                .unwrap();
            std::process::abort();
        }
        let dir = tempfile::tempdir().unwrap();
        let status = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "store::tests::a_grouped_write_survives_an_abort_right_after_it_returns",
                "--test-threads=1",
            ])
            .env(ABORT_CHILD, dir.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap();
        assert!(!status.success(), "the child aborts");
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.get::<u32>(Table::Meta, "grouped").unwrap(), Some(1));
        // What only a buffered write held is lost: the abort really skipped every flush.
        assert_eq!(store.get::<u32>(Table::Meta, "buffered").unwrap(), None);
    }

    /// A test migration: appends the version it starts from to `Meta` `steps`.
    fn record_step(write: &mut Write<'_>, from: u32) -> Result<(), StoreError> {
        let mut steps: Vec<u32> = write.get(Table::Meta, "steps")?.unwrap_or_default();
        steps.push(from);
        write.put(Table::Meta, "steps", &steps)
    }

    const STEPS: &[Migration] = &[
        Migration {
            from: 1,
            describe: "first test step",
            run: |write| record_step(write, 1),
        },
        Migration {
            from: 2,
            describe: "second test step",
            run: |write| record_step(write, 2),
        },
    ];

    fn version_of(store: &Store) -> Option<u32> {
        store.get(Table::Meta, SCHEMA_VERSION_KEY).unwrap()
    }

    #[test]
    fn a_new_store_records_its_schema_version() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(version_of(&store), Some(SCHEMA_VERSION));
        drop(store);
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(version_of(&store), Some(SCHEMA_VERSION));
    }

    #[test]
    fn a_store_of_a_newer_version_is_refused_naming_both_versions() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store
            .put(Table::Meta, SCHEMA_VERSION_KEY, &(SCHEMA_VERSION + 1))
            .unwrap();
        drop(store);
        let error = Store::open(dir.path()).unwrap_err();
        assert!(
            matches!(error, StoreError::TooNew { found, supported, .. }
                if found == SCHEMA_VERSION + 1 && supported == SCHEMA_VERSION),
            "{error}"
        );
        let message = error.to_string();
        assert!(
            message.contains(&format!("schema version {}", SCHEMA_VERSION + 1))
                && message.contains(&format!("version {SCHEMA_VERSION} that")),
            "{message}"
        );
    }

    #[test]
    fn an_older_store_runs_its_migrations_in_order_and_records_the_version() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_at_version(dir.path(), 1, &[]).unwrap();
        store.put(Table::Meta, "kept", &"yes").unwrap();
        drop(store);
        let store = Store::open_at_version(dir.path(), 3, STEPS).unwrap();
        assert_eq!(version_of(&store), Some(3));
        let steps: Option<Vec<u32>> = store.get(Table::Meta, "steps").unwrap();
        assert_eq!(steps, Some(vec![1, 2]));
        assert_eq!(
            store.get::<String>(Table::Meta, "kept").unwrap().as_deref(),
            Some("yes")
        );
        drop(store);
        // Up to date: nothing runs again.
        let store = Store::open_at_version(dir.path(), 3, STEPS).unwrap();
        let steps: Option<Vec<u32>> = store.get(Table::Meta, "steps").unwrap();
        assert_eq!(steps, Some(vec![1, 2]));
    }

    #[test]
    fn a_store_without_a_recorded_version_is_version_one() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_at_version(dir.path(), 1, &[]).unwrap();
        store.put(Table::Meta, "kept", &"yes").unwrap();
        assert!(store.delete(Table::Meta, SCHEMA_VERSION_KEY).unwrap());
        drop(store);
        let store = Store::open_at_version(dir.path(), 2, STEPS).unwrap();
        assert_eq!(version_of(&store), Some(2));
        let steps: Option<Vec<u32>> = store.get(Table::Meta, "steps").unwrap();
        assert_eq!(steps, Some(vec![1]));
    }

    #[test]
    fn a_failed_migration_leaves_the_store_as_it_was() {
        let dir = tempfile::tempdir().unwrap();
        drop(Store::open_at_version(dir.path(), 1, &[]).unwrap());
        let failing = [
            STEPS[0],
            Migration {
                from: 2,
                describe: "a step that fails",
                run: |_| Err(StoreError::Database("refused on purpose".into())),
            },
        ];
        let error = Store::open_at_version(dir.path(), 3, &failing).unwrap_err();
        assert!(
            matches!(&error, StoreError::Migration { from: 2, message, .. }
                if message.contains("a step that fails")),
            "{error}"
        );
        let error = Store::open_at_version(dir.path(), 4, STEPS).unwrap_err();
        assert!(
            matches!(&error, StoreError::Migration { from: 3, .. }),
            "{error}"
        );
        let store = Store::open_at_version(dir.path(), 1, &[]).unwrap();
        assert_eq!(version_of(&store), Some(1));
        assert_eq!(store.get::<Vec<u32>>(Table::Meta, "steps").unwrap(), None);
    }
}
