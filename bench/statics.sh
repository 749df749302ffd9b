#!/usr/bin/env bash
# Static files: `atoll serve` with a `static_dir` against nginx serving the same directory, in the
# same run, and the ratios atoll/nginx. Each server runs pinned to core 0 (atoll: one tokio
# worker, since tokio sizes its pool from the cores it may use; nginx: one worker process,
# `master_process off`, `sendfile on`, `access_log off`), the load generator (wrk, or h2load for
# HTTP/2) on core 1. Every run gets a fresh server; rounds alternate atoll and nginx.
#
#   bench/statics.sh                          # about 5 minutes on 2 cores
#   ROUNDS=1 DURATION=2 bench/statics.sh      # a quick look
#   SCENARIOS="h1-1k h1-1m" bench/statics.sh  # some rows only
#   ATOLL=/tmp/atoll-old bench/statics.sh     # another build of atoll (default: target/release)
#
# Scenarios (the rows of issue 23): h1-1k (1 KB file, 64 keep-alive connections), h1-100k
# (100 KB, 16), h1-1m (1 MiB, 4), tls-1k (1 KB over HTTPS, 64), tls-100k (100 KB over HTTPS,
# 16), h2-1k (1 KB over HTTP/2 + TLS, 16 connections x 10 streams), h2-100k (100 KB over HTTP/2
# + TLS, 16 x 10), tls-new (1 KB over HTTPS, a new connection per request, 16).
#
# nginx is told `ssl_protocols TLSv1.2 TLSv1.3` (its default from 1.23.4; Debian 12's 1.22
# offers TLS 1.2 only), so that both servers speak TLS 1.3 to the load generator.
#
# Per run: requests/s and p99 latency (wrk's, or from h2load's per-request log), server CPU µs
# per request (utime + stime from /proc over the measured run), and the server's thread count
# at the end. Then, in one extra short run per scenario and server, syscalls per request:
# `strace -c -f` attached to the server for STRACE_SECONDS (strace slows the server down a lot,
# so this run's rate is not reported; only the count of calls over the count of requests).
#
# Settings (environment): SCENARIOS (all), ROUNDS (3), DURATION (4 s), WARMUP (1 s; whole
# seconds, as wrk takes them),
# STRACE (1: measure syscalls), STRACE_SECONDS (2), SERVER_CPU (0), LOAD_CPU (1), PORT (7480:
# PORT is HTTP, PORT+1 HTTPS), ATOLL (the binary), KEEP (keep the work directory).
# Needs nginx, wrk, h2load, openssl and strace; installs nginx and wrk with apt-get when missing.
set -euo pipefail

SCENARIOS=${SCENARIOS:-h1-1k h1-100k h1-1m tls-1k tls-100k h2-1k h2-100k tls-new}
SCENARIOS=${SCENARIOS//,/ }
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-4}
WARMUP=${WARMUP:-1}
STRACE=${STRACE:-1}
STRACE_SECONDS=${STRACE_SECONDS:-2}
SERVER_CPU=${SERVER_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
PORT=${PORT:-7480}
TLS_PORT=$((PORT + 1))
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(dirname "$HERE")

if [[ -z ${ATOLL:-} ]]; then
    (cd "$ROOT" && cargo build --release --bin atoll >&2)
    ATOLL=$ROOT/target/release/atoll
fi
for tool in nginx wrk; do
    if ! command -v "$tool" >/dev/null; then
        apt-get install -y "$tool" >&2
    fi
done
NGINX=$(command -v nginx)

WORK=$(mktemp -d /tmp/atoll-statics.XXXXXX)
cleanup() {
    [[ -n ${SERVER_PID:-} ]] && kill "$SERVER_PID" 2>/dev/null && wait "$SERVER_PID" 2>/dev/null
    [[ -z ${KEEP:-} ]] && rm -rf "$WORK"
    return 0
}
trap cleanup EXIT

# ----- the files, the certificate, the two configs -----
mkdir -p "$WORK/site" "$WORK/data" "$WORK/log" "$WORK/nginx"
head -c 1024 /dev/urandom >"$WORK/site/f1k.bin"
head -c 102400 /dev/urandom >"$WORK/site/f100k.bin"
head -c 1048576 /dev/urandom >"$WORK/site/f1m.bin"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=localhost \
    -keyout "$WORK/key.pem" -out "$WORK/cert.pem" 2>/dev/null

cat >"$WORK/atoll.toml" <<EOF
[[listener]]
name = "plain"
kind = "http"
ip = "127.0.0.1"
port = $PORT
static_dir = "site"

[[listener]]
name = "tls"
kind = "https"
ip = "127.0.0.1"
port = $TLS_PORT
static_dir = "site"
tls = { cert = "cert.pem", key = "key.pem" }
EOF

cat >"$WORK/nginx.conf" <<EOF
daemon off;
master_process off;
worker_processes 1;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/error.log;
events { worker_connections 4096; }
http {
    access_log off;
    sendfile on;
    keepalive_requests 100000000;
    default_type application/octet-stream;
    client_body_temp_path $WORK/nginx/body;
    proxy_temp_path $WORK/nginx/proxy;
    fastcgi_temp_path $WORK/nginx/fastcgi;
    uwsgi_temp_path $WORK/nginx/uwsgi;
    scgi_temp_path $WORK/nginx/scgi;
    server {
        listen 127.0.0.1:$PORT;
        listen 127.0.0.1:$TLS_PORT ssl http2;
        ssl_certificate $WORK/cert.pem;
        ssl_certificate_key $WORK/key.pem;
        ssl_protocols TLSv1.2 TLSv1.3;
        root $WORK/site;
    }
}
EOF

# ----- one run -----
start_server() { # atoll|nginx
    case $1 in
        atoll) ATOLL_HOME=$WORK ATOLL_DATA_DIR=$WORK/data ATOLL_LOG_DIR=$WORK/log \
            taskset -c "$SERVER_CPU" "$ATOLL" serve --config "$WORK/atoll.toml" \
            >"$WORK/server.out" 2>&1 &
            ;;
        nginx) taskset -c "$SERVER_CPU" "$NGINX" -c "$WORK/nginx.conf" >"$WORK/server.out" 2>&1 & ;;
    esac
    SERVER_PID=$!
    for _ in $(seq 200); do
        if curl -sfk -o /dev/null "https://127.0.0.1:$TLS_PORT/f1k.bin" &&
            curl -sf -o /dev/null "http://127.0.0.1:$PORT/f1k.bin"; then
            return 0
        fi
        sleep 0.05
    done
    echo "$1 did not start:" >&2
    cat "$WORK/server.out" >&2
    exit 1
}

stop_server() {
    kill "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=
}

cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$SERVER_PID/stat"; }

# Runs the load of scenario $1 for $2 seconds; prints `requests p99_ms` on the last line.
load() {
    local scenario=$1 seconds=$2 out=$WORK/load.out
    local http=http://127.0.0.1:$PORT https=https://127.0.0.1:$TLS_PORT
    case $scenario in
        h1-1k) wrk_run 64 "$seconds" "$http/f1k.bin" ;;
        h1-100k) wrk_run 16 "$seconds" "$http/f100k.bin" ;;
        h1-1m) wrk_run 4 "$seconds" "$http/f1m.bin" ;;
        tls-1k) wrk_run 64 "$seconds" "$https/f1k.bin" ;;
        tls-100k) wrk_run 16 "$seconds" "$https/f100k.bin" ;;
        tls-new) wrk_run 16 "$seconds" "$https/f1k.bin" -H "Connection: close" ;;
        h2-1k | h2-100k)
            local file=f1k.bin
            [[ $scenario == h2-100k ]] && file=f100k.bin
            rm -f "$WORK/h2.log"
            taskset -c "$LOAD_CPU" h2load -c 16 -m 10 -D "$seconds" --log-file="$WORK/h2.log" \
                "$https/$file" >"$out" 2>&1
            # Column 3: microseconds from the request to the end of its response.
            python3 - "$WORK/h2.log" "$out" <<'PY'
import re, sys
times = sorted(int(l.split("\t")[2]) for l in open(sys.argv[1]) if l.count("\t") >= 2)
done = int(re.search(r"requests: \d+ total, \d+ started, (\d+) done", open(sys.argv[2]).read()).group(1))
print(done, times[int(len(times) * 0.99) - 1] / 1000 if times else 0)
PY
            ;;
        *) echo "unknown scenario $scenario" >&2; exit 1 ;;
    esac
}

wrk_run() { # connections seconds url [wrk args]
    local conns=$1 seconds=$2 url=$3
    shift 3
    taskset -c "$LOAD_CPU" wrk -t1 -c "$conns" -d "${seconds}s" --latency "$@" "$url" >"$WORK/load.out" 2>&1
    python3 - "$WORK/load.out" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
def ms(v, unit):
    return float(v) * {"us": 0.001, "ms": 1, "s": 1000}[unit]
done = int(re.search(r"(\d+) requests in", text).group(1))
p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)\b", text)
errors = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
if errors:
    sys.exit(f"{errors.group(1)} failed responses:\n{text}")
print(done, ms(*p99.groups()))
PY
}

measure() { # server scenario round -> appends one line to results
    local server=$1 scenario=$2 round=$3
    start_server "$server"
    load "$scenario" "$WARMUP" >/dev/null
    local before after result ticks
    before=$(cpu_ticks)
    result=$(load "$scenario" "$DURATION" | tail -1)
    after=$(cpu_ticks)
    threads=$(awk '/^Threads:/ { print $2 }' "/proc/$SERVER_PID/status")
    stop_server
    ticks=$((after - before))
    read -r requests p99 <<<"$result"
    python3 -c "
r, t, hz = $requests, $ticks, $(getconf CLK_TCK)
print('$scenario $server $round', round(r / $DURATION), $p99, round(t / hz * 1e6 / max(r, 1), 1), $threads)
" >>"$WORK/results"
    echo "  $scenario $server #$round: $(tail -1 "$WORK/results" | cut -d' ' -f4-)" >&2
}

syscalls() { # server scenario -> appends one line to the syscall results
    local server=$1 scenario=$2
    start_server "$server"
    load "$scenario" "$WARMUP" >/dev/null
    strace -qq -c -f -p "$SERVER_PID" -o "$WORK/strace.out" &
    local tracer=$!
    sleep 0.5
    local result
    result=$(load "$scenario" "$STRACE_SECONDS" | tail -1)
    kill -INT "$tracer"
    wait "$tracer" 2>/dev/null || true
    stop_server
    local calls
    # The total line: % time, seconds, usecs/call, calls, [errors,] "total".
    calls=$(awk '$NF == "total" { print $4 }' "$WORK/strace.out")
    python3 -c "print('$scenario $server', round(${calls:-0} / max(${result%% *}, 1), 1))" >>"$WORK/syscalls"
    cp "$WORK/strace.out" "$WORK/strace-$scenario-$server.out"
    echo "  $scenario $server syscalls: $(tail -1 "$WORK/syscalls" | cut -d' ' -f3)" >&2
}

: >"$WORK/results"
: >"$WORK/syscalls"
echo "atoll: $ATOLL; nginx: $($NGINX -v 2>&1); server on core $SERVER_CPU, load on core $LOAD_CPU" >&2
echo "warm-up ${WARMUP}s, measured ${DURATION}s, $ROUNDS rounds" >&2
for scenario in $SCENARIOS; do
    for round in $(seq "$ROUNDS"); do
        measure atoll "$scenario" "$round"
        measure nginx "$scenario" "$round"
    done
    if [[ $STRACE == 1 ]]; then
        syscalls atoll "$scenario"
        syscalls nginx "$scenario"
    fi
done

# ----- the table: medians of the per-round ratios atoll/nginx -----
python3 - "$WORK/results" "$WORK/syscalls" "$SCENARIOS" <<'PY'
import statistics, sys
rows = {}
for line in open(sys.argv[1]):
    scenario, server, rnd, rps, p99, cpu, threads = line.split()
    rows.setdefault(scenario, {}).setdefault(int(rnd), {})[server] = (
        float(rps), float(p99), float(cpu), int(threads))
calls = {}
for line in open(sys.argv[2]):
    scenario, server, n = line.split()
    calls[(scenario, server)] = float(n)
print("| scenario | atoll/nginx req/s | p99 atoll / nginx (ms) | CPU µs/request atoll / nginx"
      " | syscalls/request atoll / nginx | threads atoll / nginx |")
print("|---|---|---|---|---|---|")
for scenario in sys.argv[3].split():
    rounds = [r for r in rows.get(scenario, {}).values() if "atoll" in r and "nginx" in r]
    if not rounds:
        continue
    med = lambda f: statistics.median(f(r) for r in rounds)
    ratio = med(lambda r: r["atoll"][0] / r["nginx"][0])
    a = lambda i, s: statistics.median(r[s][i] for r in rounds)
    sc = lambda s: "%.1f" % calls[(scenario, s)] if (scenario, s) in calls else "-"
    print(f"| {scenario} | {ratio:.2f} ({a(0, 'atoll'):.0f} / {a(0, 'nginx'):.0f}) "
          f"| {a(1, 'atoll'):.2f} / {a(1, 'nginx'):.2f} | {a(2, 'atoll'):.1f} / {a(2, 'nginx'):.1f} "
          f"| {sc('atoll')} / {sc('nginx')} | {max(r['atoll'][3] for r in rounds)} / "
          f"{max(r['nginx'][3] for r in rounds)} |")
PY
