//! The binary's `websocket_echo` catalogue entry through `atoll serve`, over ws and wss, driven
//! by a second implementation: Python's `websockets` client (in `target/ci-venv`, which
//! `.ci/run` installs), running `tests/websocket_client.py`.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;

use common::process::{Atoll, Memory};
use common::{Pki, WAIT};

const VENV_PYTHON: &str = "target/ci-venv/bin/python";

#[test]
fn websocket_echo_through_atoll_serve_with_python_websockets() {
    let python = Path::new(env!("CARGO_MANIFEST_DIR")).join(VENV_PYTHON);
    let has_websockets = Command::new(&python)
        .args(["-c", "import websockets"])
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        has_websockets,
        "Python's `websockets` is missing from {}: run .ci/run, or \
         `python3 -m venv target/ci-venv && target/ci-venv/bin/pip install websockets==15.0.1`",
        python.display()
    );
    let pki = Pki::new();
    let config = pki.dir.path().join("atoll.toml");
    let listener = |name: &str, kind: &str, tls: &str| {
        format!(
            "[[listener]]\nname = \"{name}\"\nkind = \"{kind}\"\nip = \"127.0.0.1\"\nport = 0\n\
             shutdown_timeout = \"10s\"\n{tls}\n[[listener.handlers]]\nhost = \"_\"\n\
             resources = [\"health\", \
             {{ name = \"websocket_echo\", path = \"/echo\", max_message_size = 100 }}]\n\n"
        )
    };
    let text = format!(
        "[app]\nnode = \"t\"\n\n{}{}",
        listener("web", "http", ""),
        listener(
            "tls",
            "https",
            "[listener.tls]\ncert = \"server.pem\"\nkey = \"server-key.pem\"\n"
        ),
    );
    std::fs::write(&config, text).unwrap();
    let mut atoll = Atoll::serve(&config);
    let listening = atoll.listening(2);
    let port = |name: &str| listening.iter().find(|l| l.0 == name).unwrap().2.port();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/websocket_client.py");
    let mut client = Command::new(&python)
        .arg(script)
        .arg(&pki.ca)
        .arg(format!("ws://127.0.0.1:{}/echo", port("web")))
        .arg(format!("wss://localhost:{}/echo", port("tls")))
        .stdout(Stdio::piped())
        .spawn()
        .expect("python runs");
    let (tx, lines) = mpsc::channel();
    let stdout = client.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let line = |what: &str| {
        lines
            .recv_timeout(WAIT)
            .unwrap_or_else(|_| panic!("no {what}"))
    };
    // The checks passed and a connection is held on each listener.
    assert_eq!(line("`open`"), "open");
    atoll.signal("TERM");
    assert_eq!(line("ws's close"), "closed 1001");
    assert_eq!(line("wss's close"), "closed 1001");
    let deadline = std::time::Instant::now() + WAIT;
    let status = loop {
        if let Some(status) = client.try_wait().unwrap() {
            break status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the client did not exit"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    };
    assert!(status.success());
    assert!(atoll.exit().success());
}

/// The server's peak resident memory so far, in KiB.
fn peak_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// A frame over the limit gets 1009 as soon as its header is in; the server then drops its
/// payload as it comes (holding none of it) and completes the close handshake cleanly.
#[test]
fn a_frame_over_the_limit_is_dropped_as_it_comes_not_held() {
    let dir = tempfile::tempdir().unwrap();
    let atoll = serve_echo(dir.path());
    let addr = atoll.listening(1)[0].2;
    let before = peak_kib(atoll.pid());
    let mut s = raw_handshake(addr);
    // A binary frame of 96 MiB, masked with a zero key, against the 1 MiB frame limit.
    const LEN: u64 = 96 << 20;
    s.write_all(&announcing(LEN)).unwrap();
    let mut close = [0u8; 4];
    s.read_exact(&mut close).unwrap();
    assert_eq!((close[0], close[1] & 0x7f >= 2), (0x88, true), "{close:?}");
    assert_eq!(u16::from_be_bytes([close[2], close[3]]), 1009);
    let mut rest = vec![0u8; (close[1] & 0x7f) as usize - 2];
    s.read_exact(&mut rest).unwrap();
    // The client finishes its frame, as it must before it can answer the close.
    let chunk = vec![0u8; 1 << 20];
    for _ in 0..LEN >> 20 {
        s.write_all(&chunk).unwrap();
    }
    s.write_all(&[0x88, 0x82, 0, 0, 0, 0, 0x03, 0xf1]).unwrap();
    let mut b = [0u8; 16];
    assert_eq!(s.read(&mut b).unwrap(), 0, "a clean end of stream");
    let grew = peak_kib(atoll.pid()).saturating_sub(before);
    assert!(
        grew < 16 * 1024,
        "the server's peak memory grew by {grew} KiB for a frame it refused"
    );
}

/// A frame header from a client (masked with a zero key) announcing `len` bytes of binary
/// payload.
fn announcing(len: u64) -> Vec<u8> {
    let mut h = vec![0x82, 0x80 | 127];
    h.extend_from_slice(&len.to_be_bytes());
    h.extend_from_slice(&[0; 4]);
    h
}

#[test]
fn headers_announcing_large_frames_hold_nothing_for_bytes_not_sent() {
    let dir = tempfile::tempdir().unwrap();
    let atoll = serve_echo(dir.path());
    let addr = atoll.listening(1)[0].2;
    let pid = atoll.pid();
    let before = Memory::of(pid);
    // 300 clients each announce a frame of 1 MiB (the default limit, so it is allowed) and
    // send 16 bytes of it.
    let mut held = Vec::new();
    for _ in 0..300 {
        let mut s = raw_handshake(addr);
        let mut out = announcing(1 << 20);
        out.extend_from_slice(&[7; 16]);
        s.write_all(&out).unwrap();
        held.push(s);
    }
    // What each server task reads it reads at once; give the 300 reads time to happen.
    std::thread::sleep(std::time::Duration::from_secs(1));
    // Reserved from each header, the 300 announcements would take 300 MiB.
    const MIB: usize = 1 << 20;
    before.assert_grew_less(pid, 128 * MIB, 64 * MIB, "300 headers");
    // A frame that does come whole is echoed whole.
    let s = &mut held[0];
    let rest: Vec<u8> = (16..1 << 20).map(|i| (i % 251) as u8).collect();
    s.write_all(&rest).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    let mut head = [0u8; 10];
    s.read_exact(&mut head).unwrap();
    assert_eq!(head[..2], [0x82, 127]);
    assert_eq!(u64::from_be_bytes(head[2..].try_into().unwrap()), 1 << 20);
    let mut payload = vec![0u8; 1 << 20];
    s.read_exact(&mut payload).unwrap();
    assert_eq!(payload[..16], [7; 16]);
    assert!(payload[16..] == rest[..]);
}

/// `atoll serve` with one plain HTTP listener serving `websocket_echo` on `/ws`, every
/// setting at its default.
fn serve_echo(dir: &Path) -> Atoll {
    let config = dir.join("atoll.toml");
    std::fs::write(
        &config,
        "[app]\nnode = \"t\"\n\n[[listener]]\nname = \"web\"\nkind = \"http\"\n\
         ip = \"127.0.0.1\"\nport = 0\n[[listener.handlers]]\nhost = \"_\"\n\
         resources = [\"websocket_echo\"]\n",
    )
    .unwrap();
    Atoll::serve(&config)
}

/// A WebSocket opened by hand on `addr`'s `/ws`, past the 101.
fn raw_handshake(addr: std::net::SocketAddr) -> std::net::TcpStream {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    s.set_write_timeout(Some(WAIT)).unwrap();
    s.write_all(
        b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
          Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
    )
    .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut byte).unwrap();
        head.push(byte[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    s
}
