//! Hostile frames against a real WebSocket route: the seeded, stable-Rust companion of the
//! `websocket_frames` target of the `fuzz/` crate, sharing its route, its way of sending an
//! input and its checks (`fuzz/common/ws_target.rs`).
//!
//! Well-formed exchanges first, each echoed whole, in one write and in writes of a few bytes;
//! then a few thousand damaged ones (reserved bits, unknown opcodes, unmasked frames, control
//! frames too long or fragmented, continuations out of place, lengths that lie, frames and
//! messages over the limits, invalid UTF-8, compressed data that does not inflate, bad close
//! codes, bytes cut short), each on its own connection, in writes cut at random points, with
//! pauses, then a half-close, a hang-up or a wait for the server to close. What the server
//! sends must be frames a server may send, its echoes the client's messages in order, the
//! connection must end within its deadline, telemetry must report no panic, and a
//! well-formed exchange on a new connection must then still be echoed.

#[path = "common/rng.rs"]
#[allow(dead_code, unreachable_pub)]
mod rng;
#[path = "../fuzz/common/ws_target.rs"]
mod ws_target;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use rng::Rng;
use ws_target::{
    check_answer, client_frame, deflated, run_within, Control, End, Pause, Seen, Target, Timeouts,
    MAX_FRAME, MAX_MESSAGE,
};

/// Damaged inputs tried; with the seed below, the same ones on every run.
const CASES: usize = 2000;
const SEED: u64 = 0x5eed_3b5e_7a11;

/// The route's timers here: long enough that a slow CI machine never meets them by accident in
/// a well-formed exchange, short enough that a client that stays costs little.
const TIMEOUTS: Timeouts = Timeouts {
    read: Duration::from_millis(80),
    ping: Duration::from_millis(30),
};

// ===== seeds =====

/// One frame of a seed: its first byte (FIN, RSV, opcode) and payload, sent masked.
#[derive(Clone, Debug)]
struct Frame {
    first: u8,
    payload: Vec<u8>,
}

const FIN: u8 = 0x80;
const RSV1: u8 = 0x40;
const TEXT: u8 = 0x1;
const BINARY: u8 = 0x2;
const CLOSE: u8 = 0x8;
const PING: u8 = 0x9;
const PONG: u8 = 0xa;

fn frame(first: u8, payload: impl Into<Vec<u8>>) -> Frame {
    Frame {
        first,
        payload: payload.into(),
    }
}

fn close(code: u16, reason: &str) -> Frame {
    let mut payload = code.to_be_bytes().to_vec();
    payload.extend_from_slice(reason.as_bytes());
    frame(FIN | CLOSE, payload)
}

/// A well-formed exchange: the frames, whether it needs permessage-deflate, and the messages
/// it sends.
struct Seed {
    frames: Vec<Frame>,
    deflate: bool,
    messages: usize,
}

fn seed(deflate: bool, messages: usize, frames: Vec<Frame>) -> Seed {
    Seed {
        frames,
        deflate,
        messages,
    }
}

fn seeds() -> Vec<Seed> {
    let bytes: Vec<u8> = (0..=255).collect();
    let big: Vec<u8> = (0..6000u32).map(|i| (i * 7 % 251) as u8).collect();
    let snow = "snow ☃ and ice ❄ ".repeat(3);
    // A three-byte character cut between two fragments.
    let cut = snow.len() / 2 + 1;
    vec![
        seed(false, 1, vec![frame(FIN | TEXT, "hello")]),
        seed(false, 1, vec![frame(FIN | BINARY, bytes.clone())]),
        seed(
            false,
            2,
            vec![frame(FIN | TEXT, ""), frame(FIN | BINARY, [])],
        ),
        seed(
            false,
            1,
            vec![
                frame(TEXT, &snow.as_bytes()[..cut]),
                frame(FIN | PING, "between"),
                frame(0, &snow.as_bytes()[cut..cut + 5]),
                frame(FIN | PONG, "unasked"),
                frame(FIN, &snow.as_bytes()[cut + 5..]),
            ],
        ),
        // Over 4 KiB: gathered whole before the framing sees it.
        seed(false, 1, vec![frame(FIN | BINARY, big.clone())]),
        seed(false, 1, vec![frame(FIN | BINARY, vec![7u8; MAX_FRAME])]),
        // Two big fragments, a message of 12,000 bytes.
        seed(
            false,
            1,
            vec![frame(BINARY, big.clone()), frame(FIN, big.clone())],
        ),
        seed(
            false,
            3,
            vec![
                frame(FIN | TEXT, "one"),
                frame(FIN | PING, ""),
                frame(FIN | BINARY, "two"),
                frame(FIN | TEXT, "three"),
                close(1000, "done"),
            ],
        ),
        seed(false, 1, vec![frame(FIN | TEXT, "bye"), close(4000, "app")]),
        seed(false, 0, vec![frame(FIN | CLOSE, [])]),
        seed(
            true,
            1,
            vec![frame(FIN | RSV1 | TEXT, deflated(snow.as_bytes()))],
        ),
        seed(
            true,
            2,
            vec![
                frame(FIN | RSV1 | BINARY, deflated(&big)),
                frame(FIN | TEXT, "not compressed"),
            ],
        ),
        // A compressed message in three fragments, RSV1 on the first alone.
        seed(true, 1, {
            let z = deflated(&[b'z'; 10_000]);
            let third = z.len() / 3;
            vec![
                frame(RSV1 | TEXT, &z[..third]),
                frame(FIN | PING, "mid"),
                frame(0, &z[third..2 * third]),
                frame(FIN, &z[2 * third..]),
            ]
        }),
        seed(
            true,
            1,
            vec![
                frame(FIN | RSV1 | BINARY, deflated(&bytes)),
                close(1001, ""),
            ],
        ),
    ]
}

// ===== damage =====

/// How a frame is written out: masked or not, and its length as the frame says it.
#[derive(Clone, Copy, Debug)]
enum Length {
    /// The payload's own, in its shortest form.
    True,
    /// The payload's own, in a longer form than needed (126 or 127 for a short payload).
    Padded,
    /// Another length than the payload's: the frame lies.
    Lie(u64),
}

fn write_frame(out: &mut Vec<u8>, f: &Frame, masked: bool, length: Length) {
    out.push(f.first);
    let mask = if masked { 0x80 } else { 0 };
    let (len, padded) = match length {
        Length::True => (f.payload.len() as u64, false),
        Length::Padded => (f.payload.len() as u64, true),
        Length::Lie(n) => (n, false),
    };
    if len < 126 && !padded {
        out.push(mask | len as u8);
    } else if len < 126 || (len <= 0xffff && !padded) {
        out.push(mask | 126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(mask | 127);
        out.extend_from_slice(&len.to_be_bytes());
    }
    if masked {
        out.extend(ws_target::masked(&f.payload));
    } else {
        out.extend_from_slice(&f.payload);
    }
}

/// Damages a seed's frames, then writes them out, then perhaps damages the bytes.
fn damaged(rng: &mut Rng, frames: &mut Vec<Frame>) -> Vec<u8> {
    let mut unmasked = None;
    let mut lie = None;
    for _ in 0..1 + rng.below(3) {
        let i = rng.below(frames.len() + 1);
        match rng.below(12) {
            // Reserved bits.
            0 if i < frames.len() => frames[i].first ^= 0x10 << rng.below(3),
            // Another opcode, known or not.
            1 if i < frames.len() => {
                frames[i].first = (frames[i].first & 0xf0) | rng.below(16) as u8
            }
            // FIN flipped: a control frame fragmented, a message left open or ended early.
            2 if i < frames.len() => frames[i].first ^= FIN,
            // A control frame too long.
            3 => frames.insert(
                i,
                frame(FIN | *rng.pick(&[PING, PONG, CLOSE]), vec![b'p'; 126]),
            ),
            // Invalid UTF-8 in a text message, or in a close reason.
            4 => frames.insert(
                i,
                if rng.chance(50) {
                    frame(FIN | TEXT, b"ok \xc3\x28 no".to_vec())
                } else {
                    frame(FIN | CLOSE, b"\x03\xe8\xff\xfe".to_vec())
                },
            ),
            // A close code no peer may send, or a close frame of one byte.
            5 => {
                let code = *rng.pick(&[0u16, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000]);
                frames.insert(
                    i,
                    if rng.chance(80) {
                        close(code, "")
                    } else {
                        frame(FIN | CLOSE, [3])
                    },
                );
            }
            // Over the frame or the message limit.
            6 => {
                if rng.chance(50) {
                    frames.insert(i, frame(FIN | BINARY, vec![1u8; MAX_FRAME + 1]));
                } else {
                    // Three fragments within the frame limit, together over the message limit.
                    let part = MAX_MESSAGE / 3 + 1;
                    frames.insert(i, frame(BINARY, vec![1u8; part]));
                    frames.insert(i + 1, frame(0, vec![2u8; part]));
                    frames.insert(i + 2, frame(FIN, vec![3u8; part]));
                }
            }
            // Compressed: garbage, a bomb over the message limit, or RSV1 where it is not
            // allowed (a continuation).
            7 => {
                let payload = match rng.below(3) {
                    0 => {
                        let n = 1 + rng.below(40);
                        rng.bytes(n)
                    }
                    1 => deflated(&vec![0u8; MAX_MESSAGE * 4]),
                    _ => deflated(b"fine"),
                };
                frames.insert(i, frame(FIN | RSV1 | BINARY, payload));
                if rng.chance(30) {
                    frames.insert(i, frame(BINARY, []));
                }
            }
            // A continuation out of place, or a message inside a message.
            8 => frames.insert(i, frame(*rng.pick(&[0u8, FIN, TEXT]), "x")),
            // A frame left unmasked.
            9 if i < frames.len() => unmasked = Some(i),
            // A length that lies: short of the payload, past it, or far past any limit.
            10 if i < frames.len() => {
                let len = frames[i].payload.len() as u64;
                let n = match rng.below(4) {
                    0 => len.saturating_sub(1 + rng.below(8) as u64),
                    1 => len + 1 + rng.below(8) as u64,
                    2 => 1 << 63 | len,
                    _ => 1 << 40,
                };
                lie = Some((i, n));
            }
            // Many small frames: empty fragments and pings.
            _ => {
                let n = 1 + rng.below(60);
                frames.insert(i, frame(TEXT, ""));
                for k in 0..n {
                    let f = if k % 3 == 0 {
                        frame(FIN | PING, [k as u8])
                    } else {
                        frame(0, [b'a' + (k % 26) as u8])
                    };
                    frames.insert(i + 1 + k, f);
                }
                frames.insert(i + 1 + n, frame(FIN, "."));
            }
        }
    }
    let mut bytes = Vec::new();
    for (k, f) in frames.iter().enumerate() {
        let length = match lie {
            Some((at, n)) if at == k => Length::Lie(n),
            _ if rng.chance(3) => Length::Padded,
            _ => Length::True,
        };
        write_frame(&mut bytes, f, unmasked != Some(k), length);
    }
    // Bytes damaged as bytes: one flipped, a span dropped, or the input cut short.
    if !bytes.is_empty() && rng.chance(25) {
        let at = rng.below(bytes.len());
        match rng.below(3) {
            0 => bytes[at] ^= 1 << rng.below(8),
            1 => {
                let end = (at + 1 + rng.below(16)).min(bytes.len());
                bytes.drain(at..end);
            }
            _ => bytes.truncate(at),
        }
    }
    bytes
}

fn control(rng: &mut Rng) -> Control {
    let pause = match rng.below(100) {
        0 => Pause::Stall,
        1..=5 => Pause::Tick,
        6..=40 => Pause::Settle,
        _ => Pause::Yield,
    };
    let end = match rng.below(100) {
        0..=1 => End::Stay,
        2..=13 => End::Drop,
        _ => End::HalfClose,
    };
    let spread = if rng.chance(30) {
        0
    } else {
        rng.below(16) as u8
    };
    Control { spread, pause, end }
}

/// How to replay an input: its bytes with the control and options bytes first, as a fuzz
/// input file holds them, in Rust's escaped form.
fn describe(control: Control, deflate: bool, bytes: &[u8]) -> String {
    let mut out = String::new();
    let _ = write!(
        out,
        "control {control:?} (bytes {:#04x} {:#04x}), ",
        control.to_byte(),
        u8::from(deflate)
    );
    let shown = &bytes[..bytes.len().min(2000)];
    let _ = write!(out, "input b\"{}\"", shown.escape_ascii());
    if bytes.len() > shown.len() {
        let _ = write!(out, "... ({} bytes)", bytes.len());
    }
    out
}

// ===== the run =====

/// One exchange and every check after it.
async fn attempt(
    target: &Target,
    control: Control,
    deflate: bool,
    bytes: &[u8],
) -> Result<Seen, String> {
    let exchange = target.exchange(control, deflate, bytes).await?;
    let seen = check_answer(bytes, &exchange, control.end != End::Drop).map_err(|e| {
        let answer = &exchange.answer;
        format!(
            "{e}; answer: b\"{}\"",
            answer[..answer.len().min(600)].escape_ascii()
        )
    })?;
    if let Some(failure) = target.watch.failure() {
        return Err(format!("telemetry: {failure}"));
    }
    target
        .probe()
        .await
        .map_err(|e| format!("after this input, {e}"))?;
    Ok(seen)
}

/// A whole-run bound, beside each exchange's own, so a hang fails fast.
const RUN_LIMIT: Duration = Duration::from_secs(150);

fn run<F: std::future::Future<Output = ()>>(test: impl FnOnce() -> F) {
    run_within(RUN_LIMIT, test);
}

fn bytes_of(frames: &[Frame]) -> Vec<u8> {
    frames
        .iter()
        .flat_map(|f| client_frame(f.first, &f.payload))
        .collect()
}

#[test]
fn well_formed_frames_are_echoed_whole() {
    run(|| async {
        let target = Target::start(TIMEOUTS);
        let mut wrong = Vec::new();
        for seed in seeds() {
            let bytes = bytes_of(&seed.frames);
            let last_close = seed.frames.last().filter(|f| f.first & 0x0f == CLOSE).map(
                |f| match f.payload[..] {
                    [a, b, ..] => u16::from_be_bytes([a, b]),
                    _ => 1005,
                },
            );
            // In one write, in writes of 1 to 8 bytes, in writes of 1 to 120 bytes with the
            // server running until it is done between them; the client half-closes, or
            // stays until the read timeout closes the connection (1000).
            for control in [0x00u8, 0x01, 0x1f, 0xc0] {
                let control = Control::from_byte(control);
                let input = describe(control, seed.deflate, &bytes);
                let seen = attempt(&target, control, seed.deflate, &bytes)
                    .await
                    .unwrap_or_else(|e| panic!("{e}\n{input}"));
                let close = match (last_close, control.end) {
                    (Some(code), _) => Some(code),
                    (None, End::Stay) => Some(1000),
                    // A half-closed client is gone: no close frame goes to it.
                    (None, _) => None,
                };
                if seen.echoed != seed.messages || seen.sent != seed.messages || seen.close != close
                {
                    wrong.push(format!(
                        "{seen:?} instead of {} echoes and close {close:?}: {input}",
                        seed.messages
                    ));
                }
            }
        }
        assert!(wrong.is_empty(), "wrong answers:\n{}", wrong.join("\n"));
        target.stop().await;
    });
}

#[test]
fn damaged_frames_never_hurt_the_route() {
    run(|| async {
        let target = Target::start(TIMEOUTS);
        let seeds = seeds();
        let mut rng = Rng(SEED);
        let started = Instant::now();
        let mut closes: BTreeMap<u16, usize> = BTreeMap::new();
        let mut echoed = 0;
        for case in 0..CASES {
            let mut deflate = rng.chance(30);
            let mut frames = Vec::new();
            for _ in 0..1 + rng.below(2) {
                let s = rng.pick(&seeds);
                deflate |= s.deflate;
                frames.extend(s.frames.iter().cloned());
            }
            let bytes = damaged(&mut rng, &mut frames);
            let control = control(&mut rng);
            match attempt(&target, control, deflate, &bytes).await {
                Ok(seen) => {
                    echoed += seen.echoed;
                    if let Some(code) = seen.close {
                        *closes.entry(code).or_default() += 1;
                    }
                }
                Err(e) => panic!("case {case}: {e}\n{}", describe(control, deflate, &bytes)),
            }
        }
        eprintln!(
            "{CASES} damaged exchanges in {:?}: {echoed} messages echoed, close codes {closes:?}",
            started.elapsed()
        );
        // The damage reached every refusal: a protocol error, invalid UTF-8, a message too big.
        for code in [1002, 1007, 1009] {
            assert!(
                closes.get(&code).is_some_and(|&n| n > 0),
                "no close {code} in {closes:?}"
            );
        }
        target.stop().await;
    });
}
