//! The RPC frame decoder against hostile bytes, and the worked examples of
//! `docs/rpc-wire.md` against the encoder.
//!
//! The robustness test is a seeded pseudo-random search, the stable-Rust companion of the
//! `fuzz/` crate: random bytes and damaged valid frames, cut at random points as a socket
//! would deliver them. The decoder must never panic, must return the frames a plain reading
//! of the bytes finds, must refuse what that reading refuses, must never grow its buffer
//! for a header it refuses, and must never make room for more than a small multiple of the
//! bytes it was given, whatever length a header announces.

#[path = "common/rng.rs"]
#[allow(dead_code, unreachable_pub)]
mod rng;
use std::panic::{catch_unwind, AssertUnwindSafe};

use rng::Rng;

use atoll::rpc::wire::{
    self, codes, Decoder, ErrorBody, Hello, Kind, WireError, GROW_STEP, HEADER_LEN,
};
use bytes::{BufMut, BytesMut};
use serde::Serialize;

// ===== worked examples =====

/// The document the examples must appear in, byte for byte.
const DOC: &str = include_str!("../docs/rpc-wire.md");

/// The frame as two lines of hex, its header and its payload, as the document shows them.
fn frame_hex<T: Serialize + ?Sized>(kind: Kind, id: u64, value: &T) -> (String, String) {
    let mut out = BytesMut::new();
    wire::encode(kind, id, value, wire::DEFAULT_MAX_FRAME_SIZE, &mut out).unwrap();
    let hex = |b: &[u8]| {
        b.iter()
            .map(|x| format!("{x:02x}"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    (hex(&out[..HEADER_LEN]), hex(&out[HEADER_LEN..]))
}

fn assert_documented(what: &str, (header, payload): (String, String)) {
    assert!(
        DOC.contains(&header),
        "docs/rpc-wire.md lacks the header of {what}: {header}"
    );
    assert!(
        DOC.contains(&payload),
        "docs/rpc-wire.md lacks the payload of {what}: {payload}"
    );
}

/// The requests of the built-in key-value service, as it declares them (`src/rpc/kv.rs`).
#[derive(Serialize)]
#[serde(rename_all = "snake_case")]
#[allow(dead_code)]
enum KvRequest {
    Get {
        key: String,
    },
    Put {
        key: String,
        value: serde_json::Value,
    },
    Delete {
        key: String,
    },
    List,
}

/// Its replies.
#[derive(Serialize)]
#[serde(rename_all = "snake_case")]
#[allow(dead_code)]
enum KvReply {
    Value(Option<serde_json::Value>),
    Stored { previous: Option<serde_json::Value> },
    Deleted { existed: bool },
    Keys(Vec<String>),
}

/// What it pushes when a key changes.
#[derive(Serialize)]
struct KvChange {
    key: String,
    value: Option<serde_json::Value>,
}

#[test]
fn the_documented_examples_are_what_the_encoder_writes() {
    let hello = Hello {
        identifier: "atoll.kv".into(),
        version: "1.0.0".into(),
        features: Vec::new(),
    };
    assert_documented("the hello", frame_hex(Kind::Hello, 0, &hello));
    let put = KvRequest::Put {
        key: "a".into(),
        value: 1.into(),
    };
    assert_documented("the put call", frame_hex(Kind::Call, 1, &put));
    let stored = KvReply::Stored { previous: None };
    assert_documented("the stored reply", frame_hex(Kind::Reply, 1, &stored));
    let change = KvChange {
        key: "a".into(),
        value: Some(1.into()),
    };
    assert_documented("the push", frame_hex(Kind::Push, 0, &change));
    assert_documented("the list call", frame_hex(Kind::Call, 2, &KvRequest::List));
    let keys = KvReply::Keys(vec!["a".into()]);
    assert_documented("the keys reply", frame_hex(Kind::Reply, 2, &keys));
    let refusal = ErrorBody::new(
        codes::WRONG_IDENTIFIER,
        "wrong identifier: expected `atoll.kv`, got `kv`",
    );
    assert_documented("the refusal", frame_hex(Kind::Error, 0, &refusal));
    let mut keepalive = BytesMut::new();
    wire::keepalive(&mut keepalive);
    assert!(DOC.contains("a7 11 01 00 00 00 00 00 00 00 00 00 00 00 00 00"));
    assert_eq!(keepalive.len(), HEADER_LEN);
}

#[test]
fn the_documented_codes_are_the_codes() {
    for code in [
        codes::WRONG_IDENTIFIER,
        codes::INCOMPATIBLE_VERSION,
        codes::BAD_FRAME,
        codes::FRAME_TOO_LARGE,
        codes::FRAME_TIMEOUT,
        codes::BAD_REQUEST,
        codes::SERVER_ERROR,
        codes::SERVER_PANIC,
        codes::NO_REPLY,
        codes::SHUTTING_DOWN,
    ] {
        assert!(
            DOC.contains(&format!("| `{code}` |")),
            "docs/rpc-wire.md has no row for `{code}`"
        );
    }
}

// ===== robustness =====

/// Inputs tried; with the seed below, the same ones on every run.
const CASES: usize = 200_000;
const SEED: u64 = 0x5eed_a711_c0de;

/// What a plain reading of the whole input finds: its frames, and the fault that stops it,
/// if any (none when it ends inside a frame or between frames).
struct Reading {
    frames: Vec<(u8, u64, Vec<u8>)>,
    fault: Option<WireError>,
}

fn read_plainly(mut data: &[u8], max: usize) -> Reading {
    let mut frames = Vec::new();
    let fault = loop {
        let Some(&first) = data.first() else {
            break None;
        };
        if first != 0xA7 {
            break Some(WireError::BadMagic([
                first,
                data.get(1).copied().unwrap_or(0),
            ]));
        }
        if data.get(1).is_some_and(|&second| second != 0x11) {
            break Some(WireError::BadMagic([data[0], data[1]]));
        }
        if data.len() < HEADER_LEN {
            break None;
        }
        if data[2] != wire::WIRE_VERSION {
            break Some(WireError::WireVersion(data[2]));
        }
        if data[3] > 7 {
            break Some(WireError::UnknownKind(data[3]));
        }
        let len = u32::from_be_bytes(data[4..8].try_into().unwrap()) as usize;
        if len > max {
            break Some(WireError::TooLarge {
                len: len as u64,
                max,
            });
        }
        if data.len() < HEADER_LEN + len {
            break None;
        }
        let id = u64::from_be_bytes(data[8..16].try_into().unwrap());
        frames.push((data[3], id, data[HEADER_LEN..HEADER_LEN + len].to_vec()));
        data = &data[HEADER_LEN + len..];
    };
    Reading { frames, fault }
}

/// One to four valid frames, with payloads the protocol sends and payloads of random bytes.
fn valid_frames(rng: &mut Rng, max: usize) -> Vec<u8> {
    let mut out = BytesMut::new();
    for _ in 0..1 + rng.below(4) {
        let kind = Kind::from_byte(rng.below(8) as u8).unwrap();
        let id = if rng.chance(50) { 0 } else { rng.next() };
        let encoded = match rng.below(4) {
            0 => wire::encode(
                kind,
                id,
                &Hello {
                    identifier: "atoll.kv".into(),
                    version: "1.0.0".into(),
                    features: Vec::new(),
                },
                max,
                &mut out,
            ),
            1 => wire::encode(
                kind,
                id,
                &ErrorBody::new(codes::BAD_REQUEST, "no"),
                max,
                &mut out,
            ),
            _ => {
                // Payload lengths cluster at the edges: empty, and around the maximum.
                let len = match rng.below(4) {
                    0 => 0,
                    1 => max.saturating_sub(rng.below(3)),
                    _ => rng.below(max.min(64) + 1),
                };
                wire::encode_raw(kind, id, &rng.bytes(len), &mut out).unwrap();
                Ok(())
            }
        };
        // A hello over a tiny maximum is not encoded; the stream simply lacks it.
        assert!(encoded.is_ok() || max < 40);
    }
    out.to_vec()
}

/// Damages a valid stream: flipped bytes, a cut, a length near or over the maximum, another
/// version or type byte.
fn damage(rng: &mut Rng, data: &mut Vec<u8>, max: usize) {
    for _ in 0..1 + rng.below(3) {
        if data.is_empty() {
            return;
        }
        match rng.below(6) {
            0 => {
                let at = rng.below(data.len());
                data[at] ^= 1 << rng.below(8);
            }
            1 => {
                let at = rng.below(data.len());
                data[at] = rng.next() as u8;
            }
            2 => data.truncate(rng.below(data.len())),
            // Header fields of the first frame, the ones the decoder checks before anything
            // is reserved.
            3 if data.len() >= HEADER_LEN => {
                let len: u64 = match rng.below(6) {
                    0 => max as u64,
                    1 => max as u64 + 1,
                    2 => max as u64 + 1 + rng.below(64) as u64,
                    3 => u64::from(u32::MAX),
                    4 => max.saturating_sub(1) as u64,
                    _ => rng.next() & 0xffff_ffff,
                };
                let len = len.min(u64::from(u32::MAX)) as u32;
                data[4..8].copy_from_slice(&len.to_be_bytes());
            }
            4 if data.len() >= HEADER_LEN => data[2] = rng.next() as u8,
            _ if data.len() >= HEADER_LEN => data[3] = rng.next() as u8,
            _ => data.push(rng.next() as u8),
        }
    }
}

/// Feeds `data` in random cuts, as reads from a socket, and checks every step. Returns the
/// frames and the fault the decoder reported.
fn feed(rng: &mut Rng, data: &[u8], max: usize) -> Reading {
    let decoder = Decoder::new(max);
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    let mut given = 0;
    let mut rest = data;
    let style = rng.below(3);
    while !rest.is_empty() {
        let n = match style {
            0 => rest.len(),
            1 => 1,
            _ => 1 + rng.below(rest.len()),
        };
        buf.put_slice(&rest[..n]);
        rest = &rest[n..];
        given += n;
        loop {
            let before = buf.capacity();
            let step = decoder.decode(&mut buf);
            let capacity = buf.capacity();
            let whole = matches!(step, Ok(Some(_)));
            match step {
                Ok(Some(frame)) => {
                    assert!(
                        frame.payload.len() <= max,
                        "a payload of {} bytes passed a maximum of {max}",
                        frame.payload.len()
                    );
                    frames.push((frame.kind as u8, frame.id, frame.payload.to_vec()));
                }
                Ok(None) => {}
                Err(fault) => {
                    assert_eq!(
                        capacity, before,
                        "the refused header ({fault}) grew the buffer"
                    );
                    return Reading {
                        frames,
                        fault: Some(fault),
                    };
                }
            }
            assert_grown_by_arrivals(capacity, given, max);
            if !whole {
                break;
            }
        }
    }
    Reading {
        frames,
        fault: None,
    }
}

/// The read buffer's bound: the decoder makes room for at most as many bytes again as it
/// holds (or [`GROW_STEP`]), and `BytesMut` may double an allocation when it grows, so the
/// capacity stays within four times what was given, plus two steps, whatever the headers
/// announce.
fn assert_grown_by_arrivals(capacity: usize, given: usize, max: usize) {
    assert!(
        capacity <= 4 * given + 2 * GROW_STEP,
        "capacity {capacity} after {given} bytes, maximum {max}"
    );
}

/// One input: what it is made of depends on the case's own draws only, so a failure names
/// the case to replay.
fn one_case(rng: &mut Rng) -> (Vec<u8>, usize) {
    let max = [0, 1, 16, 40, 100, 300, 1024, 3 * GROW_STEP][rng.below(8)];
    let data = match rng.below(10) {
        // Random bytes, most of which fail at the first byte.
        0 => {
            let n = rng.below(48);
            rng.bytes(n)
        }
        // Random bytes after a good magic and version: the header checks.
        1 => {
            let n = rng.below(48);
            let mut d = vec![0xA7, 0x11, wire::WIRE_VERSION];
            d.extend(rng.bytes(n));
            d
        }
        // Valid streams, whole.
        2 | 3 => valid_frames(rng, max),
        // Valid streams, damaged.
        _ => {
            let mut d = valid_frames(rng, max);
            damage(rng, &mut d, max);
            d
        }
    };
    (data, max)
}

#[test]
fn the_decoder_survives_random_and_damaged_frames() {
    let mut rng = Rng(SEED);
    let mut seen_frames = 0usize;
    let mut seen_faults = [0usize; 4];
    for case in 0..CASES {
        let (data, max) = one_case(&mut rng);
        let mut split_rng = Rng(rng.next() | 1);
        let outcome = catch_unwind(AssertUnwindSafe(|| feed(&mut split_rng, &data, max)));
        let got = outcome.unwrap_or_else(|_| {
            panic!("case {case}: the decoder panicked (max {max}) on {data:02x?}")
        });
        let want = read_plainly(&data, max);
        assert!(
            got.frames == want.frames,
            "case {case}: frames differ (max {max}) on {data:02x?}"
        );
        match (&got.fault, &want.fault) {
            // Bad magic is reported from the first byte on, so the second byte it names
            // depends on where the input was cut.
            (Some(WireError::BadMagic(g)), Some(WireError::BadMagic(w))) => {
                assert_eq!(g[0], w[0], "case {case}")
            }
            (g, w) => assert_eq!(g, w, "case {case}: on {data:02x?}"),
        }
        seen_frames += got.frames.len();
        if let Some(fault) = &got.fault {
            let slot = match fault {
                WireError::BadMagic(_) => 0,
                WireError::WireVersion(_) => 1,
                WireError::UnknownKind(_) => 2,
                _ => 3,
            };
            seen_faults[slot] += 1;
        }
    }
    // The search reached every path, not just the first-byte check.
    assert!(seen_frames > CASES / 2, "{seen_frames} frames");
    assert!(
        seen_faults.iter().all(|&n| n > 1000),
        "faults seen: {seen_faults:?}"
    );
}

#[test]
fn a_header_over_the_maximum_fails_alone_whatever_follows() {
    // The header announces u32::MAX bytes; the decoder must refuse it without waiting for
    // them, and without reserving any of them.
    let decoder = Decoder::new(1024);
    let mut buf = BytesMut::new();
    buf.put_slice(&[0xA7, 0x11, wire::WIRE_VERSION, Kind::Call as u8]);
    buf.put_u32(u32::MAX);
    buf.put_u64(9);
    let before = buf.capacity();
    let fault = decoder.decode(&mut buf).unwrap_err();
    assert_eq!(fault.code(), codes::FRAME_TOO_LARGE);
    assert_eq!(buf.capacity(), before);
    // At the maximum exactly, the frame is fine and the buffer grows to hold it.
    let mut buf = BytesMut::new();
    buf.put_slice(&[0xA7, 0x11, wire::WIRE_VERSION, Kind::Call as u8]);
    buf.put_u32(1024);
    buf.put_u64(9);
    assert_eq!(decoder.decode(&mut buf), Ok(None));
    assert!(buf.capacity() >= HEADER_LEN + 1024);
    buf.put_slice(&[0; 1024]);
    let frame = decoder.decode(&mut buf).unwrap().unwrap();
    assert_eq!(
        (frame.kind, frame.id, frame.payload.len()),
        (Kind::Call, 9, 1024)
    );
}

#[test]
fn an_announced_length_reserves_nothing_beyond_what_arrived() {
    // Headers announcing up to 1 GiB under a maximum that allows it, followed by part of
    // their payload, cut at random: the buffer follows the bytes, never the announcement.
    let max = 1 << 30;
    let decoder = Decoder::new(max);
    let mut rng = Rng(SEED ^ 0x5eed);
    for case in 0..2_000 {
        let announced = rng.below(max + 1);
        let sent = rng.below(announced.min(200_000) + 1);
        let mut data = Vec::with_capacity(HEADER_LEN + sent);
        data.extend([0xA7, 0x11, wire::WIRE_VERSION, Kind::Call as u8]);
        data.extend((announced as u32).to_be_bytes());
        data.extend(7u64.to_be_bytes());
        data.extend(rng.bytes(sent));
        let mut buf = BytesMut::new();
        let mut given = 0;
        let mut rest = &data[..];
        while !rest.is_empty() {
            let n = (1 + rng.below(20_000)).min(rest.len());
            buf.put_slice(&rest[..n]);
            rest = &rest[n..];
            given += n;
            let whole = decoder
                .decode(&mut buf)
                .expect("a header within the maximum");
            assert_eq!(
                whole.is_some(),
                given == HEADER_LEN + announced,
                "case {case}"
            );
            assert_grown_by_arrivals(buf.capacity(), given, max);
        }
    }
}
