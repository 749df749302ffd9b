//! The request a resource sees: method, path, headers, the bindings its route captured, and
//! the body, read in full (up to the listener's `max_body_size`) before the resource runs.
// The errors of the body readers are the 400 replies themselves, returned straight from a
// verb; boxing them would only add an allocation on the failure path of every caller.
#![allow(clippy::result_large_err)]

use std::fmt;
use std::sync::Arc;

use base64::Engine;
use bytes::Bytes;
use http::header::{HeaderName, HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use http::{Extensions, HeaderMap, Method, StatusCode, Uri, Version};
use rustls::pki_types::CertificateDer;
use serde::de::DeserializeOwned;

use super::path::Bindings;
use super::reply::Reply;
use crate::addr::Addr;

/// The first value of header `name`. Most requests carry a handful of headers, and comparing
/// a handful of names costs less than hashing one, so with few headers the names are scanned
/// first (one entry per name, no values visited) and the map is asked only for one present.
pub(crate) fn find_header<'h>(
    headers: &'h HeaderMap,
    name: &HeaderName,
) -> Option<&'h HeaderValue> {
    if headers.keys_len() > 8 || headers.keys().any(|n| n == name) {
        return headers.get(name);
    }
    None
}

/// One HTTP request, as a [`Resource`](super::Resource) gets it.
pub struct Request {
    pub(crate) parts: http::request::Parts,
    pub(crate) body: Bytes,
    pub(crate) bindings: Bindings,
    pub(crate) path_info: String,
    pub(crate) peer: Addr,
    /// The client's certificate chain, shared by its connection's requests.
    pub(crate) peer_certificates: Option<Arc<[CertificateDer<'static>]>>,
}

impl Request {
    /// The method.
    pub fn method(&self) -> &Method {
        &self.parts.method
    }

    /// The request target.
    pub fn uri(&self) -> &Uri {
        &self.parts.uri
    }

    /// The path, as sent (percent-encoded).
    pub fn path(&self) -> &str {
        self.parts.uri.path()
    }

    /// The query string, without the `?`.
    pub fn query(&self) -> Option<&str> {
        self.parts.uri.query()
    }

    /// The value of query parameter `name`, percent-decoded (`+` is a space).
    pub fn query_param(&self, name: &str) -> Option<String> {
        self.query()?.split('&').find_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(k) == name).then(|| decode(v))
        })
    }

    /// The HTTP version.
    pub fn version(&self) -> Version {
        self.parts.version
    }

    /// The headers.
    pub fn headers(&self) -> &HeaderMap {
        &self.parts.headers
    }

    /// One header's value, when present and visible ASCII.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.parts.headers.get(name)?.to_str().ok()
    }

    /// The value bound to `:name` in the route's host or path pattern (percent-decoded).
    pub fn binding(&self, name: &str) -> Option<&str> {
        self.bindings.get(name)
    }

    /// Every binding, in pattern order (host first).
    pub fn bindings(&self) -> impl Iterator<Item = (&str, &str)> {
        self.bindings.iter()
    }

    /// What a trailing `[...]` matched: the rest of the path, still percent-encoded, without a
    /// leading `/`. Empty when the route has no wildcard.
    pub fn path_info(&self) -> &str {
        &self.path_info
    }

    /// The client's address.
    pub fn peer_addr(&self) -> &Addr {
        &self.peer
    }

    /// The certificate chain the client presented (leaf first), on `https` listeners that ask
    /// for one ([`TlsOptions::client_ca`](crate::TlsOptions::client_ca)); `None` when it
    /// presented none, which only [`ClientAuth::Optional`](crate::ClientAuth::Optional) lets
    /// through.
    pub fn peer_certificates(&self) -> Option<&[CertificateDer<'static>]> {
        self.peer_certificates.as_deref()
    }

    /// Values a hook left for later ones (`init` can store the authenticated user, say).
    pub fn extensions(&self) -> &Extensions {
        &self.parts.extensions
    }

    /// The extensions, to change.
    pub fn extensions_mut(&mut self) -> &mut Extensions {
        &mut self.parts.extensions
    }

    /// The body.
    pub fn body(&self) -> &Bytes {
        &self.body
    }

    /// The body as UTF-8 text, or a 400 reply saying it is not.
    pub fn text(&self) -> Result<&str, Reply> {
        std::str::from_utf8(&self.body)
            .map_err(|_| bad_request("the body is not UTF-8 text".to_owned()))
    }

    /// The body decoded from JSON, or a 400 reply naming the fault.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, Reply> {
        serde_json::from_slice(&self.body).map_err(|e| bad_request(format!("bad JSON body: {e}")))
    }

    /// The body decoded by its `Content-Type`: MessagePack for `application/msgpack` (or
    /// `x-msgpack`, `vnd.msgpack`), JSON otherwise. A body that does not decode is a 400
    /// reply naming the fault.
    pub fn data<T: DeserializeOwned>(&self) -> Result<T, Reply> {
        let msgpack = self
            .header(CONTENT_TYPE.as_str())
            .and_then(|t| t.split(';').next())
            .is_some_and(|t| {
                let t = t.trim();
                t.eq_ignore_ascii_case("application/msgpack")
                    || t.eq_ignore_ascii_case("application/x-msgpack")
                    || t.eq_ignore_ascii_case("application/vnd.msgpack")
            });
        if msgpack {
            rmp_serde::from_slice(&self.body)
                .map_err(|e| bad_request(format!("bad MessagePack body: {e}")))
        } else {
            self.json()
        }
    }

    /// The user and password of an `Authorization: Basic` header.
    pub fn basic_auth(&self) -> Option<(String, String)> {
        let value = self.header(AUTHORIZATION.as_str())?;
        let (scheme, token) = value.trim().split_once(' ')?;
        if !scheme.eq_ignore_ascii_case("basic") {
            return None;
        }
        let raw = base64::engine::general_purpose::STANDARD
            .decode(token.trim())
            .ok()?;
        let text = String::from_utf8(raw).ok()?;
        let (user, password) = text.split_once(':')?;
        Some((user.to_owned(), password.to_owned()))
    }
}

fn bad_request(message: String) -> Reply {
    Reply::text(message).with_status(StatusCode::BAD_REQUEST)
}

fn decode(text: &str) -> String {
    let spaced = text.replace('+', " ");
    percent_encoding::percent_decode_str(&spaced)
        .decode_utf8_lossy()
        .into_owned()
}

impl fmt::Debug for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Request")
            .field("method", &self.parts.method)
            .field("uri", &self.parts.uri)
            .field("bindings", &self.bindings)
            .field("body_len", &self.body.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::header::{HOST, ORIGIN};

    fn headers(n: usize) -> HeaderMap {
        let mut h = HeaderMap::new();
        for i in 0..n {
            h.insert(
                HeaderName::try_from(format!("x-filler-{i}")).unwrap(),
                HeaderValue::from_static("f"),
            );
        }
        h.append(HOST, HeaderValue::from_static("example.com"));
        h.append(HOST, HeaderValue::from_static("second.example.com"));
        h
    }

    #[test]
    fn find_header_answers_as_get_does_with_few_or_many_headers() {
        for n in [0, 3, 6, 7, 20] {
            let h = headers(n);
            assert_eq!(find_header(&h, &HOST), h.get(HOST), "{n} filler headers");
            assert_eq!(find_header(&h, &HOST).unwrap(), "example.com");
            assert_eq!(find_header(&h, &ORIGIN), None);
            let custom = HeaderName::from_static("x-filler-0");
            assert_eq!(find_header(&h, &custom), h.get(&custom));
        }
    }
}
