//! Moving kept-alive HTTP/1 connections from one process to the next at an upgrade. The old
//! process's listener, once stopped with somewhere to move connections
//! ([`ServerHandle::move_connections`]), hands each plain HTTP/1 connection over at its first
//! moment between requests (see [`conn`](super::conn)): its socket, and the bytes hyper read
//! from it but did not parse yet. The new process adopts it into the listener of the same
//! name, which reads those bytes first. The client sees one connection that never closed.
//!
//! TLS and HTTP/2 connections hold protocol state that cannot move; they drain in the old
//! process as before.

use bytes::Bytes;

use super::listener::HttpControl;
use super::websocket::moving::{self, Travel};
use crate::handle::ServerHandle;

/// Whether `handle` is an HTTP listener, whose moved connections [`adopt`] takes.
pub(crate) fn is_http(handle: &ServerHandle) -> bool {
    handle.extension::<HttpControl>().is_some()
}

/// Serves a connection handed over by another process on `handle`, reading `unread` before
/// the socket; `client` is the address its PROXY header gave, if any. `state` is empty for
/// a connection between HTTP requests, and a WebSocket connection's otherwise (see
/// [`moving`](super::websocket::moving)). Refused when `handle` is not a plain HTTP
/// listener, is full or is stopping, or the state is of neither kind; the caller then closes
/// the connection.
pub(crate) fn adopt(
    handle: &ServerHandle,
    tcp: std::net::TcpStream,
    unread: Bytes,
    client: Option<std::net::SocketAddr>,
    state: &[u8],
) -> Result<(), String> {
    let control = handle
        .extension::<HttpControl>()
        .ok_or("it is not an HTTP listener")?;
    if !state.is_empty() {
        return match Travel::decode(state) {
            Some(Ok(travel)) => moving::adopt(handle, &control.http, tcp, unread, client, travel),
            Some(Err(e)) => Err(format!("bad WebSocket state: {e}")),
            None => Err("the state is of no kind an HTTP listener knows".to_owned()),
        };
    }
    tcp.set_nonblocking(true).map_err(|e| e.to_string())?;
    let tcp = tokio::net::TcpStream::from_std(tcp).map_err(|e| e.to_string())?;
    let http = control.http.clone();
    handle.adopt(tcp, client, move |socket| async move {
        let _ = super::conn::serve(http, socket, Some(unread)).await;
    })
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::sync::{mpsc, Arc};
    use std::time::Duration;

    use http::Method;

    use crate::http::{Handlers, HttpListener, Reply, Request, Resource};
    use crate::moved::{MoveTo, Moved};

    struct Hello;

    impl Resource for Hello {
        fn routes(&self) -> Vec<String> {
            vec!["/".into()]
        }
        fn methods(&self) -> &[Method] {
            &[Method::GET]
        }
        async fn get(&self, _req: &mut Request) -> Reply {
            "hello\n".into()
        }
    }

    const BIG: usize = 8 << 20;

    /// Reads one response head from `s`.
    fn head(s: &mut std::net::TcpStream) -> String {
        let mut head = Vec::new();
        let mut byte = [0];
        while !head.ends_with(b"\r\n\r\n") {
            assert_eq!(s.read(&mut byte).unwrap(), 1, "closed after {head:?}");
            head.push(byte[0]);
        }
        String::from_utf8(head).unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_stopping_listener_hands_connections_over_between_requests_only() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("big.bin"), vec![1u8; BIG]).unwrap();
        let root = dir.path().to_owned();
        let web = HttpListener::new(Handlers::new().resource(Hello))
            .port(0)
            .configure_http(|o| o.static_dir = Some(root))
            .start()
            .unwrap();
        let addr = web.local_addr().to_string();
        let wait = Some(Duration::from_secs(10));

        // Between requests.
        let mut idle = std::net::TcpStream::connect(&addr).unwrap();
        idle.set_read_timeout(wait).unwrap();
        idle.write_all(b"GET / HTTP/1.1\r\nhost: t\r\n\r\n")
            .unwrap();
        assert!(head(&mut idle).starts_with("HTTP/1.1 200"));
        let mut hello = [0; 6];
        idle.read_exact(&mut hello).unwrap();
        // In the middle of a download the client is slow to read.
        let mut busy = std::net::TcpStream::connect(&addr).unwrap();
        busy.set_read_timeout(wait).unwrap();
        busy.write_all(b"GET /big.bin HTTP/1.1\r\nhost: t\r\n\r\n")
            .unwrap();
        assert!(head(&mut busy).starts_with("HTTP/1.1 200"));

        let (tx, rx) = mpsc::channel();
        let tx = std::sync::Mutex::new(tx);
        let to: MoveTo = Arc::new(move |moved: Moved| {
            assert!(moved.state.is_empty());
            let _ = tx.lock().unwrap().send((moved.tcp, moved.unread));
        });
        web.move_connections(to);
        let stopping = tokio::spawn({
            let web = web.clone();
            async move { web.stop(Duration::from_secs(20)).await }
        });

        // The idle connection leaves at once, with nothing unread; the socket is the client's.
        let (moved, unread) = rx.recv_timeout(Duration::from_secs(5)).unwrap();
        assert!(unread.is_empty());
        assert_eq!(moved.peer_addr().unwrap(), idle.local_addr().unwrap());
        // The download is not cut: it stays until the client has all of it.
        assert!(rx.recv_timeout(Duration::from_millis(300)).is_err());
        let mut got = 0;
        let mut buf = vec![0; 1 << 16];
        while got < BIG {
            let n = busy.read(&mut buf).unwrap();
            assert!(n > 0, "the download ended after {got} bytes");
            got += n;
        }
        let (moved_busy, unread) = rx.recv_timeout(Duration::from_secs(5)).unwrap();
        assert!(unread.is_empty());
        assert_eq!(moved_busy.peer_addr().unwrap(), busy.local_addr().unwrap());

        // Both stay open: what the clients send next reaches the new owner.
        idle.write_all(b"GET / HTTP/1.1\r\n").unwrap();
        let mut moved = moved;
        moved.set_nonblocking(false).unwrap();
        moved.set_read_timeout(wait).unwrap();
        let mut first = [0; 16];
        moved.read_exact(&mut first).unwrap();
        assert_eq!(&first, b"GET / HTTP/1.1\r\n");
        let report = stopping.await.unwrap();
        assert_eq!((report.drained, report.forced), (2, 0));
    }
}
