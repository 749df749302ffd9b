//! The bulk scenario: a few connections, each with a writer pouring 64 KiB chunks and a reader
//! taking the echo back at the same time. Measures MB/s echoed and the server's CPU per MB.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::task::JoinSet;

use crate::load::{connect, Metrics};
use crate::probe::Probe;
use crate::window::{self, Timing, Window};

const CHUNK: usize = 64 * 1024;
/// How long the readers may take to see the end of the echo once writing stops.
const DRAIN_LIMIT: Duration = Duration::from_secs(10);

pub(crate) async fn run(
    addr: SocketAddr,
    conns: usize,
    timing: Timing,
    probe: &Probe,
) -> io::Result<Metrics> {
    let window = Arc::new(Window::default());
    let mut writers = JoinSet::new();
    let mut readers = JoinSet::new();
    for _ in 0..conns {
        let (read, write) = connect(addr).await?.into_split();
        writers.spawn(pour(write, window.clone()));
        readers.spawn(take_back(read, window.clone()));
    }
    let measured = window::run(&window, timing, probe).await;
    // Each writer's half shuts down as it ends; the server echoes what is left and closes, so
    // the readers end on the end of stream.
    let ended = tokio::time::timeout(DRAIN_LIMIT, async {
        while let Some(joined) = writers.join_next().await {
            joined.map_err(io::Error::other)??;
        }
        let mut echoed = 0u64;
        while let Some(joined) = readers.join_next().await {
            echoed += joined.map_err(io::Error::other)??;
        }
        Ok::<_, io::Error>(echoed)
    })
    .await;
    let echoed =
        ended.map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "the echo never ended"))??;
    let measured = measured?;
    let megabytes = echoed as f64 / 1e6;
    Ok(vec![
        ("bulk.mb_per_s", measured.per_second(megabytes)),
        ("bulk.server_cpu_us_per_mb", measured.cpu_us_per(megabytes)),
    ])
}

async fn pour(mut half: OwnedWriteHalf, window: Arc<Window>) -> io::Result<()> {
    let chunk = vec![0xa5; CHUNK];
    while !window.stopped() {
        half.write_all(&chunk).await?;
    }
    Ok(())
}

/// Reads the echo to its end; returns the bytes that arrived while measuring.
async fn take_back(mut half: OwnedReadHalf, window: Arc<Window>) -> io::Result<u64> {
    let mut buf = vec![0; CHUNK];
    let mut counted = 0;
    loop {
        let n = half.read(&mut buf).await?;
        if n == 0 {
            return Ok(counted);
        }
        if window.measuring() {
            counted += n as u64;
        }
    }
}
