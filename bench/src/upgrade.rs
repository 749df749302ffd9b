//! The upgrade scenario: keep-alive HTTP/1.1 clients ask a running `atoll serve` for
//! `/health` without pause; partway through, `atoll upgrade --path BIN` replaces the process.
//! Compares requests per second and p99 latency during the upgrade (from the command's start
//! until the old process has exited) with the steady state before it, and counts failures.
//!
//! A response with `connection: close` (what a draining server says) makes the client open a
//! new connection for its next request, whose latency then includes the connect: that is
//! what a real client pays. Anything else that ends a connection (a reset, a close without
//! an answer, a refused connect) is a failure.
//!
//! ```text
//! atoll-bench upgrade --atoll BIN --config FILE --port P [--conns 64] [--steady 3] [--after 2]
//! ```

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use atoll::app::command::Request;
use atoll::app::control;
use atoll::Config;

use crate::args::Flags;
use crate::latency::percentile_us;

const REQUEST: &[u8] = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";

/// Completed requests: when each finished (since the start) and how long it took.
#[derive(Default)]
struct Log {
    done: Vec<(Duration, Duration)>,
    failures: Vec<String>,
}

pub(crate) fn main(args: impl Iterator<Item = String>) -> Result<(), String> {
    let flags = Flags::parse(
        args,
        &["atoll", "config", "port", "conns", "steady", "after"],
    )?;
    let atoll: PathBuf = flags.required("atoll")?;
    let config: PathBuf = flags.required("config")?;
    let port: u16 = flags.required("port")?;
    let conns: usize = flags.get("conns", 64)?;
    let steady = Duration::from_secs(flags.get("steady", 3)?);
    let after = Duration::from_secs(flags.get("after", 2)?);
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    // Found the way the control commands find it: from the config's environment.
    let env = Config::load_env(&config).map_err(|e| e.to_string())?;
    let socket = control::socket_path(&env);
    runtime.block_on(run(addr, conns, steady, after, atoll, socket))
}

async fn run(
    addr: SocketAddr,
    conns: usize,
    steady: Duration,
    after: Duration,
    atoll: PathBuf,
    socket: PathBuf,
) -> Result<(), String> {
    let start = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let log = Arc::new(Mutex::new(Log::default()));
    let mut tasks = Vec::new();
    for _ in 0..conns {
        tasks.push(tokio::spawn(client(addr, start, stop.clone(), log.clone())));
    }
    // One second of warm-up, then the steady window, then the upgrade.
    let warm = Duration::from_secs(1);
    tokio::time::sleep(warm + steady).await;
    let upgrade_at = start.elapsed();
    // The request goes from this process over the control socket, as `atoll upgrade` would
    // send it: running the `atoll upgrade` client instead would put its own start (an exec,
    // about 1.3 ms of CPU) on the load generator's core, and the clients' latency would show
    // the generator's stall rather than the server's.
    let command = tokio::task::spawn_blocking(move || {
        let request = Request::Upgrade {
            to: None,
            path: Some(atoll),
            timeout_ms: None,
        };
        control::call(&socket, &request, Duration::from_secs(60))
    });
    let answer = command
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("cannot ask for the upgrade: {e}"))?;
    let ready_at = start.elapsed();
    if !answer.ok {
        stop.store(true, Ordering::Relaxed);
        return Err(format!("atoll upgrade failed: {}", answer.text.trim()));
    }
    let old_pid = answer.data["old_pid"]
        .as_u64()
        .ok_or_else(|| format!("no old_pid in the answer: {}", answer.data))?;
    // The upgrade lasts until the old process has drained and exited.
    let deadline = Instant::now() + Duration::from_secs(60);
    while !exited(old_pid) {
        if Instant::now() > deadline {
            return Err(format!(
                "the old process {old_pid} did not exit within 60 s"
            ));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let gone_at = start.elapsed();
    tokio::time::sleep(after).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(10), t).await;
    }

    let log = log.lock().unwrap();
    let window = |from: Duration, to: Duration| {
        let mut lat: Vec<Duration> = log
            .done
            .iter()
            .filter(|(at, _)| *at >= from && *at < to)
            .map(|(_, l)| *l)
            .collect();
        lat.sort_unstable();
        let rate = lat.len() as f64 / (to - from).as_secs_f64();
        (rate, percentile_us(&lat, 0.99), lat.len())
    };
    let (steady_rate, steady_p99, _) = window(warm, upgrade_at);
    let (during_rate, during_p99, during_n) = window(upgrade_at, gone_at);
    println!("upgrade.steady_requests_per_sec {steady_rate:.0}");
    println!("upgrade.steady_p99_us {steady_p99:.0}");
    println!("upgrade.during_requests_per_sec {during_rate:.0}");
    println!("upgrade.during_p99_us {during_p99:.0}");
    println!("upgrade.during_requests {during_n}");
    // The two halves: the new process starting (the old one serves alone), then the switch
    // (clients move over, the old one drains).
    let (_, starting_p99, _) = window(upgrade_at, ready_at);
    let (_, switching_p99, _) = window(ready_at, gone_at);
    println!("upgrade.starting_p99_us {starting_p99:.0}");
    println!("upgrade.switching_p99_us {switching_p99:.0}");
    println!(
        "upgrade.command_ms {:.0}",
        (ready_at - upgrade_at).as_secs_f64() * 1e3
    );
    println!(
        "upgrade.until_old_exit_ms {:.0}",
        (gone_at - upgrade_at).as_secs_f64() * 1e3
    );
    println!("upgrade.failures {}", log.failures.len());
    if let Some(first) = log.failures.first() {
        eprintln!("first failure: {first}");
    }
    Ok(())
}

pub(crate) fn exited(pid: u64) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('Z')),
    }
}

async fn client(addr: SocketAddr, start: Instant, stop: Arc<AtomicBool>, log: Arc<Mutex<Log>>) {
    let mut stream: Option<TcpStream> = None;
    let mut buf = vec![0u8; 4096];
    while !stop.load(Ordering::Relaxed) {
        let began = Instant::now();
        let s = match &mut stream {
            Some(s) => s,
            None => match TcpStream::connect(addr).await {
                Ok(s) => {
                    let _ = s.set_nodelay(true);
                    stream.insert(s)
                }
                Err(e) => {
                    log.lock().unwrap().failures.push(format!("connect: {e}"));
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        match request(s, &mut buf).await {
            Ok(close) => {
                let done = start.elapsed();
                log.lock().unwrap().done.push((done, began.elapsed()));
                if close {
                    stream = None;
                }
            }
            Err(e) => {
                log.lock().unwrap().failures.push(e.to_string());
                stream = None;
            }
        }
    }
}

/// One request and its whole response; whether the server closes the connection after it.
pub(crate) async fn request<S>(s: &mut S, buf: &mut [u8]) -> io::Result<bool>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    s.write_all(REQUEST).await?;
    let mut filled = 0;
    loop {
        let n = s.read(&mut buf[filled..]).await?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("closed after {filled} bytes of a response"),
            ));
        }
        filled += n;
        let Some(end) = buf[..filled].windows(4).position(|w| w == b"\r\n\r\n") else {
            if filled == buf.len() {
                return Err(io::Error::other("response head too long"));
            }
            continue;
        };
        let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
        if !head.starts_with("http/1.1 200") {
            return Err(io::Error::other(format!("not a 200: {head:?}")));
        }
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .ok_or_else(|| io::Error::other("no content-length"))?;
        let mut have = filled - (end + 4);
        while have < length {
            let n = s.read(&mut buf[..]).await?;
            if n == 0 {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "body cut"));
            }
            have += n;
        }
        return Ok(head.contains("connection: close"));
    }
}
