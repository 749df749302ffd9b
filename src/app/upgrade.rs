//! The old process's side of a zero-downtime upgrade: pick the binary, start it, hand it
//! every listening socket and the control socket, and wait until it reports ready. Until then
//! nothing changes here, so a new version that fails leaves this one serving.
//!
//! The new process inherits this one's stdout and stderr, unless they are a terminal: then
//! they go to `/dev/null` (its log lines still reach `LOG_DIR/APP.log`), since it runs on
//! after this one exits, in the background of the shell that started this one, where Ctrl-C
//! does not reach it. Stop it with `kill -TERM PID` (the pid `atoll upgrade` prints, or
//! `atoll status`'s).

use std::io::IsTerminal;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::str::FromStr;
use std::time::{Duration, Instant};

use semver::Version;

use super::handover::{self, Ready, Sockets};
use super::priority;
use crate::setup::versions::{find_releases, pick, Which};
use crate::setup::AppEnv;

/// Which binary an upgrade runs.
#[derive(Debug, Clone)]
pub enum Target {
    /// An installed release: `latest`, `next` or a pattern (see [`Which`]).
    Release(String),
    /// A binary anywhere (setup's `patch_app`).
    Path(PathBuf),
}

/// The binary chosen, and the version it is expected to run.
#[derive(Debug, Clone)]
pub struct Chosen {
    /// The binary.
    pub binary: PathBuf,
    /// The release's version, for an installed release.
    pub version: Option<Version>,
}

/// Resolves `target` in the lib dirs of `env`, `running` being this process's version.
pub fn choose(target: &Target, env: &AppEnv, running: &Version) -> Result<Chosen, String> {
    match target {
        Target::Path(path) => {
            let meta = std::fs::metadata(path)
                .map_err(|e| format!("cannot run {}: {e}", path.display()))?;
            if !meta.is_file() {
                return Err(format!("cannot run {}: not a file", path.display()));
            }
            let binary = std::fs::canonicalize(path)
                .map_err(|e| format!("cannot run {}: {e}", path.display()))?;
            Ok(Chosen {
                binary,
                version: None,
            })
        }
        Target::Release(which) => {
            let which = Which::from_str(which).map_err(|e| e.to_string())?;
            let installed = find_releases(&env.name, &env.lib_dirs);
            let release = pick(&installed, &which, Some(running)).map_err(|e| e.to_string())?;
            Ok(Chosen {
                binary: release.binary.clone(),
                version: Some(release.version.clone()),
            })
        }
    }
}

/// A new process that reported ready.
#[derive(Debug)]
pub struct Started {
    /// Its report.
    pub ready: Ready,
    /// The handover connection, which stays open for the connections handed over while this
    /// process drains.
    pub connection: socket2::Socket,
    /// The process, unreaped: this one may watch it while it drains (see `standby`), and it
    /// outlives this one.
    pub child: Child,
}

/// Starts `binary serve --config CONFIG` with the handover socket at `socket_path`, hands it
/// copies of `sockets`, and waits up to `timeout` for it to report ready. On failure the new
/// process is killed and reaped, and the error says why. Blocking: run it off the runtime's
/// threads.
pub fn run(
    binary: &Path,
    config: &Path,
    socket_path: &Path,
    sockets: &Sockets,
    timeout: Duration,
) -> Result<Started, String> {
    // A timeout too long to add to an instant (a control request may ask for any) waits
    // for a century instead.
    let deadline = Instant::now() + timeout.min(Duration::from_secs(100 * 365 * 24 * 3600));
    let listener = handover::listen(socket_path)
        .map_err(|e| format!("cannot listen on {}: {e}", socket_path.display()))?;
    let outcome = (|| {
        let mut command = Command::new(binary);
        command
            .arg("serve")
            .arg("--config")
            .arg(config)
            .env(handover::SOCKET_VAR, socket_path)
            .stdin(Stdio::null())
            .stdout(away_from_terminal(std::io::stdout().is_terminal()))
            .stderr(away_from_terminal(std::io::stderr().is_terminal()));
        let mut child = priority::spawn(&mut command)
            .map_err(|e| format!("cannot start {}: {e}", binary.display()))?;
        match handshake(&listener, &mut child, sockets, deadline) {
            Ok((ready, connection)) => Ok(Started {
                ready,
                connection,
                child,
            }),
            Err(why) => {
                let _ = child.kill();
                let _ = child.wait();
                Err(why)
            }
        }
    })();
    let _ = std::fs::remove_file(socket_path);
    outcome
}

/// The new process's stdout or stderr: this process's (a pipe, a file, the journal), but
/// not a terminal. The new process outlives this one, and the shell that started this one
/// takes its terminal back when this one exits: a new process still writing there, out of
/// the reach of Ctrl-C, would surprise. Its log lines still go to `LOG_DIR/APP.log`, and
/// `atoll listeners` shows what it serves.
fn away_from_terminal(is_terminal: bool) -> Stdio {
    match is_terminal {
        true => Stdio::null(),
        false => Stdio::inherit(),
    }
}

fn handshake(
    listener: &socket2::Socket,
    child: &mut Child,
    sockets: &Sockets,
    deadline: Instant,
) -> Result<(Ready, socket2::Socket), String> {
    let pid = child.id();
    let mut gone = || match child.try_wait() {
        Ok(Some(status)) => Some(format!(
            "the new process exited ({status}) before it was ready"
        )),
        _ => None,
    };
    let connection = handover::accept(listener, pid, deadline, &mut gone)?;
    handover::offer(&connection, sockets)
        .map_err(|e| format!("cannot hand the sockets over: {e}"))?;
    let ready = handover::wait_ready(&connection, deadline, &mut gone)?;
    if ready.pid != pid {
        return Err(format!(
            "the new process reported pid {}, not {pid}",
            ready.pid
        ));
    }
    Ok((ready, connection))
}

/// Collects copies of the listening sockets of every running listener of `registry`, and of
/// `control`, to hand over.
pub async fn collect(
    registry: &crate::Registry,
    control: Option<&OwnedFd>,
) -> Result<Sockets, String> {
    let mut sockets = Sockets::default();
    for info in registry.list() {
        let Ok(handle) = registry.get(&info.name) else {
            continue;
        };
        let fds = handle
            .listening_sockets()
            .await
            .map_err(|e| format!("listener `{}`: cannot copy its sockets: {e}", info.name))?;
        if !fds.is_empty() {
            sockets.listeners.push((info.name, fds));
        }
    }
    sockets.control = match control {
        Some(fd) => Some(
            fd.try_clone()
                .map_err(|e| format!("cannot copy the control socket: {e}"))?,
        ),
        None => None,
    };
    Ok(sockets)
}
