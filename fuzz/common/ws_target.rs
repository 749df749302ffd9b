//! The WebSocket route that the `websocket_frames` fuzz target and `tests/websocket_fuzz.rs`
//! attack, how one input reaches it, and the checks on what the server sends back. One file,
//! included by both (with `#[path]`), as `http_target.rs` is for HTTP.
//!
//! The route is a real one on a real HTTP listener (over a Unix socket, where a server that
//! closes with unread bytes never resets the connection and so never loses a close frame on
//! its way): an echo, with frame and message limits small enough that a run reaches them
//! (8 KiB and 16 KiB: a frame over 4 KiB is gathered whole before the framing sees it),
//! permessage-deflate both ways when the client offers it, and short read and ping timers.
//!
//! An input is a control byte (the [`Control`] of `control.rs`: how the bytes are cut into
//! writes, the pauses, the end), an options byte (bit 0: the client offers permessage-deflate)
//! and the bytes the client sends after the handshake: frames, well-formed or not.
//!
//! What the server sends must be frames a server may send (RFC 6455): unmasked, no reserved
//! bit but RSV1 on the first frame of a compressed message, known opcodes, control frames whole
//! and at most 125 bytes, fragments in order, text that is UTF-8 once inflated, a close code
//! a server may send with a UTF-8 reason, and nothing after the close frame. The data messages
//! it echoes must be, in order, the first of those the client sent (the checker reads the
//! client's frames too, leniently: it may take a message the server rightly refuses, but then
//! the server echoes nothing from there on), and each pong must answer one of the client's
//! pings.
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
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use atoll::http::websocket::{WebSocket, WebSocketHandler, WsAction, WsConn};
use atoll::http::{Handlers, HttpListener};
use atoll::telemetry::Event;
use atoll::{Bind, ServerHandle};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

/// The route's frame limit: 8 KiB (over the 4 KiB from which a frame is gathered whole).
pub const MAX_FRAME: usize = 8 * 1024;
/// The route's message limit: 16 KiB, whether the message came compressed or not.
pub const MAX_MESSAGE: usize = 16 * 1024;
/// Echoes from 16 bytes on go out compressed when the client offered permessage-deflate.
pub const COMPRESS_FROM: usize = 16;

/// The route's timers: short, so a client that stays costs each run little.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// Nothing heard for this long closes the connection (1000), and once the server has
    /// sent its close frame, it waits this long for the client's.
    pub read: Duration,
    /// A quiet client is pinged this often.
    pub ping: Duration,
}

// ===== the listener =====

/// The running listener, on a Unix socket in its own temporary folder, and what its telemetry
/// saw go wrong ([`Watch`]).
pub struct Target {
    pub handle: ServerHandle,
    pub socket: PathBuf,
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

/// Sends every text and binary message back as it came.
#[derive(Clone)]
struct Echo;

impl WebSocketHandler for Echo {
    async fn handle_text(&mut self, text: &str, ws: &mut WsConn<'_>) -> WsAction {
        let _ = ws.send(text).await;
        WsAction::Continue
    }

    async fn handle_binary(&mut self, data: &[u8], ws: &mut WsConn<'_>) -> WsAction {
        let _ = ws.send(data).await;
        WsAction::Continue
    }
}

impl Target {
    /// Starts the listener in a temporary folder; call it inside a tokio runtime, which its
    /// tasks then run on.
    pub fn start(timeouts: Timeouts) -> Target {
        let dir = tempfile::tempdir().expect("temporary folder");
        let socket = dir.path().join("ws.sock");
        let watch = Arc::new(Watch::default());
        let seen = watch.clone();
        let route = WebSocket::new("/ws", Echo)
            .max_frame_size(MAX_FRAME)
            .max_message_size(MAX_MESSAGE)
            .compress_min_size(COMPRESS_FROM)
            .read_timeout(timeouts.read)
            .ping_interval(timeouts.ping);
        let handle = HttpListener::new(Handlers::new().websocket(route))
            .name("ws-fuzz")
            .bind(Bind::Unix(socket.clone()))
            .configure(|o| o.shutdown_timeout = Duration::from_millis(100))
            .subscribe(move |e: &Event<'_>| seen.observe(e))
            .start()
            .expect("the fuzz listener starts on a Unix socket");
        Target {
            handle,
            socket,
            timeouts,
            watch,
            _dir: dir,
        }
    }

    /// Opens a WebSocket connection (offering permessage-deflate if `deflate`), sends `bytes`
    /// as `control` says, and reads everything the server sends until it closes (or until the
    /// client hangs up, for [`End::Drop`]).
    pub async fn exchange(
        &self,
        control: Control,
        deflate: bool,
        bytes: &[u8],
    ) -> Result<Exchange, String> {
        let mut s = UnixStream::connect(&self.socket)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let (compressed, mut answer) = handshake(&mut s, deflate).await?;
        if compressed != deflate {
            return Err(format!(
                "permessage-deflate offered: {deflate}, taken: {compressed}"
            ));
        }
        // A stall goes past the read timeout: the server gives up on the client halfway.
        let stall = self.timeouts.read + Duration::from_millis(2);
        write_cut(&mut s, control, bytes, stall).await;
        finish(&mut s, control.end, &mut answer).await?;
        Ok(Exchange {
            deflate: compressed,
            answer,
        })
    }

    /// A well-formed exchange on a new connection: a text and a binary message must come back,
    /// then the close handshake.
    pub async fn probe(&self) -> Result<(), String> {
        let mut input = client_frame(0x81, b"probe");
        input.extend(client_frame(0x82, &[0, 1, 2]));
        input.extend(client_frame(0x88, &1000u16.to_be_bytes()));
        let control = Control::from_byte(0);
        let exchange = self.exchange(control, false, &input).await?;
        let seen = check_answer(&input, &exchange, true)?;
        if seen.echoed != 2 || seen.close != Some(1000) {
            return Err(format!("the probe was answered {seen:?}"));
        }
        Ok(())
    }

    /// Stops the listener.
    pub async fn stop(&self) {
        self.handle.stop(Duration::from_millis(100)).await;
    }
}

/// What the server sent for one input.
#[derive(Debug)]
pub struct Exchange {
    /// permessage-deflate was negotiated.
    pub deflate: bool,
    /// The bytes after the handshake's answer.
    pub answer: Vec<u8>,
}

/// The opening handshake; whether permessage-deflate was taken, and any bytes read past the
/// answer's head.
async fn handshake(s: &mut UnixStream, deflate: bool) -> Result<(bool, Vec<u8>), String> {
    let offer = if deflate {
        "sec-websocket-extensions: permessage-deflate; client_max_window_bits\r\n"
    } else {
        ""
    };
    let request = format!(
        "GET /ws HTTP/1.1\r\nhost: localhost\r\nupgrade: websocket\r\nconnection: upgrade\r\n\
         sec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\nsec-websocket-version: 13\r\n{offer}\r\n"
    );
    s.write_all(request.as_bytes())
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    let end = loop {
        if let Some(at) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        let n = tokio::time::timeout(CLOSE_DEADLINE, s.read(&mut buf))
            .await
            .map_err(|_| "no handshake answer".to_owned())?
            .map_err(|e| format!("handshake: {e}"))?;
        if n == 0 {
            return Err(format!(
                "closed during the handshake: {:?}",
                String::from_utf8_lossy(&got)
            ));
        }
        got.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&got[..end]).to_ascii_lowercase();
    if !head.starts_with("http/1.1 101 ") {
        return Err(format!("the handshake was answered {head:?}"));
    }
    Ok((head.contains("permessage-deflate"), got[end..].to_vec()))
}

/// A masked client frame with `first` as its first byte (FIN, RSV and opcode).
pub fn client_frame(first: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![first];
    match payload.len() {
        n if n < 126 => f.push(0x80 | n as u8),
        n if n <= 0xffff => {
            f.push(0x80 | 126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            f.push(0x80 | 127);
            f.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    f.extend(masked(payload));
    f
}

/// A mask key and `payload` masked with it, as they follow a masked frame's length.
pub fn masked(payload: &[u8]) -> Vec<u8> {
    let key = [0x37, 0xfa, 0x21, 0x3d];
    let mut out = key.to_vec();
    out.extend(payload.iter().zip(key.iter().cycle()).map(|(b, k)| b ^ k));
    out
}

/// `payload` compressed as permessage-deflate sends it: raw deflate, the final empty block's
/// four bytes off.
pub fn deflated(payload: &[u8]) -> Vec<u8> {
    use std::io::Write as _;
    let mut z = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::fast());
    z.write_all(payload).expect("deflate");
    let mut out = z.flush_finish().expect("deflate");
    if out.ends_with(&[0, 0, 0xff, 0xff]) {
        out.truncate(out.len() - 4);
    }
    out
}

// ===== what the server sends =====

/// A data message, as sent or echoed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub text: bool,
    pub payload: Vec<u8>,
}

/// What the checks found in the server's answer.
#[derive(Debug, Default)]
pub struct Seen {
    /// How many of the client's messages came back.
    pub echoed: usize,
    /// The code of the server's close frame (1005 for one without a code).
    pub close: Option<u16>,
    /// The client's own messages, as the checker read them.
    pub sent: usize,
}

/// One frame of the server's, or `None` once `bytes` hold no whole frame.
struct Frame<'a> {
    first: u8,
    payload: &'a [u8],
}

fn server_frame(bytes: &[u8]) -> Result<Option<(Frame<'_>, usize)>, String> {
    if bytes.len() < 2 {
        return Ok(None);
    }
    if bytes[1] & 0x80 != 0 {
        return Err("a masked frame from the server".into());
    }
    let (len, at) = match bytes[1] & 0x7f {
        126 if bytes.len() >= 4 => (u64::from(u16::from_be_bytes([bytes[2], bytes[3]])), 4),
        127 if bytes.len() >= 10 => (
            u64::from_be_bytes(bytes[2..10].try_into().expect("8 bytes")),
            10,
        ),
        126 | 127 => return Ok(None),
        n => (u64::from(n), 2),
    };
    let Ok(len) = usize::try_from(len) else {
        return Err(format!("a frame of {len} bytes"));
    };
    if len > MAX_MESSAGE * 2 {
        return Err(format!(
            "a frame of {len} bytes from an echo of at most {MAX_MESSAGE}"
        ));
    }
    if bytes.len() < at + len {
        return Ok(None);
    }
    let frame = Frame {
        first: bytes[0],
        payload: &bytes[at..at + len],
    };
    Ok(Some((frame, at + len)))
}

/// Checks what the server sent back for `input` (see the module docs). With `whole`, the
/// answer must end at a frame's end: an [`End::Drop`] client may have hung up in the middle
/// of one.
pub fn check_answer(input: &[u8], exchange: &Exchange, whole: bool) -> Result<Seen, String> {
    let sent = client_messages(input, exchange.deflate);
    let mut seen = Seen {
        sent: sent.messages.len(),
        ..Seen::default()
    };
    let mut rest = &exchange.answer[..];
    // A data message under way: whether text, compressed, and its payload so far.
    let mut message: Option<(bool, bool, Vec<u8>)> = None;
    while !rest.is_empty() {
        if seen.close.is_some() {
            return Err(format!("{} bytes after the close frame", rest.len()));
        }
        let Some((frame, size)) = server_frame(rest)? else {
            if whole {
                return Err(format!("a frame cut short: {} bytes", rest.len()));
            }
            break;
        };
        rest = &rest[size..];
        let (fin, rsv, opcode) = (
            frame.first & 0x80 != 0,
            frame.first & 0x70,
            frame.first & 0x0f,
        );
        let compressed = rsv == 0x40 && exchange.deflate && message.is_none() && opcode < 8;
        if rsv != 0 && !compressed {
            return Err(format!(
                "reserved bits {rsv:#04x} on a frame of opcode {opcode}"
            ));
        }
        match opcode {
            0..=2 => {
                let mut m = match (opcode, message.take()) {
                    (0, Some(m)) => m,
                    (0, None) => return Err("a continuation frame outside a message".into()),
                    (_, Some(_)) => return Err("a message inside a message".into()),
                    (_, None) => (opcode == 1, compressed, Vec::new()),
                };
                m.2.extend_from_slice(frame.payload);
                if !fin {
                    message = Some(m);
                    continue;
                }
                let (text, compressed, payload) = m;
                let payload = if compressed {
                    inflate(&payload).map_err(|e| format!("an echo does not inflate: {e}"))?
                } else {
                    payload
                };
                if text && std::str::from_utf8(&payload).is_err() {
                    return Err("a text message that is not UTF-8".into());
                }
                let echo = Message { text, payload };
                match sent.messages.get(seen.echoed) {
                    Some(m) if *m == echo => seen.echoed += 1,
                    expected => {
                        return Err(format!(
                            "echo {} is {} ({} bytes), the client's message there {}",
                            seen.echoed + 1,
                            describe(&echo),
                            echo.payload.len(),
                            expected.map_or("is none".to_owned(), |m| format!(
                                "is {} ({} bytes)",
                                describe(m),
                                m.payload.len()
                            ))
                        ))
                    }
                }
            }
            8..=10 => {
                if !fin || frame.payload.len() > 125 {
                    return Err(format!(
                        "a control frame of {} bytes, fin {fin}",
                        frame.payload.len()
                    ));
                }
                match opcode {
                    8 => seen.close = Some(close_code(frame.payload)?),
                    10 if !sent.pings.iter().any(|p| p == frame.payload) => {
                        return Err(format!("a pong for no ping: {:?}", frame.payload))
                    }
                    _ => {}
                }
            }
            _ => return Err(format!("opcode {opcode}")),
        }
    }
    if whole && message.is_some() {
        return Err("a message's last frame never came".into());
    }
    Ok(seen)
}

fn describe(m: &Message) -> String {
    let shown = &m.payload[..m.payload.len().min(40)];
    format!(
        "{} b\"{}\"",
        if m.text { "text" } else { "binary" },
        shown.escape_ascii()
    )
}

/// The code of a server's close frame, checked: none (1005), or one a server may send, with a
/// UTF-8 reason.
fn close_code(payload: &[u8]) -> Result<u16, String> {
    match payload {
        [] => Ok(1005),
        [_] => Err("a close frame of 1 byte".into()),
        [a, b, reason @ ..] => {
            let code = u16::from_be_bytes([*a, *b]);
            let allowed = matches!(code, 1000..=1003 | 1007..=1011 | 3000..=4999);
            if !allowed {
                return Err(format!("close code {code}"));
            }
            if std::str::from_utf8(reason).is_err() {
                return Err("a close reason that is not UTF-8".into());
            }
            Ok(code)
        }
    }
}

fn inflate(payload: &[u8]) -> Result<Vec<u8>, flate2::DecompressError> {
    use flate2::{Decompress, FlushDecompress, Status};
    let input = [payload, &[0, 0, 0xff, 0xff]].concat();
    let mut z = Decompress::new(false);
    // At most a little past the limit: past it, the server refuses the message anyway.
    let mut out = Vec::with_capacity(MAX_MESSAGE + 1);
    while (z.total_in() as usize) < input.len() && out.len() < out.capacity() {
        let before = (z.total_in(), z.total_out());
        let taken = z.total_in() as usize;
        let status = z.decompress_vec(&input[taken..], &mut out, FlushDecompress::Sync)?;
        if status == Status::StreamEnd || (z.total_in(), z.total_out()) == before {
            break;
        }
    }
    Ok(out)
}

/// The client's data messages and pings, as a lenient reader finds them: frames masked or
/// not, any reserved bits, any size. It stops at a close frame, at bytes that end in the
/// middle of a frame, and at a compressed message that does not inflate.
pub struct Sent {
    pub messages: Vec<Message>,
    pub pings: Vec<Vec<u8>>,
}

pub fn client_messages(mut bytes: &[u8], deflate: bool) -> Sent {
    let mut sent = Sent {
        messages: Vec::new(),
        pings: Vec::new(),
    };
    let mut message: Option<(bool, bool, Vec<u8>)> = None;
    while bytes.len() >= 2 {
        let masked = bytes[1] & 0x80 != 0;
        let (len, mut at) = match bytes[1] & 0x7f {
            126 if bytes.len() >= 4 => (u64::from(u16::from_be_bytes([bytes[2], bytes[3]])), 4),
            127 if bytes.len() >= 10 => (
                u64::from_be_bytes(bytes[2..10].try_into().expect("8 bytes")),
                10,
            ),
            126 | 127 => break,
            n => (u64::from(n), 2),
        };
        let key = if masked {
            let Some(key) = bytes.get(at..at + 4) else {
                break;
            };
            at += 4;
            [key[0], key[1], key[2], key[3]]
        } else {
            [0; 4]
        };
        let Some(end) = usize::try_from(len)
            .ok()
            .and_then(|len| at.checked_add(len))
            .filter(|&end| end <= bytes.len())
        else {
            break;
        };
        let payload: Vec<u8> = bytes[at..end]
            .iter()
            .zip(key.iter().cycle())
            .map(|(b, k)| b ^ k)
            .collect();
        let (first, fin) = (bytes[0], bytes[0] & 0x80 != 0);
        bytes = &bytes[end..];
        match first & 0x0f {
            0..=2 => {
                let opcode = first & 0x0f;
                let mut m = match (opcode, message.take()) {
                    (0, Some(m)) => m,
                    (0, None) => continue,
                    (_, _) => (opcode == 1, deflate && first & 0x40 != 0, Vec::new()),
                };
                m.2.extend_from_slice(&payload);
                if !fin {
                    message = Some(m);
                    continue;
                }
                let (text, compressed, payload) = m;
                let payload = if compressed {
                    match inflate(&payload) {
                        Ok(p) => p,
                        Err(_) => break,
                    }
                } else {
                    payload
                };
                sent.messages.push(Message { text, payload });
            }
            8 => break,
            9 => sent.pings.push(payload),
            _ => {}
        }
    }
    sent
}
