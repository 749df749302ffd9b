#!/usr/bin/env python3
"""Echo clients across live upgrades: how many fail per upgrade.

Starts `ATOLL serve` with one `echo` listener, runs two kinds of clients against it, and
upgrades the running process to the same binary (`atoll upgrade --path`) every PERIOD
seconds, UPGRADES times:

- 8 long-lived connections, each sending a 16-byte message every 10 ms and reading its echo;
  a connection that ends (EOF, reset, timeout, a short echo) is a failure, and reconnects;
- 2 loops of connect, send 16 bytes, read the echo, close; a connection that ends before its
  whole echo is a failure.

Bounded: every socket wait has a 5 s timeout, each upgrade command 60 s, and the whole run
about UPGRADES * PERIOD + 5 seconds. Prints one line per client kind. No timing is measured.

    bench/upgrade_echo.py target/debug/atoll [UPGRADES] [PERIOD]
"""

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

LONG_LIVED = 8
SHORT_LOOPS = 2
MESSAGE = 16
WAIT = 5.0


def read_exactly(s, n):
    got = b""
    while len(got) < n:
        chunk = s.recv(n - len(got))
        if not chunk:
            raise ConnectionError(f"EOF after {len(got)} of {n} bytes")
        got += chunk
    return got


class Counts:
    def __init__(self):
        self.lock = threading.Lock()
        self.ok = 0
        self.failed = 0
        self.connects = 0
        self.errors = {}

    def fail(self, e):
        with self.lock:
            self.failed += 1
            key = type(e).__name__ + ": " + str(e).split(" after ")[0]
            self.errors[key] = self.errors.get(key, 0) + 1


def long_lived(addr, stop, counts, index):
    s = None
    n = 0
    while not stop.is_set():
        try:
            if s is None:
                s = socket.create_connection(addr, timeout=WAIT)
                s.settimeout(WAIT)
                with counts.lock:
                    counts.connects += 1
            msg = f"{index:02}:{n:012}\n".encode()[:MESSAGE].ljust(MESSAGE, b".")
            s.sendall(msg)
            if read_exactly(s, MESSAGE) != msg:
                raise ValueError("a different echo")
            with counts.lock:
                counts.ok += 1
        except Exception as e:  # noqa: BLE001 - every end is counted
            counts.fail(e)
            if s is not None:
                s.close()
            s = None
        n += 1
        time.sleep(0.010)
    if s is not None:
        s.close()


def short_lived(addr, stop, counts):
    n = 0
    while not stop.is_set():
        msg = f"short:{n:010}".encode().ljust(MESSAGE, b".")
        try:
            with socket.create_connection(addr, timeout=WAIT) as s:
                s.settimeout(WAIT)
                s.sendall(msg)
                if read_exactly(s, MESSAGE) != msg:
                    raise ValueError("a different echo")
            with counts.lock:
                counts.ok += 1
                counts.connects += 1
        except Exception as e:  # noqa: BLE001
            counts.fail(e)
        n += 1
        time.sleep(0.002)


def main():
    binary = os.path.abspath(sys.argv[1])
    upgrades = int(sys.argv[2]) if len(sys.argv) > 2 else 10
    period = float(sys.argv[3]) if len(sys.argv) > 3 else 3.5
    home = tempfile.mkdtemp(prefix="atoll-upgrade-echo.")
    config = os.path.join(home, "atoll.toml")
    with open(config, "w") as f:
        f.write('[app]\nnode = "bench"\n\n[[listener]]\nname = "echo"\nkind = "echo"\n'
                'ip = "127.0.0.1"\nport = 0\n')
    serve = subprocess.Popen([binary, "serve", "--config", config], cwd=home,
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    pids = [serve.pid]
    addr = None
    deadline = time.monotonic() + 30
    while addr is None and time.monotonic() < deadline:
        line = serve.stdout.readline()
        if line.startswith("listening name=echo"):
            host, port = line.split("addr=")[1].strip().rsplit(":", 1)
            addr = (host, int(port))
    if addr is None:
        serve.kill()
        sys.exit("atoll did not start")

    stop = threading.Event()
    long_counts, short_counts = Counts(), Counts()
    threads = [threading.Thread(target=long_lived, args=(addr, stop, long_counts, i))
               for i in range(LONG_LIVED)]
    threads += [threading.Thread(target=short_lived, args=(addr, stop, short_counts))
                for _ in range(SHORT_LOOPS)]
    for t in threads:
        t.start()
    done = 0
    try:
        for _ in range(upgrades):
            time.sleep(period)
            answer = subprocess.run([binary, "upgrade", "--path", binary, "--json",
                                     "--config", config], cwd=home, capture_output=True,
                                    text=True, timeout=60)
            if answer.returncode != 0:
                print("upgrade failed:", answer.stderr.strip(), file=sys.stderr)
                break
            pids.append(json.loads(answer.stdout)["pid"])
            done += 1
        time.sleep(period)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=2 * WAIT)
        for pid in pids:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        serve.wait(timeout=30)
    per = lambda c: c.failed / done if done else float("nan")
    print(f"{done} upgrades every {period} s with {os.path.basename(binary)}")
    print(f"long-lived ({LONG_LIVED} connections, a message every 10 ms): "
          f"{long_counts.failed} failures ({per(long_counts):.1f} per upgrade), "
          f"{long_counts.connects} connects, {long_counts.ok} echoes; {long_counts.errors}")
    print(f"connect-send-read-close ({SHORT_LOOPS} loops): {short_counts.failed} failures "
          f"({per(short_counts):.2f} per upgrade), {short_counts.ok} echoes; "
          f"{short_counts.errors}")


if __name__ == "__main__":
    main()
