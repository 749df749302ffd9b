//! The resources the `atoll` binary ships: a health check, the list of running listeners
//! with their uptime, and a WebSocket echo.

use http::{Method, StatusCode};
use serde::Serialize;

use super::reply::{Data, Reply};
use super::request::Request;
use super::resource::Resource;
use super::websocket::{close_code, WebSocketHandler, WsAction, WsConn};
use crate::registry::{ListenerInfo, Registry, Uptime};

/// `GET /health` (or another path): `{"status": "ok", "version": ...}`.
#[derive(Debug, Clone)]
pub struct Health {
    path: String,
    version: String,
}

impl Health {
    /// Answers on `path` with `version` (the crate version, say).
    pub fn new(path: impl Into<String>, version: impl Into<String>) -> Health {
        Health {
            path: path.into(),
            version: version.into(),
        }
    }
}

impl Default for Health {
    /// `/health`, with atoll's version.
    fn default() -> Health {
        Health::new("/health", env!("CARGO_PKG_VERSION"))
    }
}

#[derive(Serialize)]
struct Status<'a> {
    status: &'static str,
    version: &'a str,
}

impl Resource for Health {
    fn routes(&self) -> Vec<String> {
        vec![self.path.clone()]
    }

    fn methods(&self) -> &[Method] {
        &[Method::GET]
    }

    async fn get(&self, _req: &mut Request) -> Reply {
        let body = serde_json::to_vec(&Status {
            status: "ok",
            version: &self.version,
        });
        match body {
            Ok(b) => Reply::bytes(b).header("content-type", "application/json"),
            Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into(),
        }
    }
}

/// `GET /listeners` lists the registry's running listeners; `GET /listeners/:name` shows one
/// (404 when it is not running): name, kind, address, uptime and open connections.
#[derive(Debug, Clone)]
pub struct Listeners {
    registry: Registry,
    prefix: String,
}

impl Listeners {
    /// Lists the listeners of `registry` under `/listeners`.
    pub fn new(registry: Registry) -> Listeners {
        Listeners {
            registry,
            prefix: "/listeners".to_owned(),
        }
    }

    /// Answers under `prefix` instead. Default is `/listeners`.
    pub fn at(mut self, prefix: impl Into<String>) -> Listeners {
        self.prefix = prefix.into();
        self
    }
}

/// One listener, as the resource shows it.
#[derive(Debug, Serialize)]
struct Shown {
    name: String,
    kind: String,
    addr: String,
    /// Uptime in seconds.
    uptime_secs: f64,
    /// Uptime as leptus shows it: days, then hours:minutes:seconds.
    uptime: String,
    /// The same as a value: `{"days", "hours", "minutes", "seconds", "total_secs"}`, as
    /// `Registry::uptime` and `atoll uptime --json` give it.
    uptime_dhms: Uptime,
    connections: usize,
}

impl From<ListenerInfo> for Shown {
    fn from(l: ListenerInfo) -> Shown {
        let up = Uptime::from(l.uptime);
        Shown {
            uptime: up.to_string(),
            uptime_dhms: up,
            uptime_secs: l.uptime.as_secs_f64(),
            addr: l.addr.to_string(),
            name: l.name,
            kind: l.kind,
            connections: l.connections,
        }
    }
}

impl Resource for Listeners {
    fn prefix(&self) -> &str {
        &self.prefix
    }

    fn routes(&self) -> Vec<String> {
        vec!["/".to_owned(), "/:name".to_owned()]
    }

    fn methods(&self) -> &[Method] {
        &[Method::GET]
    }

    async fn get(&self, req: &mut Request) -> Reply {
        let all = self.registry.list();
        match req.binding("name") {
            None => Data(all.into_iter().map(Shown::from).collect::<Vec<_>>()).into(),
            Some(name) => match all.into_iter().find(|l| l.name == name) {
                Some(l) => Data(Shown::from(l)).into(),
                None => (StatusCode::NOT_FOUND, format!("no listener `{name}`\n")).into(),
            },
        }
    }
}

/// The `websocket_echo` catalogue entry's handler: sends every text and binary message back
/// as it came, and moves to the new process at a zero-downtime upgrade (it keeps no state).
/// Mount it with [`WebSocket::new`](super::websocket::WebSocket::new).
#[derive(Debug, Clone, Copy, Default)]
pub struct WebSocketEcho;

impl WebSocketHandler for WebSocketEcho {
    async fn handle_text(&mut self, text: &str, ws: &mut WsConn<'_>) -> WsAction {
        // The same bytes back, not a copy.
        let message = ws.received().unwrap_or_else(|| text.into());
        echoed(ws.send(message).await)
    }

    async fn handle_binary(&mut self, data: &[u8], ws: &mut WsConn<'_>) -> WsAction {
        let message = ws.received().unwrap_or_else(|| data.into());
        echoed(ws.send(message).await)
    }

    /// It keeps nothing between messages: it moves at an upgrade with no state.
    async fn handle_move(&mut self, _ws: &mut WsConn<'_>) -> crate::Move {
        crate::Move::Now(Vec::new())
    }
}

/// A send that failed means the connection is closing already.
fn echoed(sent: crate::Result<()>) -> WsAction {
    match sent {
        Ok(()) => WsAction::Continue,
        Err(_) => WsAction::Close(close_code::GOING_AWAY, String::new()),
    }
}
