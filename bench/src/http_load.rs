//! The http scenario: keep-alive HTTP/1.1 connections, each sending `GET /` and waiting for the
//! whole response before sending the next. Measures requests per second, their latency and the
//! server's CPU per request.
//!
//! The client is written by hand on tokio: it writes one fixed request and parses the response
//! head only as far as the status and `Content-Length`. So it costs the load generator little,
//! and every server gets exactly the same client. Anything but a `200` with the expected body
//! (another status, a malformed head, a closed connection, `chunked`) is an error: the
//! connection is counted, reopened, and the run fails at the end, as its figures are invalid.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;

use crate::http_server::{BODY, CONTENT};
use crate::latency::percentile_us;
use crate::load::{connect, connect_all, Metrics};
use crate::probe::Probe;
use crate::window::{self, Measured, Timing, Window};

const REQUEST: &[u8] = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
/// Room for one response: a longer head is an error.
const BUFFER: usize = 4096;
/// How long the connections may take to finish their last request once the run stops.
const DRAIN_LIMIT: Duration = Duration::from_secs(10);

/// What one connection did.
#[derive(Default)]
struct Tally {
    /// Latencies of the requests answered while measuring.
    latencies: Vec<Duration>,
    errors: u64,
    first_error: Option<io::Error>,
}

pub(crate) async fn run(
    addr: SocketAddr,
    conns: usize,
    timing: Timing,
    probe: &Probe,
) -> io::Result<Metrics> {
    let response_bytes = check(addr).await?;
    let streams = connect_all(addr, conns).await?;
    let (_, mut slice) = measure(addr, streams, timing, probe).await?;
    slice.latencies.sort_unstable();
    let requests = slice.latencies.len() as f64;
    Ok(vec![
        ("http.requests_per_s", slice.measured.per_second(requests)),
        ("http.p50_us", percentile_us(&slice.latencies, 0.50)),
        ("http.p99_us", percentile_us(&slice.latencies, 0.99)),
        (
            "http.server_cpu_us_per_op",
            slice.measured.cpu_us_per(requests),
        ),
        ("http.response_bytes", response_bytes as f64),
        ("http.errors", 0.0),
    ])
}

/// What one timed stretch of load measured.
pub(crate) struct Slice {
    /// The latency of every request answered while measuring, in no order.
    pub(crate) latencies: Vec<Duration>,
    pub(crate) measured: Measured,
}

/// Loads the server through `streams` (one client each) for `timing`, and gives the streams
/// back, still open and between requests, with what was measured. Any bad response or broken
/// connection fails the whole stretch.
pub(crate) async fn measure(
    addr: SocketAddr,
    streams: Vec<TcpStream>,
    timing: Timing,
    probe: &Probe,
) -> io::Result<(Vec<TcpStream>, Slice)> {
    let window = Arc::new(Window::default());
    let mut tasks = JoinSet::new();
    for stream in streams {
        tasks.spawn(client(addr, stream, window.clone()));
    }
    let measured = window::run(&window, timing, probe).await;
    let drained = tokio::time::timeout(DRAIN_LIMIT, async {
        let mut streams = Vec::with_capacity(tasks.len());
        let mut total = Tally::default();
        while let Some(joined) = tasks.join_next().await {
            let (stream, tally) = joined.map_err(io::Error::other)?;
            streams.push(stream);
            total.latencies.extend(tally.latencies);
            total.errors += tally.errors;
            total.first_error = total.first_error.or(tally.first_error);
        }
        Ok::<_, io::Error>((streams, total))
    })
    .await;
    let (streams, total) = drained.map_err(|_| {
        io::Error::new(
            io::ErrorKind::TimedOut,
            "some requests got no response once the run stopped",
        )
    })??;
    if let Some(first) = total.first_error {
        return Err(io::Error::new(
            first.kind(),
            format!(
                "{} bad responses or broken connections, the run is invalid; the first: {first}",
                total.errors
            ),
        ));
    }
    let slice = Slice {
        latencies: total.latencies,
        measured: measured?,
    };
    Ok((streams, slice))
}

/// Sends one request on its own connection and checks the head in full: status 200, and the
/// `date`, `content-length` and `content-type` every server must send, so the servers compare
/// like for like. Returns the response's size, head and body.
pub(crate) async fn check(addr: SocketAddr) -> io::Result<usize> {
    let mut stream = connect(addr).await?;
    let mut buf = vec![0; BUFFER];
    let len = exchange(&mut stream, &mut buf).await?;
    let head = &buf[..len - BODY.len()];
    let has = |name: &str, value: Option<&str>| {
        header(head, name).is_some_and(|v| value.is_none_or(|want| v == want.as_bytes()))
    };
    if !(has("date", None) && has("content-type", Some(CONTENT))) {
        return Err(invalid(format!(
            "the response lacks `date` or `content-type: {CONTENT}`:\n{}",
            String::from_utf8_lossy(head)
        )));
    }
    Ok(len)
}

/// One connection's loop, reopening the connection after an error; gives back the connection
/// it ends with.
async fn client(
    addr: SocketAddr,
    mut stream: TcpStream,
    window: Arc<Window>,
) -> (TcpStream, Tally) {
    let mut tally = Tally {
        latencies: Vec::with_capacity(1 << 16),
        ..Tally::default()
    };
    let mut buf = vec![0; BUFFER];
    while !window.stopped() {
        let started = Instant::now();
        let failed = match exchange(&mut stream, &mut buf).await {
            Ok(_) => {
                if window.measuring() {
                    tally.latencies.push(started.elapsed());
                }
                continue;
            }
            Err(e) => e,
        };
        tally.errors += 1;
        tally.first_error.get_or_insert(failed);
        // What the connection holds now is unknown: start over on a new one.
        stream = loop {
            match connect(addr).await {
                Ok(s) => break s,
                Err(e) if window.stopped() => {
                    tally.first_error.get_or_insert(e);
                    // The run is invalid and ends here; the old connection is no worse a
                    // thing to give back than none.
                    return (stream, tally);
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(1)).await,
            }
        };
    }
    (stream, tally)
}

/// Sends `GET /` and reads the whole response into `buf`; returns its length. Errors on
/// anything but a `200` with `BODY`, and on bytes beyond the response.
async fn exchange(stream: &mut TcpStream, buf: &mut [u8]) -> io::Result<usize> {
    stream.write_all(REQUEST).await?;
    let mut filled = 0;
    let head = loop {
        if filled == buf.len() {
            return Err(invalid(format!(
                "no end of the response head in {BUFFER} bytes"
            )));
        }
        let n = stream.read(&mut buf[filled..]).await?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the server closed the connection",
            ));
        }
        filled += n;
        if let Some(head) = parse_head(&buf[..filled]).map_err(invalid)? {
            break head;
        }
    };
    if head.content_length != BODY.len() {
        return Err(invalid(format!(
            "content-length {}, expected {}",
            head.content_length,
            BODY.len()
        )));
    }
    let total = head.len + head.content_length;
    if total > buf.len() {
        return Err(invalid(format!("a response of {total} bytes")));
    }
    while filled < total {
        let n = stream.read(&mut buf[filled..total]).await?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the server closed the connection within the body",
            ));
        }
        filled += n;
    }
    if filled > total {
        return Err(invalid(format!(
            "{} bytes beyond the response",
            filled - total
        )));
    }
    if &buf[head.len..total] != BODY.as_bytes() {
        return Err(invalid(format!(
            "unexpected body {:?}",
            String::from_utf8_lossy(&buf[head.len..total])
        )));
    }
    Ok(total)
}

/// A complete response head.
#[derive(Debug, PartialEq, Eq)]
struct Head {
    /// Its bytes, blank line included.
    len: usize,
    content_length: usize,
}

/// Parses the response head at the start of `buf`: `None` while it is incomplete; an error
/// for a status other than 200, a malformed line, no `Content-Length`, a chunked body or a
/// `Connection: close` (every request goes on the same keep-alive connection).
fn parse_head(buf: &[u8]) -> Result<Option<Head>, String> {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return Ok(None);
    };
    let head = &buf[..end];
    let mut lines = head
        .split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    let status = lines.next().unwrap_or_default();
    if !status.starts_with(b"HTTP/1.1 200 ") && status != b"HTTP/1.1 200" {
        return Err(format!("status line {:?}", String::from_utf8_lossy(status)));
    }
    let mut content_length = None;
    for line in lines {
        let (name, value) = split_header(line)
            .ok_or_else(|| format!("header line {:?}", String::from_utf8_lossy(line)))?;
        if name.eq_ignore_ascii_case(b"content-length") {
            let n = std::str::from_utf8(value)
                .ok()
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| format!("content-length {:?}", String::from_utf8_lossy(value)))?;
            content_length = Some(n);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            return Err("a transfer-encoding: the client reads content-length only".to_owned());
        } else if name.eq_ignore_ascii_case(b"connection") && value.eq_ignore_ascii_case(b"close") {
            return Err("connection: close on a keep-alive connection".to_owned());
        }
    }
    let content_length = content_length.ok_or("no content-length")?;
    Ok(Some(Head {
        len: end + 4,
        content_length,
    }))
}

/// The value of header `name` (any case) in a complete head.
fn header<'h>(head: &'h [u8], name: &str) -> Option<&'h [u8]> {
    head.split(|&b| b == b'\n')
        .skip(1)
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
        .filter_map(split_header)
        .find(|(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
        .map(|(_, v)| v)
}

/// `name: value`, with the value's surrounding blanks trimmed.
fn split_header(line: &[u8]) -> Option<(&[u8], &[u8])> {
    let colon = line.iter().position(|&b| b == b':')?;
    let (name, value) = (&line[..colon], &line[colon + 1..]);
    (!name.is_empty()).then(|| (name, value.trim_ascii()))
}

fn invalid(why: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, why)
}

#[cfg(test)]
mod tests {
    use super::*;

    const OK: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-type: text/plain; charset=utf-8\r\n\
        Content-Length: 13\r\ndate: Sat, 21 Nov 2026 08:42:00 GMT\r\n\r\nHello, World!";

    #[test]
    fn a_complete_head_gives_its_length_and_content_length() {
        let head = parse_head(OK).unwrap().unwrap();
        assert_eq!(head.content_length, 13);
        assert_eq!(&OK[head.len..], b"Hello, World!");
        assert_eq!(header(&OK[..head.len], "content-length"), Some(&b"13"[..]));
        assert_eq!(header(&OK[..head.len], "server"), None);
    }

    #[test]
    fn an_incomplete_head_asks_for_more() {
        assert_eq!(parse_head(&OK[..40]), Ok(None));
    }

    #[test]
    fn anything_but_a_plain_200_is_an_error() {
        let bad = [
            &b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\n\r\n",
            b"HTTP/1.1 200 OK\r\ncontent-length: x\r\n\r\n",
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n",
            b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\nConnection: close\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nno colon\r\n\r\n",
            b"garbage\r\n\r\n",
        ];
        for response in bad {
            assert!(
                parse_head(response).is_err(),
                "{}",
                String::from_utf8_lossy(response)
            );
        }
    }
}
