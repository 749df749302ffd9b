//! The WebSocket scenarios, with a client of a few lines so that the load generator costs
//! little: the opening handshake written by hand, then masked binary frames of 64 bytes (the
//! mask key is zero, which RFC 6455 allows, so the payload goes as is).
//!
//! - `ws`: connections each sending a message and waiting for its whole echo before the next:
//!   messages per second, their latency, and the server's CPU per message.
//! - `ws-idle`: connections open past the handshake, then quiet: the server's resident memory
//!   per connection.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;

use crate::idle::settled_rss;
use crate::latency::percentile_us;
use crate::load::{connect, Metrics};
use crate::probe::Probe;
use crate::window::{self, Timing, Window};

/// Bytes per message.
const MESSAGE: usize = 64;
/// Handshakes at once while opening idle connections (below the listen backlog).
const BATCH: usize = 500;

pub(crate) async fn run(
    addr: SocketAddr,
    conns: usize,
    timing: Timing,
    probe: &Probe,
) -> io::Result<Metrics> {
    let window = Arc::new(Window::default());
    let mut tasks = JoinSet::new();
    for _ in 0..conns {
        tasks.spawn(echo(open(addr).await?, window.clone()));
    }
    let measured = window::run(&window, timing, probe).await;
    let mut latencies = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        latencies.extend(joined.map_err(io::Error::other)??);
    }
    let measured = measured?;
    latencies.sort_unstable();
    let messages = latencies.len() as f64;
    Ok(vec![
        ("ws.messages_per_s", measured.per_second(messages)),
        ("ws.p50_us", percentile_us(&latencies, 0.50)),
        ("ws.p99_us", percentile_us(&latencies, 0.99)),
        ("ws.server_cpu_us_per_op", measured.cpu_us_per(messages)),
    ])
}

pub(crate) async fn idle(addr: SocketAddr, count: usize, probe: &Probe) -> io::Result<Metrics> {
    drop(open_many(addr, 100).await?);
    let before = settled_rss(probe).await?;
    let mut idle = Vec::with_capacity(count);
    while idle.len() < count {
        idle.extend(open_many(addr, BATCH.min(count - idle.len())).await?);
    }
    let after = settled_rss(probe).await?;
    drop(idle);
    Ok(vec![
        (
            "ws_idle.kib_per_conn",
            (after as f64 - before as f64) / count as f64,
        ),
        ("ws_idle.rss_before_kib", before as f64),
        ("ws_idle.rss_after_kib", after as f64),
    ])
}

async fn open_many(addr: SocketAddr, n: usize) -> io::Result<Vec<TcpStream>> {
    let mut tasks = JoinSet::new();
    for _ in 0..n {
        tasks.spawn(open(addr));
    }
    let mut streams = Vec::with_capacity(n);
    while let Some(joined) = tasks.join_next().await {
        streams.push(joined.map_err(io::Error::other)??);
    }
    Ok(streams)
}

/// A connection past its opening handshake.
async fn open(addr: SocketAddr) -> io::Result<TcpStream> {
    let mut stream = connect(addr).await?;
    stream
        .write_all(
            b"GET /ws HTTP/1.1\r\nHost: bench\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
              Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
        )
        .await?;
    let mut head = Vec::with_capacity(256);
    while !head.ends_with(b"\r\n\r\n") {
        let mut b = [0u8; 1];
        stream.read_exact(&mut b).await?;
        head.push(b[0]);
    }
    if !head.starts_with(b"HTTP/1.1 101") {
        return Err(io::Error::other("the handshake was refused"));
    }
    Ok(stream)
}

/// One connection's loop; returns the latencies of the messages echoed while measuring.
async fn echo(mut stream: TcpStream, window: Arc<Window>) -> io::Result<Vec<Duration>> {
    // FIN + binary, MASK + length, a zero mask key, the payload.
    let mut frame = vec![0x82, 0x80 | MESSAGE as u8, 0, 0, 0, 0];
    frame.extend_from_slice(&[0x5a; MESSAGE]);
    let mut reply = [0; 2 + MESSAGE];
    let mut latencies = Vec::with_capacity(1 << 16);
    while !window.stopped() {
        let started = Instant::now();
        stream.write_all(&frame).await?;
        stream.read_exact(&mut reply).await?;
        let took = started.elapsed();
        if reply[..2] != [0x82, MESSAGE as u8] || reply[2..] != frame[6..] {
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
