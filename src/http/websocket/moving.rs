//! A WebSocket connection moving to another process at a zero-downtime upgrade: what travels
//! with its socket ([`Travel`]), how the old process lets it go between messages
//! ([`leave`]), and how the new one takes it in ([`adopt`]): the request that opened it is
//! routed again, the route's handler rebuilt from the state, and the connection goes on with
//! the bytes the peer had sent that were not read yet. The client sees no close.

use std::io::Write;
use std::sync::Arc;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio_util::either::Either;

use super::conn::{ConnState, Outgoing, WsStream};
use super::handler::close_code;
use crate::error::BoxError;
use crate::handle::ServerHandle;
use crate::http::listener::HttpShared;
use crate::http::router::Found;
use crate::moved::{MoveTo, Moved};
use crate::socket::Socket;

/// What a moved connection's state starts with, so that the new process tells it from an
/// HTTP connection's (whose state is empty). The digit is the format's version.
const MAGIC: &[u8] = b"atoll-ws/1\n";

/// A WebSocket connection's own state, carried in [`Moved::state`].
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct Travel {
    /// The opening request's `Host` and path, routed again in the new process.
    pub(crate) host: String,
    pub(crate) path: String,
    /// The groups it had joined.
    pub(crate) groups: Vec<String>,
    /// The handler's state, from [`handle_move`](super::WebSocketHandler::handle_move).
    pub(crate) state: Vec<u8>,
    /// permessage-deflate was negotiated (it keeps no state between messages).
    pub(crate) deflate: bool,
}

impl Travel {
    fn encode(&self) -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        // A struct of strings and bytes always serializes.
        let _ = rmp_serde::encode::write(&mut out, self);
        out
    }

    /// The travel state of a moved WebSocket connection; `None` for another kind's state.
    pub(crate) fn decode(state: &[u8]) -> Option<Result<Travel, BoxError>> {
        let rest = state.strip_prefix(MAGIC)?;
        Some(rmp_serde::from_slice(rest).map_err(Into::into))
    }
}

/// The request that opened a connection: where it is routed again after a move, and what
/// it negotiated.
#[derive(Debug, Clone)]
pub(crate) struct Opened {
    pub(crate) host: String,
    pub(crate) path: String,
    /// permessage-deflate.
    pub(crate) deflate: bool,
}

/// Lets the connection go to `to`, with the handler's `state`: sends what other tasks queued
/// (senders fail from then on), leaves its groups, flushes, and hands the socket over with
/// the bytes read and not handled. `Err` when that cannot be done: the connection then drains
/// (a queued close, a peer that reads nothing, a socket that is not plain TCP).
pub(crate) async fn leave(
    ws: &mut WsStream,
    conn: &mut ConnState,
    opened: &Opened,
    state: Vec<u8>,
    to: &MoveTo,
) -> Result<(), &'static str> {
    if let Some((_, rx)) = &mut conn.queue {
        rx.close();
    }
    while let Some(Ok(out)) = conn.queue.as_mut().map(|(_, rx)| rx.try_recv()) {
        match out {
            Outgoing::Send(message) => {
                let sent = tokio::time::timeout(conn.send_timeout, ws.send(conn.frame(message)));
                if !matches!(sent.await, Ok(Ok(()))) {
                    return Err("a queued message could not be sent");
                }
            }
            Outgoing::Close(..) => return Err("a close was queued"),
        }
    }
    // A pong tungstenite owes the peer, say.
    if !matches!(
        tokio::time::timeout(conn.send_timeout, ws.flush()).await,
        Ok(Ok(()))
    ) {
        return Err("the peer reads nothing");
    }
    let groups = std::mem::take(&mut conn.joined);
    for group in &groups {
        conn.groups.leave(group, conn.id);
    }
    let gate = ws.get_mut();
    if !matches!(gate.inner, Either::Left(_)) {
        return Err("not a socket of its own");
    }
    // Everything read from the socket and not handled is in the gate.
    let unread = gate.take_unread();
    let Either::Left(socket) = &mut gate.inner else {
        return Err("not a socket of its own");
    };
    let client = socket.conn.slot.client();
    let Some(Ok(tcp)) = socket.take_tcp().map(|tcp| tcp.into_std()) else {
        return Err("not a plain TCP socket");
    };
    let travel = Travel {
        host: opened.host.clone(),
        path: opened.path.clone(),
        groups,
        state,
        deflate: opened.deflate,
    };
    to(Moved {
        tcp,
        unread,
        state: travel.encode(),
        client,
    });
    Ok(())
}

/// A connection that arrived from another process, its handler restored, waiting for its
/// socket in this process's listener.
pub(crate) trait Arrived: Send {
    fn run(
        self: Box<Self>,
        socket: Socket,
        unread: Bytes,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;
}

/// Takes in on `handle` a WebSocket connection another process let go: routes its opening
/// request again on `http`'s current routes, and runs it with the handler that route
/// restores. When that fails (the route is gone, the handler refuses the state, the listener
/// is full), the peer gets close 1001 naming why, and the error says it for the log.
pub(crate) fn adopt(
    handle: &ServerHandle,
    http: &Arc<HttpShared>,
    tcp: std::net::TcpStream,
    unread: Bytes,
    client: Option<std::net::SocketAddr>,
    travel: Travel,
) -> Result<(), String> {
    let arrived = {
        let routes = http.routes.load();
        match routes.find(|| &travel.host, &travel.path) {
            Found::Endpoint(endpoint, ..) => endpoint.resume(travel),
            _ => None,
        }
    };
    let arrived = match arrived {
        Some(Ok(arrived)) => arrived,
        Some(Err(e)) => {
            return Err(going_away(
                &tcp,
                format!("the handler cannot restore the state: {e}"),
            ))
        }
        None => {
            return Err(going_away(
                &tcp,
                "no WebSocket route for it here".to_owned(),
            ))
        }
    };
    tcp.set_nonblocking(true).map_err(|e| e.to_string())?;
    let tcp = tokio::net::TcpStream::from_std(tcp).map_err(|e| e.to_string())?;
    handle.adopt(tcp, client, move |socket| arrived.run(socket, unread))
}

/// Tells the peer of a connection that cannot be taken in that it is going away (1001, with
/// `why` cut to fit), as far as its socket takes it at once; returns `why`.
fn going_away(tcp: &std::net::TcpStream, why: String) -> String {
    let mut cut = why.len().min(123);
    while !why.is_char_boundary(cut) {
        cut -= 1;
    }
    let reason = &why.as_bytes()[..cut];
    let mut frame = vec![0x88, (2 + reason.len()) as u8];
    frame.extend_from_slice(&close_code::GOING_AWAY.to_be_bytes());
    frame.extend_from_slice(reason);
    let _ = (&*tcp).write(&frame);
    why
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;
    use std::time::Duration;

    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;

    use super::*;
    use crate::http::websocket::{Groups, WebSocket, WebSocketHandler, WsAction, WsConn};
    use crate::http::{Handlers, HttpListener};
    use crate::Move;

    /// Numbers the messages of its connection, and carries the count when it moves.
    #[derive(Clone, Default)]
    struct Counter {
        n: u64,
    }

    impl WebSocketHandler for Counter {
        async fn handle_connection(&mut self, ws: &mut WsConn<'_>) -> WsAction {
            ws.join("all");
            WsAction::Continue
        }

        async fn handle_text(&mut self, text: &str, ws: &mut WsConn<'_>) -> WsAction {
            self.n += 1;
            if text == "slow" {
                tokio::time::sleep(Duration::from_millis(400)).await;
            }
            let _ = ws.send(format!("{} {text}", self.n)).await;
            WsAction::Continue
        }

        async fn handle_move(&mut self, _ws: &mut WsConn<'_>) -> Move {
            Move::Now(self.n.to_be_bytes().to_vec())
        }

        fn restore(&self, state: &[u8]) -> Result<Self, BoxError> {
            Ok(Counter {
                n: u64::from_be_bytes(state.try_into()?),
            })
        }
    }

    fn listener(groups: &Groups) -> ServerHandle {
        let route = WebSocket::new("/count", Counter::default()).groups(groups.clone());
        HttpListener::new(Handlers::new().websocket(route))
            .port(0)
            .start()
            .unwrap()
    }

    async fn next_text<S>(ws: &mut S) -> String
    where
        S: futures_util::Stream<Item = tokio_tungstenite::tungstenite::Result<Message>> + Unpin,
    {
        match tokio::time::timeout(Duration::from_secs(10), ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => t.to_string(),
            other => panic!("wanted a text message, got {other:?}"),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_connection_moves_between_messages_with_its_state_groups_and_unread_frames() {
        let (old_groups, new_groups) = (Groups::new(), Groups::new());
        let old = listener(&old_groups);
        let new = listener(&new_groups);
        let addr = old.local_addr().to_string();
        let tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
        let url = format!("ws://{addr}/count");
        let (mut ws, _) = tokio_tungstenite::client_async(url, tcp).await.unwrap();
        ws.send(Message::text("a")).await.unwrap();
        assert_eq!(next_text(&mut ws).await, "1 a");
        assert_eq!(old_groups.len("all"), 1);

        // Three messages in one write: the first keeps its handler busy while the listener
        // stops, so the other two are read and not handled when the connection moves.
        for text in ["slow", "b", "c"] {
            ws.feed(Message::text(text)).await.unwrap();
        }
        ws.flush().await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        let (tx, moved) = mpsc::channel();
        let tx = std::sync::Mutex::new(tx);
        let to_new = new.clone();
        old.move_connections(Arc::new(move |m: Moved| {
            let _ = tx.lock().unwrap().send(m.unread.len());
            let taken = handoff_adopt(&to_new, m);
            assert_eq!(taken, Ok(()));
        }));
        let report = old.stop(Duration::from_secs(10)).await;
        assert_eq!((report.drained, report.forced), (1, 0));
        let unread = moved.recv_timeout(Duration::from_secs(5)).unwrap();
        assert!(unread > 0, "the frames behind `slow` were not carried");

        // The count went on where it was, in the new listener: the client saw no close.
        assert_eq!(next_text(&mut ws).await, "2 slow");
        assert_eq!(next_text(&mut ws).await, "3 b");
        assert_eq!(next_text(&mut ws).await, "4 c");
        assert_eq!(new.connection_count(), 1);
        assert_eq!((old_groups.len("all"), new_groups.len("all")), (0, 1));
        assert_eq!(new_groups.broadcast("all", "to all"), 1);
        assert_eq!(next_text(&mut ws).await, "to all");
        ws.send(Message::text("d")).await.unwrap();
        assert_eq!(next_text(&mut ws).await, "5 d");
        ws.close(None).await.unwrap();
        new.stop(Duration::from_secs(5)).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_connection_the_new_process_cannot_route_hears_1001() {
        let groups = Groups::new();
        let old = listener(&groups);
        // The new process's listener has no WebSocket route.
        let new = HttpListener::new(Handlers::new()).port(0).start().unwrap();
        let addr = old.local_addr().to_string();
        let tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
        let url = format!("ws://{addr}/count");
        let (mut ws, _) = tokio_tungstenite::client_async(url, tcp).await.unwrap();
        let (tx, refused) = mpsc::channel();
        let tx = std::sync::Mutex::new(tx);
        old.move_connections(Arc::new(move |m: Moved| {
            let _ = tx.lock().unwrap().send(handoff_adopt(&new, m));
        }));
        old.stop(Duration::from_secs(10)).await;
        let why = refused
            .recv_timeout(Duration::from_secs(5))
            .unwrap()
            .unwrap_err();
        assert!(why.contains("no WebSocket route"), "{why}");
        match tokio::time::timeout(Duration::from_secs(10), ws.next()).await {
            Ok(Some(Ok(Message::Close(Some(frame))))) => {
                assert_eq!(u16::from(frame.code), 1001);
                assert!(frame.reason.contains("no WebSocket route"), "{frame:?}");
            }
            other => panic!("wanted close 1001, got {other:?}"),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_compressed_connection_moves_and_stays_compressed() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (old, new) = (listener(&Groups::new()), listener(&Groups::new()));
        let mut s = tokio::net::TcpStream::connect(old.local_addr().to_string())
            .await
            .unwrap();
        s.write_all(
            b"GET /count HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
              Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
              Sec-WebSocket-Extensions: permessage-deflate\r\n\r\n",
        )
        .await
        .unwrap();
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            head.push(s.read_u8().await.unwrap());
        }
        assert!(String::from_utf8_lossy(&head).contains("permessage-deflate"));
        let to_new = new.clone();
        old.move_connections(Arc::new(move |m: Moved| {
            assert_eq!(handoff_adopt(&to_new, m), Ok(()));
        }));
        old.stop(Duration::from_secs(10)).await;
        // A compressed text message (RSV1), masked with a zero key, to the new listener.
        let text = "moved and still compressed, ".repeat(20);
        let packed = super::super::deflate::deflate(text.as_bytes()).unwrap();
        let mut frame = vec![0xc1, 0x80 | 126];
        frame.extend_from_slice(&(packed.len() as u16).to_be_bytes());
        frame.extend_from_slice(&[0; 4]);
        frame.extend_from_slice(&packed);
        s.write_all(&frame).await.unwrap();
        let mut h = [0u8; 2];
        s.read_exact(&mut h).await.unwrap();
        assert_eq!(h[0], 0xc1, "the answer is compressed too");
        let len = match h[1] {
            126 => s.read_u16().await.unwrap() as usize,
            n => n as usize,
        };
        let mut payload = vec![0; len];
        s.read_exact(&mut payload).await.unwrap();
        let answer = super::super::deflate::inflate(&payload, 1 << 20).unwrap();
        assert_eq!(answer, format!("1 {text}").as_bytes());
        assert_eq!(new.connection_count(), 1);
    }

    fn handoff_adopt(to: &ServerHandle, m: Moved) -> Result<(), String> {
        crate::http::handoff::adopt(to, m.tcp, m.unread, m.client, &m.state)
    }

    #[test]
    fn travel_state_round_trips_and_other_states_are_not_taken_for_it() {
        let travel = Travel {
            host: "example.com:8080".into(),
            path: "/rooms/7".into(),
            groups: vec!["lobby".into()],
            state: vec![0, 1, 255],
            deflate: true,
        };
        let encoded = travel.encode();
        assert_eq!(Travel::decode(&encoded).unwrap().unwrap(), travel);
        assert!(Travel::decode(b"").is_none());
        assert!(Travel::decode(b"state of another kind").is_none());
        assert!(Travel::decode(&encoded[..encoded.len() - 1])
            .unwrap()
            .is_err());
    }
}
