//! The store files this process has open, by path: a listener that opens a file another one
//! already has (a reload replacing the listener) shares its database and writer, so both see
//! every change at once and one writer orders them.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, Weak};

use super::writer::Db;
use crate::error::Result;

fn table() -> &'static Mutex<HashMap<PathBuf, Weak<Db>>> {
    static OPEN: OnceLock<Mutex<HashMap<PathBuf, Weak<Db>>>> = OnceLock::new();
    OPEN.get_or_init(Mutex::default)
}

/// The open store at `path` (absolute), or a new one from `open`. The table's lock is held
/// while `open` runs, so two starts of the same file never open it twice.
pub(super) fn open(path: &Path, open: impl FnOnce(&Path) -> Result<Db>) -> Result<Arc<Db>> {
    // A poisoned table is still whole: every change is one insert or retain.
    let mut files = table().lock().unwrap_or_else(|p| p.into_inner());
    files.retain(|_, db| db.strong_count() > 0);
    if let Some(db) = files.get(path).and_then(Weak::upgrade) {
        return Ok(db);
    }
    let db = Arc::new(open(path)?);
    files.insert(path.to_owned(), Arc::downgrade(&db));
    Ok(db)
}
