//! An upgrade's new process starts at idle CPU priority (`SCHED_IDLE`), so that its start
//! (loading, reading the config, starting the runtime and the listeners: a few milliseconds of
//! CPU) takes only time the old process, still serving alone, leaves free. It returns to
//! normal priority just before it reports ready.
//!
//! Leaving idle priority takes `CAP_SYS_NICE` or an `RLIMIT_NICE` of at least 20, so the old
//! process starts the new one at idle priority only when it has one of them (the new process
//! inherits both); otherwise the new process starts at normal priority.

use std::process::{Child, Command};

use crate::sys;

/// Set, to `1`, in the environment of a new process started at idle priority.
pub const IDLE_VAR: &str = "ATOLL_UPGRADE_IDLE";

/// `CAP_SYS_NICE`'s bit in the capability sets.
const CAP_SYS_NICE: u32 = 23;

/// Whether a process started from this one could leave idle priority.
fn may_leave_idle() -> bool {
    let capable = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let hex = status.lines().find_map(|l| l.strip_prefix("CapEff:"))?;
            u64::from_str_radix(hex.trim(), 16).ok()
        })
        .is_some_and(|caps| caps & (1 << CAP_SYS_NICE) != 0);
    let limit = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NICE)
        .map_or(0, |(soft, _)| soft);
    capable || limit >= 20
}

/// Starts `command`, at idle priority when the new process will be able to leave it: from a
/// short-lived thread set to idle, whose policy the child inherits.
pub fn spawn(command: &mut Command) -> std::io::Result<Child> {
    if !may_leave_idle() {
        // Whatever this process's own environment says.
        command.env_remove(IDLE_VAR);
        return command.spawn();
    }
    command.env(IDLE_VAR, "1");
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                if let Err(e) = sys::set_idle_policy(0, true) {
                    tracing::debug!(target: "atoll", error = %e, "upgrade: the new process starts at normal priority");
                    command.env_remove(IDLE_VAR);
                }
                command.spawn()
            })
            .join()
            .unwrap_or_else(|_| Err(std::io::Error::other("the spawning thread panicked")))
    })
}

/// In the new process: returns every thread of this process to normal priority. Threads
/// started meanwhile by an idle one are caught by a second pass.
pub fn leave_idle() -> std::io::Result<()> {
    for _ in 0..2 {
        for entry in std::fs::read_dir("/proc/self/task")? {
            let tid = entry?.file_name().to_string_lossy().parse::<i32>();
            if let Ok(tid) = tid {
                match sys::set_idle_policy(tid, false) {
                    Ok(()) => {}
                    // The thread ended meanwhile.
                    Err(e) if e.raw_os_error() == Some(nix::libc::ESRCH) => {}
                    Err(e) => return Err(e),
                }
            }
        }
    }
    Ok(())
}
