//! The HTTP listener over real sockets, as a user sees it: static files (validators, ranges,
//! index pages, precompressed variants) and their path safety, HTTP/2 (h2c and ALPN), live
//! route upgrades under load, the graceful stop, the header read and idle timeouts, and the
//! binary's `http` listener kind.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use std::time::{Duration, Instant};

use atoll::echo::Echo;
use atoll::http::{
    upgrade, upgrade_all, upgrade_handle, upgrade_listener, Handlers, Health, HttpListener, Reply,
    Request, Resource, StaticFiles,
};
use atoll::{ErrorKind, Registry, Server, TlsOptions};
use bytes::Bytes;
use common::http::{curl, raw, req, req2, Client, HttpTest, Resp};
use common::process::Atoll;
use common::{within, Pki, LOCALHOST};
use http::Method;
use http_body_util::Full;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Notify;

// ===== resources =====

/// `GET route` answers `answer`.
struct Fixed {
    route: &'static str,
    answer: &'static str,
}

fn fixed(route: &'static str, answer: &'static str) -> Fixed {
    Fixed { route, answer }
}

impl Resource for Fixed {
    fn routes(&self) -> Vec<String> {
        vec![self.route.to_owned()]
    }
    fn methods(&self) -> &[Method] {
        &[Method::GET]
    }
    async fn get(&self, _req: &mut Request) -> Reply {
        self.answer.into()
    }
}

/// `GET /hold` says it has started, waits to be released, then answers `answer`: a request
/// held in flight for as long as a test needs.
#[derive(Clone)]
struct Hold {
    entered: Arc<Notify>,
    release: Arc<Notify>,
    answer: &'static str,
}

impl Hold {
    fn new(answer: &'static str) -> Hold {
        Hold {
            entered: Arc::new(Notify::new()),
            release: Arc::new(Notify::new()),
            answer,
        }
    }
}

impl Resource for Hold {
    fn routes(&self) -> Vec<String> {
        vec!["/hold".to_owned()]
    }
    fn methods(&self) -> &[Method] {
        &[Method::GET]
    }
    async fn get(&self, _req: &mut Request) -> Reply {
        self.entered.notify_one();
        self.release.notified().await;
        self.answer.into()
    }
}

/// Routes that change while the listener runs: `/old` until `moved`, then `/fresh`; the same
/// route twice while `twice`. Answers its path.
#[derive(Clone, Default)]
struct Moving {
    moved: Arc<AtomicBool>,
    twice: Arc<AtomicBool>,
}

impl Resource for Moving {
    fn routes(&self) -> Vec<String> {
        let route = if self.moved.load(SeqCst) {
            "/fresh"
        } else {
            "/old"
        };
        if self.twice.load(SeqCst) {
            vec![route.to_owned(), route.to_owned()]
        } else {
            vec![route.to_owned()]
        }
    }
    fn methods(&self) -> &[Method] {
        &[Method::GET]
    }
    async fn get(&self, req: &mut Request) -> Reply {
        req.path().to_owned().into()
    }
}

// ===== helpers =====

fn get(path: &str) -> http::Request<Full<Bytes>> {
    req(Method::GET, path).body(Full::default()).unwrap()
}

fn get2(path: &str) -> http::Request<Full<Bytes>> {
    req2(Method::GET, path).body(Full::default()).unwrap()
}

async fn get_with(c: &mut Client, path: &str, headers: &[(&str, &str)]) -> Resp {
    let mut b = req(Method::GET, path);
    for (name, value) in headers {
        b = b.header(*name, *value);
    }
    c.send(b.body(Full::default()).unwrap()).await
}

/// `GET path` on `c`: the status and the body.
async fn ask(c: &mut Client, path: &str) -> (u16, String) {
    let r = c.get(path).await;
    (r.status.as_u16(), r.text())
}

/// Polls `cond` until it holds, within the test wait.
async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    within(what, async {
        while !cond() {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    })
    .await
}

/// The status code of a raw HTTP/1.1 response.
fn status_of(response: &str) -> Option<u16> {
    let line = response.lines().next()?;
    let mut parts = line.split(' ');
    (parts.next()? == "HTTP/1.1").then_some(())?;
    parts.next()?.parse().ok()
}

/// Sends `GET path` on a kept-alive raw connection and reads one response (with a
/// Content-Length body). Errors when the server closed the connection instead.
async fn raw_get(s: &mut TcpStream, path: &str) -> std::io::Result<(u16, String)> {
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").as_bytes())
        .await?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = s.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let status = status_of(&head).expect("a status line");
    let length: usize = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())?
        })
        .unwrap_or(0);
    while buf.len() < head_end + length {
        let n = s.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let body = String::from_utf8_lossy(&buf[head_end..head_end + length]).into_owned();
    Ok((status, body))
}

/// Whether the server closes `s` (EOF or reset) within `bound`, reading and ignoring what
/// comes before.
async fn closed_within(s: &mut TcpStream, bound: Duration) -> bool {
    let mut buf = [0u8; 1024];
    tokio::time::timeout(bound, async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .is_ok()
}

fn localhost() -> ServerName<'static> {
    ServerName::try_from("localhost").unwrap()
}

// ===== a site on disk =====

const SECRET: &str = "TOP-SECRET-d41d8cd9";
const HELLO: &str = "0123456789";
const INDEX: &str = "<!doctype html><title>home</title>\n";
const SUB_INDEX: &str = "<!doctype html><title>sub</title>\n";
const APP_JS: &str = "console.log('precompressed variants are chosen by Accept-Encoding');\n";

/// `dir/secret.txt` outside the served root `dir/www`, which holds a few files, a
/// subdirectory with its index, precompressed variants, and symbolic links in and out.
struct Site {
    dir: tempfile::TempDir,
    root: PathBuf,
}

fn site() -> Site {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("www");
    std::fs::create_dir_all(root.join("sub")).unwrap();
    std::fs::write(dir.path().join("secret.txt"), SECRET).unwrap();
    std::fs::write(root.join("hello.txt"), HELLO).unwrap();
    std::fs::write(root.join("index.html"), INDEX).unwrap();
    std::fs::write(root.join("sub/index.html"), SUB_INDEX).unwrap();
    std::fs::write(root.join("app.js"), APP_JS).unwrap();
    std::fs::write(root.join("app.js.br"), brotli_stored(APP_JS.as_bytes())).unwrap();
    std::fs::write(root.join("app.js.gz"), gzip_stored(APP_JS.as_bytes())).unwrap();
    std::os::unix::fs::symlink(dir.path().join("secret.txt"), root.join("link-out")).unwrap();
    std::os::unix::fs::symlink(dir.path(), root.join("dir-link")).unwrap();
    std::os::unix::fs::symlink(root.join("hello.txt"), root.join("link-in")).unwrap();
    Site { dir, root }
}

/// A valid Brotli stream holding `data` in one uncompressed meta-block (RFC 7932: WBITS 16,
/// a non-last meta-block of MLEN bytes with ISUNCOMPRESSED, then an empty last one).
fn brotli_stored(data: &[u8]) -> Vec<u8> {
    assert!(!data.is_empty() && data.len() <= 1 << 16);
    let header = ((data.len() as u32 - 1) << 4) | (1 << 20);
    let mut out = header.to_le_bytes()[..3].to_vec();
    out.extend_from_slice(data);
    out.push(0x03);
    out
}

/// A valid gzip member holding `data` in one stored deflate block.
fn gzip_stored(data: &[u8]) -> Vec<u8> {
    let len = u16::try_from(data.len()).unwrap();
    let mut out = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff, 0x01];
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&(!len).to_le_bytes());
    out.extend_from_slice(data);
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    out.extend_from_slice(&(!crc).to_le_bytes());
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    out
}

/// The whole static file behaviour, checked on a listener serving `site()` at `/`.
async fn check_static(t: &HttpTest, site: &Site) {
    let mut c = t.h1().await;
    let r = c.get("/hello.txt").await;
    assert_eq!((r.status.as_u16(), r.text().as_str()), (200, HELLO));
    let ctype = r.header("content-type").expect("Content-Type");
    assert!(ctype.starts_with("text/plain"), "{ctype}");
    let etag = r.header("etag").expect("ETag").to_owned();
    let modified = r.header("last-modified").expect("Last-Modified").to_owned();
    assert_eq!(r.header("accept-ranges"), Some("bytes"));

    // Conditional GETs.
    let r = get_with(&mut c, "/hello.txt", &[("if-none-match", &etag)]).await;
    assert_eq!(r.status, 304, "If-None-Match: {etag}");
    assert!(r.body.is_empty());
    assert_eq!(r.header("etag"), Some(etag.as_str()));
    let r = get_with(&mut c, "/hello.txt", &[("if-none-match", "\"other\"")]).await;
    assert_eq!((r.status.as_u16(), r.text().as_str()), (200, HELLO));
    let r = get_with(&mut c, "/hello.txt", &[("if-modified-since", &modified)]).await;
    assert_eq!(r.status, 304, "If-Modified-Since: {modified}");
    assert!(r.body.is_empty());
    let past = "Thu, 01 Jan 1998 00:00:00 GMT";
    let r = get_with(&mut c, "/hello.txt", &[("if-modified-since", past)]).await;
    assert_eq!(r.status, 200);

    // A range.
    let r = get_with(&mut c, "/hello.txt", &[("range", "bytes=2-5")]).await;
    assert_eq!(r.status, 206);
    assert_eq!(r.header("content-range"), Some("bytes 2-5/10"));
    assert_eq!(r.body, "2345");
    assert_eq!(r.header("content-length"), Some("4"));

    // Index pages.
    let r = c.get("/").await;
    assert_eq!((r.status.as_u16(), r.text().as_str()), (200, INDEX));
    assert!(r.header("content-type").unwrap().starts_with("text/html"));
    assert_eq!(c.get("/missing.txt").await.status, 404);
    // A link that stays inside the root is followed.
    let r = c.get("/link-in").await;
    assert_eq!((r.status.as_u16(), r.text().as_str()), (200, HELLO));

    // Precompressed variants, by Accept-Encoding.
    let br = std::fs::read(site.root.join("app.js.br")).unwrap();
    let gz = std::fs::read(site.root.join("app.js.gz")).unwrap();
    for (accept, coding, body) in [
        ("br", Some("br"), &br[..]),
        ("gzip", Some("gzip"), &gz[..]),
        ("gzip, br", Some("br"), &br[..]),
        ("br;q=0.5, gzip", Some("gzip"), &gz[..]),
        ("identity", None, APP_JS.as_bytes()),
    ] {
        let r = get_with(&mut c, "/app.js", &[("accept-encoding", accept)]).await;
        assert_eq!(r.status, 200, "Accept-Encoding: {accept}");
        assert_eq!(
            r.header("content-encoding"),
            coding,
            "Accept-Encoding: {accept}"
        );
        assert_eq!(&r.body[..], body, "Accept-Encoding: {accept}");
        let vary = r.header("vary").unwrap_or("").to_ascii_lowercase();
        assert!(vary.contains("accept-encoding"), "Vary: {vary:?}");
        let ctype = r.header("content-type").unwrap_or("");
        assert!(ctype.contains("javascript"), "{accept}: {ctype}");
    }
    let r = c.get("/app.js").await;
    assert_eq!(r.header("content-encoding"), None);
    assert_eq!(r.body, APP_JS);
    let vary = r.header("vary").unwrap_or("").to_ascii_lowercase();
    assert!(vary.contains("accept-encoding"), "Vary: {vary:?}");

    // A directory: redirected to its trailing-slash form, then served as its index.html.
    let r = c.get("/sub").await;
    assert_eq!(r.status, 301);
    let location = r.header("location").expect("Location").to_owned();
    let resolved = match location.strip_prefix('/') {
        Some(_) => location.clone(),
        None => format!("/{location}"),
    };
    assert_eq!(resolved, "/sub/", "Location: {location}");
    let r = c.get(&resolved).await;
    assert_eq!(
        (r.status.as_u16(), r.text().as_str()),
        (200, SUB_INDEX),
        "GET /sub/ (Location: {:?})",
        r.header("location")
    );
}

// ===== static files =====

#[tokio::test]
async fn static_files_validators_ranges_index_and_variants() {
    let site = site();
    let files = StaticFiles::new(&site.root).unwrap();
    let t = HttpTest::start(HttpListener::new(Handlers::new().files("/", files)));
    check_static(&t, &site).await;
}

/// `GET /big/:n` answers `n` bytes of [`pattern`] from memory.
struct Big;

impl Resource for Big {
    fn routes(&self) -> Vec<String> {
        vec!["/big/:n".into()]
    }
    fn methods(&self) -> &[Method] {
        &[Method::GET]
    }
    async fn get(&self, req: &mut Request) -> Reply {
        let n = req.binding("n").and_then(|n| n.parse().ok()).unwrap_or(0);
        pattern(n).into()
    }
}

/// `n` bytes that tell their offsets apart.
fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i % 251) as u8).collect()
}

#[tokio::test]
async fn both_write_modes_send_every_answer_whole() {
    let site = site();
    let big = pattern(3 * 1024 * 1024 + 17);
    std::fs::write(site.root.join("big.bin"), &big).unwrap();
    // Unset: copied for a listener without files, vectored for one with them.
    for (mode, with_files) in [
        (Some(false), true),
        (Some(true), true),
        (None, true),
        (Some(false), false),
        (Some(true), false),
        (None, false),
    ] {
        let mut handlers = Handlers::new()
            .resource(Big)
            .resource(fixed("/small", "tiny"));
        if with_files {
            handlers = handlers.files("/files", StaticFiles::new(&site.root).unwrap());
        }
        let t = HttpTest::start(
            HttpListener::new(handlers).configure_http(|o| o.vectored_writes = mode),
        );
        let case = format!("vectored_writes {mode:?}, files {with_files}");
        let mut c = t.h1().await;
        // One keep-alive connection: small, larger than the write buffer, small again.
        for n in [0, 1, 100, 40_000, 700_000, 5] {
            let r = c.get(&format!("/big/{n}")).await;
            assert_eq!(r.status, 200, "{case}: {n} bytes");
            assert!(r.body[..] == pattern(n)[..], "{case}: {n} bytes differ");
        }
        assert_eq!(c.get("/small").await.text(), "tiny", "{case}");
        if with_files {
            let r = c.get("/files/big.bin").await;
            assert_eq!(r.status, 200, "{case}");
            assert!(r.body[..] == big[..], "{case}: the file's bytes differ");
            let r = get_with(&mut c, "/files/big.bin", &[("range", "bytes=65530-65545")]).await;
            assert_eq!(r.status, 206, "{case}");
            assert!(r.body[..] == big[65530..=65545], "{case}: range");
            assert_eq!(c.get("/files/hello.txt").await.text(), HELLO, "{case}");
        }
        // Pipelined: three requests in one write, three answers in order.
        let three = "GET /big/3 HTTP/1.1\r\nhost: a\r\n\r\n\
                     GET /small HTTP/1.1\r\nhost: a\r\n\r\n\
                     GET /big/70000 HTTP/1.1\r\nhost: a\r\nconnection: close\r\n\r\n";
        let mut s = TcpStream::connect(t.addr()).await.unwrap();
        s.write_all(three.as_bytes()).await.unwrap();
        let mut out = Vec::new();
        within("three answers", s.read_to_end(&mut out))
            .await
            .unwrap();
        let heads: Vec<_> = out
            .windows(17)
            .filter(|w| w.starts_with(b"HTTP/1.1 200 OK\r\n"))
            .collect();
        assert_eq!(heads.len(), 3, "{case}: {}", String::from_utf8_lossy(&out));
        let tail = pattern(70_000);
        assert!(out.ends_with(&tail), "{case}: the last body is cut");
        let tiny = out.windows(4).position(|w| w == b"tiny");
        let third = out
            .windows(17)
            .rposition(|w| w.starts_with(b"HTTP/1.1 200"));
        assert!(tiny < third, "{case}: answers out of order");
    }
}

#[tokio::test]
async fn static_dir_serves_the_paths_no_route_takes() {
    let site = site();
    let root = site.root.clone();
    let t = HttpTest::start(
        HttpListener::new(Handlers::new().resource(Health::default()))
            .configure_http(|o| o.static_dir = Some(root)),
    );
    let r = t.h1().await.get("/health").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["status"], "ok");
    check_static(&t, &site).await;
}

#[tokio::test]
async fn static_files_through_curl() {
    let site = site();
    let files = StaticFiles::new(&site.root).unwrap();
    let t = HttpTest::start(HttpListener::new(Handlers::new().files("/", files)));
    let url = t.url("/hello.txt");

    let out = curl(&["-r", "0-3", &url]).await;
    assert!(out.status.success(), "{out:?}");
    assert_eq!(out.stdout, b"0123");

    // curl asks for every coding it knows and decodes what comes back.
    let app = t.url("/app.js");
    for accept in [None, Some("br"), Some("gzip")] {
        let mut args = vec!["--compressed", "-D", "-"];
        let header = accept.map(|a| format!("Accept-Encoding: {a}"));
        if let Some(h) = &header {
            args.extend(["-H", h]);
        }
        args.push(&app);
        let out = curl(&args).await;
        assert!(out.status.success(), "{out:?}");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (head, body) = text.split_once("\r\n\r\n").expect("headers then body");
        let head = head.to_ascii_lowercase();
        let coding = accept.unwrap_or("br");
        assert!(
            head.contains(&format!("\ncontent-encoding: {coding}\r")),
            "{accept:?}: {head}"
        );
        assert!(head.contains("\nvary: accept-encoding"), "{head}");
        assert_eq!(body, APP_JS, "{accept:?}");
    }

    // -z: If-Modified-Since.
    let r = t.h1().await.get("/hello.txt").await;
    let modified = r.header("last-modified").unwrap().to_owned();
    let code = |date: String| {
        let url = url.clone();
        async move {
            let out = curl(&["-z", &date, "-o", "/dev/null", "-w", "%{http_code}", &url]).await;
            assert!(out.status.success(), "{out:?}");
            String::from_utf8(out.stdout).unwrap()
        }
    };
    assert_eq!(code(modified).await, "304");
    assert_eq!(code("Thu, 01 Jan 1998 00:00:00 GMT".into()).await, "200");

    // A directory, following its redirect.
    let out = curl(&[
        "-L",
        "--max-redirs",
        "3",
        "-w",
        "\n%{http_code} %{url_effective}",
        &t.url("/sub"),
    ])
    .await;
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(text, format!("{SUB_INDEX}\n200 {}", t.url("/sub/")));
}

// ===== path traversal =====

const ATTEMPTS: &[&str] = &[
    "/../secret.txt",
    "/..%2fsecret.txt",
    "/%2e%2e/secret.txt",
    "/%2e%2e%2fsecret.txt",
    "/%2E%2E/secret.txt",
    "/.%2e/secret.txt",
    "/sub/../../secret.txt",
    "/sub/%2e%2e/%2e%2e/secret.txt",
    "/..\\secret.txt",
    "/..%5csecret.txt",
    "/sub/..%5c..%5csecret.txt",
    "/%00",
    "/a%00b",
    "/hello.txt%00.png",
    "/%2fetc%2fpasswd",
    "//etc/passwd",
    "/%2f%2fetc/passwd",
    "/link-out",
    "/dir-link/secret.txt",
    "/dir-link/",
    "/%252e%252e/secret.txt",
];

/// Tries every attempt on a raw connection, so no client normalises the path first.
async fn check_traversal(addr: SocketAddr) {
    let ask = |path: &str| {
        let request =
            format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
        async move { raw(addr, request.as_bytes()).await }
    };
    // The same requests do reach the files inside the root.
    let ok = ask("/hello.txt").await;
    assert_eq!(status_of(&ok), Some(200), "{ok}");
    assert!(ok.ends_with(HELLO), "{ok}");
    let ok = ask("/%68ello.txt").await;
    assert_eq!(status_of(&ok), Some(200), "{ok}");

    let mut leaks = Vec::new();
    for path in ATTEMPTS {
        let out = ask(path).await;
        let status = status_of(&out);
        if !matches!(status, Some(301 | 400 | 403 | 404))
            || out.contains(SECRET)
            || out.contains("root:x:")
        {
            leaks.push(format!("{path} -> {out:?}"));
        }
    }
    assert!(leaks.is_empty(), "not refused:\n{}", leaks.join("\n"));
}

#[tokio::test]
async fn path_traversal_is_refused_by_files() {
    let site = site();
    let files = StaticFiles::new(&site.root).unwrap();
    let t = HttpTest::start(HttpListener::new(Handlers::new().files("/", files)));
    check_traversal(t.addr()).await;
    assert!(site.dir.path().join("secret.txt").exists());
}

#[tokio::test]
async fn path_traversal_is_refused_by_static_dir() {
    let site = site();
    let root = site.root.clone();
    let t = HttpTest::start(
        HttpListener::new(Handlers::new().resource(Health::default()))
            .configure_http(|o| o.static_dir = Some(root)),
    );
    check_traversal(t.addr()).await;
}

// ===== HTTP/2 and TLS =====

#[tokio::test]
async fn h2c_with_prior_knowledge_beside_http1() {
    let t = HttpTest::start(HttpListener::new(
        Handlers::new().resource(fixed("/v", "1")),
    ));
    let mut h2 = Client::h2c(t.addr()).await;
    for _ in 0..3 {
        let r = h2.send(get2("/v")).await;
        assert_eq!((r.status.as_u16(), r.version), (200, http::Version::HTTP_2));
        assert_eq!(r.body, "1");
    }
    let r = t.h1().await.get("/v").await;
    assert_eq!(
        (r.status.as_u16(), r.version),
        (200, http::Version::HTTP_11)
    );
    let out = curl(&[
        "--http2-prior-knowledge",
        "-w",
        "\n%{http_version}",
        &t.url("/v"),
    ])
    .await;
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "1\n2");
}

#[tokio::test]
async fn https_negotiates_h2_or_http1_by_alpn() {
    let pki = Pki::new();
    let tls = TlsOptions {
        cert: pki.server_cert.clone(),
        key: pki.server_key.clone(),
        alpn: vec!["h2".into(), "http/1.1".into()],
        ..Default::default()
    }
    .load()
    .expect("TLS loads");
    let t =
        HttpTest::start(HttpListener::new(Handlers::new().resource(Health::default())).tls(tls));
    let connect = |alpn: &'static [&'static str]| {
        let connector = pki.connector(None, alpn);
        let addr = t.addr();
        async move {
            let tcp = within("connect", TcpStream::connect(addr)).await.unwrap();
            within("handshake", connector.connect(localhost(), tcp))
                .await
                .expect("TLS handshake")
        }
    };

    let s = connect(&["h2"]).await;
    assert_eq!(s.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let mut c = Client::h2_over(s).await;
    let r = c.send(get2("/health")).await;
    assert_eq!((r.status.as_u16(), r.version), (200, http::Version::HTTP_2));
    assert_eq!(r.json()["status"], "ok");

    let s = connect(&["http/1.1"]).await;
    assert_eq!(s.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    let mut c = Client::h1_over(s).await;
    let r = c.get("/health").await;
    assert_eq!(
        (r.status.as_u16(), r.version),
        (200, http::Version::HTTP_11)
    );
    assert_eq!(r.json()["status"], "ok");

    let port = t.addr().port();
    let resolve = format!("localhost:{port}:127.0.0.1");
    let url = format!("https://localhost:{port}/health");
    let ca = pki.ca.to_str().unwrap();
    for (flag, version) in [("--http2", "2"), ("--http1.1", "1.1")] {
        let out = curl(&[
            "--cacert",
            ca,
            "--resolve",
            &resolve,
            flag,
            "-w",
            "\n%{http_code} %{http_version}",
            &url,
        ])
        .await;
        assert!(out.status.success(), "{flag}: {out:?}");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, last) = text.rsplit_once('\n').unwrap();
        assert_eq!(last, format!("200 {version}"), "{flag}: {text}");
        assert!(body.contains("\"ok\""), "{text}");
    }
}

#[tokio::test]
async fn http2_off_refuses_prior_knowledge_and_serves_http1() {
    let t = HttpTest::start(
        HttpListener::new(Handlers::new().resource(fixed("/v", "1")))
            .configure_http(|o| o.http2 = false),
    );
    let r = t.h1().await.get("/v").await;
    assert_eq!((r.status.as_u16(), r.text().as_str()), (200, "1"));

    let tcp = within("connect", TcpStream::connect(t.addr()))
        .await
        .unwrap();
    let io = hyper_util::rt::TokioIo::new(tcp);
    let exec = hyper_util::rt::TokioExecutor::new();
    let answered = within("h2c attempt", async {
        match hyper::client::conn::http2::handshake(exec, io).await {
            Err(_) => None,
            Ok((mut sender, conn)) => {
                tokio::spawn(conn);
                sender
                    .send_request(get2("/v"))
                    .await
                    .ok()
                    .map(|r| r.status())
            }
        }
    })
    .await;
    assert_eq!(answered, None, "an h2c request was answered");

    let out = curl(&[
        "--http2-prior-knowledge",
        "-w",
        "%{http_version}",
        &t.url("/v"),
    ])
    .await;
    assert!(
        !out.status.success() || !out.stdout.ends_with(b"2"),
        "curl spoke h2c: {out:?}"
    );
    // The listener goes on.
    assert_eq!(t.h1().await.get("/v").await.status, 200);
}

// ===== upgrades =====

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn upgrade_under_load_switches_every_connection_without_a_failure() {
    let old_hold = Hold::new("old");
    let t = HttpTest::start(HttpListener::new(
        Handlers::new()
            .resource(fixed("/v", "1"))
            .resource(old_hold.clone()),
    ));
    let addr = t.addr();

    // Tasks 0..4 keep one connection each (task 0 over h2c); 4..6 open one per request.
    const KEPT: usize = 4;
    const TASKS: usize = 6;
    let stop = Arc::new(AtomicBool::new(false));
    let counts: Arc<Vec<AtomicUsize>> = Arc::new((0..TASKS).map(|_| AtomicUsize::new(0)).collect());
    let tasks: Vec<_> = (0..TASKS)
        .map(|i| {
            let (stop, counts) = (stop.clone(), counts.clone());
            tokio::spawn(async move {
                let mut kept = match i {
                    0 => Some(Client::h2c(addr).await),
                    1..KEPT => Some(Client::h1(addr).await),
                    _ => None,
                };
                let mut seen = Vec::new();
                while !stop.load(SeqCst) {
                    let answer = match &mut kept {
                        Some(c) if i == 0 => c.try_send(get2("/v")).await,
                        Some(c) => c.try_send(get("/v")).await,
                        None => Client::h1(addr).await.try_send(get("/v")).await,
                    };
                    seen.push(match answer {
                        Ok(r) => format!("{} {}", r.status.as_u16(), r.text()),
                        Err(e) => format!("error: {e}"),
                    });
                    counts[i].fetch_add(1, SeqCst);
                }
                seen
            })
        })
        .collect();
    let count = |i: usize| counts[i].load(SeqCst);
    wait_until("every client on the old routes", || {
        (0..TASKS).all(|i| count(i) >= 20)
    })
    .await;

    // A request in flight across the swap.
    let held = tokio::spawn(async move { Client::h1(addr).await.get("/hold").await });
    within("the held request to start", old_hold.entered.notified()).await;
    assert_eq!(t.h1().await.get("/new").await.status, 404);

    upgrade_handle(
        &t.handle,
        Some(
            Handlers::new()
                .resource(fixed("/v", "2"))
                .resource(fixed("/new", "new"))
                .resource(Hold::new("new")),
        ),
    )
    .expect("upgrade");
    let at_upgrade: Vec<usize> = (0..TASKS).map(count).collect();
    let r = t.h1().await.get("/new").await;
    assert_eq!((r.status.as_u16(), r.text().as_str()), (200, "new"));

    wait_until("every client on the new routes", || {
        (0..TASKS).all(|i| count(i) >= at_upgrade[i] + 20)
    })
    .await;
    old_hold.release.notify_one();
    let r = within("the held request", held).await.unwrap();
    assert_eq!((r.status.as_u16(), r.text().as_str()), (200, "old"));
    stop.store(true, SeqCst);

    for (i, task) in tasks.into_iter().enumerate() {
        let seen = within("a client to finish", task).await.unwrap();
        let failed: Vec<_> = seen.iter().filter(|s| !s.starts_with("200 ")).collect();
        assert!(failed.is_empty(), "client {i}: {failed:?}");
        let switch = seen
            .iter()
            .position(|s| s == "200 2")
            .unwrap_or_else(|| panic!("client {i} never saw the new routes"));
        assert!(switch > 0, "client {i} never saw the old routes");
        assert!(
            seen[..switch].iter().all(|s| s == "200 1"),
            "client {i}: {seen:?}"
        );
        assert!(
            seen[switch..].iter().all(|s| s == "200 2"),
            "client {i} went back to the old routes: {seen:?}"
        );
        // Every request sent after the upgrade returned got the new routes.
        assert!(
            switch <= at_upgrade[i] + 1,
            "client {i}: old answer after the upgrade ({switch} > {})",
            at_upgrade[i] + 1
        );
    }
}

#[tokio::test]
async fn upgrades_through_the_registry() {
    let registry = Registry::new();
    let moving = Moving::default();
    let web = HttpListener::new(Handlers::new().resource(moving.clone()))
        .name("web")
        .ip(LOCALHOST)
        .port(0)
        .start_in(&registry)
        .expect("web starts");
    registry
        .start("echo", Server::new(Echo).name("echo").ip(LOCALHOST).port(0))
        .expect("echo starts");
    let mut c = Client::h1(web.local_addr().inet().unwrap()).await;
    assert_eq!(ask(&mut c, "/old").await, (200, "/old".into()));
    assert_eq!(ask(&mut c, "/fresh").await.0, 404);

    // Routes are gathered again only on an upgrade.
    moving.moved.store(true, SeqCst);
    assert_eq!(ask(&mut c, "/fresh").await.0, 404);
    assert_eq!(upgrade_all(&registry).expect("upgrade_all"), ["web"]);
    assert_eq!(ask(&mut c, "/fresh").await, (200, "/fresh".into()));
    assert_eq!(ask(&mut c, "/old").await.0, 404);

    // A re-gather that fails leaves the running routes alone.
    moving.twice.store(true, SeqCst);
    moving.moved.store(false, SeqCst);
    let e = upgrade_all(&registry).expect_err("a route declared twice");
    assert_eq!(e.kind(), ErrorKind::Config, "{e}");
    assert!(e.to_string().contains("listener `web`"), "{e}");
    assert_eq!(ask(&mut c, "/fresh").await.0, 200);
    assert_eq!(ask(&mut c, "/old").await.0, 404);
    moving.twice.store(false, SeqCst);

    // By name; an echo listener among them is refused before any is changed.
    let e = upgrade(&registry, &["web", "echo"]).expect_err("echo is not HTTP");
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
    assert_eq!(ask(&mut c, "/fresh").await.0, 200);
    upgrade(&registry, &["web"]).expect("upgrade web");
    assert_eq!(ask(&mut c, "/old").await.0, 200);
    assert_eq!(ask(&mut c, "/fresh").await.0, 404);

    // New handlers.
    upgrade_listener(&registry, "web", Handlers::new().resource(fixed("/v", "2")))
        .expect("upgrade_listener");
    assert_eq!(ask(&mut c, "/v").await, (200, "2".into()));
    assert_eq!(ask(&mut c, "/old").await.0, 404);

    // Bad handlers are refused; the old routes still serve.
    let twice = Handlers::new()
        .resource(fixed("/x", "a"))
        .resource(fixed("/x", "b"));
    let e = upgrade_listener(&registry, "web", twice).expect_err("duplicate route");
    assert_eq!(e.kind(), ErrorKind::Config, "{e}");
    assert!(e.to_string().contains("listener `web`"), "{e}");
    let bad_host = Handlers::new().host("a..b").resource(fixed("/x", "a"));
    let e = upgrade_listener(&registry, "web", bad_host).expect_err("bad host pattern");
    assert_eq!(e.kind(), ErrorKind::Config, "{e}");
    assert!(e.to_string().contains("a..b"), "{e}");
    assert_eq!(ask(&mut c, "/v").await, (200, "2".into()));
    assert_eq!(ask(&mut c, "/x").await.0, 404);

    // Unknown names and non-HTTP listeners.
    let e = upgrade_listener(&registry, "nope", Handlers::new()).expect_err("unknown");
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
    assert!(e.is_not_found());
    let e = upgrade_listener(&registry, "echo", Handlers::new()).expect_err("echo");
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
    assert!(e.to_string().contains("echo"), "{e}");
    assert_eq!(ask(&mut c, "/v").await, (200, "2".into()));

    drop(c);
    for name in ["web", "echo"] {
        within("stop", registry.stop(name, Some(Duration::ZERO)))
            .await
            .unwrap();
    }
}

// ===== stopping =====

#[tokio::test]
async fn stop_drains_the_request_in_flight_and_closes_idle_connections() {
    let hold = Hold::new("held");
    let t = HttpTest::start(HttpListener::new(
        Handlers::new()
            .resource(fixed("/v", "1"))
            .resource(hold.clone()),
    ));
    let addr = t.addr();
    let mut idle = within("connect", TcpStream::connect(addr)).await.unwrap();
    let answer = within("a first request", raw_get(&mut idle, "/v")).await;
    assert_eq!(answer.unwrap(), (200, "1".to_owned()));

    let held = tokio::spawn(async move {
        let mut c = Client::h1(addr).await;
        c.try_send(get("/hold"))
            .await
            .map(|r| (r.status.as_u16(), r.text()))
    });
    within("the held request to start", hold.entered.notified()).await;

    let handle = t.handle.clone();
    let stopping = tokio::spawn(async move { handle.stop(Duration::from_secs(5)).await });

    // The idle keep-alive connection is closed at once.
    assert!(
        closed_within(&mut idle, Duration::from_secs(2)).await,
        "idle keep-alive connection left open while stopping"
    );
    // New connects are refused.
    let refused = within("connect", TcpStream::connect(addr)).await;
    assert!(refused.is_err(), "a connect was accepted while stopping");
    // The stop waits for the request in flight.
    assert!(!stopping.is_finished(), "stop did not wait for the request");

    hold.release.notify_one();
    let answer = within("the held request", held).await.unwrap();
    assert_eq!(answer.expect("held request answered"), (200, "held".into()));
    let report = within("stop", stopping).await.unwrap();
    assert_eq!((report.drained, report.forced), (2, 0), "{report:?}");
}

#[tokio::test]
async fn stop_forces_a_request_held_past_the_timeout() {
    let hold = Hold::new("held");
    let t = HttpTest::start(HttpListener::new(Handlers::new().resource(hold.clone())));
    let addr = t.addr();
    let held = tokio::spawn(async move {
        let mut c = Client::h1(addr).await;
        c.try_send(get("/hold"))
            .await
            .map(|r| (r.status.as_u16(), r.text()))
    });
    within("the held request to start", hold.entered.notified()).await;
    let report = within("stop", t.handle.stop(Duration::from_millis(200))).await;
    assert_eq!((report.drained, report.forced), (0, 1), "{report:?}");
    let answer = within("the held request", held).await.unwrap();
    assert!(answer.is_err(), "a forced request was answered: {answer:?}");
}

/// Keep-alive clients that ask without pause, each until an answer says `connection: close`;
/// returns when each was sent away, counted from `since`.
async fn ask_until_closed(
    addr: SocketAddr,
    clients: usize,
    since: Arc<std::sync::Mutex<Option<Instant>>>,
) -> Vec<Duration> {
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let since = since.clone();
        tasks.push(tokio::spawn(async move {
            let mut s = TcpStream::connect(addr).await.expect("connect");
            loop {
                s.write_all(b"GET /v HTTP/1.1\r\nHost: localhost\r\n\r\n")
                    .await
                    .expect("write");
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    let n = s.read(&mut byte).await.expect("read");
                    assert_eq!(n, 1, "closed without an answer");
                    head.push(byte[0]);
                }
                let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
                assert!(head.starts_with("http/1.1 200"), "{head}");
                let mut body = [0u8; 1];
                s.read_exact(&mut body).await.expect("the body");
                if head.contains("connection: close") {
                    let stopped = since.lock().unwrap().expect("closed before the stop");
                    return stopped.elapsed();
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }));
    }
    let mut sent_away = Vec::new();
    for t in tasks {
        sent_away.push(within("a client to be sent away", t).await.unwrap());
    }
    sent_away.sort();
    sent_away
}

/// Stops a listener with `spread` while 8 keep-alive clients ask it without pause; the stop's
/// report, and when each client was sent away after the stop began.
async fn departures(spread: Duration) -> (atoll::StopReport, Vec<Duration>) {
    let t = HttpTest::start(
        HttpListener::new(Handlers::new().resource(fixed("/v", "1")))
            .configure_http(|h| h.drain_spread = spread),
    );
    let since = Arc::new(std::sync::Mutex::new(None));
    let clients = tokio::spawn(ask_until_closed(t.addr(), 8, since.clone()));
    tokio::time::sleep(Duration::from_millis(200)).await;
    *since.lock().unwrap() = Some(Instant::now());
    let report = within("stop", t.handle.stop(Duration::from_secs(5))).await;
    (report, clients.await.unwrap())
}

#[tokio::test]
async fn stop_spreads_the_clients_departures_over_drain_spread() {
    let (report, sent_away) = departures(Duration::from_millis(800)).await;
    // Every client got an answer to every request, and a `connection: close` at its turn.
    assert_eq!((report.drained, report.forced), (8, 0), "{report:?}");
    // The turns spread over the window: 8 connections land in 8 different tenths of it
    // (golden-ratio spacing), so the first and the last are at least 5 tenths apart.
    let (first, last) = (sent_away[0], sent_away[7]);
    assert!(last - first >= Duration::from_millis(400), "{sent_away:?}");
    assert!(last < Duration::from_secs(2), "{sent_away:?}");
}

#[tokio::test]
async fn without_drain_spread_stop_sends_every_client_away_at_once() {
    let (report, sent_away) = departures(Duration::ZERO).await;
    assert_eq!((report.drained, report.forced), (8, 0), "{report:?}");
    // Each client's next answer (within its 5 ms pause and a request) says close.
    assert!(
        sent_away[7] - sent_away[0] < Duration::from_millis(300),
        "{sent_away:?}"
    );
}

// ===== timeouts =====

/// Sends a request head that never ends, one byte every 100 ms, until the server closes the
/// connection (or 5 s). Returns how long that took and what the server sent.
async fn trickle(addr: SocketAddr) -> (Duration, Vec<u8>) {
    let s = TcpStream::connect(addr).await.expect("connect");
    let started = Instant::now();
    let (mut rd, mut wr) = s.into_split();
    wr.write_all(b"GET / HTTP/1.1\r\nHo").await.expect("write");
    let rest = b"st: localhost\r\nX-Slow: ".iter().chain([b'a'; 64].iter());
    let mut rest = rest.copied();
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    tick.tick().await;
    while started.elapsed() < Duration::from_secs(5) {
        tokio::select! {
            r = rd.read(&mut buf) => match r {
                Ok(0) | Err(_) => return (started.elapsed(), got),
                Ok(n) => got.extend_from_slice(&buf[..n]),
            },
            _ = tick.tick() => {
                let byte = rest.next().unwrap_or(b'a');
                if wr.write_all(&[byte]).await.is_err() {
                    return (started.elapsed(), got);
                }
            }
        }
    }
    panic!(
        "a slow request head kept its connection for 5 s: {:?}",
        String::from_utf8_lossy(&got)
    );
}

#[tokio::test]
async fn header_read_timeout_cuts_slow_and_silent_clients() {
    let t = HttpTest::start(
        HttpListener::new(Handlers::new().resource(fixed("/v", "1")))
            .configure_http(|o| o.header_read_timeout = Duration::from_millis(300)),
    );
    let addr = t.addr();
    let slow = tokio::spawn(trickle(addr));
    let mut silent = within("connect", TcpStream::connect(addr)).await.unwrap();

    // A normal client is served meanwhile.
    let r = t.h1().await.get("/v").await;
    assert_eq!((r.status.as_u16(), r.text().as_str()), (200, "1"));

    let (took, got) = within("the slow client", slow).await.unwrap();
    let got = String::from_utf8_lossy(&got);
    assert!(
        took < Duration::from_secs(3),
        "slow client kept for {took:?}"
    );
    assert!(!got.contains(" 200 "), "slow client answered: {got}");
    assert!(
        closed_within(&mut silent, Duration::from_secs(3)).await,
        "a silent client was kept open"
    );
}

#[tokio::test]
async fn idle_timeout_closes_quiet_keep_alive_connections_only() {
    let t = HttpTest::start(
        HttpListener::new(Handlers::new().resource(fixed("/v", "1"))).configure_http(|o| {
            o.idle_timeout = Duration::from_millis(300);
            o.header_read_timeout = Duration::from_secs(5);
        }),
    );
    let addr = t.addr();
    let busy = tokio::spawn(async move {
        let mut s = TcpStream::connect(addr).await.expect("connect");
        let started = Instant::now();
        let mut n = 0;
        while started.elapsed() < Duration::from_millis(1200) {
            let answer = raw_get(&mut s, "/v").await;
            assert_eq!(
                answer.expect("busy connection kept open"),
                (200, "1".into()),
                "request {n}"
            );
            n += 1;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        n
    });

    let mut quiet = within("connect", TcpStream::connect(addr)).await.unwrap();
    let answer = within("a first request", raw_get(&mut quiet, "/v")).await;
    assert_eq!(answer.unwrap(), (200, "1".to_owned()));
    let quiet_closed = closed_within(&mut quiet, Duration::from_secs(3)).await;

    let n = within("the busy client", busy).await.unwrap();
    assert!(n >= 8, "only {n} requests");
    assert!(
        quiet_closed,
        "a keep-alive connection idle for 3 s was kept open (idle_timeout 300 ms)"
    );
}

// ===== the binary =====

fn write_config(dir: &Path, text: &str) -> PathBuf {
    let path = dir.join("atoll.toml");
    std::fs::write(&path, text).unwrap();
    path
}

const WEB: &str = "[[listener]]\nname = \"web\"\nkind = \"http\"\nip = \"127.0.0.1\"\nport = 0\nshutdown_timeout = \"1s\"\n";
const RESOURCES: &str = "[[listener.handlers]]\nresources = [\"health\", \"listeners\", { name = \"static\", dir = \"site\" }]\n";

#[tokio::test]
async fn binary_serves_an_http_listener_from_its_config() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("site")).unwrap();
    std::fs::write(dir.path().join("site/index.html"), INDEX).unwrap();
    let config = write_config(dir.path(), &format!("{WEB}\n{RESOURCES}"));
    let mut atoll = Atoll::serve(&config);
    let (name, kind, addr) = atoll.listening(1).remove(0);
    assert_eq!((name.as_str(), kind.as_str()), ("web", "http"));
    assert_eq!(addr.ip(), LOCALHOST);

    let mut c = Client::h1(addr).await;
    let r = c.get("/health").await;
    assert_eq!(r.status, 200);
    assert!(r
        .header("content-type")
        .unwrap()
        .starts_with("application/json"));
    assert_eq!(r.json()["status"], "ok");

    let r = c.get("/listeners").await;
    assert_eq!(r.status, 200);
    let list = r.json();
    let list = list.as_array().expect("a JSON list");
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0]["name"], "web");
    assert_eq!(list[0]["kind"], "http");
    assert_eq!(list[0]["addr"], addr.to_string());
    assert!(list[0]["uptime_secs"].as_f64().is_some(), "{list:?}");
    assert!(list[0]["uptime"].as_str().is_some(), "{list:?}");
    let r = c.get("/listeners/web").await;
    assert_eq!((r.status.as_u16(), &r.json()["name"]), (200, &"web".into()));

    let r = c.get("/").await;
    assert_eq!((r.status.as_u16(), r.text().as_str()), (200, INDEX));
    assert_eq!(c.get("/nothing-here").await.status, 404);

    drop(c);
    atoll.signal("TERM");
    let status = atoll.exit();
    assert_eq!(status.code(), Some(0), "{status}; {}", atoll.stderr());
}

/// Runs `atoll serve` on `text`; expects exit code 1 and one clear line naming the file.
fn fails_on(text: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("site")).unwrap();
    Atoll::fails_with(&write_config(dir.path(), text))
}

#[test]
fn binary_rejects_bad_http_configs_in_one_line() {
    let line = fails_on(&format!(
        "{WEB}[[listener.handlers]]\nresources = [\"health\", \"nope\"]\n"
    ));
    assert!(line.contains("listener `web`"), "{line}");
    assert!(line.contains("unknown resource `nope`"), "{line}");

    let line = fails_on(&format!("{WEB}idle_timeout = \"1000000h\"\n{RESOURCES}"));
    assert!(line.contains("listener `web`"), "{line}");
    assert!(
        line.contains("`idle_timeout` must be at most a year"),
        "{line}"
    );

    let line = fails_on(&format!("{WEB}vectored_writes = \"yes\"\n{RESOURCES}"));
    assert!(line.contains("listener `web`"), "{line}");
    assert!(line.contains("vectored_writes"), "{line}");

    let line = fails_on(&format!("{WEB}body_read_timeout = \"0s\"\n{RESOURCES}"));
    assert!(line.contains("listener `web`"), "{line}");
    assert!(
        line.contains("`body_read_timeout` must be more than 0"),
        "{line}"
    );

    let line = fails_on(&format!("{WEB}max_headers = 0\n{RESOURCES}"));
    assert!(line.contains("listener `web`"), "{line}");
    assert!(line.contains("`max_headers` must be at least 1"), "{line}");

    let line = fails_on(&format!("{WEB}header_timeout = \"1s\"\n{RESOURCES}"));
    assert!(line.contains("listener `web`"), "{line}");
    assert!(line.contains("unknown field `header_timeout`"), "{line}");

    let line = fails_on(&format!(
        "{}{RESOURCES}",
        WEB.replace("\"http\"", "\"https\"")
    ));
    assert!(line.contains("listener `web`"), "{line}");
    assert!(line.contains("[listener.tls]"), "{line}");

    let line = fails_on(&format!(
        "{WEB}[[listener.handlers]]\nhost = \"a..b\"\nresources = [\"health\"]\n"
    ));
    assert!(line.contains("listener `web`"), "{line}");
    assert!(line.contains("a..b"), "{line}");
}

#[tokio::test]
async fn binary_serves_the_site_with_the_shipped_config() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let shipped = std::fs::read_to_string(repo.join("atoll.toml")).unwrap();
    let site_dir = repo.join("site");
    let mut ports = 0;
    let text: String = shipped
        .lines()
        .map(|line| {
            if line.starts_with("port = ") {
                ports += 1;
                "port = 0".to_owned()
            } else {
                line.replace(
                    "dir = \"site\"",
                    &format!("dir = {:?}", site_dir.to_str().unwrap()),
                )
            }
        })
        .map(|line| line + "\n")
        .collect();
    assert_eq!(
        ports, 4,
        "the shipped config's listeners changed:\n{shipped}"
    );
    assert!(
        text.contains(site_dir.to_str().unwrap()),
        "no static dir:\n{text}"
    );
    let dir = tempfile::tempdir().unwrap();
    let mut atoll = Atoll::serve(&write_config(dir.path(), &text));
    let all = atoll.listening(4);
    let (_, _, addr) = all
        .iter()
        .find(|(name, kind, _)| name == "web" && kind == "http")
        .unwrap_or_else(|| panic!("no web listener: {all:?}"))
        .clone();

    let mut c = Client::h1(addr).await;
    let r = c.get("/").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body, std::fs::read(site_dir.join("index.html")).unwrap());
    assert!(r.header("content-type").unwrap().starts_with("text/html"));
    let r = c.get("/style.css").await;
    assert_eq!(r.status, 200);
    assert!(r.header("content-type").unwrap().starts_with("text/css"));
    assert_eq!(c.get("/health").await.json()["status"], "ok");
    // The site's WebSocket page, and the `websocket_echo` route it talks to.
    let r = c.get("/ws.html").await;
    assert_eq!(r.status, 200);
    assert!(r.text().contains("\"/ws\""), "ws.html does not open /ws");
    {
        use futures_util::{SinkExt, StreamExt};
        use tokio_tungstenite::tungstenite::Message;
        let tcp = within("connect", TcpStream::connect(addr)).await.unwrap();
        let url = format!("ws://{addr}/ws");
        let (mut ws, _) = within("the handshake", tokio_tungstenite::client_async(url, tcp))
            .await
            .expect("the shipped config's /ws is a WebSocket");
        within("send", ws.send(Message::text("hi"))).await.unwrap();
        let echo = within("the echo", ws.next()).await.unwrap().unwrap();
        assert_eq!(echo, Message::text("hi"));
        within("close", ws.close(None)).await.unwrap();
    }

    // Its admin listener shows the web listener's requests.
    let (_, _, admin) = all
        .iter()
        .find(|(name, kind, _)| name == "admin" && kind == "admin")
        .unwrap_or_else(|| panic!("no admin listener: {all:?}"))
        .clone();
    let mut a = Client::h1(admin).await;
    assert_eq!(a.get("/readyz").await.status, 200);
    let metrics = a.get("/metrics").await.text();
    let line = "atoll_http_requests_total{listener=\"web\",status=\"2xx\"} 4";
    assert!(metrics.lines().any(|l| l == line), "{metrics}");

    drop((c, a));
    atoll.signal("TERM");
    assert_eq!(atoll.exit().code(), Some(0), "{}", atoll.stderr());
}
