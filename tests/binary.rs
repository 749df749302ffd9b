//! The `atoll` binary, run for real: config files written to a temporary folder, listeners
//! reached over real sockets, signals sent to the process, and the one-line errors it prints.

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::process::Atoll;
use common::{echo_roundtrip, within, Pki, WAIT};

/// Waits for `n` `listening` lines of echo listeners on 127.0.0.1; returns each one's name and
/// address.
fn listening(atoll: &Atoll, n: usize) -> Vec<(String, SocketAddr)> {
    atoll
        .listening(n)
        .into_iter()
        .map(|(name, kind, addr)| {
            assert_eq!(kind, "echo", "{name}");
            assert_eq!(addr.ip(), IpAddr::V4(Ipv4Addr::LOCALHOST), "{name}");
            (name, addr)
        })
        .collect()
}

fn echo_listener(name: &str) -> String {
    format!(
        "[[listener]]\nname = \"{name}\"\nkind = \"echo\"\nip = \"127.0.0.1\"\nport = 0\nshutdown_timeout = \"1s\"\n"
    )
}

fn write_config(dir: &Path, text: &str) -> std::path::PathBuf {
    let path = dir.join("atoll.toml");
    std::fs::write(&path, text).unwrap();
    path
}

// ===== serving =====

#[test]
fn serves_two_echo_listeners_then_exits_0_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &format!("{}{}", echo_listener("one"), echo_listener("two")),
    );
    let mut atoll = Atoll::serve(&config);
    let listening = listening(&atoll, 2);
    let names: Vec<&str> = listening.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["one", "two"]);
    assert_ne!(listening[0].1, listening[1].1);
    for (name, addr) in &listening {
        common::echo_at(*addr, name.as_bytes());
    }
    atoll.signal("TERM");
    let status = atoll.exit();
    assert_eq!(
        status.code(),
        Some(0),
        "{status}; stderr: {}",
        atoll.stderr()
    );
}

#[test]
fn exits_0_on_sigint() {
    let dir = tempfile::tempdir().unwrap();
    let mut atoll = Atoll::serve(&write_config(dir.path(), &echo_listener("echo")));
    let (_, addr) = listening(&atoll, 1).remove(0);
    common::echo_at(addr, b"ping");
    atoll.signal("INT");
    assert_eq!(atoll.exit().code(), Some(0));
}

#[tokio::test]
async fn serves_tls_with_certificate_files_named_relative_to_the_config() {
    let pki = Pki::new();
    let text = format!(
        "{}[listener.tls]\ncert = \"server.pem\"\nkey = \"server-key.pem\"\n",
        echo_listener("tls")
    );
    let config = write_config(pki.dir.path(), &text);
    let atoll = Atoll::serve(&config);
    let (_, addr) = listening(&atoll, 1).remove(0);
    let tcp = within("connect", tokio::net::TcpStream::connect(addr))
        .await
        .expect("connect");
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = within("handshake", pki.connector(None, &[]).connect(name, tcp))
        .await
        .expect("handshake");
    assert_eq!(echo_roundtrip(&mut tls, b"secret").await, b"secret");
}

#[test]
fn reads_atoll_toml_from_the_current_folder_by_default() {
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), &echo_listener("default"));
    let mut atoll = Atoll::run(dir.path(), &["serve"]);
    let (name, addr) = listening(&atoll, 1).remove(0);
    assert_eq!(name, "default");
    common::echo_at(addr, b"hello");
    atoll.signal("TERM");
    assert_eq!(atoll.exit().code(), Some(0));
}

// ===== failing =====

/// Runs `atoll serve` on `config`, expects exit code 1 with one line on stderr naming the
/// file, and returns that line.
fn fails_on(text: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    Atoll::fails_with(&write_config(dir.path(), text))
}

#[test]
fn an_unknown_key_is_named() {
    let line = fails_on(&format!("{}prot = 4000\n", echo_listener("echo")));
    assert!(
        line.contains("listener `echo`: ") && line.contains("unknown field `prot`"),
        "{line}"
    );
    let line = fails_on(&format!("verbose = true\n{}", echo_listener("echo")));
    assert!(line.contains("line 1: unknown field `verbose`"), "{line}");
}

#[test]
fn a_bad_failure_log_budget_is_named() {
    for (setting, key) in [
        ("failure_log_lines = -1", "`failure_log_lines`"),
        ("failure_log_lines = \"ten\"", "`failure_log_lines`"),
        ("failure_log_window = \"0s\"", "`failure_log_window`"),
        ("failure_log_window = \"2d\"", "`failure_log_window`"),
    ] {
        let line = fails_on(&format!("{setting}\n{}", echo_listener("echo")));
        assert!(
            line.contains(&format!("line 1: {key}")),
            "{setting}: {line}"
        );
    }
}

#[test]
fn a_bad_port_is_named() {
    let text = "[[listener]]\nname = \"echo\"\nkind = \"echo\"\nport = \"x\"\n";
    let line = fails_on(text);
    assert!(
        line.contains("listener `echo`: ") && line.contains("\"x\""),
        "{line}"
    );
    let line = fails_on(&text.replace("\"x\"", "70000"));
    assert!(
        line.contains("listener `echo`: ") && line.contains("70000"),
        "{line}"
    );
}

#[test]
fn a_missing_certificate_file_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "{}[listener.tls]\ncert = \"missing.pem\"\nkey = \"missing-key.pem\"\n",
        echo_listener("tls")
    );
    let line = Atoll::fails_with(&write_config(dir.path(), &text));
    let missing = dir.path().join("missing.pem");
    assert!(
        line.contains(&format!("listener `tls`: {}: ", missing.display())),
        "{line}"
    );
}

#[test]
fn an_address_in_use_is_named_and_earlier_listeners_stop() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let text = format!(
        "{}[[listener]]\nname = \"busy\"\nkind = \"echo\"\nip = \"127.0.0.1\"\nport = {port}\n",
        echo_listener("free")
    );
    let line = fails_on(&text);
    assert!(line.contains("listener `busy`: "), "{line}");
    assert!(line.contains(&format!("127.0.0.1:{port}")), "{line}");
    assert!(line.contains("address in use"), "{line}");
}

#[test]
fn an_unknown_kind_is_named() {
    let line = fails_on("[[listener]]\nname = \"chat\"\nkind = \"chat\"\nport = 0\n");
    assert!(line.contains("listener `chat`: "), "{line}");
    assert!(line.contains("unknown kind `chat`"), "{line}");
}

#[test]
fn a_failed_start_leaves_no_directory_it_made() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    for text in [
        format!("{}prot = 4000\n", echo_listener("echo")),
        "[[listener]]\nname = \"chat\"\nkind = \"chat\"\nport = 0\n".to_owned(),
        format!(
            "[[listener]]\nname = \"busy\"\nkind = \"echo\"\nip = \"127.0.0.1\"\nport = {port}\n"
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        Atoll::fails_with(&write_config(dir.path(), &text));
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, ["atoll.toml"], "after {text:?}");
    }
    // A directory that was there stays, with what it holds.
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("mine")).unwrap();
    std::fs::write(dir.path().join("mine/notes"), b"x").unwrap();
    let text = format!(
        "[app]\ndata_dir = \"mine\"\nlog_dir = \"mine\"\n{}prot = 1\n",
        echo_listener("echo")
    );
    Atoll::fails_with(&write_config(dir.path(), &text));
    assert!(dir.path().join("mine/notes").is_file());
}

#[test]
fn a_toml_syntax_error_gives_the_line() {
    let line = fails_on(&format!("{}port = = 1\n", echo_listener("echo")));
    assert!(line.contains(": line 7: "), "{line}");
}

#[test]
fn a_missing_config_file_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let line = Atoll::fails_with(&dir.path().join("nope.toml"));
    assert!(line.contains("cannot read"), "{line}");
}

#[test]
fn a_usage_error_exits_2() {
    let mut atoll = Atoll::run(Path::new("."), &["serve", "--no-such-flag"]);
    assert_eq!(atoll.exit().code(), Some(2));
    let mut atoll = Atoll::run(Path::new("."), &[]);
    assert_eq!(atoll.exit().code(), Some(2));
}

// ===== closed output =====

/// A pipe whose read end is already closed: whatever writes to it gets EPIPE.
fn closed_pipe() -> Stdio {
    let (read, write) = nix::unistd::pipe().expect("pipe");
    drop(read);
    Stdio::from(write)
}

/// Runs `atoll ARGS` in `dir` with stdout a closed pipe (and stderr too with
/// `close_stderr`); returns the exit code and what it wrote to stderr. Bounded by [`WAIT`].
fn run_into_closed_pipe(dir: &Path, args: &[&str], close_stderr: bool) -> (Option<i32>, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_atoll"));
    command
        .args(args)
        .current_dir(dir)
        .env_remove("RUST_LOG")
        .env("RUST_BACKTRACE", "1")
        .stdin(Stdio::null())
        .stdout(closed_pipe());
    match close_stderr {
        true => command.stderr(closed_pipe()),
        false => command.stderr(Stdio::piped()),
    };
    let mut child = command.spawn().expect("atoll runs");
    let deadline = Instant::now() + WAIT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for atoll") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("atoll {args:?} did not finish within {WAIT:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let mut stderr = String::new();
    if let Some(mut err) = child.stderr.take() {
        std::io::Read::read_to_string(&mut err, &mut stderr).unwrap();
    }
    (status.code(), stderr)
}

#[test]
fn every_command_ends_quietly_with_141_when_its_reader_has_gone() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "{}[[listener]]\nname = \"kv\"\nkind = \"rpc\"\nplain = true\nip = \"127.0.0.1\"\nport = 0\n",
        echo_listener("echo")
    );
    let config = write_config(dir.path(), &text);
    let atoll = Atoll::serve(&config);
    let listening = atoll.listening(2);
    let kv = listening[1].2.to_string();
    let commands: &[&[&str]] = &[
        &["listeners"],
        &["listeners", "--json"],
        &["status"],
        &["status", "--json"],
        &["uptime", "echo"],
        &["reload"],
        &["reload", "--json"],
        &["check"],
        &["check", "--json"],
        &["env"],
        &["env", "--json"],
        &["versions"],
        &["versions", "--json"],
        &["rpc", &kv, "put", "k", "v"],
        &["rpc", &kv, "list"],
        &["--help"],
        &["--version"],
    ];
    for args in commands {
        let (code, stderr) = run_into_closed_pipe(dir.path(), args, false);
        assert!(
            !stderr.contains("panicked") && !stderr.contains("backtrace"),
            "atoll {args:?}: {stderr}"
        );
        assert_eq!(code, Some(141), "atoll {args:?}: {stderr}");
        assert_eq!(stderr, "", "atoll {args:?}");
    }
}

#[test]
fn a_failure_with_stderr_closed_too_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    // No config: the error goes to a closed stderr, and must not turn into a panic (101).
    for args in [
        &["listeners"][..],
        &["env"],
        &["rpc", "127.0.0.1:1", "list"],
    ] {
        let (code, _) = run_into_closed_pipe(dir.path(), args, true);
        assert_eq!(code, Some(1), "atoll {args:?}");
    }
}

#[test]
fn serve_goes_on_logging_when_its_stderr_is_closed() {
    let dir = tempfile::tempdir().unwrap();
    // `info` logs lines from the main thread at start (`serving`) and one per connection.
    let config = write_config(
        dir.path(),
        &format!(
            "log_events = \"info\"\n[app]\nlog_dir = \"$HOME/logs\"\n{}",
            echo_listener("echo")
        ),
    );
    let mut command = Command::new(env!("CARGO_BIN_EXE_atoll"));
    command
        .args(["serve", "--config"])
        .arg(&config)
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stderr(closed_pipe());
    let mut atoll = Atoll::spawn_with_stderr(command);
    let (_, addr) = listening(&atoll, 1).remove(0);
    let log = dir.path().join("logs/atoll.log");
    for n in 0..3 {
        common::echo_at(addr, format!("ping {n}").as_bytes());
    }
    assert!(atoll.is_running(), "serve died of its closed stderr");
    atoll.signal("TERM");
    assert_eq!(atoll.exit().code(), Some(0));
    // The file still has every line.
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("serving"), "{text}");
    assert!(text.contains("connection.start"), "{text}");
}

// ===== hostile peers =====

/// Serves one TLS echo listener `tls` with a 200 ms handshake timeout (`top`: keys before the
/// listener), opens `stalled` connections that never say a word, waits until each is closed
/// by its handshake timeout, stops the server and returns its stderr.
fn stall_tls_handshakes(top: &str, stalled: usize) -> String {
    let pki = Pki::new();
    let text = format!(
        "{top}{}handshake_timeout = \"200ms\"\n[listener.tls]\ncert = \"server.pem\"\nkey = \"server-key.pem\"\n",
        echo_listener("tls")
    );
    let mut atoll = Atoll::serve(&write_config(pki.dir.path(), &text));
    let (_, addr) = listening(&atoll, 1).remove(0);
    let streams: Vec<std::net::TcpStream> = (0..stalled)
        .map(|_| std::net::TcpStream::connect(addr).expect("connect"))
        .collect();
    for mut stream in streams {
        stream.set_read_timeout(Some(WAIT)).unwrap();
        // Closed by the server once the handshake timed out (0, or a reset).
        let read = std::io::Read::read(&mut stream, &mut [0u8; 1]);
        assert!(
            !matches!(&read, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
            "a stalled handshake was not timed out"
        );
    }
    // The stop sums up what the window did not log.
    atoll.signal("TERM");
    assert_eq!(atoll.exit().code(), Some(0));
    atoll.stderr()
}

/// The lines of `stderr` about the `tls` listener's failed handshakes.
fn handshake_lines(stderr: &str) -> Vec<&str> {
    stderr
        .lines()
        .filter(|l| l.contains("connection.handshake_error listener=tls"))
        .collect()
}

#[test]
fn stalled_tls_handshakes_are_all_counted_but_logged_at_a_bounded_rate() {
    const STALLED: usize = 300;
    let stderr = stall_tls_handshakes("", STALLED);
    let lines = handshake_lines(&stderr);
    let suppressed: Vec<usize> = lines
        .iter()
        .filter_map(|l| l.split(" suppressed=").nth(1))
        .map(|rest| rest.split(' ').next().unwrap().parse().unwrap())
        .collect();
    let logged = lines.len() - suppressed.len();
    assert!(!suppressed.is_empty(), "no summary: {stderr}");
    assert_eq!(
        logged + suppressed.iter().sum::<usize>(),
        STALLED,
        "every failure is counted: {stderr}"
    );
    let lines_per_window = atoll::telemetry::FAILURE_LOG_LINES as usize;
    assert!(
        logged <= lines_per_window * (suppressed.len() + 1),
        "{logged} lines logged: {stderr}"
    );
    assert!(lines.len() < STALLED / 5, "{} lines: {stderr}", lines.len());
    // The last summary's total, with the lines logged after it, is every failure.
    let last = lines
        .iter()
        .rposition(|l| l.contains(" suppressed="))
        .unwrap();
    let total: usize = lines[last]
        .split(" total=")
        .nth(1)
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(total + lines.len() - 1 - last, STALLED, "{stderr}");
    eprintln!("{} lines for {STALLED} stalled handshakes", lines.len());
}

#[test]
fn a_configured_failure_log_budget_bounds_the_lines() {
    const STALLED: usize = 50;
    let stderr = stall_tls_handshakes(
        "failure_log_lines = 3\nfailure_log_window = \"1h\"\n",
        STALLED,
    );
    let lines = handshake_lines(&stderr);
    // One window of an hour: 3 lines, then the stop's summary of the rest.
    assert_eq!(lines.len(), 4, "{stderr}");
    assert!(
        lines[..3].iter().all(|l| !l.contains("suppressed=")),
        "{stderr}"
    );
    assert!(
        lines[3].ends_with(&format!(
            "suppressed={} total={STALLED} limit=\"3 lines per 3600s\"",
            STALLED - 3
        )),
        "{stderr}"
    );
}

#[test]
fn a_static_dir_that_cannot_be_searched_stops_the_start_naming_it() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let site = dir.path().join("site");
    std::fs::create_dir(&site).unwrap();
    std::fs::write(site.join("index.html"), "hi").unwrap();
    std::fs::set_permissions(&site, std::fs::Permissions::from_mode(0o000)).unwrap();
    let config = write_config(
        dir.path(),
        "[[listener]]\nname = \"web\"\nkind = \"http\"\nip = \"127.0.0.1\"\nport = 0\nstatic_dir = \"site\"\n",
    );
    let mut command;
    if nix::unistd::geteuid().is_root() {
        // Root reads through any permission: run the server as nobody, who owns the folder
        // (to write its logs) but not the right to look into `site`.
        let setpriv = ["/usr/bin/setpriv", "/bin/setpriv"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .expect("running as root, this test needs util-linux's setpriv to drop to nobody");
        std::os::unix::fs::chown(dir.path(), Some(65534), Some(65534)).unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        command = Command::new(setpriv);
        command.args(["--reuid=65534", "--regid=65534", "--clear-groups"]);
        command.arg(env!("CARGO_BIN_EXE_atoll"));
    } else {
        command = Command::new(env!("CARGO_BIN_EXE_atoll"));
    }
    command
        .args(["serve", "--config"])
        .arg(&config)
        .current_dir(dir.path())
        .stdin(Stdio::null());
    let line = Atoll::spawn(command).failed(&config);
    assert!(
        line.contains("listener `web`: ") && line.contains(&site.display().to_string()),
        "{line}"
    );
    assert!(line.to_lowercase().contains("permission denied"), "{line}");
}
