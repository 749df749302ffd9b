//! Zero-downtime upgrades of a running `atoll serve`, with real processes: two releases in a
//! temporary lib dir (the same build, with manifests saying 1.0.0 and 1.1.0), clients that
//! never stop asking, ten upgrades back and forth, and upgrades that fail and change nothing.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::control::ctl;
use common::http::{health_answer, health_kept};
use common::process::{exited, start_download, terminate, wait_exit, Atoll, Reaper};
use common::WAIT;

/// The static file the slow requests fetch: large enough that the socket buffers cannot
/// take it all, so the old process must still be writing it after the upgrade.
const BIG: usize = 48 * 1024 * 1024;

struct Setup {
    dir: tempfile::TempDir,
    config: PathBuf,
}

impl Setup {
    fn new() -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        for version in ["1.0.0", "1.1.0"] {
            let release = root.join(format!("lib/atoll-{version}"));
            std::fs::create_dir_all(&release).unwrap();
            std::fs::copy(env!("CARGO_BIN_EXE_atoll"), release.join("atoll")).unwrap();
            std::fs::write(
                release.join("release.toml"),
                format!("app = \"atoll\"\nversion = \"{version}\"\n"),
            )
            .unwrap();
        }
        std::fs::create_dir_all(root.join("files")).unwrap();
        std::fs::write(root.join("files/big.bin"), vec![7u8; BIG]).unwrap();
        let config = root.join("atoll.toml");
        std::fs::write(
            &config,
            format!(
                r#"
[app]
node = "t"
lib_dirs = ["{lib}"]

[[listener]]
name = "web"
kind = "http"
port = 0
shutdown_timeout = "30s"

[[listener.handlers]]
host = "_"
resources = ["health", {{ name = "static", dir = "files", prefix = "/files" }}]

[[listener]]
name = "echo"
kind = "echo"
ip = "127.0.0.1"
port = 0
"#,
                lib = root.join("lib").display()
            ),
        )
        .unwrap();
        Setup { dir, config }
    }

    fn binary(&self, version: &str) -> PathBuf {
        self.dir
            .path()
            .canonicalize()
            .unwrap()
            .join(format!("lib/atoll-{version}/atoll"))
    }
}

/// The CPU scheduling policy of every thread of `pid` (0 is the normal `SCHED_OTHER`, 5
/// `SCHED_IDLE`), from field 41 of each thread's `stat`.
fn policies(pid: u32) -> Vec<u32> {
    let mut all = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let Ok(stat) = std::fs::read_to_string(task.unwrap().path().join("stat")) else {
            continue;
        };
        let rest = stat.rsplit(')').next().unwrap();
        all.push(rest.split_whitespace().nth(38).unwrap().parse().unwrap());
    }
    all
}

/// `GET /health` on a new connection; the version it answers.
fn health(addr: SocketAddr) -> Result<String, String> {
    let mut s = TcpStream::connect(addr).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(WAIT)).unwrap();
    s.write_all(b"GET /health HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n")
        .map_err(|e| format!("write: {e}"))?;
    let mut response = String::new();
    s.read_to_string(&mut response)
        .map_err(|e| format!("read: {e}"))?;
    if !response.starts_with("HTTP/1.1 200") {
        return Err(format!("not a 200: {response:?}"));
    }
    let body = response.split("\r\n\r\n").nth(1).unwrap_or("");
    let json: serde_json::Value =
        serde_json::from_str(body).map_err(|e| format!("{e}: {response:?}"))?;
    Ok(json["version"].as_str().unwrap_or("").to_owned())
}

/// A slow download of the big file: the head and a little of the body now, the rest when
/// [`finish`](Slow::finish) is called.
struct Slow {
    stream: TcpStream,
    got: usize,
}

impl Slow {
    fn start(addr: SocketAddr) -> Slow {
        let stream = start_download(addr, "/files/big.bin");
        Slow {
            stream,
            got: 64 * 1024,
        }
    }

    fn finish(mut self) {
        let mut buf = vec![0; 1 << 20];
        loop {
            match self.stream.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => self.got += n,
                Err(e) => panic!("the slow download broke after {} bytes: {e}", self.got),
            }
        }
        assert_eq!(self.got, BIG, "the slow download was cut short");
    }
}

/// Clients that run the whole time: HTTP requests on new connections, HTTP requests on a
/// kept-alive connection, and new TCP connections to the echo listener. Bounded by `stop` and
/// by a count.
struct Load {
    stop: Arc<AtomicBool>,
    failures: Arc<Mutex<Vec<String>>>,
    versions: Arc<Mutex<Vec<String>>>,
    /// The kept-alive client's connects, and the versions its connection answered in turn.
    kept: Arc<Mutex<(u32, Vec<String>)>>,
    threads: Vec<std::thread::JoinHandle<u64>>,
}

impl Load {
    fn start(web: SocketAddr, echo: SocketAddr) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let failures = Arc::new(Mutex::new(Vec::new()));
        let versions = Arc::new(Mutex::new(Vec::new()));
        let kept = Arc::new(Mutex::new((0, Vec::new())));
        let mut threads = Vec::new();
        {
            let (stop, failures, versions) = (stop.clone(), failures.clone(), versions.clone());
            threads.push(std::thread::spawn(move || {
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) && n < 200_000 {
                    match health(web) {
                        Ok(v) => {
                            let mut seen = versions.lock().unwrap();
                            if seen.last() != Some(&v) {
                                seen.push(v);
                            }
                        }
                        Err(e) => failures.lock().unwrap().push(format!("request {n}: {e}")),
                    }
                    n += 1;
                    // Paced, so TIME_WAIT sockets never run out of ports.
                    std::thread::sleep(Duration::from_millis(2));
                }
                n
            }));
        }
        {
            // A keep-alive client: it reconnects when told `connection: close`, and any other
            // end of its connection is a failure.
            let (stop, failures, kept) = (stop.clone(), failures.clone(), kept.clone());
            threads.push(std::thread::spawn(move || {
                let mut n = 0;
                let mut stream: Option<TcpStream> = None;
                while !stop.load(Ordering::Relaxed) && n < 200_000 {
                    let s = match &mut stream {
                        Some(s) => s,
                        None => match TcpStream::connect(web) {
                            Ok(s) => {
                                s.set_read_timeout(Some(WAIT)).unwrap();
                                kept.lock().unwrap().0 += 1;
                                stream.insert(s)
                            }
                            Err(e) => {
                                failures
                                    .lock()
                                    .unwrap()
                                    .push(format!("kept {n}: connect: {e}"));
                                break;
                            }
                        },
                    };
                    let answer = health_kept(s);
                    if let Ok((v, _)) = &answer {
                        let seen = &mut kept.lock().unwrap().1;
                        if seen.last() != Some(v) {
                            seen.push(v.clone());
                        }
                    }
                    match answer {
                        Ok((_, true)) => stream = None,
                        Ok((_, false)) => {}
                        Err(e) => {
                            failures.lock().unwrap().push(format!("kept {n}: {e}"));
                            stream = None;
                        }
                    }
                    n += 1;
                    std::thread::sleep(Duration::from_millis(1));
                }
                n
            }));
        }
        {
            let (stop, failures) = (stop.clone(), failures.clone());
            threads.push(std::thread::spawn(move || {
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) && n < 200_000 {
                    if let Err(e) = TcpStream::connect(echo) {
                        failures.lock().unwrap().push(format!("connect {n}: {e}"));
                    }
                    n += 1;
                    std::thread::sleep(Duration::from_millis(2));
                }
                n
            }));
        }
        Load {
            stop,
            failures,
            versions,
            kept,
            threads,
        }
    }

    /// Stops the clients; returns how many requests and connects each made, the failures,
    /// and the versions answered in turn.
    fn finish(self) -> (Vec<u64>, Vec<String>, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        let counts = self
            .threads
            .into_iter()
            .map(|t| t.join().unwrap())
            .collect();
        let failures = self.failures.lock().unwrap().clone();
        let versions = self.versions.lock().unwrap().clone();
        (counts, failures, versions)
    }
}

fn addr_of(listening: &[(String, String, SocketAddr)], name: &str) -> SocketAddr {
    listening.iter().find(|l| l.0 == name).unwrap().2
}

#[test]
fn ten_upgrades_back_and_forth_lose_nothing() {
    let setup = Setup::new();
    let reaper = Reaper::default();
    let mut first = Atoll::serve_binary(&setup.binary("1.0.0"), &setup.config);
    reaper.add(first.pid());
    let listening = first.listening(2);
    let (web, echo) = (addr_of(&listening, "web"), addr_of(&listening, "echo"));
    assert_eq!(health(web).unwrap(), "1.0.0");

    let load = Load::start(web, echo);
    let mut old_pid = first.pid();
    let mut version = "1.0.0";
    for i in 0..10 {
        let (to, expect) = match version {
            "1.0.0" => ("latest", "1.1.0"),
            _ => (r"^1\.0\.", "1.0.0"),
        };
        let slow = Slow::start(web);
        let answer = ctl(&setup.config, &["upgrade", "--to", to, "--json"]).json();
        assert_eq!(answer["version"], expect, "upgrade {i}: {answer}");
        assert_eq!(answer["old_pid"], old_pid, "upgrade {i}: {answer}");
        let new_pid = answer["pid"].as_u64().unwrap() as u32;
        reaper.add(new_pid);
        assert!(
            answer["binary"]
                .as_str()
                .unwrap()
                .ends_with(&format!("atoll-{expect}/atoll")),
            "{answer}"
        );
        // The old process is still writing the slow download.
        assert!(
            !exited(old_pid),
            "upgrade {i}: the old process left a download unfinished"
        );
        // Once the command returns, new connections reach the new version only.
        assert_eq!(health(web).unwrap(), expect, "upgrade {i}");
        let status = ctl(&setup.config, &["status", "--json"]).json();
        assert_eq!(status["pid"], new_pid);
        assert_eq!(status["version"], expect);
        slow.finish();
        if i == 0 {
            assert!(first.exited().success(), "{}", first.stderr());
        } else {
            wait_exit(old_pid, WAIT * 3);
        }
        old_pid = new_pid;
        version = expect;
    }
    let kept = load.kept.clone();
    let (counts, failures, versions) = load.finish();
    assert!(
        failures.is_empty(),
        "{} failures: {failures:?}",
        failures.len()
    );
    assert!(counts.iter().all(|&n| n > 0), "{counts:?}");
    // The kept-alive connection moved from process to process: never closed, it was answered
    // by every version in turn, switching exactly once per upgrade.
    let (connects, kept_versions) = kept.lock().unwrap().clone();
    assert_eq!(connects, 1, "the kept-alive client had to reconnect");
    assert_eq!(kept_versions.len(), 11, "{kept_versions:?}");
    for (i, v) in kept_versions.iter().enumerate() {
        assert_eq!(v, ["1.0.0", "1.1.0"][i % 2], "{kept_versions:?}");
    }
    // New connections saw every version too. Between the new process's ready and the old
    // one's answer both accept on the same sockets, so a new connection may still reach the
    // old version then: more switches than upgrades is that overlap, not a fault.
    assert!(versions.len() >= 11, "{versions:?}");
    assert_eq!(versions.first().map(String::as_str), Some("1.0.0"));
    assert_eq!(
        versions.last().map(String::as_str),
        Some(version),
        "{versions:?}"
    );
    terminate(old_pid);
}

#[test]
fn kept_alive_connections_move_to_the_new_process_with_what_they_sent() {
    let setup = Setup::new();
    let reaper = Reaper::default();
    let mut first = Atoll::serve_binary(&setup.binary("1.0.0"), &setup.config);
    reaper.add(first.pid());
    let web = addr_of(&first.listening(2), "web");

    // One connection between requests, one in the middle of a request head.
    let mut idle = TcpStream::connect(web).unwrap();
    idle.set_read_timeout(Some(WAIT)).unwrap();
    assert_eq!(health_kept(&mut idle).unwrap(), ("1.0.0".to_owned(), false));
    let mut halfway = TcpStream::connect(web).unwrap();
    halfway.set_read_timeout(Some(WAIT)).unwrap();
    assert_eq!(health_kept(&mut halfway).unwrap().0, "1.0.0");
    halfway.write_all(b"GET /health HTTP/1.1\r\nho").unwrap();

    let answer = ctl(&setup.config, &["upgrade", "--to", "latest", "--json"]).json();
    assert_eq!(answer["version"], "1.1.0", "{answer}");
    let new_pid = answer["pid"].as_u64().unwrap() as u32;
    reaper.add(new_pid);
    // Started at idle CPU priority when allowed, the new process serves at normal priority.
    let policies = policies(new_pid);
    assert!(
        !policies.is_empty() && policies.iter().all(|&p| p == 0),
        "{policies:?}"
    );
    // The old process has nothing left to wait for: both connections left it.
    assert!(first.exited().success(), "{}", first.stderr());

    // The rest of the head reaches the new process, which had the start of it from the old.
    halfway.write_all(b"st: t\r\n\r\n").unwrap();
    assert_eq!(
        health_answer(&mut halfway).unwrap(),
        ("1.1.0".to_owned(), false)
    );
    // And the idle one goes on, in the new process.
    for _ in 0..3 {
        assert_eq!(health_kept(&mut idle).unwrap(), ("1.1.0".to_owned(), false));
    }
    assert_eq!(
        health_kept(&mut halfway).unwrap(),
        ("1.1.0".to_owned(), false)
    );
}

#[test]
fn a_failed_upgrade_leaves_the_old_version_serving() {
    let setup = Setup::new();
    let root = setup.dir.path().canonicalize().unwrap();
    let atoll = Atoll::serve_binary(&setup.binary("1.0.0"), &setup.config);
    let listening = atoll.listening(2);
    let web = addr_of(&listening, "web");
    let still_serving = || {
        assert_eq!(health(web).unwrap(), "1.0.0");
        let status = ctl(&setup.config, &["status", "--json"]).json();
        assert_eq!(status["pid"], atoll.pid());
    };

    let script = |name: &str, body: &str| {
        use std::os::unix::fs::PermissionsExt;
        let path = root.join(name);
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    };

    let fails = script("fails.sh", "echo boom >&2; exit 3");
    let line = ctl(
        &setup.config,
        &["upgrade", "--path", fails.to_str().unwrap()],
    )
    .fails();
    assert!(
        line.contains("exited (exit status: 3) before it was ready")
            && line.contains("keeps serving"),
        "{line}"
    );
    still_serving();

    let hangs = script("hangs.sh", "exec sleep 60");
    let line = ctl(
        &setup.config,
        &[
            "upgrade",
            "--path",
            hangs.to_str().unwrap(),
            "--timeout",
            "1s",
        ],
    )
    .fails();
    assert!(line.contains("in time"), "{line}");
    still_serving();

    let line = ctl(&setup.config, &["upgrade", "--to", r"^9\."]).fails();
    assert!(
        line.contains("no release") && line.contains("1.1.0"),
        "{line}"
    );
    let line = ctl(&setup.config, &["upgrade", "--path", "/no/such/atoll"]).fails();
    assert!(line.contains("/no/such/atoll"), "{line}");
    still_serving();

    // The new version cannot load the config: it says why, through the old one.
    let good = std::fs::read_to_string(&setup.config).unwrap();
    std::fs::write(&setup.config, format!("{good}\nbogus = 1\n")).unwrap();
    let line = ctl(&setup.config, &["upgrade", "--to", "latest"]).fails();
    assert!(
        line.contains("bogus") && line.contains("keeps serving"),
        "{line}"
    );
    std::fs::write(&setup.config, good).unwrap();
    still_serving();

    // And after all that, an upgrade works.
    let answer = ctl(&setup.config, &["upgrade", "--to", "next", "--json"]).json();
    assert_eq!(answer["version"], "1.1.0");
    let new_pid = answer["pid"].as_u64().unwrap() as u32;
    let reaper = Reaper::default();
    reaper.add(new_pid);
    assert_eq!(health(web).unwrap(), "1.1.0");
    wait_exit(atoll.pid(), WAIT);
    terminate(new_pid);
}

#[test]
fn echo_connections_move_across_upgrades_and_never_close() {
    let setup = Setup::new();
    let reaper = Reaper::default();
    let mut first = Atoll::serve_binary(&setup.binary("1.0.0"), &setup.config);
    reaper.add(first.pid());
    let echo = addr_of(&first.listening(2), "echo");
    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(Mutex::new(Vec::new()));
    let echoed = Arc::new(AtomicU64::new(0));

    // 8 long-lived connections, a message every ~10 ms each; any end is a failure, and
    // none reconnects.
    let long_lived: Vec<_> = (0..8)
        .map(|c| {
            let (stop, failures, echoed) = (stop.clone(), failures.clone(), echoed.clone());
            let mut s = TcpStream::connect(echo).unwrap();
            s.set_read_timeout(Some(WAIT)).unwrap();
            std::thread::spawn(move || {
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) && n < 100_000 {
                    let msg = format!("{c}:{n:012}\n");
                    let mut back = vec![0; msg.len()];
                    let sent = s
                        .write_all(msg.as_bytes())
                        .and_then(|()| s.read_exact(&mut back));
                    if let Err(e) = sent.map(|()| back == msg.as_bytes()).and_then(|same| {
                        same.then_some(())
                            .ok_or_else(|| std::io::Error::other("a different echo"))
                    }) {
                        failures
                            .lock()
                            .unwrap()
                            .push(format!("long-lived {c}, message {n}: {e}"));
                        break;
                    }
                    echoed.fetch_add(1, Ordering::Relaxed);
                    n += 1;
                    std::thread::sleep(Duration::from_millis(10));
                }
                (n, s)
            })
        })
        .collect();
    // Connect, send, read the echo, close, in a loop: the connection is cut by no switch.
    let short_lived = {
        let (stop, failures) = (stop.clone(), failures.clone());
        std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) && n < 100_000 {
                let msg = format!("short {n:012}");
                let echoed = TcpStream::connect(echo).and_then(|mut s| {
                    s.set_read_timeout(Some(WAIT))?;
                    s.write_all(msg.as_bytes())?;
                    let mut back = vec![0; msg.len()];
                    s.read_exact(&mut back)?;
                    Ok(back)
                });
                match echoed {
                    Ok(back) if back == msg.as_bytes() => {}
                    other => failures
                        .lock()
                        .unwrap()
                        .push(format!("short-lived {n}: {other:?}")),
                }
                n += 1;
                std::thread::sleep(Duration::from_millis(1));
            }
            n
        })
    };

    // Waits until the long-lived connections have had some 10 echoes each, from whichever
    // process serves them now.
    let traffic = |what: String| {
        let (from, deadline) = (echoed.load(Ordering::Relaxed), Instant::now() + WAIT);
        while echoed.load(Ordering::Relaxed) < from + 80 {
            assert!(Instant::now() < deadline, "no echoes {what}");
            assert!(failures.lock().unwrap().is_empty(), "{what}: {failures:?}");
            std::thread::sleep(Duration::from_millis(10));
        }
    };
    traffic("before the first upgrade".into());
    let mut old_pid = first.pid();
    for (i, (to, expect)) in [
        ("latest", "1.1.0"),
        (r"^1\.0\.", "1.0.0"),
        ("latest", "1.1.0"),
    ]
    .into_iter()
    .enumerate()
    {
        let answer = ctl(&setup.config, &["upgrade", "--to", to, "--json"]).json();
        assert_eq!(answer["version"], expect, "upgrade {i}: {answer}");
        let new_pid = answer["pid"].as_u64().unwrap() as u32;
        reaper.add(new_pid);
        // The old process exits once its echo connections have left it.
        if i == 0 {
            assert!(first.exited().success(), "{}", first.stderr());
        } else {
            wait_exit(old_pid, WAIT);
        }
        traffic(format!("after upgrade {i}"));
        old_pid = new_pid;
    }
    stop.store(true, Ordering::Relaxed);
    let shorts = short_lived.join().unwrap();
    let mut streams = Vec::new();
    for t in long_lived {
        let (n, s) = t.join().unwrap();
        assert!(n > 0);
        streams.push(s);
    }
    let failures = failures.lock().unwrap().clone();
    assert!(
        failures.is_empty(),
        "{} failures: {failures:?}",
        failures.len()
    );
    assert!(shorts > 0);
    // Every long-lived connection is still the first one, now served by the third process.
    for s in &mut streams {
        s.write_all(b"still here\n").unwrap();
        let mut back = [0; 11];
        s.read_exact(&mut back).unwrap();
        assert_eq!(&back, b"still here\n");
    }
    terminate(old_pid);
}
