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

#[path = "../common/fixture.rs"]
mod fixture;
#[path = "../common/ws_target.rs"]
mod ws_target;

use std::sync::OnceLock;
use std::time::Duration;

use fixture::Fixture;
use libfuzzer_sys::fuzz_target;
use ws_target::{check_answer, Control, End, Target, Timeouts};

/// The listener, started once per process on the runtime of `common/fixture.rs`.
fn fixture() -> &'static Fixture<Target> {
    static FIXTURE: OnceLock<Fixture<Target>> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        fixture::start(|| {
            Target::start(Timeouts {
                read: Duration::from_millis(10),
                ping: Duration::from_millis(4),
            })
        })
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
