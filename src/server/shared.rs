//! What a listener's acceptors and connections share: its name, options, telemetry, TLS
//! settings, connection table, connection limit, and where connections move at an upgrade.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::sync::Semaphore;

use crate::connections::Table;
use crate::moved::Destination;
use crate::options::ServerOptions;
use crate::per_ip::PerIp;
use crate::proxy::ProxyProtocol;
use crate::telemetry::failure_log::FailureLogs;
use crate::telemetry::Telemetry;
use crate::timeouts::Timeouts;
use crate::tls::TlsConfig;

#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) name: String,
    pub(crate) opts: ServerOptions,
    pub(crate) telemetry: Arc<Telemetry>,
    pub(crate) tls: Option<TlsConfig>,
    pub(crate) table: Table,
    /// The read timeouts of every connection.
    pub(crate) timeouts: Timeouts,
    /// One permit per connection allowed by `max_connections`.
    pub(crate) limiter: Arc<Semaphore>,
    /// The budgets of the log lines its connections' peers can trigger outside the telemetry
    /// events, each kind of line with its own, to the hub's
    /// [`failure_log_budget`](Telemetry::failure_log_budget) as it was at the start.
    pub(crate) failure_logs: Arc<FailureLogs>,
    /// Where connections move when the listener stops, once an upgrade has set it; until
    /// then, and without it, they drain.
    pub(crate) move_to: Destination,
    /// Connections open per client address, with `max_connections_per_ip`.
    pub(crate) per_ip: Option<Arc<PerIp>>,
    next_id: AtomicU64,
}

impl Shared {
    pub(crate) fn new(
        name: String,
        opts: ServerOptions,
        telemetry: Arc<Telemetry>,
        tls: Option<TlsConfig>,
    ) -> Self {
        let limiter = Arc::new(Semaphore::new(opts.max_connections));
        let failure_logs = FailureLogs::new(name.clone(), telemetry.failure_log_budget());
        let per_ip = opts.max_connections_per_ip.map(PerIp::new);
        Shared {
            name,
            opts,
            telemetry,
            tls,
            table: Table::default(),
            timeouts: Timeouts::default(),
            limiter,
            failure_logs,
            move_to: Destination::default(),
            per_ip,
            next_id: AtomicU64::new(1),
        }
    }

    /// Whether connections start with a PROXY header this listener reads.
    #[inline]
    pub(crate) fn reads_proxy_header(&self) -> bool {
        self.opts.proxy_protocol == ProxyProtocol::Required
    }

    pub(crate) fn next_connection_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }
}
