//! The interleaved HTTP comparison: the servers under test run side by side (all on the
//! server core, only one of them loaded at a time), and the load moves from one to the next
//! every `--slice` seconds, for `--cycles` cycles. Each cycle starts with a different server.
//!
//! Why: on a shared VM, the rate one server reaches drifts by 20 % and more over a few seconds,
//! within one process (the host's load, not the server, changes). Runs of a few seconds each,
//! one server after another, put that drift between the servers. Slices of a second, taken in
//! turn, put every server through the same drift, and the ratio of two servers in one cycle
//! compares them at nearly the same moment; the median of those per-cycle ratios is the figure.
//!
//! Prints one `slice` line per measured slice, then a Markdown table: per server, the median
//! requests/s and server CPU per request over its slices; per pair, the median of the per-cycle
//! ratios with their quartiles.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use tokio::net::TcpStream;

use crate::args::Flags;
use crate::http_load::{self, Slice};
use crate::load::connect_all;
use crate::probe::Probe;
use crate::window::Timing;

/// One server under test.
struct Target {
    label: String,
    addr: SocketAddr,
    probe: Probe,
    streams: Vec<TcpStream>,
    /// Per cycle: requests/s and server CPU µs per request.
    rates: Vec<f64>,
    cpu: Vec<f64>,
}

/// `interleave --targets LABEL=PORT:PID,... [--cycles 20] [--slice 1] [--settle 0.25]
/// [--http-conns 64]`: the first target is the one the ratios are of (`first/other`).
pub(crate) fn main(args: impl Iterator<Item = String>) -> Result<(), String> {
    let flags = Flags::parse(
        args,
        &["targets", "cycles", "slice", "settle", "http-conns"],
    )?;
    let targets: String = flags.required("targets")?;
    let cycles: usize = flags.get("cycles", 20)?;
    let timing = Timing {
        warmup: Duration::from_secs_f64(flags.get("settle", 0.25)?),
        measure: Duration::from_secs_f64(flags.get("slice", 1.0)?),
    };
    let conns: usize = flags.get("http-conns", 64)?;
    if cycles == 0 || conns == 0 {
        return Err("--cycles and --http-conns must be at least 1".to_owned());
    }
    let mut targets = targets
        .split(',')
        .map(parse_target)
        .collect::<Result<Vec<_>, _>>()?;
    if targets.len() < 2 {
        return Err("--targets needs at least two servers to compare".to_owned());
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    runtime.block_on(async {
        for t in &mut targets {
            http_load::check(t.addr)
                .await
                .map_err(|e| format!("{}: {e}", t.label))?;
            t.streams = connect_all(t.addr, conns)
                .await
                .map_err(|e| format!("{}: {e}", t.label))?;
        }
        let n = targets.len();
        for cycle in 0..cycles {
            for k in 0..n {
                let t = &mut targets[(cycle + k) % n];
                let streams = std::mem::take(&mut t.streams);
                let (streams, slice) = http_load::measure(t.addr, streams, timing, &t.probe)
                    .await
                    .map_err(|e| format!("{}, cycle {}: {e}", t.label, cycle + 1))?;
                t.streams = streams;
                let (rate, cpu) = figures(&slice);
                println!("slice {} {} {rate:.0} {cpu:.3}", cycle + 1, t.label);
                t.rates.push(rate);
                t.cpu.push(cpu);
            }
        }
        Ok::<_, String>(())
    })?;
    print!("{}", table(&targets, timing, conns));
    Ok(())
}

/// `LABEL=PORT:PID`.
fn parse_target(text: &str) -> Result<Target, String> {
    let bad = || format!("target `{text}`: expected LABEL=PORT:PID");
    let (label, rest) = text.split_once('=').ok_or_else(bad)?;
    let (port, pid) = rest.split_once(':').ok_or_else(bad)?;
    let port: u16 = port.parse().map_err(|_| bad())?;
    let pid: u32 = pid.parse().map_err(|_| bad())?;
    let probe = Probe::new(pid).map_err(|e| format!("cannot read /proc/{pid}: {e}"))?;
    Ok(Target {
        label: label.to_owned(),
        addr: SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
        probe,
        streams: Vec::new(),
        rates: Vec::new(),
        cpu: Vec::new(),
    })
}

fn figures(slice: &Slice) -> (f64, f64) {
    let requests = slice.latencies.len() as f64;
    (
        slice.measured.per_second(requests),
        slice.measured.cpu_us_per(requests),
    )
}

fn table(targets: &[Target], timing: Timing, conns: usize) -> String {
    let cycles = targets[0].rates.len();
    let mut out = format!(
        "\n{cycles} cycles of a {:.2} s slice per server (after {:.2} s of settling), \
         {conns} keep-alive connections each\n\n\
         | server | requests/s, median | server CPU µs/request, median |\n|---|---|---|\n",
        timing.measure.as_secs_f64(),
        timing.warmup.as_secs_f64()
    );
    for t in targets {
        out += &format!(
            "| {} | {:.0} | {:.2} |\n",
            t.label,
            quantile(&t.rates, 0.5),
            quantile(&t.cpu, 0.5)
        );
    }
    out += "\n| ratio (per cycle) | requests/s: median | quartiles | CPU per request: median | quartiles |\n|---|---|---|---|---|\n";
    let first = &targets[0];
    for other in &targets[1..] {
        let rates = ratios(&first.rates, &other.rates);
        let cpu = ratios(&first.cpu, &other.cpu);
        out += &format!(
            "| {}/{} | {:.3} | {:.3} to {:.3} | {:.3} | {:.3} to {:.3} |\n",
            first.label,
            other.label,
            quantile(&rates, 0.5),
            quantile(&rates, 0.25),
            quantile(&rates, 0.75),
            quantile(&cpu, 0.5),
            quantile(&cpu, 0.25),
            quantile(&cpu, 0.75),
        );
    }
    out
}

fn ratios(a: &[f64], b: &[f64]) -> Vec<f64> {
    a.iter().zip(b).map(|(a, b)| a / b).collect()
}

/// The `q` quantile of `values`, interpolated between the two nearest ranks.
fn quantile(values: &[f64], q: f64) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return f64::NAN;
    }
    let pos = q * (v.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    v[lo] + (v[hi] - v[lo]) * (pos - lo as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_interpolate_between_ranks() {
        let v = [4.0, 1.0, 3.0, 2.0];
        assert_eq!(quantile(&v, 0.0), 1.0);
        assert_eq!(quantile(&v, 0.5), 2.5);
        assert_eq!(quantile(&v, 1.0), 4.0);
        assert_eq!(quantile(&[7.0], 0.25), 7.0);
        assert!(quantile(&[], 0.5).is_nan());
    }

    #[test]
    fn ratios_pair_the_same_cycle() {
        assert_eq!(ratios(&[2.0, 9.0], &[4.0, 3.0]), vec![0.5, 3.0]);
    }

    #[test]
    fn a_target_needs_label_port_and_pid() {
        for bad in ["atoll", "atoll=7400", "atoll=x:1", "atoll=7400:y"] {
            assert!(parse_target(bad).is_err(), "{bad}");
        }
        let me = std::process::id();
        let t = parse_target(&format!("atoll=7400:{me}")).unwrap();
        assert_eq!((t.label.as_str(), t.addr.port()), ("atoll", 7400));
    }
}
