//! The `atoll` binary, run for real: config files written to a temporary folder, listeners
//! reached over real sockets, signals sent to the process, and the one-line errors it prints.

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;

use common::process::Atoll;
use common::{echo_roundtrip, within, Pki};

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
