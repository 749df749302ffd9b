//! permessage-deflate (RFC 7692): the offer taken from the opening request, and messages
//! inflated and deflated.
//!
//! atoll always answers with both `server_no_context_takeover` and
//! `client_no_context_takeover`: every message is compressed on its own, so a connection
//! keeps no compression state between messages. An idle connection then holds no
//! compressor (each worker thread keeps one, reset per message), and a connection can move
//! to another process between any two messages. The window is DEFLATE's largest (32 KiB);
//! an offer that asks the server for a smaller one (`server_max_window_bits` below 15) is
//! declined, and the connection runs uncompressed.
//!
//! Inflating stops at the route's `max_message_size`, whatever the compressed size was, so a
//! small message cannot become a large allocation.

use std::cell::RefCell;

use bytes::Bytes;
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};
use http::header::{HeaderMap, HeaderValue, SEC_WEBSOCKET_EXTENSIONS};

/// Default [`WebSocket::compress_min_size`](super::WebSocket::compress_min_size): 256 bytes.
pub const DEFAULT_COMPRESS_MIN_SIZE: usize = 256;

/// What atoll answers to an offer it takes.
const ACCEPTED: &str = "permessage-deflate; server_no_context_takeover; client_no_context_takeover";

/// What a compressed message's DEFLATE data ends with on the wire, taken off (RFC 7692
/// section 7.2.1), and put back before inflating.
const TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// The `Sec-WebSocket-Extensions` answer to the request's offers: the first permessage-deflate
/// offer atoll can take, or `None` (no offer, or none it can take).
pub(crate) fn negotiate(headers: &HeaderMap) -> Option<HeaderValue> {
    let offers = headers
        .get_all(SEC_WEBSOCKET_EXTENSIONS)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','));
    for offer in offers {
        let mut parts = offer.split(';').map(str::trim);
        if parts.next() != Some("permessage-deflate") {
            continue;
        }
        if acceptable(parts) {
            return Some(HeaderValue::from_static(ACCEPTED));
        }
    }
    None
}

/// Whether an offer's parameters can be taken: each known, at most once, with a valid value.
fn acceptable<'a>(params: impl Iterator<Item = &'a str>) -> bool {
    let mut seen = Vec::new();
    for param in params {
        let (name, value) = match param.split_once('=') {
            Some((n, v)) => (n.trim(), Some(v.trim().trim_matches('"'))),
            None => (param, None),
        };
        if seen.contains(&name) {
            return false;
        }
        seen.push(name);
        let bits = || {
            value
                .and_then(|v| v.parse::<u8>().ok())
                .filter(|b| (8..=15).contains(b))
        };
        let ok = match name {
            "server_no_context_takeover" | "client_no_context_takeover" => value.is_none(),
            // Only DEFLATE's full window is made here.
            "server_max_window_bits" => bits() == Some(15),
            // The client may limit its own window: any window inflates.
            "client_max_window_bits" => value.is_none() || bits().is_some(),
            _ => false,
        };
        if !ok {
            return false;
        }
    }
    true
}

/// Why a compressed message could not be inflated.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum InflateError {
    /// It inflates past the limit.
    TooBig,
    /// It is not valid DEFLATE data.
    Corrupt,
}

thread_local! {
    static INFLATE: RefCell<Decompress> = RefCell::new(Decompress::new(false));
    static DEFLATE: RefCell<Compress> = RefCell::new(Compress::new(Compression::fast(), false));
}

/// Inflates one message's payload, to at most `limit` bytes.
pub(crate) fn inflate(data: &[u8], limit: usize) -> Result<Vec<u8>, InflateError> {
    INFLATE.with(|d| inflate_with(&mut d.borrow_mut(), data, limit))
}

fn inflate_with(d: &mut Decompress, data: &[u8], limit: usize) -> Result<Vec<u8>, InflateError> {
    d.reset(false);
    // Room for one byte past the limit, so that going over it shows.
    let most = limit.saturating_add(1);
    let mut out = Vec::with_capacity(data.len().saturating_mul(2).max(64).min(most));
    for input in [data, &TAIL[..]] {
        let mut taken = 0;
        loop {
            if out.len() == out.capacity() {
                if out.len() >= most {
                    return Err(InflateError::TooBig);
                }
                out.reserve_exact(out.len().max(1024).min(most - out.len()));
            }
            let (was_in, was_out) = (d.total_in(), d.total_out());
            let status = d
                .decompress_vec(&input[taken..], &mut out, FlushDecompress::Sync)
                .map_err(|_| InflateError::Corrupt)?;
            taken += (d.total_in() - was_in) as usize;
            if out.len() > limit {
                return Err(InflateError::TooBig);
            }
            let room_left = out.len() < out.capacity();
            if status == Status::StreamEnd || (taken == input.len() && room_left) {
                break;
            }
            if d.total_in() == was_in && d.total_out() == was_out && room_left {
                return Err(InflateError::Corrupt);
            }
        }
    }
    Ok(out)
}

/// Deflates one message's payload, with the tail taken off; `None` when that would not make
/// it smaller (it then goes as it is).
pub(crate) fn deflate(data: &[u8]) -> Option<Bytes> {
    DEFLATE.with(|c| deflate_with(&mut c.borrow_mut(), data))
}

fn deflate_with(c: &mut Compress, data: &[u8]) -> Option<Bytes> {
    c.reset();
    let mut out = Vec::with_capacity(data.len() + 16);
    let mut taken = 0;
    loop {
        let was_in = c.total_in();
        c.compress_vec(&data[taken..], &mut out, FlushCompress::Sync)
            .ok()?;
        taken += (c.total_in() - was_in) as usize;
        // Done once all is in and the flush left room: the sync marker is out.
        if taken == data.len() && out.len() < out.capacity() {
            break;
        }
        out.reserve(out.capacity().max(64));
    }
    if !out.ends_with(&TAIL) {
        return None;
    }
    out.truncate(out.len() - TAIL.len());
    (out.len() < data.len()).then(|| Bytes::from(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offers(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(SEC_WEBSOCKET_EXTENSIONS, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn offers_atoll_can_take_and_those_it_declines() {
        let taken = Some(HeaderValue::from_static(ACCEPTED));
        // What browsers send.
        assert_eq!(
            negotiate(&offers(&["permessage-deflate; client_max_window_bits"])),
            taken
        );
        assert_eq!(negotiate(&offers(&["permessage-deflate"])), taken);
        assert_eq!(
            negotiate(&offers(&[
                "permessage-deflate; server_no_context_takeover; client_max_window_bits=10"
            ])),
            taken
        );
        // A smaller server window is declined; the next offer is taken.
        assert_eq!(
            negotiate(&offers(&[
                "permessage-deflate; server_max_window_bits=10, permessage-deflate"
            ])),
            taken
        );
        assert_eq!(
            negotiate(&offers(&["permessage-deflate; server_max_window_bits=10"])),
            None
        );
        // Unknown or doubled parameters, bad values, other extensions.
        for bad in [
            "permessage-deflate; x-unknown",
            "permessage-deflate; client_no_context_takeover; client_no_context_takeover",
            "permessage-deflate; client_max_window_bits=16",
            "permessage-deflate; server_no_context_takeover=1",
            "x-webkit-deflate-frame",
        ] {
            assert_eq!(negotiate(&offers(&[bad])), None, "{bad}");
        }
        assert_eq!(negotiate(&HeaderMap::new()), None);
    }

    #[test]
    fn messages_round_trip_and_inflating_stops_at_the_limit() {
        let text = "the same words again and again, ".repeat(200);
        let deflated = deflate(text.as_bytes()).expect("repetitive text shrinks");
        assert!(deflated.len() < text.len() / 10, "{}", deflated.len());
        assert_eq!(inflate(&deflated, 1 << 20).unwrap(), text.as_bytes());
        // Each message stands alone: the second inflates without the first.
        let again = deflate(text.as_bytes()).unwrap();
        assert_eq!(again, deflated);
        assert_eq!(inflate(&deflated, text.len()).unwrap().len(), text.len());
        assert_eq!(
            inflate(&deflated, text.len() - 1),
            Err(InflateError::TooBig)
        );
        // A bomb: 8 MiB of zeros in a few KiB, against a 1 MiB limit.
        let zeros = deflate(&vec![0u8; 8 << 20]).unwrap();
        assert!(zeros.len() < (8 << 20) / 100, "{}", zeros.len());
        assert_eq!(inflate(&zeros, 1 << 20), Err(InflateError::TooBig));
        assert_eq!(
            inflate(b"\xff\xff\xff not deflate", 1 << 20),
            Err(InflateError::Corrupt)
        );
        // What does not shrink goes as it is.
        assert_eq!(deflate(b"ab"), None);
        assert_eq!(inflate(&[], 10).unwrap(), b"");
        // Limits below the first allocation's size.
        assert_eq!(inflate(&deflated, 10), Err(InflateError::TooBig));
        assert_eq!(inflate(&deflated, 0), Err(InflateError::TooBig));
    }
}
