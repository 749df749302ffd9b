//! Out of file descriptors: the `atoll` binary, run with a low descriptor limit, stops
//! accepting without spinning a core, logs `acceptor.emfile`, and accepts again once
//! descriptors are freed.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Every wait is bounded by this.
const WAIT: Duration = Duration::from_secs(10);
/// The server's descriptor limit: enough to start, few enough to run out quickly.
const FD_LIMIT: u32 = 64;

/// The server process, killed on drop, with everything it writes to stderr.
struct Server {
    child: Child,
    stderr: Arc<Mutex<String>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    /// Runs `atoll serve` on an echo listener under `ulimit -n FD_LIMIT`, and returns it with
    /// the address it announced.
    fn start(dir: &std::path::Path) -> (Self, SocketAddr) {
        let config = dir.join("atoll.toml");
        std::fs::write(
            &config,
            "log_events = \"errors\"\n[[listener]]\nname = \"emfile\"\nkind = \"echo\"\n\
             ip = \"127.0.0.1\"\nport = 0\nshutdown_timeout = \"1s\"\n",
        )
        .unwrap();
        // `exec` keeps the pid: the child is the server itself, not a shell.
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "ulimit -n {FD_LIMIT} && exec \"$0\" serve --config \"$1\""
            ))
            .arg(env!("CARGO_BIN_EXE_atoll"))
            .arg(&config)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("sh runs");
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut err = child.stderr.take().unwrap();
        let sink = stderr.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n @ 1..) = err.read(&mut buf) {
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        let out = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let line = BufReader::new(out).lines().next();
            let _ = tx.send(line);
        });
        let server = Server { child, stderr };
        let line = match rx.recv_timeout(WAIT) {
            Ok(Some(Ok(line))) => line,
            other => panic!(
                "no `listening` line ({other:?}); stderr: {}",
                server.stderr()
            ),
        };
        let addr = line
            .rsplit_once("addr=")
            .and_then(|(_, a)| a.parse().ok())
            .unwrap_or_else(|| panic!("no address in {line:?}"));
        (server, addr)
    }

    fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// CPU time (user + system) the process has used so far.
    fn cpu_time(&self) -> Duration {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id()))
            .expect("read /proc/PID/stat");
        // Fields after the command name (which may hold spaces) start at field 3 (state);
        // utime and stime are fields 14 and 15, in clock ticks.
        let after_name = &stat[stat.rfind(')').expect("stat has a name") + 1..];
        let fields: Vec<&str> = after_name.split_whitespace().collect();
        let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
        Duration::from_secs_f64(ticks as f64 / clock_ticks_per_second())
    }

    /// Waits until stderr contains `text`.
    fn wait_for_log(&self, text: &str) {
        let deadline = Instant::now() + WAIT;
        while !self.stderr().contains(text) {
            assert!(
                Instant::now() < deadline,
                "stderr never mentioned {text}: {}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
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
    let (mut server, addr) = Server::start(dir.path());

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
    let before = server.cpu_time();
    std::thread::sleep(Duration::from_secs(1));
    let used = server.cpu_time() - before;
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
    assert!(
        server.child.try_wait().unwrap().is_none(),
        "the server exited"
    );

    // And it still stops cleanly.
    let pid = server.child.id().to_string();
    let killed = Command::new("sh")
        .args(["-c", "kill -s TERM \"$0\"", &pid])
        .status()
        .expect("sh runs");
    assert!(killed.success());
    let deadline = Instant::now() + WAIT;
    let status = loop {
        if let Some(status) = server.child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "no exit after SIGTERM");
        std::thread::sleep(Duration::from_millis(10));
    };
    assert_eq!(status.code(), Some(0), "stderr: {}", server.stderr());
}
