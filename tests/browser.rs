//! The shipped site's WebSocket page in a real browser: `atoll serve` serves `site/` and
//! `websocket_echo`, headless Chromium (Debian's, at /usr/bin/chromium, which `.ci/run`
//! installs) loads `ws.html`, and the test types a message into the page, sends it with the
//! page's button and reads the page until the echo shows. Chromium is driven through the
//! DevTools protocol over its WebSocket, with tokio-tungstenite's client.

mod common;

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use common::process::Atoll;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{client_async, WebSocketStream};

const CHROMIUM: &str = "/usr/bin/chromium";

/// Every wait on the browser: its start, a DevTools call, the page's state, the echo. Longer
/// than [`common::WAIT`]: Chromium starts slowly on a busy machine.
const BROWSER_WAIT: Duration = Duration::from_secs(30);

/// Headless Chromium with a profile of its own, in a process group of its own: the whole
/// group (the browser, its zygote, renderers and helpers) is killed when this drops, test
/// failure included.
struct Chromium {
    child: Child,
    stderr: Arc<Mutex<String>>,
    devtools: mpsc::Receiver<String>,
    _profile: tempfile::TempDir,
}

impl Chromium {
    fn launch(extra: &[&str]) -> Chromium {
        assert!(
            Path::new(CHROMIUM).is_file(),
            "{CHROMIUM} is missing: this test needs Debian's Chromium (`apt-get install \
             chromium`, which .ci/run does)"
        );
        let profile = tempfile::tempdir().unwrap();
        let mut child = Command::new(CHROMIUM)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--remote-debugging-port=0",
                "about:blank",
            ])
            .args(extra)
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("{CHROMIUM} does not start: {e}"));
        // Chromium says where its DevTools endpoint is on stderr; the rest of stderr is kept
        // for the failure messages. Read to the end, so Chromium never blocks on the pipe.
        let stderr = Arc::new(Mutex::new(String::new()));
        let (tx, devtools) = mpsc::channel();
        let (pipe, sink) = (child.stderr.take().unwrap(), stderr.clone());
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                if let Some(url) = line.strip_prefix("DevTools listening on ") {
                    let _ = tx.send(url.trim().to_owned());
                }
                let mut all = sink.lock().unwrap();
                all.push_str(&line);
                all.push('\n');
            }
        });
        Chromium {
            child,
            stderr,
            devtools,
            _profile: profile,
        }
    }

    /// The browser's DevTools WebSocket address (`ws://127.0.0.1:PORT/devtools/browser/ID`).
    fn devtools_url(&self) -> String {
        self.devtools
            .recv_timeout(BROWSER_WAIT)
            .unwrap_or_else(|_| panic!("Chromium printed no DevTools address; {}", self.log()))
    }

    /// The end of what Chromium wrote to stderr, for failure messages.
    fn log(&self) -> String {
        let all = self.stderr.lock().unwrap();
        let tail: String = {
            let start = all.len().saturating_sub(3000);
            let start = (start..all.len())
                .find(|&i| all.is_char_boundary(i))
                .unwrap_or(all.len());
            all[start..].to_owned()
        };
        format!("Chromium's stderr ends with:\n{tail}")
    }
}

impl Drop for Chromium {
    fn drop(&mut self) {
        let group = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
        let _ = self.child.wait();
        // Its other processes, before the profile is removed (they are no longer children of
        // this process once the browser is gone: the system reaps them).
        let deadline = Instant::now() + Duration::from_secs(5);
        while nix::sys::signal::killpg(group, None).is_ok() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// A DevTools protocol connection to the browser: calls by id, events skipped.
struct Cdp {
    ws: WebSocketStream<TcpStream>,
    next_id: u64,
}

impl Cdp {
    async fn connect(url: &str) -> Cdp {
        let authority = url
            .strip_prefix("ws://")
            .and_then(|rest| rest.split('/').next())
            .unwrap_or_else(|| panic!("not a ws:// address: {url}"));
        let tcp = tokio::time::timeout(BROWSER_WAIT, TcpStream::connect(authority))
            .await
            .expect("timed out connecting to DevTools")
            .expect("connect to DevTools");
        let (ws, _) = tokio::time::timeout(BROWSER_WAIT, client_async(url, tcp))
            .await
            .expect("timed out in the DevTools handshake")
            .expect("the DevTools handshake");
        Cdp { ws, next_id: 1 }
    }

    /// Calls `method` (in the page's session, when given) and returns its result, or the
    /// protocol's error.
    async fn call(
        &mut self,
        method: &str,
        params: Value,
        session: Option<&str>,
    ) -> Result<Value, String> {
        let id = self.next_id;
        self.next_id += 1;
        let mut request = json!({ "id": id, "method": method, "params": params });
        if let Some(session) = session {
            request["sessionId"] = json!(session);
        }
        let answer = async {
            self.ws
                .send(Message::text(request.to_string()))
                .await
                .map_err(|e| format!("send: {e}"))?;
            loop {
                let msg = match self.ws.next().await {
                    Some(Ok(msg)) => msg,
                    Some(Err(e)) => return Err(format!("DevTools connection: {e}")),
                    None => return Err("DevTools connection closed".to_owned()),
                };
                let Message::Text(text) = msg else { continue };
                let v: Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
                if v["id"] != json!(id) {
                    continue; // an event, or another call's late answer
                }
                return match v.get("error") {
                    Some(error) => Err(format!("{method}: {error}")),
                    None => Ok(v["result"].clone()),
                };
            }
        };
        match tokio::time::timeout(BROWSER_WAIT, answer).await {
            Ok(result) => result,
            Err(_) => panic!("DevTools did not answer {method} within {BROWSER_WAIT:?}"),
        }
    }

    /// The value of the JavaScript `expression` in the page, or what went wrong.
    async fn eval(&mut self, session: &str, expression: &str) -> Result<Value, String> {
        let params = json!({ "expression": expression, "returnByValue": true });
        let r = self.call("Runtime.evaluate", params, Some(session)).await?;
        match r.get("exceptionDetails") {
            Some(e) => Err(format!("{expression}: {e}")),
            None => Ok(r["result"]["value"].clone()),
        }
    }

    /// Evaluates `expression` until `done` accepts its value, within [`BROWSER_WAIT`]; panics
    /// with `what` and the last value seen otherwise.
    async fn eval_until(
        &mut self,
        session: &str,
        what: &str,
        expression: &str,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + BROWSER_WAIT;
        loop {
            // Errors while the page loads (no document yet, a context replaced) are retried.
            let seen = self.eval(session, expression).await;
            if let Ok(v) = &seen {
                if done(v) {
                    return v.clone();
                }
            }
            assert!(
                Instant::now() < deadline,
                "{what}: not within {BROWSER_WAIT:?}; last seen: {seen:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

#[tokio::test]
async fn chromium_loads_the_sites_websocket_page_and_sees_its_echo() {
    let dir = tempfile::tempdir().unwrap();
    let config = site_config(dir.path(), "http", "");
    let atoll = Atoll::serve(&config);
    let (addr, admin) = addresses(&atoll);
    let chromium = Chromium::launch(&[]);
    let protocol = page_echoes(
        &chromium,
        &format!("http://{addr}"),
        &format!("ws://{addr}"),
    )
    .await;
    assert_eq!(protocol, json!("http/1.1"));
    // The WebSocket opened with an HTTP/1.1 upgrade: one 101.
    assert_eq!(upgrades(admin).await, 1.0);
}

/// The web and admin listeners' addresses.
fn addresses(atoll: &Atoll) -> (std::net::SocketAddr, std::net::SocketAddr) {
    let listening = atoll.listening(2);
    let addr = |name: &str| listening.iter().find(|l| l.0 == name).unwrap().2;
    (addr("web"), addr("admin"))
}

/// The 101s (HTTP/1.1 upgrades) the web listener answered, from the admin listener's metrics.
async fn upgrades(admin: std::net::SocketAddr) -> f64 {
    let mut client = common::http::Client::h1(admin).await;
    let samples = common::prometheus::scrape(&mut client).await;
    let labels = [("listener", "web"), ("status", "1xx")];
    common::prometheus::value(&samples, "atoll_http_requests_total", &labels)
}

/// Over TLS, Chromium speaks HTTP/2 to the listener and opens the page's WebSocket with
/// HTTP/2's extended CONNECT (RFC 8441), which HTTP listeners announce.
#[tokio::test]
async fn chromium_over_https_and_http2_sees_the_echo_too() {
    let pki = common::Pki::new();
    let tls = format!(
        "[listener.tls]\ncert = {:?}\nkey = {:?}\n",
        pki.server_cert.to_str().unwrap(),
        pki.server_key.to_str().unwrap()
    );
    let config = site_config(pki.dir.path(), "https", &tls);
    let atoll = Atoll::serve(&config);
    let (addr, admin) = addresses(&atoll);
    // The test's own certificate authority is not the browser's.
    let chromium = Chromium::launch(&["--ignore-certificate-errors"]);
    let protocol = page_echoes(
        &chromium,
        &format!("https://{addr}"),
        &format!("wss://{addr}"),
    )
    .await;
    assert_eq!(protocol, json!("h2"), "the page came over HTTP/2");
    // The WebSocket opened as a stream of the page's HTTP/2 connection (a CONNECT answered
    // 200), not with an HTTP/1.1 upgrade (a 101).
    assert_eq!(upgrades(admin).await, 0.0);
}

/// `atoll serve`'s config in `dir`: one listener of `kind` with the repo's site and
/// `websocket_echo` at its default path, `/ws`, which is what the page opens.
fn site_config(dir: &Path, kind: &str, tls: &str) -> std::path::PathBuf {
    let site = Path::new(env!("CARGO_MANIFEST_DIR")).join("site");
    let config = dir.join("atoll.toml");
    std::fs::write(
        &config,
        format!(
            "[app]\nnode = \"t\"\n\n[[listener]]\nname = \"admin\"\nkind = \"admin\"\n\
             ip = \"127.0.0.1\"\nport = 0\n\n[[listener]]\nname = \"web\"\nkind = \"{kind}\"\n\
             ip = \"127.0.0.1\"\nport = 0\n{tls}\n[[listener.handlers]]\nhost = \"_\"\n\
             resources = [\"websocket_echo\", {{ name = \"static\", dir = {:?} }}]\n",
            site.to_str().unwrap()
        ),
    )
    .unwrap();
    config
}

/// Loads `{origin}/ws.html` in `chromium`, waits for its WebSocket (to `{ws_origin}/ws`) to
/// open, sends a message with the page's button, and checks the echo shows, then returns
/// the protocol the page came over (`nextHopProtocol`).
async fn page_echoes(chromium: &Chromium, origin: &str, ws_origin: &str) -> Value {
    let mut cdp = Cdp::connect(&chromium.devtools_url()).await;
    let page = format!("{origin}/ws.html");
    let target = cdp
        .call("Target.createTarget", json!({ "url": page }), None)
        .await
        .unwrap_or_else(|e| panic!("{e}; {}", chromium.log()));
    let target_id = target["targetId"].as_str().expect("a targetId").to_owned();
    let attached = cdp
        .call(
            "Target.attachToTarget",
            json!({ "targetId": target_id, "flatten": true }),
            None,
        )
        .await
        .unwrap_or_else(|e| panic!("{e}; {}", chromium.log()));
    let session = attached["sessionId"]
        .as_str()
        .expect("a sessionId")
        .to_owned();

    // The page opened its WebSocket: it says `open`, and names the address it opened.
    let state = "document.location.href + ' ' + \
                 (document.getElementById('state') || {}).textContent";
    let open = format!("{page} open");
    cdp.eval_until(&session, "the page's WebSocket to open", state, |v| {
        let text = v.as_str().unwrap_or_default();
        assert!(
            !text.ends_with(')') && !text.ends_with("error"),
            "the page's WebSocket failed: {text}"
        );
        text == open
    })
    .await;
    let url = cdp
        .eval(&session, "document.getElementById('url').textContent")
        .await
        .unwrap();
    assert_eq!(url, json!(format!("{ws_origin}/ws")));

    // Typed into the page's box and sent with its button, as a person would.
    let message = format!(
        "hello from Chromium {}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );
    let send = format!(
        "document.getElementById('message').value = {}; \
         document.querySelector('#send button').click(); true",
        json!(message)
    );
    assert_eq!(cdp.eval(&session, &send).await.unwrap(), json!(true));
    let lines = "[...document.querySelectorAll('#log li')].map(li => li.className + ': ' + \
                 li.textContent)";
    let echo = format!("echo: {message}");
    let log = cdp
        .eval_until(&session, "the echo in the page", lines, |v| {
            v.as_array()
                .is_some_and(|l| l.iter().any(|line| line.as_str() == Some(&echo)))
        })
        .await;
    assert_eq!(
        log,
        json!([format!("sent: {message}"), echo]),
        "the page shows what was sent, then its echo, and nothing else"
    );
    // Still open after the echo.
    assert_eq!(cdp.eval(&session, state).await.unwrap(), json!(open));
    let protocol = "performance.getEntriesByType('navigation')[0].nextHopProtocol";
    cdp.eval(&session, protocol).await.unwrap()
}
