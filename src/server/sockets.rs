//! Listening sockets a listener adopts instead of binding: handed over by the process this one
//! replaces (a live upgrade), passed by systemd (socket activation), or kept from the listener
//! a reload replaces. A [`SocketPool`] holds them by listener name until a listener of that
//! name starts.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::addr::Addr;
use crate::options::ServerOptions;

/// Where inherited sockets come from, which decides when a listener takes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// Passed by systemd: the unit's socket decides the address, so the listener of that name
    /// takes them whatever its `ip`, `port` or `unix` say.
    Activation,
    /// Handed over by a previous process or listener: taken only when the listener would bind
    /// the same address (a `port` of 0 matches any port); otherwise they are closed and the
    /// listener binds afresh.
    Handover,
}

/// The listening sockets of one listener, waiting to be adopted.
#[derive(Debug)]
pub struct Inherited {
    /// The sockets, in the order they were listening.
    pub fds: Vec<OwnedFd>,
    /// Where they come from.
    pub origin: Origin,
}

/// Inherited listening sockets by listener name; clones share the same pool.
///
/// [`Registry::start_spec`](crate::Registry::start_spec) looks here first: a listener whose
/// name has sockets waiting adopts them instead of binding.
#[derive(Clone, Default)]
pub struct SocketPool {
    inner: Arc<Mutex<BTreeMap<String, Inherited>>>,
}

impl fmt::Debug for SocketPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.lock().iter().map(|(k, v)| (k, v.fds.len())))
            .finish()
    }
}

impl SocketPool {
    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, Inherited>> {
        // One insert or remove per update: a poisoned map is still consistent.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds a socket for the listener `name`, after the ones it has.
    pub fn add(&self, name: impl Into<String>, fd: OwnedFd, origin: Origin) {
        self.lock()
            .entry(name.into())
            .or_insert_with(|| Inherited {
                fds: Vec::new(),
                origin,
            })
            .fds
            .push(fd);
    }

    /// The names with sockets waiting.
    pub fn names(&self) -> Vec<String> {
        self.lock().keys().cloned().collect()
    }

    /// Takes the sockets of `name`.
    pub fn take(&self, name: &str) -> Option<Inherited> {
        self.lock().remove(name)
    }

    /// Closes the sockets no listener took, and returns their names.
    pub fn close_unclaimed(&self) -> Vec<String> {
        std::mem::take(&mut *self.lock()).into_keys().collect()
    }
}

impl Inherited {
    /// Whether a listener with these options (and Unix path) should adopt these sockets.
    pub(crate) fn fits(&self, opts: &ServerOptions, unix: Option<&PathBuf>) -> bool {
        if self.origin == Origin::Activation {
            return true;
        }
        self.fds.iter().all(|fd| match local_addr(fd) {
            Some(Addr::Inet(addr)) => unix.is_none() && same_inet(addr, opts),
            Some(Addr::Unix(Some(path))) => unix == Some(&path),
            _ => false,
        })
    }
}

fn same_inet(addr: SocketAddr, opts: &ServerOptions) -> bool {
    let ip = match (addr.ip(), opts.ip) {
        // A socket on all interfaces of either family stands for "all interfaces".
        (a, b) if a.is_unspecified() && b.is_unspecified() => true,
        (a, b) => a == b,
    };
    ip && (opts.port == 0 || opts.port == addr.port())
}

/// The address a listening socket is bound to.
pub(crate) fn local_addr(fd: &OwnedFd) -> Option<Addr> {
    let addr = socket2::SockRef::from(fd).local_addr().ok()?;
    if let Some(inet) = addr.as_socket() {
        return Some(Addr::Inet(inet));
    }
    if addr.is_unix() {
        return Some(Addr::Unix(addr.as_pathname().map(PathBuf::from)));
    }
    None
}

/// Sockets a spec carries to its launcher, taken once by [`ListenerSpec::bind`](crate::ListenerSpec::bind).
#[derive(Clone, Default)]
pub(crate) struct Carried(Arc<Mutex<Option<Inherited>>>);

impl fmt::Debug for Carried {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.lock().as_ref().map_or(0, |i| i.fds.len());
        write!(f, "Carried({n})")
    }
}

impl Carried {
    fn lock(&self) -> MutexGuard<'_, Option<Inherited>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn new(sockets: Inherited) -> Carried {
        Carried(Arc::new(Mutex::new(Some(sockets))))
    }

    pub(crate) fn take(&self) -> Option<Inherited> {
        self.lock().take()
    }
}
