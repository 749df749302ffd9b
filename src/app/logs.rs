//! Logging of `atoll serve`: every line goes to stderr and to a log file in `log_dir`, rotated
//! by size.
//!
//! # On disk
//!
//! ```text
//! LOG_DIR/APP.log      the file being written (APP is `[app] name`, "atoll" by default)
//! LOG_DIR/APP.log.1    the newest rotated file
//! ...
//! LOG_DIR/APP.log.N    the oldest one kept, N = `[app] log_files` (default 5)
//! ```
//!
//! `APP.log` is opened in append mode and never truncated: a restart goes on where the last
//! run stopped. When a line would take it past `[app] log_max_size` bytes (default 10 MiB,
//! 10485760), it is rotated first: `APP.log.N` is removed, each `APP.log.K` becomes
//! `APP.log.K+1`, `APP.log` becomes `APP.log.1`, and a new `APP.log` is opened. A line is
//! never split, so a file holds at most `log_max_size` bytes, or one line when that line alone
//! is longer. With `log_files = 0` no copy is kept: `APP.log` is removed and started afresh.
//!
//! During a live upgrade the old and the new process append to the same `APP.log` (hence
//! `O_APPEND`, which keeps each line whole). Whichever crosses the limit first rotates it; the
//! other finds that the name now points to another file, and follows it instead of rotating
//! again.
//!
//! # What is logged
//!
//! Both copies get the same lines, in tracing-subscriber's default format; stderr is colored
//! only when it is a terminal, the file never. `RUST_LOG`, when set, is the filter (see
//! [`EnvFilter`]); otherwise `log_events` decides: `warn,atoll=LEVEL` for a level
//! (`"info"`, ...), else `warn`; and the lines of the target `atoll::app`, what the process
//! does (serving, a stop and the signal that asked it, each listener's drained and forced
//! connections, reloads, upgrades), are logged at INFO in every case.
//!
//! # When the file fails
//!
//! Logging never stops the server: a file that cannot be written (disk full, removed
//! directory) or rotated is reported once on stderr, and the server goes on. Lines that cannot
//! be written are dropped from the file (stderr still has them), the file is reopened at the
//! next line, and a rotation that failed is tried again once the file has grown by another
//! `log_max_size`. Only [`init`] fails, when the file cannot be opened at start.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, IsTerminal, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};

use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::format::{DefaultFields, Writer};
use tracing_subscriber::fmt::{FormatFields, MakeWriter};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

use crate::setup::AppEnv;
use crate::LogEvents;

// ===== init =====

/// Installs the process's global `tracing` subscriber: lines go to stderr and to
/// `LOG_DIR/APP.log`, rotated past `env.log_max_size` bytes with `env.log_files` copies kept
/// (see the [module docs](self)). The filter is `RUST_LOG` when set, else what `log_events`
/// implies. `log_dir` must exist ([`AppEnv::verify_directories`]).
///
/// Fails, with one line naming the file and why, when the log file cannot be opened, or when
/// a global subscriber is already installed.
pub fn init(env: &AppEnv, log_events: LogEvents) -> Result<(), String> {
    let file = LogFile::open(&env.log_dir, &env.name, env.log_max_size, env.log_files)
        .map_err(|e| e.to_string())?;
    let stderr = tracing_subscriber::fmt::layer()
        .with_writer(io::stderr)
        .with_ansi(io::stderr().is_terminal());
    let to_file = tracing_subscriber::fmt::layer()
        .fmt_fields(PlainFields::default())
        .with_writer(file)
        .with_ansi(false);
    tracing_subscriber::registry()
        .with(filter(log_events))
        .with(stderr)
        .with(to_file)
        .try_init()
        .map_err(|e| format!("cannot install the logger: {e}"))
}

/// `RUST_LOG` when set (and valid), else the filter `log_events` implies.
fn filter(log_events: LogEvents) -> EnvFilter {
    EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        // What the process does (serving, stopping and why, each listener's drain, reloads,
        // upgrades) is always said, at INFO; listener events follow `log_events`.
        let app = super::serve::LIFECYCLE;
        EnvFilter::new(match log_events {
            LogEvents::All(level) => {
                let app_level = level.max(tracing::Level::INFO);
                let level = level.as_str().to_lowercase();
                let app_level = app_level.as_str().to_lowercase();
                format!("warn,atoll={level},{app}={app_level}")
            }
            _ => format!("warn,{app}=info"),
        })
    })
}

/// The default field formatter under another type. fmt layers cache a span's formatted
/// fields by formatter type, and the first layer to see the span writes the cache: with the
/// same type, the stderr layer's colored fields would end up in the file.
#[derive(Debug, Default)]
struct PlainFields(DefaultFields);

impl<'w> FormatFields<'w> for PlainFields {
    fn format_fields<R: RecordFields>(&self, writer: Writer<'w>, fields: R) -> fmt::Result {
        self.0.format_fields(writer, fields)
    }
}

// ===== impl LogFile =====

/// A log file rotated by size, as the [module docs](self) describe: `DIR/NAME.log`, and up
/// to `keep` rotated copies `NAME.log.1` (newest) to `NAME.log.KEEP`.
///
/// It is a [`MakeWriter`] for tracing-subscriber's fmt layer, which hands it one whole line
/// per write; each write goes whole into one file. Writes never fail: a failure is reported
/// once on stderr and the line is dropped. `atoll serve` opens it with `[app] log_max_size`
/// (default 10 MiB) and `[app] log_files` (default 5).
pub struct LogFile {
    state: Mutex<State>,
}

/// What a write needs, behind the lock: log lines are few, so one lock per line costs nothing
/// that matters.
#[derive(Debug)]
struct State {
    /// `DIR/NAME.log`.
    path: PathBuf,
    /// The rotation limit, in bytes.
    max_size: u64,
    /// How many rotated copies are kept.
    keep: u32,
    /// The size the file may grow to before a rotation is tried: `max_size`, or more after a
    /// rotation failed, so that a failing rotation is not tried again at every line.
    limit: u64,
    /// The open file; `None` after it could not be reopened, tried again at the next line.
    file: Option<File>,
    /// An open or write failure was reported, and no line was written since.
    write_reported: bool,
    /// A rotation failure was reported, and no rotation succeeded since.
    rotate_reported: bool,
}

impl LogFile {
    /// Opens (or creates) `dir/NAME.log` for appending. Once a line would take it past
    /// `max_size` bytes it is rotated, keeping `keep` older copies; 0 keeps none. A line longer
    /// than `max_size` gets a file of its own. `dir` must exist.
    pub fn open(
        dir: impl AsRef<Path>,
        name: &str,
        max_size: u64,
        keep: u32,
    ) -> Result<LogFile, LogFileError> {
        let path = dir.as_ref().join(format!("{name}.log"));
        let file = open_append(&path).map_err(|error| LogFileError::new(&path, error))?;
        Ok(LogFile {
            state: Mutex::new(State {
                path,
                max_size,
                keep,
                limit: max_size,
                file: Some(file),
                write_reported: false,
                rotate_reported: false,
            }),
        })
    }

    /// The file being written, `DIR/NAME.log`.
    pub fn path(&self) -> PathBuf {
        self.lock().path.clone()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while the lock was held cannot leave the state half-changed in a way that
        // matters: at worst a line is lost. Logging goes on.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl fmt::Debug for LogFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.lock();
        f.debug_struct("LogFile")
            .field("path", &state.path)
            .field("max_size", &state.max_size)
            .field("keep", &state.keep)
            .finish()
    }
}

impl<'a> MakeWriter<'a> for LogFile {
    type Writer = LogFileWriter<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        LogFileWriter { state: self.lock() }
    }
}

/// A [`LogFile`] locked for writing, as [`MakeWriter::make_writer`] gives it: each
/// [`write`](Write::write) is one line, kept whole in one file, and always succeeds.
pub struct LogFileWriter<'a> {
    state: MutexGuard<'a, State>,
}

impl Write for LogFileWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.state.write_line(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        // Nothing is buffered: each line is written at once.
        Ok(())
    }
}

impl fmt::Debug for LogFileWriter<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LogFileWriter")
            .field("path", &self.state.path)
            .finish()
    }
}

// ===== impl State =====

impl State {
    fn write_line(&mut self, line: &[u8]) {
        self.make_room(line.len() as u64);
        if self.file.is_none() {
            self.reopen();
        }
        let Some(file) = &mut self.file else {
            return;
        };
        match file.write_all(line) {
            Ok(()) => self.write_reported = false,
            Err(e) => self.report_write("cannot write to it", &e),
        }
    }

    /// Rotates the file when `incoming` more bytes would take it past the limit.
    fn make_room(&mut self, incoming: u64) {
        if !self.is_full(incoming) {
            return;
        }
        if self.was_replaced() {
            // Another process rotated it: follow it to the new file.
            self.reopen();
            if !self.is_full(incoming) {
                return;
            }
        }
        match self.shift() {
            Ok(()) => {
                self.rotate_reported = false;
                self.reopen();
            }
            Err(e) => {
                self.limit = self.size().saturating_add(self.max_size);
                if !self.rotate_reported {
                    self.rotate_reported = true;
                    self.report("cannot rotate it", &e);
                }
            }
        }
    }

    /// True when the file holds something and `incoming` more bytes would take it past the
    /// limit: a line longer than the limit still goes into an empty file.
    fn is_full(&self, incoming: u64) -> bool {
        let size = self.size();
        size > 0 && size.saturating_add(incoming) > self.limit
    }

    /// The size of the open file, asked of the file system rather than counted: another
    /// process may be appending to it too. One `fstat` per line.
    fn size(&self) -> u64 {
        let Some(file) = &self.file else { return 0 };
        file.metadata().map(|m| m.len()).unwrap_or(0)
    }

    /// True when `path` no longer names the open file: it was rotated or removed by someone
    /// else.
    fn was_replaced(&self) -> bool {
        let Some(file) = &self.file else { return true };
        match (std::fs::metadata(&self.path), file.metadata()) {
            (Ok(named), Ok(open)) => (named.dev(), named.ino()) != (open.dev(), open.ino()),
            (Err(e), _) if e.kind() == io::ErrorKind::NotFound => true,
            // Cannot tell: rotating is the safe side, the file stays bounded.
            _ => false,
        }
    }

    /// Moves the files one step down: `NAME.log.KEEP` removed, `NAME.log.K` to
    /// `NAME.log.K+1`, `NAME.log` to `NAME.log.1`; or `NAME.log` removed when none is kept.
    fn shift(&self) -> io::Result<()> {
        if self.keep == 0 {
            return remove_if_there(&self.path);
        }
        remove_if_there(&self.numbered(self.keep))?;
        for k in (1..self.keep).rev() {
            rename_if_there(&self.numbered(k), &self.numbered(k + 1))?;
        }
        rename_if_there(&self.path, &self.numbered(1))
    }

    /// `NAME.log.K`.
    fn numbered(&self, k: u32) -> PathBuf {
        let mut name = self.path.clone().into_os_string();
        name.push(format!(".{k}"));
        PathBuf::from(name)
    }

    fn reopen(&mut self) {
        self.file = None;
        match open_append(&self.path) {
            Ok(file) => {
                self.file = Some(file);
                self.limit = self.max_size;
            }
            Err(e) => self.report_write("cannot open it", &e),
        }
    }

    fn report_write(&mut self, doing: &str, error: &io::Error) {
        if !self.write_reported {
            self.write_reported = true;
            self.report(doing, error);
        }
    }

    fn report(&self, doing: &str, error: &io::Error) {
        // Not through `tracing`, which would call back into this file; and not `eprintln!`,
        // which panics when stderr is gone.
        let _ = writeln!(
            io::stderr(),
            "atoll: log file {}: {doing}: {}; the server goes on",
            self.path.display(),
            Reason(error)
        );
    }
}

fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

fn remove_if_there(path: &Path) -> io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

fn rename_if_there(from: &Path, to: &Path) -> io::Result<()> {
    match std::fs::rename(from, to) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// An I/O error in the words of `atoll`'s other file errors: `permission denied`, ...
struct Reason<'a>(&'a io::Error);

impl fmt::Display for Reason<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.kind() {
            io::ErrorKind::IsADirectory => f.write_str("it is a directory"),
            // Opening creates the file: only its directory can be missing.
            io::ErrorKind::NotFound => f.write_str("its directory does not exist"),
            io::ErrorKind::PermissionDenied => f.write_str("permission denied"),
            io::ErrorKind::ReadOnlyFilesystem => f.write_str("read-only file system"),
            io::ErrorKind::StorageFull => f.write_str("no space left on device"),
            _ => write!(f, "{}", self.0),
        }
    }
}

// ===== impl LogFileError =====

/// The log file cannot be opened. Its `Display` names the file and why, on one line:
/// `log file /srv/log.n1/atoll.log: cannot open it: permission denied`.
pub struct LogFileError {
    inner: Box<(PathBuf, io::Error)>,
}

impl LogFileError {
    fn new(path: &Path, error: io::Error) -> Self {
        LogFileError {
            inner: Box::new((path.to_owned(), error)),
        }
    }

    /// The file at fault.
    pub fn path(&self) -> &Path {
        &self.inner.0
    }

    /// Why it cannot be opened.
    pub fn kind(&self) -> io::ErrorKind {
        self.inner.1.kind()
    }
}

impl fmt::Display for LogFileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "log file {}: cannot open it: {}",
            self.inner.0.display(),
            Reason(&self.inner.1)
        )
    }
}

impl fmt::Debug for LogFileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LogFileError")
            .field("kind", &self.kind())
            .field("message", &self.to_string())
            .finish()
    }
}

impl std::error::Error for LogFileError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.inner.1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A line of exactly 40 bytes, numbered.
    fn line(n: usize) -> String {
        format!("{:<39}\n", format!("line {n}"))
    }

    fn write(log: &LogFile, lines: impl IntoIterator<Item = usize>) {
        for n in lines {
            log.make_writer().write_all(line(n).as_bytes()).unwrap();
        }
    }

    fn read(dir: &Path, name: &str) -> Option<String> {
        std::fs::read_to_string(dir.join(name)).ok()
    }

    fn lines(ns: impl IntoIterator<Item = usize>) -> Option<String> {
        Some(ns.into_iter().map(line).collect())
    }

    #[test]
    fn rotation_keeps_the_newest_files() {
        let tmp = tempfile::tempdir().unwrap();
        // Two 40-byte lines fit in 100 bytes, a third does not.
        let log = LogFile::open(tmp.path(), "t", 100, 2).unwrap();
        assert_eq!(log.path(), tmp.path().join("t.log"));
        write(&log, 1..=10);
        assert_eq!(read(tmp.path(), "t.log"), lines(9..=10));
        assert_eq!(read(tmp.path(), "t.log.1"), lines(7..=8));
        assert_eq!(read(tmp.path(), "t.log.2"), lines(5..=6));
        // Lines 1 to 4 were in files older than the two kept.
        assert_eq!(read(tmp.path(), "t.log.3"), None);
        assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 3);
    }

    #[test]
    fn no_copy_is_kept_with_keep_0() {
        let tmp = tempfile::tempdir().unwrap();
        let log = LogFile::open(tmp.path(), "t", 100, 0).unwrap();
        write(&log, 1..=5);
        assert_eq!(read(tmp.path(), "t.log"), lines([5]));
        assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 1);
    }

    #[test]
    fn an_existing_file_is_appended_to_and_counted() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("t.log"), lines(1..=2).unwrap()).unwrap();
        let log = LogFile::open(tmp.path(), "t", 100, 1).unwrap();
        write(&log, [3]);
        assert_eq!(read(tmp.path(), "t.log.1"), lines(1..=2));
        assert_eq!(read(tmp.path(), "t.log"), lines([3]));
    }

    #[test]
    fn a_line_longer_than_the_limit_gets_a_file_of_its_own() {
        let tmp = tempfile::tempdir().unwrap();
        let log = LogFile::open(tmp.path(), "t", 30, 3).unwrap();
        write(&log, 1..=3);
        assert_eq!(read(tmp.path(), "t.log"), lines([3]));
        assert_eq!(read(tmp.path(), "t.log.1"), lines([2]));
        assert_eq!(read(tmp.path(), "t.log.2"), lines([1]));
    }

    #[test]
    fn a_second_writer_follows_a_rotation_instead_of_rotating_again() {
        // As during a live upgrade: two processes append to the same file.
        let tmp = tempfile::tempdir().unwrap();
        let old = LogFile::open(tmp.path(), "t", 100, 3).unwrap();
        let new = LogFile::open(tmp.path(), "t", 100, 3).unwrap();
        write(&old, [1]);
        write(&new, [2]);
        // The file is full: `old` rotates it.
        write(&old, [3]);
        // `new` still has the rotated file open, which is full too; the name points to
        // another file, with room.
        write(&new, [4]);
        assert_eq!(read(tmp.path(), "t.log.1"), lines(1..=2));
        assert_eq!(read(tmp.path(), "t.log"), lines(3..=4));
        assert_eq!(read(tmp.path(), "t.log.2"), None);
    }

    #[test]
    fn a_removed_directory_is_reported_and_logging_resumes() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("logs");
        std::fs::create_dir(&dir).unwrap();
        let log = LogFile::open(&dir, "t", 100, 1).unwrap();
        write(&log, 1..=2);
        std::fs::remove_dir_all(&dir).unwrap();
        // The file went with its directory and cannot be reopened: lines are dropped,
        // nothing panics and the writes succeed.
        write(&log, 3..=6);
        std::fs::create_dir(&dir).unwrap();
        write(&log, [7]);
        assert_eq!(read(&dir, "t.log"), lines([7]));
    }

    #[test]
    fn the_open_error_names_the_file() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir(tmp.path().join("t.log")).unwrap();
        let e = LogFile::open(tmp.path(), "t", 100, 1).unwrap_err();
        assert_eq!(e.path(), tmp.path().join("t.log"));
        assert_eq!(e.kind(), io::ErrorKind::IsADirectory);
        assert_eq!(
            e.to_string(),
            format!(
                "log file {}/t.log: cannot open it: it is a directory",
                tmp.path().display()
            )
        );
    }
}
