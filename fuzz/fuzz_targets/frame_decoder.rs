//! Feeds arbitrary bytes to the RPC frame decoder, in chunks of fuzzer-chosen sizes, as a
//! socket would deliver them, and decodes every frame's payload as the protocol's own payloads
//! and as a nested service request. Nothing may panic, no frame may be over the maximum, the
//! read buffer may never grow for a header the decoder refuses, and its capacity follows the
//! bytes given, never the lengths headers announce: at most four times what was given plus two
//! [`GROW_STEP`]s (the decoder makes room for as much again as it holds, and `BytesMut` may
//! double an allocation when it grows). The maximum is large, so announced lengths far beyond
//! the input are accepted and must not be reserved.

#![no_main]

use std::collections::BTreeMap;

use atoll::rpc::wire::{self, Decoder, ErrorBody, Frame, Hello, Kind, GROW_STEP};
use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use serde::Deserialize;

/// A small maximum, so the fuzzer reaches whole frames, and the "too large" path, easily.
const MAX: usize = 4096;

/// A large maximum, chosen by the split byte's top bit: headers announcing up to 1 GiB are
/// accepted, and nothing may be reserved for what has not arrived.
const LARGE_MAX: usize = 1 << 30;

/// The maximum for re-encoding what was decoded: the decoder also reads structs sent as
/// arrays, so the re-encoded map, with field names, may be a little longer.
fn reencode_max(frame: &Frame) -> usize {
    2 * frame.payload.len() + 64
}

/// A service request with every shape of serde data: unit, newtype, tuple and struct
/// variants, options, sequences, maps, any value, and recursion.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "snake_case")]
#[allow(dead_code)]
enum Request {
    Ping,
    Get(String),
    Range(u64, Option<u64>),
    Put {
        key: String,
        value: serde_json::Value,
        tags: Vec<String>,
    },
    Batch(Vec<Request>),
    Not(Box<Request>),
    Meta(Meta),
}

#[derive(Debug, Deserialize)]
#[allow(dead_code)]
struct Meta {
    id: u32,
    flags: BTreeMap<String, bool>,
    ratio: f64,
    bytes: Vec<u8>,
    inner: Option<Box<Meta>>,
}

/// Chunk sizes: xorshift32, so one seed byte gives a reproducible split.
struct Chunks(u32);

impl Chunks {
    fn next(&mut self, spread: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 17;
        self.0 ^= self.0 << 5;
        1 + self.0 as usize % spread
    }
}

fuzz_target!(|data: &[u8]| {
    // The first byte chooses the split: 0 feeds everything at once, n feeds chunks of
    // 1 ..= 16 n bytes.
    let Some((&split, mut rest)) = data.split_first() else {
        return;
    };
    let decoder = Decoder::new(if split & 0x80 == 0 { MAX } else { LARGE_MAX });
    let mut chunks = Chunks(u32::from(split) | 0x5a00);
    let mut buf = BytesMut::new();
    let mut given = 0usize;
    while !rest.is_empty() {
        let n = match split {
            0 => rest.len(),
            s => chunks.next(usize::from(s) * 16).min(rest.len()),
        };
        buf.extend_from_slice(&rest[..n]);
        rest = &rest[n..];
        given += n;
        loop {
            let before = buf.capacity();
            match decoder.decode(&mut buf) {
                Ok(Some(frame)) => check_frame(&frame, decoder.max_frame_size()),
                Ok(None) => break,
                Err(e) => {
                    // A refused header reserves nothing; the connection would now close.
                    assert_eq!(buf.capacity(), before, "{e}");
                    assert!(!e.code().is_empty() && !e.to_string().is_empty());
                    return;
                }
            }
            assert!(
                buf.capacity() <= 4 * given + 2 * GROW_STEP,
                "capacity {} after {given} bytes",
                buf.capacity()
            );
        }
    }
});

fn check_frame(frame: &Frame, max: usize) {
    assert!(
        frame.payload.len() <= max,
        "payload {}",
        frame.payload.len()
    );
    if let Ok(hello) = wire::decode::<Hello>(&frame.payload) {
        // What decodes must encode again, and come back the same.
        let mut out = BytesMut::new();
        wire::encode(frame.kind, frame.id, &hello, reencode_max(frame), &mut out)
            .expect("hello re-encodes");
        let again = Decoder::new(reencode_max(frame))
            .decode(&mut out)
            .expect("re-encoded header is valid")
            .expect("re-encoded frame is whole");
        assert_eq!((again.kind, again.id), (frame.kind, frame.id));
        assert_eq!(wire::decode::<Hello>(&again.payload).as_ref(), Ok(&hello));
    }
    if let Ok(error) = wire::decode::<ErrorBody>(&frame.payload) {
        let mut out = BytesMut::new();
        wire::encode(Kind::Error, frame.id, &error, reencode_max(frame), &mut out)
            .expect("error re-encodes");
    }
    let _ = wire::decode::<Request>(&frame.payload);
    let _ = wire::decode::<serde_json::Value>(&frame.payload);
}
