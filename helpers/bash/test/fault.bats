#!/usr/bin/env bats
# The helper against a scriptable fault server (fault_server.py): requests on the wire, retries,
# timeouts, Retry-After, error lines, output formats, token hygiene.

bats_require_minimum_version 1.5.0

setup_file() {
  load common
  fault_start
}

teardown_file() {
  load common
  fault_stop
}

setup() {
  load common
  fault_reset
  use_fault_server
  source "$CRONIUM_SH"
}

# ---- retries --------------------------------------------------------------------------------

@test "a 503 is retried and the next success is used" {
  fault_script '[{"status":503,"json":{"success":false,"error":"Service Unavailable","message":"backend down","code":"backend_unavailable"}},
                 {"json":{"success":true,"data":{"key":"k","value":"after retry"}}}]'
  run --separate-stderr cronium_get_variable k
  assert_eq "$status" 0
  assert_eq "$output" "after retry"
  assert_eq "$stderr" ""
  assert_eq "$(fault_count)" 2
}

@test "a retried PUT sends the same body again" {
  fault_script '[{"status":502},{"status":504},{"json":{"success":true}}]'
  run --separate-stderr cronium_set_variable k '{"a":[1,2,3]}'
  assert_eq "$status" 0
  assert_eq "$(fault_log '[.[].method] | unique')" '["PUT"]'
  assert_eq "$(fault_log '[.[].body] | unique')" '["{\"value\":{\"a\":[1,2,3]}}"]'
  assert_eq "$(fault_count)" 3
}

@test "after the last attempt the error is the last response's status and code" {
  fault_script '[{"status":503,"json":{"success":false,"error":"Service Unavailable","message":"backend down","code":"backend_unavailable"}},
                 {"status":503,"json":{"success":false,"error":"Service Unavailable","message":"backend down","code":"backend_unavailable"}},
                 {"status":503,"json":{"success":false,"error":"Service Unavailable","message":"still down","code":"backend_unavailable"}}]'
  run --separate-stderr cronium_get_variable k
  assert_eq "$status" 1
  assert_eq "$output" ""
  assert_eq "$stderr" "cronium: 503 backend_unavailable: still down (after 3 attempts)"
  assert_eq "$(fault_count)" 3
}

@test "CRONIUM_MAX_RETRIES sets the number of attempts" {
  fault_script '[{"status":500},{"status":500},{"status":500},{"status":500},{"status":500}]'
  CRONIUM_MAX_RETRIES=1 run --separate-stderr cronium_input
  assert_eq "$status" 1
  assert_eq "$(fault_count)" 1
  assert_eq "$stderr" "cronium: 500 server_error: Internal Server Error"
  fault_reset
  fault_script '[{"status":500},{"status":500},{"status":500},{"status":500},{"status":500},{"status":500}]'
  CRONIUM_MAX_RETRIES=5 run --separate-stderr cronium_input
  assert_eq "$status" 1
  assert_eq "$(fault_count)" 5
}

@test "CRONIUM_MAX_ATTEMPTS (the Python/Node name) wins over CRONIUM_MAX_RETRIES" {
  fault_script '[{"status":500},{"status":500},{"status":500},{"status":500},{"status":500}]'
  CRONIUM_MAX_ATTEMPTS=2 CRONIUM_MAX_RETRIES=4 run --separate-stderr cronium_input
  assert_eq "$status" 1
  assert_eq "$(fault_count)" 2
}

@test "a 4xx other than 429 is not retried" {
  local st code
  for st in 400 401 403 405 409 413; do
    fault_reset
    code=code_$st
    fault_script "[{\"status\":$st,\"json\":{\"success\":false,\"error\":\"E\",\"message\":\"msg $st\",\"code\":\"$code\"}},{\"json\":{\"success\":true}}]"
    run --separate-stderr cronium_set_variable k v
    assert_eq "$status" 1
    assert_eq "$stderr" "cronium: $st $code: msg $st"
    assert_eq "$(fault_count)" 1 "requests for status $st"
  done
}

@test "a 502 backend_error from the runtime is final: one attempt, its status and code" {
  fault_script '[{"status":502,"json":{"success":false,"error":"Bad Gateway","message":"the backend answered 500","code":"backend_error"}},
                 {"json":{"success":true,"data":{"key":"k","value":"retried"}}}]'
  run --separate-stderr cronium_get_variable k
  assert_eq "$status" 1
  assert_eq "$output" ""
  assert_eq "$stderr" "cronium: 502 backend_error: the backend answered 500"
  assert_eq "$(fault_count)" 1
}

@test "a 502 without the runtime's envelope (a proxy) is still retried for a GET" {
  fault_script '[{"status":502,"text":"<html>502 Bad Gateway</html>"},
                 {"json":{"success":true,"data":{"key":"k","value":"after proxy"}}}]'
  run --separate-stderr cronium_get_variable k
  assert_eq "$status" 0
  assert_eq "$output" "after proxy"
  assert_eq "$(fault_count)" 2
}

@test "a refused connection is retried, then reported" {
  local port
  port=$(free_port)
  CRONIUM_RUNTIME_API=http://127.0.0.1:$port CRONIUM_DEBUG=1 run --separate-stderr cronium_get_variable k
  assert_eq "$status" 1
  assert_eq "$output" ""
  assert_eq "$(grep -c '^cronium: debug: GET .* curl exit 7' <<<"$stderr")" 3
  assert_contains "$stderr" "attempt 3/3"
  assert_eq "$(tail -n 1 <<<"$stderr")" \
    "cronium: 000 network_error: GET http://127.0.0.1:$port/executions/exec-1/variables/k: could not connect (connection refused or unreachable) (curl exit 7) (after 3 attempts)"
}

@test "a refused connection is retried until the runtime comes up" {
  local port pid portfile=$BATS_TEST_TMPDIR/late.port
  port=$(free_port)
  # The server starts about 0.6 s after the first attempt; the retries cover 3 s or more.
  ( sleep 0.6; exec "$PY" "$FAULT_SERVER" "$portfile" "$port" ) </dev/null >/dev/null 2>&1 3>&- &
  pid=$!
  CRONIUM_RUNTIME_API=http://127.0.0.1:$port CRONIUM_MAX_RETRIES=12 CRONIUM_RETRY_DELAY=0.3 \
    CRONIUM_RETRY_MAX_DELAY=0.3 CRONIUM_DEBUG=1 run --separate-stderr cronium_set_condition true
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  assert_eq "$status" 0
  assert_contains "$stderr" "curl exit 7"
  assert_contains "$stderr" "POST /executions/exec-1/condition -> 200"
}

@test "a timeout is retried, and the retry succeeds" {
  fault_script '[{"delay":4,"json":{"success":true,"data":{"key":"k","value":"late"}}},
                 {"json":{"success":true,"data":{"key":"k","value":"on time"}}}]'
  local t0 t1
  t0=$(now_ms)
  CRONIUM_TIMEOUT=1 run --separate-stderr cronium_get_variable k
  t1=$(now_ms)
  assert_eq "$status" 0
  assert_eq "$output" "on time"
  assert_eq "$(fault_count)" 2
  (( t1 - t0 >= 900 && t1 - t0 < 3500 )) || { echo "took $(( t1 - t0 )) ms"; false; }
}

@test "timeouts on every attempt end in a timeout error" {
  fault_script '[{"delay":3},{"delay":3}]'
  CRONIUM_TIMEOUT=0.5 CRONIUM_MAX_RETRIES=2 run --separate-stderr cronium_get_condition
  assert_eq "$status" 1
  assert_eq "$(fault_count)" 2
  assert_eq "$stderr" \
    "cronium: 000 timeout: GET $(fault_url)/executions/exec-1/condition: timed out (curl exit 28) (after 2 attempts)"
}

@test "a connection closed without an answer is retried for a GET" {
  fault_script '[{"close":true},{"json":{"success":true,"data":{"condition":true}}}]'
  run --separate-stderr cronium_get_condition
  assert_eq "$status" 0
  assert_eq "$output" "true"
  assert_eq "$(fault_count)" 2
}

@test "an increment is not repeated when the first try may have been applied" {
  fault_script '[{"close":true},{"json":{"success":true,"data":{"key":"n","value":2}}}]'
  run --separate-stderr cronium_increment_variable n
  assert_eq "$status" 1
  assert_eq "$(fault_count)" 1
  assert_contains "$stderr" "cronium: 000 network_error: POST"
  fault_reset
  fault_script '[{"status":500},{"json":{"success":true,"data":{"key":"n","value":2}}}]'
  run --separate-stderr cronium_increment_variable n
  assert_eq "$status" 1
  assert_eq "$(fault_count)" 1
}

@test "an increment is retried after a 503 or a 429 (nothing was applied)" {
  fault_script '[{"status":503},{"status":429},{"json":{"success":true,"data":{"key":"n","value":7}}}]'
  run --separate-stderr cronium_increment_variable n
  assert_eq "$status" 0
  assert_eq "$output" "7"
  assert_eq "$(fault_count)" 3
}

@test "Retry-After is honoured on a 429" {
  fault_script '[{"status":429,"headers":{"Retry-After":"1"},"json":{"success":false,"error":"Too Many Requests","message":"slow down","code":"rate_limited"}},
                 {"json":{"success":true,"data":{"key":"k","value":1}}}]'
  run --separate-stderr cronium_get_variable k
  assert_eq "$status" 0
  assert_eq "$output" "1"
  # The retry came one second later, not after the 10 ms backoff.
  local gap
  gap=$(fault_log '(.[1].t - .[0].t) * 1000 | floor')
  (( gap >= 950 && gap < 2500 )) || { echo "gap $gap ms"; false; }
}

@test "Retry-After is honoured on a 503 and capped by CRONIUM_MAX_RETRY_AFTER" {
  fault_script '[{"status":503,"headers":{"Retry-After":"30"}},{"json":{"success":true}}]'
  CRONIUM_MAX_RETRY_AFTER=0.4 run --separate-stderr cronium_set_condition false
  assert_eq "$status" 0
  local gap
  gap=$(fault_log '(.[1].t - .[0].t) * 1000 | floor')
  (( gap >= 350 && gap < 2000 )) || { echo "gap $gap ms"; false; }
}

@test "the backoff grows exponentially and stays within its bounds" {
  fault_script '[{"status":503},{"status":503},{"status":503},{"status":503}]'
  CRONIUM_RETRY_DELAY=0.2 CRONIUM_MAX_RETRIES=4 CRONIUM_RETRY_MAX_DELAY=0.5 run --separate-stderr cronium_input
  assert_eq "$status" 1
  local gaps
  gaps=$(fault_log '[range(1; length) as $n | (.[$n].t - .[$n - 1].t) * 1000 | floor] | map(tostring) | join(" ")')
  gaps=${gaps//\"/}
  read -r g1 g2 g3 <<<"$gaps"
  # 0.2 s, 0.4 s, then the 0.5 s cap, each with jitter between half and all of it.
  (( g1 >= 95 && g1 < 600 )) || { echo "gaps $gaps"; false; }
  (( g2 >= 195 && g2 < 800 )) || { echo "gaps $gaps"; false; }
  (( g3 >= 245 && g3 < 900 )) || { echo "gaps $gaps"; false; }
}

# ---- settings and the URL -----------------------------------------------------------------

@test "a base URL with a path prefix keeps its prefix" {
  CRONIUM_RUNTIME_API=$(fault_url)/runtime/v1/ run --separate-stderr cronium_input
  assert_eq "$status" 0
  assert_eq "$(fault_log '[.[].path]')" '["/runtime/v1/executions/exec-1/input"]'
}

@test "CRONIUM_API_ENDPOINT and CRONIUM_API_TOKEN are the fallbacks; the CRONIUM_RUNTIME_* names win" {
  unset CRONIUM_RUNTIME_API CRONIUM_EXECUTION_TOKEN
  CRONIUM_API_ENDPOINT=$(fault_url)/ssh CRONIUM_API_TOKEN=ssh-token run --separate-stderr cronium_input
  assert_eq "$status" 0
  CRONIUM_RUNTIME_API=$(fault_url)/container CRONIUM_API_ENDPOINT=http://127.0.0.1:1 \
    CRONIUM_EXECUTION_TOKEN=container-token CRONIUM_API_TOKEN=ssh-token run --separate-stderr cronium_input
  assert_eq "$status" 0
  assert_eq "$(fault_log '[.[] | [.path, .headers.authorization]]')" \
    '[["/ssh/executions/exec-1/input","Bearer ssh-token"],["/container/executions/exec-1/input","Bearer container-token"]]'
}

@test "requests carry the token, JSON headers and a request id; the execution id is encoded" {
  CRONIUM_EXECUTION_ID='exec/1 ü' run --separate-stderr cronium_set_condition yes
  assert_eq "$status" 0
  assert_eq "$(fault_log '.[0].path')" '"/executions/exec%2F1%20%C3%BC/condition"'
  assert_eq "$(fault_log '.[0].headers.authorization')" "\"Bearer $CRONIUM_EXECUTION_TOKEN\""
  assert_eq "$(fault_log '.[0].headers["content-type"]')" '"application/json"'
  assert_eq "$(fault_log '.[0].headers.accept')" '"application/json"'
  assert_eq "$(fault_log '.[0].headers["x-request-id"] | test("^cronium-sh-[0-9a-f]+$")')" true
  assert_eq "$(fault_log '.[0].body')" '"{\"condition\":true}"'
}

# ---- token hygiene and debug --------------------------------------------------------------

@test "CRONIUM_DEBUG=1 prints method, path, status and duration, never the token" {
  fault_script '[{"status":503},{"json":{"success":true,"data":{"key":"a/b","value":5}}}]'
  CRONIUM_DEBUG=1 run --separate-stderr cronium_get_variable a/b
  assert_eq "$status" 0
  assert_eq "$output" "5"
  assert_eq "$(grep -c '^cronium: debug: ' <<<"$stderr")" 3
  [[ $stderr =~ cronium:\ debug:\ GET\ /executions/exec-1/variables/a%2Fb\ -\>\ 503\ in\ [0-9]+\.[0-9]\ ms ]] || { echo "$stderr"; false; }
  [[ $stderr =~ cronium:\ debug:\ GET\ /executions/exec-1/variables/a%2Fb\ -\>\ 200\ in\ [0-9]+\.[0-9]\ ms ]] || { echo "$stderr"; false; }
  assert_not_contains "$stderr" "$CRONIUM_EXECUTION_TOKEN"
  assert_not_contains "$stderr" "secret"
}

@test "without CRONIUM_DEBUG nothing is printed on stderr" {
  fault_script '[{"status":503},{"json":{"success":true,"data":{"key":"k","value":"v"}}}]'
  run --separate-stderr cronium_get_variable k
  assert_eq "$status" 0
  assert_eq "$output" "v"
  assert_eq "$stderr" ""
}

@test "set -x in the calling script does not reveal the token" {
  fault_script '[{"status":503},{"json":{"success":true,"data":{"key":"k","value":"v"}}}]'
  run --separate-stderr bash -x -c 'source "$1"; cronium_get_variable k; cronium_set_variable k v2' _ "$CRONIUM_SH"
  assert_eq "$status" 0
  assert_eq "$output" "v"
  assert_contains "$stderr" "+ cronium_get_variable k"
  assert_not_contains "$stderr" "$CRONIUM_EXECUTION_TOKEN"
}

@test "the token is not on curl's command line" {
  fault_script '[{"delay":1.5,"json":{"success":true}}]'
  local pid found= n f
  cronium_set_variable k v >/dev/null 2>&1 &
  pid=$!
  for (( n = 0; n < 20; n++ )); do
    sleep 0.05
    for f in /proc/[0-9]*/cmdline; do
      if tr '\0' ' ' <"$f" 2>/dev/null | grep -q '^curl '; then
        found=1
        if tr '\0' ' ' <"$f" 2>/dev/null | grep -qF -- "$CRONIUM_EXECUTION_TOKEN"; then
          echo "token seen in $f"
          kill "$pid"
          false
        fi
      fi
    done
  done
  wait "$pid"
  # The scan did see the helper's curl (so it looked at the right process).
  assert_eq "$found" 1
}

# ---- values sent ----------------------------------------------------------------------------

@test "set_variable sends JSON values as JSON and everything else as a string" {
  local -a cases=(
    '42' '42'
    '-1.5e3' '-1.5e3'
    'true' 'true'
    'false' 'false'
    'null' 'null'
    '{"a": {"b": [1, "x"]}}' '{"a":{"b":[1,"x"]}}'
    '[1, 2]' '[1,2]'
    '"quoted"' '"quoted"'
    ' 7 ' '7'
    'hello world' '"hello world"'
    '' '""'
    'NaN' '"NaN"'
    'Infinity' '"Infinity"'
    '01' '"01"'
    '.5' '".5"'
    '1 2' '"1 2"'
    '{"a":1} trailing' '"{\"a\":1} trailing"'
    '[NaN]' '"[NaN]"'
    $'multi\nline\n' '"multi\nline\n"'
    'ünï 😀 \ "q"' '"ünï 😀 \\ \"q\""'
  )
  local tc n=0
  for (( tc = 0; tc < ${#cases[@]}; tc += 2 )); do
    run --separate-stderr cronium_set_variable "k$tc" "${cases[tc]}"
    assert_eq "$status" 0 "status for ${cases[tc]}"
    n=$(( n + 1 ))
    assert_json_eq "$(fault_log ".[$(( n - 1 ))].body")" "$(jq -c --argjson v "${cases[tc + 1]}" -n '{value: $v} | tojson')" "body for ${cases[tc]}"
  done
}

@test "--string forces a string, --json insists on JSON, -- protects a value that looks like an option" {
  run --separate-stderr cronium_set_variable k '42' --string
  assert_eq "$status" 0
  run --separate-stderr cronium_set_variable --string k '{"a":1}'
  assert_eq "$status" 0
  run --separate-stderr cronium_set_variable k -- --string
  assert_eq "$status" 0
  run --separate-stderr cronium_set_variable k '{bad' --json
  assert_eq "$status" 1
  assert_eq "$stderr" "cronium: 000 invalid_json: the value is not valid JSON (--json was given)"
  run --separate-stderr cronium_set_variable k '[1]' --json
  assert_eq "$status" 0
  assert_eq "$(fault_log '[.[].body]')" \
    '["{\"value\":\"42\"}","{\"value\":\"{\\\"a\\\":1}\"}","{\"value\":\"--string\"}","{\"value\":[1]}"]'
}

@test "cronium_output sends {data: value} with the same rules, from an argument or stdin" {
  run --separate-stderr cronium_output '{"rows": 3}'
  assert_eq "$status" 0
  run --separate-stderr cronium_output 'plain text'
  assert_eq "$status" 0
  run --separate-stderr cronium_output 0
  assert_eq "$status" 0
  run --separate-stderr cronium_output --string 0
  assert_eq "$status" 0
  run --separate-stderr bash -c 'source "$1"; printf "[1,2,3]\n" | cronium_output --stdin' _ "$CRONIUM_SH"
  assert_eq "$status" 0
  run --separate-stderr cronium_output
  assert_eq "$status" 1
  assert_eq "$(fault_log '[.[] | [.method, .path, .body]]')" \
    '[["POST","/executions/exec-1/output","{\"data\":{\"rows\":3}}"],["POST","/executions/exec-1/output","{\"data\":\"plain text\"}"],["POST","/executions/exec-1/output","{\"data\":0}"],["POST","/executions/exec-1/output","{\"data\":\"0\"}"],["POST","/executions/exec-1/output","{\"data\":[1,2,3]}"]]'
}

@test "a value too big for the command line of jq or curl is sent whole" {
  local big
  big=$(head -c 300000 /dev/zero | tr '\0' 'x')
  run --separate-stderr cronium_set_variable big "$big"
  assert_eq "$status" 0
  assert_eq "$(fault_log '.[0].body | fromjson | .value | length')" 300000
}

@test "keys are percent-encoded: slash, space, unicode, dot segments" {
  local missing='{"status":404,"json":{"success":false,"error":"Not Found","message":"variable not found","code":"variable_not_found"}}'
  fault_script "[$missing,$missing,$missing,$missing,{\"status\":404},{},{\"json\":{\"success\":true,\"data\":{\"key\":\"a/b\",\"value\":1}}}]"
  cronium_get_variable 'a/b c' >/dev/null
  cronium_get_variable 'ünï😀' >/dev/null
  cronium_get_variable '..' >/dev/null
  cronium_get_variable 'x?y#z%' >/dev/null
  run cronium_variable_exists 'a/b'
  assert_eq "$status" 1
  cronium_delete_variable 'a/b'
  cronium_increment_variable 'a/b' >/dev/null
  assert_eq "$(fault_log '[.[] | .method + " " + .path]')" \
    '["GET /executions/exec-1/variables/a%2Fb%20c","GET /executions/exec-1/variables/%C3%BCn%C3%AF%F0%9F%98%80","GET /executions/exec-1/variables/%2E%2E","GET /executions/exec-1/variables/x%3Fy%23z%25","HEAD /executions/exec-1/variables/a%2Fb","DELETE /executions/exec-1/variables/a%2Fb","POST /executions/exec-1/variables/a%2Fb/increment"]'
}

# ---- what is printed ------------------------------------------------------------------------

@test "a success without a value is an invalid response, not a value" {
  fault_script '[{"json":{"success":true}},{"json":{"success":true,"data":{"key":"k"}}}]'
  run --separate-stderr cronium_get_variable k
  assert_eq "$status" 1
  assert_eq "$stderr" "cronium: 200 invalid_response: the runtime's answer is not the expected JSON envelope"
  run --separate-stderr cronium_increment_variable k
  assert_eq "$status" 1
  assert_eq "$output" ""
}

@test "get_variable prints strings raw, other values as compact JSON, falsy values as such" {
  local -a cases=(
    '"text"' 'text'
    '""' ''
    '0' '0'
    'false' 'false'
    'null' 'null'
    '{"a": [1, {"b": null}]}' '{"a":[1,{"b":null}]}'
    '[]' '[]'
    '"42"' '42'
    '"two\nlines"' $'two\nlines'
  )
  local tc script='['
  for (( tc = 0; tc < ${#cases[@]}; tc += 2 )); do
    script+="{\"json\":{\"success\":true,\"data\":{\"key\":\"k\",\"value\":${cases[tc]}}}},"
  done
  fault_script "${script%,}]"
  for (( tc = 0; tc < ${#cases[@]}; tc += 2 )); do
    run --separate-stderr cronium_get_variable k
    assert_eq "$status" 0
    assert_eq "$output" "${cases[tc + 1]}" "printed for ${cases[tc]}"
    assert_eq "$stderr" ""
  done
}

@test "an empty string value prints an empty line, a missing variable prints nothing" {
  fault_script '[{"json":{"success":true,"data":{"key":"k","value":""}}},
                 {"status":404,"json":{"success":false,"error":"Not Found","message":"variable not found","code":"variable_not_found"}}]'
  assert_eq "$(cronium_get_variable k | od -An -c | tr -d ' ')" '\n'
  assert_eq "$(cronium_get_variable k | od -An -c | tr -d ' ')" ''
}

@test "a missing variable prints nothing with status 0; other 404s are errors" {
  fault_script '[{"status":404,"json":{"success":false,"error":"Not Found","message":"variable not found","code":"variable_not_found"}},
                 {"status":404,"json":{"success":false,"error":"Not Found","message":"execution not found","code":"execution_not_found"}},
                 {"status":404,"text":"404 page not found"}]'
  run --separate-stderr cronium_get_variable k
  assert_eq "$status" 0
  assert_eq "$output" ""
  assert_eq "$stderr" ""
  run --separate-stderr cronium_get_variable k
  assert_eq "$status" 1
  assert_eq "$stderr" "cronium: 404 execution_not_found: execution not found"
  run --separate-stderr cronium_get_variable k
  assert_eq "$status" 1
  assert_eq "$stderr" "cronium: 404 not_found: Not Found"
}

@test "a non-JSON error body still gives status and a code; a bad success body is an error" {
  fault_script '[{"status":502,"text":"<html>bad gateway</html>"},{"status":502,"text":"x"},{"status":502,"text":"x"},
                 {"status":200,"text":"not json"},
                 {"status":200,"json":{"success":false,"error":"Bad Request","message":"odd","code":"weird"}}]'
  run --separate-stderr cronium_input
  assert_eq "$status" 1
  assert_eq "$stderr" "cronium: 502 server_error: Bad Gateway (after 3 attempts)"
  run --separate-stderr cronium_input
  assert_eq "$status" 1
  assert_eq "$stderr" "cronium: 200 invalid_response: the runtime's answer is not the expected JSON envelope"
  run --separate-stderr cronium_input
  assert_eq "$status" 1
  assert_eq "$stderr" "cronium: 200 weird: odd"
}

@test "input and event print compact JSON; no input or event prints {}" {
  fault_script '[{"json":{"success":true,"data":{"name": "x", "list": [1, 2]}}},
                 {"json":{"success":true}},
                 {"json":{"success":true,"data":null}},
                 {"json":{"success":true,"data":"just text"}},
                 {"json":{"success":true,"data":{"executionId":"exec-1","event":{"name":"E"}}}},
                 {"json":{"success":true,"data":{"executionId":"exec-1","event":null}}}]'
  run --separate-stderr cronium_input
  assert_eq "$output" '{"name":"x","list":[1,2]}'
  run --separate-stderr cronium_input
  assert_eq "$status" 0
  assert_eq "$output" '{}'
  run --separate-stderr cronium_input
  assert_eq "$status" 0
  assert_eq "$output" '{}'
  run --separate-stderr cronium_input
  assert_eq "$output" 'just text'
  run --separate-stderr cronium_event
  assert_eq "$status" 0
  assert_eq "$output" '{"name":"E"}'
  run --separate-stderr cronium_event
  assert_eq "$status" 0
  assert_eq "$output" '{}'
  assert_eq "$(fault_log '[.[].path] | unique')" '["/executions/exec-1/context","/executions/exec-1/input"]'
}

@test "cronium_event_field walks a dotted path and treats the field as data, not jq code" {
  local ctx='{"success":true,"data":{"eventName":"Nightly","event":{"name":"Nightly","tags":["a","b"],"n":0,"off":false,"none":null,"deep":{"x":{"y":"z"}}},"user":null}}'
  local -a cases=(
    'eventName' 'Nightly'
    'event.name' 'Nightly'
    '.event.name' 'Nightly'
    'event.deep.x.y' 'z'
    'event.deep' '{"x":{"y":"z"}}'
    'event.tags.1' 'b'
    'event.n' '0'
    'event.off' 'false'
    'event.none' 'null'
    'event.missing' ''
    'user.name' ''
    'event.tags.5' ''
    'event) | env | (.' ''
    '$__loc__' ''
    'event.name"] | halt_error' ''
  )
  local tc script='['
  for (( tc = 0; tc < ${#cases[@]}; tc += 2 )); do
    script+="{\"json\":$ctx},"
  done
  fault_script "${script%,}]"
  for (( tc = 0; tc < ${#cases[@]}; tc += 2 )); do
    run --separate-stderr cronium_event_field "${cases[tc]}"
    assert_eq "$status" 0 "status for ${cases[tc]}"
    assert_eq "$output" "${cases[tc + 1]}" "field ${cases[tc]}"
    assert_eq "$stderr" ""
  done
}

@test "variable_exists: HEAD, status 0 if present, 1 if missing, 2 on an error" {
  fault_script '[{"status":200},{"status":404},{"status":401},{"status":500},{"status":500},{"status":500}]'
  run --separate-stderr cronium_variable_exists k
  assert_eq "$status" 0
  assert_eq "$output" ""
  run --separate-stderr cronium_variable_exists k
  assert_eq "$status" 1
  assert_eq "$stderr" ""
  run --separate-stderr cronium_variable_exists k
  assert_eq "$status" 2
  assert_eq "$stderr" "cronium: 401 unauthorized: Unauthorized"
  run --separate-stderr cronium_variable_exists k
  assert_eq "$status" 2
  assert_eq "$(fault_log '[.[].method] | unique')" '["HEAD"]'
}

@test "delete_variable uses DELETE; deleting a missing variable succeeds" {
  fault_script '[{"json":{"success":true}},
                 {"status":404,"json":{"success":false,"error":"Not Found","message":"variable not found","code":"variable_not_found"}},
                 {"status":501,"json":{"success":false,"error":"Not Implemented","message":"no delete","code":"not_supported"}}]'
  run --separate-stderr cronium_delete_variable k
  assert_eq "$status" 0
  run --separate-stderr cronium_delete_variable k
  assert_eq "$status" 0
  assert_eq "$stderr" ""
  run --separate-stderr cronium_delete_variable k
  assert_eq "$status" 1
  assert_eq "$stderr" "cronium: 501 not_supported: no delete"
  assert_eq "$(fault_log '[.[].method] | unique')" '["DELETE"]'
}

@test "increment_variable posts {by} and prints the new value" {
  fault_script '[{"json":{"success":true,"data":{"key":"n","value":1}}},
                 {"json":{"success":true,"data":{"key":"n","value":6}}},
                 {"json":{"success":true,"data":{"key":"n","value":3.5}}},
                 {"status":409,"json":{"success":false,"error":"Conflict","message":"value is not a number","code":"conflict"}}]'
  run --separate-stderr cronium_increment_variable n
  assert_eq "$output" 1
  run --separate-stderr cronium_increment_variable n 5
  assert_eq "$output" 6
  run --separate-stderr cronium_increment_variable n -2.5
  assert_eq "$output" 3.5
  run --separate-stderr cronium_increment_variable n
  assert_eq "$status" 1
  assert_eq "$stderr" "cronium: 409 conflict: value is not a number"
  run --separate-stderr cronium_increment_variable n 1e
  assert_eq "$status" 1
  assert_eq "$(fault_log '[.[].body]')" '["{\"by\":1}","{\"by\":5}","{\"by\":-2.5}","{\"by\":1}"]'
}

@test "set_condition accepts the boolean words; get_condition prints true, false or null" {
  local w
  for w in true YES on 1 false No off 0; do
    cronium_set_condition "$w"
  done
  assert_eq "$(fault_log '[.[].body | fromjson | .condition]')" '[true,true,true,true,false,false,false,false]'
  fault_reset
  fault_script '[{"json":{"success":true,"data":{"condition":true}}},{"json":{"success":true,"data":{"condition":false}}},{"json":{"success":true,"data":{"condition":null}}}]'
  assert_eq "$(cronium_get_condition)" true
  assert_eq "$(cronium_get_condition)" false
  assert_eq "$(cronium_get_condition)" null
}

@test "execute_tool_action posts {tool, action, params} and prints the result" {
  fault_script '[{"json":{"success":true,"data":{"success":true,"data":{"id":"m1"}}}},
                 {"json":{"success":true,"data":{"success":false,"error":"channel not found"}}}]'
  run --separate-stderr cronium_execute_tool_action slack send_message '{"channel": "#ops", "text": "hi"}'
  assert_eq "$status" 0
  assert_eq "$output" '{"success":true,"data":{"id":"m1"}}'
  run --separate-stderr cronium_execute_tool_action slack send_message '{"channel": "#nope"}'
  assert_eq "$status" 1
  assert_eq "$output" '{"success":false,"error":"channel not found"}'
  assert_eq "$stderr" "cronium: 200 tool_action_failed: channel not found"
  assert_json_eq "$(fault_log '.[0].body | fromjson')" '{"tool":"slack","action":"send_message","params":{"channel":"#ops","text":"hi"}}'
  assert_eq "$(fault_log '.[0].path')" '"/tool-actions/execute"'
}

@test "send_email, send_slack_message and send_discord_message build the reference's parameters" {
  cronium_send_email ' a@x.io, b@x.io ,' 'Report' $'line 1\nline 2' --cc 'c@x.io' --html >/dev/null
  cronium_send_email 'a@x.io' 'S' 'B' --bcc 'd@x.io,e@x.io' >/dev/null
  cronium_send_slack_message '#ops' 'deployed' --username bot --icon-emoji ':rocket:' >/dev/null
  cronium_send_discord_message 123 'hello' --embed '{"title":"T"}' --embed '{"title":"U"}' >/dev/null
  cronium_send_discord_message 123 'plain' >/dev/null
  assert_json_eq "$(fault_log '[.[].body | fromjson]')" '[
    {"tool":"email","action":"send_message","params":{"to":["a@x.io","b@x.io"],"subject":"Report","body":"line 1\nline 2","cc":["c@x.io"],"html":true}},
    {"tool":"email","action":"send_message","params":{"to":["a@x.io"],"subject":"S","body":"B","bcc":["d@x.io","e@x.io"]}},
    {"tool":"slack","action":"send_message","params":{"channel":"#ops","text":"deployed","username":"bot","icon_emoji":":rocket:"}},
    {"tool":"discord","action":"send_message","params":{"channelId":"123","content":"hello","embeds":[{"title":"T"},{"title":"U"}]}},
    {"tool":"discord","action":"send_message","params":{"channelId":"123","content":"plain"}}]'
  run --separate-stderr cronium_send_discord_message 1 x --embed '[1]'
  assert_eq "$status" 1
  run --separate-stderr cronium_send_email a@x.io subject-only
  assert_eq "$status" 1
  assert_eq "$(fault_count)" 5
}

@test "the camelCase names of the docs call the same endpoints" {
  fault_script '[{"json":{"success":true,"data":{"key":"k","value":"v"}}},{},{"json":{"success":true,"data":{"condition":true}}},{},{"json":{"success":true,"data":{"a":1}}},{}]'
  assert_eq "$(cronium_getVariable k)" v
  cronium_setVariable k 1
  assert_eq "$(cronium_getCondition)" true
  cronium_setCondition false
  assert_eq "$(cronium_getInput)" '{"a":1}'
  cronium_setOutput x
  assert_eq "$(fault_log '[.[] | .method + " " + .path]')" \
    '["GET /executions/exec-1/variables/k","PUT /executions/exec-1/variables/k","GET /executions/exec-1/condition","POST /executions/exec-1/condition","GET /executions/exec-1/input","POST /executions/exec-1/output"]'
}

@test "calls leave the caller's options, IFS and traps alone, and the ERR trap quiet" {
  fault_script '[{"status":503},{"json":{"success":true,"data":{"key":"k","value":"v"}}},
                 {"status":404,"json":{"success":false,"error":"Not Found","message":"variable not found","code":"variable_not_found"}}]'
  run --separate-stderr bash -c '
    set -eEuo pipefail
    IFS=,
    trap "echo ERR-TRAP" ERR
    source "$1"
    before="$-|$(set +o)|$(shopt -p)|$(trap -p)|$IFS"
    a=$(cronium_get_variable k)
    b=$(cronium_get_variable k)
    cronium_set_variable k v
    after="$-|$(set +o)|$(shopt -p)|$(trap -p)|$IFS"
    [[ $before == "$after" ]] && echo "same state"
    echo "a=$a b=$b"' _ "$CRONIUM_SH"
  assert_eq "$status" 0
  assert_eq "$output" $'same state\na=v b='
  assert_eq "$stderr" ""
}

# ---- append, dotted names, the original's entry points ---------------------------------------

@test "append_variable posts {value, separator} to .../append, prints nothing, reports a 409" {
  fault_script '[{"json":{"success":true,"data":{"key":"log","value":"a"}}},
                 {"json":{"success":true,"data":{"key":"log","value":"a, b"}}},
                 {"status":409,"json":{"success":false,"error":"Conflict","message":"value is not a string","code":"conflict"}}]'
  run --separate-stderr cronium_append_variable log a
  assert_eq "$status" 0
  assert_eq "$output" ""
  run --separate-stderr cronium_appendVariable log b ', '
  assert_eq "$status" 0
  assert_eq "$output" ""
  run --separate-stderr cronium.appendVariable n x
  assert_eq "$status" 1
  assert_eq "$stderr" "cronium: 409 conflict: value is not a string"
  assert_eq "$(fault_log '[.[] | "\(.method) \(.path) \(.body)"]')" \
    '["POST /executions/exec-1/variables/log/append {\"value\":\"a\",\"separator\":\"\"}","POST /executions/exec-1/variables/log/append {\"value\":\"b\",\"separator\":\", \"}","POST /executions/exec-1/variables/n/append {\"value\":\"x\",\"separator\":\"\"}"]'
  run --separate-stderr cronium_append_variable onlykey
  assert_eq "$status" 1
  assert_eq "$stderr" "cronium: 000 usage: usage: cronium_append_variable KEY TEXT [SEPARATOR]"
}

@test "an append is not repeated when the first try may have been applied, but is after a 503" {
  fault_script '[{"close":true},{"json":{"success":true,"data":{"key":"k","value":"x"}}}]'
  run --separate-stderr cronium_append_variable k x
  assert_eq "$status" 1
  assert_eq "$(fault_count)" 1
  fault_reset
  fault_script '[{"status":503},{"json":{"success":true,"data":{"key":"k","value":"x"}}}]'
  run --separate-stderr cronium_append_variable k x
  assert_eq "$status" 0
  assert_eq "$(fault_count)" 2
}

@test "the dotted names call the same endpoints; cronium.output and cronium.setVariable KEY read stdin" {
  fault_script '[{"json":{"success":true,"data":{"a":1}}},
                 {"json":{"success":true}},
                 {"json":{"success":true}},
                 {"json":{"success":true,"data":{"key":"k","value":"v"}}},
                 {"json":{"success":true}},
                 {"json":{"success":true}},
                 {"json":{"success":true,"data":{"event":{"name":"E"}}}},
                 {"json":{"success":true}},
                 {"json":{"success":true,"data":{"condition":true}}}]'
  assert_eq "$(cronium.input)" '{"a":1}'
  cronium.output '{"done":true}'
  printf '%s' '{"piped":1}' | cronium.output
  assert_eq "$(cronium.getVariable k)" v
  cronium.setVariable k 'text value'
  printf '%s' '[1,2]' | cronium.setVariable k
  assert_eq "$(cronium.event)" '{"name":"E"}'
  cronium.setCondition true
  assert_eq "$(cronium.getCondition)" true
  assert_eq "$(fault_log '[.[] | "\(.method) \(.path) \(.body)"]')" \
    '["GET /executions/exec-1/input ","POST /executions/exec-1/output {\"data\":{\"done\":true}}","POST /executions/exec-1/output {\"data\":{\"piped\":1}}","GET /executions/exec-1/variables/k ","PUT /executions/exec-1/variables/k {\"value\":\"text value\"}","PUT /executions/exec-1/variables/k {\"value\":[1,2]}","GET /executions/exec-1/context ","POST /executions/exec-1/condition {\"condition\":true}","GET /executions/exec-1/condition "]'
}
