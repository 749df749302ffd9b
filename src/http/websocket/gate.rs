//! What the framing reads through: the socket, handed to tungstenite at most one frame at a
//! time. tungstenite keeps what it read ahead in a buffer of its own that nothing can take
//! back; cut at frame ends, that buffer is empty whenever a message has just been returned,
//! and the bytes the peer sent after it wait here instead, where a connection moving to
//! another process can take them along ([`Gate::take_unread`]).
//!
//! The gate reads the socket into a buffer on the stack ([`READ_AHEAD`]) and copies on what
//! tungstenite may have; tungstenite's own buffer can then stay small (see the route's read
//! chunk), so that an idle connection holds little. Only when one read brings more than the
//! frame under way, or than tungstenite takes at once, is the rest kept here, on the heap,
//! until it is handed on.
//!
//! With permessage-deflate negotiated, the gate also takes the compressed bit (RSV1) off the
//! first frame of each compressed message, which tungstenite would refuse, and passes a
//! compressed text message on as binary (its bytes are no UTF-8 until inflated); it notes
//! which messages were compressed, in order, for [`deflate`](super::deflate) to inflate.
//!
//! tungstenite reserves room for a frame's whole payload as soon as it has its header. So
//! the gate hands on a frame whose payload is over [`HOLD_FROM`] (4 KiB) only once all of it
//! has come, and gathers it until then: a peer that announces big frames and sends little
//! of them makes the connection hold what it sent, not what it announced
//! ([`Gate::holding_up_to`]). A frame over the framing's limit goes on at once, to be
//! refused from its header.
//!
//! Once this side has sent its close frame, the gate alone reads on: it drops what the peer
//! still sends, frame by frame, until the peer's close frame has gone by
//! ([`Gate::skip_to_close`]). tungstenite is not asked again, since after a frame over the
//! limit it would wait to hold all of that frame, however long the peer said it is.

use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The most one read of the socket takes: 4 KiB.
pub(crate) const READ_AHEAD: usize = 4096;

/// The longest frame header: 2 bytes, 8 of extended length, 4 of mask key.
const MAX_HEADER: usize = 14;

/// A frame whose payload is over this (4 KiB) is handed on only once all of it has come
/// (see [`Gate::holding_up_to`]).
pub(crate) const HOLD_FROM: u64 = 4096;

/// A socket whose reads stop at each frame's end.
#[derive(Debug)]
pub(crate) struct Gate<S> {
    pub(crate) inner: S,
    /// Read from the socket and not handed on yet: past the frame then under way, or a
    /// frame being gathered whole.
    ahead: BytesMut,
    /// The frame limit of the framing: a frame over [`HOLD_FROM`] and up to this is handed
    /// on only once whole (0: none is held).
    hold_limit: u64,
    /// The socket has ended: what is held goes on as it is.
    ended: bool,
    /// The frame header handed on so far, while it is incomplete.
    header: [u8; MAX_HEADER],
    header_len: usize,
    /// Payload bytes of the frame under way not handed on yet.
    payload_left: u64,
    /// The opcode of the frame under way, or of the last one, once its header is in.
    opcode: u8,
    /// A data frame without FIN went by: a fragmented message is under way.
    in_message: bool,
    /// With permessage-deflate: for each message handed on and not yet taken by
    /// [`Gate::arrived`], how it came. At most a message or two: tungstenite returns each
    /// as soon as its last frame is in.
    inflow: Option<VecDeque<Arrival>>,
}

/// How a data message came, with permessage-deflate negotiated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Arrival {
    /// Not compressed.
    Plain,
    /// Compressed; `text` if it was a text message.
    Deflated { text: bool },
}

impl<S> Gate<S> {
    pub(crate) fn new(inner: S) -> Gate<S> {
        Gate {
            inner,
            ahead: BytesMut::new(),
            hold_limit: 0,
            ended: false,
            header: [0; MAX_HEADER],
            header_len: 0,
            payload_left: 0,
            opcode: 0,
            in_message: false,
            inflow: None,
        }
    }

    /// Hands on `unread` (bytes read from the socket before the gate was there) before
    /// reading the socket.
    pub(crate) fn with_unread(mut self, unread: Bytes) -> Gate<S> {
        self.ahead = BytesMut::from(unread);
        self
    }

    /// Hands on a frame whose payload is over [`HOLD_FROM`] only once all of it has come,
    /// up to `limit` (the framing's frame limit, which it enforces from the header).
    /// tungstenite reserves room for a frame's whole payload as soon as it has read the
    /// header: without this, a peer that announces big frames and sends none of them would
    /// hold that much memory per connection. Held here, a frame takes only what came.
    pub(crate) fn holding_up_to(mut self, limit: usize) -> Gate<S> {
        self.hold_limit = u64::try_from(limit).unwrap_or(u64::MAX);
        self
    }

    /// Takes compressed messages in (permessage-deflate was negotiated).
    pub(crate) fn inflate(mut self) -> Gate<S> {
        self.inflow = Some(VecDeque::new());
        self
    }

    /// With permessage-deflate, how the data message tungstenite has just returned came
    /// (`None` without it).
    pub(crate) fn arrived(&mut self) -> Option<Arrival> {
        self.inflow
            .as_mut()
            .map(|q| q.pop_front().unwrap_or(Arrival::Plain))
    }

    /// Whether everything handed on ends a message: no frame and no fragmented message is
    /// under way. Once tungstenite has returned what it was handed, it then holds nothing.
    /// A frame over [`HOLD_FROM`] read ahead (being gathered, or whole and not handed on
    /// yet) counts as under way too: what is read ahead goes with a connection that moves,
    /// and a message, not up to a whole frame, is what may wait there.
    pub(crate) fn between_messages(&self) -> bool {
        let big_ahead = whole_header(&self.ahead).is_some_and(|(_, payload)| payload > HOLD_FROM);
        self.header_len == 0 && self.payload_left == 0 && !self.in_message && !big_ahead
    }

    /// Whether bytes read from the socket wait to be handed on.
    pub(crate) fn has_unread(&self) -> bool {
        !self.ahead.is_empty()
    }

    /// The bytes read from the socket and not handed on.
    pub(crate) fn take_unread(&mut self) -> Bytes {
        std::mem::take(&mut self.ahead).freeze()
    }

    /// Whether `bytes`, read and not handed on, must wait for more before any of them is
    /// handed on: they start a frame, and its header is not whole yet, or its payload is
    /// over [`HOLD_FROM`] (and within the limit) and not all here.
    fn gathering(&self, bytes: &[u8]) -> bool {
        if self.hold_limit == 0 || self.ended || self.header_len != 0 || self.payload_left != 0 {
            return false;
        }
        match whole_header(bytes) {
            None => true,
            Some((size, payload)) => {
                payload > HOLD_FROM
                    && payload <= self.hold_limit
                    && ((bytes.len() - size) as u64) < payload
            }
        }
    }

    /// Follows the frames in `bytes`, about to be handed on, and returns how many of them to
    /// hand on: up to the end of the first frame that ends in them, or all. A compressed
    /// message's first byte is rewritten here (see the module docs).
    fn pass(&mut self, bytes: &mut [u8]) -> usize {
        let mut i = 0;
        while i < bytes.len() {
            if self.payload_left > 0 {
                let n =
                    (bytes.len() - i).min(usize::try_from(self.payload_left).unwrap_or(usize::MAX));
                i += n;
                self.payload_left -= n as u64;
                if self.payload_left == 0 {
                    return i;
                }
                continue;
            }
            if self.header_len == 0 {
                if let Some(inflow) = &mut self.inflow {
                    bytes[i] = note_arrival(bytes[i], inflow);
                }
            }
            let rest = &bytes[i..];
            let (first, payload) =
                if self.header_len == 0 && rest.len() >= 2 && rest.len() >= header_size(rest[1]) {
                    // The whole header came in one piece (nearly always): read where it is
                    // (checked in place: through `whole_header`, 16 instructions more per
                    // message).
                    i += header_size(rest[1]);
                    (rest[0], payload_len(rest))
                } else {
                    // Kept until the rest comes, taken as much at a time as has come: its first
                    // two bytes say how long it is.
                    let want = match self.header_len {
                        0 | 1 => 2,
                        _ => header_size(self.header[1]),
                    };
                    let take = (want - self.header_len).min(rest.len());
                    self.header[self.header_len..self.header_len + take]
                        .copy_from_slice(&rest[..take]);
                    self.header_len += take;
                    i += take;
                    let Some((_, payload)) = whole_header(&self.header[..self.header_len]) else {
                        continue;
                    };
                    (self.header[0], payload)
                };
            let (fin, opcode) = (first & 0x80 != 0, first & 0x0f);
            self.opcode = opcode;
            // Data frames (continuation, text, binary) open or close a message; control
            // frames come between fragments and change nothing.
            if opcode < 8 {
                self.in_message = !fin;
            }
            self.header_len = 0;
            self.payload_left = payload;
            if payload == 0 {
                return i;
            }
        }
        i
    }
}

/// A close frame's opcode.
const CLOSE: u8 = 0x8;

impl<S: AsyncRead + Unpin> Gate<S> {
    /// Reads and drops what the peer sends, the rest of a frame under way included, until
    /// the peer's close frame has gone by or the socket ends. Memory stays at one read's
    /// buffer, on the stack (not in the future, which lives as long as the connection).
    pub(crate) fn skip_to_close(&mut self) -> impl Future<Output = io::Result<()>> + '_ {
        // Messages that no one reads are no longer noted; a close frame the framing was
        // handed already was answered there, so only one still to come counts.
        self.inflow = None;
        if self.header_len == 0 && self.payload_left == 0 {
            self.opcode = 0;
        }
        std::future::poll_fn(move |cx| self.poll_skip(cx))
    }

    fn poll_skip(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            let mut space = [MaybeUninit::<u8>::uninit(); READ_AHEAD];
            let mut read = ReadBuf::uninit(&mut space);
            if self.ahead.is_empty() {
                ready!(Pin::new(&mut self.inner).poll_read(cx, &mut read))?;
                if read.filled().is_empty() {
                    return Poll::Ready(Ok(()));
                }
            } else {
                let n = self.ahead.len().min(READ_AHEAD);
                read.put_slice(&self.ahead[..n]);
                self.ahead.advance(n);
            }
            let bytes = read.filled_mut();
            let mut at = 0;
            while at < bytes.len() {
                at += self.pass(&mut bytes[at..]);
                if self.header_len == 0 && self.payload_left == 0 && self.opcode == CLOSE {
                    return Poll::Ready(Ok(()));
                }
            }
        }
    }
}

/// Notes how the frame whose first byte is `first` came, if it starts a data message, and
/// returns the byte to hand on: RSV1 off, and text made binary, when it is compressed. RSV1
/// elsewhere (a continuation, a control frame) is left for tungstenite to refuse.
fn note_arrival(first: u8, inflow: &mut VecDeque<Arrival>) -> u8 {
    const RSV1: u8 = 0x40;
    match first & 0x0f {
        1 | 2 if first & RSV1 != 0 => {
            inflow.push_back(Arrival::Deflated {
                text: first & 0x0f == 1,
            });
            (first & !RSV1 & 0xf0) | 2
        }
        1 | 2 => {
            inflow.push_back(Arrival::Plain);
            first
        }
        _ => first,
    }
}

/// How long a frame header is, from its second byte: 2 bytes, the extended length (2 or 8)
/// and the mask key (4).
fn header_size(second: u8) -> usize {
    let extended = match second & 0x7f {
        126 => 2,
        127 => 8,
        _ => 0,
    };
    2 + extended + if second & 0x80 != 0 { 4 } else { 0 }
}

/// The size and payload length of the frame header at the start of `bytes`, once it is
/// whole there.
fn whole_header(bytes: &[u8]) -> Option<(usize, u64)> {
    let size = header_size(*bytes.get(1)?);
    (bytes.len() >= size).then(|| (size, payload_len(bytes)))
}

/// The payload length a whole frame header (at the start of `header`) gives.
fn payload_len(header: &[u8]) -> u64 {
    match header[1] & 0x7f {
        126 => u64::from(u16::from_be_bytes([header[2], header[3]])),
        127 => u64::from_be_bytes([
            header[2], header[3], header[4], header[5], header[6], header[7], header[8], header[9],
        ]),
        n => u64::from(n),
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Gate<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        loop {
            if !this.ahead.is_empty() && !this.gathering(&this.ahead) {
                let room = this.ahead.len().min(buf.remaining());
                buf.put_slice(&this.ahead[..room]);
                let n = this.pass(&mut buf.filled_mut()[before..]);
                buf.set_filled(before + n);
                this.ahead.advance(n);
                if this.ahead.is_empty() {
                    // Its allocation goes with it.
                    this.ahead = BytesMut::new();
                }
                return Poll::Ready(Ok(()));
            }
            // Not zeroed first: a read that finds nothing (every other one) would pay for 4 KiB.
            let mut space = [MaybeUninit::<u8>::uninit(); READ_AHEAD];
            let mut read = ReadBuf::uninit(&mut space);
            if let Err(e) = ready!(Pin::new(&mut this.inner).poll_read(cx, &mut read)) {
                return Poll::Ready(Err(e));
            }
            let got = read.filled();
            if got.is_empty() {
                if this.ahead.is_empty() {
                    return Poll::Ready(Ok(()));
                }
                // The end came in the middle of a frame being gathered: it goes on as it is,
                // and the framing sees it cut short.
                this.ended = true;
                continue;
            }
            if this.ahead.is_empty() && !this.gathering(got) {
                let room = got.len().min(buf.remaining());
                buf.put_slice(&got[..room]);
                let n = this.pass(&mut buf.filled_mut()[before..]);
                buf.set_filled(before + n);
                if n < got.len() {
                    this.ahead = BytesMut::from(&got[n..]);
                }
                return Poll::Ready(Ok(()));
            }
            this.ahead.extend_from_slice(got);
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Gate<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, data)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncReadExt;

    use super::*;

    /// A masked client frame.
    fn frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mut f = vec![(u8::from(fin) << 7) | opcode];
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
        f.extend_from_slice(&[0; 4]);
        f.extend_from_slice(payload);
        f
    }

    /// Reads once with a buffer of `room` bytes.
    async fn read(gate: &mut Gate<&[u8]>, room: usize) -> Vec<u8> {
        let mut buf = vec![0; room];
        let n = gate.read(&mut buf).await.unwrap();
        buf.truncate(n);
        buf
    }

    #[tokio::test]
    async fn reads_stop_at_each_frame_end_and_the_rest_waits_in_the_gate() {
        let text = frame(true, 1, b"hello");
        let big = frame(true, 2, &[7; 300]);
        let ping = frame(true, 9, b"");
        let wire = [text.clone(), big.clone(), ping.clone()].concat();
        let mut gate = Gate::new(&wire[..]);
        assert_eq!(read(&mut gate, 4096).await, text);
        assert!(gate.between_messages());
        // A frame longer than the reader's room comes in pieces, none past its end.
        let first = read(&mut gate, 100).await;
        assert_eq!(first, big[..100]);
        assert!(!gate.between_messages());
        let rest = read(&mut gate, 4096).await;
        assert_eq!(rest, big[100..]);
        assert!(gate.between_messages());
        assert_eq!(gate.take_unread(), Bytes::from(ping));
        assert!(read(&mut gate, 4096).await.is_empty());
    }

    #[tokio::test]
    async fn a_fragmented_message_is_under_way_until_its_last_fragment() {
        let wire = [
            frame(false, 1, b"hel"),
            frame(true, 9, b"ping"),
            frame(true, 0, b"lo"),
        ]
        .concat();
        let mut gate = Gate::new(&wire[..]);
        read(&mut gate, 4096).await;
        assert!(!gate.between_messages());
        read(&mut gate, 4096).await;
        assert!(
            !gate.between_messages(),
            "a control frame between fragments"
        );
        read(&mut gate, 4096).await;
        assert!(gate.between_messages());
    }

    #[tokio::test]
    async fn skipping_to_close_drops_the_frame_under_way_and_all_up_to_the_close() {
        use tokio::io::AsyncWriteExt;
        let big = frame(true, 2, &[1; 10_000]);
        let wire = [
            big.clone(),
            frame(true, 1, b"late"),
            frame(true, 9, b""),
            frame(true, 8, &1000u16.to_be_bytes()),
        ]
        .concat();
        // The peer keeps the socket open after its close frame: the skip ends at the frame.
        let (mut peer, ours) = tokio::io::duplex(64 * 1024);
        peer.write_all(&wire).await.unwrap();
        let mut gate = Gate::new(ours);
        // The framing took the header and a little of the payload, then gave up.
        let mut first = [0u8; 20];
        assert_eq!(gate.read(&mut first).await.unwrap(), 20);
        assert_eq!(first[..], big[..20]);
        let skip = tokio::time::timeout(std::time::Duration::from_secs(5), gate.skip_to_close());
        skip.await.expect("ends at the close frame").unwrap();
        // A peer that ends the socket without a close frame ends the skip too.
        let wire = frame(true, 2, &[1; 100]);
        let mut gate = Gate::new(&wire[..]);
        gate.skip_to_close().await.unwrap();
    }

    #[tokio::test]
    async fn a_big_frame_is_handed_on_only_once_all_of_it_has_come() {
        use futures_util::FutureExt;
        use tokio::io::AsyncWriteExt;
        let big = frame(true, 2, &[5; 70_000]);
        let next = frame(true, 1, b"x");
        let (mut peer, ours) = tokio::io::duplex(256 * 1024);
        let mut gate = Gate::new(ours).holding_up_to(1 << 20);
        let mut buf = vec![0; 512];
        // Its header and all but the last byte: the framing is handed nothing yet.
        for piece in big[..big.len() - 1].chunks(1000) {
            peer.write_all(piece).await.unwrap();
            assert!(gate.read(&mut buf).now_or_never().is_none());
        }
        // Its message is under way: a connection does not move with it read ahead.
        assert!(!gate.between_messages());
        peer.write_all(&big[big.len() - 1..]).await.unwrap();
        peer.write_all(&next).await.unwrap();
        let mut got = Vec::new();
        while got.len() < big.len() {
            let n = gate.read(&mut buf).await.unwrap();
            got.extend_from_slice(&buf[..n]);
        }
        assert_eq!(got, big);
        assert!(gate.between_messages());
        let n = gate.read(&mut buf).await.unwrap();
        assert_eq!(buf[..n], next[..]);

        // Over the limit, the header goes on at once: the framing refuses it from there.
        let (mut peer, ours) = tokio::io::duplex(1024);
        let mut gate = Gate::new(ours).holding_up_to(10_000);
        peer.write_all(&big[..100]).await.unwrap();
        let n = gate.read(&mut buf).await.unwrap();
        assert_eq!(buf[..n], big[..100]);

        // A peer that ends in the middle: what was held goes on, then the end.
        let (mut peer, ours) = tokio::io::duplex(64 * 1024);
        let mut gate = Gate::new(ours).holding_up_to(1 << 20);
        peer.write_all(&big[..5000]).await.unwrap();
        drop(peer);
        let mut got = Vec::new();
        loop {
            let n = gate.read(&mut buf).await.unwrap();
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
        }
        assert_eq!(got, big[..5000]);
    }

    #[tokio::test]
    async fn frame_ends_are_found_however_the_reads_cut_the_headers() {
        // Every header length: 2 bytes with the mask key (6), 16-bit length (8), 64-bit (14).
        let frames = [
            frame(true, 1, b"hi"),
            frame(true, 9, b""),
            frame(true, 2, &[3; 300]),
            frame(false, 2, &[4; 70_000]),
            frame(true, 0, b"end"),
        ];
        let wire = frames.concat();
        let mut ends = Vec::new();
        let mut at = 0;
        for f in &frames {
            at += f.len();
            ends.push(at);
        }
        for (hold, room) in [0, 1 << 20]
            .into_iter()
            .flat_map(|hold| (1..=16).map(move |room| (hold, room)))
        {
            let mut gate = Gate::new(&wire[..]).holding_up_to(hold);
            let (mut got, mut stops) = (Vec::new(), Vec::new());
            while got.len() < wire.len() {
                let more = read(&mut gate, room).await;
                assert!(!more.is_empty(), "room {room}");
                got.extend_from_slice(&more);
                stops.push(got.len());
            }
            assert_eq!(got, wire, "room {room}");
            // Each read stops at the first frame end in it: every frame end is a stop.
            for end in &ends {
                assert!(stops.contains(end), "room {room}: no stop at {end}");
            }
            assert!(gate.between_messages());
        }
    }

    #[tokio::test]
    async fn headers_split_across_reads_and_long_lengths_are_followed() {
        let big = frame(true, 2, &[1; 70_000]);
        let next = frame(true, 1, b"x");
        let wire = [big.clone(), next.clone()].concat();
        let mut gate = Gate::new(&wire[..]);
        // One byte of header, then the rest of it with part of the payload.
        assert_eq!(read(&mut gate, 1).await, big[..1]);
        assert!(!gate.between_messages());
        let mut got = read(&mut gate, 1).await;
        while got.len() < big.len() - 1 {
            let more = read(&mut gate, 65_536).await;
            assert!(!more.is_empty());
            got.extend_from_slice(&more);
        }
        assert_eq!(got, big[1..]);
        assert!(gate.between_messages());
        assert_eq!(read(&mut gate, 4096).await, next);
    }
}
