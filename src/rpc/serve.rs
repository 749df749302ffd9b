//! One connection on the daemon side, from start to end: the hello; then the instance, run on
//! the connection's task or handed to the user's [`Supervise`], inside the starter's context
//! when the daemon forwards it: its `init`, its entries in the daemon's tables, the
//! connection's loop ([`server_conn`](super::server_conn)), and `terminate`.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::SystemTime;

use tokio::sync::{mpsc, oneshot};

use super::guard::Guarded;
use super::server_conn::Conn;
use super::service::{Backlog, Ctx, Outgoing, PushOf, Pusher, Service};
use super::state::DaemonState;
use super::supervisor::{Exit, Instance, InstanceInfo, Supervise};
use super::wire::{codes, features};
use crate::error::BoxError;
use crate::socket::Socket;

/// Serves one connection to its end. Returns an error when the instance failed (an error or
/// a panic), so the socket server reports it too; a client's fault is no error of the server.
pub(crate) async fn serve<S: Service>(
    daemon: Arc<DaemonState<S>>,
    socket: Socket,
) -> Result<(), BoxError> {
    let (tx, rx) = mpsc::unbounded_channel();
    let backlog = Backlog::new(daemon.max_push_backlog, daemon.push_budget.clone());
    let mut conn = Conn::new(socket, rx, daemon.max_frame_size(), backlog.clone());

    let hello = match conn.hello(&daemon).await {
        Ok(hello) => hello,
        Err(refusal) => {
            if let Some(body) = refusal {
                conn.put_error(0, &body.code, &body.message);
                conn.report_failure(&body.code, &body.message);
            }
            conn.close(true).await;
            return Ok(());
        }
    };
    conn.going_away = hello.has(features::GOING_AWAY);
    let info = InstanceInfo {
        listener: conn.shared.name.clone(),
        id: conn.slot.id,
        peer: conn.slot.peer().clone(),
        started: SystemTime::now(),
    };
    let caller = daemon.caller.clone();
    let Some(runner) = daemon.supervisor.runner().cloned() else {
        // The common case, on this task, kept free of boxes and channels.
        let instance = run(daemon, conn, tx, backlog, info);
        let (_, error) = match caller {
            None => instance.await,
            Some(caller) => caller.enter(instance).await,
        };
        return error.map_or(Ok(()), Err);
    };
    let instance = run(daemon, conn, tx, backlog, info.clone());
    let instance: Pin<Box<dyn Future<Output = Ended> + Send>> = match caller {
        Some(caller) => Box::pin(caller.enter(instance)),
        None => Box::pin(instance),
    };
    hand_off(runner, info, instance).await?.map_or(Ok(()), Err)
}

/// How an instance ended, and the error the socket server reports (an instance's failure).
type Ended = (Exit, Option<BoxError>);

/// Hands the instance to the user's supervisor and waits for its end, so the socket server
/// counts the connection open until then. When this wait is dropped (the stop's shutdown
/// timeout aborting the connection's task), the instance is ended wherever it runs.
async fn hand_off(
    runner: Arc<dyn Supervise>,
    info: InstanceInfo,
    instance: Pin<Box<dyn Future<Output = Ended> + Send>>,
) -> Result<Option<BoxError>, BoxError> {
    let (done, ended) = oneshot::channel();
    let (cancel, cancelled) = oneshot::channel::<()>();
    let watcher = runner.clone();
    let seen = info.clone();
    let run = async move {
        let (exit, error) = tokio::select! {
            biased;
            ended = instance => ended,
            // Only ever the sender's drop: the connection's task is gone.
            _ = cancelled => (Exit::Stopped, None),
        };
        watcher.exited(&seen, &exit);
        let _ = done.send(error);
    };
    runner.start(Instance::new(info.clone(), run));
    let _cancel_on_drop = cancel;
    match ended.await {
        Ok(error) => Ok(error),
        Err(_) => {
            runner.exited(&info, &Exit::Stopped);
            Err(format!(
                "the supervisor dropped the instance of connection {} unfinished",
                info.id
            )
            .into())
        }
    }
}

/// One instance from its `init` to its `terminate`, and the connection's close.
async fn run<S: Service>(
    daemon: Arc<DaemonState<S>>,
    mut conn: Conn,
    tx: mpsc::UnboundedSender<Outgoing>,
    backlog: Arc<Backlog>,
    info: InstanceInfo,
) -> Ended {
    let certs = conn.socket.peer_certificates().map(<[_]>::to_vec);
    let pusher = Pusher::new(tx.clone(), daemon.max_frame_size(), backlog);
    let mut ctx = Ctx::<S>::new(
        conn.shared.clone(),
        conn.slot.clone(),
        certs,
        pusher.clone(),
        daemon.peers.clone(),
    );
    let mut instance = match Guarded::new(S::init(&daemon.init, &mut ctx)).await {
        Ok(Ok(instance)) => instance,
        Ok(Err(e)) => {
            let end = conn.fail(0, codes::SERVER_ERROR, e.to_string(), e);
            conn.close(true).await;
            return (end.exit, end.error);
        }
        Err(panicked) => {
            let end = conn.panicked(0, panicked);
            conn.close(true).await;
            return (end.exit, end.error);
        }
    };
    conn.wbuf.extend_from_slice(if conn.going_away {
        &daemon.hello_going_away
    } else {
        &daemon.hello
    });

    let id = conn.slot.id;
    let mut enrolled = Enrolment::new(daemon.clone(), id, pusher, info, tx);

    let end = conn.run(&daemon, &mut instance, &mut ctx).await;

    daemon.peers.remove(id);
    if let Err(panicked) = Guarded::new(instance.terminate(&mut ctx)).await {
        const WHAT: &str = "the service panicked in terminate";
        conn.shared.failure_logs.record(WHAT, || {
            tracing::warn!(
                target: "atoll::rpc",
                listener = %conn.shared.name,
                connection = id,
                panic = %panicked,
                "{WHAT}"
            );
        });
    }
    conn.close(end.linger).await;
    enrolled.exit = end.exit.clone();
    drop(enrolled);
    (end.exit, end.error)
}

/// An instance's entries in its daemon's tables, removed when it ends, even when the stop's
/// shutdown timeout aborts the connection's task (the exit is then [`Exit::Stopped`]).
struct Enrolment<S: Service> {
    daemon: Arc<DaemonState<S>>,
    id: u64,
    key: u64,
    exit: Exit,
}

impl<S: Service> Enrolment<S> {
    fn new(
        daemon: Arc<DaemonState<S>>,
        id: u64,
        pusher: Pusher<PushOf<S>>,
        info: InstanceInfo,
        control: mpsc::UnboundedSender<Outgoing>,
    ) -> Enrolment<S> {
        daemon.peers.insert(id, pusher);
        let key = daemon.supervisor.enter(daemon.token, info, control);
        Enrolment {
            daemon,
            id,
            key,
            exit: Exit::Stopped,
        }
    }
}

impl<S: Service> Drop for Enrolment<S> {
    fn drop(&mut self) {
        self.daemon.peers.remove(self.id);
        self.daemon.supervisor.leave(self.key, &self.exit);
    }
}

#[cfg(test)]
mod tests {
    //! The loop over a Unix socket pair: no listener, no network.

    use std::time::Duration;

    use bytes::BytesMut;

    use super::*;
    use crate::addr::Addr;
    use crate::connections::Slot;
    use crate::options::ServerOptions;
    use crate::rpc::options::RpcOptions;
    use crate::rpc::protocol::Protocol;
    use crate::rpc::service::Reply;
    use crate::rpc::supervisor::Supervisor;
    use crate::rpc::wire::{self, Decoder, ErrorBody, Frame, Hello, Kind};
    use crate::shared::Shared;
    use crate::socket::{Conn as SocketConn, Stream};
    use crate::telemetry::Telemetry;
    use serde::{Deserialize, Serialize};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::UnixStream;

    const WAIT: Duration = Duration::from_secs(10);

    struct Test;

    impl Protocol for Test {
        const IDENTIFIER: &'static str = "test.serve";
        const VERSION: &'static str = "1.0.0";
        type Request = Req;
        type Reply = String;
        type Push = String;
    }

    #[derive(Debug, Serialize, Deserialize)]
    enum Req {
        Echo(String),
        /// Pushes the text, then replies with it.
        PushFirst(String),
        /// Defers and answers before returning `Later`.
        AnswerEarly(String),
        /// Defers, answers, and still returns `Now` (only the first answer counts).
        AnswerTwice,
        /// Returns `Later` without a `Deferred`.
        Forget,
        /// Takes a `Deferred` and drops it.
        Drop,
        Fail,
        Panic,
        Disconnect,
    }

    struct Instance;

    impl Service for Instance {
        type Protocol = Test;
        type Init = ();

        async fn init(_: &Arc<()>, _: &mut Ctx<Self>) -> Result<Self, BoxError> {
            Ok(Instance)
        }

        async fn call(&mut self, req: Req, ctx: &mut Ctx<Self>) -> Result<Reply<String>, BoxError> {
            Ok(match req {
                Req::Echo(s) => s.into(),
                Req::PushFirst(s) => {
                    ctx.push(&s)?;
                    s.into()
                }
                Req::AnswerEarly(s) => {
                    ctx.defer().reply(s)?;
                    // Let the loop see the answer while the call is still running.
                    tokio::task::yield_now().await;
                    Reply::Later
                }
                Req::AnswerTwice => {
                    ctx.defer().reply("deferred".into())?;
                    "now".to_owned().into()
                }
                Req::Forget => Reply::Later,
                Req::Drop => {
                    drop(ctx.defer());
                    Reply::Later
                }
                Req::Fail => return Err("it failed".into()),
                Req::Panic => panic!("on purpose"),
                Req::Disconnect => {
                    ctx.disconnect();
                    "bye".to_owned().into()
                }
            })
        }

        async fn cast(&mut self, req: Req, _: &mut Ctx<Self>) -> Result<(), BoxError> {
            match req {
                Req::Fail => Err("the cast failed".into()),
                _ => Ok(()),
            }
        }
    }

    struct Client {
        stream: UnixStream,
        buf: BytesMut,
    }

    impl Client {
        async fn send<T: Serialize>(&mut self, kind: Kind, id: u64, value: &T) {
            let mut out = BytesMut::new();
            wire::encode(kind, id, value, usize::MAX, &mut out).unwrap();
            self.stream.write_all(&out).await.unwrap();
        }

        /// The next frame, or `None` at the end of the stream.
        async fn next(&mut self) -> Option<Frame> {
            tokio::time::timeout(WAIT, async {
                loop {
                    if let Some(f) = Decoder::default().decode(&mut self.buf).unwrap() {
                        return Some(f);
                    }
                    if self.stream.read_buf(&mut self.buf).await.unwrap_or(0) == 0 {
                        return None;
                    }
                }
            })
            .await
            .expect("a frame or the end within the wait")
        }

        async fn frame(&mut self) -> Frame {
            self.next().await.expect("a frame")
        }

        async fn reply(&mut self, id: u64) -> String {
            let f = self.frame().await;
            assert_eq!((f.kind, f.id), (Kind::Reply, id), "{f:?}");
            wire::decode(&f.payload).unwrap()
        }

        async fn error(&mut self, id: u64) -> ErrorBody {
            let f = self.frame().await;
            assert_eq!((f.kind, f.id), (Kind::Error, id), "{f:?}");
            wire::decode(&f.payload).unwrap()
        }
    }

    /// A socket as the socket server would hand it over, and the client's end.
    fn socket_pair() -> (Socket, UnixStream) {
        let shared = Arc::new(Shared::new(
            "unit".into(),
            ServerOptions::default(),
            Arc::new(Telemetry::default()),
            None,
        ));
        let (server, client) = UnixStream::pair().unwrap();
        let slot = Arc::new(Slot::new(shared.next_connection_id(), Addr::Unix(None)));
        let permit = shared.limiter.clone().try_acquire_owned().unwrap();
        let socket = Socket::new(Stream::Unix(server), SocketConn::new(shared, slot, permit));
        (socket, client)
    }

    /// A connection served by `serve` over a socket pair, with the hello done.
    async fn connect() -> (Client, tokio::task::JoinHandle<Result<(), BoxError>>) {
        let (socket, client) = socket_pair();
        let daemon = Arc::new(
            DaemonState::<Instance>::new((), &RpcOptions::default(), Supervisor::new()).unwrap(),
        );
        let task = tokio::spawn(serve(daemon, socket));
        let mut client = Client {
            stream: client,
            buf: BytesMut::new(),
        };
        let hello = Hello {
            identifier: "test.serve".into(),
            version: "1.3.0".into(),
            features: Vec::new(),
        };
        client.send(Kind::Hello, 0, &hello).await;
        let f = client.frame().await;
        assert_eq!(f.kind, Kind::Hello);
        let theirs: Hello = wire::decode(&f.payload).unwrap();
        assert_eq!(theirs.version, "1.0.0");
        (client, task)
    }

    #[tokio::test]
    async fn calls_are_answered_in_order_and_keepalives_echoed() {
        let (mut c, task) = connect().await;
        let mut batch = BytesMut::new();
        for id in 1..=50u64 {
            wire::encode(
                Kind::Call,
                id,
                &Req::Echo(id.to_string()),
                1 << 20,
                &mut batch,
            )
            .unwrap();
        }
        wire::keepalive(&mut batch);
        c.stream.write_all(&batch).await.unwrap();
        for id in 1..=50u64 {
            assert_eq!(c.reply(id).await, id.to_string());
        }
        assert_eq!(c.frame().await.kind, Kind::Keepalive);
        drop(c);
        assert!(task.await.unwrap().is_ok());
    }

    #[tokio::test]
    async fn a_push_made_during_a_call_goes_before_its_reply() {
        let (mut c, _task) = connect().await;
        c.send(Kind::Call, 7, &Req::PushFirst("news".into())).await;
        let push = c.frame().await;
        assert_eq!((push.kind, push.id), (Kind::Push, 0));
        assert_eq!(wire::decode::<String>(&push.payload).unwrap(), "news");
        assert_eq!(c.reply(7).await, "news");
    }

    #[tokio::test]
    async fn every_call_gets_exactly_one_answer() {
        let (mut c, _task) = connect().await;
        c.send(Kind::Call, 1, &Req::AnswerEarly("early".into()))
            .await;
        c.send(Kind::Call, 2, &Req::AnswerTwice).await;
        c.send(Kind::Call, 3, &Req::Forget).await;
        c.send(Kind::Call, 4, &Req::Drop).await;
        c.send(Kind::Call, 5, &Req::Echo("last".into())).await;
        assert_eq!(c.reply(1).await, "early");
        assert_eq!(c.reply(2).await, "deferred");
        assert_eq!(c.error(3).await.code, codes::NO_REPLY);
        assert_eq!(c.error(4).await.code, codes::NO_REPLY);
        assert_eq!(c.reply(5).await, "last");
    }

    #[tokio::test]
    async fn a_bad_request_is_answered_and_the_connection_goes_on() {
        let (mut c, _task) = connect().await;
        c.send(Kind::Call, 9, &42u32).await;
        let err = c.error(9).await;
        assert_eq!(err.code, codes::BAD_REQUEST);
        assert!(err.message.starts_with("bad request"), "{}", err.message);
        c.send(Kind::Cast, 0, &"not a request").await;
        c.send(Kind::Call, 10, &Req::Echo("still here".into()))
            .await;
        assert_eq!(c.reply(10).await, "still here");
    }

    #[tokio::test]
    async fn a_failing_call_is_answered_then_the_connection_ends_with_an_error() {
        let (mut c, task) = connect().await;
        c.send(Kind::Call, 3, &Req::Fail).await;
        let err = c.error(3).await;
        assert_eq!(
            (err.code.as_str(), err.message.as_str()),
            (codes::SERVER_ERROR, "it failed")
        );
        assert!(c.next().await.is_none());
        drop(c);
        let e = task.await.unwrap().unwrap_err();
        assert_eq!(e.to_string(), "it failed");
    }

    #[tokio::test]
    async fn a_panicking_call_is_answered_server_panic() {
        let (mut c, task) = connect().await;
        c.send(Kind::Call, 4, &Req::Panic).await;
        let err = c.error(4).await;
        assert_eq!(err.code, codes::SERVER_PANIC);
        assert!(
            !err.message.contains("on purpose"),
            "the panic stays on the server"
        );
        assert!(c.next().await.is_none());
        drop(c);
        let e = task.await.unwrap().unwrap_err();
        assert!(e.to_string().contains("on purpose"), "{e}");
    }

    #[tokio::test]
    async fn a_failing_cast_ends_the_connection() {
        let (mut c, task) = connect().await;
        c.send(Kind::Cast, 0, &Req::Fail).await;
        assert_eq!(c.error(0).await.code, codes::SERVER_ERROR);
        assert!(c.next().await.is_none());
        drop(c);
        assert!(task.await.unwrap().is_err());
    }

    #[tokio::test]
    async fn disconnect_sends_the_reply_then_closes() {
        let (mut c, task) = connect().await;
        c.send(Kind::Call, 1, &Req::Disconnect).await;
        assert_eq!(c.reply(1).await, "bye");
        assert!(c.next().await.is_none());
        drop(c);
        assert!(task.await.unwrap().is_ok());
    }

    #[tokio::test]
    async fn out_of_turn_frames_are_bad_frames() {
        for (kind, id) in [
            (Kind::Hello, 0),
            (Kind::Reply, 1),
            (Kind::Push, 0),
            (Kind::Call, 0),
        ] {
            let (mut c, task) = connect().await;
            c.send(kind, id, &"x").await;
            assert_eq!(c.error(0).await.code, codes::BAD_FRAME, "{kind:?}");
            assert!(c.next().await.is_none());
            drop(c);
            assert!(
                task.await.unwrap().is_ok(),
                "a client's fault is no server error"
            );
        }
    }

    struct Refuser;

    impl Service for Refuser {
        type Protocol = Test;
        type Init = ();

        async fn init(_: &Arc<()>, ctx: &mut Ctx<Self>) -> Result<Self, BoxError> {
            Err(format!("no entry for connection {}", ctx.id()).into())
        }

        async fn call(&mut self, _: Req, _: &mut Ctx<Self>) -> Result<Reply<String>, BoxError> {
            Ok(Reply::Later)
        }
    }

    #[tokio::test]
    async fn an_init_error_refuses_the_connection() {
        let (socket, client) = socket_pair();
        let daemon = Arc::new(
            DaemonState::<Refuser>::new((), &RpcOptions::default(), Supervisor::new()).unwrap(),
        );
        let supervisor = daemon.supervisor.clone();
        let task = tokio::spawn(serve(daemon, socket));
        let mut c = Client {
            stream: client,
            buf: BytesMut::new(),
        };
        let hello = Hello {
            identifier: "test.serve".into(),
            version: "1.0.0".into(),
            features: Vec::new(),
        };
        c.send(Kind::Hello, 0, &hello).await;
        let err = c.error(0).await;
        assert_eq!(err.code, codes::SERVER_ERROR);
        assert!(
            err.message.starts_with("no entry for connection"),
            "{}",
            err.message
        );
        assert!(c.next().await.is_none());
        drop(c);
        assert!(task.await.unwrap().is_err());
        assert_eq!(supervisor.count(), 0);
    }
}
