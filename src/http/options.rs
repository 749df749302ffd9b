//! [`HttpOptions`]: what an HTTP listener adds to the socket server's options, each with its
//! default, readable from a `[[listener]]` table.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::file_cache::CacheOptions;

/// An HTTP listener's own settings. The socket server's ([`ServerOptions`](crate::ServerOptions))
/// apply too: acceptors, limits, TLS, shutdown timeout.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct HttpOptions {
    /// How long a client has to send a request's line and headers, counted from its first
    /// byte (and from the connect, for the first request). A client that is slower is
    /// disconnected: this is what stops slowloris. Default is 10 s.
    #[serde(with = "crate::options::duration")]
    pub header_read_timeout: Duration,
    /// How long a keep-alive connection may wait for its next request before it is closed.
    /// It is checked every `header_read_timeout` (or `idle_timeout`, if shorter), so a
    /// connection may stay up to that much longer. Default is 60 s.
    #[serde(with = "crate::options::duration")]
    pub idle_timeout: Duration,
    /// The most bytes a request's line and headers may take; more is answered 431.
    /// Default is 32 KiB (at least 8 KiB is used).
    pub max_header_size: usize,
    /// The most header fields a request may have; more is answered 431 (HTTP/1.1) or
    /// refused with 431 (HTTP/2). hyper parses HTTP/1.1 headers into a buffer of this many on
    /// the stack at the default; any other value puts it on the heap, one allocation per
    /// request (hyper measured some 5 % slower). Default is 100.
    pub max_headers: usize,
    /// The most bytes a request body may have; more is answered 413. A body is read into a
    /// buffer that grows with the bytes that arrive, never reserved from the length the
    /// client announces. Default is 8 MiB.
    pub max_body_size: usize,
    /// How long reading a request body may wait for its next bytes. A body that stops
    /// arriving for this long is answered 408 and its connection closed (a mounted service
    /// reading the body sees an error instead). It counts only time spent waiting on the
    /// client: a slow resource or service delays nothing. Default is 30 s.
    #[serde(with = "crate::options::duration")]
    pub body_read_timeout: Duration,
    /// Whether HTTP/2 is served: through ALPN `h2` over TLS, and with prior knowledge (h2c) on
    /// plain ports. Default is `true`.
    pub http2: bool,
    /// A directory whose files are served on every host for the paths no route takes
    /// (index.html for `/`). Absolute, or relative to the config file's folder (the app's
    /// priv dir). Default is none.
    pub static_dir: Option<PathBuf>,
    /// How `static_dir` caches what it finds on disk: the budget, and how long an entry is
    /// trusted before the file is checked again (the bound on serving a changed file as it
    /// was). Default is [`CacheOptions::default()`]: 64 MiB, 1 s, contents held for files up
    /// to 256 KiB.
    pub static_cache: CacheOptions,
    /// How long a stopping listener takes to send its keep-alive clients away. Each
    /// connection gets its own moment within this window, spread evenly; from then on its
    /// answers say `connection: close` (HTTP/2: GOAWAY). Clients then reconnect a few at a
    /// time instead of all at once, so the listener that takes over after an upgrade or a
    /// reload (or the next server behind a load balancer) sees no burst of connects: each
    /// costs the server some 30 µs of CPU, so 10,000 clients moving at once are a 300 ms
    /// stall. `0` sends every client away at once, which suits a few hundred connections.
    /// Keep it well under the shutdown timeout, which still bounds the whole drain.
    /// Default is 0.
    pub drain_spread: Duration,
    /// How an HTTP/1 answer goes to the socket. `false`: its body is copied behind its head
    /// in the connection's write buffer, and both go in one plain write. `true`: the body is
    /// not copied; head and body go together in one vectored write. Copying a small body
    /// costs next to nothing and skips the bookkeeping of vectored writes: about 400
    /// instructions per request, some 5 % of the server's user-space work for a small
    /// answer. For large bodies it is one more copy of every byte: a 256 MiB file download
    /// took about 10 % more CPU. Default is unset: vectored on a connection whose listener
    /// serves files (a `static_dir`, or a [`StaticFiles`](super::StaticFiles) route) when the
    /// connection opens, copied otherwise. HTTP/2 frames its answers itself and ignores
    /// this.
    pub vectored_writes: Option<bool>,
}

/// The longest `header_read_timeout`, `idle_timeout` or `body_read_timeout` accepted: 365 days. A connection
/// computes its deadlines from them, and no server wants a longer one.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(365 * 24 * 3600);

/// The default of [`HttpOptions::max_headers`]: 100, hyper's own, which parses on the stack.
pub const DEFAULT_MAX_HEADERS: usize = 100;

/// The default HTTP port.
pub const DEFAULT_HTTP_PORT: u16 = 8080;

impl Default for HttpOptions {
    fn default() -> Self {
        HttpOptions {
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_header_size: 32 * 1024,
            max_headers: DEFAULT_MAX_HEADERS,
            max_body_size: 8 * 1024 * 1024,
            body_read_timeout: Duration::from_secs(30),
            http2: true,
            static_dir: None,
            static_cache: CacheOptions::default(),
            drain_spread: Duration::ZERO,
            vectored_writes: None,
        }
    }
}

impl HttpOptions {
    /// The keys an HTTP listener table may set besides the server options.
    pub fn field_names() -> &'static [&'static str] {
        crate::options::fields_of::<HttpOptions>()
    }

    /// Checks the values; the error names the one at fault. The timeouts must be more than
    /// 0 and at most [`MAX_TIMEOUT`] (a year); `max_headers` at least 1.
    pub fn validate(&self) -> Result<(), String> {
        if self.max_headers == 0 {
            return Err("`max_headers` must be at least 1".to_owned());
        }
        for (name, value) in [
            ("header_read_timeout", self.header_read_timeout),
            ("idle_timeout", self.idle_timeout),
            ("body_read_timeout", self.body_read_timeout),
        ] {
            if value.is_zero() {
                return Err(format!("`{name}` must be more than 0"));
            }
            if value > MAX_TIMEOUT {
                return Err(format!(
                    "`{name}` must be at most a year ({} s), not {} s",
                    MAX_TIMEOUT.as_secs(),
                    value.as_secs()
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_must_be_more_than_zero_and_at_most_a_year() {
        assert_eq!(HttpOptions::default().validate(), Ok(()));
        let with = |change: fn(&mut HttpOptions)| {
            let mut o = HttpOptions::default();
            change(&mut o);
            o.validate()
        };
        let e = with(|o| o.idle_timeout = Duration::MAX).unwrap_err();
        assert!(
            e.starts_with("`idle_timeout` must be at most a year"),
            "{e}"
        );
        let e = with(|o| o.header_read_timeout = MAX_TIMEOUT + Duration::from_secs(1)).unwrap_err();
        assert!(
            e.starts_with("`header_read_timeout` must be at most a year"),
            "{e}"
        );
        let e = with(|o| o.header_read_timeout = Duration::ZERO).unwrap_err();
        assert_eq!(e, "`header_read_timeout` must be more than 0");
        assert_eq!(with(|o| o.idle_timeout = MAX_TIMEOUT), Ok(()));
        let e = with(|o| o.body_read_timeout = Duration::ZERO).unwrap_err();
        assert_eq!(e, "`body_read_timeout` must be more than 0");
        let e = with(|o| o.max_headers = 0).unwrap_err();
        assert_eq!(e, "`max_headers` must be at least 1");
    }
}
