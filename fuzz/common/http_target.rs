//! The HTTP listener that the `http_request` fuzz target and `tests/http_fuzz.rs` attack, how
//! one input reaches it, and the checks on what it answers. One file, included by both (with
//! `#[path]`), so the seeded run in `cargo test` and the coverage-guided run test the same
//! thing.
//!
//! The listener is a real one, with every part of the request path a peer can reach: hyper's
//! HTTP/1.1 and h2c (prior knowledge), host matching (literal, bound and wildcard hosts), REST
//! resources with bindings, `[...]` tails, bodies, CORS and basic authentication, a mounted
//! `tower` service that reads its body, a WebSocket route's opening handshake, and static
//! files (at `/` and `/static`) from a folder that holds symbolic links out of itself. It
//! listens twice, on a Unix socket and on loopback TCP, as two listeners with the same
//! handlers: an input that starts with `PRI` goes over TCP, where the listener looks for the
//! HTTP/2 preface (it never does on a Unix socket), everything else over the Unix socket,
//! which is quicker and never loses an answer to a reset (a TCP server that closes with
//! unread bytes sends RST, and the client's kernel may then drop answer bytes not yet read).
//!
//! An input is one control byte and the bytes a client sends. The control byte chooses how the
//! bytes are cut into writes, what happens between writes, and how the client ends; see
//! [`Control`].
#![allow(dead_code, unreachable_pub)]

#[path = "control.rs"]
mod control;
use control::{finish, write_cut};
// Each includer uses some of these.
#[allow(unused_imports)]
pub use control::{run_within, Control, End, Pause, CLOSE_DEADLINE};
#[path = "watch.rs"]
mod watch;
pub use watch::Watch;

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use atoll::http::websocket::{WebSocket, WebSocketHandler, WsAction, WsConn};
use atoll::http::{
    Data, Handlers, HttpListener, Reply, Request, RequestBody, Resource, StaticFiles, Unauthorized,
};
use atoll::telemetry::Event;
use atoll::{Bind, ServerHandle};
use bytes::Bytes;
use http::{Method, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpStream, UnixStream};

/// Bytes that no answer may ever hold: the content of a file outside the served folder,
/// reachable only through its symbolic links.
pub const SECRET: &[u8] = b"OUTSIDE-SECRET-4b1d";

/// The HTTP/2 client preface: an input that starts with it is checked as h2c.
pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// The listener's timeouts: short, so a client that never finishes costs each run little.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub header_read: Duration,
    pub idle: Duration,
}

// ===== the listener =====

/// The running listeners, on a Unix socket in their own temporary folder and on loopback TCP,
/// and what their telemetry saw go wrong.
pub struct Target {
    pub unix: ServerHandle,
    pub tcp: ServerHandle,
    pub socket: PathBuf,
    pub tcp_addr: SocketAddr,
    pub timeouts: Timeouts,
    pub watch: Arc<Watch>,
    _dir: tempfile::TempDir,
}

impl fmt::Debug for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Target")
            .field("socket", &self.socket)
            .finish()
    }
}

impl Target {
    /// Builds the site in a temporary folder and starts the listeners; call it inside a tokio
    /// runtime, which their tasks then run on.
    pub fn start(timeouts: Timeouts) -> Target {
        let dir = tempfile::tempdir().expect("temporary folder");
        let root = build_site(dir.path());
        let socket = dir.path().join("http.sock");
        let watch = Arc::new(Watch::default());
        let seen = watch.clone();
        let handlers = Handlers::new()
            .host("api.example.com")
            .resource(Versioned)
            .host(":sub.example.com")
            .resource(Tenant)
            .host("[...].files.test")
            .files("/", StaticFiles::new(&root).expect("static folder"))
            .host("svc.test")
            .service(tower::service_fn(mounted))
            .host("_")
            .resource(Probe)
            .resource(Items)
            .resource(Echo)
            .websocket(
                WebSocket::new("/ws", Chat)
                    .max_message_size(MAX_BODY)
                    .read_timeout(timeouts.idle)
                    .ping_interval(timeouts.idle / 2),
            )
            .files("/static", StaticFiles::new(&root).expect("static folder"))
            // Not the listener's `static_dir`: it would take every path of `svc.test` before
            // the mounted service could.
            .files("/", StaticFiles::new(&root).expect("static folder"));
        let listener = |bind| {
            HttpListener::new(handlers.clone())
                .name("fuzz")
                .bind(bind)
                .port(0)
                .configure(|o| o.shutdown_timeout = Duration::from_millis(100))
                .configure_http(|h| {
                    h.header_read_timeout = timeouts.header_read;
                    h.idle_timeout = timeouts.idle;
                    h.max_body_size = MAX_BODY;
                })
        };
        let report = move |e: &Event<'_>| seen.observe(e);
        let unix = listener(Bind::Unix(socket.clone()))
            .subscribe(report.clone())
            .start()
            .expect("the fuzz listener starts on a Unix socket");
        let tcp = listener(Bind::Tcp)
            .subscribe(report)
            .start()
            .expect("the fuzz listener starts on TCP");
        let tcp_addr = tcp.local_addr().inet().expect("a TCP listener");
        Target {
            unix,
            tcp,
            socket,
            tcp_addr,
            timeouts,
            watch,
            _dir: dir,
        }
    }

    /// Sends one input on a new connection as `control` says (over TCP when it starts with
    /// `PRI`), and reads everything the server answers until it closes (or until the client
    /// hangs up, for [`End::Drop`]).
    pub async fn exchange(&self, control: Control, bytes: &[u8]) -> Result<Vec<u8>, String> {
        if over_tcp(bytes) {
            let s = TcpStream::connect(self.tcp_addr)
                .await
                .map_err(|e| format!("connect: {e}"))?;
            self.talk(s, control, bytes).await
        } else {
            let s = UnixStream::connect(&self.socket)
                .await
                .map_err(|e| format!("connect: {e}"))?;
            self.talk(s, control, bytes).await
        }
    }

    /// Stops both listeners.
    pub async fn stop(&self) {
        self.unix.stop(Duration::from_millis(100)).await;
        self.tcp.stop(Duration::from_millis(100)).await;
    }

    async fn talk<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        mut s: S,
        control: Control,
        bytes: &[u8],
    ) -> Result<Vec<u8>, String> {
        // A stall goes past the header read timeout, so a request sent in two halves meets it.
        let stall = self.timeouts.header_read + Duration::from_millis(2);
        write_cut(&mut s, control, bytes, stall).await;
        let mut out = Vec::new();
        finish(&mut s, control.end, &mut out).await?;
        Ok(out)
    }

    /// A well-formed request on a new connection: the listener must still answer it 200.
    pub async fn probe(&self) -> Result<(), String> {
        let request = b"GET /probe HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n";
        let control = Control {
            spread: 0,
            pause: Pause::Yield,
            end: End::Stay,
        };
        let answer = self.exchange(control, request).await?;
        if answer.starts_with(b"HTTP/1.1 200 ") && answer.ends_with(PROBE_ANSWER.as_bytes()) {
            Ok(())
        } else {
            Err(format!(
                "the probe was answered {:?}",
                String::from_utf8_lossy(&answer)
            ))
        }
    }
}

/// Whether `input` goes over TCP.
fn over_tcp(input: &[u8]) -> bool {
    input.starts_with(b"PRI")
}

// ===== what the server answers =====

/// Checks what the server sent back for `input`: nothing at all, or HTTP/1 answers that parse
/// one after another (or HTTP/2 frames, when the input began with the preface). No status may
/// be a 5xx: nothing a client sends is the server's fault. No answer may hold [`SECRET`].
/// With `whole`, the bytes must end at an answer's (or frame's) end; an [`End::Drop`] client
/// may have hung up in the middle of one, and over TCP a reset may have cut one short. Returns
/// the HTTP/1 statuses.
pub fn check_answer(input: &[u8], answer: &[u8], whole: bool) -> Result<Vec<u16>, String> {
    let whole = whole && !over_tcp(input);
    if answer.windows(SECRET.len()).any(|w| w == SECRET) {
        return Err("an answer holds the content of a file outside the static folder".into());
    }
    if input.starts_with(PREFACE) {
        check_h2(answer, whole).map(|()| Vec::new())
    } else {
        check_h1(answer, whole)
    }
}

fn check_h1(mut rest: &[u8], whole: bool) -> Result<Vec<u16>, String> {
    let mut statuses = Vec::new();
    while !rest.is_empty() {
        let Some(end) = find(rest, b"\r\n\r\n") else {
            return if whole {
                Err(format!("an answer's head is cut short: {:?}", lossy(rest)))
            } else {
                Ok(statuses)
            };
        };
        let head = &rest[..end];
        rest = &rest[end + 4..];
        let (status, length) = parse_head(head)?;
        statuses.push(status);
        if status == 101 {
            // The connection is a WebSocket now: what follows is frames.
            return Ok(statuses);
        }
        let length = if (100..200).contains(&status) || status == 204 || status == 304 {
            Some(Length::Fixed(0))
        } else {
            length
        };
        match length {
            // Close-delimited: the rest is the body.
            None => rest = &[],
            Some(Length::Fixed(n)) => {
                // An answer to HEAD says the length without sending the body: what follows
                // is then the next answer, or nothing. No body this site sends starts with
                // "HTTP/1.".
                if rest.is_empty() || rest.starts_with(b"HTTP/1.") {
                    continue;
                }
                if rest.len() < n {
                    return if whole {
                        Err(format!("a body is cut short: {} of {n} bytes", rest.len()))
                    } else {
                        Ok(statuses)
                    };
                }
                rest = &rest[n..];
            }
            Some(Length::Chunked) => match skip_chunks(rest)? {
                Some(after) => rest = after,
                None if whole => return Err("a chunked body is cut short".into()),
                None => return Ok(statuses),
            },
        }
    }
    Ok(statuses)
}

enum Length {
    Fixed(usize),
    Chunked,
}

/// Checks a response head and returns its status and body length (`None`: until close).
fn parse_head(head: &[u8]) -> Result<(u16, Option<Length>), String> {
    let text =
        std::str::from_utf8(head).map_err(|_| format!("a head is not text: {:?}", lossy(head)))?;
    let mut lines = text.split("\r\n");
    let line = lines.next().unwrap_or_default();
    let bad_line = || format!("a bad status line: {line:?}");
    let rest = line
        .strip_prefix("HTTP/1.1 ")
        .or_else(|| line.strip_prefix("HTTP/1.0 "))
        .ok_or_else(bad_line)?;
    let code = rest.get(..3).ok_or_else(bad_line)?;
    if !code.bytes().all(|b| b.is_ascii_digit())
        || rest.as_bytes().get(3).is_some_and(|&b| b != b' ')
    {
        return Err(bad_line());
    }
    let status: u16 = code.parse().map_err(|_| bad_line())?;
    if !(100..500).contains(&status) {
        return Err(format!(
            "status {status} in {line:?}: a client's bytes are never a server error"
        ));
    }
    let mut length = None;
    for header in lines {
        let (name, value) = header
            .split_once(':')
            .ok_or_else(|| format!("a header line without a colon: {header:?}"))?;
        let token = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
        if name.is_empty() || !name.bytes().all(token) {
            return Err(format!("a bad header name: {header:?}"));
        }
        if value.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0) {
            return Err(format!("a bad header value: {header:?}"));
        }
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            let n = value
                .parse()
                .map_err(|_| format!("a bad content-length: {header:?}"))?;
            length = Some(Length::Fixed(n));
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            if !value.eq_ignore_ascii_case("chunked") {
                return Err(format!("an unexpected transfer-encoding: {header:?}"));
            }
            length = Some(Length::Chunked);
        }
    }
    Ok((status, length))
}

/// Skips a chunked body; `None` when it is cut short.
fn skip_chunks(mut rest: &[u8]) -> Result<Option<&[u8]>, String> {
    loop {
        let Some(end) = find(rest, b"\r\n") else {
            return Ok(None);
        };
        let size = std::str::from_utf8(&rest[..end])
            .ok()
            .and_then(|s| usize::from_str_radix(s.split(';').next().unwrap_or(""), 16).ok())
            .ok_or_else(|| format!("a bad chunk size line: {:?}", lossy(&rest[..end])))?;
        rest = &rest[end + 2..];
        if size == 0 {
            // No trailers from this site: the empty line ends the body.
            return match rest.strip_prefix(b"\r\n") {
                Some(after) => Ok(Some(after)),
                None if rest.len() < 2 => Ok(None),
                None => Err("a chunked body without its final empty line".into()),
            };
        }
        if rest.len() < size + 2 {
            return Ok(None);
        }
        if &rest[size..size + 2] != b"\r\n" {
            return Err("a chunk not followed by CRLF".into());
        }
        rest = &rest[size + 2..];
    }
}

/// Checks HTTP/2 frames: the server's SETTINGS first, whole frame headers, no frame over the
/// largest size a peer may allow, no GOAWAY or RST_STREAM with INTERNAL_ERROR.
fn check_h2(mut rest: &[u8], whole: bool) -> Result<(), String> {
    let mut first = true;
    while !rest.is_empty() {
        if rest.len() < 9 {
            return if whole {
                Err("an HTTP/2 frame header is cut short".into())
            } else {
                Ok(())
            };
        }
        let len = usize::from(rest[0]) << 16 | usize::from(rest[1]) << 8 | usize::from(rest[2]);
        let kind = rest[3];
        let stream = u32::from_be_bytes([rest[5], rest[6], rest[7], rest[8]]) & 0x7fff_ffff;
        if first && (kind != 4 || stream != 0 || len % 6 != 0) {
            return Err(format!(
                "the first HTTP/2 frame is not the server's SETTINGS: {:?}",
                &rest[..9]
            ));
        }
        first = false;
        if rest.len() < 9 + len {
            return if whole {
                Err("an HTTP/2 frame is cut short".into())
            } else {
                Ok(())
            };
        }
        let payload = &rest[9..9 + len];
        let code = match kind {
            3 if len == 4 => Some(&payload[..4]),
            7 if len >= 8 => Some(&payload[4..8]),
            _ => None,
        };
        if code.is_some_and(|c| c == [0, 0, 0, 2]) {
            return Err(format!(
                "the server sent INTERNAL_ERROR in a frame of type {kind}"
            ));
        }
        rest = &rest[9 + len..];
    }
    Ok(())
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(&b[..b.len().min(300)]).into_owned()
}

// ===== the site =====

/// The largest body a request may have here: small, so inputs reach the 413 easily.
pub const MAX_BODY: usize = 2048;

const PROBE_ANSWER: &str = "probe: alive";

/// Writes the served folder `root` and, beside it, a folder it links out to. Returns `root`.
fn build_site(dir: &Path) -> PathBuf {
    let root = dir.join("root");
    let outside = dir.join("outside");
    let write = |path: PathBuf, content: &[u8]| std::fs::write(path, content).expect("site file");
    std::fs::create_dir_all(root.join("sub/deeper")).expect("site folder");
    std::fs::create_dir_all(&outside).expect("outside folder");
    write(root.join("index.html"), b"<!doctype html><p>index</p>\n");
    write(
        root.join("a.txt"),
        b"file a: 0123456789abcdefghijklmnopqrstuvwxyz\n",
    );
    write(root.join("a.txt.gz"), b"file a, compressed (pretend)\n");
    write(root.join("a.txt.br"), b"file a, brotli (pretend)\n");
    write(root.join("sub/index.html"), b"<p>sub index</p>\n");
    write(root.join("sub/b.json"), b"{\"file\": \"b\"}\n");
    write(root.join("sub/deeper/c.css"), b"body { color: black }\n");
    write(root.join("weird name %2e.txt"), b"file with a weird name\n");
    write(outside.join("secret.txt"), SECRET);
    write(outside.join("index.html"), SECRET);
    std::os::unix::fs::symlink(outside.join("secret.txt"), root.join("escape.txt")).expect("link");
    std::os::unix::fs::symlink(&outside, root.join("escape")).expect("link");
    std::os::unix::fs::symlink("../../outside", root.join("sub/up")).expect("link");
    // A link that stays inside, which may be followed.
    std::os::unix::fs::symlink(root.join("a.txt"), root.join("inside.txt")).expect("link");
    root
}

/// `GET /probe`: the request every run ends with.
struct Probe;

impl Resource for Probe {
    fn routes(&self) -> Vec<String> {
        vec!["/probe".into()]
    }
    fn methods(&self) -> &[Method] {
        &[Method::GET]
    }
    async fn get(&self, _req: &mut Request) -> Reply {
        PROBE_ANSWER.into()
    }
}

/// `/items`: every verb, bindings, a `[...]` tail, query parameters, JSON bodies, basic
/// authentication on DELETE and CORS.
struct Items;

impl Resource for Items {
    fn prefix(&self) -> &str {
        "/items"
    }
    fn routes(&self) -> Vec<String> {
        vec!["/".into(), "/:id".into(), "/:id/files/[...]".into()]
    }
    fn methods(&self) -> &[Method] {
        &[
            Method::GET,
            Method::PUT,
            Method::POST,
            Method::DELETE,
            Method::PATCH,
        ]
    }
    async fn is_authenticated(&self, req: &mut Request) -> Result<(), Unauthorized> {
        if req.method() != Method::DELETE {
            return Ok(());
        }
        match req.basic_auth() {
            Some((user, pass)) if user == "admin" && pass == "secret" => Ok(()),
            _ => Err(Unauthorized::basic("items")),
        }
    }
    fn cross_domains(&self, _req: &Request) -> Vec<String> {
        vec!["https://app.example.com".into(), "[...].example.org".into()]
    }
    async fn get(&self, req: &mut Request) -> Reply {
        let id = req.binding("id").unwrap_or("all").to_owned();
        let page = req.query_param("page");
        Data(serde_json::json!({
            "item": id,
            "rest": req.path_info(),
            "page": page,
        }))
        .into()
    }
    async fn put(&self, req: &mut Request) -> Reply {
        match req.text() {
            Ok(text) => format!("item: stored {} chars", text.chars().count()).into(),
            Err(reply) => reply,
        }
    }
    async fn post(&self, req: &mut Request) -> Reply {
        match req.json::<serde_json::Value>() {
            Ok(value) => (StatusCode::CREATED, Data(value)).into(),
            Err(reply) => reply,
        }
    }
    async fn patch(&self, req: &mut Request) -> Reply {
        format!("item: patched with {} bytes", req.body().len()).into()
    }
    async fn delete(&self, _req: &mut Request) -> Reply {
        StatusCode::NO_CONTENT.into()
    }
}

/// `POST /echo`: the body back.
struct Echo;

impl Resource for Echo {
    fn routes(&self) -> Vec<String> {
        vec!["/echo".into()]
    }
    fn methods(&self) -> &[Method] {
        &[Method::POST]
    }
    async fn post(&self, req: &mut Request) -> Reply {
        let mut body = b"echo: ".to_vec();
        body.extend_from_slice(req.body());
        body.into()
    }
}

/// `/ws`: a WebSocket route that echoes text (its frames are `ws_target.rs`'s to search;
/// here, the opening handshake is).
#[derive(Clone)]
struct Chat;

impl WebSocketHandler for Chat {
    async fn handle_text(&mut self, text: &str, ws: &mut WsConn<'_>) -> WsAction {
        let _ = ws.send(text).await;
        WsAction::Continue
    }
}

/// `api.example.com`'s `/v1/:name`.
struct Versioned;

impl Resource for Versioned {
    fn routes(&self) -> Vec<String> {
        vec!["/v1/:name".into()]
    }
    fn methods(&self) -> &[Method] {
        &[Method::GET]
    }
    async fn get(&self, req: &mut Request) -> Reply {
        format!("api: {}", req.binding("name").unwrap_or_default()).into()
    }
}

/// `:sub.example.com`'s `/`, which answers with the host's binding.
struct Tenant;

impl Resource for Tenant {
    fn routes(&self) -> Vec<String> {
        vec!["/".into(), "/[...]".into()]
    }
    fn methods(&self) -> &[Method] {
        &[Method::GET, Method::POST]
    }
    async fn get(&self, req: &mut Request) -> Reply {
        format!(
            "tenant: {} {}",
            req.binding("sub").unwrap_or_default(),
            req.path_info()
        )
        .into()
    }
    async fn post(&self, req: &mut Request) -> Reply {
        format!("tenant: {} bytes", req.body().len()).into()
    }
}

/// The service mounted on `svc.test`: reads the body (limited by the listener) and says how
/// long it was; a body over the limit is 413 and a broken one 400, as a careful service does.
async fn mounted(
    req: http::Request<RequestBody>,
) -> Result<Response<Full<Bytes>>, std::convert::Infallible> {
    let (parts, body) = req.into_parts();
    let (status, text) = match body.collect().await {
        Ok(body) => (
            StatusCode::OK,
            format!(
                "service: {} {} bytes",
                parts.uri.path(),
                body.to_bytes().len()
            ),
        ),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            (StatusCode::PAYLOAD_TOO_LARGE, "service: too large".into())
        }
        Err(_) => (StatusCode::BAD_REQUEST, "service: broken body".into()),
    };
    let mut response = Response::new(Full::new(Bytes::from(text)));
    *response.status_mut() = status;
    Ok(response)
}
