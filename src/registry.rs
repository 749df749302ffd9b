//! The listener registry: every running listener by name, with its kind, address, uptime and
//! connection count; start from a spec, stop by name.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use crate::addr::Addr;
use crate::echo::Echo;
use crate::error::{Error, ErrorKind, Result};
use crate::handle::{Phase, ServerHandle, StopReport};
use crate::handler::Handler;
use crate::options::ServerOptions;
use crate::server::Server;
use crate::sockets::{Carried, Inherited, Origin, SocketPool};
use crate::spec::{unknown_kind, ListenerSpec};
use crate::telemetry::{Event, EventKind};

/// Starts a listener of one kind from its spec.
pub type Launcher = Arc<dyn Fn(&ListenerSpec) -> Result<ServerHandle> + Send + Sync>;

/// Checks a spec of one kind without starting anything, and gives the server options its
/// listener would bind with; see [`Registry::add_check`].
pub type Checker = Arc<dyn Fn(&ListenerSpec) -> Result<ServerOptions> + Send + Sync>;

/// A running listener, as [`Registry::list`] reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerInfo {
    /// The listener's name.
    pub name: String,
    /// Its kind (`"echo"`, ...).
    pub kind: String,
    /// The address it is bound to.
    pub addr: Addr,
    /// How long it has been running.
    pub uptime: Duration,
    /// How many connections are open.
    pub connections: usize,
}

/// How long a listener has been running: days, then hours, minutes and seconds (leptus's
/// `{Days, {H, M, S}}`), over the whole [`Duration`]. Ordered by the duration. Its `Display`
/// is `2d 03:04:05`; serialized, it is `{"days": 2, "hours": 3, "minutes": 4, "seconds": 5,
/// "total_secs": 183845.2}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Uptime(Duration);

impl Uptime {
    /// The whole uptime.
    pub fn duration(self) -> Duration {
        self.0
    }

    /// Whole days.
    pub fn days(self) -> u64 {
        self.0.as_secs() / 86_400
    }

    /// Hours past the days, 0 to 23.
    pub fn hours(self) -> u8 {
        (self.0.as_secs() / 3600 % 24) as u8
    }

    /// Minutes past the hours, 0 to 59.
    pub fn minutes(self) -> u8 {
        (self.0.as_secs() / 60 % 60) as u8
    }

    /// Seconds past the minutes, 0 to 59 (the fraction is in [`duration`](Self::duration)).
    pub fn seconds(self) -> u8 {
        (self.0.as_secs() % 60) as u8
    }
}

impl From<Duration> for Uptime {
    fn from(d: Duration) -> Self {
        Uptime(d)
    }
}

impl fmt::Display for Uptime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let u = *self;
        let (h, m, s) = (u.hours(), u.minutes(), u.seconds());
        write!(f, "{}d {h:02}:{m:02}:{s:02}", u.days())
    }
}

impl serde::Serialize for Uptime {
    fn serialize<S: serde::Serializer>(
        &self,
        serializer: S,
    ) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut st = serializer.serialize_struct("Uptime", 5)?;
        st.serialize_field("days", &self.days())?;
        st.serialize_field("hours", &self.hours())?;
        st.serialize_field("minutes", &self.minutes())?;
        st.serialize_field("seconds", &self.seconds())?;
        st.serialize_field("total_secs", &self.0.as_secs_f64())?;
        st.end()
    }
}

struct Entry {
    kind: String,
    handle: ServerHandle,
}

#[derive(Default)]
struct Inner {
    listeners: BTreeMap<String, Entry>,
    kinds: HashMap<String, Launcher>,
    checks: HashMap<String, Checker>,
    updaters: HashMap<String, Updater>,
}

/// Applies a changed spec to a running listener of one kind in place, when the change allows
/// it: `Some(result)` when it handled the change, `None` when the listener must be replaced.
pub type Updater =
    Arc<dyn Fn(&ServerHandle, &ListenerSpec, &ListenerSpec) -> Option<Result<()>> + Send + Sync>;

/// Named listeners (leptus's part): list them, read one's uptime, stop one by name, start one
/// from a [`ListenerSpec`] whose kind has been registered.
///
/// `Registry::new()` knows the kind `echo`; applications add their own with
/// [`add_kind`](Registry::add_kind). Clones share the same listeners.
///
/// # Locking
///
/// One mutex guards the maps of listeners, kinds, checks and updaters, and it is held only to
/// move plain data in or out of them: a lookup, a clone of a handle or launcher, an insert, a
/// remove. It is never held while a launcher, a check, an updater or a stop runs (they may
/// call the registry again), across an `.await`, or while building an error message that
/// needs the registry (the list of known kinds). Each method takes the guard in a statement
/// of its own and lets it go at that statement's end, so no expression holds it twice.
///
/// ```no_run
/// # async fn run() -> atoll::Result<()> {
/// use atoll::{ListenerSpec, Registry};
///
/// let registry = Registry::new();
/// let mut spec = ListenerSpec::new("echo", "echo");
/// spec.options.port = 0;
/// registry.start_spec(&spec)?;
/// for l in registry.list() {
///     println!("{} {} {} up {:?}", l.name, l.kind, l.addr, l.uptime);
/// }
/// let report = registry.stop("echo", None).await?;
/// assert!(registry.stop("echo", None).await.unwrap_err().is_not_found());
/// # let _ = report; Ok(()) }
/// ```
#[derive(Clone)]
pub struct Registry {
    inner: Arc<Mutex<Inner>>,
    sockets: SocketPool,
}

impl Default for Registry {
    fn default() -> Self {
        Registry::new()
    }
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = self.lock();
        f.debug_struct("Registry")
            .field("listeners", &inner.listeners.keys().collect::<Vec<_>>())
            .field("kinds", &inner.kinds.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Registry {
    /// An empty registry that knows the `echo` kind.
    pub fn new() -> Self {
        let registry = Registry {
            inner: Arc::new(Mutex::new(Inner::default())),
            sockets: SocketPool::default(),
        };
        registry.add_kind("echo", |spec| {
            spec.expect_no_params()?;
            spec.server(Echo)?.start()
        });
        registry.add_check("echo", |spec| {
            spec.expect_no_params()?;
            if let Some(tls) = &spec.tls {
                tls.load()
                    .map_err(|e| e.context(format!("listener `{}`", spec.name)))?;
            }
            Ok(spec.options.clone())
        });
        registry
    }

    /// The process-wide registry.
    pub fn global() -> &'static Registry {
        static GLOBAL: OnceLock<Registry> = OnceLock::new();
        GLOBAL.get_or_init(Registry::new)
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Every update is one insert or remove, so a poisoned map is still consistent.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The launcher of `spec`'s kind. The error for an unknown kind lists the known ones,
    /// which takes the lock again: it is built only once this lookup's guard is gone.
    fn launcher(&self, spec: &ListenerSpec) -> Result<Launcher> {
        let found = self.lock().kinds.get(&spec.kind).cloned();
        let launch = found.ok_or_else(|| unknown_kind(spec, &self.kinds()))?;
        tls_files_readable(spec)?;
        Ok(launch)
    }

    /// Registers a kind of listener, so specs naming it can be started.
    pub fn add_kind(
        &self,
        kind: impl Into<String>,
        launch: impl Fn(&ListenerSpec) -> Result<ServerHandle> + Send + Sync + 'static,
    ) {
        self.lock().kinds.insert(kind.into(), Arc::new(launch));
    }

    /// Registers how a spec of `kind` is checked without starting anything: its settings
    /// read and its files loaded as the launcher would, nothing bound, opened for writing or
    /// spawned. It returns the server options the listener would bind with (a kind may give
    /// its own default address, as `http` does). [`check_spec`](Self::check_spec) runs it;
    /// [`Config::check`](crate::Config::check) (`atoll check`) runs it over a whole config,
    /// and [`Config::start`](crate::Config::start) before it starts anything, so that two
    /// listeners that would share an address are refused. A kind without a check is checked
    /// by name only.
    pub fn add_check(
        &self,
        kind: impl Into<String>,
        check: impl Fn(&ListenerSpec) -> Result<ServerOptions> + Send + Sync + 'static,
    ) {
        self.lock().checks.insert(kind.into(), Arc::new(check));
    }

    /// Checks `spec` without starting anything: its kind is known, its TLS files can be
    /// read, and the kind's check passes. `Some(options)`: the kind checked the spec, and
    /// its listener would bind with `options`; `None`: the kind registered no check, so only
    /// its name and TLS files were.
    pub fn check_spec(&self, spec: &ListenerSpec) -> Result<Option<ServerOptions>> {
        let (known, check) = {
            let inner = self.lock();
            let known = inner.kinds.contains_key(&spec.kind);
            (known, inner.checks.get(&spec.kind).cloned())
        };
        if !known && check.is_none() {
            return Err(unknown_kind(spec, &self.kinds()));
        }
        tls_files_readable(spec)?;
        check.map(|check| check(spec)).transpose()
    }

    /// Registers how a running listener of `kind` takes a changed spec in place (an HTTP
    /// listener swaps its routes when only its handlers changed); see [`update`](Self::update).
    pub fn add_updater(
        &self,
        kind: impl Into<String>,
        update: impl Fn(&ServerHandle, &ListenerSpec, &ListenerSpec) -> Option<Result<()>>
            + Send
            + Sync
            + 'static,
    ) {
        self.lock().updaters.insert(kind.into(), Arc::new(update));
    }

    /// Applies `new`, a changed spec of the running listener of that name started from `old`,
    /// in place, through the kind's updater. `None` when the kind has none or the change needs
    /// a new listener ([`replace`](Self::replace)).
    pub fn update(&self, old: &ListenerSpec, new: &ListenerSpec) -> Option<Result<()>> {
        if old.kind != new.kind {
            return None;
        }
        let update = self.lock().updaters.get(&new.kind)?.clone();
        let handle = self.get(&new.name).ok()?;
        update(&handle, old, new)
    }

    /// The sockets waiting for listeners to adopt them (socket activation, live upgrade):
    /// [`start_spec`](Self::start_spec) gives a listener the ones under its name.
    pub fn sockets(&self) -> &SocketPool {
        &self.sockets
    }

    /// The registered kinds (with a launcher, a check or both), sorted.
    pub fn kinds(&self) -> Vec<String> {
        let mut k: Vec<String> = {
            let inner = self.lock();
            inner
                .kinds
                .keys()
                .chain(inner.checks.keys())
                .cloned()
                .collect()
        };
        k.sort();
        k.dedup();
        k
    }

    /// Starts a listener from its spec. Errors: [`AlreadyRunning`](ErrorKind::AlreadyRunning)
    /// when the name is taken, [`Config`](ErrorKind::Config) for an unknown kind, and whatever
    /// starting the server gives.
    pub fn start_spec(&self, spec: &ListenerSpec) -> Result<ServerHandle> {
        self.check_free(&self.lock(), &spec.name)?;
        let launched = self
            .launcher(spec)
            .and_then(|launch| match self.sockets.take(&spec.name) {
                None => launch(spec),
                Some(sockets) => {
                    let mut spec = spec.clone();
                    spec.carried = Carried::new(sockets);
                    launch(&spec)
                }
            });
        let handle = launched.inspect_err(|e| listener_error(spec, e))?;
        self.insert(&spec.kind, handle)
    }

    /// Starts a listener from `spec` in place of the running one of that name, which keeps
    /// running until the caller stops it (draining its connections). The new listener adopts
    /// copies of the old one's listening sockets when `spec` binds the same address, so no
    /// connect is refused in between; else it binds afresh. Returns the new handle and the old.
    pub async fn replace(
        &self,
        spec: &ListenerSpec,
        same_address: bool,
    ) -> Result<(ServerHandle, ServerHandle)> {
        let old = self.get(&spec.name)?;
        let launch = self
            .launcher(spec)
            .inspect_err(|e| listener_error(spec, e))?;
        let mut spec = spec.clone();
        if same_address {
            let fds = old.listening_sockets().await?;
            spec.carried = Carried::new(Inherited {
                fds,
                origin: Origin::Handover,
            });
        }
        let new = launch(&spec).inspect_err(|e| listener_error(&spec, e))?;
        self.lock().listeners.insert(
            spec.name.clone(),
            Entry {
                kind: spec.kind.clone(),
                handle: new.clone(),
            },
        );
        Ok((new, old))
    }

    /// Starts a listener from `spec` on copies of the listening sockets of the running
    /// listener `from`, another name on the same address (a listener renamed in a reload),
    /// so that no connect is refused or reset as one takes over from the other; `from` keeps
    /// running until the caller stops it.
    pub async fn start_spec_taking_over(
        &self,
        spec: &ListenerSpec,
        from: &str,
    ) -> Result<ServerHandle> {
        let fds = self.get(from)?.listening_sockets().await?;
        let mut spec = spec.clone();
        spec.carried = Carried::new(Inherited {
            fds,
            origin: Origin::Handover,
        });
        self.start_spec(&spec)
    }

    /// Starts `server` and registers it under its name, as a listener of `kind`.
    pub fn start<H: Handler>(&self, kind: &str, server: Server<H>) -> Result<ServerHandle> {
        self.check_free(&self.lock(), server.listener_name())?;
        let handle = server.start()?;
        self.insert(kind, handle)
    }

    fn check_free(&self, inner: &Inner, name: &str) -> Result<()> {
        match inner.listeners.get(name) {
            Some(e) if e.handle.phase() != Phase::Stopped => {
                Err(Error::new(ErrorKind::AlreadyRunning).context(format!("listener `{name}`")))
            }
            _ => Ok(()),
        }
    }

    fn insert(&self, kind: &str, handle: ServerHandle) -> Result<ServerHandle> {
        let mut inner = self.lock();
        let name = handle.name().to_owned();
        if let Err(e) = self.check_free(&inner, &name) {
            // Lost a race with another start of the same name: this one goes.
            drop(inner);
            let h = handle.clone();
            tokio::spawn(async move { h.stop(Duration::ZERO).await });
            return Err(e);
        }
        inner.listeners.insert(
            name,
            Entry {
                kind: kind.to_owned(),
                handle: handle.clone(),
            },
        );
        Ok(handle)
    }

    /// Registers `handle` as the listener of its name again, in place of whatever has that
    /// name: undoes a [`replace`](Self::replace) whose new listener has been stopped.
    pub fn reinstate(&self, kind: &str, handle: ServerHandle) {
        self.lock().listeners.insert(
            handle.name().to_owned(),
            Entry {
                kind: kind.to_owned(),
                handle,
            },
        );
    }

    /// The running listeners, by name.
    pub fn list(&self) -> Vec<ListenerInfo> {
        let entries: Vec<(String, String, ServerHandle)> = {
            let mut inner = self.lock();
            inner
                .listeners
                .retain(|_, e| e.handle.phase() != Phase::Stopped);
            inner
                .listeners
                .iter()
                .map(|(name, e)| (name.clone(), e.kind.clone(), e.handle.clone()))
                .collect()
        };
        entries
            .into_iter()
            .map(|(name, kind, handle)| ListenerInfo {
                name,
                kind,
                addr: handle.local_addr().clone(),
                uptime: handle.uptime(),
                connections: handle.connection_count(),
            })
            .collect()
    }

    /// The handle of the running listener `name`.
    pub fn get(&self, name: &str) -> Result<ServerHandle> {
        match self.lock().listeners.get(name) {
            Some(e) if e.handle.phase() != Phase::Stopped => Ok(e.handle.clone()),
            _ => Err(Error::new(ErrorKind::NotFound).context(format!("listener `{name}`"))),
        }
    }

    /// How long the listener `name` has been running, as leptus's `listener_uptime` gives
    /// it: days and a time of day ([`Uptime::days`], [`hours`](Uptime::hours)...), and the
    /// whole [`Duration`] ([`Uptime::duration`]). `/listeners` and `atoll uptime --json` show
    /// the same value.
    pub fn uptime(&self, name: &str) -> Result<Uptime> {
        self.get(name).map(|h| Uptime::from(h.uptime()))
    }

    /// Stops the listener `name` (see [`ServerHandle::stop`]), waiting up to `timeout`, or its
    /// own `shutdown_timeout` when `None`, and forgets it.
    pub async fn stop(&self, name: &str, timeout: Option<Duration>) -> Result<StopReport> {
        let handle = self.get(name)?;
        let timeout = timeout.unwrap_or(handle.options().shutdown_timeout);
        let report = handle.stop(timeout).await;
        self.lock().listeners.remove(name);
        Ok(report)
    }

    /// Stops every listener at once, each with its own `shutdown_timeout`.
    pub async fn stop_all(&self) -> Vec<(String, StopReport)> {
        let handles: Vec<ServerHandle> = self
            .lock()
            .listeners
            .values()
            .map(|e| e.handle.clone())
            .collect();
        let tasks: Vec<_> = handles
            .into_iter()
            .map(|h| tokio::spawn(async move { (h.name().to_owned(), h.shutdown().await) }))
            .collect();
        let mut out = Vec::new();
        for t in tasks {
            if let Ok(r) = t.await {
                out.push(r);
            }
        }
        self.lock().listeners.clear();
        out
    }
}

/// Fails, naming the file, when a TLS file of `spec` (certificate, key, CA, SNI pairs) is
/// missing or cannot be opened: `certs/web.pem: file not found`, not a `bad certificate`.
fn tls_files_readable(spec: &ListenerSpec) -> Result<()> {
    let Some(tls) = &spec.tls else {
        return Ok(());
    };
    let files = [&tls.cert, &tls.key]
        .into_iter()
        .chain(tls.cacert.as_ref())
        .chain(tls.sni.iter().flat_map(|s| [&s.cert, &s.key]));
    for file in files {
        if let Err(e) = std::fs::File::open(file) {
            return Err(
                Error::with_source(ErrorKind::Certificate, e).context(file.display().to_string())
            );
        }
    }
    Ok(())
}

/// Emits `listener.error` on `spec`'s hub: the listener it describes did not start.
fn listener_error(spec: &ListenerSpec, e: &Error) {
    spec.telemetry
        .emit(|| Event::new(EventKind::ListenerError, &spec.name).error(e));
}
