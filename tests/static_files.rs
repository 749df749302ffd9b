//! Static files with their cache, over real sockets: what is cached is served until the
//! freshness bound and as it now is after it (changed, added, removed, a link swapped), the
//! traversal defences hold with the cache warm, and large files go out with `sendfile` on
//! plain HTTP/1 (counted through the telemetry) and whole on every other connection.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use atoll::http::{CacheOptions, Handlers, HttpListener, StaticFiles};
use atoll::telemetry::EventKind;
use atoll::TlsOptions;
use bytes::Bytes;
use common::http::{raw, req, req2, Client, HttpTest, Resp};
use common::{within, Pki};
use http::Method;
use http_body_util::Full;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const SECRET: &str = "SECRET-outside-the-root";

/// `dir/outside/` (a secret and an index) beside the served `dir/www/`.
struct Site {
    dir: tempfile::TempDir,
    root: PathBuf,
}

impl Site {
    fn new() -> Site {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("www");
        std::fs::create_dir_all(root.join("docs")).unwrap();
        std::fs::create_dir_all(dir.path().join("outside")).unwrap();
        std::fs::write(dir.path().join("outside/secret.txt"), SECRET).unwrap();
        std::fs::write(dir.path().join("outside/index.html"), SECRET).unwrap();
        std::fs::write(root.join("a.txt"), "one").unwrap();
        std::fs::write(root.join("inside.txt"), "inside").unwrap();
        std::fs::write(root.join("docs/index.html"), "docs index").unwrap();
        Site { dir, root }
    }

    fn outside(&self, name: &str) -> PathBuf {
        self.dir.path().join("outside").join(name)
    }

    /// Replaces `name` in the root at once (a rename), as deploy tools do.
    fn replace(&self, name: &str, data: &str) {
        let tmp = self.root.join(format!(".{name}.tmp"));
        std::fs::write(&tmp, data).unwrap();
        std::fs::rename(tmp, self.root.join(name)).unwrap();
    }

    /// Points the link `name` in the root at `target`, swapping it at once if it exists.
    fn link(&self, name: &str, target: &Path) {
        let tmp = self.root.join(format!(".{name}.link"));
        std::os::unix::fs::symlink(target, &tmp).unwrap();
        std::fs::rename(tmp, self.root.join(name)).unwrap();
    }
}

/// A listener serving `root` at `/` with the cache trusting entries for `valid`.
fn serve(root: &Path, valid: Duration) -> HttpTest {
    let files = StaticFiles::new(root).unwrap().cache(CacheOptions {
        revalidate_after: valid,
        ..CacheOptions::default()
    });
    HttpTest::start(HttpListener::new(Handlers::new().files("/", files)))
}

async fn get(t: &HttpTest, path: &str) -> Resp {
    t.h1().await.get(path).await
}

/// Asks for `path` until `done` says yes, failing after the common wait; checks `each`
/// answer on the way.
async fn until(t: &HttpTest, path: &str, each: impl Fn(&Resp), done: impl Fn(&Resp) -> bool) {
    within(&format!("{path} to change"), async {
        loop {
            let r = get(t, path).await;
            each(&r);
            if done(&r) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
}

/// `path` with `Accept-Encoding: gzip`.
async fn get_gz(t: &HttpTest, path: &str) -> Resp {
    let request = req(Method::GET, path)
        .header("accept-encoding", "gzip")
        .body(Full::<Bytes>::default())
        .unwrap();
    t.h1().await.send(request).await
}

fn never_secret(r: &Resp) {
    assert!(!r.text().contains(SECRET), "leaked: {r:?}");
}

#[tokio::test]
async fn within_the_bound_the_cache_answers_what_was_checked() {
    let site = Site::new();
    // An hour: nothing below may depend on the clock.
    let t = serve(&site.root, Duration::from_secs(3600));
    assert_eq!(get(&t, "/a.txt").await.text(), "one");
    let etag = get(&t, "/a.txt").await.header("etag").unwrap().to_owned();
    site.replace("a.txt", "two, longer");
    // Held contents, length and validators: the answer is the file as it was checked.
    let r = get(&t, "/a.txt").await;
    assert_eq!(
        (r.text().as_str(), r.header("etag")),
        ("one", Some(etag.as_str()))
    );
    // A path never asked for is looked up now.
    std::fs::write(site.root.join("new.txt"), "new").unwrap();
    assert_eq!(get(&t, "/new.txt").await.text(), "new");
    // Not found is not remembered: a file that appears is served at the next request.
    assert_eq!(get(&t, "/later.txt").await.status, 404);
    std::fs::write(site.root.join("later.txt"), "later").unwrap();
    assert_eq!(get(&t, "/later.txt").await.text(), "later");
}

#[tokio::test]
async fn a_changed_added_or_removed_file_is_served_as_it_now_is_after_the_bound() {
    let site = Site::new();
    let t = serve(&site.root, Duration::from_millis(100));
    assert_eq!(get(&t, "/a.txt").await.text(), "one");
    let first = get(&t, "/a.txt").await;

    // Changed in place (same inode) and replaced by a rename (a new inode).
    std::fs::write(site.root.join("a.txt"), "two!").unwrap();
    until(&t, "/a.txt", |_| {}, |r| r.text() == "two!").await;
    let r = get(&t, "/a.txt").await;
    assert_ne!(r.header("etag"), first.header("etag"));
    assert_eq!(r.header("content-length"), Some("4"));
    site.replace("a.txt", "three");
    until(&t, "/a.txt", |_| {}, |r| r.text() == "three").await;

    // A precompressed variant added, then removed.
    assert_eq!(get_gz(&t, "/a.txt").await.header("content-encoding"), None);
    std::fs::write(site.root.join("a.txt.gz"), "gz bytes").unwrap();
    within("the variant to appear", async {
        while get_gz(&t, "/a.txt").await.text() != "gz bytes" {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    std::fs::remove_file(site.root.join("a.txt.gz")).unwrap();
    within("the variant to go", async {
        while get_gz(&t, "/a.txt").await.text() != "three" {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;

    // Removed: 404; a directory's index added later.
    std::fs::remove_file(site.root.join("a.txt")).unwrap();
    until(&t, "/a.txt", |_| {}, |r| r.status == 404).await;
    std::fs::create_dir(site.root.join("blog")).unwrap();
    assert_eq!(get(&t, "/blog/").await.status, 404);
    std::fs::write(site.root.join("blog/index.html"), "blog").unwrap();
    until(&t, "/blog/", |_| {}, |r| r.text() == "blog").await;
    // A directory that becomes a file: the redirect goes with it.
    assert_eq!(get(&t, "/blog").await.status, 301);
    std::fs::remove_dir_all(site.root.join("blog")).unwrap();
    std::fs::write(site.root.join("blog"), "now a file").unwrap();
    until(&t, "/blog", |_| {}, |r| r.text() == "now a file").await;
}

#[tokio::test]
async fn a_link_swapped_after_a_first_request_never_leaks() {
    let site = Site::new();
    let t = serve(&site.root, Duration::from_millis(100));
    // A link to a file, a link to a directory, and a variant that is a link, all inside.
    site.link("page.txt", &site.root.join("inside.txt"));
    site.link("dir", &site.root.join("docs"));
    std::fs::write(site.root.join("plain.txt"), "plain").unwrap();
    site.link("plain.txt.br", &site.root.join("inside.txt"));
    let br = |path: &str| {
        req(Method::GET, path)
            .header("accept-encoding", "br")
            .body(Full::<Bytes>::default())
            .unwrap()
    };
    assert_eq!(get(&t, "/page.txt").await.text(), "inside");
    assert_eq!(get(&t, "/dir/").await.text(), "docs index");
    assert_eq!(t.h1().await.send(br("/plain.txt")).await.text(), "inside");

    // Swapped to point out of the root: what is cached is the file that was checked, and
    // once the bound passes the link is checked again and refused.
    site.link("page.txt", &site.outside("secret.txt"));
    site.link("dir", &site.dir.path().join("outside"));
    site.link("plain.txt.br", &site.outside("secret.txt"));
    let inside_or_gone = |r: &Resp| {
        never_secret(r);
        assert!(r.status == 404 || r.text() == "inside", "{r:?}");
    };
    until(&t, "/page.txt", inside_or_gone, |r| r.status == 404).await;
    until(
        &t,
        "/dir/",
        |r| {
            never_secret(r);
            assert!(r.status == 404 || r.text() == "docs index", "{r:?}");
        },
        |r| r.status == 404,
    )
    .await;
    within("the variant to be dropped", async {
        loop {
            let r = t.h1().await.send(br("/plain.txt")).await;
            never_secret(&r);
            if r.text() == "plain" {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    // And asked again and again, it stays refused.
    for _ in 0..3 {
        never_secret(&get(&t, "/page.txt").await);
        never_secret(&get(&t, "/dir/secret.txt").await);
        never_secret(&get(&t, "/dir/").await);
    }
}

#[tokio::test]
async fn traversal_stays_refused_with_the_cache_warm() {
    let site = Site::new();
    let t = serve(&site.root, Duration::from_secs(3600));
    std::os::unix::fs::symlink(site.outside("secret.txt"), site.root.join("link-out")).unwrap();
    let attempts = [
        "/../outside/secret.txt",
        "/%2e%2e/outside/secret.txt",
        "/..%2foutside%2fsecret.txt",
        "/docs/..%2f..%2foutside/secret.txt",
        "/link-out",
        "/a.txt%00.png",
        "/a.txt/",
    ];
    // Twice each, with a file inside asked for in between: a second answer comes from the
    // same cache a first one would have filled.
    for round in 0..2 {
        assert_eq!(get(&t, "/a.txt").await.text(), "one");
        for path in attempts {
            let request =
                format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
            let out = raw(t.addr(), request.as_bytes()).await;
            assert!(
                out.starts_with("HTTP/1.1 404") || out.starts_with("HTTP/1.1 400"),
                "round {round}: {path} -> {out}"
            );
            assert!(!out.contains(SECRET), "round {round}: {path} -> {out}");
        }
    }
}

/// 3 MiB and a bit, in a pattern whose offsets can be checked.
fn big() -> Vec<u8> {
    (0..3 * 1024 * 1024 + 17).map(|i| (i % 251) as u8).collect()
}

#[tokio::test]
async fn large_files_go_out_with_sendfile_on_plain_http1() {
    let site = Site::new();
    let data = big();
    std::fs::write(site.root.join("big.bin"), &data).unwrap();
    let t = serve(&site.root, Duration::from_secs(3600));
    let mut c = t.h1().await;
    // Twice on one connection (the second from the cached descriptor), then a range.
    for _ in 0..2 {
        let r = c.get("/big.bin").await;
        assert_eq!(r.status, 200);
        assert!(r.body[..] == data[..], "the body differs");
    }
    let r = c
        .send(
            req(Method::GET, "/big.bin")
                .header("range", "bytes=1000-2000000")
                .body(Full::default())
                .unwrap(),
        )
        .await;
    assert_eq!(r.status, 206);
    assert!(r.body[..] == data[1000..=2_000_000], "the range differs");
    // A small file on the same connection comes from memory, after the file regions.
    assert_eq!(c.get("/a.txt").await.text(), "one");
    // A middling file is held in memory and open: here it goes out with sendfile too.
    std::fs::write(site.root.join("mid.bin"), &data[..100_000]).unwrap();
    for _ in 0..2 {
        let r = c.get("/mid.bin").await;
        assert!(r.body[..] == data[..100_000], "the middling body differs");
    }
    let r = c
        .send(
            req(Method::GET, "/mid.bin")
                .header("range", "bytes=70000-")
                .body(Full::default())
                .unwrap(),
        )
        .await;
    assert_eq!(r.status, 206);
    assert!(
        r.body[..] == data[70_000..100_000],
        "the middling range differs"
    );

    let sent: u64 = t
        .events
        .all()
        .iter()
        .filter(|e| e.kind == EventKind::Sendfile)
        .map(|e| e.bytes.unwrap_or(0))
        .sum();
    let expected = 2 * data.len() as u64 + 2_000_000 - 1000 + 1 + 2 * 100_000 + 30_000;
    assert_eq!(sent, expected, "bytes sent with sendfile");
    assert!(t.events.count(EventKind::Sendfile) >= 3);
}

#[tokio::test]
async fn large_files_are_whole_over_h2c_and_tls_without_sendfile() {
    let site = Site::new();
    let data = big();
    std::fs::write(site.root.join("big.bin"), &data).unwrap();

    let t = serve(&site.root, Duration::from_secs(3600));
    let mut h2 = Client::h2c(t.addr()).await;
    let r = h2
        .send(req2(Method::GET, "/big.bin").body(Full::default()).unwrap())
        .await;
    assert!(r.body[..] == data[..], "h2c: the body differs");
    std::fs::write(site.root.join("mid.bin"), &data[..100_000]).unwrap();
    for _ in 0..2 {
        let r = h2
            .send(req2(Method::GET, "/mid.bin").body(Full::default()).unwrap())
            .await;
        assert!(
            r.body[..] == data[..100_000],
            "h2c: the middling body differs"
        );
    }

    let pki = Pki::new();
    let tls = TlsOptions {
        cert: pki.server_cert.clone(),
        key: pki.server_key.clone(),
        alpn: vec!["http/1.1".into()],
        ..Default::default()
    }
    .load()
    .expect("TLS loads");
    let files = StaticFiles::new(&site.root).unwrap();
    let secure = HttpTest::start(HttpListener::new(Handlers::new().files("/", files)).tls(tls));
    let tcp = within("connect", TcpStream::connect(secure.addr()))
        .await
        .unwrap();
    let localhost = ServerName::try_from("localhost").unwrap();
    let s = within(
        "handshake",
        pki.connector(None, &["http/1.1"]).connect(localhost, tcp),
    )
    .await
    .unwrap();
    let mut c = Client::h1_over(s).await;
    for _ in 0..2 {
        let r = c.get("/big.bin").await;
        assert!(r.body[..] == data[..], "TLS: the body differs");
        let r = c.get("/mid.bin").await;
        assert!(
            r.body[..] == data[..100_000],
            "TLS: the middling body differs"
        );
    }
    assert_eq!(t.events.count(EventKind::Sendfile), 0);
    assert_eq!(secure.events.count(EventKind::Sendfile), 0);
}

#[tokio::test]
async fn a_file_that_shrinks_under_sendfile_ends_the_connection_not_the_length() {
    let site = Site::new();
    let data = big();
    std::fs::write(site.root.join("big.bin"), &data).unwrap();
    let t = serve(&site.root, Duration::from_secs(3600));
    assert!(get(&t, "/big.bin").await.body[..] == data[..]);
    // Cut in place: the cached length is now a promise the file cannot keep.
    std::fs::File::options()
        .write(true)
        .open(site.root.join("big.bin"))
        .unwrap()
        .set_len(1000)
        .unwrap();
    let mut s = within("connect", TcpStream::connect(t.addr()))
        .await
        .unwrap();
    s.write_all(b"GET /big.bin HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut out = Vec::new();
    // Closed by the server, with or without a reset.
    let _ = within("the server to close", s.read_to_end(&mut out)).await;
    assert!(
        out.starts_with(b"HTTP/1.1 200"),
        "{:?}",
        &out[..out.len().min(200)]
    );
    let head = out.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    assert!(
        out.len() - head < data.len(),
        "as many bytes as before the cut"
    );
    assert_eq!(&out[head..head + 1000], &data[..1000]);
}

#[tokio::test]
async fn static_cache_is_read_from_a_listener_table() {
    let options: atoll::http::HttpOptions =
        toml::from_str("static_cache = { size = 0, revalidate_after = \"250ms\" }").unwrap();
    assert_eq!(
        options.static_cache,
        CacheOptions {
            size: 0,
            revalidate_after: Duration::from_millis(250),
            ..CacheOptions::default()
        }
    );
    let wrong = toml::from_str::<atoll::http::HttpOptions>("static_cache = { sise = 1 }");
    assert!(wrong.unwrap_err().to_string().contains("sise"));

    // Off: every request looks again, so a replaced file is seen at once.
    let site = Site::new();
    let root = site.root.clone();
    let t = HttpTest::start(HttpListener::new(Handlers::new()).configure_http(move |o| {
        o.static_dir = Some(root);
        o.static_cache = options.static_cache;
    }));
    assert_eq!(get(&t, "/a.txt").await.text(), "one");
    site.replace("a.txt", "two");
    assert_eq!(get(&t, "/a.txt").await.text(), "two");
}

#[tokio::test]
async fn pipelined_requests_get_their_files_in_order() {
    let site = Site::new();
    let data = big();
    std::fs::write(site.root.join("big.bin"), &data).unwrap();
    std::fs::write(site.root.join("mid.bin"), &data[..100_000]).unwrap();
    let t = serve(&site.root, Duration::from_secs(3600));
    let mut s = within("connect", TcpStream::connect(t.addr()))
        .await
        .unwrap();
    // Three requests in one write: two file regions with a small file between them.
    let three = "GET /big.bin HTTP/1.1\r\nhost: a\r\n\r\n\
                 GET /a.txt HTTP/1.1\r\nhost: a\r\n\r\n\
                 GET /mid.bin HTTP/1.1\r\nhost: a\r\nconnection: close\r\n\r\n";
    s.write_all(three.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    within("three answers", s.read_to_end(&mut out))
        .await
        .unwrap();
    let mut rest = &out[..];
    for body in [&data[..], b"one", &data[..100_000]] {
        assert!(rest.starts_with(b"HTTP/1.1 200 OK\r\n"));
        let head = rest.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        assert!(rest[head..].starts_with(body), "a body differs");
        rest = &rest[head + body.len()..];
    }
    assert!(rest.is_empty(), "{} bytes too many", rest.len());
    assert_eq!(
        t.events
            .all()
            .iter()
            .filter(|e| e.kind == EventKind::Sendfile)
            .map(|e| e.bytes.unwrap_or(0))
            .sum::<u64>(),
        data.len() as u64 + 100_000
    );
}

#[tokio::test]
async fn the_static_resource_of_a_config_takes_its_own_cache_settings() {
    let site = Site::new();
    let catalogue = atoll::http::Catalogue::builtin(&atoll::Registry::new());
    let handlers = |cache: &str| {
        let text = format!(
            "handlers = [{{ host = \"_\", resources = [{{ name = \"static\", dir = \"{}\", {cache} }}] }}]",
            site.root.display()
        );
        let table: toml::Table = toml::from_str(&text).unwrap();
        catalogue.handlers(table.get("handlers"), &site.root)
    };
    let wrong = handlers("cache = { sise = 1 }").unwrap_err();
    assert!(wrong.contains("sise"), "{wrong}");

    // Off: every request looks again, so a replaced file is seen at once.
    let t = HttpTest::start(HttpListener::new(handlers("cache = { size = 0 }").unwrap()));
    assert_eq!(get(&t, "/a.txt").await.text(), "one");
    site.replace("a.txt", "two");
    assert_eq!(get(&t, "/a.txt").await.text(), "two");
}
