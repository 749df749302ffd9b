//! Feeds arbitrary bytes to a real HTTP listener, through a Unix socket connection, as a client
//! would send them: cut into writes at points the input's first byte chooses, with pauses
//! between them, then a half-close, a hang-up, or a wait for the server to close (see
//! `fuzz/common/http_target.rs`, shared with `tests/http_fuzz.rs`). The listener is started
//! once per process and serves every run.
//!
//! A run fails if anything panics anywhere in the process (libFuzzer aborts on any panic,
//! caught or not: a resource's panic would otherwise become a quiet 500), if telemetry reports
//! a panicked connection or a 5xx answer, if the answer is not valid HTTP/1 (or HTTP/2 frames
//! after the preface), if it holds a file from outside the static folder, if the server
//! neither answers nor closes within 3 s, or if a well-formed request on a new connection is
//! then not answered 200.

#![no_main]

#[path = "../common/fixture.rs"]
mod fixture;
#[path = "../common/http_target.rs"]
mod http_target;

use std::sync::OnceLock;
use std::time::Duration;

use fixture::Fixture;
use http_target::{check_answer, Control, End, Target, Timeouts};
use libfuzzer_sys::fuzz_target;

/// The listener, started once per process on the runtime of `common/fixture.rs`.
fn fixture() -> &'static Fixture<Target> {
    static FIXTURE: OnceLock<Fixture<Target>> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        fixture::start(|| {
            Target::start(Timeouts {
                header_read: Duration::from_millis(10),
                idle: Duration::from_millis(10),
            })
        })
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&control, bytes)) = data.split_first() else {
        return;
    };
    let control = Control::from_byte(control);
    let f = fixture();
    f.runtime.block_on(async {
        let answer = match f.target.exchange(control, bytes).await {
            Ok(answer) => answer,
            Err(e) => panic!("{e}"),
        };
        if let Err(e) = check_answer(bytes, &answer, control.end != End::Drop) {
            panic!(
                "{e}\nanswer: {:?}",
                String::from_utf8_lossy(&answer[..answer.len().min(2000)])
            );
        }
        if let Err(e) = f.target.probe().await {
            panic!("after this input, {e}");
        }
        if let Some(failure) = f.target.watch.failure() {
            panic!("telemetry: {failure}");
        }
    });
});
