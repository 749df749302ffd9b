#!/usr/bin/env bash
# One atoll node behind HAProxy (send-proxy-v2, as tests/fleet.rs sets it up) against the same
# node asked directly, in the same run: requests/s and latency percentiles from wrk, keep-alive
# connections asking GET /health. atoll runs pinned to core 0; wrk and HAProxy share core 1.
# Rounds alternate direct and through HAProxy.
#
#   bench/fleet.sh                 # 3 rounds of 5 s each way
#   ROUNDS=1 DURATION=3 bench/fleet.sh
#
# Needs wrk and haproxy (apt-get install wrk haproxy); builds the release binary.
set -euo pipefail
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-5}
CONNS=${CONNS:-64}
cd "$(dirname "$0")/.."
cargo build --release -q
dir=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$dir"' EXIT
haproxy=$(command -v haproxy || echo /usr/sbin/haproxy)

node() { # NAME PROXY PORT
    cat > "$dir/$1.toml" <<CONF
[app]
node = "$1"
data_dir = "$dir/$1"
[[listener]]
name = "web"
kind = "http"
ip = "127.0.0.1"
port = $3
proxy_protocol = "$2"
[[listener.handlers]]
host = "_"
resources = ["health"]
CONF
    taskset -c 0 target/release/atoll serve --config "$dir/$1.toml" > "$dir/$1.out" 2>/dev/null &
}
node direct off 7511
node behind required 7512
cat > "$dir/haproxy.cfg" <<CONF
global
    maxconn 4096
defaults
    mode http
    timeout connect 1s
    timeout client 30s
    timeout server 30s
frontend fe
    bind 127.0.0.1:7510
    default_backend nodes
backend nodes
    server n1 127.0.0.1:7512 send-proxy-v2
CONF
taskset -c 1 "$haproxy" -db -f "$dir/haproxy.cfg" &
sleep 1

run() { # LABEL PORT
    taskset -c 1 wrk -t1 -c"$CONNS" -d"${DURATION}s" --latency "http://127.0.0.1:$2/health" |
        awk -v l="$1" '/Requests\/sec/ {r=$2} /^ +50%/ {p50=$2} /^ +99%/ {p99=$2}
                       END {printf "%-8s %10s req/s  p50 %8s  p99 %8s\n", l, r, p50, p99}'
}
echo "wrk, $CONNS connections, ${DURATION}s per run"
for i in $(seq "$ROUNDS"); do
    run direct 7511
    run haproxy 7510
done
