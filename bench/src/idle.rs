//! The idle scenario: many connections that stay open doing nothing. Measures the server's
//! resident memory per connection, from its `VmRSS` before and after.
//!
//! Two variants: `idle` connections never send a byte; `idle-used` ones echo one message first
//! and then go quiet, which is what a keep-alive connection between requests looks like.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;

use crate::load::{connect, Metrics};
use crate::probe::Probe;

/// Connections opened at once; below the servers' listen backlog of 1024, so none is dropped.
const BATCH: usize = 500;
/// Connections that warm the server up before the first reading.
const WARMUP: usize = 100;
/// How often, and how many times in a row, the RSS must read the same to count as settled.
const SETTLE_EVERY: Duration = Duration::from_millis(100);
const SETTLE_SAME: usize = 3;
const SETTLE_TRIES: usize = 50;

pub(crate) async fn run(
    addr: SocketAddr,
    count: usize,
    used: bool,
    probe: &Probe,
) -> io::Result<Metrics> {
    // The runtime's worker, the allocator's arenas and any pools exist before the first
    // reading, so the difference is the connections' alone.
    drop(open(addr, WARMUP, true).await?);
    let before = settled_rss(probe).await?;

    let mut idle = Vec::with_capacity(count);
    while idle.len() < count {
        let n = BATCH.min(count - idle.len());
        idle.extend(open(addr, n, used).await?);
        // The accept queue is first in, first out: once a fresh connection is echoed, the
        // server has accepted every connection before it.
        let mut fresh = connect(addr).await?;
        echo_once(&mut fresh).await?;
    }
    let after = settled_rss(probe).await?;
    drop(idle);

    let per_conn = (after as f64 - before as f64) / count as f64;
    Ok(if used {
        vec![
            ("idle_used.kib_per_conn", per_conn),
            ("idle_used.rss_before_kib", before as f64),
            ("idle_used.rss_after_kib", after as f64),
        ]
    } else {
        vec![
            ("idle.kib_per_conn", per_conn),
            ("idle.rss_before_kib", before as f64),
            ("idle.rss_after_kib", after as f64),
        ]
    })
}

/// Opens `n` connections at once, each echoing one message first when `echo` is set.
async fn open(addr: SocketAddr, n: usize, echo: bool) -> io::Result<Vec<TcpStream>> {
    let mut tasks = JoinSet::new();
    for _ in 0..n {
        tasks.spawn(async move {
            let mut stream = connect(addr).await?;
            if echo {
                echo_once(&mut stream).await?;
            }
            Ok::<_, io::Error>(stream)
        });
    }
    let mut streams = Vec::with_capacity(n);
    while let Some(joined) = tasks.join_next().await {
        streams.push(joined.map_err(io::Error::other)??);
    }
    Ok(streams)
}

async fn echo_once(stream: &mut TcpStream) -> io::Result<()> {
    let message = [0x3c; 64];
    let mut reply = [0; 64];
    stream.write_all(&message).await?;
    stream.read_exact(&mut reply).await?;
    Ok(())
}

/// The RSS once it stops moving: the last connections' tasks may not have run yet.
pub(crate) async fn settled_rss(probe: &Probe) -> io::Result<u64> {
    let mut last = probe.rss_kib()?;
    let mut same = 0;
    for _ in 0..SETTLE_TRIES {
        tokio::time::sleep(SETTLE_EVERY).await;
        let now = probe.rss_kib()?;
        if now == last {
            same += 1;
            if same == SETTLE_SAME {
                break;
            }
        } else {
            same = 0;
            last = now;
        }
    }
    Ok(last)
}
