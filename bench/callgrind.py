#!/usr/bin/env python3
"""Instructions per request of `atoll serve`, counted by callgrind.

Starts the release binary under `valgrind --tool=callgrind --instr-atstart=no` on CONFIG,
whose first listener must be a plain HTTP listener answering GET PATH; warms up, turns
instrumentation on, sends CONNS keep-alive connections x REQUESTS requests, turns it off, and
prints the instructions counted divided by the requests. With --proxy, each connection
starts with a PROXY v1 header (for a listener with proxy_protocol = "required").

    python3 bench/callgrind.py CONFIG [--path /health] [--conns 4] [--requests 2000] [--proxy]

Instruction counts do not depend on the machine's load, so A/B runs compare exactly; run
one at a time all the same (flock /tmp/atoll-bench.lock).
"""
import argparse
import os
import re
import socket
import subprocess
import sys
import tempfile
import time


def request(sock, path, buf):
    sock.sendall(f"GET {path} HTTP/1.1\r\nhost: b\r\n\r\n".encode())
    data = buf[0]
    while True:
        head_end = data.find(b"\r\n\r\n")
        if head_end >= 0:
            head = data[:head_end].decode("latin-1").lower()
            m = re.search(r"content-length:\s*(\d+)", head)
            length = int(m.group(1)) if m else 0
            total = head_end + 4 + length
            if len(data) >= total:
                if not head.startswith("http/1.1 200"):
                    sys.exit(f"not a 200: {head!r}")
                buf[0] = data[total:]
                return
        chunk = sock.recv(65536)
        if not chunk:
            sys.exit("the server closed the connection")
        data += chunk


def run(addr, path, conns, requests, proxy):
    socks = []
    for i in range(conns):
        s = socket.create_connection(addr, timeout=60)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if proxy:
            port = s.getsockname()[1]
            s.sendall(f"PROXY TCP4 192.0.2.{i + 1} {addr[0]} {port} {addr[1]}\r\n".encode())
        socks.append((s, [b""]))
    for _ in range(requests):
        for s, buf in socks:
            request(s, path, buf)
    for s, _ in socks:
        s.close()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("config")
    p.add_argument("--path", default="/health")
    p.add_argument("--conns", type=int, default=4)
    p.add_argument("--requests", type=int, default=2000)
    p.add_argument("--warmup", type=int, default=200)
    p.add_argument("--proxy", action="store_true")
    p.add_argument("--binary", default="target/release/atoll")
    a = p.parse_args()
    out = tempfile.mktemp(prefix="atoll-callgrind.")
    server = subprocess.Popen(
        ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}",
         os.path.abspath(a.binary), "serve", "--config", os.path.abspath(a.config)],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        cwd=os.path.dirname(os.path.abspath(a.config)))
    try:
        line = server.stdout.readline()
        m = re.search(r"addr=(\S+):(\d+)", line)
        if not m:
            sys.exit(f"no listening line: {line!r}")
        addr = (m.group(1), int(m.group(2)))
        run(addr, a.path, a.conns, a.warmup, a.proxy)
        subprocess.run(["callgrind_control", "-i", "on", str(server.pid)], check=True, stderr=subprocess.DEVNULL,
                       stdout=subprocess.DEVNULL)
        run(addr, a.path, a.conns, a.requests, a.proxy)
        subprocess.run(["callgrind_control", "-i", "off", str(server.pid)], check=True, stderr=subprocess.DEVNULL,
                       stdout=subprocess.DEVNULL)
    finally:
        server.terminate()
        server.wait(timeout=120)
    total = 0
    for name in os.listdir(os.path.dirname(out)):
        path = os.path.join(os.path.dirname(out), name)
        if name.startswith(os.path.basename(out)):
            with open(path) as f:
                for l in f:
                    if l.startswith("summary:") or l.startswith("totals:"):
                        total = max(total, int(l.split()[1]))
            os.remove(path)
    n = a.conns * a.requests
    print(f"{total / n:.0f} instructions per request ({total} over {n} requests)")


if __name__ == "__main__":
    main()
