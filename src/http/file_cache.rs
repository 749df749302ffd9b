//! What [`StaticFiles`](super::StaticFiles) remembers between requests: for each request path
//! that led to a file or a redirect, the outcome (the checked file, its precompressed
//! variants, their validators, and the contents of the small ones), so that a request for a
//! known path is answered on its connection's task, with no trip to the blocking pool and no
//! file-system call.
//!
//! Freshness: an entry is trusted for [`CacheOptions::revalidate_after`] (1 s by default) after
//! the file system was last asked; the first request after that resolves the path again (the
//! same checks as without a cache: canonical path under the root, regular file, variants) and
//! replaces the entry. So a file changed, added, removed or swapped for a link is served as
//! it now is at most that long after the change. Until then the entry serves what was checked
//! then: held contents, or the descriptor opened then, which stays the file that was checked
//! even if a link is swapped under the root meanwhile (nothing from outside the root is ever
//! served from the cache).
//!
//! One load per path at a time: the requests for a path that is not fresh while it is being
//! loaded wait for that load and take its outcome, rather than each going to the blocking
//! pool (every second, each busy path goes stale at once for all the connections asking for
//! it). They still see the file system as it was after they arrived or at most
//! `revalidate_after` before. With the cache off, every request loads on its own.
//!
//! Budget: [`CacheOptions::size`] (64 MiB by default) bounds the weight of the entries: the
//! contents held, plus [`DESCRIPTOR_WEIGHT`] for each file held open (so the default holds at
//! most 1,024 descriptors), plus the key and a fixed overhead. Files up to
//! [`CacheOptions::content_max`] (256 KiB) are held in memory; files over [`SENDFILE_MIN`]
//! (64 KiB) are also held open, and sent from the descriptor where `sendfile` can be used. Entries past the budget are evicted by `quick_cache`'s
//! CLOCK-Pro policy, which keeps often-asked entries over a scan of paths asked once.
//! Paths that lead nowhere (404) and failures are never cached.

use std::collections::HashMap;
use std::fmt;
use std::fs::File;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderValue, StatusCode};
use quick_cache::sync::Cache;
use quick_cache::Weighter;
use serde::Deserialize;
use tokio::sync::watch;

use super::conditional::Validators;
use super::encoding::Encoding;

/// The weight of a file held open: 64 KiB, so a budget of 64 MiB holds at most 1,024
/// descriptors even when every entry holds one.
pub(crate) const DESCRIPTOR_WEIGHT: u64 = 64 * 1024;

/// Files larger than this are held open, also when their contents are held: on a plain
/// HTTP/1 connection `sendfile` spares the copy from memory to the socket, which for a
/// 100 KB file costs more than the extra system call (64 KiB).
pub(crate) const SENDFILE_MIN: u64 = 64 * 1024;

/// The weight of an entry beyond its key and contents: the structures around them.
const ENTRY_WEIGHT: u64 = 512;

/// How [`StaticFiles`](super::StaticFiles) caches what it found on disk; the `static_cache`
/// table of an `http` or `https` listener (`static_cache = { size = 0 }` turns it off).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CacheOptions {
    /// The most the cache holds, in bytes (contents, plus 64 KiB per file held open, plus a
    /// small overhead per entry). Default is 64 MiB; `0` turns the cache off (every request
    /// resolves its path on the blocking pool).
    pub size: u64,
    /// How long an entry is trusted after the file system was last asked: the bound on how
    /// long a change on disk may go unseen. Default is 1 s; zero turns the cache off.
    #[serde(with = "crate::options::duration")]
    pub revalidate_after: Duration,
    /// The largest file whose contents are held in memory; larger files are held open and
    /// sent from the file (with `sendfile` where the connection allows). Default is 256 KiB.
    pub content_max: u64,
}

impl Default for CacheOptions {
    fn default() -> CacheOptions {
        CacheOptions {
            size: 64 << 20,
            revalidate_after: Duration::from_secs(1),
            content_max: 256 << 10,
        }
    }
}

impl CacheOptions {
    /// Whether anything is cached at all.
    pub(crate) fn enabled(&self) -> bool {
        self.size > 0 && !self.revalidate_after.is_zero()
    }
}

// ===== entries =====

/// A file as it was found: the original or a precompressed variant.
pub(crate) struct Variant {
    /// Its contents, for a file up to `content_max`.
    pub(crate) data: Option<Bytes>,
    /// The open file, for one larger than [`SENDFILE_MIN`]: sent from it with `sendfile`
    /// where the connection allows, read from it when its contents are not held.
    pub(crate) file: Option<Arc<File>>,
    /// Its length, from the open file.
    pub(crate) len: u64,
    /// The same as a `Content-Length` value, made once for the answers of the whole file.
    pub(crate) content_length: HeaderValue,
    /// `ETag` and `Last-Modified`, worked out once.
    pub(crate) validators: Validators,
    /// The content coding of a variant; `None` for the original.
    pub(crate) encoding: Option<Encoding>,
}

/// What a request path led to: the file to serve and its variants.
pub(crate) struct Resolved {
    /// The file itself.
    pub(crate) original: Variant,
    /// `NAME.br`, when it is a regular file under the root.
    pub(crate) brotli: Option<Variant>,
    /// `NAME.gz`, likewise.
    pub(crate) gzip: Option<Variant>,
    /// The original's content type, also sent with a variant.
    pub(crate) content_type: &'static str,
}

impl Resolved {
    /// The variant in `encoding`, if there is one.
    pub(crate) fn variant(&self, encoding: Encoding) -> Option<&Variant> {
        match encoding {
            Encoding::Brotli => self.brotli.as_ref(),
            Encoding::Gzip => self.gzip.as_ref(),
        }
    }

    /// Its weight in the cache, the key aside.
    fn weight(&self) -> u64 {
        [
            Some(&self.original),
            self.brotli.as_ref(),
            self.gzip.as_ref(),
        ]
        .into_iter()
        .flatten()
        .map(|v| {
            let data = v.data.as_ref().map_or(0, |d| d.len() as u64);
            data + v.file.as_ref().map_or(0, |_| DESCRIPTOR_WEIGHT)
        })
        .sum()
    }
}

/// What a request path leads to, when worth remembering.
// Boxing the file would add an allocation per entry for nothing: an entry lives in an `Arc`,
// and redirects are few.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Outcome {
    /// A directory asked for without its trailing slash: `301`.
    Redirect,
    /// A file (for a directory, its index).
    File(Resolved),
}

/// One remembered outcome and when it was checked.
pub(crate) struct Entry {
    /// When the file system was asked.
    pub(crate) checked: Instant,
    /// What the path led to then.
    pub(crate) outcome: Outcome,
}

impl fmt::Debug for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let outcome = match &self.outcome {
            Outcome::Redirect => "redirect",
            Outcome::File(_) => "file",
        };
        f.debug_struct("Entry")
            .field("checked", &self.checked)
            .field("outcome", &outcome)
            .finish()
    }
}

// ===== the cache =====

/// Weighs an entry as the budget counts it.
#[derive(Debug, Clone)]
struct Weight;

impl Weighter<Box<str>, Arc<Entry>> for Weight {
    fn weight(&self, key: &Box<str>, entry: &Arc<Entry>) -> u64 {
        let outcome = match &entry.outcome {
            Outcome::Redirect => 0,
            Outcome::File(resolved) => resolved.weight(),
        };
        ENTRY_WEIGHT + key.len() as u64 + outcome
    }
}

/// Outcomes by raw request path, within the budget. Shared by the clones of a
/// `StaticFiles`.
pub(crate) struct FileCache {
    /// The entries by raw request path; `None` when caching is off.
    entries: Option<Cache<Box<str>, Arc<Entry>, Weight>>,
    /// The budget and the freshness bound.
    options: CacheOptions,
    /// The loads under way, by raw request path: what their outcome will come through.
    loading: Mutex<HashMap<Box<str>, watch::Receiver<Option<Loaded>>>>,
    /// How many loads were started (for tests; counted by [`StaticFiles`](super::StaticFiles)).
    #[cfg(test)]
    pub(crate) loads: std::sync::atomic::AtomicUsize,
}

/// What a load gave, as the requests that waited for it take it: the entry, or the status
/// of the empty answer (404, 403, 500).
pub(crate) type Loaded = Result<Arc<Entry>, StatusCode>;

/// A request's part in loading a path: load it, or wait for the load under way.
pub(crate) enum Turn<'a> {
    Load(Loader<'a>),
    Wait(watch::Receiver<Option<Loaded>>),
}

/// The request loading a path. The others asking meanwhile get what it hands to
/// [`done`](Self::done); if it is dropped first (its request went away), they are woken to
/// try again.
pub(crate) struct Loader<'a> {
    cache: &'a FileCache,
    path: &'a str,
    outcome: watch::Sender<Option<Loaded>>,
}

impl Loader<'_> {
    /// Hands the outcome to the requests waiting for it.
    pub(crate) fn done(self, loaded: Loaded) {
        self.outcome.send_replace(Some(loaded));
    }
}

impl Drop for Loader<'_> {
    fn drop(&mut self) {
        self.cache.lock_loading().remove(self.path);
    }
}

impl fmt::Debug for FileCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileCache")
            .field("options", &self.options)
            .field("entries", &self.entries.as_ref().map_or(0, |c| c.len()))
            .finish()
    }
}

impl FileCache {
    /// An empty cache within `options`.
    pub(crate) fn new(options: CacheOptions) -> FileCache {
        let entries = options.enabled().then(|| {
            // The estimate sizes the table up front: entries of small files, roughly.
            let estimate = (options.size / (4 * 1024)).clamp(64, 16_384) as usize;
            Cache::with_weighter(estimate, options.size, Weight)
        });
        FileCache {
            entries,
            options,
            loading: Mutex::new(HashMap::new()),
            #[cfg(test)]
            loads: Default::default(),
        }
    }

    fn lock_loading(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<Box<str>, watch::Receiver<Option<Loaded>>>> {
        self.loading.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether this request loads `path` or waits for the load under way. Asked only with
    /// the cache on: with it off, [`StaticFiles`](super::StaticFiles) has each request load
    /// on its own.
    pub(crate) fn turn<'a>(&'a self, path: &'a str) -> Turn<'a> {
        let mut loading = self.lock_loading();
        if let Some(under_way) = loading.get(path) {
            return Turn::Wait(under_way.clone());
        }
        let (outcome, waiting) = watch::channel(None);
        loading.insert(path.into(), waiting);
        drop(loading);
        Turn::Load(Loader {
            cache: self,
            path,
            outcome,
        })
    }

    /// The budget and the freshness bound.
    pub(crate) fn options(&self) -> CacheOptions {
        self.options
    }

    /// The entry for `path` if it was checked within `revalidate_after`.
    #[inline]
    pub(crate) fn fresh(&self, path: &str) -> Option<Arc<Entry>> {
        let entry = self.entries.as_ref()?.get(path)?;
        (entry.checked.elapsed() < self.options.revalidate_after).then_some(entry)
    }

    /// Remembers `entry` for `path` (replacing what was there), unless caching is off.
    pub(crate) fn insert(&self, path: &str, entry: Arc<Entry>) {
        if let Some(entries) = &self.entries {
            entries.insert(path.into(), entry);
        }
    }

    /// Forgets `path`: it led nowhere, or failed, when checked again.
    pub(crate) fn remove(&self, path: &str) {
        if let Some(entries) = &self.entries {
            entries.remove(path);
        }
    }

    /// How many entries are held (for tests).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.as_ref().map_or(0, |c| c.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(data: &'static [u8]) -> Arc<Entry> {
        let variant = Variant {
            data: Some(Bytes::from_static(data)),
            file: None,
            len: data.len() as u64,
            content_length: HeaderValue::from(data.len()),
            validators: Validators::of(data.len() as u64, None, None),
            encoding: None,
        };
        Arc::new(Entry {
            checked: Instant::now(),
            outcome: Outcome::File(Resolved {
                original: variant,
                brotli: None,
                gzip: None,
                content_type: "text/plain",
            }),
        })
    }

    #[test]
    fn entries_are_weighed_by_contents_and_key() {
        let entry = file(b"0123456789");
        assert_eq!(
            Weight.weight(&"a.txt".into(), &entry),
            ENTRY_WEIGHT + 5 + 10
        );
        let redirect = Arc::new(Entry {
            checked: Instant::now(),
            outcome: Outcome::Redirect,
        });
        assert_eq!(Weight.weight(&"dir".into(), &redirect), ENTRY_WEIGHT + 3);
    }

    #[test]
    fn an_entry_is_fresh_until_the_bound_and_never_when_off() {
        let cache = FileCache::new(CacheOptions::default());
        cache.insert("/a", file(b"a"));
        assert!(cache.fresh("/a").is_some());
        assert_eq!(cache.len(), 1);
        let old = Arc::new(Entry {
            checked: Instant::now() - Duration::from_secs(2),
            outcome: Outcome::Redirect,
        });
        cache.insert("/old", old);
        assert!(cache.fresh("/old").is_none(), "past 1 s");
        cache.remove("/a");
        assert!(cache.fresh("/a").is_none());

        for off in [
            CacheOptions {
                size: 0,
                ..CacheOptions::default()
            },
            CacheOptions {
                revalidate_after: Duration::ZERO,
                ..CacheOptions::default()
            },
        ] {
            let cache = FileCache::new(off);
            cache.insert("/a", file(b"a"));
            assert!(cache.fresh("/a").is_none());
            assert_eq!(cache.len(), 0);
        }
    }

    #[test]
    fn the_budget_bounds_what_is_held() {
        let cache = FileCache::new(CacheOptions {
            size: 64 * 1024,
            ..CacheOptions::default()
        });
        static DATA: [u8; 4096] = [7; 4096];
        for i in 0..100 {
            cache.insert(&format!("/f{i}"), file(&DATA));
        }
        let held = cache.len() as u64;
        assert!(
            held > 0 && held * (4096 + ENTRY_WEIGHT) <= 64 * 1024,
            "{held}"
        );
    }
}
