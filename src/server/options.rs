//! Server options: every knob of a listener, with its default, readable from TOML under the
//! same names.
//!
//! Durations are written in config files as a number with a unit (`"500ms"`, `"15s"`, `"2m"`)
//! or as a bare integer of milliseconds.

use std::net::{IpAddr, Ipv6Addr};
use std::time::Duration;

use ipnet::IpNet;
use serde::Deserialize;

use crate::proxy::ProxyProtocol;

/// How many acceptor tasks share each listening socket by default.
///
/// ThousandIsland runs 100 acceptor processes; on tokio every task waiting on the same socket is
/// woken for each incoming connection, so more acceptors than listening sockets only add wake-ups.
/// The accept benchmark (`bench/README.md`) measured 1, 2, 4 and 100 acceptors on one socket:
/// 1 was as fast as any other count and 100 was slowest, so the default is 1. Use
/// [`ServerOptions::num_listen_sockets`] to spread accepting over cores.
pub const DEFAULT_NUM_ACCEPTORS: usize = 1;

/// Options of one listener.
///
/// `ServerOptions::default()` gives the documented defaults; every field can also be set in a
/// config file's `[[listener]]` table under the same name.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerOptions {
    /// The IP address to listen on. Default is `::` (all interfaces, IPv6 and IPv4 alike; falls
    /// back to `0.0.0.0` where IPv6 is unavailable).
    pub ip: IpAddr,
    /// The TCP port to listen on; `0` picks any free port, which
    /// [`ServerHandle::local_addr`](crate::ServerHandle::local_addr) reports. Default is 4000.
    pub port: u16,
    /// Acceptor tasks per listening socket. Default is [`DEFAULT_NUM_ACCEPTORS`] (1).
    pub num_acceptors: usize,
    /// Listening sockets bound to the same address with `SO_REUSEPORT`, so the kernel spreads
    /// new connections over them. Default is 1.
    pub num_listen_sockets: usize,
    /// The most connections open at once. A connection accepted beyond it waits for a free slot
    /// for up to `max_connections_retry_wait` × `max_connections_retry_count`, then is closed
    /// and reported. Default is 16,384.
    pub max_connections: usize,
    /// One retry period of a connection waiting for a free slot. Default is 1 s.
    #[serde(with = "duration")]
    pub max_connections_retry_wait: Duration,
    /// How many retry periods a connection waits for a free slot. Default is 5.
    pub max_connections_retry_count: u32,
    /// How long a connection may stay silent before the handler's timeout callback runs.
    /// Only bytes received reset it; the server's own sends do not. Default is 60 s.
    #[serde(with = "duration")]
    pub read_timeout: Duration,
    /// How long a TLS handshake may take before the connection is closed. Default is 5 s.
    #[serde(with = "duration")]
    pub handshake_timeout: Duration,
    /// How long [`stop`](crate::ServerHandle::stop) waits for connections to end by themselves
    /// before closing the rest, when no other timeout is given. Default is 15 s.
    #[serde(with = "duration")]
    pub shutdown_timeout: Duration,
    /// How long a send may wait for the peer to make room before it fails. Default is 30 s.
    #[serde(with = "duration")]
    pub send_timeout: Duration,
    /// The listen backlog. Default is 1024.
    pub backlog: u32,
    /// `TCP_NODELAY` on every connection. Default is true.
    pub nodelay: bool,
    /// TCP keepalive idle time; unset leaves keepalive off. Default is off.
    #[serde(with = "opt_duration")]
    pub keepalive: Option<Duration>,
    /// `SO_RCVBUF` in bytes; unset keeps the system's. Default is unset.
    pub recv_buffer_size: Option<usize>,
    /// `SO_SNDBUF` in bytes; unset keeps the system's. Default is unset.
    pub send_buffer_size: Option<usize>,
    /// Size of the buffer a connection borrows for one read, released again while it is idle.
    /// Default is 8192.
    pub read_buffer_size: usize,
    /// Whether every connection starts with a PROXY protocol header (version 1 or 2) naming
    /// the client, as a load balancer sends it (HAProxy's `send-proxy-v2`): `"off"` or
    /// `"required"`. With `"required"`, the client's address stands for the socket's peer
    /// everywhere (handler `Socket`, HTTP `Request`, RPC `Ctx`, telemetry, logs,
    /// `max_connections_per_ip`). Default is `"off"`.
    pub proxy_protocol: ProxyProtocol,
    /// The source networks allowed to send a PROXY header, such as `["10.0.0.0/8"]`: a
    /// connection from anywhere else is closed and counted. Default is empty: any source,
    /// which is safe only where nothing but the balancer can reach the listener.
    pub proxy_trusted: Vec<IpNet>,
    /// How long a connection has to send its whole PROXY header. Default is 5 s.
    #[serde(with = "duration")]
    pub proxy_header_timeout: Duration,
    /// The most connections open at once from one client IP address (the one a PROXY header
    /// gives, with `proxy_protocol`); a connection over it is closed at once and counted.
    /// Connections handed over at an upgrade count but are never refused. Default is unset:
    /// no limit but `max_connections`.
    pub max_connections_per_ip: Option<usize>,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            ip: IpAddr::V6(Ipv6Addr::UNSPECIFIED),
            port: 4000,
            num_acceptors: DEFAULT_NUM_ACCEPTORS,
            num_listen_sockets: 1,
            max_connections: 16_384,
            max_connections_retry_wait: Duration::from_secs(1),
            max_connections_retry_count: 5,
            read_timeout: Duration::from_secs(60),
            handshake_timeout: Duration::from_secs(5),
            shutdown_timeout: Duration::from_secs(15),
            send_timeout: Duration::from_secs(30),
            backlog: 1024,
            nodelay: true,
            keepalive: None,
            recv_buffer_size: None,
            send_buffer_size: None,
            read_buffer_size: 8192,
            proxy_protocol: ProxyProtocol::Off,
            proxy_trusted: Vec::new(),
            proxy_header_timeout: Duration::from_secs(5),
            max_connections_per_ip: None,
        }
    }
}

impl ServerOptions {
    /// Checks values that would make a listener useless, naming the field at fault.
    pub fn validate(&self) -> Result<(), String> {
        let positive = [
            ("num_acceptors", self.num_acceptors),
            ("num_listen_sockets", self.num_listen_sockets),
            ("max_connections", self.max_connections),
            ("read_buffer_size", self.read_buffer_size),
        ];
        for (name, value) in positive {
            if value == 0 {
                return Err(format!("`{name}` must be at least 1"));
            }
        }
        if self.max_connections_per_ip == Some(0) {
            return Err("`max_connections_per_ip` must be at least 1".into());
        }
        if !self.proxy_trusted.is_empty() && self.proxy_protocol == ProxyProtocol::Off {
            return Err(
                "`proxy_trusted` needs `proxy_protocol = \"required\"`: without it no header is read"
                    .into(),
            );
        }
        Ok(())
    }
}

/// Parses `"250ms"`, `"15s"`, `"2m"`, `"1h"` or a bare number of milliseconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a duration (try \"500ms\" or \"15s\")"))?;
    let scale = match unit.trim() {
        "" | "ms" => 0.001,
        "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        other => return Err(format!("unknown duration unit `{other}` in `{text}`")),
    };
    Duration::try_from_secs_f64(value * scale).map_err(|e| format!("`{text}`: {e}"))
}

pub(crate) mod duration {
    use serde::{Deserialize, Deserializer};
    use std::time::Duration;

    #[derive(Deserialize)]
    #[serde(untagged)]
    pub(super) enum Raw {
        Millis(u64),
        Text(String),
    }

    impl Raw {
        pub(super) fn into_duration<E: serde::de::Error>(self) -> Result<Duration, E> {
            match self {
                Raw::Millis(ms) => Ok(Duration::from_millis(ms)),
                Raw::Text(t) => super::parse_duration(&t).map_err(E::custom),
            }
        }
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Raw::deserialize(d)?.into_duration()
    }
}

mod opt_duration {
    use serde::{Deserialize, Deserializer};
    use std::time::Duration;

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Duration>, D::Error> {
        super::duration::Raw::deserialize(d)?
            .into_duration()
            .map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("15s"), Ok(Duration::from_secs(15)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("ten")
            .unwrap_err()
            .contains("not a duration"));
        assert!(parse_duration("5 years")
            .unwrap_err()
            .contains("unknown duration unit"));
    }

    #[test]
    fn options_read_from_toml_with_the_same_names() {
        let opts: ServerOptions = toml::from_str(
            "port = 0\nread_timeout = \"2s\"\nshutdown_timeout = 500\nkeepalive = \"30s\"",
        )
        .unwrap();
        assert_eq!(opts.port, 0);
        assert_eq!(opts.read_timeout, Duration::from_secs(2));
        assert_eq!(opts.shutdown_timeout, Duration::from_millis(500));
        assert_eq!(opts.keepalive, Some(Duration::from_secs(30)));
        assert_eq!(opts.backlog, 1024);
        let err = toml::from_str::<ServerOptions>("prot = 1").unwrap_err();
        assert!(err.to_string().contains("unknown field `prot`"), "{err}");
    }
}

/// The keys of a [`ServerOptions`] table, as serde knows them. A listener table's other keys
/// belong to its kind (an HTTP listener's `static_dir`, say).
pub(crate) fn field_names() -> &'static [&'static str] {
    fields_of::<ServerOptions>()
}

/// An options table as `T`, a struct whose fields all have defaults. serde names a value of
/// the wrong type without its key; the key is then found by reading each one alone, and put in
/// front of the message.
pub(crate) fn from_table<T: serde::de::DeserializeOwned>(table: toml::Table) -> Result<T, String> {
    let error = match T::deserialize(toml::Value::Table(table.clone())) {
        Ok(options) => return Ok(options),
        Err(e) => e.message().to_owned(),
    };
    let culprit = table.into_iter().find_map(|(key, value)| {
        let alone = toml::Table::from_iter([(key.clone(), value)]);
        T::deserialize(toml::Value::Table(alone))
            .is_err()
            .then_some(key)
    });
    Err(match culprit {
        Some(key) if !error.contains(&format!("`{key}`")) => format!("`{key}`: {error}"),
        _ => error,
    })
}

/// The field names serde's derive gives a struct, read by asking it to deserialize.
pub(crate) fn fields_of<'de, T: Deserialize<'de>>() -> &'static [&'static str] {
    let mut probe = FieldProbe(&[]);
    let _ = T::deserialize(&mut probe);
    probe.0
}

/// A deserializer that only records the field list a derived struct asks for, so the list is
/// never written out by hand.
struct FieldProbe(&'static [&'static str]);

#[derive(Debug)]
struct Probed;

impl std::fmt::Display for Probed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("probed")
    }
}

impl std::error::Error for Probed {}

impl serde::de::Error for Probed {
    fn custom<T: std::fmt::Display>(_: T) -> Self {
        Probed
    }
}

impl<'de> serde::Deserializer<'de> for &mut FieldProbe {
    type Error = Probed;

    fn deserialize_any<V: serde::de::Visitor<'de>>(self, _: V) -> Result<V::Value, Probed> {
        Err(Probed)
    }

    fn deserialize_struct<V: serde::de::Visitor<'de>>(
        self,
        _: &'static str,
        fields: &'static [&'static str],
        _: V,
    ) -> Result<V::Value, Probed> {
        self.0 = fields;
        Err(Probed)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier
        ignored_any
    }
}

#[cfg(test)]
mod field_tests {
    use super::*;

    #[test]
    fn knows_the_option_keys() {
        let f = super::field_names();
        assert!(f.contains(&"port") && f.contains(&"read_timeout"), "{f:?}");
        assert!(!f.contains(&"static_dir"));
    }

    #[test]
    fn a_value_of_the_wrong_type_is_named_by_its_key() {
        let table = |text: &str| toml::from_str::<toml::Table>(text).unwrap();
        let err =
            from_table::<ServerOptions>(table("port = 1\nmax_connections = \"lots\"")).unwrap_err();
        assert!(err.starts_with("`max_connections`: "), "{err}");
        let err = from_table::<ServerOptions>(table("prot = 1")).unwrap_err();
        assert_eq!(err.matches("`prot`").count(), 1, "{err}");
        let opts = from_table::<ServerOptions>(table("port = 7")).unwrap();
        assert_eq!(opts.port, 7);
    }
}
