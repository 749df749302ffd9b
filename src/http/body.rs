//! The response body every HTTP route answers with: nothing, bytes, a file, or the boxed body of
//! a mounted `tower::Service`.

use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::BodyExt;

use super::file_body::FileBody;
use crate::error::BoxError;

/// A response body. The common cases (empty, in memory, a file) are not boxed, so a plain
/// reply costs no allocation beyond its bytes.
pub struct Body(Kind);

enum Kind {
    Full(Option<Bytes>),
    // Boxed: a file body is large, and keeping it inline would make every response bigger.
    File(Box<FileBody>),
    Boxed(UnsyncBoxBody<Bytes, BoxError>),
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
        Body(Kind::Boxed(body.map_err(Into::into).boxed_unsync()))
    }
}

impl From<FileBody> for Body {
    fn from(body: FileBody) -> Body {
        Body(Kind::File(Box::new(body)))
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
            Kind::File(b) => f.debug_tuple("Body::File").field(b).finish(),
            Kind::Boxed(_) => f.write_str("Body::Boxed"),
        }
    }
}

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match &mut self.get_mut().0 {
            Kind::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            Kind::File(b) => Pin::new(&mut **b).poll_frame(cx).map_err(Into::into),
            Kind::Boxed(b) => Pin::new(b).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.0 {
            Kind::Full(b) => b.is_none(),
            Kind::File(b) => b.is_end_stream(),
            Kind::Boxed(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.0 {
            Kind::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            Kind::File(b) => b.size_hint(),
            Kind::Boxed(b) => b.size_hint(),
        }
    }
}
