//! The application environment and variables of a config file: defaults, overrides by the
//! `[app]` table and by OS variables (which win), the directory check, and `$VARIABLE`
//! expansion in every string, listener tables included, with errors naming key and variable.
//! The OS environment is given to each test, so none depends on the real one.

use std::path::{Path, PathBuf};

use atoll::setup::{describe, describe_json, AppEnv, DirProblem, ExpandErrorKind, OsEnv};
use atoll::{Config, ConfigError, ErrorKind};

const ECHO: &str = "[[listener]]\nname = \"echo\"\nkind = \"echo\"\nport = 0\n";

/// A process working in `/work` on host `box`, with no variables.
fn os() -> OsEnv {
    OsEnv::new("/work").with_host_name("box")
}

fn parse(text: &str, os: &OsEnv) -> Result<Config, ConfigError> {
    Config::parse_with(text, Path::new("/etc/atoll/atoll.toml"), os)
}

fn env_of(text: &str, os: &OsEnv) -> AppEnv {
    parse(text, os).unwrap().env
}

fn fails(text: &str, os: &OsEnv) -> ConfigError {
    let e = parse(text, os).unwrap_err();
    assert!(!e.to_string().contains('\n'), "not one line: {e}");
    assert_eq!(e.kind(), ErrorKind::Config, "{e}");
    e
}

// ===== the environment =====

#[test]
fn defaults() {
    let env = env_of(ECHO, &os());
    assert_eq!(env.name, "atoll");
    assert_eq!(env.node, "box");
    // Home is the config file's folder, not the working directory: a control command run
    // anywhere with `--config /etc/atoll/atoll.toml` finds the server's data dir.
    assert_eq!(env.home, Path::new("/etc/atoll"));
    assert_eq!(env.data_dir, Path::new("/etc/atoll/data.box"));
    assert_eq!(env.log_dir, Path::new("/etc/atoll/log.box"));
    assert_eq!(env.priv_dir, Path::new("/etc/atoll"));
    assert!(env.lib_dirs.is_empty());
    assert_eq!((env.log_max_size, env.log_files), (10 * 1024 * 1024, 5));

    // No host name: `nonode`; a config file given by a relative path: its folder from the
    // working directory.
    let c = Config::parse_with(ECHO, Path::new("conf/atoll.toml"), &OsEnv::new("/w")).unwrap();
    assert_eq!(c.env.node, "nonode");
    assert_eq!(c.env.log_dir, Path::new("/w/conf/log.nonode"));
    assert_eq!(c.env.priv_dir, Path::new("/w/conf"));
    let c = Config::parse_with(ECHO, Path::new("atoll.toml"), &OsEnv::new("/w")).unwrap();
    assert_eq!(c.env.priv_dir, Path::new("/w"));
}

const APP: &str = "[app]\nname = \"shop\"\nnode = \"n1\"\nhome = \"/srv/$APP\"\n\
    data_dir = \"$HOME/var\"\nlog_dir = \"logs\"\npriv_dir = \"/usr/share/$APP\"\n\
    lib_dirs = [\"/opt/$APP\", \"lib\"]\n";

#[test]
fn the_app_table_overrides_the_defaults() {
    let env = env_of(&format!("{APP}{ECHO}"), &os());
    assert_eq!((env.name.as_str(), env.node.as_str()), ("shop", "n1"));
    assert_eq!(env.home, Path::new("/srv/shop"));
    assert_eq!(env.data_dir, Path::new("/srv/shop/var"));
    // Relative paths are taken from the config file's folder.
    assert_eq!(env.log_dir, Path::new("/etc/atoll/logs"));
    assert_eq!(env.priv_dir, Path::new("/usr/share/shop"));
    assert_eq!(env.lib_dirs, paths(&["/opt/shop", "/etc/atoll/lib"]));

    // The defaults follow a configured home and node.
    let env = env_of(
        &format!("[app]\nhome = \"/srv\"\nnode = \"n2\"\n{ECHO}"),
        &os(),
    );
    assert_eq!(env.data_dir, Path::new("/srv/data.n2"));
    assert_eq!(env.log_dir, Path::new("/srv/log.n2"));

    let e = fails(&format!("{ECHO}[app]\nhomedir = \"/srv\"\n"), &os());
    assert_eq!(e.line(), Some(6), "{e}");
    assert!(e.to_string().contains("unknown field `homedir`"), "{e}");
}

#[test]
fn the_log_file_limits_are_read_and_checked() {
    let env = env_of(
        &format!("[app]\nlog_max_size = 2000\nlog_files = 0\n{ECHO}"),
        &os(),
    );
    assert_eq!((env.log_max_size, env.log_files), (2000, 0));

    // A limit of 0 would rotate at every line: refused, naming the key and its line.
    let e = fails(
        &format!("{ECHO}[app]\nname = \"shop\"\nlog_max_size = 0\n"),
        &os(),
    );
    assert_eq!(e.line(), Some(7), "{e}");
    assert_eq!(
        e.to_string(),
        "/etc/atoll/atoll.toml: line 7: `app.log_max_size` must be more than 0 bytes"
    );
    // Numbers, not strings, and none below 0.
    for bad in [
        "log_max_size = \"10M\"",
        "log_max_size = -1",
        "log_files = -1",
    ] {
        let e = fails(&format!("[app]\n{bad}\n{ECHO}"), &os());
        assert_eq!(e.line(), Some(2), "{e}");
    }
}

#[test]
fn os_variables_win_over_the_config() {
    let vars = os()
        .with_var("ATOLL_HOME", "/home/a")
        .with_var("ATOLL_DATA_DIR", "d")
        .with_var("ATOLL_LOG_DIR", "/var/log/a")
        .with_var("ATOLL_SETUP_LIBS", "/l1:/l2")
        .with_var("ATOLL_LIBS", "/l2::/l3");
    let env = env_of(&format!("{APP}{ECHO}"), &vars);
    assert_eq!(env.home, Path::new("/home/a"));
    // Relative OS values are taken from the working directory.
    assert_eq!(env.data_dir, Path::new("/work/d"));
    assert_eq!(env.log_dir, Path::new("/var/log/a"));
    assert_eq!(env.lib_dirs, paths(&["/l1", "/l2", "/l3"]));
    assert_eq!(env.lib_dir(), Some(Path::new("/l1")));

    // Only ATOLL_HOME: the other dirs default from it; ATOLL_LIBS alone is enough.
    let vars = os()
        .with_var("ATOLL_HOME", "/home/b")
        .with_var("ATOLL_LIBS", "/lib/b");
    let env = env_of(ECHO, &vars);
    assert_eq!(env.data_dir, Path::new("/home/b/data.box"));
    assert_eq!(env.log_dir, Path::new("/home/b/log.box"));
    assert_eq!(env.lib_dirs, paths(&["/lib/b"]));

    // An empty variable is no override.
    let env = env_of(
        &format!("[app]\nhome = \"/srv\"\n{ECHO}"),
        &os().with_var("ATOLL_HOME", ""),
    );
    assert_eq!(env.home, Path::new("/srv"));
}

// ===== the directories =====

fn env_in(dir: &Path) -> AppEnv {
    AppEnv {
        name: "atoll".into(),
        node: "t".into(),
        home: dir.to_owned(),
        data_dir: dir.join("data.t"),
        log_dir: dir.join("log.t"),
        log_max_size: 1 << 20,
        log_files: 1,
        priv_dir: dir.to_owned(),
        lib_dirs: Vec::new(),
    }
}

#[test]
fn missing_dirs_are_created() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("new/home");
    let vars = OsEnv::new(tmp.path()).with_var("ATOLL_HOME", home.to_str().unwrap());
    let c = Config::parse_with(ECHO, &tmp.path().join("atoll.toml"), &vars).unwrap();
    assert!(!home.exists(), "loading the config creates nothing");
    c.env.verify_directories().unwrap();
    assert!(c.env.data_dir.is_dir() && c.env.log_dir.is_dir());
    assert_eq!(c.env.data_dir, home.join("data.nonode"));
    // Nothing is left behind by the write check, and checking again passes.
    assert_eq!(std::fs::read_dir(&c.env.log_dir).unwrap().count(), 0);
    c.env.verify_directories().unwrap();
}

#[test]
fn a_file_where_the_dir_should_be_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let env = env_in(tmp.path());
    std::fs::write(&env.log_dir, "not a dir").unwrap();
    let e = env.verify_directories().unwrap_err();
    assert_eq!(e.problem(), DirProblem::NotADirectory);
    assert_eq!((e.setting(), e.dir()), (Some("log_dir"), &*env.log_dir));
    assert_eq!(
        e.to_string(),
        format!("log_dir {}: not a directory", env.log_dir.display())
    );
    // data_dir, checked first, was created.
    assert!(env.data_dir.is_dir());

    // A file where a parent should be.
    std::fs::write(tmp.path().join("plain"), "").unwrap();
    let mut env = env_in(tmp.path());
    env.data_dir = tmp.path().join("plain/data");
    let e = env.verify_directories().unwrap_err();
    assert_eq!(e.problem(), DirProblem::NotADirectory);
    assert_eq!(
        e.to_string(),
        format!(
            "data_dir {}: cannot create it: a parent is not a directory",
            env.data_dir.display()
        )
    );
}

#[test]
fn a_read_only_dir_is_named() {
    use std::os::unix::fs::PermissionsExt;

    let tmp = tempfile::tempdir().unwrap();
    let parent = tmp.path().join("ro");
    std::fs::create_dir(&parent).unwrap();
    let existing = parent.join("log.t");
    std::fs::create_dir(&existing).unwrap();
    let set_mode = |dir: &Path, mode| {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode)).unwrap()
    };
    set_mode(&parent, 0o555);
    set_mode(&existing, 0o555);
    // Root (or CAP_DAC_OVERRIDE) writes whatever the mode says: the file-in-the-way test
    // above covers the failure then.
    let probe = parent.join("probe");
    if std::fs::write(&probe, "").is_ok() {
        let _ = std::fs::remove_file(&probe);
        set_mode(&existing, 0o755);
        set_mode(&parent, 0o755);
        eprintln!("skipped: this process writes in read-only directories (root?)");
        return;
    }
    let mut env = env_in(&parent);
    let missing = env.data_dir.clone();
    let created = env.verify_directories().unwrap_err();
    env.data_dir = tmp.path().join("data.t");
    let written = env.verify_directories().unwrap_err();
    set_mode(&existing, 0o755);
    set_mode(&parent, 0o755);

    assert_eq!(created.problem(), DirProblem::PermissionDenied);
    assert_eq!(
        created.to_string(),
        format!(
            "data_dir {}: cannot create it: permission denied",
            missing.display()
        )
    );
    assert_eq!(written.problem(), DirProblem::PermissionDenied);
    assert_eq!(
        written.to_string(),
        format!(
            "log_dir {}: cannot write in it: permission denied",
            existing.display()
        )
    );
}

// ===== expansion =====

#[test]
fn every_string_of_a_listener_is_expanded() {
    let text = r#"
log_events = "$level"

[app]
name = "shop"

[vars]
level = "debug"
addr = "127.0.0.1"
certs = "$PRIV_DIR/certs"
site = "${DATA_DIR}/site"

[[listener]]
name = "$APP-echo"
kind = "echo"
ip = "$addr"
port = 0
unix = "$env(RUNTIME_DIR)/$APP.sock"
[listener.tls]
cert = "$certs/$NODE.pem"
key = "$certs/$NODE-key.pem"
alpn = ["h2", "$env(PROTO)"]

[[listener]]
name = "web"
kind = "http"
port = 0
[[listener.handlers]]
host = "$NODE.example.com"
resources = ["health", { name = "static", dir = "$site", prefix = "/$$" }]
"#;
    let vars = os()
        .with_var("RUNTIME_DIR", "/run/x")
        .with_var("PROTO", "http/1.1");
    let c = parse(text, &vars).unwrap();
    assert_eq!(c.log_events, atoll::LogEvents::All(tracing::Level::DEBUG));
    let echo = &c.listeners[0];
    assert_eq!(echo.name, "shop-echo");
    assert_eq!(echo.options.ip.to_string(), "127.0.0.1");
    assert_eq!(echo.unix.as_deref(), Some(Path::new("/run/x/shop.sock")));
    let tls = echo.tls.as_ref().unwrap();
    assert_eq!(tls.cert, Path::new("/etc/atoll/certs/box.pem"));
    assert_eq!(tls.key, Path::new("/etc/atoll/certs/box-key.pem"));
    assert_eq!(tls.alpn, ["h2", "http/1.1"]);

    let handlers: toml::Value = toml::from_str(
        r#"handlers = [{ host = "box.example.com", resources = ["health", { name = "static", dir = "/etc/atoll/data.box/site", prefix = "/$" }] }]"#,
    )
    .unwrap();
    assert_eq!(
        Some(&c.listeners[1].params["handlers"]),
        handlers.get("handlers")
    );

    assert_eq!(c.vars["site"], "/etc/atoll/data.box/site");
    assert_eq!(c.vars["certs"], "/etc/atoll/certs");
}

#[test]
fn user_variables_refer_to_each_other() {
    let text =
        format!("[vars]\nc = \"$b/c\"\nb = \"${{a}}b\"\na = \"$HOME/a\"\ncost = \"$$5\"\n{ECHO}");
    let c = parse(&text, &os()).unwrap();
    let got: Vec<(&str, &str)> = c.vars.iter().map(|(k, v)| (&**k, &**v)).collect();
    assert_eq!(
        got,
        [
            ("a", "/etc/atoll/a"),
            ("b", "/etc/atoll/ab"),
            ("c", "/etc/atoll/ab/c"),
            ("cost", "$5")
        ]
    );
}

#[test]
fn a_loop_is_named() {
    let e = fails(
        &format!("[vars]\na = \"$b\"\nb = \"$c\"\nc = \"x/$a\"\n{ECHO}"),
        &os(),
    );
    assert_eq!(e.key(), Some("vars.c"));
    assert_eq!(
        e.to_string(),
        "/etc/atoll/atoll.toml: `vars.c`: variable loop: $a -> $b -> $c -> $a"
    );
    let source = std::error::Error::source(&e).unwrap();
    let expand = source.downcast_ref::<atoll::setup::ExpandError>().unwrap();
    assert_eq!(expand.kind(), ExpandErrorKind::Loop);

    // Through the [app] table and a default: data_dir is HOME/data.NODE.
    let e = fails(&format!("[app]\nhome = \"$DATA_DIR/..\"\n{ECHO}"), &os());
    assert_eq!(
        e.to_string(),
        "/etc/atoll/atoll.toml: `app.home`: variable loop: $HOME -> $DATA_DIR -> $HOME"
    );
}

#[test]
fn an_unknown_variable_is_named_with_its_key_and_listener() {
    let text = format!(
        "{ECHO}[[listener]]\nname = \"web\"\nkind = \"echo\"\nport = 0\n[listener.tls]\ncert = \"$CERTS/a.pem\"\nkey = \"k.pem\"\n"
    );
    let e = fails(&text, &os());
    assert_eq!(e.key(), Some("listener[2].tls.cert"));
    assert_eq!((e.listener(), e.listener_index()), (Some("web"), Some(2)));
    let m = e.to_string();
    assert!(
        m.starts_with(
            "/etc/atoll/atoll.toml: listener `web`: `listener[2].tls.cert`: unknown variable `$CERTS` (built in: $APP, $NODE,"
        ),
        "{m}"
    );

    // In an array, in [vars], in a top-level key.
    let e = fails(
        "[[listener]]\nname = \"e\"\nkind = \"echo\"\nport = 0\n[listener.tls]\ncert = \"c\"\nkey = \"k\"\nalpn = [\"h2\", \"$proto\"]\n",
        &os(),
    );
    assert_eq!(e.key(), Some("listener[1].tls.alpn[2]"));
    let e = fails(&format!("[vars]\na = \"${{nope}}\"\n{ECHO}"), &os());
    assert_eq!(e.key(), Some("vars.a"));
    assert!(e.to_string().contains("unknown variable `$nope`"), "{e}");
    let e = fails(&format!("log_events = \"$level\"\n{ECHO}"), &os());
    assert_eq!((e.key(), e.line()), (Some("log_events"), Some(1)));

    // An OS variable that is not set, $LIB_DIR with no lib dir, a stray `$`.
    let e = fails(&format!("[vars]\nd = \"$env(NOPE)/x\"\n{ECHO}"), &os());
    assert_eq!(
        e.to_string(),
        "/etc/atoll/atoll.toml: `vars.d`: `$env(NOPE)` names an OS variable that is not set"
    );
    let e = fails(&format!("[vars]\nd = \"$LIB_DIR/x\"\n{ECHO}"), &os());
    assert!(
        e.to_string()
            .contains("`$LIB_DIR` is used but there is no lib dir"),
        "{e}"
    );
    let ok = parse(
        &format!("[vars]\nd = \"$LIB_DIR/x\"\n{ECHO}"),
        &os().with_var("ATOLL_LIBS", "/opt/l"),
    )
    .unwrap();
    assert_eq!(ok.vars["d"], "/opt/l/x");
    let e = fails(
        "[[listener]]\nname = \"e\"\nkind = \"echo\"\nport = 0\nunix = \"/run/5$\"\n",
        &os(),
    );
    assert!(e.to_string().contains("`$$` for a `$`"), "{e}");
}

#[test]
fn atoll_env_prints_what_the_config_resolves_to() {
    let text = format!("{APP}[vars]\ncerts = \"$PRIV_DIR/certs\"\n{ECHO}");
    let c = parse(&text, &os()).unwrap();
    assert_eq!(
        describe(&c.env, &c.vars),
        "app.name = shop\napp.node = n1\napp.home = /srv/shop\napp.data_dir = /srv/shop/var\n\
         app.log_dir = /etc/atoll/logs\napp.log_max_size = 10485760\napp.log_files = 5\n\
         app.priv_dir = /usr/share/shop\n\
         app.lib_dirs = /opt/shop:/etc/atoll/lib\nvars.certs = /usr/share/shop/certs\n"
    );
    let json: serde_json::Value = serde_json::from_str(&describe_json(&c.env, &c.vars)).unwrap();
    assert_eq!(
        json,
        serde_json::json!({
            "app": {
                "name": "shop",
                "node": "n1",
                "home": "/srv/shop",
                "data_dir": "/srv/shop/var",
                "log_dir": "/etc/atoll/logs",
                "log_max_size": 10485760,
                "log_files": 5,
                "priv_dir": "/usr/share/shop",
                "lib_dirs": ["/opt/shop", "/etc/atoll/lib"],
            },
            "vars": { "certs": "/usr/share/shop/certs" },
        })
    );
    // `atoll env` prints the config's own: the same, and `drain_delay` after the others.
    let text = format!("{APP}drain_delay = \"1s\"\n[vars]\ncerts = \"$PRIV_DIR/certs\"\n{ECHO}");
    let c = parse(&text, &os()).unwrap();
    assert_eq!(
        c.describe(),
        describe(&c.env, &c.vars).replace("\nvars.certs", "\napp.drain_delay = 1000ms\nvars.certs")
    );
    let json: serde_json::Value = serde_json::from_str(&c.describe_json()).unwrap();
    let mut expected: serde_json::Value =
        serde_json::from_str(&describe_json(&c.env, &c.vars)).unwrap();
    expected["app"]["drain_delay"] = "1000ms".into();
    assert_eq!(json, expected);
}

#[test]
fn the_sample_config_still_loads() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("atoll.toml");
    let c = Config::load_with(&path, &os()).unwrap();
    assert_eq!(c.listeners.len(), 4);
    assert_eq!(c.env.priv_dir, Path::new(env!("CARGO_MANIFEST_DIR")));
    assert!(c.vars.is_empty());
}

fn paths(list: &[&str]) -> Vec<PathBuf> {
    list.iter().map(PathBuf::from).collect()
}
