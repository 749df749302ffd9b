//! Connections moving between two listeners (as they do between two processes at an
//! upgrade): a handler that carries its state, one that will not move and drains, and the
//! default drain that answers what the peer already sent before it closes.

mod common;

use std::sync::Arc;
use std::time::Duration;

use atoll::{
    Action, BoxError, Handler, Move, MoveTo, Moved, Server, ServerHandle, Socket, TlsOptions,
};
use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Notify;

/// Numbers the lines it is sent (`3\n` for the third), says `more\n` when a line is left
/// incomplete, and moves between lines only, carrying its count.
#[derive(Clone, Default)]
struct Lines {
    count: u64,
    partial: Vec<u8>,
    /// Told each time the handler is asked to move.
    asked: Arc<Notify>,
}

impl Handler for Lines {
    async fn handle_data(&mut self, data: &[u8], socket: &mut Socket) -> Action {
        self.partial.extend_from_slice(data);
        let mut reply = Vec::new();
        while let Some(end) = self.partial.iter().position(|&b| b == b'\n') {
            self.partial.drain(..=end);
            self.count += 1;
            reply.extend_from_slice(format!("{}\n", self.count).as_bytes());
        }
        if !self.partial.is_empty() {
            reply.extend_from_slice(b"more\n");
        }
        match socket.send(&reply).await {
            Ok(()) => Action::Continue,
            Err(e) => Action::Error(e.into()),
        }
    }

    async fn handle_move(&mut self, _socket: &mut Socket) -> Move {
        self.asked.notify_one();
        match self.partial.is_empty() {
            true => Move::Now([&[1u8][..], &self.count.to_be_bytes()].concat()),
            false => Move::Later,
        }
    }

    fn restore(&self, state: &[u8]) -> Result<Self, BoxError> {
        match state {
            [1, count @ ..] => Ok(Lines {
                count: u64::from_be_bytes(count.try_into()?),
                ..self.clone()
            }),
            _ => Err("unknown state".into()),
        }
    }
}

/// Where `from`'s connections go: straight into `to`, as the new process adopts them.
fn into(to: &ServerHandle) -> MoveTo {
    let to = to.clone();
    Arc::new(move |moved: Moved| {
        to.adopt_moved(moved).expect("adopted");
    })
}

/// Reads what the server says until `want` bytes came.
async fn read_text(s: &mut TcpStream, want: usize) -> String {
    let mut buf = vec![0; want];
    within("answer", s.read_exact(&mut buf))
        .await
        .expect("answered");
    String::from_utf8(buf).unwrap()
}

#[tokio::test]
async fn a_handler_moves_between_lines_with_its_count() {
    let asked = Arc::new(Notify::new());
    let handler = Lines {
        asked: asked.clone(),
        ..Lines::default()
    };
    let old = TestServer::start(Server::new(handler.clone()).name("lines"));
    let new = TestServer::start(Server::new(handler).name("lines"));
    old.handle.move_connections(into(&new.handle));

    let mut client = old.connect().await;
    client.write_all(b"a\nb\n").await.unwrap();
    assert_eq!(read_text(&mut client, 4).await, "1\n2\n");
    // Half a line when the stop comes: not now.
    client.write_all(b"c").await.unwrap();
    assert_eq!(read_text(&mut client, 5).await, "more\n");
    let stopping = tokio::spawn({
        let old = old.handle.clone();
        async move { old.stop(WAIT).await }
    });
    within("asked to move", asked.notified()).await;
    assert_eq!(old.handle.connection_count(), 1);
    assert_eq!(new.handle.connection_count(), 0);

    // The line ends: answered here, then the connection moves with its count.
    client.write_all(b"\n").await.unwrap();
    assert_eq!(read_text(&mut client, 2).await, "3\n");
    let report = within("the old listener stops", stopping).await.unwrap();
    assert_eq!((report.drained, report.forced), (1, 0));
    assert_eq!(new.handle.connection_count(), 1);
    assert_eq!(
        new.handle.connections()[0].peer.inet(),
        Some(client.local_addr().unwrap())
    );
    // The same TCP connection goes on in the new listener, counting from where it was.
    client.write_all(b"d\ne\n").await.unwrap();
    assert_eq!(read_text(&mut client, 4).await, "4\n5\n");
}

#[tokio::test]
async fn a_refused_state_closes_the_connection() {
    let old = TestServer::start(Server::new(Lines::default()));
    let new = TestServer::start(Server::new(Lines::default()));
    let mut client = old.connect().await;
    client.write_all(b"a\n").await.unwrap();
    assert_eq!(read_text(&mut client, 2).await, "1\n");
    let tcp = within("take the socket", async {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        old.handle.move_connections(Arc::new(move |moved: Moved| {
            let _ = tx.send(moved);
        }));
        old.handle.stop(WAIT).await;
        rx.recv().await
    })
    .await
    .expect("moved out");
    let e = new
        .handle
        .adopt_moved(Moved {
            state: b"garbage".to_vec(),
            ..tcp
        })
        .unwrap_err();
    assert_eq!(e.kind(), atoll::ErrorKind::Refused);
    assert!(e.to_string().contains("unknown state"), "{e}");
    assert!(closed_by_server(&mut client).await);
    assert_eq!(new.handle.connection_count(), 0);
}

/// Echoes, will not move, and says goodbye when the server stops.
#[derive(Clone, Default)]
struct Stays {
    asked: Arc<Notify>,
}

impl Handler for Stays {
    async fn handle_data(&mut self, data: &[u8], socket: &mut Socket) -> Action {
        match socket.send(data).await {
            Ok(()) => Action::Continue,
            Err(e) => Action::Error(e.into()),
        }
    }

    async fn handle_move(&mut self, _socket: &mut Socket) -> Move {
        self.asked.notify_one();
        Move::Never
    }

    async fn handle_shutdown(&mut self, socket: &mut Socket) -> Action {
        let _ = socket.send(b"BYE\n").await;
        Action::Close
    }
}

#[tokio::test]
async fn a_handler_that_will_not_move_drains_and_is_told() {
    let asked = Arc::new(Notify::new());
    let old = TestServer::start(Server::new(Stays {
        asked: asked.clone(),
    }));
    let new = TestServer::start(Server::new(Stays::default()));
    old.handle.move_connections(into(&new.handle));
    let mut client = old.connect().await;
    assert_eq!(echo_roundtrip(&mut client, b"hi").await, b"hi");

    let report = within("stop", old.handle.stop(WAIT)).await;
    within("asked to move", asked.notified()).await;
    assert_eq!(read_text(&mut client, 4).await, "BYE\n");
    assert!(closed_by_server(&mut client).await);
    assert_eq!((report.drained, report.forced), (1, 0));
    assert_eq!(new.handle.connection_count(), 0);
}

/// Echoes; its first message waits until the server is stopping, so that the next one is
/// unread when the stop comes. Leaves `handle_shutdown` and `handle_move` to their defaults.
#[derive(Clone, Default)]
struct Patient {
    reading: Arc<Notify>,
}

impl Handler for Patient {
    async fn handle_data(&mut self, data: &[u8], socket: &mut Socket) -> Action {
        if data == b"first" {
            self.reading.notify_one();
            socket.stopping().await;
        }
        match socket.send(data).await {
            Ok(()) => Action::Continue,
            Err(e) => Action::Error(e.into()),
        }
    }
}

#[tokio::test]
async fn the_default_drain_answers_what_the_peer_sent_before_it_closes() {
    let reading = Arc::new(Notify::new());
    let server = TestServer::start(Server::new(Patient {
        reading: reading.clone(),
    }));
    let mut client = server.connect().await;
    client.write_all(b"first").await.unwrap();
    within("first read", reading.notified()).await;
    // Unread by the handler, busy with `first`, when the stop comes.
    client.write_all(b"late").await.unwrap();
    let stopping = tokio::spawn({
        let handle = server.handle.clone();
        async move { handle.stop(WAIT).await }
    });
    assert_eq!(read_text(&mut client, 9).await, "firstlate");
    // Then, the peer quiet, the connection closes by itself.
    assert!(closed_by_server(&mut client).await);
    let report = within("stop", stopping).await.unwrap();
    assert_eq!((report.drained, report.forced), (1, 0));
}

#[tokio::test]
async fn tls_connections_drain_instead_of_moving() {
    let pki = Pki::new();
    let asked = Arc::new(Notify::new());
    let tls = TlsOptions::new(&pki.server_cert, &pki.server_key)
        .load()
        .unwrap();
    let old = TestServer::start(
        Server::new(Stays {
            asked: asked.clone(),
        })
        .tls(tls),
    );
    let new = TestServer::start(Server::new(Stays::default()));
    old.handle.move_connections(into(&new.handle));
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let connecting = pki.connector(None, &[]).connect(name, old.connect().await);
    let mut client = within("handshake", connecting).await.unwrap();
    assert_eq!(echo_roundtrip(&mut client, b"hi").await, b"hi");
    let report = within("stop", old.handle.stop(WAIT)).await;
    let mut bye = [0; 4];
    within("goodbye", client.read_exact(&mut bye))
        .await
        .unwrap();
    assert_eq!(&bye, b"BYE\n");
    assert_eq!((report.drained, report.forced), (1, 0));
    // Never asked: the session cannot move.
    assert!(tokio::time::timeout(Duration::ZERO, asked.notified())
        .await
        .is_err());
}
