//! WebSocket connections through zero-downtime upgrades of `atoll serve`: 16 clients each send
//! a message every 20 ms, without waiting for the echoes, while the server is upgraded five
//! times. Every connection moves to each new process between messages; no message may be
//! lost, reordered or doubled, and no connection may close.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

use common::control::ctl;
use common::process::{Atoll, Reaper};

const CLIENTS: usize = 16;
const EVERY: Duration = Duration::from_millis(20);
const UPGRADES: usize = 5;
/// From one upgrade's start to the next's.
const PERIOD: Duration = Duration::from_millis(1500);
/// The longest an echo may take; a move takes milliseconds.
const ECHO_WAIT: Duration = Duration::from_secs(10);

fn config(dir: &Path) -> std::path::PathBuf {
    let config = dir.join("atoll.toml");
    std::fs::write(
        &config,
        "[app]\nnode = \"t\"\n\n[[listener]]\nname = \"web\"\nkind = \"http\"\n\
         ip = \"127.0.0.1\"\nport = 0\nshutdown_timeout = \"10s\"\n\
         [[listener.handlers]]\nhost = \"_\"\nresources = [\"health\", \"websocket_echo\"]\n",
    )
    .unwrap();
    config
}

/// One client: sends numbered messages every [`EVERY`] until `until`, reads the echoes on a
/// task of its own, and returns how many went out, or what went wrong.
async fn client(
    addr: SocketAddr,
    id: usize,
    until: Instant,
    sent: Arc<AtomicU64>,
) -> Result<u64, String> {
    let tcp = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let url = format!("ws://{addr}/ws");
    let (ws, _) = tokio::time::timeout(ECHO_WAIT, tokio_tungstenite::client_async(url, tcp))
        .await
        .map_err(|_| "handshake timed out".to_owned())?
        .map_err(|e| format!("handshake: {e}"))?;
    let (mut tx, mut rx) = ws.split();
    let reader = tokio::spawn(async move {
        let mut next = 0u64;
        loop {
            let got = tokio::time::timeout(ECHO_WAIT, rx.next()).await;
            match got {
                Err(_) => return Err(format!("no echo of message {next} within {ECHO_WAIT:?}")),
                Ok(Some(Ok(Message::Text(text)))) => {
                    if text.as_str() == "end" {
                        return Ok(next);
                    }
                    let want = format!("client {id} message {next}");
                    if text.as_str() != want {
                        return Err(format!("got {text:?}, wanted {want:?}"));
                    }
                    next += 1;
                }
                Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => {}
                Ok(Some(Ok(other))) => return Err(format!("after {next} echoes: {other:?}")),
                Ok(Some(Err(e))) => return Err(format!("after {next} echoes: {e}")),
                Ok(None) => return Err(format!("closed after {next} echoes")),
            }
        }
    });
    let mut n = 0u64;
    let mut tick = tokio::time::interval(EVERY);
    while Instant::now() < until {
        tick.tick().await;
        let message = Message::text(format!("client {id} message {n}"));
        if let Err(e) = tx.send(message).await {
            reader.abort();
            return Err(format!("send {n}: {e}"));
        }
        n += 1;
        sent.fetch_add(1, Ordering::Relaxed);
    }
    tx.send(Message::text("end"))
        .await
        .map_err(|e| format!("send end: {e}"))?;
    let echoed = reader.await.map_err(|e| e.to_string())??;
    if echoed != n {
        return Err(format!("sent {n}, {echoed} echoed"));
    }
    Ok(n)
}

#[test]
fn websocket_connections_ride_five_upgrades_without_a_message_lost_or_a_close() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path());
    let reaper = Reaper::default();
    let atoll = Atoll::serve(&config);
    reaper.add(atoll.pid());
    let addr = atoll.listening(1)[0].2;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let sent = Arc::new(AtomicU64::new(0));
    // The clients run through every upgrade, and one period after the last.
    let until = Instant::now() + PERIOD * (UPGRADES as u32 + 1);
    let clients: Vec<_> = (0..CLIENTS)
        .map(|id| runtime.spawn(client(addr, id, until, sent.clone())))
        .collect();
    let bin = env!("CARGO_BIN_EXE_atoll");
    let mut pid = atoll.pid();
    for i in 0..UPGRADES {
        std::thread::sleep(PERIOD);
        let before = sent.load(Ordering::Relaxed);
        let answer = ctl(&config, &["upgrade", "--path", bin, "--json"]).json();
        assert_eq!(answer["old_pid"], pid, "upgrade {i}: {answer}");
        pid = answer["pid"].as_u64().unwrap_or_else(|| panic!("{answer}")) as u32;
        reaper.add(pid);
        eprintln!("upgrade {i}: new pid {pid}, {before} messages sent so far");
    }
    let results: Vec<Result<u64, String>> = runtime.block_on(async {
        let mut results = Vec::new();
        for c in clients {
            results.push(c.await.unwrap_or_else(|e| Err(e.to_string())));
        }
        results
    });
    let failed: Vec<String> = results
        .iter()
        .enumerate()
        .filter_map(|(id, r)| r.as_ref().err().map(|e| format!("client {id}: {e}")))
        .collect();
    assert!(failed.is_empty(), "{failed:#?}");
    let total: u64 = results.iter().map(|r| *r.as_ref().unwrap()).sum();
    eprintln!("{CLIENTS} clients, {UPGRADES} upgrades: {total} messages, every one echoed");
    // Each client sent for the whole run: about one message per 20 ms.
    let least = results.iter().map(|r| *r.as_ref().unwrap()).min().unwrap();
    assert!(least > 100, "a client sent only {least} messages");
    // The last process serves alone; the first ones have gone.
    let status = ctl(&config, &["status", "--json"]).json();
    assert_eq!(status["pid"], pid, "{status}");
}
