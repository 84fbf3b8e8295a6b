#!/usr/bin/env bash
# The shared helper scenario, bash version (see test_scenario.py).
#
# Runs the ten operations of the scenario through the cronium_* functions, loaded the way a
# job loads them: through BASH_ENV (the test sets BASH_ENV=helpers/bash/cronium.sh; this
# file has no `source` line). Prints one canonical line per operation:
#
#     op=<name> result=<compact JSON, keys sorted, non-ASCII kept as is>
#
# scenario.py and scenario.mjs do the same operations and must print the same bytes.
#
# The bash helper prints values instead of returning them: strings raw, everything else as
# compact JSON, and nothing at all for "missing" (no input, missing variable, missing field).
# The functions below turn that printed form back into JSON, and only that: where the other
# helpers return a boolean for a yes/no question, bash answers with its exit status.
set -euo pipefail

if ! declare -F cronium_get_variable >/dev/null; then
  echo "scenario.sh: the cronium helper is not loaded (set BASH_ENV to helpers/bash/cronium.sh)" >&2
  exit 3
fi

# The value stored in operation 3: nested, with unicode and every falsy JSON value.
PROFILE='{
  "name": "Zoë Ünïcødé 日本語 😀",
  "quote": "say \"hi\" \\ bye",
  "lines": "one\ntwo\tthree",
  "zero": 0,
  "false": false,
  "empty": "",
  "nothing": null,
  "emptyList": [],
  "emptyObject": {},
  "negative": -7,
  "big": 9007199254740991,
  "nested": {
    "list": [0, false, "", null, {"deep": [1, 2.5, -3]}],
    "ключ": "значение"
  }
}'

TOOL_PARAMS='{"channel": "#ops", "text": "Zoë: report ✓", "silent": false, "count": 0}'

# capture VAR COMMAND...: runs COMMAND and stores its exact stdout in VAR (trailing newlines
# kept, so "printed nothing" and "printed an empty line" stay different). Fails as COMMAND does.
capture() {
  local __name=$1 __out
  shift
  __out=$("$@"; __rc=$?; printf x; exit "$__rc") || return
  printf -v "$__name" '%s' "${__out%x}"
}

# json_of PRINTED: JSON text for a value the helper printed as JSON (objects, arrays, numbers,
# booleans, null). Printed nothing (missing) -> null. Anything that is not JSON fails.
json_of() {
  if [[ -z $1 ]]; then
    printf 'null'
  else
    printf '%s' "$1" | jq -cS .
  fi
}

# string_of PRINTED: JSON text for a value the helper printed as a raw string (one string and a
# newline). Printed nothing (missing) -> null.
string_of() {
  if [[ -z $1 ]]; then
    printf 'null'
  else
    jq -cn --arg s "${1%$'\n'}" '$s'
  fi
}

# exists_json KEY: the exit status of cronium_variable_exists as JSON (0 true, 1 false); an
# error (status 2) ends the script.
exists_json() {
  local rc=0
  cronium_variable_exists "$1" || rc=$?
  case $rc in
    0) printf 'true' ;;
    1) printf 'false' ;;
    *) echo "scenario.sh: cronium_variable_exists $1 failed with status $rc" >&2; exit 1 ;;
  esac
}

# emit OP JSON: the canonical line (keys sorted); JSON that does not parse ends the script.
emit() {
  local canon
  if ! canon=$(printf '%s' "$2" | jq -cS .) || [[ -z $canon ]]; then
    echo "scenario.sh: op $1: result is not JSON: $2" >&2
    exit 1
  fi
  printf 'op=%s result=%s\n' "$1" "$canon"
}

# Set by capture below.
out='' ctx='' name='' s1='' s2='' s3='' before='' after_true='' after_false=''

# 1. the execution's input
capture out cronium_input
emit input "$(json_of "$out")"

# 2. the event, and its name from the context
capture ctx cronium_context
capture name cronium_event_field eventName
emit event "$(jq -cn --argjson ctx "$ctx" --argjson name "$(string_of "$name")" \
  '{event: $ctx.event, eventName: $name}')"

# 3. set a variable to the nested value (prints nothing)
capture out cronium_set_variable profile "$PROFILE" --json
if [[ -z $out ]]; then emit set_variable null; else emit set_variable "$(string_of "$out")"; fi

# 4. read it back
capture out cronium_get_variable profile
emit get_variable "$(json_of "$out")"

# 5. existence of a present and a missing variable
emit variable_exists "{\"present\": $(exists_json profile), \"missing\": $(exists_json never-set)}"

# 6. a counter, incremented by 1, by 2 and by 0.5 (it starts missing: counts from 0)
capture s1 cronium_increment_variable counter
capture s2 cronium_increment_variable counter 2
capture s3 cronium_increment_variable counter 0.5
emit increment_variable "[$(json_of "$s1"), $(json_of "$s2"), $(json_of "$s3")]"

# 7. delete the variable, then read it as missing. cronium_delete_variable answers with its
#    status only (0 also when there was nothing to delete): deleted = status 0.
deleted=false
cronium_delete_variable profile && deleted=true
capture out cronium_get_variable profile
emit delete_variable "{\"deleted\": $deleted, \"exists\": $(exists_json profile), \"value\": $(json_of "$out")}"

# 8. the condition: unset, then true, then false
capture before cronium_get_condition
cronium_set_condition true
capture after_true cronium_get_condition
cronium_set_condition false
capture after_false cronium_get_condition
emit condition "{\"before\": $(json_of "$before"), \"afterTrue\": $(json_of "$after_true"), \"afterFalse\": $(json_of "$after_false")}"

# 9. the output (built from the counter's value), read back
cronium_output "$(jq -cn --argjson c "$(json_of "$s3")" \
  '{counter: $c, ok: true, warnings: [], note: "fini 🎉", zero: 0}')" --json
capture out cronium_get_output
emit output "$(json_of "$out")"

# 10. a tool action (dev mode echoes it)
capture out cronium_execute_tool_action slack send_message "$TOOL_PARAMS"
emit tool_action "$(json_of "$out")"
