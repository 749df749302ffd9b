//! [`WebSocket`]: a route that accepts the upgrade (RFC 6455 section 4.2) after its admission
//! checks, with the connection's limits and timers.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Response, StatusCode};
use tungstenite::handshake::derive_accept_key;
use tungstenite::protocol::WebSocketConfig;

use super::deflate::{self, DEFAULT_COMPRESS_MIN_SIZE};
use super::groups::Groups;
use super::handler::WebSocketHandler;
use super::io::Link;
use super::moving::{Arrived, Opened, Travel};
use super::session::{Live, Resumed, Upgrade};
use crate::error::BoxError;
use crate::http::body::Body;
use crate::http::dispatch::{fill, Endpoint, Responding};
use crate::http::host::HostPattern;
use crate::http::path::Bindings;
use crate::http::reply::Reply;
use crate::http::request::Request;
use crate::http::service::status;

/// Default [`WebSocket::max_message_size`]: 1 MiB.
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 1 << 20;
/// Default [`WebSocket::max_frame_size`]: 1 MiB.
pub const DEFAULT_MAX_FRAME_SIZE: usize = 1 << 20;
/// Default [`WebSocket::read_timeout`]: 60 s.
pub const DEFAULT_WS_READ_TIMEOUT: Duration = Duration::from_secs(60);
/// Default [`WebSocket::ping_interval`]: 20 s.
pub const DEFAULT_PING_INTERVAL: Duration = Duration::from_secs(20);
/// Default [`WebSocket::send_queue`]: 64 messages.
pub const DEFAULT_SEND_QUEUE: usize = 64;
/// tungstenite's read buffer: 512 bytes, allocated while the connection lives (its
/// default, 128 KiB, would dominate an idle connection). It holds a small message whole; the
/// socket itself is read 4 KiB at a time, on the stack, by the gate. tungstenite takes at
/// most this much per read, so a big message comes in that many pieces: against 256 bytes,
/// a 64 KiB echo costs 6% fewer instructions, for 0.2 KiB more per idle connection
/// (bench/README.md).
const READ_CHUNK: usize = 512;

/// A WebSocket route: `GET path` with `Upgrade: websocket` becomes a WebSocket connection
/// served by a clone of `handler` (see [`WebSocketHandler`]).
///
/// Before it answers 101, the route checks the request: `GET` (405 otherwise), HTTP/1.1 with
/// `Connection: upgrade` and `Upgrade: websocket` (426 otherwise, naming version 13),
/// `Sec-WebSocket-Version: 13` (426), a `Sec-WebSocket-Key` of 16 bytes (400), the `Origin`
/// when [`origins`](Self::origins) are set (403), then the handler's
/// [`is_authenticated`](WebSocketHandler::is_authenticated) (401) and
/// [`has_permission`](WebSocketHandler::has_permission) (403).
///
/// ```
/// use atoll::http::websocket::{WebSocket, WebSocketHandler, WsAction, WsConn};
/// use atoll::http::Handlers;
///
/// #[derive(Clone)]
/// struct Chat;
///
/// impl WebSocketHandler for Chat {
///     async fn handle_connection(&mut self, ws: &mut WsConn<'_>) -> WsAction {
///         ws.join("lobby");
///         WsAction::Continue
///     }
///
///     async fn handle_text(&mut self, text: &str, ws: &mut WsConn<'_>) -> WsAction {
///         ws.groups().broadcast("lobby", text);
///         WsAction::Continue
///     }
/// }
///
/// let handlers = Handlers::new().websocket(
///     WebSocket::new("/chat", Chat)
///         .origins(["https://chat.example.com"])
///         .max_message_size(64 * 1024),
/// );
/// # let _ = handlers;
/// ```
pub struct WebSocket<H> {
    path: String,
    handler: H,
    pub(crate) opts: Arc<WsOptions>,
}

/// A route's settings, shared by its connections.
#[derive(Debug, Clone)]
pub(crate) struct WsOptions {
    pub(crate) origins: Vec<String>,
    pub(crate) max_message_size: usize,
    pub(crate) max_frame_size: usize,
    pub(crate) read_timeout: Duration,
    pub(crate) ping_interval: Duration,
    pub(crate) send_queue: usize,
    pub(crate) groups: Groups,
    pub(crate) compression: bool,
    pub(crate) compress_min_size: usize,
}

impl WsOptions {
    pub(crate) fn config(&self) -> WebSocketConfig {
        WebSocketConfig::default()
            .read_buffer_size(READ_CHUNK)
            .max_message_size(Some(self.max_message_size))
            .max_frame_size(Some(self.max_frame_size))
    }
}

impl<H: WebSocketHandler> WebSocket<H> {
    /// The route `path` (a path pattern, bindings allowed: `/rooms/:room`), served by clones
    /// of `handler`.
    pub fn new(path: impl Into<String>, handler: H) -> WebSocket<H> {
        WebSocket {
            path: path.into(),
            handler,
            opts: Arc::new(WsOptions {
                origins: Vec::new(),
                max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
                max_frame_size: DEFAULT_MAX_FRAME_SIZE,
                read_timeout: DEFAULT_WS_READ_TIMEOUT,
                ping_interval: DEFAULT_PING_INTERVAL,
                send_queue: DEFAULT_SEND_QUEUE,
                groups: Groups::new(),
                compression: true,
                compress_min_size: DEFAULT_COMPRESS_MIN_SIZE,
            }),
        }
    }

    fn opts(&mut self) -> &mut WsOptions {
        Arc::make_mut(&mut self.opts)
    }

    /// The origins whose pages may open this WebSocket (a browser sends its page's origin in
    /// `Origin`; other clients usually send none). Each entry is a full origin,
    /// `https://app.example.com:8443`, compared exactly, or a host pattern (`example.com`,
    /// `[...].example.com`) matched against the origin's host. A request whose `Origin` is
    /// missing or matches none gets 403. Default is none set: any origin, and none, may
    /// connect (guard the route with
    /// [`is_authenticated`](WebSocketHandler::is_authenticated) then, since a browser sends
    /// its cookies to any page's WebSocket).
    pub fn origins<I, S>(mut self, origins: I) -> WebSocket<H>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.opts().origins = origins.into_iter().map(Into::into).collect();
        self
    }

    /// The largest message, its fragments joined: a bigger one closes the connection with
    /// 1009. Default is [`DEFAULT_MAX_MESSAGE_SIZE`], 1 MiB.
    pub fn max_message_size(mut self, bytes: usize) -> WebSocket<H> {
        self.opts().max_message_size = bytes;
        self
    }

    /// The largest frame payload, checked from the frame's header before its payload is
    /// read: a bigger one closes the connection with 1009. Default is
    /// [`DEFAULT_MAX_FRAME_SIZE`], 1 MiB.
    pub fn max_frame_size(mut self, bytes: usize) -> WebSocket<H> {
        self.opts().max_frame_size = bytes;
        self
    }

    /// How long the connection waits for anything from the peer (a message, a pong)
    /// before [`handle_timeout`](WebSocketHandler::handle_timeout). Also bounds the wait for
    /// the peer's close frame once this side closed. Default is [`DEFAULT_WS_READ_TIMEOUT`],
    /// 60 s.
    pub fn read_timeout(mut self, timeout: Duration) -> WebSocket<H> {
        self.opts().read_timeout = timeout;
        self
    }

    /// How long the peer may be quiet before the connection sends it a keepalive ping (its
    /// pong counts as activity, and keeps proxies from closing the connection as idle).
    /// Default is [`DEFAULT_PING_INTERVAL`], 20 s.
    pub fn ping_interval(mut self, interval: Duration) -> WebSocket<H> {
        self.opts().ping_interval = interval;
        self
    }

    /// How many messages a connection's [`WsSender`](super::WsSender)s and broadcasts may
    /// queue before [`WsSender::send`](super::WsSender::send) waits (and a broadcast skips
    /// the connection). Default is [`DEFAULT_SEND_QUEUE`], 64.
    pub fn send_queue(mut self, messages: usize) -> WebSocket<H> {
        self.opts().send_queue = messages.max(1);
        self
    }

    /// Uses these groups (shared with other routes, or kept by the application to broadcast
    /// from anywhere). Default is a set of this route's own.
    pub fn groups(mut self, groups: Groups) -> WebSocket<H> {
        self.opts().groups = groups;
        self
    }

    /// Whether permessage-deflate (RFC 7692) is taken when the client offers it. Every
    /// message is then compressed on its own (no context kept between messages: see
    /// [`compress_min_size`](Self::compress_min_size) for which go out compressed), and the
    /// client's are inflated up to [`max_message_size`](Self::max_message_size). Default is
    /// `true`.
    pub fn compression(mut self, on: bool) -> WebSocket<H> {
        self.opts().compression = on;
        self
    }

    /// With compression negotiated, the smallest message sent compressed; smaller ones (and
    /// any that would not shrink) go as they are. Default is [`DEFAULT_COMPRESS_MIN_SIZE`],
    /// 256 bytes.
    pub fn compress_min_size(mut self, bytes: usize) -> WebSocket<H> {
        self.opts().compress_min_size = bytes;
        self
    }

    /// The route's groups.
    pub fn group_set(&self) -> &Groups {
        &self.opts.groups
    }

    async fn upgrade(&self, req: &mut Request) -> Response<Body> {
        let h2 = req.parts.version == http::Version::HTTP_2;
        let checked = match h2 {
            true => check_extended_connect(&req.parts),
            false => check_handshake(&req.parts.method, req.parts.version, &req.parts.headers),
        };
        if let Err(code) = checked {
            return match h2 {
                false => refusal(code),
                true => {
                    let mut r = status(code);
                    if code == StatusCode::METHOD_NOT_ALLOWED {
                        let allow = HeaderValue::from_static("CONNECT");
                        r.headers_mut().insert(header::ALLOW, allow);
                    }
                    r
                }
            };
        }
        if !self.opts.origins.is_empty() && !origin_allowed(&self.opts.origins, req.headers()) {
            return status(StatusCode::FORBIDDEN);
        }
        let mut handler = self.handler.clone();
        if let Err(denied) = handler.is_authenticated(req).await {
            let mut reply = denied
                .body
                .unwrap_or_else(|| Reply::new(StatusCode::UNAUTHORIZED))
                .with_status(StatusCode::UNAUTHORIZED);
            if let Ok(v) = HeaderValue::try_from(denied.challenge) {
                reply.headers_mut().insert(header::WWW_AUTHENTICATE, v);
            }
            return reply.into_response(&req.parts.headers);
        }
        if !handler.has_permission(req).await {
            return status(StatusCode::FORBIDDEN);
        }
        let Some(on_upgrade) = req.parts.extensions.remove::<hyper::upgrade::OnUpgrade>() else {
            return refusal(StatusCode::UPGRADE_REQUIRED);
        };
        // HTTP/2 (RFC 8441): 200 opens the stream; there is no key to answer.
        let mut response = match h2 {
            true => status(StatusCode::OK),
            false => {
                let key = req
                    .parts
                    .headers
                    .get(header::SEC_WEBSOCKET_KEY)
                    .map(|k| derive_accept_key(k.as_bytes()))
                    .unwrap_or_default();
                let Ok(accept) = HeaderValue::try_from(key) else {
                    return status(StatusCode::BAD_REQUEST);
                };
                let mut response = status(StatusCode::SWITCHING_PROTOCOLS);
                let h = response.headers_mut();
                h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
                h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
                h.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
                response
            }
        };
        let h = response.headers_mut();
        let deflate = match self.opts.compression {
            true => deflate::negotiate(&req.parts.headers),
            false => None,
        };
        let deflate = match deflate {
            Some(accepted) => {
                h.insert(header::SEC_WEBSOCKET_EXTENSIONS, accepted);
                true
            }
            None => false,
        };
        let opened = Opened {
            host: req
                .parts
                .headers
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .or_else(|| req.parts.uri.authority().map(|a| a.as_str()))
                .unwrap_or_default()
                .to_owned(),
            path: req.parts.uri.path().to_owned(),
            deflate,
        };
        let live = Live {
            on_upgrade,
            handler,
            opts: self.opts.clone(),
            opened,
            stream_of: req.parts.extensions.remove::<Link>(),
        };
        response
            .extensions_mut()
            .insert(Upgrade(Arc::new(Mutex::new(Some(Box::new(live))))));
        response
    }
}

impl<H: WebSocketHandler> Endpoint for WebSocket<H> {
    fn call(self: Arc<Self>, req: Request, spare: Option<Responding>) -> Responding {
        fill(spare, req, move |mut req| async move {
            self.upgrade(&mut req).await
        })
    }

    fn patterns(&self) -> Vec<String> {
        vec![self.path.clone()]
    }

    fn resume(&self, travel: Travel) -> Option<Result<Box<dyn Arrived>, BoxError>> {
        let Travel {
            host,
            path,
            groups,
            state,
            deflate,
        } = travel;
        Some(self.handler.restore(&state).map(|handler| {
            Box::new(Resumed {
                handler,
                opts: self.opts.clone(),
                opened: Opened {
                    host,
                    path,
                    deflate,
                },
                groups,
            }) as Box<dyn Arrived>
        }))
    }
}

impl<H> fmt::Debug for WebSocket<H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebSocket")
            .field("path", &self.path)
            .field("opts", &self.opts)
            .finish()
    }
}

/// Whether a header's comma-separated list holds `token` (case-insensitively).
fn has_token(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers.get_all(name).iter().any(|v| {
        v.to_str()
            .map(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
            .unwrap_or(false)
    })
}

/// RFC 6455 section 4.2.1: what an opening handshake must hold, or the status refusing it.
pub(crate) fn check_handshake(
    method: &Method,
    version: http::Version,
    headers: &HeaderMap,
) -> Result<(), StatusCode> {
    if method != Method::GET {
        return Err(StatusCode::METHOD_NOT_ALLOWED);
    }
    if version != http::Version::HTTP_11
        || !has_token(headers, header::CONNECTION, "upgrade")
        || !has_token(headers, header::UPGRADE, "websocket")
    {
        return Err(StatusCode::UPGRADE_REQUIRED);
    }
    if headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .map(|v| v.as_bytes())
        != Some(b"13")
    {
        return Err(StatusCode::UPGRADE_REQUIRED);
    }
    let key = headers.get(header::SEC_WEBSOCKET_KEY).map(|k| k.as_bytes());
    let decoded = key.and_then(|k| base64::engine::general_purpose::STANDARD.decode(k).ok());
    if decoded.map(|k| k.len()) != Some(16) {
        return Err(StatusCode::BAD_REQUEST);
    }
    Ok(())
}

/// RFC 8441 section 5: what an extended CONNECT opening a WebSocket over HTTP/2 must hold,
/// or the status refusing it.
pub(crate) fn check_extended_connect(parts: &http::request::Parts) -> Result<(), StatusCode> {
    if parts.method != Method::CONNECT {
        return Err(StatusCode::METHOD_NOT_ALLOWED);
    }
    let protocol = parts.extensions.get::<hyper::ext::Protocol>();
    if protocol.map(|p| p.as_str()) != Some("websocket") {
        return Err(StatusCode::BAD_REQUEST);
    }
    if parts
        .headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .map(|v| v.as_bytes())
        != Some(b"13")
    {
        return Err(StatusCode::UPGRADE_REQUIRED);
    }
    Ok(())
}

/// A refused handshake: 405 names `GET`, 426 the protocol and version to use.
fn refusal(code: StatusCode) -> Response<Body> {
    let mut r = status(code);
    let h = r.headers_mut();
    match code {
        StatusCode::METHOD_NOT_ALLOWED => {
            h.insert(header::ALLOW, HeaderValue::from_static("GET"));
        }
        StatusCode::UPGRADE_REQUIRED => {
            h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
            h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
            h.insert(
                header::SEC_WEBSOCKET_VERSION,
                HeaderValue::from_static("13"),
            );
        }
        _ => {}
    }
    r
}

/// Whether the request's `Origin` matches one of `allowed` (see [`WebSocket::origins`]).
fn origin_allowed(allowed: &[String], headers: &HeaderMap) -> bool {
    let Some(text) = headers.get(header::ORIGIN).and_then(|o| o.to_str().ok()) else {
        return false;
    };
    let host = text.split_once("://").map_or(text, |(_, rest)| rest);
    let host = host.rsplit_once(':').map_or(host, |(h, _)| h);
    allowed.iter().any(|pattern| {
        if pattern.contains("://") {
            pattern.eq_ignore_ascii_case(text)
        } else {
            HostPattern::parse(pattern)
                .map(|p| p.matches(host, &mut Bindings::default()))
                .unwrap_or(false)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    const GOOD: &[(&str, &str)] = &[
        ("connection", "keep-alive, Upgrade"),
        ("upgrade", "WebSocket"),
        ("sec-websocket-version", "13"),
        ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
    ];

    #[test]
    fn handshake_rules() {
        let v11 = http::Version::HTTP_11;
        assert_eq!(check_handshake(&Method::GET, v11, &headers(GOOD)), Ok(()));
        assert_eq!(
            check_handshake(&Method::POST, v11, &headers(GOOD)),
            Err(StatusCode::METHOD_NOT_ALLOWED)
        );
        assert_eq!(
            check_handshake(&Method::GET, http::Version::HTTP_10, &headers(GOOD)),
            Err(StatusCode::UPGRADE_REQUIRED)
        );
        assert_eq!(
            check_handshake(&Method::GET, v11, &headers(&GOOD[1..])),
            Err(StatusCode::UPGRADE_REQUIRED)
        );
        let mut old = GOOD.to_vec();
        old[2] = ("sec-websocket-version", "8");
        assert_eq!(
            check_handshake(&Method::GET, v11, &headers(&old)),
            Err(StatusCode::UPGRADE_REQUIRED)
        );
        let mut short = GOOD.to_vec();
        short[3] = ("sec-websocket-key", "c2hvcnQ=");
        assert_eq!(
            check_handshake(&Method::GET, v11, &headers(&short)),
            Err(StatusCode::BAD_REQUEST)
        );
        // RFC 6455's own example.
        assert_eq!(
            derive_accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn origins() {
        let allowed = vec![
            "https://app.example.com".to_owned(),
            "[...].test.org".to_owned(),
        ];
        let with = |o: &str| headers(&[("origin", o)]);
        assert!(origin_allowed(&allowed, &with("https://app.example.com")));
        assert!(!origin_allowed(&allowed, &with("http://app.example.com")));
        assert!(origin_allowed(&allowed, &with("http://a.b.test.org:8080")));
        assert!(!origin_allowed(&allowed, &with("https://evil.example")));
        assert!(!origin_allowed(&allowed, &HeaderMap::new()));
    }
}
