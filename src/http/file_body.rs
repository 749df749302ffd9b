//! The body of a static file response: nothing, bytes in memory, or a file region, always
//! with an exact size. A region goes out with `sendfile` where the connection allows
//! ([`zero_copy`](super::zero_copy)), and is otherwise read in chunks on the blocking pool.

use std::fmt;
use std::fs::File;
use std::future::Future;
use std::io;
use std::os::unix::fs::FileExt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};

use super::zero_copy::ZeroCopy;

/// A region read through memory is read in chunks of this size: 64 KiB keeps a connection's
/// memory bounded while making few trips to the blocking pool.
pub(crate) const CHUNK: usize = 64 * 1024;

/// A response body: nothing, bytes in memory, or a file region.
///
/// Its [`size_hint`](Body::size_hint) is always exact, so the connection can send
/// `Content-Length`. A file region is sent with `sendfile(2)` on a plain HTTP/1 connection,
/// and read in 64 KiB chunks (each a trip to tokio's blocking pool) on any other; either way
/// it stops exactly at its end, and a file that turns out shorter than announced ends the
/// response with an [`UnexpectedEof`](io::ErrorKind::UnexpectedEof) error rather than with
/// fewer bytes than promised.
pub struct FileBody {
    /// What is left to send.
    kind: Kind,
}

/// The shapes of [`FileBody`].
enum Kind {
    /// Nothing (left) to send.
    Empty,
    /// One non-empty buffer, sent as a single frame.
    Bytes(Bytes),
    /// A file region whose bytes are also in memory: sent with `sendfile` where the
    /// connection allows, as one frame from memory otherwise.
    Held(Bytes, Region),
    /// A file region, read through memory.
    Read(FileRead),
    /// A file region sent by the kernel: placeholder frames, the regions noted in the queue.
    Send(Region, Arc<ZeroCopy>),
}

/// What is left of a file region.
struct Region {
    /// The file: shared with the cache and other requests, so only positioned calls
    /// (`pread`, `sendfile` with an offset) are made on it.
    file: Arc<File>,
    /// The next byte to send.
    offset: u64,
    /// Bytes left to send; the body ends when this reaches zero.
    remaining: u64,
}

/// A chunk's read, through [`file_work`](super::file_work).
type Reading = Pin<Box<dyn Future<Output = io::Result<io::Result<Bytes>>> + Send>>;

/// A file region being read chunk by chunk.
struct FileRead {
    /// What is left to read.
    region: Region,
    /// The read in progress on the blocking pool (waiting for its turn, first).
    reading: Option<Reading>,
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

    /// A body of the `len` bytes of `file` from `offset`.
    pub(crate) fn region(file: Arc<File>, offset: u64, len: u64) -> Self {
        if len == 0 {
            return FileBody::empty();
        }
        FileBody {
            kind: Kind::Read(FileRead {
                region: Region {
                    file,
                    offset,
                    remaining: len,
                },
                reading: None,
            }),
        }
    }

    /// A body of `bytes`, which are also the `bytes.len()` bytes of `file` from `offset`.
    pub(crate) fn held(bytes: Bytes, file: Arc<File>, offset: u64) -> Self {
        if bytes.is_empty() {
            return FileBody::empty();
        }
        let remaining = bytes.len() as u64;
        FileBody {
            kind: Kind::Held(
                bytes,
                Region {
                    file,
                    offset,
                    remaining,
                },
            ),
        }
    }

    /// Sends a file region that has not started with `sendfile`, through `queue`, the
    /// connection's.
    pub(crate) fn zero_copy(&mut self, queue: &Arc<ZeroCopy>) {
        let unstarted = match &self.kind {
            Kind::Read(read) => read.reading.is_none(),
            Kind::Held(..) => true,
            _ => false,
        };
        if unstarted {
            match std::mem::replace(&mut self.kind, Kind::Empty) {
                Kind::Read(FileRead { region, .. }) | Kind::Held(_, region) => {
                    self.kind = Kind::Send(region, queue.clone());
                }
                other => self.kind = other,
            }
        }
    }

    /// The whole body when it is in memory (`None`: empty); the body itself otherwise.
    pub(crate) fn into_bytes(self) -> Result<Option<Bytes>, FileBody> {
        match self.kind {
            Kind::Empty => Ok(None),
            Kind::Bytes(b) => Ok(Some(b)),
            _ => Err(self),
        }
    }

    /// Bytes left to send.
    fn remaining(&self) -> u64 {
        match &self.kind {
            Kind::Empty => 0,
            Kind::Bytes(b) | Kind::Held(b, _) => b.len() as u64,
            Kind::Read(r) => r.region.remaining,
            Kind::Send(r, _) => r.remaining,
        }
    }
}

impl fmt::Debug for FileBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            Kind::Empty => "empty",
            Kind::Bytes(_) => "bytes",
            Kind::Held(..) => "held",
            Kind::Read(_) => "read",
            Kind::Send(..) => "sendfile",
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
            Kind::Bytes(_) | Kind::Held(..) => match std::mem::replace(&mut this.kind, Kind::Empty)
            {
                Kind::Bytes(b) | Kind::Held(b, _) => Poll::Ready(Some(Ok(Frame::data(b)))),
                _ => Poll::Ready(None),
            },
            Kind::Read(read) => {
                let polled = read.poll_chunk(cx);
                if read.region.remaining == 0 {
                    // Drops the file as soon as the last byte (or an error) is out.
                    this.kind = Kind::Empty;
                }
                polled.map(|chunk| Some(chunk.map(Frame::data)))
            }
            Kind::Send(region, queue) => {
                let len = usize::try_from(region.remaining)
                    .map_or(ZeroCopy::MAX_FRAME, |r| r.min(ZeroCopy::MAX_FRAME));
                let frame = queue.push(&region.file, region.offset, len);
                region.offset += len as u64;
                region.remaining -= len as u64;
                if region.remaining == 0 {
                    this.kind = Kind::Empty;
                }
                Poll::Ready(Some(Ok(Frame::data(frame))))
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

impl FileRead {
    /// Reads the next chunk, at most [`CHUNK`] bytes and never past the region's end. Called
    /// only while `remaining > 0`; on error `remaining` drops to zero, ending the body.
    fn poll_chunk(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<Bytes>> {
        let region = &mut self.region;
        let reading = self.reading.get_or_insert_with(|| {
            let want = usize::try_from(region.remaining).map_or(CHUNK, |r| r.min(CHUNK));
            let (file, offset) = (region.file.clone(), region.offset);
            Box::pin(super::file_work::run(move || {
                read_chunk(&file, offset, want)
            }))
        });
        let read = match reading.as_mut().poll(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Ok(read)) => read,
            Poll::Ready(Err(e)) => Err(e),
        };
        self.reading = None;
        match read {
            Ok(chunk) => {
                region.offset += chunk.len() as u64;
                region.remaining -= chunk.len() as u64;
                Poll::Ready(Ok(chunk))
            }
            Err(e) => {
                region.remaining = 0;
                Poll::Ready(Err(e))
            }
        }
    }
}

/// Reads exactly `len` bytes of `file` from `offset` (blocking).
fn read_chunk(file: &File, offset: u64, len: usize) -> io::Result<Bytes> {
    // Zeroed rather than uninitialized: filling unset memory would need `unsafe`, and
    // zeroing 64 KiB is small next to reading it.
    let mut buf = BytesMut::zeroed(len);
    file.read_exact_at(&mut buf, offset)
        .map_err(|e| match e.kind() {
            io::ErrorKind::UnexpectedEof => io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "file ended before the length announced",
            ),
            _ => e,
        })?;
    Ok(buf.freeze())
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
