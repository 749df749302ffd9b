//! The last rows of the seed systems (issue 21): setup's `find_env_vars` (`atoll env --find`
//! and [`Config::find_env_vars`]), and leptus's `listener_uptime` as a value a program reads.

mod common;

use std::path::{Path, PathBuf};

use atoll::{Config, FoundKey};
use common::control::ctl;

const CONFIG: &str = r#"
[app]
node = "t"
name = "shop"

[vars]
certs = "$PRIV_DIR/certs"

[[listener]]
name = "echo"
kind = "echo"
ip = "127.0.0.1"
port = 0

[[listener]]
name = "web"
kind = "https"
port = 8443
[listener.tls]
cert = "$certs/$APP.pem"
key = "$certs/$APP-key.pem"
"#;

// ===== setup's find_env_vars =====

#[test]
fn find_env_vars_finds_a_key_in_app_and_every_listener_expanded() {
    let config = Config::parse(CONFIG, Path::new("/etc/shop/atoll.toml")).unwrap();
    let found = config.find_env_vars("port");
    assert_eq!(
        found,
        [
            FoundKey {
                owner: "listener echo".into(),
                value: toml::Value::Integer(0)
            },
            FoundKey {
                owner: "listener web".into(),
                value: toml::Value::Integer(8443)
            },
        ]
    );
    let found = config.find_env_vars("tls.cert");
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].owner, "listener web");
    assert_eq!(found[0].value.as_str(), Some("/etc/shop/certs/shop.pem"));
    let found = config.find_env_vars("data_dir");
    assert_eq!(found[0].owner, "app");
    assert_eq!(found[0].value.as_str(), Some("/etc/shop/data.t"));
    assert!(config.find_env_vars("nothing").is_empty());
}

#[test]
fn atoll_env_find_prints_each_place_and_fails_on_none() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().canonicalize().unwrap().join("atoll.toml");
    std::fs::write(&config, CONFIG).unwrap();
    let out = ctl(&config, &["env", "--find", "port"]).ok();
    assert_eq!(out, "listener echo = 0\nlistener web = 8443\n");
    let out = ctl(&config, &["env", "--find", "tls.key"]).ok();
    let certs = config.parent().unwrap().join("certs/shop-key.pem");
    assert_eq!(out, format!("listener web = {}\n", certs.display()));
    let json = ctl(&config, &["env", "--find", "name", "--json"]).json();
    assert_eq!(
        json,
        serde_json::json!([
            { "owner": "app", "value": "shop" },
            { "owner": "listener echo", "value": "echo" },
            { "owner": "listener web", "value": "web" },
        ])
    );
    let line = ctl(&config, &["env", "--find", "nothing"]).fails();
    assert!(line.contains("no table sets `nothing`"), "{line}");
}

// ===== leptus's listener_uptime =====

/// `GET path` on `addr`, over HTTP/1.1 with `connection: close`; the body parsed as JSON.
fn get_json(addr: std::net::SocketAddr, path: &str) -> serde_json::Value {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(common::WAIT)).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

/// An uptime value: days, hours, minutes, seconds and the total, consistent.
fn check_uptime(v: &serde_json::Value) -> f64 {
    let part = |k: &str| v[k].as_u64().unwrap_or_else(|| panic!("no {k} in {v}"));
    let total = v["total_secs"].as_f64().unwrap();
    let whole =
        part("days") * 86_400 + part("hours") * 3600 + part("minutes") * 60 + part("seconds");
    assert!(
        part("hours") < 24 && part("minutes") < 60 && part("seconds") < 60,
        "{v}"
    );
    assert_eq!(whole, total as u64, "{v}");
    total
}

#[test]
fn listener_uptime_is_a_value_in_listeners_atoll_uptime_and_the_registry() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().canonicalize().unwrap().join("atoll.toml");
    std::fs::write(
        &config,
        "[app]\nnode = \"t\"\n[[listener]]\nname = \"web\"\nkind = \"http\"\nip = \"127.0.0.1\"\n\
         port = 0\n[[listener.handlers]]\nhost = \"_\"\nresources = [\"listeners\"]\n",
    )
    .unwrap();
    let atoll = common::process::Atoll::serve(&config);
    let web = atoll.listening(1)[0].2;

    let shown = get_json(web, "/listeners/web");
    let first = check_uptime(&shown["uptime_dhms"]);
    let json = ctl(&config, &["uptime", "web", "--json"]).json();
    let second = check_uptime(&json["uptime_dhms"]);
    assert!(second >= first, "{first} then {second}");
    let json = ctl(&config, &["listeners", "--json"]).json();
    let third = check_uptime(&json[0]["uptime_dhms"]);
    assert!(third >= second, "{second} then {third}");

    // The library's value (`Registry::uptime` gives it too: tests/registry.rs), and its
    // parts for a long uptime.
    let long = atoll::Uptime::from(std::time::Duration::from_secs(
        2 * 86_400 + 3 * 3600 + 4 * 60 + 5,
    ));
    assert_eq!(
        (long.days(), long.hours(), long.minutes(), long.seconds()),
        (2, 3, 4, 5)
    );
    assert_eq!(long.to_string(), "2d 03:04:05");
    check_uptime(&serde_json::to_value(long).unwrap());
}

// ===== setup's read_config_script: include =====

fn listener(name: &str) -> String {
    format!("[[listener]]\nname = \"{name}\"\nkind = \"echo\"\nip = \"127.0.0.1\"\nport = 0\n")
}

/// A new folder with an empty `conf.d` and an `atoll.toml` that includes `include` (the items
/// of a TOML array) and has a listener of its own, `main`: the folder, kept while it lives, its
/// path, and the config's.
fn including(include: &str) -> (tempfile::TempDir, PathBuf, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().canonicalize().unwrap();
    let config = root.join("atoll.toml");
    std::fs::create_dir(root.join("conf.d")).unwrap();
    let text = format!(
        "include = [{include}]\n[app]\nnode = \"t\"\n{}",
        listener("main")
    );
    std::fs::write(&config, text).unwrap();
    (dir, root, config)
}

#[test]
fn include_merges_files_in_order_and_errors_name_the_included_file() {
    let (_dir, root, config) = including(r#""conf.d/*.toml", "extra.toml""#);
    std::fs::write(root.join("conf.d/20-b.toml"), listener("b")).unwrap();
    std::fs::write(
        root.join("conf.d/10-a.toml"),
        listener("a") + &listener("a2"),
    )
    .unwrap();
    std::fs::write(root.join("conf.d/notes.txt"), "not a config").unwrap();
    std::fs::write(root.join("extra.toml"), listener("x")).unwrap();

    let c = Config::load(&config).unwrap();
    let names: Vec<&str> = c.listeners.iter().map(|l| l.name.as_str()).collect();
    assert_eq!(names, ["main", "a", "a2", "b", "x"]);
    assert_eq!(c.listener_files[1], root.join("conf.d/10-a.toml"));
    assert_eq!(c.listener_files[0], config);

    // A bad listener in an included file: the error names that file and the listener.
    std::fs::write(
        root.join("conf.d/20-b.toml"),
        listener("b") + "num_acceptors = \"many\"\n",
    )
    .unwrap();
    let e = Config::load(&config).unwrap_err().to_string();
    let b = root.join("conf.d/20-b.toml");
    assert!(
        e.starts_with(&format!("{}: listener `b`: ", b.display())),
        "{e}"
    );
    assert!(e.contains("num_acceptors"), "{e}");
    // A syntax error: the file and its line.
    std::fs::write(&b, format!("{}name = \n", listener("b"))).unwrap();
    let e = Config::load(&config).unwrap_err().to_string();
    assert!(e.starts_with(&format!("{}: line 6: ", b.display())), "{e}");
    // Only listeners in an included file.
    std::fs::write(&b, "[app]\nnode = \"x\"\n").unwrap();
    let e = Config::load(&config).unwrap_err().to_string();
    assert!(e.starts_with(&format!("{}: line 1: ", b.display())), "{e}");
    assert!(e.contains("[[listener]] tables only"), "{e}");
    // The same name in two files.
    std::fs::write(&b, listener("a")).unwrap();
    let e = Config::load(&config).unwrap_err().to_string();
    assert!(
        e.starts_with(&format!("{}: listener `a`: duplicate name: ", b.display()))
            && e.contains("10-a.toml"),
        "{e}"
    );
    // A file named without wildcards must exist.
    std::fs::remove_file(&b).unwrap();
    std::fs::remove_file(root.join("extra.toml")).unwrap();
    let e = Config::load(&config).unwrap_err().to_string();
    assert!(e.contains("extra.toml: cannot read"), "{e}");
}

#[test]
fn atoll_serve_starts_included_listeners_and_a_reload_adds_a_new_file() {
    let (_dir, root, config) = including(r#""conf.d/*.toml""#);
    std::fs::write(root.join("conf.d/web.toml"), listener("one")).unwrap();
    let atoll = common::process::Atoll::serve(&config);
    let names: Vec<String> = atoll.listening(2).into_iter().map(|l| l.0).collect();
    assert_eq!(names, ["main", "one"]);

    std::fs::write(root.join("conf.d/zz.toml"), listener("two")).unwrap();
    let text = ctl(&config, &["reload"]).ok();
    assert!(text.contains("started two"), "{text}");
    assert_eq!(atoll.listening(1)[0].0, "two");
}
