#!/usr/bin/env bats
# Loading cronium.sh: inert, silent, never fatal, no settings needed, caller's shell untouched.

bats_require_minimum_version 1.5.0

setup() {
  load common
  unset CRONIUM_RUNTIME_API CRONIUM_API_ENDPOINT CRONIUM_EXECUTION_TOKEN CRONIUM_API_TOKEN \
        CRONIUM_EXECUTION_ID CRONIUM_MAX_RETRIES CRONIUM_DEBUG
}

# A script that snapshots the shell state, sources the helper, and reports every difference.
# Run as: bash -c "$STATE_CHECK" _ HELPER
STATE_CHECK='
set -euo pipefail
shopt -s extglob
IFS=":"
trap "echo exit-trap-ran" EXIT
trap "echo err-trap-ran" ERR
o1= o2= s1= s2= t1= t2= i1= i2= v1= v2= f1= f2= m1= m2= out= rc= x=
o1=$(set +o); s1=$(shopt -p); t1=$(trap -p); i1=$IFS; m1=$-
v1=$(compgen -v | LC_ALL=C sort); f1=$(compgen -A function | LC_ALL=C sort)
out=$(source "$1" 2>&1; echo "rc=$?")
source "$1"
rc=$?
o2=$(set +o); s2=$(shopt -p); t2=$(trap -p); i2=$IFS; m2=$-
v2=$(compgen -v | LC_ALL=C sort); f2=$(compgen -A function | LC_ALL=C sort)
[[ $out == "rc=0" ]] || echo "loading printed or failed: $out"
[[ $rc == 0 ]] || echo "source status $rc"
[[ $o1 == "$o2" ]] || echo "set -o changed"
[[ $s1 == "$s2" ]] || echo "shopt changed"
[[ $t1 == "$t2" ]] || echo "traps changed"
[[ $i1 == "$i2" ]] || echo "IFS changed"
[[ $m1 == "$m2" ]] || echo "\$- changed: $m1 -> $m2"
IFS=":"
for x in $(LC_ALL=C comm -13 <(echo "$v1") <(echo "$v2") | tr "\n" ":"); do
  [[ $x == @(CRONIUM_*|_cronium_*|BASH_REMATCH|_) ]] || echo "new variable $x"
done
for x in $(LC_ALL=C comm -13 <(echo "$f1") <(echo "$f2") | tr "\n" ":"); do
  [[ $x == @(cronium_*|_cronium_*|cronium.*) ]] || echo "new function $x"
done
echo "functions: $(LC_ALL=C comm -13 <(echo "$f1") <(echo "$f2") | grep -c .)"
trap - EXIT
echo done
'

@test "sourcing under set -euo pipefail prints nothing and leaves options, IFS, traps and names alone" {
  run --separate-stderr bash -c "$STATE_CHECK" _ "$CRONIUM_SH"
  [[ $status -eq 0 ]] || { echo "status $status: $output $stderr"; false; }
  assert_eq "$stderr" ""
  # Only the function count and the final marker: no difference was reported.
  [[ ${lines[0]} =~ ^functions:\ ([0-9]+)$ ]] || { echo "$output"; false; }
  (( BASH_REMATCH[1] >= 30 ))
  assert_eq "${lines[1]}" "done"
  assert_eq "${#lines[@]}" 2
}

@test "loading through BASH_ENV with no settings: silent, status 0, the script runs" {
  run --separate-stderr env -i PATH="$PATH" BASH_ENV="$CRONIUM_SH" bash -c 'echo ran; type -t cronium_get_variable'
  assert_eq "$status" 0
  assert_eq "$output" $'ran\nfunction'
  assert_eq "$stderr" ""
}

@test "BASH_ENV under set -euo pipefail: loading is fine, the first call reports the missing token" {
  run --separate-stderr env -i PATH="$PATH" BASH_ENV="$CRONIUM_SH" bash -c '
    set -euo pipefail
    echo before
    if v=$(cronium_get_variable x); then echo "unexpected success"; else echo "call failed $?"; fi
    cronium_input
    echo "not reached"'
  assert_eq "$status" 1
  assert_eq "$output" $'before\ncall failed 1'
  assert_eq "$stderr" $'cronium: 000 missing_setting: CRONIUM_EXECUTION_TOKEN (or CRONIUM_API_TOKEN) is not set\ncronium: 000 missing_setting: CRONIUM_EXECUTION_TOKEN (or CRONIUM_API_TOKEN) is not set'
}

@test "a missing execution id is reported by the call, naming the setting" {
  run --separate-stderr env -i PATH="$PATH" CRONIUM_EXECUTION_TOKEN=t BASH_ENV="$CRONIUM_SH" \
      bash -c 'cronium_get_condition'
  assert_eq "$status" 1
  assert_eq "$output" ""
  assert_eq "$stderr" "cronium: 000 missing_setting: CRONIUM_EXECUTION_ID is not set"
}

@test "a bad numeric setting is reported by the call, naming it" {
  run --separate-stderr env -i PATH="$PATH" CRONIUM_EXECUTION_TOKEN=t CRONIUM_EXECUTION_ID=e \
      CRONIUM_MAX_RETRIES=lots BASH_ENV="$CRONIUM_SH" bash -c 'cronium_input'
  assert_eq "$status" 1
  assert_eq "$stderr" "cronium: 000 invalid_setting: CRONIUM_MAX_RETRIES must be a whole number from 1 to 1000, got 'lots'"
}

@test "a runtime URL that is not http(s) is reported by the call" {
  run --separate-stderr env -i PATH="$PATH" CRONIUM_EXECUTION_TOKEN=t CRONIUM_EXECUTION_ID=e \
      CRONIUM_RUNTIME_API=ftp://x BASH_ENV="$CRONIUM_SH" bash -c 'cronium_input'
  assert_eq "$status" 1
  assert_contains "$stderr" "cronium: 000 invalid_setting: CRONIUM_RUNTIME_API"
}

@test "a token with a newline is refused without being printed" {
  run --separate-stderr env -i PATH="$PATH" CRONIUM_EXECUTION_TOKEN=$'abc\nX-Evil: 1' \
      CRONIUM_EXECUTION_ID=e BASH_ENV="$CRONIUM_SH" bash -c 'cronium_input'
  assert_eq "$status" 1
  assert_contains "$stderr" "cronium: 000 invalid_setting:"
  assert_not_contains "$stderr" "X-Evil"
}

@test "missing curl is reported by the call, not at load" {
  local bin=$BATS_TEST_TMPDIR/bin
  mkdir -p "$bin"
  ln -s "$(command -v jq)" "$bin/jq"
  run --separate-stderr env -i PATH="$bin" CRONIUM_EXECUTION_TOKEN=t CRONIUM_EXECUTION_ID=e \
      BASH_ENV="$CRONIUM_SH" "$BASH" -c 'echo loaded; cronium_input'
  assert_eq "$status" 1
  assert_eq "$output" "loaded"
  assert_eq "$stderr" "cronium: 000 missing_dependency: curl is required but was not found in PATH"
}

@test "argument errors are reported without settings or a network" {
  source "$CRONIUM_SH"
  run --separate-stderr cronium_set_condition maybe
  assert_eq "$status" 1
  assert_eq "$stderr" "cronium: 000 usage: invalid condition 'maybe': use true/false, 1/0, yes/no or on/off"
  run --separate-stderr cronium_get_variable
  assert_eq "$status" 1
  assert_eq "$stderr" "cronium: 000 usage: usage: cronium_get_variable KEY"
  run --separate-stderr cronium_increment_variable k abc
  assert_eq "$status" 1
  assert_eq "$stderr" "cronium: 000 usage: the increment must be a number, got 'abc'"
  run --separate-stderr cronium_variable_exists
  assert_eq "$status" 2
  run --separate-stderr cronium_execute_tool_action slack send_message '{not json'
  assert_eq "$status" 1
  assert_eq "$stderr" "cronium: 000 invalid_json: the tool action parameters must be a JSON object"
}

@test "sourcing twice is harmless and cronium_version and cronium_info work without settings" {
  run --separate-stderr bash -c 'set -eu; source "$1"; source "$1"; cronium_version; cronium_info' _ "$CRONIUM_SH"
  assert_eq "$status" 0
  assert_eq "$stderr" ""
  [[ ${lines[0]} =~ ^[0-9]+\.[0-9]+\.[0-9]+$ ]]
  assert_eq "${lines[1]}" "Cronium Bash SDK v${lines[0]}"
  assert_eq "${lines[2]}" "API URL: http://localhost:8081"
  assert_eq "${lines[4]}" "Token: unset"
}

@test "loading sets CRONIUM_API, CRONIUM_TOKEN and CRONIUM_EXEC_ID as the original did, not exported" {
  run --separate-stderr env -i PATH="$PATH" BASH_ENV="$CRONIUM_SH" CRONIUM_RUNTIME_API=http://rt:8081 \
      CRONIUM_EXECUTION_TOKEN=tok CRONIUM_EXECUTION_ID=e-1 bash -c \
      'set -u; echo "$CRONIUM_API|$CRONIUM_TOKEN|$CRONIUM_EXEC_ID"; env | grep -c "^CRONIUM_\(API\|TOKEN\|EXEC_ID\)=" || true'
  assert_eq "$status" 0
  assert_eq "$output" $'http://rt:8081|tok|e-1\n0'
  run --separate-stderr env -i PATH="$PATH" BASH_ENV="$CRONIUM_SH" bash -c \
      'set -u; echo "$CRONIUM_API|$CRONIUM_TOKEN|$CRONIUM_EXEC_ID"'
  assert_eq "$output" 'http://localhost:8081||'
  assert_eq "$stderr" ""
}

@test "bash -c through BASH_ENV has the dotted and camelCase names; a POSIX-mode bash loads without them" {
  run --separate-stderr env -i PATH="$PATH" BASH_ENV="$CRONIUM_SH" bash -c \
      'for f in cronium.input cronium.output cronium.event cronium.getVariable cronium.setVariable \
                cronium.setCondition cronium.getCondition cronium.appendVariable cronium.info \
                cronium_getVariable cronium_setVariable cronium_setCondition cronium_getCondition \
                cronium_appendVariable cronium_append_variable cronium_info; do
         printf "%s " "$(type -t "$f")"; done'
  assert_eq "$status" 0
  assert_eq "$output" "$(printf 'function %.0s' {1..16})"
  run --separate-stderr bash --posix -c 'source "$1"; echo "rc=$?"; type -t cronium_input; type -t cronium.input || echo none' _ "$CRONIUM_SH"
  assert_eq "$status" 0
  assert_eq "$stderr" ""
  assert_eq "$output" $'rc=0\nfunction\nnone'
  run --separate-stderr sh -c '. "$1"; echo "rc=$?"' _ "$CRONIUM_SH"
  assert_eq "$output" "rc=0"
  assert_eq "$stderr" ""
}
