//! The body of a static file response: nothing, bytes in memory, or a file region streamed in
//! chunks, always with an exact size.

use std::fmt;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, ReadBuf};

/// Regions up to this size are read into memory in one go; larger ones stream in chunks of
/// this size. 64 KiB keeps a connection's memory bounded while making few trips to the
/// blocking pool.
pub(crate) const CHUNK: usize = 64 * 1024;

/// A response body: nothing, bytes in memory, or a file region streamed in chunks.
///
/// Its [`size_hint`](Body::size_hint) is always exact, so the connection can send
/// `Content-Length`. A streamed region is read in 64 KiB chunks from a file already positioned
/// at its start, and stops exactly at its end; a file that turns out shorter than announced
/// ends the body with an [`UnexpectedEof`](io::ErrorKind::UnexpectedEof) error rather than
/// with fewer bytes than promised.
pub struct FileBody {
    /// What is left to send.
    kind: Kind,
}

/// The three shapes of [`FileBody`].
enum Kind {
    /// Nothing (left) to send.
    Empty,
    /// One non-empty buffer, sent as a single frame.
    Bytes(Bytes),
    /// A file region.
    Stream(FileStream),
}

/// A file region being read chunk by chunk.
struct FileStream {
    /// The file, positioned at the next byte to send.
    file: tokio::fs::File,
    /// Bytes left to send; the body ends when this reaches zero.
    remaining: u64,
    /// The buffer of a read in progress, kept across `Pending` so the next poll reuses it.
    buf: Option<BytesMut>,
}

impl FileBody {
    /// A body with nothing in it.
    #[must_use]
    pub fn empty() -> Self {
        FileBody { kind: Kind::Empty }
    }

    /// A body of bytes already in memory, sent as one frame.
    #[must_use]
    pub fn bytes(b: impl Into<Bytes>) -> Self {
        let b = b.into();
        if b.is_empty() {
            FileBody::empty()
        } else {
            FileBody {
                kind: Kind::Bytes(b),
            }
        }
    }

    /// A body of the next `len` bytes of `file`.
    pub(crate) fn stream(file: tokio::fs::File, len: u64) -> Self {
        if len == 0 {
            return FileBody::empty();
        }
        FileBody {
            kind: Kind::Stream(FileStream {
                file,
                remaining: len,
                buf: None,
            }),
        }
    }

    /// Bytes left to send.
    fn remaining(&self) -> u64 {
        match &self.kind {
            Kind::Empty => 0,
            Kind::Bytes(b) => b.len() as u64,
            Kind::Stream(s) => s.remaining,
        }
    }
}

impl fmt::Debug for FileBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            Kind::Empty => "empty",
            Kind::Bytes(_) => "bytes",
            Kind::Stream(_) => "stream",
        };
        f.debug_struct("FileBody")
            .field("kind", &kind)
            .field("remaining", &self.remaining())
            .finish()
    }
}

impl Body for FileBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = self.get_mut();
        match &mut this.kind {
            Kind::Empty => Poll::Ready(None),
            Kind::Bytes(_) => match std::mem::replace(&mut this.kind, Kind::Empty) {
                Kind::Bytes(b) => Poll::Ready(Some(Ok(Frame::data(b)))),
                _ => Poll::Ready(None),
            },
            Kind::Stream(stream) => {
                let polled = stream.poll_chunk(cx);
                if stream.remaining == 0 {
                    // Drops the file as soon as the last byte (or an error) is out.
                    this.kind = Kind::Empty;
                }
                polled.map(|chunk| Some(chunk.map(Frame::data)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.remaining() == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining())
    }
}

impl FileStream {
    /// Reads the next chunk, at most [`CHUNK`] bytes and never past the region's end. Called
    /// only while `remaining > 0`; on error `remaining` drops to zero, ending the body.
    fn poll_chunk(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<Bytes>> {
        let want = usize::try_from(self.remaining).map_or(CHUNK, |r| r.min(CHUNK));
        // Zeroed rather than uninitialized: filling unset memory would need `unsafe`, and
        // zeroing 64 KiB is small next to reading it from disk.
        let buf = self.buf.get_or_insert_with(|| BytesMut::zeroed(want));
        let mut read = ReadBuf::new(&mut buf[..]);
        match Pin::new(&mut self.file).poll_read(cx, &mut read) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Err(e)) => {
                self.remaining = 0;
                self.buf = None;
                Poll::Ready(Err(e))
            }
            Poll::Ready(Ok(())) => {
                let n = read.filled().len();
                let Some(mut chunk) = self.buf.take() else {
                    return Poll::Ready(Err(io::Error::other("file body lost its buffer")));
                };
                if n == 0 {
                    self.remaining = 0;
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "file ended before the length announced",
                    )));
                }
                chunk.truncate(n);
                self.remaining -= n as u64;
                Poll::Ready(Ok(chunk.freeze()))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_body_shapes() {
        let empty = FileBody::empty();
        assert!(empty.is_end_stream());
        assert_eq!(empty.size_hint().exact(), Some(0));
        assert!(FileBody::bytes(Vec::new()).is_end_stream());
        let bytes = FileBody::bytes("abc");
        assert!(!bytes.is_end_stream());
        assert_eq!(bytes.size_hint().exact(), Some(3));
        assert_eq!(
            format!("{bytes:?}"),
            "FileBody { kind: \"bytes\", remaining: 3 }"
        );
    }
}
