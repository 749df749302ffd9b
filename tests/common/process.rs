//! The `atoll` binary as a child process: killed on drop, its stdout read line by line, its
//! stderr collected as it comes, signals sent with `kill`; and the processes an upgrade
//! starts, which are not its children: watched through `/proc`, killed when a test fails.

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::WAIT;

pub struct Atoll {
    child: Child,
    stdout: mpsc::Receiver<String>,
    stderr: Arc<Mutex<String>>,
    stderr_reader: Option<JoinHandle<()>>,
}

impl Atoll {
    /// Waits for `n` `listening name=NAME kind=KIND addr=IP:PORT` lines (all within one
    /// [`WAIT`]) and returns each listener's name, kind and address.
    pub fn listening(&self, n: usize) -> Vec<(String, String, SocketAddr)> {
        let deadline = Instant::now() + WAIT;
        (0..n)
            .map(|_| {
                let left = deadline.saturating_duration_since(Instant::now());
                let line = self
                    .line(left)
                    .unwrap_or_else(|| panic!("no `listening` line; stderr: {}", self.stderr()));
                let fields: Vec<&str> = line.split(' ').collect();
                let ["listening", name, kind, addr] = fields[..] else {
                    panic!("not a `listening` line: {line:?}");
                };
                let field = |f: &str, key: &str| {
                    f.strip_prefix(key)
                        .unwrap_or_else(|| panic!("{line:?}"))
                        .to_owned()
                };
                let addr: SocketAddr = field(addr, "addr=").parse().expect("addr=IP:PORT");
                assert_ne!(addr.port(), 0, "{line:?}");
                (field(name, "name="), field(kind, "kind="), addr)
            })
            .collect()
    }

    /// Runs `atoll serve --config config`, which must fail: exit code 1, one line on stderr
    /// that names the file and no panic, and no listener announced. Returns that line.
    pub fn fails_with(config: &Path) -> String {
        Atoll::serve(config).failed(config)
    }

    /// Waits for this `atoll serve --config config` to fail, as [`fails_with`](Self::fails_with)
    /// says, and returns the line.
    pub fn failed(mut self, config: &Path) -> String {
        let atoll = &mut self;
        let status = atoll.exit();
        let stderr = atoll.stderr();
        assert_eq!(status.code(), Some(1), "{status}; stderr: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "not one line: {stderr:?}");
        let lower = stderr.to_lowercase();
        assert!(
            !lower.contains("panicked") && !lower.contains("backtrace"),
            "{stderr}"
        );
        let line = stderr.trim_end().to_owned();
        let file = format!("atoll: {}: ", config.display());
        assert!(line.starts_with(&file), "does not name the file: {line}");
        assert!(
            atoll.line(Duration::ZERO).is_none(),
            "a listener was announced"
        );
        line
    }

    /// Runs `atoll ARGS` in `dir`.
    pub fn run(dir: &Path, args: &[&str]) -> Self {
        let mut command = Command::new(env!("CARGO_BIN_EXE_atoll"));
        command.args(args).current_dir(dir).stdin(Stdio::null());
        Atoll::spawn(command)
    }

    /// Runs `atoll serve --config CONFIG`.
    pub fn serve(config: &Path) -> Self {
        // In the config's folder: the default home, where `data.NODE` and `log.NODE` go.
        Atoll::run(
            config
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new(".")),
            &["serve", "--config", config.to_str().unwrap()],
        )
    }

    /// Runs `BINARY serve --config CONFIG` in the config's folder: a copy of the binary, as
    /// an installed release. The lib-dir variables are removed, so the config's `[app]`
    /// table decides.
    pub fn serve_binary(binary: &Path, config: &Path) -> Self {
        let mut command = Command::new(binary);
        command
            .args(["serve", "--config"])
            .arg(config)
            .current_dir(config.parent().unwrap())
            .env_remove("ATOLL_LIBS")
            .env_remove("ATOLL_SETUP_LIBS")
            .stdin(Stdio::null());
        Atoll::spawn(command)
    }

    /// Runs `atoll serve --config CONFIG` under `ulimit -n LIMIT`. `exec` keeps the pid: the
    /// child is the server itself, not a shell.
    pub fn serve_with_fd_limit(config: &Path, limit: u32) -> Self {
        let mut command = Command::new("sh");
        command
            .arg("-c")
            .arg(format!(
                "ulimit -n {limit} && exec \"$0\" serve --config \"$1\""
            ))
            .arg(env!("CARGO_BIN_EXE_atoll"))
            .arg(config)
            .stdin(Stdio::null());
        if let Some(dir) = config.parent().filter(|p| !p.as_os_str().is_empty()) {
            command.current_dir(dir);
        }
        Atoll::spawn(command)
    }

    /// Runs `command` with its stdout and stderr read as they come; its stdin is what the
    /// command says (nothing, unless set).
    pub fn spawn(mut command: Command) -> Self {
        command.stderr(Stdio::piped());
        Atoll::spawn_with_stderr(command)
    }

    /// Runs `command` with its stdout read as it comes, and its stderr as the command says:
    /// when it is not piped, [`stderr`](Self::stderr) stays empty.
    pub fn spawn_with_stderr(mut command: Command) -> Self {
        let mut child = command
            .env_remove("RUST_LOG")
            .stdout(Stdio::piped())
            .spawn()
            .expect("atoll runs");
        let out = child.stdout.take().unwrap();
        let (tx, stdout) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let sink = stderr.clone();
        let stderr_reader = child.stderr.take().map(|mut err| {
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n @ 1..) = err.read(&mut buf) {
                    sink.lock()
                        .unwrap()
                        .push_str(&String::from_utf8_lossy(&buf[..n]));
                }
            })
        });
        Atoll {
            child,
            stdout,
            stderr,
            stderr_reader,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The next line on stdout, waiting up to `wait`.
    pub fn line(&self, wait: Duration) -> Option<String> {
        self.stdout.recv_timeout(wait).ok()
    }

    /// What the process wrote to stderr so far (all of it, once [`exit`](Self::exit) returned).
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Waits until stderr contains `text`.
    pub fn wait_for_log(&self, text: &str) {
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

    /// True while the process runs.
    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().expect("wait for atoll").is_none()
    }

    /// Waits for the process to exit, and for its stderr to be read to the end.
    pub fn exit(&mut self) -> ExitStatus {
        let status = self.exited();
        if let Some(reader) = self.stderr_reader.take() {
            reader.join().unwrap();
        }
        status
    }

    /// Waits for the process to exit, without waiting for the end of its stderr: after an
    /// upgrade, the new process holds the same pipe.
    pub fn exited(&mut self) -> ExitStatus {
        let deadline = Instant::now() + WAIT;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("wait for atoll") {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "atoll did not exit within the wait"
            );
            std::thread::sleep(Duration::from_millis(10));
        };
        status
    }

    /// Sends `signal` (`TERM`, `INT`) to the process.
    pub fn signal(&self, signal: &str) {
        let ok = Command::new("sh")
            .args(["-c", "kill -s \"$0\" \"$1\""])
            .arg(signal)
            .arg(self.pid().to_string())
            .status()
            .expect("sh runs")
            .success();
        assert!(ok, "kill -s {signal} failed");
    }
}

impl Drop for Atoll {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Kills the processes an upgrade left running when a test fails. Each pid is noted with its
/// start time, so a pid the system has since given to another process is left alone.
#[derive(Default)]
pub struct Reaper(Mutex<Vec<(u32, Option<u64>)>>);

impl Reaper {
    pub fn add(&self, pid: u32) {
        self.0.lock().unwrap().push((pid, start_time(pid)));
    }
}

impl Drop for Reaper {
    fn drop(&mut self) {
        for (pid, started) in self.0.lock().unwrap().iter() {
            if started.is_none() || start_time(*pid) != *started {
                continue;
            }
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(*pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

/// When `pid` started (field 22 of `/proc/PID/stat`, in clock ticks since boot), while it
/// runs.
fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The fields after the command name, which is in parentheses; `starttime` is the 20th.
    stat.rsplit(')')
        .next()?
        .split_whitespace()
        .nth(19)?
        .parse()
        .ok()
}

/// Whether `pid` has exited (gone, or a zombie nobody has reaped yet).
pub fn exited(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        // The state follows the command name, which is in parentheses.
        Ok(stat) => stat
            .rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('Z')),
    }
}

/// Waits up to `within` for `pid` to exit.
pub fn wait_exit(pid: u32, within: Duration) {
    let deadline = Instant::now() + within;
    while !exited(pid) {
        assert!(Instant::now() < deadline, "pid {pid} did not exit");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Sends SIGKILL to `pid` (`kill -9`) and waits for it to exit.
pub fn kill9(pid: u32) {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    wait_exit(pid, WAIT);
}

/// Sends SIGTERM to `pid` (a process an upgrade started) and waits for it to exit.
pub fn terminate(pid: u32) {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    wait_exit(pid, WAIT);
}

/// Starts downloading `path` from the HTTP listener at `addr` on a connection of its own:
/// reads the head (which must say 200) and the first 64 KiB, and leaves the rest unread, so
/// the answer keeps its process busy until the caller reads on.
pub fn start_download(addr: std::net::SocketAddr, path: &str) -> std::net::TcpStream {
    use std::io::Write;
    let mut stream = std::net::TcpStream::connect_timeout(&addr, WAIT).unwrap();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n"
    )
    .unwrap();
    let mut head = Vec::new();
    let mut byte = [0];
    while !head.ends_with(b"\r\n\r\n") {
        stream.read_exact(&mut byte).unwrap();
        head.push(byte[0]);
    }
    assert!(head.starts_with(b"HTTP/1.1 200"), "{head:?}");
    let mut some = vec![0; 64 * 1024];
    stream.read_exact(&mut some).unwrap();
    stream
}

/// A field of `/proc/PID/status` in bytes (`VmRSS`, `VmData`).
pub fn proc_status(pid: u32, field: &str) -> usize {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    let line = text
        .lines()
        .find(|l| l.starts_with(&format!("{field}:")))
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"));
    let kb: usize = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kb * 1024
}

/// What a process holds: `VmData` and `VmRSS`, in bytes.
pub struct Memory {
    pub data: usize,
    pub rss: usize,
}

impl Memory {
    pub fn of(pid: u32) -> Memory {
        Memory {
            data: proc_status(pid, "VmData"),
            rss: proc_status(pid, "VmRSS"),
        }
    }

    /// Asserts that `pid` holds less than `data` bytes more of `VmData` and `rss` bytes more
    /// of `VmRSS` than it did at `self`; `what` says what it was given meanwhile.
    pub fn assert_grew_less(&self, pid: u32, data: usize, rss: usize, what: &str) {
        const MIB: usize = 1 << 20;
        let now = Memory::of(pid);
        let (grew_data, grew_rss) = (
            now.data.saturating_sub(self.data),
            now.rss.saturating_sub(self.rss),
        );
        assert!(
            grew_data < data,
            "VmData grew by {} MiB for {what}",
            grew_data / MIB
        );
        assert!(
            grew_rss < rss,
            "VmRSS grew by {} MiB for {what}",
            grew_rss / MIB
        );
    }
}
