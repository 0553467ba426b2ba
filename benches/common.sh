# Functions shared by compare.sh and instructions.sh; sourced, not run. They read EXAMPLES
# (the release examples directory) and, for "before", BEFORE_SERVE.

# Exits with a hint unless command $1 is installed; $2 says how to install it.
need() {
  command -v "$1" >/dev/null || { echo "$0: $1 not found; $2" >&2; exit 1; }
}

# Sets the array CONTENDER_COMMAND to the command line that serves contender $1.
contender_command() {
  case $1 in
    lifecycle) CONTENDER_COMMAND=("$EXAMPLES/serve") ;;
    before) CONTENDER_COMMAND=("${BEFORE_SERVE:?set BEFORE_SERVE to a serve binary built from another commit}") ;;
    bare) CONTENDER_COMMAND=("$EXAMPLES/serve" --bare) ;;
    bare-tower) CONTENDER_COMMAND=("$EXAMPLES/serve" --bare --tower) ;;
    axum-server) CONTENDER_COMMAND=("$EXAMPLES/axum_server_bench") ;;
    *) echo "$0: unknown contender $1" >&2; exit 2 ;;
  esac
}

# Waits up to $2 seconds for the server logging to $1 to say it listens; sets SERVER_PORT.
wait_listening() {
  local log=$1 tries=$(($2 * 10))
  for _ in $(seq "$tries"); do
    grep -q '^listening on https://' "$log" && break
    sleep 0.1
  done
  SERVER_PORT=$(sed -n 's|^listening on https://.*:\([0-9]*\)$|\1|p' "$log")
  [ -n "$SERVER_PORT" ] || { echo "$0: the server did not start; see $log.stderr" >&2; exit 1; }
}

# Sends SIGTERM to server $1 unless $2 is "no", waits up to 30 s for it, then kills it.
stop_server() {
  local pid=$1 signal=${2:-yes}
  [ "$signal" = yes ] && { kill -TERM "$pid" 2>/dev/null || true; }
  for _ in $(seq 300); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}
