#!/usr/bin/env bash
# Counts the instructions each server executes per request and per connection, under
# valgrind's callgrind, and prints them as ratios to bare (`serve --bare`).
#
#   benches/instructions.sh
#
# A count of instructions is not a time: it leaves out cache misses and the extra cycles of
# atomic operations. But it is the same from one run to the next, whatever else the machine
# does, which a time on a noisy virtual machine is not: it is the figure that can tell a 2 %
# difference in CPU cost per request. `benches/compare.sh` measures the times.
#
# Contenders (CONTENDERS): bare (`serve --bare`, plain hyper-util: the baseline), bare-tower
# (the same with the routes behind hyper-util's tower adapter, as the lifecycle server has
# them), lifecycle (`serve`), axum-server, and before (`serve` from another tree, as
# BEFORE_SERVE).
#
# For each contender and scenario: start the server under callgrind and send WARMUP_REQUESTS
# with h2load (allocator, buffers and caches settle). Then two measured batches over fresh
# connections, SMALL_BATCH and LARGE_BATCH requests, each between a zeroing and a dump of the
# counters. Per request = (large - small) / (LARGE_BATCH - SMALL_BATCH): both batches open
# the same connections, so handshakes and per-connection work cancel out. Per connection =
# (small - SMALL_BATCH x per request) / connections: the TLS handshake, the connection's
# setup and its close, all included; printed for small responses only, since with 64 KiB
# ones the per-request figure varies from batch to batch by more than a connection costs. Needs valgrind (with callgrind_control) and h2load
# (Debian: apt-get install valgrind nghttp2-client). About 15 minutes with the defaults.
set -euo pipefail

SMALL_BATCH=${SMALL_BATCH:-4000}
LARGE_BATCH=${LARGE_BATCH:-20000}
WARMUP_REQUESTS=${WARMUP_REQUESTS:-2000}
CONTENDERS=${CONTENDERS:-"bare lifecycle axum-server"}
SCENARIOS=${SCENARIOS:-"h1-small h1-64k h2-small h2-64k"}
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}

ROOT=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=benches/common.sh
. "$ROOT/benches/common.sh"
EXAMPLES=$ROOT/target/release/examples
WORK=$ROOT/target/bench-instructions/$(date +%Y%m%d-%H%M%S)
RESULTS=$WORK/instructions.tsv

# Starts contender $1 under callgrind; sets SERVER_PID and SERVER_PORT.
start_server() {
  local contender=$1 log=$WORK/$1.log
  contender_command "$contender"
  rm -f "$WORK/callgrind.out"*
  # Only the counters dumped on request matter; the final dump at exit is not read.
  taskset -c "$SERVER_CPU" valgrind --tool=callgrind --callgrind-out-file="$WORK/callgrind.out" \
    "${CONTENDER_COMMAND[@]}" --addr 127.0.0.1:0 --cert "$WORK/cert.pem" --key "$WORK/key.pem" \
    >"$log" 2>"$log.stderr" &
  SERVER_PID=$!
  wait_listening "$log" 30
}

# Sends $1 requests to URL $2 with h2load options $3; fails unless all succeed.
send() {
  local count=$1 url=$2 options=$3 out=$WORK/h2load.out
  # shellcheck disable=SC2086 # the options are words on purpose
  taskset -c "$CLIENT_CPU" h2load $options -n "$count" "$url" >"$out"
  grep -q "^requests: $count total, $count started, $count done, $count succeeded" "$out" ||
    { echo "$0: not every request succeeded:" >&2; cat "$out" >&2; exit 1; }
}

# Zeroes the server's counters, sends $1 requests (h2load options $3, URL $2), dumps the
# counters, and prints the instructions of that batch.
measure() {
  local file
  callgrind_control --zero "$SERVER_PID" >/dev/null 2>&1
  send "$1" "$2" "$3"
  callgrind_control --dump "$SERVER_PID" >/dev/null 2>&1
  # Dumps are numbered in order; the highest is this batch's.
  file=$(ls "$WORK/callgrind.out".* | sort -t. -k3,3n | tail -1)
  sed -n 's/^totals: \([0-9]*\).*/\1/p' "$file"
}

need valgrind "apt-get install valgrind"
need callgrind_control "apt-get install valgrind"
need h2load "apt-get install nghttp2-client"
need taskset "apt-get install util-linux"

mkdir -p "$WORK"
(cd "$ROOT" && cargo build --release --example serve --example axum_server_bench \
  --example idle_clients)
"$EXAMPLES/idle_clients" cert --out "$WORK"
trap 'jobs -p | xargs -r kill -KILL 2>/dev/null || true' EXIT

# HTTP/1.1: 16 keep-alive connections, one request at a time on each. HTTP/2: 8 connections
# with 8 streams each. Small is `GET /` (6 bytes), 64k is `GET /bytes?n=65536`.
scenarios=("h1-small|--h1 -c16 -m1|/|16" "h1-64k|--h1 -c16 -m1|/bytes?n=65536|16"
  "h2-small|-c8 -m8|/|8" "h2-64k|-c8 -m8|/bytes?n=65536|8")

printf 'scenario\tcontender\tper_request\tper_connection\n' >"$RESULTS"
for contender in $CONTENDERS; do
  for entry in "${scenarios[@]}"; do
    IFS='|' read -r scenario options path connections <<<"$entry"
    [[ " $SCENARIOS " == *" $scenario "* ]] || continue
    echo "$contender $scenario" >&2
    start_server "$contender"
    url="https://127.0.0.1:$SERVER_PORT$path"
    send "$WARMUP_REQUESTS" "$url" "$options"
    small=$(measure "$SMALL_BATCH" "$url" "$options")
    large=$(measure "$LARGE_BATCH" "$url" "$options")
    # Kept for callgrind_annotate: the large batch's dump, named after what it measured.
    mv "$(ls "$WORK/callgrind.out".* | sort -t. -k3,3n | tail -1)" \
      "$WORK/$contender-$scenario.callgrind"
    stop_server "$SERVER_PID"
    per_request=$(((large - small) / (LARGE_BATCH - SMALL_BATCH)))
    per_connection=$(((small - SMALL_BATCH * per_request) / connections))
    printf '%s\t%s\t%s\t%s\n' "$scenario" "$contender" "$per_request" "$per_connection" \
      >>"$RESULTS"
  done
done

echo
echo "Instructions the server executed (callgrind): per request, from batches of" \
  "$SMALL_BATCH and $LARGE_BATCH requests after $WARMUP_REQUESTS of warm-up; per connection," \
  "the handshake, setup and close. Ratios to bare."
echo
awk -F'\t' 'NR > 1 {
    key = $1 " " $2; req[key] = $3; conn[key] = $4; rows[++r] = key
    if ($2 == "bare") { base_req[$1] = $3; base_conn[$1] = $4 }
  }
  function ratio(value, base) { return base > 0 ? sprintf("%.3f", value / base) : "-" }
  END {
    printf "%-9s %-12s %10s %7s %12s %7s\n", "scenario", "contender", "instr/req", "ratio",
      "instr/conn", "ratio"
    for (i = 1; i <= r; i++) {
      split(rows[i], k, " ")
      small = k[1] ~ /-small$/
      printf "%-9s %-12s %10d %7s %12s %7s\n", k[1], k[2], req[rows[i]],
        ratio(req[rows[i]], base_req[k[1]]), small ? conn[rows[i]] : "-",
        small ? ratio(conn[rows[i]], base_conn[k[1]]) : "-"
    }
  }' <(head -1 "$RESULTS"; tail -n +2 "$RESULTS" | sort -s -k1,1)
echo
echo "raw results: $WORK"
