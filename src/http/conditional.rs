//! Conditional and range requests for a static file: its validators (`ETag`,
//! `Last-Modified`), the preconditions judged against them (`304`, `412`), and the byte range
//! a `Range` header asks for.

use std::time::{SystemTime, UNIX_EPOCH};

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Response, StatusCode};

use super::encoding::Encoding;
use super::file_body::FileBody;

/// Seconds since the epoch of 10000-01-01: `httpdate` cannot write a date from then on (it
/// panics), nor one before 1970, so such modification times are simply not sent.
pub(crate) const HTTP_DATE_END: u64 = 253_402_300_800;

// ===== validators and preconditions =====

/// The validators of the file being served, and the precondition logic that uses them.
#[derive(Debug)]
pub(crate) struct Validators {
    /// The quoted entity tag: length and modification time (nanoseconds) in hex, plus the
    /// coding for a variant, e.g. `"1a2b-17f3c0e8d4a1b2c0"` or `"9f1-17f3c0e8d4a1b2c0-br"`.
    /// Strong in practice: a change that keeps both the size and the nanosecond mtime is
    /// vanishingly rare, and a variant never shares the original's tag.
    etag: String,
    /// The same as a header value, made once.
    etag_value: Option<HeaderValue>,
    /// The modification time in whole seconds since the epoch, when there is one.
    modified: Option<u64>,
    /// `Last-Modified`, when the time can be written as an HTTP date.
    last_modified: Option<HeaderValue>,
}

/// What the preconditions decided.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Precondition {
    /// Serve the file.
    Proceed,
    /// `304 Not Modified`.
    NotModified,
    /// `412 Precondition Failed`.
    Failed,
}

impl Validators {
    /// The validators of a file of `len` bytes last modified at `mtime`, or of its variant
    /// in `encoding`.
    pub(crate) fn of(
        len: u64,
        mtime: Option<SystemTime>,
        encoding: Option<Encoding>,
    ) -> Validators {
        let since_epoch = mtime.and_then(|t| t.duration_since(UNIX_EPOCH).ok());
        // A time before the epoch (or none) still gives a usable tag from the length.
        let nanos = since_epoch.map_or(0, |d| d.as_nanos());
        let etag = match encoding {
            Some(encoding) => format!("\"{len:x}-{nanos:x}-{}\"", encoding.token()),
            None => format!("\"{len:x}-{nanos:x}\""),
        };
        let modified = since_epoch.map(|d| d.as_secs());
        let last_modified = match (modified, mtime) {
            (Some(secs), Some(time)) if secs < HTTP_DATE_END => {
                HeaderValue::try_from(httpdate::fmt_http_date(time)).ok()
            }
            _ => None,
        };
        // The tag is hex digits and a coding name, which a header always holds; were it not,
        // leaving the header out would beat failing the response.
        let etag_value = HeaderValue::from_str(&etag).ok();
        Validators {
            etag,
            etag_value,
            modified,
            last_modified,
        }
    }

    /// Evaluates the preconditions in the order of RFC 9110 §13.2.2 (for GET and HEAD).
    pub(crate) fn evaluate(&self, headers: &HeaderMap) -> Precondition {
        if headers.contains_key(header::IF_MATCH) {
            if !self.matches_any(headers, header::IF_MATCH, true) {
                return Precondition::Failed;
            }
        } else if let (Some(since), Some(modified)) = (
            header_date(headers, header::IF_UNMODIFIED_SINCE),
            self.modified,
        ) {
            if modified > since {
                return Precondition::Failed;
            }
        }
        if headers.contains_key(header::IF_NONE_MATCH) {
            if self.matches_any(headers, header::IF_NONE_MATCH, false) {
                return Precondition::NotModified;
            }
        } else if let (Some(since), Some(modified)) = (
            header_date(headers, header::IF_MODIFIED_SINCE),
            self.modified,
        ) {
            if modified <= since {
                return Precondition::NotModified;
            }
        }
        Precondition::Proceed
    }

    /// Whether any entity tag listed in the `name` headers (or `*`) matches ours, by strong
    /// or weak comparison. A list that cannot be read matches nothing from where it breaks.
    fn matches_any(&self, headers: &HeaderMap, name: HeaderName, strong: bool) -> bool {
        let ours = self.opaque();
        headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|list| {
                if list.trim() == "*" {
                    return true;
                }
                let mut rest = list;
                loop {
                    rest = rest.trim_start_matches([' ', '\t', ',']);
                    if rest.is_empty() {
                        return false;
                    }
                    let (weak, tag) = match rest.strip_prefix("W/") {
                        Some(tag) => (true, tag),
                        None => (false, rest),
                    };
                    // An opaque tag may hold commas, so the list is read tag by tag, not split.
                    let Some((opaque, after)) =
                        tag.strip_prefix('"').and_then(|t| t.split_once('"'))
                    else {
                        return false;
                    };
                    // Ours is strong, so strong comparison only fails on the other side's `W/`.
                    if opaque == ours && !(strong && weak) {
                        return true;
                    }
                    rest = after;
                }
            })
    }

    /// Whether a Range header may be honoured given `If-Range` (RFC 9110 §13.1.5): yes
    /// without one; with one, only if it is our (strong) tag or exactly our modification
    /// second. Otherwise the full file is sent.
    pub(crate) fn if_range_allows(&self, headers: &HeaderMap) -> bool {
        let Some(value) = headers.get(header::IF_RANGE) else {
            return true;
        };
        let Ok(value) = value.to_str() else {
            return false;
        };
        let value = value.trim();
        if value.starts_with('"') {
            value == self.etag
        } else if value.starts_with("W/") {
            false
        } else {
            match (httpdate::parse_http_date(value), self.modified) {
                (Ok(date), Some(modified)) => seconds(date) == Some(modified),
                _ => false,
            }
        }
    }

    /// The tag without its quotes.
    fn opaque(&self) -> &str {
        self.etag.trim_matches('"')
    }

    /// Adds `ETag`, `Last-Modified` and `Vary` to a response for this file.
    pub(crate) fn write(&self, headers: &mut HeaderMap) {
        if let Some(etag) = &self.etag_value {
            headers.insert(header::ETAG, etag.clone());
        }
        if let Some(last_modified) = &self.last_modified {
            headers.insert(header::LAST_MODIFIED, last_modified.clone());
        }
        // Sent for every file, whether or not it has a variant: finding out would cost two
        // more look-ups per request, and an unneeded Vary only makes caches a bit stricter.
        headers.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
    }

    /// `304 Not Modified`, with the validators and no body (nor Content-Length, which would
    /// have to be the full response's).
    pub(crate) fn not_modified(&self) -> Response<FileBody> {
        let mut response = Response::new(FileBody::empty());
        *response.status_mut() = StatusCode::NOT_MODIFIED;
        self.write(response.headers_mut());
        response
    }
}

/// The date in the `name` header, in seconds since the epoch; `None` when absent or not a
/// valid HTTP date (then the header is ignored, as RFC 9110 asks).
fn header_date(headers: &HeaderMap, name: HeaderName) -> Option<u64> {
    let value = headers.get(name)?.to_str().ok()?;
    seconds(httpdate::parse_http_date(value).ok()?)
}

/// Whole seconds since the epoch; HTTP dates have no finer precision.
pub(crate) fn seconds(time: SystemTime) -> Option<u64> {
    time.duration_since(UNIX_EPOCH).ok().map(|d| d.as_secs())
}

// ===== ranges =====

/// The part of the file a request asks for.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Span {
    /// All of it: no Range, an unreadable one, or several ranges.
    Whole,
    /// Bytes `first..=last`, both within the file.
    Part {
        /// First byte offset.
        first: u64,
        /// Last byte offset, inclusive.
        last: u64,
    },
    /// A valid range that lies entirely past the end: `416`.
    Unsatisfiable,
}

/// Reads a Range header against a file of `len` bytes (RFC 9110 §14.1.2).
///
/// Only single `bytes` ranges are honoured. Several ranges get the whole file (a `200`,
/// which the RFC allows), sparing a multipart body that few clients need. A header in
/// another unit, or that is not well formed, is ignored, as the RFC asks.
pub(crate) fn parse_range(value: &HeaderValue, len: u64) -> Span {
    let Some((unit, set)) = value.to_str().ok().and_then(|v| v.split_once('=')) else {
        return Span::Whole;
    };
    if !unit.trim().eq_ignore_ascii_case("bytes") {
        return Span::Whole;
    }
    // Empty list elements (`a, , b`) are allowed by the list syntax and mean nothing.
    let mut specs = set.split(',').map(str::trim).filter(|s| !s.is_empty());
    let (Some(spec), None) = (specs.next(), specs.next()) else {
        return Span::Whole;
    };
    let Some((first, last)) = spec.split_once('-') else {
        return Span::Whole;
    };
    match (first, last) {
        ("", suffix) => match parse_digits(suffix) {
            Some(0) => Span::Unsatisfiable,
            Some(_) if len == 0 => Span::Unsatisfiable,
            Some(n) => Span::Part {
                first: len - n.min(len),
                last: len - 1,
            },
            None => Span::Whole,
        },
        (first, "") => match parse_digits(first) {
            Some(first) if first >= len => Span::Unsatisfiable,
            Some(first) => Span::Part {
                first,
                last: len - 1,
            },
            None => Span::Whole,
        },
        (first, last) => match (parse_digits(first), parse_digits(last)) {
            (Some(first), Some(last)) if last < first => Span::Whole,
            (Some(first), _) if first >= len => Span::Unsatisfiable,
            (Some(first), Some(last)) => Span::Part {
                first,
                last: last.min(len - 1),
            },
            _ => Span::Whole,
        },
    }
}

/// Reads one or more ASCII digits, saturating: a position too large for `u64` is still past
/// any end, which is what it means.
fn parse_digits(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(s.bytes().fold(0u64, |n, b| {
        n.saturating_mul(10).saturating_add(u64::from(b - b'0'))
    }))
}
