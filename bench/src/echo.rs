//! The echo scenario: many connections, each sending a small message and waiting for the whole
//! echo before sending the next. Measures round trips per second, their latency, and the
//! server's CPU per round trip.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;

use crate::latency::percentile_us;
use crate::load::{connect_all, Metrics};
use crate::probe::Probe;
use crate::window::{self, Timing, Window};

/// Bytes per message.
const MESSAGE: usize = 64;

pub(crate) async fn run(
    addr: SocketAddr,
    conns: usize,
    timing: Timing,
    probe: &Probe,
) -> io::Result<Metrics> {
    let window = Arc::new(Window::default());
    let streams = connect_all(addr, conns).await?;
    let mut tasks = JoinSet::new();
    for stream in streams {
        tasks.spawn(ping(stream, window.clone()));
    }
    let measured = window::run(&window, timing, probe).await;
    let mut latencies = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        latencies.extend(joined.map_err(io::Error::other)??);
    }
    let measured = measured?;
    latencies.sort_unstable();
    let round_trips = latencies.len() as f64;
    Ok(vec![
        ("echo.round_trips_per_s", measured.per_second(round_trips)),
        ("echo.p50_us", percentile_us(&latencies, 0.50)),
        ("echo.p99_us", percentile_us(&latencies, 0.99)),
        (
            "echo.server_cpu_us_per_op",
            measured.cpu_us_per(round_trips),
        ),
    ])
}

/// One connection's loop; returns the latencies of the round trips done while measuring.
async fn ping(mut stream: TcpStream, window: Arc<Window>) -> io::Result<Vec<Duration>> {
    let message = [0x5a; MESSAGE];
    let mut reply = [0; MESSAGE];
    let mut latencies = Vec::with_capacity(1 << 16);
    while !window.stopped() {
        let started = Instant::now();
        stream.write_all(&message).await?;
        stream.read_exact(&mut reply).await?;
        let took = started.elapsed();
        if reply != message {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "the echo differs from the message",
            ));
        }
        if window.measuring() {
            latencies.push(took);
        }
    }
    Ok(latencies)
}
