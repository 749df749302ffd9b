//! Handing listening sockets from a running process to its replacement, over a
//! `SOCK_SEQPACKET` Unix socket whose path the new process gets in [`SOCKET_VAR`].
//!
//! The old process listens; the new one connects (the old checks that it is its own child by
//! pid), and receives one message per socket, `{"listener":"web"}` or `{"control":true}`,
//! each with its descriptor attached (`SCM_RIGHTS`), then `{"end":true,"pid":OLD}`. Once its
//! listeners run, the new process answers `{"ready":true,"pid":NEW,"version":"1.1.0"}`, or
//! `{"failed":"why"}`. Every message is one datagram of JSON, so a peer that sends anything
//! else is refused, not misread.
//!
//! The connection then stays open while the old process drains: each connection that moves
//! (a kept-alive HTTP/1 connection, or one whose handler agreed, see
//! [`Handler::handle_move`](crate::Handler::handle_move)) comes as
//! `{"connection":"web","unread":N,"state":M}` with its socket attached, followed, when N is
//! not 0, by one datagram of the N bytes already read from it, then, when M is not 0, by one
//! datagram of the handler's M bytes of state. `state` is left out when M is 0, so a process
//! of an earlier version, which knows no `state`, still takes the connections that carry
//! none. The old process closing its end ends the stream.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use socket2::{Domain, SockAddr, Socket, Type};

use crate::sys;

/// The environment variable that tells a new process where to fetch its sockets.
pub const SOCKET_VAR: &str = "ATOLL_UPGRADE_SOCKET";

/// The longest message either side sends: 64 KiB.
const MAX_MESSAGE: usize = 64 * 1024;

/// The most unread bytes a handed-over connection may come with: 1 MiB (hyper holds at most
/// its read buffer's limit, the larger of 8 KiB and `max_header_size`).
const MAX_UNREAD: usize = 1 << 20;

/// The most state a moving connection's handler may carry: 64 KiB. A connection with more
/// is not handed over, and closes.
pub const MAX_STATE: usize = 64 * 1024;

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Message {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    listener: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    control: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    end: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    ready: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    failed: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pid: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    connection: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    unread: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    state: Option<usize>,
    /// A handed-over connection's client, from its PROXY header.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    client: Option<std::net::SocketAddr>,
}

impl Message {
    fn empty() -> Message {
        Message {
            listener: None,
            control: false,
            end: false,
            ready: false,
            failed: None,
            pid: None,
            version: None,
            connection: None,
            unread: None,
            state: None,
            client: None,
        }
    }
}

/// The sockets a process hands over.
#[derive(Debug, Default)]
pub struct Sockets {
    /// Each listener's listening sockets, by name.
    pub listeners: Vec<(String, Vec<OwnedFd>)>,
    /// The control socket.
    pub control: Option<OwnedFd>,
}

/// What the new process reports once its listeners run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ready {
    /// Its pid.
    pub pid: u32,
    /// The version it runs.
    pub version: String,
}

fn send(socket: &Socket, message: &Message, fd: Option<BorrowedFd<'_>>) -> io::Result<()> {
    let data = serde_json::to_vec(message).map_err(io::Error::other)?;
    match fd {
        Some(fd) => sys::send_fds(socket.as_fd(), &data, &[fd]),
        None => sys::send_fds(socket.as_fd(), &data, &[]),
    }
}

fn receive(socket: &Socket) -> io::Result<(Message, Vec<OwnedFd>)> {
    receive_into(socket, &mut vec![0; MAX_MESSAGE])
}

/// Receives one message into `buf`, which must hold the longest one expected.
fn receive_into(socket: &Socket, buf: &mut [u8]) -> io::Result<(Message, Vec<OwnedFd>)> {
    let (n, fds) = sys::recv_fds(socket.as_fd(), buf)?;
    if n == 0 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the other process closed the handover socket",
        ));
    }
    let message = serde_json::from_slice(&buf[..n]).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("bad handover message: {e}"),
        )
    })?;
    Ok((message, fds))
}

/// A receive timeout (or a signal) ended the wait, not the socket.
fn nothing_yet(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
    )
}

// ===== the old process =====

/// Listens for the new process at `path` (mode 0600), replacing a stale file.
pub fn listen(path: &Path) -> io::Result<Socket> {
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::remove_file(path);
    let socket = Socket::new(Domain::UNIX, Type::SEQPACKET, None)?;
    socket.bind(&SockAddr::unix(path)?)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    socket.listen(1)?;
    Ok(socket)
}

/// Waits until `deadline` for the process `pid` to connect. `gone` is asked between tries
/// and says why to give up (the process exited). Connections from other processes are
/// dropped.
pub fn accept(
    listener: &Socket,
    pid: u32,
    deadline: Instant,
    mut gone: impl FnMut() -> Option<String>,
) -> Result<Socket, String> {
    // Linux applies the receive timeout to `accept` too: check on the child every 100 ms.
    listener
        .set_read_timeout(Some(Duration::from_millis(100)))
        .map_err(|e| format!("handover socket: {e}"))?;
    loop {
        if let Some(why) = gone() {
            return Err(why);
        }
        if Instant::now() >= deadline {
            return Err("the new process did not connect for its sockets in time".to_owned());
        }
        match listener.accept() {
            Ok((socket, _)) => {
                let cred = nix::sys::socket::getsockopt(
                    &socket,
                    nix::sys::socket::sockopt::PeerCredentials,
                );
                match cred {
                    Ok(c) if c.pid() as u32 == pid => return Ok(socket),
                    _ => tracing::warn!(
                        target: "atoll",
                        "upgrade: a process other than the new one connected to the handover socket; dropped"
                    ),
                }
            }
            Err(e) if nothing_yet(&e) => {}
            Err(e) => return Err(format!("handover socket: {e}")),
        }
    }
}

/// Sends every socket of `sockets`, then the end.
pub fn offer(socket: &Socket, sockets: &Sockets) -> io::Result<()> {
    for (name, fds) in &sockets.listeners {
        for fd in fds {
            let message = Message {
                listener: Some(name.clone()),
                ..Message::empty()
            };
            send(socket, &message, Some(fd.as_fd()))?;
        }
    }
    if let Some(fd) = &sockets.control {
        let message = Message {
            control: true,
            ..Message::empty()
        };
        send(socket, &message, Some(fd.as_fd()))?;
    }
    let end = Message {
        end: true,
        pid: Some(std::process::id()),
        ..Message::empty()
    };
    send(socket, &end, None)
}

/// Waits until `deadline` for the new process to report. `gone` is asked between tries, as
/// for [`accept`].
pub fn wait_ready(
    socket: &Socket,
    deadline: Instant,
    mut gone: impl FnMut() -> Option<String>,
) -> Result<Ready, String> {
    socket
        .set_read_timeout(Some(Duration::from_millis(100)))
        .map_err(|e| format!("handover socket: {e}"))?;
    loop {
        if Instant::now() >= deadline {
            return Err("the new process did not report ready in time".to_owned());
        }
        match receive(socket) {
            Ok((message, _)) => {
                if let Some(why) = message.failed {
                    return Err(why);
                }
                return match (message.ready, message.pid) {
                    (true, Some(pid)) => Ok(Ready {
                        pid,
                        version: message.version.unwrap_or_default(),
                    }),
                    _ => Err("the new process sent a bad report".to_owned()),
                };
            }
            Err(e) if nothing_yet(&e) => {
                if let Some(why) = gone() {
                    return Err(why);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                // Closed without a word: it exited; `gone` says how, once it is reaped.
                let wait_until = Instant::now() + Duration::from_secs(2);
                while Instant::now() < wait_until {
                    if let Some(why) = gone() {
                        return Err(why);
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                return Err(
                    "the new process closed the handover socket before it was ready".to_owned(),
                );
            }
            Err(e) => return Err(format!("handover socket: {e}")),
        }
    }
}

/// Hands one connection of the listener `listener` over, with the bytes already read from it,
/// its handler's state and the client a PROXY header named.
pub fn send_connection(
    socket: &Socket,
    listener: &str,
    fd: BorrowedFd<'_>,
    unread: &[u8],
    state: &[u8],
    client: Option<std::net::SocketAddr>,
) -> io::Result<()> {
    let too_long = |what: &str, len: usize, max: usize| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{len} bytes of {what}, more than {max}"),
        )
    };
    if unread.len() > MAX_UNREAD {
        return Err(too_long("unread data", unread.len(), MAX_UNREAD));
    }
    if state.len() > MAX_STATE {
        return Err(too_long("handler state", state.len(), MAX_STATE));
    }
    let message = Message {
        connection: Some(listener.to_owned()),
        unread: Some(unread.len()),
        state: (!state.is_empty()).then_some(state.len()),
        client,
        ..Message::empty()
    };
    send(socket, &message, Some(fd))?;
    for part in [unread, state] {
        if !part.is_empty() {
            sys::send_fds(socket.as_fd(), part, &[])?;
        }
    }
    Ok(())
}

// ===== the new process =====

/// A connection the old process handed over.
#[derive(Debug)]
pub struct Handed {
    /// The listener it belongs to.
    pub listener: String,
    /// Its socket.
    pub fd: OwnedFd,
    /// The bytes already read from it, to read before the socket's.
    pub unread: Vec<u8>,
    /// Its handler's state, for [`Handler::restore`](crate::Handler::restore).
    pub state: Vec<u8>,
    /// Its client's address from its PROXY header, on a listener that reads one.
    pub client: Option<std::net::SocketAddr>,
}

/// Waits for the next connection the old process hands over; `None` once it closed its end.
pub fn receive_connection(socket: &Socket) -> io::Result<Option<Handed>> {
    let bad = |why: String| io::Error::new(io::ErrorKind::InvalidData, why);
    // A connection's message is short: a listener's name and a count.
    let mut buf = [0; 4096];
    let (message, mut fds) = match receive_into(socket, &mut buf) {
        Ok(got) => got,
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    };
    let (Some(listener), Some(len), 1, Some(fd)) =
        (message.connection, message.unread, fds.len(), fds.pop())
    else {
        return Err(bad(
            "a handover message that is not a connection with one socket".to_owned(),
        ));
    };
    let state_len = message.state.unwrap_or(0);
    if len > MAX_UNREAD {
        return Err(bad(format!("{len} unread bytes, more than {MAX_UNREAD}")));
    }
    if state_len > MAX_STATE {
        return Err(bad(format!(
            "{state_len} bytes of state, more than {MAX_STATE}"
        )));
    }
    let unread = receive_part(socket, len, "unread bytes")?;
    let state = receive_part(socket, state_len, "bytes of state")?;
    Ok(Some(Handed {
        listener,
        fd,
        unread,
        state,
        client: message.client,
    }))
}

/// Receives the datagram of `len` bytes (none when `len` is 0) that follows a connection's
/// message.
fn receive_part(socket: &Socket, len: usize, what: &str) -> io::Result<Vec<u8>> {
    if len == 0 {
        return Ok(Vec::new());
    }
    // One byte more than announced, so that a longer datagram shows instead of being cut.
    let mut part = vec![0; len + 1];
    let (n, fds) = sys::recv_fds(socket.as_fd(), &mut part)?;
    if n != len || !fds.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{n} {what} where the message announced {len}"),
        ));
    }
    part.truncate(len);
    Ok(part)
}

/// Connects to the old process at `path` and receives its sockets, waiting up to `timeout`
/// for each message. Returns the connection, to [`report`] on, and the sockets.
pub fn fetch(path: &Path, timeout: Duration) -> io::Result<(Socket, Sockets)> {
    let socket = Socket::new(Domain::UNIX, Type::SEQPACKET, None)?;
    socket.connect(&SockAddr::unix(path)?)?;
    socket.set_read_timeout(Some(timeout))?;
    let mut sockets = Sockets::default();
    loop {
        let (message, mut fds) = receive(&socket)?;
        if message.end {
            return Ok((socket, sockets));
        }
        let bad = |why: &str| io::Error::new(io::ErrorKind::InvalidData, why.to_owned());
        let fd = match (fds.len(), fds.pop()) {
            (1, Some(fd)) => fd,
            _ => return Err(bad("a handover message without exactly one socket")),
        };
        match (message.listener, message.control) {
            (Some(name), false) => match sockets.listeners.iter_mut().find(|(n, _)| *n == name) {
                Some((_, list)) => list.push(fd),
                None => sockets.listeners.push((name, vec![fd])),
            },
            (None, true) => sockets.control = Some(fd),
            _ => {
                return Err(bad(
                    "a handover message that is neither a listener nor control",
                ))
            }
        }
    }
}

/// Tells the old process how the start went.
pub fn report(socket: &Socket, outcome: Result<Ready, String>) -> io::Result<()> {
    let message = match outcome {
        Ok(ready) => Message {
            ready: true,
            pid: Some(ready.pid),
            version: Some(ready.version),
            ..Message::empty()
        },
        Err(why) => Message {
            failed: Some(why),
            ..Message::empty()
        },
    };
    send(socket, &message, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sockets_and_reports_cross_a_seqpacket_pair() {
        let (a, b) = Socket::pair(Domain::UNIX, Type::SEQPACKET, None).unwrap();
        let l1 = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l1.local_addr().unwrap();
        let sockets = Sockets {
            listeners: vec![("web".into(), vec![OwnedFd::from(l1)])],
            control: None,
        };
        offer(&a, &sockets).unwrap();
        // What `fetch` does after connecting.
        let (m, fds) = receive(&b).unwrap();
        assert_eq!(m.listener.as_deref(), Some("web"));
        let got = std::net::TcpListener::from(fds.into_iter().next().unwrap());
        assert_eq!(got.local_addr().unwrap(), addr);
        let (end, fds) = receive(&b).unwrap();
        assert!(end.end && fds.is_empty());
        assert_eq!(end.pid, Some(std::process::id()));
        report(
            &b,
            Ok(Ready {
                pid: 7,
                version: "1.1.0".into(),
            }),
        )
        .unwrap();
        let ready = wait_ready(&a, Instant::now() + Duration::from_secs(5), || None).unwrap();
        assert_eq!(ready.version, "1.1.0");
        report(&b, Err("no config".into())).unwrap();
        let e = wait_ready(&a, Instant::now() + Duration::from_secs(5), || None).unwrap_err();
        assert_eq!(e, "no config");
        drop(b);
        let e = wait_ready(&a, Instant::now() + Duration::from_secs(5), || {
            Some("exited with 1".into())
        })
        .unwrap_err();
        assert_eq!(e, "exited with 1");
    }

    #[test]
    fn a_connection_crosses_with_its_unread_bytes_and_state() {
        let (a, b) = Socket::pair(Domain::UNIX, Type::SEQPACKET, None).unwrap();
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (tcp, _) = l.accept().unwrap();
        for (unread, state) in [
            (&b"GET /"[..], &b"\x01seven"[..]),
            (b"", b"\x02"),
            (b"x", b""),
        ] {
            let fd = OwnedFd::from(tcp.try_clone().unwrap());
            send_connection(&a, "echo", fd.as_fd(), unread, state, None).unwrap();
            let handed = receive_connection(&b).unwrap().unwrap();
            assert_eq!(handed.listener, "echo");
            assert_eq!((&handed.unread[..], &handed.state[..]), (unread, state));
            let moved = std::net::TcpStream::from(handed.fd);
            assert_eq!(moved.peer_addr().unwrap(), client.local_addr().unwrap());
        }
        let too_much = vec![0; MAX_STATE + 1];
        let fd = OwnedFd::from(tcp);
        let e = send_connection(&a, "echo", fd.as_fd(), b"", &too_much, None).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        drop(a);
        assert!(receive_connection(&b).unwrap().is_none());
    }

    #[test]
    fn garbage_is_refused() {
        let (a, b) = Socket::pair(Domain::UNIX, Type::SEQPACKET, None).unwrap();
        a.send(b"GET / HTTP/1.1\r\n").unwrap();
        let e = receive(&b).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
    }
}
