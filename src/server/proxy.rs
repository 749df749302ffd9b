//! The PROXY protocol (HAProxy's, version 1 in text and version 2 in binary): the first bytes
//! a load balancer sends on each connection, naming the client it stands for. A listener with
//! `proxy_protocol = "required"` reads the header before anything else (before a TLS
//! handshake too), within `proxy_header_timeout`, and exactly its bytes, so what follows is
//! the client's own. The client's address then stands for the socket's peer everywhere atoll
//! shows one. The `ppp` crate parses the header; the framing is read here.

use std::net::{IpAddr, SocketAddr};

use ipnet::IpNet;
use serde::Deserialize;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// Whether a listener's connections start with a PROXY protocol header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProxyProtocol {
    /// No header: the socket's peer is the client. The default.
    #[default]
    Off,
    /// Every connection must start with a version 1 or 2 header; one that does not, or sends a
    /// bad one, or not in time, is closed and counted
    /// ([`ProxyHeaderError`](crate::telemetry::EventKind::ProxyHeaderError)).
    Required,
}

/// The longest version 2 header taken, addresses and TLVs included: 4096 bytes (the
/// specification allows 64 KiB; HAProxy's headers are some tens to a few hundred bytes).
pub const MAX_V2_HEADER: usize = 4096;

/// The longest version 1 header, by the specification: 107 bytes.
const MAX_V1_HEADER: usize = 107;

/// The first 6 bytes of each version's header.
const V1_START: &[u8; 6] = b"PROXY ";
const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";

/// Whether `peer` may send a header: any source when `trusted` is empty.
pub(crate) fn trusted(trusted: &[IpNet], peer: IpAddr) -> bool {
    let peer = peer.to_canonical();
    trusted.is_empty() || trusted.iter().any(|net| net.contains(&peer))
}

/// Reads one header from `tcp`, and nothing after it. The client's address, or `None` when
/// the header says the connection is the balancer's own (v2 `LOCAL`, v1 `UNKNOWN`: a health
/// check, say) or names no IP address. The error says what is wrong, for the log. No deadline
/// here: the caller keeps one.
pub(crate) async fn read_header(tcp: &mut TcpStream) -> Result<Option<SocketAddr>, String> {
    let mut start = [0u8; 6];
    tcp.read_exact(&mut start).await.map_err(read_error)?;
    if &start == V1_START {
        let line = read_v1_line(tcp, start).await?;
        let text = std::str::from_utf8(&line).map_err(|_| "a PROXY v1 header that is not text")?;
        let header = ppp::v1::Header::try_from(text)
            .map_err(|e| format!("a bad PROXY v1 header {text:?}: {e}"))?;
        return Ok(match header.addresses {
            ppp::v1::Addresses::Tcp4(a) => Some((a.source_address, a.source_port).into()),
            ppp::v1::Addresses::Tcp6(a) => Some((a.source_address, a.source_port).into()),
            ppp::v1::Addresses::Unknown => None,
        });
    }
    if start != V2_SIGNATURE[..6] {
        return Err(format!(
            "no PROXY header: the connection starts with {:?}",
            String::from_utf8_lossy(&start)
        ));
    }
    let mut header = vec![0u8; 16];
    header[..6].copy_from_slice(&start);
    tcp.read_exact(&mut header[6..]).await.map_err(read_error)?;
    if &header[..12] != V2_SIGNATURE {
        return Err("a bad PROXY v2 signature".into());
    }
    let len = usize::from(u16::from_be_bytes([header[14], header[15]]));
    if 16 + len > MAX_V2_HEADER {
        return Err(format!(
            "a PROXY v2 header of {} bytes, more than {MAX_V2_HEADER}",
            16 + len
        ));
    }
    header.resize(16 + len, 0);
    tcp.read_exact(&mut header[16..])
        .await
        .map_err(read_error)?;
    let parsed = ppp::v2::Header::try_from(&header[..])
        .map_err(|e| format!("a bad PROXY v2 header: {e}"))?;
    if parsed.command == ppp::v2::Command::Local {
        return Ok(None);
    }
    Ok(match parsed.addresses {
        ppp::v2::Addresses::IPv4(a) => Some((a.source_address, a.source_port).into()),
        ppp::v2::Addresses::IPv6(a) => Some((a.source_address, a.source_port).into()),
        ppp::v2::Addresses::Unspecified | ppp::v2::Addresses::Unix(_) => None,
    })
}

/// What a failed read of the header says.
fn read_error(e: std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::UnexpectedEof => "the connection closed inside the PROXY header".into(),
        _ => format!("reading the PROXY header: {e}"),
    }
}

/// The rest of a version 1 line after its first 6 bytes, up to and with its `\n`: what is
/// waiting is peeked at, and only the line's bytes are taken from the socket.
async fn read_v1_line(tcp: &mut TcpStream, start: [u8; 6]) -> Result<Vec<u8>, String> {
    let mut line = Vec::with_capacity(MAX_V1_HEADER);
    line.extend_from_slice(&start);
    let mut buf = [0u8; MAX_V1_HEADER];
    loop {
        let room = MAX_V1_HEADER - line.len();
        if room == 0 {
            return Err(format!(
                "a PROXY v1 header longer than {MAX_V1_HEADER} bytes"
            ));
        }
        let n = tcp.peek(&mut buf[..room]).await.map_err(read_error)?;
        if n == 0 {
            return Err("the connection closed inside the PROXY header".into());
        }
        // Up to the end of the line if it is there, else all that came: it is all header.
        let take = buf[..n].iter().position(|&b| b == b'\n').map(|i| i + 1);
        let len = take.unwrap_or(n);
        tcp.read_exact(&mut buf[..len]).await.map_err(read_error)?;
        line.extend_from_slice(&buf[..len]);
        if take.is_some() {
            return Ok(line);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpListener;

    use super::*;

    /// Sends `parts` one after the other (a pause between them), then `after`; reads the header
    /// on the server's end and then everything else.
    async fn exchange(
        parts: &[&[u8]],
        after: &[u8],
    ) -> (Result<Option<SocketAddr>, String>, Vec<u8>) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut client = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let (mut server, _) = l.accept().await.unwrap();
        let (parts, after): (Vec<Vec<u8>>, Vec<u8>) =
            (parts.iter().map(|p| p.to_vec()).collect(), after.to_vec());
        let writer = tokio::spawn(async move {
            for p in parts {
                client.write_all(&p).await.unwrap();
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            client.write_all(&after).await.unwrap();
        });
        let got = tokio::time::timeout(Duration::from_secs(10), read_header(&mut server))
            .await
            .unwrap();
        writer.await.unwrap();
        let mut rest = Vec::new();
        if got.is_ok() {
            let _ =
                tokio::time::timeout(Duration::from_secs(10), server.read_to_end(&mut rest)).await;
        }
        (got, rest)
    }

    fn v2(command: u8, family: u8, addresses: &[u8]) -> Vec<u8> {
        let mut h = V2_SIGNATURE.to_vec();
        h.push(0x20 | command);
        h.push(family);
        h.extend_from_slice(&(addresses.len() as u16).to_be_bytes());
        h.extend_from_slice(addresses);
        h
    }

    #[tokio::test]
    async fn a_v1_header_in_pieces_gives_the_client_and_leaves_what_follows() {
        let (got, rest) = exchange(
            &[b"PROXY TCP4 192.0.2.7 ", b"198.51.100.1 5", b"6324 443\r\n"],
            b"GET / HTTP/1.1\r\n",
        )
        .await;
        assert_eq!(got.unwrap(), Some("192.0.2.7:56324".parse().unwrap()));
        assert_eq!(rest, b"GET / HTTP/1.1\r\n");
        let (got, _) = exchange(
            &[b"PROXY TCP6 2001:db8::1 2001:db8::2 4000 80\r\nhello"],
            b"",
        )
        .await;
        assert_eq!(got.unwrap(), Some("[2001:db8::1]:4000".parse().unwrap()));
        let (got, rest) = exchange(&[b"PROXY UNKNOWN\r\n"], b"x").await;
        assert_eq!((got.unwrap(), &rest[..]), (None, &b"x"[..]));
    }

    #[tokio::test]
    async fn a_v2_header_gives_the_client_and_leaves_what_follows() {
        let mut addrs = vec![203, 0, 113, 9, 10, 0, 0, 1];
        addrs.extend_from_slice(&40000u16.to_be_bytes());
        addrs.extend_from_slice(&443u16.to_be_bytes());
        // A TLV after the addresses (a unique id), which is skipped.
        addrs.extend_from_slice(&[0x05, 0, 3, b'a', b'b', b'c']);
        let header = v2(1, 0x11, &addrs);
        let (got, rest) = exchange(&[&header[..5], &header[5..]], b"\x16\x03\x01").await;
        assert_eq!(got.unwrap(), Some("203.0.113.9:40000".parse().unwrap()));
        assert_eq!(rest, b"\x16\x03\x01");
        // LOCAL: the balancer's own connection (a health check).
        let (got, rest) = exchange(&[&v2(0, 0, &[])], b"GET").await;
        assert_eq!((got.unwrap(), &rest[..]), (None, &b"GET"[..]));
    }

    #[tokio::test]
    async fn bad_headers_are_refused_with_what_is_wrong() {
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (b"GET / HTTP/1.1\r\n\r\n".to_vec(), "no PROXY header"),
            (b"PROXY TCP4 1.2.3.4\r\n".to_vec(), "bad PROXY v1"),
            (
                [b"PROXY ".as_slice(), &[b'9'; 120]].concat(),
                "longer than 107",
            ),
            (b"\r\n\r\n\0\r\nQUIX\n\x21\x11\0\0".to_vec(), "signature"),
            (v2(1, 0x11, &vec![0; MAX_V2_HEADER]), "more than 4096"),
            (v2(1, 0x11, &[1, 2, 3]), "bad PROXY v2"),
            (b"PROXY TCP4".to_vec(), "closed inside"),
        ];
        for (bytes, why) in cases {
            let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let mut client = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
            let (mut server, _) = l.accept().await.unwrap();
            client.write_all(&bytes).await.unwrap();
            client.shutdown().await.unwrap();
            let got = tokio::time::timeout(Duration::from_secs(10), read_header(&mut server))
                .await
                .unwrap();
            let e = got.unwrap_err();
            assert!(e.contains(why), "{bytes:?}: {e}");
        }
    }

    #[test]
    fn trusted_sources() {
        let nets: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap(), "::1/128".parse().unwrap()];
        assert!(trusted(&nets, "10.1.2.3".parse().unwrap()));
        assert!(trusted(&nets, "::1".parse().unwrap()));
        // An IPv4 client on a dual-stack socket.
        assert!(trusted(&nets, "::ffff:10.9.9.9".parse().unwrap()));
        assert!(!trusted(&nets, "192.168.1.1".parse().unwrap()));
        assert!(trusted(&[], "192.168.1.1".parse().unwrap()));
    }
}
