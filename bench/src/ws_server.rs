//! The two WebSocket servers under test (`--protocol ws`), each echoing every message on
//! `/ws`:
//!
//! - `atoll`: an [`HttpListener`] with the binary's [`WebSocketEcho`] route, every option at
//!   its default.
//! - `tungstenite`: tokio-tungstenite directly, as its echo-server example writes it: an
//!   accept loop, `accept_async` per connection, and each message sent back; with the same
//!   message and frame limits and read buffer as atoll's route, so only the server code
//!   differs.

use std::net::SocketAddr;

use atoll::http::websocket::{WebSocket, DEFAULT_MAX_FRAME_SIZE, DEFAULT_MAX_MESSAGE_SIZE};
use atoll::http::{Handlers, HttpListener, WebSocketEcho};
use futures::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::server::listen;

/// Starts the server `implementation` on `addr`, prints `ready` and serves until killed.
pub(crate) async fn serve(implementation: &str, addr: SocketAddr) -> Result<(), String> {
    let _atoll = match implementation {
        "atoll" => Some(
            HttpListener::new(Handlers::new().websocket(WebSocket::new("/ws", WebSocketEcho)))
                .name("bench")
                .ip(addr.ip())
                .port(addr.port())
                .start()
                .map_err(|e| e.to_string())?,
        ),
        "tungstenite" => {
            let listener =
                listen(addr, false).map_err(|e| format!("cannot listen on {addr}: {e}"))?;
            tokio::spawn(async move {
                while let Ok((stream, _)) = listener.accept().await {
                    tokio::spawn(echo(stream));
                }
            });
            None
        }
        other => return Err(format!("unknown --impl `{other}` (atoll or tungstenite)")),
    };
    println!("ready");
    std::future::pending().await
}

/// One connection of the tokio-tungstenite peer.
async fn echo(stream: TcpStream) {
    let config = WebSocketConfig::default()
        .read_buffer_size(4096)
        .max_message_size(Some(DEFAULT_MAX_MESSAGE_SIZE))
        .max_frame_size(Some(DEFAULT_MAX_FRAME_SIZE));
    let Ok(mut ws) = tokio_tungstenite::accept_async_with_config(stream, Some(config)).await else {
        return;
    };
    while let Some(Ok(message)) = ws.next().await {
        if (message.is_text() || message.is_binary()) && ws.send(message).await.is_err() {
            return;
        }
    }
}
