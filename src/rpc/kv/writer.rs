//! The store's one writer: a thread that takes every put and delete waiting, applies them in
//! one redb write transaction and commits it, durably, once (group commit), then answers them
//! all. A put is answered only once its commit is on disk.

use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc};

use redb::{Database, ReadableTable, TableDefinition};
use tokio::sync::oneshot;

/// The entries: key, then the value as MessagePack.
pub(super) const ENTRIES: TableDefinition<&str, &[u8]> = TableDefinition::new("entries");
/// The store's bookkeeping: [`SIZE`], the bytes it holds.
pub(super) const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// The key in [`META`] of the bytes the entries take, as [`entry_size`] counts them.
pub(super) const SIZE: &str = "size";

/// What an entry is counted for besides its key and value: redb's bookkeeping in a B-tree
/// leaf, roughly.
pub(super) const ENTRY_OVERHEAD: u64 = 64;

/// The most changes one commit takes; more wait for the next.
const MAX_BATCH: usize = 1024;
/// The most value bytes one commit takes (at least one change, whatever its size).
const MAX_BATCH_BYTES: usize = 16 * 1024 * 1024;

/// The bytes `key` and a value of `value_len` bytes are counted for.
pub(super) fn entry_size(key: &str, value_len: usize) -> u64 {
    ENTRY_OVERHEAD + key.len() as u64 + value_len as u64
}

/// A change to the store.
#[derive(Debug)]
pub(super) enum Change {
    /// Sets `key` to `value` (MessagePack), unless the store would then hold more than
    /// `max_store_size` bytes.
    Put {
        key: String,
        value: Vec<u8>,
        max_store_size: u64,
    },
    /// Removes `key`.
    Delete { key: String },
}

/// What a change did.
#[derive(Debug)]
pub(super) enum Done {
    /// Stored; the value it replaced, if any.
    Stored(Option<Vec<u8>>),
    /// Refused: the store would be over its bound; it holds `size` bytes now, and would hold
    /// `would` with the put.
    Full { would: u64 },
    /// Deleted; whether the key was set.
    Deleted(bool),
}

type Answer = Result<Done, String>;

struct Job {
    change: Change,
    answer: oneshot::Sender<Answer>,
}

/// An open store file: the database, for reads, and the writer thread, for changes. The
/// thread stops and the file is closed when the last `Db` goes.
pub(super) struct Db {
    path: PathBuf,
    database: Arc<Database>,
    jobs: mpsc::Sender<Job>,
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Db").field("path", &self.path).finish()
    }
}

impl Db {
    /// Starts the writer thread of `database`, the file at `path` (empty for a store in
    /// memory).
    pub(super) fn start(path: &Path, database: Database) -> std::io::Result<Db> {
        let database = Arc::new(database);
        let (jobs, rx) = mpsc::channel();
        let writer = database.clone();
        let name = path.display().to_string();
        std::thread::Builder::new()
            .name("atoll-kv-writer".to_owned())
            .spawn(move || write_loop(&writer, &rx, &name))?;
        Ok(Db {
            path: path.to_owned(),
            database,
            jobs,
        })
    }

    /// The file, for messages.
    pub(super) fn path(&self) -> &Path {
        &self.path
    }

    /// The database, for reads.
    pub(super) fn database(&self) -> &Database {
        &self.database
    }

    /// Applies `change` in the next commit, and answers once that commit is on disk.
    pub(super) async fn change(&self, change: Change) -> Answer {
        let (answer, done) = oneshot::channel();
        self.jobs
            .send(Job { change, answer })
            .map_err(|_| "the store's writer has stopped".to_owned())?;
        done.await
            .map_err(|_| "the store's writer has stopped".to_owned())?
    }
}

/// Takes the changes as they come, as many at once as are waiting.
fn write_loop(database: &Database, rx: &mpsc::Receiver<Job>, name: &str) {
    while let Ok(first) = rx.recv() {
        let mut bytes = change_bytes(&first.change);
        let mut jobs = vec![first];
        while jobs.len() < MAX_BATCH && bytes < MAX_BATCH_BYTES {
            match rx.try_recv() {
                Ok(job) => {
                    bytes += change_bytes(&job.change);
                    jobs.push(job);
                }
                Err(_) => break,
            }
        }
        let changes: Vec<&Change> = jobs.iter().map(|j| &j.change).collect();
        match commit(database, &changes) {
            Ok(done) => {
                for (job, done) in jobs.into_iter().zip(done) {
                    // A caller that went away has no one to tell.
                    let _ = job.answer.send(Ok(done));
                }
            }
            Err(e) => {
                tracing::error!(target: "atoll::rpc", store = name, error = %e, "kv commit failed");
                for job in jobs {
                    let _ = job.answer.send(Err(format!("store {name}: {e}")));
                }
            }
        }
    }
}

fn change_bytes(change: &Change) -> usize {
    match change {
        Change::Put { key, value, .. } => key.len() + value.len(),
        Change::Delete { key } => key.len(),
    }
}

/// Applies `changes` in order in one write transaction and commits it durably. Nothing of it
/// is kept when it fails.
fn commit(database: &Database, changes: &[&Change]) -> Result<Vec<Done>, redb::Error> {
    let txn = database.begin_write()?;
    let mut done = Vec::with_capacity(changes.len());
    {
        let mut entries = txn.open_table(ENTRIES)?;
        let mut meta = txn.open_table(META)?;
        let mut size = meta.get(SIZE)?.map_or(0, |v| v.value());
        for change in changes {
            match change {
                Change::Put {
                    key,
                    value,
                    max_store_size,
                } => {
                    let freed = entries
                        .get(key.as_str())?
                        .map_or(0, |old| entry_size(key, old.value().len()));
                    let would = size.saturating_sub(freed) + entry_size(key, value.len());
                    if would > *max_store_size {
                        done.push(Done::Full { would });
                        continue;
                    }
                    let previous = entries
                        .insert(key.as_str(), value.as_slice())?
                        .map(|old| old.value().to_vec());
                    size = would;
                    done.push(Done::Stored(previous));
                }
                Change::Delete { key } => {
                    let removed = entries.remove(key.as_str())?;
                    if let Some(old) = &removed {
                        size = size.saturating_sub(entry_size(key, old.value().len()));
                    }
                    done.push(Done::Deleted(removed.is_some()));
                }
            }
        }
        meta.insert(SIZE, size)?;
    }
    txn.commit()?;
    Ok(done)
}
