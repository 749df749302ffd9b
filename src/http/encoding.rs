//! Content codings: which precompressed variants of a static file (`.br`, `.gz`) a request's
//! `Accept-Encoding` accepts, best first.

use http::header::{self, HeaderMap};

/// A content coding a precompressed variant may have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Encoding {
    /// Brotli, in `name.br`.
    Brotli,
    /// Gzip, in `name.gz`.
    Gzip,
}

impl Encoding {
    /// The coding's name in `Content-Encoding`, and the tag appended to a variant's `ETag`.
    pub(crate) fn token(self) -> &'static str {
        match self {
            Encoding::Brotli => "br",
            Encoding::Gzip => "gzip",
        }
    }

    /// What is appended to the original's file name to find the variant.
    pub(crate) fn suffix(self) -> &'static str {
        match self {
            Encoding::Brotli => ".br",
            Encoding::Gzip => ".gz",
        }
    }
}

/// The variants to try, best first. A fixed pair, so choosing allocates nothing.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Encodings([Option<Encoding>; 2]);

impl Encodings {
    /// Try no variant.
    pub(crate) const NONE: Encodings = Encodings([None, None]);

    /// The codings `Accept-Encoding` accepts (q > 0), by falling q, Brotli first on a tie
    /// since it compresses better.
    ///
    /// `*` stands for a coding not named. Without the header no variant is sent: RFC 9110
    /// would allow any coding, but a client that sends nothing (curl, a script) almost always
    /// wants the bytes as stored. `identity;q=0` is not honoured with a `406`: the original
    /// is sent.
    pub(crate) fn accepted(headers: &HeaderMap) -> Encodings {
        let (mut br, mut gzip, mut any) = (None::<u16>, None::<u16>, None::<u16>);
        let values = headers.get_all(header::ACCEPT_ENCODING);
        for element in values
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
        {
            let mut parts = element.split(';');
            let coding = parts.next().unwrap_or("").trim();
            let mut q = Some(1000);
            for param in parts {
                if let Some((name, value)) = param.split_once('=') {
                    if name.trim().eq_ignore_ascii_case("q") {
                        q = parse_qvalue(value.trim());
                    }
                }
            }
            // An element with an unreadable weight is ignored, as if it were absent.
            let Some(q) = q else { continue };
            let slot = if coding.eq_ignore_ascii_case("br") {
                &mut br
            } else if coding.eq_ignore_ascii_case("gzip") || coding.eq_ignore_ascii_case("x-gzip") {
                &mut gzip
            } else if coding == "*" {
                &mut any
            } else {
                continue;
            };
            *slot = Some(slot.map_or(q, |old| old.max(q)));
        }
        let br = br.or(any).unwrap_or(0);
        let gzip = gzip.or(any).unwrap_or(0);
        let pick = |q: u16, e: Encoding| (q > 0).then_some(e);
        if gzip > br {
            Encodings([pick(gzip, Encoding::Gzip), pick(br, Encoding::Brotli)])
        } else {
            Encodings([pick(br, Encoding::Brotli), pick(gzip, Encoding::Gzip)])
        }
    }

    /// The codings to try, in order.
    pub(crate) fn iter(self) -> impl Iterator<Item = Encoding> {
        self.0.into_iter().flatten()
    }
}

/// Reads a weight (`0`, `0.5`, `1.000`) in thousandths; `None` when it is not one.
fn parse_qvalue(value: &str) -> Option<u16> {
    let (whole, fraction) = value.split_once('.').unwrap_or((value, ""));
    if fraction.len() > 3 || !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mut thousandths: u16 = 0;
    for (i, digit) in fraction.bytes().enumerate() {
        thousandths += u16::from(digit - b'0') * [100, 10, 1][i];
    }
    match whole {
        "0" => Some(thousandths),
        "1" if thousandths == 0 => Some(1000),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qvalues() {
        for (text, q) in [
            ("1", Some(1000)),
            ("1.000", Some(1000)),
            ("0", Some(0)),
            ("0.5", Some(500)),
        ] {
            assert_eq!(parse_qvalue(text), q, "{text}");
        }
        for text in ["", "2", "1.5", "0.0001", "-0", ".5", "0.x", "NaN", "1.001"] {
            assert_eq!(parse_qvalue(text), None, "{text}");
        }
    }
}
