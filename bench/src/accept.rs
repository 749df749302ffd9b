//! The accept scenario: concurrent loops that each connect, send one byte, read it back and
//! close. Measures connections per second and the server's CPU per connection.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;

use crate::load::Metrics;
use crate::probe::Probe;
use crate::window::{self, Timing, Window};

/// What one loop did while measuring.
#[derive(Default)]
struct Tally {
    done: u64,
    errors: u64,
    first_error: Option<io::Error>,
}

pub(crate) async fn run(
    addr: SocketAddr,
    loops: usize,
    timing: Timing,
    probe: &Probe,
) -> io::Result<Metrics> {
    let window = Arc::new(Window::default());
    let mut tasks = JoinSet::new();
    for _ in 0..loops {
        tasks.spawn(cycle(addr, window.clone()));
    }
    let measured = window::run(&window, timing, probe).await;
    let mut total = Tally::default();
    while let Some(joined) = tasks.join_next().await {
        let tally = joined.map_err(io::Error::other)?;
        total.done += tally.done;
        total.errors += tally.errors;
        total.first_error = total.first_error.or(tally.first_error);
    }
    if let Some(e) = &total.first_error {
        eprintln!(
            "accept: {} failed connections, the first: {e}",
            total.errors
        );
    }
    let measured = measured?;
    let done = total.done as f64;
    Ok(vec![
        ("accept.per_s", measured.per_second(done)),
        ("accept.server_cpu_us_per_op", measured.cpu_us_per(done)),
        ("accept.errors", total.errors as f64),
    ])
}

async fn cycle(addr: SocketAddr, window: Arc<Window>) -> Tally {
    let mut tally = Tally::default();
    while !window.stopped() {
        match once(addr).await {
            Ok(()) if window.measuring() => tally.done += 1,
            Ok(()) => {}
            Err(e) => {
                tally.errors += 1;
                tally.first_error.get_or_insert(e);
                // Most likely out of ports or descriptors: let them come back.
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
    }
    tally
}

async fn once(addr: SocketAddr) -> io::Result<()> {
    let mut stream = TcpStream::connect(addr).await?;
    stream.write_all(&[1]).await?;
    let mut byte = [0];
    stream.read_exact(&mut byte).await?;
    Ok(())
}
