//! The response body every HTTP route answers with: nothing, bytes, a file, or the boxed body of
//! a mounted `tower::Service`.

use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::BodyExt;

use super::activity::{Activity, Streaming};
use super::file_body::FileBody;
use crate::error::BoxError;

/// A response body. The common cases (empty, in memory, a file) are not boxed, so a plain
/// reply costs no allocation beyond its bytes.
pub struct Body(Kind);

enum Kind {
    Full(Option<Bytes>),
    // Boxed: a file body is large, and keeping it inline would make every response bigger.
    // Bodies that stream are counted on their connection while hyper sends them.
    File(Box<FileBody>, Option<Streaming>),
    Boxed(UnsyncBoxBody<Bytes, BoxError>, Option<Streaming>),
}

impl Body {
    /// No bytes.
    pub fn empty() -> Body {
        Body(Kind::Full(None))
    }

    /// These bytes.
    pub fn full(bytes: impl Into<Bytes>) -> Body {
        let bytes = bytes.into();
        Body(Kind::Full((!bytes.is_empty()).then_some(bytes)))
    }

    /// Any other body, boxed.
    pub fn new<B>(body: B) -> Body
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        Body(Kind::Boxed(body.map_err(Into::into).boxed_unsync(), None))
    }

    /// Counts this body on `activity` until it is dropped, if it streams; a file region goes
    /// out with `sendfile` if the connection allows.
    pub(crate) fn watch(&mut self, activity: &Arc<Activity>) {
        match &mut self.0 {
            Kind::Full(_) => {}
            Kind::File(body, watch) => {
                *watch = Some(Streaming::new(activity));
                if let Some(queue) = activity.zero_copy() {
                    body.zero_copy(queue);
                }
            }
            Kind::Boxed(_, watch) => *watch = Some(Streaming::new(activity)),
        }
    }
}

impl From<FileBody> for Body {
    fn from(body: FileBody) -> Body {
        // A file's contents already in memory are a plain body: no box, nothing streams.
        match body.into_bytes() {
            Ok(bytes) => Body(Kind::Full(bytes)),
            Err(body) => Body(Kind::File(Box::new(body), None)),
        }
    }
}

impl Default for Body {
    fn default() -> Body {
        Body::empty()
    }
}

impl fmt::Debug for Body {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Kind::Full(b) => f.debug_tuple("Body::Full").field(b).finish(),
            Kind::File(b, _) => f.debug_tuple("Body::File").field(b).finish(),
            Kind::Boxed(..) => f.write_str("Body::Boxed"),
        }
    }
}

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = BoxError;

    #[inline]
    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match &mut self.get_mut().0 {
            Kind::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            Kind::File(b, _) => Pin::new(&mut **b).poll_frame(cx).map_err(Into::into),
            Kind::Boxed(b, _) => Pin::new(b).poll_frame(cx),
        }
    }

    #[inline]
    fn is_end_stream(&self) -> bool {
        match &self.0 {
            Kind::Full(b) => b.is_none(),
            Kind::File(b, _) => b.is_end_stream(),
            Kind::Boxed(b, _) => b.is_end_stream(),
        }
    }

    #[inline]
    fn size_hint(&self) -> SizeHint {
        match &self.0 {
            Kind::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            Kind::File(b, _) => b.size_hint(),
            Kind::Boxed(b, _) => b.size_hint(),
        }
    }
}
