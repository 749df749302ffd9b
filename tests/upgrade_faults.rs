//! Faults during a zero-downtime upgrade of a running `atoll serve`, with real processes: two
//! upgrades asked at once, an upgrade asked while a reload drains, the control client killed
//! while its upgrade runs, the old process killed while it drains and the new one killed
//! after it reported ready. In each case the service keeps answering, no connection it
//! accepted is lost (but those of a killed process), the commands say what happened, and one
//! process serves at the end.
//!
//! The new process crashing before it is ready (it exits, it hangs, it cannot load the
//! config after taking the sockets) is `a_failed_upgrade_leaves_the_old_version_serving` in
//! `app_upgrade.rs`.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::control::{ctl, Outcome};
use common::process::{exited, kill9, start_download, terminate, wait_exit, Atoll, Reaper};
use common::{echo_once, WAIT};

const HEAD: &str = "[app]\nnode = \"t\"\n\n";

fn listener(name: &str, kind: &str, shutdown: &str, extra: &str) -> String {
    format!(
        "[[listener]]\nname = \"{name}\"\nkind = \"{kind}\"\nip = \"127.0.0.1\"\nport = 0\nshutdown_timeout = \"{shutdown}\"\n{extra}\n"
    )
}

/// The static file a slow download fetches: larger than the socket buffers can take, so the
/// old process is still writing it after an upgrade.
const BIG: usize = 48 * 1024 * 1024;

/// An HTTP listener answering `/health` and serving `files/`, and an echo listener.
fn service() -> String {
    format!(
        "{}{}",
        listener(
            "web",
            "http",
            "10s",
            "[[listener.handlers]]\nhost = \"_\"\nresources = [\"health\", \
             { name = \"static\", dir = \"files\", prefix = \"/files\" }]\n"
        ),
        listener("echo", "echo", "10s", ""),
    )
}

struct Setup {
    dir: tempfile::TempDir,
    config: PathBuf,
}

impl Setup {
    fn new(text: &str) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().canonicalize().unwrap().join("atoll.toml");
        std::fs::write(&config, text).unwrap();
        let files = config.parent().unwrap().join("files");
        std::fs::create_dir_all(&files).unwrap();
        std::fs::write(files.join("big.bin"), vec![7u8; BIG]).unwrap();
        Setup { dir, config }
    }

    fn root(&self) -> PathBuf {
        self.dir.path().canonicalize().unwrap()
    }

    /// A "binary" that writes its pid to `NAME.pid`, waits `delay`, then becomes atoll (the
    /// same pid, through `exec`). The delay keeps the upgrade running long enough for the
    /// fault to land in the middle of it; no test waits on it.
    fn slow_binary(&self, name: &str, delay: &str) -> (PathBuf, PathBuf) {
        use std::os::unix::fs::PermissionsExt;
        let root = self.root();
        let marker = root.join(format!("{name}.pid"));
        let path = root.join(format!("{name}.sh"));
        std::fs::write(
            &path,
            format!(
                "#!/bin/sh\necho $$ > \"{marker}.tmp\" && mv \"{marker}.tmp\" \"{marker}\"\nsleep {delay}\nexec \"{atoll}\" \"$@\"\n",
                marker = marker.display(),
                atoll = env!("CARGO_BIN_EXE_atoll"),
            ),
        )
        .unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        (path, marker)
    }
}

/// Waits for the pid a [`Setup::slow_binary`] wrote.
fn marker_pid(marker: &Path) -> u32 {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Ok(text) = std::fs::read_to_string(marker) {
            return text.trim().parse().unwrap();
        }
        assert!(
            Instant::now() < deadline,
            "the new binary never started: no {}",
            marker.display()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Serves `setup`'s config with `n` listeners (`web` and `echo` among them), the process noted
/// in `reaper`; returns it, the addresses of `web` and `echo`, and every listener's.
fn serve(
    setup: &Setup,
    reaper: &Reaper,
    n: usize,
) -> (
    Atoll,
    SocketAddr,
    SocketAddr,
    Vec<(String, String, SocketAddr)>,
) {
    let first = Atoll::serve(&setup.config);
    reaper.add(first.pid());
    let listening = first.listening(n);
    let (web, echo) = (addr_of(&listening, "web"), addr_of(&listening, "echo"));
    (first, web, echo, listening)
}

fn addr_of(listening: &[(String, String, SocketAddr)], name: &str) -> SocketAddr {
    listening.iter().find(|l| l.0 == name).unwrap().2
}

/// `GET /health` on a new connection, which must answer 200.
fn health(addr: SocketAddr) -> Result<(), String> {
    let mut s = TcpStream::connect_timeout(&addr, WAIT).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(WAIT)).unwrap();
    s.write_all(b"GET /health HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n")
        .map_err(|e| format!("write: {e}"))?;
    let mut response = String::new();
    s.read_to_string(&mut response)
        .map_err(|e| format!("read: {e}"))?;
    match response.starts_with("HTTP/1.1 200") {
        true => Ok(()),
        false => Err(format!("not a 200: {response:?}")),
    }
}

/// Waits up to `within` for `GET /health` to answer 200; the last error if it never does.
fn serves_within(web: SocketAddr, within: Duration) -> Result<(), String> {
    let deadline = Instant::now() + within;
    loop {
        match health(web) {
            Ok(()) => return Ok(()),
            Err(e) if Instant::now() >= deadline => return Err(e),
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// A client that asks the service the whole time, alternating `/health` and an echo round
/// trip, each on a new connection. Bounded by `stop` and by a count.
struct Probe {
    stop: Arc<AtomicBool>,
    /// Each failure, with when its probe started.
    failures: Arc<Mutex<Vec<(Instant, String)>>>,
    thread: std::thread::JoinHandle<u64>,
}

impl Probe {
    fn start(web: SocketAddr, echo_addr: SocketAddr) -> Probe {
        let stop = Arc::new(AtomicBool::new(false));
        let failures = Arc::new(Mutex::new(Vec::new()));
        let thread = {
            let (stop, failures) = (stop.clone(), failures.clone());
            std::thread::spawn(move || {
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) && n < 100_000 {
                    let started = Instant::now();
                    let result = match n % 2 {
                        0 => health(web).map_err(|e| format!("health {n}: {e}")),
                        _ => echo_once(echo_addr, n).map_err(|e| format!("echo {n}: {e}")),
                    };
                    if let Err(e) = result {
                        failures.lock().unwrap().push((started, e));
                    }
                    n += 1;
                    // Paced, so TIME_WAIT sockets never run out of ports.
                    std::thread::sleep(Duration::from_millis(3));
                }
                n
            })
        };
        Probe {
            stop,
            failures,
            thread,
        }
    }

    /// Stops the client; asserts it made requests and none failed.
    fn finish(self) {
        self.finish_after(None);
    }

    /// Stops the client; asserts it made requests and that none started after `since` (all,
    /// without it) failed. Returns the failures of probes started before.
    fn finish_after(self, since: Option<Instant>) -> Vec<String> {
        self.stop.store(true, Ordering::Relaxed);
        let n = self.thread.join().unwrap();
        let failures = self.failures.lock().unwrap().clone();
        let (before, after): (Vec<_>, Vec<_>) = failures
            .into_iter()
            .partition(|(started, _)| since.is_some_and(|t| *started < t));
        assert!(
            after.is_empty(),
            "{} of {n} probes failed: {after:?}",
            after.len()
        );
        assert!(n > 0);
        before.into_iter().map(|(_, e)| e).collect()
    }
}

/// Asks `status` ten times: every answer must come from `pid`. Two processes accepting on the
/// control socket would answer in turn.
fn one_process_answers(config: &Path, pid: u32) {
    for i in 0..10 {
        let status = ctl(config, &["status", "--json"]).json();
        assert_eq!(status["pid"], pid, "status {i}: {status}");
    }
}

/// Runs [`ctl`] on a thread, so that several commands can be asked at once.
fn ctl_thread(config: &Path, args: &[&str]) -> std::thread::JoinHandle<Outcome> {
    let config = config.to_owned();
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    std::thread::spawn(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        ctl(&config, &args)
    })
}

#[test]
fn two_upgrades_asked_at_once_leave_one_process_serving() {
    let setup = Setup::new(&format!("{HEAD}{}", service()));
    let reaper = Reaper::default();
    let (first, web, echo_addr, _) = serve(&setup, &reaper, 2);
    let probe = Probe::start(web, echo_addr);

    let (a, a_marker) = setup.slow_binary("a", "1");
    let (b, b_marker) = setup.slow_binary("b", "1");
    let ta = ctl_thread(
        &setup.config,
        &["upgrade", "--path", a.to_str().unwrap(), "--json"],
    );
    let tb = ctl_thread(
        &setup.config,
        &["upgrade", "--path", b.to_str().unwrap(), "--json"],
    );
    let (oa, ob) = (ta.join().unwrap(), tb.join().unwrap());
    // Every binary that was started, whether or not its upgrade went through.
    for marker in [&a_marker, &b_marker] {
        if marker.exists() {
            reaper.add(marker_pid(marker));
        }
    }

    let serving = match (oa.code, ob.code) {
        (0, 0) => {
            // Both may succeed only one after the other: the second from the first's result.
            let (ja, jb) = (oa.json(), ob.json());
            let (first_answer, second) = match ja["old_pid"] == first.pid() {
                true => (ja, jb),
                false => (jb, ja),
            };
            assert_eq!(first_answer["old_pid"], first.pid(), "{first_answer}");
            assert_eq!(
                second["old_pid"], first_answer["pid"],
                "both upgrades replaced pid {}: {first_answer} / {second}",
                first_answer["old_pid"]
            );
            wait_exit(first_answer["pid"].as_u64().unwrap() as u32, WAIT * 3);
            second["pid"].as_u64().unwrap() as u32
        }
        (0, _) | (_, 0) => {
            let (ok, refused) = match oa.code {
                0 => (oa, ob),
                _ => (ob, oa),
            };
            // The refusal is one clear line.
            let line = refused.fails();
            assert!(line.starts_with("atoll: "), "{line}");
            let answer = ok.json();
            assert_eq!(answer["old_pid"], first.pid(), "{answer}");
            answer["pid"].as_u64().unwrap() as u32
        }
        _ => panic!("neither upgrade went through: {oa:?} / {ob:?}"),
    };
    reaper.add(serving);
    wait_exit(first.pid(), WAIT * 3);
    // Any binary started besides the one serving is gone.
    for marker in [&a_marker, &b_marker] {
        if marker.exists() {
            let pid = marker_pid(marker);
            if pid != serving {
                wait_exit(pid, WAIT);
            }
        }
    }
    assert!(!exited(serving));
    one_process_answers(&setup.config, serving);
    health(web).unwrap();
    probe.finish();
}

#[test]
fn an_upgrade_asked_during_a_reload_waits_for_it_and_both_answer() {
    let with_gone = format!("{HEAD}{}{}", service(), listener("gone", "echo", "8s", ""));
    let setup = Setup::new(&with_gone);
    let reaper = Reaper::default();
    let (mut first, web, echo_addr, listening) = serve(&setup, &reaper, 3);
    let gone = addr_of(&listening, "gone");
    let mut held = common::echo_at(gone, b"before\n");
    let probe = Probe::start(web, echo_addr);

    // The reload removes `gone`, which drains while `held` stays open.
    std::fs::write(&setup.config, format!("{HEAD}{}", service())).unwrap();
    let reload = ctl_thread(&setup.config, &["reload", "--json"]);
    // The reload is draining once `gone` refuses new connects.
    let deadline = Instant::now() + WAIT;
    while TcpStream::connect_timeout(&gone, WAIT).is_ok() {
        assert!(Instant::now() < deadline, "`gone` still accepts");
        std::thread::sleep(Duration::from_millis(10));
    }
    // `status` answers while the reload drains.
    assert_eq!(
        ctl(&setup.config, &["status", "--json"]).json()["pid"],
        first.pid()
    );

    let binary = env!("CARGO_BIN_EXE_atoll");
    let upgrade = ctl_thread(&setup.config, &["upgrade", "--path", binary, "--json"]);
    // The connection being drained still works; then its client is done with it.
    common::echo_sync(&mut held, b"during\n");
    drop(held);

    let report = reload.join().unwrap().json();
    assert_eq!(
        report["stopped"],
        serde_json::json!([{ "name": "gone", "drained": 1, "forced": 0 }]),
        "{report}"
    );
    let answer = upgrade.join().unwrap().json();
    assert_eq!(answer["old_pid"], first.pid(), "{answer}");
    let new_pid = answer["pid"].as_u64().unwrap() as u32;
    reaper.add(new_pid);
    assert!(first.exited().success(), "{}", first.stderr());

    one_process_answers(&setup.config, new_pid);
    // The new process runs the reloaded config: no `gone`.
    let listeners = ctl(&setup.config, &["listeners", "--json"]).json();
    let mut names: Vec<&str> = listeners
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["name"].as_str().unwrap())
        .collect();
    names.sort_unstable();
    assert_eq!(names, ["echo", "web"], "{listeners}");
    health(web).unwrap();
    probe.finish();
}

#[test]
fn a_control_client_killed_mid_upgrade_leaves_one_process_serving() {
    let setup = Setup::new(&format!("{HEAD}{}", service()));
    let reaper = Reaper::default();
    let (first, web, echo_addr, _) = serve(&setup, &reaper, 2);
    let old = first.pid();
    let probe = Probe::start(web, echo_addr);

    let (slow, marker) = setup.slow_binary("new", "1");
    let mut client = Command::new(env!("CARGO_BIN_EXE_atoll"))
        .args(["upgrade", "--path", slow.to_str().unwrap(), "--config"])
        .arg(&setup.config)
        .current_dir(setup.root())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // The server has started the new binary: the upgrade is under way. Kill its client.
    let new = marker_pid(&marker);
    reaper.add(new);
    client.kill().unwrap();
    client.wait().unwrap();

    // Whether the upgrade went through or was called off, one of the two ends.
    let deadline = Instant::now() + WAIT * 4;
    let serving = loop {
        match (exited(old), exited(new)) {
            (true, true) => panic!("both processes exited; stderr: {}", first.stderr()),
            (true, false) => break new,
            (false, true) => break old,
            (false, false) => {
                assert!(
                    Instant::now() < deadline,
                    "both the old (pid {old}) and the new (pid {new}) process still run; \
                     stderr: {}",
                    first.stderr()
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    };
    one_process_answers(&setup.config, serving);
    health(web).unwrap();
    probe.finish();
}

#[test]
fn the_old_process_killed_mid_drain_leaves_the_new_one_serving() {
    let setup = Setup::new(&format!("{HEAD}{}", service()));
    let reaper = Reaper::default();
    let (first, web, echo_addr, _) = serve(&setup, &reaper, 2);
    let old = first.pid();
    // A download, which keeps the old process draining. (An idle echo connection would move
    // to the new process, but at a moment of its own after the upgrade answers: killing the
    // old process may come first. Moving is covered by tests/app_upgrade.rs.)
    let mut download = start_download(web, "/files/big.bin");
    let probe = Probe::start(web, echo_addr);

    let binary = env!("CARGO_BIN_EXE_atoll");
    let answer = ctl(&setup.config, &["upgrade", "--path", binary, "--json"]).json();
    assert_eq!(answer["old_pid"], old, "{answer}");
    let new = answer["pid"].as_u64().unwrap() as u32;
    reaper.add(new);
    assert!(!exited(old), "the old process left the download unfinished");
    kill9(old);

    // The download dies with its process; it ends, rather than hangs.
    let mut buf = vec![0; 1 << 20];
    let mut got = 64 * 1024;
    for _ in 0..BIG / buf.len() + 2 {
        match download.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => got += n,
        }
    }
    assert!(
        got < BIG,
        "the download finished although its process was killed"
    );
    // New connections and the control socket are the new process's.
    one_process_answers(&setup.config, new);
    health(web).unwrap();
    probe.finish();
    terminate(new);
}

#[test]
fn the_new_process_killed_after_ready_leaves_the_service_answering() {
    let setup = Setup::new(&format!("{HEAD}{}", service()));
    let reaper = Reaper::default();
    let (first, web, echo_addr, _) = serve(&setup, &reaper, 2);
    let old = first.pid();
    // A download keeps the old process draining: it is alive when the new one dies.
    let mut download = start_download(web, "/files/big.bin");
    let probe = Probe::start(web, echo_addr);

    let binary = env!("CARGO_BIN_EXE_atoll");
    let answer = ctl(&setup.config, &["upgrade", "--path", binary, "--json"]).json();
    let new = answer["pid"].as_u64().unwrap() as u32;
    reaper.add(new);
    kill9(new);
    let dead = Instant::now();
    assert!(!exited(old), "the old process stopped draining");

    // The old process, still draining, starts a process in the dead one's place on the same
    // sockets: the probe's connects, queued meanwhile, are answered, and none that started
    // once the new process was gone fails. The one or two in flight as it died (taken in by
    // it) may end with it.
    serves_within(web, WAIT).unwrap();
    let held = probe.finish_after(Some(dead));
    assert!(
        held.len() <= 2,
        "more than the probes in flight failed: {held:?}"
    );
    let status = ctl(&setup.config, &["status", "--json"]).json();
    let replacement = status["pid"].as_u64().unwrap() as u32;
    reaper.add(replacement);
    assert!(
        replacement != old && replacement != new,
        "status answered by {replacement} (old {old}, dead {new})"
    );
    one_process_answers(&setup.config, replacement);
    health(web).unwrap();
    echo_once(echo_addr, 1).unwrap();

    // The old process's download finishes whole.
    let mut buf = vec![0; 1 << 20];
    let mut got = 64 * 1024;
    loop {
        match download.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) => panic!("the download broke after {got} bytes: {e}"),
        }
    }
    assert_eq!(got, BIG, "the download ended early");
    wait_exit(old, WAIT);
    terminate(replacement);
}
