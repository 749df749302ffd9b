//! A config checked without starting anything: each listener's kind and settings, read as
//! its kind's check reads them ([`Registry::add_check`]), and the address it would listen on.
//! Two listeners that would share an address are refused: without `SO_REUSEPORT` the second
//! would fail to bind once the first runs, and with it (`num_listen_sockets` over 1) both
//! would bind, and the kernel would hand each some of the other's connections.
//!
//! `atoll check` prints [`Config::check`]; [`Config::start`] and a reload run
//! [`Config::verify`] before they start anything.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use crate::config::{Config, ConfigError};
use crate::options::ServerOptions;
use crate::registry::Registry;
use crate::spec::ListenerSpec;

/// Where a listener would listen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenAt {
    /// A TCP address; port 0 takes any free port.
    Tcp(SocketAddr),
    /// A Unix socket's path.
    Unix(PathBuf),
}

impl fmt::Display for ListenAt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ListenAt::Tcp(addr) => write!(f, "{addr}"),
            ListenAt::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

impl ListenAt {
    /// Whether two listeners here could not both listen: the same Unix path, or the same TCP
    /// port (not 0) on addresses that meet. An unspecified IPv6 address (`::`) takes IPv4
    /// too (atoll's IPv6 sockets are dual-stack); `0.0.0.0` takes every IPv4 address.
    pub fn overlaps(&self, other: &ListenAt) -> bool {
        match (self, other) {
            (ListenAt::Unix(a), ListenAt::Unix(b)) => a == b,
            (ListenAt::Tcp(a), ListenAt::Tcp(b)) => {
                a.port() != 0 && a.port() == b.port() && ips_meet(a.ip(), b.ip())
            }
            _ => false,
        }
    }
}

fn ips_meet(a: IpAddr, b: IpAddr) -> bool {
    let covers =
        |wide: IpAddr, other: IpAddr| wide.is_unspecified() && (wide.is_ipv6() || other.is_ipv4());
    a == b || covers(a, b) || covers(b, a)
}

/// Where the listener of `spec` would listen, from the server options its kind's check gave
/// (`None`: the kind has no check, and only its launcher knows).
fn listen_at(spec: &ListenerSpec, options: Option<ServerOptions>) -> Option<ListenAt> {
    match (&spec.unix, options) {
        (Some(path), _) => Some(ListenAt::Unix(path.clone())),
        (None, Some(o)) => Some(ListenAt::Tcp(SocketAddr::new(o.ip, o.port))),
        (None, None) => None,
    }
}

/// Whether the listeners of `a` and `b` would listen on one and the same fixed address (a
/// TCP port 0 is never the same), as their kinds' checks say; the kinds must have checks.
pub(crate) fn same_place(registry: &Registry, a: &ListenerSpec, b: &ListenerSpec) -> bool {
    let at = |spec| {
        let options = registry.check_spec(spec).ok().flatten()?;
        listen_at(spec, Some(options))
    };
    matches!((at(a), at(b)), (Some(x), Some(y)) if x == y && x.overlaps(&y))
}

/// One listener of a config, as [`Config::check`] found it.
#[derive(Debug)]
pub struct ListenerCheck {
    /// The listener's name.
    pub name: String,
    /// Its kind.
    pub kind: String,
    /// Where it would listen, once its kind's check has said (`None` when the check failed,
    /// or the kind has none).
    pub at: Option<ListenAt>,
    /// Whether its kind checked its settings; `false` when the kind registered no check, so
    /// only its name and TLS files were.
    pub settings_checked: bool,
    /// What is wrong with it, naming the file and the listener.
    pub error: Option<ConfigError>,
}

impl Config {
    /// Checks every listener without starting anything (nothing is bound, no file is
    /// created, the stores are not opened): its kind is known to `registry`, its TLS files
    /// load, its kind's check accepts its settings, and no listener before it would listen
    /// where it would. One entry per listener, in file order; every fault is reported, not
    /// only the first.
    pub fn check(&self, registry: &Registry) -> Vec<ListenerCheck> {
        let mut checks: Vec<ListenerCheck> = Vec::with_capacity(self.listeners.len());
        for (i, spec) in self.listeners.iter().enumerate() {
            let mut check = ListenerCheck {
                name: spec.name.clone(),
                kind: spec.kind.clone(),
                at: None,
                settings_checked: false,
                error: None,
            };
            match registry.check_spec(spec) {
                Err(e) => check.error = Some(self.listener_fault(i, e)),
                Ok(options) => {
                    check.settings_checked = options.is_some();
                    check.at = listen_at(spec, options);
                }
            }
            if let Some(at) = &check.at {
                let taken = checks.iter().find_map(|c| {
                    let theirs = c.at.as_ref().filter(|a| a.overlaps(at))?;
                    Some((c, theirs))
                });
                if let (Some((first, theirs)), None) = (taken, &check.error) {
                    let why = match theirs == at {
                        true => format!(
                            "listens on {at}, as listener `{}` does: two listeners cannot \
                             share an address",
                            first.name
                        ),
                        false => format!(
                            "listens on {at}, which takes in listener `{}`'s {theirs}: two \
                             listeners cannot share an address",
                            first.name
                        ),
                    };
                    check.error = Some(self.listener_invalid(i, why));
                }
            }
            checks.push(check);
        }
        checks
    }

    /// [`check`](Self::check)'s first fault, if any.
    pub fn verify(&self, registry: &Registry) -> Result<(), ConfigError> {
        match self.check(registry).into_iter().find_map(|c| c.error) {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kind_without_a_check_is_checked_by_name_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("atoll.toml");
        let text = "[[listener]]\nname = \"mine\"\nkind = \"custom\"\nport = 7000\n\
                    [[listener]]\nname = \"e\"\nkind = \"echo\"\nport = 7000\n\
                    [[listener]]\nname = \"typo\"\nkind = \"custon\"\n";
        std::fs::write(&path, text).unwrap();
        let config = Config::load(&path).unwrap();
        let registry = Registry::new();
        registry.add_kind("custom", |spec| {
            spec.server(crate::server::echo::Echo)?.start()
        });
        let checks = config.check(&registry);
        // Its address is its launcher's business: it takes part in no address check.
        assert!(!checks[0].settings_checked);
        assert_eq!(checks[0].at, None);
        assert!(checks[0].error.is_none());
        assert!(checks[1].settings_checked);
        assert_eq!(checks[1].at, Some(tcp("[::]:7000")));
        assert!(checks[1].error.is_none());
        let fault = checks[2].error.as_ref().unwrap().to_string();
        assert!(
            fault.contains("unknown kind `custon`") && fault.contains("custom"),
            "{fault}"
        );
        assert!(config.verify(&registry).is_err());
    }

    fn tcp(addr: &str) -> ListenAt {
        ListenAt::Tcp(addr.parse().unwrap())
    }

    #[test]
    fn addresses_overlap_as_the_kernel_would_refuse_them() {
        assert!(tcp("127.0.0.1:80").overlaps(&tcp("127.0.0.1:80")));
        assert!(!tcp("127.0.0.1:80").overlaps(&tcp("127.0.0.1:81")));
        assert!(!tcp("127.0.0.1:80").overlaps(&tcp("127.0.0.2:80")));
        // Any free port: never the same one.
        assert!(!tcp("127.0.0.1:0").overlaps(&tcp("127.0.0.1:0")));
        // Wildcards.
        assert!(tcp("0.0.0.0:80").overlaps(&tcp("10.0.0.1:80")));
        assert!(tcp("10.0.0.1:80").overlaps(&tcp("0.0.0.0:80")));
        assert!(tcp("[::]:80").overlaps(&tcp("127.0.0.1:80")));
        assert!(tcp("[::1]:80").overlaps(&tcp("[::]:80")));
        assert!(!tcp("0.0.0.0:80").overlaps(&tcp("[::1]:80")));
        assert!(!tcp("[::1]:80").overlaps(&tcp("127.0.0.1:80")));
        let unix = |p: &str| ListenAt::Unix(p.into());
        assert!(unix("/run/a.sock").overlaps(&unix("/run/a.sock")));
        assert!(!unix("/run/a.sock").overlaps(&unix("/run/b.sock")));
        assert!(!unix("/run/a.sock").overlaps(&tcp("127.0.0.1:80")));
    }
}
