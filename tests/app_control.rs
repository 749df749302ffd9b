//! The control socket of a running `atoll serve`, driven by the real binary: `listeners`,
//! `uptime`, `stop` and `status` in text and JSON, errors, a second server refused, and a
//! socket of another user refused by the client and by the server.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};

use common::control::ctl;
use common::control::ctl_with;
use common::process::Atoll;

const CONFIG: &str = r#"
[app]
node = "t"

[[listener]]
name = "echo"
kind = "echo"
ip = "127.0.0.1"
port = 0
shutdown_timeout = "2s"

[[listener]]
name = "web"
kind = "http"
port = 0

[[listener.handlers]]
host = "_"
resources = ["health"]
"#;

struct Served {
    _dir: tempfile::TempDir,
    config: PathBuf,
    atoll: Atoll,
    echo: SocketAddr,
}

fn serve(config_text: &str) -> Served {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().canonicalize().unwrap().join("atoll.toml");
    std::fs::write(&config, config_text).unwrap();
    let atoll = Atoll::serve(&config);
    let listening = atoll.listening(2);
    let echo = listening.iter().find(|l| l.0 == "echo").unwrap().2;
    Served {
        _dir: dir,
        config,
        atoll,
        echo,
    }
}

fn control_socket(config: &Path) -> PathBuf {
    config.parent().unwrap().join("data.t/control.sock")
}

#[test]
fn listeners_uptime_status_and_stop_answer_in_text_and_json() {
    let mut served = serve(CONFIG);
    let config = &served.config;
    let held = common::echo_at(served.echo, b"ping");

    let text = ctl(config, &["listeners"]).ok();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert!(
        lines[0].starts_with("NAME") && lines[0].contains("CONNECTIONS"),
        "{text}"
    );
    assert!(
        lines[1].starts_with("echo ") && lines[1].contains(&served.echo.to_string()),
        "{text}"
    );
    assert!(
        lines[2].starts_with("web ") && lines[2].contains("http"),
        "{text}"
    );

    let json = ctl(config, &["listeners", "--json"]).json();
    let list = json.as_array().expect("an array");
    assert_eq!(list.len(), 2, "{json}");
    assert_eq!(list[0]["name"], "echo");
    assert_eq!(list[0]["kind"], "echo");
    assert_eq!(list[0]["addr"], served.echo.to_string());
    assert_eq!(list[0]["connections"], 1, "the held connection: {json}");
    assert!(list[1]["uptime_secs"].as_f64().unwrap() > 0.0, "{json}");

    let text = ctl(config, &["uptime", "web"]).ok();
    assert!(text.starts_with("web up "), "{text}");
    let json = ctl(config, &["uptime", "web", "--json"]).json();
    assert_eq!(json["name"], "web");
    assert!(json["uptime_secs"].as_f64().unwrap() > 0.0, "{json}");

    let json = ctl(config, &["status", "--json"]).json();
    assert_eq!(json["pid"], served.atoll.pid(), "{json}");
    assert_eq!(json["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(json["listeners"], 2);

    // Stopping drains the held connection (echo closes it on stop) and frees the port.
    let text = ctl(config, &["stop", "echo"]).ok();
    assert_eq!(text.trim_end(), "stopped echo (1 drained, 0 forced)");
    drop(held);
    assert!(
        TcpStream::connect(served.echo).is_err(),
        "echo still accepts"
    );
    let json = ctl(config, &["listeners", "--json"]).json();
    assert_eq!(json.as_array().unwrap().len(), 1, "{json}");

    let line = ctl(config, &["uptime", "echo"]).fails();
    assert!(
        line.contains("listener `echo`") && line.contains("no such listener"),
        "{line}"
    );
    let out = ctl(config, &["stop", "echo", "--json"]);
    assert_eq!(out.code, 1);
    let json: serde_json::Value = serde_json::from_str(&out.stdout).expect("JSON error");
    assert!(
        json["error"].as_str().unwrap().contains("no such listener"),
        "{json}"
    );

    // The socket is the owner's alone.
    let meta = std::fs::metadata(control_socket(config)).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);

    served.atoll.signal("TERM");
    assert!(served.atoll.exit().success(), "{}", served.atoll.stderr());
    assert!(
        !control_socket(config).exists(),
        "the control socket is left behind"
    );
}

#[test]
fn without_a_server_a_command_says_none_is_running() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("atoll.toml");
    std::fs::write(&config, CONFIG).unwrap();
    for args in [
        &["listeners"][..],
        &["reload"],
        &["upgrade"],
        &["uptime", "web"],
    ] {
        let line = ctl(&config, args).fails();
        assert!(
            line.contains("no atoll serve is running"),
            "{args:?}: {line}"
        );
    }
}

#[test]
fn a_second_server_of_the_same_config_starts_nothing() {
    let served = serve(CONFIG);
    let line = Atoll::fails_with(&served.config);
    assert!(line.contains("another atoll serve is running"), "{line}");
    // The first one still answers.
    ctl(&served.config, &["listeners"]).ok();
    common::echo_at(served.echo, b"ping");
}

#[test]
fn a_bad_request_line_gets_an_error_and_the_server_goes_on() {
    let served = serve(CONFIG);
    let mut raw = UnixStream::connect(control_socket(&served.config)).unwrap();
    raw.set_read_timeout(Some(common::WAIT)).unwrap();
    raw.write_all(b"{\"command\":\"explode\"}\n").unwrap();
    let mut answer = String::new();
    BufReader::new(&raw).read_line(&mut answer).unwrap();
    let json: serde_json::Value = serde_json::from_str(&answer).unwrap();
    assert_eq!(json["ok"], false);
    assert!(
        json["text"].as_str().unwrap().starts_with("bad request"),
        "{json}"
    );
    ctl(&served.config, &["listeners"]).ok();
}

/// Needs root, to own files as and act as another user (uid 65534).
#[test]
fn a_socket_of_another_user_is_refused_by_client_and_server() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test acts as another user, so it must run as root"
    );
    let served = serve(CONFIG);
    let config = &served.config;
    let socket = control_socket(config);
    let dir = config.parent().unwrap();
    // Let uid 65534 reach the config and the socket's folder.
    for d in [dir.to_owned(), dir.join("data.t"), dir.join("log.t")] {
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let nobody = nix::unistd::Uid::from_raw(65534);
    let root = nix::unistd::Uid::from_raw(0);

    // A socket owned by someone else: the client will not talk to it.
    nix::unistd::chown(&socket, Some(nobody), None).unwrap();
    let line = ctl(config, &["listeners"]).fails();
    assert!(
        line.contains("belongs to uid 65534") && line.contains("refusing"),
        "{line}"
    );

    // The other user passes its own client's check, but the server refuses it.
    let out = ctl_with(config, &["listeners"], |c| {
        c.uid(65534).gid(65534);
    });
    let line = out.fails();
    assert!(
        line.contains("refused: uid 65534 is not the user this server runs as"),
        "{line}"
    );

    nix::unistd::chown(&socket, Some(root), None).unwrap();
    assert_eq!(std::fs::metadata(&socket).unwrap().uid(), 0);
    ctl(config, &["listeners"]).ok();
}
