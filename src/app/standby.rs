//! The old process's watch over the new one while it drains after an upgrade.
//!
//! Once the new process reports ready, the old one stops accepting and drains, but it keeps
//! its copies of the listening sockets and of the control socket open until it exits: the
//! sockets stay the same kernel sockets, so connects queue in their backlog whatever happens
//! to the new process. The old process is the new one's parent, so it learns at once when the
//! new one ends. If that end is a failure (killed by a signal, or a non-zero exit status) while
//! the old one still drains, the old one starts its own binary in the new one's place, hands
//! it the same sockets, and sends the connections still moving to it: the service goes on
//! answering, the connects queued meanwhile included, and the control socket answers from the
//! process started in its place. A clean exit (status 0: stopped, or upgraded on) is left
//! alone.
//!
//! What cannot be saved is what the dead process held: its connections end with it.

use std::path::PathBuf;
use std::process::{Child, ExitStatus};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use super::handover::Sockets;
use super::relay::Relay;
use super::systemd;
use super::upgrade::{self, Started};

/// At most this many processes are started in place of dead ones after one upgrade: 3.
/// A binary that keeps dying is not helped by starting it again.
pub(crate) const MAX_RESTARTS: usize = 3;

/// How to start a process in place of a dead one.
pub(crate) struct Restart {
    /// The binary: this process's own, the version that served before the upgrade (the new
    /// one's if this one's file is gone).
    pub binary: PathBuf,
    /// The config file, as `atoll serve` was given it.
    pub config: PathBuf,
    /// Where the handover socket is made.
    pub socket_path: PathBuf,
    /// How long the new process has to report ready.
    pub timeout: Duration,
    /// Copies of the listening sockets and the control socket: they stay open until this
    /// process exits.
    pub sockets: Sockets,
    /// Where moving connections are sent, to be pointed at the process started in place.
    pub relay: Option<Arc<Relay>>,
}

/// Whether a restart is under way, and whether this process is about to exit.
#[derive(Default)]
struct Phase {
    closing: bool,
    restarting: bool,
}

/// The watch: a thread that waits on the new process.
pub(crate) struct Standby {
    phase: Arc<(Mutex<Phase>, Condvar)>,
}

impl Standby {
    /// Watches `child`, the new process that reported ready, until this process exits.
    pub(crate) fn watch(child: Child, restart: Restart) -> std::io::Result<Standby> {
        let phase = Arc::new((Mutex::new(Phase::default()), Condvar::new()));
        let shared = phase.clone();
        std::thread::Builder::new()
            .name("atoll-standby".to_owned())
            .spawn(move || run(child, restart, &shared))?;
        Ok(Standby { phase })
    }

    /// Called as this process is about to exit: a restart under way is waited for, so the
    /// process it starts gets its sockets; none starts after this.
    pub(crate) fn close(&self) {
        let (lock, changed) = &*self.phase;
        let mut phase = lock.lock().unwrap_or_else(|p| p.into_inner());
        phase.closing = true;
        while phase.restarting {
            phase = changed.wait(phase).unwrap_or_else(|p| p.into_inner());
        }
    }
}

/// Set while a restart runs; cleared, with the exit waiting on it told, when dropped.
struct Restarting<'a>(&'a (Mutex<Phase>, Condvar));

impl<'a> Restarting<'a> {
    /// Marks a restart under way, unless this process is closing.
    fn begin(phase: &'a (Mutex<Phase>, Condvar)) -> Option<Restarting<'a>> {
        let mut p = phase.0.lock().unwrap_or_else(|p| p.into_inner());
        if p.closing {
            return None;
        }
        p.restarting = true;
        Some(Restarting(phase))
    }
}

impl Drop for Restarting<'_> {
    fn drop(&mut self) {
        self.0
             .0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .restarting = false;
        self.0 .1.notify_all();
    }
}

fn run(mut child: Child, restart: Restart, phase: &(Mutex<Phase>, Condvar)) {
    for restarts in 0.. {
        let pid = child.id();
        let status = match child.wait() {
            Ok(status) => status,
            Err(e) => {
                tracing::warn!(target: "atoll", pid, error = %e, "upgrade: cannot watch the new process");
                return;
            }
        };
        if !failed(status) {
            return;
        }
        let Some(_restarting) = Restarting::begin(phase) else {
            return;
        };
        if restarts == MAX_RESTARTS {
            tracing::error!(
                target: "atoll",
                pid,
                %status,
                "upgrade: the process serving ended ({status}); {MAX_RESTARTS} were started in \
                 place of dead ones already, so none is; nothing accepts connections"
            );
            return;
        }
        tracing::error!(
            target: "atoll",
            pid,
            %status,
            binary = %restart.binary.display(),
            "upgrade: the new process ended ({status}) while this one drains; starting {} in its place",
            restart.binary.display()
        );
        match upgrade::run(
            &restart.binary,
            &restart.config,
            &restart.socket_path,
            &restart.sockets,
            restart.timeout,
        ) {
            Ok(Started {
                ready,
                connection,
                child: started,
            }) => {
                if let Some(relay) = &restart.relay {
                    relay.retarget(connection);
                }
                let _ = systemd::main_pid(ready.pid);
                tracing::info!(
                    target: "atoll",
                    pid = ready.pid,
                    version = ready.version,
                    "upgrade: a process started in place of the dead one serves"
                );
                child = started;
            }
            Err(why) => {
                tracing::error!(
                    target: "atoll",
                    "upgrade: cannot start a process in place of the dead one: {why}; \
                     nothing accepts connections"
                );
                return;
            }
        }
    }
}

/// Whether a process's end is a failure: a signal, or a non-zero status.
fn failed(status: ExitStatus) -> bool {
    !status.success()
}
