//! What a new user meets with the `atoll` binary (issue 21): control commands that find the
//! server from any directory, a reload that refuses another file, JSON on every `--json`
//! failure, the lines a stop, a reload and a signal print at the default log level, and error
//! messages that say what is wrong.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::control::{ctl, Outcome};
use common::process::Atoll;
use common::WAIT;

const ECHO: &str = r#"
[app]
node = "t"

[[listener]]
name = "echo"
kind = "echo"
ip = "127.0.0.1"
port = 0
"#;

const ECHO2: &str = r#"
[[listener]]
name = "echo2"
kind = "echo"
ip = "127.0.0.1"
port = 0
"#;

/// A config file `atoll.toml` with `text` in a fresh folder.
fn config(text: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().canonicalize().unwrap().join("atoll.toml");
    std::fs::write(&config, text).unwrap();
    (dir, config)
}

/// Runs `atoll ARGS` in `dir` to its end (bounded), with no `--config` added.
fn atoll_in(dir: &Path, args: &[&str]) -> Outcome {
    let mut command = Command::new(env!("CARGO_BIN_EXE_atoll"));
    command
        .args(args)
        .current_dir(dir)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = command.spawn().expect("atoll runs");
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let out = match rx.recv_timeout(WAIT * 2) {
        Ok(out) => out.expect("wait for atoll"),
        Err(_) => {
            let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
            panic!("atoll {args:?} did not finish");
        }
    };
    Outcome {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

// ===== 3: control commands from anywhere =====

#[test]
fn control_commands_find_the_server_from_another_directory() {
    let (_dir, config) = config(ECHO);
    let atoll = Atoll::serve(&config);
    atoll.listening(1);
    let elsewhere = tempfile::tempdir().unwrap();
    let config_arg = config.to_str().unwrap();

    let status = atoll_in(elsewhere.path(), &["status", "--config", config_arg]).ok();
    assert!(status.contains(&format!("pid {}", atoll.pid())), "{status}");
    // The config it names is absolute, whatever directory the client runs in.
    assert!(
        status.contains(&format!("config {config_arg}\n")),
        "{status}"
    );
    let listeners = atoll_in(elsewhere.path(), &["listeners", "--config", config_arg]).ok();
    assert!(listeners.contains("echo"), "{listeners}");
    // The data dir is beside the config file, not in the server's working directory.
    assert!(config
        .parent()
        .unwrap()
        .join("data.t/control.sock")
        .exists());
}

// ===== 2: reload --config OTHER =====

#[test]
fn a_reload_naming_another_file_is_refused_and_changes_nothing() {
    let (dir, config) = config(ECHO);
    let atoll = Atoll::serve(&config);
    atoll.listening(1);
    // Beside the server's file, so its data dir (and control socket) is the same.
    let other = dir.path().canonicalize().unwrap().join("other.toml");
    std::fs::write(&other, format!("{ECHO}{ECHO2}")).unwrap();

    let line = ctl(&other, &["reload"]).fails();
    assert!(
        line.contains(config.to_str().unwrap()) && line.contains(other.to_str().unwrap()),
        "does not name both files: {line}"
    );
    assert!(line.contains("nothing was changed"), "{line}");
    let listeners = ctl(&config, &["listeners"]).ok();
    assert!(!listeners.contains("echo2"), "{listeners}");
    assert!(
        atoll.line(std::time::Duration::ZERO).is_none(),
        "a listener was started"
    );

    // The server's own file, given by another spelling of its path, reloads.
    std::fs::write(&config, format!("{ECHO}{ECHO2}")).unwrap();
    let dotted = config.parent().unwrap().join(".").join("atoll.toml");
    let text = ctl(&dotted, &["reload"]).ok();
    assert!(text.contains("started echo2"), "{text}");
}

// ===== 4: what a stop, a reload and a signal print =====

#[test]
fn sighup_and_sigterm_are_logged_and_reloaded_listeners_announced() {
    let (_dir, config) = config(ECHO);
    let mut atoll = Atoll::serve(&config);
    atoll.listening(1);
    atoll.wait_for_log("serving");

    std::fs::write(&config, format!("{ECHO}{ECHO2}")).unwrap();
    atoll.signal("HUP");
    let started = atoll.listening(1);
    assert_eq!(
        (started[0].0.as_str(), started[0].1.as_str()),
        ("echo2", "echo")
    );
    atoll.wait_for_log("SIGHUP received");
    atoll.wait_for_log("reload (SIGHUP): started echo2");

    // A reload by command announces its listeners too.
    let mut text = format!("{ECHO}{ECHO2}");
    text += &ECHO2.replace("echo2", "echo3");
    std::fs::write(&config, text).unwrap();
    ctl(&config, &["reload"]).ok();
    let started = atoll.listening(1);
    assert_eq!(started[0].0, "echo3");

    let held = common::echo_at(started[0].2, b"ping");
    atoll.signal("TERM");
    assert!(atoll.exit().success());
    drop(held);
    let stderr = atoll.stderr();
    assert!(stderr.contains("SIGTERM received: stopping"), "{stderr}");
    for name in ["echo", "echo2", "echo3"] {
        let line = format!("stopped listener=\"{name}\" drained=");
        assert!(stderr.contains(&line), "no {line}: {stderr}");
    }
    assert!(
        stderr.contains("stopped: exiting drained=1 forced=0"),
        "{stderr}"
    );
}

// ===== 5: --json failures are JSON =====

#[test]
fn json_failures_are_json() {
    let (dir, config) = config(ECHO);
    // No server.
    let out = atoll_in(dir.path(), &["status", "--json"]);
    assert_eq!(out.code, 1, "{out:?}");
    let json: serde_json::Value = serde_json::from_str(&out.stdout).expect("JSON on stdout");
    assert!(
        json["error"]
            .as_str()
            .unwrap()
            .contains("no atoll serve is running"),
        "{json}"
    );
    // A config that cannot be read.
    let out = atoll_in(
        dir.path(),
        &["listeners", "--json", "--config", "missing.toml"],
    );
    assert_eq!(out.code, 1, "{out:?}");
    let json: serde_json::Value = serde_json::from_str(&out.stdout).expect("JSON on stdout");
    assert!(
        json["error"].as_str().unwrap().contains("missing.toml"),
        "{json}"
    );

    // A running server, then a config broken by an edit.
    let atoll = Atoll::serve(&config);
    atoll.listening(1);
    std::fs::write(&config, format!("{ECHO}\nbad = \n")).unwrap();
    let out = ctl(&config, &["reload", "--json"]);
    assert_eq!(out.code, 1, "{out:?}");
    let json: serde_json::Value = serde_json::from_str(&out.stdout).expect("JSON on stdout");
    assert!(json["error"].as_str().unwrap().contains("line"), "{json}");
    let out = atoll_in(dir.path(), &["env", "--json"]);
    assert_eq!(out.code, 1, "{out:?}");
    let _: serde_json::Value = serde_json::from_str(&out.stdout).expect("JSON on stdout");
}

// ===== 8: error wording =====

#[test]
fn a_missing_certificate_file_is_said_to_be_missing() {
    let (_dir, config) = config(
        r#"
[[listener]]
name = "web"
kind = "https"
ip = "127.0.0.1"
port = 0
[listener.tls]
cert = "nope.pem"
key = "nope-key.pem"
[[listener.handlers]]
host = "_"
resources = ["health"]
"#,
    );
    let line = Atoll::fails_with(&config);
    assert!(line.contains("nope.pem: file not found"), "{line}");
    assert!(!line.contains("bad certificate"), "{line}");
}

#[test]
fn a_port_in_use_is_said_once() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let (_dir, config) = config(&ECHO.replace("port = 0", &format!("port = {port}")));
    let line = Atoll::fails_with(&config);
    assert!(
        line.ends_with(&format!(
            "cannot listen on 127.0.0.1:{port}: address in use"
        )),
        "{line}"
    );
    assert_eq!(line.to_lowercase().matches("in use").count(), 1, "{line}");
}

#[test]
fn rpc_says_host_port_is_expected_and_names_a_listener_that_is_not_rpc() {
    let (dir, config) = config(&format!(
        "{ECHO}\n[[listener]]\nname = \"web\"\nkind = \"http\"\nip = \"127.0.0.1\"\nport = 0\n\
         [[listener.handlers]]\nhost = \"_\"\nresources = [\"health\"]\n"
    ));
    let line = atoll_in(dir.path(), &["rpc", "localhost", "list"]).fails();
    assert!(line.contains("expected HOST:PORT"), "{line}");

    let atoll = Atoll::serve(&config);
    let listening = atoll.listening(2);
    for (name, _, addr) in &listening {
        let addr = addr.to_string();
        let line = atoll_in(dir.path(), &["rpc", &addr, "list", "--timeout", "5s"]).fails();
        assert!(
            line.contains(&format!("{addr} is not an atoll RPC listener")),
            "{name}: {line}"
        );
        let got = match name.as_str() {
            "echo" => "it sends back what it is sent",
            _ => "it answers \"HTTP/1.1 400",
        };
        assert!(line.contains(got), "{name}: {line}");
    }
}
