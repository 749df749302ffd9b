//! How a fuzz input reaches a server: one control byte chooses how the client cuts the bytes
//! into writes, what it does between writes, and how it ends. Shared by the HTTP and the
//! WebSocket targets (each includes this file with `#[path]`).
#![allow(dead_code, unreachable_pub)]

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The longest a client waits for the server to answer and close, once it has sent its last
/// byte. The targets' own timeouts are far shorter, so reaching it means the server hung.
pub const CLOSE_DEADLINE: Duration = Duration::from_secs(3);

/// How one input goes to the server, from its control byte: bits 0-3 the spread of the writes
/// (`0`: one write; `n`: writes of 1 to 8 n bytes, from a generator seeded by the byte), bits
/// 4-5 the [`Pause`] between writes, bits 6-7 the [`End`].
#[derive(Debug, Clone, Copy)]
pub struct Control {
    pub spread: u8,
    pub pause: Pause,
    pub end: End,
}

/// What the client does between two writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pause {
    /// Lets the server run once.
    Yield,
    /// Lets the server run until it has done what it can with the bytes so far.
    Settle,
    /// Sleeps 1 ms.
    Tick,
    /// Sleeps once, halfway through the input, past the timeout the target gives (the
    /// header read timeout of an HTTP listener, the read timeout of a WebSocket route).
    Stall,
}

/// How the client ends once everything is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// Shuts its writing half and reads until the server closes.
    HalfClose,
    /// Hangs up after a moment, whether answered or not.
    Drop,
    /// Keeps the connection open and reads until the server closes it (its timeouts).
    Stay,
}

impl Control {
    pub fn from_byte(c: u8) -> Control {
        Control {
            spread: c & 0x0f,
            pause: match (c >> 4) & 3 {
                0 => Pause::Yield,
                1 => Pause::Settle,
                2 => Pause::Tick,
                _ => Pause::Stall,
            },
            end: match c >> 6 {
                0 | 1 => End::HalfClose,
                2 => End::Drop,
                _ => End::Stay,
            },
        }
    }

    pub fn to_byte(self) -> u8 {
        let pause = match self.pause {
            Pause::Yield => 0,
            Pause::Settle => 1,
            Pause::Tick => 2,
            Pause::Stall => 3,
        };
        let end = match self.end {
            End::HalfClose => 0,
            End::Drop => 2,
            End::Stay => 3,
        };
        (self.spread & 0x0f) | pause << 4 | end << 6
    }
}

/// Write sizes: xorshift32 seeded by the control byte, so an input always splits the same way.
pub struct Cuts {
    state: u32,
    spread: usize,
}

impl Cuts {
    pub fn new(control: Control) -> Cuts {
        Cuts {
            state: u32::from(control.to_byte()) | 0x6b00,
            spread: usize::from(control.spread) * 8,
        }
    }

    pub fn next(&mut self) -> usize {
        if self.spread == 0 {
            return usize::MAX;
        }
        self.state ^= self.state << 13;
        self.state ^= self.state >> 17;
        self.state ^= self.state << 5;
        1 + self.state as usize % self.spread
    }

    /// How many boundaries between writes `len` bytes make.
    pub fn count(&self, len: usize) -> usize {
        let mut copy = Cuts {
            state: self.state,
            spread: self.spread,
        };
        let (mut left, mut writes) = (len, 0usize);
        while left > 0 {
            left -= copy.next().min(left);
            writes += 1;
        }
        writes.saturating_sub(1)
    }
}

/// Writes `bytes` to `s` in the writes `control` chooses, pausing between them; a
/// [`Pause::Stall`] sleeps `stall` once, halfway. Stops early if the server has closed (a
/// refusal, say): what it sent is still there to read.
pub async fn write_cut<S: AsyncWrite + Unpin>(
    s: &mut S,
    control: Control,
    bytes: &[u8],
    stall: Duration,
) {
    let mut cuts = Cuts::new(control);
    let boundaries = cuts.count(bytes.len());
    let (mut rest, mut boundary) = (bytes, 0);
    while !rest.is_empty() {
        let n = cuts.next().min(rest.len());
        if s.write_all(&rest[..n]).await.is_err() {
            return;
        }
        rest = &rest[n..];
        if !rest.is_empty() {
            match control.pause {
                Pause::Yield => tokio::task::yield_now().await,
                Pause::Settle => {
                    for _ in 0..16 {
                        tokio::task::yield_now().await;
                    }
                }
                Pause::Tick => tokio::time::sleep(Duration::from_millis(1)).await,
                Pause::Stall if boundary == boundaries / 2 => tokio::time::sleep(stall).await,
                Pause::Stall => tokio::task::yield_now().await,
            }
            boundary += 1;
        }
    }
}

/// Ends the exchange as `end` says and adds to `out` what the server sends until it closes
/// (or, for [`End::Drop`], until it goes quiet for a moment).
pub async fn finish<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    end: End,
    out: &mut Vec<u8>,
) -> Result<(), String> {
    match end {
        End::HalfClose => {
            let _ = s.shutdown().await;
            read_to_close(s, out, CLOSE_DEADLINE).await
        }
        End::Stay => read_to_close(s, out, CLOSE_DEADLINE).await,
        End::Drop => {
            // Read what comes within a moment, then hang up, answered or not.
            let quiet = Duration::from_millis(2);
            let mut buf = [0u8; 4096];
            while let Ok(Ok(n)) = tokio::time::timeout(quiet, s.read(&mut buf)).await {
                if n == 0 {
                    break;
                }
                out.extend_from_slice(&buf[..n]);
            }
            Ok(())
        }
    }
}

/// Reads until the server closes, for at most `deadline`.
pub async fn read_to_close<S: AsyncRead + Unpin>(
    s: &mut S,
    out: &mut Vec<u8>,
    deadline: Duration,
) -> Result<(), String> {
    match tokio::time::timeout(deadline, s.read_to_end(out)).await {
        Ok(_) => Ok(()),
        Err(_) => Err(format!(
            "the server neither closed nor went quiet within {deadline:?} (read {} bytes: {:?})",
            out.len(),
            String::from_utf8_lossy(&out[..out.len().min(300)])
        )),
    }
}

/// Runs `test` on a runtime of one thread (client and server alike), failing it if it takes
/// longer than `limit`: a whole-run bound, beside each exchange's own, so a hang fails fast.
pub fn run_within<F: std::future::Future<Output = ()>>(limit: Duration, test: impl FnOnce() -> F) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        tokio::time::timeout(limit, test())
            .await
            .expect("the run finished in time");
    });
}
