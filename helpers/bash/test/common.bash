# Shared by the bats files of the bash helper: paths, the fault server, small assertions.
# Every server a test starts listens on 127.0.0.1 only and is killed by the file's teardown.

HELPER_DIR=$(cd "$BATS_TEST_DIRNAME/.." && pwd)
# CRONIUM_SH_UNDER_TEST runs the tests against another copy (used to check that they can fail).
CRONIUM_SH=${CRONIUM_SH_UNDER_TEST:-$HELPER_DIR/cronium.sh}
FAULT_SERVER=$BATS_TEST_DIRNAME/fault_server.py
PY=/usr/bin/python3

# Proxies from the environment must not catch requests to 127.0.0.1.
unset http_proxy https_proxy HTTP_PROXY HTTPS_PROXY all_proxy ALL_PROXY no_proxy NO_PROXY

# A TCP port that nothing listens on right now (the kernel picks it).
free_port() {
  "$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

# fault_start PORTFILE [PORT]: starts a fault server in the background; prints its pid.
# fd 3 is bats' own: a background process must not hold it.
fault_spawn() {
  rm -f "$1"
  "$PY" "$FAULT_SERVER" "$@" </dev/null >/dev/null 2>&1 3>&- &
  echo $!
}

# wait_file FILE SECONDS: waits until FILE exists.
wait_file() {
  local i
  for (( i = 0; i < $2 * 20; i++ )); do
    [[ -s $1 ]] && return 0
    sleep 0.05
  done
  return 1
}

# For setup_file: the file's fault server, exported as FAULT_PORT and FAULT_PID.
fault_start() {
  local portfile=$BATS_FILE_TMPDIR/fault.port
  FAULT_PID=$(fault_spawn "$portfile")
  export FAULT_PID
  if ! wait_file "$portfile" 10; then
    echo "the fault server did not start" >&2
    return 1
  fi
  FAULT_PORT=$(cat "$portfile")
  export FAULT_PORT
}

fault_stop() {
  if [[ -n ${FAULT_PID:-} ]]; then
    kill "$FAULT_PID" 2>/dev/null || true
    wait "$FAULT_PID" 2>/dev/null || true
  fi
}

fault_url() {
  printf 'http://127.0.0.1:%s' "$FAULT_PORT"
}

fault_reset() {
  curl -sf --max-time 5 -X POST "$(fault_url)/_fault/reset" >/dev/null
}

# fault_script JSON-LIST: the next responses of the fault server.
fault_script() {
  curl -sf --max-time 5 -X POST --data-binary "$1" "$(fault_url)/_fault/script" >/dev/null
}

# fault_log [JQ-FILTER]: the requests the fault server saw (JSON), through a jq filter.
fault_log() {
  curl -sf --max-time 5 "$(fault_url)/_fault/log" | jq -c "${1:-.}"
}

# The number of requests the fault server saw.
fault_count() {
  fault_log 'length'
}

# Environment of a helper call against the fault server; fast retries so the tests stay short.
use_fault_server() {
  export CRONIUM_RUNTIME_API
  CRONIUM_RUNTIME_API=$(fault_url)
  export CRONIUM_EXECUTION_TOKEN=tok-$RANDOM-secret.value
  export CRONIUM_EXECUTION_ID=exec-1
  export CRONIUM_RETRY_DELAY=0.01
  export CRONIUM_TIMEOUT=5
  unset CRONIUM_API_ENDPOINT CRONIUM_API_TOKEN CRONIUM_MAX_RETRIES CRONIUM_DEBUG \
        CRONIUM_CONNECT_TIMEOUT CRONIUM_RETRY_MAX_DELAY CRONIUM_MAX_RETRY_AFTER
}

# now_ms: wall clock in milliseconds.
now_ms() {
  local ns
  ns=$(date +%s%N)
  echo $(( ns / 1000000 ))
}

# assert_eq ACTUAL EXPECTED [WHAT]
assert_eq() {
  if [[ $1 != "$2" ]]; then
    printf '%s\n  expected: %q\n  actual:   %q\n' "${3:-values differ}" "$2" "$1" >&2
    return 1
  fi
}

# assert_json_eq ACTUAL EXPECTED: equal as JSON values (key order and spacing ignored).
assert_json_eq() {
  local a e
  a=$(jq -cS . <<<"$1") || { echo "not JSON: $1" >&2; return 1; }
  e=$(jq -cS . <<<"$2")
  assert_eq "$a" "$e" "${3:-JSON differs}"
}

# assert_contains HAYSTACK NEEDLE
assert_contains() {
  if [[ $1 != *"$2"* ]]; then
    printf 'expected to find %q in:\n%s\n' "$2" "$1" >&2
    return 1
  fi
}

assert_not_contains() {
  if [[ $1 == *"$2"* ]]; then
    printf 'did not expect %q in:\n%s\n' "$2" "$1" >&2
    return 1
  fi
}
