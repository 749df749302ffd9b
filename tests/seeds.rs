//! The last rows of the seed systems (issue 21): setup's `find_env_vars` (`atoll env --find`
//! and [`Config::find_env_vars`]), and leptus's `listener_uptime` as a value a program reads.

mod common;

use std::path::Path;

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
