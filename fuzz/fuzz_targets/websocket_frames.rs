//! Feeds arbitrary frames to a real WebSocket route, through a Unix socket connection that
//! has done the opening handshake, as a client would send them: cut into writes at points
//! the input's first byte chooses, with pauses between them, then a half-close, a hang-up or
//! a wait for the server to close. The second byte's bit 0 offers permessage-deflate (see
//! `fuzz/common/ws_target.rs`, shared with `tests/websocket_fuzz.rs`). The listener is
//! started once per process and serves every run.
//!
//! A run fails if anything panics anywhere in the process, if telemetry reports a panicked
//! connection, if what the server sends is not frames a server may send, if its echoes are
//! not the client's messages in order, if the server neither closes nor goes quiet within
//! 3 s, or if a well-formed exchange on a new connection is then not echoed.

#![no_main]

#[path = "../common/ws_target.rs"]
mod ws_target;

use std::sync::OnceLock;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use tokio::runtime::Runtime;
use ws_target::{check_answer, Control, End, Target, Timeouts};

/// One thread runs the client and the server alike, so a run is the same run every time: the
/// server reads exactly what the client has written when the client pauses.
struct Fixture {
    runtime: Runtime,
    target: Target,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        // libFuzzer's `main` is not Rust's, which would have ignored SIGPIPE: without this, a
        // server answering a client that hung up would kill the process.
        // SAFETY: setting a signal's disposition to SIG_IGN, before any other thread runs.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_IGN);
        }
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let target = runtime.block_on(async {
            Target::start(Timeouts {
                read: Duration::from_millis(10),
                ping: Duration::from_millis(4),
            })
        });
        Fixture { runtime, target }
    })
}

fuzz_target!(|data: &[u8]| {
    let [control, options, bytes @ ..] = data else {
        return;
    };
    let control = Control::from_byte(*control);
    let deflate = options & 1 != 0;
    let f = fixture();
    f.runtime.block_on(async {
        let exchange = match f.target.exchange(control, deflate, bytes).await {
            Ok(exchange) => exchange,
            Err(e) => panic!("{e}"),
        };
        if let Err(e) = check_answer(bytes, &exchange, control.end != End::Drop) {
            let answer = &exchange.answer;
            panic!(
                "{e}\nanswer: b\"{}\"",
                answer[..answer.len().min(2000)].escape_ascii()
            );
        }
        if let Some(failure) = f.target.watch.failure() {
            panic!("telemetry: {failure}");
        }
        if let Err(e) = f.target.probe().await {
            panic!("after this input, {e}");
        }
    });
});
