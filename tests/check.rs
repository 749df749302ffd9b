//! `atoll check` from outside, and the address check that `atoll serve` and a reload run
//! first: config files in a temporary folder, the binary run for real, and real sockets to
//! see what listens where.

mod common;

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::process::Atoll;
use common::Pki;

fn write_config(dir: &Path, text: &str) -> std::path::PathBuf {
    let path = dir.join("atoll.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// `atoll ARGS` in `dir`, to its end (within 30 s, or the test fails).
fn atoll(dir: &Path, args: &[&str]) -> Output {
    let child = Command::new(env!("CARGO_BIN_EXE_atoll"))
        .args(args)
        .current_dir(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("atoll runs");
    let pid = child.id();
    let watchdog = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(30));
        common::process::terminate(pid);
    });
    let out = child.wait_with_output().unwrap();
    drop(watchdog);
    out
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// What a folder holds, sorted.
fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// A port some socket of this test holds, so a listener that binds it would fail.
fn held_port() -> (TcpListener, u16) {
    let held = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = held.local_addr().unwrap().port();
    (held, port)
}

#[test]
fn a_good_config_is_all_good_and_nothing_is_bound_or_created() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new();
    // Held here: a check that bound it would fail.
    let (_held, port) = held_port();
    let config = format!(
        "[[listener]]\nname = \"echo\"\nkind = \"echo\"\nip = \"127.0.0.1\"\nport = {port}\n\
         [[listener]]\nname = \"web\"\nkind = \"http\"\n\
         [[listener.handlers]]\nresources = [\"health\", \"websocket_echo\"]\n\
         [[listener]]\nname = \"secure\"\nkind = \"https\"\nport = 0\n\
         [listener.tls]\ncert = \"{}\"\nkey = \"{}\"\n\
         [[listener]]\nname = \"kv\"\nkind = \"rpc\"\nplain = true\n\
         [[listener]]\nname = \"admin\"\nkind = \"admin\"\n",
        pki.server_cert.display(),
        pki.server_key.display()
    );
    write_config(dir.path(), &config);
    let out = atoll(dir.path(), &["check"]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    assert_eq!(text(&out.stderr), "");
    let lines: Vec<&str> = stdout.lines().collect();
    let rows: Vec<Vec<&str>> = lines
        .iter()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(rows[0], ["STATUS", "NAME", "KIND", "ADDRESS"]);
    // Each kind's own default address.
    let echo_at = format!("127.0.0.1:{port}");
    assert_eq!(rows[1], ["ok", "echo", "echo", echo_at.as_str()]);
    assert_eq!(rows[2], ["ok", "web", "http", "127.0.0.1:8080"]);
    assert_eq!(rows[3], ["ok", "secure", "https", "127.0.0.1:0"]);
    // Any free port, as `atoll serve` then prints.
    assert_eq!(rows[4], ["ok", "kv", "rpc", "127.0.0.1:0"]);
    assert_eq!(rows[5], ["ok", "admin", "admin", "127.0.0.1:9464"]);
    assert_eq!(lines[6], "atoll.toml: 5 listeners, all good");
    assert_eq!(lines.len(), 7);
    // No data or log directory, no store, no control socket.
    assert_eq!(entries(dir.path()), ["atoll.toml"]);
}

#[test]
fn every_fault_is_reported_with_its_listener() {
    let dir = tempfile::tempdir().unwrap();
    let config = "\
[[listener]]\nname = \"fine\"\nkind = \"echo\"\nport = 0\n\
[[listener]]\nname = \"chat\"\nkind = \"chat\"\n\
[[listener]]\nname = \"typo\"\nkind = \"http\"\nhttp3 = true\n\
[[listener]]\nname = \"bare\"\nkind = \"https\"\nport = 0\n\
[[listener]]\nname = \"kv\"\nkind = \"rpc\"\nport = 0\n\
[[listener]]\nname = \"files\"\nkind = \"http\"\nport = 0\n\
[[listener.handlers]]\nresources = [{ name = \"static\", dir = \"no-such-folder\" }]\n\
[[listener]]\nname = \"certs\"\nkind = \"echo\"\nport = 0\n\
[listener.tls]\ncert = \"missing.pem\"\nkey = \"missing.key\"\n";
    write_config(dir.path(), config);
    let out = atoll(dir.path(), &["check"]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    assert_eq!(
        stderr,
        "atoll: atoll.toml: 6 of 7 listeners failed the check\n"
    );
    let rows: Vec<Vec<&str>> = stdout
        .lines()
        .skip(1)
        .take(7)
        .map(|l| l.split_whitespace().collect())
        .collect();
    let status: Vec<(&str, &str)> = rows.iter().map(|r| (r[0], r[1])).collect();
    assert_eq!(
        status,
        [
            ("ok", "fine"),
            ("failed", "chat"),
            ("failed", "typo"),
            ("failed", "bare"),
            ("failed", "kv"),
            ("failed", "files"),
            ("failed", "certs"),
        ]
    );
    let faults: Vec<&str> = stdout.lines().skip(8).collect();
    assert_eq!(faults.len(), 6, "{stdout}");
    for (fault, (name, says)) in faults.iter().zip([
        ("chat", "unknown kind `chat`"),
        ("typo", "http3"),
        ("bare", "needs a [listener.tls] table"),
        ("kv", "needs a [listener.tls] table, or `plain = true`"),
        ("files", "no-such-folder"),
        ("certs", "missing.pem"),
    ]) {
        let start = format!("atoll.toml: listener `{name}`: ");
        assert!(fault.starts_with(&start), "{fault}");
        assert!(fault.contains(says), "{fault}");
    }
    assert_eq!(entries(dir.path()), ["atoll.toml"]);

    let out = atoll(dir.path(), &["check", "--json"]);
    assert_eq!(out.status.code(), Some(1));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["ok"], false);
    assert_eq!(report["listeners"][0]["error"], serde_json::Value::Null);
    assert_eq!(report["listeners"][0]["settings_checked"], true);
    assert!(report["listeners"][1]["error"]
        .as_str()
        .unwrap()
        .contains("unknown kind `chat`"));
}

#[test]
fn a_file_that_does_not_load_is_one_error() {
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), "[[listener]]\nname = \"a\"\nkind = = 1\n");
    let out = atoll(dir.path(), &["check"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(text(&out.stdout), "");
    let stderr = text(&out.stderr);
    assert!(
        stderr.starts_with("atoll: atoll.toml: line 3: "),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1);
}

/// Two listeners of one config on one address: an echo and an HTTP listener, both with
/// `num_listen_sockets = 2` (`SO_REUSEPORT`), so that the kernel would let both bind.
fn sharing(port: u16) -> String {
    format!(
        "[[listener]]\nname = \"echo\"\nkind = \"echo\"\nip = \"127.0.0.1\"\nport = {port}\n\
         num_listen_sockets = 2\n\
         [[listener]]\nname = \"web\"\nkind = \"http\"\nip = \"127.0.0.1\"\nport = {port}\n\
         num_listen_sockets = 2\n"
    )
}

/// A free port, not held.
fn free_port() -> u16 {
    held_port().1
}

/// Whether something accepts connections at `addr`.
fn listens(addr: SocketAddr) -> bool {
    TcpStream::connect_timeout(&addr, Duration::from_secs(2)).is_ok()
}

#[test]
fn listeners_that_would_share_an_address_are_refused_before_anything_starts() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = write_config(dir.path(), &sharing(port));
    let out = atoll(dir.path(), &["check"]);
    assert_eq!(out.status.code(), Some(1));
    let stdout = text(&out.stdout);
    let fault = format!(
        "atoll.toml: listener `web`: listens on 127.0.0.1:{port}, as listener `echo` does: \
         two listeners cannot share an address"
    );
    assert!(stdout.lines().any(|l| l == fault), "{stdout}");
    // Before, both started, and the kernel gave each some of the other's connections.
    let line = Atoll::fails_with(&config);
    assert_eq!(
        line,
        format!("atoll: {}: {}", config.display(), &fault[12..])
    );
    assert!(!listens(SocketAddr::from(([127, 0, 0, 1], port))));

    // An address on all interfaces takes in the loopback one, and a kind's own default port
    // counts: an `http` listener with no port listens on 8080.
    let text = "[[listener]]\nname = \"web\"\nkind = \"http\"\n\
                [[listener]]\nname = \"all\"\nkind = \"echo\"\nip = \"::\"\nport = 8080\n";
    write_config(dir.path(), text);
    let out = atoll(dir.path(), &["check"]);
    assert_eq!(out.status.code(), Some(1));
    let stdout = self::text(&out.stdout);
    assert!(
        stdout.contains(
            "listener `all`: listens on [::]:8080, which takes in listener `web`'s \
             127.0.0.1:8080"
        ),
        "{stdout}"
    );
}

#[test]
fn a_reload_that_would_share_an_address_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let first = "[[listener]]\nname = \"echo\"\nkind = \"echo\"\nip = \"127.0.0.1\"\n\
                 port = PORT\nnum_listen_sockets = 2\nshutdown_timeout = \"1s\"\n"
        .replace("PORT", &port.to_string());
    let config = write_config(dir.path(), &first);
    let mut server = Atoll::serve(&config);
    let listening = server.listening(1);
    let addr = listening[0].2;
    write_config(dir.path(), &sharing(port));
    let out = atoll(dir.path(), &["reload"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("listener `web`: listens on") && stderr.contains("as listener `echo` does"),
        "{stderr}"
    );
    // Still the echo alone: every connection is echoed.
    for i in 0..20u8 {
        common::echo_at(addr, &[b'a' + i]);
    }
    let out = atoll(dir.path(), &["listeners"]);
    let names: Vec<String> = text(&out.stdout)
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().next().unwrap().to_owned())
        .collect();
    assert_eq!(names, ["echo"]);
    server.signal("TERM");
    assert!(server.exit().success());
}

#[test]
fn the_shipped_config_is_all_good() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let before = entries(repo);
    let dir = tempfile::tempdir().unwrap();
    let shipped = repo.join("atoll.toml");
    let out = atoll(
        dir.path(),
        &["check", "--config", shipped.to_str().unwrap()],
    );
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    let last = stdout.lines().last().unwrap();
    assert!(
        last.ends_with("atoll.toml: 4 listeners, all good"),
        "{stdout}"
    );
    assert_eq!(entries(repo), before, "the check created something");
}
