//! What every connection of one RPC daemon shares: its identity and hello, the frame
//! decoder, the timeouts, the supervisor and the table of live instances.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};

use super::caller::Caller;
use super::options::RpcOptions;
use super::protocol::{Identity, Protocol};
use super::service::{Peers, PushBudget, PushOf, Service};
use super::supervisor::Supervisor;
use super::wire::{self, features, Decoder, Hello, Kind};

/// What every connection of one daemon shares.
pub(crate) struct DaemonState<S: Service> {
    /// The data every instance is seeded with.
    pub(crate) init: Arc<S::Init>,
    /// The identifier and version clients must name, and the versions accepted.
    pub(crate) identity: Identity,
    /// The daemon's own hello frame, encoded once: for clients that name no feature...
    pub(crate) hello: Bytes,
    /// ... and for those that ask for `going away`.
    pub(crate) hello_going_away: Bytes,
    pub(crate) decoder: Decoder,
    /// The decoder of the frames before the hello is accepted: `max_hello_size`.
    pub(crate) hello_decoder: Decoder,
    pub(crate) frame_timeout: Duration,
    pub(crate) idle_timeout: Duration,
    /// The table of live instances, maybe shared with other daemons, and where they run.
    pub(crate) supervisor: Supervisor,
    /// The context instances run in, when the daemon forwards its starter's.
    pub(crate) caller: Option<Caller>,
    /// This daemon's name for its instances in the supervisor.
    pub(crate) token: u64,
    /// This daemon's live instances, for broadcasts.
    pub(crate) peers: Arc<Peers<PushOf<S>>>,
    /// The most bytes of pushes that may wait for one client.
    pub(crate) max_push_backlog: usize,
    /// The bytes of pushes waiting for all its clients, held to `max_push_total`.
    pub(crate) push_budget: Arc<PushBudget>,
}

impl<S: Service> DaemonState<S> {
    /// The state of a daemon with these options; the error names the option at fault.
    pub(crate) fn new(
        init: S::Init,
        rpc: &RpcOptions,
        supervisor: Supervisor,
    ) -> Result<DaemonState<S>, String> {
        let identity = Identity::new(
            rpc.identifier.as_deref(),
            rpc.version.as_deref(),
            rpc.accept.as_deref(),
            (S::Protocol::IDENTIFIER, S::Protocol::VERSION),
        )?;
        let mut hello = BytesMut::new();
        wire::encode(
            Kind::Hello,
            0,
            &identity.hello(),
            rpc.max_frame_size,
            &mut hello,
        )
        .map_err(|e| format!("the daemon's own hello: {e}"))?;
        let mut hello_going_away = BytesMut::new();
        let with_feature = Hello {
            features: vec![features::GOING_AWAY.to_owned()],
            ..identity.hello()
        };
        wire::encode(
            Kind::Hello,
            0,
            &with_feature,
            rpc.max_frame_size,
            &mut hello_going_away,
        )
        .map_err(|e| format!("the daemon's own hello: {e}"))?;
        Ok(DaemonState {
            init: Arc::new(init),
            identity,
            hello: hello.freeze(),
            hello_going_away: hello_going_away.freeze(),
            decoder: Decoder::new(rpc.max_frame_size),
            hello_decoder: Decoder::new(rpc.max_hello_size.min(rpc.max_frame_size)),
            frame_timeout: rpc.frame_timeout,
            idle_timeout: rpc.idle_timeout,
            supervisor,
            caller: None,
            token: Supervisor::daemon_token(),
            peers: Arc::new(Peers::default()),
            max_push_backlog: rpc.max_push_backlog,
            push_budget: PushBudget::new(rpc.max_push_total),
        })
    }

    pub(crate) fn max_frame_size(&self) -> usize {
        self.decoder.max_frame_size()
    }
}
