#!/usr/bin/env bash
# Benchmarks atoll's echo server against a plain tokio echo server in the same run, then prints
# the results side by side with atoll/tokio ratios, and accepts/s for 1, 2, 4 and 100 acceptors;
# then atoll's HTTP listener against bare hyper and axum, with atoll/hyper and atoll/axum ratios,
# in rounds and then interleaved (the three side by side, loaded in turns of a second, which a
# drift of the machine reaches alike); then atoll's RPC daemon and client against tarpc, with atoll/tarpc ratios; then `atoll serve`
# through a zero-downtime upgrade under HTTP load, against its own steady state; then `atoll serve`
# with echo, rpc, http and https listeners through MIX_UPGRADES upgrades under every client kind
# at once (upgrade-mix: needs h2load and openssl).
#
# The server runs pinned to core 0 and the load generator to core 1; every scenario's server
# gets the same runtime (multi_thread, 1 worker). Rounds alternate the servers (atoll, tokio,
# atoll...; atoll, hyper, axum, atoll...; atoll, tarpc, atoll...), so a drift of the machine
# during the run shows up as a difference between rounds, not between servers.
#
#   bench/run.sh                      # about 8 minutes on 2 cores
#   ROUNDS=1 DURATION=2 bench/run.sh  # a quick look
#   SCENARIOS=http bench/run.sh       # HTTP only
#   SCENARIOS=http-interleaved bench/run.sh   # the HTTP servers side by side, loaded in turn
#
# Settings (environment): SCENARIOS (what to run, among echo bulk accept idle idle-used acceptors
# http http-interleaved rpc upgrade upgrade-mix, separated by spaces or commas; all by default), ROUNDS (3), MEM_ROUNDS (3: rounds that
# also measure memory), WARMUP (1 s), DURATION (5 s), IDLE_CONNS (10000), HTTP_CONNS (64),
# RPC_CALLERS (50), ACCEPTORS ("1 2 4 100"), ACCEPT_ROUNDS (2), PORT (7400), SERVER_CPU (0),
# LOAD_CPU (1), CYCLES (20: cycles of http-interleaved), SLICE (1 s: each server's turn in a
# cycle), MIX_UPGRADES (20), MIX_EVERY (3 s between upgrades), MIX_RPS (250: requests per second
# of each h2load connection in upgrade-mix), KEEP (keep the raw metric files).
set -euo pipefail

SCENARIOS=${SCENARIOS:-echo bulk accept idle idle-used acceptors http http-interleaved rpc upgrade upgrade-mix}
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
CYCLES=${CYCLES:-20}
SLICE=${SLICE:-1}
MIX_UPGRADES=${MIX_UPGRADES:-20}
MIX_EVERY=${MIX_EVERY:-3}
MIX_RPS=${MIX_RPS:-250}

for s in $SCENARIOS; do
    case $s in
    echo | bulk | accept | idle | idle-used | acceptors | http | http-interleaved | rpc | upgrade | upgrade-mix) ;;
    *)
        echo "unknown scenario \`$s\` in SCENARIOS (known: echo bulk accept idle idle-used acceptors http http-interleaved rpc upgrade upgrade-mix)" >&2
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
if wants upgrade || wants upgrade-mix; then
    cargo build --release -p atoll --bin atoll
    ATOLL=$(realpath "${CARGO_TARGET_DIR:-target}/release/atoll")
fi
OUT=$(mktemp -d)
SERVER_PID=
SIDE_PIDS=()
# Configs of the `atoll serve` runs (upgrade scenarios): their serving process changes with
# every upgrade, so it is found through the control socket.
SERVE_CONFIGS=()

stop_server() {
    if [[ -n $SERVER_PID ]]; then
        kill "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
        SERVER_PID=
    fi
}
# stop_serve CONFIG: stops the `atoll serve` of CONFIG, whichever process serves it now. An
# `atoll serve` left behind would keep the caller's lock (flock) open, and its port taken.
stop_serve() {
    local last
    last=$("$ATOLL" status --json --config "$1" 2>/dev/null | sed -n 's/.*"pid": *\([0-9]*\).*/\1/p')
    [[ -z $last ]] || kill "$last" 2>/dev/null || true
}
cleanup() {
    stop_server
    for pid in "${SIDE_PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for config in "${SERVE_CONFIGS[@]}"; do stop_serve "$config"; done
    if [[ -z ${KEEP:-} ]]; then rm -rf "$OUT"; else echo "raw metrics kept in $OUT" >&2; fi
}
trap cleanup EXIT

# start_server ARGS...: starts a server (on SERVER_PORT if set, else PORT) and waits for its
# `ready`.
start_server() {
    # Emptied here, not only by the redirection: the background job may open its log after the
    # first look below, which would then find the previous server's `ready`.
    : >"$OUT/server.log"
    taskset -c "$SERVER_CPU" "$BIN" server --port "${SERVER_PORT:-$PORT}" "$@" >"$OUT/server.log" 2>&1 &
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

# HTTP, interleaved: the three servers run side by side on the server core (ports PORT, PORT+1,
# PORT+2), and the load takes turns among them, SLICE seconds each, for CYCLES cycles.
interleaved_file=
if wants http-interleaved; then
    targets=
    offset=0
    for impl in atoll hyper axum; do
        SERVER_PORT=$((PORT + offset)) start_server --protocol http --impl "$impl"
        SIDE_PIDS+=("$SERVER_PID")
        targets=${targets:+$targets,}$impl=$((PORT + offset)):$SERVER_PID
        SERVER_PID=
        offset=$((offset + 1))
    done
    interleaved_file="$OUT/http-interleaved.txt"
    taskset -c "$LOAD_CPU" "$BIN" interleave --targets "$targets" --cycles "$CYCLES" \
        --slice "$SLICE" --http-conns "$HTTP_CONNS" >"$interleaved_file"
    for pid in "${SIDE_PIDS[@]}"; do kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
    SIDE_PIDS=()
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

# Upgrade: one `atoll serve` (pinned like the other servers; its upgrades inherit the pinning),
# upgraded once per round to the same binary while HTTP_CONNS keep-alive clients load it.
upgrade_file=
if wants upgrade; then
    upgrade_dir="$OUT/upgrade"
    mkdir -p "$upgrade_dir"
    # `home` set, since control commands run from elsewhere than the server.
    printf '[app]\nnode = "bench"\nhome = "%s"\n[[listener]]\nname = "web"\nkind = "http"\nport = %s\n[[listener.handlers]]\nhost = "_"\nresources = ["health"]\n' \
        "$upgrade_dir" "$PORT" >"$upgrade_dir/atoll.toml"
    SERVE_CONFIGS+=("$upgrade_dir/atoll.toml")
    (cd "$upgrade_dir" && exec taskset -c "$SERVER_CPU" "$ATOLL" serve --config atoll.toml >serve.log 2>&1) &
    for _ in $(seq 100); do
        grep -q '^listening' "$upgrade_dir/serve.log" 2>/dev/null && break
        sleep 0.1
    done
    upgrade_file="$OUT/upgrade.txt"
    for round in $(seq "$ROUNDS"); do
        taskset -c "$LOAD_CPU" "$BIN" upgrade --atoll "$ATOLL" --config "$upgrade_dir/atoll.toml" \
            --port "$PORT" --conns "$HTTP_CONNS" --steady "$DURATION" >>"$upgrade_file"
    done
    stop_serve "$upgrade_dir/atoll.toml"
fi

# Upgrade, every client kind: one `atoll serve` with echo (PORT), rpc (PORT+1), http (PORT+2)
# and https (PORT+3, a certificate from a CA that openssl makes), pinned like the other servers,
# upgraded MIX_UPGRADES times to the same binary while the clients (on the load core, h2load
# included) run.
mix_file=
if wants upgrade-mix; then
    mix_dir="$OUT/upgrade-mix"
    mkdir -p "$mix_dir"
    # A CA, which the bench's TLS client trusts, and the server's certificate from it.
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
        -subj "/CN=atoll bench CA" -keyout "$mix_dir/ca-key.pem" -out "$mix_dir/ca.pem" 2>/dev/null
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj /CN=localhost \
        -keyout "$mix_dir/key.pem" -out "$mix_dir/cert.csr" 2>/dev/null
    printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n' >"$mix_dir/leaf.ext"
    openssl x509 -req -in "$mix_dir/cert.csr" -CA "$mix_dir/ca.pem" -CAkey "$mix_dir/ca-key.pem" \
        -CAcreateserial -days 2 -extfile "$mix_dir/leaf.ext" -out "$mix_dir/cert.pem" 2>/dev/null
    listener() { printf '[[listener]]\nname = "%s"\nkind = "%s"\nip = "127.0.0.1"\nport = %s\nshutdown_timeout = "20s"\n%b\n' "$@"; }
    health='[[listener.handlers]]\nhost = "_"\nresources = ["health"]\n'
    {
        printf '[app]\nnode = "bench"\nhome = "%s"\n\n' "$mix_dir"
        listener echo echo "$PORT" ""
        listener kv rpc "$((PORT + 1))" 'plain = true\n'
        listener web http "$((PORT + 2))" "$health"
        listener tls https "$((PORT + 3))" "[listener.tls]\ncert = \"cert.pem\"\nkey = \"key.pem\"\n$health"
    } >"$mix_dir/atoll.toml"
    SERVE_CONFIGS+=("$mix_dir/atoll.toml")
    (cd "$mix_dir" && exec taskset -c "$SERVER_CPU" "$ATOLL" serve --config atoll.toml >serve.log 2>&1) &
    for _ in $(seq 100); do
        (( $(grep -c '^listening' "$mix_dir/serve.log" 2>/dev/null || true) >= 4 )) && break
        sleep 0.1
    done
    if (( $(grep -c '^listening' "$mix_dir/serve.log" 2>/dev/null || true) < 4 )); then
        echo "atoll serve did not start its four listeners:" >&2
        cat "$mix_dir/serve.log" >&2
        exit 1
    fi
    mix_file="$OUT/upgrade-mix.txt"
    taskset -c "$LOAD_CPU" "$BIN" upgrade-mix --atoll "$ATOLL" --config "$mix_dir/atoll.toml" \
        --ca "$mix_dir/ca.pem" --port "$PORT" --upgrades "$MIX_UPGRADES" --every "$MIX_EVERY" --steady "$DURATION" \
        --rps "$MIX_RPS" >"$mix_file"
    stop_serve "$mix_dir/atoll.toml"
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
if [[ -n $interleaved_file ]]; then
    echo
    echo "## atoll vs bare hyper and axum, interleaved: HTTP/1.1 GET /, keep-alive"
    grep -v '^slice ' "$interleaved_file"
fi
if (( ${#rpc_runs[@]} )); then
    echo
    "$BIN" report --title "## atoll vs tarpc: add(a, b) -> u64 over plain TCP, $RPC_CALLERS callers on 1 connection, then on a connection each" \
        --ratio atoll/tarpc --only rpc "${rpc_runs[@]}"
fi
if [[ -n $upgrade_file ]]; then
    echo
    echo "## atoll serve through \`atoll upgrade\` under HTTP load ($HTTP_CONNS keep-alive clients, GET /health), $ROUNDS upgrades"
    echo
    echo "The upgrade window runs from the command's start until the old process has exited: starting (until the"
    echo "new process is ready; the old one serves alone), then switching (clients move over, the old one drains)."
    echo
    awk '
        { v[$1] = v[$1] " " $2 }
        END {
            split("steady_requests_per_sec steady_p99_us during_requests_per_sec during_p99_us starting_p99_us switching_p99_us during_requests command_ms until_old_exit_ms failures", keys, " ")
            printf "| metric | rounds | median |\n|---|---|---|\n"
            for (i = 1; i <= 10; i++) {
                k = "upgrade." keys[i]
                n = split(v[k], xs, " ")
                # Insertion sort: mawk has no asort.
                for (a = 2; a <= n; a++) {
                    x = xs[a] + 0
                    for (b = a - 1; b >= 1 && xs[b] + 0 > x; b--) xs[b + 1] = xs[b]
                    xs[b + 1] = x
                }
                m = xs[int((n + 1) / 2)]
                med[keys[i]] = m
                printf "| %s |%s | %s |\n", keys[i], v[k], m
            }
            printf "\np99 during / steady (medians): %.2f; failures in all rounds:%s\n", med["during_p99_us"] / med["steady_p99_us"], v["upgrade.failures"]
        }' "$upgrade_file"
fi
if [[ -n $mix_file ]]; then
    echo
    echo "## atoll serve through $MIX_UPGRADES upgrades under every client kind at once (h2load at $MIX_RPS requests/s per connection)"
    echo
    cat "$mix_file"
fi
