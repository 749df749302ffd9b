//! Serving the files under one directory: path safety, finding and opening the file, and the
//! responses. [`StaticFiles`] documents the behaviour; the content codings it negotiates are in
//! `encoding`, validators, preconditions and ranges in `conditional`, what it remembers
//! between requests in `file_cache`, and the response body type is [`FileBody`].

use std::fmt;
use std::fs;
use std::io::{self, Read};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Response, StatusCode};
use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, CONTROLS};

use super::conditional::{parse_range, Precondition, Span, Validators};
use super::encoding::{Encoding, Encodings};
use super::file_body::FileBody;
use super::file_cache::{
    CacheOptions, Entry, FileCache, Outcome, Resolved, Turn, Variant, SENDFILE_MIN,
};
use super::mime;
use crate::telemetry::budget::{Clock, LogBudget, Suppressed};
use crate::telemetry::FailureLogBudget;

/// The file a directory is served as.
const INDEX: &str = "index.html";

/// The longest path segment accepted. Common file systems cap names at 255 bytes; a longer
/// one cannot exist, and refusing it early keeps the OS's "name too long" error from
/// surfacing as a `500`.
const MAX_SEGMENT: usize = 255;

/// The longest full path (root included) accepted, for the same reason as [`MAX_SEGMENT`]:
/// Linux's `PATH_MAX` is 4096, and this leaves room for `/index.html` and a `.br` suffix.
const MAX_PATH: usize = 4000;

/// What is percent-encoded when part of the raw path is echoed in a `Location` header: what a
/// header value cannot hold (controls, and non-ASCII, which `utf8_percent_encode` always
/// encodes), and what would end a path in a URI. The path came from a request line, already
/// encoded, so this is a guard, not a transformation.
const LOCATION: &AsciiSet = &CONTROLS.add(b' ').add(b'?').add(b'#');

// ===== StaticFiles =====

/// Serves the files under one directory.
///
/// Cheap to clone (the root is shared). [`StaticFiles::serve`] answers one request in this
/// order:
///
/// 1. Only `GET` and `HEAD` are served; anything else is `405` with `Allow: GET, HEAD`.
/// 2. The raw path is percent-decoded exactly once and checked segment by segment: a `..`
///    segment, a backslash, a NUL byte, invalid UTF-8, or a segment that the platform would read
///    as more than a plain name (a Windows drive prefix, say) is `404` before the file system is
///    touched. `%252e` decodes to the literal name `%2e`, which is fine.
/// 3. The path is joined to the root and canonicalized; a result outside the canonical root
///    (a symbolic link pointing out, file or directory) is `404`, exactly as if it did not exist,
///    so nothing about the outside is revealed. Links that stay inside the root are followed.
/// 4. A directory serves its `index.html`. Asked for without a trailing slash, it is first
///    redirected (`301`) to the same path with one, so that relative links in the page resolve
///    inside the directory. There are no listings: a directory without `index.html` is `404`.
///    A regular file asked for *with* a trailing slash is `404`, for the same reason the other
///    way round. Anything that is neither a regular file nor a directory (a FIFO, a device) is
///    `404` and is never opened.
/// 5. A precompressed sibling (`page.html.br`, `page.html.gz`) is chosen from `Accept-Encoding`.
/// 6. Preconditions (`If-Match`, `If-Unmodified-Since`, `If-None-Match`, `If-Modified-Since`)
///    give `412` or `304`, then `Range` and `If-Range` give `206` or `416`.
///
/// Details of the last two steps:
///
/// - Variants: `br` and `gzip` (or `x-gzip`) are tried in order of their weight in
///   `Accept-Encoding`, Brotli first on a tie; `q=0` refuses a coding and `*` stands for
///   the codings not named. A variant must be a regular file under the root (a link pointing
///   out is ignored); it keeps the original's `Content-Type`, gets `Content-Encoding`, and an
///   `ETag` of its own (the coding appended). Without `Accept-Encoding` the original is sent.
///   `Vary: Accept-Encoding` is sent for every file. A file asked for by name, such as
///   `x.gz`, is sent as stored, with its own type (`application/gzip`).
/// - Ranges: one `bytes` range (`a-b`, `a-`, `-n`) gives `206` with `Content-Range`; one
///   entirely past the end gives `416` with `Content-Range: bytes */len`. Several ranges give
///   the whole file with `200` (allowed by RFC 9110, and spares a multipart body), and a
///   malformed header is ignored. A GET request with a Range header is always served from the
///   original, never from a variant, so offsets mean the same thing on every request. Range is
///   ignored on HEAD, for which the RFC defines no range handling. `Accept-Ranges: bytes` is
///   always sent.
/// - Validators: `Last-Modified` is the modification time; `ETag` is the length and the
///   modification time in nanoseconds, in hex (`"1a2b-17f3c0e8d4a1b2c0"`). `If-None-Match`
///   uses weak comparison, `If-Match` and `If-Range` strong; dates compare to the second.
///   A `304` carries `ETag`, `Last-Modified` and `Vary`, and no body.
/// - Bodies: on a plain-TCP HTTP/1 connection, a file over 64 KiB is sent from the open file
///   with `sendfile(2)` (each call a [`Sendfile`](crate::telemetry::EventKind::Sendfile)
///   event), a smaller one from memory. On TLS and HTTP/2 connections, a file of up to
///   256 KiB ([`CacheOptions::content_max`]) is sent from memory, a larger one read from the
///   open file in 64 KiB chunks. `Content-Length` is always set.
///
/// What was found on disk is cached (see [`CacheOptions`] and [`StaticFiles::cache`]):
///
/// - Per raw request path: a file with its variants, validators, its contents (up to
///   256 KiB) and its open descriptor (over 64 KiB), or a directory redirect. A request for a cached
///   path is answered on its connection's task with no file-system call. Paths that lead
///   nowhere and failures are not cached.
/// - Freshness: an entry is trusted for [`CacheOptions::revalidate_after`] (default 1 s)
///   after the file system was asked; the next request resolves the path again, with every
///   check above, and the requests for that path that come meanwhile wait for it and take
///   its outcome (one trip to the blocking pool, not one per connection). A file changed,
///   added or removed on disk, or a link swapped, is served as it now is at most that long
///   after the change. Until then the entry serves what was checked,
///   from memory or from the descriptor opened then: never anything outside the root. A file
///   rewritten in place within the bound may be sent with its old length and validators
///   (a shorter file then ends the response with an error).
/// - Budget: [`CacheOptions::size`] (default 64 MiB) counts the contents held, 64 KiB per
///   descriptor held (so at most 1,024 by default), and the keys; past it, entries are
///   evicted (CLOCK-Pro: often-asked paths stay over a scan of paths asked once).
/// - Threads: a cached path uses none but the connection's; resolving an uncached path, and
///   reading a large file through memory, run on tokio's blocking pool, at most 16 at once
///   process-wide.
///
/// Choices worth knowing:
///
/// - Hidden files (names starting with `.`) are served like any other: what is under the root is
///   public. Keep `.git` and friends out of it.
/// - `Cache-Control` is not set: how long a file may be cached is the application's call (add
///   it around this service); the validators make revalidation cheap either way. `Date` is left
///   to the HTTP connection (hyper adds it).
/// - Errors map to `404` (not found, not a directory, refused path), `403` (permission denied)
///   and `500` (any other I/O error). Error responses have an empty body. A `403` or `500`
///   means the site is not what its owner meant, so it is logged (`WARN`, target
///   `atoll::http`) with the root, the path asked for and the OS error, within a budget
///   for one `StaticFiles` (and its clones; see
///   [`failure_log_budget`](StaticFiles::failure_log_budget), 10 lines per 10 s by
///   default), then one line with how many more there were.
/// - The file system under the root is trusted not to be rearranged by an attacker *during* a
///   request: the check is made on the canonical path, which is then opened. A change after
///   it is seen within the freshness bound.
#[derive(Debug, Clone)]
pub struct StaticFiles {
    /// The canonical root, resolved once in [`StaticFiles::new`]. Every file served has a
    /// canonical path under it; that comparison is what keeps symbolic links from leading out.
    root: Arc<Path>,
    /// The log budget of the files that could not be opened, shared by the clones.
    failures: Arc<OpenFailures>,
    /// What was found on disk for recent request paths, shared by the clones.
    cache: Arc<FileCache>,
}

/// Counts the requests answered 403 or 500 because of the file system, for their log lines.
#[derive(Debug)]
struct OpenFailures {
    clock: Clock,
    budget: LogBudget,
}

impl StaticFiles {
    /// Serves the directory `root`.
    ///
    /// The root must exist, be a directory, and be searchable by this process (the `x`
    /// permission: names in it can be looked up; listing it is not needed, and never done).
    /// It is canonicalized once here (blocking calls, meant for start-up), so later renames of
    /// the path given do not move what is served, and a root reached through a symbolic link
    /// works.
    ///
    /// A root that exists but cannot be searched is refused here rather than served: every
    /// request would be answered `403`, which looks like a working server to a health check
    /// and like a broken site to everyone else.
    ///
    /// # Errors
    ///
    /// The I/O error from resolving the path (or looking a name up in it:
    /// [`PermissionDenied`](io::ErrorKind::PermissionDenied) when it cannot be searched), or
    /// one of kind [`NotADirectory`](io::ErrorKind::NotADirectory) when it is something else;
    /// the message names the path.
    pub fn new(root: impl AsRef<Path>) -> io::Result<StaticFiles> {
        let given = root.as_ref();
        let named = |e: io::Error| {
            io::Error::new(e.kind(), format!("static root {}: {e}", given.display()))
        };
        let root = fs::canonicalize(given).map_err(named)?;
        if !fs::metadata(&root).map_err(named)?.is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::NotADirectory,
                format!("static root {} is not a directory", given.display()),
            ));
        }
        // Looking `.` up in the root needs what serving any file in it needs.
        if let Err(e) = fs::metadata(root.join(".")) {
            return Err(io::Error::new(
                e.kind(),
                format!(
                    "static root {}: cannot look up names in it: {e}",
                    given.display()
                ),
            ));
        }
        Ok(StaticFiles {
            root: root.into(),
            failures: Arc::new(OpenFailures {
                clock: Clock::new(),
                budget: LogBudget::default(),
            }),
            cache: Arc::new(FileCache::new(CacheOptions::default())),
        })
    }

    /// Caches what is found on disk as `options` say (the clones made before keep the old
    /// cache). Default is [`CacheOptions::default()`]: 64 MiB, each entry trusted for 1 s,
    /// contents held for files up to 256 KiB.
    #[must_use]
    pub fn cache(mut self, options: CacheOptions) -> StaticFiles {
        self.cache = Arc::new(FileCache::new(options));
        self
    }

    /// Logs the files that could not be opened within `budget`, with counts of its own (the
    /// clones made before keep the old budget). Default is [`FailureLogBudget::default()`],
    /// 10 lines per 10 s; a listener's `static_dir`, and the `static` resource of the config
    /// file, take the listener's (`failure_log_lines` and `failure_log_window`).
    #[must_use]
    pub fn failure_log_budget(mut self, budget: FailureLogBudget) -> StaticFiles {
        self.failures = Arc::new(OpenFailures {
            clock: Clock::new(),
            budget: LogBudget::new(budget),
        });
        self
    }

    /// The canonical root directory, as resolved by [`StaticFiles::new`].
    #[must_use]
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Answers one request.
    ///
    /// `path` is the raw request path relative to the mount point: percent-encoded as
    /// received, without the query string, with or without a leading `/`; `""` and `"/"` are
    /// the root.
    ///
    /// A directory redirect's `Location` is relative: the last segment of `path` plus `/`
    /// (`docs/api` → `api/`). Resolved against the URL the client asked for, that is the same
    /// URL with a trailing slash, whatever prefix the service is mounted under, and it can
    /// never name another host.
    ///
    /// Never panics, whatever the path and headers; failures are status codes.
    pub async fn serve(
        &self,
        method: &Method,
        path: &str,
        headers: &HeaderMap,
    ) -> Response<FileBody> {
        let head = match *method {
            Method::GET => false,
            Method::HEAD => true,
            _ => return method_not_allowed(),
        };
        // Range is only defined for GET (RFC 9110 §14.2); a HEAD request with one gets the
        // headers of the full response.
        let range = if head {
            None
        } else {
            headers.get(header::RANGE)
        };
        // A range is a range of one representation. Rather than cut ranges out of a
        // compressed variant (whose offsets mean nothing to a client that resumes a download
        // of the original), a request with a Range header is served from the original.
        let encodings = if range.is_some() {
            Encodings::NONE
        } else {
            Encodings::accepted(headers)
        };

        // A path checked within the freshness bound is answered from what was found then,
        // here on the connection's task; any other goes to the blocking pool once.
        let entry = match self.cache.fresh(path) {
            Some(entry) => entry,
            None => match self.load_once(path).await {
                Ok(entry) => entry,
                Err(response) => return response,
            },
        };
        let resolved = match &entry.outcome {
            Outcome::Redirect => return redirect(path),
            Outcome::File(resolved) => resolved,
        };
        let chosen = encodings
            .iter()
            .find_map(|encoding| resolved.variant(encoding))
            .unwrap_or(&resolved.original);

        let validators = &chosen.validators;
        match validators.evaluate(headers) {
            Precondition::Proceed => {}
            Precondition::NotModified => return validators.not_modified(),
            Precondition::Failed => return empty(StatusCode::PRECONDITION_FAILED),
        }

        let len = chosen.len;
        let span = match range {
            Some(value) if validators.if_range_allows(headers) => parse_range(value, len),
            _ => Span::Whole,
        };
        let (status, start, count) = match span {
            Span::Whole => (StatusCode::OK, 0, len),
            Span::Part { first, last } => (StatusCode::PARTIAL_CONTENT, first, last - first + 1),
            Span::Unsatisfiable => return range_not_satisfiable(len),
        };

        let body = match (&chosen.data, &chosen.file) {
            _ if head || count == 0 => FileBody::empty(),
            // The span lies within the length, which is the held contents' length.
            (Some(data), None) => {
                FileBody::bytes(data.slice(start as usize..(start + count) as usize))
            }
            // Also open: sent from the file where `sendfile` can be, from memory elsewhere.
            (Some(data), Some(file)) => FileBody::held(
                data.slice(start as usize..(start + count) as usize),
                file.clone(),
                start,
            ),
            (None, Some(file)) => FileBody::region(file.clone(), start, count),
            (None, None) => FileBody::empty(),
        };

        let mut response = Response::new(body);
        *response.status_mut() = status;
        // Room for the seven headers (HTTP/2 adds `Date` to the map) without growing it.
        *response.headers_mut() = HeaderMap::with_capacity(8);
        let h = response.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(resolved.content_type),
        );
        let content_length = match count == len {
            true => chosen.content_length.clone(),
            false => HeaderValue::from(count),
        };
        h.insert(header::CONTENT_LENGTH, content_length);
        h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
        if let Some(encoding) = chosen.encoding {
            h.insert(
                header::CONTENT_ENCODING,
                HeaderValue::from_static(encoding.token()),
            );
        }
        if status == StatusCode::PARTIAL_CONTENT {
            let end = start + count - 1;
            set(
                h,
                header::CONTENT_RANGE,
                &format!("bytes {start}-{end}/{len}"),
            );
        }
        validators.write(h);
        response
    }

    /// Loads `path`, or, when another request is loading it already, waits for that load
    /// and answers with its outcome (see [`FileCache`]'s freshness rule).
    async fn load_once(&self, path: &str) -> Result<Arc<Entry>, Response<FileBody>> {
        if !self.cache.options().enabled() {
            return self.load(path).await;
        }
        loop {
            match self.cache.turn(path) {
                Turn::Load(loader) => {
                    let loaded = self.load(path).await;
                    loader.done(match &loaded {
                        Ok(entry) => Ok(entry.clone()),
                        Err(response) => Err(response.status()),
                    });
                    return loaded;
                }
                Turn::Wait(mut outcome) => {
                    // An error here means the loader went away: its value says whether it
                    // finished first.
                    let _ = outcome.wait_for(Option::is_some).await;
                    let loaded = outcome.borrow().clone();
                    match loaded {
                        Some(Ok(entry)) => return Ok(entry),
                        Some(Err(status)) => return Err(empty(status)),
                        // Its request went away before the load was done: try again.
                        None => continue,
                    }
                }
            }
        }
    }

    /// Resolves `path` on the blocking pool (one trip: resolving, choosing, opening, reading
    /// metadata and small contents), and remembers the outcome. A path that leads nowhere or
    /// fails is answered (and forgotten, should it have led somewhere before).
    async fn load(&self, path: &str) -> Result<Arc<Entry>, Response<FileBody>> {
        let Some(request) = RequestPath::parse(path) else {
            return Err(empty(StatusCode::NOT_FOUND));
        };
        if self.root.as_os_str().len() + request.relative.as_os_str().len() >= MAX_PATH {
            return Err(empty(StatusCode::NOT_FOUND));
        }
        #[cfg(test)]
        self.cache
            .loads
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        // Taken before the file system is asked: the freshness bound counts from here.
        let checked = Instant::now();
        let root = Arc::clone(&self.root);
        let content_max = self.cache.options().content_max;
        let resolving = move || {
            let found = find(&root, &request, content_max);
            (request, found)
        };
        match super::file_work::run(resolving).await {
            Ok((_, Ok(Some(outcome)))) => {
                let entry = Arc::new(Entry { checked, outcome });
                self.cache.insert(path, entry.clone());
                Ok(entry)
            }
            Ok((_, Ok(None))) => {
                self.cache.remove(path);
                Err(empty(StatusCode::NOT_FOUND))
            }
            Ok((request, Err(e))) => {
                self.cache.remove(path);
                Err(self.failed(&request.relative, &e))
            }
            Err(_) => Err(empty(StatusCode::INTERNAL_SERVER_ERROR)),
        }
    }

    /// The answer to a request for `relative` that met `error`; a `403` or `500` is logged
    /// within the budget.
    fn failed(&self, relative: &Path, error: &io::Error) -> Response<FileBody> {
        let status = status_for(error);
        if status != StatusCode::NOT_FOUND {
            self.log_failure(relative, error, status);
        }
        empty(status)
    }

    #[cold]
    fn log_failure(&self, relative: &Path, error: &io::Error, status: StatusCode) {
        let now = self.failures.clock.now();
        let verdict = self.failures.budget.take(now);
        if let Some(s) = verdict.summary {
            warn_summary(&self.root, s, self.failures.budget.limit());
        }
        if verdict.log {
            // Debug-quoted: the name comes from the peer and may hold control characters.
            tracing::warn!(
                target: "atoll::http",
                "static_dir {}: cannot open {:?}: {}; answered {}",
                self.root.display(),
                relative,
                Reason(error),
                status.as_u16()
            );
        }
        if verdict.first_suppressed {
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                let (root, failures) = (self.root.clone(), self.failures.clone());
                let wait = self.failures.budget.window_end(now).saturating_sub(now);
                runtime.spawn(async move {
                    tokio::time::sleep(wait).await;
                    if let Some(s) = failures.budget.summary() {
                        warn_summary(&root, s, failures.budget.limit());
                    }
                });
            }
        }
    }
}

/// The line that sums up the failures not logged.
fn warn_summary(root: &Path, s: Suppressed, limit: FailureLogBudget) {
    tracing::warn!(
        target: "atoll::http",
        "static_dir {}: suppressed={} total={} (files that could not be opened, past {limit})",
        root.display(),
        s.count,
        s.total,
    );
}

/// An I/O error without the `(os error N)` tail: `Permission denied`.
struct Reason<'a>(&'a io::Error);

impl fmt::Display for Reason<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.raw_os_error() {
            Some(_) => write!(f, "{}", self.0.kind()),
            None => write!(f, "{}", self.0),
        }
    }
}

// ===== request path =====

/// A request path that passed the safety checks, before it meets the file system.
#[derive(Debug)]
struct RequestPath {
    /// The decoded segments joined: relative, made of plain names only (no `..`, no `.`, no
    /// root or prefix), so joining it to the root cannot leave the root lexically.
    relative: PathBuf,
    /// Whether the raw path ends in `/`, i.e. asks for a directory.
    trailing_slash: bool,
}

impl RequestPath {
    /// Decodes and checks a raw path; `None` when it must be refused.
    fn parse(raw: &str) -> Option<RequestPath> {
        // Decoding once, then checking, is what makes `%2e%2e` and `..%2f` as dangerous as
        // `..` and `../` (they are caught), and `%252e` a harmless literal `%2e`.
        let decoded = percent_decode_str(raw).decode_utf8().ok()?;
        // A backslash is a separator on Windows and has no business in a URL path elsewhere;
        // NUL cannot be in a file name and would truncate the path in C APIs.
        if decoded.contains(['\\', '\0']) {
            return None;
        }
        let mut relative = PathBuf::new();
        for segment in decoded.split('/') {
            match segment {
                "" | "." => continue,
                ".." => return None,
                _ if segment.len() > MAX_SEGMENT => return None,
                _ => {}
            }
            // Whatever else the platform reads as special (a `C:` prefix on Windows) would
            // make `join` replace the root instead of descending from it.
            let mut parts = Path::new(segment).components();
            match (parts.next(), parts.next()) {
                (Some(Component::Normal(_)), None) => relative.push(segment),
                _ => return None,
            }
        }
        Some(RequestPath {
            relative,
            trailing_slash: raw.ends_with('/'),
        })
    }

    /// Whether the path names the root itself, which is never redirected.
    fn is_root(&self) -> bool {
        self.relative.as_os_str().is_empty()
    }
}

// ===== opening =====

/// Finds the file for `request` and opens it and its variants (blocking). `None`: nothing
/// that may be served (outside the root, not a regular file, a directory without an index).
fn find(root: &Path, request: &RequestPath, content_max: u64) -> io::Result<Option<Outcome>> {
    let Some((path, meta)) = resolve(root, &root.join(&request.relative))? else {
        return Ok(None);
    };
    let path = if meta.is_dir() {
        if !request.trailing_slash && !request.is_root() {
            return Ok(Some(Outcome::Redirect));
        }
        // index.html may itself be a link, so it goes through the same check.
        match resolve(root, &path.join(INDEX))? {
            Some((index, meta)) if meta.is_file() => index,
            _ => return Ok(None),
        }
    } else if meta.is_file() && !request.trailing_slash {
        path
    } else {
        return Ok(None);
    };
    let file = fs::File::open(&path)?;
    let meta = file.metadata()?;
    // Checked again on the open file: what was checked by name may have been swapped.
    if !meta.is_file() {
        return Ok(None);
    }
    Ok(Some(Outcome::File(Resolved {
        original: variant(file, &meta, None, content_max)?,
        brotli: open_variant(root, &path, Encoding::Brotli, content_max),
        gzip: open_variant(root, &path, Encoding::Gzip, content_max),
        content_type: mime::content_type(&path),
    })))
}

/// What is kept of an open regular file: its contents when up to `content_max` bytes, the
/// file itself otherwise (blocking).
fn variant(
    mut file: fs::File,
    meta: &fs::Metadata,
    encoding: Option<Encoding>,
    content_max: u64,
) -> io::Result<Variant> {
    let len = meta.len();
    let validators = Validators::of(len, meta.modified().ok(), encoding);
    let data = match usize::try_from(len) {
        Ok(small) if len <= content_max => {
            let mut buf = vec![0; small];
            // A file that shrank since its length was read fails here rather than sending
            // fewer bytes than Content-Length promises.
            file.read_exact(&mut buf)?;
            Some(Bytes::from(buf))
        }
        _ => None,
    };
    let file = (data.is_none() || len > SENDFILE_MIN).then(|| Arc::new(file));
    Ok(Variant {
        data,
        file,
        len,
        content_length: HeaderValue::from(len),
        validators,
        encoding,
    })
}

/// Canonicalizes `candidate` and reads its metadata; `None` when it lies outside `root`.
fn resolve(root: &Path, candidate: &Path) -> io::Result<Option<(PathBuf, fs::Metadata)>> {
    let canonical = fs::canonicalize(candidate)?;
    // Component-wise, so `/srv/www-private` is not "under" `/srv/www`.
    if !canonical.starts_with(root) {
        return Ok(None);
    }
    let meta = fs::metadata(&canonical)?;
    Ok(Some((canonical, meta)))
}

/// `path` plus the encoding's suffix, if it is a regular file under the root (blocking). Any
/// failure means "no variant": the original is served instead, so a stray unreadable `.br`
/// file costs compression, not availability.
fn open_variant(root: &Path, path: &Path, encoding: Encoding, content_max: u64) -> Option<Variant> {
    let mut name = path.as_os_str().to_owned();
    name.push(encoding.suffix());
    let (variant_path, meta) = resolve(root, Path::new(&name)).ok()??;
    if !meta.is_file() {
        return None;
    }
    let file = fs::File::open(variant_path).ok()?;
    let meta = file.metadata().ok()?;
    if !meta.is_file() {
        return None;
    }
    variant(file, &meta, Some(encoding), content_max).ok()
}

/// The status for an I/O error met while resolving or reading.
fn status_for(error: &io::Error) -> StatusCode {
    match error.kind() {
        // InvalidInput: a path the OS refuses outright is as good as absent.
        io::ErrorKind::NotFound | io::ErrorKind::NotADirectory | io::ErrorKind::InvalidInput => {
            StatusCode::NOT_FOUND
        }
        io::ErrorKind::PermissionDenied => StatusCode::FORBIDDEN,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

// ===== responses =====

/// An empty response with `status`.
fn empty(status: StatusCode) -> Response<FileBody> {
    let mut response = Response::new(FileBody::empty());
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from(0u64));
    response
}

/// `405` naming the methods served.
fn method_not_allowed() -> Response<FileBody> {
    let mut response = empty(StatusCode::METHOD_NOT_ALLOWED);
    response
        .headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
    response
}

/// `416` with the file's length, so the client can ask again.
fn range_not_satisfiable(len: u64) -> Response<FileBody> {
    let mut response = empty(StatusCode::RANGE_NOT_SATISFIABLE);
    let h = response.headers_mut();
    set(h, header::CONTENT_RANGE, &format!("bytes */{len}"));
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    response
}

/// `301` to the same URL with a trailing slash, as a relative reference.
fn redirect(raw: &str) -> Response<FileBody> {
    // The raw path plus `/` would be wrong twice over: `path` is relative to the mount point,
    // so it lacks the prefix, and a path starting `//` would name another host. The last
    // segment alone resolves against the request URL to exactly that URL plus `/`.
    let last = raw.rsplit('/').next().unwrap_or(raw);
    // A first segment holding `:` would read as a URI scheme (`javascript:x/`).
    let location = if last.contains(':') {
        format!("./{last}/")
    } else {
        format!("{last}/")
    };
    let mut response = empty(StatusCode::MOVED_PERMANENTLY);
    let location = utf8_percent_encode(&location, LOCATION).to_string();
    set(response.headers_mut(), header::LOCATION, &location);
    response
}

/// Inserts a header built from text this module produced; text a header cannot hold would be
/// a bug here, and leaving the header out beats failing the response.
fn set(headers: &mut HeaderMap, name: HeaderName, value: &str) {
    if let Ok(value) = HeaderValue::from_str(value) {
        headers.insert(name, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::conditional::{seconds, HTTP_DATE_END};
    use crate::http::file_body::CHUNK;
    use bytes::Bytes;
    use http_body::Body;
    use http_body_util::BodyExt;
    use std::time::{Duration, UNIX_EPOCH};

    /// The outside file no request may ever get.
    const SECRET: &[u8] = b"TOP SECRET, outside the root";

    /// A tree: `tmp/secret` and `tmp/outside/` beside `tmp/root/`, which is served.
    struct Fixture {
        /// Keeps the tree alive.
        _dir: tempfile::TempDir,
        /// The server over `tmp/root`.
        files: StaticFiles,
        /// `tmp/root`.
        root: PathBuf,
    }

    /// 300 KiB of a pattern that does not repeat on chunk boundaries.
    fn big() -> Vec<u8> {
        (0..300 * 1024u32).map(|i| (i % 251) as u8).collect()
    }

    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let top = dir.path();
        fs::write(top.join("secret"), SECRET).unwrap();
        fs::create_dir(top.join("outside")).unwrap();
        fs::write(top.join("outside/inner.txt"), SECRET).unwrap();
        fs::write(top.join("outside/index.html"), SECRET).unwrap();

        let root = top.join("root");
        let w = |name: &str, data: &[u8]| {
            let path = root.join(name);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(path, data).unwrap();
        };
        w("index.html", b"<h1>home</h1>");
        w("hello.txt", b"hello world");
        w("style.css", b"body{}");
        w("app.js", b"1");
        w("data.json", b"{}");
        w("image.png", b"\x89PNG");
        w("file.xyz", b"?");
        w("Makefile", b"all:");
        w(".hidden", b"dot");
        w("%2e", b"literal percent name");
        w("sub/index.html", b"sub index");
        w("sub/page.txt", b"sub page");
        w("sub/deeper/index.html", b"deeper index");
        w("etc/passwd", b"fake passwd under root");
        w("page.html", b"<p>plain</p>");
        w("page.html.br", b"BROTLI BYTES");
        w("page.html.gz", b"GZIP BYTES");
        w("only-gz.css", b"css plain");
        w("only-gz.css.gz", b"css gzip");
        w("archive.gz", b"\x1f\x8b raw gzip");
        w("leak.txt", b"leak plain");
        w("big.bin", &big());
        fs::create_dir(root.join("empty")).unwrap();
        std::os::unix::fs::symlink(top.join("secret"), root.join("link-out")).unwrap();
        std::os::unix::fs::symlink(top.join("outside"), root.join("dir-out")).unwrap();
        std::os::unix::fs::symlink(top.join("secret"), root.join("leak.txt.br")).unwrap();
        std::os::unix::fs::symlink(root.join("hello.txt"), root.join("link-in")).unwrap();
        fs::create_dir(root.join("sub2")).unwrap();
        std::os::unix::fs::symlink(top.join("secret"), root.join("sub2/index.html")).unwrap();

        let files = StaticFiles::new(&root).unwrap();
        Fixture {
            _dir: dir,
            files,
            root,
        }
    }

    /// One answered request, body collected.
    struct Answer {
        status: StatusCode,
        headers: HeaderMap,
        body: Bytes,
    }

    impl Answer {
        fn header(&self, name: &str) -> Option<&str> {
            self.headers.get(name).map(|v| v.to_str().unwrap())
        }
    }

    async fn ask(
        files: &StaticFiles,
        method: Method,
        path: &str,
        pairs: &[(&str, &str)],
    ) -> Answer {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        let work = async {
            let response = files.serve(&method, path, &headers).await;
            let (parts, body) = response.into_parts();
            let hint = body.size_hint().exact();
            let body = body.collect().await.unwrap().to_bytes();
            assert_eq!(hint, Some(body.len() as u64), "size hint for {path}");
            Answer {
                status: parts.status,
                headers: parts.headers,
                body,
            }
        };
        tokio::time::timeout(Duration::from_secs(10), work)
            .await
            .expect("serve hung")
    }

    async fn get(files: &StaticFiles, path: &str) -> Answer {
        ask(files, Method::GET, path, &[]).await
    }

    /// `n` requests for `path` that all start (each polled once, so each has either started
    /// a load or found one under way) before any is done; then their answers.
    async fn together(files: &StaticFiles, path: &str, n: usize) -> Vec<Answer> {
        use std::future::Future;
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        let held = crate::http::file_work::hold_all().await;
        let mut asks: Vec<_> = (0..n).map(|_| Box::pin(get(files, path))).collect();
        for ask in &mut asks {
            assert!(ask.as_mut().poll(&mut cx).is_pending());
        }
        drop(held);
        let mut answers = Vec::new();
        for ask in asks {
            answers.push(ask.await);
        }
        answers
    }

    #[tokio::test]
    async fn a_stale_path_asked_by_many_at_once_is_loaded_once() {
        use std::future::Future;
        use std::sync::atomic::Ordering::Relaxed;
        let f = fixture();
        let files = f.files.clone().cache(CacheOptions {
            revalidate_after: Duration::from_millis(50),
            ..CacheOptions::default()
        });
        let loads = || files.cache.loads.load(Relaxed);
        let hello = |a: &Answer| a.status == StatusCode::OK && a.body[..] == b"hello world"[..];
        assert!(hello(&get(&files, "/hello.txt").await));
        assert_eq!(loads(), 1);
        tokio::time::sleep(Duration::from_millis(80)).await;
        // Stale for all 64 at once: one of them loads, the others take its outcome.
        assert!(together(&files, "/hello.txt", 64).await.iter().all(hello));
        assert_eq!(loads(), 2);
        // A path that leads nowhere is never cached, but is looked for once for all the
        // requests that ask while it is.
        let answers = together(&files, "/nope.txt", 64).await;
        assert!(answers.iter().all(|a| a.status == StatusCode::NOT_FOUND));
        assert_eq!(loads(), 3);
        // The loading request goes away: one waiting for it loads in its place.
        tokio::time::sleep(Duration::from_millis(80)).await;
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        let held = crate::http::file_work::hold_all().await;
        let mut first = Box::pin(get(&files, "/hello.txt"));
        let mut second = Box::pin(get(&files, "/hello.txt"));
        assert!(first.as_mut().poll(&mut cx).is_pending());
        assert!(second.as_mut().poll(&mut cx).is_pending());
        assert_eq!(loads(), 3 + 1);
        drop(first);
        drop(held);
        assert!(hello(&second.await));
        assert_eq!(loads(), 3 + 2);
    }

    #[tokio::test]
    async fn new_requires_an_existing_directory() {
        let f = fixture();
        assert_eq!(f.files.root(), fs::canonicalize(&f.root).unwrap());
        let missing = StaticFiles::new(f.root.join("nope")).unwrap_err();
        assert_eq!(missing.kind(), io::ErrorKind::NotFound);
        assert!(missing.to_string().contains("nope"), "{missing}");
        let file = StaticFiles::new(f.root.join("hello.txt")).unwrap_err();
        assert_eq!(file.kind(), io::ErrorKind::NotADirectory);
        assert!(file.to_string().contains("hello.txt"), "{file}");
    }

    #[tokio::test]
    async fn content_types_follow_extensions() {
        let f = fixture();
        for (path, ty) in [
            ("hello.txt", "text/plain; charset=utf-8"),
            ("style.css", "text/css; charset=utf-8"),
            ("app.js", "text/javascript; charset=utf-8"),
            ("data.json", "application/json"),
            ("image.png", "image/png"),
            ("file.xyz", "application/octet-stream"),
            ("Makefile", "application/octet-stream"),
            ("archive.gz", "application/gzip"),
        ] {
            let a = get(&f.files, path).await;
            assert_eq!(a.status, StatusCode::OK, "{path}");
            assert_eq!(a.header("content-type"), Some(ty), "{path}");
        }
        let a = get(&f.files, "/hello.txt").await;
        assert_eq!(&a.body[..], b"hello world");
        assert_eq!(a.header("content-length"), Some("11"));
        assert_eq!(a.header("accept-ranges"), Some("bytes"));
        assert_eq!(a.header("vary"), Some("accept-encoding"));
        assert_eq!(a.header("content-encoding"), None);
        assert_eq!(a.header("cache-control"), None);
    }

    #[tokio::test]
    async fn directories_serve_their_index() {
        let f = fixture();
        for path in ["", "/", "./", "%2e/"] {
            let a = get(&f.files, path).await;
            assert_eq!(a.status, StatusCode::OK, "{path:?}");
            assert_eq!(&a.body[..], b"<h1>home</h1>", "{path:?}");
            assert_eq!(a.header("content-type"), Some("text/html; charset=utf-8"));
        }
        for path in ["sub/", "/sub/", "sub//"] {
            let a = get(&f.files, path).await;
            assert_eq!(a.status, StatusCode::OK, "{path:?}");
            assert_eq!(&a.body[..], b"sub index", "{path:?}");
        }
        assert_eq!(
            &get(&f.files, "sub/deeper/").await.body[..],
            b"deeper index"
        );
    }

    #[tokio::test]
    async fn directories_without_slash_redirect() {
        let f = fixture();
        for (path, location) in [
            ("sub", "sub/"),
            ("/sub", "sub/"),
            ("//sub", "sub/"),
            ("sub/deeper", "deeper/"),
            ("/sub/deeper", "deeper/"),
            ("sub/.", "./"),
            ("empty", "empty/"),
        ] {
            let a = get(&f.files, path).await;
            assert_eq!(a.status, StatusCode::MOVED_PERMANENTLY, "{path}");
            assert_eq!(a.header("location"), Some(location), "{path}");
            assert!(a.body.is_empty());
        }
    }

    #[tokio::test]
    async fn redirect_location_cannot_leave_the_site() {
        for (raw, location) in [
            ("///evil.example", "evil.example/"),
            ("//evil.example/x", "x/"),
            ("javascript:x", "./javascript:x/"),
            ("a/b:c", "./b:c/"),
            ("a b", "a%20b/"),
            ("a?b#c", "a%3Fb%23c/"),
        ] {
            assert_eq!(redirect(raw).headers()["location"], location, "{raw}");
        }
    }

    #[tokio::test]
    async fn missing_things_are_not_found() {
        let f = fixture();
        for path in [
            "nope.txt",
            "sub/nope",
            "empty/",
            "hello.txt/",
            "hello.txt/x",
            "nope/",
        ] {
            let a = get(&f.files, path).await;
            assert_eq!(a.status, StatusCode::NOT_FOUND, "{path}");
            assert!(a.body.is_empty());
        }
    }

    #[tokio::test]
    async fn hidden_files_links_inside_and_literal_percent_names_are_served() {
        let f = fixture();
        assert_eq!(&get(&f.files, ".hidden").await.body[..], b"dot");
        assert_eq!(&get(&f.files, "link-in").await.body[..], b"hello world");
        // Decoded once: %252e is the name "%2e", not "." nor "..".
        assert_eq!(
            &get(&f.files, "%252e").await.body[..],
            b"literal percent name"
        );
        // Invalid escapes stay literal and simply name nothing.
        assert_eq!(get(&f.files, "%zz").await.status, StatusCode::NOT_FOUND);
    }

    #[tokio::test]
    async fn traversal_attempts_are_not_found() {
        let f = fixture();
        for path in [
            "../secret",
            "/../secret",
            "..",
            "../",
            "..%2fsecret",
            "..%2Fsecret",
            "%2e%2e/secret",
            "%2e%2e%2fsecret",
            "%2E%2E%2Fsecret",
            ".%2e/secret",
            "sub/../../secret",
            "sub/%2e%2e/%2e%2e/secret",
            "sub/..",
            "..\\secret",
            "..%5csecret",
            "%5c..%5csecret",
            "sub\\..\\..\\secret",
            "%00",
            "a%00b",
            "hello.txt%00.png",
            "%c0%ae%c0%ae/secret",
            "%ff",
            "link-out",
            "dir-out",
            "dir-out/",
            "dir-out/inner.txt",
            "sub2/",
        ] {
            let a = get(&f.files, path).await;
            assert_eq!(a.status, StatusCode::NOT_FOUND, "{path}");
            assert_ne!(&a.body[..], SECRET, "{path}");
            assert_eq!(a.header("location"), None, "{path}");
        }
    }

    #[tokio::test]
    async fn absolute_paths_after_decoding_stay_under_the_root() {
        let f = fixture();
        for path in [
            "%2fetc%2fpasswd",
            "/etc/passwd",
            "//etc/passwd",
            "%2F%2Fetc/passwd",
        ] {
            let a = get(&f.files, path).await;
            assert_eq!(a.status, StatusCode::OK, "{path}");
            assert_eq!(&a.body[..], b"fake passwd under root", "{path}");
        }
    }

    #[tokio::test]
    async fn no_input_panics_or_escapes() {
        let f = fixture();
        let alphabet = [
            "%", ".", "/", "\\", "2", "e", "f", "0", "5c", "%2e", "%2f", "secret",
        ];
        let mut paths = vec![String::new()];
        for _ in 0..3 {
            let mut next = Vec::new();
            for p in &paths {
                for a in alphabet {
                    next.push(format!("{p}{a}"));
                }
            }
            paths.extend(next);
            paths.dedup();
        }
        let junk = [
            ("range", "bytes=-"),
            ("if-none-match", "\"\"\","),
            ("accept-encoding", ";q="),
        ];
        for path in &paths {
            for p in [path.clone(), format!("../{path}"), format!("sub/{path}")] {
                let a = ask(&f.files, Method::GET, &p, &junk).await;
                assert_ne!(&a.body[..], SECRET, "{p}");
            }
        }
    }

    #[tokio::test]
    async fn fifos_and_other_special_files_are_never_opened() {
        let f = fixture();
        let made = std::process::Command::new("mkfifo")
            .arg(f.root.join("pipe"))
            .status();
        if !made.is_ok_and(|s| s.success()) {
            return; // no mkfifo here; nothing to test
        }
        // Opening a FIFO for reading would block until a writer comes; the timeout in `ask`
        // turns that into a failure.
        assert_eq!(get(&f.files, "pipe").await.status, StatusCode::NOT_FOUND);
    }

    #[tokio::test]
    async fn unreadable_files_are_forbidden() {
        use std::os::unix::fs::PermissionsExt;
        let f = fixture();
        let path = f.root.join("locked.txt");
        fs::write(&path, b"locked").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o000)).unwrap();
        if fs::read(&path).is_ok() {
            return; // running as root: permissions are not enforced
        }
        assert_eq!(
            get(&f.files, "locked.txt").await.status,
            StatusCode::FORBIDDEN
        );
    }

    #[tokio::test]
    async fn files_that_cannot_be_opened_are_logged_within_a_budget() {
        use crate::telemetry::capture::Captured;
        use crate::telemetry::{FAILURE_LOG_LINES, FAILURE_LOG_WINDOW};
        let captured = Captured::default();
        let _guard = captured.install();
        let f = fixture();
        // A loop of links fails to resolve for root too (permissions would not).
        std::os::unix::fs::symlink("loop-b", f.root.join("loop-a")).unwrap();
        std::os::unix::fs::symlink("loop-a", f.root.join("loop-b")).unwrap();
        for _ in 0..50 {
            let status = get(&f.files, "loop-a").await.status;
            assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        }
        // What is missing is only missing: not logged.
        assert_eq!(
            get(&f.files, "missing.txt").await.status,
            StatusCode::NOT_FOUND
        );
        let lines = captured.lines();
        assert_eq!(lines.len() as u64, FAILURE_LOG_LINES, "{lines:#?}");
        let root = f.files.root().display().to_string();
        for line in &lines {
            assert!(
                line.contains(&format!(
                    "WARN atoll::http: static_dir {root}: cannot open \"loop-a\": "
                )) && line.ends_with("; answered 500"),
                "{line}"
            );
        }
        // Once the window is over, one line counts the rest.
        tokio::time::pause();
        tokio::time::sleep(FAILURE_LOG_WINDOW * 2).await;
        let lines = captured.lines();
        assert_eq!(lines.len() as u64, FAILURE_LOG_LINES + 1, "{lines:#?}");
        assert!(
            lines
                .last()
                .unwrap()
                .contains(&format!("static_dir {root}: suppressed=40 total=50 ")),
            "{lines:#?}"
        );
    }

    #[tokio::test]
    async fn validators_are_sent() {
        let f = fixture();
        let a = get(&f.files, "hello.txt").await;
        let etag = a.header("etag").unwrap();
        let meta = fs::metadata(f.root.join("hello.txt")).unwrap();
        let nanos = meta
            .modified()
            .unwrap()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        assert_eq!(etag, format!("\"b-{nanos:x}\""));
        let lm = httpdate::parse_http_date(a.header("last-modified").unwrap()).unwrap();
        assert_eq!(seconds(lm), seconds(meta.modified().unwrap()));
    }

    #[tokio::test]
    async fn odd_modification_times_do_not_panic() {
        let f = fixture();
        let day = Duration::from_secs(86_400);
        let far = UNIX_EPOCH + Duration::from_secs(HTTP_DATE_END) + day;
        for (name, time) in [("old.txt", UNIX_EPOCH - day), ("far.txt", far)] {
            let path = f.root.join(name);
            fs::write(&path, b"x").unwrap();
            let file = fs::File::options().write(true).open(&path).unwrap();
            file.set_modified(time).unwrap();
            // ext4 clamps far-future times (to 2446), so check what was actually stored.
            let stored = fs::metadata(&path).unwrap().modified().unwrap();
            if seconds(stored).is_some_and(|s| s < HTTP_DATE_END) {
                continue;
            }
            let a = ask(
                &f.files,
                Method::GET,
                name,
                &[("if-modified-since", "Sun, 06 Nov 1994 08:49:37 GMT")],
            )
            .await;
            assert_eq!(a.status, StatusCode::OK, "{name}");
            assert_eq!(a.header("last-modified"), None, "{name}");
            assert!(a.header("etag").is_some(), "{name}");
        }
    }

    #[tokio::test]
    async fn if_none_match_gives_not_modified() {
        let f = fixture();
        let etag = get(&f.files, "hello.txt")
            .await
            .header("etag")
            .unwrap()
            .to_owned();
        let weak = format!("W/{etag}");
        let listed = format!("\"other\", \"a,b\" , {etag}");
        for value in [etag.as_str(), &weak, &listed, "*"] {
            for method in [Method::GET, Method::HEAD] {
                let a = ask(&f.files, method, "hello.txt", &[("if-none-match", value)]).await;
                assert_eq!(a.status, StatusCode::NOT_MODIFIED, "{value}");
                assert_eq!(a.header("etag"), Some(etag.as_str()));
                assert!(a.header("last-modified").is_some());
                assert_eq!(a.header("content-length"), None);
                assert!(a.body.is_empty());
            }
        }
        for value in ["\"other\"", "garbage", "\"unterminated"] {
            let a = ask(
                &f.files,
                Method::GET,
                "hello.txt",
                &[("if-none-match", value)],
            )
            .await;
            assert_eq!(a.status, StatusCode::OK, "{value}");
        }
    }

    #[tokio::test]
    async fn if_modified_since_gives_not_modified() {
        let f = fixture();
        let lm = get(&f.files, "hello.txt")
            .await
            .header("last-modified")
            .unwrap()
            .to_owned();
        let a = ask(
            &f.files,
            Method::GET,
            "hello.txt",
            &[("if-modified-since", &lm)],
        )
        .await;
        assert_eq!(a.status, StatusCode::NOT_MODIFIED);
        assert!(a.body.is_empty());
        let old = "Sun, 06 Nov 1994 08:49:37 GMT";
        let a = ask(
            &f.files,
            Method::GET,
            "hello.txt",
            &[("if-modified-since", old)],
        )
        .await;
        assert_eq!(a.status, StatusCode::OK);
        let a = ask(
            &f.files,
            Method::GET,
            "hello.txt",
            &[("if-modified-since", "yesterday")],
        )
        .await;
        assert_eq!(a.status, StatusCode::OK);
        // If-None-Match wins: a non-matching tag means modified, whatever the date says.
        let both = [
            ("if-modified-since", lm.as_str()),
            ("if-none-match", "\"other\""),
        ];
        assert_eq!(
            ask(&f.files, Method::GET, "hello.txt", &both).await.status,
            StatusCode::OK
        );
    }

    #[tokio::test]
    async fn failed_if_match_or_if_unmodified_since_is_412() {
        let f = fixture();
        let etag = get(&f.files, "hello.txt")
            .await
            .header("etag")
            .unwrap()
            .to_owned();
        let weak = format!("W/{etag}");
        for value in ["\"other\"", weak.as_str()] {
            let a = ask(&f.files, Method::GET, "hello.txt", &[("if-match", value)]).await;
            assert_eq!(a.status, StatusCode::PRECONDITION_FAILED, "{value}");
        }
        for value in [etag.as_str(), "*"] {
            let a = ask(&f.files, Method::GET, "hello.txt", &[("if-match", value)]).await;
            assert_eq!(a.status, StatusCode::OK, "{value}");
        }
        let old = "Sun, 06 Nov 1994 08:49:37 GMT";
        let a = ask(
            &f.files,
            Method::GET,
            "hello.txt",
            &[("if-unmodified-since", old)],
        )
        .await;
        assert_eq!(a.status, StatusCode::PRECONDITION_FAILED);
        let lm = get(&f.files, "hello.txt")
            .await
            .header("last-modified")
            .unwrap()
            .to_owned();
        let a = ask(
            &f.files,
            Method::GET,
            "hello.txt",
            &[("if-unmodified-since", &lm)],
        )
        .await;
        assert_eq!(a.status, StatusCode::OK);
    }

    #[tokio::test]
    async fn single_ranges_are_served() {
        let f = fixture();
        for (range, body, content_range) in [
            ("bytes=0-4", &b"hello"[..], "bytes 0-4/11"),
            ("bytes=6-", b"world", "bytes 6-10/11"),
            ("bytes=-5", b"world", "bytes 6-10/11"),
            ("bytes=-100", b"hello world", "bytes 0-10/11"),
            ("bytes=3-100", b"lo world", "bytes 3-10/11"),
            ("bytes=10-10", b"d", "bytes 10-10/11"),
            ("BYTES = 0-0", b"h", "bytes 0-0/11"),
            ("bytes=0-1, ", b"he", "bytes 0-1/11"),
            (
                "bytes=0-99999999999999999999999",
                b"hello world",
                "bytes 0-10/11",
            ),
        ] {
            let a = ask(&f.files, Method::GET, "hello.txt", &[("range", range)]).await;
            assert_eq!(a.status, StatusCode::PARTIAL_CONTENT, "{range}");
            assert_eq!(&a.body[..], body, "{range}");
            assert_eq!(a.header("content-range"), Some(content_range), "{range}");
            assert_eq!(
                a.header("content-length"),
                Some(body.len().to_string().as_str())
            );
            assert_eq!(a.header("accept-ranges"), Some("bytes"));
        }
    }

    #[tokio::test]
    async fn unsatisfiable_ranges_are_416() {
        let f = fixture();
        for range in [
            "bytes=11-",
            "bytes=20-30",
            "bytes=-0",
            "bytes=99999999999999999999999-",
        ] {
            let a = ask(&f.files, Method::GET, "hello.txt", &[("range", range)]).await;
            assert_eq!(a.status, StatusCode::RANGE_NOT_SATISFIABLE, "{range}");
            assert_eq!(a.header("content-range"), Some("bytes */11"), "{range}");
            assert!(a.body.is_empty());
        }
        fs::write(f.root.join("zero.txt"), b"").unwrap();
        let a = ask(&f.files, Method::GET, "zero.txt", &[("range", "bytes=-1")]).await;
        assert_eq!(a.status, StatusCode::RANGE_NOT_SATISFIABLE);
        assert_eq!(a.header("content-range"), Some("bytes */0"));
    }

    #[tokio::test]
    async fn multiple_or_malformed_ranges_give_the_whole_file() {
        let f = fixture();
        for range in [
            "bytes=0-1,3-4",
            "bytes=abc",
            "bytes=5-2",
            "items=0-1",
            "bytes",
            "bytes=",
            "bytes=-",
            "bytes=1-2-3",
            "bytes=+1-2",
        ] {
            let a = ask(&f.files, Method::GET, "hello.txt", &[("range", range)]).await;
            assert_eq!(a.status, StatusCode::OK, "{range}");
            assert_eq!(&a.body[..], b"hello world", "{range}");
            assert_eq!(a.header("content-range"), None);
        }
    }

    #[tokio::test]
    async fn if_range_keeps_or_drops_the_range() {
        let f = fixture();
        let first = get(&f.files, "hello.txt").await;
        let etag = first.header("etag").unwrap().to_owned();
        let lm = first.header("last-modified").unwrap().to_owned();
        let weak = format!("W/{etag}");
        for (if_range, status) in [
            (etag.as_str(), StatusCode::PARTIAL_CONTENT),
            (lm.as_str(), StatusCode::PARTIAL_CONTENT),
            ("\"other\"", StatusCode::OK),
            (weak.as_str(), StatusCode::OK),
            ("Sun, 06 Nov 1994 08:49:37 GMT", StatusCode::OK),
            ("nonsense", StatusCode::OK),
        ] {
            let headers = [("range", "bytes=0-4"), ("if-range", if_range)];
            let a = ask(&f.files, Method::GET, "hello.txt", &headers).await;
            assert_eq!(a.status, status, "{if_range}");
        }
    }

    #[tokio::test]
    async fn head_has_the_headers_and_no_body() {
        let f = fixture();
        let g = get(&f.files, "hello.txt").await;
        let h = ask(&f.files, Method::HEAD, "hello.txt", &[]).await;
        assert_eq!(h.status, StatusCode::OK);
        assert!(h.body.is_empty());
        assert_eq!(h.headers, g.headers);
        assert_eq!(h.header("content-length"), Some("11"));
        // Range is defined for GET only.
        let h = ask(
            &f.files,
            Method::HEAD,
            "hello.txt",
            &[("range", "bytes=0-1")],
        )
        .await;
        assert_eq!(h.status, StatusCode::OK);
        assert_eq!(h.header("content-length"), Some("11"));
        let big = ask(&f.files, Method::HEAD, "big.bin", &[]).await;
        assert_eq!(big.header("content-length"), Some("307200"));
        assert!(big.body.is_empty());
    }

    #[tokio::test]
    async fn other_methods_are_405() {
        let f = fixture();
        for method in [
            Method::POST,
            Method::PUT,
            Method::DELETE,
            Method::OPTIONS,
            Method::PATCH,
        ] {
            let a = ask(&f.files, method.clone(), "hello.txt", &[]).await;
            assert_eq!(a.status, StatusCode::METHOD_NOT_ALLOWED, "{method}");
            assert_eq!(a.header("allow"), Some("GET, HEAD"));
            assert!(a.body.is_empty());
        }
    }

    #[tokio::test]
    async fn precompressed_variants_follow_accept_encoding() {
        let f = fixture();
        let plain = get(&f.files, "page.html").await;
        for (accept, body, encoding) in [
            ("br, gzip", &b"BROTLI BYTES"[..], Some("br")),
            ("gzip, deflate, br", b"BROTLI BYTES", Some("br")),
            ("*", b"BROTLI BYTES", Some("br")),
            ("gzip", b"GZIP BYTES", Some("gzip")),
            ("x-gzip", b"GZIP BYTES", Some("gzip")),
            ("br;q=0, gzip", b"GZIP BYTES", Some("gzip")),
            ("gzip;q=1.0, br;q=0.5", b"GZIP BYTES", Some("gzip")),
            ("*;q=0.5, br;q=0", b"GZIP BYTES", Some("gzip")),
            ("br;q=0, gzip;q=0", b"<p>plain</p>", None),
            ("br;q=0.000, gzip;Q=0", b"<p>plain</p>", None),
            ("deflate", b"<p>plain</p>", None),
            ("br;q=2", b"<p>plain</p>", None),
            ("identity", b"<p>plain</p>", None),
        ] {
            let a = ask(
                &f.files,
                Method::GET,
                "page.html",
                &[("accept-encoding", accept)],
            )
            .await;
            assert_eq!(a.status, StatusCode::OK, "{accept}");
            assert_eq!(&a.body[..], body, "{accept}");
            assert_eq!(a.header("content-encoding"), encoding, "{accept}");
            assert_eq!(
                a.header("content-type"),
                Some("text/html; charset=utf-8"),
                "{accept}"
            );
            assert_eq!(a.header("vary"), Some("accept-encoding"), "{accept}");
            let etag = a.header("etag").unwrap();
            match encoding {
                Some(e) => {
                    assert_ne!(Some(etag), plain.header("etag"));
                    assert!(etag.ends_with(&format!("-{e}\"")), "{etag}");
                }
                None => assert_eq!(Some(etag), plain.header("etag")),
            }
        }
        // No header: the bytes as stored.
        assert_eq!(&plain.body[..], b"<p>plain</p>");
        // A variant's tag revalidates the variant.
        let br = ask(
            &f.files,
            Method::GET,
            "page.html",
            &[("accept-encoding", "br")],
        )
        .await;
        let etag = br.header("etag").unwrap();
        let again = [("accept-encoding", "br"), ("if-none-match", etag)];
        let a = ask(&f.files, Method::GET, "page.html", &again).await;
        assert_eq!(a.status, StatusCode::NOT_MODIFIED);
        // Index files get variants too, found under the index's own name.
        fs::write(f.root.join("sub/index.html.gz"), b"sub gz").unwrap();
        let a = ask(
            &f.files,
            Method::GET,
            "sub/",
            &[("accept-encoding", "gzip")],
        )
        .await;
        assert_eq!(&a.body[..], b"sub gz");
    }

    #[tokio::test]
    async fn variant_choice_falls_back_when_missing_or_outside() {
        let f = fixture();
        let a = ask(
            &f.files,
            Method::GET,
            "only-gz.css",
            &[("accept-encoding", "br, gzip")],
        )
        .await;
        assert_eq!(&a.body[..], b"css gzip");
        assert_eq!(a.header("content-encoding"), Some("gzip"));
        assert_eq!(a.header("content-type"), Some("text/css; charset=utf-8"));
        // leak.txt.br is a link to the secret: never used.
        let a = ask(
            &f.files,
            Method::GET,
            "leak.txt",
            &[("accept-encoding", "br")],
        )
        .await;
        assert_eq!(&a.body[..], b"leak plain");
        assert_eq!(a.header("content-encoding"), None);
        // Asked for by name, a .gz file is just a gzip file.
        let a = ask(
            &f.files,
            Method::GET,
            "archive.gz",
            &[("accept-encoding", "gzip")],
        )
        .await;
        assert_eq!(a.header("content-type"), Some("application/gzip"));
        assert_eq!(a.header("content-encoding"), None);
    }

    #[tokio::test]
    async fn ranges_skip_variants() {
        let f = fixture();
        let headers = [("accept-encoding", "br, gzip"), ("range", "bytes=3-4")];
        let a = ask(&f.files, Method::GET, "page.html", &headers).await;
        assert_eq!(a.status, StatusCode::PARTIAL_CONTENT);
        assert_eq!(&a.body[..], b"pl");
        assert_eq!(a.header("content-encoding"), None);
        assert_eq!(a.header("vary"), Some("accept-encoding"));
    }

    #[tokio::test]
    async fn large_files_stream_in_chunks() {
        let f = fixture();
        let data = big();
        let a = get(&f.files, "big.bin").await;
        assert_eq!(a.status, StatusCode::OK);
        assert_eq!(a.header("content-length"), Some("307200"));
        assert_eq!(&a.body[..], &data[..]);

        // Straddles the 64 KiB boundaries of both the file and the reads.
        for (first, last) in [
            (65_000u64, 200_000u64),
            (65_535, 65_536),
            (0, 65_536),
            (1, 307_199),
        ] {
            let range = format!("bytes={first}-{last}");
            let a = ask(&f.files, Method::GET, "big.bin", &[("range", &range)]).await;
            assert_eq!(a.status, StatusCode::PARTIAL_CONTENT, "{range}");
            assert_eq!(
                &a.body[..],
                &data[first as usize..=last as usize],
                "{range}"
            );
            let expected = format!("bytes {first}-{last}/307200");
            assert_eq!(a.header("content-range"), Some(expected.as_str()));
        }

        // Frame by frame: no frame above a chunk, the hint counts down, the end is exact.
        let headers = HeaderMap::new();
        let response = f.files.serve(&Method::GET, "big.bin", &headers).await;
        let mut body = response.into_body();
        let mut seen = 0u64;
        let mut frames = 0;
        while let Some(frame) = tokio::time::timeout(Duration::from_secs(10), body.frame())
            .await
            .unwrap()
        {
            let chunk = frame.unwrap().into_data().unwrap();
            assert!(chunk.len() <= CHUNK);
            seen += chunk.len() as u64;
            frames += 1;
            assert_eq!(body.size_hint().exact(), Some(307_200 - seen));
        }
        assert!(body.is_end_stream());
        assert_eq!(seen, 307_200);
        assert!(frames >= 5, "{frames} frames");
    }

    #[tokio::test]
    async fn a_file_that_shrinks_ends_the_body_with_an_error() {
        let f = fixture();
        let path = f.root.join("shrinks.bin");
        fs::write(&path, big()).unwrap();
        let headers = HeaderMap::new();
        let response = f.files.serve(&Method::GET, "shrinks.bin", &headers).await;
        fs::File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(1000)
            .unwrap();
        let result = tokio::time::timeout(Duration::from_secs(10), response.into_body().collect())
            .await
            .unwrap();
        assert_eq!(result.unwrap_err().kind(), io::ErrorKind::UnexpectedEof);
    }
}
