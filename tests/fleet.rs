//! A fleet behind HAProxy, as operators run one: three `atoll serve` nodes on loopback
//! addresses of their own (127.0.0.11 to .13) behind Debian's HAProxy (installed by .ci/run),
//! which sends `send-proxy-v2` and checks each node's `/readyz` on its admin listener. Under load through HAProxy each
//! node is upgraded in turn and one is restarted with SIGTERM, with no failed request; then
//! one is killed with `kill -9`, and the test reports how many requests failed before HAProxy
//! took it out of rotation.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::control::ctl;
use common::process::{kill9, terminate, wait_exit, Atoll, Reaper};
use common::WAIT;

/// HAProxy's health check interval: a node that fails two checks in a row is out.
const CHECK_INTERVAL_MS: u64 = 200;

/// One node: its own directory, config and process.
struct Node {
    name: String,
    config: PathBuf,
    ip: String,
    /// The port its `web` listener got at the first start, kept at restarts.
    port: u16,
    /// Its admin listener's port, where HAProxy checks `/readyz`.
    admin: u16,
    /// The process serving now (after upgrades, not our child).
    pid: u32,
    first: Option<Atoll>,
}

impl Node {
    fn config_text(name: &str, ip: &str, port: u16, admin: u16) -> String {
        // drain_delay above HAProxy's inter x fall (2 x 200 ms): a node stopping with SIGTERM
        // is out of rotation before it stops accepting.
        format!(
            "[app]\nnode = \"{name}\"\ndrain_delay = \"1s\"\n\n\
             [[listener]]\nname = \"admin\"\nkind = \"admin\"\nip = \"{ip}\"\nport = {admin}\n\n\
             [[listener]]\nname = \"web\"\nkind = \"http\"\nip = \"{ip}\"\nport = {port}\n\
             proxy_protocol = \"required\"\nproxy_trusted = [\"127.0.0.0/8\"]\n\
             shutdown_timeout = \"5s\"\n\
             [[listener.handlers]]\nhost = \"_\"\nresources = [\"health\", \
             {{ name = \"static\", dir = \"files\", prefix = \"/files\" }}]\n"
        )
    }

    fn start(root: &Path, name: &str, ip: &str, reaper: &Reaper) -> Node {
        let dir = root.join(name);
        std::fs::create_dir_all(dir.join("files")).unwrap();
        std::fs::write(dir.join("files/node.txt"), name).unwrap();
        let config = dir.join("atoll.toml");
        std::fs::write(&config, Node::config_text(name, ip, 0, 0)).unwrap();
        let atoll = Atoll::serve(&config);
        reaper.add(atoll.pid());
        let listening = atoll.listening(2);
        let port_of = |name: &str| listening.iter().find(|l| l.0 == name).unwrap().2.port();
        let (port, admin) = (port_of("web"), port_of("admin"));
        // Restarts come back on the same ports.
        std::fs::write(&config, Node::config_text(name, ip, port, admin)).unwrap();
        Node {
            name: name.to_owned(),
            config,
            ip: ip.to_owned(),
            port,
            admin,
            pid: atoll.pid(),
            first: Some(atoll),
        }
    }

    fn upgrade(&mut self, reaper: &Reaper) {
        let binary = env!("CARGO_BIN_EXE_atoll");
        let answer = ctl(&self.config, &["upgrade", "--path", binary, "--json"]).json();
        let new = answer["pid"].as_u64().unwrap() as u32;
        reaper.add(new);
        wait_exit(self.pid, WAIT * 2);
        self.pid = new;
    }

    /// SIGTERM, then a fresh `atoll serve` on the same address.
    fn restart(&mut self, reaper: &Reaper) {
        terminate(self.pid);
        let atoll = Atoll::serve(&self.config);
        reaper.add(atoll.pid());
        let ports: Vec<u16> = atoll.listening(2).iter().map(|l| l.2.port()).collect();
        assert!(
            ports.contains(&self.port) && ports.contains(&self.admin),
            "{ports:?}"
        );
        self.pid = atoll.pid();
        self.first = Some(atoll);
    }

    fn kill(&mut self) {
        kill9(self.pid);
    }
}

/// HAProxy in the foreground, killed on drop.
struct Haproxy(Child);

impl Haproxy {
    fn start(dir: &Path, front: SocketAddr, nodes: &[Node]) -> Haproxy {
        let servers: String = nodes
            .iter()
            .map(|n| {
                format!(
                    "    server {} {}:{} check port {}\n",
                    n.name, n.ip, n.port, n.admin
                )
            })
            .collect();
        let config = format!(
            "global\n    maxconn 4096\n\n\
             defaults\n    mode http\n    timeout connect 1s\n    timeout client 10s\n\
             \x20   timeout server 10s\n    retries 3\n    option redispatch 1\n\
             \x20   retry-on conn-failure empty-response\n\n\
             frontend fe\n    bind {front}\n    default_backend nodes\n\n\
             backend nodes\n    balance roundrobin\n    option httpchk GET /readyz\n\
             \x20   http-check expect status 200\n\
             \x20   default-server send-proxy-v2 inter {CHECK_INTERVAL_MS}ms fall 2 rise 1\n\
             {servers}"
        );
        let path = dir.join("haproxy.cfg");
        std::fs::write(&path, config).unwrap();
        // Debian puts it in /usr/sbin, which a non-root PATH may lack.
        let binary = match Path::new("/usr/sbin/haproxy").exists() {
            true => "/usr/sbin/haproxy",
            false => "haproxy",
        };
        let haproxy = Command::new(binary)
            .arg("-db")
            .arg("-f")
            .arg(&path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("HAProxy runs (.ci/run installs Debian's haproxy)");
        Haproxy(haproxy)
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One request through HAProxy on a kept-alive connection: the node that answered.
fn get(stream: &mut BufReader<TcpStream>) -> Result<String, String> {
    stream
        .get_mut()
        .write_all(b"GET /files/node.txt HTTP/1.1\r\nhost: fleet\r\n\r\n")
        .map_err(|e| format!("write: {e}"))?;
    let mut status = String::new();
    stream
        .read_line(&mut status)
        .map_err(|e| format!("read: {e}"))?;
    if !status.starts_with("HTTP/1.1 200") {
        return Err(format!("status {status:?}"));
    }
    let mut length = 0;
    loop {
        let mut line = String::new();
        stream
            .read_line(&mut line)
            .map_err(|e| format!("read: {e}"))?;
        if line == "\r\n" || line.is_empty() {
            break;
        }
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            length = v.trim().parse().map_err(|_| format!("length {line:?}"))?;
        }
    }
    let mut body = vec![0; length];
    stream
        .read_exact(&mut body)
        .map_err(|e| format!("body: {e}"))?;
    Ok(String::from_utf8_lossy(&body).into_owned())
}

/// Clients asking through HAProxy without pause, each on a kept-alive connection (a new one
/// after a failure). Counts answers per node and failures, with when each failure happened.
struct Load {
    stop: Arc<AtomicBool>,
    answered: Arc<AtomicU64>,
    by_node: Arc<Mutex<std::collections::BTreeMap<String, u64>>>,
    failures: Arc<Mutex<Vec<(Instant, String)>>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Load {
    fn start(front: SocketAddr, clients: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let answered = Arc::new(AtomicU64::new(0));
        let by_node = Arc::new(Mutex::new(std::collections::BTreeMap::new()));
        let failures = Arc::new(Mutex::new(Vec::new()));
        let threads = (0..clients)
            .map(|_| {
                let (stop, answered, by_node, failures) = (
                    stop.clone(),
                    answered.clone(),
                    by_node.clone(),
                    failures.clone(),
                );
                std::thread::spawn(move || {
                    let connect = || {
                        let s = TcpStream::connect_timeout(&front, WAIT).ok()?;
                        s.set_read_timeout(Some(WAIT)).ok()?;
                        Some(BufReader::new(s))
                    };
                    let mut conn = None;
                    // Bounded: at most a million requests, or until told to stop.
                    for _ in 0..1_000_000 {
                        if stop.load(Ordering::Relaxed) {
                            break;
                        }
                        if conn.is_none() {
                            conn = connect();
                        }
                        let result = match conn.as_mut() {
                            Some(c) => get(c),
                            None => Err("connect to HAProxy failed".to_owned()),
                        };
                        match result {
                            Ok(node) => {
                                answered.fetch_add(1, Ordering::Relaxed);
                                *by_node.lock().unwrap().entry(node).or_default() += 1;
                            }
                            Err(e) => {
                                failures.lock().unwrap().push((Instant::now(), e));
                                conn = None;
                                std::thread::sleep(Duration::from_millis(5));
                            }
                        }
                    }
                })
            })
            .collect();
        Load {
            stop,
            answered,
            by_node,
            failures,
            threads,
        }
    }

    fn failures_since(&self, since: Instant) -> Vec<String> {
        let failures = self.failures.lock().unwrap();
        failures
            .iter()
            .filter(|(at, _)| *at >= since)
            .map(|(_, e)| e.clone())
            .collect()
    }

    /// Waits until every node in `names` has answered `n` more requests than now.
    fn wait_for_nodes(&self, names: &[&str], n: u64) {
        let start: Vec<u64> = {
            let by = self.by_node.lock().unwrap();
            names
                .iter()
                .map(|m| by.get(*m).copied().unwrap_or(0))
                .collect()
        };
        let deadline = Instant::now() + WAIT;
        loop {
            let done = {
                let by = self.by_node.lock().unwrap();
                names
                    .iter()
                    .zip(&start)
                    .all(|(m, s)| by.get(*m).copied().unwrap_or(0) >= s + n)
            };
            if done {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "not every node of {names:?} answered: {:?}",
                self.by_node.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn finish(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            t.join().unwrap();
        }
        self.answered.load(Ordering::Relaxed)
    }
}

fn free_port(ip: &str) -> u16 {
    std::net::TcpListener::bind((ip, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn a_fleet_behind_haproxy_upgrades_node_by_node_and_loses_nothing() {
    let root = tempfile::tempdir().unwrap();
    let root = root.path().canonicalize().unwrap();
    let reaper = Reaper::default();
    let mut nodes: Vec<Node> = [
        ("n1", "127.0.0.11"),
        ("n2", "127.0.0.12"),
        ("n3", "127.0.0.13"),
    ]
    .iter()
    .map(|(name, ip)| Node::start(&root, name, ip, &reaper))
    .collect();
    let front: SocketAddr = format!("127.0.0.10:{}", free_port("127.0.0.10"))
        .parse()
        .unwrap();
    let _haproxy = Haproxy::start(&root, front, &nodes);

    let load = Load::start(front, 4);
    let all = ["n1", "n2", "n3"];
    load.wait_for_nodes(&all, 20);
    let start = Instant::now();

    // A rolling upgrade, node by node, then a restart with SIGTERM.
    for node in nodes.iter_mut() {
        node.upgrade(&reaper);
        load.wait_for_nodes(&all, 20);
    }
    nodes[1].restart(&reaper);
    load.wait_for_nodes(&all, 20);
    let failed = load.failures_since(start);
    assert!(
        failed.is_empty(),
        "{} requests failed during the rolling upgrade and restart: {:?}",
        failed.len(),
        &failed[..failed.len().min(10)]
    );

    // kill -9: HAProxy takes the node out within its checks; what failed in that window is
    // reported, and nothing fails once it is out.
    let killed_at = Instant::now();
    nodes[2].kill();
    std::thread::sleep(Duration::from_millis(CHECK_INTERVAL_MS * 4));
    let window = load.failures_since(killed_at);
    let after = Instant::now();
    load.wait_for_nodes(&["n1", "n2"], 50);
    let late = load.failures_since(after);
    let answered = load.finish();
    eprintln!(
        "fleet: {answered} requests answered; 0 failed during 3 upgrades and a SIGTERM restart; \
         {} failed in the {} ms after kill -9 ({:?}); {} after",
        window.len(),
        CHECK_INTERVAL_MS * 4,
        &window[..window.len().min(5)],
        late.len()
    );
    assert!(
        late.is_empty(),
        "requests failed after the node was out: {late:?}"
    );
    for node in &nodes[..2] {
        terminate(node.pid);
    }
}
