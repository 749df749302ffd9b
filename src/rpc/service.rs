//! The [`Service`] trait (one instance per connection), what its calls answer with
//! ([`Reply`]), and its context ([`Ctx`]): who the client is, pushes ([`Pusher`]), broadcasts,
//! deferred replies ([`Deferred`]) and disconnecting.
//!
//! Everything an instance sends besides the direct answer of a call travels to its
//! connection's loop as an already encoded frame, through an unbounded channel: pushes and
//! deferred answers can be sent from any task, and the loop writes them with its next batch.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::{Bytes, BytesMut};
use rustls::pki_types::CertificateDer;
use serde::Serialize;
use tokio::sync::mpsc::UnboundedSender;

use super::error::RpcError;
use super::protocol::Protocol;
use super::wire::{self, codes, ErrorBody, Kind};
use crate::addr::Addr;
use crate::connections::Slot;
use crate::error::BoxError;
use crate::shared::Shared;

/// A service's request type.
pub(crate) type Request<S> = <<S as Service>::Protocol as Protocol>::Request;
/// A service's reply type.
pub(crate) type ReplyOf<S> = <<S as Service>::Protocol as Protocol>::Reply;
/// A service's push type.
pub(crate) type PushOf<S> = <<S as Service>::Protocol as Protocol>::Push;

/// An RPC service: the daemon makes one instance per connection, with [`init`](Service::init),
/// once the client's hello is accepted, and runs that connection's calls and casts on it one
/// at a time, in the order they arrive.
///
/// An error returned by [`call`](Service::call) or [`cast`](Service::cast), or a panic in
/// one, ends that connection only: the call is answered with a `server error` (or
/// `server panic`) error frame, the failure is reported through telemetry
/// ([`RpcFailure`](crate::telemetry::EventKind::RpcFailure)), the connection closes and
/// [`terminate`](Service::terminate) runs. Other connections go on.
///
/// ```
/// use std::sync::Arc;
/// use serde::{Deserialize, Serialize};
/// use atoll::rpc::{Ctx, Protocol, Reply, Service};
/// use atoll::BoxError;
///
/// #[derive(Serialize, Deserialize)]
/// enum CounterRequest { Add(u64), Get }
///
/// struct CounterProtocol;
///
/// impl Protocol for CounterProtocol {
///     const IDENTIFIER: &'static str = "example.counter";
///     const VERSION: &'static str = "1.0.0";
///     type Request = CounterRequest;
///     type Reply = u64;
///     type Push = u64;
/// }
///
/// /// Each client counts from the daemon's starting value.
/// struct Counter { total: u64 }
///
/// impl Service for Counter {
///     type Protocol = CounterProtocol;
///     type Init = u64;
///
///     async fn init(start: &Arc<u64>, _ctx: &mut Ctx<Self>) -> Result<Self, BoxError> {
///         Ok(Counter { total: **start })
///     }
///
///     async fn call(&mut self, req: CounterRequest, _ctx: &mut Ctx<Self>)
///         -> Result<Reply<u64>, BoxError>
///     {
///         if let CounterRequest::Add(n) = req {
///             self.total = self.total.checked_add(n).ok_or("counter overflow")?;
///         }
///         Ok(self.total.into())
///     }
///
///     async fn cast(&mut self, req: CounterRequest, ctx: &mut Ctx<Self>) -> Result<(), BoxError> {
///         if let CounterRequest::Add(n) = req {
///             self.total = self.total.saturating_add(n);
///             ctx.push(&self.total)?;
///         }
///         Ok(())
///     }
/// }
/// ```
pub trait Service: Send + Sized + 'static {
    /// The message types, identifier and version this service speaks.
    type Protocol: Protocol;
    /// The data every instance is seeded with (shared, read-only).
    type Init: Send + Sync + 'static;

    /// A client connected (its hello accepted): make its instance. An error refuses the
    /// connection: an `error` frame (id 0, code `server error`) and a close.
    fn init(
        init: &Arc<Self::Init>,
        ctx: &mut Ctx<Self>,
    ) -> impl Future<Output = Result<Self, BoxError>> + Send;

    /// Answers a call: [`Reply::Now`] with the reply, or [`Reply::Later`] after taking a
    /// [`Deferred`] with [`Ctx::defer`]. An error ends the connection (see above).
    fn call(
        &mut self,
        request: <Self::Protocol as Protocol>::Request,
        ctx: &mut Ctx<Self>,
    ) -> impl Future<Output = Result<Reply<<Self::Protocol as Protocol>::Reply>, BoxError>> + Send;

    /// Handles a cast, a request that wants no answer. An error ends the connection.
    /// Default does nothing.
    fn cast(
        &mut self,
        request: <Self::Protocol as Protocol>::Request,
        ctx: &mut Ctx<Self>,
    ) -> impl Future<Output = Result<(), BoxError>> + Send {
        let _ = (request, ctx);
        async { Ok(()) }
    }

    /// The connection ended: the client left, [`Ctx::disconnect`], the daemon stopping, a
    /// [`Supervisor::terminate`](super::Supervisor::terminate), or a failure. Nothing can
    /// be sent to the client any more. Not called when the daemon's shutdown timeout closes
    /// the connection by force. Default does nothing.
    fn terminate(&mut self, ctx: &mut Ctx<Self>) -> impl Future<Output = ()> + Send {
        let _ = ctx;
        async {}
    }
}

/// What a call answers with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply<T> {
    /// The reply, sent at once.
    Now(T),
    /// The reply comes later, through the [`Deferred`] taken with [`Ctx::defer`]; meanwhile
    /// the connection goes on with its next messages. Returned without a `Deferred` taken,
    /// the call is answered with a `no reply` error.
    Later,
}

impl<T> From<T> for Reply<T> {
    /// [`Reply::Now`].
    fn from(value: T) -> Reply<T> {
        Reply::Now(value)
    }
}

// ===== Outgoing: what reaches a connection's loop =====

/// A message to a connection's loop.
#[derive(Debug)]
pub(crate) enum Outgoing {
    /// An encoded frame to send as it is: a push.
    Frame(Bytes),
    /// The encoded answer (reply or error) of the deferred call `id`; `code` is the error
    /// code when it is an error.
    Answer {
        id: u64,
        frame: Bytes,
        code: Option<&'static str>,
    },
    /// End the connection (a supervisor's `terminate`).
    Terminate,
}

/// An `error` frame for `id`. A message too long for the frame size is cut.
pub(crate) fn error_frame(id: u64, code: &str, message: &str, max: usize, out: &mut BytesMut) {
    if wire::encode(Kind::Error, id, &ErrorBody::new(code, message), max, out).is_err() {
        let mut cut = message.len().min(200);
        while !message.is_char_boundary(cut) {
            cut -= 1;
        }
        let body = ErrorBody::new(code, &message[..cut]);
        if wire::encode(Kind::Error, id, &body, max, out).is_err() {
            // Only a maximum too small for any error leaves this: send the code alone.
            let _ = wire::encode(Kind::Error, id, &ErrorBody::new(code, ""), usize::MAX, out);
        }
    }
}

fn encode_frame<T: Serialize + ?Sized>(
    kind: Kind,
    id: u64,
    value: &T,
    max: usize,
) -> Result<Bytes, RpcError> {
    let mut buf = BytesMut::new();
    wire::encode(kind, id, value, max, &mut buf).map_err(|e| RpcError::Encode(e.to_string()))?;
    Ok(buf.freeze())
}

// ===== Pusher =====

/// Pushes messages to one client, from any task: a clone of it can be kept by other tasks
/// and instances (a chat room's members, say). Cheap to clone.
pub struct Pusher<T> {
    tx: UnboundedSender<Outgoing>,
    max: usize,
    backlog: Arc<Backlog>,
    _msg: PhantomData<fn(&T)>,
}

/// The bytes of pushes waiting for all the clients of one daemon, held to its
/// `max_push_total`: the sum of every connection's [`Backlog`].
#[derive(Debug)]
pub(crate) struct PushBudget {
    waiting: AtomicUsize,
    max: usize,
}

impl PushBudget {
    pub(crate) fn new(max: usize) -> Arc<PushBudget> {
        Arc::new(PushBudget {
            waiting: AtomicUsize::new(0),
            max,
        })
    }

    /// The bytes counted now, for tests and telemetry.
    #[cfg(test)]
    pub(crate) fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Relaxed)
    }
}

/// The bytes of pushes waiting for one client, held to the daemon's `max_push_backlog`, and
/// counted in the daemon's [`PushBudget`] too. Shared by the connection and its pushers.
#[derive(Debug)]
pub(crate) struct Backlog {
    /// Push frames sent into the channel and not yet taken by the connection.
    queued: AtomicUsize,
    /// The connection's unwritten bytes (pushes and answers), as it last noted them.
    buffered: AtomicUsize,
    max: usize,
    daemon: Arc<PushBudget>,
}

impl Backlog {
    pub(crate) fn new(max: usize, daemon: Arc<PushBudget>) -> Arc<Backlog> {
        Arc::new(Backlog {
            queued: AtomicUsize::new(0),
            buffered: AtomicUsize::new(0),
            max,
            daemon,
        })
    }

    /// Counts a push of `n` bytes in, or refuses it when it would take the bytes waiting for
    /// this client past `max_push_backlog`, or those waiting for all the daemon's clients past
    /// `max_push_total`. With nothing waiting, any push is taken.
    fn admit(&self, n: usize) -> Result<(), RpcError> {
        let queued = self.queued.fetch_add(n, Ordering::Relaxed);
        let waiting = queued + self.buffered.load(Ordering::Relaxed);
        if waiting > 0 && waiting + n > self.max {
            self.queued.fetch_sub(n, Ordering::Relaxed);
            return Err(RpcError::Backlog(waiting));
        }
        let total = self.daemon.waiting.fetch_add(n, Ordering::Relaxed);
        if total > 0 && total + n > self.daemon.max {
            self.daemon.waiting.fetch_sub(n, Ordering::Relaxed);
            self.queued.fetch_sub(n, Ordering::Relaxed);
            return Err(RpcError::DaemonBacklog(total));
        }
        Ok(())
    }

    /// The connection took a push of `n` bytes from the channel into its write buffer (which
    /// [`buffered`](Backlog::buffered) counts next), or dropped it.
    pub(crate) fn taken(&self, n: usize) {
        self.queued.fetch_sub(n, Ordering::Relaxed);
        self.daemon.waiting.fetch_sub(n, Ordering::Relaxed);
    }

    /// The connection's write buffer now holds `n` unwritten bytes (0 once it is closed).
    pub(crate) fn buffered(&self, n: usize) {
        let before = self.buffered.swap(n, Ordering::Relaxed);
        if n > before {
            self.daemon.waiting.fetch_add(n - before, Ordering::Relaxed);
        } else {
            self.daemon.waiting.fetch_sub(before - n, Ordering::Relaxed);
        }
    }
}

impl<T> Clone for Pusher<T> {
    fn clone(&self) -> Self {
        Pusher {
            tx: self.tx.clone(),
            max: self.max,
            backlog: self.backlog.clone(),
            _msg: PhantomData,
        }
    }
}

impl<T> fmt::Debug for Pusher<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pusher")
            .field("connected", &!self.tx.is_closed())
            .finish()
    }
}

impl<T: Serialize> Pusher<T> {
    /// Sends `msg` as a `push` frame with the connection's next write.
    /// [`RpcError::Disconnected`] once the connection has ended; [`RpcError::Encode`] when
    /// the message cannot be encoded or is over the daemon's maximum frame size;
    /// [`RpcError::Backlog`] when the client is so far behind that the daemon's
    /// `max_push_backlog` would be passed, [`RpcError::DaemonBacklog`] when the daemon's
    /// clients together are so far behind that its `max_push_total` would be (either way the
    /// push is dropped and the connection goes on).
    pub fn push(&self, msg: &T) -> Result<(), RpcError> {
        if self.tx.is_closed() {
            return Err(RpcError::Disconnected);
        }
        let frame = encode_frame(Kind::Push, 0, msg, self.max)?;
        self.send_frame(frame)
    }
}

impl<T> Pusher<T> {
    pub(crate) fn new(
        tx: UnboundedSender<Outgoing>,
        max: usize,
        backlog: Arc<Backlog>,
    ) -> Pusher<T> {
        Pusher {
            tx,
            max,
            backlog,
            _msg: PhantomData,
        }
    }

    /// Sends an already encoded push frame, within the backlog.
    pub(crate) fn send_frame(&self, frame: Bytes) -> Result<(), RpcError> {
        let n = frame.len();
        self.backlog.admit(n)?;
        self.tx.send(Outgoing::Frame(frame)).map_err(|_| {
            self.backlog.taken(n);
            RpcError::Disconnected
        })
    }
}

// ===== Deferred =====

/// The answer to one call, owed: taken with [`Ctx::defer`] inside
/// [`call`](Service::call), which then returns [`Reply::Later`]. Send it from anywhere with
/// [`reply`](Deferred::reply) or [`fail`](Deferred::fail); dropped without either, the call is
/// answered with a `no reply` error. Meanwhile the connection goes on with its next calls,
/// and a daemon that stops waits for it (up to its shutdown timeout).
#[must_use = "a dropped Deferred answers its call with a `no reply` error"]
pub struct Deferred<T> {
    id: u64,
    /// `None` once answered, or for a `Deferred` taken outside a call.
    tx: Option<UnboundedSender<Outgoing>>,
    max: usize,
    _reply: PhantomData<fn(T)>,
}

impl<T> fmt::Debug for Deferred<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Deferred")
            .field("id", &self.id)
            .field("owed", &self.tx.is_some())
            .finish()
    }
}

impl<T> Deferred<T> {
    pub(crate) fn new(id: u64, tx: Option<UnboundedSender<Outgoing>>, max: usize) -> Deferred<T> {
        Deferred {
            id,
            tx,
            max,
            _reply: PhantomData,
        }
    }

    /// The id of the call it answers.
    pub fn id(&self) -> u64 {
        self.id
    }

    fn send_error(&mut self, code: &'static str, message: &str) -> Result<(), RpcError> {
        let Some(tx) = self.tx.take() else {
            return Ok(());
        };
        let mut buf = BytesMut::new();
        error_frame(self.id, code, message, self.max, &mut buf);
        tx.send(Outgoing::Answer {
            id: self.id,
            frame: buf.freeze(),
            code: Some(code),
        })
        .map_err(|_| RpcError::Disconnected)
    }

    /// Answers the call with an `error` frame, code `bad request`, whose message is
    /// `message`: the request itself is refused (it is over a limit of the service, say).
    /// The connection goes on.
    pub fn refuse(mut self, message: impl Into<String>) {
        // A connection that is gone has no one to tell.
        let _ = self.send_error(codes::BAD_REQUEST, &message.into());
    }

    /// Answers the call with an `error` frame, code `server error`, whose message is
    /// `message`. Unlike an error returned from [`call`](Service::call), the connection goes
    /// on.
    pub fn fail(mut self, message: impl Into<String>) {
        // A connection that is gone has no one to tell.
        let _ = self.send_error(codes::SERVER_ERROR, &message.into());
    }
}

impl<T: Serialize> Deferred<T> {
    /// Answers the call. [`RpcError::Disconnected`] when the connection has ended;
    /// [`RpcError::Encode`] when the reply cannot be encoded or is over the maximum frame
    /// size, in which case the call is answered with a `server error` instead.
    pub fn reply(mut self, value: T) -> Result<(), RpcError> {
        let Some(tx) = &self.tx else {
            return Ok(());
        };
        if tx.is_closed() {
            self.tx = None;
            return Err(RpcError::Disconnected);
        }
        match encode_frame(Kind::Reply, self.id, &value, self.max) {
            Ok(frame) => {
                let tx = self.tx.take().ok_or(RpcError::Disconnected)?;
                tx.send(Outgoing::Answer {
                    id: self.id,
                    frame,
                    code: None,
                })
                .map_err(|_| RpcError::Disconnected)
            }
            Err(e) => {
                let why = format!("reply not sent: {e}");
                self.send_error(codes::SERVER_ERROR, &why)?;
                Err(e)
            }
        }
    }
}

impl<T> Drop for Deferred<T> {
    fn drop(&mut self) {
        if self.tx.is_some() {
            let _ = self.send_error(codes::NO_REPLY, "no reply: the server dropped the call");
        }
    }
}

// ===== Peers =====

/// The live instances of one daemon, by connection id: whom a broadcast reaches.
pub(crate) struct Peers<T> {
    map: Mutex<HashMap<u64, Pusher<T>>>,
}

impl<T> Default for Peers<T> {
    fn default() -> Self {
        Peers {
            map: Mutex::new(HashMap::new()),
        }
    }
}

impl<T> Peers<T> {
    fn lock(&self) -> MutexGuard<'_, HashMap<u64, Pusher<T>>> {
        // Every update is one insert or remove: a poisoned map is still consistent.
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn insert(&self, id: u64, pusher: Pusher<T>) {
        self.lock().insert(id, pusher);
    }

    pub(crate) fn remove(&self, id: u64) {
        self.lock().remove(&id);
    }

    /// Sends `frame` to every instance but `except`; returns how many it reached.
    pub(crate) fn send_all(&self, frame: &Bytes, except: u64) -> usize {
        self.lock()
            .iter()
            .filter(|(id, _)| **id != except)
            .filter(|(_, p)| p.send_frame(frame.clone()).is_ok())
            .count()
    }
}

// ===== Ctx =====

/// One instance's context: who its client is, and how to push, broadcast, defer a reply or
/// end the connection. Passed to every callback of a [`Service`].
pub struct Ctx<S: Service> {
    shared: Arc<Shared>,
    slot: Arc<Slot>,
    certs: Option<Vec<CertificateDer<'static>>>,
    pusher: Pusher<PushOf<S>>,
    peers: Arc<Peers<PushOf<S>>>,
    /// The call being run, 0 outside a call.
    pub(crate) call: u64,
    /// Set when [`defer`](Ctx::defer) was called during the current call.
    pub(crate) deferred: bool,
    /// Set by [`disconnect`](Ctx::disconnect).
    pub(crate) disconnect: bool,
    /// Set by [`push`](Ctx::push), so the loop sends the pushes before the call's reply.
    pushed: AtomicBool,
}

impl<S: Service> fmt::Debug for Ctx<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ctx")
            .field("listener", &self.listener())
            .field("id", &self.id())
            .field("peer", self.peer())
            .field("call", &self.call)
            .finish()
    }
}

impl<S: Service> Ctx<S> {
    pub(crate) fn new(
        shared: Arc<Shared>,
        slot: Arc<Slot>,
        certs: Option<Vec<CertificateDer<'static>>>,
        pusher: Pusher<PushOf<S>>,
        peers: Arc<Peers<PushOf<S>>>,
    ) -> Ctx<S> {
        Ctx {
            shared,
            slot,
            certs,
            pusher,
            peers,
            call: 0,
            deferred: false,
            disconnect: false,
            pushed: AtomicBool::new(false),
        }
    }

    /// The connection's id, unique within its daemon.
    pub fn id(&self) -> u64 {
        self.slot.id
    }

    /// The client's address.
    pub fn peer(&self) -> &Addr {
        self.slot.peer()
    }

    /// The certificate chain the client presented (leaf first), on TLS daemons that ask for
    /// one ([`TlsOptions::client_ca`](crate::TlsOptions::client_ca)); `None` when it presented
    /// none, which only a daemon with [`ClientAuth::Optional`](crate::ClientAuth::Optional)
    /// lets through.
    pub fn peer_certificates(&self) -> Option<&[CertificateDer<'static>]> {
        self.certs.as_deref()
    }

    /// The value the daemon forwards to its instances
    /// ([`Daemon::forward_callers`](super::Daemon::forward_callers)), when it is a `T`; as
    /// [`caller`](super::caller) reads it.
    pub fn caller<T: Send + Sync + 'static>(&self) -> Option<Arc<T>> {
        super::caller::caller()
    }

    /// The daemon's listener name.
    pub fn listener(&self) -> &str {
        &self.shared.name
    }

    /// Pushes `msg` to this instance's client. Pushes made during a call are sent before its
    /// reply. Errors as [`Pusher::push`].
    pub fn push(&self, msg: &PushOf<S>) -> Result<(), RpcError> {
        self.pusher.push(msg)?;
        self.pushed.store(true, Ordering::Relaxed);
        Ok(())
    }

    /// A [`Pusher`] to this instance's client, to keep or hand to another task.
    pub fn pusher(&self) -> Pusher<PushOf<S>> {
        self.pusher.clone()
    }

    /// Pushes `msg` to the client of every other live instance of this daemon. A message that
    /// cannot be encoded is logged and dropped; a client over its push backlog, or any
    /// client once the daemon's pushes are over `max_push_total` ([`Pusher::push`]), does
    /// not get it.
    pub fn broadcast(&self, msg: &PushOf<S>) {
        match encode_frame(Kind::Push, 0, msg, self.pusher.max) {
            Ok(frame) => {
                self.peers.send_all(&frame, self.id());
            }
            Err(e) => self.shared.failure_logs.record("broadcast dropped", || {
                tracing::warn!(
                    target: "atoll::rpc",
                    listener = %self.listener(),
                    error = %e,
                    "broadcast dropped"
                );
            }),
        }
    }

    /// Takes the answer of the current call, to send later (from another task, say); the
    /// call then returns [`Reply::Later`]. Only a call has an answer to defer: taken in
    /// another callback, the `Deferred` answers nothing.
    pub fn defer(&mut self) -> Deferred<ReplyOf<S>> {
        if self.call == 0 {
            const WHAT: &str = "defer() outside a call: there is nothing to answer";
            self.shared.failure_logs.record(WHAT, || {
                tracing::warn!(target: "atoll::rpc", listener = %self.listener(), "{WHAT}");
            });
            return Deferred::new(0, None, self.pusher.max);
        }
        self.deferred = true;
        Deferred::new(self.call, Some(self.pusher.tx.clone()), self.pusher.max)
    }

    /// Ends the connection after the current message (its reply is sent first).
    pub fn disconnect(&mut self) {
        self.disconnect = true;
    }

    /// Whether [`push`](Ctx::push) was called since the last time this was asked.
    pub(crate) fn take_pushed(&mut self) -> bool {
        std::mem::take(self.pushed.get_mut())
    }

    /// Starts a call: `defer` now answers `id`.
    pub(crate) fn begin_call(&mut self, id: u64) {
        self.call = id;
        self.deferred = false;
    }

    /// Ends the call; returns whether a [`Deferred`] was taken.
    pub(crate) fn end_call(&mut self) -> bool {
        self.call = 0;
        std::mem::take(&mut self.deferred)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pushes_share_the_daemon_budget() {
        let daemon = PushBudget::new(100);
        let a = Backlog::new(80, daemon.clone());
        let b = Backlog::new(80, daemon.clone());
        a.admit(60).unwrap();
        b.admit(30).unwrap();
        // Within b's own backlog, but past the daemon's total.
        assert!(matches!(b.admit(20), Err(RpcError::DaemonBacklog(90))));
        // Past a's own backlog.
        assert!(matches!(a.admit(30), Err(RpcError::Backlog(60))));
        assert_eq!(daemon.waiting(), 90);
        // a's connection takes its push into its write buffer, then writes it.
        a.taken(60);
        a.buffered(60);
        assert_eq!(daemon.waiting(), 90);
        a.buffered(0);
        assert_eq!(daemon.waiting(), 30);
        a.admit(70).unwrap();
        // b's connection ends with its push unwritten: it leaves the budget.
        b.taken(30);
        b.buffered(0);
        assert_eq!(daemon.waiting(), 70);
        // With nothing waiting anywhere, a push over every bound is still taken.
        a.taken(70);
        let big = Backlog::new(10, daemon.clone());
        big.admit(500).unwrap();
        assert!(RpcError::DaemonBacklog(1).is_backlog());
    }
}
