#!/usr/bin/env python3
"""Instructions per WebSocket echo of `atoll-bench server --protocol ws`, counted by callgrind:
atoll's WebSocket route (`--impl atoll`) or tokio-tungstenite directly (`--impl tungstenite`).

Starts the release bench server under `valgrind --tool=callgrind --instr-atstart=no`, opens
CONNS connections past the handshake, warms up, turns instrumentation on, sends MESSAGES
masked binary messages of SIZE bytes (64) per connection, each waiting for its echo, turns it off, and
prints the instructions counted divided by the messages; with --top, the functions that
counted most.

    python3 bench/callgrind_ws.py --impl atoll [--conns 4] [--messages 2000] [--size 64] [--top 25]

Instruction counts do not depend on the machine's load, so A/B runs compare exactly; run
one at a time all the same (flock /tmp/atoll-bench.lock).
"""
import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time

KEY = b"dGhlIHNhbXBsZSBub25jZQ=="


def frames(size):
    """A masked binary frame of `size` bytes (a zero mask key: the payload goes as it is)
    and the server's unmasked echo of it."""
    payload = bytes(i % 251 for i in range(size))
    if size < 126:
        length = bytes([size])
    elif size < 65536:
        length = bytes([126]) + size.to_bytes(2, "big")
    else:
        length = bytes([127]) + size.to_bytes(8, "big")
    frame = bytes([0x82, 0x80 | length[0]]) + length[1:] + bytes(4) + payload
    echo = bytes([0x82, length[0]]) + length[1:] + payload
    return frame, echo


def connect(port):
    s = socket.create_connection(("127.0.0.1", port), timeout=60)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    s.sendall(b"GET /ws HTTP/1.1\r\nHost: b\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
              b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: " + KEY + b"\r\n\r\n")
    head = b""
    while not head.endswith(b"\r\n\r\n"):
        byte = s.recv(1)
        if not byte:
            sys.exit("closed during the handshake")
        head += byte
    if not head.startswith(b"HTTP/1.1 101"):
        sys.exit(f"no 101: {head!r}")
    return s


def run(socks, messages, frame, echo):
    for _ in range(messages):
        for s in socks:
            s.sendall(frame)
            got = b""
            while len(got) < len(echo):
                chunk = s.recv(len(echo) - len(got))
                if not chunk:
                    sys.exit("the server closed the connection")
                got += chunk
            if got != echo:
                sys.exit(f"not the echo: {got[:64]!r}...")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--impl", default="atoll")
    p.add_argument("--port", type=int, default=9480)
    p.add_argument("--conns", type=int, default=4)
    p.add_argument("--messages", type=int, default=2000)
    p.add_argument("--warmup", type=int, default=200)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--top", type=int, default=0)
    p.add_argument("--binary", default="target/release/atoll-bench")
    a = p.parse_args()
    out = tempfile.mktemp(prefix="atoll-callgrind-ws.")
    server = subprocess.Popen(
        ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}",
         os.path.abspath(a.binary), "server", "--protocol", "ws", "--impl", a.impl,
         "--port", str(a.port), "--threads", "1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 60
        while True:
            try:
                socks = [connect(a.port) for _ in range(a.conns)]
                break
            except ConnectionRefusedError:
                if time.time() > deadline:
                    sys.exit("the server did not start")
                time.sleep(0.2)
        frame, echo = frames(a.size)
        run(socks, a.warmup, frame, echo)
        subprocess.run(["callgrind_control", "-i", "on", str(server.pid)], check=True,
                       stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        run(socks, a.messages, frame, echo)
        subprocess.run(["callgrind_control", "-i", "off", str(server.pid)], check=True,
                       stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        for s in socks:
            s.close()
    finally:
        server.terminate()
        server.wait(timeout=120)
    total = 0
    files = []
    for name in os.listdir(os.path.dirname(out)):
        path = os.path.join(os.path.dirname(out), name)
        if name.startswith(os.path.basename(out)):
            files.append(path)
            with open(path) as f:
                for l in f:
                    if l.startswith("summary:") or l.startswith("totals:"):
                        total = max(total, int(l.split()[1]))
    n = a.conns * a.messages
    print(f"{a.impl}: {total / n:.0f} instructions per {a.size}-byte message ({total} over {n} messages)")
    if a.top:
        for path in files:
            shown = subprocess.run(["callgrind_annotate", "--inclusive=no", path],
                                   capture_output=True, text=True).stdout
            print("\n".join(shown.splitlines()[:a.top + 20]))
    for path in files:
        os.remove(path)


if __name__ == "__main__":
    main()
