//! [`KvStore`]: the key-value service's data, in a redb file (or in memory), with its bounds.

use std::path::Path;
use std::sync::Arc;

use redb::{ReadableDatabase, ReadableTable};
use serde_json::Value;

use super::files;
use super::writer::{Change, Db, Done, ENTRIES, META, SIZE};
use super::{KvChange, KvReply, KvRequest};
use crate::error::{Error, ErrorKind, Result};

/// The default of [`KvStore::max_value_size`]: 1 MiB.
pub const DEFAULT_MAX_VALUE_SIZE: usize = 1024 * 1024;
/// The default of [`KvStore::max_store_size`]: 64 MiB.
pub const DEFAULT_MAX_STORE_SIZE: usize = 64 * 1024 * 1024;

/// The data every connection's instance shares: a [redb](https://docs.rs/redb) database in
/// one file ([`open`](KvStore::open)) or in memory ([`new`](KvStore::new)), and its bounds.
///
/// # Durability
///
/// A `put` or `delete` is answered once the transaction that holds it is committed with
/// fsync: an acknowledged change survives `kill -9` and power loss. Changes from concurrent
/// connections share commits: one writer thread takes every change waiting, applies them in
/// one transaction and syncs once (group commit), so the cost of a sync is spread over
/// however many clients wait on it. One connection's calls wait for each other, so a single
/// client pays a sync per put.
///
/// # Sharing the file
///
/// The file is opened in redb's multi-writer mode: every process that opens it reads and
/// writes it at once, redb's file locks taking turns for the writes, and every read sees the
/// latest commit of any of them. This is what lets an upgrade's new process serve the store
/// while the old one drains its connections; within one process, stores opened on the same
/// file share one database and writer (a reload that replaces the listener).
///
/// # Sizes
///
/// Values are stored as MessagePack. An entry counts its key's bytes, its value's
/// MessagePack bytes and 64 bytes for the B-tree's bookkeeping; the total is kept in the
/// file, updated in the same transaction as the entries, so it is right across processes and
/// restarts. The file itself is larger than that count: redb allocates whole pages, keeps
/// the pages of the commit before the last until the next one, and reuses freed pages
/// rather than shrinking the file.
#[derive(Debug, Clone)]
pub struct KvStore {
    db: Arc<Db>,
    max_value_size: usize,
    max_store_size: usize,
}

impl Default for KvStore {
    fn default() -> KvStore {
        KvStore::new()
    }
}

/// Why a request was not done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Failure {
    /// The client asked for too much (a value or the store over its bound): `bad request`.
    Refused(String),
    /// The store could not read or write: `server error`.
    Failed(String),
}

impl KvStore {
    /// An empty store in memory, with the default bounds: gone when the last handle goes.
    /// For tests and examples; the config file's `rpc` kind always keeps a file.
    pub fn new() -> KvStore {
        // Nothing outside the process can make a fresh in-memory database fail.
        let database = redb::Builder::new()
            .create_with_backend(redb::backends::InMemoryBackend::new())
            .expect("a fresh in-memory redb database opens");
        init_tables(&database).expect("a fresh in-memory redb database takes a commit");
        let db = Db::start(Path::new(""), database).expect("the kv writer thread starts");
        KvStore::with(Arc::new(db))
    }

    /// The store in the redb file at `path`, created (with its folder) if missing, with the
    /// default bounds. A file this process has open already is shared, not opened twice.
    /// Config key `path`; the `rpc` kind's default is `DATA_DIR/kv/LISTENER.redb`.
    ///
    /// Errors are of kind [`Store`](ErrorKind::Store) and name the file: a folder that
    /// cannot be created, a file that cannot be read or written, or is not a redb database
    /// or is corrupt.
    pub fn open(path: impl AsRef<Path>) -> Result<KvStore> {
        let path = path.as_ref();
        let path = std::path::absolute(path).unwrap_or_else(|_| path.to_owned());
        files::open(&path, open_file).map(KvStore::with)
    }

    fn with(db: Arc<Db>) -> KvStore {
        KvStore {
            db,
            max_value_size: DEFAULT_MAX_VALUE_SIZE,
            max_store_size: DEFAULT_MAX_STORE_SIZE,
        }
    }

    /// The largest value a `put` may store, in bytes of its MessagePack encoding. A larger
    /// one is refused with a `bad request` error answer naming the key and this option; the
    /// connection goes on. Config key `max_value_size`. Default is 1 MiB
    /// ([`DEFAULT_MAX_VALUE_SIZE`]).
    pub fn max_value_size(mut self, bytes: usize) -> KvStore {
        self.max_value_size = bytes;
        self
    }

    /// The most bytes the whole store may hold: keys, MessagePack values and 64 bytes per
    /// entry (see [`KvStore`]). A `put` that would take it past this is refused with a `bad
    /// request` error answer naming this option; the connection goes on, and deletes make
    /// room again. Config key `max_store_size`. Default is 64 MiB
    /// ([`DEFAULT_MAX_STORE_SIZE`]).
    pub fn max_store_size(mut self, bytes: usize) -> KvStore {
        self.max_store_size = bytes;
        self
    }

    /// The file, or `None` for a store in memory.
    pub fn path(&self) -> Option<&Path> {
        Some(self.db.path()).filter(|p| !p.as_os_str().is_empty())
    }

    /// The bytes the store holds now, counted as [`KvStore`] says.
    pub fn size(&self) -> Result<u64> {
        let read = || -> std::result::Result<u64, redb::Error> {
            let txn = self.db.database().begin_read()?;
            let meta = txn.open_table(META)?;
            let size = meta.get(SIZE)?.map_or(0, |v| v.value());
            Ok(size)
        };
        read().map_err(|e| self.error(e))
    }

    fn name(&self) -> String {
        match self.path() {
            Some(p) => format!("store {}", p.display()),
            None => "store in memory".to_owned(),
        }
    }

    fn error(&self, e: impl Into<crate::error::BoxError>) -> Error {
        Error::with_source(ErrorKind::Store, e).context(self.name())
    }

    /// Applies `request`, and returns the reply and the change to announce, if any; or why it
    /// was not done.
    pub(super) async fn apply(
        &self,
        request: KvRequest,
    ) -> std::result::Result<(KvReply, Option<KvChange>), Failure> {
        match request {
            KvRequest::Get { key } => Ok((KvReply::Value(self.get(&key)?), None)),
            KvRequest::List => Ok((KvReply::Keys(self.keys()?), None)),
            KvRequest::Put { key, value } => {
                let bytes = rmp_serde::to_vec(&value)
                    .map_err(|e| Failure::Refused(format!("put refused: {e}")))?;
                if bytes.len() > self.max_value_size {
                    return Err(Failure::Refused(format!(
                        "put refused: the value of `{}` takes {} bytes, over max_value_size \
                         ({})",
                        shorten(&key),
                        bytes.len(),
                        self.max_value_size
                    )));
                }
                let change = Change::Put {
                    key: key.clone(),
                    value: bytes,
                    max_store_size: self.max_store_size as u64,
                };
                match self.db.change(change).await.map_err(Failure::Failed)? {
                    Done::Stored(previous) => {
                        let previous = match previous {
                            Some(old) => Some(self.decode(&key, &old)?),
                            None => None,
                        };
                        let change = KvChange {
                            key,
                            value: Some(value),
                        };
                        Ok((KvReply::Stored { previous }, Some(change)))
                    }
                    Done::Full { would } => Err(Failure::Refused(format!(
                        "put refused: the store would hold {would} bytes, over max_store_size \
                         ({})",
                        self.max_store_size
                    ))),
                    Done::Deleted(_) => Err(Failure::Failed(
                        "the store answered a put with a delete".to_owned(),
                    )),
                }
            }
            KvRequest::Delete { key } => {
                let change = Change::Delete { key: key.clone() };
                let existed = match self.db.change(change).await.map_err(Failure::Failed)? {
                    Done::Deleted(existed) => existed,
                    _ => {
                        return Err(Failure::Failed(
                            "the store answered a delete with a put".to_owned(),
                        ))
                    }
                };
                let change = existed.then_some(KvChange { key, value: None });
                Ok((KvReply::Deleted { existed }, change))
            }
        }
    }

    /// The value of `key`, read in a transaction of its own: the latest commit of any
    /// process that has the file open.
    fn get(&self, key: &str) -> std::result::Result<Option<Value>, Failure> {
        let read = || -> std::result::Result<Option<Vec<u8>>, redb::Error> {
            let txn = self.db.database().begin_read()?;
            let entries = txn.open_table(ENTRIES)?;
            let value = entries.get(key)?.map(|v| v.value().to_vec());
            Ok(value)
        };
        match read().map_err(|e| self.failed(e))? {
            Some(bytes) => self.decode(key, &bytes).map(Some),
            None => Ok(None),
        }
    }

    fn keys(&self) -> std::result::Result<Vec<String>, Failure> {
        let read = || -> std::result::Result<Vec<String>, redb::Error> {
            let txn = self.db.database().begin_read()?;
            let entries = txn.open_table(ENTRIES)?;
            let mut keys = Vec::new();
            for entry in entries.iter()? {
                keys.push(entry?.0.value().to_owned());
            }
            Ok(keys)
        };
        read().map_err(|e| self.failed(e))
    }

    fn decode(&self, key: &str, bytes: &[u8]) -> std::result::Result<Value, Failure> {
        rmp_serde::from_slice(bytes).map_err(|e| {
            Failure::Failed(format!(
                "{}: the value of `{}` cannot be read: {e}",
                self.name(),
                shorten(key)
            ))
        })
    }

    fn failed(&self, e: redb::Error) -> Failure {
        Failure::Failed(format!("{}: {e}", self.name()))
    }
}

/// Opens the file at `path` for [`files::open`]: its folder made, the database opened in
/// multi-writer mode, its tables made in a first commit (which also proves it writable).
fn open_file(path: &Path) -> Result<Db> {
    let fail = |why: String| {
        Error::with_source(ErrorKind::Store, why).context(format!("store {}", path.display()))
    };
    if let Some(folder) = path.parent() {
        std::fs::create_dir_all(folder).map_err(|e| {
            fail(format!(
                "cannot create its folder {}: {e}",
                folder.display()
            ))
        })?;
    }
    let database = redb::Builder::new()
        .set_concurrency_mode(redb::ConcurrencyMode::MultiWriter)
        .create(path)
        .map_err(|e| fail(e.to_string()))?;
    init_tables(&database).map_err(|e| fail(e.to_string()))?;
    Db::start(path, database).map_err(|e| fail(format!("cannot start its writer: {e}")))
}

/// Makes the tables if they are missing, so that reads never find them absent.
fn init_tables(database: &redb::Database) -> std::result::Result<(), redb::Error> {
    let txn = database.begin_write()?;
    txn.open_table(ENTRIES)?;
    txn.open_table(META)?;
    txn.commit()?;
    Ok(())
}

/// A key short enough for an error message.
fn shorten(key: &str) -> &str {
    let mut end = key.len().min(64);
    while !key.is_char_boundary(end) {
        end -= 1;
    }
    &key[..end]
}

/// What an entry of `key` and `value` is counted for, for tests.
#[cfg(test)]
pub(super) fn counted(key: &str, value: &Value) -> u64 {
    super::writer::entry_size(key, rmp_serde::to_vec(value).map_or(0, |b| b.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two databases on one file, as the old and the new process of an upgrade have it
    /// (redb's locks are per open file, so two handles in one process behave as two
    /// processes): each reads what the other committed, and the size counts both.
    #[tokio::test]
    async fn two_handles_on_one_file_see_each_others_commits() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("shared.redb");
        let old = KvStore::with(Arc::new(open_file(&path).unwrap()));
        let new = KvStore::with(Arc::new(open_file(&path).unwrap()));
        assert!(!Arc::ptr_eq(&old.db, &new.db));
        let put = |k: &str, v: i32| KvRequest::Put {
            key: k.into(),
            value: v.into(),
        };
        let get = |k: &str| KvRequest::Get { key: k.into() };
        old.apply(put("a", 1)).await.unwrap();
        assert_eq!(
            new.apply(get("a")).await.unwrap().0,
            KvReply::Value(Some(1.into()))
        );
        let (reply, _) = new.apply(put("a", 2)).await.unwrap();
        assert_eq!(
            reply,
            KvReply::Stored {
                previous: Some(1.into())
            }
        );
        old.apply(put("b", 3)).await.unwrap();
        assert_eq!(
            old.apply(get("a")).await.unwrap().0,
            KvReply::Value(Some(2.into()))
        );
        assert_eq!(
            new.apply(KvRequest::List).await.unwrap().0,
            KvReply::Keys(vec!["a".into(), "b".into()])
        );
        let both = counted("a", &2.into()) + counted("b", &3.into());
        assert_eq!((old.size().unwrap(), new.size().unwrap()), (both, both));
    }
}
