//! The `kv` command: the key-value store's engine, redb, in its single- and multi-process
//! modes, under concurrent puts and gets, with the sync it needs for "an acknowledged put is
//! on disk", against the in-memory map the `rpc` kind used to keep. (fjall was measured here
//! too, at the commit that added this command.)
//!
//! Each store runs a put phase then a get phase, `--clients` threads each doing one operation
//! after another for `--seconds`; a put is timed from the call until it is acknowledged, so
//! synced. Two sync policies:
//!
//! - **each**: every put is its own transaction, synced before it returns;
//! - **group**: puts go to one writer thread, which takes every put waiting, applies them in
//!   one transaction and syncs once, then acknowledges them all (group commit).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use redb::{ConcurrencyMode, ReadableDatabase, TableDefinition};

use crate::args::Flags;
use crate::latency::percentile_us;

const TABLE: TableDefinition<&[u8], &[u8]> = TableDefinition::new("kv");

/// The most puts one group commit takes, as the real store does.
const MAX_BATCH: usize = 1024;

type Outcome = Result<(), String>;

/// A store under test.
trait Store: Send + Sync {
    fn put(&self, key: &[u8], value: &[u8]) -> Outcome;
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, String>;
}

/// Applies a batch of puts and syncs once: the writer thread's side of a group commit.
trait Batch: Send + 'static {
    fn apply(&self, puts: &[(Vec<u8>, Vec<u8>)]) -> Outcome;
}

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

// ===== memory =====

#[derive(Default)]
struct Memory(Mutex<BTreeMap<Vec<u8>, Vec<u8>>>);

impl Store for Memory {
    fn put(&self, key: &[u8], value: &[u8]) -> Outcome {
        self.0.lock().unwrap().insert(key.to_vec(), value.to_vec());
        Ok(())
    }
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, String> {
        Ok(self.0.lock().unwrap().get(key).cloned())
    }
}

// ===== redb =====

struct Redb(Arc<redb::Database>);

impl Redb {
    fn open(path: &Path, mode: ConcurrencyMode) -> Result<Redb, String> {
        let db = redb::Builder::new()
            .set_concurrency_mode(mode)
            .create(path)
            .map_err(err)?;
        Ok(Redb(Arc::new(db)))
    }
}

impl Store for Redb {
    fn put(&self, key: &[u8], value: &[u8]) -> Outcome {
        Batch::apply(self, &[(key.to_vec(), value.to_vec())])
    }
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, String> {
        let txn = self.0.begin_read().map_err(err)?;
        let table = txn.open_table(TABLE).map_err(err)?;
        let found = redb::ReadableTable::get(&table, key).map_err(err)?;
        Ok(found.map(|v| v.value().to_vec()))
    }
}

impl Batch for Redb {
    fn apply(&self, puts: &[(Vec<u8>, Vec<u8>)]) -> Outcome {
        let txn = self.0.begin_write().map_err(err)?;
        {
            let mut table = txn.open_table(TABLE).map_err(err)?;
            for (k, v) in puts {
                table.insert(k.as_slice(), v.as_slice()).map_err(err)?;
            }
        }
        txn.commit().map_err(err)
    }
}

// ===== group commit =====

type Job = (Vec<u8>, Vec<u8>, mpsc::SyncSender<Outcome>);

/// Puts through one writer thread that commits whatever waits at once; gets straight from the
/// engine.
struct Grouped<S> {
    engine: Arc<S>,
    jobs: Mutex<mpsc::Sender<Job>>,
}

impl<S: Store + Batch + Clone> Grouped<S> {
    fn new(engine: S) -> Grouped<S> {
        let (tx, rx) = mpsc::channel::<Job>();
        let writer = engine.clone();
        std::thread::spawn(move || {
            while let Ok(first) = rx.recv() {
                let mut jobs = vec![first];
                while jobs.len() < MAX_BATCH {
                    match rx.try_recv() {
                        Ok(job) => jobs.push(job),
                        Err(_) => break,
                    }
                }
                let puts: Vec<_> = jobs
                    .iter_mut()
                    .map(|(k, v, _)| (std::mem::take(k), std::mem::take(v)))
                    .collect();
                let outcome = writer.apply(&puts);
                for (_, _, reply) in jobs {
                    let _ = reply.send(outcome.clone());
                }
            }
        });
        Grouped {
            engine: Arc::new(engine),
            jobs: Mutex::new(tx),
        }
    }
}

impl<S: Store + Batch + Clone> Store for Grouped<S> {
    fn put(&self, key: &[u8], value: &[u8]) -> Outcome {
        let (tx, rx) = mpsc::sync_channel(1);
        let sender = self.jobs.lock().unwrap().clone();
        sender
            .send((key.to_vec(), value.to_vec(), tx))
            .map_err(err)?;
        rx.recv().map_err(err)?
    }
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, String> {
        self.engine.get(key)
    }
}

impl Clone for Redb {
    fn clone(&self) -> Redb {
        Redb(self.0.clone())
    }
}

// ===== the run =====

/// What one phase measured.
struct Phase {
    rate: f64,
    p50_us: f64,
    p99_us: f64,
}

fn key(client: usize, i: u64, keys: u64) -> Vec<u8> {
    format!("key-{client:03}-{:08}", i % keys).into_bytes()
}

/// `clients` threads, each calling `op` in a loop for `seconds`.
fn phase(
    store: &Arc<dyn Store>,
    clients: usize,
    seconds: f64,
    op: fn(&dyn Store, usize, u64) -> Outcome,
) -> Result<Phase, String> {
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let start = Instant::now();
    let threads: Vec<_> = (0..clients)
        .map(|c| {
            let store = store.clone();
            std::thread::spawn(move || -> Result<Vec<Duration>, String> {
                let mut times = Vec::new();
                let mut i = 0;
                while Instant::now() < deadline {
                    let t = Instant::now();
                    op(&*store, c, i)?;
                    times.push(t.elapsed());
                    i += 1;
                }
                Ok(times)
            })
        })
        .collect();
    let mut all = Vec::new();
    for t in threads {
        all.extend(t.join().map_err(|_| "a client thread panicked")??);
    }
    let elapsed = start.elapsed().as_secs_f64();
    all.sort_unstable();
    Ok(Phase {
        rate: all.len() as f64 / elapsed,
        p50_us: percentile_us(&all, 0.50),
        p99_us: percentile_us(&all, 0.99),
    })
}

const KEYS_PER_CLIENT: u64 = 1000;

fn put_op(store: &dyn Store, client: usize, i: u64) -> Outcome {
    let value = [b'v'; 100];
    store.put(&key(client, i, KEYS_PER_CLIENT), &value)
}

fn get_op(store: &dyn Store, client: usize, i: u64) -> Outcome {
    match store.get(&key(client, i, KEYS_PER_CLIENT))? {
        Some(v) if v.len() == 100 => Ok(()),
        other => Err(format!("get read {other:?}, not the value put")),
    }
}

fn open(name: &str, dir: &Path) -> Result<Arc<dyn Store>, String> {
    let file = |f: &str| -> PathBuf { dir.join(f) };
    Ok(match name {
        "memory" => Arc::new(Memory::default()),
        "redb-each" => Arc::new(Redb::open(
            &file("each.redb"),
            ConcurrencyMode::ExclusiveWriter,
        )?),
        "redb-group" => Arc::new(Grouped::new(Redb::open(
            &file("group.redb"),
            ConcurrencyMode::ExclusiveWriter,
        )?)),
        "redb-multi-each" => Arc::new(Redb::open(
            &file("multi-each.redb"),
            ConcurrencyMode::MultiWriter,
        )?),
        "redb-multi-group" => Arc::new(Grouped::new(Redb::open(
            &file("multi-group.redb"),
            ConcurrencyMode::MultiWriter,
        )?)),
        other => return Err(format!("unknown store `{other}`")),
    })
}

/// `atoll-bench kv --dir DIR [--stores a,b] [--clients 16] [--seconds 2]`.
pub(crate) fn main(args: impl Iterator<Item = String>) -> Result<(), String> {
    let flags = Flags::parse(args, &["dir", "stores", "clients", "seconds"])?;
    let dir: PathBuf = flags.required("dir")?;
    let stores: String = flags.get(
        "stores",
        "memory,redb-each,redb-group,redb-multi-each,redb-multi-group".to_owned(),
    )?;
    let clients: usize = flags.get("clients", 16)?;
    let seconds: f64 = flags.get("seconds", 2.0)?;
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    println!(
        "{clients} client threads, {seconds} s per phase, 100-byte values, {} keys per client",
        KEYS_PER_CLIENT
    );
    println!(
        "| store | puts/s | put p50 (µs) | put p99 (µs) | gets/s | get p50 (µs) | get p99 (µs) |"
    );
    println!("|---|---|---|---|---|---|---|");
    for name in stores.split(',') {
        let run_dir = dir.join(name);
        let _ = std::fs::remove_dir_all(&run_dir);
        std::fs::create_dir_all(&run_dir).map_err(|e| format!("{}: {e}", run_dir.display()))?;
        let store = open(name, &run_dir)?;
        // Every key a get asks for is there: one put of each first, untimed.
        for c in 0..clients {
            for i in 0..KEYS_PER_CLIENT.min(50) {
                put_op(&*store, c, i)?;
            }
        }
        let puts = phase(&store, clients, seconds, put_op)?;
        let gets = phase(&store, clients, seconds, |s, c, i| {
            get_op(s, c, i % KEYS_PER_CLIENT.min(50))
        })?;
        println!(
            "| {name} | {:.0} | {:.0} | {:.0} | {:.0} | {:.1} | {:.1} |",
            puts.rate, puts.p50_us, puts.p99_us, gets.rate, gets.p50_us, gets.p99_us
        );
        drop(store);
        let _ = std::fs::remove_dir_all(&run_dir);
    }
    Ok(())
}
