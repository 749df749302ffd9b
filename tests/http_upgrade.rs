//! HTTP/2 (h2c, and h2 over TLS) and HTTP/1.1 over TLS across upgrades, measured by a real
//! load generator: h2load (Debian's `nghttp2-client`, which `.ci/run` installs). Each upgrade
//! lands while three h2load runs are busy, one per client kind.
//!
//! What counts. h2load never retries and never reconnects after a GOAWAY: the requests it had
//! not sent yet are counted `failed` and `errored` without being `started`, and a request it
//! queued in the instant the GOAWAY arrived is refused by its own HTTP/2 library before it is
//! sent (logged with start time 0). A standard client sends both on a new connection. So for
//! HTTP/2 every request that reached the wire must succeed, with a 2xx; for HTTP/1.1, where
//! h2load does reconnect after `connection: close`, no request may fail at all.

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::control::ctl;
use common::process::Atoll;
use common::{Pki, WAIT};

const MISSING: &str = "h2load not found: .ci/run installs nghttp2-client";

/// The number of upgrades under load.
const UPGRADES: usize = 3;

/// One h2load run: its process, its stdout lines as they come, its per-request log.
struct Run {
    what: &'static str,
    child: Child,
    lines: mpsc::Receiver<String>,
    log: PathBuf,
}

impl Run {
    fn start(what: &'static str, args: &[String], log: PathBuf) -> Run {
        let mut child = Command::new("h2load")
            .args(args)
            .arg(format!("--log-file={}", log.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{MISSING} ({e})"));
        let out = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Run {
            what,
            child,
            lines,
            log,
        }
    }

    /// Waits until h2load reports its first progress step: its connections are up and busy.
    fn wait_busy(&self, seen: &mut Vec<String>) {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let busy = line.starts_with("progress:");
                    seen.push(line);
                    if busy {
                        return;
                    }
                }
                Err(_) => panic!("{}: h2load never got busy: {seen:?}", self.what),
            }
        }
    }

    /// Waits (bounded) for h2load to finish and returns all it printed.
    fn finish(mut self, mut seen: Vec<String>) -> (Vec<String>, PathBuf) {
        let deadline = Instant::now() + WAIT * 3;
        loop {
            match self
                .lines
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            {
                Ok(line) => seen.push(line),
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    let _ = self.child.kill();
                    panic!("{}: h2load did not finish: {seen:?}", self.what);
                }
            }
        }
        let status = self.child.wait().unwrap();
        assert!(status.success(), "{}: h2load {status}: {seen:?}", self.what);
        (seen, self.log)
    }
}

/// h2load's `requests:` line as numbers: total, started, done, succeeded, failed, errored,
/// timeout.
fn counts(what: &str, out: &[String]) -> [u64; 7] {
    let line = out
        .iter()
        .find_map(|l| l.strip_prefix("requests: "))
        .unwrap_or_else(|| panic!("{what}: no `requests:` line: {out:?}"));
    let numbers: Vec<u64> = line
        .split(", ")
        .map(|part| part.split(' ').next().unwrap().parse().unwrap())
        .collect();
    numbers
        .try_into()
        .unwrap_or_else(|_| panic!("{what}: {line:?}"))
}

/// The requests h2load logged as failed: (start time, duration) in microseconds. A start
/// time of 0 is a request that was never sent.
fn failed_in_log(log: &Path) -> Vec<(u64, u64)> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            (f.get(1) == Some(&"-1")).then(|| (f[0].parse().unwrap(), f[2].parse().unwrap()))
        })
        .collect()
}

fn config(pki: &Pki) -> PathBuf {
    let path = pki.dir.path().join("atoll.toml");
    let listener = |name: &str, kind: &str, tls: &str| {
        format!(
            "[[listener]]\nname = \"{name}\"\nkind = \"{kind}\"\nip = \"127.0.0.1\"\nport = 0\n\
             shutdown_timeout = \"30s\"\n{tls}\n[[listener.handlers]]\nhost = \"_\"\n\
             resources = [\"health\"]\n\n"
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
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn h2load_loses_no_request_across_upgrades() {
    if let Err(e) = Command::new("h2load").arg("--version").output() {
        panic!("{MISSING} ({e})");
    }
    let pki = Pki::new();
    let config = config(&pki);
    let first = Atoll::serve(&config);
    let listening = first.listening(2);
    let addr = |name: &str| -> SocketAddr { listening.iter().find(|l| l.0 == name).unwrap().2 };
    let (web, tls) = (addr("web"), addr("tls"));
    let mut pids = Reaper(vec![first.pid()]);
    let logs = tempfile::tempdir().unwrap();
    // HTTP/2 runs are long enough that the upgrade's GOAWAY always finds them busy (they end
    // at it); the HTTP/1.1 one reconnects to the new process and finishes there.
    let kinds: [(&str, Vec<String>); 3] = [
        (
            "h2c",
            vec![
                format!("http://{web}/health"),
                "-n50000".into(),
                "-c4".into(),
                "-m10".into(),
            ],
        ),
        (
            "h2 over TLS",
            vec![
                format!("https://{tls}/health"),
                "-n50000".into(),
                "-c4".into(),
                "-m10".into(),
            ],
        ),
        (
            "HTTP/1.1 over TLS",
            vec![
                format!("https://{tls}/health"),
                "--h1".into(),
                "-n10000".into(),
                "-c4".into(),
                "-m1".into(),
            ],
        ),
    ];
    let mut report = Vec::new();
    for round in 0..UPGRADES {
        let runs: Vec<(Run, Vec<String>)> = kinds
            .iter()
            .enumerate()
            .map(|(i, (what, args))| {
                let log = logs.path().join(format!("{round}-{i}.log"));
                let run = Run::start(what, args, log);
                let mut seen = Vec::new();
                run.wait_busy(&mut seen);
                (run, seen)
            })
            .collect();
        let bin = env!("CARGO_BIN_EXE_atoll");
        let answer = ctl(&config, &["upgrade", "--path", bin, "--json"]).json();
        let pid = answer["pid"].as_u64().unwrap_or_else(|| panic!("{answer}")) as u32;
        pids.0.push(pid);
        for (run, seen) in runs {
            let what = run.what;
            let (out, log) = run.finish(seen);
            let [total, started, done, succeeded, failed, errored, timeout] = counts(what, &out);
            let line = format!(
                "upgrade {round}, {what}: {total} total, {started} started, {done} done, \
                 {succeeded} succeeded, {failed} failed, {errored} errored, {timeout} timeout"
            );
            let statuses = out.iter().find(|l| l.starts_with("status codes:")).unwrap();
            assert_eq!(
                statuses,
                &format!("status codes: {succeeded} 2xx, 0 3xx, 0 4xx, 0 5xx"),
                "{line}"
            );
            assert_eq!(timeout, 0, "{line}");
            if what.starts_with("HTTP/1.1") {
                assert_eq!((failed, errored), (0, 0), "{line}: {out:?}");
                assert_eq!(succeeded, total, "{line}");
            } else {
                // The GOAWAY found the run busy: some requests were left unsent.
                assert!(started < total, "{line}: the upgrade came after the run");
                let refused = failed_in_log(&log);
                let sent: Vec<_> = refused.iter().filter(|(start, _)| *start != 0).collect();
                assert!(sent.is_empty(), "{line}: sent and failed: {sent:?}");
                // Every failure is a request never sent: not started, or refused unsent.
                assert_eq!(failed, total - started + refused.len() as u64, "{line}");
                assert_eq!(errored, failed, "{line}");
                assert_eq!(succeeded + refused.len() as u64, done, "{line}");
                assert_eq!(done, started, "{line}");
            }
            report.push(line);
        }
    }
    // The old processes drained and left; the last one serves.
    drop(first);
    for pid in &pids.0[..pids.0.len() - 1] {
        let deadline = Instant::now() + WAIT * 3;
        while std::fs::metadata(format!("/proc/{pid}")).is_ok() && !zombie(*pid) {
            assert!(Instant::now() < deadline, "pid {pid} did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    eprintln!("{}", report.join("\n"));
}

/// Kills the processes the upgrades started, when the test ends or fails.
struct Reaper(Vec<u32>);

impl Drop for Reaper {
    fn drop(&mut self) {
        for pid in &self.0 {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(*pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

/// Whether `pid` has exited (gone, or a zombie nobody has reaped yet).
fn zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s.rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .starts_with('Z')
        })
        .unwrap_or(true)
}
