//! Control commands of the `atoll` binary, run to completion: `atoll ARGS --config FILE` in
//! the config's folder, with what it printed and how it exited.

use std::path::Path;
use std::process::{Command, Stdio};

use super::WAIT;

/// How a command ended.
#[derive(Debug)]
pub struct Outcome {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Outcome {
    /// Asserts exit 0 and returns stdout.
    pub fn ok(self) -> String {
        assert_eq!(self.code, 0, "failed: {self:?}");
        self.stdout
    }

    /// Asserts exit 1 with one line on stderr, no panic, and returns that line.
    pub fn fails(self) -> String {
        assert_eq!(self.code, 1, "did not fail: {self:?}");
        assert_eq!(self.stderr.lines().count(), 1, "not one line: {self:?}");
        assert!(!self.stderr.contains("panicked"), "{self:?}");
        self.stderr.trim_end().to_owned()
    }

    /// Parses stdout as JSON.
    pub fn json(self) -> serde_json::Value {
        let out = self.ok();
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
    }
}

/// Runs `atoll ARGS --config CONFIG` in the config's folder and waits (bounded) for it.
pub fn ctl(config: &Path, args: &[&str]) -> Outcome {
    ctl_with(config, args, |_| {})
}

/// [`ctl`], with `adjust` changing the command first (its user, its environment).
pub fn ctl_with(config: &Path, args: &[&str], adjust: impl FnOnce(&mut Command)) -> Outcome {
    let dir = config.parent().unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_atoll"));
    command
        .args(args)
        .arg("--config")
        .arg(config)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    adjust(&mut command);
    let child = command.spawn().expect("atoll runs");
    let pid = child.id();
    // Bounded: a hung command is killed and fails the test.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let limit = WAIT * 4;
    let out = match rx.recv_timeout(limit) {
        Ok(out) => out.expect("wait for atoll"),
        Err(_) => {
            let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
            panic!("atoll {args:?} did not finish within {limit:?}");
        }
    };
    Outcome {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}
