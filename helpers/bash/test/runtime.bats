#!/usr/bin/env bats
# The helper against the real cronium-runtime in dev mode (in-memory store, seeded context).
# The binary is $CRONIUM_RUNTIME_BIN (default <repo>/build/cronium-runtime). If it is missing or
# does not start, every test here fails (they are not skipped).

bats_require_minimum_version 1.5.0

setup_file() {
  load common
  export RUNTIME_ERROR=
  local repo bin
  repo=$(cd "$HELPER_DIR/../.." && pwd)
  bin=${CRONIUM_RUNTIME_BIN:-$repo/build/cronium-runtime}
  export RUNTIME_BIN=$bin
  if [[ ! -x $bin ]]; then
    RUNTIME_ERROR="the runtime binary $bin does not exist (build it, or set CRONIUM_RUNTIME_BIN)"
    return 0
  fi

  export RT_SECRET
  RT_SECRET=$(od -An -tx1 -N24 /dev/urandom | tr -d ' \n')
  local ctx=$BATS_FILE_TMPDIR/context.json
  cat >"$ctx" <<'EOF'
{"executionId":"exec-bats","jobId":"job-bats","eventId":"evt-bats","userId":"user-bats",
 "metadata":{"input":{"name":"world","n":0,"flag":false,"list":[1,"two",null]}},
 "event":{"name":"Nightly report","type":"BASH","nested":{"a":{"b":"deep"}},"tags":["x","y"]},
 "user":{"id":"user-bats","email":"u@example.com"}}
EOF

  export RT_PORT RT_PID RT_LOG=$BATS_FILE_TMPDIR/runtime.log
  RT_PORT=$(free_port)
  env -u BACKEND_URL -u VALKEY_URL -u CONFIG_FILE \
    PORT="$RT_PORT" HOST=127.0.0.1 JWT_SECRET="$RT_SECRET" \
    RATE_LIMIT_PER_MIN=1000000 RATE_LIMIT_BURST=100000 \
    "$bin" --dev --dev-context "$ctx" </dev/null >"$BATS_FILE_TMPDIR/runtime.out" 2>"$RT_LOG" 3>&- &
  RT_PID=$!

  local tries
  for (( tries = 0; tries < 300; tries++ )); do
    if curl -sf --max-time 1 "http://127.0.0.1:$RT_PORT/health" >/dev/null 2>&1; then
      break
    fi
    if ! kill -0 "$RT_PID" 2>/dev/null; then
      RUNTIME_ERROR="the runtime exited at start: $(tail -n 5 "$RT_LOG")"
      return 0
    fi
    sleep 0.05
  done
  if (( tries == 300 )); then
    RUNTIME_ERROR="the runtime did not answer /health within 15 s: $(tail -n 5 "$RT_LOG")"
    return 0
  fi

  export RT_TOKEN RT_FRESH_TOKEN RT_OTHER_TOKEN
  RT_TOKEN=$(JWT_SECRET=$RT_SECRET "$bin" token --execution-id exec-bats --user-id user-bats) &&
  RT_FRESH_TOKEN=$(JWT_SECRET=$RT_SECRET "$bin" token --execution-id "exec-fresh-$RT_PORT" --user-id user-bats) &&
  RT_OTHER_TOKEN=$(JWT_SECRET=$RT_SECRET "$bin" token --execution-id exec-other --user-id user-bats) ||
    RUNTIME_ERROR="cronium-runtime token failed"
  return 0
}

teardown_file() {
  if [[ -n ${RT_PID:-} ]]; then
    kill "$RT_PID" 2>/dev/null || true
    wait "$RT_PID" 2>/dev/null || true
  fi
}

setup() {
  load common
  if [[ -n $RUNTIME_ERROR ]]; then
    echo "$RUNTIME_ERROR" >&2
    return 1
  fi
  export CRONIUM_RUNTIME_API=http://127.0.0.1:$RT_PORT
  export CRONIUM_EXECUTION_TOKEN=$RT_TOKEN
  export CRONIUM_EXECUTION_ID=exec-bats
  export CRONIUM_RETRY_DELAY=0.05
  unset CRONIUM_API_ENDPOINT CRONIUM_API_TOKEN CRONIUM_MAX_RETRIES CRONIUM_DEBUG
  source "$CRONIUM_SH"
}

# A variable key of this test only (variables are per user and the user is shared).
key() {
  printf 't%s-%s' "$BATS_TEST_NUMBER" "$1"
}

use_fresh_execution() {
  export CRONIUM_EXECUTION_TOKEN=$RT_FRESH_TOKEN
  export CRONIUM_EXECUTION_ID=exec-fresh-$RT_PORT
}

@test "input: the seeded input as compact JSON" {
  run --separate-stderr cronium_input
  assert_eq "$status" 0
  assert_eq "$stderr" ""
  assert_eq "$output" "$(jq -c . <<<'{"name":"world","n":0,"flag":false,"list":[1,"two",null]}')"
}

@test "input: an execution without input prints {}, status 0" {
  use_fresh_execution
  run --separate-stderr cronium_input
  assert_eq "$status" 0
  assert_eq "$output" "{}"
  assert_eq "$stderr" ""
}

@test "output: set then read back, falsy values included" {
  local -a cases=('{"rows": 3, "ok": true}' '{"rows":3,"ok":true}' 'done' 'done' '0' '0' 'false' 'false'
                  'null' 'null' '[]' '[]' '' '' '--string' '--string')
  local tc
  for (( tc = 0; tc < ${#cases[@]}; tc += 2 )); do
    run --separate-stderr cronium_output -- "${cases[tc]}"
    assert_eq "$status" 0 "output ${cases[tc]}"
    assert_eq "$stderr" ""
    run --separate-stderr cronium_get_output
    assert_eq "$status" 0
    assert_eq "$output" "${cases[tc + 1]}" "read back ${cases[tc]}"
  done
}

@test "variables: every kind of value round-trips, 0/false/null/\"\" included" {
  local -a cases=(
    'hello' 'hello'
    '0' '0'
    '-12.5' '-12.5'
    'false' 'false'
    'true' 'true'
    'null' 'null'
    '' ''
    '{"a": [1, {"b": null}], "c": "d"}' '{"a":[1,{"b":null}],"c":"d"}'
    '[1, "two", false]' '[1,"two",false]'
    'ünï 😀 "quoted" \ back' 'ünï 😀 "quoted" \ back'
    $'two\nlines' $'two\nlines'
    'NaN' 'NaN'
  )
  local tc k
  for (( tc = 0; tc < ${#cases[@]}; tc += 2 )); do
    k=$(key "v$tc")
    run --separate-stderr cronium_set_variable "$k" "${cases[tc]}"
    assert_eq "$status" 0 "set ${cases[tc]}"
    assert_eq "$stderr" ""
    run --separate-stderr cronium_get_variable "$k"
    assert_eq "$status" 0
    assert_eq "$stderr" ""
    assert_eq "$output" "${cases[tc + 1]}" "read back ${cases[tc]}"
  done
}

@test "variables: the JSON type stored is the one sent (checked on the wire)" {
  cronium_set_variable "$(key n)" 42
  cronium_set_variable "$(key s)" 'some text'
  cronium_set_variable "$(key o)" '{"x":1}'
  cronium_set_variable "$(key f)" false
  local got
  got=$(curl -sf -H "Authorization: Bearer $RT_TOKEN" \
        "$CRONIUM_RUNTIME_API/executions/exec-bats/variables/$(key n)" | jq -c '.data')
  assert_eq "$got" "{\"key\":\"$(key n)\",\"value\":42}"
  got=$(curl -sf -H "Authorization: Bearer $RT_TOKEN" \
        "$CRONIUM_RUNTIME_API/executions/exec-bats/variables/$(key s)" | jq -c '.data.value')
  assert_eq "$got" '"some text"'
  got=$(curl -sf -H "Authorization: Bearer $RT_TOKEN" \
        "$CRONIUM_RUNTIME_API/executions/exec-bats/variables/$(key o)" | jq -c '.data.value')
  assert_eq "$got" '{"x":1}'
  got=$(curl -sf -H "Authorization: Bearer $RT_TOKEN" \
        "$CRONIUM_RUNTIME_API/executions/exec-bats/variables/$(key f)" | jq -c '.data.value')
  assert_eq "$got" 'false'
}

@test "variables: a missing variable prints nothing with status 0" {
  run --separate-stderr cronium_get_variable "$(key never-set)"
  assert_eq "$status" 0
  assert_eq "$output" ""
  assert_eq "$stderr" ""
}

@test "variables: exists and delete, with false and null counting as existing" {
  local k
  k=$(key e)
  run cronium_variable_exists "$k"
  assert_eq "$status" 1
  cronium_set_variable "$k" false
  run cronium_variable_exists "$k"
  assert_eq "$status" 0
  cronium_set_variable "$k" null
  run cronium_variable_exists "$k"
  assert_eq "$status" 0
  run --separate-stderr cronium_delete_variable "$k"
  assert_eq "$status" 0
  assert_eq "$stderr" ""
  run cronium_variable_exists "$k"
  assert_eq "$status" 1
  assert_eq "$(cronium_get_variable "$k")" ""
  run --separate-stderr cronium_delete_variable "$k"
  assert_eq "$status" 0
  assert_eq "$stderr" ""
}

@test "variables: a key with a slash and unicode works with every function" {
  local k
  k="$(key dir)/sub ünï 😀"
  cronium_set_variable "$k" 'slashed'
  assert_eq "$(cronium_get_variable "$k")" slashed
  assert_eq "$(cronium_get_variable "$(key dir)")" ""
  cronium_variable_exists "$k"
  cronium_delete_variable "$k"
  run cronium_variable_exists "$k"
  assert_eq "$status" 1
  assert_eq "$(cronium_increment_variable "$k" 3)" 3
  assert_eq "$(cronium_increment_variable "$k")" 4
  assert_eq "$(cronium_get_variable "$k")" 4
}

@test "variables: dotted and reserved-character keys stay keys" {
  local k
  for k in '...' '.x' 'a?b#c%d' 'x+y=z&w'; do
    cronium_set_variable "$k" "value of $k"
    assert_eq "$(cronium_get_variable "$k")" "value of $k" "key $k"
    cronium_delete_variable "$k"
  done
}

@test "variables: the dot-segment keys . and .. are the runtime's 400 invalid_key" {
  # The runtime refuses them: in a backend URL they would collapse into another route.
  local k
  for k in '.' '..'; do
    run --separate-stderr cronium_set_variable "$k" v
    assert_eq "$status" 1 "set $k"
    [[ $stderr =~ ^cronium:\ 400\ invalid_key:\ .+ ]] || { echo "$stderr"; false; }
    run --separate-stderr cronium_get_variable "$k"
    assert_eq "$status" 1 "get $k"
    [[ $stderr =~ ^cronium:\ 400\ invalid_key:\ .+ ]] || { echo "$stderr"; false; }
  done
}

@test "variables: an invalid key is the runtime's 400 invalid_key" {
  run --separate-stderr cronium_set_variable "$(printf 'bad\001key')" v
  assert_eq "$status" 1
  [[ $stderr =~ ^cronium:\ 400\ invalid_key:\ .+ ]] || { echo "$stderr"; false; }
  run --separate-stderr cronium_get_variable "$(head -c 300 /dev/zero | tr '\0' k)"
  assert_eq "$status" 1
  [[ $stderr =~ ^cronium:\ 400\ invalid_key:\ .+ ]] || { echo "$stderr"; false; }
}

@test "increment: counts from 0, takes any number, prints the new value" {
  local k
  k=$(key counter)
  assert_eq "$(cronium_increment_variable "$k")" 1
  assert_eq "$(cronium_increment_variable "$k" 5)" 6
  assert_eq "$(cronium_increment_variable "$k" -2.5)" 3.5
  assert_eq "$(cronium_increment_variable "$k" +1.5)" 5
  assert_eq "$(cronium_get_variable "$k")" 5
}

@test "increment: a non-numeric value is a 409 conflict" {
  local k
  k=$(key text)
  cronium_set_variable "$k" 'not a number'
  run --separate-stderr cronium_increment_variable "$k"
  assert_eq "$status" 1
  assert_eq "$output" ""
  [[ $stderr =~ ^cronium:\ 409\ conflict:\ .+ ]] || { echo "$stderr"; false; }
  assert_eq "$(cronium_get_variable "$k")" 'not a number'
}

@test "increment: concurrent increments from many shells are not lost" {
  local k n pids=()
  k=$(key parallel)
  for (( n = 0; n < 20; n++ )); do
    cronium_increment_variable "$k" >/dev/null &
    pids+=($!)
  done
  for n in "${pids[@]}"; do
    wait "$n"
  done
  assert_eq "$(cronium_get_variable "$k")" 20
}

@test "variables are per user: another execution of the same user sees them" {
  local k
  k=$(key shared)
  cronium_set_variable "$k" '{"from":"exec-bats"}'
  use_fresh_execution
  assert_eq "$(cronium_get_variable "$k")" '{"from":"exec-bats"}'
}

@test "event: the event object only; context: the whole context" {
  run --separate-stderr cronium_event
  assert_eq "$status" 0
  assert_eq "$(jq -c '.nested' <<<"$output")" '{"a":{"b":"deep"}}'
  assert_eq "$(jq -r 'has("executionId")' <<<"$output")" 'false'
  run --separate-stderr cronium_context
  assert_eq "$status" 0
  assert_eq "$stderr" ""
  assert_eq "$(jq -c '[.executionId, .jobId, .eventId, .userId, .eventName, .eventType]' <<<"$output")" \
    '["exec-bats","job-bats","evt-bats","user-bats","Nightly report","BASH"]'
  assert_eq "$(jq -c '.event.nested' <<<"$output")" '{"a":{"b":"deep"}}'
  [[ $output != *$'\n'* ]] || { echo "not compact: $output"; false; }
}

@test "event_field: dotted paths, arrays, missing fields, no code injection" {
  local -a cases=(
    'eventName' 'Nightly report'
    'event.name' 'Nightly report'
    'event.nested.a.b' 'deep'
    'event.nested' '{"a":{"b":"deep"}}'
    'event.tags.1' 'y'
    'metadata.input.name' 'world'
    'metadata.input.n' '0'
    'metadata.input.flag' 'false'
    'metadata.input.list.2' 'null'
    'user.email' 'u@example.com'
    'event.nope' ''
    'nope.deeper' ''
    'event) | env | (.' ''
  )
  local tc
  for (( tc = 0; tc < ${#cases[@]}; tc += 2 )); do
    run --separate-stderr cronium_event_field "${cases[tc]}"
    assert_eq "$status" 0 "status for ${cases[tc]}"
    assert_eq "$output" "${cases[tc + 1]}" "field ${cases[tc]}"
    assert_eq "$stderr" ""
  done
}

@test "condition: null before any set, then true and false" {
  use_fresh_execution
  assert_eq "$(cronium_get_condition)" null
  cronium_set_condition true
  assert_eq "$(cronium_get_condition)" true
  cronium_set_condition off
  assert_eq "$(cronium_get_condition)" false
  cronium_setCondition yes
  assert_eq "$(cronium_getCondition)" true
}

@test "tool actions: execute_tool_action and the send_* helpers reach the runtime" {
  run --separate-stderr cronium_execute_tool_action slack send_message '{"channel":"#ops","text":"hi"}'
  assert_eq "$status" 0
  assert_eq "$stderr" ""
  assert_eq "$(jq -c '[.success, .data.tool, .data.action, .data.params]' <<<"$output")" \
    '[true,"slack","send_message",{"channel":"#ops","text":"hi"}]'
  run --separate-stderr cronium_send_email 'a@x.io, b@x.io' 'Subject' 'Body' --cc c@x.io --html
  assert_eq "$status" 0
  assert_eq "$(jq -c '[.data.tool, .data.params]' <<<"$output")" \
    '["email",{"to":["a@x.io","b@x.io"],"subject":"Subject","body":"Body","cc":["c@x.io"],"html":true}]'
  run --separate-stderr cronium_send_slack_message '#ops' 'text' --username bot
  assert_eq "$status" 0
  assert_eq "$(jq -c '[.data.tool, .data.params]' <<<"$output")" '["slack",{"channel":"#ops","text":"text","username":"bot"}]'
  run --separate-stderr cronium_send_discord_message 42 'content' --embed '{"title":"T"}'
  assert_eq "$status" 0
  assert_eq "$(jq -c '[.data.tool, .data.params]' <<<"$output")" \
    '["discord",{"channelId":"42","content":"content","embeds":[{"title":"T"}]}]'
}

@test "camelCase names of the docs work against the runtime" {
  local k
  k=$(key camel)
  cronium_setVariable "$k" '{"c":1}'
  assert_eq "$(cronium_getVariable "$k")" '{"c":1}'
  cronium_variableExists "$k"
  assert_eq "$(cronium_incrementVariable "$(key camel-n)" 2)" 2
  cronium_deleteVariable "$k"
  assert_eq "$(cronium_getVariable "$k")" ""
  assert_eq "$(cronium_eventField event.name)" "Nightly report"
}

@test "errors: another execution's token is 403 execution_mismatch, a bad token 401" {
  export CRONIUM_EXECUTION_TOKEN=$RT_OTHER_TOKEN
  run --separate-stderr cronium_get_variable x
  assert_eq "$status" 1
  assert_eq "$output" ""
  [[ $stderr =~ ^cronium:\ 403\ execution_mismatch:\ .+$ ]] || { echo "$stderr"; false; }
  export CRONIUM_EXECUTION_TOKEN=not.a.token
  run --separate-stderr cronium_set_condition true
  assert_eq "$status" 1
  [[ $stderr =~ ^cronium:\ 401\ invalid_token:\ .+$ ]] || { echo "$stderr"; false; }
  run --separate-stderr cronium_variable_exists x
  assert_eq "$status" 2
  [[ $stderr =~ ^cronium:\ 401\ [a-z_]+: ]] || { echo "$stderr"; false; }
}

@test "debug lines against the runtime show the status and never the token" {
  CRONIUM_DEBUG=1 run --separate-stderr cronium_get_condition
  assert_eq "$status" 0
  [[ $stderr =~ ^cronium:\ debug:\ GET\ /executions/exec-bats/condition\ -\>\ 200\ in\ [0-9.]+\ ms ]] || { echo "$stderr"; false; }
  assert_not_contains "$stderr" "$RT_TOKEN"
}

@test "a job script loaded through BASH_ENV under set -euo pipefail" {
  local k
  k=$(key job)
  run --separate-stderr env -i PATH="$PATH" BASH_ENV="$CRONIUM_SH" \
    CRONIUM_RUNTIME_API="$CRONIUM_RUNTIME_API" CRONIUM_EXECUTION_TOKEN="$RT_TOKEN" \
    CRONIUM_EXECUTION_ID=exec-bats K="$k" bash -c '
      set -euo pipefail
      name=$(cronium_input | jq -r .name)
      cronium_set_variable "$K" "hello $name"
      runs=$(cronium_increment_variable "$K-runs")
      cronium_output "{\"greeting\": \"$(cronium_get_variable "$K")\", \"runs\": $runs}"
      cronium_set_condition true
      cronium_get_output'
  assert_eq "$status" 0
  assert_eq "$stderr" ""
  assert_eq "$output" '{"greeting":"hello world","runs":1}'
}

@test "append: atomic, separator, missing starts empty, non-string is a 409" {
  local k
  k=$(key log)
  cronium_append_variable "$k" first
  cronium_append_variable "$k" second ', '
  assert_eq "$(cronium_get_variable "$k")" "first, second"
  cronium.appendVariable "$k" third ', '
  assert_eq "$(cronium_get_variable "$k")" "first, second, third"
  local n
  n=$(key num)
  cronium_set_variable "$n" 5
  run --separate-stderr cronium_append_variable "$n" x
  assert_eq "$status" 1
  assert_contains "$stderr" "cronium: 409 conflict:"
  # 20 concurrent appends: none is lost.
  local c i
  c=$(key conc)
  for i in $(seq 1 20); do cronium_append_variable "$c" x & done
  wait
  assert_eq "$(cronium_get_variable "$c")" "xxxxxxxxxxxxxxxxxxxx"
}
