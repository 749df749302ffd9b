//! The server process as the load generator sees it: CPU time and resident memory, read from
//! `/proc/<pid>`. Reading them from outside costs the server nothing.

use std::fs;
use std::io;
use std::process::Command;
use std::time::Duration;

/// Reads one process's counters.
pub(crate) struct Probe {
    pid: u32,
    ticks_per_second: u64,
}

impl Probe {
    /// A probe on `pid`, checked once so a wrong pid fails before any scenario runs.
    pub(crate) fn new(pid: u32) -> io::Result<Self> {
        let probe = Probe {
            pid,
            ticks_per_second: clock_ticks(),
        };
        probe.cpu()?;
        Ok(probe)
    }

    /// User plus system CPU time of every thread of the process so far.
    pub(crate) fn cpu(&self) -> io::Result<Duration> {
        let stat = fs::read_to_string(format!("/proc/{}/stat", self.pid))?;
        let bad = || {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("odd /proc/{}/stat", self.pid),
            )
        };
        // The command name, in parentheses, may hold spaces: count fields after its end.
        let rest = &stat[stat.rfind(')').ok_or_else(bad)? + 1..];
        let fields: Vec<&str> = rest.split_whitespace().collect();
        // utime and stime are fields 14 and 15 of proc(5); `rest` starts at field 3.
        let ticks = |i: usize| -> io::Result<u64> {
            fields.get(i).and_then(|f| f.parse().ok()).ok_or_else(bad)
        };
        let total = ticks(11)? + ticks(12)?;
        Ok(Duration::from_micros(
            total * 1_000_000 / self.ticks_per_second,
        ))
    }

    /// Resident memory (`VmRSS`) in KiB.
    pub(crate) fn rss_kib(&self) -> io::Result<u64> {
        let status = fs::read_to_string(format!("/proc/{}/status", self.pid))?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no VmRSS in /proc status"))
    }
}

/// Clock ticks per second (`CLK_TCK`), the unit of `/proc/<pid>/stat` times. Asked of
/// `getconf` rather than through libc, to keep the bench free of dependencies; 100 is the value
/// on every Linux port but alpha.
fn clock_ticks() -> u64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .and_then(|text| text.trim().parse().ok())
        .filter(|&t| t > 0)
        .unwrap_or(100)
}
