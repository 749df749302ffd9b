//! The servers under test, all on 127.0.0.1 and all on a tokio runtime of the same size.
//!
//! Echo (`--protocol echo`, the default):
//!
//! - `atoll`: atoll's [`Echo`] handler.
//! - `tokio`: the plain peer, as tokio's own echo example writes it: an accept loop, one task
//!   per connection with its own 8 KiB buffer, `write_all` back.
//!
//! HTTP (`--protocol http`): `atoll`, `hyper` and `axum`, see [`crate::http_server`].
//!
//! RPC (`--protocol rpc`): `atoll` and `tarpc`, see [`crate::rpc_server`].
//!
//! WebSocket (`--protocol ws`): `atoll` and `tungstenite`, see [`crate::ws_server`].
//!
//! All listen with the options atoll sets by default (`SO_REUSEADDR`, `TCP_NODELAY` on the
//! listening socket, which accepted sockets inherit, backlog 1024), so only the server code
//! differs.

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use atoll::echo::Echo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

use crate::args::Flags;
use crate::{http_server, rpc_server};

/// The peer's read buffer, allocated per connection as in tokio's echo example.
const PEER_BUFFER: usize = 8192;
/// The listen backlog, atoll's default.
const BACKLOG: u32 = 1024;

/// `server [--protocol echo|http|rpc] --impl atoll|tokio|hyper|axum|tarpc --port P [--threads 1]
/// [--acceptors N] [--listen-sockets N]`: prints `ready` once listening and serves until
/// killed. `--acceptors` and `--listen-sockets` apply to echo only.
pub(crate) fn main(args: impl Iterator<Item = String>) -> Result<(), String> {
    let flags = Flags::parse(
        args,
        &[
            "protocol",
            "impl",
            "port",
            "threads",
            "acceptors",
            "listen-sockets",
        ],
    )?;
    let protocol: String = flags.get("protocol", "echo".to_owned())?;
    let implementation: String = flags.required("impl")?;
    let port: u16 = flags.required("port")?;
    let threads: usize = flags.get("threads", 1)?;
    let acceptors: usize = flags.get("acceptors", atoll::DEFAULT_NUM_ACCEPTORS)?;
    let sockets: usize = flags.get("listen-sockets", 1)?;
    if threads == 0 || acceptors == 0 || sockets == 0 {
        return Err("--threads, --acceptors and --listen-sockets must be at least 1".to_owned());
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    match protocol.as_str() {
        "echo" => runtime.block_on(serve_echo(&implementation, addr, acceptors, sockets)),
        "http" => runtime.block_on(http_server::serve(&implementation, addr)),
        "rpc" => runtime.block_on(rpc_server::serve(&implementation, addr)),
        "ws" => runtime.block_on(crate::ws_server::serve(&implementation, addr)),
        other => Err(format!(
            "unknown --protocol `{other}` (echo, http, rpc or ws)"
        )),
    }
}

async fn serve_echo(
    implementation: &str,
    addr: SocketAddr,
    acceptors: usize,
    sockets: usize,
) -> Result<(), String> {
    // Held to the end; atoll documents that dropping it leaves the server running anyway.
    let _atoll = match implementation {
        "atoll" => Some(
            atoll::Server::new(Echo)
                .name("bench")
                .ip(addr.ip())
                .port(addr.port())
                .configure(|o| {
                    o.num_acceptors = acceptors;
                    o.num_listen_sockets = sockets;
                })
                .start()
                .map_err(|e| e.to_string())?,
        ),
        "tokio" => {
            start_peer(addr, acceptors, sockets)
                .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
            None
        }
        other => return Err(format!("unknown --impl `{other}` (atoll or tokio)")),
    };
    println!("ready");
    std::future::pending::<Result<(), String>>().await
}

/// Binds the plain peer's listening sockets and spawns `acceptors` accept loops on each.
fn start_peer(mut addr: SocketAddr, acceptors: usize, sockets: usize) -> io::Result<()> {
    for _ in 0..sockets {
        let listener = Arc::new(listen(addr, sockets > 1)?);
        // Later sockets share the port the first one got, even when port 0 was asked.
        addr = listener.local_addr()?;
        for _ in 0..acceptors {
            tokio::spawn(accept_loop(listener.clone()));
        }
    }
    Ok(())
}

/// A listening socket with atoll's default options; `SO_REUSEPORT` too when `shared`.
pub(crate) fn listen(addr: SocketAddr, shared: bool) -> io::Result<TcpListener> {
    let socket = TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    if shared {
        socket.set_reuseport(true)?;
    }
    socket.set_nodelay(true)?;
    socket.bind(addr)?;
    socket.listen(BACKLOG)
}

async fn accept_loop(listener: Arc<TcpListener>) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(echo(stream));
            }
            Err(e) => {
                // Out of descriptors, most likely: accepting again at once would fail again.
                eprintln!("accept: {e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

async fn echo(mut stream: TcpStream) {
    let mut buf = vec![0; PEER_BUFFER];
    loop {
        let n = match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if stream.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
