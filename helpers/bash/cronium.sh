# shellcheck shell=bash
# cronium.sh: the Cronium runtime helper SDK for bash job scripts.
#
# A job script sources this file (directly, or through BASH_ENV so that every bash of the job has
# it) and calls cronium_* functions that talk to the cronium-runtime HTTP API (see docs/api.md §4, §9).
#
# Loading is inert on purpose: the file defines functions named cronium_* (public), _cronium_*
# (internal) and, outside POSIX mode, the dotted names cronium.* of the public docs and the SSH
# runner (bash accepts a dot in a function name only when not in POSIX mode). It also sets the
# three shell variables the original helper set (CRONIUM_API, CRONIUM_TOKEN, CRONIUM_EXEC_ID, not
# exported). It runs no other command, prints nothing, never fails and touches no shell option,
# so it is safe in every shell of a job, under `set -euo pipefail`, and without settings.
# Settings are read, and missing ones reported, by each call.
#
# Every public function runs in a subshell ( ... ): it can set its own shell options, IFS, locale
# and traps without touching the caller's, and nothing it assigns leaks into the caller.
# Requirements: bash >= 4, curl, jq >= 1.6.

# Another shell (sh, zsh) that sources this file stops here, before any bash syntax.
# shellcheck disable=SC2317
if [ -z "${BASH_VERSION:-}" ]; then return 0 2>/dev/null || exit 0; fi

# ---------------------------------------------------------------------------------------------
# Internal helpers. They run inside the subshell of a public function, after _cronium_shell (and
# most after _cronium_init), and may set _cronium_* variables there.
# ---------------------------------------------------------------------------------------------

# Resets the shell state inside a public function's subshell. The caller's options must not change
# how the helper behaves: -e/-u/-C/-a/-k and pipefail are switched off (every status is checked by
# hand), the ERR/DEBUG/RETURN traps are dropped, IFS is the default, and string operations work
# on bytes.
function _cronium_shell() {
  set +e +u +a +k +C +f +E +T +o pipefail +o posix
  trap - ERR DEBUG RETURN
  shopt -u nocasematch nocaseglob failglob nullglob 2>/dev/null
  IFS=$' \t\n'
  LC_ALL=C
  return 0
}

# _cronium_fail STATUS CODE MESSAGE: the one error line, on stderr. STATUS is the HTTP status,
# or 000 when no HTTP response was received (bad arguments, missing settings, network errors).
function _cronium_fail() {
  printf 'cronium: %s %s: %s\n' "$1" "$2" "$3" >&2
  return 1
}

function _cronium_debug() {
  [[ $_cronium_debug == 1 ]] || return 0
  printf 'cronium: debug: %s\n' "$*" >&2
  return 0
}

# _cronium_ms NAME VALUE: parses a duration in seconds ("2", "0.25") into milliseconds, stored in
# the variable named NAME. Fails (status 1) on anything else.
function _cronium_ms() {
  local v=$2 int frac
  [[ $v =~ ^[0-9]+(\.[0-9]*)?$ ]] || return 1
  int=${v%%.*}
  frac=
  [[ $v == *.* ]] && frac=${v#*.}
  frac=${frac}000
  frac=${frac:0:3}
  printf -v "$1" '%d' "$(( 10#$int * 1000 + 10#$frac ))"
}

# _cronium_setting NAME DEFAULT KIND: reads the environment variable NAME (default DEFAULT) into
# _cronium_val. KIND "int" takes an integer >= 1, "sec" a duration in seconds (stored in ms).
function _cronium_setting() {
  local name=$1 def=$2 kind=$3 raw
  raw=${!name-}
  [[ -n $raw ]] || raw=$def
  if [[ $kind == int ]]; then
    if [[ $raw =~ ^[0-9]+$ ]] && (( 10#$raw >= 1 && 10#$raw <= 1000 )); then
      _cronium_val=$(( 10#$raw ))
      return 0
    fi
    _cronium_fail 000 invalid_setting "$name must be a whole number from 1 to 1000, got '$raw'"
    return 1
  fi
  if _cronium_ms _cronium_val "$raw"; then
    return 0
  fi
  _cronium_fail 000 invalid_setting "$name must be a number of seconds (like 2 or 0.5), got '$raw'"
}

# Reads and checks the settings and the tools; every public function that talks to the runtime
# calls it first. Sets the _cronium_* globals of the subshell.
function _cronium_init() {
  if (( ${BASH_VERSINFO[0]:-0} < 4 )); then
    _cronium_fail 000 missing_dependency "bash 4 or newer is required (this is bash ${BASH_VERSION:-unknown})"
    return 1
  fi
  if ! command -v curl >/dev/null 2>&1; then
    _cronium_fail 000 missing_dependency "curl is required but was not found in PATH"
    return 1
  fi
  if ! command -v jq >/dev/null 2>&1; then
    _cronium_fail 000 missing_dependency "jq is required but was not found in PATH"
    return 1
  fi

  _cronium_base=${CRONIUM_RUNTIME_API:-${CRONIUM_API_ENDPOINT:-http://localhost:8081}}
  while [[ $_cronium_base == */ ]]; do
    _cronium_base=${_cronium_base%/}
  done
  if [[ ! $_cronium_base =~ ^[Hh][Tt][Tt][Pp][Ss]?://[^[:space:][:cntrl:]\"]+$ ]]; then
    _cronium_fail 000 invalid_setting "CRONIUM_RUNTIME_API must be an http:// or https:// URL, got '$_cronium_base'"
    return 1
  fi

  _cronium_token=${CRONIUM_EXECUTION_TOKEN:-${CRONIUM_API_TOKEN:-}}
  if [[ -z $_cronium_token ]]; then
    _cronium_fail 000 missing_setting "CRONIUM_EXECUTION_TOKEN (or CRONIUM_API_TOKEN) is not set"
    return 1
  fi
  if [[ $_cronium_token =~ [[:space:][:cntrl:]] ]]; then
    # Never print the token itself.
    _cronium_fail 000 invalid_setting "CRONIUM_EXECUTION_TOKEN contains whitespace or control characters"
    return 1
  fi

  if [[ -z ${CRONIUM_EXECUTION_ID:-} ]]; then
    _cronium_fail 000 missing_setting "CRONIUM_EXECUTION_ID is not set"
    return 1
  fi
  _cronium_uri _cronium_exec_path "$CRONIUM_EXECUTION_ID" || return 1
  _cronium_exec_path=/executions/$_cronium_exec_path

  # Total attempts: CRONIUM_MAX_ATTEMPTS as in the Python and Node helpers, or
  # CRONIUM_MAX_RETRIES, the old helper's name for the same number.
  if [[ -n ${CRONIUM_MAX_ATTEMPTS:-} ]]; then
    _cronium_setting CRONIUM_MAX_ATTEMPTS 3 int || return 1
  else
    _cronium_setting CRONIUM_MAX_RETRIES 3 int || return 1
  fi
  _cronium_attempts=$_cronium_val
  _cronium_setting CRONIUM_TIMEOUT 30 sec || return 1
  _cronium_timeout_ms=$_cronium_val
  _cronium_setting CRONIUM_CONNECT_TIMEOUT 10 sec || return 1
  _cronium_connect_timeout_ms=$_cronium_val
  _cronium_setting CRONIUM_RETRY_DELAY 0.5 sec || return 1
  _cronium_retry_delay_ms=$_cronium_val
  _cronium_setting CRONIUM_RETRY_MAX_DELAY 8 sec || return 1
  _cronium_retry_max_ms=$_cronium_val
  _cronium_setting CRONIUM_MAX_RETRY_AFTER 60 sec || return 1
  _cronium_retry_after_max_ms=$_cronium_val
  if (( _cronium_timeout_ms == 0 || _cronium_connect_timeout_ms == 0 )); then
    _cronium_fail 000 invalid_setting "CRONIUM_TIMEOUT and CRONIUM_CONNECT_TIMEOUT must be above 0"
    return 1
  fi

  case ${CRONIUM_DEBUG:-} in
    1|[Tt][Rr][Uu][Ee]|[Yy][Ee][Ss]|[Oo][Nn]) _cronium_debug=1 ;;
    *) _cronium_debug=0 ;;
  esac

  _cronium_sdk_version=3.0.0 # also in cronium_version
  # Per call, shared by its retries; the runtime echoes it and logs it.
  printf -v _cronium_request_id 'cronium-sh-%04x%04x%04x' "$RANDOM" "$RANDOM" "$(( BASHPID & 0xffff ))"
  return 0
}

# _cronium_uri NAME TEXT: percent-encodes TEXT for one path segment (jq's @uri: "/" becomes %2F,
# UTF-8 bytes are escaped) into the variable NAME. "." and ".." are escaped as well, so that no
# one on the way treats them as dot-segments.
function _cronium_uri() {
  local enc
  if [[ $2 =~ ^[A-Za-z0-9_~-][A-Za-z0-9._~-]*$ ]] && [[ $2 != . && $2 != .. ]]; then
    enc=$2
  else
    enc=$(printf '%s' "$2" | command jq -Rrs '@uri' 2>/dev/null)
    if [[ $? -ne 0 || -z $enc ]]; then
      _cronium_fail 000 internal "could not percent-encode a path segment"
      return 1
    fi
    [[ $enc == . ]] && enc=%2E
    [[ $enc == .. ]] && enc=%2E%2E
  fi
  printf -v "$1" '%s' "$enc"
}

# _cronium_quote NAME TEXT: TEXT as a double-quoted curl config value (backslash and quote
# escaped), into the variable NAME.
function _cronium_quote() {
  local s=$2
  s=${s//\\/\\\\}
  s=${s//\"/\\\"}
  printf -v "$1" '"%s"' "$s"
}

# _cronium_header NAME: the value of response header NAME (lower case) from _cronium_headers.
function _cronium_header() {
  local lh=$'\n'${_cronium_headers,,} v
  [[ $lh == *$'\n'"$1":* ]] || return 1
  v=${lh#*$'\n'"$1":}
  v=${v%%$'\n'*}
  v=${v%$'\r'}
  if [[ $v =~ ^[[:space:]]*(.*[^[:space:]])[[:space:]]*$ ]]; then
    v=${BASH_REMATCH[1]}
  else
    v=
  fi
  printf '%s' "$v"
}

# _cronium_sleep_ms MS
function _cronium_sleep_ms() {
  local s
  printf -v s '%d.%03d' "$(( $1 / 1000 ))" "$(( $1 % 1000 ))"
  command sleep "$s"
}

# How long to wait before attempt N+1 (N = $1): Retry-After when the server sent one (seconds or
# an HTTP date, capped by CRONIUM_MAX_RETRY_AFTER), else exponential backoff from
# CRONIUM_RETRY_DELAY, capped by CRONIUM_RETRY_MAX_DELAY, with jitter (between half and all of it).
# Result in _cronium_wait_ms.
function _cronium_delay() {
  local n=$1 ra ms when now
  if ra=$(_cronium_header retry-after) && [[ -n $ra ]]; then
    ms=
    if [[ $ra =~ ^[0-9]+$ ]]; then
      ms=$(( 10#$ra * 1000 ))
    elif when=$(command date -d "$ra" +%s 2>/dev/null) && [[ $when =~ ^[0-9]+$ ]]; then
      now=$(command date +%s)
      ms=$(( (when - now) * 1000 ))
      (( ms < 0 )) && ms=0
    fi
    if [[ -n $ms ]]; then
      (( ms > _cronium_retry_after_max_ms )) && ms=$_cronium_retry_after_max_ms
      _cronium_wait_ms=$ms
      return 0
    fi
  fi
  ms=$_cronium_retry_delay_ms
  while (( n > 1 && ms < _cronium_retry_max_ms )); do
    ms=$(( ms * 2 ))
    n=$(( n - 1 ))
  done
  (( ms > _cronium_retry_max_ms )) && ms=$_cronium_retry_max_ms
  _cronium_wait_ms=$(( ms / 2 + ( (RANDOM << 15 | RANDOM) ^ BASHPID ) % (ms / 2 + 1) ))
}

# What a curl exit status means, and whether a retry is allowed: 6/7 (no connection was made) are
# always retryable; the others may come after the server got the request, so they are retried only
# for idempotent requests.
function _cronium_curl_error() {
  case $1 in
    5) _cronium_cerr='could not resolve the proxy' ;;
    6) _cronium_cerr='could not resolve the host' ;;
    7) _cronium_cerr='could not connect (connection refused or unreachable)' ;;
    16) _cronium_cerr='HTTP/2 error' ;;
    18) _cronium_cerr='the response was cut short' ;;
    28) _cronium_cerr='timed out' ;;
    35) _cronium_cerr='TLS handshake failed' ;;
    52) _cronium_cerr='the server closed the connection without a response' ;;
    55) _cronium_cerr='failed to send the request' ;;
    56) _cronium_cerr='failed to receive the response (connection reset)' ;;
    60) _cronium_cerr='the server certificate was not accepted' ;;
    92) _cronium_cerr='HTTP/2 stream error' ;;
    *) _cronium_cerr="curl failed" ;;
  esac
  case $1 in
    6|7) return 0 ;;
    5|16|18|28|35|52|55|56|92) [[ $_cronium_idempotent == 1 ]] ;;
    *) return 1 ;;
  esac
}

# _cronium_backend_error: status 0 when the response body is the runtime's error envelope with code
# backend_error (a 502 that is final, never retried).
function _cronium_backend_error() {
  [[ $_cronium_body == *backend_error* ]] || return 1
  printf '%s' "$_cronium_body" | command jq -e 'type == "object" and .code == "backend_error"' >/dev/null 2>&1
}

# _cronium_request METHOD PATH [BODY]
#   Sends one API request (PATH relative to the execution or to the API root), with retries.
#   Globals read: _cronium_idempotent (0 for increment and tool actions: see _cronium_curl_error).
#   Globals set: _cronium_status (HTTP status), _cronium_headers, _cronium_body.
#   Returns 0 on 2xx, 4 on a 404 (message not printed: the caller decides), 1 after printing the
#   error line for anything else.
# The token reaches curl in a config file read from a pipe (never on its command line, where ps
# shows it, and never on disk); the body comes through stdin, so its size is not bounded by the
# argument limit.
function _cronium_request() {
  local method=$1 path=$2 url cfg q raw rc trailer time_s ms attempt=1 code retry shown
  url=$_cronium_base$path
  shown=/${url#*://*/}
  [[ $url == *://*/* ]] || shown=/
  _cronium_quote q "$url"
  cfg="silent"$'\n'"globoff"$'\n'"path-as-is"$'\n'"url = $q"$'\n'
  printf -v q 'max-time = %d.%03d\nconnect-timeout = %d.%03d\n' \
    "$(( _cronium_timeout_ms / 1000 ))" "$(( _cronium_timeout_ms % 1000 ))" \
    "$(( _cronium_connect_timeout_ms / 1000 ))" "$(( _cronium_connect_timeout_ms % 1000 ))"
  cfg+=$q
  cfg+="user-agent = \"cronium-bash/$_cronium_sdk_version\""$'\n'
  cfg+="header = \"Accept: application/json\""$'\n'
  cfg+="header = \"Expect:\""$'\n'
  _cronium_quote q "X-Request-Id: $_cronium_request_id"
  cfg+="header = $q"$'\n'
  _cronium_quote q "Authorization: Bearer $_cronium_token"
  cfg+="header = $q"$'\n'
  cfg+="write-out = \"\\n%{http_code} %{time_total}\""$'\n'
  if [[ $method == HEAD ]]; then
    cfg+="head"$'\n'
  else
    cfg+="request = $method"$'\n'"dump-header = \"-\""$'\n'
  fi
  if (( $# >= 3 )); then
    cfg+="header = \"Content-Type: application/json\""$'\n'"data-binary = \"@-\""$'\n'
  fi

  while :; do
    # The config (with the token) goes through fd 3 and the body through stdin: curl caps config
    # lines at 100 KB, and neither may appear in argv. $? after the pipelines is curl's status.
    raw=$(printf '%s' "$cfg" | { printf '%s' "${3-}" | command curl -q -K /dev/fd/3 2>/dev/null; } 3<&0
          printf '\n%s' "$?")
    rc=${raw##*$'\n'}
    raw=${raw%$'\n'*}
    _cronium_status=000
    _cronium_headers=
    _cronium_body=
    time_s=
    trailer=${raw##*$'\n'}
    if [[ $trailer =~ ^([0-9]{3})\ ([0-9.,]+)$ ]]; then
      time_s=${BASH_REMATCH[2]}
      raw=${raw%$'\n'*}
      if [[ $rc == 0 ]]; then
        _cronium_status=${BASH_REMATCH[1]}
        if [[ $raw == *$'\r\n\r\n'* ]]; then
          _cronium_headers=${raw%%$'\r\n\r\n'*}
          _cronium_body=${raw#*$'\r\n\r\n'}
        else
          _cronium_headers=$raw
        fi
      fi
    fi
    ms='?'
    if [[ ${time_s/,/.} =~ ^([0-9]+)(\.([0-9]*))?$ ]]; then
      q=${BASH_REMATCH[3]}000000
      q=$(( 10#${BASH_REMATCH[1]} * 1000000 + 10#${q:0:6} ))
      printf -v ms '%d.%d' "$(( q / 1000 ))" "$(( q % 1000 / 100 ))"
    fi

    retry=0
    if [[ $rc != 0 ]]; then
      _cronium_curl_error "$rc" && retry=1
      _cronium_debug "$method $shown -> curl exit $rc ($_cronium_cerr) in $ms ms, attempt $attempt/$_cronium_attempts"
    else
      _cronium_debug "$method $shown -> $_cronium_status in $ms ms, attempt $attempt/$_cronium_attempts, request id $_cronium_request_id"
      case $_cronium_status in
        2??) return 0 ;;
        404) return 4 ;;
        429|503) retry=1 ;;
        501) ;; # not_supported: permanent
        # The runtime's own 502 backend_error: the backend answered something definite and wrong,
        # and asking again gets the same answer (docs/api.md §3). A 502 without that code (a proxy in
        # front of the runtime) is retried like any 5xx.
        502) [[ $_cronium_idempotent == 1 ]] && ! _cronium_backend_error && retry=1 ;;
        5??) [[ $_cronium_idempotent == 1 ]] && retry=1 ;;
      esac
    fi

    if (( retry == 1 && attempt < _cronium_attempts )); then
      _cronium_delay "$attempt"
      _cronium_debug "retrying in $_cronium_wait_ms ms"
      _cronium_sleep_ms "$_cronium_wait_ms"
      attempt=$(( attempt + 1 ))
      continue
    fi
    break
  done

  local after=
  (( attempt > 1 )) && after=" (after $attempt attempts)"
  if [[ $rc != 0 ]]; then
    code=network_error
    [[ $rc == 28 ]] && code=timeout
    _cronium_fail 000 "$code" "$method $url: $_cronium_cerr (curl exit $rc)$after"
    return 1
  fi
  _cronium_http_error "$after"
  return 1
}

# _cronium_call MODE METHOD PATH [BODY]: the one request step of every public function (after
# _cronium_init): sends the request (PATH relative to the API root), retries as MODE allows, and
# reports a failure. MODE:
#   read    idempotent (retried after timeouts and 5xx); a 404 is an error
#   once    not idempotent (increment, tool actions: see _cronium_curl_error); a 404 is an error
#   lookup  idempotent; a 404 with code variable_not_found is status 4, with nothing printed
#   probe   idempotent; any 404 is status 4, with nothing printed (a HEAD answer has no code)
# Status 0 on success, 4 as above, 1 after printing the error line.
function _cronium_call() {
  local mode=$1
  shift
  _cronium_idempotent=1
  [[ $mode == once ]] && _cronium_idempotent=0
  _cronium_request "$@"
  case $? in
    0) return 0 ;;
    4) [[ $mode == probe ]] && return 4
       if [[ $mode == lookup && $(printf '%s' "$_cronium_body" | command jq -r '.code // empty' 2>/dev/null) == variable_not_found ]]; then
         return 4
       fi
       _cronium_http_error ""
       return 1 ;;
  esac
  return 1
}

# Prints the error line for the response in _cronium_status/_cronium_body (the API's error
# envelope, §3; something sensible for anything else). $1 is appended to the message.
function _cronium_http_error() {
  local parsed code msg reason
  parsed=$(printf '%s' "$_cronium_body" | command jq -r '
      if type == "object" then
        [(.code // "" | tostring), (.message // .error // "" | tostring)]
        | map(gsub("[\\r\\n\\t]+"; " ")) | join("\t")
      else empty end' 2>/dev/null)
  code=${parsed%%$'\t'*}
  msg=
  [[ $parsed == *$'\t'* ]] && msg=${parsed#*$'\t'}
  if [[ -z $code ]]; then
    case $_cronium_status in
      400) code=bad_request ;;
      401) code=unauthorized ;;
      403) code=forbidden ;;
      404) code=not_found ;;
      405) code=method_not_allowed ;;
      409) code=conflict ;;
      413) code=payload_too_large ;;
      429) code=rate_limited ;;
      5??) code=server_error ;;
      *) code=http_error ;;
    esac
  fi
  if [[ -z $msg ]]; then
    reason=${_cronium_headers%%$'\r'*}
    reason=${reason%%$'\n'*}
    if [[ $reason =~ ^HTTP/[0-9.]+\ [0-9]{3}\ ?(.*)$ && -n ${BASH_REMATCH[1]} ]]; then
      msg=${BASH_REMATCH[1]}
    else
      msg="HTTP $_cronium_status"
    fi
  fi
  _cronium_fail "$_cronium_status" "$code" "$msg$1"
}

# _cronium_json FILTER [JQ-ARGS...]: runs FILTER (jq -r -c JQ-ARGS) on the response body of a
# successful request and streams the result to stdout (strings raw, everything else compact JSON). A body that is not a
# JSON object, or says success:false, is an error (status 1, nothing printed).
function _cronium_json() {
  local filter=$1
  shift
  if printf '%s' "$_cronium_body" | command jq -rc "$@" '
      if type != "object" then error("not a JSON object")
      elif .success == false then error("success is false")
      else . end | '"$filter" 2>/dev/null; then
    return 0
  fi
  if printf '%s' "$_cronium_body" | command jq -e 'type == "object" and .success == false' >/dev/null 2>&1; then
    _cronium_http_error ""
  else
    _cronium_fail "$_cronium_status" invalid_response "the runtime's answer is not the expected JSON envelope"
  fi
  return 1
}

# _cronium_value MODE FIELD: reads a value from stdin and prints {"FIELD": value} as compact
# JSON (FIELD empty: the value alone). MODE:
#   auto   - valid JSON becomes that JSON value, anything else a JSON string;
#   string - always a JSON string;
#   json   - must be valid JSON (status 1 otherwise).
# jq's parser accepts more than JSON (NaN, Infinity, 01, .5), so a scalar must also match the JSON
# grammar, and a container must hold no NaN. The value goes through stdin, not argv, so its size
# is not limited by the kernel's argument limits.
function _cronium_value() {
  command jq -Rsc --arg mode "$1" --arg field "${2-}" '
    . as $s
    | if $mode == "string" then $s
      else
        ( if ($s | test("\\A\\s*[\\[{\"]")) then
            if (try ($s | fromjson | [.. | numbers | select(isnan)] | length == 0) catch false)
            then [$s | fromjson] else [] end
          elif ($s | length) < 400
               and ($s | test("\\A\\s*(true|false|null|-?(0|[1-9][0-9]*)(\\.[0-9]+)?([eE][-+]?[0-9]+)?)\\s*\\z"))
          then [$s | fromjson]
          else [] end ) as $parsed
        | if ($parsed | length) == 1 then $parsed[0]
          elif $mode == "json" then error("not valid JSON")
          else $s end
      end
    | if $field == "" then . else {($field): .} end' 2>/dev/null
}

# _cronium_is_number TEXT: a JSON number (a leading "+" is tolerated).
function _cronium_is_number() {
  [[ ${1#+} =~ ^-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][-+]?[0-9]+)?$ ]]
}

# _cronium_need WANT GOT USAGE: checks the number of positional arguments.
function _cronium_need() {
  if (( $2 != $1 )); then
    _cronium_fail 000 usage "usage: $3"
    return 1
  fi
  return 0
}

# _cronium_key NAME KEY: the percent-encoded variable KEY into the variable NAME.
function _cronium_key() {
  if [[ -z $2 ]]; then
    _cronium_fail 000 usage "the variable key must not be empty"
    return 1
  fi
  _cronium_uri "$1" "$2"
}

# Shared by the set/output functions: separates the options --string, --json and --stdin from the
# positional arguments (into _cronium_mode, _cronium_stdin and the array _cronium_pos). Only
# these exact words are options, anywhere on the line; after "--" every word is positional (the
# way to pass a value that is itself "--string").
function _cronium_value_args() {
  _cronium_mode=auto
  _cronium_stdin=0
  _cronium_pos=()
  while (( $# > 0 )); do
    case $1 in
      --string) _cronium_mode=string ;;
      --json) _cronium_mode=json ;;
      --stdin) _cronium_stdin=1 ;;
      --) shift; _cronium_pos+=("$@"); break ;;
      *) _cronium_pos+=("$1") ;;
    esac
    shift
  done
  return 0
}

# _cronium_body MODE FIELD VALUE: the request body {"FIELD": value} built from VALUE, or from
# stdin when --stdin was given.
function _cronium_body() {
  local json
  if [[ $_cronium_stdin == 1 ]]; then
    json=$(_cronium_value "$1" "$2")
  else
    json=$(printf '%s' "$3" | _cronium_value "$1" "$2")
  fi
  if [[ $? -ne 0 || -z $json ]]; then
    if [[ $1 == json ]]; then
      _cronium_fail 000 invalid_json "the value is not valid JSON (--json was given)"
    else
      _cronium_fail 000 internal "could not encode the value (is jq working?)"
    fi
    return 1
  fi
  printf '%s' "$json"
}

# _cronium_tool TOOL ACTION PARAMS-JSON: POST /tool-actions/execute and print the result (the
# backend's result object). A result with success:false is printed and also reported as an error.
function _cronium_tool() {
  local body
  body=$(printf '%s' "$3" | command jq -c --arg tool "$1" --arg action "$2" \
           '{tool: $tool, action: $action, params: .}' 2>/dev/null) || {
    _cronium_fail 000 internal "could not build the tool action request"
    return 1
  }
  _cronium_call once POST /tool-actions/execute "$body" || return 1
  _cronium_json 'if has("data") then .data else empty end' || return 1
  local failed
  failed=$(printf '%s' "$_cronium_body" | command jq -r '
      if (.data | type) == "object" and .data.success == false then
        (.data.error // .data.message // "the tool action failed")
        | if type == "string" then . else tojson end | gsub("[\\r\\n\\t]+"; " ")
      else empty end' 2>/dev/null)
  if [[ -n $failed ]]; then
    _cronium_fail "$_cronium_status" tool_action_failed "$failed"
    return 1
  fi
  return 0
}

# _cronium_list TEXT: a comma separated list as a JSON array of trimmed, non-empty strings.
function _cronium_list() {
  printf '%s' "$1" | command jq -Rsc 'split(",") | map(sub("^\\s+"; "") | sub("\\s+$"; "")) | map(select(length > 0))'
}

# ---------------------------------------------------------------------------------------------
# Public functions. Each starts by silencing xtrace (so `set -x` in the script cannot print the
# token) and resetting the shell state of its own subshell.
# ---------------------------------------------------------------------------------------------

# cronium_version: prints the SDK version.
function cronium_version() {
  printf '%s\n' '3.0.0'
}

# cronium_info: the settings in use (never the token).
function cronium_info() (
  { set +x +v; } 2>/dev/null
  _cronium_shell
  local tok='unset'
  [[ -n ${CRONIUM_EXECUTION_TOKEN:-${CRONIUM_API_TOKEN:-}} ]] && tok='set'
  printf 'Cronium Bash SDK v%s\n' "$(cronium_version)"
  printf 'API URL: %s\n' "${CRONIUM_RUNTIME_API:-${CRONIUM_API_ENDPOINT:-http://localhost:8081}}"
  printf 'Execution ID: %s\n' "${CRONIUM_EXECUTION_ID:-unset}"
  printf 'Token: %s\n' "$tok"
)

# _cronium_get_print PATH FILTER: GETs the execution's PATH (idempotent, so retried) and prints
# the answer through the jq FILTER. Runs inside the calling function's subshell.
_cronium_get_print() {
  _cronium_init || exit 1
  _cronium_call read GET "$_cronium_exec_path$1" || exit 1
  _cronium_json "$2"
}

# cronium_input: prints the execution's input (strings raw, other values as compact JSON; {} when
# the execution has no input, as the public docs promise).
function cronium_input() (
  { set +x +v; } 2>/dev/null
  _cronium_shell
  _cronium_need 0 $# "cronium_input" || exit 1
  _cronium_get_print /input 'if .data == null then {} else .data end'
)

# cronium_output [--string|--json] DATA | cronium_output [--string|--json] --stdin
#   Sets the execution's output. DATA that is valid JSON is sent as that value, anything else as
#   a string; --string always sends a string, --json insists on JSON.
function cronium_output() (
  { set +x +v; } 2>/dev/null
  _cronium_shell
  local body
  _cronium_value_args "$@"
  if [[ $_cronium_stdin == 1 ]]; then
    _cronium_need 0 "${#_cronium_pos[@]}" "cronium_output [--string|--json] --stdin" || exit 1
  else
    _cronium_need 1 "${#_cronium_pos[@]}" "cronium_output [--string|--json] DATA" || exit 1
  fi
  _cronium_init || exit 1
  body=$(_cronium_body "$_cronium_mode" data "${_cronium_pos[0]}") || exit 1
  _cronium_call read POST "$_cronium_exec_path/output" "$body"
)

# cronium_get_output: prints the output last set (nothing if none).
function cronium_get_output() (
  { set +x +v; } 2>/dev/null
  _cronium_shell
  _cronium_need 0 $# "cronium_get_output" || exit 1
  _cronium_get_print /output 'if has("data") then .data else empty end'
)

# cronium_get_variable KEY: prints the value (strings raw, others compact JSON: 0, false and null
# print as such). A missing variable prints nothing, status 0.
function cronium_get_variable() (
  { set +x +v; } 2>/dev/null
  _cronium_shell
  local key
  _cronium_need 1 $# "cronium_get_variable KEY" || exit 1
  _cronium_init || exit 1
  _cronium_key key "$1" || exit 1
  _cronium_call lookup GET "$_cronium_exec_path/variables/$key"
  case $? in 0) ;; 4) exit 0 ;; *) exit 1 ;; esac
  _cronium_json 'if (.data | type) == "object" and (.data | has("value")) then .data.value
                 else error("no value") end'
)

# cronium_set_variable KEY VALUE [--string|--json] | cronium_set_variable KEY --stdin [...]
#   VALUE that is valid JSON is stored as that value, anything else as a string.
function cronium_set_variable() (
  { set +x +v; } 2>/dev/null
  _cronium_shell
  local key body want=2 usage="cronium_set_variable KEY VALUE [--string|--json]"
  _cronium_value_args "$@"
  if [[ $_cronium_stdin == 1 ]]; then
    want=1
    usage="cronium_set_variable KEY --stdin [--string|--json]"
  fi
  _cronium_need "$want" "${#_cronium_pos[@]}" "$usage" || exit 1
  _cronium_init || exit 1
  _cronium_key key "${_cronium_pos[0]}" || exit 1
  body=$(_cronium_body "$_cronium_mode" value "${_cronium_pos[1]}") || exit 1
  _cronium_call read PUT "$_cronium_exec_path/variables/$key" "$body"
)

# cronium_variable_exists KEY: status 0 if the variable exists, 1 if it does not, 2 on error.
# Prints nothing (an error line on stderr for status 2).
function cronium_variable_exists() (
  { set +x +v; } 2>/dev/null
  _cronium_shell
  local key
  _cronium_need 1 $# "cronium_variable_exists KEY" || exit 2
  _cronium_init || exit 2
  _cronium_key key "$1" || exit 2
  _cronium_call probe HEAD "$_cronium_exec_path/variables/$key"
  case $? in 0) exit 0 ;; 4) exit 1 ;; *) exit 2 ;; esac
)

# cronium_delete_variable KEY: deletes the variable. Deleting a missing variable succeeds (the
# variable is gone either way).
function cronium_delete_variable() (
  { set +x +v; } 2>/dev/null
  _cronium_shell
  local key
  _cronium_need 1 $# "cronium_delete_variable KEY" || exit 1
  _cronium_init || exit 1
  _cronium_key key "$1" || exit 1
  _cronium_call lookup DELETE "$_cronium_exec_path/variables/$key"
  case $? in 0|4) exit 0 ;; *) exit 1 ;; esac
)

# cronium_increment_variable KEY [BY]: atomically adds BY (default 1, any JSON number) on the
# runtime and prints the new value. A missing variable counts from 0.
function cronium_increment_variable() (
  { set +x +v; } 2>/dev/null
  _cronium_shell
  local key by=1 body
  if (( $# < 1 || $# > 2 )); then
    _cronium_fail 000 usage "usage: cronium_increment_variable KEY [BY]"
    exit 1
  fi
  (( $# == 2 )) && by=$2
  if ! _cronium_is_number "$by"; then
    _cronium_fail 000 usage "the increment must be a number, got '$by'"
    exit 1
  fi
  by=${by#+}
  _cronium_init || exit 1
  _cronium_key key "$1" || exit 1
  body=$(command jq -nc --argjson by "$by" '{by: $by}' 2>/dev/null) || {
    _cronium_fail 000 internal "could not build the request body"; exit 1; }
  _cronium_call once POST "$_cronium_exec_path/variables/$key/increment" "$body" || exit 1
  _cronium_json 'if (.data | type) == "object" and (.data | has("value")) then .data.value
                 else error("no value") end'
)

# cronium_append_variable KEY TEXT [SEPARATOR]: atomically appends TEXT to a string variable on
# the runtime (POST .../append), SEPARATOR (default empty) going between the old value and TEXT.
# A missing variable starts empty; a value that is not a string is a 409 conflict. Prints nothing,
# like the original helper. Not repeated after a timeout (it could apply twice).
function cronium_append_variable() (
  { set +x +v; } 2>/dev/null
  _cronium_shell
  local key body
  if (( $# < 2 || $# > 3 )); then
    _cronium_fail 000 usage "usage: cronium_append_variable KEY TEXT [SEPARATOR]"
    exit 1
  fi
  _cronium_init || exit 1
  _cronium_key key "$1" || exit 1
  body=$(command jq -nc --arg value "$2" --arg sep "${3-}" '{value: $value, separator: $sep}' 2>/dev/null) || {
    _cronium_fail 000 internal "could not build the request body"; exit 1; }
  _cronium_call once POST "$_cronium_exec_path/variables/$key/append" "$body"
)

# cronium_context: prints the execution context (event, user, ids...) as compact JSON.
function cronium_context() (
  { set +x +v; } 2>/dev/null
  _cronium_shell
  _cronium_need 0 $# "cronium_context" || exit 1
  _cronium_get_print /context 'if has("data") then .data else {} end'
)

# cronium_event: the event that started the execution (the context's "event"),
# compact JSON; {} when the execution has no event.
function cronium_event() (
  { set +x +v; } 2>/dev/null
  _cronium_shell
  _cronium_need 0 $# "cronium_event" || exit 1
  _cronium_get_print /context 'if ((.data | type) == "object" and .data.event != null) then .data.event else {} end'
)

# cronium_event_field FIELD: one field of the context; FIELD is a dotted path (event.name,
# metadata.input.x; a number indexes an array). FIELD is data, never jq code. A missing field
# prints nothing, status 0.
function cronium_event_field() (
  { set +x +v; } 2>/dev/null
  _cronium_shell
  local field
  _cronium_need 1 $# "cronium_event_field FIELD" || exit 1
  field=${1#.}
  if [[ -z $field ]]; then
    _cronium_fail 000 usage "usage: cronium_event_field FIELD (a dotted path like event.name)"
    exit 1
  fi
  _cronium_init || exit 1
  _cronium_call read GET "$_cronium_exec_path/context" || exit 1
  # shellcheck disable=SC2016 # a jq program, $ctx and $field are jq variables
  _cronium_json '(.data // {}) as $ctx
      | reduce ($field | split("."))[] as $k ({v: $ctx, ok: true};
          if .ok | not then .
          elif (.v | type) == "object" and (.v | has($k)) then {v: .v[$k], ok: true}
          elif (.v | type) == "array" and ($k | test("^(0|[1-9][0-9]*)$"))
               and ($k | tonumber) < (.v | length) then {v: .v[$k | tonumber], ok: true}
          else {v: null, ok: false} end)
      | select(.ok) | .v' --arg field "$field"
)

# cronium_set_condition BOOL: true/1/yes/on or false/0/no/off (any case).
function cronium_set_condition() (
  { set +x +v; } 2>/dev/null
  _cronium_shell
  local b body
  _cronium_need 1 $# "cronium_set_condition true|false" || exit 1
  case ${1,,} in
    true|1|yes|on) b=true ;;
    false|0|no|off) b=false ;;
    *) _cronium_fail 000 usage "invalid condition '$1': use true/false, 1/0, yes/no or on/off"
       exit 1 ;;
  esac
  _cronium_init || exit 1
  body="{\"condition\":$b}"
  _cronium_call read POST "$_cronium_exec_path/condition" "$body"
)

# cronium_get_condition: prints true, false, or null when no condition was set.
function cronium_get_condition() (
  { set +x +v; } 2>/dev/null
  _cronium_shell
  _cronium_need 0 $# "cronium_get_condition" || exit 1
  _cronium_get_print /condition 'if (.data | type) == "object" then .data.condition else null end'
)

# cronium_execute_tool_action TOOL ACTION [PARAMS_JSON]: runs a tool action (PARAMS_JSON is a
# JSON object, default {}) and prints its result as compact JSON. Status 1 if the runtime fails or
# the result says success:false (the result is still printed then).
function cronium_execute_tool_action() (
  { set +x +v; } 2>/dev/null
  _cronium_shell
  local params='{}'
  if (( $# < 2 || $# > 3 )); then
    _cronium_fail 000 usage "usage: cronium_execute_tool_action TOOL ACTION [PARAMS_JSON]"
    exit 1
  fi
  (( $# == 3 )) && params=$3
  params=$(printf '%s' "$params" | _cronium_value json "")
  if [[ $? -ne 0 || ${params:0:1} != '{' ]]; then
    _cronium_fail 000 invalid_json "the tool action parameters must be a JSON object"
    exit 1
  fi
  _cronium_init || exit 1
  _cronium_tool "$1" "$2" "$params"
)

# cronium_send_email TO SUBJECT BODY [--cc LIST] [--bcc LIST] [--html]
#   TO, --cc and --bcc take comma separated addresses.
function cronium_send_email() (
  { set +x +v; } 2>/dev/null
  _cronium_shell
  local usage="cronium_send_email TO SUBJECT BODY [--cc LIST] [--bcc LIST] [--html]"
  local -a pos=()
  local cc='' bcc='' html=false has_cc=0 has_bcc=0 params
  while (( $# > 0 )); do
    case $1 in
      --cc|--bcc)
        if (( $# < 2 )); then _cronium_fail 000 usage "$1 needs a value; usage: $usage"; exit 1; fi
        if [[ $1 == --cc ]]; then cc=$2; has_cc=1; else bcc=$2; has_bcc=1; fi
        shift 2; continue ;;
      --html) html=true ;;
      --) shift; pos+=("$@"); break ;;
      --*) _cronium_fail 000 usage "unknown option '$1'; usage: $usage"; exit 1 ;;
      *) pos+=("$1") ;;
    esac
    shift
  done
  _cronium_need 3 "${#pos[@]}" "$usage" || exit 1
  params=$(printf '%s' "${pos[2]}" | command jq -nc --argjson to "$(_cronium_list "${pos[0]}")" \
      --arg subject "${pos[1]}" --rawfile body /dev/stdin \
      --argjson cc "$(_cronium_list "$cc")" --argjson bcc "$(_cronium_list "$bcc")" \
      --argjson has_cc "$has_cc" --argjson has_bcc "$has_bcc" --argjson html "$html" '
      {to: $to, subject: $subject, body: $body}
      + (if $has_cc == 1 then {cc: $cc} else {} end)
      + (if $has_bcc == 1 then {bcc: $bcc} else {} end)
      + (if $html then {html: true} else {} end)' 2>/dev/null)
  if [[ $? -ne 0 || -z $params ]]; then
    _cronium_fail 000 internal "could not build the e-mail parameters"
    exit 1
  fi
  _cronium_init || exit 1
  _cronium_tool email send_message "$params"
)

# cronium_send_slack_message CHANNEL TEXT [--username U] [--icon-emoji E] [--icon-url URL]
function cronium_send_slack_message() (
  { set +x +v; } 2>/dev/null
  _cronium_shell
  local usage="cronium_send_slack_message CHANNEL TEXT [--username U] [--icon-emoji E] [--icon-url URL]"
  local -a pos=() extra=()
  local params
  while (( $# > 0 )); do
    case $1 in
      --username|--icon-emoji|--icon-url)
        if (( $# < 2 )); then _cronium_fail 000 usage "$1 needs a value; usage: $usage"; exit 1; fi
        case $1 in
          --username) extra+=(--arg username "$2") ;;
          --icon-emoji) extra+=(--arg icon_emoji "$2") ;;
          --icon-url) extra+=(--arg icon_url "$2") ;;
        esac
        shift 2; continue ;;
      --) shift; pos+=("$@"); break ;;
      --*) _cronium_fail 000 usage "unknown option '$1'; usage: $usage"; exit 1 ;;
      *) pos+=("$1") ;;
    esac
    shift
  done
  _cronium_need 2 "${#pos[@]}" "$usage" || exit 1
  params=$(command jq -nc --arg channel "${pos[0]}" --arg text "${pos[1]}" "${extra[@]}" '
      {channel: $channel, text: $text}
      + ($ARGS.named | del(.channel, .text))' 2>/dev/null)
  if [[ $? -ne 0 || -z $params ]]; then
    _cronium_fail 000 internal "could not build the Slack parameters"
    exit 1
  fi
  _cronium_init || exit 1
  _cronium_tool slack send_message "$params"
)

# cronium_send_discord_message CHANNEL_ID CONTENT [--embed JSON_OBJECT]...
function cronium_send_discord_message() (
  { set +x +v; } 2>/dev/null
  _cronium_shell
  local usage="cronium_send_discord_message CHANNEL_ID CONTENT [--embed JSON_OBJECT]..."
  local -a pos=()
  local embeds='[]' embed params
  while (( $# > 0 )); do
    case $1 in
      --embed)
        if (( $# < 2 )); then _cronium_fail 000 usage "--embed needs a value; usage: $usage"; exit 1; fi
        embed=$(printf '%s' "$2" | _cronium_value json "")
        if [[ $? -ne 0 || ${embed:0:1} != '{' ]]; then
          _cronium_fail 000 invalid_json "--embed takes a JSON object"
          exit 1
        fi
        embeds=$(command jq -nc --argjson a "$embeds" --argjson e "$embed" '$a + [$e]') || exit 1
        shift 2; continue ;;
      --) shift; pos+=("$@"); break ;;
      --*) _cronium_fail 000 usage "unknown option '$1'; usage: $usage"; exit 1 ;;
      *) pos+=("$1") ;;
    esac
    shift
  done
  _cronium_need 2 "${#pos[@]}" "$usage" || exit 1
  params=$(command jq -nc --arg channelId "${pos[0]}" --arg content "${pos[1]}" --argjson embeds "$embeds" '
      {channelId: $channelId, content: $content}
      + (if ($embeds | length) > 0 then {embeds: $embeds} else {} end)' 2>/dev/null)
  if [[ $? -ne 0 || -z $params ]]; then
    _cronium_fail 000 internal "could not build the Discord parameters"
    exit 1
  fi
  _cronium_init || exit 1
  _cronium_tool discord send_message "$params"
)

# ---------------------------------------------------------------------------------------------
# camelCase names used by the public docs and editor typings (reference §13.5), and the camelCase
# forms of the other functions for symmetry. Plain functions: aliases do not work in scripts.
# ---------------------------------------------------------------------------------------------
function cronium_getInput() { cronium_input ${1+"$@"}; }
function cronium_setOutput() { cronium_output ${1+"$@"}; }
function cronium_getOutput() { cronium_get_output ${1+"$@"}; }
function cronium_getVariable() { cronium_get_variable ${1+"$@"}; }
function cronium_setVariable() { cronium_set_variable ${1+"$@"}; }
function cronium_variableExists() { cronium_variable_exists ${1+"$@"}; }
function cronium_deleteVariable() { cronium_delete_variable ${1+"$@"}; }
function cronium_incrementVariable() { cronium_increment_variable ${1+"$@"}; }
function cronium_appendVariable() { cronium_append_variable ${1+"$@"}; }
function cronium_getEvent() { cronium_event ${1+"$@"}; }
function cronium_getContext() { cronium_context ${1+"$@"}; }
function cronium_eventField() { cronium_event_field ${1+"$@"}; }
function cronium_setCondition() { cronium_set_condition ${1+"$@"}; }
function cronium_getCondition() { cronium_get_condition ${1+"$@"}; }
function cronium_executeToolAction() { cronium_execute_tool_action ${1+"$@"}; }
function cronium_sendEmail() { cronium_send_email ${1+"$@"}; }
function cronium_sendSlackMessage() { cronium_send_slack_message ${1+"$@"}; }
function cronium_sendDiscordMessage() { cronium_send_discord_message ${1+"$@"}; }

# The dotted names (the public docs' API page and the SSH runner): cronium.input, cronium.output,
# cronium.getVariable ... for every camelCase name above, plus cronium.info and cronium.version.
# As in the SSH runner, cronium.output and cronium.setVariable KEY read the value from stdin when
# it is not given. A dot is not allowed in a function name in POSIX mode, so they are defined
# only outside it; eval keeps the definitions out of the parser of a POSIX-mode shell.
if ! shopt -qo posix; then
  { eval '
function cronium.input() { cronium_input ${1+"$@"}; }
function cronium.output() { if (( $# == 0 )); then cronium_output --stdin; else cronium_output "$@"; fi; }
function cronium.getOutput() { cronium_get_output ${1+"$@"}; }
function cronium.getVariable() { cronium_get_variable ${1+"$@"}; }
function cronium.setVariable() { if (( $# == 1 )); then cronium_set_variable "$1" --stdin; else cronium_set_variable ${1+"$@"}; fi; }
function cronium.variableExists() { cronium_variable_exists ${1+"$@"}; }
function cronium.deleteVariable() { cronium_delete_variable ${1+"$@"}; }
function cronium.incrementVariable() { cronium_increment_variable ${1+"$@"}; }
function cronium.appendVariable() { cronium_append_variable ${1+"$@"}; }
function cronium.event() { cronium_event ${1+"$@"}; }
function cronium.getEvent() { cronium_event ${1+"$@"}; }
function cronium.context() { cronium_context ${1+"$@"}; }
function cronium.getContext() { cronium_context ${1+"$@"}; }
function cronium.eventField() { cronium_event_field ${1+"$@"}; }
function cronium.setCondition() { cronium_set_condition ${1+"$@"}; }
function cronium.getCondition() { cronium_get_condition ${1+"$@"}; }
function cronium.executeToolAction() { cronium_execute_tool_action ${1+"$@"}; }
function cronium.sendEmail() { cronium_send_email ${1+"$@"}; }
function cronium.sendSlackMessage() { cronium_send_slack_message ${1+"$@"}; }
function cronium.sendDiscordMessage() { cronium_send_discord_message ${1+"$@"}; }
function cronium.info() { cronium_info ${1+"$@"}; }
function cronium.version() { cronium_version ${1+"$@"}; }
'; } 2>/dev/null
fi

# The shell variables the original helper set on load, for scripts that read them. Plain
# assignments (not exported), empty when the setting is missing so that `set -u` scripts run.
# The group's stderr is closed so that `set -x` before `source` does not trace the token.
{
  CRONIUM_API=${CRONIUM_RUNTIME_API:-${CRONIUM_API_ENDPOINT:-http://localhost:8081}}
  CRONIUM_TOKEN=${CRONIUM_EXECUTION_TOKEN:-${CRONIUM_API_TOKEN:-}}
  CRONIUM_EXEC_ID=${CRONIUM_EXECUTION_ID:-}
} 2>/dev/null

# The status of `source`/`.` is that of the last command: make it 0.
:
