//! Out of file descriptors: the `atoll` binary, run with a low descriptor limit, stops
//! accepting without spinning a core, logs `acceptor.emfile`, and accepts again once
//! descriptors are freed.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use common::process::Atoll;
use common::WAIT;
/// The server's descriptor limit: enough to start, few enough to run out quickly.
const FD_LIMIT: u32 = 64;

/// Runs `atoll serve` on an echo listener under `ulimit -n FD_LIMIT`, and returns it with the
/// address it announced.
fn start(dir: &std::path::Path) -> (Atoll, SocketAddr) {
    let config = dir.join("atoll.toml");
    std::fs::write(
        &config,
        "log_events = \"errors\"\n[[listener]]\nname = \"emfile\"\nkind = \"echo\"\n\
         ip = \"127.0.0.1\"\nport = 0\nshutdown_timeout = \"1s\"\n",
    )
    .unwrap();
    let server = Atoll::serve_with_fd_limit(&config, FD_LIMIT);
    let Some(line) = server.line(WAIT) else {
        panic!("no `listening` line; stderr: {}", server.stderr());
    };
    let addr = line
        .rsplit_once("addr=")
        .and_then(|(_, a)| a.parse().ok())
        .unwrap_or_else(|| panic!("no address in {line:?}"));
    (server, addr)
}

/// CPU time (user + system) the process has used so far.
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read /proc/PID/stat");
    // Fields after the command name (which may hold spaces) start at field 3 (state);
    // utime and stime are fields 14 and 15, in clock ticks.
    let after_name = &stat[stat.rfind(')').expect("stat has a name") + 1..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    Duration::from_secs_f64(ticks as f64 / clock_ticks_per_second())
}

fn clock_ticks_per_second() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// Connects and sends one byte; the connection and whether the echo came back in `patience`.
fn echoed(addr: SocketAddr, patience: Duration) -> (TcpStream, bool) {
    let mut s = TcpStream::connect_timeout(&addr, WAIT).expect("connect");
    s.set_read_timeout(Some(patience)).unwrap();
    s.write_all(b"x").unwrap();
    let mut b = [0u8; 1];
    let ok = matches!(s.read(&mut b), Ok(1));
    (s, ok)
}

#[test]
fn recovers_from_running_out_of_descriptors_without_spinning() {
    let dir = tempfile::tempdir().unwrap();
    let (mut server, addr) = start(dir.path());

    // Hold connections until one gets no echo: the server's accept hits EMFILE, and that
    // connection waits in the kernel's backlog.
    let mut held = Vec::new();
    let mut exhausted = false;
    for _ in 0..FD_LIMIT * 2 {
        let (s, ok) = echoed(addr, Duration::from_secs(1));
        held.push(s);
        if !ok {
            exhausted = true;
            break;
        }
    }
    assert!(
        exhausted,
        "{} connections all echoed under a limit of {FD_LIMIT}",
        held.len()
    );
    server.wait_for_log("acceptor.emfile");

    // While exhausted, the acceptor backs off instead of retrying in a loop.
    let before = cpu_time(server.pid());
    std::thread::sleep(Duration::from_secs(1));
    let used = cpu_time(server.pid()) - before;
    eprintln!("CPU used in 1 s while out of descriptors: {used:?}");
    assert!(
        used < Duration::from_millis(500),
        "used {used:?} of CPU in 1 s while out of descriptors"
    );

    drop(held);
    let deadline = Instant::now() + WAIT;
    loop {
        let (_s, ok) = echoed(addr, Duration::from_millis(500));
        if ok {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no echo after descriptors were freed"
        );
    }
    assert!(server.is_running(), "the server exited");

    // And it still stops cleanly.
    server.signal("TERM");
    let status = server.exit();
    assert_eq!(status.code(), Some(0), "stderr: {}", server.stderr());
}
