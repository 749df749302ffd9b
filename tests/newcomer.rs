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

// ===== 7: an upgrade from a terminal =====

#[test]
fn the_new_process_of_an_upgrade_does_not_write_to_the_old_ones_terminal() {
    use std::io::{BufRead, BufReader};

    let (_dir, config) = config(ECHO);
    let pty = nix::pty::openpty(None, None).expect("a pseudo-terminal");
    let out = pty.slave.try_clone().unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_atoll"));
    command
        .args(["serve", "--config"])
        .arg(&config)
        .current_dir(config.parent().unwrap())
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::from(out))
        .stderr(Stdio::from(pty.slave));
    let mut old = command.spawn().expect("atoll runs");
    let reaper = common::process::Reaper::default();
    reaper.add(old.id());
    // The terminal's output, line by line, read as it comes (a full terminal would block).
    let (tx, lines) = std::sync::mpsc::channel();
    let master = std::fs::File::from(pty.master);
    std::thread::spawn(move || {
        for line in BufReader::new(master).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let line = lines
            .recv_timeout(left)
            .expect("a `listening` line on the terminal");
        if line.starts_with("listening name=echo") {
            break;
        }
    }

    let binary = env!("CARGO_BIN_EXE_atoll");
    let answer = ctl(&config, &["upgrade", "--path", binary, "--json"]).json();
    let new_pid = answer["pid"].as_u64().unwrap() as u32;
    reaper.add(new_pid);
    for fd in [1, 2] {
        let target = std::fs::read_link(format!("/proc/{new_pid}/fd/{fd}")).unwrap();
        assert_eq!(target, Path::new("/dev/null"), "fd {fd} of the new process");
    }
    common::process::wait_exit(old.id(), WAIT);
    let _ = old.wait();
    let status = ctl(&config, &["status", "--json"]).json();
    assert_eq!(status["pid"], new_pid);
    common::process::terminate(new_pid);
}

// ===== 1: the README's commands, and its docs pages' =====

/// The `atoll ...` commands of a Markdown file (relative to the crate): the lines of its code
/// blocks, and the inline ones, each without its comment, split into words (single quotes
/// removed).
fn commands_of(file: &str) -> Vec<Vec<String>> {
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(file))
        .unwrap_or_else(|e| panic!("{file}: {e}"));
    let mut found = Vec::new();
    let mut in_block = false;
    for line in text.lines() {
        if line.starts_with("```") {
            in_block = !in_block;
            continue;
        }
        if in_block {
            let line = line.strip_prefix("$ ").unwrap_or(line);
            if line.starts_with("atoll ") {
                found.push(line.split(" #").next().unwrap().trim().to_owned());
            }
        } else {
            for (i, part) in line.split('`').enumerate() {
                // `atoll ...` stands for any command.
                if i % 2 == 1 && part.starts_with("atoll ") && !part.contains("...") {
                    found.push(part.to_owned());
                }
            }
        }
    }
    found
        .iter()
        .map(|c| c.split_whitespace().map(|w| w.replace('\'', "")).collect())
        .collect()
}

/// The README and every page of docs/, which the README sends a reader to.
fn pages() -> Vec<String> {
    let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs");
    let mut pages: Vec<String> = std::fs::read_dir(&docs)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|name| name.ends_with(".md"))
        .map(|name| format!("docs/{name}"))
        .collect();
    pages.sort();
    pages.insert(0, "README.md".to_owned());
    pages
}

#[test]
fn the_readme_says_how_to_get_atoll_and_its_commands_work_as_written() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md");
    let quick_start = readme
        .split("## Quick start")
        .nth(1)
        .expect("a quick start");
    let quick_start = quick_start.split("\n## ").next().unwrap();
    assert!(
        quick_start.contains("cargo install --locked --path ."),
        "{quick_start}"
    );
    assert!(
        quick_start.contains("target/release/atoll"),
        "{quick_start}"
    );

    let readme_commands = commands_of("README.md");
    assert!(readme_commands.len() >= 10, "{readme_commands:?}");
    // An RPC daemon where the README's is (127.0.0.1:4040): on a free port instead.
    let (dir, config) = config(
        "[app]\nnode = \"t\"\n[[listener]]\nname = \"kv\"\nkind = \"rpc\"\nip = \"127.0.0.1\"\n\
         port = 0\nplain = true\n",
    );
    let atoll = Atoll::serve(&config);
    let kv = atoll.listening(1)[0].2.to_string();
    // The README's commands, then those of the docs pages it links to.
    for page in pages() {
        let commands = commands_of(&page);
        let mut rpc_calls = 0;
        for words in &commands {
            let args: Vec<&str> = words[1..].iter().map(String::as_str).collect();
            assert_eq!(words[0], "atoll");
            if args[0] == "rpc" && args.len() >= 3 {
                let mut args = args.clone();
                args[1] = &kv;
                let out = atoll_in(dir.path(), &args).ok();
                let _: serde_json::Value = serde_json::from_str(&out)
                    .unwrap_or_else(|e| panic!("{page}: {words:?}: {e}: {out}"));
                rpc_calls += 1;
            } else {
                // The subcommand and its options exist as written.
                let mut help = vec![args[0], "--help"];
                help.extend(args[1..].iter().filter(|a| a.starts_with("--")));
                let out = atoll_in(dir.path(), &help[..2]).ok();
                for option in &help[2..] {
                    assert!(
                        out.contains(option),
                        "{page}: {words:?}: no {option} in {out}"
                    );
                }
            }
        }
        if page == "README.md" {
            assert!(rpc_calls >= 4, "{commands:?}");
        }
    }
}

/// GitHub's anchor of a Markdown heading: lower case, spaces to `-`, punctuation dropped.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || matches!(c, ' ' | '-' | '_'))
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

#[test]
fn the_readme_links_every_docs_page_and_no_link_is_broken() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let pages = pages();
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    for page in &pages[1..] {
        assert!(
            readme.contains(&format!("]({page})")),
            "the README does not link {page}"
        );
    }
    for page in &pages {
        let text = std::fs::read_to_string(root.join(page)).unwrap();
        let folder = Path::new(page).parent().unwrap();
        let mut in_block = false;
        let mut links = 0;
        for line in text.lines() {
            if line.starts_with("```") {
                in_block = !in_block;
            }
            if in_block {
                continue;
            }
            for (_, rest) in line.match_indices("](").map(|(i, _)| line.split_at(i + 2)) {
                let link = &rest[..rest.find(')').unwrap_or(rest.len())];
                if link.starts_with("http") {
                    continue;
                }
                links += 1;
                let (file, fragment) = link.split_once('#').unwrap_or((link, ""));
                let target = if file.is_empty() {
                    root.join(page)
                } else {
                    root.join(folder).join(file)
                };
                assert!(target.exists(), "{page}: {link}: no such file");
                if !fragment.is_empty() {
                    let target_text = std::fs::read_to_string(&target).unwrap();
                    let mut in_block = false;
                    let found = target_text
                        .lines()
                        .filter(|l| {
                            in_block ^= l.starts_with("```");
                            !in_block && l.starts_with('#')
                        })
                        .any(|l| anchor(l.trim_start_matches('#')) == fragment);
                    assert!(found, "{page}: {link}: no such heading");
                }
            }
        }
        assert!(links > 0 || page != "README.md", "no links found in {page}");
    }
}

// ===== 6: one way to upgrade, in the unit and the guide =====

#[test]
fn the_systemd_unit_and_the_guide_describe_one_upgrade_without_a_current_link() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let unit = std::fs::read_to_string(root.join("dist/systemd/atoll.service")).unwrap();
    let guide = std::fs::read_to_string(root.join("docs/operations.md")).unwrap();
    let value = |key: &str| {
        unit.lines()
            .find_map(|l| l.strip_prefix(&format!("{key}=")))
            .unwrap_or_else(|| panic!("no {key}= in the unit"))
            .to_owned()
    };
    assert!(
        !unit.contains("/current"),
        "the unit still uses a `current` link"
    );
    let exec = value("ExecStart");
    let binary = exec.split_whitespace().next().unwrap();
    let config = exec.split_whitespace().last().unwrap();
    // The documentation is the config file the unit runs, which exists wherever it runs.
    assert_eq!(value("Documentation"), format!("file:{config}"));
    // The guide's steps name the same binary and config, and the same upgrade command.
    let section = guide
        .split("### Upgrade under systemd")
        .nth(1)
        .expect("an `Upgrade under systemd` section");
    let section = section.split("\n## ").next().unwrap();
    assert!(
        section.contains(binary),
        "{binary} not in the guide's steps"
    );
    let upgrade = format!("--config {config}");
    assert!(section.contains(&upgrade) && unit.contains(&upgrade));
    let install = format!("install -m 755 /opt/atoll/lib/atoll-1.1.0/atoll {binary}");
    assert!(section.contains(&install) && unit.contains(&install));
    assert!(!section.contains("/opt/atoll/current"));
}

#[test]
fn the_guide_and_the_unit_install_the_first_release_in_the_layout_the_upgrade_uses() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let unit = std::fs::read_to_string(root.join("dist/systemd/atoll.service")).unwrap();
    let socket = std::fs::read_to_string(root.join("dist/systemd/atoll.socket")).unwrap();
    let guide = std::fs::read_to_string(root.join("docs/operations.md")).unwrap();
    let shipped = std::fs::read_to_string(root.join("atoll.toml")).unwrap();
    let value = |text: &str, key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{key}=")))
            .unwrap_or_else(|| panic!("no {key}="))
            .to_owned()
    };
    let exec = value(&unit, "ExecStart");
    let binary = exec.split_whitespace().next().unwrap();
    let config = exec.split_whitespace().last().unwrap();
    let section = guide
        .split("### Install under systemd")
        .nth(1)
        .expect("an `Install under systemd` section");
    let section = section.split("\n### ").next().unwrap();

    // The binary systemd starts is installed from a release folder in the lib dir, as an
    // upgrade's step 3 does.
    let install = format!("install -m 755 /opt/atoll/lib/atoll-1.0.0/atoll {binary}");
    assert!(section.contains(&install) && unit.contains(&install));
    assert!(section.contains("lib_dirs = [\"/opt/atoll/lib\"]"));
    // The config the unit runs, and its `Documentation=` names, is the shipped one, copied
    // where the unit reads it; its comments point at the guide's sections, as the unit says.
    let folder = Path::new(config).parent().unwrap().to_str().unwrap();
    assert!(
        section.contains(&format!("cp -r atoll.toml site {folder}/")),
        "{section}"
    );
    for heading in ["Install under systemd", "Upgrade under systemd"] {
        assert!(guide.contains(&format!("### {heading}\n")), "{heading}");
        assert!(
            shipped.contains(heading),
            "atoll.toml does not point at {heading}"
        );
    }
    assert!(shipped.contains("docs/operations.md"));
    // The [app] dirs the guide sets are the ones the unit creates for its user.
    for (key, base, directive) in [
        ("home", "/var/lib", "StateDirectory"),
        ("log_dir", "/var/log", "LogsDirectory"),
    ] {
        let line = format!("{key} = \"{base}/{}\"", value(&unit, directive));
        assert!(section.contains(&line), "the guide does not set {line}");
        assert!(unit.contains(&line), "the unit does not say {line}");
    }
    assert_eq!(
        value(&unit, "WorkingDirectory"),
        format!("/var/lib/{}", value(&unit, "StateDirectory"))
    );
    // The socket unit it installs beside the service names a listener of that config.
    let listeners = atoll::Config::parse(&shipped, Path::new("atoll.toml"))
        .unwrap()
        .listeners;
    let name = value(&socket, "FileDescriptorName");
    assert!(
        listeners.iter().any(|l| l.name == name),
        "atoll.socket's FileDescriptorName={name} is no listener of atoll.toml"
    );
}
