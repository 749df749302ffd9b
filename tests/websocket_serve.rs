//! The binary's `websocket_echo` catalogue entry through `atoll serve`, over ws and wss, driven
//! by a second implementation: Python's `websockets` client (in `target/ci-venv`, which
//! `.ci/run` installs), running `tests/websocket_client.py`.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;

use common::process::Atoll;
use common::{Pki, WAIT};

const VENV_PYTHON: &str = "target/ci-venv/bin/python";

#[test]
fn websocket_echo_through_atoll_serve_with_python_websockets() {
    let python = Path::new(env!("CARGO_MANIFEST_DIR")).join(VENV_PYTHON);
    let has_websockets = Command::new(&python)
        .args(["-c", "import websockets"])
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        has_websockets,
        "Python's `websockets` is missing from {}: run .ci/run, or \
         `python3 -m venv target/ci-venv && target/ci-venv/bin/pip install websockets==15.0.1`",
        python.display()
    );
    let pki = Pki::new();
    let config = pki.dir.path().join("atoll.toml");
    let listener = |name: &str, kind: &str, tls: &str| {
        format!(
            "[[listener]]\nname = \"{name}\"\nkind = \"{kind}\"\nip = \"127.0.0.1\"\nport = 0\n\
             shutdown_timeout = \"10s\"\n{tls}\n[[listener.handlers]]\nhost = \"_\"\n\
             resources = [\"health\", \
             {{ name = \"websocket_echo\", path = \"/echo\", max_message_size = 100 }}]\n\n"
        )
    };
    let text = format!(
        "[app]\nnode = \"t\"\n\n{}{}",
        listener("web", "http", ""),
        listener(
            "tls",
            "https",
            "[listener.tls]\ncert = \"server.pem\"\nkey = \"server-key.pem\"\n"
        ),
    );
    std::fs::write(&config, text).unwrap();
    let mut atoll = Atoll::serve(&config);
    let listening = atoll.listening(2);
    let port = |name: &str| listening.iter().find(|l| l.0 == name).unwrap().2.port();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/websocket_client.py");
    let mut client = Command::new(&python)
        .arg(script)
        .arg(&pki.ca)
        .arg(format!("ws://127.0.0.1:{}/echo", port("web")))
        .arg(format!("wss://localhost:{}/echo", port("tls")))
        .stdout(Stdio::piped())
        .spawn()
        .expect("python runs");
    let (tx, lines) = mpsc::channel();
    let stdout = client.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let line = |what: &str| {
        lines
            .recv_timeout(WAIT)
            .unwrap_or_else(|_| panic!("no {what}"))
    };
    // The checks passed and a connection is held on each listener.
    assert_eq!(line("`open`"), "open");
    atoll.signal("TERM");
    assert_eq!(line("ws's close"), "closed 1001");
    assert_eq!(line("wss's close"), "closed 1001");
    let deadline = std::time::Instant::now() + WAIT;
    let status = loop {
        if let Some(status) = client.try_wait().unwrap() {
            break status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the client did not exit"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    };
    assert!(status.success());
    assert!(atoll.exit().success());
}
