//! systemd integration, written by hand (no libsystemd): socket activation
//! (`sd_listen_fds_with_names`) and readiness notification (`sd_notify`).
//!
//! # Socket activation
//!
//! When systemd starts `atoll serve` from a socket unit, it passes the unit's listening sockets
//! from descriptor 3 up, and says so in three variables: `LISTEN_PID` (the process they are
//! for), `LISTEN_FDS` (how many) and `LISTEN_FDNAMES` (a colon-separated name for each, the
//! socket unit's `FileDescriptorName=`). [`adopt_into`] gives each socket to the listener whose
//! `name` is the socket's name; that listener then serves on it whatever its `ip`, `port` or
//! `unix` say (see [`Origin::Activation`]). Several `ListenStream=` lines in one socket unit
//! share its name, so one listener can get several sockets.
//!
//! atoll is stricter than systemd's library in two ways, because it matches sockets to
//! listeners by name and a socket given to nobody would leave a port the operator thinks is
//! served unanswered:
//! - a socket without a name (`LISTEN_FDNAMES` unset, or an empty name), which systemd's library
//!   would call `unknown`, is an error;
//! - a name no listener has is an error at start ([`check_claimed`]). systemd names a socket
//!   after its unit (`atoll.socket`) when `FileDescriptorName=` is not set, so forgetting that
//!   line fails here, naming the socket.
//!
//! Defaults, as in systemd: without `LISTEN_PID`, or with another process's, nothing is adopted
//! and the variables are left alone (they were meant for a parent); an unset `LISTEN_FDS` means
//! no sockets. Once the variables were for this process they are removed, so a process atoll
//! starts does not think it was passed the same descriptors.
//!
//! # Readiness
//!
//! With `Type=notify`, systemd waits for `READY=1` on the datagram socket named by
//! `NOTIFY_SOCKET` before it calls the service started. atoll sends:
//! - `READY=1` ([`ready`]) once every listener listens;
//! - `RELOADING=1` with `MONOTONIC_USEC` ([`reloading`]) when SIGHUP (`ExecReload=`) starts a
//!   reload, then `READY=1` again when it is done, so `systemctl reload` waits for it;
//! - `STOPPING=1` ([`stopping`]) when SIGTERM or SIGINT starts the graceful stop;
//! - during a live upgrade (`atoll upgrade`): `READY=1` from the new process once it serves,
//!   then `MAINPID=` ([`main_pid`]) with the new process's pid from the old one, which then
//!   drains and exits. The new process is not the main process yet when it sends, which is
//!   why the unit needs `NotifyAccess=all`;
//! - `STATUS=` ([`status`]) lines for `systemctl status`.
//!
//! `NOTIFY_SOCKET` is never removed: the new process of a live upgrade inherits it and needs it.
//! Without it (not run by systemd), every notification does nothing and says so with
//! `Ok(false)`.
//!
//! Sample units, with each choice explained, are in `dist/systemd/`: `atoll.service`
//! (`Type=notify`, `NotifyAccess=all`, `ExecReload=/bin/kill -HUP $MAINPID`) and
//! `atoll.socket` (`FileDescriptorName=` set to the listener's name).

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::fmt;
use std::io;
use std::os::fd::{OwnedFd, RawFd};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::path::Path;
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::time::TimeValLike;
use nix::time::{clock_gettime, ClockId};
use socket2::{Domain, SockRef, Type};

use crate::sockets::{Origin, SocketPool};

/// The first descriptor systemd passes (`SD_LISTEN_FDS_START`).
const LISTEN_FDS_START: RawFd = 3;

/// How long a notification may wait for room on the notify socket: 1 s. systemd reads it
/// promptly; one that has not in a second is not going to, and a stop must not hang on it.
const NOTIFY_TIMEOUT: Duration = Duration::from_secs(1);

// ===== socket activation =====

/// Why the sockets systemd passed cannot be used. `Display` is one line that starts with the
/// variable at fault ([`variable`](Self::variable)) and says what is wrong with it.
#[derive(Debug)]
#[non_exhaustive]
pub enum ActivationError {
    /// `LISTEN_PID` is not a process id.
    Pid {
        /// The value as given.
        value: String,
    },
    /// `LISTEN_FDS` is not a number of descriptors.
    Count {
        /// The value as given.
        value: String,
    },
    /// `LISTEN_FDNAMES` is unset, while `LISTEN_FDS` passes sockets.
    NoNames {
        /// How many sockets `LISTEN_FDS` passes.
        count: usize,
    },
    /// `LISTEN_FDNAMES` has not one name per socket.
    NameCount {
        /// How many names it has.
        names: usize,
        /// How many sockets `LISTEN_FDS` passes.
        count: usize,
    },
    /// A socket's name in `LISTEN_FDNAMES` is empty.
    EmptyName {
        /// The socket's descriptor.
        fd: RawFd,
    },
    /// A descriptor `LISTEN_FDS` passes is not open.
    NotOpen {
        /// The descriptor.
        fd: RawFd,
        /// Its name in `LISTEN_FDNAMES`.
        name: String,
    },
    /// A descriptor `LISTEN_FDS` passes is not a listening TCP or Unix stream socket.
    NotListening {
        /// The descriptor.
        fd: RawFd,
        /// Its name in `LISTEN_FDNAMES`.
        name: String,
        /// What it is instead ("is not a socket", ...).
        fault: &'static str,
    },
    /// A descriptor `LISTEN_FDS` passes could not be taken or inspected.
    Io {
        /// The descriptor.
        fd: RawFd,
        /// Its name in `LISTEN_FDNAMES`.
        name: String,
        /// The failure.
        source: io::Error,
    },
    /// No listener has the name of a socket systemd passed.
    Unclaimed {
        /// The names without a listener, in order.
        names: Vec<String>,
    },
}

impl ActivationError {
    /// The environment variable at fault: `LISTEN_PID`, `LISTEN_FDS` or `LISTEN_FDNAMES`.
    pub fn variable(&self) -> &'static str {
        match self {
            ActivationError::Pid { .. } => "LISTEN_PID",
            ActivationError::Count { .. }
            | ActivationError::NotOpen { .. }
            | ActivationError::NotListening { .. }
            | ActivationError::Io { .. } => "LISTEN_FDS",
            ActivationError::NoNames { .. }
            | ActivationError::NameCount { .. }
            | ActivationError::EmptyName { .. }
            | ActivationError::Unclaimed { .. } => "LISTEN_FDNAMES",
        }
    }
}

impl fmt::Display for ActivationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.variable())?;
        // Each hint names the unit setting to fix, since that is where the operator acts.
        const NAME_HINT: &str = "set FileDescriptorName= in the socket unit to the listener's name";
        match self {
            ActivationError::Pid { value } => write!(f, "{value:?} is not a process id"),
            ActivationError::Count { value } => {
                write!(f, "{value:?} is not a number of descriptors")
            }
            ActivationError::NoNames { count } => write!(
                f,
                "unset, but {count} socket(s) passed; atoll gives each to the listener of its \
                 name: {NAME_HINT}"
            ),
            ActivationError::NameCount { names, count } => {
                write!(f, "{names} name(s) for the {count} socket(s) of LISTEN_FDS")
            }
            ActivationError::EmptyName { fd } => {
                write!(f, "the socket on fd {fd} has an empty name: {NAME_HINT}")
            }
            ActivationError::NotOpen { fd, name } => {
                write!(f, "fd {fd} (socket {name:?}) is not open")
            }
            ActivationError::NotListening { fd, name, fault } => {
                write!(f, "fd {fd} (socket {name:?}) {fault}")
            }
            ActivationError::Io { fd, name, source } => {
                write!(f, "fd {fd} (socket {name:?}): {source}")
            }
            ActivationError::Unclaimed { names } => {
                write!(f, "no listener is named ")?;
                for (i, name) in names.iter().enumerate() {
                    let sep = if i == 0 { "" } else { ", " };
                    write!(f, "{sep}{name:?}")?;
                }
                write!(f, ", the name of a socket systemd passed: {NAME_HINT}")
            }
        }
    }
}

impl std::error::Error for ActivationError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ActivationError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// Adopts the listening sockets systemd passed to this process into `pool`, each under its
/// name in `LISTEN_FDNAMES`, and returns those names (each once, in order). Returns nothing,
/// and leaves the variables alone, when `LISTEN_PID` is unset or another process's.
///
/// Call it first thing, before any thread starts: it removes `LISTEN_PID`, `LISTEN_FDS` and
/// `LISTEN_FDNAMES` from the environment (even when it fails), which is only sound while no
/// other thread reads the environment. Then check the names with [`check_claimed`].
///
/// Errors name the variable and the fault: a count that is not a number, names that are
/// missing, empty or not one per socket, a descriptor that is not open or not a listening
/// TCP or Unix stream socket. On error nothing is added to `pool`.
pub fn adopt_into(pool: &SocketPool) -> Result<Vec<String>, ActivationError> {
    let lookup = |key: &str| std::env::var_os(key).map(|v| v.to_string_lossy().into_owned());
    let Some(parsed) = parse(lookup, std::process::id()) else {
        return Ok(Vec::new());
    };
    // The crate is edition 2021, where these are safe; see above for why it is sound here.
    for key in ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"] {
        std::env::remove_var(key);
    }
    let names = parsed?;
    // All taken and checked before any is added, so a bad one leaves `pool` as it was.
    let taken = names
        .iter()
        .zip(LISTEN_FDS_START..)
        .map(|(name, fd)| take(fd, name).map(|owned| (name, owned)))
        .collect::<Result<Vec<_>, _>>()?;
    let mut adopted = Vec::new();
    for (name, fd) in taken {
        pool.add(name.clone(), fd, Origin::Activation);
        if !adopted.contains(name) {
            adopted.push(name.clone());
        }
    }
    Ok(adopted)
}

/// Checks that every name in `adopted` (from [`adopt_into`]) is one of `listeners`' names.
/// An error names every socket no listener would take.
pub fn check_claimed<'a>(
    adopted: &[String],
    listeners: impl IntoIterator<Item = &'a str>,
) -> Result<(), ActivationError> {
    let listeners: BTreeSet<&str> = listeners.into_iter().collect();
    let names: Vec<String> = adopted
        .iter()
        .filter(|name| !listeners.contains(name.as_str()))
        .cloned()
        .collect();
    if names.is_empty() {
        Ok(())
    } else {
        Err(ActivationError::Unclaimed { names })
    }
}

/// Reads the activation variables through `lookup`, for the process `pid`. `None` when they
/// are not for it; otherwise one name per passed descriptor, the first being fd 3.
fn parse(
    lookup: impl Fn(&str) -> Option<String>,
    pid: u32,
) -> Option<Result<Vec<String>, ActivationError>> {
    let listen_pid = lookup("LISTEN_PID")?;
    match listen_pid.parse::<u32>() {
        Ok(p) if p == pid => {}
        Ok(p) if p > 0 => return None,
        _ => return Some(Err(ActivationError::Pid { value: listen_pid })),
    }
    Some(parse_names(&lookup))
}

fn parse_names(lookup: &impl Fn(&str) -> Option<String>) -> Result<Vec<String>, ActivationError> {
    let Some(value) = lookup("LISTEN_FDS") else {
        return Ok(Vec::new());
    };
    let count = match value.parse::<usize>() {
        // The last descriptor must be a valid fd number.
        Ok(n) if RawFd::try_from(n).is_ok_and(|n| n.checked_add(LISTEN_FDS_START).is_some()) => n,
        _ => return Err(ActivationError::Count { value }),
    };
    let Some(all) = lookup("LISTEN_FDNAMES") else {
        return match count {
            0 => Ok(Vec::new()),
            count => Err(ActivationError::NoNames { count }),
        };
    };
    // "" is no names for no sockets, but one empty name for one.
    let names: Vec<String> = match (count, all.as_str()) {
        (0, "") => Vec::new(),
        _ => all.split(':').map(str::to_owned).collect(),
    };
    if names.len() != count {
        return Err(ActivationError::NameCount {
            names: names.len(),
            count,
        });
    }
    if let Some(i) = names.iter().position(String::is_empty) {
        // `count` fits a RawFd, checked above.
        let fd = LISTEN_FDS_START + i as RawFd;
        return Err(ActivationError::EmptyName { fd });
    }
    Ok(names)
}

/// Takes the inherited descriptor `fd`, which must be a listening socket.
fn take(fd: RawFd, name: &str) -> Result<OwnedFd, ActivationError> {
    let owned = crate::sys::take_inherited(fd).map_err(|source| {
        if source.raw_os_error() == Some(Errno::EBADF as i32) {
            ActivationError::NotOpen {
                fd,
                name: name.to_owned(),
            }
        } else {
            ActivationError::Io {
                fd,
                name: name.to_owned(),
                source,
            }
        }
    })?;
    match listening_fault(&owned) {
        Ok(None) => Ok(owned),
        Ok(Some(fault)) => Err(ActivationError::NotListening {
            fd,
            name: name.to_owned(),
            fault,
        }),
        Err(source) => Err(ActivationError::Io {
            fd,
            name: name.to_owned(),
            source,
        }),
    }
}

/// What keeps `fd` from being a listening TCP or Unix stream socket, if anything.
fn listening_fault(fd: &OwnedFd) -> io::Result<Option<&'static str>> {
    let socket = SockRef::from(fd);
    let kind = match socket.r#type() {
        Ok(kind) => kind,
        Err(e) if e.raw_os_error() == Some(Errno::ENOTSOCK as i32) => {
            return Ok(Some("is not a socket"))
        }
        Err(e) => return Err(e),
    };
    if kind != Type::STREAM {
        return Ok(Some("is not a stream socket (ListenStream=)"));
    }
    let domain = socket.domain()?;
    if ![Domain::IPV4, Domain::IPV6, Domain::UNIX].contains(&domain) {
        return Ok(Some("is not a TCP or Unix socket"));
    }
    if !socket.is_listener()? {
        return Ok(Some("is not listening"));
    }
    Ok(None)
}

// ===== readiness notification =====

/// Sends `state` (`READY=1`, `STOPPING=1`, ... one `KEY=value` per line) to systemd as one
/// datagram on `NOTIFY_SOCKET`: a path, or an abstract address when it starts with `@`.
/// Returns `Ok(false)` when `NOTIFY_SOCKET` is unset (not run by systemd), `Ok(true)` once
/// sent. Errors name `NOTIFY_SOCKET` and its value.
pub fn notify(state: &str) -> io::Result<bool> {
    match std::env::var_os("NOTIFY_SOCKET") {
        None => Ok(false),
        Some(addr) => send(&addr, state).map(|()| true),
    }
}

/// Tells systemd the service is ready: `READY=1`.
pub fn ready() -> io::Result<bool> {
    notify("READY=1")
}

/// Tells systemd a reload started: `RELOADING=1` with the time (`MONOTONIC_USEC`, which
/// `Type=notify-reload` requires). Send [`ready`] when it is done.
pub fn reloading() -> io::Result<bool> {
    notify(&reloading_state(monotonic_usec()?))
}

/// Tells systemd the service is stopping: `STOPPING=1`.
pub fn stopping() -> io::Result<bool> {
    notify("STOPPING=1")
}

/// Tells systemd that `pid` is now the service's main process: `MAINPID=pid`.
pub fn main_pid(pid: u32) -> io::Result<bool> {
    notify(&format!("MAINPID={pid}"))
}

/// Shows `text` in `systemctl status`: `STATUS=text`, on one line.
pub fn status(text: &str) -> io::Result<bool> {
    notify(&status_state(text))
}

fn reloading_state(usec: u64) -> String {
    format!("RELOADING=1\nMONOTONIC_USEC={usec}")
}

fn status_state(text: &str) -> String {
    // A line break would end STATUS= and start another assignment (`READY=1`, say).
    format!("STATUS={}", text.replace(['\n', '\r'], " "))
}

/// CLOCK_MONOTONIC in microseconds, the clock systemd compares MONOTONIC_USEC with.
fn monotonic_usec() -> io::Result<u64> {
    let now = clock_gettime(ClockId::CLOCK_MONOTONIC)?;
    // The monotonic clock starts at boot: never negative.
    Ok(u64::try_from(now.num_microseconds()).unwrap_or(0))
}

/// Sends `state` as one datagram to the notify socket `addr` (NOTIFY_SOCKET's value).
fn send(addr: &OsStr, state: &str) -> io::Result<()> {
    let fail = |e: io::Error| {
        io::Error::new(
            e.kind(),
            format!("NOTIFY_SOCKET {:?}: {e}", addr.to_string_lossy()),
        )
    };
    let target = notify_addr(addr).map_err(fail)?;
    let socket = UnixDatagram::unbound().map_err(fail)?;
    socket
        .set_write_timeout(Some(NOTIFY_TIMEOUT))
        .map_err(fail)?;
    let sent = socket
        .send_to_addr(state.as_bytes(), &target)
        .map_err(fail)?;
    if sent != state.len() {
        return Err(fail(io::Error::new(
            io::ErrorKind::WriteZero,
            "notification sent in part",
        )));
    }
    Ok(())
}

fn notify_addr(addr: &OsStr) -> io::Result<SocketAddr> {
    let bytes = addr.as_bytes();
    match bytes.first() {
        Some(b'/') => SocketAddr::from_pathname(Path::new(addr)),
        Some(b'@') => SocketAddr::from_abstract_name(&bytes[1..]),
        // systemd also speaks `vsock:`, for virtual machines; atoll does not.
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "neither an absolute path nor an abstract address (@name)",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::collections::HashMap;
    use std::net::{TcpListener, TcpStream, UdpSocket};
    use std::os::unix::net::UnixListener;

    const PID: u32 = 4242;

    fn vars(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |key| map.get(key).cloned()
    }

    fn parsed(pairs: &[(&str, &str)]) -> Option<Result<Vec<String>, ActivationError>> {
        parse(vars(pairs), PID)
    }

    fn error(pairs: &[(&str, &str)]) -> ActivationError {
        match parsed(pairs) {
            Some(Err(e)) => e,
            other => panic!("not an error: {other:?}"),
        }
    }

    // ===== parsing =====

    #[test]
    fn nothing_without_listen_pid() {
        assert!(parsed(&[("LISTEN_FDS", "2"), ("LISTEN_FDNAMES", "a:b")]).is_none());
    }

    #[test]
    fn nothing_for_another_process() {
        let other = (PID + 1).to_string();
        let vars = [
            ("LISTEN_PID", other.as_str()),
            ("LISTEN_FDS", "1"),
            ("LISTEN_FDNAMES", "web"),
        ];
        assert!(parsed(&vars).is_none());
    }

    #[test]
    fn names_in_order_with_repeats() {
        let vars = [
            ("LISTEN_PID", "4242"),
            ("LISTEN_FDS", "3"),
            ("LISTEN_FDNAMES", "web:web:rpc"),
        ];
        assert_eq!(parsed(&vars).unwrap().unwrap(), ["web", "web", "rpc"]);
    }

    #[test]
    fn no_sockets_when_the_count_is_unset_or_zero() {
        assert!(parsed(&[("LISTEN_PID", "4242")])
            .unwrap()
            .unwrap()
            .is_empty());
        let zero = [("LISTEN_PID", "4242"), ("LISTEN_FDS", "0")];
        assert!(parsed(&zero).unwrap().unwrap().is_empty());
        let empty = [
            ("LISTEN_PID", "4242"),
            ("LISTEN_FDS", "0"),
            ("LISTEN_FDNAMES", ""),
        ];
        assert!(parsed(&empty).unwrap().unwrap().is_empty());
    }

    #[test]
    fn a_bad_pid_is_an_error() {
        for value in ["abc", "0", "-1", ""] {
            let e = error(&[("LISTEN_PID", value), ("LISTEN_FDS", "1")]);
            assert!(matches!(e, ActivationError::Pid { .. }), "{value}: {e:?}");
            assert_eq!(e.variable(), "LISTEN_PID");
            assert!(e.to_string().starts_with("LISTEN_PID: "), "{e}");
        }
    }

    #[test]
    fn a_bad_count_is_an_error() {
        for value in [
            "two",
            "-1",
            " 1",
            "",
            "1e3",
            "2147483647",
            "99999999999999999999",
        ] {
            let e = error(&[("LISTEN_PID", "4242"), ("LISTEN_FDS", value)]);
            assert!(matches!(e, ActivationError::Count { .. }), "{value}: {e:?}");
            assert_eq!(
                e.to_string(),
                format!("LISTEN_FDS: {value:?} is not a number of descriptors")
            );
        }
    }

    #[test]
    fn sockets_without_names_are_an_error() {
        let e = error(&[("LISTEN_PID", "4242"), ("LISTEN_FDS", "2")]);
        assert!(matches!(e, ActivationError::NoNames { count: 2 }), "{e:?}");
        let text = e.to_string();
        assert!(text.starts_with("LISTEN_FDNAMES: unset"), "{text}");
        assert!(text.contains("FileDescriptorName="), "{text}");
    }

    #[test]
    fn names_must_match_the_count() {
        let e = error(&[
            ("LISTEN_PID", "4242"),
            ("LISTEN_FDS", "2"),
            ("LISTEN_FDNAMES", "web"),
        ]);
        assert!(
            matches!(e, ActivationError::NameCount { names: 1, count: 2 }),
            "{e:?}"
        );
        assert_eq!(
            e.to_string(),
            "LISTEN_FDNAMES: 1 name(s) for the 2 socket(s) of LISTEN_FDS"
        );
        let e = error(&[
            ("LISTEN_PID", "4242"),
            ("LISTEN_FDS", "1"),
            ("LISTEN_FDNAMES", "a:b"),
        ]);
        assert!(matches!(
            e,
            ActivationError::NameCount { names: 2, count: 1 }
        ));
    }

    #[test]
    fn an_empty_name_is_an_error_naming_its_fd() {
        let e = error(&[
            ("LISTEN_PID", "4242"),
            ("LISTEN_FDS", "3"),
            ("LISTEN_FDNAMES", "web::rpc"),
        ]);
        assert!(matches!(e, ActivationError::EmptyName { fd: 4 }), "{e:?}");
        let e = error(&[
            ("LISTEN_PID", "4242"),
            ("LISTEN_FDS", "1"),
            ("LISTEN_FDNAMES", ""),
        ]);
        assert!(matches!(e, ActivationError::EmptyName { fd: 3 }), "{e:?}");
        assert!(
            e.to_string()
                .starts_with("LISTEN_FDNAMES: the socket on fd 3"),
            "{e}"
        );
    }

    #[test]
    fn unclaimed_names_are_an_error_naming_each() {
        let adopted = vec!["web".to_owned(), "atoll.socket".into(), "rpc".into()];
        assert!(check_claimed(&adopted, ["rpc", "web", "atoll.socket"]).is_ok());
        assert!(check_claimed(&[], ["web"]).is_ok());
        let e = check_claimed(&adopted, ["web"]).unwrap_err();
        let ActivationError::Unclaimed { names } = &e else {
            panic!("{e:?}");
        };
        assert_eq!(names, &["atoll.socket", "rpc"]);
        let text = e.to_string();
        assert!(
            text.starts_with(r#"LISTEN_FDNAMES: no listener is named "atoll.socket", "rpc", "#),
            "{text}"
        );
    }

    // ===== what a passed descriptor must be =====

    #[test]
    fn tcp_and_unix_listeners_pass() {
        let tcp = OwnedFd::from(TcpListener::bind("127.0.0.1:0").unwrap());
        assert_eq!(listening_fault(&tcp).unwrap(), None);
        let dir = tempfile::tempdir().unwrap();
        let unix = OwnedFd::from(UnixListener::bind(dir.path().join("s")).unwrap());
        assert_eq!(listening_fault(&unix).unwrap(), None);
    }

    #[test]
    fn other_descriptors_fail_saying_what_they_are() {
        let file = OwnedFd::from(std::fs::File::open("/dev/null").unwrap());
        assert_eq!(listening_fault(&file).unwrap(), Some("is not a socket"));

        let udp = OwnedFd::from(UdpSocket::bind("127.0.0.1:0").unwrap());
        let fault = listening_fault(&udp).unwrap().unwrap();
        assert!(fault.contains("not a stream socket"), "{fault}");

        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let stream = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let stream = OwnedFd::from(stream);
        assert_eq!(listening_fault(&stream).unwrap(), Some("is not listening"));

        let bound = socket2::Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        bound
            .bind(
                &"127.0.0.1:0"
                    .parse::<std::net::SocketAddr>()
                    .unwrap()
                    .into(),
            )
            .unwrap();
        let bound = OwnedFd::from(bound);
        assert_eq!(listening_fault(&bound).unwrap(), Some("is not listening"));
    }

    #[test]
    fn descriptor_errors_name_the_fd_and_socket() {
        let e = ActivationError::NotOpen {
            fd: 3,
            name: "web".into(),
        };
        assert_eq!(
            e.to_string(),
            r#"LISTEN_FDS: fd 3 (socket "web") is not open"#
        );
        let e = ActivationError::NotListening {
            fd: 4,
            name: "rpc".into(),
            fault: "is not a socket",
        };
        assert_eq!(
            e.to_string(),
            r#"LISTEN_FDS: fd 4 (socket "rpc") is not a socket"#
        );
    }

    // ===== notification =====

    /// A notify socket bound at a path in a temporary folder, as systemd binds one.
    fn notify_socket() -> (tempfile::TempDir, UnixDatagram, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let socket = UnixDatagram::bind(&path).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        (dir, socket, path)
    }

    fn received(socket: &UnixDatagram) -> String {
        let mut buf = [0u8; 512];
        let n = socket
            .recv(&mut buf)
            .expect("a notification within the wait");
        String::from_utf8(buf[..n].to_vec()).unwrap()
    }

    #[test]
    fn sends_one_datagram_to_a_path() {
        let (_dir, socket, path) = notify_socket();
        send(path.as_os_str(), "READY=1").unwrap();
        send(path.as_os_str(), "STOPPING=1").unwrap();
        assert_eq!(received(&socket), "READY=1");
        assert_eq!(received(&socket), "STOPPING=1");
    }

    #[test]
    fn sends_to_an_abstract_address() {
        let name = format!("atoll-test-notify-{}", std::process::id());
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let socket = UnixDatagram::bind_addr(&addr).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let state = reloading_state(123);
        send(OsStr::new(&format!("@{name}")), &state).unwrap();
        assert_eq!(received(&socket), "RELOADING=1\nMONOTONIC_USEC=123");
    }

    #[test]
    fn bad_notify_addresses_are_errors_naming_the_variable() {
        let e = send(OsStr::new("relative/path"), "READY=1").unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        assert!(
            e.to_string()
                .starts_with(r#"NOTIFY_SOCKET "relative/path": "#),
            "{e}"
        );
        let dir = tempfile::tempdir().unwrap();
        let nobody = dir.path().join("nobody");
        let e = send(nobody.as_os_str(), "READY=1").unwrap_err();
        assert!(e.to_string().starts_with("NOTIFY_SOCKET "), "{e}");
    }

    #[test]
    fn states_are_what_systemd_reads() {
        assert_eq!(reloading_state(5), "RELOADING=1\nMONOTONIC_USEC=5");
        assert_eq!(
            status_state("serving 2 listeners"),
            "STATUS=serving 2 listeners"
        );
        assert_eq!(status_state("a\nREADY=1\r"), "STATUS=a READY=1 ");
        let before = monotonic_usec().unwrap();
        assert!(before > 0);
        assert!(monotonic_usec().unwrap() >= before);
    }
}
