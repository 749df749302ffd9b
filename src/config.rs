//! The config file: `[[listener]]` tables read into [`ListenerSpec`]s, how their events are
//! logged, the application environment (`[app]`) and user variables (`[vars]`), and starting
//! the listeners on a [`Registry`], with errors that name the file, the listener and the fault
//! on one line.
//!
//! ```toml
//! log_events = "errors"   # off, errors (the default), error, warn, info, debug, trace
//! failure_log_lines = 10  # lines of each kind of failure a listener logs per window
//! failure_log_window = "10s"
//!
//! [app]                   # see `setup`: name, node, home, data_dir, log_dir, priv_dir, lib_dirs
//! home = "/srv/$APP"
//!
//! [vars]                  # variables for any string below
//! addr = "127.0.0.1"
//!
//! [[listener]]
//! name = "echo"
//! kind = "echo"
//! ip = "$addr"
//! port = 4000
//! ```
//!
//! Variables are expanded in every string (see [`setup`](crate::setup)) before the
//! listeners are read, so every kind of listener gets them.
//!
//! # Included files
//!
//! `include = ["conf.d/*.toml"]` (a top-level key) pulls in the `[[listener]]` tables of
//! other files, so operators can keep one file per listener (setup's `read_config_script`
//! and plugin roots, for listeners). Patterns are taken from the config's folder, may hold
//! `*` and `?` in their file name, and are read in order, each one's files by name; their
//! listeners follow the config's own, in that order. An included file holds `[[listener]]`
//! tables only; it shares the config's `[app]`, `[vars]` and folder (the base of relative
//! paths). An error in it names it (`conf.d/web.toml: listener `web`: ...`). A reload reads
//! the files again, so adding a file and reloading starts its listeners.

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;
use tracing::Level;

use crate::error::{one_line, Error, ErrorKind};
use crate::handle::ServerHandle;
use crate::registry::Registry;
use crate::setup::{AppEnv, AppSettings, ExpandError, OsEnv, Variables};
use crate::spec::ListenerSpec;
use crate::telemetry::{
    Event, EventKind, FailureLogBudget, MetricsRecorder, Subscriber, SubscriptionId, Telemetry,
    TracingLogger,
};

/// A config file, read and checked: every listener's spec, and how their events are logged.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it was read from, as given; errors name it.
    pub path: PathBuf,
    /// The listeners, in file order, with unique names.
    pub listeners: Vec<ListenerSpec>,
    /// How listener events are logged. Default is [`LogEvents::Errors`].
    pub log_events: LogEvents,
    /// How many lines of each kind of failure a listener logs per window (the keys
    /// `failure_log_lines` and `failure_log_window`): every listener's telemetry hub carries
    /// it ([`Telemetry::with_failure_log_budget`]), so its logger and the lines its
    /// connections log are held to it. Default is [`FailureLogBudget::default()`], 10 lines
    /// per 10 s. A reload applies a change to the listeners it starts or replaces.
    pub failure_log_budget: FailureLogBudget,
    /// The application environment: the `[app]` table over the defaults, under the OS
    /// variables.
    pub env: AppEnv,
    /// The `[vars]` table, expanded.
    pub vars: BTreeMap<String, String>,
    /// How long `atoll serve` keeps every listener serving after SIGTERM or SIGINT while
    /// `admin` listeners answer `/readyz` with 503, so that load balancers stop sending new
    /// connections before the listeners stop (`[app] drain_delay`). A second signal ends the
    /// delay at once. A reload applies a change at once. Default is 0: the listeners stop at
    /// once.
    pub drain_delay: Duration,
    /// Each listener's table as written, variables expanded, in file order (the same order
    /// as [`listeners`](Self::listeners)): what [`find_env_vars`](Self::find_env_vars) searches.
    pub listener_tables: Vec<toml::Table>,
    /// The file each listener was read from, in the same order: this config's `path`, or a
    /// file it includes (`include = ["conf.d/*.toml"]`). Errors about a listener name it.
    pub listener_files: Vec<PathBuf>,
}

/// Where [`Config::find_env_vars`] found a key.
#[derive(Debug, Clone, PartialEq)]
pub struct FoundKey {
    /// `app`, or `listener NAME`.
    pub owner: String,
    /// The value, variables expanded.
    pub value: toml::Value,
}

/// How a listener's telemetry events are logged through `tracing` (the `log_events` key).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(try_from = "String")]
pub enum LogEvents {
    /// `"off"`: no event is logged.
    Off,
    /// `"errors"`: only failure events, at `WARN`. The default.
    ///
    /// Whatever the level, failures are logged at a bounded rate: each listener logs at
    /// most `failure_log_lines` of each kind per `failure_log_window` ([`Config::failure_log_budget`];
    /// default 10 per 10 s), then one line with how
    /// many more there were ([`TracingLogger`]).
    #[default]
    Errors,
    /// `"error"`, `"warn"`, `"info"`, `"debug"` or `"trace"`: every event at that level
    /// (failures at `WARN` at least), as [`TracingLogger`] does.
    All(Level),
}

const LOG_EVENTS_VALUES: &str = "`off`, `errors`, `error`, `warn`, `info`, `debug`, `trace`";

impl TryFrom<String> for LogEvents {
    type Error = String;

    fn try_from(text: String) -> Result<Self, String> {
        Ok(match text.as_str() {
            "off" => LogEvents::Off,
            "errors" => LogEvents::Errors,
            "error" => LogEvents::All(Level::ERROR),
            "warn" => LogEvents::All(Level::WARN),
            "info" => LogEvents::All(Level::INFO),
            "debug" => LogEvents::All(Level::DEBUG),
            "trace" => LogEvents::All(Level::TRACE),
            _ => {
                return Err(format!(
                    "unknown `log_events` value `{text}`, expected one of {LOG_EVENTS_VALUES}"
                ))
            }
        })
    }
}

impl LogEvents {
    /// Attaches the matching subscriber to `telemetry`, its failures held to the hub's
    /// [`failure_log_budget`](Telemetry::failure_log_budget); `None` when events are off.
    pub fn attach(self, telemetry: &Telemetry) -> Option<SubscriptionId> {
        let budget = telemetry.failure_log_budget();
        match self {
            LogEvents::Off => None,
            LogEvents::Errors => Some(telemetry.attach(SaidElsewhere(ErrorsOnly(
                TracingLogger::with_budget(Level::WARN, budget),
            )))),
            LogEvents::All(level) => {
                Some(telemetry.attach(SaidElsewhere(TracingLogger::with_budget(level, budget))))
            }
        }
    }
}

/// Passes every event on but `listener.error`: a listener that cannot start is the failure
/// of the start or reload that asked for it, which says so itself, on one line (`atoll
/// serve`'s error, the reload's answer); a log line too would say it twice.
#[derive(Debug)]
struct SaidElsewhere<S>(S);

impl<S: Subscriber> Subscriber for SaidElsewhere<S> {
    fn on_event(&self, event: &Event<'_>) {
        if event.kind != EventKind::ListenerError {
            self.0.on_event(event);
        }
    }
}

/// Passes failure events on to a logger and drops the rest; the stop of the listener still
/// has the logger sum up the failures it held back.
#[derive(Debug)]
struct ErrorsOnly(TracingLogger);

impl Subscriber for ErrorsOnly {
    fn on_event(&self, event: &Event<'_>) {
        if event.kind.is_error() {
            self.0.on_event(event);
        } else if event.kind == EventKind::ListenerStop {
            self.0.flush(event.listener);
        }
    }
}

/// The top level of a config file; serde finds unknown keys and bad types, with their place.
/// Strings that may hold variables are read as they are written, and expanded after.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    listener: Vec<toml::Table>,
    #[serde(default)]
    log_events: Option<Spanned<String>>,
    #[serde(default)]
    failure_log_lines: Option<Spanned<toml::Value>>,
    #[serde(default)]
    failure_log_window: Option<Spanned<toml::Value>>,
    #[serde(default)]
    app: AppSettings,
    #[serde(default)]
    vars: BTreeMap<String, String>,
    #[serde(default)]
    include: Vec<String>,
}

/// A file pulled in by `include`: listeners only.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Included {
    #[serde(default)]
    listener: Vec<toml::Table>,
}

/// The files `include` names, in order: each pattern's matches sorted by name. A pattern is a
/// path relative to the config's folder whose last part may hold `*` and `?` wildcards
/// (`conf.d/*.toml`); one without wildcards names a file that must exist. A pattern that
/// matches nothing adds nothing.
fn included_files(dir: &Path, patterns: &[String]) -> Result<Vec<PathBuf>, String> {
    let mut files = Vec::new();
    for pattern in patterns {
        let full = dir.join(pattern);
        let name = full
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| format!("`include`: `{pattern}` names no file"))?;
        if !name.contains(['*', '?']) {
            files.push(full);
            continue;
        }
        let folder = full.parent().unwrap_or(dir);
        if folder.to_string_lossy().contains(['*', '?']) {
            return Err(format!(
                "`include`: `{pattern}`: wildcards are allowed in the file name only"
            ));
        }
        let entries = match std::fs::read_dir(folder) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(format!("`include`: cannot read {}: {e}", folder.display())),
        };
        let mut matched: Vec<PathBuf> = entries
            .filter_map(|entry| entry.ok())
            .filter(|entry| entry.file_type().is_ok_and(|t| !t.is_dir()))
            .filter(|entry| {
                entry
                    .file_name()
                    .to_str()
                    .is_some_and(|n| !n.starts_with('.') && wildcard(name, n))
            })
            .map(|entry| entry.path())
            .collect();
        matched.sort();
        files.extend(matched);
    }
    Ok(files)
}

/// Whether `text` matches `pattern`, where `*` is any run of characters and `?` one.
fn wildcard(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

// ===== impl Config =====

impl Config {
    /// Reads and checks the config file at `path`, with the process's environment
    /// ([`OsEnv::current`]). Relative paths inside it (certificates, Unix sockets) are taken
    /// from the file's folder.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        Config::load_with(path, &OsEnv::current())
    }

    /// Reads and checks the config file at `path`, with `os` as the OS environment (its
    /// variables, working directory and host name).
    pub fn load_with(path: &Path, os: &OsEnv) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::new(path, Place::File, Fault::Read(e)))?;
        Config::parse_with(&text, path, os)
    }

    /// Reads only the application environment of the config file at `path` (its `[app]` and
    /// `[vars]` tables), whatever the rest of the file holds: enough for a control command to
    /// find the server of a config that has since been broken by an edit.
    pub fn load_env(path: &Path) -> Result<AppEnv, ConfigError> {
        #[derive(Deserialize)]
        struct EnvOnly {
            #[serde(default)]
            app: AppSettings,
            #[serde(default)]
            vars: BTreeMap<String, String>,
        }
        let os = OsEnv::current();
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::new(path, Place::File, Fault::Read(e)))?;
        let file: EnvOnly = toml::from_str(&text).map_err(|e| {
            let place = match e.span() {
                Some(span) => Place::Line(line_of(&text, span.start)),
                None => Place::File,
            };
            ConfigError::new(path, place, Fault::Invalid(e.message().to_owned()))
        })?;
        let vars = Variables::resolve(&file.app, &file.vars, &config_dir(path, &os), &os)
            .map_err(|e| ConfigError::new(path, Place::File, Fault::Expand(e)))?;
        Ok(vars.into_parts().0)
    }

    /// Checks the text of a config file that lives at `path` (named in errors; its folder is
    /// the base of relative paths), with the process's environment.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        Config::parse_with(text, path, &OsEnv::current())
    }

    /// Checks the text of a config file that lives at `path`, with `os` as the OS
    /// environment: the `[app]` table and `[vars]` are resolved, then every string is
    /// expanded, then the listeners are read.
    pub fn parse_with(text: &str, path: &Path, os: &OsEnv) -> Result<Config, ConfigError> {
        let invalid =
            |place, message: String| ConfigError::new(path, place, Fault::Invalid(message));
        let expand = |place, e: ExpandError| ConfigError::new(path, place, Fault::Expand(e));
        let file: File = toml::from_str(text).map_err(|e| {
            let place = match e.span() {
                Some(span) => Place::Line(line_of(text, span.start)),
                None => Place::File,
            };
            invalid(place, e.message().to_owned())
        })?;
        let base = path.parent().unwrap_or(Path::new(""));
        // Every listener table, with the file it comes from: this one's, then the included
        // files' in order.
        let mut tables: Vec<(PathBuf, usize, toml::Table)> = file
            .listener
            .into_iter()
            .enumerate()
            .map(|(i, t)| (path.to_owned(), i + 1, t))
            .collect();
        let includes = included_files(&config_dir(path, os), &file.include)
            .map_err(|m| invalid(Place::File, m))?;
        for included in includes {
            let text = std::fs::read_to_string(&included)
                .map_err(|e| ConfigError::new(&included, Place::File, Fault::Read(e)))?;
            let more: Included = toml::from_str(&text).map_err(|e| {
                let place = match e.span() {
                    Some(span) => Place::Line(line_of(&text, span.start)),
                    None => Place::File,
                };
                let message = format!(
                    "{} (an included file holds [[listener]] tables only)",
                    e.message()
                );
                ConfigError::new(&included, place, Fault::Invalid(message))
            })?;
            tables.extend(
                more.listener
                    .into_iter()
                    .enumerate()
                    .map(|(i, t)| (included.clone(), i + 1, t)),
            );
        }
        if tables.is_empty() {
            return Err(invalid(Place::File, "no [[listener]] table".to_owned()));
        }
        let vars = Variables::resolve(&file.app, &file.vars, &config_dir(path, os), os)
            .map_err(|e| expand(Place::File, e))?;
        let log_events = match file.log_events {
            None => LogEvents::default(),
            Some(value) => {
                let line = line_of(text, value.span().start);
                let level = vars
                    .expand(value.get_ref(), "log_events")
                    .map_err(|e| expand(Place::Line(line), e))?;
                LogEvents::try_from(level).map_err(|message| invalid(Place::Line(line), message))?
            }
        };
        let mut lines = FailureLogBudget::default().lines();
        if let Some(value) = &file.failure_log_lines {
            let line = line_of(text, value.span().start);
            let key = "failure_log_lines";
            let n = match value.get_ref() {
                toml::Value::Integer(n) => Ok(*n),
                toml::Value::String(s) => {
                    let s = vars
                        .expand(s, key)
                        .map_err(|e| expand(Place::Line(line), e))?;
                    s.trim().parse::<i64>().map_err(drop)
                }
                _ => Err(()),
            };
            lines = match n.map(u64::try_from) {
                Ok(Ok(n)) => n,
                Ok(Err(_)) | Err(_) => {
                    let shown = match value.get_ref() {
                        toml::Value::String(s) => format!("`{s}`"),
                        other => other.to_string(),
                    };
                    let why =
                        format!("`{key}` must be a whole number of lines, 0 or more, not {shown}");
                    return Err(invalid(Place::Line(line), why));
                }
            };
        }
        let mut window = FailureLogBudget::default().window();
        if let Some(value) = &file.failure_log_window {
            let line = line_of(text, value.span().start);
            let key = "failure_log_window";
            let bad = |why: String| invalid(Place::Line(line), format!("`{key}`: {why}"));
            window = match value.get_ref() {
                toml::Value::Integer(ms) => u64::try_from(*ms)
                    .map(Duration::from_millis)
                    .map_err(|_| bad(format!("`{ms}` is not a duration")))?,
                toml::Value::String(s) => {
                    let s = vars
                        .expand(s, key)
                        .map_err(|e| expand(Place::Line(line), e))?;
                    crate::options::parse_duration(&s).map_err(&bad)?
                }
                other => return Err(bad(format!("`{other}` is not a duration"))),
            };
        }
        let failure_log_budget = FailureLogBudget::new(lines, window).map_err(|e| {
            let line = file
                .failure_log_window
                .as_ref()
                .map_or(0, |v| line_of(text, v.span().start));
            invalid(Place::Line(line), format!("`failure_log_window`: {e}"))
        })?;
        let drain_delay = match &file.app.drain_delay {
            None => Duration::ZERO,
            Some(text) => {
                let key = "app.drain_delay";
                let text = vars.expand(text, key).map_err(|e| expand(Place::File, e))?;
                crate::options::parse_duration(&text)
                    .map_err(|why| invalid(Place::File, format!("`{key}`: {why}")))?
            }
        };
        let mut listeners: Vec<ListenerSpec> = Vec::with_capacity(tables.len());
        let mut listener_tables = Vec::with_capacity(tables.len());
        let mut listener_files: Vec<PathBuf> = Vec::with_capacity(tables.len());
        for (from, i, mut table) in tables {
            let at = from.clone();
            let invalid =
                |place, message: String| ConfigError::new(&at, place, Fault::Invalid(message));
            let expand = |place, e: ExpandError| ConfigError::new(&at, place, Fault::Expand(e));
            let key = format!("listener[{i}]");
            let name = match table.get("name") {
                Some(toml::Value::String(s)) if !s.is_empty() => {
                    vars.expand(s, &format!("{key}.name")).ok()
                }
                _ => None,
            };
            let place = Place::Listener { name, index: i };
            if let Err(e) = vars.expand_table(&mut table, &key) {
                return Err(expand(place, e));
            }
            let mut spec = match ListenerSpec::from_toml(&table, base) {
                Ok(spec) => spec,
                Err(message) => return Err(invalid(place, message)),
            };
            spec.telemetry = Arc::new(Telemetry::with_failure_log_budget(failure_log_budget));
            if let Some(first) = listeners.iter().position(|l| l.name == spec.name) {
                let message = match listener_files[first] == from {
                    true => format!("duplicate name: listener #{} has it too", first + 1),
                    false => format!(
                        "duplicate name: {} has a listener of that name too",
                        listener_files[first].display()
                    ),
                };
                return Err(invalid(place, message));
            }
            listeners.push(spec);
            listener_tables.push(table);
            listener_files.push(from);
        }
        let (env, vars) = vars.into_parts();
        Ok(Config {
            path: path.to_owned(),
            listeners,
            log_events,
            failure_log_budget,
            env,
            vars,
            drain_delay,
            listener_tables,
            listener_files,
        })
    }

    /// Every place the key `key` is set, expanded: the `[app]` table first (its resolved
    /// value, defaults and OS variables included, when `key` is one of its keys), then each
    /// listener that sets it, in file order. A dotted key looks into nested tables
    /// (`tls.cert`). This is setup's `find_env_vars`, over one config file's tables rather
    /// than over loaded applications; `atoll env --find KEY` prints it.
    pub fn find_env_vars(&self, key: &str) -> Vec<FoundKey> {
        let mut found = Vec::new();
        if let Some(value) = self.app_value(key.strip_prefix("app.").unwrap_or(key)) {
            found.push(FoundKey {
                owner: "app".to_owned(),
                value,
            });
        }
        for (spec, table) in self.listeners.iter().zip(&self.listener_tables) {
            let mut value = None;
            let mut at = Some(table);
            for (i, part) in key.split('.').enumerate() {
                let here = at.and_then(|t| t.get(part));
                if i + 1 == key.split('.').count() {
                    value = here.cloned();
                } else {
                    at = here.and_then(toml::Value::as_table);
                }
            }
            if let Some(value) = value {
                found.push(FoundKey {
                    owner: format!("listener {}", spec.name),
                    value,
                });
            }
        }
        found
    }

    /// The resolved `[app]` values, in the order `atoll env` lists them: the application
    /// environment's ([`AppEnv`]), then `drain_delay` in milliseconds (`"1500ms"`, which reads
    /// back as the same duration). `atoll env` and `atoll env --find` both read this list.
    fn app_values(&self) -> Vec<(&'static str, toml::Value)> {
        let mut values = crate::setup::app_entries(&self.env);
        let drain_delay = format!("{}ms", self.drain_delay.as_millis());
        values.push(("drain_delay", toml::Value::String(drain_delay)));
        values
    }

    /// The resolved `[app]` value of `key`, when it is one of its keys.
    fn app_value(&self, key: &str) -> Option<toml::Value> {
        self.app_values()
            .into_iter()
            .find_map(|(k, value)| (k == key).then_some(value))
    }

    /// What `atoll env` prints: one `key = value` line per resolved `[app]` value (every key
    /// of the table, set or not, `app.drain_delay` included), then one per `[vars]`
    /// variable, as [`setup::describe`](crate::setup::describe) writes them.
    pub fn describe(&self) -> String {
        crate::setup::describe_entries(&self.app_values(), &self.vars)
    }

    /// What `atoll env --json` prints: `{"app": {...}, "vars": {...}}` with the same values
    /// as [`describe`](Self::describe), pretty-printed, with a final line break.
    pub fn describe_json(&self) -> String {
        crate::setup::describe_entries_json(&self.app_values(), &self.vars)
    }

    /// Starts every listener on `registry`, in file order, each logging its events as
    /// `log_events` says. The handles come back in the same order. When one fails to start,
    /// the ones already started are stopped at once and the error names the one at fault.
    ///
    /// First, [`verify`](Self::verify) checks them all, so that a fault anywhere starts
    /// nothing, and two listeners that would share an address are refused.
    pub async fn start(&self, registry: &Registry) -> Result<Vec<ServerHandle>, ConfigError> {
        self.verify(registry)?;
        let mut started = Vec::with_capacity(self.listeners.len());
        for (i, spec) in self.listeners.iter().enumerate() {
            // Attached before the start, so `listener.start` and `acceptor.start` are logged.
            let attached = self.attach(spec);
            match registry.start_spec(spec) {
                Ok(handle) => started.push(handle),
                Err(e) => {
                    for id in attached {
                        spec.telemetry.detach(id);
                    }
                    for handle in started {
                        let _ = registry.stop(handle.name(), Some(Duration::ZERO)).await;
                    }
                    return Err(self.listener_fault(i, e));
                }
            }
        }
        Ok(started)
    }
}

impl Config {
    /// The error that the `i`th listener (from 0) could not start or be checked, naming the
    /// file it was read from.
    pub(crate) fn listener_fault(&self, i: usize, e: Error) -> ConfigError {
        self.listener_error(i, Fault::Start(e))
    }

    /// The error that the `i`th listener (from 0) is wrong as `why` says.
    pub(crate) fn listener_invalid(&self, i: usize, why: String) -> ConfigError {
        self.listener_error(i, Fault::Invalid(why))
    }

    fn listener_error(&self, i: usize, fault: Fault) -> ConfigError {
        let place = Place::Listener {
            name: self.listeners.get(i).map(|l| l.name.clone()),
            index: i + 1,
        };
        let file = self.listener_files.get(i).unwrap_or(&self.path);
        ConfigError::new(file, place, fault)
    }

    /// True when the config has a listener of kind `admin`: then every listener records
    /// metrics ([`MetricsRecorder`]) for `/metrics` to show. Without one, no listener pays for
    /// them.
    pub fn records_metrics(&self) -> bool {
        self.listeners.iter().any(|l| l.kind == "admin")
    }

    /// Attaches to `spec`'s telemetry hub, before its listener starts, the subscribers this
    /// config gives every listener: the logger `log_events` says, and a [`MetricsRecorder`]
    /// when [`records_metrics`](Self::records_metrics). Returns them, to detach when the start
    /// fails.
    pub(crate) fn attach(&self, spec: &ListenerSpec) -> Vec<SubscriptionId> {
        let mut attached = Vec::new();
        attached.extend(self.log_events.attach(&spec.telemetry));
        if self.records_metrics() {
            attached.push(spec.telemetry.attach(MetricsRecorder::new()));
        }
        attached
    }
}

/// The folder of the config file at `path`, from the working directory of `os`.
fn config_dir(path: &Path, os: &OsEnv) -> PathBuf {
    match path.parent() {
        // `join("")` would add a trailing `/` to `$PRIV_DIR`.
        Some(base) if !base.as_os_str().is_empty() => os.cwd().join(base),
        _ => os.cwd().to_owned(),
    }
}

fn line_of(text: &str, offset: usize) -> usize {
    let before = text.get(..offset).unwrap_or(text);
    before.matches('\n').count() + 1
}

// ===== impl ConfigError =====

/// Why a config file could not be read, checked or started. Its `Display` is one line naming
/// the file, then the line or the listener when known, then the fault:
/// ``atoll.toml: listener `echo`: unknown field `prot`, ...``.
pub struct ConfigError {
    inner: Box<ErrorInner>,
}

struct ErrorInner {
    file: PathBuf,
    place: Place,
    fault: Fault,
}

enum Place {
    File,
    Line(usize),
    Listener { name: Option<String>, index: usize },
}

enum Fault {
    Read(io::Error),
    Invalid(String),
    Expand(ExpandError),
    Start(Error),
}

impl ConfigError {
    fn new(file: &Path, place: Place, fault: Fault) -> Self {
        ConfigError {
            inner: Box::new(ErrorInner {
                file: file.to_owned(),
                place,
                fault,
            }),
        }
    }

    /// The config file at fault.
    pub fn file(&self) -> &Path {
        &self.inner.file
    }

    /// The line at fault, for a syntax error or a bad top-level value.
    pub fn line(&self) -> Option<usize> {
        match self.inner.place {
            Place::Line(n) => Some(n),
            _ => None,
        }
    }

    /// The name of the listener at fault, when it has one.
    pub fn listener(&self) -> Option<&str> {
        match &self.inner.place {
            Place::Listener { name, .. } => name.as_deref(),
            _ => None,
        }
    }

    /// The position (from 1) of the `[[listener]]` table at fault.
    pub fn listener_index(&self) -> Option<usize> {
        match self.inner.place {
            Place::Listener { index, .. } => Some(index),
            _ => None,
        }
    }

    /// The key whose value could not be expanded, as a path (`vars.certs`,
    /// `listener[2].tls.cert`, counting from 1), for a variable error (its source is then an
    /// [`ExpandError`]).
    pub fn key(&self) -> Option<&str> {
        match &self.inner.fault {
            Fault::Expand(e) => Some(e.key()),
            _ => None,
        }
    }

    /// The class of failure: [`Io`](ErrorKind::Io) when the file cannot be read,
    /// [`Config`](ErrorKind::Config) when its content is wrong (a variable included), and the
    /// start error's kind ([`AddressInUse`](ErrorKind::AddressInUse),
    /// [`Certificate`](ErrorKind::Certificate), ...) when a listener cannot start.
    pub fn kind(&self) -> ErrorKind {
        match &self.inner.fault {
            Fault::Read(_) => ErrorKind::Io,
            Fault::Invalid(_) | Fault::Expand(_) => ErrorKind::Config,
            Fault::Start(e) => e.kind(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = &*self.inner;
        write!(f, "{}: ", inner.file.display())?;
        let mut label = String::new();
        match &inner.place {
            Place::File => {}
            Place::Line(n) => write!(f, "line {n}: ")?,
            Place::Listener {
                name: Some(name), ..
            } => {
                label = format!("listener `{name}`: ");
                f.write_str(&label)?;
            }
            Place::Listener { name: None, index } => write!(f, "listener #{index}: ")?,
        }
        let fault = match &inner.fault {
            Fault::Read(e) => format!("cannot read: {e}"),
            Fault::Invalid(message) => message.clone(),
            Fault::Expand(e) => e.to_string(),
            Fault::Start(e) => {
                // Start errors may name the listener themselves; say it once.
                let text = e.to_string();
                match text.strip_prefix(&label) {
                    Some(rest) if !label.is_empty() => rest.to_owned(),
                    _ => text,
                }
            }
        };
        f.write_str(&one_line(&fault))
    }
}

impl fmt::Debug for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConfigError")
            .field("kind", &self.kind())
            .field("message", &self.to_string())
            .finish()
    }
}

impl std::error::Error for ConfigError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.inner.fault {
            Fault::Read(e) => Some(e),
            Fault::Invalid(_) => None,
            Fault::Expand(e) => Some(e),
            Fault::Start(e) => Some(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::options::ServerOptions;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("conf/atoll.toml"))
    }

    fn fails(text: &str) -> String {
        let e = parse(text).unwrap_err().to_string();
        assert!(!e.contains('\n'), "not one line: {e}");
        e
    }

    const ECHO: &str = "[[listener]]\nname = \"echo\"\nkind = \"echo\"\nport = 0\n";

    #[test]
    fn reads_listeners_in_order_with_paths_from_the_file_folder() {
        let c = parse(
            "log_events = \"debug\"\n[[listener]]\nname = \"a\"\nkind = \"echo\"\nip = \"127.0.0.1\"\nport = 0\n[listener.tls]\ncert = \"c.pem\"\nkey = \"k.pem\"\n\n[[listener]]\nname = \"b\"\nkind = \"echo\"\nunix = \"b.sock\"\n",
        )
        .unwrap();
        let names: Vec<_> = c.listeners.iter().map(|l| l.name.as_str()).collect();
        assert_eq!(names, ["a", "b"]);
        assert_eq!(c.log_events, LogEvents::All(Level::DEBUG));
        let tls = c.listeners[0].tls.as_ref().unwrap();
        assert_eq!(tls.cert, Path::new("conf/c.pem"));
        assert_eq!(
            c.listeners[1].unix.as_deref(),
            Some(Path::new("conf/b.sock"))
        );
        assert_eq!(parse(ECHO).unwrap().log_events, LogEvents::Errors);
    }

    #[test]
    fn drain_delay_is_a_duration_of_the_app_table() {
        assert_eq!(parse(ECHO).unwrap().drain_delay, Duration::ZERO);
        let with = |value: &str| parse(&format!("[app]\ndrain_delay = {value}\n{ECHO}"));
        assert_eq!(
            with("\"10s\"").unwrap().drain_delay,
            Duration::from_secs(10)
        );
        assert_eq!(
            with("1500").unwrap().drain_delay,
            Duration::from_millis(1500)
        );
        let vars = "[vars]\nwait = \"2m\"\n";
        let c = parse(&format!("[app]\ndrain_delay = \"$wait\"\n{vars}{ECHO}")).unwrap();
        assert_eq!(c.drain_delay, Duration::from_secs(120));
        let e = with("\"soon\"").unwrap_err().to_string();
        assert!(
            e.starts_with("conf/atoll.toml: `app.drain_delay`: ") && e.contains("soon"),
            "{e}"
        );
        assert!(!parse(ECHO).unwrap().records_metrics());
    }

    #[test]
    fn errors_name_the_file_and_the_listener() {
        let e = fails(&format!("{ECHO}[[listener]]\nkind = \"echo\"\n"));
        assert_eq!(e, "conf/atoll.toml: listener #2: missing `name`");
        let e = fails("[[listener]]\nname = \"p\"\nkind = \"echo\"\nport = 70000\n");
        assert!(e.starts_with("conf/atoll.toml: listener `p`: "), "{e}");
        assert!(e.contains("70000"), "{e}");
        let e = fails("[[listener]]\nname = \"p\"\nkind = \"echo\"\nport = \"x\"\n");
        assert!(e.contains("listener `p`") && e.contains("\"x\""), "{e}");
        let e = fails(&format!("{ECHO}{ECHO}"));
        assert_eq!(
            e,
            "conf/atoll.toml: listener `echo`: duplicate name: listener #1 has it too"
        );
    }

    #[test]
    fn top_level_errors_give_the_line() {
        let e = fails(&format!("\nverbose = true\n{ECHO}"));
        assert!(
            e.starts_with("conf/atoll.toml: line 2: unknown field `verbose`"),
            "{e}"
        );
        let err = parse(&format!("{ECHO}port = = 1\n")).unwrap_err();
        assert_eq!(err.line(), Some(5));
        assert_eq!(err.kind(), ErrorKind::Config);
        assert!(
            err.to_string().starts_with("conf/atoll.toml: line 5: "),
            "{err}"
        );
        let e = fails(&format!("log_events = \"loud\"\n{ECHO}"));
        assert!(
            e.starts_with("conf/atoll.toml: line 1: unknown `log_events` value `loud`"),
            "{e}"
        );
        let e = fails("log_events = \"off\"\n");
        assert_eq!(e, "conf/atoll.toml: no [[listener]] table");
    }

    #[test]
    fn the_failure_log_budget_is_read_checked_and_given_to_every_listener() {
        let c = parse(ECHO).unwrap();
        assert_eq!(c.failure_log_budget, FailureLogBudget::default());
        let c = parse(&format!(
            "failure_log_lines = 0\nfailure_log_window = \"2m\"\n{ECHO}"
        ))
        .unwrap();
        let expected = FailureLogBudget::new(0, Duration::from_secs(120)).unwrap();
        assert_eq!(c.failure_log_budget, expected);
        assert_eq!(c.listeners[0].telemetry.failure_log_budget(), expected);
        let c = parse(&format!("failure_log_window = 5000\n{ECHO}")).unwrap();
        assert_eq!(c.failure_log_budget.window(), Duration::from_secs(5));

        for (text, key) in [
            ("failure_log_lines = -1", "line 1: `failure_log_lines` must be a whole number"),
            ("failure_log_lines = \"many\"", "line 1: `failure_log_lines` must be a whole number"),
            ("failure_log_lines = 1.5", "line 1: `failure_log_lines` must be a whole number"),
            ("failure_log_window = \"0s\"", "line 1: `failure_log_window`: a failure log window must be from 1s to 86400s, not 0ns"),
            ("\nfailure_log_window = \"25h\"", "line 2: `failure_log_window`: a failure log window must be from 1s"),
            ("failure_log_window = \"soon\"", "line 1: `failure_log_window`: `soon` is not a duration"),
            ("failure_log_window = -3", "line 1: `failure_log_window`: `-3` is not a duration"),
        ] {
            let e = fails(&format!("{text}\n{ECHO}"));
            assert!(e.starts_with(&format!("conf/atoll.toml: {key}")), "{text}: {e}");
        }
    }

    #[test]
    fn a_missing_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nope.toml");
        let err = Config::load(&path).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Io);
        let e = err.to_string();
        assert!(
            e.starts_with(&format!("{}: cannot read: ", path.display())),
            "{e}"
        );
    }

    #[tokio::test]
    async fn a_failed_start_stops_the_listeners_already_started() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = taken.local_addr().unwrap().port();
        let text = format!(
            "[[listener]]\nname = \"first\"\nkind = \"echo\"\nip = \"127.0.0.1\"\nport = 0\n\
             [[listener]]\nname = \"second\"\nkind = \"echo\"\nip = \"127.0.0.1\"\nport = {port}\n"
        );
        let registry = Registry::new();
        let err = parse(&text).unwrap().start(&registry).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::AddressInUse);
        assert_eq!(err.listener(), Some("second"));
        let e = err.to_string();
        let bind =
            format!("conf/atoll.toml: listener `second`: cannot listen on 127.0.0.1:{port}: ");
        assert!(e.starts_with(&bind) && e.contains("address in use"), "{e}");
        assert!(registry.list().is_empty(), "{:?}", registry.list());

        let c = parse("[[listener]]\nname = \"k\"\nkind = \"chat\"\nport = 0\n").unwrap();
        let e = c.start(&registry).await.unwrap_err().to_string();
        assert!(
            e.starts_with(
                "conf/atoll.toml: listener `k`: invalid configuration: unknown kind `chat`"
            ),
            "{e}"
        );
    }

    #[tokio::test]
    async fn a_key_the_kind_does_not_know_is_named_at_start() {
        let c =
            parse("[[listener]]\nname = \"echo\"\nkind = \"echo\"\nport = 0\nprot = 1\n").unwrap();
        let e = c.start(&Registry::new()).await.unwrap_err().to_string();
        assert!(
            e.starts_with("conf/atoll.toml: listener `echo`: ")
                && e.contains("unknown field `prot`"),
            "{e}"
        );
    }

    #[tokio::test]
    async fn a_missing_certificate_is_named() {
        let c = parse(
            "[[listener]]\nname = \"t\"\nkind = \"echo\"\nport = 0\n[listener.tls]\ncert = \"none.pem\"\nkey = \"none-key.pem\"\n",
        )
        .unwrap();
        let err = c.start(&Registry::new()).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Certificate);
        let e = err.to_string();
        assert!(
            e.starts_with("conf/atoll.toml: listener `t`: conf/none.pem: "),
            "{e}"
        );
    }

    /// The sample config at the repository root runs an echo, an HTTP, an RPC and an admin
    /// listener, and its commented
    /// lines (`#key = value`) name every option and still parse once uncommented.
    #[test]
    fn the_sample_config_shows_every_option() {
        let sample = include_str!("../atoll.toml");
        let c = Config::parse(sample, Path::new("atoll.toml")).unwrap();
        let kinds: Vec<_> = c.listeners.iter().map(|l| l.kind.as_str()).collect();
        assert_eq!(kinds, ["echo", "http", "rpc", "admin"]);
        assert!(c.records_metrics());
        let admin = &c.listeners[3];
        assert_eq!(admin.options.ip.to_string(), "127.0.0.1");
        assert_eq!(admin.options.port, crate::http::DEFAULT_ADMIN_PORT);
        let echo = &c.listeners[0];
        assert_eq!((echo.name.as_str(), echo.kind.as_str()), ("echo", "echo"));
        assert_eq!(echo.options.ip.to_string(), "127.0.0.1");
        assert_eq!(echo.options.port, 4000);

        let uncommented: String = sample
            .lines()
            .map(|l| match l.strip_prefix('#') {
                Some(rest) if rest.starts_with(|c: char| c.is_ascii_alphabetic() || c == '[') => {
                    rest
                }
                _ => l,
            })
            .map(|l| format!("{l}\n"))
            .collect();
        let full = Config::parse(&uncommented, Path::new("atoll.toml")).unwrap();
        // The top-level keys, shown with their defaults.
        assert_eq!(full.log_events, LogEvents::default());
        assert_eq!(full.failure_log_budget, FailureLogBudget::default());
        for key in ["log_events", "failure_log_lines", "failure_log_window"] {
            assert!(
                uncommented
                    .lines()
                    .any(|l| l.starts_with(&format!("{key} = "))),
                "atoll.toml does not show `{key}`"
            );
        }
        let kinds: Vec<_> = full.listeners.iter().map(|l| l.kind.as_str()).collect();
        assert_eq!(kinds, ["echo", "http", "https", "rpc", "admin"]);
        assert_eq!(full.drain_delay, Duration::ZERO, "the default drain_delay");
        let web = &full.listeners[1];
        let http_keys: Vec<&str> = web.params.keys().map(String::as_str).collect();
        for key in crate::http::HttpOptions::field_names() {
            assert!(http_keys.contains(key), "atoll.toml does not show `{key}`");
        }
        let kv = &full.listeners[3];
        for key in ["service", "path", "max_value_size", "max_store_size"] {
            assert!(
                kv.params.contains_key(key),
                "atoll.toml does not show `{key}`"
            );
        }
        for key in crate::rpc::RpcOptions::field_names() {
            assert!(
                kv.params.contains_key(*key),
                "atoll.toml does not show `{key}`"
            );
        }
        let spec = &full.listeners[0];
        let tls = spec.tls.as_ref().expect("a commented tls table");
        assert!(tls.cacert.is_some() && !tls.alpn.is_empty() && !tls.sni.is_empty());
        assert!(
            tls.client_auth.is_some(),
            "atoll.toml does not show `client_auth`"
        );
        assert!(spec.unix.is_some());

        // serde lists every field of ServerOptions when it meets an unknown one.
        let err = toml::from_str::<ServerOptions>("no_such_option = 1").unwrap_err();
        let fields = err.message().split("expected one of ").nth(1).unwrap();
        for field in fields.split(", ") {
            let field = field.trim_matches('`');
            assert!(
                uncommented
                    .lines()
                    .any(|l| l.starts_with(&format!("{field} = "))),
                "atoll.toml does not show `{field}`"
            );
        }
    }
}
