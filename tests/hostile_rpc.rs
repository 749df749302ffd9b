//! RPC peers that announce more than they send, send before they say who they are, stop in
//! the middle of a frame, or never read: memory follows what peers actually send and the
//! documented budgets, and every read from a peer has a deadline, on both sides.
//!
//! The memory tests run the `atoll` binary as a child process and read its `/proc` status
//! around a bounded load; they never measure the test process, nor time anything.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use atoll::rpc::kv::{Kv, KvReply, KvRequest, KvService, KvStore};
use atoll::rpc::wire::{self, codes, Decoder, ErrorBody, Frame, Hello, Kind, HEADER_LEN};
use atoll::rpc::{Client, Daemon, RpcError};
use bytes::{BufMut, BytesMut};
use common::process::{proc_status, Atoll, Memory};
use common::within;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

const MIB: usize = 1024 * 1024;

// ===== helpers =====

/// Starts `atoll serve` with one plain `rpc` listener and these extra keys.
fn serve_kv(dir: &Path, extra: &str) -> (Atoll, SocketAddr) {
    let path = dir.join("atoll.toml");
    let text = format!(
        "[[listener]]\nname = \"kv\"\nkind = \"rpc\"\nplain = true\nshutdown_timeout = \"1s\"\n\
         {extra}"
    );
    std::fs::write(&path, text).unwrap();
    let atoll = Atoll::serve(&path);
    let addr = atoll.listening(1).remove(0).2;
    (atoll, addr)
}

fn header(kind: Kind, len: u32, id: u64) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[..4].copy_from_slice(&[0xA7, 0x11, wire::WIRE_VERSION, kind as u8]);
    h[4..8].copy_from_slice(&len.to_be_bytes());
    h[8..].copy_from_slice(&id.to_be_bytes());
    h
}

fn hello_frame(identifier: &str) -> BytesMut {
    let mut out = BytesMut::new();
    let hello = Hello {
        identifier: identifier.into(),
        version: "1.0.0".into(),
        features: Vec::new(),
    };
    wire::encode(Kind::Hello, 0, &hello, usize::MAX, &mut out).unwrap();
    out
}

/// The next frame on `s`, or `None` at its end (EOF or reset), within the wait.
async fn next_frame(s: &mut TcpStream, buf: &mut BytesMut) -> Option<Frame> {
    within("a frame or the end", async {
        loop {
            if let Some(f) = Decoder::default().decode(buf).expect("a valid frame") {
                return Some(f);
            }
            match s.read_buf(buf).await {
                Ok(0) | Err(_) => return None,
                Ok(_) => {}
            }
        }
    })
    .await
}

/// Reads an error frame with id 0 and this code, then the end of the connection; returns the
/// message.
async fn refused_then_closed(s: &mut TcpStream, code: &str) -> String {
    let mut buf = BytesMut::new();
    let f = next_frame(s, &mut buf).await.expect("an error frame");
    assert_eq!((f.kind, f.id), (Kind::Error, 0), "{f:?}");
    let body: ErrorBody = wire::decode(&f.payload).unwrap();
    assert_eq!(body.code, code, "{}", body.message);
    assert!(next_frame(s, &mut buf).await.is_none(), "still open");
    body.message
}

async fn connect(addr: SocketAddr) -> TcpStream {
    within("connect", TcpStream::connect(addr))
        .await
        .expect("connect")
}

/// A plain daemon of the key-value service, changed by `change`.
fn kv_daemon(change: impl FnOnce(&mut atoll::rpc::RpcOptions)) -> atoll::rpc::DaemonHandle {
    Daemon::<KvService>::new(KvStore::new())
        .plain()
        .configure_rpc(change)
        .start()
        .expect("daemon starts")
}

fn inet(d: &atoll::rpc::DaemonHandle) -> SocketAddr {
    d.local_addr().inet().unwrap()
}

// ===== announced but unsent =====

#[tokio::test]
async fn headers_announcing_large_frames_reserve_nothing_for_bytes_not_sent() {
    let dir = tempfile::tempdir().unwrap();
    let (atoll, addr) = serve_kv(dir.path(), "");
    let pid = atoll.pid();
    let before = Memory::of(pid);

    // 200 clients say hello, then announce a call of 8 MiB (the maximum frame size) and send
    // nothing more. The header goes with the hello, in one write: once the daemon's hello
    // comes back, it has read the header too.
    let mut held = Vec::new();
    for _ in 0..200 {
        let mut s = connect(addr).await;
        let mut out = hello_frame("atoll.kv");
        out.put_slice(&header(Kind::Call, 8 * MIB as u32, 1));
        s.write_all(&out).await.unwrap();
        let mut buf = BytesMut::new();
        let f = next_frame(&mut s, &mut buf)
            .await
            .expect("the daemon's hello");
        assert_eq!(f.kind, Kind::Hello);
        held.push(s);
    }
    // Before the fix each header reserved its 8 MiB: 1.6 GB of address space, which a
    // `ulimit -v` turns into an abort. The budget here is what the connections really hold.
    before.assert_grew_less(pid, 128 * MIB, 64 * MIB, "200 headers");
    drop(held);
}

// ===== before the hello =====

#[tokio::test]
async fn a_frame_over_the_hello_limit_before_the_hello_is_refused_from_its_header() {
    let daemon = kv_daemon(|o| o.max_hello_size = 1024);
    for kind in [Kind::Hello, Kind::Call] {
        let mut s = connect(inet(&daemon)).await;
        // 1 MiB announced, under the maximum frame size; only the header is sent.
        s.write_all(&header(kind, MIB as u32, 1)).await.unwrap();
        let why = refused_then_closed(&mut s, codes::FRAME_TOO_LARGE).await;
        assert!(
            why.contains("before the hello") && why.contains("max_hello_size"),
            "{why}"
        );
    }
    // A hello within the limit is still fine.
    let client = within("connect", Client::<Kv>::connect(inet(&daemon).to_string()))
        .await
        .expect("connect");
    assert_eq!(
        client.call(&KvRequest::List).await.unwrap(),
        KvReply::Keys(vec![])
    );
    daemon.shutdown().await;
}

#[tokio::test]
async fn a_too_small_hello_limit_is_refused_at_start() {
    let err = Daemon::<KvService>::new(KvStore::new())
        .plain()
        .configure_rpc(|o| o.max_hello_size = 10)
        .start()
        .unwrap_err();
    assert!(err.to_string().contains("max_hello_size 10"), "{err}");
}

// ===== the client's deadlines and limits =====

/// A fake server: accepts one connection, reads the client's hello, and writes `answer`.
async fn fake_server(answer: Vec<u8>) -> (SocketAddr, tokio::task::JoinHandle<TcpStream>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut buf = BytesMut::new();
        let f = next_frame(&mut s, &mut buf)
            .await
            .expect("the client's hello");
        assert_eq!(f.kind, Kind::Hello);
        s.write_all(&answer).await.unwrap();
        s
    });
    (addr, task)
}

#[tokio::test]
async fn a_server_hello_over_the_limit_fails_the_connect_from_its_header() {
    let (addr, server) = fake_server(header(Kind::Hello, 8 * MIB as u32, 0).to_vec()).await;
    let err = within(
        "the connect's failure",
        Client::<Kv>::builder(addr.to_string())
            .connect_timeout(Duration::from_secs(5))
            .connect(),
    )
    .await
    .unwrap_err();
    match &err {
        RpcError::Protocol(m) => assert!(m.contains("max_hello_size"), "{m}"),
        other => panic!("not refused from the header: {other:?}"),
    }
    drop(server);
}

#[tokio::test]
async fn the_client_closes_a_frame_from_the_server_that_stops_arriving() {
    let mut answer = hello_frame("atoll.kv").to_vec();
    // A push that announces 100 bytes and sends 10.
    answer.extend(header(Kind::Push, 100, 0));
    answer.extend([0u8; 10]);
    let (addr, server) = fake_server(answer).await;
    let client = within(
        "connect",
        Client::<Kv>::builder(addr.to_string())
            .frame_timeout(Duration::from_millis(200))
            .reconnect(false)
            .connect(),
    )
    .await
    .expect("connect");
    let mut s = within("the fake server", server).await.unwrap();
    // The client says why, then closes; its keepalive (30 s) plays no part.
    let why = refused_then_closed(&mut s, codes::FRAME_TIMEOUT).await;
    assert!(why.contains("did not complete"), "{why}");
    assert!(matches!(
        client.call(&KvRequest::List).await,
        Err(RpcError::Disconnected)
    ));
}

#[tokio::test]
async fn the_daemon_closes_a_frame_that_stops_arriving() {
    let daemon = kv_daemon(|o| o.frame_timeout = Duration::from_millis(200));
    let mut s = connect(inet(&daemon)).await;
    let mut out = hello_frame("atoll.kv");
    out.put_slice(&header(Kind::Call, 100, 1));
    out.put_slice(&[0x81; 10]);
    s.write_all(&out).await.unwrap();
    let mut buf = BytesMut::new();
    assert_eq!(
        next_frame(&mut s, &mut buf).await.unwrap().kind,
        Kind::Hello
    );
    let f = next_frame(&mut s, &mut buf).await.expect("an error frame");
    let body: ErrorBody = wire::decode(&f.payload).unwrap();
    assert_eq!(
        (f.kind, body.code.as_str()),
        (Kind::Error, codes::FRAME_TIMEOUT)
    );
    assert!(next_frame(&mut s, &mut buf).await.is_none(), "still open");
    daemon.shutdown().await;
}

// ===== pushes to clients that never read =====

#[tokio::test]
async fn clients_that_never_read_share_the_daemon_push_budget() {
    let dir = tempfile::tempdir().unwrap();
    let (atoll, addr) = serve_kv(dir.path(), "max_push_total = 16777216\n");
    let pid = atoll.pid();
    let rss0 = proc_status(pid, "VmRSS");

    // 100 clients say hello and never read again (small receive buffers, so the kernel
    // holds little for them).
    let mut silent = Vec::new();
    for _ in 0..100 {
        let socket = TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        let mut s = within("connect", socket.connect(addr)).await.unwrap();
        s.write_all(&hello_frame("atoll.kv")).await.unwrap();
        let mut buf = BytesMut::new();
        assert_eq!(
            next_frame(&mut s, &mut buf).await.unwrap().kind,
            Kind::Hello
        );
        silent.push(s);
    }
    // Ten puts of 1 MB: each is pushed to the 100 others.
    let writer = within("connect", Client::<Kv>::connect(addr.to_string()))
        .await
        .unwrap();
    for i in 0..10 {
        let put = KvRequest::Put {
            key: format!("k{i}"),
            value: "x".repeat(1_000_000).into(),
        };
        let reply = within("a put", writer.call(&put)).await.unwrap();
        assert!(matches!(reply, KvReply::Stored { .. }), "{reply:?}");
    }
    // The connections take the pushes from their channels on their own tasks: look at the
    // daemon a bounded number of times and keep the highest figure.
    let mut peak = 0;
    for _ in 0..20 {
        peak = peak.max(proc_status(pid, "VmRSS"));
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    // Before the budget, each silent client held up to its own 8 MiB backlog: 800 MB here.
    assert!(
        peak.saturating_sub(rss0) < 128 * MIB,
        "VmRSS grew by {} MiB",
        (peak - rss0) / MIB
    );
    drop(silent);
}

// ===== the key-value store's bounds =====

#[tokio::test]
async fn puts_over_the_store_bounds_get_an_error_and_the_connection_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let (_atoll, addr) = serve_kv(
        dir.path(),
        "max_value_size = 10000\nmax_store_size = 30000\n",
    );
    let client = within("connect", Client::<Kv>::connect(addr.to_string()))
        .await
        .unwrap();
    let put = |key: &str, len: usize| KvRequest::Put {
        key: key.into(),
        value: "v".repeat(len).into(),
    };
    let err = client.call(&put("big", 20_000)).await.unwrap_err();
    assert_eq!(err.remote_code(), Some(codes::BAD_REQUEST), "{err}");
    assert!(err.to_string().contains("max_value_size (10000)"), "{err}");
    for key in ["a", "b", "c"] {
        client.call(&put(key, 8_000)).await.expect("within bounds");
    }
    let err = client.call(&put("d", 8_000)).await.unwrap_err();
    assert!(err.to_string().contains("max_store_size (30000)"), "{err}");
    // The connection goes on, and a delete makes room.
    client
        .call(&KvRequest::Delete { key: "a".into() })
        .await
        .unwrap();
    client.call(&put("d", 8_000)).await.expect("room again");
    assert_eq!(
        client.call(&KvRequest::List).await.unwrap(),
        KvReply::Keys(vec!["b".into(), "c".into(), "d".into()])
    );
}
