//! `atoll serve` under systemd, as systemd runs it: a listening socket on fd 3 with
//! `LISTEN_PID`, `LISTEN_FDS` and `LISTEN_FDNAMES`, and `NOTIFY_SOCKET` naming a datagram
//! socket the test reads the notifications from.
//!
//! bash puts the socket on fd 3: the test hands it over as the child's stdin (std dup2s it
//! there, without close-on-exec), bash moves it to 3 and `exec`s atoll, so `LISTEN_PID=$$` is
//! atoll's own pid. Going through stdin instead of clearing close-on-exec on the test's own
//! descriptor keeps the socket out of the children other tests spawn at the same time.

mod common;

use std::net::TcpListener;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use common::process::Atoll;
use common::WAIT;

/// A config whose one listener, `web`, would bind a port of its own (127.0.0.1:0): serving on
/// the passed socket's address proves it adopted that socket.
fn write_config(dir: &Path) -> PathBuf {
    let path = dir.join("atoll.toml");
    let text = format!(
        "[app]\nhome = {home:?}\n\n[[listener]]\nname = \"web\"\nkind = \"echo\"\n\
         ip = \"127.0.0.1\"\nport = 0\nshutdown_timeout = \"1s\"\n",
        home = dir.display().to_string(),
    );
    std::fs::write(&path, text).unwrap();
    path
}

/// The datagram socket systemd would read notifications on, bound in `dir`.
fn notify_socket(dir: &Path) -> (UnixDatagram, PathBuf) {
    let path = dir.join("notify");
    let socket = UnixDatagram::bind(&path).unwrap();
    (socket, path)
}

/// Waits for a notification with the line `state`; returns every datagram received so far.
fn wait_for_state(socket: &UnixDatagram, state: &str) -> Vec<String> {
    let deadline = Instant::now() + WAIT;
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "no {state:?} within the wait; got {seen:?}"
        );
        socket.set_read_timeout(Some(left)).unwrap();
        match socket.recv(&mut buf) {
            Ok(n) => {
                let datagram = String::from_utf8_lossy(&buf[..n]).into_owned();
                let found = datagram.lines().any(|line| line == state);
                seen.push(datagram);
                if found {
                    return seen;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(e) => panic!("reading the notify socket: {e}"),
        }
    }
}

/// The notifications waiting on `socket`, without waiting.
fn pending(socket: &UnixDatagram) -> Vec<String> {
    socket.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 4096];
    let mut seen = Vec::new();
    while let Ok(n) = socket.recv(&mut buf) {
        seen.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    seen
}

/// `atoll serve` started the way systemd starts it; killed on drop.
/// Runs `atoll serve --config CONFIG` with `LISTEN_FDS=1` and `LISTEN_FDNAMES=NAME`, the
/// socket `passed` on fd 3 (or fd 3 closed, when `None`), and NOTIFY_SOCKET=NOTIFY.
fn activated(config: &Path, passed: Option<OwnedFd>, name: &str, notify: &Path) -> Atoll {
    let fd3 = if passed.is_some() {
        "exec 3<&0 0</dev/null"
    } else {
        "exec 3<&-"
    };
    let script = format!(
        "{fd3}; export LISTEN_PID=$$ LISTEN_FDS=1 LISTEN_FDNAMES=\"$2\"; \
         exec \"$0\" serve --config \"$1\""
    );
    let mut command = Command::new("bash");
    command
        .arg("-c")
        .arg(script)
        .arg(env!("CARGO_BIN_EXE_atoll"))
        .arg(config)
        .arg(name)
        .current_dir(config.parent().unwrap())
        .env("NOTIFY_SOCKET", notify)
        .stdin(passed.map_or_else(Stdio::null, Stdio::from));
    // Whatever the test runner has would change what atoll reads.
    for var in [
        "LISTEN_PID",
        "LISTEN_FDS",
        "LISTEN_FDNAMES",
        "ATOLL_HOME",
        "ATOLL_DATA_DIR",
        "ATOLL_LOG_DIR",
        "ATOLL_UPGRADE_SOCKET",
    ] {
        command.env_remove(var);
    }
    // `spawn` takes the command, and with it the command's copy of the socket: only atoll
    // keeps one.
    Atoll::spawn(command)
}

#[test]
fn serves_on_the_passed_socket_and_notifies_ready_then_stopping() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path());
    let (notify, notify_path) = notify_socket(dir.path());
    let passed = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = passed.local_addr().unwrap();

    let mut atoll = activated(&config, Some(passed.into()), "web", &notify_path);
    let listening = atoll.listening(1);
    assert_eq!(listening[0].0, "web");
    assert_eq!(listening[0].2, addr, "web did not adopt the passed socket");
    wait_for_state(&notify, "READY=1");
    common::echo_at(addr, b"activated");

    atoll.signal("TERM");
    wait_for_state(&notify, "STOPPING=1");
    let status = atoll.exit();
    assert_eq!(
        status.code(),
        Some(0),
        "{status}; stderr: {}",
        atoll.stderr()
    );
}

#[test]
fn bad_activation_stops_the_start_with_one_line_naming_the_fault() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path());
    let (notify, notify_path) = notify_socket(dir.path());

    // A socket no listener is named after: serving it nowhere would leave its port dead.
    let passed = TcpListener::bind("127.0.0.1:0").unwrap();
    let line = activated(&config, Some(passed.into()), "nosuch", &notify_path).failed(&config);
    assert!(line.starts_with("atoll: "), "{line}");
    assert!(
        line.contains(r#"LISTEN_FDNAMES: no listener is named "nosuch""#),
        "{line}"
    );

    // LISTEN_FDS says one socket, but nothing is open on fd 3.
    let line = activated(&config, None, "web", &notify_path).failed(&config);
    assert!(
        line.contains(r#"LISTEN_FDS: fd 3 (socket "web") is not open"#),
        "{line}"
    );

    let sent = pending(&notify);
    assert!(
        !sent.iter().any(|d| d.lines().any(|l| l == "READY=1")),
        "READY=1 sent by a failed start: {sent:?}"
    );
}
