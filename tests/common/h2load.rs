//! h2load (Debian's `nghttp2-client`, which `.ci/run` installs) as a child process: its
//! progress lines as they come, its per-request log, and what its counts say about requests
//! lost across an upgrade.
//!
//! What counts. h2load never retries and never reconnects after a GOAWAY: the requests it had
//! not sent yet are counted `failed` and `errored` without being `started`, and a request it
//! queued in the instant the GOAWAY arrived is refused by its own HTTP/2 library before it is
//! sent (logged with start time 0). A standard client sends both on a new connection. So for
//! HTTP/2 every request that reached the wire must succeed, with a 2xx; for HTTP/1.1, where
//! h2load does reconnect after `connection: close`, no request may fail at all.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Instant;

use super::WAIT;

pub const MISSING: &str = "h2load not found: .ci/run installs nghttp2-client";

/// Fails the test when h2load is not installed.
pub fn require() {
    if let Err(e) = Command::new("h2load").arg("--version").output() {
        panic!("{MISSING} ({e})");
    }
}

/// One h2load run: its process, its stdout lines as they come, its per-request log.
pub struct Run {
    pub what: &'static str,
    child: Child,
    lines: mpsc::Receiver<String>,
    log: PathBuf,
}

impl Run {
    pub fn start(what: &'static str, args: &[String], log: PathBuf) -> Run {
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
    pub fn wait_busy(&self, seen: &mut Vec<String>) {
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

    /// Waits (bounded) for h2load to finish and returns all it printed, and its log.
    pub fn finish(mut self, mut seen: Vec<String>) -> (Vec<String>, PathBuf) {
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
                    let _ = self.child.wait();
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
pub fn counts(what: &str, out: &[String]) -> [u64; 7] {
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
pub fn failed_in_log(log: &Path) -> Vec<(u64, u64)> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            (f.get(1) == Some(&"-1")).then(|| (f[0].parse().unwrap(), f[2].parse().unwrap()))
        })
        .collect()
}

/// What one finished run says, by the rules in this module's docs.
#[derive(Debug)]
pub struct Verdict {
    /// The `requests:` line, in words.
    pub line: String,
    pub total: u64,
    pub started: u64,
    pub succeeded: u64,
    /// Requests h2load never put on the wire (HTTP/2 after a GOAWAY): not failures.
    pub unsent: u64,
}

/// Reads a finished run's output and log: `Err` says how a request that reached the server
/// failed (or, over HTTP/1.1, that any request failed).
pub fn verdict(what: &str, h1: bool, out: &[String], log: &Path) -> Result<Verdict, String> {
    let [total, started, done, succeeded, failed, errored, timeout] = counts(what, out);
    let line = format!(
        "{what}: {total} total, {started} started, {done} done, {succeeded} succeeded, \
         {failed} failed, {errored} errored, {timeout} timeout"
    );
    let check = |ok: bool, why: &str| match ok {
        true => Ok(()),
        false => Err(format!("{line}: {why}; output: {out:?}")),
    };
    let statuses = out
        .iter()
        .find(|l| l.starts_with("status codes:"))
        .map(String::as_str)
        .unwrap_or("");
    check(
        statuses == format!("status codes: {succeeded} 2xx, 0 3xx, 0 4xx, 0 5xx"),
        "answers other than 2xx",
    )?;
    check(timeout == 0, "requests timed out")?;
    if h1 {
        check((failed, errored) == (0, 0), "failed requests")?;
        check(succeeded == total, "requests not answered")?;
        return Ok(Verdict {
            line,
            total,
            started,
            succeeded,
            unsent: 0,
        });
    }
    let refused = failed_in_log(log);
    let sent: Vec<_> = refused.iter().filter(|(start, _)| *start != 0).collect();
    check(sent.is_empty(), &format!("sent and failed: {sent:?}"))?;
    // Every failure is a request never sent: not started, or refused unsent.
    let unsent = total - started + refused.len() as u64;
    check(failed == unsent, "failures besides requests never sent")?;
    check(errored == failed, "errors besides requests never sent")?;
    check(
        succeeded + refused.len() as u64 == done,
        "done but not answered",
    )?;
    check(done == started, "started but not done")?;
    Ok(Verdict {
        line,
        total,
        started,
        succeeded,
        unsent,
    })
}
