//! The RPC wire format: framing, and the payloads of the frames the protocol itself reads
//! (`hello` and `error`). The full description, for writing clients in other languages, is
//! `docs/rpc-wire.md`.
//!
//! Every frame is a 16-byte header followed by a MessagePack payload. All integers are
//! big-endian.
//!
//! | offset | size | field                                                        |
//! |--------|------|--------------------------------------------------------------|
//! | 0      | 2    | magic, `0xA7 0x11`                                           |
//! | 2      | 1    | wire version, [`WIRE_VERSION`]                               |
//! | 3      | 1    | type ([`Kind`]): 0 keepalive, 1 hello, 2 error, 3 reply, 4 push, 5 call, 6 cast, 7 going away |
//! | 4      | 4    | payload length in bytes                                      |
//! | 8      | 8    | request id: a call's id, echoed by its reply or error; else 0 |
//! | 16     | len  | payload, MessagePack                                         |
//!
//! The decoder checks the magic, the wire version, the type and the length against the maximum
//! frame size from the header alone, and never panics, whatever the bytes. It never reserves
//! room for a payload from the length its header announces: the buffer of a frame that is
//! still arriving grows with the bytes that have arrived (at most doubling them, see
//! [`Decoder::decode`]), so a peer that announces 8 MiB and sends 16 bytes costs 16 bytes.

use std::fmt;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use serde::{Deserialize, Serialize};

/// The two bytes every frame starts with.
pub const MAGIC: [u8; 2] = [0xA7, 0x11];
/// The version of this framing. A peer that sends another one is refused with
/// `incompatible version`.
pub const WIRE_VERSION: u8 = 1;
/// The size of a frame header.
pub const HEADER_LEN: usize = 16;
/// The default largest payload a peer accepts: 8 MiB.
pub const DEFAULT_MAX_FRAME_SIZE: usize = 8 * 1024 * 1024;
/// The default largest payload accepted before the peer's hello has been accepted, the
/// hello's own included: 4 KiB. A hello is a service identifier and a version, a few dozen
/// bytes.
pub const DEFAULT_MAX_HELLO_SIZE: usize = 4 * 1024;
/// While a frame is arriving, [`Decoder::decode`] makes room for at most this many bytes more
/// than it holds (or as many as it holds, when that is more).
pub const GROW_STEP: usize = 8 * 1024;

/// What a frame is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Kind {
    /// Keeps an idle connection alive. Empty; the server answers each with one of its own.
    Keepalive = 0,
    /// The first frame each way: the service identifier and version ([`Hello`]).
    Hello = 1,
    /// A failure ([`ErrorBody`]): of the call with this id, or of the connection when the id
    /// is 0 (the sender then closes).
    Error = 2,
    /// The answer to the call with this id.
    Reply = 3,
    /// A message from the server the client did not ask for. Id 0.
    Push = 4,
    /// A request that wants a reply; its id is unique among the connection's calls in flight
    /// and never 0.
    Call = 5,
    /// A request that wants no reply. Id 0.
    Cast = 6,
    /// Only when both hellos name [`features::GOING_AWAY`]. From the server: it is going
    /// away and will take no calls after the client's own `going away`; from the client, that
    /// answer: nothing more follows it on this connection. Id 0, empty.
    GoingAway = 7,
}

impl Kind {
    /// The kind with this type byte.
    pub fn from_byte(byte: u8) -> Option<Kind> {
        Some(match byte {
            0 => Kind::Keepalive,
            1 => Kind::Hello,
            2 => Kind::Error,
            3 => Kind::Reply,
            4 => Kind::Push,
            5 => Kind::Call,
            6 => Kind::Cast,
            7 => Kind::GoingAway,
            _ => return None,
        })
    }

    /// The frame type's name, as the docs and error messages write it.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Keepalive => "keepalive",
            Kind::Hello => "hello",
            Kind::Error => "error",
            Kind::Reply => "reply",
            Kind::Push => "push",
            Kind::Call => "call",
            Kind::Cast => "cast",
            Kind::GoingAway => "going away",
        }
    }
}

/// One decoded frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// What it is.
    pub kind: Kind,
    /// The request id (0 when the kind has none).
    pub id: u64,
    /// The MessagePack payload, not yet decoded.
    pub payload: Bytes,
}

/// Bytes that are not a frame of this protocol. The connection that sent them is closed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WireError {
    /// The first two bytes are not [`MAGIC`]: not this protocol.
    BadMagic([u8; 2]),
    /// Another version of the framing.
    WireVersion(u8),
    /// A type byte this version does not know.
    UnknownKind(u8),
    /// The header announces a payload over the maximum frame size.
    TooLarge {
        /// The announced payload length.
        len: u64,
        /// The maximum.
        max: usize,
    },
    /// A payload could not be encoded (a value serde refuses, say).
    Encode(String),
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WireError::BadMagic(m) => write!(
                f,
                "bad frame: magic {:02x} {:02x} is not 0xa7 0x11",
                m[0], m[1]
            ),
            WireError::WireVersion(v) => write!(
                f,
                "incompatible version: wire version {v}, this side speaks {WIRE_VERSION}"
            ),
            WireError::UnknownKind(k) => write!(f, "bad frame: unknown frame type {k}"),
            WireError::TooLarge { len, max } => write!(
                f,
                "frame too large: {len} bytes of payload, the maximum is {max}"
            ),
            WireError::Encode(why) => write!(f, "cannot encode payload: {why}"),
        }
    }
}

impl std::error::Error for WireError {}

impl WireError {
    /// The error code this fault is reported with on the wire ([`ErrorBody::code`]).
    pub fn code(&self) -> &'static str {
        match self {
            WireError::WireVersion(_) => codes::INCOMPATIBLE_VERSION,
            WireError::TooLarge { .. } => codes::FRAME_TOO_LARGE,
            WireError::Encode(_) => codes::SERVER_ERROR,
            WireError::BadMagic(_) | WireError::UnknownKind(_) => codes::BAD_FRAME,
        }
    }
}

/// Cuts frames out of a read buffer.
#[derive(Debug, Clone, Copy)]
pub struct Decoder {
    max_frame_size: usize,
}

impl Decoder {
    /// A decoder that refuses payloads over `max_frame_size` bytes.
    pub fn new(max_frame_size: usize) -> Decoder {
        Decoder { max_frame_size }
    }

    /// The largest payload accepted.
    pub fn max_frame_size(&self) -> usize {
        self.max_frame_size
    }

    /// Takes the first whole frame off the front of `buf`: `Ok(None)` when more bytes are
    /// needed. A header is checked as soon as it is whole, so a bad one fails before its
    /// payload arrives and nothing is reserved for it.
    ///
    /// For a frame still arriving, `buf` is given room for at most `max(buf.len(),
    /// GROW_STEP)` more bytes, and never past the frame's end: what it reserves is bounded
    /// by what the peer has sent, not by the length the header announces, and a large frame
    /// still arrives in a number of reallocations that grows with the log of its size.
    pub fn decode(&self, buf: &mut BytesMut) -> Result<Option<Frame>, WireError> {
        // The magic is checked byte by byte as it arrives, so garbage fails at once.
        let seen = &buf[..buf.len().min(MAGIC.len())];
        if seen != &MAGIC[..seen.len()] {
            return Err(WireError::BadMagic([
                seen[0],
                seen.get(1).copied().unwrap_or(0),
            ]));
        }
        if buf.len() < HEADER_LEN {
            return Ok(None);
        }
        let header = Header::parse(&buf[..HEADER_LEN], self.max_frame_size)?;
        let total = HEADER_LEN + header.len;
        if buf.len() < total {
            buf.reserve((total - buf.len()).min(buf.len().max(GROW_STEP)));
            return Ok(None);
        }
        buf.advance(HEADER_LEN);
        let payload = buf.split_to(header.len).freeze();
        Ok(Some(Frame {
            kind: header.kind,
            id: header.id,
            payload,
        }))
    }
}

impl Default for Decoder {
    /// A decoder with [`DEFAULT_MAX_FRAME_SIZE`].
    fn default() -> Decoder {
        Decoder::new(DEFAULT_MAX_FRAME_SIZE)
    }
}

/// A checked frame header.
struct Header {
    kind: Kind,
    len: usize,
    id: u64,
}

impl Header {
    fn parse(bytes: &[u8], max: usize) -> Result<Header, WireError> {
        let mut b = bytes;
        let magic = [b.get_u8(), b.get_u8()];
        if magic != MAGIC {
            return Err(WireError::BadMagic(magic));
        }
        let version = b.get_u8();
        if version != WIRE_VERSION {
            return Err(WireError::WireVersion(version));
        }
        let kind_byte = b.get_u8();
        let kind = Kind::from_byte(kind_byte).ok_or(WireError::UnknownKind(kind_byte))?;
        let len = b.get_u32();
        if len as u64 > max as u64 {
            return Err(WireError::TooLarge {
                len: len.into(),
                max,
            });
        }
        let id = b.get_u64();
        Ok(Header {
            kind,
            len: len as usize,
            id,
        })
    }
}

/// Takes the whole keepalive frames at the front of `buf` off it, and says how many there
/// were. It stops at the first other frame, at a part of a frame, or at a header the decoder
/// would refuse, all of which it leaves for [`Decoder::decode`].
pub(crate) fn take_keepalives(buf: &mut BytesMut, max: usize) -> usize {
    let mut taken = 0;
    while buf.len() >= HEADER_LEN {
        match Header::parse(&buf[..HEADER_LEN], max) {
            Ok(h) if h.kind == Kind::Keepalive && buf.len() >= HEADER_LEN + h.len => {
                buf.advance(HEADER_LEN + h.len);
                taken += 1;
            }
            _ => break,
        }
    }
    taken
}

/// Appends a keepalive frame (empty, id 0) to `out`.
pub fn keepalive(out: &mut BytesMut) {
    put_header(Kind::Keepalive, 0, 0, out);
}

/// Appends a `going away` frame (empty, id 0) to `out`.
pub fn going_away(out: &mut BytesMut) {
    put_header(Kind::GoingAway, 0, 0, out);
}

/// Appends a frame with this raw payload to `out`. A payload the 32-bit length cannot
/// state is refused.
pub fn encode_raw(
    kind: Kind,
    id: u64,
    payload: &[u8],
    out: &mut BytesMut,
) -> Result<(), WireError> {
    let len = u32::try_from(payload.len()).map_err(|_| WireError::TooLarge {
        len: payload.len() as u64,
        max: u32::MAX as usize,
    })?;
    out.reserve(HEADER_LEN + payload.len());
    put_header(kind, id, len, out);
    out.put_slice(payload);
    Ok(())
}

/// Appends a frame whose payload is `value` as MessagePack (maps with field names, so other
/// languages read it as they would JSON). On an error, or a payload over `max`, `out` is left
/// as it was.
pub fn encode<T: Serialize + ?Sized>(
    kind: Kind,
    id: u64,
    value: &T,
    max: usize,
    out: &mut BytesMut,
) -> Result<(), WireError> {
    let start = out.len();
    put_header(kind, id, 0, out);
    let mut writer = out.writer();
    let encoded = value.serialize(&mut rmp_serde::Serializer::new(&mut writer).with_struct_map());
    let out = writer.into_inner();
    if let Err(e) = encoded {
        out.truncate(start);
        return Err(WireError::Encode(e.to_string()));
    }
    let len = out.len() - start - HEADER_LEN;
    if len > max.min(u32::MAX as usize) {
        out.truncate(start);
        return Err(WireError::TooLarge {
            len: len as u64,
            max,
        });
    }
    out[start + 4..start + 8].copy_from_slice(&(len as u32).to_be_bytes());
    Ok(())
}

/// How deep maps and arrays may nest in a payload (an enum variant's one-entry map counts as
/// a level). Deeper payloads are refused before serde sees them: serde decodes recursively,
/// and a payload of a few kilobytes nested thousands deep would overflow the stack.
pub const MAX_DEPTH: usize = 64;

/// Decodes a MessagePack payload into `T`. Decoding builds only `T`'s own fields; nothing in
/// the payload chooses what code runs. A payload nested deeper than [`MAX_DEPTH`], or with
/// bytes after its value, is refused.
pub fn decode<T: serde::de::DeserializeOwned>(payload: &[u8]) -> Result<T, String> {
    check_shape(payload)?;
    rmp_serde::from_slice(payload).map_err(|e| e.to_string())
}

/// Walks a MessagePack value without recursion: refuses one nested deeper than [`MAX_DEPTH`]
/// or followed by more bytes. A value cut short passes; serde then says what is missing.
fn check_shape(payload: &[u8]) -> Result<(), String> {
    // pending[d]: values still to read at depth d.
    let mut pending = [0u64; MAX_DEPTH + 1];
    pending[0] = 1;
    let mut depth = 0;
    let mut at = 0usize;
    loop {
        while pending[depth] == 0 {
            if depth == 0 {
                return match payload.len() - at.min(payload.len()) {
                    0 => Ok(()),
                    extra => Err(format!("{extra} bytes after the value")),
                };
            }
            depth -= 1;
        }
        pending[depth] -= 1;
        let Some(&marker) = payload.get(at) else {
            return Ok(());
        };
        at += 1;
        // A big-endian length of `n` bytes at `at`, which it then steps over.
        let mut length = |n: usize| -> Option<u64> {
            let bytes = payload.get(at..at + n)?;
            at += n;
            Some(bytes.iter().fold(0, |v, &b| (v << 8) | u64::from(b)))
        };
        let (skip, children) = match marker {
            0x00..=0x7f | 0xe0..=0xff | 0xc0..=0xc3 => (0, 0),
            0x80..=0x8f => (0, 2 * u64::from(marker & 0x0f)),
            0x90..=0x9f => (0, u64::from(marker & 0x0f)),
            0xa0..=0xbf => (u64::from(marker & 0x1f), 0),
            0xcc | 0xd0 => (1, 0),
            0xcd | 0xd1 | 0xd4 => (2, 0),
            0xd5 => (3, 0),
            0xca | 0xce | 0xd2 => (4, 0),
            0xd6 => (5, 0),
            0xcb | 0xcf | 0xd3 => (8, 0),
            0xd7 => (9, 0),
            0xd8 => (17, 0),
            // bin and str 8/16/32; ext 8/16/32 carry a type byte after their length.
            0xc4 | 0xd9 => (length(1).unwrap_or(0), 0),
            0xc5 | 0xda => (length(2).unwrap_or(0), 0),
            0xc6 | 0xdb => (length(4).unwrap_or(0), 0),
            0xc7 => (length(1).map_or(0, |n| n + 1), 0),
            0xc8 => (length(2).map_or(0, |n| n + 1), 0),
            0xc9 => (length(4).map_or(0, |n| n + 1), 0),
            0xdc => (0, length(2).unwrap_or(0)),
            0xdd => (0, length(4).unwrap_or(0)),
            0xde => (0, length(2).map_or(0, |n| 2 * n)),
            0xdf => (0, length(4).map_or(0, |n| 2 * n)),
        };
        at = at.saturating_add(usize::try_from(skip).unwrap_or(usize::MAX));
        if at > payload.len() {
            return Ok(());
        }
        if children > 0 {
            if depth == MAX_DEPTH {
                return Err(format!("nested deeper than {MAX_DEPTH} levels"));
            }
            depth += 1;
            pending[depth] = children;
        }
    }
}

fn put_header(kind: Kind, id: u64, len: u32, out: &mut BytesMut) {
    out.put_slice(&MAGIC);
    out.put_u8(WIRE_VERSION);
    out.put_u8(kind as u8);
    out.put_u32(len);
    out.put_u64(id);
}

/// The payload of a `hello` frame: who is speaking.
///
/// The client sends its own first; the server answers with its own when the identifier is the
/// same and the client's version is one it accepts, and with an `error` frame otherwise. The
/// client then checks the server's version against the versions it accepts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// The service identifier; both sides must use the same one.
    pub identifier: String,
    /// The sender's protocol version, `MAJOR.MINOR.PATCH`.
    pub version: String,
    /// The optional parts of the protocol the sender speaks ([`features`]). A client names
    /// those it wants; the server answers with those of them it speaks too, and only those
    /// are used. Not sent when empty, so a hello without features is the same bytes as
    /// before features existed; a receiver ignores the names it does not know.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub features: Vec<String>,
}

impl Hello {
    /// Whether the hello names `feature`.
    pub fn has(&self, feature: &str) -> bool {
        self.features.iter().any(|f| f == feature)
    }
}

/// The names of the optional parts of the protocol, as hellos list them.
pub mod features {
    /// `going away` frames: a server that stops tells the client first, serves every call
    /// the client sends until the client answers `going away`, then finishes them and
    /// closes; the client sends its later calls on a new connection. No call is lost or run
    /// twice.
    pub const GOING_AWAY: &str = "going away";
}

/// The payload of an `error` frame.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// A fixed code from [`codes`], for programs.
    pub code: String,
    /// What went wrong, for people.
    pub message: String,
}

impl ErrorBody {
    /// An error with this code and message.
    pub fn new(code: &str, message: impl Into<String>) -> ErrorBody {
        ErrorBody {
            code: code.to_owned(),
            message: message.into(),
        }
    }
}

/// The codes of `error` frames.
pub mod codes {
    /// The hello named another service.
    pub const WRONG_IDENTIFIER: &str = "wrong identifier";
    /// The hello's version is not accepted, or the frame has another wire version.
    pub const INCOMPATIBLE_VERSION: &str = "incompatible version";
    /// The bytes are not a frame of this protocol, or a frame came out of turn.
    pub const BAD_FRAME: &str = "bad frame";
    /// A frame's payload is over the receiver's maximum frame size.
    pub const FRAME_TOO_LARGE: &str = "frame too large";
    /// A frame began but did not complete within the frame timeout.
    pub const FRAME_TIMEOUT: &str = "frame timeout";
    /// A call's payload is not a request of the service.
    pub const BAD_REQUEST: &str = "bad request";
    /// The server failed (returned an error) while handling the call; the connection ends.
    pub const SERVER_ERROR: &str = "server error";
    /// The server panicked while handling the call; the connection ends.
    pub const SERVER_PANIC: &str = "server panic";
    /// The server dropped the call without replying.
    pub const NO_REPLY: &str = "no reply";
    /// The daemon is stopping and takes no new calls: this one was read but not started, so
    /// a client may send it again elsewhere.
    pub const SHUTTING_DOWN: &str = "shutting down";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keepalives_are_taken_off_the_front_only() {
        let mut buf = BytesMut::new();
        keepalive(&mut buf);
        keepalive(&mut buf);
        encode(Kind::Call, 7, &"x", 1024, &mut buf).unwrap();
        keepalive(&mut buf);
        assert_eq!(take_keepalives(&mut buf, 1024), 2);
        let d = Decoder::new(1024);
        assert_eq!(d.decode(&mut buf).unwrap().unwrap().kind, Kind::Call);
        // Half a keepalive stays, and so does garbage, for the decoder to judge.
        let mut half = BytesMut::from(&buf[..HEADER_LEN / 2]);
        assert_eq!(take_keepalives(&mut half, 1024), 0);
        assert_eq!(half.len(), HEADER_LEN / 2);
        let mut junk = BytesMut::from(&b"GET / HTTP/1.1\r\n\r\n"[..]);
        assert_eq!(take_keepalives(&mut junk, 1024), 0);
        assert!(d.decode(&mut junk).is_err());
        assert_eq!(take_keepalives(&mut buf, 1024), 1);
        assert!(buf.is_empty());
    }

    #[test]
    fn a_frame_round_trips_through_the_decoder() {
        let mut buf = BytesMut::new();
        encode(Kind::Call, 7, &("get", 3u32), 1024, &mut buf).unwrap();
        keepalive(&mut buf);
        let d = Decoder::new(1024);
        let call = d.decode(&mut buf).unwrap().unwrap();
        assert_eq!((call.kind, call.id), (Kind::Call, 7));
        assert_eq!(
            decode::<(String, u32)>(&call.payload).unwrap(),
            ("get".into(), 3)
        );
        let keepalive = d.decode(&mut buf).unwrap().unwrap();
        assert_eq!(
            (keepalive.kind, keepalive.payload.len()),
            (Kind::Keepalive, 0)
        );
        assert!(buf.is_empty());
        assert_eq!(d.decode(&mut buf), Ok(None));
    }

    #[test]
    fn a_frame_arriving_byte_by_byte_is_whole_only_at_its_end() {
        let mut whole = BytesMut::new();
        encode(Kind::Reply, 1, "hello", 1024, &mut whole).unwrap();
        let d = Decoder::default();
        let mut buf = BytesMut::new();
        for (i, byte) in whole.iter().enumerate() {
            buf.put_u8(*byte);
            let got = d.decode(&mut buf).unwrap();
            assert_eq!(got.is_some(), i == whole.len() - 1, "at byte {i}");
        }
    }

    #[test]
    fn an_oversized_header_fails_before_its_payload_is_reserved() {
        let mut buf = BytesMut::new();
        put_header(Kind::Call, 1, u32::MAX, &mut buf);
        let before = buf.capacity();
        let err = Decoder::new(1 << 20).decode(&mut buf).unwrap_err();
        assert_eq!(
            err,
            WireError::TooLarge {
                len: u32::MAX.into(),
                max: 1 << 20
            }
        );
        assert_eq!(buf.capacity(), before);
        assert!(err.to_string().contains("the maximum is 1048576"));
    }

    #[test]
    fn an_announced_payload_is_not_reserved_before_its_bytes_arrive() {
        let mut buf = BytesMut::new();
        put_header(Kind::Call, 1, 8 * 1024 * 1024, &mut buf);
        let d = Decoder::default();
        assert_eq!(d.decode(&mut buf), Ok(None));
        assert!(
            buf.capacity() <= 2 * (HEADER_LEN + GROW_STEP),
            "capacity {} for a 16-byte header",
            buf.capacity()
        );
        // As the payload arrives, the room grows with it, and the frame comes out whole.
        let mut sent = HEADER_LEN;
        while sent < HEADER_LEN + 8 * 1024 * 1024 {
            let n = 100_000.min(HEADER_LEN + 8 * 1024 * 1024 - sent);
            buf.put_bytes(0, n);
            sent += n;
            let got = d.decode(&mut buf).unwrap();
            if sent < HEADER_LEN + 8 * 1024 * 1024 {
                assert!(got.is_none());
                assert!(
                    buf.capacity() <= 4 * sent + 2 * GROW_STEP,
                    "{}",
                    buf.capacity()
                );
            } else {
                assert_eq!(got.unwrap().payload.len(), 8 * 1024 * 1024);
            }
        }
    }

    #[test]
    fn bad_headers_are_named() {
        let d = Decoder::default();
        let mut garbage = BytesMut::from(&b"GET / HTTP/1.1\r\n"[..]);
        assert_eq!(
            d.decode(&mut garbage),
            Err(WireError::BadMagic([b'G', b'E']))
        );
        let mut v2 = BytesMut::from(&[0xA7, 0x11, 2, 5, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1][..]);
        let err = d.decode(&mut v2).unwrap_err();
        assert_eq!(err.code(), codes::INCOMPATIBLE_VERSION);
        let mut kind = BytesMut::from(&[0xA7, 0x11, 1, 9, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1][..]);
        assert_eq!(d.decode(&mut kind), Err(WireError::UnknownKind(9)));
    }

    #[test]
    fn an_encoded_payload_over_the_maximum_leaves_the_buffer_as_it_was() {
        let mut buf = BytesMut::from(&b"xy"[..]);
        let err = encode(Kind::Reply, 1, &vec![0u8; 100], 10, &mut buf).unwrap_err();
        assert!(matches!(err, WireError::TooLarge { max: 10, .. }));
        assert_eq!(&buf[..], b"xy");
    }

    #[test]
    fn deep_nesting_and_trailing_bytes_are_refused_before_serde() {
        // 50,000 nested one-entry maps: an enum variant inside a variant inside...
        let mut deep = Vec::new();
        for _ in 0..50_000 {
            deep.extend([0x81, 0xa1, b'n']);
        }
        deep.push(0xc0);
        let err = decode::<serde_json::Value>(&deep).unwrap_err();
        assert_eq!(err, "nested deeper than 64 levels");
        let mut ok = vec![0x91; MAX_DEPTH];
        ok.push(0x01);
        let v: serde_json::Value = decode(&ok).unwrap();
        assert!(v.is_array());
        let mut too_deep = vec![0x91; MAX_DEPTH + 1];
        too_deep.push(0x01);
        assert!(decode::<serde_json::Value>(&too_deep).is_err());
        assert_eq!(
            decode::<u8>(&[0x01, 0x02]).unwrap_err(),
            "1 bytes after the value"
        );
        // Cut short: serde's own error, no panic.
        assert!(decode::<Vec<u8>>(&[0xdd, 0, 0]).is_err());
    }

    #[test]
    fn a_bad_second_magic_byte_fails_without_waiting_for_the_header() {
        let mut buf = BytesMut::from(&[0xA7, 0x00][..]);
        assert_eq!(
            Decoder::default().decode(&mut buf),
            Err(WireError::BadMagic([0xA7, 0x00]))
        );
    }

    #[test]
    fn structs_are_maps_with_field_names() {
        let mut buf = BytesMut::new();
        let hello = Hello {
            identifier: "kv".into(),
            version: "1.0.0".into(),
            features: Vec::new(),
        };
        encode(Kind::Hello, 0, &hello, 1024, &mut buf).unwrap();
        let frame = Decoder::default().decode(&mut buf).unwrap().unwrap();
        // fixmap of 2 entries, then the key "identifier".
        assert_eq!(frame.payload[0], 0x82);
        assert_eq!(&frame.payload[2..12], b"identifier");
        assert_eq!(decode::<Hello>(&frame.payload).unwrap(), hello);
    }
}
