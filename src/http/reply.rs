//! What a resource answers: a status, headers and a body that is text, bytes, or a serde value
//! sent as JSON or MessagePack, whichever the client accepts.

use std::fmt;

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue, CONTENT_TYPE};
use http::{HeaderMap, Method, Response, StatusCode};
use serde::Serialize;

use super::body::Body;
use super::fault::Fault;

/// MessagePack's media type, as atoll sends it.
pub const MSGPACK: &str = "application/msgpack";
const JSON: HeaderValue = HeaderValue::from_static("application/json");
const MSGPACK_VALUE: HeaderValue = HeaderValue::from_static(MSGPACK);
const TEXT: HeaderValue = HeaderValue::from_static("text/plain; charset=utf-8");
const OCTETS: HeaderValue = HeaderValue::from_static("application/octet-stream");

/// A resource's answer: status, headers, body.
///
/// Build one from what you have: a `&str` or `String` (text, 200), `Vec<u8>` or `Bytes`
/// (bytes, 200), a [`StatusCode`] (no body), [`Data`] (a serde value), or a tuple of status and
/// body, or status, headers and body, as leptus's callbacks return:
///
/// ```
/// use atoll::http::{Data, Reply};
/// use http::{HeaderMap, StatusCode};
///
/// let a: Reply = "hello".into();
/// let b: Reply = (StatusCode::CREATED, Data(vec![1, 2, 3])).into();
/// let c: Reply = (StatusCode::OK, HeaderMap::new(), "text").into();
/// let d = Reply::new(StatusCode::NOT_FOUND).header("x-why", "no such item");
/// # let _ = (a, b, c, d);
/// ```
pub struct Reply {
    pub(crate) status: StatusCode,
    /// Boxed and made on first use: most replies add none, and a small `Reply` is cheap to
    /// move through the resource's state machines.
    headers: Option<Box<HeaderMap>>,
    pub(crate) body: Content,
}

/// A body not yet encoded.
pub(crate) enum Content {
    Empty,
    /// Empty, for a method the resource lists but does not implement: answered `500`, the
    /// fault noted for the listener's log.
    Unimplemented(Method),
    Bytes(Bytes, Plain),
    Data(Box<dyn Encode>),
}

/// The content type of a bytes body.
#[derive(Clone, Copy)]
pub(crate) enum Plain {
    Text,
    Octets,
}

/// A serde value that can be written as JSON or MessagePack once the client's `Accept` is
/// known.
pub(crate) trait Encode: Send {
    fn json(&self) -> Result<Vec<u8>, String>;
    fn msgpack(&self) -> Result<Vec<u8>, String>;
}

struct Value<T>(T);

impl<T: Serialize + Send> Encode for Value<T> {
    fn json(&self) -> Result<Vec<u8>, String> {
        serde_json::to_vec(&self.0).map_err(|e| e.to_string())
    }

    fn msgpack(&self) -> Result<Vec<u8>, String> {
        rmp_serde::to_vec_named(&self.0).map_err(|e| e.to_string())
    }
}

/// A serde-serializable body: sent as JSON, or as MessagePack when the request's `Accept`
/// prefers `application/msgpack` (also `application/x-msgpack`, `application/vnd.msgpack`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Data<T>(pub T);

impl Reply {
    /// A reply with this status and no body.
    pub fn new(status: StatusCode) -> Reply {
        Reply {
            status,
            headers: None,
            body: Content::Empty,
        }
    }

    /// 200 with a `text/plain` body.
    pub fn text(text: impl Into<String>) -> Reply {
        Reply::bytes_as(Bytes::from(text.into()), Plain::Text)
    }

    /// 200 with an `application/octet-stream` body.
    pub fn bytes(bytes: impl Into<Bytes>) -> Reply {
        Reply::bytes_as(bytes.into(), Plain::Octets)
    }

    fn bytes_as(bytes: Bytes, content_type: Plain) -> Reply {
        Reply {
            status: StatusCode::OK,
            headers: None,
            body: Content::Bytes(bytes, content_type),
        }
    }

    /// 200 with a serde value, as JSON or MessagePack (see [`Data`]).
    pub fn data<T: Serialize + Send + 'static>(value: T) -> Reply {
        Reply {
            status: StatusCode::OK,
            headers: None,
            body: Content::Data(Box::new(Value(value))),
        }
    }

    /// Sets the status.
    pub fn with_status(mut self, status: StatusCode) -> Reply {
        self.status = status;
        self
    }

    /// Adds a header. A name or value that is not valid HTTP is dropped, with a debug log:
    /// use [`headers_mut`](Reply::headers_mut) to handle that yourself.
    pub fn header(mut self, name: &str, value: &str) -> Reply {
        match (HeaderName::try_from(name), HeaderValue::try_from(value)) {
            (Ok(n), Ok(v)) => {
                self.headers_mut().append(n, v);
            }
            _ => tracing::debug!(target: "atoll::http", name, "invalid header dropped"),
        }
        self
    }

    /// The status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The headers.
    pub fn headers(&self) -> &HeaderMap {
        static NONE: std::sync::OnceLock<HeaderMap> = std::sync::OnceLock::new();
        match &self.headers {
            Some(h) => h,
            None => NONE.get_or_init(HeaderMap::new),
        }
    }

    /// The headers, to change.
    pub fn headers_mut(&mut self) -> &mut HeaderMap {
        self.headers.get_or_insert_with(Box::default)
    }

    /// Encodes the body for a client that sent `request_headers`: JSON unless its `Accept`
    /// asks for MessagePack. A value that fails to encode is a 500.
    pub(crate) fn into_response(self, request_headers: &HeaderMap) -> Response<Body> {
        let Reply {
            status,
            headers,
            body,
        } = self;
        let (body, content_type) = match body {
            Content::Empty => (Body::empty(), None),
            Content::Unimplemented(method) => return Fault::Unimplemented(method).response(),
            Content::Bytes(b, Plain::Text) => (Body::full(b), Some(TEXT)),
            Content::Bytes(b, Plain::Octets) => (Body::full(b), Some(OCTETS)),
            Content::Data(value) => {
                let (encoded, t) = if msgpack_wanted(request_headers.get(http::header::ACCEPT)) {
                    (value.msgpack(), MSGPACK_VALUE)
                } else {
                    (value.json(), JSON)
                };
                match encoded {
                    Ok(bytes) => (Body::full(bytes), Some(t)),
                    // Logged by the connection, within its listener's budget.
                    Err(e) => return Fault::Encode(e.to_string()).response(),
                }
            }
        };
        let mut response = Response::new(body);
        *response.status_mut() = status;
        // The response's own (empty) map unless the resource set headers: no second map made
        // and dropped.
        let set = headers.is_some();
        if let Some(h) = headers {
            *response.headers_mut() = *h;
        }
        if let Some(t) = content_type {
            if !set || !response.headers().contains_key(CONTENT_TYPE) {
                response.headers_mut().insert(CONTENT_TYPE, t);
            }
        }
        response
    }
}

/// Whether `Accept` ranks a MessagePack type above JSON.
fn msgpack_wanted(accept: Option<&HeaderValue>) -> bool {
    let Some(accept) = accept.and_then(|a| a.to_str().ok()) else {
        return false;
    };
    let mut best: Option<(f32, bool)> = None;
    for item in accept.split(',') {
        let mut parts = item.split(';');
        let media = parts.next().unwrap_or("").trim();
        let q = parts
            .filter_map(|p| p.trim().strip_prefix("q="))
            .find_map(|q| q.trim().parse::<f32>().ok())
            .unwrap_or(1.0);
        let msgpack = if media.eq_ignore_ascii_case(MSGPACK)
            || media.eq_ignore_ascii_case("application/x-msgpack")
            || media.eq_ignore_ascii_case("application/vnd.msgpack")
        {
            true
        } else if media.eq_ignore_ascii_case("application/json")
            || media == "*/*"
            || media == "application/*"
        {
            false
        } else {
            continue;
        };
        // Ties go to the earlier entry.
        if q > 0.0 && best.is_none_or(|(bq, _)| q > bq) {
            best = Some((q, msgpack));
        }
    }
    best.is_some_and(|(_, msgpack)| msgpack)
}

impl fmt::Debug for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let body = match &self.body {
            Content::Empty | Content::Unimplemented(_) => "empty",
            Content::Bytes(..) => "bytes",
            Content::Data(_) => "data",
        };
        f.debug_struct("Reply")
            .field("status", &self.status)
            .field("headers", self.headers())
            .field("body", &body)
            .finish()
    }
}

impl From<StatusCode> for Reply {
    fn from(status: StatusCode) -> Reply {
        Reply::new(status)
    }
}

impl From<&'static str> for Reply {
    fn from(text: &'static str) -> Reply {
        Reply::bytes_as(Bytes::from_static(text.as_bytes()), Plain::Text)
    }
}

impl From<String> for Reply {
    fn from(text: String) -> Reply {
        Reply::text(text)
    }
}

impl From<Vec<u8>> for Reply {
    fn from(bytes: Vec<u8>) -> Reply {
        Reply::bytes(bytes)
    }
}

impl From<Bytes> for Reply {
    fn from(bytes: Bytes) -> Reply {
        Reply::bytes(bytes)
    }
}

impl<T: Serialize + Send + 'static> From<Data<T>> for Reply {
    fn from(Data(value): Data<T>) -> Reply {
        Reply::data(value)
    }
}

impl<B: Into<Reply>> From<(StatusCode, B)> for Reply {
    fn from((status, body): (StatusCode, B)) -> Reply {
        body.into().with_status(status)
    }
}

impl<B: Into<Reply>> From<(StatusCode, HeaderMap, B)> for Reply {
    fn from((status, headers, body): (StatusCode, HeaderMap, B)) -> Reply {
        let mut reply = body.into().with_status(status);
        for (name, value) in headers {
            if let Some(name) = name {
                reply.headers_mut().append(name, value);
            }
        }
        reply
    }
}

impl<T: Into<Reply>, E: Into<Reply>> From<Result<T, E>> for Reply {
    fn from(result: Result<T, E>) -> Reply {
        match result {
            Ok(r) => r.into(),
            Err(e) => e.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accept(v: &str) -> bool {
        msgpack_wanted(Some(&HeaderValue::from_str(v).unwrap()))
    }

    #[test]
    fn msgpack_only_when_asked_for_first() {
        assert!(accept("application/msgpack"));
        assert!(accept("application/x-msgpack, application/json"));
        assert!(!accept("application/json, application/msgpack"));
        assert!(accept("application/json;q=0.5, application/msgpack"));
        assert!(!accept("application/msgpack;q=0"));
        assert!(!accept("*/*"));
        assert!(!msgpack_wanted(None));
    }

    #[test]
    fn data_is_encoded_by_accept() {
        let json = Reply::data(vec![1, 2]).into_response(&HeaderMap::new());
        assert_eq!(json.headers()[CONTENT_TYPE], JSON);
        let mut asks = HeaderMap::new();
        asks.insert(http::header::ACCEPT, MSGPACK_VALUE);
        let mp = Reply::data(vec![1, 2]).into_response(&asks);
        assert_eq!(mp.headers()[CONTENT_TYPE], MSGPACK);
    }
}
