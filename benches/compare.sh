#!/usr/bin/env bash
# Compares the lifecycle server with plain hyper-util (`serve --bare`) and axum-server, all
# serving the same routes over TLS on loopback, and prints the results as ratios to bare.
#
#   benches/compare.sh [all|load|idle]
#
# load: alternating rounds of HTTP/1.1 keep-alive load (wrk) and HTTP/2 load (h2load), for
#       small responses (GET /) and 64 KiB ones (GET /bytes?n=65536); requests/s and p50/p99
#       latency, the median of the rounds, and the median of each round's ratio to bare.
# idle: N idle TLS connections (N in IDLE_COUNTS): the server's resident memory per
#       connection, its CPU time while they sit idle with an idle timeout armed, and the
#       time from SIGTERM to the last close_notify the clients see.
#
# The server runs on CPU SERVER_CPU and every client on CLIENT_CPU. Every load run is bounded
# by DURATION seconds; the idle clients by their own timeouts. Needs: cargo, taskset, wrk and
# h2load (Debian: apt-get install wrk nghttp2-client). A full run takes about 8 minutes.
# Contenders (CONTENDERS): bare (`serve --bare`, plain hyper-util: the baseline), bare-tower
# (the same with the routes behind hyper-util's tower adapter, as the lifecycle server has
# them), lifecycle (`serve`), axum-server, and before (see below).
# To measure a change, add the contender "before" and set BEFORE_SERVE to the `serve` binary
# of the other tree (copied out of its target directory, as cargo reuses the same names).
# SCENARIOS picks among h1-small, h1-64k, h2-small and h2-64k (all by default).
# Settings come from the environment; the defaults are below. Raw results are kept in
# target/bench-compare/.

set -euo pipefail

ROUNDS=${ROUNDS:-5}
DURATION=${DURATION:-5}
# Seconds of the same load, unrecorded, before each recorded run: the first moments after an
# idle spell are slower on some virtual machines, whose idle CPUs take long to wake.
WARMUP=${WARMUP:-1}
CONNECTIONS=${CONNECTIONS:-64}
H2_CONNECTIONS=${H2_CONNECTIONS:-8}
H2_STREAMS=${H2_STREAMS:-8}
IDLE_COUNTS=${IDLE_COUNTS:-"1000 10000"}
IDLE_FOR=${IDLE_FOR:-10}
CONTENDERS=${CONTENDERS:-"bare lifecycle axum-server"}
SCENARIOS=${SCENARIOS:-"h1-small h1-64k h2-small h2-64k"}
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}

WHAT=${1:-all}
case $WHAT in
  all | load | idle) ;;
  *) echo "usage: $0 [all|load|idle]" >&2; exit 2 ;;
esac

ROOT=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=benches/common.sh
. "$ROOT/benches/common.sh"
EXAMPLES=$ROOT/target/release/examples
WORK=$ROOT/target/bench-compare/$(date +%Y%m%d-%H%M%S)
RESULTS=$WORK/load.tsv
IDLE_RESULTS=$WORK/idle.tsv
SERVER_PID=""
SERVER_PORT=""

# Prints the median of the numbers on standard input, one a line.
median() {
  sort -g | awk '{ v[NR] = $1 } END {
    if (NR == 0) print "nan"; else if (NR % 2) print v[(NR + 1) / 2];
    else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

# CPU time used so far by the threads of process $1, in nanoseconds: the first field of
# each thread's schedstat (finer than the 10 ms ticks of /proc/PID/stat).
cpu_ns() {
  cat "/proc/$1/task/"*/schedstat 2>/dev/null | awk '{ ns += $1 } END { printf "%.0f\n", ns }'
}

# Sets CHILDREN_MS to the CPU time used so far by the finished children of this shell, in
# milliseconds. Not to be called in a subshell, which has children of its own.
read_children_cpu() {
  times >"$WORK/times"
  CHILDREN_MS=$(tail -1 "$WORK/times" | tr 'ms' '  ' |
    awk '{ printf "%.0f\n", ($1 * 60 + $2 + $3 * 60 + $4) * 1000 }')
}

# Prints the q-th quantile (0 to 1) of the sorted numbers on standard input.
quantile() {
  awk -v q="$1" '{ v[NR] = $1 } END { i = int(NR * q); if (i < 1) i = 1; print v[i] + 0 }'
}

# Starts contender $1 on SERVER_CPU, with any further arguments; waits for its ready line.
start_server() {
  local contender=$1 log
  shift
  log=$WORK/$contender.$RANDOM.log
  contender_command "$contender"
  taskset -c "$SERVER_CPU" "${CONTENDER_COMMAND[@]}" --addr 127.0.0.1:0 \
    --cert "$WORK/cert.pem" --key "$WORK/key.pem" "$@" >"$log" 2>"$log.stderr" &
  SERVER_PID=$!
  wait_listening "$log" 10
}

# One load run of tool $1 (wrk or h2load) on URL $2 for $3 seconds; prints
# "rps p50_us p99_us errors requests".
load_run() {
  local tool=$1 url=$2 seconds=$3 out=$WORK/run.out
  if [ "$tool" = wrk ]; then
    taskset -c "$CLIENT_CPU" wrk -t1 -c"$CONNECTIONS" -d"${seconds}s" --timeout 5s \
      -s "$ROOT/benches/wrk_report.lua" "$url" >"$out"
    sed -n 's/^result rps=\([0-9.]*\) p50_us=\([0-9]*\) p99_us=\([0-9]*\) errors=\([0-9]*\) requests=\([0-9]*\)$/\1 \2 \3 \4 \5/p' "$out"
  else
    local log=$WORK/h2load.log
    rm -f "$log"
    taskset -c "$CLIENT_CPU" h2load -t1 -c"$H2_CONNECTIONS" -m"$H2_STREAMS" \
      -D "$seconds" --log-file "$log" "$url" >"$out"
    local rps errors p50 p99 requests
    rps=$(sed -n 's|^finished in .*, \([0-9.]*\) req/s.*|\1|p' "$out")
    errors=$(sed -n 's/^requests: .* \([0-9]*\) failed, \([0-9]*\) errored.*/\1 \2/p' "$out" |
      awk '{ print $1 + $2 }')
    requests=$(sed -n 's/^requests: \([0-9]*\) total.*/\1/p' "$out")
    # Latency per request, from the log: the third column, in microseconds.
    awk -F'\t' '$2 == 200 { print $3 }' "$log" | sort -n >"$log.sorted"
    p50=$(quantile 0.50 <"$log.sorted")
    p99=$(quantile 0.99 <"$log.sorted")
    echo "$rps $p50 $p99 $errors $requests"
  fi
}

load_phase() {
  local -A pids ports
  local contender scenario round
  for contender in $CONTENDERS; do
    start_server "$contender"
    pids[$contender]=$SERVER_PID
    ports[$contender]=$SERVER_PORT
    # Warm up: connection pools, allocator, caches. Not recorded.
    load_run wrk "https://127.0.0.1:$SERVER_PORT/" 2 >/dev/null
  done

  local -a scenarios=("h1-small wrk /" "h1-64k wrk /bytes?n=65536"
    "h2-small h2load /" "h2-64k h2load /bytes?n=65536")
  local -a order
  read -r -a order <<<"$CONTENDERS"
  printf 'round\tscenario\tcontender\trps\tp50_us\tp99_us\terrors\tcpu_pct\tcpu_us_per_request\tclient_cpu_pct\n' \
    >"$RESULTS"
  for round in $(seq "$ROUNDS"); do
    echo "load round $round of $ROUNDS" >&2
    for entry in "${scenarios[@]}"; do
      read -r scenario tool path <<<"$entry"
      [[ " $SCENARIOS " == *" $scenario "* ]] || continue
      for contender in "${order[@]}"; do
        local pid=${pids[$contender]} url="https://127.0.0.1:${ports[$contender]}$path"
        local before after client_before client_after result rps p50 p99 errors requests
        load_run "$tool" "$url" "$WARMUP" >/dev/null
        before=$(cpu_ns "$pid")
        read_children_cpu
        client_before=$CHILDREN_MS
        result=$(load_run "$tool" "$url" "$DURATION")
        read_children_cpu
        client_after=$CHILDREN_MS
        after=$(cpu_ns "$pid")
        read -r rps p50 p99 errors requests <<<"$result"
        printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$round" "$scenario" "$contender" \
          "$rps" "$p50" "$p99" "$errors" \
          "$(awk -v ns=$((after - before)) -v s="$DURATION" 'BEGIN { printf "%.1f", ns / s / 1e7 }')" \
          "$(awk -v ns=$((after - before)) -v n="$requests" 'BEGIN { printf "%.2f", ns / n / 1e3 }')" \
          "$(awk -v ms=$((client_after - client_before)) -v s="$DURATION" \
            'BEGIN { printf "%.1f", ms / s / 10 }')" >>"$RESULTS"
      done
      # Rotate the order, so that no contender always runs first or last.
      order=("${order[@]:1}" "${order[0]}")
    done
  done
  for contender in $CONTENDERS; do
    stop_server "${pids[$contender]}"
  done
}

# The value of column $3 (by header name) for scenario $1, contender $2, one per round.
column() {
  awk -F'\t' -v s="$1" -v c="$2" -v name="$3" '
    NR == 1 { for (i = 1; i <= NF; i++) if ($i == name) col = i; next }
    $2 == s && $3 == c { print $1, $col }' "$RESULTS"
}

# The median over rounds of contender $2's value of column $3 divided by bare's, scenario $1.
ratio() {
  join <(column "$1" "$2" "$3" | sort) <(column "$1" bare "$3" | sort) |
    awk '$3 > 0 { print $2 / $3 }' | median
}

load_report() {
  echo
  echo "Load: $ROUNDS rounds of ${DURATION} s per contender and scenario; server on CPU" \
    "$SERVER_CPU, client on CPU $CLIENT_CPU."
  echo "h1: wrk -t1 -c$CONNECTIONS (keep-alive). h2: h2load -t1 -c$H2_CONNECTIONS" \
    "-m$H2_STREAMS. Medians over rounds; ratios are medians of each round's ratio to bare."
  echo "CPU %: the server's CPU time over the run (100 = one core busy); client CPU %: the" \
    "load generator's; us/req: the server's CPU time divided by the requests served."
  echo
  printf '%-9s %-12s %8s %7s %7s %6s %6s %7s %6s | %6s %6s %6s %7s\n' scenario contender \
    'req/s' 'p50 ms' 'p99 ms' 'CPU %' client 'us/req' errors 'req/s' p50 p99 'us/req'
  printf '%-9s %-12s %8s %7s %7s %6s %6s %7s %6s | %28s\n' '' '' '' '' '' '' 'CPU %' '' '' \
    'ratio to bare'
  local scenario contender
  for scenario in $SCENARIOS; do
    for contender in $CONTENDERS; do
      local rps p50 p99 cpu client per errors
      rps=$(column "$scenario" "$contender" rps | cut -d' ' -f2 | median)
      p50=$(column "$scenario" "$contender" p50_us | cut -d' ' -f2 | median)
      p99=$(column "$scenario" "$contender" p99_us | cut -d' ' -f2 | median)
      cpu=$(column "$scenario" "$contender" cpu_pct | cut -d' ' -f2 | median)
      client=$(column "$scenario" "$contender" client_cpu_pct | cut -d' ' -f2 | median)
      per=$(column "$scenario" "$contender" cpu_us_per_request | cut -d' ' -f2 | median)
      errors=$(column "$scenario" "$contender" errors | awk '{ n += $2 } END { print n + 0 }')
      printf '%-9s %-12s %8.0f %7.2f %7.2f %6.0f %6.0f %7.2f %6s' "$scenario" "$contender" \
        "$rps" "$(awk -v v="$p50" 'BEGIN { print v / 1000 }')" \
        "$(awk -v v="$p99" 'BEGIN { print v / 1000 }')" "$cpu" "$client" "$per" "$errors"
      if [ "$contender" = bare ]; then
        printf ' |\n'
      else
        printf ' | %6.3f %6.3f %6.3f %7.3f\n' "$(ratio "$scenario" "$contender" rps)" \
          "$(ratio "$scenario" "$contender" p50_us)" "$(ratio "$scenario" "$contender" p99_us)" \
          "$(ratio "$scenario" "$contender" cpu_us_per_request)"
      fi
    done
  done
}

idle_phase() {
  local limit n contender
  limit=$(ulimit -Hn)
  [ "$limit" = unlimited ] && limit=1048576
  ulimit -n "$limit"
  printf 'contender\tconnections\tfields\n' >"$IDLE_RESULTS"
  for n in $IDLE_COUNTS; do
    if [ $((n + 100)) -gt "$limit" ]; then
      echo "skipping $n idle connections: the open-file limit is $limit" >&2
      continue
    fi
    for contender in $CONTENDERS; do
      echo "idle: $n connections to $contender" >&2
      local -a extra=()
      # The lifecycle's idle timeout is armed, well past the measurement window.
      [ "$contender" = lifecycle ] && extra=(--idle-timeout 60s)
      start_server "$contender" "${extra[@]}"
      local fields
      fields=$(taskset -c "$CLIENT_CPU" "$EXAMPLES/idle_clients" run \
        --addr "127.0.0.1:$SERVER_PORT" --ca "$WORK/cert.pem" --connections "$n" \
        --server-pid "$SERVER_PID" --idle-for "${IDLE_FOR}s")
      printf '%s\t%s\t%s\n' "$contender" "$n" "$fields" >>"$IDLE_RESULTS"
      # idle_clients has sent SIGTERM already.
      stop_server "$SERVER_PID" no
    done
  done
}

# Field $3 of the idle run of contender $1 with $2 connections.
idle_field() {
  awk -F'\t' -v c="$1" -v n="$2" -v key="$3" '$1 == c && $2 == n {
    split($3, kv, " "); for (i in kv) { split(kv[i], p, "="); if (p[1] == key) print p[2] } }' \
    "$IDLE_RESULTS"
}

idle_report() {
  echo
  echo "Idle connections (one request each, then idle; the lifecycle's idle timeout armed at" \
    "60 s): server RSS per connection, server CPU over ${IDLE_FOR} s idle, and the drain."
  echo
  printf '%-12s %6s %11s %9s %9s %13s %12s %12s\n' contender N 'B/conn' '+ vs bare' \
    'idle CPU' 'close_notify' 'median ms' 'last ms'
  local n contender
  for n in $IDLE_COUNTS; do
    for contender in $CONTENDERS; do
      local per bare_per added
      per=$(idle_field "$contender" "$n" bytes_per_connection)
      [ -n "$per" ] || continue
      bare_per=$(idle_field bare "$n" bytes_per_connection)
      added=-
      [ -n "$bare_per" ] && [ "$contender" != bare ] && added=$((per - bare_per))
      printf '%-12s %6s %11s %9s %7sms %6s/%-6s %12s %12s\n' "$contender" "$n" "$per" \
        "$added" "$(idle_field "$contender" "$n" idle_cpu_ms)" \
        "$(idle_field "$contender" "$n" close_notify)" "$n" \
        "$(idle_field "$contender" "$n" median_close_notify_ms)" \
        "$(idle_field "$contender" "$n" last_close_notify_ms)"
    done
  done
}

need cargo "install Rust"
need taskset "apt-get install util-linux"
if [ "$WHAT" != idle ]; then
  need wrk "apt-get install wrk"
  need h2load "apt-get install nghttp2-client"
fi

mkdir -p "$WORK"
(cd "$ROOT" && cargo build --release --example serve --example axum_server_bench \
  --example idle_clients)
"$EXAMPLES/idle_clients" cert --out "$WORK"
trap 'jobs -p | xargs -r kill -KILL 2>/dev/null || true' EXIT

echo "machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2-)," \
  "kernel $(uname -r)"
[ "$WHAT" = idle ] || load_phase
[ "$WHAT" = load ] || idle_phase
[ "$WHAT" = idle ] || load_report
[ "$WHAT" = load ] || idle_report
echo
echo "raw results: $WORK"
