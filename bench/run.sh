#!/usr/bin/env bash
# Benchmarks atoll's echo server against a plain tokio echo server in the same run, then prints
# the results side by side with atoll/tokio ratios, and accepts/s for 1, 2, 4 and 100 acceptors;
# then atoll's HTTP listener against bare hyper and axum, with atoll/hyper and atoll/axum ratios;
# then atoll's RPC daemon and client against tarpc, with atoll/tarpc ratios.
#
# The server runs pinned to core 0 and the load generator to core 1; every scenario's server
# gets the same runtime (multi_thread, 1 worker). Rounds alternate the servers (atoll, tokio,
# atoll...; atoll, hyper, axum, atoll...; atoll, tarpc, atoll...), so a drift of the machine
# during the run shows up as a difference between rounds, not between servers.
#
#   bench/run.sh                      # about 6 minutes on 2 cores
#   ROUNDS=1 DURATION=2 bench/run.sh  # a quick look
#   SCENARIOS=http bench/run.sh       # HTTP only
#
# Settings (environment): SCENARIOS (what to run, among echo bulk accept idle idle-used acceptors
# http rpc, separated by spaces or commas; all by default), ROUNDS (3), MEM_ROUNDS (3: rounds that
# also measure memory), WARMUP (1 s), DURATION (5 s), IDLE_CONNS (10000), HTTP_CONNS (64),
# RPC_CALLERS (50), ACCEPTORS ("1 2 4 100"), ACCEPT_ROUNDS (2), PORT (7400), SERVER_CPU (0),
# LOAD_CPU (1), KEEP (keep the raw metric files).
set -euo pipefail

SCENARIOS=${SCENARIOS:-echo bulk accept idle idle-used acceptors http rpc}
SCENARIOS=${SCENARIOS//,/ }
ROUNDS=${ROUNDS:-3}
WARMUP=${WARMUP:-1}
DURATION=${DURATION:-5}
IDLE_CONNS=${IDLE_CONNS:-10000}
HTTP_CONNS=${HTTP_CONNS:-64}
RPC_CALLERS=${RPC_CALLERS:-50}
ACCEPTORS=${ACCEPTORS:-1 2 4 100}
ACCEPT_ROUNDS=${ACCEPT_ROUNDS:-2}
MEM_ROUNDS=${MEM_ROUNDS:-3}
PORT=${PORT:-7400}
SERVER_CPU=${SERVER_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}

for s in $SCENARIOS; do
    case $s in
    echo | bulk | accept | idle | idle-used | acceptors | http | rpc) ;;
    *)
        echo "unknown scenario \`$s\` in SCENARIOS (known: echo bulk accept idle idle-used acceptors http rpc)" >&2
        exit 1
        ;;
    esac
done
wants() { [[ " $SCENARIOS " == *" $1 "* ]]; }

cd "$(dirname "$0")/.."
# 10,000 idle connections need as many descriptors on each side.
ulimit -n 20000

cargo build --release -p atoll-bench
BIN=${CARGO_TARGET_DIR:-target}/release/atoll-bench
OUT=$(mktemp -d)
SERVER_PID=

stop_server() {
    if [[ -n $SERVER_PID ]]; then
        kill "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
        SERVER_PID=
    fi
}
cleanup() {
    stop_server
    if [[ -z ${KEEP:-} ]]; then rm -rf "$OUT"; else echo "raw metrics kept in $OUT" >&2; fi
}
trap cleanup EXIT

# start_server ARGS...: starts a server and waits for its `ready`.
start_server() {
    # Emptied here, not only by the redirection: the background job may open its log after the
    # first look below, which would then find the previous server's `ready`.
    : >"$OUT/server.log"
    taskset -c "$SERVER_CPU" "$BIN" server --port "$PORT" "$@" >"$OUT/server.log" 2>&1 &
    SERVER_PID=$!
    for _ in $(seq 100); do
        grep -q '^ready' "$OUT/server.log" && return 0
        kill -0 "$SERVER_PID" 2>/dev/null || break
        sleep 0.1
    done
    echo "server $* did not start:" >&2
    cat "$OUT/server.log" >&2
    exit 1
}

# load FILE SCENARIOS [FLAGS...]: runs the load generator against the running server, appending
# to FILE.
load() {
    local file=$1 scenarios=$2
    shift 2
    taskset -c "$LOAD_CPU" "$BIN" load --port "$PORT" --pid "$SERVER_PID" --scenarios "$scenarios" \
        --warmup "$WARMUP" --duration "$DURATION" --idle-conns "$IDLE_CONNS" --http-conns "$HTTP_CONNS" \
        --rpc-callers "$RPC_CALLERS" "$@" >>"$file"
}

# Other busy processes skew the figures: name them next to the figures. `ps` shows lifetime
# averages, so look at CPU ticks over one second instead.
busy_now() {
    local before after
    before=$(cat /proc/[0-9]*/stat 2>/dev/null | awk '{print $1, $14+$15, $2}')
    sleep 1
    after=$(cat /proc/[0-9]*/stat 2>/dev/null | awk '{print $1, $14+$15, $2}')
    join <(sort <<<"$before") <(sort <<<"$after") |
        awk '$4 - $2 > 20 { printf "%s%s (pid %s, %d%% of a core)", sep, $3, $1, $4 - $2; sep = ", " }'
}
busy_before=$(busy_now)
[[ -z $busy_before ]] || echo "warning: busy before the run: $busy_before" >&2

# CPU ticks used by the whole machine, and by this script's finished children (servers and load
# generators); the difference is what other processes took during the run.
machine_ticks() { awk '/^cpu /{ print $2 + $3 + $4 + $7 + $8 + $9 }' /proc/stat; }
children_ticks() { awk '{ print $16 + $17 }' "/proc/$$/stat"; }
machine_start=$(machine_ticks)
children_start=$(children_ticks)
started=$SECONDS

# Echo: the rate scenarios run on one server, the memory ones on fresh servers each.
rate=
for s in echo bulk accept; do wants "$s" && rate=${rate:+$rate,}$s; done
memory=
for s in idle idle-used; do wants "$s" && memory="$memory $s"; done
runs=()
if [[ -n $rate$memory ]]; then
    for round in $(seq "$ROUNDS"); do
        for impl in atoll tokio; do
            file="$OUT/$impl-$round.txt"
            # Memory is read on fresh servers, so earlier scenarios' heap does not hide the
            # growth; it does not vary, so only the first MEM_ROUNDS rounds measure it.
            sets=$rate
            (( round > MEM_ROUNDS )) || sets="$sets$memory"
            for scenarios in $sets; do
                start_server --impl "$impl"
                load "$file" "$scenarios"
                stop_server
            done
            [[ ! -e $file ]] || runs+=("$impl#$round=$file")
        done
    done
fi

accept_runs=()
if wants acceptors; then
    for round in $(seq "$ACCEPT_ROUNDS"); do
        for n in $ACCEPTORS; do
            file="$OUT/acceptors-$n-$round.txt"
            start_server --impl atoll --acceptors "$n"
            load "$file" accept
            stop_server
            accept_runs+=("$n#$round=$file")
        done
    done
fi

http_runs=()
if wants http; then
    for round in $(seq "$ROUNDS"); do
        for impl in atoll hyper axum; do
            file="$OUT/http-$impl-$round.txt"
            start_server --protocol http --impl "$impl"
            load "$file" http
            stop_server
            http_runs+=("$impl#$round=$file")
        done
    done
fi

# RPC: the load generator calls with the client library of the server under test.
rpc_runs=()
if wants rpc; then
    for round in $(seq "$ROUNDS"); do
        for impl in atoll tarpc; do
            file="$OUT/rpc-$impl-$round.txt"
            start_server --protocol rpc --impl "$impl"
            load "$file" rpc --rpc-impl "$impl"
            stop_server
            rpc_runs+=("$impl#$round=$file")
        done
    done
fi

echo
echo "$(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')), Linux $(uname -r)"
tree=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
[[ -z $(git status --porcelain -- src 2>/dev/null) ]] || tree="$tree + uncommitted changes in src/"
echo "atoll at $tree"
echo "server on core $SERVER_CPU (tokio multi_thread, 1 worker), load generator on core $LOAD_CPU (1 thread)"
echo "warm-up ${WARMUP}s, measured ${DURATION}s per rate scenario; $IDLE_CONNS idle connections; $HTTP_CONNS HTTP connections; $RPC_CALLERS RPC callers"
others=$(( ($(machine_ticks) - machine_start) - ($(children_ticks) - children_start) ))
ticks=$(getconf CLK_TCK)
echo "other processes used $((others / ticks)) s of CPU during the $((SECONDS - started)) s run"
busy_after=$(busy_now)
if [[ -n $busy_before$busy_after ]] || (( others > ticks * (SECONDS - started) / 10 )); then
    echo "WARNING: other processes were busy, figures are noisy: ${busy_before:-none} (before), ${busy_after:-none} (after)"
fi
if (( ${#runs[@]} )); then
    echo
    "$BIN" report --title "## atoll vs plain tokio echo" --ratio atoll/tokio "${runs[@]}"
fi
if (( ${#accept_runs[@]} )); then
    echo
    "$BIN" report --title "## atoll acceptors per listening socket (accept scenario, median of $ACCEPT_ROUNDS runs)" \
        --only accept. --group true "${accept_runs[@]}"
fi
if (( ${#http_runs[@]} )); then
    echo
    "$BIN" report --title "## atoll vs bare hyper and axum: HTTP/1.1 GET /, keep-alive" \
        --ratio atoll/hyper,atoll/axum --only http. "${http_runs[@]}"
fi
if (( ${#rpc_runs[@]} )); then
    echo
    "$BIN" report --title "## atoll vs tarpc: add(a, b) -> u64 over plain TCP, $RPC_CALLERS callers on 1 connection, then on a connection each" \
        --ratio atoll/tarpc --only rpc "${rpc_runs[@]}"
fi
