//! The phases of a timed scenario, shared by its tasks: warm-up (work, uncounted), measure
//! (work, counted), stop. The server's CPU time is read at both ends of the measured part.

use std::io;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

use crate::probe::Probe;

const WARMING: u8 = 0;
const MEASURING: u8 = 1;
const STOPPED: u8 = 2;

/// Where a timed scenario is; its tasks look at it after each operation.
pub(crate) struct Window {
    phase: AtomicU8,
}

impl Default for Window {
    fn default() -> Self {
        Window {
            phase: AtomicU8::new(WARMING),
        }
    }
}

impl Window {
    /// True while operations count.
    pub(crate) fn measuring(&self) -> bool {
        self.phase.load(Ordering::Relaxed) == MEASURING
    }

    /// True once the tasks should wind down.
    pub(crate) fn stopped(&self) -> bool {
        self.phase.load(Ordering::Relaxed) == STOPPED
    }
}

/// How long a timed scenario warms up and measures.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timing {
    pub(crate) warmup: Duration,
    pub(crate) measure: Duration,
}

/// The measured part of a timed scenario.
pub(crate) struct Measured {
    pub(crate) elapsed: Duration,
    pub(crate) server_cpu: Duration,
}

impl Measured {
    /// `count` things over the measured time, per second.
    pub(crate) fn per_second(&self, count: f64) -> f64 {
        count / self.elapsed.as_secs_f64()
    }

    /// Server CPU microseconds per one of `count` things done in the measured time.
    pub(crate) fn cpu_us_per(&self, count: f64) -> f64 {
        self.server_cpu.as_secs_f64() * 1e6 / count
    }
}

/// Takes `window` through warm-up and measure, then stops it, whatever happens: a failed probe
/// must not leave the scenario's tasks running.
pub(crate) async fn run(window: &Window, timing: Timing, probe: &Probe) -> io::Result<Measured> {
    let measured = async {
        tokio::time::sleep(timing.warmup).await;
        let cpu_before = probe.cpu()?;
        let started = Instant::now();
        window.phase.store(MEASURING, Ordering::Relaxed);
        tokio::time::sleep(timing.measure).await;
        let elapsed = started.elapsed();
        let cpu_after = probe.cpu()?;
        Ok(Measured {
            elapsed,
            server_cpu: cpu_after.saturating_sub(cpu_before),
        })
    }
    .await;
    window.phase.store(STOPPED, Ordering::Relaxed);
    measured
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_and_cpu_per_operation() {
        let m = Measured {
            elapsed: Duration::from_secs(2),
            server_cpu: Duration::from_millis(500),
        };
        assert_eq!(m.per_second(1000.0), 500.0);
        assert_eq!(m.cpu_us_per(1000.0), 500.0);
    }
}
