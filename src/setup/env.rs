//! The application environment: what the process is told by the OS ([`OsEnv`]), what the
//! config file's `[app]` table says ([`AppSettings`]), what they resolve to ([`AppEnv`], the
//! log file's rotation limits included), the check that its directories are usable
//! ([`AppEnv::verify_directories`]), and the text `atoll env` prints of it ([`describe`],
//! [`describe_json`]).

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Deserializer};

use super::expand::{ExpandError, Variables};

/// The OS variable that overrides `[app] home`.
pub const HOME_VAR: &str = "ATOLL_HOME";
/// The OS variable that overrides `[app] data_dir`.
pub const DATA_DIR_VAR: &str = "ATOLL_DATA_DIR";
/// The OS variable that overrides `[app] log_dir`.
pub const LOG_DIR_VAR: &str = "ATOLL_LOG_DIR";
/// The lib dir variables, in the order their folders are listed: setup's own first, then the
/// general one. Both are colon-separated lists.
pub const LIB_DIR_VARS: [&str; 2] = ["ATOLL_SETUP_LIBS", "ATOLL_LIBS"];

/// `[app] log_max_size` when unset: 10 MiB.
const DEFAULT_LOG_MAX_SIZE: u64 = 10 * 1024 * 1024;
/// `[app] log_files` when unset.
const DEFAULT_LOG_FILES: u32 = 5;

// ===== impl OsEnv =====

/// What the operating system tells the process: its variables, its working directory and the
/// host name. [`OsEnv::current`] reads them; tests build one by hand, so nothing they do
/// depends on (or changes) the real environment.
#[derive(Debug, Clone)]
pub struct OsEnv {
    vars: HashMap<String, String>,
    cwd: PathBuf,
    host_name: Option<String>,
}

impl OsEnv {
    /// An environment with no variables and no host name, working in `cwd`.
    pub fn new(cwd: impl Into<PathBuf>) -> Self {
        OsEnv {
            vars: HashMap::new(),
            cwd: cwd.into(),
            host_name: None,
        }
    }

    /// The process's environment: its variables (those whose name and value are UTF-8), its
    /// working directory (`.` when it cannot be read, e.g. after it was removed), and the
    /// host name (from the kernel, else `/etc/hostname`, else the `HOSTNAME` variable).
    pub fn current() -> Self {
        let vars: HashMap<String, String> = std::env::vars_os()
            .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
            .collect();
        let host_name = ["/proc/sys/kernel/hostname", "/etc/hostname"]
            .iter()
            .filter_map(|file| std::fs::read_to_string(file).ok())
            .chain(vars.get("HOSTNAME").cloned())
            .map(|name| name.trim().to_owned())
            .find(|name| !name.is_empty());
        OsEnv {
            vars,
            cwd: std::env::current_dir().unwrap_or_else(|_| PathBuf::from(".")),
            host_name,
        }
    }

    /// Sets the variable `name` to `value`.
    #[must_use]
    pub fn with_var(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.vars.insert(name.into(), value.into());
        self
    }

    /// Sets the host name.
    #[must_use]
    pub fn with_host_name(mut self, name: impl Into<String>) -> Self {
        self.host_name = Some(name.into());
        self
    }

    /// The value of the variable `name`, if it is set.
    pub fn var(&self, name: &str) -> Option<&str> {
        self.vars.get(name).map(String::as_str)
    }

    /// The value of the variable `name` when it is set and not empty: an empty override is
    /// taken as no override.
    pub(crate) fn non_empty(&self, name: &str) -> Option<&str> {
        self.var(name).filter(|v| !v.is_empty())
    }

    /// The working directory, the base of relative paths given by OS variables.
    pub fn cwd(&self) -> &Path {
        &self.cwd
    }

    /// The host name, the default node name.
    pub fn host_name(&self) -> Option<&str> {
        self.host_name.as_deref()
    }
}

// ===== impl AppSettings =====

/// The config file's `[app]` table: each key overrides a default of [`AppEnv`], and may use
/// variables (`data_dir = "/var/lib/$APP"`), the numbers excepted. Relative paths are taken
/// from the config file's folder. Every key is optional; unknown keys are refused.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppSettings {
    /// The application's name, `$APP`. Default is `"atoll"`.
    pub name: Option<String>,
    /// The node's name, `$NODE`. Default is the host name, else `"nonode"`.
    pub node: Option<String>,
    /// The home directory, `$HOME`. `ATOLL_HOME` wins over it. Default is the config file's
    /// folder (setup's default is the working directory; atoll's lets a control command run
    /// from anywhere with `--config FILE` find the server started with that file).
    pub home: Option<String>,
    /// Where the application keeps its data, `$DATA_DIR`. `ATOLL_DATA_DIR` wins over it.
    /// Default is `HOME/data.NODE`.
    pub data_dir: Option<String>,
    /// Where the application writes its logs, `$LOG_DIR`. `ATOLL_LOG_DIR` wins over it.
    /// Default is `HOME/log.NODE`.
    pub log_dir: Option<String>,
    /// The application's own files, `$PRIV_DIR`. Default is the config file's folder.
    pub priv_dir: Option<String>,
    /// Folders holding installed releases; the first is `$LIB_DIR`. `ATOLL_SETUP_LIBS` and
    /// `ATOLL_LIBS`, when either is set, win over it. Default is none.
    pub lib_dirs: Option<Vec<String>>,
    /// The size in bytes past which `LOG_DIR/APP.log` is rotated; more than 0, which is
    /// checked as the file is read. Default is 10 MiB (10485760).
    #[serde(default, deserialize_with = "positive_size")]
    pub log_max_size: Option<u64>,
    /// How many rotated log files (`APP.log.1`, the newest, to `APP.log.N`) are kept; 0 keeps
    /// none. Default is 5.
    pub log_files: Option<u32>,
    /// How long `atoll serve` keeps serving after SIGTERM or SIGINT with `/readyz` answering
    /// 503, before its listeners stop and drain: a duration (`"5s"`, `"500ms"`, or a whole
    /// number of milliseconds), read by [`Config`](crate::Config) into
    /// [`Config::drain_delay`](crate::Config::drain_delay). Default is 0.
    #[serde(default, deserialize_with = "duration_text")]
    pub drain_delay: Option<String>,
}

impl AppSettings {
    /// `log_max_size`, else its default.
    pub(crate) fn log_max_size_or_default(&self) -> u64 {
        self.log_max_size.unwrap_or(DEFAULT_LOG_MAX_SIZE)
    }

    /// `log_files`, else its default.
    pub(crate) fn log_files_or_default(&self) -> u32 {
        self.log_files.unwrap_or(DEFAULT_LOG_FILES)
    }
}

/// A duration as written: a string (which may use variables), or a number of milliseconds.
fn duration_text<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Millis(u64),
        Text(String),
    }
    Ok(Some(match Raw::deserialize(deserializer)? {
        Raw::Millis(ms) => format!("{ms}ms"),
        Raw::Text(text) => text,
    }))
}

/// Refuses a `log_max_size` of 0 while the file is read, so the error carries its line: a
/// limit of 0 would rotate at every line.
fn positive_size<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<u64>, D::Error> {
    match u64::deserialize(deserializer)? {
        0 => Err(serde::de::Error::custom(
            "`app.log_max_size` must be more than 0 bytes",
        )),
        size => Ok(Some(size)),
    }
}

// ===== impl AppEnv =====

/// The resolved application environment: names and directories, each from (strongest first)
/// its OS variable, the config file's `[app]` table, or its default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppEnv {
    /// The application's name, `$APP`. Default is `"atoll"`.
    pub name: String,
    /// The node's name, `$NODE`: tells apart the directories of instances that share a home.
    /// Default is the host name, else `"nonode"`.
    pub node: String,
    /// The home directory, `$HOME` (`ATOLL_HOME`). Default is the config file's folder.
    pub home: PathBuf,
    /// Where the application keeps its data, `$DATA_DIR` (`ATOLL_DATA_DIR`). Default is
    /// `HOME/data.NODE`.
    pub data_dir: PathBuf,
    /// Where the application writes its logs, `$LOG_DIR` (`ATOLL_LOG_DIR`). Default is
    /// `HOME/log.NODE`.
    pub log_dir: PathBuf,
    /// The size in bytes past which the log file `LOG_DIR/APP.log` is rotated
    /// (`[app] log_max_size`); never 0. Default is 10 MiB (10485760).
    pub log_max_size: u64,
    /// How many rotated log files are kept (`[app] log_files`): `APP.log.1`, the newest, to
    /// `APP.log.N`; 0 keeps none. Default is 5.
    pub log_files: u32,
    /// The application's own files, `$PRIV_DIR`. Default is the config file's folder.
    pub priv_dir: PathBuf,
    /// Folders holding installed releases: the union of `ATOLL_SETUP_LIBS` and `ATOLL_LIBS`
    /// (colon-separated, in that order, without repeats), else `[app] lib_dirs`. The first is
    /// `$LIB_DIR`. Default is none.
    pub lib_dirs: Vec<PathBuf>,
}

impl AppEnv {
    /// Resolves `settings` (an `[app]` table, for a config file in `config_dir`) against the
    /// OS environment, without user variables. See [`Variables::resolve`] for the whole of
    /// a config file's variables.
    pub fn resolve(
        settings: &AppSettings,
        config_dir: &Path,
        os: &OsEnv,
    ) -> Result<AppEnv, ExpandError> {
        let vars = Variables::resolve(settings, &BTreeMap::new(), config_dir, os)?;
        Ok(vars.into_parts().0)
    }

    /// The first lib dir, `$LIB_DIR`.
    pub fn lib_dir(&self) -> Option<&Path> {
        self.lib_dirs.first().map(PathBuf::as_path)
    }

    /// Makes sure `data_dir` and `log_dir` exist and are writable, creating them (and their
    /// parents) when missing; otherwise the error names the directory and why.
    pub fn verify_directories(&self) -> Result<(), DirError> {
        verify(Some("data_dir"), &self.data_dir)?;
        verify(Some("log_dir"), &self.log_dir)
    }
}

// ===== verify_dir =====

/// Makes sure `dir` exists and is writable: creates it (and its parents) when missing, then
/// creates and removes a file in it.
pub fn verify_dir(dir: &Path) -> Result<(), DirError> {
    verify(None, dir)
}

fn verify(setting: Option<&'static str>, dir: &Path) -> Result<(), DirError> {
    let fail = |stage, error: io::Error| Err(DirError::new(setting, dir, stage, error));
    match std::fs::metadata(dir) {
        Ok(meta) if meta.is_dir() => {}
        Ok(_) => return fail(Stage::Exists, io::Error::from(io::ErrorKind::NotADirectory)),
        // Not found, or a file where a parent should be: creating it says which.
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
            ) =>
        {
            if let Err(e) = std::fs::create_dir_all(dir) {
                return fail(Stage::Create, e);
            }
        }
        Err(e) => return fail(Stage::Exists, e),
    }
    // Metadata cannot tell: ACLs, read-only mounts and root's privileges all decide.
    static PROBES: AtomicU64 = AtomicU64::new(0);
    let probe = dir.join(format!(
        ".atoll-write-check.{}.{}",
        std::process::id(),
        PROBES.fetch_add(1, Ordering::Relaxed)
    ));
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe);
    match written {
        Ok(file) => {
            drop(file);
            std::fs::remove_file(&probe).or_else(|e| fail(Stage::Write, e))
        }
        Err(e) => fail(Stage::Write, e),
    }
}

// ===== impl DirError =====

/// Why a directory is unusable; see [`DirError::problem`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DirProblem {
    /// Something other than a directory is in the way (at the path, or at a parent).
    NotADirectory,
    /// The process may not create or write in it.
    PermissionDenied,
    /// It is on a read-only file system.
    ReadOnly,
    /// Another I/O failure; the error's source says which.
    Io,
}

#[derive(Debug, Clone, Copy)]
enum Stage {
    Exists,
    Create,
    Write,
}

/// A directory the application needs is missing and cannot be created, or is not writable.
/// Its `Display` names the setting, the directory and the cause, on one line:
/// `log_dir /srv/atoll/log.n1: not a directory`.
pub struct DirError {
    inner: Box<DirInner>,
}

struct DirInner {
    setting: Option<&'static str>,
    dir: PathBuf,
    stage: Stage,
    error: io::Error,
}

impl DirError {
    fn new(setting: Option<&'static str>, dir: &Path, stage: Stage, error: io::Error) -> Self {
        DirError {
            inner: Box::new(DirInner {
                setting,
                dir: dir.to_owned(),
                stage,
                error,
            }),
        }
    }

    /// The directory at fault.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// The setting that names it (`"data_dir"`, `"log_dir"`), when checked as one.
    pub fn setting(&self) -> Option<&'static str> {
        self.inner.setting
    }

    /// Why it is unusable.
    pub fn problem(&self) -> DirProblem {
        match self.inner.error.kind() {
            io::ErrorKind::NotADirectory | io::ErrorKind::AlreadyExists => {
                DirProblem::NotADirectory
            }
            io::ErrorKind::PermissionDenied => DirProblem::PermissionDenied,
            io::ErrorKind::ReadOnlyFilesystem => DirProblem::ReadOnly,
            _ => DirProblem::Io,
        }
    }
}

impl fmt::Display for DirError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = &*self.inner;
        if let Some(setting) = inner.setting {
            write!(f, "{setting} ")?;
        }
        write!(f, "{}: ", inner.dir.display())?;
        let doing = match inner.stage {
            Stage::Exists => "",
            Stage::Create => "cannot create it: ",
            Stage::Write => "cannot write in it: ",
        };
        match self.problem() {
            DirProblem::NotADirectory => match inner.stage {
                Stage::Create => write!(f, "{doing}a parent is not a directory"),
                _ => f.write_str("not a directory"),
            },
            DirProblem::PermissionDenied => write!(f, "{doing}permission denied"),
            DirProblem::ReadOnly => write!(f, "{doing}read-only file system"),
            DirProblem::Io => write!(f, "{doing}{}", inner.error),
        }
    }
}

impl fmt::Debug for DirError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DirError")
            .field("problem", &self.problem())
            .field("message", &self.to_string())
            .finish()
    }
}

impl std::error::Error for DirError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.inner.error)
    }
}

// ===== describe =====

/// The resolved values of `env`, keyed and in the order `atoll env` lists them (the `[app]`
/// keys), as the config file would write them: paths as strings, sizes and counts as
/// integers, `lib_dirs` as an array. [`Config`](crate::Config) adds the `[app]` values it
/// reads itself (`drain_delay`), so that `atoll env` and `atoll env --find` list the same.
pub(crate) fn app_entries(env: &AppEnv) -> Vec<(&'static str, toml::Value)> {
    let path = |p: &Path| toml::Value::String(path_text(p));
    vec![
        ("name", toml::Value::String(env.name.clone())),
        ("node", toml::Value::String(env.node.clone())),
        ("home", path(&env.home)),
        ("data_dir", path(&env.data_dir)),
        ("log_dir", path(&env.log_dir)),
        (
            "log_max_size",
            toml::Value::Integer(env.log_max_size.min(i64::MAX as u64) as i64),
        ),
        ("log_files", toml::Value::Integer(env.log_files.into())),
        ("priv_dir", path(&env.priv_dir)),
        (
            "lib_dirs",
            toml::Value::Array(env.lib_dirs.iter().map(|d| path(d)).collect()),
        ),
    ]
}

/// What `atoll env` prints for `env` alone: one `key = value` line per setting, named as in
/// the config file (`app.name`, ..., `app.log_max_size` in bytes, ..., `app.lib_dirs`
/// colon-separated, then `vars.NAME` for each user variable). A value that would not read
/// back as one line (a line break, a control character, spaces at either end) is printed as a
/// quoted JSON string. `atoll env` prints [`Config::describe`](crate::Config::describe),
/// which adds the `[app]` values that are not part of [`AppEnv`] (`app.drain_delay`).
pub fn describe(env: &AppEnv, vars: &BTreeMap<String, String>) -> String {
    describe_entries(&app_entries(env), vars)
}

/// [`describe`] over `[app]` entries as [`app_entries`] gives them.
pub(crate) fn describe_entries(
    app: &[(&str, toml::Value)],
    vars: &BTreeMap<String, String>,
) -> String {
    let text = |value: &toml::Value| match value {
        toml::Value::String(s) => s.clone(),
        toml::Value::Array(items) => items
            .iter()
            .map(|item| {
                item.as_str()
                    .map_or_else(|| item.to_string(), str::to_owned)
            })
            .collect::<Vec<_>>()
            .join(":"),
        other => other.to_string(),
    };
    let lines = app
        .iter()
        .map(|(key, value)| (format!("app.{key}"), text(value)))
        .chain(vars.iter().map(|(k, v)| (format!("vars.{k}"), v.clone())));
    let mut out = String::new();
    for (key, value) in lines {
        let plain = !value.chars().any(char::is_control) && value.trim() == value;
        let value = if plain {
            value
        } else {
            serde_json::Value::String(value).to_string()
        };
        out += &format!("{key} = {value}\n");
    }
    out
}

/// What `atoll env --json` prints for `env` alone: `{"app": {"name": ..., "lib_dirs": [...]},
/// "vars": {...}}`, pretty-printed, with a final line break. `atoll env --json` prints
/// [`Config::describe_json`](crate::Config::describe_json), which adds `drain_delay`.
pub fn describe_json(env: &AppEnv, vars: &BTreeMap<String, String>) -> String {
    describe_entries_json(&app_entries(env), vars)
}

/// [`describe_json`] over `[app]` entries as [`app_entries`] gives them.
pub(crate) fn describe_entries_json(
    app: &[(&str, toml::Value)],
    vars: &BTreeMap<String, String>,
) -> String {
    let app: serde_json::Map<String, serde_json::Value> = app
        .iter()
        .map(|(key, value)| {
            let value = serde_json::to_value(value).unwrap_or(serde_json::Value::Null);
            ((*key).to_owned(), value)
        })
        .collect();
    let value = serde_json::json!({ "app": app, "vars": vars });
    let mut text = serde_json::to_string_pretty(&value).unwrap_or_default();
    text.push('\n');
    text
}

fn path_text(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> AppEnv {
        AppEnv {
            name: "atoll".into(),
            node: "n1".into(),
            home: "/srv".into(),
            data_dir: "/srv/data.n1".into(),
            log_dir: "/srv/log.n1".into(),
            log_max_size: 1000,
            log_files: 0,
            priv_dir: "/etc/atoll".into(),
            lib_dirs: vec!["/opt/a".into(), "/opt/b".into()],
        }
    }

    #[test]
    fn describe_prints_one_line_per_setting() {
        let vars = BTreeMap::from([
            ("certs".to_owned(), "/etc/certs".to_owned()),
            ("odd".to_owned(), "two\nlines".to_owned()),
        ]);
        assert_eq!(
            describe(&sample(), &vars),
            "app.name = atoll\napp.node = n1\napp.home = /srv\napp.data_dir = /srv/data.n1\n\
             app.log_dir = /srv/log.n1\napp.log_max_size = 1000\napp.log_files = 0\n\
             app.priv_dir = /etc/atoll\napp.lib_dirs = /opt/a:/opt/b\n\
             vars.certs = /etc/certs\nvars.odd = \"two\\nlines\"\n"
        );
        let json: serde_json::Value =
            serde_json::from_str(&describe_json(&sample(), &vars)).unwrap();
        assert_eq!(json["app"]["node"], "n1");
        assert_eq!(json["app"]["lib_dirs"][1], "/opt/b");
        assert_eq!(json["app"]["log_max_size"], 1000);
        assert_eq!(json["app"]["log_files"], 0);
        assert_eq!(json["vars"]["odd"], "two\nlines");
    }

    #[test]
    fn verify_dir_creates_a_missing_dir_and_its_parents() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("a/b/c");
        verify_dir(&dir).unwrap();
        assert!(dir.is_dir());
        // The probe file is gone, and a second check passes.
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
        verify_dir(&dir).unwrap();
    }

    #[test]
    fn a_file_in_the_way_is_named() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("data");
        std::fs::write(&file, "").unwrap();
        let e = verify(Some("data_dir"), &file).unwrap_err();
        assert_eq!(e.problem(), DirProblem::NotADirectory);
        assert_eq!(e.setting(), Some("data_dir"));
        assert_eq!(
            e.to_string(),
            format!("data_dir {}: not a directory", file.display())
        );
        let below = file.join("sub");
        let e = verify_dir(&below).unwrap_err();
        assert_eq!(e.problem(), DirProblem::NotADirectory);
        assert_eq!(
            e.to_string(),
            format!(
                "{}: cannot create it: a parent is not a directory",
                below.display()
            )
        );
    }
}
