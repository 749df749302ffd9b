//! What every request must satisfy before it is routed: RFC 9112's Host rules (section 3.2)
//! and the listener's `max_headers`. A request that breaks them is answered here, and its
//! connection closed, so a proxy in front and atoll never disagree about which host a request
//! was for.

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Response, StatusCode, Version};

use super::body::Body;

/// Why a request is refused before routing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    /// An HTTP/1.1 request without a Host header.
    NoHost,
    /// More than one Host header line.
    TwoHosts,
    /// A Host header that is not `host[:port]`.
    BadHost,
    /// An HTTP/2 Host header that names another authority than `:authority`.
    OtherAuthority,
    /// More header fields than `max_headers` (HTTP/2: hyper enforces it for HTTP/1).
    TooManyHeaders,
}

impl Refused {
    /// The answer: 400 for the Host rules, 431 for too many headers, with a line saying why.
    pub(crate) fn response(self) -> Response<Body> {
        let (status, why): (_, &'static [u8]) = match self {
            Refused::NoHost => (
                StatusCode::BAD_REQUEST,
                b"bad request: an HTTP/1.1 request needs a Host header\n",
            ),
            Refused::TwoHosts => (
                StatusCode::BAD_REQUEST,
                b"bad request: more than one Host header\n",
            ),
            Refused::BadHost => (
                StatusCode::BAD_REQUEST,
                b"bad request: the Host header is not host[:port]\n",
            ),
            Refused::OtherAuthority => (
                StatusCode::BAD_REQUEST,
                b"bad request: the Host header and :authority differ\n",
            ),
            Refused::TooManyHeaders => (
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                b"too many header fields\n",
            ),
        };
        let mut r = Response::new(Body::full(Bytes::from_static(why)));
        *r.status_mut() = status;
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        r
    }
}

/// Checks `req` against the rules; `None` when it may be routed. On the common request (a few
/// headers, one short Host) this is one pass over the headers, cheaper than hashing the name
/// (callgrind: about 110 instructions against 135), and a table lookup per byte of the Host
/// value.
#[inline]
pub(crate) fn check<B>(req: &http::Request<B>, max_headers: usize) -> Option<Refused> {
    let headers = req.headers();
    if headers.len() > max_headers {
        return Some(Refused::TooManyHeaders);
    }
    // One pass over a small map finds the Host line and any second one, without hashing.
    let mut host = None;
    if headers.len() <= 8 {
        for (name, value) in headers {
            if name == header::HOST {
                if host.is_some() {
                    return Some(Refused::TwoHosts);
                }
                host = Some(value);
            }
        }
    } else {
        let mut all = headers.get_all(header::HOST).iter();
        host = all.next();
        if all.next().is_some() {
            return Some(Refused::TwoHosts);
        }
    }
    match host {
        None if req.version() == Version::HTTP_11 => Some(Refused::NoHost),
        None => None,
        Some(host) if !valid_host(host.as_bytes()) => Some(Refused::BadHost),
        // RFC 9113 8.3.1: an HTTP/2 request whose Host names another authority than its
        // `:authority` is malformed (a proxy might route by either).
        Some(host) if req.version() == Version::HTTP_2 => match req.uri().authority() {
            Some(authority)
                if !authority
                    .as_str()
                    .eq_ignore_ascii_case(host.to_str().unwrap_or("")) =>
            {
                Some(Refused::OtherAuthority)
            }
            _ => None,
        },
        Some(_) => None,
    }
}

/// Whether `value` is RFC 3986's `host [ ":" port ]`: a bracketed IP literal, or a name (or
/// IPv4 address) of unreserved, percent and sub-delimiter characters; the port digits. Empty
/// is allowed: a client sends an empty Host when the target has no authority.
#[inline]
fn valid_host(value: &[u8]) -> bool {
    let port = if let Some(literal) = value.strip_prefix(b"[") {
        let Some(end) = literal.iter().position(|&b| b == b']') else {
            return false;
        };
        let inside = &literal[..end];
        if inside.is_empty() || !inside.iter().all(|&b| b == b':' || name_byte(b)) {
            return false;
        }
        &literal[end + 1..]
    } else {
        let split = value
            .iter()
            .position(|&b| !name_byte(b))
            .unwrap_or(value.len());
        &value[split..]
    };
    match port.split_first() {
        None => true,
        Some((b':', digits)) => digits.iter().all(u8::is_ascii_digit),
        Some(_) => false,
    }
}

/// RFC 3986's `unreserved / pct-encoded / sub-delims`, byte by byte: a table lookup.
#[inline(always)]
fn name_byte(b: u8) -> bool {
    NAME_BYTES[b as usize]
}

/// Which bytes [`name_byte`] takes.
static NAME_BYTES: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        table[b] = c.is_ascii_alphanumeric()
            || matches!(
                c,
                b'-' | b'.'
                    | b'_'
                    | b'~'
                    | b'%'
                    | b'!'
                    | b'$'
                    | b'&'
                    | b'\''
                    | b'('
                    | b')'
                    | b'*'
                    | b'+'
                    | b','
                    | b';'
                    | b'='
            );
        b += 1;
    }
    table
};

#[cfg(test)]
mod tests {
    use super::*;

    fn request(version: Version, hosts: &[&str]) -> http::Request<()> {
        let mut b = http::Request::builder().version(version).uri("/");
        for h in hosts {
            b = b.header(header::HOST, *h);
        }
        b.body(()).unwrap()
    }

    #[test]
    fn host_values() {
        for good in [
            "",
            "a",
            "example.com",
            "example.com:8080",
            "a:",
            "127.0.0.1:80",
            "[::1]",
            "[::1]:8080",
            "[v1.fe80::a+en1]",
            "xn--bcher-kva.example",
            "a%20b",
        ] {
            assert!(valid_host(good.as_bytes()), "{good:?}");
        }
        for bad in [
            "a b c", "a b", " a", "a:b", "a:80:90", "[::1", "[]", "[::1]x", "a/b", "a@b", "a\tb",
            "a?b", "[::1]:8o",
        ] {
            assert!(!valid_host(bad.as_bytes()), "{bad:?}");
        }
    }

    #[test]
    fn host_rules_of_rfc_9112() {
        assert_eq!(check(&request(Version::HTTP_11, &["a"]), 100), None);
        assert_eq!(
            check(&request(Version::HTTP_11, &[]), 100),
            Some(Refused::NoHost)
        );
        assert_eq!(check(&request(Version::HTTP_10, &[]), 100), None);
        assert_eq!(check(&request(Version::HTTP_2, &[]), 100), None);
        assert_eq!(
            check(&request(Version::HTTP_11, &["a", "b"]), 100),
            Some(Refused::TwoHosts)
        );
        assert_eq!(
            check(&request(Version::HTTP_10, &["a", "a"]), 100),
            Some(Refused::TwoHosts)
        );
        assert_eq!(
            check(&request(Version::HTTP_11, &["a b c"]), 100),
            Some(Refused::BadHost)
        );
        assert_eq!(
            check(&request(Version::HTTP_11, &["a"]), 0),
            Some(Refused::TooManyHeaders)
        );
        let h2 = |authority: &str, host: &str| {
            let req = http::Request::builder()
                .version(Version::HTTP_2)
                .uri(format!("http://{authority}/"))
                .header(header::HOST, host)
                .body(())
                .unwrap();
            check(&req, 100)
        };
        assert_eq!(h2("a.example", "a.example"), None);
        assert_eq!(h2("a.example:8080", "A.example:8080"), None);
        assert_eq!(h2("a.example", "b.example"), Some(Refused::OtherAuthority));
    }
}
