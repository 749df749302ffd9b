//! A mounted axum router's own WebSocket route, through an atoll HTTP listener: axum's
//! `WebSocketUpgrade` needs hyper's upgrade of the connection, which atoll serves with. Driven
//! by tokio-tungstenite's client over a real socket.

mod common;

use atoll::http::{Handlers, Health, HttpListener};
use axum::extract::ws::{Message as AxumMessage, WebSocket, WebSocketUpgrade};
use common::http::HttpTest;
use common::within;
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{client_async, WebSocketStream};

/// How axum's handler saw its connection end: the close frame's code and reason, or `None`
/// when the stream ended without one.
type Ended = Option<(u16, String)>;

/// Echoes every text and binary message until the client closes; tells `ended` how it ended.
/// It reads on after the close frame, as axum's examples do: that read sends tungstenite's
/// queued answer to it, then sees the end of the stream.
async fn echo(mut socket: WebSocket, ended: mpsc::UnboundedSender<Ended>) {
    let mut close = None;
    while let Some(Ok(msg)) = socket.recv().await {
        match msg {
            AxumMessage::Text(_) | AxumMessage::Binary(_) => {
                if socket.send(msg).await.is_err() {
                    break;
                }
            }
            AxumMessage::Close(frame) => {
                close = frame.map(|f| (f.code, f.reason.to_string()));
            }
            AxumMessage::Ping(_) | AxumMessage::Pong(_) => {}
        }
    }
    let _ = ended.send(close);
}

#[tokio::test]
async fn a_mounted_axum_routers_websocket_route_echoes_and_closes_through_atoll() {
    let (ended_tx, mut ended) = mpsc::unbounded_channel();
    let router = axum::Router::new().route(
        "/axum-ws",
        axum::routing::get(move |upgrade: WebSocketUpgrade| {
            let ended = ended_tx.clone();
            async move { upgrade.on_upgrade(move |socket| echo(socket, ended)) }
        }),
    );
    // atoll's own resource beside the mounted router, as an application would have it.
    let handlers = Handlers::new()
        .host("_")
        .resource(Health::default())
        .service(router);
    let t = HttpTest::start(HttpListener::new(handlers));
    let addr = t.addr();

    let tcp = within("connect", TcpStream::connect(addr)).await.unwrap();
    let (mut c, response) = within(
        "the handshake",
        client_async(format!("ws://{addr}/axum-ws"), tcp),
    )
    .await
    .unwrap_or_else(|e| panic!("axum's route through atoll refused the WebSocket: {e}"));
    assert_eq!(response.status(), 101);

    for i in 0..5 {
        let text = format!("message {i} through atoll to axum");
        within("a send", c.send(Message::text(text.clone())))
            .await
            .unwrap();
        assert_eq!(next(&mut c).await, Message::text(text));
    }
    let bytes = vec![0u8, 1, 2, 254, 255];
    within("a send", c.send(Message::binary(bytes.clone())))
        .await
        .unwrap();
    assert_eq!(next(&mut c).await, Message::binary(bytes));

    // The closing handshake: the client's close frame reaches axum's handler, axum answers it
    // with the same code, and the server ends the connection.
    within(
        "sending the close",
        c.send(Message::Close(Some(CloseFrame {
            code: CloseCode::Normal,
            reason: "done".into(),
        }))),
    )
    .await
    .unwrap();
    match next(&mut c).await {
        Message::Close(Some(CloseFrame { code, .. })) => assert_eq!(code, CloseCode::Normal),
        other => panic!("expected axum's close frame, got {other:?}"),
    }
    let end = within("the end of the connection", c.next()).await;
    assert!(end.is_none(), "after the close handshake: {end:?}");
    assert_eq!(
        within("axum's handler to end", ended.recv()).await,
        Some(Some((1000, "done".to_owned()))),
        "axum's handler saw the client's close frame"
    );

    // The listener goes on serving HTTP on new connections.
    let mut h = t.h1().await;
    assert_eq!(h.get("/health").await.status, 200);
}

async fn next(c: &mut WebSocketStream<TcpStream>) -> Message {
    within("a message", c.next())
        .await
        .expect("a message, not the end of the stream")
        .expect("no error")
}
